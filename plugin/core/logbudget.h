/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * A log budget: how many lines of one kind (rejected state writes, denied publishes) may be
 * logged, so that a client sending thousands of bad messages cannot flood the broker's log.
 *
 * A token bucket on a monotonic clock the caller passes in (milliseconds): up to `burst` lines
 * at once, then `per_second` lines a second. A line without a token is only counted. The next
 * line logged says how many were suppressed before it, and once a second a flush reports a
 * count that no line carried, so nothing is lost silently: the metrics keep the exact totals.
 * O(1), no allocation.
 */
#ifndef PRESENCE_LOGBUDGET_H
#define PRESENCE_LOGBUDGET_H

#include <stdbool.h>
#include <stdint.h>

/* How often, at most, a flush reports suppressed lines, in milliseconds. */
#define PRESENCE_LOG_BUDGET_REPORT_MS 1000

/* A budget. Set up with presence_log_budget_init; holds nothing that needs freeing. */
struct presence_log_budget {
	/* The most lines at once, and lines a second after that. */
	uint32_t burst;
	uint32_t per_second;
	/* Tokens left, in thousandths of a line, as of last_ms. */
	uint64_t tokens_milli;
	int64_t last_ms;
	bool started;
	/* Lines suppressed since the last line logged or reported, and when that was. */
	uint64_t suppressed;
	int64_t reported_ms;
};

/* Sets b up with a full bucket of burst lines refilled at per_second lines a second. */
void presence_log_budget_init(struct presence_log_budget *b, uint32_t burst, uint32_t per_second);

/* Asks to log one line at monotonic time now_ms. Returns true when it may be logged; then
 * *suppressed is the number of lines suppressed before it (0 usually), which the line should
 * mention, and the count starts again. Returns false when the line must be dropped (it is
 * counted). */
bool presence_log_budget_take(struct presence_log_budget *b, int64_t now_ms, uint64_t *suppressed);

/* Returns true, with *suppressed the count (which starts again), when lines were suppressed and
 * none was logged or reported in the last PRESENCE_LOG_BUDGET_REPORT_MS: the caller logs one
 * line saying so. Call it regularly (every broker tick) so that the end of a flood is reported
 * without waiting for another line. */
bool presence_log_budget_flush(struct presence_log_budget *b, int64_t now_ms, uint64_t *suppressed);

#endif
