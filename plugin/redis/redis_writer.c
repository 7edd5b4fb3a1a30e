/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The link's writer thread (see redis_link.h and docs/DESIGN.md, "Cluster link"): it registers
 * the broker, runs the requests in pipelined batches, and runs the cluster's timers (heartbeat,
 * sweep of dead brokers, end of offline delays, forgetting, barriers). Each step returns
 * PRESENCE_OK, or PRESENCE_ERR_IO when the connection failed or Redis answered something that
 * calls for a new one (the caller drops it and reconnects with backoff); what Redis refused is
 * said through presence__redis_log.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_link_int.h"

/* Most requests sent in one pipelined batch. */
#define BATCH_MAX 256
/* Users of a dead epoch swept per round (SRANDMEMBER's count, redis_codec.c). */
#define SWEEP_USERS 200
/* How often users offline for forget_after are looked for, ms. */
#define FORGET_EVERY_MS 1000
/* How long one sweep round may go on, ms. */
#define SWEEP_BUDGET_MS 100

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

static void reply_free(struct presence_redis *r, redisReply *reply)
{
	presence_redis_conn_reply_free(r->wc, reply);
}

/* Encodes (enc's result), runs and returns the reply, or NULL when the connection failed or
 * memory ran out. */
static redisReply *run(struct presence_redis *r, enum presence_err enc,
                       struct presence_redis_cmd *c)
{
	if (enc != PRESENCE_OK) {
		return NULL;
	}
	return presence_redis_conn_run(r->wc, c);
}

static void push_status(struct presence_redis *r, bool connected)
{
	struct presence_redis_result *res;

	atomic_store(&r->ready, connected && r->registered);
	res = calloc(1, sizeof(*res));
	if (res == NULL) {
		return;
	}
	res->kind = PRESENCE_REDIS_STATUS;
	res->connected = connected && r->registered;
	res->brokers = r->brokers;
	presence__redis_push(r, res);
}

/* Asks the broker thread to resynchronise; barriers wait until it has. */
static void push_resync(struct presence_redis *r)
{
	struct presence_redis_result *res = calloc(1, sizeof(*res));

	if (res == NULL) {
		presence__redis_log(r, PRESENCE_REDIS_LOG_ERR,
		                    "out of memory: this broker's counts are not sent again");
		return;
	}
	pthread_mutex_lock(&r->lock);
	res->generation = ++r->resync_asked;
	pthread_mutex_unlock(&r->lock);
	res->kind = PRESENCE_REDIS_RESYNC;
	presence__redis_push(r, res);
}

/* Tells the broker thread that the state or privacy write req was not applied, and why. */
static void push_write_failed(struct presence_redis *r, const struct presence_redis_request *req,
                              const char *reason)
{
	struct presence_redis_result *res = calloc(1, sizeof(*res));

	if (res == NULL) {
		return;
	}
	if (req->kind == PRESENCE_REDIS_PRIVACY_WRITE) {
		res->kind = PRESENCE_REDIS_PRIVACY_FAILED;
		res->topic = presence_text_dup(req->topic, strlen(req->topic));
		if (res->topic == NULL) {
			presence_redis_result_free(res);
			return;
		}
	} else {
		res->kind = PRESENCE_REDIS_CAS_DONE;
		res->outcome = PRESENCE_REDIS_CAS_FAILED;
	}
	res->rec.name = presence_text_dup(req->name, strlen(req->name));
	res->text = presence_text_dup(reason, strlen(reason));
	if (res->rec.name == NULL || res->text == NULL) {
		presence_redis_result_free(res);
		return;
	}
	presence__redis_push(r, res);
}

/* Whether req is a write a user waits for (it fails, rather than waits, without Redis). */
static bool is_write(const struct presence_redis_request *req)
{
	return req->kind == PRESENCE_REDIS_CAS || req->kind == PRESENCE_REDIS_PRIVACY_WRITE;
}

/* The barrier this epoch may confirm now, or 0 (see struct presence_redis). Between two
 * batches. */
static uint64_t barrier_to_confirm(struct presence_redis *r)
{
	struct presence_redis_qnode *head;
	uint64_t bar = 0;

	pthread_mutex_lock(&r->lock);
	r->sync_check = false;
	head = r->requests.head;
	if (r->bar_learned > r->bar_confirmed && r->resync_done == r->resync_asked &&
	    r->ticks > r->bar_learned_tick &&
	    (head == NULL ||
	     PRESENCE_REDIS_QUEUE_ITEM(head, struct presence_redis_request)->id > r->tick_ticket)) {
		bar = r->bar_learned;
	}
	pthread_mutex_unlock(&r->lock);
	return bar;
}

static void drop_connection(struct presence_redis *r, const char *why)
{
	/* First, so that the broker thread refuses state writes from now on. */
	atomic_store(&r->ready, false);
	if (r->wc != NULL) {
		presence__redis_log(r, PRESENCE_REDIS_LOG_WARNING,
		                    "lost the connection to Redis (%s); reconnecting",
		                    presence_redis_conn_error(r->wc, why));
		presence_redis_conn_close(r->wc);
		r->wc = NULL;
	}
	push_status(r, false);
}

/* Says that another running broker holds this broker_id (instance other, its lease runs
 * left_ms more): at first as what it may be (the lease of this broker's own crashed
 * predecessor), and once as an error when it outlasts a lease (a second broker with the same
 * id). */
static void report_clash(struct presence_redis *r, const char *other, const char *left_ms)
{
	int64_t now = presence_clock_monotonic_ms();

	if (r->clash_since == 0) {
		r->clash_since = now;
		presence__redis_log(
		    r, PRESENCE_REDIS_LOG_WARNING,
		    "broker_id %s is registered by another running broker (instance %s, "
		    "lease valid for %s ms more): waiting for it to end before joining the "
		    "cluster",
		    r->broker_id, other, left_ms);
	} else if (!r->clash_reported && now - r->clash_since > r->cfg.lease_ms) {
		r->clash_reported = true;
		presence__redis_log(
		    r, PRESENCE_REDIS_LOG_ERR,
		    "broker_id %s is in use by another running broker (instance %s; this one is "
		    "%s): give every broker of the cluster its own broker_id. This broker serves "
		    "MQTT and publishes the cluster's documents, but its own sessions are not "
		    "counted and state writes through it are refused until the other one stops",
		    r->broker_id, other, r->instance);
	}
}

/* Registers a new epoch of this broker. A clash with another broker of the same id is no
 * failure: the broker stays unregistered and tries again at its next heartbeat. */
static enum presence_err do_register(struct presence_redis *r)
{
	struct presence_redis_registration reg;
	struct presence_redis_cmd c = {0};
	redisReply *reply;
	char gen[20];
	const char *refused;

	snprintf(gen, sizeof(gen), "%08x%08x", (unsigned int)rand_r(&r->rnd),
	         (unsigned int)rand_r(&r->rnd));
	reply = run(r, presence_redis_encode_register(&c, &r->params, gen, r->instance), &c);
	if (reply == NULL) {
		return PRESENCE_ERR_IO;
	}
	if (presence_redis_decode_register(reply, &reg) != PRESENCE_OK) {
		refused = presence_redis_reply_error(reply);
		presence__redis_log(r, PRESENCE_REDIS_LOG_ERR,
		                    "registering with Redis failed: %s%s",
		                    refused != NULL ? refused : "unexpected reply",
		                    refused != NULL && (strstr(refused, "NOPERM") != NULL ||
		                                        strstr(refused, "can't run") != NULL)
		                        ? " (give the Redis user the rights the README lists)"
		                        : "");
		reply_free(r, reply);
		return PRESENCE_ERR_IO;
	}
	reply_free(r, reply);
	if (reg.clash) {
		bool was_registered = r->registered;

		report_clash(r, reg.other, reg.left_ms);
		r->registered = false;
		if (was_registered) {
			push_status(r, true);
		}
		return PRESENCE_OK;
	}
	memcpy(r->epoch, reg.epoch, sizeof(r->epoch));
	memcpy(r->gen, reg.gen, sizeof(r->gen));
	r->registered = true;
	pthread_mutex_lock(&r->lock);
	r->bar_confirmed = 0;
	pthread_mutex_unlock(&r->lock);
	if (r->clash_since != 0) {
		presence__redis_log(r, PRESENCE_REDIS_LOG_INFO, "broker_id %s is free again",
		                    r->broker_id);
	}
	r->clash_since = 0;
	r->clash_reported = false;
	presence__redis_log(r, PRESENCE_REDIS_LOG_INFO,
	                    "registered in the cluster as broker %s, epoch %s", r->broker_id,
	                    r->epoch);
	push_resync(r);
	push_status(r, true);
	return PRESENCE_OK;
}

/* Registers again after Redis declared this broker's epoch dead. */
static enum presence_err register_again(struct presence_redis *r)
{
	presence__redis_log(r, PRESENCE_REDIS_LOG_WARNING,
	                    "the cluster declared this broker (epoch %s) dead: registering again",
	                    r->epoch);
	/* (registered stays as it was until the answer: a clash then reports the change.) */
	atomic_store(&r->ready, false);
	return do_register(r);
}

/* One heartbeat (a registration while not registered). Re-registers when Redis says the epoch
 * is stale or lost its data. */
static enum presence_err do_heartbeat(struct presence_redis *r)
{
	struct presence_redis_heartbeat hb;
	struct presence_redis_cmd c = {0};
	redisReply *reply;
	const char *refused;

	if (!r->registered) {
		return do_register(r);
	}
	reply = run(r, presence_redis_encode_heartbeat(&c, &r->params, r->epoch), &c);
	if (reply == NULL) {
		return PRESENCE_ERR_IO;
	}
	if (presence_redis_decode_heartbeat(reply, &hb) != PRESENCE_OK) {
		refused = presence_redis_reply_error(reply);
		presence__redis_log(r, PRESENCE_REDIS_LOG_ERR, "heartbeat failed: %s",
		                    refused != NULL ? refused : "unexpected reply");
		reply_free(r, reply);
		/* Most likely the library is gone: reconnecting loads it again. */
		return PRESENCE_ERR_IO;
	}
	reply_free(r, reply);
	if (hb.stale) {
		return register_again(r);
	}
	if (strcmp(hb.gen, r->gen) != 0) {
		presence__redis_log(r, PRESENCE_REDIS_LOG_WARNING,
		                    "Redis lost the cluster's data (its generation changed): "
		                    "registering again and re-seeding it");
		r->registered = false;
		return do_register(r);
	}
	if (hb.barrier != 0) {
		presence__redis_learn_barrier(r, hb.barrier);
	}
	atomic_store(&r->last_sync_ms, presence_clock_wall_ms());
	if (hb.brokers != r->brokers) {
		r->brokers = hb.brokers;
		push_status(r, true);
	}
	return PRESENCE_OK;
}

/* Loads the function library. PRESENCE_ERR_IO when the connection failed or Redis refused. */
static enum presence_err load_library(struct presence_redis *r)
{
	struct presence_redis_cmd c = {0};
	redisReply *reply;
	const char *refused;

	/* First a PING, so that a Redis that wants a password says so (it would answer the large
	 * FUNCTION LOAD of a client not logged in with a protocol error instead). */
	presence_redis_cmd_add(&c, "PING");
	reply = presence_redis_conn_run(r->wc, &c);
	if (reply == NULL) {
		return PRESENCE_ERR_IO;
	}
	refused = presence_redis_reply_error(reply);
	if (refused != NULL) {
		presence__redis_log(r, PRESENCE_REDIS_LOG_ERR, "Redis refuses this broker (%s)%s",
		                    refused,
		                    strncmp(refused, "NOAUTH", 6) == 0
		                        ? ": Redis asks for a password: set "
		                          "plugin_opt_cluster_password_file (and "
		                          "plugin_opt_cluster_username for an ACL user)"
		                        : "");
		reply_free(r, reply);
		return PRESENCE_ERR_IO;
	}
	reply_free(r, reply);
	presence_redis_cmd_add(&c, "FUNCTION");
	presence_redis_cmd_add(&c, "LOAD");
	presence_redis_cmd_add(&c, "REPLACE");
	presence_redis_cmd_add(&c, presence_redis_library);
	reply = presence_redis_conn_run(r->wc, &c);
	if (reply == NULL) {
		return PRESENCE_ERR_IO;
	}
	refused = presence_redis_reply_error(reply);
	if (refused != NULL && strncmp(refused, "NOPERM", 6) == 0) {
		presence__redis_log(
		    r, PRESENCE_REDIS_LOG_ERR,
		    "the Redis user %s may not load the function library (%s): give it the "
		    "rights the README lists",
		    r->cfg.endpoint.user[0] != '\0' ? r->cfg.endpoint.user : "default", refused);
	} else if (refused != NULL) {
		presence__redis_log(
		    r, PRESENCE_REDIS_LOG_ERR,
		    "Redis refused the function library (Redis 7 or Valkey needed): %s", refused);
	}
	reply_free(r, reply);
	return refused == NULL ? PRESENCE_OK : PRESENCE_ERR_IO;
}

/* Runs a command whose reply does not matter (pv2_hold, pv2_deregister). */
static enum presence_err run_ignored(struct presence_redis *r, enum presence_err enc,
                                     struct presence_redis_cmd *c)
{
	redisReply *reply = run(r, enc, c);

	if (reply == NULL) {
		return PRESENCE_ERR_IO;
	}
	reply_free(r, reply);
	return PRESENCE_OK;
}

/* Sweeps one round of the dead epoch head ("broker:epoch"): tombstones for up to SWEEP_USERS
 * of its users, or its removal from the dead list once none is left. */
static enum presence_err sweep_epoch(struct presence_redis *r, const char *head)
{
	const char *colon = strrchr(head, ':');
	struct presence_redis_cmd c = {0};
	const char *names[SWEEP_USERS];
	char broker[80];
	const char *epoch;
	redisReply *users;
	bool sent_all = true;
	size_t n = 0;

	if (colon == NULL || (size_t)(colon - head) >= sizeof(broker)) {
		return run_ignored(r, presence_redis_encode_dead_remove(&c, head), &c);
	}
	memcpy(broker, head, (size_t)(colon - head));
	broker[colon - head] = '\0';
	epoch = colon + 1;
	users = run(r, presence_redis_encode_epoch_users(&c, broker, epoch), &c);
	if (users == NULL) {
		return PRESENCE_ERR_IO;
	}
	if (presence_redis_decode_names(users, names, SWEEP_USERS, &n) != PRESENCE_OK || n == 0) {
		reply_free(r, users);
		/* Every user of that epoch was swept. */
		if (run_ignored(r, presence_redis_encode_dead_remove(&c, head), &c) !=
		    PRESENCE_OK) {
			return PRESENCE_ERR_IO;
		}
		presence__redis_log(r, PRESENCE_REDIS_LOG_INFO,
		                    "swept the sessions of broker %s (epoch %s)", broker, epoch);
		return PRESENCE_OK;
	}
	for (size_t i = 0; i < n; i++) {
		if (presence_redis_encode_contrib(&c, &r->params, broker, epoch, names[i], -1, 0,
		                                  0) != PRESENCE_OK ||
		    presence_redis_conn_send(r->wc, &c) != PRESENCE_OK) {
			/* Out of memory: what was sent is answered below, then the connection is
			 * given up. */
			presence_redis_cmd_free(&c);
			sent_all = false;
			n = i;
			break;
		}
		presence_redis_cmd_free(&c);
	}
	/* Their documents reach every broker through the stream. */
	for (size_t i = 0; i < n; i++) {
		redisReply *reply;
		const char *refused;

		if (presence_redis_conn_receive(r->wc, &reply) != PRESENCE_OK) {
			reply_free(r, users);
			return PRESENCE_ERR_IO;
		}
		refused = presence_redis_reply_error(reply);
		if (refused != NULL) {
			presence__redis_log(r, PRESENCE_REDIS_LOG_ERR,
			                    "Redis refused a change of user %s: %s", names[i],
			                    refused);
		}
		reply_free(r, reply);
	}
	reply_free(r, users);
	return sent_all ? PRESENCE_OK : PRESENCE_ERR_IO;
}

/* Claims brokers whose lease expired and sweeps dead epochs for at most SWEEP_BUDGET_MS. */
static enum presence_err do_sweep(struct presence_redis *r)
{
	int64_t deadline = presence_clock_monotonic_ms() + SWEEP_BUDGET_MS;
	struct presence_redis_cmd c = {0};
	const char *claimed[16];
	redisReply *reply;
	size_t n;

	reply = run(r, presence_redis_encode_sweep_claim(&c, &r->params), &c);
	if (reply == NULL) {
		return PRESENCE_ERR_IO;
	}
	if (presence_redis_decode_names(reply, claimed, 16, &n) == PRESENCE_OK) {
		for (size_t i = 0; i < n; i++) {
			presence__redis_log(r, PRESENCE_REDIS_LOG_INFO,
			                    "declared broker %s dead (its lease expired)",
			                    claimed[i]);
		}
	}
	reply_free(r, reply);
	while (presence_clock_monotonic_ms() < deadline) {
		char head[128];
		const char *s;

		reply = run(r, presence_redis_encode_dead_head(&c), &c);
		if (reply == NULL) {
			return PRESENCE_ERR_IO;
		}
		s = presence_redis_reply_str(reply);
		if (s == NULL || strlen(s) >= sizeof(head)) {
			reply_free(r, reply);
			return PRESENCE_OK;
		}
		memcpy(head, s, strlen(s) + 1);
		reply_free(r, reply);
		if (sweep_epoch(r, head) != PRESENCE_OK) {
			return PRESENCE_ERR_IO;
		}
	}
	return PRESENCE_OK;
}

/* Runs a timer function (its command in c, built by enc) and sets *changed to the users it
 * changed (0 after an error reply, logged with what). */
static enum presence_err run_due(struct presence_redis *r, enum presence_err enc,
                                 struct presence_redis_cmd *c, const char *what, long long *changed)
{
	redisReply *reply = run(r, enc, c);
	const char *refused;

	*changed = 0;
	if (reply == NULL) {
		return PRESENCE_ERR_IO;
	}
	refused = presence_redis_reply_error(reply);
	if (refused != NULL) {
		presence__redis_log(r, PRESENCE_REDIS_LOG_ERR, "%s failed: %s", what, refused);
	} else {
		(void)presence_redis_decode_due(reply, changed);
	}
	reply_free(r, reply);
	return PRESENCE_OK;
}

/* Ends the offline delays that are due. */
static enum presence_err do_grace(struct presence_redis *r)
{
	struct presence_redis_cmd c = {0};
	long long changed;

	if (run_due(r, presence_redis_encode_grace_due(&c, &r->params), &c, "ending offline delays",
	            &changed) != PRESENCE_OK) {
		return PRESENCE_ERR_IO;
	}
	if (changed >= PRESENCE_REDIS_DUE_BATCH) {
		/* A whole batch went offline (a storm of ends, a broker's sessions swept): the
		 * next batch is due at once, not after the cadence. */
		r->next_grace = presence_clock_monotonic_ms();
	}
	return PRESENCE_OK;
}

/* Forgets users offline for forget_after (and beyond max_users). */
static enum presence_err do_forget(struct presence_redis *r)
{
	struct presence_redis_cmd c = {0};
	long long changed;

	return run_due(r, presence_redis_encode_forget_due(&c, &r->params), &c, "forgetting users",
	               &changed);
}

/* Builds the command of one request. */
static enum presence_err request_cmd(struct presence_redis *r,
                                     const struct presence_redis_request *req,
                                     struct presence_redis_cmd *c)
{
	struct presence_cluster_record doc;

	switch (req->kind) {
	case PRESENCE_REDIS_CONTRIB:
		return presence_redis_encode_contrib(c, &r->params, r->broker_id, r->epoch,
		                                     req->name, req->count, req->floor, req->id);
	case PRESENCE_REDIS_CAS:
		return presence_redis_encode_cas(c, &r->params, r->epoch, req->name, req->expected,
		                                 req->state, req->floor);
	case PRESENCE_REDIS_FLOOR:
		return presence_redis_encode_floor(c, req->floor);
	case PRESENCE_REDIS_SEED:
		doc = (struct presence_cluster_record){
		    .name = req->name,
		    .seq = req->floor,
		    .available = req->available,
		    .sessions = req->sessions,
		    .since_ms = req->since_ms,
		    .state = req->state,
		    .privacy = req->privacy,
		};
		return presence_redis_encode_seed(c, &r->params, &doc);
	case PRESENCE_REDIS_PRIVACY_WRITE:
		return presence_redis_encode_privacy(c, &r->params, r->epoch, req->name,
		                                     req->privacy, req->expected_privacy,
		                                     req->widens, req->floor);
	case PRESENCE_REDIS_WIDEN:
		return presence_redis_encode_widen(c, &r->params, r->epoch, req->name, req->floor);
	}
	return PRESENCE_ERR_INVAL;
}

/* Why a write (state or privacy) whose reply said outcome was not applied. */
static const char *write_failure(enum presence_redis_outcome outcome)
{
	switch (outcome) {
	case PRESENCE_REDIS_STALE:
		return "the cluster had declared this broker dead; it is joining again, retry the "
		       "write";
	case PRESENCE_REDIS_OFFLINE:
		return "the user had no session left when the write reached the cluster, and "
		       "without keep_state its state went with its last session; the write was "
		       "not applied";
	case PRESENCE_REDIS_USERS_FULL:
		return "max_users users are known and every one of them is online; the write "
		       "was not applied";
	default:
		return "the cluster store could not commit the write";
	}
}

/* The outcome of a state write (its reply decoded) for the broker thread. */
static void cas_done(struct presence_redis *r, const struct presence_redis_request *req,
                     const redisReply *reply)
{
	enum presence_redis_outcome outcome;
	struct presence_redis_result *res;

	res = calloc(1, sizeof(*res));
	if (res == NULL) {
		return;
	}
	if (presence_redis_decode_cas(reply, req->name, &outcome, &res->rec) != PRESENCE_OK) {
		free(res);
		push_write_failed(r, req, write_failure(PRESENCE_REDIS_DONE));
		return;
	}
	if (outcome == PRESENCE_REDIS_COMMITTED || outcome == PRESENCE_REDIS_CONFLICT) {
		res->kind = PRESENCE_REDIS_CAS_DONE;
		res->outcome = outcome == PRESENCE_REDIS_CONFLICT ? PRESENCE_REDIS_CAS_CONFLICT
		                                                  : PRESENCE_REDIS_CAS_COMMITTED;
		presence__redis_push(r, res);
		return;
	}
	presence_redis_result_free(res);
	push_write_failed(r, req, write_failure(outcome));
}

/* Handles the reply to one request. Returns true when Redis said the epoch is stale. */
static bool request_done(struct presence_redis *r, const struct presence_redis_request *req,
                         const redisReply *reply)
{
	enum presence_redis_outcome outcome = PRESENCE_REDIS_DONE;
	enum presence_err err = PRESENCE_OK;
	const char *refused = presence_redis_reply_error(reply);

	switch (req->kind) {
	case PRESENCE_REDIS_CAS: {
		const char *status =
		    reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements > 0
		        ? presence_redis_reply_str(reply->element[0])
		        : NULL;

		cas_done(r, req, reply);
		return status != NULL && strcmp(status, "STALE") == 0;
	}
	case PRESENCE_REDIS_CONTRIB:
		err = presence_redis_decode_contrib(reply, &outcome);
		if (outcome == PRESENCE_REDIS_USERS_FULL) {
			presence__redis_push_named(r, PRESENCE_REDIS_FULL, req->name, 0);
		}
		break;
	case PRESENCE_REDIS_SEED:
		err = presence_redis_decode_seed(reply, &outcome);
		if (outcome == PRESENCE_REDIS_FORGOTTEN) {
			/* The cluster forgot the user while this broker did not hear of it. */
			presence__redis_push_named(r, PRESENCE_REDIS_FORGET, req->name, req->floor);
		}
		break;
	case PRESENCE_REDIS_FLOOR:
		err = refused != NULL ? PRESENCE_ERR_INVAL : PRESENCE_OK;
		break;
	case PRESENCE_REDIS_PRIVACY_WRITE:
		err = presence_redis_decode_privacy(reply, &outcome);
		/* Committed: the choice reaches every broker, this one included, by the
		 * stream. */
		if (err != PRESENCE_OK || outcome != PRESENCE_REDIS_DONE) {
			push_write_failed(
			    r, req,
			    write_failure(err != PRESENCE_OK ? PRESENCE_REDIS_DONE : outcome));
		}
		break;
	case PRESENCE_REDIS_WIDEN:
		err = presence_redis_decode_privacy(reply, &outcome);
		break;
	}
	if (err != PRESENCE_OK && refused != NULL) {
		presence__redis_log(r, PRESENCE_REDIS_LOG_ERR,
		                    "Redis refused a request for user %s: %s", req->name, refused);
	}
	return outcome == PRESENCE_REDIS_STALE;
}

/* Puts the requests of q (not answered) back at the head of the queue, except state writes,
 * which fail. q is left empty. */
static void requeue(struct presence_redis *r, struct presence_redis_queue *q)
{
	struct presence_redis_queue keep = {0};
	struct presence_redis_qnode *node;

	while ((node = presence_redis_queue_pop(q)) != NULL) {
		struct presence_redis_request *req =
		    PRESENCE_REDIS_QUEUE_ITEM(node, struct presence_redis_request);

		if (is_write(req)) {
			push_write_failed(
			    r, req,
			    "the connection to the cluster store was lost; the write may "
			    "not have been applied");
			presence_redis_request_free(req);
			continue;
		}
		presence_redis_queue_push(&keep, node);
	}
	pthread_mutex_lock(&r->lock);
	presence_redis_queue_prepend(&r->requests, &keep);
	pthread_mutex_unlock(&r->lock);
}

/* While disconnected or unregistered: fails the state writes waiting in the queue at once (the
 * broker thread refuses new ones itself); the rest waits for the connection. */
static void fail_queued_writes(struct presence_redis *r)
{
	struct presence_redis_queue all = {0}, failed = {0};
	struct presence_redis_qnode *node;

	pthread_mutex_lock(&r->lock);
	presence_redis_queue_take(&r->requests, r->requests.len, &all);
	while ((node = presence_redis_queue_pop(&all)) != NULL) {
		const struct presence_redis_request *req =
		    PRESENCE_REDIS_QUEUE_ITEM(node, struct presence_redis_request);

		presence_redis_queue_push(is_write(req) ? &failed : &r->requests, node);
	}
	pthread_mutex_unlock(&r->lock);
	while ((node = presence_redis_queue_pop(&failed)) != NULL) {
		struct presence_redis_request *req =
		    PRESENCE_REDIS_QUEUE_ITEM(node, struct presence_redis_request);

		push_write_failed(
		    r, req, "the cluster store (Redis) is unavailable; the write was not applied");
		presence_redis_request_free(req);
	}
}

/* Runs one batch of requests (taken over), pipelined. PRESENCE_ERR_IO when the connection
 * failed (what was not answered is requeued). */
static enum presence_err run_batch(struct presence_redis *r, struct presence_redis_queue *batch)
{
	struct presence_redis_qnode *node;
	bool stale = false;

	for (node = batch->head; node != NULL; node = node->next) {
		const struct presence_redis_request *req =
		    PRESENCE_REDIS_QUEUE_ITEM(node, struct presence_redis_request);
		struct presence_redis_cmd c = {0};

		if (request_cmd(r, req, &c) != PRESENCE_OK ||
		    presence_redis_conn_send(r->wc, &c) != PRESENCE_OK) {
			presence_redis_cmd_free(&c);
			/* Out of memory: some of this batch may be in hiredis' buffer, which goes
			 * with the connection; the whole batch is sent again on the next one. */
			requeue(r, batch);
			return PRESENCE_ERR_IO;
		}
		presence_redis_cmd_free(&c);
	}
	while (batch->head != NULL) {
		struct presence_redis_request *req =
		    PRESENCE_REDIS_QUEUE_ITEM(batch->head, struct presence_redis_request);
		const char *refused;
		redisReply *reply;

		if (presence_redis_conn_receive(r->wc, &reply) != PRESENCE_OK) {
			requeue(r, batch);
			return PRESENCE_ERR_IO;
		}
		refused = presence_redis_reply_error(reply);
		if (refused != NULL &&
		    (strstr(refused, "not found") != NULL || strstr(refused, "NOSCRIPT") != NULL)) {
			/* The library is gone (FUNCTION FLUSH, or a Redis that lost its data
			 * without a restart): send the rest again after reloading it. */
			reply_free(r, reply);
			requeue(r, batch);
			return PRESENCE_ERR_IO;
		}
		(void)presence_redis_queue_pop(batch);
		stale = request_done(r, req, reply) || stale;
		reply_free(r, reply);
		presence_redis_request_free(req);
	}
	if (stale) {
		return register_again(r);
	}
	return PRESENCE_OK;
}

/* Confirms barrier bar (pv2_sync) and, when Redis took it, looks for users it lets go offline
 * at once. */
static enum presence_err do_sync(struct presence_redis *r, uint64_t bar)
{
	enum presence_redis_outcome outcome;
	struct presence_redis_cmd c = {0};
	redisReply *reply;
	const char *refused;

	reply = run(r, presence_redis_encode_sync(&c, &r->params, r->epoch, bar), &c);
	if (reply == NULL) {
		return PRESENCE_ERR_IO;
	}
	if (presence_redis_decode_sync(reply, &outcome) != PRESENCE_OK) {
		refused = presence_redis_reply_error(reply);
		presence__redis_log(r, PRESENCE_REDIS_LOG_ERR,
		                    "confirming barrier %" PRIu64 " failed: %s", bar,
		                    refused != NULL ? refused : "unexpected reply");
		reply_free(r, reply);
		return PRESENCE_OK;
	}
	reply_free(r, reply);
	if (outcome == PRESENCE_REDIS_STALE) {
		return register_again(r);
	}
	pthread_mutex_lock(&r->lock);
	if (bar > r->bar_confirmed) {
		r->bar_confirmed = bar;
	}
	pthread_mutex_unlock(&r->lock);
	r->next_grace = presence_clock_monotonic_ms();
	return PRESENCE_OK;
}

/* Sets up a new connection: library, hold (after an outage), registration or heartbeat. */
static enum presence_err setup_connection(struct presence_redis *r, bool after_outage)
{
	struct presence_redis_cmd c = {0};

	if (load_library(r) != PRESENCE_OK ||
	    (after_outage &&
	     run_ignored(r, presence_redis_encode_hold(&c, &r->params), &c) != PRESENCE_OK) ||
	    do_heartbeat(r) != PRESENCE_OK) {
		return PRESENCE_ERR_IO;
	}
	push_status(r, true);
	return PRESENCE_OK;
}

/* Connects (after the backoff of attempt), sets the connection up and schedules the timers.
 * PRESENCE_ERR_IO when this attempt failed (said at once, when the reason changes, and now and
 * then). */
static enum presence_err reconnect(struct presence_redis *r, unsigned int *attempt,
                                   bool *had_connection, char *last_why, size_t why_size)
{
	char why[256];
	int64_t now;

	if (*attempt > 0) {
		presence__redis_wait(r, presence__redis_backoff(r, *attempt, &r->rnd), false);
		if (presence__redis_stopping(r)) {
			return PRESENCE_ERR_IO;
		}
	}
	(*attempt)++;
	r->wc = presence_redis_conn_open(r->hi, &r->cfg.endpoint, r->tls, r->cfg.command_timeout_ms,
	                                 why, sizeof(why));
	if (r->wc == NULL) {
		if (*attempt == 1 || *attempt % 50 == 0 || strcmp(why, last_why) != 0) {
			presence__redis_log(
			    r, *attempt == 1 ? PRESENCE_REDIS_LOG_WARNING : PRESENCE_REDIS_LOG_ERR,
			    "cannot connect to Redis (%s); retrying", why);
			snprintf(last_why, why_size, "%s", why);
		}
		return PRESENCE_ERR_IO;
	}
	last_why[0] = '\0';
	if (setup_connection(r, *had_connection) != PRESENCE_OK) {
		drop_connection(r, "setup failed");
		return PRESENCE_ERR_IO;
	}
	if (*attempt > 1 || *had_connection) {
		presence__redis_log(r, PRESENCE_REDIS_LOG_INFO, "connected to Redis again");
		/* Maybe to another server (a failover through a moved address) that is behind what
		 * the brokers have published: the resync re-seeds what it lost (pv2_seed) and
		 * counts this broker's sessions again. */
		if (r->registered) {
			push_resync(r);
		}
	}
	*attempt = 0;
	*had_connection = true;
	now = presence_clock_monotonic_ms();
	r->next_heartbeat = now + r->cfg.heartbeat_ms;
	r->next_sweep = now;
	r->next_grace = now;
	r->next_forget = now + FORGET_EVERY_MS;
	return PRESENCE_OK;
}

/* Runs the timers that are due. Returns the name of the one that failed, or NULL. */
static const char *run_timers(struct presence_redis *r)
{
	int64_t now = presence_clock_monotonic_ms();

	if (now >= r->next_heartbeat) {
		r->next_heartbeat = now + r->cfg.heartbeat_ms;
		/* A broker loop that stopped ticking must be declared dead, not kept alive by this
		 * thread. */
		if (now - atomic_load(&r->last_tick_ms) < r->cfg.stall_tolerance_ms &&
		    do_heartbeat(r) != PRESENCE_OK) {
			return "heartbeat";
		}
	}
	if (now >= r->next_sweep) {
		r->next_sweep = now + r->cfg.heartbeat_ms / 2;
		if (do_sweep(r) != PRESENCE_OK) {
			return "sweep";
		}
	}
	if (now >= r->next_grace) {
		r->next_grace = now + min64(250, r->cfg.heartbeat_ms / 4);
		if (do_grace(r) != PRESENCE_OK) {
			return "offline delays";
		}
	}
	if (now >= r->next_forget) {
		r->next_forget = now + FORGET_EVERY_MS;
		if (do_forget(r) != PRESENCE_OK) {
			return "forgetting users";
		}
	}
	return NULL;
}

void *presence__redis_writer_main(void *arg)
{
	struct presence_redis *r = arg;
	bool had_connection = false;
	unsigned int attempt = 0;
	char last_why[256] = "";

	while (!presence__redis_stopping(r)) {
		struct presence_redis_queue batch = {0};
		const char *failed;
		int64_t next;

		if (r->wc == NULL) {
			fail_queued_writes(r);
			(void)reconnect(r, &attempt, &had_connection, last_why, sizeof(last_why));
			continue;
		}
		failed = run_timers(r);
		if (failed != NULL) {
			drop_connection(r, failed);
			continue;
		}
		if (!r->registered) {
			/* Waiting for another broker's lease (a clash over broker_id): counts wait,
			 * state writes fail. */
			fail_queued_writes(r);
		} else {
			uint64_t bar = barrier_to_confirm(r);

			if (bar != 0 && do_sync(r, bar) != PRESENCE_OK) {
				drop_connection(r, "barrier");
				continue;
			}
			pthread_mutex_lock(&r->lock);
			presence_redis_queue_take(&r->requests, BATCH_MAX, &batch);
			pthread_mutex_unlock(&r->lock);
			if (batch.head != NULL) {
				if (run_batch(r, &batch) != PRESENCE_OK) {
					drop_connection(r, "request");
				}
				continue;
			}
		}
		next = min64(min64(r->next_heartbeat, r->next_sweep),
		             min64(r->next_grace, r->next_forget));
		presence__redis_wait(r, next - presence_clock_monotonic_ms(), r->registered);
	}
	if (r->wc != NULL && r->registered) {
		struct presence_redis_cmd c = {0};

		(void)run_ignored(r, presence_redis_encode_deregister(&c, &r->params, r->epoch),
		                  &c);
	}
	presence_redis_conn_close(r->wc);
	r->wc = NULL;
	return NULL;
}
