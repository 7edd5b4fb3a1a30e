/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Plugin options turned into a checked configuration.
 *
 * Every option is one row of option_table: its name, the function that parses and checks its
 * value, and its default written as an option value. Defaults go through the same parser as
 * the broker's values, so a default can never be something a user could not have written.
 *
 * Parsing builds the configuration in a local struct and copies it to the caller only when
 * every option was accepted; on any failure everything built so far is freed and the caller's
 * struct is zeroed. Error messages name the option as it is written in mosquitto.conf
 * (plugin_opt_<name>), quote the value that was refused and say what is allowed, because the
 * broker prints them as the only explanation for refusing to start.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "config.h"
#include "text.h"
#include "utf8.h"

/* How options are spelled in mosquitto.conf; used in every message. */
#define OPTION_PREFIX "plugin_opt_"

/* The longest topic prefix: an MQTT topic is at most 65535 bytes. */
#define TOPIC_PREFIX_MAX 65535u

#define MAX_STATE_BYTES_MIN 2u
#define MAX_STATE_BYTES_MAX 1048576u
#define MAX_KEYS_MIN 1u
#define MAX_KEYS_MAX 65535u
#define MAX_QUERY_USERS_MIN 1u
#define MAX_QUERY_USERS_MAX 100000u
#define MAX_STATE_DEPTH_MIN 1u
#define MAX_STATE_DEPTH_MAX 128u
#define MAX_QUERY_REPLY_BYTES_MIN 1024u
#define MAX_QUERY_REPLY_BYTES_MAX 67108864u
#define METRICS_INTERVAL_MIN 0u
/* One day: anything longer is as good as disabled, and 0 already says that. */
#define METRICS_INTERVAL_MAX 86400u
#define OFFLINE_DELAY_MAX 86400u

/* Ten years: anything longer is as good as never, and 0 already says that. */
#define FORGET_AFTER_MAX 315360000u
#define MAX_USERS_MIN 1u
#define MAX_USERS_MAX 100000000u
#define MAX_WRITES_PER_SECOND_MAX 1000u
#define MAX_WRITE_BURST_MIN 1u
#define MAX_WRITE_BURST_MAX 100000u
#define GROUP_SEPARATOR_MAX 16u

/* Space for the "what is allowed" part of an error message. */
#define REASON_SIZE 128

/* One row of the option table. */
struct option_spec {
	/* The name after plugin_opt_. */
	const char *name;
	/*
	 * Parses value into its field of cfg. Returns PRESENCE_OK; PRESENCE_ERR_INVAL with a
	 * phrase saying what is allowed written to reason; or PRESENCE_ERR_NOMEM. On failure the
	 * field is left as it was.
	 */
	enum presence_err (*parse)(struct presence_config *cfg, const char *value, char *reason,
	                           size_t reason_size);
	/* The value used when the option is not given, or NULL when the zeroed field (an empty
	 * list, no state file) is the default. */
	const char *default_value;
};

/*
 * Appends a formatted piece to buf (size bytes) at offset *len, the untruncated length of what
 * was appended so far, which may already exceed size. buf stays NUL-terminated; *len grows by
 * what vsnprintf would have written, so callers can report the length they needed.
 */
static void config_append(char *buf, size_t size, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void config_append(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
	va_list ap;
	size_t used = *len < size ? *len : size;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(size > used ? buf + used : NULL, size - used, fmt, ap);
	va_end(ap);
	if (n > 0) {
		*len += (size_t)n;
	}
}

/* Parses value as a decimal integer from min to max into *out (presence_text_parse_uint's
 * rules); false for anything else. */
static bool config_parse_size(const char *value, size_t min, size_t max, size_t *out)
{
	uint64_t n;

	if (!presence_text_parse_uint(value, strlen(value), min, max, &n)) {
		return false;
	}
	*out = (size_t)n;
	return true;
}

/* Checks and copies the topic prefix; see config.h for the rules. */
static enum presence_err config_topic_prefix(struct presence_config *cfg, const char *value,
                                             char *reason, size_t reason_size)
{
	size_t len = strlen(value);
	const char *problem = NULL;
	char *copy;

	if (len == 0) {
		problem = "it must not be empty";
	} else if (len > TOPIC_PREFIX_MAX) {
		problem = "it must be at most 65535 bytes";
	} else if (!presence_utf8_valid(value, len)) {
		problem = "it must be valid UTF-8";
	} else if (strpbrk(value, "+#") != NULL) {
		problem = "it must not contain the wildcards '+' or '#'";
	} else if (value[0] == '$') {
		problem = "it must not start with '$' (reserved for broker topics)";
	}
	if (problem != NULL) {
		snprintf(reason, reason_size, "%s", problem);
		return PRESENCE_ERR_INVAL;
	}

	copy = presence_text_dup(value, len);
	if (copy == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	cfg->topic_prefix = copy;
	cfg->topic_prefix_len = len;
	return PRESENCE_OK;
}

/* Accepts "username" or "clientid". */
static enum presence_err config_identity(struct presence_config *cfg, const char *value,
                                         char *reason, size_t reason_size)
{
	if (strcmp(value, "username") == 0) {
		cfg->identity = PRESENCE_IDENTITY_USERNAME;
	} else if (strcmp(value, "clientid") == 0) {
		cfg->identity = PRESENCE_IDENTITY_CLIENTID;
	} else {
		snprintf(reason, reason_size, "use \"username\" or \"clientid\"");
		return PRESENCE_ERR_INVAL;
	}
	return PRESENCE_OK;
}

/* Parses "defer" or "allow" into *mode; shared by auth and acl. */
static enum presence_err config_mode(enum presence_mode *mode, const char *value, char *reason,
                                     size_t reason_size)
{
	if (strcmp(value, "defer") == 0) {
		*mode = PRESENCE_MODE_DEFER;
	} else if (strcmp(value, "allow") == 0) {
		*mode = PRESENCE_MODE_ALLOW;
	} else {
		snprintf(reason, reason_size, "use \"defer\" or \"allow\"");
		return PRESENCE_ERR_INVAL;
	}
	return PRESENCE_OK;
}

/* The auth option: see config_mode. */
static enum presence_err config_auth(struct presence_config *cfg, const char *value, char *reason,
                                     size_t reason_size)
{
	return config_mode(&cfg->auth, value, reason, reason_size);
}

/* The acl option: see config_mode. */
static enum presence_err config_acl(struct presence_config *cfg, const char *value, char *reason,
                                    size_t reason_size)
{
	return config_mode(&cfg->acl, value, reason, reason_size);
}

/* An integer from min to max into *out; otherwise the reason names the range, with unit (" number
 * of seconds" or "") after "an integer" and note (" (0: no limit)" or "") at the end. */
static enum presence_err config_integer(const char *value, size_t min, size_t max, size_t *out,
                                        const char *unit, const char *note, char *reason,
                                        size_t reason_size)
{
	if (!config_parse_size(value, min, max, out)) {
		snprintf(reason, reason_size, "use an integer%s from %zu to %zu%s", unit, min, max,
		         note);
		return PRESENCE_ERR_INVAL;
	}
	return PRESENCE_OK;
}

static enum presence_err config_max_state_bytes(struct presence_config *cfg, const char *value,
                                                char *reason, size_t reason_size)
{
	return config_integer(value, MAX_STATE_BYTES_MIN, MAX_STATE_BYTES_MAX,
	                      &cfg->max_state_bytes, "", "", reason, reason_size);
}

static enum presence_err config_max_keys(struct presence_config *cfg, const char *value,
                                         char *reason, size_t reason_size)
{
	return config_integer(value, MAX_KEYS_MIN, MAX_KEYS_MAX, &cfg->max_keys, "", "", reason,
	                      reason_size);
}

/* From MAX_STATE_DEPTH_MIN to MAX_STATE_DEPTH_MAX: deep enough for any real state, shallow
 * enough that a document (one level more), a query response (five more) and the state file
 * (three more) stay far below the nesting limits of cJSON (1000) and of common JSON
 * libraries. */
static enum presence_err config_max_state_depth(struct presence_config *cfg, const char *value,
                                                char *reason, size_t reason_size)
{
	return config_integer(value, MAX_STATE_DEPTH_MIN, MAX_STATE_DEPTH_MAX,
	                      &cfg->max_state_depth, "", "", reason, reason_size);
}

static enum presence_err config_max_query_reply_bytes(struct presence_config *cfg,
                                                      const char *value, char *reason,
                                                      size_t reason_size)
{
	return config_integer(value, MAX_QUERY_REPLY_BYTES_MIN, MAX_QUERY_REPLY_BYTES_MAX,
	                      &cfg->max_query_reply_bytes, "", "", reason, reason_size);
}

static enum presence_err config_max_query_users(struct presence_config *cfg, const char *value,
                                                char *reason, size_t reason_size)
{
	return config_integer(value, MAX_QUERY_USERS_MIN, MAX_QUERY_USERS_MAX,
	                      &cfg->max_query_users, "", "", reason, reason_size);
}

/* Seconds, up to OFFLINE_DELAY_MAX (one day). */
static enum presence_err config_offline_delay(struct presence_config *cfg, const char *value,
                                              char *reason, size_t reason_size)
{
	size_t seconds;
	enum presence_err err = config_integer(value, 0, OFFLINE_DELAY_MAX, &seconds,
	                                       " number of seconds", "", reason, reason_size);

	if (err == PRESENCE_OK) {
		cfg->offline_delay = (unsigned int)seconds;
	}
	return err;
}

/* Seconds, from 0 (never) to FORGET_AFTER_MAX. */
static enum presence_err config_forget_after(struct presence_config *cfg, const char *value,
                                             char *reason, size_t reason_size)
{
	return config_integer(value, 0, FORGET_AFTER_MAX, &cfg->forget_after, " number of seconds",
	                      " (0: never forget)", reason, reason_size);
}

static enum presence_err config_max_users(struct presence_config *cfg, const char *value,
                                          char *reason, size_t reason_size)
{
	return config_integer(value, MAX_USERS_MIN, MAX_USERS_MAX, &cfg->max_users, "", "", reason,
	                      reason_size);
}

static enum presence_err config_max_writes_per_second(struct presence_config *cfg,
                                                      const char *value, char *reason,
                                                      size_t reason_size)
{
	return config_integer(value, 0, MAX_WRITES_PER_SECOND_MAX, &cfg->max_writes_per_second, "",
	                      " (0: no limit)", reason, reason_size);
}

static enum presence_err config_max_write_burst(struct presence_config *cfg, const char *value,
                                                char *reason, size_t reason_size)
{
	return config_integer(value, MAX_WRITE_BURST_MIN, MAX_WRITE_BURST_MAX,
	                      &cfg->max_write_burst, "", "", reason, reason_size);
}

/* Accepts "true" or "false" into *out. */
static enum presence_err config_bool(bool *out, const char *value, char *reason, size_t reason_size)
{
	if (strcmp(value, "true") == 0) {
		*out = true;
	} else if (strcmp(value, "false") == 0) {
		*out = false;
	} else {
		snprintf(reason, reason_size, "use \"true\" or \"false\"");
		return PRESENCE_ERR_INVAL;
	}
	return PRESENCE_OK;
}

static enum presence_err config_cluster_wake_signal(struct presence_config *cfg, const char *value,
                                                    char *reason, size_t reason_size)
{
	return config_bool(&cfg->cluster_wake_signal, value, reason, reason_size);
}

/* Accepts "true" or "false". */
static enum presence_err config_keep_state(struct presence_config *cfg, const char *value,
                                           char *reason, size_t reason_size)
{
	if (strcmp(value, "true") == 0) {
		cfg->keep_state = true;
	} else if (strcmp(value, "false") == 0) {
		cfg->keep_state = false;
	} else {
		snprintf(reason, reason_size, "use \"true\" or \"false\"");
		return PRESENCE_ERR_INVAL;
	}
	return PRESENCE_OK;
}

/* Seconds, from METRICS_INTERVAL_MIN (0: no metrics) to METRICS_INTERVAL_MAX. */
static enum presence_err config_metrics_interval(struct presence_config *cfg, const char *value,
                                                 char *reason, size_t reason_size)
{
	return config_integer(value, METRICS_INTERVAL_MIN, METRICS_INTERVAL_MAX,
	                      &cfg->metrics_interval, " number of seconds",
	                      " (0 disables the metrics)", reason, reason_size);
}

/* A path naming a file: non-empty, not ending in '/'. The directory is checked at startup,
 * where the file is used (the configuration is pure text). */
/* Copies value into *field when it names a file (non-empty, not ending in '/'); example goes
 * into the reason otherwise. */
static enum presence_err config_file(char **field, const char *value, const char *example,
                                     char *reason, size_t reason_size)
{
	size_t len = strlen(value);
	char *copy;

	if (len == 0 || value[len - 1] == '/') {
		snprintf(reason, reason_size, "give the path of a file, such as %s", example);
		return PRESENCE_ERR_INVAL;
	}
	copy = presence_text_dup(value, len);
	if (copy == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	*field = copy;
	return PRESENCE_OK;
}

static enum presence_err config_state_file(struct presence_config *cfg, const char *value,
                                           char *reason, size_t reason_size)
{
	return config_file(&cfg->state_file, value, "/var/lib/mosquitto/presence-state.json",
	                   reason, reason_size);
}

static enum presence_err config_cluster_password_file(struct presence_config *cfg,
                                                      const char *value, char *reason,
                                                      size_t reason_size)
{
	return config_file(&cfg->cluster_password_file, value,
	                   "/etc/mosquitto/presence-redis.password", reason, reason_size);
}

static enum presence_err config_cluster_tls_cafile(struct presence_config *cfg, const char *value,
                                                   char *reason, size_t reason_size)
{
	return config_file(&cfg->cluster_tls_cafile, value, "/etc/mosquitto/redis-ca.crt", reason,
	                   reason_size);
}

static enum presence_err config_cluster_tls_certfile(struct presence_config *cfg, const char *value,
                                                     char *reason, size_t reason_size)
{
	return config_file(&cfg->cluster_tls_certfile, value, "/etc/mosquitto/redis-client.crt",
	                   reason, reason_size);
}

static enum presence_err config_cluster_tls_keyfile(struct presence_config *cfg, const char *value,
                                                    char *reason, size_t reason_size)
{
	return config_file(&cfg->cluster_tls_keyfile, value, "/etc/mosquitto/redis-client.key",
	                   reason, reason_size);
}

/* A Redis ACL user name: 1 to 127 bytes, no control character, no space. */
static enum presence_err config_cluster_username(struct presence_config *cfg, const char *value,
                                                 char *reason, size_t reason_size)
{
	size_t len = strlen(value);
	char *copy;

	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)value[i] <= 0x20 || value[i] == 0x7f) {
			len = 0;
		}
	}
	if (len == 0 || len > 127) {
		snprintf(reason, reason_size,
		         "give a Redis user name of 1 to 127 bytes without spaces or control "
		         "characters");
		return PRESENCE_ERR_INVAL;
	}
	copy = presence_text_dup(value, len);
	if (copy == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	cfg->cluster_username = copy;
	return PRESENCE_OK;
}

/* A Redis URL (cluster.h says which). */
static enum presence_err config_cluster_url(struct presence_config *cfg, const char *value,
                                            char *reason, size_t reason_size)
{
	struct presence_cluster_endpoint endpoint;
	char *copy;

	if (presence_cluster_endpoint_parse(value, &endpoint, reason, reason_size) != PRESENCE_OK) {
		return PRESENCE_ERR_INVAL;
	}
	copy = presence_text_dup(value, strlen(value));
	if (copy == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	cfg->cluster_url = copy;
	return PRESENCE_OK;
}

/* 1 to 64 characters of A-Z a-z 0-9 . _ - */
static enum presence_err config_broker_id(struct presence_config *cfg, const char *value,
                                          char *reason, size_t reason_size)
{
	char *copy;

	if (!presence_cluster_broker_id_valid(value)) {
		snprintf(reason, reason_size, "use 1 to 64 characters of A-Z a-z 0-9 . _ -");
		return PRESENCE_ERR_INVAL;
	}
	copy = presence_text_dup(value, strlen(value));
	if (copy == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	cfg->broker_id = copy;
	return PRESENCE_OK;
}

/* Milliseconds from 100 to 60000. */
static enum presence_err config_cluster_heartbeat_ms(struct presence_config *cfg, const char *value,
                                                     char *reason, size_t reason_size)
{
	if (!config_parse_size(value, 100, 60000, &cfg->cluster_heartbeat_ms)) {
		snprintf(reason, reason_size, "use a number of milliseconds from 100 to 60000");
		return PRESENCE_ERR_INVAL;
	}
	return PRESENCE_OK;
}

/* Milliseconds up to 600000; 0 for the default (checked against the heartbeat later). */
static enum presence_err config_cluster_lease_ms(struct presence_config *cfg, const char *value,
                                                 char *reason, size_t reason_size)
{
	if (!config_parse_size(value, 0, 600000, &cfg->cluster_lease_ms)) {
		snprintf(reason, reason_size,
		         "use a number of milliseconds up to 600000 (0: 2 x heartbeat + 500)");
		return PRESENCE_ERR_INVAL;
	}
	return PRESENCE_OK;
}

/* Returns true for the blanks trimmed around each ignore_users name. */
static bool config_is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Frees a list of count names and the list itself. */
static void config_free_names(char **names, size_t count)
{
	size_t i;

	for (i = 0; i < count; i++) {
		free(names[i]);
	}
	free(names);
}

/*
 * Finds the next name in a comma-separated list: stores its start, with leading spaces and
 * tabs skipped, in *name and its length, with trailing ones dropped, in *len, and moves *p past
 * the comma that ends it (or onto the terminating NUL for the last name).
 */
static void config_next_name(const char **p, const char **name, size_t *len)
{
	const char *first = *p;
	const char *end = strchr(first, ',');
	const char *last;

	if (end == NULL) {
		end = first + strlen(first);
	}
	last = end;
	while (first < last && config_is_blank(*first)) {
		first++;
	}
	while (last > first && config_is_blank(last[-1])) {
		last--;
	}
	*name = first;
	*len = (size_t)(last - first);
	*p = *end == ',' ? end + 1 : end;
}

/*
 * Splits value at commas into a list of names, each with surrounding spaces and tabs trimmed.
 * Every name must be non-empty and valid UTF-8 (a name that is not could never match a user).
 * The whole value is checked before anything is allocated, so an invalid value costs no
 * allocation and an allocation failure leaves nothing behind.
 */
static enum presence_err config_names(char ***out, size_t *out_count, const char *value,
                                      char *reason, size_t reason_size)
{
	const char *p;
	const char *name;
	char **names;
	size_t count = 1;
	size_t len;
	size_t i;

	for (p = value; *p != '\0'; p++) {
		if (*p == ',') {
			count++;
		}
	}
	for (p = value, i = 0; i < count; i++) {
		config_next_name(&p, &name, &len);
		if (len == 0) {
			snprintf(reason, reason_size,
			         "names must not be empty; give a comma-separated list such as "
			         "\"alice, bob\"");
			return PRESENCE_ERR_INVAL;
		}
		if (!presence_utf8_valid(name, len)) {
			snprintf(reason, reason_size, "names must be valid UTF-8");
			return PRESENCE_ERR_INVAL;
		}
	}

	names = calloc(count, sizeof(*names));
	if (names == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	for (p = value, i = 0; i < count; i++) {
		config_next_name(&p, &name, &len);
		names[i] = presence_text_dup(name, len);
		if (names[i] == NULL) {
			config_free_names(names, i);
			return PRESENCE_ERR_NOMEM;
		}
	}
	*out = names;
	*out_count = count;
	return PRESENCE_OK;
}

static enum presence_err config_ignore_users(struct presence_config *cfg, const char *value,
                                             char *reason, size_t reason_size)
{
	return config_names(&cfg->ignore_users, &cfg->ignore_users_count, value, reason,
	                    reason_size);
}

static enum presence_err config_see_everyone(struct presence_config *cfg, const char *value,
                                             char *reason, size_t reason_size)
{
	return config_names(&cfg->see_everyone, &cfg->see_everyone_count, value, reason,
	                    reason_size);
}

static enum presence_err config_visibility(struct presence_config *cfg, const char *value,
                                           char *reason, size_t reason_size)
{
	if (strcmp(value, "everyone") == 0) {
		cfg->visibility_group = false;
	} else if (strcmp(value, "group") == 0) {
		cfg->visibility_group = true;
	} else {
		snprintf(reason, reason_size, "use everyone or group");
		return PRESENCE_ERR_INVAL;
	}
	return PRESENCE_OK;
}

static enum presence_err config_groups_file(struct presence_config *cfg, const char *value,
                                            char *reason, size_t reason_size)
{
	return config_file(&cfg->groups_file, value, "/etc/mosquitto/presence-groups", reason,
	                   reason_size);
}

static enum presence_err config_group_from_username(struct presence_config *cfg, const char *value,
                                                    char *reason, size_t reason_size)
{
	size_t len = strlen(value);

	if (len == 0 || len > GROUP_SEPARATOR_MAX || !presence_utf8_valid(value, len)) {
		snprintf(reason, reason_size,
		         "give the separator that ends the group part of a username: 1 to %u "
		         "bytes of UTF-8, such as /",
		         GROUP_SEPARATOR_MAX);
		return PRESENCE_ERR_INVAL;
	}
	cfg->group_separator = presence_text_dup(value, len);
	return cfg->group_separator != NULL ? PRESENCE_OK : PRESENCE_ERR_NOMEM;
}

/* Every option the plugin knows, in the order messages and describe list them. */
static const struct option_spec option_table[] = {
    {"topic_prefix", config_topic_prefix, "presence"},
    {"identity", config_identity, "username"},
    {"ignore_users", config_ignore_users, NULL},
    {"auth", config_auth, "defer"},
    {"acl", config_acl, "defer"},
    {"max_state_bytes", config_max_state_bytes, "8192"},
    {"max_keys", config_max_keys, "64"},
    {"max_state_depth", config_max_state_depth, "32"},
    {"max_query_users", config_max_query_users, "1000"},
    {"max_query_reply_bytes", config_max_query_reply_bytes, "65536"},
    {"metrics_interval", config_metrics_interval, "10"},
    {"offline_delay", config_offline_delay, "0"},
    {"keep_state", config_keep_state, "false"},
    {"forget_after", config_forget_after, "2592000"},
    {"max_users", config_max_users, "1000000"},
    {"max_writes_per_second", config_max_writes_per_second, "10"},
    {"max_write_burst", config_max_write_burst, "100"},
    {"state_file", config_state_file, NULL},
    {"cluster_url", config_cluster_url, NULL},
    {"broker_id", config_broker_id, NULL},
    {"cluster_heartbeat_ms", config_cluster_heartbeat_ms, "1000"},
    {"cluster_lease_ms", config_cluster_lease_ms, "0"},
    {"cluster_username", config_cluster_username, NULL},
    {"cluster_password_file", config_cluster_password_file, NULL},
    {"cluster_tls_cafile", config_cluster_tls_cafile, NULL},
    {"cluster_tls_certfile", config_cluster_tls_certfile, NULL},
    {"cluster_tls_keyfile", config_cluster_tls_keyfile, NULL},
    {"cluster_wake_signal", config_cluster_wake_signal, "false"},
    {"visibility", config_visibility, "everyone"},
    {"groups_file", config_groups_file, NULL},
    {"group_from_username", config_group_from_username, NULL},
    {"see_everyone", config_see_everyone, NULL},
};

#define OPTION_COUNT (sizeof(option_table) / sizeof(option_table[0]))

/* Returns the index of the option called name in option_table, or OPTION_COUNT if none. */
static size_t config_find_option(const char *name)
{
	size_t i;

	for (i = 0; i < OPTION_COUNT; i++) {
		if (strcmp(option_table[i].name, name) == 0) {
			break;
		}
	}
	return i;
}

/* Writes "unknown option plugin_opt_<key> (known options: a, b, ...)" into err. */
static void config_unknown_message(const char *key, char *err, size_t err_size)
{
	size_t len = 0;
	size_t i;

	config_append(err, err_size, &len,
	              "unknown option " OPTION_PREFIX "%s (known options: ", key);
	for (i = 0; i < OPTION_COUNT; i++) {
		config_append(err, err_size, &len, "%s%s", i > 0 ? ", " : "", option_table[i].name);
	}
	config_append(err, err_size, &len, ")");
}

/* Parses one option with its table row, writing a message into err when it fails. */
static enum presence_err config_apply(struct presence_config *cfg, const struct option_spec *spec,
                                      const char *value, char *err, size_t err_size)
{
	char reason[REASON_SIZE] = "";
	enum presence_err rc;
	size_t quote_len;

	rc = spec->parse(cfg, value, reason, sizeof(reason));
	if (rc == PRESENCE_ERR_NOMEM) {
		snprintf(err, err_size, OPTION_PREFIX "%s: out of memory", spec->name);
	} else if (rc != PRESENCE_OK) {
		quote_len = presence_text_quote_len(value, strlen(value));
		snprintf(err, err_size, OPTION_PREFIX "%s: \"%.*s%s\" is not valid; %s", spec->name,
		         (int)quote_len, value, value[quote_len] != '\0' ? "..." : "", reason);
	}
	return rc;
}

/* The cluster's login and TLS options, together with the URL. False with a message in err
 * when they do not fit. */
static bool config_cluster_consistent(const struct presence_config *cfg, char *err, size_t err_size)
{
	struct presence_cluster_endpoint ep = {0};
	const char *tls_option = cfg->cluster_tls_cafile != NULL     ? "cluster_tls_cafile"
	                         : cfg->cluster_tls_certfile != NULL ? "cluster_tls_certfile"
	                         : cfg->cluster_tls_keyfile != NULL  ? "cluster_tls_keyfile"
	                                                             : NULL;
	char reason[8];
	bool with_password;

	if (cfg->cluster_url == NULL) {
		const char *option = cfg->cluster_username != NULL        ? "cluster_username"
		                     : cfg->cluster_password_file != NULL ? "cluster_password_file"
		                                                          : tls_option;

		if (option != NULL) {
			snprintf(err, err_size,
			         OPTION_PREFIX "%s needs " OPTION_PREFIX
			                       "cluster_url (cluster mode)",
			         option);
			return false;
		}
		return true;
	}
	/* (Parsed when it was given.) */
	(void)presence_cluster_endpoint_parse(cfg->cluster_url, &ep, reason, sizeof(reason));
	with_password = ep.password[0] != '\0' || cfg->cluster_password_file != NULL;
	if (ep.user[0] != '\0' && cfg->cluster_username != NULL) {
		snprintf(err, err_size,
		         OPTION_PREFIX "cluster_username and the user name in " OPTION_PREFIX
		                       "cluster_url: give the user name once");
	} else if (ep.password[0] != '\0' && cfg->cluster_password_file != NULL) {
		snprintf(err, err_size,
		         OPTION_PREFIX "cluster_password_file and the password in " OPTION_PREFIX
		                       "cluster_url: give the password once (better in the file, "
		                       "which only the broker may read)");
	} else if ((ep.user[0] != '\0' || cfg->cluster_username != NULL) && !with_password) {
		snprintf(err, err_size,
		         "a Redis user name needs a password: set " OPTION_PREFIX
		         "cluster_password_file");
	} else if (tls_option != NULL && !ep.tls) {
		snprintf(err, err_size,
		         OPTION_PREFIX "%s needs a rediss:// " OPTION_PREFIX "cluster_url (TLS)",
		         tls_option);
	} else if ((cfg->cluster_tls_certfile != NULL) != (cfg->cluster_tls_keyfile != NULL)) {
		snprintf(err, err_size,
		         OPTION_PREFIX "cluster_tls_certfile and " OPTION_PREFIX
		                       "cluster_tls_keyfile go together: give both or neither");
	} else {
		memset(&ep, 0, sizeof(ep));
		return true;
	}
	memset(&ep, 0, sizeof(ep));
	return false;
}

enum presence_err presence_config_parse(struct presence_config *cfg,
                                        const struct presence_option *opts, size_t count, char *err,
                                        size_t err_size)
{
	struct presence_config parsed = {0};
	bool given[OPTION_COUNT] = {false};
	char scratch[1];
	enum presence_err rc = PRESENCE_OK;
	size_t i;

	/* With nowhere to write, messages go to a scratch byte so snprintf stays simple. */
	if (err == NULL || err_size == 0) {
		err = scratch;
		err_size = sizeof(scratch);
	}
	err[0] = '\0';

	for (i = 0; i < count; i++) {
		const char *key = opts[i].key != NULL ? opts[i].key : "";
		const char *value = opts[i].value != NULL ? opts[i].value : "";
		size_t row = config_find_option(key);

		if (row == OPTION_COUNT) {
			config_unknown_message(key, err, err_size);
			rc = PRESENCE_ERR_INVAL;
			goto fail;
		}
		if (given[row]) {
			snprintf(err, err_size,
			         OPTION_PREFIX "%s is given more than once; give it once", key);
			rc = PRESENCE_ERR_INVAL;
			goto fail;
		}
		given[row] = true;
		rc = config_apply(&parsed, &option_table[row], value, err, err_size);
		if (rc != PRESENCE_OK) {
			goto fail;
		}
	}

	for (i = 0; i < OPTION_COUNT; i++) {
		if (given[i] || option_table[i].default_value == NULL) {
			continue;
		}
		rc = config_apply(&parsed, &option_table[i], option_table[i].default_value, err,
		                  err_size);
		if (rc != PRESENCE_OK) {
			goto fail;
		}
	}

	/* What the options mean together. */
	if (parsed.cluster_url != NULL && parsed.broker_id == NULL) {
		snprintf(err, err_size,
		         OPTION_PREFIX "cluster_url needs " OPTION_PREFIX "broker_id: give every "
		                       "broker of the cluster its own stable id");
		rc = PRESENCE_ERR_INVAL;
		goto fail;
	}
	if (parsed.visibility_group && parsed.groups_file == NULL &&
	    parsed.group_separator == NULL) {
		snprintf(err, err_size,
		         OPTION_PREFIX "visibility group needs groups: give " OPTION_PREFIX
		                       "groups_file, " OPTION_PREFIX "group_from_username or both");
		rc = PRESENCE_ERR_INVAL;
		goto fail;
	}
	if (!config_cluster_consistent(&parsed, err, err_size)) {
		rc = PRESENCE_ERR_INVAL;
		goto fail;
	}
	if (parsed.cluster_lease_ms == 0) {
		parsed.cluster_lease_ms = 2 * parsed.cluster_heartbeat_ms + 500;
	} else if (parsed.cluster_lease_ms < 2 * parsed.cluster_heartbeat_ms) {
		snprintf(err, err_size,
		         OPTION_PREFIX
		         "cluster_lease_ms is %zu; it must be at least twice " OPTION_PREFIX
		         "cluster_heartbeat_ms (%zu), or a broker that "
		         "misses one heartbeat would be declared dead",
		         parsed.cluster_lease_ms, parsed.cluster_heartbeat_ms);
		rc = PRESENCE_ERR_INVAL;
		goto fail;
	}

	*cfg = parsed;
	return PRESENCE_OK;

fail:
	presence_config_free(&parsed);
	memset(cfg, 0, sizeof(*cfg));
	return rc;
}

void presence_config_free(struct presence_config *cfg)
{
	config_free_names(cfg->ignore_users, cfg->ignore_users_count);
	config_free_names(cfg->see_everyone, cfg->see_everyone_count);
	free(cfg->groups_file);
	free(cfg->group_separator);
	free(cfg->topic_prefix);
	free(cfg->state_file);
	free(cfg->cluster_url);
	free(cfg->broker_id);
	free(cfg->cluster_username);
	free(cfg->cluster_password_file);
	free(cfg->cluster_tls_cafile);
	free(cfg->cluster_tls_certfile);
	free(cfg->cluster_tls_keyfile);
	memset(cfg, 0, sizeof(*cfg));
}

bool presence_config_ignores(const struct presence_config *cfg, const char *user)
{
	size_t i;

	if (user == NULL) {
		return false;
	}
	for (i = 0; i < cfg->ignore_users_count; i++) {
		if (strcmp(cfg->ignore_users[i], user) == 0) {
			return true;
		}
	}
	return false;
}

int presence_config_describe(const struct presence_config *cfg, char *buf, size_t size)
{
	size_t len = 0;
	size_t i;

	if (buf == NULL) {
		size = 0;
	} else if (size > 0) {
		buf[0] = '\0';
	}
	config_append(buf, size, &len,
	              "topic_prefix=%s identity=%s auth=%s acl=%s max_state_bytes=%zu max_keys=%zu "
	              "max_state_depth=%zu max_query_users=%zu max_query_reply_bytes=%zu "
	              "metrics_interval=%zu offline_delay=%u keep_state=%s forget_after=%zu "
	              "max_users=%zu max_writes_per_second=%zu max_write_burst=%zu state_file=%s "
	              "ignore_users=",
	              cfg->topic_prefix != NULL ? cfg->topic_prefix : "",
	              cfg->identity == PRESENCE_IDENTITY_CLIENTID ? "clientid" : "username",
	              cfg->auth == PRESENCE_MODE_ALLOW ? "allow" : "defer",
	              cfg->acl == PRESENCE_MODE_ALLOW ? "allow" : "defer", cfg->max_state_bytes,
	              cfg->max_keys, cfg->max_state_depth, cfg->max_query_users,
	              cfg->max_query_reply_bytes, cfg->metrics_interval, cfg->offline_delay,
	              cfg->keep_state ? "true" : "false", cfg->forget_after, cfg->max_users,
	              cfg->max_writes_per_second, cfg->max_write_burst,
	              cfg->state_file != NULL ? cfg->state_file : "(none)");
	if (cfg->ignore_users_count == 0) {
		config_append(buf, size, &len, "(none)");
	}
	for (i = 0; i < cfg->ignore_users_count; i++) {
		config_append(buf, size, &len, "%s%s", i > 0 ? "," : "", cfg->ignore_users[i]);
	}
	/* Only when not the defaults, so that the line stays what it was for everyone else. */
	if (cfg->visibility_group || cfg->groups_file != NULL || cfg->group_separator != NULL ||
	    cfg->see_everyone_count > 0) {
		config_append(buf, size, &len,
		              " visibility=%s groups_file=%s group_from_username=%s "
		              "see_everyone=",
		              cfg->visibility_group ? "group" : "everyone",
		              cfg->groups_file != NULL ? cfg->groups_file : "(none)",
		              cfg->group_separator != NULL ? cfg->group_separator : "(none)");
		if (cfg->see_everyone_count == 0) {
			config_append(buf, size, &len, "(none)");
		}
		for (i = 0; i < cfg->see_everyone_count; i++) {
			config_append(buf, size, &len, "%s%s", i > 0 ? "," : "",
			              cfg->see_everyone[i]);
		}
	}
	if (cfg->cluster_url != NULL) {
		struct presence_cluster_endpoint ep;
		char url[512], reason[8];

		/* Never the password. */
		(void)presence_cluster_endpoint_parse(cfg->cluster_url, &ep, reason,
		                                      sizeof(reason));
		presence_cluster_endpoint_describe(&ep, url, sizeof(url));
		memset(&ep, 0, sizeof(ep));
		config_append(
		    buf, size, &len,
		    " cluster_url=%s broker_id=%s cluster_heartbeat_ms=%zu "
		    "cluster_lease_ms=%zu cluster_username=%s cluster_password_file=%s "
		    "cluster_tls_cafile=%s cluster_tls_certfile=%s cluster_tls_keyfile=%s "
		    "cluster_wake_signal=%s",
		    url, cfg->broker_id != NULL ? cfg->broker_id : "", cfg->cluster_heartbeat_ms,
		    cfg->cluster_lease_ms,
		    cfg->cluster_username != NULL ? cfg->cluster_username : "(none)",
		    cfg->cluster_password_file != NULL ? cfg->cluster_password_file : "(none)",
		    cfg->cluster_tls_cafile != NULL ? cfg->cluster_tls_cafile : "(none)",
		    cfg->cluster_tls_certfile != NULL ? cfg->cluster_tls_certfile : "(none)",
		    cfg->cluster_tls_keyfile != NULL ? cfg->cluster_tls_keyfile : "(none)",
		    cfg->cluster_wake_signal ? "true" : "false");
	}
	return len > INT_MAX ? INT_MAX : (int)len;
}
