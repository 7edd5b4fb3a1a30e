/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Plugin options (plugin_opt_<name> lines) turned into a checked configuration.
 *
 * One table in config.c lists every option with its parser and default. An unknown option, a
 * repeated option or an invalid value is an error with a message that names the option and
 * says what is allowed; the broker then refuses to start.
 */
#ifndef PRESENCE_CONFIG_H
#define PRESENCE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "presence_err.h"

/* What names a user. */
enum presence_identity {
	/* The MQTT username; sessions without one (or with an empty one) are not tracked. */
	PRESENCE_IDENTITY_USERNAME = 0,
	/* The client id. */
	PRESENCE_IDENTITY_CLIENTID,
};

/* How the plugin answers auth or ACL questions outside its own namespace. */
enum presence_mode {
	/* Leave the decision to the broker's other mechanisms. */
	PRESENCE_MODE_DEFER = 0,
	/* Allow. */
	PRESENCE_MODE_ALLOW,
};

/* One option as the broker passes it (key without the plugin_opt_ prefix). */
struct presence_option {
	const char *key;
	const char *value;
};

/* The effective configuration. Strings are owned; free with presence_config_free. */
struct presence_config {
	/* Topic prefix P, without the '/' that separates it from the user level. Default
	 * "presence". Non-empty UTF-8 of at most 65535 bytes, without '+' or '#', not starting
	 * with '$'; taken as given (nothing is stripped). */
	char *topic_prefix;
	/* Length of topic_prefix. */
	size_t topic_prefix_len;
	/* What names a user. Default username. */
	enum presence_identity identity;
	/* Names never tracked, in the order given (a comma-separated list; spaces and tabs
	 * around each name are trimmed; empty names are an error). NULL when none. */
	char **ignore_users;
	/* Number of entries in ignore_users. */
	size_t ignore_users_count;
	/* Login decisions. Default defer. */
	enum presence_mode auth;
	/* ACL decisions outside the plugin's own rules. Default defer. */
	enum presence_mode acl;
	/* Largest compact state per user, bytes. Default 8192. */
	size_t max_state_bytes;
	/* Most top-level state keys per user. Default 64. */
	size_t max_keys;
	/* Deepest nesting of a state (the state object is level 1). Default 32; 1 to 128. */
	size_t max_state_depth;
	/* Most user names one query request may ask about, over all its commands. Default 1000;
	 * 1 to 100000. */
	size_t max_query_users;
	/* Byte budget of one query response (see query.h). Default 65536; 1024 to 64 MiB. */
	size_t max_query_reply_bytes;
	/* Seconds between two publications of the $SYS metrics; 0 disables them. Default 10;
	 * 0 to 86400. */
	size_t metrics_interval;
	/* Seconds a user stays available after its last session left, waiting for one to come
	 * back; 0 to 86400. Default 0 (unavailable at once). */
	unsigned int offline_delay;
	/* Whether a user's state is kept while it is offline (and in the state file). Default
	 * false. */
	bool keep_state;
	/* Seconds a user may have no session before it is forgotten; 0 = never. Default 2592000
	 * (30 days); 0 to 315360000. */
	size_t forget_after;
	/* Most users known at once. Default 1000000; 1 to 100000000. */
	size_t max_users;
	/* State writes that change the state, per user and second (0 = no limit); and how many
	 * may come at once. Defaults 10 and 100; 0 to 1000, 1 to 100000. */
	size_t max_writes_per_second;
	size_t max_write_burst;
	/* Path of the state file, or NULL (the default) for none. Non-empty, not ending in '/';
	 * whether its directory exists is checked when the plugin starts. */
	char *state_file;
	/* Cluster mode (cluster.h): the Redis URL (redis://[user[:password]@]host[:port],
	 * rediss://..., unix:/path or /path), or NULL (the default) for a single broker. It may
	 * hold a password: log presence_config_describe's text, never this. */
	char *cluster_url;
	/* This broker's id in the cluster: 1 to 64 characters of A-Z a-z 0-9 . _ -, unique and
	 * stable; required with cluster_url. NULL otherwise. */
	char *broker_id;
	/* Milliseconds between two heartbeats; 100 to 60000, default 1000. */
	size_t cluster_heartbeat_ms;
	/* Milliseconds a broker's lease lasts after its last heartbeat; at least twice the
	 * heartbeat, at most 600000. Default (0 given or not set): 2 x heartbeat + 500. */
	size_t cluster_lease_ms;
	/* Logging in to Redis: an ACL user name (or the URL's), and a file whose first line is the
	 * password (or the URL's; not both). NULL when not given. */
	char *cluster_username;
	char *cluster_password_file;
	/* With a rediss:// URL: the CA certificates that Redis' certificate must chain to (NULL:
	 * the system's), and a client certificate and its key (both or neither). */
	char *cluster_tls_cafile;
	char *cluster_tls_certfile;
	char *cluster_tls_keyfile;
	/* Whether the cluster link wakes the broker's loop with a real-time signal when Redis
	 * answers (plugin/mosquitto/wake.h); default false: results wait for the next loop
	 * iteration (up to 100 ms on an idle broker). */
	bool cluster_wake_signal;
	/* Who may see whom (visibility.h): false = everyone (the default), true = group. */
	bool visibility_group;
	/* The groups file (re-read on SIGHUP), or NULL. */
	char *groups_file;
	/* The separator ending the group part of a username (1 to 16 bytes), or NULL. */
	char *group_separator;
	/* Names that see every user, as ignore_users; NULL when none. */
	char **see_everyone;
	size_t see_everyone_count;
};

/* Fills cfg from count options. On success returns PRESENCE_OK. On failure returns
 * PRESENCE_ERR_INVAL (unknown, repeated or invalid option) or PRESENCE_ERR_NOMEM, writes a
 * NUL-terminated message into err (err_size bytes) naming the option, and leaves cfg empty
 * (safe to pass to presence_config_free). */
enum presence_err presence_config_parse(struct presence_config *cfg,
                                        const struct presence_option *opts, size_t count, char *err,
                                        size_t err_size);

/* Frees what cfg owns and zeroes it. */
void presence_config_free(struct presence_config *cfg);

/* Returns true when user is listed in ignore_users. */
bool presence_config_ignores(const struct presence_config *cfg, const char *user);

/* Writes a one-line summary of the effective settings into buf (NUL-terminated, truncated to
 * size). Returns the length snprintf would have written. */
int presence_config_describe(const struct presence_config *cfg, char *buf, size_t size);

#endif
