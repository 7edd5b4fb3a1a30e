/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Unit tests for state.c: how set_key and merge turn MQTT payloads into state, the key rules,
 * the limits, RFC 7396 merge patch, and the all-or-nothing guarantee under every allocation
 * failure.
 *
 * Payload cases are tables, one row per payload and the state it must produce, so a new case
 * is one new line. States are compared through their compact rendering, which is exactly what
 * documents embed.
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
#include "state.h"
#include "testing.h"

/* A byte string literal with its length, so cases may contain NUL bytes. */
#define BYTES(s) s, sizeof(s) - 1

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

#define KEY_RULE "keys are 1 to 128 bytes without '/', '+' or '#'"

/* The plugin's default limits. */
static const struct presence_state_limits default_limits = {
    .max_state_bytes = 8192, .max_keys = 64, .max_depth = 32};

/* Limits no test reaches. */
static const struct presence_state_limits huge_limits = {
    .max_state_bytes = 1u << 24, .max_keys = 1u << 20, .max_depth = SIZE_MAX};

/* As the key of a write below: a merge of the payload instead of a set_key. */
#define MERGE NULL

/* How much of a payload a failure message quotes. */
#define QUOTED 60

/* Writes payload (len bytes) to st under limits: set_key of key (a C string), or a merge when
 * key is MERGE. Returns what state.c returns, with *changed and reason as it leaves them. */
static enum presence_err write_state(struct presence_state *st,
                                     const struct presence_state_limits *limits, const char *key,
                                     const char *payload, size_t len, bool *changed, char *reason)
{
	if (key == MERGE) {
		return presence_state_merge(st, limits, payload, len, changed, reason);
	}
	return presence_state_set_key(st, limits, key, strlen(key), payload, len, changed, reason);
}

/* Writes payload (len bytes; set_key of key, or a merge when key is MERGE) under limits;
 * asserts success and returns changed. */
static bool write_ok(struct presence_state *st, const struct presence_state_limits *limits,
                     const char *key, const char *payload, size_t len)
{
	char reason[PRESENCE_STATE_REASON_SIZE];
	bool changed = true;
	enum presence_err err = write_state(st, limits, key, payload, len, &changed, reason);

	if (err != PRESENCE_OK) {
		fail_msg("%s %s=%.*s: %s (%s)", key == MERGE ? "merge" : "set",
		         key == MERGE ? "" : key, (int)(len < QUOTED ? len : QUOTED), payload,
		         presence_strerror(err), reason);
	}
	return changed;
}

/* Sets key to payload (a C string) under limits; asserts success and returns changed. */
static bool set_ok(struct presence_state *st, const struct presence_state_limits *limits,
                   const char *key, const char *payload)
{
	return write_ok(st, limits, key, payload, strlen(payload));
}

/* Merges payload (a C string) under limits; asserts success and returns changed. */
static bool merge_ok(struct presence_state *st, const struct presence_state_limits *limits,
                     const char *payload)
{
	return write_ok(st, limits, MERGE, payload, strlen(payload));
}

/* Returns a new state holding the JSON object json. */
static struct presence_state *state_from(const char *json)
{
	struct presence_state *st = presence_state_new();

	assert_non_null(st);
	merge_ok(st, &huge_limits, json);
	assert_string_equal(presence_state_json(st), json);
	return st;
}

/* Returns the state's rendering parsed (the caller deletes it); it must parse. */
static cJSON *state_tree(const struct presence_state *st)
{
	cJSON *tree = cJSON_Parse(presence_state_json(st));

	assert_non_null(tree);
	return tree;
}

/* Asserts that st renders as json, that the length agrees and that the rendering reads back to
 * itself. */
static void assert_state(const struct presence_state *st, const char *json)
{
	cJSON *parsed = state_tree(st);
	char *tree = cJSON_PrintUnformatted(parsed);

	cJSON_Delete(parsed);
	assert_non_null(tree);
	assert_string_equal(presence_state_json(st), json);
	assert_int_equal(presence_state_json_len(st), strlen(json));
	assert_string_equal(tree, json);
	assert_int_equal(presence_state_is_empty(st), strcmp(json, "{}") == 0);
	cJSON_free(tree);
}

/*
 * Asserts that writing payload (len bytes; set_key of key, or a merge when key is MERGE) to st
 * under limits is refused with expected_err and expected_reason (NULL = not checked), reports
 * no change and leaves the state as it was. what names the case in a failure.
 */
static void assert_refused(const char *what, struct presence_state *st,
                           const struct presence_state_limits *limits, const char *key,
                           const char *payload, size_t len, enum presence_err expected_err,
                           const char *expected_reason)
{
	char reason[PRESENCE_STATE_REASON_SIZE];
	char *before = strdup(presence_state_json(st));
	bool changed = true;
	enum presence_err err;

	assert_non_null(before);
	err = write_state(st, limits, key, payload, len, &changed, reason);
	if (err != expected_err) {
		fail_msg("%s: got %s, expected %s", what, presence_strerror(err),
		         presence_strerror(expected_err));
	}
	assert_false(changed);
	if (expected_reason != NULL) {
		assert_string_equal(reason, expected_reason);
	}
	assert_state(st, before);
	free(before);
}

static void a_new_state_is_empty_and_renders_as_braces(void **state)
{
	struct presence_state *st = presence_state_new();

	(void)state;
	assert_non_null(st);
	assert_state(st, "{}");
	{
		cJSON *tree = state_tree(st);

		assert_true(cJSON_IsObject(tree));
		cJSON_Delete(tree);
	}
	presence_state_free(st);
	presence_state_free(NULL);
}

/* One set_key payload and the value it must become. */
struct payload_case {
	const char *what;
	const char *payload;
	size_t len;
	/* The state after setting "k" on an empty state. */
	const char *json;
};

static const struct payload_case payload_cases[] = {
    {"plain text (mosquitto_pub -m away)", BYTES("away"), "{\"k\":\"away\"}"},
    {"a number", BYTES("42"), "{\"k\":42}"},
    {"a JSON string", BYTES("\"away\""), "{\"k\":\"away\"}"},
    {"true", BYTES("true"), "{\"k\":true}"},
    {"false", BYTES("false"), "{\"k\":false}"},
    {"an object", BYTES("{\"a\":1}"), "{\"k\":{\"a\":1}}"},
    {"an array", BYTES("[1,2]"), "{\"k\":[1,2]}"},
    {"a number with trailing junk", BYTES("42abc"), "{\"k\":\"42abc\"}"},
    {"two JSON values", BYTES("1 2"), "{\"k\":\"1 2\"}"},
    {"JSON with white space around it", BYTES(" \t{ \"a\" : [ 1 , 2 ] }\r\n"),
     "{\"k\":{\"a\":[1,2]}}"},
    {"text with white space around it", BYTES("  away  "), "{\"k\":\"  away  \"}"},
    {"non-ASCII text", BYTES("h\xC3\xA9llo \xF0\x9F\x98\x80"),
     "{\"k\":\"h\xC3\xA9llo \xF0\x9F\x98\x80\"}"},
    {"text with quotes and a backslash", BYTES("say \"hi\" \\o/"),
     "{\"k\":\"say \\\"hi\\\" \\\\o/\"}"},
    {"text with a control character", BYTES("a\tb\x01"), "{\"k\":\"a\\tb\\u0001\"}"},
    {"a leading zero keeps the text (not a JSON number)", BYTES("01"), "{\"k\":\"01\"}"},
    {"a postcode keeps its leading zero", BYTES("007"), "{\"k\":\"007\"}"},
    {"a bare decimal point keeps the text", BYTES("1."), "{\"k\":\"1.\"}"},
    {"a fraction without leading digit keeps the text", BYTES(".5"), "{\"k\":\".5\"}"},
    {"an exponent without digits keeps the text", BYTES("1e"), "{\"k\":\"1e\"}"},
    {"a leading zero inside an array is what cJSON reads", BYTES("[01]"), "{\"k\":[1]}"},
    {"a number with white space around it", BYTES(" 42\n"), "{\"k\":42}"},
    {"a plus sign is not JSON", BYTES("+1"), "{\"k\":\"+1\"}"},
    {"a trailing comma is not JSON", BYTES("[1,]"), "{\"k\":\"[1,]\"}"},
    {"an unterminated array is not JSON", BYTES("[1,2"), "{\"k\":\"[1,2\"}"},
    {"a misspelt literal is not JSON", BYTES("nul"), "{\"k\":\"nul\"}"},
    {"a literal with trailing junk is not JSON", BYTES("truex"), "{\"k\":\"truex\"}"},
    {"a capitalised literal is not JSON", BYTES("True"), "{\"k\":\"True\"}"},
    {"cJSON takes a raw tab inside a JSON string", BYTES("\"a\tb\""), "{\"k\":\"a\\tb\"}"},
    {"a lone high surrogate escape is not JSON", BYTES("\"\\ud800\""),
     "{\"k\":\"\\\"\\\\ud800\\\"\"}"},
    {"a lone low surrogate escape is not JSON", BYTES("\"\\udc00x\""),
     "{\"k\":\"\\\"\\\\udc00x\\\"\"}"},
    {"an unknown escape is not JSON", BYTES("\"\\x\""), "{\"k\":\"\\\"\\\\x\\\"\"}"},
    /* In octal, because "\xBF42" would be a single hex escape. */
    {"a byte-order mark before a number keeps the text", BYTES("\357\273\27742"),
     "{\"k\":\"\357\273\27742\"}"},
    {"cJSON skips a byte-order mark before an object", BYTES("\357\273\277{}"), "{\"k\":{}}"},
    {"control characters around a number keep the text", BYTES("\x01 42\x0b\x1f"),
     "{\"k\":\"\\u0001 42\\u000b\\u001f\"}"},
    {"cJSON skips control characters around an array", BYTES("\x01[42]\x1f"), "{\"k\":[42]}"},
    {"a surrogate pair escape", BYTES("\"\\ud83d\\ude00\""), "{\"k\":\"\xF0\x9F\x98\x80\"}"},
    {"escapes", BYTES("\"a\\\"b\\\\c\\/d\\n\""), "{\"k\":\"a\\\"b\\\\c/d\\n\"}"},
    {"an escaped backslash before u0000", BYTES("\"\\\\u0000\""), "{\"k\":\"\\\\u0000\"}"},
    {"an escaped backslash before uZZZZ", BYTES("[\"\\\\uZZZZ\"]"), "{\"k\":[\"\\\\uZZZZ\"]}"},
    {"an escape in upper-case hex", BYTES("\"\\u00E9\\u00e9\""), "{\"k\":\"\xC3\xA9\xC3\xA9\"}"},
    {"\\u0000 in text that is not JSON", BYTES("C:\\u0000"), "{\"k\":\"C:\\\\u0000\"}"},
    {"an exponent", BYTES("1E+2"), "{\"k\":100}"},
    {"a fraction", BYTES("-0.5e-1"), "{\"k\":-0.05}"},
    {"negative zero, the same with every cJSON", BYTES("-0"), "{\"k\":0}"},
    {"negative zero inside, the same with every cJSON", BYTES("[-0,-0.0,-0e3]"), "{\"k\":[0,0,0]}"},
    {"a number that underflows", BYTES("1e-400"), "{\"k\":0}"},
    {"an integer above 2^53 is a double, printed by cJSON with 15 digits",
     BYTES("9007199254740993"), "{\"k\":9.00719925474099e+15}"},
    {"a 13-digit integer", BYTES("1764265200123"), "{\"k\":1764265200123}"},
    {"nested containers", BYTES("{\"a\":[{\"b\":null},[],{}],\"c\":\"\"}"),
     "{\"k\":{\"a\":[{\"b\":null},[],{}],\"c\":\"\"}}"},
    {"nested keys are not checked", BYTES("{\"a/b\":1,\"\":2}"), "{\"k\":{\"a/b\":1,\"\":2}}"},
};

static void set_key_takes_json_when_the_whole_payload_is_json_and_text_otherwise(void **state)
{
	char reason[PRESENCE_STATE_REASON_SIZE];
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(payload_cases); i++) {
		const struct payload_case *c = &payload_cases[i];
		struct presence_state *st = presence_state_new();
		bool changed = false;
		enum presence_err err;

		assert_non_null(st);
		err = presence_state_set_key(st, &default_limits, "k", 1, c->payload, c->len,
		                             &changed, reason);
		if (err != PRESENCE_OK) {
			fail_msg("%s: %s (%s)", c->what, presence_strerror(err), reason);
		}
		if (strcmp(presence_state_json(st), c->json) != 0) {
			fail_msg("%s: got %s, expected %s", c->what, presence_state_json(st),
			         c->json);
		}
		assert_true(changed);
		assert_state(st, c->json);
		presence_state_free(st);
	}
}

/* set_key writes whole numbers itself (cJSON 1.7.15 prints every number with sprintf and
 * sscanf): the rendering must be exactly what cJSON prints, for every kind of number. */
static void set_key_renders_numbers_exactly_as_cjson_prints_them(void **state)
{
	/* (Not -0: the plugin stores it as 0, see negative zero above.) */
	static const char *const numbers[] = {
	    "0",
	    "1",
	    "-1",
	    "42",
	    "-42",
	    "7.0",
	    "1e2",
	    "-1E+2",
	    "100000",
	    "123456789012345",
	    "-123456789012345",
	    "999999999999999",
	    "-999999999999999",
	    "1000000000000000",
	    "-1000000000000000",
	    "9007199254740993",
	    "1e300",
	    "-1e-300",
	    "0.5",
	    "-0.25",
	    "0.1",
	    "3.141592653589793",
	    "1e-7",
	    "2147483647",
	    "2147483648",
	    "-2147483649",
	    "4294967296",
	};
	char reason[PRESENCE_STATE_REASON_SIZE];
	char expected[128];
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(numbers); i++) {
		struct presence_state *st = presence_state_new();
		cJSON *object = cJSON_CreateObject();
		cJSON *value = cJSON_Parse(numbers[i]);
		char *printed;
		bool changed = false;

		assert_non_null(st);
		assert_non_null(object);
		assert_true(cJSON_IsNumber(value));
		assert_true(cJSON_AddItemToObject(object, "k", value));
		printed = cJSON_PrintUnformatted(object);
		assert_non_null(printed);
		snprintf(expected, sizeof(expected), "%s", printed);
		cJSON_free(printed);
		cJSON_Delete(object);
		assert_int_equal(presence_state_set_key(st, &huge_limits, "k", 1, numbers[i],
		                                        strlen(numbers[i]), &changed, reason),
		                 PRESENCE_OK);
		if (strcmp(presence_state_json(st), expected) != 0) {
			fail_msg("%s: got %s, cJSON prints %s", numbers[i], presence_state_json(st),
			         expected);
		}
		presence_state_free(st);
	}
}

static void set_key_nests_json_up_to_cjsons_limit_and_takes_deeper_nesting_as_text(void **state)
{
	char reason[PRESENCE_STATE_REASON_SIZE];
	size_t depths[] = {1000, 1001};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(depths); i++) {
		size_t depth = depths[i];
		struct presence_state *st = presence_state_new();
		char *payload = malloc(2 * depth);
		/* {"k":<payload>} as an array, or {"k":"<payload>"} as text. */
		char *expected = malloc(2 * depth + 16);
		bool array = depth <= CJSON_NESTING_LIMIT;
		bool changed = false;

		assert_non_null(st);
		assert_non_null(payload);
		assert_non_null(expected);
		memset(payload, '[', depth);
		memset(payload + depth, ']', depth);
		snprintf(expected, 2 * depth + 16, array ? "{\"k\":%.*s}" : "{\"k\":\"%.*s\"}",
		         (int)(2 * depth), payload);
		assert_int_equal(presence_state_set_key(st, &huge_limits, "k", 1, payload,
		                                        2 * depth, &changed, reason),
		                 PRESENCE_OK);
		assert_true(changed);
		assert_string_equal(presence_state_json(st), expected);
		/* The object around the value adds a level beyond cJSON's limit: the state must
		 * still take further writes. */
		assert_int_equal(
		    presence_state_set_key(st, &huge_limits, "j", 1, "1", 1, &changed, reason),
		    PRESENCE_OK);
		assert_true(changed);
		assert_memory_equal(presence_state_json(st), expected, strlen(expected) - 1);
		assert_string_equal(presence_state_json(st) + strlen(expected) - 1, ",\"j\":1}");
		free(expected);
		free(payload);
		presence_state_free(st);
	}
}

static void set_key_with_an_empty_or_null_payload_removes_the_key(void **state)
{
	static const char *const removals[] = {"", "null", " null\n"};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(removals); i++) {
		struct presence_state *st = state_from("{\"a\":1,\"k\":\"away\",\"z\":[]}");

		assert_true(set_ok(st, &default_limits, "k", removals[i]));
		assert_state(st, "{\"a\":1,\"z\":[]}");
		assert_false(set_ok(st, &default_limits, "k", removals[i]));
		presence_state_free(st);
	}
}

static void set_key_with_a_null_payload_pointer_and_no_bytes_removes_the_key(void **state)
{
	struct presence_state *st = state_from("{\"k\":1}");
	char reason[PRESENCE_STATE_REASON_SIZE];
	bool changed = false;

	(void)state;
	assert_int_equal(
	    presence_state_set_key(st, &default_limits, "k", 1, NULL, 0, &changed, reason),
	    PRESENCE_OK);
	assert_true(changed);
	assert_state(st, "{}");
	presence_state_free(st);
}

static void removing_the_last_key_leaves_an_empty_state(void **state)
{
	struct presence_state *st = state_from("{\"k\":1}");

	(void)state;
	assert_true(set_ok(st, &default_limits, "k", ""));
	assert_state(st, "{}");
	assert_true(set_ok(st, &default_limits, "k", "2"));
	assert_state(st, "{\"k\":2}");
	presence_state_free(st);
}

/* A payload set_key must refuse, and why. */
struct refusal_case {
	const char *what;
	const char *payload;
	size_t len;
	const char *reason;
};

static const struct refusal_case set_refusals[] = {
    {"a byte that is never UTF-8", BYTES("\xFF"), "payload is neither JSON nor UTF-8 text"},
    {"an overlong encoding", BYTES("\xC0\xAF"), "payload is neither JSON nor UTF-8 text"},
    {"a truncated sequence", BYTES("caf\xC3"), "payload is neither JSON nor UTF-8 text"},
    {"invalid UTF-8 inside JSON", BYTES("\"\xFF\""), "payload is neither JSON nor UTF-8 text"},
    {"a NUL byte", BYTES("a\0b"), "payload is neither JSON nor UTF-8 text"},
    {"a lone NUL byte", BYTES("\0"), "payload is neither JSON nor UTF-8 text"},
    {"a \\u0000 escape", BYTES("\"a\\u0000b\""),
     "payload contains \\u0000; state strings cannot hold NUL characters"},
    {"a nested \\u0000 escape in a key", BYTES("{\"a\\u0000\":1}"),
     "payload contains \\u0000; state strings cannot hold NUL characters"},
    {"an escaped backslash and then a \\u0000 escape", BYTES("\"\\\\\\u0000\""),
     "payload contains \\u0000; state strings cannot hold NUL characters"},
    {"a \\u escape with no hex digits, which cJSON reads as NUL", BYTES("\"a\\uZZZZb\""),
     "payload has a \\u escape that is not four hex digits"},
    {"a \\u escape with one non-hex digit", BYTES("[\"ok\",{\"a\":\"\\u00G0\"}]"),
     "payload has a \\u escape that is not four hex digits"},
    {"a \\u escape that runs into a backslash", BYTES("\"\\u12\\\\\""),
     "payload has a \\u escape that is not four hex digits"},
    {"a number too large for a double", BYTES("1e999"), "payload has a number out of range"},
    {"a negative number too large for a double", BYTES("-1e999"),
     "payload has a number out of range"},
    {"a nested number too large for a double", BYTES("{\"a\":[-1e400]}"),
     "payload has a number out of range"},
};

/* Asserts that each of the count cases, written (set_key of key, or a merge when key is MERGE)
 * onto a state with keys, is refused as invalid with its reason, the state left alone. */
static void assert_refusals(const struct refusal_case *cases, size_t count, const char *key)
{
	size_t i;

	for (i = 0; i < count; i++) {
		const struct refusal_case *c = &cases[i];
		struct presence_state *st = state_from("{\"k\":\"here\",\"z\":1}");

		assert_refused(c->what, st, &default_limits, key, c->payload, c->len,
		               PRESENCE_ERR_INVAL, c->reason);
		presence_state_free(st);
	}
}

static void set_key_refuses_payloads_it_cannot_store_and_leaves_the_state_alone(void **state)
{
	(void)state;
	assert_refusals(set_refusals, COUNT(set_refusals), "k");
}

/* One key and whether it is valid. */
struct key_case {
	const char *what;
	const char *key;
	size_t len;
	bool valid;
};

static void key_valid_accepts_1_to_128_bytes_of_text_without_slash_plus_or_hash(void **state)
{
	char k128[PRESENCE_STATE_KEY_MAX + 1];
	char k129[PRESENCE_STATE_KEY_MAX + 2];
	const struct key_case cases[] = {
	    {"empty", BYTES(""), false},
	    {"one byte", BYTES("a"), true},
	    {"128 bytes", k128, 128, true},
	    {"129 bytes", k129, 129, false},
	    {"a slash", BYTES("a/b"), false},
	    {"a plus", BYTES("a+b"), false},
	    {"a hash", BYTES("a#b"), false},
	    {"only a slash", BYTES("/"), false},
	    {"non-ASCII", BYTES("st\xC3\xA4tus"), true},
	    {"a space, a dollar and punctuation", BYTES("$my key.v1-x_y:z"), true},
	    {"invalid UTF-8", BYTES("a\xFF"), false},
	    {"a NUL byte", BYTES("a\0b"), false},
	};
	size_t i;

	(void)state;
	memset(k128, 'x', sizeof(k128));
	memset(k129, 'x', sizeof(k129));
	for (i = 0; i < COUNT(cases); i++) {
		const struct key_case *c = &cases[i];
		struct presence_state *st = state_from("{\"z\":1}");
		char reason[PRESENCE_STATE_REASON_SIZE];
		bool changed = false;
		enum presence_err err;

		if (presence_state_key_valid(c->key, c->len) != c->valid) {
			fail_msg("%s: expected %s", c->what, c->valid ? "valid" : "invalid");
		}
		err = presence_state_set_key(st, &default_limits, c->key, c->len, "1", 1, &changed,
		                             reason);
		assert_int_equal(err, c->valid ? PRESENCE_OK : PRESENCE_ERR_INVAL);
		assert_int_equal(changed, c->valid);
		if (!c->valid) {
			assert_non_null(strstr(reason, KEY_RULE));
			assert_state(st, "{\"z\":1}");
		}
		presence_state_free(st);
	}
	assert_false(presence_state_key_valid(NULL, 0));
}

static void an_invalid_key_is_quoted_in_the_reason_in_part_at_a_character_boundary(void **state)
{
	struct presence_state *st = presence_state_new();
	char long_key[200];
	char expected[PRESENCE_STATE_REASON_SIZE];

	(void)state;
	assert_non_null(st);
	assert_refused("a slash", st, &default_limits, "a/b", BYTES("1"), PRESENCE_ERR_INVAL,
	               "invalid key \"a/b\": " KEY_RULE);
	assert_refused("empty", st, &default_limits, "", BYTES("1"), PRESENCE_ERR_INVAL,
	               "invalid key \"\": " KEY_RULE);
	assert_refused("not UTF-8", st, &default_limits, "a\xFF", BYTES("1"), PRESENCE_ERR_INVAL,
	               "invalid key (not UTF-8 text): " KEY_RULE);

	/* 63 x's and then two-byte characters (199 bytes): the quote stops before the one cut at
	 * 64. */
	memset(long_key, 'x', 63);
	for (size_t i = 63; i + 1 < sizeof(long_key); i += 2) {
		long_key[i] = '\xC3';
		long_key[i + 1] = '\xA9';
	}
	long_key[199] = '\0';
	snprintf(expected, sizeof(expected), "invalid key \"%.63s...\": %s", long_key, KEY_RULE);
	assert_refused("a long key", st, &default_limits, long_key, BYTES("1"), PRESENCE_ERR_INVAL,
	               expected);
	assert_state(st, "{}");
	presence_state_free(st);
}

static void setting_a_key_to_its_current_value_reports_no_change(void **state)
{
	static const char *const same[][2] = {
	    {"away", "\"away\""},
	    {"42", " 42 "},
	    {"{\"a\":1,\"b\":[true,null]}", "{ \"b\" : [true, null], \"a\" : 1 }"},
	};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(same); i++) {
		struct presence_state *st = presence_state_new();

		assert_non_null(st);
		assert_true(set_ok(st, &default_limits, "k", same[i][0]));
		assert_false(set_ok(st, &default_limits, "k", same[i][0]));
		assert_false(set_ok(st, &default_limits, "k", same[i][1]));
		presence_state_free(st);
	}
}

static void comparison_of_values_is_case_sensitive(void **state)
{
	struct presence_state *st = state_from("{\"k\":{\"a\":\"x\"}}");

	(void)state;
	assert_true(set_ok(st, &default_limits, "k", "{\"A\":\"x\"}"));
	assert_state(st, "{\"k\":{\"A\":\"x\"}}");
	assert_true(set_ok(st, &default_limits, "k", "{\"A\":\"X\"}"));
	assert_state(st, "{\"k\":{\"A\":\"X\"}}");
	assert_true(set_ok(st, &default_limits, "K", "1"));
	assert_state(st, "{\"k\":{\"A\":\"X\"},\"K\":1}");
	presence_state_free(st);
}

static void replacing_a_key_keeps_its_place_and_new_keys_go_last(void **state)
{
	struct presence_state *st = state_from("{\"a\":1,\"b\":2,\"c\":3}");

	(void)state;
	assert_true(set_ok(st, &default_limits, "c", "30"));
	assert_true(set_ok(st, &default_limits, "a", "10"));
	assert_true(set_ok(st, &default_limits, "b", "[20]"));
	assert_true(set_ok(st, &default_limits, "d", "4"));
	assert_state(st, "{\"a\":10,\"b\":[20],\"c\":30,\"d\":4}");
	assert_true(set_ok(st, &default_limits, "d", "40"));
	assert_true(set_ok(st, &default_limits, "e", "5"));
	assert_state(st, "{\"a\":10,\"b\":[20],\"c\":30,\"d\":40,\"e\":5}");
	presence_state_free(st);

	st = state_from("{\"only\":1}");
	assert_true(set_ok(st, &default_limits, "only", "2"));
	assert_true(set_ok(st, &default_limits, "next", "3"));
	assert_state(st, "{\"only\":2,\"next\":3}");
	presence_state_free(st);
}

/* Fills st with keys k0, k1, ... up to n keys, each set to 1. */
static void fill_keys(struct presence_state *st, size_t n)
{
	char key[32];
	size_t i;

	for (i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "k%zu", i);
		set_ok(st, &huge_limits, key, "1");
	}
}

static void max_keys_allows_exactly_the_limit_and_refuses_one_more(void **state)
{
	struct presence_state *st = presence_state_new();

	(void)state;
	assert_non_null(st);
	fill_keys(st, 63);
	assert_true(set_ok(st, &default_limits, "k63", "1"));
	assert_true(set_ok(st, &default_limits, "k63", "2"));

	assert_refused("a 65th key", st, &default_limits, "k64", BYTES("1"), PRESENCE_ERR_TOO_LARGE,
	               "state would have 65 keys; max_keys is 64");
	assert_refused("a merge of two more keys", st, &default_limits, MERGE,
	               BYTES("{\"x\":1,\"y\":2}"), PRESENCE_ERR_TOO_LARGE,
	               "state would have 66 keys; max_keys is 64");

	/* A merge that removes one key and adds another stays at the limit. */
	assert_true(merge_ok(st, &default_limits, "{\"k0\":null,\"x\":1}"));
	presence_state_free(st);
}

static void max_state_bytes_allows_exactly_the_limit_and_refuses_one_byte_more(void **state)
{
	/* {"k":"<n x's>"} is 8 + n bytes. */
	const struct presence_state_limits limits = {
	    .max_state_bytes = 20, .max_keys = 64, .max_depth = 32};
	struct presence_state *st = presence_state_new();

	(void)state;
	assert_non_null(st);
	assert_true(set_ok(st, &limits, "k", "xxxxxxxxxxxx"));
	assert_int_equal(presence_state_json_len(st), 20);

	assert_refused("a set one byte over", st, &limits, "k", BYTES("yyyyyyyyyyyyy"),
	               PRESENCE_ERR_TOO_LARGE, "state would be 21 bytes; max_state_bytes is 20");
	assert_refused("a merge one byte over", st, &limits, MERGE,
	               BYTES("{\"k\":\"yyyyyyyyyyyyy\"}"), PRESENCE_ERR_TOO_LARGE,
	               "state would be 21 bytes; max_state_bytes is 20");
	assert_state(st, "{\"k\":\"xxxxxxxxxxxx\"}");
	presence_state_free(st);
}

static void the_byte_limit_reason_reports_the_rendered_size(void **state)
{
	const struct presence_state_limits limits = {
	    .max_state_bytes = 8192, .max_keys = 64, .max_depth = 32};
	struct presence_state *st = presence_state_new();
	char *payload = malloc(8993);

	(void)state;
	assert_non_null(st);
	assert_non_null(payload);
	/* {"k":"..."} with 8993 bytes of text renders as 9001 bytes. */
	memset(payload, 'x', 8993);
	assert_refused("8993 bytes of text", st, &limits, "k", payload, 8993,
	               PRESENCE_ERR_TOO_LARGE,
	               "state would be 9001 bytes; max_state_bytes is 8192");
	free(payload);
	presence_state_free(st);
}

static void a_state_over_lowered_limits_may_shrink_but_not_grow(void **state)
{
	const struct presence_state_limits small = {
	    .max_state_bytes = 10, .max_keys = 1, .max_depth = 32};
	struct presence_state *st = state_from("{\"a\":\"long value\",\"b\":2,\"c\":3}");

	(void)state;
	assert_true(set_ok(st, &small, "c", ""));
	assert_true(set_ok(st, &small, "a", "\"short\""));
	assert_state(st, "{\"a\":\"short\",\"b\":2}");
	assert_refused("a longer value", st, &small, "a", BYTES("\"longer value\""),
	               PRESENCE_ERR_TOO_LARGE, NULL);
	assert_refused("a new key", st, &small, "d", BYTES("4"), PRESENCE_ERR_TOO_LARGE,
	               "state would have 3 keys; max_keys is 1");
	assert_true(merge_ok(st, &small, "{\"b\":null}"));
	assert_state(st, "{\"a\":\"short\"}");
	presence_state_free(st);
}

/*
 * Asserts that a write of payload (len bytes; set_key of key, or a merge when key is MERGE) is
 * refused for being over the payload cap without a single allocation, leaving st alone.
 */
static void assert_payload_refused_unparsed(struct presence_state *st, const char *key,
                                            const char *payload, size_t len, const char *expected)
{
	char reason[PRESENCE_STATE_REASON_SIZE];
	const char *before = presence_state_json(st);
	bool changed = true;
	enum presence_err err;

	failalloc_fail_after(0);
	err = write_state(st, &default_limits, key, payload, len, &changed, reason);
	assert_int_equal(failalloc_attempts(), 0);
	failalloc_reset();
	assert_int_equal(err, PRESENCE_ERR_TOO_LARGE);
	assert_false(changed);
	assert_string_equal(reason, expected);
	assert_string_equal(presence_state_json(st), before);
}

static void a_payload_of_4_x_max_state_bytes_is_parsed_and_one_byte_more_is_refused(void **state)
{
	/* default_limits: max_state_bytes is 8192, so payloads of up to 32768 bytes are read. */
	const size_t cap = 4 * default_limits.max_state_bytes;
	const char *refusal =
	    "payload is 32769 bytes; at most 32768 (4 x max_state_bytes) are accepted";
	const struct presence_state_limits no_cap = {
	    .max_state_bytes = SIZE_MAX, .max_keys = 64, .max_depth = 32};
	struct presence_state *st = state_from("{\"a\":1}");
	char *payload = malloc(cap + 1);

	(void)state;
	assert_int_equal(PRESENCE_STATE_PAYLOAD_FACTOR, 4);
	assert_non_null(payload);

	/* JSON padded with white space to exactly the cap is parsed, not taken as text. */
	memset(payload, ' ', cap + 1);
	memcpy(payload, "42", 2);
	assert_true(write_ok(st, &default_limits, "k", payload, cap));
	assert_state(st, "{\"a\":1,\"k\":42}");
	memcpy(payload, "{\"m\":true}", 10);
	assert_true(write_ok(st, &default_limits, MERGE, payload, cap));
	assert_state(st, "{\"a\":1,\"k\":42,\"m\":true}");

	/* One byte more is refused before it is even read, whatever it holds. */
	assert_payload_refused_unparsed(st, "k", payload, cap + 1, refusal);
	assert_payload_refused_unparsed(st, MERGE, payload, cap + 1, refusal);
	payload[cap] = '\xFF';
	assert_payload_refused_unparsed(st, "k", payload, cap + 1, refusal);
	assert_payload_refused_unparsed(st, MERGE, payload, cap + 1, refusal);
	assert_state(st, "{\"a\":1,\"k\":42,\"m\":true}");

	/* 4 x max_state_bytes does not overflow. */
	assert_true(set_ok(st, &no_cap, "k", "43"));
	assert_true(merge_ok(st, &no_cap, "{\"m\":false}"));
	assert_state(st, "{\"a\":1,\"k\":43,\"m\":false}");
	free(payload);
	presence_state_free(st);
}

static void the_same_write_twice_changes_the_state_once(void **state)
{
	static const char *const patches[] = {
	    "{\"a\":1}",
	    "{\"a\":{\"b\":{\"c\":[1,2]}},\"d\":null}",
	    "{\"x\":null}",
	    "{\"list\":[{\"a\":1,\"b\":2}],\"o\":{\"p\":1,\"q\":2}}",
	};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(patches); i++) {
		struct presence_state *st = state_from("{\"x\":1,\"a\":{\"b\":true}}");

		assert_true(merge_ok(st, &default_limits, patches[i]));
		assert_false(merge_ok(st, &default_limits, patches[i]));
		presence_state_free(st);
	}
}

static const struct refusal_case merge_refusals[] = {
    {"an array", BYTES("[1]"), "state must be a JSON object"},
    {"a JSON string", BYTES("\"x\""), "state must be a JSON object"},
    {"a number", BYTES("3"), "state must be a JSON object"},
    {"null", BYTES("null"), "state must be a JSON object"},
    {"plain text", BYTES("away"), "state must be a JSON object"},
    {"broken JSON", BYTES("{\"a\":1"), "state must be a JSON object"},
    {"an object with trailing junk", BYTES("{\"a\":1}x"), "state must be a JSON object"},
    {"white space only", BYTES("  "), "state must be a JSON object"},
    {"invalid UTF-8", BYTES("{\"a\":\"\xFF\"}"), "state must be a JSON object"},
    {"a NUL byte", BYTES("{\"a\":1}\0"), "state must be a JSON object"},
    {"a \\u0000 escape", BYTES("{\"a\":\"\\u0000\"}"),
     "payload contains \\u0000; state strings cannot hold NUL characters"},
    {"a \\u0000 escape in a key that is removed", BYTES("{\"a\\u0000\":null}"),
     "payload contains \\u0000; state strings cannot hold NUL characters"},
    {"a \\u escape with no hex digits", BYTES("{\"a\":\"\\uZZZZ\"}"),
     "payload has a \\u escape that is not four hex digits"},
    {"a number too large for a double", BYTES("{\"a\":1e309}"),
     "payload has a number out of range"},
    {"a nested 1e999", BYTES("{\"a\":{\"b\":[1e999]}}"), "payload has a number out of range"},
    {"a key with a slash", BYTES("{\"ok\":1,\"a/b\":1}"), "invalid key \"a/b\": " KEY_RULE},
    {"a key with a plus", BYTES("{\"a+\":{}}"), "invalid key \"a+\": " KEY_RULE},
    {"a key with a hash", BYTES("{\"#\":[]}"), "invalid key \"#\": " KEY_RULE},
    {"an empty key", BYTES("{\"\":1}"), "invalid key \"\": " KEY_RULE},
};

static void merge_refuses_anything_but_a_json_object_with_valid_keys(void **state)
{
	(void)state;
	assert_refusals(merge_refusals, COUNT(merge_refusals), MERGE);
}

static void merge_may_remove_a_key_that_could_never_be_set(void **state)
{
	struct presence_state *st = state_from("{\"a\":1}");

	(void)state;
	assert_false(merge_ok(st, &default_limits, "{\"a/b\":null,\"\":null}"));
	assert_state(st, "{\"a\":1}");
	presence_state_free(st);
}

static void merge_with_an_empty_payload_clears_the_state(void **state)
{
	struct presence_state *st = state_from("{\"a\":1,\"b\":{\"c\":2}}");
	char reason[PRESENCE_STATE_REASON_SIZE];
	bool changed = false;

	(void)state;
	assert_int_equal(presence_state_merge(st, &default_limits, NULL, 0, &changed, reason),
	                 PRESENCE_OK);
	assert_true(changed);
	assert_state(st, "{}");
	assert_int_equal(presence_state_merge(st, &default_limits, "", 0, &changed, reason),
	                 PRESENCE_OK);
	assert_false(changed);
	assert_state(st, "{}");
	presence_state_free(st);
}

static void merge_applies_the_patch_to_the_state(void **state)
{
	struct presence_state *st = state_from("{\"a\":1,\"b\":{\"c\":1},\"s\":\"x\"}");

	(void)state;
	assert_true(merge_ok(st, &default_limits, "{\"b\":{\"d\":2},\"a\":null,\"e\":[1]}"));
	assert_state(st, "{\"b\":{\"c\":1,\"d\":2},\"s\":\"x\",\"e\":[1]}");
	assert_false(merge_ok(st, &default_limits, "{}"));
	assert_false(merge_ok(st, &default_limits, "{\"s\":\"x\",\"b\":{\"c\":1}}"));
	assert_true(merge_ok(st, &default_limits, "{\"s\":null,\"b\":null,\"e\":null}"));
	assert_state(st, "{}");
	presence_state_free(st);
}

static void writes_with_a_repeated_member_name_are_refused(void **state)
{
	static const struct {
		const char *key;
		const char *payload;
		const char *name;
	} cases[] = {
	    /* The patch of issue 11: applied twice, it used to reorder the keys. */
	    {MERGE, "{\"a\":null,\"a\":1,\"b\":2}", "a"},
	    {MERGE, "{\"a\":1,\"a\":2}", "a"},
	    {MERGE, "{\"o\":{\"p\":1,\"p\":2}}", "p"},
	    {MERGE, "{\"l\":[1,{\"q\":[{\"r\":1,\"s\":2,\"r\":null}]}]}", "r"},
	    {"k", "{\"x\":1,\"x\":2,\"y\":3}", "x"},
	    {"k", "[{\"x\":{\"y\":1,\"z\":2,\"y\":1}}]", "y"},
	};
	char expected[PRESENCE_STATE_REASON_SIZE];
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(cases); i++) {
		struct presence_state *st = state_from("{\"a\":0,\"b\":2,\"c\":3}");

		snprintf(expected, sizeof(expected),
		         "payload repeats the member name \"%s\"; names must be unique",
		         cases[i].name);
		assert_refused(cases[i].payload, st, &default_limits, cases[i].key,
		               cases[i].payload, strlen(cases[i].payload), PRESENCE_ERR_INVAL,
		               expected);
		presence_state_free(st);
	}
}

static void the_same_name_in_different_objects_is_no_repeat(void **state)
{
	struct presence_state *st = presence_state_new();

	(void)state;
	assert_non_null(st);
	assert_true(
	    merge_ok(st, &default_limits, "{\"a\":{\"a\":{\"a\":1}},\"b\":[{\"a\":1},{\"a\":2}]}"));
	assert_true(set_ok(st, &default_limits, "k", "{\"a\":{\"a\":1}}"));
	assert_state(
	    st, "{\"a\":{\"a\":{\"a\":1}},\"b\":[{\"a\":1},{\"a\":2}],\"k\":{\"a\":{\"a\":1}}}");
	presence_state_free(st);
}

static void merge_null_removes_every_member_of_a_repeated_name(void **state)
{
	struct presence_state *st = presence_state_new();
	/* A state file written before repeated names were refused may hold some. */
	cJSON *restored = cJSON_Parse("{\"k\":{\"x\":1,\"x\":2,\"y\":3}}");

	(void)state;
	assert_non_null(st);
	assert_non_null(restored);
	assert_int_equal(presence_state_restore(st, restored), PRESENCE_OK);
	cJSON_Delete(restored);
	assert_state(st, "{\"k\":{\"x\":1,\"x\":2,\"y\":3}}");
	assert_true(merge_ok(st, &default_limits, "{\"k\":{\"x\":null}}"));
	assert_state(st, "{\"k\":{\"y\":3}}");
	assert_false(merge_ok(st, &default_limits, "{\"k\":{\"x\":null}}"));
	presence_state_free(st);
}

/* Returns a new string of depth '[' then depth ']' (free it). */
static char *nested_arrays(size_t depth)
{
	char *text = malloc(2 * depth + 1);

	assert_non_null(text);
	memset(text, '[', depth);
	memset(text + depth, ']', depth);
	text[2 * depth] = '\0';
	return text;
}

static void writes_deeper_than_max_depth_are_refused(void **state)
{
	const struct presence_state_limits limits = {
	    .max_state_bytes = 8192, .max_keys = 64, .max_depth = 4};
	struct presence_state *st = presence_state_new();
	char *deep = nested_arrays(4);
	char *ok = nested_arrays(3);
	char patch[64];

	(void)state;
	assert_non_null(st);
	/* The state object is level 1: three levels of arrays inside make 4. */
	assert_true(set_ok(st, &limits, "k", ok));
	assert_refused("set_key 4 arrays", st, &limits, "j", deep, strlen(deep),
	               PRESENCE_ERR_TOO_LARGE,
	               "state would be nested 5 levels deep; max_state_depth is 4");
	snprintf(patch, sizeof(patch), "{\"j\":%s}", deep);
	assert_refused("merge 4 arrays", st, &limits, MERGE, patch, strlen(patch),
	               PRESENCE_ERR_TOO_LARGE,
	               "state would be nested 5 levels deep; max_state_depth is 4");
	/* Brackets inside strings are text, not nesting. */
	assert_true(set_ok(st, &limits, "s", "\"[[[[[[{{{{\""));
	assert_true(merge_ok(st, &limits, "{\"t\":\"]]\\\"[[[[[\"}"));
	free(ok);
	free(deep);
	presence_state_free(st);
}

static void a_state_deeper_than_the_limit_may_still_shrink(void **state)
{
	const struct presence_state_limits limits = {
	    .max_state_bytes = 8192, .max_keys = 64, .max_depth = 2};
	struct presence_state *st = state_from("{\"a\":[[[1]]],\"b\":1}");

	(void)state;
	/* Over the lowered limit already: writes that do not deepen it are taken. */
	assert_true(set_ok(st, &limits, "b", "2"));
	assert_true(merge_ok(st, &limits, "{\"a\":[[2]]}"));
	assert_refused("deeper again", st, &limits, "a", "[[[3]]]", 7, PRESENCE_ERR_TOO_LARGE,
	               "state would be nested 4 levels deep; max_state_depth is 2");
	assert_true(merge_ok(st, &limits, "{\"a\":null}"));
	assert_state(st, "{\"b\":2}");
	presence_state_free(st);
}

static void clear_empties_the_state_and_says_whether_it_had_keys(void **state)
{
	struct presence_state *st = state_from("{\"a\":1,\"b\":2}");

	(void)state;
	assert_true(presence_state_clear(st));
	assert_state(st, "{}");
	assert_false(presence_state_clear(st));
	assert_true(set_ok(st, &default_limits, "c", "3"));
	assert_state(st, "{\"c\":3}");
	presence_state_free(st);
}

/* One merge-patch case: target + patch = result. */
struct merge_patch_case {
	const char *target;
	const char *patch;
	const char *result;
};

/* RFC 7396, Appendix A, in order. */
static const struct merge_patch_case rfc7396_examples[] = {
    {"{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
    {"{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}"},
    {"{\"a\":\"b\"}", "{\"a\":null}", "{}"},
    {"{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}"},
    {"{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
    {"{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}"},
    {"{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}"},
    {"{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}"},
    {"[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]"},
    {"{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]"},
    {"{\"a\":\"foo\"}", "null", "null"},
    {"{\"a\":\"foo\"}", "\"bar\"", "\"bar\""},
    {"{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}"},
    {"[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}"},
    {"{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}"},
};

/* Runs one merge-patch case; target NULL means no value. */
static void assert_merge_patch(const char *target_json, const char *patch_json, const char *result)
{
	cJSON *target = target_json != NULL ? cJSON_Parse(target_json) : NULL;
	cJSON *patch = cJSON_Parse(patch_json);
	char *patch_before;
	char *text;

	assert_true(target_json == NULL || target != NULL);
	assert_non_null(patch);
	patch_before = cJSON_PrintUnformatted(patch);
	assert_non_null(patch_before);
	assert_int_equal(presence_state_merge_patch(&target, patch), PRESENCE_OK);
	text = cJSON_PrintUnformatted(target);
	assert_non_null(text);
	if (strcmp(text, result) != 0) {
		fail_msg("%s + %s: got %s, expected %s", target_json ? target_json : "(none)",
		         patch_json, text, result);
	}
	/* The patch is not touched. */
	cJSON_free(text);
	text = cJSON_PrintUnformatted(patch);
	assert_non_null(text);
	assert_string_equal(text, patch_before);
	cJSON_free(text);
	cJSON_free(patch_before);
	cJSON_Delete(target);
	cJSON_Delete(patch);
}

static void merge_patch_gives_every_result_in_rfc_7396_appendix_a(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(rfc7396_examples); i++) {
		assert_merge_patch(rfc7396_examples[i].target, rfc7396_examples[i].patch,
		                   rfc7396_examples[i].result);
	}
}

static void merge_patch_onto_no_value_strips_nulls_from_an_object(void **state)
{
	(void)state;
	assert_merge_patch(NULL, "{\"a\":null,\"b\":{\"c\":null,\"d\":[null]}}",
	                   "{\"b\":{\"d\":[null]}}");
	assert_merge_patch(NULL, "\"x\"", "\"x\"");
	assert_merge_patch("{\"a\":{\"b\":1}}", "{\"a\":{\"c\":{\"d\":null,\"e\":2}}}",
	                   "{\"a\":{\"b\":1,\"c\":{\"e\":2}}}");
}

/* How an allocation-failure loop makes failure point n fail. */
enum fail_mode {
	/* n allocations succeed, then every allocation fails (failalloc). */
	FAIL_FROM_N_ON,
	/* cJSON's allocation number n (from 0) fails, and only that one. */
	FAIL_ONLY_CJSON_N,
};

/* cJSON allocations fail_once_malloc lets through before failing one; negative: none fails. */
static long cjson_fail_countdown = -1;

/* cJSON allocations made since the count was last reset. */
static long cjson_allocations;

/*
 * cJSON's allocator during FAIL_ONLY_CJSON_N loops: malloc (which failalloc wraps), except for
 * the one allocation cjson_fail_countdown picks.
 */
static void *fail_once_malloc(size_t size)
{
	cjson_allocations++;
	if (cjson_fail_countdown >= 0 && cjson_fail_countdown-- == 0) {
		return NULL;
	}
	return malloc(size);
}

/*
 * Returns how many allocations cJSON's parser makes when state.c parses payload: none for an
 * empty payload, which is not parsed; some even for text, found not to be JSON only after the
 * parser has allocated.
 */
static long parser_allocations(const char *payload)
{
	long n;

	if (payload[0] == '\0') {
		return 0;
	}
	failalloc_reset();
	cJSON_Delete(cJSON_ParseWithLengthOpts(payload, strlen(payload) + 1, NULL, true));
	n = failalloc_attempts();
	failalloc_reset();
	return n;
}

/* Returns (free it) the rendering of initial after set_key of key to payload as a string. */
static char *state_with_text(const char *initial, const char *key, const char *payload)
{
	struct presence_state *st = state_from(initial);
	cJSON *string = cJSON_CreateString(payload);
	char *quoted = cJSON_PrintUnformatted(string);
	char *json;

	assert_non_null(quoted);
	set_ok(st, &default_limits, key, quoted);
	json = strdup(presence_state_json(st));
	assert_non_null(json);
	cJSON_free(quoted);
	cJSON_Delete(string);
	presence_state_free(st);
	return json;
}

/*
 * Runs a write (set_key of key, or a merge when key is MERGE) on a state holding initial with
 * failure point n = 0, 1, 2, ... failing as mode says, until it succeeds. Every failure must be
 * PRESENCE_ERR_NOMEM with the state untouched, the success must give expected and must be the
 * first point at which nothing failed.
 *
 * The one exception is the one state.h documents: when the allocation that fails is inside
 * cJSON's parser, the payload is taken as text. Then, and only then, set_key may succeed with
 * the payload stored as a string and merge may refuse it as not an object, state untouched.
 * state.c's first allocation is its NUL-terminated copy of the payload (not a cJSON one), then
 * cJSON's parser makes the next parser_allocations(payload) allocations. When only one cJSON
 * allocation fails, every failure in the parser must give that outcome; when every allocation
 * from n on fails, set_key cannot store the text either and reports PRESENCE_ERR_NOMEM.
 */
static void assert_write_survives_allocation_failures_in(enum fail_mode mode, const char *initial,
                                                         const char *key, const char *payload,
                                                         const char *expected)
{
	struct presence_state *st = state_from(initial);
	long parser = parser_allocations(payload);
	long first = mode == FAIL_FROM_N_ON ? 1 : 0;
	char *as_text = key != MERGE ? state_with_text(initial, key, payload) : NULL;
	char reason[PRESENCE_STATE_REASON_SIZE];
	long taken_as_text = 0;
	long attempts = 0;
	enum presence_err err;
	bool changed;
	long n;

	for (n = 0; n < 10000; n++) {
		bool in_parser = n >= first && n < first + parser;

		changed = true;
		if (mode == FAIL_FROM_N_ON) {
			failalloc_fail_after(n);
		} else {
			cjson_fail_countdown = n;
			cjson_allocations = 0;
		}
		err = write_state(st, &default_limits, key, payload, strlen(payload), &changed,
		                  reason);
		attempts = mode == FAIL_FROM_N_ON ? failalloc_attempts() : cjson_allocations;
		failalloc_reset();
		cjson_fail_countdown = -1;
		if (in_parser && key != MERGE && err == PRESENCE_OK) {
			assert_true(changed);
			assert_state(st, as_text);
			presence_state_free(st);
			st = state_from(initial);
			taken_as_text++;
			continue;
		}
		if (in_parser && key == MERGE && err == PRESENCE_ERR_INVAL) {
			assert_string_equal(reason, "state must be a JSON object");
			assert_false(changed);
			assert_state(st, initial);
			taken_as_text++;
			continue;
		}
		if (err == PRESENCE_OK) {
			break;
		}
		if (err != PRESENCE_ERR_NOMEM) {
			fail_msg("%s after %ld allocations: %s (%s)", payload, n,
			         presence_strerror(err), reason);
		}
		assert_false(changed);
		assert_state(st, initial);
	}
	/* No failure was swallowed: the success made exactly the n allocations that succeed. */
	assert_int_equal(attempts, n);
	assert_true(n > 0);
	assert_true(changed);
	assert_state(st, expected);
	if (mode == FAIL_ONLY_CJSON_N) {
		assert_int_equal(taken_as_text, parser);
	}
	free(as_text);
	presence_state_free(st);
}

/* Runs the loop above with each fail_mode. */
static void assert_write_survives_allocation_failures(const char *initial, const char *key,
                                                      const char *payload, const char *expected)
{
	cJSON_Hooks hooks = {.malloc_fn = fail_once_malloc, .free_fn = free};

	assert_write_survives_allocation_failures_in(FAIL_FROM_N_ON, initial, key, payload,
	                                             expected);
	cJSON_InitHooks(&hooks);
	assert_write_survives_allocation_failures_in(FAIL_ONLY_CJSON_N, initial, key, payload,
	                                             expected);
	failalloc_install_cjson();
}

static void set_key_leaves_the_state_unchanged_on_every_allocation_failure(void **state)
{
	(void)state;
	assert_write_survives_allocation_failures("{}", "k", "away", "{\"k\":\"away\"}");
	assert_write_survives_allocation_failures("{\"a\":[1,{\"b\":2}]}", "k",
	                                          "{\"x\":[1,\"two\",{\"y\":null}]}",
	                                          "{\"a\":[1,{\"b\":2}],\"k\":{\"x\":[1,\"two\","
	                                          "{\"y\":null}]}}");
	assert_write_survives_allocation_failures("{\"a\":1,\"k\":\"old\",\"z\":{}}", "k",
	                                          "\"new\"", "{\"a\":1,\"k\":\"new\",\"z\":{}}");
	assert_write_survives_allocation_failures("{\"a\":1,\"k\":\"old\"}", "k", "null",
	                                          "{\"a\":1}");
	assert_write_survives_allocation_failures("{\"a\":1,\"k\":\"old\"}", "k", "", "{\"a\":1}");
	assert_write_survives_allocation_failures("{\"k\":\"old\"}", "k", "", "{}");
}

static void merge_leaves_the_state_unchanged_on_every_allocation_failure(void **state)
{
	(void)state;
	assert_write_survives_allocation_failures("{}", MERGE, "{\"a\":1}", "{\"a\":1}");
	assert_write_survives_allocation_failures(
	    "{\"a\":{\"b\":\"c\",\"d\":[1]},\"e\":1,\"f\":true}", MERGE,
	    "{\"a\":{\"b\":\"x\",\"d\":null,\"n\":{\"m\":null,\"o\":[]}},\"e\":null,\"g\":\"h\"}",
	    "{\"a\":{\"b\":\"x\",\"n\":{\"o\":[]}},\"f\":true,\"g\":\"h\"}");
	assert_write_survives_allocation_failures("{\"a\":1}", MERGE, "{\"a\":null}", "{}");
}

static void merge_patch_reports_every_allocation_failure(void **state)
{
	cJSON *patch = cJSON_Parse("{\"a\":{\"b\":[1,2],\"c\":null},\"d\":\"e\"}");
	enum presence_err err;
	cJSON *target;
	long n;

	(void)state;
	assert_non_null(patch);
	for (n = 0; n < 10000; n++) {
		target = cJSON_Parse("{\"a\":{\"c\":1},\"d\":2}");
		assert_non_null(target);
		failalloc_fail_after(n);
		err = presence_state_merge_patch(&target, patch);
		failalloc_reset();
		cJSON_Delete(target);
		if (err == PRESENCE_OK) {
			break;
		}
		assert_int_equal(err, PRESENCE_ERR_NOMEM);
	}
	assert_true(n > 0);
	cJSON_Delete(patch);
}

static void new_returns_null_when_allocation_fails(void **state)
{
	struct presence_state *st = NULL;
	long n;

	(void)state;
	for (n = 0; n < 100; n++) {
		failalloc_fail_after(n);
		st = presence_state_new();
		failalloc_reset();
		if (st != NULL) {
			break;
		}
	}
	assert_true(n > 0);
	assert_non_null(st);
	assert_state(st, "{}");
	presence_state_free(st);
}

static void clear_needs_no_memory(void **state)
{
	struct presence_state *st = state_from("{\"a\":1}");

	(void)state;
	failalloc_fail_after(0);
	assert_true(presence_state_clear(st));
	assert_int_equal(failalloc_attempts(), 0);
	failalloc_reset();
	assert_state(st, "{}");
	presence_state_free(st);
}

static void restore_replaces_the_state_without_checking_the_limits(void **state)
{
	static const struct presence_state_limits tiny = {
	    .max_state_bytes = 4, .max_keys = 1, .max_depth = 32};
	struct presence_state *st = state_from("{\"old\":1}");
	cJSON *recorded = cJSON_Parse("{\"status\":\"away\",\"n\":{\"deep\":[1,2]}}");
	cJSON *empty = cJSON_CreateObject();
	char reason[PRESENCE_STATE_REASON_SIZE];
	bool changed;

	(void)state;
	assert_int_equal(presence_state_restore(st, recorded), PRESENCE_OK);
	assert_state(st, "{\"status\":\"away\",\"n\":{\"deep\":[1,2]}}");
	/* A copy: the recorded tree stays the caller's. */
	cJSON_Delete(recorded);
	assert_state(st, "{\"status\":\"away\",\"n\":{\"deep\":[1,2]}}");
	/* Over the limits it may shrink. */
	assert_int_equal(presence_state_merge(st, &tiny, BYTES("{\"n\":null}"), &changed, reason),
	                 PRESENCE_OK);
	assert_state(st, "{\"status\":\"away\"}");
	assert_int_equal(presence_state_restore(st, empty), PRESENCE_OK);
	assert_true(presence_state_is_empty(st));
	cJSON_Delete(empty);
	presence_state_free(st);
}

static void restore_refuses_what_a_write_could_never_have_stored(void **state)
{
	static const char *const refused[] = {"[1]", "\"text\"", "{\"a/b\":1}", "{\"\":1}",
	                                      "{\"x\":1e999}"};
	struct presence_state *st = state_from("{\"old\":1}");
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(refused); i++) {
		cJSON *value = cJSON_Parse(refused[i]);

		assert_non_null(value);
		assert_int_equal(presence_state_restore(st, value), PRESENCE_ERR_INVAL);
		assert_state(st, "{\"old\":1}");
		cJSON_Delete(value);
	}
	assert_int_equal(presence_state_restore(st, NULL), PRESENCE_ERR_INVAL);
	presence_state_free(st);
}

static void restore_leaves_the_state_unchanged_on_every_allocation_failure(void **state)
{
	struct presence_state *st = state_from("{\"old\":1}");
	cJSON *recorded = cJSON_Parse("{\"status\":\"away\",\"n\":[1,2,3]}");
	enum presence_err err;
	long n;

	(void)state;
	for (n = 0;; n++) {
		failalloc_fail_after(n);
		err = presence_state_restore(st, recorded);
		failalloc_reset();
		if (err == PRESENCE_OK) {
			break;
		}
		assert_int_equal(err, PRESENCE_ERR_NOMEM);
		assert_state(st, "{\"old\":1}");
	}
	assert_true(n > 2);
	assert_state(st, "{\"status\":\"away\",\"n\":[1,2,3]}");
	cJSON_Delete(recorded);
	presence_state_free(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(a_new_state_is_empty_and_renders_as_braces),
	    cmocka_unit_test(set_key_takes_json_when_the_whole_payload_is_json_and_text_otherwise),
	    cmocka_unit_test(set_key_renders_numbers_exactly_as_cjson_prints_them),
	    cmocka_unit_test(
	        set_key_nests_json_up_to_cjsons_limit_and_takes_deeper_nesting_as_text),
	    cmocka_unit_test(set_key_with_an_empty_or_null_payload_removes_the_key),
	    cmocka_unit_test(set_key_with_a_null_payload_pointer_and_no_bytes_removes_the_key),
	    cmocka_unit_test(removing_the_last_key_leaves_an_empty_state),
	    cmocka_unit_test(set_key_refuses_payloads_it_cannot_store_and_leaves_the_state_alone),
	    cmocka_unit_test(key_valid_accepts_1_to_128_bytes_of_text_without_slash_plus_or_hash),
	    cmocka_unit_test(
	        an_invalid_key_is_quoted_in_the_reason_in_part_at_a_character_boundary),
	    cmocka_unit_test(setting_a_key_to_its_current_value_reports_no_change),
	    cmocka_unit_test(comparison_of_values_is_case_sensitive),
	    cmocka_unit_test(replacing_a_key_keeps_its_place_and_new_keys_go_last),
	    cmocka_unit_test(max_keys_allows_exactly_the_limit_and_refuses_one_more),
	    cmocka_unit_test(max_state_bytes_allows_exactly_the_limit_and_refuses_one_byte_more),
	    cmocka_unit_test(the_byte_limit_reason_reports_the_rendered_size),
	    cmocka_unit_test(a_state_over_lowered_limits_may_shrink_but_not_grow),
	    cmocka_unit_test(
	        a_payload_of_4_x_max_state_bytes_is_parsed_and_one_byte_more_is_refused),
	    cmocka_unit_test(the_same_write_twice_changes_the_state_once),
	    cmocka_unit_test(merge_refuses_anything_but_a_json_object_with_valid_keys),
	    cmocka_unit_test(merge_may_remove_a_key_that_could_never_be_set),
	    cmocka_unit_test(merge_with_an_empty_payload_clears_the_state),
	    cmocka_unit_test(merge_applies_the_patch_to_the_state),
	    cmocka_unit_test(writes_with_a_repeated_member_name_are_refused),
	    cmocka_unit_test(the_same_name_in_different_objects_is_no_repeat),
	    cmocka_unit_test(writes_deeper_than_max_depth_are_refused),
	    cmocka_unit_test(a_state_deeper_than_the_limit_may_still_shrink),
	    cmocka_unit_test(merge_null_removes_every_member_of_a_repeated_name),
	    cmocka_unit_test(clear_empties_the_state_and_says_whether_it_had_keys),
	    cmocka_unit_test(merge_patch_gives_every_result_in_rfc_7396_appendix_a),
	    cmocka_unit_test(merge_patch_onto_no_value_strips_nulls_from_an_object),
	    cmocka_unit_test(set_key_leaves_the_state_unchanged_on_every_allocation_failure),
	    cmocka_unit_test(merge_leaves_the_state_unchanged_on_every_allocation_failure),
	    cmocka_unit_test(merge_patch_reports_every_allocation_failure),
	    cmocka_unit_test(new_returns_null_when_allocation_fails),
	    cmocka_unit_test(clear_needs_no_memory),
	    cmocka_unit_test(restore_replaces_the_state_without_checking_the_limits),
	    cmocka_unit_test(restore_refuses_what_a_write_could_never_have_stored),
	    cmocka_unit_test(restore_leaves_the_state_unchanged_on_every_allocation_failure),
	};

	failalloc_install_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
