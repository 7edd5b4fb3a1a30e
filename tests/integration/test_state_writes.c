/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Integration tests for state writes on a real Mosquitto 2.0: setting and removing keys, merge
 * patches, writes that change nothing, every rejection path, the consumption of state-write
 * messages, QoS 0/1/2 on MQTT 3.1.1 and 5, user names that need encoding, and the identity,
 * ignore_users and topic_prefix options. Everything is asserted through what real subscribers
 * receive.
 *
 * Absence is asserted without sleeping: documents are published at the end of the broker loop
 * iteration that saw the write, so after a round trip through the broker (client_sync) every
 * document or notice due for earlier writes has been delivered, and seq must continue without
 * a gap.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "rawmqtt.h"

/* Allow everything: these tests are about state writes, not logins or foreign ACLs. */
static const char *const open_conf = "plugin_opt_auth allow\nplugin_opt_acl allow\n";

/* The topic the tests publish their own ordering markers on. */
#define MARKER_TOPIC "marker/test"

/* ---------------------------------------------------------------------------------------- */
/* Setting keys and merging                                                                   */
/* ---------------------------------------------------------------------------------------- */

/* One set_key case: the payload published and the state it must leave. */
struct set_key_case {
	const char *payload;
	const char *state;
};

static void set_key_parses_json_or_takes_text(void **state)
{
	static const struct set_key_case cases[] = {
	    {"away", "{\"status\":\"away\"}"},
	    {"42", "{\"status\":42}"},
	    {"{\"a\":1}", "{\"status\":{\"a\":1}}"},
	    {"\"quoted\"", "{\"status\":\"quoted\"}"},
	    {"true", "{\"status\":true}"},
	    {"out to lunch", "{\"status\":\"out to lunch\"}"},
	    {"[1,\"two\"]", "{\"status\":[1,\"two\"]}"},
	    {"zo\xc3\xab \xe6\x97\xa5\xe6\x9c\xac", "{\"status\":\"zo\xc3\xab "
	                                            "\xe6\x97\xa5\xe6\x9c\xac\"}"},
	    {"false", "{\"status\":false}"},
	};
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *alice = client_connect_as(b, "alice1", "alice", 5);
	long seq;

	(void)state;
	seq = expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		publish_text_ok(alice, "presence/alice/state/status", cases[i].payload, 1);
		assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, cases[i].state),
		                 ++seq);
	}
	expect_nothing(w);

	client_disconnect(alice);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void empty_payload_and_null_remove_a_key(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *alice = client_connect_as(b, "alice1", "alice", 4);
	long seq;

	(void)state;
	seq = expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}"),
	                 ++seq);
	publish_text_ok(alice, "presence/alice/state/mood", "ok", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1,
	                            "{\"status\":\"away\",\"mood\":\"ok\"}"),
	                 ++seq);

	/* An empty payload removes the key. */
	expect_publish_ok(client_publish(alice, "presence/alice/state/status", "", 0, 1, false));
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"mood\":\"ok\"}"),
	                 ++seq);
	/* So does JSON null. */
	publish_text_ok(alice, "presence/alice/state/mood", "null", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), ++seq);
	expect_nothing(w);

	client_disconnect(alice);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void merge_patch_merges_nested_objects_and_null_deletes(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *alice = client_connect_as(b, "alice1", "alice", 5);
	long seq;

	(void)state;
	seq = expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	publish_text_ok(alice, "presence/alice/state",
	                "{\"status\":\"away\",\"device\":{\"name\":\"phone\",\"battery\":80},"
	                "\"tags\":[1,2]}",
	                1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1,
	                            "{\"status\":\"away\",\"device\":{\"name\":\"phone\","
	                            "\"battery\":80},\"tags\":[1,2]}"),
	                 ++seq);

	/* Objects merge recursively, null removes, anything else (an array too) replaces. */
	publish_text_ok(alice, "presence/alice/state",
	                "{\"device\":{\"battery\":null,\"os\":{\"v\":14}},\"status\":null,"
	                "\"tags\":[3],\"mood\":\"ok\"}",
	                1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1,
	                            "{\"device\":{\"name\":\"phone\",\"os\":{\"v\":14}},"
	                            "\"tags\":[3],\"mood\":\"ok\"}"),
	                 ++seq);

	/* An object replaced by a scalar, and a scalar replaced by an object. */
	publish_text_ok(alice, "presence/alice/state",
	                "{\"device\":\"none\",\"mood\":{\"x\":null}}", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1,
	                            "{\"device\":\"none\",\"tags\":[3],\"mood\":{}}"),
	                 ++seq);

	/* An empty payload on P/U/state clears the whole state. */
	expect_publish_ok(client_publish(alice, "presence/alice/state", "", 0, 1, false));
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), ++seq);
	expect_nothing(w);

	client_disconnect(alice);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void writes_that_change_nothing_publish_nothing(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *alice = client_connect_as(b, "alice1", "alice", 5);
	long seq;

	(void)state;
	seq = expect_doc(w, "presence/alice", "alice", true, 1, "{}");

	/* Removing what is not there, and clearing or merging into an empty state. */
	expect_publish_ok(client_publish(alice, "presence/alice/state/status", "", 0, 1, false));
	publish_text_ok(alice, "presence/alice/state/status", "null", 1);
	expect_publish_ok(client_publish(alice, "presence/alice/state", "", 0, 1, false));
	publish_text_ok(alice, "presence/alice/state", "{}", 1);
	publish_text_ok(alice, "presence/alice/state", "{\"gone\":null}", 1);
	expect_nothing(w);

	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}"),
	                 ++seq);

	/* The same write again, the same value written as JSON, and a merge that restates it. */
	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	publish_text_ok(alice, "presence/alice/state/status", "\"away\"", 1);
	publish_text_ok(alice, "presence/alice/state", "{\"status\":\"away\"}", 1);
	publish_text_ok(alice, "presence/alice/state/status", "away", 2);
	assert_int_equal(client_publish(alice, "presence/alice/state/status", "away", 4, 0, false),
	                 0);
	expect_nothing(w);

	/* The next change follows directly. */
	publish_text_ok(alice, "presence/alice/state/status", "back", 1);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"back\"}"),
	                 ++seq);
	expect_nothing(w);

	client_disconnect(alice);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* Sends the same PUBLISH (same packet id) twice, the second time with the DUP flag, as a
 * client retransmitting it would. */
static void send_publish_twice(int fd, const char *topic, const char *payload, int qos,
                               uint16_t mid)
{
	uint8_t packet[256];
	size_t len = 0;

	assert_int_equal(raw_build_publish(packet, sizeof(packet), &len, topic, payload,
	                                   strlen(payload), qos, false, mid),
	                 0);
	assert_int_equal(raw_write_all(fd, packet, len), 0);
	packet[0] |= 0x08;
	assert_int_equal(raw_write_all(fd, packet, len), 0);
}

static void retransmitted_qos1_and_qos2_writes_apply_once(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	uint8_t type, buf[64];
	size_t len;
	long seq;
	int fd;

	(void)state;
	fd = raw_open(broker_port(b));
	assert_true(fd >= 0);
	assert_int_equal(raw_send_connect(fd, "alice-raw", "alice", NULL, 60, true), 0);
	assert_int_equal(raw_read_packet(fd, &type, buf, sizeof(buf), &len, 5000), 0);
	assert_int_equal(RAW_TYPE(type), RAW_CONNACK);
	seq = expect_doc(w, "presence/alice", "alice", true, 1, "{}");

	/* QoS 1: two PUBACKs, one change. */
	send_publish_twice(fd, "presence/alice/state/status", "away", 1, 7);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(raw_read_packet(fd, &type, buf, sizeof(buf), &len, 5000), 0);
		assert_int_equal(RAW_TYPE(type), RAW_PUBACK);
	}
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}"),
	                 ++seq);
	expect_nothing(w);

	/* QoS 2: the PUBLISH twice before PUBREL; one change. */
	send_publish_twice(fd, "presence/alice/state", "{\"mood\":\"ok\"}", 2, 8);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(raw_read_packet(fd, &type, buf, sizeof(buf), &len, 5000), 0);
		assert_int_equal(RAW_TYPE(type), RAW_PUBREC);
	}
	assert_int_equal(raw_write_all(fd, (const uint8_t[]){0x62, 0x02, 0x00, 0x08}, 4), 0);
	assert_int_equal(raw_read_packet(fd, &type, buf, sizeof(buf), &len, 5000), 0);
	assert_int_equal(RAW_TYPE(type), RAW_PUBCOMP);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1,
	                            "{\"status\":\"away\",\"mood\":\"ok\"}"),
	                 ++seq);
	expect_nothing(w);

	assert_int_equal(raw_send_disconnect(fd), 0);
	assert_true(raw_wait_closed(fd, 5000));
	raw_close(fd);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), ++seq);

	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* ---------------------------------------------------------------------------------------- */
/* Rejections                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/*
 * A broker with alice and bob connected, ready for rejected writes:
 *   - w watches presence/alice (MQTT 5),
 *   - alice (MQTT 5, id alice1) writes; alice2 (MQTT 3.1.1, id alice2), her second session, is
 *     subscribed to presence/alice/error,
 *   - bob's sessions are subscribed to presence/alice/error (bob1, MQTT 5), presence/+/error
 *     (bob2, MQTT 5) and # (bob3, MQTT 3.1.1): none of them may ever receive alice's notices.
 * alice's state starts as {"status":"away"}.
 */
struct rejection_fixture {
	char *conf;
	struct broker *b;
	struct client *w;
	struct client *alice;
	struct client *alice2;
	struct client *bob[3];
	/* alice's last document's seq. */
	long seq;
	/* alice's state as of her last document, as JSON. */
	char state[512];
};

static void rejection_setup(struct rejection_fixture *f, const char *extra)
{
	static const char *const bob_filters[] = {"presence/alice/error", "presence/+/error", "#"};
	static const char *const bob_ids[] = {"bob1", "bob2", "bob3"};
	char lines[512];

	snprintf(lines, sizeof(lines), "%s%s", open_conf, extra != NULL ? extra : "");
	f->conf = broker_conf(lines);
	f->b = broker_start(f->conf);
	f->w = client_watch(f->b, "watcher", "presence/alice");
	f->alice = client_connect_as(f->b, "alice1", "alice", 5);
	assert_int_equal(expect_doc(f->w, "presence/alice", "alice", true, 1, "{}"), 1);
	f->alice2 = client_connect_as(f->b, "alice2", "alice", 4);
	assert_int_equal(client_subscribe(f->alice2, "presence/alice/error", 1), 1);
	assert_int_equal(expect_doc(f->w, "presence/alice", "alice", true, 2, "{}"), 2);
	for (int i = 0; i < 3; i++) {
		f->bob[i] = client_connect_as(f->b, bob_ids[i], "bob", i == 2 ? 4 : 5);
		assert_int_equal(client_subscribe(f->bob[i], bob_filters[i], 1), 1);
	}
	publish_text_ok(f->alice, "presence/alice/state/status", "away", 1);
	snprintf(f->state, sizeof(f->state), "{\"status\":\"away\"}");
	f->seq = expect_doc(f->w, "presence/alice", "alice", true, 2, f->state);
	assert_int_equal(f->seq, 3);
}

static void rejection_teardown(struct rejection_fixture *f)
{
	for (int i = 0; i < 3; i++) {
		client_disconnect(f->bob[i]);
	}
	client_disconnect(f->alice2);
	client_disconnect(f->alice);
	client_disconnect(f->w);
	broker_stop(f->b);
	free(f->conf);
}

/* A good write that changes alice's state, after which the document shows it. */
static void accepted_write(struct rejection_fixture *f, const char *topic, const char *payload,
                           const char *new_state)
{
	publish_text_ok(f->alice, topic, payload, 1);
	assert_int_equal(expect_doc(f->w, "presence/alice", "alice", true, 2, new_state), ++f->seq);
	snprintf(f->state, sizeof(f->state), "%s", new_state);
}

/*
 * Publishes a write (payload of len bytes on topic, by alice at QoS 1) that must be rejected,
 * and asserts everything the contract says about a rejection: the publisher sees success, the
 * state is unchanged and no document is published, the broker log has a warning naming
 * client id, user, topic and reason, alice's other session receives the notice
 * {"topic":...,"error":<reason>} on presence/alice/error, and none of bob's sessions receives
 * it. reason_part must occur in the reason; exact_notice (NULL = not checked) is the notice's
 * exact payload.
 */
static void rejected_write(struct rejection_fixture *f, const char *topic, const void *payload,
                           int len, const char *reason_part, const char *exact_notice)
{
	struct msg *m;
	cJSON *notice;
	const cJSON *item;
	char needle[1024];

	expect_publish_ok(client_publish(f->alice, topic, payload, len, 1, false));

	m = client_next_msg(f->alice2, 5000);
	if (m == NULL) {
		fail_msg("no rejection notice for a write to %s", topic);
	}
	assert_string_equal(m->topic, "presence/alice/error");
	assert_false(m->retain);
	if (exact_notice != NULL) {
		assert_int_equal(m->payloadlen, (int)strlen(exact_notice));
		assert_memory_equal(m->payload, exact_notice, strlen(exact_notice));
	}
	notice = msg_json(m);
	assert_int_equal(cJSON_GetArraySize(notice), 2);
	item = cJSON_GetObjectItemCaseSensitive(notice, "topic");
	assert_true(cJSON_IsString(item));
	assert_string_equal(item->valuestring, topic);
	assert_ptr_equal(notice->child, item);
	item = cJSON_GetObjectItemCaseSensitive(notice, "error");
	assert_true(cJSON_IsString(item));
	if (strstr(item->valuestring, reason_part) == NULL) {
		fail_msg("reason \"%s\" does not mention \"%s\"", item->valuestring, reason_part);
	}

	/* The warning names the client id, the user, the topic and the same reason. */
	snprintf(needle, sizeof(needle),
	         "rejected state write by client alice1 (user alice) to %s: %s", topic,
	         item->valuestring);
	if (!broker_log_wait(f->b, needle, 5000)) {
		char *log = broker_log(f->b);

		fail_msg("the log has no \"%s\":\n%s", needle, log);
	}
	cJSON_Delete(notice);
	msg_free(m);

	/* Nothing else: no second notice, no document, nothing for bob. */
	expect_nothing(f->alice2);
	expect_nothing(f->w);
	for (int i = 0; i < 3; i++) {
		expect_no_state_or_error_message(f->bob[i]);
	}
}

/* A rejected text write (NUL-terminated payload). */
static void rejected_text(struct rejection_fixture *f, const char *topic, const char *payload,
                          const char *reason_part)
{
	rejected_write(f, topic, payload, (int)strlen(payload), reason_part, NULL);
}

static void merge_that_is_not_an_object_is_rejected(void **state)
{
	static const char *const payloads[] = {"[1,2]", "\"text\"", "42",
	                                       "true",  "null",     "not json at all"};
	static const char *const exact =
	    "{\"topic\":\"presence/alice/state\",\"error\":\"state must be a JSON object\"}";
	struct rejection_fixture f = {0};

	(void)state;
	rejection_setup(&f, NULL);
	for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
		rejected_write(&f, "presence/alice/state", payloads[i], (int)strlen(payloads[i]),
		               "state must be a JSON object", exact);
	}
	/* The state is unchanged: the next good write shows it, with seq continuing. */
	accepted_write(&f, "presence/alice/state", "{\"mood\":\"ok\"}",
	               "{\"status\":\"away\",\"mood\":\"ok\"}");
	rejection_teardown(&f);
}

static void invalid_keys_are_rejected(void **state)
{
	char long_key[256];
	char topic[512];
	char patch[512];
	struct rejection_fixture f = {0};

	(void)state;
	rejection_setup(&f, NULL);

	/* A '/' in the key: everything after "state/" is the key. */
	rejected_text(&f, "presence/alice/state/a/b", "1", "invalid key");
	rejected_text(&f, "presence/alice/state/a/", "1", "invalid key");
	/* An empty key. */
	rejected_text(&f, "presence/alice/state/", "1", "invalid key");
	/* A key of 129 bytes. */
	memset(long_key, 'k', 129);
	long_key[129] = '\0';
	snprintf(topic, sizeof(topic), "presence/alice/state/%s", long_key);
	rejected_text(&f, topic, "1", "invalid key");
	/* The same rules for the top-level keys of a merge patch, which is rejected as a whole. */
	rejected_text(&f, "presence/alice/state", "{\"ok\":1,\"a/b\":1}", "invalid key");
	rejected_text(&f, "presence/alice/state", "{\"a+b\":1}", "invalid key");
	rejected_text(&f, "presence/alice/state", "{\"a#\":1}", "invalid key");
	rejected_text(&f, "presence/alice/state", "{\"\":1}", "invalid key");
	snprintf(patch, sizeof(patch), "{\"%s\":1}", long_key);
	rejected_text(&f, "presence/alice/state", patch, "invalid key");

	/* 128 bytes is allowed. */
	long_key[128] = '\0';
	snprintf(topic, sizeof(topic), "presence/alice/state/%s", long_key);
	snprintf(patch, sizeof(patch), "{\"status\":\"away\",\"%s\":1}", long_key);
	accepted_write(&f, topic, "1", patch);
	rejection_teardown(&f);
}

static void exceeding_max_keys_is_rejected(void **state)
{
	struct rejection_fixture f = {0};

	(void)state;
	rejection_setup(&f, "plugin_opt_max_keys 2\n");
	accepted_write(&f, "presence/alice/state/mood", "ok",
	               "{\"status\":\"away\",\"mood\":\"ok\"}");
	rejected_text(&f, "presence/alice/state/third", "3", "max_keys");
	rejected_text(&f, "presence/alice/state", "{\"third\":3}", "max_keys");
	/* Rejected as a whole: the change to mood is not applied either. */
	rejected_text(&f, "presence/alice/state", "{\"mood\":\"bad\",\"third\":3,\"fourth\":4}",
	              "max_keys");
	/* Replacing and swapping keys within the limit is fine. */
	accepted_write(&f, "presence/alice/state", "{\"mood\":null,\"third\":3}",
	               "{\"status\":\"away\",\"third\":3}");
	rejection_teardown(&f);
}

static void exceeding_max_state_bytes_is_rejected(void **state)
{
	char big[128];
	char patch[160];
	struct rejection_fixture f = {0};

	(void)state;
	rejection_setup(&f, "plugin_opt_max_state_bytes 64\n");
	/* {"status":"away","big":"xxx..."} with 50 x is 76 bytes. */
	memset(big, 'x', 50);
	big[50] = '\0';
	rejected_text(&f, "presence/alice/state/big", big, "max_state_bytes");
	snprintf(patch, sizeof(patch), "{\"big\":\"%s\"}", big);
	rejected_text(&f, "presence/alice/state", patch, "max_state_bytes");
	/* Exactly 64 bytes is allowed: {"status":"away","big":"..."} with 38 characters. */
	big[38] = '\0';
	snprintf(patch, sizeof(patch), "{\"status\":\"away\",\"big\":\"%s\"}", big);
	assert_int_equal(strlen(patch), 64);
	accepted_write(&f, "presence/alice/state/big", big, patch);
	rejected_text(&f, "presence/alice/state/more", "1", "max_state_bytes");
	rejection_teardown(&f);
}

/* Issue 11: a 2 KB write nested 998 levels deep was accepted, and the state file it made did not
 * load at the next start. Nesting beyond max_state_depth is now refused. */
static void nesting_deeper_than_max_state_depth_is_rejected(void **state)
{
	char deep[2100];
	struct rejection_fixture f = {0};

	(void)state;
	rejection_setup(&f, "plugin_opt_max_state_depth 3\n");
	/* The state object is level 1, so a key's value may nest 2 levels. */
	accepted_write(&f, "presence/alice/state/l", "[[1]]", "{\"status\":\"away\",\"l\":[[1]]}");
	rejected_text(&f, "presence/alice/state/m", "[[[1]]]",
	              "state would be nested 4 levels deep; max_state_depth is 3");
	rejected_text(&f, "presence/alice/state", "{\"m\":{\"n\":{\"o\":{}}}}",
	              "state would be nested 4 levels deep; max_state_depth is 3");
	/* The attack of the issue, at the default limit: refused. */
	memset(deep, '[', 998);
	memset(deep + 998, ']', 998);
	deep[1996] = '\0';
	rejected_text(&f, "presence/alice/state/a", deep, "max_state_depth");
	/* Brackets in strings are text. */
	accepted_write(&f, "presence/alice/state", "{\"l\":null,\"t\":\"[[[[[\"}",
	               "{\"status\":\"away\",\"t\":\"[[[[[\"}");
	rejection_teardown(&f);
}

/* Issue 11: {"a":null,"a":1,"b":2} applied twice reordered the keys and published a second
 * document; a QoS 1 resend did the same. A repeated member name is now refused. */
static void repeated_member_names_are_rejected(void **state)
{
	struct rejection_fixture f = {0};

	(void)state;
	rejection_setup(&f, NULL);
	rejected_text(&f, "presence/alice/state", "{\"a\":null,\"a\":1,\"b\":2}",
	              "payload repeats the member name \"a\"; names must be unique");
	rejected_text(&f, "presence/alice/state/k", "{\"x\":1,\"y\":{\"z\":1,\"z\":2}}",
	              "payload repeats the member name \"z\"");
	accepted_write(&f, "presence/alice/state", "{\"a\":1,\"b\":2}",
	               "{\"status\":\"away\",\"a\":1,\"b\":2}");
	rejection_teardown(&f);
}

static void payload_larger_than_four_times_max_state_bytes_is_rejected(void **state)
{
	char big[300];
	char patch[320];
	struct rejection_fixture f = {0};

	(void)state;
	rejection_setup(&f, "plugin_opt_max_state_bytes 64\n");
	/* More than 4 x max_state_bytes (257 bytes), as text, as a JSON string and inside a
	 * merge patch: refused before parsing, with the payload cap's reason. */
	memset(big, 'y', 257);
	big[257] = '\0';
	rejected_text(&f, "presence/alice/state/big", big, "max_state_bytes");
	snprintf(patch, sizeof(patch), "\"%s\"", big);
	rejected_text(&f, "presence/alice/state/big", patch, "max_state_bytes");
	snprintf(patch, sizeof(patch), "{\"big\":\"%s\"}", big);
	rejected_text(&f, "presence/alice/state", patch, "max_state_bytes");
	/* A merge whose result would fit but which white space makes larger than the cap. */
	memset(patch, ' ', sizeof(patch));
	memcpy(patch, "{\"a\":null", 9);
	memcpy(patch + 280, "}", 2);
	rejected_text(&f, "presence/alice/state", patch,
	              "payload is 281 bytes; at most 256 (4 x max_state_bytes) are accepted");
	accepted_write(&f, "presence/alice/state/mood", "ok",
	               "{\"status\":\"away\",\"mood\":\"ok\"}");
	rejection_teardown(&f);
}

static void payload_that_is_neither_json_nor_utf8_is_rejected(void **state)
{
	/* A lone continuation byte, a truncated sequence, an overlong '/', a UTF-16 surrogate,
	 * a code point beyond U+10FFFF, and bytes that are never UTF-8. */
	static const char *const payloads[] = {
	    "a\x80z", "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff\xfe"};
	struct rejection_fixture f = {0};

	(void)state;
	rejection_setup(&f, NULL);
	for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
		rejected_text(&f, "presence/alice/state/status", payloads[i], "UTF-8");
	}
	accepted_write(&f, "presence/alice/state/mood", "ok",
	               "{\"status\":\"away\",\"mood\":\"ok\"}");
	rejection_teardown(&f);
}

/* ---------------------------------------------------------------------------------------- */
/* Consumption                                                                                */
/* ---------------------------------------------------------------------------------------- */

/*
 * Reads what c receives up to the marker with payload marker on MARKER_TOPIC, and asserts that
 * all of it is alice's document (or documents): never a state-write message, a notice or
 * anything else. Returns the number of documents seen.
 */
static int read_until_marker(struct client *c, const char *marker)
{
	int docs = 0;

	for (;;) {
		struct msg *m = client_next_msg(c, 5000);

		if (m == NULL) {
			fail_msg("marker %s never arrived", marker);
		}
		if (strcmp(m->topic, MARKER_TOPIC) == 0 && m->payloadlen == (int)strlen(marker) &&
		    memcmp(m->payload, marker, strlen(marker)) == 0) {
			msg_free(m);
			return docs;
		}
		if (strcmp(m->topic, "presence/alice") != 0) {
			fail_msg("received %s (retain %d): %.*s", m->topic, m->retain,
			         m->payloadlen, m->payload);
		}
		docs++;
		msg_free(m);
	}
}

/* One write of the consumption test. */
struct consumed_case {
	const char *topic;
	const char *payload;
	int qos;
	bool retain;
	/* Whether the write changes the state (then the document comes before the marker). */
	bool changes;
};

/* Publishes one write of the consumption test and returns once the broker has acted on it. */
static void consumed_write(struct client *writer, int protocol, const struct consumed_case *wc)
{
	int rc = client_publish(writer, wc->topic, wc->payload, (int)strlen(wc->payload), wc->qos,
	                        wc->retain);

	if (protocol == 5) {
		expect_publish_ok(rc);
	} else {
		assert_int_equal(rc, 0);
	}
	/* A QoS 0 write has no acknowledgement: a round trip on the same connection makes sure
	 * the broker has processed it before the marker is sent. */
	assert_true(client_sync(writer, 5000));
}

static void state_writes_are_never_delivered_even_to_hash_subscribers(void **state)
{
	static const struct consumed_case cases[] = {
	    {"presence/alice/state/status", "away", 0, false, true},
	    {"presence/alice/state/status", "busy", 1, false, true},
	    {"presence/alice/state/status", "free", 2, false, true},
	    {"presence/alice/state/status", "free", 1, false, false},
	    {"presence/alice/state", "{\"mood\":\"ok\"}", 1, false, true},
	    {"presence/alice/state", "{\"mood\":\"ok\"}", 2, true, false},
	    {"presence/alice/state/retained1", "yes", 1, true, true},
	    {"presence/alice/state/retained2", "yes", 2, true, true},
	    {"presence/alice/state/retained0", "yes", 0, true, true},
	    {"presence/alice/state", "[\"rejected\"]", 1, true, false},
	    {"presence/alice/state/a/b", "rejected", 1, false, false},
	    {"presence/alice/state/status", "", 1, true, true},
	};
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *all = client_connect_as(b, "spy-all", NULL, 4);
	struct client *pres = client_connect_as(b, "spy-presence", NULL, 5);
	struct client *writers[2];
	struct client *fresh_all, *fresh_state;
	char marker[32];
	long seq;

	(void)state;
	assert_int_equal(client_subscribe(all, "#", 2), 2);
	assert_int_equal(client_subscribe(pres, "presence/#", 2), 2);
	assert_int_equal(client_subscribe(pres, MARKER_TOPIC, 2), 2);
	writers[0] = client_connect_as(b, "alice-v5", "alice", 5);
	seq = expect_doc(pres, "presence/alice", "alice", true, 1, "{}");
	writers[1] = client_connect_as(b, "alice-v3", "alice", 4);
	assert_int_equal(expect_doc(pres, "presence/alice", "alice", true, 2, "{}"), seq + 1);
	assert_int_equal(client_publish(writers[0], MARKER_TOPIC, "start", 5, 1, false), 0);
	assert_int_equal(read_until_marker(all, "start"), 2);
	assert_int_equal(read_until_marker(pres, "start"), 0);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct client *writer = writers[i % 2];

		consumed_write(writer, i % 2 == 0 ? 5 : 4, &cases[i]);
		snprintf(marker, sizeof(marker), "m%zu", i);
		publish_text_ok(writer, MARKER_TOPIC, marker, 1);
		assert_int_equal(read_until_marker(all, marker), cases[i].changes ? 1 : 0);
		assert_int_equal(read_until_marker(pres, marker), cases[i].changes ? 1 : 0);
	}
	expect_nothing(all);
	expect_nothing(pres);

	/* Nothing was retained: a fresh subscriber to everything gets alice's document and
	 * nothing else; one to her state topics gets nothing. */
	fresh_state = client_connect_as(b, "fresh-state", NULL, 5);
	assert_int_equal(client_subscribe(fresh_state, "presence/alice/state/#", 1), 1);
	assert_int_equal(client_subscribe(fresh_state, "presence/alice/state", 1), 1);
	expect_nothing(fresh_state);
	fresh_all = client_connect_as(b, "fresh-all", NULL, 4);
	assert_int_equal(client_subscribe(fresh_all, "#", 1), 1);
	expect_doc(fresh_all, "presence/alice", "alice", true, 2,
	           "{\"mood\":\"ok\",\"retained1\":\"yes\",\"retained2\":\"yes\","
	           "\"retained0\":\"yes\"}");
	expect_nothing(fresh_all);

	client_disconnect(fresh_all);
	client_disconnect(fresh_state);
	client_disconnect(writers[1]);
	client_disconnect(writers[0]);
	client_disconnect(pres);
	client_disconnect(all);
	broker_stop(b);
	free(conf);
}

static void state_writes_sent_with_retain_are_not_stored_by_the_broker(void **state)
{
	static const char *const persist = "persistence true\n"
	                                   "persistence_location @DIR@/\n";
	char extra[256];
	char *conf, *plain_conf, *dir;
	struct broker *b;
	struct broker_opts again = {0};
	struct client *w, *alice, *fresh;
	struct msg *m;

	(void)state;
	snprintf(extra, sizeof(extra), "%s%s", open_conf, persist);
	conf = broker_conf(extra);
	b = broker_start(conf);
	w = client_watch(b, "watcher", "presence/+");
	alice = client_connect_as(b, "alice1", "alice", 5);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 1);
	expect_publish_ok(client_publish(alice, "presence/alice/state/status", "away", 4, 1, true));
	expect_publish_ok(
	    client_publish(alice, "presence/alice/state", "{\"mood\":\"ok\"}", 13, 2, true));
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}"),
	                 2);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1,
	                            "{\"status\":\"away\",\"mood\":\"ok\"}"),
	                 3);
	/* A retained message outside the namespace is stored: proof that the database works. */
	expect_publish_ok(client_publish(alice, "other/retained", "kept", 4, 1, true));
	client_disconnect(alice);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), 4);
	client_disconnect(w);
	dir = strdup(broker_dir(b));
	assert_non_null(dir);
	broker_stop(b);

	/* The same database without the plugin, which would otherwise deny reading state
	 * topics: every retained message is visible. */
	again.dir = dir;
	plain_conf = broker_conf_without_plugin(persist);
	b = broker_start_opts(plain_conf, &again);
	fresh = client_connect_as(b, "fresh", NULL, 4);
	assert_int_equal(client_subscribe(fresh, "#", 1), 1);
	for (int i = 0; i < 2; i++) {
		m = client_next_msg(fresh, 5000);
		assert_non_null(m);
		assert_true(m->retain);
		if (strcmp(m->topic, "presence/alice") != 0 &&
		    strcmp(m->topic, "other/retained") != 0) {
			fail_msg("retained %s: %.*s", m->topic, m->payloadlen, m->payload);
		}
		msg_free(m);
	}
	expect_nothing(fresh);

	client_disconnect(fresh);
	broker_stop(b);
	free(plain_conf);
	free(dir);
	free(conf);
}

/* ---------------------------------------------------------------------------------------- */
/* QoS and protocol versions                                                                  */
/* ---------------------------------------------------------------------------------------- */

/* Asserts the acknowledgement of a state write: MQTT 3.1.1 and QoS 0 have no reason code
 * (client_publish returns 0); on MQTT 5, QoS 1 and 2 are answered 0, or 0x10 "no matching
 * subscribers" (sent by Mosquitto 2.0 itself), and never an error (0x80 or above). */
static void expect_write_acknowledged(int protocol, int qos, int rc)
{
	if (protocol == 4 || qos == 0) {
		assert_int_equal(rc, 0);
	} else if (rc != 0 && rc != MQTT_RC_NO_MATCHING_SUBSCRIBERS) {
		fail_msg("MQTT 5 QoS %d state write acknowledged with 0x%02x", qos, rc);
	}
}

static void qos_0_1_2_on_mqtt311_and_mqtt5_succeed_and_apply_once(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *sessions[2];
	char value[32], patch[64], expected[128];
	int prev_qos = -1;
	long seq;

	(void)state;
	sessions[0] = client_connect_as(b, "alice-v3", "alice", 4);
	seq = expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	sessions[1] = client_connect_as(b, "alice-v5", "alice", 5);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 2, "{}"), ++seq);

	for (int v = 0; v < 2; v++) {
		int protocol = v == 0 ? 4 : 5;

		for (int qos = 0; qos <= 2; qos++) {
			int rc;

			snprintf(value, sizeof(value), "v%d-qos%d", protocol, qos);
			rc = client_publish(sessions[v], "presence/alice/state/last", value,
			                    (int)strlen(value), qos, false);
			expect_write_acknowledged(protocol, qos, rc);
			if (prev_qos < 0) {
				snprintf(expected, sizeof(expected), "{\"last\":\"%s\"}", value);
			} else {
				snprintf(expected, sizeof(expected), "{\"last\":\"%s\",\"qos\":%d}",
				         value, prev_qos);
			}
			assert_int_equal(
			    expect_doc(w, "presence/alice", "alice", true, 2, expected), ++seq);

			snprintf(patch, sizeof(patch), "{\"qos\":%d}", qos);
			rc = client_publish(sessions[v], "presence/alice/state", patch,
			                    (int)strlen(patch), qos, false);
			expect_write_acknowledged(protocol, qos, rc);
			snprintf(expected, sizeof(expected), "{\"last\":\"%s\",\"qos\":%d}", value,
			         qos);
			assert_int_equal(
			    expect_doc(w, "presence/alice", "alice", true, 2, expected), ++seq);
			prev_qos = qos;
		}
	}
	/* Each write was applied once: no further document. */
	expect_nothing(w);

	client_disconnect(sessions[1]);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, expected), ++seq);
	client_disconnect(sessions[0]);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), ++seq);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* ---------------------------------------------------------------------------------------- */
/* User names, identity, ignored users, topic prefix                                         */
/* ---------------------------------------------------------------------------------------- */

/* A user name and its topic level. */
struct user_case {
	const char *name;
	const char *level;
};

static void usernames_that_need_encoding_get_their_own_topics(void **state)
{
	static const struct user_case cases[] = {
	    {"a/b+c#d%e", "a%2Fb%2Bc%23d%25e"},
	    {"zo\xc3\xab", "zo\xc3\xab"},
	    {"\xe6\x97\xa5\xe6\x9c\xac", "\xe6\x97\xa5\xe6\x9c\xac"},
	    {"100%", "100%25"},
	    {"a/b", "a%2Fb"},
	    {"a%2Fb", "a%252Fb"},
	    {"#", "%23"},
	    {"+", "%2B"},
	    {"with space", "with space"},
	};
	enum { N = sizeof(cases) / sizeof(cases[0]) };
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client *c[N];
	char id[16], topic[192], value[16], doc_topic[128], expected[64];

	(void)state;
	for (size_t i = 0; i < N; i++) {
		snprintf(id, sizeof(id), "user%zu", i);
		snprintf(doc_topic, sizeof(doc_topic), "presence/%s", cases[i].level);
		c[i] = client_connect_as(b, id, cases[i].name, i % 2 == 0 ? 5 : 4);
		/* One session each: no two of these names share a user. */
		assert_int_equal(expect_doc(w, doc_topic, cases[i].name, true, 1, "{}"), 1);

		snprintf(topic, sizeof(topic), "%s/state/k", doc_topic);
		snprintf(value, sizeof(value), "v%zu", i);
		publish_text_ok(c[i], topic, value, 1);
		snprintf(expected, sizeof(expected), "{\"k\":\"%s\"}", value);
		assert_int_equal(expect_doc(w, doc_topic, cases[i].name, true, 1, expected), 2);

		snprintf(topic, sizeof(topic), "%s/state", doc_topic);
		publish_text_ok(c[i], topic, "{\"m\":1}", 1);
		snprintf(expected, sizeof(expected), "{\"k\":\"%s\",\"m\":1}", value);
		assert_int_equal(expect_doc(w, doc_topic, cases[i].name, true, 1, expected), 3);
	}
	expect_nothing(w);
	for (size_t i = 0; i < N; i++) {
		snprintf(doc_topic, sizeof(doc_topic), "presence/%s", cases[i].level);
		client_disconnect(c[i]);
		assert_int_equal(expect_doc(w, doc_topic, cases[i].name, false, 0, "{}"), 4);
	}

	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void identity_clientid_tracks_sessions_by_client_id(void **state)
{
	char extra[256];
	char *conf;
	struct broker *b;
	struct client *w, *sensor, *dev_alice, *dev_bob;
	struct client_opts alice_opts = {.id = "dev", .username = "alice", .protocol = 5};
	struct client_opts bob_opts = {.id = "dev", .username = "bob", .protocol = 5};
	long seq;

	(void)state;
	snprintf(extra, sizeof(extra), "%splugin_opt_identity clientid\n", open_conf);
	conf = broker_conf(extra);
	b = broker_start(conf);
	/* The watcher is a session too: its own document comes first. */
	w = client_watch(b, "watcher", "presence/+");
	assert_int_equal(expect_doc(w, "presence/watcher", "watcher", true, 1, "{}"), 1);

	/* Without a username. */
	sensor = client_connect_as(b, "sensor-1", NULL, 4);
	assert_int_equal(expect_doc(w, "presence/sensor-1", "sensor-1", true, 1, "{}"), 1);
	publish_text_ok(sensor, "presence/sensor-1/state/temp", "21.5", 1);
	assert_int_equal(expect_doc(w, "presence/sensor-1", "sensor-1", true, 1, "{\"temp\":21.5}"),
	                 2);

	/* With a username: the client id is still the user. */
	dev_alice = client_connect(b, &alice_opts);
	seq = expect_doc(w, "presence/dev", "dev", true, 1, "{}");
	publish_text_ok(dev_alice, "presence/dev/state/owner", "alice", 1);
	assert_int_equal(expect_doc(w, "presence/dev", "dev", true, 1, "{\"owner\":\"alice\"}"),
	                 ++seq);
	/* Writing under the username is writing someone else's state. */
	assert_int_equal(client_publish(dev_alice, "presence/alice/state/x", "1", 1, 1, false),
	                 MQTT_RC_NOT_AUTHORIZED);
	expect_nothing(w);

	/* Another username with the same client id takes the session over: the same user, the
	 * same state, no document in between. */
	dev_bob = client_connect(b, &bob_opts);
	assert_true(client_wait_closed(dev_alice, 5000));
	expect_nothing(w);
	publish_text_ok(dev_bob, "presence/dev/state/next", "bob", 1);
	assert_int_equal(
	    expect_doc(w, "presence/dev", "dev", true, 1, "{\"owner\":\"alice\",\"next\":\"bob\"}"),
	    ++seq);
	assert_int_equal(client_publish(dev_bob, "presence/bob/state/x", "1", 1, 1, false),
	                 MQTT_RC_NOT_AUTHORIZED);
	expect_nothing(w);

	client_disconnect(dev_bob);
	assert_int_equal(expect_doc(w, "presence/dev", "dev", false, 0, "{}"), ++seq);
	client_disconnect(sensor);
	assert_int_equal(expect_doc(w, "presence/sensor-1", "sensor-1", false, 0, "{}"), 3);
	expect_nothing(w);

	client_drop(dev_alice);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void ignored_users_get_no_document_and_cannot_write_state(void **state)
{
	static const char *const topics[] = {"presence/svc/state/x", "presence/svc/state",
	                                     "presence/bridge1/state/x", "presence/bridge1/state"};
	char extra[256];
	char *conf;
	struct broker *b;
	struct client *w, *svc, *bridge, *bridge3, *alice;

	(void)state;
	snprintf(extra, sizeof(extra), "%splugin_opt_ignore_users svc, bridge1\n", open_conf);
	conf = broker_conf(extra);
	b = broker_start(conf);
	w = client_watch(b, "watcher", "presence/#");
	svc = client_connect_as(b, "svc-1", "svc", 5);
	bridge = client_connect_as(b, "bridge-1", "bridge1", 5);
	bridge3 = client_connect_as(b, "bridge-2", "bridge1", 4);
	expect_nothing(w);

	for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++) {
		struct client *c = i < 2 ? svc : bridge;

		assert_int_equal(client_publish(c, topics[i], "{}", 2, 1, false),
		                 MQTT_RC_NOT_AUTHORIZED);
		assert_int_equal(client_publish(c, topics[i], "{}", 2, 2, false),
		                 MQTT_RC_NOT_AUTHORIZED);
	}
	assert_int_equal(client_publish(bridge3, "presence/bridge1/state/x", "1", 1, 1, false), 0);
	expect_nothing(w);

	/* Everybody else is tracked as usual: alice's document is the first one published. */
	alice = client_connect_as(b, "alice1", "alice", 5);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", true, 1, "{}"), 1);
	client_disconnect(svc);
	client_disconnect(bridge);
	client_disconnect(bridge3);
	expect_nothing(w);

	client_disconnect(alice);
	assert_int_equal(expect_doc(w, "presence/alice", "alice", false, 0, "{}"), 2);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void topic_prefix_moves_documents_writes_and_notices(void **state)
{
	static const char *const exact =
	    "{\"topic\":\"acme/presence/alice/state\",\"error\":\"state must be a JSON object\"}";
	char extra[256];
	char *conf;
	struct broker *b;
	struct client *w, *plain, *alice, *alice2;
	struct msg *m;

	(void)state;
	snprintf(extra, sizeof(extra), "%splugin_opt_topic_prefix acme/presence\n", open_conf);
	conf = broker_conf(extra);
	b = broker_start(conf);
	w = client_watch(b, "watcher", "acme/presence/+");
	plain = client_connect_as(b, "plain", NULL, 5);
	assert_int_equal(client_subscribe(plain, "presence/#", 1), 1);

	alice = client_connect_as(b, "alice1", "alice", 5);
	assert_int_equal(expect_doc(w, "acme/presence/alice", "alice", true, 1, "{}"), 1);
	alice2 = client_connect_as(b, "alice2", "alice", 4);
	assert_int_equal(expect_doc(w, "acme/presence/alice", "alice", true, 2, "{}"), 2);
	assert_int_equal(client_subscribe(alice2, "acme/presence/alice/error", 1), 1);

	publish_text_ok(alice, "acme/presence/alice/state/status", "away", 1);
	assert_int_equal(
	    expect_doc(w, "acme/presence/alice", "alice", true, 2, "{\"status\":\"away\"}"), 3);
	publish_text_ok(alice, "acme/presence/alice/state", "{\"mood\":\"ok\"}", 1);
	assert_int_equal(expect_doc(w, "acme/presence/alice", "alice", true, 2,
	                            "{\"status\":\"away\",\"mood\":\"ok\"}"),
	                 4);

	/* A rejection notice goes to P/U/error under the prefix. */
	publish_text_ok(alice, "acme/presence/alice/state", "[]", 1);
	m = client_wait_msg(alice2, 5000);
	assert_non_null(m);
	assert_string_equal(m->topic, "acme/presence/alice/error");
	assert_int_equal(m->payloadlen, (int)strlen(exact));
	assert_memory_equal(m->payload, exact, strlen(exact));
	msg_free(m);

	/* The default prefix is now an ordinary topic: delivered, and no state change. */
	assert_int_equal(client_publish(alice, "presence/alice/state/status", "x", 1, 1, false), 0);
	m = client_wait_msg(plain, 5000);
	assert_non_null(m);
	assert_string_equal(m->topic, "presence/alice/state/status");
	msg_free(m);
	expect_nothing(plain);
	expect_nothing(w);

	client_disconnect(alice2);
	assert_int_equal(expect_doc(w, "acme/presence/alice", "alice", true, 1,
	                            "{\"status\":\"away\",\"mood\":\"ok\"}"),
	                 5);
	client_disconnect(alice);
	assert_int_equal(expect_doc(w, "acme/presence/alice", "alice", false, 0, "{}"), 6);
	client_disconnect(plain);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_teardown(name, harness_teardown)
	    T(set_key_parses_json_or_takes_text),
	    T(empty_payload_and_null_remove_a_key),
	    T(merge_patch_merges_nested_objects_and_null_deletes),
	    T(writes_that_change_nothing_publish_nothing),
	    T(retransmitted_qos1_and_qos2_writes_apply_once),
	    T(merge_that_is_not_an_object_is_rejected),
	    T(invalid_keys_are_rejected),
	    T(exceeding_max_keys_is_rejected),
	    T(exceeding_max_state_bytes_is_rejected),
	    T(nesting_deeper_than_max_state_depth_is_rejected),
	    T(repeated_member_names_are_rejected),
	    T(payload_larger_than_four_times_max_state_bytes_is_rejected),
	    T(payload_that_is_neither_json_nor_utf8_is_rejected),
	    T(state_writes_are_never_delivered_even_to_hash_subscribers),
	    T(state_writes_sent_with_retain_are_not_stored_by_the_broker),
	    T(qos_0_1_2_on_mqtt311_and_mqtt5_succeed_and_apply_once),
	    T(usernames_that_need_encoding_get_their_own_topics),
	    T(identity_clientid_tracks_sessions_by_client_id),
	    T(ignored_users_get_no_document_and_cannot_write_state),
	    T(topic_prefix_moves_documents_writes_and_notices),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
