/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The presence topic namespace: user-name encoding and topic classification.
 *
 * A user name becomes exactly one topic level by percent-encoding the four bytes that would
 * otherwise change the topic's structure or meaning: '/' (level separator), '+' and '#'
 * (wildcards) and '%' itself (so the encoding stays injective). Every other byte, including
 * non-ASCII UTF-8, is kept as is, so ordinary names read the same in topics as in logs.
 *
 * Classification only looks at the shape of a topic below the prefix; whether the user level
 * names a real or permitted user is the caller's business (see presence_topic_level_is_user).
 */
#include <string.h>
#include <stdlib.h>

#include "testing.h"
#include "topic.h"

/* Length of every escape sequence ("%2F" and friends). */
#define TOPIC_ESCAPE_LEN 3

/* The level after the user level that selects merge-patch and single-key state writes. */
#define TOPIC_STATE "state"
/* The level after the user level for rejection notices. */
#define TOPIC_ERROR "error"
/* The level of a user's privacy choice. */
#define TOPIC_PRIVACY "privacy"

/*
 * Returns the escape sequence that replaces c in an encoded user level, or NULL when c stands
 * for itself. This is the single definition of the encoding; encode, encoded_len and
 * level_is_user all go through it so they can never disagree.
 */
static const char *topic_escape(char c)
{
	switch (c) {
	case '%':
		return "%25";
	case '/':
		return "%2F";
	case '+':
		return "%2B";
	case '#':
		return "%23";
	default:
		return NULL;
	}
}

/*
 * Classifies rest, the part of a topic after "P/U/", and fills the kind and key of out.
 * An unknown level, or anything after "error" or "state" other than the "state/<key>" form,
 * makes the topic RESERVED.
 */
static void topic_classify_rest(const char *rest, struct presence_topic *out)
{
	size_t state_len = strlen(TOPIC_STATE);

	if (strcmp(rest, TOPIC_ERROR) == 0) {
		out->kind = PRESENCE_TOPIC_ERROR;
	} else if (strcmp(rest, TOPIC_PRIVACY) == 0) {
		out->kind = PRESENCE_TOPIC_PRIVACY;
	} else if (strncmp(rest, TOPIC_STATE, state_len) == 0 && rest[state_len] == '\0') {
		out->kind = PRESENCE_TOPIC_STATE;
	} else if (strncmp(rest, TOPIC_STATE, state_len) == 0 && rest[state_len] == '/') {
		out->kind = PRESENCE_TOPIC_STATE_KEY;
		out->key = rest + state_len + 1;
		out->key_len = strlen(out->key);
	} else {
		out->kind = PRESENCE_TOPIC_RESERVED;
	}
}

void presence_topic_parse(const char *prefix, const char *topic, struct presence_topic *out)
{
	const char *user;
	const char *slash;
	size_t prefix_len;

	out->kind = PRESENCE_TOPIC_OUTSIDE;
	out->user = NULL;
	out->user_len = 0;
	out->key = NULL;
	out->key_len = 0;
	if (prefix == NULL || topic == NULL) {
		return;
	}
	prefix_len = strlen(prefix);
	if (strncmp(topic, prefix, prefix_len) != 0 || topic[prefix_len] != '/') {
		return;
	}

	user = topic + prefix_len + 1;
	slash = strchr(user, '/');
	if (slash == NULL) {
		if (*user == '\0') {
			/* "P/" is reserved (see topic.h): no document is ever published there. */
			out->kind = PRESENCE_TOPIC_RESERVED;
			return;
		}
		out->kind = PRESENCE_TOPIC_DOCUMENT;
		out->user = user;
		out->user_len = strlen(user);
		return;
	}

	topic_classify_rest(slash + 1, out);
	if (out->kind != PRESENCE_TOPIC_RESERVED) {
		out->user = user;
		out->user_len = (size_t)(slash - user);
	}
}

size_t presence_topic_encoded_len(const char *user)
{
	size_t len = 0;

	for (; *user != '\0'; user++) {
		len += topic_escape(*user) != NULL ? TOPIC_ESCAPE_LEN : 1;
	}
	return len;
}

char *presence_topic_encode_user(const char *user)
{
	char *encoded = malloc(presence_topic_encoded_len(user) + 1);

	if (encoded != NULL) {
		presence_topic_encode_user_into(user, encoded);
	}
	return encoded;
}

void presence_topic_encode_user_into(const char *user, char *out)
{
	for (; *user != '\0'; user++) {
		const char *escape = topic_escape(*user);

		if (escape != NULL) {
			memcpy(out, escape, TOPIC_ESCAPE_LEN);
			out += TOPIC_ESCAPE_LEN;
		} else {
			*out++ = *user;
		}
	}
	*out = '\0';
}

bool presence_topic_level_is_user(const char *level, size_t level_len, const char *user)
{
	size_t i = 0;

	for (; *user != '\0'; user++) {
		const char *escape = topic_escape(*user);

		if (escape != NULL) {
			if (level_len - i < TOPIC_ESCAPE_LEN ||
			    memcmp(level + i, escape, TOPIC_ESCAPE_LEN) != 0) {
				return false;
			}
			i += TOPIC_ESCAPE_LEN;
		} else {
			if (i >= level_len || level[i] != *user) {
				return false;
			}
			i++;
		}
	}
	return i == level_len;
}

size_t presence_topic_decode_level_into(const char *level, size_t level_len, char *out)
{
	size_t i = 0, n = 0;

	while (i < level_len) {
		char c = level[i];

		if (c == '%' && i + TOPIC_ESCAPE_LEN <= level_len) {
			static const char plain[] = "%/+#";

			for (const char *p = plain; *p != '\0'; p++) {
				if (memcmp(level + i, topic_escape(*p), TOPIC_ESCAPE_LEN) == 0) {
					c = *p;
					i += TOPIC_ESCAPE_LEN - 1;
					break;
				}
			}
		}
		out[n++] = c;
		i++;
	}
	out[n] = '\0';
	return n;
}
