/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The access and message callbacks every broker generation shares: each turns one Mosquitto
 * event into core calls (the rules, who may write or read what, are the core's, policy.h).
 *
 * State writes are ordinary publishes to P/U/state[/key]. They are consumed: MESSAGE applies
 * them through the backend (backend.h) and clears the retain flag, and the ACL denies READ of
 * state topics to everybody, so no subscriber ever receives one while the publisher still sees
 * success. On 2.1 the documents a write makes due go out at once (presence_lifecycle_changed).
 */
#include <stdio.h>
#include <string.h>

#include "callbacks.h"
#include "plugin.h"
#include "publish.h"
#include "session.h"
#include "sight.h"

/* Returns true when the encoded user level (level, len) is client's own user. */
static bool client_owns_level(const struct presence_plugin *p, const struct mosquitto *client,
                              const char *level, size_t len)
{
	return presence_policy_owns_level(p->reg, &p->cfg, client,
	                                  presence_client_identity(p, client), level, len);
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
	if (ed->access == MOSQ_ACL_SUBSCRIBE || ed->access == MOSQ_ACL_WRITE) {
		presence_session_check_logins(p, ed->client,
		                              presence_lifecycle_unseen_login_effect);
	}
	presence_topic_parse(p->cfg.topic_prefix, ed->topic, &topic);
	/* Every delivery of a document, to every watcher (sight.c). A retained document of a
	 * user the plugin does not know is one the broker restored from an older persistence
	 * database: a user forgotten since, or any user after a restart without a state file.
	 * Nobody reads it, and it goes (the removal comes back through here with an empty
	 * payload). */
	if (access == PRESENCE_ACCESS_READ && topic.kind == PRESENCE_TOPIC_DOCUMENT) {
		switch (presence_sight_read(p, ed->client, &topic, ed->payloadlen)) {
		case PRESENCE_SIGHT_STALE:
			(void)presence_publish_owned(NULL, ed->topic, NULL, 0, 1, true, NULL);
			return verdict_code(PRESENCE_VERDICT_DENY);
		case PRESENCE_SIGHT_HIDDEN:
			return verdict_code(PRESENCE_VERDICT_DENY);
		case PRESENCE_SIGHT_PASS:
			break;
		}
	}
	/* Ownership matters for state writes and error notices only; documents are read on
	 * every delivery and need no lookup. Wills are checked too: they are sent after the
	 * session's end, when the client is no longer tracked, so they own nothing; except at a
	 * take-over, where the old session still counts (presence_policy_takeover_will). */
	if ((access == PRESENCE_ACCESS_WRITE &&
	     (topic.kind == PRESENCE_TOPIC_STATE || topic.kind == PRESENCE_TOPIC_STATE_KEY ||
	      topic.kind == PRESENCE_TOPIC_PRIVACY)) ||
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
		    presence_or_none(mosquitto_client_id(ed->client)),
		    presence_or_none(mosquitto_client_username(ed->client)), ed->topic);
		return verdict_code(PRESENCE_VERDICT_DENY);
	}
	verdict = presence_policy_access(&p->cfg, &topic, access, owns, &why);
	if (verdict == PRESENCE_VERDICT_DENY && why != NULL) {
		p->publishes_denied++;
		presence_log_limited(&p->denied_log, MOSQ_LOG_NOTICE,
		                     "denied publish by client %s (user %s) to %s: %s",
		                     presence_or_none(mosquitto_client_id(ed->client)),
		                     presence_or_none(mosquitto_client_username(ed->client)),
		                     ed->topic, why);
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
	const char *what;

	(void)event;
	presence_topic_parse(p->cfg.topic_prefix, ed->topic, &topic);
	if (topic.kind != PRESENCE_TOPIC_STATE && topic.kind != PRESENCE_TOPIC_STATE_KEY &&
	    topic.kind != PRESENCE_TOPIC_PRIVACY) {
		return MOSQ_ERR_SUCCESS;
	}
	what = topic.kind == PRESENCE_TOPIC_PRIVACY ? "privacy" : "state";
	/* Consumed: never retained (and never read, see the ACL). Returning anything but
	 * success or ACL_DENIED here would disconnect the client. */
	ed->retain = false;
	user = state_writer(p, ed->client, &topic);
	if (user == NULL) {
		presence_log_limited(&p->rejected_log, MOSQ_LOG_WARNING,
		                     "ignored %s write by client %s to %s: the session is not "
		                     "tracked",
		                     what, presence_or_none(mosquitto_client_id(ed->client)),
		                     ed->topic);
		return MOSQ_ERR_SUCCESS;
	}
	if (!presence_registry_write_permitted(p->reg, user)) {
		/* Over the write limit: refused if it would change the state (a write that
		 * changes nothing, such as a QoS 1 resend of a write just applied, costs
		 * nothing and is accepted). */
		err = topic.kind == PRESENCE_TOPIC_PRIVACY
		          ? presence_sight_privacy_changes(p, user, ed->payload, ed->payloadlen,
		                                           &changed, reason)
		          : presence_policy_write_changes(presence_user_state(user), &p->limits,
		                                          topic.kind == PRESENCE_TOPIC_STATE,
		                                          topic.key, topic.key_len, ed->payload,
		                                          ed->payloadlen, &changed, reason);
		if (err == PRESENCE_OK && changed) {
			snprintf(reason, sizeof(reason),
			         "too many %s: at most %zu a second (%zu at once) per user; the "
			         "write was not applied",
			         topic.kind == PRESENCE_TOPIC_PRIVACY ? "writes" : "state writes",
			         p->cfg.max_writes_per_second, p->cfg.max_write_burst);
			err = PRESENCE_ERR_TOO_LARGE;
		}
		if (err == PRESENCE_OK) {
			p->state_writes++;
			return MOSQ_ERR_SUCCESS;
		}
	} else {
		err = p->backend->write(p, user, ed->topic, &topic, ed->payload, ed->payloadlen,
		                        &changed, reason);
	}
	if (err == PRESENCE_ERR_NOMEM) {
		snprintf(reason, sizeof(reason), "out of memory");
	}
	if (err != PRESENCE_OK) {
		p->state_rejected++;
		presence_log_limited(&p->rejected_log, MOSQ_LOG_WARNING,
		                     "rejected %s write by client %s (user %s) to %s: %s", what,
		                     presence_or_none(mosquitto_client_id(ed->client)),
		                     presence_user_name(user), ed->topic, reason);
		presence_publish_rejection(p, user, ed->topic, reason);
		return MOSQ_ERR_SUCCESS;
	}
	p->state_writes++;
	/* A changed choice is saved before the publisher's PUBACK (Mosquitto sends it after
	 * this callback), within the budget of such saves (PRESENCE_PRIVACY_SAVES a second). */
	presence_tick_save_urgent(p);
	if (changed) {
		presence_lifecycle_changed(p);
	}
	return MOSQ_ERR_SUCCESS;
}
