/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Queries (see query.h for the request and response format).
 *
 * Parsing turns the request into a list of commands, each either "answer these names" or "answer
 * this error", and checks everything that can be wrong before anything is looked up; the
 * strings the commands point to stay owned by the parsed request. Answering then only looks
 * names up in the registry and writes the response as text, within its byte budget, with the
 * same escaping as cJSON's (presence__json_string), so the two halves are tested on their own.
 * Writing text rather than building a cJSON tree and printing it keeps what an answer holds in
 * memory to about its own size.
 *
 * The whole payload must be strict UTF-8 (no NUL byte) before it is parsed: cJSON passes raw
 * bytes through, and every string of the request that is echoed (names, command names,
 * correlation data) ends up in a message marked as UTF-8 JSON.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "document.h"
#include "query.h"
#include "state.h"
#include "text.h"
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
	char *text = presence_text_dup(payload, len);
	cJSON *value;

	*nomem = text == NULL;
	if (text == NULL) {
		return NULL;
	}
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

/* The length of the "]}" that closes a response. */
#define CLOSING_LEN 2

/* The response text as it is built: a buffer grown by doubling. */
struct reply {
	char *text;
	size_t len;
	size_t cap;
	/* Who the requester may see; NULL: everyone. */
	const struct presence_query_sight *sight;
};

/* Appends the n bytes at s. Returns false when memory runs out (the text is left as it was). */
static bool reply_append(struct reply *r, const char *s, size_t n)
{
	if (n > r->cap - r->len) {
		size_t cap = r->cap > 0 ? r->cap : 256;
		char *text;

		while (n > cap - r->len) {
			if (cap > SIZE_MAX / 2) {
				return false;
			}
			cap *= 2;
		}
		text = realloc(r->text, cap);
		if (text == NULL) {
			return false;
		}
		r->text = text;
		r->cap = cap;
	}
	memcpy(r->text + r->len, s, n);
	r->len += n;
	return true;
}

/* Appends s (NUL-terminated). */
static bool reply_append_str(struct reply *r, const char *s)
{
	return reply_append(r, s, strlen(s));
}

/* Appends s as a JSON string, escaped exactly as cJSON escapes it. */
static bool reply_append_json_string(struct reply *r, const char *s)
{
	char stack[PRESENCE__STRING_STACK_SIZE];
	char *text = presence__json_string(s, stack);
	bool ok;

	if (text == NULL) {
		return false;
	}
	ok = reply_append_str(r, text);
	if (text != stack) {
		free(text);
	}
	return ok;
}

/* Appends the answer for one name: the user's last published document marked known, or the
 * unknown shape. */
static bool reply_append_presence(struct reply *r, const struct presence_registry *reg,
                                  const char *name)
{
	const struct presence_user *user = presence_registry_user_find(reg, name);
	struct presence_document doc;
	cJSON *item;
	bool ok;

	/* A user the requester may not see is answered as one never seen. */
	if (user != NULL && r->sight != NULL && !r->sight->may_see(r->sight->arg, user)) {
		user = NULL;
	}
	if (user != NULL && presence_user_published(user, &doc)) {
		item = presence_document_build(&doc, true);
		ok = item != NULL && reply_append_str(r, item->valuestring);
		cJSON_Delete(item);
		return ok;
	}
	return reply_append_str(r, "{\"username\":") && reply_append_json_string(r, name) &&
	       reply_append_str(r, ",\"available\":false,\"known\":false}");
}

/* A requested name and where it stands in its command. */
struct asked {
	const char *name;
	size_t index;
};

/* Orders names by their text, then by position, so that the first of equal names sorts first. */
static int compare_asked(const void *a, const void *b)
{
	const struct asked *x = a;
	const struct asked *y = b;
	int c = strcmp(x->name, y->name);

	if (c != 0) {
		return c;
	}
	return x->index < y->index ? -1 : x->index > y->index;
}

/*
 * Returns which names of cmd to answer: a new array of cmd->username_count flags (free it),
 * true for the first time each distinct name is asked, or NULL when memory runs out. The names
 * are sorted to find the repeats, so this is O(n log n) however the request repeats them.
 */
static bool *first_asked(const struct presence_query_command *cmd)
{
	size_t n = cmd->username_count;
	struct asked *asked = calloc(n > 0 ? n : 1, sizeof(*asked));
	bool *first = calloc(n > 0 ? n : 1, sizeof(*first));
	const cJSON *user;
	size_t i = 0;

	if (asked == NULL || first == NULL) {
		free(first);
		first = NULL;
		goto out_free_asked;
	}
	cJSON_ArrayForEach(user, cmd->usernames)
	{
		asked[i].name = user->valuestring;
		asked[i].index = i;
		i++;
	}
	qsort(asked, n, sizeof(*asked), compare_asked);
	for (i = 0; i < n; i++) {
		first[asked[i].index] = i == 0 || strcmp(asked[i - 1].name, asked[i].name) != 0;
	}
out_free_asked:
	free(asked);
	return first;
}

/* Appends {"command":<command>, then ,"error":<error> when error is not NULL. */
static bool reply_append_entry_head(struct reply *r, const struct presence_query_command *cmd,
                                    const char *error)
{
	if (!reply_append_str(r, "{\"command\":") || !reply_append_json_string(r, cmd->command)) {
		return false;
	}
	return error == NULL ||
	       (reply_append_str(r, ",\"error\":") && reply_append_json_string(r, error));
}

/* Appends ,"correlationData":<data> when cmd has some, and the closing brace. */
static bool reply_append_entry_tail(struct reply *r, const struct presence_query_command *cmd)
{
	if (cmd->correlation_data != NULL &&
	    (!reply_append_str(r, ",\"correlationData\":") ||
	     !reply_append_json_string(r, cmd->correlation_data))) {
		return false;
	}
	return reply_append_str(r, "}");
}

/*
 * Appends the presences answer of cmd when the whole reply then still fits in max_bytes (with
 * room for the closing "]}"). Sets *fits to false, and leaves the text as it was, when it does
 * not. Returns false when memory runs out.
 */
static bool reply_append_presences(struct reply *r, const struct presence_query_command *cmd,
                                   const struct presence_registry *reg, size_t max_bytes,
                                   bool *fits)
{
	size_t start = r->len;
	const cJSON *user;
	bool *first = first_asked(cmd);
	bool any = false;
	bool ok = false;
	size_t i = 0;

	*fits = true;
	if (first == NULL || !reply_append_entry_head(r, cmd, NULL) ||
	    !reply_append_str(r, ",\"presences\":[")) {
		goto out;
	}
	cJSON_ArrayForEach(user, cmd->usernames)
	{
		if (first[i++]) {
			if ((any && !reply_append_str(r, ",")) ||
			    !reply_append_presence(r, reg, user->valuestring)) {
				goto out;
			}
			any = true;
		}
		/* Stop as soon as the budget is gone, so that the text never grows far beyond. */
		if (r->len + CLOSING_LEN > max_bytes) {
			break;
		}
	}
	if (!reply_append_str(r, "]") || !reply_append_entry_tail(r, cmd)) {
		goto out;
	}
	ok = true;
	*fits = r->len + CLOSING_LEN <= max_bytes;
out:
	if (!ok || !*fits) {
		r->len = start;
	}
	free(first);
	return ok;
}

char *presence_query_respond(const struct presence_query *q, const struct presence_registry *reg,
                             const struct presence_query_sight *sight, size_t max_bytes,
                             size_t *len)
{
	struct reply r = {NULL, 0, 0, sight};
	char too_large[64];
	size_t i;

	*len = 0;
	snprintf(too_large, sizeof(too_large), "Reply too large: at most %zu bytes per reply",
	         max_bytes);
	if (!reply_append_str(&r, "{\"responses\":[")) {
		goto out_nomem;
	}
	for (i = 0; i < q->count; i++) {
		const struct presence_query_command *cmd = &q->commands[i];
		const char *error = cmd->error;
		bool fits = false;

		if (i > 0 && !reply_append_str(&r, ",")) {
			goto out_nomem;
		}
		if (cmd->kind == PRESENCE_QUERY_PRESENCES) {
			if (!reply_append_presences(&r, cmd, reg, max_bytes, &fits)) {
				goto out_nomem;
			}
			error = too_large;
		}
		if (!fits && (!reply_append_entry_head(&r, cmd, error) ||
		              !reply_append_entry_tail(&r, cmd))) {
			goto out_nomem;
		}
	}
	/* One byte more for the NUL. */
	if (!reply_append(&r, "]}", sizeof("]}"))) {
		goto out_nomem;
	}
	*len = r.len - 1;
	return r.text;

out_nomem:
	free(r.text);
	return NULL;
}

void presence_query_response_free(char *text)
{
	free(text);
}
