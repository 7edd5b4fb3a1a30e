/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Reading the state file (presence_store_load): every line is validated before it changes the
 * registry, and a file that is not one the writer produces is refused with a reason.
 *
 * Each file is streamed line by line (a line is parsed alone with cJSON), so memory does not
 * grow with the file. A version 1 file (one JSON document) is parsed whole, as it was written.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "store.h"
#include "store_private.h"
#include "utf8.h"

/* The largest integer a JSON number (a double in cJSON) holds exactly: 2^53 - 1. */
#define EXACT_INTEGER_MAX 9007199254740991.0

/* The reader's chunk. */
#define READ_CHUNK (64 * 1024)

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
		presence__store_error(err, err_size, "%s is not an object", where);
		return false;
	}
	if (!cJSON_IsString(name) || name->valuestring[0] == '\0' ||
	    !presence_utf8_valid(name->valuestring, strlen(name->valuestring))) {
		presence__store_error(err, err_size,
		                      "%s: \"username\" must be a non-empty UTF-8 string", where);
		return false;
	}
	if (!json_integer(member(user, "seq"), 0, EXACT_INTEGER_MAX, &number)) {
		presence__store_error(err, err_size,
		                      "%s: \"seq\" must be an integer from 0 to 9007199254740991",
		                      where);
		return false;
	}
	if (!json_integer(member(user, "since"), -EXACT_INTEGER_MAX, EXACT_INTEGER_MAX, &number)) {
		presence__store_error(err, err_size, "%s: \"since\" must be an integer", where);
		return false;
	}
	if (!cJSON_IsBool(member(user, "available"))) {
		presence__store_error(err, err_size, "%s: \"available\" must be true or false",
		                      where);
		return false;
	}
	state = member(user, "state");
	if (state != NULL && !cJSON_IsObject(state)) {
		presence__store_error(err, err_size, "%s: \"state\" must be a JSON object", where);
		return false;
	}
	if (member(user, "privacy") != NULL && !cJSON_IsObject(member(user, "privacy"))) {
		presence__store_error(err, err_size, "%s: \"privacy\" must be a JSON object",
		                      where);
		return false;
	}
	return true;
}

/* Gives the user named name (just restored) the privacy choice of its record (absent:
 * everyone; a record older than the user's current one left it alone). */
static enum presence_err restore_privacy(struct presence_registry *reg, const char *name,
                                         uint64_t seq, const cJSON *privacy, const char *where,
                                         char *err, size_t err_size)
{
	struct presence_user *user = presence_registry_user_find(reg, name);
	struct presence_privacy *choice = NULL;
	char reason[PRESENCE_VISIBILITY_REASON_SIZE];
	enum presence_err rc = PRESENCE_OK;
	char *text;

	if (user == NULL || presence_user_seq(user) != seq) {
		return PRESENCE_OK;
	}
	if (privacy != NULL) {
		text = cJSON_PrintUnformatted(privacy);
		if (text == NULL) {
			return PRESENCE_ERR_NOMEM;
		}
		rc = presence_privacy_parse(text, strlen(text), &choice, reason, sizeof(reason));
		cJSON_free(text);
		if (rc == PRESENCE_ERR_INVAL || rc == PRESENCE_ERR_TOO_LARGE) {
			presence__store_error(err, err_size, "%s: \"privacy\": %s", where, reason);
			return PRESENCE_ERR_INVAL;
		}
		if (rc != PRESENCE_OK) {
			return rc;
		}
	}
	presence_registry_user_set_privacy(user, choice);
	return PRESENCE_OK;
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

	if (rc == PRESENCE_OK) {
		rc = restore_privacy(reg, name, seq, member(user, "privacy"), where, err, err_size);
		if (rc == PRESENCE_ERR_INVAL) {
			return rc;
		}
	}
	if (rc == PRESENCE_ERR_NOMEM) {
		presence__store_error(err, err_size, "out of memory restoring %s", where);
	} else if (rc != PRESENCE_OK) {
		presence__store_error(
		    err, err_size,
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

		presence__store_error(err, err_size, "cannot open %s: %s", path, strerror(e));
		return presence__store_transient_errno(e) ? PRESENCE_ERR_NOMEM : PRESENCE_ERR_IO;
	}
	if (fstat(fd, &sb) == 0 && sb.st_size > 0 && (uint64_t)sb.st_size < SIZE_MAX / 2) {
		cap = (size_t)sb.st_size + 1;
	}
	buf = malloc(cap);
	if (buf == NULL) {
		presence__store_error(err, err_size, "out of memory reading %s", path);
		(void)close(fd);
		return PRESENCE_ERR_NOMEM;
	}
	for (;;) {
		ssize_t n;

		if (used + 1 >= cap) {
			char *bigger = cap < SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;

			if (bigger == NULL) {
				presence__store_error(err, err_size, "out of memory reading %s",
				                      path);
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

			presence__store_error(err, err_size, "cannot read %s: %s", path,
			                      strerror(e));
			free(buf);
			(void)close(fd);
			return presence__store_transient_errno(e) ? PRESENCE_ERR_NOMEM
			                                          : PRESENCE_ERR_IO;
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
		presence__store_error(err, err_size, "it is empty");
	} else if (at >= len) {
		presence__store_error(
		    err, err_size,
		    "it is cut short: the JSON document ends after %zu bytes, in the middle of "
		    "a value",
		    len);
	} else {
		presence__store_error(
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
		presence__store_error(err, err_size, "it is not a JSON object");
		return false;
	}
	if (!cJSON_IsString(format) || strcmp(format->valuestring, PRESENCE_STORE_FORMAT) != 0) {
		presence__store_error(
		    err, err_size,
		    "it is not a mosquitto-presence state file (\"format\" is not \"%s\")",
		    PRESENCE_STORE_FORMAT);
		return false;
	}
	if (!json_integer(version, 0, EXACT_INTEGER_MAX, &number) || number != 1) {
		presence__store_error(
		    err, err_size, "its \"version\" is not 1 or 2, the versions this plugin reads");
		return false;
	}
	if (!cJSON_IsBool(member(root, "clean"))) {
		presence__store_error(err, err_size, "\"clean\" must be true or false");
		return false;
	}
	if (!cJSON_IsArray(users)) {
		presence__store_error(err, err_size, "\"users\" must be an array");
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
			presence__store_error(err, err_size, "%s: user \"%.64s\" appears twice",
			                      where, name);
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
		presence__store_error(err, err_size, "cannot open %s: %s", path, strerror(e));
		return presence__store_transient_errno(e) ? PRESENCE_ERR_NOMEM : PRESENCE_ERR_IO;
	}
	if (fstat(r->fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		presence__store_error(err, err_size, "%s is not a regular file", path);
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
		presence__store_error(err, err_size, "out of memory reading %s", path);
		return PRESENCE_ERR_NOMEM;
	case LINE_TOO_LONG:
		presence__store_error(err, err_size,
		                      "a line of %s (at byte %llu) is longer than %d bytes", path,
		                      (unsigned long long)offset, PRESENCE_STORE_LINE_MAX);
		return PRESENCE_ERR_INVAL;
	default:
		presence__store_error(err, err_size, "cannot read %s: %s", path, strerror(errno));
		return presence__store_transient_errno(errno) ? PRESENCE_ERR_NOMEM
		                                              : PRESENCE_ERR_IO;
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
		presence__store_error(
		    err, err_size,
		    "%s is not a mosquitto-presence file (its first line's \"format\" is not "
		    "\"%s\")",
		    path, format);
		return false;
	}
	if (!json_integer(member(header, "version"), 0, EXACT_INTEGER_MAX, &number) ||
	    number != PRESENCE_STORE_VERSION) {
		presence__store_error(err, err_size,
		                      "%s: its \"version\" is not %d, the version of this layout",
		                      path, PRESENCE_STORE_VERSION);
		return false;
	}
	if (!json_integer(member(header, "generation"), 0, EXACT_INTEGER_MAX, &number)) {
		presence__store_error(err, err_size, "%s: \"generation\" must be an integer", path);
		return false;
	}
	*generation = (uint64_t)number;
	if (floor != NULL) {
		if (!json_integer(member(header, "seq_floor"), 0, EXACT_INTEGER_MAX, &number)) {
			presence__store_error(err, err_size, "%s: \"seq_floor\" must be an integer",
			                      path);
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
			presence__store_error(
			    err, err_size,
			    "%s: a \"forget\" record needs a user name and its \"seq\"", where);
			return PRESENCE_ERR_INVAL;
		}
		(void)presence_registry_user_drop(reg, item->valuestring, (uint64_t)number);
		presence_registry_set_seq_floor(reg, (uint64_t)number);
		return PRESENCE_OK;
	}
	if ((item = member(rec, "seq_floor")) != NULL) {
		if (!json_integer(item, 0, EXACT_INTEGER_MAX, &number)) {
			presence__store_error(err, err_size, "%s: \"seq_floor\" must be an integer",
			                      where);
			return PRESENCE_ERR_INVAL;
		}
		presence_registry_set_seq_floor(reg, (uint64_t)number);
		return PRESENCE_OK;
	}
	if (cJSON_IsTrue(member(rec, "start"))) {
		if (!json_integer(member(rec, "seq_shift"), 0, EXACT_INTEGER_MAX, &number)) {
			presence__store_error(err, err_size, "%s: \"seq_shift\" must be an integer",
			                      where);
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
	presence__store_error(err, err_size, "%s is not a record of a state file", where);
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
		presence__store_error(err, err_size, "%s does not start with a journal header",
		                      path);
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
			presence__store_error(err, err_size, "%s disappeared while it was read",
			                      path);
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
			presence__store_error(
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
			presence__store_error(err, err_size,
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
				presence__store_error(
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
		presence__store_error(err, err_size, "%s is cut short: it has no end record", path);
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
