/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * libFuzzer harness: presence_privacy_parse, presence_groups_parse and the may-see rule.
 *
 * The input is a groups file, a NUL byte, then a privacy payload. Invariants: a parse either
 * succeeds or fails with a message and no result; a parsed choice renders to a payload that
 * parses back to an equal choice; a user always sees itself; a choice never lets anyone see
 * more than the default (everyone) does under the same rule; nobody lets nobody else see.
 */
#include <string.h>

#include "fuzz.h"
#include "visibility.h"

static const char *const names[] = {"alice", "bob", "acme/s1", "acme/s2", "x", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	size_t groups_len = nul != NULL ? (size_t)(nul - data) : size;
	const char *payload = nul != NULL ? (const char *)nul + 1 : "";
	size_t payload_len = nul != NULL ? size - groups_len - 1 : 0;
	struct presence_groups *groups = NULL;
	struct presence_privacy *choice = NULL, *again = NULL;
	char err[PRESENCE_VISIBILITY_REASON_SIZE] = "";
	enum presence_err rc;

	rc = presence_groups_parse("fuzz", (const char *)data, groups_len, &groups, err,
	                           sizeof(err));
	FUZZ_CHECK((rc == PRESENCE_OK) == (groups != NULL));
	FUZZ_CHECK(rc == PRESENCE_OK || rc == PRESENCE_ERR_NOMEM || err[0] != '\0');
	err[0] = '\0';
	rc = presence_privacy_parse(payload, payload_len, &choice, err, sizeof(err));
	FUZZ_CHECK(rc == PRESENCE_OK || choice == NULL);
	FUZZ_CHECK(rc == PRESENCE_OK || rc == PRESENCE_ERR_NOMEM || err[0] != '\0');
	if (rc == PRESENCE_OK) {
		char *text = presence_privacy_render(choice);

		if (text != NULL) {
			FUZZ_CHECK(presence_privacy_parse(text, strlen(text), &again, err,
			                                  sizeof(err)) == PRESENCE_OK);
			FUZZ_CHECK(presence_privacy_equal(choice, again));
			free(text);
		}
		for (int rule = 0; rule < 2; rule++) {
			struct presence_visibility vis = {rule == 1, "/", NULL, 0};

			for (size_t w = 0; names[w] != NULL; w++) {
				for (size_t u = 0; names[u] != NULL; u++) {
					bool sees = presence_visibility_may_see(
					    &vis, groups, names[w], names[u], choice);
					bool open = presence_visibility_may_see(
					    &vis, groups, names[w], names[u], NULL);

					FUZZ_CHECK(w != u || sees);
					FUZZ_CHECK(!sees || open);
					FUZZ_CHECK(w == u || choice == NULL ||
					           choice->kind != PRESENCE_PRIVACY_NOBODY ||
					           !sees);
				}
			}
		}
	}
	presence_privacy_free(again);
	presence_privacy_free(choice);
	presence_groups_unref(groups);
	return 0;
}
