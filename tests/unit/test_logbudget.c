/*
 * Unit tests for logbudget.c: lines per window on an injected monotonic clock, and the count of
 * suppressed lines carried by the next line or a flush.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "logbudget.h"

static void the_first_lines_of_a_window_are_logged_the_rest_counted(void **state)
{
	struct presence_log_budget b;
	uint64_t suppressed = 99;
	int i;

	(void)state;
	presence_log_budget_init(&b, 3, 1000);
	for (i = 0; i < 3; i++) {
		assert_true(presence_log_budget_take(&b, 5000 + i, &suppressed));
		assert_int_equal(suppressed, 0);
	}
	for (i = 0; i < 10000; i++) {
		assert_false(presence_log_budget_take(&b, 5003 + i / 100, &suppressed));
	}
	/* Not over yet: no flush. */
	assert_false(presence_log_budget_flush(&b, 5999, &suppressed));
	/* The next window's first line says how many were dropped. */
	assert_true(presence_log_budget_take(&b, 6000, &suppressed));
	assert_int_equal(suppressed, 10000);
	assert_true(presence_log_budget_take(&b, 6001, &suppressed));
	assert_int_equal(suppressed, 0);
}

static void a_flush_reports_the_end_of_a_flood_once(void **state)
{
	struct presence_log_budget b;
	uint64_t suppressed = 0;

	(void)state;
	presence_log_budget_init(&b, 1, 1000);
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

static void a_budget_of_no_lines_logs_nothing(void **state)
{
	struct presence_log_budget b;
	uint64_t suppressed = 0;

	(void)state;
	presence_log_budget_init(&b, 0, 1000);
	assert_false(presence_log_budget_take(&b, 0, &suppressed));
	assert_true(presence_log_budget_flush(&b, 1000, &suppressed));
	assert_int_equal(suppressed, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(the_first_lines_of_a_window_are_logged_the_rest_counted),
	    cmocka_unit_test(a_flush_reports_the_end_of_a_flood_once),
	    cmocka_unit_test(a_budget_of_no_lines_logs_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
