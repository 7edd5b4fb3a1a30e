/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * MQTT clients of the integration tests: libmosquitto handles connected to a harness broker,
 * without a background thread. Every wait (on any client or on a broker) services the sockets
 * of all live clients, so a wait on one client keeps the others answering pings and receiving
 * messages, which queue per client in arrival order. Absence is asserted after a round trip
 * through the broker (client_sync), never after a sleep.
 */
#ifndef PRESENCE_HARNESS_CLIENT_H
#define PRESENCE_HARNESS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <mosquitto.h>

struct broker;

/* One libmosquitto client connected to a harness broker. */
struct client;

/* How to connect. Zero-initialised means: random client id, no credentials, MQTT 3.1.1, clean
 * session, keepalive 60, no will. */
struct client_opts {
	/* Client id; NULL lets libmosquitto make one (only with a clean session). */
	const char *id;
	const char *username;
	const char *password;
	/* 4 = MQTT 3.1.1 (also for 0), 5 = MQTT 5, 3 = MQTT 3.1. */
	int protocol;
	/* v3: clean session false. v5: clean start false and session expiry interval 300. */
	bool persistent;
	/* Seconds; 0 = 60; negative = 0 (no keepalive). */
	int keepalive;
	/* A will, when will_topic is not NULL. */
	const char *will_topic;
	const char *will_payload;
	int will_qos;
	bool will_retain;
};

/* Connects and waits for CONNACK; fails the test unless it is a success. */
struct client *client_connect(struct broker *b, const struct client_opts *o);

/* client_connect with only a client id, a username (NULL = none) and a protocol (as in struct
 * client_opts: 4 = MQTT 3.1.1, 5 = MQTT 5); the rest as zero-initialised. Fails the test unless
 * the broker accepts. */
struct client *client_connect_as(struct broker *b, const char *id, const char *username,
                                 int protocol);

/* Connects an anonymous MQTT 5 client (so that document properties are visible) with client id
 * id and subscribes it to filter (e.g. presence/+) at QoS 1. Fails the test unless both succeed
 * and the subscription is granted QoS 1. */
struct client *client_watch(struct broker *b, const char *id, const char *filter);

/* Connects and waits for CONNACK. Returns the CONNACK code (v5 reason code, v3 return code;
 * 0 = accepted), or -1 when the connection fails or closes without a CONNACK in time. *out gets
 * the client when accepted, NULL otherwise. o may be NULL. */
int client_connect_rc(struct broker *b, const struct client_opts *o, struct client **out);

/* Connects with o and asserts that the broker refuses: no client is made and the result of
 * client_connect_rc is not 0. Returns that result (a CONNACK code, or -1 when the connection
 * closed without one) for further checks. Fails the test when the broker accepts (the client is
 * then freed). */
int expect_refused(struct broker *b, const struct client_opts *o);

/* Subscribes and waits for SUBACK. Returns the granted QoS (0..2) or the failure code (0x80 for
 * v3; the v5 reason code, e.g. 0x87), or -1 when the connection closes or no SUBACK comes. */
int client_subscribe(struct client *c, const char *filter, int qos);

/* Publishes and waits until it is written (QoS 0), PUBACK (QoS 1) or PUBCOMP/PUBREC with an
 * error (QoS 2). Returns the v5 reason code (0 for v3 success), or -1 when the publish fails
 * locally, the connection closes, or no acknowledgement comes. */
int client_publish(struct client *c, const char *topic, const void *payload, int len, int qos,
                   bool retain);

/* Same, with MQTT 5 PUBLISH properties (borrowed; may be NULL). */
int client_publish_props(struct client *c, const char *topic, const void *payload, int len, int qos,
                         bool retain, const mosquitto_property *props);

/* Asserts that rc, a client_publish result, acknowledges success: 0 (MQTT 3.1.1, and QoS 0 on
 * either protocol) or, on MQTT 5, 0x10 "no matching subscribers", which Mosquitto 2.0 sends
 * itself when nobody subscribed to the topic. Fails the test on anything else (-1, or a reason
 * code from 0x80 up). */
void expect_publish_ok(int rc);

/* Publishes the text (its strlen bytes, no NUL) on topic at qos, not retained, and asserts
 * with expect_publish_ok that it was acknowledged as a success; the failure names the topic. */
void publish_text_ok(struct client *c, const char *topic, const char *text, int qos);

/* A received message; every pointer is owned by the message. */
struct msg {
	char *topic;
	/* NUL-terminated (one byte beyond payloadlen) for convenience; may contain NULs. */
	char *payload;
	int payloadlen;
	int qos;
	bool retain;
	/* The payload format indicator, -1 if absent. */
	int payload_format;
	/* The content type, NULL if absent. */
	char *content_type;
	/* The correlation data (correlation_len bytes, then a NUL), NULL if absent. */
	char *correlation;
	int correlation_len;
	/* The response topic, NULL if absent. */
	char *response_topic;
};

/* Returns the next message received by c, in arrival order, waiting at most timeout_ms
 * (scaled); NULL on timeout or when c is closed and nothing is queued. Free with msg_free. */
struct msg *client_wait_msg(struct client *c, int timeout_ms);

/* client_wait_msg, but drops (and frees) every round-trip marker of another client that comes
 * first: a subscriber to # or harness/# receives those (see client_sync); its own markers are
 * never queued. Waits at most timeout_ms (scaled) for each message; NULL as client_wait_msg. */
struct msg *client_next_msg(struct client *c, int timeout_ms);

/* Waits (5000 ms, scaled) for the next message on c (client_next_msg) and asserts that it is on
 * topic, with exactly the bytes of payload (strlen(payload) of them), at qos (negative = not
 * checked) and with retain as given. Fails the test, with what arrived, otherwise. */
void expect_msg(struct client *c, const char *topic, const char *payload, int qos, bool retain);

/* Number of messages received by c and not yet taken. Does not wait. */
size_t client_queued(const struct client *c);

/* Frees m; NULL is allowed. */
void msg_free(struct msg *m);

/* Where the round-trip markers of client_sync go: every client has its own topic below this
 * prefix. An ACL that must let clients sync allows "pattern readwrite " HARNESS_SYNC_PREFIX "#". */
#define HARNESS_SYNC_PREFIX "harness/sync/"

/* Round trip through the broker: subscribes c (once) to a topic of its own, publishes a marker
 * there at QoS 1 and waits until the marker comes back (it is not queued). Messages the broker
 * delivered to c before the marker are then queued. Returns false on timeout (e.g. an ACL that
 * denies harness/sync/#). */
bool client_sync(struct client *c, int timeout_ms);

/* Asserts absence without sleeping: makes a round trip (client_sync, 5000 ms scaled; fails the
 * test when it times out), after which everything the broker had sent to c is queued, and then
 * asserts that nothing is queued but other clients' round-trip markers (which are dropped).
 * Fails the test with the first unexpected message otherwise. */
void expect_nothing(struct client *c);

/* Makes a round trip as expect_nothing does, then takes and frees everything queued for c, so
 * that what the test expects next starts from an empty queue (e.g. after the retained messages
 * a new subscription brings). Fails the test when the round trip times out. */
void client_drain(struct client *c);

/* Sends DISCONNECT (reason 0), waits (5000 ms, scaled) until the broker has processed it and
 * closed its end of the connection, and frees c. So when this returns, the broker has logged
 * "Client <id> disconnected." and run its disconnect callbacks. Also frees a client the broker
 * has already closed. */
void client_disconnect(struct client *c);

/* Closes the connection without DISCONNECT (a FIN, as when a network connection is lost; the
 * broker then sends the will), waits (5000 ms, scaled) until the broker has noticed and closed
 * its end, and frees c. */
void client_drop(struct client *c);

/* Waits at most timeout_ms (scaled) for the broker to close c's connection (kicked, taken over,
 * refused). Returns true once it is closed. c stays allocated: free it with client_disconnect
 * or client_drop. */
bool client_wait_closed(struct client *c, int timeout_ms);

/* After the connection closed: the reason code of the broker's DISCONNECT (v5), or the
 * libmosquitto error code that closed it (e.g. MOSQ_ERR_CONN_LOST); -1 while connected. */
int client_disconnect_reason(const struct client *c);

/* The libmosquitto handle, for what this API does not cover. Owned by c. */
struct mosquitto *client_mosq(struct client *c);

#endif
