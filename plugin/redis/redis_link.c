/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The cluster's Redis client (see redis_link.h): hiredis' synchronous API on two threads of
 * our own, so that a slow, paused or dead Redis only ever stalls these threads. Each command
 * has a deadline (redisSetTimeout); a context that timed out or failed is freed and the
 * connection made again with backoff.
 *
 * Keys, all under the hash tag {presence} so that every function call touches one slot:
 *   {presence}:u:<user>        hash: the user's document values and per-broker counts
 *   {presence}:bu:<B>:<E>      set: users broker B had sessions of in epoch E (sweep index)
 *   {presence}:epoch           hash: broker -> current epoch
 *   {presence}:live            zset: broker -> lease deadline (Redis ms)
 *   {presence}:dead            list: "B:E" epochs waiting to be swept
 *   {presence}:hold            string: no sweep or delay expiry before this time (ms)
 *   {presence}:grace           zset: user -> end of its offline delay (ms)
 *   {presence}:log             stream: one record per document, or per user forgotten
 *   {presence}:logbytes        string: the bytes the stream's records are counted for
 *   {presence}:trimmed         string: the id of the last record trimmed from the stream
 *   {presence}:idle            zset: offline user -> when its document became offline (ms)
 *   {presence}:floor           string: the highest seq of a user forgotten
 *   {presence}:count           string: the number of user hashes
 *   {presence}:gen             string: a random id set once; another id = Redis lost its data
 *   {presence}:seen            string: when the cluster's timers last ran (ms; see the hold)
 *   {presence}:barrier         string: the last barrier (a user waiting to go offline)
 *   {presence}:synced          hash: broker -> the highest barrier it confirmed
 *   {presence}:owner           hash: broker -> the running instance that registered it
 * Every function takes the same keys in the same order (presence_v2.lua, cmd_fcall).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <hiredis.h>
#if PRESENCE_CLUSTER_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#endif

#include "redis_link.h"

/*
 * hiredis is not linked: it is loaded with dlopen when cluster mode starts, so that a broker
 * without plugin_opt_cluster_url never loads it (and the plugin's package does not depend on
 * it). PRESENCE_HIREDIS_SONAME is the library the headers belong to (the build reads it from
 * the library next to them): hiredis changes its structures between versions, so it must be
 * that one. The calls below go through these pointers.
 */
static struct hiredis_api {
	void *handle;
	redisContext *(*connect_unix)(const char *path, const struct timeval tv);
	redisContext *(*connect_tcp)(const char *ip, int port, const struct timeval tv);
	int (*set_timeout)(redisContext *c, const struct timeval tv);
	int (*keep_alive)(redisContext *c);
	void (*free_context)(redisContext *c);
	int (*append_argv)(redisContext *c, int argc, const char **argv, const size_t *argvlen);
	int (*get_reply)(redisContext *c, void **reply);
	void (*free_reply)(void *reply);
} hi;

#define redisConnectUnixWithTimeout (*hi.connect_unix)
#define redisConnectWithTimeout (*hi.connect_tcp)
#define redisSetTimeout (*hi.set_timeout)
#define redisEnableKeepAlive (*hi.keep_alive)
#define redisFree (*hi.free_context)
#define redisAppendCommandArgv (*hi.append_argv)
#define redisGetReply (*hi.get_reply)
#define freeReplyObject (*hi.free_reply)

/* Looks up name in the library into *fn (a function pointer's storage). */
static bool load_symbol(void *fn, size_t size, const char *name)
{
	void *sym = dlsym(hi.handle, name);

	if (sym == NULL || size != sizeof(sym)) {
		return false;
	}
	memcpy(fn, &sym, size);
	return true;
}

/* Loads hiredis once. Returns false with a reason in err when it cannot. */
static bool load_hiredis(char *err, size_t err_size)
{
	const char *missing = NULL;

	if (hi.handle != NULL) {
		return true;
	}
	hi.handle = dlopen(PRESENCE_HIREDIS_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (hi.handle == NULL) {
		snprintf(err, err_size, "cannot load %s (%s): install Debian's %s",
		         PRESENCE_HIREDIS_SONAME, dlerror(), PRESENCE_HIREDIS_PACKAGE);
		return false;
	}
#define LOAD(field, name)                                                                          \
	if (missing == NULL && !load_symbol(&hi.field, sizeof(hi.field), name)) {                  \
		missing = name;                                                                    \
	}
	LOAD(connect_unix, "redisConnectUnixWithTimeout")
	LOAD(connect_tcp, "redisConnectWithTimeout")
	LOAD(set_timeout, "redisSetTimeout")
	LOAD(keep_alive, "redisEnableKeepAlive")
	LOAD(free_context, "redisFree")
	LOAD(append_argv, "redisAppendCommandArgv")
	LOAD(get_reply, "redisGetReply")
	LOAD(free_reply, "freeReplyObject")
#undef LOAD
	if (missing != NULL) {
		snprintf(err, err_size, "%s has no %s", PRESENCE_HIREDIS_SONAME, missing);
		dlclose(hi.handle);
		memset(&hi, 0, sizeof(hi));
		return false;
	}
	return true;
}

#if PRESENCE_CLUSTER_TLS
/*
 * TLS (rediss://): hiredis' own TLS library, loaded like hiredis (PRESENCE_HIREDIS_SSL_SONAME,
 * next to it; Debian 13 and sid have it, Debian 12's hiredis 0.14 has none), performs the
 * handshake on an OpenSSL connection object the plugin makes itself, so that it can check
 * Redis' host name against its certificate (hiredis 1.2 checks only the chain).
 */
static struct hiredis_ssl_api {
	void *handle;
	int (*init_openssl)(void);
	int (*initiate)(redisContext *c, SSL *ssl);
} hs;

static bool load_hiredis_ssl(char *err, size_t err_size)
{
	void *init = NULL, *initiate;

	if (hs.handle != NULL) {
		return true;
	}
	/* hiredis' TLS library uses hiredis' functions without naming hiredis among the libraries
	 * it needs: they must be global. hiredis is loaded already; this only makes its symbols
	 * global (RTLD_NOLOAD), and only for rediss://. */
	if (dlopen(PRESENCE_HIREDIS_SONAME, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL) == NULL) {
		snprintf(err, err_size, "cannot make %s global (%s)", PRESENCE_HIREDIS_SONAME,
		         dlerror());
		return false;
	}
	hs.handle = dlopen(PRESENCE_HIREDIS_SSL_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (hs.handle == NULL) {
		snprintf(err, err_size, "cannot load %s (%s): install Debian's %s",
		         PRESENCE_HIREDIS_SSL_SONAME, dlerror(), PRESENCE_HIREDIS_PACKAGE);
		return false;
	}
	init = dlsym(hs.handle, "redisInitOpenSSL");
	initiate = dlsym(hs.handle, "redisInitiateSSL");
	if (initiate == NULL) {
		snprintf(err, err_size, "%s has no redisInitiateSSL", PRESENCE_HIREDIS_SSL_SONAME);
		dlclose(hs.handle);
		hs.handle = NULL;
		return false;
	}
	memcpy(&hs.initiate, &initiate, sizeof(initiate));
	if (init != NULL) {
		memcpy(&hs.init_openssl, &init, sizeof(init));
		(void)hs.init_openssl();
	}
	return true;
}

/* The reason of OpenSSL's last error, or fallback. */
static const char *openssl_reason(char *buf, size_t size, const char *fallback)
{
	unsigned long e = ERR_get_error();

	if (e == 0) {
		return fallback;
	}
	ERR_error_string_n(e, buf, size);
	ERR_clear_error();
	return buf;
}

/* The TLS settings of every connection: TLS 1.2 or later, Redis' certificate checked against
 * cafile (or the system's CAs), a client certificate when given. NULL with a reason in err. */
static SSL_CTX *tls_context(const struct presence_redis_config *cfg, char *err, size_t err_size)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char why[160];

	if (ctx == NULL) {
		snprintf(err, err_size, "cannot set up TLS: %s",
		         openssl_reason(why, sizeof(why), "out of memory"));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (cfg->tls_cafile != NULL ? SSL_CTX_load_verify_locations(ctx, cfg->tls_cafile, NULL) != 1
	                            : SSL_CTX_set_default_verify_paths(ctx) != 1) {
		snprintf(err, err_size, "cannot use %s: %s",
		         cfg->tls_cafile != NULL ? cfg->tls_cafile : "the system's CA certificates",
		         openssl_reason(why, sizeof(why), "unreadable"));
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (cfg->tls_certfile != NULL &&
	    (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_certfile) != 1 ||
	     SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_keyfile, SSL_FILETYPE_PEM) != 1 ||
	     SSL_CTX_check_private_key(ctx) != 1)) {
		snprintf(err, err_size, "cannot use the client certificate %s with the key %s: %s",
		         cfg->tls_certfile, cfg->tls_keyfile,
		         openssl_reason(why, sizeof(why), "unreadable"));
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}
#endif

#define KEY_PREFIX "{presence}:"
#define USER_PREFIX KEY_PREFIX "u:"
#define KEY_EPOCH KEY_PREFIX "epoch"
#define KEY_LIVE KEY_PREFIX "live"
#define KEY_DEAD KEY_PREFIX "dead"
#define KEY_HOLD KEY_PREFIX "hold"
#define KEY_GRACE KEY_PREFIX "grace"
#define KEY_LOG KEY_PREFIX "log"
#define KEY_GEN KEY_PREFIX "gen"
#define KEY_SEEN KEY_PREFIX "seen"
#define KEY_LOGBYTES KEY_PREFIX "logbytes"
#define KEY_TRIMMED KEY_PREFIX "trimmed"
#define KEY_IDLE KEY_PREFIX "idle"
#define KEY_FLOOR KEY_PREFIX "floor"
#define KEY_COUNT KEY_PREFIX "count"
#define KEY_BARRIER KEY_PREFIX "barrier"
#define KEY_SYNCED KEY_PREFIX "synced"
#define KEY_OWNER KEY_PREFIX "owner"

/* Most requests sent in one pipelined batch, users swept, expired or forgotten per call. */
#define BATCH_MAX 256
#define SWEEP_BATCH "200"
/* Users a timer function (offline delays, forgetting) takes per call. */
#define DUE_BATCH 200
/* How often users offline for forget_after are looked for, ms. */
#define FORGET_EVERY_MS 1000
/* How long one sweep round may go on, ms. */
#define SWEEP_BUDGET_MS 100
/* The reader's XREAD BLOCK, ms: also how long stopping may wait for it. */
#define READ_BLOCK_MS 250
/* Longest backoff between reconnection attempts, ms (at most the heartbeat, see below). */
#define BACKOFF_CAP_MS 1000

struct queue {
	void *head, *tail;
	size_t len;
};

struct presence_redis {
	struct presence_redis_config cfg;
	char *broker_id;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	/* Signalled when a result is queued (for presence_redis_take_wait). */
	pthread_cond_t results;
	/* Requests for the writer; results for the broker thread (both under lock). */
	struct presence_redis_request *req_head, *req_tail;
	size_t req_len;
	struct presence_redis_result *res_head, *res_tail;
	/* Whether cfg.wake was called since the broker thread last found no result. */
	bool wake_pending;
	bool stopping;
	/* The id of the last request submitted (under lock). */
	uint64_t submitted;
	/*
	 * Barriers (under lock): the highest one learned (from the stream or a heartbeat) and
	 * how many complete ticks the broker thread had made then; the complete ticks so far
	 * (and the last request id submitted at the last one); the last resynchronisation asked
	 * for and the last one done. A barrier may be confirmed once a complete tick ended after
	 * it was learned (every count decided before is queued then: the tick queues every
	 * change of its loop iteration, and nothing is decided between that and its end), every
	 * request up to that tick's id has been answered, and no resynchronisation is unfinished.
	 * Counted, not timed: a tick in the same millisecond counts.
	 */
	uint64_t bar_learned;
	uint64_t bar_learned_tick;
	/* The highest barrier Redis accepted from this broker's epoch. */
	uint64_t bar_confirmed;
	uint64_t ticks;
	uint64_t tick_ticket;
	uint64_t resync_asked, resync_done;
	/* Set when one of them changed, so that a waiting writer looks again. */
	bool sync_check;
	pthread_t writer, reader;
	bool writer_started, reader_started;
	atomic_bool ready;
	atomic_int_fast64_t last_tick_ms;
	/* Wall-clock time (ms) of the last heartbeat Redis answered (0: none yet). */
	atomic_int_fast64_t last_sync_ms;

#if PRESENCE_CLUSTER_TLS
	/* With rediss://: the TLS settings (shared by both threads; read only). */
	SSL_CTX *ssl_ctx;
#endif
	/* Writer thread only. */
	redisContext *wc;
	char epoch[24];
	char gen[40];
	/* This process's random id (pv2_register), so that a second broker started with the same
	 * broker_id is told apart from this one. */
	char instance[24];
	bool registered;
	/* When a clash over broker_id was first seen (monotonic ms; 0: none), and whether it was
	 * reported as an error. */
	int64_t clash_since;
	bool clash_reported;
	/* Monotonic time of the last registration. */
	int64_t registered_at;
	int64_t next_heartbeat, next_sweep, next_grace, next_forget;
	long long brokers;
	/* Random seeds of the writer and of the reader, each used by its thread only. */
	unsigned int rnd;
	unsigned int reader_rnd;
};

static int64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval ms_timeval(int64_t ms)
{
	struct timeval tv;

	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
	return tv;
}

static char *copy_string(const char *s)
{
	size_t len = strlen(s);
	char *copy = malloc(len + 1);

	if (copy != NULL) {
		memcpy(copy, s, len + 1);
	}
	return copy;
}

/* ---- results ---------------------------------------------------------------------------- */

static void push_result(struct presence_redis *r, struct presence_redis_result *res)
{
	bool wake;

	pthread_mutex_lock(&r->lock);
	res->next = NULL;
	if (r->res_tail != NULL) {
		r->res_tail->next = res;
	} else {
		r->res_head = res;
	}
	r->res_tail = res;
	pthread_cond_signal(&r->results);
	wake = !r->wake_pending;
	r->wake_pending = true;
	pthread_mutex_unlock(&r->lock);
	/* Once per drain of the queue, not per result. */
	if (wake && r->cfg.wake != NULL) {
		r->cfg.wake(r->cfg.wake_arg);
	}
}

void presence_redis_result_free(struct presence_redis_result *res)
{
	if (res == NULL) {
		return;
	}
	free(res->rec.name);
	free(res->rec.state);
	free(res->text);
	free(res);
}

static void log_line(struct presence_redis *r, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void log_line(struct presence_redis *r, int level, const char *fmt, ...)
{
	struct presence_redis_result *res = calloc(1, sizeof(*res));
	char buf[512];
	va_list ap;

	if (res == NULL) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	res->kind = PRESENCE_REDIS_LOG;
	res->level = level;
	res->text = copy_string(buf);
	if (res->text == NULL) {
		free(res);
		return;
	}
	push_result(r, res);
}

static void push_status(struct presence_redis *r, bool connected)
{
	struct presence_redis_result *res;

	atomic_store(&r->ready, connected && r->registered);
	res = calloc(1, sizeof(*res));
	if (res == NULL) {
		return;
	}
	res->kind = PRESENCE_REDIS_STATUS;
	res->connected = connected && r->registered;
	res->brokers = r->brokers;
	push_result(r, res);
}

static void push_simple(struct presence_redis *r, enum presence_redis_result_kind kind)
{
	struct presence_redis_result *res = calloc(1, sizeof(*res));

	if (res != NULL) {
		res->kind = kind;
		push_result(r, res);
	}
}

/* Asks the broker thread to resynchronise; barriers wait until it has. */
static void push_resync(struct presence_redis *r)
{
	struct presence_redis_result *res = calloc(1, sizeof(*res));

	if (res == NULL) {
		log_line(r, 2, "out of memory: this broker's counts are not sent again");
		return;
	}
	pthread_mutex_lock(&r->lock);
	res->generation = ++r->resync_asked;
	pthread_mutex_unlock(&r->lock);
	res->kind = PRESENCE_REDIS_RESYNC;
	push_result(r, res);
}

/* Notes barrier bar (from the stream or a heartbeat) and wakes the writer and the broker
 * thread, whose next complete tick lets the writer confirm it. */
static void learn_barrier(struct presence_redis *r, uint64_t bar)
{
	bool news;

	pthread_mutex_lock(&r->lock);
	news = bar > r->bar_learned;
	if (news) {
		r->bar_learned = bar;
		r->bar_learned_tick = r->ticks;
		r->sync_check = true;
		pthread_cond_signal(&r->wake);
	}
	pthread_mutex_unlock(&r->lock);
	if (news && r->cfg.wake != NULL) {
		r->cfg.wake(r->cfg.wake_arg);
	}
}

/* The barrier this epoch may confirm now, or 0 (see struct presence_redis). Writer only,
 * between two batches. */
static uint64_t barrier_to_confirm(struct presence_redis *r)
{
	uint64_t bar = 0;

	pthread_mutex_lock(&r->lock);
	r->sync_check = false;
	if (r->bar_learned > r->bar_confirmed && r->resync_done == r->resync_asked &&
	    r->ticks > r->bar_learned_tick &&
	    (r->req_head == NULL || r->req_head->id > r->tick_ticket)) {
		bar = r->bar_learned;
	}
	pthread_mutex_unlock(&r->lock);
	return bar;
}

/* Parses an unsigned decimal reply string; false when it is not one. */
static bool parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (s == NULL || *s == '\0') {
		return false;
	}
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10) {
			return false;
		}
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return true;
}

static const char *reply_str(const redisReply *reply)
{
	if (reply != NULL &&
	    (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS)) {
		return reply->str;
	}
	return NULL;
}

/* Fills rec from the five strings seq, avail, sess, since, state (name copied). Returns false
 * when they are not a document. */
static bool record_from(struct presence_cluster_record *rec, const char *name, const char *seq,
                        const char *avail, const char *sess, const char *since, const char *state)
{
	uint64_t n, t;

	memset(rec, 0, sizeof(*rec));
	if (!parse_u64(seq, &rec->seq) || rec->seq == 0 || avail == NULL || !parse_u64(sess, &n) ||
	    n > UINT32_MAX || !parse_u64(since, &t) || t > INT64_MAX || state == NULL) {
		return false;
	}
	rec->available = strcmp(avail, "1") == 0;
	rec->sessions = (unsigned int)n;
	rec->since_ms = (int64_t)t;
	rec->name = copy_string(name);
	rec->state = copy_string(state);
	if (rec->name == NULL || rec->state == NULL) {
		free(rec->name);
		free(rec->state);
		memset(rec, 0, sizeof(*rec));
		return false;
	}
	return true;
}

/* Makes a result of kind from the reply {status, seq, avail, sess, since, state} of a
 * function, for name. Returns NULL when the reply is not that (or memory runs out). */
static struct presence_redis_result *doc_result(enum presence_redis_result_kind kind,
                                                const char *name, const redisReply *reply)
{
	struct presence_redis_result *res;

	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 6) {
		return NULL;
	}
	res = calloc(1, sizeof(*res));
	if (res == NULL) {
		return NULL;
	}
	res->kind = kind;
	if (!record_from(&res->rec, name, reply_str(reply->element[1]),
	                 reply_str(reply->element[2]), reply_str(reply->element[3]),
	                 reply_str(reply->element[4]), reply_str(reply->element[5]))) {
		free(res);
		return NULL;
	}
	return res;
}

static void push_cas_failed(struct presence_redis *r, const char *name, const char *reason)
{
	struct presence_redis_result *res = calloc(1, sizeof(*res));

	if (res == NULL) {
		return;
	}
	res->kind = PRESENCE_REDIS_CAS_DONE;
	res->outcome = PRESENCE_REDIS_CAS_FAILED;
	res->rec.name = copy_string(name);
	res->text = copy_string(reason);
	if (res->rec.name == NULL || res->text == NULL) {
		presence_redis_result_free(res);
		return;
	}
	push_result(r, res);
}

/* Pushes a result of kind about name (and seq). */
static void push_named(struct presence_redis *r, enum presence_redis_result_kind kind,
                       const char *name, uint64_t seq)
{
	struct presence_redis_result *res = calloc(1, sizeof(*res));

	if (res == NULL) {
		return;
	}
	res->kind = kind;
	res->rec.seq = seq;
	res->rec.name = copy_string(name);
	if (res->rec.name == NULL) {
		free(res);
		return;
	}
	push_result(r, res);
}

/* ---- commands ---------------------------------------------------------------------------- */

#define CMD_ARGS_MAX 40

/* One command's arguments; owned ones are freed by cmd_free. */
struct cmd {
	int argc;
	const char *argv[CMD_ARGS_MAX];
	size_t len[CMD_ARGS_MAX];
	char *owned[CMD_ARGS_MAX];
	int nowned;
	bool failed;
};

static void cmd_add(struct cmd *c, const char *s)
{
	if (c->argc == CMD_ARGS_MAX || s == NULL) {
		c->failed = true;
		return;
	}
	c->argv[c->argc] = s;
	c->len[c->argc] = strlen(s);
	c->argc++;
}

static void cmd_addf(struct cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void cmd_addf(struct cmd *c, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || c->nowned == CMD_ARGS_MAX) {
		c->failed = true;
		return;
	}
	s = malloc((size_t)n + 1);
	if (s == NULL) {
		c->failed = true;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	c->owned[c->nowned++] = s;
	cmd_add(c, s);
}

static void cmd_free(struct cmd *c)
{
	for (int i = 0; i < c->nowned; i++) {
		free(c->owned[i]);
	}
	memset(c, 0, sizeof(*c));
}

/* Appends c to the writer's output buffer. Returns false when it could not (memory). */
static bool cmd_append(redisContext *ctx, struct cmd *c)
{
	return !c->failed && redisAppendCommandArgv(ctx, c->argc, c->argv, c->len) == REDIS_OK;
}

/* Runs one command and returns its reply (freed with freeReplyObject), or NULL when the
 * connection failed (ctx->err is then set). */
static redisReply *cmd_run(redisContext *ctx, struct cmd *c)
{
	redisReply *reply = NULL;

	if (cmd_append(ctx, c)) {
		if (redisGetReply(ctx, (void **)&reply) != REDIS_OK) {
			reply = NULL;
		}
	}
	cmd_free(c);
	return reply;
}

static bool reply_is_error(const redisReply *reply, const char *prefix)
{
	return reply != NULL && reply->type == REDIS_REPLY_ERROR &&
	       (prefix == NULL || strstr(reply->str, prefix) != NULL);
}

/* Starts the FCALL of function with the keys every function takes (presence_v2.lua): the
 * user's hash (name NULL: the prefix of user hashes), the cluster's keys, and extra (NULL: a
 * dummy). */
static void cmd_fcall(struct cmd *c, const char *function, const char *name, const char *extra)
{
	cmd_add(c, "FCALL");
	cmd_add(c, function);
	cmd_add(c, "18");
	if (name != NULL) {
		cmd_addf(c, USER_PREFIX "%s", name);
	} else {
		cmd_add(c, USER_PREFIX);
	}
	cmd_add(c, KEY_GRACE);
	cmd_add(c, KEY_LOG);
	cmd_add(c, KEY_LOGBYTES);
	cmd_add(c, KEY_TRIMMED);
	cmd_add(c, KEY_IDLE);
	cmd_add(c, KEY_FLOOR);
	cmd_add(c, KEY_COUNT);
	cmd_add(c, KEY_EPOCH);
	cmd_add(c, KEY_LIVE);
	cmd_add(c, KEY_HOLD);
	cmd_add(c, KEY_SEEN);
	cmd_add(c, KEY_DEAD);
	cmd_add(c, KEY_GEN);
	/* (Copied: extra may be the caller's buffer.) */
	cmd_addf(c, "%s", extra != NULL ? extra : KEY_PREFIX "none");
	cmd_add(c, KEY_BARRIER);
	cmd_add(c, KEY_SYNCED);
	cmd_add(c, KEY_OWNER);
}

/* The arguments of every timer function (presence_v2.lua, timers_may_run): how long a gap
 * between two timer calls of the cluster means that Redis (or every broker) stalled, and how
 * long sweeps, expiry and forgetting then hold. A live broker's heartbeat is at most one
 * heartbeat old when a stall begins, so a stall longer than lease - heartbeat could outlast its
 * lease: half of that is noticed. Every broker calls a timer function every heartbeat / 4 at
 * least, so no stall-free gap comes near it. */
static void cmd_timers(struct cmd *c, const struct presence_redis *r)
{
	int64_t gap = (r->cfg.lease_ms - r->cfg.heartbeat_ms) / 2;

	cmd_addf(c, "%" PRId64, gap > 0 ? gap : 1);
	cmd_addf(c, "%" PRId64, 2 * r->cfg.lease_ms);
}

/* The arguments every function that may make or forget a user takes first: the prefix of user
 * hashes, the stream's budget, max_users. */
static void cmd_bounds(struct cmd *c, const struct presence_redis *r)
{
	cmd_add(c, USER_PREFIX);
	cmd_addf(c, "%lu", r->cfg.stream_budget);
	cmd_addf(c, "%lu", r->cfg.max_users);
}

/* The pv2_contrib call of a count for name (count -1: the tombstone of a swept epoch, cseq 0),
 * cseq the count's number. */
static void contrib_cmd(struct cmd *c, struct presence_redis *r, const char *broker,
                        const char *epoch, const char *name, long long count, uint64_t floor,
                        uint64_t cseq)
{
	char set[200];

	snprintf(set, sizeof(set), KEY_PREFIX "bu:%s:%s", broker, epoch);
	cmd_fcall(c, "pv2_contrib", name, set);
	cmd_bounds(c, r);
	cmd_add(c, broker);
	cmd_add(c, epoch);
	cmd_addf(c, "%lld", count);
	cmd_addf(c, "%" PRId64, r->cfg.grace_ms);
	cmd_addf(c, "%" PRIu64, floor);
	cmd_add(c, name);
	cmd_add(c, r->cfg.keep_state ? "1" : "0");
	cmd_addf(c, "%" PRIu64, cseq);
}

/* ---- the writer -------------------------------------------------------------------------- */

static void drop_connection(struct presence_redis *r, const char *why)
{
	/* First, so that the broker thread refuses state writes from now on. */
	atomic_store(&r->ready, false);
	if (r->wc != NULL) {
		log_line(r, 1, "lost the connection to Redis (%s); reconnecting",
		         r->wc->err != 0 ? r->wc->errstr : why);
		redisFree(r->wc);
		r->wc = NULL;
	}
	push_status(r, false);
}

#if PRESENCE_CLUSTER_TLS
/* The TLS handshake on ctx, Redis' certificate checked for its host name (or IP address).
 * False with a reason in err. */
static bool tls_handshake(const struct presence_redis *r, redisContext *ctx, char *err,
                          size_t err_size)
{
	const char *host = r->cfg.endpoint.host;
	unsigned char addr[sizeof(struct in6_addr)];
	SSL *ssl = SSL_new(r->ssl_ctx);
	char why[160];
	long verify;

	if (ssl == NULL) {
		snprintf(err, err_size, "TLS: %s",
		         openssl_reason(why, sizeof(why), "out of memory"));
		return false;
	}
	if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1) {
		(void)X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
	} else {
		(void)SSL_set1_host(ssl, host);
		(void)SSL_set_tlsext_host_name(ssl, host);
	}
	if (hs.initiate(ctx, ssl) == REDIS_OK) {
		return true;
	}
	verify = SSL_get_verify_result(ssl);
	if (verify != X509_V_OK) {
		snprintf(err, err_size, "TLS: Redis' certificate was not accepted: %s",
		         X509_verify_cert_error_string(verify));
	} else {
		snprintf(err, err_size, "TLS: %s", ctx->errstr);
	}
	SSL_free(ssl);
	ERR_clear_error();
	return false;
}
#endif

/* Logs in with the endpoint's user and password. False with a reason in err (never the
 * password). */
static bool authenticate(const struct presence_redis *r, redisContext *ctx, char *err,
                         size_t err_size)
{
	const struct presence_cluster_endpoint *ep = &r->cfg.endpoint;
	struct cmd c = {0};
	redisReply *reply;
	bool ok;

	cmd_add(&c, "AUTH");
	if (ep->user[0] != '\0') {
		cmd_add(&c, ep->user);
	}
	cmd_add(&c, ep->password);
	reply = cmd_run(ctx, &c);
	if (reply == NULL) {
		snprintf(err, err_size, "%s", ctx->errstr);
		return false;
	}
	ok = reply->type != REDIS_REPLY_ERROR;
	if (!ok) {
		snprintf(err, err_size, "Redis refused the login%s%s: %s",
		         ep->user[0] != '\0' ? " as " : " with the password",
		         ep->user[0] != '\0' ? ep->user : "", reply->str);
	}
	freeReplyObject(reply);
	return ok;
}

/* One PING on a new connection. False with a reason in err when the connection fails (an
 * error reply, such as NOAUTH, is left to the caller's first command). */
static bool ping(redisContext *ctx, char *err, size_t err_size)
{
	struct cmd c = {0};
	redisReply *reply;

	cmd_add(&c, "PING");
	reply = cmd_run(ctx, &c);
	if (reply == NULL) {
		snprintf(err, err_size, "%s", ctx->errstr);
		return false;
	}
	freeReplyObject(reply);
	return true;
}

/* A new connection to Redis, with the deadline timeout_ms for each command, after the TLS
 * handshake and the login when they are configured. NULL with a reason in err. */
static redisContext *connect_redis(const struct presence_redis *r, int64_t timeout_ms, char *err,
                                   size_t err_size)
{
	const struct presence_cluster_endpoint *ep = &r->cfg.endpoint;
	struct timeval tv = ms_timeval(timeout_ms);
	redisContext *ctx = ep->path[0] != '\0' ? redisConnectUnixWithTimeout(ep->path, tv)
	                                        : redisConnectWithTimeout(ep->host, ep->port, tv);

	if (ctx == NULL) {
		snprintf(err, err_size, "out of memory");
		return NULL;
	}
	if (ctx->err != 0) {
		snprintf(err, err_size, "%s", ctx->errstr);
		redisFree(ctx);
		return NULL;
	}
	if (redisSetTimeout(ctx, tv) != REDIS_OK ||
	    (ep->path[0] == '\0' && redisEnableKeepAlive(ctx) != REDIS_OK)) {
		snprintf(err, err_size, "%s", ctx->err != 0 ? ctx->errstr : "socket options");
		redisFree(ctx);
		return NULL;
	}
#if PRESENCE_CLUSTER_TLS
	if (ep->tls && !tls_handshake(r, ctx, err, err_size)) {
		redisFree(ctx);
		return NULL;
	}
#endif
	if (ep->password[0] != '\0' ? !authenticate(r, ctx, err, err_size)
	                            : !ping(ctx, err, err_size)) {
#if PRESENCE_CLUSTER_TLS
		/* With TLS 1.3 a server that wants a client certificate says so only by closing
		 * the connection after the handshake. */
		if (ep->tls && (ctx->err == REDIS_ERR_IO || ctx->err == REDIS_ERR_EOF)) {
			snprintf(
			    err, err_size,
			    "TLS: Redis closed the connection after the handshake (%s): does it "
			    "want a client certificate (plugin_opt_cluster_tls_certfile)?",
			    ctx->errstr);
		}
#endif
		redisFree(ctx);
		return NULL;
	}
	return ctx;
}

/* Says that another running broker holds this broker_id (instance other, its lease runs ms
 * more): at first as what it may be (the lease of this broker's own crashed predecessor), and
 * once as an error when it outlasts a lease (a second broker with the same id). */
static void report_clash(struct presence_redis *r, const char *other, const char *ms)
{
	int64_t now = monotonic_ms();

	if (r->clash_since == 0) {
		r->clash_since = now;
		log_line(r, 1,
		         "broker_id %s is registered by another running broker (instance %s, "
		         "lease valid for %s ms more): waiting for it to end before joining the "
		         "cluster",
		         r->broker_id, other, ms);
	} else if (!r->clash_reported && now - r->clash_since > r->cfg.lease_ms) {
		r->clash_reported = true;
		log_line(
		    r, 2,
		    "broker_id %s is in use by another running broker (instance %s; this one is "
		    "%s): give every broker of the cluster its own broker_id. This broker serves "
		    "MQTT and publishes the cluster's documents, but its own sessions are not "
		    "counted and state writes through it are refused until the other one stops",
		    r->broker_id, other, r->instance);
	}
}

/* Registers a new epoch of this broker. Returns false when the connection failed (a clash
 * with another broker of the same id is not a failure: the broker stays unregistered and tries
 * again at its next heartbeat). */
static bool do_register(struct presence_redis *r)
{
	struct cmd c = {0};
	redisReply *reply;
	const char *epoch, *gen;

	cmd_fcall(&c, "pv2_register", NULL, NULL);
	cmd_add(&c, r->broker_id);
	cmd_addf(&c, "%" PRId64, r->cfg.lease_ms);
	cmd_addf(&c, "%08x%08x", (unsigned int)rand_r(&r->rnd), (unsigned int)rand_r(&r->rnd));
	cmd_add(&c, r->instance);
	reply = cmd_run(r->wc, &c);
	if (reply == NULL) {
		return false;
	}
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
	    reply_str(reply->element[0]) != NULL && strcmp(reply->element[0]->str, "CLASH") == 0) {
		const char *other = reply_str(reply->element[1]);
		const char *ms = reply_str(reply->element[2]);

		bool was_registered = r->registered;

		report_clash(r, other != NULL ? other : "?", ms != NULL ? ms : "?");
		freeReplyObject(reply);
		r->registered = false;
		if (was_registered) {
			push_status(r, true);
		}
		return true;
	}
	epoch = reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
	            ? reply_str(reply->element[0])
	            : NULL;
	gen = epoch != NULL ? reply_str(reply->element[1]) : NULL;
	if (epoch == NULL || gen == NULL || strlen(epoch) >= sizeof(r->epoch) ||
	    strlen(gen) >= sizeof(r->gen)) {
		log_line(r, 2, "registering with Redis failed: %s%s",
		         reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply",
		         reply->type == REDIS_REPLY_ERROR &&
		                 (strstr(reply->str, "NOPERM") != NULL ||
		                  strstr(reply->str, "can't run") != NULL)
		             ? " (give the Redis user the rights the README lists)"
		             : "");
		freeReplyObject(reply);
		return false;
	}
	snprintf(r->epoch, sizeof(r->epoch), "%s", epoch);
	snprintf(r->gen, sizeof(r->gen), "%s", gen);
	freeReplyObject(reply);
	r->registered = true;
	r->registered_at = monotonic_ms();
	pthread_mutex_lock(&r->lock);
	r->bar_confirmed = 0;
	pthread_mutex_unlock(&r->lock);
	if (r->clash_since != 0) {
		log_line(r, 0, "broker_id %s is free again", r->broker_id);
	}
	r->clash_since = 0;
	r->clash_reported = false;
	log_line(r, 0, "registered in the cluster as broker %s, epoch %s", r->broker_id, r->epoch);
	push_resync(r);
	push_status(r, true);
	return true;
}

/* One heartbeat. Re-registers when Redis says the epoch is stale or lost its data. Returns
 * false when the connection failed. */
static bool do_heartbeat(struct presence_redis *r)
{
	struct cmd c = {0};
	redisReply *reply;
	const char *status;

	if (!r->registered) {
		return do_register(r);
	}
	cmd_fcall(&c, "pv2_heartbeat", NULL, NULL);
	cmd_add(&c, r->broker_id);
	cmd_add(&c, r->epoch);
	cmd_addf(&c, "%" PRId64, r->cfg.lease_ms);
	cmd_timers(&c, r);
	reply = cmd_run(r->wc, &c);
	if (reply == NULL) {
		return false;
	}
	status = reply->type == REDIS_REPLY_ARRAY && reply->elements > 0
	             ? reply_str(reply->element[0])
	             : NULL;
	if (status != NULL && strcmp(status, "OK") == 0 && reply->elements == 4) {
		const char *gen = reply_str(reply->element[1]);
		long long brokers = reply->element[2]->integer;
		uint64_t bar = 0;

		if (gen == NULL || strcmp(gen, r->gen) != 0) {
			freeReplyObject(reply);
			log_line(r, 1,
			         "Redis lost the cluster's data (its generation changed): "
			         "registering again and re-seeding it");
			r->registered = false;
			return do_register(r);
		}
		if (parse_u64(reply_str(reply->element[3]), &bar)) {
			learn_barrier(r, bar);
		}
		freeReplyObject(reply);
		atomic_store(&r->last_sync_ms, wall_ms());
		if (brokers != r->brokers) {
			r->brokers = brokers;
			push_status(r, true);
		}
		return true;
	}
	if (status != NULL && strcmp(status, "STALE") == 0) {
		freeReplyObject(reply);
		log_line(r, 1,
		         "the cluster declared this broker (epoch %s) dead: registering again",
		         r->epoch);
		r->registered = false;
		atomic_store(&r->ready, false);
		return do_register(r);
	}
	log_line(r, 2, "heartbeat failed: %s",
	         reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
	freeReplyObject(reply);
	/* Most likely the library is gone: reconnecting loads it again. */
	return false;
}

/* Loads the function library. Returns false when the connection failed or Redis refused. */
static bool load_library(struct presence_redis *r)
{
	struct cmd c = {0};
	redisReply *reply;
	bool ok;

	/* First a PING, so that a Redis that wants a password says so (it would answer the large
	 * FUNCTION LOAD of a client not logged in with a protocol error instead). */
	cmd_add(&c, "PING");
	reply = cmd_run(r->wc, &c);
	if (reply == NULL) {
		return false;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		log_line(r, 2, "Redis refuses this broker (%s)%s", reply->str,
		         strncmp(reply->str, "NOAUTH", 6) == 0
		             ? ": Redis asks for a password: set plugin_opt_cluster_password_file "
		               "(and plugin_opt_cluster_username for an ACL user)"
		             : "");
		freeReplyObject(reply);
		return false;
	}
	freeReplyObject(reply);
	cmd_add(&c, "FUNCTION");
	cmd_add(&c, "LOAD");
	cmd_add(&c, "REPLACE");
	cmd_add(&c, presence_redis_library);
	reply = cmd_run(r->wc, &c);
	if (reply == NULL) {
		return false;
	}
	ok = reply->type != REDIS_REPLY_ERROR;
	if (!ok && strncmp(reply->str, "NOPERM", 6) == 0) {
		log_line(r, 2,
		         "the Redis user %s may not load the function library (%s): give it the "
		         "rights the README lists",
		         r->cfg.endpoint.user[0] != '\0' ? r->cfg.endpoint.user : "default",
		         reply->str);
	} else if (!ok) {
		log_line(r, 2, "Redis refused the function library (Redis 7 or Valkey needed): %s",
		         reply->str);
	}
	freeReplyObject(reply);
	return ok;
}

/* Sets the sweep hold after an outage. */
static bool set_hold(struct presence_redis *r)
{
	struct cmd c = {0};
	redisReply *reply;

	cmd_fcall(&c, "pv2_hold", NULL, NULL);
	cmd_addf(&c, "%" PRId64, 2 * r->cfg.lease_ms);
	reply = cmd_run(r->wc, &c);
	if (reply == NULL) {
		return false;
	}
	freeReplyObject(reply);
	return true;
}

/* Takes the replies of a pipeline of n pv2_contrib calls for names (their
 * documents reach every broker through the stream). Returns false when the connection failed. */
static bool collect_replies(struct presence_redis *r, size_t n, char **names)
{
	for (size_t i = 0; i < n; i++) {
		redisReply *reply = NULL;

		if (redisGetReply(r->wc, (void **)&reply) != REDIS_OK) {
			return false;
		}
		if (reply_is_error(reply, NULL)) {
			log_line(r, 2, "Redis refused a change of user %s: %s", names[i],
			         reply->str);
		}
		freeReplyObject(reply);
	}
	return true;
}

/* Claims brokers whose lease expired and sweeps dead epochs for at most SWEEP_BUDGET_MS.
 * Returns false when the connection failed. */
static bool do_sweep(struct presence_redis *r)
{
	int64_t deadline = monotonic_ms() + SWEEP_BUDGET_MS;
	struct cmd c = {0};
	redisReply *reply;

	cmd_fcall(&c, "pv2_sweep_claim", NULL, NULL);
	cmd_add(&c, "8");
	cmd_timers(&c, r);
	cmd_add(&c, r->broker_id);
	reply = cmd_run(r->wc, &c);
	if (reply == NULL) {
		return false;
	}
	for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++) {
		if (reply_str(reply->element[i]) != NULL) {
			log_line(r, 0, "declared broker %s dead (its lease expired)",
			         reply->element[i]->str);
		}
	}
	freeReplyObject(reply);
	while (monotonic_ms() < deadline) {
		char head[128], broker[80];
		const char *colon, *epoch;
		redisReply *users;
		char *names[200];
		size_t n = 0;
		bool ok;

		cmd_add(&c, "LINDEX");
		cmd_add(&c, KEY_DEAD);
		cmd_add(&c, "0");
		reply = cmd_run(r->wc, &c);
		if (reply == NULL) {
			return false;
		}
		if (reply_str(reply) == NULL || strlen(reply->str) >= sizeof(head)) {
			freeReplyObject(reply);
			return true;
		}
		snprintf(head, sizeof(head), "%s", reply->str);
		freeReplyObject(reply);
		colon = strrchr(head, ':');
		if (colon == NULL || (size_t)(colon - head) >= sizeof(broker)) {
			cmd_add(&c, "LREM");
			cmd_add(&c, KEY_DEAD);
			cmd_add(&c, "0");
			cmd_add(&c, head);
			reply = cmd_run(r->wc, &c);
			freeReplyObject(reply);
			if (reply == NULL) {
				return false;
			}
			continue;
		}
		memcpy(broker, head, (size_t)(colon - head));
		broker[colon - head] = '\0';
		epoch = colon + 1;
		cmd_add(&c, "SRANDMEMBER");
		cmd_addf(&c, KEY_PREFIX "bu:%s:%s", broker, epoch);
		cmd_add(&c, SWEEP_BATCH);
		users = cmd_run(r->wc, &c);
		if (users == NULL) {
			return false;
		}
		if (users->type != REDIS_REPLY_ARRAY || users->elements == 0) {
			freeReplyObject(users);
			/* Every user of that epoch was swept. */
			cmd_add(&c, "LREM");
			cmd_add(&c, KEY_DEAD);
			cmd_add(&c, "0");
			cmd_add(&c, head);
			reply = cmd_run(r->wc, &c);
			freeReplyObject(reply);
			if (reply == NULL) {
				return false;
			}
			log_line(r, 0, "swept the sessions of broker %s (epoch %s)", broker, epoch);
			continue;
		}
		ok = true;
		for (size_t i = 0; i < users->elements && i < 200; i++) {
			const char *name = reply_str(users->element[i]);

			if (name == NULL) {
				continue;
			}
			contrib_cmd(&c, r, broker, epoch, name, -1, 0, 0);
			if (!cmd_append(r->wc, &c)) {
				cmd_free(&c);
				ok = false;
				break;
			}
			cmd_free(&c);
			names[n++] = users->element[i]->str;
		}
		ok = collect_replies(r, n, names) && ok;
		freeReplyObject(users);
		if (!ok) {
			return false;
		}
	}
	return true;
}

/* Runs a timer function of the library (pv2_grace_due, pv2_forget_due; ARGV: the bounds, a
 * batch of BATCH users, the timers, then last). Returns how many users it changed (0 after an
 * error reply, logged with what), or -1 when the connection failed. */
static long long run_due(struct presence_redis *r, const char *function, const char *last,
                         const char *what)
{
	struct cmd c = {0};
	redisReply *reply;
	long long changed = 0;

	cmd_fcall(&c, function, NULL, NULL);
	cmd_bounds(&c, r);
	cmd_addf(&c, "%d", DUE_BATCH);
	cmd_timers(&c, r);
	cmd_add(&c, last);
	reply = cmd_run(r->wc, &c);
	if (reply == NULL) {
		return -1;
	}
	if (reply_is_error(reply, NULL)) {
		log_line(r, 2, "%s failed: %s", what, reply->str);
	} else if (reply->type == REDIS_REPLY_INTEGER) {
		changed = reply->integer;
	}
	freeReplyObject(reply);
	return changed;
}

/* Ends the offline delays that are due. Returns false when the connection failed. */
static bool do_grace(struct presence_redis *r)
{
	long long changed =
	    run_due(r, "pv2_grace_due", r->cfg.keep_state ? "1" : "0", "ending offline delays");

	if (changed >= DUE_BATCH) {
		/* A whole batch went offline (a storm of ends, a broker's sessions swept): the
		 * next batch is due at once, not after the cadence. */
		r->next_grace = monotonic_ms();
	}
	return changed >= 0;
}

/* Forgets users offline for forget_after (and beyond max_users). Returns false when the
 * connection failed. */
static bool do_forget(struct presence_redis *r)
{
	char after[24];

	snprintf(after, sizeof(after), "%" PRId64, r->cfg.forget_after_ms);
	return run_due(r, "pv2_forget_due", after, "forgetting users") >= 0;
}

/* Builds the command of one request. */
static void request_cmd(struct presence_redis *r, const struct presence_redis_request *req,
                        struct cmd *c)
{
	switch (req->kind) {
	case PRESENCE_REDIS_CONTRIB:
		contrib_cmd(c, r, r->broker_id, r->epoch, req->name, req->count, req->floor,
		            req->id);
		break;
	case PRESENCE_REDIS_CAS:
		cmd_fcall(c, "pv2_cas", req->name, NULL);
		cmd_bounds(c, r);
		cmd_add(c, r->broker_id);
		cmd_add(c, r->epoch);
		cmd_add(c, req->name);
		cmd_addf(c, "%" PRIu64, req->expected);
		cmd_add(c, req->state);
		cmd_addf(c, "%" PRIu64, req->floor);
		cmd_add(c, r->cfg.keep_state ? "1" : "0");
		break;
	case PRESENCE_REDIS_FLOOR:
		cmd_fcall(c, "pv2_floor", NULL, NULL);
		cmd_addf(c, "%" PRIu64, req->floor);
		break;
	case PRESENCE_REDIS_SEED:
		cmd_fcall(c, "pv2_seed", req->name, NULL);
		cmd_bounds(c, r);
		cmd_add(c, req->name);
		cmd_addf(c, "%" PRIu64, req->floor);
		cmd_add(c, req->available ? "1" : "0");
		cmd_addf(c, "%u", req->sessions);
		cmd_addf(c, "%" PRId64, req->since_ms);
		cmd_add(c, req->state != NULL ? req->state : "{}");
		cmd_addf(c, "%" PRId64, r->cfg.grace_ms);
		break;
	}
}

/* Handles the reply to one request (req is freed). Sets *stale when Redis said the epoch is
 * stale. */
static void request_done(struct presence_redis *r, struct presence_redis_request *req,
                         redisReply *reply, bool *stale)
{
	const char *status =
	    reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements > 0
	        ? reply_str(reply->element[0])
	        : NULL;
	struct presence_redis_result *res;

	if (status != NULL && strcmp(status, "STALE") == 0) {
		*stale = true;
		if (req->kind == PRESENCE_REDIS_CAS) {
			push_cas_failed(
			    r, req->name,
			    "the cluster had declared this broker dead; it is joining again, "
			    "retry the write");
		}
	} else if (req->kind == PRESENCE_REDIS_CONTRIB && status != NULL &&
	           strcmp(status, "FULL") == 0) {
		push_named(r, PRESENCE_REDIS_FULL, req->name, 0);
	} else if (req->kind == PRESENCE_REDIS_SEED && reply_str(reply) != NULL &&
	           strcmp(reply->str, "FORGOTTEN") == 0) {
		/* The cluster forgot the user while this broker did not hear of it. */
		push_named(r, PRESENCE_REDIS_FORGET, req->name, req->floor);
	} else if (req->kind == PRESENCE_REDIS_CAS) {
		res = status != NULL ? doc_result(PRESENCE_REDIS_CAS_DONE, req->name, reply) : NULL;
		if (res == NULL && status != NULL && strcmp(status, "OFFLINE") == 0) {
			push_cas_failed(
			    r, req->name,
			    "the user had no session left when the write reached the cluster, and "
			    "without keep_state its state went with its last session; the write "
			    "was not applied");
		} else if (res == NULL && status != NULL && strcmp(status, "FULL") == 0) {
			push_cas_failed(
			    r, req->name,
			    "max_users users are known and every one of them is online; "
			    "the write was not applied");
		} else if (res == NULL) {
			push_cas_failed(r, req->name,
			                "the cluster store could not commit the write");
		} else {
			res->outcome = strcmp(status, "CONFLICT") == 0
			                   ? PRESENCE_REDIS_CAS_CONFLICT
			                   : PRESENCE_REDIS_CAS_COMMITTED;
			push_result(r, res);
		}
	} else if (reply_is_error(reply, NULL)) {
		log_line(r, 2, "Redis refused a request for user %s: %s", req->name, reply->str);
	}
	presence_redis_request_free(req);
}

/* Puts the requests from req on (not answered) back at the head of the queue, except state
 * writes, which fail. */
static void requeue(struct presence_redis *r, struct presence_redis_request *req)
{
	struct presence_redis_request *keep_head = NULL, *keep_tail = NULL, *next;
	size_t kept = 0;

	for (; req != NULL; req = next) {
		next = req->next;
		req->next = NULL;
		if (req->kind == PRESENCE_REDIS_CAS) {
			push_cas_failed(
			    r, req->name,
			    "the connection to the cluster store was lost; the write may "
			    "not have been applied");
			presence_redis_request_free(req);
			continue;
		}
		if (keep_tail != NULL) {
			keep_tail->next = req;
		} else {
			keep_head = req;
		}
		keep_tail = req;
		kept++;
	}
	if (keep_head == NULL) {
		return;
	}
	pthread_mutex_lock(&r->lock);
	keep_tail->next = r->req_head;
	r->req_head = keep_head;
	if (r->req_tail == NULL) {
		r->req_tail = keep_tail;
	}
	r->req_len += kept;
	pthread_mutex_unlock(&r->lock);
}

/* While disconnected: fails the state writes waiting in the queue at once (the broker thread
 * refuses new ones itself); the rest waits for the connection. */
static void fail_queued_writes(struct presence_redis *r)
{
	struct presence_redis_request *failed = NULL, **link, *req;

	pthread_mutex_lock(&r->lock);
	link = &r->req_head;
	r->req_tail = NULL;
	while ((req = *link) != NULL) {
		if (req->kind == PRESENCE_REDIS_CAS) {
			*link = req->next;
			req->next = failed;
			failed = req;
			r->req_len--;
			continue;
		}
		r->req_tail = req;
		link = &req->next;
	}
	pthread_mutex_unlock(&r->lock);
	while ((req = failed) != NULL) {
		failed = req->next;
		push_cas_failed(
		    r, req->name,
		    "the cluster store (Redis) is unavailable; the write was not applied");
		presence_redis_request_free(req);
	}
}

/* Takes up to BATCH_MAX requests off the queue (in order). */
static struct presence_redis_request *take_batch(struct presence_redis *r, size_t *count)
{
	struct presence_redis_request *head, *last;
	size_t n = 0;

	pthread_mutex_lock(&r->lock);
	head = r->req_head;
	last = NULL;
	for (struct presence_redis_request *req = head; req != NULL && n < BATCH_MAX;
	     req = req->next) {
		last = req;
		n++;
	}
	if (last != NULL) {
		r->req_head = last->next;
		if (r->req_head == NULL) {
			r->req_tail = NULL;
		}
		last->next = NULL;
		r->req_len -= n;
	}
	pthread_mutex_unlock(&r->lock);
	*count = n;
	return head;
}

/* Runs one batch of requests, pipelined. Returns false when the connection failed (what was
 * not answered is requeued). */
static bool run_batch(struct presence_redis *r, struct presence_redis_request *batch)
{
	struct presence_redis_request *req, *next;
	bool stale = false;

	for (req = batch; req != NULL; req = req->next) {
		struct cmd c = {0};

		request_cmd(r, req, &c);
		if (!cmd_append(r->wc, &c)) {
			cmd_free(&c);
			/* Out of memory: nothing of this batch was sent; try again later. */
			requeue(r, batch);
			return false;
		}
		cmd_free(&c);
	}
	for (req = batch; req != NULL; req = next) {
		redisReply *reply = NULL;

		next = req->next;
		if (redisGetReply(r->wc, (void **)&reply) != REDIS_OK) {
			requeue(r, req);
			return false;
		}
		if (reply_is_error(reply, "not found") || reply_is_error(reply, "NOSCRIPT")) {
			/* The library is gone (FUNCTION FLUSH, or a Redis that lost its data
			 * without a restart): send the rest again after reloading it. */
			freeReplyObject(reply);
			requeue(r, req);
			return false;
		}
		request_done(r, req, reply, &stale);
		freeReplyObject(reply);
	}
	if (stale) {
		log_line(r, 1,
		         "the cluster had declared this broker (epoch %s) dead: registering "
		         "again",
		         r->epoch);
		return do_register(r);
	}
	return true;
}

/* Confirms barrier bar (pv2_sync) and, when Redis took it, looks for users it lets go offline
 * at once. Returns false when the connection failed. */
static bool do_sync(struct presence_redis *r, uint64_t bar)
{
	struct cmd c = {0};
	redisReply *reply;

	cmd_fcall(&c, "pv2_sync", NULL, NULL);
	cmd_add(&c, r->broker_id);
	cmd_add(&c, r->epoch);
	cmd_addf(&c, "%" PRIu64, bar);
	reply = cmd_run(r->wc, &c);
	if (reply == NULL) {
		return false;
	}
	if (reply_str(reply) != NULL && strcmp(reply->str, "OK") == 0) {
		freeReplyObject(reply);
		pthread_mutex_lock(&r->lock);
		if (bar > r->bar_confirmed) {
			r->bar_confirmed = bar;
		}
		pthread_mutex_unlock(&r->lock);
		r->next_grace = monotonic_ms();
		return true;
	}
	if (reply_str(reply) != NULL && strcmp(reply->str, "STALE") == 0) {
		freeReplyObject(reply);
		log_line(r, 1,
		         "the cluster declared this broker (epoch %s) dead: registering again",
		         r->epoch);
		r->registered = false;
		atomic_store(&r->ready, false);
		return do_register(r);
	}
	log_line(r, 2, "confirming barrier %" PRIu64 " failed: %s", bar,
	         reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
	freeReplyObject(reply);
	return true;
}

/* Sets up a new connection: library, hold (after an outage), registration or heartbeat. */
static bool setup_connection(struct presence_redis *r, bool after_outage)
{
	if (!load_library(r)) {
		return false;
	}
	if (after_outage && !set_hold(r)) {
		return false;
	}
	if (!do_heartbeat(r)) {
		return false;
	}
	push_status(r, true);
	return true;
}

static bool stopping(struct presence_redis *r)
{
	bool s;

	pthread_mutex_lock(&r->lock);
	s = r->stopping;
	pthread_mutex_unlock(&r->lock);
	return s;
}

/* Waits until ms have passed, a request arrives (when wake_on_request) or stopping. */
static void wait_ms(struct presence_redis *r, int64_t ms, bool wake_on_request)
{
	struct timespec deadline;

	if (ms <= 0) {
		return;
	}
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += (time_t)(ms / 1000);
	deadline.tv_nsec += (long)((ms % 1000) * 1000000);
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&r->lock);
	while (!r->stopping && !(wake_on_request && (r->req_head != NULL || r->sync_check))) {
		if (pthread_cond_timedwait(&r->wake, &r->lock, &deadline) == ETIMEDOUT) {
			break;
		}
	}
	pthread_mutex_unlock(&r->lock);
}

static void deregister(struct presence_redis *r)
{
	struct cmd c = {0};
	redisReply *reply;

	cmd_fcall(&c, "pv2_deregister", NULL, NULL);
	cmd_add(&c, r->broker_id);
	cmd_add(&c, r->epoch);
	reply = cmd_run(r->wc, &c);
	freeReplyObject(reply);
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* The longest wait between two connection attempts: a broker that lost its connection during
 * a stall of Redis is back within the hold that follows the stall (2 x lease, at least 4
 * heartbeats). */
static int64_t backoff_cap(const struct presence_redis *r)
{
	return min64(BACKOFF_CAP_MS, r->cfg.heartbeat_ms);
}

static void *writer_main(void *arg)
{
	struct presence_redis *r = arg;
	bool had_connection = false;
	unsigned int attempt = 0;
	char why[256], last_why[256] = "";

	while (!stopping(r)) {
		struct presence_redis_request *batch;
		int64_t now, next;
		size_t n;

		if (r->wc == NULL) {
			fail_queued_writes(r);
			if (attempt > 0) {
				wait_ms(r,
				        presence_cluster_backoff_ms(attempt, backoff_cap(r),
				                                    (uint32_t)rand_r(&r->rnd)),
				        false);
				if (stopping(r)) {
					break;
				}
			}
			attempt++;
			r->wc = connect_redis(r, r->cfg.command_timeout_ms, why, sizeof(why));
			if (r->wc == NULL) {
				/* Said at once, when the reason changes, and now and then. */
				if (attempt == 1 || attempt % 50 == 0 ||
				    strcmp(why, last_why) != 0) {
					log_line(r, attempt == 1 ? 1 : 2,
					         "cannot connect to Redis (%s); retrying", why);
					snprintf(last_why, sizeof(last_why), "%s", why);
				}
				continue;
			}
			last_why[0] = '\0';
			if (!setup_connection(r, had_connection)) {
				drop_connection(r, "setup failed");
				continue;
			}
			if (attempt > 1 || had_connection) {
				log_line(r, 0, "connected to Redis again");
				/* Maybe to another server (a failover through a moved address) that
				 * is behind what the brokers have published: the resync re-seeds
				 * what it lost (pv2_seed) and counts this broker's sessions again.
				 */
				if (r->registered) {
					push_resync(r);
				}
			}
			attempt = 0;
			had_connection = true;
			now = monotonic_ms();
			r->next_heartbeat = now + r->cfg.heartbeat_ms;
			r->next_sweep = now;
			r->next_grace = now;
			r->next_forget = now + FORGET_EVERY_MS;
		}
		now = monotonic_ms();
		if (now >= r->next_heartbeat) {
			r->next_heartbeat = now + r->cfg.heartbeat_ms;
			/* A broker loop that stopped ticking must be declared dead, not kept alive
			 * by this thread. */
			if (now - atomic_load(&r->last_tick_ms) < r->cfg.stall_tolerance_ms &&
			    !do_heartbeat(r)) {
				drop_connection(r, "heartbeat");
				continue;
			}
		}
		if (now >= r->next_sweep) {
			r->next_sweep = now + r->cfg.heartbeat_ms / 2;
			if (!do_sweep(r)) {
				drop_connection(r, "sweep");
				continue;
			}
		}
		if (now >= r->next_grace) {
			r->next_grace = now + min64(250, r->cfg.heartbeat_ms / 4);
			if (!do_grace(r)) {
				drop_connection(r, "offline delays");
				continue;
			}
		}
		if (now >= r->next_forget) {
			r->next_forget = now + FORGET_EVERY_MS;
			if (!do_forget(r)) {
				drop_connection(r, "forgetting users");
				continue;
			}
		}
		if (!r->registered) {
			/* Waiting for another broker's lease (a clash over broker_id): counts wait,
			 * state writes fail. */
			fail_queued_writes(r);
		} else {
			uint64_t bar = barrier_to_confirm(r);

			if (bar != 0 && !do_sync(r, bar)) {
				drop_connection(r, "barrier");
				continue;
			}
			batch = take_batch(r, &n);
			if (batch != NULL) {
				if (!run_batch(r, batch)) {
					drop_connection(r, "request");
				}
				continue;
			}
		}
		next = min64(min64(r->next_heartbeat, r->next_sweep),
		             min64(r->next_grace, r->next_forget));
		wait_ms(r, next - monotonic_ms(), r->registered);
	}
	if (r->wc != NULL && r->registered) {
		deregister(r);
	}
	if (r->wc != NULL) {
		redisFree(r->wc);
		r->wc = NULL;
	}
	return NULL;
}

/* ---- the reader -------------------------------------------------------------------------- */

/* Pushes the snapshot of every user. Returns false when the connection failed. */
static bool snapshot(struct presence_redis *r, redisContext *ctx, bool force)
{
	char cursor[32] = "0";
	const size_t prefix_len = strlen(USER_PREFIX);

	do {
		struct cmd c = {0};
		redisReply *scan, *keys;
		size_t n = 0;

		cmd_add(&c, "SCAN");
		cmd_add(&c, cursor);
		cmd_add(&c, "MATCH");
		cmd_add(&c, USER_PREFIX "*");
		cmd_add(&c, "COUNT");
		cmd_add(&c, "500");
		scan = cmd_run(ctx, &c);
		if (scan == NULL) {
			return false;
		}
		if (scan->type != REDIS_REPLY_ARRAY || scan->elements != 2 ||
		    reply_str(scan->element[0]) == NULL ||
		    strlen(scan->element[0]->str) >= sizeof(cursor) ||
		    scan->element[1]->type != REDIS_REPLY_ARRAY) {
			freeReplyObject(scan);
			return false;
		}
		snprintf(cursor, sizeof(cursor), "%s", scan->element[0]->str);
		keys = scan->element[1];
		for (size_t i = 0; i < keys->elements; i++) {
			const char *key = reply_str(keys->element[i]);

			if (key == NULL) {
				continue;
			}
			cmd_add(&c, "HMGET");
			cmd_add(&c, key);
			cmd_add(&c, "seq");
			cmd_add(&c, "avail");
			cmd_add(&c, "sess");
			cmd_add(&c, "since");
			cmd_add(&c, "state");
			if (!cmd_append(ctx, &c)) {
				cmd_free(&c);
				freeReplyObject(scan);
				return false;
			}
			cmd_free(&c);
			n++;
		}
		for (size_t i = 0, sent = 0; sent < n; i++) {
			const char *key = reply_str(keys->element[i]);
			redisReply *reply = NULL;
			struct presence_redis_result *res;

			if (key == NULL) {
				continue;
			}
			sent++;
			if (redisGetReply(ctx, (void **)&reply) != REDIS_OK) {
				freeReplyObject(scan);
				return false;
			}
			res = calloc(1, sizeof(*res));
			if (res != NULL && reply->type == REDIS_REPLY_ARRAY &&
			    reply->elements == 5 &&
			    record_from(&res->rec, key + prefix_len, reply_str(reply->element[0]),
			                reply_str(reply->element[1]), reply_str(reply->element[2]),
			                reply_str(reply->element[3]),
			                reply_str(reply->element[4]))) {
				res->kind = PRESENCE_REDIS_RECORD;
				res->force = force;
				push_result(r, res);
			} else {
				free(res);
			}
			freeReplyObject(reply);
		}
		freeReplyObject(scan);
	} while (strcmp(cursor, "0") != 0);
	return true;
}

/* The value of field in the flat field/value array of a stream entry, or NULL. */
static const char *entry_field(const redisReply *fields, const char *field)
{
	for (size_t i = 0; i + 1 < fields->elements; i += 2) {
		const char *f = reply_str(fields->element[i]);

		if (f != NULL && strcmp(f, field) == 0) {
			return reply_str(fields->element[i + 1]);
		}
	}
	return NULL;
}

/* Pushes the result of one stream entry: a document, or a user forgotten. */
static void push_entry(struct presence_redis *r, const redisReply *fields)
{
	struct presence_redis_result *res;
	const char *name = entry_field(fields, "u");
	uint64_t seq;

	if (name == NULL) {
		if (parse_u64(entry_field(fields, "y"), &seq)) {
			/* A user waits to go offline: this broker is to confirm the barrier. */
			learn_barrier(r, seq);
		}
		return;
	}
	if (entry_field(fields, "f") != NULL) {
		if (parse_u64(entry_field(fields, "q"), &seq)) {
			push_named(r, PRESENCE_REDIS_FORGET, name, seq);
		}
		return;
	}
	res = calloc(1, sizeof(*res));
	if (res == NULL) {
		return;
	}
	if (!record_from(&res->rec, name, entry_field(fields, "q"), entry_field(fields, "a"),
	                 entry_field(fields, "n"), entry_field(fields, "t"),
	                 entry_field(fields, "s"))) {
		free(res);
		return;
	}
	res->kind = PRESENCE_REDIS_RECORD;
	push_result(r, res);
}

/* Reads the stream from last_id on until the connection fails, the link stops (false) or the
 * stream was trimmed past last_id (true: records were missed, take a snapshot). Waits for new
 * records with XREAD BLOCK and reads them with pv2_read, which checks for a gap in the same
 * step. */
static bool follow(struct presence_redis *r, redisContext *ctx, char *last_id, size_t id_size)
{
	while (!stopping(r)) {
		struct cmd c = {0};
		redisReply *reply, *entries;
		const char *status;

		cmd_fcall(&c, "pv2_read", NULL, NULL);
		cmd_add(&c, last_id);
		cmd_add(&c, "500");
		reply = cmd_run(ctx, &c);
		if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
		    (status = reply_str(reply->element[0])) == NULL) {
			freeReplyObject(reply);
			return false;
		}
		if (strcmp(status, "GAP") == 0) {
			freeReplyObject(reply);
			log_line(r, 1,
			         "the stream of documents was trimmed past the last record read; "
			         "taking a snapshot");
			return true;
		}
		entries = reply->elements == 2 ? reply->element[1] : NULL;
		if (entries == NULL || entries->type != REDIS_REPLY_ARRAY) {
			freeReplyObject(reply);
			return false;
		}
		for (size_t i = 0; i < entries->elements; i++) {
			const redisReply *entry = entries->element[i];
			const char *id;

			if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
			    (id = reply_str(entry->element[0])) == NULL || strlen(id) >= id_size) {
				continue;
			}
			snprintf(last_id, id_size, "%s", id);
			if (entry->element[1]->type == REDIS_REPLY_ARRAY) {
				push_entry(r, entry->element[1]);
			}
		}
		if (entries->elements > 0) {
			freeReplyObject(reply);
			continue;
		}
		freeReplyObject(reply);
		/* Nothing new: wait for a record (or READ_BLOCK_MS). */
		cmd_add(&c, "XREAD");
		cmd_add(&c, "COUNT");
		cmd_add(&c, "1");
		cmd_add(&c, "BLOCK");
		cmd_addf(&c, "%d", READ_BLOCK_MS);
		cmd_add(&c, "STREAMS");
		cmd_add(&c, KEY_LOG);
		cmd_add(&c, last_id);
		reply = cmd_run(ctx, &c);
		if (reply == NULL) {
			return false;
		}
		freeReplyObject(reply);
	}
	return false;
}

/* Sets last_id to where the stream ends now: its last record, or the last one trimmed when
 * that is later (an empty stream). Returns false when the connection failed. */
static bool stream_end(redisContext *ctx, char *last_id, size_t id_size)
{
	struct cmd c = {0};
	redisReply *reply;

	cmd_add(&c, "XREVRANGE");
	cmd_add(&c, KEY_LOG);
	cmd_add(&c, "+");
	cmd_add(&c, "-");
	cmd_add(&c, "COUNT");
	cmd_add(&c, "1");
	reply = cmd_run(ctx, &c);
	if (reply == NULL) {
		return false;
	}
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
	    reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements == 2 &&
	    reply_str(reply->element[0]->element[0]) &&
	    strlen(reply->element[0]->element[0]->str) < id_size) {
		snprintf(last_id, id_size, "%s", reply->element[0]->element[0]->str);
	}
	freeReplyObject(reply);
	cmd_add(&c, "GET");
	cmd_add(&c, KEY_TRIMMED);
	reply = cmd_run(ctx, &c);
	if (reply == NULL) {
		return false;
	}
	if (reply_str(reply) != NULL && strlen(reply->str) < id_size) {
		unsigned long long am = 0, as = 0, bm = 0, bs = 0;

		if (sscanf(last_id, "%llu-%llu", &am, &as) == 2 &&
		    sscanf(reply->str, "%llu-%llu", &bm, &bs) == 2 &&
		    (bm > am || (bm == am && bs > as))) {
			snprintf(last_id, id_size, "%s", reply->str);
		}
	}
	freeReplyObject(reply);
	return true;
}

/* Whether the stream still holds the record last_id, so that reading can go on after it.
 * Returns false (a snapshot is needed) when it does not or the connection failed. */
/* Whether the stream still holds the record last_id: 1 yes, 0 no (another server, or one that
 * lost its data), -1 unknown (the connection failed, or Redis answered an error, such as
 * LOADING while it reads its AOF after a restart). */
static int stream_has(redisContext *ctx, const char *last_id)
{
	struct cmd c = {0};
	redisReply *reply;
	int found;

	cmd_add(&c, "XRANGE");
	cmd_add(&c, KEY_LOG);
	cmd_add(&c, last_id);
	cmd_add(&c, last_id);
	reply = cmd_run(ctx, &c);
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
		found = -1;
	} else {
		found = reply->elements == 1 ? 1 : 0;
	}
	freeReplyObject(reply);
	return found;
}

static void *reader_main(void *arg)
{
	struct presence_redis *r = arg;
	unsigned int attempt = 0;
	unsigned int rnd = r->reader_rnd;
	bool first = true;
	char why[256];
	/* The last record read ("" before the first snapshot). */
	char last_id[64] = "";

	while (!stopping(r)) {
		redisContext *ctx;
		bool snap;

		if (attempt > 0) {
			wait_ms(r,
			        presence_cluster_backoff_ms(attempt, backoff_cap(r),
			                                    (uint32_t)rand_r(&rnd)),
			        false);
			if (stopping(r)) {
				break;
			}
		}
		attempt++;
		/* (Why it fails is the writer's to say: it connects the same way.) */
		ctx = connect_redis(r, r->cfg.command_timeout_ms + READ_BLOCK_MS, why, sizeof(why));
		if (ctx == NULL) {
			continue;
		}
		/* Back on the stream it read (the same Redis, or one restarted from its data): go
		 * on after the last record, so that every document is published. Otherwise note
		 * where the stream ends, then read every user, then follow from there: a change
		 * made during the snapshot is read again, which the seq rule ignores. A gap
		 * (records trimmed before they were read) takes another snapshot. */
		if (last_id[0] == '\0') {
			snap = true;
		} else {
			int has = stream_has(ctx, last_id);

			if (has < 0) {
				/* Not known yet: keep the place and ask again (a snapshot now would
				 * skip the records after it). */
				redisFree(ctx);
				continue;
			}
			snap = has == 0;
			if (!snap) {
				attempt = 0;
			}
		}
		while (!stopping(r)) {
			if (snap) {
				snprintf(last_id, sizeof(last_id), "0-0");
				if (!stream_end(ctx, last_id, sizeof(last_id)) ||
				    !snapshot(r, ctx, first)) {
					/* Not knowing what the snapshot missed, take it again. */
					last_id[0] = '\0';
					break;
				}
				push_simple(r, PRESENCE_REDIS_SNAPSHOT_DONE);
				first = false;
				attempt = 0;
			}
			snap = follow(r, ctx, last_id, sizeof(last_id));
			if (!snap) {
				break;
			}
		}
		redisFree(ctx);
	}
	return NULL;
}

/* ---- the broker thread's side ------------------------------------------------------------ */

struct presence_redis *presence_redis_start(const struct presence_redis_config *cfg, char *err,
                                            size_t err_size)
{
	struct presence_redis *r;
	struct timespec ts;

	if (!load_hiredis(err, err_size)) {
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		snprintf(err, err_size, "out of memory");
		return NULL;
	}
	r->cfg = *cfg;
	/* Read now (the files are used only here). */
	r->cfg.tls_cafile = r->cfg.tls_certfile = r->cfg.tls_keyfile = NULL;
	if (cfg->endpoint.tls) {
#if PRESENCE_CLUSTER_TLS
		if (!load_hiredis_ssl(err, err_size) ||
		    (r->ssl_ctx = tls_context(cfg, err, err_size)) == NULL) {
			free(r);
			return NULL;
		}
#else
		snprintf(
		    err, err_size,
		    "rediss:// needs hiredis with TLS, and this build's %s has none (Debian 12's "
		    "hiredis 0.14): reach Redis through stunnel (see the README)",
		    PRESENCE_HIREDIS_SONAME);
		free(r);
		return NULL;
#endif
	}
	r->broker_id = copy_string(cfg->broker_id);
	if (r->broker_id == NULL) {
#if PRESENCE_CLUSTER_TLS
		SSL_CTX_free(r->ssl_ctx);
#endif
		free(r);
		snprintf(err, err_size, "out of memory");
		return NULL;
	}
	r->cfg.broker_id = r->broker_id;
	clock_gettime(CLOCK_REALTIME, &ts);
	r->rnd = (unsigned int)ts.tv_nsec ^ (unsigned int)ts.tv_sec ^ (unsigned int)(uintptr_t)r;
	{
		uint64_t id;

		if (getrandom(&id, sizeof(id), GRND_NONBLOCK) != (ssize_t)sizeof(id)) {
			id = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^
			     ((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)r;
		}
		snprintf(r->instance, sizeof(r->instance), "%016" PRIx64, id);
	}
	r->reader_rnd = r->rnd ^ 0x5bd1e995u;
	atomic_init(&r->ready, false);
	atomic_init(&r->last_tick_ms, monotonic_ms());
	atomic_init(&r->last_sync_ms, 0);
	r->brokers = -1;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->wake, NULL);
	pthread_cond_init(&r->results, NULL);
	if (pthread_create(&r->writer, NULL, writer_main, r) != 0) {
		presence_redis_stop(r);
		snprintf(err, err_size, "cannot start a thread");
		return NULL;
	}
	r->writer_started = true;
	if (pthread_create(&r->reader, NULL, reader_main, r) != 0) {
		presence_redis_stop(r);
		snprintf(err, err_size, "cannot start a thread");
		return NULL;
	}
	r->reader_started = true;
	return r;
}

void presence_redis_stop(struct presence_redis *r)
{
	struct presence_redis_request *req, *next_req;
	struct presence_redis_result *res, *next_res;

	if (r == NULL) {
		return;
	}
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	pthread_cond_broadcast(&r->wake);
	pthread_mutex_unlock(&r->lock);
	if (r->writer_started) {
		pthread_join(r->writer, NULL);
	}
	if (r->reader_started) {
		pthread_join(r->reader, NULL);
	}
	for (req = r->req_head; req != NULL; req = next_req) {
		next_req = req->next;
		presence_redis_request_free(req);
	}
	for (res = r->res_head; res != NULL; res = next_res) {
		next_res = res->next;
		presence_redis_result_free(res);
	}
	pthread_cond_destroy(&r->wake);
	pthread_cond_destroy(&r->results);
	pthread_mutex_destroy(&r->lock);
#if PRESENCE_CLUSTER_TLS
	SSL_CTX_free(r->ssl_ctx);
#endif
	/* The password goes with it. */
	memset(&r->cfg.endpoint, 0, sizeof(r->cfg.endpoint));
	free(r->broker_id);
	free(r);
}

struct presence_redis_request *presence_redis_request_new(enum presence_redis_request_kind kind,
                                                          const char *name)
{
	struct presence_redis_request *req = calloc(1, sizeof(*req));

	if (req == NULL) {
		return NULL;
	}
	req->kind = kind;
	req->name = copy_string(name);
	if (req->name == NULL) {
		free(req);
		return NULL;
	}
	return req;
}

void presence_redis_request_free(struct presence_redis_request *req)
{
	if (req == NULL) {
		return;
	}
	free(req->name);
	free(req->state);
	free(req);
}

void presence_redis_submit(struct presence_redis *r, struct presence_redis_request *req)
{
	req->next = NULL;
	pthread_mutex_lock(&r->lock);
	req->id = ++r->submitted;
	if (r->req_tail != NULL) {
		r->req_tail->next = req;
	} else {
		r->req_head = req;
	}
	r->req_tail = req;
	r->req_len++;
	pthread_cond_signal(&r->wake);
	pthread_mutex_unlock(&r->lock);
}

size_t presence_redis_backlog(struct presence_redis *r)
{
	size_t n;

	pthread_mutex_lock(&r->lock);
	n = r->req_len;
	pthread_mutex_unlock(&r->lock);
	return n;
}

struct presence_redis_result *presence_redis_take(struct presence_redis *r)
{
	struct presence_redis_result *res;

	pthread_mutex_lock(&r->lock);
	res = r->res_head;
	if (res != NULL) {
		r->res_head = res->next;
		if (r->res_head == NULL) {
			r->res_tail = NULL;
		}
		res->next = NULL;
	} else {
		r->wake_pending = false;
	}
	pthread_mutex_unlock(&r->lock);
	return res;
}

struct presence_redis_result *presence_redis_take_wait(struct presence_redis *r, int64_t timeout_ms)
{
	struct presence_redis_result *res;
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += (time_t)(timeout_ms / 1000);
	deadline.tv_nsec += (long)((timeout_ms % 1000) * 1000000);
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&r->lock);
	while (r->res_head == NULL) {
		if (pthread_cond_timedwait(&r->results, &r->lock, &deadline) == ETIMEDOUT) {
			break;
		}
	}
	pthread_mutex_unlock(&r->lock);
	res = presence_redis_take(r);
	return res;
}

bool presence_redis_ready(struct presence_redis *r)
{
	return atomic_load(&r->ready);
}

int64_t presence_redis_last_sync_ms(struct presence_redis *r)
{
	return atomic_load(&r->last_sync_ms);
}

void presence_redis_alive(struct presence_redis *r, int64_t now_ms)
{
	atomic_store(&r->last_tick_ms, now_ms);
}

void presence_redis_ticked(struct presence_redis *r, bool complete)
{
	if (!complete) {
		return;
	}
	pthread_mutex_lock(&r->lock);
	r->ticks++;
	r->tick_ticket = r->submitted;
	if (r->bar_learned > r->bar_confirmed) {
		r->sync_check = true;
		pthread_cond_signal(&r->wake);
	}
	pthread_mutex_unlock(&r->lock);
}

void presence_redis_resync_done(struct presence_redis *r, uint64_t generation)
{
	pthread_mutex_lock(&r->lock);
	if (generation > r->resync_done) {
		r->resync_done = generation;
		r->sync_check = true;
		pthread_cond_signal(&r->wake);
	}
	pthread_mutex_unlock(&r->lock);
}
