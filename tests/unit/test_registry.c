/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
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
#include "testing.h"

static char clients[8];
#define A ((const void *)&clients[0])
#define B ((const void *)&clients[1])
#define C ((const void *)&clients[2])

static const struct presence_state_limits limits = {
    .max_state_bytes = 8192, .max_keys = 64, .max_depth = 32};

/* A clock the tests set by hand. */
static int64_t fake_monotonic;
static int64_t fake_wall;

static int64_t fake_monotonic_ms(void *arg)
{
	(void)arg;
	return fake_monotonic;
}

static int64_t fake_wall_ms(void *arg)
{
	(void)arg;
	return fake_wall;
}

static const struct presence_clock fake_clock = {fake_monotonic_ms, fake_wall_ms, NULL};

/* A guard the tests set by hand: documents up to guard_limit may be published. */
static uint64_t guard_limit;

static bool fake_guard_allows(void *arg, const struct presence_user *user, uint64_t seq)
{
	(void)arg;
	(void)user;
	return seq <= guard_limit;
}

static const struct presence_seq_guard fake_guard = {fake_guard_allows, NULL};

static int setup(void **ctx)
{
	*ctx = presence_registry_new("presence");
	return *ctx == NULL ? -1 : 0;
}

/* A registry on the fake clock (no delay). */
static int setup_clock(void **ctx)
{
	struct presence_registry *reg = presence_registry_new("presence");

	if (reg == NULL) {
		return -1;
	}
	fake_monotonic = 100000;
	fake_wall = 1764265200000;
	presence_registry_set_clock(reg, &fake_clock);
	*ctx = reg;
	return 0;
}

/* A registry on the fake clock with a 2 s offline delay. */
static int setup_delay(void **ctx)
{
	if (setup_clock(ctx) != 0) {
		return -1;
	}
	presence_registry_set_offline_delay(*ctx, 2000);
	return 0;
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

/* Plays a new connection replacing client old, in Mosquitto 2.0's order: the new client's
 * BASIC_AUTH, then old's DISCONNECT, then the end of the loop iteration, which promotes the new
 * client as user. A take-over and a resumed persistent session both look like this. */
static void takeover(struct presence_registry *reg, const void *old, const void *new_client,
                     const char *user)
{
	assert_int_equal(presence_registry_session_pending(reg, new_client), PRESENCE_OK);
	presence_registry_session_gone(reg, old);
	promote_all(reg, user);
}

/* Flushes every dirty user, publishing every due document; returns how many were due. The
 * last one is left in *doc. */
static int flush_all(struct presence_registry *reg, struct presence_document *doc, int64_t now)
{
	struct presence_user *user;
	int published = 0;
	bool due;

	while ((user = presence_registry_dirty_next(reg)) != NULL) {
		assert_int_equal(presence_registry_document_prepare(reg, user, now, doc, &due),
		                 PRESENCE_OK);
		if (due) {
			presence_registry_document_sent(reg, user);
			published++;
		}
	}
	presence_registry_flush_done(reg);
	return published;
}

/* Sets one state key of user, asserting success. */
static void set_key(struct presence_user *user, const char *key, const char *value)
{
	char reason[PRESENCE_STATE_REASON_SIZE];
	bool changed;

	assert_int_equal(presence_state_set_key(presence_user_state(user), &limits, key,
	                                        strlen(key), value, strlen(value), &changed,
	                                        reason),
	                 PRESENCE_OK);
}

/* Merges patch (a JSON object) into the state of user, asserting success. */
static void merge_state(struct presence_user *user, const char *patch)
{
	char reason[PRESENCE_STATE_REASON_SIZE];
	bool changed;

	assert_int_equal(presence_state_merge(presence_user_state(user), &limits, patch,
	                                      strlen(patch), &changed, reason),
	                 PRESENCE_OK);
}

/* Advances the monotonic clock by ms and lets the registry expire the offline deadlines that
 * have passed. */
static void expire_after(struct presence_registry *reg, int64_t ms)
{
	fake_monotonic += ms;
	presence_registry_offline_expire(reg);
}

/* Asserts that the user named name is dirty, and nobody else. */
static void assert_only_dirty(struct presence_registry *reg, const char *name)
{
	struct presence_user *user = presence_registry_dirty_next(reg);

	assert_non_null(user);
	assert_string_equal(presence_user_name(user), name);
	assert_null(presence_registry_dirty_next(reg));
}

/* Asserts the numbers of a document: available, sessions, seq and since (ms). */
static void assert_doc(const struct presence_document *doc, bool available, unsigned int sessions,
                       uint64_t seq, int64_t since_ms)
{
	assert_int_equal(doc->available, available);
	assert_int_equal(doc->sessions, sessions);
	assert_int_equal(doc->seq, seq);
	assert_int_equal(doc->since_ms, since_ms);
}

/* Asserts that the state rendered in doc is json. */
static void assert_doc_state(const struct presence_document *doc, const char *json)
{
	assert_non_null(doc->state_json);
	assert_string_equal(doc->state_json, json);
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
	assert_doc(&doc, true, 2, 1, 1000);
	assert_int_equal(presence_registry_available_count(reg), 1);
	assert_int_equal(presence_registry_active_session_count(reg), 2);

	presence_registry_session_gone(reg, A);
	assert_true(flush_one(reg, &doc, 2000));
	assert_doc(&doc, true, 1, 2, 1000);

	presence_registry_session_gone(reg, B);
	assert_true(flush_one(reg, &doc, 3000));
	assert_doc(&doc, false, 0, 3, 3000);
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

/* Cluster mode: a user whose session was counted (sent to the cluster) and ended before the
 * cluster's document came is kept for the count of its end, then freed. */
static void counted_user_without_a_document_is_kept_for_its_end(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_user *user;

	connect_user(reg, A, "alice");
	user = presence_registry_dirty_next(reg);
	assert_non_null(user);
	presence_registry_user_counted(reg, user, 1);
	presence_registry_session_gone(reg, A);
	/* Not freed as unused: its end must be counted too. */
	user = presence_registry_dirty_next(reg);
	assert_non_null(user);
	assert_int_equal(presence_user_sessions(user), 0);
	presence_registry_user_counted(reg, user, 0);
	assert_null(presence_registry_dirty_next(reg));
	assert_null(presence_registry_user_find(reg, "alice"));
	assert_int_equal(presence_registry_user_count(reg), 0);
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

	takeover(reg, A, B, "alice");
	assert_false(flush_one(reg, &doc, 2000));
	assert_int_equal(presence_user_sessions(presence_registry_user_find(reg, "alice")), 1);
}

static void takeover_keeps_the_state(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *alice;

	connect_user(reg, A, "alice");
	alice = presence_registry_user_find(reg, "alice");
	set_key(alice, "s", "x");
	assert_true(flush_one(reg, &doc, 1000));

	takeover(reg, A, B, "alice");
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
	takeover(reg, A, B, "alice");
	assert_true(flush_one(reg, &doc, 3000));
	assert_doc(&doc, true, 1, 3, 3000);
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

	connect_user(reg, A, "alice");
	alice = presence_registry_user_find(reg, "alice");
	assert_true(flush_one(reg, &doc, 1000));

	/* A second session comes and goes, and the state is set and removed. */
	connect_user(reg, B, "alice");
	presence_registry_session_gone(reg, B);
	set_key(alice, "k", "v");
	set_key(alice, "k", "");
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

	connect_user(reg, A, "alice");
	alice = presence_registry_user_find(reg, "alice");
	set_key(alice, "status", "away");
	assert_true(flush_one(reg, &doc, 1000));
	assert_string_equal(presence_state_json(presence_user_state(alice)),
	                    "{\"status\":\"away\"}");

	presence_registry_session_gone(reg, A);
	assert_true(flush_one(reg, &doc, 2000));
	assert_false(doc.available);
	assert_true(presence_state_is_empty(presence_user_state(alice)));
	assert_string_equal(doc.state_json, "{}");
}

static void state_change_alone_publishes_with_the_same_since(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *alice;

	connect_user(reg, A, "alice");
	alice = presence_registry_user_find(reg, "alice");
	assert_true(flush_one(reg, &doc, 1000));
	merge_state(alice, "{\"a\":1}");
	presence_registry_user_changed(reg, alice);
	assert_true(flush_one(reg, &doc, 5000));
	assert_int_equal(doc.since_ms, 1000);
	assert_int_equal(doc.seq, 2);
	assert_string_equal(doc.state_json, "{\"a\":1}");
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
	bool due;

	/* Created by a state write before its first document: not known yet. */
	assert_int_equal(presence_registry_user_get(reg, "alice", &alice), PRESENCE_OK);
	pub.state_json = "unset";
	assert_false(presence_user_published(alice, &pub));
	assert_string_equal(pub.state_json, "unset");

	connect_user(reg, A, "alice");
	assert_true(flush_one(reg, &doc, 1000));
	assert_true(presence_user_published(alice, &pub));
	assert_string_equal(pub.username, "alice");
	assert_doc(&pub, true, 1, 1, 1000);
	assert_string_equal(pub.state_json, "{}");

	/* Live changes that are not published yet do not show. */
	merge_state(alice, "{\"status\":\"away\"}");
	connect_user(reg, B, "alice");
	assert_true(presence_user_published(alice, &pub));
	assert_doc(&pub, true, 1, 1, 1000);
	assert_string_equal(pub.state_json, "{}");

	/* A prepared document that failed to publish does not show either. */
	assert_ptr_equal(presence_registry_dirty_next(reg), alice);
	assert_int_equal(presence_registry_document_prepare(reg, alice, 2000, &doc, &due),
	                 PRESENCE_OK);
	assert_true(due);
	presence_registry_document_failed(reg, alice);
	presence_registry_flush_done(reg);
	assert_true(presence_user_published(alice, &pub));
	assert_int_equal(pub.seq, 1);
	assert_string_equal(pub.state_json, "{}");

	/* Once sent, it does. */
	assert_true(flush_one(reg, &doc, 3000));
	assert_true(presence_user_published(alice, &pub));
	assert_doc(&pub, true, 2, 2, 1000);
	assert_string_equal(pub.state_json, "{\"status\":\"away\"}");

	/* Offline: the final document, with the state cleared. */
	presence_registry_session_gone(reg, A);
	presence_registry_session_gone(reg, B);
	assert_true(flush_one(reg, &doc, 4000));
	assert_true(presence_user_published(alice, &pub));
	assert_doc(&pub, false, 0, 3, 4000);
	assert_string_equal(pub.state_json, "{}");
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

	char topic[64];

	assert_int_equal(presence_registry_user_get(reg, "a/b+c#d%", &user), PRESENCE_OK);
	assert_int_equal(presence_registry_topic_len(reg, user),
	                 strlen("presence/a%2Fb%2Bc%23d%25"));
	presence_registry_topic_write(reg, user, topic);
	assert_string_equal(topic, "presence/a%2Fb%2Bc%23d%25");
	assert_int_equal(presence_user_level_len(user), strlen("a%2Fb%2Bc%23d%25"));
	assert_memory_equal(presence_user_level(user), "a%2Fb%2Bc%23d%25",
	                    presence_user_level_len(user));
	assert_string_equal(presence_user_name(user), "a/b+c#d%");
}

/* A user with no session, no document and nothing waiting (a refused login's, one made for a
 * pending session's write) has nothing to say: the flush lets it go. */
static void never_available_user_with_no_document_is_dropped_at_the_flush(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_user *user;

	assert_int_equal(presence_registry_user_get(reg, "ghost", &user), PRESENCE_OK);
	set_key(user, "typing", "yes");
	presence_registry_user_changed(reg, user);
	assert_null(presence_registry_dirty_next(reg));
	assert_null(presence_registry_user_find(reg, "ghost"));
	assert_int_equal(presence_registry_user_count(reg), 0);
	assert_int_equal(presence_registry_forgotten_total(reg), 0);
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

static void reconnect_within_the_offline_delay_publishes_nothing(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *alice;

	connect_user(reg, A, "alice");
	alice = presence_registry_user_find(reg, "alice");
	assert_true(flush_one(reg, &doc, 1000));

	presence_registry_session_gone(reg, A);
	assert_true(presence_user_offline_pending(alice));
	assert_false(flush_one(reg, &doc, 2000));
	expire_after(reg, 1999);
	assert_null(presence_registry_dirty_next(reg));

	connect_user(reg, B, "alice");
	assert_false(presence_user_offline_pending(alice));
	assert_false(flush_one(reg, &doc, 3000));

	/* The cancelled deadline never fires. */
	expire_after(reg, 60000);
	assert_null(presence_registry_dirty_next(reg));
}

static void staying_away_publishes_one_unavailable_document_when_the_delay_ends(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;

	connect_user(reg, A, "alice");
	assert_true(flush_one(reg, &doc, 1000));
	fake_wall = 1764265205000;
	presence_registry_session_gone(reg, A);
	assert_false(flush_one(reg, &doc, 1764265205001));

	expire_after(reg, 1999);
	assert_null(presence_registry_dirty_next(reg));
	fake_wall += 2000;
	expire_after(reg, 1);
	assert_true(flush_one(reg, &doc, fake_wall));
	/* since is when the last session left, not when the delay ended. */
	assert_doc(&doc, false, 0, 2, 1764265205000);
	assert_false(presence_user_offline_pending(presence_registry_user_find(reg, "alice")));

	expire_after(reg, 60000);
	assert_null(presence_registry_dirty_next(reg));
}

static void offline_deadlines_are_reached_first_in_first_out(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;

	connect_user(reg, A, "alice");
	connect_user(reg, B, "bob");
	connect_user(reg, C, "carol");
	assert_int_equal(flush_all(reg, &doc, 1000), 3);
	presence_registry_session_gone(reg, A);
	fake_monotonic += 100;
	presence_registry_session_gone(reg, B);
	fake_monotonic += 100;
	presence_registry_session_gone(reg, C);
	assert_int_equal(flush_all(reg, &doc, 2000), 0);
	/* bob comes back: his deadline is dropped, the others keep their order. */
	connect_user(reg, &clients[3], "bob");
	assert_int_equal(flush_all(reg, &doc, 2000), 0);

	expire_after(reg, 1850); /* alice's deadline is 50 ms ago, carol's is 150 ms ahead. */
	assert_only_dirty(reg, "alice");

	expire_after(reg, 150);
	assert_only_dirty(reg, "carol");
}

static void session_count_change_within_the_delay_is_published(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;

	connect_user(reg, A, "alice");
	connect_user(reg, B, "alice");
	assert_true(flush_one(reg, &doc, 1000));
	assert_int_equal(doc.sessions, 2);
	presence_registry_session_gone(reg, A);
	presence_registry_session_gone(reg, B);
	assert_false(flush_one(reg, &doc, 2000));
	connect_user(reg, C, "alice");
	assert_true(flush_one(reg, &doc, 3000));
	assert_doc(&doc, true, 1, 2, 1000);
}

static void takeover_with_a_delay_publishes_nothing(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;

	connect_user(reg, A, "alice");
	assert_true(flush_one(reg, &doc, 1000));
	takeover(reg, A, B, "alice");
	assert_false(flush_one(reg, &doc, 2000));
	expire_after(reg, 60000);
	assert_null(presence_registry_dirty_next(reg));
}

static void user_never_published_as_available_does_not_wait(void **ctx)
{
	struct presence_registry *reg = *ctx;

	/* In and out within one iteration: nobody saw the user, nothing to wait for, nothing to
	 * keep. */
	connect_user(reg, A, "alice");
	presence_registry_session_gone(reg, A);
	assert_false(presence_user_offline_pending(presence_registry_user_find(reg, "alice")));
	assert_null(presence_registry_dirty_next(reg));
	assert_null(presence_registry_user_find(reg, "alice"));
}

static void state_survives_a_reconnect_within_the_delay_and_is_cleared_after_it(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *alice;

	connect_user(reg, A, "alice");
	alice = presence_registry_user_find(reg, "alice");
	set_key(alice, "status", "away");
	assert_true(flush_one(reg, &doc, 1000));
	presence_registry_session_gone(reg, A);
	assert_false(flush_one(reg, &doc, 2000));
	connect_user(reg, B, "alice");
	assert_false(flush_one(reg, &doc, 3000));
	assert_string_equal(presence_state_json(presence_user_state(alice)),
	                    "{\"status\":\"away\"}");

	presence_registry_session_gone(reg, B);
	assert_false(flush_one(reg, &doc, 4000));
	assert_false(presence_state_is_empty(presence_user_state(alice)));
	expire_after(reg, 2000);
	assert_true(flush_one(reg, &doc, 5000));
	assert_false(doc.available);
	assert_doc_state(&doc, "{}");
	assert_true(presence_state_is_empty(presence_user_state(alice)));
}

static void keep_state_keeps_the_state_while_offline(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *alice;

	presence_registry_set_offline_delay(reg, 0);
	presence_registry_set_keep_state(reg, true);
	assert_true(presence_registry_keep_state(reg));
	connect_user(reg, A, "alice");
	alice = presence_registry_user_find(reg, "alice");
	set_key(alice, "status", "away");
	assert_true(flush_one(reg, &doc, 1000));

	presence_registry_session_gone(reg, A);
	assert_true(flush_one(reg, &doc, 2000));
	assert_false(doc.available);
	assert_int_equal(doc.seq, 2);
	assert_doc_state(&doc, "{\"status\":\"away\"}");

	connect_user(reg, B, "alice");
	assert_true(flush_one(reg, &doc, 3000));
	assert_true(doc.available);
	assert_int_equal(doc.since_ms, 3000);
	assert_doc_state(&doc, "{\"status\":\"away\"}");
}

static void without_keep_state_a_disconnect_clears_the_state(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *alice;

	presence_registry_set_offline_delay(reg, 0);
	assert_false(presence_registry_keep_state(reg));
	connect_user(reg, A, "alice");
	alice = presence_registry_user_find(reg, "alice");
	set_key(alice, "status", "away");
	assert_true(flush_one(reg, &doc, 1000));
	presence_registry_session_gone(reg, A);
	assert_true(flush_one(reg, &doc, 2000));
	assert_doc_state(&doc, "{}");
	connect_user(reg, B, "alice");
	assert_true(flush_one(reg, &doc, 3000));
	assert_doc_state(&doc, "{}");
}

/* Plays the guard allowing more (a save completed): documents up to limit, held users
 * released. */
static void guard_allows_up_to(struct presence_registry *reg, uint64_t limit)
{
	guard_limit = limit;
	presence_registry_release_held(reg);
}

static void a_flush_with_nothing_due_keeps_one_copy_of_the_state(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc, pub;
	struct presence_state *st;
	struct presence_user *alice;

	connect_user(reg, A, "alice");
	alice = presence_registry_user_find(reg, "alice");
	st = presence_user_state(alice);
	set_key(alice, "a", "1");
	assert_true(flush_one(reg, &doc, 1000));
	assert_ptr_equal(presence_state_marked_json(st), presence_state_json(st));

	/* Changed and changed back: the published text is kept beside the live one until the
	 * flush, which finds nothing due and lets it go. */
	set_key(alice, "a", "2");
	set_key(alice, "a", "1");
	assert_true(presence_user_published(alice, &pub));
	assert_string_equal(pub.state_json, "{\"a\":1}");
	assert_ptr_not_equal(pub.state_json, presence_state_json(st));
	presence_registry_user_changed(reg, alice);
	assert_false(flush_one(reg, &doc, 2000));
	assert_true(presence_user_published(alice, &pub));
	assert_ptr_equal(pub.state_json, presence_state_json(st));
	assert_string_equal(pub.state_json, "{\"a\":1}");
}

static void offline_delay_without_memory_publishes_unavailability_at_once(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *user;
	char name[24];
	long n;

	for (n = 0;; n++) {
		snprintf(name, sizeof(name), "u%ld", n);
		connect_user(reg, A, name);
		assert_true(flush_one(reg, &doc, 1000));
		user = presence_registry_user_find(reg, name);
		fake_wall = 1764265200000 + n;
		failalloc_fail_after(n);
		presence_registry_session_gone(reg, A);
		failalloc_reset();
		if (presence_user_offline_pending(user)) {
			break;
		}
		/* Nothing to wait with: the unavailable document is due now, as without a delay. */
		assert_true(flush_one(reg, &doc, 5000));
		assert_doc(&doc, false, 0, 2, 5000);
		expire_after(reg, 60000);
		assert_null(presence_registry_dirty_next(reg));
	}
	assert_true(n > 0);
	assert_false(flush_one(reg, &doc, 5000));
	expire_after(reg, 2000);
	assert_true(flush_one(reg, &doc, 7000));
	assert_doc(&doc, false, 0, 2, 1764265200000 + n);
}

static void holding_without_memory_fails_the_document_and_retries_it(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *alice;
	enum presence_err err;
	bool due;
	long n;

	guard_limit = 1;
	presence_registry_set_guard(reg, &fake_guard);
	connect_user(reg, A, "alice");
	assert_int_equal(flush_all(reg, &doc, 1000), 1);
	alice = presence_registry_user_find(reg, "alice");
	presence_registry_session_gone(reg, A);
	for (n = 0;; n++) {
		assert_ptr_equal(presence_registry_dirty_next(reg), alice);
		failalloc_fail_after(n);
		err = presence_registry_document_prepare(reg, alice, 2000, &doc, &due);
		failalloc_reset();
		assert_false(due);
		if (err == PRESENCE_OK) {
			break;
		}
		assert_int_equal(err, PRESENCE_ERR_NOMEM);
		assert_int_equal(presence_registry_held_count(reg), 0);
		presence_registry_document_failed(reg, alice);
		presence_registry_flush_done(reg);
	}
	assert_true(n > 0);
	assert_int_equal(presence_registry_held_count(reg), 1);
	guard_allows_up_to(reg, 2);
	assert_int_equal(presence_registry_held_count(reg), 0);
	assert_true(flush_one(reg, &doc, 3000));
	assert_doc(&doc, false, 0, 2, 3000);
}

/* Makes alice's state change and flushes; returns whether a document was due. */
static bool alice_changes(struct presence_registry *reg, struct presence_document *doc, int n)
{
	struct presence_user *alice = presence_registry_user_find(reg, "alice");
	char value[16];

	snprintf(value, sizeof(value), "%d", n);
	set_key(alice, "n", value);
	presence_registry_user_changed(reg, alice);
	return flush_all(reg, doc, 1000 + n) == 1;
}

static void guard_holds_documents_until_it_allows_them(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	int n;

	guard_limit = 3;
	presence_registry_set_guard(reg, &fake_guard);
	connect_user(reg, A, "alice");
	assert_int_equal(flush_all(reg, &doc, 1000), 1);
	for (n = 2; n <= 3; n++) {
		assert_true(alice_changes(reg, &doc, n));
		assert_int_equal(doc.seq, n);
	}
	/* Seq 4 is not allowed yet: held, and off the dirty list. */
	assert_false(alice_changes(reg, &doc, 4));
	assert_int_equal(presence_registry_held_count(reg), 1);
	assert_null(presence_registry_dirty_next(reg));

	/* A release that allows no more holds it again. */
	guard_allows_up_to(reg, 3);
	assert_int_equal(flush_all(reg, &doc, 4000), 0);
	assert_int_equal(presence_registry_held_count(reg), 1);

	guard_allows_up_to(reg, 6);
	assert_int_equal(presence_registry_held_count(reg), 0);
	assert_int_equal(flush_all(reg, &doc, 5000), 1);
	assert_int_equal(doc.seq, 4);
	assert_doc_state(&doc, "{\"n\":4}");
	for (n = 5; n <= 6; n++) {
		assert_true(alice_changes(reg, &doc, n));
	}
	assert_false(alice_changes(reg, &doc, 7));

	/* A held user that changes again is reconsidered (and held again). */
	presence_registry_session_gone(reg, A);
	assert_int_equal(presence_registry_held_count(reg), 0);
	assert_int_equal(flush_all(reg, &doc, 6000), 0);
	assert_int_equal(presence_registry_held_count(reg), 1);
	guard_allows_up_to(reg, 7);
	assert_int_equal(flush_all(reg, &doc, 7000), 1);
	assert_false(doc.available);
	assert_int_equal(doc.seq, 7);
}

static void new_users_start_above_the_seq_floor(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;

	presence_registry_set_seq_floor(reg, 1000);
	presence_registry_set_seq_floor(reg, 10);
	assert_int_equal(presence_registry_seq_floor(reg), 1000);
	connect_user(reg, A, "alice");
	assert_true(flush_one(reg, &doc, 1000));
	assert_int_equal(doc.seq, 1001);
	assert_int_equal(doc.since_ms, 1000);
	presence_registry_session_gone(reg, A);
	assert_true(flush_one(reg, &doc, 2000));
	assert_int_equal(doc.seq, 1002);
}

static void cursors_visit_users_in_creation_order_whatever_leaves(void **ctx)
{
	struct presence_registry *reg = *ctx;
	static const char *const names[] = {"zoe", "alice", "mallory", "bob", "eve"};
	struct presence_cursor c = {0}, d = {0}, extra[PRESENCE_REGISTRY_CURSORS] = {{0}};
	struct presence_user *user;
	size_t i;

	assert_true(presence_registry_cursor_start(reg, &c));
	assert_null(presence_registry_cursor_next(reg, &c));
	assert_false(c.open);
	for (i = 0; i < 5; i++) {
		assert_int_equal(presence_registry_user_get(reg, names[i], &user), PRESENCE_OK);
	}
	assert_true(presence_registry_cursor_start(reg, &c));
	assert_true(presence_registry_cursor_start(reg, &d));
	assert_string_equal(presence_user_name(presence_registry_cursor_next(reg, &c)), "zoe");
	/* The next user of both cursors leaves, and one after it: they move past them. */
	presence_registry_user_forget(reg, presence_registry_user_find(reg, "zoe"));
	presence_registry_user_forget(reg, presence_registry_user_find(reg, "alice"));
	presence_registry_user_forget(reg, presence_registry_user_find(reg, "bob"));
	assert_int_equal(presence_registry_user_get(reg, "new", &user), PRESENCE_OK);
	assert_string_equal(presence_user_name(presence_registry_cursor_next(reg, &c)), "mallory");
	assert_string_equal(presence_user_name(presence_registry_cursor_next(reg, &c)), "eve");
	assert_string_equal(presence_user_name(presence_registry_cursor_next(reg, &c)), "new");
	assert_null(presence_registry_cursor_next(reg, &c));
	assert_string_equal(presence_user_name(presence_registry_cursor_next(reg, &d)), "mallory");
	presence_registry_cursor_stop(reg, &d);
	assert_null(presence_registry_cursor_next(reg, &d));
	/* Only so many at once. */
	for (i = 0; i < PRESENCE_REGISTRY_CURSORS; i++) {
		assert_true(presence_registry_cursor_start(reg, &extra[i]));
	}
	assert_false(presence_registry_cursor_start(reg, &c));
	for (i = 0; i < PRESENCE_REGISTRY_CURSORS; i++) {
		presence_registry_cursor_stop(reg, &extra[i]);
	}
}

static void restored_available_user_gets_a_correction(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user_record rec;
	struct presence_user *alice;
	cJSON *state = cJSON_Parse("{\"status\":\"away\"}");

	assert_int_equal(presence_registry_user_restore(reg, "alice", 7, 1000, true, state),
	                 PRESENCE_OK);
	assert_int_equal(presence_registry_user_restore(reg, "bob", 3, 900, false, NULL),
	                 PRESENCE_OK);
	alice = presence_registry_user_find(reg, "alice");
	presence_registry_user_record(alice, &rec);
	assert_string_equal(rec.username, "alice");
	assert_int_equal(rec.seq, 7);
	assert_int_equal(rec.since_ms, 1000);
	assert_true(rec.available);
	assert_string_equal(rec.state_json, "{\"status\":\"away\"}");

	/* Only alice was shown as available; bob's record matches what he is. */
	assert_int_equal(flush_all(reg, &doc, 50000), 1);
	assert_string_equal(doc.username, "alice");
	assert_doc(&doc, false, 0, 8, 50000);
	assert_doc_state(&doc, "{}");

	/* bob continues from his recorded seq. */
	connect_user(reg, A, "bob");
	assert_true(flush_one(reg, &doc, 60000));
	assert_int_equal(doc.seq, 4);
	cJSON_Delete(state);
}

static void restored_state_is_kept_with_keep_state(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	cJSON *state = cJSON_Parse("{\"status\":\"away\"}");

	presence_registry_set_keep_state(reg, true);
	assert_int_equal(presence_registry_user_restore(reg, "alice", 7, 1000, true, state),
	                 PRESENCE_OK);
	assert_int_equal(presence_registry_user_restore(reg, "bob", 3, 900, false, state),
	                 PRESENCE_OK);
	assert_int_equal(flush_all(reg, &doc, 50000), 1);
	assert_string_equal(doc.username, "alice");
	assert_false(doc.available);
	assert_doc_state(&doc, "{\"status\":\"away\"}");
	connect_user(reg, A, "bob");
	assert_true(flush_one(reg, &doc, 60000));
	assert_true(doc.available);
	assert_doc_state(&doc, "{\"status\":\"away\"}");
	cJSON_Delete(state);
}

static void restored_state_that_is_no_longer_kept_is_cleared(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	cJSON *state = cJSON_Parse("{\"status\":\"away\"}");

	/* Written with keep_state true, read with false: the offline document loses it. */
	assert_int_equal(presence_registry_user_restore(reg, "bob", 3, 900, false, state),
	                 PRESENCE_OK);
	assert_int_equal(flush_all(reg, &doc, 50000), 1);
	assert_doc(&doc, false, 0, 4, 900);
	assert_doc_state(&doc, "{}");
	cJSON_Delete(state);
}

static void restore_keeps_the_newest_record_and_refuses_bad_states_and_names(void **ctx)
{
	struct presence_registry *reg = *ctx;
	cJSON *bad_key = cJSON_Parse("{\"a/b\":1}");
	cJSON *not_object = cJSON_Parse("[1]");
	static char long_name[70000];

	struct presence_document doc;

	/* A record with a seq at least the user's replaces it; an older one changes nothing. */
	assert_int_equal(presence_registry_user_restore(reg, "alice", 1, 0, false, NULL),
	                 PRESENCE_OK);
	assert_int_equal(presence_registry_user_restore(reg, "alice", 5, 500, true, NULL),
	                 PRESENCE_OK);
	assert_int_equal(presence_registry_user_restore(reg, "alice", 2, 200, false, NULL),
	                 PRESENCE_OK);
	assert_true(presence_user_published(presence_registry_user_find(reg, "alice"), &doc));
	assert_int_equal(doc.seq, 5);
	assert_true(doc.available);
	assert_int_equal(doc.since_ms, 500);
	assert_int_equal(presence_registry_user_restore(reg, "bob", 1, 0, false, bad_key),
	                 PRESENCE_ERR_INVAL);
	assert_int_equal(presence_registry_user_restore(reg, "bob", 1, 0, false, not_object),
	                 PRESENCE_ERR_INVAL);
	memset(long_name, 'x', sizeof(long_name) - 1);
	assert_int_equal(presence_registry_user_restore(reg, long_name, 1, 0, false, NULL),
	                 PRESENCE_ERR_INVAL);
	assert_null(presence_registry_user_find(reg, "bob"));
	assert_int_equal(presence_registry_user_count(reg), 1);
	cJSON_Delete(bad_key);
	cJSON_Delete(not_object);
}

static void restore_survives_every_allocation_failure(void **ctx)
{
	struct presence_registry *reg = *ctx;
	cJSON *state = cJSON_Parse("{\"status\":\"away\",\"n\":[1,2]}");
	enum presence_err err;
	long n;

	presence_registry_set_keep_state(reg, true);
	for (n = 0;; n++) {
		failalloc_fail_after(n);
		err = presence_registry_user_restore(reg, "alice", 7, 1000, true, state);
		failalloc_reset();
		if (err == PRESENCE_OK) {
			break;
		}
		assert_int_equal(err, PRESENCE_ERR_NOMEM);
		assert_null(presence_registry_user_find(reg, "alice"));
		assert_null(presence_registry_dirty_next(reg));
	}
	assert_true(n > 3);
	assert_string_equal(
	    presence_state_json(presence_user_state(presence_registry_user_find(reg, "alice"))),
	    "{\"status\":\"away\",\"n\":[1,2]}");
	cJSON_Delete(state);
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

/* New users start at the floor; that base is not a document, so such a user is not known until
 * its first document is published. */
static void user_starting_at_the_floor_is_known_only_after_its_first_document(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *user;

	presence_registry_set_seq_floor(reg, 1000);
	assert_int_equal(presence_registry_user_get(reg, "nina", &user), PRESENCE_OK);
	assert_false(presence_user_published(user, &doc));
	assert_int_equal(presence_registry_known_count(reg), 0);

	connect_user(reg, A, "nina");
	assert_true(flush_one(reg, &doc, 1000));
	assert_int_equal(doc.seq, 1001);
	assert_true(presence_user_published(user, &doc));
	assert_int_equal(doc.seq, 1001);
	assert_int_equal(presence_registry_known_count(reg), 1);
}

/* Mosquitto 2.1: CONNECT reports an accepted connection, so the session is ACTIVE at once. */
static void connect_event_starts_an_active_session(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *user;

	assert_int_equal(presence_registry_session_connect(reg, A, "alice"), PRESENCE_OK);
	assert_true(presence_registry_session_find(reg, A, &user));
	assert_non_null(user);
	assert_string_equal(presence_user_name(user), "alice");
	assert_null(presence_registry_pending_next(reg));
	assert_true(flush_one(reg, &doc, 1000));
	assert_doc(&doc, true, 1, 1, 1000);
}

/* Mosquitto 2.1 may deliver CONNECT more than once (upstream issue 3534): it counts once. */
static void connect_event_seen_twice_counts_once(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;

	assert_int_equal(presence_registry_session_connect(reg, A, "alice"), PRESENCE_OK);
	assert_int_equal(presence_registry_session_connect(reg, A, "alice"), PRESENCE_OK);
	assert_true(flush_one(reg, &doc, 1000));
	assert_doc(&doc, true, 1, 1, 1000);
	presence_registry_session_gone(reg, A);
	assert_true(flush_one(reg, &doc, 2000));
	assert_doc(&doc, false, 0, 2, 2000);
}

/* Mosquitto 2.1: a persistent session goes offline through CLIENT_OFFLINE and gets its
 * DISCONNECT later (when it expires or is resumed): the second one is ignored. A resume is a
 * CONNECT of a new client pointer; the old pointer's DISCONNECT comes after it. */
static void offline_then_disconnect_of_a_persistent_session_counts_once(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;

	assert_int_equal(presence_registry_session_connect(reg, A, "alice"), PRESENCE_OK);
	assert_int_equal(presence_registry_session_connect(reg, B, "alice"), PRESENCE_OK);
	assert_true(flush_one(reg, &doc, 1000));
	assert_doc(&doc, true, 2, 1, 1000);
	presence_registry_session_gone(reg, A); /* CLIENT_OFFLINE */
	assert_true(flush_one(reg, &doc, 2000));
	assert_doc(&doc, true, 1, 2, 1000);
	assert_int_equal(presence_registry_session_connect(reg, C, "alice"), PRESENCE_OK);
	presence_registry_session_gone(reg, A); /* the resumed session's DISCONNECT */
	assert_true(flush_one(reg, &doc, 3000));
	assert_doc(&doc, true, 2, 3, 1000);
	assert_int_equal(presence_registry_active_session_count(reg), 2);
}

static void untracked_connect_records_nothing(void **ctx)
{
	struct presence_registry *reg = *ctx;

	assert_int_equal(presence_registry_session_connect(reg, A, NULL), PRESENCE_OK);
	assert_false(presence_registry_session_find(reg, A, NULL));
	assert_null(presence_registry_dirty_next(reg));
}

static void connect_survives_every_allocation_failure(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	enum presence_err err;
	long n;

	for (n = 0;; n++) {
		failalloc_fail_after(n);
		err = presence_registry_session_connect(reg, A, "alice");
		failalloc_reset();
		if (err == PRESENCE_OK) {
			break;
		}
		assert_int_equal(err, PRESENCE_ERR_NOMEM);
		assert_false(presence_registry_session_find(reg, A, NULL));
		assert_int_equal(presence_registry_active_session_count(reg), 0);
	}
	assert_true(n > 0);
	assert_true(flush_all(reg, &doc, 1000) == 1);
	assert_doc(&doc, true, 1, 1, 1000);
}

/* ---- forgetting, the cap, the floor, the write limit ---------------------------------------- */

/* Connects client as user, publishes, disconnects and publishes the unavailable document. */
static void come_and_go(struct presence_registry *reg, const void *client, const char *user)
{
	struct presence_document doc;

	connect_user(reg, client, user);
	assert_int_equal(flush_all(reg, &doc, fake_wall), 1);
	presence_registry_session_gone(reg, client);
	assert_int_equal(flush_all(reg, &doc, fake_wall), 1);
}

/* Takes and frees every forgotten user, checking their names in order (NULL-terminated). */
static void expect_forgotten(struct presence_registry *reg, const char *const *names)
{
	struct presence_user *user;

	for (; *names != NULL; names++) {
		user = presence_registry_forgotten_take(reg);
		assert_non_null(user);
		assert_string_equal(presence_user_name(user), *names);
		presence_user_free(user);
	}
	assert_null(presence_registry_forgotten_take(reg));
}

static void idle_user_is_forgotten_once_forget_after_has_passed(void **ctx)
{
	struct presence_registry *reg = *ctx;
	static const char *const none[] = {NULL};
	struct presence_user *user;
	struct presence_document doc;

	presence_registry_set_forget_after(reg, 60000);
	come_and_go(reg, A, "alice");
	assert_int_equal(presence_registry_known_count(reg), 1);
	fake_monotonic += 59000;
	assert_int_equal(presence_registry_forget_due(reg, 100), 0);
	fake_monotonic += 1000;
	assert_int_equal(presence_registry_forget_due(reg, 100), 1);
	/* Out of the name table at once; its values stay readable until it is freed. */
	assert_null(presence_registry_user_find(reg, "alice"));
	assert_int_equal(presence_registry_known_count(reg), 0);
	assert_int_equal(presence_registry_user_count(reg), 0);
	assert_int_equal(presence_registry_forgotten_total(reg), 1);
	assert_int_equal(presence_registry_seq_floor(reg), 2);
	user = presence_registry_forgotten_take(reg);
	assert_true(presence_user_published(user, &doc));
	assert_int_equal(doc.seq, 2);
	assert_false(doc.available);
	presence_user_free(user);
	expect_forgotten(reg, none);
}

static void forgotten_user_who_returns_is_numbered_above_every_seq_it_had(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	int n;

	presence_registry_set_forget_after(reg, 1000);
	connect_user(reg, A, "alice");
	assert_int_equal(flush_all(reg, &doc, 1000), 1);
	for (n = 2; n <= 5; n++) {
		assert_true(alice_changes(reg, &doc, n));
	}
	presence_registry_session_gone(reg, A);
	assert_int_equal(flush_all(reg, &doc, 6000), 1);
	assert_int_equal(doc.seq, 6);
	come_and_go(reg, B, "bob");
	fake_monotonic += 2000;
	assert_int_equal(presence_registry_forget_due(reg, 100), 2);
	{
		static const char *const both[] = {"alice", "bob", NULL};

		expect_forgotten(reg, both);
	}
	/* A user never seen before also starts above the floor once anyone was forgotten. */
	connect_user(reg, A, "alice");
	assert_int_equal(flush_all(reg, &doc, 9000), 1);
	assert_int_equal(doc.seq, 7);
	assert_int_equal(doc.since_ms, 9000);
	assert_doc_state(&doc, "{}");
	connect_user(reg, C, "carol");
	assert_int_equal(flush_all(reg, &doc, 9000), 1);
	assert_int_equal(doc.seq, 7);
}

static void user_online_again_is_not_forgotten_and_its_time_starts_again(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;

	presence_registry_set_forget_after(reg, 10000);
	come_and_go(reg, A, "alice");
	fake_monotonic += 9000;
	connect_user(reg, B, "alice");
	assert_int_equal(flush_all(reg, &doc, 1000), 1);
	fake_monotonic += 9000;
	assert_int_equal(presence_registry_forget_due(reg, 100), 0);
	presence_registry_session_gone(reg, B);
	assert_int_equal(flush_all(reg, &doc, 2000), 1);
	fake_monotonic += 9000;
	assert_int_equal(presence_registry_forget_due(reg, 100), 0);
	fake_monotonic += 1000;
	assert_int_equal(presence_registry_forget_due(reg, 100), 1);
	presence_user_free(presence_registry_forgotten_take(reg));
}

static void forget_due_stops_at_its_limit_and_at_users_on_a_list(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_user *alice;

	presence_registry_set_forget_after(reg, 1000);
	come_and_go(reg, A, "alice");
	come_and_go(reg, B, "bob");
	come_and_go(reg, C, "carol");
	fake_monotonic += 5000;
	/* alice is on the dirty list (a restore, a refused write): left for the next call. */
	alice = presence_registry_user_find(reg, "alice");
	presence_registry_user_changed(reg, alice);
	assert_int_equal(presence_registry_forget_due(reg, 100), 0);
	assert_ptr_equal(presence_registry_dirty_next(reg), alice);
	assert_int_equal(presence_registry_forget_due(reg, 2), 2);
	assert_int_equal(presence_registry_forget_due(reg, 2), 1);
	{
		static const char *const all[] = {"alice", "bob", "carol", NULL};

		expect_forgotten(reg, all);
	}
}

static void a_new_user_at_the_cap_makes_the_longest_offline_user_forgotten(void **ctx)
{
	struct presence_registry *reg = *ctx;
	static const char *const bob[] = {"bob", NULL};
	struct presence_user *user;

	presence_registry_set_max_users(reg, 3);
	come_and_go(reg, A, "bob");
	fake_monotonic += 1000;
	come_and_go(reg, A, "alice");
	connect_user(reg, B, "carol");
	assert_int_equal(presence_registry_user_count(reg), 3);
	assert_int_equal(presence_registry_user_get(reg, "dave", &user), PRESENCE_OK);
	assert_int_equal(presence_registry_user_count(reg), 3);
	assert_null(presence_registry_user_find(reg, "bob"));
	assert_non_null(presence_registry_user_find(reg, "alice"));
	expect_forgotten(reg, bob);
	assert_int_equal(presence_registry_seq_floor(reg), 2);
}

static void at_the_cap_with_every_user_online_a_new_name_gets_no_presence(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_user *user;

	presence_registry_set_max_users(reg, 2);
	connect_user(reg, A, "alice");
	connect_user(reg, B, "bob");
	assert_int_equal(presence_registry_user_get(reg, "carol", &user), PRESENCE_ERR_FULL);
	assert_int_equal(presence_registry_session_pending(reg, C), PRESENCE_OK);
	assert_int_equal(presence_registry_session_start(reg, C, "carol"), PRESENCE_ERR_FULL);
	assert_false(presence_registry_session_find(reg, C, NULL));
	assert_int_equal(presence_registry_session_connect(reg, C, "carol"), PRESENCE_ERR_FULL);
	assert_false(presence_registry_session_find(reg, C, NULL));
	/* A known user still gets a second session. */
	assert_int_equal(presence_registry_session_connect(reg, C, "alice"), PRESENCE_OK);
	assert_int_equal(presence_registry_user_count(reg), 2);
	assert_null(presence_registry_forgotten_take(reg));
}

static void restored_offline_users_are_forgotten_oldest_first_by_their_since(void **ctx)
{
	struct presence_registry *reg = *ctx;
	static const char *const order[] = {"old", "older_name_but_newer", NULL};
	static const char *const last[] = {"newest", NULL};
	struct presence_document doc;

	presence_registry_set_forget_after(reg, 3600000);
	/* Offline for 59 min, 61 min and 2 h, and one recorded as available. */
	assert_int_equal(
	    presence_registry_user_restore(reg, "newest", 5, fake_wall - 3540000, false, NULL),
	    PRESENCE_OK);
	assert_int_equal(presence_registry_user_restore(reg, "older_name_but_newer", 5,
	                                                fake_wall - 3660000, false, NULL),
	                 PRESENCE_OK);
	assert_int_equal(
	    presence_registry_user_restore(reg, "old", 5, fake_wall - 7200000, false, NULL),
	    PRESENCE_OK);
	assert_int_equal(presence_registry_user_restore(reg, "online", 5, 0, true, NULL),
	                 PRESENCE_OK);
	/* The correction of "online". */
	assert_int_equal(flush_all(reg, &doc, fake_wall), 1);
	assert_int_equal(presence_registry_forget_due(reg, 100), 2);
	expect_forgotten(reg, order);
	fake_monotonic += 60000;
	assert_int_equal(presence_registry_forget_due(reg, 100), 1);
	expect_forgotten(reg, last);
	/* The corrected user went offline at the flush: an hour from then. */
	assert_non_null(presence_registry_user_find(reg, "online"));
}

static void a_lowered_cap_is_enforced_oldest_first(void **ctx)
{
	struct presence_registry *reg = *ctx;
	static const char *const two[] = {"u0", "u1", NULL};
	char name[8];

	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "u%d", i);
		come_and_go(reg, A, name);
		fake_monotonic += 1000;
	}
	presence_registry_set_max_users(reg, 3);
	assert_int_equal(presence_registry_forget_due(reg, 100), 2);
	expect_forgotten(reg, two);
	assert_int_equal(presence_registry_user_count(reg), 3);
}

static void the_cluster_may_forget_a_user_on_any_list(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *alice, *bob;

	come_and_go(reg, A, "alice");
	come_and_go(reg, A, "bob");
	alice = presence_registry_user_find(reg, "alice");
	bob = presence_registry_user_find(reg, "bob");
	/* Held by the guard, then changed (a stale pointer stays in the held array). */
	guard_limit = 0;
	presence_registry_set_guard(reg, &fake_guard);
	set_key(alice, "k", "v");
	presence_registry_set_keep_state(reg, true);
	presence_registry_user_changed(reg, alice);
	assert_int_equal(flush_all(reg, &doc, 1000), 0);
	assert_int_equal(presence_registry_held_count(reg), 1);
	presence_registry_user_changed(reg, alice);
	presence_registry_user_forget(reg, alice);
	/* On the dirty list: freed when the list gets to it. */
	presence_registry_user_changed(reg, bob);
	presence_registry_user_forget(reg, bob);
	assert_null(presence_registry_user_find(reg, "alice"));
	assert_null(presence_registry_user_find(reg, "bob"));
	assert_null(presence_registry_dirty_next(reg));
	presence_registry_release_held(reg);
	assert_int_equal(presence_registry_held_count(reg), 0);
	assert_int_equal(presence_registry_forgotten_total(reg), 2);
	assert_int_equal(presence_registry_seq_floor(reg), 2);
	assert_null(presence_registry_forgotten_take(reg));
}

static void a_user_with_a_session_is_never_forgotten_or_dropped(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_user *alice;

	connect_user(reg, A, "alice");
	alice = presence_registry_user_find(reg, "alice");
	presence_registry_user_forget(reg, alice);
	assert_false(presence_registry_user_drop(reg, "alice", 100));
	assert_ptr_equal(presence_registry_user_find(reg, "alice"), alice);
}

static void drop_removes_a_user_only_up_to_the_given_seq(void **ctx)
{
	struct presence_registry *reg = *ctx;

	assert_int_equal(presence_registry_user_restore(reg, "alice", 7, 0, false, NULL),
	                 PRESENCE_OK);
	assert_false(presence_registry_user_drop(reg, "alice", 6));
	assert_true(presence_registry_user_drop(reg, "alice", 7));
	assert_false(presence_registry_user_drop(reg, "alice", 7));
	assert_null(presence_registry_user_find(reg, "alice"));
	/* It was on the dirty list: the list lets it go. */
	assert_null(presence_registry_dirty_next(reg));
	assert_int_equal(presence_registry_forgotten_total(reg), 0);
}

static void shift_moves_every_user_and_the_floor(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;

	assert_int_equal(presence_registry_user_restore(reg, "alice", 7, 0, false, NULL),
	                 PRESENCE_OK);
	presence_registry_set_seq_floor(reg, 3);
	presence_registry_shift_seqs(reg, 1000);
	assert_int_equal(presence_registry_seq_floor(reg), 1003);
	assert_true(presence_user_published(presence_registry_user_find(reg, "alice"), &doc));
	assert_int_equal(doc.seq, 1007);
}

static void write_limit_allows_a_burst_then_the_rate(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_user *alice, *bob;
	int n;

	presence_registry_set_write_limit(reg, 10, 5);
	connect_user(reg, A, "alice");
	connect_user(reg, B, "bob");
	alice = presence_registry_user_find(reg, "alice");
	bob = presence_registry_user_find(reg, "bob");
	for (n = 0; presence_registry_write_permitted(reg, alice); n++) {
		presence_registry_write_charge(reg, alice);
	}
	assert_int_equal(n, 5);
	/* Per user. */
	assert_true(presence_registry_write_permitted(reg, bob));
	/* One more every 100 ms. */
	fake_monotonic += 99;
	assert_false(presence_registry_write_permitted(reg, alice));
	fake_monotonic += 1;
	assert_true(presence_registry_write_permitted(reg, alice));
	presence_registry_write_charge(reg, alice);
	assert_false(presence_registry_write_permitted(reg, alice));
	/* Idle long enough: the whole burst again, no more. */
	fake_monotonic += 60000;
	for (n = 0; presence_registry_write_permitted(reg, alice); n++) {
		presence_registry_write_charge(reg, alice);
	}
	assert_int_equal(n, 5);
	/* No limit. */
	presence_registry_set_write_limit(reg, 0, 5);
	assert_true(presence_registry_write_permitted(reg, alice));
}

/* Issue 18: a user shown to more watchers publishes again with since = now and, with jump, seq
 * raised to the wall clock (no gap a new watcher could count); a user without a document has
 * nobody to show anything to. */
static void widening_republishes_with_seq_and_since_from_the_clock(void **ctx)
{
	struct presence_registry *reg = *ctx;
	struct presence_document doc;
	struct presence_user *alice;

	connect_user(reg, A, "alice");
	assert_true(flush_one(reg, &doc, 1000));
	assert_doc(&doc, true, 1, 1, 1000);
	alice = presence_registry_user_find(reg, "alice");
	presence_registry_user_widen(reg, alice, true);
	assert_int_equal(presence_user_seq(alice), (uint64_t)fake_wall - 1);
	assert_true(flush_one(reg, &doc, 5000));
	assert_doc(&doc, true, 1, (uint64_t)fake_wall, 5000);
	/* Then on by one, since kept. */
	connect_user(reg, B, "alice");
	assert_true(flush_one(reg, &doc, 6000));
	assert_doc(&doc, true, 2, (uint64_t)fake_wall + 1, 5000);
	/* Without the jump (the state file could not note it): seq + 1. */
	presence_registry_user_widen(reg, alice, false);
	assert_true(flush_one(reg, &doc, 7000));
	assert_doc(&doc, true, 2, (uint64_t)fake_wall + 2, 7000);
	/* A seq above the clock only grows by one. */
	fake_wall = 10;
	presence_registry_user_widen(reg, alice, true);
	assert_true(flush_one(reg, &doc, 8000));
	assert_doc(&doc, true, 2, (uint64_t)1764265200000 + 3, 8000);
	fake_wall = 1764265200000;
	/* Never published: nothing to show. */
	assert_int_equal(presence_registry_session_pending(reg, C), PRESENCE_OK);
	promote_all(reg, "bob");
	presence_registry_user_widen(reg, presence_registry_user_find(reg, "bob"), true);
	assert_true(flush_one(reg, &doc, 9000));
	assert_doc(&doc, true, 1, 1, 9000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(widening_republishes_with_seq_and_since_from_the_clock,
	                                    setup_clock, teardown),
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
#define D(name) cmocka_unit_test_setup_teardown(name, setup_delay, teardown)
#define K(name) cmocka_unit_test_setup_teardown(name, setup_clock, teardown)
	    T(two_sessions_of_one_user_count_as_one_available_user),
	    T(refused_login_is_never_counted_and_publishes_nothing),
	    T(counted_user_without_a_document_is_kept_for_its_end),
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
	    T(never_available_user_with_no_document_is_dropped_at_the_flush),
	    T(many_users_and_sessions_are_tracked_independently),
	    T(allocation_failures_leave_the_registry_consistent),
	    D(reconnect_within_the_offline_delay_publishes_nothing),
	    D(staying_away_publishes_one_unavailable_document_when_the_delay_ends),
	    D(offline_deadlines_are_reached_first_in_first_out),
	    D(session_count_change_within_the_delay_is_published),
	    D(takeover_with_a_delay_publishes_nothing),
	    D(user_never_published_as_available_does_not_wait),
	    D(state_survives_a_reconnect_within_the_delay_and_is_cleared_after_it),
	    D(keep_state_keeps_the_state_while_offline),
	    D(without_keep_state_a_disconnect_clears_the_state),
	    T(guard_holds_documents_until_it_allows_them),
	    T(new_users_start_above_the_seq_floor),
	    T(cursors_visit_users_in_creation_order_whatever_leaves),
	    T(restored_available_user_gets_a_correction),
	    T(restored_state_is_kept_with_keep_state),
	    T(restored_state_that_is_no_longer_kept_is_cleared),
	    T(restore_keeps_the_newest_record_and_refuses_bad_states_and_names),
	    T(restore_survives_every_allocation_failure),
	    T(user_starting_at_the_floor_is_known_only_after_its_first_document),
	    T(a_flush_with_nothing_due_keeps_one_copy_of_the_state),
	    D(offline_delay_without_memory_publishes_unavailability_at_once),
	    T(holding_without_memory_fails_the_document_and_retries_it),
	    T(connect_event_starts_an_active_session),
	    T(connect_event_seen_twice_counts_once),
	    T(offline_then_disconnect_of_a_persistent_session_counts_once),
	    T(untracked_connect_records_nothing),
	    T(connect_survives_every_allocation_failure),
	    K(idle_user_is_forgotten_once_forget_after_has_passed),
	    K(forgotten_user_who_returns_is_numbered_above_every_seq_it_had),
	    K(user_online_again_is_not_forgotten_and_its_time_starts_again),
	    K(forget_due_stops_at_its_limit_and_at_users_on_a_list),
	    K(a_new_user_at_the_cap_makes_the_longest_offline_user_forgotten),
	    K(at_the_cap_with_every_user_online_a_new_name_gets_no_presence),
	    K(restored_offline_users_are_forgotten_oldest_first_by_their_since),
	    K(a_lowered_cap_is_enforced_oldest_first),
	    K(the_cluster_may_forget_a_user_on_any_list),
	    K(a_user_with_a_session_is_never_forgotten_or_dropped),
	    K(drop_removes_a_user_only_up_to_the_given_seq),
	    K(shift_moves_every_user_and_the_floor),
	    K(write_limit_allows_a_burst_then_the_rate),
#undef K
#undef D
#undef T
	};

	failalloc_install_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
