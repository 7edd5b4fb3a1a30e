/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Integration tests for what survives time: restarts after a crash (SIGKILL) and after a clean
 * stop (SIGTERM) with the state file, corrupt state files, offline_delay and keep_state, and
 * the atomicity of the state file under kills in the middle of saves. Each asserts what a
 * subscriber receives from a real broker.
 *
 * Restarts use the same directory (state file, persistence database) and the same port. The
 * files are known to be saved before a kill by reading them after each "saved state of" log
 * line the plugin writes at debug level when a flush of the journal completes (bounded waits,
 * no sleeps). Absence of a document is asserted with a broker round trip (client_sync) and seq
 * continuity.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* The file name of the state file in @DIR@, and the margin the plugin adds to every seq after
 * an unclean stop (PRESENCE_STORE_SEQ_MARGIN + 1). */
#define STATE_NAME "presence-state.json"
#define UNCLEAN_JUMP 1001

/* Users in the state file of the kill test. */
#define RECORDED_USERS 5000

/* The broker every test starts from: persistence on (so retained documents survive restarts,
 * stale ones included), the state file in @DIR@, no authentication or ACL. extra is appended. */
static char *restart_conf(const char *extra)
{
	static const char base[] = "listener @PORT@ 127.0.0.1\n"
	                           "allow_anonymous true\n"
	                           "log_type all\n"
	                           "persistence true\n"
	                           "persistence_location @DIR@/\n"
	                           "plugin @PLUGIN@\n"
	                           "plugin_opt_auth allow\n"
	                           "plugin_opt_acl allow\n"
	                           "plugin_opt_state_file @DIR@/" STATE_NAME "\n";
	size_t len = strlen(base) + (extra ? strlen(extra) : 0) + 2;
	char *conf = malloc(len);

	assert_non_null(conf);
	snprintf(conf, len, "%s%s\n", base, extra ? extra : "");
	return conf;
}

/* The path of the state file of b; the caller frees it. */
static char *state_path(const struct broker *b)
{
	size_t len = strlen(broker_dir(b)) + sizeof("/" STATE_NAME);
	char *path = malloc(len);

	assert_non_null(path);
	snprintf(path, len, "%s/%s", broker_dir(b), STATE_NAME);
	return path;
}

/* Reads path; returns its text (the caller frees it) or NULL when it cannot be read. */
static char *slurp(const char *path, size_t *len)
{
	FILE *file = fopen(path, "r");
	char *text = NULL;
	size_t cap = 0, used = 0;

	if (file == NULL) {
		return NULL;
	}
	for (;;) {
		size_t n;

		if (used + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 65536;
			text = realloc(text, cap);
			assert_non_null(text);
		}
		n = fread(text + used, 1, cap - used - 1, file);
		used += n;
		if (n == 0) {
			break;
		}
	}
	fclose(file);
	text[used] = '\0';
	if (len) {
		*len = used;
	}
	return text;
}

/* Parses one line of a state file (len bytes at line) as a JSON object; NULL otherwise. */
static cJSON *parse_line(const char *line, size_t len)
{
	cJSON *item = cJSON_ParseWithLength(line, len);

	if (item != NULL && !cJSON_IsObject(item)) {
		cJSON_Delete(item);
		return NULL;
	}
	return item;
}

/* Replays the records of one file (text) into users (an object: name -> last record), as the
 * store's reader does: a user record replaces one with a lower seq, a forget record removes a
 * user whose seq is at most its seq. Only a journal's last line may be cut short (a crash);
 * returns false when a line before it is not a record. Sets *end_seen for a snapshot's end
 * record. */
static bool replay_lines(const char *text, cJSON *users, bool *end_seen)
{
	const char *line = text;
	bool first = true;

	while (*line != '\0') {
		const char *nl = strchr(line, '\n');
		size_t len = nl != NULL ? (size_t)(nl - line) : strlen(line);
		cJSON *rec = nl != NULL ? parse_line(line, len) : NULL;
		const cJSON *name, *seq, *old;

		if (rec == NULL) {
			/* Cut short: nothing but this line may follow. */
			return nl == NULL || strchr(nl + 1, '\n') == NULL;
		}
		name = cJSON_GetObjectItemCaseSensitive(rec, "username");
		seq = cJSON_GetObjectItemCaseSensitive(rec, "seq");
		if (first) {
			first = false;
		} else if (cJSON_IsString(name) && cJSON_IsNumber(seq)) {
			old = cJSON_GetObjectItemCaseSensitive(users, name->valuestring);
			if (old == NULL) {
				cJSON_AddItemToObject(users, name->valuestring, rec);
				rec = NULL;
			} else if (cJSON_GetObjectItemCaseSensitive(old, "seq")->valuedouble <=
			           seq->valuedouble) {
				cJSON_ReplaceItemInObjectCaseSensitive(users, name->valuestring,
				                                       rec);
				rec = NULL;
			}
		} else if (cJSON_IsString(name = cJSON_GetObjectItemCaseSensitive(rec, "forget"))) {
			old = cJSON_GetObjectItemCaseSensitive(users, name->valuestring);
			if (old != NULL &&
			    cJSON_GetObjectItemCaseSensitive(old, "seq")->valuedouble <=
			        seq->valuedouble) {
				cJSON_DeleteItemFromObjectCaseSensitive(users, name->valuestring);
			}
		} else if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "end"))) {
			*end_seen = true;
		}
		cJSON_Delete(rec);
		line = nl != NULL ? nl + 1 : line + len;
	}
	return true;
}

/* The generation in the first line of text, or -1. */
static long generation_of(const char *text)
{
	const char *nl = strchr(text, '\n');
	cJSON *header = nl != NULL ? parse_line(text, (size_t)(nl - text)) : NULL;
	const cJSON *g = cJSON_GetObjectItemCaseSensitive(header, "generation");
	long gen = cJSON_IsNumber(g) ? (long)g->valuedouble : -1;

	cJSON_Delete(header);
	return gen;
}

/* Reads the state file at path as the plugin would at its next start (store.h): a complete
 * version 2 snapshot, then the journals of its generation and later. Returns
 * {"format":...,"users":{name: last record}}, or NULL when the snapshot is missing or not
 * complete, or a journal is damaged before its last line. The caller deletes the result. */
static cJSON *read_state(const char *path)
{
	static const char *const journals[] = {".journal", ".journal.next"};
	char *snapshot = slurp(path, NULL);
	cJSON *root = cJSON_CreateObject();
	cJSON *users = cJSON_AddObjectToObject(root, "users");
	bool end_seen = false, ok;
	long gens[2], gen;
	char *texts[2];

	assert_non_null(users);
	if (snapshot == NULL) {
		cJSON_Delete(root);
		return NULL;
	}
	gen = generation_of(snapshot);
	cJSON_AddStringToObject(root, "format",
	                        strstr(snapshot, "mosquitto-presence-state") != NULL
	                            ? "mosquitto-presence-state"
	                            : "?");
	ok = gen >= 0 && replay_lines(snapshot, users, &end_seen) && end_seen;
	free(snapshot);
	for (int i = 0; i < 2; i++) {
		char file[PATH_MAX];

		snprintf(file, sizeof(file), "%s%s", path, journals[i]);
		texts[i] = slurp(file, NULL);
		gens[i] = texts[i] != NULL ? generation_of(texts[i]) : -1;
	}
	/* Oldest generation first; those below the snapshot's are left out. */
	for (int i = 0; i < 2 && ok; i++) {
		int j = gens[0] <= gens[1] ? i : 1 - i;

		if (texts[j] != NULL && gens[j] >= gen) {
			bool unused = false;

			ok = replay_lines(texts[j], users, &unused);
		}
	}
	free(texts[0]);
	free(texts[1]);
	if (!ok) {
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

/* The record of user in a state file read by read_state, or NULL. */
static const cJSON *state_user(const cJSON *root, const char *user)
{
	return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "users"),
	                                        user);
}

/* Whether the state file records user with seq and available. */
static bool state_records(const char *path, const char *user, long seq, bool available)
{
	cJSON *root = read_state(path);
	const cJSON *rec = root ? state_user(root, user) : NULL;
	bool ok = false;

	if (rec != NULL) {
		const cJSON *s = cJSON_GetObjectItemCaseSensitive(rec, "seq");
		const cJSON *a = cJSON_GetObjectItemCaseSensitive(rec, "available");

		ok = cJSON_IsNumber(s) && (long)s->valuedouble == seq && cJSON_IsBool(a) &&
		     (cJSON_IsTrue(a) != 0) == available;
	}
	cJSON_Delete(root);
	return ok;
}

/* Waits (bounded) until a completed save has recorded user with seq and available: checks the
 * file after each "saved state of" line the plugin logs. */
static void wait_saved(struct broker *b, const char *user, long seq, bool available)
{
	char *path = state_path(b);
	int rounds;

	for (rounds = 0; rounds < 100; rounds++) {
		if (state_records(path, user, seq, available)) {
			free(path);
			return;
		}
		if (!broker_log_wait(b, "mosquitto-presence: saved state of", 5000)) {
			break;
		}
	}
	fail_msg("the state file %s never recorded %s with seq %ld, available %d", path, user, seq,
	         available);
}

/* The seq the state file records for user (fails the test when it does not). */
static long recorded_seq(struct broker *b, const char *user)
{
	char *path = state_path(b);
	cJSON *root = read_state(path);
	const cJSON *rec = root ? state_user(root, user) : NULL;
	const cJSON *seq = rec ? cJSON_GetObjectItemCaseSensitive(rec, "seq") : NULL;
	long value;

	if (!cJSON_IsNumber(seq)) {
		fail_msg("%s has no record of %s", path, user);
	}
	value = (long)seq->valuedouble;
	cJSON_Delete(root);
	free(path);
	return value;
}

/* Makes the broker write its persistence database now (SIGUSR1) and waits until it has, so
 * that the retained documents of this moment, "available" ones included, survive a kill.
 * Mosquitto logs "Saving in-memory database" when the backup starts and writes it within that
 * loop iteration, so a round trip through the broker (c) after the log line ends after it. */
static void persist_now(struct broker *b, struct client *c)
{
	size_t len = strlen(broker_dir(b)) + sizeof("/mosquitto.db");
	char *db = malloc(len);

	assert_non_null(db);
	snprintf(db, len, "%s/mosquitto.db", broker_dir(b));
	broker_signal(b, SIGUSR1);
	assert_true(broker_log_wait(b, "Saving in-memory database", 5000));
	assert_true(client_sync(c, 5000));
	assert_int_equal(access(db, F_OK), 0);
	free(db);
}

/* One document as received, parsed. */
struct doc {
	char topic[64];
	bool available;
	long sessions;
	long seq;
	char state[256];
	bool retained;
};

/* Waits for the next message on w and parses it as a document. */
static void next_doc(struct client *w, struct doc *d)
{
	struct msg *m = client_wait_msg(w, 5000);
	cJSON *json;
	char *state;

	if (m == NULL) {
		fail_msg("no document arrived");
	}
	json = msg_json(m);
	snprintf(d->topic, sizeof(d->topic), "%s", m->topic);
	d->available = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(json, "available"));
	d->sessions = (long)cJSON_GetObjectItemCaseSensitive(json, "sessions")->valuedouble;
	d->seq = (long)cJSON_GetObjectItemCaseSensitive(json, "seq")->valuedouble;
	state = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(json, "state"));
	snprintf(d->state, sizeof(d->state), "%s", state);
	d->retained = m->retain;
	cJSON_free(state);
	cJSON_Delete(json);
	msg_free(m);
}

/* Receives exactly n retained documents (one per topic, in any order) into docs, in the order
 * of topics. */
static void retained_docs(struct client *w, struct doc *docs, const char *const *topics, int n)
{
	int i, j;

	for (i = 0; i < n; i++) {
		struct doc d;

		next_doc(w, &d);
		assert_true(d.retained);
		for (j = 0; j < n; j++) {
			if (strcmp(d.topic, topics[j]) == 0) {
				docs[j] = d;
				break;
			}
		}
		if (j == n) {
			fail_msg("unexpected retained document on %s", d.topic);
		}
	}
	expect_nothing(w);
}

/* Crash or clean stop with users online: a fresh subscriber sees each of them unavailable. */
static void restart_case(bool crash)
{
	char *conf = restart_conf(NULL);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *a1 = client_connect_as(b, "alice-phone", "alice", 4);
	struct client *a2, *bob, *carol;
	static const char *const topics[] = {"presence/alice", "presence/bob"};
	long alice_seq, bob_seq, alice_rec, bob_rec;
	struct doc docs[2];

	alice_seq = expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	a2 = client_connect_as(b, "alice-laptop", "alice", 4);
	alice_seq = expect_doc(w, "presence/alice", "alice", true, 2, "{}");
	publish_text_ok(a1, "presence/alice/state/status", "away", 1);
	alice_seq = expect_doc(w, "presence/alice", "alice", true, 2, "{\"status\":\"away\"}");
	bob = client_connect_as(b, "bob1", "bob", 4);
	bob_seq = expect_doc(w, "presence/bob", "bob", true, 1, "{}");
	wait_saved(b, "alice", alice_seq, true);
	wait_saved(b, "bob", bob_seq, true);
	/* The stale "available" documents are in the persistence database. */
	persist_now(b, w);
	alice_rec = recorded_seq(b, "alice");
	bob_rec = recorded_seq(b, "bob");

	broker_restart(&b, conf, crash);
	assert_true(broker_log_contains(b, crash ? "before an unclean stop" : "at a clean stop"));
	assert_true(broker_log_contains(b, "published 2 corrected documents"));
	client_drop(a1);
	client_drop(a2);
	client_drop(bob);
	client_drop(w);

	w = client_watch(b, "fresh-watcher", "presence/+");
	retained_docs(w, docs, topics, 2);
	assert_false(docs[0].available);
	assert_int_equal(docs[0].sessions, 0);
	assert_string_equal(docs[0].state, "{}");
	assert_false(docs[1].available);
	assert_int_equal(docs[1].sessions, 0);
	assert_string_equal(docs[1].state, "{}");
	assert_true(docs[0].seq > alice_seq);
	assert_true(docs[1].seq > bob_seq);
	if (crash) {
		assert_int_equal(docs[0].seq, alice_rec + UNCLEAN_JUMP);
		assert_int_equal(docs[1].seq, bob_rec + UNCLEAN_JUMP);
	} else {
		assert_int_equal(docs[0].seq, alice_seq + 1);
		assert_int_equal(docs[1].seq, bob_seq + 1);
	}

	/* seq goes on from there, for known users and for new ones. */
	a1 = client_connect_as(b, "alice-phone", "alice", 4);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), docs[0].seq + 1);
	carol = client_connect_as(b, "carol1", "carol", 4);
	assert_int_equal(expect_doc(w, "presence/carol", "carol", true, 1, "{}"),
	                 crash ? UNCLEAN_JUMP : 1);
	client_disconnect(carol);
	client_disconnect(a1);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void users_online_at_a_crash_are_unavailable_after_the_restart(void **state)
{
	(void)state;
	restart_case(true);
}

static void users_online_at_a_clean_stop_are_unavailable_after_the_restart(void **state)
{
	(void)state;
	restart_case(false);
}

/* Returns the path of the first file in dir whose name starts with prefix (the caller frees
 * it), or NULL. */
static char *find_file(const char *dir, const char *prefix)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char *found = NULL;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
			size_t len = strlen(dir) + strlen(e->d_name) + 2;

			found = malloc(len);
			assert_non_null(found);
			snprintf(found, len, "%s/%s", dir, e->d_name);
			break;
		}
	}
	closedir(d);
	return found;
}

/* A corrupt state file: the broker starts, moves it aside (saying so with both paths), starts
 * with no recorded users and writes a good file. */
static void corrupt_case(const char *content)
{
	char *conf = restart_conf(NULL);
	struct broker *b = broker_prepare(NULL);
	struct client *w, *c;
	char *path, *aside, *moved;
	cJSON *root;

	broker_write_file(b, STATE_NAME, content);
	broker_launch(b, conf);
	path = state_path(b);
	aside = find_file(broker_dir(b), STATE_NAME ".corrupt-");
	assert_non_null(aside);
	assert_true(broker_log_contains(b, "WARNING: the state file"));
	assert_true(broker_log_contains(b, path));
	assert_true(broker_log_contains(b, aside));
	assert_true(broker_log_contains(b, "is unusable"));
	moved = slurp(aside, NULL);
	assert_string_equal(moved, content);
	root = read_state(path);
	assert_non_null(root);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "users")), 0);
	cJSON_Delete(root);

	/* A fresh start: seq from 1. */
	w = client_watch(b, "watcher", "presence/+");
	c = client_connect_as(b, "alice1", "alice", 4);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 1);
	client_disconnect(c);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), 2);
	client_disconnect(w);
	broker_stop(b);
	free(moved);
	free(aside);
	free(path);
	free(conf);
}

static void a_truncated_state_file_is_moved_aside(void **state)
{
	(void)state;
	corrupt_case("{\"format\":\"mosquitto-presence-state\",\"version\":1,\"clean\":false,"
	             "\"users\":[\n{\"username\":\"alice\",\"seq\":7,\"since\":1764265200123,"
	             "\"available\":tr");
}

static void a_state_file_that_is_not_json_is_moved_aside(void **state)
{
	(void)state;
	corrupt_case("this is not JSON\n");
}

static void a_state_file_with_wrong_types_is_moved_aside(void **state)
{
	(void)state;
	corrupt_case("{\"format\":\"mosquitto-presence-state\",\"version\":1,\"clean\":false,"
	             "\"users\":[\n{\"username\":\"alice\",\"seq\":\"7\",\"since\":1764265200123,"
	             "\"available\":true}\n]}\n");
}

static void a_state_file_that_cannot_be_moved_aside_stops_the_broker(void **state)
{
	struct broker_opts opts = {.expect_failure = true};
	struct broker *b = broker_prepare(&opts);
	char name[256];
	char conf[1024];
	char *log;

	(void)state;
	/* 250 bytes is a valid file name; with ".corrupt-<time>" appended it is too long. */
	memset(name, 's', 250);
	name[250] = '\0';
	broker_write_file(b, name, "broken");
	snprintf(conf, sizeof(conf),
	         "listener @PORT@ 127.0.0.1\nallow_anonymous true\nlog_type all\n"
	         "plugin @PLUGIN@\nplugin_opt_auth allow\nplugin_opt_state_file @DIR@/%s\n",
	         name);
	broker_launch(b, conf);
	assert_int_not_equal(broker_exit_status(b), 0);
	log = broker_log(b);
	assert_non_null(strstr(log, "cannot be moved aside"));
	assert_non_null(strstr(log, "refusing to start rather than overwrite it"));
	assert_non_null(strstr(log, name));
	free(log);
	broker_stop(b);
}

static void a_state_file_in_a_missing_directory_stops_the_broker(void **state)
{
	char *log = NULL;

	(void)state;
	assert_int_not_equal(broker_run_expect_failure(
	                         "listener @PORT@ 127.0.0.1\nallow_anonymous true\nlog_type all\n"
	                         "plugin @PLUGIN@\nplugin_opt_auth allow\n"
	                         "plugin_opt_state_file @DIR@/no/such/dir/state.json\n",
	                         &log),
	                     0);
	assert_non_null(strstr(log, "plugin_opt_state_file: the directory"));
	assert_non_null(strstr(log, "no/such/dir"));
	free(log);
}

/* Milliseconds on the monotonic clock. */
static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for the next document on w, at most until deadline (monotonic ms), and asserts it is
 * user's unavailable document with seq. */
static void expect_offline_by(struct client *w, const char *user, long seq, long long deadline)
{
	char topic[64];
	long long left = deadline - now_ms();
	struct msg *m = client_wait_msg(w, left > 0 ? (int)left : 0);
	cJSON *json;

	if (m == NULL) {
		fail_msg("%s's unavailable document did not arrive within the delay + 1 s", user);
	}
	snprintf(topic, sizeof(topic), "presence/%s", user);
	json = msg_json(m);
	if (strcmp(m->topic, topic) != 0 ||
	    !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(json, "available")) ||
	    cJSON_GetObjectItemCaseSensitive(json, "sessions")->valuedouble != 0 ||
	    cJSON_GetObjectItemCaseSensitive(json, "seq")->valuedouble != (double)seq) {
		fail_msg("expected %s unavailable with seq %ld, got on %s: %.*s", user, seq,
		         m->topic, m->payloadlen, m->payload);
	}
	cJSON_Delete(json);
	msg_free(m);
}

static void offline_delay_hides_a_quick_reconnect_and_publishes_one_document_after_it(void **state)
{
	char *conf = restart_conf("plugin_opt_offline_delay 2");
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *alice = client_connect_as(b, "alice1", "alice", 4);
	struct client *bob, *alice2, *alice3;
	long long deadline;
	long alice_seq, bob_seq;

	(void)state;
	alice_seq = expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	alice_seq = expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}");
	bob = client_connect_as(b, "bob1", "bob", 4);
	bob_seq = expect_doc(w, "presence/bob", "bob", true, 1, "{}");

	/* alice leaves and comes back at once; bob leaves after her and stays away. */
	client_disconnect(alice);
	deadline = now_ms() + 3000;
	client_disconnect(bob);
	alice = client_connect_as(b, "alice1", "alice", 4);
	/* bob's deadline comes after alice's would have: his document is the first to arrive,
	 * and nothing about alice's gap arrives before or after it. */
	expect_offline_by(w, "bob", bob_seq + 1, deadline);
	expect_nothing(w);

	/* Her state survived the gap: the next change shows both keys, seq without a gap. */
	publish_text_ok(alice, "presence/alice/state/mood", "ok", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1,
	                            "{\"status\":\"away\",\"mood\":\"ok\"}"),
	                 ++alice_seq);

	/* A session count change while available is still published. */
	alice2 = client_connect_as(b, "alice2", "alice", 4);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2, NULL), ++alice_seq);
	client_disconnect(alice);
	client_disconnect(alice2);
	alice3 = client_connect_as(b, "alice3", "alice", 4);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, NULL), ++alice_seq);

	/* Staying away: exactly one unavailable document within the delay + 1 s. */
	deadline = now_ms() + 3000;
	client_disconnect(alice3);
	expect_offline_by(w, "alice", ++alice_seq, deadline);
	expect_nothing(w);

	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* keep_state false: the state goes with the user, across a disconnect and across a restart. */
static void without_keep_state_the_state_ends_with_the_session(void **state)
{
	char *conf = restart_conf(NULL);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *alice = client_connect_as(b, "alice1", "alice", 4);
	static const char *const topics[] = {"presence/alice"};
	struct doc docs[1];
	long seq;

	(void)state;
	expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}");
	client_disconnect(alice);
	expect_doc(w, "presence/alice", "alice", false, 0, "{}");
	alice = client_connect_as(b, "alice1", "alice", 4);
	expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	publish_text_ok(alice, "presence/alice/state/status", "busy", 1);
	seq = expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"busy\"}");

	broker_restart(&b, conf, false);
	client_drop(alice);
	client_drop(w);
	w = client_watch(b, "watcher2", "presence/+");
	retained_docs(w, docs, topics, 1);
	assert_false(docs[0].available);
	assert_string_equal(docs[0].state, "{}");
	assert_int_equal(docs[0].seq, seq + 1);
	alice = client_connect_as(b, "alice1", "alice", 4);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), seq + 2);
	client_disconnect(alice);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* keep_state true: the state stays while offline, in the documents, and across restarts. */
static void keep_state_keeps_the_state_across_disconnects_and_restarts(void **state)
{
	char *conf = restart_conf("plugin_opt_keep_state true");
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *alice = client_connect_as(b, "alice1", "alice", 4);
	struct client *bob = client_connect_as(b, "bob1", "bob", 4);
	static const char *const topics[] = {"presence/alice", "presence/bob"};
	struct doc docs[2];
	long alice_seq, bob_seq;
	int i;

	(void)state;
	for (i = 0; i < 2; i++) {
		struct doc d;

		next_doc(w, &d);
		assert_true(d.available);
	}
	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}");
	publish_text_ok(bob, "presence/bob/state", "{\"mood\":\"ok\"}", 1);
	expect_doc(w, "presence/bob", "bob", true, 1, "{\"mood\":\"ok\"}");

	/* Across a disconnect. */
	client_disconnect(alice);
	expect_doc(w, "presence/alice", "alice", false, 0, "{\"status\":\"away\"}");
	alice = client_connect_as(b, "alice1", "alice", 4);
	alice_seq = expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}");
	client_disconnect(bob);
	bob_seq = expect_doc(w, "presence/bob", "bob", false, 0, "{\"mood\":\"ok\"}");
	wait_saved(b, "alice", alice_seq, true);
	wait_saved(b, "bob", bob_seq, false);
	persist_now(b, w);

	/* Across a crash: alice (online) is corrected with her state, bob's is kept. */
	broker_restart(&b, conf, true);
	client_drop(alice);
	client_drop(w);
	w = client_watch(b, "watcher2", "presence/+");
	retained_docs(w, docs, topics, 2);
	assert_false(docs[0].available);
	assert_string_equal(docs[0].state, "{\"status\":\"away\"}");
	assert_int_equal(docs[0].seq, alice_seq + UNCLEAN_JUMP);
	/* bob (offline) got his last document again, numbered past the margin. */
	assert_false(docs[1].available);
	assert_string_equal(docs[1].state, "{\"mood\":\"ok\"}");
	assert_int_equal(docs[1].seq, bob_seq + UNCLEAN_JUMP - 1);
	bob = client_connect_as(b, "bob1", "bob", 4);
	assert_int_equal(expect_doc(w, "presence/bob", "bob", true, 1, "{\"mood\":\"ok\"}"),
	                 bob_seq + UNCLEAN_JUMP);
	bob_seq += UNCLEAN_JUMP;

	/* Across a clean stop: bob (online) is corrected, alice comes back with her state. */
	broker_restart(&b, conf, false);
	client_drop(bob);
	client_drop(w);
	w = client_watch(b, "watcher3", "presence/+");
	retained_docs(w, docs, topics, 2);
	assert_false(docs[1].available);
	assert_string_equal(docs[1].state, "{\"mood\":\"ok\"}");
	assert_int_equal(docs[1].seq, bob_seq + 1);
	alice = client_connect_as(b, "alice1", "alice", 4);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}"),
	                 docs[0].seq + 1);
	client_disconnect(alice);
	expect_doc(w, "presence/alice", "alice", false, 0, "{\"status\":\"away\"}");
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* Mosquitto writes its persistence database every autosave_interval (and on SIGUSR1): after a
 * crash it restores the documents of that moment. A user online then and offline since (and
 * recorded so) must not come back online: the plugin publishes the recorded document again. */
static void a_user_offline_since_the_broker_saved_its_database_stays_offline(void **state)
{
	char *conf = restart_conf(NULL);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *alice = client_connect_as(b, "alice1", "alice", 4);
	static const char *const topics[] = {"presence/alice"};
	struct doc docs[1];
	long seq;

	(void)state;
	expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	persist_now(b, w);
	client_disconnect(alice);
	seq = expect_doc(w, "presence/alice", "alice", false, 0, "{}");
	wait_saved(b, "alice", seq, false);

	broker_restart(&b, conf, true);
	assert_true(broker_log_contains(b, "published the last documents of 1 users recorded as "
	                                   "offline again"));
	client_drop(w);
	w = client_watch(b, "fresh-watcher", "presence/+");
	retained_docs(w, docs, topics, 1);
	assert_false(docs[0].available);
	assert_true(docs[0].seq > seq);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* Without a state file the plugin knows nobody after a restart: the documents the broker
 * restored are of users it cannot vouch for. No subscriber gets them, and they are removed. */
static void without_a_state_file_documents_from_before_a_restart_are_not_delivered(void **state)
{
	static const char conf[] = "listener @PORT@ 127.0.0.1\nallow_anonymous true\n"
	                           "log_type all\npersistence true\n"
	                           "persistence_location @DIR@/\nplugin @PLUGIN@\n"
	                           "plugin_opt_auth allow\nplugin_opt_acl allow\n";
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *alice = client_connect_as(b, "alice1", "alice", 4);
	struct msg *m;

	(void)state;
	expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	broker_restart(&b, conf, false);
	client_drop(alice);
	client_drop(w);
	w = client_watch(b, "fresh-watcher", "presence/+");
	/* At most the removal, an empty message, as when a user is forgotten. */
	assert_true(client_sync(w, 5000));
	while ((m = client_wait_msg(w, 0)) != NULL) {
		assert_string_equal(m->topic, "presence/alice");
		assert_int_equal(m->payloadlen, 0);
		msg_free(m);
	}
	/* The removal reached the broker's retained store: a second subscriber gets nothing
	 * at all, and a returning user starts afresh. */
	client_disconnect(w);
	w = client_watch(b, "second-watcher", "presence/+");
	expect_nothing(w);
	alice = client_connect_as(b, "alice1", "alice", 4);
	m = client_wait_msg(w, 5000);
	assert_non_null(m);
	assert_string_equal(m->topic, "presence/alice");
	assert_false(m->retain);
	msg_free(m);
	client_disconnect(alice);
	client_disconnect(w);
	broker_stop(b);
}

/* Writes a state file with count recorded users (offline) into b's directory. */
static void write_big_state(struct broker *b, int count)
{
	size_t cap = (size_t)count * 96 + 256;
	char *text = malloc(cap);
	size_t used;
	int i;

	assert_non_null(text);
	used = (size_t)snprintf(text, cap,
	                        "{\"format\":\"mosquitto-presence-state\",\"version\":1,"
	                        "\"clean\":true,\"users\":[");
	for (i = 0; i < count; i++) {
		used += (size_t)snprintf(text + used, cap - used,
		                         "%s\n{\"username\":\"user%05d\",\"seq\":5,\"since\":"
		                         "1764265200000,\"available\":false}",
		                         i > 0 ? "," : "", i);
	}
	snprintf(text + used, cap - used, "\n]}\n");
	broker_write_file(b, STATE_NAME, text);
	free(text);
}

/* Counts the inotify events on the state file's directory: writes to the temporary snapshot
 * of a compaction, and appends to a journal. inotify merges identical events that were not read
 * yet, so a count is a lower bound. Does not wait. */
static void count_file_events(int fd, long *tmp_writes, long *journal_writes)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		char *p;

		if (n <= 0) {
			return;
		}
		for (p = buf; p < buf + n;) {
			const struct inotify_event *e = (const struct inotify_event *)(void *)p;

			if (e->len > 0 && (e->mask & IN_MODIFY) &&
			    strcmp(e->name, STATE_NAME ".tmp") == 0) {
				(*tmp_writes)++;
			}
			if (e->len > 0 && (e->mask & IN_MODIFY) &&
			    (strcmp(e->name, STATE_NAME ".journal") == 0 ||
			     strcmp(e->name, STATE_NAME ".journal.next") == 0)) {
				(*journal_writes)++;
			}
			p += sizeof(*e) + e->len;
		}
	}
}

/* Takes every document queued on w, asserting that seq only grows (*max_seq: the largest seen
 * so far, across restarts). */
static void check_seq_grows(struct client *w, long *max_seq, int round)
{
	struct msg *m;

	while ((m = client_wait_msg(w, 0)) != NULL) {
		cJSON *json = msg_json(m);
		long seq = (long)cJSON_GetObjectItemCaseSensitive(json, "seq")->valuedouble;

		if (seq <= *max_seq) {
			fail_msg("round %d: seq %ld came after seq %ld: %.*s", round, seq, *max_seq,
			         m->payloadlen, m->payload);
		}
		*max_seq = seq;
		cJSON_Delete(json);
		msg_free(m);
	}
}

/* The value of the burst's state writes: about 900 KB, so that the journal grows by that much
 * at every flush (about once a second) and a compaction begins every few seconds. */
#define BURST_VALUE_BYTES 900000

/* Kills the broker 20 times while a user writes large states in a burst: even rounds right
 * after the first write to the temporary snapshot of a compaction (5000 recorded users and the
 * user's state make it take several steps), odd rounds right after an append to the journal.
 * After every kill the files must read back as the next start reads them (a complete snapshot,
 * journals whose only damaged line can be the last), and seq must never go backwards across the
 * restarts. */
static void the_state_file_is_always_complete_when_the_broker_is_killed(void **state)
{
	/* The recorded users went offline in 2025: never forgotten here. */
	char *conf = restart_conf("plugin_opt_keep_state true\npersistence false\n"
	                          "plugin_opt_max_state_bytes 1048576\n"
	                          "plugin_opt_max_writes_per_second 0\nplugin_opt_forget_after 0");
	struct broker *b = broker_prepare(NULL);
	char *value = malloc(BURST_VALUE_BYTES + 32);
	long max_seq = 0;
	int mid_compaction = 0;
	int round;

	(void)state;
	assert_non_null(value);
	write_big_state(b, RECORDED_USERS);
	broker_launch(b, conf);
	for (round = 0; round < 20; round++) {
		bool compaction_round = round % 2 == 0;
		long tmp_writes = 0, journal_writes = 0;
		struct client *w = client_watch(b, "watcher", "presence/burst");
		struct client *c = client_connect_as(b, "burst1", "burst", 4);
		char *path = state_path(b);
		char *tmp_path, *next_path;
		long long deadline = now_ms() + 30000;
		int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
		cJSON *root;
		long i;

		assert_true(fd >= 0);
		assert_true(inotify_add_watch(fd, broker_dir(b), IN_MODIFY) >= 0);
		for (i = 0; compaction_round ? tmp_writes == 0 : journal_writes == 0; i++) {
			int n;

			if (now_ms() > deadline) {
				fail_msg("round %d: no %s seen within 30 s", round,
				         compaction_round ? "compaction" : "journal write");
			}
			n = snprintf(value, BURST_VALUE_BYTES + 32, "%d-%ld-", round, i);
			memset(value + n, 'a' + (int)(i % 26), BURST_VALUE_BYTES - (size_t)n);
			value[BURST_VALUE_BYTES] = '\0';
			publish_text_ok(c, "presence/burst/state/blob", value, 1);
			check_seq_grows(w, &max_seq, round);
			count_file_events(fd, &tmp_writes, &journal_writes);
		}
		broker_crash(b);
		close(fd);
		tmp_path = malloc(strlen(path) + 16);
		next_path = malloc(strlen(path) + 16);
		assert_non_null(tmp_path);
		assert_non_null(next_path);
		sprintf(tmp_path, "%s.tmp", path);
		sprintf(next_path, "%s.journal.next", path);
		if (access(tmp_path, F_OK) == 0 || access(next_path, F_OK) == 0) {
			mid_compaction++;
		}
		root = read_state(path);
		if (root == NULL) {
			fail_msg("round %d: %s and its journal do not read back", round, path);
		}
		assert_string_equal(cJSON_GetObjectItemCaseSensitive(root, "format")->valuestring,
		                    "mosquitto-presence-state");
		assert_true(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "users")) >=
		            RECORDED_USERS);
		cJSON_Delete(root);
		free(next_path);
		free(tmp_path);
		free(path);
		client_drop(c);
		client_drop(w);
		broker_restart(&b, conf, false);
	}
	/* The last restart's correction, then the broker's last words. */
	{
		struct client *w = client_watch(b, "watcher", "presence/burst");

		assert_true(client_sync(w, 5000));
		check_seq_grows(w, &max_seq, round);
		client_disconnect(w);
	}
	fprintf(stderr, "%d of 20 kills landed in the middle of a compaction\n", mid_compaction);
	/* The 10 compaction rounds kill right after the temporary snapshot's first write: most
	 * land before the compaction ends. */
	assert_true(mid_compaction >= 5);
	broker_stop(b);
	free(value);
	free(conf);
}

/* The unsanitized plugin under valgrind, through a state file's whole life: first start,
 * offline delay, kept state, a clean stop, the restart that corrects and restores, another
 * clean stop. broker_stop fails the test on any error or leak attributed to the plugin. */
static void a_restart_under_valgrind_leaks_nothing(void **state)
{
	char *conf = restart_conf("plugin_opt_keep_state true\nplugin_opt_offline_delay 1");
	struct broker_opts opts = {.valgrind = true};
	struct broker *b;
	struct client *w, *alice, *bob;
	char *dir;
	long alice_seq;

	(void)state;
	if (!harness_have_valgrind()) {
		skip();
	}
	b = broker_start_opts(conf, &opts);
	w = client_watch(b, "watcher", "presence/+");
	alice = client_connect_as(b, "alice1", "alice", 4);
	expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	publish_text_ok(alice, "presence/alice/state", "{\"status\":\"away\"}", 1);
	alice_seq = expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}");
	bob = client_connect_as(b, "bob1", "bob", 4);
	expect_doc(w, "presence/bob", "bob", true, 1, "{}");
	client_disconnect(bob);
	expect_doc(w, "presence/bob", "bob", false, 0, "{}");

	dir = strdup(broker_dir(b));
	assert_non_null(dir);
	opts.dir = dir;
	opts.port = broker_port(b);
	broker_stop(b);
	client_drop(alice);
	client_drop(w);
	b = broker_start_opts(conf, &opts);
	w = client_watch(b, "watcher2", "presence/alice");
	assert_int_equal(
	    expect_doc(w, "presence/alice", "alice", false, 0, "{\"status\":\"away\"}"),
	    alice_seq + 1);
	client_disconnect(w);
	broker_stop(b);
	free(dir);
	free(conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_teardown(name, harness_teardown)
	    T(users_online_at_a_crash_are_unavailable_after_the_restart),
	    T(users_online_at_a_clean_stop_are_unavailable_after_the_restart),
	    T(a_truncated_state_file_is_moved_aside),
	    T(a_state_file_that_is_not_json_is_moved_aside),
	    T(a_state_file_with_wrong_types_is_moved_aside),
	    T(a_state_file_that_cannot_be_moved_aside_stops_the_broker),
	    T(a_state_file_in_a_missing_directory_stops_the_broker),
	    T(offline_delay_hides_a_quick_reconnect_and_publishes_one_document_after_it),
	    T(without_keep_state_the_state_ends_with_the_session),
	    T(keep_state_keeps_the_state_across_disconnects_and_restarts),
	    T(a_user_offline_since_the_broker_saved_its_database_stays_offline),
	    T(without_a_state_file_documents_from_before_a_restart_are_not_delivered),
	    T(the_state_file_is_always_complete_when_the_broker_is_killed),
	    T(a_restart_under_valgrind_leaks_nothing),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
