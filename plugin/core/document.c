/*
 * The presence document and the rejection notice, rendered with cJSON (see document.h).
 *
 * Members are added in the documented order and cJSON prints them in insertion order, so the
 * output is byte-for-byte deterministic; cJSON also does the string escaping (quotes,
 * backslashes, control characters; UTF-8 passes through).
 *
 * The integers go in as raw number text rather than cJSON numbers. cJSON keeps numbers as
 * doubles, and 1.7.15 prints a double with 15 significant digits whenever that reads back within
 * an epsilon: 2^53 comes out as 9.00719925474099e+15. Raw text prints every int64/uint64
 * exactly.
 *
 * The state is embedded by reference (cJSON_CreateObjectReference over the state's members):
 * it is printed straight from the state's tree, with no copy, and deleting the document leaves
 * the state alone. For query responses the state comes as compact text instead and is embedded
 * as a raw item, which cJSON prints verbatim: the same bytes the state's tree printed when that
 * text was made.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "document.h"

/* Room for any int64 or uint64 in decimal, with sign and NUL. */
#define INTEGER_TEXT_SIZE 24

/* Adds name: value as an unsigned integer. Returns false when allocation fails. */
static bool add_unsigned(cJSON *object, const char *name, uint64_t value)
{
	char text[INTEGER_TEXT_SIZE];

	snprintf(text, sizeof(text), "%" PRIu64, value);
	return cJSON_AddRawToObject(object, name, text) != NULL;
}

/* Adds name: value as a signed integer. Returns false when allocation fails. */
static bool add_signed(cJSON *object, const char *name, int64_t value)
{
	char text[INTEGER_TEXT_SIZE];

	snprintf(text, sizeof(text), "%" PRId64, value);
	return cJSON_AddRawToObject(object, name, text) != NULL;
}

/*
 * Adds name: a reference to the members of state (which stays owned by its caller); a NULL
 * state, or anything but an object, is added as {}. Returns false when allocation fails.
 */
static bool add_state(cJSON *object, const char *name, const cJSON *state)
{
	cJSON *ref = cJSON_CreateObjectReference(cJSON_IsObject(state) ? state->child : NULL);

	if (ref == NULL) {
		return false;
	}
	if (!cJSON_AddItemToObject(object, name, ref)) {
		/* Deleting a reference frees the reference only. */
		cJSON_Delete(ref);
		return false;
	}
	return true;
}

/* Prints root compactly and deletes it. Returns the text, or NULL when allocation fails. */
static char *print_and_delete(cJSON *root, size_t *len)
{
	char *text = cJSON_PrintUnformatted(root);

	cJSON_Delete(root);
	*len = text != NULL ? strlen(text) : 0;
	return text;
}

/*
 * Builds the document's members in their documented order. The state is the raw text state_json
 * when it is not NULL, otherwise a reference to doc->state. Returns NULL when allocation fails.
 */
static cJSON *document_tree(const struct presence_document *doc, const char *state_json)
{
	cJSON *root = cJSON_CreateObject();

	if (root == NULL) {
		return NULL;
	}
	if (cJSON_AddStringToObject(root, "username", doc->username) == NULL ||
	    cJSON_AddBoolToObject(root, "available", doc->available) == NULL ||
	    !add_unsigned(root, "sessions", doc->sessions) ||
	    !add_signed(root, "since", doc->since_ms) || !add_unsigned(root, "seq", doc->seq) ||
	    (state_json != NULL ? cJSON_AddRawToObject(root, "state", state_json) == NULL
	                        : !add_state(root, "state", doc->state))) {
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

char *presence_document_render(const struct presence_document *doc, size_t *len)
{
	cJSON *root = document_tree(doc, NULL);

	*len = 0;
	if (root == NULL) {
		return NULL;
	}
	return print_and_delete(root, len);
}

cJSON *presence_document_build(const struct presence_document *doc, const char *state_json,
                               bool mark_known)
{
	cJSON *root = document_tree(doc, state_json != NULL ? state_json : "{}");

	if (root != NULL && mark_known && cJSON_AddTrueToObject(root, "known") == NULL) {
		cJSON_Delete(root);
		return NULL;
	}
	return root;
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
