/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The cluster's Redis link: two threads of its own (a writer and a reader), each with its own
 * connection, between Redis and the broker thread. How it registers, counts, sweeps, follows the
 * stream and recovers is in docs/DESIGN.md ("Cluster link (plugin/redis/)").
 *
 * Invariants: the broker thread never waits on Redis (submit and take only link or unlink a
 * queue item under a mutex); the link never calls the broker (it includes no Mosquitto header;
 * its one callback is cfg.wake) and reports only through results, log lines included
 * (PRESENCE_REDIS_LOG); everything it allocates comes from libc. Results come in the order the
 * link produced them. After a lost connection, counts and seeds not answered are sent again
 * (they are absolute and idempotent) and state writes not answered fail (PRESENCE_REDIS_CAS_DONE
 * with PRESENCE_REDIS_CAS_FAILED). Every call but presence_redis_start and presence_redis_stop
 * is for the broker thread on a started link.
 */
#ifndef PRESENCE_REDIS_LINK_H
#define PRESENCE_REDIS_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "redis_queue.h"

/* The settings, copied at start. */
struct presence_redis_config {
	/* Where Redis listens; its user and password (when password is not "") are sent with
	 * AUTH on every connection (after the TLS handshake with rediss://). */
	struct presence_cluster_endpoint endpoint;
	/* rediss://: the CA certificates Redis' certificate must chain to (NULL: the system's),
	 * a client certificate and its key (NULL: none). Redis' host name (or IP address) is
	 * checked against its certificate. */
	const char *tls_cafile;
	const char *tls_certfile;
	const char *tls_keyfile;
	const char *broker_id;
	int64_t heartbeat_ms;
	int64_t lease_ms;
	/* The offline delay (the grace before an unavailable document), ms. */
	int64_t grace_ms;
	bool keep_state;
	/* How long the broker loop may go without a tick before heartbeats stop. */
	int64_t stall_tolerance_ms;
	/* Deadline of one command (and of a connection attempt). */
	int64_t command_timeout_ms;
	/* The stream's records are trimmed, oldest first, beyond this many bytes. */
	unsigned long stream_budget;
	/* Users Redis holds at most (0: no cap), and how long a user may be offline before it is
	 * forgotten (0: never), ms. */
	unsigned long max_users;
	int64_t forget_after_ms;
	/* Called (from a link thread, with wake_arg) when a result is queued and none was
	 * waiting, so that the broker thread can be woken up to take it; NULL: nobody is. */
	void (*wake)(void *arg);
	void *wake_arg;
};

enum presence_redis_request_kind {
	/* This broker has count sessions of name; floor = the highest seq it saw. */
	PRESENCE_REDIS_CONTRIB = 0,
	/* Commit state as name's state if name's seq is still expected; floor as above. */
	PRESENCE_REDIS_CAS,
	/* Put name back as recorded (seq = floor, available, sessions, since_ms, state) when
	 * Redis has no record of it. */
	PRESENCE_REDIS_SEED,
	/* Raise the cluster's seq floor to floor (name unused). */
	PRESENCE_REDIS_FLOOR,
	/* Make privacy name's privacy choice (expected: the choice the broker had, widens: some
	 * watcher gains sight from it; floor as above; topic: where the write came, for a
	 * PRESENCE_REDIS_PRIVACY_FAILED result). */
	PRESENCE_REDIS_PRIVACY_WRITE,
	/* Publish name's document again with seq and since jumped (floor as above). */
	PRESENCE_REDIS_WIDEN,
};

/* A request; every pointer is owned (malloc) and freed with presence_redis_request_free. */
struct presence_redis_request {
	/* Its place in the link's queue. */
	struct presence_redis_qnode node;
	/* Set by presence_redis_submit: 1, 2, ... in the order of submission (a count's number,
	 * so that Redis never applies an older count of this broker after a newer one). */
	uint64_t id;
	enum presence_redis_request_kind kind;
	char *name;
	long long count;
	uint64_t floor;
	uint64_t expected;
	char *state;
	bool available;
	unsigned int sessions;
	int64_t since_ms;
	/* PRIVACY_WRITE (compact JSON, "" the default); privacy also for SEED (NULL: the
	 * default). */
	char *privacy;
	char *expected_privacy;
	bool widens;
	char *topic;
};

enum presence_redis_result_kind {
	/* A document (rec): from the stream or a snapshot (force on the first snapshot). */
	PRESENCE_REDIS_RECORD = 0,
	/* The outcome of a CAS request for rec.name (rec holds the document values when
	 * COMMITTED or CONFLICT, the base of the user's next commit; its document itself comes
	 * from the stream; text the reason when FAILED). */
	PRESENCE_REDIS_CAS_DONE,
	/* The broker (re)registered or reconnected: send every count and seed every user again
	 * (a seed puts back a user that Redis lacks or has at a lower seq, see pv2_seed), then
	 * call presence_redis_resync_done with the result's generation. */
	PRESENCE_REDIS_RESYNC,
	/* The link's state changed: connected, brokers alive. */
	PRESENCE_REDIS_STATUS,
	/* A line for the broker's log (level, text): the one way the link's threads report. */
	PRESENCE_REDIS_LOG,
	/* The reader finished a snapshot (its records came before this). */
	PRESENCE_REDIS_SNAPSHOT_DONE,
	/* The cluster forgot rec.name at seq rec.seq (a record of the stream, or the answer to a
	 * seed of a user it had forgotten): forget it too if its seq is not above. */
	PRESENCE_REDIS_FORGET,
	/* The cluster refused to count a session of rec.name: max_users users are known and
	 * every one of them is online. */
	PRESENCE_REDIS_FULL,
	/* rec.name's privacy choice is now rec.privacy (a stream record that brings no
	 * document: nobody gains sight). */
	PRESENCE_REDIS_PRIVACY,
	/* A privacy write of rec.name (to topic) was not applied: text says why. */
	PRESENCE_REDIS_PRIVACY_FAILED,
};

/* The level of a PRESENCE_REDIS_LOG result (the values are stable: 0, 1, 2). */
enum presence_redis_log_level {
	PRESENCE_REDIS_LOG_INFO = 0,
	PRESENCE_REDIS_LOG_WARNING = 1,
	PRESENCE_REDIS_LOG_ERR = 2,
};

enum presence_redis_cas_outcome {
	PRESENCE_REDIS_CAS_COMMITTED = 0,
	PRESENCE_REDIS_CAS_CONFLICT,
	PRESENCE_REDIS_CAS_FAILED,
};

/* A result; free with presence_redis_result_free. */
struct presence_redis_result {
	/* Its place in the link's queue. */
	struct presence_redis_qnode node;
	enum presence_redis_result_kind kind;
	struct presence_cluster_record rec;
	bool force;
	enum presence_redis_cas_outcome outcome;
	enum presence_redis_log_level level;
	char *text;
	/* PRIVACY_FAILED: the topic the write was published to. */
	char *topic;
	bool connected;
	long long brokers;
	/* RESYNC: which resynchronisation this is. */
	uint64_t generation;
};

struct presence_redis;

/* Loads hiredis (the first time; see redis_loader.h), with rediss:// sets up TLS (reading the
 * certificate files now), and starts the threads (they connect in the background). Returns
 * NULL with a reason in err (err_size bytes) when hiredis cannot be loaded, this build has no
 * TLS, a certificate file cannot be used, or memory, a thread or a CLOCK_MONOTONIC condition
 * variable cannot be had; nothing is left running or allocated then. cfg is copied (the
 * endpoint's password included, wiped at stop). Stop and free with presence_redis_stop. */
struct presence_redis *presence_redis_start(const struct presence_redis_config *cfg, char *err,
                                            size_t err_size);

/* Stops the threads: the writer deregisters the broker first (its sessions then leave at once
 * instead of after the lease) when it is connected. Waits for both threads (at most about
 * one command deadline plus 250 ms), then frees everything still queued. NULL is allowed. */
void presence_redis_stop(struct presence_redis *r);

/* Returns a zeroed request of kind for name (copied), or NULL when memory runs out. */
struct presence_redis_request *presence_redis_request_new(enum presence_redis_request_kind kind,
                                                          const char *name);
/* Frees req and its strings; NULL is allowed. Never for a submitted request (the link owns
 * it). */
void presence_redis_request_free(struct presence_redis_request *req);

/* Queues req (taken over: the link frees it) for the writer. Never fails, never blocks on
 * Redis; the caller bounds the queue with presence_redis_backlog. */
void presence_redis_submit(struct presence_redis *r, struct presence_redis_request *req);

/* Requests queued and not yet answered. */
size_t presence_redis_backlog(struct presence_redis *r);

/* Takes the oldest result (the caller frees it with presence_redis_result_free), or NULL when
 * there is none. */
struct presence_redis_result *presence_redis_take(struct presence_redis *r);

/* Takes the oldest result, waiting for one at most timeout_ms (measured on CLOCK_MONOTONIC);
 * NULL when none came. For the plugin's init only (the broker is not serving yet): never call
 * it from an event. */
struct presence_redis_result *presence_redis_take_wait(struct presence_redis *r,
                                                       int64_t timeout_ms);
/* Frees res and its strings; NULL is allowed. */
void presence_redis_result_free(struct presence_redis_result *res);

/* Whether the writer is connected and registered (state writes can be committed). */
bool presence_redis_ready(struct presence_redis *r);

/* Wall-clock time (ms since the epoch) of the last heartbeat Redis answered; 0 before the
 * first. */
int64_t presence_redis_last_sync_ms(struct presence_redis *r);

/* Tells the link that the broker loop ticked at monotonic time now_ms (see the heartbeat). */
void presence_redis_alive(struct presence_redis *r, int64_t now_ms);

/* Tells the link, at the end of a tick, whether every count the broker decided until now has
 * been submitted (no user left dirty, no resynchronisation walking). Only then may the link
 * confirm a barrier it learned before now (a user waiting to go offline; see presence_v2.lua). */
void presence_redis_ticked(struct presence_redis *r, bool complete);

/* Tells the link that the resynchronisation of generation (a RESYNC result's) has submitted
 * every count and seed. */
void presence_redis_resync_done(struct presence_redis *r, uint64_t generation);

/* The Redis function library (presence_v2.lua), embedded at build time. */
extern const char presence_redis_library[];

#endif
