/*
 * Sessions and users (see registry.h for the lifecycle this models).
 *
 * Two uthash tables: sessions keyed by the broker's client pointer, users keyed by name. Two
 * intrusive lists (utlist, so adding and removing never allocates): the PENDING sessions that
 * wait for the end of the loop iteration, and the dirty users whose document must be
 * reconsidered. A user's "last document" fields describe what subscribers currently hold; a
 * document is due exactly when the user's live values differ from them.
 *
 * Invariants:
 * - a session is on the pending list iff its user is NULL;
 * - user->sessions is the number of ACTIVE sessions pointing at the user;
 * - a user is on exactly one of (nothing, dirty list, retry list), recorded in user->list;
 * - reg->available counts users with sessions > 0, reg->active counts ACTIVE sessions,
 *   reg->known counts users with seq > 0.
 */
#include <stdlib.h>
#include <string.h>

#include <uthash.h>
#include <utlist.h>

#include "registry.h"
#include "topic.h"

/* Which intrusive list a user is on. */
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
	/* Pending-list links (only while PENDING). */
	struct presence_session *prev, *next;
	/* Handle for reg->sessions. */
	UT_hash_handle hh;
};

struct presence_user {
	/* The user name, unencoded (the hash key). */
	char *name;
	/* The document topic "<prefix>/<encoded name>". */
	char *topic;
	/* Offset of the encoded name inside topic, and its length. */
	size_t level_off, level_len;
	/* Number of ACTIVE sessions. */
	unsigned int sessions;
	/* The shared state. */
	struct presence_state *state;

	/* The last document published: what subscribers hold now. seq 0 means none yet. */
	uint64_t seq;
	bool pub_available;
	unsigned int pub_sessions;
	int64_t pub_since;
	/* Compact state of the last document; NULL before the first one (equivalent to "{}"). */
	char *pub_state;

	/* The document prepared by presence_registry_document_prepare, until sent or failed. */
	bool prep_available;
	unsigned int prep_sessions;
	int64_t prep_since;
	/* Copy of the prepared state text, or NULL when it equals pub_state. */
	char *prep_state;

	/* Which list the user is on, and the links. */
	enum user_list list;
	struct presence_user *list_prev, *list_next;
	/* Handle for reg->users. */
	UT_hash_handle hh;
};

struct presence_registry {
	/* Document topic prefix, without trailing '/'. */
	char *prefix;
	size_t prefix_len;
	/* Sessions by client pointer. */
	struct presence_session *sessions;
	/* Sessions waiting to be promoted, oldest first. */
	struct presence_session *pending;
	/* Users by name. */
	struct presence_user *users;
	/* Users to reconsider at the next flush, and those whose publish failed in this flush. */
	struct presence_user *dirty;
	struct presence_user *retry;
	/* Counters kept incrementally (no scans). */
	size_t available;
	size_t active;
	size_t known;
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
	presence_state_free(user->state);
	free(user->pub_state);
	free(user->prep_state);
	free(user->topic);
	free(user->name);
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

enum presence_err presence_registry_session_pending(struct presence_registry *reg,
                                                    const void *client)
{
	struct presence_session *session;

	if (session_lookup(reg, client) != NULL) {
		return PRESENCE_OK;
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
	DL_APPEND(reg->pending, session);
	return PRESENCE_OK;
}

const void *presence_registry_pending_next(const struct presence_registry *reg)
{
	return reg->pending != NULL ? reg->pending->client : NULL;
}

/* Takes user off whichever list it is on. */
static void user_unlist(struct presence_registry *reg, struct presence_user *user)
{
	if (user->list == USER_LIST_DIRTY) {
		DL_DELETE2(reg->dirty, user, list_prev, list_next);
	} else if (user->list == USER_LIST_RETRY) {
		DL_DELETE2(reg->retry, user, list_prev, list_next);
	}
	user->list = USER_LIST_NONE;
}

void presence_registry_user_changed(struct presence_registry *reg, struct presence_user *user)
{
	if (user->list == USER_LIST_DIRTY) {
		return;
	}
	user_unlist(reg, user);
	DL_APPEND2(reg->dirty, user, list_prev, list_next);
	user->list = USER_LIST_DIRTY;
}

/* Removes session from the table (and the pending list) and frees it. */
static void session_remove(struct presence_registry *reg, struct presence_session *session)
{
	if (session->user == NULL) {
		DL_DELETE(reg->pending, session);
	}
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
	if (user_name == NULL) {
		session_remove(reg, session);
		return PRESENCE_OK;
	}
	err = presence_registry_user_get(reg, user_name, &user);
	if (err != PRESENCE_OK) {
		session_remove(reg, session);
		return err;
	}
	DL_DELETE(reg->pending, session);
	session->prev = session->next = NULL;
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

/* Builds "<prefix>/<encoded name>" for a new user. */
static enum presence_err user_make_topic(const struct presence_registry *reg,
                                         struct presence_user *user)
{
	size_t level_len = presence_topic_encoded_len(user->name);
	char *level = presence_topic_encode_user(user->name);

	if (level == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	user->topic = malloc(reg->prefix_len + 1 + level_len + 1);
	if (user->topic == NULL) {
		free(level);
		return PRESENCE_ERR_NOMEM;
	}
	memcpy(user->topic, reg->prefix, reg->prefix_len);
	user->topic[reg->prefix_len] = '/';
	memcpy(user->topic + reg->prefix_len + 1, level, level_len + 1);
	user->level_off = reg->prefix_len + 1;
	user->level_len = level_len;
	free(level);
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
	user = calloc(1, sizeof(*user));
	if (user == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	user->name = copy_string(name);
	if (user->name == NULL || user_make_topic(reg, user) != PRESENCE_OK) {
		goto out_free_user;
	}
	user->state = presence_state_new();
	if (user->state == NULL) {
		goto out_free_user;
	}
	HASH_ADD_KEYPTR(hh, reg->users, user->name, strlen(user->name), user);
	if (user->hh.tbl == NULL) {
		goto out_free_user;
	}
	*out = user;
	return PRESENCE_OK;

out_free_user:
	user_free(user);
	return PRESENCE_ERR_NOMEM;
}

const char *presence_user_name(const struct presence_user *user)
{
	return user->name;
}

const char *presence_user_topic(const struct presence_user *user)
{
	return user->topic;
}

const char *presence_user_level(const struct presence_user *user)
{
	return user->topic + user->level_off;
}

size_t presence_user_level_len(const struct presence_user *user)
{
	return user->level_len;
}

unsigned int presence_user_sessions(const struct presence_user *user)
{
	return user->sessions;
}

struct presence_state *presence_user_state(struct presence_user *user)
{
	return user->state;
}

struct presence_user *presence_registry_dirty_next(struct presence_registry *reg)
{
	struct presence_user *user = reg->dirty;

	if (user != NULL) {
		user_unlist(reg, user);
	}
	return user;
}

/* The compact state of the user's last document. */
static const char *published_state(const struct presence_user *user)
{
	return user->pub_state != NULL ? user->pub_state : "{}";
}

enum presence_err presence_registry_document_prepare(struct presence_registry *reg,
                                                     struct presence_user *user, int64_t now_ms,
                                                     struct presence_document *doc, bool *due)
{
	bool available = user->sessions > 0;
	bool state_same;

	(void)reg;
	*due = false;
	free(user->prep_state);
	user->prep_state = NULL;

	/* Presence state lives while the user is online: it is dropped when the user is
	 * unavailable at the end of the iteration, not at the disconnect itself, so a takeover
	 * (old session gone, new one promoted in the same iteration) keeps it. */
	if (!available) {
		presence_state_clear(user->state);
	}
	state_same = strcmp(presence_state_json(user->state), published_state(user)) == 0;
	if (user->seq > 0 && available == user->pub_available &&
	    user->sessions == user->pub_sessions && state_same) {
		return PRESENCE_OK;
	}
	if (user->seq == 0 && !available && state_same) {
		/* Never published and nothing to say: the user was never online. */
		return PRESENCE_OK;
	}
	if (!state_same) {
		user->prep_state = copy_string(presence_state_json(user->state));
		if (user->prep_state == NULL) {
			return PRESENCE_ERR_NOMEM;
		}
	}
	user->prep_available = available;
	user->prep_sessions = user->sessions;
	user->prep_since =
	    (user->seq == 0 || available != user->pub_available) ? now_ms : user->pub_since;

	doc->username = user->name;
	doc->available = available;
	doc->sessions = user->sessions;
	doc->since_ms = user->prep_since;
	doc->seq = user->seq + 1;
	doc->state = presence_state_tree(user->state);
	*due = true;
	return PRESENCE_OK;
}

void presence_registry_document_sent(struct presence_registry *reg, struct presence_user *user)
{
	if (user->seq++ == 0) {
		reg->known++;
	}
	user->pub_available = user->prep_available;
	user->pub_sessions = user->prep_sessions;
	user->pub_since = user->prep_since;
	if (user->prep_state != NULL) {
		free(user->pub_state);
		user->pub_state = user->prep_state;
		user->prep_state = NULL;
	}
}

void presence_registry_document_failed(struct presence_registry *reg, struct presence_user *user)
{
	free(user->prep_state);
	user->prep_state = NULL;
	user_unlist(reg, user);
	DL_APPEND2(reg->retry, user, list_prev, list_next);
	user->list = USER_LIST_RETRY;
}

void presence_registry_flush_done(struct presence_registry *reg)
{
	struct presence_user *user;

	while ((user = reg->retry) != NULL) {
		presence_registry_user_changed(reg, user);
	}
}

bool presence_user_published(const struct presence_user *user, struct presence_document *doc,
                             const char **state_json)
{
	if (user->seq == 0) {
		return false;
	}
	doc->username = user->name;
	doc->available = user->pub_available;
	doc->sessions = user->pub_sessions;
	doc->since_ms = user->pub_since;
	doc->seq = user->seq;
	doc->state = NULL;
	*state_json = published_state(user);
	return true;
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
