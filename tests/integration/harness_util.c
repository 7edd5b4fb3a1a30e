/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/* Small utilities of the integration-test harness (see harness_util.h). */
#include "harness_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Deepest directory tree harness_rm_rf descends. */
#define HARNESS_RM_DEPTH 16
/* Highest descriptor a child closes before exec. */
#define HARNESS_MAX_FD 65536

extern char **environ;

/* Out of memory in a test process is not worth recovering from. */
void *harness_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (!q) {
		fprintf(stderr, "harness: out of memory\n");
		abort();
	}
	return q;
}

void *harness_xcalloc(size_t count, size_t size)
{
	void *p = calloc(count ? count : 1, size ? size : 1);

	if (!p) {
		fprintf(stderr, "harness: out of memory\n");
		abort();
	}
	return p;
}

char *harness_xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = harness_xrealloc(NULL, n);

	memcpy(d, s, n);
	return d;
}

void sb_append(struct strbuf *sb, const char *p, size_t n)
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

void sb_puts(struct strbuf *sb, const char *s)
{
	sb_append(sb, s, strlen(s));
}

void sb_printf(struct strbuf *sb, const char *fmt, ...)
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

void sb_read_fd(struct strbuf *sb, int fd)
{
	char buf[8192];

	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		sb_append(sb, buf, (size_t)r);
	}
}

char *sb_take(struct strbuf *sb)
{
	char *s = sb->s ? sb->s : harness_xstrdup("");

	sb->s = NULL;
	sb->len = 0;
	sb->cap = 0;
	return s;
}

/* Milliseconds on the monotonic clock. */
long long harness_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The value of an environment variable, or fallback when it is unset or empty. */
const char *harness_env(const char *name, const char *fallback)
{
	const char *v = getenv(name);

	return (v && *v) ? v : fallback;
}

/* PRESENCE_TIMEOUT_SCALE as a factor >= 1. */
int harness_env_scale(void)
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
int harness_scaled(int timeout_ms, int scale)
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
char *harness_read_file(const char *path, size_t *len)
{
	struct strbuf sb = {0};
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	sb_read_fd(&sb, fd);
	close(fd);
	if (len)
		*len = sb.len;
	return sb_take(&sb);
}

/* Creates path and its missing parents. Returns 0 or -1. */
int harness_mkdir_p(const char *path)
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
void harness_rm_rf(const char *path, int depth)
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
char *harness_which(const char *name)
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
const char *harness_tail(const char *text)
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

void strv_push(char ***v, size_t *n, char *entry)
{
	*v = harness_xrealloc(*v, (*n + 2) * sizeof(**v));
	(*v)[(*n)++] = entry;
	(*v)[*n] = NULL;
}

void strv_free(char **v)
{
	char **p;

	if (!v)
		return;
	for (p = v; *p; p++)
		free(*p);
	free(v);
}

pid_t harness_spawn(const char *exe, char *const argv[], char *const envp[], int out_fd)
{
	pid_t parent = getpid();
	pid_t pid = fork();

	if (pid == 0) {
		static const char msg[] = "harness: exec failed\n";
		int devnull = open("/dev/null", O_RDONLY);

		/* Never outlive the test process, even when it is killed by a timeout. */
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(out_fd, 1);
		dup2(out_fd, 2);
		harness_close_inherited_fds();
		execve(exe, argv, envp);
		(void)!write(2, msg, sizeof(msg) - 1);
		_exit(127);
	}
	return pid;
}

int harness_exit_code(int wait_status)
{
	if (WIFEXITED(wait_status))
		return WEXITSTATUS(wait_status);
	if (WIFSIGNALED(wait_status))
		return 128 + WTERMSIG(wait_status);
	return -1;
}

int harness_run(char *const argv[], const char *out_path, int timeout_ms)
{
	char *exe = harness_which(argv[0]);
	long long deadline = harness_now_ms() + timeout_ms;
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
	pid = harness_spawn(exe, argv, environ, out);
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
	return harness_exit_code(st);
}
