/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Assertions about what the plugin publishes: presence documents (presence/<user>) and the
 * absence of state writes and rejection notices.
 */
#ifndef PRESENCE_HARNESS_PRESENCE_H
#define PRESENCE_HARNESS_PRESENCE_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "harness_client.h"

/* Parses m's payload as JSON; fails the test (showing the payload) if it is not JSON. The caller
 * frees the result with cJSON_Delete. */
cJSON *msg_json(const struct msg *m);

/* Waits (5000 ms, scaled) for the next message on c and asserts: its topic is topic, and it is
 * a presence document whose "username" is username (NULL = not checked), whose "available" is
 * available, whose "sessions" is sessions (negative = not checked) and whose "state" equals
 * state_json (compared with cJSON_Compare; NULL = not checked). Returns its "seq". Fails the
 * test with the message shown otherwise. */
long expect_doc(struct client *c, const char *topic, const char *username, bool available,
                int sessions, const char *state_json);

/* Asserts, after a round trip (as expect_nothing), that c, whatever it subscribed to, has
 * received no state-write message (presence/<user>/state or presence/<user>/state/<key>) and no
 * rejection notice (a topic below presence/ that ends in /error). Everything else queued
 * (documents, round-trip markers, other topics) is taken and dropped. */
void expect_no_state_or_error_message(struct client *c);

#endif
