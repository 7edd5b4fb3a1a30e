/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The plugin's rules, independent of any broker: which sessions are tracked, who may publish
 * or read which topic of the namespace, and when a save of the state file is due. The adapter
 * only translates the answers into its broker's codes.
 *
 * With P the topic prefix and U a user's encoded name: P/U/state[/<key>] is written only by U's
 * own tracked sessions and read by nobody; P/U/error is read only by U's own sessions; nothing
 * else below P/ is written by a client. Anything else is not the plugin's to decide.
 */
#ifndef PRESENCE_POLICY_H
#define PRESENCE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "registry.h"
#include "topic.h"

/* The answer to an access question. */
enum presence_verdict {
	/* Not the plugin's to decide: the broker's other mechanisms (password_file, acl_file,
	 * other plugins, the broker's defaults) decide. */
	PRESENCE_VERDICT_PASS = 0,
	PRESENCE_VERDICT_ALLOW,
	PRESENCE_VERDICT_DENY,
};

/* What a client asks to do with a topic. */
enum presence_access {
	/* Publish to it (or leave a Will on it). */
	PRESENCE_ACCESS_WRITE,
	/* Receive a message published to it. */
	PRESENCE_ACCESS_READ,
	/* Anything else the broker asks about (subscribe, unsubscribe). */
	PRESENCE_ACCESS_OTHER,
};

/* How often, at most, a save of the state file begins unless a document waits for one. */
#define PRESENCE_POLICY_SAVE_INTERVAL_MS 1000

/* The longest suffix the plugin appends to a document topic ("/error"). */
#define PRESENCE_POLICY_LONGEST_SUFFIX_LEN 6

/* Returns name when a session whose identity (username, or client id with identity clientid)
 * is name should be tracked, NULL when it is not: no identity (NULL) or an empty one, a name
 * that is not valid UTF-8, a name in ignore_users, or a name whose topics would be longer than
 * an MQTT topic may be. Never fails; allocates nothing. */
const char *presence_policy_tracked_name(const struct presence_config *cfg, const char *name);

/* Returns true when client is a tracked session (pending or active) of the user whose encoded
 * name is (level, len bytes). identity is the client's identity as the broker reports it now
 * (used for a PENDING session, whose user is not resolved yet). */
bool presence_policy_owns_level(const struct presence_registry *reg,
                                const struct presence_config *cfg, const void *client,
                                const char *identity, const char *level, size_t len);

/* Decides access to topic (classified with presence_topic_parse against cfg's prefix); owns
 * says whether the client owns topic's user level (presence_policy_owns_level; ignored for
 * topics outside the namespace). PASS is answered only with acl defer: with acl allow,
 * everything not denied is ALLOW. When the verdict is DENY for a write, *why (if why is not
 * NULL) is set to a static sentence for the log; it is untouched otherwise. */
enum presence_verdict presence_policy_access(const struct presence_config *cfg,
                                             const struct presence_topic *topic,
                                             enum presence_access access, bool owns,
                                             const char **why);

/* Returns why a query's Response Topic (a valid MQTT publish topic) is refused, as a static
 * clause for the log ("starts with '$'"), or NULL when the answer may go there. Refused: a topic
 * starting with '$' ($SYS, $CONTROL: an answer there would look like the broker's or a plugin's
 * own message) and a topic inside the plugin's namespace P/ (where only the plugin publishes).
 * Nothing legitimate needs either. */
const char *presence_policy_response_topic_refusal(const struct presence_config *cfg,
                                                   const char *topic);

/*
 * Returns true when a WRITE check for client (client id id) is the Will of a connection that a
 * new connection is taking over, going by what the broker is doing at that moment: connecting
 * is the client whose login the broker handled last in this loop iteration (NULL when none is
 * in progress), with client id connecting_id. Mosquitto (2.0, and 2.1 up to 2.1.2) handles a
 * CONNECT that takes over a client id in one go: the new client's login, then the old
 * connection's Will (its WRITE check), then the old connection's DISCONNECT, so the old session
 * still counts when its Will is checked. A WRITE check for another client with the login's
 * client id can only be that Will: the broker is single-threaded and the take-over disconnects
 * the old connection before anything else it sent is read.
 */
bool presence_policy_takeover_will(const void *client, const char *id, const void *connecting,
                                   const char *connecting_id);

/* Dry run of a state write: whether the write (a merge when merge is true, else set_key of the
 * key_len bytes at key) would change state, without touching it. Returns PRESENCE_OK with
 * *changed, or the write's error (reason filled as by the state module). */
enum presence_err presence_policy_write_changes(const struct presence_state *state,
                                                const struct presence_state_limits *limits,
                                                bool merge, const char *key, size_t key_len,
                                                const void *payload, size_t payload_len,
                                                bool *changed, char *reason);

/* Returns true when a save of the state file should begin at monotonic time now_ms, given when
 * the last one began, whether a document waits for a save (held), whether anything changed
 * since the last save began (unsaved) and whether the last save failed. A waiting document
 * starts a save at once, unless the last one failed (then saves are retried once per
 * interval); other changes start one at most once per interval. */
bool presence_policy_save_due(int64_t now_ms, int64_t last_started_ms, bool held, bool unsaved,
                              bool last_failed);

#endif
