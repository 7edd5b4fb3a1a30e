/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The plugin's broker-independent rules; see policy.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "utf8.h"

/* Largest MQTT topic, in bytes. */
#define MQTT_TOPIC_MAX 65535

const char *presence_policy_tracked_name(const struct presence_config *cfg, const char *name)
{
	size_t len;

	if (name == NULL || name[0] == '\0') {
		return NULL;
	}
	len = strlen(name);
	if (!presence_utf8_valid(name, len) || cfg->topic_prefix_len + 1 +
	                                               presence_topic_encoded_len(name) +
	                                               PRESENCE_POLICY_LONGEST_SUFFIX_LEN >
	                                           MQTT_TOPIC_MAX) {
		return NULL;
	}
	if (presence_config_ignores(cfg, name)) {
		return NULL;
	}
	return name;
}

bool presence_policy_owns_level(const struct presence_registry *reg,
                                const struct presence_config *cfg, const void *client,
                                const char *identity, const char *level, size_t len)
{
	struct presence_user *user;
	const char *name;

	if (!presence_registry_session_find(reg, client, &user)) {
		return false;
	}
	if (user != NULL) {
		return presence_user_level_len(user) == len &&
		       memcmp(presence_user_level(user), level, len) == 0;
	}
	name = presence_policy_tracked_name(cfg, identity);
	return name != NULL && presence_topic_level_is_user(level, len, name);
}

enum presence_verdict presence_policy_access(const struct presence_config *cfg,
                                             const struct presence_topic *topic,
                                             enum presence_access access, bool owns,
                                             const char **why)
{
	enum presence_verdict pass =
	    cfg->acl == PRESENCE_MODE_ALLOW ? PRESENCE_VERDICT_ALLOW : PRESENCE_VERDICT_PASS;
	bool state = topic->kind == PRESENCE_TOPIC_STATE ||
	             topic->kind == PRESENCE_TOPIC_STATE_KEY ||
	             topic->kind == PRESENCE_TOPIC_PRIVACY;

	if (topic->kind == PRESENCE_TOPIC_OUTSIDE) {
		return pass;
	}
	switch (access) {
	case PRESENCE_ACCESS_WRITE:
		if (state && owns) {
			return PRESENCE_VERDICT_ALLOW;
		}
		if (why != NULL) {
			*why = topic->kind == PRESENCE_TOPIC_PRIVACY
			           ? "only the user's own sessions write its privacy"
			       : state ? "only the user's own sessions write its state"
			               : "only the plugin writes there";
		}
		return PRESENCE_VERDICT_DENY;
	case PRESENCE_ACCESS_READ:
		if (state) {
			return PRESENCE_VERDICT_DENY;
		}
		if (topic->kind == PRESENCE_TOPIC_ERROR) {
			return owns ? PRESENCE_VERDICT_ALLOW : PRESENCE_VERDICT_DENY;
		}
		return pass;
	case PRESENCE_ACCESS_OTHER:
		break;
	}
	return pass;
}

const char *presence_policy_response_topic_refusal(const struct presence_config *cfg,
                                                   const char *topic)
{
	size_t len = cfg->topic_prefix_len;

	if (topic[0] == '$') {
		return "starts with '$'";
	}
	if (strncmp(topic, cfg->topic_prefix, len) == 0 && topic[len] == '/') {
		return "is inside the plugin's namespace";
	}
	return NULL;
}

bool presence_policy_takeover_will(const void *client, const char *id, const void *connecting,
                                   const char *connecting_id)
{
	return connecting != NULL && connecting != client && id != NULL && connecting_id != NULL &&
	       strcmp(id, connecting_id) == 0;
}

bool presence_policy_save_due(int64_t now_ms, int64_t last_started_ms, bool held, bool unsaved,
                              bool last_failed)
{
	if (!held && !unsaved) {
		return false;
	}
	if (now_ms - last_started_ms < PRESENCE_POLICY_SAVE_INTERVAL_MS && (!held || last_failed)) {
		return false;
	}
	return true;
}

enum presence_err presence_policy_write_changes(const struct presence_state *state,
                                                const struct presence_state_limits *limits,
                                                bool merge, const char *key, size_t key_len,
                                                const void *payload, size_t payload_len,
                                                bool *changed, char *reason)
{
	struct presence_state scratch;
	enum presence_err err;

	*changed = false;
	presence_state_init(&scratch);
	err = presence_state_adopt(&scratch, presence_state_json(state));
	if (err == PRESENCE_OK) {
		err = merge ? presence_state_merge(&scratch, limits, payload, payload_len, changed,
		                                   reason)
		            : presence_state_set_key(&scratch, limits, key, key_len, payload,
		                                     payload_len, changed, reason);
	} else {
		/* The state is valid: only memory can be short (cJSON reports that as INVAL). */
		snprintf(reason, PRESENCE_STATE_REASON_SIZE, "out of memory");
		err = PRESENCE_ERR_NOMEM;
	}
	presence_state_release(&scratch);
	return err;
}
