/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The codec of the cluster's Redis calls (see redis_codec.h). The keys, all under the hash tag
 * {presence}, and what each holds, are listed in docs/DESIGN.md ("Cluster link"); every
 * function of presence_v2.lua takes the same keys in the same order (fcall below).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_codec.h"
#include "text.h"

#define KEY_PREFIX PRESENCE_REDIS_KEY_PREFIX
#define USER_PREFIX PRESENCE_REDIS_USER_PREFIX

/* Brokers a sweep claims per call, users of a dead epoch swept per round. */
#define SWEEP_CLAIM "8"
#define SWEEP_BATCH "200"
/* Keys a snapshot's SCAN looks at per call. */
#define SCAN_COUNT "500"

void presence_redis_cmd_add(struct presence_redis_cmd *c, const char *s)
{
	if (c->argc == PRESENCE_REDIS_ARGS_MAX || s == NULL) {
		c->failed = true;
		return;
	}
	c->argv[c->argc] = s;
	c->len[c->argc] = strlen(s);
	c->argc++;
}

void presence_redis_cmd_addf(struct presence_redis_cmd *c, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || c->nowned == PRESENCE_REDIS_ARGS_MAX || c->argc == PRESENCE_REDIS_ARGS_MAX) {
		c->failed = true;
		return;
	}
	s = malloc((size_t)n + 1);
	if (s == NULL) {
		c->failed = true;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	c->owned[c->nowned++] = s;
	presence_redis_cmd_add(c, s);
}

void presence_redis_cmd_free(struct presence_redis_cmd *c)
{
	for (int i = 0; i < c->nowned; i++) {
		free(c->owned[i]);
	}
	memset(c, 0, sizeof(*c));
}

/* The result of an encoder: c as built, or empty with NOMEM. */
static enum presence_err finish(struct presence_redis_cmd *c)
{
	if (c->failed) {
		presence_redis_cmd_free(c);
		return PRESENCE_ERR_NOMEM;
	}
	return PRESENCE_OK;
}

/* Starts the FCALL of function with the keys every function takes (presence_v2.lua), up to
 * key 14: the user's hash (name NULL: the prefix of user hashes), then the cluster's keys. */
static void fcall_head(struct presence_redis_cmd *c, const char *function, const char *name)
{
	presence_redis_cmd_add(c, "FCALL");
	presence_redis_cmd_add(c, function);
	presence_redis_cmd_add(c, "18");
	if (name != NULL) {
		presence_redis_cmd_addf(c, USER_PREFIX "%s", name);
	} else {
		presence_redis_cmd_add(c, USER_PREFIX);
	}
	presence_redis_cmd_add(c, KEY_PREFIX "grace");
	presence_redis_cmd_add(c, KEY_PREFIX "log");
	presence_redis_cmd_add(c, KEY_PREFIX "logbytes");
	presence_redis_cmd_add(c, KEY_PREFIX "trimmed");
	presence_redis_cmd_add(c, KEY_PREFIX "idle");
	presence_redis_cmd_add(c, KEY_PREFIX "floor");
	presence_redis_cmd_add(c, KEY_PREFIX "count");
	presence_redis_cmd_add(c, KEY_PREFIX "epoch");
	presence_redis_cmd_add(c, KEY_PREFIX "live");
	presence_redis_cmd_add(c, KEY_PREFIX "hold");
	presence_redis_cmd_add(c, KEY_PREFIX "seen");
	presence_redis_cmd_add(c, KEY_PREFIX "dead");
	presence_redis_cmd_add(c, KEY_PREFIX "gen");
}

/* Keys 16 to 18, after key 15 (the user set of a broker's epoch, or a dummy). */
static void fcall_tail(struct presence_redis_cmd *c)
{
	presence_redis_cmd_add(c, KEY_PREFIX "barrier");
	presence_redis_cmd_add(c, KEY_PREFIX "synced");
	presence_redis_cmd_add(c, KEY_PREFIX "owner");
}

/* Starts the FCALL of a function that takes no user set (key 15 a dummy). */
static void fcall(struct presence_redis_cmd *c, const char *function, const char *name)
{
	fcall_head(c, function, name);
	presence_redis_cmd_add(c, KEY_PREFIX "none");
	fcall_tail(c);
}

/* The arguments of every timer function (presence_v2.lua, timers_may_run): how long a gap
 * between two timer calls means that Redis (or every broker) stalled, and how long sweeps,
 * expiry and forgetting then hold (docs/DESIGN.md). */
static void timers(struct presence_redis_cmd *c, const struct presence_redis_params *p)
{
	int64_t gap = (p->lease_ms - p->heartbeat_ms) / 2;

	presence_redis_cmd_addf(c, "%" PRId64, gap > 0 ? gap : 1);
	presence_redis_cmd_addf(c, "%" PRId64, 2 * p->lease_ms);
}

/* The arguments every function that may make or forget a user takes first: the prefix of user
 * hashes, the stream's budget, max_users. */
static void bounds(struct presence_redis_cmd *c, const struct presence_redis_params *p)
{
	presence_redis_cmd_add(c, USER_PREFIX);
	presence_redis_cmd_addf(c, "%lu", p->stream_budget);
	presence_redis_cmd_addf(c, "%lu", p->max_users);
}

enum presence_err presence_redis_encode_register(struct presence_redis_cmd *c,
                                                 const struct presence_redis_params *p,
                                                 const char *gen, const char *instance)
{
	fcall(c, "pv2_register", NULL);
	presence_redis_cmd_add(c, p->broker_id);
	presence_redis_cmd_addf(c, "%" PRId64, p->lease_ms);
	presence_redis_cmd_add(c, gen);
	presence_redis_cmd_add(c, instance);
	return finish(c);
}

enum presence_err presence_redis_encode_heartbeat(struct presence_redis_cmd *c,
                                                  const struct presence_redis_params *p,
                                                  const char *epoch)
{
	fcall(c, "pv2_heartbeat", NULL);
	presence_redis_cmd_add(c, p->broker_id);
	presence_redis_cmd_add(c, epoch);
	presence_redis_cmd_addf(c, "%" PRId64, p->lease_ms);
	timers(c, p);
	return finish(c);
}

enum presence_err presence_redis_encode_hold(struct presence_redis_cmd *c,
                                             const struct presence_redis_params *p)
{
	fcall(c, "pv2_hold", NULL);
	presence_redis_cmd_addf(c, "%" PRId64, 2 * p->lease_ms);
	return finish(c);
}

enum presence_err presence_redis_encode_sweep_claim(struct presence_redis_cmd *c,
                                                    const struct presence_redis_params *p)
{
	fcall(c, "pv2_sweep_claim", NULL);
	presence_redis_cmd_add(c, SWEEP_CLAIM);
	timers(c, p);
	presence_redis_cmd_add(c, p->broker_id);
	return finish(c);
}

enum presence_err presence_redis_encode_contrib(struct presence_redis_cmd *c,
                                                const struct presence_redis_params *p,
                                                const char *broker, const char *epoch,
                                                const char *name, long long count, uint64_t floor,
                                                uint64_t cseq)
{
	fcall_head(c, "pv2_contrib", name);
	presence_redis_cmd_addf(c, KEY_PREFIX "bu:%s:%s", broker, epoch);
	fcall_tail(c);
	bounds(c, p);
	presence_redis_cmd_add(c, broker);
	presence_redis_cmd_add(c, epoch);
	presence_redis_cmd_addf(c, "%lld", count);
	presence_redis_cmd_addf(c, "%" PRId64, p->grace_ms);
	presence_redis_cmd_addf(c, "%" PRIu64, floor);
	presence_redis_cmd_add(c, name);
	presence_redis_cmd_add(c, p->keep_state ? "1" : "0");
	presence_redis_cmd_addf(c, "%" PRIu64, cseq);
	return finish(c);
}

enum presence_err presence_redis_encode_cas(struct presence_redis_cmd *c,
                                            const struct presence_redis_params *p,
                                            const char *epoch, const char *name, uint64_t expected,
                                            const char *state, uint64_t floor)
{
	fcall(c, "pv2_cas", name);
	bounds(c, p);
	presence_redis_cmd_add(c, p->broker_id);
	presence_redis_cmd_add(c, epoch);
	presence_redis_cmd_add(c, name);
	presence_redis_cmd_addf(c, "%" PRIu64, expected);
	presence_redis_cmd_add(c, state);
	presence_redis_cmd_addf(c, "%" PRIu64, floor);
	presence_redis_cmd_add(c, p->keep_state ? "1" : "0");
	return finish(c);
}

enum presence_err presence_redis_encode_privacy(struct presence_redis_cmd *c,
                                                const struct presence_redis_params *p,
                                                const char *epoch, const char *name,
                                                const char *privacy, const char *expected,
                                                bool widens, uint64_t floor)
{
	fcall(c, "pv2_privacy", name);
	bounds(c, p);
	presence_redis_cmd_add(c, p->broker_id);
	presence_redis_cmd_add(c, epoch);
	presence_redis_cmd_add(c, name);
	presence_redis_cmd_add(c, privacy);
	presence_redis_cmd_add(c, expected);
	presence_redis_cmd_add(c, widens ? "1" : "0");
	presence_redis_cmd_addf(c, "%" PRIu64, floor);
	return finish(c);
}

enum presence_err presence_redis_encode_widen(struct presence_redis_cmd *c,
                                              const struct presence_redis_params *p,
                                              const char *epoch, const char *name, uint64_t floor)
{
	fcall(c, "pv2_widen", name);
	presence_redis_cmd_addf(c, "%lu", p->stream_budget);
	presence_redis_cmd_add(c, p->broker_id);
	presence_redis_cmd_add(c, epoch);
	presence_redis_cmd_add(c, name);
	presence_redis_cmd_addf(c, "%" PRIu64, floor);
	return finish(c);
}

enum presence_err presence_redis_encode_floor(struct presence_redis_cmd *c, uint64_t floor)
{
	fcall(c, "pv2_floor", NULL);
	presence_redis_cmd_addf(c, "%" PRIu64, floor);
	return finish(c);
}

enum presence_err presence_redis_encode_seed(struct presence_redis_cmd *c,
                                             const struct presence_redis_params *p,
                                             const struct presence_cluster_record *doc)
{
	fcall(c, "pv2_seed", doc->name);
	bounds(c, p);
	presence_redis_cmd_add(c, doc->name);
	presence_redis_cmd_addf(c, "%" PRIu64, doc->seq);
	presence_redis_cmd_add(c, doc->available ? "1" : "0");
	presence_redis_cmd_addf(c, "%u", doc->sessions);
	presence_redis_cmd_addf(c, "%" PRId64, doc->since_ms);
	presence_redis_cmd_add(c, doc->state != NULL ? doc->state : "{}");
	presence_redis_cmd_addf(c, "%" PRId64, p->grace_ms);
	presence_redis_cmd_add(c, doc->privacy != NULL ? doc->privacy : "");
	return finish(c);
}

/* A timer function (ARGV: the bounds, a batch, the timers, then last). */
static void due(struct presence_redis_cmd *c, const struct presence_redis_params *p,
                const char *function)
{
	fcall(c, function, NULL);
	bounds(c, p);
	presence_redis_cmd_addf(c, "%d", PRESENCE_REDIS_DUE_BATCH);
	timers(c, p);
}

enum presence_err presence_redis_encode_grace_due(struct presence_redis_cmd *c,
                                                  const struct presence_redis_params *p)
{
	due(c, p, "pv2_grace_due");
	presence_redis_cmd_add(c, p->keep_state ? "1" : "0");
	return finish(c);
}

enum presence_err presence_redis_encode_forget_due(struct presence_redis_cmd *c,
                                                   const struct presence_redis_params *p)
{
	due(c, p, "pv2_forget_due");
	presence_redis_cmd_addf(c, "%" PRId64, p->forget_after_ms);
	return finish(c);
}

enum presence_err presence_redis_encode_sync(struct presence_redis_cmd *c,
                                             const struct presence_redis_params *p,
                                             const char *epoch, uint64_t bar)
{
	fcall(c, "pv2_sync", NULL);
	presence_redis_cmd_add(c, p->broker_id);
	presence_redis_cmd_add(c, epoch);
	presence_redis_cmd_addf(c, "%" PRIu64, bar);
	return finish(c);
}

enum presence_err presence_redis_encode_deregister(struct presence_redis_cmd *c,
                                                   const struct presence_redis_params *p,
                                                   const char *epoch)
{
	fcall(c, "pv2_deregister", NULL);
	presence_redis_cmd_add(c, p->broker_id);
	presence_redis_cmd_add(c, epoch);
	return finish(c);
}

enum presence_err presence_redis_encode_read(struct presence_redis_cmd *c, const char *last_id,
                                             unsigned int count)
{
	fcall(c, "pv2_read", NULL);
	presence_redis_cmd_add(c, last_id);
	presence_redis_cmd_addf(c, "%u", count);
	return finish(c);
}

enum presence_err presence_redis_encode_dead_head(struct presence_redis_cmd *c)
{
	presence_redis_cmd_add(c, "LINDEX");
	presence_redis_cmd_add(c, KEY_PREFIX "dead");
	presence_redis_cmd_add(c, "0");
	return finish(c);
}

enum presence_err presence_redis_encode_dead_remove(struct presence_redis_cmd *c, const char *dead)
{
	presence_redis_cmd_add(c, "LREM");
	presence_redis_cmd_add(c, KEY_PREFIX "dead");
	presence_redis_cmd_add(c, "0");
	presence_redis_cmd_add(c, dead);
	return finish(c);
}

enum presence_err presence_redis_encode_epoch_users(struct presence_redis_cmd *c,
                                                    const char *broker, const char *epoch)
{
	presence_redis_cmd_add(c, "SRANDMEMBER");
	presence_redis_cmd_addf(c, KEY_PREFIX "bu:%s:%s", broker, epoch);
	presence_redis_cmd_add(c, SWEEP_BATCH);
	return finish(c);
}

enum presence_err presence_redis_encode_scan(struct presence_redis_cmd *c, const char *cursor)
{
	presence_redis_cmd_add(c, "SCAN");
	presence_redis_cmd_add(c, cursor);
	presence_redis_cmd_add(c, "MATCH");
	presence_redis_cmd_add(c, USER_PREFIX "*");
	presence_redis_cmd_add(c, "COUNT");
	presence_redis_cmd_add(c, SCAN_COUNT);
	return finish(c);
}

enum presence_err presence_redis_encode_user_doc(struct presence_redis_cmd *c, const char *key)
{
	presence_redis_cmd_add(c, "HMGET");
	presence_redis_cmd_add(c, key);
	presence_redis_cmd_add(c, "seq");
	presence_redis_cmd_add(c, "avail");
	presence_redis_cmd_add(c, "sess");
	presence_redis_cmd_add(c, "since");
	presence_redis_cmd_add(c, "state");
	presence_redis_cmd_add(c, "priv");
	presence_redis_cmd_add(c, "pid");
	return finish(c);
}

enum presence_err presence_redis_encode_wait_record(struct presence_redis_cmd *c,
                                                    const char *last_id, int block_ms)
{
	presence_redis_cmd_add(c, "XREAD");
	presence_redis_cmd_add(c, "COUNT");
	presence_redis_cmd_add(c, "1");
	presence_redis_cmd_add(c, "BLOCK");
	presence_redis_cmd_addf(c, "%d", block_ms);
	presence_redis_cmd_add(c, "STREAMS");
	presence_redis_cmd_add(c, KEY_PREFIX "log");
	presence_redis_cmd_add(c, last_id);
	return finish(c);
}

enum presence_err presence_redis_encode_last_record(struct presence_redis_cmd *c)
{
	presence_redis_cmd_add(c, "XREVRANGE");
	presence_redis_cmd_add(c, KEY_PREFIX "log");
	presence_redis_cmd_add(c, "+");
	presence_redis_cmd_add(c, "-");
	presence_redis_cmd_add(c, "COUNT");
	presence_redis_cmd_add(c, "1");
	return finish(c);
}

enum presence_err presence_redis_encode_last_trimmed(struct presence_redis_cmd *c)
{
	presence_redis_cmd_add(c, "GET");
	presence_redis_cmd_add(c, KEY_PREFIX "trimmed");
	return finish(c);
}

enum presence_err presence_redis_encode_has_record(struct presence_redis_cmd *c, const char *id)
{
	presence_redis_cmd_add(c, "XRANGE");
	presence_redis_cmd_add(c, KEY_PREFIX "log");
	presence_redis_cmd_add(c, id);
	presence_redis_cmd_add(c, id);
	return finish(c);
}

/* ---- decoders ------------------------------------------------------------------------------ */

const char *presence_redis_reply_error(const redisReply *reply)
{
	if (reply == NULL || reply->type != REDIS_REPLY_ERROR) {
		return NULL;
	}
	return reply->str != NULL ? reply->str : "";
}

const char *presence_redis_reply_str(const redisReply *reply)
{
	if (reply == NULL ||
	    (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_STATUS) ||
	    reply->str == NULL || memchr(reply->str, '\0', reply->len) != NULL) {
		return NULL;
	}
	return reply->str;
}

bool presence_redis_parse_u64(const char *s, uint64_t *out)
{
	return s != NULL && presence_text_parse_uint(s, strlen(s), 0, UINT64_MAX, out);
}

void presence_redis_record_clear(struct presence_cluster_record *rec)
{
	free(rec->name);
	free(rec->state);
	free(rec->privacy);
	memset(rec, 0, sizeof(*rec));
}

/* The i-th element of an array reply, or NULL. */
static const redisReply *element(const redisReply *reply, size_t i)
{
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || i >= reply->elements ||
	    reply->element == NULL) {
		return NULL;
	}
	return reply->element[i];
}

/* The string of the i-th element of an array reply, or NULL. */
static const char *element_str(const redisReply *reply, size_t i)
{
	return presence_redis_reply_str(element(reply, i));
}

/* The status of a function's array reply (its first element's string), or NULL. */
static const char *status_of(const redisReply *reply)
{
	return element_str(reply, 0);
}

/* Copies s into out (size bytes) when it fits; false otherwise. */
static bool copy_id(char *out, size_t size, const char *s)
{
	size_t len = s != NULL ? strlen(s) : 0;

	if (s == NULL || len >= size) {
		return false;
	}
	memcpy(out, s, len + 1);
	return true;
}

/* Fills rec from the five strings seq, avail, sess, since, state (name copied). INVAL when they
 * are not a document, NOMEM; rec is zeroed on failure. */
static enum presence_err record_from(struct presence_cluster_record *rec, const char *name,
                                     const char *seq, const char *avail, const char *sess,
                                     const char *since, const char *state)
{
	uint64_t n, t;

	memset(rec, 0, sizeof(*rec));
	if (name == NULL || !presence_redis_parse_u64(seq, &rec->seq) || rec->seq == 0 ||
	    avail == NULL || !presence_redis_parse_u64(sess, &n) || n > UINT32_MAX ||
	    !presence_redis_parse_u64(since, &t) || t > INT64_MAX || state == NULL) {
		memset(rec, 0, sizeof(*rec));
		return PRESENCE_ERR_INVAL;
	}
	rec->available = strcmp(avail, "1") == 0;
	rec->sessions = (unsigned int)n;
	rec->since_ms = (int64_t)t;
	rec->name = presence_text_dup(name, strlen(name));
	rec->state = presence_text_dup(state, strlen(state));
	if (rec->name == NULL || rec->state == NULL) {
		presence_redis_record_clear(rec);
		return PRESENCE_ERR_NOMEM;
	}
	return PRESENCE_OK;
}

/* Sets rec->privacy to a copy of privacy (NULL: the default, ""); on failure clears rec. */
static enum presence_err record_privacy(struct presence_cluster_record *rec, const char *privacy)
{
	if (privacy == NULL) {
		privacy = "";
	}
	rec->privacy = presence_text_dup(privacy, strlen(privacy));
	if (rec->privacy == NULL) {
		presence_redis_record_clear(rec);
		return PRESENCE_ERR_NOMEM;
	}
	return PRESENCE_OK;
}

enum presence_err presence_redis_decode_register(const redisReply *reply,
                                                 struct presence_redis_registration *out)
{
	const char *first = status_of(reply);

	memset(out, 0, sizeof(*out));
	if (first != NULL && strcmp(first, "CLASH") == 0 && reply->elements == 3) {
		const char *other = element_str(reply, 1);
		const char *left = element_str(reply, 2);

		out->clash = true;
		snprintf(out->other, sizeof(out->other), "%s",
		         other != NULL && *other != '\0' ? other : "?");
		snprintf(out->left_ms, sizeof(out->left_ms), "%s",
		         left != NULL && *left != '\0' ? left : "?");
		return PRESENCE_OK;
	}
	if (first == NULL || reply->elements != 2 || *first == '\0' ||
	    !copy_id(out->epoch, sizeof(out->epoch), first) ||
	    !copy_id(out->gen, sizeof(out->gen), element_str(reply, 1)) || out->gen[0] == '\0') {
		memset(out, 0, sizeof(*out));
		return PRESENCE_ERR_INVAL;
	}
	return PRESENCE_OK;
}

enum presence_err presence_redis_decode_heartbeat(const redisReply *reply,
                                                  struct presence_redis_heartbeat *out)
{
	const char *status = status_of(reply);
	const redisReply *brokers;

	memset(out, 0, sizeof(*out));
	if (status != NULL && strcmp(status, "STALE") == 0) {
		out->stale = true;
		return PRESENCE_OK;
	}
	brokers = element(reply, 2);
	if (status == NULL || strcmp(status, "OK") != 0 || reply->elements != 4 ||
	    !copy_id(out->gen, sizeof(out->gen), element_str(reply, 1)) || brokers == NULL ||
	    brokers->type != REDIS_REPLY_INTEGER || brokers->integer < 0) {
		memset(out, 0, sizeof(*out));
		return PRESENCE_ERR_INVAL;
	}
	out->brokers = brokers->integer;
	if (!presence_redis_parse_u64(element_str(reply, 3), &out->barrier)) {
		out->barrier = 0;
	}
	return PRESENCE_OK;
}

enum presence_err presence_redis_decode_contrib(const redisReply *reply,
                                                enum presence_redis_outcome *out)
{
	const char *status = status_of(reply);

	*out = PRESENCE_REDIS_DONE;
	if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
		return PRESENCE_ERR_INVAL;
	}
	if (status != NULL && strcmp(status, "STALE") == 0) {
		*out = PRESENCE_REDIS_STALE;
	} else if (status != NULL && strcmp(status, "FULL") == 0) {
		*out = PRESENCE_REDIS_USERS_FULL;
	}
	return PRESENCE_OK;
}

enum presence_err presence_redis_decode_cas(const redisReply *reply, const char *name,
                                            enum presence_redis_outcome *out,
                                            struct presence_cluster_record *rec)
{
	const char *status = status_of(reply);
	enum presence_err err;

	memset(rec, 0, sizeof(*rec));
	*out = PRESENCE_REDIS_DONE;
	if (status == NULL) {
		return PRESENCE_ERR_INVAL;
	}
	if (reply->elements == 1) {
		if (strcmp(status, "STALE") == 0) {
			*out = PRESENCE_REDIS_STALE;
		} else if (strcmp(status, "OFFLINE") == 0) {
			*out = PRESENCE_REDIS_OFFLINE;
		} else if (strcmp(status, "FULL") == 0) {
			*out = PRESENCE_REDIS_USERS_FULL;
		} else {
			return PRESENCE_ERR_INVAL;
		}
		return PRESENCE_OK;
	}
	if (reply->elements != 6 || (strcmp(status, "OK") != 0 && strcmp(status, "SAME") != 0 &&
	                             strcmp(status, "CONFLICT") != 0)) {
		return PRESENCE_ERR_INVAL;
	}
	err = record_from(rec, name, element_str(reply, 1), element_str(reply, 2),
	                  element_str(reply, 3), element_str(reply, 4), element_str(reply, 5));
	if (err != PRESENCE_OK) {
		return err;
	}
	*out = strcmp(status, "CONFLICT") == 0 ? PRESENCE_REDIS_CONFLICT : PRESENCE_REDIS_COMMITTED;
	return PRESENCE_OK;
}

enum presence_err presence_redis_decode_seed(const redisReply *reply,
                                             enum presence_redis_outcome *out)
{
	const char *s = presence_redis_reply_str(reply);
	const char *status = status_of(reply);

	*out = PRESENCE_REDIS_DONE;
	if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
		return PRESENCE_ERR_INVAL;
	}
	if (s != NULL && strcmp(s, "FORGOTTEN") == 0) {
		*out = PRESENCE_REDIS_FORGOTTEN;
	} else if (s != NULL && strcmp(s, "FULL") == 0) {
		*out = PRESENCE_REDIS_USERS_FULL;
	} else if (status != NULL && strcmp(status, "STALE") == 0) {
		*out = PRESENCE_REDIS_STALE;
	}
	return PRESENCE_OK;
}

enum presence_err presence_redis_decode_privacy(const redisReply *reply,
                                                enum presence_redis_outcome *out)
{
	const char *status = status_of(reply);

	*out = PRESENCE_REDIS_DONE;
	if (status == NULL) {
		return PRESENCE_ERR_INVAL;
	}
	if (strcmp(status, "STALE") == 0) {
		*out = PRESENCE_REDIS_STALE;
	} else if (strcmp(status, "FULL") == 0) {
		*out = PRESENCE_REDIS_USERS_FULL;
	} else if (strcmp(status, "OK") != 0 && strcmp(status, "SAME") != 0 &&
	           strcmp(status, "NONE") != 0) {
		return PRESENCE_ERR_INVAL;
	}
	return PRESENCE_OK;
}

enum presence_err presence_redis_decode_due(const redisReply *reply, long long *changed)
{
	*changed = 0;
	if (reply == NULL || reply->type != REDIS_REPLY_INTEGER || reply->integer < 0) {
		return PRESENCE_ERR_INVAL;
	}
	*changed = reply->integer;
	return PRESENCE_OK;
}

enum presence_err presence_redis_decode_sync(const redisReply *reply,
                                             enum presence_redis_outcome *out)
{
	const char *s = presence_redis_reply_str(reply);

	*out = PRESENCE_REDIS_DONE;
	if (s != NULL && strcmp(s, "OK") == 0) {
		return PRESENCE_OK;
	}
	if (s != NULL && strcmp(s, "STALE") == 0) {
		*out = PRESENCE_REDIS_STALE;
		return PRESENCE_OK;
	}
	return PRESENCE_ERR_INVAL;
}

enum presence_err presence_redis_decode_names(const redisReply *reply, const char **names,
                                              size_t max, size_t *n)
{
	*n = 0;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
		return PRESENCE_ERR_INVAL;
	}
	for (size_t i = 0; i < reply->elements && *n < max; i++) {
		const char *name = element_str(reply, i);

		if (name != NULL) {
			names[(*n)++] = name;
		}
	}
	return PRESENCE_OK;
}

/* The value of field in the flat field/value array of a stream record, or NULL. */
static const char *record_field(const redisReply *fields, const char *field)
{
	for (size_t i = 0; i + 1 < fields->elements; i += 2) {
		const char *f = element_str(fields, i);

		if (f != NULL && strcmp(f, field) == 0) {
			return element_str(fields, i + 1);
		}
	}
	return NULL;
}

enum presence_err presence_redis_decode_record(const redisReply *fields,
                                               struct presence_redis_stream_record *out)
{
	const char *name, *privacy;
	enum presence_err err;

	memset(out, 0, sizeof(*out));
	if (fields == NULL || fields->type != REDIS_REPLY_ARRAY) {
		return PRESENCE_ERR_INVAL;
	}
	name = record_field(fields, "u");
	if (name == NULL) {
		/* A user waits to go offline: every broker is to confirm the barrier. */
		if (!presence_redis_parse_u64(record_field(fields, "y"), &out->rec.seq)) {
			out->rec.seq = 0;
			return PRESENCE_ERR_INVAL;
		}
		out->kind = PRESENCE_REDIS_RECORD_BARRIER;
		return PRESENCE_OK;
	}
	if (record_field(fields, "f") != NULL) {
		if (!presence_redis_parse_u64(record_field(fields, "q"), &out->rec.seq)) {
			out->rec.seq = 0;
			return PRESENCE_ERR_INVAL;
		}
		out->rec.name = presence_text_dup(name, strlen(name));
		if (out->rec.name == NULL) {
			out->rec.seq = 0;
			return PRESENCE_ERR_NOMEM;
		}
		out->kind = PRESENCE_REDIS_RECORD_FORGOTTEN;
		return PRESENCE_OK;
	}
	privacy = record_field(fields, "p");
	if (privacy != NULL && record_field(fields, "q") == NULL) {
		/* A privacy choice that shows the user to nobody new: no document. */
		out->kind = PRESENCE_REDIS_RECORD_PRIVACY;
		out->rec.name = presence_text_dup(name, strlen(name));
		if (out->rec.name == NULL) {
			return PRESENCE_ERR_NOMEM;
		}
		return record_privacy(&out->rec, privacy);
	}
	out->kind = PRESENCE_REDIS_RECORD_DOCUMENT;
	err = record_from(&out->rec, name, record_field(fields, "q"), record_field(fields, "a"),
	                  record_field(fields, "n"), record_field(fields, "t"),
	                  record_field(fields, "s"));
	if (err != PRESENCE_OK || privacy == NULL) {
		return err;
	}
	return record_privacy(&out->rec, privacy);
}

enum presence_err presence_redis_decode_read(const redisReply *reply, bool *gap,
                                             const redisReply **entries)
{
	const char *status = status_of(reply);
	const redisReply *array = element(reply, 1);

	*gap = false;
	*entries = NULL;
	if (status != NULL && strcmp(status, "GAP") == 0) {
		*gap = true;
		return PRESENCE_OK;
	}
	if (status == NULL || reply->elements != 2 || array == NULL ||
	    array->type != REDIS_REPLY_ARRAY) {
		return PRESENCE_ERR_INVAL;
	}
	*entries = array;
	return PRESENCE_OK;
}

enum presence_err presence_redis_decode_entry(const redisReply *entry, char *id,
                                              const redisReply **fields)
{
	const redisReply *f = element(entry, 1);

	*fields = NULL;
	id[0] = '\0';
	if (entry == NULL || entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
	    !copy_id(id, PRESENCE_REDIS_ID_SIZE, element_str(entry, 0)) || id[0] == '\0') {
		id[0] = '\0';
		return PRESENCE_ERR_INVAL;
	}
	if (f != NULL && f->type == REDIS_REPLY_ARRAY) {
		*fields = f;
	}
	return PRESENCE_OK;
}

enum presence_err presence_redis_decode_scan(const redisReply *reply, char *cursor,
                                             const redisReply **keys)
{
	const redisReply *array = element(reply, 1);

	*keys = NULL;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    array == NULL || array->type != REDIS_REPLY_ARRAY ||
	    !copy_id(cursor, 32, element_str(reply, 0)) || cursor[0] == '\0') {
		return PRESENCE_ERR_INVAL;
	}
	*keys = array;
	return PRESENCE_OK;
}

const char *presence_redis_user_of_key(const char *key)
{
	size_t len = strlen(USER_PREFIX);

	if (key == NULL || strncmp(key, USER_PREFIX, len) != 0) {
		return NULL;
	}
	return key + len;
}

enum presence_err presence_redis_decode_user_doc(const redisReply *reply, const char *name,
                                                 struct presence_cluster_record *rec)
{
	enum presence_err err;

	memset(rec, 0, sizeof(*rec));
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
	    (reply->elements != 5 && reply->elements != 7)) {
		return PRESENCE_ERR_INVAL;
	}
	err = record_from(rec, name, element_str(reply, 0), element_str(reply, 1),
	                  element_str(reply, 2), element_str(reply, 3), element_str(reply, 4));
	if (err != PRESENCE_OK || reply->elements == 5) {
		return err;
	}
	return record_privacy(rec, element_str(reply, 5));
}

void presence_redis_decode_user_privacy_id(const redisReply *reply, char *id)
{
	const char *pid = reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 7
	                      ? element_str(reply, 6)
	                      : NULL;

	if (!copy_id(id, PRESENCE_REDIS_ID_SIZE, pid)) {
		id[0] = '\0';
	}
}

enum presence_err presence_redis_decode_last_record(const redisReply *reply, char *id, bool *found)
{
	const redisReply *last = element(reply, 0);

	*found = false;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
		return PRESENCE_ERR_INVAL;
	}
	if (reply->elements == 0) {
		return PRESENCE_OK;
	}
	if (reply->elements != 1 || last == NULL || last->type != REDIS_REPLY_ARRAY ||
	    last->elements != 2 || !copy_id(id, PRESENCE_REDIS_ID_SIZE, element_str(last, 0))) {
		return PRESENCE_ERR_INVAL;
	}
	*found = true;
	return PRESENCE_OK;
}

bool presence_redis_id_after(const char *a, const char *b)
{
	unsigned long long am, as, bm, bs;

	if (a == NULL || b == NULL || sscanf(a, "%llu-%llu", &am, &as) != 2 ||
	    sscanf(b, "%llu-%llu", &bm, &bs) != 2) {
		return false;
	}
	return am > bm || (am == bm && as > bs);
}

enum presence_err presence_redis_decode_has_record(const redisReply *reply, bool *has)
{
	*has = false;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
		return PRESENCE_ERR_INVAL;
	}
	*has = reply->elements == 1;
	return PRESENCE_OK;
}
