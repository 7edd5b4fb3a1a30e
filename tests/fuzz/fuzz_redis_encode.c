/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * libFuzzer harness: the encoders of the cluster's Redis calls (plugin/redis/redis_codec.h).
 * The input gives two numbers and a flag byte, then a user name, a state, an epoch and a broker
 * id (NUL-separated).
 * Invariants: every function call is "FCALL <function> 18" with the 18 keys of presence_v2.lua
 * (key 1 the user's hash, key 15 the broker epoch's user set for pv2_contrib), every argument
 * has the length the command records, strings arrive unchanged and numbers parse back to the
 * values given; and the document (and privacy choice) pv2_seed stores, read back as the HMGET reply
 * Redis then gives, decodes to the document that was seeded (decode(encode(x)) == x).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "redis_codec.h"
#include "resp.h"

/* Takes the next NUL-terminated field of the input (the rest when there is no NUL). */
static char *take_field(const uint8_t **p, size_t *left)
{
	const uint8_t *end = memchr(*p, '\0', *left);
	size_t len = end != NULL ? (size_t)(end - *p) : *left;
	char *s = malloc(len + 1);

	FUZZ_CHECK(s != NULL);
	memcpy(s, *p, len);
	s[len] = '\0';
	*p += end != NULL ? len + 1 : len;
	*left -= end != NULL ? len + 1 : len;
	return s;
}

static uint64_t take_u64(const uint8_t **p, size_t *left)
{
	uint64_t v = 0;

	for (int i = 0; i < 8 && *left > 0; i++) {
		v = v << 8 | **p;
		(*p)++;
		(*left)--;
	}
	return v;
}

static void check_arg(const struct presence_redis_cmd *c, int i, const char *want)
{
	FUZZ_CHECK(i < c->argc);
	FUZZ_CHECK(c->len[i] == strlen(c->argv[i]));
	FUZZ_CHECK(strcmp(c->argv[i], want) == 0);
}

static void check_u64(const struct presence_redis_cmd *c, int i, uint64_t want)
{
	uint64_t got;

	FUZZ_CHECK(i < c->argc);
	FUZZ_CHECK(presence_redis_parse_u64(c->argv[i], &got) && got == want);
}

/* An FCALL of function with key 1 user's hash (NULL: the prefix). */
static void check_fcall(const struct presence_redis_cmd *c, const char *function, const char *user)
{
	FUZZ_CHECK(c->argc > 3 + 18 && c->argc <= PRESENCE_REDIS_ARGS_MAX && !c->failed);
	for (int i = 0; i < c->argc; i++) {
		FUZZ_CHECK(c->argv[i] != NULL && c->len[i] == strlen(c->argv[i]));
	}
	check_arg(c, 0, "FCALL");
	check_arg(c, 1, function);
	check_arg(c, 2, "18");
	if (user == NULL) {
		check_arg(c, 3, PRESENCE_REDIS_USER_PREFIX);
	} else {
		FUZZ_CHECK(strncmp(c->argv[3], PRESENCE_REDIS_USER_PREFIX,
		                   strlen(PRESENCE_REDIS_USER_PREFIX)) == 0);
		check_arg(c, 3, c->argv[3]);
		FUZZ_CHECK(strcmp(c->argv[3] + strlen(PRESENCE_REDIS_USER_PREFIX), user) == 0);
	}
	for (int i = 4; i < 3 + 18; i++) {
		FUZZ_CHECK(strncmp(c->argv[i], PRESENCE_REDIS_KEY_PREFIX,
		                   strlen(PRESENCE_REDIS_KEY_PREFIX)) == 0);
	}
}

/* pv2_seed's ARGV (after the bounds) read back as the HMGET reply of the hash it fills. */
static void check_seed_round_trip(const struct presence_redis_cmd *c,
                                  const struct presence_cluster_record *doc)
{
	/* ARGV: prefix, budget, max_users, name, seq, avail, sess, since, state, grace, priv;
	 * the hash's priv and pid come after the five document fields. */
	const int argv0 = 3 + 18;
	redisReply *e[7];
	redisReply *reply;
	struct presence_cluster_record back;

	FUZZ_CHECK(c->argc == argv0 + 11);
	check_arg(c, argv0 + 3, doc->name);
	check_arg(c, argv0 + 10, doc->privacy != NULL ? doc->privacy : "");
	for (int i = 0; i < 5; i++) {
		e[i] = fuzz_reply_str(REDIS_REPLY_STRING, c->argv[argv0 + 4 + i],
		                      c->len[argv0 + 4 + i]);
	}
	e[5] = fuzz_reply_str(REDIS_REPLY_STRING, c->argv[argv0 + 10], c->len[argv0 + 10]);
	e[6] = fuzz_reply_str(REDIS_REPLY_STRING, "0-0", 3);
	reply = fuzz_reply_array(7, e);
	if (doc->seq == 0 || doc->since_ms < 0) {
		/* Not a document Redis would hold: the decoder refuses it. */
		FUZZ_CHECK(presence_redis_decode_user_doc(reply, doc->name, &back) ==
		           PRESENCE_ERR_INVAL);
	} else {
		FUZZ_CHECK(presence_redis_decode_user_doc(reply, doc->name, &back) == PRESENCE_OK);
		FUZZ_CHECK(strcmp(back.name, doc->name) == 0 && back.seq == doc->seq &&
		           back.available == doc->available && back.sessions == doc->sessions &&
		           back.since_ms == doc->since_ms &&
		           strcmp(back.state, doc->state != NULL ? doc->state : "{}") == 0 &&
		           strcmp(back.privacy, doc->privacy != NULL ? doc->privacy : "") == 0);
		presence_redis_record_clear(&back);
	}
	fuzz_reply_free(reply);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data;
	size_t left = size;
	uint64_t a = take_u64(&p, &left), b = take_u64(&p, &left);
	uint8_t flags = left > 0 ? *p : 0;
	char *name, *state, *epoch, *broker;
	struct presence_redis_params params;
	struct presence_redis_cmd c = {0};
	struct presence_cluster_record doc;
	const int argv0 = 3 + 18;

	if (left > 0) {
		p++;
		left--;
	}
	name = take_field(&p, &left);
	state = take_field(&p, &left);
	epoch = take_field(&p, &left);
	broker = take_field(&p, &left);
	params = (struct presence_redis_params){
	    .broker_id = broker,
	    .heartbeat_ms = (int64_t)(a % 100000),
	    .lease_ms = (int64_t)(b % 1000000),
	    .grace_ms = (int64_t)(a >> 32),
	    .keep_state = (flags & 1) != 0,
	    .stream_budget = (unsigned long)b,
	    .max_users = (unsigned long)a,
	    .forget_after_ms = (int64_t)(b >> 1),
	};

	FUZZ_CHECK(presence_redis_encode_cas(&c, &params, epoch, name, a, state, b) == PRESENCE_OK);
	check_fcall(&c, "pv2_cas", name);
	check_arg(&c, argv0, PRESENCE_REDIS_USER_PREFIX);
	check_arg(&c, argv0 + 3, broker);
	check_arg(&c, argv0 + 4, epoch);
	check_arg(&c, argv0 + 5, name);
	check_u64(&c, argv0 + 6, a);
	check_arg(&c, argv0 + 7, state);
	check_u64(&c, argv0 + 8, b);
	check_arg(&c, argv0 + 9, params.keep_state ? "1" : "0");
	presence_redis_cmd_free(&c);

	FUZZ_CHECK(presence_redis_encode_contrib(&c, &params, broker, epoch, name,
	                                         (flags & 2) ? -1 : (long long)(a >> 1), b,
	                                         a) == PRESENCE_OK);
	check_fcall(&c, "pv2_contrib", name);
	FUZZ_CHECK(strncmp(c.argv[3 + 14], PRESENCE_REDIS_KEY_PREFIX "bu:",
	                   strlen(PRESENCE_REDIS_KEY_PREFIX "bu:")) == 0);
	check_arg(&c, argv0 + 3, broker);
	check_arg(&c, argv0 + 4, epoch);
	check_u64(&c, argv0 + 7, b);
	check_arg(&c, argv0 + 8, name);
	check_u64(&c, argv0 + 10, a);
	presence_redis_cmd_free(&c);

	FUZZ_CHECK(presence_redis_encode_sync(&c, &params, epoch, a) == PRESENCE_OK);
	check_fcall(&c, "pv2_sync", NULL);
	check_arg(&c, argv0, broker);
	check_arg(&c, argv0 + 1, epoch);
	check_u64(&c, argv0 + 2, a);
	presence_redis_cmd_free(&c);

	FUZZ_CHECK(presence_redis_encode_heartbeat(&c, &params, epoch) == PRESENCE_OK);
	check_fcall(&c, "pv2_heartbeat", NULL);
	check_arg(&c, argv0 + 1, epoch);
	presence_redis_cmd_free(&c);

	FUZZ_CHECK(presence_redis_encode_register(&c, &params, state, epoch) == PRESENCE_OK);
	check_fcall(&c, "pv2_register", NULL);
	check_arg(&c, argv0, broker);
	check_arg(&c, argv0 + 2, state);
	check_arg(&c, argv0 + 3, epoch);
	presence_redis_cmd_free(&c);

	/* The state stands for the privacy choice, the epoch for the one before. */
	FUZZ_CHECK(presence_redis_encode_privacy(&c, &params, epoch, name, state, epoch,
	                                         (flags & 32) != 0, b) == PRESENCE_OK);
	check_fcall(&c, "pv2_privacy", name);
	FUZZ_CHECK(c.argc == argv0 + 10);
	check_arg(&c, argv0, PRESENCE_REDIS_USER_PREFIX);
	check_arg(&c, argv0 + 3, broker);
	check_arg(&c, argv0 + 4, epoch);
	check_arg(&c, argv0 + 5, name);
	check_arg(&c, argv0 + 6, state);
	check_arg(&c, argv0 + 7, epoch);
	check_arg(&c, argv0 + 8, (flags & 32) ? "1" : "0");
	check_u64(&c, argv0 + 9, b);
	presence_redis_cmd_free(&c);

	FUZZ_CHECK(presence_redis_encode_widen(&c, &params, epoch, name, a) == PRESENCE_OK);
	check_fcall(&c, "pv2_widen", name);
	FUZZ_CHECK(c.argc == argv0 + 5);
	check_arg(&c, argv0 + 1, broker);
	check_arg(&c, argv0 + 2, epoch);
	check_arg(&c, argv0 + 3, name);
	check_u64(&c, argv0 + 4, a);
	presence_redis_cmd_free(&c);

	FUZZ_CHECK(presence_redis_encode_floor(&c, b) == PRESENCE_OK);
	check_fcall(&c, "pv2_floor", NULL);
	check_u64(&c, argv0, b);
	presence_redis_cmd_free(&c);

	FUZZ_CHECK(presence_redis_encode_grace_due(&c, &params) == PRESENCE_OK);
	check_fcall(&c, "pv2_grace_due", NULL);
	presence_redis_cmd_free(&c);
	FUZZ_CHECK(presence_redis_encode_forget_due(&c, &params) == PRESENCE_OK);
	check_fcall(&c, "pv2_forget_due", NULL);
	presence_redis_cmd_free(&c);
	FUZZ_CHECK(presence_redis_encode_sweep_claim(&c, &params) == PRESENCE_OK);
	check_fcall(&c, "pv2_sweep_claim", NULL);
	presence_redis_cmd_free(&c);
	FUZZ_CHECK(presence_redis_encode_read(&c, epoch, (unsigned int)a) == PRESENCE_OK);
	check_fcall(&c, "pv2_read", NULL);
	check_arg(&c, argv0, epoch);
	check_u64(&c, argv0 + 1, (unsigned int)a);
	presence_redis_cmd_free(&c);

	doc = (struct presence_cluster_record){
	    .name = name,
	    .seq = a,
	    .available = (flags & 4) != 0,
	    .sessions = (unsigned int)b,
	    .since_ms = (int64_t)(b >> 1) - (int64_t)(flags & 8),
	    .state = (flags & 16) ? NULL : state,
	    .privacy = (flags & 64) ? epoch : NULL,
	};
	FUZZ_CHECK(presence_redis_encode_seed(&c, &params, &doc) == PRESENCE_OK);
	check_fcall(&c, "pv2_seed", name);
	check_seed_round_trip(&c, &doc);
	presence_redis_cmd_free(&c);

	free(name);
	free(state);
	free(epoch);
	free(broker);
	return 0;
}
