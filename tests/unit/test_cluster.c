/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Unit tests for cluster mode's broker-independent rules (cluster.h): the seq rule for documents
 * that come from Redis, the pending state writes of a broker (checks, folding, conflicts,
 * failures), the Redis URL syntax, broker ids and the reconnect backoff. No Redis and no broker:
 * what Redis would answer is played by the tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster.h"
#include "failalloc.h"
#include "testing.h"

static const struct presence_state_limits limits = {.max_state_bytes = 64, .max_keys = 4};

static struct presence_cluster_record record(const char *name, uint64_t seq, bool available,
                                             unsigned int sessions, const char *state)
{
	struct presence_cluster_record rec = {
	    .name = (char *)(uintptr_t)name,
	    .seq = seq,
	    .available = available,
	    .sessions = sessions,
	    .since_ms = 1000 + (int64_t)seq,
	    .state = (char *)(uintptr_t)state,
	};
	return rec;
}

static void record_of_a_new_user_is_published_with_its_values(void **state)
{
	struct presence_registry *reg = presence_registry_new("presence");
	struct presence_cluster_record rec = record("alice", 7, true, 2, "{\"a\":1}");
	struct presence_document doc;
	struct presence_user *user;
	bool due;

	(void)state;
	assert_int_equal(presence_cluster_apply_record(reg, &rec, false, &user, &due), PRESENCE_OK);
	assert_true(due);
	assert_true(presence_user_published(user, &doc));
	assert_string_equal(doc.username, "alice");
	assert_int_equal(doc.seq, 7);
	assert_true(doc.available);
	assert_int_equal(doc.sessions, 2);
	assert_int_equal(doc.since_ms, 1007);
	assert_string_equal(doc.state_json, "{\"a\":1}");
	/* The user's live state is the cluster's: a write applies to it. */
	assert_string_equal(presence_state_json(presence_user_state(user)), "{\"a\":1}");
	/* Sessions stay this broker's own. */
	assert_int_equal(presence_user_sessions(user), 0);
	assert_int_equal(presence_registry_known_count(reg), 1);
	presence_registry_free(reg);
}

static void older_or_repeated_records_are_ignored_and_seq_never_goes_back(void **state)
{
	struct presence_registry *reg = presence_registry_new("presence");
	struct presence_cluster_record r5 = record("alice", 5, true, 1, "{}");
	struct presence_cluster_record r4 = record("alice", 4, false, 0, "{}");
	struct presence_cluster_record r6 = record("alice", 6, false, 0, "{}");
	struct presence_document doc;
	struct presence_user *user;
	bool due;

	(void)state;
	assert_int_equal(presence_cluster_apply_record(reg, &r5, false, &user, &due), PRESENCE_OK);
	assert_true(due);
	/* The stream repeats what a reply already brought: nothing to publish. */
	assert_int_equal(presence_cluster_apply_record(reg, &r5, false, &user, &due), PRESENCE_OK);
	assert_false(due);
	assert_int_equal(presence_cluster_apply_record(reg, &r4, false, &user, &due), PRESENCE_OK);
	assert_false(due);
	/* Not even a startup snapshot goes back. */
	assert_int_equal(presence_cluster_apply_record(reg, &r4, true, &user, &due), PRESENCE_OK);
	assert_false(due);
	assert_true(presence_user_published(user, &doc));
	assert_int_equal(doc.seq, 5);
	assert_true(doc.available);
	assert_int_equal(presence_cluster_apply_record(reg, &r6, false, &user, &due), PRESENCE_OK);
	assert_true(due);
	assert_true(presence_user_published(user, &doc));
	assert_int_equal(doc.seq, 6);
	assert_false(doc.available);
	presence_registry_free(reg);
}

static void startup_snapshot_republishes_an_equal_seq(void **state)
{
	struct presence_registry *reg = presence_registry_new("presence");
	struct presence_cluster_record rec = record("alice", 3, false, 0, "{}");
	struct presence_user *user;
	bool due;

	(void)state;
	assert_int_equal(presence_registry_user_restore(reg, "alice", 3, 1, true, NULL),
	                 PRESENCE_OK);
	/* The broker restored a retained document with the same seq that may not be the
	 * cluster's: the first snapshot publishes it anyway. */
	assert_int_equal(presence_cluster_apply_record(reg, &rec, true, &user, &due), PRESENCE_OK);
	assert_true(due);
	presence_registry_free(reg);
}

static void invalid_records_change_nothing(void **state)
{
	struct presence_registry *reg = presence_registry_new("presence");
	struct presence_cluster_record bad_state = record("alice", 3, true, 1, "[1]");
	struct presence_cluster_record bad_name = record("\xff", 3, true, 1, "{}");
	struct presence_cluster_record zero = record("bob", 0, true, 1, "{}");
	struct presence_document doc;
	struct presence_user *user;
	bool due;

	(void)state;
	assert_int_equal(presence_cluster_apply_record(reg, &bad_state, false, &user, &due),
	                 PRESENCE_ERR_INVAL);
	assert_false(due);
	assert_false(presence_user_published(presence_registry_user_find(reg, "alice"), &doc));
	assert_int_equal(presence_cluster_apply_record(reg, &bad_name, false, &user, &due),
	                 PRESENCE_ERR_INVAL);
	assert_int_equal(presence_cluster_apply_record(reg, &zero, false, &user, &due),
	                 PRESENCE_ERR_INVAL);
	assert_int_equal(presence_registry_known_count(reg), 0);
	presence_registry_free(reg);
}

static void record_apply_survives_every_allocation_failure(void **state)
{
	struct presence_cluster_record rec =
	    record("a name that is longer than usual", 9, true, 1, "{\"status\":\"away\"}");
	(void)state;
	for (long n = 0;; n++) {
		struct presence_registry *reg = presence_registry_new("presence");
		struct presence_user *user;
		enum presence_err err;
		bool due = false;

		assert_non_null(reg);
		failalloc_fail_after(n);
		err = presence_cluster_apply_record(reg, &rec, false, &user, &due);
		failalloc_reset();
		if (err == PRESENCE_OK) {
			assert_true(due);
			presence_registry_free(reg);
			break;
		}
		assert_true(err == PRESENCE_ERR_NOMEM || err == PRESENCE_ERR_INVAL);
		assert_false(due);
		assert_int_equal(presence_registry_known_count(reg), 0);
		presence_registry_free(reg);
		assert_true(n < 100);
	}
}

/* Rejections reported through the callback. */
struct rejections {
	int count;
	char topic[64];
	char reason[PRESENCE_STATE_REASON_SIZE];
};

static void reject(void *arg, struct presence_user *user, const char *topic, const char *reason)
{
	struct rejections *r = arg;

	(void)user;
	r->count++;
	snprintf(r->topic, sizeof(r->topic), "%s", topic);
	snprintf(r->reason, sizeof(r->reason), "%s", reason);
}

/* A user to hang writes on (only its address is used). */
static struct presence_user *a_user(struct presence_registry *reg, const char *name)
{
	struct presence_user *user;

	assert_int_equal(presence_registry_user_get(reg, name, &user), PRESENCE_OK);
	return user;
}

static void add(struct presence_cluster_writes *w, struct presence_user *user, const char *base,
                const char *payload, bool expect_changed)
{
	char reason[PRESENCE_STATE_REASON_SIZE];
	bool changed;

	assert_int_equal(presence_cluster_write_add(
	                     w, user, base, &limits, PRESENCE_CLUSTER_WRITE_MERGE, NULL, 0, payload,
	                     strlen(payload), "presence/u/state", &changed, reason),
	                 PRESENCE_OK);
	assert_int_equal(changed, expect_changed);
}

static void writes_fold_in_order_onto_the_cluster_state(void **state)
{
	struct presence_registry *reg = presence_registry_new("presence");
	struct presence_cluster_writes *w = presence_cluster_writes_new();
	struct presence_user *u = a_user(reg, "u");
	char reason[PRESENCE_STATE_REASON_SIZE];
	char *folded;
	bool changed;

	(void)state;
	add(w, u, "{\"x\":0}", "{\"a\":1}", true);
	assert_int_equal(presence_cluster_write_add(w, u, "{\"x\":0}", &limits,
	                                            PRESENCE_CLUSTER_WRITE_SET_KEY, "b", 1, "two",
	                                            3, "presence/u/state/b", &changed, reason),
	                 PRESENCE_OK);
	assert_true(changed);
	add(w, u, "{\"x\":0}", "{\"a\":null}", true);
	assert_true(presence_cluster_write_pending(w, u));
	assert_false(presence_cluster_write_in_flight(w, u));
	assert_int_equal(
	    presence_cluster_write_fold(w, u, "{\"x\":0}", &limits, reject, NULL, &folded),
	    PRESENCE_OK);
	assert_string_equal(folded, "{\"x\":0,\"b\":\"two\"}");
	free(folded);
	assert_true(presence_cluster_write_in_flight(w, u));
	assert_false(presence_cluster_write_pending(w, u));
	presence_cluster_write_done(w, u, true, NULL, NULL, NULL);
	assert_int_equal(presence_cluster_write_users(w), 0);
	presence_cluster_writes_free(w);
	presence_registry_free(reg);
}

static void a_write_that_changes_nothing_is_not_queued(void **state)
{
	struct presence_registry *reg = presence_registry_new("presence");
	struct presence_cluster_writes *w = presence_cluster_writes_new();
	struct presence_user *u = a_user(reg, "u");

	(void)state;
	add(w, u, "{\"a\":1}", "{\"a\":1}", false);
	assert_int_equal(presence_cluster_write_users(w), 0);
	/* Behind another write it counts: it may undo that one. */
	add(w, u, "{\"a\":1}", "{\"a\":2}", true);
	add(w, u, "{\"a\":1}", "{\"a\":1}", true);
	presence_cluster_writes_free(w);
	presence_registry_free(reg);
}

static void a_write_breaking_a_limit_is_refused_at_once(void **state)
{
	struct presence_registry *reg = presence_registry_new("presence");
	struct presence_cluster_writes *w = presence_cluster_writes_new();
	struct presence_user *u = a_user(reg, "u");
	char reason[PRESENCE_STATE_REASON_SIZE] = "";
	const char *big = "{\"k\":\"0123456789012345678901234567890123456789012345678901234567\"}";
	bool changed = true;

	(void)state;
	assert_int_equal(
	    presence_cluster_write_add(w, u, "{}", &limits, PRESENCE_CLUSTER_WRITE_MERGE, NULL, 0,
	                               big, strlen(big), "presence/u/state", &changed, reason),
	    PRESENCE_ERR_TOO_LARGE);
	assert_false(changed);
	assert_true(strlen(reason) > 0);
	assert_int_equal(presence_cluster_write_add(w, u, "{}", &limits,
	                                            PRESENCE_CLUSTER_WRITE_MERGE, NULL, 0, "[1]", 3,
	                                            "presence/u/state", &changed, reason),
	                 PRESENCE_ERR_INVAL);
	assert_int_equal(presence_cluster_write_users(w), 0);
	presence_cluster_writes_free(w);
	presence_registry_free(reg);
}

static void behind_other_writes_limits_are_checked_when_folding(void **state)
{
	struct presence_registry *reg = presence_registry_new("presence");
	struct presence_cluster_writes *w = presence_cluster_writes_new();
	struct presence_user *u = a_user(reg, "u");
	char reason[PRESENCE_STATE_REASON_SIZE] = "";
	struct rejections r = {0};
	bool changed = false;
	char *folded;

	(void)state;
	add(w, u, "{}", "{\"a\":1,\"b\":1,\"c\":1}", true);
	/* Two more keys break max_keys (4) only once the first write is applied. */
	add(w, u, "{}", "{\"d\":1,\"e\":1}", true);
	/* A syntax error is still refused at once. */
	assert_int_equal(presence_cluster_write_add(w, u, "{}", &limits,
	                                            PRESENCE_CLUSTER_WRITE_MERGE, NULL, 0, "{", 1,
	                                            "presence/u/state", &changed, reason),
	                 PRESENCE_ERR_INVAL);
	assert_int_equal(presence_cluster_write_fold(w, u, "{}", &limits, reject, &r, &folded),
	                 PRESENCE_OK);
	assert_string_equal(folded, "{\"a\":1,\"b\":1,\"c\":1}");
	assert_int_equal(r.count, 1);
	free(folded);
	presence_cluster_writes_free(w);
	presence_registry_free(reg);
}

static void a_conflict_folds_the_writes_again_onto_the_newer_state(void **state)
{
	struct presence_registry *reg = presence_registry_new("presence");
	struct presence_cluster_writes *w = presence_cluster_writes_new();
	struct presence_user *u = a_user(reg, "u");
	char *folded;

	(void)state;
	add(w, u, "{}", "{\"mine\":1}", true);
	assert_int_equal(presence_cluster_write_fold(w, u, "{}", &limits, reject, NULL, &folded),
	                 PRESENCE_OK);
	assert_string_equal(folded, "{\"mine\":1}");
	free(folded);
	/* Meanwhile another broker committed {"theirs":1}; one more write arrives here. */
	add(w, u, "{}", "{\"later\":1}", true);
	presence_cluster_write_retry(w, u);
	assert_int_equal(
	    presence_cluster_write_fold(w, u, "{\"theirs\":1}", &limits, reject, NULL, &folded),
	    PRESENCE_OK);
	/* Neither key is lost, and the order is kept. */
	assert_string_equal(folded, "{\"theirs\":1,\"mine\":1,\"later\":1}");
	free(folded);
	presence_cluster_write_done(w, u, true, NULL, NULL, NULL);
	assert_false(presence_cluster_write_pending(w, u));
	presence_cluster_writes_free(w);
	presence_registry_free(reg);
}

/* A commit is answered before the stream brings its document: the writes that came meanwhile
 * fold onto the answer, not onto the older document the registry still has. */
static void a_commit_s_answer_is_the_base_of_the_next_commit(void **state)
{
	struct presence_registry *reg = presence_registry_new("presence");
	struct presence_cluster_writes *w = presence_cluster_writes_new();
	struct presence_user *u = a_user(reg, "u");
	const char *base;
	uint64_t seq = 4;
	char *folded;

	(void)state;
	/* Nothing recorded for a user without writes. */
	assert_int_equal(presence_cluster_write_rebase(w, u, 9, "{\"x\":1}"), PRESENCE_OK);
	assert_null(presence_cluster_write_base(w, u, &seq));
	add(w, u, "{}", "{\"first\":1}", true);
	assert_int_equal(presence_cluster_write_fold(w, u, "{}", &limits, reject, NULL, &folded),
	                 PRESENCE_OK);
	free(folded);
	add(w, u, "{}", "{\"second\":1}", true);
	presence_cluster_write_done(w, u, true, NULL, NULL, NULL);
	assert_int_equal(presence_cluster_write_rebase(w, u, 5, "{\"first\":1}"), PRESENCE_OK);
	/* An older answer does not replace it. */
	assert_int_equal(presence_cluster_write_rebase(w, u, 3, "{\"old\":1}"), PRESENCE_OK);
	base = presence_cluster_write_base(w, u, &seq);
	assert_string_equal(base, "{\"first\":1}");
	assert_int_equal(seq, 5);
	assert_int_equal(presence_cluster_write_fold(w, u, base, &limits, reject, NULL, &folded),
	                 PRESENCE_OK);
	assert_string_equal(folded, "{\"first\":1,\"second\":1}");
	free(folded);
	/* Once the registry has that document (or a newer one), it is the base again. */
	seq = 5;
	assert_null(presence_cluster_write_base(w, u, &seq));
	presence_cluster_write_done(w, u, true, NULL, NULL, NULL);
	assert_int_equal(presence_cluster_write_users(w), 0);
	/* Out of memory: nothing recorded, nothing lost. */
	add(w, u, "{}", "{\"third\":1}", true);
	failalloc_fail_after(0);
	assert_int_equal(presence_cluster_write_rebase(w, u, 7, "{\"y\":1}"), PRESENCE_ERR_NOMEM);
	failalloc_reset();
	seq = 0;
	assert_null(presence_cluster_write_base(w, u, &seq));
	presence_cluster_writes_free(w);
	presence_registry_free(reg);
}

static void a_write_the_newer_state_makes_too_large_is_rejected_with_a_notice(void **state)
{
	struct presence_registry *reg = presence_registry_new("presence");
	struct presence_cluster_writes *w = presence_cluster_writes_new();
	struct presence_user *u = a_user(reg, "u");
	struct rejections r = {0};
	char *folded;

	(void)state;
	add(w, u, "{}", "{\"e\":1}", true);
	/* Another broker filled the four keys the limit allows. */
	assert_int_equal(presence_cluster_write_fold(w, u, "{\"a\":1,\"b\":1,\"c\":1,\"d\":1}",
	                                             &limits, reject, &r, &folded),
	                 PRESENCE_OK);
	assert_null(folded);
	assert_int_equal(r.count, 1);
	assert_string_equal(r.topic, "presence/u/state");
	assert_int_equal(presence_cluster_write_users(w), 0);
	presence_cluster_writes_free(w);
	presence_registry_free(reg);
}

static void a_failed_commit_rejects_its_writes_but_keeps_the_later_ones(void **state)
{
	struct presence_registry *reg = presence_registry_new("presence");
	struct presence_cluster_writes *w = presence_cluster_writes_new();
	struct presence_user *u = a_user(reg, "u");
	struct rejections r = {0};
	char *folded;

	(void)state;
	add(w, u, "{}", "{\"a\":1}", true);
	add(w, u, "{}", "{\"b\":1}", true);
	assert_int_equal(presence_cluster_write_fold(w, u, "{}", &limits, reject, &r, &folded),
	                 PRESENCE_OK);
	free(folded);
	add(w, u, "{}", "{\"c\":1}", true);
	presence_cluster_write_done(w, u, false, "the cluster store is unavailable", reject, &r);
	assert_int_equal(r.count, 2);
	assert_string_equal(r.reason, "the cluster store is unavailable");
	assert_true(presence_cluster_write_pending(w, u));
	assert_int_equal(presence_cluster_write_fold(w, u, "{}", &limits, reject, &r, &folded),
	                 PRESENCE_OK);
	assert_string_equal(folded, "{\"c\":1}");
	free(folded);
	presence_cluster_write_fail_all(w, "lost", reject, &r);
	assert_int_equal(r.count, 3);
	assert_int_equal(presence_cluster_write_users(w), 0);
	presence_cluster_writes_free(w);
	presence_registry_free(reg);
}

static void writes_survive_every_allocation_failure(void **state)
{
	(void)state;
	for (long n = 0;; n++) {
		struct presence_registry *reg = presence_registry_new("presence");
		struct presence_cluster_writes *w = presence_cluster_writes_new();
		struct presence_user *u = a_user(reg, "u");
		char reason[PRESENCE_STATE_REASON_SIZE];
		enum presence_err err;
		char *folded = NULL;
		bool changed;

		add(w, u, "{}", "{\"a\":1}", true);
		failalloc_fail_after(n);
		err = presence_cluster_write_add(w, u, "{\"z\":[1,2]}", &limits,
		                                 PRESENCE_CLUSTER_WRITE_SET_KEY, "k", 1, "v", 1,
		                                 "presence/u/state/k", &changed, reason);
		if (err == PRESENCE_OK) {
			err = presence_cluster_write_fold(w, u, "{\"z\":[1,2]}", &limits, reject,
			                                  NULL, &folded);
		}
		failalloc_reset();
		if (err == PRESENCE_OK) {
			assert_string_equal(folded, "{\"z\":[1,2],\"a\":1,\"k\":\"v\"}");
			free(folded);
			presence_cluster_writes_free(w);
			presence_registry_free(reg);
			break;
		}
		assert_int_equal(err, PRESENCE_ERR_NOMEM);
		assert_null(folded);
		/* The first write is still there, whole. */
		assert_true(presence_cluster_write_pending(w, u));
		assert_int_equal(
		    presence_cluster_write_fold(w, u, "{}", &limits, reject, NULL, &folded),
		    PRESENCE_OK);
		assert_non_null(folded);
		free(folded);
		presence_cluster_writes_free(w);
		presence_registry_free(reg);
		assert_true(n < 200);
	}
}

static void endpoints_parse_as_documented(void **state)
{
	struct presence_cluster_endpoint ep;
	char reason[160], text[300];
	static const char *const refused[] = {
	    "",
	    "redis://",
	    "redis://:6379",
	    "redis://h:0",
	    "redis://h:65536",
	    "redis://h:",
	    "redis://h:12x",
	    "http://h",
	    "unix:relative",
	    "redis://[::1",
	    "redis://@h",
	    "redis://u:@h",
	    "redis://u%zz:p@h",
	    "redis://u%0a:p@h",
	    "redis://u:p%@h",
	    "rediss:/h",
	    "redis://h/0/1",
	};

	(void)state;
	assert_int_equal(
	    presence_cluster_endpoint_parse("redis://127.0.0.1:7000", &ep, reason, sizeof(reason)),
	    PRESENCE_OK);
	assert_string_equal(ep.host, "127.0.0.1");
	assert_int_equal(ep.port, 7000);
	assert_string_equal(ep.path, "");
	assert_int_equal(
	    presence_cluster_endpoint_parse("redis://redis.local", &ep, reason, sizeof(reason)),
	    PRESENCE_OK);
	assert_string_equal(ep.host, "redis.local");
	assert_int_equal(ep.port, 6379);
	assert_int_equal(
	    presence_cluster_endpoint_parse("redis://[::1]:6380/", &ep, reason, sizeof(reason)),
	    PRESENCE_OK);
	assert_string_equal(ep.host, "::1");
	assert_int_equal(ep.port, 6380);
	assert_int_equal(presence_cluster_endpoint_parse("unix:/run/redis/redis.sock", &ep, reason,
	                                                 sizeof(reason)),
	                 PRESENCE_OK);
	assert_string_equal(ep.path, "/run/redis/redis.sock");
	assert_int_equal(
	    presence_cluster_endpoint_parse("/tmp/r.sock", &ep, reason, sizeof(reason)),
	    PRESENCE_OK);
	assert_string_equal(ep.path, "/tmp/r.sock");
	presence_cluster_endpoint_describe(&ep, text, sizeof(text));
	assert_string_equal(text, "unix:/tmp/r.sock");
	/* TLS, a user and a password (percent-encoded, with '@' and ':' in it). */
	assert_int_equal(
	    presence_cluster_endpoint_parse("rediss://presence:p%40ss:w%3Ard@redis:6380", &ep,
	                                    reason, sizeof(reason)),
	    PRESENCE_OK);
	assert_true(ep.tls);
	assert_string_equal(ep.user, "presence");
	assert_string_equal(ep.password, "p@ss:w:rd");
	assert_string_equal(ep.host, "redis");
	assert_int_equal(ep.port, 6380);
	presence_cluster_endpoint_describe(&ep, text, sizeof(text));
	assert_string_equal(text, "rediss://presence@redis:6380");
	/* A password alone (requirepass); an unencoded '@' in it is taken up to the last one. */
	assert_int_equal(
	    presence_cluster_endpoint_parse("redis://:a@b@[::1]", &ep, reason, sizeof(reason)),
	    PRESENCE_OK);
	assert_false(ep.tls);
	assert_string_equal(ep.user, "");
	assert_string_equal(ep.password, "a@b");
	presence_cluster_endpoint_describe(&ep, text, sizeof(text));
	assert_string_equal(text, "redis://[::1]:6379");
	/* A user alone parses (the configuration then asks for the password). */
	assert_int_equal(
	    presence_cluster_endpoint_parse("redis://u@h", &ep, reason, sizeof(reason)),
	    PRESENCE_OK);
	assert_string_equal(ep.user, "u");
	/* A refusal never quotes the password. */
	assert_int_equal(
	    presence_cluster_endpoint_parse("redis://u:secret%zz@h", &ep, reason, sizeof(reason)),
	    PRESENCE_ERR_INVAL);
	assert_null(strstr(reason, "secret"));
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		reason[0] = '\0';
		if (presence_cluster_endpoint_parse(refused[i], &ep, reason, sizeof(reason)) !=
		    PRESENCE_ERR_INVAL) {
			fail_msg("\"%s\" was accepted", refused[i]);
		}
		assert_true(strlen(reason) > 0);
	}
}

static void broker_ids_are_short_plain_names(void **state)
{
	char long_id[66];

	(void)state;
	assert_true(presence_cluster_broker_id_valid("b1"));
	assert_true(presence_cluster_broker_id_valid("eu-west_1.broker-07"));
	assert_false(presence_cluster_broker_id_valid(""));
	assert_false(presence_cluster_broker_id_valid("b 1"));
	assert_false(presence_cluster_broker_id_valid("b:1"));
	assert_false(presence_cluster_broker_id_valid("{b}"));
	memset(long_id, 'a', 65);
	long_id[65] = '\0';
	assert_false(presence_cluster_broker_id_valid(long_id));
	long_id[64] = '\0';
	assert_true(presence_cluster_broker_id_valid(long_id));
}

static void backoff_doubles_up_to_its_cap_with_jitter(void **state)
{
	(void)state;
	assert_int_equal(presence_cluster_backoff_ms(1, 1000, 0), 50);
	assert_int_equal(presence_cluster_backoff_ms(1, 1000, 50), 100);
	assert_int_equal(presence_cluster_backoff_ms(2, 1000, 0), 100);
	assert_int_equal(presence_cluster_backoff_ms(3, 1000, 0), 200);
	for (unsigned int attempt = 1; attempt < 100; attempt++) {
		for (uint32_t rnd = 0; rnd < 2000; rnd += 37) {
			int64_t wait = presence_cluster_backoff_ms(attempt, 1000, rnd);

			assert_true(wait >= 50 && wait <= 1000);
		}
	}
	assert_true(presence_cluster_backoff_ms(20, 1000, 0) >= 500);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(record_of_a_new_user_is_published_with_its_values),
	    cmocka_unit_test(older_or_repeated_records_are_ignored_and_seq_never_goes_back),
	    cmocka_unit_test(startup_snapshot_republishes_an_equal_seq),
	    cmocka_unit_test(invalid_records_change_nothing),
	    cmocka_unit_test(record_apply_survives_every_allocation_failure),
	    cmocka_unit_test(writes_fold_in_order_onto_the_cluster_state),
	    cmocka_unit_test(a_write_that_changes_nothing_is_not_queued),
	    cmocka_unit_test(a_write_breaking_a_limit_is_refused_at_once),
	    cmocka_unit_test(behind_other_writes_limits_are_checked_when_folding),
	    cmocka_unit_test(a_conflict_folds_the_writes_again_onto_the_newer_state),
	    cmocka_unit_test(a_commit_s_answer_is_the_base_of_the_next_commit),
	    cmocka_unit_test(a_write_the_newer_state_makes_too_large_is_rejected_with_a_notice),
	    cmocka_unit_test(a_failed_commit_rejects_its_writes_but_keeps_the_later_ones),
	    cmocka_unit_test(writes_survive_every_allocation_failure),
	    cmocka_unit_test(endpoints_parse_as_documented),
	    cmocka_unit_test(broker_ids_are_short_plain_names),
	    cmocka_unit_test(backoff_doubles_up_to_its_cap_with_jitter),
	};

	failalloc_install_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
