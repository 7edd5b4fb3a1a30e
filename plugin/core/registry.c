/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Sessions and users (see registry.h for the lifecycle this models).
 *
 * Two uthash tables: sessions keyed by the broker's client pointer, users keyed by name (its
 * insertion order is the users' creation order, which cursors follow). Each user is ONE
 * allocation holding its hash handle, its queue links, its counters, its state (only a non-empty
 * state has text of its own), its flags and its encoded name (the topic level), with the name
 * itself after it when encoding changed it. The prefix of the document topic is the registry's,
 * not repeated in every user.
 *
 * What only some users need lives outside the user:
 * - PENDING sessions wait in an array of client pointers (a client that leaves while pending
 *   leaves a stale pointer, skipped when read).
 * - Users held by the guard wait in an array of user pointers (a held user that changes again
 *   leaves a stale pointer, skipped on release).
 * - A user waiting out the offline delay has a struct offline_wait, found by the user's address
 *   in a third hash table and queued in deadline order.
 * Dirty, retry and forgotten users wait in singly linked queues through the users (list_next);
 * idle users (offline, nothing pending) in a doubly linked queue through the users (idle_prev,
 * idle_next), oldest first: every user joins it at its tail "now", except users restored from
 * the state file, which join it in any order and are sorted once, before it is next read.
 *
 * Invariants:
 * - a session is PENDING iff its user is NULL;
 * - user->sessions is the number of ACTIVE sessions pointing at the user;
 * - a user is on at most one of (dirty, retry, held, forgotten), recorded in user->list;
 *   reg->held counts the held ones;
 * - user->waiting iff reg->waits has an entry for it; user->offline_pending iff that entry is
 *   queued on reg->offline, which implies sessions == 0;
 * - user->idle iff it is on the idle queue iff published, not available in its last document,
 *   no session, not waiting, and in the name table; the queue is sorted by idle_at unless
 *   reg->idle_unsorted;
 * - user->gone iff the user left the name table (forgotten, or dropped while on the dirty list,
 *   which frees it when it pops it);
 * - reg->available counts users with sessions > 0, reg->active ACTIVE sessions, reg->known users
 *   in the name table with a document.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>
#include <utlist.h>

#include "clock.h"
#include "registry.h"
#include "testing.h"
#include "text.h"
#include "topic.h"

/* The longest MQTT topic, in bytes. */
#define TOPIC_MAX 65535u

/* How many idle users from the head forget_due looks at for one that is on no list. */
#define EVICT_SCAN 8

/* Which queue a user is on. */
enum user_list {
	USER_LIST_NONE = 0,
	USER_LIST_DIRTY,
	USER_LIST_RETRY,
	USER_LIST_HELD,
	USER_LIST_FORGOTTEN,
};

/* One MQTT connection. */
struct presence_session {
	/* The broker's client pointer: the hash key, never dereferenced here. */
	const void *client;
	/* The user this ACTIVE session counts towards; NULL while PENDING. */
	struct presence_user *user;
	UT_hash_handle hh;
};

struct presence_user {
	/* Handle for reg->users; the key is the name inside level[]. */
	UT_hash_handle hh;
	/* The next user on the same queue (dirty, retry or forgotten). */
	struct presence_user *list_next;
	/* Links on the idle queue. */
	struct presence_user *idle_prev, *idle_next;
	/* The last document published: what subscribers hold now (its state is the state's mark,
	 * presence_state_mark). Without a document, seq is the floor the user started from. */
	uint64_t seq;
	int64_t pub_since;
	/* The write limit's theoretical arrival time (GCRA), microseconds on the monotonic
	 * clock. */
	int64_t write_tat;
	/* The shared state. */
	struct presence_state state;
	unsigned int pub_sessions;
	/* Number of ACTIVE sessions. */
	unsigned int sessions;
	/* When the user became idle: seconds on the monotonic clock since reg->mono_base,
	 * rounded up (negative for a user restored as offline since before that). */
	int32_t idle_at;
	/* The last document's availability. */
	unsigned int pub_available : 1;
	/* Whether the user has a document (published, restored or adopted). */
	unsigned int published : 1;
	/* Which queue the user is on (enum user_list). */
	unsigned int list : 3;
	/* Whether the user has a struct offline_wait, and whether it is queued. */
	unsigned int waiting : 1;
	unsigned int offline_pending : 1;
	/* Whether the user is on the idle queue. */
	unsigned int idle : 1;
	/* Whether the user left the name table. */
	unsigned int gone : 1;
	/* Whether the name is stored after the level (encoding changed it) or is the level. */
	unsigned int name_apart : 1;
	/* Cluster mode: whether the last count sent for the user was above 0 (the user is kept
	 * until a count of 0 follows it, even without a document). */
	unsigned int counted : 1;
	/* "<encoded name>\0", then "<name>\0" when name_apart. */
	char level[];
};

/* What a user waiting out the offline delay needs; kept after the delay until the unavailable
 * document is published, for its since. */
struct offline_wait {
	struct presence_user *user;
	/* Monotonic time (ms) at which the delay ends. */
	int64_t deadline_ms;
	/* Wall-clock time (ms since the epoch) at which the last session left. */
	int64_t left_ms;
	struct offline_wait *prev, *next;
	UT_hash_handle hh;
};

/* A singly linked queue of users through list_next. */
struct user_queue {
	struct presence_user *head, *tail;
};

struct presence_registry {
	/* Document topic prefix, without trailing '/'. */
	char *prefix;
	size_t prefix_len;
	struct presence_session *sessions;
	/* Clients that logged in since the last promotion, oldest first, from pending_head on. */
	const void **pending;
	size_t pending_head, pending_len, pending_cap;
	struct presence_user *users;
	struct user_queue dirty;
	struct user_queue retry;
	struct user_queue forgotten;
	/* Users held by the guard; some may be stale. */
	struct presence_user **held_users;
	size_t held_len, held_cap;
	/* Idle users, oldest first. */
	struct presence_user *idle_head, *idle_tail;
	bool idle_unsorted;
	struct offline_wait *waits;
	struct offline_wait *offline;
	/* Open cursors. */
	struct presence_cursor *cursors[PRESENCE_REGISTRY_CURSORS];
	/* The since of the document being prepared. */
	int64_t prep_since_ms;
	/* Counters kept incrementally. */
	size_t available;
	size_t active;
	size_t known;
	size_t held;
	uint64_t forgotten_total;

	/* Settings (see registry.h). */
	struct presence_clock clock;
	/* The monotonic time idle_at counts from. */
	int64_t mono_base;
	int64_t offline_delay_ms;
	bool keep_state;
	struct presence_seq_guard guard;
	bool has_guard;
	uint64_t seq_floor;
	int64_t forget_after_s;
	size_t max_users;
	int64_t write_interval_us;
	int64_t write_window_us;
};

static int64_t system_monotonic_ms(void *arg)
{
	(void)arg;
	return presence_clock_monotonic_ms();
}

static int64_t system_wall_ms(void *arg)
{
	(void)arg;
	return presence_clock_wall_ms();
}

static const struct presence_clock system_clock = {system_monotonic_ms, system_wall_ms, NULL};

static int64_t mono_now(const struct presence_registry *reg)
{
	return reg->clock.monotonic_ms(reg->clock.arg);
}

struct presence_registry *presence_registry_new(const char *prefix)
{
	struct presence_registry *reg = calloc(1, sizeof(*reg));
	size_t len = strlen(prefix);

	if (reg == NULL) {
		return NULL;
	}
	reg->prefix = presence_text_dup(prefix, len);
	if (reg->prefix == NULL) {
		free(reg);
		return NULL;
	}
	reg->prefix_len = len;
	reg->clock = system_clock;
	reg->mono_base = mono_now(reg);
	return reg;
}

void presence_registry_set_clock(struct presence_registry *reg, const struct presence_clock *clock)
{
	reg->clock = clock != NULL ? *clock : system_clock;
	reg->mono_base = mono_now(reg);
}

void presence_registry_set_offline_delay(struct presence_registry *reg, int64_t delay_ms)
{
	reg->offline_delay_ms = delay_ms > 0 ? delay_ms : 0;
}

void presence_registry_set_keep_state(struct presence_registry *reg, bool keep)
{
	reg->keep_state = keep;
}

bool presence_registry_keep_state(const struct presence_registry *reg)
{
	return reg->keep_state;
}

void presence_registry_set_guard(struct presence_registry *reg,
                                 const struct presence_seq_guard *guard)
{
	reg->has_guard = guard != NULL;
	if (guard != NULL) {
		reg->guard = *guard;
	}
}

void presence_registry_set_forget_after(struct presence_registry *reg, int64_t forget_after_ms)
{
	/* Whole seconds, rounded up: idle_at counts seconds. */
	reg->forget_after_s = forget_after_ms > 0 ? (forget_after_ms + 999) / 1000 : 0;
}

void presence_registry_set_max_users(struct presence_registry *reg, size_t max_users)
{
	reg->max_users = max_users;
}

void presence_registry_set_write_limit(struct presence_registry *reg,
                                       unsigned int writes_per_second, unsigned int burst)
{
	if (writes_per_second == 0) {
		reg->write_interval_us = 0;
		return;
	}
	reg->write_interval_us = 1000000 / (int64_t)writes_per_second;
	if (reg->write_interval_us == 0) {
		reg->write_interval_us = 1;
	}
	reg->write_window_us = (int64_t)(burst > 0 ? burst - 1 : 0) * reg->write_interval_us;
}

void presence_registry_set_seq_floor(struct presence_registry *reg, uint64_t floor)
{
	if (floor > reg->seq_floor) {
		reg->seq_floor = floor;
	}
}

uint64_t presence_registry_seq_floor(const struct presence_registry *reg)
{
	return reg->seq_floor;
}

void presence_user_free(struct presence_user *user)
{
	if (user != NULL) {
		presence_state_release(&user->state);
		free(user);
	}
}

void presence_registry_free(struct presence_registry *reg)
{
	struct presence_session *session, *stmp;
	struct presence_user *user, *utmp;
	struct offline_wait *wait, *wtmp;

	if (reg == NULL) {
		return;
	}
	HASH_ITER(hh, reg->sessions, session, stmp)
	{
		HASH_DEL(reg->sessions, session);
		free(session);
	}
	HASH_ITER(hh, reg->waits, wait, wtmp)
	{
		HASH_DEL(reg->waits, wait);
		free(wait);
	}
	/* Users out of the name table are on the dirty or forgotten queue. */
	for (user = reg->dirty.head; user != NULL; user = utmp) {
		utmp = user->list_next;
		if (user->gone) {
			presence_user_free(user);
		}
	}
	for (user = reg->retry.head; user != NULL; user = utmp) {
		utmp = user->list_next;
		if (user->gone) {
			presence_user_free(user);
		}
	}
	for (user = reg->forgotten.head; user != NULL; user = utmp) {
		utmp = user->list_next;
		presence_user_free(user);
	}
	HASH_ITER(hh, reg->users, user, utmp)
	{
		HASH_DEL(reg->users, user);
		presence_user_free(user);
	}
	free(reg->held_users);
	free(reg->pending);
	free(reg->prefix);
	free(reg);
}

/* ---- queues --------------------------------------------------------------------------- */

static void queue_append(struct user_queue *q, struct presence_user *user)
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
static int32_t idle_seconds(const struct presence_registry *reg, int64_t mono_ms)
{
	int64_t s = mono_ms - reg->mono_base;

	s = s >= 0 ? (s + 999) / 1000 : -((-s) / 1000);
	return s > INT32_MAX ? INT32_MAX : s < INT32_MIN ? INT32_MIN : (int32_t)s;
}

static void idle_unlink(struct presence_registry *reg, struct presence_user *user)
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

static void idle_append(struct presence_registry *reg, struct presence_user *user)
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
static void idle_sync(struct presence_registry *reg, struct presence_user *user)
{
	bool should = user->published && !user->pub_available && user->sessions == 0 &&
	              !user->waiting && !user->gone;

	if (should && !user->idle) {
		user->idle_at = idle_seconds(reg, mono_now(reg));
		idle_append(reg, user);
	} else if (!should && user->idle) {
		idle_unlink(reg, user);
	}
}

/* Sorts the idle queue by idle_at (stable), after users were restored. */
static void idle_sort(struct presence_registry *reg)
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

/* ---- sessions ------------------------------------------------------------------------- */

static struct presence_session *session_lookup(const struct presence_registry *reg,
                                               const void *client)
{
	struct presence_session *session = NULL;

	HASH_FIND_PTR(reg->sessions, &client, session);
	return session;
}

/* Makes room for one more element in the array *items of *cap elements of size bytes, *len of
 * them used. Returns false (nothing changed) when memory runs out. */
static bool array_reserve(void **items, size_t *cap, size_t len, size_t size)
{
	size_t grown_cap;
	void *grown;

	if (len < *cap) {
		return true;
	}
	grown_cap = *cap > 0 ? 2 * *cap : 64;
	if (grown_cap > SIZE_MAX / size) {
		return false;
	}
	grown = realloc(*items, grown_cap * size);
	if (grown == NULL) {
		return false;
	}
	*items = grown;
	*cap = grown_cap;
	return true;
}

/* Adds a PENDING session of client to the table. Returns it, or NULL (nothing added). */
static struct presence_session *session_add(struct presence_registry *reg, const void *client)
{
	struct presence_session *session = calloc(1, sizeof(*session));

	if (session == NULL) {
		return NULL;
	}
	session->client = client;
	HASH_ADD_PTR(reg->sessions, client, session);
	if (session->hh.tbl == NULL) {
		free(session);
		return NULL;
	}
	return session;
}

enum presence_err presence_registry_session_pending(struct presence_registry *reg,
                                                    const void *client)
{
	struct presence_session *session;
	void *pending = (void *)reg->pending;

	if (session_lookup(reg, client) != NULL) {
		return PRESENCE_OK;
	}
	if (!array_reserve(&pending, &reg->pending_cap, reg->pending_len, sizeof(*reg->pending))) {
		return PRESENCE_ERR_NOMEM;
	}
	reg->pending = pending;
	session = session_add(reg, client);
	if (session == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	reg->pending[reg->pending_len++] = client;
	return PRESENCE_OK;
}

static bool client_pending(const struct presence_registry *reg, const void *client)
{
	struct presence_session *session = session_lookup(reg, client);

	return session != NULL && session->user == NULL;
}

const void *presence_registry_pending_next(struct presence_registry *reg)
{
	while (reg->pending_head < reg->pending_len) {
		const void *client = reg->pending[reg->pending_head];

		if (client_pending(reg, client)) {
			return client;
		}
		reg->pending_head++;
	}
	reg->pending_head = reg->pending_len = 0;
	return NULL;
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
	queue_append(&reg->dirty, user);
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
static void wait_end(struct presence_registry *reg, struct presence_user *user)
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
static void wait_begin(struct presence_registry *reg, struct presence_user *user)
{
	struct offline_wait *wait = calloc(1, sizeof(*wait));

	if (wait == NULL) {
		return;
	}
	wait->user = user;
	wait->deadline_ms = mono_now(reg) + reg->offline_delay_ms;
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

static void session_remove(struct presence_registry *reg, struct presence_session *session)
{
	HASH_DEL(reg->sessions, session);
	free(session);
}

static void session_attach(struct presence_registry *reg, struct presence_session *session,
                           struct presence_user *user)
{
	session->user = user;
	if (user->sessions++ == 0) {
		reg->available++;
		/* Back within the offline delay: nothing is published about the gap. */
		wait_end(reg, user);
		idle_sync(reg, user);
	}
	reg->active++;
	presence_registry_user_changed(reg, user);
}

/* Whether user has nothing to keep: no session, no document, no delay running, no count of
 * its sessions sent to the cluster without its end. */
static bool user_unused(const struct presence_user *user)
{
	return user->sessions == 0 && !user->published && !user->waiting && !user->counted;
}

/* Takes user out of the name table (cursors move past it, the idle queue lets it go, a stale
 * pointer to it in the held array is cleared: the user may be freed next). */
static void user_unlink(struct presence_registry *reg, struct presence_user *user)
{
	for (size_t i = 0; i < PRESENCE_REGISTRY_CURSORS; i++) {
		struct presence_cursor *c = reg->cursors[i];

		if (c != NULL && c->next == user) {
			c->next = user->hh.next;
		}
	}
	/* The held array is short: it empties at every release. */
	for (size_t i = 0; i < reg->held_len; i++) {
		if (reg->held_users[i] == user) {
			reg->held_users[i] = NULL;
		}
	}
	if (user->list == USER_LIST_HELD) {
		reg->held--;
		user->list = USER_LIST_NONE;
	}
	if (user->idle) {
		idle_unlink(reg, user);
	}
	if (user->published) {
		reg->known--;
	}
	HASH_DEL(reg->users, user);
	user->gone = true;
}

/* Takes user (no session) out of the registry and frees it: at once when it is on no queue,
 * otherwise when the dirty queue pops it (a user on the retry queue goes there first). */
static void user_remove(struct presence_registry *reg, struct presence_user *user)
{
	wait_end(reg, user);
	user_unlink(reg, user);
	if (user->list == USER_LIST_NONE) {
		presence_user_free(user);
	}
}

/* Frees user, which is on no list and has no session, if it has nothing to keep. */
static void discard_if_unused(struct presence_registry *reg, struct presence_user *user)
{
	if (user_unused(user) && user->list == USER_LIST_NONE) {
		user_remove(reg, user);
	}
}

enum presence_err presence_registry_session_start(struct presence_registry *reg, const void *client,
                                                  const char *user_name)
{
	struct presence_session *session = session_lookup(reg, client);
	struct presence_user *user;
	enum presence_err err;

	if (session == NULL || session->user != NULL) {
		return PRESENCE_OK;
	}
	if (reg->pending_head < reg->pending_len && reg->pending[reg->pending_head] == client) {
		reg->pending_head++;
	}
	if (user_name == NULL) {
		session_remove(reg, session);
		return PRESENCE_OK;
	}
	err = presence_registry_user_get(reg, user_name, &user);
	if (err != PRESENCE_OK) {
		session_remove(reg, session);
		return err;
	}
	session_attach(reg, session, user);
	return PRESENCE_OK;
}

enum presence_err presence_registry_session_connect(struct presence_registry *reg,
                                                    const void *client, const char *user_name)
{
	struct presence_session *session;
	struct presence_user *user;
	enum presence_err err;

	if (user_name == NULL || session_lookup(reg, client) != NULL) {
		return PRESENCE_OK;
	}
	err = presence_registry_user_get(reg, user_name, &user);
	if (err != PRESENCE_OK) {
		return err;
	}
	session = session_add(reg, client);
	if (session == NULL) {
		discard_if_unused(reg, user);
		return PRESENCE_ERR_NOMEM;
	}
	session_attach(reg, session, user);
	return PRESENCE_OK;
}

void presence_registry_session_gone(struct presence_registry *reg, const void *client)
{
	struct presence_session *session = session_lookup(reg, client);
	struct presence_user *user;

	if (session == NULL) {
		return;
	}
	user = session->user;
	session_remove(reg, session);
	if (user == NULL) {
		return;
	}
	if (--user->sessions == 0) {
		reg->available--;
		/* Only a user subscribers see as available has anything to wait for. */
		if (reg->offline_delay_ms > 0 && user->pub_available && !user->waiting) {
			wait_begin(reg, user);
		}
		idle_sync(reg, user);
	}
	reg->active--;
	presence_registry_user_changed(reg, user);
}

bool presence_registry_session_find(const struct presence_registry *reg, const void *client,
                                    struct presence_user **user)
{
	struct presence_session *session = session_lookup(reg, client);

	if (user != NULL) {
		*user = session != NULL ? session->user : NULL;
	}
	return session != NULL;
}

/* ---- users ----------------------------------------------------------------------------- */

struct presence_user *presence_registry_user_find(const struct presence_registry *reg,
                                                  const char *name)
{
	struct presence_user *user = NULL;

	HASH_FIND_STR(reg->users, name, user);
	return user;
}

/* Moves user (in the name table, on no list) to the forgotten queue. */
static void forget(struct presence_registry *reg, struct presence_user *user)
{
	if (user->seq > reg->seq_floor) {
		reg->seq_floor = user->seq;
	}
	user_unlink(reg, user);
	queue_append(&reg->forgotten, user);
	user->list = USER_LIST_FORGOTTEN;
	reg->forgotten_total++;
}

/* Returns the oldest idle user that is on no list among the first EVICT_SCAN, or NULL. */
static struct presence_user *evictable(struct presence_registry *reg)
{
	struct presence_user *user;
	size_t i;

	if (reg->idle_unsorted) {
		idle_sort(reg);
	}
	for (i = 0, user = reg->idle_head; user != NULL && i < EVICT_SCAN;
	     i++, user = user->idle_next) {
		if (user->list == USER_LIST_NONE) {
			return user;
		}
	}
	return NULL;
}

/* Creates the user named name (not in the table), ignoring max_users. */
static enum presence_err user_create(struct presence_registry *reg, const char *name,
                                     struct presence_user **out)
{
	size_t name_len = strlen(name);
	size_t level_len = presence_topic_encoded_len(name);
	size_t size;
	struct presence_user *user;

	/* Encoding only ever lengthens a name, so equal lengths mean an unchanged name. */
	if (level_len < name_len || reg->prefix_len + 1 + level_len > TOPIC_MAX) {
		return PRESENCE_ERR_INVAL;
	}
	size = offsetof(struct presence_user, level) + level_len + 1 +
	       (level_len != name_len ? name_len + 1 : 0);
	user = calloc(1, size > sizeof(*user) ? size : sizeof(*user));
	if (user == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	presence_topic_encode_user_into(name, user->level);
	user->name_apart = level_len != name_len;
	if (user->name_apart) {
		memcpy(user->level + level_len + 1, name, name_len + 1);
	}
	presence_state_init(&user->state);
	user->seq = reg->seq_floor;
	HASH_ADD_KEYPTR(hh, reg->users, presence_user_name(user), name_len, user);
	if (user->hh.tbl == NULL) {
		presence_user_free(user);
		return PRESENCE_ERR_NOMEM;
	}
	*out = user;
	return PRESENCE_OK;
}

enum presence_err presence_registry_user_get(struct presence_registry *reg, const char *name,
                                             struct presence_user **out)
{
	struct presence_user *user = presence_registry_user_find(reg, name);

	if (user != NULL) {
		*out = user;
		return PRESENCE_OK;
	}
	if (reg->max_users > 0 && HASH_COUNT(reg->users) >= reg->max_users) {
		struct presence_user *victim = evictable(reg);

		if (victim == NULL) {
			return PRESENCE_ERR_FULL;
		}
		if (reg->prefix_len + 1 + presence_topic_encoded_len(name) > TOPIC_MAX) {
			return PRESENCE_ERR_INVAL;
		}
		forget(reg, victim);
	}
	return user_create(reg, name, out);
}

const char *presence_user_name(const struct presence_user *user)
{
	return user->name_apart ? user->level + strlen(user->level) + 1 : user->level;
}

const char *presence_user_level(const struct presence_user *user)
{
	return user->level;
}

size_t presence_user_level_len(const struct presence_user *user)
{
	return strlen(user->level);
}

unsigned int presence_user_sessions(const struct presence_user *user)
{
	return user->sessions;
}

struct presence_state *presence_user_state(struct presence_user *user)
{
	return &user->state;
}

bool presence_user_offline_pending(const struct presence_user *user)
{
	return user->offline_pending;
}

uint64_t presence_user_seq(const struct presence_user *user)
{
	return user->seq;
}

size_t presence_registry_topic_len(const struct presence_registry *reg,
                                   const struct presence_user *user)
{
	return reg->prefix_len + 1 + strlen(user->level);
}

void presence_registry_topic_write(const struct presence_registry *reg,
                                   const struct presence_user *user, char *out)
{
	size_t level_len = strlen(user->level);

	memcpy(out, reg->prefix, reg->prefix_len);
	out[reg->prefix_len] = '/';
	memcpy(out + reg->prefix_len + 1, user->level, level_len + 1);
}

/* ---- cursors --------------------------------------------------------------------------- */

bool presence_registry_cursor_start(struct presence_registry *reg, struct presence_cursor *c)
{
	presence_registry_cursor_stop(reg, c);
	for (size_t i = 0; i < PRESENCE_REGISTRY_CURSORS; i++) {
		if (reg->cursors[i] == NULL) {
			reg->cursors[i] = c;
			c->next = reg->users;
			c->open = true;
			return true;
		}
	}
	return false;
}

struct presence_user *presence_registry_cursor_next(struct presence_registry *reg,
                                                    struct presence_cursor *c)
{
	struct presence_user *user;

	if (!c->open) {
		return NULL;
	}
	user = c->next;
	if (user == NULL) {
		presence_registry_cursor_stop(reg, c);
		return NULL;
	}
	c->next = user->hh.next;
	return user;
}

void presence_registry_cursor_stop(struct presence_registry *reg, struct presence_cursor *c)
{
	if (!c->open) {
		return;
	}
	for (size_t i = 0; i < PRESENCE_REGISTRY_CURSORS; i++) {
		if (reg->cursors[i] == c) {
			reg->cursors[i] = NULL;
		}
	}
	c->open = false;
	c->next = NULL;
}

/* ---- flushes --------------------------------------------------------------------------- */

void presence_registry_offline_expire(struct presence_registry *reg)
{
	struct offline_wait *wait;
	int64_t now;

	if (reg->offline == NULL) {
		return;
	}
	now = mono_now(reg);
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
		int64_t s = (mono_now(reg) - reg->mono_base) / 1000;

		now_s = s > INT32_MAX ? INT32_MAX : s < INT32_MIN ? INT32_MIN : (int32_t)s;
	}
	while (done < limit) {
		bool over_cap = reg->max_users > 0 && HASH_COUNT(reg->users) > reg->max_users;
		struct presence_user *user;

		if (over_cap) {
			user = evictable(reg);
		} else {
			if (reg->idle_unsorted) {
				idle_sort(reg);
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
		forget(reg, user);
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
	user_remove(reg, user);
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
		discard_if_unused(reg, user);
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
		if (user_unused(user)) {
			/* A refused login's user (or one created for a write of a pending session
			 * that was refused): nothing to publish, nothing to keep. */
			user_unlink(reg, user);
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

	if (!array_reserve(&held, &reg->held_cap, reg->held_len, sizeof(*reg->held_users))) {
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
	if (user->published && available == user->pub_available &&
	    user->sessions == user->pub_sessions && state_same) {
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
	if (!user->published || available != user->pub_available) {
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
		wait_end(reg, user);
	}
	idle_sync(reg, user);
}

void presence_registry_document_failed(struct presence_registry *reg, struct presence_user *user)
{
	if (user->list == USER_LIST_NONE) {
		queue_append(&reg->retry, user);
		user->list = USER_LIST_RETRY;
	}
}

void presence_registry_flush_done(struct presence_registry *reg)
{
	struct presence_user *user;

	while ((user = queue_pop(&reg->retry)) != NULL) {
		queue_append(&reg->dirty, user);
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
			queue_append(&reg->dirty, user);
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
	return user->write_tat - mono_now(reg) * 1000 <= reg->write_window_us;
}

void presence_registry_write_charge(struct presence_registry *reg, struct presence_user *user)
{
	int64_t now_us;

	if (reg->write_interval_us == 0) {
		return;
	}
	now_us = mono_now(reg) * 1000;
	user->write_tat =
	    (user->write_tat > now_us ? user->write_tat : now_us) + reg->write_interval_us;
}

void presence_registry_user_record(const struct presence_user *user,
                                   struct presence_user_record *rec)
{
	rec->username = presence_user_name(user);
	rec->seq = user->published ? user->seq : 0;
	rec->since_ms = user->pub_since;
	rec->available = user->pub_available;
	rec->state_json = presence_state_marked_json(&user->state);
}

enum presence_err presence_registry_user_restore(struct presence_registry *reg, const char *name,
                                                 uint64_t seq, int64_t since_ms, bool available,
                                                 const cJSON *state)
{
	struct presence_user *user = presence_registry_user_find(reg, name);
	struct presence_state restored;
	enum presence_err err;

	if (user != NULL && user->published && seq < user->seq) {
		return PRESENCE_OK;
	}
	presence_state_init(&restored);
	if (state != NULL) {
		err = presence_state_restore(&restored, state);
		if (err != PRESENCE_OK) {
			return err;
		}
	}
	if (user == NULL) {
		err = user_create(reg, name, &user);
		if (err != PRESENCE_OK) {
			presence_state_release(&restored);
			return err;
		}
	}
	/* The recorded state is the last document's; it stays the live one only when kept. */
	presence_state_release(&user->state);
	user->state = restored;
	presence_state_mark(&user->state);
	if (!reg->keep_state) {
		presence_state_clear(&user->state);
	}
	user->seq = seq;
	user->pub_since = since_ms;
	user->pub_available = available;
	if (!user->published) {
		user->published = true;
		reg->known++;
	}
	if (user->idle) {
		idle_unlink(reg, user);
	}
	if (!available) {
		/* Idle since its document's since, as far as the clocks tell (never in the
		 * future): the queue is sorted before it is next read. */
		int64_t wall = reg->clock.wall_ms(reg->clock.arg);
		int64_t ago = wall > since_ms ? wall - since_ms : 0;

		user->idle_at = idle_seconds(reg, mono_now(reg) - ago);
		idle_append(reg, user);
		reg->idle_unsorted = true;
	}
	presence_registry_user_changed(reg, user);
	return PRESENCE_OK;
}

bool presence_registry_user_drop(struct presence_registry *reg, const char *name, uint64_t seq)
{
	struct presence_user *user = presence_registry_user_find(reg, name);

	if (user == NULL || user->sessions > 0 || user->seq > seq) {
		return false;
	}
	user_remove(reg, user);
	return true;
}

void presence_registry_shift_seqs(struct presence_registry *reg, uint64_t offset)
{
	struct presence_user *user, *tmp;

	HASH_ITER(hh, reg->users, user, tmp)
	{
		user->seq += offset;
	}
	reg->seq_floor += offset;
}

enum presence_err presence_registry_user_adopt(struct presence_registry *reg,
                                               struct presence_user *user,
                                               const struct presence_document *doc)
{
	enum presence_err err = presence_state_adopt(&user->state, doc->state_json);

	if (err != PRESENCE_OK) {
		return err;
	}
	presence_state_mark(&user->state);
	user->seq = doc->seq;
	user->pub_since = doc->since_ms;
	user->pub_available = doc->available;
	user->pub_sessions = doc->sessions;
	if (!user->published) {
		user->published = true;
		reg->known++;
	}
	idle_sync(reg, user);
	return PRESENCE_OK;
}

size_t presence_registry_user_count(const struct presence_registry *reg)
{
	return HASH_COUNT(reg->users);
}

size_t presence_registry_available_count(const struct presence_registry *reg)
{
	return reg->available;
}

size_t presence_registry_active_session_count(const struct presence_registry *reg)
{
	return reg->active;
}

size_t presence_registry_known_count(const struct presence_registry *reg)
{
	return reg->known;
}

uint64_t presence_registry_forgotten_total(const struct presence_registry *reg)
{
	return reg->forgotten_total;
}
