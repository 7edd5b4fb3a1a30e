/*
 * The broker callbacks: each turns one Mosquitto event into core calls and publishes what the
 * core says is due. The lifecycle follows what Mosquitto 2.0 really does:
 *
 * - BASIC_AUTH is a login attempt, not a connect: the client pointer is recorded PENDING.
 * - A refused login is disconnected within the same loop iteration, so at TICK (the last thing
 *   in each iteration) every PENDING client still known was accepted and is promoted; its user
 *   is read then, because a later plugin may have changed the username.
 * - DISCONNECT is acted on only for known client pointers: the broker also reports sockets
 *   that never logged in, refused logins and a second DISCONNECT for a resumed session.
 * - RELOAD (SIGHUP) re-runs BASIC_AUTH for every session, even offline persistent ones; those
 *   must not become sessions, so BASIC_AUTH is ignored until the next TICK.
 * - Documents are published only from TICK, once per dirty user, so a takeover (new login,
 *   old disconnect, all in one iteration) publishes nothing. TICK first puts back on the dirty
 *   list the users whose offline delay has passed.
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
#include "utf8.h"

/* How often, at most, a save of the state file begins (unless a document waits for one). */
#define SAVE_INTERVAL_MS 1000

/* Largest MQTT topic, in bytes. */
#define MQTT_TOPIC_MAX 65535
/* The longest suffix the plugin appends to a document topic ("/error"). */
#define LONGEST_SUFFIX_LEN 6

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

/* Logs, once a log budget's window is over, how many of its lines were suppressed. */
static void flush_log_budget(struct presence_log_budget *budget, int level, const char *what)
{
	uint64_t suppressed;

	if (presence_log_budget_flush(budget, presence_monotonic_ms(), &suppressed)) {
		mosquitto_log_printf(
		    level, PRESENCE_LOG_PREFIX "%" PRIu64 " more lines about %s suppressed",
		    suppressed, what);
	}
}

/* Returns the user name client's session counts towards, or NULL when it is not tracked: no
 * username (identity username) or an empty one, a name in ignore_users, or a name whose topics
 * would not be valid MQTT topics. The pointer is the broker's; copy it to keep it. */
static const char *client_identity(const struct presence_plugin *p, const struct mosquitto *client)
{
	const char *name = p->cfg.identity == PRESENCE_IDENTITY_CLIENTID
	                       ? mosquitto_client_id(client)
	                       : mosquitto_client_username(client);
	size_t len;

	if (name == NULL || name[0] == '\0') {
		return NULL;
	}
	len = strlen(name);
	if (!presence_utf8_valid(name, len) ||
	    p->cfg.topic_prefix_len + 1 + presence_topic_encoded_len(name) + LONGEST_SUFFIX_LEN >
	        MQTT_TOPIC_MAX) {
		return NULL;
	}
	if (presence_config_ignores(&p->cfg, name)) {
		return NULL;
	}
	return name;
}

/* Looks up client's session. Returns false when the client has no tracked session. Otherwise
 * *user is its user when ACTIVE (NULL while PENDING) and *name the user's name. */
static bool client_user(const struct presence_plugin *p, const struct mosquitto *client,
                        struct presence_user **user, const char **name)
{
	if (!presence_registry_session_find(p->reg, client, user)) {
		return false;
	}
	*name = *user != NULL ? presence_user_name(*user) : client_identity(p, client);
	return *name != NULL;
}

/* Returns true when the encoded user level (level, len) is client's own user. */
static bool client_owns_level(const struct presence_plugin *p, const struct mosquitto *client,
                              const char *level, size_t len)
{
	struct presence_user *user;
	const char *name;

	if (!client_user(p, client, &user, &name)) {
		return false;
	}
	if (user != NULL) {
		return presence_user_level_len(user) == len &&
		       memcmp(presence_user_level(user), level, len) == 0;
	}
	return presence_topic_level_is_user(level, len, name);
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
static void publish_rejection(struct presence_user *user, const char *write_topic,
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

int presence_basic_auth_cb(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	struct presence_plugin *p = userdata;

	(void)event;
	if (!p->reloading) {
		p->connecting = ed->client;
	}
	if (!p->reloading && presence_registry_session_pending(p->reg, ed->client) != PRESENCE_OK) {
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX "out of memory: the session of client %s "
		                                         "is not tracked",
		                     or_none(mosquitto_client_id(ed->client)));
	}
	/* In defer mode the plugin never decides a login. In allow mode it accepts every
	 * login, for brokers with no authentication at all: on 2.0, a deferring BASIC_AUTH with
	 * nothing behind it refuses every client that sends a username. */
	return p->cfg.auth == PRESENCE_MODE_ALLOW ? MOSQ_ERR_SUCCESS : MOSQ_ERR_PLUGIN_DEFER;
}

/*
 * Returns true when a WRITE check for client is the Will of a connection being taken over.
 * Mosquitto 2.0 handles a CONNECT that takes over a client id in one go: the new client's login
 * (BASIC_AUTH), then the old connection's Will (its WRITE check), then the old connection's
 * DISCONNECT. So the old session is still tracked when its Will is checked, and only the
 * moment tells the Will from a publish: the login handled last is another client with the same
 * client id, and it is still connecting. No publish of the old connection can come in between
 * (the broker is single-threaded and the take-over disconnects it), and a login that is refused
 * is disconnected, which ends "connecting" (presence_disconnect_cb).
 */
static bool takeover_will(const struct presence_plugin *p, const struct mosquitto *client)
{
	const char *id, *new_id;

	if (p->connecting == NULL || p->connecting == client) {
		return false;
	}
	id = mosquitto_client_id(client);
	new_id = mosquitto_client_id(p->connecting);
	return id != NULL && new_id != NULL && strcmp(id, new_id) == 0;
}

int presence_acl_check_cb(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	struct presence_plugin *p = userdata;
	int pass = p->cfg.acl == PRESENCE_MODE_ALLOW ? MOSQ_ERR_SUCCESS : MOSQ_ERR_PLUGIN_DEFER;
	struct presence_topic topic;
	bool state;

	(void)event;
	presence_topic_parse(p->cfg.topic_prefix, ed->topic, &topic);
	if (topic.kind == PRESENCE_TOPIC_OUTSIDE) {
		return pass;
	}
	state = topic.kind == PRESENCE_TOPIC_STATE || topic.kind == PRESENCE_TOPIC_STATE_KEY;
	switch (ed->access) {
	case MOSQ_ACL_WRITE:
		/* Only a user's own sessions write, and only to the user's state topics. This also
		 * covers Will messages: they are checked when sent, after the session's
		 * DISCONNECT, when the client is no longer tracked; except at a take-over, below.
		 */
		if (state && client_owns_level(p, ed->client, topic.user, topic.user_len)) {
			if (!takeover_will(p, ed->client)) {
				return MOSQ_ERR_SUCCESS;
			}
			p->publishes_denied++;
			presence_log_limited(
			    &p->denied_log, MOSQ_LOG_NOTICE,
			    "dropped the Will of client %s (user %s) on %s: the "
			    "connection was taken over, and no Will is applied below "
			    "the plugin's namespace",
			    or_none(mosquitto_client_id(ed->client)),
			    or_none(mosquitto_client_username(ed->client)), ed->topic);
			return MOSQ_ERR_ACL_DENIED;
		}
		p->publishes_denied++;
		presence_log_limited(&p->denied_log, MOSQ_LOG_NOTICE,
		                     "denied publish by client %s (user %s) to %s: %s",
		                     or_none(mosquitto_client_id(ed->client)),
		                     or_none(mosquitto_client_username(ed->client)), ed->topic,
		                     state ? "only the user's own sessions write its state"
		                           : "only the plugin writes there");
		return MOSQ_ERR_ACL_DENIED;
	case MOSQ_ACL_READ:
		if (state) {
			return MOSQ_ERR_ACL_DENIED;
		}
		if (topic.kind == PRESENCE_TOPIC_ERROR) {
			return client_owns_level(p, ed->client, topic.user, topic.user_len)
			           ? MOSQ_ERR_SUCCESS
			           : MOSQ_ERR_ACL_DENIED;
		}
		return pass;
	default:
		return pass;
	}
}

/* Resolves the user a state write applies to: client's own user, created if the session is
 * still PENDING (a client may publish in the iteration it logged in). Returns NULL when the
 * client is not tracked or does not own the level. */
static struct presence_user *state_writer(struct presence_plugin *p, const struct mosquitto *client,
                                          const struct presence_topic *topic)
{
	struct presence_user *user;
	const char *name;

	if (!client_owns_level(p, client, topic->user, topic->user_len) ||
	    !client_user(p, client, &user, &name)) {
		return NULL;
	}
	if (user == NULL && presence_registry_user_get(p->reg, name, &user) != PRESENCE_OK) {
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
		publish_rejection(user, ed->topic, reason);
		return MOSQ_ERR_SUCCESS;
	}
	p->state_writes++;
	if (changed) {
		presence_registry_user_changed(p->reg, user);
	}
	return MOSQ_ERR_SUCCESS;
}

int presence_disconnect_cb(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	struct presence_plugin *p = userdata;

	(void)event;
	if (ed->client == p->connecting) {
		p->connecting = NULL;
	}
	presence_query_limit_forget(p->query_limit, ed->client);
	presence_registry_session_gone(p->reg, ed->client);
	return MOSQ_ERR_SUCCESS;
}

/* Promotes every PENDING session: the login it recorded was accepted, since a refused one
 * would have been disconnected before the end of the iteration. */
static void promote_pending(struct presence_plugin *p)
{
	const void *client;

	while ((client = presence_registry_pending_next(p->reg)) != NULL) {
		const char *name = client_identity(p, client);

		if (presence_registry_session_start(p->reg, client, name) != PRESENCE_OK) {
			mosquitto_log_printf(MOSQ_LOG_WARNING,
			                     PRESENCE_LOG_PREFIX
			                     "out of memory: the session of "
			                     "client %s (user %s) is not tracked",
			                     or_none(mosquitto_client_id(client)), or_none(name));
		}
	}
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
		bool held = presence_registry_held_count(p->reg) > 0;
		int64_t now;

		if (!held && !presence_registry_unsaved(p->reg)) {
			return;
		}
		now = presence_monotonic_ms();
		if (now - p->save_started_ms < SAVE_INTERVAL_MS && (!held || p->save_failed)) {
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

	(void)event;
	(void)event_data;
	p->reloading = false;
	p->connecting = NULL;
	promote_pending(p);
	presence_registry_offline_expire(p->reg);
	presence_publish_due_documents(p);
	publish_due_metrics(p);
	flush_log_budget(&p->rejected_log, MOSQ_LOG_WARNING, "rejected state writes");
	flush_log_budget(&p->denied_log, MOSQ_LOG_NOTICE, "denied publishes");
	if (p->store != NULL) {
		save_state(p);
	}
	return MOSQ_ERR_SUCCESS;
}

int presence_reload_cb(int event, void *event_data, void *userdata)
{
	struct presence_plugin *p = userdata;

	(void)event;
	(void)event_data;
	p->reloading = true;
	/* DEFER lets the other plugins reload too; an error here would silently disable
	 * password_file and acl_file after a SIGHUP on 2.0. */
	return MOSQ_ERR_PLUGIN_DEFER;
}
