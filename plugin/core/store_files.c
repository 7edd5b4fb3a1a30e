/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The bytes of the state file's files: records, journals, snapshots, and moving files aside.
 *
 * Records are rendered by hand with the documents' helpers (document.h), so every name is
 * escaped exactly as in documents and the state is the text documents embed. A flush renders
 * its records into one buffer and writes it with one pwrite() at the journal's known length,
 * then fdatasync()s; a failure cuts the journal back to that length (retried before the next
 * append when even that fails), so a journal never holds half a flush followed by another one.
 * New files (the snapshot's "<path>.tmp", a journal's "<journal>.tmp") are created fresh with
 * O_EXCL, written, fsynced and renamed into place, and the directory is fsynced.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "document.h"
#include "store.h"
#include "store_private.h"

/* How many "-<n>" suffixes move_aside tries before giving up. */
#define ASIDE_ATTEMPTS 1000

/* ---------------------------------------------------------------------------------------- */
/* Buffers and records                                                                         */
/* ---------------------------------------------------------------------------------------- */

void presence__store_buf_add(struct presence__store_buf *b, const char *s, size_t n)
{
	if (b->failed || n == 0) {
		return;
	}
	if (b->len + n > b->cap) {
		size_t cap = b->cap > 0 ? b->cap : 4096;
		char *grown;

		while (cap < b->len + n) {
			if (cap > SIZE_MAX / 2) {
				b->failed = true;
				return;
			}
			cap *= 2;
		}
		grown = realloc(b->data, cap);
		if (grown == NULL) {
			b->failed = true;
			return;
		}
		b->data = grown;
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
}

void presence__store_buf_str(struct presence__store_buf *b, const char *s)
{
	presence__store_buf_add(b, s, strlen(s));
}

void presence__store_buf_u64(struct presence__store_buf *b, uint64_t value)
{
	char digits[PRESENCE__INTEGER_TEXT_SIZE];
	const char *d = presence__digits_u64(digits, value);

	presence__store_buf_add(b, d, (size_t)(digits + sizeof(digits) - d));
}

static void buf_i64(struct presence__store_buf *b, int64_t value)
{
	char digits[PRESENCE__INTEGER_TEXT_SIZE];
	const char *d = presence__digits_i64(digits, value);

	presence__store_buf_add(b, d, (size_t)(digits + sizeof(digits) - d));
}

/* Appends s as a JSON string, escaped as cJSON escapes it (as documents are). */
void presence__store_buf_json_string(struct presence__store_buf *b, const char *s)
{
	char stack[PRESENCE__STRING_STACK_SIZE];
	char *text = presence__json_string(s, stack);

	if (text == NULL) {
		b->failed = true;
		return;
	}
	presence__store_buf_str(b, text);
	if (text != stack) {
		free(text);
	}
}

/* Appends ,"privacy":{...} for a choice other than everyone (kept whatever keep_state says:
 * it is a setting, not presence). */
static void buf_privacy(struct presence__store_buf *b, const struct presence_privacy *privacy)
{
	if (privacy == NULL) {
		return;
	}
	presence__store_buf_str(b, ",\"privacy\":{\"visible_to\":");
	switch (privacy->kind) {
	case PRESENCE_PRIVACY_GROUP:
		presence__store_buf_str(b, "\"group\"");
		break;
	case PRESENCE_PRIVACY_NOBODY:
		presence__store_buf_str(b, "\"nobody\"");
		break;
	case PRESENCE_PRIVACY_LIST:
		presence__store_buf_str(b, "[");
		for (size_t i = 0; i < privacy->count; i++) {
			presence__store_buf_str(b, i > 0 ? "," : "");
			presence__store_buf_json_string(b, privacy->names[i]);
		}
		presence__store_buf_str(b, "]");
		break;
	case PRESENCE_PRIVACY_EVERYONE:
		presence__store_buf_str(b, "\"everyone\"");
		break;
	}
	presence__store_buf_str(b, "}");
}

/* Appends the record of user's last document, keys in the documented order, and a newline. */
void presence__store_buf_user_record(struct presence__store_buf *b,
                                     const struct presence_user *user, bool with_state)
{
	struct presence_user_record rec;

	presence_registry_user_record(user, &rec);
	presence__store_buf_str(b, "{\"username\":");
	presence__store_buf_json_string(b, rec.username);
	presence__store_buf_str(b, ",\"seq\":");
	presence__store_buf_u64(b, rec.seq);
	presence__store_buf_str(b, ",\"since\":");
	buf_i64(b, rec.since_ms);
	presence__store_buf_str(b, rec.available ? ",\"available\":true" : ",\"available\":false");
	if (with_state) {
		presence__store_buf_str(b, ",\"state\":");
		presence__store_buf_str(b, rec.state_json);
	}
	buf_privacy(b, presence_user_privacy(user));
	presence__store_buf_str(b, "}\n");
}

/* Whether user has a document (a record to write). */
bool presence__store_has_document(const struct presence_user *user)
{
	struct presence_document doc;

	return presence_user_published(user, &doc);
}

/* ---------------------------------------------------------------------------------------- */
/* Files                                                                                       */
/* ---------------------------------------------------------------------------------------- */

/* Returns true for the errors that say the system is short of resources right now. */
bool presence__store_transient_errno(int e)
{
	return e == ENOMEM || e == EMFILE || e == ENFILE;
}

/* Writes len bytes at offset (or at the end when offset is -1). Returns false with errno set. */
static bool write_all(int fd, const char *data, size_t len, off_t offset)
{
	while (len > 0) {
		ssize_t n = offset >= 0 ? pwrite(fd, data, len, offset) : write(fd, data, len);

		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n <= 0) {
			if (n == 0) {
				errno = EIO;
			}
			return false;
		}
		data += n;
		len -= (size_t)n;
		if (offset >= 0) {
			offset += n;
		}
	}
	return true;
}

/* fsyncs the directory of the files. */
enum presence_err presence__store_sync_dir(const struct presence_store *st, char *err,
                                           size_t err_size)
{
	int dir = open(st->dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (dir < 0 || fsync(dir) != 0) {
		presence__store_error(err, err_size, "cannot sync directory %s: %s", st->dir_path,
		                      strerror(errno));
		if (dir >= 0) {
			(void)close(dir);
		}
		return PRESENCE_ERR_IO;
	}
	(void)close(dir);
	return PRESENCE_OK;
}

/* Creates path fresh (a leftover file, its permissions or a symbolic link in its place are
 * never reused). Returns the descriptor, or -1 with a message. */
static int create_fresh(const char *path, char *err, size_t err_size)
{
	int fd;

	if (unlink(path) != 0 && errno != ENOENT) {
		presence__store_error(err, err_size, "cannot remove %s: %s", path, strerror(errno));
		return -1;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		presence__store_error(err, err_size, "cannot create %s: %s", path, strerror(errno));
	}
	return fd;
}

/* Writes a new journal at target through the journal's temporary file: the header of
 * generation, then extra (may be NULL), fsynced and renamed into place. Returns PRESENCE_OK with
 * *out (if not NULL) an append descriptor of it and *len its length. */
enum presence_err presence__store_journal_create(struct presence_store *st, const char *target,
                                                 uint64_t generation, const char *extra, int *out,
                                                 uint64_t *len, char *err, size_t err_size)
{
	struct presence__store_buf b = {0};
	int fd;

	presence__store_buf_str(&b,
	                        "{\"format\":\"" PRESENCE_STORE_JOURNAL_FORMAT "\",\"version\":");
	presence__store_buf_u64(&b, PRESENCE_STORE_VERSION);
	presence__store_buf_str(&b, ",\"generation\":");
	presence__store_buf_u64(&b, generation);
	presence__store_buf_str(&b, "}\n");
	if (extra != NULL) {
		presence__store_buf_str(&b, extra);
	}
	if (b.failed) {
		free(b.data);
		presence__store_error(err, err_size, "out of memory writing %s", target);
		return PRESENCE_ERR_NOMEM;
	}
	fd = create_fresh(st->journal_tmp_path, err, err_size);
	if (fd < 0) {
		free(b.data);
		return PRESENCE_ERR_IO;
	}
	if (!write_all(fd, b.data, b.len, 0) || fsync(fd) != 0) {
		presence__store_error(err, err_size, "cannot write %s: %s", st->journal_tmp_path,
		                      strerror(errno));
		goto out_fail;
	}
	if (rename(st->journal_tmp_path, target) != 0) {
		presence__store_error(err, err_size, "cannot rename %s to %s: %s",
		                      st->journal_tmp_path, target, strerror(errno));
		goto out_fail;
	}
	if (presence__store_sync_dir(st, err, err_size) != PRESENCE_OK) {
		(void)close(fd);
		free(b.data);
		return PRESENCE_ERR_IO;
	}
	*len = b.len;
	free(b.data);
	if (out != NULL) {
		*out = fd;
	} else {
		(void)close(fd);
	}
	return PRESENCE_OK;

out_fail:
	(void)close(fd);
	(void)unlink(st->journal_tmp_path);
	free(b.data);
	return PRESENCE_ERR_IO;
}

/* Appends data to the journal in use and fdatasync()s it. On failure cuts the journal back to
 * its length before (later, if that fails now). */
enum presence_err presence__store_journal_append(struct presence_store *st, const char *data,
                                                 size_t len, char *err, size_t err_size)
{
	const char *path = st->next_active ? st->next_path : st->journal_path;

	if (st->fd < 0) {
		presence__store_error(err, err_size, "%s is not open", path);
		return PRESENCE_ERR_IO;
	}
	if (st->fd_untidy) {
		if (ftruncate(st->fd, (off_t)st->fd_len) != 0) {
			presence__store_error(err, err_size,
			                      "cannot cut %s back after a failed write: %s", path,
			                      strerror(errno));
			return PRESENCE_ERR_IO;
		}
		st->fd_untidy = false;
	}
	if (!write_all(st->fd, data, len, (off_t)st->fd_len) || fdatasync(st->fd) != 0) {
		presence__store_error(err, err_size, "cannot write %s: %s", path, strerror(errno));
		st->fd_untidy = ftruncate(st->fd, (off_t)st->fd_len) != 0;
		return PRESENCE_ERR_IO;
	}
	st->fd_len += len;
	return PRESENCE_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Moving aside                                                                                */
/* ---------------------------------------------------------------------------------------- */

/* Renames path to "<path>.corrupt-<stamp>[-n]", the new name in aside. */
static enum presence_err move_one(const char *path, const char *stamp, char *aside,
                                  size_t aside_size, char *err, size_t err_size)
{
	for (int attempt = 1; attempt <= ASIDE_ATTEMPTS; attempt++) {
		struct stat sb;
		int n;

		if (attempt == 1) {
			n = snprintf(aside, aside_size, "%s.corrupt-%s", path, stamp);
		} else {
			n = snprintf(aside, aside_size, "%s.corrupt-%s-%d", path, stamp, attempt);
		}
		if (n < 0 || (size_t)n >= aside_size) {
			presence__store_error(err, err_size,
			                      "the name for moving %s aside is too long", path);
			return PRESENCE_ERR_IO;
		}
		if (lstat(aside, &sb) == 0) {
			continue;
		}
		if (errno != ENOENT) {
			presence__store_error(err, err_size, "cannot use %s: %s", aside,
			                      strerror(errno));
			return PRESENCE_ERR_IO;
		}
		if (rename(path, aside) != 0) {
			presence__store_error(err, err_size, "cannot rename %s to %s: %s", path,
			                      aside, strerror(errno));
			return PRESENCE_ERR_IO;
		}
		return PRESENCE_OK;
	}
	presence__store_error(err, err_size,
	                      "cannot move %s aside: %d files named %s.corrupt-%s* exist", path,
	                      ASIDE_ATTEMPTS, path, stamp);
	return PRESENCE_ERR_IO;
}

enum presence_err presence_store_move_aside(struct presence_store *st, int64_t now, char *aside,
                                            size_t aside_size, char *err, size_t err_size)
{
	const char *paths[3] = {st->path, st->journal_path, st->next_path};
	time_t t = (time_t)now;
	char stamp[32] = "unknown-time";
	bool reported = false;
	struct tm tm;

	if (gmtime_r(&t, &tm) != NULL) {
		strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	}
	if (aside_size > 0) {
		aside[0] = '\0';
	}
	for (int i = 0; i < 3; i++) {
		char scratch[4200];
		struct stat sb;
		enum presence_err rc;

		if (lstat(paths[i], &sb) != 0) {
			continue;
		}
		rc = move_one(paths[i], stamp, reported ? scratch : aside,
		              reported ? sizeof(scratch) : aside_size, err, err_size);
		if (rc != PRESENCE_OK) {
			return rc;
		}
		reported = true;
	}
	memset(&st->loaded_journal, 0, sizeof(st->loaded_journal));
	memset(&st->loaded_next, 0, sizeof(st->loaded_next));
	st->loaded_snapshot = false;
	st->loaded_generation = 0;
	st->loaded_version = 0;
	st->loaded_shift = 0;
	st->loaded_starts = 0;
	return PRESENCE_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Snapshots                                                                                   */
/* ---------------------------------------------------------------------------------------- */

/* Writes the records of up to max_users users from the compaction's cursor (about max_bytes
 * bytes) to the temporary snapshot; sets *end when the cursor is exhausted. */
enum presence_err presence__store_snapshot_write_users(struct presence_store *st,
                                                       struct presence_registry *reg,
                                                       size_t max_users, size_t max_bytes,
                                                       bool *end, char *err, size_t err_size)
{
	bool with_state = presence_registry_keep_state(reg);
	struct presence__store_buf b = {0};
	size_t visited = 0;
	size_t users = 0;
	struct presence_user *user = NULL;

	*end = false;
	while (visited == 0 || (visited < max_users && b.len < max_bytes)) {
		user = presence_registry_cursor_next(reg, &st->cursor);
		if (user == NULL) {
			*end = true;
			break;
		}
		visited++;
		if (presence__store_has_document(user)) {
			presence__store_buf_user_record(&b, user, with_state);
			users++;
		}
	}
	if (b.failed) {
		free(b.data);
		presence__store_error(err, err_size, "out of memory writing %s", st->tmp_path);
		return PRESENCE_ERR_NOMEM;
	}
	if (b.len > 0 && !write_all(st->snap_fd, b.data, b.len, -1)) {
		presence__store_error(err, err_size, "cannot write %s: %s", st->tmp_path,
		                      strerror(errno));
		free(b.data);
		return PRESENCE_ERR_IO;
	}
	st->snap_users += users;
	st->snap_len += b.len;
	free(b.data);
	return PRESENCE_OK;
}

/* Creates the temporary snapshot of generation with its header and positions the cursor. */
enum presence_err presence__store_snapshot_begin(struct presence_store *st,
                                                 struct presence_registry *reg, uint64_t generation,
                                                 char *err, size_t err_size)
{
	struct presence__store_buf b = {0};

	presence__store_buf_str(&b, "{\"format\":\"" PRESENCE_STORE_FORMAT "\",\"version\":");
	presence__store_buf_u64(&b, PRESENCE_STORE_VERSION);
	presence__store_buf_str(&b, ",\"generation\":");
	presence__store_buf_u64(&b, generation);
	presence__store_buf_str(&b, ",\"seq_floor\":");
	presence__store_buf_u64(&b, presence_registry_seq_floor(reg));
	presence__store_buf_str(&b, "}\n");
	if (b.failed) {
		free(b.data);
		presence__store_error(err, err_size, "out of memory writing %s", st->tmp_path);
		return PRESENCE_ERR_NOMEM;
	}
	st->snap_fd = create_fresh(st->tmp_path, err, err_size);
	if (st->snap_fd < 0) {
		free(b.data);
		return PRESENCE_ERR_IO;
	}
	if (!write_all(st->snap_fd, b.data, b.len, -1)) {
		presence__store_error(err, err_size, "cannot write %s: %s", st->tmp_path,
		                      strerror(errno));
		free(b.data);
		presence__store_compaction_abandon(st, reg);
		return PRESENCE_ERR_IO;
	}
	st->snap_len = b.len;
	st->snap_users = 0;
	free(b.data);
	if (!presence_registry_cursor_start(reg, &st->cursor)) {
		presence__store_error(err, err_size, "internal error: no cursor for %s",
		                      st->tmp_path);
		presence__store_compaction_abandon(st, reg);
		return PRESENCE_ERR_NOMEM;
	}
	st->cursor_reg = reg;
	st->compacting = true;
	return PRESENCE_OK;
}

/* Ends the temporary snapshot (end record, fsync) and renames it over the snapshot. */
enum presence_err presence__store_snapshot_finish(struct presence_store *st, char *err,
                                                  size_t err_size)
{
	struct presence__store_buf b = {0};
	int fd = st->snap_fd;
	enum presence_err rc = PRESENCE_ERR_IO;

	presence__store_buf_str(&b, "{\"end\":true,\"users\":");
	presence__store_buf_u64(&b, st->snap_users);
	presence__store_buf_str(&b, "}\n");
	st->snap_fd = -1;
	if (b.failed) {
		presence__store_error(err, err_size, "out of memory writing %s", st->tmp_path);
		rc = PRESENCE_ERR_NOMEM;
		goto out_fail;
	}
	if (!write_all(fd, b.data, b.len, -1) || fsync(fd) != 0) {
		presence__store_error(err, err_size, "cannot write %s: %s", st->tmp_path,
		                      strerror(errno));
		goto out_fail;
	}
	if (close(fd) != 0) {
		fd = -1;
		presence__store_error(err, err_size, "cannot write %s: %s", st->tmp_path,
		                      strerror(errno));
		goto out_fail;
	}
	fd = -1;
	if (rename(st->tmp_path, st->path) != 0) {
		presence__store_error(err, err_size, "cannot rename %s to %s: %s", st->tmp_path,
		                      st->path, strerror(errno));
		goto out_fail;
	}
	st->snapshot_users = st->snap_users;
	st->snapshot_bytes = st->snap_len + b.len;
	free(b.data);
	return presence__store_sync_dir(st, err, err_size);

out_fail:
	if (fd >= 0) {
		(void)close(fd);
	}
	(void)unlink(st->tmp_path);
	free(b.data);
	return rc;
}
