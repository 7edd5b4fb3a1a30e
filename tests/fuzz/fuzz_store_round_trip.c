/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * libFuzzer harness: save -> load -> save of registries built from the input.
 * The input is a list of operations, each: one op byte, then a name (one length byte and that
 * many bytes), then for writes a payload (one length byte (x 4) and that many bytes):
 *   op % 5 == 0: a session of name starts     1: a session of name ends
 *   2: set_key "k<op/5>" of name's state       3: merge into name's state
 *   4: publish every due document
 * Names that a broker would not track (empty, not UTF-8) are skipped. Every write goes through
 * the limits the plugin uses by default; the documents are then published and the registry
 * saved and read back.
 * Invariant: whatever the store writes, it reads back identically (fuzz_check_round_trip).
 */
#include "state.h"
#include "store_util.h"
#include "utf8.h"

static const struct presence_state_limits limits = {8192, 64, 32};

static void publish_due(struct presence_registry *reg, int64_t now)
{
	struct presence_document doc;
	struct presence_user *user;
	bool due;

	while ((user = presence_registry_dirty_next(reg)) != NULL) {
		FUZZ_CHECK(presence_registry_document_prepare(reg, user, now, &doc, &due) ==
		           PRESENCE_OK);
		if (due) {
			presence_registry_document_sent(reg, user);
		}
	}
	presence_registry_flush_done(reg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct presence_registry *reg = fuzz_registry();
	char name[256], reason[PRESENCE_STATE_REASON_SIZE];
	uintptr_t client = 16;
	size_t pos = 0;
	int64_t now = 1000;

	while (pos + 2 <= size) {
		uint8_t op = data[pos++];
		size_t name_len = data[pos++];
		const uint8_t *payload = NULL;
		size_t payload_len = 0;
		struct presence_user *user;
		bool changed;

		if (name_len > size - pos) {
			break;
		}
		memcpy(name, data + pos, name_len);
		name[name_len] = '\0';
		pos += name_len;
		if (op % 5 == 2 || op % 5 == 3) {
			if (pos >= size) {
				break;
			}
			payload_len = (size_t)data[pos++] * 4;
			if (payload_len > size - pos) {
				payload_len = size - pos;
			}
			payload = data + pos;
			pos += payload_len;
		}
		if (name_len == 0 || !presence_utf8_valid(name, name_len)) {
			continue;
		}
		switch (op % 5) {
		case 0:
			client += 16;
			FUZZ_CHECK(presence_registry_session_pending(reg, (const void *)client) ==
			           PRESENCE_OK);
			/* A name too long for a topic is refused; the broker would not track it. */
			(void)presence_registry_session_start(reg, (const void *)client, name);
			break;
		case 1:
			/* Every pointer above client is gone already, so it is never reused while
			 * tracked. */
			presence_registry_session_gone(reg, (const void *)client);
			if (client > 16) {
				client -= 16;
			}
			break;
		case 2:
		case 3:
			user = presence_registry_user_find(reg, name);
			if (user == NULL) {
				break;
			}
			if (op % 5 == 2) {
				char key[8];

				snprintf(key, sizeof(key), "k%u", (unsigned)(op / 5) % 100);
				(void)presence_state_set_key(presence_user_state(user), &limits,
				                             key, strlen(key), payload, payload_len,
				                             &changed, reason);
			} else {
				(void)presence_state_merge(presence_user_state(user), &limits,
				                           payload, payload_len, &changed, reason);
			}
			presence_registry_user_changed(reg, user);
			break;
		default:
			now += 1000;
			publish_due(reg, now);
			break;
		}
	}
	publish_due(reg, now + 1000);
	fuzz_check_round_trip(reg);
	presence_registry_free(reg);
	return 0;
}
