/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The state file: what survives a broker restart, written at a cost proportional to what
 * changed.
 *
 * Mosquitto raises no DISCONNECT at shutdown and restores retained messages at startup, so the
 * plugin records each user's last document (seq, since, available and, with keep_state, the
 * state) and at the next start corrects every user recorded as available.
 *
 * Files (JSON Lines, one record per line; docs/DESIGN.md has the details):
 *   <path>               the snapshot: a header {"format":"mosquitto-presence-state",
 *                        "version":2,"generation":G,"seq_floor":F}, one user record per line,
 *                        and a trailer {"end":true,"users":N};
 *   <path>.journal       what changed since: a header {"format":"mosquitto-presence-journal",
 *                        "version":2,"generation":G}, then user records, {"forget":name,"seq":s},
 *                        {"seq_floor":F}, {"start":true,"seq_shift":n} and {"stop":true};
 *   <path>.journal.next  during a compaction, the journal of generation G + 1.
 * A user record is {"username":...,"seq":...,"since":...,"available":...[,"state":{...}]}.
 *
 * Writing. Changes are appended to the journal about once a second (presence_store_flush_step):
 * each user changed since the last flush once, with its current values, plus forgotten users and
 * the seq floor; one write() and one fdatasync() per step. When the journal has grown to twice
 * the snapshot (at least PRESENCE_STORE_COMPACT_MIN bytes) a compaction writes a new snapshot in
 * bounded steps while changes go to the next journal; the snapshot is written to "<path>.tmp",
 * fsynced and renamed, and only then is the old journal removed and the next one renamed over
 * it. Every state of the files a crash can leave is readable: a reader replays, over the
 * snapshot of generation G, the journals of generation G and above, in order, a record replacing
 * a user only when its seq is at least the user's. Only the last line of a journal can be cut
 * short by a crash; it is ignored (and cut off at the next start).
 *
 * Sequence numbers never go backwards. A clean stop appends {"stop":true}; a start appends
 * {"start":true,...} before anything is published, so a crash is recognised by a journal that
 * does not end in a stop. After one, every user continues at its recorded seq + margin and the
 * floor (where new users start) rises by the margin too, recorded as "seq_shift". The store is
 * the registry's guard (registry.h): no user publishes a document whose seq exceeds by more than
 * the margin the seq durably recorded for it (a user not recorded: the durable floor); such a
 * document waits for the next flush.
 *
 * Reading refuses a file that is not one the writer produces (a reason is given; the adapter
 * moves the files aside rather than overwrite them). Version 1 files (one JSON document) are read
 * and rewritten as version 2 at the next start.
 *
 * All file errors are PRESENCE_ERR_IO with a message naming the path and the system's reason;
 * nothing here logs.
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
 * applying the margin after an unclean stop (see above). Restored users are on the dirty list.
 * Returns PRESENCE_OK with *out filled (found false when there is no file: nothing changes);
 * PRESENCE_ERR_INVAL when a file is not a valid state file or journal, PRESENCE_ERR_IO when one
 * cannot be read, each with the reason in err; PRESENCE_ERR_NOMEM (also when the system ran out
 * of descriptors). On error reg may hold some users: discard it. */
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
