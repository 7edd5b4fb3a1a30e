/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * What the harness's own files share (tests include harness.h only): the broker and client
 * records, the lists of live ones, the one wait every file uses, and the calls one concern makes
 * into another. The dependencies run one way: presence -> client -> process -> config and
 * sanitizer -> util; harness_loop.c, which owns the live lists, waits on all of them.
 *
 * One process runs one test executable: brokers are child processes (stdout and stderr into
 * @DIR@/broker.log, killed by the kernel if the test process dies), clients are libmosquitto
 * handles without a network thread. All waiting goes through harness_until(), which polls the
 * sockets of every live client (plus, for log waits, an inotify descriptor on the broker log)
 * and services whichever is ready, so every wait is event-driven; each poll() is capped at a
 * short slice only so that a process exit, which has no descriptor, is noticed promptly.
 */
#ifndef PRESENCE_HARNESS_INTERNAL_H
#define PRESENCE_HARNESS_INTERNAL_H

#include "harness.h"
#include "harness_util.h"

/* Default deadlines, before scaling. */
#define HARNESS_START_TIMEOUT_MS 10000
#define HARNESS_STOP_TIMEOUT_MS 10000
#define HARNESS_CLIENT_TIMEOUT_MS 5000
#define HARNESS_COMMAND_TIMEOUT_MS 10000
#define HARNESS_DOC_TIMEOUT_MS 5000
/* Remembered acknowledgements per client (publishes and subscriptions are waited for one at a
 * time, so a few suffice). */
#define HARNESS_ACK_RING 32

/* One remembered acknowledgement: a PUBACK/PUBCOMP/written QoS 0 publish, or a SUBACK. */
struct harness_ack {
	int mid;
	int rc;
};

/* A queued received message. */
struct harness_msg_node {
	struct msg *m;
	struct harness_msg_node *next;
};

/* One mosquitto process and its directory (see harness_process.h). */
struct broker {
	/* The process; -1 before launch. */
	pid_t pid;
	/* Whether the process has been reaped, and its status (see broker_exit_status). */
	bool exited;
	int status;
	/* Whether the harness itself sent SIGKILL (then death by signal is not a finding). */
	bool killed_by_harness;
	int port;
	/* @DIR@, its broker.log and mosquitto.conf. */
	char *dir;
	char *log_path;
	char *conf_path;
	/* The plugin path @PLUGIN@ stands for (NULL when $PRESENCE_PLUGIN is unset). */
	char *plugin;
	bool valgrind;
	bool expect_failure;
	/* The port was given by the caller (broker_opts.port): never move to another one. */
	bool fixed_port;
	int start_timeout_ms;
	/* Deadline factor: 10 under valgrind, times PRESENCE_TIMEOUT_SCALE. */
	int scale;
	/* The log read so far, and where the next broker_log_wait search starts. */
	struct strbuf log;
	size_t log_pos;
	/* inotify descriptor watching broker.log, -1 when none. */
	int inotify_fd;
	/* Paths returned by broker_write_file, freed with the broker. */
	char **files;
	size_t nfiles;
	struct broker *next;
};

/* One libmosquitto client (see harness_client.h). */
struct client {
	struct mosquitto *mosq;
	/* The broker it connected to (NULL once that broker is stopped) and its scale. */
	struct broker *broker;
	int scale;
	int protocol;
	/* CONNACK seen, and its code. */
	bool connack;
	int connack_rc;
	/* The connection is closed, and why (see client_disconnect_reason). */
	bool closed;
	int disconnect_rc;
	/* Received messages in arrival order. */
	struct harness_msg_node *head;
	struct harness_msg_node *tail;
	size_t queued;
	/* Recent publish and subscribe acknowledgements (ring buffers). */
	struct harness_ack pub_acks[HARNESS_ACK_RING];
	unsigned int pub_next;
	struct harness_ack sub_acks[HARNESS_ACK_RING];
	unsigned int sub_next;
	/* client_sync: the client's own topic, whether subscribed, last marker sent and seen. */
	char *sync_topic;
	bool sync_subscribed;
	long sync_sent;
	long sync_seen;
	struct client *next;
};

/* Every broker not yet stopped and every client not yet freed (harness_loop.c), so that waits
 * can service all clients and teardown can clean up after a failed test. */
extern struct broker *harness_brokers;
extern struct client *harness_clients;
extern size_t harness_client_count;

/* Initialises libmosquitto and the cleanup at exit, once per process. */
void harness_init(void);

/* Waits, servicing all clients, until done(arg) is true or timeout_ms (already scaled) has
 * passed. extra_fd (or -1) also wakes the wait. Returns done(arg). */
bool harness_until(bool (*done)(const void *arg), const void *arg, int extra_fd, int timeout_ms);

/* harness_process.c */

/* Reads what the broker appended to its log since the last call (a log truncated by a relaunch
 * is read again from the start); b->log.s is never NULL afterwards when b has a log. */
void broker_log_refresh(struct broker *b);

/* Reaps the process if it has exited. Returns whether it has exited. */
bool broker_reap(struct broker *b);

/* Kills the process (SIGKILL) and reaps it. */
void broker_kill(struct broker *b);

/* Unlinks b from the live list (its clients forget it) and frees it. */
void broker_free(struct broker *b);

/* The directory under which broker directories and other scratch files go: $PRESENCE_WORK_DIR
 * (ctest sets it), or work/ next to the test executable; in the build tree either way. Created
 * on first use; fails the test when it cannot be. */
const char *harness_work_dir(void);

/* harness_config.c */

/* The config as written: substituted, plus `user root` when running as root (see
 * harness_process.h). The caller frees it. */
char *broker_final_conf(struct broker *b, const char *conf);

/* harness_sanitizer.c */

/* The broker's environment: ours minus the sanitizer variables, plus the sanitizer setup when
 * the plugin is sanitized (see harness_sanitizer.h). conf is the final config text. Free with
 * strv_free. */
char **broker_env(const struct broker *b, const char *conf);

/* The valgrind command line the broker runs under (see harness_sanitizer.h), pushed onto
 * *argv: returns the valgrind executable (the caller frees it). Fails the test when valgrind is
 * not installed. */
char *broker_valgrind_argv(const struct broker *b, char ***argv, size_t *argc);

/* Judges what a stopped broker left: its sanitizer or valgrind reports and its exit status.
 * Appends a description of each finding to report and returns their number; records of the
 * broker's own that do not count are mentioned on stderr. */
int broker_verdict(struct broker *b, struct strbuf *report);

/* harness_client.c */

/* Unlinks c from the live list, destroys its handle and frees it with its queue. */
void client_free(struct client *c);

/* When c's broker has exited, a note with the tail of its log that explains why nothing came
 * (owned by the broker's log buffer; "" while the broker runs). */
const char *client_broker_exit_note(struct client *c);

#endif
