/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * loadgen: the load generator of the benchmarks (tests/bench/run.sh drives it).
 *
 * It speaks just enough MQTT 3.1.1 / 5 over raw non-blocking sockets and one epoll loop
 * (CONNECT, CONNACK, PUBLISH QoS 0/1, PUBACK, SUBSCRIBE, SUBACK, DISCONNECT), so that one
 * thread drives thousands of connections and what gets measured is the broker, not a client
 * library's per-client threads. It only ever connects to 127.0.0.1 (from 127.0.0.x source
 * addresses with --hosts, when one address has too few ports), every loop is bounded in count
 * and every wait by the --timeout deadline, and it prints one line of key=value results.
 *
 * It counts, and a run that loses anything is BROKEN, never fast: every connect must get a
 * successful CONNACK, every disconnect counts only when the broker closes the socket, and every
 * document the subscriber must see is checked off per user (a missing, duplicate or unexpected
 * one breaks the run). Exit status: 0 = OK, 2 = BROKEN (counts wrong or deadline passed),
 * 1 = bad usage or a system error.
 *
 * Modes (see usage()):
 *   storm    N users connect (at most --inflight handshakes at a time), then all disconnect, for
 *            --cycles cycles, optionally in batches. Patterns: plain (no subscriber), presence
 *            (a presence/+ subscriber must see one available:true and one available:false
 *            document per user and cycle), lastwill (each client publishes a retained "online"
 *            right after CONNACK and leaves a retained will "offline", sent by an MQTT 5
 *            DISCONNECT with reason 0x04; the subscriber must see both).
 *   state    K connected users write as fast as the broker takes them, each with --window
 *            writes outstanding; a write is complete when the presence/+ subscriber sees a
 *            document carrying its value. Patterns: presence (plugin state writes to
 *            presence/U/state/k) and retained (same-size retained publishes to presence/U).
 *   latency  one client at a time: time from writing CONNECT to the subscriber receiving the
 *            user's available:true document (presence) or "online" message (lastwill).
 *   memory   broker RSS (and the broker's own heap counter, $SYS/broker/heap/current) before
 *            and while N sessions are connected, optionally each writing a state of
 *            --state-bytes bytes.
 *   ping     one connect and disconnect, retried until the broker answers (readiness check).
 *   With --watchers W (storm, patterns presence and lastwill): instead of the one subscriber,
 *            W watchers subscribe to presence/+ with usernames w<i> (g<k>/w<i> with
 *            --user-groups), for issue 18's visibility benchmark. With --watcher-groups G,
 *            watcher i may see user u when i % G == u % G (the broker's groups say the same),
 *            else every user; every document a watcher may see must reach it exactly once, and
 *            one it may not see breaks the run. Prints the deliveries and the broker CPU per
 *            delivery.
 *   fill     N retained documents on presence/u<base>.., byte for byte (and with the MQTT 5
 *            properties) what the plugin publishes for an offline user restored from a state
 *            file after a crash (seq --seq): the bare broker's side of a comparison with a
 *            broker whose plugin knows N users. Prints the broker's RSS after them.
 *
 * Broker CPU time (--broker-pid) is the sum of the first field of
 * /proc/<pid>/task/<tid>/schedstat (nanoseconds on a CPU), read at the start and end of each
 * measured phase.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* MQTT packet types (the high nibble of the first byte). */
#define MQTT_CONNECT 1
#define MQTT_CONNACK 2
#define MQTT_PUBLISH 3
#define MQTT_PUBACK 4
#define MQTT_SUBSCRIBE 8
#define MQTT_SUBACK 9
#define MQTT_DISCONNECT 14

/* MQTT 5 property identifiers used here. */
#define PROP_RECEIVE_MAXIMUM 0x21

/* Largest packet the generator builds, and room before it for the fixed header. */
#define PKT_MAX 16384
#define PKT_HEAD 5

/* Initial receive buffer of a client and of the subscriber (both grow when needed). */
#define RX_CLIENT 256
#define RX_SUBSCRIBER 65536
/* No packet the broker sends here may be larger than this. */
#define RX_LIMIT (16u * 1024 * 1024)

/* A state run whose writes made no progress for this long has lost documents. */
#define STALL_NS (5 * (int64_t)1000000000)

#define EPOLL_BATCH 256
/* Longest single epoll wait, so that deadlines are checked often. */
#define PUMP_MS 50

/* Usernames are "u" + USER_DIGITS digits, client ids "c" + the same digits. */
#define USER_DIGITS 7
#define USER_MAX 9999999u

enum pattern {
	PATTERN_PLAIN,
	PATTERN_PRESENCE,
	PATTERN_LASTWILL,
	PATTERN_RETAINED,
};

enum conn_kind {
	KIND_CLIENT,
	KIND_SUBSCRIBER,
	KIND_MONITOR,
	/* A presence/+ subscriber of --watchers (its index in session). */
	KIND_WATCHER,
};

enum conn_state {
	/* No socket. */
	CONN_IDLE,
	/* TCP connect in progress. */
	CONN_TCP,
	/* CONNECT sent, waiting for CONNACK. */
	CONN_CONNACK,
	/* Connected. */
	CONN_UP,
	/* DISCONNECT sent, waiting for the broker to close the socket. */
	CONN_CLOSING,
};

/* One MQTT connection. */
struct conn {
	int fd;
	enum conn_kind kind;
	enum conn_state state;
	/* Client: the session's index (client id) and its user's index (username). */
	uint32_t session;
	uint32_t user;
	/* Next packet identifier for QoS 1. */
	uint16_t next_id;
	/* PUBACKs still due to this client. */
	uint32_t acks_due;
	/* State mode: the last value written and the last value a document confirmed. */
	uint32_t sent;
	uint32_t done;
	/* Latency mode: when CONNECT was written (ns, CLOCK_MONOTONIC). */
	int64_t t_connect;
	/* Received bytes not yet parsed. */
	uint8_t *rx;
	size_t rx_len, rx_cap;
	/* Bytes the kernel did not take yet (EPOLLOUT is armed while there are some). */
	uint8_t *tx;
	size_t tx_len, tx_off, tx_cap;
};

struct options {
	const char *mode;
	enum pattern pattern;
	const char *pattern_name;
	int port;
	/* Protocol level of the clients: 4 (3.1.1) or 5. */
	int protocol;
	unsigned users;
	unsigned user_base;
	unsigned sessions_per_user;
	unsigned cycles;
	unsigned batch;
	unsigned inflight;
	unsigned hosts;
	unsigned count;
	unsigned window;
	int qos;
	double duration_s;
	double timeout_s;
	size_t state_bytes;
	pid_t broker_pid;
	/* Count the CPU time of the broker's main thread only. */
	bool main_thread;
	const char *prefix;
	/* fill: the seq of the documents. */
	unsigned seq;
	/* Storm: watchers instead of the subscriber; watcher i sees user u when
	 * i % watcher_groups == u % watcher_groups (0: every user); usernames g<k>/u.. and
	 * g<k>/w.. (k = index % user_groups) when user_groups > 0. */
	unsigned watchers;
	unsigned watcher_groups;
	unsigned user_groups;
};

/* Per-user bookkeeping of the subscriber's expectations. */
#define SEEN_ONLINE 1u
#define SEEN_OFFLINE 2u
#define EXPECT_ONLINE 4u
#define EXPECT_OFFLINE 8u

struct bench {
	struct options o;
	int epfd;
	/* The clients of the current batch (index = session - batch start). */
	struct conn *conns;
	size_t conn_cap;
	struct conn sub;
	struct conn mon;
	/* --watchers, and their deliveries expected and seen in the current phase, and in all. */
	struct conn *watch;
	uint64_t watch_expected, watch_seen, deliveries;
	/* Per user (index - user_base): SEEN_* / EXPECT_* bits. */
	uint8_t *users;
	/* Documents seen and expected in the current phase. */
	uint64_t docs_expected, docs_seen;
	/* Totals. */
	uint64_t docs_total, docs_retained, docs_other, docs_unexpected;
	uint64_t connacks, closes, resets, pubacks, publishes;
	/* Handshakes (or disconnects) in flight, and PUBACKs due to all clients. */
	unsigned inflight;
	uint64_t acks_due;
	/* Latency mode: the user whose document is awaited, and when it came. */
	uint32_t await_user;
	int64_t await_t;
	/* State mode. */
	bool writing;
	uint64_t writes_done;
	int64_t t_last_done;
	/* Memory mode: the last $SYS/broker/heap/current value, and how many $SYS/broker/uptime
	 * updates came (one per sys_interval: the broker publishes the heap value only when it
	 * changed, so the uptime tells that a $SYS round has passed). */
	long long heap;
	unsigned sys_rounds;
	/* When the run must end, and the first failure. */
	int64_t deadline;
	char failure[256];
	uint8_t pkt[PKT_HEAD + PKT_MAX];
};

/* ---------------------------------------------------------------------------------------- */
/* Time, CPU, memory                                                                           */
/* ---------------------------------------------------------------------------------------- */

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Sums what each of the broker's threads says in /proc/<pid>/task/<tid>/<file>: the first
 * number (schedstat: ns on a CPU), or 1 for each thread whose state is R (stat: running). */
static int64_t broker_tasks_sum(const struct bench *b, const char *file)
{
	bool running = strcmp(file, "stat") == 0;
	char path[64];
	struct dirent *de;
	int64_t total = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)b->o.broker_pid);
	dir = opendir(path);
	if (dir == NULL) {
		return 0;
	}
	while ((de = readdir(dir)) != NULL) {
		char name[400];
		char text[512];
		size_t len;
		FILE *f;

		if (de->d_name[0] == '.') {
			continue;
		}
		/* --cpu main: the CPU time of the broker's own thread only (the one whose tid is
		 * the pid), without a plugin's threads. */
		if (b->o.main_thread && !running && atoi(de->d_name) != (int)b->o.broker_pid) {
			continue;
		}
		snprintf(name, sizeof(name), "%s/%s/%s", path, de->d_name, file);
		f = fopen(name, "r");
		if (f == NULL) {
			continue;
		}
		len = fread(text, 1, sizeof(text) - 1, f);
		fclose(f);
		text[len] = '\0';
		if (running) {
			/* "tid (comm) S ...": the state follows the last ')'. */
			const char *paren = strrchr(text, ')');

			total += paren != NULL && paren[1] == ' ' && paren[2] == 'R';
		} else {
			total += strtoll(text, NULL, 10);
		}
	}
	closedir(dir);
	return total;
}

/* The broker's CPU time in ns (all its threads), or 0 without --broker-pid. The kernel brings
 * a thread's schedstat up to date when it stops running, so this first waits (at most 50 ms)
 * until no broker thread is running: at the end of a phase the broker has just answered the
 * last packet and is on its way back to epoll_wait. */
static int64_t broker_cpu_ns(const struct bench *b)
{
	if (b->o.broker_pid <= 0) {
		return 0;
	}
	for (int i = 0; i < 500 && broker_tasks_sum(b, "stat") > 0; i++) {
		usleep(100);
	}
	return broker_tasks_sum(b, "schedstat");
}

/* The loadgen's own CPU time in ns. */
static int64_t self_cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
	       ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

/* The broker's resident set size in KiB (VmRSS), or -1. */
static long broker_rss_kib(const struct bench *b)
{
	char path[64];
	char line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)b->o.broker_pid);
	f = fopen(path, "r");
	if (f == NULL) {
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "VmRSS: %ld", &kib) == 1) {
			break;
		}
	}
	fclose(f);
	return kib;
}

/* The broker process's utime + stime in ns (/proc/<pid>/stat, in clock ticks), or 0. */
static int64_t broker_stat_ns(const struct bench *b)
{
	char path[64], text[1024];
	unsigned long long utime = 0, stime = 0;
	const char *paren;
	size_t len;
	FILE *f;

	if (b->o.broker_pid <= 0) {
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)b->o.broker_pid);
	f = fopen(path, "r");
	if (f == NULL) {
		return 0;
	}
	len = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[len] = '\0';
	/* "pid (comm) state ppid ...": utime and stime are fields 14 and 15, the 12th and 13th
	 * after the last ')'. */
	paren = strrchr(text, ')');
	if (paren == NULL ||
	    sscanf(paren + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
	           &stime) != 2) {
		return 0;
	}
	return (int64_t)((utime + stime) *
	                 (1000000000ull / (unsigned long long)sysconf(_SC_CLK_TCK)));
}

/* A measured stretch of time: wall clock, broker CPU (schedstat, and utime + stime), own
 * CPU. */
struct span {
	int64_t wall, cpu, stat, self;
};

static struct span span_begin(const struct bench *b)
{
	struct span s = {now_ns(), broker_cpu_ns(b), broker_stat_ns(b), self_cpu_ns()};

	return s;
}

/* Adds the time since begin to *total. */
static void span_end(const struct bench *b, struct span begin, struct span *total)
{
	total->wall += now_ns() - begin.wall;
	total->cpu += broker_cpu_ns(b) - begin.cpu;
	total->stat += broker_stat_ns(b) - begin.stat;
	total->self += self_cpu_ns() - begin.self;
}

/* ---------------------------------------------------------------------------------------- */
/* Failure                                                                                     */
/* ---------------------------------------------------------------------------------------- */

/* Records the first failure; the run then ends as BROKEN. */
__attribute__((format(printf, 2, 3))) static void fail(struct bench *b, const char *fmt, ...)
{
	va_list ap;

	if (b->failure[0] != '\0') {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(b->failure, sizeof(b->failure), fmt, ap);
	va_end(ap);
}

static bool failed(const struct bench *b)
{
	return b->failure[0] != '\0';
}

/* Ends the program on a system error (not a broker misbehaviour). */
__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "loadgen: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(1);
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (p == NULL) {
		die("out of memory");
	}
	return p;
}

static void *xrealloc(void *p, size_t size)
{
	p = realloc(p, size);
	if (p == NULL) {
		die("out of memory");
	}
	return p;
}

/* ---------------------------------------------------------------------------------------- */
/* Packets                                                                                     */
/* ---------------------------------------------------------------------------------------- */

/* A packet under construction in b->pkt: the body starts at PKT_HEAD, the fixed header is put
 * in front of it by pkt_finish. */
struct pkt {
	uint8_t *base;
	size_t len;
	bool overflow;
};

static struct pkt pkt_begin(struct bench *b)
{
	struct pkt p = {b->pkt, 0, false};

	return p;
}

static void pkt_bytes(struct pkt *p, const void *data, size_t len)
{
	if (p->len + len > PKT_MAX) {
		p->overflow = true;
		return;
	}
	memcpy(p->base + PKT_HEAD + p->len, data, len);
	p->len += len;
}

static void pkt_u8(struct pkt *p, unsigned v)
{
	uint8_t byte = (uint8_t)v;

	pkt_bytes(p, &byte, 1);
}

static void pkt_u16(struct pkt *p, unsigned v)
{
	uint8_t bytes[2] = {(uint8_t)(v >> 8), (uint8_t)v};

	pkt_bytes(p, bytes, 2);
}

/* A length-prefixed string. */
static void pkt_str(struct pkt *p, const char *s, size_t len)
{
	pkt_u16(p, (unsigned)len);
	pkt_bytes(p, s, len);
}

static size_t varint_encode(uint8_t *out, size_t v)
{
	size_t n = 0;

	do {
		uint8_t byte = (uint8_t)(v % 128);

		v /= 128;
		out[n++] = v > 0 ? (uint8_t)(byte | 128) : byte;
	} while (v > 0 && n < 4);
	return n;
}

/* Puts the fixed header (first byte hdr) in front of the body; returns the packet's start and
 * its whole length in *len. */
static const uint8_t *pkt_finish(struct pkt *p, unsigned hdr, size_t *len)
{
	uint8_t head[PKT_HEAD];
	size_t n;

	if (p->overflow) {
		die("packet larger than %d bytes", PKT_MAX);
	}
	head[0] = (uint8_t)hdr;
	n = 1 + varint_encode(head + 1, p->len);
	memcpy(p->base + PKT_HEAD - n, head, n);
	*len = p->len + n;
	return p->base + PKT_HEAD - n;
}

/* Reads a variable byte integer at buf (len bytes available). Returns the number of bytes it
 * took, 0 when incomplete, -1 when malformed. */
static int varint_decode(const uint8_t *buf, size_t len, uint32_t *value)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++) {
		if ((size_t)i >= len) {
			return 0;
		}
		v |= (uint32_t)(buf[i] & 127) << (7 * i);
		if ((buf[i] & 128) == 0) {
			*value = v;
			return i + 1;
		}
	}
	return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Connections                                                                                 */
/* ---------------------------------------------------------------------------------------- */

static void conn_watch(struct bench *b, struct conn *c, int op, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = c};

	if (epoll_ctl(b->epfd, op, c->fd, &ev) != 0) {
		die("epoll_ctl: %s", strerror(errno));
	}
}

/* Closes the socket; the connection can be used again. */
static void conn_close(struct bench *b, struct conn *c)
{
	if (c->kind == KIND_CLIENT) {
		b->acks_due -= c->acks_due;
	}
	if (c->fd >= 0) {
		close(c->fd); /* also removes it from the epoll set */
	}
	c->fd = -1;
	c->state = CONN_IDLE;
	c->rx_len = 0;
	c->tx_len = c->tx_off = 0;
	c->acks_due = 0;
}

/* Starts a TCP connect to 127.0.0.1:port from 127.0.0.<1 + slot % hosts>. Returns false (and
 * records a failure) when the socket cannot be made. */
static bool conn_open(struct bench *b, struct conn *c, unsigned slot)
{
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)b->o.port)};
	int one = 1;
	int fd;

	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fail(b, "socket: %s (raise ulimit -n)", strerror(errno));
		return false;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (b->o.hosts > 1) {
		struct sockaddr_in from = {.sin_family = AF_INET};

		from.sin_addr.s_addr = htonl(INADDR_LOOPBACK + slot % b->o.hosts);
		/* Let connect() pick the port per destination, so every source address has the
		 * whole ephemeral range. */
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&from, sizeof(from)) != 0) {
			fail(b, "bind 127.0.0.%u: %s", 1 + slot % b->o.hosts, strerror(errno));
			close(fd);
			return false;
		}
	}
	c->fd = fd;
	c->rx_len = 0;
	c->tx_len = c->tx_off = 0;
	if (connect(fd, (struct sockaddr *)&to, sizeof(to)) != 0 && errno != EINPROGRESS) {
		fail(b, "connect: %s", strerror(errno));
		close(fd);
		c->fd = -1;
		return false;
	}
	c->state = CONN_TCP;
	conn_watch(b, c, EPOLL_CTL_ADD, EPOLLOUT);
	return true;
}

/* Sends len bytes, keeping what the kernel does not take for EPOLLOUT. */
static void conn_send(struct bench *b, struct conn *c, const void *data, size_t len)
{
	ssize_t n = 0;

	if (c->fd < 0) {
		return;
	}
	if (c->tx_len == c->tx_off) {
		c->tx_len = c->tx_off = 0;
		n = send(c->fd, data, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				fail(b, "send: %s", strerror(errno));
				return;
			}
			n = 0;
		}
		if ((size_t)n == len) {
			return;
		}
		conn_watch(b, c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
	}
	if (c->tx_len + len - (size_t)n > c->tx_cap) {
		c->tx_cap = c->tx_len + len - (size_t)n + 4096;
		c->tx = xrealloc(c->tx, c->tx_cap);
	}
	memcpy(c->tx + c->tx_len, (const uint8_t *)data + n, len - (size_t)n);
	c->tx_len += len - (size_t)n;
}

static void conn_flush(struct bench *b, struct conn *c)
{
	while (c->tx_off < c->tx_len) {
		ssize_t n = send(c->fd, c->tx + c->tx_off, c->tx_len - c->tx_off, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				return;
			}
			fail(b, "send: %s", strerror(errno));
			return;
		}
		c->tx_off += (size_t)n;
	}
	c->tx_len = c->tx_off = 0;
	conn_watch(b, c, EPOLL_CTL_MOD, EPOLLIN);
}

static void send_packet(struct bench *b, struct conn *c, struct pkt *p, unsigned hdr)
{
	size_t len;
	const uint8_t *data = pkt_finish(p, hdr, &len);

	conn_send(b, c, data, len);
}

/* Writes the user name (or client id with first letter 'c') of index into out. */
static size_t name_of(char *out, size_t cap, char letter, uint32_t index)
{
	return (size_t)snprintf(out, cap, "%c%0*u", letter, USER_DIGITS, (unsigned)index);
}

/* Writes the username of a client of user index (g<k>/u<index> with --user-groups) or of
 * watcher index (w<index>, g<k>/w<index>) into out. */
static size_t username_of(const struct bench *b, char *out, size_t cap, char letter, uint32_t index)
{
	if (b->o.user_groups == 0) {
		return name_of(out, cap, letter, index);
	}
	return (size_t)snprintf(out, cap, "g%u/%c%0*u", (unsigned)(index % b->o.user_groups),
	                        letter, USER_DIGITS, (unsigned)index);
}

/* Sends CONNECT for c. A client connects with client id c<session> and username u<user>, a
 * watcher with w<index>; the subscriber and the monitor connect anonymously; all but the
 * clients with MQTT 5 and a large receive maximum. */
static void send_connect(struct bench *b, struct conn *c)
{
	bool v5 = c->kind != KIND_CLIENT || b->o.protocol == 5;
	bool will = c->kind == KIND_CLIENT && b->o.pattern == PATTERN_LASTWILL;
	struct pkt p = pkt_begin(b);
	char id[32], user[32];
	unsigned flags = 0x02; /* clean session / clean start */
	size_t id_len, user_len = 0;

	if (c->kind == KIND_CLIENT) {
		id_len = name_of(id, sizeof(id), 'c', c->session);
		user_len = username_of(b, user, sizeof(user), 'u', c->user);
		flags |= 0x80;
	} else if (c->kind == KIND_WATCHER) {
		id_len = (size_t)snprintf(id, sizeof(id), "bench-w%u-%d", (unsigned)c->session,
		                          (int)getpid());
		user_len = username_of(b, user, sizeof(user), 'w', c->session);
		flags |= 0x80;
	} else {
		id_len =
		    (size_t)snprintf(id, sizeof(id), "bench-%s-%d",
		                     c->kind == KIND_SUBSCRIBER ? "sub" : "mon", (int)getpid());
	}
	if (will) {
		flags |= 0x04 | (1u << 3) | 0x20; /* will, QoS 1, retained */
	}
	pkt_str(&p, "MQTT", 4);
	pkt_u8(&p, v5 ? 5 : 4);
	pkt_u8(&p, flags);
	pkt_u16(&p, c->kind == KIND_CLIENT ? 60 : 0);
	if (v5) {
		if (c->kind == KIND_CLIENT) {
			pkt_u8(&p, 0);
		} else {
			pkt_u8(&p, 3);
			pkt_u8(&p, PROP_RECEIVE_MAXIMUM);
			pkt_u16(&p, 65535);
		}
	}
	pkt_str(&p, id, id_len);
	if (will) {
		char topic[64];
		size_t topic_len =
		    (size_t)snprintf(topic, sizeof(topic), "%s/%s", b->o.prefix, user);

		pkt_u8(&p, 0); /* will properties */
		pkt_str(&p, topic, topic_len);
		pkt_str(&p, "offline", 7);
	}
	if (user_len > 0) {
		pkt_str(&p, user, user_len);
	}
	send_packet(b, c, &p, MQTT_CONNECT << 4);
	c->state = CONN_CONNACK;
	c->t_connect = now_ns();
}

/* Publishes payload on topic from c at qos, retained or not. */
static void send_publish(struct bench *b, struct conn *c, const char *topic, const void *payload,
                         size_t payload_len, int qos, bool retain)
{
	bool v5 = c->kind != KIND_CLIENT || b->o.protocol == 5;
	struct pkt p = pkt_begin(b);

	pkt_str(&p, topic, strlen(topic));
	if (qos > 0) {
		if (++c->next_id == 0) {
			c->next_id = 1;
		}
		pkt_u16(&p, c->next_id);
		c->acks_due++;
		if (c->kind == KIND_CLIENT) {
			b->acks_due++;
		}
	}
	if (v5) {
		pkt_u8(&p, 0);
	}
	pkt_bytes(&p, payload, payload_len);
	send_packet(b, c, &p, (MQTT_PUBLISH << 4) | ((unsigned)qos << 1) | (retain ? 1u : 0u));
	b->publishes++;
}

static void send_subscribe(struct bench *b, struct conn *c, const char *filter)
{
	struct pkt p = pkt_begin(b);

	pkt_u16(&p, 1);
	pkt_u8(&p, 0); /* properties (the subscriber is MQTT 5) */
	pkt_str(&p, filter, strlen(filter));
	/* QoS 0: Mosquitto 2.0.11 loses track of its inflight quota for QoS 1 deliveries under
	 * sustained load (eclipse/mosquitto#2306, fixed in 2.0.13) and then stops delivering to
	 * the subscriber for good. At QoS 0 the broker drops a message only when 1000 packets
	 * wait for the subscriber's socket, and a dropped document still breaks the run. */
	pkt_u8(&p, 0);
	send_packet(b, c, &p, (MQTT_SUBSCRIBE << 4) | 2);
}

/* Sends DISCONNECT: reason 0x04 ("disconnect with will message") for the Last-Will pattern. */
static void send_disconnect(struct bench *b, struct conn *c)
{
	static const uint8_t normal[] = {MQTT_DISCONNECT << 4, 0};
	static const uint8_t with_will[] = {MQTT_DISCONNECT << 4, 1, 0x04};
	bool will = c->kind == KIND_CLIENT && b->o.pattern == PATTERN_LASTWILL;

	if (will) {
		conn_send(b, c, with_will, sizeof(with_will));
	} else {
		conn_send(b, c, normal, sizeof(normal));
	}
	c->state = CONN_CLOSING;
}

/* ---------------------------------------------------------------------------------------- */
/* What the subscriber sees                                                                    */
/* ---------------------------------------------------------------------------------------- */

/* Returns the user index of a document topic "<prefix>/u<digits>" (with --user-groups
 * "<prefix>/g<k>%2Fu<digits>", the username's '/' encoded), or -1. */
static int64_t topic_user(const struct bench *b, const uint8_t *topic, size_t len)
{
	size_t plen = strlen(b->o.prefix);
	size_t at = plen + 1;
	uint32_t v = 0;

	if (len < at || memcmp(topic, b->o.prefix, plen) != 0 || topic[plen] != '/') {
		return -1;
	}
	if (b->o.user_groups > 0) {
		const uint8_t *enc = memmem(topic + at, len - at, "%2F", 3);

		if (enc == NULL || topic[at] != 'g') {
			return -1;
		}
		at = (size_t)(enc - topic) + 3;
	}
	if (len != at + 1 + USER_DIGITS || topic[at] != 'u') {
		return -1;
	}
	for (size_t i = at + 1; i < len; i++) {
		if (topic[i] < '0' || topic[i] > '9') {
			return -1;
		}
		v = v * 10 + (uint32_t)(topic[i] - '0');
	}
	return v;
}

static bool payload_is(const uint8_t *payload, size_t len, const char *text)
{
	return len == strlen(text) && memcmp(payload, text, len) == 0;
}

/* Returns true and the value when payload holds "k":<digits>. */
static bool payload_value(const uint8_t *payload, size_t len, uint32_t *value)
{
	const uint8_t *at = memmem(payload, len, "\"k\":", 4);
	uint32_t v = 0;

	if (at == NULL) {
		return false;
	}
	at += 4;
	if (at >= payload + len || *at < '0' || *at > '9') {
		return false;
	}
	for (; at < payload + len && *at >= '0' && *at <= '9'; at++) {
		v = v * 10 + (uint32_t)(*at - '0');
	}
	*value = v;
	return true;
}

/* The index into b->users of user, or -1 when out of range. */
static int64_t user_slot(const struct bench *b, int64_t user)
{
	if (user < b->o.user_base || user - b->o.user_base >= b->o.users) {
		return -1;
	}
	return user - b->o.user_base;
}

/* An availability change of user, seen by the subscriber. */
static void doc_availability(struct bench *b, int64_t user, bool online)
{
	int64_t slot = user_slot(b, user);
	uint8_t expect = online ? EXPECT_ONLINE : EXPECT_OFFLINE;
	uint8_t seen = online ? SEEN_ONLINE : SEEN_OFFLINE;

	if (slot < 0 || (b->users[slot] & expect) == 0 || (b->users[slot] & seen) != 0) {
		b->docs_unexpected++;
		fail(b, "unexpected %s document for user u%0*lld", online ? "online" : "offline",
		     USER_DIGITS, (long long)user);
		return;
	}
	b->users[slot] |= seen;
	b->docs_seen++;
	if (online && user == b->await_user) {
		b->await_t = now_ns();
	}
}

static struct conn *client_of_user(struct bench *b, int64_t user);
static void state_write_next(struct bench *b, struct conn *c);

/* Whether watcher w may see user (the groups the benchmark gives the broker). */
static bool watcher_sees(const struct bench *b, uint32_t w, int64_t user)
{
	return b->o.watcher_groups == 0 ||
	       w % b->o.watcher_groups == (uint64_t)user % b->o.watcher_groups;
}

/* How many watchers may see user. */
static uint64_t watchers_seeing(const struct bench *b, int64_t user)
{
	unsigned g = b->o.watcher_groups;

	if (g == 0) {
		return b->o.watchers;
	}
	return b->o.watchers / g + ((uint64_t)user % g < b->o.watchers % g ? 1 : 0);
}

/* A document delivered to watcher c: one it may see, and no more than expected. */
static void doc_delivered(struct bench *b, struct conn *c, int64_t user)
{
	if (!watcher_sees(b, c->session, user)) {
		b->docs_unexpected++;
		fail(b, "watcher w%u received a document of user u%0*lld, which it may not see",
		     (unsigned)c->session, USER_DIGITS, (long long)user);
		return;
	}
	b->watch_seen++;
	b->deliveries++;
	if (b->watch_seen > b->watch_expected) {
		b->docs_unexpected++;
		fail(b,
		     "the watchers received more documents than the users' changes (%" PRIu64
		     " expected)",
		     b->watch_expected);
	}
}

/* A state-mode document: it confirms every write of user up to value. */
static void doc_value(struct bench *b, int64_t user, uint32_t value)
{
	struct conn *c = client_of_user(b, user);

	if (c == NULL || value > c->sent || value <= c->done) {
		b->docs_unexpected++;
		fail(b, "unexpected value %u for user u%0*lld", value, USER_DIGITS,
		     (long long)user);
		return;
	}
	b->writes_done += value - c->done;
	c->done = value;
	b->docs_seen++;
	b->t_last_done = now_ns();
	state_write_next(b, c);
}

/* A PUBLISH received by the subscriber or the monitor. */
static void on_publish(struct bench *b, struct conn *c, unsigned hdr, const uint8_t *body,
                       size_t len)
{
	unsigned qos = (hdr >> 1) & 3;
	bool retain = (hdr & 1) != 0;
	const uint8_t *topic, *payload;
	size_t topic_len, pos, payload_len;
	uint32_t props = 0;
	int64_t user;

	if (len < 2) {
		fail(b, "short PUBLISH");
		return;
	}
	topic_len = (size_t)body[0] << 8 | body[1];
	topic = body + 2;
	pos = 2 + topic_len;
	if (qos > 0) {
		uint8_t ack[4] = {MQTT_PUBACK << 4, 2, 0, 0};

		if (pos + 2 > len) {
			fail(b, "short PUBLISH");
			return;
		}
		ack[2] = body[pos];
		ack[3] = body[pos + 1];
		pos += 2;
		conn_send(b, c, ack, sizeof(ack));
	}
	/* The subscriber and the monitor are MQTT 5: skip the properties. */
	{
		int n = varint_decode(body + pos, len - pos, &props);

		if (n <= 0 || pos + (size_t)n + props > len) {
			fail(b, "malformed PUBLISH properties");
			return;
		}
		pos += (size_t)n + props;
	}
	payload = body + pos;
	payload_len = len - pos;

	if (c->kind == KIND_MONITOR) {
		char text[32];

		if (memmem(topic, topic_len, "uptime", 6) != NULL) {
			b->sys_rounds++;
		} else if (payload_len < sizeof(text)) {
			memcpy(text, payload, payload_len);
			text[payload_len] = '\0';
			b->heap = atoll(text);
		}
		return;
	}
	b->docs_total++;
	if (retain) {
		/* Retained documents are sent on subscribe: they are from before this run. */
		b->docs_retained++;
		return;
	}
	user = topic_user(b, topic, topic_len);
	if (user < 0) {
		b->docs_other++;
		return;
	}
	if (c->kind == KIND_WATCHER) {
		doc_delivered(b, c, user);
		return;
	}
	switch (b->o.pattern) {
	case PATTERN_PRESENCE:
	case PATTERN_RETAINED: {
		uint32_t value;

		if (strcmp(b->o.mode, "state") == 0 &&
		    payload_value(payload, payload_len, &value)) {
			doc_value(b, user, value);
		} else if (memmem(payload, payload_len, "\"available\":true", 16) != NULL) {
			doc_availability(b, user, true);
		} else if (memmem(payload, payload_len, "\"available\":false", 17) != NULL) {
			doc_availability(b, user, false);
		} else {
			b->docs_other++;
		}
		break;
	}
	case PATTERN_LASTWILL:
		if (payload_is(payload, payload_len, "online")) {
			doc_availability(b, user, true);
		} else if (payload_is(payload, payload_len, "offline")) {
			doc_availability(b, user, false);
		} else {
			b->docs_other++;
		}
		break;
	case PATTERN_PLAIN:
		b->docs_other++;
		break;
	}
}

/* ---------------------------------------------------------------------------------------- */
/* The event loop                                                                              */
/* ---------------------------------------------------------------------------------------- */

static void on_connack(struct bench *b, struct conn *c, const uint8_t *body, size_t len)
{
	bool v5 = c->kind != KIND_CLIENT || b->o.protocol == 5;
	unsigned rc;

	if (len < 2 || c->state != CONN_CONNACK) {
		fail(b, "unexpected CONNACK");
		return;
	}
	rc = body[1];
	if (rc != 0) {
		fail(b, "CONNACK refused the connection (%s code %u)", v5 ? "reason" : "return",
		     rc);
		return;
	}
	c->state = CONN_UP;
	if (c->kind != KIND_CLIENT) {
		return;
	}
	b->connacks++;
	b->inflight--;
	if (b->o.pattern == PATTERN_LASTWILL) {
		char topic[64];

		snprintf(topic, sizeof(topic), "%s/u%0*u", b->o.prefix, USER_DIGITS,
		         (unsigned)c->user);
		send_publish(b, c, topic, "online", 6, 1, true);
	}
}

/* Handles one complete packet of c. */
static void on_packet(struct bench *b, struct conn *c, unsigned hdr, const uint8_t *body,
                      size_t len)
{
	switch (hdr >> 4) {
	case MQTT_CONNACK:
		on_connack(b, c, body, len);
		break;
	case MQTT_PUBLISH:
		if (c->kind == KIND_CLIENT) {
			fail(b, "a client received a PUBLISH");
			return;
		}
		on_publish(b, c, hdr, body, len);
		break;
	case MQTT_PUBACK:
		if (c->acks_due == 0) {
			fail(b, "unexpected PUBACK");
			return;
		}
		if (len >= 3 && body[2] >= 0x80) {
			fail(b, "PUBACK with error reason 0x%02x", body[2]);
			return;
		}
		c->acks_due--;
		if (c->kind == KIND_CLIENT) {
			b->acks_due--;
		}
		b->pubacks++;
		break;
	case MQTT_SUBACK:
		if (len < 3 || body[len - 1] >= 0x80) {
			fail(b, "subscription refused");
			return;
		}
		c->state = CONN_UP;
		c->acks_due = 0;
		break;
	case MQTT_DISCONNECT:
		fail(b, "the broker sent DISCONNECT (reason 0x%02x)", len > 0 ? body[0] : 0);
		break;
	default:
		fail(b, "unexpected packet type %u", hdr >> 4);
		break;
	}
}

/* Parses every complete packet in c's receive buffer. */
static void conn_parse(struct bench *b, struct conn *c)
{
	size_t pos = 0;

	while (pos < c->rx_len && !failed(b)) {
		uint32_t remaining = 0;
		int n = varint_decode(c->rx + pos + 1, c->rx_len - pos - 1, &remaining);

		if (n < 0 || remaining > RX_LIMIT) {
			fail(b, "malformed packet from the broker");
			return;
		}
		if (n == 0 || c->rx_len - pos - 1 - (size_t)n < remaining) {
			/* Incomplete: make room for all of it. */
			size_t need = 1 + (size_t)(n > 0 ? n : 4) + (n > 0 ? remaining : 0);

			if (need > c->rx_cap) {
				memmove(c->rx, c->rx + pos, c->rx_len - pos);
				c->rx_len -= pos;
				pos = 0;
				c->rx_cap = need + 256;
				c->rx = xrealloc(c->rx, c->rx_cap);
			}
			break;
		}
		on_packet(b, c, c->rx[pos], c->rx + pos + 1 + n, remaining);
		pos += 1 + (size_t)n + remaining;
		if (c->fd < 0) {
			return;
		}
	}
	memmove(c->rx, c->rx + pos, c->rx_len - pos);
	c->rx_len -= pos;
}

/* The broker closed c (EOF, or reset when reset). */
static void on_closed(struct bench *b, struct conn *c, bool reset)
{
	if (c->kind == KIND_CLIENT && c->state == CONN_CLOSING) {
		b->closes++;
		if (reset) {
			b->resets++;
		}
		b->inflight--;
		conn_close(b, c);
		return;
	}
	fail(b, "the broker %s the connection of %s c%0*u (%s)", reset ? "reset" : "closed",
	     c->kind == KIND_CLIENT       ? "client"
	     : c->kind == KIND_SUBSCRIBER ? "subscriber"
	     : c->kind == KIND_WATCHER    ? "watcher"
	                                  : "monitor",
	     USER_DIGITS, (unsigned)c->session,
	     c->state == CONN_CONNACK ? "before CONNACK" : "while connected");
	conn_close(b, c);
}

static void on_event(struct bench *b, struct conn *c, uint32_t events)
{
	if (c->fd < 0) {
		/* Closed while handling an earlier event of the same batch. */
		return;
	}
	if (c->state == CONN_TCP) {
		int err = 0;
		socklen_t err_len = sizeof(err);

		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &err_len);
		if (err != 0 || (events & (EPOLLERR | EPOLLHUP)) != 0) {
			fail(b, "connect: %s", strerror(err != 0 ? err : ECONNREFUSED));
			conn_close(b, c);
			return;
		}
		conn_watch(b, c, EPOLL_CTL_MOD, EPOLLIN);
		send_connect(b, c);
		return;
	}
	if ((events & EPOLLOUT) != 0) {
		conn_flush(b, c);
	}
	if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0) {
		ssize_t n;

		if (c->rx_len == c->rx_cap) {
			c->rx_cap *= 2;
			c->rx = xrealloc(c->rx, c->rx_cap);
		}
		n = recv(c->fd, c->rx + c->rx_len, c->rx_cap - c->rx_len, 0);
		if (n > 0) {
			c->rx_len += (size_t)n;
			conn_parse(b, c);
		} else if (n == 0) {
			conn_parse(b, c);
			on_closed(b, c, false);
		} else if (errno == ECONNRESET) {
			on_closed(b, c, true);
		} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			fail(b, "recv: %s", strerror(errno));
		}
	}
}

/* Handles the events of at most one epoll wait of up to PUMP_MS. Records a failure when the
 * deadline has passed. */
static void pump(struct bench *b)
{
	struct epoll_event ev[EPOLL_BATCH];
	int64_t left = (b->deadline - now_ns()) / 1000000;
	int n;

	if (left <= 0) {
		fail(b, "timeout: the run did not finish within %.0f s", b->o.timeout_s);
		return;
	}
	n = epoll_wait(b->epfd, ev, EPOLL_BATCH, left < PUMP_MS ? (int)left + 1 : PUMP_MS);
	if (n < 0 && errno != EINTR) {
		die("epoll_wait: %s", strerror(errno));
	}
	for (int i = 0; i < n && !failed(b); i++) {
		on_event(b, ev[i].data.ptr, ev[i].events);
	}
}

static void conn_init(struct conn *c, enum conn_kind kind, size_t rx_cap)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->kind = kind;
	c->rx_cap = rx_cap;
	c->rx = xcalloc(1, rx_cap);
}

/* Connects c (subscriber or monitor) and subscribes it to filter; waits for SUBACK. */
static bool connect_and_subscribe(struct bench *b, struct conn *c, const char *filter)
{
	if (!conn_open(b, c, 0)) {
		return false;
	}
	while (!failed(b) && c->state != CONN_UP) {
		pump(b);
	}
	if (failed(b)) {
		return false;
	}
	c->state = CONN_CONNACK; /* reused as "waiting for SUBACK" */
	c->acks_due = 1;
	send_subscribe(b, c, filter);
	while (!failed(b) && c->state != CONN_UP) {
		pump(b);
	}
	return !failed(b);
}

/* Subscribes the connected c to one more filter; waits for SUBACK. */
static bool subscribe_more(struct bench *b, struct conn *c, const char *filter)
{
	c->state = CONN_CONNACK;
	send_subscribe(b, c, filter);
	while (!failed(b) && c->state != CONN_UP) {
		pump(b);
	}
	return !failed(b);
}

/* ---------------------------------------------------------------------------------------- */
/* Phases shared by the modes                                                                  */
/* ---------------------------------------------------------------------------------------- */

static bool subscriber_wanted(const struct bench *b)
{
	return b->o.pattern != PATTERN_PLAIN && b->o.watchers == 0;
}

/* Whether the phase's documents all came: to the subscriber, or to every watcher that may see
 * them. */
static bool docs_done(const struct bench *b)
{
	return b->o.watchers > 0 ? b->watch_seen == b->watch_expected
	                         : b->docs_seen == b->docs_expected;
}

/* Whether a connect or disconnect makes a document the subscriber must see. */
static bool docs_on_connect(const struct bench *b)
{
	return b->o.pattern == PATTERN_PRESENCE || b->o.pattern == PATTERN_LASTWILL;
}

/* Sets up b->conns[0..count) for sessions first..first+count. */
static void clients_prepare(struct bench *b, uint32_t first, size_t count)
{
	if (count > b->conn_cap) {
		die("internal: batch larger than the connection table");
	}
	for (size_t i = 0; i < count; i++) {
		struct conn *c = &b->conns[i];

		c->session = first + (uint32_t)i;
		c->user = b->o.user_base + (c->session - b->o.user_base) / b->o.sessions_per_user;
		c->sent = c->done = 0;
	}
}

/* Marks what the subscriber must see in this phase for the users of conns[0..count): one
 * document of the expected kind per user, and nothing else for them. */
static void expect_docs(struct bench *b, size_t count, uint8_t expect)
{
	b->docs_expected = 0;
	b->docs_seen = 0;
	b->watch_expected = 0;
	b->watch_seen = 0;
	if (!docs_on_connect(b)) {
		return;
	}
	for (size_t i = 0; i < count; i++) {
		int64_t slot = user_slot(b, b->conns[i].user);

		if (b->users[slot] != expect) {
			b->users[slot] = expect;
			b->docs_expected++;
			b->watch_expected += watchers_seeing(b, b->conns[i].user);
		}
	}
}

/* Connects conns[0..count), at most --inflight handshakes at a time, and waits until every one
 * has its CONNACK, every PUBACK came and the subscriber saw every expected document. */
static bool connect_all(struct bench *b, size_t count)
{
	size_t next = 0;

	expect_docs(b, count, EXPECT_ONLINE);
	b->inflight = 0;
	while (!failed(b)) {
		while (next < count && b->inflight < b->o.inflight) {
			if (!conn_open(b, &b->conns[next], b->conns[next].session)) {
				return false;
			}
			next++;
			b->inflight++;
		}
		if (next == count && b->inflight == 0 && docs_done(b) && b->acks_due == 0) {
			return true;
		}
		pump(b);
	}
	return false;
}

/* Disconnects conns[0..count) (at most --inflight at a time) and waits until the broker closed
 * every socket and the subscriber saw every expected document. */
static bool disconnect_all(struct bench *b, size_t count)
{
	size_t next = 0;

	expect_docs(b, count, EXPECT_OFFLINE);
	b->inflight = 0;
	while (!failed(b)) {
		while (next < count && b->inflight < b->o.inflight) {
			send_disconnect(b, &b->conns[next++]);
			b->inflight++;
		}
		if (next == count && b->inflight == 0 && docs_done(b)) {
			return true;
		}
		pump(b);
	}
	return false;
}

static double per_s(uint64_t n, int64_t ns)
{
	return ns > 0 ? (double)n * 1e9 / (double)ns : 0.0;
}

static double us_each(int64_t ns, uint64_t n)
{
	return n > 0 ? (double)ns / 1e3 / (double)n : 0.0;
}

/* ---------------------------------------------------------------------------------------- */
/* Modes                                                                                       */
/* ---------------------------------------------------------------------------------------- */

static void print_common(const struct bench *b)
{
	printf("mode=%s pattern=%s protocol=%d users=%u", b->o.mode, b->o.pattern_name,
	       b->o.protocol, b->o.users);
}

static void print_status(const struct bench *b)
{
	printf(" docs_total=%" PRIu64 " docs_retained=%" PRIu64 " docs_other=%" PRIu64
	       " docs_unexpected=%" PRIu64,
	       b->docs_total, b->docs_retained, b->docs_other, b->docs_unexpected);
	if (failed(b)) {
		char reason[sizeof(b->failure)];

		for (size_t i = 0; i <= strlen(b->failure); i++) {
			reason[i] = b->failure[i] == ' ' ? '_' : b->failure[i];
		}
		printf(" status=BROKEN reason=%s\n", reason);
		fprintf(stderr, "loadgen: BROKEN: %s\n", b->failure);
	} else {
		printf(" status=OK\n");
	}
}

static int mode_storm(struct bench *b)
{
	struct span connect = {0}, disconnect = {0};
	uint64_t connects = 0, disconnects = 0;
	unsigned batch = b->o.batch > 0 ? b->o.batch : b->o.users;

	for (unsigned cycle = 0; cycle < b->o.cycles && !failed(b); cycle++) {
		for (unsigned first = 0; first < b->o.users && !failed(b); first += batch) {
			size_t count = b->o.users - first < batch ? b->o.users - first : batch;
			struct span s;
			uint64_t closes = b->closes;

			clients_prepare(b, b->o.user_base + first, count);
			s = span_begin(b);
			if (!connect_all(b, count)) {
				break;
			}
			span_end(b, s, &connect);
			connects += count;
			s = span_begin(b);
			if (!disconnect_all(b, count)) {
				break;
			}
			span_end(b, s, &disconnect);
			disconnects += b->closes - closes;
		}
	}
	print_common(b);
	printf(" cycles=%u inflight=%u connects=%" PRIu64 " disconnects=%" PRIu64 " resets=%" PRIu64
	       " connect_s=%.3f disconnect_s=%.3f connects_per_s=%.0f"
	       " disconnects_per_s=%.0f cpu_us_per_connect=%.2f cpu_us_per_disconnect=%.2f"
	       " cpu_us_per_cycle=%.2f loadgen_cpu_share=%.2f",
	       b->o.cycles, b->o.inflight, connects, disconnects, b->resets,
	       (double)connect.wall / 1e9, (double)disconnect.wall / 1e9,
	       per_s(connects, connect.wall), per_s(disconnects, disconnect.wall),
	       us_each(connect.cpu, connects), us_each(disconnect.cpu, disconnects),
	       us_each(connect.cpu + disconnect.cpu, connects),
	       connect.wall + disconnect.wall > 0 ? (double)(connect.self + disconnect.self) /
	                                                (double)(connect.wall + disconnect.wall)
	                                          : 0.0);
	if (b->o.watchers > 0) {
		printf(" watchers=%u watcher_groups=%u deliveries=%" PRIu64
		       " cpu_ms=%.1f stat_cpu_ms=%.1f cpu_us_per_delivery=%.4f"
		       " stat_us_per_delivery=%.4f",
		       b->o.watchers, b->o.watcher_groups, b->deliveries,
		       (double)(connect.cpu + disconnect.cpu) / 1e6,
		       (double)(connect.stat + disconnect.stat) / 1e6,
		       us_each(connect.cpu + disconnect.cpu, b->deliveries),
		       us_each(connect.stat + disconnect.stat, b->deliveries));
	}
	print_status(b);
	return failed(b) ? 2 : 0;
}

static struct conn *client_of_user(struct bench *b, int64_t user)
{
	int64_t slot = user_slot(b, user);

	return slot >= 0 && (size_t)slot < b->conn_cap ? &b->conns[slot] : NULL;
}

/* Sends c's next state write(s) while the run lasts and its window has room. */
static void state_write_next(struct bench *b, struct conn *c)
{
	while (b->writing && c->sent - c->done < b->o.window) {
		char topic[96];
		char payload[160];
		size_t len;
		uint32_t value = ++c->sent;

		if (b->o.pattern == PATTERN_PRESENCE) {
			snprintf(topic, sizeof(topic), "%s/u%0*u/state/k", b->o.prefix, USER_DIGITS,
			         (unsigned)c->user);
			len = (size_t)snprintf(payload, sizeof(payload), "%u", (unsigned)value);
			send_publish(b, c, topic, payload, len, b->o.qos, false);
		} else {
			/* What the plugin would publish for this write, byte for byte in length:
			 * the same keys, a 13-digit since and seq = value + 1 (the user's first
			 * document announced the connect). */
			snprintf(topic, sizeof(topic), "%s/u%0*u", b->o.prefix, USER_DIGITS,
			         (unsigned)c->user);
			len = (size_t)snprintf(payload, sizeof(payload),
			                       "{\"username\":\"u%0*u\",\"available\":true,"
			                       "\"sessions\":1,\"since\":1764265200123,\"seq\":%u,"
			                       "\"state\":{\"k\":%u}}",
			                       USER_DIGITS, (unsigned)c->user, (unsigned)value + 1,
			                       (unsigned)value);
			send_publish(b, c, topic, payload, len, b->o.qos, true);
		}
	}
}

/* Records why the writes stopped making progress: a document that never came is a lost one. */
static void stall_report(struct bench *b)
{
	size_t waiting = 0, first = 0;

	for (size_t i = b->o.users; i-- > 0;) {
		if (b->conns[i].sent != b->conns[i].done) {
			waiting++;
			first = i;
		}
	}
	fail(b,
	     "no document for %.0f s: %zu users wait for one (first u%0*u: sent %u, confirmed %u), "
	     "%" PRIu64 " PUBACKs due",
	     (double)STALL_NS / 1e9, waiting, USER_DIGITS, (unsigned)b->conns[first].user,
	     (unsigned)b->conns[first].sent, (unsigned)b->conns[first].done, b->acks_due);
}

static bool writes_outstanding(const struct bench *b)
{
	for (size_t i = 0; i < b->o.users; i++) {
		if (b->conns[i].sent != b->conns[i].done) {
			return true;
		}
	}
	return false;
}

static int mode_state(struct bench *b)
{
	struct span run = {0};
	int64_t t_end;
	uint64_t writes_sent = 0, docs = 0;
	struct span s;

	clients_prepare(b, b->o.user_base, b->o.users);
	if (!connect_all(b, b->o.users)) {
		goto out;
	}
	/* The timed run: every user keeps --window writes outstanding until the duration is over,
	 * then the outstanding ones must all be confirmed. */
	b->writing = true;
	b->writes_done = 0;
	b->docs_seen = 0;
	s = span_begin(b);
	t_end = s.wall + (int64_t)(b->o.duration_s * 1e9);
	b->t_last_done = s.wall;
	for (size_t i = 0; i < b->o.users; i++) {
		state_write_next(b, &b->conns[i]);
	}
	while (!failed(b) && now_ns() < t_end) {
		pump(b);
	}
	b->writing = false;
	while (!failed(b) && (writes_outstanding(b) || b->acks_due > 0)) {
		pump(b);
		if (now_ns() - b->t_last_done > STALL_NS) {
			stall_report(b);
		}
	}
	span_end(b, s, &run);
	run.wall = b->t_last_done - s.wall;
	for (size_t i = 0; i < b->o.users; i++) {
		writes_sent += b->conns[i].sent;
	}
	docs = b->docs_seen;
	if (!failed(b)) {
		disconnect_all(b, b->o.users);
	}
out:
	print_common(b);
	printf(" qos=%d window=%u duration_s=%.3f writes=%" PRIu64 " writes_done=%" PRIu64
	       " docs=%" PRIu64 " writes_per_s=%.0f docs_per_s=%.0f cpu_us_per_write=%.2f"
	       " loadgen_cpu_share=%.2f",
	       b->o.qos, b->o.window, (double)run.wall / 1e9, writes_sent, b->writes_done, docs,
	       per_s(b->writes_done, run.wall), per_s(docs, run.wall),
	       us_each(run.cpu, b->writes_done),
	       run.wall > 0 ? (double)run.self / (double)run.wall : 0.0);
	print_status(b);
	return failed(b) ? 2 : 0;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static double percentile_us(const int64_t *sorted, size_t n, double p)
{
	size_t i;

	if (n == 0) {
		return 0.0;
	}
	i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
	return (double)sorted[i] / 1e3;
}

static int mode_latency(struct bench *b)
{
	int64_t *lat = xcalloc(b->o.count, sizeof(*lat));
	size_t done = 0;
	double sum = 0;

	for (unsigned i = 0; i < b->o.count && !failed(b); i++) {
		struct conn *c = &b->conns[0];

		clients_prepare(b, b->o.user_base + i % b->o.users, 1);
		b->await_user = c->user;
		b->await_t = 0;
		if (!connect_all(b, 1)) {
			break;
		}
		lat[done++] = b->await_t - c->t_connect;
		if (!disconnect_all(b, 1)) {
			break;
		}
	}
	qsort(lat, done, sizeof(*lat), cmp_i64);
	for (size_t i = 0; i < done; i++) {
		sum += (double)lat[i] / 1e3;
	}
	print_common(b);
	printf(" count=%zu p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f mean_us=%.1f", done,
	       percentile_us(lat, done, 50), percentile_us(lat, done, 90),
	       percentile_us(lat, done, 99), done > 0 ? (double)lat[done - 1] / 1e3 : 0.0,
	       done > 0 ? sum / (double)done : 0.0);
	print_status(b);
	free(lat);
	return failed(b) ? 2 : 0;
}

/* Waits until two more $SYS rounds have passed (the second one certainly computed the heap
 * value after this call). */
static bool heap_settle(struct bench *b)
{
	unsigned target = b->sys_rounds + 2;

	while (!failed(b) && b->sys_rounds < target) {
		pump(b);
	}
	return !failed(b);
}

static int mode_memory(struct bench *b)
{
	size_t sessions = (size_t)b->o.users * b->o.sessions_per_user;
	long rss0 = -1, rss1 = -1;
	long long heap0 = -1, heap1 = -1;
	char *payload = NULL;

	if (b->o.broker_pid <= 0) {
		die("memory mode needs --broker-pid");
	}
	if (!connect_and_subscribe(b, &b->mon, "$SYS/broker/heap/current") ||
	    !subscribe_more(b, &b->mon, "$SYS/broker/uptime") || !heap_settle(b)) {
		goto out;
	}
	rss0 = broker_rss_kib(b);
	heap0 = b->heap;
	clients_prepare(b, b->o.user_base, sessions);
	if (!connect_all(b, sessions)) {
		goto out;
	}
	if (b->o.state_bytes > 0) {
		/* One key whose compact rendering makes the whole state exactly state_bytes:
		 * {"blob":"xxx..."} is 11 bytes plus the string. */
		size_t xs = b->o.state_bytes > 11 ? b->o.state_bytes - 11 : 1;

		payload = xcalloc(1, xs + 3);
		payload[0] = '"';
		memset(payload + 1, 'x', xs);
		payload[xs + 1] = '"';
		for (size_t i = 0; i < sessions; i += b->o.sessions_per_user) {
			char topic[96];

			snprintf(topic, sizeof(topic), "%s/u%0*u/state/blob", b->o.prefix,
			         USER_DIGITS, (unsigned)b->conns[i].user);
			send_publish(b, &b->conns[i], topic, payload, xs + 2, 1, false);
			while (!failed(b) && b->acks_due >= b->o.inflight) {
				pump(b);
			}
		}
		while (!failed(b) && b->acks_due > 0) {
			pump(b);
		}
	}
	if (!heap_settle(b)) {
		goto out;
	}
	rss1 = broker_rss_kib(b);
	heap1 = b->heap;
	disconnect_all(b, sessions);
out:
	print_common(b);
	printf(" sessions=%zu state_bytes=%zu rss_idle_kib=%ld rss_connected_kib=%ld"
	       " heap_idle=%lld heap_connected=%lld rss_bytes_per_session=%.0f"
	       " heap_bytes_per_session=%.0f",
	       sessions, b->o.state_bytes, rss0, rss1, heap0, heap1,
	       sessions > 0 ? (double)(rss1 - rss0) * 1024.0 / (double)sessions : 0.0,
	       sessions > 0 ? (double)(heap1 - heap0) / (double)sessions : 0.0);
	print_status(b);
	free(payload);
	return failed(b) ? 2 : 0;
}

static int mode_fill(struct bench *b)
{
	struct conn *c = &b->mon;
	long rss0 = -1, rss1 = -1;
	int64_t t0 = now_ns();

	if (!connect_and_subscribe(b, c, "$SYS/broker/uptime")) {
		goto out;
	}
	rss0 = b->o.broker_pid > 0 ? broker_rss_kib(b) : -1;
	for (uint32_t i = 0; i < b->o.users && !failed(b); i++) {
		char topic[96], payload[256];
		struct pkt p = pkt_begin(b);
		int n;

		snprintf(topic, sizeof(topic), "%s/u%0*u", b->o.prefix, USER_DIGITS,
		         b->o.user_base + i);
		n = snprintf(payload, sizeof(payload),
		             "{\"username\":\"u%0*u\",\"available\":false,\"sessions\":0,"
		             "\"since\":1764265200000,\"seq\":%u,\"state\":{}}",
		             USER_DIGITS, b->o.user_base + i, b->o.seq);
		pkt_str(&p, topic, strlen(topic));
		/* Properties: payload format indicator 1, content type application/json. */
		pkt_u8(&p, 2 + 3 + 16);
		pkt_u8(&p, 0x01);
		pkt_u8(&p, 1);
		pkt_u8(&p, 0x03);
		pkt_str(&p, "application/json", 16);
		pkt_bytes(&p, payload, (size_t)n);
		send_packet(b, c, &p, (MQTT_PUBLISH << 4) | 1u);
		b->publishes++;
		if (i % 1000 == 999) {
			/* A round trip now and then, so that the socket never holds it all. */
			send_publish(b, c, "loadgen/fill", "x", 1, 1, false);
			while (!failed(b) && c->acks_due > 0) {
				pump(b);
			}
		}
	}
	send_publish(b, c, "loadgen/fill", "x", 1, 1, false);
	while (!failed(b) && c->acks_due > 0) {
		pump(b);
	}
	rss1 = b->o.broker_pid > 0 ? broker_rss_kib(b) : -1;
out:
	print_common(b);
	printf(" documents=%u seconds=%.2f rss_before_kib=%ld rss_after_kib=%ld", b->o.users,
	       (double)(now_ns() - t0) / 1e9, rss0, rss1);
	print_status(b);
	return failed(b) ? 2 : 0;
}

/* Connects one anonymous client until the broker accepts it (it may still be starting). */
static int mode_ping(struct bench *b)
{
	struct conn *c = &b->conns[0];

	for (;;) {
		c->kind = KIND_MONITOR;
		if (conn_open(b, c, 0)) {
			while (!failed(b) && c->state != CONN_UP && c->fd >= 0) {
				pump(b);
			}
		}
		if (c->state == CONN_UP) {
			break;
		}
		if (now_ns() >= b->deadline) {
			fprintf(stderr, "loadgen: no broker answered on port %d: %s\n", b->o.port,
			        b->failure);
			return 2;
		}
		conn_close(b, c);
		b->failure[0] = '\0';
		usleep(20000);
	}
	printf("mode=ping status=OK\n");
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Options                                                                                     */
/* ---------------------------------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr,
	        "usage: loadgen --mode storm|state|latency|memory|ping|fill --port PORT [options]\n"
	        "  --pattern P         plain | presence | lastwill | retained (default plain)\n"
	        "  --users N           users (default 100); sessions are u<base>..\n"
	        "  --user-base B       index of the first user (default 0)\n"
	        "  --sessions-per-user S  memory mode: sessions of each user (default 1)\n"
	        "  --cycles C          storm: connect/disconnect cycles (default 1)\n"
	        "  --batch B           storm: users per connect/disconnect round (default all)\n"
	        "  --inflight I        handshakes or disconnects in flight (default 64)\n"
	        "  --hosts H           source addresses 127.0.0.1..127.0.0.H (default 1)\n"
	        "  --count M           latency: connects measured (default 1000)\n"
	        "  --qos Q             state: QoS of the writes, 0 or 1 (default 0)\n"
	        "  --window W          state: writes outstanding per user (default 1)\n"
	        "  --duration S        state: seconds of writing (default 3)\n"
	        "  --state-bytes B     memory: size of each user's state (default 0)\n"
	        "  --protocol 4|5      MQTT version of the clients (default 5)\n"
	        "  --prefix P          presence topic prefix (default presence)\n"
	        "  --seq Q             fill: the seq of the documents (default 1)\n"
	        "  --broker-pid PID    broker process, for CPU time and memory\n"
	        "  --cpu main|all      broker CPU time of its main thread only (not a plugin's\n"
	        "                      threads), or of all its threads (default all)\n"
	        "  --watchers W        storm: W presence/+ watchers instead of the subscriber\n"
	        "  --watcher-groups G  watcher i sees user u if i %% G == u %% G (0: all)\n"
	        "  --user-groups G     usernames g<k>/u.. and g<k>/w.., k = index %% G\n"
	        "  --timeout S         the whole run's deadline (default 120)\n");
	exit(1);
}

static unsigned opt_uint(const char *name, const char *v, unsigned min, unsigned max)
{
	char *end;
	unsigned long n = strtoul(v, &end, 10);

	if (*v == '\0' || *end != '\0' || n < min || n > max) {
		die("%s: expected a number from %u to %u, got \"%s\"", name, min, max, v);
	}
	return (unsigned)n;
}

static double opt_double(const char *name, const char *v)
{
	char *end;
	double d = strtod(v, &end);

	if (*v == '\0' || *end != '\0' || !(d > 0) || d > 86400) {
		die("%s: expected a positive number of seconds, got \"%s\"", name, v);
	}
	return d;
}

static void parse_options(struct options *o, int argc, char **argv)
{
	*o = (struct options){.mode = NULL,
	                      .pattern = PATTERN_PLAIN,
	                      .pattern_name = "plain",
	                      .protocol = 5,
	                      .users = 100,
	                      .sessions_per_user = 1,
	                      .cycles = 1,
	                      .inflight = 64,
	                      .hosts = 1,
	                      .count = 1000,
	                      .window = 1,
	                      .seq = 1,
	                      .duration_s = 3,
	                      .timeout_s = 120,
	                      .prefix = "presence"};
	for (int i = 1; i < argc; i++) {
		const char *name = argv[i];
		const char *v;

		if (i + 1 >= argc) {
			usage();
		}
		v = argv[++i];
		if (strcmp(name, "--mode") == 0) {
			o->mode = v;
		} else if (strcmp(name, "--port") == 0) {
			o->port = (int)opt_uint(name, v, 1, 65535);
		} else if (strcmp(name, "--pattern") == 0) {
			static const char *const names[] = {"plain", "presence", "lastwill",
			                                    "retained"};
			size_t k;

			for (k = 0; k < 4 && strcmp(v, names[k]) != 0; k++) {
			}
			if (k == 4) {
				die("--pattern: unknown pattern \"%s\"", v);
			}
			o->pattern = (enum pattern)k;
			o->pattern_name = names[k];
		} else if (strcmp(name, "--users") == 0) {
			o->users = opt_uint(name, v, 1, 1000000);
		} else if (strcmp(name, "--user-base") == 0) {
			o->user_base = opt_uint(name, v, 0, 8000000);
		} else if (strcmp(name, "--sessions-per-user") == 0) {
			o->sessions_per_user = opt_uint(name, v, 1, 1000);
		} else if (strcmp(name, "--cycles") == 0) {
			o->cycles = opt_uint(name, v, 1, 1000);
		} else if (strcmp(name, "--batch") == 0) {
			o->batch = opt_uint(name, v, 1, 1000000);
		} else if (strcmp(name, "--inflight") == 0) {
			o->inflight = opt_uint(name, v, 1, 10000);
		} else if (strcmp(name, "--hosts") == 0) {
			o->hosts = opt_uint(name, v, 1, 254);
		} else if (strcmp(name, "--count") == 0) {
			o->count = opt_uint(name, v, 1, 1000000);
		} else if (strcmp(name, "--qos") == 0) {
			o->qos = (int)opt_uint(name, v, 0, 1);
		} else if (strcmp(name, "--window") == 0) {
			o->window = opt_uint(name, v, 1, 1000);
		} else if (strcmp(name, "--duration") == 0) {
			o->duration_s = opt_double(name, v);
		} else if (strcmp(name, "--state-bytes") == 0) {
			o->state_bytes = opt_uint(name, v, 0, PKT_MAX - 1024);
		} else if (strcmp(name, "--protocol") == 0) {
			o->protocol = (int)opt_uint(name, v, 4, 5);
		} else if (strcmp(name, "--seq") == 0) {
			o->seq = opt_uint(name, v, 1, 1000000000);
		} else if (strcmp(name, "--prefix") == 0) {
			o->prefix = v;
		} else if (strcmp(name, "--cpu") == 0) {
			if (strcmp(v, "main") != 0 && strcmp(v, "all") != 0) {
				die("--cpu: use main or all");
			}
			o->main_thread = strcmp(v, "main") == 0;
		} else if (strcmp(name, "--broker-pid") == 0) {
			o->broker_pid = (pid_t)opt_uint(name, v, 1, INT32_MAX);
		} else if (strcmp(name, "--timeout") == 0) {
			o->timeout_s = opt_double(name, v);
		} else if (strcmp(name, "--watchers") == 0) {
			o->watchers = opt_uint(name, v, 0, 10000);
		} else if (strcmp(name, "--watcher-groups") == 0) {
			o->watcher_groups = opt_uint(name, v, 0, 1000);
		} else if (strcmp(name, "--user-groups") == 0) {
			o->user_groups = opt_uint(name, v, 0, 1000);
		} else {
			usage();
		}
	}
	if (o->mode == NULL || o->port == 0 || strlen(o->prefix) > 32) {
		usage();
	}
	if (o->watchers > 0 && (strcmp(o->mode, "storm") != 0 || o->pattern == PATTERN_PLAIN ||
	                        o->pattern == PATTERN_RETAINED)) {
		die("--watchers needs --mode storm with the presence or lastwill pattern");
	}
	if (o->user_groups > 0 && o->pattern == PATTERN_LASTWILL) {
		die("--user-groups is for the plugin's documents (the presence pattern)");
	}
	if (o->pattern == PATTERN_LASTWILL && o->protocol != 5) {
		die("the lastwill pattern needs --protocol 5 (DISCONNECT with reason 0x04)");
	}
	if ((uint64_t)o->user_base + (uint64_t)o->users * o->sessions_per_user > USER_MAX) {
		die("too many users: indexes must stay below %u", USER_MAX);
	}
}

int main(int argc, char **argv)
{
	struct bench *b = xcalloc(1, sizeof(*b));
	char filter[64];
	size_t cap;
	int rc;

	signal(SIGPIPE, SIG_IGN);
	parse_options(&b->o, argc, argv);
	b->deadline = now_ns() + (int64_t)(b->o.timeout_s * 1e9);
	b->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (b->epfd < 0) {
		die("epoll_create1: %s", strerror(errno));
	}
	b->await_user = UINT32_MAX;
	cap = strcmp(b->o.mode, "memory") == 0 ? (size_t)b->o.users * b->o.sessions_per_user
	      : strcmp(b->o.mode, "storm") == 0 && b->o.batch > 0 && b->o.batch < b->o.users
	          ? b->o.batch
	          : b->o.users;
	b->conn_cap = cap;
	b->conns = xcalloc(cap, sizeof(*b->conns));
	for (size_t i = 0; i < cap; i++) {
		conn_init(&b->conns[i], KIND_CLIENT, RX_CLIENT);
	}
	b->users = xcalloc(b->o.users, 1);
	conn_init(&b->sub, KIND_SUBSCRIBER, RX_SUBSCRIBER);
	conn_init(&b->mon, KIND_MONITOR, RX_CLIENT);

	if (strcmp(b->o.mode, "ping") == 0) {
		return mode_ping(b);
	}
	snprintf(filter, sizeof(filter), "%s/+", b->o.prefix);
	if (subscriber_wanted(b) && !connect_and_subscribe(b, &b->sub, filter)) {
		print_common(b);
		print_status(b);
		return 2;
	}
	b->watch = xcalloc(b->o.watchers > 0 ? b->o.watchers : 1, sizeof(*b->watch));
	for (unsigned i = 0; i < b->o.watchers; i++) {
		conn_init(&b->watch[i], KIND_WATCHER, RX_SUBSCRIBER);
		b->watch[i].session = i;
		if (!connect_and_subscribe(b, &b->watch[i], filter)) {
			print_common(b);
			print_status(b);
			return 2;
		}
	}
	if (strcmp(b->o.mode, "storm") == 0) {
		rc = mode_storm(b);
	} else if (strcmp(b->o.mode, "state") == 0) {
		rc = mode_state(b);
	} else if (strcmp(b->o.mode, "latency") == 0) {
		rc = mode_latency(b);
	} else if (strcmp(b->o.mode, "memory") == 0) {
		rc = mode_memory(b);
	} else if (strcmp(b->o.mode, "fill") == 0) {
		rc = mode_fill(b);
	} else {
		usage();
	}
	return rc;
}
