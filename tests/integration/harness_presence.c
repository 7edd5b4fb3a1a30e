/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/* Assertions about presence documents and the plugin's messages (see harness_presence.h). */
#include "harness_internal.h"

#include <stdlib.h>
#include <string.h>

cJSON *msg_json(const struct msg *m)
{
	cJSON *j = cJSON_ParseWithLength(m->payload, (size_t)m->payloadlen);

	if (!j)
		fail_msg("payload on %s is not JSON: %.*s", m->topic, m->payloadlen, m->payload);
	return j;
}

long expect_doc(struct client *c, const char *topic, const char *username, bool available,
                int sessions, const char *state_json)
{
	struct msg *m = client_wait_msg(c, HARNESS_DOC_TIMEOUT_MS);
	const cJSON *field;
	cJSON *doc;
	long seq;

	if (!m) {
		const char *tail = client_broker_exit_note(c);

		fail_msg("expected a presence document on %s (user %s, available %d, sessions %d), "
		         "got nothing within %d ms%s%s",
		         topic, username ? username : "?", available, sessions,
		         harness_scaled(HARNESS_DOC_TIMEOUT_MS, c->scale),
		         *tail ? "; the broker has exited:\n" : "", tail);
	}
	if (strcmp(m->topic, topic) != 0)
		fail_msg("expected a presence document on %s, got a message on %s: %.*s", topic,
		         m->topic, m->payloadlen, m->payload);
	doc = msg_json(m);
	if (!cJSON_IsObject(doc))
		fail_msg("document on %s is not an object: %.*s", topic, m->payloadlen, m->payload);
	field = cJSON_GetObjectItemCaseSensitive(doc, "username");
	if (username && (!cJSON_IsString(field) || strcmp(field->valuestring, username) != 0))
		fail_msg("document on %s: expected username \"%s\": %.*s", topic, username,
		         m->payloadlen, m->payload);
	field = cJSON_GetObjectItemCaseSensitive(doc, "available");
	if (!cJSON_IsBool(field) || (cJSON_IsTrue(field) != 0) != available)
		fail_msg("document on %s: expected available %s: %.*s", topic,
		         available ? "true" : "false", m->payloadlen, m->payload);
	field = cJSON_GetObjectItemCaseSensitive(doc, "sessions");
	if (sessions >= 0 && (!cJSON_IsNumber(field) || field->valuedouble != (double)sessions))
		fail_msg("document on %s: expected sessions %d: %.*s", topic, sessions,
		         m->payloadlen, m->payload);
	if (state_json) {
		cJSON *want = cJSON_Parse(state_json);

		if (!want)
			fail_msg("expect_doc: the expected state is not JSON: %s", state_json);
		field = cJSON_GetObjectItemCaseSensitive(doc, "state");
		if (!field || !cJSON_Compare(want, field, 1))
			fail_msg("document on %s: expected state %s: %.*s", topic, state_json,
			         m->payloadlen, m->payload);
		cJSON_Delete(want);
	}
	field = cJSON_GetObjectItemCaseSensitive(doc, "seq");
	if (!cJSON_IsNumber(field))
		fail_msg("document on %s has no numeric seq: %.*s", topic, m->payloadlen,
		         m->payload);
	seq = (long)field->valuedouble;
	cJSON_Delete(doc);
	msg_free(m);
	return seq;
}

/* Whether topic is a state-write topic of any user below presence/: P/U/state or
 * P/U/state/<key>. */
static bool is_state_topic(const char *topic)
{
	const char *user = strncmp(topic, "presence/", 9) == 0 ? topic + 9 : NULL;
	const char *rest = user ? strchr(user, '/') : NULL;

	return rest && (strcmp(rest, "/state") == 0 || strncmp(rest, "/state/", 7) == 0);
}

/* Whether topic is a rejection-notice topic: below presence/ and ending in /error. */
static bool is_error_topic(const char *topic)
{
	size_t len = strlen(topic);

	return strncmp(topic, "presence/", 9) == 0 && len > 6 &&
	       strcmp(topic + len - 6, "/error") == 0;
}

void expect_no_state_or_error_message(struct client *c)
{
	struct msg *m;

	if (!client_sync(c, HARNESS_CLIENT_TIMEOUT_MS))
		fail_msg("expect_no_state_or_error_message: the round trip through the broker did "
		         "not complete");
	while ((m = client_next_msg(c, 0)) != NULL) {
		if (is_state_topic(m->topic) || is_error_topic(m->topic))
			fail_msg("received %s: %.*s", m->topic, m->payloadlen, m->payload);
		msg_free(m);
	}
}
