/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The cluster's Redis link (see redis_link.h): its start and stop, the two queues between the
 * broker thread and the link's threads, and what the threads share (waits, backoff, results).
 * The threads themselves are in redis_writer.c and redis_reader.c; the design is in
 * docs/DESIGN.md ("Cluster link").
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "redis_link_int.h"

/* Longest backoff between reconnection attempts, ms (at most the heartbeat, see below). */
#define BACKOFF_CAP_MS 1000

/* The CLOCK_MONOTONIC time ms from now, for pthread_cond_timedwait on a condition variable
 * made with monotonic_cond_init. */
static struct timespec deadline_after(int64_t ms)
{
	struct timespec deadline;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += (time_t)(ms / 1000);
	deadline.tv_nsec += (long)((ms % 1000) * 1000000);
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	return deadline;
}

/* A condition variable whose timed waits run on CLOCK_MONOTONIC. Returns 0 or an errno. */
static int monotonic_cond_init(pthread_cond_t *cond)
{
	pthread_condattr_t attr;
	int rc = pthread_condattr_init(&attr);

	if (rc != 0) {
		return rc;
	}
	rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (rc == 0) {
		rc = pthread_cond_init(cond, &attr);
	}
	pthread_condattr_destroy(&attr);
	return rc;
}

bool presence__redis_stopping(struct presence_redis *r)
{
	bool s;

	pthread_mutex_lock(&r->lock);
	s = r->stopping;
	pthread_mutex_unlock(&r->lock);
	return s;
}

void presence__redis_wait(struct presence_redis *r, int64_t ms, bool for_writer)
{
	struct timespec deadline;

	if (ms <= 0) {
		return;
	}
	deadline = deadline_after(ms);
	pthread_mutex_lock(&r->lock);
	while (!r->stopping && !(for_writer && (r->requests.head != NULL || r->sync_check))) {
		if (pthread_cond_timedwait(&r->wake, &r->lock, &deadline) == ETIMEDOUT) {
			break;
		}
	}
	pthread_mutex_unlock(&r->lock);
}

/* The cap keeps a broker that lost its connection during a stall of Redis back within the hold
 * that follows the stall (2 x lease, at least 4 heartbeats). */
int64_t presence__redis_backoff(const struct presence_redis *r, unsigned int attempt,
                                unsigned int *rnd)
{
	int64_t cap = r->cfg.heartbeat_ms < BACKOFF_CAP_MS ? r->cfg.heartbeat_ms : BACKOFF_CAP_MS;

	return presence_cluster_backoff_ms(attempt, cap, (uint32_t)rand_r(rnd));
}

/* ---- results ---------------------------------------------------------------------------- */

void presence__redis_push(struct presence_redis *r, struct presence_redis_result *res)
{
	bool wake;

	pthread_mutex_lock(&r->lock);
	presence_redis_queue_push(&r->results_queue, &res->node);
	pthread_cond_signal(&r->results);
	wake = !r->wake_pending;
	r->wake_pending = true;
	pthread_mutex_unlock(&r->lock);
	/* Once per drain of the queue, not per result. */
	if (wake && r->cfg.wake != NULL) {
		r->cfg.wake(r->cfg.wake_arg);
	}
}

void presence_redis_result_free(struct presence_redis_result *res)
{
	if (res == NULL) {
		return;
	}
	presence_redis_record_clear(&res->rec);
	free(res->text);
	free(res->topic);
	free(res);
}

void presence__redis_log(struct presence_redis *r, enum presence_redis_log_level level,
                         const char *fmt, ...)
{
	struct presence_redis_result *res = calloc(1, sizeof(*res));
	char buf[512];
	va_list ap;

	if (res == NULL) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	res->kind = PRESENCE_REDIS_LOG;
	res->level = level;
	res->text = presence_text_dup(buf, strlen(buf));
	if (res->text == NULL) {
		free(res);
		return;
	}
	presence__redis_push(r, res);
}

void presence__redis_push_named(struct presence_redis *r, enum presence_redis_result_kind kind,
                                const char *name, uint64_t seq)
{
	struct presence_redis_result *res = calloc(1, sizeof(*res));

	if (res == NULL) {
		return;
	}
	res->kind = kind;
	res->rec.seq = seq;
	res->rec.name = name != NULL ? presence_text_dup(name, strlen(name)) : NULL;
	if (name != NULL && res->rec.name == NULL) {
		free(res);
		return;
	}
	presence__redis_push(r, res);
}

void presence__redis_learn_barrier(struct presence_redis *r, uint64_t bar)
{
	bool news;

	pthread_mutex_lock(&r->lock);
	news = bar > r->bar_learned;
	if (news) {
		r->bar_learned = bar;
		r->bar_learned_tick = r->ticks;
		r->sync_check = true;
		pthread_cond_signal(&r->wake);
	}
	pthread_mutex_unlock(&r->lock);
	if (news && r->cfg.wake != NULL) {
		r->cfg.wake(r->cfg.wake_arg);
	}
}

/* ---- the broker thread's side ------------------------------------------------------------ */

/* This process's id in the cluster (pv2_register): random, or made of the time and the pid when
 * the kernel has no entropy to give yet. */
static void make_instance(struct presence_redis *r, const struct timespec *now)
{
	uint64_t id;

	if (getrandom(&id, sizeof(id), GRND_NONBLOCK) != (ssize_t)sizeof(id)) {
		id = ((uint64_t)now->tv_sec << 32) ^ (uint64_t)now->tv_nsec ^
		     ((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)r;
	}
	snprintf(r->instance, sizeof(r->instance), "%016" PRIx64, id);
}

/* Frees r and what it holds; the threads are not running. */
static void link_free(struct presence_redis *r)
{
	struct presence_redis_qnode *node;

	while ((node = presence_redis_queue_pop(&r->requests)) != NULL) {
		presence_redis_request_free(
		    PRESENCE_REDIS_QUEUE_ITEM(node, struct presence_redis_request));
	}
	while ((node = presence_redis_queue_pop(&r->results_queue)) != NULL) {
		presence_redis_result_free(
		    PRESENCE_REDIS_QUEUE_ITEM(node, struct presence_redis_result));
	}
	presence_redis_tls_free(r->tls);
	/* The password goes with it. */
	memset(&r->cfg.endpoint, 0, sizeof(r->cfg.endpoint));
	free(r->broker_id);
	free(r);
}

struct presence_redis *presence_redis_start(const struct presence_redis_config *cfg, char *err,
                                            size_t err_size)
{
	const struct presence_hiredis *hi;
	struct presence_redis *r;
	struct timespec ts;

	if (presence_hiredis_load(&hi, err, err_size) != PRESENCE_OK ||
	    (cfg->endpoint.tls && presence_hiredis_load_tls(err, err_size) != PRESENCE_OK)) {
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		snprintf(err, err_size, "out of memory");
		return NULL;
	}
	r->hi = hi;
	r->cfg = *cfg;
	/* Read now (the files are used only here). */
	r->cfg.tls_cafile = r->cfg.tls_certfile = r->cfg.tls_keyfile = NULL;
	if (cfg->endpoint.tls &&
	    (r->tls = presence_redis_tls_new(cfg->tls_cafile, cfg->tls_certfile, cfg->tls_keyfile,
	                                     err, err_size)) == NULL) {
		link_free(r);
		return NULL;
	}
	r->broker_id = presence_text_dup(cfg->broker_id, strlen(cfg->broker_id));
	if (r->broker_id == NULL) {
		link_free(r);
		snprintf(err, err_size, "out of memory");
		return NULL;
	}
	r->cfg.broker_id = r->broker_id;
	r->params = (struct presence_redis_params){
	    .broker_id = r->broker_id,
	    .heartbeat_ms = cfg->heartbeat_ms,
	    .lease_ms = cfg->lease_ms,
	    .grace_ms = cfg->grace_ms,
	    .keep_state = cfg->keep_state,
	    .stream_budget = cfg->stream_budget,
	    .max_users = cfg->max_users,
	    .forget_after_ms = cfg->forget_after_ms,
	};
	clock_gettime(CLOCK_REALTIME, &ts);
	r->rnd = (unsigned int)ts.tv_nsec ^ (unsigned int)ts.tv_sec ^ (unsigned int)(uintptr_t)r;
	r->reader_rnd = r->rnd ^ 0x5bd1e995u;
	make_instance(r, &ts);
	atomic_init(&r->ready, false);
	atomic_init(&r->last_tick_ms, presence_clock_monotonic_ms());
	atomic_init(&r->last_sync_ms, 0);
	r->brokers = -1;
	if (pthread_mutex_init(&r->lock, NULL) != 0) {
		link_free(r);
		snprintf(err, err_size, "cannot make a mutex");
		return NULL;
	}
	if (monotonic_cond_init(&r->wake) != 0) {
		pthread_mutex_destroy(&r->lock);
		link_free(r);
		snprintf(err, err_size, "cannot make a condition variable on CLOCK_MONOTONIC");
		return NULL;
	}
	if (monotonic_cond_init(&r->results) != 0) {
		pthread_cond_destroy(&r->wake);
		pthread_mutex_destroy(&r->lock);
		link_free(r);
		snprintf(err, err_size, "cannot make a condition variable on CLOCK_MONOTONIC");
		return NULL;
	}
	if (pthread_create(&r->writer, NULL, presence__redis_writer_main, r) != 0) {
		presence_redis_stop(r);
		snprintf(err, err_size, "cannot start a thread");
		return NULL;
	}
	r->writer_started = true;
	if (pthread_create(&r->reader, NULL, presence__redis_reader_main, r) != 0) {
		presence_redis_stop(r);
		snprintf(err, err_size, "cannot start a thread");
		return NULL;
	}
	r->reader_started = true;
	return r;
}

void presence_redis_stop(struct presence_redis *r)
{
	if (r == NULL) {
		return;
	}
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	pthread_cond_broadcast(&r->wake);
	pthread_mutex_unlock(&r->lock);
	if (r->writer_started) {
		pthread_join(r->writer, NULL);
	}
	if (r->reader_started) {
		pthread_join(r->reader, NULL);
	}
	pthread_cond_destroy(&r->wake);
	pthread_cond_destroy(&r->results);
	pthread_mutex_destroy(&r->lock);
	link_free(r);
}

struct presence_redis_request *presence_redis_request_new(enum presence_redis_request_kind kind,
                                                          const char *name)
{
	struct presence_redis_request *req = calloc(1, sizeof(*req));

	if (req == NULL) {
		return NULL;
	}
	req->kind = kind;
	req->name = presence_text_dup(name, strlen(name));
	if (req->name == NULL) {
		free(req);
		return NULL;
	}
	return req;
}

void presence_redis_request_free(struct presence_redis_request *req)
{
	if (req == NULL) {
		return;
	}
	free(req->name);
	free(req->state);
	free(req->privacy);
	free(req->expected_privacy);
	free(req->topic);
	free(req);
}

void presence_redis_submit(struct presence_redis *r, struct presence_redis_request *req)
{
	pthread_mutex_lock(&r->lock);
	req->id = ++r->submitted;
	presence_redis_queue_push(&r->requests, &req->node);
	pthread_cond_signal(&r->wake);
	pthread_mutex_unlock(&r->lock);
}

size_t presence_redis_backlog(struct presence_redis *r)
{
	size_t n;

	pthread_mutex_lock(&r->lock);
	n = r->requests.len;
	pthread_mutex_unlock(&r->lock);
	return n;
}

struct presence_redis_result *presence_redis_take(struct presence_redis *r)
{
	struct presence_redis_qnode *node;

	pthread_mutex_lock(&r->lock);
	node = presence_redis_queue_pop(&r->results_queue);
	if (node == NULL) {
		r->wake_pending = false;
	}
	pthread_mutex_unlock(&r->lock);
	return node != NULL ? PRESENCE_REDIS_QUEUE_ITEM(node, struct presence_redis_result) : NULL;
}

struct presence_redis_result *presence_redis_take_wait(struct presence_redis *r, int64_t timeout_ms)
{
	struct timespec deadline = deadline_after(timeout_ms > 0 ? timeout_ms : 0);

	pthread_mutex_lock(&r->lock);
	while (r->results_queue.head == NULL) {
		if (pthread_cond_timedwait(&r->results, &r->lock, &deadline) == ETIMEDOUT) {
			break;
		}
	}
	pthread_mutex_unlock(&r->lock);
	return presence_redis_take(r);
}

bool presence_redis_ready(struct presence_redis *r)
{
	return atomic_load(&r->ready);
}

int64_t presence_redis_last_sync_ms(struct presence_redis *r)
{
	return atomic_load(&r->last_sync_ms);
}

void presence_redis_alive(struct presence_redis *r, int64_t now_ms)
{
	atomic_store(&r->last_tick_ms, now_ms);
}

void presence_redis_ticked(struct presence_redis *r, bool complete)
{
	if (!complete) {
		return;
	}
	pthread_mutex_lock(&r->lock);
	r->ticks++;
	r->tick_ticket = r->submitted;
	if (r->bar_learned > r->bar_confirmed) {
		r->sync_check = true;
		pthread_cond_signal(&r->wake);
	}
	pthread_mutex_unlock(&r->lock);
}

void presence_redis_resync_done(struct presence_redis *r, uint64_t generation)
{
	pthread_mutex_lock(&r->lock);
	if (generation > r->resync_done) {
		r->resync_done = generation;
		r->sync_check = true;
		pthread_cond_signal(&r->wake);
	}
	pthread_mutex_unlock(&r->lock);
}
