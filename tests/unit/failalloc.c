/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The wrapped allocator behind failalloc.h. --wrap=malloc makes every call to malloc from the
 * objects linked into a test executable call __wrap_malloc; __real_malloc is the C library's
 * (or the sanitizer's) allocator.
 */
#include <stddef.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "failalloc.h"

void *__real_malloc(size_t size);
void *__real_calloc(size_t nmemb, size_t size);
void *__real_realloc(void *ptr, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t nmemb, size_t size);
void *__wrap_realloc(void *ptr, size_t size);

/* Allocations left before failing; negative means never fail. */
static long remaining = -1;
/* Allocation attempts since the last arm or reset. */
static long attempts;

static int should_fail(void)
{
	attempts++;
	if (remaining < 0) {
		return 0;
	}
	if (remaining == 0) {
		return 1;
	}
	remaining--;
	return 0;
}

void *__wrap_malloc(size_t size)
{
	return should_fail() ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t nmemb, size_t size)
{
	return should_fail() ? NULL : __real_calloc(nmemb, size);
}

void *__wrap_realloc(void *ptr, size_t size)
{
	return should_fail() ? NULL : __real_realloc(ptr, size);
}

static void *cjson_malloc(size_t size)
{
	return __wrap_malloc(size);
}

void failalloc_install_cjson(void)
{
	cJSON_Hooks hooks = {.malloc_fn = cjson_malloc, .free_fn = free};
	cJSON_InitHooks(&hooks);
}

void failalloc_fail_after(long n)
{
	remaining = n;
	attempts = 0;
}

void failalloc_reset(void)
{
	remaining = -1;
	attempts = 0;
}

long failalloc_attempts(void)
{
	return attempts;
}
