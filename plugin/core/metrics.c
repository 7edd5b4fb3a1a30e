/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Presence metrics (see metrics.h).
 */
#include <string.h>

#include "metrics.h"

/* The topics, indexed by enum presence_metric. */
static const char *const metric_topics[PRESENCE_METRIC_COUNT] = {
    [PRESENCE_METRIC_USERS_AVAILABLE] = "$SYS/broker/presence/users/available",
    [PRESENCE_METRIC_USERS_KNOWN] = "$SYS/broker/presence/users/known",
    [PRESENCE_METRIC_SESSIONS] = "$SYS/broker/presence/sessions",
    [PRESENCE_METRIC_DOCUMENTS_PUBLISHED] = "$SYS/broker/presence/documents/published",
    [PRESENCE_METRIC_STATE_WRITES] = "$SYS/broker/presence/state/writes",
    [PRESENCE_METRIC_STATE_REJECTED] = "$SYS/broker/presence/state/rejected",
    [PRESENCE_METRIC_PUBLISHES_DENIED] = "$SYS/broker/presence/publishes/denied",
    [PRESENCE_METRIC_USERS_FORGOTTEN] = "$SYS/broker/presence/users/forgotten",
    [PRESENCE_METRIC_SESSIONS_UNTRACKED] = "$SYS/broker/presence/sessions/untracked",
};

void presence_metrics_init(struct presence_metrics *m, size_t interval_s)
{
	memset(m, 0, sizeof(*m));
	m->interval_ms = (int64_t)interval_s * 1000;
}

bool presence_metrics_due(struct presence_metrics *m, int64_t now_ms)
{
	if (m->interval_ms == 0) {
		return false;
	}
	if (m->started && now_ms < m->next_ms) {
		return false;
	}
	if (!m->started) {
		m->started = true;
		m->next_ms = now_ms + m->interval_ms;
		return true;
	}
	m->next_ms += m->interval_ms;
	if (m->next_ms <= now_ms) {
		/* Rounds were missed: no burst to catch up, one interval from now. */
		m->next_ms = now_ms + m->interval_ms;
	}
	return true;
}

bool presence_metrics_changed(const struct presence_metrics *m, enum presence_metric which,
                              uint64_t value)
{
	return !m->published[which] || m->last[which] != value;
}

void presence_metrics_published(struct presence_metrics *m, enum presence_metric which,
                                uint64_t value)
{
	m->published[which] = true;
	m->last[which] = value;
}

const char *presence_metrics_topic(enum presence_metric which)
{
	return metric_topics[which];
}
