/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Unit tests for text.c (copies, decimal option values, how much of a refused value to quote)
 * and clock.c (the two clocks).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clock.h"
#include "failalloc.h"
#include "text.h"

static void a_copy_ends_in_a_nul_and_may_be_empty(void **state)
{
	char *copy;

	(void)state;
	copy = presence_text_dup("abcdef", 3);
	assert_non_null(copy);
	assert_string_equal(copy, "abc");
	free(copy);
	copy = presence_text_dup(NULL, 0);
	assert_non_null(copy);
	assert_string_equal(copy, "");
	free(copy);
	copy = presence_text_join("state.json-ignored", 10, ".journal");
	assert_non_null(copy);
	assert_string_equal(copy, "state.json.journal");
	free(copy);
}

static void a_copy_without_memory_is_null(void **state)
{
	(void)state;
	failalloc_fail_after(0);
	assert_null(presence_text_dup("abc", 3));
	assert_null(presence_text_join("abc", 3, "def"));
	failalloc_reset();
}

static void only_digits_within_the_range_are_an_integer(void **state)
{
	static const struct {
		const char *text;
		uint64_t min, max;
		bool ok;
		uint64_t value;
	} cases[] = {
	    {"0", 0, 10, true, 0},
	    {"10", 0, 10, true, 10},
	    {"0010", 0, 10, true, 10},
	    {"11", 0, 10, false, 0},
	    {"0", 1, 10, false, 0},
	    {"", 0, 10, false, 0},
	    {"-1", 0, 10, false, 0},
	    {"+1", 0, 10, false, 0},
	    {" 1", 0, 10, false, 0},
	    {"1 ", 0, 10, false, 0},
	    {"1x", 0, 10, false, 0},
	    {"65535", 1, 65535, true, 65535},
	    {"65536", 1, 65535, false, 0},
	    {"18446744073709551615", 0, UINT64_MAX, true, UINT64_MAX},
	    {"18446744073709551616", 0, UINT64_MAX, false, 0},
	    {"99999999999999999999999", 0, UINT64_MAX, false, 0},
	    {"5", 0, 3, false, 0},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t out = 12345;
		bool ok = presence_text_parse_uint(cases[i].text, strlen(cases[i].text),
		                                   cases[i].min, cases[i].max, &out);

		assert_int_equal(ok, cases[i].ok);
		assert_int_equal(out, cases[i].ok ? cases[i].value : 12345);
	}
	/* The length bounds the text: "12" of "123". */
	{
		uint64_t out = 0;

		assert_true(presence_text_parse_uint("123", 2, 0, 100, &out));
		assert_int_equal(out, 12);
	}
}

static void a_quote_keeps_short_text_and_cuts_long_text_at_a_character(void **state)
{
	char text[200];
	size_t i;

	(void)state;
	assert_int_equal(presence_text_quote_len("abc", 3), 3);
	memset(text, 'a', sizeof(text));
	assert_int_equal(presence_text_quote_len(text, PRESENCE_TEXT_QUOTE_MAX),
	                 PRESENCE_TEXT_QUOTE_MAX);
	assert_int_equal(presence_text_quote_len(text, sizeof(text)), PRESENCE_TEXT_QUOTE_MAX);
	/* "x" then two-byte characters: byte 64 is the middle of one, so the quote ends at 63. */
	text[0] = 'x';
	for (i = 1; i + 1 < sizeof(text); i += 2) {
		text[i] = (char)0xC3;
		text[i + 1] = (char)0xA9;
	}
	assert_int_equal(presence_text_quote_len(text, sizeof(text) - 1), 63);
}

static void the_monotonic_clock_does_not_go_back(void **state)
{
	int64_t a, b;

	(void)state;
	a = presence_clock_monotonic_ms();
	b = presence_clock_monotonic_ms();
	assert_true(b >= a);
	/* The wall clock reads (0 would be a failed clock_gettime). */
	assert_true(presence_clock_wall_ms() > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(a_copy_ends_in_a_nul_and_may_be_empty),
	    cmocka_unit_test(a_copy_without_memory_is_null),
	    cmocka_unit_test(only_digits_within_the_range_are_an_integer),
	    cmocka_unit_test(a_quote_keeps_short_text_and_cuts_long_text_at_a_character),
	    cmocka_unit_test(the_monotonic_clock_does_not_go_back),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
