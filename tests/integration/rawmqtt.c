/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * A raw-socket MQTT 3.1.1 client for the integration tests (see rawmqtt.h).
 *
 * Packets are built into caller buffers so that several can go out in one write, which is how a
 * test pipelines CONNECT and PUBLISH. Reads go through poll() against one deadline taken from
 * the monotonic clock and read exactly the bytes of one packet, so nothing is ever left in a
 * user-space buffer.
 */
#include "rawmqtt.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Largest value the MQTT remaining-length field can hold. */
#define RAW_MAX_REMAINING 268435455u

/* Milliseconds on the monotonic clock. */
static long long raw_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline, clamped to 0..INT_MAX-ish for poll(). */
static int raw_left_ms(long long deadline)
{
	long long left = deadline - raw_now_ms();

	if (left < 0)
		return 0;
	if (left > 1000000)
		return 1000000;
	return (int)left;
}

int raw_open(int port)
{
	struct sockaddr_in addr;
	int fd;
	int one = 1;

	if (port <= 0 || port > 65535) {
		errno = EINVAL;
		return -1;
	}
	/* Close-on-exec: a broker started later must not inherit the connection. */
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (const struct sockaddr *)&addr, sizeof(addr)) != 0) {
		int saved = errno;

		close(fd);
		errno = saved;
		return -1;
	}
	/* Small packets must leave at once; a test waits for their effect. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Bytes the remaining-length field takes for value n. */
static size_t raw_varint_size(size_t n)
{
	size_t size = 1;

	while (n >= 128) {
		n /= 128;
		size++;
	}
	return size;
}

/* Writes the fixed header (first byte and remaining length) at buf[*len]. The caller has
 * checked that it fits. */
static void raw_put_header(uint8_t *buf, size_t *len, uint8_t first, size_t remaining)
{
	buf[(*len)++] = first;
	do {
		uint8_t digit = (uint8_t)(remaining % 128);

		remaining /= 128;
		if (remaining > 0)
			digit |= 0x80;
		buf[(*len)++] = digit;
	} while (remaining > 0);
}

static void raw_put_u16(uint8_t *buf, size_t *len, uint16_t v)
{
	buf[(*len)++] = (uint8_t)(v >> 8);
	buf[(*len)++] = (uint8_t)(v & 0xff);
}

/* Writes a length-prefixed string or byte field. The caller has checked n <= 65535. */
static void raw_put_field(uint8_t *buf, size_t *len, const void *p, size_t n)
{
	raw_put_u16(buf, len, (uint16_t)n);
	if (n > 0)
		memcpy(buf + *len, p, n);
	*len += n;
}

/* Checks that a packet with this remaining length fits in buf[*len..cap). */
static bool raw_fits(size_t cap, size_t len, size_t remaining)
{
	size_t total;

	if (remaining > RAW_MAX_REMAINING)
		return false;
	total = 1 + raw_varint_size(remaining) + remaining;
	return len <= cap && total <= cap - len;
}

int raw_build_connect(uint8_t *buf, size_t cap, size_t *len, const char *id, const char *user,
                      const char *pass, int keepalive, bool clean)
{
	size_t id_len = id ? strlen(id) : 0;
	size_t user_len = user ? strlen(user) : 0;
	size_t pass_len = (user && pass) ? strlen(pass) : 0;
	size_t remaining;
	uint8_t flags = 0;

	if (keepalive < 0 || keepalive > 65535 || id_len > 65535 || user_len > 65535 ||
	    pass_len > 65535)
		return -1;
	/* Protocol name, level, flags, keepalive, then the client id. */
	remaining = 6 + 1 + 1 + 2 + 2 + id_len;
	if (clean)
		flags |= 0x02;
	if (user) {
		flags |= 0x80;
		remaining += 2 + user_len;
		if (pass) {
			flags |= 0x40;
			remaining += 2 + pass_len;
		}
	}
	if (!raw_fits(cap, *len, remaining))
		return -1;
	raw_put_header(buf, len, (uint8_t)(RAW_CONNECT << 4), remaining);
	raw_put_field(buf, len, "MQTT", 4);
	buf[(*len)++] = 4;
	buf[(*len)++] = flags;
	raw_put_u16(buf, len, (uint16_t)keepalive);
	raw_put_field(buf, len, id ? id : "", id_len);
	if (user) {
		raw_put_field(buf, len, user, user_len);
		if (pass)
			raw_put_field(buf, len, pass, pass_len);
	}
	return 0;
}

int raw_build_publish(uint8_t *buf, size_t cap, size_t *len, const char *topic, const void *p,
                      size_t n, int qos, bool retain, uint16_t mid)
{
	size_t topic_len = strlen(topic);
	size_t remaining;
	uint8_t first = (uint8_t)(RAW_PUBLISH << 4);

	if (qos < 0 || qos > 2 || topic_len > 65535 || (n > 0 && !p))
		return -1;
	remaining = 2 + topic_len + (qos > 0 ? 2 : 0);
	if (n > RAW_MAX_REMAINING - remaining)
		return -1;
	remaining += n;
	if (!raw_fits(cap, *len, remaining))
		return -1;
	first |= (uint8_t)(qos << 1);
	if (retain)
		first |= 0x01;
	raw_put_header(buf, len, first, remaining);
	raw_put_field(buf, len, topic, topic_len);
	if (qos > 0)
		raw_put_u16(buf, len, mid);
	if (n > 0)
		memcpy(buf + *len, p, n);
	*len += n;
	return 0;
}

int raw_build_subscribe(uint8_t *buf, size_t cap, size_t *len, const char *filter, int qos,
                        uint16_t mid)
{
	size_t filter_len = strlen(filter);
	size_t remaining;

	if (qos < 0 || qos > 2 || filter_len > 65535)
		return -1;
	remaining = 2 + 2 + filter_len + 1;
	if (!raw_fits(cap, *len, remaining))
		return -1;
	/* SUBSCRIBE has the fixed flags 0b0010. */
	raw_put_header(buf, len, (uint8_t)((RAW_SUBSCRIBE << 4) | 0x02), remaining);
	raw_put_u16(buf, len, mid);
	raw_put_field(buf, len, filter, filter_len);
	buf[(*len)++] = (uint8_t)qos;
	return 0;
}

int raw_build_disconnect(uint8_t *buf, size_t cap, size_t *len)
{
	if (!raw_fits(cap, *len, 0))
		return -1;
	raw_put_header(buf, len, (uint8_t)(RAW_DISCONNECT << 4), 0);
	return 0;
}

int raw_write_all(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;

	while (n > 0) {
		/* MSG_NOSIGNAL: a closed peer is an error to report, not a SIGPIPE that kills
		 * the test. */
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int raw_send_connect(int fd, const char *id, const char *user, const char *pass, int keepalive,
                     bool clean)
{
	uint8_t buf[1024];
	size_t len = 0;

	if (raw_build_connect(buf, sizeof(buf), &len, id, user, pass, keepalive, clean) != 0)
		return -1;
	return raw_write_all(fd, buf, len);
}

int raw_send_publish(int fd, const char *topic, const void *p, size_t n, int qos, bool retain,
                     uint16_t mid)
{
	/* Fixed header (at most 5 bytes), topic field, packet id, payload. */
	size_t cap = 5 + 2 + strlen(topic) + 2 + n;
	size_t len = 0;
	uint8_t *buf;
	int rc = -1;

	if (cap < n)
		return -1;
	buf = malloc(cap);
	if (!buf)
		return -1;
	if (raw_build_publish(buf, cap, &len, topic, p, n, qos, retain, mid) == 0)
		rc = raw_write_all(fd, buf, len);
	free(buf);
	return rc;
}

int raw_send_subscribe(int fd, const char *filter, int qos, uint16_t mid)
{
	uint8_t buf[1024];
	size_t len = 0;

	if (raw_build_subscribe(buf, sizeof(buf), &len, filter, qos, mid) != 0)
		return -1;
	return raw_write_all(fd, buf, len);
}

int raw_send_disconnect(int fd)
{
	uint8_t buf[2];
	size_t len = 0;

	if (raw_build_disconnect(buf, sizeof(buf), &len) != 0)
		return -1;
	return raw_write_all(fd, buf, len);
}

/* Reads exactly n bytes into buf (or drops them when buf is NULL) before deadline. Returns 0,
 * or -1 on timeout, end of file or error. */
static int raw_read_exact(int fd, uint8_t *buf, size_t n, long long deadline)
{
	uint8_t sink[512];

	while (n > 0) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		size_t want = buf ? n : (n < sizeof(sink) ? n : sizeof(sink));
		ssize_t r;
		int rc = poll(&pfd, 1, raw_left_ms(deadline));

		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			return -1;
		r = read(fd, buf ? buf : sink, want);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		if (buf)
			buf += r;
		n -= (size_t)r;
	}
	return 0;
}

int raw_read_packet(int fd, uint8_t *type, uint8_t *buf, size_t cap, size_t *len, int timeout_ms)
{
	long long deadline = raw_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	uint8_t first;
	size_t remaining = 0;
	size_t multiplier = 1;
	int i;

	if (raw_read_exact(fd, &first, 1, deadline) != 0)
		return -1;
	for (i = 0; i < 4; i++) {
		uint8_t digit;

		if (raw_read_exact(fd, &digit, 1, deadline) != 0)
			return -1;
		remaining += (size_t)(digit & 0x7f) * multiplier;
		multiplier *= 128;
		if (!(digit & 0x80))
			break;
	}
	if (i == 4)
		return -1;
	if (remaining > cap) {
		(void)raw_read_exact(fd, NULL, remaining, deadline);
		return -1;
	}
	if (raw_read_exact(fd, buf, remaining, deadline) != 0)
		return -1;
	*type = first;
	*len = remaining;
	return 0;
}

bool raw_wait_closed(int fd, int timeout_ms)
{
	long long deadline = raw_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	uint8_t sink[512];

	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t r;
		int rc = poll(&pfd, 1, raw_left_ms(deadline));

		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0)
			return true;
		if (rc == 0)
			return false;
		r = read(fd, sink, sizeof(sink));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return true;
	}
}

void raw_close(int fd)
{
	if (fd >= 0)
		close(fd);
}
