/*
 * The presence document: the retained JSON message on P/U.
 *
 * Rendered byte-for-byte deterministically as compact JSON with the keys in this order:
 *   {"username":"alice","available":true,"sessions":2,"since":1764265200123,"seq":7,
 *    "state":{"status":"away"}}
 * The state is embedded as it is rendered by the state module.
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

/* Renders a rejection notice {"topic":"<topic>","error":"<error>"}. Same ownership and failure
 * contract as presence_document_render. */
char *presence_document_render_error(const char *topic, const char *error, size_t *len);

#endif
