/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Everything the plugin sends to the broker; see publish.h. Every publish goes through
 * presence_publish_owned: the documents are rendered straight into the buffer the broker takes
 * over, everything else is copied into one (presence_publish).
 */
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "document.h"
#include "plugin.h"
#include "clock.h"
#include "publish.h"

int presence_mosq_err(enum presence_err err)
{
	switch (err) {
	case PRESENCE_OK:
		return MOSQ_ERR_SUCCESS;
	case PRESENCE_ERR_NOMEM:
	case PRESENCE_ERR_FULL:
		return MOSQ_ERR_NOMEM;
	case PRESENCE_ERR_INVAL:
	case PRESENCE_ERR_TOO_LARGE:
		return MOSQ_ERR_INVAL;
	case PRESENCE_ERR_NOT_FOUND:
		return MOSQ_ERR_NOT_FOUND;
	case PRESENCE_ERR_IO:
		return MOSQ_ERR_ERRNO;
	}
	return MOSQ_ERR_UNKNOWN;
}

const char *presence_mosq_strerror(int rc)
{
	switch (rc) {
	case MOSQ_ERR_SUCCESS:
		return "success";
	case MOSQ_ERR_NOMEM:
		return "out of memory";
	case MOSQ_ERR_INVAL:
		return "invalid argument";
	case MOSQ_ERR_NOT_SUPPORTED:
		return "not supported";
	case MOSQ_ERR_ALREADY_EXISTS:
		return "already exists";
	case MOSQ_ERR_NOT_FOUND:
		return "not found";
	case MOSQ_ERR_ERRNO:
		return "system error";
	default:
		return "broker error";
	}
}

const char *presence_or_none(const char *s)
{
	return s != NULL ? s : "(none)";
}

/* Longest log line the budgeted logging writes; longer ones are cut. */
#define LOG_LINE_SIZE 1024

void presence_log_limited(struct presence_log_budget *budget, int level, const char *fmt, ...)
{
	char line[LOG_LINE_SIZE];
	uint64_t suppressed = 0;
	va_list ap;

	if (!presence_log_budget_take(budget, presence_clock_monotonic_ms(), &suppressed)) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (suppressed > 0) {
		mosquitto_log_printf(level,
		                     PRESENCE_LOG_PREFIX "%s (%" PRIu64 " similar lines "
		                                         "suppressed before this one)",
		                     line, suppressed);
	} else {
		mosquitto_log_printf(level, PRESENCE_LOG_PREFIX "%s", line);
	}
}

void presence_log_budget_report(struct presence_log_budget *budget, int level, const char *what)
{
	uint64_t suppressed;

	if (presence_log_budget_flush(budget, presence_clock_monotonic_ms(), &suppressed)) {
		mosquitto_log_printf(
		    level, PRESENCE_LOG_PREFIX "%" PRIu64 " more lines about %s suppressed",
		    suppressed, what);
	}
}

char *presence_user_topic(const struct presence_plugin *p, const struct presence_user *user,
                          char *stack, size_t extra)
{
	size_t len = presence_registry_topic_len(p->reg, user);
	char *topic =
	    len + extra < PRESENCE_TOPIC_STACK_SIZE ? stack : mosquitto_malloc(len + extra + 1);

	if (topic != NULL) {
		presence_registry_topic_write(p->reg, user, topic);
	}
	return topic;
}

void presence_user_topic_free(char *topic, const char *stack)
{
	if (topic != stack) {
		mosquitto_free(topic);
	}
}

int presence_publish_owned(const char *client_id, const char *topic, void *payload, size_t len,
                           int qos, bool retain, mosquitto_property *props)
{
	int rc = MOSQ_ERR_INVAL;

	if (len > INT_MAX || mosquitto_pub_topic_check(topic) != MOSQ_ERR_SUCCESS) {
		goto out_free;
	}
	rc = mosquitto_broker_publish(client_id, topic, (int)len, payload, qos, retain, props);
	if (rc == MOSQ_ERR_SUCCESS) {
		return rc;
	}
out_free:
	mosquitto_free(payload);
	mosquitto_property_free_all(&props);
	return rc;
}

int presence_publish(const char *client_id, const char *topic, const char *text, size_t len,
                     int qos, bool retain, mosquitto_property *props)
{
	char *payload;

	if (len > INT_MAX) {
		mosquitto_property_free_all(&props);
		return MOSQ_ERR_INVAL;
	}
	/* One byte more, so the payload is NUL-terminated like the broker's own. */
	payload = mosquitto_malloc(len + 1);
	if (payload == NULL) {
		mosquitto_property_free_all(&props);
		return MOSQ_ERR_NOMEM;
	}
	memcpy(payload, text, len);
	payload[len] = '\0';
	return presence_publish_owned(client_id, topic, payload, len, qos, retain, props);
}

/* Appends the marks of a JSON payload for MQTT 5 receivers to *props: payload format indicator
 * 1 and content type application/json. Returns MOSQ_ERR_SUCCESS, or an error after freeing
 * *props. */
static int add_json_properties(mosquitto_property **props)
{
	int rc = mosquitto_property_add_byte(props, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 1);

	if (rc == MOSQ_ERR_SUCCESS) {
		rc = mosquitto_property_add_string(props, MQTT_PROP_CONTENT_TYPE,
		                                   "application/json");
	}
	if (rc != MOSQ_ERR_SUCCESS) {
		mosquitto_property_free_all(props);
	}
	return rc;
}

int presence_publish_json(const char *client_id, const char *topic, const char *text, size_t len,
                          int qos, bool retain, mosquitto_property *props)
{
	int rc = add_json_properties(&props);

	if (rc != MOSQ_ERR_SUCCESS) {
		return rc;
	}
	return presence_publish(client_id, topic, text, len, qos, retain, props);
}

/* Publishes a document of user (payload taken over as by presence_publish_owned), retained,
 * QoS 1, marked as JSON. */
static int publish_json_owned(struct presence_plugin *p, const struct presence_user *user,
                              void *payload, size_t len)
{
	char stack[PRESENCE_TOPIC_STACK_SIZE];
	mosquitto_property *props = NULL;
	char *topic;
	int rc = add_json_properties(&props);

	if (rc != MOSQ_ERR_SUCCESS) {
		mosquitto_free(payload);
		return rc;
	}
	topic = presence_user_topic(p, user, stack, 0);
	if (topic == NULL) {
		mosquitto_free(payload);
		mosquitto_property_free_all(&props);
		return MOSQ_ERR_NOMEM;
	}
	rc = presence_publish_owned(NULL, topic, payload, len, 1, true, props);
	presence_user_topic_free(topic, stack);
	return rc;
}

/* Publishes the rejection notice for a state write on "<user topic>/error" (not retained);
 * the ACL lets only the user's own sessions read it. */
void presence_publish_rejection(struct presence_plugin *p, struct presence_user *user,
                                const char *write_topic, const char *reason)
{
	char stack[PRESENCE_TOPIC_STACK_SIZE];
	char *topic = presence_user_topic(p, user, stack, sizeof("/error"));
	char *text;
	size_t len;
	int rc = MOSQ_ERR_NOMEM;

	if (topic == NULL) {
		goto out_log;
	}
	strcat(topic, "/error");
	text = presence_document_render_error(write_topic, reason, &len);
	if (text != NULL) {
		rc = presence_publish_json(NULL, topic, text, len, 1, false, NULL);
		presence_document_free(text);
	}
	presence_user_topic_free(topic, stack);
out_log:
	if (rc != MOSQ_ERR_SUCCESS) {
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX
		                     "could not publish the rejection notice for "
		                     "user %s: %s",
		                     presence_user_name(user), presence_mosq_strerror(rc));
	}
}

int presence_publish_document(struct presence_plugin *p, struct presence_user *user)
{
	struct presence_document doc;
	void *payload;
	size_t len;
	int rc = MOSQ_ERR_NOMEM;

	if (!presence_user_published(user, &doc)) {
		return MOSQ_ERR_SUCCESS;
	}
	payload = presence_document_render_with(&doc, &len, mosquitto_malloc);
	if (payload != NULL) {
		rc = publish_json_owned(p, user, payload, len);
	}
	if (rc != MOSQ_ERR_SUCCESS) {
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX "could not publish the document of user "
		                                         "%s (%s)",
		                     presence_user_name(user), presence_mosq_strerror(rc));
		return rc;
	}
	p->documents_published++;
	return rc;
}

void presence_announce_removal(struct presence_plugin *p, const struct presence_user *user)
{
	char stack[PRESENCE_TOPIC_STACK_SIZE];
	char *topic = presence_user_topic(p, user, stack, 0);
	int rc = MOSQ_ERR_NOMEM;
	bool first;

	/* Where not everyone may see the user, the removal reaches only those that could
	 * (sight.c): recorded as a deletion in flight, the user gone after it. Without memory
	 * for the record, the READ check lets it reach nobody (the retained document still
	 * goes). */
	if (!presence_visibility_open(&p->vis, presence_user_privacy(user))) {
		(void)presence_deletions_add(
		    p->deletions, presence_user_name(user), presence_user_level(user),
		    presence_user_level_len(user), presence_user_privacy(user), p->groups, NULL,
		    p->groups, true, p->ticks, &first);
	}
	if (topic != NULL) {
		rc = presence_publish_owned(NULL, topic, NULL, 0, 1, true, NULL);
		presence_user_topic_free(topic, stack);
	}
	if (rc != MOSQ_ERR_SUCCESS) {
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX
		                     "could not remove the retained document of "
		                     "forgotten user %s (%s)",
		                     presence_user_name(user), presence_mosq_strerror(rc));
	}
}

/* Announces a user the registry forgot (presence_announce_removal), then lets it go. */
static void announce_forgotten(struct presence_plugin *p, struct presence_user *user)
{
	presence_announce_removal(p, user);
	presence_forget_release(p, user);
}

void presence_forget_release(struct presence_plugin *p, struct presence_user *user)
{
	if (p->store != NULL) {
		presence_store_note_forget(p->store, user);
	}
	presence_user_free(user);
}

void presence_announce_forgotten(struct presence_plugin *p)
{
	struct presence_user *user;

	while ((user = presence_registry_forgotten_take(p->reg)) != NULL) {
		announce_forgotten(p, user);
	}
}

size_t presence_publish_due_documents(struct presence_plugin *p)
{
	struct presence_document doc;
	struct presence_user *user;
	size_t published = 0;
	int64_t now_ms = 0;
	void *payload;
	size_t len;
	bool due;
	int rc;

	/* Forgotten users first: a user of the same name created since publishes after. */
	presence_announce_forgotten(p);
	while ((user = presence_registry_dirty_next(p->reg)) != NULL) {
		bool noted = false;

		if (now_ms == 0) {
			now_ms = presence_clock_wall_ms();
		}
		if (presence_registry_document_prepare(p->reg, user, now_ms, &doc, &due) !=
		    PRESENCE_OK) {
			rc = MOSQ_ERR_NOMEM;
			goto out_failed;
		}
		if (!due) {
			continue;
		}
		/* The state file learns of the change before the user's last document changes. */
		if (p->store != NULL &&
		    presence_store_note_change(p->store, user, &noted) != PRESENCE_OK) {
			rc = MOSQ_ERR_NOMEM;
			goto out_failed;
		}
		/* Rendered straight into a buffer the broker takes over. */
		payload = presence_document_render_with(&doc, &len, mosquitto_malloc);
		rc = payload != NULL ? publish_json_owned(p, user, payload, len) : MOSQ_ERR_NOMEM;
		if (rc == MOSQ_ERR_SUCCESS) {
			presence_registry_document_sent(p->reg, user);
			p->documents_published++;
			published++;
			continue;
		}
		if (noted) {
			presence_store_note_cancel(p->store, user);
		}
	out_failed:
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX "could not publish the document of user "
		                                         "%s (%s); retrying",
		                     presence_user_name(user), presence_mosq_strerror(rc));
		presence_registry_document_failed(p->reg, user);
	}
	presence_registry_flush_done(p->reg);
	return published;
}
