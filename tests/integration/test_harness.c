/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * A self-test of the integration harness against a broker WITHOUT our plugin.
 *
 * Proves what every other integration test relies on: a broker starts on a free port from a
 * generated config and stops cleanly with a verdict; v3 and v5 clients connect, subscribe,
 * publish at QoS 0/1/2 and receive in order; retained messages, wills, persistent sessions,
 * take-overs and refused logins look as expected; SIGHUP and log waits work; the raw client can
 * hold a connection without CONNECT and pipeline CONNECT+PUBLISH; a bad config is reported as a
 * failure; the verdict tells plugin leaks from broker leaks; a broker never outlives its test
 * process. The helper plugin and valgrind cases run when they are available.
 */
#include "harness.h"
#include "rawmqtt.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Starts a plugin-less broker with extra config lines. */
static struct broker *start_bare(const char *extra)
{
	char *conf = broker_conf_without_plugin(extra);
	struct broker *b = broker_start(conf);

	free(conf);
	return b;
}

/* The local TCP port of c's connection (the port the broker logs in 2.1). */
static int client_local_port(struct client *c)
{
	struct sockaddr_in addr;
	socklen_t len = sizeof(addr);
	int fd = mosquitto_socket(client_mosq(c));

	assert_true(fd >= 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	return ntohs(addr.sin_port);
}

/* The line the broker logs when client id (connected from local port `port`) ends its
 * connection with a DISCONNECT (dropped false) or by closing it (dropped true). Mosquitto 2.0:
 * "Client <id> disconnected." and "Client <id> closed its connection."; 2.1 adds the address
 * and words the second differently: "Client <id> [127.0.0.1:<port>] disconnected." and "Client
 * <id> [127.0.0.1:<port>] disconnected: connection closed by client.". Written to buf. */
static const char *client_gone_line(char *buf, size_t size, const char *id, int port, bool dropped)
{
	if (harness_broker_version() >= HARNESS_MOSQUITTO_VERSION(2, 1, 0))
		snprintf(buf, size, "Client %s [127.0.0.1:%d] disconnected%s", id, port,
		         dropped ? ": connection closed by client." : ".");
	else
		snprintf(buf, size, "Client %s %s", id,
		         dropped ? "closed its connection." : "disconnected.");
	return buf;
}

static void broker_starts_on_a_free_port_and_stops_cleanly(void **state)
{
	struct broker *b = start_bare(NULL);

	(void)state;
	assert_true(broker_port(b) > 0);
	assert_true(broker_running(b));
	assert_true(broker_log_contains(b, " running"));
	assert_true(broker_log_contains(b, "Opening ipv4 listen socket"));
	assert_int_equal(broker_exit_status(b), -1);
	broker_stop(b);
}

static void v3_and_v5_clients_connect_and_disconnect(void **state)
{
	struct broker *b = start_bare(NULL);
	struct client_opts o3 = {.id = "c-v3"};
	struct client_opts o5 = {.id = "c-v5", .protocol = 5};
	struct client *c3 = client_connect(b, &o3);
	struct client *c5 = client_connect(b, &o5);
	int port3 = client_local_port(c3);
	int port5 = client_local_port(c5);
	char line[256];

	(void)state;
	/* Mosquitto 2.0 logs MQTT 3.1.1 as "p2" (its own protocol number), 2.1 as "p4" (the
	 * protocol level of the CONNECT). */
	if (harness_broker_version() >= HARNESS_MOSQUITTO_VERSION(2, 1, 0))
		assert_true(broker_log_wait(b, "as c-v3 (p4", 5000));
	else
		assert_true(broker_log_wait(b, "as c-v3 (p2", 5000));
	assert_true(broker_log_wait(b, "as c-v5 (p5", 5000));
	/* client_disconnect returns once the broker has processed the DISCONNECT. */
	client_disconnect(c3);
	assert_true(
	    broker_log_contains(b, client_gone_line(line, sizeof(line), "c-v3", port3, false)));
	client_disconnect(c5);
	assert_true(
	    broker_log_contains(b, client_gone_line(line, sizeof(line), "c-v5", port5, false)));
	broker_stop(b);
}

static void messages_arrive_in_order_at_qos_0_1_2(void **state)
{
	struct broker *b = start_bare(NULL);
	struct client_opts so = {.id = "sub", .protocol = 5};
	struct client_opts po = {.id = "pub"};
	struct client *sub = client_connect(b, &so);
	struct client *pub = client_connect(b, &po);

	(void)state;
	assert_int_equal(client_subscribe(sub, "t/#", 2), 2);
	assert_int_equal(client_publish(pub, "t/0", "zero", 4, 0, false), 0);
	assert_int_equal(client_publish(pub, "t/1", "one", 3, 1, false), 0);
	assert_int_equal(client_publish(pub, "t/2", "two", 3, 2, false), 0);
	expect_msg(sub, "t/0", "zero", 0, false);
	expect_msg(sub, "t/1", "one", 1, false);
	expect_msg(sub, "t/2", "two", 2, false);
	assert_int_equal(client_queued(sub), 0);
	client_disconnect(pub);
	client_disconnect(sub);
	broker_stop(b);
}

static void v5_properties_reach_a_v5_subscriber(void **state)
{
	struct broker *b = start_bare(NULL);
	struct client_opts o = {.id = "v5", .protocol = 5};
	struct client *c = client_connect(b, &o);
	mosquitto_property *props = NULL;
	struct msg *m;

	(void)state;
	assert_int_equal(client_subscribe(c, "p", 1), 1);
	assert_int_equal(mosquitto_property_add_byte(&props, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 1),
	                 MOSQ_ERR_SUCCESS);
	assert_int_equal(
	    mosquitto_property_add_string(&props, MQTT_PROP_CONTENT_TYPE, "application/json"),
	    MOSQ_ERR_SUCCESS);
	assert_int_equal(client_publish_props(c, "p", "{}", 2, 1, false, props), 0);
	mosquitto_property_free_all(&props);
	m = client_wait_msg(c, 5000);
	assert_non_null(m);
	assert_int_equal(m->payload_format, 1);
	assert_non_null(m->content_type);
	assert_string_equal(m->content_type, "application/json");
	msg_free(m);

	/* Absent properties read as -1 and NULL. */
	assert_int_equal(client_publish(c, "p", "x", 1, 0, false), 0);
	m = client_wait_msg(c, 5000);
	assert_non_null(m);
	assert_int_equal(m->payload_format, -1);
	assert_null(m->content_type);
	msg_free(m);
	client_disconnect(c);
	broker_stop(b);
}

static void retained_message_reaches_a_late_subscriber(void **state)
{
	struct broker *b = start_bare(NULL);
	struct client *pub = client_connect(b, NULL);
	struct client *sub;

	(void)state;
	assert_int_equal(client_publish(pub, "r/x", "kept", 4, 1, true), 0);
	sub = client_connect(b, NULL);
	assert_int_equal(client_subscribe(sub, "r/#", 1), 1);
	expect_msg(sub, "r/x", "kept", 1, true);
	/* A live publish on a subscribed topic arrives without the retain flag. */
	assert_int_equal(client_publish(pub, "r/x", "live", 4, 1, true), 0);
	expect_msg(sub, "r/x", "live", 1, false);
	client_disconnect(sub);
	client_disconnect(pub);
	broker_stop(b);
}

static void dropped_client_sends_its_will_and_clean_one_does_not(void **state)
{
	struct broker *b = start_bare(NULL);
	struct client_opts wo = {
	    .id = "mortal", .will_topic = "wills/mortal", .will_payload = "gone", .will_qos = 1};
	struct client *sub = client_connect(b, NULL);
	struct client *w;
	char line[256];
	int port;

	(void)state;
	assert_int_equal(client_subscribe(sub, "wills/#", 1), 1);

	w = client_connect(b, &wo);
	port = client_local_port(w);
	client_disconnect(w);
	assert_true(
	    broker_log_wait(b, client_gone_line(line, sizeof(line), "mortal", port, false), 5000));
	assert_true(client_sync(sub, 5000));
	assert_int_equal(client_queued(sub), 0);

	w = client_connect(b, &wo);
	port = client_local_port(w);
	client_drop(w);
	/* client_drop returns once the broker has noticed the lost connection. */
	assert_true(
	    broker_log_contains(b, client_gone_line(line, sizeof(line), "mortal", port, true)));
	expect_msg(sub, "wills/mortal", "gone", 1, false);
	client_disconnect(sub);
	broker_stop(b);
}

static void persistent_session_keeps_qos1_messages_while_away(void **state)
{
	struct broker *b = start_bare(NULL);
	struct client_opts o3 = {.id = "keep3", .persistent = true};
	struct client_opts o5 = {.id = "keep5", .protocol = 5, .persistent = true};
	struct client *pub = client_connect(b, NULL);
	struct client *c;

	(void)state;
	c = client_connect(b, &o3);
	assert_int_equal(client_subscribe(c, "q/#", 1), 1);
	client_disconnect(c);
	c = client_connect(b, &o5);
	assert_int_equal(client_subscribe(c, "q/#", 1), 1);
	client_disconnect(c);

	assert_int_equal(client_publish(pub, "q/a", "while-away", 10, 1, false), 0);

	c = client_connect(b, &o3);
	expect_msg(c, "q/a", "while-away", 1, false);
	client_disconnect(c);
	c = client_connect(b, &o5);
	expect_msg(c, "q/a", "while-away", 1, false);
	client_disconnect(c);
	client_disconnect(pub);
	broker_stop(b);
}

static void second_connection_with_same_id_takes_over(void **state)
{
	struct broker *b = start_bare(NULL);
	struct client_opts o = {.id = "twin", .protocol = 5};
	struct client *first = client_connect(b, &o);
	struct client *second = client_connect(b, &o);

	(void)state;
	assert_true(client_wait_closed(first, 5000));
	/* Mosquitto 2.0.11 closes the old connection without a DISCONNECT; 2.0.15 and later send
	 * an MQTT 5 client DISCONNECT with reason 0x8E, session taken over
	 * (eclipse/mosquitto#2607). */
	if (harness_broker_version() >= HARNESS_MOSQUITTO_VERSION(2, 0, 15))
		assert_int_equal(client_disconnect_reason(first), MQTT_RC_SESSION_TAKEN_OVER);
	else
		assert_int_equal(client_disconnect_reason(first), MOSQ_ERR_CONN_LOST);
	assert_int_equal(client_disconnect_reason(second), -1);
	assert_null(client_wait_msg(first, 0));
	client_disconnect(first);
	client_disconnect(second);
	broker_stop(b);
}

static void password_file_and_acl_are_written_before_start(void **state)
{
	struct broker *b = broker_prepare(NULL);
	struct client_opts good = {.id = "a1", .username = "alice", .password = "secret"};
	struct client_opts bad3 = {.id = "a2", .username = "alice", .password = "wrong"};
	struct client_opts bad5 = {
	    .id = "a3", .username = "alice", .password = "wrong", .protocol = 5};
	struct client_opts good5 = {
	    .id = "a4", .username = "alice", .password = "secret", .protocol = 5};
	struct client *out = NULL;
	struct client *c;
	struct client *c5;
	const char *pw;
	const char *acl;
	char *conf;

	(void)state;
	pw = broker_password_file(b, "passwd", "alice:secret\nbob:other\n");
	acl = broker_write_file(b, "acl", "user alice\ntopic readwrite allowed/#\n");
	assert_non_null(strstr(pw, broker_dir(b)));
	assert_non_null(strstr(acl, broker_dir(b)));
	conf = broker_subst(b, "listener @PORT@ 127.0.0.1\n"
	                       "allow_anonymous false\n"
	                       "password_file @DIR@/passwd\n"
	                       "acl_file @DIR@/acl\n"
	                       "log_type all\n");
	assert_non_null(strstr(conf, broker_dir(b)));
	broker_launch(b, conf);
	free(conf);

	/* v3: 5 = not authorised; v5: Mosquitto 2.0.11 answers 0x87 "not authorized" (not 0x86
	 * "bad user name or password"). */
	assert_int_equal(client_connect_rc(b, &bad3, &out), 5);
	assert_null(out);
	assert_int_equal(client_connect_rc(b, &bad5, &out), 0x87);
	assert_null(out);

	c = client_connect(b, &good);
	assert_int_equal(client_subscribe(c, "allowed/x", 1), 1);
	/* acl_file does not check subscriptions in Mosquitto 2.0.11; it filters delivery. */
	assert_int_equal(client_subscribe(c, "denied/#", 1), 1);
	c5 = client_connect(b, &good5);
	/* MQTT 5 PUBACK: "not authorized". */
	assert_int_equal(client_publish(c5, "denied/x", "no", 2, 1, false), 0x87);
	assert_int_equal(client_publish(c5, "allowed/x", "yes", 3, 1, false), 0);
	/* Same publisher, so the denied message would have come first. */
	expect_msg(c, "allowed/x", "yes", 1, false);
	client_disconnect(c5);
	client_disconnect(c);
	broker_stop(b);
}

static void sighup_reloads_and_log_wait_sees_each_occurrence(void **state)
{
	struct broker *b = start_bare(NULL);

	(void)state;
	broker_signal(b, SIGHUP);
	assert_true(broker_log_wait(b, "Reloading config.", 5000));
	/* The first reload is consumed: a second wait needs a second reload. */
	assert_false(broker_log_wait(b, "Reloading config.", 200));
	broker_signal(b, SIGHUP);
	assert_true(broker_log_wait(b, "Reloading config.", 5000));
	assert_true(broker_running(b));
	broker_stop(b);
}

static void raw_socket_without_connect_does_not_block_others(void **state)
{
	struct broker *b = start_bare(NULL);
	struct client *c;
	int fd;

	(void)state;
	fd = raw_open(broker_port(b));
	assert_true(fd >= 0);
	assert_true(broker_log_wait(b, "New connection from 127.0.0.1", 5000));
	c = client_connect(b, NULL);
	assert_int_equal(client_subscribe(c, "x", 0), 0);
	assert_int_equal(client_publish(c, "x", "ok", 2, 0, false), 0);
	expect_msg(c, "x", "ok", 0, false);
	/* The broker keeps a connection without CONNECT for 1.5 x 60 s: still open now. */
	assert_false(raw_wait_closed(fd, 100));
	raw_close(fd);
	client_disconnect(c);
	broker_stop(b);
}

static void raw_client_pipelines_connect_and_publish(void **state)
{
	struct broker *b = start_bare(NULL);
	struct client *sub = client_connect(b, NULL);
	uint8_t out[256];
	uint8_t in[64];
	size_t len = 0;
	size_t n = 0;
	uint8_t type = 0;
	int fd;

	(void)state;
	assert_int_equal(client_subscribe(sub, "pipe/#", 1), 1);
	fd = raw_open(broker_port(b));
	assert_true(fd >= 0);
	assert_int_equal(raw_build_connect(out, sizeof(out), &len, "raw-1", NULL, NULL, 30, true),
	                 0);
	assert_int_equal(raw_build_publish(out, sizeof(out), &len, "pipe/a", "hi", 2, 1, false, 7),
	                 0);
	/* Too small a buffer fails and leaves the length alone. */
	assert_int_equal(raw_build_disconnect(out, len + 1, &len), -1);
	assert_int_equal(raw_write_all(fd, out, len), 0);

	assert_int_equal(raw_read_packet(fd, &type, in, sizeof(in), &n, 5000), 0);
	assert_int_equal(RAW_TYPE(type), RAW_CONNACK);
	assert_int_equal(n, 2);
	assert_int_equal(in[1], 0);
	assert_int_equal(raw_read_packet(fd, &type, in, sizeof(in), &n, 5000), 0);
	assert_int_equal(RAW_TYPE(type), RAW_PUBACK);
	assert_int_equal(n, 2);
	assert_int_equal(in[0] << 8 | in[1], 7);
	expect_msg(sub, "pipe/a", "hi", 1, false);

	/* Nothing more comes: the read times out. */
	assert_int_equal(raw_read_packet(fd, &type, in, sizeof(in), &n, 100), -1);
	assert_int_equal(raw_send_subscribe(fd, "pipe/#", 0, 9), 0);
	assert_int_equal(raw_read_packet(fd, &type, in, sizeof(in), &n, 5000), 0);
	assert_int_equal(RAW_TYPE(type), RAW_SUBACK);
	assert_int_equal(raw_send_publish(fd, "pipe/b", "yo", 2, 0, false, 0), 0);
	assert_int_equal(raw_read_packet(fd, &type, in, sizeof(in), &n, 5000), 0);
	assert_int_equal(RAW_TYPE(type), RAW_PUBLISH);
	expect_msg(sub, "pipe/b", "yo", 0, false);
	assert_int_equal(raw_send_disconnect(fd), 0);
	assert_true(raw_wait_closed(fd, 5000));
	raw_close(fd);

	/* A second raw client whose first packet is not CONNECT is closed at once. */
	fd = raw_open(broker_port(b));
	assert_true(fd >= 0);
	assert_int_equal(raw_send_publish(fd, "pipe/c", "x", 1, 0, false, 0), 0);
	assert_true(raw_wait_closed(fd, 5000));
	raw_close(fd);
	client_disconnect(sub);
	broker_stop(b);
}

static void invalid_config_is_reported_as_failure(void **state)
{
	char *log = NULL;
	int status;

	(void)state;
	status = broker_run_expect_failure("listener @PORT@ 127.0.0.1\n"
	                                   "no_such_option true\n",
	                                   &log);
	assert_true(status != 0);
	assert_non_null(log);
	assert_non_null(strstr(log, "no_such_option"));
	free(log);
}

static void verdict_counts_plugin_leaks_and_ignores_broker_leaks(void **state)
{
	static const char broker_leak[] =
	    "=================================================================\n"
	    "==1==ERROR: LeakSanitizer: detected memory leaks\n\n"
	    "Direct leak of 16 byte(s) in 1 object(s) allocated from:\n"
	    "    #0 0x1 in __interceptor_malloc (/usr/lib/libasan.so+0x1)\n"
	    "    #1 0x2 in config__read (/usr/sbin/mosquitto+0x2)\n\n";
	static const char plugin_leak[] =
	    "Indirect leak of 8 byte(s) in 1 object(s) allocated from:\n"
	    "    #0 0x1 in __interceptor_malloc (/usr/lib/libasan.so+0x1)\n"
	    "    #1 0x3 in presence_state_set x.c:1 (/b/plugin/mosquitto_presence.so+0x3)\n\n"
	    "SUMMARY: AddressSanitizer: 24 byte(s) leaked in 2 allocation(s).\n";
	char name[64];
	char *report = NULL;
	struct broker *b;
	char *text;

	(void)state;
	/* Only the broker's own leak: not a finding. */
	b = start_bare(NULL);
	snprintf(name, sizeof(name), "asan.%ld", (long)broker_pid(b));
	free(harness_write_file(broker_dir(b), name, broker_leak));
	assert_int_equal(broker_stop_verdict(b, &report), 0);
	assert_null(report);

	/* A leak with a frame in mosquitto_presence: one finding, shown in the report. */
	b = start_bare(NULL);
	snprintf(name, sizeof(name), "asan.%ld", (long)broker_pid(b));
	text = malloc(sizeof(broker_leak) + sizeof(plugin_leak));
	assert_non_null(text);
	snprintf(text, sizeof(broker_leak) + sizeof(plugin_leak), "%s%s", broker_leak, plugin_leak);
	free(harness_write_file(broker_dir(b), name, text));
	free(text);
	assert_int_equal(broker_stop_verdict(b, &report), 1);
	assert_non_null(report);
	assert_non_null(strstr(report, "presence_state_set"));
	assert_null(strstr(report, "config__read"));
	free(report);

	/* Any UBSan report is a finding. */
	b = start_bare(NULL);
	snprintf(name, sizeof(name), "ubsan.%ld", (long)broker_pid(b));
	free(harness_write_file(broker_dir(b), name,
	                        "x.c:1:2: runtime error: signed integer overflow\n"));
	assert_int_equal(broker_stop_verdict(b, &report), 1);
	assert_non_null(strstr(report, "signed integer overflow"));
	free(report);
}

static void crashed_broker_is_a_finding(void **state)
{
	struct broker *b = start_bare(NULL);
	char *report = NULL;

	(void)state;
	/* SIGABRT, not SIGSEGV: ASan (when preloaded) turns a SEGV into exit status 1. */
	kill(broker_pid(b), SIGABRT);
	assert_false(broker_log_wait(b, "never logged", 5000));
	assert_false(broker_running(b));
	assert_int_equal(broker_exit_status(b), 128 + SIGABRT);
	assert_int_equal(broker_stop_verdict(b, &report), 1);
	assert_non_null(strstr(report, "signal 6"));
	free(report);
}

/* Reads /proc/<pid>/stat's state letter; 0 when the process is gone. */
static char process_state(pid_t pid)
{
	char path[64];
	char buf[512];
	char *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return (p && p[1] == ' ') ? p[2] : 0;
}

static void broker_dies_with_its_test_process(void **state)
{
	int fds[2];
	pid_t child;
	pid_t broker_pid_seen = 0;
	int st;
	int i;

	(void)state;
	assert_int_equal(pipe(fds), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		/* A test process that starts a broker and dies without stopping it or
		 * running atexit. */
		struct broker *b = start_bare(NULL);
		pid_t p = broker_pid(b);

		(void)!write(fds[1], &p, sizeof(p));
		_exit(0);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], &broker_pid_seen, sizeof(broker_pid_seen)),
	                 (ssize_t)sizeof(broker_pid_seen));
	close(fds[0]);
	assert_int_equal(waitpid(child, &st, 0), child);
	assert_true(broker_pid_seen > 0);
	/* The kernel delivers SIGKILL on the parent's death: wait (bounded) for it to land. */
	for (i = 0; i < 500; i++) {
		char s = process_state(broker_pid_seen);

		if (s == 0 || s == 'Z' || s == 'X')
			break;
		(void)poll(NULL, 0, 10);
	}
	assert_true(i < 500);
}

static void helper_plugin_refuses_and_kicks(void **state)
{
	struct client_opts refused = {.id = "r", .username = "refused-by-helper"};
	struct client_opts ok = {.id = "target-1", .username = "bob", .password = "pw"};
	struct client_opts ok2 = {
	    .id = "target-2", .username = "carol", .password = "pw", .protocol = 5};
	struct client_opts nopw = {.id = "np", .username = "bob"};
	struct client_opts admin = {.id = "admin"};
	struct client *out = NULL;
	struct client *t1;
	struct client *t2;
	struct client *a;
	struct broker *b;
	char *conf;

	(void)state;
	if (!getenv("PRESENCE_HELPER_PLUGIN") || !*getenv("PRESENCE_HELPER_PLUGIN"))
		skip();
	/* Once any plugin has a BASIC_AUTH callback, Mosquitto 2.0.11 refuses a login with a
	 * username that every callback defers, even with allow_anonymous true: the password
	 * file is what accepts bob and carol here. */
	b = broker_prepare(NULL);
	broker_password_file(b, "passwd", "bob:pw\ncarol:pw\n");
	conf = broker_conf_without_plugin("plugin @HELPER@\npassword_file @DIR@/passwd\n");
	broker_launch(b, conf);
	free(conf);
	assert_true(broker_log_contains(b, "test-helper: loaded"));
	assert_true(client_connect_rc(b, &refused, &out) != 0);
	assert_null(out);
	assert_true(broker_log_wait(b, "test-helper: refusing login of refused-by-helper", 5000));
	assert_int_equal(client_connect_rc(b, &nopw, &out), 5);

	t1 = client_connect(b, &ok);
	t2 = client_connect(b, &ok2);
	a = client_connect(b, &admin);
	assert_int_equal(
	    client_publish(a, "$CONTROL/test-helper/v1", "kick-client target-1", 20, 1, false), 0);
	assert_true(client_wait_closed(t1, 5000));
	assert_false(client_wait_closed(t2, 0));
	assert_int_equal(
	    client_publish(a, "$CONTROL/test-helper/v1", "kick-user carol", 15, 1, false), 0);
	assert_true(client_wait_closed(t2, 5000));
	/* MQTT 5: DISCONNECT with "administrative action". */
	assert_int_equal(client_disconnect_reason(t2), 0x98);
	assert_int_equal(client_publish(a, "$CONTROL/test-helper/v1", "nonsense", 8, 1, false), 0);
	assert_true(broker_log_wait(b, "test-helper: unknown command 'nonsense'", 5000));
	client_drop(t1);
	client_drop(t2);
	client_disconnect(a);
	broker_stop(b);
}

static void valgrind_mode_runs_a_clean_bare_broker(void **state)
{
	struct broker_opts opts = {.valgrind = true};
	char *conf = broker_conf_without_plugin(NULL);
	struct broker *b;
	struct client *c;
	char *report = NULL;

	(void)state;
	if (!harness_have_valgrind())
		skip();
	b = broker_start_opts(conf, &opts);
	free(conf);
	c = client_connect(b, NULL);
	assert_int_equal(client_subscribe(c, "v", 1), 1);
	assert_int_equal(client_publish(c, "v", "g", 1, 1, true), 0);
	expect_msg(c, "v", "g", 1, false);
	client_disconnect(c);
	assert_int_equal(broker_stop_verdict(b, &report), 0);
	assert_null(report);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(broker_starts_on_a_free_port_and_stops_cleanly,
	                              harness_teardown),
	    cmocka_unit_test_teardown(v3_and_v5_clients_connect_and_disconnect, harness_teardown),
	    cmocka_unit_test_teardown(messages_arrive_in_order_at_qos_0_1_2, harness_teardown),
	    cmocka_unit_test_teardown(v5_properties_reach_a_v5_subscriber, harness_teardown),
	    cmocka_unit_test_teardown(retained_message_reaches_a_late_subscriber, harness_teardown),
	    cmocka_unit_test_teardown(dropped_client_sends_its_will_and_clean_one_does_not,
	                              harness_teardown),
	    cmocka_unit_test_teardown(persistent_session_keeps_qos1_messages_while_away,
	                              harness_teardown),
	    cmocka_unit_test_teardown(second_connection_with_same_id_takes_over, harness_teardown),
	    cmocka_unit_test_teardown(password_file_and_acl_are_written_before_start,
	                              harness_teardown),
	    cmocka_unit_test_teardown(sighup_reloads_and_log_wait_sees_each_occurrence,
	                              harness_teardown),
	    cmocka_unit_test_teardown(raw_socket_without_connect_does_not_block_others,
	                              harness_teardown),
	    cmocka_unit_test_teardown(raw_client_pipelines_connect_and_publish, harness_teardown),
	    cmocka_unit_test_teardown(invalid_config_is_reported_as_failure, harness_teardown),
	    cmocka_unit_test_teardown(verdict_counts_plugin_leaks_and_ignores_broker_leaks,
	                              harness_teardown),
	    cmocka_unit_test_teardown(crashed_broker_is_a_finding, harness_teardown),
	    cmocka_unit_test_teardown(broker_dies_with_its_test_process, harness_teardown),
	    cmocka_unit_test_teardown(helper_plugin_refuses_and_kicks, harness_teardown),
	    cmocka_unit_test_teardown(valgrind_mode_runs_a_clean_bare_broker, harness_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
