/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * What the state-file harnesses share: a scratch directory of their own, registries configured
 * as the plugin configures them with a state file, and save / load / read helpers that check
 * the store's own promises.
 */
#ifndef PRESENCE_FUZZ_STORE_UTIL_H
#define PRESENCE_FUZZ_STORE_UTIL_H

#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "registry.h"
#include "store.h"
#include "testing.h"

static inline int64_t fuzz_fixed_ms(void *arg)
{
	(void)arg;
	return 1764265200000;
}

static const struct presence_clock fuzz_clock = {fuzz_fixed_ms, fuzz_fixed_ms, NULL};

/* The scratch directory, made once per process under $TMPDIR (or /dev/shm, or /tmp) and
 * removed with its files when the process exits. */
static char fuzz_scratch[4096];

/* The state files the harnesses use, each with the store's companions. */
static const char *const fuzz_bases[] = {"input.json", "live.json", "a.json", "b.json"};
static const char *const fuzz_suffixes[] = {"", ".tmp", ".journal", ".journal.next",
                                            ".journal.tmp"};

/* Removes the files of the state file at path. */
static inline void fuzz_clear(const char *path)
{
	char file[4200];

	for (size_t i = 0; i < sizeof(fuzz_suffixes) / sizeof(fuzz_suffixes[0]); i++) {
		snprintf(file, sizeof(file), "%s%s", path, fuzz_suffixes[i]);
		unlink(file);
	}
}

static void fuzz_remove_scratch(void)
{
	char path[4200];

	for (size_t i = 0; i < sizeof(fuzz_bases) / sizeof(fuzz_bases[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", fuzz_scratch, fuzz_bases[i]);
		fuzz_clear(path);
	}
	rmdir(fuzz_scratch);
}

static const char *fuzz_dir(void)
{
	char *dir = fuzz_scratch;

	if (dir[0] == '\0') {
		/* tmpfs when there is one: the store fsyncs every file it writes. */
		const char *tmp = getenv("TMPDIR") != NULL        ? getenv("TMPDIR")
		                  : access("/dev/shm", W_OK) == 0 ? "/dev/shm"
		                                                  : NULL;

		snprintf(dir, sizeof(fuzz_scratch), "%s/presence-fuzz.XXXXXX",
		         tmp != NULL ? tmp : "/tmp");
		FUZZ_CHECK(mkdtemp(dir) != NULL);
		atexit(fuzz_remove_scratch);
	}
	return dir;
}

/* Returns "<scratch dir>/<name>" in buf (4096 bytes). */
static const char *fuzz_path(char *buf, const char *name)
{
	snprintf(buf, 4096, "%s/%s", fuzz_dir(), name);
	return buf;
}

static struct presence_registry *fuzz_registry(void)
{
	struct presence_registry *reg = presence_registry_new("presence");

	FUZZ_CHECK(reg != NULL);
	presence_registry_set_clock(reg, &fuzz_clock);
	presence_registry_set_keep_state(reg, true);
	return reg;
}

/* Writes the size bytes at data to path. */
static inline void fuzz_write_file(const char *path, const uint8_t *data, size_t size)
{
	FILE *f = fopen(path, "wb");

	FUZZ_CHECK(f != NULL);
	FUZZ_CHECK(size == 0 || fwrite(data, 1, size, f) == size);
	FUZZ_CHECK(fclose(f) == 0);
}

/* Returns the whole file at path (free it), NUL-terminated. */
static char *fuzz_read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *text = NULL;
	long len;

	FUZZ_CHECK(f != NULL);
	FUZZ_CHECK(fseek(f, 0, SEEK_END) == 0);
	len = ftell(f);
	FUZZ_CHECK(len >= 0 && fseek(f, 0, SEEK_SET) == 0);
	text = malloc((size_t)len + 1);
	FUZZ_CHECK(text != NULL);
	FUZZ_CHECK(len == 0 || fread(text, 1, (size_t)len, f) == (size_t)len);
	text[len] = '\0';
	fclose(f);
	return text;
}

/* Aborts with err when rc is not PRESENCE_OK. */
static inline void fuzz_ok(enum presence_err rc, const char *what, const char *err)
{
	if (rc != PRESENCE_OK) {
		fprintf(stderr, "%s failed: %s\n", what, err);
		abort();
	}
}

/* Writes every user of reg to fresh files at path (a start with nothing there writes a whole
 * snapshot), then stops cleanly; the store must not fail. */
static inline void fuzz_save(struct presence_registry *reg, const char *path)
{
	struct presence_store *store = presence_store_new(path, PRESENCE_STORE_SEQ_MARGIN);
	char err[PRESENCE_STORE_ERR_SIZE] = "";

	FUZZ_CHECK(store != NULL);
	fuzz_clear(path);
	fuzz_ok(presence_store_start(store, reg, err, sizeof(err)), "start", err);
	fuzz_ok(presence_store_stop(store, reg, err, sizeof(err)), "stop", err);
	presence_store_free(store);
}

/* Loads path into a new registry; returns the result, the registry in *reg (free it). */
static inline enum presence_err fuzz_load(const char *path, struct presence_registry **reg,
                                          struct presence_store_loaded *loaded, char *err,
                                          size_t err_size)
{
	struct presence_store *store = presence_store_new(path, PRESENCE_STORE_SEQ_MARGIN);
	enum presence_err rc;

	FUZZ_CHECK(store != NULL);
	*reg = fuzz_registry();
	rc = presence_store_load(store, *reg, loaded, err, err_size);
	presence_store_free(store);
	return rc;
}

/* Checks that back holds exactly the users of reg that have a document, with the same records,
 * and the same floor. */
static inline void fuzz_check_same(struct presence_registry *reg, struct presence_registry *back)
{
	struct presence_cursor c = {0};
	struct presence_user *user;
	size_t known = 0;

	FUZZ_CHECK(presence_registry_cursor_start(reg, &c));
	while ((user = presence_registry_cursor_next(reg, &c)) != NULL) {
		struct presence_user_record want, got;
		struct presence_user *other;

		presence_registry_user_record(user, &want);
		if (want.seq == 0) {
			continue;
		}
		known++;
		other = presence_registry_user_find(back, want.username);
		FUZZ_CHECK(other != NULL);
		presence_registry_user_record(other, &got);
		FUZZ_CHECK(got.seq == want.seq && got.since_ms == want.since_ms &&
		           got.available == want.available);
		FUZZ_CHECK(strcmp(got.state_json, want.state_json) == 0);
	}
	FUZZ_CHECK(presence_registry_known_count(back) == known);
	FUZZ_CHECK(presence_registry_seq_floor(back) == presence_registry_seq_floor(reg));
}

/*
 * The store's promise: whatever it writes, it reads back identically. Writes reg to "a.json",
 * loads that (which must succeed, as a clean stop), checks that every user of reg came back
 * with the same record, writes the loaded registry to "b.json" and checks that the two
 * snapshots are byte for byte the same.
 */
static inline void fuzz_check_round_trip(struct presence_registry *reg)
{
	char a[4096], b[4096], err[PRESENCE_STORE_ERR_SIZE] = "";
	struct presence_store_loaded loaded;
	struct presence_registry *back;
	char *first, *second;

	fuzz_save(reg, fuzz_path(a, "a.json"));
	if (fuzz_load(a, &back, &loaded, err, sizeof(err)) != PRESENCE_OK) {
		fprintf(stderr, "the store could not read what it wrote: %s\n", err);
		abort();
	}
	FUZZ_CHECK(loaded.clean);
	fuzz_check_same(reg, back);
	fuzz_save(back, fuzz_path(b, "b.json"));
	first = fuzz_read_file(a);
	second = fuzz_read_file(b);
	FUZZ_CHECK(strcmp(first, second) == 0);
	free(second);
	free(first);
	presence_registry_free(back);
}

#endif
