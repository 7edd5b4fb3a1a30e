/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * libFuzzer harness: a registry run with its state file as the plugin runs it, built from the
 * input, then read back. The input is a list of operations, each: one op byte, then a name (one
 * length byte and that many bytes), then for writes a payload (one length byte (x 4) and that
 * many bytes):
 *   op % 7 == 0: a session of name starts     1: a session of name ends
 *   2: set_key "k<op/7>" of name's state       3: merge into name's state
 *   4: publish every due document and flush the journal
 *   5: forget what is due (max_users is 8: the oldest idle users beyond it)
 *   6: one step of a compaction (begun when none runs)
 * Names that a broker would not track (empty, not UTF-8) are skipped. Every write goes through
 * the limits the plugin uses by default.
 * Invariants: after a clean stop, the files read back exactly the registry's users (fuzz_check_
 * same); and whatever the store writes, it reads back identically (fuzz_check_round_trip).
 */
#include "state.h"
#include "store_util.h"
#include "testing.h"
#include "utf8.h"

static const struct presence_state_limits limits = {8192, 64, 32};

/* Users the registry forgot: the store records them. */
static void release_forgotten(struct presence_registry *reg, struct presence_store *store)
{
	struct presence_user *user;

	while ((user = presence_registry_forgotten_take(reg)) != NULL) {
		presence_store_note_forget(store, user);
		presence_user_free(user);
	}
}

/* Publishes every due document (the store noted first), then flushes the journal. */
static void publish_due(struct presence_registry *reg, struct presence_store *store, int64_t now)
{
	char err[PRESENCE_STORE_ERR_SIZE] = "";
	struct presence_document doc;
	struct presence_user *user;
	bool due, added, done = false;

	release_forgotten(reg, store);
	while ((user = presence_registry_dirty_next(reg)) != NULL) {
		FUZZ_CHECK(presence_registry_document_prepare(reg, user, now, &doc, &due) ==
		           PRESENCE_OK);
		if (due) {
			fuzz_ok(presence_store_note_change(store, user, &added), "note", "");
			presence_registry_document_sent(reg, user);
		}
	}
	presence_registry_flush_done(reg);
	while (!done) {
		fuzz_ok(presence_store_flush_step(store, reg, 3, SIZE_MAX, &done, err, sizeof(err)),
		        "flush", err);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct presence_registry *reg = fuzz_registry(), *back;
	char name[256], reason[PRESENCE_STATE_REASON_SIZE], path[4096];
	char err[PRESENCE_STORE_ERR_SIZE] = "";
	struct presence_store_loaded loaded;
	struct presence_store *store;
	struct presence_seq_guard guard;
	uintptr_t client = 16;
	size_t pos = 0;
	int64_t now = 1000;
	bool finished;

	fuzz_path(path, "live.json");
	fuzz_clear(path);
	store = presence_store_new(path, PRESENCE_STORE_SEQ_MARGIN);
	FUZZ_CHECK(store != NULL);
	fuzz_ok(presence_store_load(store, reg, &loaded, err, sizeof(err)), "load", err);
	fuzz_ok(presence_store_start(store, reg, err, sizeof(err)), "start", err);
	guard.allows = presence_store_guard_allows;
	guard.arg = store;
	presence_registry_set_guard(reg, &guard);
	presence_registry_set_max_users(reg, 8);

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
		if (op % 7 == 2 || op % 7 == 3) {
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
		switch (op % 7) {
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
			if (op % 7 == 2) {
				char key[8];

				snprintf(key, sizeof(key), "k%u", (unsigned)(op / 7) % 100);
				(void)presence_state_set_key(presence_user_state(user), &limits,
				                             key, strlen(key), payload, payload_len,
				                             &changed, reason);
			} else {
				(void)presence_state_merge(presence_user_state(user), &limits,
				                           payload, payload_len, &changed, reason);
			}
			presence_registry_user_changed(reg, user);
			break;
		case 4:
			now += 1000;
			publish_due(reg, store, now);
			break;
		case 5:
			(void)presence_registry_forget_due(reg, 4);
			release_forgotten(reg, store);
			break;
		default:
			if (!presence_store_compacting(store)) {
				presence_store_request_compaction(store);
			}
			fuzz_ok(presence_store_compact_step(store, reg, 2, SIZE_MAX, &finished, err,
			                                    sizeof(err)),
			        "compaction", err);
			break;
		}
	}
	publish_due(reg, store, now + 1000);
	fuzz_ok(presence_store_stop(store, reg, err, sizeof(err)), "stop", err);
	presence_store_free(store);
	/* What the run wrote reads back as the registry is. */
	if (fuzz_load(path, &back, &loaded, err, sizeof(err)) != PRESENCE_OK) {
		fprintf(stderr, "the store could not read what it wrote: %s\n", err);
		abort();
	}
	FUZZ_CHECK(loaded.clean);
	fuzz_check_same(reg, back);
	presence_registry_free(back);
	fuzz_check_round_trip(reg);
	presence_registry_free(reg);
	return 0;
}
