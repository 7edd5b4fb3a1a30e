/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The presence document and the rejection notice (see document.h).
 *
 * The document is rendered for every presence change, so it is assembled by hand into one
 * buffer of exactly the right size (from the caller's allocator: the adapter passes the
 * broker's, so the payload needs no copy). Building it as a cJSON object and printing it cost
 * about ten times more than the broker spends on a whole connect: an allocation per member and
 * per key, snprintf for each integer, a growing print buffer, and freeing it all again.
 *
 * What stays with cJSON is the only part that needs JSON knowledge: the user name is escaped
 * by printing a cJSON string item (on the stack, never freed) into a preallocated buffer, so
 * quotes, backslashes and control characters come out exactly as cJSON escapes them and UTF-8
 * passes through. The keys are fixed and need no escaping, the state is already compact JSON
 * from the state module, and the integers are written out digit by digit, which prints every
 * int64/uint64 exactly (cJSON keeps numbers as doubles and would print 2^53 as
 * 9.00719925474099e+15).
 *
 * A query's answer for a known user is the same rendering with ,"known":true before the closing
 * brace, so it is byte for byte the retained document plus that key; it is handed to the query's
 * response as a raw cJSON item. The rejection notice and the answer for an unknown name are rare
 * and stay plain cJSON objects.
 */
#include <stdlib.h>
#include <string.h>

#include "document.h"
#include "testing.h"

#define INTEGER_TEXT_SIZE PRESENCE__INTEGER_TEXT_SIZE

/* Escaping a byte takes at most 6 bytes (a backslash, u and four hex digits); a printed string adds
 * two quotes and a NUL, and cJSON wants a few bytes of slack in a preallocated buffer. */
#define ESCAPED_SIZE(len) (6 * (len) + 8)

char *presence__digits_u64(char *buf, uint64_t value)
{
	char *p = buf + INTEGER_TEXT_SIZE;

	do {
		*--p = (char)('0' + value % 10);
		value /= 10;
	} while (value != 0);
	return p;
}

char *presence__digits_i64(char *buf, int64_t value)
{
	/* The magnitude of INT64_MIN does not fit in an int64, but it does in a uint64. */
	uint64_t magnitude = value < 0 ? 0 - (uint64_t)value : (uint64_t)value;
	char *p = presence__digits_u64(buf, magnitude);

	if (value < 0) {
		*--p = '-';
	}
	return p;
}

/* One piece of the document: len bytes at text. */
struct piece {
	const char *text;
	size_t len;
};

#define LITERAL(s)                                                                                 \
	{                                                                                          \
		(s), sizeof(s) - 1                                                                 \
	}

/* Prints name as a JSON string (quotes included) into buf (size bytes, at least
 * ESCAPED_SIZE(strlen(name))). Returns false when cJSON cannot (it never allocates here). */
static bool escape_into(const char *name, char *buf, size_t size)
{
	/* cJSON only reads the string; the union drops const without a cast. */
	union {
		const char *in;
		char *item;
	} text = {.in = name};
	cJSON item;

	memset(&item, 0, sizeof(item));
	item.type = cJSON_String;
	item.valuestring = text.item;
	return size <= INT32_MAX && cJSON_PrintPreallocated(&item, buf, (int)size, false);
}

char *presence__json_string(const char *s, char *stack)
{
	size_t len = strlen(s);
	char *buf = stack;

	if (len > PRESENCE__STRING_STACK_BYTES) {
		if (len > (SIZE_MAX - 8) / 6) {
			return NULL;
		}
		buf = malloc(ESCAPED_SIZE(len));
		if (buf == NULL) {
			return NULL;
		}
	}
	if (!escape_into(s, buf, buf == stack ? PRESENCE__STRING_STACK_SIZE : ESCAPED_SIZE(len))) {
		if (buf != stack) {
			free(buf);
		}
		return NULL;
	}
	return buf;
}

/* Renders doc into one buffer from alloc (see presence_document_render_with), with
 * ,"known":true before the closing brace when known is true. */
static char *render(const struct presence_document *doc, bool known, size_t *len,
                    presence_document_alloc_fn alloc)
{
	char name_stack[PRESENCE__STRING_STACK_SIZE];
	char sessions[INTEGER_TEXT_SIZE], since[INTEGER_TEXT_SIZE], seq[INTEGER_TEXT_SIZE];
	char *name = presence__json_string(doc->username, name_stack);
	char *text = NULL;
	struct piece pieces[12];
	size_t count = 0, total = 0;
	const char *digits;

	*len = 0;
	if (name == NULL) {
		return NULL;
	}

	pieces[count++] = (struct piece)LITERAL("{\"username\":");
	pieces[count++] = (struct piece){name, strlen(name)};
	pieces[count++] = doc->available
	                      ? (struct piece)LITERAL(",\"available\":true,\"sessions\":")
	                      : (struct piece)LITERAL(",\"available\":false,\"sessions\":");
	digits = presence__digits_u64(sessions, doc->sessions);
	pieces[count++] = (struct piece){digits, (size_t)(sessions + INTEGER_TEXT_SIZE - digits)};
	pieces[count++] = (struct piece)LITERAL(",\"since\":");
	digits = presence__digits_i64(since, doc->since_ms);
	pieces[count++] = (struct piece){digits, (size_t)(since + INTEGER_TEXT_SIZE - digits)};
	pieces[count++] = (struct piece)LITERAL(",\"seq\":");
	digits = presence__digits_u64(seq, doc->seq);
	pieces[count++] = (struct piece){digits, (size_t)(seq + INTEGER_TEXT_SIZE - digits)};
	pieces[count++] = (struct piece)LITERAL(",\"state\":");
	pieces[count++] = doc->state_json != NULL
	                      ? (struct piece){doc->state_json, strlen(doc->state_json)}
	                      : (struct piece)LITERAL("{}");
	pieces[count++] =
	    known ? (struct piece)LITERAL(",\"known\":true}") : (struct piece)LITERAL("}");

	for (size_t i = 0; i < count; i++) {
		total += pieces[i].len;
	}
	text = alloc(total + 1);
	if (text != NULL) {
		char *p = text;

		for (size_t i = 0; i < count; i++) {
			memcpy(p, pieces[i].text, pieces[i].len);
			p += pieces[i].len;
		}
		*p = '\0';
		*len = total;
	}

	if (name != name_stack) {
		free(name);
	}
	return text;
}

char *presence_document_render_with(const struct presence_document *doc, size_t *len,
                                    presence_document_alloc_fn alloc)
{
	return render(doc, false, len, alloc);
}

char *presence_document_render(const struct presence_document *doc, size_t *len)
{
	return render(doc, false, len, cJSON_malloc);
}

/* Prints root compactly and deletes it. Returns the text, or NULL when allocation fails. */
static char *print_and_delete(cJSON *root, size_t *len)
{
	char *text = cJSON_PrintUnformatted(root);

	cJSON_Delete(root);
	*len = text != NULL ? strlen(text) : 0;
	return text;
}

cJSON *presence_document_build(const struct presence_document *doc, bool mark_known)
{
	size_t len;
	char *text = render(doc, mark_known, &len, cJSON_malloc);
	cJSON *item;

	if (text == NULL) {
		return NULL;
	}
	item = cJSON_CreateRaw(text);
	cJSON_free(text);
	return item;
}

cJSON *presence_document_build_unknown(const char *username)
{
	cJSON *root = cJSON_CreateObject();

	if (root == NULL) {
		return NULL;
	}
	if (cJSON_AddStringToObject(root, "username", username) == NULL ||
	    cJSON_AddFalseToObject(root, "available") == NULL ||
	    cJSON_AddFalseToObject(root, "known") == NULL) {
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

void presence_document_free(char *text)
{
	cJSON_free(text);
}

char *presence_document_render_error(const char *topic, const char *error, size_t *len)
{
	cJSON *root = cJSON_CreateObject();

	*len = 0;
	if (root == NULL) {
		return NULL;
	}
	if (cJSON_AddStringToObject(root, "topic", topic) == NULL ||
	    cJSON_AddStringToObject(root, "error", error) == NULL) {
		cJSON_Delete(root);
		return NULL;
	}
	return print_and_delete(root, len);
}
