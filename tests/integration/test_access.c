/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Integration tests for the access rules on a real Mosquitto 2.0: every spoof attempt on the
 * presence namespace is denied (other users' state topics, documents, notices, reserved
 * topics, Will messages, untracked sessions), the auth and acl options behave as documented
 * with and without password_file/acl_file, and rejection notices reach only the user's own
 * sessions.
 *
 * A denied MQTT 5 QoS 1/2 publish is answered with reason code 0x87 (not authorized); MQTT
 * 3.1.1 cannot say so, so there the assertion is that nothing changed. "Nothing changed" is
 * asserted without sleeping: after a round trip through the broker (client_sync) no document
 * is queued, and the victim's next document continues its seq without a gap.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* Allow everything outside the namespace: these tests are about the plugin's own rules. */
static const char *const open_conf = "plugin_opt_auth allow\nplugin_opt_acl allow\n";

/* The log line of a denied write, up to the topic. */
#define DENIED "denied publish by client "

/* Asserts that an MQTT 5 publish of payload on topic is denied, at QoS 1 and QoS 2, with and
 * without retain. */
static void expect_denied(struct client *c, const char *topic, const char *payload)
{
	int len = (int)strlen(payload);

	for (int qos = 1; qos <= 2; qos++) {
		for (int retain = 0; retain <= 1; retain++) {
			int rc = client_publish(c, topic, payload, len, qos, retain == 1);

			if (rc != MQTT_RC_NOT_AUTHORIZED) {
				fail_msg("publish to %s (QoS %d, retain %d) answered 0x%02x, not "
				         "0x87",
				         topic, qos, retain, rc);
			}
		}
	}
}

/* Waits for the broker log to show that client id (user name, "(none)" without) was denied a
 * publish to topic. */
static void expect_denial_logged(struct broker *b, const char *id, const char *user,
                                 const char *topic)
{
	char needle[512];

	snprintf(needle, sizeof(needle), DENIED "%s (user %s) to %s:", id, user, topic);
	if (!broker_log_wait(b, needle, 5000)) {
		char *log = broker_log(b);

		fail_msg("the log has no \"%s\":\n%s", needle, log);
	}
}

/* ---------------------------------------------------------------------------------------- */
/* Spoofs                                                                                     */
/* ---------------------------------------------------------------------------------------- */

static void writes_to_another_users_state_are_denied(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/#");
	struct client *bob = client_connect_as(b, "bob1", "bob", 5);
	struct client *bob3 = client_connect_as(b, "bob3", "bob", 4);
	struct client *alice;
	long seq;

	(void)state;
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 1, "{}"), 1);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 2, "{}"), 2);

	/* While alice is offline: no document appears for her. */
	expect_denied(bob, "presence/alice/state/x", "1");
	expect_denial_logged(b, "bob1", "bob", "presence/alice/state/x");
	expect_denied(bob, "presence/alice/state", "{\"x\":1}");
	expect_denial_logged(b, "bob1", "bob", "presence/alice/state");
	expect_nothing(w);

	alice = client_connect_as(b, "alice1", "alice", 5);
	seq = expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}"),
	                 ++seq);

	/* While she is online, on MQTT 5 and (silently) on MQTT 3.1.1, at every QoS. */
	expect_denied(bob, "presence/alice/state/status", "hijacked");
	expect_denied(bob, "presence/alice/state", "{\"status\":\"hijacked\"}");
	expect_denied(bob, "presence/alice/state", "");
	assert_int_equal(client_publish(bob, "presence/alice/state/x", "1", 1, 0, false), 0);
	for (int qos = 0; qos <= 2; qos++) {
		assert_int_equal(
		    client_publish(bob3, "presence/alice/state/status", "hijacked", 8, qos, false),
		    0);
		assert_int_equal(client_publish(bob3, "presence/alice/state", "", 0, qos, false),
		                 0);
	}
	expect_denial_logged(b, "bob3", "bob", "presence/alice/state");
	expect_nothing(w);

	/* alice's state is untouched: her next document follows directly. */
	publish_text_ok(alice, "presence/alice/state/mood", "ok", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1,
	                            "{\"status\":\"away\",\"mood\":\"ok\"}"),
	                 ++seq);
	expect_nothing(w);

	client_disconnect(alice);
	client_disconnect(bob3);
	client_disconnect(bob);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void nobody_writes_documents_notices_or_reserved_topics(void **state)
{
	static const char *const topics[] = {
	    "presence/alice",        "presence/alice/error",
	    "presence/alice/other",  "presence/x",
	    "presence/alice/state2", "presence/alice/error/x",
	    "presence/alice/x/y",    "presence/",
	    "presence//state",       "presence//state/k",
	    "presence/bob",          "presence/bob/error",
	};
	static const char *const fake =
	    "{\"username\":\"alice\",\"available\":false,\"sessions\":0,\"since\":0,\"seq\":99,"
	    "\"state\":{}}";
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/#");
	struct client *alice = client_connect_as(b, "alice1", "alice", 5);
	struct client *bob = client_connect_as(b, "bob1", "bob", 5);
	struct client *anon = client_connect_as(b, "anon1", NULL, 5);
	struct client *alice3 = client_connect_as(b, "alice3", "alice", 4);
	struct client *writers[] = {alice, bob, anon};
	struct client *fresh;
	long seq;

	(void)state;
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 1);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 1, "{}"), 1);
	seq = expect_doc(w, "presence/alice", "alice", true, 2, "{}");

	/* The owner, another user and an anonymous session alike. */
	for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++) {
		for (size_t j = 0; j < sizeof(writers) / sizeof(writers[0]); j++) {
			expect_denied(writers[j], topics[i], fake);
		}
	}
	expect_denial_logged(b, "alice1", "alice", "presence/alice");
	expect_denial_logged(b, "bob1", "bob", "presence/alice/error");
	expect_denial_logged(b, "anon1", "(none)", "presence/x");
	/* MQTT 3.1.1, retained: acknowledged (it cannot say otherwise) but not delivered. */
	assert_int_equal(client_publish(alice3, "presence/alice", fake, (int)strlen(fake), 1, true),
	                 0);
	expect_denial_logged(b, "alice3", "alice", "presence/alice");
	expect_nothing(w);

	/* The retained document is still the plugin's, and seq continues. */
	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2, "{\"status\":\"away\"}"),
	                 ++seq);
	fresh = client_connect_as(b, "fresh", NULL, 5);
	assert_int_equal(client_subscribe(fresh, "presence/alice/#", 1), 1);
	assert_int_equal(
	    expect_doc(fresh, "presence/alice", "alice", true, 2, "{\"status\":\"away\"}"), seq);
	expect_nothing(fresh);
	expect_nothing(w);

	client_disconnect(fresh);
	client_disconnect(alice3);
	client_disconnect(anon);
	client_disconnect(bob);
	client_disconnect(alice);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* Connects a client with a will; the will is retained, QoS 1. */
static struct client *connect_with_will(struct broker *b, const char *id, const char *username,
                                        const char *will_topic, const char *will_payload)
{
	struct client_opts o = {.id = id,
	                        .username = username,
	                        .protocol = 5,
	                        .will_topic = will_topic,
	                        .will_payload = will_payload,
	                        .will_qos = 1,
	                        .will_retain = true};

	return client_connect(b, &o);
}

static void will_on_a_document_topic_is_not_delivered(void **state)
{
	static const char *const fake =
	    "{\"username\":\"bob\",\"available\":true,\"sessions\":1,\"since\":0,\"seq\":99,"
	    "\"state\":{\"status\":\"still here\"}}";
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/#");
	struct client *bob, *carol, *fresh;

	(void)state;
	/* bob's will claims that he is still available. */
	bob = connect_with_will(b, "bob1", "bob", "presence/bob", fake);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 1, "{}"), 1);
	/* carol's will targets another user's document. */
	carol = connect_with_will(b, "carol1", "carol", "presence/alice", fake);
	assert_int_equal(expect_doc(w, "presence/carol", "carol", true, 1, "{}"), 1);

	client_drop(bob);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", false, 0, "{}"), 2);
	expect_denial_logged(b, "bob1", "bob", "presence/bob");
	expect_nothing(w);
	client_drop(carol);
	assert_int_equal(expect_doc(w, "presence/carol", "carol", false, 0, "{}"), 2);
	expect_denial_logged(b, "carol1", "carol", "presence/alice");
	expect_nothing(w);

	/* What is retained is the plugin's documents, nothing on presence/alice. */
	fresh = client_connect_as(b, "fresh", NULL, 5);
	assert_int_equal(client_subscribe(fresh, "presence/bob", 1), 1);
	assert_int_equal(expect_doc(fresh, "presence/bob", "bob", false, 0, "{}"), 2);
	assert_int_equal(client_subscribe(fresh, "presence/alice/#", 1), 1);
	expect_nothing(fresh);

	client_disconnect(fresh);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void will_on_another_users_state_topic_is_not_applied(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/#");
	struct client *bob = client_connect_as(b, "bob1", "bob", 5);
	struct client *alice, *carol;
	long seq;

	(void)state;
	seq = expect_doc(w, "presence/bob", "bob", true, 1, "{}");
	alice = connect_with_will(b, "alice1", "alice", "presence/bob/state/status", "hijacked");
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 1);
	carol = connect_with_will(b, "carol1", "carol", "presence/bob/state",
	                          "{\"status\":\"hijacked\"}");
	assert_int_equal(expect_doc(w, "presence/carol", "carol", true, 1, "{}"), 1);

	client_drop(alice);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), 2);
	expect_denial_logged(b, "alice1", "alice", "presence/bob/state/status");
	client_drop(carol);
	assert_int_equal(expect_doc(w, "presence/carol", "carol", false, 0, "{}"), 2);
	expect_denial_logged(b, "carol1", "carol", "presence/bob/state");
	expect_nothing(w);

	/* bob's state is untouched. */
	publish_text_ok(bob, "presence/bob/state/mood", "ok", 1);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 1, "{\"mood\":\"ok\"}"), ++seq);
	expect_nothing(w);

	client_disconnect(bob);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void will_on_the_senders_own_state_topic_is_denied(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/#");
	struct client *bob2 = client_connect_as(b, "bob2", "bob", 4);
	struct client *bob1, *bob3;
	long seq;

	(void)state;
	seq = expect_doc(w, "presence/bob", "bob", true, 1, "{}");
	bob1 = connect_with_will(b, "bob1", "bob", "presence/bob/state/status", "gone");
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 2, "{}"), ++seq);
	bob3 = connect_with_will(b, "bob3", "bob", "presence/bob/state", "{\"status\":\"gone\"}");
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 3, "{}"), ++seq);

	/* The will is checked when it is sent, after the session is gone. */
	client_drop(bob1);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 2, "{}"), ++seq);
	expect_denial_logged(b, "bob1", "bob", "presence/bob/state/status");
	client_drop(bob3);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 1, "{}"), ++seq);
	expect_denial_logged(b, "bob3", "bob", "presence/bob/state");
	expect_nothing(w);

	publish_text_ok(bob2, "presence/bob/state/mood", "ok", 1);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 1, "{\"mood\":\"ok\"}"), ++seq);
	expect_nothing(w);

	client_disconnect(bob2);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* Connects a client with a retained QoS 1 will, with protocol (4 or 5). */
static struct client *connect_with_will_v(struct broker *b, const char *id, const char *username,
                                          int protocol, const char *will_topic,
                                          const char *will_payload)
{
	struct client_opts o = {.id = id,
	                        .username = username,
	                        .protocol = protocol,
	                        .will_topic = will_topic,
	                        .will_payload = will_payload,
	                        .will_qos = 1,
	                        .will_retain = true};

	return client_connect(b, &o);
}

/* Waits for the log line of a Will dropped at a take-over. */
static void expect_takeover_will_dropped(struct broker *b, const char *id, const char *topic)
{
	char needle[512];

	snprintf(needle, sizeof(needle),
	         "dropped the Will of client %s (user bob) on %s: the connection was taken over",
	         id, topic);
	if (!broker_log_wait(b, needle, 5000)) {
		char *log = broker_log(b);

		fail_msg("the log has no \"%s\":\n%s", needle, log);
	}
}

/*
 * Issue 11: at a take-over Mosquitto 2.0 sends the old connection's Will before its
 * DISCONNECT, while its session is still tracked; the plugin used to let a Will on the user's
 * own state topic through, and a retained one was stored on the state topic (and in
 * mosquitto.db). It must be dropped like every other Will below the namespace: checked with the
 * state, with the log, and with the retained messages of the same broker restarted without the
 * plugin (which would deliver anything stored).
 */
static void will_at_a_takeover_is_dropped_and_never_retained(void **state)
{
	char *conf = broker_conf("plugin_opt_auth allow\nplugin_opt_acl allow\n"
	                         "persistence true\npersistence_location @DIR@/\n");
	char *bare = broker_conf_without_plugin("persistence true\npersistence_location @DIR@/\n");
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/#");
	struct client *old5, *old4, *new5, *new4, *check;
	struct broker_opts opts = {.dir = NULL};
	struct msg *m;
	char *dir;
	long seq;

	(void)state;
	old5 =
	    connect_with_will_v(b, "dev5", "bob", 5, "presence/bob/state", "{\"status\":\"gone\"}");
	seq = expect_doc(w, "presence/bob", "bob", true, 1, "{}");
	old4 = connect_with_will_v(b, "dev4", "bob", 4, "presence/bob/state/status", "gone");
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 2, "{}"), ++seq);

	/* Both take-overs keep bob's two sessions: no document, and no Will applied. */
	new5 = client_connect_as(b, "dev5", "bob", 5);
	assert_true(client_wait_closed(old5, 5000));
	expect_takeover_will_dropped(b, "dev5", "presence/bob/state");
	new4 = client_connect_as(b, "dev4", "bob", 4);
	assert_true(client_wait_closed(old4, 5000));
	expect_takeover_will_dropped(b, "dev4", "presence/bob/state/status");
	expect_no_state_or_error_message(w);
	publish_text_ok(new5, "presence/bob/state/mood", "ok", 1);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 2, "{\"mood\":\"ok\"}"), ++seq);
	expect_nothing(w);

	client_disconnect(old5);
	client_disconnect(old4);
	client_disconnect(new5);
	client_disconnect(new4);
	client_disconnect(w);
	dir = strdup(broker_dir(b));
	assert_non_null(dir);
	opts.dir = dir;
	opts.port = broker_port(b);
	broker_stop(b);

	/* Without the plugin nothing filters reads: a retained Will would come back now. */
	b = broker_start_opts(bare, &opts);
	check = client_connect_as(b, "check", NULL, 5);
	assert_int_equal(client_subscribe(check, "presence/bob", 1), 1);
	m = client_wait_msg(check, 5000);
	assert_non_null(m);
	assert_string_equal(m->topic, "presence/bob");
	assert_true(m->retain);
	msg_free(m);
	assert_int_equal(client_subscribe(check, "presence/bob/state/#", 1), 1);
	expect_nothing(check);
	client_disconnect(check);
	broker_stop(b);
	free(dir);
	free(bare);
	free(conf);
}

/*
 * Counts, in log, the plugin's lines of one kind (their text contains line_mark) and the lines
 * of that kind they say were suppressed: "(<n> similar lines suppressed before this one)" at the
 * end of a line, and "<n> more lines about <what> suppressed". Returns logged + suppressed.
 */
static unsigned long lines_accounted(const char *log, const char *line_mark, const char *what,
                                     unsigned long *logged)
{
	char more[128];
	unsigned long total = 0;
	const char *line = log;

	snprintf(more, sizeof(more), " more lines about %s suppressed", what);
	*logged = 0;
	while (line != NULL && *line != '\0') {
		const char *end = strchr(line, '\n');
		size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
		char *text = strndup(line, len);
		const char *at;

		assert_non_null(text);
		if (strstr(text, "mosquitto-presence: ") != NULL &&
		    strstr(text, line_mark) != NULL) {
			(*logged)++;
			total++;
			at = strstr(text, " similar lines suppressed before this one)");
			if (at != NULL) {
				while (at > text && at[-1] >= '0' && at[-1] <= '9') {
					at--;
				}
				total += strtoul(at, NULL, 10);
			}
		} else if ((at = strstr(text, more)) != NULL) {
			while (at > text && at[-1] >= '0' && at[-1] <= '9') {
				at--;
			}
			total += strtoul(at, NULL, 10);
		}
		free(text);
		line = end != NULL ? end + 1 : NULL;
	}
	return total;
}

/* Waits until the log accounts for expected lines of one kind (see lines_accounted): each
 * report of suppressed lines is awaited in turn; the last comes about a second after the flood.
 * Returns the number of lines actually logged. */
static unsigned long wait_lines_accounted(struct broker *b, const char *line_mark, const char *what,
                                          unsigned long expected)
{
	char more[128];
	unsigned long logged = 0;

	snprintf(more, sizeof(more), " more lines about %s suppressed", what);
	for (;;) {
		char *log = broker_log(b);
		unsigned long total = lines_accounted(log, line_mark, what, &logged);

		free(log);
		if (total == expected) {
			return logged;
		}
		if (total > expected) {
			fail_msg("the log accounts for %lu lines about %s, expected %lu", total,
			         what, expected);
		}
		if (!broker_log_wait(b, more, 5000)) {
			fail_msg("the log accounts for only %lu of %lu lines about %s", total,
			         expected, what);
		}
	}
}

/* Issue 11: 10 000 rejected writes and 10 000 denied publishes at QoS 0 made 20 002 log lines.
 * The lines are now budgeted; every suppressed line is still accounted for, in the log and in
 * the metrics. */
static void floods_of_rejected_and_denied_publishes_are_logged_within_budget(void **state)
{
	enum { FLOOD = 1000 };
	char *conf = broker_conf("plugin_opt_auth allow\nplugin_opt_acl allow\n"
	                         "plugin_opt_metrics_interval 1\n");
	struct broker *b = broker_start(conf);
	struct client *m = client_connect_as(b, "metrics", NULL, 5);
	struct client *alice = client_connect_as(b, "alice1", "alice", 4);
	struct client *anon = client_connect_as(b, "anon1", NULL, 4);
	unsigned long logged;
	struct msg *msg;
	bool rejected_seen = false, denied_seen = false;

	(void)state;
	/* Subscribe the round-trip markers first: under load the broker takes a while to work
	 * through the flood, and only the final round trip should wait for it. */
	assert_true(client_sync(alice, 5000));
	assert_true(client_sync(anon, 5000));
	for (int i = 0; i < FLOOD; i++) {
		assert_int_equal(client_publish(alice, "presence/alice/state", "[]", 2, 0, false),
		                 0);
		assert_int_equal(client_publish(anon, "presence/x", "{}", 2, 0, false), 0);
	}
	assert_true(client_sync(alice, 30000));
	assert_true(client_sync(anon, 30000));

	logged = wait_lines_accounted(b, "rejected state write by client alice1",
	                              "rejected state writes", FLOOD);
	assert_true(logged < FLOOD / 4);
	logged = wait_lines_accounted(b, DENIED "anon1", "denied publishes", FLOOD);
	assert_true(logged < FLOOD / 4);

	/* The metrics count every one. */
	assert_int_equal(client_subscribe(m, "$SYS/broker/presence/#", 0), 0);
	while (!rejected_seen || !denied_seen) {
		msg = client_wait_msg(m, 5000);
		assert_non_null(msg);
		if (strcmp(msg->topic, "$SYS/broker/presence/state/rejected") == 0) {
			rejected_seen = atoi(msg->payload) == FLOOD;
		} else if (strcmp(msg->topic, "$SYS/broker/presence/publishes/denied") == 0) {
			denied_seen = atoi(msg->payload) == FLOOD;
		}
		msg_free(msg);
	}

	client_disconnect(anon);
	client_disconnect(alice);
	client_disconnect(m);
	broker_stop(b);
	free(conf);
}

static void untracked_sessions_cannot_write_any_state_topic(void **state)
{
	static const char *const topics[] = {"presence/anon1/state/x", "presence/anon1/state",
	                                     "presence/alice/state/x", "presence/alice/state",
	                                     "presence/empty1/state/x"};
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/#");
	struct client *alice = client_connect_as(b, "alice1", "alice", 5);
	struct client *anon = client_connect_as(b, "anon1", NULL, 5);
	struct client *empty = client_connect_as(b, "empty1", "", 5);
	long seq;

	(void)state;
	seq = expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++) {
		expect_denied(anon, topics[i], "{}");
		expect_denied(empty, topics[i], "{}");
	}
	expect_denial_logged(b, "anon1", "(none)", "presence/anon1/state/x");
	/* Mosquitto 2.0 reports an empty username as none. */
	expect_denial_logged(b, "empty1", "(none)", "presence/alice/state");
	expect_nothing(w);

	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}"),
	                 ++seq);
	expect_nothing(w);

	client_disconnect(empty);
	client_disconnect(anon);
	client_disconnect(alice);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void percent_encoding_does_not_reach_another_user(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	/* "a/b" is encoded a%2Fb; the user literally named "a%2Fb" is encoded a%252Fb. */
	struct client *slash = client_connect_as(b, "slash", "a/b", 5);
	struct client *literal;

	(void)state;
	assert_int_equal(expect_doc(w, "presence/a%2Fb", "a/b", true, 1, "{}"), 1);
	literal = client_connect_as(b, "literal", "a%2Fb", 5);
	assert_int_equal(expect_doc(w, "presence/a%252Fb", "a%2Fb", true, 1, "{}"), 1);

	expect_denied(literal, "presence/a%2Fb/state/k", "x");
	expect_denied(slash, "presence/a%252Fb/state/k", "x");
	/* The unencoded name is not a level at all. */
	expect_denied(slash, "presence/a/b/state/k", "x");
	expect_denied(slash, "presence/a/b/state", "{}");
	expect_nothing(w);

	publish_text_ok(slash, "presence/a%2Fb/state/k", "mine", 1);
	assert_int_equal(expect_doc(w, "presence/a%2Fb", "a/b", true, 1, "{\"k\":\"mine\"}"), 2);
	publish_text_ok(literal, "presence/a%252Fb/state/k", "mine too", 1);
	assert_int_equal(
	    expect_doc(w, "presence/a%252Fb", "a%2Fb", true, 1, "{\"k\":\"mine too\"}"), 2);
	expect_nothing(w);

	client_disconnect(literal);
	client_disconnect(slash);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* ---------------------------------------------------------------------------------------- */
/* Rejection notices                                                                          */
/* ---------------------------------------------------------------------------------------- */

/* Asserts that the next message c receives is the notice text on topic; when skip_documents,
 * documents (presence/<user>, which a # subscriber also receives) before it are skipped. */
static void expect_notice_after(struct client *c, const char *topic, const char *text,
                                bool skip_documents)
{
	struct msg *m;

	while ((m = client_next_msg(c, 5000)) != NULL && skip_documents &&
	       strncmp(m->topic, "presence/", 9) == 0 && strchr(m->topic + 9, '/') == NULL) {
		msg_free(m);
	}

	if (m == NULL) {
		fail_msg("no notice on %s", topic);
	}
	assert_string_equal(m->topic, topic);
	assert_false(m->retain);
	assert_int_equal(m->payloadlen, (int)strlen(text));
	assert_memory_equal(m->payload, text, strlen(text));
	msg_free(m);
}

/* Asserts that the next message c receives is the notice text on topic. */
static void expect_notice(struct client *c, const char *topic, const char *text)
{
	expect_notice_after(c, topic, text, false);
}

static void error_notices_reach_only_the_users_own_sessions(void **state)
{
	static const char *const alice_notice =
	    "{\"topic\":\"presence/alice/state\",\"error\":\"state must be a JSON object\"}";
	static const char *const bob_notice =
	    "{\"topic\":\"presence/bob/state\",\"error\":\"state must be a JSON object\"}";
	static const char *const bob_filters[] = {"presence/alice/error", "presence/+/error", "#"};
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *alice[3], *bob[3], *anon;
	char id[16];

	(void)state;
	for (int i = 0; i < 3; i++) {
		snprintf(id, sizeof(id), "alice%d", i + 1);
		alice[i] = client_connect_as(b, id, "alice", i == 1 ? 4 : 5);
		assert_int_equal(
		    client_subscribe(alice[i], i == 2 ? "presence/+/error" : "presence/alice/error",
		                     1),
		    1);
		snprintf(id, sizeof(id), "bob%d", i + 1);
		bob[i] = client_connect_as(b, id, "bob", i == 1 ? 4 : 5);
		assert_int_equal(client_subscribe(bob[i], bob_filters[i], 1), 1);
	}
	anon = client_connect_as(b, "anon", NULL, 4);
	assert_int_equal(client_subscribe(anon, "presence/alice/error", 1), 1);
	assert_int_equal(client_subscribe(anon, "#", 1), 1);

	/* alice's rejected write: every session of hers receives the notice, the writer too. */
	publish_text_ok(alice[0], "presence/alice/state", "[1]", 1);
	for (int i = 0; i < 3; i++) {
		expect_notice(alice[i], "presence/alice/error", alice_notice);
	}
	/* bob's rejected write: only bob's sessions, even alice's presence/+/error. */
	publish_text_ok(bob[1], "presence/bob/state", "42", 1);
	expect_notice(bob[1], "presence/bob/error", bob_notice);
	expect_notice_after(bob[2], "presence/bob/error", bob_notice, true);
	for (int i = 0; i < 3; i++) {
		expect_nothing(alice[i]);
	}
	expect_nothing(bob[0]);
	expect_nothing(bob[1]);
	expect_no_state_or_error_message(bob[2]);
	expect_no_state_or_error_message(anon);

	client_disconnect(anon);
	for (int i = 0; i < 3; i++) {
		client_disconnect(bob[i]);
		client_disconnect(alice[i]);
	}
	broker_stop(b);
	free(conf);
}

/* ---------------------------------------------------------------------------------------- */
/* auth and acl modes                                                                         */
/* ---------------------------------------------------------------------------------------- */

static void defer_modes_follow_password_file_and_acl_file(void **state)
{
	static const char *const acl = "pattern read presence/#\n"
	                               "pattern readwrite chat/#\n"
	                               "pattern readwrite " HARNESS_SYNC_PREFIX "#\n"
	                               "user carol\n"
	                               "topic readwrite private/carol/#\n";
	struct broker *b = broker_prepare(NULL);
	const char *passwd = broker_password_file(
	    b, "passwd", "alice:alice-pw\nbob:bob-pw\ncarol:carol-pw\nwatch:watch-pw\n");
	const char *acl_path = broker_write_file(b, "acl", acl);
	struct client_opts wrong = {.id = "wrong", .username = "alice", .password = "nope"};
	struct client_opts wrong5 = {
	    .id = "wrong5", .username = "alice", .password = "nope", .protocol = 5};
	struct client_opts unknown = {.id = "unknown", .username = "mallory", .password = "x"};
	struct client_opts watch_o = {
	    .id = "watch", .username = "watch", .password = "watch-pw", .protocol = 5};
	struct client_opts alice_o = {
	    .id = "alice1", .username = "alice", .password = "alice-pw", .protocol = 5};
	struct client_opts alice2_o = {.id = "alice2", .username = "alice", .password = "alice-pw"};
	struct client_opts bob_o = {.id = "bob1", .username = "bob", .password = "bob-pw"};
	struct client_opts carol_o = {
	    .id = "carol1", .username = "carol", .password = "carol-pw", .protocol = 5};
	char extra[1024];
	char *conf;
	struct client *w, *alice, *alice2, *bob, *carol;
	struct msg *m;
	long seq, bob_seq;

	(void)state;
	snprintf(extra, sizeof(extra),
	         "plugin_opt_auth defer\nplugin_opt_acl defer\npassword_file %s\nacl_file %s\n",
	         passwd, acl_path);
	conf = broker_conf(extra);
	broker_launch(b, conf);

	/* Logins: the password file decides. */
	assert_true(expect_refused(b, &wrong) > 0);
	assert_true(expect_refused(b, &wrong5) > 0);
	assert_true(expect_refused(b, &unknown) > 0);

	/* Documents are readable (acl_file grants read on presence/#). */
	w = client_connect(b, &watch_o);
	assert_int_equal(client_subscribe(w, "presence/+", 1), 1);
	assert_int_equal(expect_doc(w, "presence/watch", "watch", true, 1, "{}"), 1);
	alice = client_connect(b, &alice_o);
	seq = expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	alice2 = client_connect(b, &alice2_o);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2, "{}"), ++seq);
	assert_int_equal(client_subscribe(alice2, "presence/alice/error", 1), 1);
	bob = client_connect(b, &bob_o);
	bob_seq = expect_doc(w, "presence/bob", "bob", true, 1, "{}");
	assert_int_equal(client_subscribe(bob, "presence/#", 1), 1);
	assert_int_equal(client_subscribe(bob, "chat/#", 1), 1);
	carol = client_connect(b, &carol_o);
	assert_int_equal(expect_doc(w, "presence/carol", "carol", true, 1, "{}"), 1);
	/* bob received the retained documents on subscribing; start from a clean queue. */
	client_drain(bob);

	/* State writes to her own topics work although the acl_file does not mention them. */
	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2, "{\"status\":\"away\"}"),
	                 ++seq);
	assert_int_equal(
	    client_publish(alice2, "presence/alice/state", "{\"mood\":\"ok\"}", 13, 1, false), 0);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2,
	                            "{\"status\":\"away\",\"mood\":\"ok\"}"),
	                 ++seq);
	/* bob may read presence/# by the acl_file, but only documents reach him. */
	assert_int_equal(
	    expect_doc(bob, "presence/alice", "alice", true, 2, "{\"status\":\"away\"}"), seq - 1);
	assert_int_equal(expect_doc(bob, "presence/alice", "alice", true, 2,
	                            "{\"status\":\"away\",\"mood\":\"ok\"}"),
	                 seq);
	/* The notice goes to alice's other session, not to bob. */
	publish_text_ok(alice, "presence/alice/state", "[]", 1);
	expect_notice(alice2, "presence/alice/error",
	              "{\"topic\":\"presence/alice/state\",\"error\":\"state must be a JSON "
	              "object\"}");
	expect_nothing(bob);

	/* The plugin's own rules still hold: the acl_file cannot open its namespace. */
	expect_denied(alice, "presence/bob/state/x", "1");
	expect_denied(alice, "presence/alice", "{}");
	expect_denied(carol, "presence/alice/error", "{}");

	/* Outside the namespace the acl_file decides: chat works... */
	publish_text_ok(alice, "chat/room", "hi", 1);
	m = client_next_msg(bob, 5000);
	assert_non_null(m);
	assert_string_equal(m->topic, "chat/room");
	assert_int_equal(m->payloadlen, 2);
	assert_memory_equal(m->payload, "hi", 2);
	msg_free(m);
	/* ...and what a user has no acl line for is denied. */
	expect_denied(alice, "private/carol/x", "1");
	expect_denied(alice, "elsewhere/x", "1");
	publish_text_ok(carol, "private/carol/x", "1", 1);
	expect_nothing(bob);
	expect_nothing(w);

	/* Nothing of the above touched anybody's presence. */
	client_disconnect(bob);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", false, 0, "{}"), bob_seq + 1);
	publish_text_ok(alice, "presence/alice/state/status", "back", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2,
	                            "{\"status\":\"back\",\"mood\":\"ok\"}"),
	                 ++seq);
	expect_nothing(w);

	client_disconnect(carol);
	client_disconnect(alice2);
	client_disconnect(alice);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void allow_modes_work_without_password_file_or_acl_file(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client_opts alice_o = {
	    .id = "alice1", .username = "alice", .password = "anything", .protocol = 5};
	struct client_opts bob_o = {.id = "bob1", .username = "bob"};
	struct client *alice, *bob;
	struct msg *m;

	(void)state;
	/* Every username login is accepted. */
	alice = client_connect(b, &alice_o);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 1);
	bob = client_connect(b, &bob_o);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 1, "{}"), 1);

	/* Everything outside the namespace is allowed. */
	assert_int_equal(client_subscribe(bob, "anything/#", 1), 1);
	assert_int_equal(client_subscribe(bob, "chat/#", 1), 1);
	assert_int_equal(client_publish(alice, "anything/at/all", "x", 1, 1, false), 0);
	assert_int_equal(client_publish(alice, "chat/room", "hi", 2, 2, true), 0);
	m = client_wait_msg(bob, 5000);
	assert_non_null(m);
	assert_string_equal(m->topic, "anything/at/all");
	msg_free(m);
	m = client_wait_msg(bob, 5000);
	assert_non_null(m);
	assert_string_equal(m->topic, "chat/room");
	msg_free(m);
	expect_nothing(bob);

	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}"),
	                 2);
	expect_nothing(w);

	client_disconnect(bob);
	client_disconnect(alice);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* Whether the broker is Mosquitto 2.1 or later, where the plugin can leave a question to the
 * broker's defaults (MOSQ_ERR_PLUGIN_IGNORE) instead of deferring it. */
static bool broker_has_ignore(void)
{
	return harness_broker_version() >= HARNESS_MOSQUITTO_VERSION(2, 1, 0);
}

static void auth_defer_with_nothing_behind_follows_the_brokers_rules(void **state)
{
	char *conf = broker_conf("plugin_opt_auth defer\nplugin_opt_acl allow\n");
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client_opts alice = {.id = "alice1", .username = "alice", .password = "pw"};
	struct client_opts alice5 = {.id = "alice5", .username = "alice", .protocol = 5};
	struct client *c1, *c5;

	(void)state;
	if (!broker_has_ignore()) {
		/* Documented Mosquitto 2.0 behaviour: a deferring auth plugin with nothing behind
		 * it refuses every client that sends a username, even with allow_anonymous true. */
		assert_int_equal(expect_refused(b, &alice), CONNACK_REFUSED_NOT_AUTHORIZED);
		assert_true(expect_refused(b, &alice5) >= 0x80);
		/* Anonymous clients get in (the watcher did), and the refused logins left no
		 * trace. */
		expect_nothing(w);
	} else {
		/* Mosquitto 2.1: the plugin registers no authentication callback in defer mode, so
		 * the broker's own rules decide: allow_anonymous true lets alice in, and she is
		 * tracked. */
		c1 = client_connect(b, &alice);
		assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 1);
		c5 = client_connect(b, &alice5);
		assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2, "{}"), 2);
		client_disconnect(c1);
		assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 3);
		client_disconnect(c5);
		assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), 4);
	}

	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void acl_defer_with_nothing_behind_follows_the_brokers_rules(void **state)
{
	char *conf = broker_conf("plugin_opt_auth allow\nplugin_opt_acl defer\n");
	struct broker *b = broker_start(conf);
	struct client *alice = client_connect_as(b, "alice1", "alice", 5);

	(void)state;
	if (!broker_has_ignore()) {
		/* Documented Mosquitto 2.0 behaviour: a deferring ACL plugin with nothing behind it
		 * denies everything it defers. */
		expect_denied(alice, "chat/room", "hi");
		assert_int_equal(client_subscribe(alice, "chat/#", 1), MQTT_RC_NOT_AUTHORIZED);
		/* Reading documents follows the same option. */
		assert_int_equal(client_subscribe(alice, "presence/+", 1), MQTT_RC_NOT_AUTHORIZED);
	} else {
		/* Mosquitto 2.1: the plugin ignores what is not its own, and with nothing else
		 * deciding the broker allows it. */
		publish_text_ok(alice, "chat/room", "hi", 1);
		assert_int_equal(client_subscribe(alice, "chat/#", 1), 1);
		assert_int_equal(client_subscribe(alice, "presence/+", 1), 1);
		assert_int_equal(expect_doc(alice, "presence/alice", "alice", true, 1, "{}"), 1);
	}
	/* The plugin still decides its own namespace: her own state writes succeed, nobody
	 * else's do. */
	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	expect_denied(alice, "presence/bob/state/status", "away");
	expect_denied(alice, "presence/alice", "{}");

	client_disconnect(alice);
	broker_stop(b);
	free(conf);
}

static void reading_documents_follows_the_acl_file(void **state)
{
	static const char *const acl = "pattern readwrite " HARNESS_SYNC_PREFIX "#\n"
	                               "user reader\n"
	                               "topic read presence/#\n";
	struct broker *b = broker_prepare(NULL);
	const char *acl_path = broker_write_file(b, "acl", acl);
	char extra[512];
	char *conf;
	struct client *reader, *blind, *alice;

	(void)state;
	/* reader and blind are not tracked, so that only alice has a document. */
	snprintf(extra, sizeof(extra),
	         "plugin_opt_auth allow\nplugin_opt_acl defer\nplugin_opt_ignore_users reader, "
	         "blind\nacl_file %s\n",
	         acl_path);
	conf = broker_conf(extra);
	broker_launch(b, conf);
	reader = client_connect_as(b, "reader1", "reader", 5);
	blind = client_connect_as(b, "blind1", "blind", 5);
	/* Mosquitto 2.0's acl_file allows every subscription and checks each delivery. */
	assert_int_equal(client_subscribe(reader, "presence/+", 1), 1);
	assert_int_equal(client_subscribe(blind, "presence/+", 1), 1);

	alice = client_connect_as(b, "alice1", "alice", 5);
	assert_int_equal(expect_doc(reader, "presence/alice", "alice", true, 1, "{}"), 1);
	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	assert_int_equal(
	    expect_doc(reader, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}"), 2);
	expect_nothing(reader);
	expect_nothing(blind);

	/* Nor the retained document. */
	client_disconnect(blind);
	blind = client_connect_as(b, "blind2", "blind", 4);
	assert_int_equal(client_subscribe(blind, "presence/+", 1), 1);
	expect_nothing(blind);

	client_disconnect(alice);
	client_disconnect(blind);
	client_disconnect(reader);
	broker_stop(b);
	free(conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_teardown(name, harness_teardown)
	    T(writes_to_another_users_state_are_denied),
	    T(nobody_writes_documents_notices_or_reserved_topics),
	    T(will_on_a_document_topic_is_not_delivered),
	    T(will_on_another_users_state_topic_is_not_applied),
	    T(will_on_the_senders_own_state_topic_is_denied),
	    T(will_at_a_takeover_is_dropped_and_never_retained),
	    T(untracked_sessions_cannot_write_any_state_topic),
	    T(floods_of_rejected_and_denied_publishes_are_logged_within_budget),
	    T(percent_encoding_does_not_reach_another_user),
	    T(error_notices_reach_only_the_users_own_sessions),
	    T(defer_modes_follow_password_file_and_acl_file),
	    T(allow_modes_work_without_password_file_or_acl_file),
	    T(auth_defer_with_nothing_behind_follows_the_brokers_rules),
	    T(acl_defer_with_nothing_behind_follows_the_brokers_rules),
	    T(reading_documents_follows_the_acl_file),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
