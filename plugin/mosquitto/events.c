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
 * - Users the registry forgot (forget_after, max_users) are announced before any document: a
 *   zero-length retained publish on their topic removes their retained document, and the state
 *   file records that they are gone.
 * - With a state file, TICK then appends what changed to its journal, at most about once per
 *   second (at once when a document waits for it, see the seq margin in store.h), in bounded
 *   steps, and continues a compaction in progress by one bounded step, so even a large
 *   registry never stalls the broker loop. A failed write is logged and retried a second
 *   later.
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

void presence_log_untracked(struct presence_plugin *p, const struct mosquitto *client,
                            const char *user_name, enum presence_err err)
{
	if (err == PRESENCE_ERR_FULL) {
		p->sessions_untracked++;
		presence_log_limited(&p->untracked_log, MOSQ_LOG_WARNING,
		                     "max_users (%zu) users are known and every one of them is "
		                     "online: the session of client %s (user %s) gets no presence "
		                     "(its login is not refused)",
		                     p->cfg.max_users, or_none(mosquitto_client_id(client)),
		                     or_none(user_name));
		return;
	}
	mosquitto_log_printf(MOSQ_LOG_WARNING,
	                     PRESENCE_LOG_PREFIX "%s: the session of client %s (user %s) "
	                                         "is not tracked",
	                     err == PRESENCE_ERR_INVAL ? "user name too long for a topic"
	                                               : "out of memory",
	                     or_none(mosquitto_client_id(client)), or_none(user_name));
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
	/* A retained document of a user the plugin does not know is one the broker restored from
	 * an older persistence database: a user forgotten since, or any user after a restart
	 * without a state file. Nobody reads it, and it goes (the removal comes back through
	 * here with an empty payload, which is let through). */
	if (access == PRESENCE_ACCESS_READ && p->documents_authoritative &&
	    presence_policy_stale_document(p->reg, &topic, ed->payloadlen)) {
		(void)presence_publish_owned(NULL, ed->topic, NULL, 0, 1, true, NULL);
		return verdict_code(PRESENCE_VERDICT_DENY);
	}
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
	if (!presence_registry_write_permitted(p->reg, user)) {
		/* Over the write limit: refused if it would change the state (a write that
		 * changes nothing, such as a QoS 1 resend of a write just applied, costs
		 * nothing and is accepted). */
		err = presence_policy_write_changes(
		    presence_user_state(user), &p->limits, topic.kind == PRESENCE_TOPIC_STATE,
		    topic.key, topic.key_len, ed->payload, ed->payloadlen, &changed, reason);
		if (err == PRESENCE_OK && changed) {
			snprintf(
			    reason, sizeof(reason),
			    "too many state writes: at most %zu a second (%zu at once) per user; "
			    "the write was not applied",
			    p->cfg.max_writes_per_second, p->cfg.max_write_burst);
			err = PRESENCE_ERR_TOO_LARGE;
		}
		if (err == PRESENCE_OK) {
			p->state_writes++;
			return MOSQ_ERR_SUCCESS;
		}
	} else if (p->cluster != NULL) {
		presence_cluster_link_state_write(p, user, ed->topic, &topic, ed->payload,
		                                  ed->payloadlen);
		return MOSQ_ERR_SUCCESS;
	} else if (topic.kind == PRESENCE_TOPIC_STATE) {
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
		presence_publish_rejection(p, user, ed->topic, reason);
		return MOSQ_ERR_SUCCESS;
	}
	p->state_writes++;
	if (changed) {
		presence_registry_write_charge(p->reg, user);
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
	presence_cluster_link_forget(p, user);
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

/* Appends what changed to the state file's journal when a flush is due (one bounded step per
 * TICK), and continues a compaction by one bounded step (see the head of this file). */
static void save_state(struct presence_plugin *p)
{
	char err[PRESENCE_STORE_ERR_SIZE];
	bool finished = false;
	bool done = false;
	int64_t now = presence_monotonic_ms();

	if (p->flushing || presence_policy_save_due(
	                       now, p->save_started_ms, presence_registry_held_count(p->reg) > 0,
	                       presence_store_unsaved(p->store, p->reg), p->save_failed)) {
		if (!p->flushing) {
			p->save_started_ms = now;
			p->flushed_users = 0;
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
		presence_registry_forget_due(p->reg, PRESENCE_FORGET_PER_TICK);
		presence_announce_forgotten(p);
	}
	publish_due_metrics(p);
	flush_log_budget(&p->rejected_log, MOSQ_LOG_WARNING, "rejected state writes");
	flush_log_budget(&p->denied_log, MOSQ_LOG_NOTICE, "denied publishes");
	flush_log_budget(&p->untracked_log, MOSQ_LOG_WARNING, "sessions over max_users");
	if (p->store != NULL) {
		save_state(p);
	}
	presence_lifecycle_published(p, p->documents_published != documents_before);
	return MOSQ_ERR_SUCCESS;
}
