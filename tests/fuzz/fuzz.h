/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * What every libFuzzer harness of tests/fuzz/ shares: the entry point's prototype and an
 * invariant check that aborts with a message (libFuzzer then saves the input as a crash).
 *
 * Each harness drives one entry point of the core and checks what the core promises, not only
 * that nothing crashes: see the comment at the head of each harness.
 */
#ifndef PRESENCE_FUZZ_H
#define PRESENCE_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts with the invariant's text and where it is when cond is false. */
#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,       \
			        #cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* Returns how deeply item nests objects and arrays (0 for a scalar). */
static inline size_t fuzz_json_depth(const cJSON *item)
{
	size_t deepest = 0;
	const cJSON *child;

	if (!cJSON_IsObject(item) && !cJSON_IsArray(item)) {
		return 0;
	}
	for (child = item->child; child != NULL; child = child->next) {
		size_t depth = fuzz_json_depth(child);

		if (depth > deepest) {
			deepest = depth;
		}
	}
	return deepest + 1;
}

/* Returns the number of members of an object. */
static inline size_t fuzz_json_members(const cJSON *object)
{
	size_t n = 0;
	const cJSON *child;

	for (child = object->child; child != NULL; child = child->next) {
		n++;
	}
	return n;
}

#endif
