/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The presence topic namespace: user-name encoding and topic classification.
 *
 * With prefix P, user U owns these topics, where U is the user name as one topic level with
 * '%', '/', '+', '#' percent-encoded as %25, %2F, %2B, %23 (nothing else changes):
 *   P/U              the retained presence document (written only by the plugin)
 *   P/U/state        merge-patch writes to U's state
 *   P/U/state/<key>  single-key writes to U's state (<key> is everything after "state/")
 *   P/U/error        rejection notices for U's own sessions
 *   P/U/privacy      U's privacy choice (visibility.h)
 * Anything else below P/ is reserved. The encoding is injective, so two user names never
 * share a level.
 */
#ifndef PRESENCE_TOPIC_H
#define PRESENCE_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

enum presence_topic_kind {
	/* Not below P/ (P itself counts as outside). */
	PRESENCE_TOPIC_OUTSIDE = 0,
	/* P/U */
	PRESENCE_TOPIC_DOCUMENT,
	/* P/U/state */
	PRESENCE_TOPIC_STATE,
	/* P/U/state/<key>; key may be empty or contain '/', the caller validates it. */
	PRESENCE_TOPIC_STATE_KEY,
	/* P/U/error */
	PRESENCE_TOPIC_ERROR,
	/* P/U/privacy */
	PRESENCE_TOPIC_PRIVACY,
	/* Anything else below P/ (P/U/x, P/U/state2, P/, ...). */
	PRESENCE_TOPIC_RESERVED,
};

/* A classified topic. Pointers point into the topic string passed to presence_topic_parse and
 * live as long as it does. */
struct presence_topic {
	/* What the topic is. */
	enum presence_topic_kind kind;
	/* The encoded user level (U) for every kind but OUTSIDE and RESERVED; not NUL-terminated.
	 */
	const char *user;
	/* Length of user in bytes. */
	size_t user_len;
	/* For STATE_KEY: the key, i.e. everything after "P/U/state/"; NUL-terminated (it runs to
	 * the end of the topic). NULL otherwise. */
	const char *key;
	/* Length of key in bytes. */
	size_t key_len;
};

/* Classifies topic (NUL-terminated) against prefix (NUL-terminated, without a trailing '/').
 * Never fails: anything unrecognised below P/ is RESERVED, anything else OUTSIDE. Wildcard
 * characters are not interpreted; subscription filters are classified as plain strings. An
 * empty user level is classified like any other ("P//state" is STATE with user_len 0), except
 * that "P/" alone is RESERVED. Every field of out is set. */
void presence_topic_parse(const char *prefix, const char *topic, struct presence_topic *out);

/* Writes the encoded form of user and a NUL to out, which has room for
 * presence_topic_encoded_len(user) + 1 bytes. */
void presence_topic_encode_user_into(const char *user, char *out);

/* Returns the length of the encoded form of user, without allocating. */
size_t presence_topic_encoded_len(const char *user);

/* Writes the user name an encoded level (level, level_len bytes) stands for, and a NUL, to out
 * (at least level_len + 1 bytes); returns its length. A level that is not an encoding of any
 * name decodes to something whose encoding differs from it (check with
 * presence_topic_level_is_user). */
size_t presence_topic_decode_level_into(const char *level, size_t level_len, char *out);

/* Returns true when the encoded level (level, level_len bytes) is exactly the encoding of user
 * (NUL-terminated). Allocates nothing. */
bool presence_topic_level_is_user(const char *level, size_t level_len, const char *user);

#endif
