/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * libFuzzer harness: presence_config_parse of arbitrary options.
 * The input is split into lines; each line is "key=value" (a line without '=' is a key with an
 * empty value). Invariants: a refusal explains itself and leaves the config empty; an accepted
 * config has every value in its documented range and describes itself in a NUL-terminated
 * line of the length presence_config_describe returns.
 */
#include <string.h>

#include "config.h"
#include "fuzz.h"

#define MAX_OPTIONS 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct presence_option opts[MAX_OPTIONS];
	struct presence_config cfg;
	char err[1024], describe[2048];
	char *text = malloc(size + 1);
	char *line, *next;
	size_t count = 0;
	int n;

	FUZZ_CHECK(text != NULL);
	memcpy(text, data, size);
	text[size] = '\0';
	for (line = text; line != NULL && count < MAX_OPTIONS; line = next) {
		char *eq;

		next = strchr(line, '\n');
		if (next != NULL) {
			*next++ = '\0';
		}
		eq = strchr(line, '=');
		if (eq != NULL) {
			*eq = '\0';
		}
		opts[count].key = line;
		opts[count].value = eq != NULL ? eq + 1 : "";
		count++;
	}
	err[0] = '\0';
	if (presence_config_parse(&cfg, opts, count, err, sizeof(err)) != PRESENCE_OK) {
		FUZZ_CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
	} else {
		FUZZ_CHECK(cfg.max_state_depth >= 1 && cfg.max_state_depth <= 128);
		FUZZ_CHECK(cfg.max_query_reply_bytes >= 1024 &&
		           cfg.max_query_reply_bytes <= 67108864);
		FUZZ_CHECK(cfg.max_query_users >= 1 && cfg.max_query_users <= 100000);
		FUZZ_CHECK(cfg.max_keys >= 1 && cfg.max_state_bytes >= 2);
		FUZZ_CHECK(cfg.topic_prefix != NULL &&
		           strlen(cfg.topic_prefix) == cfg.topic_prefix_len);
		n = presence_config_describe(&cfg, describe, sizeof(describe));
		FUZZ_CHECK(n >= 0);
		FUZZ_CHECK((size_t)n >= sizeof(describe) || strlen(describe) == (size_t)n);
		presence_config_free(&cfg);
	}
	free(text);
	return 0;
}
