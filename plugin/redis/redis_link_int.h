/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * What the three files of the Redis link share (redis_link.c: the broker thread's side and the
 * queues; redis_writer.c and redis_reader.c: the two threads). Not for other modules.
 *
 * Invariants: the fields marked "under lock" are read and written only with lock held; the
 * writer's fields only by the writer thread. Every condition variable is waited on with a
 * CLOCK_MONOTONIC deadline (presence__redis_deadline), so a step of the wall clock changes no
 * wait. The threads report to the broker only through results (presence__redis_push and the
 * helpers below), never by calling it.
 */
#ifndef PRESENCE_REDIS_LINK_INT_H
#define PRESENCE_REDIS_LINK_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "clock.h"
#include "redis_codec.h"
#include "redis_conn.h"
#include "redis_link.h"
#include "redis_loader.h"
#include "redis_queue.h"
#include "text.h"

/* The reader's XREAD BLOCK, ms: also how long stopping may wait for it. */
#define PRESENCE_REDIS_READ_BLOCK_MS 250

struct presence_redis {
	struct presence_redis_config cfg;
	/* What the codec's encoders take from cfg (broker_id points to the copy below). */
	struct presence_redis_params params;
	char *broker_id;
	const struct presence_hiredis *hi;
	/* With rediss://: the TLS settings (shared by both threads; read only). */
	struct ssl_ctx_st *tls;
	pthread_mutex_t lock;
	/* Signalled for the writer (a request, a barrier to look at, stopping) and for any
	 * thread's backoff (stopping). */
	pthread_cond_t wake;
	/* Signalled when a result is queued (for presence_redis_take_wait). */
	pthread_cond_t results;
	/* Requests for the writer, results for the broker thread (under lock). */
	struct presence_redis_queue requests, results_queue;
	/* Whether cfg.wake was called since the broker thread last found no result (under lock). */
	bool wake_pending;
	bool stopping;
	/* The id of the last request submitted (under lock). */
	uint64_t submitted;
	/*
	 * Barriers (under lock; docs/DESIGN.md, "Cluster link"): the highest one learned and how
	 * many complete ticks the broker thread had made then; the highest one Redis accepted
	 * from this epoch; the complete ticks so far and the last request id submitted at the
	 * last one; the last resynchronisation asked for and the last one done.
	 */
	uint64_t bar_learned;
	uint64_t bar_learned_tick;
	uint64_t bar_confirmed;
	uint64_t ticks;
	uint64_t tick_ticket;
	uint64_t resync_asked, resync_done;
	/* Set when one of them changed, so that a waiting writer looks again. */
	bool sync_check;
	pthread_t writer, reader;
	bool writer_started, reader_started;
	atomic_bool ready;
	atomic_int_fast64_t last_tick_ms;
	/* Wall-clock time (ms) of the last heartbeat Redis answered (0: none yet). */
	atomic_int_fast64_t last_sync_ms;

	/* Writer thread only. */
	struct presence_redis_conn *wc;
	char epoch[PRESENCE_REDIS_EPOCH_SIZE];
	char gen[PRESENCE_REDIS_GEN_SIZE];
	/* This process's random id (pv2_register), so that a second broker started with the same
	 * broker_id is told apart from this one. */
	char instance[24];
	bool registered;
	/* When a clash over broker_id was first seen (monotonic ms; 0: none), and whether it was
	 * reported as an error. */
	int64_t clash_since;
	bool clash_reported;
	int64_t next_heartbeat, next_sweep, next_grace, next_forget;
	long long brokers;
	/* Random seeds of the writer and of the reader, each used by its thread only. */
	unsigned int rnd;
	unsigned int reader_rnd;
};

/* The threads (started by presence_redis_start). */
void *presence__redis_writer_main(void *arg);
void *presence__redis_reader_main(void *arg);

/* Whether the link is stopping. */
bool presence__redis_stopping(struct presence_redis *r);

/* Waits until ms have passed (on CLOCK_MONOTONIC), stopping, or (when for_writer) a request
 * or a barrier to look at. */
void presence__redis_wait(struct presence_redis *r, int64_t ms, bool for_writer);

/* How long to wait before connection attempt number attempt (1, 2, ...): exponential, with
 * jitter from *rnd, capped at a second and at the heartbeat. */
int64_t presence__redis_backoff(const struct presence_redis *r, unsigned int attempt,
                                unsigned int *rnd);

/* Queues res (taken over) for the broker thread and wakes it (once per drain). */
void presence__redis_push(struct presence_redis *r, struct presence_redis_result *res);

/* Queues a line for the broker's log. Out of memory, the line is lost. */
void presence__redis_log(struct presence_redis *r, enum presence_redis_log_level level,
                         const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Queues a result of kind with rec.name (copied; NULL: none) and rec.seq; lost when memory
 * runs out. */
void presence__redis_push_named(struct presence_redis *r, enum presence_redis_result_kind kind,
                                const char *name, uint64_t seq);

/* Notes barrier bar (from the stream or a heartbeat) and wakes the writer and the broker
 * thread, whose next complete tick lets the writer confirm it. */
void presence__redis_learn_barrier(struct presence_redis *r, uint64_t bar);

#endif
