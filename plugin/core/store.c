/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The state file (see store.h for the format, the seq rules and why saves are atomic).
 *
 * Writing goes through stdio on a file created fresh for each save (the old temporary file is
 * unlinked first and the new one opened with O_EXCL, so a leftover file, its permissions or a
 * symbolic link in its place are never reused). Each user is one record rendered by hand with
 * the documents' helpers (document.h), so every name is escaped exactly as in documents and the
 * state is written as the text documents embed. Every call that can fail is checked;
 * a failure abandons the save and removes the temporary file, leaving the state file as it was.
 *
 * Reading parses the whole file with cJSON, checks every field of every record first and only
 * then restores users, so a file that breaks a rule late changes nothing before it is refused
 * (except for what only restoring can check: a name that appears twice, an invalid key or
 * number inside a state, a name too long for a topic; the caller then discards the registry).
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

#include "document.h"
#include "store.h"
#include "utf8.h"

/* The largest integer a JSON number (a double in cJSON) holds exactly: 2^53 - 1. */
#define EXACT_INTEGER_MAX 9007199254740991.0

/* How many "-<n>" suffixes move_aside tries before giving up. */
#define ASIDE_ATTEMPTS 1000

/* What goes before the first user record and after the last one. */
#define HEADER_FORMAT                                                                              \
	"{\"format\":\"" PRESENCE_STORE_FORMAT "\",\"version\":%d,\"clean\":%s,\"users\":["
#define TRAILER "\n]}\n"

struct presence_store {
	/* The state file, the temporary file a save writes, and the directory holding both. */
	char *path;
	char *tmp_path;
	char *dir_path;
	/* The save in progress: the open temporary file (NULL when none), whether its cursor
	 * has been set, the next user to write (NULL: the end), the users written so far. */
	FILE *file;
	bool started;
	struct presence_user *cursor;
	size_t written;
	/* Users written by the last completed save. */
	size_t saved_users;
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

/* Returns a malloc'd copy of the first len bytes of s followed by suffix, or NULL. */
static char *concat(const char *s, size_t len, const char *suffix)
{
	size_t suffix_len = strlen(suffix);
	char *out = malloc(len + suffix_len + 1);

	if (out != NULL) {
		memcpy(out, s, len);
		memcpy(out + len, suffix, suffix_len + 1);
	}
	return out;
}

struct presence_store *presence_store_new(const char *path)
{
	struct presence_store *st = calloc(1, sizeof(*st));
	const char *slash = strrchr(path, '/');

	if (st == NULL) {
		return NULL;
	}
	st->path = concat(path, strlen(path), "");
	st->tmp_path = concat(path, strlen(path), ".tmp");
	if (slash == NULL) {
		st->dir_path = concat(".", 1, "");
	} else {
		/* "/state.json" lives in "/", "a/b/state.json" in "a/b". */
		st->dir_path = concat(path, slash == path ? 1 : (size_t)(slash - path), "");
	}
	if (st->path == NULL || st->tmp_path == NULL || st->dir_path == NULL) {
		presence_store_free(st);
		return NULL;
	}
	return st;
}

/* Closes and removes the temporary file of the save in progress, if any. */
static void store_discard(struct presence_store *st)
{
	if (st->file != NULL) {
		(void)fclose(st->file);
		st->file = NULL;
		(void)unlink(st->tmp_path);
	}
	st->started = false;
	st->cursor = NULL;
	st->written = 0;
}

void presence_store_free(struct presence_store *st)
{
	if (st == NULL) {
		return;
	}
	store_discard(st);
	free(st->dir_path);
	free(st->tmp_path);
	free(st->path);
	free(st);
}

const char *presence_store_path(const struct presence_store *st)
{
	return st->path;
}

const char *presence_store_tmp_path(const struct presence_store *st)
{
	return st->tmp_path;
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
/* Reading                                                                                     */
/* ---------------------------------------------------------------------------------------- */

/* Returns true for the errors that say the system is short of resources right now, not that
 * the file is unreadable. */
static bool transient_errno(int e)
{
	return e == ENOMEM || e == EMFILE || e == ENFILE;
}

/* Reads the whole file at path into a malloc'd, NUL-terminated buffer (*text, *len). Returns
 * PRESENCE_OK, PRESENCE_ERR_NOT_FOUND (no such file), PRESENCE_ERR_NOMEM or PRESENCE_ERR_IO
 * with a message. */
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

		if (e == ENOENT) {
			return PRESENCE_ERR_NOT_FOUND;
		}
		store_error(err, err_size, "cannot open %s: %s", path, strerror(e));
		return transient_errno(e) ? PRESENCE_ERR_NOMEM : PRESENCE_ERR_IO;
	}
	if (fstat(fd, &sb) != 0) {
		store_error(err, err_size, "cannot read %s: %s", path, strerror(errno));
		(void)close(fd);
		return PRESENCE_ERR_IO;
	}
	if (!S_ISREG(sb.st_mode)) {
		store_error(err, err_size, "%s is not a regular file", path);
		(void)close(fd);
		return PRESENCE_ERR_IO;
	}
	if (sb.st_size > 0 && (uint64_t)sb.st_size < SIZE_MAX / 2) {
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

/* Checks the fields of users[index]; writes the reason into err when one is wrong. */
static bool user_valid(const cJSON *user, size_t index, char *err, size_t err_size)
{
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(user, "username");
	const cJSON *state;
	double number;

	if (!cJSON_IsObject(user)) {
		store_error(err, err_size, "users[%zu] is not an object", index);
		return false;
	}
	if (!cJSON_IsString(name) || name->valuestring[0] == '\0' ||
	    !presence_utf8_valid(name->valuestring, strlen(name->valuestring))) {
		store_error(err, err_size,
		            "users[%zu]: \"username\" must be a non-empty UTF-8 string", index);
		return false;
	}
	if (!json_integer(cJSON_GetObjectItemCaseSensitive(user, "seq"), 0, EXACT_INTEGER_MAX,
	                  &number)) {
		store_error(err, err_size,
		            "users[%zu]: \"seq\" must be an integer from 0 to 9007199254740991",
		            index);
		return false;
	}
	if (!json_integer(cJSON_GetObjectItemCaseSensitive(user, "since"), -EXACT_INTEGER_MAX,
	                  EXACT_INTEGER_MAX, &number)) {
		store_error(err, err_size, "users[%zu]: \"since\" must be an integer", index);
		return false;
	}
	if (!cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(user, "available"))) {
		store_error(err, err_size, "users[%zu]: \"available\" must be true or false",
		            index);
		return false;
	}
	state = cJSON_GetObjectItemCaseSensitive(user, "state");
	if (state != NULL && !cJSON_IsObject(state)) {
		store_error(err, err_size, "users[%zu]: \"state\" must be a JSON object", index);
		return false;
	}
	return true;
}

/* Checks everything in root but what only restoring can check. */
static bool document_valid(const cJSON *root, char *err, size_t err_size)
{
	const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
	const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "version");
	const cJSON *users = cJSON_GetObjectItemCaseSensitive(root, "users");
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
	if (!json_integer(version, 0, EXACT_INTEGER_MAX, &number) ||
	    number != PRESENCE_STORE_VERSION) {
		store_error(err, err_size,
		            "its \"version\" is not %d, the only version this plugin reads",
		            PRESENCE_STORE_VERSION);
		return false;
	}
	if (!cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(root, "clean"))) {
		store_error(err, err_size, "\"clean\" must be true or false");
		return false;
	}
	if (!cJSON_IsArray(users)) {
		store_error(err, err_size, "\"users\" must be an array");
		return false;
	}
	cJSON_ArrayForEach(user, users)
	{
		if (!user_valid(user, index, err, err_size)) {
			return false;
		}
		index++;
	}
	return true;
}

/* Restores the users of a checked document into reg, with the seq rules of store.h. */
static enum presence_err restore_users(const cJSON *root, struct presence_registry *reg,
                                       struct presence_store_loaded *out, char *err,
                                       size_t err_size)
{
	uint64_t margin = presence_registry_seq_margin(reg);
	const cJSON *user;
	size_t index = 0;

	cJSON_ArrayForEach(user, cJSON_GetObjectItemCaseSensitive(root, "users"))
	{
		const char *name = cJSON_GetObjectItemCaseSensitive(user, "username")->valuestring;
		uint64_t seq = (uint64_t)cJSON_GetObjectItemCaseSensitive(user, "seq")->valuedouble;
		int64_t since =
		    (int64_t)cJSON_GetObjectItemCaseSensitive(user, "since")->valuedouble;
		bool available = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(user, "available"));
		const cJSON *state = cJSON_GetObjectItemCaseSensitive(user, "state");
		enum presence_err rc;

		if (presence_registry_user_find(reg, name) != NULL) {
			store_error(err, err_size, "users[%zu]: user \"%.64s\" appears twice",
			            index, name);
			return PRESENCE_ERR_INVAL;
		}
		if (!out->clean) {
			seq += margin;
		}
		rc = presence_registry_user_restore(reg, name, seq, since, available, state);
		if (rc == PRESENCE_ERR_NOMEM) {
			store_error(err, err_size, "out of memory restoring users[%zu]", index);
			return rc;
		}
		if (rc != PRESENCE_OK) {
			store_error(
			    err, err_size,
			    "users[%zu]: \"state\" has an invalid key or number (keys are 1 "
			    "to 128 bytes without '/', '+' or '#'), or the user name is too "
			    "long for an MQTT topic",
			    index);
			return rc;
		}
		out->users++;
		if (available) {
			out->available++;
		}
		index++;
	}
	if (!out->clean) {
		presence_registry_set_new_user_seq(reg, margin);
	}
	return PRESENCE_OK;
}

/* Describes where cJSON stopped parsing text (len bytes; end is where it stopped). A file cut
 * short in the middle of a value makes cJSON stop at its end; one cut inside a string makes
 * it stop where the string began, which looks like any syntax error. */
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

enum presence_err presence_store_load(struct presence_store *st, struct presence_registry *reg,
                                      struct presence_store_loaded *out, char *err, size_t err_size)
{
	const char *end = NULL;
	enum presence_err rc;
	cJSON *root;
	char *text;
	size_t len;

	memset(out, 0, sizeof(*out));
	rc = read_whole_file(st->path, &text, &len, err, err_size);
	if (rc == PRESENCE_ERR_NOT_FOUND) {
		return PRESENCE_OK;
	}
	if (rc != PRESENCE_OK) {
		return rc;
	}
	out->found = true;
	/* The length includes the terminating NUL, so that cJSON refuses anything after the
	 * document but white space (it requires the NUL right after it). */
	root = cJSON_ParseWithLengthOpts(text, len + 1, &end, true);
	if (root == NULL) {
		parse_error(text, len, end, err, err_size);
		free(text);
		return PRESENCE_ERR_INVAL;
	}
	free(text);
	if (!document_valid(root, err, err_size)) {
		cJSON_Delete(root);
		return PRESENCE_ERR_INVAL;
	}
	out->clean = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "clean"));
	rc = restore_users(root, reg, out, err, err_size);
	cJSON_Delete(root);
	return rc;
}

enum presence_err presence_store_move_aside(struct presence_store *st, int64_t now, char *aside,
                                            size_t aside_size, char *err, size_t err_size)
{
	time_t t = (time_t)now;
	char stamp[32] = "unknown-time";
	struct tm tm;
	int attempt;

	if (gmtime_r(&t, &tm) != NULL) {
		strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	}
	for (attempt = 1; attempt <= ASIDE_ATTEMPTS; attempt++) {
		struct stat sb;
		int n;

		if (attempt == 1) {
			n = snprintf(aside, aside_size, "%s.corrupt-%s", st->path, stamp);
		} else {
			n = snprintf(aside, aside_size, "%s.corrupt-%s-%d", st->path, stamp,
			             attempt);
		}
		if (n < 0 || (size_t)n >= aside_size) {
			store_error(err, err_size, "the name for moving %s aside is too long",
			            st->path);
			return PRESENCE_ERR_IO;
		}
		if (lstat(aside, &sb) == 0) {
			continue;
		}
		if (errno != ENOENT) {
			store_error(err, err_size, "cannot use %s: %s", aside, strerror(errno));
			return PRESENCE_ERR_IO;
		}
		if (rename(st->path, aside) != 0) {
			store_error(err, err_size, "cannot rename %s to %s: %s", st->path, aside,
			            strerror(errno));
			return PRESENCE_ERR_IO;
		}
		return PRESENCE_OK;
	}
	store_error(err, err_size, "cannot move %s aside: %d files named %s.corrupt-%s* exist",
	            st->path, ASIDE_ATTEMPTS, st->path, stamp);
	return PRESENCE_ERR_IO;
}

/* ---------------------------------------------------------------------------------------- */
/* Writing                                                                                     */
/* ---------------------------------------------------------------------------------------- */

bool presence_store_saving(const struct presence_store *st)
{
	return st->file != NULL;
}

/* Abandons the save after an error. */
static void save_failed(struct presence_store *st, struct presence_registry *reg)
{
	store_discard(st);
	presence_registry_save_failed(reg);
}

void presence_store_save_abort(struct presence_store *st, struct presence_registry *reg)
{
	if (st->file != NULL) {
		save_failed(st, reg);
	}
}

enum presence_err presence_store_save_begin(struct presence_store *st,
                                            struct presence_registry *reg, bool clean, char *err,
                                            size_t err_size)
{
	int fd;

	presence_store_save_abort(st, reg);
	if (unlink(st->tmp_path) != 0 && errno != ENOENT) {
		store_error(err, err_size, "cannot remove %s: %s", st->tmp_path, strerror(errno));
		presence_registry_save_failed(reg);
		return PRESENCE_ERR_IO;
	}
	fd = open(st->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		store_error(err, err_size, "cannot create %s: %s", st->tmp_path, strerror(errno));
		presence_registry_save_failed(reg);
		return PRESENCE_ERR_IO;
	}
	st->file = fdopen(fd, "w");
	if (st->file == NULL) {
		int e = errno;

		(void)close(fd);
		(void)unlink(st->tmp_path);
		store_error(err, err_size, "cannot write %s: %s", st->tmp_path, strerror(e));
		presence_registry_save_failed(reg);
		return e == ENOMEM ? PRESENCE_ERR_NOMEM : PRESENCE_ERR_IO;
	}
	if (fprintf(st->file, HEADER_FORMAT, PRESENCE_STORE_VERSION, clean ? "true" : "false") <
	    0) {
		store_error(err, err_size, "cannot write %s: %s", st->tmp_path, strerror(errno));
		save_failed(st, reg);
		return PRESENCE_ERR_IO;
	}
	presence_registry_save_begin(reg);
	st->started = false;
	st->cursor = NULL;
	st->written = 0;
	return PRESENCE_OK;
}

/* A record up to this long is assembled on the stack and written in one call. */
#define RECORD_STACK_BYTES 512

/* One piece of a record: len bytes at text. */
struct piece {
	const char *text;
	size_t len;
};

#define LITERAL(s)                                                                                 \
	{                                                                                          \
		(s), sizeof(s) - 1                                                                 \
	}

/*
 * Writes one user record, keys in the documented order, after the separator from the previous
 * record, and adds the bytes written to *bytes. The record is assembled by hand as documents
 * are (the name escaped as cJSON escapes it, the integers digit by digit, the state embedded as
 * its text), which is byte for byte what printing it as a cJSON object gave, for about a
 * seventh of the instructions: a save writes every known user, about once a second while
 * anything changes. Returns PRESENCE_OK, PRESENCE_ERR_NOMEM (only a name over
 * PRESENCE__STRING_STACK_BYTES bytes needs memory) or PRESENCE_ERR_IO.
 */
static enum presence_err write_record(struct presence_store *st,
                                      const struct presence_user_record *rec, bool with_state,
                                      size_t *bytes)
{
	char name_stack[PRESENCE__STRING_STACK_SIZE];
	char seq[PRESENCE__INTEGER_TEXT_SIZE];
	char since[PRESENCE__INTEGER_TEXT_SIZE];
	const char *seq_digits = presence__digits_u64(seq, rec->seq);
	const char *since_digits = presence__digits_i64(since, rec->since_ms);
	char *name = presence__json_string(rec->username, name_stack);
	char line[RECORD_STACK_BYTES];
	struct piece pieces[10];
	enum presence_err rc = PRESENCE_OK;
	size_t count = 0, total = 0;

	if (name == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	pieces[count++] = st->written > 0 ? (struct piece)LITERAL(",\n{\"username\":")
	                                  : (struct piece)LITERAL("\n{\"username\":");
	pieces[count++] = (struct piece){name, strlen(name)};
	pieces[count++] = (struct piece)LITERAL(",\"seq\":");
	pieces[count++] = (struct piece){seq_digits, (size_t)(seq + sizeof(seq) - seq_digits)};
	pieces[count++] = (struct piece)LITERAL(",\"since\":");
	pieces[count++] =
	    (struct piece){since_digits, (size_t)(since + sizeof(since) - since_digits)};
	pieces[count++] = rec->available ? (struct piece)LITERAL(",\"available\":true")
	                                 : (struct piece)LITERAL(",\"available\":false");
	if (with_state) {
		pieces[count++] = (struct piece)LITERAL(",\"state\":");
		pieces[count++] = (struct piece){rec->state_json, strlen(rec->state_json)};
	}
	pieces[count++] = (struct piece)LITERAL("}");
	for (size_t i = 0; i < count; i++) {
		total += pieces[i].len;
	}
	if (total <= sizeof(line)) {
		/* One write of the whole record: stdio's per-call cost is most of what is left. */
		for (size_t i = 0, at = 0; i < count; at += pieces[i].len, i++) {
			memcpy(line + at, pieces[i].text, pieces[i].len);
		}
		pieces[0] = (struct piece){line, total};
		count = 1;
	}
	for (size_t i = 0; i < count; i++) {
		if (fwrite(pieces[i].text, 1, pieces[i].len, st->file) != pieces[i].len) {
			rc = PRESENCE_ERR_IO;
			break;
		}
	}
	if (rc == PRESENCE_OK) {
		*bytes += total;
	}
	if (name != name_stack) {
		free(name);
	}
	return rc;
}

/* Makes the finished temporary file the state file (see store.h for why in this order). */
static enum presence_err save_finish(struct presence_store *st, char *err, size_t err_size)
{
	FILE *file = st->file;
	int dir;

	st->file = NULL;
	if (fputs(TRAILER, file) == EOF || fflush(file) != 0 || fsync(fileno(file)) != 0) {
		store_error(err, err_size, "cannot write %s: %s", st->tmp_path, strerror(errno));
		(void)fclose(file);
		(void)unlink(st->tmp_path);
		return PRESENCE_ERR_IO;
	}
	if (fclose(file) != 0) {
		store_error(err, err_size, "cannot write %s: %s", st->tmp_path, strerror(errno));
		(void)unlink(st->tmp_path);
		return PRESENCE_ERR_IO;
	}
	if (rename(st->tmp_path, st->path) != 0) {
		store_error(err, err_size, "cannot rename %s to %s: %s", st->tmp_path, st->path,
		            strerror(errno));
		(void)unlink(st->tmp_path);
		return PRESENCE_ERR_IO;
	}
	dir = open(st->dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0 || fsync(dir) != 0) {
		/* The new file is in place but its name may not be durable yet: the save does not
		 * count as complete (the next one will). */
		store_error(err, err_size, "cannot sync directory %s after renaming %s: %s",
		            st->dir_path, st->path, strerror(errno));
		if (dir >= 0) {
			(void)close(dir);
		}
		return PRESENCE_ERR_IO;
	}
	(void)close(dir);
	return PRESENCE_OK;
}

enum presence_err presence_store_save_step(struct presence_store *st, struct presence_registry *reg,
                                           size_t max_users, size_t max_bytes, bool *done,
                                           char *err, size_t err_size)
{
	bool with_state = presence_registry_keep_state(reg);
	size_t visited = 0;
	size_t bytes = 0;
	enum presence_err rc;

	*done = false;
	if (st->file == NULL) {
		return PRESENCE_OK;
	}
	if (!st->started) {
		st->cursor = presence_registry_user_first(reg);
		st->started = true;
	}
	while (st->cursor != NULL && (visited == 0 || (visited < max_users && bytes < max_bytes))) {
		struct presence_user *user = st->cursor;
		struct presence_user_record rec;

		visited++;
		presence_registry_user_record(user, &rec);
		if (rec.seq > 0) {
			rc = write_record(st, &rec, with_state, &bytes);
			if (rc == PRESENCE_ERR_NOMEM) {
				store_error(err, err_size, "out of memory writing %s",
				            st->tmp_path);
			} else if (rc != PRESENCE_OK) {
				store_error(err, err_size, "cannot write %s: %s", st->tmp_path,
				            strerror(errno));
			}
			if (rc != PRESENCE_OK) {
				save_failed(st, reg);
				return rc;
			}
			presence_registry_user_saved(reg, user);
			st->written++;
		}
		st->cursor = presence_registry_user_next(user);
	}
	if (st->cursor != NULL) {
		return PRESENCE_OK;
	}
	rc = save_finish(st, err, err_size);
	if (rc != PRESENCE_OK) {
		save_failed(st, reg);
		return rc;
	}
	presence_registry_save_done(reg);
	st->saved_users = st->written;
	store_discard(st);
	*done = true;
	return PRESENCE_OK;
}

enum presence_err presence_store_save_all(struct presence_store *st, struct presence_registry *reg,
                                          bool clean, char *err, size_t err_size)
{
	enum presence_err rc = presence_store_save_begin(st, reg, clean, err, err_size);
	bool done = false;

	if (rc != PRESENCE_OK) {
		return rc;
	}
	rc = presence_store_save_step(st, reg, SIZE_MAX, SIZE_MAX, &done, err, err_size);
	if (rc == PRESENCE_OK && !done) {
		/* Cannot happen: an unbounded step writes every user. */
		presence_store_save_abort(st, reg);
		store_error(err, err_size, "internal error: the save of %s did not finish",
		            st->path);
		return PRESENCE_ERR_IO;
	}
	return rc;
}

size_t presence_store_saved_users(const struct presence_store *st)
{
	return st->saved_users;
}
