/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Integration tests of who may see whom (issue 18) with identity clientid: a watcher's name is
 * its client id, whatever username it logs in with (and with none), in the groups_file, in
 * see_everyone and in privacy lists. Every step asserts exactly what each watcher receives
 * (visibility.h).
 */
#include "visibility.h"

static void with_identity_clientid_watchers_are_named_by_their_client_ids(void **state)
{
	static const char *const groups = "group acme\nuser alice\nuser wa\n"
	                                  "group all\nuser marker\nuser wa\nuser wb\n";
	static const char *const extra = VIS_OPEN "plugin_opt_identity clientid\n"
	                                          "plugin_opt_visibility group\n"
	                                          "plugin_opt_groups_file @DIR@/groups\n"
	                                          "plugin_opt_see_everyone ops\n"
	                                          "plugin_opt_ignore_users ops,wa,wb,probe\n";
	struct client *ops, *wa, *wb, *alice, *probe, *q;
	struct vis_marker mk = {0};
	char *conf;
	struct broker *b = vis_start(groups, extra, &conf);

	(void)state;
	/* Usernames that would say otherwise: the client ids decide. */
	ops = vis_watch(b, "ops", NULL, "presence/+");
	mk.c = client_connect_as(b, "marker", "nobody-in-particular", 5);
	vis_expect_items(ops, "+marker", false);
	alice = client_connect_as(b, "alice", "wb", 5);
	vis_expect_items(ops, "+alice", false);
	/* wa logs in as "wb" (and wb as "wa"): each sees per its client id. */
	wa = vis_watch(b, "wa", "wb", NULL);
	vis_expect_retained(wa, "presence/+", "+alice +marker");
	wb = vis_watch(b, "wb", "wa", NULL);
	vis_expect_retained(wb, "presence/+", "+marker");
	probe = vis_watch(b, "probe", "alice", NULL);
	vis_expect_retained(probe, "presence/+", "");
	client_disconnect(probe);

	publish_text_ok(alice, "presence/alice/state/status", "here", 1);
	{
		struct vis_expect e[] = {
		    {ops, "+alice", false}, {wa, "+alice", false}, {wb, NULL, false}};

		vis_step(&mk, e, 3);
	}
	/* A list names client ids too: wb is listed but shares no group (visibility group); wa
	 * shares one but is not listed. */
	vis_privacy(alice, "alice", "{\"visible_to\":[\"wb\"]}");
	{
		struct vis_expect e[] = {
		    {ops, NULL, false}, {wa, "-alice", false}, {wb, NULL, false}};

		vis_step(&mk, e, 3);
	}
	q = vis_querier(b, "wa", "alice");
	/* A second connection with client id wa takes the first over. */
	assert_true(client_wait_closed(wa, 5000));
	client_drop(wa);
	vis_query_unknown(q, "wa", "alice");
	client_disconnect(q);
	vis_privacy(alice, "alice", "{\"visible_to\":\"group\"}");
	{
		struct vis_expect e[] = {{ops, "+alice", false}, {wb, NULL, false}};

		vis_step(&mk, e, 2);
	}
	q = vis_querier(b, "wa", NULL);
	vis_query_known(q, "wa", "alice");
	client_disconnect(q);

	client_disconnect(wb);
	client_disconnect(alice);
	client_disconnect(ops);
	client_disconnect(mk.c);
	broker_stop(b);
	free(conf);
}

#define T(f) cmocka_unit_test_teardown(f, harness_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(with_identity_clientid_watchers_are_named_by_their_client_ids),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
