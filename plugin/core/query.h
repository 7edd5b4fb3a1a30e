/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * One-time presence queries: the request and the response of the $CONTROL/presence/v1 API.
 *
 * A request {"commands":[{"command":"getPresence","usernames":[...],"correlationData":"7"}]}
 * gets {"responses":[...]} with one entry per command, in order; a command that cannot be
 * answered gets an entry with "error" and the others are still answered. The response stays
 * within the byte budget (the error entries of commands that did not fit excepted). The
 * errors, the budget and the cost are in docs/DESIGN.md, "Core: queries".
 */
#ifndef PRESENCE_QUERY_H
#define PRESENCE_QUERY_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "presence_err.h"
#include "registry.h"

/* The only command so far. */
#define PRESENCE_QUERY_GET_PRESENCE "getPresence"

/* The command name answered when a request or command has no usable name. */
#define PRESENCE_QUERY_UNKNOWN_COMMAND "Unknown command"

/* What the response to one command will be. */
enum presence_query_kind {
	/* Answer the presences of usernames. */
	PRESENCE_QUERY_PRESENCES = 0,
	/* Answer error. */
	PRESENCE_QUERY_ERROR,
};

/* One command of a parsed request. Every pointer is owned by the struct presence_query it came
 * from (or is static) and lives as long as it does. */
struct presence_query_command {
	enum presence_query_kind kind;
	/* The command name to answer with, never NULL. */
	const char *command;
	/* The command's correlationData, or NULL when it has none (or it was not a string). */
	const char *correlation_data;
	/* PRESENCE_QUERY_PRESENCES: the "usernames" array, every element a string. NULL
	 * otherwise. */
	const cJSON *usernames;
	/* PRESENCE_QUERY_PRESENCES: the number of names in usernames. */
	size_t username_count;
	/* PRESENCE_QUERY_ERROR: the error text, never NULL then. */
	const char *error;
};

/* A parsed request. */
struct presence_query {
	/* The parsed request (owned), or NULL when it could not be parsed. */
	cJSON *request;
	/* The commands, in request order (owned). */
	struct presence_query_command *commands;
	/* Number of commands. */
	size_t count;
	/* Number of names that will be answered, over all commands. */
	size_t username_total;
	/* The text of the "too many usernames" error, which names the limit. */
	char too_many[64];
};

/* Who the requester may see (visibility.h): may_see(arg, user) is false for a user to be
 * answered exactly like one never seen. NULL: everyone. */
struct presence_query_sight {
	bool (*may_see)(void *arg, const struct presence_user *user);
	void *arg;
};

/* Parses a request payload (len bytes, not NUL-terminated; payload may be NULL when len is 0)
 * into q, allowing at most max_users names in the whole request. Returns PRESENCE_OK with q
 * filled: every problem with the request is a command of kind PRESENCE_QUERY_ERROR, so a
 * parsed query always has something to answer (count is 0 only for an empty "commands"
 * array). Returns PRESENCE_ERR_NOMEM with q empty (safe to pass to presence_query_free) when an
 * allocation fails. Running out of memory inside cJSON's parser cannot be told apart from a
 * syntax error: the request is then answered "Payload not valid JSON". Free q with
 * presence_query_free. */
enum presence_err presence_query_parse(struct presence_query *q, const void *payload, size_t len,
                                       size_t max_users);

/* Frees what q owns and zeroes it. */
void presence_query_free(struct presence_query *q);

/* Builds the response to q from the users in reg within a budget of max_bytes (at most max_bytes
 * bytes but for the error entries of commands that did not fit):
 * compact JSON, NUL-terminated, with its length (without the NUL) in *len. Returns the text,
 * which the caller frees with presence_query_response_free, or NULL (and *len 0) when an
 * allocation fails. reg is only read. */
char *presence_query_respond(const struct presence_query *q, const struct presence_registry *reg,
                             const struct presence_query_sight *sight, size_t max_bytes,
                             size_t *len);

/* Frees a response from presence_query_respond; NULL is allowed. */
void presence_query_response_free(char *text);

#endif
