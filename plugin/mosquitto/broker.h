/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The one place the adapter includes the broker's headers, and the seam between the shared
 * adapter and the lifecycle of one broker generation.
 *
 * The plugin is built for one Mosquitto generation, chosen by CMake from the headers it finds
 * (PRESENCE_MOSQUITTO_GENERATION 20 or 21):
 * - 2.0 (2.0.x): <mosquitto_broker.h> and friends; lifecycle_v20.c.
 * - 2.1 (2.1.x): <mosquitto/...> headers (the 2.0 names are shims there that warn);
 * lifecycle_v21.c. Everything that differs between the generations is declared here and defined in
 * the generation's lifecycle file; nothing else tests the generation.
 */
#ifndef PRESENCE_BROKER_H
#define PRESENCE_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if PRESENCE_MOSQUITTO_GENERATION >= 21
#include <mosquitto.h>
#else
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <mqtt_protocol.h>
#endif

#include "policy.h"

struct presence_plugin;

/* One broker event the plugin registers for. */
struct presence_callback {
	int event;
	MOSQ_FUNC_generic_callback cb;
	/* The event data of the registration: the exact $CONTROL topic for MOSQ_EVT_CONTROL
	 * (unregistering must name it too), NULL otherwise. */
	const char *topic;
};

/* The generation's name for logs ("2.0", "2.1"). */
extern const char presence_lifecycle_generation[];

/* Checks, before anything else at init, that the broker the plugin was loaded into is one this
 * build serves: the generation it was built for, without per_listener_settings where that
 * breaks presence. Logs why and returns a MOSQ_ERR_* code when not; MOSQ_ERR_SUCCESS
 * otherwise. */
int presence_lifecycle_check_broker(mosquitto_plugin_id_t *id);

/* Returns the lifecycle callbacks to register for p (its options decide some), setting *count.
 * The array is static. */
const struct presence_callback *presence_lifecycle_callbacks(const struct presence_plugin *p,
                                                             size_t *count);

/* The broker's code for an access question the plugin leaves to the broker's other
 * mechanisms (PRESENCE_VERDICT_PASS). */
int presence_lifecycle_pass(void);

/* What it costs on this generation when another plugin answers every login before this one
 * (presence_session_check_logins), as a clause of a log line. */
extern const char presence_lifecycle_unseen_login_effect[];

/* Called after an event that may have made documents due (a session started, a state write
 * applied): on 2.1 publishes them at once (the backend's publish_due), on 2.0 nothing (the TICK
 * that ends the iteration does). */
void presence_lifecycle_changed(struct presence_plugin *p);

/* Called first in every TICK with its event data: the generation's per-iteration work
 * (promoting pending logins on 2.0; nothing on 2.1). */
void presence_lifecycle_tick(struct presence_plugin *p, void *event_data);

/* What a query request asks about its answer, read from its MQTT 5 properties. Both buffers
 * come from mosquitto_malloc (or the broker's own property readers) and are freed with
 * presence_lifecycle_request_props_free. */
struct presence_request_props {
	/* The Correlation Data, or NULL. */
	void *correlation;
	uint16_t correlation_len;
	/* The Response Topic, NUL-terminated, or NULL. */
	char *response_topic;
};

/* Reads the Correlation Data and Response Topic of props (NULL allowed) into *out, which is
 * zeroed first. Returns MOSQ_ERR_SUCCESS or MOSQ_ERR_NOMEM (*out then holds nothing). Imports
 * no broker function that the generation's brokers do not all export (see the lifecycle
 * files). */
int presence_lifecycle_request_props(const mosquitto_property *props,
                                     struct presence_request_props *out);

/* Frees what props holds and zeroes it. */
void presence_lifecycle_request_props_free(struct presence_request_props *props);

#endif
