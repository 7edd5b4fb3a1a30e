/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Sessions and users: who is connected, whose presence document is due.
 *
 * A session is one MQTT connection, identified by the broker's client pointer (an opaque
 * const void * here). Mosquitto 2.0 has no "connection accepted" event, so a session starts
 * PENDING when its login is attempted and becomes ACTIVE at the end of the broker loop
 * iteration, unless it was disconnected first (a refused login is disconnected within the same
 * iteration). Only ACTIVE sessions count towards their user. A disconnect for a client pointer
 * the registry does not know is ignored: Mosquitto reports disconnects for sockets that never
 * logged in, for refused logins and a second one for a resumed persistent session.
 *
 * A user is available while it has at least one ACTIVE session. Every change to a user (its
 * sessions, its state) puts it on the dirty list; at the end of the loop iteration the adapter
 * takes each dirty user once and asks whether a document is due: one is due only when
 * availability, the session count or the state differs from the user's last document, so
 * changes within one iteration are coalesced and a change undone within it publishes nothing.
 *
 * Offline delay: with a delay set, a user whose last session goes is not published as
 * unavailable at once. It waits on a timer queue; when a session returns within the delay it
 * leaves the queue and nothing is published about the gap (a changed session count still is),
 * otherwise presence_registry_offline_expire puts it back on the dirty list once the delay has
 * passed and its unavailable document says since = the wall-clock time the last session left.
 * The delay is the same for every user, so deadlines are reached in the order users were
 * queued: the queue is a FIFO list checked from its head, O(1) per user. Only users that wait
 * out the delay (or whose unavailable document, due when it ended, is not published yet) have
 * the record of their deadline and of when they left: it is allocated when the last session
 * goes and freed when a session returns or that document is published. Should that allocation
 * fail, the user is published as unavailable at once, as without a delay.
 *
 * State: by default a user's state is cleared when the user actually becomes unavailable (not
 * while waiting out the delay, so a quick reconnect keeps it). With keep_state it is kept while
 * the user is offline, and shown in the documents.
 *
 * The state file (store.h) records each user's last document. For it the registry keeps save
 * generations: every save gets a number, and each user remembers in which save it was last
 * written and with which seq, so the seq recorded in the last COMPLETED save is known per user
 * in O(1) without scanning anything when a save completes. With a seq margin set, a document
 * whose seq would exceed that recorded seq by more than the margin is held (the user waits on
 * the held list) until a later save completes; see store.h for why. Saves are numbered with 32
 * bits (a save a second wraps after 136 years), and a user keeps the low 32 bits of the seqs
 * it was saved with: they read back exactly while the user's seq is less than 2^32 past them,
 * which the seq margin guarantees whenever the recorded seq is used.
 *
 * The last document: a user keeps its values (seq, since, available, sessions) and, for its
 * state, the state's mark (state.h): the state text a write replaces after a document is kept
 * until the next document is published, so the last published state costs nothing while it is
 * the live one.
 *
 * Users are kept after they go offline (their seq must keep counting) but hold only their name,
 * topic, counters and (with keep_state) state then: one allocation of about 140 bytes each (a
 * session is one of about 80 bytes). Every operation is O(1) in the number of users and sessions
 * (hash lookups, arrays of pending clients and held users, and intrusive queues); nothing scans
 * all users.
 */
#ifndef PRESENCE_REGISTRY_H
#define PRESENCE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "document.h"
#include "presence_err.h"
#include "state.h"

struct presence_registry;
struct presence_user;

/* The clocks the registry reads, in milliseconds. monotonic_ms measures the offline delay (it
 * never jumps); wall_ms is the Unix-epoch time written into "since". arg is passed to both. */
struct presence_clock {
	int64_t (*monotonic_ms)(void *arg);
	int64_t (*wall_ms)(void *arg);
	void *arg;
};

/* Returns a new, empty registry whose users' document topics are "<prefix>/<encoded user>", or
 * NULL when allocation fails. prefix is copied. Free with presence_registry_free. */
struct presence_registry *presence_registry_new(const char *prefix);

/* Frees the registry, every session and every user; NULL is allowed. */
void presence_registry_free(struct presence_registry *reg);

/* Settings; each takes effect for what happens after the call. Defaults: the system clocks
 * (CLOCK_MONOTONIC, CLOCK_REALTIME), no offline delay, state cleared when the user goes
 * unavailable, no seq margin, new users starting at seq 1. */

/* Uses clock (copied) instead of the system clocks; NULL restores the system clocks. */
void presence_registry_set_clock(struct presence_registry *reg, const struct presence_clock *clock);

/* Sets the offline delay in milliseconds (0 = publish unavailability at once). */
void presence_registry_set_offline_delay(struct presence_registry *reg, int64_t delay_ms);

/* Whether a user's state is kept while it is offline. */
void presence_registry_set_keep_state(struct presence_registry *reg, bool keep);
bool presence_registry_keep_state(const struct presence_registry *reg);

/* Sets the seq margin (0 = none): no user publishes a document whose seq exceeds by more than
 * margin the seq recorded for it in the last completed save (0 for a user not in it). */
void presence_registry_set_seq_margin(struct presence_registry *reg, uint64_t margin);
uint64_t presence_registry_seq_margin(const struct presence_registry *reg);

/* Sets the seq a user created from now on starts from: its first document has seq + 1. */
void presence_registry_set_new_user_seq(struct presence_registry *reg, uint64_t seq);

/* Records a login attempt by client as a PENDING session. A client already known (pending or
 * active) is left as it is. Returns PRESENCE_OK or PRESENCE_ERR_NOMEM (nothing recorded). */
enum presence_err presence_registry_session_pending(struct presence_registry *reg,
                                                    const void *client);

/* Returns the oldest PENDING client, or NULL when none is pending. The adapter resolves its
 * user and calls presence_registry_session_start, which removes it from the pending list.
 * (Not const: it forgets clients that went away while pending.) */
const void *presence_registry_pending_next(struct presence_registry *reg);

/* Promotes the PENDING session of client to ACTIVE under the user named user_name (copied;
 * the user is created if new) and marks the user dirty. A NULL user_name means the session is
 * not tracked: it is forgotten. A client that is not pending is left alone (PRESENCE_OK).
 * Returns PRESENCE_ERR_NOMEM when the user could not be created; the session is then
 * forgotten, so the registry stays consistent. */
enum presence_err presence_registry_session_start(struct presence_registry *reg, const void *client,
                                                  const char *user_name);

/* Starts an ACTIVE session of client under the user named user_name (copied; the user is
 * created if new) and marks the user dirty: for brokers that report an accepted connection
 * (Mosquitto 2.1's CONNECT event), where no PENDING step is needed. A client already known, or a
 * NULL user_name (not tracked), is left alone (PRESENCE_OK), so a connection reported twice
 * counts once. Returns PRESENCE_ERR_NOMEM when memory runs out; nothing is recorded then (a
 * user created for it stays, unpublished, as after presence_registry_user_get). */
enum presence_err presence_registry_session_connect(struct presence_registry *reg,
                                                    const void *client, const char *user_name);

/* Forgets client. If its session was ACTIVE, its user loses a session and becomes dirty; when
 * that was the user's last session, the user was last published as available and an offline
 * delay is set, the user is queued to go offline when the delay has passed (see above).
 * Unknown clients are ignored. Cannot fail. */
void presence_registry_session_gone(struct presence_registry *reg, const void *client);

/* Returns true when client is known (pending or active). *user (if user is not NULL) is set to
 * the session's user when ACTIVE, to NULL when PENDING. */
bool presence_registry_session_find(const struct presence_registry *reg, const void *client,
                                    struct presence_user **user);

/* Returns the user named name, or NULL. */
struct presence_user *presence_registry_user_find(const struct presence_registry *reg,
                                                  const char *name);

/* Finds the user named name or creates it (unavailable, empty state, never published, seq as
 * set by presence_registry_set_new_user_seq). Returns PRESENCE_OK with *out set, or
 * PRESENCE_ERR_NOMEM (nothing created). */
enum presence_err presence_registry_user_get(struct presence_registry *reg, const char *name,
                                             struct presence_user **out);

/* Puts user on the dirty list (once; again after it was taken off). */
void presence_registry_user_changed(struct presence_registry *reg, struct presence_user *user);

/* Accessors. Returned pointers are owned by the user and live as long as it does. */
const char *presence_user_name(const struct presence_user *user);
/* "<prefix>/<encoded name>" */
const char *presence_user_topic(const struct presence_user *user);
/* The encoded name (the level after the prefix) and its length. */
const char *presence_user_level(const struct presence_user *user);
size_t presence_user_level_len(const struct presence_user *user);
unsigned int presence_user_sessions(const struct presence_user *user);
struct presence_state *presence_user_state(struct presence_user *user);
/* Whether the user has no session and waits out the offline delay. */
bool presence_user_offline_pending(const struct presence_user *user);

/* Users in the order they were created (which never changes: users are never removed, and new
 * ones are added at the end, so a pointer to a user stays a valid cursor). first returns NULL
 * for an empty registry, next returns NULL after the last user. */
struct presence_user *presence_registry_user_first(const struct presence_registry *reg);
struct presence_user *presence_registry_user_next(const struct presence_user *user);

/* Puts every user whose offline delay has passed (by the monotonic clock) back on the dirty
 * list, so that its unavailable document is prepared at the next flush. O(1) per such user. */
void presence_registry_offline_expire(struct presence_registry *reg);

/* Returns true when user has published at least one document (it is "known"), and then fills
 * *doc with the values of the user's LAST PUBLISHED document, which is what its retained message
 * holds (not the live values, which may have changed since), its state as compact JSON text in
 * doc->state_json. Pointers are borrowed from user and stay valid until its next document is
 * recorded as sent. Returns false, touching nothing, when the user has never had a document. */
bool presence_user_published(const struct presence_user *user, struct presence_document *doc);

/* Takes the next user off the dirty list, or returns NULL when the list is empty. */
struct presence_user *presence_registry_dirty_next(struct presence_registry *reg);

/* Decides whether user needs a new document, at wall-clock time now_ms. A user with no ACTIVE
 * session that does not wait out the offline delay has its state cleared first, unless
 * keep_state is set. A user waiting out the delay has nothing due. A document that the seq
 * margin does not allow yet is not due either: the user is put on the held list (counted by
 * presence_registry_held_count) and goes back on the dirty list when a save completes or the
 * user changes again.
 * Returns PRESENCE_OK with *due false when nothing is due; with *due
 * true and *doc filled (pointers borrowed from user, valid until the next change) when one is
 * due. The adapter then publishes it and reports the outcome with presence_registry_document_
 * sent or _failed, with nothing about the user changed in between, before preparing another
 * document.
 * Returns PRESENCE_ERR_NOMEM when the held list could not grow to hold the user; nothing
 * changes and the adapter should call presence_registry_document_failed. */
enum presence_err presence_registry_document_prepare(struct presence_registry *reg,
                                                     struct presence_user *user, int64_t now_ms,
                                                     struct presence_document *doc, bool *due);

/* Records that the document last prepared for user was published: it becomes the user's last
 * document (seq, since, availability, sessions and state: the state is marked). */
void presence_registry_document_sent(struct presence_registry *reg, struct presence_user *user);

/* Records that the document last prepared for user could not be published. Nothing about the
 * user's last document changes and the user is kept for the next flush (after
 * presence_registry_flush_done), so the document is retried. */
void presence_registry_document_failed(struct presence_registry *reg, struct presence_user *user);

/* Ends a flush: users whose document failed go back on the dirty list. */
void presence_registry_flush_done(struct presence_registry *reg);

/* Number of users whose next document waits for a save to complete (see the seq margin). */
size_t presence_registry_held_count(const struct presence_registry *reg);

/* What the state file records of a user: the values of its last document. */
struct presence_user_record {
	/* The user name (owned by the user). */
	const char *username;
	/* seq of the last document (0: none, and the user is not worth recording). */
	uint64_t seq;
	/* since of the last document, ms since the Unix epoch. */
	int64_t since_ms;
	/* available of the last document. */
	bool available;
	/* The compact state of the last document ("{}" when empty; owned by the user, valid until
	 * its next document). */
	const char *state_json;
};

/* Fills rec with user's last-document values. */
void presence_registry_user_record(const struct presence_user *user,
                                   struct presence_user_record *rec);

/* Creates the user named name as the state file recorded it: its last document had seq,
 * since_ms, available and state (a JSON object, or NULL for {}), and it has no session. Its
 * live state is a copy of state when keep_state is set, empty otherwise. The user is put on the
 * dirty list, so the next flush publishes whatever differs now: the correction of a user
 * recorded as available (it has no session), or of a state that is no longer kept.
 * Returns PRESENCE_OK; PRESENCE_ERR_INVAL when a user of that name exists already, its document
 * topic would be longer than an MQTT topic may be, or state is not an object with valid keys
 * (see presence_state_restore); PRESENCE_ERR_NOMEM. On error
 * nothing is created. */
enum presence_err presence_registry_user_restore(struct presence_registry *reg, const char *name,
                                                 uint64_t seq, int64_t since_ms, bool available,
                                                 const cJSON *state);

/* Makes doc (its username is ignored; state_json must not be NULL) the user's last document as
 * it was published elsewhere: by the cluster (cluster.h), whose documents every broker
 * publishes as they come. The state is taken byte for byte (presence_state_adopt) and marked;
 * the user's sessions (this broker's) are left alone. Returns PRESENCE_OK;
 * PRESENCE_ERR_INVAL (the state is not a valid state object) or PRESENCE_ERR_NOMEM, with
 * nothing changed. */
enum presence_err presence_registry_user_adopt(struct presence_registry *reg,
                                               struct presence_user *user,
                                               const struct presence_document *doc);

/* Save generations (see above). A save calls save_begin, then user_saved for every user it
 * writes, in any number of steps, then save_done when the file is safely in place, or
 * save_failed when it was abandoned. */

/* Starts save number N+1 and returns it (from 1; 32 bits, see above). Clears the unsaved flag:
 * changes from now on set it again. */
uint64_t presence_registry_save_begin(struct presence_registry *reg);

/* Records that user was written, with its current seq, by the save in progress. */
void presence_registry_user_saved(struct presence_registry *reg, struct presence_user *user);

/* Records that the save in progress completed: every user it wrote now counts as recorded
 * with the seq it was written with, and held users go back on the dirty list. */
void presence_registry_save_done(struct presence_registry *reg);

/* Records that the save in progress was abandoned; the unsaved flag is set again. */
void presence_registry_save_failed(struct presence_registry *reg);

/* Whether anything the state file records changed since the last save began. */
bool presence_registry_unsaved(const struct presence_registry *reg);

/* The seq recorded for user in the last completed save (0 when none). */
uint64_t presence_registry_user_recorded_seq(const struct presence_registry *reg,
                                             const struct presence_user *user);

/* Counters for logs and metrics. */
size_t presence_registry_user_count(const struct presence_registry *reg);
size_t presence_registry_available_count(const struct presence_registry *reg);
size_t presence_registry_active_session_count(const struct presence_registry *reg);
/* Users that have published at least one document (users are never forgotten, so this only
 * grows). */
size_t presence_registry_known_count(const struct presence_registry *reg);

#endif
