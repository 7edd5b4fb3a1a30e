/*
 * A user's presence state: a cJSON object and its compact rendering (see state.h).
 *
 * Every write builds a candidate: a deep copy of the tree with the write applied, rendered once,
 * checked against the limits and compared with the current rendering. Only then does the
 * candidate replace the tree and the text, so a write that is rejected or runs out of memory
 * halfway leaves both exactly as they were, and "changed" is simply whether the rendering
 * differs. An empty state has no rendering of its own (the text is the constant "{}"), which is
 * what lets presence_state_clear work without allocating.
 *
 * Payloads are classified by an allocation-free JSON scanner before cJSON sees them, because
 * cJSON returns NULL both for a syntax error and for a failed allocation. Without the scanner,
 * running out of memory while parsing "42" would look like "not JSON" and store the text "42".
 * The scanner accepts strict RFC 8259 JSON only, which is a subset of what cJSON 1.7.15 accepts
 * (cJSON also takes leading zeros, raw control characters in strings, any byte up to 0x20 as
 * white space and a byte-order mark), so a payload the scanner accepts can fail to parse only
 * for lack of memory. Payloads that are lenient-JSON but not JSON are text, e.g. "01".
 *
 * Two things cJSON would silently get wrong are refused instead: a \u0000 escape (cJSON strings
 * are NUL-terminated, so "a\u0000b" would become "a") and a number beyond the range of a double
 * (cJSON keeps infinity and prints it as null).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state.h"
#include "utf8.h"

/* The rendering of an empty state. */
#define EMPTY_JSON "{}"

/* The most bytes of a refused key quoted in a reason. */
#define KEY_QUOTE_MAX 64u

/* What the key rules are, as reasons say it. */
#define KEY_RULE "keys are 1 to 128 bytes without '/', '+' or '#'"

#define REASON_NOT_TEXT "payload is neither JSON nor UTF-8 text"
#define REASON_NOT_OBJECT "state must be a JSON object"
#define REASON_NUL "payload contains \\u0000; state strings cannot hold NUL characters"
#define REASON_RANGE "payload has a number out of range"

struct presence_state {
	/* The state object; never NULL. */
	cJSON *tree;
	/* The compact rendering of tree from cJSON_PrintUnformatted (freed with cJSON_free), or
	 * NULL while the state is empty and renders as EMPTY_JSON. */
	char *json;
	/* strlen of the rendering. */
	size_t json_len;
};

/* A strict JSON scan over a byte range (the payload need not be NUL-terminated). */
struct json_scan {
	/* The next byte to read. */
	const char *p;
	/* One past the last byte. */
	const char *end;
	/* Containers open around p. */
	unsigned int depth;
	/* Whether a \u0000 escape was seen. */
	bool nul_escape;
};

static bool scan_value(struct json_scan *sc);

/* Skips JSON white space (RFC 8259: space, tab, line feed, carriage return). */
static void scan_space(struct json_scan *sc)
{
	while (sc->p < sc->end &&
	       (*sc->p == ' ' || *sc->p == '\t' || *sc->p == '\n' || *sc->p == '\r')) {
		sc->p++;
	}
}

/* Reads the literal word (true, false or null). */
static bool scan_literal(struct json_scan *sc, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(sc->end - sc->p) < n || memcmp(sc->p, word, n) != 0) {
		return false;
	}
	sc->p += n;
	return true;
}

/* Reads the four hex digits of a \u escape into *code. */
static bool scan_hex4(struct json_scan *sc, unsigned int *code)
{
	int i;

	if (sc->end - sc->p < 4) {
		return false;
	}
	*code = 0;
	for (i = 0; i < 4; i++) {
		char c = *sc->p++;
		unsigned int digit;

		if (c >= '0' && c <= '9') {
			digit = (unsigned int)(c - '0');
		} else if (c >= 'a' && c <= 'f') {
			digit = (unsigned int)(c - 'a' + 10);
		} else if (c >= 'A' && c <= 'F') {
			digit = (unsigned int)(c - 'A' + 10);
		} else {
			return false;
		}
		*code = *code << 4 | digit;
	}
	return true;
}

/*
 * Reads a string starting at its opening quote. A \u escape of a UTF-16 surrogate must be a
 * high surrogate followed by a \u low surrogate; cJSON refuses anything else.
 */
static bool scan_string(struct json_scan *sc)
{
	sc->p++;
	while (sc->p < sc->end) {
		unsigned char c = (unsigned char)*sc->p++;
		unsigned int code;

		if (c == '"') {
			return true;
		}
		if (c < 0x20u) {
			return false;
		}
		if (c != '\\') {
			continue;
		}
		if (sc->p >= sc->end) {
			return false;
		}
		c = (unsigned char)*sc->p++;
		if (c != '\0' && strchr("\"\\/bfnrt", c) != NULL) {
			continue;
		}
		if (c != 'u' || !scan_hex4(sc, &code)) {
			return false;
		}
		if (code == 0) {
			sc->nul_escape = true;
		} else if (code >= 0xDC00u && code <= 0xDFFFu) {
			return false;
		} else if (code >= 0xD800u && code <= 0xDBFFu) {
			if (sc->end - sc->p < 2 || sc->p[0] != '\\' || sc->p[1] != 'u') {
				return false;
			}
			sc->p += 2;
			if (!scan_hex4(sc, &code) || code < 0xDC00u || code > 0xDFFFu) {
				return false;
			}
		}
	}
	return false;
}

/* Reads one or more decimal digits. */
static bool scan_digits(struct json_scan *sc)
{
	const char *start = sc->p;

	while (sc->p < sc->end && *sc->p >= '0' && *sc->p <= '9') {
		sc->p++;
	}
	return sc->p > start;
}

/* Reads a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool scan_number(struct json_scan *sc)
{
	if (sc->p < sc->end && *sc->p == '-') {
		sc->p++;
	}
	if (sc->p < sc->end && *sc->p == '0') {
		sc->p++;
	} else if (!scan_digits(sc)) {
		return false;
	}
	if (sc->p < sc->end && *sc->p == '.') {
		sc->p++;
		if (!scan_digits(sc)) {
			return false;
		}
	}
	if (sc->p < sc->end && (*sc->p == 'e' || *sc->p == 'E')) {
		sc->p++;
		if (sc->p < sc->end && (*sc->p == '+' || *sc->p == '-')) {
			sc->p++;
		}
		if (!scan_digits(sc)) {
			return false;
		}
	}
	return true;
}

/*
 * Reads an object or an array starting at its opening bracket. Nesting deeper than cJSON's
 * limit (CJSON_NESTING_LIMIT containers) is refused, as cJSON refuses it.
 */
static bool scan_container(struct json_scan *sc, bool object)
{
	char close = object ? '}' : ']';

	if (++sc->depth > CJSON_NESTING_LIMIT) {
		return false;
	}
	sc->p++;
	scan_space(sc);
	if (sc->p < sc->end && *sc->p == close) {
		sc->p++;
		sc->depth--;
		return true;
	}
	for (;;) {
		if (object) {
			scan_space(sc);
			if (sc->p >= sc->end || *sc->p != '"' || !scan_string(sc)) {
				return false;
			}
			scan_space(sc);
			if (sc->p >= sc->end || *sc->p++ != ':') {
				return false;
			}
		}
		if (!scan_value(sc)) {
			return false;
		}
		scan_space(sc);
		if (sc->p >= sc->end) {
			return false;
		}
		if (*sc->p == ',') {
			sc->p++;
			continue;
		}
		if (*sc->p++ != close) {
			return false;
		}
		sc->depth--;
		return true;
	}
}

/* Reads one value with the white space before it. */
static bool scan_value(struct json_scan *sc)
{
	scan_space(sc);
	if (sc->p >= sc->end) {
		return false;
	}
	switch (*sc->p) {
	case '{':
		return scan_container(sc, true);
	case '[':
		return scan_container(sc, false);
	case '"':
		return scan_string(sc);
	case 't':
		return scan_literal(sc, "true");
	case 'f':
		return scan_literal(sc, "false");
	case 'n':
		return scan_literal(sc, "null");
	default:
		return scan_number(sc);
	}
}

/*
 * Returns true when the len bytes at s are exactly one strict JSON value with optional white
 * space around it, and sets *nul_escape to whether a string in it has a \u0000 escape.
 */
static bool json_scan_payload(const char *s, size_t len, bool *nul_escape)
{
	struct json_scan sc = {.p = s, .end = s + len, .depth = 0, .nul_escape = false};

	if (!scan_value(&sc)) {
		return false;
	}
	scan_space(&sc);
	*nul_escape = sc.nul_escape;
	return sc.p == sc.end;
}

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
 * Parses a payload the scanner accepted. Parses a NUL-terminated copy, with cJSON required to
 * reach the NUL, so that nothing after the value can be taken for part of it. Returns the value
 * (the caller deletes it), or NULL when allocation fails.
 */
static cJSON *parse_json(const char *payload, size_t len)
{
	char *copy = malloc(len + 1);
	const char *end = NULL;
	cJSON *value;

	if (copy == NULL) {
		return NULL;
	}
	memcpy(copy, payload, len);
	copy[len] = '\0';
	value = cJSON_ParseWithLengthOpts(copy, len + 1, &end, true);
	free(copy);
	return value;
}

/*
 * Turns a set_key payload (len > 0) into a value: one JSON value when the whole payload is one,
 * otherwise a string holding the payload. Returns PRESENCE_OK with the new value in *value (the
 * caller deletes it), PRESENCE_ERR_INVAL with reason filled in, or PRESENCE_ERR_NOMEM.
 */
static enum presence_err payload_value(const char *payload, size_t len, cJSON **value, char *reason)
{
	bool nul_escape = false;
	char *text;

	*value = NULL;
	if (!presence_utf8_valid(payload, len)) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE, "%s", REASON_NOT_TEXT);
		return PRESENCE_ERR_INVAL;
	}
	if (json_scan_payload(payload, len, &nul_escape)) {
		if (nul_escape) {
			snprintf(reason, PRESENCE_STATE_REASON_SIZE, "%s", REASON_NUL);
			return PRESENCE_ERR_INVAL;
		}
		*value = parse_json(payload, len);
		if (*value == NULL) {
			return PRESENCE_ERR_NOMEM;
		}
		if (!json_numbers_finite(*value)) {
			cJSON_Delete(*value);
			*value = NULL;
			snprintf(reason, PRESENCE_STATE_REASON_SIZE, "%s", REASON_RANGE);
			return PRESENCE_ERR_INVAL;
		}
		return PRESENCE_OK;
	}
	text = malloc(len + 1);
	if (text == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	memcpy(text, payload, len);
	text[len] = '\0';
	*value = cJSON_CreateString(text);
	free(text);
	return *value == NULL ? PRESENCE_ERR_NOMEM : PRESENCE_OK;
}

/*
 * Writes the reason for refusing key: the key quoted (at most KEY_QUOTE_MAX bytes, cut at a
 * character boundary) when it is text that can be shown, and the rule.
 */
static void key_reason(char *reason, const char *key, size_t key_len)
{
	size_t shown = key_len;

	if (!presence_utf8_valid(key, key_len)) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE, "invalid key (not UTF-8 text): %s",
		         KEY_RULE);
		return;
	}
	if (shown > KEY_QUOTE_MAX) {
		shown = KEY_QUOTE_MAX;
		while (shown > 0 && ((unsigned char)key[shown] & 0xC0u) == 0x80u) {
			shown--;
		}
	}
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

/*
 * Checks candidate (a new tree for st, owned by this function) against limits and, when it
 * passes, makes it the state. A limit is enforced only when the write makes things worse: a
 * state that is already over a limit (the limits were lowered, or it was loaded) may still
 * shrink. On any error the candidate is deleted and st is unchanged.
 */
static enum presence_err state_commit(struct presence_state *st,
                                      const struct presence_state_limits *limits, cJSON *candidate,
                                      bool *changed, char *reason)
{
	size_t keys = object_size(candidate);
	size_t old_keys = object_size(st->tree);
	enum presence_err err = PRESENCE_ERR_NOMEM;
	size_t len;
	char *text;

	text = cJSON_PrintUnformatted(candidate);
	if (text == NULL) {
		goto free_candidate;
	}
	len = strlen(text);
	err = PRESENCE_ERR_TOO_LARGE;
	if (keys > limits->max_keys && keys > old_keys) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE,
		         "state would have %zu keys; max_keys is %zu", keys, limits->max_keys);
		goto free_text;
	}
	if (len > limits->max_state_bytes && len > st->json_len) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE,
		         "state would be %zu bytes; max_state_bytes is %zu", len,
		         limits->max_state_bytes);
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
	cJSON_Delete(st->tree);
	cJSON_free(st->json);
	st->tree = candidate;
	st->json = text;
	st->json_len = len;
	*changed = true;
	return PRESENCE_OK;

free_text:
	cJSON_free(text);
free_candidate:
	cJSON_Delete(candidate);
	return err;
}

struct presence_state *presence_state_new(void)
{
	struct presence_state *st = malloc(sizeof(*st));

	if (st == NULL) {
		return NULL;
	}
	st->tree = cJSON_CreateObject();
	if (st->tree == NULL) {
		free(st);
		return NULL;
	}
	st->json = NULL;
	st->json_len = strlen(EMPTY_JSON);
	return st;
}

void presence_state_free(struct presence_state *st)
{
	if (st == NULL) {
		return;
	}
	cJSON_Delete(st->tree);
	cJSON_free(st->json);
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

enum presence_err presence_state_set_key(struct presence_state *st,
                                         const struct presence_state_limits *limits,
                                         const char *key, size_t key_len, const void *payload,
                                         size_t payload_len, bool *changed, char *reason)
{
	char name[PRESENCE_STATE_KEY_MAX + 1];
	cJSON *value = NULL;
	cJSON *existing;
	cJSON *candidate;
	enum presence_err err;

	*changed = false;
	reason[0] = '\0';
	if (!presence_state_key_valid(key, key_len)) {
		key_reason(reason, key, key_len);
		return PRESENCE_ERR_INVAL;
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

	/* Writing what is already there changes nothing and needs no copy. */
	existing = cJSON_GetObjectItemCaseSensitive(st->tree, name);
	if (value == NULL ? existing == NULL : cJSON_Compare(existing, value, true)) {
		cJSON_Delete(value);
		return PRESENCE_OK;
	}

	candidate = cJSON_Duplicate(st->tree, true);
	if (candidate == NULL) {
		cJSON_Delete(value);
		return PRESENCE_ERR_NOMEM;
	}
	if (value == NULL) {
		object_remove(candidate, name);
	} else if (!object_upsert(candidate, name, value)) {
		cJSON_Delete(value);
		cJSON_Delete(candidate);
		return PRESENCE_ERR_NOMEM;
	}
	return state_commit(st, limits, candidate, changed, reason);
}

enum presence_err presence_state_merge(struct presence_state *st,
                                       const struct presence_state_limits *limits,
                                       const void *payload, size_t payload_len, bool *changed,
                                       char *reason)
{
	const cJSON *entry;
	bool nul_escape = false;
	cJSON *patch;
	cJSON *candidate;
	enum presence_err err;

	*changed = false;
	reason[0] = '\0';
	if (payload_len == 0) {
		*changed = presence_state_clear(st);
		return PRESENCE_OK;
	}
	if (!presence_utf8_valid(payload, payload_len) ||
	    !json_scan_payload(payload, payload_len, &nul_escape)) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE, "%s", REASON_NOT_OBJECT);
		return PRESENCE_ERR_INVAL;
	}
	if (nul_escape) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE, "%s", REASON_NUL);
		return PRESENCE_ERR_INVAL;
	}
	patch = parse_json(payload, payload_len);
	if (patch == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	err = PRESENCE_ERR_INVAL;
	if (!cJSON_IsObject(patch)) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE, "%s", REASON_NOT_OBJECT);
		goto free_patch;
	}
	if (!json_numbers_finite(patch)) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE, "%s", REASON_RANGE);
		goto free_patch;
	}
	/* Removing a key that cannot exist is harmless; adding one is not. */
	for (entry = patch->child; entry != NULL; entry = entry->next) {
		size_t len = strlen(entry->string);

		if (!cJSON_IsNull(entry) && !presence_state_key_valid(entry->string, len)) {
			key_reason(reason, entry->string, len);
			goto free_patch;
		}
	}

	err = PRESENCE_ERR_NOMEM;
	candidate = cJSON_Duplicate(st->tree, true);
	if (candidate == NULL) {
		goto free_patch;
	}
	err = presence_state_merge_patch(&candidate, patch);
	if (err != PRESENCE_OK) {
		cJSON_Delete(candidate);
		goto free_patch;
	}
	err = state_commit(st, limits, candidate, changed, reason);

free_patch:
	cJSON_Delete(patch);
	return err;
}

bool presence_state_clear(struct presence_state *st)
{
	cJSON *members = st->tree->child;

	if (members == NULL) {
		return false;
	}
	/* cJSON_Delete frees an item and every item after it in its list. */
	st->tree->child = NULL;
	cJSON_Delete(members);
	cJSON_free(st->json);
	st->json = NULL;
	st->json_len = strlen(EMPTY_JSON);
	return true;
}

bool presence_state_is_empty(const struct presence_state *st)
{
	return st->tree->child == NULL;
}

const char *presence_state_json(const struct presence_state *st)
{
	return st->json != NULL ? st->json : EMPTY_JSON;
}

size_t presence_state_json_len(const struct presence_state *st)
{
	return st->json_len;
}

const cJSON *presence_state_tree(const struct presence_state *st)
{
	return st->tree;
}
