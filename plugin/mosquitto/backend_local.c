/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The backend of a single broker (backend.h): the registry decides availability, delays,
 * state and forgetting, and its documents are published from here.
 *
 * - start publishes the corrections of a restart from init, which Mosquitto runs before it
 *   opens any listener: publishes from init are delivered (and retained) in the first loop
 *   iteration, before any client can read the documents the broker restored from its
 *   persistence file. After a crash that file may be older than the state file (Mosquitto
 *   writes it every autosave_interval): every user recorded as offline gets its last document
 *   again, so that no older one stays retained; users recorded as available get their
 *   corrections; users offline past forget_after while the broker was down, or beyond
 *   max_users, are forgotten, all of them at once.
 * - TICK puts back on the dirty list the users whose offline delay has passed, publishes a
 *   document for each dirty user (once per user, so a takeover within one iteration publishes
 *   nothing), then forgets a bounded number of users and announces them.
 * - A state write is applied to the user's state at once (core/state.h).
 */
#include <stdint.h>

#include "backend.h"
#include "plugin.h"
#include "publish.h"
#include "sight.h"

/* Publishes the last document of every user recorded as offline (see init). */
static void republish_offline_users(struct presence_plugin *p)
{
	struct presence_cursor cursor = {0};
	struct presence_user *user;
	size_t count = 0;

	if (!presence_registry_cursor_start(p->reg, &cursor)) {
		return;
	}
	while ((user = presence_registry_cursor_next(p->reg, &cursor)) != NULL) {
		struct presence_document doc;

		if (presence_user_published(user, &doc) && !doc.available &&
		    presence_publish_document(p, user) == MOSQ_ERR_SUCCESS) {
			count++;
		}
	}
	if (count > 0) {
		mosquitto_log_printf(MOSQ_LOG_INFO,
		                     PRESENCE_LOG_PREFIX
		                     "published the last documents of %zu users "
		                     "recorded as offline again (the broker's "
		                     "persistence file may be older)",
		                     count);
	}
}

static int local_start(struct presence_plugin *p)
{
	size_t corrected, forgotten, n;

	p->documents_authoritative = true;
	if (p->restored_unclean) {
		republish_offline_users(p);
	}
	corrected = presence_publish_due_documents(p);
	if (corrected > 0) {
		mosquitto_log_printf(MOSQ_LOG_INFO,
		                     PRESENCE_LOG_PREFIX
		                     "published %zu corrected documents: users "
		                     "recorded as available are now unavailable",
		                     corrected);
	}
	forgotten = 0;
	while ((n = presence_registry_forget_due(p->reg, SIZE_MAX)) > 0) {
		forgotten += n;
		presence_announce_forgotten(p);
	}
	if (forgotten > 0) {
		mosquitto_log_printf(MOSQ_LOG_INFO,
		                     PRESENCE_LOG_PREFIX
		                     "forgot %zu users (offline for longer than "
		                     "forget_after, or beyond max_users)",
		                     forgotten);
	}
	return MOSQ_ERR_SUCCESS;
}

static void local_end(struct presence_plugin *p)
{
	(void)p;
}

static enum presence_err local_write(struct presence_plugin *p, struct presence_user *user,
                                     const char *write_topic, const struct presence_topic *topic,
                                     const void *payload, size_t len, bool *changed, char *reason)
{
	enum presence_err err;

	(void)write_topic;
	if (topic->kind == PRESENCE_TOPIC_PRIVACY) {
		return presence_sight_privacy_write(p, user, payload, len, changed, reason);
	}
	if (topic->kind == PRESENCE_TOPIC_STATE) {
		err = presence_state_merge(presence_user_state(user), &p->limits, payload, len,
		                           changed, reason);
	} else {
		err = presence_state_set_key(presence_user_state(user), &p->limits, topic->key,
		                             topic->key_len, payload, len, changed, reason);
	}
	if (err == PRESENCE_OK && *changed) {
		presence_registry_write_charge(p->reg, user);
		presence_registry_user_changed(p->reg, user);
	}
	return err;
}

static void local_tick(struct presence_plugin *p)
{
	presence_registry_offline_expire(p->reg);
	presence_publish_due_documents(p);
	presence_registry_forget_due(p->reg, PRESENCE_FORGET_PER_TICK);
	presence_announce_forgotten(p);
}

static void local_publish_due(struct presence_plugin *p)
{
	presence_publish_due_documents(p);
}

const struct presence_backend presence_backend_local = {
    .start = local_start,
    .end = local_end,
    .write = local_write,
    .tick = local_tick,
    .publish_due = local_publish_due,
    .widen = presence_sight_widen,
};
