/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Unit tests for visibility.c: privacy choices (parse, render, compare), the groups file, the
 * rule "may W see U" for every combination of operator rule, groups and choice, widening, the
 * effect of a reloaded groups file, and the deletions in flight. Every allocation failure
 * leaves nothing behind (ASan checks the leaks).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "failalloc.h"
#include "visibility.h"

#define S(s) s, sizeof(s) - 1

static struct presence_privacy *parse_ok(const char *text)
{
	struct presence_privacy *p = (struct presence_privacy *)1;
	char reason[PRESENCE_VISIBILITY_REASON_SIZE] = "";

	assert_int_equal(presence_privacy_parse(text, strlen(text), &p, reason, sizeof(reason)),
	                 PRESENCE_OK);
	return p;
}

static void parse_fails(const char *text, size_t len, enum presence_err want,
                        const char *reason_want)
{
	struct presence_privacy *p = (struct presence_privacy *)1;
	char reason[PRESENCE_VISIBILITY_REASON_SIZE] = "";

	assert_int_equal(presence_privacy_parse(text, len, &p, reason, sizeof(reason)), want);
	assert_null(p);
	assert_string_equal(reason, reason_want);
}

static void privacy_parses_each_documented_form(void **state)
{
	struct presence_privacy *p;
	char *text;

	(void)state;
	assert_null(parse_ok(""));
	assert_null(parse_ok("{\"visible_to\":\"everyone\"}"));
	assert_null(parse_ok(" { \"visible_to\" : \"everyone\" } "));
	p = parse_ok("{\"visible_to\":\"group\"}");
	assert_int_equal(p->kind, PRESENCE_PRIVACY_GROUP);
	presence_privacy_free(p);
	p = parse_ok("{\"visible_to\":\"nobody\"}");
	assert_int_equal(p->kind, PRESENCE_PRIVACY_NOBODY);
	presence_privacy_free(p);
	/* Lists are sorted, duplicates merged. */
	p = parse_ok("{\"visible_to\":[\"carol\",\"bob\",\"carol\",\"zoë\"]}");
	assert_int_equal(p->kind, PRESENCE_PRIVACY_LIST);
	assert_int_equal(p->count, 3);
	assert_string_equal(p->names[0], "bob");
	assert_string_equal(p->names[1], "carol");
	assert_string_equal(p->names[2], "zoë");
	text = presence_privacy_render(p);
	assert_string_equal(text, "{\"visible_to\":[\"bob\",\"carol\",\"zoë\"]}");
	free(text);
	presence_privacy_free(p);
	p = parse_ok("{\"visible_to\":[]}");
	assert_int_equal(p->kind, PRESENCE_PRIVACY_LIST);
	assert_int_equal(p->count, 0);
	presence_privacy_free(p);
	text = presence_privacy_render(NULL);
	assert_string_equal(text, "{\"visible_to\":\"everyone\"}");
	free(text);
}

static void privacy_refuses_anything_else_with_the_documented_reason(void **state)
{
	static const char shape[] = "privacy must be a JSON object with one member, \"visible_to\"";
	static const char value[] =
	    "visible_to must be \"everyone\", \"group\", \"nobody\" or a list of user names";
	char big[PRESENCE_PRIVACY_MAX_PAYLOAD + 2];
	char list[4096];
	size_t n = 0;

	(void)state;
	parse_fails(S("nobody"), PRESENCE_ERR_INVAL, shape);
	parse_fails(S("[]"), PRESENCE_ERR_INVAL, shape);
	parse_fails(S("{}"), PRESENCE_ERR_INVAL, shape);
	parse_fails(S("{\"visible_to\":\"nobody\",\"x\":1}"), PRESENCE_ERR_INVAL, shape);
	parse_fails(S("{\"visibleTo\":\"nobody\"}"), PRESENCE_ERR_INVAL, shape);
	parse_fails(S("{\"visible_to\":\"nobody\"} x"), PRESENCE_ERR_INVAL, shape);
	parse_fails(S("{\"visible_to\":\"Nobody\"}"), PRESENCE_ERR_INVAL, value);
	parse_fails(S("{\"visible_to\":null}"), PRESENCE_ERR_INVAL, value);
	parse_fails(S("{\"visible_to\":[1]}"), PRESENCE_ERR_INVAL, value);
	parse_fails(S("{\"visible_to\":[\"\"]}"), PRESENCE_ERR_INVAL,
	            "visible_to lists an empty name or one that is not UTF-8 text");
	parse_fails(S("{\"visible_to\":[\"\\u0000bob\"]}"), PRESENCE_ERR_INVAL,
	            "visible_to lists an empty name or one that is not UTF-8 text");
	parse_fails(S("{\"visible_to\":[\"\xff\"]}"), PRESENCE_ERR_INVAL,
	            "visible_to lists an empty name or one that is not UTF-8 text");
	n += (size_t)snprintf(list + n, sizeof(list) - n, "{\"visible_to\":[");
	for (int i = 0; i <= PRESENCE_PRIVACY_MAX_NAMES; i++) {
		n += (size_t)snprintf(list + n, sizeof(list) - n, "%s\"u%d\"", i > 0 ? "," : "", i);
	}
	snprintf(list + n, sizeof(list) - n, "]}");
	parse_fails(list, strlen(list), PRESENCE_ERR_INVAL,
	            "visible_to lists 101 names; at most 100");
	memset(big, ' ', sizeof(big));
	parse_fails(big, sizeof(big) - 1, PRESENCE_ERR_TOO_LARGE,
	            "payload is 16385 bytes; at most 16384 are accepted");
}

static void privacy_parse_survives_every_allocation_failure(void **state)
{
	static const char text[] = "{\"visible_to\":[\"carol\",\"bob\"]}";
	struct presence_privacy *p = NULL, *copy = NULL;
	char reason[PRESENCE_VISIBILITY_REASON_SIZE];
	enum presence_err err;

	(void)state;
	for (long n = 0;; n++) {
		failalloc_fail_after(n);
		err = presence_privacy_parse(text, sizeof(text) - 1, &p, reason, sizeof(reason));
		failalloc_reset();
		if (err == PRESENCE_OK) {
			break;
		}
		/* cJSON reports its own lack of memory as a syntax error: refused either way. */
		assert_true(err == PRESENCE_ERR_NOMEM || err == PRESENCE_ERR_INVAL);
		assert_null(p);
	}
	for (long n = 0;; n++) {
		bool ok;

		failalloc_fail_after(n);
		ok = presence_privacy_copy(p, &copy);
		failalloc_reset();
		if (ok) {
			break;
		}
		assert_null(copy);
	}
	assert_true(presence_privacy_equal(p, copy));
	presence_privacy_free(copy);
	presence_privacy_free(p);
}

static struct presence_groups *groups_of(const char *text)
{
	struct presence_groups *g = NULL;
	char err[512] = "";

	assert_int_equal(presence_groups_parse("g", text, strlen(text), &g, err, sizeof(err)),
	                 PRESENCE_OK);
	return g;
}

static void groups_file_reads_blocks_comments_and_several_groups(void **state)
{
	struct presence_groups *g = groups_of("# the fleet\n"
	                                      "group acme\n"
	                                      "user alice\n"
	                                      "  user  acme dashboard  \r\n"
	                                      "\n"
	                                      "group globex\n"
	                                      "user bob\n"
	                                      "user alice\n"
	                                      "group acme\n"
	                                      "user carol");

	(void)state;
	assert_int_equal(presence_groups_count(g), 2);
	assert_int_equal(presence_groups_members(g), 5);
	presence_groups_unref(g);
}

static void groups_file_errors_name_the_line(void **state)
{
	static const struct {
		const char *text;
		const char *err;
	} cases[] = {
	    {"user alice\n", "g line 1: user before any group line"},
	    {"group\n", "g line 1: a group needs a name: group <name>"},
	    {"group a\nuser\n", "g line 2: a member needs a name: user <name>"},
	    {"group a\n\nmember bob\n", "g line 3: expected group <name> or user <name>"},
	    {"group a\nuser \xff\n", "g line 2: not UTF-8 text"},
	};
	char text[4096];
	size_t n = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct presence_groups *g = (struct presence_groups *)1;
		char err[512] = "";

		assert_int_equal(presence_groups_parse("g", cases[i].text, strlen(cases[i].text),
		                                       &g, err, sizeof(err)),
		                 PRESENCE_ERR_INVAL);
		assert_null(g);
		assert_string_equal(err, cases[i].err);
	}
	for (int i = 0; i <= PRESENCE_GROUPS_PER_USER_MAX; i++) {
		n += (size_t)snprintf(text + n, sizeof(text) - n, "group g%d\nuser alice\n", i);
	}
	{
		struct presence_groups *g = NULL;
		char err[512] = "";

		assert_int_equal(presence_groups_parse("g", text, n, &g, err, sizeof(err)),
		                 PRESENCE_ERR_INVAL);
		assert_string_equal(err, "g line 66: alice is in more than 32 groups");
	}
}

static void groups_parse_survives_every_allocation_failure(void **state)
{
	static const char text[] = "group a\nuser x\nuser y\ngroup b\nuser x\n";
	struct presence_groups *g = NULL;
	char err[512];

	(void)state;
	for (long n = 0;; n++) {
		enum presence_err rc;

		failalloc_fail_after(n);
		rc = presence_groups_parse("g", text, sizeof(text) - 1, &g, err, sizeof(err));
		failalloc_reset();
		if (rc == PRESENCE_OK) {
			break;
		}
		assert_int_equal(rc, PRESENCE_ERR_NOMEM);
		assert_null(g);
	}
	presence_groups_unref(g);
}

/* The fixture of the rule tests: acme = {alice, dash}, globex = {bob, alice}; with the
 * username rule '/', "acme/s1" is in acme too, "initech/s2" in initech (no file entry). */
static struct presence_groups *fleet(void)
{
	return groups_of("group acme\nuser alice\nuser dash\n"
	                 "group globex\nuser bob\nuser alice\n");
}

static bool sees(const struct presence_visibility *vis, const struct presence_groups *g,
                 const char *w, const char *u, const char *privacy)
{
	struct presence_privacy *p = privacy != NULL ? parse_ok(privacy) : NULL;
	bool answer = presence_visibility_may_see(vis, g, w, u, p);

	presence_privacy_free(p);
	return answer;
}

static void everyone_rule_lets_a_user_narrow_but_not_widen(void **state)
{
	static char admin[] = "admin";
	char *admins[] = {admin};
	struct presence_visibility vis = {false, NULL, admins, 1};
	struct presence_groups *g = fleet();

	(void)state;
	/* The default: everyone, even a client without a name. */
	assert_true(sees(&vis, g, "eve", "bob", NULL));
	assert_true(sees(&vis, g, NULL, "bob", NULL));
	/* group: only those sharing one. */
	assert_true(sees(&vis, g, "alice", "bob", "{\"visible_to\":\"group\"}"));
	assert_false(sees(&vis, g, "dash", "bob", "{\"visible_to\":\"group\"}"));
	assert_false(sees(&vis, g, NULL, "bob", "{\"visible_to\":\"group\"}"));
	/* nobody: nobody but the user and see_everyone. */
	assert_false(sees(&vis, g, "alice", "bob", "{\"visible_to\":\"nobody\"}"));
	assert_true(sees(&vis, g, "bob", "bob", "{\"visible_to\":\"nobody\"}"));
	assert_true(sees(&vis, g, "admin", "bob", "{\"visible_to\":\"nobody\"}"));
	/* An empty list: nobody; its copy (a deletion's) has no names array at all. */
	assert_false(sees(&vis, g, "eve", "bob", "{\"visible_to\":[]}"));
	{
		struct presence_privacy *empty = parse_ok("{\"visible_to\":[]}"), *copy = NULL;

		assert_true(presence_privacy_copy(empty, &copy));
		assert_false(presence_visibility_may_see(&vis, g, "eve", "bob", copy));
		presence_privacy_free(copy);
		presence_privacy_free(empty);
	}
	/* A list: exactly its names. */
	assert_true(sees(&vis, g, "eve", "bob", "{\"visible_to\":[\"eve\"]}"));
	assert_false(sees(&vis, g, "alice", "bob", "{\"visible_to\":[\"eve\"]}"));
	presence_groups_unref(g);
}

static void group_rule_limits_everyone_to_shared_groups(void **state)
{
	struct presence_visibility vis = {true, "/", NULL, 0};
	struct presence_groups *g = fleet();

	(void)state;
	assert_true(sees(&vis, g, "dash", "alice", NULL));
	assert_false(sees(&vis, g, "dash", "bob", NULL));
	assert_true(sees(&vis, g, "alice", "bob", NULL));
	/* The username's group joins the file's group of that name. */
	assert_true(sees(&vis, g, "dash", "acme/s1", NULL));
	assert_true(sees(&vis, g, "acme/s1", "alice", NULL));
	assert_false(sees(&vis, g, "bob", "acme/s1", NULL));
	assert_true(sees(&vis, g, "initech/dash", "initech/s2", NULL));
	assert_false(sees(&vis, g, "initech/dash", "acme/s1", NULL));
	/* No separator at the start, none at all: no group from the name. */
	assert_false(sees(&vis, g, "/x", "/y", NULL));
	assert_false(sees(&vis, g, "loner", "other", NULL));
	/* A client without a name sees nobody else. */
	assert_false(sees(&vis, g, NULL, "alice", NULL));
	assert_false(sees(&vis, g, "", "alice", NULL));
	/* A list narrows the group, never widens it. */
	assert_false(sees(&vis, g, "bob", "dash", "{\"visible_to\":[\"bob\"]}"));
	assert_true(sees(&vis, g, "alice", "dash", "{\"visible_to\":[\"alice\"]}"));
	assert_false(sees(&vis, g, "alice", "dash", "{\"visible_to\":\"nobody\"}"));
	/* Always oneself. */
	assert_true(sees(&vis, g, "loner", "loner", NULL));
	/* No groups table at all. */
	assert_false(sees(&vis, NULL, "dash", "alice", NULL));
	assert_true(sees(&vis, NULL, "acme/a", "acme/b", NULL));
	presence_groups_unref(g);
}

static void widening_is_told_conservatively(void **state)
{
	struct presence_visibility every = {false, NULL, NULL, 0};
	struct presence_visibility group = {true, NULL, NULL, 0};
	struct presence_privacy *nobody = parse_ok("{\"visible_to\":\"nobody\"}");
	struct presence_privacy *grp = parse_ok("{\"visible_to\":\"group\"}");
	struct presence_privacy *ab = parse_ok("{\"visible_to\":[\"a\",\"b\"]}");
	struct presence_privacy *a = parse_ok("{\"visible_to\":[\"a\"]}");

	(void)state;
	assert_false(presence_visibility_widens(&every, NULL, nobody));
	assert_true(presence_visibility_widens(&every, nobody, NULL));
	assert_true(presence_visibility_widens(&every, nobody, a));
	assert_true(presence_visibility_widens(&every, grp, NULL));
	assert_false(presence_visibility_widens(&group, grp, NULL));
	assert_true(presence_visibility_widens(&every, a, ab));
	assert_false(presence_visibility_widens(&every, ab, a));
	assert_true(presence_visibility_widens(&every, grp, a));
	assert_false(presence_visibility_widens(&group, grp, a));
	assert_true(presence_visibility_widens(&group, a, grp));
	assert_true(presence_visibility_widens(&group, a, NULL));
	presence_privacy_free(nobody);
	presence_privacy_free(grp);
	presence_privacy_free(ab);
	presence_privacy_free(a);
}

static void reload_effect_names_the_users_of_changed_groups(void **state)
{
	struct presence_visibility vis = {true, "/", NULL, 0};
	struct presence_groups *old = fleet();
	/* dash leaves acme for globex; eve joins acme. */
	struct presence_groups *fresh = groups_of("group acme\nuser alice\nuser eve\n"
	                                          "group globex\nuser bob\nuser alice\nuser dash\n"
	                                          "group initech\nuser x\n");
	struct presence_groups_diff *diff = presence_groups_diff_new(old, fresh);
	struct presence_groups *same = fleet();
	struct presence_groups_diff *none = presence_groups_diff_new(old, same);
	bool affected, widened;

	(void)state;
	assert_non_null(diff);
	assert_int_equal(presence_groups_diff_count(diff), 3);
	assert_int_equal(presence_groups_diff_count(none), 0);
	presence_visibility_reload_effect(&vis, old, fresh, diff, "alice", &affected, &widened);
	assert_true(affected);
	assert_true(widened);
	presence_visibility_reload_effect(&vis, old, fresh, diff, "acme/s1", &affected, &widened);
	assert_true(affected);
	assert_true(widened);
	presence_visibility_reload_effect(&vis, old, fresh, diff, "nobody-else", &affected,
	                                  &widened);
	assert_false(affected);
	assert_false(widened);
	presence_visibility_reload_effect(&vis, old, same, none, "alice", &affected, &widened);
	assert_false(affected);
	assert_false(widened);
	presence_groups_diff_free(diff);
	presence_groups_diff_free(none);
	presence_groups_unref(same);
	presence_groups_unref(fresh);
	presence_groups_unref(old);
}

static int again_calls;
static char again_name[64];
static bool again_gone;

static void record_again(void *arg, const char *name, const char *level, size_t level_len,
                         const struct presence_privacy *from_privacy,
                         struct presence_groups *from_groups, bool gone)
{
	(void)arg;
	(void)level;
	(void)level_len;
	(void)from_groups;
	assert_int_equal(from_privacy->kind, PRESENCE_PRIVACY_NOBODY);
	again_calls++;
	snprintf(again_name, sizeof(again_name), "%s", name);
	again_gone = gone;
}

static void a_deletion_reaches_exactly_those_that_lost_sight(void **state)
{
	struct presence_visibility vis = {false, NULL, NULL, 0};
	struct presence_deletions *d = presence_deletions_new();
	struct presence_privacy *ab = parse_ok("{\"visible_to\":[\"a\",\"b\"]}");
	struct presence_privacy *bc = parse_ok("{\"visible_to\":[\"b\",\"c\"]}");
	struct presence_privacy *nobody = parse_ok("{\"visible_to\":\"nobody\"}");
	const struct presence_deletion *del;
	bool publish;

	(void)state;
	assert_int_equal(
	    presence_deletions_add(d, "u", S("u"), ab, NULL, bc, NULL, false, 10, &publish),
	    PRESENCE_OK);
	assert_true(publish);
	del = presence_deletions_find(d, S("u"));
	assert_non_null(del);
	assert_true(presence_deletion_allows(&vis, del, "a"));
	assert_false(presence_deletion_allows(&vis, del, "b"));
	assert_false(presence_deletion_allows(&vis, del, "c"));
	assert_false(presence_deletion_allows(&vis, del, "u"));
	assert_false(presence_deletion_allows(&vis, del, NULL));
	/* A change while it is in flight follows it. */
	assert_int_equal(
	    presence_deletions_add(d, "u", S("u"), bc, NULL, nobody, NULL, false, 11, &publish),
	    PRESENCE_OK);
	assert_false(publish);
	assert_int_equal(presence_deletions_confirm(d, 11, record_again, NULL), 0);
	assert_int_equal(presence_deletions_count(d), 1);
	/* Two ticks after: delivered for sure. */
	presence_privacy_free(bc);
	bc = NULL;
	assert_int_equal(presence_deletions_confirm(d, 12, NULL, NULL), 1);
	assert_null(presence_deletions_find(d, S("u")));
	/* A forgotten user reaches everyone who could see it. */
	assert_int_equal(
	    presence_deletions_add(d, "u", S("u"), nobody, NULL, NULL, NULL, true, 20, &publish),
	    PRESENCE_OK);
	del = presence_deletions_find(d, S("u"));
	assert_true(presence_deletion_allows(&vis, del, "u"));
	assert_false(presence_deletion_allows(&vis, del, "a"));
	presence_deletions_free(d);
	presence_privacy_free(ab);
	presence_privacy_free(nobody);
}

static void a_change_behind_a_deletion_is_sent_after_it(void **state)
{
	struct presence_deletions *d = presence_deletions_new();
	struct presence_privacy *nobody = parse_ok("{\"visible_to\":\"nobody\"}");
	bool publish;

	(void)state;
	again_calls = 0;
	assert_int_equal(
	    presence_deletions_add(d, "v", S("v"), NULL, NULL, nobody, NULL, false, 5, &publish),
	    PRESENCE_OK);
	assert_int_equal(
	    presence_deletions_add(d, "v", S("v"), nobody, NULL, NULL, NULL, true, 6, &publish),
	    PRESENCE_OK);
	assert_false(publish);
	assert_int_equal(presence_deletions_confirm(d, 7, record_again, NULL), 1);
	assert_int_equal(again_calls, 1);
	assert_string_equal(again_name, "v");
	assert_true(again_gone);
	presence_deletions_free(d);
	presence_privacy_free(nobody);
}

static void deletions_survive_every_allocation_failure(void **state)
{
	struct presence_privacy *ab = parse_ok("{\"visible_to\":[\"a\",\"b\"]}");
	struct presence_groups *g = fleet();

	(void)state;
	for (long n = 0;; n++) {
		struct presence_deletions *d;
		enum presence_err err = PRESENCE_ERR_NOMEM;
		bool publish = false;

		failalloc_fail_after(n);
		d = presence_deletions_new();
		if (d != NULL) {
			err = presence_deletions_add(d, "u", S("u"), ab, g, NULL, g, false, 1,
			                             &publish);
		}
		failalloc_reset();
		if (d != NULL && err == PRESENCE_OK) {
			assert_true(publish);
			presence_deletions_free(d);
			break;
		}
		if (d != NULL) {
			assert_null(presence_deletions_find(d, S("u")));
			assert_int_equal(presence_deletions_count(d), 0);
		}
		presence_deletions_free(d);
	}
	presence_groups_unref(g);
	presence_privacy_free(ab);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(privacy_parses_each_documented_form),
	    cmocka_unit_test(privacy_refuses_anything_else_with_the_documented_reason),
	    cmocka_unit_test(privacy_parse_survives_every_allocation_failure),
	    cmocka_unit_test(groups_file_reads_blocks_comments_and_several_groups),
	    cmocka_unit_test(groups_file_errors_name_the_line),
	    cmocka_unit_test(groups_parse_survives_every_allocation_failure),
	    cmocka_unit_test(everyone_rule_lets_a_user_narrow_but_not_widen),
	    cmocka_unit_test(group_rule_limits_everyone_to_shared_groups),
	    cmocka_unit_test(widening_is_told_conservatively),
	    cmocka_unit_test(reload_effect_names_the_users_of_changed_groups),
	    cmocka_unit_test(a_deletion_reaches_exactly_those_that_lost_sight),
	    cmocka_unit_test(a_change_behind_a_deletion_is_sent_after_it),
	    cmocka_unit_test(deletions_survive_every_allocation_failure),
	};

	failalloc_install_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
