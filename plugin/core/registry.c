/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The registry and its users (see registry.h for the lifecycle this models); sessions are in
 * registry_sessions.c, the queues and what is due in registry_flush.c, the structures and their
 * invariants in registry_private.h.
 *
 * Two uthash tables: sessions keyed by the broker's client pointer, users keyed by name (its
 * insertion order is the users' creation order, which cursors follow). Each user is ONE
 * allocation holding its hash handle, its queue links, its counters, its state (only a non-empty
 * state has text of its own), its flags and its encoded name (the topic level), with the name
 * itself after it when encoding changed it. The prefix of the document topic is the registry's,
 * not repeated in every user.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>
#include <utlist.h>

#include "clock.h"
#include "registry.h"
#include "registry_private.h"
#include "testing.h"
#include "text.h"
#include "topic.h"

/* The longest MQTT topic, in bytes. */
#define TOPIC_MAX 65535u

/* How many idle users from the head forget_due looks at for one that is on no list. */
#define EVICT_SCAN 8

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

int64_t presence__registry_mono_now(const struct presence_registry *reg)
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
	reg->mono_base = presence__registry_mono_now(reg);
	return reg;
}

void presence_registry_set_clock(struct presence_registry *reg, const struct presence_clock *clock)
{
	reg->clock = clock != NULL ? *clock : system_clock;
	reg->mono_base = presence__registry_mono_now(reg);
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
		presence_privacy_free(user->privacy);
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

bool presence__registry_user_unused(const struct presence_user *user)
{
	return user->sessions == 0 && !user->published && !user->waiting && !user->counted;
}

/* Takes user out of the name table (cursors move past it, the idle queue lets it go, a stale
 * pointer to it in the held array is cleared: the user may be freed next). */
void presence__registry_user_unlink(struct presence_registry *reg, struct presence_user *user)
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
		presence__registry_idle_unlink(reg, user);
	}
	if (user->published) {
		reg->known--;
	}
	HASH_DEL(reg->users, user);
	user->gone = true;
}

/* Takes user (no session) out of the registry and frees it: at once when it is on no queue,
 * otherwise when the dirty queue pops it (a user on the retry queue goes there first). */
void presence__registry_user_remove(struct presence_registry *reg, struct presence_user *user)
{
	presence__registry_wait_end(reg, user);
	presence__registry_user_unlink(reg, user);
	if (user->list == USER_LIST_NONE) {
		presence_user_free(user);
	}
}

/* Frees user, which is on no list and has no session, if it has nothing to keep. */
void presence__registry_discard_if_unused(struct presence_registry *reg, struct presence_user *user)
{
	if (presence__registry_user_unused(user) && user->list == USER_LIST_NONE) {
		presence__registry_user_remove(reg, user);
	}
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
void presence__registry_forget(struct presence_registry *reg, struct presence_user *user)
{
	if (user->seq > reg->seq_floor) {
		reg->seq_floor = user->seq;
	}
	presence__registry_user_unlink(reg, user);
	presence__registry_queue_append(&reg->forgotten, user);
	user->list = USER_LIST_FORGOTTEN;
	reg->forgotten_total++;
}

/* Returns the oldest idle user that is on no list among the first EVICT_SCAN, or NULL. */
struct presence_user *presence__registry_evictable(struct presence_registry *reg)
{
	struct presence_user *user;
	size_t i;

	if (reg->idle_unsorted) {
		presence__registry_idle_sort(reg);
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
		struct presence_user *victim = presence__registry_evictable(reg);

		if (victim == NULL) {
			return PRESENCE_ERR_FULL;
		}
		if (reg->prefix_len + 1 + presence_topic_encoded_len(name) > TOPIC_MAX) {
			return PRESENCE_ERR_INVAL;
		}
		presence__registry_forget(reg, victim);
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
		presence__registry_idle_unlink(reg, user);
	}
	if (!available) {
		/* Idle since its document's since, as far as the clocks tell (never in the
		 * future): the queue is sorted before it is next read. */
		int64_t wall = reg->clock.wall_ms(reg->clock.arg);
		int64_t ago = wall > since_ms ? wall - since_ms : 0;

		user->idle_at =
		    presence__registry_idle_seconds(reg, presence__registry_mono_now(reg) - ago);
		presence__registry_idle_append(reg, user);
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
	presence__registry_user_remove(reg, user);
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
	presence__registry_idle_sync(reg, user);
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

const struct presence_privacy *presence_user_privacy(const struct presence_user *user)
{
	return user->privacy;
}

void presence_registry_user_set_privacy(struct presence_user *user,
                                        struct presence_privacy *privacy)
{
	if (user->privacy != privacy) {
		presence_privacy_free(user->privacy);
		user->privacy = privacy;
	}
}

void presence_registry_user_widen(struct presence_registry *reg, struct presence_user *user,
                                  bool jump)
{
	if (!user->published) {
		return;
	}
	if (jump) {
		/* The next document is numbered with the wall clock (or seq + 1 if higher): no
		 * gap a watcher could count. Recorded as the last document's seq, so that the
		 * state file's guard holds the document until the jump is saved. */
		int64_t wall = reg->clock.wall_ms(reg->clock.arg);

		if (wall > 0 && (uint64_t)wall - 1 > user->seq) {
			user->seq = (uint64_t)wall - 1;
		}
	}
	user->widened = true;
	presence_registry_user_changed(reg, user);
}
