/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The state file: what survives a broker restart.
 *
 * Mosquitto 2.0 raises no DISCONNECT at shutdown and loses what a plugin publishes from its
 * cleanup function, while with `persistence true` it restores retained messages at startup. So
 * the plugin records, for every user, the values of its last document (seq, since, available
 * and, with keep_state, the state) in a file of its own, and at the next start publishes an
 * "available":false document for every user the file shows as available.
 *
 * The file is one JSON document, one user per line:
 *
 *   {"format":"mosquitto-presence-state","version":1,"clean":false,"users":[
 *   {"username":"alice","seq":7,"since":1764265200123,"available":true,"state":{}},
 *   ...
 *   ]}
 *
 * "clean" is true only in a file written at a clean stop (mosquitto_plugin_cleanup); every other
 * save writes false. "state" is written only with keep_state, and read whenever present.
 *
 * Writing. A save writes "<path>.tmp", fsyncs it, renames it over <path> and fsyncs the
 * directory. rename() replaces the name atomically, so whenever the machine or the broker dies,
 * <path> is either the complete old file or the complete new one, never a mix or a torn
 * write: the fsync before the rename makes sure the new file's data is on disk before its name
 * is, and the fsync of the directory makes the rename itself durable. A save may run in steps
 * (presence_store_save_step, each writing a bounded number of users) so that a large registry
 * never blocks the broker loop for long; users are written in creation order through a cursor
 * that stays valid because users are never removed and new ones are added at the end.
 *
 * Sequence numbers never go backwards across restarts. After a clean stop each user continues
 * at its recorded seq + 1. After a crash the last changes may not have been saved, so the
 * registry (with its seq margin set to the margin below) never lets a user publish more than
 * PRESENCE_STORE_SEQ_MARGIN documents beyond the seq recorded in the last completed save (a
 * user not in it counts as recorded with 0): a document that would is held until a save
 * completes. An unclean start then continues every recorded user at recorded seq + margin + 1,
 * and every user not in the file at margin + 1, which is more than anything published before
 * the crash. The file on disk must never claim a clean stop while the broker runs, so the
 * adapter rewrites it (clean:false) at startup before publishing anything.
 *
 * Reading. A missing file is a first start. A file that cannot be read (other than for lack of
 * memory or descriptors) or is not a complete, well-formed state file is reported with a
 * reason; the adapter moves it aside (presence_store_move_aside) rather than overwrite it.
 * cJSON reports an allocation failure inside its parser exactly like a syntax error, so a file
 * read while memory is exhausted is reported as not JSON; it is then moved aside, not lost.
 *
 * All file errors are reported as PRESENCE_ERR_IO with a message naming the path and the
 * system's reason; nothing here logs.
 */
#ifndef PRESENCE_STORE_H
#define PRESENCE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "presence_err.h"
#include "registry.h"

/* The value of "format" in every state file. */
#define PRESENCE_STORE_FORMAT "mosquitto-presence-state"
/* The file format version this code writes and reads. */
#define PRESENCE_STORE_VERSION 1
/* How many documents a user may publish beyond the seq recorded in the last completed save. */
#define PRESENCE_STORE_SEQ_MARGIN 1000
/* What one step of a save writes at most (presence_store_save_step's usual bounds). */
#define PRESENCE_STORE_STEP_USERS 2000
#define PRESENCE_STORE_STEP_BYTES (1024 * 1024)
/* Size of the message buffers callers pass; every message fits (paths are truncated). */
#define PRESENCE_STORE_ERR_SIZE 1024

struct presence_store;

/* What presence_store_load found. */
struct presence_store_loaded {
	/* Whether the file existed. */
	bool found;
	/* Whether it was written at a clean stop. */
	bool clean;
	/* Number of users restored. */
	size_t users;
	/* Number of them recorded as available. */
	size_t available;
};

/* Returns a store for the state file at path (copied), or NULL when allocation fails. Free with
 * presence_store_free. */
struct presence_store *presence_store_new(const char *path);

/* Abandons a save in progress (removing the temporary file) and frees st; NULL is allowed. The
 * registry is not told: call presence_store_save_abort first if it lives on. */
void presence_store_free(struct presence_store *st);

/* The path of the state file and of the temporary file a save writes. */
const char *presence_store_path(const struct presence_store *st);
const char *presence_store_tmp_path(const struct presence_store *st);

/* Checks that the directory the state file goes into exists. Returns PRESENCE_OK, or
 * PRESENCE_ERR_IO with a message in err (err_size bytes). */
enum presence_err presence_store_check_dir(const struct presence_store *st, char *err,
                                           size_t err_size);

/* Reads the state file into reg, which must have no users yet and the seq margin it will run
 * with, and sets the seq each user continues from (see above): recorded seq after a clean
 * stop, recorded seq + margin otherwise, and presence_registry_set_new_user_seq(margin) after
 * an unclean stop. Restored users are on the dirty list (presence_registry_user_restore).
 * Returns PRESENCE_OK with *out filled (found false for a missing file: nothing changes);
 * PRESENCE_ERR_INVAL when the file is not a valid state file, PRESENCE_ERR_IO when it cannot
 * be read, each with the reason in err; PRESENCE_ERR_NOMEM (also when the system ran out of
 * descriptors), with a message in err. On error reg may hold some of the file's users:
 * discard it. */
enum presence_err presence_store_load(struct presence_store *st, struct presence_registry *reg,
                                      struct presence_store_loaded *out, char *err,
                                      size_t err_size);

/* Renames the state file to "<path>.corrupt-<UTC time>" (with "-2", "-3", ... appended when
 * that exists), now being the current Unix time in seconds. Returns PRESENCE_OK with the new
 * path in aside (aside_size bytes), or PRESENCE_ERR_IO with the reason in err (the file is
 * then where it was). */
enum presence_err presence_store_move_aside(struct presence_store *st, int64_t now, char *aside,
                                            size_t aside_size, char *err, size_t err_size);

/* Whether a save is in progress. */
bool presence_store_saving(const struct presence_store *st);

/* Starts a save of reg: abandons one in progress, creates the temporary file, writes the
 * header with "clean":clean and starts a save generation (presence_registry_save_begin).
 * Returns PRESENCE_OK, or PRESENCE_ERR_IO / PRESENCE_ERR_NOMEM with a message in err, in which
 * case nothing is in progress, no temporary file is left and the registry's unsaved flag is
 * set. */
enum presence_err presence_store_save_begin(struct presence_store *st,
                                            struct presence_registry *reg, bool clean, char *err,
                                            size_t err_size);

/* Continues the save in progress: writes the next users (those with seq > 0) until max_users
 * users were visited or max_bytes bytes written, whichever comes first (at least one user);
 * when every user is written, completes the file (fsync, rename, directory fsync), tells the
 * registry (presence_registry_save_done) and sets *done. Returns PRESENCE_OK, or
 * PRESENCE_ERR_IO / PRESENCE_ERR_NOMEM with a message in err, in which case the save is
 * abandoned as by presence_store_save_abort. With no save in progress, does nothing. */
enum presence_err presence_store_save_step(struct presence_store *st, struct presence_registry *reg,
                                           size_t max_users, size_t max_bytes, bool *done,
                                           char *err, size_t err_size);

/* Abandons the save in progress, if any: closes and removes the temporary file and tells the
 * registry (presence_registry_save_failed). The state file is untouched. */
void presence_store_save_abort(struct presence_store *st, struct presence_registry *reg);

/* A whole save in one call: save_begin and save_step without bounds. Same results. */
enum presence_err presence_store_save_all(struct presence_store *st, struct presence_registry *reg,
                                          bool clean, char *err, size_t err_size);

/* Number of users the last completed save wrote. */
size_t presence_store_saved_users(const struct presence_store *st);

#endif
