/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Strict UTF-8 validation (RFC 3629).
 *
 * The validator decodes each sequence completely and then checks the code point, rather than
 * matching byte ranges: a lead byte announces how many continuation bytes follow, every one of
 * them must be present and of the form 10xxxxxx, and the decoded value must be the shortest
 * encoding (no overlongs), outside the surrogate range U+D800..U+DFFF, and at most U+10FFFF.
 * U+0000 is refused as well, because strings kept by the core are handed to C code and JSON
 * documents that treat NUL as the end.
 */
#include <stdint.h>

#include "utf8.h"

/* The highest Unicode code point. */
#define UTF8_MAX_CODE_POINT 0x10FFFFu

/* The surrogate range, which UTF-8 must never encode. */
#define UTF8_SURROGATE_FIRST 0xD800u
#define UTF8_SURROGATE_LAST 0xDFFFu

/*
 * Reads the lead byte of a multi-byte sequence. Returns the number of continuation bytes that
 * must follow (1 to 3) and stores the lead byte's payload bits in *bits and the smallest code
 * point a sequence of that length may encode in *min; returns 0 for a byte that cannot start a
 * sequence (a continuation byte, or 0xF8..0xFF, which RFC 3629 no longer allows).
 */
static size_t utf8_lead(unsigned char lead, uint32_t *bits, uint32_t *min)
{
	if ((lead & 0xE0u) == 0xC0u) {
		*bits = lead & 0x1Fu;
		*min = 0x80u;
		return 1;
	}
	if ((lead & 0xF0u) == 0xE0u) {
		*bits = lead & 0x0Fu;
		*min = 0x800u;
		return 2;
	}
	if ((lead & 0xF8u) == 0xF0u) {
		*bits = lead & 0x07u;
		*min = 0x10000u;
		return 3;
	}
	return 0;
}

bool presence_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	if (s == NULL) {
		return len == 0;
	}
	while (i < len) {
		uint32_t cp;
		uint32_t min;
		size_t more;
		size_t k;

		if (p[i] == 0) {
			return false;
		}
		if (p[i] < 0x80u) {
			i++;
			continue;
		}
		more = utf8_lead(p[i], &cp, &min);
		if (more == 0 || len - i - 1 < more) {
			return false;
		}
		for (k = 1; k <= more; k++) {
			unsigned char c = p[i + k];

			if ((c & 0xC0u) != 0x80u) {
				return false;
			}
			cp = (cp << 6) | (uint32_t)(c & 0x3Fu);
		}
		if (cp < min || cp > UTF8_MAX_CODE_POINT ||
		    (cp >= UTF8_SURROGATE_FIRST && cp <= UTF8_SURROGATE_LAST)) {
			return false;
		}
		i += more + 1;
	}
	return true;
}
