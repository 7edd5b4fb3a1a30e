/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/* The log budget (see logbudget.h). */
#include "logbudget.h"

void presence_log_budget_init(struct presence_log_budget *b, uint32_t burst, uint32_t per_second)
{
	b->burst = burst;
	b->per_second = per_second;
	b->tokens_milli = (uint64_t)burst * 1000;
	b->last_ms = 0;
	b->started = false;
	b->suppressed = 0;
	b->reported_ms = 0;
}

/* Adds the tokens earned since the last call, up to the burst. A clock that goes back earns
 * nothing. */
static void refill(struct presence_log_budget *b, int64_t now_ms)
{
	uint64_t full = (uint64_t)b->burst * 1000;

	if (b->started && now_ms > b->last_ms) {
		uint64_t elapsed = (uint64_t)(now_ms - b->last_ms);
		uint64_t earned = elapsed < full ? elapsed * b->per_second : full;

		b->tokens_milli = full - b->tokens_milli < earned ? full : b->tokens_milli + earned;
	}
	if (!b->started || now_ms > b->last_ms) {
		b->last_ms = now_ms;
	}
	b->started = true;
}

bool presence_log_budget_take(struct presence_log_budget *b, int64_t now_ms, uint64_t *suppressed)
{
	refill(b, now_ms);
	if (b->tokens_milli < 1000) {
		b->suppressed++;
		return false;
	}
	b->tokens_milli -= 1000;
	*suppressed = b->suppressed;
	b->suppressed = 0;
	b->reported_ms = now_ms;
	return true;
}

bool presence_log_budget_flush(struct presence_log_budget *b, int64_t now_ms, uint64_t *suppressed)
{
	if (b->suppressed == 0 || now_ms - b->reported_ms < PRESENCE_LOG_BUDGET_REPORT_MS) {
		return false;
	}
	*suppressed = b->suppressed;
	b->suppressed = 0;
	b->reported_ms = now_ms;
	return true;
}
