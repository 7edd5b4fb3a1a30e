/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Unit tests for querylimit.c: each client's bucket of response bytes on an injected clock,
 * debt, refill up to the burst, forgetting a client, and allocation failures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "failalloc.h"
#include "querylimit.h"
#include "testing.h"

#define A ((const void *)0x10)
#define B ((const void *)0x20)

static bool allowed(struct presence_query_limit *ql, const void *client, int64_t now)
{
	bool ok = false;

	assert_int_equal(presence_query_limit_check(ql, client, now, &ok), PRESENCE_OK);
	return ok;
}

static void a_client_is_answered_until_its_bucket_is_in_debt(void **state)
{
	struct presence_query_limit *ql = presence_query_limit_new(1000, 100);

	(void)state;
	assert_non_null(ql);
	assert_true(allowed(ql, A, 0));
	presence_query_limit_charge(ql, A, 600);
	assert_true(allowed(ql, A, 0));
	/* One response may take the bucket into debt by its own size. */
	presence_query_limit_charge(ql, A, 600);
	assert_false(allowed(ql, A, 0));
	/* Another client has its own bucket. */
	assert_true(allowed(ql, B, 0));
	/* 100 bytes a second: the 200 bytes of debt are paid after 2 s. */
	assert_false(allowed(ql, A, 1999));
	assert_true(allowed(ql, A, 2000));
	presence_query_limit_free(ql);
}

static void a_bucket_refills_up_to_the_burst_only(void **state)
{
	struct presence_query_limit *ql = presence_query_limit_new(1000, 100);

	(void)state;
	assert_non_null(ql);
	assert_true(allowed(ql, A, 0));
	/* A long pause (even longer than a day) refills the burst, no more. */
	assert_true(allowed(ql, A, 100000000));
	presence_query_limit_charge(ql, A, 1000);
	assert_true(allowed(ql, A, 100000000));
	presence_query_limit_charge(ql, A, 1);
	assert_false(allowed(ql, A, 100000000));
	/* A clock going back earns nothing. */
	assert_false(allowed(ql, A, 5));
	presence_query_limit_free(ql);
}

static void a_forgotten_client_starts_again_with_a_full_bucket(void **state)
{
	struct presence_query_limit *ql = presence_query_limit_new(10, 1);

	(void)state;
	assert_non_null(ql);
	assert_true(allowed(ql, A, 0));
	presence_query_limit_charge(ql, A, 100);
	assert_false(allowed(ql, A, 0));
	assert_int_equal(presence_query_limit_clients(ql), 1);
	presence_query_limit_forget(ql, A);
	presence_query_limit_forget(ql, B);
	assert_int_equal(presence_query_limit_clients(ql), 0);
	assert_true(allowed(ql, A, 0));
	/* Charging an unknown client changes nothing. */
	presence_query_limit_charge(ql, B, 100);
	assert_int_equal(presence_query_limit_clients(ql), 1);
	presence_query_limit_free(ql);
	presence_query_limit_free(NULL);
}

static void allocation_failures_refuse_and_leak_nothing(void **state)
{
	struct presence_query_limit *ql = NULL;
	long n;

	(void)state;
	for (n = 0; n < 100; n++) {
		bool ok = true;
		enum presence_err err;

		failalloc_fail_after(n);
		ql = presence_query_limit_new(10, 1);
		if (ql == NULL) {
			failalloc_reset();
			continue;
		}
		err = presence_query_limit_check(ql, A, 0, &ok);
		failalloc_reset();
		if (err == PRESENCE_OK) {
			assert_true(ok);
			assert_int_equal(presence_query_limit_clients(ql), 1);
			presence_query_limit_free(ql);
			break;
		}
		assert_int_equal(err, PRESENCE_ERR_NOMEM);
		assert_false(ok);
		assert_int_equal(presence_query_limit_clients(ql), 0);
		presence_query_limit_free(ql);
	}
	assert_true(n > 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(a_client_is_answered_until_its_bucket_is_in_debt),
	    cmocka_unit_test(a_bucket_refills_up_to_the_burst_only),
	    cmocka_unit_test(a_forgotten_client_starts_again_with_a_full_bucket),
	    cmocka_unit_test(allocation_failures_refuse_and_leak_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
