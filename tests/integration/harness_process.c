/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Broker processes (see harness_process.h): their directories under the work directory,
 * starting, waiting on the log, signals, stopping, and the broker's version.
 */
#include "harness_internal.h"

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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Deadline factor under valgrind. */
#define HARNESS_VALGRIND_SCALE 10
/* How often broker_launch tries a new port when the chosen one was taken meanwhile. */
#define HARNESS_PORT_ATTEMPTS 5
/* How long broker_stop waits for "terminating" before it repeats SIGTERM. */
#define HARNESS_RESIGNAL_MS 500

static unsigned int harness_broker_seq;

/* ---------------------------------------------------------------------------------------- */
/* Directories                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* The test executable's path, read once; "" when it cannot be read. */
static const char *harness_exe_path(void)
{
	static char path[4096];

	if (!path[0]) {
		ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);

		path[n > 0 ? n : 0] = '\0';
	}
	return path;
}

const char *harness_work_dir(void)
{
	static char *dir;

	if (!dir) {
		const char *env = harness_env("PRESENCE_WORK_DIR", NULL);
		const char *exe = harness_exe_path();
		const char *slash = strrchr(exe, '/');

		if (env) {
			dir = harness_xstrdup(env);
		} else {
			struct strbuf sb = {0};

			/* Never in the source tree a test happens to be started from. */
			if (!slash)
				fail_msg("cannot find the test executable: set PRESENCE_WORK_DIR");
			sb_append(&sb, exe, (size_t)(slash - exe));
			sb_puts(&sb, "/work");
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
	const char *exe = harness_exe_path();
	const char *slash = strrchr(exe, '/');

	if (!*exe)
		return "test";
	return slash ? slash + 1 : exe;
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

int harness_broker_version(void)
{
	static int version = -1;
	const char *bin = harness_env("MOSQUITTO_BIN", "/usr/sbin/mosquitto");
	struct strbuf out = {0};
	char *argv[3];
	char *text;
	const char *line;
	int major;
	int minor;
	int revision;

	if (version >= 0)
		return version;
	sb_printf(&out, "%s/mosquitto-version.%ld.out", harness_work_dir(), (long)getpid());
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

void broker_log_refresh(struct broker *b)
{
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
	if (lseek(fd, (off_t)b->log.len, SEEK_SET) >= 0)
		sb_read_fd(&b->log, fd);
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

bool broker_reap(struct broker *b)
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
		b->status = r < 0 ? -1 : harness_exit_code(st);
	}
	return b->exited;
}

void broker_kill(struct broker *b)
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

void broker_free(struct broker *b)
{
	struct broker **pp;
	struct client *c;
	size_t i;

	for (pp = &harness_brokers; *pp; pp = &(*pp)->next) {
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	}
	for (c = harness_clients; c; c = c->next)
		if (c->broker == b)
			c->broker = NULL;
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

/* Writes the final config and starts the process (no waiting). */
static void broker_spawn(struct broker *b, const char *conf)
{
	const char *mosquitto = harness_env("MOSQUITTO_BIN", "/usr/sbin/mosquitto");
	char **argv = NULL;
	size_t argc = 0;
	char **envp;
	char *exe;
	int log_fd;
	pid_t pid;
	char *written = harness_write_file(b->dir, "mosquitto.conf", conf);

	free(written);
	if (b->valgrind) {
		exe = broker_valgrind_argv(b, &argv, &argc);
	} else {
		exe = harness_which(mosquitto);
		if (!exe)
			fail_msg("mosquitto not found ($MOSQUITTO_BIN=%s)", mosquitto);
	}
	strv_push(&argv, &argc, harness_xstrdup(mosquitto));
	strv_push(&argv, &argc, harness_xstrdup("-c"));
	strv_push(&argv, &argc, harness_xstrdup(b->conf_path));
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

	pid = harness_spawn(exe, argv, envp, log_fd);
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
	char *dir = harness_xstrdup(broker_dir(*b));
	struct broker_opts opts = {.dir = dir, .port = broker_port(*b)};

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
	struct strbuf text = {0};
	int findings = 0;

	if (b->pid > 0 && !broker_reap(b) && !broker_terminate(b)) {
		broker_kill(b);
		findings++;
		sb_printf(&text, "--- broker did not exit within %d ms of SIGTERM\n",
		          harness_scaled(HARNESS_STOP_TIMEOUT_MS, b->scale));
	}
	broker_log_refresh(b);
	if (b->pid > 0)
		findings += broker_verdict(b, &text);
	if (findings > 0)
		sb_printf(&text, "--- broker log tail (%s):\n%s\n", b->log_path,
		          harness_tail(b->log.s));
	if (report)
		*report = findings > 0 ? sb_take(&text) : NULL;
	free(text.s);
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
