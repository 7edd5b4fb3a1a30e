/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Unit tests for config.c: defaults, every option's valid and invalid values, unknown and
 * repeated options, the wording of error messages, ignore_users, the one-line description,
 * and allocation failure at every allocation parsing makes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"
#include "failalloc.h"

/* Room for any message config.c writes in these tests. */
#define ERR_SIZE 1024

/* The number of elements of an array. */
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Asserts that cfg is the empty configuration a failed parse leaves. */
static void assert_config_empty(const struct presence_config *cfg)
{
	assert_null(cfg->topic_prefix);
	assert_int_equal(cfg->topic_prefix_len, 0);
	assert_int_equal(cfg->identity, PRESENCE_IDENTITY_USERNAME);
	assert_null(cfg->ignore_users);
	assert_int_equal(cfg->ignore_users_count, 0);
	assert_int_equal(cfg->auth, PRESENCE_MODE_DEFER);
	assert_int_equal(cfg->acl, PRESENCE_MODE_DEFER);
	assert_int_equal(cfg->max_state_bytes, 0);
	assert_int_equal(cfg->max_keys, 0);
	assert_int_equal(cfg->offline_delay, 0);
	assert_false(cfg->keep_state);
	assert_null(cfg->state_file);
}

/* Parses the single option key=value and returns the result; cfg receives the configuration,
 * err the message. */
static enum presence_err parse_one(struct presence_config *cfg, const char *key, const char *value,
                                   char *err)
{
	struct presence_option opt = {key, value};

	return presence_config_parse(cfg, &opt, 1, err, ERR_SIZE);
}

/* Asserts that key=value is refused with PRESENCE_ERR_INVAL, a message naming the option, and
 * an empty cfg. */
static void assert_value_refused(const char *key, const char *value)
{
	struct presence_config cfg;
	char err[ERR_SIZE] = "";
	char name[64];

	memset(&cfg, 0xA5, sizeof(cfg));
	if (parse_one(&cfg, key, value, err) != PRESENCE_ERR_INVAL) {
		fail_msg("plugin_opt_%s \"%s\" was accepted", key, value);
	}
	snprintf(name, sizeof(name), "plugin_opt_%s: ", key);
	if (strncmp(err, name, strlen(name)) != 0) {
		fail_msg("message for plugin_opt_%s \"%s\" does not name the option: %s", key,
		         value, err);
	}
	assert_config_empty(&cfg);
}

static void defaults_apply_when_no_option_is_given(void **state)
{
	struct presence_config cfg;
	char err[ERR_SIZE] = "x";

	(void)state;
	assert_int_equal(presence_config_parse(&cfg, NULL, 0, err, sizeof(err)), PRESENCE_OK);
	assert_string_equal(err, "");
	assert_string_equal(cfg.topic_prefix, "presence");
	assert_int_equal(cfg.topic_prefix_len, strlen("presence"));
	assert_int_equal(cfg.identity, PRESENCE_IDENTITY_USERNAME);
	assert_null(cfg.ignore_users);
	assert_int_equal(cfg.ignore_users_count, 0);
	assert_int_equal(cfg.auth, PRESENCE_MODE_DEFER);
	assert_int_equal(cfg.acl, PRESENCE_MODE_DEFER);
	assert_int_equal(cfg.max_state_bytes, 8192);
	assert_int_equal(cfg.max_keys, 64);
	assert_int_equal(cfg.max_query_users, 1000);
	assert_int_equal(cfg.metrics_interval, 10);
	assert_int_equal(cfg.offline_delay, 0);
	assert_false(cfg.keep_state);
	assert_int_equal(cfg.forget_after, 2592000);
	assert_int_equal(cfg.max_users, 1000000);
	assert_int_equal(cfg.max_writes_per_second, 10);
	assert_int_equal(cfg.max_write_burst, 100);
	assert_null(cfg.state_file);
	presence_config_free(&cfg);
	assert_config_empty(&cfg);
}

static void every_option_can_be_set_at_once(void **state)
{
	const struct presence_option opts[] = {
	    {"max_keys", "1"},
	    {"topic_prefix", "acme/presence"},
	    {"identity", "clientid"},
	    {"ignore_users", "monitor"},
	    {"auth", "allow"},
	    {"acl", "allow"},
	    {"max_state_bytes", "1048576"},
	    {"metrics_interval", "0"},
	    {"max_query_users", "100000"},
	    {"max_state_depth", "128"},
	    {"max_query_reply_bytes", "67108864"},
	    {"state_file", "/var/lib/mosquitto/presence.json"},
	    {"offline_delay", "30"},
	    {"keep_state", "true"},
	    {"forget_after", "0"},
	    {"max_users", "100000000"},
	    {"max_writes_per_second", "0"},
	    {"max_write_burst", "100000"},
	};
	struct presence_config cfg;
	char err[ERR_SIZE];

	(void)state;
	assert_int_equal(presence_config_parse(&cfg, opts, COUNT(opts), err, sizeof(err)),
	                 PRESENCE_OK);
	assert_int_equal(cfg.forget_after, 0);
	assert_int_equal(cfg.max_users, 100000000);
	assert_int_equal(cfg.max_writes_per_second, 0);
	assert_int_equal(cfg.max_write_burst, 100000);
	assert_int_equal(cfg.offline_delay, 30);
	assert_true(cfg.keep_state);
	assert_string_equal(cfg.state_file, "/var/lib/mosquitto/presence.json");
	assert_string_equal(cfg.topic_prefix, "acme/presence");
	assert_int_equal(cfg.topic_prefix_len, strlen("acme/presence"));
	assert_int_equal(cfg.identity, PRESENCE_IDENTITY_CLIENTID);
	assert_int_equal(cfg.ignore_users_count, 1);
	assert_string_equal(cfg.ignore_users[0], "monitor");
	assert_int_equal(cfg.auth, PRESENCE_MODE_ALLOW);
	assert_int_equal(cfg.acl, PRESENCE_MODE_ALLOW);
	assert_int_equal(cfg.max_state_bytes, 1048576);
	assert_int_equal(cfg.max_keys, 1);
	assert_int_equal(cfg.max_query_users, 100000);
	assert_int_equal(cfg.max_state_depth, 128);
	assert_int_equal(cfg.max_query_reply_bytes, 67108864);
	assert_int_equal(cfg.metrics_interval, 0);
	presence_config_free(&cfg);
}

static void topic_prefix_accepts_any_valid_topic_without_wildcards(void **state)
{
	static const char *const valid[] = {
	    "p",   "presence", "acme/presence",   "/presence", "presence/",
	    "a b", "a//b",     "pr\xC3\xA9sence", "pre$ence",
	};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(valid); i++) {
		struct presence_config cfg;
		char err[ERR_SIZE];

		if (parse_one(&cfg, "topic_prefix", valid[i], err) != PRESENCE_OK) {
			fail_msg("\"%s\" refused: %s", valid[i], err);
		}
		/* Nothing is stripped. */
		assert_string_equal(cfg.topic_prefix, valid[i]);
		assert_int_equal(cfg.topic_prefix_len, strlen(valid[i]));
		presence_config_free(&cfg);
	}
}

static void topic_prefix_refuses_empty_wildcard_dollar_and_bad_utf8(void **state)
{
	(void)state;
	assert_value_refused("topic_prefix", "");
	assert_value_refused("topic_prefix", "a+b");
	assert_value_refused("topic_prefix", "presence/#");
	assert_value_refused("topic_prefix", "+");
	assert_value_refused("topic_prefix", "$SYS/presence");
	assert_value_refused("topic_prefix", "$presence");
	assert_value_refused("topic_prefix", "bad\xC0\xAF");
	assert_value_refused("topic_prefix", "surrogate\xED\xA0\x80");
}

static void topic_prefix_may_be_65535_bytes_but_not_more(void **state)
{
	static char prefix[65537];
	struct presence_config cfg;
	char err[ERR_SIZE];

	(void)state;
	memset(prefix, 'p', 65535);
	prefix[65535] = '\0';
	assert_int_equal(parse_one(&cfg, "topic_prefix", prefix, err), PRESENCE_OK);
	assert_int_equal(cfg.topic_prefix_len, 65535);
	presence_config_free(&cfg);

	prefix[65535] = 'p';
	prefix[65536] = '\0';
	assert_int_equal(parse_one(&cfg, "topic_prefix", prefix, err), PRESENCE_ERR_INVAL);
	/* The value is quoted only in part, so the reason still fits. */
	assert_non_null(strstr(err, "plugin_opt_topic_prefix: \"pppp"));
	assert_non_null(strstr(err, "pppp...\" is not valid; it must be at most 65535 bytes"));
	assert_config_empty(&cfg);
}

static void a_long_value_is_quoted_in_part_at_a_character_boundary(void **state)
{
	struct presence_config cfg;
	char value[128] = "x";
	char expected[ERR_SIZE];
	char err[ERR_SIZE];
	char quoted[128] = "x";
	int i;

	(void)state;
	/* "x" then forty two-byte characters: byte 64 is the middle of one, so the quote stops
	 * before it, after 63 bytes. */
	for (i = 0; i < 40; i++) {
		strcat(value, "\xC3\xA9");
	}
	for (i = 0; i < 31; i++) {
		strcat(quoted, "\xC3\xA9");
	}
	snprintf(expected, sizeof(expected),
	         "plugin_opt_identity: \"%s...\" is not valid; use \"username\" or \"clientid\"",
	         quoted);
	assert_int_equal(parse_one(&cfg, "identity", value, err), PRESENCE_ERR_INVAL);
	assert_string_equal(err, expected);
}

static void identity_accepts_username_and_clientid_only(void **state)
{
	struct presence_config cfg;
	char err[ERR_SIZE];

	(void)state;
	assert_int_equal(parse_one(&cfg, "identity", "username", err), PRESENCE_OK);
	assert_int_equal(cfg.identity, PRESENCE_IDENTITY_USERNAME);
	presence_config_free(&cfg);
	assert_int_equal(parse_one(&cfg, "identity", "clientid", err), PRESENCE_OK);
	assert_int_equal(cfg.identity, PRESENCE_IDENTITY_CLIENTID);
	presence_config_free(&cfg);

	assert_value_refused("identity", "foo");
	assert_value_refused("identity", "");
	assert_value_refused("identity", "Username");
	assert_value_refused("identity", "username ");
	assert_value_refused("identity", "client_id");
}

static void identity_error_says_what_is_allowed(void **state)
{
	struct presence_config cfg;
	char err[ERR_SIZE];

	(void)state;
	assert_int_equal(parse_one(&cfg, "identity", "foo", err), PRESENCE_ERR_INVAL);
	assert_string_equal(err, "plugin_opt_identity: \"foo\" is not valid; use \"username\" or "
	                         "\"clientid\"");
}

static void auth_and_acl_accept_defer_and_allow_only(void **state)
{
	static const char *const keys[] = {"auth", "acl"};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(keys); i++) {
		struct presence_config cfg;
		char err[ERR_SIZE];

		assert_int_equal(parse_one(&cfg, keys[i], "allow", err), PRESENCE_OK);
		assert_int_equal(i == 0 ? cfg.auth : cfg.acl, PRESENCE_MODE_ALLOW);
		assert_int_equal(i == 0 ? cfg.acl : cfg.auth, PRESENCE_MODE_DEFER);
		presence_config_free(&cfg);
		assert_int_equal(parse_one(&cfg, keys[i], "defer", err), PRESENCE_OK);
		assert_int_equal(i == 0 ? cfg.auth : cfg.acl, PRESENCE_MODE_DEFER);
		presence_config_free(&cfg);

		assert_value_refused(keys[i], "deny");
		assert_value_refused(keys[i], "");
		assert_value_refused(keys[i], "ALLOW");
		assert_value_refused(keys[i], "true");
	}
}

static void max_state_bytes_accepts_2_to_1048576(void **state)
{
	static const struct {
		const char *value;
		size_t expected;
	} valid[] = {{"2", 2}, {"8192", 8192}, {"1048576", 1048576}, {"0016", 16}};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(valid); i++) {
		struct presence_config cfg;
		char err[ERR_SIZE];

		assert_int_equal(parse_one(&cfg, "max_state_bytes", valid[i].value, err),
		                 PRESENCE_OK);
		assert_int_equal(cfg.max_state_bytes, valid[i].expected);
		presence_config_free(&cfg);
	}
}

static void max_state_bytes_refuses_out_of_range_and_malformed_integers(void **state)
{
	static const char *const invalid[] = {
	    "",
	    "0",
	    "1",
	    "1048577",
	    "-5",
	    "+5",
	    " 5",
	    "5 ",
	    "5k",
	    "0x10",
	    "1e3",
	    "8192.0",
	    "18446744073709551616",
	    "99999999999999999999999999",
	};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(invalid); i++) {
		assert_value_refused("max_state_bytes", invalid[i]);
	}
}

static void max_keys_accepts_1_to_65535(void **state)
{
	static const struct {
		const char *value;
		size_t expected;
	} valid[] = {{"1", 1}, {"64", 64}, {"65535", 65535}};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(valid); i++) {
		struct presence_config cfg;
		char err[ERR_SIZE];

		assert_int_equal(parse_one(&cfg, "max_keys", valid[i].value, err), PRESENCE_OK);
		assert_int_equal(cfg.max_keys, valid[i].expected);
		presence_config_free(&cfg);
	}
}

static void max_keys_refuses_out_of_range_and_malformed_integers(void **state)
{
	static const char *const invalid[] = {
	    "", "0", "65536", "-1", "+1", "1 ", "ten", "4294967297", "18446744073709551617",
	};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(invalid); i++) {
		assert_value_refused("max_keys", invalid[i]);
	}
}

static void max_query_users_accepts_1_to_100000(void **state)
{
	static const struct {
		const char *value;
		size_t expected;
	} valid[] = {{"1", 1}, {"1000", 1000}, {"100000", 100000}};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(valid); i++) {
		struct presence_config cfg;
		char err[ERR_SIZE];

		assert_int_equal(parse_one(&cfg, "max_query_users", valid[i].value, err),
		                 PRESENCE_OK);
		assert_int_equal(cfg.max_query_users, valid[i].expected);
		presence_config_free(&cfg);
	}
}

static void max_query_users_refuses_out_of_range_and_malformed_integers(void **state)
{
	static const char *const invalid[] = {
	    "", "0", "100001", "-1", "+1", "1 ", "many", "18446744073709551617",
	};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(invalid); i++) {
		assert_value_refused("max_query_users", invalid[i]);
	}
}

static void max_state_depth_accepts_1_to_128(void **state)
{
	static const struct {
		const char *value;
		size_t expected;
	} valid[] = {{"1", 1}, {"32", 32}, {"128", 128}};
	static const char *const invalid[] = {"", "0", "129", "-1", "1000", "deep"};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(valid); i++) {
		struct presence_config cfg;
		char err[ERR_SIZE];

		assert_int_equal(parse_one(&cfg, "max_state_depth", valid[i].value, err),
		                 PRESENCE_OK);
		assert_int_equal(cfg.max_state_depth, valid[i].expected);
		presence_config_free(&cfg);
	}
	for (i = 0; i < COUNT(invalid); i++) {
		assert_value_refused("max_state_depth", invalid[i]);
	}
}

static void max_query_reply_bytes_accepts_1024_to_64_mib(void **state)
{
	static const struct {
		const char *value;
		size_t expected;
	} valid[] = {{"1024", 1024}, {"65536", 65536}, {"67108864", 67108864}};
	static const char *const invalid[] = {"", "0", "1023", "67108865", "-1", "1k"};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(valid); i++) {
		struct presence_config cfg;
		char err[ERR_SIZE];

		assert_int_equal(parse_one(&cfg, "max_query_reply_bytes", valid[i].value, err),
		                 PRESENCE_OK);
		assert_int_equal(cfg.max_query_reply_bytes, valid[i].expected);
		presence_config_free(&cfg);
	}
	for (i = 0; i < COUNT(invalid); i++) {
		assert_value_refused("max_query_reply_bytes", invalid[i]);
	}
}

static void metrics_interval_accepts_0_to_86400(void **state)
{
	static const struct {
		const char *value;
		size_t expected;
	} valid[] = {{"0", 0}, {"1", 1}, {"10", 10}, {"86400", 86400}};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(valid); i++) {
		struct presence_config cfg;
		char err[ERR_SIZE];

		assert_int_equal(parse_one(&cfg, "metrics_interval", valid[i].value, err),
		                 PRESENCE_OK);
		assert_int_equal(cfg.metrics_interval, valid[i].expected);
		presence_config_free(&cfg);
	}
}

static void metrics_interval_refuses_out_of_range_and_malformed_integers(void **state)
{
	static const char *const invalid[] = {
	    "", "86401", "-1", "+1", "1s", "0.5", "off", "18446744073709551617",
	};
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(invalid); i++) {
		assert_value_refused("metrics_interval", invalid[i]);
	}
}

static void integer_error_gives_the_allowed_range(void **state)
{
	struct presence_config cfg;
	char err[ERR_SIZE];

	(void)state;
	assert_int_equal(parse_one(&cfg, "max_keys", "0", err), PRESENCE_ERR_INVAL);
	assert_string_equal(
	    err, "plugin_opt_max_keys: \"0\" is not valid; use an integer from 1 to 65535");
	assert_int_equal(parse_one(&cfg, "max_state_bytes", "-1", err), PRESENCE_ERR_INVAL);
	assert_string_equal(err, "plugin_opt_max_state_bytes: \"-1\" is not valid; use an integer "
	                         "from 2 to 1048576");
	assert_int_equal(parse_one(&cfg, "max_query_users", "0", err), PRESENCE_ERR_INVAL);
	assert_string_equal(err, "plugin_opt_max_query_users: \"0\" is not valid; use an integer "
	                         "from 1 to 100000");
	assert_int_equal(parse_one(&cfg, "metrics_interval", "1s", err), PRESENCE_ERR_INVAL);
	assert_string_equal(err, "plugin_opt_metrics_interval: \"1s\" is not valid; use an integer "
	                         "number of seconds from 0 to 86400 (0 disables the metrics)");
}

static void offline_delay_accepts_0_to_86400_seconds(void **state)
{
	static const char *const valid[] = {"0", "1", "2", "600", "86400", "007"};
	static const unsigned int want[] = {0, 1, 2, 600, 86400, 7};
	struct presence_config cfg;
	char err[ERR_SIZE];
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(valid); i++) {
		assert_int_equal(parse_one(&cfg, "offline_delay", valid[i], err), PRESENCE_OK);
		assert_int_equal(cfg.offline_delay, want[i]);
		presence_config_free(&cfg);
	}
}

static void lifetime_options_take_their_ranges(void **state)
{
	static const struct {
		const char *key, *value;
		size_t want;
	} valid[] = {
	    {"forget_after", "0", 0},
	    {"forget_after", "315360000", 315360000},
	    {"max_users", "1", 1},
	    {"max_users", "100000000", 100000000},
	    {"max_writes_per_second", "0", 0},
	    {"max_writes_per_second", "1000", 1000},
	    {"max_write_burst", "1", 1},
	    {"max_write_burst", "100000", 100000},
	};
	static const struct {
		const char *key, *value, *reason;
	} invalid[] = {
	    {"forget_after", "315360001",
	     "use an integer number of seconds from 0 to 315360000 (0: never forget)"},
	    {"forget_after", "30d", "use an integer number of seconds"},
	    {"max_users", "0", "use an integer from 1 to 100000000"},
	    {"max_users", "100000001", "use an integer from 1 to 100000000"},
	    {"max_writes_per_second", "1001", "use an integer from 0 to 1000 (0: no limit)"},
	    {"max_writes_per_second", "-1", "use an integer from 0 to 1000"},
	    {"max_write_burst", "0", "use an integer from 1 to 100000"},
	    {"max_write_burst", "1.5", "use an integer from 1 to 100000"},
	};
	struct presence_config cfg;
	char err[ERR_SIZE];
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(valid); i++) {
		size_t got;

		assert_int_equal(parse_one(&cfg, valid[i].key, valid[i].value, err), PRESENCE_OK);
		got = strcmp(valid[i].key, "forget_after") == 0      ? cfg.forget_after
		      : strcmp(valid[i].key, "max_users") == 0       ? cfg.max_users
		      : strcmp(valid[i].key, "max_write_burst") == 0 ? cfg.max_write_burst
		                                                     : cfg.max_writes_per_second;
		assert_int_equal(got, valid[i].want);
		presence_config_free(&cfg);
	}
	for (i = 0; i < COUNT(invalid); i++) {
		assert_value_refused(invalid[i].key, invalid[i].value);
		assert_int_equal(parse_one(&cfg, invalid[i].key, invalid[i].value, err),
		                 PRESENCE_ERR_INVAL);
		if (strstr(err, invalid[i].reason) == NULL) {
			fail_msg("%s %s: %s", invalid[i].key, invalid[i].value, err);
		}
	}
}

static void offline_delay_refuses_out_of_range_fractions_and_units(void **state)
{
	static const char *const invalid[] = {"",   "-1", "86401", "1.5",
	                                      "2s", " 2", "1e3",   "99999999999999999999999"};
	struct presence_config cfg;
	char err[ERR_SIZE];
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(invalid); i++) {
		assert_value_refused("offline_delay", invalid[i]);
	}
	assert_int_equal(parse_one(&cfg, "offline_delay", "2.5", err), PRESENCE_ERR_INVAL);
	assert_string_equal(err, "plugin_opt_offline_delay: \"2.5\" is not valid; use an integer "
	                         "number of seconds from 0 to 86400");
}

static void cluster_wake_signal_is_off_by_default_and_boolean(void **state)
{
	struct presence_config cfg;
	char err[ERR_SIZE];

	(void)state;
	assert_int_equal(parse_one(&cfg, "keep_state", "false", err), PRESENCE_OK);
	assert_false(cfg.cluster_wake_signal);
	presence_config_free(&cfg);
	assert_int_equal(parse_one(&cfg, "cluster_wake_signal", "true", err), PRESENCE_OK);
	assert_true(cfg.cluster_wake_signal);
	presence_config_free(&cfg);
	assert_value_refused("cluster_wake_signal", "yes");
}

static void keep_state_accepts_true_and_false_only(void **state)
{
	static const char *const invalid[] = {"", "yes", "1", "True", "FALSE", "on"};
	struct presence_config cfg;
	char err[ERR_SIZE];
	size_t i;

	(void)state;
	assert_int_equal(parse_one(&cfg, "keep_state", "true", err), PRESENCE_OK);
	assert_true(cfg.keep_state);
	presence_config_free(&cfg);
	assert_int_equal(parse_one(&cfg, "keep_state", "false", err), PRESENCE_OK);
	assert_false(cfg.keep_state);
	presence_config_free(&cfg);
	for (i = 0; i < COUNT(invalid); i++) {
		assert_value_refused("keep_state", invalid[i]);
	}
	assert_int_equal(parse_one(&cfg, "keep_state", "yes", err), PRESENCE_ERR_INVAL);
	assert_string_equal(
	    err, "plugin_opt_keep_state: \"yes\" is not valid; use \"true\" or \"false\"");
}

static void state_file_takes_a_file_path_as_given(void **state)
{
	static const char *const valid[] = {"state.json", "/var/lib/mosquitto/presence.json",
	                                    "./a b/c.json", "../x"};
	struct presence_config cfg;
	char err[ERR_SIZE];
	size_t i;

	(void)state;
	for (i = 0; i < COUNT(valid); i++) {
		assert_int_equal(parse_one(&cfg, "state_file", valid[i], err), PRESENCE_OK);
		assert_string_equal(cfg.state_file, valid[i]);
		presence_config_free(&cfg);
	}
	assert_value_refused("state_file", "");
	assert_value_refused("state_file", "/var/lib/mosquitto/");
	assert_int_equal(parse_one(&cfg, "state_file", "/tmp/", err), PRESENCE_ERR_INVAL);
	assert_string_equal(err,
	                    "plugin_opt_state_file: \"/tmp/\" is not valid; give the path of a "
	                    "file, such as /var/lib/mosquitto/presence-state.json");
}

static void ignore_users_trims_spaces_and_tabs_around_each_name(void **state)
{
	struct presence_config cfg;
	char err[ERR_SIZE];

	(void)state;
	assert_int_equal(parse_one(&cfg, "ignore_users", " alice,\tbob  , carol d ,e", err),
	                 PRESENCE_OK);
	assert_int_equal(cfg.ignore_users_count, 4);
	assert_string_equal(cfg.ignore_users[0], "alice");
	assert_string_equal(cfg.ignore_users[1], "bob");
	assert_string_equal(cfg.ignore_users[2], "carol d");
	assert_string_equal(cfg.ignore_users[3], "e");
	presence_config_free(&cfg);
	assert_config_empty(&cfg);
}

static void ignore_users_refuses_empty_names_and_bad_utf8(void **state)
{
	struct presence_config cfg;
	char err[ERR_SIZE];

	(void)state;
	assert_value_refused("ignore_users", "");
	assert_value_refused("ignore_users", " ");
	assert_value_refused("ignore_users", ",");
	assert_value_refused("ignore_users", "alice,");
	assert_value_refused("ignore_users", ",alice");
	assert_value_refused("ignore_users", "alice,,bob");
	assert_value_refused("ignore_users", "alice, \t ,bob");
	assert_value_refused("ignore_users", "alice,b\xFFob");

	assert_int_equal(parse_one(&cfg, "ignore_users", "alice,,bob", err), PRESENCE_ERR_INVAL);
	assert_string_equal(err, "plugin_opt_ignore_users: \"alice,,bob\" is not valid; names "
	                         "must not be empty; give a comma-separated list such as "
	                         "\"alice, bob\"");
}

static void ignores_matches_listed_names_exactly(void **state)
{
	struct presence_config cfg;
	char err[ERR_SIZE];

	(void)state;
	assert_int_equal(parse_one(&cfg, "ignore_users", "monitor, bridge user", err), PRESENCE_OK);
	assert_true(presence_config_ignores(&cfg, "monitor"));
	assert_true(presence_config_ignores(&cfg, "bridge user"));
	assert_false(presence_config_ignores(&cfg, "Monitor"));
	assert_false(presence_config_ignores(&cfg, "monitor "));
	assert_false(presence_config_ignores(&cfg, "bridge"));
	assert_false(presence_config_ignores(&cfg, ""));
	assert_false(presence_config_ignores(&cfg, NULL));
	presence_config_free(&cfg);

	assert_int_equal(presence_config_parse(&cfg, NULL, 0, err, sizeof(err)), PRESENCE_OK);
	assert_false(presence_config_ignores(&cfg, "monitor"));
	presence_config_free(&cfg);
}

static void unknown_option_is_refused_with_the_known_options(void **state)
{
	struct presence_config cfg;
	char err[ERR_SIZE];

	(void)state;
	memset(&cfg, 0xA5, sizeof(cfg));
	assert_int_equal(parse_one(&cfg, "colour", "blue", err), PRESENCE_ERR_INVAL);
	assert_string_equal(err, "unknown option plugin_opt_colour (known options: topic_prefix, "
	                         "identity, ignore_users, auth, acl, max_state_bytes, max_keys, "
	                         "max_state_depth, max_query_users, max_query_reply_bytes, "
	                         "metrics_interval, offline_delay, keep_state, forget_after, "
	                         "max_users, max_writes_per_second, max_write_burst, state_file, "
	                         "cluster_url, broker_id, cluster_heartbeat_ms, cluster_lease_ms, "
	                         "cluster_username, cluster_password_file, cluster_tls_cafile, "
	                         "cluster_tls_certfile, cluster_tls_keyfile, "
	                         "cluster_wake_signal, visibility, groups_file, "
	                         "group_from_username, see_everyone)");
	assert_config_empty(&cfg);

	/* Names are exact: no case folding, no prefix matching. */
	assert_int_equal(parse_one(&cfg, "Identity", "username", err), PRESENCE_ERR_INVAL);
	assert_int_equal(parse_one(&cfg, "max", "1", err), PRESENCE_ERR_INVAL);
	assert_int_equal(parse_one(&cfg, "plugin_opt_identity", "username", err),
	                 PRESENCE_ERR_INVAL);
}

static void repeated_option_is_refused_even_with_the_same_value(void **state)
{
	const struct presence_option opts[] = {
	    {"topic_prefix", "a"},
	    {"identity", "clientid"},
	    {"topic_prefix", "a"},
	};
	struct presence_config cfg;
	char err[ERR_SIZE];

	(void)state;
	memset(&cfg, 0xA5, sizeof(cfg));
	assert_int_equal(presence_config_parse(&cfg, opts, COUNT(opts), err, sizeof(err)),
	                 PRESENCE_ERR_INVAL);
	assert_non_null(strstr(err, "plugin_opt_topic_prefix"));
	assert_non_null(strstr(err, "more than once"));
	assert_config_empty(&cfg);
}

static void a_bad_option_after_good_ones_leaves_nothing_behind(void **state)
{
	const struct presence_option opts[] = {
	    {"topic_prefix", "acme/presence"},
	    {"ignore_users", "a, b"},
	    {"max_keys", "many"},
	};
	struct presence_config cfg;
	char err[ERR_SIZE];

	(void)state;
	assert_int_equal(presence_config_parse(&cfg, opts, COUNT(opts), err, sizeof(err)),
	                 PRESENCE_ERR_INVAL);
	assert_string_equal(err, "plugin_opt_max_keys: \"many\" is not valid; use an integer "
	                         "from 1 to 65535");
	assert_config_empty(&cfg);
}

static void parse_tolerates_a_short_or_missing_message_buffer(void **state)
{
	struct presence_config cfg;
	struct presence_option opt = {"identity", "foo"};
	char err[8];

	(void)state;
	assert_int_equal(presence_config_parse(&cfg, &opt, 1, err, sizeof(err)),
	                 PRESENCE_ERR_INVAL);
	assert_string_equal(err, "plugin_");
	assert_int_equal(presence_config_parse(&cfg, &opt, 1, NULL, 0), PRESENCE_ERR_INVAL);
	assert_config_empty(&cfg);
}

static void describe_prints_the_defaults_on_one_line(void **state)
{
	struct presence_config cfg;
	char buf[512];
	int n;

	(void)state;
	assert_int_equal(presence_config_parse(&cfg, NULL, 0, NULL, 0), PRESENCE_OK);
	n = presence_config_describe(&cfg, buf, sizeof(buf));
	assert_string_equal(buf, "topic_prefix=presence identity=username auth=defer acl=defer "
	                         "max_state_bytes=8192 max_keys=64 max_state_depth=32 "
	                         "max_query_users=1000 max_query_reply_bytes=65536 "
	                         "metrics_interval=10 offline_delay=0 keep_state=false "
	                         "forget_after=2592000 max_users=1000000 max_writes_per_second=10 "
	                         "max_write_burst=100 state_file=(none) ignore_users=(none)");
	assert_int_equal(n, strlen(buf));
	presence_config_free(&cfg);
}

static void describe_lists_every_setting(void **state)
{
	const struct presence_option opts[] = {
	    {"topic_prefix", "acme/presence"},
	    {"identity", "clientid"},
	    {"ignore_users", "monitor, bridge"},
	    {"auth", "allow"},
	    {"acl", "allow"},
	    {"max_state_bytes", "100"},
	    {"max_keys", "5"},
	    {"max_state_depth", "3"},
	    {"max_query_users", "7"},
	    {"max_query_reply_bytes", "2048"},
	    {"metrics_interval", "0"},
	    {"offline_delay", "2"},
	    {"keep_state", "true"},
	    {"state_file", "state.json"},
	};
	struct presence_config cfg;
	char buf[512];

	(void)state;
	assert_int_equal(presence_config_parse(&cfg, opts, COUNT(opts), NULL, 0), PRESENCE_OK);
	presence_config_describe(&cfg, buf, sizeof(buf));
	assert_string_equal(buf,
	                    "topic_prefix=acme/presence identity=clientid auth=allow acl=allow "
	                    "max_state_bytes=100 max_keys=5 max_state_depth=3 max_query_users=7 "
	                    "max_query_reply_bytes=2048 metrics_interval=0 offline_delay=2 "
	                    "keep_state=true forget_after=2592000 max_users=1000000 "
	                    "max_writes_per_second=10 max_write_burst=100 state_file=state.json "
	                    "ignore_users=monitor,bridge");
	presence_config_free(&cfg);
}

/* Logging in to Redis and TLS: the options that go together, and no password in the
 * description (which the plugin logs). */
static void cluster_login_and_tls_options_go_together(void **state)
{
	static const struct {
		const char *url, *key, *value, *reason;
	} refused[] = {
	    {NULL, "cluster_username", "presence", "cluster_username needs plugin_opt_cluster_url"},
	    {NULL, "cluster_password_file", "/etc/p", "needs plugin_opt_cluster_url"},
	    {"redis://u:pw@h", "cluster_username", "other", "give the user name once"},
	    {"redis://:pw@h", "cluster_password_file", "/etc/p", "give the password once"},
	    {"redis://presence@h", NULL, NULL, "a Redis user name needs a password"},
	    {"redis://h", "cluster_username", "presence", "a Redis user name needs a password"},
	    {"redis://h", "cluster_tls_cafile", "/etc/ca.crt", "needs a rediss:// "},
	    {"unix:/run/r.sock", "cluster_tls_cafile", "/etc/ca.crt", "needs a rediss:// "},
	    {"rediss://h", "cluster_tls_certfile", "/etc/c.crt", "give both or neither"},
	    {"rediss://h", "cluster_tls_keyfile", "/etc/c.key", "give both or neither"},
	    {"rediss://h", "cluster_username", " x", "without spaces"},
	    {"rediss://h", "cluster_password_file", "/etc/", "give the path of a file"},
	};
	struct presence_config cfg;
	char err[ERR_SIZE], buf[1024];

	(void)state;
	for (size_t i = 0; i < COUNT(refused); i++) {
		struct presence_option opts[3] = {{"broker_id", "b1"}};
		size_t n = 1;

		if (refused[i].url != NULL) {
			opts[n++] = (struct presence_option){"cluster_url", refused[i].url};
		}
		if (refused[i].key != NULL) {
			opts[n++] = (struct presence_option){refused[i].key, refused[i].value};
		}
		if (refused[i].url == NULL) {
			/* broker_id alone is fine; it is the other option that needs the URL. */
			opts[0] = opts[1];
			n = 1;
		}
		memset(err, 0, sizeof(err));
		assert_int_equal(presence_config_parse(&cfg, opts, n, err, sizeof(err)),
		                 PRESENCE_ERR_INVAL);
		if (strstr(err, refused[i].reason) == NULL) {
			fail_msg("case %zu: \"%s\" does not say \"%s\"", i, err, refused[i].reason);
		}
		assert_null(strstr(err, "pw"));
		assert_config_empty(&cfg);
	}
	{
		const struct presence_option opts[] = {
		    {"cluster_url", "rediss://presence:s%40cret@redis.example:6380"},
		    {"broker_id", "b1"},
		    {"cluster_tls_cafile", "/etc/mosquitto/ca.crt"},
		    {"cluster_tls_certfile", "/etc/mosquitto/b1.crt"},
		    {"cluster_tls_keyfile", "/etc/mosquitto/b1.key"},
		};

		assert_int_equal(presence_config_parse(&cfg, opts, COUNT(opts), err, sizeof(err)),
		                 PRESENCE_OK);
		presence_config_describe(&cfg, buf, sizeof(buf));
		assert_null(strstr(buf, "cret"));
		assert_non_null(strstr(buf, " cluster_url=rediss://presence@redis.example:6380 "));
		assert_non_null(strstr(buf, "cluster_tls_keyfile=/etc/mosquitto/b1.key"));
		presence_config_free(&cfg);
	}
	{
		const struct presence_option opts[] = {
		    {"cluster_url", "redis://10.0.0.5"},
		    {"broker_id", "b1"},
		    {"cluster_username", "presence"},
		    {"cluster_password_file", "/etc/mosquitto/redis.password"},
		};

		assert_int_equal(presence_config_parse(&cfg, opts, COUNT(opts), err, sizeof(err)),
		                 PRESENCE_OK);
		assert_string_equal(cfg.cluster_username, "presence");
		assert_string_equal(cfg.cluster_password_file, "/etc/mosquitto/redis.password");
		presence_config_free(&cfg);
	}
}

static void describe_truncates_and_returns_the_full_length(void **state)
{
	struct presence_config cfg;
	char full[1024];
	char buf[10];
	int n;

	(void)state;
	assert_int_equal(parse_one(&cfg, "ignore_users", "alice,bob", full), PRESENCE_OK);
	n = presence_config_describe(&cfg, full, sizeof(full));
	assert_int_equal(n, strlen(full));
	assert_int_equal(presence_config_describe(&cfg, buf, sizeof(buf)), n);
	assert_string_equal(buf, "topic_pre");
	assert_int_equal(presence_config_describe(&cfg, NULL, 0), n);
	presence_config_free(&cfg);
}

static void parse_survives_every_allocation_failure(void **state)
{
	const struct presence_option opts[] = {
	    {"ignore_users", "alice, bob ,carol"},
	    {"max_keys", "10"},
	    {"state_file", "state.json"},
	};
	struct presence_config cfg;
	char err[ERR_SIZE];
	enum presence_err rc;
	long n;

	(void)state;
	for (n = 0;; n++) {
		memset(&cfg, 0xA5, sizeof(cfg));
		failalloc_fail_after(n);
		rc = presence_config_parse(&cfg, opts, COUNT(opts), err, sizeof(err));
		failalloc_reset();
		if (rc == PRESENCE_OK) {
			break;
		}
		assert_int_equal(rc, PRESENCE_ERR_NOMEM);
		assert_non_null(strstr(err, "out of memory"));
		assert_config_empty(&cfg);
	}
	/* The list, three names, the state file and the default prefix. */
	assert_int_equal(n, 6);
	assert_string_equal(cfg.state_file, "state.json");
	assert_int_equal(cfg.ignore_users_count, 3);
	assert_string_equal(cfg.ignore_users[2], "carol");
	assert_string_equal(cfg.topic_prefix, "presence");
	presence_config_free(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(defaults_apply_when_no_option_is_given),
	    cmocka_unit_test(every_option_can_be_set_at_once),
	    cmocka_unit_test(topic_prefix_accepts_any_valid_topic_without_wildcards),
	    cmocka_unit_test(topic_prefix_refuses_empty_wildcard_dollar_and_bad_utf8),
	    cmocka_unit_test(topic_prefix_may_be_65535_bytes_but_not_more),
	    cmocka_unit_test(a_long_value_is_quoted_in_part_at_a_character_boundary),
	    cmocka_unit_test(identity_accepts_username_and_clientid_only),
	    cmocka_unit_test(identity_error_says_what_is_allowed),
	    cmocka_unit_test(auth_and_acl_accept_defer_and_allow_only),
	    cmocka_unit_test(max_state_bytes_accepts_2_to_1048576),
	    cmocka_unit_test(max_state_bytes_refuses_out_of_range_and_malformed_integers),
	    cmocka_unit_test(max_keys_accepts_1_to_65535),
	    cmocka_unit_test(max_keys_refuses_out_of_range_and_malformed_integers),
	    cmocka_unit_test(max_query_users_accepts_1_to_100000),
	    cmocka_unit_test(max_query_users_refuses_out_of_range_and_malformed_integers),
	    cmocka_unit_test(max_state_depth_accepts_1_to_128),
	    cmocka_unit_test(max_query_reply_bytes_accepts_1024_to_64_mib),
	    cmocka_unit_test(metrics_interval_accepts_0_to_86400),
	    cmocka_unit_test(metrics_interval_refuses_out_of_range_and_malformed_integers),
	    cmocka_unit_test(integer_error_gives_the_allowed_range),
	    cmocka_unit_test(offline_delay_accepts_0_to_86400_seconds),
	    cmocka_unit_test(lifetime_options_take_their_ranges),
	    cmocka_unit_test(offline_delay_refuses_out_of_range_fractions_and_units),
	    cmocka_unit_test(keep_state_accepts_true_and_false_only),
	    cmocka_unit_test(cluster_wake_signal_is_off_by_default_and_boolean),
	    cmocka_unit_test(state_file_takes_a_file_path_as_given),
	    cmocka_unit_test(ignore_users_trims_spaces_and_tabs_around_each_name),
	    cmocka_unit_test(ignore_users_refuses_empty_names_and_bad_utf8),
	    cmocka_unit_test(ignores_matches_listed_names_exactly),
	    cmocka_unit_test(unknown_option_is_refused_with_the_known_options),
	    cmocka_unit_test(repeated_option_is_refused_even_with_the_same_value),
	    cmocka_unit_test(a_bad_option_after_good_ones_leaves_nothing_behind),
	    cmocka_unit_test(parse_tolerates_a_short_or_missing_message_buffer),
	    cmocka_unit_test(describe_prints_the_defaults_on_one_line),
	    cmocka_unit_test(describe_lists_every_setting),
	    cmocka_unit_test(cluster_login_and_tls_options_go_together),
	    cmocka_unit_test(describe_truncates_and_returns_the_full_length),
	    cmocka_unit_test(parse_survives_every_allocation_failure),
	};

	failalloc_install_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
