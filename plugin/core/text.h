/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Small text helpers every part of the plugin shares: copying bytes into a C string, reading a
 * decimal option value, and choosing how much of a refused value to quote in a message.
 * Allocations go through malloc (never strdup), so a test allocator wrapping malloc sees them.
 */
#ifndef PRESENCE_TEXT_H
#define PRESENCE_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most bytes of a refused value (an option, a state key, a member name) quoted in a
 * message, so that a huge value cannot push the explanation out of the message buffer. */
#define PRESENCE_TEXT_QUOTE_MAX 64u

/* Returns a malloc'd copy of the len bytes at bytes followed by a NUL (bytes may be NULL when
 * len is 0), or NULL when allocation fails. Free with free(). */
char *presence_text_dup(const void *bytes, size_t len);

/* Returns a malloc'd copy of the first head_len bytes of head followed by tail (NUL-terminated),
 * or NULL when allocation fails. Free with free(). */
char *presence_text_join(const char *head, size_t head_len, const char *tail);

/* Parses the len bytes at s as a decimal integer from min to max into *out. Only digits are
 * accepted: no sign, no space, no trailing byte, nothing above max. Returns false for anything
 * else, leaving *out unchanged. */
bool presence_text_parse_uint(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *out);

/* Returns how many of the len bytes at s to quote in a message: all of them up to
 * PRESENCE_TEXT_QUOTE_MAX, otherwise PRESENCE_TEXT_QUOTE_MAX cut back to the start of a UTF-8
 * character. A result below len means the quote should be followed by "...". */
size_t presence_text_quote_len(const char *s, size_t len);

#endif
