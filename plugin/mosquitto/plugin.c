/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Plugin entry points: version negotiation, init (options, checks, state file, callback
 * registration) and cleanup. The callbacks registered (the shared ones and those of the
 * broker generation's lifecycle, see broker.h) are recorded, and cleanup unregisters exactly
 * those (Mosquitto 2.0 does not unregister anything by itself).
 *
 * The state file (store.h) is read in init, which Mosquitto runs after it has restored its own
 * persistence database and before it opens any listener, and which is the only place besides a
 * callback from which a publish is delivered (cleanup's are lost). So init reads the file,
 * records at once that the broker runs (from now on a crash must not look like a clean stop,
 * and the new seq bases must be recorded before they are used), and then publishes the
 * corrections: every user recorded as available is published as unavailable before any client
 * can connect and read the stale retained document, and users past forget_after or beyond
 * max_users are forgotten. Cleanup records a clean stop; file I/O works there, publishing does
 * not.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "callbacks.h"
#include "plugin.h"
#include "clock.h"
#include "publish.h"
#include "sight.h"

#define PRESENCE_EXPORT __attribute__((visibility("default")))

/* The events every generation handles alike; the lifecycle file adds its own. */
static const struct presence_callback shared_callbacks[] = {
    {MOSQ_EVT_ACL_CHECK, presence_acl_check_cb, NULL},
    {MOSQ_EVT_MESSAGE, presence_message_cb, NULL},
    {MOSQ_EVT_TICK, presence_tick_cb, NULL},
    {MOSQ_EVT_CONTROL, presence_control_cb, PRESENCE_CONTROL_TOPIC},
};

#define SHARED_CALLBACK_COUNT (sizeof(shared_callbacks) / sizeof(shared_callbacks[0]))

/* Live plugin instances in this process: presence needs one instance that sees every session,
 * so a second one (per_listener_settings true with several listeners, or two plugin lines) is
 * refused. The only global besides what the broker owns. */
static unsigned int instances;

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

/* Unregisters every callback p registered. */
static void unregister_callbacks(struct presence_plugin *p)
{
	while (p->registered_count > 0) {
		const struct presence_callback *c = &p->registered[--p->registered_count];

		mosquitto_callback_unregister(p->id, c->event, c->cb, c->topic);
	}
}

/* Registers one callback, logging why when the broker refuses it. */
static int register_callback(struct presence_plugin *p, const struct presence_callback *c)
{
	int rc;

	if (p->registered_count == PRESENCE_MAX_CALLBACKS) {
		return MOSQ_ERR_UNKNOWN;
	}
	rc = mosquitto_callback_register(p->id, c->event, c->cb, c->topic, p);
	if (rc != MOSQ_ERR_SUCCESS) {
		/* For $CONTROL/presence/v1, MOSQ_ERR_ALREADY_EXISTS means the plugin is loaded
		 * twice (or another plugin took the topic). */
		mosquitto_log_printf(MOSQ_LOG_ERR,
		                     PRESENCE_LOG_PREFIX
		                     "could not register for broker event %d%s%s: %s",
		                     c->event, c->topic != NULL ? " on " : "",
		                     c->topic != NULL ? c->topic : "", presence_mosq_strerror(rc));
		return rc;
	}
	p->registered[p->registered_count++] = *c;
	return MOSQ_ERR_SUCCESS;
}

/* Registers the shared callbacks and the lifecycle's; on failure, none stays registered. */
static int register_callbacks(struct presence_plugin *p)
{
	size_t lifecycle_count;
	const struct presence_callback *lifecycle =
	    presence_lifecycle_callbacks(p, &lifecycle_count);
	int rc = MOSQ_ERR_SUCCESS;

	for (size_t i = 0; i < SHARED_CALLBACK_COUNT && rc == MOSQ_ERR_SUCCESS; i++) {
		rc = register_callback(p, &shared_callbacks[i]);
	}
	for (size_t i = 0; i < lifecycle_count && rc == MOSQ_ERR_SUCCESS; i++) {
		rc = register_callback(p, &lifecycle[i]);
	}
	if (rc != MOSQ_ERR_SUCCESS) {
		unregister_callbacks(p);
	}
	return rc;
}

static void plugin_free(struct presence_plugin *p)
{
	if (p->backend != NULL) {
		p->backend->end(p);
	}
	/* Before the registry: a compaction's cursor is open in it. */
	presence_store_free(p->store);
	presence_sight_end(p);
	presence_query_limit_free(p->query_limit);
	presence_registry_free(p->reg);
	presence_config_free(&p->cfg);
	free(p);
}

/* Parses the broker's options into p->cfg, logging the reason on failure. */
static int configure(struct presence_plugin *p, const struct mosquitto_opt *opts, int opt_count)
{
	size_t count = opt_count > 0 ? (size_t)opt_count : 0;
	struct presence_option *options = calloc(count + 1, sizeof(*options));
	char err[1024];
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
	p->limits.max_depth = p->cfg.max_state_depth;
	presence_metrics_init(&p->metrics, p->cfg.metrics_interval);
	presence_log_budget_init(&p->rejected_log, PRESENCE_LOG_BURST, PRESENCE_LOG_PER_SECOND);
	presence_log_budget_init(&p->denied_log, PRESENCE_LOG_BURST, PRESENCE_LOG_PER_SECOND);
	presence_log_budget_init(&p->untracked_log, PRESENCE_LOG_BURST, PRESENCE_LOG_PER_SECOND);
	presence_log_budget_init(&p->urgent_saves, PRESENCE_PRIVACY_SAVES, PRESENCE_PRIVACY_SAVES);
	return MOSQ_ERR_SUCCESS;
}

/* (Re)creates the empty registry with the configured settings, but max_users, which applies
 * once the state file is read (apply_max_users). */
static int make_registry(struct presence_plugin *p)
{
	presence_registry_free(p->reg);
	p->reg = presence_registry_new(p->cfg.topic_prefix);
	if (p->reg == NULL) {
		mosquitto_log_printf(MOSQ_LOG_ERR, PRESENCE_LOG_PREFIX "out of memory");
		return MOSQ_ERR_NOMEM;
	}
	presence_registry_set_write_limit(p->reg, (unsigned int)p->cfg.max_writes_per_second,
	                                  (unsigned int)p->cfg.max_write_burst);
	if (p->cfg.cluster_url != NULL) {
		/* The cluster decides availability, delays, state and forgetting (Redis
		 * functions): the registry only counts this broker's sessions and keeps the
		 * documents. */
		presence_registry_set_keep_state(p->reg, true);
		return MOSQ_ERR_SUCCESS;
	}
	presence_registry_set_offline_delay(p->reg, (int64_t)p->cfg.offline_delay * 1000);
	presence_registry_set_keep_state(p->reg, p->cfg.keep_state);
	presence_registry_set_forget_after(p->reg, (int64_t)p->cfg.forget_after * 1000);
	return MOSQ_ERR_SUCCESS;
}

/* Applies max_users (a single broker's; in cluster mode Redis holds the cap), and the state
 * file as the registry's guard. */
static void registry_settle(struct presence_plugin *p)
{
	if (p->cfg.cluster_url == NULL) {
		presence_registry_set_max_users(p->reg, p->cfg.max_users);
	}
	if (p->store != NULL) {
		const struct presence_seq_guard guard = {presence_store_guard_allows, p->store};

		presence_registry_set_guard(p->reg, &guard);
	}
}

/* Moves an unusable state file aside (reason says why it is unusable) and starts with an
 * empty registry; refuses to start when the file cannot be moved, so that it is never
 * overwritten. */
static int move_state_file_aside(struct presence_plugin *p, const char *reason)
{
	const char *path = presence_store_path(p->store);
	size_t aside_size = strlen(path) + 64;
	char *aside = malloc(aside_size);
	char err[PRESENCE_STORE_ERR_SIZE];
	int rc;

	if (aside == NULL) {
		mosquitto_log_printf(MOSQ_LOG_ERR, PRESENCE_LOG_PREFIX "out of memory");
		return MOSQ_ERR_NOMEM;
	}
	if (presence_store_move_aside(p->store, (int64_t)time(NULL), aside, aside_size, err,
	                              sizeof(err)) != PRESENCE_OK) {
		mosquitto_log_printf(MOSQ_LOG_ERR,
		                     PRESENCE_LOG_PREFIX "the state file %s is unusable (%s) and "
		                                         "cannot be moved aside (%s); refusing to "
		                                         "start rather than overwrite it. Move or "
		                                         "remove it yourself.",
		                     path, reason, err);
		free(aside);
		return MOSQ_ERR_INVAL;
	}
	mosquitto_log_printf(MOSQ_LOG_WARNING,
	                     PRESENCE_LOG_PREFIX "WARNING: the state file %s is unusable (%s); "
	                                         "moved it aside to %s and starting with no "
	                                         "recorded users",
	                     path, reason, aside);
	free(aside);
	rc = make_registry(p);
	return rc;
}

/* Opens the state file: reads it (or moves it aside) and rewrites it, marked as not cleanly
 * stopped. The corrections are published later, by init. */
static int open_state_file(struct presence_plugin *p, struct presence_store_loaded *loaded)
{
	char err[PRESENCE_STORE_ERR_SIZE];
	const char *path;
	enum presence_err rc;

	/* In cluster mode Redis numbers the documents, above what the file records. */
	p->store = presence_store_new(p->cfg.state_file,
	                              p->cfg.cluster_url != NULL ? 0 : PRESENCE_STORE_SEQ_MARGIN);
	if (p->store == NULL) {
		mosquitto_log_printf(MOSQ_LOG_ERR, PRESENCE_LOG_PREFIX "out of memory");
		return MOSQ_ERR_NOMEM;
	}
	path = presence_store_path(p->store);
	if (presence_store_check_dir(p->store, err, sizeof(err)) != PRESENCE_OK) {
		mosquitto_log_printf(MOSQ_LOG_ERR, PRESENCE_LOG_PREFIX "plugin_opt_state_file: %s",
		                     err);
		return MOSQ_ERR_INVAL;
	}
	rc = presence_store_load(p->store, p->reg, loaded, err, sizeof(err));
	if (rc == PRESENCE_ERR_INVAL || rc == PRESENCE_ERR_IO) {
		int mrc = move_state_file_aside(p, err);

		memset(loaded, 0, sizeof(*loaded));
		if (mrc != MOSQ_ERR_SUCCESS) {
			return mrc;
		}
	} else if (rc != PRESENCE_OK) {
		mosquitto_log_printf(MOSQ_LOG_ERR,
		                     PRESENCE_LOG_PREFIX "cannot read the state file %s: %s", path,
		                     err);
		return presence_mosq_err(rc);
	} else if (!loaded->found) {
		mosquitto_log_printf(MOSQ_LOG_INFO,
		                     PRESENCE_LOG_PREFIX "no state file at %s yet: first start",
		                     path);
	} else if (loaded->clean) {
		mosquitto_log_printf(MOSQ_LOG_INFO,
		                     PRESENCE_LOG_PREFIX
		                     "restored %zu users (%zu recorded as "
		                     "available) from %s, written at a clean stop: "
		                     "seq continues at the recorded seq + 1",
		                     loaded->users, loaded->available, path);
	} else if (p->cfg.cluster_url != NULL) {
		/* No seq margin: Redis numbers the documents, above what the file records. */
		mosquitto_log_printf(MOSQ_LOG_INFO,
		                     PRESENCE_LOG_PREFIX "restored %zu users (%zu recorded as "
		                                         "available) from %s, written before an "
		                                         "unclean stop (a crash or a kill); the "
		                                         "cluster numbers their documents",
		                     loaded->users, loaded->available, path);
	} else {
		mosquitto_log_printf(MOSQ_LOG_INFO,
		                     PRESENCE_LOG_PREFIX "restored %zu users (%zu recorded as "
		                                         "available) from %s, written before an "
		                                         "unclean stop (a crash or a kill): seq "
		                                         "continues at the recorded seq + %d, new "
		                                         "users start at %d",
		                     loaded->users, loaded->available, path,
		                     PRESENCE_STORE_SEQ_MARGIN + 1, PRESENCE_STORE_SEQ_MARGIN + 1);
	}
	if (presence_store_start(p->store, p->reg, err, sizeof(err)) != PRESENCE_OK) {
		mosquitto_log_printf(MOSQ_LOG_ERR,
		                     PRESENCE_LOG_PREFIX
		                     "cannot write the state file: %s; refusing "
		                     "to start (without it, seq could go "
		                     "backwards after a restart)",
		                     err);
		return MOSQ_ERR_UNKNOWN;
	}
	p->save_started_ms = presence_clock_monotonic_ms();
	mosquitto_log_printf(MOSQ_LOG_DEBUG,
	                     PRESENCE_LOG_PREFIX "state file %s: %zu users in its snapshot, %llu "
	                                         "bytes of journal",
	                     path, presence_store_snapshot_users(p->store),
	                     (unsigned long long)presence_store_journal_bytes(p->store));
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                          struct mosquitto_opt *opts, int opt_count)
{
	struct presence_store_loaded loaded = {0};
	struct presence_plugin *p;
	char summary[1024];
	int rc;

	rc = presence_lifecycle_check_broker(identifier);
	if (rc != MOSQ_ERR_SUCCESS) {
		return rc;
	}
	if (instances > 0) {
		mosquitto_log_printf(MOSQ_LOG_ERR, PRESENCE_LOG_PREFIX
		                     "the plugin is loaded more than once (per_listener_settings "
		                     "true with several listeners, or two plugin lines), but one "
		                     "instance must see every session: load it once, with "
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
	rc = make_registry(p);
	if (rc != MOSQ_ERR_SUCCESS) {
		goto out_free_plugin;
	}
	p->query_limit = presence_query_limit_new(
	    PRESENCE_QUERY_LIMIT_BURST_REPLIES * (uint64_t)p->cfg.max_query_reply_bytes,
	    p->cfg.max_query_reply_bytes / PRESENCE_QUERY_LIMIT_REFILL_S);
	if (p->query_limit == NULL) {
		rc = MOSQ_ERR_NOMEM;
		goto out_free_plugin;
	}
	presence_config_describe(&p->cfg, summary, sizeof(summary));
	mosquitto_log_printf(MOSQ_LOG_INFO, PRESENCE_LOG_PREFIX "version %s started: %s",
	                     PRESENCE_VERSION, summary);
	rc = presence_sight_start(p);
	if (rc != MOSQ_ERR_SUCCESS) {
		goto out_free_plugin;
	}
	if (p->cfg.state_file != NULL) {
		rc = open_state_file(p, &loaded);
		if (rc != MOSQ_ERR_SUCCESS) {
			goto out_free_plugin;
		}
	}
	registry_settle(p);
	rc = register_callbacks(p);
	if (rc != MOSQ_ERR_SUCCESS) {
		goto out_free_plugin;
	}
	/* Chosen once: the callbacks never ask which one it is. In cluster mode the corrections
	 * of a restart are the cluster's documents (its first snapshot); nothing is numbered
	 * here. */
	p->backend =
	    p->cfg.cluster_url != NULL ? &presence_backend_cluster : &presence_backend_local;
	p->restored_unclean = loaded.found && !loaded.clean;
	rc = p->backend->start(p);
	if (rc != MOSQ_ERR_SUCCESS) {
		unregister_callbacks(p);
		goto out_free_plugin;
	}
	*userdata = p;
	instances++;
	return MOSQ_ERR_SUCCESS;

out_free_plugin:
	plugin_free(p);
	return rc;
}

/* Records what changed and a clean stop at shutdown. Users still shown as available (Mosquitto
 * raises no DISCONNECT at shutdown) are recorded so, and corrected at the next start. */
static void save_clean_stop(struct presence_plugin *p)
{
	char err[PRESENCE_STORE_ERR_SIZE];

	struct presence_user *user;

	/* Users forgotten but not announced yet (nothing is published from cleanup): recorded as
	 * gone. */
	while ((user = presence_registry_forgotten_take(p->reg)) != NULL) {
		presence_forget_release(p, user);
	}
	if (presence_store_stop(p->store, p->reg, err, sizeof(err)) != PRESENCE_OK) {
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX
		                     "could not save the state file at shutdown: "
		                     "%s; the next start treats this stop as a "
		                     "crash",
		                     err);
		return;
	}
	mosquitto_log_printf(MOSQ_LOG_INFO,
	                     PRESENCE_LOG_PREFIX "saved state of %zu users to %s (clean stop)",
	                     presence_registry_known_count(p->reg), presence_store_path(p->store));
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
	struct presence_plugin *p = userdata;

	(void)opts;
	(void)opt_count;
	if (p == NULL) {
		return MOSQ_ERR_SUCCESS;
	}
	unregister_callbacks(p);
	instances--;
	/* Before the state file's last save: the cluster link's last results are not taken any
	 * more, and the other brokers take over this broker's sessions at once (deregistration). */
	p->backend->end(p);
	if (p->store != NULL) {
		save_clean_stop(p);
	}
	plugin_free(p);
	return MOSQ_ERR_SUCCESS;
}
