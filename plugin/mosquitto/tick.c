/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * TICK, which Mosquitto raises once per loop iteration (2.0: at its end; 2.1: at its start):
 *
 * - First the lifecycle's per-iteration work (presence_lifecycle_tick), then the backend's
 *   (backend.h): documents, forgetting, the cluster link's results.
 * - The $SYS metrics when a round is due (core/metrics.h), and the count of log lines the
 *   budgets suppressed.
 * - With a state file, what changed is appended to its journal, at most about once per second
 *   (at once when a document waits for it, see the seq margin in store.h), in bounded steps,
 *   and a compaction in progress continues by one bounded step, so even a large registry never
 *   stalls the broker loop. A failed write is logged and retried a second later.
 */
#include <inttypes.h>
#include <stdio.h>

#include "callbacks.h"
#include "plugin.h"
#include "clock.h"
#include "publish.h"
#include "sight.h"

/* Appends what changed to the state file's journal when a flush is due (one bounded step per
 * TICK), and continues a compaction by one bounded step (see the head of this file). */
static void save_state(struct presence_plugin *p)
{
	char err[PRESENCE_STORE_ERR_SIZE];
	bool finished = false;
	bool done = false;
	int64_t now = presence_clock_monotonic_ms();

	uint64_t unused;
	/* A changed privacy choice counts as a waiting document, within its budget: a storm of
	 * choices costs at most PRESENCE_PRIVACY_SAVES saves a second. */
	bool urgent = p->save_urgent && !p->flushing &&
	              presence_log_budget_take(&p->urgent_saves, now, &unused);

	if (p->flushing ||
	    presence_policy_save_due(now, p->save_started_ms,
	                             presence_registry_held_count(p->reg) > 0 || urgent,
	                             presence_store_unsaved(p->store, p->reg), p->save_failed)) {
		if (!p->flushing) {
			p->save_started_ms = now;
			p->flushed_users = 0;
			p->save_urgent = false;
		}
		if (presence_store_flush_step(p->store, p->reg, PRESENCE_STORE_STEP_USERS,
		                              PRESENCE_STORE_STEP_BYTES, &done, err,
		                              sizeof(err)) != PRESENCE_OK) {
			p->flushing = false;
			goto out_failed;
		}
		p->flushed_users += presence_store_flushed_users(p->store);
		p->flushing = !done;
		p->save_failed = false;
		if (done) {
			mosquitto_log_printf(
			    MOSQ_LOG_DEBUG, PRESENCE_LOG_PREFIX "saved state of %zu users to %s",
			    p->flushed_users, presence_store_journal_path(p->store));
		}
	}
	if (presence_store_compact_step(p->store, p->reg, PRESENCE_STORE_STEP_USERS,
	                                PRESENCE_STORE_STEP_BYTES, &finished, err,
	                                sizeof(err)) != PRESENCE_OK) {
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX "could not compact the state file: %s; "
		                                         "trying again later",
		                     err);
		return;
	}
	if (finished) {
		mosquitto_log_printf(
		    MOSQ_LOG_DEBUG, PRESENCE_LOG_PREFIX "compacted the state file %s: %zu users",
		    presence_store_path(p->store), presence_store_snapshot_users(p->store));
	}
	return;

out_failed:
	p->save_failed = true;
	mosquitto_log_printf(MOSQ_LOG_WARNING,
	                     PRESENCE_LOG_PREFIX "could not save the state file: %s; retrying in "
	                                         "a second",
	                     err);
}

void presence_tick_save_urgent(struct presence_plugin *p)
{
	if (p->store != NULL && p->save_urgent && !p->flushing) {
		save_state(p);
	}
}

/*
 * When a round of metrics is due, publishes each metric whose value changed since it was last
 * published (every one, the first time), retained, QoS 0 and as plain decimal text, as the
 * broker publishes its own $SYS values. Every value is an O(1) counter. A value whose publish
 * fails is not recorded as published, so it goes out again in the next round.
 */
static void publish_due_metrics(struct presence_plugin *p)
{
	uint64_t values[PRESENCE_METRIC_COUNT];
	char text[24];
	int which;
	int rc;

	if (!presence_metrics_due(&p->metrics, presence_clock_monotonic_ms())) {
		return;
	}
	values[PRESENCE_METRIC_USERS_AVAILABLE] = presence_registry_available_count(p->reg);
	values[PRESENCE_METRIC_USERS_KNOWN] = presence_registry_known_count(p->reg);
	values[PRESENCE_METRIC_SESSIONS] = presence_registry_active_session_count(p->reg);
	values[PRESENCE_METRIC_DOCUMENTS_PUBLISHED] = p->documents_published;
	values[PRESENCE_METRIC_STATE_WRITES] = p->state_writes;
	values[PRESENCE_METRIC_STATE_REJECTED] = p->state_rejected;
	values[PRESENCE_METRIC_PUBLISHES_DENIED] = p->publishes_denied;
	values[PRESENCE_METRIC_USERS_FORGOTTEN] = presence_registry_forgotten_total(p->reg);
	values[PRESENCE_METRIC_SESSIONS_UNTRACKED] = p->sessions_untracked;
	for (which = 0; which < PRESENCE_METRIC_COUNT; which++) {
		enum presence_metric metric = (enum presence_metric)which;
		int len;

		if (!presence_metrics_changed(&p->metrics, metric, values[which])) {
			continue;
		}
		len = snprintf(text, sizeof(text), "%" PRIu64, values[which]);
		rc = presence_publish(NULL, presence_metrics_topic(metric), text, (size_t)len, 0,
		                      true, NULL);
		if (rc != MOSQ_ERR_SUCCESS) {
			mosquitto_log_printf(
			    MOSQ_LOG_WARNING,
			    PRESENCE_LOG_PREFIX "could not publish %s (%s); retrying",
			    presence_metrics_topic(metric), presence_mosq_strerror(rc));
			continue;
		}
		presence_metrics_published(&p->metrics, metric, values[which]);
	}
}

int presence_tick_cb(int event, void *event_data, void *userdata)
{
	struct presence_plugin *p = userdata;

	(void)event;
	presence_lifecycle_tick(p, event_data);
	/* No login is in progress between two loop iterations. */
	p->connecting = NULL;
	presence_sight_tick(p);
	p->backend->tick(p);
	publish_due_metrics(p);
	presence_log_budget_report(&p->rejected_log, MOSQ_LOG_WARNING, "rejected state writes");
	presence_log_budget_report(&p->denied_log, MOSQ_LOG_NOTICE, "denied publishes");
	presence_log_budget_report(&p->untracked_log, MOSQ_LOG_WARNING, "sessions over max_users");
	if (p->store != NULL) {
		size_t held = presence_registry_held_count(p->reg);

		save_state(p);
		/* Documents the save released go out now, not one loop iteration later: what they
		 * show does not depend on what the next iteration brings. */
		if (presence_registry_held_count(p->reg) < held) {
			p->backend->publish_due(p);
		}
	}
	return MOSQ_ERR_SUCCESS;
}
