/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The plugin's two clocks, in milliseconds: the monotonic clock for timers and deadlines (it does
 * not jump when the wall clock is set) and the wall clock for what documents show ("since").
 * Neither fails: on a system whose clock_gettime() fails they read 0.
 */
#ifndef PRESENCE_CLOCK_H
#define PRESENCE_CLOCK_H

#include <stdint.h>

/* Milliseconds of CLOCK_MONOTONIC (an arbitrary origin). */
int64_t presence_clock_monotonic_ms(void);

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t presence_clock_wall_ms(void);

#endif
