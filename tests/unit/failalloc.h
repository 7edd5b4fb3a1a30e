/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Allocation-failure injection for unit tests.
 *
 * Unit-test executables are linked with -Wl,--wrap=malloc,calloc,realloc, so every allocation
 * the core makes goes through the wrappers in failalloc.c; failalloc_install_cjson() routes
 * cJSON's allocations through them too. A test arms a failure with failalloc_fail_after(n):
 * the next n allocations succeed and every one after that fails, until failalloc_reset().
 *
 * The usual pattern: for n = 0, 1, 2, ... run an operation with failalloc_fail_after(n); when
 * it fails, assert it reported PRESENCE_ERR_NOMEM and left everything unchanged; stop at the
 * first n where it succeeds. ASan reports any leak on the failure paths.
 */
#ifndef PRESENCE_FAILALLOC_H
#define PRESENCE_FAILALLOC_H

/* Routes cJSON's allocator through the wrappers. Call once at the start of main. */
void failalloc_install_cjson(void);

/* Let n more allocations succeed, then fail every allocation. */
void failalloc_fail_after(long n);

/* Stop failing. */
void failalloc_reset(void);

/* Number of allocation attempts since the last failalloc_fail_after or failalloc_reset. */
long failalloc_attempts(void);

#endif
