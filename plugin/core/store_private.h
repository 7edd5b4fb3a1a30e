/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * What the files of the state file module share (store.c, store_files.c, store_load.c): the
 * store itself, the record buffer, and the helpers more than one of them calls. Nothing outside
 * plugin/core/store*.c includes this header.
 */
#ifndef PRESENCE_STORE_PRIVATE_H
#define PRESENCE_STORE_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uthash.h>

#include "presence_err.h"
#include "registry.h"
#include "store.h"

/* A user changed since the last flush. */
struct unsaved {
	/* The hash key. */
	const struct presence_user *user;
	/* The seq durably recorded for it when it was added. */
	uint64_t recorded;
	UT_hash_handle hh;
};

/* A growing byte buffer; failed is set (and nothing more added) once memory ran out. */
struct presence__store_buf {
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
	struct presence__store_buf forgets;
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

/* Writes a formatted message into err (err_size bytes, may be 0). */
void presence__store_error(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Closes and removes the temporary snapshot of a compaction in progress and closes its cursor
 * (in reg, or in the registry it was opened in when reg is NULL). */
void presence__store_compaction_abandon(struct presence_store *st, struct presence_registry *reg);

/* Appending to a record buffer (b->failed is set, and nothing more added, once memory ran
 * out): n bytes of s, a C string, a decimal number, s as a JSON string escaped as cJSON escapes
 * it (as documents are), and the record of user's last document, keys in the documented order,
 * then a newline. */
void presence__store_buf_add(struct presence__store_buf *b, const char *s, size_t n);
void presence__store_buf_str(struct presence__store_buf *b, const char *s);
void presence__store_buf_u64(struct presence__store_buf *b, uint64_t value);
void presence__store_buf_json_string(struct presence__store_buf *b, const char *s);
void presence__store_buf_user_record(struct presence__store_buf *b,
                                     const struct presence_user *user, bool with_state);

/* Whether user has a document (a record to write). */
bool presence__store_has_document(const struct presence_user *user);

/* Returns true for the errors that say the system is short of resources right now. */
bool presence__store_transient_errno(int e);

/* fsyncs the directory of the files. Returns PRESENCE_OK or PRESENCE_ERR_IO (message in err). */
enum presence_err presence__store_sync_dir(const struct presence_store *st, char *err,
                                           size_t err_size);

/* Writes a new journal at target through the journal's temporary file: the header of
 * generation, then extra (may be NULL), fsynced and renamed into place. Returns PRESENCE_OK with
 * *out (if not NULL) an append descriptor of it and *len its length; PRESENCE_ERR_IO or
 * PRESENCE_ERR_NOMEM with a message in err, target untouched. */
enum presence_err presence__store_journal_create(struct presence_store *st, const char *target,
                                                 uint64_t generation, const char *extra, int *out,
                                                 uint64_t *len, char *err, size_t err_size);

/* Appends data to the journal in use and fdatasync()s it. On failure (PRESENCE_ERR_IO, message
 * in err) cuts the journal back to its length before (later, if that fails now). */
enum presence_err presence__store_journal_append(struct presence_store *st, const char *data,
                                                 size_t len, char *err, size_t err_size);

/* Writing a snapshot (a compaction's, or a rewrite's at start), each returning PRESENCE_OK, or
 * PRESENCE_ERR_IO / PRESENCE_ERR_NOMEM with a message in err (the caller abandons the
 * snapshot). snapshot_begin creates the temporary snapshot of generation with its header and
 * positions the cursor; snapshot_write_users writes the records of up to max_users users from
 * the cursor (about max_bytes bytes), setting *end when the cursor is exhausted; snapshot_finish
 * writes the end record, fsyncs, and renames the temporary snapshot over the snapshot. */
enum presence_err presence__store_snapshot_begin(struct presence_store *st,
                                                 struct presence_registry *reg, uint64_t generation,
                                                 char *err, size_t err_size);
enum presence_err presence__store_snapshot_write_users(struct presence_store *st,
                                                       struct presence_registry *reg,
                                                       size_t max_users, size_t max_bytes,
                                                       bool *end, char *err, size_t err_size);
enum presence_err presence__store_snapshot_finish(struct presence_store *st, char *err,
                                                  size_t err_size);

#endif
