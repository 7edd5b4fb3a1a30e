/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/* The per-client budget of query response bytes (see querylimit.h). */
#include <stdlib.h>

#include <uthash.h>

#include "querylimit.h"
#include "testing.h"

/* One client's bucket: thousandths of the bytes it may still be sent (negative: in debt) as of
 * last_ms; thousandths, so that frequent refills of a few milliseconds lose nothing. */
struct bucket {
	const void *client;
	int64_t tokens;
	int64_t last_ms;
	UT_hash_handle hh;
};

struct presence_query_limit {
	/* In thousandths of a byte, as the buckets. */
	int64_t burst;
	/* Bytes a second, which is thousandths of a byte a millisecond. */
	int64_t per_second;
	struct bucket *buckets;
};

/* Keeps a configured amount inside int64_t arithmetic (whole days of refill included). */
#define AMOUNT_MAX ((uint64_t)INT64_MAX / 1000 / 86400000)

struct presence_query_limit *presence_query_limit_new(uint64_t burst, uint64_t per_second)
{
	struct presence_query_limit *ql = calloc(1, sizeof(*ql));

	if (ql != NULL) {
		ql->burst = (int64_t)(burst < AMOUNT_MAX ? burst : AMOUNT_MAX) * 1000;
		ql->per_second = (int64_t)(per_second < AMOUNT_MAX ? per_second : AMOUNT_MAX);
	}
	return ql;
}

void presence_query_limit_free(struct presence_query_limit *ql)
{
	struct bucket *b, *tmp;

	if (ql == NULL) {
		return;
	}
	HASH_ITER(hh, ql->buckets, b, tmp)
	{
		HASH_DEL(ql->buckets, b);
		free(b);
	}
	free(ql);
}

/* Adds what b earned since its last refill, up to the burst. A clock that goes back earns
 * nothing. */
static void refill(const struct presence_query_limit *ql, struct bucket *b, int64_t now_ms)
{
	if (now_ms > b->last_ms) {
		int64_t elapsed = now_ms - b->last_ms;
		int64_t room = ql->burst - b->tokens;

		/* Beyond a day, the bucket is full whatever it owed. */
		if (elapsed > 86400000 || elapsed * ql->per_second >= room) {
			b->tokens = ql->burst;
		} else {
			b->tokens += elapsed * ql->per_second;
		}
		b->last_ms = now_ms;
	}
}

enum presence_err presence_query_limit_check(struct presence_query_limit *ql, const void *client,
                                             int64_t now_ms, bool *allowed)
{
	struct bucket *b;

	*allowed = false;
	HASH_FIND_PTR(ql->buckets, &client, b);
	if (b == NULL) {
		b = calloc(1, sizeof(*b));
		if (b == NULL) {
			return PRESENCE_ERR_NOMEM;
		}
		b->client = client;
		b->tokens = ql->burst;
		b->last_ms = now_ms;
		HASH_ADD_PTR(ql->buckets, client, b);
		if (b->hh.tbl == NULL) {
			free(b);
			return PRESENCE_ERR_NOMEM;
		}
	}
	refill(ql, b, now_ms);
	*allowed = b->tokens >= 0;
	return PRESENCE_OK;
}

void presence_query_limit_charge(struct presence_query_limit *ql, const void *client, size_t bytes)
{
	struct bucket *b;

	HASH_FIND_PTR(ql->buckets, &client, b);
	if (b != NULL) {
		b->tokens -= (int64_t)(bytes < AMOUNT_MAX ? bytes : AMOUNT_MAX) * 1000;
	}
}

void presence_query_limit_forget(struct presence_query_limit *ql, const void *client)
{
	struct bucket *b;

	HASH_FIND_PTR(ql->buckets, &client, b);
	if (b != NULL) {
		HASH_DEL(ql->buckets, b);
		free(b);
	}
}

size_t presence_query_limit_clients(const struct presence_query_limit *ql)
{
	return HASH_COUNT(ql->buckets);
}
