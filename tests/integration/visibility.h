/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Helpers shared by the visibility tests (test_visibility.c, test_visibility_changes.c): who
 * may see whom (issue 18), asserted with real watchers of different names.
 *
 * Exactness without sleeping: every step of a test ends with a marker, a state write of the user
 * "marker" whom every watcher of the test may see. Documents and transitions (zero-length
 * messages) of the step are published before the marker's write is handled (the step waits for
 * them first), so a watcher's next message after what it expects must be the marker's document:
 * anything else that arrived in between fails the test. A watcher that may not see the marker
 * (an anonymous one under visibility group) is checked with a round trip instead (expect_nothing).
 *
 * Expected messages are written as a list of topic levels below presence/: "+alice" is a
 * document of alice (non-empty JSON whose "username" is alice), "-alice" is ONE zero-length
 * message on presence/alice, QoS 1, not retained. Within one step they may arrive in any order.
 */
#ifndef PRESENCE_VISIBILITY_TEST_H
#define PRESENCE_VISIBILITY_TEST_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

/* Everything outside the plugin's own rules is allowed: these tests are about its READ answer. */
#define VIS_OPEN "plugin_opt_auth allow\nplugin_opt_acl allow\n"

#define VIS_CONTROL "$CONTROL/presence/v1"

/* At most this many expected items per watcher and step. */
#define VIS_MAX_ITEMS 16

/* The broker's wall clock, as the plugin reads it, in ms since the epoch. */
static inline long long vis_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Decodes a topic level (%2F, %25, %2B, %23) into a user name in out. */
static inline void vis_decode(const char *level, char *out, size_t size)
{
	size_t n = 0;

	for (const char *s = level; *s != '\0' && n + 1 < size; s++) {
		if (s[0] == '%' && s[1] != '\0' && s[2] != '\0') {
			char hex[3] = {s[1], s[2], '\0'};

			out[n++] = (char)strtol(hex, NULL, 16);
			s += 2;
		} else {
			out[n++] = *s;
		}
	}
	out[n] = '\0';
}

/* Connects an MQTT 5 client with id and username (NULL = anonymous) and subscribes it to
 * filter at QoS 1 (filter NULL = no subscription). */
static inline struct client *vis_watch(struct broker *b, const char *id, const char *user,
                                       const char *filter)
{
	struct client *c = client_connect_as(b, id, user, 5);

	if (filter != NULL) {
		int granted = client_subscribe(c, filter, 1);

		if (granted != 1) {
			fail_msg("%s: the subscription to %s was answered %d, not QoS 1", id,
			         filter, granted);
		}
	}
	return c;
}

/* The next message on c (round-trip markers of other clients skipped); fails on timeout. */
static inline struct msg *vis_next(struct client *c, const char *what)
{
	struct msg *m = client_next_msg(c, 5000);

	if (m == NULL) {
		fail_msg("expected %s, got nothing", what);
	}
	return m;
}

/* Whether m is what item ("+level" or "-level") describes; a document's JSON is checked. */
static inline bool vis_matches(const struct msg *m, const char *item)
{
	char topic[512], user[256];
	cJSON *doc;
	const cJSON *name;
	bool ok;

	snprintf(topic, sizeof(topic), "presence/%s", item + 1);
	if (strcmp(m->topic, topic) != 0) {
		return false;
	}
	if (item[0] == '-') {
		return m->payloadlen == 0 && !m->retain && m->qos == 1;
	}
	if (m->payloadlen == 0) {
		return false;
	}
	doc = cJSON_Parse(m->payload);
	vis_decode(item + 1, user, sizeof(user));
	name = cJSON_GetObjectItemCaseSensitive(doc, "username");
	ok = cJSON_IsString(name) && strcmp(name->valuestring, user) == 0;
	cJSON_Delete(doc);
	return ok;
}

/*
 * Takes from c exactly the messages items lists (space-separated "+level"/"-level", any order;
 * NULL or "" = none), failing on any other message and when one does not come. With
 * retained_only, every one must carry the retain flag (retained on subscribe); then the test
 * also makes a round trip first, so that nothing beyond the list may be queued.
 */
static inline void vis_take_items(struct client *c, const char *items, bool retained_only,
                                  const char *keep, cJSON **kept)
{
	char copy[1024];
	char *want[VIS_MAX_ITEMS];
	bool got[VIS_MAX_ITEMS] = {false};
	size_t n = 0;
	char *save = NULL;

	snprintf(copy, sizeof(copy), "%s", items != NULL ? items : "");
	for (char *t = strtok_r(copy, " ", &save); t != NULL; t = strtok_r(NULL, " ", &save)) {
		assert_true(n < VIS_MAX_ITEMS);
		want[n++] = t;
	}
	if (retained_only && !client_sync(c, 5000)) {
		fail_msg("the round trip after the subscription did not complete");
	}
	for (size_t k = 0; k < n; k++) {
		struct msg *m = retained_only ? client_next_msg(c, 0) : vis_next(c, items);
		size_t i;

		if (m == NULL) {
			fail_msg("expected the retained messages \"%s\"; only %zu came", items, k);
		}
		for (i = 0; i < n; i++) {
			if (!got[i] && vis_matches(m, want[i])) {
				break;
			}
		}
		if (i == n) {
			fail_msg("expected \"%s\"; got instead (%d bytes, retain %d, QoS %d) on "
			         "%s: %.*s",
			         items, m->payloadlen, m->retain, m->qos, m->topic, m->payloadlen,
			         m->payload);
		}
		if (retained_only && !m->retain) {
			fail_msg("%s came without the retain flag", m->topic);
		}
		got[i] = true;
		if (keep != NULL && strcmp(want[i], keep) == 0) {
			*kept = msg_json(m);
		}
		msg_free(m);
	}
	if (retained_only) {
		expect_nothing(c);
	}
}

static inline void vis_expect_items(struct client *c, const char *items, bool retained_only)
{
	vis_take_items(c, items, retained_only, NULL, NULL);
}

/* Takes from c the document of level and the messages others lists (vis_expect_items), in any
 * order; returns the document parsed (the caller frees it with cJSON_Delete). */
static inline cJSON *vis_take_doc_any(struct client *c, const char *level, const char *others)
{
	char items[1024], keep[300];
	cJSON *doc = NULL;

	snprintf(keep, sizeof(keep), "+%s", level);
	snprintf(items, sizeof(items), "%s %s", keep, others != NULL ? others : "");
	vis_take_items(c, items, false, keep, &doc);
	assert_non_null(doc);
	return doc;
}

/* Subscribes c to filter (QoS 1, must be granted) and asserts that exactly the retained
 * documents items lists arrive (see vis_expect_items), and nothing else. */
static inline void vis_expect_retained(struct client *c, const char *filter, const char *items)
{
	int granted = client_subscribe(c, filter, 1);

	if (granted != 1) {
		fail_msg("the subscription to %s was answered %d, not QoS 1", filter, granted);
	}
	vis_expect_items(c, items, true);
}

/* Takes the next message on c, which must be a document on presence/<level> of user; returns
 * it parsed (the caller frees it with cJSON_Delete). */
static inline cJSON *vis_take_doc(struct client *c, const char *level)
{
	char item[300];
	struct msg *m;
	cJSON *doc;

	snprintf(item, sizeof(item), "+%s", level);
	m = vis_next(c, item);
	if (!vis_matches(m, item)) {
		fail_msg("expected a document on presence/%s; got (%d bytes) on %s: %.*s", level,
		         m->payloadlen, m->topic, m->payloadlen, m->payload);
	}
	doc = msg_json(m);
	msg_free(m);
	return doc;
}

/* A number member of a document. */
static inline long long vis_num(const cJSON *doc, const char *name)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(doc, name);

	assert_true(cJSON_IsNumber(item));
	return (long long)item->valuedouble;
}

/* The user every watcher of a test may see, and the number of its last write. */
struct vis_marker {
	struct client *c;
	int n;
};

/* One watcher's expectation in a step. */
struct vis_expect {
	struct client *c;
	/* What it receives before the marker (vis_expect_items); NULL = nothing. */
	const char *items;
	/* It may not see the marker: checked with a round trip instead. */
	bool blind;
};

/* The next message on c (round-trip markers of other clients skipped: a subscriber to # gets
 * them) must be the marker's document with state. */
static inline void vis_expect_marker(struct client *c, const char *state)
{
	cJSON *doc = vis_take_doc(c, "marker");
	cJSON *want = cJSON_Parse(state);

	if (!cJSON_Compare(cJSON_GetObjectItemCaseSensitive(doc, "state"), want, true)) {
		char *text = cJSON_PrintUnformatted(doc);

		fail_msg("expected the marker's document with state %s, got %s", state, text);
	}
	cJSON_Delete(want);
	cJSON_Delete(doc);
}

/*
 * One step's end: each watcher receives exactly its items (any order), then the marker writes
 * its state and each watcher that may see it receives the marker's document next (nothing
 * else before it); each blind one receives nothing more (round trip).
 */
static inline void vis_step(struct vis_marker *mk, const struct vis_expect *e, size_t n)
{
	char text[32], state[64];

	for (size_t i = 0; i < n; i++) {
		vis_expect_items(e[i].c, e[i].items, false);
	}
	mk->n++;
	snprintf(text, sizeof(text), "m%d", mk->n);
	snprintf(state, sizeof(state), "{\"n\":\"%s\"}", text);
	publish_text_ok(mk->c, "presence/marker/state/n", text, 1);
	for (size_t i = 0; i < n; i++) {
		if (e[i].blind) {
			expect_nothing(e[i].c);
		} else {
			vis_expect_marker(e[i].c, state);
		}
	}
}

/* Publishes a privacy choice of the user whose session c is (topic presence/<level>/privacy),
 * which the broker acknowledges as a success. */
static inline void vis_privacy(struct client *c, const char *level, const char *payload)
{
	char topic[300];

	snprintf(topic, sizeof(topic), "presence/%s/privacy", level);
	expect_publish_ok(client_publish(c, topic, payload, (int)strlen(payload), 1, false));
}

/* A client that queries as user (NULL = anonymous): MQTT 5, subscribed to replies/<id>. */
static inline struct client *vis_querier(struct broker *b, const char *id, const char *user)
{
	char topic[128];

	snprintf(topic, sizeof(topic), "replies/%s", id);
	return vis_watch(b, id, user, topic);
}

/*
 * Asks (as q, made by vis_querier with id) for user and returns the one entry of the answer as
 * JSON text (the caller frees it). Asserts the answer's frame byte for byte.
 */
static inline char *vis_query(struct client *q, const char *id, const char *user)
{
	char request[512], topic[128],
	    prefix[] = "{\"responses\":[{\"command\":\"getPresence\","
	               "\"presences\":[";
	mosquitto_property *props = NULL;
	struct msg *m;
	char *entry;
	size_t plen = strlen(prefix);

	snprintf(topic, sizeof(topic), "replies/%s", id);
	snprintf(request, sizeof(request),
	         "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[\"%s\"]}]}", user);
	assert_int_equal(mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, topic),
	                 MOSQ_ERR_SUCCESS);
	assert_int_equal(
	    client_publish_props(q, VIS_CONTROL, request, (int)strlen(request), 1, false, props),
	    0);
	mosquitto_property_free_all(&props);
	m = vis_next(q, "a query response");
	assert_string_equal(m->topic, topic);
	if ((size_t)m->payloadlen < plen + 4 || strncmp(m->payload, prefix, plen) != 0 ||
	    strcmp(m->payload + m->payloadlen - 4, "]}]}") != 0) {
		fail_msg("unexpected response: %.*s", m->payloadlen, m->payload);
	}
	entry = strndup(m->payload + plen, (size_t)m->payloadlen - plen - 4);
	assert_non_null(entry);
	msg_free(m);
	return entry;
}

/* Asserts that q (id) is answered about user exactly as about a user never seen. */
static inline void vis_query_unknown(struct client *q, const char *id, const char *user)
{
	char expected[512];
	char *entry = vis_query(q, id, user);

	snprintf(expected, sizeof(expected),
	         "{\"username\":\"%s\",\"available\":false,\"known\":false}", user);
	if (strcmp(entry, expected) != 0) {
		fail_msg("%s asked about %s: got %s, expected %s", id, user, entry, expected);
	}
	free(entry);
}

/* Asserts that q (id) is answered about user with its document ("known":true). */
static inline void vis_query_known(struct client *q, const char *id, const char *user)
{
	char *entry = vis_query(q, id, user);
	cJSON *doc = cJSON_Parse(entry);
	const cJSON *known = cJSON_GetObjectItemCaseSensitive(doc, "known");
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(doc, "username");

	if (!cJSON_IsTrue(known) || !cJSON_IsString(name) || strcmp(name->valuestring, user) != 0 ||
	    cJSON_GetObjectItemCaseSensitive(doc, "seq") == NULL) {
		fail_msg("%s asked about %s: got %s, expected its document, known", id, user,
		         entry);
	}
	cJSON_Delete(doc);
	free(entry);
}

/* Prepares a broker, writes text to @DIR@/groups (unless NULL) and launches the standard
 * config plus extra. */
/* The watcher every scenario starts with (ops, in see_everyone, on presence/+) and the marker
 * user, once ops has seen it. Returns ops. */
static inline struct client *vis_begin(struct broker *b, struct vis_marker *mk)
{
	struct client *ops = vis_watch(b, "ops1", "ops", "presence/+");

	mk->c = client_connect_as(b, "marker1", "marker", 5);
	vis_expect_items(ops, "+marker", false);
	return ops;
}

/* Connects a session of user (client id id) and waits until ops has its document (item
 * "+<level>"). */
static inline struct client *vis_online(struct broker *b, struct client *ops, const char *id,
                                        const char *user, const char *item)
{
	struct client *c = client_connect_as(b, id, user, 5);

	vis_expect_items(ops, item, false);
	return c;
}

static inline struct broker *vis_start(const char *groups, const char *extra, char **conf_out)
{
	struct broker *b = broker_prepare(NULL);
	char *conf = broker_conf(extra);

	if (groups != NULL) {
		broker_write_file(b, "groups", groups);
	}
	broker_launch(b, conf);
	*conf_out = conf;
	return b;
}

#endif
