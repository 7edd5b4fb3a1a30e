/*
 * Differences between Mosquitto broker versions, kept out of the event code.
 *
 * Only what the adapter needs: whether the broker runs with per_listener_settings, which
 * Mosquitto 2.0 cannot serve correctly (no TICK on 2.0.11-2.0.14, one plugin instance per
 * listener with its own sessions), so the plugin refuses to start there.
 */
#ifndef PRESENCE_COMPAT_H
#define PRESENCE_COMPAT_H

#include <stdbool.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

/* Returns true when the plugin instance identified by id was loaded for one listener
 * (per_listener_settings true). Mosquitto 2.0's plugin id is opaque but, in every 2.0.x
 * release, is a struct whose only member is the listener pointer, set exactly when
 * per_listener_settings is on (src/mosquitto_broker_internal.h, src/plugin.c:plugin__load_v5).
 * There is no public accessor, so this reads that member. */
static inline bool presence_compat_per_listener(const mosquitto_plugin_id_t *id)
{
#if LIBMOSQUITTO_VERSION_NUMBER < 2001000
	const void *const *listener = (const void *const *)(const void *)id;

	return id != NULL && *listener != NULL;
#else
	(void)id;
	return false;
#endif
}

#endif
