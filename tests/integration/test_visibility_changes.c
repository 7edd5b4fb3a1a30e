/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Integration tests of who may see whom (issue 18), continued: privacy writes that are rejected
 * or denied, the privacy topic never delivered, a groups_file re-read on SIGHUP (good and bad),
 * privacy kept across a restart and a crash with a state_file, and the configurations the
 * broker refuses.
 * Every step asserts exactly what each watcher receives (visibility.h).
 */
#include <unistd.h>

#include "visibility.h"

#define LOG_PREFIX "mosquitto-presence: "
#define PRIVACY "presence/alice/privacy"

static void expect_line_with(const char *log, const char *const *parts);

/* ---------------------------------------------------------------------------------------- */
/* Rejected and denied privacy writes                                                        */
/* ---------------------------------------------------------------------------------------- */

/* wb (a named watcher), two anonymous sniffers on # and presence/#, alice writing, alice's
 * second session on her notices, bob on everyone's notices. */
struct reject_fixture {
	char *conf;
	struct broker *b;
	struct vis_marker mk;
	struct client *wb, *all, *ns, *alice, *alice2, *bob;
};

static void reject_setup(struct reject_fixture *f, const char *extra)
{
	char lines[512];

	snprintf(lines, sizeof(lines), "%splugin_opt_ignore_users wb\n%s", VIS_OPEN,
	         extra != NULL ? extra : "");
	f->b = vis_start(NULL, lines, &f->conf);
	f->wb = vis_watch(f->b, "wb1", "wb", "presence/+");
	f->all = vis_watch(f->b, "all1", NULL, "#");
	f->ns = vis_watch(f->b, "ns1", NULL, "presence/#");
	f->mk.c = client_connect_as(f->b, "marker1", "marker", 5);
	f->alice = client_connect_as(f->b, "alice1", "alice", 5);
	f->alice2 = client_connect_as(f->b, "alice2", "alice", 5);
	assert_int_equal(client_subscribe(f->alice2, "presence/alice/error", 1), 1);
	f->bob = vis_watch(f->b, "bob1", "bob", "presence/+/error");
	/* Every subscriber of alice's privacy topic, whatever the broker answers to the
	 * subscription, is tested for delivery. */
	(void)client_subscribe(f->bob, PRIVACY, 1);
	(void)client_subscribe(f->alice2, PRIVACY, 1);
	vis_expect_items(f->wb, "+marker +alice +alice +bob", false);
	vis_expect_items(f->all, "+marker +alice +alice +bob", false);
	vis_expect_items(f->ns, "+marker +alice +alice +bob", false);
	{
		struct vis_expect e[] = {{f->wb, NULL, false},
		                         {f->all, NULL, false},
		                         {f->ns, NULL, false},
		                         {f->alice2, NULL, true},
		                         {f->bob, NULL, true}};

		vis_step(&f->mk, e, 5);
	}
}

static void reject_teardown(struct reject_fixture *f)
{
	client_disconnect(f->bob);
	client_disconnect(f->alice2);
	client_disconnect(f->alice);
	client_disconnect(f->mk.c);
	client_disconnect(f->ns);
	client_disconnect(f->all);
	client_disconnect(f->wb);
	broker_stop(f->b);
	free(f->conf);
}

/* What wb, the two sniffers, alice2 and bob receive before the marker (alice2 and bob never see
 * it: they subscribe to no document). */
static void reject_step(struct reject_fixture *f, const char *wb, const char *sniffers)
{
	struct vis_expect e[] = {{f->wb, wb, false},
	                         {f->all, sniffers, false},
	                         {f->ns, sniffers, false},
	                         {f->alice2, NULL, true},
	                         {f->bob, NULL, true}};

	vis_step(&f->mk, e, 5);
}

/* Writes text to out (size bytes) with every quote and backslash escaped: JSON string content. */
static void json_escape(const char *text, char *out, size_t size)
{
	size_t n = 0;

	for (const char *s = text; *s != '\0' && n + 2 < size; s++) {
		if (*s == '"' || *s == '\\') {
			out[n++] = '\\';
		}
		out[n++] = *s;
	}
	out[n] = '\0';
}

/*
 * alice writes payload (len bytes) to her privacy topic: acknowledged as a success, a warning
 * in the log, the notice on presence/alice/error for her other session only, and nothing
 * changes for anyone.
 */
static void rejected_privacy(struct reject_fixture *f, const char *payload, int len,
                             const char *reason)
{
	char notice[1024], escaped[512], needle[1024];
	struct msg *m;

	expect_publish_ok(client_publish(f->alice, PRIVACY, payload, len, 1, false));
	json_escape(reason, escaped, sizeof(escaped));
	snprintf(notice, sizeof(notice), "{\"topic\":\"" PRIVACY "\",\"error\":\"%s\"}", escaped);
	m = vis_next(f->alice2, "a rejection notice");
	assert_string_equal(m->topic, "presence/alice/error");
	assert_false(m->retain);
	if (m->payloadlen != (int)strlen(notice) ||
	    memcmp(m->payload, notice, strlen(notice)) != 0) {
		fail_msg("payload %.40s...: notice\n  %.*s\nexpected\n  %s", payload, m->payloadlen,
		         m->payload, notice);
	}
	msg_free(m);
	snprintf(needle, sizeof(needle),
	         "rejected privacy write by client alice1 (user alice) to " PRIVACY ": %s\n",
	         reason);
	if (!broker_log_wait(f->b, needle, 5000)) {
		char *log = broker_log(f->b);

		fail_msg("the log has no \"%s\":\n%s", needle, log);
	}
	reject_step(f, NULL, NULL);
}

static void rejected_text(struct reject_fixture *f, const char *payload, const char *reason)
{
	rejected_privacy(f, payload, (int)strlen(payload), reason);
}

/* {"visible_to":[names]} with n names wb, u1, u2, ...; the caller frees it. */
static char *name_list(int n)
{
	size_t size = 64 + (size_t)n * 16;
	char *text = malloc(size);
	size_t len;

	assert_non_null(text);
	len = (size_t)snprintf(text, size, "{\"visible_to\":[\"wb\"");
	for (int i = 1; i < n; i++) {
		len += (size_t)snprintf(text + len, size - len, ",\"u%d\"", i);
	}
	snprintf(text + len, size - len, "]}");
	return text;
}

static void each_bad_privacy_write_is_rejected_with_its_reason_and_changes_nothing(void **state)
{
	static const char *const not_an_object[] = {
	    "not json",
	    "[]",
	    "\"nobody\"",
	    "null",
	    "{}",
	    "{\"visible_to\":\"nobody\",\"x\":1}",
	    "{\"Visible_to\":\"nobody\"}",
	};
	static const char *const bad_values[] = {
	    "{\"visible_to\":\"all\"}", "{\"visible_to\":1}",          "{\"visible_to\":null}",
	    "{\"visible_to\":{}}",      "{\"visible_to\":\"Nobody\"}", "{\"visible_to\":true}",
	};
	static const char *const bad_names[] = {
	    "{\"visible_to\":[\"\"]}",
	    "{\"visible_to\":[\"wb\",\"\"]}",
	    "{\"visible_to\":[\"\xff\xfe\"]}",
	    "{\"visible_to\":[\"a\xc3\"]}",
	};
	struct reject_fixture f = {0};
	char *text;
	int len;

	(void)state;
	reject_setup(&f, NULL);
	for (size_t i = 0; i < sizeof(not_an_object) / sizeof(not_an_object[0]); i++) {
		rejected_text(&f, not_an_object[i],
		              "privacy must be a JSON object with one member, \"visible_to\"");
	}
	for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
		rejected_text(&f, bad_values[i],
		              "visible_to must be \"everyone\", \"group\", \"nobody\" or a list of "
		              "user names");
	}
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		rejected_text(&f, bad_names[i],
		              "visible_to lists an empty name or one that is not UTF-8 text");
	}
	text = name_list(101);
	rejected_text(&f, text, "visible_to lists 101 names; at most 100");
	free(text);
	/* 16385 bytes: a valid choice padded with blanks. */
	text = malloc(16386);
	assert_non_null(text);
	len = snprintf(text, 16386, "{\"visible_to\":\"nobody\"}");
	memset(text + len, ' ', (size_t)(16385 - len));
	text[16385] = '\0';
	rejected_privacy(&f, text, 16385, "payload is 16385 bytes; at most 16384 are accepted");

	/* Nothing changed: wb and the sniffers still see alice's documents. */
	publish_text_ok(f.alice, "presence/alice/state/status", "still", 1);
	reject_step(&f, "+alice", "+alice");

	/* The limits themselves are accepted: 100 names (wb among them) ... */
	free(text);
	text = name_list(100);
	expect_publish_ok(client_publish(f.alice, PRIVACY, text, (int)strlen(text), 1, false));
	reject_step(&f, NULL, "-alice");
	/* ... and 16384 bytes. */
	free(text);
	text = malloc(16385);
	assert_non_null(text);
	len = snprintf(text, 16385, "{\"visible_to\":\"nobody\"}");
	memset(text + len, ' ', (size_t)(16384 - len));
	expect_publish_ok(client_publish(f.alice, PRIVACY, text, 16384, 1, false));
	reject_step(&f, "-alice", NULL);
	free(text);
	expect_nothing(f.alice2);
	reject_teardown(&f);
}

static void privacy_writes_share_the_write_limit(void **state)
{
	static const char *const reason =
	    "too many writes: at most 1 a second (3 at once) per user; "
	    "the write was not applied";
	struct reject_fixture f = {0};
	int writes = 0;
	struct msg *m = NULL;
	struct client *q;

	(void)state;
	reject_setup(&f, "plugin_opt_max_writes_per_second 1\nplugin_opt_max_write_burst 3\n");
	/* State writes until the allowance is spent (the first refused one shows it); the
	 * privacy write right after is refused too. */
	while (m == NULL) {
		char value[16];

		assert_true(writes < 10);
		snprintf(value, sizeof(value), "v%d", ++writes);
		publish_text_ok(f.alice, "presence/alice/state/status", value, 1);
		assert_true(client_sync(f.alice2, 5000));
		m = client_wait_msg(f.alice2, 0);
	}
	assert_string_equal(m->topic, "presence/alice/error");
	msg_free(m);
	/* The accepted writes' documents. */
	for (int i = 1; i < writes; i++) {
		vis_expect_items(f.wb, "+alice", false);
		vis_expect_items(f.all, "+alice", false);
		vis_expect_items(f.ns, "+alice", false);
	}
	rejected_text(&f, "{\"visible_to\":\"nobody\"}", reason);
	/* wb still sees alice. */
	q = vis_querier(f.b, "qwb", "wb");
	vis_query_known(q, "qwb", "alice");
	client_disconnect(q);
	reject_teardown(&f);
}

static void privacy_writes_by_others_are_denied_and_the_topic_is_never_delivered(void **state)
{
	struct reject_fixture f = {0};
	struct client *bob3, *probe;
	char needle[256];

	(void)state;
	reject_setup(&f, NULL);

	/* bob may not choose for alice, on MQTT 5 (0x87) nor 3.1.1, retained or not. */
	for (int retain = 0; retain <= 1; retain++) {
		assert_int_equal(client_publish(f.bob, PRIVACY, "{\"visible_to\":\"nobody\"}", 23,
		                                1, retain == 1),
		                 MQTT_RC_NOT_AUTHORIZED);
	}
	snprintf(needle, sizeof(needle), "denied publish by client bob1 (user bob) to " PRIVACY);
	assert_true(broker_log_wait(f.b, needle, 5000));
	bob3 = client_connect_as(f.b, "bob3", "bob", 4);
	reject_step(&f, "+bob", "+bob");
	assert_int_equal(client_publish(bob3, PRIVACY, "{\"visible_to\":\"nobody\"}", 23, 1, false),
	                 0);
	assert_true(
	    broker_log_wait(f.b, "denied publish by client bob3 (user bob) to " PRIVACY, 5000));
	reject_step(&f, NULL, NULL);

	/* alice's own write, retained: applied, never delivered (not to # nor presence/#, not
	 * to alice's other session), never retained. */
	assert_int_equal(
	    client_publish(f.alice, PRIVACY, "{\"visible_to\":\"nobody\"}", 23, 1, true), 0);
	reject_step(&f, "-alice", "-alice");
	probe = vis_watch(f.b, "probe", "alice", NULL);
	/* Her own new session (sessions 2): its document reaches nobody else. */
	reject_step(&f, NULL, NULL);
	(void)client_subscribe(probe, PRIVACY, 1);
	vis_expect_items(probe, NULL, true);
	vis_expect_retained(probe, "presence/alice/#", "+alice");
	client_disconnect(probe);
	reject_step(&f, NULL, NULL);
	probe = vis_watch(f.b, "probe", NULL, NULL);
	vis_expect_retained(probe, "#", "+marker +bob");
	client_disconnect(probe);

	/* A wrong choice by bob for alice did not count: she is still invisible, and her
	 * privacy topic is still never delivered when she widens it again. */
	assert_int_equal(
	    client_publish(f.alice, PRIVACY, "{\"visible_to\":\"everyone\"}", 26, 1, false), 0);
	reject_step(&f, "+alice", "+alice");
	client_disconnect(bob3);
	reject_teardown(&f);
}

/* ---------------------------------------------------------------------------------------- */
/* SIGHUP re-reads the groups_file                                                           */
/* ---------------------------------------------------------------------------------------- */

static void sighup_applies_a_new_groups_file_and_keeps_the_old_one_on_error(void **state)
{
	static const char *const v1 = "group acme\nuser alice\nuser wa\n"
	                              "group globex\nuser bob\nuser wb\n"
	                              "group all\nuser marker\nuser wa\nuser wb\nuser wc\n";
	/* wa leaves acme for globex, wb joins acme too, wc joins acme. */
	static const char *const v2 = "group acme\nuser alice\nuser wb\nuser wc\n"
	                              "group globex\nuser bob\nuser wa\nuser wb\n"
	                              "group all\nuser marker\nuser wa\nuser wb\nuser wc\n";
	/* Line 3 is an error: everything would be visible to wc otherwise. */
	static const char *const bad = "group acme\nuser alice\nmember wa\n"
	                               "group all\nuser marker\nuser wc\nuser alice\nuser bob\n";
	static const char *const extra = VIS_OPEN "plugin_opt_visibility group\n"
	                                          "plugin_opt_groups_file @DIR@/groups\n"
	                                          "plugin_opt_see_everyone ops\n"
	                                          "plugin_opt_ignore_users ops,wa,wb,wc\n";
	struct client *ops, *wa, *wb, *wc, *alice, *bob, *probe;
	struct vis_marker mk = {0};
	char *conf, needle[1024];
	struct broker *b = vis_start(v1, extra, &conf);
	const char *path;
	long long before;
	cJSON *doc;

	(void)state;
	ops = vis_begin(b, &mk);
	alice = vis_online(b, ops, "alice1", "alice", "+alice");
	bob = vis_online(b, ops, "bob1", "bob", "+bob");
	wa = vis_watch(b, "wa1", "wa", NULL);
	vis_expect_retained(wa, "presence/+", "+alice +marker");
	wb = vis_watch(b, "wb1", "wb", NULL);
	vis_expect_retained(wb, "presence/+", "+bob +marker");
	wc = vis_watch(b, "wc1", "wc", NULL);
	vis_expect_retained(wc, "presence/+", "+marker");

	/* The new file: wa loses alice and gains bob, wb and wc gain alice; alice's and bob's
	 * documents are published again for everyone who may see them. */
	before = vis_wall_ms();
	path = broker_write_file(b, "groups", v2);
	broker_signal(b, SIGHUP);
	doc = vis_take_doc_any(wa, "bob", "-alice");
	assert_true(vis_num(doc, "seq") >= before);
	assert_true(vis_num(doc, "since") >= before);
	cJSON_Delete(doc);
	{
		struct vis_expect e[] = {{ops, "+alice +bob", false},
		                         {wa, NULL, false},
		                         {wb, "+alice +bob", false},
		                         {wc, "+alice", false}};

		vis_step(&mk, e, 4);
	}
	probe = vis_watch(b, "probe", "wa", NULL);
	vis_expect_retained(probe, "presence/+", "+bob +marker");
	client_disconnect(probe);
	probe = vis_watch(b, "probe", "wc", NULL);
	vis_expect_retained(probe, "presence/+", "+alice +marker");
	client_disconnect(probe);

	/* A file with an error: logged with its line, and the groups of v2 stay. */
	path = broker_write_file(b, "groups", bad);
	broker_signal(b, SIGHUP);
	snprintf(needle, sizeof(needle), "%s line 3: ", path);
	if (!broker_log_wait(b, needle, 5000)) {
		char *log = broker_log(b);

		fail_msg("the log has no \"%s\":\n%s", needle, log);
	}
	{
		char *log = broker_log(b);
		const char *parts[] = {"groups_file", needle, NULL};

		expect_line_with(log, parts);
		free(log);
	}
	{
		struct vis_expect e[] = {
		    {ops, NULL, false}, {wa, NULL, false}, {wb, NULL, false}, {wc, NULL, false}};

		vis_step(&mk, e, 4);
	}
	/* A file that is gone: the same. */
	assert_int_equal(unlink(path), 0);
	broker_signal(b, SIGHUP);
	if (!broker_log_wait(b, path, 5000)) {
		char *log = broker_log(b);

		fail_msg("the log does not name %s after its removal:\n%s", path, log);
	}
	{
		char *log = broker_log(b);
		const char *parts[] = {"groups_file", path, "No such file or directory", NULL};

		expect_line_with(log, parts);
		free(log);
	}
	{
		struct vis_expect e[] = {
		    {ops, NULL, false}, {wa, NULL, false}, {wb, NULL, false}, {wc, NULL, false}};

		vis_step(&mk, e, 4);
	}
	publish_text_ok(alice, "presence/alice/state/status", "a", 1);
	publish_text_ok(bob, "presence/bob/state/status", "b", 1);
	{
		struct vis_expect e[] = {{ops, "+alice +bob", false},
		                         {wa, "+bob", false},
		                         {wb, "+alice +bob", false},
		                         {wc, "+alice", false}};

		vis_step(&mk, e, 4);
	}

	client_disconnect(wc);
	client_disconnect(wb);
	client_disconnect(wa);
	client_disconnect(bob);
	client_disconnect(alice);
	client_disconnect(ops);
	client_disconnect(mk.c);
	broker_stop(b);
	free(conf);
}

/* ---------------------------------------------------------------------------------------- */
/* Restart with a state_file                                                                 */
/* ---------------------------------------------------------------------------------------- */

static void an_invisible_user_stays_invisible_across_a_restart(void **state)
{
	static const char *const extra = VIS_OPEN "persistence true\n"
	                                          "persistence_location @DIR@/\n"
	                                          "plugin_opt_state_file @DIR@/state.json\n"
	                                          "plugin_opt_see_everyone ops\n"
	                                          "plugin_opt_ignore_users ops,wb\n";
	struct client *ops, *wb, *alice, *q;
	struct vis_marker mk = {0};
	char *conf;
	struct broker *b = vis_start(NULL, extra, &conf);
	long long before;
	cJSON *doc;

	(void)state;
	ops = vis_watch(b, "ops1", "ops", "presence/+");
	wb = vis_watch(b, "wb1", "wb", "presence/+");
	alice = vis_online(b, ops, "alice1", "alice", "+alice");
	vis_expect_items(wb, "+alice", false);
	vis_privacy(alice, "alice", "{\"visible_to\":\"nobody\"}");
	vis_expect_items(wb, "-alice", false);
	publish_text_ok(alice, "presence/alice/state/status", "hidden", 1);
	vis_expect_items(ops, "+alice", false);
	expect_nothing(wb);

	/* A clean restart while she is online: her correction (offline) reaches ops only. */
	broker_restart(&b, conf, false);
	client_drop(alice);
	client_drop(wb);
	client_drop(ops);
	ops = vis_watch(b, "ops1", "ops", NULL);
	vis_expect_retained(ops, "presence/+", "+alice");
	wb = vis_watch(b, "wb1", "wb", NULL);
	vis_expect_retained(wb, "presence/+", "");
	q = vis_querier(b, "qwb", "wb");
	vis_query_unknown(q, "qwb", "alice");
	mk.c = client_connect_as(b, "marker1", "marker", 5);
	vis_expect_items(ops, "+marker", false);
	vis_expect_items(wb, "+marker", false);

	/* She comes back: still invisible to wb. */
	alice = client_connect_as(b, "alice1", "alice", 5);
	{
		struct vis_expect e[] = {{ops, "+alice", false}, {wb, NULL, false}};

		vis_step(&mk, e, 2);
	}
	vis_query_unknown(q, "qwb", "alice");
	/* Until she widens her choice. */
	before = vis_wall_ms();
	vis_privacy(alice, "alice", "{\"visible_to\":\"everyone\"}");
	doc = vis_take_doc(wb, "alice");
	assert_true(vis_num(doc, "seq") >= before);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "available")));
	cJSON_Delete(doc);
	{
		struct vis_expect e[] = {{ops, "+alice", false}, {wb, NULL, false}};

		vis_step(&mk, e, 2);
	}
	vis_query_known(q, "qwb", "alice");

	client_disconnect(q);
	client_disconnect(alice);
	client_disconnect(wb);
	client_disconnect(ops);
	client_disconnect(mk.c);
	broker_stop(b);
	free(conf);
}

static void an_invisible_user_stays_invisible_across_a_crash_once_saved(void **state)
{
	static const char *const extra = VIS_OPEN "persistence true\n"
	                                          "persistence_location @DIR@/\n"
	                                          "autosave_interval 1\n"
	                                          "plugin_opt_state_file @DIR@/state.json\n"
	                                          "plugin_opt_see_everyone ops\n"
	                                          "plugin_opt_ignore_users ops,wb\n";
	struct client *ops, *wb, *alice, *q;
	char *conf;
	struct broker *b = vis_start(NULL, extra, &conf);

	(void)state;
	ops = vis_watch(b, "ops1", "ops", "presence/+");
	alice = vis_online(b, ops, "alice1", "alice", "+alice");
	/* Her document is saved; then her choice, and the save that records it. */
	assert_true(broker_log_wait(b, "saved state of 1 users", 5000));
	vis_privacy(alice, "alice", "{\"visible_to\":\"nobody\"}");
	assert_true(broker_log_wait(b, "saved state of 1 users", 5000));

	broker_restart(&b, conf, true);
	client_drop(alice);
	client_drop(ops);
	ops = vis_watch(b, "ops1", "ops", NULL);
	vis_expect_retained(ops, "presence/+", "+alice");
	wb = vis_watch(b, "wb1", "wb", NULL);
	vis_expect_retained(wb, "presence/+", "");
	q = vis_querier(b, "qwb", "wb");
	vis_query_unknown(q, "qwb", "alice");
	alice = vis_online(b, ops, "alice1", "alice", "+alice");
	expect_nothing(wb);
	vis_query_unknown(q, "qwb", "alice");

	client_disconnect(q);
	client_disconnect(alice);
	client_disconnect(wb);
	client_disconnect(ops);
	broker_stop(b);
	free(conf);
}

/* ---------------------------------------------------------------------------------------- */
/* Configurations the broker refuses                                                         */
/* ---------------------------------------------------------------------------------------- */

/* Starts the standard config plus extra (after writing groups to @DIR@/groups unless NULL),
 * which must stop the broker; returns the log (the caller frees it) and the groups file's path
 * in path (size bytes). Unless reads_file (the plugin reads files, the groups_file as the
 * state_file, after it has checked its options and logged its startup line), asserts that the
 * plugin never logged its startup line. */
static char *expect_refusal(const char *groups, const char *extra, char *path, size_t size,
                            bool reads_file)
{
	struct broker_opts opts = {.expect_failure = true};
	struct broker *b = broker_prepare(&opts);
	char *conf = broker_conf(extra);
	char *log;

	if (groups != NULL) {
		snprintf(path, size, "%s", broker_write_file(b, "groups", groups));
	}
	broker_launch(b, conf);
	log = broker_log(b);
	assert_int_not_equal(broker_exit_status(b), 0);
	if (!reads_file) {
		assert_null(strstr(log, LOG_PREFIX "version"));
	}
	broker_stop(b);
	free(conf);
	return log;
}

/* Asserts that log has a line from the plugin with every part of parts, NULL-terminated. */
static void expect_line_with(const char *log, const char *const *parts)
{
	const char *line = log;

	while ((line = strstr(line, LOG_PREFIX)) != NULL) {
		const char *end = strchr(line, '\n');
		size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
		bool all = true;

		for (const char *const *p = parts; *p != NULL && all; p++) {
			const char *hit = strstr(line, *p);

			all = hit != NULL && hit < line + len;
		}
		if (all) {
			return;
		}
		line += len;
	}
	fail_msg("no line of the plugin names all of \"%s\", ...:\n%s", parts[0], log);
}

static void bad_visibility_options_stop_the_broker(void **state)
{
	static const struct {
		const char *extra;
		const char *parts[4];
	} cases[] = {
	    {"plugin_opt_visibility group\n",
	     {"plugin_opt_visibility", "groups_file", "group_from_username", NULL}},
	    {"plugin_opt_visibility groups\nplugin_opt_group_from_username /\n",
	     {"plugin_opt_visibility", "groups", NULL}},
	    {"plugin_opt_visibility group\nplugin_opt_group_from_username 12345678901234567\n",
	     {"plugin_opt_group_from_username", NULL}},
	    {"plugin_opt_visibility group\nplugin_opt_groups_file @DIR@/missing\n",
	     {"groups_file", "/missing", NULL}},
	    {"plugin_opt_see_everyone ops,,bob\n", {"plugin_opt_see_everyone", NULL}},
	};
	char path[1024];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *log = expect_refusal(NULL, cases[i].extra, path, sizeof(path),
		                           strstr(cases[i].extra, "groups_file") != NULL);

		expect_line_with(log, cases[i].parts);
		free(log);
	}
}

static void a_groups_file_with_an_error_names_its_line(void **state)
{
	static const struct {
		const char *text;
		int line;
	} cases[] = {
	    {"# no group yet\nuser alice\n", 2},
	    {"group acme\nuser alice\n\nmember bob\n", 4},
	    {"group acme\n  user alice\ngroup \n", 3},
	    {"group acme\nuser\n", 2},
	};
	static const char *const extra = "plugin_opt_visibility group\n"
	                                 "plugin_opt_groups_file @DIR@/groups\n";
	char path[1024], needle[1200], many[2048] = "";
	const char *parts[] = {"groups_file", needle, NULL};
	char *log;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		log = expect_refusal(cases[i].text, extra, path, sizeof(path), true);
		snprintf(needle, sizeof(needle), "%s line %d: ", path, cases[i].line);
		expect_line_with(log, parts);
		free(log);
	}
	/* 32 groups per user at most: alice's 33rd membership is on line 66. */
	for (int g = 1; g <= 33; g++) {
		size_t len = strlen(many);

		snprintf(many + len, sizeof(many) - len, "group g%d\nuser alice\n", g);
	}
	log = expect_refusal(many, extra, path, sizeof(path), true);
	snprintf(needle, sizeof(needle), "%s line 66: ", path);
	expect_line_with(log, parts);
	free(log);
}

#define T(f) cmocka_unit_test_teardown(f, harness_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(each_bad_privacy_write_is_rejected_with_its_reason_and_changes_nothing),
	    T(privacy_writes_share_the_write_limit),
	    T(privacy_writes_by_others_are_denied_and_the_topic_is_never_delivered),
	    T(sighup_applies_a_new_groups_file_and_keeps_the_old_one_on_error),
	    T(an_invisible_user_stays_invisible_across_a_restart),
	    T(an_invisible_user_stays_invisible_across_a_crash_once_saved),
	    T(bad_visibility_options_stop_the_broker),
	    T(a_groups_file_with_an_error_names_its_line),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
