/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * libFuzzer harness: presence_query_parse + presence_query_respond against a fixed registry
 * (alice online with a state, bob offline, carol never published).
 * Input: byte 0 sets the byte budget (1024 + 61 x byte), byte 1 the name budget (1 + byte),
 * the rest is the request payload.
 * Invariants: the response is JSON with one entry per command, in order; no entry answers a
 * name twice; the response stays within the byte budget, except for the error entries, which
 * only echo what the request held (so at most 6 bytes per request byte, for escapes, and a
 * fixed size per command); with no error entry it is within the budget exactly.
 */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "query.h"
#include "registry.h"
#include "state.h"
#include "testing.h"

static int64_t fixed_ms(void *arg)
{
	(void)arg;
	return 1764265200000;
}

static const struct presence_clock fixed_clock = {fixed_ms, fixed_ms, NULL};

/* Publishes every due document of reg. */
static void flush(struct presence_registry *reg)
{
	struct presence_document doc;
	struct presence_user *user;
	bool due;

	while ((user = presence_registry_dirty_next(reg)) != NULL) {
		FUZZ_CHECK(presence_registry_document_prepare(reg, user, 1000, &doc, &due) ==
		           PRESENCE_OK);
		if (due) {
			presence_registry_document_sent(reg, user);
		}
	}
	presence_registry_flush_done(reg);
}

static struct presence_registry *fixed_registry(void)
{
	static const char alice_state[] = "{\"status\":\"away\",\"n\":[1,{\"x\":\"\\u00e9\"}]}";
	static const struct presence_state_limits limits = {8192, 64, 32};
	static struct presence_registry *reg;
	struct presence_user *user;
	char reason[PRESENCE_STATE_REASON_SIZE];
	bool changed;

	if (reg != NULL) {
		return reg;
	}
	reg = presence_registry_new("presence");
	FUZZ_CHECK(reg != NULL);
	presence_registry_set_clock(reg, &fixed_clock);
	FUZZ_CHECK(presence_registry_session_pending(reg, (const void *)16) == PRESENCE_OK);
	FUZZ_CHECK(presence_registry_session_start(reg, (const void *)16, "alice") == PRESENCE_OK);
	FUZZ_CHECK(presence_registry_session_pending(reg, (const void *)32) == PRESENCE_OK);
	FUZZ_CHECK(presence_registry_session_start(reg, (const void *)32, "bob") == PRESENCE_OK);
	flush(reg);
	user = presence_registry_user_find(reg, "alice");
	FUZZ_CHECK(presence_state_merge(presence_user_state(user), &limits, alice_state,
	                                strlen(alice_state), &changed, reason) == PRESENCE_OK);
	presence_registry_user_changed(reg, user);
	presence_registry_session_gone(reg, (const void *)32);
	flush(reg);
	FUZZ_CHECK(presence_registry_user_get(reg, "carol", &user) == PRESENCE_OK);
	return reg;
}

/* Checks one response entry against its command. Returns true when it is an error entry. */
static bool check_entry(const cJSON *entry, const struct presence_query_command *cmd)
{
	const cJSON *command = cJSON_GetObjectItemCaseSensitive(entry, "command");
	const cJSON *presences = cJSON_GetObjectItemCaseSensitive(entry, "presences");
	const cJSON *error = cJSON_GetObjectItemCaseSensitive(entry, "error");
	const cJSON *a, *b;

	FUZZ_CHECK(cJSON_IsString(command) && strcmp(command->valuestring, cmd->command) == 0);
	FUZZ_CHECK((presences == NULL) != (error == NULL));
	if (error != NULL) {
		FUZZ_CHECK(cJSON_IsString(error));
		return true;
	}
	FUZZ_CHECK(cmd->kind == PRESENCE_QUERY_PRESENCES && cJSON_IsArray(presences));
	FUZZ_CHECK((size_t)cJSON_GetArraySize(presences) <= cmd->username_count);
	cJSON_ArrayForEach(a, presences)
	{
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(a, "username");

		FUZZ_CHECK(cJSON_IsString(name));
		for (b = a->next; b != NULL; b = b->next) {
			const cJSON *other = cJSON_GetObjectItemCaseSensitive(b, "username");

			FUZZ_CHECK(strcmp(name->valuestring, other->valuestring) != 0);
		}
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct presence_registry *reg = fixed_registry();
	struct presence_query q;
	size_t budget, max_users, len = 0, i;
	const cJSON *entry;
	cJSON *response, *responses;
	bool any_error = false;
	char *text;

	if (size < 2) {
		return 0;
	}
	budget = 1024 + 61 * (size_t)data[0];
	max_users = 1 + (size_t)data[1];
	data += 2;
	size -= 2;
	FUZZ_CHECK(presence_query_parse(&q, data, size, max_users) == PRESENCE_OK);
	FUZZ_CHECK(q.username_total <= max_users);
	text = presence_query_respond(&q, reg, NULL, budget, &len);
	FUZZ_CHECK(text != NULL && strlen(text) == len);
	response = cJSON_Parse(text);
	FUZZ_CHECK(response != NULL);
	responses = cJSON_GetObjectItemCaseSensitive(response, "responses");
	FUZZ_CHECK(cJSON_IsArray(responses) && (size_t)cJSON_GetArraySize(responses) == q.count);
	i = 0;
	cJSON_ArrayForEach(entry, responses)
	{
		any_error |= check_entry(entry, &q.commands[i]);
		i++;
	}
	FUZZ_CHECK(len <= budget + 6 * size + 160 * q.count);
	FUZZ_CHECK(any_error || len <= budget || q.count == 0);
	cJSON_Delete(response);
	presence_query_response_free(text);
	presence_query_free(&q);
	return 0;
}
