/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Cluster mode's rules that need neither Redis nor a broker: applying a document record from
 * the cluster to the registry (the seq rule), the pending state writes of a user and their
 * folding into one commit, the Redis endpoint syntax and the reconnect backoff.
 *
 * Redis is the one writer of seq; a broker publishes only documents Redis numbered, in order.
 * plugin/redis/ and the adapter do the I/O. The design: docs/DESIGN.md, "Core: cluster".
 */
#ifndef PRESENCE_CLUSTER_H
#define PRESENCE_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "presence_err.h"
#include "registry.h"
#include "state.h"

/* A user's document as Redis numbered it (a stream record, a function's reply or a snapshot
 * entry). Strings are owned by whoever made the record. */
struct presence_cluster_record {
	char *name;
	uint64_t seq;
	bool available;
	unsigned int sessions;
	int64_t since_ms;
	/* The compact state ("{}" when empty). */
	char *state;
	/* The user's privacy choice as compact JSON ("" the default, everyone) when the record
	 * carries one (a snapshot entry, a stream record of a privacy write), else NULL. */
	char *privacy;
};

/* Applies rec to the registry: the user (created if new) takes rec as its last document when
 * rec->seq is greater than the seq it has, or equal to it with force (a startup snapshot, to
 * correct a retained document the broker restored). Returns PRESENCE_OK with *user set and
 * *due true when the document must be published (its values are then the user's last
 * document, presence_user_published); *due false when rec is old news. Returns
 * PRESENCE_ERR_INVAL (a name the registry cannot hold, a state that is not a valid object) or
 * PRESENCE_ERR_NOMEM; nothing changes then. */
enum presence_err presence_cluster_apply_record(struct presence_registry *reg,
                                                const struct presence_cluster_record *rec,
                                                bool force, struct presence_user **user, bool *due);

/* What a state write does (topic.h: P/U/state is a merge, P/U/state/<key> sets one key). */
enum presence_cluster_write_kind {
	PRESENCE_CLUSTER_WRITE_MERGE = 0,
	PRESENCE_CLUSTER_WRITE_SET_KEY,
};

/* The pending state writes of the users that have any. */
struct presence_cluster_writes;

/* Called for a pending write that is dropped without being committed: topic is the topic it was
 * published to, reason says why. */
typedef void (*presence_cluster_reject_fn)(void *arg, struct presence_user *user, const char *topic,
                                           const char *reason);

/* Returns an empty table, or NULL when allocation fails. */
struct presence_cluster_writes *presence_cluster_writes_new(void);

/* Frees the table and every pending write (without calling anyone); NULL is allowed. */
void presence_cluster_writes_free(struct presence_cluster_writes *w);

/* Checks one state write and, when it is valid, queues a copy of it (payload, key and topic
 * are copied) behind the user's other pending writes. With no write pending it is checked
 * against the user's current state (base, compact JSON) and limits, exactly as a single broker
 * checks a write; behind other writes only its syntax and keys are checked here, and its limits
 * when it is folded (the state it applies to is known then). Returns PRESENCE_OK with *changed
 * telling whether the write was queued (a write that changes nothing, with none pending, is
 * not); PRESENCE_ERR_INVAL or PRESENCE_ERR_TOO_LARGE with reason filled
 * (PRESENCE_STATE_REASON_SIZE bytes); PRESENCE_ERR_NOMEM. Nothing is queued on error. */
enum presence_err presence_cluster_write_add(struct presence_cluster_writes *w,
                                             struct presence_user *user, const char *base,
                                             const struct presence_state_limits *limits,
                                             enum presence_cluster_write_kind kind, const char *key,
                                             size_t key_len, const void *payload,
                                             size_t payload_len, const char *topic, bool *changed,
                                             char *reason);

/* Whether a commit of user's writes is in flight. */
bool presence_cluster_write_in_flight(const struct presence_cluster_writes *w,
                                      const struct presence_user *user);

/* Whether user has writes that are not in flight. */
bool presence_cluster_write_pending(const struct presence_cluster_writes *w,
                                    const struct presence_user *user);

/* Folds every write of user (those in flight, after a conflict, and those waiting) onto base
 * (compact JSON), in the order they arrived, and marks them all in flight. A write that no
 * longer applies (it breaks a limit now that base changed) is dropped and reported through
 * reject. Returns PRESENCE_OK with *state set to the new state (malloc'd, the caller frees it)
 * or NULL when no write is left; PRESENCE_ERR_NOMEM (nothing changed). */
enum presence_err presence_cluster_write_fold(struct presence_cluster_writes *w,
                                              struct presence_user *user, const char *base,
                                              const struct presence_state_limits *limits,
                                              presence_cluster_reject_fn reject, void *arg,
                                              char **state);

/* Ends the commit in flight for user. committed: its writes are done and forgotten. Otherwise
 * they are dropped and each is reported through reject with reason. Writes that arrived during
 * the commit stay pending. */
void presence_cluster_write_done(struct presence_cluster_writes *w, struct presence_user *user,
                                 bool committed, const char *reason,
                                 presence_cluster_reject_fn reject, void *arg);

/* After a conflict: the commit in flight for user was not applied, so its writes count as
 * waiting again (the next fold applies them, and those that came since, to the new base). */
void presence_cluster_write_retry(struct presence_cluster_writes *w, struct presence_user *user);

/* Drops every write of user (without reporting them): it is leaving the registry. */
void presence_cluster_write_forget(struct presence_cluster_writes *w,
                                   const struct presence_user *user);

/* Records (seq, state: compact JSON, copied) as user's newest document when Redis answered a
 * commit of user's writes with it (committed, or a conflict's current values) and user still
 * has writes: the next fold applies to it while the registry's last document is older (the
 * document itself reaches the registry through the stream, maybe later). Returns PRESENCE_OK
 * (also when user has no writes or seq is not newer), or PRESENCE_ERR_NOMEM (nothing changed). */
enum presence_err presence_cluster_write_rebase(struct presence_cluster_writes *w,
                                                const struct presence_user *user, uint64_t seq,
                                                const char *state);

/* The state recorded by presence_cluster_write_rebase for user when its seq is above *seq
 * (then *seq is set to it), else NULL. Valid until the next call on w. */
const char *presence_cluster_write_base(const struct presence_cluster_writes *w,
                                        const struct presence_user *user, uint64_t *seq);

/* Where Redis listens, and how to log in. */
struct presence_cluster_endpoint {
	/* A unix socket path (NUL-terminated), or "" for TCP. */
	char path[108];
	/* TCP host (NUL-terminated) and port, when path is "". */
	char host[256];
	int port;
	/* rediss://: TLS. */
	bool tls;
	/* The URL's user information, percent-decoded ("": none). */
	char user[128];
	char password[512];
};

/* Parses a Redis URL: "redis://[user[:password]@]host[:port]" (port 6379 by default; host a
 * name, an IPv4 address or [IPv6]; user and password percent-encoded where they hold ':', '@',
 * '/' or '%'), the same with "rediss://" (TLS), "unix:/path" or an absolute path "/path" of a
 * unix socket. Returns PRESENCE_OK, or PRESENCE_ERR_INVAL with a reason in reason (reason_size
 * bytes; it never quotes the password). */
enum presence_err presence_cluster_endpoint_parse(const char *url,
                                                  struct presence_cluster_endpoint *out,
                                                  char *reason, size_t reason_size);

/* The endpoint as a URL without its password (for logs): "rediss://user@host:port",
 * "redis://[::1]:6379", "unix:/path". */
void presence_cluster_endpoint_describe(const struct presence_cluster_endpoint *ep, char *out,
                                        size_t size);

/* Whether id is a usable broker id: 1 to 64 characters of A-Z a-z 0-9 . _ - */
bool presence_cluster_broker_id_valid(const char *id);

/* The wait before reconnect attempt number attempt (1, 2, ...): 100 ms doubled per attempt,
 * at most cap_ms, then a random part in [50 %, 100 %] of it from rnd (any 32-bit value), so
 * that brokers that lost Redis together do not come back in one herd. */
int64_t presence_cluster_backoff_ms(unsigned int attempt, int64_t cap_ms, uint32_t rnd);

#endif
