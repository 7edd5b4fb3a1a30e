/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * UTF-8 validation for payloads the presence core accepts as text.
 *
 * MQTT payloads are arbitrary bytes. The core stores only text that is strict UTF-8 (RFC 3629:
 * no overlong forms, no surrogates, nothing above U+10FFFF) and contains no NUL byte, because
 * every string it keeps ends up in a JSON document delivered to other clients.
 */
#ifndef PRESENCE_UTF8_H
#define PRESENCE_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Returns true when the len bytes at s are strict UTF-8 without any U+0000; s may be NULL only
 * when len is 0 (the empty string is valid). */
bool presence_utf8_valid(const char *s, size_t len);

#endif
