/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The bottom of the adapter: everything the plugin sends to the broker (publishes, documents,
 * rejection notices, removals of forgotten users, budgeted log lines), the mapping of the
 * core's errors to the broker's. It calls the core and the broker only; every
 * other adapter file may call it, it calls none of them.
 */
#ifndef PRESENCE_PUBLISH_H
#define PRESENCE_PUBLISH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "logbudget.h"
#include "presence_err.h"

struct presence_plugin;
struct presence_user;

/* Prefix of every log line the plugin writes. */
#define PRESENCE_LOG_PREFIX "mosquitto-presence: "

/* Document topics up to this long are built on the stack (presence_user_topic). */
#define PRESENCE_TOPIC_STACK_SIZE 256

/* Maps a core error to the broker's error codes. */
int presence_mosq_err(enum presence_err err);

/* Describes a MOSQ_ERR_* code for a log line. The plugin does not call the broker's
 * mosquitto_strerror: it belongs to libmosquitto, and brokers built with Mosquitto's Makefile
 * export only the functions listed in src/linker.syms, so a plugin using it would not load. */
const char *presence_mosq_strerror(int rc);

/* s, or "(none)" for NULL: for log lines. */
const char *presence_or_none(const char *s);

/* Logs a line (printf-style, without the plugin's prefix) within budget: dropped when the
 * budget is spent, and mentions how many lines were dropped before it. */
void presence_log_limited(struct presence_log_budget *budget, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logs, once a second at most, how many of budget's lines were suppressed and not yet
 * reported ("N more lines about <what> suppressed"). */
void presence_log_budget_report(struct presence_log_budget *budget, int level, const char *what);

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
 * NUL-terminated (or NULL with len 0), which is taken over in every case like props. This
 * saves the copy for the presence documents, which are rendered straight into such a
 * buffer. */
int presence_publish_owned(const char *client_id, const char *topic, void *payload, size_t len,
                           int qos, bool retain, mosquitto_property *props);

/* presence_publish with the payload marked as JSON for MQTT 5 receivers: payload format
 * indicator 1 and content type application/json are appended to props. */
int presence_publish_json(const char *client_id, const char *topic, const char *text, size_t len,
                          int qos, bool retain, mosquitto_property *props);

/* Returns user's document topic, with room for extra more bytes (extra counts a NUL of its
 * own): in stack (PRESENCE_TOPIC_STACK_SIZE bytes) when it fits, else from mosquitto_malloc;
 * NULL when that fails. Free with presence_user_topic_free(topic, stack). */
char *presence_user_topic(const struct presence_plugin *p, const struct presence_user *user,
                          char *stack, size_t extra);
void presence_user_topic_free(char *topic, const char *stack);

/* Publishes user's last document (presence_user_published), retained, QoS 1, marked as JSON,
 * and counts it. Returns a MOSQ_ERR_* value (the failure is logged). */
int presence_publish_document(struct presence_plugin *p, struct presence_user *user);

/* Publishes a document for every dirty user whose presence differs from its last document,
 * after announcing the users the registry forgot; the state file learns of each change first.
 * Returns the number published. */
size_t presence_publish_due_documents(struct presence_plugin *p);

/* Publishes the rejection notice of a state write to write_topic on user's error topic, "<user
 * topic>/error", not retained (the ACL lets only the user's own sessions read it). A failure is
 * logged. */
void presence_publish_rejection(struct presence_plugin *p, struct presence_user *user,
                                const char *write_topic, const char *reason);

/* Announces that user is forgotten: a zero-length retained publish on its topic removes its
 * retained document (its subscribers get an empty message). A failure is logged. */
void presence_announce_removal(struct presence_plugin *p, const struct presence_user *user);

/* Announces every user the registry forgot (presence_registry_forgotten_take): removes its
 * retained document, then releases it (presence_forget_release). */
void presence_announce_forgotten(struct presence_plugin *p);

/* Tells the state file that user (out of the registry already) is gone, and frees it. */
void presence_forget_release(struct presence_plugin *p, struct presence_user *user);

#endif
