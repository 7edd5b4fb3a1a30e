/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Functions of the core that only the unit tests, the fuzz harnesses and the benchmarks call:
 * an injected clock, allocating variants of what the plugin does in place, and counters that
 * let a test look inside. The plugin itself never includes this header. Each declaration keeps
 * the contract style of its module's header.
 */
#ifndef PRESENCE_TESTING_H
#define PRESENCE_TESTING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "cluster.h"
#include "document.h"
#include "querylimit.h"
#include "registry.h"
#include "state.h"
#include "store.h"

/* registry.h */

/* The clocks a registry reads, in milliseconds: monotonic_ms for delays and limits (it never
 * jumps), wall_ms (Unix epoch) for "since". arg is passed to both. */
struct presence_clock {
	int64_t (*monotonic_ms)(void *arg);
	int64_t (*wall_ms)(void *arg);
	void *arg;
};

/* Makes reg read clock (copied) instead of the system clocks; NULL restores those. Call it
 * before anything else: times recorded under the previous clock are not converted. */
void presence_registry_set_clock(struct presence_registry *reg, const struct presence_clock *clock);

/* The number of users in the registry (forgotten ones not taken yet excluded). */
size_t presence_registry_user_count(const struct presence_registry *reg);

/* Whether the user has no session and waits out the offline delay. */
bool presence_user_offline_pending(const struct presence_user *user);

/* state.h */

/* Returns a new, empty state ("{}") of its own, or NULL when allocation fails. Free it with
 * presence_state_free. */
struct presence_state *presence_state_new(void);

/* Frees a state made by presence_state_new and everything it owns; NULL is allowed. */
void presence_state_free(struct presence_state *st);

/* Returns true when the state has no keys. */
bool presence_state_is_empty(const struct presence_state *st);

/* Returns true when key (key_len bytes, need not be NUL-terminated) is a valid top-level key. */
bool presence_state_key_valid(const char *key, size_t key_len);

/* Applies patch to *target with RFC 7396 semantics. *target may be NULL (no value). On success
 * *target is the result (possibly a new node; the old one freed) and patch is untouched.
 * Returns PRESENCE_ERR_NOMEM on allocation failure, in which case *target may have been
 * partly patched (the caller still owns it and deletes it): callers patch a copy. */
enum presence_err presence_state_merge_patch(cJSON **target, const cJSON *patch);

/* document.h */

/* Renders doc with cJSON's allocator. Returns a NUL-terminated string the caller frees with
 * presence_document_free and stores its length (without the NUL) in *len; returns NULL when
 * allocation fails. */
char *presence_document_render(const struct presence_document *doc, size_t *len);

/* Builds {"username":"<username>","available":false,"known":false}: the answer for a name that
 * has no document. Same ownership and failure contract as presence_document_build. */
cJSON *presence_document_build_unknown(const char *username);

/* topic.h */

/* Returns the encoded form of user as a NUL-terminated string the caller frees with free(), or
 * NULL when allocation fails. */
char *presence_topic_encode_user(const char *user);

/* store.h */

/* Whether a compaction is in progress. */
bool presence_store_compacting(const struct presence_store *st);

/* The bytes of the last snapshot written or read. */
uint64_t presence_store_snapshot_bytes(const struct presence_store *st);

/* querylimit.h */

/* Number of clients with a bucket. */
size_t presence_query_limit_clients(const struct presence_query_limit *ql);

/* cluster.h */

/* Drops every write of every user, reporting each through reject with reason (e.g. the
 * connection to Redis was lost). */
void presence_cluster_write_fail_all(struct presence_cluster_writes *w, const char *reason,
                                     presence_cluster_reject_fn reject, void *arg);

/* Number of users with writes (in flight or pending). */
size_t presence_cluster_write_users(const struct presence_cluster_writes *w);

#endif
