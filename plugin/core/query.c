/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Queries (see query.h for the request and response format).
 *
 * Parsing turns the request into a list of commands, each either "answer these names" or "answer
 * this error", and checks everything that can be wrong before anything is looked up; the
 * strings the commands point to stay owned by the parsed request. Answering then only looks
 * names up in the registry and builds the response with cJSON, so the two halves are tested on
 * their own.
 *
 * The whole payload must be strict UTF-8 (no NUL byte) before it is parsed: cJSON passes raw
 * bytes through, and every string of the request that is echoed (names, command names,
 * correlation data) ends up in a message marked as UTF-8 JSON.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "document.h"
#include "query.h"
#include "state.h"
#include "utf8.h"

#define ERROR_NOT_UTF8 "Payload not valid UTF-8"
#define ERROR_NOT_JSON "Payload not valid JSON"
#define ERROR_NUL_ESCAPE "Payload has a \\u escape that decodes to NUL"
#define ERROR_COMMANDS "Invalid/missing commands"
#define ERROR_NOT_OBJECT "Command not an object"
#define ERROR_MISSING_COMMAND "Missing command"
#define ERROR_CORRELATION "Invalid correlationData data type"
#define ERROR_UNKNOWN_COMMAND "Unknown command"
#define ERROR_USERNAMES "Invalid/missing usernames"

/*
 * Parses the len bytes at payload as exactly one JSON value. cJSON is given a NUL-terminated
 * copy and must reach its NUL with only white space after the value, so that trailing bytes
 * ("{}x", "{} {}") make the payload invalid. Returns the value (the caller deletes it), or NULL
 * when the payload is not JSON or cJSON ran out of memory; *nomem is set when the copy itself
 * could not be made.
 */
static cJSON *parse_whole(const void *payload, size_t len, bool *nomem)
{
	const char *end = NULL;
	char *text = malloc(len + 1);
	cJSON *value;

	*nomem = text == NULL;
	if (text == NULL) {
		return NULL;
	}
	if (len > 0) {
		memcpy(text, payload, len);
	}
	text[len] = '\0';
	value = cJSON_ParseWithLengthOpts(text, len + 1, &end, true);
	if (value != NULL && end != text + len) {
		cJSON_Delete(value);
		value = NULL;
	}
	free(text);
	return value;
}

/* Makes q a query with the single error command error (for a request that cannot be read).
 * Returns PRESENCE_OK or PRESENCE_ERR_NOMEM. */
static enum presence_err single_error(struct presence_query *q, const char *error)
{
	q->commands = calloc(1, sizeof(*q->commands));
	if (q->commands == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	q->count = 1;
	q->commands[0].kind = PRESENCE_QUERY_ERROR;
	q->commands[0].command = PRESENCE_QUERY_UNKNOWN_COMMAND;
	q->commands[0].error = error;
	return PRESENCE_OK;
}

/* Marks cmd as an error answered with error. */
static void command_error(struct presence_query_command *cmd, const char *error)
{
	cmd->kind = PRESENCE_QUERY_ERROR;
	cmd->error = error;
	cmd->usernames = NULL;
	cmd->username_count = 0;
}

/*
 * Reads one element of the "commands" array into cmd, counting its names against the request's
 * budget of max_users names. Cannot fail: every problem becomes an error command.
 */
static void parse_command(struct presence_query *q, const cJSON *item, size_t max_users,
                          struct presence_query_command *cmd)
{
	const cJSON *name, *correlation, *usernames, *user;
	size_t count = 0;

	cmd->command = PRESENCE_QUERY_UNKNOWN_COMMAND;
	if (!cJSON_IsObject(item)) {
		command_error(cmd, ERROR_NOT_OBJECT);
		return;
	}
	name = cJSON_GetObjectItemCaseSensitive(item, "command");
	correlation = cJSON_GetObjectItemCaseSensitive(item, "correlationData");
	if (cJSON_IsString(name)) {
		cmd->command = name->valuestring;
	}
	if (correlation != NULL) {
		if (!cJSON_IsString(correlation)) {
			command_error(cmd, ERROR_CORRELATION);
			return;
		}
		cmd->correlation_data = correlation->valuestring;
	}
	if (!cJSON_IsString(name)) {
		command_error(cmd, ERROR_MISSING_COMMAND);
		return;
	}
	if (strcasecmp(name->valuestring, PRESENCE_QUERY_GET_PRESENCE) != 0) {
		command_error(cmd, ERROR_UNKNOWN_COMMAND);
		return;
	}
	cmd->command = PRESENCE_QUERY_GET_PRESENCE;
	usernames = cJSON_GetObjectItemCaseSensitive(item, "usernames");
	if (!cJSON_IsArray(usernames)) {
		command_error(cmd, ERROR_USERNAMES);
		return;
	}
	cJSON_ArrayForEach(user, usernames)
	{
		if (!cJSON_IsString(user)) {
			command_error(cmd, ERROR_USERNAMES);
			return;
		}
		count++;
	}
	if (count > max_users - q->username_total) {
		command_error(cmd, q->too_many);
		return;
	}
	q->username_total += count;
	cmd->kind = PRESENCE_QUERY_PRESENCES;
	cmd->usernames = usernames;
	cmd->username_count = count;
}

enum presence_err presence_query_parse(struct presence_query *q, const void *payload, size_t len,
                                       size_t max_users)
{
	const cJSON *commands, *item;
	enum presence_err err;
	size_t count = 0;
	size_t i = 0;
	bool nomem;

	memset(q, 0, sizeof(*q));
	snprintf(q->too_many, sizeof(q->too_many), "Too many usernames: at most %zu per request",
	         max_users);
	if (!presence_utf8_valid((const char *)payload, len)) {
		err = single_error(q, ERROR_NOT_UTF8);
		goto out;
	}
	q->request = parse_whole(payload, len, &nomem);
	if (nomem) {
		err = PRESENCE_ERR_NOMEM;
		goto out;
	}
	if (q->request == NULL) {
		err = single_error(q, ERROR_NOT_JSON);
		goto out;
	}
	if (presence__json_has_nul_escape((const char *)payload, len)) {
		err = single_error(q, ERROR_NUL_ESCAPE);
		goto out;
	}
	commands = cJSON_GetObjectItemCaseSensitive(q->request, "commands");
	if (!cJSON_IsObject(q->request) || !cJSON_IsArray(commands)) {
		err = single_error(q, ERROR_COMMANDS);
		goto out;
	}
	cJSON_ArrayForEach(item, commands)
	{
		count++;
	}
	err = PRESENCE_OK;
	if (count == 0) {
		goto out;
	}
	q->commands = calloc(count, sizeof(*q->commands));
	if (q->commands == NULL) {
		err = PRESENCE_ERR_NOMEM;
		goto out;
	}
	q->count = count;
	cJSON_ArrayForEach(item, commands)
	{
		parse_command(q, item, max_users, &q->commands[i++]);
	}
out:
	if (err != PRESENCE_OK) {
		presence_query_free(q);
	}
	return err;
}

void presence_query_free(struct presence_query *q)
{
	cJSON_Delete(q->request);
	free(q->commands);
	memset(q, 0, sizeof(*q));
}

/* Returns the answer for one name: the user's last published document marked known, or the
 * unknown shape. NULL when allocation fails. */
static cJSON *presence_of(const struct presence_registry *reg, const char *name)
{
	const struct presence_user *user = presence_registry_user_find(reg, name);
	struct presence_document doc;

	if (user != NULL && presence_user_published(user, &doc)) {
		return presence_document_build(&doc, true);
	}
	return presence_document_build_unknown(name);
}

/* Adds item to array, deleting it when that fails. Returns false when item is NULL or could not
 * be added. */
static bool add_to_array(cJSON *array, cJSON *item)
{
	if (item == NULL) {
		return false;
	}
	if (!cJSON_AddItemToArray(array, item)) {
		cJSON_Delete(item);
		return false;
	}
	return true;
}

/* Builds the response entry for cmd, or returns NULL when allocation fails. */
static cJSON *response_of(const struct presence_query_command *cmd,
                          const struct presence_registry *reg)
{
	cJSON *entry = cJSON_CreateObject();
	const cJSON *user;
	cJSON *presences;

	if (entry == NULL || cJSON_AddStringToObject(entry, "command", cmd->command) == NULL) {
		goto out_delete_entry;
	}
	if (cmd->kind == PRESENCE_QUERY_ERROR) {
		if (cJSON_AddStringToObject(entry, "error", cmd->error) == NULL) {
			goto out_delete_entry;
		}
	} else {
		presences = cJSON_AddArrayToObject(entry, "presences");
		if (presences == NULL) {
			goto out_delete_entry;
		}
		cJSON_ArrayForEach(user, cmd->usernames)
		{
			if (!add_to_array(presences, presence_of(reg, user->valuestring))) {
				goto out_delete_entry;
			}
		}
	}
	if (cmd->correlation_data != NULL &&
	    cJSON_AddStringToObject(entry, "correlationData", cmd->correlation_data) == NULL) {
		goto out_delete_entry;
	}
	return entry;

out_delete_entry:
	cJSON_Delete(entry);
	return NULL;
}

char *presence_query_respond(const struct presence_query *q, const struct presence_registry *reg,
                             size_t *len)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *responses;
	char *text = NULL;
	size_t i;

	*len = 0;
	if (root == NULL) {
		return NULL;
	}
	responses = cJSON_AddArrayToObject(root, "responses");
	if (responses == NULL) {
		goto out_delete_root;
	}
	for (i = 0; i < q->count; i++) {
		if (!add_to_array(responses, response_of(&q->commands[i], reg))) {
			goto out_delete_root;
		}
	}
	text = cJSON_PrintUnformatted(root);
	if (text != NULL) {
		*len = strlen(text);
	}
out_delete_root:
	cJSON_Delete(root);
	return text;
}

void presence_query_response_free(char *text)
{
	cJSON_free(text);
}
