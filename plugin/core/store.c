/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The state file: a snapshot and a journal (see store.h for the files, the replay rule and why
 * every crash leaves them readable).
 *
 * Writing. Records are rendered by hand with the documents' helpers (document.h), so every name
 * is escaped exactly as in documents and the state is the text documents embed. A flush renders
 * its records into one buffer and writes it with one pwrite() at the journal's known length,
 * then fdatasync()s; a failure cuts the journal back to that length (retried before the next
 * append when even that fails), so a journal never holds half a flush followed by another one.
 * New files (the snapshot's "<path>.tmp", a journal's "<journal>.tmp") are created fresh with
 * O_EXCL, written, fsynced and renamed into place, and the directory is fsynced.
 *
 * The users changed since the last flush are kept in a hash table by user, each with the seq
 * durably recorded for it when it was added: that is what the guard compares with. A user not
 * in the table is recorded with its current seq when it has a document (every document puts
 * it in the table until a flush writes it), and with the durable floor otherwise.
 *
 * Reading streams each file line by line (a line is parsed alone with cJSON), so memory does not
 * grow with the file. A version 1 file (one JSON document) is parsed whole, as it was written.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uthash.h>

#include "document.h"
#include "store.h"
#include "testing.h"
#include "text.h"
#include "utf8.h"

/* The largest integer a JSON number (a double in cJSON) holds exactly: 2^53 - 1. */
#define EXACT_INTEGER_MAX 9007199254740991.0

/* How many "-<n>" suffixes move_aside tries before giving up. */
#define ASIDE_ATTEMPTS 1000

/* A journal with this many start records is rewritten at the next start (each unclean one
 * shifts every user when it is replayed). */
#define STARTS_MAX 8

/* The reader's chunk. */
#define READ_CHUNK (64 * 1024)

/* A user changed since the last flush. */
struct unsaved {
	/* The hash key. */
	const struct presence_user *user;
	/* The seq durably recorded for it when it was added. */
	uint64_t recorded;
	UT_hash_handle hh;
};

/* A growing byte buffer; failed is set (and nothing more added) once memory ran out. */
struct buf {
	char *data;
	size_t len, cap;
	bool failed;
};

/* What the loader found of one journal. */
struct journal_info {
	bool exists;
	uint64_t generation;
	/* Bytes up to the end of the last complete record, and the file's size. */
	uint64_t valid_len, size;
};

struct presence_store {
	/* The snapshot, its temporary file, the journal, the next journal, a journal's temporary
	 * file and the directory holding them. */
	char *path;
	char *tmp_path;
	char *journal_path;
	char *next_path;
	char *journal_tmp_path;
	char *dir_path;
	uint64_t margin;

	/* The journal appended to (the journal, or the next journal during and after an unfinished
	 * compaction): descriptor, length written, generation; whether a failed write left bytes
	 * after that length. */
	int fd;
	uint64_t fd_len;
	uint64_t generation;
	bool fd_untidy;
	/* Whether the next journal exists (appends go there). */
	bool next_active;
	/* Bytes of the journal before the next one took over (counted while both exist). */
	uint64_t old_journal_len;

	/* Whether a compaction was asked for (presence_store_request_compaction). */
	bool compact_requested;

	/* Changed users, forget records waiting for the next flush, floors. */
	struct unsaved *unsaved;
	struct buf forgets;
	bool forget_lost;
	uint64_t written_floor;
	uint64_t durable_floor;

	/* A compaction in progress: the temporary snapshot, where the cursor is (and the registry
	 * it is open in), what was written. */
	bool compacting;
	int snap_fd;
	struct presence_cursor cursor;
	struct presence_registry *cursor_reg;
	size_t snap_users;
	uint64_t snap_len;

	/* Users written by the last flush step. */
	size_t flushed_users;

	/* The last snapshot. */
	size_t snapshot_users;
	uint64_t snapshot_bytes;

	/* What the last load found, for presence_store_start. */
	bool loaded_snapshot;
	uint64_t loaded_generation;
	int loaded_version;
	uint64_t loaded_shift;
	unsigned int loaded_starts;
	struct journal_info loaded_journal, loaded_next;
};

/* Writes a formatted message into err (err_size bytes, may be 0). */
static void store_error(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void store_error(char *err, size_t err_size, const char *fmt, ...)
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
static void compaction_abandon(struct presence_store *st, struct presence_registry *reg)
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
	compaction_abandon(st, NULL);
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
		store_error(err, err_size, "the directory %s of %s is not usable: %s", st->dir_path,
		            st->path, strerror(errno));
		return PRESENCE_ERR_IO;
	}
	if (!S_ISDIR(sb.st_mode)) {
		store_error(err, err_size, "%s, the directory of %s, is not a directory",
		            st->dir_path, st->path);
		return PRESENCE_ERR_IO;
	}
	return PRESENCE_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Buffers and records                                                                         */
/* ---------------------------------------------------------------------------------------- */

static void buf_add(struct buf *b, const char *s, size_t n)
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

static void buf_str(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void buf_u64(struct buf *b, uint64_t value)
{
	char digits[PRESENCE__INTEGER_TEXT_SIZE];
	const char *d = presence__digits_u64(digits, value);

	buf_add(b, d, (size_t)(digits + sizeof(digits) - d));
}

static void buf_i64(struct buf *b, int64_t value)
{
	char digits[PRESENCE__INTEGER_TEXT_SIZE];
	const char *d = presence__digits_i64(digits, value);

	buf_add(b, d, (size_t)(digits + sizeof(digits) - d));
}

/* Appends s as a JSON string, escaped as cJSON escapes it (as documents are). */
static void buf_json_string(struct buf *b, const char *s)
{
	char stack[PRESENCE__STRING_STACK_SIZE];
	char *text = presence__json_string(s, stack);

	if (text == NULL) {
		b->failed = true;
		return;
	}
	buf_str(b, text);
	if (text != stack) {
		free(text);
	}
}

/* Appends the record of user's last document, keys in the documented order, and a newline. */
static void buf_user_record(struct buf *b, const struct presence_user *user, bool with_state)
{
	struct presence_user_record rec;

	presence_registry_user_record(user, &rec);
	buf_str(b, "{\"username\":");
	buf_json_string(b, rec.username);
	buf_str(b, ",\"seq\":");
	buf_u64(b, rec.seq);
	buf_str(b, ",\"since\":");
	buf_i64(b, rec.since_ms);
	buf_str(b, rec.available ? ",\"available\":true" : ",\"available\":false");
	if (with_state) {
		buf_str(b, ",\"state\":");
		buf_str(b, rec.state_json);
	}
	buf_str(b, "}\n");
}

/* Whether user has a document (a record to write). */
static bool has_document(const struct presence_user *user)
{
	struct presence_document doc;

	return presence_user_published(user, &doc);
}

/* ---------------------------------------------------------------------------------------- */
/* Files                                                                                       */
/* ---------------------------------------------------------------------------------------- */

/* Returns true for the errors that say the system is short of resources right now. */
static bool transient_errno(int e)
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
static enum presence_err sync_dir(const struct presence_store *st, char *err, size_t err_size)
{
	int dir = open(st->dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (dir < 0 || fsync(dir) != 0) {
		store_error(err, err_size, "cannot sync directory %s: %s", st->dir_path,
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
		store_error(err, err_size, "cannot remove %s: %s", path, strerror(errno));
		return -1;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		store_error(err, err_size, "cannot create %s: %s", path, strerror(errno));
	}
	return fd;
}

/* Writes a new journal at target through the journal's temporary file: the header of
 * generation, then extra (may be NULL), fsynced and renamed into place. Returns PRESENCE_OK with
 * *out (if not NULL) an append descriptor of it and *len its length. */
static enum presence_err journal_create(struct presence_store *st, const char *target,
                                        uint64_t generation, const char *extra, int *out,
                                        uint64_t *len, char *err, size_t err_size)
{
	struct buf b = {0};
	int fd;

	buf_str(&b, "{\"format\":\"" PRESENCE_STORE_JOURNAL_FORMAT "\",\"version\":");
	buf_u64(&b, PRESENCE_STORE_VERSION);
	buf_str(&b, ",\"generation\":");
	buf_u64(&b, generation);
	buf_str(&b, "}\n");
	if (extra != NULL) {
		buf_str(&b, extra);
	}
	if (b.failed) {
		free(b.data);
		store_error(err, err_size, "out of memory writing %s", target);
		return PRESENCE_ERR_NOMEM;
	}
	fd = create_fresh(st->journal_tmp_path, err, err_size);
	if (fd < 0) {
		free(b.data);
		return PRESENCE_ERR_IO;
	}
	if (!write_all(fd, b.data, b.len, 0) || fsync(fd) != 0) {
		store_error(err, err_size, "cannot write %s: %s", st->journal_tmp_path,
		            strerror(errno));
		goto out_fail;
	}
	if (rename(st->journal_tmp_path, target) != 0) {
		store_error(err, err_size, "cannot rename %s to %s: %s", st->journal_tmp_path,
		            target, strerror(errno));
		goto out_fail;
	}
	if (sync_dir(st, err, err_size) != PRESENCE_OK) {
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
static enum presence_err journal_append(struct presence_store *st, const char *data, size_t len,
                                        char *err, size_t err_size)
{
	const char *path = st->next_active ? st->next_path : st->journal_path;

	if (st->fd < 0) {
		store_error(err, err_size, "%s is not open", path);
		return PRESENCE_ERR_IO;
	}
	if (st->fd_untidy) {
		if (ftruncate(st->fd, (off_t)st->fd_len) != 0) {
			store_error(err, err_size, "cannot cut %s back after a failed write: %s",
			            path, strerror(errno));
			return PRESENCE_ERR_IO;
		}
		st->fd_untidy = false;
	}
	if (!write_all(st->fd, data, len, (off_t)st->fd_len) || fdatasync(st->fd) != 0) {
		store_error(err, err_size, "cannot write %s: %s", path, strerror(errno));
		st->fd_untidy = ftruncate(st->fd, (off_t)st->fd_len) != 0;
		return PRESENCE_ERR_IO;
	}
	st->fd_len += len;
	return PRESENCE_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Reading: values                                                                             */
/* ---------------------------------------------------------------------------------------- */

/* Returns true when item is a number holding an integer from min to max, stored in *out. */
static bool json_integer(const cJSON *item, double min, double max, double *out)
{
	double v;

	if (!cJSON_IsNumber(item)) {
		return false;
	}
	v = item->valuedouble;
	/* NaN fails both comparisons; within the range a double converts to int64 exactly. */
	if (!(v >= min && v <= max) || (double)(int64_t)v != v) {
		return false;
	}
	*out = v;
	return true;
}

static const cJSON *member(const cJSON *object, const char *name)
{
	return cJSON_GetObjectItemCaseSensitive(object, name);
}

/* Checks the fields of a user record; writes the reason (where says which) into err. */
static bool user_valid(const cJSON *user, const char *where, char *err, size_t err_size)
{
	const cJSON *name = member(user, "username");
	const cJSON *state;
	double number;

	if (!cJSON_IsObject(user)) {
		store_error(err, err_size, "%s is not an object", where);
		return false;
	}
	if (!cJSON_IsString(name) || name->valuestring[0] == '\0' ||
	    !presence_utf8_valid(name->valuestring, strlen(name->valuestring))) {
		store_error(err, err_size, "%s: \"username\" must be a non-empty UTF-8 string",
		            where);
		return false;
	}
	if (!json_integer(member(user, "seq"), 0, EXACT_INTEGER_MAX, &number)) {
		store_error(err, err_size,
		            "%s: \"seq\" must be an integer from 0 to 9007199254740991", where);
		return false;
	}
	if (!json_integer(member(user, "since"), -EXACT_INTEGER_MAX, EXACT_INTEGER_MAX, &number)) {
		store_error(err, err_size, "%s: \"since\" must be an integer", where);
		return false;
	}
	if (!cJSON_IsBool(member(user, "available"))) {
		store_error(err, err_size, "%s: \"available\" must be true or false", where);
		return false;
	}
	state = member(user, "state");
	if (state != NULL && !cJSON_IsObject(state)) {
		store_error(err, err_size, "%s: \"state\" must be a JSON object", where);
		return false;
	}
	return true;
}

/* Restores a checked user record into reg. */
static enum presence_err restore_user(struct presence_registry *reg, const cJSON *user,
                                      const char *where, char *err, size_t err_size)
{
	const char *name = member(user, "username")->valuestring;
	uint64_t seq = (uint64_t)member(user, "seq")->valuedouble;
	int64_t since = (int64_t)member(user, "since")->valuedouble;
	bool available = cJSON_IsTrue(member(user, "available"));
	enum presence_err rc =
	    presence_registry_user_restore(reg, name, seq, since, available, member(user, "state"));

	if (rc == PRESENCE_ERR_NOMEM) {
		store_error(err, err_size, "out of memory restoring %s", where);
	} else if (rc != PRESENCE_OK) {
		store_error(err, err_size,
		            "%s: \"state\" has an invalid key or number (keys are 1 to 128 bytes "
		            "without '/', '+' or '#'), or the user name is too long for an MQTT "
		            "topic",
		            where);
	}
	return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Reading: version 1 (one JSON document)                                                      */
/* ---------------------------------------------------------------------------------------- */

/* Reads the whole file at path into a malloc'd, NUL-terminated buffer (*text, *len). Returns
 * PRESENCE_OK, PRESENCE_ERR_NOMEM or PRESENCE_ERR_IO with a message. */
static enum presence_err read_whole_file(const char *path, char **text, size_t *len, char *err,
                                         size_t err_size)
{
	size_t cap = 4096;
	size_t used = 0;
	struct stat sb;
	char *buf;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;

		store_error(err, err_size, "cannot open %s: %s", path, strerror(e));
		return transient_errno(e) ? PRESENCE_ERR_NOMEM : PRESENCE_ERR_IO;
	}
	if (fstat(fd, &sb) == 0 && sb.st_size > 0 && (uint64_t)sb.st_size < SIZE_MAX / 2) {
		cap = (size_t)sb.st_size + 1;
	}
	buf = malloc(cap);
	if (buf == NULL) {
		store_error(err, err_size, "out of memory reading %s", path);
		(void)close(fd);
		return PRESENCE_ERR_NOMEM;
	}
	for (;;) {
		ssize_t n;

		if (used + 1 >= cap) {
			char *bigger = cap < SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;

			if (bigger == NULL) {
				store_error(err, err_size, "out of memory reading %s", path);
				free(buf);
				(void)close(fd);
				return PRESENCE_ERR_NOMEM;
			}
			buf = bigger;
			cap *= 2;
		}
		n = read(fd, buf + used, cap - 1 - used);
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n < 0) {
			int e = errno;

			store_error(err, err_size, "cannot read %s: %s", path, strerror(e));
			free(buf);
			(void)close(fd);
			return transient_errno(e) ? PRESENCE_ERR_NOMEM : PRESENCE_ERR_IO;
		}
		if (n == 0) {
			break;
		}
		used += (size_t)n;
	}
	(void)close(fd);
	buf[used] = '\0';
	*text = buf;
	*len = used;
	return PRESENCE_OK;
}

/* Describes where cJSON stopped parsing text (len bytes; end is where it stopped). */
static void parse_error(const char *text, size_t len, const char *end, char *err, size_t err_size)
{
	size_t at = end != NULL && end >= text ? (size_t)(end - text) : 0;

	if (len == 0) {
		store_error(err, err_size, "it is empty");
	} else if (at >= len) {
		store_error(
		    err, err_size,
		    "it is cut short: the JSON document ends after %zu bytes, in the middle of "
		    "a value",
		    len);
	} else {
		store_error(
		    err, err_size,
		    "it is not valid JSON or is cut short (parsing failed at byte %zu of %zu)", at,
		    len);
	}
}

/* Checks everything in a version 1 document but what only restoring can check. */
static bool v1_valid(const cJSON *root, char *err, size_t err_size)
{
	const cJSON *format = member(root, "format");
	const cJSON *version = member(root, "version");
	const cJSON *users = member(root, "users");
	const cJSON *user;
	double number;
	size_t index = 0;

	if (!cJSON_IsObject(root)) {
		store_error(err, err_size, "it is not a JSON object");
		return false;
	}
	if (!cJSON_IsString(format) || strcmp(format->valuestring, PRESENCE_STORE_FORMAT) != 0) {
		store_error(err, err_size,
		            "it is not a mosquitto-presence state file (\"format\" is not \"%s\")",
		            PRESENCE_STORE_FORMAT);
		return false;
	}
	if (!json_integer(version, 0, EXACT_INTEGER_MAX, &number) || number != 1) {
		store_error(err, err_size,
		            "its \"version\" is not 1 or 2, the versions this plugin reads");
		return false;
	}
	if (!cJSON_IsBool(member(root, "clean"))) {
		store_error(err, err_size, "\"clean\" must be true or false");
		return false;
	}
	if (!cJSON_IsArray(users)) {
		store_error(err, err_size, "\"users\" must be an array");
		return false;
	}
	cJSON_ArrayForEach(user, users)
	{
		char where[32];

		snprintf(where, sizeof(where), "users[%zu]", index++);
		if (!user_valid(user, where, err, err_size)) {
			return false;
		}
	}
	return true;
}

/* Loads a version 1 file (one JSON document) into reg. */
static enum presence_err load_v1(struct presence_store *st, struct presence_registry *reg,
                                 struct presence_store_loaded *out, char *err, size_t err_size)
{
	const char *end = NULL;
	const cJSON *user;
	enum presence_err rc;
	size_t index = 0;
	cJSON *root;
	char *text;
	size_t len;

	rc = read_whole_file(st->path, &text, &len, err, err_size);
	if (rc != PRESENCE_OK) {
		return rc;
	}
	/* The length includes the NUL, so that cJSON refuses anything after the document but
	 * white space. */
	root = cJSON_ParseWithLengthOpts(text, len + 1, &end, true);
	if (root == NULL) {
		parse_error(text, len, end, err, err_size);
		free(text);
		return PRESENCE_ERR_INVAL;
	}
	free(text);
	if (!v1_valid(root, err, err_size)) {
		cJSON_Delete(root);
		return PRESENCE_ERR_INVAL;
	}
	out->version = 1;
	out->clean = cJSON_IsTrue(member(root, "clean"));
	cJSON_ArrayForEach(user, member(root, "users"))
	{
		const char *name = member(user, "username")->valuestring;
		char where[32];

		snprintf(where, sizeof(where), "users[%zu]", index++);
		if (presence_registry_user_find(reg, name) != NULL) {
			store_error(err, err_size, "%s: user \"%.64s\" appears twice", where, name);
			cJSON_Delete(root);
			return PRESENCE_ERR_INVAL;
		}
		rc = restore_user(reg, user, where, err, err_size);
		if (rc != PRESENCE_OK) {
			cJSON_Delete(root);
			return rc;
		}
	}
	cJSON_Delete(root);
	return PRESENCE_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Reading: version 2 (lines)                                                                  */
/* ---------------------------------------------------------------------------------------- */

/* Reads a file line by line, at most PRESENCE_STORE_LINE_MAX bytes a line. */
struct line_reader {
	int fd;
	char *buf;
	size_t cap;
	/* The unread bytes are buf[start, end). */
	size_t start, end;
	bool eof;
	/* Bytes of the file before buf[start]. */
	uint64_t offset;
};

/* What line_next found. */
enum line_status {
	LINE_OK = 0,
	LINE_END,
	LINE_ERROR,
	LINE_TOO_LONG,
	LINE_NOMEM,
};

/* Returns the next line (*line, *len, without its newline; *complete false for a last line
 * without one, which is NUL-terminated all the same). Lines are NUL-terminated in place. */
static enum line_status line_next(struct line_reader *r, char **line, size_t *len, bool *complete)
{
	for (;;) {
		char *nl =
		    r->start < r->end ? memchr(r->buf + r->start, '\n', r->end - r->start) : NULL;
		ssize_t n;

		if (nl != NULL) {
			*line = r->buf + r->start;
			*len = (size_t)(nl - *line);
			*nl = '\0';
			*complete = true;
			r->offset += *len + 1;
			r->start += *len + 1;
			return LINE_OK;
		}
		if (r->eof) {
			if (r->start == r->end) {
				return LINE_END;
			}
			*line = r->buf + r->start;
			*len = r->end - r->start;
			r->buf[r->end] = '\0';
			*complete = false;
			r->offset += *len;
			r->start = r->end;
			return LINE_OK;
		}
		if (r->end - r->start > PRESENCE_STORE_LINE_MAX) {
			return LINE_TOO_LONG;
		}
		/* Make room: move the unread bytes to the front, then grow. */
		if (r->start > 0) {
			memmove(r->buf, r->buf + r->start, r->end - r->start);
			r->end -= r->start;
			r->start = 0;
		}
		if (r->cap - r->end < READ_CHUNK + 1) {
			size_t cap = r->cap > 0 ? r->cap * 2 : 2 * READ_CHUNK;
			char *grown = realloc(r->buf, cap);

			if (grown == NULL) {
				return LINE_NOMEM;
			}
			r->buf = grown;
			r->cap = cap;
		}
		n = read(r->fd, r->buf + r->end, r->cap - r->end - 1);
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n < 0) {
			return LINE_ERROR;
		}
		if (n == 0) {
			r->eof = true;
		}
		r->end += (size_t)n;
	}
}

/* Opens path for line_next. Returns PRESENCE_OK, PRESENCE_ERR_NOT_FOUND, or an error with a
 * message. */
static enum presence_err reader_open(struct line_reader *r, const char *path, char *err,
                                     size_t err_size)
{
	struct stat sb;

	memset(r, 0, sizeof(*r));
	r->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (r->fd < 0) {
		int e = errno;

		if (e == ENOENT) {
			return PRESENCE_ERR_NOT_FOUND;
		}
		store_error(err, err_size, "cannot open %s: %s", path, strerror(e));
		return transient_errno(e) ? PRESENCE_ERR_NOMEM : PRESENCE_ERR_IO;
	}
	if (fstat(r->fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		store_error(err, err_size, "%s is not a regular file", path);
		(void)close(r->fd);
		r->fd = -1;
		return PRESENCE_ERR_IO;
	}
	return PRESENCE_OK;
}

static void reader_close(struct line_reader *r)
{
	if (r->fd >= 0) {
		(void)close(r->fd);
	}
	free(r->buf);
	r->fd = -1;
	r->buf = NULL;
}

/* Maps a line_next failure to an error with a message about path. */
static enum presence_err line_failure(enum line_status s, const char *path, uint64_t offset,
                                      char *err, size_t err_size)
{
	switch (s) {
	case LINE_NOMEM:
		store_error(err, err_size, "out of memory reading %s", path);
		return PRESENCE_ERR_NOMEM;
	case LINE_TOO_LONG:
		store_error(err, err_size, "a line of %s (at byte %llu) is longer than %d bytes",
		            path, (unsigned long long)offset, PRESENCE_STORE_LINE_MAX);
		return PRESENCE_ERR_INVAL;
	default:
		store_error(err, err_size, "cannot read %s: %s", path, strerror(errno));
		return transient_errno(errno) ? PRESENCE_ERR_NOMEM : PRESENCE_ERR_IO;
	}
}

/* Parses a line as a JSON object; NULL when it is not one. */
static cJSON *parse_line(const char *line, size_t len)
{
	cJSON *item = cJSON_ParseWithLengthOpts(line, len + 1, NULL, true);

	if (item != NULL && !cJSON_IsObject(item)) {
		cJSON_Delete(item);
		return NULL;
	}
	return item;
}

/* Checks a header line: format, version 2, generation; *generation and *floor (when floor is
 * not NULL; a snapshot's) are set. */
static bool header_valid(const cJSON *header, const char *format, uint64_t *generation,
                         uint64_t *floor, const char *path, char *err, size_t err_size)
{
	const cJSON *f = member(header, "format");
	double number;

	if (!cJSON_IsString(f) || strcmp(f->valuestring, format) != 0) {
		store_error(
		    err, err_size,
		    "%s is not a mosquitto-presence file (its first line's \"format\" is not "
		    "\"%s\")",
		    path, format);
		return false;
	}
	if (!json_integer(member(header, "version"), 0, EXACT_INTEGER_MAX, &number) ||
	    number != PRESENCE_STORE_VERSION) {
		store_error(err, err_size,
		            "%s: its \"version\" is not %d, the version of this layout", path,
		            PRESENCE_STORE_VERSION);
		return false;
	}
	if (!json_integer(member(header, "generation"), 0, EXACT_INTEGER_MAX, &number)) {
		store_error(err, err_size, "%s: \"generation\" must be an integer", path);
		return false;
	}
	*generation = (uint64_t)number;
	if (floor != NULL) {
		if (!json_integer(member(header, "seq_floor"), 0, EXACT_INTEGER_MAX, &number)) {
			store_error(err, err_size, "%s: \"seq_floor\" must be an integer", path);
			return false;
		}
		*floor = (uint64_t)number;
	}
	return true;
}

/* How a journal's records end (for the clean stop). */
struct replay {
	bool last_was_stop;
	bool any_record;
	unsigned int starts;
};

/* Applies one journal record. */
static enum presence_err apply_record(struct presence_registry *reg, const cJSON *rec,
                                      struct replay *rp, const char *where, char *err,
                                      size_t err_size)
{
	const cJSON *item;
	double number;

	rp->any_record = true;
	rp->last_was_stop = false;
	if (member(rec, "username") != NULL) {
		if (!user_valid(rec, where, err, err_size)) {
			return PRESENCE_ERR_INVAL;
		}
		return restore_user(reg, rec, where, err, err_size);
	}
	if ((item = member(rec, "forget")) != NULL) {
		if (!cJSON_IsString(item) || item->valuestring[0] == '\0' ||
		    !json_integer(member(rec, "seq"), 0, EXACT_INTEGER_MAX, &number)) {
			store_error(err, err_size,
			            "%s: a \"forget\" record needs a user name and its \"seq\"",
			            where);
			return PRESENCE_ERR_INVAL;
		}
		(void)presence_registry_user_drop(reg, item->valuestring, (uint64_t)number);
		presence_registry_set_seq_floor(reg, (uint64_t)number);
		return PRESENCE_OK;
	}
	if ((item = member(rec, "seq_floor")) != NULL) {
		if (!json_integer(item, 0, EXACT_INTEGER_MAX, &number)) {
			store_error(err, err_size, "%s: \"seq_floor\" must be an integer", where);
			return PRESENCE_ERR_INVAL;
		}
		presence_registry_set_seq_floor(reg, (uint64_t)number);
		return PRESENCE_OK;
	}
	if (cJSON_IsTrue(member(rec, "start"))) {
		if (!json_integer(member(rec, "seq_shift"), 0, EXACT_INTEGER_MAX, &number)) {
			store_error(err, err_size, "%s: \"seq_shift\" must be an integer", where);
			return PRESENCE_ERR_INVAL;
		}
		if (number > 0) {
			presence_registry_shift_seqs(reg, (uint64_t)number);
		}
		rp->starts++;
		return PRESENCE_OK;
	}
	if (cJSON_IsTrue(member(rec, "stop"))) {
		rp->last_was_stop = true;
		return PRESENCE_OK;
	}
	store_error(err, err_size, "%s is not a record of a state file", where);
	return PRESENCE_ERR_INVAL;
}

/* Whether the rest of the reader holds no complete line that parses as JSON (so a bad line
 * before it is the tail a crash cut short, not corruption). */
static bool rest_is_torn(struct line_reader *r)
{
	char *line;
	size_t len;
	bool complete;

	while (line_next(r, &line, &len, &complete) == LINE_OK) {
		cJSON *item;

		if (!complete) {
			return true;
		}
		item = parse_line(line, len);
		if (item != NULL) {
			cJSON_Delete(item);
			return false;
		}
	}
	return true;
}

/* Reads the header of the journal at path into *info (exists false when there is none). */
static enum presence_err journal_peek(const char *path, struct journal_info *info, char *err,
                                      size_t err_size)
{
	struct line_reader r;
	enum presence_err rc;
	enum line_status s;
	bool complete = false;
	struct stat sb;
	cJSON *header;
	char *line;
	size_t len;

	memset(info, 0, sizeof(*info));
	rc = reader_open(&r, path, err, err_size);
	if (rc == PRESENCE_ERR_NOT_FOUND) {
		return PRESENCE_OK;
	}
	if (rc != PRESENCE_OK) {
		return rc;
	}
	info->exists = true;
	if (fstat(r.fd, &sb) == 0) {
		info->size = (uint64_t)sb.st_size;
	}
	s = line_next(&r, &line, &len, &complete);
	if (s != LINE_OK && s != LINE_END) {
		rc = line_failure(s, path, 0, err, err_size);
		reader_close(&r);
		return rc;
	}
	header = s == LINE_OK && complete ? parse_line(line, len) : NULL;
	if (header == NULL) {
		store_error(err, err_size, "%s does not start with a journal header", path);
		reader_close(&r);
		return PRESENCE_ERR_INVAL;
	}
	if (!header_valid(header, PRESENCE_STORE_JOURNAL_FORMAT, &info->generation, NULL, path, err,
	                  err_size)) {
		cJSON_Delete(header);
		reader_close(&r);
		return PRESENCE_ERR_INVAL;
	}
	cJSON_Delete(header);
	reader_close(&r);
	return PRESENCE_OK;
}

/* Replays the records of a journal (its header checked by journal_peek) into reg; sets
 * info->valid_len to the end of its last complete record. */
static enum presence_err journal_replay(const char *path, struct journal_info *info,
                                        struct presence_registry *reg, struct replay *rp, char *err,
                                        size_t err_size)
{
	struct line_reader r;
	enum presence_err rc;
	enum line_status s;
	uint64_t line_no = 0;
	bool complete;
	char *line;
	size_t len;

	rc = reader_open(&r, path, err, err_size);
	if (rc != PRESENCE_OK) {
		if (rc == PRESENCE_ERR_NOT_FOUND) {
			store_error(err, err_size, "%s disappeared while it was read", path);
			rc = PRESENCE_ERR_IO;
		}
		return rc;
	}
	for (;;) {
		uint64_t at = r.offset;
		char where[64];
		cJSON *rec;

		s = line_next(&r, &line, &len, &complete);
		if (s == LINE_END) {
			break;
		}
		if (s != LINE_OK) {
			rc = line_failure(s, path, at, err, err_size);
			break;
		}
		line_no++;
		if (line_no == 1) {
			/* The header, checked already. */
			info->valid_len = r.offset;
			continue;
		}
		rec = complete ? parse_line(line, len) : NULL;
		if (rec == NULL) {
			if (rest_is_torn(&r)) {
				/* A crash cut the last record short: what came before stands. */
				break;
			}
			store_error(
			    err, err_size,
			    "%s: line %llu is not a JSON object, and complete records follow "
			    "it",
			    path, (unsigned long long)line_no);
			rc = PRESENCE_ERR_INVAL;
			break;
		}
		snprintf(where, sizeof(where), "line %llu of the journal",
		         (unsigned long long)line_no);
		rc = apply_record(reg, rec, rp, where, err, err_size);
		cJSON_Delete(rec);
		if (rc != PRESENCE_OK) {
			break;
		}
		info->valid_len = r.offset;
	}
	reader_close(&r);
	return rc;
}

/* Loads a version 2 snapshot (the reader is past its header) into reg. */
static enum presence_err snapshot_replay(struct line_reader *r, const char *path,
                                         struct presence_registry *reg, size_t *users, char *err,
                                         size_t err_size)
{
	uint64_t line_no = 1;
	bool ended = false;
	enum line_status s;
	bool complete;
	char *line;
	size_t len;

	*users = 0;
	while ((s = line_next(r, &line, &len, &complete)) == LINE_OK) {
		const cJSON *item;
		enum presence_err rc;
		char where[64];
		double number;
		cJSON *rec;

		line_no++;
		rec = complete ? parse_line(line, len) : NULL;
		if (rec == NULL || ended) {
			cJSON_Delete(rec);
			store_error(err, err_size,
			            ended ? "%s: line %llu follows the end record"
			                  : "%s: line %llu is not a complete JSON object",
			            path, (unsigned long long)line_no);
			return PRESENCE_ERR_INVAL;
		}
		if ((item = member(rec, "end")) != NULL) {
			if (!cJSON_IsTrue(item) ||
			    !json_integer(member(rec, "users"), 0, EXACT_INTEGER_MAX, &number) ||
			    (size_t)number != *users) {
				cJSON_Delete(rec);
				store_error(
				    err, err_size,
				    "%s: the end record does not count the %zu users before it",
				    path, *users);
				return PRESENCE_ERR_INVAL;
			}
			cJSON_Delete(rec);
			ended = true;
			continue;
		}
		snprintf(where, sizeof(where), "line %llu of the snapshot",
		         (unsigned long long)line_no);
		if (!user_valid(rec, where, err, err_size)) {
			cJSON_Delete(rec);
			return PRESENCE_ERR_INVAL;
		}
		rc = restore_user(reg, rec, where, err, err_size);
		cJSON_Delete(rec);
		if (rc != PRESENCE_OK) {
			return rc;
		}
		(*users)++;
	}
	if (s != LINE_END) {
		return line_failure(s, path, r->offset, err, err_size);
	}
	if (!ended) {
		store_error(err, err_size, "%s is cut short: it has no end record", path);
		return PRESENCE_ERR_INVAL;
	}
	return PRESENCE_OK;
}

/* Reads the snapshot: version 1 (one JSON document, read whole) or 2 (lines). Sets *generation
 * (0 for version 1 or no snapshot). */
static enum presence_err load_snapshot(struct presence_store *st, struct presence_registry *reg,
                                       struct presence_store_loaded *out, uint64_t *generation,
                                       char *err, size_t err_size)
{
	struct line_reader r;
	enum presence_err rc;
	enum line_status s;
	bool complete = false;
	uint64_t floor = 0;
	cJSON *header = NULL;
	struct stat sb;
	char *line;
	size_t len;

	*generation = 0;
	rc = reader_open(&r, st->path, err, err_size);
	if (rc == PRESENCE_ERR_NOT_FOUND) {
		return PRESENCE_OK;
	}
	if (rc != PRESENCE_OK) {
		return rc;
	}
	st->loaded_snapshot = true;
	out->found = true;
	if (fstat(r.fd, &sb) == 0) {
		st->snapshot_bytes = (uint64_t)sb.st_size;
	}
	s = line_next(&r, &line, &len, &complete);
	if (s == LINE_OK && complete) {
		header = parse_line(line, len);
	}
	if (header == NULL || (cJSON_IsNumber(member(header, "version")) &&
	                       member(header, "version")->valuedouble == 1)) {
		/* Not a header line: a version 1 file (or not a state file at all, which the
		 * version 1 reader explains). */
		cJSON_Delete(header);
		reader_close(&r);
		return load_v1(st, reg, out, err, err_size);
	}
	if (!header_valid(header, PRESENCE_STORE_FORMAT, generation, &floor, st->path, err,
	                  err_size)) {
		cJSON_Delete(header);
		reader_close(&r);
		return PRESENCE_ERR_INVAL;
	}
	cJSON_Delete(header);
	out->version = 2;
	st->loaded_generation = *generation;
	presence_registry_set_seq_floor(reg, floor);
	rc = snapshot_replay(&r, st->path, reg, &st->snapshot_users, err, err_size);
	reader_close(&r);
	return rc;
}

enum presence_err presence_store_load(struct presence_store *st, struct presence_registry *reg,
                                      struct presence_store_loaded *out, char *err, size_t err_size)
{
	struct journal_info *journals[2] = {&st->loaded_journal, &st->loaded_next};
	const char *paths[2] = {st->journal_path, st->next_path};
	struct replay rp = {0};
	uint64_t generation;
	enum presence_err rc;

	memset(out, 0, sizeof(*out));
	st->loaded_snapshot = false;
	st->loaded_generation = 0;
	st->loaded_starts = 0;
	rc = load_snapshot(st, reg, out, &generation, err, err_size);
	if (rc != PRESENCE_OK) {
		return rc;
	}
	st->loaded_version = out->version;
	memset(&st->loaded_journal, 0, sizeof(st->loaded_journal));
	memset(&st->loaded_next, 0, sizeof(st->loaded_next));
	for (int i = 0; i < 2 && out->version != 1; i++) {
		/* (A version 1 file has no journal: one left beside it is not its.) */
		rc = journal_peek(paths[i], journals[i], err, err_size);
		if (rc != PRESENCE_OK) {
			return rc;
		}
		out->found = out->found || journals[i]->exists;
	}
	if (out->version != 1) {
		/* The journals of this snapshot's generation and later, oldest first. */
		if (journals[0]->exists && journals[1]->exists &&
		    journals[1]->generation < journals[0]->generation) {
			struct journal_info *t = journals[0];
			const char *p = paths[0];

			journals[0] = journals[1];
			journals[1] = t;
			paths[0] = paths[1];
			paths[1] = p;
		}
		for (int i = 0; i < 2; i++) {
			if (!journals[i]->exists || journals[i]->generation < generation) {
				continue;
			}
			rp.last_was_stop = false;
			rp.any_record = false;
			rc = journal_replay(paths[i], journals[i], reg, &rp, err, err_size);
			if (rc != PRESENCE_OK) {
				return rc;
			}
		}
		out->clean = rp.last_was_stop;
	}
	st->loaded_starts = rp.starts;
	if (!out->found) {
		return PRESENCE_OK;
	}
	if (!out->clean && st->margin > 0) {
		presence_registry_shift_seqs(reg, st->margin);
		out->seq_shift = st->margin;
	}
	st->loaded_shift = out->seq_shift;
	st->durable_floor = st->written_floor = presence_registry_seq_floor(reg);
	out->users = presence_registry_known_count(reg);
	{
		/* Users recorded as available: they have a document and are not idle. */
		size_t available = 0;
		struct presence_cursor c = {0};
		struct presence_user *user;

		if (presence_registry_cursor_start(reg, &c)) {
			while ((user = presence_registry_cursor_next(reg, &c)) != NULL) {
				struct presence_document doc;

				if (presence_user_published(user, &doc) && doc.available) {
					available++;
				}
			}
		}
		out->available = available;
	}
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
			store_error(err, err_size, "the name for moving %s aside is too long",
			            path);
			return PRESENCE_ERR_IO;
		}
		if (lstat(aside, &sb) == 0) {
			continue;
		}
		if (errno != ENOENT) {
			store_error(err, err_size, "cannot use %s: %s", aside, strerror(errno));
			return PRESENCE_ERR_IO;
		}
		if (rename(path, aside) != 0) {
			store_error(err, err_size, "cannot rename %s to %s: %s", path, aside,
			            strerror(errno));
			return PRESENCE_ERR_IO;
		}
		return PRESENCE_OK;
	}
	store_error(err, err_size, "cannot move %s aside: %d files named %s.corrupt-%s* exist",
	            path, ASIDE_ATTEMPTS, path, stamp);
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
static enum presence_err snapshot_write_users(struct presence_store *st,
                                              struct presence_registry *reg, size_t max_users,
                                              size_t max_bytes, bool *end, char *err,
                                              size_t err_size)
{
	bool with_state = presence_registry_keep_state(reg);
	struct buf b = {0};
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
		if (has_document(user)) {
			buf_user_record(&b, user, with_state);
			users++;
		}
	}
	if (b.failed) {
		free(b.data);
		store_error(err, err_size, "out of memory writing %s", st->tmp_path);
		return PRESENCE_ERR_NOMEM;
	}
	if (b.len > 0 && !write_all(st->snap_fd, b.data, b.len, -1)) {
		store_error(err, err_size, "cannot write %s: %s", st->tmp_path, strerror(errno));
		free(b.data);
		return PRESENCE_ERR_IO;
	}
	st->snap_users += users;
	st->snap_len += b.len;
	free(b.data);
	return PRESENCE_OK;
}

/* Creates the temporary snapshot of generation with its header and positions the cursor. */
static enum presence_err snapshot_begin(struct presence_store *st, struct presence_registry *reg,
                                        uint64_t generation, char *err, size_t err_size)
{
	struct buf b = {0};

	buf_str(&b, "{\"format\":\"" PRESENCE_STORE_FORMAT "\",\"version\":");
	buf_u64(&b, PRESENCE_STORE_VERSION);
	buf_str(&b, ",\"generation\":");
	buf_u64(&b, generation);
	buf_str(&b, ",\"seq_floor\":");
	buf_u64(&b, presence_registry_seq_floor(reg));
	buf_str(&b, "}\n");
	if (b.failed) {
		free(b.data);
		store_error(err, err_size, "out of memory writing %s", st->tmp_path);
		return PRESENCE_ERR_NOMEM;
	}
	st->snap_fd = create_fresh(st->tmp_path, err, err_size);
	if (st->snap_fd < 0) {
		free(b.data);
		return PRESENCE_ERR_IO;
	}
	if (!write_all(st->snap_fd, b.data, b.len, -1)) {
		store_error(err, err_size, "cannot write %s: %s", st->tmp_path, strerror(errno));
		free(b.data);
		compaction_abandon(st, reg);
		return PRESENCE_ERR_IO;
	}
	st->snap_len = b.len;
	st->snap_users = 0;
	free(b.data);
	if (!presence_registry_cursor_start(reg, &st->cursor)) {
		store_error(err, err_size, "internal error: no cursor for %s", st->tmp_path);
		compaction_abandon(st, reg);
		return PRESENCE_ERR_NOMEM;
	}
	st->cursor_reg = reg;
	st->compacting = true;
	return PRESENCE_OK;
}

/* Ends the temporary snapshot (end record, fsync) and renames it over the snapshot. */
static enum presence_err snapshot_finish(struct presence_store *st, char *err, size_t err_size)
{
	struct buf b = {0};
	int fd = st->snap_fd;
	enum presence_err rc = PRESENCE_ERR_IO;

	buf_str(&b, "{\"end\":true,\"users\":");
	buf_u64(&b, st->snap_users);
	buf_str(&b, "}\n");
	st->snap_fd = -1;
	if (b.failed) {
		store_error(err, err_size, "out of memory writing %s", st->tmp_path);
		rc = PRESENCE_ERR_NOMEM;
		goto out_fail;
	}
	if (!write_all(fd, b.data, b.len, -1) || fsync(fd) != 0) {
		store_error(err, err_size, "cannot write %s: %s", st->tmp_path, strerror(errno));
		goto out_fail;
	}
	if (close(fd) != 0) {
		fd = -1;
		store_error(err, err_size, "cannot write %s: %s", st->tmp_path, strerror(errno));
		goto out_fail;
	}
	fd = -1;
	if (rename(st->tmp_path, st->path) != 0) {
		store_error(err, err_size, "cannot rename %s to %s: %s", st->tmp_path, st->path,
		            strerror(errno));
		goto out_fail;
	}
	st->snapshot_users = st->snap_users;
	st->snapshot_bytes = st->snap_len + b.len;
	free(b.data);
	return sync_dir(st, err, err_size);

out_fail:
	if (fd >= 0) {
		(void)close(fd);
	}
	(void)unlink(st->tmp_path);
	free(b.data);
	return rc;
}

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
	compaction_abandon(st, reg);
	rc = snapshot_begin(st, reg, generation, err, err_size);
	if (rc != PRESENCE_OK) {
		return rc;
	}
	while (rc == PRESENCE_OK && !end) {
		rc = snapshot_write_users(st, reg, PRESENCE_STORE_STEP_USERS,
		                          PRESENCE_STORE_STEP_BYTES, &end, err, err_size);
	}
	st->compacting = false;
	presence_registry_cursor_stop(reg, &st->cursor);
	st->cursor_reg = NULL;
	if (rc != PRESENCE_OK) {
		compaction_abandon(st, reg);
		return rc;
	}
	rc = snapshot_finish(st, err, err_size);
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
	rc = journal_create(st, st->journal_path, generation, "{\"start\":true,\"seq_shift\":0}\n",
	                    &fd, &len, err, err_size);
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
		store_error(err, err_size, "cannot open %s: %s", st->journal_path, strerror(errno));
		return PRESENCE_ERR_IO;
	}
	st->fd_len = st->loaded_journal.valid_len;
	st->fd_untidy = st->loaded_journal.size != st->fd_len;
	st->next_active = false;
	st->generation = st->loaded_journal.generation;
	n = snprintf(line, sizeof(line), "{\"start\":true,\"seq_shift\":%llu}\n",
	             (unsigned long long)st->loaded_shift);
	return journal_append(st, line, (size_t)n, err, err_size);
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
	return has_document(user) ? presence_user_seq(user) : st->durable_floor;
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
	if (!has_document(user)) {
		return;
	}
	buf_str(&st->forgets, "{\"forget\":");
	buf_json_string(&st->forgets, presence_user_name(user));
	buf_str(&st->forgets, ",\"seq\":");
	buf_u64(&st->forgets, presence_user_seq(user));
	buf_str(&st->forgets, "}\n");
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
	struct buf b = {0};
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
		buf_user_record(&b, u->user, with_state);
		count++;
	}
	buf_add(&b, st->forgets.data, st->forgets.len);
	if (floor > st->written_floor) {
		buf_str(&b, "{\"seq_floor\":");
		buf_u64(&b, floor);
		buf_str(&b, "}\n");
	}
	if (b.failed) {
		free(b.data);
		store_error(err, err_size, "out of memory writing %s", st->journal_path);
		return PRESENCE_ERR_NOMEM;
	}
	rc = journal_append(st, b.data, b.len, err, err_size);
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

		rc = journal_create(st, st->next_path, st->generation + 1, NULL, &fd, &len, err,
		                    err_size);
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
	return snapshot_begin(st, reg, st->generation + 1, err, err_size);
}

/* Puts the finished snapshot in place and the next journal in the journal's. */
static enum presence_err compaction_finish(struct presence_store *st, char *err, size_t err_size)
{
	enum presence_err rc = snapshot_finish(st, err, err_size);

	if (rc != PRESENCE_OK) {
		return rc;
	}
	/* From here on the old journal is skipped by its generation; removing it and renaming
	 * the next one over it may stop anywhere and still read the same. */
	if (unlink(st->journal_path) != 0 && errno != ENOENT) {
		store_error(err, err_size, "cannot remove %s: %s", st->journal_path,
		            strerror(errno));
		return PRESENCE_ERR_IO;
	}
	if (rename(st->next_path, st->journal_path) != 0) {
		store_error(err, err_size, "cannot rename %s to %s: %s", st->next_path,
		            st->journal_path, strerror(errno));
		return PRESENCE_ERR_IO;
	}
	st->next_active = false;
	st->old_journal_len = 0;
	st->generation++;
	return sync_dir(st, err, err_size);
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
	rc = snapshot_write_users(st, reg, max_users, max_bytes, &end, err, err_size);
	if (rc != PRESENCE_OK) {
		compaction_abandon(st, reg);
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
		compaction_abandon(st, reg);
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

	compaction_abandon(st, reg);
	while (!done) {
		rc = presence_store_flush_step(st, reg, SIZE_MAX, SIZE_MAX, &done, err, err_size);
		if (rc != PRESENCE_OK) {
			return rc;
		}
	}
	return journal_append(st, stop, sizeof(stop) - 1, err, err_size);
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
