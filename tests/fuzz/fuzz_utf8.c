/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * libFuzzer harness: presence_utf8_valid against a reference decoder written from RFC 3629's
 * table (shortest form only, no surrogates, nothing above U+10FFFF) and the core's extra rule
 * (no U+0000). Invariant: both agree on every input.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "utf8.h"

static bool reference_valid(const uint8_t *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint32_t cp;
		size_t n, k;

		if (s[i] == 0x00) {
			return false;
		}
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		if (s[i] >= 0xC2 && s[i] <= 0xDF) {
			n = 1;
			cp = s[i] & 0x1Fu;
		} else if (s[i] >= 0xE0 && s[i] <= 0xEF) {
			n = 2;
			cp = s[i] & 0x0Fu;
		} else if (s[i] >= 0xF0 && s[i] <= 0xF4) {
			n = 3;
			cp = s[i] & 0x07u;
		} else {
			return false;
		}
		if (len - i - 1 < n) {
			return false;
		}
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xC0u) != 0x80u) {
				return false;
			}
			cp = (cp << 6) | (s[i + k] & 0x3Fu);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
		    (cp >= 0xD800 && cp <= 0xDFFF)) {
			return false;
		}
		i += n + 1;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FUZZ_CHECK(presence_utf8_valid((const char *)data, size) == reference_valid(data, size));
	return 0;
}
