/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Who may see whom (visibility.h): privacy choices, the groups table, the rule, and the
 * deletions in flight.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <uthash.h>

#include "text.h"
#include "utf8.h"
#include "visibility.h"

/* ---- Privacy choices ---- */

#define PRIVACY_MEMBER "visible_to"

static int privacy_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void presence_privacy_free(struct presence_privacy *privacy)
{
	if (privacy == NULL) {
		return;
	}
	for (size_t i = 0; i < privacy->count; i++) {
		free(privacy->names[i]);
	}
	free(privacy->names);
	free(privacy);
}

/* Builds a LIST choice from the strings of array (checked); returns the error. */
static enum presence_err privacy_list(const cJSON *array, struct presence_privacy **out,
                                      char *reason, size_t reason_size)
{
	struct presence_privacy *privacy;
	const cJSON *item;
	size_t n = (size_t)cJSON_GetArraySize(array);
	size_t kept = 0;

	if (n > PRESENCE_PRIVACY_MAX_NAMES) {
		snprintf(reason, reason_size, PRIVACY_MEMBER " lists %zu names; at most %d", n,
		         PRESENCE_PRIVACY_MAX_NAMES);
		return PRESENCE_ERR_INVAL;
	}
	cJSON_ArrayForEach(item, array)
	{
		if (!cJSON_IsString(item)) {
			snprintf(reason, reason_size,
			         PRIVACY_MEMBER " must be \"everyone\", \"group\", \"nobody\" or a "
			                        "list of user names");
			return PRESENCE_ERR_INVAL;
		}
		/* cJSON stops a string at an escaped NUL: such a name is refused too. */
		if (item->valuestring[0] == '\0' ||
		    !presence_utf8_valid(item->valuestring, strlen(item->valuestring))) {
			snprintf(reason, reason_size,
			         PRIVACY_MEMBER
			         " lists an empty name or one that is not UTF-8 text");
			return PRESENCE_ERR_INVAL;
		}
	}
	privacy = calloc(1, sizeof(*privacy));
	if (privacy == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	privacy->kind = PRESENCE_PRIVACY_LIST;
	privacy->names = calloc(n > 0 ? n : 1, sizeof(*privacy->names));
	if (privacy->names == NULL) {
		free(privacy);
		return PRESENCE_ERR_NOMEM;
	}
	cJSON_ArrayForEach(item, array)
	{
		privacy->names[privacy->count] =
		    presence_text_dup(item->valuestring, strlen(item->valuestring));
		if (privacy->names[privacy->count] == NULL) {
			presence_privacy_free(privacy);
			return PRESENCE_ERR_NOMEM;
		}
		privacy->count++;
	}
	qsort(privacy->names, privacy->count, sizeof(*privacy->names), privacy_name_cmp);
	/* Duplicates are merged. */
	for (size_t i = 0; i < privacy->count; i++) {
		if (kept > 0 && strcmp(privacy->names[kept - 1], privacy->names[i]) == 0) {
			free(privacy->names[i]);
		} else {
			privacy->names[kept++] = privacy->names[i];
		}
	}
	privacy->count = kept;
	*out = privacy;
	return PRESENCE_OK;
}

enum presence_err presence_privacy_parse(const void *payload, size_t len,
                                         struct presence_privacy **out, char *reason,
                                         size_t reason_size)
{
	static const char shape[] =
	    "privacy must be a JSON object with one member, \"" PRIVACY_MEMBER "\"";
	enum presence_err err = PRESENCE_OK;
	const cJSON *member;
	const char *end = NULL;
	char *text;
	cJSON *root;

	*out = NULL;
	if (len == 0) {
		return PRESENCE_OK;
	}
	if (len > PRESENCE_PRIVACY_MAX_PAYLOAD) {
		snprintf(reason, reason_size, "payload is %zu bytes; at most %d are accepted", len,
		         PRESENCE_PRIVACY_MAX_PAYLOAD);
		return PRESENCE_ERR_TOO_LARGE;
	}
	text = presence_text_dup(payload, len);
	if (text == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	/* One JSON value and nothing after it (cJSON must reach the copy's NUL). */
	root = cJSON_ParseWithLengthOpts(text, len + 1, &end, true);
	if (root != NULL && end != text + len) {
		cJSON_Delete(root);
		root = NULL;
	}
	free(text);
	if (root == NULL || !cJSON_IsObject(root) || cJSON_GetArraySize(root) != 1 ||
	    root->child->string == NULL || strcmp(root->child->string, PRIVACY_MEMBER) != 0) {
		/* cJSON reports running out of memory as a syntax error: refused either way. */
		snprintf(reason, reason_size, "%s", shape);
		cJSON_Delete(root);
		return PRESENCE_ERR_INVAL;
	}
	member = root->child;
	if (cJSON_IsArray(member)) {
		err = privacy_list(member, out, reason, reason_size);
	} else if (cJSON_IsString(member) && strcmp(member->valuestring, "everyone") == 0) {
		*out = NULL;
	} else if (cJSON_IsString(member) && (strcmp(member->valuestring, "group") == 0 ||
	                                      strcmp(member->valuestring, "nobody") == 0)) {
		*out = calloc(1, sizeof(**out));
		if (*out == NULL) {
			err = PRESENCE_ERR_NOMEM;
		} else {
			(*out)->kind = member->valuestring[0] == 'g' ? PRESENCE_PRIVACY_GROUP
			                                             : PRESENCE_PRIVACY_NOBODY;
		}
	} else {
		snprintf(reason, reason_size,
		         PRIVACY_MEMBER " must be \"everyone\", \"group\", \"nobody\" or a list of "
		                        "user names");
		err = PRESENCE_ERR_INVAL;
	}
	cJSON_Delete(root);
	return err;
}

char *presence_privacy_render(const struct presence_privacy *privacy)
{
	enum presence_privacy_kind kind =
	    privacy != NULL ? privacy->kind : PRESENCE_PRIVACY_EVERYONE;
	cJSON *root = cJSON_CreateObject();
	cJSON *value = NULL;
	char *printed = NULL, *out = NULL;

	if (root == NULL) {
		return NULL;
	}
	if (kind == PRESENCE_PRIVACY_LIST) {
		value = cJSON_CreateArray();
		for (size_t i = 0; value != NULL && i < privacy->count; i++) {
			cJSON *name = cJSON_CreateString(privacy->names[i]);

			if (name == NULL || !cJSON_AddItemToArray(value, name)) {
				cJSON_Delete(name);
				cJSON_Delete(value);
				value = NULL;
			}
		}
	} else {
		value = cJSON_CreateString(kind == PRESENCE_PRIVACY_GROUP    ? "group"
		                           : kind == PRESENCE_PRIVACY_NOBODY ? "nobody"
		                                                             : "everyone");
	}
	if (value != NULL && cJSON_AddItemToObject(root, PRIVACY_MEMBER, value)) {
		printed = cJSON_PrintUnformatted(root);
	} else {
		cJSON_Delete(value);
	}
	if (printed != NULL) {
		out = presence_text_dup(printed, strlen(printed));
		cJSON_free(printed);
	}
	cJSON_Delete(root);
	return out;
}

bool presence_privacy_copy(const struct presence_privacy *privacy, struct presence_privacy **out)
{
	struct presence_privacy *copy;

	*out = NULL;
	if (privacy == NULL) {
		return true;
	}
	copy = calloc(1, sizeof(*copy));
	if (copy == NULL) {
		return false;
	}
	copy->kind = privacy->kind;
	if (privacy->count > 0) {
		copy->names = calloc(privacy->count, sizeof(*copy->names));
		if (copy->names == NULL) {
			free(copy);
			return false;
		}
		for (; copy->count < privacy->count; copy->count++) {
			const char *name = privacy->names[copy->count];

			copy->names[copy->count] = presence_text_dup(name, strlen(name));
			if (copy->names[copy->count] == NULL) {
				presence_privacy_free(copy);
				return false;
			}
		}
	}
	*out = copy;
	return true;
}

bool presence_privacy_equal(const struct presence_privacy *a, const struct presence_privacy *b)
{
	enum presence_privacy_kind ka = a != NULL ? a->kind : PRESENCE_PRIVACY_EVERYONE;
	enum presence_privacy_kind kb = b != NULL ? b->kind : PRESENCE_PRIVACY_EVERYONE;

	if (ka != kb) {
		return false;
	}
	if (ka != PRESENCE_PRIVACY_LIST) {
		return true;
	}
	if (a->count != b->count) {
		return false;
	}
	for (size_t i = 0; i < a->count; i++) {
		if (strcmp(a->names[i], b->names[i]) != 0) {
			return false;
		}
	}
	return true;
}

static bool privacy_lists(const struct presence_privacy *privacy, const char *name)
{
	const char *key = name;

	if (privacy->count == 0) {
		return false;
	}
	return bsearch(&key, privacy->names, privacy->count, sizeof(*privacy->names),
	               privacy_name_cmp) != NULL;
}

/* ---- The groups table ---- */

struct group_entry {
	UT_hash_handle hh;
	uint32_t id;
	char name[];
};

struct member_entry {
	UT_hash_handle hh;
	uint32_t count;
	/* Sorted group ids. */
	uint32_t ids[PRESENCE_GROUPS_PER_USER_MAX];
	char name[];
};

struct presence_groups {
	unsigned int refs;
	uint32_t next_id;
	size_t memberships;
	struct group_entry *groups;
	struct member_entry *members;
	/* Group names by id (borrowed from the entries). */
	const char **names;
	size_t names_cap;
};

struct presence_groups *presence_groups_ref(struct presence_groups *groups)
{
	if (groups != NULL) {
		groups->refs++;
	}
	return groups;
}

void presence_groups_unref(struct presence_groups *groups)
{
	struct group_entry *g, *gt;
	struct member_entry *m, *mt;

	if (groups == NULL || --groups->refs > 0) {
		return;
	}
	HASH_ITER(hh, groups->groups, g, gt)
	{
		HASH_DEL(groups->groups, g);
		free(g);
	}
	HASH_ITER(hh, groups->members, m, mt)
	{
		HASH_DEL(groups->members, m);
		free(m);
	}
	free(groups->names);
	free(groups);
}

size_t presence_groups_count(const struct presence_groups *groups)
{
	return groups != NULL ? groups->next_id : 0;
}

size_t presence_groups_members(const struct presence_groups *groups)
{
	return groups != NULL ? groups->memberships : 0;
}

static const struct group_entry *groups_find(const struct presence_groups *groups, const char *name,
                                             size_t len)
{
	struct group_entry *g = NULL;

	if (groups != NULL) {
		HASH_FIND(hh, groups->groups, name, len, g);
	}
	return g;
}

static const struct member_entry *groups_member(const struct presence_groups *groups,
                                                const char *name)
{
	struct member_entry *m = NULL;

	if (groups != NULL && name != NULL) {
		HASH_FIND(hh, groups->members, name, strlen(name), m);
	}
	return m;
}

/* Opens (or finds) the group name (len bytes). */
static enum presence_err groups_open(struct presence_groups *groups, const char *name, size_t len,
                                     uint32_t *id)
{
	const struct group_entry *found = groups_find(groups, name, len);
	struct group_entry *g;

	if (found != NULL) {
		*id = found->id;
		return PRESENCE_OK;
	}
	if (groups->next_id == groups->names_cap) {
		size_t cap = groups->names_cap > 0 ? groups->names_cap * 2 : 16;
		const char **names = realloc(groups->names, cap * sizeof(*names));

		if (names == NULL) {
			return PRESENCE_ERR_NOMEM;
		}
		groups->names = names;
		groups->names_cap = cap;
	}
	g = calloc(1, sizeof(*g) + len + 1);
	if (g == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	memcpy(g->name, name, len);
	g->id = groups->next_id;
	HASH_ADD(hh, groups->groups, name[0], len, g);
	if (g->hh.tbl == NULL) {
		free(g);
		return PRESENCE_ERR_NOMEM;
	}
	groups->names[groups->next_id++] = g->name;
	*id = g->id;
	return PRESENCE_OK;
}

/* Adds name (len bytes) to group id. PRESENCE_ERR_FULL beyond the per-user maximum. */
static enum presence_err groups_join(struct presence_groups *groups, const char *name, size_t len,
                                     uint32_t id)
{
	struct member_entry *m = NULL;
	uint32_t i;

	HASH_FIND(hh, groups->members, name, len, m);
	if (m == NULL) {
		m = calloc(1, sizeof(*m) + len + 1);
		if (m == NULL) {
			return PRESENCE_ERR_NOMEM;
		}
		memcpy(m->name, name, len);
		HASH_ADD(hh, groups->members, name[0], len, m);
		if (m->hh.tbl == NULL) {
			free(m);
			return PRESENCE_ERR_NOMEM;
		}
	}
	for (i = 0; i < m->count && m->ids[i] < id; i++) {
	}
	if (i < m->count && m->ids[i] == id) {
		return PRESENCE_OK;
	}
	if (m->count == PRESENCE_GROUPS_PER_USER_MAX) {
		return PRESENCE_ERR_FULL;
	}
	memmove(&m->ids[i + 1], &m->ids[i], (m->count - i) * sizeof(m->ids[0]));
	m->ids[i] = id;
	m->count++;
	groups->memberships++;
	return PRESENCE_OK;
}

static bool groups_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

enum presence_err presence_groups_parse(const char *path, const char *text, size_t len,
                                        struct presence_groups **out, char *err, size_t err_size)
{
	struct presence_groups *groups = calloc(1, sizeof(*groups));
	const char *end = text + len;
	const char *line = text;
	enum presence_err rc = PRESENCE_OK;
	bool open = false;
	uint32_t current = 0;
	size_t number = 0;

	*out = NULL;
	if (groups == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	groups->refs = 1;
	while (line < end && rc == PRESENCE_OK) {
		const char *eol = memchr(line, '\n', (size_t)(end - line));
		const char *p = line, *q;
		const char *why = NULL;
		size_t word_len;

		if (eol == NULL) {
			eol = end;
		}
		number++;
		while (p < eol && groups_blank(*p)) {
			p++;
		}
		q = eol;
		while (q > p && groups_blank(q[-1])) {
			q--;
		}
		line = eol + 1;
		if (p == q || *p == '#') {
			continue;
		}
		for (word_len = 0; p + word_len < q && !groups_blank(p[word_len]); word_len++) {
		}
		const char *name = p + word_len;
		while (name < q && groups_blank(*name)) {
			name++;
		}
		size_t name_len = (size_t)(q - name);

		if (memchr(p, '\0', (size_t)(q - p)) != NULL ||
		    !presence_utf8_valid(p, (size_t)(q - p))) {
			why = "not UTF-8 text";
		} else if (word_len == 5 && memcmp(p, "group", 5) == 0) {
			if (name_len == 0) {
				why = "a group needs a name: group <name>";
			} else {
				rc = groups_open(groups, name, name_len, &current);
				open = true;
			}
		} else if (word_len == 4 && memcmp(p, "user", 4) == 0) {
			if (name_len == 0) {
				why = "a member needs a name: user <name>";
			} else if (!open) {
				why = "user before any group line";
			} else {
				rc = groups_join(groups, name, name_len, current);
				if (rc == PRESENCE_ERR_FULL) {
					snprintf(err, err_size,
					         "%s line %zu: %.*s is in more than %d groups",
					         path, number,
					         (int)(name_len > 200 ? 200 : name_len), name,
					         PRESENCE_GROUPS_PER_USER_MAX);
					rc = PRESENCE_ERR_INVAL;
				}
			}
		} else {
			why = "expected group <name> or user <name>";
		}
		if (why != NULL) {
			snprintf(err, err_size, "%s line %zu: %s", path, number, why);
			rc = PRESENCE_ERR_INVAL;
		}
	}
	if (rc != PRESENCE_OK) {
		presence_groups_unref(groups);
		return rc;
	}
	*out = groups;
	return PRESENCE_OK;
}

enum presence_err presence_groups_load(const char *path, struct presence_groups **out, char *err,
                                       size_t err_size)
{
	char *text = NULL;
	size_t len = 0, cap = 0;
	enum presence_err rc;
	FILE *f;

	*out = NULL;
	if (path == NULL) {
		return presence_groups_parse("(none)", "", 0, out, err, err_size);
	}
	f = fopen(path, "r");
	if (f == NULL) {
		snprintf(err, err_size, "%s: cannot open it: %s", path, strerror(errno));
		return PRESENCE_ERR_IO;
	}
	for (;;) {
		size_t got;

		if (len == cap) {
			size_t ncap = cap > 0 ? cap * 2 : 65536;
			char *ntext = realloc(text, ncap);

			if (ntext == NULL) {
				free(text);
				fclose(f);
				return PRESENCE_ERR_NOMEM;
			}
			text = ntext;
			cap = ncap;
		}
		got = fread(text + len, 1, cap - len, f);
		len += got;
		if (got == 0) {
			break;
		}
	}
	if (ferror(f)) {
		snprintf(err, err_size, "%s: cannot read it: %s", path, strerror(errno));
		free(text);
		fclose(f);
		return PRESENCE_ERR_IO;
	}
	fclose(f);
	rc = presence_groups_parse(path, text, len, out, err, err_size);
	free(text);
	return rc;
}

/* ---- The rule ---- */

/* The groups of one name: the file's ids, plus the username's group (its id when the file
 * knows it, else its text). */
struct name_groups {
	const uint32_t *ids;
	uint32_t count;
	bool has_prefix_id;
	uint32_t prefix_id;
	const char *prefix;
	size_t prefix_len;
};

static void name_groups_of(const struct presence_visibility *vis,
                           const struct presence_groups *groups, const char *name,
                           struct name_groups *out)
{
	const struct member_entry *m = groups_member(groups, name);
	const char *sep;

	memset(out, 0, sizeof(*out));
	if (m != NULL) {
		out->ids = m->ids;
		out->count = m->count;
	}
	if (vis->separator != NULL && (sep = strstr(name, vis->separator)) != NULL && sep > name) {
		const struct group_entry *g = groups_find(groups, name, (size_t)(sep - name));

		if (g != NULL) {
			out->has_prefix_id = true;
			out->prefix_id = g->id;
		} else {
			out->prefix = name;
			out->prefix_len = (size_t)(sep - name);
		}
	}
}

static bool ids_contain(const uint32_t *ids, uint32_t count, uint32_t id)
{
	for (uint32_t i = 0; i < count && ids[i] <= id; i++) {
		if (ids[i] == id) {
			return true;
		}
	}
	return false;
}

static bool name_groups_share(const struct name_groups *a, const struct name_groups *b)
{
	uint32_t i = 0, j = 0;

	while (i < a->count && j < b->count) {
		if (a->ids[i] == b->ids[j]) {
			return true;
		}
		if (a->ids[i] < b->ids[j]) {
			i++;
		} else {
			j++;
		}
	}
	if (a->has_prefix_id && ((b->has_prefix_id && b->prefix_id == a->prefix_id) ||
	                         ids_contain(b->ids, b->count, a->prefix_id))) {
		return true;
	}
	if (b->has_prefix_id && ids_contain(a->ids, a->count, b->prefix_id)) {
		return true;
	}
	return a->prefix != NULL && b->prefix != NULL && a->prefix_len == b->prefix_len &&
	       memcmp(a->prefix, b->prefix, a->prefix_len) == 0;
}

static bool share_group(const struct presence_visibility *vis, const struct presence_groups *groups,
                        const char *watcher, const char *user)
{
	struct name_groups a, b;

	name_groups_of(vis, groups, watcher, &a);
	if (a.count == 0 && !a.has_prefix_id && a.prefix == NULL) {
		return false;
	}
	name_groups_of(vis, groups, user, &b);
	return name_groups_share(&a, &b);
}

bool presence_visibility_open(const struct presence_visibility *vis,
                              const struct presence_privacy *privacy)
{
	return !vis->group_rule && privacy == NULL;
}

bool presence_visibility_may_see(const struct presence_visibility *vis,
                                 const struct presence_groups *groups, const char *watcher,
                                 const char *user, const struct presence_privacy *privacy)
{
	enum presence_privacy_kind kind =
	    privacy != NULL ? privacy->kind : PRESENCE_PRIVACY_EVERYONE;

	if (presence_visibility_open(vis, privacy)) {
		return true;
	}
	if (watcher == NULL || watcher[0] == '\0') {
		return false;
	}
	if (strcmp(watcher, user) == 0) {
		return true;
	}
	for (size_t i = 0; i < vis->see_everyone_count; i++) {
		if (strcmp(vis->see_everyone[i], watcher) == 0) {
			return true;
		}
	}
	switch (kind) {
	case PRESENCE_PRIVACY_NOBODY:
		return false;
	case PRESENCE_PRIVACY_LIST:
		return privacy_lists(privacy, watcher) &&
		       (!vis->group_rule || share_group(vis, groups, watcher, user));
	case PRESENCE_PRIVACY_GROUP:
		return share_group(vis, groups, watcher, user);
	case PRESENCE_PRIVACY_EVERYONE:
		break;
	}
	return !vis->group_rule || share_group(vis, groups, watcher, user);
}

/* A rank of how many a kind lets see: nobody < list < group < everyone (list and group are
 * not comparable; see presence_visibility_widens). */
bool presence_visibility_widens(const struct presence_visibility *vis,
                                const struct presence_privacy *from,
                                const struct presence_privacy *to)
{
	enum presence_privacy_kind kf = from != NULL ? from->kind : PRESENCE_PRIVACY_EVERYONE;
	enum presence_privacy_kind kt = to != NULL ? to->kind : PRESENCE_PRIVACY_EVERYONE;

	if (kt == PRESENCE_PRIVACY_NOBODY || kf == PRESENCE_PRIVACY_EVERYONE) {
		return false;
	}
	if (kf == PRESENCE_PRIVACY_NOBODY) {
		return true;
	}
	if (kt == PRESENCE_PRIVACY_EVERYONE) {
		/* From group: a widening under the everyone rule only. From a list: always. */
		return kf == PRESENCE_PRIVACY_LIST || !vis->group_rule;
	}
	if (kf == PRESENCE_PRIVACY_GROUP) {
		/* To a list: under the group rule a list only narrows the group. */
		return !vis->group_rule;
	}
	if (kt == PRESENCE_PRIVACY_GROUP) {
		return true;
	}
	/* List to list: widens when the new one names someone the old one did not. */
	for (size_t i = 0; i < to->count; i++) {
		if (!privacy_lists(from, to->names[i])) {
			return true;
		}
	}
	return false;
}

struct diff_entry {
	UT_hash_handle hh;
	bool gained;
	char name[];
};

struct presence_groups_diff {
	struct diff_entry *by_name;
	size_t count;
};

static bool member_in(const struct presence_groups *groups, const char *member, const char *gname)
{
	const struct member_entry *m = groups_member(groups, member);
	const struct group_entry *g = groups_find(groups, gname, strlen(gname));

	return m != NULL && g != NULL && ids_contain(m->ids, m->count, g->id);
}

/* Marks gname changed (and gained). */
static bool diff_mark(struct presence_groups_diff *diff, const char *gname, bool gained)
{
	struct diff_entry *e = NULL;
	size_t len = strlen(gname);

	HASH_FIND(hh, diff->by_name, gname, len, e);
	if (e == NULL) {
		e = calloc(1, sizeof(*e) + len + 1);
		if (e == NULL) {
			return false;
		}
		memcpy(e->name, gname, len);
		HASH_ADD(hh, diff->by_name, name[0], len, e);
		if (e->hh.tbl == NULL) {
			free(e);
			return false;
		}
		diff->count++;
	}
	e->gained = e->gained || gained;
	return true;
}

/* Marks every group of from that some member of from left in to (gained: joined). */
static bool diff_walk(struct presence_groups_diff *diff, const struct presence_groups *from,
                      const struct presence_groups *to, bool gained)
{
	struct member_entry *m, *mt;

	if (from == NULL) {
		return true;
	}
	HASH_ITER(hh, from->members, m, mt)
	{
		for (uint32_t i = 0; i < m->count; i++) {
			const char *gname = from->names[m->ids[i]];

			if (!member_in(to, m->name, gname) && !diff_mark(diff, gname, gained)) {
				return false;
			}
		}
	}
	return true;
}

void presence_groups_diff_free(struct presence_groups_diff *diff)
{
	struct diff_entry *e, *et;

	if (diff == NULL) {
		return;
	}
	HASH_ITER(hh, diff->by_name, e, et)
	{
		HASH_DEL(diff->by_name, e);
		free(e);
	}
	free(diff);
}

struct presence_groups_diff *presence_groups_diff_new(const struct presence_groups *old_groups,
                                                      const struct presence_groups *new_groups)
{
	struct presence_groups_diff *diff = calloc(1, sizeof(*diff));

	if (diff == NULL || !diff_walk(diff, new_groups, old_groups, true) ||
	    !diff_walk(diff, old_groups, new_groups, false)) {
		presence_groups_diff_free(diff);
		return NULL;
	}
	return diff;
}

size_t presence_groups_diff_count(const struct presence_groups_diff *diff)
{
	return diff != NULL ? diff->count : 0;
}

/* Adds the effect of group gname (len bytes) to the flags. */
static void diff_effect(const struct presence_groups_diff *diff, const char *gname, size_t len,
                        bool *affected, bool *widened)
{
	struct diff_entry *e = NULL;

	HASH_FIND(hh, diff->by_name, gname, len, e);
	if (e != NULL) {
		*affected = true;
		*widened = *widened || e->gained;
	}
}

void presence_visibility_reload_effect(const struct presence_visibility *vis,
                                       const struct presence_groups *old_groups,
                                       const struct presence_groups *new_groups,
                                       const struct presence_groups_diff *diff, const char *user,
                                       bool *affected, bool *widened)
{
	const struct member_entry *mo = groups_member(old_groups, user);
	const struct member_entry *mn = groups_member(new_groups, user);
	const char *sep;

	*affected = false;
	*widened = false;
	for (uint32_t i = 0; mo != NULL && i < mo->count; i++) {
		const char *gname = old_groups->names[mo->ids[i]];

		diff_effect(diff, gname, strlen(gname), affected, widened);
	}
	for (uint32_t i = 0; mn != NULL && i < mn->count; i++) {
		const char *gname = new_groups->names[mn->ids[i]];

		diff_effect(diff, gname, strlen(gname), affected, widened);
	}
	/* The username's group: its members in the file may have changed. */
	if (vis->separator != NULL && (sep = strstr(user, vis->separator)) != NULL && sep > user) {
		diff_effect(diff, user, (size_t)(sep - user), affected, widened);
	}
}

/* ---- Deletions in flight ---- */

struct presence_deletion {
	UT_hash_handle hh;
	struct presence_deletion *next;
	uint64_t tick;
	bool gone;
	/* A further change is waiting for this one to be delivered (and whether it is the
	 * user's forgetting). */
	bool again;
	bool again_gone;
	struct presence_privacy *from_privacy, *to_privacy;
	struct presence_groups *from_groups, *to_groups;
	char *name;
	size_t level_len;
	char level[];
};

struct presence_deletions {
	struct presence_deletion *by_level;
	struct presence_deletion *head, *tail;
	size_t count;
};

struct presence_deletions *presence_deletions_new(void)
{
	return calloc(1, sizeof(struct presence_deletions));
}

static void deletion_free(struct presence_deletion *del)
{
	presence_privacy_free(del->from_privacy);
	presence_privacy_free(del->to_privacy);
	presence_groups_unref(del->from_groups);
	presence_groups_unref(del->to_groups);
	free(del->name);
	free(del);
}

void presence_deletions_free(struct presence_deletions *d)
{
	struct presence_deletion *del, *next;

	if (d == NULL) {
		return;
	}
	for (del = d->head; del != NULL; del = next) {
		next = del->next;
		HASH_DEL(d->by_level, del);
		deletion_free(del);
	}
	free(d);
}

static struct presence_deletion *deletions_find(const struct presence_deletions *d,
                                                const char *level, size_t level_len)
{
	struct presence_deletion *del = NULL;

	if (d != NULL && d->by_level != NULL) {
		HASH_FIND(hh, d->by_level, level, level_len, del);
	}
	return del;
}

const struct presence_deletion *presence_deletions_find(const struct presence_deletions *d,
                                                        const char *level, size_t level_len)
{
	return deletions_find(d, level, level_len);
}

enum presence_err presence_deletions_add(struct presence_deletions *d, const char *name,
                                         const char *level, size_t level_len,
                                         const struct presence_privacy *from_privacy,
                                         struct presence_groups *from_groups,
                                         const struct presence_privacy *to_privacy,
                                         struct presence_groups *to_groups, bool gone,
                                         uint64_t tick, bool *publish)
{
	struct presence_deletion *del = deletions_find(d, level, level_len);

	*publish = false;
	if (del != NULL) {
		/* One in flight: this change follows it, from what it told. */
		del->again = true;
		del->again_gone = del->again_gone || gone;
		return PRESENCE_OK;
	}
	del = calloc(1, sizeof(*del) + level_len + 1);
	if (del == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	memcpy(del->level, level, level_len);
	del->level_len = level_len;
	del->tick = tick;
	del->gone = gone;
	del->name = presence_text_dup(name, strlen(name));
	if (del->name == NULL || !presence_privacy_copy(from_privacy, &del->from_privacy) ||
	    !presence_privacy_copy(to_privacy, &del->to_privacy)) {
		deletion_free(del);
		return PRESENCE_ERR_NOMEM;
	}
	del->from_groups = presence_groups_ref(from_groups);
	del->to_groups = presence_groups_ref(to_groups);
	HASH_ADD(hh, d->by_level, level[0], level_len, del);
	if (del->hh.tbl == NULL) {
		deletion_free(del);
		return PRESENCE_ERR_NOMEM;
	}
	if (d->tail != NULL) {
		d->tail->next = del;
	} else {
		d->head = del;
	}
	d->tail = del;
	d->count++;
	*publish = true;
	return PRESENCE_OK;
}

bool presence_deletion_allows(const struct presence_visibility *vis,
                              const struct presence_deletion *del, const char *watcher)
{
	if (!presence_visibility_may_see(vis, del->from_groups, watcher, del->name,
	                                 del->from_privacy)) {
		return false;
	}
	return del->gone || !presence_visibility_may_see(vis, del->to_groups, watcher, del->name,
	                                                 del->to_privacy);
}

size_t presence_deletions_confirm(struct presence_deletions *d, uint64_t tick,
                                  void (*again)(void *arg, const char *name, const char *level,
                                                size_t level_len,
                                                const struct presence_privacy *from_privacy,
                                                struct presence_groups *from_groups, bool gone),
                                  void *arg)
{
	size_t n = 0;

	while (d->head != NULL && d->head->tick + 2 <= tick) {
		struct presence_deletion *del = d->head;

		d->head = del->next;
		if (d->head == NULL) {
			d->tail = NULL;
		}
		HASH_DEL(d->by_level, del);
		d->count--;
		n++;
		/* A user gone stays gone: nothing follows its deletion. */
		if (del->again && !del->gone && again != NULL) {
			again(arg, del->name, del->level, del->level_len, del->to_privacy,
			      del->to_groups, del->again_gone);
		}
		deletion_free(del);
	}
	return n;
}

size_t presence_deletions_count(const struct presence_deletions *d)
{
	return d != NULL ? d->count : 0;
}
