/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The plugin under valgrind: one broker runs the unsanitized plugin under memcheck through a
 * scenario that reaches every callback and every branch that allocates or frees (sessions of
 * several users on MQTT 3.1.1 and 5, takeover, persistent resume, state writes that apply, do
 * nothing or are rejected with a notice, spoofed writes and wills, refused logins, SIGHUP, a
 * dropped connection, a kick, and a shutdown with users still online). broker_stop then fails
 * the test when valgrind attributes any memory error or any definite or indirect leak to
 * mosquitto_presence.so (see harness_sanitizer.h, "Valgrind verdict").
 *
 * The documents are still asserted, so a run that silently skipped a path (a refused login
 * that was accepted, a write that did not apply) cannot pass for a clean one. Every deadline
 * is scaled by 10 under valgrind.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "rawmqtt.h"

/* Waits for the next message on c and asserts that it is the rejection notice on
 * presence/alice/error for a write to write_topic, with an error that starts with reason. */
static void expect_notice(struct client *c, const char *write_topic, const char *reason)
{
	struct msg *m = client_wait_msg(c, 5000);
	const cJSON *topic, *error;
	cJSON *j;

	if (m == NULL) {
		fail_msg("no rejection notice for %s", write_topic);
	}
	assert_string_equal(m->topic, "presence/alice/error");
	assert_false(m->retain);
	j = msg_json(m);
	topic = cJSON_GetObjectItemCaseSensitive(j, "topic");
	error = cJSON_GetObjectItemCaseSensitive(j, "error");
	assert_true(cJSON_IsString(topic) && cJSON_IsString(error));
	assert_string_equal(topic->valuestring, write_topic);
	if (strncmp(error->valuestring, reason, strlen(reason)) != 0) {
		fail_msg("notice for %s: expected an error starting with \"%s\", got \"%s\"",
		         write_topic, reason, error->valuestring);
	}
	cJSON_Delete(j);
	msg_free(m);
}

/* Alice's sessions, state writes, rejections and spoof attempts. Leaves a2 connected with
 * the state {"mood":{"x":1}} and returns the seq of her last document. */
static long alice_scenario(struct broker *b, struct client *w, struct client **a2_out)
{
	struct client_opts a1_o = {.id = "alice-3", .username = "alice", .password = "alice-pw"};
	struct client_opts a2_o = {
	    .id = "alice-5", .username = "alice", .password = "alice-pw", .protocol = 5};
	struct client_opts will_o = {.id = "alice-will",
	                             .username = "alice",
	                             .password = "alice-pw",
	                             .will_topic = "presence/bob",
	                             .will_payload = "{\"available\":false}",
	                             .will_qos = 1,
	                             .will_retain = true};
	static const char mood[] = "{\"status\":\"away\",\"mood\":{\"x\":1}}";
	static const char merge[] = "{\"mood\":{\"x\":1},\"count\":null}";
	char big[400];
	struct client *a1, *a2, *will;
	long seq;

	a1 = client_connect(b, &a1_o);
	seq = expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	a2 = client_connect(b, &a2_o);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2, "{}"), ++seq);
	assert_int_equal(client_subscribe(a2, "presence/alice/error", 1), 1);

	/* Writes that apply, at QoS 0, 2 and 1, from both sessions. */
	publish_text_ok(a1, "presence/alice/state/status", "away", 0);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2, "{\"status\":\"away\"}"),
	                 ++seq);
	publish_text_ok(a2, "presence/alice/state/count", "42", 2);
	assert_int_equal(
	    expect_doc(w, "presence/alice", "alice", true, 2, "{\"status\":\"away\",\"count\":42}"),
	    ++seq);
	publish_text_ok(a2, "presence/alice/state", merge, 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2, mood), ++seq);

	/* Writes that change nothing (a retransmitted merge, a value set again). */
	publish_text_ok(a2, "presence/alice/state", merge, 1);
	publish_text_ok(a1, "presence/alice/state/status", "\"away\"", 1);

	/* Rejections: each leaves the state as it was and sends a notice. */
	publish_text_ok(a2, "presence/alice/state", "[1]", 1);
	expect_notice(a2, "presence/alice/state", "state must be a JSON object");
	expect_publish_ok(client_publish(a2, "presence/alice/state/bin", "\xff\xfe", 2, 1, false));
	expect_notice(a2, "presence/alice/state/bin", "payload is neither JSON nor UTF-8 text");
	publish_text_ok(a2, "presence/alice/state/nul", "\"a\\u0000b\"", 1);
	expect_notice(a2, "presence/alice/state/nul", "payload contains \\u0000");
	publish_text_ok(a2, "presence/alice/state", "{\"a/b\":1}", 1);
	expect_notice(a2, "presence/alice/state", "invalid key");
	publish_text_ok(a2, "presence/alice/state", "{\"a\":1,\"b\":2,\"c\":3}", 1);
	expect_notice(a2, "presence/alice/state", "state would have 5 keys; max_keys is 4");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	publish_text_ok(a2, "presence/alice/state/big", big, 2);
	expect_notice(a2, "presence/alice/state/big", "state would be ");
	publish_text_ok(a1, "presence/alice/state",
	                "{\"deep\":{\"a\":{\"b\":[1,2,{\"c\":null}]}},"
	                "\"e\":1,\"f\":2,\"g\":3}",
	                1);
	expect_notice(a2, "presence/alice/state", "state would have 6 keys");
	expect_nothing(w);
	expect_nothing(a2);

	/* Spoofed writes: another user's state and documents, her own document, her error
	 * topic, all denied (v5 sees 0x87, v3 sees nothing); no document results. */
	assert_int_equal(client_publish(a2, "presence/bob", "{}", 2, 1, false),
	                 MQTT_RC_NOT_AUTHORIZED);
	assert_int_equal(client_publish(a2, "presence/bob/state/status", "x", 1, 1, false),
	                 MQTT_RC_NOT_AUTHORIZED);
	assert_int_equal(client_publish(a2, "presence/alice", "{}", 2, 1, true),
	                 MQTT_RC_NOT_AUTHORIZED);
	assert_int_equal(client_publish(a2, "presence/alice/error", "{}", 2, 1, false),
	                 MQTT_RC_NOT_AUTHORIZED);
	assert_int_equal(client_publish(a1, "presence/bob/state", "{\"x\":1}", 7, 2, false), 0);
	expect_nothing(w);
	expect_nothing(a2);

	/* A will on another user's document: denied when sent. */
	will = client_connect(b, &will_o);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 3, mood), ++seq);
	client_drop(will);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2, mood), ++seq);
	assert_true(broker_log_wait(b,
	                            "denied publish by client alice-will (user alice) to "
	                            "presence/bob",
	                            5000));
	expect_nothing(w);

	/* Removing a key by an empty payload. */
	expect_publish_ok(client_publish(a1, "presence/alice/state/status", "", 0, 1, false));
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2, "{\"mood\":{\"x\":1}}"),
	                 ++seq);
	client_disconnect(a1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"mood\":{\"x\":1}}"),
	                 ++seq);
	*a2_out = a2;
	return seq;
}

/* bob's persistent sessions on both protocols: disconnect, resume (which makes Mosquitto 2.0
 * send a second DISCONNECT for the old context). Leaves bob-p and bob-3p connected. */
static void bob_scenario(struct broker *b, struct client *w, struct client **p5, struct client **p3)
{
	struct client_opts p5_o = {.id = "bob-p",
	                           .username = "bob",
	                           .password = "bob-pw",
	                           .protocol = 5,
	                           .persistent = true};
	struct client_opts p3_o = {
	    .id = "bob-3p", .username = "bob", .password = "bob-pw", .persistent = true};
	struct client *c;
	long seq;

	c = client_connect(b, &p5_o);
	seq = expect_doc(w, "presence/bob", "bob", true, 1, "{}");
	publish_text_ok(c, "presence/bob/state/status", "on", 1);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 1, "{\"status\":\"on\"}"),
	                 ++seq);
	client_disconnect(c);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", false, 0, "{}"), ++seq);
	*p5 = client_connect(b, &p5_o);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 1, "{}"), ++seq);

	c = client_connect(b, &p3_o);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 2, "{}"), ++seq);
	client_disconnect(c);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 1, "{}"), ++seq);
	*p3 = client_connect(b, &p3_o);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 2, "{}"), ++seq);
	expect_nothing(w);
}

/* carol's client ids taken over on MQTT 3.1.1 (clean) and 5 (persistent): no document in
 * between. Leaves both new sessions connected and returns the seq of her last document. */
static long carol_scenario(struct broker *b, struct client *w, struct client **c3,
                           struct client **c5)
{
	struct client_opts c3_o = {.id = "carol-dev", .username = "carol", .password = "carol-pw"};
	struct client_opts c5_o = {.id = "carol-5",
	                           .username = "carol",
	                           .password = "carol-pw",
	                           .protocol = 5,
	                           .persistent = true};
	struct client *old3, *old5;
	long seq;

	old3 = client_connect(b, &c3_o);
	seq = expect_doc(w, "presence/carol", "carol", true, 1, "{}");
	old5 = client_connect(b, &c5_o);
	assert_int_equal(expect_doc(w, "presence/carol", "carol", true, 2, "{}"), ++seq);
	publish_text_ok(old5, "presence/carol/state/where", "{\"room\":\"lab\"}", 1);
	assert_int_equal(
	    expect_doc(w, "presence/carol", "carol", true, 2, "{\"where\":{\"room\":\"lab\"}}"),
	    ++seq);

	*c3 = client_connect(b, &c3_o);
	assert_true(client_wait_closed(old3, 5000));
	*c5 = client_connect(b, &c5_o);
	assert_true(client_wait_closed(old5, 5000));
	expect_nothing(w);
	client_drop(old3);
	client_drop(old5);
	return seq;
}

/* Logins that are refused and sockets that never log in: no document. */
static void refused_scenario(struct broker *b, struct client *w)
{
	struct client_opts wrong3 = {.id = "w3", .username = "alice", .password = "nope"};
	struct client_opts wrong5 = {
	    .id = "w5", .username = "alice", .password = "nope", .protocol = 5};
	struct client_opts helper = {
	    .id = "h1", .username = "refused-by-helper", .password = "helper-pw"};
	struct client_opts unknown = {.id = "m1", .username = "mallory", .password = "x"};
	int fd;

	expect_refused(b, &wrong3);
	expect_refused(b, &wrong5);
	expect_refused(b, &helper);
	expect_refused(b, &unknown);

	fd = raw_open(broker_port(b));
	assert_true(fd >= 0);
	raw_close(fd);
	fd = raw_open(broker_port(b));
	assert_true(fd >= 0);
	assert_int_equal(raw_send_connect(fd, "raw", "alice", "nope", 60, true), 0);
	assert_true(raw_wait_closed(fd, 5000));
	raw_close(fd);
	expect_nothing(w);
}

static void the_plugin_is_clean_under_valgrind_through_every_callback_path(void **state)
{
	struct broker_opts opts = {.valgrind = true};
	struct broker *b;
	const char *passwd;
	struct client_opts erin_o = {
	    .id = "erin-off", .username = "erin", .password = "erin-pw", .persistent = true};
	struct client_opts dave_o = {.id = "dave-1", .username = "dave", .password = "dave-pw"};
	struct client_opts wrong = {.id = "w-after", .username = "dave", .password = "nope"};
	struct client_opts admin_o = {.id = "admin"};
	struct client_opts w_o = {.id = "watcher", .protocol = 5};
	struct client *w, *a2, *bob5, *bob3, *carol3, *carol5, *c, *admin;
	char extra[1024];
	char *conf;
	long carol_seq;
	struct timespec t0, t1;

	(void)state;
	if (!harness_have_valgrind()) {
		skip();
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	b = broker_prepare(&opts);
	passwd = broker_password_file(b, "passwd",
	                              "alice:alice-pw\nbob:bob-pw\ncarol:carol-pw\ndave:dave-pw\n"
	                              "erin:erin-pw\nrefused-by-helper:helper-pw\n");
	snprintf(extra, sizeof(extra),
	         "plugin_opt_acl allow\n"
	         "plugin_opt_max_keys 4\n"
	         "plugin_opt_max_state_bytes 256\n"
	         "plugin @HELPER@\n"
	         "password_file %s\n",
	         passwd);
	conf = broker_conf(extra);
	broker_launch(b, conf);
	assert_true(broker_log_contains(b, "mosquitto-presence: version"));

	w = client_connect(b, &w_o);
	assert_int_equal(client_subscribe(w, "presence/+", 1), 1);

	(void)alice_scenario(b, w, &a2);
	bob_scenario(b, w, &bob5, &bob3);
	carol_seq = carol_scenario(b, w, &carol3, &carol5);
	refused_scenario(b, w);

	/* An offline persistent session during the reload: BASIC_AUTH runs for it again. */
	c = client_connect(b, &erin_o);
	assert_int_equal(expect_doc(w, "presence/erin", "erin", true, 1, "{}"), 1);
	client_disconnect(c);
	assert_int_equal(expect_doc(w, "presence/erin", "erin", false, 0, "{}"), 2);
	broker_signal(b, SIGHUP);
	assert_true(broker_log_wait(b, "Reloading config", 5000));
	expect_nothing(w);
	expect_refused(b, &wrong);

	/* A connection lost without DISCONNECT. */
	c = client_connect(b, &dave_o);
	assert_int_equal(expect_doc(w, "presence/dave", "dave", true, 1, "{}"), 1);
	client_drop(c);
	assert_int_equal(expect_doc(w, "presence/dave", "dave", false, 0, "{}"), 2);

	/* A kick by the second plugin. */
	admin = client_connect(b, &admin_o);
	publish_text_ok(admin, "$CONTROL/test-helper/v1", "kick-client carol-dev", 1);
	assert_true(client_wait_closed(carol3, 5000));
	assert_int_equal(
	    expect_doc(w, "presence/carol", "carol", true, 1, "{\"where\":{\"room\":\"lab\"}}"),
	    ++carol_seq);
	client_drop(carol3);
	client_disconnect(carol5);
	assert_int_equal(expect_doc(w, "presence/carol", "carol", false, 0, "{}"), ++carol_seq);

	/* alice (with state) and bob (two persistent sessions) stay online for the shutdown,
	 * so cleanup frees live users, sessions and state. */
	expect_nothing(w);
	client_disconnect(admin);
	client_disconnect(w);
	broker_stop(b);
	client_disconnect(a2);
	client_disconnect(bob5);
	client_disconnect(bob3);
	free(conf);

	clock_gettime(CLOCK_MONOTONIC, &t1);
	print_message("valgrind scenario took %.1f s\n",
	              (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
}

/* A refused configuration frees what was parsed before the bad option: the topic prefix and
 * the ignore_users list are allocated, then max_keys fails. */
static void a_refused_configuration_leaks_nothing_under_valgrind(void **state)
{
	struct broker_opts opts = {.valgrind = true, .expect_failure = true};
	char *conf = broker_conf("plugin_opt_topic_prefix org/presence\n"
	                         "plugin_opt_ignore_users svc, bridge-1\n"
	                         "plugin_opt_max_keys 0\n");
	struct broker *b;

	(void)state;
	if (!harness_have_valgrind()) {
		skip();
	}
	b = broker_start_opts(conf, &opts);
	assert_int_not_equal(broker_exit_status(b), 0);
	assert_true(broker_log_contains(b, "mosquitto-presence: plugin_opt_max_keys: \"0\" is not "
	                                   "valid"));
	broker_stop(b);
	free(conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_teardown(name, harness_teardown)
	    T(the_plugin_is_clean_under_valgrind_through_every_callback_path),
	    T(a_refused_configuration_leaks_nothing_under_valgrind),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
