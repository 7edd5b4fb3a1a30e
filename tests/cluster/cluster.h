/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * What the cluster tests share (ctest label "cluster"): a real redis-server (Debian's, on a
 * unix socket in the test's directory, started per test; $PRESENCE_REDIS_SERVER names another
 * server program that takes redis-server's options, such as valkey-server), three real
 * Mosquitto brokers with the plugin, each with its own watcher subscribed to presence/+, and
 * the checks of what the watchers receive.
 *
 * What every broker shows must be the same: every watcher receives every document of a user,
 * with seq growing by exactly one from the first it received (cluster_seq_gaps_allowed: a test
 * of a failure the README says may skip documents), and the documents of one seq are byte for
 * byte the same on every broker. Every wait is for a message or a log line, bounded; nothing
 * sleeps. Timers are short (heartbeat 200 ms, lease 500 ms); no assertion is about time.
 */
#ifndef PRESENCE_TEST_CLUSTER_H
#define PRESENCE_TEST_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <hiredis.h>

#include "harness.h"

#define BROKERS 3

/* A Redis (or Valkey) server. */
struct redis {
	pid_t pid;
	char dir[256];
	char sock[300];
	bool aof;
	/* More options for the server (NULL-terminated; copied at redis_start_with). */
	const char *extra[24];
	/* The test's own connections authenticate with these (NULL: no AUTH). */
	const char *user, *password;
};

/* Starts the server program (redis-server or $PRESENCE_REDIS_SERVER) with argv[1..]. */
pid_t server_spawn(const char *const *args);

/* Starts (again) the server of r on r->sock (no TCP unless r->extra says so), with DEBUG
 * allowed, and waits (bounded) until it answers PING. With aof, every write is in the AOF
 * (fsync always) so a restart keeps it. */
void redis_launch(struct redis *r);

/* A new server in a directory of its own; extra: more options (NULL-terminated, or NULL). */
struct redis *redis_start(bool aof);
struct redis *redis_start_with(bool aof, const char *const *extra);

/* Kills the server with SIGKILL and reaps it. */
void redis_kill(struct redis *r);

/* Kills the server if it runs, and frees r. */
void redis_stop(struct redis *r);

/* Runs one command (printf-style, hiredis' format) on the unix socket and returns its reply. */
redisReply *redis_cmd(struct redis *r, const char *fmt, ...);

/* Writes a command on c without waiting for its reply. */
void redis_send_only(redisContext *c, const char *command);

/* The integer value of a Redis reply (a string or an integer; freed), or -1 for nil. */
long long reply_number(redisReply *reply);

/* The function library (plugin/redis/presence_v2.lua) loaded into r, as the brokers load it. */
void redis_load_library(struct redis *r);

/* Runs FCALL with argv (a NULL-terminated list after the function name and numkeys) and
 * returns in buf the reply's first element (with a document: "STATUS seq"), an integer printed,
 * or the elements of an array of strings joined by spaces. */
const char *fcall(struct redis *r, char *buf, size_t size, const char *const *argv);

#define K "{presence}:"
/* The keys every function takes (presence_v2.lua), with user's hash first and extra 15th. */
#define KEYS(user, extra)                                                                          \
	"18", user, K "grace", K "log", K "logbytes", K "trimmed", K "idle", K "floor", K "count", \
	    K "epoch", K "live", K "hold", K "seen", K "dead", K "gen", extra, K "barrier",        \
	    K "synced", K "owner"
/* The bounds a function that may make a user takes first: no cap, a 16 MiB stream. */
#define BOUNDS K "u:", "16777216", "0"

/* Three brokers b1..b3 on one Redis, each with its watcher w[i] on presence/+. */
struct cluster {
	struct redis *redis;
	struct broker *b[BROKERS];
	struct client *w[BROKERS];
	char *conf[BROKERS];
};

/* The configuration of broker i (b<i+1>) on r, heartbeat 200 ms, lease 500 ms, plus extra
 * (whose cluster_url, broker_id, cluster_heartbeat_ms and cluster_lease_ms replace those). */
char *cluster_conf(const struct redis *r, int i, const char *extra);

/* Waits (bounded) until broker i logs that it registered in the cluster. */
void await_registered(struct cluster *cl, int i);

/* Starts a Redis (with aof) and three brokers with extra options (NULL: none), each registered
 * and watched. */
void cluster_start(struct cluster *cl, bool aof, const char *extra);

/* Starts broker i of cl with extra, waits for its registration, and starts its watcher. */
void cluster_join(struct cluster *cl, int i, const char *extra);

/* The same on a Redis already started (not stopped by cluster_stop when keep is set). */
void cluster_start_on(struct cluster *cl, struct redis *redis, const char *extra);

/* Stops the watchers, the brokers and Redis. */
void cluster_stop(struct cluster *cl);

/* A user that must not be shown unavailable (NULL: none): await_doc fails on such a document
 * even when it only passes by. */
extern const char *always_available;

/* Set by a test of a failure after which the README says a broker may skip documents: seq then
 * only has to grow. */
extern bool cluster_seq_gaps_allowed;

/* The last seq watcher i received of user (0: none yet; a test sets it to 0 when the user was
 * forgotten, or after a watcher was replaced). */
long *last_seq(int i, const char *user);

/* Waits on watcher i for the document of user with these values (sessions -1: any; state_json
 * compared with cJSON_Compare; NULL = not checked), taking the documents before it in order.
 * Asserts that every document of user it receives has the seq after the one before. Returns
 * the matching payload (the caller frees it) and its seq in *seq_out. */
char *await_doc(struct cluster *cl, int i, const char *user, bool available, int sessions,
                const char *state_json, long *seq_out);

/* The bytes of the document await_everywhere matched last. */
extern char last_payload[1024];

/* await_doc on every live watcher; asserts that they all got the same bytes and returns seq. */
long await_everywhere(struct cluster *cl, const char *user, bool available, int sessions,
                      const char *state_json);

/* Waits on every live watcher for the announcement that user was forgotten (an empty message
 * on presence/<user>), taking its documents before it. */
void await_forgotten_everywhere(struct cluster *cl, const char *user);

/* Forgets what the watchers received, and always_available, cluster_seq_gaps_allowed. */
void reset_seen(void);

/* Forgets what watcher i received (a new watcher replaces it). */
void reset_seen_of(int i);

/* Milliseconds on the monotonic clock. */
long long mono_ms(void);

/* A relay between brokers and a Redis unix socket that the test can freeze: while frozen it
 * reads nothing from the brokers (what they send waits in their sockets), as a network that
 * delays one broker's commands and not the others'. */
struct relay;

/* Listens on a new unix socket (relay_path) and forwards each connection to target. */
struct relay *relay_start(const char *target);
const char *relay_path(const struct relay *rl);
void relay_freeze(struct relay *rl, bool frozen);
void relay_stop(struct relay *rl);

#endif
