/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The presence document: the retained JSON message on P/U, rendered byte for byte
 * deterministically as compact JSON, keys in this order:
 *   {"username":"alice","available":true,"sessions":2,"since":1764265200123,"seq":7,
 *    "state":{"status":"away"}}
 * A query's answer for a known user is the same bytes with ,"known":true before the closing
 * brace. How it is rendered: docs/DESIGN.md, "Core: documents".
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
	/* The user's state as compact JSON text, embedded as it is (borrowed; the state module
	 * renders it). NULL renders as {}. */
	const char *state_json;
};

/* An allocator for the rendered text: returns size bytes or NULL. */
typedef void *(*presence_document_alloc_fn)(size_t size);

/* Renders doc into one buffer of exactly *len + 1 bytes from alloc (the caller frees it with
 * the matching free), NUL-terminated, and stores the length without the NUL in *len. This is
 * how the adapter renders straight into a buffer the broker will own. Returns NULL (and *len 0)
 * when an allocation fails. */
char *presence_document_render_with(const struct presence_document *doc, size_t *len,
                                    presence_document_alloc_fn alloc);

/* Frees a string returned by presence_document_render_error (or by presence_document_render,
 * testing.h); NULL is allowed. */
void presence_document_free(char *text);

/* Returns doc rendered as presence_document_render renders it, with ,"known":true inserted
 * before the closing brace when mark_known is true, as a raw cJSON item (printed verbatim).
 * The caller owns the item (cJSON_Delete, or adds it to a parent). Returns NULL when allocation
 * fails. */
cJSON *presence_document_build(const struct presence_document *doc, bool mark_known);

/* Renders a rejection notice {"topic":"<topic>","error":"<error>"}. Same ownership and failure
 * contract as presence_document_render. */
char *presence_document_render_error(const char *topic, const char *error, size_t *len);

/* Internal, shared with the store, which renders its records the same way as documents. */

/* Room for any uint64 in decimal, or an int64 with its sign (no NUL). */
#define PRESENCE__INTEGER_TEXT_SIZE 21

/* Writes value in decimal at the end of buf (PRESENCE__INTEGER_TEXT_SIZE bytes) and returns
 * where the digits start; they run to the end of buf, without a NUL. Every value is exact
 * (cJSON keeps numbers as doubles and would print 2^53 + 1 wrong). Cannot fail. */
char *presence__digits_u64(char *buf, uint64_t value);
char *presence__digits_i64(char *buf, int64_t value);

/* Strings of up to PRESENCE__STRING_STACK_BYTES bytes are escaped into the caller's buffer of
 * PRESENCE__STRING_STACK_SIZE bytes (6 bytes per escaped byte, two quotes, a NUL and the slack
 * cJSON wants in a preallocated buffer). */
#define PRESENCE__STRING_STACK_BYTES 64
#define PRESENCE__STRING_STACK_SIZE (6 * PRESENCE__STRING_STACK_BYTES + 8)

/* Prints s (NUL-terminated) as a JSON string, quotes included, exactly as cJSON escapes it,
 * NUL-terminated: into stack (PRESENCE__STRING_STACK_SIZE bytes) when s fits, else into a
 * buffer from malloc. Returns the text, which the caller frees with free() when it is not
 * stack, or NULL when allocation fails. */
char *presence__json_string(const char *s, char *stack);

#endif
