/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/* What the cluster tests share (cluster.h). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"

pid_t server_spawn(const char *const *args)
{
	const char *server = getenv("PRESENCE_REDIS_SERVER");
	pid_t pid;

	if (server == NULL || server[0] == '\0') {
		server = "redis-server";
	}
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char *argv[32];
		int n = 0;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* Copies, for execvp's argument type (the child execs or exits at once). */
		argv[n++] = strdup(server);
		for (; *args != NULL && n < 31; args++) {
			argv[n++] = strdup(*args);
		}
		argv[n] = NULL;
		execvp(server, argv);
		_exit(127);
	}
	return pid;
}

/* Connects to r's unix socket and authenticates as the test's own client. */
static redisContext *redis_connect(struct redis *r)
{
	redisContext *c = redisConnectUnix(r->sock);
	redisReply *reply;

	if (c == NULL || c->err != 0 || r->password == NULL) {
		return c;
	}
	reply = r->user != NULL ? redisCommand(c, "AUTH %s %s", r->user, r->password)
	                        : redisCommand(c, "AUTH %s", r->password);
	if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
		fail_msg("AUTH on the test's Redis: %s", reply != NULL ? reply->str : c->errstr);
	}
	freeReplyObject(reply);
	return c;
}

void redis_launch(struct redis *r)
{
	const char *argv[64];
	char log[320];
	size_t n = 0;
	int64_t tries;

	snprintf(log, sizeof(log), "%s/redis.log", r->dir);
	{
		const char *base[] = {"--port",
		                      "0",
		                      "--unixsocket",
		                      r->sock,
		                      "--unixsocketperm",
		                      "700",
		                      "--save",
		                      "",
		                      "--appendonly",
		                      r->aof ? "yes" : "no",
		                      "--appendfsync",
		                      "always",
		                      "--dir",
		                      r->dir,
		                      "--logfile",
		                      log,
		                      "--enable-debug-command",
		                      "local"};

		for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++) {
			argv[n++] = base[i];
		}
	}
	for (size_t i = 0; r->extra[i] != NULL && n < 63; i++) {
		argv[n++] = r->extra[i];
	}
	argv[n] = NULL;
	r->pid = server_spawn(argv);
	/* Bounded: about 10 s in steps of 10 ms, until the socket answers. */
	for (tries = 0; tries < 1000; tries++) {
		redisContext *c = redisConnectUnix(r->sock);
		redisReply *reply = c != NULL && c->err == 0 ? redisCommand(c, "PING") : NULL;
		/* (With a password: NOAUTH, an error, but an answer.) */
		bool up =
		    reply != NULL &&
		    (reply->type == REDIS_REPLY_STATUS ||
		     (reply->type == REDIS_REPLY_ERROR && strstr(reply->str, "LOADING") == NULL));
		struct timespec ts = {0, 10 * 1000 * 1000};

		freeReplyObject(reply);
		redisFree(c);
		if (up) {
			return;
		}
		nanosleep(&ts, NULL);
	}
	fail_msg("the Redis server did not start; see %s", log);
}

struct redis *redis_start(bool aof)
{
	return redis_start_with(aof, NULL);
}

struct redis *redis_start_with(bool aof, const char *const *extra)
{
	const char *work = getenv("PRESENCE_WORK_DIR");
	struct redis *r = calloc(1, sizeof(*r));
	size_t n = 0;

	assert_non_null(r);
	assert_non_null(work);
	mkdir(work, 0755);
	snprintf(r->dir, sizeof(r->dir), "%s/redis-XXXXXX", work);
	assert_non_null(mkdtemp(r->dir));
	snprintf(r->sock, sizeof(r->sock), "%s/r.sock", r->dir);
	r->aof = aof;
	for (; extra != NULL && extra[n] != NULL; n++) {
		assert_true(n + 1 < sizeof(r->extra) / sizeof(r->extra[0]));
		r->extra[n] = strdup(extra[n]);
		assert_non_null(r->extra[n]);
	}
	redis_launch(r);
	return r;
}

void redis_kill(struct redis *r)
{
	kill(r->pid, SIGKILL);
	waitpid(r->pid, NULL, 0);
	r->pid = 0;
}

void redis_stop(struct redis *r)
{
	if (r->pid > 0) {
		redis_kill(r);
	}
	for (size_t i = 0; r->extra[i] != NULL; i++) {
		free((char *)(uintptr_t)r->extra[i]);
	}
	free(r);
}

redisReply *redis_cmd(struct redis *r, const char *fmt, ...)
{
	redisContext *c = redis_connect(r);
	redisReply *reply;
	va_list ap;

	assert_true(c != NULL && c->err == 0);
	va_start(ap, fmt);
	reply = redisvCommand(c, fmt, ap);
	va_end(ap);
	redisFree(c);
	assert_non_null(reply);
	return reply;
}

char *cluster_conf(const struct redis *r, int i, const char *extra)
{
	char lines[2048];

	if (extra == NULL) {
		extra = "";
	}
	snprintf(
	    lines, sizeof(lines),
	    "plugin_opt_auth allow\n"
	    "plugin_opt_acl allow\n"
	    "%s%s%s"
	    "%s%d\n"
	    "%s%s",
	    strstr(extra, "plugin_opt_cluster_url ") != NULL ? "" : "plugin_opt_cluster_url unix:",
	    strstr(extra, "plugin_opt_cluster_url ") != NULL ? "" : r->sock,
	    strstr(extra, "plugin_opt_cluster_url ") != NULL ? "" : "\n",
	    strstr(extra, "plugin_opt_broker_id ") != NULL ? "# broker " : "plugin_opt_broker_id b",
	    i + 1,
	    strstr(extra, "plugin_opt_cluster_heartbeat_ms ") != NULL
	        ? ""
	        : "plugin_opt_cluster_heartbeat_ms 200\n",
	    strstr(extra, "plugin_opt_cluster_lease_ms ") != NULL
	        ? ""
	        : "plugin_opt_cluster_lease_ms 500\n");
	snprintf(lines + strlen(lines), sizeof(lines) - strlen(lines), "%s", extra);
	return broker_conf(lines);
}

/* Waits (bounded) until broker i logs that it registered in the cluster. */
void await_registered(struct cluster *cl, int i)
{
	if (!broker_log_wait(cl->b[i], "registered in the cluster as broker", 10000)) {
		fail_msg("broker b%d did not register with Redis", i + 1);
	}
}

void cluster_start(struct cluster *cl, bool aof, const char *extra)
{
	cluster_start_on(cl, redis_start(aof), extra);
}

void cluster_join(struct cluster *cl, int i, const char *extra)
{
	char id[24];

	cl->conf[i] = cluster_conf(cl->redis, i, extra);
	cl->b[i] = broker_start(cl->conf[i]);
	await_registered(cl, i);
	snprintf(id, sizeof(id), "watch%d", i + 1);
	cl->w[i] = client_watch(cl->b[i], id, "presence/+");
}

void cluster_start_on(struct cluster *cl, struct redis *redis, const char *extra)
{
	memset(cl, 0, sizeof(*cl));
	cl->redis = redis;
	for (int i = 0; i < BROKERS; i++) {
		cluster_join(cl, i, extra);
	}
}

void cluster_stop(struct cluster *cl)
{
	for (int i = 0; i < BROKERS; i++) {
		if (cl->w[i] != NULL) {
			client_disconnect(cl->w[i]);
		}
		if (cl->b[i] != NULL) {
			broker_stop(cl->b[i]);
		}
		free(cl->conf[i]);
	}
	redis_stop(cl->redis);
}

const char *always_available;
bool cluster_seq_gaps_allowed;

/* What a watcher last received per user (eight users are enough for these tests). */
struct seen {
	char user[32];
	long seq;
};

static struct seen seen[BROKERS][8];

long *last_seq(int i, const char *user)
{
	for (int k = 0; k < 8; k++) {
		if (strcmp(seen[i][k].user, user) == 0) {
			return &seen[i][k].seq;
		}
		if (seen[i][k].user[0] == '\0') {
			snprintf(seen[i][k].user, sizeof(seen[i][k].user), "%s", user);
			seen[i][k].seq = 0;
			return &seen[i][k].seq;
		}
	}
	fail_msg("too many users");
	return NULL;
}

char *await_doc(struct cluster *cl, int i, const char *user, bool available, int sessions,
                const char *state_json, long *seq_out)
{
	char topic[64];
	cJSON *want = state_json != NULL ? cJSON_Parse(state_json) : NULL;

	snprintf(topic, sizeof(topic), "presence/%s", user);
	for (int n = 0; n < 5000; n++) {
		struct msg *m = client_next_msg(cl->w[i], 5000);
		cJSON *doc, *seq, *avail, *sess, *st;
		long *last;
		bool match;

		if (m == NULL) {
			fail_msg(
			    "broker b%d: no document of %s (available %d, sessions %d, state %s)",
			    i + 1, user, available, sessions, state_json ? state_json : "-");
		}
		if (strcmp(m->topic, topic) != 0) {
			msg_free(m);
			continue;
		}
		doc = msg_json(m);
		seq = cJSON_GetObjectItemCaseSensitive(doc, "seq");
		avail = cJSON_GetObjectItemCaseSensitive(doc, "available");
		sess = cJSON_GetObjectItemCaseSensitive(doc, "sessions");
		st = cJSON_GetObjectItemCaseSensitive(doc, "state");
		assert_true(cJSON_IsNumber(seq));
		last = last_seq(i, user);
		if ((long)seq->valuedouble <= *last || (*last != 0 && !cluster_seq_gaps_allowed &&
		                                        (long)seq->valuedouble != *last + 1)) {
			fail_msg("broker b%d: seq went from %ld to %ld: %s", i + 1, *last,
			         (long)seq->valuedouble, m->payload);
		}
		*last = (long)seq->valuedouble;
		if (always_available != NULL && strcmp(user, always_available) == 0 &&
		    !cJSON_IsTrue(avail)) {
			fail_msg("broker b%d showed %s unavailable: %s", i + 1, user, m->payload);
		}
		match = cJSON_IsBool(avail) && cJSON_IsTrue(avail) == available &&
		        (sessions < 0 || (cJSON_IsNumber(sess) && sess->valueint == sessions)) &&
		        (want == NULL || cJSON_Compare(st, want, true));
		cJSON_Delete(doc);
		if (match) {
			char *payload = strdup(m->payload);

			*seq_out = *last;
			msg_free(m);
			cJSON_Delete(want);
			return payload;
		}
		msg_free(m);
	}
	fail_msg("broker b%d: too many documents of %s", i + 1, user);
	return NULL;
}

char last_payload[1024];

long await_everywhere(struct cluster *cl, const char *user, bool available, int sessions,
                      const char *state_json)
{
	char *first = NULL;
	long seq = 0;

	for (int i = 0; i < BROKERS; i++) {
		long s;
		char *payload;

		if (cl->w[i] == NULL) {
			continue;
		}
		payload = await_doc(cl, i, user, available, sessions, state_json, &s);
		if (first == NULL) {
			first = payload;
			seq = s;
			continue;
		}
		if (s != seq || strcmp(payload, first) != 0) {
			fail_msg("brokers differ:\n  %s\n  %s (b%d)", first, payload, i + 1);
		}
		free(payload);
	}
	if (first != NULL) {
		snprintf(last_payload, sizeof(last_payload), "%s", first);
	}
	free(first);
	return seq;
}

void reset_seen_of(int i)
{
	memset(seen[i], 0, sizeof(seen[i]));
}

void reset_seen(void)
{
	memset(seen, 0, sizeof(seen));
	always_available = NULL;
	cluster_seq_gaps_allowed = false;
}

void await_forgotten_everywhere(struct cluster *cl, const char *user)
{
	char topic[64];

	snprintf(topic, sizeof(topic), "presence/%s", user);
	for (int i = 0; i < BROKERS; i++) {
		int n;

		if (cl->w[i] == NULL) {
			continue;
		}
		for (n = 0; n < 5000; n++) {
			struct msg *m = client_next_msg(cl->w[i], 10000);
			bool empty;

			if (m == NULL) {
				fail_msg("broker b%d: %s was not forgotten", i + 1, user);
			}
			empty = strcmp(m->topic, topic) == 0 && m->payloadlen == 0;
			msg_free(m);
			if (empty) {
				break;
			}
		}
		/* A user coming back starts a new sequence for await_doc. */
		*last_seq(i, user) = 0;
	}
}

long long reply_number(redisReply *reply)
{
	long long v = reply->type == REDIS_REPLY_INTEGER  ? reply->integer
	              : reply->type == REDIS_REPLY_STRING ? strtoll(reply->str, NULL, 10)
	                                                  : -1;

	freeReplyObject(reply);
	return v;
}

long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *fcall(struct redis *r, char *buf, size_t size, const char *const *argv)
{
	const char *args[48];
	size_t n = 0;
	redisContext *c = redis_connect(r);
	redisReply *reply;

	args[n++] = "FCALL";
	while (argv[n - 1] != NULL) {
		assert_true(n < 47);
		args[n] = argv[n - 1];
		n++;
	}
	assert_true(c != NULL && c->err == 0);
	reply = redisCommandArgv(c, (int)n, args, NULL);
	assert_non_null(reply);
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
	    reply->element[0]->type == REDIS_REPLY_STRING) {
		snprintf(buf, size, "%s", reply->element[0]->str);
		/* With a document: status and seq. */
		if (reply->elements == 6) {
			snprintf(buf, size, "%s %s", reply->element[0]->str,
			         reply->element[1]->str);
		}
	} else if (reply->type == REDIS_REPLY_ARRAY) {
		snprintf(buf, size, "%s", "");
	} else if (reply->type == REDIS_REPLY_INTEGER) {
		snprintf(buf, size, "%lld", reply->integer);
	} else if (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS) {
		snprintf(buf, size, "%s", reply->str);
	} else if (reply->type == REDIS_REPLY_ERROR) {
		fail_msg("FCALL %s: %s", argv[0], reply->str);
	} else {
		snprintf(buf, size, "?");
	}
	freeReplyObject(reply);
	redisFree(c);
	return buf;
}

void redis_load_library(struct redis *r)
{
	char path[512], *lua;
	redisReply *reply;
	size_t len;
	FILE *f;

	snprintf(path, sizeof(path), "%s/plugin/redis/presence_v2.lua",
	         getenv("PRESENCE_SOURCE_DIR"));
	f = fopen(path, "r");
	assert_non_null(f);
	lua = calloc(1, 65536);
	assert_non_null(lua);
	len = fread(lua, 1, 65535, f);
	fclose(f);
	assert_true(len > 0 && len < 65535);
	reply = redis_cmd(r, "FUNCTION LOAD REPLACE %s", lua);
	if (reply->type != REDIS_REPLY_STRING) {
		fail_msg("FUNCTION LOAD: %s", reply->type == REDIS_REPLY_ERROR ? reply->str : "?");
	}
	freeReplyObject(reply);
	free(lua);
}

void redis_send_only(redisContext *c, const char *command)
{
	int done = 0;

	assert_int_equal(redisAppendCommand(c, command), REDIS_OK);
	while (!done) {
		assert_int_equal(redisBufferWrite(c, &done), REDIS_OK);
	}
}

/* ---- the relay --------------------------------------------------------------------------- */

#define RELAY_PAIRS 16

struct relay {
	char path[300];
	char target[300];
	int listen_fd;
	/* Wakes the thread (freeze, stop). */
	int wake[2];
	pthread_t thread;
	pthread_mutex_t lock;
	bool frozen, stopping;
	/* Broker side, Redis side, per connection (-1: unused). */
	int from[RELAY_PAIRS], to[RELAY_PAIRS];
};

static int unix_socket_to(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	if (strlen(path) >= sizeof(addr.sun_path)) {
		fail_msg("socket path too long: %s", path);
	}
	memcpy(addr.sun_path, path, strlen(path) + 1);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

static void relay_close_pair(struct relay *rl, int k)
{
	close(rl->from[k]);
	close(rl->to[k]);
	rl->from[k] = rl->to[k] = -1;
}

/* Copies what src has to dst; false when src is closed or failed. */
static bool relay_copy(int src, int dst)
{
	char buf[65536];
	ssize_t n = read(src, buf, sizeof(buf));

	if (n <= 0) {
		return false;
	}
	for (ssize_t off = 0; off < n;) {
		ssize_t w = write(dst, buf + off, (size_t)(n - off));

		if (w <= 0) {
			return false;
		}
		off += w;
	}
	return true;
}

static void *relay_main(void *arg)
{
	struct relay *rl = arg;

	for (;;) {
		struct pollfd pfd[2 + 2 * RELAY_PAIRS];
		int map[2 + 2 * RELAY_PAIRS];
		nfds_t n = 0;
		bool frozen;

		pthread_mutex_lock(&rl->lock);
		frozen = rl->frozen;
		if (rl->stopping) {
			pthread_mutex_unlock(&rl->lock);
			return NULL;
		}
		pthread_mutex_unlock(&rl->lock);
		pfd[n] = (struct pollfd){.fd = rl->wake[0], .events = POLLIN};
		map[n++] = -1;
		pfd[n] = (struct pollfd){.fd = rl->listen_fd, .events = POLLIN};
		map[n++] = -2;
		for (int k = 0; k < RELAY_PAIRS; k++) {
			if (rl->from[k] < 0) {
				continue;
			}
			/* Frozen: nothing is read from the brokers (Redis' answers still flow). */
			pfd[n] = (struct pollfd){.fd = frozen ? -1 : rl->from[k], .events = POLLIN};
			map[n++] = k;
			pfd[n] = (struct pollfd){.fd = rl->to[k], .events = POLLIN};
			map[n++] = RELAY_PAIRS + k;
		}
		if (poll(pfd, n, 1000) < 0) {
			continue;
		}
		for (nfds_t i = 0; i < n; i++) {
			if (pfd[i].revents == 0) {
				continue;
			}
			if (map[i] == -1) {
				char c[64];

				(void)!read(rl->wake[0], c, sizeof(c));
			} else if (map[i] == -2) {
				int fd = accept(rl->listen_fd, NULL, NULL);
				int k = 0;

				while (k < RELAY_PAIRS && rl->from[k] >= 0) {
					k++;
				}
				if (fd < 0) {
					continue;
				}
				if (k == RELAY_PAIRS ||
				    (rl->to[k] = unix_socket_to(rl->target)) < 0) {
					close(fd);
					continue;
				}
				rl->from[k] = fd;
			} else if (map[i] < RELAY_PAIRS) {
				int k = map[i];

				if (rl->from[k] >= 0 && !relay_copy(rl->from[k], rl->to[k])) {
					relay_close_pair(rl, k);
				}
			} else {
				int k = map[i] - RELAY_PAIRS;

				if (rl->from[k] >= 0 && !relay_copy(rl->to[k], rl->from[k])) {
					relay_close_pair(rl, k);
				}
			}
		}
	}
}

struct relay *relay_start(const char *target)
{
	const char *work = getenv("PRESENCE_WORK_DIR");
	struct relay *rl = calloc(1, sizeof(*rl));
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	char dir[256];

	assert_non_null(rl);
	assert_non_null(work);
	mkdir(work, 0755);
	snprintf(dir, sizeof(dir), "%s/relay-XXXXXX", work);
	assert_non_null(mkdtemp(dir));
	snprintf(rl->path, sizeof(rl->path), "%s/relay.sock", dir);
	snprintf(rl->target, sizeof(rl->target), "%s", target);
	for (int k = 0; k < RELAY_PAIRS; k++) {
		rl->from[k] = rl->to[k] = -1;
	}
	rl->listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(rl->listen_fd >= 0);
	if (strlen(rl->path) >= sizeof(addr.sun_path)) {
		fail_msg("socket path too long: %s", rl->path);
	}
	memcpy(addr.sun_path, rl->path, strlen(rl->path) + 1);
	assert_int_equal(bind(rl->listen_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(rl->listen_fd, 16), 0);
	assert_int_equal(pipe(rl->wake), 0);
	pthread_mutex_init(&rl->lock, NULL);
	assert_int_equal(pthread_create(&rl->thread, NULL, relay_main, rl), 0);
	return rl;
}

const char *relay_path(const struct relay *rl)
{
	return rl->path;
}

void relay_freeze(struct relay *rl, bool frozen)
{
	pthread_mutex_lock(&rl->lock);
	rl->frozen = frozen;
	pthread_mutex_unlock(&rl->lock);
	(void)!write(rl->wake[1], "x", 1);
}

void relay_stop(struct relay *rl)
{
	pthread_mutex_lock(&rl->lock);
	rl->stopping = true;
	pthread_mutex_unlock(&rl->lock);
	(void)!write(rl->wake[1], "x", 1);
	pthread_join(rl->thread, NULL);
	for (int k = 0; k < RELAY_PAIRS; k++) {
		if (rl->from[k] >= 0) {
			relay_close_pair(rl, k);
		}
	}
	close(rl->listen_fd);
	close(rl->wake[0]);
	close(rl->wake[1]);
	unlink(rl->path);
	pthread_mutex_destroy(&rl->lock);
	free(rl);
}
