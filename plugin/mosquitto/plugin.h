/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The adapter's shared context: one struct presence_plugin per plugin instance, passed to
 * every callback as userdata. plugin.c creates it, chooses its backend once (backend.h) and
 * wires the callbacks (callbacks.h); docs/DESIGN.md, "Adapter (plugin/mosquitto/)", has the
 * file map and the order in which the files may call each other.
 */
#ifndef PRESENCE_PLUGIN_H
#define PRESENCE_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "broker.h"
#include "config.h"
#include "logbudget.h"
#include "metrics.h"
#include "querylimit.h"
#include "registry.h"
#include "state.h"
#include "store.h"
#include "topic.h"
#include "visibility.h"

/* The query API's request topic (registered with MOSQ_EVT_CONTROL) and the topic responses go
 * to when the request names no usable MQTT 5 response topic (dynamic-security's convention). */
#define PRESENCE_CONTROL_TOPIC "$CONTROL/presence/v1"
#define PRESENCE_CONTROL_RESPONSE_TOPIC "$CONTROL/presence/v1/response"

/* The log budget of each kind of line a client can cause by the thousand: a burst of this many
 * lines, then this many a second. */
#define PRESENCE_LOG_BURST 200
#define PRESENCE_LOG_PER_SECOND 20

/* The most callbacks one instance registers (shared and lifecycle ones). */
#define PRESENCE_MAX_CALLBACKS 12

/* Saves of the state file made at once for a changed privacy choice: a burst of this many,
 * then this many a second (the others wait for the next save, at most a second). */
#define PRESENCE_PRIVACY_SAVES 10
/* Users forgotten per TICK at most (the rest in the next ones). */
#define PRESENCE_FORGET_PER_TICK 1000

struct presence_plugin {
	/* The broker's id for this plugin instance (for callback registration). */
	mosquitto_plugin_id_t *id;
	/* The callbacks registered, in order, so that cleanup unregisters exactly those. */
	struct presence_callback registered[PRESENCE_MAX_CALLBACKS];
	size_t registered_count;
	/* The effective options. */
	struct presence_config cfg;
	/* State write limits, from cfg. */
	struct presence_state_limits limits;
	/* Sessions and users. */
	struct presence_registry *reg;
	/* Set by RELOAD until the end of the loop iteration: BASIC_AUTH events in between are
	 * re-authentications of existing sessions (even offline persistent ones), not logins. */
	bool reloading;
	/* The $SYS metrics: their schedule and the values last published. */
	struct presence_metrics metrics;
	/* Counters behind the metrics, since the plugin started: documents published, state-write
	 * messages accepted (changed or not) and rejected. */
	uint64_t documents_published;
	uint64_t state_writes;
	uint64_t state_rejected;
	/* Publishes into the plugin's namespace denied, Wills included. */
	uint64_t publishes_denied;
	/* Sessions given no presence because max_users users were known and online. */
	uint64_t sessions_untracked;
	/* Log budgets (core/logbudget.h) of the lines that one client can cause by the thousand:
	 * rejected or ignored state writes, and denied publishes, refused response topics and
	 * unanswered queries. */
	struct presence_log_budget rejected_log;
	struct presence_log_budget denied_log;
	struct presence_log_budget untracked_log;
	/* The client whose login the broker handled last in this loop iteration, until it
	 * disconnects or the iteration ends; NULL otherwise (presence_policy_takeover_will). */
	const struct mosquitto *connecting;
	/* Each client's budget of query response bytes (core/querylimit.h). */
	struct presence_query_limit *query_limit;
	/* The state file, or NULL without plugin_opt_state_file. */
	struct presence_store *store;
	/* Monotonic time (ms) at which the last flush of the state file began, whether the last
	 * one failed (flushes are paced to about one per second, and retried at that pace after a
	 * failure), and whether one is in progress (it goes on at the next TICK). */
	int64_t save_started_ms;
	bool save_failed;
	bool flushing;
	/* Users written by the flush in progress so far. */
	size_t flushed_users;
	/* Whether init restored the state file of an unclean stop (a crash or a kill). */
	bool restored_unclean;
	/* Whether the plugin saw any login (BASIC_AUTH) since it started, and whether it said
	 * that clients are connected without one (presence_session_check_logins). */
	bool login_seen_any;
	bool unseen_login_logged;
	/* Whether every current document is one of the registry's (a single broker always; a
	 * cluster broker once it has the cluster's first snapshot): documents of other users are
	 * stale then (presence_sight_read). */
	bool documents_authoritative;
	/* Where documents come from and state writes go, chosen once by init: a single broker's
	 * registry or the cluster (backend.h). */
	const struct presence_backend *backend;
	/* The cluster backend's own state (backend_cluster.c), NULL with the local backend. */
	struct presence_cluster_link *cluster;
	/* Who may see whom (sight.c): the operator's rule, the groups file's table, the
	 * deletions in flight, the TICKs so far (their clock), and whether a SIGHUP asked to
	 * re-read the groups file. */
	struct presence_visibility vis;
	struct presence_groups *groups;
	struct presence_deletions *deletions;
	uint64_t ticks;
	bool groups_reload;
	/* A privacy choice changed since the last save began: a save is due at once, within the
	 * budget of such saves (tick.c), so that a crash does not forget it. */
	bool save_urgent;
	struct presence_log_budget urgent_saves;
};

#endif
