/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * How much query response each client may be sent: a token bucket of response bytes per
 * client (at most burst bytes at once, then per_second bytes a second); a query that arrives
 * while the client's bucket is in debt is not answered. Clients are keyed by the broker's
 * client pointer (opaque here); forget a client when it disconnects. Every call is O(1); time is
 * a monotonic clock in milliseconds from the caller. Why: docs/DESIGN.md, "Core: query limit".
 */
#ifndef PRESENCE_QUERYLIMIT_H
#define PRESENCE_QUERYLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "presence_err.h"

struct presence_query_limit;

/* The plugin's limit, in responses of the full max_query_reply_bytes: a burst of this many,
 * then one every this many seconds. A client that reads its answers and asks for a few users
 * now and then never comes near it. */
#define PRESENCE_QUERY_LIMIT_BURST_REPLIES 4
#define PRESENCE_QUERY_LIMIT_REFILL_S 4

/* Bytes charged for each response besides its payload: what the broker spends on every message
 * it holds (store record, topic, properties, packet), so that many tiny answers cost too. */
#define PRESENCE_QUERY_LIMIT_RESPONSE_COST 1024

/* Returns a new limit of burst bytes at once and per_second bytes a second per client, or NULL
 * when allocation fails. Free with presence_query_limit_free. */
struct presence_query_limit *presence_query_limit_new(uint64_t burst, uint64_t per_second);

/* Frees ql and every client's bucket; NULL is allowed. */
void presence_query_limit_free(struct presence_query_limit *ql);

/* Decides whether a query of client may be answered at now_ms: sets *allowed to whether the
 * client's bucket is not in debt (a client seen for the first time starts with a full bucket).
 * Returns PRESENCE_OK, or PRESENCE_ERR_NOMEM (with *allowed false) when the bucket of a new
 * client cannot be made. */
enum presence_err presence_query_limit_check(struct presence_query_limit *ql, const void *client,
                                             int64_t now_ms, bool *allowed);

/* Charges bytes (a response sent) to client's bucket, which must exist (check made it). */
void presence_query_limit_charge(struct presence_query_limit *ql, const void *client, size_t bytes);

/* Forgets client's bucket, if any (the client disconnected; its pointer may be reused). */
void presence_query_limit_forget(struct presence_query_limit *ql, const void *client);

#endif
