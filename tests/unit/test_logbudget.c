/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Unit tests for logbudget.c: a token bucket of log lines on an injected monotonic clock, and
 * the count of suppressed lines carried by the next line or a flush.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "logbudget.h"

static void a_burst_is_logged_then_the_rate_and_the_rest_counted(void **state)
{
	struct presence_log_budget b;
	uint64_t suppressed = 99;
	int i;

	(void)state;
	presence_log_budget_init(&b, 5, 2);
	for (i = 0; i < 5; i++) {
		assert_true(presence_log_budget_take(&b, 1000, &suppressed));
		assert_int_equal(suppressed, 0);
	}
	for (i = 0; i < 10000; i++) {
		assert_false(presence_log_budget_take(&b, 1000 + i / 100, &suppressed));
	}
	/* 2 lines a second: one token every 500 ms, counted from the last call. */
	assert_false(presence_log_budget_take(&b, 1099 + 400, &suppressed));
	assert_true(presence_log_budget_take(&b, 1099 + 500, &suppressed));
	assert_int_equal(suppressed, 10001);
	assert_false(presence_log_budget_take(&b, 1599, &suppressed));
	/* A long pause refills the burst, no more. */
	for (i = 0; i < 5; i++) {
		assert_true(presence_log_budget_take(&b, 1000000, &suppressed));
		assert_int_equal(suppressed, i == 0 ? 1 : 0);
	}
	assert_false(presence_log_budget_take(&b, 1000000, &suppressed));
}

static void a_flush_reports_the_end_of_a_flood_at_most_once_a_second(void **state)
{
	struct presence_log_budget b;
	uint64_t suppressed = 0;

	(void)state;
	presence_log_budget_init(&b, 1, 1);
	assert_false(presence_log_budget_flush(&b, 0, &suppressed));
	assert_true(presence_log_budget_take(&b, 100, &suppressed));
	assert_false(presence_log_budget_flush(&b, 5000, &suppressed));
	assert_false(presence_log_budget_take(&b, 200, &suppressed));
	assert_false(presence_log_budget_take(&b, 300, &suppressed));
	assert_false(presence_log_budget_flush(&b, 1099, &suppressed));
	assert_true(presence_log_budget_flush(&b, 1100, &suppressed));
	assert_int_equal(suppressed, 2);
	assert_false(presence_log_budget_flush(&b, 9000, &suppressed));
	assert_true(presence_log_budget_take(&b, 9000, &suppressed));
	assert_int_equal(suppressed, 0);
}

static void a_clock_going_back_earns_nothing(void **state)
{
	struct presence_log_budget b;
	uint64_t suppressed = 0;

	(void)state;
	presence_log_budget_init(&b, 1, 1000);
	assert_true(presence_log_budget_take(&b, 5000, &suppressed));
	assert_false(presence_log_budget_take(&b, 4000, &suppressed));
	assert_false(presence_log_budget_take(&b, 5000, &suppressed));
	assert_true(presence_log_budget_take(&b, 5001, &suppressed));
	assert_int_equal(suppressed, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(a_burst_is_logged_then_the_rate_and_the_rest_counted),
	    cmocka_unit_test(a_flush_reports_the_end_of_a_flood_at_most_once_a_second),
	    cmocka_unit_test(a_clock_going_back_earns_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
