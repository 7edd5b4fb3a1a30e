/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/* The plugin's clocks (see clock.h). */
#include <time.h>

#include "clock.h"

/* Milliseconds on clock id; 0 when it cannot be read. */
static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;

	if (clock_gettime(id, &ts) != 0) {
		return 0;
	}
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t presence_clock_monotonic_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

int64_t presence_clock_wall_ms(void)
{
	return clock_ms(CLOCK_REALTIME);
}
