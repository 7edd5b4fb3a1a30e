/* The log budget (see logbudget.h). */
#include "logbudget.h"

void presence_log_budget_init(struct presence_log_budget *b, uint32_t lines, int64_t window_ms)
{
	b->lines = lines;
	b->window_ms = window_ms > 0 ? window_ms : 1;
	b->window_start_ms = 0;
	b->started = false;
	b->logged = 0;
	b->suppressed = 0;
}

/* Starts a new window at now_ms when none is running or the current one is over. */
static void roll(struct presence_log_budget *b, int64_t now_ms)
{
	if (!b->started || now_ms - b->window_start_ms >= b->window_ms) {
		b->started = true;
		b->window_start_ms = now_ms;
		b->logged = 0;
	}
}

bool presence_log_budget_take(struct presence_log_budget *b, int64_t now_ms, uint64_t *suppressed)
{
	roll(b, now_ms);
	if (b->logged >= b->lines) {
		b->suppressed++;
		return false;
	}
	b->logged++;
	*suppressed = b->suppressed;
	b->suppressed = 0;
	return true;
}

bool presence_log_budget_flush(struct presence_log_budget *b, int64_t now_ms, uint64_t *suppressed)
{
	if (b->suppressed == 0 || !b->started || now_ms - b->window_start_ms < b->window_ms) {
		return false;
	}
	*suppressed = b->suppressed;
	b->suppressed = 0;
	return true;
}
