/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The session bookkeeping every broker generation shares: which client logs in now, which
 * connection ended, which user a client counts towards, and the lines about sessions the
 * plugin does not track. Called by the lifecycle files and the shared callbacks; calls the core
 * and publish.h only.
 */
#ifndef PRESENCE_SESSION_H
#define PRESENCE_SESSION_H

#include "broker.h"
#include "presence_err.h"

struct presence_plugin;

/* Records a login attempt (BASIC_AUTH) as the login in progress (ignored during a reload). */
void presence_session_login_seen(struct presence_plugin *p, const struct mosquitto *client);

/* The connection of client ended: forgets its session, its budget of query answers and, if it
 * is that client, the login in progress. */
void presence_session_connection_gone(struct presence_plugin *p, const struct mosquitto *client);

/* Returns the name of the user client's session counts towards (its username, or its client
 * id with identity clientid), or NULL when the session is not tracked (see
 * presence_policy_tracked_name). The pointer is the broker's; copy it to keep it. */
const char *presence_client_user_name(const struct presence_plugin *p,
                                      const struct mosquitto *client);

/* The client's identity as the broker reports it now: its username, or its client id with
 * identity clientid. */
const char *presence_client_identity(const struct presence_plugin *p,
                                     const struct mosquitto *client);

/* Logs a line for a session the plugin could not track (err: PRESENCE_ERR_FULL, counted and
 * logged within a budget; PRESENCE_ERR_NOMEM; PRESENCE_ERR_INVAL, a name too long). */
void presence_log_untracked(struct presence_plugin *p, const struct mosquitto *client,
                            const char *user_name, enum presence_err err);

/* Called when client acts (connects, subscribes, publishes): when the plugin has seen no login
 * at all since it started, another plugin answers the logins before it, and the plugin says so
 * once, at warning level, with effect (what that costs on this broker generation, a clause:
 * presence_lifecycle_unseen_login_effect) and the fix. */
void presence_session_check_logins(struct presence_plugin *p, const struct mosquitto *client,
                                   const char *effect);

#endif
