/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Sessions on Mosquitto 2.0 (2.0.11 to 2.0.22), which has no "connection accepted" event:
 *
 * - BASIC_AUTH is a login attempt, not a connect: the client pointer is recorded PENDING.
 * - A refused login is disconnected within the same loop iteration, so at TICK (the last thing
 *   in each iteration) every PENDING client still known was accepted and is promoted; its user
 *   is read then, because a later plugin may have changed the username.
 * - DISCONNECT is acted on only for known client pointers: the broker also reports sockets
 *   that never logged in, refused logins and a second DISCONNECT for a resumed session.
 * - RELOAD (SIGHUP) re-runs BASIC_AUTH for every session, even offline persistent ones; those
 *   must not become sessions, so BASIC_AUTH is ignored until the next TICK. RELOAD returns
 *   DEFER: an error would silently disable password_file and acl_file after a SIGHUP.
 * - Registering BASIC_AUTH and ACL_CHECK makes the plugin an authority: DEFER with nothing
 *   behind it refuses. 2.0 has no "ignore" answer, so auth allow / acl allow exist for brokers
 *   with nothing else deciding.
 *
 * What the plugin may import: brokers built the upstream way (Debian 13's and backports'
 * 2.0.21, the official images, source builds) export only the functions of Mosquitto's
 * src/linker.syms, which has no property reader. The Correlation Data and Response Topic of a
 * query are therefore read from the property list itself, whose layout (lib/property_mosq.h,
 * struct mqtt5__property) is the same in every 2.0 release.
 */
#include <dlfcn.h>
#include <string.h>

#include "plugin.h"
#include "props_v20.h"
#include "publish.h"
#include "session.h"
#include "sight.h"

const char presence_lifecycle_generation[] = "2.0";

const char presence_lifecycle_unseen_login_effect[] =
    "so the plugin sees no session: nobody gets a document, and state writes are refused";

_Static_assert(MQTT_PROP_CORRELATION_DATA == PRESENCE_PROP_CORRELATION_DATA &&
                   MQTT_PROP_RESPONSE_TOPIC == PRESENCE_PROP_RESPONSE_TOPIC,
               "MQTT 5 property identifiers");

/* Returns true when the plugin instance identified by id was loaded for one listener
 * (per_listener_settings true). Mosquitto 2.0's plugin id is opaque but, in every 2.0.x
 * release, is a struct whose only member is the listener pointer, set exactly when
 * per_listener_settings is on (src/mosquitto_broker_internal.h, src/plugin.c:plugin__load_v5).
 * There is no public accessor, so this reads that member. */
static bool per_listener(const mosquitto_plugin_id_t *id)
{
	const void *const *listener = (const void *const *)(const void *)id;

	return id != NULL && *listener != NULL;
}

int presence_lifecycle_check_broker(mosquitto_plugin_id_t *id)
{
	/* mosquitto_client_port exists from 2.1 on. Looked up, not imported: a 2.0 broker
	 * would refuse to load a plugin importing it. */
	if (dlsym(RTLD_DEFAULT, "mosquitto_client_port") != NULL) {
		mosquitto_log_printf(MOSQ_LOG_ERR, PRESENCE_LOG_PREFIX
		                     "this build is for Mosquitto 2.0, but the broker is 2.1 or "
		                     "later: build the plugin against the broker's own headers "
		                     "(mosquitto-dev of the same version)");
		return MOSQ_ERR_NOT_SUPPORTED;
	}
	if (per_listener(id)) {
		mosquitto_log_printf(MOSQ_LOG_ERR, PRESENCE_LOG_PREFIX
		                     "per_listener_settings true is not "
		                     "supported: Mosquitto 2.0 then loads one "
		                     "plugin instance per listener (each seeing only "
		                     "part of the sessions) and, before 2.0.15, never "
		                     "sends the TICK event presence depends on. Set "
		                     "per_listener_settings false.");
		return MOSQ_ERR_NOT_SUPPORTED;
	}
	return MOSQ_ERR_SUCCESS;
}

int presence_lifecycle_pass(void)
{
	return MOSQ_ERR_PLUGIN_DEFER;
}

static int basic_auth_cb(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	struct presence_plugin *p = userdata;

	(void)event;
	presence_session_login_seen(p, ed->client);
	if (!p->reloading && presence_registry_session_pending(p->reg, ed->client) != PRESENCE_OK) {
		presence_log_untracked(p, ed->client, NULL, PRESENCE_ERR_NOMEM);
	}
	/* In defer mode the plugin never decides a login. In allow mode it accepts every
	 * login, for brokers with no authentication at all: on 2.0, a deferring BASIC_AUTH with
	 * nothing behind it refuses every client that sends a username. */
	return p->cfg.auth == PRESENCE_MODE_ALLOW ? MOSQ_ERR_SUCCESS : MOSQ_ERR_PLUGIN_DEFER;
}

static int disconnect_cb(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	struct presence_plugin *p = userdata;

	(void)event;
	presence_session_connection_gone(p, ed->client);
	return MOSQ_ERR_SUCCESS;
}

static int reload_cb(int event, void *event_data, void *userdata)
{
	struct presence_plugin *p = userdata;

	(void)event;
	(void)event_data;
	p->reloading = true;
	presence_sight_reload_requested(p);
	/* DEFER lets the other plugins reload too; an error here would silently disable
	 * password_file and acl_file after a SIGHUP on 2.0. */
	return MOSQ_ERR_PLUGIN_DEFER;
}

static const struct presence_callback callbacks[] = {
    {MOSQ_EVT_BASIC_AUTH, basic_auth_cb, NULL},
    {MOSQ_EVT_DISCONNECT, disconnect_cb, NULL},
    {MOSQ_EVT_RELOAD, reload_cb, NULL},
};

const struct presence_callback *presence_lifecycle_callbacks(const struct presence_plugin *p,
                                                             size_t *count)
{
	(void)p;
	*count = sizeof(callbacks) / sizeof(callbacks[0]);
	return callbacks;
}

void presence_lifecycle_changed(struct presence_plugin *p)
{
	/* The TICK at the end of this iteration publishes: a document published now would go
	 * out no sooner (2.0 delivers the plugin's publishes at the start of the next iteration)
	 * and a takeover in progress would show. */
	(void)p;
}

void presence_lifecycle_tick(struct presence_plugin *p, void *event_data)
{
	const void *client;

	(void)event_data;
	p->reloading = false;
	/* Every PENDING session still known was accepted: a refused login would have been
	 * disconnected before the end of the iteration. */
	while ((client = presence_registry_pending_next(p->reg)) != NULL) {
		const char *name = presence_client_user_name(p, client);
		enum presence_err err = presence_registry_session_start(p->reg, client, name);

		if (err != PRESENCE_OK) {
			presence_log_untracked(p, client, name, err);
		}
	}
}

/* The property readers' allocator, as a function (mosquitto_malloc may be a macro). */
static void *props_alloc(size_t size)
{
	return mosquitto_malloc(size);
}

static void props_release(void *ptr)
{
	mosquitto_free(ptr);
}

int presence_lifecycle_request_props(const mosquitto_property *props,
                                     struct presence_request_props *out)
{
	struct presence_props20 read;

	memset(out, 0, sizeof(*out));
	/* mosquitto_property is struct mqtt5__property, whose layout props_v20.h copies. */
	if (!presence_props20_read((const struct mosquitto20_property *)(const void *)props,
	                           props_alloc, props_release, &read)) {
		return MOSQ_ERR_NOMEM;
	}
	out->correlation = read.correlation;
	out->correlation_len = read.correlation_len;
	out->response_topic = read.response_topic;
	return MOSQ_ERR_SUCCESS;
}

void presence_lifecycle_request_props_free(struct presence_request_props *props)
{
	mosquitto_free(props->correlation);
	mosquitto_free(props->response_topic);
	memset(props, 0, sizeof(*props));
}
