/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * A second Mosquitto v5 plugin, loaded next to mosquitto_presence by some integration tests.
 *
 * It lets a test make the broker do two things no client can ask for:
 *   - refuse a login after our plugin has seen it: BASIC_AUTH answers MOSQ_ERR_AUTH for the
 *     username "refused-by-helper" and defers every other login to the other mechanisms;
 *   - kick clients: a PUBLISH to $CONTROL/test-helper/v1 with the payload "kick-client <id>" or
 *     "kick-user <username>" disconnects the matching clients without sending their will;
 *   - keep the broker's loop busy: "busy <ms>" spins in the broker's thread for ms
 *     milliseconds (at most 10 s), as a broker saving a large persistence file does;
 *   - answer every login itself, as an authentication plugin does: with the option
 *     plugin_opt_accept_all true, BASIC_AUTH accepts every login but the refused one, so a
 *     plugin listed after this one is never asked.
 * It has no ACL callback, so it never changes what our plugin decides about topics. The CONTROL
 * callback always returns MOSQ_ERR_SUCCESS: an error from CONTROL would disconnect the sender.
 *
 * Beware: once any plugin registers BASIC_AUTH, Mosquitto 2.0.11 refuses a login that carries
 * a username when every BASIC_AUTH callback defers, even with allow_anonymous true (only
 * logins without a username then fall back to allow_anonymous). With this plugin loaded, users
 * need a password_file entry (or a plugin that accepts them) to get in.
 *
 * Configure with: plugin @HELPER@
 */
#define _POSIX_C_SOURCE 200809L

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#if PRESENCE_MOSQUITTO_GENERATION < 21
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
/* 2.0 has no "ignore": DEFER is the only way to leave a login to the others. */
#define HELPER_PASS MOSQ_ERR_PLUGIN_DEFER
#else
#define HELPER_PASS MOSQ_ERR_PLUGIN_IGNORE
#endif

#define HELPER_EXPORT __attribute__((visibility("default")))

/* The topic of the CONTROL callback. */
#define HELPER_CONTROL_TOPIC "$CONTROL/test-helper/v1"

/* The username BASIC_AUTH refuses. */
#define HELPER_REFUSED_USER "refused-by-helper"

/* Longest command payload handled; longer ones are ignored. */
#define HELPER_MAX_COMMAND 1024

/* The identifier the broker gave this plugin, needed to unregister the callbacks. */
static mosquitto_plugin_id_t *helper_id;

/* plugin_opt_accept_all true: BASIC_AUTH accepts every login it does not refuse. */
static bool helper_accept_all;

HELPER_EXPORT int mosquitto_plugin_version(int supported_version_count,
                                           const int *supported_versions);
HELPER_EXPORT int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                                        struct mosquitto_opt *options, int option_count);
HELPER_EXPORT int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options,
                                           int option_count);

/* Refuses HELPER_REFUSED_USER, accepts (accept_all) or defers everyone else. */
static int helper_basic_auth_cb(int event, void *event_data, void *userdata)
{
	const struct mosquitto_evt_basic_auth *ed = event_data;

	(void)event;
	(void)userdata;
	if (ed->username && strcmp(ed->username, HELPER_REFUSED_USER) == 0) {
		mosquitto_log_printf(MOSQ_LOG_INFO, "test-helper: refusing login of %s",
		                     ed->username);
		return MOSQ_ERR_AUTH;
	}
	return helper_accept_all ? MOSQ_ERR_SUCCESS : HELPER_PASS;
}

/* Runs "kick-client <id>", "kick-user <name>" or "busy <ms>"; logs and ignores anything
 * else. */
static int helper_control_cb(int event, void *event_data, void *userdata)
{
	const struct mosquitto_evt_control *ed = event_data;
	char command[HELPER_MAX_COMMAND + 1];
	static const char kick_client[] = "kick-client ";
	static const char kick_user[] = "kick-user ";
	static const char busy[] = "busy ";

	(void)event;
	(void)userdata;
	if (!ed->payload || ed->payloadlen == 0 || ed->payloadlen > HELPER_MAX_COMMAND) {
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     "test-helper: ignoring empty or long command");
		return MOSQ_ERR_SUCCESS;
	}
	memcpy(command, ed->payload, ed->payloadlen);
	command[ed->payloadlen] = '\0';

	if (strncmp(command, kick_client, sizeof(kick_client) - 1) == 0) {
		const char *id = command + sizeof(kick_client) - 1;
		int rc = mosquitto_kick_client_by_clientid(id, false);

		mosquitto_log_printf(MOSQ_LOG_INFO, "test-helper: kick-client %s: %d", id, rc);
	} else if (strncmp(command, busy, sizeof(busy) - 1) == 0) {
		long ms = strtol(command + sizeof(busy) - 1, NULL, 10);
		struct timespec start, now;

		if (ms < 0 || ms > 10000) {
			ms = 0;
		}
		mosquitto_log_printf(MOSQ_LOG_INFO, "test-helper: busy for %ld ms", ms);
		clock_gettime(CLOCK_MONOTONIC, &start);
		do {
			clock_gettime(CLOCK_MONOTONIC, &now);
		} while ((now.tv_sec - start.tv_sec) * 1000 +
		             (now.tv_nsec - start.tv_nsec) / 1000000 <
		         ms);
		mosquitto_log_printf(MOSQ_LOG_INFO, "test-helper: no longer busy");
	} else if (strncmp(command, kick_user, sizeof(kick_user) - 1) == 0) {
		const char *name = command + sizeof(kick_user) - 1;
		int rc = mosquitto_kick_client_by_username(name, false);

		mosquitto_log_printf(MOSQ_LOG_INFO, "test-helper: kick-user %s: %d", name, rc);
	} else {
		mosquitto_log_printf(MOSQ_LOG_WARNING, "test-helper: unknown command '%s'",
		                     command);
	}
	return MOSQ_ERR_SUCCESS;
}

HELPER_EXPORT int mosquitto_plugin_version(int supported_version_count,
                                           const int *supported_versions)
{
	(void)supported_version_count;
	(void)supported_versions;
	return 5;
}

HELPER_EXPORT int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                                        struct mosquitto_opt *options, int option_count)
{
	int rc;

	*userdata = NULL;
	helper_id = identifier;
	helper_accept_all = false;
	for (int i = 0; i < option_count; i++) {
		if (strcmp(options[i].key, "accept_all") == 0 &&
		    strcmp(options[i].value, "true") == 0) {
			helper_accept_all = true;
		}
	}
	rc = mosquitto_callback_register(helper_id, MOSQ_EVT_BASIC_AUTH, helper_basic_auth_cb, NULL,
	                                 NULL);
	if (rc != MOSQ_ERR_SUCCESS)
		return rc;
	rc = mosquitto_callback_register(helper_id, MOSQ_EVT_CONTROL, helper_control_cb,
	                                 HELPER_CONTROL_TOPIC, NULL);
	if (rc != MOSQ_ERR_SUCCESS) {
		mosquitto_callback_unregister(helper_id, MOSQ_EVT_BASIC_AUTH, helper_basic_auth_cb,
		                              NULL);
		return rc;
	}
	mosquitto_log_printf(MOSQ_LOG_INFO, "test-helper: loaded");
	return MOSQ_ERR_SUCCESS;
}

HELPER_EXPORT int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options,
                                           int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(helper_id, MOSQ_EVT_CONTROL, helper_control_cb,
	                              HELPER_CONTROL_TOPIC);
	mosquitto_callback_unregister(helper_id, MOSQ_EVT_BASIC_AUTH, helper_basic_auth_cb, NULL);
	return MOSQ_ERR_SUCCESS;
}
