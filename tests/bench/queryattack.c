/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * queryattack: the query amplification attack of issue 11, for tests/bench/query_attack.sh.
 *
 * Raw MQTT 3.1.1 over blocking sockets to 127.0.0.1 only; every read has a deadline.
 *   queryattack setup PORT USERS STATE_BYTES
 *       connects users big0..big<USERS-1> one after the other, each writes a state of about
 *       STATE_BYTES bytes (one key) at QoS 1 and disconnects (the broker must keep state).
 *   queryattack reply PORT NAME COUNT
 *       sends one query naming NAME COUNT times and prints the reply's payload size and the
 *       request's: request_bytes=... reply_bytes=...
 *   queryattack replymany PORT USERS
 *       the same for one query naming big0..big<USERS-1> once each.
 *   queryattack flood PORT REQUESTS NAME COUNT
 *       connects as "attacker", sends REQUESTS such queries at QoS 0 and never reads its
 *       socket; prints "sent" once all are written, then waits for stdin to close.
 *   queryattack floodmany PORT REQUESTS USERS
 *       the same with the query naming big0..big<USERS-1>.
 * Exit status 0, or 1 on any error (printed).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONTROL "$CONTROL/presence/v1"

static void die(const char *what)
{
	fprintf(stderr, "queryattack: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int dial(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		die("connect");
	}
	return fd;
}

static void send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n <= 0) {
			die("write");
		}
		p += n;
		len -= (size_t)n;
	}
}

/* Reads exactly len bytes within 30 s. */
static void recv_all(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&pfd, 1, 30000) != 1) {
			errno = ETIMEDOUT;
			die("read");
		}
		n = read(fd, p, len);
		if (n <= 0) {
			die("read");
		}
		p += n;
		len -= (size_t)n;
	}
}

/* Appends the remaining length of len to out; returns its size. */
static size_t varint(size_t len, unsigned char *out)
{
	size_t n = 0;

	do {
		unsigned char b = (unsigned char)(len % 128);

		len /= 128;
		out[n++] = (unsigned char)(b | (len > 0 ? 0x80 : 0));
	} while (len > 0);
	return n;
}

/* Sends one packet: type byte, then body. */
static void send_packet(int fd, unsigned char type, const unsigned char *body, size_t len)
{
	unsigned char head[5];
	size_t n;

	head[0] = type;
	n = 1 + varint(len, head + 1);
	send_all(fd, head, n);
	send_all(fd, body, len);
}

/* Reads one packet; returns its type byte and the body in *body (free it), *len its size. */
static unsigned char read_packet(int fd, unsigned char **body, size_t *len)
{
	unsigned char type, b;
	size_t mult = 1;

	recv_all(fd, &type, 1);
	*len = 0;
	do {
		recv_all(fd, &b, 1);
		*len += (b & 0x7Fu) * mult;
		mult *= 128;
	} while (b & 0x80u);
	*body = malloc(*len + 1);
	if (*body == NULL) {
		die("malloc");
	}
	recv_all(fd, *body, *len);
	return type;
}

static size_t put_string(unsigned char *out, const char *s, size_t len)
{
	out[0] = (unsigned char)(len >> 8);
	out[1] = (unsigned char)len;
	memcpy(out + 2, s, len);
	return len + 2;
}

/* Connects as id (and username, NULL for none) with a clean session; waits for CONNACK 0. */
static int mqtt_connect(int port, const char *id, const char *username)
{
	unsigned char body[512], *ack;
	size_t n = 0, len;
	int fd = dial(port);

	n += put_string(body + n, "MQTT", 4);
	body[n++] = 4;
	body[n++] = (unsigned char)(0x02 | (username != NULL ? 0x80 : 0));
	body[n++] = 0;
	body[n++] = 60;
	n += put_string(body + n, id, strlen(id));
	if (username != NULL) {
		n += put_string(body + n, username, strlen(username));
	}
	send_packet(fd, 0x10, body, n);
	if (read_packet(fd, &ack, &len) != 0x20 || len != 2 || ack[1] != 0) {
		fprintf(stderr, "queryattack: connect %s refused\n", id);
		exit(1);
	}
	free(ack);
	return fd;
}

/* Publishes payload on topic at qos (0 or 1, packet id 1); at QoS 1 waits for the PUBACK. */
static void mqtt_publish(int fd, const char *topic, const char *payload, size_t len, int qos)
{
	size_t tlen = strlen(topic);
	unsigned char *body = malloc(tlen + len + 4);
	size_t n;

	if (body == NULL) {
		die("malloc");
	}
	n = put_string(body, topic, tlen);
	if (qos == 1) {
		body[n++] = 0;
		body[n++] = 1;
	}
	memcpy(body + n, payload, len);
	send_packet(fd, (unsigned char)(0x30 | (qos << 1)), body, n + len);
	free(body);
	if (qos == 1) {
		unsigned char *ack;
		size_t alen;

		/* Documents or notices may come first: skip to the PUBACK. */
		while (read_packet(fd, &ack, &alen) != 0x40) {
			free(ack);
		}
		free(ack);
	}
}

static void mqtt_disconnect(int fd)
{
	unsigned char d[2] = {0xE0, 0};

	send_all(fd, d, 2);
	close(fd);
}

/* Builds a query naming each of names (count of them) in one command. Free the result. */
static char *query(const char *const *names, size_t count, size_t *len)
{
	size_t size = 64, n = 0;
	char *q;

	for (size_t i = 0; i < count; i++) {
		size += strlen(names[i]) + 3;
	}
	q = malloc(size);
	if (q == NULL) {
		die("malloc");
	}
	n += (size_t)snprintf(q, size,
	                      "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[");
	for (size_t i = 0; i < count; i++) {
		n += (size_t)snprintf(q + n, size - n, "%s\"%s\"", i > 0 ? "," : "", names[i]);
	}
	n += (size_t)snprintf(q + n, size - n, "]}]}");
	*len = n;
	return q;
}

/* The names of a query: name count times, or big0..big<count-1> when name is NULL. */
static const char **names_of(const char *name, size_t count)
{
	const char **names = calloc(count, sizeof(*names));

	if (names == NULL) {
		die("calloc");
	}
	for (size_t i = 0; i < count; i++) {
		if (name != NULL) {
			names[i] = name;
		} else {
			char *big = malloc(24);

			if (big == NULL) {
				die("malloc");
			}
			snprintf(big, 24, "big%zu", i);
			names[i] = big;
		}
	}
	return names;
}

static int reply(int port, const char *name, size_t count)
{
	size_t qlen, len;
	const char **names = names_of(name, count);
	char *q = query(names, count, &qlen);
	int fd = mqtt_connect(port, "measurer", NULL);
	unsigned char *body;

	mqtt_publish(fd, CONTROL, q, qlen, 0);
	while (read_packet(fd, &body, &len) >> 4 != 3) {
		free(body);
	}
	/* PUBLISH QoS 0: topic length, topic, payload. */
	printf("request_bytes=%zu reply_bytes=%zu\n", qlen,
	       len - 2 - ((size_t)body[0] << 8 | body[1]));
	free(body);
	mqtt_disconnect(fd);
	free(q);
	return 0;
}

static int flood(int port, size_t requests, const char *name, size_t count)
{
	size_t qlen;
	const char **names = names_of(name, count);
	char *q = query(names, count, &qlen);
	int fd = mqtt_connect(port, "attacker", NULL);
	char c;

	for (size_t i = 0; i < requests; i++) {
		mqtt_publish(fd, CONTROL, q, qlen, 0);
	}
	printf("sent request_bytes=%zu requests=%zu\n", qlen, requests);
	fflush(stdout);
	/* Never read the socket; hold it open until stdin closes. */
	while (read(0, &c, 1) > 0) {
	}
	close(fd);
	free(q);
	return 0;
}

static int setup(int port, size_t users, size_t state_bytes)
{
	char *payload = malloc(state_bytes + 1);
	char id[32], topic[64];

	if (payload == NULL) {
		die("malloc");
	}
	memset(payload, 'x', state_bytes);
	for (size_t i = 0; i < users; i++) {
		int fd;

		snprintf(id, sizeof(id), "big%zu", i);
		snprintf(topic, sizeof(topic), "presence/big%zu/state/blob", i);
		fd = mqtt_connect(port, id, id);
		mqtt_publish(fd, topic, payload, state_bytes, 1);
		mqtt_disconnect(fd);
	}
	free(payload);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "setup") == 0) {
		return setup(atoi(argv[2]), (size_t)atol(argv[3]), (size_t)atol(argv[4]));
	}
	if (argc == 5 && strcmp(argv[1], "reply") == 0) {
		return reply(atoi(argv[2]), argv[3], (size_t)atol(argv[4]));
	}
	if (argc == 4 && strcmp(argv[1], "replymany") == 0) {
		return reply(atoi(argv[2]), NULL, (size_t)atol(argv[3]));
	}
	if (argc == 6 && strcmp(argv[1], "flood") == 0) {
		return flood(atoi(argv[2]), (size_t)atol(argv[3]), argv[4], (size_t)atol(argv[5]));
	}
	if (argc == 5 && strcmp(argv[1], "floodmany") == 0) {
		return flood(atoi(argv[2]), (size_t)atol(argv[3]), NULL, (size_t)atol(argv[4]));
	}
	fprintf(stderr, "usage: see the head of queryattack.c\n");
	return 1;
}
