/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Sessions on Mosquitto 2.1, which reports what 2.0 left the plugin to infer:
 *
 * - CONNECT is raised after the CONNACK of an accepted connection: the session is ACTIVE from
 *   there, nothing is pending. It can be delivered more than once for one connection
 *   (upstream issue 3534); the registry counts a known client pointer once.
 * - A connection that ends raises DISCONNECT when its session ends with it (session expiry
 *   0), CLIENT_OFFLINE when the session persists; such a session gets its DISCONNECT later,
 *   when it expires or is resumed by a new connection, by which time the plugin has forgotten
 *   the pointer and ignores it. No event is raised for contexts without a client id.
 * - RELOAD must return success: any other answer ends the broker (src/signals.c). 2.1 raises no
 *   BASIC_AUTH for existing sessions at a reload that the plugin would need to ignore.
 * - MOSQ_ERR_PLUGIN_IGNORE leaves a question to the broker's other mechanisms and its defaults,
 *   so BASIC_AUTH answers IGNORE unless auth allow, and ACL questions outside the plugin's
 *   rules are answered with IGNORE (acl defer). BASIC_AUTH is registered all the same: as on
 *   2.0, a CONNECT that takes over a client id sends the old connection's Will between the new
 *   login and the old DISCONNECT, and only the login in progress tells that Will from a
 *   publish (presence_policy_takeover_will).
 * - TICK runs at the start of an iteration, before network I/O, and a callback's next_ms both
 *   asks for a wake-up and holds back that callback until then (src/plugin_tick.c). So the
 *   shared TICK (tick.c) asks for nothing and runs in every iteration; a second TICK
 *   callback, which does nothing else, asks for a wake-up every 100 ms. The loop would
 *   otherwise sleep until the next event it knows of (up to a day on a build without
 *   websockets), and the offline delay, metrics, state-file saves and held documents would
 *   wait for a client to wake it.
 *
 * What the plugin may import: 2.1's src/linker.syms exports the property readers, so they are
 * called directly; their copies come from the broker's allocator and are freed with
 * mosquitto_free.
 */
#include <dlfcn.h>
#include <string.h>

#include "plugin.h"
#include "publish.h"
#include "session.h"
#include "sight.h"

const char presence_lifecycle_generation[] = "2.1";

const char presence_lifecycle_unseen_login_effect[] =
    "so the plugin cannot tell the Will of a connection taken over from an ordinary publish";

/* Functions a 2.0 broker may lack, imported weakly: loaded into 2.0 by mistake, the plugin
 * then refuses to start with a line that says why (presence_lifecycle_check_broker) instead of
 * failing to load on an undefined symbol. */
#pragma weak mosquitto_plugin_set_info
#pragma weak mosquitto_property_read_binary
#pragma weak mosquitto_property_read_string

/* How long the broker may sleep, in milliseconds: the resolution of the plugin's timers
 * (2.0's loop wakes up every 100 ms by itself). */
#define WAKE_UP_INTERVAL_MS 100

int presence_lifecycle_check_broker(mosquitto_plugin_id_t *id)
{
	/* mosquitto_client_port exists from 2.1 on. Looked up, not imported: on a 2.0 broker
	 * the import would make the load fail with an unexplained undefined symbol. */
	if (dlsym(RTLD_DEFAULT, "mosquitto_client_port") == NULL) {
		mosquitto_log_printf(MOSQ_LOG_ERR, PRESENCE_LOG_PREFIX
		                     "this build is for Mosquitto 2.1, but the broker is older: "
		                     "build the plugin against the broker's own headers "
		                     "(mosquitto-dev of the same version)");
		return MOSQ_ERR_NOT_SUPPORTED;
	}
	mosquitto_plugin_set_info(id, "mosquitto-presence", PRESENCE_VERSION);
	return MOSQ_ERR_SUCCESS;
}

int presence_lifecycle_pass(void)
{
	return MOSQ_ERR_PLUGIN_IGNORE;
}

/*
 * Delivery. 2.1 delivers the plugin's publishes at the start of the next loop iteration, and
 * TICK runs before the iteration's wait for network events: a document published in TICK waits
 * for that wait to end, up to 100 ms on an idle broker built with websockets (Debian's:
 * src/mux_epoll.c waits 100 ms whatever a plugin asks). A document published in a network
 * event's callback goes out without that wait: the next iteration follows the handling of
 * network events at once. So the documents a session's start, a state write or a connection's
 * end make due are published in that event (the backend's publish_due):
 *
 * - A takeover (the old connection ends, then the new session starts, both in the new
 *   connection's CONNECT, after its login) must publish nothing: the end of a connection
 *   while a login is in progress publishes nothing by itself, and the new session's CONNECT,
 *   which comes last, finds the document unchanged. A refused login leaves it to the next TICK.
 * - Documents that only time makes due (offline_delay, forgetting) go out from TICK, within
 *   the 100 ms resolution of the plugin's timers and one more wait.
 */
void presence_lifecycle_changed(struct presence_plugin *p)
{
	p->backend->publish_due(p);
}

static int connect_cb(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_connect *ed = event_data;
	struct presence_plugin *p = userdata;
	const char *name = presence_client_user_name(p, ed->client);
	enum presence_err err;

	(void)event;
	presence_session_check_logins(p, ed->client, presence_lifecycle_unseen_login_effect);
	err = presence_registry_session_connect(p->reg, ed->client, name);
	if (err != PRESENCE_OK) {
		presence_log_untracked(p, ed->client, name, err);
	}
	presence_lifecycle_changed(p);
	return MOSQ_ERR_SUCCESS;
}

/* DISCONNECT and CLIENT_OFFLINE: the connection is gone, whatever becomes of its session. */
static int connection_gone_cb(int event, void *event_data, void *userdata)
{
	struct presence_plugin *p = userdata;
	struct mosquitto *client;

	if (event == MOSQ_EVT_CLIENT_OFFLINE) {
		client = ((struct mosquitto_evt_client_offline *)event_data)->client;
	} else {
		client = ((struct mosquitto_evt_disconnect *)event_data)->client;
	}
	presence_session_connection_gone(p, client);
	if (p->connecting == NULL) {
		presence_lifecycle_changed(p);
	}
	return MOSQ_ERR_SUCCESS;
}

/* Remembers the login in progress; with auth allow the plugin accepts every login, for brokers
 * with no authentication, otherwise it leaves the decision to the broker. */
static int basic_auth_cb(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	struct presence_plugin *p = userdata;

	(void)event;
	presence_session_login_seen(p, ed->client);
	return p->cfg.auth == PRESENCE_MODE_ALLOW ? MOSQ_ERR_SUCCESS : MOSQ_ERR_PLUGIN_IGNORE;
}

static int reload_cb(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)event_data;
	presence_sight_reload_requested(userdata);
	return MOSQ_ERR_SUCCESS;
}

/* Asks for the next wake-up; see the top of the file. */
static int wake_up_cb(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_tick *ed = event_data;

	(void)event;
	(void)userdata;
	ed->next_ms = WAKE_UP_INTERVAL_MS;
	return MOSQ_ERR_SUCCESS;
}

static const struct presence_callback callbacks[] = {
    {MOSQ_EVT_TICK, wake_up_cb, NULL},
    {MOSQ_EVT_CONNECT, connect_cb, NULL},
    {MOSQ_EVT_DISCONNECT, connection_gone_cb, NULL},
    {MOSQ_EVT_CLIENT_OFFLINE, connection_gone_cb, NULL},
    {MOSQ_EVT_RELOAD, reload_cb, NULL},
    {MOSQ_EVT_BASIC_AUTH, basic_auth_cb, NULL},
};

const struct presence_callback *presence_lifecycle_callbacks(const struct presence_plugin *p,
                                                             size_t *count)
{
	(void)p;
	*count = sizeof(callbacks) / sizeof(callbacks[0]);
	return callbacks;
}

void presence_lifecycle_tick(struct presence_plugin *p, void *event_data)
{
	/* Nothing per iteration: sessions start at CONNECT. next_ms stays 0, so that the shared
	 * TICK is held back by nothing. */
	(void)p;
	(void)event_data;
}

int presence_lifecycle_request_props(const mosquitto_property *props,
                                     struct presence_request_props *out)
{
	void *correlation = NULL;
	uint16_t correlation_len = 0;
	char *topic = NULL;

	memset(out, 0, sizeof(*out));
	if (props == NULL) {
		return MOSQ_ERR_SUCCESS;
	}
	if (mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &correlation,
	                                   &correlation_len, false) != NULL) {
		out->correlation = correlation;
		out->correlation_len = correlation_len;
	}
	if (mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &topic, false) !=
	    NULL) {
		out->response_topic = topic;
	}
	return MOSQ_ERR_SUCCESS;
}

void presence_lifecycle_request_props_free(struct presence_request_props *props)
{
	mosquitto_free(props->correlation);
	mosquitto_free(props->response_topic);
	memset(props, 0, sizeof(*props));
}
