/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * A user's presence state: a JSON object shared by all of the user's sessions, kept only as its
 * compact rendering ("{}" when empty), which is what max_state_bytes measures and documents embed.
 *
 * Every write is all-or-nothing: it is applied to a copy, checked against the limits, and only
 * then replaces the state; a refused or failed write leaves the state exactly as it was. A limit
 * refuses a write only when the write makes that measure larger. Every accepted write is
 * idempotent. The write rules (what is JSON, what is text, keys, limits) and why are in
 * docs/DESIGN.md, "Core: state".
 */
#ifndef PRESENCE_STATE_H
#define PRESENCE_STATE_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "presence_err.h"

/* Longest allowed top-level key, in bytes. */
#define PRESENCE_STATE_KEY_MAX 128

/* A payload may be at most this many times max_state_bytes long. */
#define PRESENCE_STATE_PAYLOAD_FACTOR 4

/* Size of the reason buffer callers pass to writes; every reason fits. */
#define PRESENCE_STATE_REASON_SIZE 160

/* The limits a write is checked against. */
struct presence_state_limits {
	/* Largest compact JSON rendering of the whole state, in bytes. */
	size_t max_state_bytes;
	/* Most top-level keys. */
	size_t max_keys;
	/* Deepest nesting of objects and arrays, the state object being level 1. */
	size_t max_depth;
};

/* A state. The fields are private to state.c; the struct is public so that a state can be
 * embedded in another struct (presence_state_init / presence_state_release). */
struct presence_state {
	/* The compact rendering (from cJSON_PrintUnformatted, freed with cJSON_free), or NULL
	 * while the state is empty and renders as "{}". */
	char *json;
	/* The rendering at the last mark (NULL = "{}"). The same pointer as json until a write
	 * replaces the text after the mark: that first write keeps the text it replaces here
	 * instead of freeing it. Two different texts are always two live allocations, so the
	 * pointers differ exactly when a write replaced the text (or both are NULL: "{}" then and
	 * now). No flag besides, so that a state is two pointers inside its user. */
	char *marked;
};

/* Makes *st an empty state, marked as empty. Cannot fail; release it with
 * presence_state_release. */
void presence_state_init(struct presence_state *st);

/* Frees what st owns and leaves it empty (as presence_state_init). */
void presence_state_release(struct presence_state *st);

/* Sets (or removes) one top-level key from an MQTT payload (payload_len bytes, not
 * NUL-terminated; may be NULL when payload_len is 0).
 * Returns PRESENCE_OK and sets *changed to whether the state differs afterwards;
 * PRESENCE_ERR_INVAL (bad key, bad payload) or PRESENCE_ERR_TOO_LARGE (a limit, or a payload
 * longer than PRESENCE_STATE_PAYLOAD_FACTOR x max_state_bytes) with a NUL-terminated
 * explanation in reason; PRESENCE_ERR_NOMEM. On any error the state is unchanged and *changed
 * is false. One allocation failure is not an error: when memory runs out inside cJSON's parser,
 * a JSON payload is stored as text (cJSON reports it as a syntax error). reason must hold
 * PRESENCE_STATE_REASON_SIZE bytes. */
enum presence_err presence_state_set_key(struct presence_state *st,
                                         const struct presence_state_limits *limits,
                                         const char *key, size_t key_len, const void *payload,
                                         size_t payload_len, bool *changed, char *reason);

/* Applies an MQTT payload as a JSON Merge Patch to the whole state; an empty payload clears
 * the state. Same return values, reason and failure guarantees as presence_state_set_key, except
 * that when memory runs out inside cJSON's parser the payload is refused as not a JSON object
 * (PRESENCE_ERR_INVAL, state unchanged). */
enum presence_err presence_state_merge(struct presence_state *st,
                                       const struct presence_state_limits *limits,
                                       const void *payload, size_t payload_len, bool *changed,
                                       char *reason);

/* Replaces the whole state with object's compact rendering, as recorded in the state file
 * (object stays the caller's): without checking the limits (a state over them may still
 * shrink), but object must be a JSON object whose top-level keys are valid and whose numbers
 * are finite. Like a write, this leaves the mark alone.
 * Returns PRESENCE_OK; PRESENCE_ERR_INVAL when object is not such an object;
 * PRESENCE_ERR_NOMEM. On error the state is unchanged. */
enum presence_err presence_state_restore(struct presence_state *st, const cJSON *object);

/* Replaces the whole state with json (NUL-terminated), kept byte for byte: the compact rendering
 * another broker of a cluster made (see cluster.h), so that every broker embeds the same bytes.
 * json must be a JSON object whose top-level keys are valid and whose numbers are finite; the
 * limits are not checked (the writing broker did). Like a write, this leaves the mark alone.
 * Returns PRESENCE_OK; PRESENCE_ERR_INVAL when json is not such an object (or cJSON ran out of
 * memory while parsing it, which it reports alike); PRESENCE_ERR_NOMEM. On error the state is
 * unchanged. */
enum presence_err presence_state_adopt(struct presence_state *st, const char *json);

/* Empties the state. Returns true when it was not empty. Cannot fail. */
bool presence_state_clear(struct presence_state *st);

/* Returns the compact JSON rendering of the state (never NULL; "{}" when empty). The pointer
 * stays valid until the next successful write or clear. */
const char *presence_state_json(const struct presence_state *st);

/* Returns strlen(presence_state_json(st)). */
size_t presence_state_json_len(const struct presence_state *st);

/* Marks the current rendering (e.g. as the one a published document showed). Cannot fail. */
void presence_state_mark(struct presence_state *st);

/* Returns the rendering at the last mark (never NULL; "{}" when it was empty): the current one
 * when no write replaced it since, else the text the first such write kept. Valid until the
 * next mark, release or (when nothing was replaced since the mark) write or clear. */
const char *presence_state_marked_json(const struct presence_state *st);

/* Returns true when the rendering differs from the one at the last mark (a change undone since
 * then is no change). A new state is marked as empty. */
bool presence_state_changed_since_mark(const struct presence_state *st);

/* Returns true when json (len bytes that cJSON parsed as JSON) has a \u escape that cJSON 1.7.15
 * decodes to NUL, which would silently cut a string short: \u0000, or \u followed by four
 * characters that are not all hex digits. Internal: shared with the query module. */
bool presence__json_has_nul_escape(const char *json, size_t len);

#endif
