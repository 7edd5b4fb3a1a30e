/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Integration tests for the session lifecycle on a real Mosquitto 2.0: every item of the
 * "Lifecycle" contract, asserted through the presence documents a `presence/+` subscriber
 * receives.
 *
 * Absence of a document is asserted without sleeping: documents are published at the end of
 * the broker loop iteration and delivered at the start of the next one, so after a round trip
 * through the broker (client_sync) every document due for earlier events has been delivered,
 * and seq must continue without a gap.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "rawmqtt.h"

/* Allow everything: these tests are about sessions, not access control. */
static const char *const open_conf = "plugin_opt_auth allow\nplugin_opt_acl allow\n";

static void two_sessions_keep_the_user_available_until_the_last_leaves(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client_opts o1 = {.id = "alice-phone", .username = "alice"};
	struct client_opts o2 = {.id = "alice-laptop", .username = "alice", .protocol = 5};
	struct client *c1, *c2;
	struct msg *m;

	(void)state;
	c1 = client_connect(b, &o1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 1);
	c2 = client_connect(b, &o2);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2, "{}"), 2);
	client_disconnect(c1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 3);
	client_disconnect(c2);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), 4);

	/* The document is retained, QoS 1 and marked as JSON for MQTT 5 subscribers. */
	client_disconnect(w);
	w = client_watch(b, "watcher", "presence/+");
	m = client_wait_msg(w, 5000);
	assert_non_null(m);
	assert_string_equal(m->topic, "presence/alice");
	assert_true(m->retain);
	assert_int_equal(m->qos, 1);
	assert_int_equal(m->payload_format, 1);
	assert_string_equal(m->content_type, "application/json");
	msg_free(m);

	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* One takeover case: the same client id connects again while connected. */
static void takeover_case(int protocol, bool persistent)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client_opts o = {
	    .id = "dev", .username = "alice", .protocol = protocol, .persistent = persistent};
	struct client *old, *new;
	long seq;

	old = client_connect(b, &o);
	seq = expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	publish_text_ok(old, "presence/alice/state/status", "away", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}"),
	                 seq + 1);

	new = client_connect(b, &o);
	assert_true(client_wait_closed(old, 5000));
	expect_nothing(w);

	/* The new session counts (and the state survived): the next document follows directly. */
	publish_text_ok(new, "presence/alice/state/mood", "ok", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1,
	                            "{\"status\":\"away\",\"mood\":\"ok\"}"),
	                 seq + 2);
	client_disconnect(new);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), seq + 3);

	client_drop(old);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void takeover_publishes_nothing_mqtt311_clean(void **state)
{
	(void)state;
	takeover_case(4, false);
}

static void takeover_publishes_nothing_mqtt311_persistent(void **state)
{
	(void)state;
	takeover_case(4, true);
}

static void takeover_publishes_nothing_mqtt5_clean(void **state)
{
	(void)state;
	takeover_case(5, false);
}

static void takeover_publishes_nothing_mqtt5_persistent(void **state)
{
	(void)state;
	takeover_case(5, true);
}

/* Resuming a persistent session makes Mosquitto 2.0 send a second DISCONNECT for the old,
 * already offline context. */
static void resume_case(int protocol)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client_opts o = {
	    .id = "pers", .username = "bob", .protocol = protocol, .persistent = true};
	struct client_opts other = {.id = "bob-other", .username = "bob"};
	struct client *c, *c2;
	long seq;

	c = client_connect(b, &o);
	seq = expect_doc(w, "presence/bob", "bob", true, 1, "{}");
	client_disconnect(c);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", false, 0, "{}"), seq + 1);

	c = client_connect(b, &o);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 1, "{}"), seq + 2);
	expect_nothing(w);

	/* A second session: the count must be 2 (the second DISCONNECT took nothing away). */
	c2 = client_connect(b, &other);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 2, "{}"), seq + 3);
	client_disconnect(c2);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 1, "{}"), seq + 4);
	client_disconnect(c);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", false, 0, "{}"), seq + 5);

	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void resumed_persistent_session_counts_once_mqtt311(void **state)
{
	(void)state;
	resume_case(4);
}

static void resumed_persistent_session_counts_once_mqtt5(void **state)
{
	(void)state;
	resume_case(5);
}

static void refused_logins_and_silent_sockets_are_never_counted(void **state)
{
	struct broker *b = broker_prepare(NULL);
	const char *passwd = broker_password_file(b, "passwd",
	                                          "alice:alice-pw\nbob:bob-pw\n"
	                                          "refused-by-helper:x\n");
	char extra[1024];
	char *conf;
	struct client_opts bad = {.id = "bad", .username = "alice", .password = "wrong"};
	struct client_opts bad5 = {
	    .id = "bad5", .username = "alice", .password = "wrong", .protocol = 5};
	struct client_opts helper = {.id = "h", .username = "refused-by-helper", .password = "x"};
	struct client_opts unknown = {.id = "u", .username = "mallory", .password = "x"};
	struct client_opts good = {.id = "bob1", .username = "bob", .password = "bob-pw"};
	struct client *w, *c;
	int fd, rc;

	(void)state;
	snprintf(extra, sizeof(extra), "plugin_opt_acl allow\nplugin @HELPER@\npassword_file %s\n",
	         passwd);
	conf = broker_conf(extra);
	broker_launch(b, conf);
	w = client_watch(b, "watcher", "presence/+");

	expect_refused(b, &bad);
	expect_refused(b, &bad5);
	expect_refused(b, &helper);
	expect_refused(b, &unknown);

	/* A socket that never sends CONNECT, closed by the client. */
	fd = raw_open(broker_port(b));
	assert_true(fd >= 0);
	raw_close(fd);
	/* A CONNECT that is refused and a second one on the same socket. */
	fd = raw_open(broker_port(b));
	assert_true(fd >= 0);
	rc = raw_send_connect(fd, "raw", "alice", "wrong", 60, true);
	assert_int_equal(rc, 0);
	assert_true(raw_wait_closed(fd, 5000));
	raw_close(fd);

	expect_nothing(w);
	c = client_connect(b, &good);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 1, "{}"), 1);
	client_disconnect(c);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", false, 0, "{}"), 2);

	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void outgoing_bridge_is_never_counted(void **state)
{
	char *remote_conf = broker_conf_without_plugin(NULL);
	struct broker *remote = broker_start(remote_conf);
	char extra[1024];
	char *conf;
	struct broker *b;
	struct client *w, *c;
	struct client_opts carol = {.id = "carol1", .username = "carol"};

	(void)state;
	snprintf(extra, sizeof(extra),
	         "%s"
	         "connection tobridge\n"
	         "address 127.0.0.1:%d\n"
	         "remote_clientid bridge-a\n"
	         "remote_username bridgeuser\n"
	         "local_username bridgeuser\n"
	         "local_clientid local.bridge-a\n"
	         "topic chat/# both 0\n"
	         "restart_timeout 1\n",
	         open_conf, broker_port(remote));
	conf = broker_conf(extra);
	b = broker_start(conf);
	w = client_watch(b, "watcher", "presence/+");
	assert_true(broker_log_wait(remote, "bridge-a", 10000));

	/* The remote side goes away: the bridge context is disconnected on our broker. */
	broker_stop(remote);
	assert_true(broker_log_wait(b, "bridge", 10000));

	expect_nothing(w);
	c = client_connect(b, &carol);
	assert_int_equal(expect_doc(w, "presence/carol", "carol", true, 1, "{}"), 1);
	client_disconnect(c);
	assert_int_equal(expect_doc(w, "presence/carol", "carol", false, 0, "{}"), 2);

	client_disconnect(w);
	broker_stop(b);
	free(conf);
	free(remote_conf);
}

static void sighup_changes_nobodys_presence(void **state)
{
	struct broker *b = broker_prepare(NULL);
	const char *passwd = broker_password_file(b, "passwd", "alice:alice-pw\ncarol:carol-pw\n");
	char extra[1024];
	char *conf;
	struct client_opts alice = {.id = "alice1", .username = "alice", .password = "alice-pw"};
	struct client_opts alice2 = {.id = "alice2", .username = "alice", .password = "alice-pw"};
	struct client_opts carol = {
	    .id = "offl", .username = "carol", .password = "carol-pw", .persistent = true};
	struct client_opts carol5 = {.id = "offl5",
	                             .username = "carol",
	                             .password = "carol-pw",
	                             .persistent = true,
	                             .protocol = 5};
	struct client_opts wrong = {.id = "wrong", .username = "alice", .password = "nope"};
	struct client *w, *a, *a2, *c;
	long alice_seq, carol_seq;

	(void)state;
	snprintf(extra, sizeof(extra), "plugin_opt_acl allow\npassword_file %s\n", passwd);
	conf = broker_conf(extra);
	broker_launch(b, conf);
	w = client_watch(b, "watcher", "presence/+");

	a = client_connect(b, &alice);
	alice_seq = expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	c = client_connect(b, &carol);
	carol_seq = expect_doc(w, "presence/carol", "carol", true, 1, "{}");
	client_disconnect(c);
	assert_int_equal(expect_doc(w, "presence/carol", "carol", false, 0, "{}"), carol_seq + 1);
	c = client_connect(b, &carol5);
	assert_int_equal(expect_doc(w, "presence/carol", "carol", true, 1, "{}"), carol_seq + 2);
	client_disconnect(c);
	assert_int_equal(expect_doc(w, "presence/carol", "carol", false, 0, "{}"), carol_seq + 3);

	/* Reload re-runs BASIC_AUTH for alice's session and carol's two offline sessions. */
	broker_signal(b, SIGHUP);
	assert_true(broker_log_wait(b, "Reloading config", 5000));
	expect_nothing(w);

	/* The password file still works after the reload (RELOAD returned DEFER). */
	expect_refused(b, &wrong);

	/* alice still has exactly one session. */
	a2 = client_connect(b, &alice2);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2, "{}"), alice_seq + 1);
	client_disconnect(a2);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), alice_seq + 2);
	client_disconnect(a);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), alice_seq + 3);
	expect_nothing(w);

	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void abrupt_close_and_keepalive_timeout_make_the_user_unavailable(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client_opts dave = {.id = "dave1", .username = "dave"};
	struct client *c;
	uint8_t type, buf[64];
	size_t len;
	int fd;

	(void)state;
	c = client_connect(b, &dave);
	assert_int_equal(expect_doc(w, "presence/dave", "dave", true, 1, "{}"), 1);
	client_drop(c);
	assert_int_equal(expect_doc(w, "presence/dave", "dave", false, 0, "{}"), 2);

	/* A raw client with a 1 s keepalive that never sends anything after CONNACK. */
	fd = raw_open(broker_port(b));
	assert_true(fd >= 0);
	assert_int_equal(raw_send_connect(fd, "erin1", "erin", NULL, 1, true), 0);
	assert_int_equal(raw_read_packet(fd, &type, buf, sizeof(buf), &len, 5000), 0);
	assert_int_equal(type >> 4, 2);
	assert_int_equal(expect_doc(w, "presence/erin", "erin", true, 1, "{}"), 1);
	/* Mosquitto 2.0.11 checks keepalives every 5 s: allow for that, bounded. */
	assert_true(raw_wait_closed(fd, 20000));
	raw_close(fd);
	assert_int_equal(expect_doc(w, "presence/erin", "erin", false, 0, "{}"), 2);

	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void kicked_session_makes_the_user_unavailable(void **state)
{
	char extra[256];
	char *conf;
	struct broker *b;
	struct client *w, *c, *admin;
	struct client_opts frank = {.id = "frank1", .username = "frank", .protocol = 5};
	struct client_opts adm = {.id = "admin"};

	(void)state;
	snprintf(extra, sizeof(extra), "%splugin @HELPER@\n", open_conf);
	conf = broker_conf(extra);
	b = broker_start(conf);
	w = client_watch(b, "watcher", "presence/+");
	c = client_connect(b, &frank);
	assert_int_equal(expect_doc(w, "presence/frank", "frank", true, 1, "{}"), 1);

	admin = client_connect(b, &adm);
	assert_int_equal(
	    client_publish(admin, "$CONTROL/test-helper/v1", "kick-client frank1", 18, 1, false),
	    0);
	assert_true(client_wait_closed(c, 5000));
	assert_int_equal(expect_doc(w, "presence/frank", "frank", false, 0, "{}"), 2);

	client_drop(c);
	client_disconnect(admin);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void state_write_in_the_same_packet_as_connect_applies(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	uint8_t type, buf[64], packets[256];
	char *state_json;
	struct msg *m;
	cJSON *doc;
	size_t len;
	long seq;
	int fd;

	(void)state;
	/* CONNECT and PUBLISH in one write: the PUBLISH may arrive while the session is still
	 * PENDING (before the end of the loop iteration). */
	fd = raw_open(broker_port(b));
	assert_true(fd >= 0);
	len = 0;
	assert_int_equal(
	    raw_build_connect(packets, sizeof(packets), &len, "gina1", "gina", NULL, 60, true), 0);
	assert_int_equal(raw_build_publish(packets, sizeof(packets), &len,
	                                   "presence/gina/state/status", "busy", 4, 1, false, 1),
	                 0);
	assert_int_equal(raw_write_all(fd, packets, len), 0);
	assert_int_equal(raw_read_packet(fd, &type, buf, sizeof(buf), &len, 5000), 0);
	assert_int_equal(type >> 4, 2);
	assert_int_equal(raw_read_packet(fd, &type, buf, sizeof(buf), &len, 5000), 0);
	assert_int_equal(type >> 4, 4);
	/* Mosquitto 2.0 reads one packet per socket per loop iteration on plain TCP, so the
	 * PUBLISH is normally handled after the session was promoted; either way the state
	 * must arrive, at the latest in the second document. */
	m = client_wait_msg(w, 5000);
	assert_non_null(m);
	doc = msg_json(m);
	state_json = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(doc, "state"));
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "available")));
	seq = 1;
	if (strcmp(state_json, "{}") == 0) {
		seq = expect_doc(w, "presence/gina", "gina", true, 1, "{\"status\":\"busy\"}");
		assert_int_equal(seq, 2);
	} else {
		assert_string_equal(state_json, "{\"status\":\"busy\"}");
	}
	cJSON_free(state_json);
	cJSON_Delete(doc);
	msg_free(m);
	raw_close(fd);
	assert_int_equal(expect_doc(w, "presence/gina", "gina", false, 0, "{}"), seq + 1);

	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void sessions_without_username_are_not_tracked(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client_opts anon = {.id = "anon1"};
	struct client_opts empty = {.id = "empty1", .username = ""};
	struct client *c1, *c2;

	(void)state;
	c1 = client_connect(b, &anon);
	c2 = client_connect(b, &empty);
	/* Not tracked: may not write any state topic. */
	assert_int_equal(client_publish(c1, "presence/anon1/state/x", "1", 1, 1, false), 0);
	expect_nothing(w);
	client_disconnect(c1);
	client_disconnect(c2);
	expect_nothing(w);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static const char per_listener_conf[] = "per_listener_settings true\n"
                                        "log_type all\n"
                                        "persistence false\n"
                                        "listener @PORT@ 127.0.0.1\n"
                                        "allow_anonymous true\n"
                                        "plugin @PLUGIN@\n"
                                        "plugin_opt_auth allow\n";

/* Mosquitto 2.0 loads a plugin per listener and, before 2.0.15, sends no TICK then: refused.
 * Mosquitto 2.1 (where per_listener_settings is deprecated) gives the one instance the sessions
 * of its listener, ticks included; a second instance is refused (test_options). */
static void per_listener_settings_is_refused_on_2_0_and_serves_its_listener_on_2_1(void **state)
{
	char *log = NULL;
	struct broker *b;
	struct client *w, *alice;
	int status;

	(void)state;
	if (harness_broker_version() < HARNESS_MOSQUITTO_VERSION(2, 1, 0)) {
		status = broker_run_expect_failure(per_listener_conf, &log);
		assert_int_not_equal(status, 0);
		assert_non_null(strstr(log, "per_listener_settings true is not supported"));
		free(log);
		return;
	}
	b = broker_start(per_listener_conf);
	w = client_watch(b, "watcher", "presence/+");
	alice = client_connect_as(b, "alice1", "alice", 5);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 1);
	client_disconnect(alice);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), 2);
	client_disconnect(w);
	broker_stop(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_teardown(name, harness_teardown)
	    T(two_sessions_keep_the_user_available_until_the_last_leaves),
	    T(takeover_publishes_nothing_mqtt311_clean),
	    T(takeover_publishes_nothing_mqtt311_persistent),
	    T(takeover_publishes_nothing_mqtt5_clean),
	    T(takeover_publishes_nothing_mqtt5_persistent),
	    T(resumed_persistent_session_counts_once_mqtt311),
	    T(resumed_persistent_session_counts_once_mqtt5),
	    T(refused_logins_and_silent_sockets_are_never_counted),
	    T(outgoing_bridge_is_never_counted),
	    T(sighup_changes_nobodys_presence),
	    T(abrupt_close_and_keepalive_timeout_make_the_user_unavailable),
	    T(kicked_session_makes_the_user_unavailable),
	    T(state_write_in_the_same_packet_as_connect_applies),
	    T(sessions_without_username_are_not_tracked),
	    T(per_listener_settings_is_refused_on_2_0_and_serves_its_listener_on_2_1),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
