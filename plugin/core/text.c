/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/* Small text helpers (see text.h). */
#include <stdlib.h>
#include <string.h>

#include "text.h"

char *presence_text_dup(const void *bytes, size_t len)
{
	char *copy = malloc(len + 1);

	if (copy != NULL) {
		if (len > 0) {
			memcpy(copy, bytes, len);
		}
		copy[len] = '\0';
	}
	return copy;
}

char *presence_text_join(const char *head, size_t head_len, const char *tail)
{
	size_t tail_len = strlen(tail);
	char *out = malloc(head_len + tail_len + 1);

	if (out != NULL) {
		memcpy(out, head, head_len);
		memcpy(out + head_len, tail, tail_len + 1);
	}
	return out;
}

bool presence_text_parse_uint(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t n = 0;
	size_t i;

	if (len == 0) {
		return false;
	}
	for (i = 0; i < len; i++) {
		uint64_t digit;

		if (s[i] < '0' || s[i] > '9') {
			return false;
		}
		digit = (uint64_t)(s[i] - '0');
		if (digit > max || n > (max - digit) / 10) {
			return false;
		}
		n = n * 10 + digit;
	}
	if (n < min) {
		return false;
	}
	*out = n;
	return true;
}

size_t presence_text_quote_len(const char *s, size_t len)
{
	if (len <= PRESENCE_TEXT_QUOTE_MAX) {
		return len;
	}
	len = PRESENCE_TEXT_QUOTE_MAX;
	/* s[len] exists (the text is longer): step back while it continues a character. */
	while (len > 0 && ((unsigned char)s[len] & 0xC0u) == 0x80u) {
		len--;
	}
	return len;
}
