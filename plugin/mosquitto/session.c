/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The session bookkeeping every broker generation shares; see session.h.
 */
#include "session.h"

#include "plugin.h"
#include "publish.h"

void presence_session_login_seen(struct presence_plugin *p, const struct mosquitto *client)
{
	p->login_seen_any = true;
	if (!p->reloading) {
		p->connecting = client;
	}
}

void presence_session_connection_gone(struct presence_plugin *p, const struct mosquitto *client)
{
	if (client == p->connecting) {
		p->connecting = NULL;
	}
	presence_query_limit_forget(p->query_limit, client);
	presence_registry_session_gone(p->reg, client);
}

const char *presence_client_identity(const struct presence_plugin *p,
                                     const struct mosquitto *client)
{
	return p->cfg.identity == PRESENCE_IDENTITY_CLIENTID ? mosquitto_client_id(client)
	                                                     : mosquitto_client_username(client);
}

const char *presence_client_user_name(const struct presence_plugin *p,
                                      const struct mosquitto *client)
{
	return presence_policy_tracked_name(&p->cfg, presence_client_identity(p, client));
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
		                     p->cfg.max_users,
		                     presence_or_none(mosquitto_client_id(client)),
		                     presence_or_none(user_name));
		return;
	}
	mosquitto_log_printf(
	    MOSQ_LOG_WARNING,
	    PRESENCE_LOG_PREFIX "%s: the session of client %s (user %s) "
	                        "is not tracked",
	    err == PRESENCE_ERR_INVAL ? "user name too long for a topic" : "out of memory",
	    presence_or_none(mosquitto_client_id(client)), presence_or_none(user_name));
}

/*
 * Mosquitto asks the plugins' BASIC_AUTH callbacks in the order of their plugin lines and stops
 * at the first one that does not defer (2.0) or ignore (2.1). An authentication plugin listed
 * before this one therefore answers every login, and this plugin never sees one: a broker that
 * runs clients while the plugin has seen no login at all is set up that way. (So is a broker
 * whose clients all log in without BASIC_AUTH: MQTT 5 enhanced authentication, or a TLS
 * listener with use_identity_as_username or use_subject_as_username, src/handle_connect.c.
 * The plugin does not see those logins either; the line names the common cause.)
 */
void presence_session_check_logins(struct presence_plugin *p, const struct mosquitto *client,
                                   const char *effect)
{
	if (p->login_seen_any || p->unseen_login_logged) {
		return;
	}
	p->unseen_login_logged = true;
	mosquitto_log_printf(MOSQ_LOG_WARNING,
	                     PRESENCE_LOG_PREFIX
	                     "client %s is connected, but no login has reached the plugin: "
	                     "another plugin loaded before mosquitto-presence answers the "
	                     "logins (BASIC_AUTH), %s. Load mosquitto-presence first: put its "
	                     "plugin line before those of other authentication plugins (the "
	                     "broker asks them in that order and stops at the first that "
	                     "accepts or refuses a login; mosquitto-presence passes it on).",
	                     presence_or_none(mosquitto_client_id(client)), effect);
}
