/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Integration tests of who may see whom (issue 18), on a real broker with real watchers of
 * different names: visibility group with a groups_file and with group_from_username,
 * see_everyone, anonymous watchers, a user's own document, a user's privacy choice switched
 * while watchers are connected (transitions, retained documents, queries), queued documents and
 * forgotten users. Every step asserts exactly what each watcher receives, ending with the
 * marker's document (visibility.h).
 */
#include "visibility.h"

/* ---------------------------------------------------------------------------------------- */
/* visibility group with a groups_file                                                       */
/* ---------------------------------------------------------------------------------------- */

static const char *const company_groups = "# who works where\n"
                                          "group acme\n"
                                          "user alice\n"
                                          "user carol\n"
                                          "user wa\n"
                                          "\n"
                                          "group globex\n"
                                          "user bob\n"
                                          "user carol\n"
                                          "user wb\n"
                                          "\n"
                                          "  # the marker is seen by every watcher\n"
                                          "group all\n"
                                          "user marker\n"
                                          "user wa\n"
                                          "user wb\n"
                                          "user wab\n"
                                          "group dm\n"
                                          "user dave\n"
                                          "user marker\n"
                                          "\n"
                                          "# opened again: merged\n"
                                          "group acme\n"
                                          "user wab\n"
                                          "group globex\n"
                                          "user wab\n";

static const char *const company_conf = VIS_OPEN "plugin_opt_visibility group\n"
                                                 "plugin_opt_groups_file @DIR@/groups\n"
                                                 "plugin_opt_see_everyone ops\n"
                                                 "plugin_opt_ignore_users wa,wb,wab,ops\n";

/* Whether the name (watcher) sees user, as company_groups says; "" = anonymous. */
static bool company_sees(const char *watcher, const char *user)
{
	static const char *const table[][2] = {
	    {"ops", " alice bob carol dave marker "},
	    {"wa", " alice carol marker "},
	    {"wb", " bob carol marker "},
	    {"wab", " alice bob carol marker "},
	    {"dave", " dave marker "},
	    {"", " "},
	};
	char needle[64];

	snprintf(needle, sizeof(needle), " %s ", user);
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		if (strcmp(table[i][0], watcher) == 0) {
			return strstr(table[i][1], needle) != NULL;
		}
	}
	fail_msg("no such watcher %s", watcher);
	return false;
}

static void groups_file_decides_who_sees_whom(void **state)
{
	static const char *const users[] = {"alice", "bob", "carol", "dave"};
	static const char *const names[] = {"ops", "wa", "wb", "wab", "dave", ""};
	static const char *const probes[] = {"ops", "wa", "wb", "wab", ""};
	static const char *const all_users[] = {"alice", "bob", "carol", "dave", "marker"};
	struct client *w[6], *sessions[4];
	struct vis_marker mk = {0};
	struct vis_expect e[6];
	char *conf;
	struct broker *b = vis_start(company_groups, company_conf, &conf);
	char items[6][128];

	(void)state;
	/* ops (see_everyone, ignored) is there first and sees every document come. */
	w[0] = vis_watch(b, "ops1", "ops", "presence/+");
	mk.c = client_connect_as(b, "marker1", "marker", 5);
	vis_expect_items(w[0], "+marker", false);
	for (size_t i = 0; i < 4; i++) {
		char id[32], item[32];

		snprintf(id, sizeof(id), "%s1", users[i]);
		snprintf(item, sizeof(item), "+%s", users[i]);
		sessions[i] = client_connect_as(b, id, users[i], 5);
		vis_expect_items(w[0], item, false);
	}

	/* Retained on subscribe to presence/+: each sees its groups' users, dave (no group but
	 * dm) himself, the anonymous watcher nobody. */
	w[1] = vis_watch(b, "wa1", "wa", NULL);
	vis_expect_retained(w[1], "presence/+", "+alice +carol +marker");
	w[2] = vis_watch(b, "wb1", "wb", NULL);
	vis_expect_retained(w[2], "presence/+", "+bob +carol +marker");
	w[3] = vis_watch(b, "wab1", "wab", NULL);
	vis_expect_retained(w[3], "presence/+", "+alice +bob +carol +marker");
	w[4] = sessions[3];
	vis_expect_retained(w[4], "presence/+", "+dave +marker");
	w[5] = vis_watch(b, "anon1", NULL, NULL);
	vis_expect_retained(w[5], "presence/+", "");

	/* Retained on subscribe to each presence/<user> and to #, for fresh clients of each
	 * name. */
	for (size_t p = 0; p < sizeof(probes) / sizeof(probes[0]); p++) {
		char id[32], filter[64], item[32], set[128] = "";
		struct client *c;

		snprintf(id, sizeof(id), "probe-%s", probes[p]);
		c = vis_watch(b, id, probes[p][0] != '\0' ? probes[p] : NULL, NULL);
		for (size_t u = 0; u < sizeof(all_users) / sizeof(all_users[0]); u++) {
			bool sees = company_sees(probes[p], all_users[u]);

			snprintf(filter, sizeof(filter), "presence/%s", all_users[u]);
			snprintf(item, sizeof(item), "+%s ", all_users[u]);
			vis_expect_retained(c, filter, sees ? item : "");
			if (sees) {
				strcat(set, item);
			}
		}
		client_disconnect(c);
		c = vis_watch(b, id, probes[p][0] != '\0' ? probes[p] : NULL, NULL);
		vis_expect_retained(c, "#", set);
		client_disconnect(c);
	}

	/* Live: each user's next document reaches exactly the watchers that may see it. */
	for (size_t u = 0; u < 4; u++) {
		char topic[64], item[32];

		snprintf(topic, sizeof(topic), "presence/%s/state/status", users[u]);
		snprintf(item, sizeof(item), "+%s", users[u]);
		publish_text_ok(sessions[u], topic, "here", 1);
		for (size_t i = 0; i < 6; i++) {
			snprintf(items[i], sizeof(items[i]), "%s",
			         company_sees(names[i], users[u]) ? item : "");
			e[i] = (struct vis_expect){.c = w[i], .items = items[i], .blind = i == 5};
		}
		vis_step(&mk, e, 6);
	}

	/* A list under visibility group: a watcher must be listed AND share a group. wab is
	 * both; wb and dave are listed but share no group with alice; wa shares one, unlisted. */
	vis_privacy(sessions[0], "alice", "{\"visible_to\":[\"wab\",\"wb\",\"dave\"]}");
	{
		struct vis_expect le[] = {{w[0], NULL, false}, {w[1], "-alice", false},
		                          {w[2], NULL, false}, {w[3], NULL, false},
		                          {w[4], NULL, false}, {w[5], NULL, true}};
		struct client *q = vis_querier(b, "qwb", "wb");

		vis_step(&mk, le, 6);
		vis_query_unknown(q, "qwb", "alice");
		client_disconnect(q);
		q = vis_querier(b, "qwab", "wab");
		vis_query_known(q, "qwab", "alice");
		client_disconnect(q);
		q = vis_querier(b, "qwa", "wa");
		vis_query_unknown(q, "qwa", "alice");
		client_disconnect(q);
	}
	publish_text_ok(sessions[0], "presence/alice/state/status", "listed", 1);
	{
		struct vis_expect le[] = {{w[0], "+alice", false}, {w[1], NULL, false},
		                          {w[2], NULL, false},     {w[3], "+alice", false},
		                          {w[4], NULL, false},     {w[5], NULL, true}};

		vis_step(&mk, le, 6);
	}

	client_disconnect(w[5]);
	for (size_t i = 0; i < 4; i++) {
		client_disconnect(w[i]);
		client_disconnect(sessions[i]);
	}
	client_disconnect(mk.c);
	broker_stop(b);
	free(conf);
}

/* ---------------------------------------------------------------------------------------- */
/* group_from_username                                                                       */
/* ---------------------------------------------------------------------------------------- */

static void group_from_username_groups_by_the_part_before_the_separator(void **state)
{
	/* The groups_file adds the marker to both companies: one namespace of groups. */
	static const char *const groups = "group acme\nuser marker\ngroup globex\nuser marker\n";
	static const char *const extra =
	    VIS_OPEN "plugin_opt_visibility group\n"
	             "plugin_opt_group_from_username /\n"
	             "plugin_opt_groups_file @DIR@/groups\n"
	             "plugin_opt_see_everyone ops\n"
	             "plugin_opt_ignore_users ops, acme/dashboard, globex/dashboard, acme\n";
	static const char *const users[] = {"acme/sensor-1", "globex/sensor-2", "loner", "/root"};
	static const char *const levels[] = {"acme%2Fsensor-1", "globex%2Fsensor-2", "loner",
	                                     "%2Froot"};
	struct client *ops, *da, *dg, *plain, *sessions[4], *c;
	struct vis_marker mk = {0};
	char *conf;
	struct broker *b = vis_start(groups, extra, &conf);

	(void)state;
	ops = vis_begin(b, &mk);
	for (size_t i = 0; i < 4; i++) {
		char id[32], item[64];

		snprintf(id, sizeof(id), "s%zu", i);
		snprintf(item, sizeof(item), "+%s", levels[i]);
		sessions[i] = vis_online(b, ops, id, users[i], item);
	}

	da = vis_watch(b, "da", "acme/dashboard", NULL);
	vis_expect_retained(da, "presence/+", "+acme%2Fsensor-1 +marker");
	dg = vis_watch(b, "dg", "globex/dashboard", NULL);
	vis_expect_retained(dg, "presence/+", "+globex%2Fsensor-2 +marker");
	/* "acme" has no separator: it is in no group, not in the group named acme. */
	plain = vis_watch(b, "plain", "acme", NULL);
	vis_expect_retained(plain, "presence/+", "");

	c = vis_watch(b, "probe-g", "globex/dashboard", NULL);
	vis_expect_retained(c, "presence/acme%2Fsensor-1", "");
	vis_expect_retained(c, "presence/%2Froot", "");
	client_disconnect(c);
	c = vis_watch(b, "probe-a", "acme/dashboard", NULL);
	vis_expect_retained(c, "presence/acme%2Fsensor-1", "+acme%2Fsensor-1");
	vis_expect_retained(c, "presence/loner", "");
	client_disconnect(c);

	for (size_t i = 0; i < 4; i++) {
		char topic[64], item[64];
		struct vis_expect e[4] = {
		    {.c = ops, .items = item},
		    {.c = da, .items = i == 0 ? item : NULL},
		    {.c = dg, .items = i == 1 ? item : NULL},
		    {.c = plain, .blind = true},
		};

		snprintf(topic, sizeof(topic), "presence/%s/state/status", levels[i]);
		snprintf(item, sizeof(item), "+%s", levels[i]);
		publish_text_ok(sessions[i], topic, "on", 1);
		vis_step(&mk, e, 4);
	}

	for (size_t i = 0; i < 4; i++) {
		client_disconnect(sessions[i]);
	}
	client_disconnect(plain);
	client_disconnect(dg);
	client_disconnect(da);
	client_disconnect(ops);
	client_disconnect(mk.c);
	broker_stop(b);
	free(conf);
}

/* ---------------------------------------------------------------------------------------- */
/* Privacy switched while watchers are connected                                             */
/* ---------------------------------------------------------------------------------------- */

/* The watchers of the privacy tests: wa (in acme with alice), wb (no group), ops
 * (see_everyone), an anonymous one, and alice's own session; all on presence/+. */
struct privacy_fixture {
	char *conf;
	struct broker *b;
	struct vis_marker mk;
	struct client *ops, *wa, *wb, *anon, *alice;
	/* Queriers as wb and wa. */
	struct client *qwb, *qwa;
};

static void privacy_setup(struct privacy_fixture *f)
{
	static const char *const groups = "group acme\nuser alice\nuser wa\n";
	static const char *const extra = VIS_OPEN "plugin_opt_groups_file @DIR@/groups\n"
	                                          "plugin_opt_see_everyone ops\n"
	                                          "plugin_opt_ignore_users wa,wb,ops\n";

	f->b = vis_start(groups, extra, &f->conf);
	f->ops = vis_watch(f->b, "ops1", "ops", "presence/+");
	f->mk.c = client_connect_as(f->b, "marker1", "marker", 5);
	vis_expect_items(f->ops, "+marker", false);
	f->wa = vis_watch(f->b, "wa1", "wa", NULL);
	vis_expect_retained(f->wa, "presence/+", "+marker");
	f->wb = vis_watch(f->b, "wb1", "wb", NULL);
	vis_expect_retained(f->wb, "presence/+", "+marker");
	f->anon = vis_watch(f->b, "anon1", NULL, NULL);
	vis_expect_retained(f->anon, "presence/+", "+marker");
	f->alice = client_connect_as(f->b, "alice1", "alice", 5);
	{
		struct vis_expect e[] = {{f->ops, "+alice", false},
		                         {f->wa, "+alice", false},
		                         {f->wb, "+alice", false},
		                         {f->anon, "+alice", false}};

		vis_step(&f->mk, e, 4);
	}
	vis_expect_retained(f->alice, "presence/+", "+alice +marker");
	assert_int_equal(client_subscribe(f->alice, "replies/alice1", 1), 1);
	f->qwb = vis_querier(f->b, "qwb", "wb");
	f->qwa = vis_querier(f->b, "qwa", "wa");
}

static void privacy_teardown(struct privacy_fixture *f)
{
	client_disconnect(f->qwa);
	client_disconnect(f->qwb);
	client_disconnect(f->alice);
	client_disconnect(f->anon);
	client_disconnect(f->wb);
	client_disconnect(f->wa);
	client_disconnect(f->ops);
	client_disconnect(f->mk.c);
	broker_stop(f->b);
	free(f->conf);
}

/* One step: what ops, wa, wb, anon and alice receive before the marker. */
static void privacy_step(struct privacy_fixture *f, const char *ops, const char *wa, const char *wb,
                         const char *anon, const char *alice)
{
	struct vis_expect e[] = {{f->ops, ops, false},
	                         {f->wa, wa, false},
	                         {f->wb, wb, false},
	                         {f->anon, anon, false},
	                         {f->alice, alice, false}};

	vis_step(&f->mk, e, 5);
}

/* Asserts that a fresh client of name (NULL = anonymous) gets alice's retained document on
 * subscribe to presence/alice when sees, nothing otherwise. */
static void probe_alice(struct privacy_fixture *f, const char *name, bool sees)
{
	struct client *c = vis_watch(f->b, "probe", name, NULL);

	vis_expect_retained(c, "presence/alice", sees ? "+alice" : "");
	vis_expect_retained(c, "presence/+", sees ? "+alice +marker" : "+marker");
	client_disconnect(c);
}

/* Takes alice's republished document on c (a watcher that gained sight, or could already see)
 * and asserts that seq jumped to at least the wall clock before the write, and since is now. */
static long long expect_republished(struct client *c, long long before, long long *seq)
{
	cJSON *doc = vis_take_doc(c, "alice");
	long long s = vis_num(doc, "seq"), since = vis_num(doc, "since");

	if (s < before || since < before || since > vis_wall_ms()) {
		fail_msg("republished document: seq %lld, since %lld; expected both >= %lld and "
		         "since <= now",
		         s, since, before);
	}
	if (*seq != 0) {
		/* Every watcher gets the same document. */
		assert_int_equal(s, *seq);
	}
	*seq = s;
	cJSON_Delete(doc);
	return s;
}

static void going_invisible_deletes_the_user_for_everyone_else(void **state)
{
	struct privacy_fixture f = {0};
	long long before, seq = 0;

	(void)state;
	privacy_setup(&f);

	/* nobody: one zero-length message to each watcher that saw her; ops (see_everyone) and
	 * alice herself keep seeing. */
	vis_privacy(f.alice, "alice", "{\"visible_to\":\"nobody\"}");
	privacy_step(&f, NULL, "-alice", "-alice", "-alice", NULL);
	probe_alice(&f, "wb", false);
	probe_alice(&f, NULL, false);
	probe_alice(&f, "wa", false);
	probe_alice(&f, "ops", true);
	/* Queries answer her exactly like a user never seen. */
	vis_query_unknown(f.qwb, "qwb", "alice");
	vis_query_unknown(f.qwb, "qwb", "zed");
	vis_query_unknown(f.qwa, "qwa", "alice");
	vis_query_known(f.alice, "alice1", "alice");
	/* Writing the same choice again does nothing. */
	vis_privacy(f.alice, "alice", "{\"visible_to\":\"nobody\"}");
	privacy_step(&f, NULL, NULL, NULL, NULL, NULL);

	/* While invisible, her documents reach only ops and herself. */
	publish_text_ok(f.alice, "presence/alice/state/status", "hidden", 1);
	privacy_step(&f, "+alice", NULL, NULL, NULL, "+alice");

	/* Back to everyone (an empty payload is the default): everyone gets the current
	 * document, with seq and since from now. */
	before = vis_wall_ms();
	vis_privacy(f.alice, "alice", "");
	expect_republished(f.ops, before, &seq);
	expect_republished(f.wa, before, &seq);
	expect_republished(f.wb, before, &seq);
	expect_republished(f.anon, before, &seq);
	expect_republished(f.alice, before, &seq);
	privacy_step(&f, NULL, NULL, NULL, NULL, NULL);
	probe_alice(&f, "wb", true);
	probe_alice(&f, NULL, true);
	vis_query_known(f.qwb, "qwb", "alice");
	/* ... and the next document follows with seq + 1. */
	publish_text_ok(f.alice, "presence/alice/state/status", "back", 1);
	{
		cJSON *doc = vis_take_doc(f.wb, "alice");

		assert_int_equal(vis_num(doc, "seq"), seq + 1);
		cJSON_Delete(doc);
	}
	privacy_step(&f, "+alice", "+alice", NULL, "+alice", "+alice");

	privacy_teardown(&f);
}

static void contacts_and_group_narrow_and_widen_what_watchers_see(void **state)
{
	struct privacy_fixture f = {0};
	long long before, seq = 0;

	(void)state;
	privacy_setup(&f);

	/* A list: wb (listed) keeps seeing; wa and the anonymous watcher lose sight. */
	vis_privacy(f.alice, "alice", "{\"visible_to\":[\"wb\",\"carol\",\"wb\"]}");
	privacy_step(&f, NULL, "-alice", NULL, "-alice", NULL);
	vis_query_known(f.qwb, "qwb", "alice");
	vis_query_unknown(f.qwa, "qwa", "alice");
	probe_alice(&f, "wa", false);
	probe_alice(&f, "wb", true);
	publish_text_ok(f.alice, "presence/alice/state/status", "listed", 1);
	privacy_step(&f, "+alice", NULL, "+alice", NULL, "+alice");

	/* group under visibility everyone: wa (acme) gains sight, wb loses it. */
	before = vis_wall_ms();
	vis_privacy(f.alice, "alice", "{\"visible_to\":\"group\"}");
	expect_republished(f.wa, before, &seq);
	expect_republished(f.ops, before, &seq);
	expect_republished(f.alice, before, &seq);
	privacy_step(&f, NULL, NULL, "-alice", NULL, NULL);
	vis_query_known(f.qwa, "qwa", "alice");
	vis_query_unknown(f.qwb, "qwb", "alice");
	probe_alice(&f, "wa", true);
	probe_alice(&f, "wb", false);
	probe_alice(&f, NULL, false);

	/* Widening to everyone: wb and the anonymous watcher gain sight. */
	seq = 0;
	before = vis_wall_ms();
	vis_privacy(f.alice, "alice", "{\"visible_to\":\"everyone\"}");
	expect_republished(f.wb, before, &seq);
	expect_republished(f.anon, before, &seq);
	privacy_step(&f, "+alice", "+alice", NULL, NULL, "+alice");

	/* Narrowing to a list of wa, then widening again. */
	vis_privacy(f.alice, "alice", "{\"visible_to\":[\"wa\"]}");
	privacy_step(&f, NULL, NULL, "-alice", "-alice", NULL);
	vis_privacy(f.alice, "alice", "{\"visible_to\":[]}");
	privacy_step(&f, NULL, "-alice", NULL, NULL, NULL);
	vis_query_unknown(f.qwa, "qwa", "alice");
	vis_privacy(f.alice, "alice", "{\"visible_to\":\"everyone\"}");
	privacy_step(&f, "+alice", "+alice", "+alice", "+alice", "+alice");

	privacy_teardown(&f);
}

/* ---------------------------------------------------------------------------------------- */
/* Queued documents                                                                          */
/* ---------------------------------------------------------------------------------------- */

static void queued_documents_are_not_delivered_to_a_watcher_that_lost_sight(void **state)
{
	static const char *const extra = VIS_OPEN "plugin_opt_see_everyone ops\n"
	                                          "plugin_opt_ignore_users ops,wb\n";
	struct client_opts wb_o = {
	    .id = "wb1", .username = "wb", .protocol = 5, .persistent = true};
	struct client *ops, *wb, *alice;
	struct vis_marker mk = {0};
	char *conf;
	struct broker *b = vis_start(NULL, extra, &conf);

	(void)state;
	ops = vis_watch(b, "ops1", "ops", "presence/+");
	wb = client_connect(b, &wb_o);
	assert_int_equal(client_subscribe(wb, "presence/+", 1), 1);
	mk.c = client_connect_as(b, "marker1", "marker", 5);
	vis_expect_items(ops, "+marker", false);
	vis_expect_items(wb, "+marker", false);
	alice = client_connect_as(b, "alice1", "alice", 5);
	{
		struct vis_expect e[] = {{ops, "+alice", false}, {wb, "+alice", false}};

		vis_step(&mk, e, 2);
	}

	/* A document queued while wb's persistent session is offline reaches it at
	 * reconnection while it may see alice... */
	client_disconnect(wb);
	publish_text_ok(alice, "presence/alice/state/status", "zero", 1);
	vis_expect_items(ops, "+alice", false);
	wb = client_connect(b, &wb_o);
	{
		struct vis_expect e[] = {{ops, NULL, false}, {wb, "+alice", false}};

		vis_step(&mk, e, 2);
	}

	/* ... but not when she became invisible in between: two documents are queued, then she
	 * chooses nobody. */
	client_disconnect(wb);
	publish_text_ok(alice, "presence/alice/state/status", "one", 1);
	vis_expect_items(ops, "+alice", false);
	publish_text_ok(alice, "presence/alice/state/status", "two", 1);
	vis_expect_items(ops, "+alice", false);
	vis_privacy(alice, "alice", "{\"visible_to\":\"nobody\"}");

	/* At reconnection wb gets neither the queued documents nor a zero-length message. */
	wb = client_connect(b, &wb_o);
	{
		struct vis_expect e[] = {{ops, NULL, false}, {wb, NULL, false}};

		vis_step(&mk, e, 2);
	}
	vis_privacy(alice, "alice", "{\"visible_to\":\"everyone\"}");
	{
		struct vis_expect e[] = {{ops, "+alice", false}, {wb, "+alice", false}};

		vis_step(&mk, e, 2);
	}

	client_disconnect(wb);
	client_disconnect(alice);
	client_disconnect(ops);
	client_disconnect(mk.c);
	broker_stop(b);
	free(conf);
}

/* ---------------------------------------------------------------------------------------- */
/* Forgetting                                                                                */
/* ---------------------------------------------------------------------------------------- */

static void a_forgotten_users_removal_reaches_only_those_that_could_see_it(void **state)
{
	static const char *const groups = "group acme\nuser alice\nuser dave\nuser wa\n"
	                                  "group all\nuser marker\nuser wa\nuser wb\n";
	/* Three users at most: carol, the fourth, makes alice (offline the longest) forgotten. */
	static const char *const extra = VIS_OPEN "plugin_opt_visibility group\n"
	                                          "plugin_opt_groups_file @DIR@/groups\n"
	                                          "plugin_opt_see_everyone ops\n"
	                                          "plugin_opt_ignore_users ops,wa,wb\n"
	                                          "plugin_opt_max_users 3\n";
	struct client *ops, *wa, *wb, *alice, *bob, *carol, *dave, *erin, *probe;
	struct vis_marker mk = {0};
	char *conf;
	struct broker *b = vis_start(groups, extra, &conf);

	(void)state;
	ops = vis_watch(b, "ops1", "ops", "presence/+");
	wa = vis_watch(b, "wa1", "wa", "presence/+");
	wb = vis_watch(b, "wb1", "wb", "presence/+");
	mk.c = client_connect_as(b, "marker1", "marker", 5);
	vis_expect_items(ops, "+marker", false);
	vis_expect_items(wa, "+marker", false);
	vis_expect_items(wb, "+marker", false);
	alice = client_connect_as(b, "alice1", "alice", 5);
	bob = client_connect_as(b, "bob1", "bob", 5);
	{
		struct vis_expect e[] = {
		    {ops, "+alice +bob", false}, {wa, "+alice", false}, {wb, NULL, false}};

		vis_step(&mk, e, 3);
	}
	client_disconnect(alice);
	{
		struct vis_expect e[] = {
		    {ops, "+alice", false}, {wa, "+alice", false}, {wb, NULL, false}};

		vis_step(&mk, e, 3);
	}

	/* carol makes room: alice's removal reaches ops and wa, who could see her; not wb. */
	carol = client_connect_as(b, "carol1", "carol", 5);
	{
		struct vis_expect e[] = {
		    {ops, "-alice +carol", false}, {wa, "-alice", false}, {wb, NULL, false}};

		vis_step(&mk, e, 3);
	}
	probe = vis_watch(b, "probe", "ops", NULL);
	vis_expect_retained(probe, "presence/+", "+bob +carol +marker");
	client_disconnect(probe);

	/* dave (in acme) takes carol's place, becomes invisible and leaves; erin takes his: his
	 * removal reaches ops only, wa no longer sees him. */
	client_disconnect(carol);
	{
		struct vis_expect e[] = {
		    {ops, "+carol", false}, {wa, NULL, false}, {wb, NULL, false}};

		vis_step(&mk, e, 3);
	}
	dave = client_connect_as(b, "dave1", "dave", 5);
	{
		struct vis_expect e[] = {
		    {ops, "-carol +dave", false}, {wa, "+dave", false}, {wb, NULL, false}};

		vis_step(&mk, e, 3);
	}
	vis_privacy(dave, "dave", "{\"visible_to\":\"nobody\"}");
	{
		struct vis_expect e[] = {
		    {ops, NULL, false}, {wa, "-dave", false}, {wb, NULL, false}};

		vis_step(&mk, e, 3);
	}
	client_disconnect(dave);
	{
		struct vis_expect e[] = {
		    {ops, "+dave", false}, {wa, NULL, false}, {wb, NULL, false}};

		vis_step(&mk, e, 3);
	}
	erin = client_connect_as(b, "erin1", "erin", 5);
	{
		struct vis_expect e[] = {
		    {ops, "-dave +erin", false}, {wa, NULL, false}, {wb, NULL, false}};

		vis_step(&mk, e, 3);
	}

	client_disconnect(erin);
	client_disconnect(bob);
	client_disconnect(wb);
	client_disconnect(wa);
	client_disconnect(ops);
	client_disconnect(mk.c);
	broker_stop(b);
	free(conf);
}

#define T(f) cmocka_unit_test_teardown(f, harness_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(groups_file_decides_who_sees_whom),
	    T(group_from_username_groups_by_the_part_before_the_separator),
	    T(going_invisible_deletes_the_user_for_everyone_else),
	    T(contacts_and_group_narrow_and_widen_what_watchers_see),
	    T(queued_documents_are_not_delivered_to_a_watcher_that_lost_sight),
	    T(a_forgotten_users_removal_reaches_only_those_that_could_see_it),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
