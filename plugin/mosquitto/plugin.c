/*
 * Plugin entry points: version negotiation, init (options, checks, callback registration) and
 * cleanup. The callbacks are registered and unregistered from one table, so the two can never
 * disagree (Mosquitto 2.0 does not unregister anything by itself).
 */
#include <stdlib.h>
#include <string.h>

#include "compat.h"
#include "plugin.h"

#define PRESENCE_EXPORT __attribute__((visibility("default")))

/* Every event the plugin handles. */
static const struct {
	int event;
	MOSQ_FUNC_generic_callback cb;
	/* The event data of the registration: the exact $CONTROL topic for MOSQ_EVT_CONTROL
	 * (unregistering must name it too), NULL otherwise. */
	const char *topic;
} callbacks[] = {
    {MOSQ_EVT_BASIC_AUTH, presence_basic_auth_cb, NULL},
    {MOSQ_EVT_ACL_CHECK, presence_acl_check_cb, NULL},
    {MOSQ_EVT_MESSAGE, presence_message_cb, NULL},
    {MOSQ_EVT_DISCONNECT, presence_disconnect_cb, NULL},
    {MOSQ_EVT_TICK, presence_tick_cb, NULL},
    {MOSQ_EVT_RELOAD, presence_reload_cb, NULL},
    {MOSQ_EVT_CONTROL, presence_control_cb, PRESENCE_CONTROL_TOPIC},
};

#define CALLBACK_COUNT (sizeof(callbacks) / sizeof(callbacks[0]))

PRESENCE_EXPORT int mosquitto_plugin_version(int supported_version_count,
                                             const int *supported_versions);
PRESENCE_EXPORT int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                                          struct mosquitto_opt *opts, int opt_count);
PRESENCE_EXPORT int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts,
                                             int opt_count);

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5) {
			return 5;
		}
	}
	return -1;
}

/* Unregisters the first count callbacks of the table. */
static void unregister_callbacks(struct presence_plugin *p, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		mosquitto_callback_unregister(p->id, callbacks[i].event, callbacks[i].cb,
		                              callbacks[i].topic);
	}
}

static void plugin_free(struct presence_plugin *p)
{
	presence_registry_free(p->reg);
	presence_config_free(&p->cfg);
	free(p);
}

/* Parses the broker's options into p->cfg, logging the reason on failure. */
static int configure(struct presence_plugin *p, const struct mosquitto_opt *opts, int opt_count)
{
	size_t count = opt_count > 0 ? (size_t)opt_count : 0;
	struct presence_option *options = calloc(count + 1, sizeof(*options));
	char err[512];
	enum presence_err rc;

	if (options == NULL) {
		mosquitto_log_printf(MOSQ_LOG_ERR, PRESENCE_LOG_PREFIX "out of memory");
		return MOSQ_ERR_NOMEM;
	}
	for (size_t i = 0; i < count; i++) {
		options[i].key = opts[i].key;
		options[i].value = opts[i].value;
	}
	rc = presence_config_parse(&p->cfg, options, count, err, sizeof(err));
	free(options);
	if (rc != PRESENCE_OK) {
		mosquitto_log_printf(MOSQ_LOG_ERR, PRESENCE_LOG_PREFIX "%s", err);
		return presence_mosq_err(rc);
	}
	if (mosquitto_pub_topic_check(p->cfg.topic_prefix) != MOSQ_ERR_SUCCESS) {
		mosquitto_log_printf(MOSQ_LOG_ERR,
		                     PRESENCE_LOG_PREFIX "plugin_opt_topic_prefix: \"%s\" is not a "
		                                         "valid topic",
		                     p->cfg.topic_prefix);
		return MOSQ_ERR_INVAL;
	}
	p->limits.max_state_bytes = p->cfg.max_state_bytes;
	p->limits.max_keys = p->cfg.max_keys;
	presence_metrics_init(&p->metrics, p->cfg.metrics_interval);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                          struct mosquitto_opt *opts, int opt_count)
{
	struct presence_plugin *p;
	char summary[1024];
	size_t registered;
	int rc;

	if (presence_compat_per_listener(identifier)) {
		mosquitto_log_printf(MOSQ_LOG_ERR, PRESENCE_LOG_PREFIX
		                     "per_listener_settings true is not "
		                     "supported: Mosquitto 2.0 then loads one "
		                     "plugin instance per listener (each seeing only "
		                     "part of the sessions) and, before 2.0.15, never "
		                     "sends the TICK event presence depends on. Set "
		                     "per_listener_settings false.");
		return MOSQ_ERR_NOT_SUPPORTED;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		return MOSQ_ERR_NOMEM;
	}
	p->id = identifier;
	rc = configure(p, opts, opt_count);
	if (rc != MOSQ_ERR_SUCCESS) {
		goto out_free_plugin;
	}
	p->reg = presence_registry_new(p->cfg.topic_prefix);
	if (p->reg == NULL) {
		rc = MOSQ_ERR_NOMEM;
		goto out_free_plugin;
	}
	for (registered = 0; registered < CALLBACK_COUNT; registered++) {
		rc = mosquitto_callback_register(identifier, callbacks[registered].event,
		                                 callbacks[registered].cb,
		                                 callbacks[registered].topic, p);
		if (rc != MOSQ_ERR_SUCCESS) {
			/* For $CONTROL/presence/v1, MOSQ_ERR_ALREADY_EXISTS means the plugin is
			 * loaded twice (or another plugin took the topic). */
			mosquitto_log_printf(
			    MOSQ_LOG_ERR,
			    PRESENCE_LOG_PREFIX "could not register for broker "
			                        "event %d%s%s: %s",
			    callbacks[registered].event,
			    callbacks[registered].topic != NULL ? " on " : "",
			    callbacks[registered].topic != NULL ? callbacks[registered].topic : "",
			    mosquitto_strerror(rc));
			goto out_unregister;
		}
	}
	presence_config_describe(&p->cfg, summary, sizeof(summary));
	mosquitto_log_printf(MOSQ_LOG_INFO, PRESENCE_LOG_PREFIX "version %s started: %s",
	                     PRESENCE_VERSION, summary);
	*userdata = p;
	return MOSQ_ERR_SUCCESS;

out_unregister:
	unregister_callbacks(p, registered);
out_free_plugin:
	plugin_free(p);
	return rc;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
	struct presence_plugin *p = userdata;

	(void)opts;
	(void)opt_count;
	if (p == NULL) {
		return MOSQ_ERR_SUCCESS;
	}
	unregister_callbacks(p, CALLBACK_COUNT);
	plugin_free(p);
	return MOSQ_ERR_SUCCESS;
}
