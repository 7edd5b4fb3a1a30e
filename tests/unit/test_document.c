/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Unit tests for document.c: the presence document and the rejection notice, compared byte for
 * byte, including the escaping of awkward user names, integers beyond what a double holds
 * exactly, and every allocation failure.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "document.h"
#include "failalloc.h"
#include "testing.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Renders doc and asserts it gives exactly expected, with the right length. */
static void assert_document(const struct presence_document *doc, const char *expected)
{
	size_t len = 0;
	char *text = presence_document_render(doc, &len);

	assert_non_null(text);
	assert_string_equal(text, expected);
	assert_int_equal(len, strlen(expected));
	presence_document_free(text);
}

/* Renders the rejection notice for topic and error and asserts it gives exactly expected, with
 * the right length. */
static void assert_notice(const char *topic, const char *error, const char *expected)
{
	size_t len = 0;
	char *text = presence_document_render_error(topic, error, &len);

	assert_non_null(text);
	assert_string_equal(text, expected);
	assert_int_equal(len, strlen(expected));
	presence_document_free(text);
}

/* Asserts that value (a built document; NULL fails) prints compactly as exactly expected, then
 * deletes it. */
static void assert_built(cJSON *value, const char *expected)
{
	char *text;

	assert_non_null(value);
	text = cJSON_PrintUnformatted(value);
	assert_non_null(text);
	assert_string_equal(text, expected);
	cJSON_free(text);
	cJSON_Delete(value);
}

/* Returns the compact rendering of the JSON text json (which must be valid), as the state
 * module renders a state; the caller frees it with cJSON_free. */
static char *compact(const char *json)
{
	cJSON *value = cJSON_Parse(json);
	char *text;

	assert_non_null(value);
	text = cJSON_PrintUnformatted(value);
	assert_non_null(text);
	cJSON_Delete(value);
	return text;
}

static void an_available_user_renders_with_the_keys_in_order(void **state)
{
	const struct presence_document doc = {
	    .username = "alice",
	    .available = true,
	    .sessions = 2,
	    .since_ms = 1764265200123,
	    .seq = 7,
	    .state_json = "{\"status\":\"away\"}",
	};

	(void)state;
	assert_document(&doc, "{\"username\":\"alice\",\"available\":true,\"sessions\":2,"
	                      "\"since\":1764265200123,\"seq\":7,\"state\":{\"status\":\"away\"}}");
}

static void an_unavailable_user_with_no_state_renders_empty_braces(void **state)
{
	struct presence_document doc = {
	    .username = "bob",
	    .available = false,
	    .sessions = 0,
	    .since_ms = 1764265299999,
	    .seq = 1,
	    .state_json = NULL,
	};
	const char *expected = "{\"username\":\"bob\",\"available\":false,\"sessions\":0,"
	                       "\"since\":1764265299999,\"seq\":1,\"state\":{}}";

	(void)state;
	assert_document(&doc, expected);
	doc.state_json = "{}";
	assert_document(&doc, expected);
}

static void a_nested_state_is_embedded_as_its_compact_rendering(void **state)
{
	char *st = compact("{ \"status\" : \"busy\", \"loc\" : { \"lat\" : 52.5, \"tags\" : "
	                   "[ \"a\", 1, true, null, [ ] ] }, \"n\" : -0.25, \"e\" : { } }");
	const struct presence_document doc = {
	    .username = "carol",
	    .available = true,
	    .sessions = 1,
	    .since_ms = 0,
	    .seq = 42,
	    .state_json = st,
	};
	const char *expected =
	    "{\"username\":\"carol\",\"available\":true,\"sessions\":1,\"since\":0,\"seq\":42,"
	    "\"state\":{\"status\":\"busy\",\"loc\":{\"lat\":52.5,\"tags\":[\"a\",1,true,null,[]]},"
	    "\"n\":-0.25,\"e\":{}}}";

	(void)state;
	assert_document(&doc, expected);
	/* Rendering leaves the state as it was, and can be done again. */
	assert_document(&doc, expected);
	assert_string_equal(st, "{\"status\":\"busy\",\"loc\":{\"lat\":52.5,\"tags\":[\"a\","
	                        "1,true,null,[]]},\"n\":-0.25,\"e\":{}}");
	cJSON_free(st);
}

/* One user name and how it must appear in the document. */
struct username_case {
	const char *what;
	const char *username;
	/* The JSON string, quotes included. */
	const char *json;
};

static void user_names_are_escaped_as_json_strings(void **state)
{
	static const struct username_case cases[] = {
	    {"a quote", "say \"hi\"", "\"say \\\"hi\\\"\""},
	    {"a backslash", "dom\\user", "\"dom\\\\user\""},
	    {"named control characters", "a\tb\nc\rd\be\ff", "\"a\\tb\\nc\\rd\\be\\ff\""},
	    {"other control characters", "x\x01y\x1Fz\x7F", "\"x\\u0001y\\u001fz\x7F\""},
	    {"a slash", "a/b", "\"a/b\""},
	    {"non-ASCII", "Zo\xC3\xAB \xE6\x9D\xB1 \xF0\x9F\x98\x80",
	     "\"Zo\xC3\xAB \xE6\x9D\xB1 "
	     "\xF0\x9F\x98\x80\""},
	    {"an empty name", "", "\"\""},
	};
	char expected[256];
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(cases); i++) {
		const struct presence_document doc = {
		    .username = cases[i].username,
		    .available = true,
		    .sessions = 1,
		    .since_ms = 5,
		    .seq = 6,
		    .state_json = NULL,
		};

		snprintf(expected, sizeof(expected),
		         "{\"username\":%s,\"available\":true,\"sessions\":1,\"since\":5,"
		         "\"seq\":6,\"state\":{}}",
		         cases[i].json);
		assert_document(&doc, expected);
	}
}

/* One set of integers and their expected rendering. */
struct integer_case {
	unsigned int sessions;
	int64_t since_ms;
	uint64_t seq;
	const char *json;
};

static void integers_render_exactly_even_beyond_2_to_the_53(void **state)
{
	static const struct integer_case cases[] = {
	    {0, 0, 0, "\"sessions\":0,\"since\":0,\"seq\":0"},
	    {3, 1764265200123, 9007199254740992u,
	     "\"sessions\":3,\"since\":1764265200123,\"seq\":9007199254740992"},
	    {3, 1764265200123, 9007199254740993u,
	     "\"sessions\":3,\"since\":1764265200123,\"seq\":9007199254740993"},
	    {4294967295u, INT64_MAX, UINT64_MAX,
	     "\"sessions\":4294967295,\"since\":9223372036854775807,\"seq\":18446744073709551615"},
	    {1, INT64_MIN, 1, "\"sessions\":1,\"since\":-9223372036854775808,\"seq\":1"},
	    {1, -1, 1000000000000000000u,
	     "\"sessions\":1,\"since\":-1,\"seq\":1000000000000000000"},
	};
	char expected[256];
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(cases); i++) {
		const struct presence_document doc = {
		    .username = "u",
		    .available = true,
		    .sessions = cases[i].sessions,
		    .since_ms = cases[i].since_ms,
		    .seq = cases[i].seq,
		    .state_json = NULL,
		};

		snprintf(expected, sizeof(expected),
		         "{\"username\":\"u\",\"available\":true,%s,\"state\":{}}", cases[i].json);
		assert_document(&doc, expected);
	}
}

static void a_rejection_notice_names_the_topic_and_the_error(void **state)
{
	(void)state;
	assert_notice("presence/alice/state", "state must be a JSON object",
	              "{\"topic\":\"presence/alice/state\",\"error\":\"state must be a JSON "
	              "object\"}");
	assert_notice("presence/a%22b/state/x", "invalid key \"a/b\": keys are 1 to 128 bytes",
	              "{\"topic\":\"presence/a%22b/state/x\",\"error\":\"invalid key "
	              "\\\"a/b\\\": keys are 1 to 128 bytes\"}");
}

static void a_built_document_is_the_rendered_one_with_known_appended(void **state)
{
	static const char *const states[] = {
	    "{}",
	    "{\"status\":\"away\"}",
	    "{ \"status\" : \"busy\", \"loc\" : { \"lat\" : 52.5, \"tags\" : [ \"a\", 1, true, "
	    "null, [ ] ] }, \"n\" : -0.25, \"e\" : { }, \"q\" : \"\\\"\\u0001\xC3\xAB\" }",
	};
	static const struct presence_document docs[] = {
	    {"alice", true, 2, 1764265200123, 7, NULL},
	    {"say \"hi\"\t\x01 Zo\xC3\xAB", false, 0, INT64_MIN, UINT64_MAX, NULL},
	    {"", true, 4294967295u, -1, 9007199254740993u, NULL},
	};
	char expected[1024];
	size_t i, j, len;

	(void)state;
	for (i = 0; i < COUNT(states); i++) {
		char *state_json = compact(states[i]);

		for (j = 0; j < COUNT(docs); j++) {
			struct presence_document doc = docs[j];
			char *rendered;

			doc.state_json = state_json;
			rendered = presence_document_render(&doc, &len);
			assert_non_null(rendered);
			assert_built(presence_document_build(&doc, false), rendered);
			snprintf(expected, sizeof(expected), "%.*s,\"known\":true}", (int)(len - 1),
			         rendered);
			assert_built(presence_document_build(&doc, true), expected);
			presence_document_free(rendered);
		}
		cJSON_free(state_json);
	}
}

static void a_built_document_without_state_text_has_empty_state(void **state)
{
	const struct presence_document doc = {"bob", false, 0, 5, 6, NULL};

	(void)state;
	assert_built(presence_document_build(&doc, true),
	             "{\"username\":\"bob\",\"available\":false,\"sessions\":0,\"since\":5,"
	             "\"seq\":6,\"state\":{},\"known\":true}");
}

static void an_unknown_user_has_only_name_availability_and_known(void **state)
{
	(void)state;
	assert_built(presence_document_build_unknown("nobody"),
	             "{\"username\":\"nobody\",\"available\":false,\"known\":false}");
	assert_built(presence_document_build_unknown("a\"b/\xC3\xAB"),
	             "{\"username\":\"a\\\"b/\xC3\xAB\",\"available\":false,\"known\":false}");
}

static void build_returns_null_on_every_allocation_failure(void **state)
{
	const struct presence_document doc = {"dave", true, 3, 1764265200123, 9, "{\"a\":[1,2]}"};
	cJSON *built = NULL;
	long n;

	(void)state;
	for (n = 0; n < 1000; n++) {
		failalloc_fail_after(n);
		built = presence_document_build(&doc, true);
		failalloc_reset();
		if (built != NULL) {
			break;
		}
	}
	assert_true(n > 0);
	assert_built(built, "{\"username\":\"dave\",\"available\":true,\"sessions\":3,"
	                    "\"since\":1764265200123,\"seq\":9,\"state\":{\"a\":[1,2]},"
	                    "\"known\":true}");

	for (n = 0; n < 1000; n++) {
		failalloc_fail_after(n);
		built = presence_document_build_unknown("zed");
		failalloc_reset();
		if (built != NULL) {
			break;
		}
	}
	assert_true(n > 0);
	assert_built(built, "{\"username\":\"zed\",\"available\":false,\"known\":false}");
}

static void free_accepts_null(void **state)
{
	(void)state;
	presence_document_free(NULL);
}

static void render_returns_null_on_every_allocation_failure(void **state)
{
	const struct presence_document doc = {
	    .username = "dave",
	    .available = true,
	    .sessions = 3,
	    .since_ms = 1764265200123,
	    .seq = 9,
	    .state_json = "{\"status\":\"away\",\"list\":[1,2,3]}",
	};
	char *text = NULL;
	size_t len;
	long n;

	(void)state;
	for (n = 0; n < 1000; n++) {
		len = 12345;
		failalloc_fail_after(n);
		text = presence_document_render(&doc, &len);
		failalloc_reset();
		if (text != NULL) {
			break;
		}
		assert_int_equal(len, 0);
	}
	assert_true(n > 0);
	assert_non_null(text);
	assert_string_equal(text, "{\"username\":\"dave\",\"available\":true,\"sessions\":3,"
	                          "\"since\":1764265200123,\"seq\":9,\"state\":{\"status\":"
	                          "\"away\",\"list\":[1,2,3]}}");
	assert_int_equal(len, strlen(text));
	presence_document_free(text);
}

static void a_long_name_is_escaped_in_a_buffer_of_its_own(void **state)
{
	/* 100 quotes: over the 64 bytes escaped on the stack, and each one escaped to 2 bytes. */
	char name[101];
	char expected[512];
	char escaped[201];
	struct presence_document doc = {name, false, 0, 1, 2, NULL};
	char *text = NULL;
	size_t len;
	long n;

	(void)state;
	memset(name, '"', 100);
	name[100] = '\0';
	for (n = 0; n < 100; n++) {
		escaped[2 * n] = '\\';
		escaped[2 * n + 1] = '"';
	}
	escaped[200] = '\0';
	snprintf(expected, sizeof(expected),
	         "{\"username\":\"%s\",\"available\":false,\"sessions\":0,\"since\":1,\"seq\":2,"
	         "\"state\":{}}",
	         escaped);
	for (n = 0; n < 1000; n++) {
		failalloc_fail_after(n);
		text = presence_document_render(&doc, &len);
		failalloc_reset();
		if (text != NULL) {
			break;
		}
	}
	/* The name's buffer, then the document. */
	assert_true(n > 1);
	assert_string_equal(text, expected);
	assert_int_equal(len, strlen(expected));
	presence_document_free(text);
}

static void render_error_returns_null_on_every_allocation_failure(void **state)
{
	char *text = NULL;
	size_t len;
	long n;

	(void)state;
	for (n = 0; n < 1000; n++) {
		len = 12345;
		failalloc_fail_after(n);
		text = presence_document_render_error("presence/eve/state", "too large", &len);
		failalloc_reset();
		if (text != NULL) {
			break;
		}
		assert_int_equal(len, 0);
	}
	assert_true(n > 0);
	assert_non_null(text);
	assert_string_equal(text, "{\"topic\":\"presence/eve/state\",\"error\":\"too large\"}");
	presence_document_free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(an_available_user_renders_with_the_keys_in_order),
	    cmocka_unit_test(an_unavailable_user_with_no_state_renders_empty_braces),
	    cmocka_unit_test(a_nested_state_is_embedded_as_its_compact_rendering),
	    cmocka_unit_test(user_names_are_escaped_as_json_strings),
	    cmocka_unit_test(integers_render_exactly_even_beyond_2_to_the_53),
	    cmocka_unit_test(a_rejection_notice_names_the_topic_and_the_error),
	    cmocka_unit_test(a_built_document_is_the_rendered_one_with_known_appended),
	    cmocka_unit_test(a_built_document_without_state_text_has_empty_state),
	    cmocka_unit_test(an_unknown_user_has_only_name_availability_and_known),
	    cmocka_unit_test(build_returns_null_on_every_allocation_failure),
	    cmocka_unit_test(free_accepts_null),
	    cmocka_unit_test(render_returns_null_on_every_allocation_failure),
	    cmocka_unit_test(a_long_name_is_escaped_in_a_buffer_of_its_own),
	    cmocka_unit_test(render_error_returns_null_on_every_allocation_failure),
	};

	failalloc_install_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
