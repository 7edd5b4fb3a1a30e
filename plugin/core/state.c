/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * A user's presence state: a cJSON object and its compact rendering (see state.h).
 *
 * A state is only its compact rendering. Every write builds a candidate: the state's tree, read
 * back from the rendering, with the write applied, rendered once, checked against the limits
 * and compared with the current rendering. Only then does the candidate's text replace the
 * state's, so a write that is rejected or runs out of memory halfway leaves it exactly as it
 * was, and "changed" is simply whether the rendering differs. Keeping the tree as well would
 * double what a state costs (and a tree of small cJSON nodes costs more than its text), for no
 * gain: a write needed a deep copy of the tree anyway, and reading it back costs about the
 * same. An empty state has no rendering of its own (the text is the constant "{}"), which is
 * what lets presence_state_clear work without allocating.
 *
 * The rendering is read back member by member (state_tree): cJSON parses each key and each
 * value on its own, so a value nested as deep as cJSON accepts in a payload (its nesting limit)
 * reads back although the object around it adds one level.
 *
 * cJSON alone decides what is JSON: a payload is JSON when cJSON parses the whole of it. cJSON
 * returns NULL both for a syntax error and for a failed allocation, so when memory runs out
 * inside its parser a JSON payload is taken for text: set_key stores it as a string and merge
 * refuses it as not an object. That is accepted rather than writing a JSON scanner of our own
 * to tell the two apart: the result is still a valid state built all-or-nothing, and every
 * other allocation failure is reported as PRESENCE_ERR_NOMEM.
 *
 * Two things cJSON would silently get wrong are refused instead: a \u escape that decodes to
 * NUL (cJSON strings are NUL-terminated, so "a\u0000b" would become "a"; cJSON 1.7.15 also
 * decodes an escape with non-hex digits, such as \uZZZZ, to NUL) and a number beyond the range
 * of a double (cJSON keeps infinity and prints it as null).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state.h"
#include "testing.h"
#include "text.h"
#include "utf8.h"

/* The rendering of an empty state. */
#define EMPTY_JSON "{}"

/* Room for the decimal digits of a whole number below 10^15, a sign and a NUL. */
#define INTEGER_TEXT_SIZE 24

/* A new value whose rendering fits this many bytes is printed on the stack. */
#define VALUE_STACK_BYTES 256

/* What the key rules are, as reasons say it. */
#define KEY_RULE "keys are 1 to 128 bytes without '/', '+' or '#'"

#define REASON_NOT_TEXT "payload is neither JSON nor UTF-8 text"
#define REASON_NOT_OBJECT "state must be a JSON object"
#define REASON_NUL "payload contains \\u0000; state strings cannot hold NUL characters"
#define REASON_BAD_ESCAPE "payload has a \\u escape that is not four hex digits"
#define REASON_RANGE "payload has a number out of range"

/* Returns true when every number in item is finite (cJSON turns 1e999 into infinity). */
static bool json_numbers_finite(const cJSON *item)
{
	const cJSON *child;

	if (cJSON_IsNumber(item)) {
		return isfinite(item->valuedouble);
	}
	for (child = item->child; child != NULL; child = child->next) {
		if (!json_numbers_finite(child)) {
			return false;
		}
	}
	return true;
}

/*
 * Returns the reason to refuse a JSON payload with a \u escape that cJSON decodes to NUL, or
 * NULL when it has none. cJSON strings end at the first NUL, so "a\u0000b" would be stored as
 * "a"; cJSON 1.7.15 also decodes an escape whose four digits are not all hex (\uZZZZ, \u00G0)
 * to NUL instead of refusing it. Only for a payload cJSON parsed: in one, a backslash occurs only
 * inside a string, so stepping over each backslash and the byte it escapes visits the escapes
 * exactly as cJSON decodes them, and an escaped backslash followed by "u0000" (the text \u0000)
 * is not mistaken for an escape. Hex digits may be either case, as for cJSON.
 */
static const char *nul_escape_reason(const char *payload, size_t len)
{
	static const char hex[] = "0123456789abcdefABCDEF";
	size_t i;
	size_t d;

	for (i = 0; i + 1 < len; i++) {
		if (payload[i] != '\\') {
			continue;
		}
		/* Step onto the escaped byte, so that the loop steps over it. */
		i++;
		if (payload[i] != 'u' || len - i <= 4) {
			continue;
		}
		for (d = 1; d <= 4; d++) {
			if (payload[i + d] == '\0' || strchr(hex, payload[i + d]) == NULL) {
				return REASON_BAD_ESCAPE;
			}
		}
		if (memcmp(payload + i + 1, "0000", 4) == 0) {
			return REASON_NUL;
		}
	}
	return NULL;
}

bool presence__json_has_nul_escape(const char *json, size_t len)
{
	return nul_escape_reason(json, len) != NULL;
}

/* Orders member names (pointers to cJSON nodes) by their text. */
static int compare_member_names(const void *a, const void *b)
{
	const cJSON *const *x = a;
	const cJSON *const *y = b;

	return strcmp((*x)->string, (*y)->string);
}

/*
 * Looks for an object in item (item included) that names a member twice. Returns PRESENCE_OK
 * with *repeated the repeated name (owned by item) or NULL when there is none, or
 * PRESENCE_ERR_NOMEM. The names of each object are sorted to find a repeat, so a payload costs
 * O(n log n) in its members however they are spelled.
 */
static enum presence_err repeated_name(const cJSON *item, const char **repeated)
{
	const cJSON *child;
	const cJSON **names;
	size_t n = 0, i;

	*repeated = NULL;
	for (child = item->child; child != NULL; child = child->next) {
		enum presence_err err = repeated_name(child, repeated);

		if (err != PRESENCE_OK || *repeated != NULL) {
			return err;
		}
		n++;
	}
	if (!cJSON_IsObject(item) || n < 2) {
		return PRESENCE_OK;
	}
	names = malloc(n * sizeof(*names));
	if (names == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	for (child = item->child, i = 0; child != NULL; child = child->next) {
		names[i++] = child;
	}
	qsort(names, n, sizeof(*names), compare_member_names);
	for (i = 1; i < n && *repeated == NULL; i++) {
		if (strcmp(names[i - 1]->string, names[i]->string) == 0) {
			*repeated = names[i]->string;
		}
	}
	free(names);
	return PRESENCE_OK;
}

/* Makes every negative zero in item a zero. cJSON 1.7.15 prints -0 as "-0", 1.7.19 as "0"; the
 * plugin's output must not depend on the cJSON release it runs with, and -0 == 0 in JSON. */
static void json_zeros_unsigned(cJSON *item)
{
	cJSON *child;

	if (cJSON_IsNumber(item)) {
		if (item->valuedouble == 0.0) {
			cJSON_SetNumberValue(item, 0.0);
		}
		return;
	}
	for (child = item->child; child != NULL; child = child->next) {
		json_zeros_unsigned(child);
	}
}

/*
 * Checks value, parsed from the len bytes at payload, before it is stored. Returns PRESENCE_OK
 * when it can be stored, which it then is with every negative zero made a zero;
 * PRESENCE_ERR_INVAL with the reason filled in when it is refused; PRESENCE_ERR_NOMEM.
 */
static enum presence_err json_refusal(const char *payload, size_t len, cJSON *value, char *reason)
{
	const char *refusal = nul_escape_reason(payload, len);
	const char *repeated = NULL;
	enum presence_err err;
	size_t shown;

	if (refusal == NULL && !json_numbers_finite(value)) {
		refusal = REASON_RANGE;
	}
	if (refusal != NULL) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE, "%s", refusal);
		return PRESENCE_ERR_INVAL;
	}
	err = repeated_name(value, &repeated);
	if (err != PRESENCE_OK) {
		return err;
	}
	if (repeated == NULL) {
		json_zeros_unsigned(value);
		return PRESENCE_OK;
	}
	/* A repeated name would make a write that is applied twice differ the second time
	 * (RFC 8259 leaves its meaning open); I-JSON (RFC 7493) refuses it, and so do we. */
	shown = presence_text_quote_len(repeated, strlen(repeated));
	snprintf(reason, PRESENCE_STATE_REASON_SIZE,
	         "payload repeats the member name \"%.*s%s\"; names must be unique", (int)shown,
	         repeated, shown < strlen(repeated) ? "..." : "");
	return PRESENCE_ERR_INVAL;
}

/*
 * Returns how deeply text (a compact rendering from cJSON) nests objects and arrays: 0 for a
 * scalar, 1 for {} or {"a":1}, 2 for {"a":[1]}. Brackets inside strings do not count.
 */
static size_t json_depth(const char *text)
{
	size_t depth = 0, deepest = 0;
	bool in_string = false;
	const char *p;

	for (p = text; *p != '\0'; p++) {
		if (in_string) {
			if (*p == '\\' && p[1] != '\0') {
				p++;
			} else if (*p == '"') {
				in_string = false;
			}
		} else if (*p == '"') {
			in_string = true;
		} else if (*p == '{' || *p == '[') {
			if (++depth > deepest) {
				deepest = depth;
			}
		} else if (*p == '}' || *p == ']') {
			depth--;
		}
	}
	return deepest;
}

/*
 * Refuses new_text (the state a write would make) when it breaks the depth limit and nests
 * deeper than old_text, the state before the write. Returns true with reason filled in when
 * it is refused.
 */
static bool too_deep(const struct presence_state_limits *limits, const char *new_text,
                     const char *old_text, char *reason)
{
	size_t depth = json_depth(new_text);

	if (depth <= limits->max_depth || depth <= json_depth(old_text)) {
		return false;
	}
	snprintf(reason, PRESENCE_STATE_REASON_SIZE,
	         "state would be nested %zu levels deep; max_state_depth is %zu", depth,
	         limits->max_depth);
	return true;
}

/*
 * Refuses a payload longer than PRESENCE_STATE_PAYLOAD_FACTOR x max_state_bytes before any work
 * is spent on it (see state.h for why). Returns true with reason filled in when it is refused.
 */
static bool payload_too_large(const struct presence_state_limits *limits, size_t len, char *reason)
{
	size_t max = SIZE_MAX;

	if (limits->max_state_bytes <= SIZE_MAX / PRESENCE_STATE_PAYLOAD_FACTOR) {
		max = limits->max_state_bytes * PRESENCE_STATE_PAYLOAD_FACTOR;
	}
	if (len <= max) {
		return false;
	}
	snprintf(reason, PRESENCE_STATE_REASON_SIZE,
	         "payload is %zu bytes; at most %zu (%d x max_state_bytes) are accepted", len, max,
	         PRESENCE_STATE_PAYLOAD_FACTOR);
	return true;
}

/*
 * Parses text (len bytes, then a NUL) as one JSON value. cJSON must reach the NUL with only
 * white space after the value, so that "42abc" or "1 2" is text rather than its first value.
 * Returns the value (the caller deletes it), or NULL when the text is not JSON or cJSON ran out
 * of memory, which cJSON does not tell apart (see the top of the file).
 */
static cJSON *parse_json(const char *text, size_t len)
{
	const char *end = NULL;
	cJSON *value = cJSON_ParseWithLengthOpts(text, len + 1, &end, true);

	/* Callers pass text without a NUL of its own; were there one, cJSON would stop at it. */
	if (value != NULL && end != text + len) {
		cJSON_Delete(value);
		value = NULL;
	}
	return value;
}

/* Returns true when the len bytes at s are exactly one number in RFC 8259's grammar,
 * -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, with optional JSON white space around it.
 * cJSON also reads "007", "1." or "+1" as numbers; a payload like a postcode or an id with
 * leading zeros must stay the text it was sent as, so bare numbers are checked strictly. */
static bool json_number_token(const char *s, size_t len)
{
	size_t i = 0, end = len, digits;

	while (i < end && strchr(" \t\r\n", s[i]) != NULL && s[i] != '\0') {
		i++;
	}
	while (end > i && strchr(" \t\r\n", s[end - 1]) != NULL && s[end - 1] != '\0') {
		end--;
	}
	if (i < end && s[i] == '-') {
		i++;
	}
	if (i < end && s[i] == '0') {
		i++;
	} else {
		for (digits = 0; i < end && s[i] >= '0' && s[i] <= '9'; i++) {
			digits++;
		}
		if (digits == 0) {
			return false;
		}
	}
	if (i < end && s[i] == '.') {
		for (i++, digits = 0; i < end && s[i] >= '0' && s[i] <= '9'; i++) {
			digits++;
		}
		if (digits == 0) {
			return false;
		}
	}
	if (i < end && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < end && (s[i] == '+' || s[i] == '-')) {
			i++;
		}
		for (digits = 0; i < end && s[i] >= '0' && s[i] <= '9'; i++) {
			digits++;
		}
		if (digits == 0) {
			return false;
		}
	}
	return i == end;
}

/*
 * Turns a set_key payload (len > 0) into a value: one JSON value when cJSON parses the whole
 * payload, otherwise a string holding the payload. Returns PRESENCE_OK with the new value in
 * *value (the caller deletes it), PRESENCE_ERR_INVAL with reason filled in, or
 * PRESENCE_ERR_NOMEM.
 */
static enum presence_err payload_value(const char *payload, size_t len, cJSON **value, char *reason)
{
	enum presence_err err = PRESENCE_OK;
	char *text;

	*value = NULL;
	if (!presence_utf8_valid(payload, len)) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE, "%s", REASON_NOT_TEXT);
		return PRESENCE_ERR_INVAL;
	}
	text = presence_text_dup(payload, len);
	if (text == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	*value = parse_json(text, len);
	if (*value != NULL && cJSON_IsNumber(*value) && !json_number_token(text, len)) {
		cJSON_Delete(*value);
		*value = NULL;
	}
	if (*value == NULL) {
		/* Not JSON, or cJSON ran out of memory parsing it: text either way. */
		*value = cJSON_CreateString(text);
		if (*value == NULL) {
			err = PRESENCE_ERR_NOMEM;
		}
		goto free_text;
	}
	err = json_refusal(payload, len, *value, reason);
	if (err != PRESENCE_OK) {
		cJSON_Delete(*value);
		*value = NULL;
	}

free_text:
	free(text);
	return err;
}

/*
 * Writes the reason for refusing key: the key quoted (presence_text_quote_len) when it is text
 * that can be shown, and the rule.
 */
static void key_reason(char *reason, const char *key, size_t key_len)
{
	size_t shown;

	if (!presence_utf8_valid(key, key_len)) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE, "invalid key (not UTF-8 text): %s",
		         KEY_RULE);
		return;
	}
	shown = presence_text_quote_len(key, key_len);
	snprintf(reason, PRESENCE_STATE_REASON_SIZE, "invalid key \"%.*s%s\": %s", (int)shown,
	         shown > 0 ? key : "", shown < key_len ? "..." : "", KEY_RULE);
}

/* Returns the number of members of object. */
static size_t object_size(const cJSON *object)
{
	const cJSON *child;
	size_t n = 0;

	for (child = object->child; child != NULL; child = child->next) {
		n++;
	}
	return n;
}

/* Removes every member of object named name (a payload may have repeated a name). */
static void object_remove(cJSON *object, const char *name)
{
	cJSON *member;

	while ((member = cJSON_DetachItemFromObjectCaseSensitive(object, name)) != NULL) {
		cJSON_Delete(member);
	}
}

/*
 * Sets object[name] = value: replaces the first member named name in place (keeping its
 * position), or appends; cJSON's ReplaceItemInObject fails when the name is missing. Returns
 * true when object owns value; on false nothing changed and the caller still owns value.
 */
static bool object_upsert(cJSON *object, const char *name, cJSON *value)
{
	cJSON *old = cJSON_GetObjectItemCaseSensitive(object, name);
	size_t size;
	char *copy;

	if (old == NULL) {
		return cJSON_AddItemToObject(object, name, value);
	}
	size = strlen(name) + 1;
	copy = cJSON_malloc(size);
	if (copy == NULL) {
		return false;
	}
	memcpy(copy, name, size);
	if (value->string != NULL && !(value->type & cJSON_StringIsConst)) {
		cJSON_free(value->string);
	}
	value->string = copy;
	value->type &= ~cJSON_StringIsConst;
	/* Cannot fail: old is a member of object. It deletes old. */
	return cJSON_ReplaceItemViaPointer(object, old, value);
}

/* RFC 7396 for an object target and an object patch; target is patched in place. */
static enum presence_err merge_object(cJSON *target, const cJSON *patch)
{
	const cJSON *entry;

	for (entry = patch->child; entry != NULL; entry = entry->next) {
		cJSON *member;
		cJSON *value = NULL;
		enum presence_err err;

		if (cJSON_IsNull(entry)) {
			object_remove(target, entry->string);
			continue;
		}
		member = cJSON_GetObjectItemCaseSensitive(target, entry->string);
		if (cJSON_IsObject(member) && cJSON_IsObject(entry)) {
			err = merge_object(member, entry);
		} else {
			/* On failure value may hold a partial result, which is ours to delete. */
			err = presence_state_merge_patch(&value, entry);
			if (err == PRESENCE_OK && !object_upsert(target, entry->string, value)) {
				err = PRESENCE_ERR_NOMEM;
			}
			if (err != PRESENCE_OK) {
				cJSON_Delete(value);
			}
		}
		if (err != PRESENCE_OK) {
			return err;
		}
	}
	return PRESENCE_OK;
}

enum presence_err presence_state_merge_patch(cJSON **target, const cJSON *patch)
{
	cJSON *result;

	if (!cJSON_IsObject(patch)) {
		result = cJSON_Duplicate(patch, true);
		if (result == NULL) {
			return PRESENCE_ERR_NOMEM;
		}
		cJSON_Delete(*target);
		*target = result;
		return PRESENCE_OK;
	}
	if (!cJSON_IsObject(*target)) {
		result = cJSON_CreateObject();
		if (result == NULL) {
			return PRESENCE_ERR_NOMEM;
		}
		cJSON_Delete(*target);
		*target = result;
	}
	return merge_object(*target, patch);
}

/* Makes text (a rendering from cJSON_PrintUnformatted, or NULL for "{}") the state's rendering.
 * The text it replaces is kept as the marked one if it is that, else freed. */
static void state_replace(struct presence_state *st, char *text)
{
	/* While nothing was replaced since the mark, marked already points at the text. */
	if (st->marked != st->json) {
		cJSON_free(st->json);
	}
	st->json = text;
}

/*
 * Reads the state's rendering back into a new object (the caller deletes it), member by member
 * (see the top of the file). Returns NULL when memory runs out: the text is the state's own
 * rendering from cJSON_PrintUnformatted ({"key":value,...} without white space), so every key
 * and value parses.
 */
static cJSON *state_tree(const struct presence_state *st)
{
	cJSON *tree = cJSON_CreateObject();
	const char *p, *end;

	if (tree == NULL || st->json == NULL) {
		return tree;
	}
	end = st->json + strlen(st->json);
	p = st->json + 1;
	while (p < end && *p != '}') {
		const char *after = NULL;
		cJSON *key = cJSON_ParseWithLengthOpts(p, (size_t)(end - p), &after, false);
		cJSON *value = NULL;

		if (cJSON_IsString(key) && after < end && *after == ':') {
			p = after + 1;
			value = cJSON_ParseWithLengthOpts(p, (size_t)(end - p), &after, false);
		}
		if (value == NULL || !cJSON_AddItemToObject(tree, key->valuestring, value)) {
			cJSON_Delete(value);
			cJSON_Delete(key);
			cJSON_Delete(tree);
			return NULL;
		}
		cJSON_Delete(key);
		p = after < end && *after == ',' ? after + 1 : after;
	}
	return tree;
}

/*
 * The limits every write keeps, checked the same way whatever the write (a merge, a whole state,
 * one key): keys, len and text describe the state after the write, old_keys, old_len and
 * old_text the state before it. A limit is enforced only when the write makes things worse, so a
 * state already over a limit (the limits were lowered, or it was loaded) may still shrink.
 * Returns true, with the reason written, when the write must be refused.
 */
static bool over_limits(const struct presence_state_limits *limits, size_t keys, size_t old_keys,
                        const char *text, size_t len, const char *old_text, size_t old_len,
                        char *reason)
{
	if (keys > limits->max_keys && keys > old_keys) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE,
		         "state would have %zu keys; max_keys is %zu", keys, limits->max_keys);
		return true;
	}
	if (len > limits->max_state_bytes && len > old_len) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE,
		         "state would be %zu bytes; max_state_bytes is %zu", len,
		         limits->max_state_bytes);
		return true;
	}
	return too_deep(limits, text, old_text, reason);
}

/*
 * Checks candidate (the state's tree with a write applied, owned by this function) against
 * limits (over_limits) and, when it passes, makes its rendering the state. old_keys is the
 * number of keys before the write. On any error the candidate is deleted and st is unchanged.
 */
static enum presence_err state_commit(struct presence_state *st,
                                      const struct presence_state_limits *limits, cJSON *candidate,
                                      size_t old_keys, bool *changed, char *reason)
{
	size_t keys = object_size(candidate);
	enum presence_err err = PRESENCE_ERR_NOMEM;
	size_t len;
	char *text;

	text = cJSON_PrintUnformatted(candidate);
	if (text == NULL) {
		goto free_candidate;
	}
	len = strlen(text);
	err = PRESENCE_ERR_TOO_LARGE;
	if (over_limits(limits, keys, old_keys, text, len, presence_state_json(st),
	                presence_state_json_len(st), reason)) {
		goto free_text;
	}
	err = PRESENCE_OK;
	if (strcmp(text, presence_state_json(st)) == 0) {
		goto free_text;
	}
	if (keys == 0) {
		/* An empty state renders as the constant, so that clearing needs no memory. */
		cJSON_free(text);
		text = NULL;
	}
	state_replace(st, text);
	cJSON_Delete(candidate);
	*changed = true;
	return PRESENCE_OK;

free_text:
	cJSON_free(text);
free_candidate:
	cJSON_Delete(candidate);
	return err;
}

void presence_state_init(struct presence_state *st)
{
	st->json = NULL;
	st->marked = NULL;
}

void presence_state_release(struct presence_state *st)
{
	if (st->marked != st->json) {
		cJSON_free(st->marked);
	}
	cJSON_free(st->json);
	presence_state_init(st);
}

struct presence_state *presence_state_new(void)
{
	struct presence_state *st = malloc(sizeof(*st));

	if (st != NULL) {
		presence_state_init(st);
	}
	return st;
}

void presence_state_free(struct presence_state *st)
{
	if (st == NULL) {
		return;
	}
	presence_state_release(st);
	free(st);
}

bool presence_state_key_valid(const char *key, size_t key_len)
{
	size_t i;

	if (key_len == 0 || key_len > PRESENCE_STATE_KEY_MAX) {
		return false;
	}
	for (i = 0; i < key_len; i++) {
		if (key[i] == '/' || key[i] == '+' || key[i] == '#') {
			return false;
		}
	}
	return presence_utf8_valid(key, key_len);
}

/* Where a top-level member is in the state's rendering. */
struct member_span {
	/* The member's first byte (the key's opening quote), its value's first byte, and the byte
	 * after its value. */
	const char *start, *value, *end;
};

/*
 * Walks the members of the state's rendering (every key and value parsed by cJSON, as in
 * state_tree) looking for the one named name. Sets *count to the number of members and, when
 * it is there, *span to where it is and *existing to its value parsed (the caller deletes it);
 * *existing stays NULL otherwise. Returns PRESENCE_ERR_NOMEM when memory runs out.
 */
static enum presence_err find_member(const struct presence_state *st, const char *name,
                                     struct member_span *span, cJSON **existing, size_t *count)
{
	const char *p, *end;

	*existing = NULL;
	*count = 0;
	if (st->json == NULL) {
		return PRESENCE_OK;
	}
	end = st->json + strlen(st->json);
	p = st->json + 1;
	while (p < end && *p != '}') {
		const char *after = NULL, *value_start;
		cJSON *key = cJSON_ParseWithLengthOpts(p, (size_t)(end - p), &after, false);
		cJSON *value;
		bool match;

		if (!cJSON_IsString(key) || after >= end || *after != ':') {
			cJSON_Delete(key);
			goto out_nomem;
		}
		match = *existing == NULL && strcmp(key->valuestring, name) == 0;
		cJSON_Delete(key);
		value_start = after + 1;
		value = cJSON_ParseWithLengthOpts(value_start, (size_t)(end - value_start), &after,
		                                  false);
		if (value == NULL) {
			goto out_nomem;
		}
		if (match) {
			*existing = value;
			span->start = p;
			span->value = value_start;
			span->end = after;
		} else {
			cJSON_Delete(value);
		}
		(*count)++;
		p = after < end && *after == ',' ? after + 1 : after;
	}
	return PRESENCE_OK;

out_nomem:
	cJSON_Delete(*existing);
	*existing = NULL;
	return PRESENCE_ERR_NOMEM;
}

/*
 * Writes the decimal digits of d into buf when cJSON 1.7.15 would print exactly those: d is a
 * whole number below 10^15 in magnitude and not -0. cJSON prints every number with
 * sprintf("%1.15g") and then reads it back with sscanf to check it (about 3 000 instructions
 * per number); for these values "%1.15g" is the plain integer, which round-trips. Returns the
 * length, or 0 when d is not such a number (cJSON prints it then). buf has INTEGER_TEXT_SIZE
 * bytes.
 */
static size_t integer_text(double d, char *buf)
{
	char digits[INTEGER_TEXT_SIZE];
	char *p = digits + sizeof(digits);
	uint64_t magnitude;
	size_t len;

	if (!(d > -1e15 && d < 1e15) || (double)(int64_t)d != d || (d == 0 && signbit(d))) {
		return 0;
	}
	magnitude = (uint64_t)(d < 0 ? -d : d);
	do {
		*--p = (char)('0' + magnitude % 10);
		magnitude /= 10;
	} while (magnitude != 0);
	if (d < 0) {
		*--p = '-';
	}
	len = (size_t)(digits + sizeof(digits) - p);
	memcpy(buf, p, len);
	buf[len] = '\0';
	return len;
}

/* Returns the compact rendering of item in buf (size bytes, at least INTEGER_TEXT_SIZE) when it
 * fits, else in a buffer from cJSON_PrintUnformatted (the caller frees it with cJSON_free when
 * it is not buf), or NULL. Byte for byte what cJSON prints. */
static char *print_small(const cJSON *item, char *buf, size_t size)
{
	/* cJSON only reads the item; the union drops const without a cast. */
	union {
		const cJSON *in;
		cJSON *item;
	} arg = {.in = item};

	if (cJSON_IsNumber(item) && integer_text(item->valuedouble, buf) > 0) {
		return buf;
	}
	if (cJSON_PrintPreallocated(arg.item, buf, (int)size, false)) {
		return buf;
	}
	return cJSON_PrintUnformatted(item);
}

/* Copies the pieces (text, length) into one new rendering (from cJSON_malloc) of len bytes. */
static char *splice(size_t len, const char *a, size_t a_len, const char *b, size_t b_len,
                    const char *c, size_t c_len, const char *d, size_t d_len)
{
	char *text = cJSON_malloc(len + 1);

	if (text != NULL) {
		memcpy(text, a, a_len);
		memcpy(text + a_len, b, b_len);
		memcpy(text + a_len + b_len, c, c_len);
		memcpy(text + a_len + b_len + c_len, d, d_len);
		text[len] = '\0';
	}
	return text;
}

/*
 * A single-key write does not rebuild and print the whole state: only the key's value changes,
 * so the new rendering is the old one with cJSON's rendering of the new value in place of the
 * old (or the member appended, or cut out). That is byte for byte what printing the whole
 * candidate would give, since cJSON's compact rendering of a value does not depend on where
 * it stands; and it saves printing every other member again (cJSON prints each number with
 * sprintf) for every write.
 */
enum presence_err presence_state_set_key(struct presence_state *st,
                                         const struct presence_state_limits *limits,
                                         const char *key, size_t key_len, const void *payload,
                                         size_t payload_len, bool *changed, char *reason)
{
	char name[PRESENCE_STATE_KEY_MAX + 1];
	char value_buf[VALUE_STACK_BYTES];
	char key_buf[6 * PRESENCE_STATE_KEY_MAX + 8];
	const char *old = presence_state_json(st);
	size_t old_len = strlen(old);
	struct member_span span = {NULL, NULL, NULL};
	cJSON *value = NULL;
	cJSON *existing = NULL;
	char *value_text = NULL;
	char *text = NULL;
	size_t count, keys, len;
	enum presence_err err;

	*changed = false;
	reason[0] = '\0';
	if (!presence_state_key_valid(key, key_len)) {
		key_reason(reason, key, key_len);
		return PRESENCE_ERR_INVAL;
	}
	if (payload_too_large(limits, payload_len, reason)) {
		return PRESENCE_ERR_TOO_LARGE;
	}
	memcpy(name, key, key_len);
	name[key_len] = '\0';
	if (payload_len > 0) {
		err = payload_value(payload, payload_len, &value, reason);
		if (err != PRESENCE_OK) {
			return err;
		}
		if (cJSON_IsNull(value)) {
			cJSON_Delete(value);
			value = NULL;
		}
	}
	err = find_member(st, name, &span, &existing, &count);
	if (err != PRESENCE_OK) {
		goto out;
	}
	/* Writing what is already there changes nothing. */
	if (value == NULL ? existing == NULL : cJSON_Compare(existing, value, true)) {
		goto out;
	}

	err = PRESENCE_ERR_NOMEM;
	if (value == NULL) {
		/* Cut the member out with one of the commas around it. */
		const char *from = span.start, *to = span.end;

		keys = count - 1;
		if (*to == ',') {
			to++;
		} else if (from[-1] == ',') {
			from--;
		}
		len = old_len - (size_t)(to - from);
		if (keys > 0) {
			text = splice(len, old, (size_t)(from - old), to,
			              old_len - (size_t)(to - old), "", 0, "", 0);
			if (text == NULL) {
				goto out;
			}
		}
	} else {
		size_t value_len;

		value_text = print_small(value, value_buf, sizeof(value_buf));
		if (value_text == NULL) {
			goto out;
		}
		value_len = strlen(value_text);
		if (existing != NULL) {
			keys = count;
			len = old_len - (size_t)(span.end - span.value) + value_len;
			text = splice(len, old, (size_t)(span.value - old), value_text, value_len,
			              span.end, old_len - (size_t)(span.end - old), "", 0);
		} else {
			/* Append "<key>":<value> before the closing brace. */
			cJSON key_item;
			size_t key_text_len;

			memset(&key_item, 0, sizeof(key_item));
			key_item.type = cJSON_String;
			key_item.valuestring = name;
			if (!cJSON_PrintPreallocated(&key_item, key_buf, (int)sizeof(key_buf),
			                             false)) {
				goto out;
			}
			key_text_len = strlen(key_buf);
			keys = count + 1;
			len = old_len + (count > 0 ? 1 : 0) + key_text_len + 1 + value_len;
			text = cJSON_malloc(len + 1);
			if (text == NULL) {
				goto out;
			}
			memcpy(text, old, old_len - 1);
			len = old_len - 1;
			if (count > 0) {
				text[len++] = ',';
			}
			memcpy(text + len, key_buf, key_text_len);
			len += key_text_len;
			text[len++] = ':';
			memcpy(text + len, value_text, value_len);
			len += value_len;
			text[len++] = '}';
			text[len] = '\0';
		}
		if (text == NULL) {
			goto out;
		}
	}

	err = PRESENCE_ERR_TOO_LARGE;
	if (over_limits(limits, keys, count, text != NULL ? text : EMPTY_JSON, len, old, old_len,
	                reason)) {
		goto out;
	}
	err = PRESENCE_OK;
	if (text != NULL && strcmp(text, old) == 0) {
		goto out;
	}
	state_replace(st, text);
	text = NULL;
	*changed = true;

out:
	cJSON_free(text);
	if (value_text != value_buf) {
		cJSON_free(value_text);
	}
	cJSON_Delete(existing);
	cJSON_Delete(value);
	return err;
}

enum presence_err presence_state_merge(struct presence_state *st,
                                       const struct presence_state_limits *limits,
                                       const void *payload, size_t payload_len, bool *changed,
                                       char *reason)
{
	const cJSON *entry;
	cJSON *patch;
	cJSON *candidate;
	enum presence_err err;
	size_t old_keys;
	char *text;

	*changed = false;
	reason[0] = '\0';
	if (payload_len == 0) {
		*changed = presence_state_clear(st);
		return PRESENCE_OK;
	}
	if (payload_too_large(limits, payload_len, reason)) {
		return PRESENCE_ERR_TOO_LARGE;
	}
	if (!presence_utf8_valid(payload, payload_len)) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE, "%s", REASON_NOT_OBJECT);
		return PRESENCE_ERR_INVAL;
	}
	text = presence_text_dup(payload, payload_len);
	if (text == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	patch = parse_json(text, payload_len);
	free(text);
	if (patch == NULL) {
		/* Not JSON, or cJSON ran out of memory parsing it: text either way. */
		snprintf(reason, PRESENCE_STATE_REASON_SIZE, "%s", REASON_NOT_OBJECT);
		return PRESENCE_ERR_INVAL;
	}
	err = PRESENCE_ERR_INVAL;
	if (!cJSON_IsObject(patch)) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE, "%s", REASON_NOT_OBJECT);
		goto free_patch;
	}
	err = json_refusal(payload, payload_len, patch, reason);
	if (err != PRESENCE_OK) {
		goto free_patch;
	}
	err = PRESENCE_ERR_INVAL;
	/* Removing a key that cannot exist is harmless; adding one is not. */
	for (entry = patch->child; entry != NULL; entry = entry->next) {
		size_t len = strlen(entry->string);

		if (!cJSON_IsNull(entry) && !presence_state_key_valid(entry->string, len)) {
			key_reason(reason, entry->string, len);
			goto free_patch;
		}
	}

	err = PRESENCE_ERR_NOMEM;
	candidate = state_tree(st);
	if (candidate == NULL) {
		goto free_patch;
	}
	old_keys = object_size(candidate);
	err = presence_state_merge_patch(&candidate, patch);
	if (err != PRESENCE_OK) {
		cJSON_Delete(candidate);
		goto free_patch;
	}
	err = state_commit(st, limits, candidate, old_keys, changed, reason);

free_patch:
	cJSON_Delete(patch);
	return err;
}

enum presence_err presence_state_restore(struct presence_state *st, const cJSON *object)
{
	const struct presence_state_limits unlimited = {SIZE_MAX, SIZE_MAX, SIZE_MAX};
	char reason[PRESENCE_STATE_REASON_SIZE];
	const cJSON *entry;
	cJSON *candidate;
	bool changed = false;

	if (!cJSON_IsObject(object) || !json_numbers_finite(object)) {
		return PRESENCE_ERR_INVAL;
	}
	for (entry = object->child; entry != NULL; entry = entry->next) {
		if (!presence_state_key_valid(entry->string, strlen(entry->string))) {
			return PRESENCE_ERR_INVAL;
		}
	}
	/* The tree is rendered as a write would render it; the limits do not apply. */
	candidate = cJSON_Duplicate(object, true);
	if (candidate == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	return state_commit(st, &unlimited, candidate, 0, &changed, reason);
}

enum presence_err presence_state_adopt(struct presence_state *st, const char *json)
{
	const cJSON *entry;
	cJSON *object;
	size_t len = strlen(json);
	enum presence_err err = PRESENCE_ERR_INVAL;
	char *copy;

	if (strcmp(json, EMPTY_JSON) == 0) {
		state_replace(st, NULL);
		return PRESENCE_OK;
	}
	object = parse_json(json, len);
	if (!cJSON_IsObject(object) || !json_numbers_finite(object)) {
		goto out_delete;
	}
	for (entry = object->child; entry != NULL; entry = entry->next) {
		if (!presence_state_key_valid(entry->string, strlen(entry->string))) {
			goto out_delete;
		}
	}
	err = PRESENCE_ERR_NOMEM;
	copy = cJSON_malloc(len + 1);
	if (copy == NULL) {
		goto out_delete;
	}
	memcpy(copy, json, len + 1);
	state_replace(st, copy);
	err = PRESENCE_OK;
out_delete:
	cJSON_Delete(object);
	return err;
}

bool presence_state_clear(struct presence_state *st)
{
	if (st->json == NULL) {
		return false;
	}
	state_replace(st, NULL);
	return true;
}

bool presence_state_is_empty(const struct presence_state *st)
{
	return st->json == NULL;
}

const char *presence_state_json(const struct presence_state *st)
{
	return st->json != NULL ? st->json : EMPTY_JSON;
}

size_t presence_state_json_len(const struct presence_state *st)
{
	return strlen(presence_state_json(st));
}

void presence_state_mark(struct presence_state *st)
{
	if (st->marked != st->json) {
		cJSON_free(st->marked);
		st->marked = st->json;
	}
}

const char *presence_state_marked_json(const struct presence_state *st)
{
	return st->marked != NULL ? st->marked : EMPTY_JSON;
}

bool presence_state_changed_since_mark(const struct presence_state *st)
{
	return st->marked != st->json &&
	       strcmp(presence_state_marked_json(st), presence_state_json(st)) != 0;
}
