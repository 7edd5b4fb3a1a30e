/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Integration tests for the plugin options (plugin_opt_<name>) on a real Mosquitto 2.0.
 *
 * - A bad configuration stops the broker at startup, and the log says why in the exact words
 *   of plugin/core/config.c (the only explanation an operator gets).
 * - A good one is summarised in one startup line with the effective values.
 * - Each option takes effect end to end, as a subscriber and the broker log see it.
 * - SIGHUP does not re-read the options (Mosquitto 2.0 passes none to RELOAD), and a plugin
 *   loaded after ours still receives its events.
 *
 * Absence of a document is asserted without sleeping: after a round trip through the broker
 * (client_sync) every document due for earlier events has been delivered.
 */
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

/* Every line the plugin logs starts with this. */
#define LOG_PREFIX "mosquitto-presence: "

/* The startup line of a broker with every option at its default. */
#define DEFAULT_STARTUP_LINE                                                                       \
	LOG_PREFIX "version 0.1.0 started: topic_prefix=presence identity=username auth=defer "    \
	           "acl=defer max_state_bytes=8192 max_keys=64 max_state_depth=32 "                \
	           "max_query_users=1000 max_query_reply_bytes=65536 metrics_interval=10 "         \
	           "offline_delay=0 keep_state=false forget_after=2592000 max_users=1000000 "      \
	           "max_writes_per_second=10 max_write_burst=100 state_file=(none) "               \
	           "ignore_users=(none)\n"

/* Allow every login and every topic outside the plugin's namespace. */
#define OPEN_OPTIONS "plugin_opt_auth allow\nplugin_opt_acl allow\n"

/* Returns how often needle occurs in haystack. */
static int count_occurrences(const char *haystack, const char *needle)
{
	int n = 0;

	while ((haystack = strstr(haystack, needle)) != NULL) {
		n++;
		haystack += strlen(needle);
	}
	return n;
}

/*
 * Waits until b's main loop runs (it sends the CONNACK). Needed before stopping a broker no
 * client has talked to yet: Mosquitto 2.0 logs "running" and only then sets its run flag
 * (src/mosquitto.c, main), so a SIGTERM that arrives in between is lost and the broker runs on.
 */
static void wait_main_loop(struct broker *b)
{
	struct client_opts o = {.id = "settle"};
	struct client *c = client_connect(b, &o);

	client_disconnect(c);
}

/* Starts the standard config plus extra, which must stop the broker, and asserts that the log
 * has the line LOG_PREFIX message and that the plugin never logged its startup line. */
static void expect_refusal(const char *extra, const char *message)
{
	char *conf = broker_conf(extra);
	char *log = NULL;
	char line[1024];
	int status;

	status = broker_run_expect_failure(conf, &log);
	assert_int_not_equal(status, 0);
	snprintf(line, sizeof(line), LOG_PREFIX "%s\n", message);
	if (strstr(log, line) == NULL) {
		fail_msg("config:\n%s\nexpected the log line\n%swhich is not in the log:\n%s",
		         extra, line, log);
	}
	assert_null(strstr(log, LOG_PREFIX "version"));
	free(log);
	free(conf);
}

static void an_unknown_option_stops_the_broker_and_lists_the_known_options(void **state)
{
	(void)state;
	expect_refusal("plugin_opt_colour blue\n",
	               "unknown option plugin_opt_colour (known options: topic_prefix, identity, "
	               "ignore_users, auth, acl, max_state_bytes, max_keys, max_state_depth, "
	               "max_query_users, max_query_reply_bytes, metrics_interval, offline_delay, "
	               "keep_state, forget_after, max_users, max_writes_per_second, "
	               "max_write_burst, state_file, cluster_url, broker_id, "
	               "cluster_heartbeat_ms, cluster_lease_ms, cluster_username, "
	               "cluster_password_file, cluster_tls_cafile, cluster_tls_certfile, "
	               "cluster_tls_keyfile, cluster_wake_signal, visibility, groups_file, "
	               "group_from_username, see_everyone)");
}

/* One invalid value and the message it must produce. */
struct invalid_case {
	const char *line;
	const char *message;
};

static void each_invalid_value_stops_the_broker_with_a_message_naming_the_option(void **state)
{
	static const struct invalid_case cases[] = {
	    {"plugin_opt_identity foo",
	     "plugin_opt_identity: \"foo\" is not valid; use \"username\" or \"clientid\""},
	    {"plugin_opt_auth maybe",
	     "plugin_opt_auth: \"maybe\" is not valid; use \"defer\" or \"allow\""},
	    {"plugin_opt_acl x", "plugin_opt_acl: \"x\" is not valid; use \"defer\" or \"allow\""},
	    {"plugin_opt_max_state_bytes 0",
	     "plugin_opt_max_state_bytes: \"0\" is not valid; use an integer from 2 to 1048576"},
	    {"plugin_opt_max_state_bytes -1",
	     "plugin_opt_max_state_bytes: \"-1\" is not valid; use an integer from 2 to 1048576"},
	    {"plugin_opt_max_state_bytes abc",
	     "plugin_opt_max_state_bytes: \"abc\" is not valid; use an integer from 2 to 1048576"},
	    {"plugin_opt_max_state_bytes 99999999999",
	     "plugin_opt_max_state_bytes: \"99999999999\" is not valid; use an integer from 2 to "
	     "1048576"},
	    {"plugin_opt_max_keys 0",
	     "plugin_opt_max_keys: \"0\" is not valid; use an integer from 1 to 65535"},
	    {"plugin_opt_topic_prefix pres+ence",
	     "plugin_opt_topic_prefix: \"pres+ence\" is not valid; it must not contain the "
	     "wildcards '+' or '#'"},
	    {"plugin_opt_topic_prefix presence/#",
	     "plugin_opt_topic_prefix: \"presence/#\" is not valid; it must not contain the "
	     "wildcards '+' or '#'"},
	    {"plugin_opt_topic_prefix $presence",
	     "plugin_opt_topic_prefix: \"$presence\" is not valid; it must not start with '$' "
	     "(reserved for broker topics)"},
	    {"plugin_opt_ignore_users alice,,bob",
	     "plugin_opt_ignore_users: \"alice,,bob\" is not valid; names must not be empty; give "
	     "a comma-separated list such as \"alice, bob\""},
	    {"plugin_opt_ignore_users alice,",
	     "plugin_opt_ignore_users: \"alice,\" is not valid; names must not be empty; give a "
	     "comma-separated list such as \"alice, bob\""},
	};
	char line[256];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(line, sizeof(line), "%s\n", cases[i].line);
		expect_refusal(line, cases[i].message);
	}
}

static void a_repeated_option_stops_the_broker(void **state)
{
	(void)state;
	expect_refusal("plugin_opt_auth allow\nplugin_opt_acl allow\nplugin_opt_auth allow\n",
	               "plugin_opt_auth is given more than once; give it once");
	/* Also when both values would be valid but differ. */
	expect_refusal("plugin_opt_max_keys 8\nplugin_opt_max_keys 9\n",
	               "plugin_opt_max_keys is given more than once; give it once");
}

/* Returns a TCP port on 127.0.0.1 that was free a moment ago. */
static int free_port(void)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
	                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int port;

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	port = ntohs(addr.sin_port);
	close(fd);
	return port;
}

static void per_listener_settings_with_the_plugin_on_two_listeners_refuses_to_start(void **state)
{
	char conf[1024];
	char *log = NULL;
	int status;

	(void)state;
	snprintf(conf, sizeof(conf),
	         "per_listener_settings true\n"
	         "log_type all\n"
	         "persistence false\n"
	         "listener @PORT@ 127.0.0.1\n"
	         "allow_anonymous true\n"
	         "plugin @PLUGIN@\n"
	         "plugin_opt_auth allow\n"
	         "listener %d 127.0.0.1\n"
	         "allow_anonymous true\n"
	         "plugin @PLUGIN@\n"
	         "plugin_opt_auth allow\n",
	         free_port());
	status = broker_run_expect_failure(conf, &log);
	assert_int_not_equal(status, 0);
	if (harness_broker_version() < HARNESS_MOSQUITTO_VERSION(2, 1, 0)) {
		assert_non_null(
		    strstr(log, LOG_PREFIX "per_listener_settings true is not supported"));
		assert_non_null(strstr(log, "Set per_listener_settings false."));
		/* No instance ran: neither listener's plugin logged its startup line. */
		assert_null(strstr(log, LOG_PREFIX "version"));
	} else {
		/* 2.1 serves one listener per instance; the second instance is refused. */
		assert_non_null(strstr(log, LOG_PREFIX "the plugin is loaded more than once"));
		assert_non_null(strstr(log, "load it once, with per_listener_settings false."));
	}
	free(log);
}

static void default_options_are_logged_in_one_startup_line(void **state)
{
	char *conf = broker_conf(NULL);
	struct broker *b = broker_start(conf);
	char *log = broker_log(b);

	(void)state;
	if (count_occurrences(log, DEFAULT_STARTUP_LINE) != 1) {
		fail_msg("expected the startup line once:\n%slog:\n%s", DEFAULT_STARTUP_LINE, log);
	}
	assert_int_equal(count_occurrences(log, LOG_PREFIX), 1);
	free(log);
	wait_main_loop(b);
	broker_stop(b);
	free(conf);
}

static void every_option_set_is_logged_with_its_effective_value(void **state)
{
	char *conf = broker_conf("plugin_opt_topic_prefix org/site/presence\n"
	                         "plugin_opt_identity clientid\n"
	                         "plugin_opt_ignore_users  svc ,bridge-1,\tmonitor\n"
	                         "plugin_opt_auth allow\n"
	                         "plugin_opt_acl allow\n"
	                         "plugin_opt_max_state_bytes 100\n"
	                         "plugin_opt_max_keys 3\n"
	                         "plugin_opt_max_state_depth 4\n"
	                         "plugin_opt_max_query_users 5\n"
	                         "plugin_opt_max_query_reply_bytes 4096\n"
	                         "plugin_opt_metrics_interval 0\n");
	struct broker *b = broker_start(conf);
	char *log = broker_log(b);
	static const char line[] =
	    LOG_PREFIX "version 0.1.0 started: topic_prefix=org/site/presence identity=clientid "
	               "auth=allow acl=allow max_state_bytes=100 max_keys=3 max_state_depth=4 "
	               "max_query_users=5 max_query_reply_bytes=4096 metrics_interval=0 "
	               "offline_delay=0 keep_state=false forget_after=2592000 "
	               "max_users=1000000 max_writes_per_second=10 max_write_burst=100 "
	               "state_file=(none) ignore_users=svc,bridge-1,monitor\n";

	(void)state;
	if (count_occurrences(log, line) != 1) {
		fail_msg("expected the startup line once:\n%slog:\n%s", line, log);
	}
	free(log);
	wait_main_loop(b);
	broker_stop(b);
	free(conf);
}

/* Waits for the next message on c and asserts its topic and retain flag; returns it. */
static struct msg *expect_topic(struct client *c, const char *topic, bool retain)
{
	struct msg *m = client_wait_msg(c, 5000);

	if (m == NULL) {
		fail_msg("no message on %s", topic);
	}
	if (strcmp(m->topic, topic) != 0 || m->retain != retain) {
		fail_msg("expected a message on %s (retain %d), got %s (retain %d): %.*s", topic,
		         retain, m->topic, m->retain, m->payloadlen, m->payload);
	}
	return m;
}

static void a_multi_level_topic_prefix_moves_the_whole_namespace(void **state)
{
	char *conf = broker_conf(OPEN_OPTIONS "plugin_opt_topic_prefix org/site/presence\n");
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "org/site/presence/+");
	struct client_opts all_o = {.id = "all", .protocol = 5};
	struct client_opts alice_o = {.id = "alice1", .username = "alice", .protocol = 5};
	struct client *all, *alice;
	struct msg *m;

	(void)state;
	/* Sees everything under both prefixes (but not the harness's sync topics). */
	all = client_connect(b, &all_o);
	assert_int_equal(client_subscribe(all, "org/#", 1), 1);
	assert_int_equal(client_subscribe(all, "presence/#", 1), 1);

	alice = client_connect(b, &alice_o);
	assert_int_equal(expect_doc(w, "org/site/presence/alice", "alice", true, 1, "{}"), 1);

	/* A state write under the new prefix applies and is consumed. */
	publish_text_ok(alice, "org/site/presence/alice/state/status", "away", 1);
	assert_int_equal(
	    expect_doc(w, "org/site/presence/alice", "alice", true, 1, "{\"status\":\"away\"}"), 2);

	/* Under the default prefix it is an ordinary topic: delivered, and no document. */
	publish_text_ok(alice, "presence/alice/state/status", "busy", 1);
	expect_nothing(w);

	/* Nobody writes a document under the new prefix. */
	assert_int_equal(client_publish(alice, "org/site/presence/alice", "{}", 2, 1, false),
	                 MQTT_RC_NOT_AUTHORIZED);
	expect_nothing(w);

	/* The catch-all subscriber got the two documents and the ordinary message, nothing
	 * else. */
	assert_true(client_sync(all, 5000));
	msg_free(expect_topic(all, "org/site/presence/alice", false));
	msg_free(expect_topic(all, "org/site/presence/alice", false));
	m = expect_topic(all, "presence/alice/state/status", false);
	assert_string_equal(m->payload, "busy");
	msg_free(m);
	expect_nothing(all);

	client_disconnect(alice);
	assert_int_equal(expect_doc(w, "org/site/presence/alice", "alice", false, 0, "{}"), 3);
	client_disconnect(all);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* Connects alice (MQTT 5) subscribed to her own error topic. */
static struct client *alice_with_errors(struct broker *b)
{
	struct client_opts o = {.id = "alice1", .username = "alice", .protocol = 5};
	struct client *c = client_connect(b, &o);

	assert_int_equal(client_subscribe(c, "presence/alice/error", 1), 1);
	return c;
}

static void max_keys_rejects_a_write_with_a_notice_on_the_error_topic(void **state)
{
	char *conf = broker_conf(OPEN_OPTIONS "plugin_opt_max_keys 2\n");
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *alice;

	(void)state;
	alice = alice_with_errors(b);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 1);
	publish_text_ok(alice, "presence/alice/state/a", "1", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"a\":1}"), 2);
	publish_text_ok(alice, "presence/alice/state/b", "2", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"a\":1,\"b\":2}"), 3);

	/* A third key, by set and by merge: rejected as a whole. */
	publish_text_ok(alice, "presence/alice/state/c", "3", 1);
	expect_msg(alice, "presence/alice/error",
	           "{\"topic\":\"presence/alice/state/c\","
	           "\"error\":\"state would have 3 keys; max_keys is 2\"}",
	           -1, false);
	assert_true(broker_log_wait(b,
	                            LOG_PREFIX
	                            "rejected state write by client alice1 (user alice) "
	                            "to presence/alice/state/c: state would have 3 keys; "
	                            "max_keys is 2",
	                            5000));
	publish_text_ok(alice, "presence/alice/state", "{\"a\":5,\"c\":3,\"d\":4}", 1);
	expect_msg(alice, "presence/alice/error",
	           "{\"topic\":\"presence/alice/state\","
	           "\"error\":\"state would have 4 keys; max_keys is 2\"}",
	           -1, false);
	expect_nothing(w);
	expect_nothing(alice);

	/* Changing an existing key and swapping one key for another stay within the limit. */
	publish_text_ok(alice, "presence/alice/state/a", "5", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"a\":5,\"b\":2}"), 4);
	publish_text_ok(alice, "presence/alice/state", "{\"b\":null,\"c\":3}", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"a\":5,\"c\":3}"), 5);

	client_disconnect(alice);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), 6);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void max_state_bytes_rejects_a_write_with_a_notice_on_the_error_topic(void **state)
{
	char *conf = broker_conf(OPEN_OPTIONS "plugin_opt_max_state_bytes 40\n");
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *alice;
	static const char too_big[] = "{\"status\":\"away\",\"note\":\"01234567890123456789\"}";
	static const char fits[] = "{\"status\":\"away\",\"note\":\"0123456789abc\"}";
	char notice[256];

	(void)state;
	/* too_big is over the limit; fits is exactly at it. */
	assert_true(strlen(too_big) > 40);
	assert_int_equal(strlen(fits), 40);

	alice = alice_with_errors(b);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 1);
	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}"),
	                 2);

	publish_text_ok(alice, "presence/alice/state/note", "01234567890123456789", 1);
	snprintf(notice, sizeof(notice),
	         "{\"topic\":\"presence/alice/state/note\","
	         "\"error\":\"state would be %zu bytes; max_state_bytes is 40\"}",
	         strlen(too_big));
	expect_msg(alice, "presence/alice/error", notice, -1, false);
	assert_true(broker_log_wait(b,
	                            LOG_PREFIX "rejected state write by client alice1 (user alice) "
	                                       "to presence/alice/state/note: state would be",
	                            5000));
	expect_nothing(w);

	/* Exactly max_state_bytes is allowed. */
	publish_text_ok(alice, "presence/alice/state/note", "0123456789abc", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, fits), 3);
	expect_nothing(alice);

	client_disconnect(alice);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), 4);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void ignored_users_have_no_presence_and_cannot_write_state(void **state)
{
	char *conf = broker_conf(OPEN_OPTIONS "plugin_opt_ignore_users svc, bridge-1\n");
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/#");
	struct client_opts svc_o = {.id = "svc1", .username = "svc", .protocol = 5};
	struct client_opts bridge_o = {.id = "br1", .username = "bridge-1"};
	struct client_opts alice_o = {.id = "alice1", .username = "alice"};
	struct client *svc, *bridge, *alice;
	int rc;

	(void)state;
	svc = client_connect(b, &svc_o);
	bridge = client_connect(b, &bridge_o);
	expect_nothing(w);

	/* Not tracked: its own state topics are denied (never consumed into a document). */
	rc = client_publish(svc, "presence/svc/state/status", "up", 2, 1, false);
	assert_int_equal(rc, MQTT_RC_NOT_AUTHORIZED);
	assert_true(broker_log_wait(b,
	                            LOG_PREFIX "denied publish by client svc1 (user svc) to "
	                                       "presence/svc/state/status",
	                            5000));
	assert_int_equal(
	    client_publish(bridge, "presence/bridge-1/state", "{\"a\":1}", 7, 1, false), 0);
	client_disconnect(svc);
	client_disconnect(bridge);
	expect_nothing(w);

	/* A user that is not listed is tracked as usual: its document is the first one. */
	alice = client_connect(b, &alice_o);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 1);
	client_disconnect(alice);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), 2);

	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* Replaces the first occurrence of from by to in the broker's mosquitto.conf. */
static void edit_broker_conf(struct broker *b, const char *from, const char *to)
{
	char path[4096];
	char *text;
	char *edited;
	char *at;
	FILE *f;
	long size;
	size_t head;

	snprintf(path, sizeof(path), "%s/mosquitto.conf", broker_dir(b));
	f = fopen(path, "r");
	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	size = ftell(f);
	assert_true(size > 0);
	rewind(f);
	text = calloc(1, (size_t)size + 1);
	assert_non_null(text);
	assert_int_equal(fread(text, 1, (size_t)size, f), (size_t)size);
	fclose(f);
	at = strstr(text, from);
	assert_non_null(at);
	head = (size_t)(at - text);
	edited = calloc(1, (size_t)size + strlen(to) + 1);
	assert_non_null(edited);
	memcpy(edited, text, head);
	strcpy(edited + head, to);
	strcat(edited, at + strlen(from));
	free(harness_write_file(broker_dir(b), "mosquitto.conf", edited));
	free(edited);
	free(text);
}

static void sighup_keeps_the_startup_options_and_documents_keep_flowing(void **state)
{
	char *conf = broker_conf(OPEN_OPTIONS "plugin_opt_max_keys 1\n");
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client_opts alice2_o = {.id = "alice2", .username = "alice"};
	struct client_opts bob_o = {.id = "bob1", .username = "bob", .protocol = 5};
	struct client *alice, *alice2, *bob;
	char *log;

	(void)state;
	alice = alice_with_errors(b);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 1);
	publish_text_ok(alice, "presence/alice/state/a", "1", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"a\":1}"), 2);

	/* Raise the limit in the file, then reload: the plugin keeps its startup options. */
	edit_broker_conf(b, "plugin_opt_max_keys 1\n", "plugin_opt_max_keys 5\n");
	broker_signal(b, SIGHUP);
	assert_true(broker_log_wait(b, "Reloading config", 5000));
	expect_nothing(w);

	publish_text_ok(alice, "presence/alice/state/b", "2", 1);
	expect_msg(alice, "presence/alice/error",
	           "{\"topic\":\"presence/alice/state/b\","
	           "\"error\":\"state would have 2 keys; max_keys is 1\"}",
	           -1, false);
	expect_nothing(w);

	/* Everything else still flows: state writes, new sessions, new users. */
	publish_text_ok(alice, "presence/alice/state/a", "\"x\"", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"a\":\"x\"}"), 3);
	alice2 = client_connect(b, &alice2_o);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2, "{\"a\":\"x\"}"), 4);
	bob = client_connect(b, &bob_o);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 1, "{}"), 1);
	client_disconnect(alice2);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"a\":\"x\"}"), 5);
	client_disconnect(alice);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), 6);
	client_disconnect(bob);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", false, 0, "{}"), 2);

	/* The plugin was not initialised again. */
	log = broker_log(b);
	assert_int_equal(count_occurrences(log, LOG_PREFIX "version"), 1);
	free(log);

	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void a_plugin_loaded_after_it_still_receives_its_events(void **state)
{
	struct broker *b = broker_prepare(NULL);
	const char *passwd =
	    broker_password_file(b, "passwd", "alice:alice-pw\nrefused-by-helper:helper-pw\n");
	struct client_opts refused_o = {
	    .id = "r1", .username = "refused-by-helper", .password = "helper-pw"};
	struct client_opts alice_o = {
	    .id = "alice1", .username = "alice", .password = "alice-pw", .protocol = 5};
	struct client_opts admin_o = {.id = "admin"};
	struct client *w, *alice, *admin;
	char extra[1024];
	char *conf;
	char *log;
	const char *ours, *helper;

	(void)state;
	snprintf(extra, sizeof(extra), "plugin_opt_acl allow\nplugin @HELPER@\npassword_file %s\n",
	         passwd);
	conf = broker_conf(extra);
	broker_launch(b, conf);

	/* Ours is initialised first. */
	log = broker_log(b);
	ours = strstr(log, LOG_PREFIX "version 0.1.0 started");
	helper = strstr(log, "test-helper: loaded");
	assert_non_null(ours);
	assert_non_null(helper);
	assert_true(ours < helper);
	free(log);

	w = client_watch(b, "watcher", "presence/+");

	/* BASIC_AUTH reaches the helper after ours deferred: it refuses a valid password. */
	expect_refused(b, &refused_o);
	assert_true(broker_log_wait(b, "test-helper: refusing login of refused-by-helper", 5000));
	expect_nothing(w);

	alice = client_connect(b, &alice_o);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 1);

	/* CONTROL reaches the helper too: its kick takes alice's session away. */
	admin = client_connect(b, &admin_o);
	publish_text_ok(admin, "$CONTROL/test-helper/v1", "kick-client alice1", 1);
	assert_true(client_wait_closed(alice, 5000));
	assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), 2);

	client_drop(alice);
	client_disconnect(admin);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_teardown(name, harness_teardown)
	    T(an_unknown_option_stops_the_broker_and_lists_the_known_options),
	    T(each_invalid_value_stops_the_broker_with_a_message_naming_the_option),
	    T(a_repeated_option_stops_the_broker),
	    T(per_listener_settings_with_the_plugin_on_two_listeners_refuses_to_start),
	    T(default_options_are_logged_in_one_startup_line),
	    T(every_option_set_is_logged_with_its_effective_value),
	    T(a_multi_level_topic_prefix_moves_the_whole_namespace),
	    T(max_keys_rejects_a_write_with_a_notice_on_the_error_topic),
	    T(max_state_bytes_rejects_a_write_with_a_notice_on_the_error_topic),
	    T(ignored_users_have_no_presence_and_cannot_write_state),
	    T(sighup_keeps_the_startup_options_and_documents_keep_flowing),
	    T(a_plugin_loaded_after_it_still_receives_its_events),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
