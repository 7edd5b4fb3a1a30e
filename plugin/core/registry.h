/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Sessions and users: who is connected, whose presence document is due, who is forgotten.
 *
 * A session is one MQTT connection, keyed by the broker's client pointer (opaque here); only
 * ACTIVE sessions count, and a user is available while it has one. Every change puts the user
 * on the dirty list; a document is due only when availability, the session count or the state
 * differs from the user's last document. seq never goes backwards, even across forgotten users
 * (the seq floor). Every operation is O(1) in the number of users and sessions. The lifecycle
 * (offline delay, forgetting, the guard) is in docs/DESIGN.md, "Core: registry".
 */
#ifndef PRESENCE_REGISTRY_H
#define PRESENCE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "document.h"
#include "presence_err.h"
#include "state.h"
#include "visibility.h"

struct presence_registry;
struct presence_user;

/* Decides whether user may publish a document numbered seq now (the state file's seq margin,
 * store.h). A document the guard refuses waits on the held list until
 * presence_registry_release_held. */
struct presence_seq_guard {
	bool (*allows)(void *arg, const struct presence_user *user, uint64_t seq);
	void *arg;
};

/* A position in the users, robust to users being removed (see presence_registry_cursor_*). */
struct presence_cursor {
	/* The next user to return (NULL: the end); private. */
	struct presence_user *next;
	/* Whether the registry keeps it up to date; private. */
	bool open;
};

/* Returns a new, empty registry whose users' document topics are "<prefix>/<encoded user>", or
 * NULL when allocation fails. prefix is copied. Free with presence_registry_free. */
struct presence_registry *presence_registry_new(const char *prefix);

/* Frees the registry, every session and every user (forgotten ones not taken too); NULL is
 * allowed. */
void presence_registry_free(struct presence_registry *reg);

/* Settings; each applies to what happens after the call. Defaults: the system clocks (clock.h),
 * no offline delay, no keep_state, no guard, seq floor 0, never forget, no cap, no write
 * limit. */
void presence_registry_set_offline_delay(struct presence_registry *reg, int64_t delay_ms);
void presence_registry_set_keep_state(struct presence_registry *reg, bool keep);
bool presence_registry_keep_state(const struct presence_registry *reg);
/* guard is copied; NULL removes it. */
void presence_registry_set_guard(struct presence_registry *reg,
                                 const struct presence_seq_guard *guard);
/* Forget users offline for forget_after_ms (0: never). */
void presence_registry_set_forget_after(struct presence_registry *reg, int64_t forget_after_ms);
/* At most max_users users at once (0: no cap). Users beyond it are forgotten, oldest idle first,
 * by the next presence_registry_forget_due. */
void presence_registry_set_max_users(struct presence_registry *reg, size_t max_users);
/* Each user may make writes_per_second changing state writes a second, in bursts of burst
 * (writes_per_second 0: no limit). */
void presence_registry_set_write_limit(struct presence_registry *reg,
                                       unsigned int writes_per_second, unsigned int burst);

/* The seq floor: new users start above it (their first document has floor + 1). It only rises:
 * set_seq_floor ignores a lower value, and forgetting raises it to the forgotten user's seq. */
void presence_registry_set_seq_floor(struct presence_registry *reg, uint64_t floor);
uint64_t presence_registry_seq_floor(const struct presence_registry *reg);

/* Records a login attempt by client as a PENDING session (a known client is left as it is).
 * Returns PRESENCE_OK or PRESENCE_ERR_NOMEM (nothing recorded). */
enum presence_err presence_registry_session_pending(struct presence_registry *reg,
                                                    const void *client);

/* Returns the oldest PENDING client, or NULL. (Not const: forgets stale entries.) */
const void *presence_registry_pending_next(struct presence_registry *reg);

/* Promotes the PENDING session of client to ACTIVE under user_name (copied; the user is created
 * if new) and marks the user dirty. A NULL user_name (not tracked) forgets the session; a client
 * that is not pending is left alone. Returns PRESENCE_OK; PRESENCE_ERR_NOMEM or PRESENCE_ERR_FULL
 * (see presence_registry_user_get), the session then forgotten. */
enum presence_err presence_registry_session_start(struct presence_registry *reg, const void *client,
                                                  const char *user_name);

/* Starts an ACTIVE session of client under user_name (Mosquitto 2.1's CONNECT). A known client
 * or a NULL user_name is left alone (PRESENCE_OK). Returns PRESENCE_ERR_NOMEM or
 * PRESENCE_ERR_FULL with nothing recorded. */
enum presence_err presence_registry_session_connect(struct presence_registry *reg,
                                                    const void *client, const char *user_name);

/* Forgets client; an ACTIVE session's user loses a session and becomes dirty (and, if it was
 * its last session and an offline delay is set, starts waiting it out). Cannot fail. */
void presence_registry_session_gone(struct presence_registry *reg, const void *client);

/* Whether client is known; *user (if not NULL) is its user when ACTIVE, NULL when PENDING. */
bool presence_registry_session_find(const struct presence_registry *reg, const void *client,
                                    struct presence_user **user);

/* Returns the user named name, or NULL (forgotten users are not found). */
struct presence_user *presence_registry_user_find(const struct presence_registry *reg,
                                                  const char *name);

/* Finds the user named name or creates it (unavailable, empty state, no document, seq = the
 * floor). At max_users, creating one forgets the oldest idle user first. Returns PRESENCE_OK with
 * *out set; PRESENCE_ERR_FULL when max_users users are known and none is idle; PRESENCE_ERR_INVAL
 * when its topic would be longer than an MQTT topic may be; PRESENCE_ERR_NOMEM. Nothing is
 * created on error. */
enum presence_err presence_registry_user_get(struct presence_registry *reg, const char *name,
                                             struct presence_user **out);

/* Puts user on the dirty list (once; again after it was taken off). */
void presence_registry_user_changed(struct presence_registry *reg, struct presence_user *user);

/* Accessors. Returned pointers are owned by the user and live as long as it does. */
const char *presence_user_name(const struct presence_user *user);
/* The encoded name (the topic level after the prefix), NUL-terminated, and its length. */
const char *presence_user_level(const struct presence_user *user);
size_t presence_user_level_len(const struct presence_user *user);
unsigned int presence_user_sessions(const struct presence_user *user);
struct presence_state *presence_user_state(struct presence_user *user);
/* The seq of the user's last document (the floor it started from when it has none). */
uint64_t presence_user_seq(const struct presence_user *user);

/* The user's privacy choice (visibility.h); NULL: everyone. */
const struct presence_privacy *presence_user_privacy(const struct presence_user *user);

/* Replaces user's privacy choice with privacy (taken over; NULL: everyone). */
void presence_registry_user_set_privacy(struct presence_user *user,
                                        struct presence_privacy *privacy);

/* More watchers may see user than saw its last document: its next document is due (if it has
 * one), with since = now and, with jump, seq = the larger of seq + 1 and the wall clock in ms
 * (user's seq is raised at once: with a state file, note the change first, store.h), and the
 * user goes on the dirty list. */
void presence_registry_user_widen(struct presence_registry *reg, struct presence_user *user,
                                  bool jump);

/* The length of user's document topic "<prefix>/<level>" (without NUL), and the topic written
 * into out (at least that length + 1 bytes), NUL-terminated. */
size_t presence_registry_topic_len(const struct presence_registry *reg,
                                   const struct presence_user *user);
void presence_registry_topic_write(const struct presence_registry *reg,
                                   const struct presence_user *user, char *out);

/* Cursors visit every user once, in creation order, whatever is removed meanwhile (users created
 * meanwhile are visited too). cursor_start positions c on the first user; cursor_next returns
 * the next user (NULL at the end, which closes c); cursor_stop closes c early. At most
 * PRESENCE_REGISTRY_CURSORS cursors are open at once; cursor_start returns false (c closed)
 * beyond that. */
#define PRESENCE_REGISTRY_CURSORS 4
bool presence_registry_cursor_start(struct presence_registry *reg, struct presence_cursor *c);
struct presence_user *presence_registry_cursor_next(struct presence_registry *reg,
                                                    struct presence_cursor *c);
void presence_registry_cursor_stop(struct presence_registry *reg, struct presence_cursor *c);

/* Puts every user whose offline delay has passed back on the dirty list. O(1) per such user. */
void presence_registry_offline_expire(struct presence_registry *reg);

/* Forgets, at most limit of them, the idle users offline for forget_after and the oldest idle
 * users beyond max_users (a user on the dirty, retry or held list is left for the next call).
 * Each goes to the forgotten list. Returns how many were forgotten. */
size_t presence_registry_forget_due(struct presence_registry *reg, size_t limit);

/* Takes the oldest forgotten user off the forgotten list, or returns NULL. The user is no longer
 * in the registry: the caller owns it (its accessors and presence_user_published still work),
 * announces it and frees it with presence_user_free. */
struct presence_user *presence_registry_forgotten_take(struct presence_registry *reg);

/* Frees a user taken with presence_registry_forgotten_take; NULL is allowed. */
void presence_user_free(struct presence_user *user);

/* Takes user (which must have no session) out of the registry now, as forgetting does but for
 * a user the cluster forgot, which the caller has announced already: the floor rises to its
 * seq and the user is freed (at once, or when the queue it is on lets it go). Counted as
 * forgotten. */
void presence_registry_user_forget(struct presence_registry *reg, struct presence_user *user);

/* Returns true when user has a document, filling *doc with its LAST PUBLISHED values (what its
 * retained message holds), the state as compact JSON. Pointers are borrowed from user and stay
 * valid until its next document is recorded. Returns false, touching nothing, otherwise. */
bool presence_user_published(const struct presence_user *user, struct presence_document *doc);

/* Takes the next user off the dirty list, or returns NULL. Users with no session, no document,
 * no delay running (a refused login's) and no count sent are freed on the way: they have
 * nothing to say. */
struct presence_user *presence_registry_dirty_next(struct presence_registry *reg);

/* Cluster mode: a count of the user's sessions was queued for the cluster. After a count above
 * 0 the user is kept (with no document yet, its sessions may all end before the cluster
 * answers: their end must be counted too); after a count of 0, a user with nothing else to
 * keep is freed (user is invalid then) unless it is on a queue. */
void presence_registry_user_counted(struct presence_registry *reg, struct presence_user *user,
                                    unsigned int count);

/* Decides whether user needs a new document at wall-clock time now_ms: availability, the
 * session count or the state differs from its last document, and the guard allows it. Returns
 * PRESENCE_OK with *due false when nothing is due (or the guard holds it), or with *due true and
 * *doc filled (pointers borrowed from user) when one is due: the adapter publishes it and reports
 * with presence_registry_document_sent or _failed before preparing another. Returns
 * PRESENCE_ERR_NOMEM when the held list cannot grow (nothing changes; call
 * presence_registry_document_failed). */
enum presence_err presence_registry_document_prepare(struct presence_registry *reg,
                                                     struct presence_user *user, int64_t now_ms,
                                                     struct presence_document *doc, bool *due);

/* Records that the document last prepared for user was published: it becomes the user's last
 * document. */
void presence_registry_document_sent(struct presence_registry *reg, struct presence_user *user);

/* Records that the document prepared for user could not be published; it is retried at the
 * next flush (after presence_registry_flush_done). */
void presence_registry_document_failed(struct presence_registry *reg, struct presence_user *user);

/* Ends a flush: users whose document failed go back on the dirty list. */
void presence_registry_flush_done(struct presence_registry *reg);

/* Held users (the guard refused their document) go back on the dirty list. */
void presence_registry_release_held(struct presence_registry *reg);
size_t presence_registry_held_count(const struct presence_registry *reg);

/* Whether user may make a state write that changes its state now (the write limit), and taking
 * one such write from its allowance. */
bool presence_registry_write_permitted(const struct presence_registry *reg,
                                       const struct presence_user *user);
void presence_registry_write_charge(struct presence_registry *reg, struct presence_user *user);

/* What the state file records of a user: the values of its last document. */
struct presence_user_record {
	/* The user name (owned by the user). */
	const char *username;
	/* seq of the last document (0: none). */
	uint64_t seq;
	/* since of the last document, ms since the Unix epoch. */
	int64_t since_ms;
	bool available;
	/* The compact state of the last document ("{}" when empty; owned by the user). */
	const char *state_json;
};

/* Fills rec with user's last-document values. */
void presence_registry_user_record(const struct presence_user *user,
                                   struct presence_user_record *rec);

/* Creates the user named name as the state file recorded it (a document with seq, since_ms,
 * available and state, a JSON object or NULL for {}), without a session, and puts it on the
 * dirty list so the next flush publishes whatever differs now (the correction of a user recorded
 * as available; a state no longer kept). A user of that name already there is replaced when seq
 * is at least its seq, and left alone otherwise. Its live state is the recorded one with
 * keep_state, empty otherwise. max_users does not apply (presence_registry_forget_due enforces
 * it afterwards). Returns PRESENCE_OK; PRESENCE_ERR_INVAL (a topic too long, a state that is not
 * an object with valid keys, see presence_state_restore); PRESENCE_ERR_NOMEM. Nothing changes on
 * error. */
enum presence_err presence_registry_user_restore(struct presence_registry *reg, const char *name,
                                                 uint64_t seq, int64_t since_ms, bool available,
                                                 const cJSON *state);

/* Removes and frees the user named name, if it has no session and its seq is at most seq (the
 * state file's record that it was forgotten). Returns true when it was removed. */
bool presence_registry_user_drop(struct presence_registry *reg, const char *name, uint64_t seq);

/* Adds offset to the seq of every user and to the floor (the state file's unclean restart). */
void presence_registry_shift_seqs(struct presence_registry *reg, uint64_t offset);

/* Makes doc (its username is ignored; state_json not NULL) the user's last document as it was
 * published elsewhere (the cluster, cluster.h): the state is taken byte for byte and marked; the
 * user's sessions are left alone. Returns PRESENCE_OK; PRESENCE_ERR_INVAL (not a valid state) or
 * PRESENCE_ERR_NOMEM, nothing changed. */
enum presence_err presence_registry_user_adopt(struct presence_registry *reg,
                                               struct presence_user *user,
                                               const struct presence_document *doc);

/* Counters for logs and metrics. */
size_t presence_registry_available_count(const struct presence_registry *reg);
size_t presence_registry_active_session_count(const struct presence_registry *reg);
/* Users that have a document now. */
size_t presence_registry_known_count(const struct presence_registry *reg);
/* Users forgotten since the registry was made. */
uint64_t presence_registry_forgotten_total(const struct presence_registry *reg);

#endif
