/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Unit tests for utf8.c and topic.c: strict UTF-8 validation, user-name encoding, and the
 * classification of topics below the presence prefix.
 *
 * Most cases are tables: one row per input and its expected result, run by one test, so a
 * new case is one new line.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "failalloc.h"
#include "topic.h"
#include "testing.h"
#include "utf8.h"

/* A byte string literal with its length, so cases may contain NUL bytes. */
#define BYTES(s) s, sizeof(s) - 1

/* One UTF-8 validation case. */
struct utf8_case {
	/* What the case is about, printed when it fails. */
	const char *what;
	const char *bytes;
	size_t len;
	bool valid;
};

static const struct utf8_case utf8_cases[] = {
    {"empty string", BYTES(""), true},
    {"ASCII", BYTES("hello, world"), true},
    {"DEL", BYTES("\x7F"), true},
    {"two-byte minimum U+0080", BYTES("\xC2\x80"), true},
    {"two-byte maximum U+07FF", BYTES("\xDF\xBF"), true},
    {"three-byte minimum U+0800", BYTES("\xE0\xA0\x80"), true},
    {"last before surrogates U+D7FF", BYTES("\xED\x9F\xBF"), true},
    {"first after surrogates U+E000", BYTES("\xEE\x80\x80"), true},
    {"three-byte maximum U+FFFF", BYTES("\xEF\xBF\xBF"), true},
    {"four-byte minimum U+10000", BYTES("\xF0\x90\x80\x80"), true},
    {"highest code point U+10FFFF", BYTES("\xF4\x8F\xBF\xBF"), true},
    {"mixed text", BYTES("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80"), true},
    {"overlong slash, two bytes", BYTES("\xC0\xAF"), false},
    {"overlong U+007F, two bytes", BYTES("\xC1\xBF"), false},
    {"overlong slash, three bytes", BYTES("\xE0\x80\xAF"), false},
    {"overlong U+07FF, three bytes", BYTES("\xE0\x9F\xBF"), false},
    {"overlong slash, four bytes", BYTES("\xF0\x80\x80\xAF"), false},
    {"overlong U+FFFF, four bytes", BYTES("\xF0\x8F\xBF\xBF"), false},
    {"overlong NUL", BYTES("\xC0\x80"), false},
    {"first surrogate U+D800", BYTES("\xED\xA0\x80"), false},
    {"last surrogate U+DFFF", BYTES("\xED\xBF\xBF"), false},
    {"above U+10FFFF", BYTES("\xF4\x90\x80\x80"), false},
    {"lead byte F5", BYTES("\xF5\x80\x80\x80"), false},
    {"five-byte form", BYTES("\xF8\x88\x80\x80\x80"), false},
    {"byte FE", BYTES("\xFE"), false},
    {"byte FF", BYTES("\xFF"), false},
    {"lone continuation byte", BYTES("\x80"), false},
    {"truncated two-byte sequence", BYTES("\xC3"), false},
    {"truncated three-byte sequence", BYTES("\xE2\x82"), false},
    {"truncated four-byte sequence", BYTES("\xF0\x9F\x98"), false},
    {"truncated sequence at the end", BYTES("abc\xC3"), false},
    {"ASCII where a continuation belongs", BYTES("\xC3\x28"), false},
    {"lead byte where a continuation belongs", BYTES("\xE2\xC3\xA9"), false},
    {"embedded NUL", BYTES("a\0b"), false},
    {"lone NUL", BYTES("\0"), false},
};

static void utf8_valid_accepts_exactly_strict_utf8(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(utf8_cases) / sizeof(utf8_cases[0]); i++) {
		const struct utf8_case *c = &utf8_cases[i];

		if (presence_utf8_valid(c->bytes, c->len) != c->valid) {
			fail_msg("%s: expected %s", c->what, c->valid ? "valid" : "invalid");
		}
	}
}

static void utf8_valid_reads_only_len_bytes(void **state)
{
	(void)state;
	/* The second byte of "é" is outside the range, so the sequence is truncated. */
	assert_false(presence_utf8_valid("\xC3\xA9", 1));
	/* The NUL after the range is not looked at. */
	assert_true(presence_utf8_valid("ab\0", 2));
}

static void utf8_valid_accepts_null_only_when_empty(void **state)
{
	(void)state;
	assert_true(presence_utf8_valid(NULL, 0));
	assert_false(presence_utf8_valid(NULL, 1));
}

/* One encoding case: a user name and its topic level. */
struct encode_case {
	const char *user;
	const char *level;
};

static const struct encode_case encode_cases[] = {
    {"alice", "alice"},
    {"", ""},
    {"a/b+c#d%e", "a%2Fb%2Bc%23d%25e"},
    {"%2F", "%252F"},
    {"//", "%2F%2F"},
    {"+#", "%2B%23"},
    {"j\xC3\xBCrgen \xE2\x82\xAC", "j\xC3\xBCrgen \xE2\x82\xAC"},
    {"a b$c", "a b$c"},
};

#define ENCODE_CASE_COUNT (sizeof(encode_cases) / sizeof(encode_cases[0]))

static void encode_escapes_the_four_special_characters(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ENCODE_CASE_COUNT; i++) {
		char *level = presence_topic_encode_user(encode_cases[i].user);

		assert_non_null(level);
		assert_string_equal(level, encode_cases[i].level);
		free(level);
	}
}

static void encode_leaves_non_ascii_unchanged(void **state)
{
	const char *user = "\xE5\xBC\xA0\xE4\xB8\x89/\xF0\x9F\x98\x80";
	char *level;

	(void)state;
	level = presence_topic_encode_user(user);
	assert_non_null(level);
	assert_string_equal(level, "\xE5\xBC\xA0\xE4\xB8\x89%2F\xF0\x9F\x98\x80");
	free(level);
}

static void encode_returns_null_when_allocation_fails(void **state)
{
	char *level;

	(void)state;
	failalloc_fail_after(0);
	level = presence_topic_encode_user("alice");
	failalloc_reset();
	assert_null(level);
}

static void encoded_len_matches_the_encoding(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ENCODE_CASE_COUNT; i++) {
		assert_int_equal(presence_topic_encoded_len(encode_cases[i].user),
		                 strlen(encode_cases[i].level));
	}
}

static void level_is_user_matches_the_encoding_of_each_user(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ENCODE_CASE_COUNT; i++) {
		const char *level = encode_cases[i].level;

		assert_true(
		    presence_topic_level_is_user(level, strlen(level), encode_cases[i].user));
	}
}

static void level_is_user_rejects_other_levels(void **state)
{
	(void)state;
	/* A raw special character is not its encoding. */
	assert_false(presence_topic_level_is_user("a/b", 3, "a/b"));
	assert_false(presence_topic_level_is_user("a+", 2, "a+"));
	/* Encodings are upper case only. */
	assert_false(presence_topic_level_is_user("a%2fb", 5, "a/b"));
	/* An encoding is not the user name it spells. */
	assert_false(presence_topic_level_is_user("a%2Fb", 5, "a%2Fb"));
	/* Prefixes and extensions do not match. */
	assert_false(presence_topic_level_is_user("alic", 4, "alice"));
	assert_false(presence_topic_level_is_user("alices", 6, "alice"));
	assert_false(presence_topic_level_is_user("a%2", 3, "a/"));
	assert_false(presence_topic_level_is_user("", 0, "a"));
	assert_false(presence_topic_level_is_user("a", 1, ""));
}

static void level_is_user_reads_only_level_len_bytes(void **state)
{
	(void)state;
	/* The level is a slice of a longer topic. */
	assert_true(presence_topic_level_is_user("alice/state", 5, "alice"));
	assert_true(presence_topic_level_is_user("a%2Fb/state", 5, "a/b"));
	assert_true(presence_topic_level_is_user("/state", 0, ""));
}

/* One classification case; user and key are NULL where the result has none. */
struct parse_case {
	const char *prefix;
	const char *topic;
	enum presence_topic_kind kind;
	const char *user;
	const char *key;
};

static const struct parse_case parse_cases[] = {
    {"presence", "presence", PRESENCE_TOPIC_OUTSIDE, NULL, NULL},
    {"presence", "presencex/a", PRESENCE_TOPIC_OUTSIDE, NULL, NULL},
    {"presence", "presenc", PRESENCE_TOPIC_OUTSIDE, NULL, NULL},
    {"presence", "other/alice", PRESENCE_TOPIC_OUTSIDE, NULL, NULL},
    {"presence", "", PRESENCE_TOPIC_OUTSIDE, NULL, NULL},
    {"presence", "/presence/alice", PRESENCE_TOPIC_OUTSIDE, NULL, NULL},
    {"presence", "Presence/alice", PRESENCE_TOPIC_OUTSIDE, NULL, NULL},
    {"presence", "presence/", PRESENCE_TOPIC_RESERVED, NULL, NULL},
    {"presence", "presence/alice", PRESENCE_TOPIC_DOCUMENT, "alice", NULL},
    {"presence", "presence/alice/state", PRESENCE_TOPIC_STATE, "alice", NULL},
    {"presence", "presence/alice/state/", PRESENCE_TOPIC_STATE_KEY, "alice", ""},
    {"presence", "presence/alice/state/mood", PRESENCE_TOPIC_STATE_KEY, "alice", "mood"},
    {"presence", "presence/alice/state/a/b", PRESENCE_TOPIC_STATE_KEY, "alice", "a/b"},
    {"presence", "presence/alice/state/a/", PRESENCE_TOPIC_STATE_KEY, "alice", "a/"},
    {"presence", "presence/alice/error", PRESENCE_TOPIC_ERROR, "alice", NULL},
    {"presence", "presence/alice/other", PRESENCE_TOPIC_RESERVED, NULL, NULL},
    {"presence", "presence/alice/state2", PRESENCE_TOPIC_RESERVED, NULL, NULL},
    {"presence", "presence/alice/stat", PRESENCE_TOPIC_RESERVED, NULL, NULL},
    {"presence", "presence/alice/State", PRESENCE_TOPIC_RESERVED, NULL, NULL},
    {"presence", "presence/alice/error/x", PRESENCE_TOPIC_RESERVED, NULL, NULL},
    {"presence", "presence/alice/errors", PRESENCE_TOPIC_RESERVED, NULL, NULL},
    {"presence", "presence/alice/", PRESENCE_TOPIC_RESERVED, NULL, NULL},
    {"presence", "presence/alice//state", PRESENCE_TOPIC_RESERVED, NULL, NULL},
    {"presence", "presence//state", PRESENCE_TOPIC_STATE, "", NULL},
    {"presence", "presence//", PRESENCE_TOPIC_RESERVED, NULL, NULL},
    {"presence", "presence/a%2Fb/state/k", PRESENCE_TOPIC_STATE_KEY, "a%2Fb", "k"},
    {"presence", "presence/+/state", PRESENCE_TOPIC_STATE, "+", NULL},
    {"presence", "presence/#", PRESENCE_TOPIC_DOCUMENT, "#", NULL},
    {"presence", "presence/alice/#", PRESENCE_TOPIC_RESERVED, NULL, NULL},
    {"acme/presence", "acme/presence", PRESENCE_TOPIC_OUTSIDE, NULL, NULL},
    {"acme/presence", "acme", PRESENCE_TOPIC_OUTSIDE, NULL, NULL},
    {"acme/presence", "acme/presence2/bob", PRESENCE_TOPIC_OUTSIDE, NULL, NULL},
    {"acme/presence", "presence/bob", PRESENCE_TOPIC_OUTSIDE, NULL, NULL},
    {"acme/presence", "acme/presence/", PRESENCE_TOPIC_RESERVED, NULL, NULL},
    {"acme/presence", "acme/presence/bob", PRESENCE_TOPIC_DOCUMENT, "bob", NULL},
    {"acme/presence", "acme/presence/bob/state", PRESENCE_TOPIC_STATE, "bob", NULL},
    {"acme/presence", "acme/presence/bob/state/x/y", PRESENCE_TOPIC_STATE_KEY, "bob", "x/y"},
    {"acme/presence", "acme/presence/bob/error", PRESENCE_TOPIC_ERROR, "bob", NULL},
    {"acme/presence", "acme/presence/bob/x", PRESENCE_TOPIC_RESERVED, NULL, NULL},
    {"acme/presence", "acme/presence/bob/privacy", PRESENCE_TOPIC_PRIVACY, "bob", NULL},
    {"acme/presence", "acme/presence/bob/privacy/x", PRESENCE_TOPIC_RESERVED, NULL, NULL},
};

static const char *kind_name(enum presence_topic_kind kind)
{
	switch (kind) {
	case PRESENCE_TOPIC_OUTSIDE:
		return "OUTSIDE";
	case PRESENCE_TOPIC_DOCUMENT:
		return "DOCUMENT";
	case PRESENCE_TOPIC_STATE:
		return "STATE";
	case PRESENCE_TOPIC_STATE_KEY:
		return "STATE_KEY";
	case PRESENCE_TOPIC_ERROR:
		return "ERROR";
	case PRESENCE_TOPIC_PRIVACY:
		return "PRIVACY";
	case PRESENCE_TOPIC_RESERVED:
		return "RESERVED";
	}
	return "?";
}

/* Fails with the case's topic unless out matches what c expects. */
static void check_parse_case(const struct parse_case *c, const struct presence_topic *out)
{
	if (out->kind != c->kind) {
		fail_msg("%s under %s: kind %s, expected %s", c->topic, c->prefix,
		         kind_name(out->kind), kind_name(c->kind));
	}
	if (c->user == NULL) {
		if (out->user != NULL || out->user_len != 0) {
			fail_msg("%s under %s: unexpected user level", c->topic, c->prefix);
		}
	} else if (out->user == NULL || out->user_len != strlen(c->user) ||
	           memcmp(out->user, c->user, out->user_len) != 0) {
		fail_msg("%s under %s: user level is not \"%s\"", c->topic, c->prefix, c->user);
	}
	if (c->key == NULL) {
		if (out->key != NULL || out->key_len != 0) {
			fail_msg("%s under %s: unexpected key", c->topic, c->prefix);
		}
	} else if (out->key == NULL || out->key_len != strlen(c->key) ||
	           strcmp(out->key, c->key) != 0) {
		fail_msg("%s under %s: key is not \"%s\"", c->topic, c->prefix, c->key);
	}
}

static void parse_classifies_each_topic_under_its_prefix(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		struct presence_topic out;

		/* Garbage first, to prove parse sets every field. */
		memset(&out, 0xA5, sizeof(out));
		presence_topic_parse(parse_cases[i].prefix, parse_cases[i].topic, &out);
		check_parse_case(&parse_cases[i], &out);
	}
}

static void parse_points_into_the_topic_string(void **state)
{
	const char *topic = "presence/alice/state/mood";
	struct presence_topic out;

	(void)state;
	presence_topic_parse("presence", topic, &out);
	assert_ptr_equal(out.user, topic + strlen("presence/"));
	assert_ptr_equal(out.key, topic + strlen("presence/alice/state/"));
}

static void parse_round_trips_an_encoded_user(void **state)
{
	const char *user = "a/b+c#d%e";
	char *level;
	char topic[64];
	struct presence_topic out;

	(void)state;
	level = presence_topic_encode_user(user);
	assert_non_null(level);
	snprintf(topic, sizeof(topic), "presence/%s/state/k", level);
	free(level);
	presence_topic_parse("presence", topic, &out);
	assert_int_equal(out.kind, PRESENCE_TOPIC_STATE_KEY);
	assert_true(presence_topic_level_is_user(out.user, out.user_len, user));
	assert_string_equal(out.key, "k");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(utf8_valid_accepts_exactly_strict_utf8),
	    cmocka_unit_test(utf8_valid_reads_only_len_bytes),
	    cmocka_unit_test(utf8_valid_accepts_null_only_when_empty),
	    cmocka_unit_test(encode_escapes_the_four_special_characters),
	    cmocka_unit_test(encode_leaves_non_ascii_unchanged),
	    cmocka_unit_test(encode_returns_null_when_allocation_fails),
	    cmocka_unit_test(encoded_len_matches_the_encoding),
	    cmocka_unit_test(level_is_user_matches_the_encoding_of_each_user),
	    cmocka_unit_test(level_is_user_rejects_other_levels),
	    cmocka_unit_test(level_is_user_reads_only_level_len_bytes),
	    cmocka_unit_test(parse_classifies_each_topic_under_its_prefix),
	    cmocka_unit_test(parse_points_into_the_topic_string),
	    cmocka_unit_test(parse_round_trips_an_encoded_user),
	};

	failalloc_install_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
