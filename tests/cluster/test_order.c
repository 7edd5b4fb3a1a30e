/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * What cluster mode promises when things happen at once (ctest label "cluster", see
 * cluster.h): every broker publishes every document of a user in seq order through concurrent
 * changes on several brokers; a count delayed on its way to Redis never lets another broker's
 * count show its user offline; stalls of Redis shorter than a lease, and a broker whose loop is
 * busy for longer than a lease, declare nobody dead; and a second broker started with a
 * broker_id in use waits instead of fencing the first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"

/* Waits (bounded: about 10 s in steps of 10 ms) until Redis has (or, with !waiting, no longer
 * has) user waiting to go offline. */
static void await_waiting(struct cluster *cl, const char *user, bool waiting)
{
	for (int tries = 0; tries < 1000; tries++) {
		redisReply *reply = redis_cmd(cl->redis, "ZSCORE " K "grace %s", user);
		bool now = reply->type == REDIS_REPLY_STRING;
		struct timespec ts = {0, 10 * 1000 * 1000};

		freeReplyObject(reply);
		if (now == waiting) {
			return;
		}
		nanosleep(&ts, NULL);
	}
	fail_msg("%s never %s waiting to go offline in Redis", user,
	         waiting ? "started" : "stopped");
}

/* Asserts that no broker declared another (or itself) dead. */
static void nobody_declared_dead(struct cluster *cl)
{
	for (int i = 0; i < BROKERS; i++) {
		if (cl->b[i] == NULL) {
			continue;
		}
		if (broker_log_contains(cl->b[i], "declared broker") ||
		    broker_log_contains(cl->b[i], "declared this broker")) {
			fail_msg("b%d: a broker was declared dead:\n%s", i + 1,
			         broker_log(cl->b[i]));
		}
	}
}

/* The documents of user watcher i receives until one contains needle, in order (each one's seq
 * the one after the one before, by await_doc's rule); returns how many, in *docs. */
static size_t collect_until(struct cluster *cl, int i, const char *user, const char *needle,
                            char ***docs)
{
	size_t n = 0, cap = 64;

	*docs = malloc(cap * sizeof(**docs));
	assert_non_null(*docs);
	for (;;) {
		long seq;
		char *p = await_doc(cl, i, user, true, -1, NULL, &seq);

		if (n == cap) {
			cap *= 2;
			*docs = realloc(*docs, cap * sizeof(**docs));
			assert_non_null(*docs);
		}
		(*docs)[n++] = p;
		if (strstr(p, needle) != NULL) {
			return n;
		}
	}
}

/*
 * alice keeps one session on b1 and, round after round, opens sessions on b2 and b3, writes
 * her state through both at once and leaves them again (cleanly or by dropping the connection):
 * the brokers' counts and commits race in Redis, and each broker hears of its own commits
 * before the stream brings the documents in between. Every watcher receives every document,
 * seq by seq, and the same bytes as every other.
 */
static void every_document_of_concurrent_changes_reaches_every_broker_in_order(void **state)
{
	struct cluster cl;
	struct client *anchor;
	char **docs[BROKERS];
	size_t n[BROKERS];

	(void)state;
	reset_seen();
	always_available = "alice";
	cluster_start(&cl, false, "plugin_opt_max_writes_per_second 0\n");
	anchor = client_connect_as(cl.b[0], "alice0", "alice", 4);
	await_everywhere(&cl, "alice", true, 1, "{}");
	for (int round = 0; round < 12; round++) {
		struct client *c2 = client_connect_as(cl.b[1], "alice2", "alice", 4);
		struct client *c3 = client_connect_as(cl.b[2], "alice3", "alice", 5);
		char value[16];

		snprintf(value, sizeof(value), "%d", round);
		publish_text_ok(c2, "presence/alice/state/two", value, 1);
		publish_text_ok(c3, "presence/alice/state/three", value, 1);
		publish_text_ok(c2, "presence/alice/state", "{\"both\":2}", 0);
		publish_text_ok(c3, "presence/alice/state", "{\"both\":3}", 0);
		if (round % 2 == 0) {
			client_disconnect(c2);
			client_drop(c3);
		} else {
			client_drop(c2);
			client_disconnect(c3);
		}
	}
	publish_text_ok(anchor, "presence/alice/state/done", "true", 1);
	for (int i = 0; i < BROKERS; i++) {
		n[i] = collect_until(&cl, i, "alice", "\"done\":true", &docs[i]);
	}
	for (int i = 1; i < BROKERS; i++) {
		if (n[i] != n[0]) {
			fail_msg("b1 published %zu documents, b%d %zu", n[0], i + 1, n[i]);
		}
		for (size_t k = 0; k < n[0]; k++) {
			if (strcmp(docs[0][k], docs[i][k]) != 0) {
				fail_msg("document %zu differs:\n  b1 %s\n  b%d %s", k, docs[0][k],
				         i + 1, docs[i][k]);
			}
		}
	}
	/* Dozens of documents, none missed. */
	assert_true(n[0] > 24);
	for (int i = 0; i < BROKERS; i++) {
		for (size_t k = 0; k < n[i]; k++) {
			free(docs[i][k]);
		}
		free(docs[i]);
	}
	nobody_declared_dead(&cl);
	always_available = NULL;
	client_disconnect(anchor);
	await_everywhere(&cl, "alice", false, 0, "{}");
	cluster_stop(&cl);
}

/*
 * The handover: alice's session on b3 ends while her new one on b2 has started, and
 * b2's count is held up on its way to Redis (here by a relay the test freezes; in life a slow
 * network, a busy connection, a command given up at its deadline and sent again). b3's count
 * arrives first and leaves her no counted session: she must not be shown offline (which, with
 * keep_state false, would also wipe her state). She waits for b2 to confirm that it has no
 * count of her still on the way, and b2's count comes first.
 */
static void a_count_held_up_on_its_way_keeps_its_user_available(void **state)
{
	/* A lease long enough that b2, whose heartbeats are held up too, stays alive: what is
	 * tested is the order of counts, not a lease. */
	const char *timers =
	    "plugin_opt_cluster_heartbeat_ms 200\nplugin_opt_cluster_lease_ms 10000\n";
	struct redis *redis = redis_start(false);
	struct relay *relay = relay_start(redis->sock);
	struct cluster cl = {.redis = redis};
	struct client *alice3, *alice2;

	(void)state;
	reset_seen();
	for (int i = 0; i < BROKERS; i++) {
		char extra[512];

		snprintf(extra, sizeof(extra), "%s%s%s%s", timers,
		         i == 1 ? "plugin_opt_cluster_url unix:" : "",
		         i == 1 ? relay_path(relay) : "", i == 1 ? "\n" : "");
		cluster_join(&cl, i, extra);
	}
	alice3 = client_connect_as(cl.b[2], "alice3", "alice", 4);
	publish_text_ok(alice3, "presence/alice/state/mood", "here", 1);
	await_everywhere(&cl, "alice", true, 1, "{\"mood\":\"here\"}");

	always_available = "alice";
	relay_freeze(relay, true);
	alice2 = client_connect_as(cl.b[1], "alice2", "alice", 4);
	client_disconnect(alice3);
	/* b3's count is in: no session counted, she waits for the barrier. */
	await_waiting(&cl, "alice", true);
	relay_freeze(relay, false);
	/* b2's count arrives; she waits no more. */
	await_waiting(&cl, "alice", false);
	/* The next document comes right after the last one: nothing in between showed her
	 * offline, and her state is whole. */
	publish_text_ok(alice2, "presence/alice/state/mood", "still", 1);
	await_everywhere(&cl, "alice", true, 1, "{\"mood\":\"still\"}");
	nobody_declared_dead(&cl);
	always_available = NULL;
	client_disconnect(alice2);
	await_everywhere(&cl, "alice", false, 0, "{}");
	cluster_stop(&cl);
	relay_stop(relay);
}

/* Stalls Redis for ms with how ("CLIENT PAUSE" or "DEBUG SLEEP") and waits until it answers. */
static void stall(struct redis *r, const char *how, int ms)
{
	redisContext *c = redisConnectUnix(r->sock);
	char command[64];
	redisReply *reply;

	assert_true(c != NULL && c->err == 0);
	if (strcmp(how, "CLIENT PAUSE") == 0) {
		snprintf(command, sizeof(command), "CLIENT PAUSE %d ALL", ms);
		reply = redisCommand(c, command);
		assert_true(reply != NULL && reply->type == REDIS_REPLY_STATUS);
		freeReplyObject(reply);
		/* Answered when the pause ends. */
		redis_send_only(c, "PING");
	} else {
		snprintf(command, sizeof(command), "DEBUG SLEEP %d.%03d", ms / 1000, ms % 1000);
		redis_send_only(c, command);
	}
	assert_int_equal(redisGetReply(c, (void **)&reply), REDIS_OK);
	freeReplyObject(reply);
	redisFree(c);
}

/*
 * Leases are renewed every heartbeat (200 ms) and last 500 ms: a stall of Redis of 400 ms
 * outlasts the lease of a broker that renewed it more than 100 ms before the stall began, and
 * a sweep that runs right after the stall, before that broker's heartbeat, would declare it
 * dead. The stall is noticed (the cluster's timers did not run for longer than they allow) and
 * sweeps hold until every broker renewed: nobody is declared dead, nobody shown offline.
 */
static void stalls_of_redis_shorter_than_a_lease_declare_nobody_dead(void **state)
{
	struct cluster cl;
	struct client *u[BROKERS];

	(void)state;
	reset_seen();
	cluster_start(&cl, false, NULL);
	for (int i = 0; i < BROKERS; i++) {
		char id[16];

		snprintf(id, sizeof(id), "erin%d", i + 1);
		u[i] = client_connect_as(cl.b[i], id, "erin", 4);
	}
	await_everywhere(&cl, "erin", true, 3, NULL);
	always_available = "erin";
	for (int k = 0; k < 8; k++) {
		stall(cl.redis, k % 2 == 0 ? "CLIENT PAUSE" : "DEBUG SLEEP", 300 + 30 * k);
	}
	publish_text_ok(u[0], "presence/erin/state/after", "stalls", 1);
	await_everywhere(&cl, "erin", true, 3, "{\"after\":\"stalls\"}");
	nobody_declared_dead(&cl);
	always_available = NULL;
	for (int i = 0; i < BROKERS; i++) {
		client_disconnect(u[i]);
	}
	await_everywhere(&cl, "erin", false, 0, "{}");
	cluster_stop(&cl);
}

/*
 * b2's loop is busy for three leases (as when it saves a large persistence file), but alive:
 * its link keeps renewing the lease, so nobody declares it dead and its users stay available;
 * a user with sessions on b1 and b2 who leaves b1 meanwhile waits for b2 to confirm (after its
 * loop is back) and stays, counted on b2.
 */
static void a_busy_broker_loop_is_not_declared_dead(void **state)
{
	struct cluster cl;
	struct client *g1, *g2, *ctl;
	char *busy_conf;

	(void)state;
	reset_seen();
	cluster_start(&cl, false, NULL);
	/* b2 again, with the helper plugin that can keep its loop busy. */
	client_disconnect(cl.w[1]);
	broker_stop(cl.b[1]);
	busy_conf = cluster_conf(cl.redis, 1, "plugin @HELPER@\n");
	cl.b[1] = broker_start(busy_conf);
	await_registered(&cl, 1);
	cl.w[1] = client_watch(cl.b[1], "watch2b", "presence/+");
	g1 = client_connect_as(cl.b[0], "gus1", "gus", 4);
	g2 = client_connect_as(cl.b[1], "gus2", "gus", 4);
	await_everywhere(&cl, "gus", true, 2, "{}");
	always_available = "gus";
	ctl = client_connect_as(cl.b[1], "ctl", NULL, 4);
	publish_text_ok(ctl, "$CONTROL/test-helper/v1", "busy 1500", 0);
	if (!broker_log_wait(cl.b[1], "test-helper: busy for", 5000)) {
		fail_msg("b2 did not get busy");
	}
	client_disconnect(g1);
	if (!broker_log_wait(cl.b[1], "test-helper: no longer busy", 10000)) {
		fail_msg("b2 did not get back");
	}
	await_everywhere(&cl, "gus", true, 1, "{}");
	nobody_declared_dead(&cl);
	always_available = NULL;
	client_disconnect(ctl);
	client_disconnect(g2);
	await_everywhere(&cl, "gus", false, 0, "{}");
	cluster_stop(&cl);
	free(busy_conf);
}

/*
 * A copied configuration: a fourth broker starts with b1's broker_id. It does not fence b1
 * (which would make every user of b1 flap at every registration); it says so, serves MQTT and
 * publishes the cluster's documents, without counting its own sessions; once b1 stops, it
 * joins as b1.
 */
static void a_second_broker_with_a_broker_id_in_use_waits_and_fences_nobody(void **state)
{
	struct cluster cl;
	struct client *alice, *dupw, *bob;
	struct broker *dup;
	char *dupconf;
	struct msg *m;

	(void)state;
	reset_seen();
	cluster_start(&cl, false, NULL);
	alice = client_connect_as(cl.b[0], "alice1", "alice", 4);
	await_everywhere(&cl, "alice", true, 1, "{}");
	always_available = "alice";

	dupconf = cluster_conf(cl.redis, 0, NULL);
	dup = broker_start(dupconf);
	if (!broker_log_wait(dup, "is registered by another running broker", 10000) ||
	    !broker_log_wait(dup, "is in use by another running broker", 10000)) {
		fail_msg("the second b1 did not report the clash:\n%s", broker_log(dup));
	}
	/* Its subscribers get the cluster's documents. */
	dupw = client_watch(dup, "dupwatch", "presence/+");
	m = client_next_msg(dupw, 5000);
	assert_non_null(m);
	assert_string_equal(m->topic, "presence/alice");
	assert_non_null(strstr(m->payload, "\"available\":true"));
	msg_free(m);
	/* Its own sessions are not counted, and state writes through it are refused. */
	bob = client_connect_as(dup, "bob1", "bob", 4);
	assert_int_equal(client_subscribe(bob, "presence/bob/error", 1), 1);
	publish_text_ok(bob, "presence/bob/state", "{\"a\":1}", 1);
	m = client_next_msg(bob, 5000);
	assert_non_null(m);
	assert_string_equal(m->topic, "presence/bob/error");
	assert_non_null(strstr(m->payload, "unavailable"));
	msg_free(m);
	/* b1 was never fenced, nobody flapped. */
	for (int i = 0; i < BROKERS; i++) {
		expect_nothing(cl.w[i]);
	}
	assert_false(broker_log_contains(cl.b[0], "declared this broker"));
	nobody_declared_dead(&cl);

	/* b1 stops (alice leaves with it); the second b1 takes its place and counts bob. */
	always_available = NULL;
	client_disconnect(alice);
	await_everywhere(&cl, "alice", false, 0, "{}");
	client_disconnect(cl.w[0]);
	cl.w[0] = NULL;
	broker_stop(cl.b[0]);
	cl.b[0] = NULL;
	if (!broker_log_wait(dup, "broker_id b1 is free again", 10000) ||
	    !broker_log_wait(dup, "registered in the cluster as broker b1", 10000)) {
		fail_msg("the second b1 did not join once b1 stopped:\n%s", broker_log(dup));
	}
	await_everywhere(&cl, "bob", true, 1, "{}");
	client_disconnect(bob);
	await_everywhere(&cl, "bob", false, 0, "{}");
	client_disconnect(dupw);
	broker_stop(dup);
	free(dupconf);
	cluster_stop(&cl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(
	        every_document_of_concurrent_changes_reaches_every_broker_in_order,
	        harness_teardown),
	    cmocka_unit_test_teardown(a_count_held_up_on_its_way_keeps_its_user_available,
	                              harness_teardown),
	    cmocka_unit_test_teardown(stalls_of_redis_shorter_than_a_lease_declare_nobody_dead,
	                              harness_teardown),
	    cmocka_unit_test_teardown(a_busy_broker_loop_is_not_declared_dead, harness_teardown),
	    cmocka_unit_test_teardown(
	        a_second_broker_with_a_broker_id_in_use_waits_and_fences_nobody, harness_teardown),
	};

	if (getenv("PRESENCE_TEST_FILTER") != NULL) {
		cmocka_set_test_filter(getenv("PRESENCE_TEST_FILTER"));
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
