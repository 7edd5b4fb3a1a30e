/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * MQTT clients on libmosquitto without a network thread (see harness_client.h): connecting,
 * acknowledged publishes and subscriptions, the queue of received messages, round trips, and
 * the ways a connection ends. Their sockets are serviced by harness_until (harness_loop.c).
 */
#include "harness_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static unsigned int harness_client_seq;

static void ack_push(struct harness_ack *ring, unsigned int *next, int mid, int rc)
{
	ring[*next % HARNESS_ACK_RING].mid = mid;
	ring[*next % HARNESS_ACK_RING].rc = rc;
	(*next)++;
}

/* Finds mid in a ring. Returns whether it is there, with its code in *rc. */
static bool ack_find(const struct harness_ack *ring, unsigned int next, int mid, int *rc)
{
	unsigned int i;
	unsigned int n = next < HARNESS_ACK_RING ? next : HARNESS_ACK_RING;

	for (i = 0; i < n; i++) {
		const struct harness_ack *a = &ring[(next - 1 - i) % HARNESS_ACK_RING];

		if (a->mid == mid) {
			*rc = a->rc;
			return true;
		}
	}
	return false;
}

static void on_connect_cb(struct mosquitto *mosq, void *userdata, int rc, int flags,
                          const mosquitto_property *props)
{
	struct client *c = userdata;

	(void)mosq;
	(void)flags;
	(void)props;
	c->connack = true;
	c->connack_rc = rc;
}

static void on_disconnect_cb(struct mosquitto *mosq, void *userdata, int rc,
                             const mosquitto_property *props)
{
	struct client *c = userdata;

	(void)mosq;
	(void)props;
	/* libmosquitto reports a server DISCONNECT and then, on the next read of the closed
	 * socket, a lost connection: keep the first, more telling reason. */
	if (!c->closed)
		c->disconnect_rc = rc;
	c->closed = true;
}

static void on_publish_cb(struct mosquitto *mosq, void *userdata, int mid, int rc,
                          const mosquitto_property *props)
{
	struct client *c = userdata;

	(void)mosq;
	(void)props;
	ack_push(c->pub_acks, &c->pub_next, mid, rc);
}

static void on_subscribe_cb(struct mosquitto *mosq, void *userdata, int mid, int qos_count,
                            const int *granted_qos, const mosquitto_property *props)
{
	struct client *c = userdata;

	(void)mosq;
	(void)props;
	ack_push(c->sub_acks, &c->sub_next, mid, qos_count > 0 ? granted_qos[0] : -1);
}

static void on_message_cb(struct mosquitto *mosq, void *userdata,
                          const struct mosquitto_message *mm, const mosquitto_property *props)
{
	struct client *c = userdata;
	struct harness_msg_node *node;
	struct msg *m;
	uint8_t format;
	char *content_type = NULL;
	char *response_topic = NULL;
	void *correlation = NULL;
	uint16_t correlation_len = 0;

	(void)mosq;
	if (c->sync_topic && strcmp(mm->topic, c->sync_topic) == 0) {
		char marker[32];
		size_t n = mm->payloadlen > 0 && (size_t)mm->payloadlen < sizeof(marker)
		               ? (size_t)mm->payloadlen
		               : 0;

		memcpy(marker, mm->payload, n);
		marker[n] = '\0';
		if (strtol(marker, NULL, 10) > c->sync_seen)
			c->sync_seen = strtol(marker, NULL, 10);
		return;
	}
	m = harness_xcalloc(1, sizeof(*m));
	m->topic = harness_xstrdup(mm->topic);
	m->payloadlen = mm->payloadlen;
	m->payload = harness_xcalloc((size_t)mm->payloadlen + 1, 1);
	if (mm->payloadlen > 0)
		memcpy(m->payload, mm->payload, (size_t)mm->payloadlen);
	m->qos = mm->qos;
	m->retain = mm->retain;
	m->payload_format = -1;
	if (mosquitto_property_read_byte(props, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, &format, false))
		m->payload_format = format;
	if (mosquitto_property_read_string(props, MQTT_PROP_CONTENT_TYPE, &content_type, false)) {
		/* libmosquitto allocated it with malloc; keep our own copy for msg_free. */
		m->content_type = harness_xstrdup(content_type);
		free(content_type);
	}
	if (mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &correlation,
	                                   &correlation_len, false)) {
		m->correlation = harness_xcalloc((size_t)correlation_len + 1, 1);
		memcpy(m->correlation, correlation, correlation_len);
		m->correlation_len = correlation_len;
		free(correlation);
	}
	if (mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &response_topic,
	                                   false)) {
		m->response_topic = harness_xstrdup(response_topic);
		free(response_topic);
	}
	node = harness_xcalloc(1, sizeof(*node));
	node->m = m;
	if (c->tail)
		c->tail->next = node;
	else
		c->head = node;
	c->tail = node;
	c->queued++;
}

void client_free(struct client *c)
{
	struct client **pp;
	struct harness_msg_node *node;

	for (pp = &harness_clients; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			harness_client_count--;
			break;
		}
	}
	mosquitto_destroy(c->mosq);
	node = c->head;
	while (node) {
		struct harness_msg_node *next = node->next;

		msg_free(node->m);
		free(node);
		node = next;
	}
	free(c->sync_topic);
	free(c);
}

static bool client_connack_cond(const void *arg)
{
	const struct client *c = arg;

	return c->connack || c->closed;
}

int client_connect_rc(struct broker *b, const struct client_opts *o, struct client **out)
{
	struct client_opts none = {0};
	struct client *c;
	mosquitto_property *props = NULL;
	int version = MQTT_PROTOCOL_V311;
	int keepalive;
	int rc;
	int flags;
	struct strbuf topic = {0};

	harness_init();
	*out = NULL;
	if (!o)
		o = &none;
	if (o->persistent && !o->id)
		fail_msg("a persistent client needs an id");
	if (o->protocol == 5)
		version = MQTT_PROTOCOL_V5;
	else if (o->protocol == 3)
		version = MQTT_PROTOCOL_V31;
	keepalive = o->keepalive == 0 ? 60 : (o->keepalive < 0 ? 0 : o->keepalive);

	c = harness_xcalloc(1, sizeof(*c));
	c->broker = b;
	c->scale = b->scale;
	c->protocol = version == MQTT_PROTOCOL_V5 ? 5 : (version == MQTT_PROTOCOL_V31 ? 3 : 4);
	c->connack_rc = -1;
	c->disconnect_rc = -1;
	sb_printf(&topic, HARNESS_SYNC_PREFIX "%ld-%u", (long)getpid(), ++harness_client_seq);
	c->sync_topic = sb_take(&topic);
	c->mosq = mosquitto_new(o->id, !o->persistent, c);
	if (!c->mosq)
		fail_msg("mosquitto_new(%s) failed: %s", o->id ? o->id : "(random)",
		         strerror(errno));
	mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, version);
	if (o->username &&
	    mosquitto_username_pw_set(c->mosq, o->username, o->password) != MOSQ_ERR_SUCCESS)
		fail_msg("mosquitto_username_pw_set(%s) failed", o->username);
	if (o->will_topic) {
		const char *wp = o->will_payload ? o->will_payload : "";

		rc = mosquitto_will_set_v5(c->mosq, o->will_topic, (int)strlen(wp), wp, o->will_qos,
		                           o->will_retain, NULL);
		if (rc != MOSQ_ERR_SUCCESS)
			fail_msg("mosquitto_will_set(%s): %s", o->will_topic,
			         mosquitto_strerror(rc));
	}
	mosquitto_connect_v5_callback_set(c->mosq, on_connect_cb);
	mosquitto_disconnect_v5_callback_set(c->mosq, on_disconnect_cb);
	mosquitto_publish_v5_callback_set(c->mosq, on_publish_cb);
	mosquitto_subscribe_v5_callback_set(c->mosq, on_subscribe_cb);
	mosquitto_message_v5_callback_set(c->mosq, on_message_cb);
	if (version == MQTT_PROTOCOL_V5 && o->persistent)
		mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, 300);

	rc = mosquitto_connect_bind_v5(c->mosq, "127.0.0.1", b->port, keepalive, NULL, props);
	mosquitto_property_free_all(&props);
	if (rc != MOSQ_ERR_SUCCESS) {
		client_free(c);
		return -1;
	}
	/* The socket must not leak into brokers started later (see
	 * harness_close_inherited_fds). */
	flags = fcntl(mosquitto_socket(c->mosq), F_GETFD);
	if (flags >= 0)
		(void)fcntl(mosquitto_socket(c->mosq), F_SETFD, flags | FD_CLOEXEC);

	c->next = harness_clients;
	harness_clients = c;
	harness_client_count++;
	harness_until(client_connack_cond, c, -1,
	              harness_scaled(HARNESS_CLIENT_TIMEOUT_MS, c->scale));
	if (c->connack && c->connack_rc == 0 && !c->closed) {
		*out = c;
		return 0;
	}
	rc = c->connack && c->connack_rc != 0 ? c->connack_rc : -1;
	client_free(c);
	return rc;
}

struct client *client_connect(struct broker *b, const struct client_opts *o)
{
	struct client *c = NULL;
	int rc = client_connect_rc(b, o, &c);

	if (rc != 0 || !c) {
		broker_log_refresh(b);
		fail_msg("client %s (user %s) was not accepted: CONNACK %d; broker log tail:\n%s",
		         o && o->id ? o->id : "(random id)",
		         o && o->username ? o->username : "(none)", rc, harness_tail(b->log.s));
	}
	return c;
}

struct client *client_connect_as(struct broker *b, const char *id, const char *username,
                                 int protocol)
{
	struct client_opts o = {.id = id, .username = username, .protocol = protocol};

	return client_connect(b, &o);
}

struct client *client_watch(struct broker *b, const char *id, const char *filter)
{
	struct client *w = client_connect_as(b, id, NULL, 5);
	int granted = client_subscribe(w, filter, 1);

	if (granted != 1)
		fail_msg("watcher %s: the subscription to %s was answered %d, not QoS 1", id,
		         filter, granted);
	return w;
}

int expect_refused(struct broker *b, const struct client_opts *o)
{
	struct client *c = NULL;
	int rc = client_connect_rc(b, o, &c);

	if (rc == 0 || c) {
		if (c)
			client_free(c);
		fail_msg(
		    "client %s (user %s) was accepted, but should have been refused (CONNACK %d)",
		    o && o->id ? o->id : "(random id)", o && o->username ? o->username : "(none)",
		    rc);
	}
	return rc;
}

struct ack_wait {
	const struct client *c;
	bool sub;
	int mid;
	int rc;
};

static bool client_ack_cond(const void *arg)
{
	/* The condition records the acknowledgement's code in the wait record. */
	struct ack_wait *w = (struct ack_wait *)(uintptr_t)arg;

	if (w->sub ? ack_find(w->c->sub_acks, w->c->sub_next, w->mid, &w->rc)
	           : ack_find(w->c->pub_acks, w->c->pub_next, w->mid, &w->rc))
		return true;
	return w->c->closed;
}

int client_subscribe(struct client *c, const char *filter, int qos)
{
	struct ack_wait w = {c, true, 0, -1};
	int rc;

	if (c->closed)
		return -1;
	rc = mosquitto_subscribe_v5(c->mosq, &w.mid, filter, qos, 0, NULL);
	if (rc != MOSQ_ERR_SUCCESS)
		return -1;
	if (!harness_until(client_ack_cond, &w, -1,
	                   harness_scaled(HARNESS_CLIENT_TIMEOUT_MS, c->scale)))
		return -1;
	return ack_find(c->sub_acks, c->sub_next, w.mid, &rc) ? rc : -1;
}

int client_publish_props(struct client *c, const char *topic, const void *payload, int len, int qos,
                         bool retain, const mosquitto_property *props)
{
	struct ack_wait w = {c, false, 0, -1};
	int rc;

	if (c->closed)
		return -1;
	rc = mosquitto_publish_v5(c->mosq, &w.mid, topic, len, payload, qos, retain, props);
	if (rc != MOSQ_ERR_SUCCESS)
		return -1;
	if (!harness_until(client_ack_cond, &w, -1,
	                   harness_scaled(HARNESS_CLIENT_TIMEOUT_MS, c->scale)))
		return -1;
	return ack_find(c->pub_acks, c->pub_next, w.mid, &rc) ? rc : -1;
}

int client_publish(struct client *c, const char *topic, const void *payload, int len, int qos,
                   bool retain)
{
	return client_publish_props(c, topic, payload, len, qos, retain, NULL);
}

/* Whether a client_publish result acknowledges success (see expect_publish_ok). */
static bool publish_acknowledged(int rc)
{
	return rc == 0 || rc == MQTT_RC_NO_MATCHING_SUBSCRIBERS;
}

void expect_publish_ok(int rc)
{
	if (!publish_acknowledged(rc))
		fail_msg("the publish was not acknowledged as a success: %d (0x%02x)", rc,
		         (unsigned)rc & 0xffu);
}

void publish_text_ok(struct client *c, const char *topic, const char *text, int qos)
{
	int rc = client_publish(c, topic, text, (int)strlen(text), qos, false);

	if (!publish_acknowledged(rc))
		fail_msg(
		    "the publish to %s (QoS %d) was not acknowledged as a success: %d (0x%02x)",
		    topic, qos, rc, (unsigned)rc & 0xffu);
}

static bool client_msg_cond(const void *arg)
{
	const struct client *c = arg;

	return c->head != NULL || c->closed;
}

struct msg *client_wait_msg(struct client *c, int timeout_ms)
{
	struct harness_msg_node *node;
	struct msg *m;

	harness_until(client_msg_cond, c, -1, harness_scaled(timeout_ms, c->scale));
	node = c->head;
	if (!node)
		return NULL;
	c->head = node->next;
	if (!c->head)
		c->tail = NULL;
	c->queued--;
	m = node->m;
	free(node);
	return m;
}

/* Whether m is a client_sync round-trip marker (of another client: c's own never queue). */
static bool msg_is_sync_marker(const struct msg *m)
{
	return strncmp(m->topic, HARNESS_SYNC_PREFIX, strlen(HARNESS_SYNC_PREFIX)) == 0;
}

struct msg *client_next_msg(struct client *c, int timeout_ms)
{
	struct msg *m;

	while ((m = client_wait_msg(c, timeout_ms)) != NULL && msg_is_sync_marker(m))
		msg_free(m);
	return m;
}

const char *client_broker_exit_note(struct client *c)
{
	if (!c->broker || broker_running(c->broker))
		return "";
	broker_log_refresh(c->broker);
	return harness_tail(c->broker->log.s);
}

void expect_msg(struct client *c, const char *topic, const char *payload, int qos, bool retain)
{
	struct msg *m = client_next_msg(c, HARNESS_CLIENT_TIMEOUT_MS);
	size_t len = strlen(payload);

	if (!m) {
		const char *tail = client_broker_exit_note(c);

		fail_msg("expected a message on %s (%s), got nothing within %d ms%s%s", topic,
		         payload, harness_scaled(HARNESS_CLIENT_TIMEOUT_MS, c->scale),
		         *tail ? "; the broker has exited:\n" : "", tail);
	}
	if (strcmp(m->topic, topic) != 0 || (size_t)m->payloadlen != len ||
	    memcmp(m->payload, payload, len) != 0)
		fail_msg("expected a message on %s: %s\ngot one on %s: %.*s", topic, payload,
		         m->topic, m->payloadlen, m->payload);
	if (qos >= 0 && m->qos != qos)
		fail_msg("the message on %s came at QoS %d, not %d", topic, m->qos, qos);
	if (m->retain != retain)
		fail_msg("the message on %s has retain %d, expected %d", topic, m->retain, retain);
	msg_free(m);
}

size_t client_queued(const struct client *c)
{
	return c->queued;
}

void msg_free(struct msg *m)
{
	if (!m)
		return;
	free(m->topic);
	free(m->payload);
	free(m->content_type);
	free(m->correlation);
	free(m->response_topic);
	free(m);
}

static bool client_sync_cond(const void *arg)
{
	const struct client *c = arg;

	return c->sync_seen >= c->sync_sent || c->closed;
}

bool client_sync(struct client *c, int timeout_ms)
{
	char marker[32];
	int rc;

	if (c->closed)
		return false;
	if (!c->sync_subscribed) {
		rc = client_subscribe(c, c->sync_topic, 1);
		if (rc < 0 || rc > 2)
			return false;
		c->sync_subscribed = true;
	}
	snprintf(marker, sizeof(marker), "%ld", ++c->sync_sent);
	if (client_publish(c, c->sync_topic, marker, (int)strlen(marker), 1, false) < 0)
		return false;
	harness_until(client_sync_cond, c, -1, harness_scaled(timeout_ms, c->scale));
	return c->sync_seen >= c->sync_sent;
}

void expect_nothing(struct client *c)
{
	struct msg *m;

	if (!client_sync(c, HARNESS_CLIENT_TIMEOUT_MS))
		fail_msg("expect_nothing: the round trip through the broker did not complete");
	m = client_next_msg(c, 0);
	if (m)
		fail_msg("unexpected message on %s: %.*s", m->topic, m->payloadlen, m->payload);
}

void client_drain(struct client *c)
{
	struct msg *m;

	if (!client_sync(c, HARNESS_CLIENT_TIMEOUT_MS))
		fail_msg("client_drain: the round trip through the broker did not complete");
	while ((m = client_wait_msg(c, 0)) != NULL)
		msg_free(m);
}

static bool client_closed_cond(const void *arg)
{
	const struct client *c = arg;

	return c->closed;
}

struct eof_wait {
	int fd;
	bool eof;
};

static bool eof_cond(const void *arg)
{
	/* The condition records end of file in the wait record. */
	struct eof_wait *w = (struct eof_wait *)(uintptr_t)arg;
	char sink[4096];

	while (!w->eof) {
		struct pollfd pfd = {.fd = w->fd, .events = POLLIN};
		ssize_t r;

		if (poll(&pfd, 1, 0) <= 0)
			break;
		r = read(w->fd, sink, sizeof(sink));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			w->eof = true;
	}
	return w->eof;
}

/* Waits (bounded) until the broker closes its end of fd, discarding what it still sends, then
 * closes fd. */
static void client_wait_broker_close(int fd, int scale)
{
	struct eof_wait w = {fd, false};

	harness_until(eof_cond, &w, fd, harness_scaled(HARNESS_CLIENT_TIMEOUT_MS, scale));
	close(fd);
}

void client_disconnect(struct client *c)
{
	int sock = mosquitto_socket(c->mosq);
	int dup_fd = -1;

	if (!c->closed && sock >= 0) {
		/* libmosquitto closes its socket right after writing DISCONNECT; a duplicate
		 * keeps the connection open until the broker has processed the DISCONNECT and
		 * closed its end, so that when this returns the broker knows. */
		dup_fd = fcntl(sock, F_DUPFD_CLOEXEC, 3);
		if (mosquitto_disconnect_v5(c->mosq, 0, NULL) == MOSQ_ERR_SUCCESS)
			harness_until(client_closed_cond, c, -1,
			              harness_scaled(HARNESS_CLIENT_TIMEOUT_MS, c->scale));
	}
	if (dup_fd >= 0)
		client_wait_broker_close(dup_fd, c->scale);
	client_free(c);
}

void client_drop(struct client *c)
{
	int sock = mosquitto_socket(c->mosq);
	int scale = c->scale;
	int dup_fd = -1;

	if (!c->closed && sock >= 0) {
		/* A FIN without DISCONNECT: for the broker the network connection was lost.
		 * Then wait until the broker has noticed and closed its end. */
		dup_fd = fcntl(sock, F_DUPFD_CLOEXEC, 3);
		(void)shutdown(sock, SHUT_WR);
	}
	client_free(c);
	if (dup_fd >= 0)
		client_wait_broker_close(dup_fd, scale);
}

bool client_wait_closed(struct client *c, int timeout_ms)
{
	return harness_until(client_closed_cond, c, -1, harness_scaled(timeout_ms, c->scale));
}

int client_disconnect_reason(const struct client *c)
{
	return c->closed ? c->disconnect_rc : -1;
}

struct mosquitto *client_mosq(struct client *c)
{
	return c->mosq;
}
