/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * libFuzzer harness: user-name encoding and topic parsing.
 * The input is used twice: as a user name (when it has no NUL byte) and as a topic.
 * Invariants: the encoded level has no '/', '+' or '#', has the length
 * presence_topic_encoded_len announces, and the topics built on it parse back to that exact
 * level and kind, which presence_topic_level_is_user matches to the name and to no other name
 * (the encoding is injective); parsing any topic keeps every pointer inside the topic.
 */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "topic.h"
#include "testing.h"

#define PREFIX "presence"

static void check_topic(const char *topic, enum presence_topic_kind kind, const char *level,
                        const char *name)
{
	struct presence_topic t;

	presence_topic_parse(PREFIX, topic, &t);
	FUZZ_CHECK(t.kind == kind);
	FUZZ_CHECK(t.user_len == strlen(level) && memcmp(t.user, level, t.user_len) == 0);
	FUZZ_CHECK(presence_topic_level_is_user(t.user, t.user_len, name));
}

static void check_name(const char *name, size_t len)
{
	char *level = presence_topic_encode_user(name);
	char *other = malloc(len + 2);
	char *topic;
	size_t level_len;

	FUZZ_CHECK(level != NULL && other != NULL);
	level_len = strlen(level);
	FUZZ_CHECK(level_len == presence_topic_encoded_len(name));
	FUZZ_CHECK(strpbrk(level, "/+#") == NULL);
	topic = malloc(sizeof(PREFIX) + level_len + sizeof("/state/key"));
	FUZZ_CHECK(topic != NULL);
	sprintf(topic, PREFIX "/%s", level);
	check_topic(topic, PRESENCE_TOPIC_DOCUMENT, level, name);
	sprintf(topic, PREFIX "/%s/state", level);
	check_topic(topic, PRESENCE_TOPIC_STATE, level, name);
	sprintf(topic, PREFIX "/%s/error", level);
	check_topic(topic, PRESENCE_TOPIC_ERROR, level, name);
	sprintf(topic, PREFIX "/%s/state/key", level);
	check_topic(topic, PRESENCE_TOPIC_STATE_KEY, level, name);
	/* Injective: a different name never owns the level. */
	memcpy(other, name, len);
	other[len] = len > 0 && name[len - 1] == 'x' ? 'y' : 'x';
	other[len + 1] = '\0';
	FUZZ_CHECK(!presence_topic_level_is_user(level, level_len, other));
	if (len > 0) {
		other[len - 1] = '\0';
		FUZZ_CHECK(!presence_topic_level_is_user(level, level_len, other));
	}
	free(topic);
	free(other);
	free(level);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	struct presence_topic t;

	FUZZ_CHECK(text != NULL);
	memcpy(text, data, size);
	text[size] = '\0';
	/* Names as the adapter tracks them: not empty, no NUL. */
	if (size > 0 && memchr(data, '\0', size) == NULL) {
		check_name(text, size);
	}
	presence_topic_parse(PREFIX, text, &t);
	if (t.kind != PRESENCE_TOPIC_OUTSIDE && t.kind != PRESENCE_TOPIC_RESERVED) {
		FUZZ_CHECK(t.user >= text && t.user + t.user_len <= text + strlen(text));
	}
	if (t.kind == PRESENCE_TOPIC_STATE_KEY) {
		FUZZ_CHECK(t.key >= text && t.key + t.key_len == text + strlen(text));
	}
	free(text);
	return 0;
}
