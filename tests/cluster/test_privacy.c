/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Who may see whom in cluster mode (ctest label "cluster", see cluster.h): a privacy choice
 * written through one broker is kept in Redis with the user and applied on every broker (the
 * zero-length message to the watchers that lose sight, the jumped document to those that gain
 * it, the same bytes everywhere), a restarted broker gets it back from Redis, a Redis that lost
 * its data gets it back from the brokers, and groups files decide on every broker, re-read with
 * SIGHUP.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

/* Watchers that are not users (ignore_users), and one that sees everyone: it receives every
 * document a broker publishes, so that a test knows the broker published it. */
#define WATCHERS "plugin_opt_ignore_users admin,ann,gus,bob,carol\nplugin_opt_see_everyone admin\n"

/* Connects user's watcher (client id id) to b, subscribed to presence/+ at QoS 1. */
static struct client *watcher(struct broker *b, const char *id, const char *user)
{
	struct client *c = client_connect_as(b, id, user, 5);

	assert_int_equal(client_subscribe(c, "presence/+", 1), 1);
	return c;
}

/* The next message c receives on presence/<user> (others are dropped). */
static struct msg *next_of(struct client *c, const char *user)
{
	char topic[64];

	snprintf(topic, sizeof(topic), "presence/%s", user);
	for (;;) {
		struct msg *m = client_next_msg(c, 5000);

		if (m == NULL) {
			fail_msg("no message on %s", topic);
		}
		if (strcmp(m->topic, topic) == 0) {
			return m;
		}
		msg_free(m);
	}
}

/* Asserts that the next message of user c receives is the zero-length one that says c lost
 * sight of user: QoS 1, not retained. */
static void expect_vanish(struct client *c, const char *user)
{
	struct msg *m = next_of(c, user);

	if (m->payloadlen != 0) {
		fail_msg("a document instead of the zero-length message: %s", m->payload);
	}
	assert_int_equal(m->qos, 1);
	assert_false(m->retain);
	msg_free(m);
}

/* The next document of user c receives (parsed; the caller frees it), its bytes in payload
 * (size bytes). */
static cJSON *next_doc(struct client *c, const char *user, char *payload, size_t size)
{
	struct msg *m = next_of(c, user);
	cJSON *doc = msg_json(m);

	if (doc == NULL) {
		fail_msg("not a document: \"%s\" (%d bytes)", m->payload, m->payloadlen);
	}
	snprintf(payload, size, "%s", m->payload);
	msg_free(m);
	return doc;
}

static long long number(const cJSON *doc, const char *name)
{
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(doc, name);

	assert_true(cJSON_IsNumber(n));
	return (long long)n->valuedouble;
}

/* Asks b, as requester (NULL: anonymous), about user and returns whether the answer says
 * known:true (it must say one or the other). */
static bool known_to(struct broker *b, const char *requester, const char *user)
{
	struct client *q = client_connect_as(b, "querier", requester, 5);
	char request[160];
	struct msg *m;
	bool known;

	assert_int_equal(client_subscribe(q, "$CONTROL/presence/v1/response", 1), 1);
	snprintf(request, sizeof(request),
	         "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[\"%s\"]}]}", user);
	publish_text_ok(q, "$CONTROL/presence/v1", request, 1);
	m = client_next_msg(q, 5000);
	assert_non_null(m);
	known = strstr(m->payload, "\"known\":true") != NULL;
	if (!known) {
		char never[128];

		/* Exactly a never-seen user's answer. */
		snprintf(never, sizeof(never),
		         "{\"username\":\"%s\",\"available\":false,\"known\":false}", user);
		if (strstr(m->payload, never) == NULL) {
			fail_msg("unexpected answer: %s", m->payload);
		}
	}
	msg_free(m);
	client_disconnect(q);
	return known;
}

/* Takes the documents of user c receives until one has a seq above after, and returns its seq
 * (its bytes in payload, size bytes). */
static long long doc_after(struct client *c, const char *user, long long after, char *payload,
                           size_t size)
{
	for (;;) {
		cJSON *doc = next_doc(c, user, payload, size);
		long long seq = number(doc, "seq");

		cJSON_Delete(doc);
		if (seq > after) {
			return seq;
		}
	}
}

/* Starts the cluster with WATCHERS, an admin watcher on every broker (admin[i]) and alice
 * connected to b2, and returns alice's client. */
static struct client *start_with_alice(struct cluster *cl, struct client **admin)
{
	reset_seen();
	cluster_seq_gaps_allowed = true;
	cluster_start(cl, false, WATCHERS);
	for (int i = 0; i < BROKERS; i++) {
		char id[16];

		snprintf(id, sizeof(id), "admin%d", i + 1);
		admin[i] = watcher(cl->b[i], id, "admin");
	}
	return client_connect_as(cl->b[1], "alice2", "alice", 5);
}

static void invisible_through_one_broker_is_invisible_on_every_broker(void **state)
{
	struct cluster cl;
	struct client *alice, *admin[BROKERS];
	char payload[1024], first[1024];
	long long seq_hidden = 0, base, jumped;
	cJSON *doc;

	(void)state;
	alice = start_with_alice(&cl, admin);
	assert_int_equal(client_subscribe(alice, "presence/alice/#", 1), 1);
	base = await_everywhere(&cl, "alice", true, 1, "{}");
	assert_true(known_to(cl.b[0], NULL, "alice"));

	/* Rejected at once by the broker the write came to; nothing changes. */
	publish_text_ok(alice, "presence/alice/privacy", "{\"visible_to\":5}", 1);
	{
		struct msg *m = next_of(alice, "alice/error");

		assert_non_null(strstr(m->payload, "visible_to must be"));
		msg_free(m);
	}

	/* Invisible, through b2: every watcher of every broker gets one zero-length message. */
	publish_text_ok(alice, "presence/alice/privacy", "{\"visible_to\":\"nobody\"}", 1);
	for (int i = 0; i < BROKERS; i++) {
		expect_vanish(cl.w[i], "alice");
	}
	/* Then nothing more: a state write is published by Redis (admin sees it on every
	 * broker), and no other watcher gets it. */
	publish_text_ok(alice, "presence/alice/state", "{\"mood\":\"hidden\"}", 1);
	for (int i = 0; i < BROKERS; i++) {
		long long seq = doc_after(admin[i], "alice", base, payload, sizeof(payload));

		if (i == 0) {
			seq_hidden = seq;
		}
		assert_int_equal(seq, seq_hidden);
		expect_nothing(cl.w[i]);
	}
	/* Her own session still sees her. */
	assert_int_equal(doc_after(alice, "alice", base, payload, sizeof(payload)), seq_hidden);
	/* Queries on another broker: a user never seen. */
	assert_false(known_to(cl.b[0], NULL, "alice"));
	assert_false(known_to(cl.b[2], "bob", "alice"));
	assert_true(known_to(cl.b[0], "admin", "alice"));

	/* Visible again: the document with seq and since jumped, the same bytes everywhere. */
	publish_text_ok(alice, "presence/alice/privacy", "{\"visible_to\":\"everyone\"}", 1);
	jumped = await_everywhere(&cl, "alice", true, 1, "{\"mood\":\"hidden\"}");
	snprintf(first, sizeof(first), "%s", last_payload);
	doc = cJSON_Parse(first);
	assert_non_null(doc);
	/* Redis' clock in ms (this century), not one past the hidden document. */
	assert_true(jumped > seq_hidden + 1);
	assert_true(jumped > 1000000000000LL);
	assert_int_equal(number(doc, "since"), jumped);
	cJSON_Delete(doc);
	for (int i = 0; i < BROKERS; i++) {
		expect_nothing(cl.w[i]);
		client_disconnect(admin[i]);
	}
	client_disconnect(alice);
	cluster_stop(&cl);
}

static void a_restarted_broker_gets_the_choice_from_redis(void **state)
{
	struct cluster cl;
	struct client *alice, *admin, *w;
	char payload[1024];
	long long seq;

	(void)state;
	reset_seen();
	cluster_seq_gaps_allowed = true;
	cluster_start(&cl, false, WATCHERS);
	alice = client_connect_as(cl.b[1], "alice2", "alice", 5);
	await_everywhere(&cl, "alice", true, 1, "{}");
	publish_text_ok(alice, "presence/alice/privacy", "{\"visible_to\":[\"bob\"]}", 1);
	for (int i = 0; i < BROKERS; i++) {
		expect_vanish(cl.w[i], "alice");
	}

	/* b1 restarts: its snapshot brings every user's document and choice. */
	client_disconnect(cl.w[0]);
	cl.w[0] = NULL;
	broker_stop(cl.b[0]);
	cl.b[0] = broker_start(cl.conf[0]);
	await_registered(&cl, 0);
	admin = watcher(cl.b[0], "admin1", "admin");
	seq = doc_after(admin, "alice", 0, payload, sizeof(payload));
	w = watcher(cl.b[0], "carol1", "carol");
	expect_nothing(w);
	assert_false(known_to(cl.b[0], "carol", "alice"));
	assert_true(known_to(cl.b[0], "bob", "alice"));
	{
		struct client *bob = watcher(cl.b[0], "bob1", "bob");
		cJSON *doc = next_doc(bob, "alice", payload, sizeof(payload));

		assert_int_equal(number(doc, "seq"), seq);
		cJSON_Delete(doc);
		client_disconnect(bob);
	}

	/* Back to everyone through b2: the restarted broker's watchers gain sight. */
	publish_text_ok(alice, "presence/alice/privacy", "", 1);
	{
		cJSON *doc = next_doc(w, "alice", payload, sizeof(payload));

		assert_true(number(doc, "seq") > seq + 1);
		cJSON_Delete(doc);
	}
	client_disconnect(w);
	client_disconnect(admin);
	client_disconnect(alice);
	cluster_stop(&cl);
}

static void a_redis_that_lost_its_data_gets_the_choices_back(void **state)
{
	struct cluster cl;
	struct client *alice, *admin[BROKERS];
	char payload[1024];
	long long base, seq = 0;
	redisReply *reply;

	(void)state;
	alice = start_with_alice(&cl, admin);
	base = await_everywhere(&cl, "alice", true, 1, "{}");
	publish_text_ok(alice, "presence/alice/privacy", "{\"visible_to\":\"nobody\"}", 1);
	for (int i = 0; i < BROKERS; i++) {
		expect_vanish(cl.w[i], "alice");
	}

	/* Redis restarts empty: counts make alice again, without her choice, and the brokers'
	 * seeds bring it back; no broker shows her meanwhile. */
	redis_kill(cl.redis);
	for (int i = 0; i < BROKERS; i++) {
		assert_true(broker_log_wait(cl.b[i], "lost the connection to Redis", 10000));
	}
	redis_launch(cl.redis);
	for (int i = 0; i < BROKERS; i++) {
		assert_true(broker_log_wait(cl.b[i], "connected to Redis again", 10000));
	}
	publish_text_ok(alice, "presence/alice/state", "{\"mood\":\"hidden\"}", 1);
	for (int i = 0; i < BROKERS; i++) {
		for (;;) {
			long long s = doc_after(admin[i], "alice", base, payload, sizeof(payload));

			if (strstr(payload, "hidden") != NULL) {
				seq = i == 0 ? s : seq;
				assert_int_equal(s, seq);
				break;
			}
		}
		expect_nothing(cl.w[i]);
	}
	reply = redis_cmd(cl.redis, "HGET " K "u:alice priv");
	assert_int_equal(reply->type, REDIS_REPLY_STRING);
	assert_string_equal(reply->str, "{\"visible_to\":\"nobody\"}");
	freeReplyObject(reply);
	assert_false(known_to(cl.b[0], NULL, "alice"));
	for (int i = 0; i < BROKERS; i++) {
		client_disconnect(admin[i]);
	}
	client_disconnect(alice);
	cluster_stop(&cl);
}

static const char groups_before[] = "group acme\n"
                                    "user alice\n"
                                    "user ann\n"
                                    "\n"
                                    "group globex\n"
                                    "user gus\n";
static const char groups_after[] = "group acme\n"
                                   "user alice\n"
                                   "user gus\n"
                                   "\n"
                                   "group globex\n"
                                   "user ann\n";

/* Writes text to path. */
static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void groups_decide_on_every_broker_and_a_reload_jumps_through_redis(void **state)
{
	struct cluster cl;
	struct redis *redis;
	struct client *alice, *ann[BROKERS], *gus[BROKERS], *admin[BROKERS];
	char path[400], extra[800], payload[1024], seen_by_ann[1024];
	long long seq, before;

	(void)state;
	reset_seen();
	cluster_seq_gaps_allowed = true;
	redis = redis_start(false);
	snprintf(path, sizeof(path), "%s/groups", redis->dir);
	write_text(path, groups_before);
	snprintf(extra, sizeof(extra),
	         WATCHERS "plugin_opt_visibility group\nplugin_opt_groups_file %s\n", path);
	cluster_start_on(&cl, redis, extra);
	for (int i = 0; i < BROKERS; i++) {
		char id[16];

		snprintf(id, sizeof(id), "admin%d", i + 1);
		admin[i] = watcher(cl.b[i], id, "admin");
		snprintf(id, sizeof(id), "ann%d", i + 1);
		ann[i] = watcher(cl.b[i], id, "ann");
		snprintf(id, sizeof(id), "gus%d", i + 1);
		gus[i] = watcher(cl.b[i], id, "gus");
	}
	alice = client_connect_as(cl.b[1], "alice2", "alice", 5);
	/* ann (acme) sees alice on every broker, the same bytes; gus (globex) and the anonymous
	 * watchers never do. */
	for (int i = 0; i < BROKERS; i++) {
		cJSON *doc = next_doc(ann[i], "alice", payload, sizeof(payload));

		cJSON_Delete(doc);
		if (i == 0) {
			snprintf(seen_by_ann, sizeof(seen_by_ann), "%s", payload);
		}
		assert_string_equal(payload, seen_by_ann);
		seq = doc_after(admin[i], "alice", 0, payload, sizeof(payload));
		expect_nothing(gus[i]);
		expect_nothing(cl.w[i]);
	}
	assert_false(known_to(cl.b[0], "gus", "alice"));
	assert_true(known_to(cl.b[2], "ann", "alice"));

	/* The same new file on every broker, re-read with SIGHUP: ann loses sight on every
	 * broker (one zero-length message), gus gains it. Every broker asks Redis for the jump:
	 * three jumps, each published by every broker. */
	write_text(path, groups_after);
	before = seq;
	for (int i = 0; i < BROKERS; i++) {
		broker_signal(cl.b[i], SIGHUP);
		assert_true(broker_log_wait(cl.b[i], "re-read 2 groups", 5000));
	}
	for (int i = 0; i < BROKERS; i++) {
		long long s = before;

		for (int n = 0; n < BROKERS; n++) {
			s = doc_after(admin[i], "alice", s, payload, sizeof(payload));
		}
		if (i == 0) {
			seq = s;
		}
		assert_int_equal(s, seq);
	}
	assert_true(seq > before + BROKERS);
	for (int i = 0; i < BROKERS; i++) {
		struct msg *m;

		/* A jump published before this broker re-read the file still reached ann. */
		while ((m = next_of(ann[i], "alice"))->payloadlen > 0) {
			msg_free(m);
		}
		assert_false(m->retain);
		msg_free(m);
		expect_nothing(ann[i]);
		/* gus got the last jump (and maybe earlier ones). */
		for (;;) {
			cJSON *doc = next_doc(gus[i], "alice", payload, sizeof(payload));
			long long s = number(doc, "seq");

			cJSON_Delete(doc);
			assert_true(s > before);
			if (s == seq) {
				break;
			}
		}
		expect_nothing(gus[i]);
		expect_nothing(cl.w[i]);
	}
	assert_true(known_to(cl.b[0], "gus", "alice"));
	assert_false(known_to(cl.b[2], "ann", "alice"));
	for (int i = 0; i < BROKERS; i++) {
		client_disconnect(admin[i]);
		client_disconnect(ann[i]);
		client_disconnect(gus[i]);
	}
	client_disconnect(alice);
	cluster_stop(&cl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(invisible_through_one_broker_is_invisible_on_every_broker,
	                              harness_teardown),
	    cmocka_unit_test_teardown(a_restarted_broker_gets_the_choice_from_redis,
	                              harness_teardown),
	    cmocka_unit_test_teardown(a_redis_that_lost_its_data_gets_the_choices_back,
	                              harness_teardown),
	    cmocka_unit_test_teardown(
	        groups_decide_on_every_broker_and_a_reload_jumps_through_redis, harness_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
