/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Broker processes of the integration tests: a real mosquitto on 127.0.0.1, started from a
 * generated config (harness_config.h) on a free port, in a directory of its own (@DIR@) under
 * $PRESENCE_WORK_DIR, with its stdout and stderr in @DIR@/broker.log; when it stops, its
 * sanitizer or valgrind reports are judged (harness_sanitizer.h). Each run of a test executable
 * removes the directories the executable's earlier runs left.
 *
 * Running as root: Mosquitto 2.0 drops privileges to the user "mosquitto" right after reading
 * its config, before it loads plugins or opens listeners, unless the config says `user root`.
 * The dropped broker could then not write the ASan logs or any file in @DIR@, and the kernel
 * would clear the parent-death signal that kills an orphaned broker. So when the tests run as
 * root and a config has no `user` line, the harness appends `user root` (the broker then logs
 * "Warning: Mosquitto should not be run as root/administrator."). A config that sets its own
 * `user` gets a world-writable @DIR@ instead.
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
 */
#ifndef PRESENCE_HARNESS_PROCESS_H
#define PRESENCE_HARNESS_PROCESS_H

#include <stdbool.h>
#include <sys/types.h>

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

/* Writes conf (after substitution) to @DIR@/mosquitto.conf, starts `mosquitto -c` on it with
 * stdout and stderr going to @DIR@/broker.log, and waits until the log says it is running.
 * When the port turns out to be taken, retries (a few times) on a new port. Fails the test,
 * with the log tail, when the broker does not start in time (the process is killed). With
 * opts.expect_failure, waits for the exit instead (see struct broker_opts). */
void broker_launch(struct broker *b, const char *conf);

/* broker_prepare + broker_launch. Never returns NULL (fails the test instead). */
struct broker *broker_start(const char *conf);
struct broker *broker_start_opts(const char *conf, const struct broker_opts *opts);

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
 * computes the sanitizer or valgrind verdict (see harness_sanitizer.h). Returns the number
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

/* The version of the broker the tests run against ($MOSQUITTO_BIN), as
 * HARNESS_MOSQUITTO_VERSION(major, minor, revision), read once from the first line of
 * `mosquitto -h` ("mosquitto version 2.0.11"). Fails the test when it cannot be read. Tests
 * branch on it only where brokers legitimately differ (tests/compat/run.sh runs the suite
 * against 2.0.11, 2.0.21 and 2.1.2), and then state each version's expectation. */
int harness_broker_version(void);
#define HARNESS_MOSQUITTO_VERSION(major, minor, revision) ((major)*10000 + (minor)*100 + (revision))

/* Frees every client and kills (SIGKILL) every broker still running, without verdicts; a
 * broker that has already died on its own (e.g. a sanitizer abort that made the test fail) gets
 * its verdict printed to stderr first. For a cmocka teardown after a failed test; atexit does
 * the same, silently. Always returns 0, so it can be used directly as a cmocka setup or
 * teardown function. */
int harness_teardown(void **state);

#endif
