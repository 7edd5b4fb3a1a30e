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

static inline int64_t fuzz_fixed_ms(void *arg)
{
	(void)arg;
	return 1764265200000;
}

static const struct presence_clock fuzz_clock = {fuzz_fixed_ms, fuzz_fixed_ms, NULL};

/* The scratch directory, made once per process under $TMPDIR (or /dev/shm, or /tmp) and
 * removed with its files when the process exits. */
static char fuzz_scratch[4096];

static void fuzz_remove_scratch(void)
{
	static const char *const files[] = {"input.json", "a.json", "b.json"};
	char path[4200];

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", fuzz_scratch, files[i]);
		unlink(path);
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
	presence_registry_set_seq_margin(reg, PRESENCE_STORE_SEQ_MARGIN);
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

/* Saves reg (cleanly) to path; the store must not fail. */
static inline void fuzz_save(struct presence_registry *reg, const char *path)
{
	struct presence_store *store = presence_store_new(path);
	char err[PRESENCE_STORE_ERR_SIZE] = "";

	FUZZ_CHECK(store != NULL);
	if (presence_store_save_all(store, reg, true, err, sizeof(err)) != PRESENCE_OK) {
		fprintf(stderr, "save failed: %s\n", err);
		abort();
	}
	presence_store_free(store);
}

/* Loads path into a new registry; returns the result, the registry in *reg (free it). */
static inline enum presence_err fuzz_load(const char *path, struct presence_registry **reg,
                                          struct presence_store_loaded *loaded, char *err,
                                          size_t err_size)
{
	struct presence_store *store = presence_store_new(path);
	enum presence_err rc;

	FUZZ_CHECK(store != NULL);
	*reg = fuzz_registry();
	rc = presence_store_load(store, *reg, loaded, err, err_size);
	presence_store_free(store);
	return rc;
}

/*
 * The store's promise: whatever it writes, it reads back identically. Saves reg to "a.json",
 * loads that (which must succeed), checks that every user of reg was restored with the same
 * record, saves the loaded registry to "b.json" and checks that the two files are byte for
 * byte the same.
 */
static inline void fuzz_check_round_trip(struct presence_registry *reg)
{
	char a[4096], b[4096], err[PRESENCE_STORE_ERR_SIZE] = "";
	struct presence_store_loaded loaded;
	struct presence_registry *back;
	struct presence_user *user;
	char *first, *second;

	fuzz_save(reg, fuzz_path(a, "a.json"));
	if (fuzz_load(a, &back, &loaded, err, sizeof(err)) != PRESENCE_OK) {
		fprintf(stderr, "the store could not read what it wrote: %s\n", err);
		abort();
	}
	for (user = presence_registry_user_first(reg); user != NULL;
	     user = presence_registry_user_next(user)) {
		struct presence_user_record want, got;
		struct presence_user *other;

		presence_registry_user_record(user, &want);
		if (want.seq == 0) {
			continue;
		}
		other = presence_registry_user_find(back, want.username);
		FUZZ_CHECK(other != NULL);
		presence_registry_user_record(other, &got);
		FUZZ_CHECK(got.seq == want.seq && got.since_ms == want.since_ms &&
		           got.available == want.available);
		FUZZ_CHECK(strcmp(got.state_json, want.state_json) == 0);
	}
	fuzz_save(back, fuzz_path(b, "b.json"));
	first = fuzz_read_file(a);
	second = fuzz_read_file(b);
	FUZZ_CHECK(strcmp(first, second) == 0);
	free(second);
	free(first);
	presence_registry_free(back);
}

#endif
