/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Unit tests for metrics.c: the publication schedule on a monotonic clock, and the rule that a
 * value is published the first time and then only when it changed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static void disabled_metrics_are_never_due(void **state)
{
	struct presence_metrics m;

	(void)state;
	presence_metrics_init(&m, 0);
	assert_false(presence_metrics_due(&m, 0));
	assert_false(presence_metrics_due(&m, 1000));
	assert_false(presence_metrics_due(&m, INT64_MAX));
}

static void the_first_round_is_due_at_once_then_one_per_interval(void **state)
{
	struct presence_metrics m;

	(void)state;
	presence_metrics_init(&m, 10);
	assert_true(presence_metrics_due(&m, 5000));
	assert_false(presence_metrics_due(&m, 5000));
	assert_false(presence_metrics_due(&m, 14999));
	assert_true(presence_metrics_due(&m, 15000));
	assert_false(presence_metrics_due(&m, 15001));
	/* A late tick keeps the rhythm: the next round is still at 25000. */
	assert_true(presence_metrics_due(&m, 24950 + 100));
	assert_false(presence_metrics_due(&m, 34999));
	assert_true(presence_metrics_due(&m, 35000));
}

static void missed_rounds_are_not_caught_up_in_a_burst(void **state)
{
	struct presence_metrics m;

	(void)state;
	presence_metrics_init(&m, 1);
	assert_true(presence_metrics_due(&m, 0));
	/* The loop stalled for 10 s: one round, then one second later. */
	assert_true(presence_metrics_due(&m, 10500));
	assert_false(presence_metrics_due(&m, 10501));
	assert_false(presence_metrics_due(&m, 11499));
	assert_true(presence_metrics_due(&m, 11500));
}

static void the_longest_interval_is_a_day(void **state)
{
	struct presence_metrics m;

	(void)state;
	presence_metrics_init(&m, 86400);
	assert_true(presence_metrics_due(&m, 1));
	assert_false(presence_metrics_due(&m, 86400000));
	assert_true(presence_metrics_due(&m, 86400001));
}

static void a_value_is_published_the_first_time_then_only_when_it_changed(void **state)
{
	struct presence_metrics m;
	int which;

	(void)state;
	presence_metrics_init(&m, 10);
	for (which = 0; which < PRESENCE_METRIC_COUNT; which++) {
		/* The first time, even 0 (it replaces a stale retained value). */
		assert_true(presence_metrics_changed(&m, (enum presence_metric)which, 0));
	}
	presence_metrics_published(&m, PRESENCE_METRIC_SESSIONS, 0);
	assert_false(presence_metrics_changed(&m, PRESENCE_METRIC_SESSIONS, 0));
	assert_true(presence_metrics_changed(&m, PRESENCE_METRIC_SESSIONS, 1));
	assert_true(presence_metrics_changed(&m, PRESENCE_METRIC_USERS_KNOWN, 0));
	presence_metrics_published(&m, PRESENCE_METRIC_SESSIONS, UINT64_MAX);
	assert_false(presence_metrics_changed(&m, PRESENCE_METRIC_SESSIONS, UINT64_MAX));
	assert_true(presence_metrics_changed(&m, PRESENCE_METRIC_SESSIONS, 0));
}

static void every_metric_has_its_topic_below_sys(void **state)
{
	static const char *const expected[PRESENCE_METRIC_COUNT] = {
	    "$SYS/broker/presence/users/available",    "$SYS/broker/presence/users/known",
	    "$SYS/broker/presence/sessions",           "$SYS/broker/presence/documents/published",
	    "$SYS/broker/presence/publishes/denied",   "$SYS/broker/presence/state/writes",
	    "$SYS/broker/presence/state/rejected",     "$SYS/broker/presence/users/forgotten",
	    "$SYS/broker/presence/sessions/untracked",
	};
	int which;

	(void)state;
	for (which = 0; which < PRESENCE_METRIC_COUNT; which++) {
		assert_string_equal(presence_metrics_topic((enum presence_metric)which),
		                    expected[which]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(disabled_metrics_are_never_due),
	    cmocka_unit_test(the_first_round_is_due_at_once_then_one_per_interval),
	    cmocka_unit_test(missed_rounds_are_not_caught_up_in_a_burst),
	    cmocka_unit_test(the_longest_interval_is_a_day),
	    cmocka_unit_test(a_value_is_published_the_first_time_then_only_when_it_changed),
	    cmocka_unit_test(every_metric_has_its_topic_below_sys),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
