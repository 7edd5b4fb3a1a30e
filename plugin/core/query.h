/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * One-time presence queries: the request and the response of the $CONTROL/presence/v1 API.
 *
 * The shape follows Mosquitto's dynamic-security API. A request is a JSON object with an array
 * of commands:
 *   {"commands":[{"command":"getPresence","usernames":["alice","zed"],"correlationData":"7"}]}
 * and the response has one entry per command, in the same order:
 *   {"responses":[{"command":"getPresence","presences":[<alice>,<zed>],"correlationData":"7"}]}
 * "presences" has one entry per distinct requested name, in the order each was first asked (a
 * name asked twice in a command is answered once). A user with at least one published document
 * ("known") is answered with its last published document, exactly as its retained message holds it,
 * with "known":true appended; any other name with
 * {"username":"zed","available":false,"known":false}. "correlationData" (a string) is copied into
 * the command's response when the command has one.
 *
 * A command that cannot be answered gets {"command":...,"error":"...","correlationData":...}
 * and the others are still answered. A request that is not UTF-8, not JSON or has no "commands"
 * array gets a single such error with the command "Unknown command". The errors:
 *   Payload not valid UTF-8          the payload is not strict UTF-8 (or holds a NUL byte)
 *   Payload not valid JSON           cJSON does not parse the whole payload as one value
 *   Payload has a \u escape that decodes to NUL
 *                                    cJSON would cut the string at the NUL and answer for
 *                                    another name; also \u with non-hex digits (see state.h)
 *   Invalid/missing commands         not an object, or no "commands" array
 *   Command not an object            (command "Unknown command")
 *   Missing command                  no "command" string (command "Unknown command")
 *   Invalid correlationData data type
 *                                    "correlationData" present but not a string
 *   Unknown command                  (command echoed as given)
 *   Invalid/missing usernames        "usernames" is not an array of strings
 *   Too many usernames: at most <n> per request
 *                                    answering the command would take the request over n
 *                                    (max_query_users) names, counting the names of the
 *                                    commands answered before it
 *   Reply too large: at most <n> bytes per reply
 *                                    the command's presences would take the response over
 *                                    the byte budget (max_query_reply_bytes); commands after it
 *                                    are still answered when they fit
 * Command names are matched without regard to case, as dynamic-security does, and answered in
 * their canonical spelling ("getPresence").
 *
 * Budget: the response is at most max_bytes bytes, except for the error entries of commands that
 * did not fit, which always go out: each echoes only its command's name and correlation data,
 * so together they cost about what those commands cost in the request. The response is written
 * straight as text (no cJSON tree), and a command's presences stop being rendered once the
 * budget is gone, so answering never holds much more than the budget either.
 *
 * Cost: parsing is linear in the payload; answering is one hash lookup per distinct requested
 * name (found by sorting the names, O(n log n)) plus the size of the documents, never a scan of
 * all users.
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

/* Builds the response to q from the users in reg within a budget of max_bytes (see above):
 * compact JSON, NUL-terminated, with its length (without the NUL) in *len. Returns the text,
 * which the caller frees with presence_query_response_free, or NULL (and *len 0) when an
 * allocation fails. reg is only read. */
char *presence_query_respond(const struct presence_query *q, const struct presence_registry *reg,
                             size_t max_bytes, size_t *len);

/* Frees a response from presence_query_respond; NULL is allowed. */
void presence_query_response_free(char *text);

#endif
