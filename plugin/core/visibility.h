/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Who may see whom: groups, each user's privacy choice, and the rule that combines them with the
 * operator's (may W see U?). Pure: no broker, no clock.
 *
 * Invariants: a NULL privacy is the default, everyone; a groups table is immutable once loaded
 * and shared by reference; a user always sees itself; a user's choice narrows the operator's
 * rule, never widens it; every check is O(1) in users and groups (two hash lookups per name,
 * at most PRESENCE_GROUPS_PER_USER_MAX x PRESENCE_GROUPS_PER_USER_MAX comparisons, a binary
 * search in at most PRESENCE_PRIVACY_MAX_NAMES names). The deletions in flight (who must be told
 * that a user vanished from their sight) are described in docs/DESIGN.md, "Visibility".
 */
#ifndef PRESENCE_VISIBILITY_H
#define PRESENCE_VISIBILITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "presence_err.h"

/* The most names a privacy list holds, and the longest privacy payload accepted. */
#define PRESENCE_PRIVACY_MAX_NAMES 100
#define PRESENCE_PRIVACY_MAX_PAYLOAD 16384
/* The most groups a user is in (through the groups file; a username's group comes on top). */
#define PRESENCE_GROUPS_PER_USER_MAX 32
/* Room for a reason (privacy) or an error (groups file). */
#define PRESENCE_VISIBILITY_REASON_SIZE 256

enum presence_privacy_kind {
	PRESENCE_PRIVACY_EVERYONE = 0,
	PRESENCE_PRIVACY_GROUP,
	PRESENCE_PRIVACY_NOBODY,
	PRESENCE_PRIVACY_LIST,
};

/* A user's choice. A NULL pointer means everyone. */
struct presence_privacy {
	enum presence_privacy_kind kind;
	/* LIST: count distinct names, sorted by strcmp (owned). */
	size_t count;
	char **names;
};

/* Parses a privacy payload (len bytes): {"visible_to":"everyone"|"group"|"nobody"|[names]};
 * empty means everyone. On success *out is the choice (NULL for everyone). On failure returns
 * PRESENCE_ERR_INVAL (reason says why, NUL-terminated, reason_size bytes), PRESENCE_ERR_TOO_LARGE
 * (over PRESENCE_PRIVACY_MAX_PAYLOAD) or PRESENCE_ERR_NOMEM; *out is NULL. */
enum presence_err presence_privacy_parse(const void *payload, size_t len,
                                         struct presence_privacy **out, char *reason,
                                         size_t reason_size);
/* The compact JSON of a choice (NULL: everyone), malloc'd; NULL when memory runs out. */
char *presence_privacy_render(const struct presence_privacy *privacy);
/* A copy (NULL for NULL); returns false when memory runs out (*out NULL). */
bool presence_privacy_copy(const struct presence_privacy *privacy, struct presence_privacy **out);
void presence_privacy_free(struct presence_privacy *privacy);
bool presence_privacy_equal(const struct presence_privacy *a, const struct presence_privacy *b);

/* A groups table: names to the groups they are in. Immutable, reference counted. */
struct presence_groups;

/* Reads the groups file at path (see the README: "group <name>" lines open a group, "user
 * <name>" lines add a member; blank lines and '#' comments are ignored). path NULL gives an
 * empty table. Returns PRESENCE_OK with *out (one reference); PRESENCE_ERR_INVAL or
 * PRESENCE_ERR_IO with err ("<path> line <n>: <why>"); PRESENCE_ERR_NOMEM. */
enum presence_err presence_groups_load(const char *path, struct presence_groups **out, char *err,
                                       size_t err_size);
/* Parses text (len bytes) as a groups file named path in messages; as presence_groups_load. */
enum presence_err presence_groups_parse(const char *path, const char *text, size_t len,
                                        struct presence_groups **out, char *err, size_t err_size);
struct presence_groups *presence_groups_ref(struct presence_groups *groups);
void presence_groups_unref(struct presence_groups *groups);
/* How many groups and memberships the table holds (for the log). */
size_t presence_groups_count(const struct presence_groups *groups);
size_t presence_groups_members(const struct presence_groups *groups);

/* The operator's rule. Pointers are borrowed (the configuration's). */
struct presence_visibility {
	/* visibility group (true) or everyone. */
	bool group_rule;
	/* group_from_username's separator, or NULL. */
	const char *separator;
	/* see_everyone. */
	char *const *see_everyone;
	size_t see_everyone_count;
};

/* Whether watcher (a name, NULL for a client without one) may see the user named user whose
 * choice is privacy, under the rule vis and the groups table groups (NULL: none). */
bool presence_visibility_may_see(const struct presence_visibility *vis,
                                 const struct presence_groups *groups, const char *watcher,
                                 const char *user, const struct presence_privacy *privacy);

/* Whether everyone may see a user whose choice is privacy (no check needed). */
bool presence_visibility_open(const struct presence_visibility *vis,
                              const struct presence_privacy *privacy);

/* Whether changing a user's choice from one to another may let a watcher see it who could not
 * (conservative: true when unsure). */
bool presence_visibility_widens(const struct presence_visibility *vis,
                                const struct presence_privacy *from,
                                const struct presence_privacy *to);

/* The groups whose members differ between two tables (by name), and whether each gained one.
 * O(memberships). NULL when memory runs out. */
struct presence_groups_diff;
struct presence_groups_diff *presence_groups_diff_new(const struct presence_groups *old_groups,
                                                      const struct presence_groups *new_groups);
void presence_groups_diff_free(struct presence_groups_diff *diff);
size_t presence_groups_diff_count(const struct presence_groups_diff *diff);

/* What a new groups table changes for the user named user: *affected when a watcher may see
 * it under one table and not the other, *widened when some watcher may gain sight of it (both
 * conservative: a user in a group whose members changed). O(1) in users and groups. */
void presence_visibility_reload_effect(const struct presence_visibility *vis,
                                       const struct presence_groups *old_groups,
                                       const struct presence_groups *new_groups,
                                       const struct presence_groups_diff *diff, const char *user,
                                       bool *affected, bool *widened);

/*
 * Deletions in flight. When watchers lose sight of a user, the plugin publishes one zero-length
 * message on the user's topic; the broker asks the READ check for every subscriber, and the
 * message may only reach those that could see the user before and cannot after. A deletion
 * records both sides (choice and groups) until the broker has surely delivered it (two ticks
 * later, see docs/DESIGN.md); a change while one is in flight is sent after it.
 */
struct presence_deletions;
struct presence_deletion;

struct presence_deletions *presence_deletions_new(void);
void presence_deletions_free(struct presence_deletions *d);

/* Records that the user named name (encoded level) loses watchers: from its choice and groups
 * before to after (gone: the user is forgotten, nobody sees it after). *publish is true when
 * the caller must publish the zero-length message now, false when one is in flight (this one
 * follows it, see presence_deletions_confirm). Groups are referenced. Returns PRESENCE_OK or
 * PRESENCE_ERR_NOMEM (nothing recorded). */
enum presence_err presence_deletions_add(struct presence_deletions *d, const char *name,
                                         const char *level, size_t level_len,
                                         const struct presence_privacy *from_privacy,
                                         struct presence_groups *from_groups,
                                         const struct presence_privacy *to_privacy,
                                         struct presence_groups *to_groups, bool gone,
                                         uint64_t tick, bool *publish);

/* The deletion in flight for the encoded level, or NULL. */
const struct presence_deletion *presence_deletions_find(const struct presence_deletions *d,
                                                        const char *level, size_t level_len);

/* Whether the deletion may reach watcher. */
bool presence_deletion_allows(const struct presence_visibility *vis,
                              const struct presence_deletion *deletion, const char *watcher);

/* At tick: forgets the deletions delivered for sure (added at tick - 2 or before). For each that
 * had a change behind it, calls again(arg, name, level, level_len, from_privacy, from_groups,
 * gone) with what the
 * watchers were told last, for the caller to add the next one. Returns how many were
 * forgotten. */
size_t presence_deletions_confirm(struct presence_deletions *d, uint64_t tick,
                                  void (*again)(void *arg, const char *name, const char *level,
                                                size_t level_len,
                                                const struct presence_privacy *from_privacy,
                                                struct presence_groups *from_groups, bool gone),
                                  void *arg);
/* Deletions in flight. */
size_t presence_deletions_count(const struct presence_deletions *d);

#endif
