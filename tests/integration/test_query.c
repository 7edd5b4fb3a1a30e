/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Integration tests for the query API ($CONTROL/presence/v1) and the $SYS metrics, on a real
 * Mosquitto 2.0 with real MQTT 3.1.1 and 5 clients.
 *
 * Responses are compared byte for byte: a known user's entry must be exactly the retained
 * document a presence/+ subscriber received, with ,"known":true before its closing brace.
 *
 * Absence is asserted without sleeping. A query is answered by a publish made while the broker
 * handles the request and delivered at the start of its next loop iteration, so after the
 * requester has its response, a round trip through the broker by another client (client_sync)
 * has passed that delivery: had that client been sent a copy, it would be queued by then.
 * Metrics are published in a fixed order once per interval, so whether an unchanged value was
 * published again shows in the order of what arrives (see the metrics tests).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "rawmqtt.h"

/* Allow every login and every topic outside the plugin's own rules. */
static const char *const open_conf = "plugin_opt_auth allow\nplugin_opt_acl allow\n";

#define CONTROL "$CONTROL/presence/v1"
#define FALLBACK "$CONTROL/presence/v1/response"
#define SYS "$SYS/broker/presence/"

/* Waits for the next message on c, asserts it is on topic and returns its payload as a string
 * (the caller frees it). */
static char *take_payload(struct client *c, const char *topic)
{
	struct msg *m = client_wait_msg(c, 5000);
	char *payload;

	if (m == NULL) {
		fail_msg("expected a message on %s, got nothing", topic);
	}
	if (strcmp(m->topic, topic) != 0) {
		fail_msg("expected a message on %s, got one on %s: %.*s", topic, m->topic,
		         m->payloadlen, m->payload);
	}
	payload = strdup(m->payload);
	assert_non_null(payload);
	msg_free(m);
	return payload;
}

/* Returns document (a presence document as published) with ,"known":true before its closing
 * brace, as a query answers it; the caller frees it. */
static char *known(const char *document)
{
	size_t len = strlen(document);
	char *text = malloc(len + sizeof(",\"known\":true"));

	assert_non_null(text);
	assert_true(len > 0 && document[len - 1] == '}');
	memcpy(text, document, len - 1);
	memcpy(text + len - 1, ",\"known\":true}", sizeof(",\"known\":true}"));
	return text;
}

/* Publishes request on $CONTROL/presence/v1 and returns the acknowledgement's reason code. */
static int send_request(struct client *c, const char *request, int qos,
                        const mosquitto_property *props)
{
	return client_publish_props(c, CONTROL, request, (int)strlen(request), qos, false, props);
}

/* Waits for the response on c, asserts its topic, that it is JSON equal to expected (compared
 * parsed first, for a readable failure, then byte for byte) and marked as JSON for MQTT 5, not
 * retained. Returns the message for further checks (free with msg_free). */
static struct msg *expect_response(struct client *c, const char *topic, const char *expected)
{
	struct msg *m = client_wait_msg(c, 5000);
	cJSON *want, *got;

	if (m == NULL) {
		fail_msg("expected a response on %s, got nothing", topic);
	}
	if (strcmp(m->topic, topic) != 0) {
		fail_msg("expected a response on %s, got a message on %s: %.*s", topic, m->topic,
		         m->payloadlen, m->payload);
	}
	want = cJSON_Parse(expected);
	assert_non_null(want);
	got = msg_json(m);
	if (!cJSON_Compare(want, got, true)) {
		fail_msg("response on %s:\n  got      %s\n  expected %s", topic, m->payload,
		         expected);
	}
	cJSON_Delete(want);
	cJSON_Delete(got);
	assert_string_equal(m->payload, expected);
	assert_false(m->retain);
	return m;
}

/* Properties of an MQTT 5 request: a response topic (NULL = none) and correlation data (NULL =
 * none). The caller frees them with mosquitto_property_free_all. */
static mosquitto_property *request_props(const char *response_topic, const void *correlation,
                                         int correlation_len)
{
	mosquitto_property *props = NULL;

	if (response_topic != NULL) {
		assert_int_equal(
		    mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, response_topic),
		    MOSQ_ERR_SUCCESS);
	}
	if (correlation != NULL) {
		assert_int_equal(mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA,
		                                               correlation,
		                                               (uint16_t)correlation_len),
		                 MOSQ_ERR_SUCCESS);
	}
	return props;
}

/* Appends an MQTT variable byte integer, a two-byte length or a length-prefixed field. */
static void put_varint(uint8_t *buf, size_t *len, size_t value)
{
	do {
		uint8_t byte = (uint8_t)(value % 128);

		value /= 128;
		buf[(*len)++] = value > 0 ? (uint8_t)(byte | 0x80) : byte;
	} while (value > 0);
}

static void put_u16(uint8_t *buf, size_t *len, size_t value)
{
	buf[(*len)++] = (uint8_t)(value >> 8);
	buf[(*len)++] = (uint8_t)(value & 0xff);
}

static void put_field(uint8_t *buf, size_t *len, const char *text)
{
	size_t n = strlen(text);

	put_u16(buf, len, n);
	memcpy(buf + *len, text, n);
	*len += n;
}

/* Connects a raw MQTT 5 client with client id `id` (clean start, no credentials) and sends one
 * QoS 1 request (packet id 1) whose Response Topic is response_topic and whose Correlation Data
 * is "k". libmosquitto 2.1 refuses to send a Response Topic with a wildcard, which is why this
 * is raw. Returns the socket once the CONNACK was a success; the caller closes it. */
static int send_raw_v5_request(int port, const char *id, const char *response_topic,
                               const char *request)
{
	uint8_t body[1024], packet[1100], type;
	size_t len = 0, n = 0, props = 0;
	int fd = raw_open(port);

	assert_true(fd >= 0);
	assert_true(strlen(id) + strlen(response_topic) + strlen(request) + 64 < sizeof(body));
	/* CONNECT: protocol name and level 5, clean start, keepalive 60, no properties, the id. */
	put_field(body, &n, "MQTT");
	body[n++] = 5;
	body[n++] = 0x02;
	put_u16(body, &n, 60);
	put_varint(body, &n, 0);
	put_field(body, &n, id);
	packet[len++] = (uint8_t)(RAW_CONNECT << 4);
	put_varint(packet, &len, n);
	memcpy(packet + len, body, n);
	len += n;
	assert_int_equal(raw_write_all(fd, packet, len), 0);
	assert_int_equal(raw_read_packet(fd, &type, body, sizeof(body), &n, 5000), 0);
	assert_int_equal(RAW_TYPE(type), RAW_CONNACK);
	assert_true(n >= 2);
	assert_int_equal(body[1], 0);
	/* PUBLISH at QoS 1: topic, packet id, properties (Response Topic 0x08, Correlation Data
	 * 0x09), payload. */
	n = 0;
	put_field(body, &n, CONTROL);
	put_u16(body, &n, 1);
	props = 1 + 2 + strlen(response_topic) + 1 + 2 + 1;
	put_varint(body, &n, props);
	body[n++] = MQTT_PROP_RESPONSE_TOPIC;
	put_field(body, &n, response_topic);
	body[n++] = MQTT_PROP_CORRELATION_DATA;
	put_field(body, &n, "k");
	memcpy(body + n, request, strlen(request));
	n += strlen(request);
	len = 0;
	packet[len++] = (uint8_t)((RAW_PUBLISH << 4) | (1 << 1));
	put_varint(packet, &len, n);
	memcpy(packet + len, body, n);
	len += n;
	assert_int_equal(raw_write_all(fd, packet, len), 0);
	return fd;
}

/* Reads the raw connection's packets (skipping PUBACKs, 5000 ms each) up to a PUBLISH and
 * asserts that it is on topic, with Correlation Data "k" and the payload expected. */
static void expect_raw_response(int fd, const char *topic, const char *expected)
{
	uint8_t buf[4096], type;
	size_t n, at, end, len;
	size_t props_len = 0;
	unsigned shift = 0;
	bool correlation = false;

	do {
		assert_int_equal(raw_read_packet(fd, &type, buf, sizeof(buf), &n, 5000), 0);
	} while (RAW_TYPE(type) == RAW_PUBACK);
	assert_int_equal(RAW_TYPE(type), RAW_PUBLISH);
	assert_true(n >= 2);
	len = (size_t)buf[0] << 8 | buf[1];
	assert_true(2 + len <= n);
	assert_true(len == strlen(topic) && memcmp(buf + 2, topic, len) == 0);
	at = 2 + len + (((type >> 1) & 3) ? 2 : 0);
	do {
		assert_true(at < n);
		props_len |= (size_t)(buf[at] & 0x7f) << shift;
		shift += 7;
	} while (buf[at++] & 0x80);
	end = at + props_len;
	assert_true(end <= n);
	/* The properties a response carries: payload format, content type, correlation data. */
	while (at < end) {
		uint8_t id = buf[at++];

		if (id == MQTT_PROP_PAYLOAD_FORMAT_INDICATOR) {
			at += 1;
			continue;
		}
		assert_true(id == MQTT_PROP_CONTENT_TYPE || id == MQTT_PROP_CORRELATION_DATA);
		assert_true(at + 2 <= end);
		len = (size_t)buf[at] << 8 | buf[at + 1];
		if (id == MQTT_PROP_CORRELATION_DATA)
			correlation = len == 1 && buf[at + 2] == 'k';
		at += 2 + len;
	}
	assert_true(correlation);
	assert_int_equal(n - end, strlen(expected));
	assert_memory_equal(buf + end, expected, strlen(expected));
}

static void known_offline_unknown_and_repeated_names_get_their_retained_documents(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client_opts alice_o = {.id = "alice1", .username = "alice"};
	struct client_opts bob_o = {.id = "bob1", .username = "bob", .protocol = 5};
	struct client_opts q_o = {.id = "querier", .protocol = 5};
	static const char correlation[] = {0, 1, 'c', 'o', (char)0xff};
	const char *request = "{\"commands\":[{\"command\":\"getPresence\",\"correlationData\":"
	                      "\"c-1\",\"usernames\":[\"alice\",\"bob\",\"zed\",\"alice\"]}]}";
	const char *patch = "{\"status\":\"away\",\"n\":[1.5,null]}";
	char *alice_doc, *bob_doc, *alice_known, *bob_known;
	struct client *alice, *bob, *q;
	mosquitto_property *props;
	char expected[4096];
	struct msg *m;
	int qos;

	(void)state;
	alice = client_connect(b, &alice_o);
	free(take_payload(w, "presence/alice"));
	assert_int_equal(
	    client_publish(alice, "presence/alice/state", patch, (int)strlen(patch), 1, false), 0);
	alice_doc = take_payload(w, "presence/alice");
	bob = client_connect(b, &bob_o);
	free(take_payload(w, "presence/bob"));
	client_disconnect(bob);
	bob_doc = take_payload(w, "presence/bob");
	alice_known = known(alice_doc);
	bob_known = known(bob_doc);
	snprintf(expected, sizeof(expected),
	         "{\"responses\":[{\"command\":\"getPresence\",\"presences\":[%s,%s,"
	         "{\"username\":\"zed\",\"available\":false,\"known\":false}],"
	         "\"correlationData\":\"c-1\"}]}",
	         alice_known, bob_known);

	q = client_connect(b, &q_o);
	assert_int_equal(client_subscribe(q, "replies/querier", 2), 2);
	props = request_props("replies/querier", correlation, (int)sizeof(correlation));
	/* The response is QoS 0 whatever the request's QoS (alice asked twice is answered
	 * once). */
	for (qos = 0; qos <= 2; qos++) {
		assert_int_equal(send_request(q, request, qos, props), 0);
		m = expect_response(q, "replies/querier", expected);
		assert_int_equal(m->qos, 0);
		assert_int_equal(m->payload_format, 1);
		assert_string_equal(m->content_type, "application/json");
		assert_int_equal(m->correlation_len, (int)sizeof(correlation));
		assert_memory_equal(m->correlation, correlation, sizeof(correlation));
		assert_null(m->response_topic);
		msg_free(m);
	}
	/* One response per request, although the requester also subscribed to its topic. */
	expect_nothing(q);
	mosquitto_property_free_all(&props);

	free(alice_doc);
	free(bob_doc);
	free(alice_known);
	free(bob_known);
	client_disconnect(q);
	client_disconnect(alice);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void without_a_usable_response_topic_the_answer_goes_to_the_fallback_topic(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client_opts carol_o = {.id = "carol1", .username = "carol"};
	struct client_opts q5_o = {.id = "q5", .protocol = 5};
	const char *request =
	    "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[\"carol\"]}]}";
	static const struct {
		const char *topic;
		const char *why;
	} refused[] = {
	    {"presence/carol", "is inside the plugin's namespace"},
	    {"presence/carol/state", "is inside the plugin's namespace"},
	    {"presence/", "is inside the plugin's namespace"},
	    {"$SYS/broker/presence/users/known", "starts with '$'"},
	    {"$CONTROL/presence/v1", "starts with '$'"},
	};
	struct client *carol, *q5;
	mosquitto_property *props;
	char *carol_doc, *carol_known;
	char expected[2048];
	struct msg *m;

	(void)state;
	/* MQTT 3.1.1 has no response topic: the requester is carol herself, who is known. */
	carol = client_connect(b, &carol_o);
	carol_doc = take_payload(w, "presence/carol");
	carol_known = known(carol_doc);
	snprintf(expected, sizeof(expected),
	         "{\"responses\":[{\"command\":\"getPresence\",\"presences\":[%s]}]}", carol_known);
	assert_int_equal(client_subscribe(carol, FALLBACK, 1), 1);
	assert_int_equal(send_request(carol, request, 1, NULL), 0);
	m = expect_response(carol, FALLBACK, expected);
	assert_int_equal(m->qos, 0);
	msg_free(m);

	/* MQTT 5 without a response topic, and with one that is not a valid publish topic: the
	 * fallback topic, with the correlation data copied all the same. */
	q5 = client_connect(b, &q5_o);
	assert_int_equal(client_subscribe(q5, FALLBACK, 1), 1);
	assert_int_equal(send_request(q5, request, 1, NULL), 0);
	m = expect_response(q5, FALLBACK, expected);
	assert_null(m->correlation);
	assert_int_equal(m->payload_format, 1);
	msg_free(m);
	/* Inside the plugin's namespace or under $: refused like a wildcard below (issue 11). A
	 * targeted answer needs no subscription, so q5 would receive it on any of these. */
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		char line[256];

		props = request_props(refused[i].topic, "r", 1);
		assert_int_equal(send_request(q5, request, 1, props), 0);
		m = expect_response(q5, FALLBACK, expected);
		assert_int_equal(m->correlation_len, 1);
		msg_free(m);
		mosquitto_property_free_all(&props);
		snprintf(line, sizeof(line),
		         "names the response topic \"%s\", which %s; answering on",
		         refused[i].topic, refused[i].why);
		assert_true(broker_log_wait(b, line, 5000));
	}
	/* The fallback topic itself, as the README's mosquitto_rr -e names it: answered there
	 * without a notice (it starts with '$', but it is where the answer goes anyway). */
	props = request_props(FALLBACK, "f", 1);
	assert_int_equal(send_request(q5, request, 1, props), 0);
	m = expect_response(q5, FALLBACK, expected);
	assert_int_equal(m->correlation_len, 1);
	assert_memory_equal(m->correlation, "f", 1);
	msg_free(m);
	mosquitto_property_free_all(&props);
	assert_false(broker_log_contains(b, "names the response topic \"" FALLBACK "\""));
	/* A Response Topic with a wildcard. Mosquitto before 2.0.20 passes the request on, and the
	 * answer goes to the fallback topic with the correlation data. 2.0.20 and later refuse it
	 * as a protocol error ("Don't allow invalid response-topic values") and close the
	 * connection, so the plugin never sees the request and nobody gets an answer. */
	if (harness_broker_version() < HARNESS_MOSQUITTO_VERSION(2, 0, 20)) {
		props = request_props("replies/+", "k", 1);
		assert_int_equal(send_request(q5, request, 1, props), 0);
		m = expect_response(q5, FALLBACK, expected);
		assert_int_equal(m->correlation_len, 1);
		assert_memory_equal(m->correlation, "k", 1);
		msg_free(m);
		mosquitto_property_free_all(&props);
		assert_true(
		    broker_log_wait(b,
		                    "names the response topic \"replies/+\", which is not a "
		                    "valid publish topic",
		                    5000));
	} else {
		int fd;

		/* The same raw request with a valid Response Topic is answered, so what closes the
		 * connection below is the wildcard, not the raw encoding. */
		fd = send_raw_v5_request(broker_port(b), "q5raw", "replies/raw", request);
		expect_raw_response(fd, "replies/raw", expected);
		raw_close(fd);
		fd = send_raw_v5_request(broker_port(b), "q5raw", "replies/+", request);
		assert_true(raw_wait_closed(fd, 5000));
		raw_close(fd);
		assert_false(broker_log_contains(b, "names the response topic \"replies/+\""));
	}
	expect_nothing(q5);
	expect_nothing(carol);

	free(carol_doc);
	free(carol_known);
	client_disconnect(q5);
	client_disconnect(carol);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void no_other_client_receives_a_response_whatever_it_subscribes_to(void **state)
{
	char *conf = broker_conf(open_conf);
	struct broker *b = broker_start(conf);
	struct client_opts eve_o = {.id = "eve", .protocol = 5};
	struct client_opts q5_o = {.id = "q5", .protocol = 5};
	struct client_opts q4_o = {.id = "q4"};
	static const char *const filters[] = {
	    "#", "$CONTROL/#", "$CONTROL/presence/v1/#", FALLBACK, "replies/q5", "replies/#", "+/+",
	};
	const char *request =
	    "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[\"x\"]}]}";
	const char *expected = "{\"responses\":[{\"command\":\"getPresence\",\"presences\":["
	                       "{\"username\":\"x\",\"available\":false,\"known\":false}]}]}";
	struct client *eve, *q5, *q4;
	mosquitto_property *props = request_props("replies/q5", "id", 2);
	size_t i;

	(void)state;
	eve = client_connect(b, &eve_o);
	for (i = 0; i < sizeof(filters) / sizeof(filters[0]); i++) {
		assert_int_equal(client_subscribe(eve, filters[i], 1), 1);
	}
	client_drain(eve);

	/* The requesters have no username, so they are not users: they cause no document. */
	q5 = client_connect(b, &q5_o);
	q4 = client_connect(b, &q4_o);
	assert_int_equal(client_subscribe(q5, "replies/q5", 1), 1);
	assert_int_equal(client_subscribe(q4, FALLBACK, 1), 1);
	assert_int_equal(send_request(q5, request, 1, props), 0);
	msg_free(expect_response(q5, "replies/q5", expected));
	assert_int_equal(send_request(q5, request, 1, NULL), 0);
	msg_free(expect_response(q5, FALLBACK, expected));
	assert_int_equal(send_request(q4, request, 1, NULL), 0);
	msg_free(expect_response(q4, FALLBACK, expected));
	/* eve got neither the requests (never delivered) nor the responses (targeted). */
	expect_nothing(eve);
	/* A request is not retained either, even when it asks to be. */
	assert_int_equal(client_publish(q4, CONTROL, request, (int)strlen(request), 1, true), 0);
	msg_free(expect_response(q4, FALLBACK, expected));
	expect_nothing(eve);
	assert_int_equal(client_subscribe(eve, "$CONTROL/presence/v1", 1), 1);
	expect_nothing(eve);

	mosquitto_property_free_all(&props);
	client_disconnect(q4);
	client_disconnect(q5);
	client_disconnect(eve);
	broker_stop(b);
	free(conf);
}

/*
 * Issue 11: a 9 KB request naming alice 1000 times got an 8.2 MB reply. Each distinct name is
 * now answered once, and a command whose answer would take the reply over
 * max_query_reply_bytes gets an error while the others are answered.
 */
static void replies_answer_each_name_once_within_the_byte_budget(void **state)
{
	char *conf = broker_conf("plugin_opt_auth allow\nplugin_opt_acl allow\n"
	                         "plugin_opt_max_query_reply_bytes 4096\n");
	struct broker *b = broker_start(conf);
	struct client *w = client_watch(b, "watcher", "presence/+");
	struct client_opts q_o = {.id = "querier", .protocol = 5};
	struct client *alice, *bob, *q;
	char big[3001];
	char *request;
	size_t size = 256 + 1000 * sizeof("\"alice\",");
	size_t len = 0;
	cJSON *reply, *responses, *first, *second;
	struct msg *m;

	(void)state;
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	alice = client_connect_as(b, "alice1", "alice", 5);
	bob = client_connect_as(b, "bob1", "bob", 5);
	expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	expect_doc(w, "presence/bob", "bob", true, 1, "{}");
	publish_text_ok(alice, "presence/alice/state/blob", big, 1);
	expect_doc(w, "presence/alice", "alice", true, 1, NULL);
	publish_text_ok(bob, "presence/bob/state/blob", big, 1);
	expect_doc(w, "presence/bob", "bob", true, 1, NULL);

	request = malloc(size);
	assert_non_null(request);
	len += (size_t)snprintf(request, size,
	                        "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[");
	/* 999 times, so that with bob the request stays within max_query_users (1000). */
	for (int i = 0; i < 999; i++) {
		len += (size_t)snprintf(request + len, size - len, "%s\"alice\"", i > 0 ? "," : "");
	}
	snprintf(request + len, size - len,
	         "]},{\"command\":\"getPresence\",\"usernames\":[\"bob\"],"
	         "\"correlationData\":\"too-much\"}]}");
	q = client_connect(b, &q_o);
	assert_int_equal(client_subscribe(q, FALLBACK, 1), 1);
	assert_int_equal(send_request(q, request, 1, NULL), 0);
	m = client_wait_msg(q, 5000);
	assert_non_null(m);
	assert_string_equal(m->topic, FALLBACK);
	assert_true(m->payloadlen <= 4096);
	reply = msg_json(m);
	responses = cJSON_GetObjectItemCaseSensitive(reply, "responses");
	assert_int_equal(cJSON_GetArraySize(responses), 2);
	first = cJSON_GetArrayItem(responses, 0);
	second = cJSON_GetArrayItem(responses, 1);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(first, "presences")),
	                 1);
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(second, "error")->valuestring,
	                    "Reply too large: at most 4096 bytes per reply");
	assert_string_equal(
	    cJSON_GetObjectItemCaseSensitive(second, "correlationData")->valuestring, "too-much");
	cJSON_Delete(reply);
	msg_free(m);
	expect_nothing(q);

	free(request);
	client_disconnect(q);
	client_disconnect(alice);
	client_disconnect(bob);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* A client that keeps asking is answered within a budget of response bytes of its own (a burst
 * of 4 x max_query_reply_bytes, then one such response every 4 s); the others are not
 * affected. */
static void a_client_that_keeps_asking_is_answered_within_its_budget(void **state)
{
	char *conf = broker_conf("plugin_opt_auth allow\nplugin_opt_acl allow\n"
	                         "plugin_opt_max_query_reply_bytes 1024\n");
	struct broker *b = broker_start(conf);
	struct client_opts greedy_o = {.id = "greedy", .protocol = 5};
	struct client_opts other_o = {.id = "other", .protocol = 5};
	const char *request =
	    "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[\"zed\"]}]}";
	const char *expected = "{\"responses\":[{\"command\":\"getPresence\",\"presences\":["
	                       "{\"username\":\"zed\",\"available\":false,\"known\":false}]}]}";
	struct client *greedy, *other;
	struct msg *m;
	int answered = 0;

	(void)state;
	greedy = client_connect(b, &greedy_o);
	other = client_connect(b, &other_o);
	for (int i = 0; i < 20; i++) {
		assert_int_equal(send_request(greedy, request, 1, NULL), 0);
	}
	/* Every answer the broker sent is queued after a round trip. */
	assert_true(client_sync(greedy, 5000));
	while ((m = client_next_msg(greedy, 0)) != NULL) {
		if (strcmp(m->topic, FALLBACK) == 0) {
			answered++;
		}
		msg_free(m);
	}
	/* Each answer costs its bytes and 1024 more: four fit the burst of 4096. Refilling the
	 * sixteen others would take a minute. */
	assert_true(answered >= 1 && answered < 20);
	assert_true(broker_log_wait(b, "query by client greedy (user (none)) not answered", 5000));
	/* Another client has its own budget. */
	assert_int_equal(send_request(other, request, 1, NULL), 0);
	msg_free(expect_response(other, FALLBACK, expected));

	client_disconnect(greedy);
	client_disconnect(other);
	broker_stop(b);
	free(conf);
}

static void malformed_and_oversized_requests_are_answered_with_errors(void **state)
{
	char *conf = broker_conf("plugin_opt_auth allow\nplugin_opt_acl allow\n"
	                         "plugin_opt_max_query_users 3\n");
	struct broker *b = broker_start(conf);
	struct client_opts q5_o = {.id = "q5", .protocol = 5};
	struct client_opts q4_o = {.id = "q4"};
	static const struct {
		const char *request;
		int len;
		const char *response;
	} cases[] = {
	    {"not json", 8,
	     "{\"responses\":[{\"command\":\"Unknown command\",\"error\":\"Payload not valid "
	     "JSON\"}]}"},
	    {"", 0,
	     "{\"responses\":[{\"command\":\"Unknown command\",\"error\":\"Payload not valid "
	     "JSON\"}]}"},
	    {"\xff\xfe{}", 4,
	     "{\"responses\":[{\"command\":\"Unknown command\",\"error\":\"Payload not valid "
	     "UTF-8\"}]}"},
	    {"{\"commands\":{}}", -1,
	     "{\"responses\":[{\"command\":\"Unknown command\",\"error\":\"Invalid/missing "
	     "commands\"}]}"},
	    {"{\"commands\":[{\"command\":\"getPresence\",\"correlationData\":\"big\","
	     "\"usernames\":[\"a\",\"b\",\"c\",\"d\"]}]}",
	     -1,
	     "{\"responses\":[{\"command\":\"getPresence\",\"error\":\"Too many usernames: at "
	     "most 3 per request\",\"correlationData\":\"big\"}]}"},
	    {"{\"commands\":[{\"command\":\"kick\"},{\"command\":\"getPresence\",\"usernames\":"
	     "\"a\"},{\"command\":\"getPresence\",\"usernames\":[\"a\",\"b\",\"c\"]}]}",
	     -1,
	     "{\"responses\":[{\"command\":\"kick\",\"error\":\"Unknown command\"},{\"command\":"
	     "\"getPresence\",\"error\":\"Invalid/missing usernames\"},{\"command\":"
	     "\"getPresence\",\"presences\":[{\"username\":\"a\",\"available\":false,\"known\":"
	     "false},{\"username\":\"b\",\"available\":false,\"known\":false},{\"username\":\"c\","
	     "\"available\":false,\"known\":false}]}]}"},
	};
	struct client *q5, *q4;
	struct msg *m;
	size_t i;
	int qos;

	(void)state;
	q5 = client_connect(b, &q5_o);
	q4 = client_connect(b, &q4_o);
	assert_int_equal(client_subscribe(q5, FALLBACK, 1), 1);
	assert_int_equal(client_subscribe(q4, FALLBACK, 1), 1);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int len = cases[i].len >= 0 ? cases[i].len : (int)strlen(cases[i].request);

		/* Success for the publisher, whatever the request (an error would disconnect). */
		for (qos = 1; qos <= 2; qos++) {
			assert_int_equal(
			    client_publish(q5, CONTROL, cases[i].request, len, qos, false), 0);
			m = expect_response(q5, FALLBACK, cases[i].response);
			msg_free(m);
		}
		assert_int_equal(client_publish(q4, CONTROL, cases[i].request, len, 1, false), 0);
		msg_free(expect_response(q4, FALLBACK, cases[i].response));
	}
	/* Still connected, and a request without a problem is answered. */
	assert_int_equal(client_disconnect_reason(q5), -1);
	assert_int_equal(client_disconnect_reason(q4), -1);
	expect_nothing(q5);
	expect_nothing(q4);
	assert_false(broker_log_contains(b, "disconnected"));

	client_disconnect(q4);
	client_disconnect(q5);
	broker_stop(b);
	free(conf);
}

static void with_acl_defer_only_clients_the_acl_file_grants_may_query(void **state)
{
	struct broker *b = broker_prepare(NULL);
	const char *acl = broker_write_file(b, "acl",
	                                    "pattern readwrite harness/sync/#\n"
	                                    "user alice\n"
	                                    "topic read presence/#\n"
	                                    "topic write $CONTROL/presence/v1\n"
	                                    "user mallory\n"
	                                    "topic read presence/#\n"
	                                    "topic readwrite #\n");
	struct client_opts alice_o = {.id = "alice1", .username = "alice", .protocol = 5};
	struct client_opts mallory_o = {.id = "mallory1", .username = "mallory", .protocol = 5};
	struct client_opts anon_o = {.id = "anon", .protocol = 5};
	const char *request =
	    "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[\"alice\"]}]}";
	struct client *alice, *mallory, *anon;
	char extra[512];
	char *conf;
	struct msg *m;

	(void)state;
	snprintf(extra, sizeof(extra), "plugin_opt_auth allow\nacl_file %s\n", acl);
	conf = broker_conf(extra);
	broker_launch(b, conf);

	mallory = client_connect(b, &mallory_o);
	anon = client_connect(b, &anon_o);
	alice = client_connect(b, &alice_o);
	assert_int_equal(client_subscribe(mallory, FALLBACK, 1), 1);
	assert_int_equal(client_subscribe(anon, FALLBACK, 1), 1);
	assert_int_equal(client_subscribe(alice, FALLBACK, 1), 1);

	/* "readwrite #" does not reach $ topics: mallory is denied like the anonymous client. */
	assert_int_equal(send_request(mallory, request, 1, NULL), 0x87);
	assert_int_equal(send_request(anon, request, 1, NULL), 0x87);
	assert_int_equal(send_request(alice, request, 1, NULL), 0);
	m = client_wait_msg(alice, 5000);
	assert_non_null(m);
	assert_string_equal(m->topic, FALLBACK);
	assert_non_null(strstr(m->payload, "{\"username\":\"alice\",\"available\":true,"
	                                   "\"sessions\":1,"));
	msg_free(m);
	expect_nothing(mallory);
	expect_nothing(anon);
	expect_nothing(alice);

	client_disconnect(alice);
	client_disconnect(anon);
	client_disconnect(mallory);
	broker_stop(b);
	free(conf);
}

/* The latest value seen of each metric, by name below $SYS/broker/presence/. */
struct metrics_seen {
	char names[16][32];
	char values[16][24];
	int count;
};

/* Records a metrics message in seen; fails on anything else. */
static void record_metric(struct metrics_seen *seen, const struct msg *m)
{
	const char *name;
	int i;

	if (strncmp(m->topic, SYS, strlen(SYS)) != 0) {
		fail_msg("unexpected message on %s: %.*s", m->topic, m->payloadlen, m->payload);
	}
	name = m->topic + strlen(SYS);
	for (i = 0; i < seen->count && strcmp(seen->names[i], name) != 0; i++) {
	}
	if (i == seen->count) {
		assert_true(seen->count < 16);
		snprintf(seen->names[i], sizeof(seen->names[i]), "%s", name);
		seen->count++;
	}
	snprintf(seen->values[i], sizeof(seen->values[i]), "%.*s", m->payloadlen, m->payload);
}

/* Returns the latest value of name in seen, or NULL. */
static const char *metric_value(const struct metrics_seen *seen, const char *name)
{
	int i;

	for (i = 0; i < seen->count; i++) {
		if (strcmp(seen->names[i], name) == 0) {
			return seen->values[i];
		}
	}
	return NULL;
}

/* Returns true when the latest value of name in seen is value. */
static bool metric_is(const struct metrics_seen *seen, const char *name, const char *value)
{
	const char *latest = metric_value(seen, name);

	return latest != NULL && strcmp(latest, value) == 0;
}

/* Waits (bounded) until every metric in expected (pairs of name and value, NULL-terminated)
 * has that as its latest value, reading c's messages into seen. */
static void wait_metrics(struct client *c, struct metrics_seen *seen, const char *const *expected)
{
	int budget;

	for (budget = 0; budget < 200; budget++) {
		const char *const *pair;
		bool all = true;
		struct msg *m;

		for (pair = expected; *pair != NULL; pair += 2) {
			all = all && metric_is(seen, pair[0], pair[1]);
		}
		if (all) {
			return;
		}
		/* Metrics go out every second here; allow several rounds. */
		m = client_wait_msg(c, 5000);
		if (m == NULL) {
			break;
		}
		record_metric(seen, m);
		msg_free(m);
	}
	for (; *expected != NULL; expected += 2) {
		const char *value = metric_value(seen, expected[0]);

		if (value == NULL || strcmp(value, expected[1]) != 0) {
			fail_msg("metric %s: expected %s, latest seen %s", expected[0], expected[1],
			         value != NULL ? value : "(none)");
		}
	}
}

/* Waits for the next message on c and asserts it is the metric name with value, retained or
 * not as said. */
static void expect_metric(struct client *c, const char *name, const char *value, bool retained)
{
	struct msg *m = client_wait_msg(c, 5000);
	char topic[128];

	snprintf(topic, sizeof(topic), SYS "%s", name);
	if (m == NULL) {
		fail_msg("expected %s %s, got nothing", topic, value);
	}
	if (strcmp(m->topic, topic) != 0 || strcmp(m->payload, value) != 0 ||
	    m->retain != retained) {
		fail_msg("expected %s %s (retained %d), got %s %.*s (retained %d)", topic, value,
		         retained, m->topic, m->payloadlen, m->payload, m->retain);
	}
	assert_int_equal(m->qos, 0);
	msg_free(m);
}

static void metrics_count_users_sessions_documents_and_state_writes(void **state)
{
	char *conf = broker_conf("plugin_opt_auth allow\nplugin_opt_acl allow\n"
	                         "plugin_opt_metrics_interval 1\n");
	struct broker *b = broker_start(conf);
	struct client_opts m_o = {.id = "metrics"};
	struct client_opts phone_o = {.id = "alice-phone", .username = "alice"};
	struct client_opts laptop_o = {.id = "alice-laptop", .username = "alice", .protocol = 5};
	struct client_opts bob_o = {.id = "bob1", .username = "bob"};
	struct client_opts late_o = {.id = "late"};
	static const char *const at_start[] = {
	    "users/available",
	    "0",
	    "users/known",
	    "0",
	    "sessions",
	    "0",
	    "documents/published",
	    "0",
	    "publishes/denied",
	    "0",
	    "state/writes",
	    "0",
	    "state/rejected",
	    "0",
	    "users/forgotten",
	    "0",
	    "sessions/untracked",
	    "0",
	    NULL,
	};
	static const char *const at_end[] = {
	    "users/available",
	    "1",
	    "users/known",
	    "2",
	    "sessions",
	    "2",
	    "documents/published",
	    "5",
	    "publishes/denied",
	    "0",
	    "state/writes",
	    "2",
	    "state/rejected",
	    "1",
	    "users/forgotten",
	    "0",
	    "sessions/untracked",
	    "0",
	    NULL,
	};
	struct metrics_seen seen = {.count = 0};
	struct client *m, *w, *phone, *laptop, *bob, *late;
	struct metrics_seen retained = {.count = 0};
	int i;

	(void)state;
	/* The first round goes out at startup, so a subscriber gets every value retained. */
	m = client_connect(b, &m_o);
	assert_int_equal(client_subscribe(m, SYS "#", 0), 0);
	wait_metrics(m, &seen, at_start);

	/* Every step waits for its documents, so that each is its own document. */
	w = client_watch(b, "watcher", "presence/+");
	phone = client_connect(b, &phone_o);
	expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	laptop = client_connect(b, &laptop_o);
	expect_doc(w, "presence/alice", "alice", true, 2, "{}");
	bob = client_connect(b, &bob_o);
	expect_doc(w, "presence/bob", "bob", true, 1, "{}");
	/* Accepted and changing, accepted and changing nothing, rejected. */
	assert_int_equal(client_publish(phone, "presence/alice/state/status", "away", 4, 1, false),
	                 0);
	expect_doc(w, "presence/alice", "alice", true, 2, "{\"status\":\"away\"}");
	publish_text_ok(laptop, "presence/alice/state/status", "away", 1);
	assert_int_equal(client_publish(phone, "presence/alice/state", "away", 4, 1, false), 0);
	expect_nothing(w);
	client_disconnect(bob);
	expect_doc(w, "presence/bob", "bob", false, 0, "{}");
	wait_metrics(m, &seen, at_end);
	client_disconnect(m);

	/* A late subscriber gets exactly the nine current values, retained. */
	late = client_connect(b, &late_o);
	assert_int_equal(client_subscribe(late, SYS "#", 0), 0);
	for (i = 0; i < 9; i++) {
		struct msg *msg = client_wait_msg(late, 5000);

		assert_non_null(msg);
		assert_true(msg->retain);
		record_metric(&retained, msg);
		msg_free(msg);
	}
	assert_int_equal(retained.count, 9);
	wait_metrics(late, &retained, at_end);

	/*
	 * Unchanged values are not published again. Each round publishes the changed metrics in
	 * a fixed order in which state/rejected comes after every value a state write or a
	 * document changes (users/forgotten and sessions/untracked, after it, do not change
	 * here). So the next message after a rejected write
	 * must be the new state/rejected value: any unchanged metric published again in that round,
	 * or in a round before it since the late subscription, would come first. The second write
	 * is made after the first value arrived, so its round is a later one, at least an interval
	 * on, and the rounds in between change nothing.
	 */
	assert_int_equal(client_publish(phone, "presence/alice/state", "[]", 2, 1, false), 0);
	expect_metric(late, "state/rejected", "2", false);
	publish_text_ok(laptop, "presence/alice/state", "7", 1);
	expect_metric(late, "state/rejected", "3", false);
	/* A write that changes the state moves two metrics, in the fixed order. */
	assert_int_equal(client_publish(phone, "presence/alice/state/status", "back", 4, 1, false),
	                 0);
	expect_metric(late, "documents/published", "6", false);
	expect_metric(late, "state/writes", "3", false);
	expect_doc(w, "presence/alice", "alice", true, 2, "{\"status\":\"back\"}");

	client_disconnect(late);
	client_disconnect(laptop);
	client_disconnect(phone);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

static void metrics_interval_0_publishes_no_metrics(void **state)
{
	char *conf = broker_conf("plugin_opt_auth allow\nplugin_opt_acl allow\n"
	                         "plugin_opt_metrics_interval 0\n");
	struct broker *b = broker_start(conf);
	struct client_opts m_o = {.id = "metrics"};
	struct client_opts alice_o = {.id = "alice1", .username = "alice"};
	struct client *m, *alice;

	(void)state;
	/* With metrics on, the first round goes out at the end of the broker's first loop
	 * iteration, before any client is even connected (the test above relies on it). */
	m = client_connect(b, &m_o);
	assert_int_equal(client_subscribe(m, "$SYS/broker/presence/#", 0), 0);
	alice = client_connect(b, &alice_o);
	assert_true(broker_log_wait(b, "metrics_interval=0", 5000));
	expect_nothing(m);

	client_disconnect(alice);
	client_disconnect(m);
	broker_stop(b);
	free(conf);
}

static void queries_and_metrics_under_valgrind_leak_nothing(void **state)
{
	struct broker_opts opts = {.valgrind = true};
	char *conf = broker_conf("plugin_opt_auth allow\nplugin_opt_acl allow\n"
	                         "plugin_opt_metrics_interval 1\n");
	struct client_opts alice_o = {.id = "alice1", .username = "alice", .protocol = 5};
	static const char *const one_user[] = {"users/available", "1", NULL};
	struct metrics_seen seen = {.count = 0};
	const char *request =
	    "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":"
	    "[\"alice\",\"zed\"],\"correlationData\":\"v\"},{\"command\":\"x\"}]}";
	mosquitto_property *props = request_props("replies/alice", "cd", 2);
	struct client *alice;
	char *report = NULL;
	int responses = 0;
	struct broker *b;
	struct msg *m;

	(void)state;
	if (!harness_have_valgrind()) {
		mosquitto_property_free_all(&props);
		free(conf);
		skip();
	}
	b = broker_start_opts(conf, &opts);
	alice = client_connect(b, &alice_o);
	assert_int_equal(client_subscribe(alice, "replies/alice", 1), 1);
	assert_int_equal(client_subscribe(alice, SYS "#", 0), 0);
	assert_int_equal(send_request(alice, request, 1, props), 0);
	assert_int_equal(send_request(alice, "garbage", 1, NULL), 0);
	publish_text_ok(alice, "presence/alice/state", "x", 1);
	/* The responses and the metrics interleave; take them in any order. */
	while (seen.count < 6 || !metric_is(&seen, "users/available", "1") ||
	       !metric_is(&seen, "state/rejected", "1") || responses < 2) {
		m = client_wait_msg(alice, 20000);
		assert_non_null(m);
		if (strncmp(m->topic, SYS, strlen(SYS)) == 0) {
			record_metric(&seen, m);
		} else if (strcmp(m->topic, "replies/alice") == 0) {
			assert_non_null(strstr(m->payload, "\"known\":false"));
			responses++;
		} else {
			/* Not subscribed: a targeted publish needs no subscription. */
			assert_string_equal(m->topic, FALLBACK);
			responses++;
		}
		msg_free(m);
	}
	wait_metrics(alice, &seen, one_user);
	client_disconnect(alice);
	mosquitto_property_free_all(&props);
	assert_int_equal(broker_stop_verdict(b, &report), 0);
	assert_null(report);
	free(conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_teardown(name, harness_teardown)
	    T(known_offline_unknown_and_repeated_names_get_their_retained_documents),
	    T(without_a_usable_response_topic_the_answer_goes_to_the_fallback_topic),
	    T(no_other_client_receives_a_response_whatever_it_subscribes_to),
	    T(replies_answer_each_name_once_within_the_byte_budget),
	    T(a_client_that_keeps_asking_is_answered_within_its_budget),
	    T(malformed_and_oversized_requests_are_answered_with_errors),
	    T(with_acl_defer_only_clients_the_acl_file_grants_may_query),
	    T(metrics_count_users_sessions_documents_and_state_writes),
	    T(metrics_interval_0_publishes_no_metrics),
	    T(queries_and_metrics_under_valgrind_leak_nothing),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
