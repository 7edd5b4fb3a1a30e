/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The adapter's shared context: one struct presence_plugin per plugin instance, passed to
 * every callback as userdata. plugin.c creates it and wires the callbacks; events.c holds the
 * ACL, state-write and tick callbacks and the publishing helpers, control.c the query API, and
 * the lifecycle file of the broker generation (lifecycle_v20.c or lifecycle_v21.c, see
 * broker.h) the callbacks that start and end sessions.
 */
#ifndef PRESENCE_PLUGIN_H
#define PRESENCE_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "wake.h"
#include "config.h"
#include "logbudget.h"
#include "metrics.h"
#include "querylimit.h"
#include "registry.h"
#include "state.h"
#include "store.h"
#include "topic.h"

/* Prefix of every log line the plugin writes. */
#define PRESENCE_LOG_PREFIX "mosquitto-presence: "

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

/* Document topics up to this long are built on the stack (presence_user_topic). */
#define PRESENCE_TOPIC_STACK_SIZE 256

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
	/* Mosquitto 2.1: wakes the broker's loop while documents wait for delivery
	 * (lifecycle_v21.c); unused on 2.0. */
	struct presence_wake delivery_wake;
	/* Whether every current document is one of the registry's (a single broker always; a
	 * cluster broker once it has the cluster's first snapshot): documents of other users are
	 * stale then (presence_policy_stale_document). */
	bool documents_authoritative;
	/* Cluster mode (cluster.c), or NULL for a single broker (no plugin_opt_cluster_url). */
	struct presence_cluster_link *cluster;
};

/* The shared callbacks (events.c). Each takes the struct presence_plugin as userdata. */
int presence_acl_check_cb(int event, void *event_data, void *userdata);
int presence_message_cb(int event, void *event_data, void *userdata);
int presence_tick_cb(int event, void *event_data, void *userdata);
/* Logs a line (printf-style, without the plugin's prefix) within budget: dropped when the
 * budget is spent, and mentions how many lines were dropped before it (events.c). */
void presence_log_limited(struct presence_log_budget *budget, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The lifecycle reports each login attempt (BASIC_AUTH) with presence_login_seen, which
 * remembers it as the login in progress (ignored during a reload), and the end of each
 * connection with presence_connection_gone, which forgets the client's session, its budget of
 * query answers and, if it is that client, the login in progress (events.c). */
void presence_login_seen(struct presence_plugin *p, const struct mosquitto *client);
void presence_connection_gone(struct presence_plugin *p, const struct mosquitto *client);

/* control.c */
int presence_control_cb(int event, void *event_data, void *userdata);

/* Returns the name of the user client's session counts towards (its username, or its client
 * id with identity clientid), or NULL when the session is not tracked (see
 * presence_policy_tracked_name). The pointer is the broker's; copy it to keep it. */
const char *presence_client_user_name(const struct presence_plugin *p,
                                      const struct mosquitto *client);

/* Logs a line for a session the plugin could not track (err: PRESENCE_ERR_FULL, counted and
 * logged within a budget; PRESENCE_ERR_NOMEM; PRESENCE_ERR_INVAL, a name too long). */
void presence_log_untracked(struct presence_plugin *p, const struct mosquitto *client,
                            const char *user_name, enum presence_err err);

/* Returns user's document topic, with room for extra more bytes (extra counts a NUL of its
 * own): in stack (PRESENCE_TOPIC_STACK_SIZE bytes) when it fits, else from mosquitto_malloc;
 * NULL when that fails. Free with presence_user_topic_free(topic, stack). */
char *presence_user_topic(const struct presence_plugin *p, const struct presence_user *user,
                          char *stack, size_t extra);
void presence_user_topic_free(char *topic, const char *stack);

/* Announces that user is forgotten: a zero-length retained publish on its topic removes its
 * retained document (its subscribers get an empty message). A failure is logged. */
void presence_announce_removal(struct presence_plugin *p, const struct presence_user *user);

/* Announces every user the registry forgot (presence_registry_forgotten_take): removes its
 * retained document, then releases it (presence_forget_release). */
void presence_announce_forgotten(struct presence_plugin *p);

/* Tells the state file and the cluster link that user (out of the registry already) is gone,
 * and frees it. */
void presence_forget_release(struct presence_plugin *p, struct presence_user *user);

/* Publishes the len bytes of text on topic with mosquitto_broker_publish: to every subscriber
 * when client_id is NULL, otherwise to that client only (Mosquitto 2.0 then checks no
 * subscription and no READ ACL). The payload is copied into a buffer from mosquitto_malloc,
 * which the broker frees with its own accounting (mosquitto_broker_publish_copy would corrupt
 * it on 2.0). props (NULL allowed) is taken over in every case: the broker owns it after a
 * successful publish, this function frees it otherwise. Returns a MOSQ_ERR_* value; the topic
 * is checked with mosquitto_pub_topic_check first (MOSQ_ERR_INVAL). */
int presence_publish(const char *client_id, const char *topic, const char *text, size_t len,
                     int qos, bool retain, mosquitto_property *props);

/* presence_publish with a payload already in a buffer of len + 1 bytes from mosquitto_malloc,
 * NUL-terminated, which is taken over in every case like props: the broker owns it after a
 * successful publish, this function frees it otherwise. This saves the copy for the presence
 * documents, which are rendered straight into such a buffer. */
int presence_publish_owned(const char *client_id, const char *topic, void *payload, size_t len,
                           int qos, bool retain, mosquitto_property *props);

/* presence_publish with the payload marked as JSON for MQTT 5 receivers: payload format
 * indicator 1 and content type application/json are appended to props. */
int presence_publish_json(const char *client_id, const char *topic, const char *text, size_t len,
                          int qos, bool retain, mosquitto_property *props);

/* Maps a core error to the broker's error codes. */
int presence_mosq_err(enum presence_err err);

/* Describes a MOSQ_ERR_* code for a log line. The plugin does not call the broker's
 * mosquitto_strerror: it belongs to libmosquitto, and brokers built with Mosquitto's Makefile
 * export only the functions listed in src/linker.syms, so a plugin using it would not load. */
const char *presence_mosq_strerror(int rc);

/* Publishes a document for every dirty user whose presence differs from its last document
 * (events.c). Returns the number published. Used by TICK and, for the corrections of a
 * restart, by mosquitto_plugin_init. */
size_t presence_publish_due_documents(struct presence_plugin *p);

/* Publishes user's last document (presence_user_published), retained, as every document
 * (events.c). Returns a MOSQ_ERR_* value (the failure is logged). */
int presence_publish_document(struct presence_plugin *p, struct presence_user *user);

/* Publishes the rejection notice of a state write to write_topic on user's error topic
 * (events.c). */
void presence_publish_rejection(struct presence_plugin *p, struct presence_user *user,
                                const char *write_topic, const char *reason);

/* Cluster mode (cluster.c; see core/cluster.h). start (from init, with cfg.cluster_url set)
 * starts the Redis link, or logs why not and returns a MOSQ_ERR_* code; stop (cleanup) ends it
 * and is a no-op without cluster mode. tick is TICK's work in cluster mode: documents come from
 * the cluster and dirty users' session counts go to it. state_write applies a checked state
 * write of user through the cluster (the answer comes later). */
int presence_cluster_link_start(struct presence_plugin *p);
void presence_cluster_link_stop(struct presence_plugin *p);
void presence_cluster_link_tick(struct presence_plugin *p);
void presence_cluster_link_state_write(struct presence_plugin *p, struct presence_user *user,
                                       const char *write_topic, const struct presence_topic *topic,
                                       const void *payload, size_t payload_len);
/* Drops what the cluster link holds of user (its pending writes, a resync position), which is
 * leaving the registry; a no-op without cluster mode. */
void presence_cluster_link_forget(struct presence_plugin *p, const struct presence_user *user);

/* Monotonic clock in milliseconds (events.c). */
int64_t presence_monotonic_ms(void);

#endif
