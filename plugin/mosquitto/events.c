/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The callbacks every broker generation shares: each turns one Mosquitto event into core calls
 * and publishes what the core says is due. Sessions start and end in the generation's
 * lifecycle file (broker.h); the rules (who may write or read what, when to save) are the
 * core's (policy.h).
 *
 * - Documents are published from TICK, once per dirty user, so a takeover (new login, old
 *   disconnect, all in one iteration) publishes nothing; on 2.1 those of session starts and
 *   state writes go out at the event itself (presence_lifecycle_changed). TICK first lets
 *   the lifecycle do its per-iteration work, then puts back on the dirty list the users whose
 *   offline delay has passed.
 * - With a state file, TICK then saves it: a save begins at most about once per second when
 *   something it records changed (at once when a document waits for one, see the seq margin
 *   in store.h) and writes a bounded number of users per TICK until it is complete, so even a
 *   large registry never stalls the broker loop. A failed save is logged and retried a second
 *   later; changes made during a save are written by the next one.
 *
 * State writes are ordinary publishes to P/U/state[/key]. They are consumed: MESSAGE applies
 * them and clears the retain flag, and the ACL denies READ of state topics to everybody, so
 * no subscriber ever receives one while the publisher still sees success.
 *
 * TICK also publishes the $SYS metrics when a round is due (core/metrics.h). Every publish of
 * the plugin, here and in control.c, goes through presence_publish_owned: the documents are
 * rendered straight into the buffer the broker takes over, everything else is copied into one
 * (presence_publish).
 */
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "document.h"
#include "plugin.h"
#include "topic.h"

int presence_mosq_err(enum presence_err err)
{
	switch (err) {
	case PRESENCE_OK:
		return MOSQ_ERR_SUCCESS;
	case PRESENCE_ERR_NOMEM:
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

static const char *or_none(const char *s)
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

	if (!presence_log_budget_take(budget, presence_monotonic_ms(), &suppressed)) {
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

/* Logs, once a second at most, how many of a log budget's lines were suppressed and not yet
 * reported. */
static void flush_log_budget(struct presence_log_budget *budget, int level, const char *what)
{
	uint64_t suppressed;

	if (presence_log_budget_flush(budget, presence_monotonic_ms(), &suppressed)) {
		mosquitto_log_printf(
		    level, PRESENCE_LOG_PREFIX "%" PRIu64 " more lines about %s suppressed",
		    suppressed, what);
	}
}

void presence_login_seen(struct presence_plugin *p, const struct mosquitto *client)
{
	if (!p->reloading) {
		p->connecting = client;
	}
}

void presence_connection_gone(struct presence_plugin *p, const struct mosquitto *client)
{
	if (client == p->connecting) {
		p->connecting = NULL;
	}
	presence_query_limit_forget(p->query_limit, client);
	presence_registry_session_gone(p->reg, client);
}

/* The client's identity as the broker reports it now: its username, or its client id with
 * identity clientid. */
static const char *client_identity(const struct presence_plugin *p, const struct mosquitto *client)
{
	return p->cfg.identity == PRESENCE_IDENTITY_CLIENTID ? mosquitto_client_id(client)
	                                                     : mosquitto_client_username(client);
}

const char *presence_client_user_name(const struct presence_plugin *p,
                                      const struct mosquitto *client)
{
	return presence_policy_tracked_name(&p->cfg, client_identity(p, client));
}

void presence_log_untracked(const struct mosquitto *client, const char *user_name)
{
	mosquitto_log_printf(MOSQ_LOG_WARNING,
	                     PRESENCE_LOG_PREFIX
	                     "out of memory: the session of client %s (user %s) "
	                     "is not tracked",
	                     or_none(mosquitto_client_id(client)), or_none(user_name));
}

/* Returns true when the encoded user level (level, len) is client's own user. */
static bool client_owns_level(const struct presence_plugin *p, const struct mosquitto *client,
                              const char *level, size_t len)
{
	return presence_policy_owns_level(p->reg, &p->cfg, client, client_identity(p, client),
	                                  level, len);
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

/* presence_publish_json with a payload taken over as by presence_publish_owned. */
static int publish_json_owned(const char *topic, void *payload, size_t len, bool retain)
{
	mosquitto_property *props = NULL;
	int rc = add_json_properties(&props);

	if (rc != MOSQ_ERR_SUCCESS) {
		mosquitto_free(payload);
		return rc;
	}
	return presence_publish_owned(NULL, topic, payload, len, 1, retain, props);
}

/* Publishes the rejection notice for a state write on "<user topic>/error" (not retained);
 * the ACL lets only the user's own sessions read it. */
void presence_publish_rejection(struct presence_user *user, const char *write_topic,
                                const char *reason)
{
	const char *doc_topic = presence_user_topic(user);
	size_t topic_len = strlen(doc_topic);
	char *topic = mosquitto_malloc(topic_len + sizeof("/error"));
	char *text;
	size_t len;
	int rc = MOSQ_ERR_NOMEM;

	if (topic == NULL) {
		goto out_log;
	}
	memcpy(topic, doc_topic, topic_len);
	memcpy(topic + topic_len, "/error", sizeof("/error"));
	text = presence_document_render_error(write_topic, reason, &len);
	if (text != NULL) {
		rc = presence_publish_json(NULL, topic, text, len, 1, false, NULL);
		presence_document_free(text);
	}
	mosquitto_free(topic);
out_log:
	if (rc != MOSQ_ERR_SUCCESS) {
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX
		                     "could not publish the rejection notice for "
		                     "user %s: %s",
		                     presence_user_name(user), presence_mosq_strerror(rc));
	}
}

/* Maps a verdict of the core to the broker's answer. */
static int verdict_code(enum presence_verdict verdict)
{
	switch (verdict) {
	case PRESENCE_VERDICT_ALLOW:
		return MOSQ_ERR_SUCCESS;
	case PRESENCE_VERDICT_DENY:
		return MOSQ_ERR_ACL_DENIED;
	case PRESENCE_VERDICT_PASS:
		break;
	}
	return presence_lifecycle_pass();
}

int presence_acl_check_cb(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	struct presence_plugin *p = userdata;
	enum presence_access access = ed->access == MOSQ_ACL_WRITE  ? PRESENCE_ACCESS_WRITE
	                              : ed->access == MOSQ_ACL_READ ? PRESENCE_ACCESS_READ
	                                                            : PRESENCE_ACCESS_OTHER;
	enum presence_verdict verdict;
	struct presence_topic topic;
	const char *why = NULL;
	bool owns = false;

	(void)event;
	presence_topic_parse(p->cfg.topic_prefix, ed->topic, &topic);
	/* Ownership matters for state writes and error notices only; documents are read on
	 * every delivery and need no lookup. Wills are checked too: they are sent after the
	 * session's end, when the client is no longer tracked, so they own nothing; except at a
	 * take-over, where the old session still counts (presence_policy_takeover_will). */
	if ((access == PRESENCE_ACCESS_WRITE &&
	     (topic.kind == PRESENCE_TOPIC_STATE || topic.kind == PRESENCE_TOPIC_STATE_KEY)) ||
	    (access == PRESENCE_ACCESS_READ && topic.kind == PRESENCE_TOPIC_ERROR)) {
		owns = client_owns_level(p, ed->client, topic.user, topic.user_len);
	}
	if (owns && access == PRESENCE_ACCESS_WRITE &&
	    presence_policy_takeover_will(
	        ed->client, mosquitto_client_id(ed->client), p->connecting,
	        p->connecting != NULL ? mosquitto_client_id(p->connecting) : NULL)) {
		p->publishes_denied++;
		presence_log_limited(
		    &p->denied_log, MOSQ_LOG_NOTICE,
		    "dropped the Will of client %s (user %s) on %s: the connection "
		    "was taken over, and no Will is applied below the plugin's "
		    "namespace",
		    or_none(mosquitto_client_id(ed->client)),
		    or_none(mosquitto_client_username(ed->client)), ed->topic);
		return verdict_code(PRESENCE_VERDICT_DENY);
	}
	verdict = presence_policy_access(&p->cfg, &topic, access, owns, &why);
	if (verdict == PRESENCE_VERDICT_DENY && why != NULL) {
		p->publishes_denied++;
		presence_log_limited(&p->denied_log, MOSQ_LOG_NOTICE,
		                     "denied publish by client %s (user %s) to %s: %s",
		                     or_none(mosquitto_client_id(ed->client)),
		                     or_none(mosquitto_client_username(ed->client)), ed->topic,
		                     why);
	}
	return verdict_code(verdict);
}

/* Resolves the user a state write applies to: client's own user, created if the session is
 * still PENDING (a client may publish in the iteration it logged in). Returns NULL when the
 * client is not tracked or does not own the level. */
static struct presence_user *state_writer(struct presence_plugin *p, const struct mosquitto *client,
                                          const struct presence_topic *topic)
{
	struct presence_user *user;

	if (!client_owns_level(p, client, topic->user, topic->user_len) ||
	    !presence_registry_session_find(p->reg, client, &user)) {
		return NULL;
	}
	/* A PENDING session owns the level of its tracked name (2.0 only). */
	if (user == NULL && presence_registry_user_get(p->reg, presence_client_user_name(p, client),
	                                               &user) != PRESENCE_OK) {
		return NULL;
	}
	return user;
}

int presence_message_cb(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	struct presence_plugin *p = userdata;
	char reason[PRESENCE_STATE_REASON_SIZE] = "";
	struct presence_topic topic;
	struct presence_user *user;
	enum presence_err err;
	bool changed = false;

	(void)event;
	presence_topic_parse(p->cfg.topic_prefix, ed->topic, &topic);
	if (topic.kind != PRESENCE_TOPIC_STATE && topic.kind != PRESENCE_TOPIC_STATE_KEY) {
		return MOSQ_ERR_SUCCESS;
	}
	/* Consumed: never retained (and never read, see the ACL). Returning anything but
	 * success or ACL_DENIED here would disconnect the client. */
	ed->retain = false;
	user = state_writer(p, ed->client, &topic);
	if (user == NULL) {
		presence_log_limited(&p->rejected_log, MOSQ_LOG_WARNING,
		                     "ignored state write by client %s to %s: the session is not "
		                     "tracked",
		                     or_none(mosquitto_client_id(ed->client)), ed->topic);
		return MOSQ_ERR_SUCCESS;
	}
	if (p->cluster != NULL) {
		presence_cluster_link_state_write(p, user, ed->topic, &topic, ed->payload,
		                                  ed->payloadlen);
		return MOSQ_ERR_SUCCESS;
	}
	if (topic.kind == PRESENCE_TOPIC_STATE) {
		err = presence_state_merge(presence_user_state(user), &p->limits, ed->payload,
		                           ed->payloadlen, &changed, reason);
	} else {
		err = presence_state_set_key(presence_user_state(user), &p->limits, topic.key,
		                             topic.key_len, ed->payload, ed->payloadlen, &changed,
		                             reason);
	}
	if (err == PRESENCE_ERR_NOMEM) {
		snprintf(reason, sizeof(reason), "out of memory");
	}
	if (err != PRESENCE_OK) {
		p->state_rejected++;
		presence_log_limited(&p->rejected_log, MOSQ_LOG_WARNING,
		                     "rejected state write by client %s (user %s) to %s: %s",
		                     or_none(mosquitto_client_id(ed->client)),
		                     presence_user_name(user), ed->topic, reason);
		presence_publish_rejection(user, ed->topic, reason);
		return MOSQ_ERR_SUCCESS;
	}
	p->state_writes++;
	if (changed) {
		presence_registry_user_changed(p->reg, user);
		presence_lifecycle_changed(p);
	}
	return MOSQ_ERR_SUCCESS;
}

/* Milliseconds on clock (CLOCK_REALTIME for the documents' "since", CLOCK_MONOTONIC for
 * timers, which must not jump with the wall clock). */
static int64_t clock_ms(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t presence_monotonic_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
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
		rc = publish_json_owned(presence_user_topic(user), payload, len, true);
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

	while ((user = presence_registry_dirty_next(p->reg)) != NULL) {
		if (now_ms == 0) {
			now_ms = clock_ms(CLOCK_REALTIME);
		}
		if (presence_registry_document_prepare(p->reg, user, now_ms, &doc, &due) !=
		    PRESENCE_OK) {
			rc = MOSQ_ERR_NOMEM;
			goto out_failed;
		}
		if (!due) {
			continue;
		}
		/* Rendered straight into a buffer the broker takes over. */
		payload = presence_document_render_with(&doc, &len, mosquitto_malloc);
		if (payload == NULL) {
			rc = MOSQ_ERR_NOMEM;
			goto out_failed;
		}
		rc = publish_json_owned(presence_user_topic(user), payload, len, true);
		if (rc == MOSQ_ERR_SUCCESS) {
			presence_registry_document_sent(p->reg, user);
			p->documents_published++;
			published++;
			continue;
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

/* Begins a save of the state file when one is due, and continues the save in progress by one
 * bounded step (see the head of this file). */
static void save_state(struct presence_plugin *p)
{
	char err[PRESENCE_STORE_ERR_SIZE];
	bool done = false;

	if (!presence_store_saving(p->store)) {
		int64_t now = presence_monotonic_ms();

		if (!presence_policy_save_due(now, p->save_started_ms,
		                              presence_registry_held_count(p->reg) > 0,
		                              presence_registry_unsaved(p->reg), p->save_failed)) {
			return;
		}
		p->save_started_ms = now;
		if (presence_store_save_begin(p->store, p->reg, false, err, sizeof(err)) !=
		    PRESENCE_OK) {
			goto out_failed;
		}
	}
	if (presence_store_save_step(p->store, p->reg, PRESENCE_STORE_STEP_USERS,
	                             PRESENCE_STORE_STEP_BYTES, &done, err,
	                             sizeof(err)) != PRESENCE_OK) {
		goto out_failed;
	}
	if (done) {
		p->save_failed = false;
		mosquitto_log_printf(
		    MOSQ_LOG_DEBUG, PRESENCE_LOG_PREFIX "saved state of %zu users to %s",
		    presence_store_saved_users(p->store), presence_store_path(p->store));
	}
	return;

out_failed:
	p->save_failed = true;
	mosquitto_log_printf(MOSQ_LOG_WARNING,
	                     PRESENCE_LOG_PREFIX "could not save the state file: %s; retrying in "
	                                         "a second",
	                     err);
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

	if (!presence_metrics_due(&p->metrics, clock_ms(CLOCK_MONOTONIC))) {
		return;
	}
	values[PRESENCE_METRIC_USERS_AVAILABLE] = presence_registry_available_count(p->reg);
	values[PRESENCE_METRIC_USERS_KNOWN] = presence_registry_known_count(p->reg);
	values[PRESENCE_METRIC_SESSIONS] = presence_registry_active_session_count(p->reg);
	values[PRESENCE_METRIC_DOCUMENTS_PUBLISHED] = p->documents_published;
	values[PRESENCE_METRIC_STATE_WRITES] = p->state_writes;
	values[PRESENCE_METRIC_STATE_REJECTED] = p->state_rejected;
	values[PRESENCE_METRIC_PUBLISHES_DENIED] = p->publishes_denied;
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
	uint64_t documents_before = p->documents_published;

	(void)event;
	presence_lifecycle_tick(p, event_data);
	/* No login is in progress between two loop iterations. */
	p->connecting = NULL;
	if (p->cluster != NULL) {
		presence_cluster_link_tick(p);
	} else {
		presence_registry_offline_expire(p->reg);
		presence_publish_due_documents(p);
	}
	publish_due_metrics(p);
	flush_log_budget(&p->rejected_log, MOSQ_LOG_WARNING, "rejected state writes");
	flush_log_budget(&p->denied_log, MOSQ_LOG_NOTICE, "denied publishes");
	if (p->store != NULL) {
		save_state(p);
	}
	presence_lifecycle_published(p, p->documents_published != documents_before);
	return MOSQ_ERR_SUCCESS;
}
