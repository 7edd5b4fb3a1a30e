/*
 * Sessions and users (see registry.h for the lifecycle this models).
 *
 * Two uthash tables: sessions keyed by the broker's client pointer, users keyed by name. A user
 * is known for as long as the plugin runs, so what it costs is what the plugin costs per known
 * user, and what it touches is what every event touches: each user is ONE allocation, holding
 * its hash handle, its counters, its state (embedded; only a non-empty state has text of its
 * own) and its document topic with the name after it (or the name is the topic's last level
 * when encoding changed nothing). The state is not copied for the "last document": the state
 * module keeps the text a document showed only while a write has replaced it.
 *
 * PENDING sessions wait for the end of the loop iteration in an array of client pointers, not
 * in a list through the sessions, so a session is just its key, its user and its hash handle.
 * A client that goes away while pending leaves a stale pointer there, skipped when the array is
 * read (the pointer no longer names a pending session). Dirty users and users whose publish
 * failed wait in two singly linked queues through the users (one link per user; adding never
 * allocates).
 *
 * Invariants:
 * - a session is PENDING iff its user is NULL, and every PENDING session's client is in
 *   reg->pending at or after reg->pending_head;
 * - user->sessions is the number of ACTIVE sessions pointing at the user;
 * - a user is on at most one of (dirty queue, retry queue), recorded in user->list;
 * - reg->available counts users with sessions > 0, reg->active counts ACTIVE sessions.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "registry.h"
#include "topic.h"

/* Which queue a user is on. */
enum user_list {
	USER_LIST_NONE = 0,
	USER_LIST_DIRTY,
	USER_LIST_RETRY,
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
	/* The last document published: what subscribers hold now. seq 0 means none yet. Its
	 * state is the state's mark (presence_state_mark). */
	uint64_t seq;
	int64_t pub_since;
	/* The shared state. */
	struct presence_state state;
	unsigned int pub_sessions;
	/* Number of ACTIVE sessions. */
	unsigned int sessions;
	bool pub_available;
	/* Which queue the user is on (enum user_list). */
	unsigned char list;
	/* Whether the name is stored after the topic (encoding changed it) or is the topic's
	 * last level. */
	bool name_apart;
	/* "<prefix>/<encoded name>\0", then "<name>\0" when name_apart. The encoded name is
	 * everything after the topic's last '/' (encoding turns a '/' in a name into %2F), so
	 * neither its offset nor its length is stored. */
	char topic[];
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
	/* The time of the document being prepared (see presence_registry_document_sent). */
	int64_t prep_now_ms;
	/* Counters kept incrementally (no scans). */
	size_t available;
	size_t active;
};

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
	return reg;
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

	if (reg == NULL) {
		return;
	}
	HASH_ITER(hh, reg->sessions, session, stmp)
	{
		HASH_DEL(reg->sessions, session);
		free(session);
	}
	HASH_ITER(hh, reg->users, user, utmp)
	{
		HASH_DEL(reg->users, user);
		user_free(user);
	}
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

/* Makes room for one more pending client. Returns false when memory runs out. */
static bool pending_reserve(struct presence_registry *reg)
{
	size_t cap;
	const void **grown;

	if (reg->pending_len < reg->pending_cap) {
		return true;
	}
	cap = reg->pending_cap > 0 ? 2 * reg->pending_cap : 64;
	if (cap > SIZE_MAX / sizeof(*grown)) {
		return false;
	}
	grown = realloc(reg->pending, cap * sizeof(*grown));
	if (grown == NULL) {
		return false;
	}
	reg->pending = grown;
	reg->pending_cap = cap;
	return true;
}

enum presence_err presence_registry_session_pending(struct presence_registry *reg,
                                                    const void *client)
{
	struct presence_session *session;

	if (session_lookup(reg, client) != NULL) {
		return PRESENCE_OK;
	}
	if (!pending_reserve(reg)) {
		return PRESENCE_ERR_NOMEM;
	}
	session = calloc(1, sizeof(*session));
	if (session == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	session->client = client;
	HASH_ADD_PTR(reg->sessions, client, session);
	if (session->hh.tbl == NULL) {
		free(session);
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
	if (user->list != USER_LIST_NONE) {
		return;
	}
	queue_append(&reg->dirty, user);
	user->list = USER_LIST_DIRTY;
}

/* Removes session from the table and frees it. A pending client's pointer stays in
 * reg->pending, where it is stale from now on. */
static void session_remove(struct presence_registry *reg, struct presence_session *session)
{
	HASH_DEL(reg->sessions, session);
	free(session);
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
	session->user = user;
	if (user->sessions++ == 0) {
		reg->available++;
	}
	reg->active++;
	presence_registry_user_changed(reg, user);
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

struct presence_user *presence_registry_dirty_next(struct presence_registry *reg)
{
	struct presence_user *user = queue_pop(&reg->dirty);

	if (user != NULL) {
		user->list = USER_LIST_NONE;
	}
	return user;
}

enum presence_err presence_registry_document_prepare(struct presence_registry *reg,
                                                     struct presence_user *user, int64_t now_ms,
                                                     struct presence_document *doc, bool *due)
{
	bool available = user->sessions > 0;
	bool state_same;

	*due = false;
	/* Presence state lives while the user is online: it is dropped when the user is
	 * unavailable at the end of the iteration, not at the disconnect itself, so a takeover
	 * (old session gone, new one promoted in the same iteration) keeps it. */
	if (!available) {
		presence_state_clear(&user->state);
	}
	state_same = !presence_state_changed_since_mark(&user->state);
	if (user->seq > 0 && available == user->pub_available &&
	    user->sessions == user->pub_sessions && state_same) {
		return PRESENCE_OK;
	}
	if (user->seq == 0 && !available && state_same) {
		/* Never published and nothing to say: the user was never online. */
		return PRESENCE_OK;
	}
	reg->prep_now_ms = now_ms;
	doc->username = presence_user_name(user);
	doc->available = available;
	doc->sessions = user->sessions;
	doc->since_ms =
	    (user->seq == 0 || available != user->pub_available) ? now_ms : user->pub_since;
	doc->seq = user->seq + 1;
	doc->state_json = presence_state_json(&user->state);
	*due = true;
	return PRESENCE_OK;
}

void presence_registry_document_sent(struct presence_registry *reg, struct presence_user *user)
{
	bool available = user->sessions > 0;

	/* Nothing about the user changed since presence_registry_document_prepare: the adapter
	 * publishes right after preparing. */
	if (user->seq == 0 || available != user->pub_available) {
		user->pub_since = reg->prep_now_ms;
	}
	user->seq++;
	user->pub_available = available;
	user->pub_sessions = user->sessions;
	presence_state_mark(&user->state);
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
