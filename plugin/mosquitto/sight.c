/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Who may see whom, in the broker (sight.h).
 *
 * Mosquitto asks the ACL for READ access before it delivers a message to each subscriber (live,
 * retained on subscribe, and queued messages at reconnect), with the receiving client: that is
 * where a document is kept from a watcher that may not see its user. A watcher that loses sight
 * gets one zero-length message on the user's topic, not retained: the plugin publishes it to
 * everyone, and the READ check lets it through only to the watchers that could see the user
 * before the change and cannot after (core/visibility.h, the deletions in flight). A watcher
 * that gains sight gets the user's next document, published at once (seq and since jumped, so
 * that it tells nothing of the time it could not see).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"
#include "publish.h"
#include "session.h"
#include "sight.h"

/* The watcher's name: its identity, tracked or not (users in ignore_users watch too). */
static const char *watcher_name(const struct presence_plugin *p, const struct mosquitto *client)
{
	return presence_client_identity(p, client);
}

int presence_sight_start(struct presence_plugin *p)
{
	char err[PRESENCE_VISIBILITY_REASON_SIZE + 512];

	p->vis.group_rule = p->cfg.visibility_group;
	p->vis.separator = p->cfg.group_separator;
	p->vis.see_everyone = p->cfg.see_everyone;
	p->vis.see_everyone_count = p->cfg.see_everyone_count;
	p->deletions = presence_deletions_new();
	if (p->deletions == NULL) {
		return MOSQ_ERR_NOMEM;
	}
	switch (presence_groups_load(p->cfg.groups_file, &p->groups, err, sizeof(err))) {
	case PRESENCE_OK:
		break;
	case PRESENCE_ERR_NOMEM:
		return MOSQ_ERR_NOMEM;
	default:
		mosquitto_log_printf(MOSQ_LOG_ERR, PRESENCE_LOG_PREFIX "plugin_opt_groups_file: %s",
		                     err);
		return MOSQ_ERR_INVAL;
	}
	if (p->cfg.groups_file != NULL) {
		mosquitto_log_printf(
		    MOSQ_LOG_INFO, PRESENCE_LOG_PREFIX "read %zu groups (%zu memberships) from %s",
		    presence_groups_count(p->groups), presence_groups_members(p->groups),
		    p->cfg.groups_file);
	}
	return MOSQ_ERR_SUCCESS;
}

void presence_sight_end(struct presence_plugin *p)
{
	presence_deletions_free(p->deletions);
	p->deletions = NULL;
	presence_groups_unref(p->groups);
	p->groups = NULL;
}

enum presence_sight_read presence_sight_read(struct presence_plugin *p,
                                             const struct mosquitto *watcher,
                                             const struct presence_topic *topic, size_t payload_len)
{
	char stack[256];
	char *name = stack;
	const struct presence_deletion *del;
	const struct presence_privacy *privacy = NULL;
	struct presence_user *user = NULL;
	struct presence_document doc;
	enum presence_sight_read answer = PRESENCE_SIGHT_PASS;
	bool known;

	if (topic->user_len >= sizeof(stack)) {
		name = malloc(topic->user_len + 1);
		if (name == NULL) {
			/* Cannot tell: deny (a document withheld is retried by nobody, but a
			 * document shown could be one the watcher may not see). */
			return PRESENCE_SIGHT_HIDDEN;
		}
	}
	presence_topic_decode_level_into(topic->user, topic->user_len, name);
	known = presence_topic_level_is_user(topic->user, topic->user_len, name);
	if (known) {
		user = presence_registry_user_find(p->reg, name);
	}
	if (user != NULL) {
		privacy = presence_user_privacy(user);
	}
	if (payload_len > 0) {
		if (p->documents_authoritative &&
		    (user == NULL || !presence_user_published(user, &doc))) {
			answer = PRESENCE_SIGHT_STALE;
		} else if (!presence_visibility_may_see(&p->vis, p->groups,
		                                        watcher_name(p, watcher), name, privacy)) {
			answer = PRESENCE_SIGHT_HIDDEN;
		}
		goto out;
	}
	/* A zero-length message: a deletion in flight, or a forgotten user's removal. */
	del = presence_deletions_find(p->deletions, topic->user, topic->user_len);
	if (del != NULL) {
		if (!presence_deletion_allows(&p->vis, del, watcher_name(p, watcher))) {
			answer = PRESENCE_SIGHT_HIDDEN;
		}
	} else if (!presence_visibility_open(&p->vis, privacy)) {
		/* None in flight: only where everyone may see (as before groups existed). */
		answer = PRESENCE_SIGHT_HIDDEN;
	}
out:
	if (name != stack) {
		free(name);
	}
	return answer;
}

static bool query_may_see(void *arg, const struct presence_user *user)
{
	const struct presence_sight_query *q = arg;

	return presence_visibility_may_see(&q->p->vis, q->p->groups, q->watcher,
	                                   presence_user_name(user), presence_user_privacy(user));
}

void presence_sight_query_filter(struct presence_plugin *p, const struct mosquitto *client,
                                 struct presence_sight_query *arg,
                                 struct presence_query_sight *sight)
{
	arg->p = p;
	arg->watcher = watcher_name(p, client);
	sight->may_see = query_may_see;
	sight->arg = arg;
}

/* Publishes the zero-length message on the user level (encoded, level_len bytes). */
static void publish_vanish(struct presence_plugin *p, const char *level, size_t level_len)
{
	size_t len = p->cfg.topic_prefix_len + 1 + level_len;
	char *topic = malloc(len + 1);
	int rc = MOSQ_ERR_NOMEM;

	if (topic != NULL) {
		memcpy(topic, p->cfg.topic_prefix, p->cfg.topic_prefix_len);
		topic[p->cfg.topic_prefix_len] = '/';
		memcpy(topic + p->cfg.topic_prefix_len + 1, level, level_len);
		topic[len] = '\0';
		rc = presence_publish_owned(NULL, topic, NULL, 0, 1, false, NULL);
		free(topic);
	}
	if (rc != MOSQ_ERR_SUCCESS) {
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX "could not tell watchers that they lost "
		                                         "sight of a user (%s)",
		                     presence_mosq_strerror(rc));
	}
}

/* Records that watchers of user may lose sight (from before to now) and publishes the
 * zero-length message when none is in flight. */
static enum presence_err lose_sight(struct presence_plugin *p, const char *name, const char *level,
                                    size_t level_len, const struct presence_privacy *from_privacy,
                                    struct presence_groups *from_groups,
                                    const struct presence_privacy *to_privacy, bool gone)
{
	bool publish = false;
	enum presence_err err =
	    presence_deletions_add(p->deletions, name, level, level_len, from_privacy, from_groups,
	                           to_privacy, p->groups, gone, p->ticks, &publish);

	if (err == PRESENCE_OK && publish) {
		publish_vanish(p, level, level_len);
	}
	return err;
}

/* Shows user to the watchers that gain sight of it: its next document, with seq jumped (noted
 * in the state file first, whose guard then holds the document until the jump is saved). When
 * memory runs out for the note, the document goes out with seq + 1. */
void presence_sight_widen(struct presence_plugin *p, struct presence_user *user)
{
	bool added = false;

	presence_registry_user_widen(
	    p->reg, user,
	    p->store == NULL || presence_store_note_change(p->store, user, &added) == PRESENCE_OK);
}

/* Parses a privacy payload into *choice (NULL when it is the one user has: nothing to do). */
static enum presence_err parse_change(const struct presence_user *user, const void *payload,
                                      size_t len, struct presence_privacy **choice, bool *changed,
                                      char *reason)
{
	enum presence_err err =
	    presence_privacy_parse(payload, len, choice, reason, PRESENCE_STATE_REASON_SIZE);

	*changed =
	    err == PRESENCE_OK && !presence_privacy_equal(presence_user_privacy(user), *choice);
	if (!*changed) {
		presence_privacy_free(*choice);
		*choice = NULL;
	}
	return err;
}

enum presence_err presence_sight_privacy_changes(struct presence_plugin *p,
                                                 struct presence_user *user, const void *payload,
                                                 size_t len, bool *changed, char *reason)
{
	struct presence_privacy *choice = NULL;
	enum presence_err err = parse_change(user, payload, len, &choice, changed, reason);

	(void)p;
	presence_privacy_free(choice);
	return err;
}

enum presence_err presence_sight_privacy_apply(struct presence_plugin *p,
                                               struct presence_user *user,
                                               struct presence_privacy *choice, bool *changed)
{
	const struct presence_privacy *old = presence_user_privacy(user);
	struct presence_document doc;
	bool widened;

	*changed = false;
	if (presence_privacy_equal(old, choice)) {
		presence_privacy_free(choice);
		return PRESENCE_OK;
	}
	/* Without a document nobody saw anything: there is nobody to tell. */
	if (presence_user_published(user, &doc)) {
		bool added = false;

		if (p->store != NULL &&
		    presence_store_note_change(p->store, user, &added) != PRESENCE_OK) {
			presence_privacy_free(choice);
			return PRESENCE_ERR_NOMEM;
		}
		if (lose_sight(p, presence_user_name(user), presence_user_level(user),
		               presence_user_level_len(user), old, p->groups, choice,
		               false) != PRESENCE_OK) {
			if (added) {
				presence_store_note_cancel(p->store, user);
			}
			presence_privacy_free(choice);
			return PRESENCE_ERR_NOMEM;
		}
	}
	widened = presence_visibility_widens(&p->vis, old, choice);
	presence_registry_user_set_privacy(user, choice);
	p->save_urgent = p->store != NULL;
	*changed = widened;
	return PRESENCE_OK;
}

enum presence_err presence_sight_privacy_write(struct presence_plugin *p,
                                               struct presence_user *user, const void *payload,
                                               size_t len, bool *changed, char *reason)
{
	struct presence_privacy *choice = NULL;
	enum presence_err err = parse_change(user, payload, len, &choice, changed, reason);

	if (err != PRESENCE_OK || !*changed) {
		*changed = false;
		return err;
	}
	presence_registry_write_charge(p->reg, user);
	err = presence_sight_privacy_apply(p, user, choice, changed);
	if (err == PRESENCE_OK && *changed) {
		presence_sight_widen(p, user);
	}
	return err;
}

/* A change came while the deletion for the user was in flight: tell what followed. */
static void deletion_again(void *arg, const char *name, const char *level, size_t level_len,
                           const struct presence_privacy *from_privacy,
                           struct presence_groups *from_groups, bool gone)
{
	struct presence_plugin *p = arg;
	struct presence_user *user = gone ? NULL : presence_registry_user_find(p->reg, name);

	if (lose_sight(p, name, level, level_len, from_privacy, from_groups,
	               user != NULL ? presence_user_privacy(user) : NULL,
	               user == NULL) != PRESENCE_OK) {
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX
		                     "out of memory: watchers that lost sight of "
		                     "user %s are not told",
		                     name);
	}
}

/* Re-reads the groups file; on success every user whose watchers change is told (in this
 * TICK: a reload visits every known user once). */
static void reload_groups(struct presence_plugin *p)
{
	char err[PRESENCE_VISIBILITY_REASON_SIZE + 512];
	struct presence_groups *fresh = NULL, *old;
	struct presence_groups_diff *diff;
	struct presence_cursor cursor = {0};
	struct presence_user *user;
	size_t lost = 0, gained = 0;

	if (presence_groups_load(p->cfg.groups_file, &fresh, err, sizeof(err)) != PRESENCE_OK) {
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX
		                     "could not re-read plugin_opt_groups_file: "
		                     "%s; the groups read before stay",
		                     err);
		return;
	}
	diff = presence_groups_diff_new(p->groups, fresh);
	if (diff == NULL || !presence_registry_cursor_start(p->reg, &cursor)) {
		presence_groups_diff_free(diff);
		presence_groups_unref(fresh);
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX "out of memory re-reading "
		                                         "plugin_opt_groups_file; the groups read "
		                                         "before stay");
		return;
	}
	old = p->groups;
	p->groups = fresh;
	while (presence_groups_diff_count(diff) > 0 &&
	       (user = presence_registry_cursor_next(p->reg, &cursor)) != NULL) {
		struct presence_document doc;
		bool affected, widened;

		if (!presence_user_published(user, &doc)) {
			continue;
		}
		presence_visibility_reload_effect(&p->vis, old, fresh, diff,
		                                  presence_user_name(user), &affected, &widened);
		if (affected &&
		    lose_sight(p, presence_user_name(user), presence_user_level(user),
		               presence_user_level_len(user), presence_user_privacy(user), old,
		               presence_user_privacy(user), false) == PRESENCE_OK) {
			lost++;
		}
		if (widened) {
			p->backend->widen(p, user);
			gained++;
		}
	}
	presence_registry_cursor_stop(p->reg, &cursor);
	mosquitto_log_printf(MOSQ_LOG_INFO,
	                     PRESENCE_LOG_PREFIX "re-read %zu groups (%zu memberships) from %s: "
	                                         "%zu groups changed, %zu users checked for "
	                                         "watchers that lost sight, %zu shown to more",
	                     presence_groups_count(fresh), presence_groups_members(fresh),
	                     p->cfg.groups_file, presence_groups_diff_count(diff), lost, gained);
	presence_groups_diff_free(diff);
	presence_groups_unref(old);
}

void presence_sight_tick(struct presence_plugin *p)
{
	p->ticks++;
	if (presence_deletions_count(p->deletions) > 0) {
		presence_deletions_confirm(p->deletions, p->ticks, deletion_again, p);
	}
	if (p->groups_reload) {
		p->groups_reload = false;
		if (p->cfg.groups_file != NULL) {
			reload_groups(p);
		}
	}
}

void presence_sight_reload_requested(struct presence_plugin *p)
{
	p->groups_reload = true;
}
