/*
 * A log budget: how many lines of one kind (rejected state writes, denied publishes) may be
 * logged, so that a client sending thousands of bad messages cannot flood the broker's log.
 *
 * Time is cut into windows of window_ms milliseconds on a monotonic clock the caller passes in.
 * In each window the first `lines` lines are logged; the others are only counted. The next line
 * logged, or a flush once the window is over, says how many were suppressed, so nothing is
 * silently lost: the counters (metrics) have the exact totals. O(1), no allocation.
 */
#ifndef PRESENCE_LOGBUDGET_H
#define PRESENCE_LOGBUDGET_H

#include <stdbool.h>
#include <stdint.h>

/* A budget. Set up with presence_log_budget_init; holds nothing that needs freeing. */
struct presence_log_budget {
	/* Lines allowed per window, and the window's length. */
	uint32_t lines;
	int64_t window_ms;
	/* Start of the current window (valid once started), lines logged in it. */
	int64_t window_start_ms;
	bool started;
	uint32_t logged;
	/* Lines suppressed since the last line logged or flush. */
	uint64_t suppressed;
};

/* Sets b up to allow lines lines per window_ms milliseconds (window_ms > 0). */
void presence_log_budget_init(struct presence_log_budget *b, uint32_t lines, int64_t window_ms);

/* Asks to log one line at monotonic time now_ms. Returns true when it may be logged; then
 * *suppressed is the number of lines suppressed before it (0 usually), which the line should
 * mention, and the count starts again. Returns false when the line must be dropped (it is
 * counted). */
bool presence_log_budget_take(struct presence_log_budget *b, int64_t now_ms, uint64_t *suppressed);

/* Returns true, with *suppressed the count (which starts again), when lines were suppressed and
 * the window they were suppressed in is over: the caller logs one line saying so. Call it
 * regularly (every broker tick) so that the end of a flood is reported without another line. */
bool presence_log_budget_flush(struct presence_log_budget *b, int64_t now_ms, uint64_t *suppressed);

#endif
