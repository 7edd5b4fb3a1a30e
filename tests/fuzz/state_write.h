/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The state-write check shared by fuzz_set_key and fuzz_merge. The input is one write, applied
 * to a fixed starting state under small limits (so that every limit is reachable):
 *   set_key: byte 0 = key length (mod 160), then the key, then the payload;
 *   merge:   the whole input is the payload.
 * Invariants:
 * - an accepted write leaves a state that is a JSON object, within every limit (or no worse
 *   than before on that measure), whose document renders as JSON one level deeper;
 *   "changed" is exactly whether the rendering differs;
 * - a rejected write leaves the state byte for byte unchanged, reports no change and gives a
 *   reason;
 * - the same write applied again is accepted and changes nothing (idempotence).
 */
#ifndef PRESENCE_FUZZ_STATE_WRITE_H
#define PRESENCE_FUZZ_STATE_WRITE_H

#include <stdbool.h>
#include <string.h>

#include "document.h"
#include "fuzz.h"
#include "state.h"
#include "testing.h"

static const struct presence_state_limits fuzz_limits = {
    .max_state_bytes = 512, .max_keys = 8, .max_depth = 6};

static const char fuzz_start[] =
    "{\"status\":\"away\",\"n\":[1,{\"x\":null}],\"o\":{\"p\":1,\"q\":{\"r\":[true]}}}";

/* Applies the write; returns its result with *changed and reason as state.c leaves them. */
static inline enum presence_err fuzz_write(struct presence_state *st, bool merge, const char *key,
                                           size_t key_len, const uint8_t *payload, size_t len,
                                           bool *changed, char *reason)
{
	if (merge) {
		return presence_state_merge(st, &fuzz_limits, payload, len, changed, reason);
	}
	return presence_state_set_key(st, &fuzz_limits, key, key_len, payload, len, changed,
	                              reason);
}

static inline void fuzz_check_state(const struct presence_state *st, const char *before)
{
	const char *json = presence_state_json(st);
	cJSON *now = cJSON_Parse(json);
	cJSON *old = cJSON_Parse(before);
	struct presence_document doc = {"fuzz", true, 1, 1, 1, json};
	size_t len = 0;
	char *text;
	cJSON *rendered;

	FUZZ_CHECK(now != NULL && cJSON_IsObject(now));
	FUZZ_CHECK(old != NULL);
	FUZZ_CHECK(strlen(json) == presence_state_json_len(st));
	FUZZ_CHECK(strlen(json) <= fuzz_limits.max_state_bytes || strlen(json) <= strlen(before));
	FUZZ_CHECK(fuzz_json_members(now) <= fuzz_limits.max_keys ||
	           fuzz_json_members(now) <= fuzz_json_members(old));
	FUZZ_CHECK(fuzz_json_depth(now) <= fuzz_limits.max_depth ||
	           fuzz_json_depth(now) <= fuzz_json_depth(old));
	/* cJSON prints back exactly the rendering. */
	text = cJSON_PrintUnformatted(now);
	FUZZ_CHECK(text != NULL && strcmp(text, json) == 0);
	cJSON_free(text);
	text = presence_document_render(&doc, &len);
	FUZZ_CHECK(text != NULL && strlen(text) == len);
	rendered = cJSON_Parse(text);
	FUZZ_CHECK(rendered != NULL && fuzz_json_depth(rendered) == fuzz_json_depth(now) + 1);
	cJSON_Delete(rendered);
	presence_document_free(text);
	cJSON_Delete(old);
	cJSON_Delete(now);
}

static inline int fuzz_state_write(const uint8_t *data, size_t size, bool merge)
{
	char key[160];
	size_t key_len = 0;
	char reason[PRESENCE_STATE_REASON_SIZE];
	struct presence_state *st = presence_state_new();
	cJSON *start = cJSON_Parse(fuzz_start);
	enum presence_err err;
	bool changed = true;
	char *before;

	FUZZ_CHECK(st != NULL && start != NULL);
	FUZZ_CHECK(presence_state_restore(st, start) == PRESENCE_OK);
	cJSON_Delete(start);
	if (!merge) {
		if (size == 0) {
			presence_state_free(st);
			return 0;
		}
		key_len = data[0] % sizeof(key);
		data++;
		size--;
		if (key_len > size) {
			key_len = size;
		}
		memcpy(key, data, key_len);
		data += key_len;
		size -= key_len;
	}
	before = strdup(presence_state_json(st));
	FUZZ_CHECK(before != NULL);
	reason[0] = 'x';
	err = fuzz_write(st, merge, key, key_len, data, size, &changed, reason);
	if (err != PRESENCE_OK) {
		FUZZ_CHECK(err == PRESENCE_ERR_INVAL || err == PRESENCE_ERR_TOO_LARGE);
		FUZZ_CHECK(!changed);
		FUZZ_CHECK(reason[0] != '\0' && memchr(reason, '\0', sizeof(reason)) != NULL);
		FUZZ_CHECK(strcmp(presence_state_json(st), before) == 0);
	} else {
		char *after;

		FUZZ_CHECK(changed == (strcmp(presence_state_json(st), before) != 0));
		fuzz_check_state(st, before);
		after = strdup(presence_state_json(st));
		FUZZ_CHECK(after != NULL);
		/* Idempotence: the same write again is accepted and changes nothing. */
		changed = true;
		FUZZ_CHECK(fuzz_write(st, merge, key, key_len, data, size, &changed, reason) ==
		           PRESENCE_OK);
		FUZZ_CHECK(!changed);
		FUZZ_CHECK(strcmp(presence_state_json(st), after) == 0);
		free(after);
	}
	free(before);
	presence_state_free(st);
	return 0;
}

#endif
