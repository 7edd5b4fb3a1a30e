/*
 * Unit tests for the session registry: every lifecycle sequence Mosquitto 2.0 produces (see
 * registry.h), played as the adapter plays them, asserting which documents become due.
 *
 * Client pointers are addresses of elements of a local array; they are never dereferenced.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "failalloc.h"
#include "registry.h"

static char clients[8];
#define A ((const void *)&clients[0])
#define B ((const void *)&clients[1])
#define C ((const void *)&clients[2])

static const struct presence_state_limits limits = {.max_state_bytes = 8192, .max_keys = 64};

static int setup(void **ctx)
{
	*ctx = presence_registry_new("presence");
	return *ctx == NULL ? -1 : 0;
}

static int teardown(void **ctx)
{
	presence_registry_free(*ctx);
	return 0;
}

/* Plays the end of a loop iteration: promotes every pending client as the named user (all as
 * `user`, NULL = untracked). */
static void promote_all(struct presence_registry *reg, const char *user)
{
	const void *client;
	int bound = 100;

	while ((client = presence_registry_pending_next(reg)) != NULL && bound-- > 0) {
		assert_int_equal(presence_registry_session_start(reg, client, user), PRESENCE_OK);
	}
	assert_null(presence_registry_pending_next(reg));
}

/* Takes the single dirty user and returns whether a document was due (publishing it when so),
 * filling *doc. Asserts the dirty list is then empty. */
static bool flush_one(struct presence_registry *reg, struct presence_document *doc, int64_t now)
{
	struct presence_user *user = presence_registry_dirty_next(reg);
	bool due = false;

	assert_non_null(user);
	assert_int_equal(presence_registry_document_prepare(reg, user, now, doc, &due),
	                 PRESENCE_OK);
	if (due) {
		presence_registry_document_sent(reg, user);
	}
	assert_null(presence_registry_dirty_next(reg));
	return due;
}

static void connect_user(struct presence_registry *reg, const void *client, const char *user)
{
	assert_int_equal(presence_registry_session_pending(reg, client), PRESENCE_OK);
	assert_int_equal(presence_registry_session_start(reg, client, user), PRESENCE_OK);
}

static void two_sessions_of_one_user_count_as_one_available_user(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;

	assert_int_equal(presence_registry_session_pending(reg, A), PRESENCE_OK);
	assert_int_equal(presence_registry_session_pending(reg, B), PRESENCE_OK);
	promote_all(reg, "alice");
	assert_true(flush_one(reg, &doc, 1000));
	assert_string_equal(doc.username, "alice");
	assert_true(doc.available);
	assert_int_equal(doc.sessions, 2);
	assert_int_equal(doc.seq, 1);
	assert_int_equal(doc.since_ms, 1000);
	assert_int_equal(presence_registry_available_count(reg), 1);
	assert_int_equal(presence_registry_active_session_count(reg), 2);

	presence_registry_session_gone(reg, A);
	assert_true(flush_one(reg, &doc, 2000));
	assert_true(doc.available);
	assert_int_equal(doc.sessions, 1);
	assert_int_equal(doc.seq, 2);
	assert_int_equal(doc.since_ms, 1000);

	presence_registry_session_gone(reg, B);
	assert_true(flush_one(reg, &doc, 3000));
	assert_false(doc.available);
	assert_int_equal(doc.sessions, 0);
	assert_int_equal(doc.seq, 3);
	assert_int_equal(doc.since_ms, 3000);
	assert_int_equal(presence_registry_available_count(reg), 0);
	assert_int_equal(presence_registry_active_session_count(reg), 0);
}

static void refused_login_is_never_counted_and_publishes_nothing(void **ctx)
{
	struct presence_registry *reg = *ctx;

	assert_int_equal(presence_registry_session_pending(reg, A), PRESENCE_OK);
	presence_registry_session_gone(reg, A);
	assert_null(presence_registry_pending_next(reg));
	assert_null(presence_registry_dirty_next(reg));
	assert_null(presence_registry_user_find(reg, "alice"));
	assert_false(presence_registry_session_find(reg, A, NULL));
}

static void disconnect_of_unknown_client_is_ignored(void **ctx)
{
	struct presence_registry *reg = *ctx;

	presence_registry_session_gone(reg, C);
	assert_null(presence_registry_dirty_next(reg));
	assert_int_equal(presence_registry_user_count(reg), 0);
}

static void takeover_keeps_user_available_and_publishes_nothing(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;

	connect_user(reg, A, "alice");
	assert_true(flush_one(reg, &doc, 1000));

	/* Mosquitto 2.0 order: new BASIC_AUTH, old DISCONNECT, TICK. */
	assert_int_equal(presence_registry_session_pending(reg, B), PRESENCE_OK);
	presence_registry_session_gone(reg, A);
	promote_all(reg, "alice");
	assert_false(flush_one(reg, &doc, 2000));
	assert_int_equal(presence_user_sessions(presence_registry_user_find(reg, "alice")), 1);
}

static void takeover_keeps_the_state(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *alice;
	char reason[PRESENCE_STATE_REASON_SIZE];
	bool changed;

	connect_user(reg, A, "alice");
	alice = presence_registry_user_find(reg, "alice");
	assert_int_equal(presence_state_set_key(presence_user_state(alice), &limits, "s", 1, "x", 1,
	                                        &changed, reason),
	                 PRESENCE_OK);
	assert_true(flush_one(reg, &doc, 1000));

	assert_int_equal(presence_registry_session_pending(reg, B), PRESENCE_OK);
	presence_registry_session_gone(reg, A);
	promote_all(reg, "alice");
	assert_false(flush_one(reg, &doc, 2000));
	assert_string_equal(presence_state_json(presence_user_state(alice)), "{\"s\":\"x\"}");
}

static void second_disconnect_of_resumed_session_is_ignored(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;

	connect_user(reg, A, "alice");
	assert_true(flush_one(reg, &doc, 1000));
	presence_registry_session_gone(reg, A);
	assert_true(flush_one(reg, &doc, 2000));
	assert_false(doc.available);

	/* Resume: new pointer B, then a second DISCONNECT for the old context A. */
	assert_int_equal(presence_registry_session_pending(reg, B), PRESENCE_OK);
	presence_registry_session_gone(reg, A);
	promote_all(reg, "alice");
	assert_true(flush_one(reg, &doc, 3000));
	assert_true(doc.available);
	assert_int_equal(doc.sessions, 1);
	assert_int_equal(doc.seq, 3);
}

static void login_seen_again_for_a_known_client_changes_nothing(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *user;

	connect_user(reg, A, "alice");
	assert_true(flush_one(reg, &doc, 1000));
	assert_int_equal(presence_registry_session_pending(reg, A), PRESENCE_OK);
	assert_null(presence_registry_pending_next(reg));
	assert_true(presence_registry_session_find(reg, A, &user));
	assert_non_null(user);
	assert_null(presence_registry_dirty_next(reg));
}

static void pending_session_is_known_without_a_user(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_user *user = (struct presence_user *)1;

	assert_int_equal(presence_registry_session_pending(reg, A), PRESENCE_OK);
	assert_true(presence_registry_session_find(reg, A, &user));
	assert_null(user);
}

static void untracked_session_is_forgotten_at_promotion(void **ctx)
{
	struct presence_registry *reg = *ctx;

	assert_int_equal(presence_registry_session_pending(reg, A), PRESENCE_OK);
	promote_all(reg, NULL);
	assert_false(presence_registry_session_find(reg, A, NULL));
	assert_null(presence_registry_dirty_next(reg));
	presence_registry_session_gone(reg, A);
	assert_int_equal(presence_registry_active_session_count(reg), 0);
}

static void reused_client_pointer_starts_a_new_session(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;

	connect_user(reg, A, "alice");
	assert_true(flush_one(reg, &doc, 1000));
	presence_registry_session_gone(reg, A);
	assert_true(flush_one(reg, &doc, 2000));

	connect_user(reg, A, "bob");
	assert_true(flush_one(reg, &doc, 3000));
	assert_string_equal(doc.username, "bob");
	assert_int_equal(doc.seq, 1);
	assert_false(presence_user_sessions(presence_registry_user_find(reg, "alice")) > 0);
}

static void change_undone_within_an_iteration_publishes_nothing(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *alice;
	char reason[PRESENCE_STATE_REASON_SIZE];
	bool changed;

	connect_user(reg, A, "alice");
	alice = presence_registry_user_find(reg, "alice");
	assert_true(flush_one(reg, &doc, 1000));

	/* A second session comes and goes, and the state is set and removed. */
	connect_user(reg, B, "alice");
	presence_registry_session_gone(reg, B);
	assert_int_equal(presence_state_set_key(presence_user_state(alice), &limits, "k", 1, "v", 1,
	                                        &changed, reason),
	                 PRESENCE_OK);
	assert_int_equal(presence_state_set_key(presence_user_state(alice), &limits, "k", 1, "", 0,
	                                        &changed, reason),
	                 PRESENCE_OK);
	presence_registry_user_changed(reg, alice);
	assert_false(flush_one(reg, &doc, 2000));
}

static void changes_within_an_iteration_coalesce_into_one_document(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;

	connect_user(reg, A, "alice");
	connect_user(reg, B, "alice");
	connect_user(reg, C, "alice");
	presence_registry_session_gone(reg, B);
	assert_true(flush_one(reg, &doc, 1000));
	assert_int_equal(doc.sessions, 2);
	assert_int_equal(doc.seq, 1);
}

static void state_is_cleared_when_the_user_becomes_unavailable(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *alice;
	char reason[PRESENCE_STATE_REASON_SIZE];
	bool changed;

	connect_user(reg, A, "alice");
	alice = presence_registry_user_find(reg, "alice");
	assert_int_equal(presence_state_set_key(presence_user_state(alice), &limits, "status", 6,
	                                        "away", 4, &changed, reason),
	                 PRESENCE_OK);
	assert_true(flush_one(reg, &doc, 1000));
	assert_string_equal(presence_state_json(presence_user_state(alice)),
	                    "{\"status\":\"away\"}");

	presence_registry_session_gone(reg, A);
	assert_true(flush_one(reg, &doc, 2000));
	assert_false(doc.available);
	assert_true(presence_state_is_empty(presence_user_state(alice)));
	assert_int_equal(cJSON_GetArraySize(doc.state), 0);
}

static void state_change_alone_publishes_with_the_same_since(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *alice;
	char reason[PRESENCE_STATE_REASON_SIZE];
	bool changed;

	connect_user(reg, A, "alice");
	alice = presence_registry_user_find(reg, "alice");
	assert_true(flush_one(reg, &doc, 1000));
	assert_int_equal(presence_state_merge(presence_user_state(alice), &limits, "{\"a\":1}", 7,
	                                      &changed, reason),
	                 PRESENCE_OK);
	presence_registry_user_changed(reg, alice);
	assert_true(flush_one(reg, &doc, 5000));
	assert_int_equal(doc.since_ms, 1000);
	assert_int_equal(doc.seq, 2);
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(doc.state, "a")->valueint, 1);
}

static void failed_publish_is_retried_at_the_next_flush(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *user;
	bool due;

	connect_user(reg, A, "alice");
	user = presence_registry_dirty_next(reg);
	assert_int_equal(presence_registry_document_prepare(reg, user, 1000, &doc, &due),
	                 PRESENCE_OK);
	assert_true(due);
	presence_registry_document_failed(reg, user);
	assert_null(presence_registry_dirty_next(reg));
	presence_registry_flush_done(reg);

	assert_true(flush_one(reg, &doc, 2000));
	assert_int_equal(doc.seq, 1);
	assert_int_equal(doc.since_ms, 2000);
}

static void published_document_is_the_last_one_sent_not_the_live_values(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc, pub;
	struct presence_user *alice;
	const char *state_json = "unset";
	char reason[PRESENCE_STATE_REASON_SIZE];
	bool changed, due;

	/* Created by a state write before its first document: not known yet. */
	assert_int_equal(presence_registry_user_get(reg, "alice", &alice), PRESENCE_OK);
	assert_false(presence_user_published(alice, &pub, &state_json));
	assert_string_equal(state_json, "unset");

	connect_user(reg, A, "alice");
	assert_true(flush_one(reg, &doc, 1000));
	assert_true(presence_user_published(alice, &pub, &state_json));
	assert_string_equal(pub.username, "alice");
	assert_true(pub.available);
	assert_int_equal(pub.sessions, 1);
	assert_int_equal(pub.since_ms, 1000);
	assert_int_equal(pub.seq, 1);
	assert_null(pub.state);
	assert_string_equal(state_json, "{}");

	/* Live changes that are not published yet do not show. */
	assert_int_equal(presence_state_merge(presence_user_state(alice), &limits,
	                                      "{\"status\":\"away\"}", 17, &changed, reason),
	                 PRESENCE_OK);
	connect_user(reg, B, "alice");
	assert_true(presence_user_published(alice, &pub, &state_json));
	assert_int_equal(pub.sessions, 1);
	assert_int_equal(pub.seq, 1);
	assert_string_equal(state_json, "{}");

	/* A prepared document that failed to publish does not show either. */
	assert_ptr_equal(presence_registry_dirty_next(reg), alice);
	assert_int_equal(presence_registry_document_prepare(reg, alice, 2000, &doc, &due),
	                 PRESENCE_OK);
	assert_true(due);
	presence_registry_document_failed(reg, alice);
	presence_registry_flush_done(reg);
	assert_true(presence_user_published(alice, &pub, &state_json));
	assert_int_equal(pub.seq, 1);
	assert_string_equal(state_json, "{}");

	/* Once sent, it does. */
	assert_true(flush_one(reg, &doc, 3000));
	assert_true(presence_user_published(alice, &pub, &state_json));
	assert_int_equal(pub.sessions, 2);
	assert_int_equal(pub.seq, 2);
	assert_int_equal(pub.since_ms, 1000);
	assert_string_equal(state_json, "{\"status\":\"away\"}");

	/* Offline: the final document, with the state cleared. */
	presence_registry_session_gone(reg, A);
	presence_registry_session_gone(reg, B);
	assert_true(flush_one(reg, &doc, 4000));
	assert_true(presence_user_published(alice, &pub, &state_json));
	assert_false(pub.available);
	assert_int_equal(pub.sessions, 0);
	assert_int_equal(pub.since_ms, 4000);
	assert_int_equal(pub.seq, 3);
	assert_string_equal(state_json, "{}");
}

static void known_counts_users_with_a_document_once(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *bob;

	assert_int_equal(presence_registry_known_count(reg), 0);
	assert_int_equal(presence_registry_user_get(reg, "bob", &bob), PRESENCE_OK);
	assert_int_equal(presence_registry_known_count(reg), 0);
	connect_user(reg, A, "alice");
	assert_int_equal(presence_registry_known_count(reg), 0);
	assert_true(flush_one(reg, &doc, 1000));
	assert_int_equal(presence_registry_known_count(reg), 1);
	presence_registry_session_gone(reg, A);
	assert_true(flush_one(reg, &doc, 2000));
	assert_int_equal(presence_registry_known_count(reg), 1);
	connect_user(reg, B, "bob");
	assert_true(flush_one(reg, &doc, 3000));
	assert_int_equal(presence_registry_known_count(reg), 2);
	assert_int_equal(presence_registry_user_count(reg), 2);
	assert_int_equal(presence_registry_available_count(reg), 1);
}

static void user_topic_encodes_the_name(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_user *user;

	assert_int_equal(presence_registry_user_get(reg, "a/b+c#d%", &user), PRESENCE_OK);
	assert_string_equal(presence_user_topic(user), "presence/a%2Fb%2Bc%23d%25");
	assert_int_equal(presence_user_level_len(user), strlen("a%2Fb%2Bc%23d%25"));
	assert_memory_equal(presence_user_level(user), "a%2Fb%2Bc%23d%25",
	                    presence_user_level_len(user));
	assert_string_equal(presence_user_name(user), "a/b+c#d%");
}

static void never_available_user_with_no_document_publishes_nothing(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *user;

	assert_int_equal(presence_registry_user_get(reg, "ghost", &user), PRESENCE_OK);
	presence_registry_user_changed(reg, user);
	assert_false(flush_one(reg, &doc, 1000));
}

static void many_users_and_sessions_are_tracked_independently(void **ctx)
{
	struct presence_registry *reg = *ctx;
	static char many[2000];
	char name[32];
	int i;

	for (i = 0; i < 2000; i++) {
		snprintf(name, sizeof(name), "user%d", i % 500);
		connect_user(reg, &many[i], name);
	}
	assert_int_equal(presence_registry_user_count(reg), 500);
	assert_int_equal(presence_registry_available_count(reg), 500);
	assert_int_equal(presence_registry_active_session_count(reg), 2000);
	for (i = 0; i < 2000; i += 2) {
		presence_registry_session_gone(reg, &many[i]);
	}
	assert_int_equal(presence_registry_active_session_count(reg), 1000);
	assert_int_equal(presence_user_sessions(presence_registry_user_find(reg, "user7")), 4);
	assert_int_equal(presence_user_sessions(presence_registry_user_find(reg, "user8")), 0);
	assert_int_equal(presence_registry_available_count(reg), 250);
}

/* Allocation failures: each operation either succeeds or reports PRESENCE_ERR_NOMEM with the
 * registry unchanged (and consistent enough to be freed without leaks under ASan). */
static void allocation_failures_leave_the_registry_consistent(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *user;
	enum presence_err err;
	bool due;
	long n;

	for (n = 0;; n++) {
		failalloc_fail_after(n);
		err = presence_registry_session_pending(reg, A);
		failalloc_reset();
		if (err == PRESENCE_OK) {
			break;
		}
		assert_int_equal(err, PRESENCE_ERR_NOMEM);
		assert_false(presence_registry_session_find(reg, A, NULL));
		assert_null(presence_registry_pending_next(reg));
	}
	for (n = 0;; n++) {
		assert_int_equal(presence_registry_session_pending(reg, B), PRESENCE_OK);
		failalloc_fail_after(n);
		err = presence_registry_session_start(reg, B, "bob");
		failalloc_reset();
		if (err == PRESENCE_OK) {
			break;
		}
		assert_int_equal(err, PRESENCE_ERR_NOMEM);
		assert_false(presence_registry_session_find(reg, B, NULL));
		assert_null(presence_registry_user_find(reg, "bob"));
		assert_int_equal(presence_registry_active_session_count(reg), 0);
	}
	assert_int_equal(presence_registry_active_session_count(reg), 1);
	user = presence_registry_dirty_next(reg);
	assert_non_null(user);
	for (n = 0;; n++) {
		failalloc_fail_after(n);
		err = presence_registry_document_prepare(reg, user, 1000, &doc, &due);
		failalloc_reset();
		if (err == PRESENCE_OK) {
			break;
		}
		assert_int_equal(err, PRESENCE_ERR_NOMEM);
		presence_registry_document_failed(reg, user);
		presence_registry_flush_done(reg);
		assert_ptr_equal(presence_registry_dirty_next(reg), user);
	}
	assert_true(due);
	presence_registry_document_sent(reg, user);
	assert_int_equal(doc.seq, 1);
	for (n = 0; n < 64; n++) {
		failalloc_fail_after(n);
		reg = presence_registry_new("presence");
		failalloc_reset();
		presence_registry_free(reg);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	    T(two_sessions_of_one_user_count_as_one_available_user),
	    T(refused_login_is_never_counted_and_publishes_nothing),
	    T(disconnect_of_unknown_client_is_ignored),
	    T(takeover_keeps_user_available_and_publishes_nothing),
	    T(takeover_keeps_the_state),
	    T(second_disconnect_of_resumed_session_is_ignored),
	    T(login_seen_again_for_a_known_client_changes_nothing),
	    T(pending_session_is_known_without_a_user),
	    T(untracked_session_is_forgotten_at_promotion),
	    T(reused_client_pointer_starts_a_new_session),
	    T(change_undone_within_an_iteration_publishes_nothing),
	    T(changes_within_an_iteration_coalesce_into_one_document),
	    T(state_is_cleared_when_the_user_becomes_unavailable),
	    T(state_change_alone_publishes_with_the_same_since),
	    T(failed_publish_is_retried_at_the_next_flush),
	    T(published_document_is_the_last_one_sent_not_the_live_values),
	    T(known_counts_users_with_a_document_once),
	    T(user_topic_encodes_the_name),
	    T(never_available_user_with_no_document_publishes_nothing),
	    T(many_users_and_sessions_are_tracked_independently),
	    T(allocation_failures_leave_the_registry_consistent),
#undef T
	};

	failalloc_install_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
