/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The state file's store: the object, the start, the changes waiting for a flush, the
 * compaction schedule and the stop (see store.h for the files, the replay rule and why every
 * crash leaves them readable). The bytes of the files are written by store_files.c and read by
 * store_load.c.
 *
 * The users changed since the last flush are kept in a hash table by user, each with the seq
 * durably recorded for it when it was added: that is what the guard compares with. A user not
 * in the table is recorded with its current seq when it has a document (every document puts
 * it in the table until a flush writes it), and with the durable floor otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uthash.h>

#include "store.h"
#include "store_private.h"
#include "testing.h"
#include "text.h"

/* A journal with this many start records is rewritten at the next start (each unclean one
 * shifts every user when it is replayed). */
#define STARTS_MAX 8

void presence__store_error(char *err, size_t err_size, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || err_size == 0) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(err, err_size, fmt, ap);
	va_end(ap);
}

struct presence_store *presence_store_new(const char *path, uint64_t margin)
{
	struct presence_store *st = calloc(1, sizeof(*st));
	const char *slash = strrchr(path, '/');
	size_t len = strlen(path);

	if (st == NULL) {
		return NULL;
	}
	st->fd = -1;
	st->snap_fd = -1;
	st->margin = margin;
	st->path = presence_text_join(path, len, "");
	st->tmp_path = presence_text_join(path, len, ".tmp");
	st->journal_path = presence_text_join(path, len, ".journal");
	st->next_path = presence_text_join(path, len, ".journal.next");
	st->journal_tmp_path = presence_text_join(path, len, ".journal.tmp");
	if (slash == NULL) {
		st->dir_path = presence_text_join(".", 1, "");
	} else {
		/* "/state.json" lives in "/", "a/b/state.json" in "a/b". */
		st->dir_path =
		    presence_text_join(path, slash == path ? 1 : (size_t)(slash - path), "");
	}
	if (st->path == NULL || st->tmp_path == NULL || st->journal_path == NULL ||
	    st->next_path == NULL || st->journal_tmp_path == NULL || st->dir_path == NULL) {
		presence_store_free(st);
		return NULL;
	}
	return st;
}

/* Closes and removes the temporary snapshot of a compaction in progress. */
void presence__store_compaction_abandon(struct presence_store *st, struct presence_registry *reg)
{
	if (st->snap_fd >= 0) {
		(void)close(st->snap_fd);
		st->snap_fd = -1;
		(void)unlink(st->tmp_path);
	}
	if (reg == NULL) {
		reg = st->cursor_reg;
	}
	if (reg != NULL) {
		presence_registry_cursor_stop(reg, &st->cursor);
	}
	st->cursor_reg = NULL;
	st->compacting = false;
}

void presence_store_free(struct presence_store *st)
{
	struct unsaved *u, *tmp;

	if (st == NULL) {
		return;
	}
	/* The registry must still be there (see store.h): the cursor is unregistered. */
	presence__store_compaction_abandon(st, NULL);
	if (st->fd >= 0) {
		(void)close(st->fd);
	}
	HASH_ITER(hh, st->unsaved, u, tmp)
	{
		HASH_DEL(st->unsaved, u);
		free(u);
	}
	free(st->forgets.data);
	free(st->dir_path);
	free(st->journal_tmp_path);
	free(st->next_path);
	free(st->journal_path);
	free(st->tmp_path);
	free(st->path);
	free(st);
}

void presence_store_request_compaction(struct presence_store *st)
{
	st->compact_requested = true;
}

const char *presence_store_path(const struct presence_store *st)
{
	return st->path;
}

const char *presence_store_journal_path(const struct presence_store *st)
{
	return st->journal_path;
}

enum presence_err presence_store_check_dir(const struct presence_store *st, char *err,
                                           size_t err_size)
{
	struct stat sb;

	if (stat(st->dir_path, &sb) != 0) {
		presence__store_error(err, err_size, "the directory %s of %s is not usable: %s",
		                      st->dir_path, st->path, strerror(errno));
		return PRESENCE_ERR_IO;
	}
	if (!S_ISDIR(sb.st_mode)) {
		presence__store_error(err, err_size, "%s, the directory of %s, is not a directory",
		                      st->dir_path, st->path);
		return PRESENCE_ERR_IO;
	}
	return PRESENCE_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Starting                                                                                    */
/* ---------------------------------------------------------------------------------------- */

/* Writes a whole snapshot of reg and a new journal (with a start record) at once, a generation
 * above every file seen, and appends from now on to that journal. */
static enum presence_err rewrite_all(struct presence_store *st, struct presence_registry *reg,
                                     char *err, size_t err_size)
{
	uint64_t generation = st->generation;
	enum presence_err rc;
	bool end = false;
	int fd = -1;
	uint64_t len = 0;

	if (st->loaded_generation >= generation) {
		generation = st->loaded_generation;
	}
	if (st->loaded_journal.generation >= generation) {
		generation = st->loaded_journal.generation;
	}
	if (st->loaded_next.generation >= generation) {
		generation = st->loaded_next.generation;
	}
	generation++;
	presence__store_compaction_abandon(st, reg);
	rc = presence__store_snapshot_begin(st, reg, generation, err, err_size);
	if (rc != PRESENCE_OK) {
		return rc;
	}
	while (rc == PRESENCE_OK && !end) {
		rc = presence__store_snapshot_write_users(st, reg, PRESENCE_STORE_STEP_USERS,
		                                          PRESENCE_STORE_STEP_BYTES, &end, err,
		                                          err_size);
	}
	st->compacting = false;
	presence_registry_cursor_stop(reg, &st->cursor);
	st->cursor_reg = NULL;
	if (rc != PRESENCE_OK) {
		presence__store_compaction_abandon(st, reg);
		return rc;
	}
	rc = presence__store_snapshot_finish(st, err, err_size);
	if (rc != PRESENCE_OK) {
		return rc;
	}
	/* The snapshot covers everything: older journals are skipped by their generation from
	 * now on, and go. */
	if (st->fd >= 0) {
		(void)close(st->fd);
		st->fd = -1;
	}
	(void)unlink(st->next_path);
	rc = presence__store_journal_create(st, st->journal_path, generation,
	                                    "{\"start\":true,\"seq_shift\":0}\n", &fd, &len, err,
	                                    err_size);
	if (rc != PRESENCE_OK) {
		return rc;
	}
	st->fd = fd;
	st->fd_len = len;
	st->fd_untidy = false;
	st->next_active = false;
	st->old_journal_len = 0;
	st->generation = generation;
	memset(&st->loaded_journal, 0, sizeof(st->loaded_journal));
	memset(&st->loaded_next, 0, sizeof(st->loaded_next));
	st->loaded_journal.exists = true;
	st->loaded_journal.generation = generation;
	st->loaded_generation = generation;
	st->loaded_snapshot = true;
	st->loaded_version = PRESENCE_STORE_VERSION;
	st->loaded_starts = 1;
	return PRESENCE_OK;
}

/* Opens the existing journal (its torn tail cut off) and appends the start record. */
static enum presence_err append_start(struct presence_store *st, char *err, size_t err_size)
{
	char line[96];
	int n;

	st->fd = open(st->journal_path, O_WRONLY | O_CLOEXEC);
	if (st->fd < 0) {
		presence__store_error(err, err_size, "cannot open %s: %s", st->journal_path,
		                      strerror(errno));
		return PRESENCE_ERR_IO;
	}
	st->fd_len = st->loaded_journal.valid_len;
	st->fd_untidy = st->loaded_journal.size != st->fd_len;
	st->next_active = false;
	st->generation = st->loaded_journal.generation;
	n = snprintf(line, sizeof(line), "{\"start\":true,\"seq_shift\":%llu}\n",
	             (unsigned long long)st->loaded_shift);
	return presence__store_journal_append(st, line, (size_t)n, err, err_size);
}

enum presence_err presence_store_start(struct presence_store *st, struct presence_registry *reg,
                                       char *err, size_t err_size)
{
	bool append =
	    st->loaded_version == PRESENCE_STORE_VERSION && st->loaded_snapshot &&
	    st->loaded_journal.exists && !st->loaded_next.exists &&
	    st->loaded_journal.generation == st->loaded_generation &&
	    st->loaded_starts < STARTS_MAX &&
	    st->loaded_journal.valid_len < PRESENCE_STORE_COMPACT_MIN + 2 * st->snapshot_bytes;

	(void)unlink(st->tmp_path);
	(void)unlink(st->journal_tmp_path);
	if (append) {
		enum presence_err rc = append_start(st, err, err_size);

		if (rc == PRESENCE_OK) {
			return rc;
		}
		if (st->fd >= 0) {
			(void)close(st->fd);
			st->fd = -1;
		}
	}
	return rewrite_all(st, reg, err, err_size);
}

/* ---------------------------------------------------------------------------------------- */
/* Changes                                                                                     */
/* ---------------------------------------------------------------------------------------- */

static struct unsaved *unsaved_of(const struct presence_store *st, const struct presence_user *user)
{
	struct unsaved *u = NULL;

	HASH_FIND_PTR(st->unsaved, &user, u);
	return u;
}

/* The seq durably recorded for user. */
static uint64_t recorded_seq(const struct presence_store *st, const struct presence_user *user)
{
	const struct unsaved *u = unsaved_of(st, user);

	if (u != NULL) {
		return u->recorded;
	}
	return presence__store_has_document(user) ? presence_user_seq(user) : st->durable_floor;
}

bool presence_store_guard_allows(void *arg, const struct presence_user *user, uint64_t seq)
{
	const struct presence_store *st = arg;

	return st->margin == 0 || seq <= recorded_seq(st, user) + st->margin;
}

enum presence_err presence_store_note_change(struct presence_store *st,
                                             const struct presence_user *user, bool *added)
{
	struct unsaved *u;

	*added = false;
	if (unsaved_of(st, user) != NULL) {
		return PRESENCE_OK;
	}
	u = calloc(1, sizeof(*u));
	if (u == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	u->user = user;
	u->recorded = recorded_seq(st, user);
	HASH_ADD_PTR(st->unsaved, user, u);
	if (u->hh.tbl == NULL) {
		free(u);
		return PRESENCE_ERR_NOMEM;
	}
	*added = true;
	return PRESENCE_OK;
}

void presence_store_note_cancel(struct presence_store *st, const struct presence_user *user)
{
	struct unsaved *u = unsaved_of(st, user);

	if (u != NULL) {
		HASH_DEL(st->unsaved, u);
		free(u);
	}
}

void presence_store_note_forget(struct presence_store *st, const struct presence_user *user)
{
	struct unsaved *u = unsaved_of(st, user);
	size_t before = st->forgets.len;

	if (u != NULL) {
		HASH_DEL(st->unsaved, u);
		free(u);
	}
	if (!presence__store_has_document(user)) {
		return;
	}
	presence__store_buf_str(&st->forgets, "{\"forget\":");
	presence__store_buf_json_string(&st->forgets, presence_user_name(user));
	presence__store_buf_str(&st->forgets, ",\"seq\":");
	presence__store_buf_u64(&st->forgets, presence_user_seq(user));
	presence__store_buf_str(&st->forgets, "}\n");
	if (st->forgets.failed) {
		/* The next compaction leaves the user out; the floor is written anyway. */
		st->forgets.failed = false;
		st->forgets.len = before;
		st->forget_lost = true;
	}
}

bool presence_store_unsaved(const struct presence_store *st, const struct presence_registry *reg)
{
	return st->unsaved != NULL || st->forgets.len > 0 ||
	       presence_registry_seq_floor(reg) > st->written_floor;
}

enum presence_err presence_store_flush_step(struct presence_store *st,
                                            struct presence_registry *reg, size_t max_users,
                                            size_t max_bytes, bool *done, char *err,
                                            size_t err_size)
{
	bool with_state = presence_registry_keep_state(reg);
	uint64_t floor = presence_registry_seq_floor(reg);
	struct unsaved *u, *tmp, *stop = NULL;
	struct presence__store_buf b = {0};
	size_t count = 0;
	enum presence_err rc;

	*done = false;
	if (!presence_store_unsaved(st, reg)) {
		*done = true;
		return PRESENCE_OK;
	}
	HASH_ITER(hh, st->unsaved, u, tmp)
	{
		if (count > 0 && (count >= max_users || b.len >= max_bytes)) {
			stop = u;
			break;
		}
		presence__store_buf_user_record(&b, u->user, with_state);
		count++;
	}
	presence__store_buf_add(&b, st->forgets.data, st->forgets.len);
	if (floor > st->written_floor) {
		presence__store_buf_str(&b, "{\"seq_floor\":");
		presence__store_buf_u64(&b, floor);
		presence__store_buf_str(&b, "}\n");
	}
	if (b.failed) {
		free(b.data);
		presence__store_error(err, err_size, "out of memory writing %s", st->journal_path);
		return PRESENCE_ERR_NOMEM;
	}
	rc = presence__store_journal_append(st, b.data, b.len, err, err_size);
	free(b.data);
	if (rc != PRESENCE_OK) {
		return rc;
	}
	/* Written: those users are recorded with their current seq now. */
	HASH_ITER(hh, st->unsaved, u, tmp)
	{
		if (u == stop) {
			break;
		}
		HASH_DEL(st->unsaved, u);
		free(u);
	}
	st->forgets.len = 0;
	st->flushed_users = count;
	st->written_floor = st->durable_floor = floor;
	*done = !presence_store_unsaved(st, reg);
	presence_registry_release_held(reg);
	return PRESENCE_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Compaction                                                                                  */
/* ---------------------------------------------------------------------------------------- */

bool presence_store_compacting(const struct presence_store *st)
{
	return st->compacting;
}

/* Whether the journal has grown enough to be worth compacting. */
static bool compaction_due(const struct presence_store *st)
{
	uint64_t journal = st->old_journal_len + st->fd_len;

	return st->compact_requested || st->forget_lost || st->fd_untidy ||
	       (journal >= PRESENCE_STORE_COMPACT_MIN && journal >= 2 * st->snapshot_bytes);
}

/* Begins a compaction: the next journal takes the appends (unless it already does, after an
 * unfinished compaction), and the temporary snapshot is started. */
static enum presence_err compaction_begin(struct presence_store *st, struct presence_registry *reg,
                                          char *err, size_t err_size)
{
	enum presence_err rc;

	if (!st->next_active) {
		int fd = -1;
		uint64_t len = 0;

		rc = presence__store_journal_create(st, st->next_path, st->generation + 1, NULL,
		                                    &fd, &len, err, err_size);
		if (rc != PRESENCE_OK) {
			return rc;
		}
		st->old_journal_len = st->fd_len;
		if (st->fd >= 0) {
			(void)close(st->fd);
		}
		st->fd = fd;
		st->fd_len = len;
		st->fd_untidy = false;
		st->next_active = true;
	}
	st->forget_lost = false;
	st->compact_requested = false;
	return presence__store_snapshot_begin(st, reg, st->generation + 1, err, err_size);
}

/* Puts the finished snapshot in place and the next journal in the journal's. */
static enum presence_err compaction_finish(struct presence_store *st, char *err, size_t err_size)
{
	enum presence_err rc = presence__store_snapshot_finish(st, err, err_size);

	if (rc != PRESENCE_OK) {
		return rc;
	}
	/* From here on the old journal is skipped by its generation; removing it and renaming
	 * the next one over it may stop anywhere and still read the same. */
	if (unlink(st->journal_path) != 0 && errno != ENOENT) {
		presence__store_error(err, err_size, "cannot remove %s: %s", st->journal_path,
		                      strerror(errno));
		return PRESENCE_ERR_IO;
	}
	if (rename(st->next_path, st->journal_path) != 0) {
		presence__store_error(err, err_size, "cannot rename %s to %s: %s", st->next_path,
		                      st->journal_path, strerror(errno));
		return PRESENCE_ERR_IO;
	}
	st->next_active = false;
	st->old_journal_len = 0;
	st->generation++;
	return presence__store_sync_dir(st, err, err_size);
}

enum presence_err presence_store_compact_step(struct presence_store *st,
                                              struct presence_registry *reg, size_t max_users,
                                              size_t max_bytes, bool *finished, char *err,
                                              size_t err_size)
{
	enum presence_err rc;
	bool end = false;

	*finished = false;
	if (!st->compacting) {
		if (!compaction_due(st)) {
			return PRESENCE_OK;
		}
		rc = compaction_begin(st, reg, err, err_size);
		if (rc != PRESENCE_OK) {
			return rc;
		}
	}
	rc = presence__store_snapshot_write_users(st, reg, max_users, max_bytes, &end, err,
	                                          err_size);
	if (rc != PRESENCE_OK) {
		presence__store_compaction_abandon(st, reg);
		return rc;
	}
	if (!end) {
		return PRESENCE_OK;
	}
	st->compacting = false;
	presence_registry_cursor_stop(reg, &st->cursor);
	st->cursor_reg = NULL;
	rc = compaction_finish(st, err, err_size);
	if (rc != PRESENCE_OK) {
		presence__store_compaction_abandon(st, reg);
		return rc;
	}
	*finished = true;
	return PRESENCE_OK;
}

enum presence_err presence_store_stop(struct presence_store *st, struct presence_registry *reg,
                                      char *err, size_t err_size)
{
	static const char stop[] = "{\"stop\":true}\n";
	enum presence_err rc;
	bool done = false;

	presence__store_compaction_abandon(st, reg);
	while (!done) {
		rc = presence_store_flush_step(st, reg, SIZE_MAX, SIZE_MAX, &done, err, err_size);
		if (rc != PRESENCE_OK) {
			return rc;
		}
	}
	return presence__store_journal_append(st, stop, sizeof(stop) - 1, err, err_size);
}

size_t presence_store_flushed_users(const struct presence_store *st)
{
	return st->flushed_users;
}

size_t presence_store_snapshot_users(const struct presence_store *st)
{
	return st->snapshot_users;
}

uint64_t presence_store_snapshot_bytes(const struct presence_store *st)
{
	return st->snapshot_bytes;
}

uint64_t presence_store_journal_bytes(const struct presence_store *st)
{
	return st->old_journal_len + st->fd_len;
}
