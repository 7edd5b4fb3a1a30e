/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * What the files of the registry share (registry.c: the registry and its users;
 * registry_sessions.c: sessions; registry_flush.c: the queues, the offline delay, forgetting and
 * the documents due): the structures, their invariants, and the helpers more than one file
 * calls. Nothing outside plugin/core/registry*.c includes this header.
 *
 * Invariants:
 * - a session is PENDING iff its user is NULL;
 * - user->sessions is the number of ACTIVE sessions pointing at the user;
 * - a user is on at most one of (dirty, retry, held, forgotten), recorded in user->list;
 *   reg->held counts the held ones;
 * - user->waiting iff reg->waits has an entry for it; user->offline_pending iff that entry is
 *   queued on reg->offline, which implies sessions == 0;
 * - user->idle iff it is on the idle queue iff published, not available in its last document,
 *   no session, not waiting, and in the name table; the queue is sorted by idle_at unless
 *   reg->idle_unsorted;
 * - user->gone iff the user left the name table (forgotten, or dropped while on the dirty list,
 *   which frees it when it pops it);
 * - reg->available counts users with sessions > 0, reg->active ACTIVE sessions, reg->known users
 *   in the name table with a document.
 */
#ifndef PRESENCE_REGISTRY_PRIVATE_H
#define PRESENCE_REGISTRY_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uthash.h>

#include "registry.h"
#include "state.h"
#include "testing.h"
#include "visibility.h"

/* Which queue a user is on. */
enum user_list {
	USER_LIST_NONE = 0,
	USER_LIST_DIRTY,
	USER_LIST_RETRY,
	USER_LIST_HELD,
	USER_LIST_FORGOTTEN,
};

/* One MQTT connection. */
struct presence_session {
	/* The broker's client pointer: the hash key, never dereferenced here. */
	const void *client;
	/* The user this ACTIVE session counts towards; NULL while PENDING. */
	struct presence_user *user;
	UT_hash_handle hh;
};

struct presence_user {
	/* Handle for reg->users; the key is the name inside level[]. */
	UT_hash_handle hh;
	/* The next user on the same queue (dirty, retry or forgotten). */
	struct presence_user *list_next;
	/* Links on the idle queue. */
	struct presence_user *idle_prev, *idle_next;
	/* The last document published: what subscribers hold now (its state is the state's mark,
	 * presence_state_mark). Without a document, seq is the floor the user started from. */
	uint64_t seq;
	int64_t pub_since;
	/* The write limit's theoretical arrival time (GCRA), microseconds on the monotonic
	 * clock. */
	int64_t write_tat;
	/* The shared state. */
	struct presence_state state;
	/* The user's privacy choice (visibility.h); NULL: everyone. */
	struct presence_privacy *privacy;
	unsigned int pub_sessions;
	/* Number of ACTIVE sessions. */
	unsigned int sessions;
	/* When the user became idle: seconds on the monotonic clock since reg->mono_base,
	 * rounded up (negative for a user restored as offline since before that). */
	int32_t idle_at;
	/* The last document's availability. */
	unsigned int pub_available : 1;
	/* Whether the user has a document (published, restored or adopted). */
	unsigned int published : 1;
	/* Which queue the user is on (enum user_list). */
	unsigned int list : 3;
	/* Whether the user has a struct offline_wait, and whether it is queued. */
	unsigned int waiting : 1;
	unsigned int offline_pending : 1;
	/* Whether the user is on the idle queue. */
	unsigned int idle : 1;
	/* Whether the user left the name table. */
	unsigned int gone : 1;
	/* Whether the name is stored after the level (encoding changed it) or is the level. */
	unsigned int name_apart : 1;
	/* Cluster mode: whether the last count sent for the user was above 0 (the user is kept
	 * until a count of 0 follows it, even without a document). */
	unsigned int counted : 1;
	/* Whether more watchers may see the user than its last document was shown to: its next
	 * document is due, with since = now and seq jumped (presence_registry_user_widen). */
	unsigned int widened : 1;
	/* "<encoded name>\0", then "<name>\0" when name_apart. */
	char level[];
};

/* What a user waiting out the offline delay needs; kept after the delay until the unavailable
 * document is published, for its since. */
struct offline_wait {
	struct presence_user *user;
	/* Monotonic time (ms) at which the delay ends. */
	int64_t deadline_ms;
	/* Wall-clock time (ms since the epoch) at which the last session left. */
	int64_t left_ms;
	struct offline_wait *prev, *next;
	UT_hash_handle hh;
};

/* A singly linked queue of users through list_next. */
struct user_queue {
	struct presence_user *head, *tail;
};

struct presence_registry {
	/* Document topic prefix, without trailing '/'. */
	char *prefix;
	size_t prefix_len;
	struct presence_session *sessions;
	/* Clients that logged in since the last promotion, oldest first, from pending_head on. */
	const void **pending;
	size_t pending_head, pending_len, pending_cap;
	struct presence_user *users;
	struct user_queue dirty;
	struct user_queue retry;
	struct user_queue forgotten;
	/* Users held by the guard; some may be stale. */
	struct presence_user **held_users;
	size_t held_len, held_cap;
	/* Idle users, oldest first. */
	struct presence_user *idle_head, *idle_tail;
	bool idle_unsorted;
	struct offline_wait *waits;
	struct offline_wait *offline;
	/* Open cursors. */
	struct presence_cursor *cursors[PRESENCE_REGISTRY_CURSORS];
	/* The since of the document being prepared. */
	int64_t prep_since_ms;
	/* Counters kept incrementally. */
	size_t available;
	size_t active;
	size_t known;
	size_t held;
	uint64_t forgotten_total;

	/* Settings (see registry.h). */
	struct presence_clock clock;
	/* The monotonic time idle_at counts from. */
	int64_t mono_base;
	int64_t offline_delay_ms;
	bool keep_state;
	struct presence_seq_guard guard;
	bool has_guard;
	uint64_t seq_floor;
	int64_t forget_after_s;
	size_t max_users;
	int64_t write_interval_us;
	int64_t write_window_us;
};

/* The monotonic clock of reg, in milliseconds. */
int64_t presence__registry_mono_now(const struct presence_registry *reg);

/* Makes room for one more element in the array *items of *cap elements of size bytes, *len of
 * them used. Returns false (nothing changed) when memory runs out. */
bool presence__registry_array_reserve(void **items, size_t *cap, size_t len, size_t size);

/* Users leaving (registry.c). user_unused: whether user has nothing to keep (no session, no
 * document, no delay running, no count of its sessions sent to the cluster without its end).
 * user_unlink: takes user out of the name table (cursors move past it, the idle queue lets it
 * go, a stale pointer to it in the held array is cleared: the user may be freed next).
 * user_remove: takes user (no session) out of the registry and frees it, at once when it is on
 * no queue, otherwise when the dirty queue pops it (a user on the retry queue goes there
 * first). discard_if_unused: frees user, which is on no list and has no session, if it has
 * nothing to keep. forget: moves user (in the name table, on no list) to the forgotten queue.
 * evictable: the oldest idle user on no list among the first few, or NULL. */
bool presence__registry_user_unused(const struct presence_user *user);
void presence__registry_user_unlink(struct presence_registry *reg, struct presence_user *user);
void presence__registry_user_remove(struct presence_registry *reg, struct presence_user *user);
void presence__registry_discard_if_unused(struct presence_registry *reg,
                                          struct presence_user *user);
void presence__registry_forget(struct presence_registry *reg, struct presence_user *user);
struct presence_user *presence__registry_evictable(struct presence_registry *reg);

/* Queues (registry_flush.c). queue_append: appends user to q. idle_seconds: seconds on the
 * monotonic clock since mono_base, rounded up, for idle_at. idle_append / idle_unlink: put user
 * at the tail of the idle queue / take it off. idle_sync: puts user on the idle queue (idle since
 * now) or takes it off, as the invariant says. idle_sort: sorts the idle queue by idle_at
 * (stable), after users were restored. */
void presence__registry_queue_append(struct user_queue *q, struct presence_user *user);
int32_t presence__registry_idle_seconds(const struct presence_registry *reg, int64_t mono_ms);
void presence__registry_idle_append(struct presence_registry *reg, struct presence_user *user);
void presence__registry_idle_unlink(struct presence_registry *reg, struct presence_user *user);
void presence__registry_idle_sync(struct presence_registry *reg, struct presence_user *user);
void presence__registry_idle_sort(struct presence_registry *reg);

/* The offline delay (registry_flush.c). wait_begin: queues user (whose last session just left)
 * to go offline when the delay has passed; when memory runs out the user goes offline at once,
 * as without a delay. wait_end: forgets user's offline wait, if it has one. */
void presence__registry_wait_begin(struct presence_registry *reg, struct presence_user *user);
void presence__registry_wait_end(struct presence_registry *reg, struct presence_user *user);

#endif
