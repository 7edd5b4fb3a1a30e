/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * What is due in the registry, and when: the dirty, retry, held and forgotten queues, the idle
 * queue, the offline delay, forgetting, and the documents a flush prepares.
 *
 * - Users held by the guard wait in an array of user pointers (a held user that changes again
 *   leaves a stale pointer, skipped on release).
 * - A user waiting out the offline delay has a struct offline_wait, found by the user's address
 *   in a third hash table and queued in deadline order.
 * Dirty, retry and forgotten users wait in singly linked queues through the users (list_next);
 * idle users (offline, nothing pending) in a doubly linked queue through the users (idle_prev,
 * idle_next), oldest first: every user joins it at its tail "now", except users restored from
 * the state file, which join it in any order and are sorted once, before it is next read.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>
#include <utlist.h>

#include "registry.h"
#include "registry_private.h"

/* ---- queues --------------------------------------------------------------------------- */

void presence__registry_queue_append(struct user_queue *q, struct presence_user *user)
{
	user->list_next = NULL;
	if (q->tail != NULL) {
		q->tail->list_next = user;
	} else {
		q->head = user;
	}
	q->tail = user;
}

static struct presence_user *queue_pop(struct user_queue *q)
{
	struct presence_user *user = q->head;

	if (user != NULL) {
		q->head = user->list_next;
		if (q->head == NULL) {
			q->tail = NULL;
		}
		user->list_next = NULL;
	}
	return user;
}

/* Seconds on the monotonic clock since mono_base, rounded up, for idle_at. */
int32_t presence__registry_idle_seconds(const struct presence_registry *reg, int64_t mono_ms)
{
	int64_t s = mono_ms - reg->mono_base;

	s = s >= 0 ? (s + 999) / 1000 : -((-s) / 1000);
	return s > INT32_MAX ? INT32_MAX : s < INT32_MIN ? INT32_MIN : (int32_t)s;
}

void presence__registry_idle_unlink(struct presence_registry *reg, struct presence_user *user)
{
	if (user->idle_prev != NULL) {
		user->idle_prev->idle_next = user->idle_next;
	} else {
		reg->idle_head = user->idle_next;
	}
	if (user->idle_next != NULL) {
		user->idle_next->idle_prev = user->idle_prev;
	} else {
		reg->idle_tail = user->idle_prev;
	}
	user->idle_prev = user->idle_next = NULL;
	user->idle = false;
}

void presence__registry_idle_append(struct presence_registry *reg, struct presence_user *user)
{
	user->idle_next = NULL;
	user->idle_prev = reg->idle_tail;
	if (reg->idle_tail != NULL) {
		reg->idle_tail->idle_next = user;
	} else {
		reg->idle_head = user;
	}
	reg->idle_tail = user;
	user->idle = true;
}

/* Puts user on the idle queue (idle since now) or takes it off, as the invariant says. */
void presence__registry_idle_sync(struct presence_registry *reg, struct presence_user *user)
{
	bool should = user->published && !user->pub_available && user->sessions == 0 &&
	              !user->waiting && !user->gone;

	if (should && !user->idle) {
		user->idle_at =
		    presence__registry_idle_seconds(reg, presence__registry_mono_now(reg));
		presence__registry_idle_append(reg, user);
	} else if (!should && user->idle) {
		presence__registry_idle_unlink(reg, user);
	}
}

/* Sorts the idle queue by idle_at (stable), after users were restored. */
void presence__registry_idle_sort(struct presence_registry *reg)
{
	struct presence_user *head = reg->idle_head;
	size_t width;

	reg->idle_unsorted = false;
	if (head == NULL) {
		return;
	}
	/* Bottom-up merge sort of the list through idle_next; prev links are rebuilt after. */
	for (width = 1;; width *= 2) {
		struct presence_user *out_head = NULL, *out_tail = NULL, *p = head;
		size_t merges = 0;

		while (p != NULL) {
			struct presence_user *q = p;
			size_t psize = 0, qsize = width;

			merges++;
			while (psize < width && q != NULL) {
				psize++;
				q = q->idle_next;
			}
			while (psize > 0 || (qsize > 0 && q != NULL)) {
				struct presence_user *e;

				if (psize == 0) {
					e = q;
					q = q->idle_next;
					qsize--;
				} else if (qsize == 0 || q == NULL || p->idle_at <= q->idle_at) {
					e = p;
					p = p->idle_next;
					psize--;
				} else {
					e = q;
					q = q->idle_next;
					qsize--;
				}
				if (out_tail != NULL) {
					out_tail->idle_next = e;
				} else {
					out_head = e;
				}
				out_tail = e;
			}
			p = q;
		}
		out_tail->idle_next = NULL;
		head = out_head;
		if (merges <= 1) {
			break;
		}
	}
	reg->idle_head = head;
	reg->idle_tail = NULL;
	for (struct presence_user *u = head, *prev = NULL; u != NULL; prev = u, u = u->idle_next) {
		u->idle_prev = prev;
		reg->idle_tail = u;
	}
}

void presence_registry_user_changed(struct presence_registry *reg, struct presence_user *user)
{
	/* A user waiting for a retry goes back on the dirty queue at the end of this flush. */
	if (user->list == USER_LIST_DIRTY || user->list == USER_LIST_RETRY ||
	    user->list == USER_LIST_FORGOTTEN) {
		return;
	}
	if (user->list == USER_LIST_HELD) {
		/* Its pointer in reg->held_users is stale from now on. */
		reg->held--;
	}
	presence__registry_queue_append(&reg->dirty, user);
	user->list = USER_LIST_DIRTY;
}

static struct offline_wait *wait_of(const struct presence_registry *reg,
                                    const struct presence_user *user)
{
	struct offline_wait *wait = NULL;

	HASH_FIND_PTR(reg->waits, &user, wait);
	return wait;
}

/* Forgets user's offline wait, if it has one. */
void presence__registry_wait_end(struct presence_registry *reg, struct presence_user *user)
{
	struct offline_wait *wait;

	if (!user->waiting) {
		return;
	}
	wait = wait_of(reg, user);
	if (user->offline_pending) {
		DL_DELETE(reg->offline, wait);
	}
	HASH_DEL(reg->waits, wait);
	free(wait);
	user->waiting = false;
	user->offline_pending = false;
}

/* Queues user (whose last session just left) to go offline when the delay has passed. When
 * memory runs out the user goes offline at once, as without a delay. */
void presence__registry_wait_begin(struct presence_registry *reg, struct presence_user *user)
{
	struct offline_wait *wait = calloc(1, sizeof(*wait));

	if (wait == NULL) {
		return;
	}
	wait->user = user;
	wait->deadline_ms = presence__registry_mono_now(reg) + reg->offline_delay_ms;
	wait->left_ms = reg->clock.wall_ms(reg->clock.arg);
	HASH_ADD_PTR(reg->waits, user, wait);
	if (wait->hh.tbl == NULL) {
		free(wait);
		return;
	}
	DL_APPEND(reg->offline, wait);
	user->waiting = true;
	user->offline_pending = true;
}

/* ---- flushes --------------------------------------------------------------------------- */

void presence_registry_offline_expire(struct presence_registry *reg)
{
	struct offline_wait *wait;
	int64_t now;

	if (reg->offline == NULL) {
		return;
	}
	now = presence__registry_mono_now(reg);
	while ((wait = reg->offline) != NULL && wait->deadline_ms <= now) {
		/* The wait stays (out of the queue) for the since of the unavailable document. */
		DL_DELETE(reg->offline, wait);
		wait->user->offline_pending = false;
		presence_registry_user_changed(reg, wait->user);
	}
}

size_t presence_registry_forget_due(struct presence_registry *reg, size_t limit)
{
	size_t done = 0;
	int32_t now_s = 0;

	if (reg->idle_head == NULL) {
		return 0;
	}
	if (reg->forget_after_s > 0) {
		int64_t s = (presence__registry_mono_now(reg) - reg->mono_base) / 1000;

		now_s = s > INT32_MAX ? INT32_MAX : s < INT32_MIN ? INT32_MIN : (int32_t)s;
	}
	while (done < limit) {
		bool over_cap = reg->max_users > 0 && HASH_COUNT(reg->users) > reg->max_users;
		struct presence_user *user;

		if (over_cap) {
			user = presence__registry_evictable(reg);
		} else {
			if (reg->idle_unsorted) {
				presence__registry_idle_sort(reg);
			}
			user = reg->idle_head;
			if (user == NULL || reg->forget_after_s == 0 ||
			    (int64_t)user->idle_at + reg->forget_after_s > now_s ||
			    user->list != USER_LIST_NONE) {
				break;
			}
		}
		if (user == NULL) {
			break;
		}
		presence__registry_forget(reg, user);
		done++;
	}
	return done;
}

struct presence_user *presence_registry_forgotten_take(struct presence_registry *reg)
{
	struct presence_user *user = queue_pop(&reg->forgotten);

	if (user != NULL) {
		user->list = USER_LIST_NONE;
	}
	return user;
}

void presence_registry_user_forget(struct presence_registry *reg, struct presence_user *user)
{
	if (user->gone || user->sessions > 0) {
		return;
	}
	if (user->seq > reg->seq_floor) {
		reg->seq_floor = user->seq;
	}
	reg->forgotten_total++;
	presence__registry_user_remove(reg, user);
}

bool presence_user_published(const struct presence_user *user, struct presence_document *doc)
{
	if (!user->published) {
		return false;
	}
	doc->username = presence_user_name(user);
	doc->available = user->pub_available;
	doc->sessions = user->pub_sessions;
	doc->since_ms = user->pub_since;
	doc->seq = user->seq;
	doc->state_json = presence_state_marked_json(&user->state);
	return true;
}

void presence_registry_user_counted(struct presence_registry *reg, struct presence_user *user,
                                    unsigned int count)
{
	user->counted = count > 0;
	if (user->list == USER_LIST_NONE) {
		presence__registry_discard_if_unused(reg, user);
	}
}

struct presence_user *presence_registry_dirty_next(struct presence_registry *reg)
{
	struct presence_user *user;

	while ((user = queue_pop(&reg->dirty)) != NULL) {
		user->list = USER_LIST_NONE;
		if (user->gone) {
			presence_user_free(user);
			continue;
		}
		if (presence__registry_user_unused(user)) {
			/* A refused login's user (or one created for a write of a pending session
			 * that was refused): nothing to publish, nothing to keep. */
			presence__registry_user_unlink(reg, user);
			presence_user_free(user);
			continue;
		}
		return user;
	}
	return NULL;
}

/* Puts user on the held list. Returns PRESENCE_ERR_NOMEM (nothing changed) when it cannot
 * grow. */
static enum presence_err hold(struct presence_registry *reg, struct presence_user *user)
{
	void *held = reg->held_users;

	if (!presence__registry_array_reserve(&held, &reg->held_cap, reg->held_len,
	                                      sizeof(*reg->held_users))) {
		return PRESENCE_ERR_NOMEM;
	}
	reg->held_users = held;
	reg->held_users[reg->held_len++] = user;
	user->list = USER_LIST_HELD;
	reg->held++;
	return PRESENCE_OK;
}

enum presence_err presence_registry_document_prepare(struct presence_registry *reg,
                                                     struct presence_user *user, int64_t now_ms,
                                                     struct presence_document *doc, bool *due)
{
	bool available = user->sessions > 0;
	bool state_same;

	*due = false;
	/* Waiting out the offline delay: subscribers keep seeing the user as it was. */
	if (user->offline_pending) {
		return PRESENCE_OK;
	}
	/* State lives while the user is online (unless kept): dropped when the user is unavailable
	 * at the end of the iteration (or of the delay), not at the disconnect itself, so a
	 * takeover or a reconnect within the delay keeps it. */
	if (!available && !reg->keep_state) {
		presence_state_clear(&user->state);
	}
	state_same = !presence_state_changed_since_mark(&user->state);
	if (!user->published) {
		user->widened = false;
	}
	if (user->published && available == user->pub_available &&
	    user->sessions == user->pub_sessions && state_same && !user->widened) {
		/* A change undone: the text the change replaced need not be kept any longer. */
		presence_state_mark(&user->state);
		return PRESENCE_OK;
	}
	if (!user->published && !available && state_same) {
		/* Never published and nothing to say: the user was never online. */
		return PRESENCE_OK;
	}
	if (reg->has_guard && !reg->guard.allows(reg->guard.arg, user, user->seq + 1)) {
		return hold(reg, user);
	}
	if (user->widened) {
		/* Gaining watchers: nothing in the document may tell them what happened while they
		 * could not see (its seq jumped at presence_registry_user_widen). */
		reg->prep_since_ms = now_ms;
	} else if (!user->published || available != user->pub_available) {
		/* Going offline after the delay: since is when the last session left. */
		reg->prep_since_ms =
		    !available && user->waiting ? wait_of(reg, user)->left_ms : now_ms;
	} else {
		reg->prep_since_ms = user->pub_since;
	}
	doc->username = presence_user_name(user);
	doc->available = available;
	doc->sessions = user->sessions;
	doc->since_ms = reg->prep_since_ms;
	doc->seq = user->seq + 1;
	doc->state_json = presence_state_json(&user->state);
	*due = true;
	return PRESENCE_OK;
}

void presence_registry_document_sent(struct presence_registry *reg, struct presence_user *user)
{
	/* Nothing about the user changed since presence_registry_document_prepare. */
	user->seq++;
	user->widened = false;
	if (!user->published) {
		user->published = true;
		reg->known++;
	}
	user->pub_available = user->sessions > 0;
	user->pub_sessions = user->sessions;
	user->pub_since = reg->prep_since_ms;
	presence_state_mark(&user->state);
	if (!user->pub_available) {
		/* The unavailable document after the delay: its since is published. */
		presence__registry_wait_end(reg, user);
	}
	presence__registry_idle_sync(reg, user);
}

void presence_registry_document_failed(struct presence_registry *reg, struct presence_user *user)
{
	if (user->list == USER_LIST_NONE) {
		presence__registry_queue_append(&reg->retry, user);
		user->list = USER_LIST_RETRY;
	}
}

void presence_registry_flush_done(struct presence_registry *reg)
{
	struct presence_user *user;

	while ((user = queue_pop(&reg->retry)) != NULL) {
		presence__registry_queue_append(&reg->dirty, user);
		user->list = USER_LIST_DIRTY;
	}
}

void presence_registry_release_held(struct presence_registry *reg)
{
	for (size_t i = 0; i < reg->held_len; i++) {
		struct presence_user *user = reg->held_users[i];

		/* Stale entries: users that changed while held (and maybe were held again), and
		 * NULL for users that left. */
		if (user != NULL && user->list == USER_LIST_HELD) {
			reg->held--;
			presence__registry_queue_append(&reg->dirty, user);
			user->list = USER_LIST_DIRTY;
		}
	}
	reg->held_len = 0;
}

size_t presence_registry_held_count(const struct presence_registry *reg)
{
	return reg->held;
}

bool presence_registry_write_permitted(const struct presence_registry *reg,
                                       const struct presence_user *user)
{
	if (reg->write_interval_us == 0) {
		return true;
	}
	return user->write_tat - presence__registry_mono_now(reg) * 1000 <= reg->write_window_us;
}

void presence_registry_write_charge(struct presence_registry *reg, struct presence_user *user)
{
	int64_t now_us;

	if (reg->write_interval_us == 0) {
		return;
	}
	now_us = presence__registry_mono_now(reg) * 1000;
	user->write_tat =
	    (user->write_tat > now_us ? user->write_tat : now_us) + reg->write_interval_us;
}
