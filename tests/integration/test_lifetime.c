/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Integration tests for what bounds the plugin over a long life: forgetting users (forget_after)
 * with their retained documents, state file records and query answers; seq across forgetting,
 * returning and restarts; the max_users cap (the oldest offline user makes room; with everyone
 * online a new name gets no presence but its login succeeds); the state-write limit with QoS 0,
 * QoS 1 and a QoS 1 retransmission; and a flood of client ids that come once.
 *
 * forget_after is whole seconds: a user is forgotten between 1 and 2 s after it went offline
 * with forget_after 1, so the tests wait for the announcement (an empty retained message) with
 * a bounded, event-driven wait.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "rawmqtt.h"

#define CONTROL "$CONTROL/presence/v1"
#define RESPONSES "$CONTROL/presence/v1/response"
#define SYS "$SYS/broker/presence/"

static const char open_options[] = "plugin_opt_auth allow\nplugin_opt_acl allow\n";

/* A config with persistence and a state file in @DIR@ (restarts keep both), plus extra. */
static char *lifetime_conf(const char *extra)
{
	static const char base[] = "listener @PORT@ 127.0.0.1\n"
	                           "allow_anonymous true\n"
	                           "log_type all\n"
	                           "persistence true\n"
	                           "persistence_location @DIR@/\n"
	                           "plugin @PLUGIN@\n"
	                           "plugin_opt_auth allow\n"
	                           "plugin_opt_acl allow\n"
	                           "plugin_opt_metrics_interval 1\n"
	                           "plugin_opt_state_file @DIR@/presence-state.json\n";
	size_t len = strlen(base) + strlen(extra) + 2;
	char *conf = malloc(len);

	assert_non_null(conf);
	snprintf(conf, len, "%s%s\n", base, extra);
	return conf;
}

/* Waits (10 s, scaled) for the announcement that user was forgotten on c: an empty message on
 * presence/<user>, not retained for a live subscriber. */
static void expect_forgotten(struct client *c, const char *user)
{
	char topic[128];
	struct msg *m = client_next_msg(c, 10000);

	snprintf(topic, sizeof(topic), "presence/%s", user);
	if (m == NULL) {
		fail_msg("%s was not forgotten within 10 s", user);
	}
	if (strcmp(m->topic, topic) != 0 || m->payloadlen != 0) {
		fail_msg("expected an empty message on %s, got on %s: %.*s", topic, m->topic,
		         m->payloadlen, m->payload);
	}
	msg_free(m);
}

/* Asks the query API about user from c (subscribed to RESPONSES) and returns whether the answer
 * says known:true. */
static bool query_known(struct client *c, const char *user)
{
	char request[256];
	struct msg *m;
	bool known;

	snprintf(request, sizeof(request),
	         "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[\"%s\"]}]}", user);
	expect_publish_ok(client_publish(c, CONTROL, request, (int)strlen(request), 1, false));
	m = client_next_msg(c, 5000);
	assert_non_null(m);
	assert_string_equal(m->topic, RESPONSES);
	known = strstr(m->payload, "\"known\":true") != NULL;
	if (!known && strstr(m->payload, "\"known\":false") == NULL) {
		fail_msg("unexpected answer: %.*s", m->payloadlen, m->payload);
	}
	msg_free(m);
	return known;
}

/* Waits (bounded) until the retained metric name has value, reading c (subscribed to SYS#). */
static void expect_metric(struct client *c, const char *name, const char *value)
{
	char topic[128];

	snprintf(topic, sizeof(topic), SYS "%s", name);
	for (int n = 0; n < 200; n++) {
		struct msg *m = client_next_msg(c, 5000);
		bool match;

		if (m == NULL) {
			break;
		}
		match = strcmp(m->topic, topic) == 0 && (size_t)m->payloadlen == strlen(value) &&
		        memcmp(m->payload, value, strlen(value)) == 0;
		msg_free(m);
		if (match) {
			return;
		}
	}
	fail_msg("metric %s never reached %s", name, value);
}

/* Counts the retained documents a new subscription to presence/+ brings (after a round trip). */
static int retained_documents(struct broker *b)
{
	struct client *c = client_watch(b, "counter", "presence/+");
	int count = 0;
	struct msg *m;

	assert_true(client_sync(c, 5000));
	while ((m = client_wait_msg(c, 0)) != NULL) {
		if (m->retain && m->payloadlen > 0) {
			count++;
		}
		msg_free(m);
	}
	client_disconnect(c);
	return count;
}

/* Whether the journal or snapshot of the state file in b's directory mentions text (NULL: no
 * file there). */
static bool state_files_mention(struct broker *b, const char *text)
{
	static const char *const names[] = {"presence-state.json", "presence-state.json.journal"};
	bool found = false;

	for (size_t i = 0; i < 2 && !found; i++) {
		char path[1024];
		FILE *f;
		char *buf;
		long len;

		snprintf(path, sizeof(path), "%s/%s", broker_dir(b), names[i]);
		f = fopen(path, "r");
		if (f == NULL) {
			continue;
		}
		fseek(f, 0, SEEK_END);
		len = ftell(f);
		rewind(f);
		buf = calloc(1, (size_t)len + 1);
		assert_non_null(buf);
		assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
		fclose(f);
		found = strstr(buf, text) != NULL;
		free(buf);
	}
	return found;
}

/* Waits (bounded) until the state file mentions text: checks after each flush the plugin logs. */
static void wait_state_mentions(struct broker *b, const char *text)
{
	for (int n = 0; n < 20; n++) {
		if (state_files_mention(b, text)) {
			return;
		}
		if (!broker_log_wait(b, "saved state of", 5000)) {
			break;
		}
	}
	fail_msg("the state file never mentioned %s", text);
}

static void a_user_offline_for_forget_after_is_forgotten_everywhere(void **state)
{
	char *conf = lifetime_conf("plugin_opt_forget_after 1");
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *q = client_connect_as(b, "asker", NULL, 4);
	struct client *sys = client_connect_as(b, "sys", NULL, 4);
	struct client *alice, *bob;
	long alice_seq;

	(void)state;
	assert_int_equal(client_subscribe(q, RESPONSES, 1), 1);
	assert_int_equal(client_subscribe(sys, SYS "users/#", 0), 0);
	alice = client_connect_as(b, "alice1", "alice", 4);
	expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}");
	bob = client_connect_as(b, "bob1", "bob", 4);
	expect_doc(w, "presence/bob", "bob", true, 1, "{}");
	client_disconnect(alice);
	alice_seq = expect_doc(w, "presence/alice", "alice", false, 0, "{}");
	assert_true(query_known(q, "alice"));

	/* A second later: an empty message for watchers, no retained document, no answer. */
	expect_forgotten(w, "alice");
	assert_false(query_known(q, "alice"));
	assert_true(query_known(q, "bob"));
	assert_int_equal(retained_documents(b), 1);
	/* (A round publishes users/known before users/forgotten.) */
	expect_metric(sys, "users/known", "1");
	expect_metric(sys, "users/forgotten", "1");
	/* The state file says so once it is written (about a second). */
	wait_state_mentions(b, "{\"forget\":\"alice\",");

	/* Across a restart she stays forgotten, and comes back above every seq she had. */
	broker_restart(&b, conf, false);
	client_drop(w);
	client_drop(q);
	client_drop(sys);
	client_drop(bob);
	w = client_watch(b, "watcher2", "presence/+");
	q = client_connect_as(b, "asker2", NULL, 4);
	assert_int_equal(client_subscribe(q, RESPONSES, 1), 1);
	assert_false(query_known(q, "alice"));
	client_drain(w);
	alice = client_connect_as(b, "alice1", "alice", 4);
	assert_true(expect_doc(w, "presence/alice", "alice", true, 1, "{}") > alice_seq);
	client_disconnect(alice);
	client_disconnect(q);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* Takes every document queued on w (draining first with a round trip), checking that each
 * user's seq only grows (a retained document a new subscription brings may repeat the last one
 * seen); max is the highest seq seen per user of two users (a, b). */
static void check_seq(struct client *w, long max[2])
{
	struct msg *m;

	assert_true(client_sync(w, 5000));
	while ((m = client_wait_msg(w, 0)) != NULL) {
		int i = strcmp(m->topic, "presence/a") == 0 ? 0 : 1;

		if (m->payloadlen > 0) {
			cJSON *json = msg_json(m);
			long seq = (long)cJSON_GetObjectItemCaseSensitive(json, "seq")->valuedouble;

			if (seq < max[i] || (seq == max[i] && !m->retain)) {
				fail_msg("%s: seq %ld after %ld", m->topic, seq, max[i]);
			}
			max[i] = seq;
			cJSON_Delete(json);
		}
		msg_free(m);
	}
}

static void seq_never_goes_backwards_across_forgetting_returning_and_restarts(void **state)
{
	char *conf = lifetime_conf("plugin_opt_forget_after 1");
	struct broker *b = broker_start(conf);
	long max[2] = {0, 0};
	int round;

	(void)state;
	for (round = 0; round < 3; round++) {
		struct client *w = client_watch(b, "watcher", "presence/+");
		struct client *a = client_connect_as(b, "a1", "a", 4);
		struct client *c = client_connect_as(b, "b1", "b", 4);

		/* a goes away and is forgotten; b stays. */
		for (int i = 0; i < 3; i++) {
			char value[8];

			snprintf(value, sizeof(value), "%d", i);
			publish_text_ok(a, "presence/a/state/n", value, 1);
		}
		client_disconnect(a);
		check_seq(w, max);
		expect_forgotten(w, "a");
		/* Back, then gone and forgotten again, then back. */
		a = client_connect_as(b, "a1", "a", 4);
		check_seq(w, max);
		client_disconnect(a);
		expect_doc(w, "presence/a", "a", false, 0, "{}");
		expect_forgotten(w, "a");
		a = client_connect_as(b, "a1", "a", 4);
		check_seq(w, max);
		/* A crash (what was not written yet is covered by the seq margin) or a clean
		 * stop. */
		client_drop(a);
		client_drop(c);
		check_seq(w, max);
		client_drop(w);
		broker_restart(&b, conf, round % 2 == 0);
		w = client_watch(b, "watcher", "presence/+");
		/* The retained corrections count too. */
		check_seq(w, max);
		client_disconnect(w);
	}
	broker_stop(b);
	free(conf);
}

static void at_max_users_the_user_offline_the_longest_makes_room(void **state)
{
	char *conf = lifetime_conf("plugin_opt_max_users 3");
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *sys = client_connect_as(b, "sys", NULL, 4);
	struct client *u[5];
	char *log;

	(void)state;
	assert_int_equal(client_subscribe(sys, SYS "#", 0), 0);
	for (int i = 0; i < 3; i++) {
		char id[8], name[8], topic[16];

		snprintf(id, sizeof(id), "c%d", i);
		snprintf(name, sizeof(name), "u%d", i);
		snprintf(topic, sizeof(topic), "presence/u%d", i);
		u[i] = client_connect_as(b, id, name, 4);
		expect_doc(w, topic, name, true, 1, "{}");
	}
	/* u1 leaves first, then u0: u1 has been offline the longest. */
	client_disconnect(u[1]);
	expect_doc(w, "presence/u1", "u1", false, 0, "{}");
	client_disconnect(u[0]);
	expect_doc(w, "presence/u0", "u0", false, 0, "{}");
	u[3] = client_connect_as(b, "c3", "u3", 4);
	expect_forgotten(w, "u1");
	expect_doc(w, "presence/u3", "u3", true, 1, "{}");
	expect_metric(sys, "users/forgotten", "1");

	/* Everyone known is online: a new name logs in but gets no presence. */
	u[1] = client_connect_as(b, "c1", "u1", 4);
	expect_forgotten(w, "u0");
	expect_doc(w, "presence/u1", "u1", true, 1, "{}");
	u[4] = client_connect_as(b, "c4", "u4", 4);
	expect_metric(sys, "sessions/untracked", "1");
	expect_nothing(w);
	log = broker_log(b);
	assert_non_null(strstr(log,
	                       "max_users (3) users are known and every one of them is online: "
	                       "the session of client c4 (user u4) gets no presence"));
	free(log);
	/* Its state writes are not applied (the session is not tracked), its login stands. */
	publish_text_ok(u[4], "presence/u4/state/k", "v", 1);
	expect_nothing(w);
	assert_true(client_sync(u[4], 5000));
	assert_int_equal(retained_documents(b), 3);

	client_disconnect(u[4]);
	client_disconnect(u[1]);
	client_disconnect(u[3]);
	client_disconnect(u[2]);
	client_disconnect(sys);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* Milliseconds on the monotonic clock. */
static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Takes every message queued on c (after a round trip): rejection notices of the write limit,
 * counted per QoS by the topic they name (.../q0 or .../q1); anything else fails the test. */
static void count_limited(struct client *c, int rejected[2])
{
	struct msg *m;

	assert_true(client_sync(c, 5000));
	while ((m = client_wait_msg(c, 0)) != NULL) {
		assert_string_equal(m->topic, "presence/alice/error");
		if (strstr(m->payload, "too many state writes: at most 1 a second (3 at once) per "
		                       "user") == NULL) {
			fail_msg("unexpected notice: %.*s", m->payloadlen, m->payload);
		}
		rejected[strstr(m->payload, "state/q1") != NULL ? 1 : 0]++;
		msg_free(m);
	}
}

static void writes_over_the_limit_are_rejected_and_a_resend_is_free(void **state)
{
	char extra[256];
	char *conf;
	struct broker *b;
	struct client *w, *alice, *sys;
	uint8_t packet[256], type, buf[64];
	int rejected[2] = {0, 0};
	long long start, elapsed;
	size_t len = 0;
	int fd, i, accepted;

	(void)state;
	snprintf(extra, sizeof(extra),
	         "%splugin_opt_max_writes_per_second 1\nplugin_opt_max_write_burst 3\n"
	         "plugin_opt_metrics_interval 1\n",
	         open_options);
	conf = broker_conf(extra);
	b = broker_start(conf);
	w = client_watch(b, "watcher", "presence/+");
	sys = client_connect_as(b, "sys", NULL, 4);
	assert_int_equal(client_subscribe(sys, SYS "state/#", 0), 0);
	alice = client_connect_as(b, "alice-phone", "alice", 4);
	assert_int_equal(client_subscribe(alice, "presence/alice/error", 1), 1);
	expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	fd = raw_open(broker_port(b));
	assert_true(fd >= 0);
	assert_int_equal(raw_send_connect(fd, "alice-raw", "alice", NULL, 60, true), 0);
	assert_int_equal(raw_read_packet(fd, &type, buf, sizeof(buf), &len, 5000), 0);
	assert_int_equal(RAW_TYPE(type), RAW_CONNACK);
	expect_doc(w, "presence/alice", "alice", true, 2, "{}");

	/* 40 changing writes as fast as they are acknowledged, QoS 0 and QoS 1 in turn: at most
	 * the burst and one a second are applied, whatever the pace of this machine, and the
	 * others get a notice. */
	start = now_ms();
	for (i = 0; i < 40; i++) {
		char value[8];

		snprintf(value, sizeof(value), "%d", i);
		publish_text_ok(alice,
		                i % 2 ? "presence/alice/state/q1" : "presence/alice/state/q0",
		                value, i % 2);
	}
	count_limited(alice, rejected);
	elapsed = now_ms() - start;
	accepted = 40 - rejected[0] - rejected[1];
	if (accepted > 3 + (int)(elapsed / 1000) + 1 || rejected[0] == 0 || rejected[1] == 0) {
		fail_msg("%d writes applied in %lld ms (QoS 0 refused %d, QoS 1 %d)", accepted,
		         elapsed, rejected[0], rejected[1]);
	}
	client_disconnect(w);

	/* The allowance is spent now. A write that changes nothing is accepted all the same: a
	 * retransmission (DUP, same packet id) of the last applied write, whose state it finds
	 * as it left it, and the same value again. Neither gets a notice or a document. */
	{
		cJSON *doc;
		struct msg *m;
		char *q0;

		w = client_watch(b, "watcher2", "presence/alice");
		m = client_next_msg(w, 5000);
		assert_non_null(m);
		doc = msg_json(m);
		q0 = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(
		    cJSON_GetObjectItemCaseSensitive(doc, "state"), "q0"));
		assert_non_null(q0);
		len = 0;
		assert_int_equal(raw_build_publish(packet, sizeof(packet), &len,
		                                   "presence/alice/state/q0", q0, strlen(q0), 1,
		                                   false, 9),
		                 0);
		packet[0] |= 0x08;
		assert_int_equal(raw_write_all(fd, packet, len), 0);
		assert_int_equal(raw_read_packet(fd, &type, buf, sizeof(buf), &len, 5000), 0);
		assert_int_equal(RAW_TYPE(type), RAW_PUBACK);
		publish_text_ok(alice, "presence/alice/state/q0", q0, 1);
		count_limited(alice, rejected);
		if (rejected[0] + rejected[1] != 40 - accepted) {
			fail_msg("a write that changes nothing was refused");
		}
		expect_nothing(w);
		cJSON_free(q0);
		cJSON_Delete(doc);
		msg_free(m);
	}
	{
		char total[16];

		snprintf(total, sizeof(total), "%d", rejected[0] + rejected[1]);
		expect_metric(sys, "state/rejected", total);
	}

	assert_int_equal(raw_send_disconnect(fd), 0);
	assert_true(raw_wait_closed(fd, 5000));
	raw_close(fd);
	client_disconnect(alice);
	client_disconnect(sys);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* Anonymous clients with random client ids, each coming once (identity clientid): memory, the
 * retained store and the state file hold at most max_users of them. */
static void client_ids_that_come_once_stay_within_max_users(void **state)
{
	char *conf = lifetime_conf("plugin_opt_identity clientid\nplugin_opt_max_users 50\n"
	                           "plugin_opt_forget_after 0");
	struct broker *b = broker_start(conf);
	struct client *sys = client_connect_as(b, "sys", NULL, 4);
	struct client *c;
	char id[32];
	int i;

	(void)state;
	assert_int_equal(client_subscribe(sys, SYS "users/#", 0), 0);
	for (i = 0; i < 200; i++) {
		snprintf(id, sizeof(id), "random-%04d-%d", i, getpid());
		c = client_connect_as(b, id, NULL, 4);
		client_disconnect(c);
	}
	/* sys itself is a user too (identity clientid): 50 in all. */
	expect_metric(sys, "users/known", "50");
	assert_true(retained_documents(b) <= 50);
	/* After a clean stop the state file holds at most 50 users, and the next start knows no
	 * more. */
	broker_restart(&b, conf, false);
	client_drop(sys);
	sys = client_connect_as(b, "sys", NULL, 4);
	assert_int_equal(client_subscribe(sys, SYS "users/known", 0), 0);
	expect_metric(sys, "users/known", "50");
	assert_true(retained_documents(b) <= 50);
	client_disconnect(sys);
	broker_stop(b);
	free(conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_teardown(name, harness_teardown)
	    T(a_user_offline_for_forget_after_is_forgotten_everywhere),
	    T(seq_never_goes_backwards_across_forgetting_returning_and_restarts),
	    T(at_max_users_the_user_offline_the_longest_makes_room),
	    T(writes_over_the_limit_are_rejected_and_a_resend_is_free),
	    T(client_ids_that_come_once_stay_within_max_users),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
