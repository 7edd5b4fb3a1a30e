/*
 * The adapter's shared context: one struct presence_plugin per plugin instance, passed to
 * every callback as userdata. plugin.c creates it and wires the callbacks; events.c holds the
 * callbacks themselves.
 */
#ifndef PRESENCE_PLUGIN_H
#define PRESENCE_PLUGIN_H

#include <stdbool.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <mqtt_protocol.h>

#include "config.h"
#include "registry.h"
#include "state.h"
#include "store.h"

/* Prefix of every log line the plugin writes. */
#define PRESENCE_LOG_PREFIX "mosquitto-presence: "

struct presence_plugin {
	/* The broker's id for this plugin instance (for callback registration). */
	mosquitto_plugin_id_t *id;
	/* The effective options. */
	struct presence_config cfg;
	/* State write limits, from cfg. */
	struct presence_state_limits limits;
	/* Sessions and users. */
	struct presence_registry *reg;
	/* Set by RELOAD until the end of the loop iteration: BASIC_AUTH events in between are
	 * re-authentications of existing sessions (even offline persistent ones), not logins. */
	bool reloading;
	/* The state file, or NULL without plugin_opt_state_file. */
	struct presence_store *store;
	/* Monotonic time (ms) at which the last save began, and whether the last save failed:
	 * saves are paced to about one per second, and retried at that pace after a failure. */
	int64_t save_started_ms;
	bool save_failed;
};

/* The callbacks (events.c). Each takes the struct presence_plugin as userdata. */
int presence_basic_auth_cb(int event, void *event_data, void *userdata);
int presence_acl_check_cb(int event, void *event_data, void *userdata);
int presence_message_cb(int event, void *event_data, void *userdata);
int presence_disconnect_cb(int event, void *event_data, void *userdata);
int presence_tick_cb(int event, void *event_data, void *userdata);
int presence_reload_cb(int event, void *event_data, void *userdata);

/* Maps a core error to the broker's error codes. */
int presence_mosq_err(enum presence_err err);

/* Publishes a document for every dirty user whose presence differs from its last document
 * (events.c). Returns the number published. Used by TICK and, for the corrections of a
 * restart, by mosquitto_plugin_init. */
size_t presence_publish_due_documents(struct presence_plugin *p);

/* Monotonic clock in milliseconds (events.c). */
int64_t presence_monotonic_ms(void);

#endif
