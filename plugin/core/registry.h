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
 * Users are kept after they go offline (their seq must keep counting) but hold only their name,
 * topic and counters then. Every operation is O(1) in the number of users and sessions (hash
 * lookups and intrusive lists); nothing scans all users.
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

/* Returns a new, empty registry whose users' document topics are "<prefix>/<encoded user>", or
 * NULL when allocation fails. prefix is copied. Free with presence_registry_free. */
struct presence_registry *presence_registry_new(const char *prefix);

/* Frees the registry, every session and every user; NULL is allowed. */
void presence_registry_free(struct presence_registry *reg);

/* Records a login attempt by client as a PENDING session. A client already known (pending or
 * active) is left as it is. Returns PRESENCE_OK or PRESENCE_ERR_NOMEM (nothing recorded). */
enum presence_err presence_registry_session_pending(struct presence_registry *reg,
                                                    const void *client);

/* Returns the oldest PENDING client, or NULL when none is pending. The adapter resolves its
 * user and calls presence_registry_session_start, which removes it from the pending list. */
const void *presence_registry_pending_next(const struct presence_registry *reg);

/* Promotes the PENDING session of client to ACTIVE under the user named user_name (copied;
 * the user is created if new) and marks the user dirty. A NULL user_name means the session is
 * not tracked: it is forgotten. A client that is not pending is left alone (PRESENCE_OK).
 * Returns PRESENCE_ERR_NOMEM when the user could not be created; the session is then
 * forgotten, so the registry stays consistent. */
enum presence_err presence_registry_session_start(struct presence_registry *reg, const void *client,
                                                  const char *user_name);

/* Forgets client. If its session was ACTIVE, its user loses a session and becomes dirty.
 * Unknown clients are ignored. Cannot fail. */
void presence_registry_session_gone(struct presence_registry *reg, const void *client);

/* Returns true when client is known (pending or active). *user (if user is not NULL) is set to
 * the session's user when ACTIVE, to NULL when PENDING. */
bool presence_registry_session_find(const struct presence_registry *reg, const void *client,
                                    struct presence_user **user);

/* Returns the user named name, or NULL. */
struct presence_user *presence_registry_user_find(const struct presence_registry *reg,
                                                  const char *name);

/* Finds the user named name or creates it (unavailable, empty state, never published).
 * Returns PRESENCE_OK with *out set, or PRESENCE_ERR_NOMEM (nothing created). */
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

/* Returns true when user has published at least one document (it is "known"), and then fills
 * *doc with the values of the user's LAST PUBLISHED document, which is what its retained message
 * holds (not the live values, which may have changed since): doc->state is NULL and *state_json
 * is that document's state as compact JSON text. Pointers are borrowed from user and stay valid
 * until its next document is recorded as sent. Returns false, touching nothing, when the user
 * has never had a document. */
bool presence_user_published(const struct presence_user *user, struct presence_document *doc,
                             const char **state_json);

/* Takes the next user off the dirty list, or returns NULL when the list is empty. */
struct presence_user *presence_registry_dirty_next(struct presence_registry *reg);

/* Decides whether user needs a new document, at wall-clock time now_ms. A user with no ACTIVE
 * session has its state cleared first (presence state lives while the user is online).
 * Returns PRESENCE_OK with *due false when nothing changed since the last document; with *due
 * true and *doc filled (pointers borrowed from user, valid until the next change) when one is
 * due. The adapter then publishes it and reports the outcome with presence_registry_document_
 * sent or _failed before preparing another document for this user.
 * Returns PRESENCE_ERR_NOMEM when the bookkeeping copy could not be made; nothing changes and
 * the adapter should call presence_registry_document_failed. */
enum presence_err presence_registry_document_prepare(struct presence_registry *reg,
                                                     struct presence_user *user, int64_t now_ms,
                                                     struct presence_document *doc, bool *due);

/* Records that the document last prepared for user was published: it becomes the user's last
 * document (seq, since, availability, sessions and state). */
void presence_registry_document_sent(struct presence_registry *reg, struct presence_user *user);

/* Records that the document last prepared for user could not be published. Nothing about the
 * user's last document changes and the user is kept for the next flush (after
 * presence_registry_flush_done), so the document is retried. */
void presence_registry_document_failed(struct presence_registry *reg, struct presence_user *user);

/* Ends a flush: users whose document failed go back on the dirty list. */
void presence_registry_flush_done(struct presence_registry *reg);

/* Counters for logs and metrics. */
size_t presence_registry_user_count(const struct presence_registry *reg);
size_t presence_registry_available_count(const struct presence_registry *reg);
size_t presence_registry_active_session_count(const struct presence_registry *reg);
/* Users that have published at least one document (users are never forgotten, so this only
 * grows). */
size_t presence_registry_known_count(const struct presence_registry *reg);

#endif
