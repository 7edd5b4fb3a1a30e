/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The one queue type of the Redis link: an intrusive FIFO. An item embeds a struct
 * presence_redis_qnode named node and is found again with PRESENCE_REDIS_QUEUE_ITEM. The
 * requests for the writer and the results for the broker thread are such queues.
 *
 * Invariants: head is NULL exactly when len is 0, tail is the last node and tail->next is NULL.
 * A queue neither allocates nor frees: it links nodes its caller owns, and it does no locking
 * (the link holds its mutex around every call on a shared queue).
 */
#ifndef PRESENCE_REDIS_QUEUE_H
#define PRESENCE_REDIS_QUEUE_H

#include <stddef.h>

struct presence_redis_qnode {
	struct presence_redis_qnode *next;
};

struct presence_redis_queue {
	struct presence_redis_qnode *head, *tail;
	size_t len;
};

/* The item of type that embeds node (as its member "node"). */
#define PRESENCE_REDIS_QUEUE_ITEM(n, type) ((type *)(void *)((char *)(n)-offsetof(type, node)))

/* Appends node (which is in no queue). */
static inline void presence_redis_queue_push(struct presence_redis_queue *q,
                                             struct presence_redis_qnode *node)
{
	node->next = NULL;
	if (q->tail != NULL) {
		q->tail->next = node;
	} else {
		q->head = node;
	}
	q->tail = node;
	q->len++;
}

/* Unlinks and returns the oldest node, or NULL when q is empty. */
static inline struct presence_redis_qnode *presence_redis_queue_pop(struct presence_redis_queue *q)
{
	struct presence_redis_qnode *node = q->head;

	if (node == NULL) {
		return NULL;
	}
	q->head = node->next;
	if (q->head == NULL) {
		q->tail = NULL;
	}
	q->len--;
	node->next = NULL;
	return node;
}

/* Moves every node of front, in order, before the nodes of q; front is left empty. */
static inline void presence_redis_queue_prepend(struct presence_redis_queue *q,
                                                struct presence_redis_queue *front)
{
	if (front->head == NULL) {
		return;
	}
	front->tail->next = q->head;
	q->head = front->head;
	if (q->tail == NULL) {
		q->tail = front->tail;
	}
	q->len += front->len;
	front->head = front->tail = NULL;
	front->len = 0;
}

/* Moves the max oldest nodes of q (fewer when q holds fewer), in order, to the end of out. */
static inline void presence_redis_queue_take(struct presence_redis_queue *q, size_t max,
                                             struct presence_redis_queue *out)
{
	struct presence_redis_qnode *node;

	while (max-- > 0 && (node = presence_redis_queue_pop(q)) != NULL) {
		presence_redis_queue_push(out, node);
	}
}

#endif
