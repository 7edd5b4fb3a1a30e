/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Who may see whom, in the broker (core/visibility.h): the groups file, each delivery's READ
 * check of a document, query answers, privacy writes, and the zero-length message that tells a
 * watcher it lost sight of a user.
 */
#ifndef PRESENCE_SIGHT_H
#define PRESENCE_SIGHT_H

#include <stdbool.h>
#include <stddef.h>

#include "broker.h"
#include "query.h"
#include "topic.h"

struct presence_plugin;
struct presence_user;

/* Reads the groups file (init). Returns MOSQ_ERR_SUCCESS, or an error (logged). */
int presence_sight_start(struct presence_plugin *p);
/* Frees what start made (NULL-safe on a plugin that never started). */
void presence_sight_end(struct presence_plugin *p);

/* The answer to a READ check of a document topic. */
enum presence_sight_read {
	/* Nothing to say: the other rules decide. */
	PRESENCE_SIGHT_PASS = 0,
	/* A stale document restored by the broker (core/policy.h): denied, and removed. */
	PRESENCE_SIGHT_STALE,
	/* The watcher may not see the user (or a zero-length message is not for it): denied. */
	PRESENCE_SIGHT_HIDDEN,
};
enum presence_sight_read presence_sight_read(struct presence_plugin *p,
                                             const struct mosquitto *watcher,
                                             const struct presence_topic *topic,
                                             size_t payload_len);

/* The query filter for requests by client; arg must live as long as the query. */
struct presence_sight_query {
	struct presence_plugin *p;
	const char *watcher;
};
void presence_sight_query_filter(struct presence_plugin *p, const struct mosquitto *client,
                                 struct presence_sight_query *arg,
                                 struct presence_query_sight *sight);

/* Whether a privacy write (payload, len bytes) would change user's choice; reason as for a
 * rejected write. */
enum presence_err presence_sight_privacy_changes(struct presence_plugin *p,
                                                 struct presence_user *user, const void *payload,
                                                 size_t len, bool *changed, char *reason);

/* Applies a privacy write of user (payload, len bytes): the new choice takes effect at once
 * for every check; watchers that lose sight get the zero-length message, and when some may gain
 * it the user's next document is due (*changed). reason as for a rejected write. */
enum presence_err presence_sight_privacy_write(struct presence_plugin *p,
                                               struct presence_user *user, const void *payload,
                                               size_t len, bool *changed, char *reason);

/* Applies choice (taken over) to user as presence_sight_privacy_write does, but for the
 * document: *changed when some watcher may gain sight, and then the caller makes the user's
 * next document jump (presence_registry_user_widen; in cluster mode Redis did). */
enum presence_err presence_sight_privacy_apply(struct presence_plugin *p,
                                               struct presence_user *user,
                                               struct presence_privacy *choice, bool *changed);

/* A single broker's widening (the local backend's): user's next document is due with seq and
 * since jumped (registry.h, presence_registry_user_widen). */
void presence_sight_widen(struct presence_plugin *p, struct presence_user *user);

/* TICK: forgets delivered deletions (sending those that waited for them) and applies a groups
 * file the last SIGHUP asked to re-read. */
void presence_sight_tick(struct presence_plugin *p);

/* RELOAD (SIGHUP): re-read the groups file at the next TICK. */
void presence_sight_reload_requested(struct presence_plugin *p);

#endif
