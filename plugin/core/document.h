/*
 * The presence document: the retained JSON message on P/U.
 *
 * Rendered byte-for-byte deterministically as compact JSON with the keys in this order:
 *   {"username":"alice","available":true,"sessions":2,"since":1764265200123,"seq":7,
 *    "state":{"status":"away"}}
 * The state is embedded as it is rendered by the state module.
 *
 * Query responses embed documents in a larger message; for them a document is built as a cJSON
 * object instead, with the state given as compact JSON text (what the registry keeps of a
 * user's last published document) and "known":true appended as the last key. Printed
 * compactly, everything before "known" is byte for byte what presence_document_render gives for
 * the same values.
 */
#ifndef PRESENCE_DOCUMENT_H
#define PRESENCE_DOCUMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* The values of one document. */
struct presence_document {
	/* The user name, unencoded, NUL-terminated, valid UTF-8. */
	const char *username;
	/* Whether at least one session is connected. */
	bool available;
	/* Number of connected sessions. */
	unsigned int sessions;
	/* Milliseconds since the Unix epoch at which available last changed. */
	int64_t since_ms;
	/* Per-user document counter, from 1. */
	uint64_t seq;
	/* The user's state object (borrowed); NULL renders as {}. */
	const cJSON *state;
};

/* Renders doc. Returns a NUL-terminated string the caller frees with presence_document_free and
 * stores its length (without the NUL) in *len; returns NULL when allocation fails. */
char *presence_document_render(const struct presence_document *doc, size_t *len);

/* Frees a string returned by presence_document_render; NULL is allowed. */
void presence_document_free(char *text);

/* Builds doc as a new cJSON object with the state taken from state_json (doc->state is
 * ignored): the compact JSON text of a JSON object, as presence_state_json or
 * presence_user_published return it, embedded verbatim and not checked. When mark_known is
 * true, "known":true is appended as the last key. Returns the object, which the caller owns
 * (cJSON_Delete, or adds it to a parent), or NULL when allocation fails. */
cJSON *presence_document_build(const struct presence_document *doc, const char *state_json,
                               bool mark_known);

/* Builds {"username":"<username>","available":false,"known":false}: the answer for a name that
 * has no document. Same ownership and failure contract as presence_document_build. */
cJSON *presence_document_build_unknown(const char *username);

/* Renders a rejection notice {"topic":"<topic>","error":"<error>"}. Same ownership and failure
 * contract as presence_document_render. */
char *presence_document_render_error(const char *topic, const char *error, size_t *len);

#endif
