/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Unit tests of the Redis codec's privacy calls (plugin/redis/redis_codec.h; built with cluster
 * mode only): the arguments of pv2_privacy, pv2_widen and pv2_seed, the user hash's priv and pid
 * in a snapshot, the stream's privacy records, and the replies of pv2_privacy and pv2_widen.
 * Replies are built here as hiredis would hand them over.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "failalloc.h"
#include "redis_codec.h"

/* A string reply (NULL: nil). */
static redisReply *str(const char *s)
{
	redisReply *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	if (s == NULL) {
		r->type = REDIS_REPLY_NIL;
		return r;
	}
	r->type = REDIS_REPLY_STRING;
	r->len = strlen(s);
	r->str = strdup(s);
	assert_non_null(r->str);
	return r;
}

/* An array of the n replies given (taken over). */
static redisReply *arr(size_t n, ...)
{
	redisReply *r = calloc(1, sizeof(*r));
	va_list ap;

	assert_non_null(r);
	r->type = REDIS_REPLY_ARRAY;
	r->elements = n;
	r->element = calloc(n > 0 ? n : 1, sizeof(*r->element));
	assert_non_null(r->element);
	va_start(ap, n);
	for (size_t i = 0; i < n; i++) {
		r->element[i] = va_arg(ap, redisReply *);
	}
	va_end(ap);
	return r;
}

static void reply_free(redisReply *r)
{
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
		reply_free(r->element[i]);
	}
	free(r->element);
	free(r->str);
	free(r);
}

static const struct presence_redis_params params = {
    .broker_id = "b1",
    .stream_budget = 16777216,
    .max_users = 1000,
};

/* The ARGV of an FCALL (after the 18 keys). */
#define ARGV0 (3 + 18)

static void privacy_and_widen_are_encoded_as_the_functions_take_them(void **state)
{
	struct presence_redis_cmd c = {0};

	(void)state;
	assert_int_equal(presence_redis_encode_privacy(&c, &params, "17", "alice",
	                                               "{\"visible_to\":\"nobody\"}", "", true, 9),
	                 PRESENCE_OK);
	assert_int_equal(c.argc, ARGV0 + 10);
	assert_string_equal(c.argv[1], "pv2_privacy");
	assert_string_equal(c.argv[3], "{presence}:u:alice");
	assert_string_equal(c.argv[ARGV0], "{presence}:u:");
	assert_string_equal(c.argv[ARGV0 + 1], "16777216");
	assert_string_equal(c.argv[ARGV0 + 2], "1000");
	assert_string_equal(c.argv[ARGV0 + 3], "b1");
	assert_string_equal(c.argv[ARGV0 + 4], "17");
	assert_string_equal(c.argv[ARGV0 + 5], "alice");
	assert_string_equal(c.argv[ARGV0 + 6], "{\"visible_to\":\"nobody\"}");
	/* The default choice is the empty string, arguments of length 0 included. */
	assert_string_equal(c.argv[ARGV0 + 7], "");
	assert_int_equal(c.len[ARGV0 + 7], 0);
	assert_string_equal(c.argv[ARGV0 + 8], "1");
	assert_string_equal(c.argv[ARGV0 + 9], "9");
	presence_redis_cmd_free(&c);

	assert_int_equal(presence_redis_encode_widen(&c, &params, "17", "alice", 12), PRESENCE_OK);
	assert_int_equal(c.argc, ARGV0 + 5);
	assert_string_equal(c.argv[1], "pv2_widen");
	assert_string_equal(c.argv[3], "{presence}:u:alice");
	assert_string_equal(c.argv[ARGV0], "16777216");
	assert_string_equal(c.argv[ARGV0 + 1], "b1");
	assert_string_equal(c.argv[ARGV0 + 2], "17");
	assert_string_equal(c.argv[ARGV0 + 3], "alice");
	assert_string_equal(c.argv[ARGV0 + 4], "12");
	presence_redis_cmd_free(&c);
}

static void a_seed_carries_the_choice_and_a_snapshot_reads_it(void **state)
{
	char name[] = "alice", empty[] = "{}", group[] = "{\"visible_to\":\"group\"}";
	struct presence_cluster_record doc = {.name = name,
	                                      .seq = 5,
	                                      .available = true,
	                                      .sessions = 1,
	                                      .since_ms = 7,
	                                      .state = empty,
	                                      .privacy = group};
	struct presence_redis_cmd c = {0};

	(void)state;
	assert_int_equal(presence_redis_encode_seed(&c, &params, &doc), PRESENCE_OK);
	assert_int_equal(c.argc, ARGV0 + 11);
	assert_string_equal(c.argv[ARGV0 + 10], "{\"visible_to\":\"group\"}");
	presence_redis_cmd_free(&c);
	doc.privacy = NULL;
	assert_int_equal(presence_redis_encode_seed(&c, &params, &doc), PRESENCE_OK);
	assert_string_equal(c.argv[ARGV0 + 10], "");
	presence_redis_cmd_free(&c);

	assert_int_equal(presence_redis_encode_user_doc(&c, "{presence}:u:alice"), PRESENCE_OK);
	assert_int_equal(c.argc, 2 + 7);
	assert_string_equal(c.argv[7], "priv");
	assert_string_equal(c.argv[8], "pid");
	presence_redis_cmd_free(&c);
}

static void a_snapshot_entry_has_the_users_choice_and_its_record(void **state)
{
	struct presence_cluster_record rec;
	char pid[PRESENCE_REDIS_ID_SIZE];
	redisReply *r;

	(void)state;
	r = arr(7, str("5"), str("1"), str("1"), str("7"), str("{}"),
	        str("{\"visible_to\":[\"bob\"]}"), str("1796700589930-3"));
	assert_int_equal(presence_redis_decode_user_doc(r, "alice", &rec), PRESENCE_OK);
	assert_string_equal(rec.privacy, "{\"visible_to\":[\"bob\"]}");
	assert_int_equal(rec.seq, 5);
	presence_redis_decode_user_privacy_id(r, pid);
	assert_string_equal(pid, "1796700589930-3");
	presence_redis_record_clear(&rec);
	reply_free(r);

	/* No choice: the default (""), no record. */
	r = arr(7, str("5"), str("1"), str("1"), str("7"), str("{}"), str(NULL), str(NULL));
	assert_int_equal(presence_redis_decode_user_doc(r, "alice", &rec), PRESENCE_OK);
	assert_string_equal(rec.privacy, "");
	presence_redis_decode_user_privacy_id(r, pid);
	assert_string_equal(pid, "");
	presence_redis_record_clear(&rec);
	reply_free(r);

	/* The five document fields alone: no choice given (NULL). */
	r = arr(5, str("5"), str("1"), str("1"), str("7"), str("{}"));
	assert_int_equal(presence_redis_decode_user_doc(r, "alice", &rec), PRESENCE_OK);
	assert_null(rec.privacy);
	presence_redis_decode_user_privacy_id(r, pid);
	assert_string_equal(pid, "");
	presence_redis_record_clear(&rec);
	reply_free(r);

	/* Any other length is no document. */
	r = arr(6, str("5"), str("1"), str("1"), str("7"), str("{}"), str(""));
	assert_int_equal(presence_redis_decode_user_doc(r, "alice", &rec), PRESENCE_ERR_INVAL);
	assert_null(rec.name);
	reply_free(r);
}

static void the_stream_carries_choices_alone_or_with_the_jumped_document(void **state)
{
	struct presence_redis_stream_record sr;
	redisReply *r;

	(void)state;
	r = arr(4, str("u"), str("alice"), str("p"), str("{\"visible_to\":\"nobody\"}"));
	assert_int_equal(presence_redis_decode_record(r, &sr), PRESENCE_OK);
	assert_int_equal(sr.kind, PRESENCE_REDIS_RECORD_PRIVACY);
	assert_string_equal(sr.rec.name, "alice");
	assert_string_equal(sr.rec.privacy, "{\"visible_to\":\"nobody\"}");
	assert_null(sr.rec.state);
	assert_int_equal(sr.rec.seq, 0);
	presence_redis_record_clear(&sr.rec);
	reply_free(r);

	r = arr(14, str("u"), str("alice"), str("q"), str("1796700589930"), str("a"), str("1"),
	        str("n"), str("1"), str("t"), str("1796700589930"), str("s"), str("{}"), str("p"),
	        str(""));
	assert_int_equal(presence_redis_decode_record(r, &sr), PRESENCE_OK);
	assert_int_equal(sr.kind, PRESENCE_REDIS_RECORD_DOCUMENT);
	assert_int_equal(sr.rec.seq, 1796700589930ULL);
	assert_string_equal(sr.rec.privacy, "");
	presence_redis_record_clear(&sr.rec);
	reply_free(r);

	/* A document without p carries no choice. */
	r = arr(12, str("u"), str("alice"), str("q"), str("3"), str("a"), str("1"), str("n"),
	        str("1"), str("t"), str("9"), str("s"), str("{}"));
	assert_int_equal(presence_redis_decode_record(r, &sr), PRESENCE_OK);
	assert_int_equal(sr.kind, PRESENCE_REDIS_RECORD_DOCUMENT);
	assert_null(sr.rec.privacy);
	presence_redis_record_clear(&sr.rec);
	reply_free(r);

	/* A document with a broken field is refused, its choice with it. */
	r = arr(6, str("u"), str("alice"), str("q"), str("x"), str("p"), str(""));
	assert_int_equal(presence_redis_decode_record(r, &sr), PRESENCE_ERR_INVAL);
	assert_null(sr.rec.name);
	assert_null(sr.rec.privacy);
	reply_free(r);
}

static void decoding_a_choice_without_memory_leaves_nothing(void **state)
{
	redisReply *records[] = {
	    arr(4, str("u"), str("alice"), str("p"), str("{\"visible_to\":\"nobody\"}")),
	    arr(14, str("u"), str("alice"), str("q"), str("4"), str("a"), str("1"), str("n"),
	        str("1"), str("t"), str("9"), str("s"), str("{}"), str("p"), str("")),
	};

	(void)state;
	for (size_t i = 0; i < sizeof(records) / sizeof(records[0]); i++) {
		for (long n = 0;; n++) {
			struct presence_redis_stream_record sr;
			enum presence_err err;

			failalloc_fail_after(n);
			err = presence_redis_decode_record(records[i], &sr);
			failalloc_reset();
			if (err == PRESENCE_OK) {
				assert_non_null(sr.rec.privacy);
				presence_redis_record_clear(&sr.rec);
				break;
			}
			assert_int_equal(err, PRESENCE_ERR_NOMEM);
			assert_null(sr.rec.name);
			assert_null(sr.rec.state);
			assert_null(sr.rec.privacy);
		}
		reply_free(records[i]);
	}
}

static void privacy_and_widen_replies_are_decoded(void **state)
{
	static const struct {
		const char *status;
		enum presence_err err;
		enum presence_redis_outcome out;
	} cases[] = {
	    {"OK", PRESENCE_OK, PRESENCE_REDIS_DONE},
	    {"SAME", PRESENCE_OK, PRESENCE_REDIS_DONE},
	    {"NONE", PRESENCE_OK, PRESENCE_REDIS_DONE},
	    {"STALE", PRESENCE_OK, PRESENCE_REDIS_STALE},
	    {"FULL", PRESENCE_OK, PRESENCE_REDIS_USERS_FULL},
	    {"CONFLICT", PRESENCE_ERR_INVAL, PRESENCE_REDIS_DONE},
	};
	enum presence_redis_outcome out;
	redisReply *r;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		r = arr(1, str(cases[i].status));
		assert_int_equal(presence_redis_decode_privacy(r, &out), cases[i].err);
		assert_int_equal(out, cases[i].out);
		reply_free(r);
	}
	/* Not an array of a status (an error reply, a bare string): refused. */
	r = str("OK");
	assert_int_equal(presence_redis_decode_privacy(r, &out), PRESENCE_ERR_INVAL);
	reply_free(r);
	r = arr(0);
	assert_int_equal(presence_redis_decode_privacy(r, &out), PRESENCE_ERR_INVAL);
	reply_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(privacy_and_widen_are_encoded_as_the_functions_take_them),
	    cmocka_unit_test(a_seed_carries_the_choice_and_a_snapshot_reads_it),
	    cmocka_unit_test(a_snapshot_entry_has_the_users_choice_and_its_record),
	    cmocka_unit_test(the_stream_carries_choices_alone_or_with_the_jumped_document),
	    cmocka_unit_test(decoding_a_choice_without_memory_leaves_nothing),
	    cmocka_unit_test(privacy_and_widen_replies_are_decoded),
	};

	failalloc_install_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
