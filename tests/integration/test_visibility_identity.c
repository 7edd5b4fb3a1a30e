/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Integration tests of who may see whom (issue 18) and the names of watchers: with identity
 * clientid a watcher's name is its client id, whatever username it logs in with (and with
 * none), in the groups_file, in see_everyone and in privacy lists; a group_from_username
 * separator of several bytes; a client id taken over by another user. Every step asserts exactly
 * what each watcher receives (visibility.h).
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
	alice = vis_online(b, ops, "alice", "wb", "+alice");
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

static void a_separator_of_several_bytes_ends_the_group_at_its_first_occurrence(void **state)
{
	static const char *const groups = "group acme\nuser marker\n";
	static const char *const extra =
	    VIS_OPEN "plugin_opt_visibility group\n"
	             "plugin_opt_group_from_username ::\n"
	             "plugin_opt_groups_file @DIR@/groups\n"
	             "plugin_opt_see_everyone ops\n"
	             "plugin_opt_ignore_users ops,acme::dash,acme:dash\n";
	/* In acme: the first two. No group: one colon only, the separator at the start. */
	static const char *const users[] = {"acme::s1", "acme::x::y", "acme:s2", "::root"};
	struct client *ops, *dash, *colon, *sessions[4];
	struct vis_marker mk = {0};
	char *conf;
	struct broker *b = vis_start(groups, extra, &conf);

	(void)state;
	ops = vis_begin(b, &mk);
	for (size_t i = 0; i < 4; i++) {
		char id[16], item[64];

		snprintf(id, sizeof(id), "s%zu", i);
		snprintf(item, sizeof(item), "+%s", users[i]);
		sessions[i] = vis_online(b, ops, id, users[i], item);
	}
	dash = vis_watch(b, "dash", "acme::dash", NULL);
	vis_expect_retained(dash, "presence/+", "+acme::s1 +acme::x::y +marker");
	colon = vis_watch(b, "colon", "acme:dash", NULL);
	vis_expect_retained(colon, "presence/+", "");

	for (size_t i = 0; i < 4; i++) {
		char topic[64], item[64];
		struct vis_expect e[] = {
		    {ops, item, false}, {dash, i < 2 ? item : NULL, false}, {colon, NULL, true}};

		snprintf(topic, sizeof(topic), "presence/%s/state/status", users[i]);
		snprintf(item, sizeof(item), "+%s", users[i]);
		publish_text_ok(sessions[i], topic, "on", 1);
		vis_step(&mk, e, 3);
	}

	for (size_t i = 0; i < 4; i++) {
		client_disconnect(sessions[i]);
	}
	client_disconnect(colon);
	client_disconnect(dash);
	client_disconnect(ops);
	client_disconnect(mk.c);
	broker_stop(b);
	free(conf);
}

/* ---------------------------------------------------------------------------------------- */
/* Take-over                                                                                 */
/* ---------------------------------------------------------------------------------------- */

static void a_taken_over_client_id_sees_per_its_new_name(void **state)
{
	static const char *const groups = "group acme\nuser alice\nuser wa\n"
	                                  "group globex\nuser bob\nuser wb\n"
	                                  "group all\nuser marker\nuser wa\nuser wb\n";
	static const char *const extra = VIS_OPEN "plugin_opt_visibility group\n"
	                                          "plugin_opt_groups_file @DIR@/groups\n"
	                                          "plugin_opt_ignore_users wa,wb\n";
	struct client_opts wa_o = {.id = "w1", .username = "wa", .protocol = 5, .persistent = true};
	struct client_opts wb_o = {.id = "w1", .username = "wb", .protocol = 5, .persistent = true};
	struct client *w, *w2, *alice, *bob;
	struct vis_marker mk = {0};
	char *conf;
	struct broker *b = vis_start(groups, extra, &conf);

	(void)state;
	w = client_connect(b, &wa_o);
	assert_int_equal(client_subscribe(w, "presence/+", 1), 1);
	mk.c = client_connect_as(b, "marker1", "marker", 5);
	vis_expect_items(w, "+marker", false);
	alice = client_connect_as(b, "alice1", "alice", 5);
	{
		struct vis_expect e[] = {{w, "+alice", false}};

		vis_step(&mk, e, 1);
	}
	bob = client_connect_as(b, "bob1", "bob", 5);
	{
		struct vis_expect e[] = {{w, NULL, false}};

		vis_step(&mk, e, 1);
	}

	/* wb takes client id w1 over (its session, with the subscription, where the broker
	 * keeps it): what it receives is decided by its name. */
	w2 = client_connect(b, &wb_o);
	assert_true(client_wait_closed(w, 5000));
	client_drop(w);
	vis_expect_retained(w2, "presence/+", "+bob +marker");
	publish_text_ok(alice, "presence/alice/state/status", "a", 1);
	{
		struct vis_expect e[] = {{w2, NULL, false}};

		vis_step(&mk, e, 1);
	}
	publish_text_ok(bob, "presence/bob/state/status", "b", 1);
	{
		struct vis_expect e[] = {{w2, "+bob", false}};

		vis_step(&mk, e, 1);
	}

	client_disconnect(w2);
	client_disconnect(bob);
	client_disconnect(alice);
	client_disconnect(mk.c);
	broker_stop(b);
	free(conf);
}

#define T(f) cmocka_unit_test_teardown(f, harness_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(with_identity_clientid_watchers_are_named_by_their_client_ids),
	    T(a_separator_of_several_bytes_ends_the_group_at_its_first_occurrence),
	    T(a_taken_over_client_id_sees_per_its_new_name),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
