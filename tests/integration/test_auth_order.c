/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The order of authentication plugins. Mosquitto asks the plugins' BASIC_AUTH callbacks in the
 * order of their plugin lines and stops at the first that accepts or refuses: an
 * authentication plugin listed before mosquitto-presence answers every login, and the plugin
 * never sees one. The broker starts all the same; the plugin must say so once, at warning
 * level, naming the fix, without changing what happens to the clients.
 *
 * The other authentication plugin is tests/integration/helper_plugin.c with
 * plugin_opt_accept_all true.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* The start of the warning (plugin/mosquitto/session.c); the client id follows. */
#define WARNING "mosquitto-presence: client "
#define WARNING_REST                                                                               \
	" is connected, but no login has reached the plugin: another plugin loaded before "        \
	"mosquitto-presence answers the logins (BASIC_AUTH), "
#define FIX                                                                                        \
	"Load mosquitto-presence first: put its plugin line before those of other "                \
	"authentication plugins"

/* Counts the lines of b's log that contain needle. */
static int log_count(struct broker *b, const char *needle)
{
	char *log = broker_log(b);
	int n = 0;

	for (const char *at = log; (at = strstr(at, needle)) != NULL; at += strlen(needle)) {
		n++;
	}
	free(log);
	return n;
}

static void an_authentication_plugin_loaded_first_is_reported_once(void **state)
{
	struct client_opts alice_o = {.id = "alice1", .username = "alice"};
	struct client_opts bob_o = {.id = "bob1", .username = "bob"};
	char line[512];
	struct client *w, *alice, *bob;
	struct broker *b;
	char *conf;

	(void)state;
	b = broker_prepare(NULL);
	conf = broker_conf_without_plugin("plugin @HELPER@\nplugin_opt_accept_all true\n"
	                                  "plugin @PLUGIN@\nplugin_opt_acl allow\n");
	broker_launch(b, conf);
	free(conf);
	assert_true(broker_log_contains(b, "test-helper: loaded"));

	w = client_watch(b, "watcher", "presence/+");
	snprintf(line, sizeof(line), WARNING "watcher" WARNING_REST);
	assert_true(broker_log_wait(b, line, 5000));
	assert_true(broker_log_wait(b, FIX, 5000));

	/* The clients are served as before: they stay connected and their publishes are
	 * acknowledged. */
	alice = client_connect(b, &alice_o);
	bob = client_connect(b, &bob_o);
	publish_text_ok(alice, "presence/alice/state", "{\"mood\":\"ok\"}", 1);
	publish_text_ok(bob, "other/topic", "hello", 1);
	assert_true(client_sync(alice, 5000));
	assert_true(client_sync(bob, 5000));
	assert_false(client_wait_closed(alice, 0));
	assert_false(client_wait_closed(bob, 0));
	if (harness_broker_version() < HARNESS_MOSQUITTO_VERSION(2, 1, 0)) {
		/* 2.0: sessions start at the login the plugin never saw, so nobody gets a
		 * document. */
		expect_nothing(w);
	} else {
		/* 2.1: sessions start at CONNECT, whoever accepted the login, so presence works;
		 * the warning still says that logins go elsewhere. */
		expect_doc(w, "presence/alice", "alice", true, 1, "{}");
		expect_doc(w, "presence/bob", "bob", true, 1, "{}");
		expect_doc(w, "presence/alice", "alice", true, 1, "{\"mood\":\"ok\"}");
	}
	/* Said once, whatever the clients do. */
	assert_int_equal(log_count(b, WARNING_REST), 1);

	client_disconnect(alice);
	client_disconnect(bob);
	client_disconnect(w);
	broker_stop(b);
}

static void listed_first_the_plugin_sees_logins_and_says_nothing(void **state)
{
	struct client_opts alice_o = {.id = "alice1", .username = "alice"};
	struct client *w, *alice;
	struct broker *b;
	char *conf;

	(void)state;
	b = broker_prepare(NULL);
	conf = broker_conf("plugin_opt_acl allow\nplugin @HELPER@\nplugin_opt_accept_all true\n");
	broker_launch(b, conf);
	free(conf);
	w = client_watch(b, "watcher", "presence/+");
	alice = client_connect(b, &alice_o);
	expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	client_disconnect(alice);
	expect_doc(w, "presence/alice", "alice", false, 0, "{}");
	assert_int_equal(log_count(b, WARNING_REST), 0);
	client_disconnect(w);
	broker_stop(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(an_authentication_plugin_loaded_first_is_reported_once,
	                              harness_teardown),
	    cmocka_unit_test_teardown(listed_first_the_plugin_sees_logins_and_says_nothing,
	                              harness_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
