/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * libFuzzer harness: presence_props20_read, the 2.0 adapter's reader of a query's MQTT 5
 * properties (plugin/mosquitto/props_v20.h), over property lists built from the input, with an
 * allocator that fails on demand.
 *
 * Input: one byte, the number of allocations that succeed before the next fails (255: none
 * fails); then records of [identifier selector, length high, length low, flags] followed by
 * up to length bytes of value (fewer when the input ends). The selector picks Correlation Data
 * (9), Response Topic (8) or another identifier; flag 1 gives the value no bytes (NULL) with its
 * length kept.
 *
 * Invariants: on success, each of the two values is NULL exactly when the list has no property
 * of its identifier, and otherwise holds the bytes of the first one (none for a NULL value),
 * NUL-terminated, with that length; on failure an allocation failed, *out is zeroed, and
 * nothing stays allocated.
 */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "props_v20.h"

#define MAX_PROPS 64

static int allocs_left;
static int live;

static void *fuzz_alloc(size_t size)
{
	void *p;

	if (allocs_left == 0) {
		return NULL;
	}
	if (allocs_left > 0) {
		allocs_left--;
	}
	p = malloc(size);
	if (p != NULL) {
		live++;
	}
	return p;
}

static void fuzz_release(void *p)
{
	if (p != NULL) {
		live--;
	}
	free(p);
}

/* Checks that got (got_len) is the value of the first property of identifier in list. */
static void check_value(const struct mosquitto20_property *list, int32_t identifier,
                        const char *got, uint16_t got_len)
{
	const struct mosquitto20_property *prop;

	for (prop = list; prop != NULL; prop = prop->next) {
		if (prop->identifier == identifier) {
			break;
		}
	}
	if (prop == NULL) {
		FUZZ_CHECK(got == NULL && got_len == 0);
		return;
	}
	FUZZ_CHECK(got != NULL);
	if (prop->value.bin.v == NULL) {
		FUZZ_CHECK(got_len == 0);
	} else {
		FUZZ_CHECK(got_len == prop->value.bin.len);
		FUZZ_CHECK(memcmp(got, prop->value.bin.v, got_len) == 0);
	}
	FUZZ_CHECK(got[got_len] == '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int32_t identifiers[] = {PRESENCE_PROP_CORRELATION_DATA,
	                                      PRESENCE_PROP_RESPONSE_TOPIC, 1, 3, 0x26};
	struct mosquitto20_property props[MAX_PROPS];
	struct mosquitto20_property *list = NULL, **tail = &list;
	struct presence_props20 out;
	size_t n = 0, at = 1;
	bool ok;

	if (size < 1) {
		return 0;
	}
	memset(props, 0, sizeof(props));
	while (n < MAX_PROPS && size - at >= 4) {
		struct mosquitto20_property *prop = &props[n++];
		size_t len = (size_t)data[at + 1] << 8 | data[at + 2];
		bool null_value = (data[at + 3] & 1) != 0;

		prop->identifier =
		    identifiers[data[at] % (sizeof(identifiers) / sizeof(identifiers[0]))];
		at += 4;
		if (len > size - at) {
			len = size - at;
		}
		/* Correlation Data is binary, Response Topic a string: the same layout. */
		prop->value.bin.v = null_value ? NULL : (char *)(uintptr_t)(data + at);
		prop->value.bin.len = (uint16_t)len;
		if (!null_value) {
			at += len;
		}
		*tail = prop;
		tail = &prop->next;
	}

	allocs_left = data[0] == 255 ? -1 : data[0] % 4;
	live = 0;
	ok = presence_props20_read(list, fuzz_alloc, fuzz_release, &out);
	if (!ok) {
		FUZZ_CHECK(allocs_left == 0);
		FUZZ_CHECK(out.correlation == NULL && out.response_topic == NULL);
		FUZZ_CHECK(out.correlation_len == 0 && out.response_topic_len == 0);
		FUZZ_CHECK(live == 0);
		return 0;
	}
	check_value(list, PRESENCE_PROP_CORRELATION_DATA, out.correlation, out.correlation_len);
	check_value(list, PRESENCE_PROP_RESPONSE_TOPIC, out.response_topic, out.response_topic_len);
	FUZZ_CHECK(live == (out.correlation != NULL) + (out.response_topic != NULL));
	fuzz_release(out.correlation);
	fuzz_release(out.response_topic);
	return 0;
}
