/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Unit tests for the plugin's broker-independent rules (policy.h): who is tracked, who may
 * write or read each kind of topic, and when a save is due. Client pointers are addresses of
 * a local array, never dereferenced.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "policy.h"

static char clients[4];
#define ALICE_CLIENT ((const void *)&clients[0])
#define PENDING_CLIENT ((const void *)&clients[1])
#define STRANGER ((const void *)&clients[2])

struct fixture {
	struct presence_config cfg;
	struct presence_registry *reg;
};

/* A registry with prefix "presence", alice ACTIVE on ALICE_CLIENT, a login attempt PENDING on
 * PENDING_CLIENT, under the options given (key, value pairs, NULL-terminated). */
static int make_fixture(void **ctx, const char *const *kv)
{
	static struct fixture f;
	struct presence_option opts[4];
	size_t count = 0;

	memset(&f, 0, sizeof(f));
	while (kv != NULL && kv[2 * count] != NULL) {
		opts[count].key = kv[2 * count];
		opts[count].value = kv[2 * count + 1];
		count++;
	}
	if (presence_config_parse(&f.cfg, opts, count, NULL, 0) != PRESENCE_OK) {
		return -1;
	}
	f.reg = presence_registry_new(f.cfg.topic_prefix);
	if (f.reg == NULL || presence_registry_session_connect(f.reg, ALICE_CLIENT, "alice") ||
	    presence_registry_session_pending(f.reg, PENDING_CLIENT)) {
		return -1;
	}
	*ctx = &f;
	return 0;
}

static int setup(void **ctx)
{
	return make_fixture(ctx, NULL);
}

static int setup_acl_allow(void **ctx)
{
	static const char *const kv[] = {"acl", "allow", NULL};

	return make_fixture(ctx, kv);
}

static int setup_ignore_bob(void **ctx)
{
	static const char *const kv[] = {"ignore_users", "bob", NULL};

	return make_fixture(ctx, kv);
}

static int teardown(void **ctx)
{
	struct fixture *f = *ctx;

	presence_registry_free(f->reg);
	presence_config_free(&f->cfg);
	return 0;
}

/* The verdict for client (identity as the broker reports it) doing access on topic. */
static enum presence_verdict verdict(struct fixture *f, const void *client, const char *identity,
                                     const char *topic_text, enum presence_access access)
{
	struct presence_topic topic;
	bool owns = false;

	presence_topic_parse(f->cfg.topic_prefix, topic_text, &topic);
	if (topic.kind != PRESENCE_TOPIC_OUTSIDE && topic.kind != PRESENCE_TOPIC_RESERVED) {
		owns = presence_policy_owns_level(f->reg, &f->cfg, client, identity, topic.user,
		                                  topic.user_len);
	}
	return presence_policy_access(&f->cfg, &topic, access, owns, NULL);
}

static void tracked_names_exclude_empty_ignored_invalid_and_overlong_names(void **ctx)
{
	struct fixture *f = *ctx;
	static char overlong[65536];

	assert_string_equal(presence_policy_tracked_name(&f->cfg, "alice"), "alice");
	assert_string_equal(presence_policy_tracked_name(&f->cfg, "a/b+c#%"), "a/b+c#%");
	assert_null(presence_policy_tracked_name(&f->cfg, NULL));
	assert_null(presence_policy_tracked_name(&f->cfg, ""));
	assert_null(presence_policy_tracked_name(&f->cfg, "bob"));
	assert_null(presence_policy_tracked_name(&f->cfg, "\xff"));
	memset(overlong, 'a', 65535 - strlen("presence/") - strlen("/error"));
	assert_non_null(presence_policy_tracked_name(&f->cfg, overlong));
	overlong[strlen(overlong)] = 'a';
	assert_null(presence_policy_tracked_name(&f->cfg, overlong));
}

static void only_the_users_own_sessions_write_its_state(void **ctx)
{
	struct fixture *f = *ctx;
	const char *why = NULL;
	struct presence_topic topic;

	assert_int_equal(
	    verdict(f, ALICE_CLIENT, "alice", "presence/alice/state", PRESENCE_ACCESS_WRITE),
	    PRESENCE_VERDICT_ALLOW);
	assert_int_equal(
	    verdict(f, ALICE_CLIENT, "alice", "presence/alice/state/status", PRESENCE_ACCESS_WRITE),
	    PRESENCE_VERDICT_ALLOW);
	/* A pending login owns the level of the identity it logged in with. */
	assert_int_equal(
	    verdict(f, PENDING_CLIENT, "carol", "presence/carol/state", PRESENCE_ACCESS_WRITE),
	    PRESENCE_VERDICT_ALLOW);
	assert_int_equal(
	    verdict(f, PENDING_CLIENT, "carol", "presence/alice/state", PRESENCE_ACCESS_WRITE),
	    PRESENCE_VERDICT_DENY);
	/* Another user, or an untracked client claiming alice's name, may not. */
	assert_int_equal(
	    verdict(f, STRANGER, "alice", "presence/alice/state", PRESENCE_ACCESS_WRITE),
	    PRESENCE_VERDICT_DENY);
	presence_topic_parse("presence", "presence/alice/state", &topic);
	presence_policy_access(&f->cfg, &topic, PRESENCE_ACCESS_WRITE, false, &why);
	assert_string_equal(why, "only the user's own sessions write its state");
}

static void nobody_writes_documents_errors_or_reserved_topics(void **ctx)
{
	struct fixture *f = *ctx;
	const char *why = NULL;
	struct presence_topic topic;

	assert_int_equal(verdict(f, ALICE_CLIENT, "alice", "presence/alice", PRESENCE_ACCESS_WRITE),
	                 PRESENCE_VERDICT_DENY);
	assert_int_equal(
	    verdict(f, ALICE_CLIENT, "alice", "presence/alice/error", PRESENCE_ACCESS_WRITE),
	    PRESENCE_VERDICT_DENY);
	assert_int_equal(
	    verdict(f, ALICE_CLIENT, "alice", "presence/alice/x", PRESENCE_ACCESS_WRITE),
	    PRESENCE_VERDICT_DENY);
	assert_int_equal(verdict(f, ALICE_CLIENT, "alice", "presence/", PRESENCE_ACCESS_WRITE),
	                 PRESENCE_VERDICT_DENY);
	presence_topic_parse("presence", "presence/alice", &topic);
	presence_policy_access(&f->cfg, &topic, PRESENCE_ACCESS_WRITE, true, &why);
	assert_string_equal(why, "only the plugin writes there");
}

static void nobody_reads_state_writes_and_only_the_user_reads_its_errors(void **ctx)
{
	struct fixture *f = *ctx;

	assert_int_equal(
	    verdict(f, ALICE_CLIENT, "alice", "presence/alice/state", PRESENCE_ACCESS_READ),
	    PRESENCE_VERDICT_DENY);
	assert_int_equal(
	    verdict(f, ALICE_CLIENT, "alice", "presence/alice/state/k", PRESENCE_ACCESS_READ),
	    PRESENCE_VERDICT_DENY);
	assert_int_equal(
	    verdict(f, ALICE_CLIENT, "alice", "presence/alice/error", PRESENCE_ACCESS_READ),
	    PRESENCE_VERDICT_ALLOW);
	assert_int_equal(verdict(f, STRANGER, "bob", "presence/alice/error", PRESENCE_ACCESS_READ),
	                 PRESENCE_VERDICT_DENY);
}

static void everything_else_is_left_to_the_broker_with_acl_defer(void **ctx)
{
	struct fixture *f = *ctx;

	assert_int_equal(verdict(f, STRANGER, "bob", "presence/alice", PRESENCE_ACCESS_READ),
	                 PRESENCE_VERDICT_PASS);
	assert_int_equal(verdict(f, STRANGER, "bob", "other/topic", PRESENCE_ACCESS_WRITE),
	                 PRESENCE_VERDICT_PASS);
	assert_int_equal(verdict(f, STRANGER, "bob", "other/topic", PRESENCE_ACCESS_READ),
	                 PRESENCE_VERDICT_PASS);
	assert_int_equal(verdict(f, STRANGER, "bob", "presence/+", PRESENCE_ACCESS_OTHER),
	                 PRESENCE_VERDICT_PASS);
	assert_int_equal(verdict(f, STRANGER, "bob", "presence", PRESENCE_ACCESS_WRITE),
	                 PRESENCE_VERDICT_PASS);
}

static void acl_allow_allows_what_the_plugin_does_not_deny(void **ctx)
{
	struct fixture *f = *ctx;

	assert_int_equal(verdict(f, STRANGER, "bob", "presence/alice", PRESENCE_ACCESS_READ),
	                 PRESENCE_VERDICT_ALLOW);
	assert_int_equal(verdict(f, STRANGER, "bob", "other/topic", PRESENCE_ACCESS_WRITE),
	                 PRESENCE_VERDICT_ALLOW);
	assert_int_equal(verdict(f, STRANGER, "bob", "presence/+", PRESENCE_ACCESS_OTHER),
	                 PRESENCE_VERDICT_ALLOW);
	assert_int_equal(verdict(f, STRANGER, "bob", "presence/alice", PRESENCE_ACCESS_WRITE),
	                 PRESENCE_VERDICT_DENY);
	assert_int_equal(verdict(f, STRANGER, "bob", "presence/alice/state", PRESENCE_ACCESS_READ),
	                 PRESENCE_VERDICT_DENY);
}

static void an_ignored_user_owns_nothing(void **ctx)
{
	struct fixture *f = *ctx;

	assert_int_equal(presence_registry_session_pending(f->reg, STRANGER), PRESENCE_OK);
	assert_int_equal(verdict(f, STRANGER, "bob", "presence/bob/state", PRESENCE_ACCESS_WRITE),
	                 PRESENCE_VERDICT_DENY);
}

static void response_topics_under_dollar_or_the_namespace_are_refused(void **ctx)
{
	struct fixture *f = *ctx;

	assert_string_equal(presence_policy_response_topic_refusal(&f->cfg, "$SYS/broker/x"),
	                    "starts with '$'");
	assert_string_equal(presence_policy_response_topic_refusal(&f->cfg, "$CONTROL/presence/v1"),
	                    "starts with '$'");
	assert_string_equal(presence_policy_response_topic_refusal(&f->cfg, "presence/alice"),
	                    "is inside the plugin's namespace");
	assert_string_equal(presence_policy_response_topic_refusal(&f->cfg, "presence/"),
	                    "is inside the plugin's namespace");
	assert_null(presence_policy_response_topic_refusal(&f->cfg, "presence"));
	assert_null(presence_policy_response_topic_refusal(&f->cfg, "presences/alice"));
	assert_null(presence_policy_response_topic_refusal(&f->cfg, "replies/presence/x"));
}

static void a_write_check_during_a_login_with_the_same_client_id_is_a_takeover_will(void **ctx)
{
	const void *old = (const void *)0x10, *new = (const void *)0x20;

	(void)ctx;
	assert_true(presence_policy_takeover_will(old, "dev", new, "dev"));
	/* The new client's own publishes, another client id, no login in progress. */
	assert_false(presence_policy_takeover_will(new, "dev", new, "dev"));
	assert_false(presence_policy_takeover_will(old, "dev", new, "dev2"));
	assert_false(presence_policy_takeover_will(old, "dev", NULL, NULL));
	assert_false(presence_policy_takeover_will(old, NULL, new, "dev"));
	assert_false(presence_policy_takeover_will(old, "dev", new, NULL));
}

static void saves_are_paced_unless_a_document_waits(void **ctx)
{
	(void)ctx;
	/* Nothing to save. */
	assert_false(presence_policy_save_due(10000, 0, false, false, false));
	/* Changes: at most once per interval. */
	assert_true(presence_policy_save_due(10000, 9000, false, true, false));
	assert_false(presence_policy_save_due(10000, 9001, false, true, false));
	/* A waiting document starts one at once... */
	assert_true(presence_policy_save_due(10000, 9999, true, false, false));
	/* ...unless the last save failed: retried once per interval. */
	assert_false(presence_policy_save_due(10000, 9999, true, false, true));
	assert_true(presence_policy_save_due(10000, 9000, true, false, true));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
	        tracked_names_exclude_empty_ignored_invalid_and_overlong_names, setup_ignore_bob,
	        teardown),
	    cmocka_unit_test_setup_teardown(only_the_users_own_sessions_write_its_state, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(nobody_writes_documents_errors_or_reserved_topics,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        nobody_reads_state_writes_and_only_the_user_reads_its_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(everything_else_is_left_to_the_broker_with_acl_defer,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(acl_allow_allows_what_the_plugin_does_not_deny,
	                                    setup_acl_allow, teardown),
	    cmocka_unit_test_setup_teardown(an_ignored_user_owns_nothing, setup_ignore_bob,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(
	        response_topics_under_dollar_or_the_namespace_are_refused, setup, teardown),
	    cmocka_unit_test(
	        a_write_check_during_a_login_with_the_same_client_id_is_a_takeover_will),
	    cmocka_unit_test(saves_are_paced_unless_a_document_waits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
