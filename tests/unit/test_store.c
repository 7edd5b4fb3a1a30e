/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Unit tests for the state file (store.c) with the registry it records: the files' exact text,
 * round trips, what a flush writes (only what changed), compaction and every state of the files
 * a crash can leave, the seq rules of clean and unclean restarts and the guard, forgotten users
 * and the floor, version 1 files, every kind of broken file, moving files aside, write errors,
 * and allocation failure while reading and writing.
 *
 * Every test works in a fresh directory under the current directory (ctest runs the tests in
 * the build tree), removed by the teardown. A "crash" is freeing the store without
 * presence_store_stop: the files stay as the last write left them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "failalloc.h"
#include "registry.h"
#include "store.h"
#include "testing.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

#define SNAPSHOT_HEAD(gen, floor)                                                                  \
	"{\"format\":\"mosquitto-presence-state\",\"version\":2,\"generation\":" #gen              \
	",\"seq_floor\":" #floor "}\n"
#define JOURNAL_HEAD(gen)                                                                          \
	"{\"format\":\"mosquitto-presence-journal\",\"version\":2,\"generation\":" #gen "}\n"

static const struct presence_state_limits limits = {
    .max_state_bytes = 8192, .max_keys = 64, .max_depth = 32};

/* The fixture: a directory, the state file path in it, a registry and its store, run as the
 * plugin runs them (the store is the registry's guard). */
struct fixture {
	char dir[64];
	char path[128];
	char journal[160];
	char next[160];
	struct presence_registry *reg;
	struct presence_store *store;
	uint64_t margin;
};

static int64_t fixed_ms(void *arg)
{
	(void)arg;
	return 1764265200000;
}

static const struct presence_clock fixed_clock = {fixed_ms, fixed_ms, NULL};

static bool file_exists(const char *path)
{
	struct stat sb;

	return lstat(path, &sb) == 0;
}

/* Writes text to path. */
static void write_file(const char *path, const char *text)
{
	FILE *file = fopen(path, "w");

	assert_non_null(file);
	assert_int_equal(fputs(text, file) >= 0, 1);
	assert_int_equal(fclose(file), 0);
}

/* Appends text to path. */
static void append_file(const char *path, const char *text)
{
	FILE *file = fopen(path, "a");

	assert_non_null(file);
	assert_int_equal(fputs(text, file) >= 0, 1);
	assert_int_equal(fclose(file), 0);
}

/* Returns the contents of path (the caller frees it), or NULL when it cannot be read. */
static char *read_file(const char *path)
{
	FILE *file = fopen(path, "r");
	char *text;
	long len;

	if (file == NULL) {
		return NULL;
	}
	assert_int_equal(fseek(file, 0, SEEK_END), 0);
	len = ftell(file);
	assert_true(len >= 0);
	rewind(file);
	text = calloc(1, (size_t)len + 1);
	assert_non_null(text);
	assert_int_equal(fread(text, 1, (size_t)len, file), (size_t)len);
	fclose(file);
	return text;
}

static void copy_file(const char *from, const char *to)
{
	char *text = read_file(from);

	assert_non_null(text);
	write_file(to, text);
	free(text);
}

static long file_size(const char *path)
{
	struct stat sb;

	assert_int_equal(stat(path, &sb), 0);
	return (long)sb.st_size;
}

/* A new registry configured as the plugin configures it. */
static struct presence_registry *new_registry(bool keep_state)
{
	struct presence_registry *reg = presence_registry_new("presence");

	assert_non_null(reg);
	presence_registry_set_clock(reg, &fixed_clock);
	presence_registry_set_keep_state(reg, keep_state);
	return reg;
}

/* Makes f's registry and store (margin f->margin), loads and starts them as init does. Returns
 * what the load found. */
static struct presence_store_loaded open_fixture(struct fixture *f, bool keep_state)
{
	struct presence_store_loaded loaded;
	char err[PRESENCE_STORE_ERR_SIZE] = "";
	struct presence_seq_guard guard;

	f->reg = new_registry(keep_state);
	f->store = presence_store_new(f->path, f->margin);
	assert_non_null(f->store);
	if (presence_store_load(f->store, f->reg, &loaded, err, sizeof(err)) != PRESENCE_OK) {
		fail_msg("load failed: %s", err);
	}
	if (presence_store_start(f->store, f->reg, err, sizeof(err)) != PRESENCE_OK) {
		fail_msg("start failed: %s", err);
	}
	guard.allows = presence_store_guard_allows;
	guard.arg = f->store;
	presence_registry_set_guard(f->reg, &guard);
	return loaded;
}

/* Ends f's run: cleanly (stop) or as a crash (nothing more written). */
static void close_fixture(struct fixture *f, bool clean)
{
	char err[PRESENCE_STORE_ERR_SIZE] = "";

	if (clean && presence_store_stop(f->store, f->reg, err, sizeof(err)) != PRESENCE_OK) {
		fail_msg("stop failed: %s", err);
	}
	presence_store_free(f->store);
	presence_registry_free(f->reg);
	f->store = NULL;
	f->reg = NULL;
}

/* Closes and opens f again; returns what the load found. */
static struct presence_store_loaded restart(struct fixture *f, bool clean, bool keep_state)
{
	close_fixture(f, clean);
	return open_fixture(f, keep_state);
}

static int setup_margin(void **ctx, uint64_t margin)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (f == NULL) {
		return -1;
	}
	snprintf(f->dir, sizeof(f->dir), "test_store.XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof(f->path), "%s/state.json", f->dir);
	snprintf(f->journal, sizeof(f->journal), "%s.journal", f->path);
	snprintf(f->next, sizeof(f->next), "%s.journal.next", f->path);
	f->margin = margin;
	*ctx = f;
	return 0;
}

static int setup(void **ctx)
{
	return setup_margin(ctx, PRESENCE_STORE_SEQ_MARGIN);
}

static int setup_small_margin(void **ctx)
{
	return setup_margin(ctx, 3);
}

/* Removes every file in dir, then dir. */
static void remove_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[1024];

	if (d == NULL) {
		return;
	}
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (unlink(path) != 0) {
			remove_dir(path);
		}
	}
	closedir(d);
	(void)rmdir(dir);
}

static int teardown(void **ctx)
{
	struct fixture *f = *ctx;

	presence_store_free(f->store);
	presence_registry_free(f->reg);
	remove_dir(f->dir);
	free(f);
	return 0;
}

/* Publishes every due document as the adapter does (the store noted first); returns how many,
 * the last in *last when not NULL. */
static int publish(struct fixture *f, int64_t now, struct presence_document *last)
{
	struct presence_document doc;
	struct presence_user *u;
	int published = 0;
	bool due, added;

	while ((u = presence_registry_dirty_next(f->reg)) != NULL) {
		assert_int_equal(presence_registry_document_prepare(f->reg, u, now, &doc, &due),
		                 PRESENCE_OK);
		if (due) {
			assert_int_equal(presence_store_note_change(f->store, u, &added),
			                 PRESENCE_OK);
			presence_registry_document_sent(f->reg, u);
			published++;
			if (last != NULL) {
				*last = doc;
			}
		}
	}
	presence_registry_flush_done(f->reg);
	return published;
}

/* Connects a session of user (a client pointer made from n) and publishes. */
static void online(struct fixture *f, uintptr_t n, const char *user)
{
	const void *client = (const void *)(n * 16 + 16);

	assert_int_equal(presence_registry_session_pending(f->reg, client), PRESENCE_OK);
	assert_int_equal(presence_registry_session_start(f->reg, client, user), PRESENCE_OK);
	publish(f, 1000, NULL);
}

/* Ends the session made by online(f, n, ...) and publishes. */
static void offline(struct fixture *f, uintptr_t n, int64_t now)
{
	presence_registry_session_gone(f->reg, (const void *)(n * 16 + 16));
	publish(f, now, NULL);
}

/* Sets a state key of user and publishes; returns whether a document was published. */
static bool change(struct fixture *f, const char *user, const char *key, const char *value)
{
	struct presence_user *u = presence_registry_user_find(f->reg, user);
	char reason[PRESENCE_STATE_REASON_SIZE];
	bool changed;

	assert_non_null(u);
	assert_int_equal(presence_state_set_key(presence_user_state(u), &limits, key, strlen(key),
	                                        value, strlen(value), &changed, reason),
	                 PRESENCE_OK);
	presence_registry_user_changed(f->reg, u);
	return publish(f, 2000, NULL) == 1;
}

/* Flushes everything, in steps of max_users; returns the number of steps. */
static int flush_steps(struct fixture *f, size_t max_users)
{
	char err[PRESENCE_STORE_ERR_SIZE] = "";
	bool done = false;
	int steps = 0;

	while (!done) {
		if (presence_store_flush_step(f->store, f->reg, max_users, SIZE_MAX, &done, err,
		                              sizeof(err)) != PRESENCE_OK) {
			fail_msg("flush failed: %s", err);
		}
		steps++;
	}
	assert_false(presence_store_unsaved(f->store, f->reg));
	return steps;
}

static void flush(struct fixture *f)
{
	flush_steps(f, SIZE_MAX);
}

/* Runs a whole compaction (asked for) in steps of max_users. */
static void compact(struct fixture *f, size_t max_users)
{
	char err[PRESENCE_STORE_ERR_SIZE] = "";
	bool finished = false;
	int steps = 0;

	presence_store_request_compaction(f->store);
	while (!finished) {
		if (presence_store_compact_step(f->store, f->reg, max_users, SIZE_MAX, &finished,
		                                err, sizeof(err)) != PRESENCE_OK) {
			fail_msg("compaction failed: %s", err);
		}
		assert_true(++steps < 100000);
	}
	assert_false(presence_store_compacting(f->store));
}

/* Asserts the last-document values of user name in reg. */
static void assert_record(struct presence_registry *reg, const char *name, uint64_t seq,
                          int64_t since, bool available, const char *state_json)
{
	struct presence_user *user = presence_registry_user_find(reg, name);
	struct presence_user_record rec;

	if (user == NULL) {
		fail_msg("user %s was not restored", name);
	}
	presence_registry_user_record(user, &rec);
	assert_string_equal(rec.username, name);
	assert_int_equal(rec.seq, seq);
	assert_int_equal(rec.since_ms, since);
	assert_int_equal(rec.available, available);
	assert_string_equal(rec.state_json, state_json);
}

static void assert_file(const char *path, const char *expected)
{
	char *text = read_file(path);

	if (text == NULL) {
		fail_msg("%s cannot be read", path);
	}
	assert_string_equal(text, expected);
	free(text);
}

/* ---- the files ---------------------------------------------------------------------------- */

static void a_first_start_writes_an_empty_snapshot_and_a_journal(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded = open_fixture(f, false);

	assert_false(loaded.found);
	assert_int_equal(loaded.users, 0);
	assert_int_equal(presence_registry_user_count(f->reg), 0);
	assert_string_equal(presence_store_path(f->store), f->path);
	assert_string_equal(presence_store_journal_path(f->store), f->journal);
	assert_file(f->path, SNAPSHOT_HEAD(1, 0) "{\"end\":true,\"users\":0}\n");
	assert_file(f->journal, JOURNAL_HEAD(1) "{\"start\":true,\"seq_shift\":0}\n");
	assert_false(file_exists(f->next));
}

static void changes_are_appended_one_record_per_line(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_user *ghost;

	open_fixture(f, true);
	online(f, 1, "alice");
	assert_true(change(f, "alice", "status", "away"));
	online(f, 2, "b\"o/b");
	/* Never published: not recorded. */
	assert_int_equal(presence_registry_user_get(f->reg, "ghost", &ghost), PRESENCE_OK);
	assert_true(presence_store_unsaved(f->store, f->reg));
	flush(f);
	assert_file(f->journal,
	            JOURNAL_HEAD(1) "{\"start\":true,\"seq_shift\":0}\n"
	                            "{\"username\":\"alice\",\"seq\":2,\"since\":1000,"
	                            "\"available\":true,\"state\":{\"status\":\"away\"}}\n"
	                            "{\"username\":\"b\\\"o/b\",\"seq\":1,\"since\":1000,"
	                            "\"available\":true,\"state\":{}}\n");
	/* A clean stop writes what changed since, then the stop record. */
	offline(f, 2, 3000);
	close_fixture(f, true);
	assert_file(f->journal,
	            JOURNAL_HEAD(1) "{\"start\":true,\"seq_shift\":0}\n"
	                            "{\"username\":\"alice\",\"seq\":2,\"since\":1000,"
	                            "\"available\":true,\"state\":{\"status\":\"away\"}}\n"
	                            "{\"username\":\"b\\\"o/b\",\"seq\":1,\"since\":1000,"
	                            "\"available\":true,\"state\":{}}\n"
	                            "{\"username\":\"b\\\"o/b\",\"seq\":2,\"since\":3000,"
	                            "\"available\":false,\"state\":{}}\n"
	                            "{\"stop\":true}\n");
}

static void a_compaction_writes_the_snapshot_and_the_journal_starts_again(void **ctx)
{
	struct fixture *f = *ctx;

	open_fixture(f, false);
	online(f, 1, "alice");
	online(f, 2, "bob");
	offline(f, 2, 3000);
	flush(f);
	compact(f, 1);
	/* Without keep_state there is no "state". */
	assert_file(
	    f->path,
	    SNAPSHOT_HEAD(
	        2, 0) "{\"username\":\"alice\",\"seq\":1,\"since\":1000,\"available\":true}\n"
	              "{\"username\":\"bob\",\"seq\":2,\"since\":3000,\"available\":false}\n"
	              "{\"end\":true,\"users\":2}\n");
	assert_file(f->journal, JOURNAL_HEAD(2));
	assert_false(file_exists(f->next));
	assert_int_equal(presence_store_snapshot_users(f->store), 2);
	assert_int_equal(presence_store_snapshot_bytes(f->store), file_size(f->path));
	assert_int_equal(presence_store_journal_bytes(f->store), file_size(f->journal));
	online(f, 3, "carol");
	flush(f);
	assert_file(f->journal, JOURNAL_HEAD(2) "{\"username\":\"carol\",\"seq\":1,\"since\":1000,"
	                                        "\"available\":true}\n");
}

/* What the store wrote before it rendered records by hand: a cJSON object printed compactly. */
static char *cjson_record(const char *name, const char *seq, const char *since, bool available,
                          const char *state)
{
	cJSON *object = cJSON_CreateObject();
	char *text;

	assert_non_null(object);
	assert_non_null(cJSON_AddStringToObject(object, "username", name));
	assert_non_null(cJSON_AddRawToObject(object, "seq", seq));
	assert_non_null(cJSON_AddRawToObject(object, "since", since));
	assert_non_null(cJSON_AddBoolToObject(object, "available", available));
	assert_non_null(cJSON_AddRawToObject(object, "state", state));
	text = cJSON_PrintUnformatted(object);
	assert_non_null(text);
	cJSON_Delete(object);
	return text;
}

static void a_record_is_byte_for_byte_what_cjson_prints(void **ctx)
{
	struct fixture *f = *ctx;
	char long_name[200];
	const struct {
		const char *name;
		uint64_t seq;
		int64_t since;
		bool available;
		const char *seq_text, *since_text;
	} cases[] = {
	    {"tab\tquote\"back\\slash\x01\x1f\x7f", 9007199254740991u, -5, true, "9007199254740991",
	     "-5"},
	    {"Zo\xC3\xAB \xE6\x9D\xB1 \xF0\x9F\x98\x80 a/b+c#", 1, 0, false, "1", "0"},
	    {long_name, 42, 1764265200123, true, "42", "1764265200123"},
	};
	cJSON *state = cJSON_Parse("{\"s\":\"x\\u0001\\\"\",\"n\":[1,2.5,-0.25]}");
	char *text;
	size_t i;

	memset(long_name, '"', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	assert_non_null(state);
	open_fixture(f, true);
	for (i = 0; i < COUNT(cases); i++) {
		assert_int_equal(presence_registry_user_restore(f->reg, cases[i].name, cases[i].seq,
		                                                cases[i].since, cases[i].available,
		                                                state),
		                 PRESENCE_OK);
	}
	compact(f, 2);
	text = read_file(f->path);
	for (i = 0; i < COUNT(cases); i++) {
		char *expected = cjson_record(cases[i].name, cases[i].seq_text, cases[i].since_text,
		                              cases[i].available,
		                              "{\"s\":\"x\\u0001\\\"\",\"n\":[1,2.5,-0.25]}");

		if (strstr(text, expected) == NULL) {
			fail_msg("record %zu: %s not in %s", i, expected, text);
		}
		cJSON_free(expected);
	}
	free(text);
	cJSON_Delete(state);
}

/* ---- round trips and seq ---------------------------------------------------------------- */

static void a_clean_stop_round_trips_every_user_exactly(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;

	open_fixture(f, true);
	online(f, 1, "alice");
	assert_true(change(f, "alice", "status", "away"));
	assert_true(change(f, "alice", "deep", "{\"a\":[1,2.5,\"x\"],\"b\":null}"));
	online(f, 2, "zoë/+#%");
	online(f, 3, "line\nbreak\\slash\"quote");
	flush(f);
	compact(f, 2);
	offline(f, 2, 5000);
	loaded = restart(f, true, true);
	assert_true(loaded.found);
	assert_true(loaded.clean);
	assert_int_equal(loaded.version, 2);
	assert_int_equal(loaded.seq_shift, 0);
	assert_int_equal(loaded.users, 3);
	assert_int_equal(loaded.available, 2);
	assert_record(f->reg, "alice", 3, 1000, true,
	              "{\"status\":\"away\",\"deep\":{\"a\":[1,2.5,\"x\"],\"b\":null}}");
	assert_record(f->reg, "zoë/+#%", 2, 5000, false, "{}");
	assert_record(f->reg, "line\nbreak\\slash\"quote", 1, 1000, true, "{}");
	/* The kept state is live again. */
	assert_string_equal(
	    presence_state_json(presence_user_state(presence_registry_user_find(f->reg, "alice"))),
	    "{\"status\":\"away\",\"deep\":{\"a\":[1,2.5,\"x\"],\"b\":null}}");
}

/* Issue 18: a user's privacy choice is saved with its record (whatever keep_state says), kept
 * through a compaction and a restart, and the latest record's choice wins; a record without one
 * means everyone; a broken one is refused with a reason. */
static void privacy_choices_are_saved_and_restored(void **ctx)
{
	static const char list[] = "{\"visible_to\":[\"b\u00f6b\",\"carol\"]}";
	struct fixture *f = *ctx;
	struct presence_privacy *choice = NULL;
	char reason[PRESENCE_VISIBILITY_REASON_SIZE];
	bool added;
	char *text;

	open_fixture(f, false);
	online(f, 1, "alice");
	online(f, 2, "dave");
	assert_int_equal(
	    presence_privacy_parse(list, sizeof(list) - 1, &choice, reason, sizeof(reason)),
	    PRESENCE_OK);
	presence_registry_user_set_privacy(presence_registry_user_find(f->reg, "alice"), choice);
	assert_int_equal(presence_store_note_change(
	                     f->store, presence_registry_user_find(f->reg, "alice"), &added),
	                 PRESENCE_OK);
	flush(f);
	restart(f, false, true);
	text = presence_privacy_render(
	    presence_user_privacy(presence_registry_user_find(f->reg, "alice")));
	assert_string_equal(text, "{\"visible_to\":[\"böb\",\"carol\"]}");
	free(text);
	assert_null(presence_user_privacy(presence_registry_user_find(f->reg, "dave")));
	/* Back to everyone: the newer record has none. */
	presence_registry_user_set_privacy(presence_registry_user_find(f->reg, "alice"), NULL);
	offline(f, 1, 3000);
	compact(f, 1);
	restart(f, false, true);
	assert_null(presence_user_privacy(presence_registry_user_find(f->reg, "alice")));
	close_fixture(f, true);
	append_file(f->journal, "{\"username\":\"eve\",\"seq\":1,\"since\":1,\"available\":false,"
	                        "\"privacy\":{\"visible_to\":7}}\n");
	{
		struct presence_registry *reg = new_registry(false);
		struct presence_store *st = presence_store_new(f->path, 0);
		struct presence_store_loaded loaded;
		char err[PRESENCE_STORE_ERR_SIZE] = "";

		assert_int_equal(presence_store_load(st, reg, &loaded, err, sizeof(err)),
		                 PRESENCE_ERR_INVAL);
		assert_non_null(strstr(err, "\"privacy\": visible_to must be"));
		presence_store_free(st);
		presence_registry_free(reg);
	}
	f->reg = NULL;
	f->store = NULL;
}

static void the_deepest_state_a_write_can_make_saves_and_loads_back(void **ctx)
{
	/* max_state_depth allows at most 128 levels: a state that deep (a value of 127 levels in
	 * the state object) must save, load back identically and write the same bytes again. */
	const struct presence_state_limits deepest = {
	    .max_state_bytes = 8192, .max_keys = 64, .max_depth = 128};
	struct fixture *f = *ctx;
	struct presence_user *user;
	char reason[PRESENCE_STATE_REASON_SIZE];
	char payload[2 * 128 + 1];
	char expected[2 * 128 + 16];
	char *first;
	bool changed;

	open_fixture(f, true);
	online(f, 1, "deep");
	user = presence_registry_user_find(f->reg, "deep");
	memset(payload, '[', 127);
	memset(payload + 127, ']', 127);
	payload[254] = '\0';
	assert_int_equal(presence_state_set_key(presence_user_state(user), &deepest, "k", 1,
	                                        payload, 254, &changed, reason),
	                 PRESENCE_OK);
	snprintf(expected, sizeof(expected), "{\"k\":%s,\"n\":1}", payload);
	assert_true(change(f, "deep", "n", "1"));
	flush(f);
	compact(f, 10);
	first = read_file(f->path);
	restart(f, true, true);
	user = presence_registry_user_find(f->reg, "deep");
	assert_non_null(user);
	assert_string_equal(presence_state_json(presence_user_state(user)), expected);
	compact(f, 10);
	{
		char *again = read_file(f->path);

		/* The same users and bytes; only the generation differs. */
		assert_string_equal(strstr(again, "\n"), strstr(first, "\n"));
		free(again);
	}
	free(first);
}

static void a_clean_stop_continues_at_the_recorded_seq_plus_one(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_document doc;

	open_fixture(f, false);
	online(f, 1, "alice");
	assert_true(change(f, "alice", "k", "v"));
	restart(f, true, false);
	/* The correction: alice was shown as available. */
	assert_int_equal(publish(f, 9000, &doc), 1);
	assert_false(doc.available);
	assert_int_equal(doc.seq, 3);
	assert_int_equal(doc.since_ms, 9000);
	/* A user the files do not know starts at 1. */
	online(f, 2, "newcomer");
	assert_record(f->reg, "newcomer", 1, 1000, true, "{}");
}

static void an_unclean_stop_continues_past_the_margin_every_time(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;
	struct presence_document doc;

	open_fixture(f, false);
	online(f, 1, "alice");
	assert_true(change(f, "alice", "k", "v"));
	online(f, 2, "bob");
	offline(f, 2, 3000);
	flush(f);
	loaded = restart(f, false, false);
	assert_false(loaded.clean);
	assert_int_equal(loaded.seq_shift, PRESENCE_STORE_SEQ_MARGIN);
	assert_record(f->reg, "alice", 2 + PRESENCE_STORE_SEQ_MARGIN, 1000, true, "{}");
	assert_record(f->reg, "bob", 2 + PRESENCE_STORE_SEQ_MARGIN, 3000, false, "{}");
	assert_int_equal(presence_registry_seq_floor(f->reg), PRESENCE_STORE_SEQ_MARGIN);
	/* The start recorded the shift: the corrections need no flush first. */
	assert_int_equal(publish(f, 4000, &doc), 1);
	assert_int_equal(doc.seq, 3 + PRESENCE_STORE_SEQ_MARGIN);
	/* Users the files do not know start at margin + 1 and may publish at once: the floor
	 * is recorded. */
	online(f, 3, "carol");
	assert_int_equal(presence_registry_held_count(f->reg), 0);
	assert_record(f->reg, "carol", PRESENCE_STORE_SEQ_MARGIN + 1, 1000, true, "{}");

	/* A second crash right away: the shift again, over the first. */
	loaded = restart(f, false, false);
	assert_int_equal(loaded.seq_shift, PRESENCE_STORE_SEQ_MARGIN);
	assert_record(f->reg, "bob", 2 + 2 * PRESENCE_STORE_SEQ_MARGIN, 3000, false, "{}");
	/* alice's correction and carol were never flushed: what the files hold, shifted. */
	assert_record(f->reg, "alice", 2 + 2 * PRESENCE_STORE_SEQ_MARGIN, 1000, true, "{}");
	assert_null(presence_registry_user_find(f->reg, "carol"));
	assert_int_equal(presence_registry_seq_floor(f->reg), 2 * PRESENCE_STORE_SEQ_MARGIN);
	/* Then a clean stop and start: nothing more. */
	loaded = restart(f, true, false);
	assert_true(loaded.clean);
	assert_record(f->reg, "bob", 2 + 2 * PRESENCE_STORE_SEQ_MARGIN, 3000, false, "{}");
}

static void the_guard_holds_documents_until_a_flush_records_them(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;
	int n;

	/* Margin 3 (setup_small_margin). */
	open_fixture(f, false);
	online(f, 1, "alice");
	assert_true(change(f, "alice", "n", "2"));
	assert_true(change(f, "alice", "n", "3"));
	assert_false(change(f, "alice", "n", "4"));
	assert_int_equal(presence_registry_held_count(f->reg), 1);
	flush(f);
	assert_int_equal(presence_registry_held_count(f->reg), 0);
	assert_int_equal(publish(f, 3000, NULL), 1);
	for (n = 5; n <= 6; n++) {
		char value[8];

		snprintf(value, sizeof(value), "%d", n);
		assert_true(change(f, "alice", "n", value));
	}
	assert_false(change(f, "alice", "n", "7"));
	/* A crash now: the files say 3, and the next run continues above every seq that went
	 * out (6). */
	loaded = restart(f, false, false);
	assert_int_equal(loaded.seq_shift, 3);
	assert_record(f->reg, "alice", 6, 1000, true, "{}");
}

static void a_flush_writes_what_changed_whatever_the_number_of_users(void **ctx)
{
	struct fixture *f = *ctx;
	char name[32];
	long before;
	int i;

	open_fixture(f, true);
	for (i = 0; i < 2000; i++) {
		snprintf(name, sizeof(name), "u%d", i);
		online(f, (uintptr_t)i + 1, name);
	}
	flush(f);
	compact(f, 500);
	before = file_size(f->journal);
	assert_true(change(f, "u7", "status", "away"));
	assert_true(change(f, "u7", "status", "back"));
	flush(f);
	/* One record, with the user's last values: a few dozen bytes, not 2000 users. */
	assert_int_equal(file_size(f->journal) - before,
	                 (long)strlen("{\"username\":\"u7\",\"seq\":3,\"since\":1000,"
	                              "\"available\":true,\"state\":{\"status\":\"back\"}}\n"));
	/* A flush in steps of one user writes them one by one. */
	for (i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "u%d", i);
		assert_true(change(f, name, "k", "v"));
	}
	assert_int_equal(flush_steps(f, 1), 5);
}

static void forgotten_users_stay_gone_and_the_floor_survives_restarts(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;
	struct presence_user *user;
	int i;

	open_fixture(f, false);
	online(f, 1, "alice");
	for (i = 0; i < 5; i++) {
		assert_true(change(f, "alice", "n", i % 2 ? "1" : "2"));
	}
	offline(f, 1, 3000);
	online(f, 2, "bob");
	flush(f);
	/* alice (seq 7) is forgotten. */
	presence_registry_set_forget_after(f->reg, 1);
	presence_registry_set_max_users(f->reg, 1);
	assert_int_equal(presence_registry_forget_due(f->reg, 10), 1);
	user = presence_registry_forgotten_take(f->reg);
	assert_string_equal(presence_user_name(user), "alice");
	presence_store_note_forget(f->store, user);
	presence_user_free(user);
	assert_true(presence_store_unsaved(f->store, f->reg));
	flush(f);
	{
		char *text = read_file(f->journal);

		assert_non_null(strstr(text, "{\"forget\":\"alice\",\"seq\":7}\n"
		                             "{\"seq_floor\":7}\n"));
		free(text);
	}
	loaded = restart(f, true, false);
	assert_int_equal(loaded.users, 1);
	assert_null(presence_registry_user_find(f->reg, "alice"));
	assert_int_equal(presence_registry_seq_floor(f->reg), 7);
	/* Back: numbered above every seq it had. */
	online(f, 3, "alice");
	assert_record(f->reg, "alice", 8, 1000, true, "{}");
	flush(f);
	/* Compacted away: the snapshot has no alice record but the floor. */
	compact(f, 10);
	loaded = restart(f, false, false);
	assert_int_equal(loaded.users, 2);
	assert_int_equal(presence_registry_seq_floor(f->reg), 7 + PRESENCE_STORE_SEQ_MARGIN);
	assert_record(f->reg, "alice", 8 + PRESENCE_STORE_SEQ_MARGIN, 1000, true, "{}");
}

static void a_forgotten_user_that_was_never_flushed_leaves_no_record(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_user *user;

	open_fixture(f, false);
	flush(f);
	online(f, 1, "brief");
	offline(f, 1, 2000);
	presence_registry_set_forget_after(f->reg, 1);
	presence_registry_set_max_users(f->reg, 0);
	presence_registry_set_max_users(f->reg, 1);
	assert_int_equal(presence_registry_user_get(f->reg, "next", &user), PRESENCE_OK);
	user = presence_registry_forgotten_take(f->reg);
	assert_non_null(user);
	presence_store_note_forget(f->store, user);
	presence_user_free(user);
	flush(f);
	restart(f, true, false);
	assert_null(presence_registry_user_find(f->reg, "brief"));
	assert_int_equal(presence_registry_seq_floor(f->reg), 2);
}

/* ---- compaction and crashes ------------------------------------------------------------- */

/* The users of reg as "name:seq:available;" in name order, for comparing registries. */
static char *describe(struct presence_registry *reg)
{
	static char out[8192];
	const char *names[256];
	struct presence_cursor c = {0};
	struct presence_user *user;
	size_t n = 0, len = 0;

	assert_true(presence_registry_cursor_start(reg, &c));
	while ((user = presence_registry_cursor_next(reg, &c)) != NULL && n < COUNT(names)) {
		names[n++] = presence_user_name(user);
	}
	for (size_t i = 0; i < n; i++) {
		for (size_t j = i + 1; j < n; j++) {
			if (strcmp(names[j], names[i]) < 0) {
				const char *t = names[i];

				names[i] = names[j];
				names[j] = t;
			}
		}
	}
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		struct presence_user_record rec;

		presence_registry_user_record(presence_registry_user_find(reg, names[i]), &rec);
		len +=
		    (size_t)snprintf(out + len, sizeof(out) - len, "%s:%llu:%d:%s;", rec.username,
		                     (unsigned long long)rec.seq, rec.available, rec.state_json);
	}
	return strdup(out);
}

/* Opens f again (as a broker starting) and asserts its users are those want describes. */
static void reopens_as(struct fixture *f, const char *want)
{
	char *got;

	open_fixture(f, true);
	got = describe(f->reg);
	assert_string_equal(got, want);
	free(got);
}

/* Brings u0 to u5 online, sessions 1 to 6. */
static void six_online(struct fixture *f)
{
	for (int i = 0; i < 6; i++) {
		char name[8];

		snprintf(name, sizeof(name), "u%d", i);
		online(f, (uintptr_t)i + 1, name);
	}
}

/* The compaction of compaction_scenario, from its flush on. */
static void compaction_during_changes(struct fixture *f, bool finish)
{
	char err[PRESENCE_STORE_ERR_SIZE];
	bool finished = false;

	flush(f);
	presence_store_request_compaction(f->store);
	assert_int_equal(
	    presence_store_compact_step(f->store, f->reg, 2, SIZE_MAX, &finished, err, sizeof(err)),
	    PRESENCE_OK);
	assert_true(presence_store_compacting(f->store));
	assert_true(file_exists(f->next));
	assert_true(change(f, "u0", "k", "written"));
	assert_true(change(f, "u5", "k", "not yet"));
	online(f, 10, "late");
	offline(f, 2, 4000);
	flush(f);
	while (finish && !finished) {
		assert_int_equal(presence_store_compact_step(f->store, f->reg, 2, SIZE_MAX,
		                                             &finished, err, sizeof(err)),
		                 PRESENCE_OK);
	}
	if (finish) {
		assert_false(file_exists(f->next));
		assert_true(change(f, "u3", "k", "after"));
		flush(f);
	}
}

/* Makes six users, flushed; then a compaction in steps of two during which users written and
 * not yet written change, a user arrives and one leaves; then more changes after it. */
static void compaction_scenario(struct fixture *f, bool finish)
{
	six_online(f);
	compaction_during_changes(f, finish);
}

static void a_crash_during_a_compaction_loses_nothing(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;

	open_fixture(f, true);
	compaction_scenario(f, false);
	loaded = restart(f, false, true);
	assert_false(loaded.clean);
	assert_int_equal(loaded.users, 7);
	assert_record(f->reg, "u0", 2 + PRESENCE_STORE_SEQ_MARGIN, 1000, true,
	              "{\"k\":\"written\"}");
	assert_record(f->reg, "u5", 2 + PRESENCE_STORE_SEQ_MARGIN, 1000, true,
	              "{\"k\":\"not yet\"}");
	assert_record(f->reg, "u1", 2 + PRESENCE_STORE_SEQ_MARGIN, 4000, false, "{}");
	assert_record(f->reg, "late", 1 + PRESENCE_STORE_SEQ_MARGIN, 1000, true, "{}");
	/* The start found the next journal and wrote everything anew. */
	assert_false(file_exists(f->next));
	assert_false(presence_store_compacting(f->store));
}

static void every_state_the_end_of_a_compaction_can_leave_reads_the_same(void **ctx)
{
	struct fixture *f = *ctx;
	char s_old[200], j_old[200], s_new[200], j_new[200];
	char *want;

	snprintf(s_old, sizeof(s_old), "%s/s-old", f->dir);
	snprintf(j_old, sizeof(j_old), "%s/j-old", f->dir);
	snprintf(s_new, sizeof(s_new), "%s/s-new", f->dir);
	snprintf(j_new, sizeof(j_new), "%s/j-new", f->dir);
	open_fixture(f, true);
	/* The files before the compaction begins. */
	six_online(f);
	flush(f);
	close_fixture(f, true);
	open_fixture(f, true);
	/* That restart appended to the journal: take the copies now, then the compaction (its
	 * users are the same; their sessions start again). */
	six_online(f);
	flush(f);
	copy_file(f->path, s_old);
	copy_file(f->journal, j_old);
	compaction_during_changes(f, true);
	want = describe(f->reg);
	close_fixture(f, true);
	copy_file(f->path, s_new);
	copy_file(f->journal, j_new);

	/* Before the snapshot is renamed: the old snapshot, the old journal and the next one
	 * (which holds everything since the compaction began). */
	copy_file(s_old, f->path);
	copy_file(j_old, f->journal);
	copy_file(j_new, f->next);
	reopens_as(f, want);
	close_fixture(f, true);

	/* The snapshot renamed, the old journal still there (skipped: an older generation). */
	copy_file(s_new, f->path);
	copy_file(j_old, f->journal);
	copy_file(j_new, f->next);
	reopens_as(f, want);
	close_fixture(f, true);

	/* The old journal removed, the next one not renamed yet. */
	copy_file(s_new, f->path);
	assert_int_equal(unlink(f->journal), 0);
	copy_file(j_new, f->next);
	reopens_as(f, want);
	close_fixture(f, true);

	/* Done. */
	copy_file(s_new, f->path);
	copy_file(j_new, f->journal);
	(void)unlink(f->next);
	reopens_as(f, want);
	free(want);
}

static void a_record_cut_short_by_a_crash_is_ignored_and_cut_off(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;

	open_fixture(f, false);
	online(f, 1, "alice");
	flush(f);
	close_fixture(f, true);
	/* The stop record, then half a record (no newline): the stop stands. */
	append_file(f->journal, "{\"username\":\"bob\",\"seq\":1,\"si");
	loaded = open_fixture(f, false);
	assert_true(loaded.clean);
	assert_int_equal(loaded.users, 1);
	/* The start cut it off before appending. */
	{
		char *text = read_file(f->journal);

		assert_null(strstr(text, "\"bob\""));
		assert_non_null(
		    strstr(text, "{\"stop\":true}\n{\"start\":true,\"seq_shift\":0}\n"));
		free(text);
	}
	online(f, 2, "bob");
	flush(f);
	close_fixture(f, false);
	/* Zeros a crash may leave after the last record are a cut-off tail too. */
	append_file(f->journal, "\n\n");
	{
		FILE *file = fopen(f->journal, "a");

		assert_non_null(file);
		assert_int_equal(fwrite("\0\0\0\0", 1, 4, file), 4);
		fclose(file);
	}
	loaded = open_fixture(f, false);
	assert_false(loaded.clean);
	assert_int_equal(loaded.users, 2);
}

/* ---- broken files ------------------------------------------------------------------------ */

/* One broken set of files (snapshot, journal; NULL: none) and a phrase its reason must
 * contain. */
struct broken {
	const char *snapshot;
	const char *journal;
	const char *reason;
};

#define HEAD "{\"format\":\"mosquitto-presence-state\",\"version\":1,\"clean\":false,\"users\":["
#define ALICE "{\"username\":\"alice\",\"seq\":7,\"since\":1764265200123,\"available\":true}"
#define S2 SNAPSHOT_HEAD(1, 0)
#define END0 "{\"end\":true,\"users\":0}\n"

static void broken_files_are_refused_with_a_reason(void **ctx)
{
	struct fixture *f = *ctx;
	static const struct broken cases[] = {
	    /* Version 1 (one JSON document). */
	    {"", NULL, "it is empty"},
	    {"hello", NULL, "not valid JSON or is cut short (parsing failed at byte 0 of 5)"},
	    {HEAD "\n" ALICE ",\n{\"username\":\"bo", NULL, "not valid JSON or is cut short"},
	    {HEAD "\n" ALICE ",", NULL, "it is cut short"},
	    {HEAD "\n" ALICE, NULL, "it is cut short"},
	    {HEAD "]} trailing", NULL, "not valid JSON"},
	    {HEAD "]}{}", NULL, "not valid JSON"},
	    {"[]", NULL, "not a JSON object"},
	    {"{\"format\":\"something-else\",\"version\":1,\"clean\":false,\"users\":[]}", NULL,
	     "not a mosquitto-presence"},
	    {"{\"format\":\"mosquitto-presence-state\",\"version\":3,\"generation\":1,"
	     "\"seq_floor\":0}\n",
	     NULL, "\"version\" is not 2"},
	    {"{\"format\":\"mosquitto-presence-state\",\"version\":\"1\",\"clean\":false,"
	     "\"users\":[]}",
	     NULL, "\"version\" is not"},
	    {"{\"format\":\"mosquitto-presence-state\",\"version\":1,\"clean\":\"no\",\"users\":[]"
	     "}",
	     NULL, "\"clean\" must be true or false"},
	    {"{\"format\":\"mosquitto-presence-state\",\"version\":1,\"clean\":false,\"users\":{}}",
	     NULL, "\"users\" must be an array"},
	    {HEAD "7]}", NULL, "users[0] is not an object"},
	    {HEAD ALICE ",{\"username\":7,\"seq\":1,\"since\":0,\"available\":true}]}", NULL,
	     "users[1]: \"username\" must be a non-empty UTF-8 string"},
	    {HEAD "{\"username\":\"a\",\"seq\":-1,\"since\":0,\"available\":true}]}", NULL,
	     "users[0]: \"seq\" must be an integer"},
	    {HEAD "{\"username\":\"a\",\"seq\":1e300,\"since\":0,\"available\":true}]}", NULL,
	     "users[0]: \"seq\" must be an integer"},
	    {HEAD "{\"username\":\"a\",\"seq\":1,\"since\":\"now\",\"available\":true}]}", NULL,
	     "users[0]: \"since\" must be an integer"},
	    {HEAD "{\"username\":\"a\",\"seq\":1,\"since\":0,\"available\":1}]}", NULL,
	     "users[0]: \"available\" must be true or false"},
	    {HEAD "{\"username\":\"a\",\"seq\":1,\"since\":0,\"available\":true,\"state\":[]}]}",
	     NULL, "users[0]: \"state\" must be a JSON object"},
	    {HEAD "{\"username\":\"a\",\"seq\":1,\"since\":0,\"available\":true,"
	          "\"state\":{\"a/b\":1}}]}",
	     NULL, "users[0]: \"state\" has an invalid key"},
	    {HEAD ALICE "," ALICE "]}", NULL, "users[1]: user \"alice\" appears twice"},
	    /* Version 2 snapshots. */
	    {S2, NULL, "has no end record"},
	    {S2 ALICE "\n", NULL, "has no end record"},
	    {S2 ALICE "\n" END0, NULL, "does not count the 1 users"},
	    {S2 END0 ALICE "\n", NULL, "follows the end record"},
	    {S2 ALICE, NULL, "is not a complete JSON object"},
	    {S2 "[1]\n" END0, NULL, "line 2 is not a complete JSON object"},
	    {S2 "{\"username\":\"a\",\"seq\":1,\"since\":0}\n" END0, NULL,
	     "line 2 of the snapshot: \"available\" must be true or false"},
	    {"{\"format\":\"mosquitto-presence-state\",\"version\":2,\"seq_floor\":0}\n" END0, NULL,
	     "\"generation\" must be an integer"},
	    {"{\"format\":\"mosquitto-presence-state\",\"version\":2,\"generation\":1}\n" END0,
	     NULL, "\"seq_floor\" must be an integer"},
	    /* Journals. */
	    {S2 END0, "", "does not start with a journal header"},
	    {S2 END0, "{\"format\":\"x\",\"version\":2,\"generation\":1}\n",
	     "its first line's \"format\" is not \"mosquitto-presence-journal\""},
	    {S2 END0, JOURNAL_HEAD(1) "[1]\n{\"stop\":true}\n",
	     "line 2 is not a JSON object, and complete records follow it"},
	    {S2 END0, JOURNAL_HEAD(1) "{\"what\":1}\n", "line 2 of the journal is not a record"},
	    {S2 END0, JOURNAL_HEAD(1) "{\"forget\":\"a\"}\n", "needs a user name and its \"seq\""},
	    {S2 END0, JOURNAL_HEAD(1) "{\"seq_floor\":-3}\n", "\"seq_floor\" must be an integer"},
	    {S2 END0, JOURNAL_HEAD(1) "{\"start\":true}\n", "\"seq_shift\" must be an integer"},
	    {S2 END0, JOURNAL_HEAD(1) "{\"username\":\"a\",\"seq\":1,\"since\":0}\n",
	     "line 2 of the journal: \"available\" must be true or false"},
	};
	char err[PRESENCE_STORE_ERR_SIZE];
	size_t i;

	for (i = 0; i < COUNT(cases); i++) {
		struct presence_registry *reg = new_registry(false);
		struct presence_store *store = presence_store_new(f->path, f->margin);
		struct presence_store_loaded loaded;
		enum presence_err rc;

		write_file(f->path, cases[i].snapshot);
		(void)unlink(f->journal);
		if (cases[i].journal != NULL) {
			write_file(f->journal, cases[i].journal);
		}
		err[0] = '\0';
		rc = presence_store_load(store, reg, &loaded, err, sizeof(err));
		if (rc != PRESENCE_ERR_INVAL || strstr(err, cases[i].reason) == NULL) {
			fail_msg("case %zu (%s / %s): rc %d, reason \"%s\", expected \"%s\"", i,
			         cases[i].snapshot, cases[i].journal ? cases[i].journal : "-", rc,
			         err, cases[i].reason);
		}
		presence_store_free(store);
		presence_registry_free(reg);
	}
}

static void a_file_that_cannot_be_read_is_reported(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;
	char err[PRESENCE_STORE_ERR_SIZE];

	f->reg = new_registry(false);
	f->store = presence_store_new(f->path, f->margin);
	assert_int_equal(mkdir(f->path, 0700), 0);
	assert_int_equal(presence_store_load(f->store, f->reg, &loaded, err, sizeof(err)),
	                 PRESENCE_ERR_IO);
	assert_non_null(strstr(err, "is not a regular file"));
	assert_non_null(strstr(err, f->path));
	assert_int_equal(rmdir(f->path), 0);
}

static void a_version_1_file_is_read_and_rewritten_as_version_2(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;

	/* Pretty-printed, with members this version does not know, written by hand. */
	write_file(f->path, "{\n  \"format\": \"mosquitto-presence-state\",\n  \"version\": 1,\n"
	                    "  \"clean\": true,\n  \"note\": \"hand-made\",\n  \"users\": [\n"
	                    "    {\"seq\": 7, \"username\": \"alice\", \"available\": false,\n"
	                    "     \"since\": -5, \"extra\": [1], \"state\": {\"a\": 1}}\n  ]\n}\n");
	/* A journal beside a version 1 file is not its own: ignored, and replaced. */
	write_file(f->journal, "junk");
	loaded = open_fixture(f, true);
	assert_true(loaded.clean);
	assert_int_equal(loaded.version, 1);
	assert_record(f->reg, "alice", 7, -5, false, "{\"a\":1}");
	assert_file(f->path,
	            SNAPSHOT_HEAD(
	                1, 0) "{\"username\":\"alice\",\"seq\":7,\"since\":-5,\"available\":false,"
	                      "\"state\":{\"a\":1}}\n{\"end\":true,\"users\":1}\n");
	assert_file(f->journal, JOURNAL_HEAD(1) "{\"start\":true,\"seq_shift\":0}\n");
	/* An unclean version 1 file shifts, like any unclean stop. */
	close_fixture(f, true);
	(void)unlink(f->journal);
	write_file(f->path, HEAD ALICE "]}");
	loaded = open_fixture(f, false);
	assert_false(loaded.clean);
	assert_record(f->reg, "alice", 7 + PRESENCE_STORE_SEQ_MARGIN, 1764265200123, true, "{}");
}

static void broken_files_are_moved_aside_under_unique_names(void **ctx)
{
	struct fixture *f = *ctx;
	char aside[256], aside2[256], want[256];
	char err[PRESENCE_STORE_ERR_SIZE];

	f->store = presence_store_new(f->path, f->margin);
	write_file(f->path, "first");
	write_file(f->journal, "journal");
	/* 2025-11-27 17:40:00 UTC */
	assert_int_equal(
	    presence_store_move_aside(f->store, 1764265200, aside, sizeof(aside), err, sizeof(err)),
	    PRESENCE_OK);
	snprintf(want, sizeof(want), "%s.corrupt-20251127T174000Z", f->path);
	assert_string_equal(aside, want);
	assert_false(file_exists(f->path));
	assert_false(file_exists(f->journal));
	assert_file(aside, "first");
	snprintf(want, sizeof(want), "%s.corrupt-20251127T174000Z", f->journal);
	assert_file(want, "journal");

	write_file(f->path, "second");
	assert_int_equal(presence_store_move_aside(f->store, 1764265200, aside2, sizeof(aside2),
	                                           err, sizeof(err)),
	                 PRESENCE_OK);
	snprintf(want, sizeof(want), "%s.corrupt-20251127T174000Z-2", f->path);
	assert_string_equal(aside2, want);
	assert_file(aside2, "second");
	assert_file(aside, "first");
	/* Only a journal: its new name is reported. */
	write_file(f->next, "next");
	assert_int_equal(presence_store_move_aside(f->store, 1764265200, aside2, sizeof(aside2),
	                                           err, sizeof(err)),
	                 PRESENCE_OK);
	snprintf(want, sizeof(want), "%s.corrupt-20251127T174000Z", f->next);
	assert_string_equal(aside2, want);
}

static void a_file_that_cannot_be_moved_aside_stays_where_it_is(void **ctx)
{
	struct fixture *f = *ctx;
	char long_path[512];
	char aside[512];
	char err[PRESENCE_STORE_ERR_SIZE];
	struct presence_store *store;
	int n;

	/* A name of 240 bytes is fine; with ".corrupt-<time>" it exceeds NAME_MAX (255). */
	n = snprintf(long_path, sizeof(long_path), "%s/", f->dir);
	memset(long_path + n, 's', 240);
	long_path[n + 240] = '\0';
	write_file(long_path, "broken");
	store = presence_store_new(long_path, f->margin);
	assert_non_null(store);
	assert_int_equal(
	    presence_store_move_aside(store, 1764265200, aside, sizeof(aside), err, sizeof(err)),
	    PRESENCE_ERR_IO);
	assert_non_null(strstr(err, long_path));
	assert_true(file_exists(long_path));
	presence_store_free(store);
}

static void the_directory_must_exist(void **ctx)
{
	struct fixture *f = *ctx;
	char err[PRESENCE_STORE_ERR_SIZE];
	char path[256];
	struct presence_store *store;

	f->store = presence_store_new(f->path, f->margin);
	assert_int_equal(presence_store_check_dir(f->store, err, sizeof(err)), PRESENCE_OK);

	snprintf(path, sizeof(path), "%s/missing/state.json", f->dir);
	store = presence_store_new(path, 0);
	assert_int_equal(presence_store_check_dir(store, err, sizeof(err)), PRESENCE_ERR_IO);
	assert_non_null(strstr(err, "missing"));
	assert_non_null(strstr(err, "No such file or directory"));
	presence_store_free(store);

	write_file(f->path, "x");
	snprintf(path, sizeof(path), "%s/inside", f->path);
	store = presence_store_new(path, 0);
	assert_int_equal(presence_store_check_dir(store, err, sizeof(err)), PRESENCE_ERR_IO);
	assert_non_null(strstr(err, "is not a directory"));
	presence_store_free(store);

	/* A bare name lives in the current directory; "/x" in "/". */
	store = presence_store_new("state.json", 0);
	assert_int_equal(presence_store_check_dir(store, err, sizeof(err)), PRESENCE_OK);
	presence_store_free(store);
	store = presence_store_new("/state.json", 0);
	assert_int_equal(presence_store_check_dir(store, err, sizeof(err)), PRESENCE_OK);
	presence_store_free(store);
}

/* ---- write errors and starts ---------------------------------------------------------------- */

static void a_start_that_cannot_write_fails_and_leaves_no_temporary_file(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;
	char err[PRESENCE_STORE_ERR_SIZE];
	char path[256];
	struct presence_store *store;
	struct presence_registry *reg = new_registry(false);

	/* The directory is gone: nothing can be created. */
	snprintf(path, sizeof(path), "%s/missing/state.json", f->dir);
	store = presence_store_new(path, f->margin);
	assert_int_equal(presence_store_load(store, reg, &loaded, err, sizeof(err)), PRESENCE_OK);
	assert_int_equal(presence_store_start(store, reg, err, sizeof(err)), PRESENCE_ERR_IO);
	assert_non_null(strstr(err, "cannot create"));
	assert_non_null(strstr(err, "missing/state.json.tmp"));
	presence_store_free(store);

	/* The snapshot's name is taken by a non-empty directory: the rename fails. */
	snprintf(path, sizeof(path), "%s/taken", f->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/taken/x", f->dir);
	write_file(path, "x");
	snprintf(path, sizeof(path), "%s/taken", f->dir);
	store = presence_store_new(path, f->margin);
	assert_int_equal(presence_store_start(store, reg, err, sizeof(err)), PRESENCE_ERR_IO);
	assert_non_null(strstr(err, "cannot rename"));
	snprintf(path, sizeof(path), "%s/taken.tmp", f->dir);
	assert_false(file_exists(path));
	presence_store_free(store);
	presence_registry_free(reg);
}

static void a_failed_compaction_is_tried_again_and_loses_nothing(void **ctx)
{
	struct fixture *f = *ctx;
	char err[PRESENCE_STORE_ERR_SIZE];
	char inside[256];
	bool finished = false;

	open_fixture(f, false);
	online(f, 1, "alice");
	flush(f);
	/* The snapshot's name is taken by a non-empty directory while the compaction runs. */
	assert_int_equal(unlink(f->path), 0);
	assert_int_equal(mkdir(f->path, 0700), 0);
	snprintf(inside, sizeof(inside), "%s/x", f->path);
	write_file(inside, "x");
	presence_store_request_compaction(f->store);
	assert_int_equal(presence_store_compact_step(f->store, f->reg, 10, SIZE_MAX, &finished, err,
	                                             sizeof(err)),
	                 PRESENCE_ERR_IO);
	assert_non_null(strstr(err, "cannot rename"));
	assert_false(presence_store_compacting(f->store));
	/* Changes go on, to the next journal. */
	online(f, 2, "bob");
	flush(f);
	assert_true(file_exists(f->next));
	assert_int_equal(unlink(inside), 0);
	assert_int_equal(rmdir(f->path), 0);
	compact(f, 10);
	assert_false(file_exists(f->next));
	restart(f, true, false);
	assert_non_null(presence_registry_user_find(f->reg, "alice"));
	assert_non_null(presence_registry_user_find(f->reg, "bob"));
}

static void many_starts_make_the_next_start_write_everything_anew(void **ctx)
{
	struct fixture *f = *ctx;
	long size;
	int i;

	open_fixture(f, false);
	online(f, 1, "alice");
	flush(f);
	for (i = 0; i < 12; i++) {
		restart(f, true, false);
	}
	size = file_size(f->journal);
	/* At most STARTS_MAX (8) starts and stops pile up before the files are written anew. */
	assert_true(size < (long)strlen(JOURNAL_HEAD(9)) + 8 * 50);
	assert_record(f->reg, "alice", 1, 1000, true, "{}");
}

/* ---- allocation failures -------------------------------------------------------------------- */

static void loading_and_starting_survive_every_allocation_failure(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;
	char err[PRESENCE_STORE_ERR_SIZE];
	enum presence_err rc;
	long n;

	open_fixture(f, true);
	for (n = 0; n < 3; n++) {
		char name[8];

		snprintf(name, sizeof(name), "u%ld", n);
		online(f, (uintptr_t)n + 1, name);
	}
	assert_true(change(f, "u1", "status", "{\"a\":[1,2]}"));
	flush(f);
	compact(f, 10);
	assert_true(change(f, "u2", "status", "away"));
	close_fixture(f, false);
	for (n = 0;; n++) {
		struct presence_registry *reg = new_registry(true);
		struct presence_store *store;

		err[0] = '\0';
		failalloc_fail_after(n);
		store = presence_store_new(f->path, f->margin);
		rc = store == NULL ? PRESENCE_ERR_NOMEM
		                   : presence_store_load(store, reg, &loaded, err, sizeof(err));
		if (rc == PRESENCE_OK) {
			rc = presence_store_start(store, reg, err, sizeof(err));
		}
		failalloc_reset();
		presence_store_free(store);
		presence_registry_free(reg);
		if (rc == PRESENCE_OK) {
			break;
		}
		/* cJSON cannot tell a failed allocation from a syntax error. */
		if (rc != PRESENCE_ERR_NOMEM && rc != PRESENCE_ERR_INVAL) {
			fail_msg("allocation %ld: rc %d (%s)", n, rc, err);
		}
		assert_true(store == NULL || err[0] != '\0');
	}
	assert_true(n > 10);
	assert_int_equal(loaded.users, 3);
}

static void flushing_and_compacting_survive_every_allocation_failure(void **ctx)
{
	struct fixture *f = *ctx;
	char err[PRESENCE_STORE_ERR_SIZE];
	enum presence_err rc;
	bool done, added;
	long n;

	open_fixture(f, true);
	for (n = 0; n < 3; n++) {
		char name[80];

		/* Names over 64 bytes need memory to be escaped. */
		snprintf(name, sizeof(name), "%070ld", n);
		online(f, (uintptr_t)n + 1, name);
	}
	flush(f);
	for (n = 0;; n++) {
		char name[80];

		snprintf(name, sizeof(name), "%070ld", 1L);
		assert_true(change(f, name, "k", n % 2 ? "a" : "b"));
		failalloc_fail_after(n);
		rc = presence_store_flush_step(f->store, f->reg, SIZE_MAX, SIZE_MAX, &done, err,
		                               sizeof(err));
		failalloc_reset();
		if (rc == PRESENCE_OK) {
			break;
		}
		assert_int_equal(rc, PRESENCE_ERR_NOMEM);
		assert_true(presence_store_unsaved(f->store, f->reg));
	}
	assert_true(n > 0);
	for (n = 0;; n++) {
		bool finished = false;

		presence_store_request_compaction(f->store);
		failalloc_fail_after(n);
		rc = PRESENCE_OK;
		while (rc == PRESENCE_OK && !finished) {
			rc = presence_store_compact_step(f->store, f->reg, 1, SIZE_MAX, &finished,
			                                 err, sizeof(err));
		}
		failalloc_reset();
		if (rc == PRESENCE_OK) {
			break;
		}
		assert_int_equal(rc, PRESENCE_ERR_NOMEM);
		assert_false(presence_store_compacting(f->store));
	}
	assert_true(n > 3);
	/* Noting a change without memory changes nothing. */
	{
		char name[80];
		struct presence_user *u;

		snprintf(name, sizeof(name), "%070ld", 2L);
		u = presence_registry_user_find(f->reg, name);
		assert_non_null(u);
		failalloc_fail_after(0);
		rc = presence_store_note_change(f->store, u, &added);
		failalloc_reset();
		assert_int_equal(rc, PRESENCE_ERR_NOMEM);
		assert_false(added);
		assert_false(presence_store_unsaved(f->store, f->reg));
	}
	restart(f, true, true);
	assert_int_equal(presence_registry_user_count(f->reg), 3);
	for (n = 0; n < 8; n++) {
		struct presence_store *store;

		failalloc_fail_after(n);
		store = presence_store_new(f->path, 0);
		failalloc_reset();
		presence_store_free(store);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
#define M(name) cmocka_unit_test_setup_teardown(name, setup_small_margin, teardown)
	    T(a_first_start_writes_an_empty_snapshot_and_a_journal),
	    T(changes_are_appended_one_record_per_line),
	    T(a_compaction_writes_the_snapshot_and_the_journal_starts_again),
	    T(a_record_is_byte_for_byte_what_cjson_prints),
	    T(a_clean_stop_round_trips_every_user_exactly),
	    T(privacy_choices_are_saved_and_restored),
	    T(the_deepest_state_a_write_can_make_saves_and_loads_back),
	    T(a_clean_stop_continues_at_the_recorded_seq_plus_one),
	    T(an_unclean_stop_continues_past_the_margin_every_time),
	    M(the_guard_holds_documents_until_a_flush_records_them),
	    T(a_flush_writes_what_changed_whatever_the_number_of_users),
	    T(forgotten_users_stay_gone_and_the_floor_survives_restarts),
	    T(a_forgotten_user_that_was_never_flushed_leaves_no_record),
	    T(a_crash_during_a_compaction_loses_nothing),
	    T(every_state_the_end_of_a_compaction_can_leave_reads_the_same),
	    T(a_record_cut_short_by_a_crash_is_ignored_and_cut_off),
	    T(broken_files_are_refused_with_a_reason),
	    T(a_file_that_cannot_be_read_is_reported),
	    T(a_version_1_file_is_read_and_rewritten_as_version_2),
	    T(broken_files_are_moved_aside_under_unique_names),
	    T(a_file_that_cannot_be_moved_aside_stays_where_it_is),
	    T(the_directory_must_exist),
	    T(a_start_that_cannot_write_fails_and_leaves_no_temporary_file),
	    T(a_failed_compaction_is_tried_again_and_loses_nothing),
	    T(many_starts_make_the_next_start_write_everything_anew),
	    T(loading_and_starting_survive_every_allocation_failure),
	    T(flushing_and_compacting_survive_every_allocation_failure),
#undef M
#undef T
	};

	failalloc_install_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
