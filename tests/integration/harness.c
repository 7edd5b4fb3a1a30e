/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The integration-test harness (see harness.h for the contracts and for why the broker runs
 * the way it does).
 *
 * One process runs one test executable: brokers are child processes (fork + execve, stdout and
 * stderr into @DIR@/broker.log, killed by the kernel if the test process dies), clients are
 * libmosquitto handles without a network thread. All waiting goes through harness_until(),
 * which polls the sockets of every live client (plus, for log waits, an inotify descriptor on
 * the broker log) and services whichever is ready, so every wait is event-driven; each poll()
 * is capped at HARNESS_SLICE_MS only so that a process exit, which has no descriptor, is
 * noticed promptly.
 */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Default deadlines, before scaling. */
#define HARNESS_START_TIMEOUT_MS 10000
#define HARNESS_STOP_TIMEOUT_MS 10000
#define HARNESS_CLIENT_TIMEOUT_MS 5000
#define HARNESS_COMMAND_TIMEOUT_MS 10000
#define HARNESS_DOC_TIMEOUT_MS 5000
/* Deadline factor under valgrind. */
#define HARNESS_VALGRIND_SCALE 10
/* How often broker_launch tries a new port when the chosen one was taken meanwhile. */
#define HARNESS_PORT_ATTEMPTS 5
/* How long broker_stop waits for "terminating" before it repeats SIGTERM. */
#define HARNESS_RESIGNAL_MS 500
/* Longest single poll(); bounds how late a process exit is noticed. */
#define HARNESS_SLICE_MS 50
/* How much of the log end a failure message shows. */
#define HARNESS_LOG_TAIL 6000
/* How much of the sanitizer or valgrind findings a report keeps. */
#define HARNESS_REPORT_MAX 20000
/* Remembered acknowledgements per client (publishes and subscriptions are waited for one at a
 * time, so a few suffice). */
#define HARNESS_ACK_RING 32
/* The exit status LSan gives a process in which it found leaks. */
#define HARNESS_LSAN_EXITCODE 23
/* Deepest directory tree harness_rm_rf descends. */
#define HARNESS_RM_DEPTH 16
/* Highest descriptor a child closes before exec. */
#define HARNESS_MAX_FD 65536

/* ---------------------------------------------------------------------------------------- */
/* Small utilities                                                                             */
/* ---------------------------------------------------------------------------------------- */

/* A growable NUL-terminated string. */
struct strbuf {
	char *s;
	size_t len;
	size_t cap;
};

/* Out of memory in a test process is not worth recovering from. */
static void *harness_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (!q) {
		fprintf(stderr, "harness: out of memory\n");
		abort();
	}
	return q;
}

static void *harness_xcalloc(size_t count, size_t size)
{
	void *p = calloc(count ? count : 1, size ? size : 1);

	if (!p) {
		fprintf(stderr, "harness: out of memory\n");
		abort();
	}
	return p;
}

static char *harness_xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = harness_xrealloc(NULL, n);

	memcpy(d, s, n);
	return d;
}

static void sb_append(struct strbuf *sb, const char *p, size_t n)
{
	if (sb->len + n + 1 > sb->cap) {
		size_t cap = sb->cap ? sb->cap : 256;

		while (cap < sb->len + n + 1)
			cap *= 2;
		sb->s = harness_xrealloc(sb->s, cap);
		sb->cap = cap;
	}
	if (n > 0)
		memcpy(sb->s + sb->len, p, n);
	sb->len += n;
	sb->s[sb->len] = '\0';
}

static void sb_puts(struct strbuf *sb, const char *s)
{
	sb_append(sb, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void sb_printf(struct strbuf *sb, const char *fmt, ...)
{
	char small[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(small)) {
		sb_append(sb, small, (size_t)n);
		return;
	}
	{
		char *big = harness_xrealloc(NULL, (size_t)n + 1);

		va_start(ap, fmt);
		vsnprintf(big, (size_t)n + 1, fmt, ap);
		va_end(ap);
		sb_append(sb, big, (size_t)n);
		free(big);
	}
}

/* Returns the buffer's string (never NULL) and leaves sb empty; the caller frees it. */
static char *sb_take(struct strbuf *sb)
{
	char *s = sb->s ? sb->s : harness_xstrdup("");

	sb->s = NULL;
	sb->len = 0;
	sb->cap = 0;
	return s;
}

/* Milliseconds on the monotonic clock. */
static long long harness_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The value of an environment variable, or fallback when it is unset or empty. */
static const char *harness_env(const char *name, const char *fallback)
{
	const char *v = getenv(name);

	return (v && *v) ? v : fallback;
}

/* PRESENCE_TIMEOUT_SCALE as a factor >= 1. */
static int harness_env_scale(void)
{
	const char *v = harness_env("PRESENCE_TIMEOUT_SCALE", NULL);
	long n;

	if (!v)
		return 1;
	n = strtol(v, NULL, 10);
	if (n < 1)
		return 1;
	if (n > 100)
		return 100;
	return (int)n;
}

/* timeout_ms * scale without overflow; non-positive timeouts stay 0. */
static int harness_scaled(int timeout_ms, int scale)
{
	long long v = (long long)timeout_ms * scale;

	if (v <= 0)
		return 0;
	if (v > 24 * 3600 * 1000)
		return 24 * 3600 * 1000;
	return (int)v;
}

/* Reads a whole file. Returns a NUL-terminated string the caller frees and stores its length
 * in *len (if not NULL); returns NULL when the file cannot be read. */
static char *harness_read_file(const char *path, size_t *len)
{
	struct strbuf sb = {0};
	char buf[8192];
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		sb_append(&sb, buf, (size_t)r);
	}
	close(fd);
	if (len)
		*len = sb.len;
	return sb_take(&sb);
}

/* Creates path and its missing parents. Returns 0 or -1. */
static int harness_mkdir_p(const char *path)
{
	char *p = harness_xstrdup(path);
	char *s;
	int rc = 0;

	for (s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) != 0 && errno != EEXIST)
			rc = -1;
		*s = '/';
	}
	if (mkdir(p, 0755) != 0 && errno != EEXIST)
		rc = -1;
	free(p);
	return rc;
}

/* Removes path and, for a directory, everything below it (at most HARNESS_RM_DEPTH deep). */
static void harness_rm_rf(const char *path, int depth)
{
	struct stat st;
	DIR *d;
	struct dirent *e;

	if (lstat(path, &st) != 0)
		return;
	if (!S_ISDIR(st.st_mode)) {
		(void)unlink(path);
		return;
	}
	if (depth >= HARNESS_RM_DEPTH)
		return;
	d = opendir(path);
	if (d) {
		while ((e = readdir(d)) != NULL) {
			struct strbuf child = {0};

			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			sb_printf(&child, "%s/%s", path, e->d_name);
			harness_rm_rf(child.s, depth + 1);
			free(child.s);
		}
		closedir(d);
	}
	(void)rmdir(path);
}

/* Finds an executable by name in PATH (or takes a path as is). Returns a string the caller
 * frees, or NULL. */
static char *harness_which(const char *name)
{
	const char *path = harness_env("PATH", "/usr/bin:/bin");
	const char *p = path;

	if (strchr(name, '/'))
		return access(name, X_OK) == 0 ? harness_xstrdup(name) : NULL;
	while (*p) {
		const char *end = strchr(p, ':');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		struct strbuf cand = {0};

		sb_append(&cand, p, n);
		sb_printf(&cand, "/%s", name);
		if (n > 0 && access(cand.s, X_OK) == 0)
			return sb_take(&cand);
		free(cand.s);
		p += n;
		if (*p == ':')
			p++;
	}
	return NULL;
}

/* The last HARNESS_LOG_TAIL bytes of text, starting at a line. */
static const char *harness_tail(const char *text)
{
	size_t n = text ? strlen(text) : 0;
	const char *t;

	if (!text)
		return "(no log)";
	if (n <= HARNESS_LOG_TAIL)
		return text;
	t = text + n - HARNESS_LOG_TAIL;
	while (*t && *t != '\n')
		t++;
	return *t ? t + 1 : text + n - HARNESS_LOG_TAIL;
}

/* In a forked child: closes every descriptor from 3 up, so that no client socket of the test
 * process keeps a connection alive in the broker (the broker would otherwise never see a
 * dropped client go). */
static void harness_close_inherited_fds(void)
{
	struct rlimit rl;
	long max = HARNESS_MAX_FD;
	long fd;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    (long)rl.rlim_cur < max)
		max = (long)rl.rlim_cur;
	for (fd = 3; fd < max; fd++)
		(void)close((int)fd);
}

/* ---------------------------------------------------------------------------------------- */
/* Global state                                                                                */
/* ---------------------------------------------------------------------------------------- */

/* One remembered acknowledgement: a PUBACK/PUBCOMP/written QoS 0 publish, or a SUBACK. */
struct harness_ack {
	int mid;
	int rc;
};

/* A queued received message. */
struct harness_msg_node {
	struct msg *m;
	struct harness_msg_node *next;
};

struct broker {
	/* The process; -1 before launch. */
	pid_t pid;
	/* Whether the process has been reaped, and its status (see broker_exit_status). */
	bool exited;
	int status;
	/* Whether the harness itself sent SIGKILL (then death by signal is not a finding). */
	bool killed_by_harness;
	int port;
	/* @DIR@, its broker.log and mosquitto.conf. */
	char *dir;
	char *log_path;
	char *conf_path;
	/* The plugin path @PLUGIN@ stands for (NULL when $PRESENCE_PLUGIN is unset). */
	char *plugin;
	bool valgrind;
	bool expect_failure;
	/* The port was given by the caller (broker_opts.port): never move to another one. */
	bool fixed_port;
	int start_timeout_ms;
	/* Deadline factor: HARNESS_VALGRIND_SCALE under valgrind, times PRESENCE_TIMEOUT_SCALE. */
	int scale;
	/* The log read so far, and where the next broker_log_wait search starts. */
	struct strbuf log;
	size_t log_pos;
	/* inotify descriptor watching broker.log, -1 when none. */
	int inotify_fd;
	/* Paths returned by broker_write_file, freed with the broker. */
	char **files;
	size_t nfiles;
	struct broker *next;
};

struct client {
	struct mosquitto *mosq;
	/* The broker it connected to (NULL once that broker is stopped) and its scale. */
	struct broker *broker;
	int scale;
	int protocol;
	/* CONNACK seen, and its code. */
	bool connack;
	int connack_rc;
	/* The connection is closed, and why (see client_disconnect_reason). */
	bool closed;
	int disconnect_rc;
	/* Received messages in arrival order. */
	struct harness_msg_node *head;
	struct harness_msg_node *tail;
	size_t queued;
	/* Recent publish and subscribe acknowledgements (ring buffers). */
	struct harness_ack pub_acks[HARNESS_ACK_RING];
	unsigned int pub_next;
	struct harness_ack sub_acks[HARNESS_ACK_RING];
	unsigned int sub_next;
	/* client_sync: the client's own topic, whether subscribed, last marker sent and seen. */
	char *sync_topic;
	bool sync_subscribed;
	long sync_sent;
	long sync_seen;
	struct client *next;
};

/* Every broker not yet stopped and every client not yet freed, so that waits can service all
 * clients and atexit can clean up after a failed test. */
static struct broker *harness_brokers;
static struct client *harness_clients;
static size_t harness_client_count;
static bool harness_initialised;
static unsigned int harness_broker_seq;
static unsigned int harness_client_seq;

static void harness_kill_all(void);

static void harness_atexit(void)
{
	harness_kill_all();
	if (harness_initialised)
		mosquitto_lib_cleanup();
}

static void harness_init(void)
{
	if (harness_initialised)
		return;
	harness_initialised = true;
	/* A write to a socket the broker closed must be an error, not a fatal signal. */
	signal(SIGPIPE, SIG_IGN);
	mosquitto_lib_init();
	atexit(harness_atexit);
}

/* ---------------------------------------------------------------------------------------- */
/* Servicing clients and waiting                                                               */
/* ---------------------------------------------------------------------------------------- */

/* Lets libmosquitto handle whatever c's socket is ready for. */
static void harness_service(struct client *c, short revents)
{
	if (revents & (POLLIN | POLLERR | POLLHUP))
		(void)mosquitto_loop_read(c->mosq, 1);
	if (!c->closed && mosquitto_socket(c->mosq) >= 0 && (revents & POLLOUT))
		(void)mosquitto_loop_write(c->mosq, 1);
	if (!c->closed && mosquitto_socket(c->mosq) >= 0)
		(void)mosquitto_loop_misc(c->mosq);
	if (!c->closed && mosquitto_socket(c->mosq) < 0) {
		/* Closed without a callback (should not happen, but never wait on a dead
		 * socket). */
		c->closed = true;
		c->disconnect_rc = MOSQ_ERR_CONN_LOST;
	}
}

/* Waits at most timeout_ms for any client socket (or extra_fd, if >= 0) to become ready, then
 * services every ready client and keeps every live client's keepalive going. */
static void harness_pump(int extra_fd, int timeout_ms)
{
	struct pollfd *fds = harness_xcalloc(harness_client_count + 1, sizeof(*fds));
	struct client **owners = harness_xcalloc(harness_client_count + 1, sizeof(*owners));
	struct client *c;
	nfds_t n = 0;
	nfds_t nclients;
	nfds_t i;
	int rc;

	for (c = harness_clients; c; c = c->next) {
		int sock = mosquitto_socket(c->mosq);

		if (c->closed || sock < 0)
			continue;
		fds[n].fd = sock;
		fds[n].events = POLLIN;
		if (mosquitto_want_write(c->mosq))
			fds[n].events |= POLLOUT;
		owners[n] = c;
		n++;
	}
	nclients = n;
	if (extra_fd >= 0) {
		fds[n].fd = extra_fd;
		fds[n].events = POLLIN;
		n++;
	}
	rc = poll(fds, n, timeout_ms);
	for (i = 0; i < nclients; i++)
		harness_service(owners[i], rc > 0 ? fds[i].revents : 0);
	free(owners);
	free(fds);
}

/* Waits, servicing all clients, until done(arg) is true or timeout_ms (already scaled) has
 * passed. extra_fd (or -1) also wakes the wait. Returns done(arg). */
static bool harness_until(bool (*done)(const void *arg), const void *arg, int extra_fd,
                          int timeout_ms)
{
	long long deadline = harness_now_ms() + timeout_ms;

	for (;;) {
		long long left;

		if (done(arg))
			return true;
		left = deadline - harness_now_ms();
		if (left <= 0)
			return done(arg);
		harness_pump(extra_fd, left < HARNESS_SLICE_MS ? (int)left : HARNESS_SLICE_MS);
	}
}

/* ---------------------------------------------------------------------------------------- */
/* Files and directories                                                                       */
/* ---------------------------------------------------------------------------------------- */

char *harness_write_file(const char *dir, const char *name, const char *content)
{
	struct strbuf path = {0};
	size_t n = strlen(content);
	size_t off = 0;
	int fd;

	sb_printf(&path, "%s/%s", dir, name);
	fd = open(path.s, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		fail_msg("cannot create %s: %s", path.s, strerror(errno));
	while (off < n) {
		ssize_t w = write(fd, content + off, n - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			close(fd);
			fail_msg("cannot write %s: %s", path.s, strerror(errno));
		}
		off += (size_t)w;
	}
	if (close(fd) != 0)
		fail_msg("cannot write %s: %s", path.s, strerror(errno));
	return sb_take(&path);
}

/* $PRESENCE_WORK_DIR (ctest sets it), or work/ next to the test executable: in the build
 * tree either way, never in the source tree a test happens to be started from. Created. */
static const char *harness_work_dir(void)
{
	static char *dir;

	if (!dir) {
		const char *env = harness_env("PRESENCE_WORK_DIR", NULL);

		if (env) {
			dir = harness_xstrdup(env);
		} else {
			char exe[4096];
			ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
			struct strbuf sb = {0};

			if (n <= 0 || memchr(exe, '/', (size_t)n) == NULL)
				fail_msg("cannot find the test executable: set PRESENCE_WORK_DIR");
			exe[n] = '\0';
			*strrchr(exe, '/') = '\0';
			sb_printf(&sb, "%s/work", exe);
			dir = sb_take(&sb);
		}
		if (harness_mkdir_p(dir) != 0)
			fail_msg("cannot create work directory %s: %s", dir, strerror(errno));
	}
	return dir;
}

/* The test executable's name, used to name its broker directories. */
static const char *harness_exe_name(void)
{
	static char name[256];

	if (!name[0]) {
		char path[4096];
		ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
		const char *base = "test";

		if (n > 0) {
			path[n] = '\0';
			base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
		}
		n = (ssize_t)strlen(base);
		if (n >= (ssize_t)sizeof(name))
			n = (ssize_t)sizeof(name) - 1;
		memcpy(name, base, (size_t)n);
		name[n] = '\0';
	}
	return name;
}

/* Removes the directories earlier runs of this executable left (every run keeps its own
 * directories for inspection until the next run). Runs once per process. */
static void harness_clean_stale_dirs(void)
{
	static bool done;
	struct strbuf prefix = {0};
	struct strbuf mine = {0};
	const char *work = harness_work_dir();
	DIR *d;
	struct dirent *e;

	if (done)
		return;
	done = true;
	sb_printf(&prefix, "%s-", harness_exe_name());
	sb_printf(&mine, "%s-%ld-", harness_exe_name(), (long)getpid());
	d = opendir(work);
	if (d) {
		while ((e = readdir(d)) != NULL) {
			if (strncmp(e->d_name, prefix.s, prefix.len) == 0 &&
			    strncmp(e->d_name, mine.s, mine.len) != 0) {
				struct strbuf path = {0};

				sb_printf(&path, "%s/%s", work, e->d_name);
				harness_rm_rf(path.s, 0);
				free(path.s);
			}
		}
		closedir(d);
	}
	free(prefix.s);
	free(mine.s);
}

/* Runs argv (argv[0] found in PATH) with stdout and stderr appended to out_path, waiting at
 * most timeout_ms. Returns the exit status, 128 + signal, or -1 when it cannot run or times
 * out (then it is killed). */
static int harness_run(char *const argv[], const char *out_path, int timeout_ms)
{
	char *exe = harness_which(argv[0]);
	long long deadline = harness_now_ms() + timeout_ms;
	pid_t parent = getpid();
	pid_t pid;
	int out;
	int st;

	if (!exe)
		return -1;
	out = open(out_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (out < 0) {
		free(exe);
		return -1;
	}
	pid = fork();
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(out, 1);
		dup2(out, 2);
		harness_close_inherited_fds();
		execve(exe, argv, environ);
		_exit(127);
	}
	close(out);
	free(exe);
	if (pid < 0)
		return -1;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			break;
		if (r < 0 && errno != EINTR)
			return -1;
		if (harness_now_ms() >= deadline) {
			kill(pid, SIGKILL);
			(void)waitpid(pid, &st, 0);
			return -1;
		}
		(void)poll(NULL, 0, 10);
	}
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return -1;
}

int harness_broker_version(void)
{
	static int version = -1;
	const char *bin = harness_env("MOSQUITTO_BIN", "/usr/sbin/mosquitto");
	const char *dir = harness_env("PRESENCE_WORK_DIR", "/tmp");
	struct strbuf out = {0};
	char *argv[3];
	char *text;
	const char *line;
	int major;
	int minor;
	int revision;

	if (version >= 0)
		return version;
	if (harness_mkdir_p(dir) != 0)
		fail_msg("cannot create %s: %s", dir, strerror(errno));
	sb_printf(&out, "%s/mosquitto-version.%ld.out", dir, (long)getpid());
	(void)unlink(out.s);
	argv[0] = harness_xstrdup(bin);
	argv[1] = harness_xstrdup("-h");
	argv[2] = NULL;
	/* `mosquitto -h` exits with a non-zero status after printing its usage. */
	(void)harness_run(argv, out.s, HARNESS_COMMAND_TIMEOUT_MS);
	free(argv[0]);
	free(argv[1]);
	text = harness_read_file(out.s, NULL);
	(void)unlink(out.s);
	free(out.s);
	line = text ? strstr(text, "mosquitto version ") : NULL;
	if (!line || sscanf(line, "mosquitto version %d.%d.%d", &major, &minor, &revision) != 3)
		fail_msg("cannot read the version of %s from `%s -h`: %s", bin, bin,
		         text ? text : "(no output)");
	free(text);
	version = HARNESS_MOSQUITTO_VERSION(major, minor, revision);
	return version;
}

bool harness_have_valgrind(void)
{
	char *vg = harness_which(harness_env("VALGRIND_BIN", "valgrind"));
	bool have = vg != NULL;

	free(vg);
	return have;
}

/* ---------------------------------------------------------------------------------------- */
/* Brokers                                                                                     */
/* ---------------------------------------------------------------------------------------- */

int harness_free_port(void)
{
	struct sockaddr_in addr;
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int port;

	if (fd < 0)
		fail_msg("socket: %s", strerror(errno));
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = 0;
	if (bind(fd, (const struct sockaddr *)&addr, sizeof(addr)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
		int saved = errno;

		close(fd);
		fail_msg("cannot find a free port: %s", strerror(saved));
	}
	port = ntohs(addr.sin_port);
	close(fd);
	return port;
}

/* Reads what the broker appended to its log since the last call. Handles a log that was
 * truncated by a relaunch by reading it again from the start. */
static void broker_log_refresh(struct broker *b)
{
	char buf[8192];
	struct stat st;
	int fd;

	if (!b->log_path)
		return;
	fd = open(b->log_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && (size_t)st.st_size < b->log.len) {
		b->log.len = 0;
		if (b->log.s)
			b->log.s[0] = '\0';
		b->log_pos = 0;
	}
	if (lseek(fd, (off_t)b->log.len, SEEK_SET) >= 0) {
		for (;;) {
			ssize_t r = read(fd, buf, sizeof(buf));

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			sb_append(&b->log, buf, (size_t)r);
		}
	}
	close(fd);
	if (!b->log.s)
		sb_append(&b->log, "", 0);
}

/* Drains pending inotify events so that the next poll() sleeps until new ones. */
static void broker_drain_inotify(struct broker *b)
{
	char buf[4096];

	if (b->inotify_fd < 0)
		return;
	while (read(b->inotify_fd, buf, sizeof(buf)) > 0)
		;
}

/* Reaps the process if it has exited. Returns whether it has exited. */
static bool broker_reap(struct broker *b)
{
	int st;
	pid_t r;

	if (b->exited || b->pid <= 0)
		return b->exited;
	do {
		r = waitpid(b->pid, &st, WNOHANG);
	} while (r < 0 && errno == EINTR);
	if (r == b->pid || (r < 0 && errno == ECHILD)) {
		b->exited = true;
		if (r < 0)
			b->status = -1;
		else if (WIFEXITED(st))
			b->status = WEXITSTATUS(st);
		else if (WIFSIGNALED(st))
			b->status = 128 + WTERMSIG(st);
		else
			b->status = -1;
	}
	return b->exited;
}

/* Kills the process (SIGKILL) and reaps it. */
static void broker_kill(struct broker *b)
{
	if (b->pid > 0 && !broker_reap(b)) {
		b->killed_by_harness = true;
		kill(b->pid, SIGKILL);
		while (!broker_reap(b))
			(void)poll(NULL, 0, 5);
	}
}

static bool broker_exited_cond(const void *arg)
{
	/* harness_until hands conditions a const pointer; reaping updates the broker. */
	struct broker *b = (struct broker *)(uintptr_t)arg;

	return broker_reap(b);
}

/* Unlinks b from the live list. */
static void broker_unlink(struct broker *b)
{
	struct broker **pp;
	struct client *c;

	for (pp = &harness_brokers; *pp; pp = &(*pp)->next) {
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	}
	for (c = harness_clients; c; c = c->next)
		if (c->broker == b)
			c->broker = NULL;
}

static void broker_free(struct broker *b)
{
	size_t i;

	if (b->inotify_fd >= 0)
		close(b->inotify_fd);
	for (i = 0; i < b->nfiles; i++)
		free(b->files[i]);
	free(b->files);
	free(b->log.s);
	free(b->dir);
	free(b->log_path);
	free(b->conf_path);
	free(b->plugin);
	free(b);
}

struct broker *broker_prepare(const struct broker_opts *opts)
{
	struct broker_opts none = {0};
	struct broker *b;
	const char *plugin_env;

	harness_init();
	if (!opts)
		opts = &none;
	b = harness_xcalloc(1, sizeof(*b));
	b->pid = -1;
	b->status = -1;
	b->inotify_fd = -1;
	b->valgrind = opts->valgrind;
	b->expect_failure = opts->expect_failure;
	b->start_timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : HARNESS_START_TIMEOUT_MS;
	b->scale = (b->valgrind ? HARNESS_VALGRIND_SCALE : 1) * harness_env_scale();
	plugin_env = harness_env(b->valgrind ? "PRESENCE_PLAIN_PLUGIN" : "PRESENCE_PLUGIN", NULL);
	b->plugin = plugin_env ? harness_xstrdup(plugin_env) : NULL;

	if (opts->dir) {
		b->dir = harness_xstrdup(opts->dir);
	} else {
		struct strbuf dir = {0};

		harness_clean_stale_dirs();
		sb_printf(&dir, "%s/%s-%ld-%u", harness_work_dir(), harness_exe_name(),
		          (long)getpid(), ++harness_broker_seq);
		harness_rm_rf(dir.s, 0);
		b->dir = sb_take(&dir);
	}
	if (harness_mkdir_p(b->dir) != 0) {
		fail_msg("cannot create broker directory %s: %s", b->dir, strerror(errno));
	}
	{
		struct strbuf p = {0};

		sb_printf(&p, "%s/broker.log", b->dir);
		b->log_path = sb_take(&p);
		sb_printf(&p, "%s/mosquitto.conf", b->dir);
		b->conf_path = sb_take(&p);
	}
	if (opts->dir && access(b->log_path, F_OK) == 0) {
		/* A restart in the same directory: keep the earlier run's log. */
		unsigned int n;

		for (n = 1; n < 1000; n++) {
			struct strbuf old = {0};
			bool done = false;

			sb_printf(&old, "%s.%u", b->log_path, n);
			if (access(old.s, F_OK) != 0) {
				if (rename(b->log_path, old.s) != 0)
					fail_msg("cannot rename %s to %s: %s", b->log_path, old.s,
					         strerror(errno));
				done = true;
			}
			free(old.s);
			if (done)
				break;
		}
	}
	b->fixed_port = opts->port > 0;
	b->port = b->fixed_port ? opts->port : harness_free_port();
	b->next = harness_brokers;
	harness_brokers = b;
	return b;
}

char *broker_subst(const struct broker *b, const char *text)
{
	struct strbuf out = {0};
	const char *p = text;
	char port[16];

	snprintf(port, sizeof(port), "%d", b->port);
	sb_append(&out, "", 0);
	while (*p) {
		const char *at = strchr(p, '@');
		const char *value = NULL;
		size_t skip = 0;

		if (!at) {
			sb_puts(&out, p);
			break;
		}
		sb_append(&out, p, (size_t)(at - p));
		if (strncmp(at, "@PORT@", 6) == 0) {
			value = port;
			skip = 6;
		} else if (strncmp(at, "@DIR@", 5) == 0) {
			value = b->dir;
			skip = 5;
		} else if (strncmp(at, "@PLUGIN@", 8) == 0) {
			value = b->plugin;
			skip = 8;
			if (!value)
				fail_msg("@PLUGIN@ used but $%s is not set",
				         b->valgrind ? "PRESENCE_PLAIN_PLUGIN" : "PRESENCE_PLUGIN");
		} else if (strncmp(at, "@HELPER@", 8) == 0) {
			value = harness_env("PRESENCE_HELPER_PLUGIN", NULL);
			skip = 8;
			if (!value)
				fail_msg("@HELPER@ used but $PRESENCE_HELPER_PLUGIN is not set");
		}
		if (value) {
			sb_puts(&out, value);
			p = at + skip;
		} else {
			sb_append(&out, "@", 1);
			p = at + 1;
		}
	}
	return sb_take(&out);
}

const char *broker_write_file(struct broker *b, const char *name, const char *content)
{
	char *text = broker_subst(b, content);
	char *path = harness_write_file(b->dir, name, text);

	free(text);
	b->files = harness_xrealloc(b->files, (b->nfiles + 1) * sizeof(*b->files));
	b->files[b->nfiles++] = path;
	return path;
}

const char *broker_password_file(struct broker *b, const char *name, const char *pairs)
{
	const char *path = broker_write_file(b, name, pairs);
	char *argv[4];
	struct strbuf out = {0};
	int rc;

	argv[0] = harness_xstrdup(harness_env("MOSQUITTO_PASSWD_BIN", "mosquitto_passwd"));
	argv[1] = harness_xstrdup("-U");
	argv[2] = harness_xstrdup(path);
	argv[3] = NULL;
	sb_printf(&out, "%s/mosquitto_passwd.out", b->dir);
	rc = harness_run(argv, out.s, HARNESS_COMMAND_TIMEOUT_MS);
	free(argv[0]);
	free(argv[1]);
	free(argv[2]);
	if (rc != 0) {
		char *output = harness_read_file(out.s, NULL);

		fail_msg("mosquitto_passwd -U %s failed (status %d): %s", path, rc,
		         output ? output : "");
	}
	free(out.s);
	return path;
}

/* Whether conf has a `user` line of its own. */
static bool conf_has_user_line(const char *conf)
{
	const char *line = conf;

	while (line && *line) {
		const char *p = line;

		while (*p == ' ' || *p == '\t')
			p++;
		if (strncmp(p, "user", 4) == 0 && (p[4] == ' ' || p[4] == '\t'))
			return true;
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	return false;
}

/* The config as written: substituted, plus `user root` when running as root (see harness.h). */
static char *broker_final_conf(struct broker *b, const char *conf)
{
	struct strbuf out = {0};
	char *text = broker_subst(b, conf);

	sb_puts(&out, text);
	free(text);
	if (geteuid() == 0) {
		if (!conf_has_user_line(out.s)) {
			if (out.len > 0 && out.s[out.len - 1] != '\n')
				sb_puts(&out, "\n");
			sb_puts(&out, "# Added by the test harness: keep root, see harness.h.\n"
			              "user root\n");
		} else {
			/* The broker drops privileges: let it write its files. */
			(void)chmod(b->dir, 0777);
		}
	}
	return sb_take(&out);
}

/* Appends "NAME=value" to an environment array. */
static void env_push(char ***envp, size_t *n, char *entry)
{
	*envp = harness_xrealloc(*envp, (*n + 2) * sizeof(**envp));
	(*envp)[(*n)++] = entry;
	(*envp)[*n] = NULL;
}

/* Whether an environment entry sets one of the variables the harness controls. */
static bool env_is_controlled(const char *entry)
{
	static const char *const names[] = {
	    "LD_PRELOAD=", "ASAN_OPTIONS=", "UBSAN_OPTIONS=", "LSAN_OPTIONS="};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strncmp(entry, names[i], strlen(names[i])) == 0)
			return true;
	return false;
}

/* The broker's environment: ours minus the sanitizer variables, plus the sanitizer setup when
 * the plugin is sanitized (see harness.h). conf is the final config text. The caller frees the
 * array and every entry. */
static char **broker_env(const struct broker *b, const char *conf)
{
	const char *asan = harness_env("PRESENCE_ASAN_RUNTIME", NULL);
	char **envp = NULL;
	size_t n = 0;
	char **e;

	for (e = environ; *e; e++)
		if (!env_is_controlled(*e))
			env_push(&envp, &n, harness_xstrdup(*e));
	if (asan && !b->valgrind) {
		struct strbuf v = {0};

		if (access(asan, R_OK) != 0)
			fail_msg("$PRESENCE_ASAN_RUNTIME=%s is not readable", asan);
		sb_printf(&v, "LD_PRELOAD=%s", asan);
		/* Keep the plugin mapped after the broker's dlclose(), so LSan can name it. */
		if (b->plugin && strstr(conf, b->plugin))
			sb_printf(&v, ":%s", b->plugin);
		env_push(&envp, &n, sb_take(&v));
		sb_printf(&v,
		          "ASAN_OPTIONS=log_path=%s/asan:detect_leaks=1:halt_on_error=1:"
		          "abort_on_error=0:exitcode=23:symbolize=1:fast_unwind_on_malloc=0:"
		          "stack_trace_format='    #%%n %%p in %%f %%L (%%m+%%o)'",
		          b->dir);
		env_push(&envp, &n, sb_take(&v));
		sb_printf(&v, "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=%s/ubsan",
		          b->dir);
		env_push(&envp, &n, sb_take(&v));
	}
	if (!envp)
		env_push(&envp, &n, harness_xstrdup("HARNESS=1"));
	return envp;
}

static void strv_free(char **v)
{
	char **p;

	if (!v)
		return;
	for (p = v; *p; p++)
		free(*p);
	free(v);
}

/* Writes the final config and starts the process (no waiting). */
static void broker_spawn(struct broker *b, const char *conf)
{
	char **argv = NULL;
	size_t argc = 0;
	char **envp;
	pid_t parent = getpid();
	char *exe;
	int log_fd;
	pid_t pid;
	char *written = harness_write_file(b->dir, "mosquitto.conf", conf);

	free(written);
	if (b->valgrind) {
		struct strbuf xml = {0};

		exe = harness_which(harness_env("VALGRIND_BIN", "valgrind"));
		if (!exe)
			fail_msg("valgrind mode requested but valgrind is not installed");
		env_push(&argv, &argc, harness_xstrdup(exe));
		env_push(&argv, &argc, harness_xstrdup("--leak-check=full"));
		env_push(&argv, &argc, harness_xstrdup("--show-leak-kinds=definite,indirect"));
		env_push(&argv, &argc,
		         harness_xstrdup("--errors-for-leak-kinds=definite,indirect"));
		env_push(&argv, &argc, harness_xstrdup("--track-origins=yes"));
		env_push(&argv, &argc, harness_xstrdup("--keep-debuginfo=yes"));
		env_push(&argv, &argc, harness_xstrdup("--num-callers=40"));
		env_push(&argv, &argc, harness_xstrdup("--xml=yes"));
		sb_printf(&xml, "--xml-file=%s/vg.%%p.xml", b->dir);
		env_push(&argv, &argc, sb_take(&xml));
	} else {
		exe = harness_which(harness_env("MOSQUITTO_BIN", "/usr/sbin/mosquitto"));
		if (!exe)
			fail_msg("mosquitto not found ($MOSQUITTO_BIN=%s)",
			         harness_env("MOSQUITTO_BIN", "/usr/sbin/mosquitto"));
	}
	env_push(&argv, &argc,
	         harness_xstrdup(harness_env("MOSQUITTO_BIN", "/usr/sbin/mosquitto")));
	env_push(&argv, &argc, harness_xstrdup("-c"));
	env_push(&argv, &argc, harness_xstrdup(b->conf_path));
	envp = broker_env(b, conf);

	log_fd = open(b->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (log_fd < 0)
		fail_msg("cannot create %s: %s", b->log_path, strerror(errno));
	b->log.len = 0;
	if (b->log.s)
		b->log.s[0] = '\0';
	b->log_pos = 0;
	b->exited = false;
	b->status = -1;
	b->killed_by_harness = false;
	if (b->inotify_fd < 0)
		b->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (b->inotify_fd >= 0)
		(void)inotify_add_watch(b->inotify_fd, b->log_path, IN_MODIFY);

	pid = fork();
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		/* Never outlive the test process, even when it is killed by a timeout. */
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(log_fd, 1);
		dup2(log_fd, 2);
		harness_close_inherited_fds();
		execve(exe, argv, envp);
		{
			static const char msg[] = "harness: exec failed\n";

			(void)!write(2, msg, sizeof(msg) - 1);
		}
		_exit(127);
	}
	close(log_fd);
	free(exe);
	strv_free(argv);
	strv_free(envp);
	if (pid < 0)
		fail_msg("fork: %s", strerror(errno));
	b->pid = pid;
}

/* Whether a complete log line says "mosquitto version X running". */
static bool log_says_running(const char *log)
{
	const char *p = log;

	while (p && (p = strstr(p, "mosquitto version ")) != NULL) {
		const char *eol = strchr(p, '\n');

		if (!eol)
			return false;
		if (eol - p >= 8 && memcmp(eol - 8, " running", 8) == 0)
			return true;
		p = eol;
	}
	return false;
}

enum start_outcome { START_RUNNING, START_EXITED, START_TIMEOUT };

struct start_wait {
	struct broker *b;
};

static bool broker_started_cond(const void *arg)
{
	const struct start_wait *w = arg;

	broker_drain_inotify(w->b);
	broker_log_refresh(w->b);
	return log_says_running(w->b->log.s) || broker_reap(w->b);
}

/* Waits until the broker logs that it runs, or exits, or the start deadline passes. */
static enum start_outcome broker_wait_start(struct broker *b)
{
	struct start_wait w = {b};

	harness_until(broker_started_cond, &w, b->inotify_fd,
	              harness_scaled(b->start_timeout_ms, b->scale));
	broker_log_refresh(b);
	if (log_says_running(b->log.s))
		return START_RUNNING;
	if (broker_reap(b)) {
		broker_log_refresh(b);
		return START_EXITED;
	}
	return START_TIMEOUT;
}

void broker_launch(struct broker *b, const char *conf)
{
	int attempt;

	for (attempt = 1;; attempt++) {
		char *final = broker_final_conf(b, conf);
		enum start_outcome outcome;

		broker_spawn(b, final);
		free(final);
		outcome = broker_wait_start(b);
		if (outcome == START_EXITED && attempt < HARNESS_PORT_ATTEMPTS && !b->fixed_port &&
		    strstr(b->log.s, "Address already in use")) {
			b->port = harness_free_port();
			continue;
		}
		if (b->expect_failure) {
			if (outcome == START_EXITED)
				return;
			broker_kill(b);
			broker_log_refresh(b);
			fail_msg("broker %s although it was expected to fail; log tail:\n%s",
			         outcome == START_RUNNING ? "started"
			                                  : "neither started nor exited",
			         harness_tail(b->log.s));
		}
		if (outcome == START_RUNNING)
			return;
		if (outcome == START_TIMEOUT)
			broker_kill(b);
		broker_log_refresh(b);
		fail_msg("broker did not start (%s, status %d) from %s; log tail:\n%s",
		         outcome == START_TIMEOUT ? "timeout" : "exited", b->status, b->conf_path,
		         harness_tail(b->log.s));
	}
}

struct broker *broker_start_opts(const char *conf, const struct broker_opts *opts)
{
	struct broker *b = broker_prepare(opts);

	broker_launch(b, conf);
	return b;
}

struct broker *broker_start(const char *conf)
{
	return broker_start_opts(conf, NULL);
}

static char *broker_conf_common(bool with_plugin, const char *extra)
{
	struct strbuf sb = {0};

	sb_puts(&sb, "listener @PORT@ 127.0.0.1\n"
	             "allow_anonymous true\n"
	             "log_type all\n"
	             "persistence false\n");
	if (with_plugin)
		sb_puts(&sb, "plugin @PLUGIN@\n");
	if (extra) {
		sb_puts(&sb, extra);
		if (sb.len > 0 && sb.s[sb.len - 1] != '\n')
			sb_puts(&sb, "\n");
	}
	return sb_take(&sb);
}

char *broker_conf(const char *extra)
{
	return broker_conf_common(true, extra);
}

char *broker_conf_without_plugin(const char *extra)
{
	return broker_conf_common(false, extra);
}

int broker_port(const struct broker *b)
{
	return b->port;
}

const char *broker_dir(const struct broker *b)
{
	return b->dir;
}

pid_t broker_pid(const struct broker *b)
{
	return b->pid;
}

void broker_signal(struct broker *b, int sig)
{
	if (b->pid <= 0 || broker_reap(b))
		fail_msg("broker_signal(%d): the broker is not running; log tail:\n%s", sig,
		         harness_tail(b->log.s));
	if (kill(b->pid, sig) != 0)
		fail_msg("kill(%ld, %d): %s", (long)b->pid, sig, strerror(errno));
}

void broker_crash(struct broker *b)
{
	if (b->pid <= 0 || broker_reap(b))
		fail_msg("broker_crash: the broker is not running; log tail:\n%s",
		         harness_tail(b->log.s));
	broker_kill(b);
	broker_log_refresh(b);
}

void broker_restart(struct broker **b, const char *conf, bool crash)
{
	char *dir = strdup(broker_dir(*b));
	struct broker_opts opts = {.dir = dir, .port = broker_port(*b)};

	if (dir == NULL)
		fail_msg("broker_restart: out of memory");
	if (crash)
		broker_crash(*b);
	broker_stop(*b);
	*b = broker_start_opts(conf, &opts);
	free(dir);
}

struct log_wait {
	struct broker *b;
	const char *needle;
	bool found;
};

static bool broker_log_cond(const void *arg)
{
	/* The condition records its result in the wait record. */
	struct log_wait *w = (struct log_wait *)(uintptr_t)arg;
	const char *hit;
	bool exited;

	broker_drain_inotify(w->b);
	exited = broker_reap(w->b);
	broker_log_refresh(w->b);
	hit = strstr(w->b->log.s + w->b->log_pos, w->needle);
	if (hit) {
		w->b->log_pos = (size_t)(hit - w->b->log.s) + strlen(w->needle);
		w->found = true;
	}
	return w->found || exited;
}

bool broker_log_wait(struct broker *b, const char *needle, int timeout_ms)
{
	struct log_wait w = {b, needle, false};

	harness_until(broker_log_cond, &w, b->inotify_fd, harness_scaled(timeout_ms, b->scale));
	return w.found;
}

bool broker_log_contains(struct broker *b, const char *needle)
{
	broker_log_refresh(b);
	return b->log.s && strstr(b->log.s, needle) != NULL;
}

char *broker_log(struct broker *b)
{
	broker_log_refresh(b);
	return harness_xstrdup(b->log.s ? b->log.s : "");
}

bool broker_running(struct broker *b)
{
	return b->pid > 0 && !broker_reap(b);
}

int broker_exit_status(const struct broker *b)
{
	return b->exited ? b->status : -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Verdicts                                                                                    */
/* ---------------------------------------------------------------------------------------- */

/* Counts of what a verdict found. */
struct verdict {
	/* Findings that fail the test. */
	int ours;
	/* Leak or error records attributed to the broker itself (reported, not failing). */
	int theirs;
	/* Whether an LSan report was found (explains exit status 23). */
	bool lsan_report;
	struct strbuf report;
};

/* Appends text to the report, up to HARNESS_REPORT_MAX bytes in all. */
static void verdict_note(struct verdict *v, const char *text, size_t n)
{
	if (v->report.len >= HARNESS_REPORT_MAX)
		return;
	if (n > HARNESS_REPORT_MAX - v->report.len)
		n = HARNESS_REPORT_MAX - v->report.len;
	sb_append(&v->report, text, n);
	if (v->report.len >= HARNESS_REPORT_MAX)
		sb_puts(&v->report, "\n[report truncated]\n");
}

/* Whether a stack text has a frame in our plugin: by module name, or (for symbolized frames)
 * by a source path under $PRESENCE_SOURCE_DIR/plugin/. */
static bool stack_is_ours(const char *text, size_t n)
{
	const char *src = harness_env("PRESENCE_SOURCE_DIR", NULL);
	struct strbuf needle = {0};
	char *copy = harness_xrealloc(NULL, n + 1);
	bool ours;

	memcpy(copy, text, n);
	copy[n] = '\0';
	ours = strstr(copy, "mosquitto_presence") != NULL;
	if (!ours && src) {
		sb_printf(&needle, "%s/plugin/", src);
		ours = strstr(copy, needle.s) != NULL;
		free(needle.s);
	}
	free(copy);
	return ours;
}

/* Judges one ASan/LSan/UBSan report file (or stderr text). Leak records count only when they
 * are ours; every other sanitizer report counts. */
static void verdict_sanitizer_text(struct verdict *v, const char *name, const char *text)
{
	const char *p;
	bool fatal;

	if (!text || !*text)
		return;
	fatal = strstr(text, "ERROR: AddressSanitizer") || strstr(text, "runtime error:") ||
	        strstr(text, "ERROR: UndefinedBehaviorSanitizer");
	if (fatal) {
		v->ours++;
		sb_printf(&v->report, "--- sanitizer error in %s:\n", name);
		verdict_note(v, text, strlen(text));
		sb_puts(&v->report, "\n");
	}
	if (!strstr(text, "ERROR: LeakSanitizer"))
		return;
	v->lsan_report = true;
	p = text;
	while ((p = strstr(p, " leak of ")) != NULL) {
		const char *start = p;
		const char *end = strstr(p, "\n\n");
		size_t n;

		while (start > text && start[-1] != '\n')
			start--;
		n = end ? (size_t)(end - start) : strlen(start);
		if (stack_is_ours(start, n)) {
			v->ours++;
			sb_printf(&v->report, "--- leak in the plugin (%s):\n", name);
			verdict_note(v, start, n);
			sb_puts(&v->report, "\n");
		} else {
			v->theirs++;
		}
		p = start + n;
	}
}

/* The text between <tag> and </tag> in [p, end), or "" (in buf of size cap). */
static const char *xml_field(const char *p, const char *end, const char *tag, char *buf, size_t cap)
{
	char open[64];
	char close_tag[64];
	const char *a;
	const char *b;
	size_t n;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close_tag, sizeof(close_tag), "</%s>", tag);
	buf[0] = '\0';
	a = strstr(p, open);
	if (!a || a >= end)
		return buf;
	a += strlen(open);
	b = strstr(a, close_tag);
	if (!b || b > end)
		return buf;
	n = (size_t)(b - a);
	if (n >= cap)
		n = cap - 1;
	memcpy(buf, a, n);
	buf[n] = '\0';
	return buf;
}

/* Appends a readable summary of one valgrind <error> record: kind, what, and its frames. */
static void verdict_valgrind_record(struct verdict *v, const char *p, const char *end)
{
	char kind[128];
	char what[512];
	const char *f = p;

	xml_field(p, end, "kind", kind, sizeof(kind));
	xml_field(p, end, "what", what, sizeof(what));
	if (!what[0]) {
		const char *xw = strstr(p, "<xwhat>");

		if (xw && xw < end)
			xml_field(xw, end, "text", what, sizeof(what));
	}
	sb_printf(&v->report, "--- valgrind %s: %s\n", kind, what);
	while ((f = strstr(f, "<frame>")) != NULL && f < end) {
		const char *fend = strstr(f, "</frame>");
		char fn[256];
		char obj[512];
		char file[256];
		char line[32];

		if (!fend || fend > end)
			break;
		xml_field(f, fend, "fn", fn, sizeof(fn));
		xml_field(f, fend, "obj", obj, sizeof(obj));
		xml_field(f, fend, "file", file, sizeof(file));
		xml_field(f, fend, "line", line, sizeof(line));
		if (file[0])
			sb_printf(&v->report, "    %s (%s:%s)\n", fn[0] ? fn : "???", file, line);
		else
			sb_printf(&v->report, "    %s (%s)\n", fn[0] ? fn : "???", obj);
		if (v->report.len >= HARNESS_REPORT_MAX)
			break;
		f = fend;
	}
}

/* Judges valgrind's XML: every error record but possible/reachable leaks, when it is ours. */
static void verdict_valgrind(struct verdict *v, const char *path)
{
	char *xml = harness_read_file(path, NULL);
	const char *p;

	if (!xml) {
		v->ours++;
		sb_printf(&v->report, "--- valgrind wrote no report at %s\n", path);
		return;
	}
	if (!strstr(xml, "</valgrindoutput>")) {
		v->ours++;
		sb_printf(&v->report, "--- valgrind report %s is incomplete\n", path);
	}
	p = xml;
	while ((p = strstr(p, "<error>")) != NULL) {
		const char *end = strstr(p, "</error>");
		char kind[128];

		if (!end)
			break;
		xml_field(p, end, "kind", kind, sizeof(kind));
		if (strcmp(kind, "Leak_PossiblyLost") != 0 &&
		    strcmp(kind, "Leak_StillReachable") != 0) {
			if (stack_is_ours(p, (size_t)(end - p))) {
				v->ours++;
				verdict_valgrind_record(v, p, end);
			} else {
				v->theirs++;
			}
		}
		p = end;
	}
	free(xml);
}

struct term_wait {
	struct broker *b;
	/* Where the log ended when the first SIGTERM was sent. */
	size_t log_start;
};

static bool broker_terminating_cond(const void *arg)
{
	const struct term_wait *w = arg;

	broker_drain_inotify(w->b);
	broker_log_refresh(w->b);
	return broker_reap(w->b) || strstr(w->b->log.s + w->log_start, " terminating\n") != NULL;
}

/* Sends SIGTERM until the broker logs that it is terminating, then waits for the exit; all
 * within the scaled stop deadline. Returns whether it exited.
 *
 * Why more than one SIGTERM: Mosquitto 2.0.11 logs "running" and only then sets its run flag
 * to 1, so a SIGTERM that lands in between (its handler sets the flag to 0) is lost and the
 * broker runs on. Under ASan this hit about one start/stop cycle in four. Repeating the signal
 * is harmless (the handler only sets the flag again) and stops once the exit has begun, so
 * valgrind's or LSan's leak check at exit is not disturbed. */
static bool broker_terminate(struct broker *b)
{
	long long deadline = harness_now_ms() + harness_scaled(HARNESS_STOP_TIMEOUT_MS, b->scale);
	struct term_wait w = {b, 0};
	long long left;

	broker_log_refresh(b);
	w.log_start = b->log.len;
	for (;;) {
		kill(b->pid, SIGTERM);
		left = deadline - harness_now_ms();
		if (left <= 0)
			return broker_reap(b);
		if (harness_until(broker_terminating_cond, &w, b->inotify_fd,
		                  left < HARNESS_RESIGNAL_MS ? (int)left : HARNESS_RESIGNAL_MS))
			break;
	}
	left = deadline - harness_now_ms();
	return harness_until(broker_exited_cond, b, -1, left > 0 ? (int)left : 0);
}

int broker_stop_verdict(struct broker *b, char **report)
{
	struct verdict v = {0};
	int findings;

	if (b->pid > 0 && !broker_reap(b) && !broker_terminate(b)) {
		broker_kill(b);
		v.ours++;
		sb_printf(&v.report, "--- broker did not exit within %d ms of SIGTERM\n",
		          harness_scaled(HARNESS_STOP_TIMEOUT_MS, b->scale));
	}
	broker_log_refresh(b);

	if (b->pid > 0) {
		char *text;
		struct strbuf path = {0};

		if (b->valgrind) {
			sb_printf(&path, "%s/vg.%ld.xml", b->dir, (long)b->pid);
			verdict_valgrind(&v, path.s);
		} else {
			sb_printf(&path, "%s/asan.%ld", b->dir, (long)b->pid);
			text = harness_read_file(path.s, NULL);
			verdict_sanitizer_text(&v, path.s, text);
			free(text);
			path.len = 0;
			sb_printf(&path, "%s/ubsan.%ld", b->dir, (long)b->pid);
			text = harness_read_file(path.s, NULL);
			verdict_sanitizer_text(&v, path.s, text);
			free(text);
			/* Reports go to stderr when log_path cannot be written. */
			verdict_sanitizer_text(&v, b->log_path, b->log.s);
		}
		free(path.s);

		if (b->status >= 128 && !b->killed_by_harness) {
			v.ours++;
			sb_printf(&v.report, "--- broker died of signal %d\n", b->status - 128);
		} else if (!b->expect_failure && b->status != 0 && !b->killed_by_harness &&
		           !(b->status == HARNESS_LSAN_EXITCODE && v.lsan_report)) {
			v.ours++;
			sb_printf(&v.report, "--- broker exited with status %d\n", b->status);
		}
	}
	if (v.theirs > 0)
		fprintf(stderr,
		        "harness: %d leak/error record(s) of the broker itself (not the plugin) "
		        "ignored; see %s\n",
		        v.theirs, b->dir);

	findings = v.ours;
	if (findings > 0)
		sb_printf(&v.report, "--- broker log tail (%s):\n%s\n", b->log_path,
		          harness_tail(b->log.s));
	if (report)
		*report = findings > 0 ? sb_take(&v.report) : NULL;
	free(v.report.s);
	broker_unlink(b);
	broker_free(b);
	return findings;
}

void broker_stop(struct broker *b)
{
	char *report = NULL;
	int findings = broker_stop_verdict(b, &report);

	if (findings > 0)
		fail_msg("%d finding(s) when stopping the broker:\n%s", findings, report);
	free(report);
}

int broker_run_expect_failure(const char *conf, char **log)
{
	struct broker_opts opts = {.expect_failure = true};
	struct broker *b = broker_start_opts(conf, &opts);
	int status = b->status;

	if (log)
		*log = broker_log(b);
	if (status == 0)
		fail_msg("broker exited with status 0 although it was expected to fail; log:\n%s",
		         harness_tail(b->log.s));
	broker_stop(b);
	return status;
}

/* ---------------------------------------------------------------------------------------- */
/* Clients                                                                                     */
/* ---------------------------------------------------------------------------------------- */

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

/* Unlinks c from the live list, destroys its handle and frees it with its queue. */
static void client_free(struct client *c)
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
		mosquitto_destroy(c->mosq);
		free(c->sync_topic);
		free(c);
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

/* When c's broker has exited, a note with the tail of its log that explains why nothing came
 * (owned by the broker's log buffer; "" while the broker runs). */
static const char *client_broker_exit_note(struct client *c)
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

/* ---------------------------------------------------------------------------------------- */
/* Cleanup                                                                                     */
/* ---------------------------------------------------------------------------------------- */

static void harness_kill_all(void)
{
	while (harness_clients)
		client_free(harness_clients);
	while (harness_brokers) {
		struct broker *b = harness_brokers;

		broker_kill(b);
		broker_unlink(b);
		broker_free(b);
	}
}

int harness_teardown(void **state)
{
	struct broker *b;
	struct broker *next;

	(void)state;
	while (harness_clients)
		client_free(harness_clients);
	/* A broker that died by itself explains a failed test: show its verdict. */
	for (b = harness_brokers; b; b = next) {
		next = b->next;
		if (b->pid > 0 && broker_reap(b) && !b->killed_by_harness) {
			char *report = NULL;
			int findings = broker_stop_verdict(b, &report);

			if (findings > 0)
				fprintf(stderr, "harness: a broker had died: %s\n", report);
			free(report);
		}
	}
	harness_kill_all();
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Presence documents                                                                          */
/* ---------------------------------------------------------------------------------------- */

cJSON *msg_json(const struct msg *m)
{
	cJSON *j = cJSON_ParseWithLength(m->payload, (size_t)m->payloadlen);

	if (!j)
		fail_msg("payload on %s is not JSON: %.*s", m->topic, m->payloadlen, m->payload);
	return j;
}

long expect_doc(struct client *c, const char *topic, const char *username, bool available,
                int sessions, const char *state_json)
{
	struct msg *m = client_wait_msg(c, HARNESS_DOC_TIMEOUT_MS);
	const cJSON *field;
	cJSON *doc;
	long seq;

	if (!m) {
		const char *tail = client_broker_exit_note(c);

		fail_msg("expected a presence document on %s (user %s, available %d, sessions %d), "
		         "got nothing within %d ms%s%s",
		         topic, username ? username : "?", available, sessions,
		         harness_scaled(HARNESS_DOC_TIMEOUT_MS, c->scale),
		         *tail ? "; the broker has exited:\n" : "", tail);
	}
	if (strcmp(m->topic, topic) != 0)
		fail_msg("expected a presence document on %s, got a message on %s: %.*s", topic,
		         m->topic, m->payloadlen, m->payload);
	doc = msg_json(m);
	if (!cJSON_IsObject(doc))
		fail_msg("document on %s is not an object: %.*s", topic, m->payloadlen, m->payload);
	field = cJSON_GetObjectItemCaseSensitive(doc, "username");
	if (username && (!cJSON_IsString(field) || strcmp(field->valuestring, username) != 0))
		fail_msg("document on %s: expected username \"%s\": %.*s", topic, username,
		         m->payloadlen, m->payload);
	field = cJSON_GetObjectItemCaseSensitive(doc, "available");
	if (!cJSON_IsBool(field) || (cJSON_IsTrue(field) != 0) != available)
		fail_msg("document on %s: expected available %s: %.*s", topic,
		         available ? "true" : "false", m->payloadlen, m->payload);
	field = cJSON_GetObjectItemCaseSensitive(doc, "sessions");
	if (sessions >= 0 && (!cJSON_IsNumber(field) || field->valuedouble != (double)sessions))
		fail_msg("document on %s: expected sessions %d: %.*s", topic, sessions,
		         m->payloadlen, m->payload);
	if (state_json) {
		cJSON *want = cJSON_Parse(state_json);

		if (!want)
			fail_msg("expect_doc: the expected state is not JSON: %s", state_json);
		field = cJSON_GetObjectItemCaseSensitive(doc, "state");
		if (!field || !cJSON_Compare(want, field, 1))
			fail_msg("document on %s: expected state %s: %.*s", topic, state_json,
			         m->payloadlen, m->payload);
		cJSON_Delete(want);
	}
	field = cJSON_GetObjectItemCaseSensitive(doc, "seq");
	if (!cJSON_IsNumber(field))
		fail_msg("document on %s has no numeric seq: %.*s", topic, m->payloadlen,
		         m->payload);
	seq = (long)field->valuedouble;
	cJSON_Delete(doc);
	msg_free(m);
	return seq;
}

/* Whether topic is a state-write topic of any user below presence/: P/U/state or
 * P/U/state/<key>. */
static bool is_state_topic(const char *topic)
{
	const char *user = strncmp(topic, "presence/", 9) == 0 ? topic + 9 : NULL;
	const char *rest = user ? strchr(user, '/') : NULL;

	return rest && (strcmp(rest, "/state") == 0 || strncmp(rest, "/state/", 7) == 0);
}

/* Whether topic is a rejection-notice topic: below presence/ and ending in /error. */
static bool is_error_topic(const char *topic)
{
	size_t len = strlen(topic);

	return strncmp(topic, "presence/", 9) == 0 && len > 6 &&
	       strcmp(topic + len - 6, "/error") == 0;
}

void expect_no_state_or_error_message(struct client *c)
{
	struct msg *m;

	if (!client_sync(c, HARNESS_CLIENT_TIMEOUT_MS))
		fail_msg("expect_no_state_or_error_message: the round trip through the broker did "
		         "not complete");
	while ((m = client_next_msg(c, 0)) != NULL) {
		if (is_state_topic(m->topic) || is_error_topic(m->topic))
			fail_msg("received %s: %.*s", m->topic, m->payloadlen, m->payload);
		msg_free(m);
	}
}
