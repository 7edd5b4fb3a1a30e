/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The integration-test harness: a real mosquitto on 127.0.0.1, started from a generated config
 * on a free port, and libmosquitto clients that talk real MQTT to it.
 *
 * Every wait is bounded and event-driven: it returns as soon as the awaited message, packet,
 * log line or process exit is there, and gives up at a deadline. Clients have no background
 * thread; every wait (on any client or on a broker) services the sockets of ALL live clients,
 * so a wait on one client keeps the others answering pings and receiving messages, which queue
 * per client in arrival order. Failures are reported through cmocka (fail_msg, with the tail of
 * the broker log), so the functions below only return what the test needs.
 *
 * Environment (set by tests/CMakeLists.txt): PRESENCE_PLUGIN, PRESENCE_PLAIN_PLUGIN,
 * PRESENCE_HELPER_PLUGIN, PRESENCE_ASAN_RUNTIME, PRESENCE_WORK_DIR, MOSQUITTO_BIN,
 * MOSQUITTO_PASSWD_BIN. Optional: PRESENCE_TIMEOUT_SCALE (an integer factor applied to every
 * deadline, for slow machines), VALGRIND_BIN (default: valgrind from PATH).
 *
 * Timeouts: every timeout_ms below is multiplied by the broker's scale: 10 under valgrind, else
 * 1, times PRESENCE_TIMEOUT_SCALE. A client's waits use its broker's scale.
 *
 * Running as root: Mosquitto 2.0 drops privileges to the user "mosquitto" right after reading
 * its config, before it loads plugins or opens listeners, unless the config says `user root`.
 * The dropped broker could then not write the ASan logs or any file in @DIR@, and the kernel
 * would clear the parent-death signal that kills an orphaned broker. So when the tests run as
 * root and a config has no `user` line, the harness appends `user root` (the broker then logs
 * "Warning: Mosquitto should not be run as root/administrator."). A config that sets its own
 * `user` gets a world-writable @DIR@ instead.
 *
 * Sanitizer verdict (PRESENCE_ASAN_RUNTIME non-empty, i.e. the plugin is built with
 * -fsanitize=address,undefined): the broker runs with LD_PRELOAD=$PRESENCE_ASAN_RUNTIME,
 * ASAN_OPTIONS=log_path=@DIR@/asan:detect_leaks=1:exitcode=23:fast_unwind_on_malloc=0:... and
 * UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=@DIR@/ubsan. What was found with
 * Debian 12's mosquitto 2.0.11 decides the design:
 *   - Mosquitto dlclose()s its plugins before exit, and LSan symbolizes leak stacks only at
 *     exit, so frames in our plugin would print as "(<unknown module>)". When the config loads
 *     $PRESENCE_PLUGIN, the harness therefore also puts the plugin in LD_PRELOAD: the dlopen()
 *     of the same file then only takes a reference, dlclose() does not unmap it, and stacks
 *     name its functions. stack_trace_format adds each frame's module path, and
 *     fast_unwind_on_malloc=0 lets ASan unwind through the broker's code (built without frame
 *     pointers), so an allocation made through mosquitto_malloc still shows the plugin frame
 *     that asked for it.
 *   - LSan on the bare broker (no plugin): clean at SIGTERM after everything test_harness.c
 *     does (v3/v5 clients, QoS 0/1/2, retained messages, wills, persistent sessions,
 *     take-over, password file and ACL, SIGHUP, a second plugin that kicks clients). It does
 *     leak when it refuses to start (a config error, or a plugin whose init fails): one to
 *     three records allocated under config__read / config__parse_args, e.g. a 400-byte
 *     mosquitto__realloc and a 10-byte mosquitto__strdup. So the verdict filters: an LSan leak
 *     record counts only when its stack has a frame in mosquitto_presence (by module path, or
 *     by a source path under $PRESENCE_SOURCE_DIR/plugin/); the broker's own records are
 *     counted and mentioned on stderr but do not fail. Every non-leak report (an ASan memory
 *     error, any UBSan "runtime error:") fails regardless of its stack: the broker is not
 *     instrumented, so UBSan can only fire in sanitized code, and a memory error in a broker
 *     that runs our plugin is ours to explain. GCC's combined runtime prints UBSan reports to
 *     stderr, i.e. into broker.log, which the verdict scans too.
 *   - exitcode=23 marks an exit forced by LSan (also when the broker had meant to exit with
 *     another status: a failing broker that leaks exits with 23). Status 23 together with an
 *     LSan report is not a finding by itself; death by a signal, or any other non-zero exit of
 *     a broker that was not expected to fail, is.
 *
 * Stopping: Mosquitto 2.0.11 logs "running" and only then sets its run flag, so a SIGTERM that
 * lands in between is lost (under ASan about one quick start/stop in four). broker_stop
 * repeats SIGTERM every 500 ms until the log says "terminating", then waits for the exit.
 *
 * Restarting (tests of what survives a restart): stop the broker with broker_stop (a clean
 * stop) or broker_crash + broker_stop (SIGKILL: no cleanup, no leak check), then start a new
 * one with broker_opts.dir = the old broker_dir (copied first: broker_stop frees it) and
 * broker_opts.port = the old broker_port (broker_restart does all that). The earlier runs'
 * logs are kept as broker.log.1, broker.log.2, ... in that directory.
 *
 * Valgrind verdict (broker_opts.valgrind): the broker runs as
 *   valgrind --leak-check=full --show-leak-kinds=definite,indirect
 *            --errors-for-leak-kinds=definite,indirect --track-origins=yes --keep-debuginfo=yes
 *            --xml=yes --xml-file=@DIR@/vg.<pid>.xml mosquitto -c ...
 * with @PLUGIN@ = $PRESENCE_PLAIN_PLUGIN (valgrind and ASan do not mix). --keep-debuginfo=yes
 * is required for the same dlclose() reason: without it valgrind drops the plugin's symbols
 * when it is unloaded and leak stacks lose every plugin frame. The verdict counts each <error>
 * record (any kind but Leak_PossiblyLost and Leak_StillReachable) whose text names
 * mosquitto_presence; errors only in the broker or libc are counted and mentioned but do not
 * fail.
 */
#ifndef PRESENCE_HARNESS_H
#define PRESENCE_HARNESS_H

/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <sys/types.h>

#include <cjson/cJSON.h>
#include <mosquitto.h>
/* Mosquitto 2.1's mosquitto.h includes the protocol header itself (its old name is a shim
 * that warns); 2.0's does not. */
#if !__has_include(<mosquitto/mqtt_protocol.h>)
#include <mqtt_protocol.h>
#endif

/* ---------------------------------------------------------------------------------------- */
/* Broker                                                                                      */
/* ---------------------------------------------------------------------------------------- */

/* One mosquitto process and its directory. */
struct broker;

/* How to start a broker. Zero-initialised means: sanitized plugin, must start, default
 * deadline, fresh directory. */
struct broker_opts {
	/* Run under valgrind with $PRESENCE_PLAIN_PLUGIN; every deadline is scaled by 10. */
	bool valgrind;
	/* The broker must exit instead of running: broker_start_opts waits (bounded) for the
	 * exit, fails the test if it logs "running" instead, and returns the exited broker so
	 * broker_exit_status and broker_log can be inspected; broker_stop gives the verdict. */
	bool expect_failure;
	/* Deadline for the start (or, with expect_failure, for the exit), before scaling.
	 * 0 = 10000. */
	int timeout_ms;
	/* Use this existing directory as @DIR@ instead of a fresh one (e.g. a copy of a stopped
	 * broker's broker_dir, to restart on its files). NULL = fresh directory. A broker.log
	 * already there is renamed to broker.log.<n> (the first n not taken). */
	const char *dir;
	/* Listen on this port (@PORT@) instead of a free one, e.g. the port of a stopped broker
	 * that is restarted; broker_launch then fails instead of moving to another port when it is
	 * taken. 0 = a free port. */
	int port;
};

/* Creates @DIR@ (fresh under $PRESENCE_WORK_DIR unless opts->dir) and picks a free port, but
 * starts nothing, so that files can be written first (broker_write_file,
 * broker_password_file). opts may be NULL. Fails the test when the directory cannot be made.
 * Release with broker_launch + broker_stop (or broker_stop alone if never launched). */
struct broker *broker_prepare(const struct broker_opts *opts);

/* Substitutes @PORT@, @PLUGIN@, @HELPER@ and @DIR@ in text, then writes it to @DIR@/name and
 * returns the file's path (owned by b, valid until broker_stop). Fails the test on error. */
const char *broker_write_file(struct broker *b, const char *name, const char *content);

/* Writes a Mosquitto password file @DIR@/name from pairs, which holds one "user:password" per
 * line, by running `mosquitto_passwd -U` on it. Returns its path (owned by b, valid until
 * broker_stop). Fails the test on error. */
const char *broker_password_file(struct broker *b, const char *name, const char *pairs);

/* Returns text with @PORT@, @PLUGIN@, @HELPER@ and @DIR@ substituted. The caller frees the
 * result with free(). Fails the test when a used placeholder has no value (e.g. @PLUGIN@
 * without $PRESENCE_PLUGIN). */
char *broker_subst(const struct broker *b, const char *text);

/* Writes conf (after substitution) to @DIR@/mosquitto.conf, starts `mosquitto -c` on it with
 * stdout and stderr going to @DIR@/broker.log, and waits until the log says it is running.
 * When the port turns out to be taken, retries (a few times) on a new port. Fails the test,
 * with the log tail, when the broker does not start in time (the process is killed). With
 * opts.expect_failure, waits for the exit instead (see struct broker_opts). */
void broker_launch(struct broker *b, const char *conf);

/* broker_prepare + broker_launch. Never returns NULL (fails the test instead). */
struct broker *broker_start(const char *conf);
struct broker *broker_start_opts(const char *conf, const struct broker_opts *opts);

/* The standard config: listener @PORT@ 127.0.0.1, allow_anonymous true, log_type all,
 * persistence false, plugin @PLUGIN@, then extra (NULL = none) as further lines
 * (plugin_opt_... lines apply to our plugin; further plugin lines, acl_file, ...). The caller
 * frees the result. */
char *broker_conf(const char *extra);

/* The standard config without the plugin line (for the harness self-test). */
char *broker_conf_without_plugin(const char *extra);

/* A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it back, close),
 * for a server a test starts itself. */
int harness_free_port(void);

/* The TCP port on 127.0.0.1, its @DIR@ (owned by b), its process id. */
int broker_port(const struct broker *b);
const char *broker_dir(const struct broker *b);
pid_t broker_pid(const struct broker *b);

/* Sends sig (e.g. SIGHUP) to the broker process. */
void broker_signal(struct broker *b, int sig);

/* Kills the broker with SIGKILL, as a crash would (no cleanup, no persistence save, no leak
 * check), and waits for it to be gone. Fails the test if it was not running. b stays valid:
 * broker_stop then judges the sanitizer reports written so far (a kill by the harness is not a
 * finding) and frees it. */
void broker_crash(struct broker *b);

/* Stops *b (crash: broker_crash first; otherwise a clean stop) and starts conf in its place on
 * the same directory and port, with the sanitized plugin. */
void broker_restart(struct broker **b, const char *conf, bool crash);

/* Waits at most timeout_ms (scaled) for needle to appear in the log after the end of the
 * previous broker_log_wait match (from the start of the log for the first call). On success
 * moves that position past the match and returns true; returns false on timeout or when the
 * broker exits without logging it. */
bool broker_log_wait(struct broker *b, const char *needle, int timeout_ms);

/* Returns true when needle appears anywhere in the log so far. Does not wait. */
bool broker_log_contains(struct broker *b, const char *needle);

/* The whole log so far; the caller frees it. */
char *broker_log(struct broker *b);

/* Whether the broker process is still running (reaps it if it has exited). */
bool broker_running(struct broker *b);

/* The exit status after the process ended: the exit code, or 128 + signal number. -1 while it
 * runs. Note that LSan turns any exit into status 23 when it finds a leak (even the broker's
 * own). */
int broker_exit_status(const struct broker *b);

/* Stops the broker (SIGTERM, then a bounded wait, then SIGKILL) unless it has exited, and
 * computes the sanitizer or valgrind verdict (see the head of this file). Returns the number
 * of findings (0 = clean) and, when report is not NULL, stores a description of them (or
 * NULL when clean; the caller frees it). A broker that had to be killed, or died of a signal,
 * or exited with an unexpected status, counts as a finding. Frees b. */
int broker_stop_verdict(struct broker *b, char **report);

/* broker_stop_verdict, failing the test (with the report and log tail) on any finding. */
void broker_stop(struct broker *b);

/* Starts a config that must NOT start: waits (bounded) for the exit and returns its non-zero
 * status (see broker_exit_status); *log (if log is not NULL) gets the whole log, which the
 * caller frees. Fails the test if the broker runs instead, or on a sanitizer finding. */
int broker_run_expect_failure(const char *conf, char **log);

/* Writes content to dir/name (created or truncated) and returns the path; the caller frees
 * it. Fails the test on error. */
char *harness_write_file(const char *dir, const char *name, const char *content);

/* The version of the broker the tests run against ($MOSQUITTO_BIN), as
 * HARNESS_MOSQUITTO_VERSION(major, minor, revision), read once from the first line of
 * `mosquitto -h` ("mosquitto version 2.0.11"). Fails the test when it cannot be read. Tests
 * branch on it only where brokers legitimately differ (tests/compat/run.sh runs the suite
 * against 2.0.11, 2.0.21 and 2.1.2), and then state each version's expectation. */
int harness_broker_version(void);
#define HARNESS_MOSQUITTO_VERSION(major, minor, revision) ((major)*10000 + (minor)*100 + (revision))

/* Whether a valgrind binary is available (tests may skip() their valgrind variant). */
bool harness_have_valgrind(void);

/* Frees every client and kills (SIGKILL) every broker still running, without verdicts; a
 * broker that has already died on its own (e.g. a sanitizer abort that made the test fail) gets
 * its verdict printed to stderr first. For a cmocka teardown after a failed test; atexit does
 * the same, silently. Always returns 0, so it can be used directly as a cmocka setup or
 * teardown function. */
int harness_teardown(void **state);

/* ---------------------------------------------------------------------------------------- */
/* Clients                                                                                     */
/* ---------------------------------------------------------------------------------------- */

/* One libmosquitto client connected to a harness broker. */
struct client;

/* How to connect. Zero-initialised means: random client id, no credentials, MQTT 3.1.1, clean
 * session, keepalive 60, no will. */
struct client_opts {
	/* Client id; NULL lets libmosquitto make one (only with a clean session). */
	const char *id;
	const char *username;
	const char *password;
	/* 4 = MQTT 3.1.1 (also for 0), 5 = MQTT 5, 3 = MQTT 3.1. */
	int protocol;
	/* v3: clean session false. v5: clean start false and session expiry interval 300. */
	bool persistent;
	/* Seconds; 0 = 60; negative = 0 (no keepalive). */
	int keepalive;
	/* A will, when will_topic is not NULL. */
	const char *will_topic;
	const char *will_payload;
	int will_qos;
	bool will_retain;
};

/* Connects and waits for CONNACK; fails the test unless it is a success. */
struct client *client_connect(struct broker *b, const struct client_opts *o);

/* client_connect with only a client id, a username (NULL = none) and a protocol (as in struct
 * client_opts: 4 = MQTT 3.1.1, 5 = MQTT 5); the rest as zero-initialised. Fails the test unless
 * the broker accepts. */
struct client *client_connect_as(struct broker *b, const char *id, const char *username,
                                 int protocol);

/* Connects an anonymous MQTT 5 client (so that document properties are visible) with client id
 * id and subscribes it to filter (e.g. presence/+) at QoS 1. Fails the test unless both succeed
 * and the subscription is granted QoS 1. */
struct client *client_watch(struct broker *b, const char *id, const char *filter);

/* Connects and waits for CONNACK. Returns the CONNACK code (v5 reason code, v3 return code;
 * 0 = accepted), or -1 when the connection fails or closes without a CONNACK in time. *out gets
 * the client when accepted, NULL otherwise. o may be NULL. */
int client_connect_rc(struct broker *b, const struct client_opts *o, struct client **out);

/* Connects with o and asserts that the broker refuses: no client is made and the result of
 * client_connect_rc is not 0. Returns that result (a CONNACK code, or -1 when the connection
 * closed without one) for further checks. Fails the test when the broker accepts (the client is
 * then freed). */
int expect_refused(struct broker *b, const struct client_opts *o);

/* Subscribes and waits for SUBACK. Returns the granted QoS (0..2) or the failure code (0x80 for
 * v3; the v5 reason code, e.g. 0x87), or -1 when the connection closes or no SUBACK comes. */
int client_subscribe(struct client *c, const char *filter, int qos);

/* Publishes and waits until it is written (QoS 0), PUBACK (QoS 1) or PUBCOMP/PUBREC with an
 * error (QoS 2). Returns the v5 reason code (0 for v3 success), or -1 when the publish fails
 * locally, the connection closes, or no acknowledgement comes. */
int client_publish(struct client *c, const char *topic, const void *payload, int len, int qos,
                   bool retain);

/* Same, with MQTT 5 PUBLISH properties (borrowed; may be NULL). */
int client_publish_props(struct client *c, const char *topic, const void *payload, int len, int qos,
                         bool retain, const mosquitto_property *props);

/* Asserts that rc, a client_publish result, acknowledges success: 0 (MQTT 3.1.1, and QoS 0 on
 * either protocol) or, on MQTT 5, 0x10 "no matching subscribers", which Mosquitto 2.0 sends
 * itself when nobody subscribed to the topic. Fails the test on anything else (-1, or a reason
 * code from 0x80 up). */
void expect_publish_ok(int rc);

/* Publishes the text (its strlen bytes, no NUL) on topic at qos, not retained, and asserts
 * with expect_publish_ok that it was acknowledged as a success; the failure names the topic. */
void publish_text_ok(struct client *c, const char *topic, const char *text, int qos);

/* A received message; every pointer is owned by the message. */
struct msg {
	char *topic;
	/* NUL-terminated (one byte beyond payloadlen) for convenience; may contain NULs. */
	char *payload;
	int payloadlen;
	int qos;
	bool retain;
	/* The payload format indicator, -1 if absent. */
	int payload_format;
	/* The content type, NULL if absent. */
	char *content_type;
	/* The correlation data (correlation_len bytes, then a NUL), NULL if absent. */
	char *correlation;
	int correlation_len;
	/* The response topic, NULL if absent. */
	char *response_topic;
};

/* Returns the next message received by c, in arrival order, waiting at most timeout_ms
 * (scaled); NULL on timeout or when c is closed and nothing is queued. Free with msg_free. */
struct msg *client_wait_msg(struct client *c, int timeout_ms);

/* client_wait_msg, but drops (and frees) every round-trip marker of another client that comes
 * first: a subscriber to # or harness/# receives those (see client_sync); its own markers are
 * never queued. Waits at most timeout_ms (scaled) for each message; NULL as client_wait_msg. */
struct msg *client_next_msg(struct client *c, int timeout_ms);

/* Waits (5000 ms, scaled) for the next message on c (client_next_msg) and asserts that it is on
 * topic, with exactly the bytes of payload (strlen(payload) of them), at qos (negative = not
 * checked) and with retain as given. Fails the test, with what arrived, otherwise. */
void expect_msg(struct client *c, const char *topic, const char *payload, int qos, bool retain);

/* Number of messages received by c and not yet taken. Does not wait. */
size_t client_queued(const struct client *c);

/* Frees m; NULL is allowed. */
void msg_free(struct msg *m);

/* Where the round-trip markers of client_sync go: every client has its own topic below this
 * prefix. An ACL that must let clients sync allows "pattern readwrite " HARNESS_SYNC_PREFIX "#". */
#define HARNESS_SYNC_PREFIX "harness/sync/"

/* Round trip through the broker: subscribes c (once) to a topic of its own, publishes a marker
 * there at QoS 1 and waits until the marker comes back (it is not queued). Messages the broker
 * delivered to c before the marker are then queued. Returns false on timeout (e.g. an ACL that
 * denies harness/sync/#). */
bool client_sync(struct client *c, int timeout_ms);

/* Asserts absence without sleeping: makes a round trip (client_sync, 5000 ms scaled; fails the
 * test when it times out), after which everything the broker had sent to c is queued, and then
 * asserts that nothing is queued but other clients' round-trip markers (which are dropped).
 * Fails the test with the first unexpected message otherwise. */
void expect_nothing(struct client *c);

/* Makes a round trip as expect_nothing does, then takes and frees everything queued for c, so
 * that what the test expects next starts from an empty queue (e.g. after the retained messages
 * a new subscription brings). Fails the test when the round trip times out. */
void client_drain(struct client *c);

/* Sends DISCONNECT (reason 0), waits (5000 ms, scaled) until the broker has processed it and
 * closed its end of the connection, and frees c. So when this returns, the broker has logged
 * "Client <id> disconnected." and run its disconnect callbacks. Also frees a client the broker
 * has already closed. */
void client_disconnect(struct client *c);

/* Closes the connection without DISCONNECT (a FIN, as when a network connection is lost; the
 * broker then sends the will), waits (5000 ms, scaled) until the broker has noticed and closed
 * its end, and frees c. */
void client_drop(struct client *c);

/* Waits at most timeout_ms (scaled) for the broker to close c's connection (kicked, taken over,
 * refused). Returns true once it is closed. c stays allocated: free it with client_disconnect
 * or client_drop. */
bool client_wait_closed(struct client *c, int timeout_ms);

/* After the connection closed: the reason code of the broker's DISCONNECT (v5), or the
 * libmosquitto error code that closed it (e.g. MOSQ_ERR_CONN_LOST); -1 while connected. */
int client_disconnect_reason(const struct client *c);

/* The libmosquitto handle, for what this API does not cover. Owned by c. */
struct mosquitto *client_mosq(struct client *c);

/* ---------------------------------------------------------------------------------------- */
/* Presence documents                                                                          */
/* ---------------------------------------------------------------------------------------- */

/* Parses m's payload as JSON; fails the test (showing the payload) if it is not JSON. The caller
 * frees the result with cJSON_Delete. */
cJSON *msg_json(const struct msg *m);

/* Waits (5000 ms, scaled) for the next message on c and asserts: its topic is topic, and it is
 * a presence document whose "username" is username (NULL = not checked), whose "available" is
 * available, whose "sessions" is sessions (negative = not checked) and whose "state" equals
 * state_json (compared with cJSON_Compare; NULL = not checked). Returns its "seq". Fails the
 * test with the message shown otherwise. */
long expect_doc(struct client *c, const char *topic, const char *username, bool available,
                int sessions, const char *state_json);

/* Asserts, after a round trip (as expect_nothing), that c, whatever it subscribed to, has
 * received no state-write message (presence/<user>/state or presence/<user>/state/<key>) and no
 * rejection notice (a topic below presence/ that ends in /error). Everything else queued
 * (documents, round-trip markers, other topics) is taken and dropped. */
void expect_no_state_or_error_message(struct client *c);

#endif
