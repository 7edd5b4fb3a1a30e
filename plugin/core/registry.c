/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Sessions and users (see registry.h for the lifecycle this models).
 *
 * Two uthash tables: sessions keyed by the broker's client pointer, users keyed by name (its
 * insertion order is the users' creation order, which the state file's cursor follows). A user
 * is known for as long as the plugin runs, so what it costs is what the plugin costs per known
 * user, and what it touches is what every event touches: each user is ONE allocation, holding
 * its hash handle, its counters, its state (embedded; only a non-empty state has text of its
 * own), the low halves of its save bookkeeping, its flags, and its document topic with the name
 * after it (or the name is the topic's last level when encoding changed nothing). The state is
 * not copied for the "last document": the state module keeps the text a document showed only
 * while a write has replaced it.
 *
 * What only some users need lives outside the user, so that the others do not pay for it:
 * - PENDING sessions wait for the end of the loop iteration in an array of client pointers, so
 *   a session is just its key, its user and its hash handle. A client that goes away while
 *   pending leaves a stale pointer there, skipped when the array is read (the pointer no
 *   longer names a pending session).
 * - Users held by the seq margin wait in an array of user pointers. A held user that changes
 *   again goes to the dirty queue and leaves a stale pointer behind (skipped when a save
 *   completes: the user is no longer marked held); held again, it is simply added again.
 * - A user waiting out the offline delay has a struct offline_wait, found by the user's
 *   address in a third hash table and queued in deadline order; the user only has a flag.
 * Dirty users and users whose publish failed wait in two singly linked queues through the
 * users (one link per user; adding never allocates).
 *
 * Invariants:
 * - a session is PENDING iff its user is NULL, and every PENDING session's client is in
 *   reg->pending at or after reg->pending_head;
 * - user->sessions is the number of ACTIVE sessions pointing at the user;
 * - a user is on at most one of (dirty queue, retry queue, held), recorded in user->list, and
 *   reg->held counts the held ones, each of which is in reg->held_users;
 * - user->waiting iff reg->waits has an entry for the user; user->offline_pending iff that
 *   entry is queued on reg->offline, which implies sessions == 0; the queue is sorted by
 *   deadline because every deadline is "queued at + the same delay";
 * - reg->available counts users with sessions > 0, reg->active counts ACTIVE sessions,
 *   reg->known counts users with user->published set;
 * - saves are numbered from 1 and run one at a time; reg->save_gen is the last one begun and
 *   reg->save_completed the last one that completed (0: none). A save that completes has
 *   written every user with seq > 0 that existed at its completion, so a user's saved_gen is
 *   either the completed save (then saved_seq is what the file records) or a later, unfinished
 *   or failed one (then recorded_seq is, when recorded_valid).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uthash.h>
#include <utlist.h>

#include "registry.h"
#include "topic.h"

/* The longest MQTT topic, in bytes. */
#define TOPIC_MAX 65535u

/* Which queue a user is on. */
enum user_list {
	USER_LIST_NONE = 0,
	USER_LIST_DIRTY,
	USER_LIST_RETRY,
	USER_LIST_HELD,
};

/* One MQTT connection. */
struct presence_session {
	/* The broker's client pointer: the hash key, never dereferenced here. */
	const void *client;
	/* The user this ACTIVE session counts towards; NULL while PENDING. */
	struct presence_user *user;
	/* Handle for reg->sessions. */
	UT_hash_handle hh;
};

struct presence_user {
	/* Handle for reg->users; the key is the name inside topic[]. */
	UT_hash_handle hh;
	/* The next user on the same queue (dirty or retry). */
	struct presence_user *list_next;
	/* The last document published: what subscribers hold now. seq 0 means none yet (after an
	 * unclean restart a new user starts at the seq margin instead, see the store). Its state
	 * is the state's mark (presence_state_mark). */
	uint64_t seq;
	int64_t pub_since;
	/* The shared state. */
	struct presence_state state;
	unsigned int pub_sessions;
	/* Number of ACTIVE sessions. */
	unsigned int sessions;
	/* State file bookkeeping: the save that last wrote the user and the low 32 bits of the seq
	 * it wrote, and of the seq recorded in the last completed save before that one (see
	 * registry.h: they read back exactly through seq_from_low). */
	uint32_t saved_gen;
	uint32_t saved_seq;
	uint32_t recorded_seq;
	/* Whether recorded_seq holds a seq (no completed save wrote the user before otherwise). */
	unsigned int recorded_valid : 1;
	/* The last document's availability. */
	unsigned int pub_available : 1;
	/* Whether the user has a document: one was published, or the state file recorded one.
	 * This is what makes a user "known" to queries and metrics. */
	unsigned int published : 1;
	/* Which queue the user is on (enum user_list). */
	unsigned int list : 2;
	/* Whether the user has a struct offline_wait, and whether it is queued (the user waits out
	 * the delay). */
	unsigned int waiting : 1;
	unsigned int offline_pending : 1;
	/* Whether the name is stored after the topic (encoding changed it) or is the topic's
	 * last level. */
	unsigned int name_apart : 1;
	/* "<prefix>/<encoded name>\0", then "<name>\0" when name_apart. The encoded name is
	 * everything after the topic's last '/' (encoding turns a '/' in a name into %2F), so
	 * neither its offset nor its length is stored. */
	char topic[];
};

/* What a user waiting out the offline delay needs (see registry.h); kept after the delay until
 * the unavailable document is published, for its since. */
struct offline_wait {
	/* The user: the hash key, and whose flags say that this exists. */
	struct presence_user *user;
	/* Monotonic time (ms) at which the delay ends. */
	int64_t deadline_ms;
	/* Wall-clock time (ms since the epoch) at which the last session left. */
	int64_t left_ms;
	/* Links on reg->offline while queued. */
	struct offline_wait *prev, *next;
	/* Handle for reg->waits. */
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
	/* Sessions by client pointer. */
	struct presence_session *sessions;
	/* Clients that logged in since the last promotion, oldest first, from pending_head on;
	 * some may be stale (see the top of the file). */
	const void **pending;
	size_t pending_head, pending_len, pending_cap;
	/* Users by name. */
	struct presence_user *users;
	/* Users to reconsider at the next flush, and those whose publish failed in this flush. */
	struct user_queue dirty;
	struct user_queue retry;
	/* Users held by the seq margin until a save completes; some may be stale (see the top of
	 * the file). */
	struct presence_user **held_users;
	size_t held_len, held_cap;
	/* Offline waits by user, and the queued ones, earliest deadline first. */
	struct offline_wait *waits;
	struct offline_wait *offline;
	/* The since of the document being prepared (see presence_registry_document_sent). */
	int64_t prep_since_ms;
	/* Counters kept incrementally (no scans). */
	size_t available;
	size_t active;
	size_t known;
	size_t held;

	/* Settings (see registry.h). */
	struct presence_clock clock;
	int64_t offline_delay_ms;
	bool keep_state;
	uint64_t seq_margin;
	uint64_t new_user_seq;

	/* Save generations: the last begun, the last completed; and whether anything recorded
	 * changed since the last save began. */
	uint32_t save_gen;
	uint32_t save_completed;
	bool unsaved;
};

/* The system clocks. */
static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t system_monotonic_ms(void *arg)
{
	(void)arg;
	return clock_ms(CLOCK_MONOTONIC);
}

static int64_t system_wall_ms(void *arg)
{
	(void)arg;
	return clock_ms(CLOCK_REALTIME);
}

static const struct presence_clock system_clock = {system_monotonic_ms, system_wall_ms, NULL};

static char *copy_string(const char *s)
{
	size_t len = strlen(s);
	char *copy = malloc(len + 1);

	if (copy != NULL) {
		memcpy(copy, s, len + 1);
	}
	return copy;
}

struct presence_registry *presence_registry_new(const char *prefix)
{
	struct presence_registry *reg = calloc(1, sizeof(*reg));

	if (reg == NULL) {
		return NULL;
	}
	reg->prefix = copy_string(prefix);
	if (reg->prefix == NULL) {
		free(reg);
		return NULL;
	}
	reg->prefix_len = strlen(prefix);
	reg->clock = system_clock;
	return reg;
}

void presence_registry_set_clock(struct presence_registry *reg, const struct presence_clock *clock)
{
	reg->clock = clock != NULL ? *clock : system_clock;
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

void presence_registry_set_seq_margin(struct presence_registry *reg, uint64_t margin)
{
	reg->seq_margin = margin;
}

uint64_t presence_registry_seq_margin(const struct presence_registry *reg)
{
	return reg->seq_margin;
}

void presence_registry_set_new_user_seq(struct presence_registry *reg, uint64_t seq)
{
	reg->new_user_seq = seq;
}

static void user_free(struct presence_user *user)
{
	presence_state_release(&user->state);
	free(user);
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
	HASH_ITER(hh, reg->users, user, utmp)
	{
		HASH_DEL(reg->users, user);
		user_free(user);
	}
	free(reg->held_users);
	free(reg->pending);
	free(reg->prefix);
	free(reg);
}

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

/* Adds a session of client (PENDING: no user yet) to the table. Returns it, or NULL when memory
 * runs out (nothing added). */
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

/* Whether client names a PENDING session. */
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

void presence_registry_user_changed(struct presence_registry *reg, struct presence_user *user)
{
	/* A user waiting for a retry goes back on the dirty queue at the end of this flush
	 * anyway (presence_registry_flush_done). */
	if (user->list == USER_LIST_DIRTY || user->list == USER_LIST_RETRY) {
		return;
	}
	if (user->list == USER_LIST_HELD) {
		/* Its pointer in reg->held_users is stale from now on. */
		reg->held--;
	}
	queue_append(&reg->dirty, user);
	user->list = USER_LIST_DIRTY;
}

/* Returns user's offline wait (user->waiting must be set). */
static struct offline_wait *wait_of(const struct presence_registry *reg,
                                    const struct presence_user *user)
{
	struct offline_wait *wait = NULL;

	HASH_FIND_PTR(reg->waits, &user, wait);
	return wait;
}

/* Forgets user's offline wait, if it has one: a session returned, or its unavailable document
 * was published. */
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
 * memory runs out the user is not queued: it goes offline at once, as without a delay. */
static void wait_begin(struct presence_registry *reg, struct presence_user *user)
{
	struct offline_wait *wait = calloc(1, sizeof(*wait));

	if (wait == NULL) {
		return;
	}
	wait->user = user;
	wait->deadline_ms = reg->clock.monotonic_ms(reg->clock.arg) + reg->offline_delay_ms;
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

/* Removes session from the table and frees it. A pending client's pointer stays in
 * reg->pending, where it is stale from now on. */
static void session_remove(struct presence_registry *reg, struct presence_session *session)
{
	HASH_DEL(reg->sessions, session);
	free(session);
}

/* Makes session an ACTIVE session of user and marks the user dirty. */
static void session_attach(struct presence_registry *reg, struct presence_session *session,
                           struct presence_user *user)
{
	session->user = user;
	if (user->sessions++ == 0) {
		reg->available++;
		/* Back within the offline delay: nothing is published about the gap. */
		wait_end(reg, user);
	}
	reg->active++;
	presence_registry_user_changed(reg, user);
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

struct presence_user *presence_registry_user_find(const struct presence_registry *reg,
                                                  const char *name)
{
	struct presence_user *user = NULL;

	HASH_FIND_STR(reg->users, name, user);
	return user;
}

enum presence_err presence_registry_user_get(struct presence_registry *reg, const char *name,
                                             struct presence_user **out)
{
	struct presence_user *user = presence_registry_user_find(reg, name);
	size_t name_len, level_len, topic_len, size;
	const char *key;

	if (user != NULL) {
		*out = user;
		return PRESENCE_OK;
	}
	name_len = strlen(name);
	level_len = presence_topic_encoded_len(name);
	topic_len = reg->prefix_len + 1 + level_len;
	/* Encoding only ever lengthens a name, so equal lengths mean an unchanged name. */
	size = offsetof(struct presence_user, topic) + topic_len + 1 +
	       (level_len != name_len ? name_len + 1 : 0);
	if (level_len < name_len || topic_len < level_len || size < topic_len) {
		return PRESENCE_ERR_NOMEM;
	}
	user = calloc(1, size > sizeof(*user) ? size : sizeof(*user));
	if (user == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	memcpy(user->topic, reg->prefix, reg->prefix_len);
	user->topic[reg->prefix_len] = '/';
	presence_topic_encode_user_into(name, user->topic + reg->prefix_len + 1);
	user->name_apart = level_len != name_len;
	if (user->name_apart) {
		memcpy(user->topic + topic_len + 1, name, name_len + 1);
	}
	presence_state_init(&user->state);
	user->seq = reg->new_user_seq;
	key = presence_user_name(user);
	HASH_ADD_KEYPTR(hh, reg->users, key, name_len, user);
	if (user->hh.tbl == NULL) {
		user_free(user);
		return PRESENCE_ERR_NOMEM;
	}
	*out = user;
	return PRESENCE_OK;
}

const char *presence_user_name(const struct presence_user *user)
{
	return user->name_apart ? user->topic + strlen(user->topic) + 1 : presence_user_level(user);
}

const char *presence_user_topic(const struct presence_user *user)
{
	return user->topic;
}

const char *presence_user_level(const struct presence_user *user)
{
	return strrchr(user->topic, '/') + 1;
}

size_t presence_user_level_len(const struct presence_user *user)
{
	return strlen(presence_user_level(user));
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

struct presence_user *presence_registry_user_first(const struct presence_registry *reg)
{
	return reg->users;
}

struct presence_user *presence_registry_user_next(const struct presence_user *user)
{
	return user->hh.next;
}

void presence_registry_offline_expire(struct presence_registry *reg)
{
	struct offline_wait *wait;
	int64_t now;

	if (reg->offline == NULL) {
		return;
	}
	now = reg->clock.monotonic_ms(reg->clock.arg);
	while ((wait = reg->offline) != NULL && wait->deadline_ms <= now) {
		/* The wait stays (out of the queue) for the since of the unavailable document. */
		DL_DELETE(reg->offline, wait);
		wait->user->offline_pending = false;
		presence_registry_user_changed(reg, wait->user);
	}
}

struct presence_user *presence_registry_dirty_next(struct presence_registry *reg)
{
	struct presence_user *user = queue_pop(&reg->dirty);

	if (user != NULL) {
		user->list = USER_LIST_NONE;
	}
	return user;
}

/* Returns the seq whose low 32 bits are low, at most user->seq and less than 2^32 below it. */
static uint64_t seq_from_low(const struct presence_user *user, uint32_t low)
{
	return user->seq - (uint32_t)((uint32_t)user->seq - low);
}

/* Puts user on the held list. Returns PRESENCE_ERR_NOMEM (nothing changed) when the list
 * cannot grow. */
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
	/* Presence state lives while the user is online (unless kept): it is dropped when the
	 * user is unavailable at the end of the iteration (or of the offline delay), not at the
	 * disconnect itself, so a takeover (old session gone, new one promoted in the same
	 * iteration) or a reconnect within the delay keeps it. */
	if (!available && !reg->keep_state) {
		presence_state_clear(&user->state);
	}
	state_same = !presence_state_changed_since_mark(&user->state);
	if (user->seq > 0 && available == user->pub_available &&
	    user->sessions == user->pub_sessions && state_same) {
		/* A change undone: the live state is the published one again, so the text the
		 * change replaced need not be kept any longer. */
		presence_state_mark(&user->state);
		return PRESENCE_OK;
	}
	if (user->seq == 0 && !available && state_same) {
		/* Never published and nothing to say: the user was never online. */
		return PRESENCE_OK;
	}
	if (reg->seq_margin > 0 &&
	    user->seq + 1 > presence_registry_user_recorded_seq(reg, user) + reg->seq_margin) {
		/* The state file does not cover this seq yet: wait for a save to complete. */
		return hold(reg, user);
	}
	if (user->seq == 0 || available != user->pub_available) {
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
	/* Nothing about the user changed since presence_registry_document_prepare: the adapter
	 * publishes right after preparing. */
	reg->unsaved = true;
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

size_t presence_registry_held_count(const struct presence_registry *reg)
{
	return reg->held;
}

void presence_registry_user_record(const struct presence_user *user,
                                   struct presence_user_record *rec)
{
	rec->username = presence_user_name(user);
	rec->seq = user->seq;
	rec->since_ms = user->pub_since;
	rec->available = user->pub_available;
	rec->state_json = presence_state_marked_json(&user->state);
}

/* Takes user, just created by presence_registry_user_get and not used since, out of the
 * registry and frees it. */
static void user_discard(struct presence_registry *reg, struct presence_user *user)
{
	HASH_DEL(reg->users, user);
	user_free(user);
}

enum presence_err presence_registry_user_restore(struct presence_registry *reg, const char *name,
                                                 uint64_t seq, int64_t since_ms, bool available,
                                                 const cJSON *state)
{
	struct presence_user *user;
	enum presence_err err;

	if (presence_registry_user_find(reg, name) != NULL ||
	    reg->prefix_len + 1 + presence_topic_encoded_len(name) > TOPIC_MAX) {
		return PRESENCE_ERR_INVAL;
	}
	err = presence_registry_user_get(reg, name, &user);
	if (err != PRESENCE_OK) {
		return err;
	}
	if (state != NULL) {
		err = presence_state_restore(&user->state, state);
		if (err != PRESENCE_OK) {
			user_discard(reg, user);
			return err;
		}
	}
	/* The recorded state is the last document's; it stays the live one only when kept. */
	presence_state_mark(&user->state);
	if (!reg->keep_state) {
		presence_state_clear(&user->state);
	}
	user->seq = seq;
	user->pub_since = since_ms;
	user->pub_available = available;
	user->published = true;
	reg->known++;
	presence_registry_user_changed(reg, user);
	return PRESENCE_OK;
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
	reg->unsaved = true;
	return PRESENCE_OK;
}

uint64_t presence_registry_save_begin(struct presence_registry *reg)
{
	reg->unsaved = false;
	return ++reg->save_gen;
}

void presence_registry_user_saved(struct presence_registry *reg, struct presence_user *user)
{
	if (user->saved_gen == reg->save_gen) {
		user->saved_seq = (uint32_t)user->seq;
		return;
	}
	/* The save that wrote the user before: if it completed, its seq is now the recorded one
	 * (until this save completes too). */
	if (user->saved_gen != 0 && user->saved_gen <= reg->save_completed) {
		user->recorded_seq = user->saved_seq;
		user->recorded_valid = true;
	}
	user->saved_gen = reg->save_gen;
	user->saved_seq = (uint32_t)user->seq;
}

void presence_registry_save_done(struct presence_registry *reg)
{
	size_t i;

	reg->save_completed = reg->save_gen;
	for (i = 0; i < reg->held_len; i++) {
		struct presence_user *user = reg->held_users[i];

		/* Stale entries: users that changed while held (and maybe were held again). */
		if (user->list == USER_LIST_HELD) {
			reg->held--;
			queue_append(&reg->dirty, user);
			user->list = USER_LIST_DIRTY;
		}
	}
	reg->held_len = 0;
}

void presence_registry_save_failed(struct presence_registry *reg)
{
	reg->unsaved = true;
}

bool presence_registry_unsaved(const struct presence_registry *reg)
{
	return reg->unsaved;
}

uint64_t presence_registry_user_recorded_seq(const struct presence_registry *reg,
                                             const struct presence_user *user)
{
	if (user->saved_gen != 0 && user->saved_gen <= reg->save_completed) {
		return seq_from_low(user, user->saved_seq);
	}
	return user->recorded_valid ? seq_from_low(user, user->recorded_seq) : 0;
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
