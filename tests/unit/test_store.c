/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Unit tests for the state file (store.c) with the registry it records: the file's exact text,
 * round trips, incremental saves, the seq rules of clean and unclean restarts and the seq
 * margin, every kind of broken file, moving a file aside, write errors, and allocation failure
 * while reading and writing.
 *
 * Every test works in a fresh directory under the current directory (ctest runs the tests in
 * the build tree), removed by the teardown.
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

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const struct presence_state_limits limits = {
    .max_state_bytes = 8192, .max_keys = 64, .max_depth = 32};

/* The fixture: a directory, the state file path in it, and a registry with the store's margin
 * on a fixed wall clock. */
struct fixture {
	char dir[64];
	char path[128];
	struct presence_registry *reg;
	struct presence_store *store;
};

static int64_t fixed_ms(void *arg)
{
	(void)arg;
	return 1764265200000;
}

static const struct presence_clock fixed_clock = {fixed_ms, fixed_ms, NULL};

/* A new registry configured as the plugin configures it with a state file. */
static struct presence_registry *new_registry(bool keep_state)
{
	struct presence_registry *reg = presence_registry_new("presence");

	assert_non_null(reg);
	presence_registry_set_clock(reg, &fixed_clock);
	presence_registry_set_seq_margin(reg, PRESENCE_STORE_SEQ_MARGIN);
	presence_registry_set_keep_state(reg, keep_state);
	return reg;
}

static int setup(void **ctx)
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
	f->reg = new_registry(false);
	f->store = presence_store_new(f->path);
	if (f->store == NULL) {
		return -1;
	}
	*ctx = f;
	return 0;
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

/* Writes text to path. */
static void write_file(const char *path, const char *text)
{
	FILE *file = fopen(path, "w");

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

static bool file_exists(const char *path)
{
	struct stat sb;

	return lstat(path, &sb) == 0;
}

/* Connects a session of user (a client pointer made from n) and publishes its document. */
static void online(struct presence_registry *reg, uintptr_t n, const char *user)
{
	const void *client = (const void *)(n * 16 + 16);
	struct presence_document doc;
	struct presence_user *u;
	bool due;

	assert_int_equal(presence_registry_session_pending(reg, client), PRESENCE_OK);
	assert_int_equal(presence_registry_session_start(reg, client, user), PRESENCE_OK);
	while ((u = presence_registry_dirty_next(reg)) != NULL) {
		assert_int_equal(presence_registry_document_prepare(reg, u, 1000, &doc, &due),
		                 PRESENCE_OK);
		if (due) {
			presence_registry_document_sent(reg, u);
		}
	}
}

/* Sets a state key of user and publishes the document; returns whether it was published. */
static bool change(struct presence_registry *reg, const char *user, const char *key,
                   const char *value)
{
	struct presence_user *u = presence_registry_user_find(reg, user);
	char reason[PRESENCE_STATE_REASON_SIZE];
	struct presence_document doc;
	bool changed, due = false;

	assert_non_null(u);
	assert_int_equal(presence_state_set_key(presence_user_state(u), &limits, key, strlen(key),
	                                        value, strlen(value), &changed, reason),
	                 PRESENCE_OK);
	presence_registry_user_changed(reg, u);
	while ((u = presence_registry_dirty_next(reg)) != NULL) {
		assert_int_equal(presence_registry_document_prepare(reg, u, 2000, &doc, &due),
		                 PRESENCE_OK);
		if (due) {
			presence_registry_document_sent(reg, u);
		}
	}
	return due;
}

/* Saves reg completely, asserting success. */
static void save_ok(struct presence_store *store, struct presence_registry *reg, bool clean)
{
	char err[PRESENCE_STORE_ERR_SIZE] = "";

	if (presence_store_save_all(store, reg, clean, err, sizeof(err)) != PRESENCE_OK) {
		fail_msg("save failed: %s", err);
	}
	assert_false(presence_store_saving(store));
	assert_false(file_exists(presence_store_tmp_path(store)));
}

/* Loads path into a new registry (returned), asserting success. */
static struct presence_registry *load_ok(const char *path, bool keep_state,
                                         struct presence_store_loaded *loaded)
{
	struct presence_registry *reg = new_registry(keep_state);
	struct presence_store *store = presence_store_new(path);
	char err[PRESENCE_STORE_ERR_SIZE] = "";

	assert_non_null(store);
	if (presence_store_load(store, reg, loaded, err, sizeof(err)) != PRESENCE_OK) {
		fail_msg("load failed: %s", err);
	}
	presence_store_free(store);
	return reg;
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

static void a_missing_file_is_a_first_start(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;
	char err[PRESENCE_STORE_ERR_SIZE] = "";

	memset(&loaded, 0xA5, sizeof(loaded));
	assert_int_equal(presence_store_load(f->store, f->reg, &loaded, err, sizeof(err)),
	                 PRESENCE_OK);
	assert_false(loaded.found);
	assert_int_equal(loaded.users, 0);
	assert_int_equal(presence_registry_user_count(f->reg), 0);
	assert_string_equal(presence_store_path(f->store), f->path);
}

static void the_file_is_one_json_document_with_one_user_per_line(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_user *ghost;
	char *text;

	presence_registry_set_keep_state(f->reg, true);
	online(f->reg, 1, "alice");
	assert_true(change(f->reg, "alice", "status", "away"));
	online(f->reg, 2, "b\"o/b");
	/* Never published: not recorded. */
	assert_int_equal(presence_registry_user_get(f->reg, "ghost", &ghost), PRESENCE_OK);
	save_ok(f->store, f->reg, false);
	text = read_file(f->path);
	assert_string_equal(
	    text,
	    "{\"format\":\"mosquitto-presence-state\",\"version\":1,\"clean\":false,\"users\":["
	    "\n{\"username\":\"alice\",\"seq\":2,\"since\":1000,\"available\":true,"
	    "\"state\":{\"status\":\"away\"}},"
	    "\n{\"username\":\"b\\\"o/b\",\"seq\":1,\"since\":1000,\"available\":true,"
	    "\"state\":{}}"
	    "\n]}\n");
	free(text);
	assert_int_equal(presence_store_saved_users(f->store), 2);

	/* Without keep_state there is no "state"; a clean stop says so; no users is []. */
	presence_registry_set_keep_state(f->reg, false);
	save_ok(f->store, f->reg, true);
	text = read_file(f->path);
	assert_non_null(strstr(text, "\"clean\":true"));
	assert_null(strstr(text, "\"state\""));
	free(text);
	presence_registry_free(f->reg);
	f->reg = new_registry(false);
	save_ok(f->store, f->reg, false);
	text = read_file(f->path);
	assert_string_equal(text, "{\"format\":\"mosquitto-presence-state\",\"version\":1,"
	                          "\"clean\":false,\"users\":[\n]}\n");
	free(text);
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
	presence_registry_set_keep_state(f->reg, true);
	for (i = 0; i < COUNT(cases); i++) {
		assert_int_equal(presence_registry_user_restore(f->reg, cases[i].name, cases[i].seq,
		                                                cases[i].since, cases[i].available,
		                                                state),
		                 PRESENCE_OK);
	}
	save_ok(f->store, f->reg, false);
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

static void a_clean_stop_round_trips_every_user_exactly(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;
	struct presence_registry *back;
	struct presence_document doc;
	struct presence_user *user;
	bool due;

	presence_registry_set_keep_state(f->reg, true);
	online(f->reg, 1, "alice");
	assert_true(change(f->reg, "alice", "status", "away"));
	assert_true(change(f->reg, "alice", "deep", "{\"a\":[1,2.5,\"x\"],\"b\":null}"));
	online(f->reg, 2, "zoë/+#%");
	online(f->reg, 3, "line\nbreak\\slash\"quote");
	presence_registry_session_gone(f->reg, (const void *)(2 * 16 + 16));
	while ((user = presence_registry_dirty_next(f->reg)) != NULL) {
		assert_int_equal(presence_registry_document_prepare(f->reg, user, 5000, &doc, &due),
		                 PRESENCE_OK);
		assert_true(due);
		presence_registry_document_sent(f->reg, user);
	}
	save_ok(f->store, f->reg, true);

	back = load_ok(f->path, true, &loaded);
	assert_true(loaded.found);
	assert_true(loaded.clean);
	assert_int_equal(loaded.users, 3);
	assert_int_equal(loaded.available, 2);
	assert_record(back, "alice", 3, 1000, true,
	              "{\"status\":\"away\",\"deep\":{\"a\":[1,2.5,\"x\"],\"b\":null}}");
	assert_record(back, "zoë/+#%", 2, 5000, false, "{}");
	assert_record(back, "line\nbreak\\slash\"quote", 1, 1000, true, "{}");
	/* The kept state is live again; users come back in the same order. */
	assert_string_equal(
	    presence_state_json(presence_user_state(presence_registry_user_find(back, "alice"))),
	    "{\"status\":\"away\",\"deep\":{\"a\":[1,2.5,\"x\"],\"b\":null}}");
	user = presence_registry_user_first(back);
	assert_string_equal(presence_user_name(user), "alice");
	assert_string_equal(presence_user_name(presence_registry_user_next(user)), "zoë/+#%");
	presence_registry_free(back);
}

static void the_deepest_state_a_write_can_make_saves_and_loads_back(void **ctx)
{
	/* max_state_depth allows at most 128 levels: a state that deep (a value of 127 levels in
	 * the state object) must save, load back identically and render a document that parses;
	 * issue 11 found a state nested 998 levels deep that the next start refused as corrupt. */
	const struct presence_state_limits deepest = {
	    .max_state_bytes = 8192, .max_keys = 64, .max_depth = 128};
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;
	struct presence_registry *back;
	struct presence_user *user;
	char reason[PRESENCE_STATE_REASON_SIZE];
	char payload[2 * 128 + 1];
	char *expected = malloc(2 * 128 + 16);
	char *text;
	cJSON *parsed;
	bool changed;

	assert_non_null(expected);
	presence_registry_set_keep_state(f->reg, true);
	online(f->reg, 1, "deep");
	user = presence_registry_user_find(f->reg, "deep");
	memset(payload, '[', 127);
	memset(payload + 127, ']', 127);
	payload[254] = '\0';
	assert_int_equal(presence_state_set_key(presence_user_state(user), &deepest, "k", 1,
	                                        payload, 254, &changed, reason),
	                 PRESENCE_OK);
	/* One level more is refused. */
	memmove(payload + 1, payload, 255);
	payload[0] = '[';
	payload[255] = ']';
	payload[256] = '\0';
	assert_int_equal(presence_state_set_key(presence_user_state(user), &deepest, "k", 1,
	                                        payload, 256, &changed, reason),
	                 PRESENCE_ERR_TOO_LARGE);
	snprintf(expected, 2 * 128 + 16, "{\"k\":%.*s}", 254, payload + 1);
	assert_string_equal(presence_state_json(presence_user_state(user)), expected);
	assert_true(change(f->reg, "deep", "n", "1"));
	save_ok(f->store, f->reg, true);
	text = read_file(f->path);
	parsed = cJSON_Parse(text);
	assert_non_null(parsed);
	cJSON_Delete(parsed);
	free(text);

	back = load_ok(f->path, true, &loaded);
	assert_int_equal(loaded.users, 1);
	expected[strlen(expected) - 1] = '\0';
	user = presence_registry_user_find(back, "deep");
	assert_non_null(user);
	text = strdup(presence_state_json(presence_user_state(user)));
	assert_non_null(text);
	assert_memory_equal(text, expected, strlen(expected));
	assert_string_equal(text + strlen(expected), ",\"n\":1}");
	free(text);
	/* And what was loaded saves again to the same bytes. */
	text = read_file(f->path);
	save_ok(f->store, back, true);
	{
		char *again = read_file(f->path);

		assert_string_equal(again, text);
		free(again);
	}
	free(text);
	free(expected);
	presence_registry_free(back);
}

static void a_clean_stop_continues_at_the_recorded_seq_plus_one(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;
	struct presence_registry *back;
	struct presence_document doc;
	int published = 0;
	bool due;

	online(f->reg, 1, "alice");
	assert_true(change(f->reg, "alice", "k", "v"));
	save_ok(f->store, f->reg, true);

	back = load_ok(f->path, false, &loaded);
	for (struct presence_user *u; (u = presence_registry_dirty_next(back)) != NULL;) {
		assert_int_equal(presence_registry_document_prepare(back, u, 9000, &doc, &due),
		                 PRESENCE_OK);
		if (due) {
			presence_registry_document_sent(back, u);
			published++;
		}
	}
	/* The correction: alice was shown as available. */
	assert_int_equal(published, 1);
	assert_false(doc.available);
	assert_int_equal(doc.seq, 3);
	assert_int_equal(doc.since_ms, 9000);
	/* A user the file does not know starts at 1. */
	online(back, 2, "newcomer");
	assert_record(back, "newcomer", 1, 1000, true, "{}");
	presence_registry_free(back);
}

static void an_unclean_stop_continues_past_the_margin(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;
	struct presence_registry *back;
	struct presence_document doc;
	struct presence_user *u;
	bool due;

	online(f->reg, 1, "alice");
	assert_true(change(f->reg, "alice", "k", "v"));
	online(f->reg, 2, "bob");
	presence_registry_session_gone(f->reg, (const void *)(2 * 16 + 16));
	assert_non_null(u = presence_registry_dirty_next(f->reg));
	assert_int_equal(presence_registry_document_prepare(f->reg, u, 3000, &doc, &due),
	                 PRESENCE_OK);
	presence_registry_document_sent(f->reg, u);
	save_ok(f->store, f->reg, false);

	back = load_ok(f->path, false, &loaded);
	assert_false(loaded.clean);
	/* Continues at recorded + margin; the correction is + 1 more. */
	assert_record(back, "alice", 2 + PRESENCE_STORE_SEQ_MARGIN, 1000, true, "{}");
	assert_record(back, "bob", 2 + PRESENCE_STORE_SEQ_MARGIN, 3000, false, "{}");
	/* The plugin rewrites the file right after reading it, before publishing anything, so
	 * that the new bases are recorded: only then are the corrections allowed. */
	save_ok(f->store, back, false);
	assert_int_equal(
	    presence_registry_user_recorded_seq(back, presence_registry_user_find(back, "alice")),
	    2 + PRESENCE_STORE_SEQ_MARGIN);
	/* Users the file does not know start at margin + 1: they may have published up to the
	 * margin before the crash. Their first document waits for a save that records them (a
	 * crash before it would otherwise repeat that seq). */
	online(back, 3, "carol");
	assert_int_equal(presence_registry_held_count(back), 1);
	assert_record(back, "carol", PRESENCE_STORE_SEQ_MARGIN, 0, false, "{}");
	save_ok(f->store, back, false);
	assert_non_null(u = presence_registry_dirty_next(back));
	assert_int_equal(presence_registry_document_prepare(back, u, 4000, &doc, &due),
	                 PRESENCE_OK);
	assert_true(due);
	presence_registry_document_sent(back, u);
	assert_record(back, "carol", PRESENCE_STORE_SEQ_MARGIN + 1, 4000, true, "{}");
	presence_registry_free(back);
}

static void the_seq_margin_holds_documents_until_a_save_completes(void **ctx)
{
	struct fixture *f = *ctx;
	char err[PRESENCE_STORE_ERR_SIZE];
	bool done = false;
	int n;

	presence_registry_set_seq_margin(f->reg, 3);
	save_ok(f->store, f->reg, false);
	online(f->reg, 1, "alice");
	assert_true(change(f->reg, "alice", "n", "2"));
	assert_true(change(f->reg, "alice", "n", "3"));
	assert_false(change(f->reg, "alice", "n", "4"));
	assert_int_equal(presence_registry_held_count(f->reg), 1);

	/* Released only when the save is complete, not when it has begun. */
	assert_int_equal(presence_store_save_begin(f->store, f->reg, false, err, sizeof(err)),
	                 PRESENCE_OK);
	assert_int_equal(presence_registry_held_count(f->reg), 1);
	assert_int_equal(presence_store_save_step(f->store, f->reg, 1, 1, &done, err, sizeof(err)),
	                 PRESENCE_OK);
	assert_true(done);
	assert_int_equal(presence_registry_held_count(f->reg), 0);
	assert_int_equal(presence_registry_dirty_next(f->reg),
	                 presence_registry_user_find(f->reg, "alice"));
	for (n = 0; n < 3; n++) {
		assert_true(change(f->reg, "alice", "n", n == 0 ? "5" : n == 1 ? "6" : "7"));
	}
	assert_false(change(f->reg, "alice", "n", "8"));
}

/* Fills reg with count available users u0, u1, ... */
static void many_users(struct presence_registry *reg, int count)
{
	char name[32];
	int i;

	for (i = 0; i < count; i++) {
		snprintf(name, sizeof(name), "u%d", i);
		online(reg, (uintptr_t)i + 1, name);
	}
}

static void a_save_in_small_steps_writes_what_a_one_shot_save_writes(void **ctx)
{
	struct fixture *f = *ctx;
	static const size_t steps[][2] = {
	    {1, SIZE_MAX}, {3, SIZE_MAX}, {SIZE_MAX, 1}, {SIZE_MAX, 200}, {7, 100}};
	char err[PRESENCE_STORE_ERR_SIZE];
	char *one_shot;
	size_t i;

	presence_registry_set_keep_state(f->reg, true);
	many_users(f->reg, 50);
	assert_true(change(f->reg, "u7", "status", "away"));
	save_ok(f->store, f->reg, false);
	one_shot = read_file(f->path);
	for (i = 0; i < COUNT(steps); i++) {
		bool done = false;
		int calls = 0;
		char *text;

		assert_int_equal(
		    presence_store_save_begin(f->store, f->reg, false, err, sizeof(err)),
		    PRESENCE_OK);
		while (!done) {
			assert_true(presence_store_saving(f->store));
			assert_int_equal(presence_store_save_step(f->store, f->reg, steps[i][0],
			                                          steps[i][1], &done, err,
			                                          sizeof(err)),
			                 PRESENCE_OK);
			calls++;
		}
		/* The old file stays whole until the very end. */
		text = read_file(f->path);
		assert_string_equal(text, one_shot);
		free(text);
		assert_false(presence_store_saving(f->store));
		assert_false(file_exists(presence_store_tmp_path(f->store)));
		if (steps[i][0] == 1 || steps[i][1] == 1) {
			assert_int_equal(calls, 50);
		}
	}
	free(one_shot);
}

static void users_created_during_a_save_are_written_by_it(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;
	struct presence_registry *back;
	char err[PRESENCE_STORE_ERR_SIZE];
	bool done = false;

	many_users(f->reg, 3);
	assert_int_equal(presence_store_save_begin(f->store, f->reg, false, err, sizeof(err)),
	                 PRESENCE_OK);
	assert_int_equal(
	    presence_store_save_step(f->store, f->reg, 2, SIZE_MAX, &done, err, sizeof(err)),
	    PRESENCE_OK);
	assert_false(done);
	online(f->reg, 10, "late");
	/* A change to a user already written: the next save writes it. */
	assert_true(change(f->reg, "u0", "k", "v"));
	assert_true(presence_registry_unsaved(f->reg));
	assert_int_equal(
	    presence_store_save_step(f->store, f->reg, 100, SIZE_MAX, &done, err, sizeof(err)),
	    PRESENCE_OK);
	assert_true(done);
	assert_int_equal(presence_store_saved_users(f->store), 4);
	assert_true(presence_registry_unsaved(f->reg));

	back = load_ok(f->path, false, &loaded);
	assert_int_equal(loaded.users, 4);
	assert_non_null(presence_registry_user_find(back, "late"));
	presence_registry_free(back);
}

/* One broken file and a phrase its reason must contain. */
struct broken {
	const char *text;
	const char *reason;
};

#define HEAD "{\"format\":\"mosquitto-presence-state\",\"version\":1,\"clean\":false,\"users\":["
#define ALICE "{\"username\":\"alice\",\"seq\":7,\"since\":1764265200123,\"available\":true}"

static void broken_files_are_refused_with_a_reason(void **ctx)
{
	struct fixture *f = *ctx;
	static const struct broken cases[] = {
	    {"", "it is empty"},
	    {"hello", "not valid JSON or is cut short (parsing failed at byte 0 of 5)"},
	    {HEAD "\n" ALICE ",\n{\"username\":\"bo", "not valid JSON or is cut short"},
	    {HEAD "\n" ALICE ",", "it is cut short"},
	    {HEAD "\n" ALICE, "it is cut short"},
	    {HEAD "]} trailing", "not valid JSON"},
	    {HEAD "]}{}", "not valid JSON"},
	    {"[]", "not a JSON object"},
	    {"{\"format\":\"something-else\",\"version\":1,\"clean\":false,\"users\":[]}",
	     "not a mosquitto-presence state file"},
	    {"{\"version\":1,\"clean\":false,\"users\":[]}", "not a mosquitto-presence state file"},
	    {"{\"format\":\"mosquitto-presence-state\",\"version\":2,\"clean\":false,\"users\":[]}",
	     "\"version\" is not 1"},
	    {"{\"format\":\"mosquitto-presence-state\",\"version\":\"1\",\"clean\":false,"
	     "\"users\":[]}",
	     "\"version\" is not 1"},
	    {"{\"format\":\"mosquitto-presence-state\",\"version\":1,\"clean\":\"no\",\"users\":[]"
	     "}",
	     "\"clean\" must be true or false"},
	    {"{\"format\":\"mosquitto-presence-state\",\"version\":1,\"clean\":false,\"users\":{}}",
	     "\"users\" must be an array"},
	    {"{\"format\":\"mosquitto-presence-state\",\"version\":1,\"clean\":false}",
	     "\"users\" must be an array"},
	    {HEAD "7]}", "users[0] is not an object"},
	    {HEAD ALICE ",{\"username\":7,\"seq\":1,\"since\":0,\"available\":true}]}",
	     "users[1]: \"username\" must be a non-empty UTF-8 string"},
	    {HEAD "{\"username\":\"\",\"seq\":1,\"since\":0,\"available\":true}]}",
	     "users[0]: \"username\" must be a non-empty UTF-8 string"},
	    {HEAD "{\"username\":\"a\",\"seq\":\"7\",\"since\":0,\"available\":true}]}",
	     "users[0]: \"seq\" must be an integer from 0 to 9007199254740991"},
	    {HEAD "{\"username\":\"a\",\"seq\":-1,\"since\":0,\"available\":true}]}",
	     "users[0]: \"seq\" must be an integer"},
	    {HEAD "{\"username\":\"a\",\"seq\":1.5,\"since\":0,\"available\":true}]}",
	     "users[0]: \"seq\" must be an integer"},
	    {HEAD "{\"username\":\"a\",\"seq\":1e300,\"since\":0,\"available\":true}]}",
	     "users[0]: \"seq\" must be an integer"},
	    {HEAD "{\"username\":\"a\",\"since\":0,\"available\":true}]}",
	     "users[0]: \"seq\" must be an integer"},
	    {HEAD "{\"username\":\"a\",\"seq\":1,\"since\":\"now\",\"available\":true}]}",
	     "users[0]: \"since\" must be an integer"},
	    {HEAD "{\"username\":\"a\",\"seq\":1,\"since\":0,\"available\":1}]}",
	     "users[0]: \"available\" must be true or false"},
	    {HEAD "{\"username\":\"a\",\"seq\":1,\"since\":0,\"available\":true,\"state\":[]}]}",
	     "users[0]: \"state\" must be a JSON object"},
	    {HEAD "{\"username\":\"a\",\"seq\":1,\"since\":0,\"available\":true,"
	          "\"state\":{\"a/b\":1}}]}",
	     "users[0]: \"state\" has an invalid key"},
	    {HEAD ALICE "," ALICE "]}", "users[1]: user \"alice\" appears twice"},
	};
	char err[PRESENCE_STORE_ERR_SIZE];
	size_t i;

	for (i = 0; i < COUNT(cases); i++) {
		struct presence_registry *reg = new_registry(false);
		struct presence_store_loaded loaded;
		enum presence_err rc;

		write_file(f->path, cases[i].text);
		err[0] = '\0';
		rc = presence_store_load(f->store, reg, &loaded, err, sizeof(err));
		if (rc != PRESENCE_ERR_INVAL || strstr(err, cases[i].reason) == NULL) {
			fail_msg("case %zu (%s): rc %d, reason \"%s\", expected \"%s\"", i,
			         cases[i].text, rc, err, cases[i].reason);
		}
		presence_registry_free(reg);
	}
}

static void a_file_that_cannot_be_read_is_reported(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;
	char err[PRESENCE_STORE_ERR_SIZE];

	assert_int_equal(mkdir(f->path, 0700), 0);
	assert_int_equal(presence_store_load(f->store, f->reg, &loaded, err, sizeof(err)),
	                 PRESENCE_ERR_IO);
	assert_non_null(strstr(err, "is not a regular file"));
	assert_non_null(strstr(err, f->path));
	assert_int_equal(rmdir(f->path), 0);
}

static void a_well_formed_file_with_extra_members_is_read(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;
	struct presence_registry *back;

	/* Pretty-printed, with members this version does not know, written by hand. */
	write_file(f->path, "{\n  \"format\": \"mosquitto-presence-state\",\n  \"version\": 1,\n"
	                    "  \"clean\": true,\n  \"note\": \"hand-made\",\n  \"users\": [\n"
	                    "    {\"seq\": 7, \"username\": \"alice\", \"available\": false,\n"
	                    "     \"since\": -5, \"extra\": [1]}\n  ]\n}\n");
	back = load_ok(f->path, false, &loaded);
	assert_true(loaded.clean);
	assert_record(back, "alice", 7, -5, false, "{}");
	presence_registry_free(back);
}

static void a_broken_file_is_moved_aside_under_a_unique_name(void **ctx)
{
	struct fixture *f = *ctx;
	char aside[256], aside2[256], want[256];
	char err[PRESENCE_STORE_ERR_SIZE];
	char *text;

	write_file(f->path, "first");
	/* 2025-11-27 17:40:00 UTC */
	assert_int_equal(
	    presence_store_move_aside(f->store, 1764265200, aside, sizeof(aside), err, sizeof(err)),
	    PRESENCE_OK);
	snprintf(want, sizeof(want), "%s.corrupt-20251127T174000Z", f->path);
	assert_string_equal(aside, want);
	assert_false(file_exists(f->path));
	text = read_file(aside);
	assert_string_equal(text, "first");
	free(text);

	write_file(f->path, "second");
	assert_int_equal(presence_store_move_aside(f->store, 1764265200, aside2, sizeof(aside2),
	                                           err, sizeof(err)),
	                 PRESENCE_OK);
	snprintf(want, sizeof(want), "%s.corrupt-20251127T174000Z-2", f->path);
	assert_string_equal(aside2, want);
	text = read_file(aside2);
	assert_string_equal(text, "second");
	free(text);
	text = read_file(aside);
	assert_string_equal(text, "first");
	free(text);
}

static void a_file_that_cannot_be_moved_aside_stays_where_it_is(void **ctx)
{
	struct fixture *f = *ctx;
	char long_path[512];
	char aside[512];
	char err[PRESENCE_STORE_ERR_SIZE];
	struct presence_store *store;
	int n;

	/* A name of 250 bytes is fine; with ".corrupt-<time>" it exceeds NAME_MAX (255). */
	n = snprintf(long_path, sizeof(long_path), "%s/", f->dir);
	memset(long_path + n, 's', 250);
	long_path[n + 250] = '\0';
	write_file(long_path, "broken");
	store = presence_store_new(long_path);
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

	assert_int_equal(presence_store_check_dir(f->store, err, sizeof(err)), PRESENCE_OK);

	snprintf(path, sizeof(path), "%s/missing/state.json", f->dir);
	store = presence_store_new(path);
	assert_int_equal(presence_store_check_dir(store, err, sizeof(err)), PRESENCE_ERR_IO);
	assert_non_null(strstr(err, "missing"));
	assert_non_null(strstr(err, "No such file or directory"));
	presence_store_free(store);

	write_file(f->path, "x");
	snprintf(path, sizeof(path), "%s/inside", f->path);
	store = presence_store_new(path);
	assert_int_equal(presence_store_check_dir(store, err, sizeof(err)), PRESENCE_ERR_IO);
	assert_non_null(strstr(err, "is not a directory"));
	presence_store_free(store);

	/* A bare name lives in the current directory; "/x" in "/". */
	store = presence_store_new("state.json");
	assert_int_equal(presence_store_check_dir(store, err, sizeof(err)), PRESENCE_OK);
	presence_store_free(store);
	store = presence_store_new("/state.json");
	assert_int_equal(presence_store_check_dir(store, err, sizeof(err)), PRESENCE_OK);
	presence_store_free(store);
}

static void write_errors_leave_the_old_file_and_no_temporary_file(void **ctx)
{
	struct fixture *f = *ctx;
	char err[PRESENCE_STORE_ERR_SIZE];
	char path[256];
	struct presence_store *store;
	bool done = false;
	char *text;

	many_users(f->reg, 3);
	save_ok(f->store, f->reg, false);
	text = read_file(f->path);

	/* The directory is gone: the temporary file cannot even be created. */
	snprintf(path, sizeof(path), "%s/missing/state.json", f->dir);
	store = presence_store_new(path);
	assert_int_equal(presence_store_save_all(store, f->reg, false, err, sizeof(err)),
	                 PRESENCE_ERR_IO);
	assert_non_null(strstr(err, "cannot create"));
	assert_non_null(strstr(err, "missing/state.json.tmp"));
	assert_false(presence_store_saving(store));
	assert_true(presence_registry_unsaved(f->reg));
	presence_store_free(store);

	/* The rename fails (the state file's name is taken by a non-empty directory). */
	snprintf(path, sizeof(path), "%s/taken", f->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/taken/x", f->dir);
	write_file(path, "x");
	snprintf(path, sizeof(path), "%s/taken", f->dir);
	store = presence_store_new(path);
	assert_int_equal(presence_store_save_begin(store, f->reg, false, err, sizeof(err)),
	                 PRESENCE_OK);
	assert_false(presence_registry_unsaved(f->reg));
	assert_int_equal(
	    presence_store_save_step(store, f->reg, 1, SIZE_MAX, &done, err, sizeof(err)),
	    PRESENCE_OK);
	assert_int_equal(
	    presence_store_save_step(store, f->reg, 10, SIZE_MAX, &done, err, sizeof(err)),
	    PRESENCE_ERR_IO);
	assert_false(done);
	assert_non_null(strstr(err, "cannot rename"));
	assert_false(presence_store_saving(store));
	assert_false(file_exists(presence_store_tmp_path(store)));
	assert_true(presence_registry_unsaved(f->reg));
	presence_store_free(store);

	/* A save abandoned half-way leaves no temporary file and tells the registry. */
	assert_int_equal(presence_store_save_begin(f->store, f->reg, false, err, sizeof(err)),
	                 PRESENCE_OK);
	assert_int_equal(
	    presence_store_save_step(f->store, f->reg, 1, SIZE_MAX, &done, err, sizeof(err)),
	    PRESENCE_OK);
	assert_true(file_exists(presence_store_tmp_path(f->store)));
	presence_store_save_abort(f->store, f->reg);
	assert_false(file_exists(presence_store_tmp_path(f->store)));
	assert_true(presence_registry_unsaved(f->reg));
	{
		char *after = read_file(f->path);

		assert_string_equal(after, text);
		free(after);
	}
	free(text);
}

static void a_leftover_temporary_file_is_replaced(void **ctx)
{
	struct fixture *f = *ctx;
	char *text;

	write_file(presence_store_tmp_path(f->store), "half a file from a crash");
	many_users(f->reg, 2);
	save_ok(f->store, f->reg, false);
	text = read_file(f->path);
	assert_non_null(strstr(text, "\"u1\""));
	free(text);
}

static void loading_survives_every_allocation_failure(void **ctx)
{
	struct fixture *f = *ctx;
	struct presence_store_loaded loaded;
	char err[PRESENCE_STORE_ERR_SIZE];
	enum presence_err rc;
	long n;

	presence_registry_set_keep_state(f->reg, true);
	many_users(f->reg, 3);
	assert_true(change(f->reg, "u1", "status", "{\"a\":[1,2]}"));
	save_ok(f->store, f->reg, false);
	for (n = 0;; n++) {
		struct presence_registry *reg = new_registry(true);

		err[0] = '\0';
		failalloc_fail_after(n);
		rc = presence_store_load(f->store, reg, &loaded, err, sizeof(err));
		failalloc_reset();
		presence_registry_free(reg);
		if (rc == PRESENCE_OK) {
			break;
		}
		/* cJSON cannot tell a failed allocation from a syntax error. */
		if (rc != PRESENCE_ERR_NOMEM && rc != PRESENCE_ERR_INVAL) {
			fail_msg("allocation %ld: rc %d (%s)", n, rc, err);
		}
		assert_true(err[0] != '\0');
	}
	assert_true(n > 10);
	assert_int_equal(loaded.users, 3);
}

static void saving_survives_every_allocation_failure(void **ctx)
{
	struct fixture *f = *ctx;
	char err[PRESENCE_STORE_ERR_SIZE];
	enum presence_err rc;
	char *before;
	char *after;
	long n;

	presence_registry_set_keep_state(f->reg, true);
	many_users(f->reg, 3);
	/* A record needs memory only for a name over 64 bytes (escaped in a buffer of its own):
	 * four such users give the save four allocations to fail. */
	for (n = 0; n < 4; n++) {
		char name[80];

		snprintf(name, sizeof(name), "%070ld", n);
		online(f->reg, 10 + (uintptr_t)n, name);
	}
	save_ok(f->store, f->reg, false);
	before = read_file(f->path);
	assert_true(change(f->reg, "u1", "status", "away"));
	for (n = 0;; n++) {
		failalloc_fail_after(n);
		rc = presence_store_save_all(f->store, f->reg, false, err, sizeof(err));
		failalloc_reset();
		if (rc == PRESENCE_OK) {
			break;
		}
		assert_int_equal(rc, PRESENCE_ERR_NOMEM);
		assert_non_null(strstr(err, "out of memory"));
		assert_false(presence_store_saving(f->store));
		assert_false(file_exists(presence_store_tmp_path(f->store)));
		assert_true(presence_registry_unsaved(f->reg));
		after = read_file(f->path);
		assert_string_equal(after, before);
		free(after);
	}
	assert_true(n > 3);
	after = read_file(f->path);
	assert_non_null(strstr(after, "\"state\":{\"status\":\"away\"}"));
	free(after);
	free(before);
	for (n = 0; n < 8; n++) {
		struct presence_store *store;

		failalloc_fail_after(n);
		store = presence_store_new(f->path);
		failalloc_reset();
		presence_store_free(store);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	    T(a_missing_file_is_a_first_start),
	    T(the_file_is_one_json_document_with_one_user_per_line),
	    T(a_record_is_byte_for_byte_what_cjson_prints),
	    T(a_clean_stop_round_trips_every_user_exactly),
	    T(the_deepest_state_a_write_can_make_saves_and_loads_back),
	    T(a_clean_stop_continues_at_the_recorded_seq_plus_one),
	    T(an_unclean_stop_continues_past_the_margin),
	    T(the_seq_margin_holds_documents_until_a_save_completes),
	    T(a_save_in_small_steps_writes_what_a_one_shot_save_writes),
	    T(users_created_during_a_save_are_written_by_it),
	    T(broken_files_are_refused_with_a_reason),
	    T(a_file_that_cannot_be_read_is_reported),
	    T(a_well_formed_file_with_extra_members_is_read),
	    T(a_broken_file_is_moved_aside_under_a_unique_name),
	    T(a_file_that_cannot_be_moved_aside_stays_where_it_is),
	    T(the_directory_must_exist),
	    T(write_errors_leave_the_old_file_and_no_temporary_file),
	    T(a_leftover_temporary_file_is_replaced),
	    T(loading_survives_every_allocation_failure),
	    T(saving_survives_every_allocation_failure),
#undef T
	};

	failalloc_install_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
