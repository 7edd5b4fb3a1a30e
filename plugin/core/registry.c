/*
 * Sessions and users (see registry.h for the lifecycle this models).
 *
 * Two uthash tables: sessions keyed by the broker's client pointer, users keyed by name (its
 * insertion order is the users' creation order, which the state file's cursor follows).
 * Intrusive lists (utlist, so adding and removing never allocates): the PENDING sessions that
 * wait for the end of the loop iteration; the dirty users whose document must be reconsidered,
 * the users whose publish failed in this flush and the users held by the seq margin; and the
 * users waiting out the offline delay, in deadline order. A user's "last document" fields
 * describe what subscribers currently hold; a document is due exactly when the user's live
 * values differ from them.
 *
 * Invariants:
 * - a session is on the pending list iff its user is NULL;
 * - user->sessions is the number of ACTIVE sessions pointing at the user;
 * - a user is on exactly one of (nothing, dirty, retry, held), recorded in user->list, and
 *   reg->held counts the held ones;
 * - a user is on the offline queue iff user->offline_pending, which implies sessions == 0;
 *   the queue is sorted by deadline because every deadline is "queued at + the same delay";
 * - reg->available counts users with sessions > 0, reg->active counts ACTIVE sessions,
 *   reg->known counts users with user->published set;
 * - saves are numbered from 1 and run one at a time; reg->save_gen is the last one begun and
 *   reg->save_completed the last one that completed (0: none). A save that completes has
 *   written every user with seq > 0 that existed at its completion, so a user's saved_gen is
 *   either the completed save (then saved_seq is what the file records) or a later, unfinished
 *   or failed one (then recorded_seq is).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uthash.h>
#include <utlist.h>

#include "registry.h"
#include "topic.h"

/* The longest MQTT topic, in bytes. */
#define TOPIC_MAX 65535u

/* Which intrusive list a user is on. */
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

	/* The last document published: what subscribers hold now. seq 0 means none yet (after an
	 * unclean restart a new user starts at the seq margin instead, see the store). */
	uint64_t seq;
	/* Whether the user has a document: one was published, or the state file recorded one.
	 * This is what makes a user "known" to queries and metrics. */
	bool published;
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

	/* Offline delay: whether the user waits on reg->offline, its deadline (monotonic ms) and
	 * the links; left_valid and left_ms: the wall-clock time its last session left, for the
	 * since of the unavailable document (valid from the queueing until a session returns). */
	bool offline_pending;
	int64_t offline_deadline;
	struct presence_user *offline_prev, *offline_next;
	bool left_valid;
	int64_t left_ms;

	/* State file bookkeeping: the save that last wrote the user and the seq it wrote, and the
	 * seq recorded in the last completed save before that one. */
	uint64_t saved_gen;
	uint64_t saved_seq;
	uint64_t recorded_seq;

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
	/* Users to reconsider at the next flush, those whose publish failed in this flush and
	 * those held by the seq margin until a save completes. */
	struct presence_user *dirty;
	struct presence_user *retry;
	struct presence_user *held_users;
	/* Users waiting out the offline delay, earliest deadline first. */
	struct presence_user *offline;
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
	uint64_t save_gen;
	uint64_t save_completed;
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
	} else if (user->list == USER_LIST_HELD) {
		DL_DELETE2(reg->held_users, user, list_prev, list_next);
		reg->held--;
	}
	user->list = USER_LIST_NONE;
}

/* Queues user (whose last session just left) to go offline when the delay has passed. */
static void offline_enqueue(struct presence_registry *reg, struct presence_user *user)
{
	user->offline_pending = true;
	user->offline_deadline = reg->clock.monotonic_ms(reg->clock.arg) + reg->offline_delay_ms;
	user->left_valid = true;
	user->left_ms = reg->clock.wall_ms(reg->clock.arg);
	DL_APPEND2(reg->offline, user, offline_prev, offline_next);
}

/* Takes user off the offline queue. */
static void offline_dequeue(struct presence_registry *reg, struct presence_user *user)
{
	DL_DELETE2(reg->offline, user, offline_prev, offline_next);
	user->offline_pending = false;
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
		/* Back within the offline delay: nothing is published about the gap. */
		if (user->offline_pending) {
			offline_dequeue(reg, user);
		}
		user->left_valid = false;
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
		/* Only a user subscribers see as available has anything to wait for. */
		if (reg->offline_delay_ms > 0 && user->pub_available) {
			offline_enqueue(reg, user);
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
	user->seq = reg->new_user_seq;
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
	struct presence_user *user;
	int64_t now;

	if (reg->offline == NULL) {
		return;
	}
	now = reg->clock.monotonic_ms(reg->clock.arg);
	while ((user = reg->offline) != NULL && user->offline_deadline <= now) {
		offline_dequeue(reg, user);
		presence_registry_user_changed(reg, user);
	}
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

	*due = false;
	free(user->prep_state);
	user->prep_state = NULL;

	/* Waiting out the offline delay: subscribers keep seeing the user as it was. */
	if (user->offline_pending) {
		return PRESENCE_OK;
	}
	/* Presence state lives while the user is online (unless kept): it is dropped when the
	 * user is unavailable at the end of the iteration (or of the offline delay), not at the
	 * disconnect itself, so a takeover (old session gone, new one promoted in the same
	 * iteration) or a reconnect within the delay keeps it. */
	if (!available && !reg->keep_state) {
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
	if (reg->seq_margin > 0 &&
	    user->seq + 1 > presence_registry_user_recorded_seq(reg, user) + reg->seq_margin) {
		/* The state file does not cover this seq yet: wait for a save to complete. */
		user_unlist(reg, user);
		DL_APPEND2(reg->held_users, user, list_prev, list_next);
		user->list = USER_LIST_HELD;
		reg->held++;
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
	if (user->seq == 0 || available != user->pub_available) {
		/* Going offline after the delay: since is when the last session left. */
		user->prep_since = !available && user->left_valid ? user->left_ms : now_ms;
	} else {
		user->prep_since = user->pub_since;
	}

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
	reg->unsaved = true;
	user->seq++;
	if (!user->published) {
		user->published = true;
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
	if (!user->published) {
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

size_t presence_registry_held_count(const struct presence_registry *reg)
{
	return reg->held;
}

void presence_registry_user_record(const struct presence_user *user,
                                   struct presence_user_record *rec)
{
	rec->username = user->name;
	rec->seq = user->seq;
	rec->since_ms = user->pub_since;
	rec->available = user->pub_available;
	rec->state_json = published_state(user);
}

enum presence_err presence_registry_user_restore(struct presence_registry *reg, const char *name,
                                                 uint64_t seq, int64_t since_ms, bool available,
                                                 const cJSON *state)
{
	struct presence_state *recorded = NULL;
	struct presence_user *user;
	char *pub_state = NULL;
	enum presence_err err;

	if (presence_registry_user_find(reg, name) != NULL ||
	    reg->prefix_len + 1 + presence_topic_encoded_len(name) > TOPIC_MAX) {
		return PRESENCE_ERR_INVAL;
	}
	if (state != NULL) {
		recorded = presence_state_new();
		if (recorded == NULL) {
			return PRESENCE_ERR_NOMEM;
		}
		err = presence_state_restore(recorded, state);
		if (err != PRESENCE_OK) {
			goto out_free_state;
		}
		err = PRESENCE_ERR_NOMEM;
		if (!presence_state_is_empty(recorded)) {
			pub_state = copy_string(presence_state_json(recorded));
			if (pub_state == NULL) {
				goto out_free_state;
			}
		}
	}
	err = presence_registry_user_get(reg, name, &user);
	if (err != PRESENCE_OK) {
		goto out_free_state;
	}
	user->seq = seq;
	user->pub_since = since_ms;
	user->pub_available = available;
	user->pub_state = pub_state;
	user->published = true;
	reg->known++;
	if (recorded != NULL && reg->keep_state) {
		presence_state_free(user->state);
		user->state = recorded;
		recorded = NULL;
	}
	presence_state_free(recorded);
	presence_registry_user_changed(reg, user);
	return PRESENCE_OK;

out_free_state:
	free(pub_state);
	presence_state_free(recorded);
	return err;
}

uint64_t presence_registry_save_begin(struct presence_registry *reg)
{
	reg->unsaved = false;
	return ++reg->save_gen;
}

void presence_registry_user_saved(struct presence_registry *reg, struct presence_user *user)
{
	if (user->saved_gen == reg->save_gen) {
		user->saved_seq = user->seq;
		return;
	}
	/* The save that wrote the user before: if it completed, its seq is now the recorded one
	 * (until this save completes too). */
	if (user->saved_gen != 0 && user->saved_gen <= reg->save_completed) {
		user->recorded_seq = user->saved_seq;
	}
	user->saved_gen = reg->save_gen;
	user->saved_seq = user->seq;
}

void presence_registry_save_done(struct presence_registry *reg)
{
	struct presence_user *user;

	reg->save_completed = reg->save_gen;
	while ((user = reg->held_users) != NULL) {
		presence_registry_user_changed(reg, user);
	}
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
		return user->saved_seq;
	}
	return user->recorded_seq;
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
