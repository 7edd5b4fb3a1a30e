/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Presence metrics: which values under $SYS/broker/presence/ are due, and when. Each value is
 * published when it differs from the value last published for it, and always the first time;
 * checks run every interval on the caller's monotonic clock (milliseconds), starting again from
 * now after missed ones rather than catching up. This module only decides; the registry and
 * the adapter count, the adapter publishes.
 */
#ifndef PRESENCE_METRICS_H
#define PRESENCE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Every metric, in the order they are published. */
enum presence_metric {
	/* Users with at least one connected session. */
	PRESENCE_METRIC_USERS_AVAILABLE = 0,
	/* Users that have had a presence document since the broker started. */
	PRESENCE_METRIC_USERS_KNOWN,
	/* Connected sessions of tracked users. */
	PRESENCE_METRIC_SESSIONS,
	/* Presence documents published since the broker started. */
	PRESENCE_METRIC_DOCUMENTS_PUBLISHED,
	/* Publishes into the plugin's namespace denied (Wills included). */
	PRESENCE_METRIC_PUBLISHES_DENIED,
	/* State-write messages accepted (whether or not they changed the state). */
	PRESENCE_METRIC_STATE_WRITES,
	/* State-write messages rejected. */
	PRESENCE_METRIC_STATE_REJECTED,
	/* Users forgotten (forget_after, max_users, or by the cluster). */
	PRESENCE_METRIC_USERS_FORGOTTEN,
	/* Sessions not tracked because max_users users were known and all online. */
	PRESENCE_METRIC_SESSIONS_UNTRACKED,
	PRESENCE_METRIC_COUNT,
};

/* The schedule and what was last published. Set up with presence_metrics_init; holds nothing
 * that needs freeing. */
struct presence_metrics {
	/* Milliseconds between two rounds; 0 when the metrics are disabled. */
	int64_t interval_ms;
	/* Monotonic time of the next round, once started. */
	int64_t next_ms;
	/* Whether the first round has happened. */
	bool started;
	/* The value last published for each metric, valid when published[] says so. */
	uint64_t last[PRESENCE_METRIC_COUNT];
	bool published[PRESENCE_METRIC_COUNT];
};

/* Sets m up for a round every interval_s seconds (0 disables every round). */
void presence_metrics_init(struct presence_metrics *m, size_t interval_s);

/* Returns true when a round is due at monotonic time now_ms (milliseconds) and schedules the
 * next one; the first call is due. Always false when disabled. */
bool presence_metrics_due(struct presence_metrics *m, int64_t now_ms);

/* Returns true when which must be published with value: it never was, or its last published
 * value differs. */
bool presence_metrics_changed(const struct presence_metrics *m, enum presence_metric which,
                              uint64_t value);

/* Records that value was published for which. */
void presence_metrics_published(struct presence_metrics *m, enum presence_metric which,
                                uint64_t value);

/* Returns the metric's topic below $SYS ("$SYS/broker/presence/users/available"); static. */
const char *presence_metrics_topic(enum presence_metric which);

#endif
