/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Unit tests for query.c: the request parser (every malformed request and command, the
 * per-request name budget) and the response builder (known, offline, never published and
 * unknown names in one request, compared byte for byte), with every allocation failure.
 *
 * The registry is filled as the adapter fills it: sessions promoted at the end of a loop
 * iteration, documents prepared and recorded as sent at given wall-clock times.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "failalloc.h"
#include "query.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static char clients[4];
#define A ((const void *)&clients[0])
#define B ((const void *)&clients[1])
#define C ((const void *)&clients[2])

static const struct presence_state_limits limits = {
    .max_state_bytes = 8192, .max_keys = 64, .max_depth = 32};

/* alice: online with two sessions and a state. bob: was online, now offline. carol: a user
 * entry without any document (as when a state write comes before the first document). */
#define ALICE                                                                                      \
	"{\"username\":\"alice\",\"available\":true,\"sessions\":2,\"since\":1000,\"seq\":1,"      \
	"\"state\":{\"status\":\"away\",\"n\":[1,{\"x\":null}]},\"known\":true}"
#define BOB                                                                                        \
	"{\"username\":\"bob\",\"available\":false,\"sessions\":0,\"since\":3000,\"seq\":2,"       \
	"\"state\":{},\"known\":true}"
#define UNKNOWN(name) "{\"username\":\"" name "\",\"available\":false,\"known\":false}"
/* Never-published and unknown names, as answered. */
#define ZED UNKNOWN("zed")
#define Z UNKNOWN("z")
#define CAROL UNKNOWN("carol")
#define NAMELESS UNKNOWN("")
#define ALICE_CAPITALISED UNKNOWN("Alice")
#define A_SLASH_B UNKNOWN("a/b")
#define QUOTE UNKNOWN("a\\\"b")
#define E_TAB UNKNOWN("\xC3\xAB\\t")
#define SMILEY UNKNOWN("\xF0\x9F\x98\x80")

/* Publishes every due document at time now, as the adapter does at the end of an iteration. */
static void flush_all(struct presence_registry *reg, int64_t now)
{
	struct presence_document doc;
	struct presence_user *user;
	bool due;

	while ((user = presence_registry_dirty_next(reg)) != NULL) {
		assert_int_equal(presence_registry_document_prepare(reg, user, now, &doc, &due),
		                 PRESENCE_OK);
		if (due) {
			presence_registry_document_sent(reg, user);
		}
	}
	presence_registry_flush_done(reg);
}

static void start_session(struct presence_registry *reg, const void *client, const char *name)
{
	assert_int_equal(presence_registry_session_pending(reg, client), PRESENCE_OK);
	assert_int_equal(presence_registry_session_start(reg, client, name), PRESENCE_OK);
}

static int setup(void **ctx)
{
	struct presence_registry *reg = presence_registry_new("presence");
	char reason[PRESENCE_STATE_REASON_SIZE];
	struct presence_user *user;
	const char *patch = "{\"status\":\"away\",\"n\":[1,{\"x\":null}]}";
	bool changed;

	if (reg == NULL) {
		return -1;
	}
	start_session(reg, A, "alice");
	start_session(reg, B, "alice");
	user = presence_registry_user_find(reg, "alice");
	assert_int_equal(presence_state_merge(presence_user_state(user), &limits, patch,
	                                      strlen(patch), &changed, reason),
	                 PRESENCE_OK);
	flush_all(reg, 1000);
	start_session(reg, C, "bob");
	flush_all(reg, 2000);
	presence_registry_session_gone(reg, C);
	flush_all(reg, 3000);
	assert_int_equal(presence_registry_user_get(reg, "carol", &user), PRESENCE_OK);
	*ctx = reg;
	return 0;
}

static int teardown(void **ctx)
{
	presence_registry_free(*ctx);
	return 0;
}

/* Parses request (a C string, passed without its NUL) and answers it; asserts the answer. */
static void assert_answer(const struct presence_registry *reg, const char *request,
                          size_t max_users, const char *expected)
{
	struct presence_query q;
	size_t len = 1;
	char *text;

	assert_int_equal(presence_query_parse(&q, request, strlen(request), max_users),
	                 PRESENCE_OK);
	text = presence_query_respond(&q, reg, NULL, 1u << 24, &len);
	assert_non_null(text);
	assert_string_equal(text, expected);
	assert_int_equal(len, strlen(expected));
	presence_query_response_free(text);
	presence_query_free(&q);
}

static void parse_reads_every_command_in_order(void **ctx)
{
	const char *request = "{\"commands\":["
	                      "{\"command\":\"getPresence\",\"usernames\":[\"alice\",\"bob\"],"
	                      "\"correlationData\":\"c1\"},"
	                      "{\"command\":\"getPresence\",\"usernames\":[]},"
	                      "{\"command\":\"listUsers\",\"correlationData\":\"c3\"}]}";
	struct presence_query q;

	(void)ctx;
	assert_int_equal(presence_query_parse(&q, request, strlen(request), 10), PRESENCE_OK);
	assert_int_equal(q.count, 3);
	assert_int_equal(q.username_total, 2);
	assert_int_equal(q.commands[0].kind, PRESENCE_QUERY_PRESENCES);
	assert_string_equal(q.commands[0].command, "getPresence");
	assert_string_equal(q.commands[0].correlation_data, "c1");
	assert_int_equal(q.commands[0].username_count, 2);
	assert_string_equal(cJSON_GetArrayItem(q.commands[0].usernames, 1)->valuestring, "bob");
	assert_null(q.commands[0].error);
	assert_int_equal(q.commands[1].kind, PRESENCE_QUERY_PRESENCES);
	assert_null(q.commands[1].correlation_data);
	assert_int_equal(q.commands[1].username_count, 0);
	assert_int_equal(q.commands[2].kind, PRESENCE_QUERY_ERROR);
	assert_string_equal(q.commands[2].command, "listUsers");
	assert_string_equal(q.commands[2].error, "Unknown command");
	assert_string_equal(q.commands[2].correlation_data, "c3");
	assert_null(q.commands[2].usernames);
	presence_query_free(&q);
	assert_null(q.request);
	assert_null(q.commands);
	assert_int_equal(q.count, 0);
}

static void payload_is_read_only_up_to_its_length(void **ctx)
{
	const char payload[] = "{\"commands\":[]}GARBAGE";
	struct presence_query q;

	(void)ctx;
	assert_int_equal(presence_query_parse(&q, payload, 15, 10), PRESENCE_OK);
	assert_non_null(q.request);
	assert_int_equal(q.count, 0);
	presence_query_free(&q);
	assert_int_equal(presence_query_parse(&q, NULL, 0, 10), PRESENCE_OK);
	assert_int_equal(q.count, 1);
	assert_string_equal(q.commands[0].error, "Payload not valid JSON");
	presence_query_free(&q);
}

/* A request and the single error it is answered with. */
struct request_case {
	const char *payload;
	size_t len;
	const char *error;
};

#define CASE(text, error)                                                                          \
	{                                                                                          \
		text, sizeof(text) - 1, error                                                      \
	}

static void unreadable_requests_get_one_error_for_the_whole_request(void **ctx)
{
	static const struct request_case cases[] = {
	    CASE("", "Payload not valid JSON"),
	    CASE("getPresence alice", "Payload not valid JSON"),
	    CASE("{\"commands\":[", "Payload not valid JSON"),
	    CASE("{\"commands\":[]}x", "Payload not valid JSON"),
	    CASE("{\"commands\":[]} {}", "Payload not valid JSON"),
	    CASE("{\"commands\":[]}\0", "Payload not valid UTF-8"),
	    CASE("{\"commands\":[\"\xC3\"]}", "Payload not valid UTF-8"),
	    CASE("{\"commands\":[\"\xED\xA0\x80\"]}", "Payload not valid UTF-8"),
	    CASE("{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[\"al\\u0000ice\"]}]}",
	         "Payload has a \\u escape that decodes to NUL"),
	    CASE("{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[\"al\\uZZZZ\"]}]}",
	         "Payload has a \\u escape that decodes to NUL"),
	    CASE("[]", "Invalid/missing commands"),
	    CASE("\"commands\"", "Invalid/missing commands"),
	    CASE("42", "Invalid/missing commands"),
	    CASE("null", "Invalid/missing commands"),
	    CASE("{}", "Invalid/missing commands"),
	    CASE("{\"commands\":{}}", "Invalid/missing commands"),
	    CASE("{\"commands\":\"getPresence\"}", "Invalid/missing commands"),
	    CASE("{\"Commands\":[]}", "Invalid/missing commands"),
	};
	size_t i;

	(void)ctx;
	for (i = 0; i < COUNT(cases); i++) {
		struct presence_query q;

		assert_int_equal(presence_query_parse(&q, cases[i].payload, cases[i].len, 10),
		                 PRESENCE_OK);
		if (q.count != 1 || q.commands[0].kind != PRESENCE_QUERY_ERROR ||
		    strcmp(q.commands[0].error, cases[i].error) != 0 ||
		    strcmp(q.commands[0].command, "Unknown command") != 0) {
			fail_msg("request %zu (%.*s): expected the single error \"%s\"", i,
			         (int)cases[i].len, cases[i].payload, cases[i].error);
		}
		assert_null(q.commands[0].correlation_data);
		presence_query_free(&q);
	}
}

static void unreadable_requests_are_answered_as_dynamic_security_does(void **ctx)
{
	(void)ctx;
	assert_answer(*ctx, "nonsense", 10,
	              "{\"responses\":[{\"command\":\"Unknown command\",\"error\":"
	              "\"Payload not valid JSON\"}]}");
	assert_answer(*ctx, "{\"commands\":7}", 10,
	              "{\"responses\":[{\"command\":\"Unknown command\",\"error\":"
	              "\"Invalid/missing commands\"}]}");
}

/* One command object and how its response starts. */
struct command_case {
	const char *command;
	const char *response;
};

static void bad_commands_get_an_error_and_the_others_an_answer(void **ctx)
{
	static const struct command_case cases[] = {
	    {"\"getPresence\"",
	     "{\"command\":\"Unknown command\",\"error\":\"Command not an object\"}"},
	    {"[]", "{\"command\":\"Unknown command\",\"error\":\"Command not an object\"}"},
	    {"{}", "{\"command\":\"Unknown command\",\"error\":\"Missing command\"}"},
	    {"{\"command\":7,\"correlationData\":\"x\"}",
	     "{\"command\":\"Unknown command\",\"error\":\"Missing command\","
	     "\"correlationData\":\"x\"}"},
	    {"{\"command\":\"getPresence\",\"correlationData\":7,\"usernames\":[]}",
	     "{\"command\":\"getPresence\",\"error\":\"Invalid correlationData data type\"}"},
	    {"{\"command\":\"getPresence\",\"correlationData\":null,\"usernames\":[]}",
	     "{\"command\":\"getPresence\",\"error\":\"Invalid correlationData data type\"}"},
	    {"{\"command\":\"setPresence\",\"correlationData\":\"\xC3\xAB\"}",
	     "{\"command\":\"setPresence\",\"error\":\"Unknown command\","
	     "\"correlationData\":\"\xC3\xAB\"}"},
	    {"{\"command\":\"\"}", "{\"command\":\"\",\"error\":\"Unknown command\"}"},
	    {"{\"command\":\"getPresence\"}",
	     "{\"command\":\"getPresence\",\"error\":\"Invalid/missing usernames\"}"},
	    {"{\"command\":\"getPresence\",\"usernames\":\"alice\"}",
	     "{\"command\":\"getPresence\",\"error\":\"Invalid/missing usernames\"}"},
	    {"{\"command\":\"getPresence\",\"usernames\":{\"alice\":1}}",
	     "{\"command\":\"getPresence\",\"error\":\"Invalid/missing usernames\"}"},
	    {"{\"command\":\"getPresence\",\"usernames\":[\"alice\",null]}",
	     "{\"command\":\"getPresence\",\"error\":\"Invalid/missing usernames\"}"},
	    {"{\"command\":\"getPresence\",\"usernames\":[[\"alice\"]],\"correlationData\":\"\"}",
	     "{\"command\":\"getPresence\",\"error\":\"Invalid/missing usernames\","
	     "\"correlationData\":\"\"}"},
	    {"{\"command\":\"GETPRESENCE\",\"usernames\":[\"bob\"]}",
	     "{\"command\":\"getPresence\",\"presences\":[" BOB "]}"},
	};
	char request[1024], expected[1024];
	size_t i;

	for (i = 0; i < COUNT(cases); i++) {
		/* The bad command sits between two good ones, which are still answered. */
		snprintf(request, sizeof(request),
		         "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[\"zed\"]},%s,"
		         "{\"command\":\"getPresence\",\"usernames\":[\"bob\"],"
		         "\"correlationData\":\"last\"}]}",
		         cases[i].command);
		snprintf(expected, sizeof(expected),
		         "{\"responses\":["
		         "{\"command\":\"getPresence\",\"presences\":[" ZED "]},"
		         "%s,"
		         "{\"command\":\"getPresence\",\"presences\":[" BOB "],"
		         "\"correlationData\":\"last\"}]}",
		         cases[i].response);
		assert_answer(*ctx, request, 10, expected);
	}
}

static void known_offline_never_published_and_unknown_names_in_one_request(void **ctx)
{
	assert_answer(*ctx,
	              "{\"commands\":[{\"command\":\"getPresence\",\"correlationData\":\"q-1\","
	              "\"usernames\":[\"alice\",\"zed\",\"bob\",\"carol\",\"alice\",\"\","
	              "\"Alice\",\"a/b\"]}]}",
	              100,
	              "{\"responses\":[{\"command\":\"getPresence\",\"presences\":[" ALICE "," ZED
	              "," BOB "," CAROL "," NAMELESS "," ALICE_CAPITALISED "," A_SLASH_B
	              "],\"correlationData\":\"q-1\"}]}");
}

static void an_empty_request_gets_an_empty_response(void **ctx)
{
	assert_answer(*ctx, "{\"commands\":[]}", 10, "{\"responses\":[]}");
	assert_answer(*ctx, " {\"commands\" : [ ] , \"other\":1}\n", 10, "{\"responses\":[]}");
	assert_answer(*ctx, "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[]}]}", 10,
	              "{\"responses\":[{\"command\":\"getPresence\",\"presences\":[]}]}");
}

static void names_are_escaped_in_the_unknown_answer(void **ctx)
{
	assert_answer(*ctx,
	              "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":"
	              "[\"a\\\"b\",\"\\u00eb\\t\",\"\xF0\x9F\x98\x80\"]}]}",
	              10,
	              "{\"responses\":[{\"command\":\"getPresence\",\"presences\":[" QUOTE "," E_TAB
	              "," SMILEY "]}"
	              "]}");
}

static void the_answer_is_the_last_published_document_not_the_live_state(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_user *alice = presence_registry_user_find(reg, "alice");
	const char *request =
	    "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[\"alice\"]}]}";
	char reason[PRESENCE_STATE_REASON_SIZE];
	bool changed;

	assert_int_equal(presence_state_set_key(presence_user_state(alice), &limits, "status", 6,
	                                        "busy", 4, &changed, reason),
	                 PRESENCE_OK);
	presence_registry_user_changed(reg, alice);
	presence_registry_session_gone(reg, A);
	assert_answer(reg, request, 10,
	              "{\"responses\":[{\"command\":\"getPresence\",\"presences\":[" ALICE "]}]}");
	flush_all(reg, 5000);
	assert_answer(reg, request, 10,
	              "{\"responses\":[{\"command\":\"getPresence\",\"presences\":["
	              "{\"username\":\"alice\",\"available\":true,\"sessions\":1,\"since\":1000,"
	              "\"seq\":2,\"state\":{\"status\":\"busy\",\"n\":[1,{\"x\":null}]},"
	              "\"known\":true}]}]}");
}

static void the_name_budget_counts_over_the_whole_request(void **ctx)
{
	const char *request = "{\"commands\":["
	                      "{\"command\":\"getPresence\",\"usernames\":[\"bob\",\"bob\"]},"
	                      "{\"command\":\"getPresence\",\"usernames\":[\"x\",\"y\"],"
	                      "\"correlationData\":\"over\"},"
	                      "{\"command\":\"getPresence\",\"usernames\":[\"z\"]},"
	                      "{\"command\":\"getPresence\",\"usernames\":[]}]}";
	struct presence_query q;

	/* 3 names allowed: the first command takes 2, the second would make 4, the third fits. */
	assert_answer(*ctx, request, 3,
	              "{\"responses\":[{\"command\":\"getPresence\",\"presences\":[" BOB
	              "]},{\"command\":\"getPresence\",\"error\":\"Too many usernames: at most 3 "
	              "per request\",\"correlationData\":\"over\"},{\"command\":\"getPresence\","
	              "\"presences\":[" Z "]},{\"command\":\"getPresence\","
	              "\"presences\":[]}]}");
	assert_int_equal(presence_query_parse(&q, request, strlen(request), 3), PRESENCE_OK);
	assert_int_equal(q.username_total, 3);
	presence_query_free(&q);
	/* Exactly at the limit is allowed. */
	assert_int_equal(presence_query_parse(&q, request, strlen(request), 5), PRESENCE_OK);
	assert_int_equal(q.username_total, 5);
	assert_int_equal(q.commands[1].kind, PRESENCE_QUERY_PRESENCES);
	presence_query_free(&q);
	assert_int_equal(presence_query_parse(&q, request, strlen(request), 1), PRESENCE_OK);
	assert_int_equal(q.username_total, 1);
	assert_int_equal(q.commands[0].kind, PRESENCE_QUERY_ERROR);
	assert_int_equal(q.commands[1].kind, PRESENCE_QUERY_ERROR);
	assert_int_equal(q.commands[2].kind, PRESENCE_QUERY_PRESENCES);
	presence_query_free(&q);
}

static void a_name_asked_many_times_is_answered_once(void **ctx)
{
	/* Issue 11: alice asked 1000 times made a reply 910 times the size of the request. */
	size_t size = 64 + 1000 * sizeof("\"alice\",");
	char *request = malloc(size);
	size_t len = 0;
	size_t i;

	assert_non_null(request);
	len += (size_t)snprintf(request, size,
	                        "{\"commands\":[{\"command\":\"getPresence\","
	                        "\"usernames\":[");
	for (i = 0; i < 1000; i++) {
		len += (size_t)snprintf(request + len, size - len, "%s\"alice\"", i > 0 ? "," : "");
	}
	snprintf(request + len, size - len, "]}]}");
	assert_answer(*ctx, request, 1000,
	              "{\"responses\":[{\"command\":\"getPresence\",\"presences\":[" ALICE "]}]}");
	free(request);
	/* The first place each name was asked decides its order. */
	assert_answer(*ctx,
	              "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":"
	              "[\"zed\",\"bob\",\"zed\",\"alice\",\"bob\"]}]}",
	              10,
	              "{\"responses\":[{\"command\":\"getPresence\",\"presences\":[" ZED "," BOB
	              "," ALICE "]}]}");
}

/* Answers request (a C string) within max_bytes; returns the text (free it with
 * presence_query_response_free) and its length in *len. */
static char *respond_within(const struct presence_registry *reg, const char *request,
                            size_t max_bytes, size_t *len)
{
	struct presence_query q;
	char *text;

	assert_int_equal(presence_query_parse(&q, request, strlen(request), 100), PRESENCE_OK);
	text = presence_query_respond(&q, reg, NULL, max_bytes, len);
	assert_non_null(text);
	assert_int_equal(*len, strlen(text));
	presence_query_free(&q);
	return text;
}

static void a_command_that_would_pass_the_byte_budget_gets_an_error(void **ctx)
{
	const char *request = "{\"commands\":["
	                      "{\"command\":\"getPresence\",\"usernames\":[\"alice\",\"bob\"],"
	                      "\"correlationData\":\"big\"},"
	                      "{\"command\":\"getPresence\",\"usernames\":[\"z\"]}]}";
	const char *both = "{\"responses\":[{\"command\":\"getPresence\",\"presences\":[" ALICE
	                   "," BOB "],\"correlationData\":\"big\"},{\"command\":\"getPresence\","
	                   "\"presences\":[" Z "]}]}";
	char expected[512];
	size_t len;
	char *text;

	/* Exactly the size of the whole answer fits. */
	text = respond_within(*ctx, request, strlen(both), &len);
	assert_string_equal(text, both);
	presence_query_response_free(text);
	/* One byte less: commands are answered in order while the budget lasts. */
	text = respond_within(*ctx, request, strlen(both) - 1, &len);
	snprintf(expected, sizeof(expected),
	         "{\"responses\":[{\"command\":\"getPresence\",\"presences\":[" ALICE "," BOB
	         "],\"correlationData\":\"big\"},{\"command\":\"getPresence\",\"error\":\"Reply "
	         "too large: at most %zu bytes per reply\"}]}",
	         strlen(both) - 1);
	assert_string_equal(text, expected);
	presence_query_response_free(text);
	/* A command too large is skipped, and a later one that fits is still answered. */
	text = respond_within(*ctx, request, 250, &len);
	assert_string_equal(text, "{\"responses\":[{\"command\":\"getPresence\",\"error\":"
	                          "\"Reply too large: at most 250 bytes per reply\","
	                          "\"correlationData\":\"big\"},{\"command\":\"getPresence\","
	                          "\"presences\":[" Z "]}]}");
	assert_true(len <= 250);
	presence_query_response_free(text);
	/* A budget too small for anything: every command gets the error, which always goes out. */
	text = respond_within(*ctx, request, 20, &len);
	assert_string_equal(text, "{\"responses\":[{\"command\":\"getPresence\",\"error\":"
	                          "\"Reply too large: at most 20 bytes per reply\","
	                          "\"correlationData\":\"big\"},{\"command\":\"getPresence\","
	                          "\"error\":\"Reply too large: at most 20 bytes per reply\"}]}");
	presence_query_response_free(text);
}

static void free_accepts_an_empty_query_and_a_null_response(void **ctx)
{
	struct presence_query q;

	(void)ctx;
	memset(&q, 0, sizeof(q));
	presence_query_free(&q);
	presence_query_response_free(NULL);
}

static void parse_survives_every_allocation_failure(void **ctx)
{
	const char *request = "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":"
	                      "[\"alice\",\"zed\"],\"correlationData\":\"c\"},{\"command\":"
	                      "\"nope\"}]}";
	struct presence_query q;
	enum presence_err rc;
	bool parsed_as_json = false;
	long n;

	(void)ctx;
	for (n = 0; n < 10000; n++) {
		memset(&q, 0xA5, sizeof(q));
		failalloc_fail_after(n);
		rc = presence_query_parse(&q, request, strlen(request), 10);
		failalloc_reset();
		if (rc == PRESENCE_ERR_NOMEM) {
			assert_null(q.request);
			assert_null(q.commands);
			assert_int_equal(q.count, 0);
			continue;
		}
		assert_int_equal(rc, PRESENCE_OK);
		if (q.request == NULL) {
			/* cJSON's parser ran out: answered as not JSON. */
			assert_int_equal(q.count, 1);
			assert_string_equal(q.commands[0].error, "Payload not valid JSON");
			presence_query_free(&q);
			continue;
		}
		parsed_as_json = true;
		break;
	}
	assert_true(parsed_as_json);
	assert_int_equal(q.count, 2);
	assert_int_equal(q.commands[0].kind, PRESENCE_QUERY_PRESENCES);
	assert_int_equal(q.commands[1].kind, PRESENCE_QUERY_ERROR);
	presence_query_free(&q);
}

static void respond_survives_every_allocation_failure(void **ctx)
{
	const char *request = "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":"
	                      "[\"alice\",\"zed\",\"bob\"],\"correlationData\":\"c\"},"
	                      "{\"command\":\"nope\"}]}";
	const char *expected = "{\"responses\":[{\"command\":\"getPresence\",\"presences\":[" ALICE
	                       "," ZED "," BOB "],\"correlationData\":\"c\"},{\"command\":"
	                       "\"nope\",\"error\":\"Unknown command\"}]}";
	struct presence_query q;
	char *text = NULL;
	size_t len;
	long n;

	assert_int_equal(presence_query_parse(&q, request, strlen(request), 10), PRESENCE_OK);
	for (n = 0; n < 10000; n++) {
		len = 12345;
		failalloc_fail_after(n);
		text = presence_query_respond(&q, *ctx, NULL, 1u << 24, &len);
		failalloc_reset();
		if (text != NULL) {
			break;
		}
		assert_int_equal(len, 0);
	}
	assert_true(n > 0);
	assert_non_null(text);
	assert_string_equal(text, expected);
	assert_int_equal(len, strlen(expected));
	presence_query_response_free(text);
	presence_query_free(&q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	    T(parse_reads_every_command_in_order),
	    T(payload_is_read_only_up_to_its_length),
	    T(unreadable_requests_get_one_error_for_the_whole_request),
	    T(unreadable_requests_are_answered_as_dynamic_security_does),
	    T(bad_commands_get_an_error_and_the_others_an_answer),
	    T(known_offline_never_published_and_unknown_names_in_one_request),
	    T(an_empty_request_gets_an_empty_response),
	    T(names_are_escaped_in_the_unknown_answer),
	    T(the_answer_is_the_last_published_document_not_the_live_state),
	    T(the_name_budget_counts_over_the_whole_request),
	    T(a_name_asked_many_times_is_answered_once),
	    T(a_command_that_would_pass_the_byte_budget_gets_an_error),
	    T(free_accepts_an_empty_query_and_a_null_response),
	    T(parse_survives_every_allocation_failure),
	    T(respond_survives_every_allocation_failure),
#undef T
	};

	failalloc_install_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
