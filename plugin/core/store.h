/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The state file: what survives a broker restart (each user's last document, and its state with
 * keep_state), written as a snapshot and a journal at a cost proportional to what changed.
 *
 * Every state of the files a crash can leave is readable, and seq never goes backwards: the
 * store is the registry's guard (no document more than the margin beyond the seq durably
 * recorded). A file that is not one the writer produces is refused with a reason. All file
 * errors are PRESENCE_ERR_IO with a message naming the path and the system's reason; nothing
 * here logs. The files and why they are safe: docs/DESIGN.md, "The state file".
 */
#ifndef PRESENCE_STORE_H
#define PRESENCE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "presence_err.h"
#include "registry.h"

/* The value of "format" in every snapshot, and in every journal. */
#define PRESENCE_STORE_FORMAT "mosquitto-presence-state"
#define PRESENCE_STORE_JOURNAL_FORMAT "mosquitto-presence-journal"
/* The version this code writes (it reads 1 and 2). */
#define PRESENCE_STORE_VERSION 2
/* How many documents a user may publish beyond the seq durably recorded for it. */
#define PRESENCE_STORE_SEQ_MARGIN 1000
/* What one step of a flush or of a compaction writes at most (the usual bounds). */
#define PRESENCE_STORE_STEP_USERS 2000
#define PRESENCE_STORE_STEP_BYTES (1024 * 1024)
/* A journal smaller than this is never compacted. */
#define PRESENCE_STORE_COMPACT_MIN (1024 * 1024)
/* The longest line a reader accepts. */
#define PRESENCE_STORE_LINE_MAX (16 * 1024 * 1024)
/* Size of the message buffers callers pass; every message fits (paths are truncated). */
#define PRESENCE_STORE_ERR_SIZE 1024

struct presence_store;

/* What presence_store_load found. */
struct presence_store_loaded {
	/* Whether any of the files existed. */
	bool found;
	/* Whether the last run stopped cleanly. */
	bool clean;
	/* The format version of the snapshot (0: none). */
	int version;
	/* Users restored, and how many of them are recorded as available. */
	size_t users;
	size_t available;
	/* The seq offset applied after an unclean stop (0 after a clean one). */
	uint64_t seq_shift;
};

/* Returns a store for the state file at path (copied) whose guard allows margin documents
 * beyond the recorded seq (0: no guard, as in cluster mode), or NULL when allocation fails.
 * Free with presence_store_free. */
struct presence_store *presence_store_new(const char *path, uint64_t margin);

/* Closes the files (abandoning a compaction in progress) and frees st; NULL is allowed. Free the
 * store before its registry. */
void presence_store_free(struct presence_store *st);

/* Makes the next presence_store_compact_step begin a compaction, whatever the sizes. */
void presence_store_request_compaction(struct presence_store *st);

/* The path of the snapshot and of the journal. */
const char *presence_store_path(const struct presence_store *st);
const char *presence_store_journal_path(const struct presence_store *st);

/* Checks that the directory of the files exists. Returns PRESENCE_OK, or PRESENCE_ERR_IO with a
 * message in err (err_size bytes). */
enum presence_err presence_store_check_dir(const struct presence_store *st, char *err,
                                           size_t err_size);

/* Reads the files into reg (no users yet; keep_state set as it will run) and sets its seq floor,
 * adding the margin to every seq after an unclean stop (a journal not ending in a stop). Restored
 * users are on the dirty list. Returns PRESENCE_OK with *out filled (found false when there is no
 * file: nothing changes); PRESENCE_ERR_INVAL when a file is not a valid state file or journal,
 * PRESENCE_ERR_IO when one cannot be read, each with the reason in err; PRESENCE_ERR_NOMEM (also
 * when the system ran out of descriptors). On error reg may hold some users: discard it. */
enum presence_err presence_store_load(struct presence_store *st, struct presence_registry *reg,
                                      struct presence_store_loaded *out, char *err,
                                      size_t err_size);

/* Renames every file of the state file that exists to "<file>.corrupt-<UTC time>" (with "-2",
 * ... appended when that exists), now being the Unix time in seconds. Returns PRESENCE_OK with
 * the snapshot's new path (or the first journal's, when there was no snapshot) in aside
 * (aside_size bytes), or PRESENCE_ERR_IO with the reason in err. */
enum presence_err presence_store_move_aside(struct presence_store *st, int64_t now, char *aside,
                                            size_t aside_size, char *err, size_t err_size);

/* After presence_store_load (or a move aside), before anything is published: makes the files say
 * that the broker runs, durably. Appends the start record to the journal, or, when the files
 * are not in the shape appending needs (no journal, version 1, a compaction left unfinished,
 * many starts since the last compaction), writes a new snapshot and journal of everything in reg
 * at once. Returns PRESENCE_OK, or PRESENCE_ERR_IO / PRESENCE_ERR_NOMEM with a message in err:
 * the broker should then not run (seq could go backwards after the next restart). */
enum presence_err presence_store_start(struct presence_store *st, struct presence_registry *reg,
                                       char *err, size_t err_size);

/* The guard (registry.h): whether user may publish a document numbered seq. arg is the store. */
bool presence_store_guard_allows(void *arg, const struct presence_user *user, uint64_t seq);

/* To be called right before user's last document changes (before its next document is
 * published, or the cluster's is adopted): remembers what is recorded of it, so the next flush
 * writes it. Returns PRESENCE_OK with *added telling whether user was not remembered yet, or
 * PRESENCE_ERR_NOMEM (nothing changed: do not change the document). */
enum presence_err presence_store_note_change(struct presence_store *st,
                                             const struct presence_user *user, bool *added);

/* Undoes a note_change that added user when the document did not change after all (its publish
 * failed): the store holds no pointer to a user the registry might free. */
void presence_store_note_cancel(struct presence_store *st, const struct presence_user *user);

/* To be called when user leaves the registry for good (forgotten): the next flush records that
 * (with its seq, which raises the floor). Cannot fail: without memory for the record, the next
 * compaction leaves the user out instead. */
void presence_store_note_forget(struct presence_store *st, const struct presence_user *user);

/* Whether a flush has anything to write (changed or forgotten users, a higher floor). */
bool presence_store_unsaved(const struct presence_store *st, const struct presence_registry *reg);

/* Appends what changed to the journal: at most max_users users and about max_bytes bytes (at
 * least one user), fdatasync()ed; sets *done when nothing is left. Whatever it wrote counts as
 * recorded, and the registry's held users are released. Returns PRESENCE_OK, or PRESENCE_ERR_IO /
 * PRESENCE_ERR_NOMEM with a message in err (nothing counts as written; retry later). */
enum presence_err presence_store_flush_step(struct presence_store *st,
                                            struct presence_registry *reg, size_t max_users,
                                            size_t max_bytes, bool *done, char *err,
                                            size_t err_size);

/* Begins a compaction when one is due, and continues the one in progress by one step (at most
 * max_users users or max_bytes bytes); the last step puts the new snapshot in place. Sets
 * *finished when a compaction completed in this call. Returns PRESENCE_OK, or PRESENCE_ERR_IO /
 * PRESENCE_ERR_NOMEM with a message in err (the compaction is abandoned and tried again later;
 * the files stay valid). */
enum presence_err presence_store_compact_step(struct presence_store *st,
                                              struct presence_registry *reg, size_t max_users,
                                              size_t max_bytes, bool *finished, char *err,
                                              size_t err_size);

/* A clean stop: abandons a compaction in progress, writes everything that changed and the stop
 * record. Returns PRESENCE_OK, or PRESENCE_ERR_IO / PRESENCE_ERR_NOMEM with a message in err (the
 * next start then treats this stop as a crash). */
enum presence_err presence_store_stop(struct presence_store *st, struct presence_registry *reg,
                                      char *err, size_t err_size);

/* Users the last successful flush step wrote. */
size_t presence_store_flushed_users(const struct presence_store *st);

/* Sizes, for logs: the snapshot's users, the journal bytes (both journals during a
 * compaction). */
size_t presence_store_snapshot_users(const struct presence_store *st);
uint64_t presence_store_journal_bytes(const struct presence_store *st);

#endif
