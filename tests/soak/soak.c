/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The churn soak: many short sessions of a few hundred users against a real broker with the
 * plugin, checked against a ground truth the soak keeps itself.
 *
 * For a bounded time (SOAK_SECONDS, default 10) the soak keeps about SOAK_CONNECTIONS (default
 * 60) connections of SOAK_USERS users (default 100; a fifth have odd names: '/', '+', '#', '%',
 * spaces, non-ASCII, a literal "%2F") busy, one event loop over libmosquitto's sockets:
 * - connections come and go: clean DISCONNECT, abrupt close (shutdown without DISCONNECT),
 *   take-over of a live client id by a new connection of the same user, two CONNECTs racing
 *   with one fresh client id, persistent sessions (clean session false) left and resumed;
 * - a third leave a retained Will on their own state topic (merge or single key) that must
 *   never be applied, whether they leave abruptly or are taken over;
 * - connected sessions write their user's state (QoS 1, single keys k0..k5, each key written by
 *   one connection at a time, so the order of a key's writes is known);
 * - every couple of seconds the broker is frozen (SIGSTOP) for 200 ms;
 * - about one new connection in ten is of a user that comes once and never again, so that the
 *   broker knows more users than max_users (SOAK_USERS + 20): the users offline the longest,
 *   the soak's own included, are forgotten, and those come back later.
 * The ground truth: which connections are connected (CONNACK seen, close not seen), per user,
 * and per key the values it may hold (the last acknowledged write; also the unacknowledged
 * one of a writer that died, which the broker may or may not have applied).
 *
 * Checked for every document a presence/+ subscriber receives: it is JSON for the right user,
 * seq is the user's previous seq + 1 (after the user was forgotten, an empty message: greater
 * than every seq it had), available == (sessions > 0), and the state holds only keys the soak
 * writes with values it has written (never a Will). At the end the soak stops
 * all churn, closes half of the connections cleanly, and waits (bounded) until every user's
 * last document agrees with the truth: sessions, available and every key; then a new
 * subscriber's retained documents must be those last documents, exactly.
 *
 * A failure prints what differs and fails the test. Figures (sessions, documents, writes,
 * takeovers...) are printed at the end; tests/bench/README.md has those of the long run.
 *
 * Built with SOAK_CLUSTER (the executable cluster_soak, test cluster.soak): the same churn
 * against three brokers sharing one Redis (heartbeat 250 ms, lease 1000 ms, the AOF written at
 * every change), each with its own presence/+ subscriber, and no user that comes once (the
 * cluster's forgetting has its own tests). Each connection goes to a broker of its own (a
 * take-over, a race and a resumed session to the broker of the id), so one user's sessions
 * and state writes go through several brokers at once. Sessions are paced (SOAK_STEPS, steps
 * a second) and a third of them live 5 to 15 s, so that a false offline has time to show.
 * Instead of the short freezes, a fault every few seconds, in turn: a broker stopped
 * (SIGSTOP) past its lease, Redis paused (CLIENT PAUSE) past a lease, a broker killed (kill -9)
 * and started again on its port, Redis killed and started again from its AOF, a broker
 * stopped for 200 ms. Checked on every subscriber, for every document: seq grows by exactly one
 * (a subscriber made again after its broker was killed starts from the retained documents,
 * which never go back); every document of one seq is the same bytes on every broker; no false
 * offline (a document that says the user is unavailable while one of its sessions has been
 * connected, to a broker that was not stopped meanwhile, for longer than G); no ghost (a user
 * with no session left for longer than G still shown available on a subscriber; counted from
 * the end of the last fault, and from the end of the cluster's hold: after Redis stalled, a
 * restart, a pause or a burst of work that kept it from serving the brokers' timers in time,
 * nobody goes offline for two leases). G is twice the longest fault plus one second: the
 * longest a document can be held up. A key holds any
 * value the soak wrote (a write acknowledged by one broker may land before or after another
 * broker's), never a Will. No broker is declared dead but those stopped past their lease or
 * killed. At the end, every subscriber's last documents agree with the truth and with each
 * other, and each broker's retained documents are those.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "harness.h"
#ifdef SOAK_CLUSTER
#include "cluster.h"
#define SOAK_BROKERS 3
#else
#define SOAK_BROKERS 1
#endif

#define SOAK_KEYS 6
#define MAX_CONNS 4096
/* Most values of a key tracked one by one: each writer that dies with a write in flight adds
 * one until a write is acknowledged. Beyond, the key may hold any value written to it so far
 * (may_hold_count -1) until the next acknowledged write. */
#define MAY_HOLD 64
/* The most users that come once. */
#define ONCE_MAX 8192
/* The documents remembered per user, to compare the bytes of one seq across brokers. */
#define RING 32

/* What one broker's subscriber received of a user: the last document's seq (0 = none yet;
 * after the user was forgotten, the last seq it had), sessions, available, state; whether it
 * was forgotten since; and whether the next document may jump (a new subscriber after its
 * broker was killed: retained documents first, never going back). */
struct view {
	bool forgotten;
	bool rebase;
	long seq;
	long sessions;
	bool available;
	cJSON *state;
};

/* What the soak knows of a user. */
struct user {
	char name[64];
	/* The encoded topic level. */
	char level[192];
	/* Connections the soak counts as connected. */
	int connected;
	/* Per key: the connection writing it (NULL: none), the highest value issued (values are
	 * "v<n>", n from 1; 0 stands for "absent"), and the values the key may hold now. */
	struct conn *writer[SOAK_KEYS];
	unsigned issued[SOAK_KEYS];
	unsigned may_hold[SOAK_KEYS][MAY_HOLD];
	int may_hold_count[SOAK_KEYS];
	/* What each broker's subscriber received. */
	struct view view[SOAK_BROKERS];
	long documents;
	/* The bytes of recent documents, by seq % RING (seq 0: empty slot). */
	long ring_seq[RING];
	uint64_t ring_hash[RING];
	/* Since when no connection of the user is connected, connecting or closing (0: some
	 * is); set by the ghost check. */
	double idle_since;
};

enum conn_phase { CONN_CONNECTING, CONN_CONNECTED, CONN_CLOSING, CONN_DEAD };

struct conn {
	struct mosquitto *mosq;
	struct user *user;
	char id[64];
	enum conn_phase phase;
	bool persistent;
	/* The broker it connects to; when CONNACK came; when the churn may close it. */
	int broker;
	double connack_at;
	double close_after;
	/* The key this connection writes (-1: none), the value in flight (0: none) and its mid. */
	int key;
	unsigned pending;
	int pending_mid;
};

struct soak {
	struct broker *b[SOAK_BROKERS];
	/* Per broker: killed and not started again yet; stopped (SIGSTOP); when it last came
	 * back (SIGCONT, or started again). */
	bool down[SOAK_BROKERS];
	bool stopped[SOAK_BROKERS];
	double back_at[SOAK_BROKERS];
	/* The last moment a broker came back from a fault; when the churn started. */
	double fault_end;
	double started;
	/* G: the longest a document may be held up by the faults (0: no such checks). */
	double grace;
	/* Steps of churn a second (0: as fast as the loop goes). */
	int steps;
	struct user *users;
	int user_count;
	/* The users the churn connects again and again (the first regular of users); the rest
	 * come once. */
	int regular;
	struct conn *conns[MAX_CONNS];
	int conn_count;
	struct mosquitto *sub[SOAK_BROKERS];
	bool sub_ready[SOAK_BROKERS];
	char failure[1024];
	unsigned long serial;
	/* Figures. */
	unsigned long sessions, clean_closes, abrupt_closes, takeovers, races, resumes,
	    broker_closes, writes_acked, documents, freezes, wills, once, forgotten, returned;
	/* Cluster figures: faults by kind, documents compared across brokers, the most a
	 * document came after what it reflects. */
	unsigned long stops_long, stops_short, kills, pauses, redis_restarts, compared;
};

static struct soak soak;

/* Set by on_subscribe: the flag of the subscriber being set up. */
static bool *subscribed_flag;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The soak's own random numbers (xorshift64), so that a seed replays a run's choices. */
static uint64_t rnd_state = 11;

static unsigned rnd(unsigned n)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return n == 0 ? 0 : (unsigned)(rnd_state % n);
}

static int env_int(const char *name, int fallback)
{
	const char *v = getenv(name);

	return v != NULL && atoi(v) > 0 ? atoi(v) : fallback;
}

static void fail_soak(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail_soak(const char *fmt, ...)
{
	va_list ap;

	if (soak.failure[0] != '\0') {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(soak.failure, sizeof(soak.failure), fmt, ap);
	va_end(ap);
}

/* Prints what the cluster holds of a user, after a failure about it (NULL on one broker). */
static void (*explain_user)(const char *name);
/* Whether the cluster suspends its timers now or did so less than G ago (NULL on one broker):
 * after a stall of Redis (a pause, a restart, or a burst of work that kept it from serving the
 * brokers' timers in time) nobody goes offline for two leases, as the README says. */
static bool (*offline_held)(void);

/* Encodes name as a topic level: '%', '/', '+', '#' percent-encoded (the plugin's rule). */
static void encode(const char *name, char *out)
{
	for (; *name != '\0'; name++) {
		switch (*name) {
		case '%':
			out += sprintf(out, "%%25");
			break;
		case '/':
			out += sprintf(out, "%%2F");
			break;
		case '+':
			out += sprintf(out, "%%2B");
			break;
		case '#':
			out += sprintf(out, "%%23");
			break;
		default:
			*out++ = *name;
		}
	}
	*out = '\0';
}

static struct user *user_by_level(const char *level)
{
	for (int i = 0; i < soak.user_count; i++) {
		if (strcmp(soak.users[i].level, level) == 0) {
			return &soak.users[i];
		}
	}
	return NULL;
}

/* ---- ground truth of the keys ---------------------------------------------------------- */

static void key_set(struct user *u, int k, unsigned value)
{
	u->may_hold[k][0] = value;
	u->may_hold_count[k] = 1;
}

static void key_maybe(struct user *u, int k, unsigned value)
{
	if (u->may_hold_count[k] == 0) {
		/* Nothing written yet: the key may still be absent. */
		u->may_hold[k][u->may_hold_count[k]++] = 0;
	}
	if (u->may_hold_count[k] >= 0 && u->may_hold_count[k] < MAY_HOLD) {
		u->may_hold[k][u->may_hold_count[k]++] = value;
	} else {
		u->may_hold_count[k] = -1;
	}
}

static bool key_may_hold(const struct user *u, int k, unsigned value)
{
	if (u->may_hold_count[k] < 0) {
		/* Absent, or any value written to the key. */
		return value <= u->issued[k];
	}
	for (int i = 0; i < u->may_hold_count[k]; i++) {
		if (u->may_hold[k][i] == value) {
			return true;
		}
	}
	return false;
}

/* The connection stops writing: a write in flight may or may not have been applied. */
static void release_key(struct conn *c)
{
	if (c->key < 0) {
		return;
	}
	if (c->pending != 0) {
		key_maybe(c->user, c->key, c->pending == UINT32_MAX ? 0 : c->pending);
	}
	c->user->writer[c->key] = NULL;
	c->key = -1;
	c->pending = 0;
}

/* ---- connections ----------------------------------------------------------------------- */

static void set_phase(struct conn *c, enum conn_phase phase)
{
	if (c->phase == CONN_CONNECTED && phase != CONN_CONNECTED) {
		c->user->connected--;
	}
	if (c->phase != CONN_CONNECTED && phase == CONN_CONNECTED) {
		c->user->connected++;
	}
	if (phase != CONN_CONNECTED) {
		release_key(c);
	}
	c->phase = phase;
}

static void on_connect(struct mosquitto *m, void *obj, int rc)
{
	struct conn *c = obj;

	(void)m;
	if (rc != 0) {
		fail_soak("connection %s of %s refused: %d", c->id, c->user->name, rc);
		set_phase(c, CONN_DEAD);
		return;
	}
	soak.sessions++;
	c->connack_at = now_s();
	set_phase(c, CONN_CONNECTED);
}

static void on_disconnect(struct mosquitto *m, void *obj, int rc)
{
	struct conn *c = obj;

	(void)m;
	if (c->phase != CONN_CLOSING && rc != 0) {
		/* Closed by the broker: a take-over (or a race lost). */
		soak.broker_closes++;
	}
	set_phase(c, CONN_DEAD);
}

static void on_publish(struct mosquitto *m, void *obj, int mid)
{
	struct conn *c = obj;

	(void)m;
	if (c->key >= 0 && c->pending != 0 && mid == c->pending_mid) {
		if (SOAK_BROKERS > 1) {
			/* A broker acknowledges before its commit reaches Redis: a write of another
			 * broker committed later may win, and a commit may fail (a notice). */
			key_maybe(c->user, c->key, c->pending == UINT32_MAX ? 0 : c->pending);
		} else {
			key_set(c->user, c->key, c->pending == UINT32_MAX ? 0 : c->pending);
		}
		c->pending = 0;
		soak.writes_acked++;
	}
}

/* The broker a client id goes to: a fresh id to any live broker, a persistent one always to
 * the same (so that it is resumed); -1 when that one is down. */
static int broker_for(const char *id, bool persistent)
{
	unsigned h = 0;
	int i;

	if (persistent) {
		for (const char *p = id; *p != '\0'; p++) {
			h = h * 31u + (unsigned char)*p;
		}
		i = (int)(h % SOAK_BROKERS);
		return soak.down[i] ? -1 : i;
	}
	for (int tries = 0; tries < 8; tries++) {
		i = (int)rnd(SOAK_BROKERS);
		if (!soak.down[i]) {
			return i;
		}
	}
	return -1;
}

/* Starts a connection of u with client id id to broker (-1: broker_for). */
static struct conn *conn_start(struct user *u, const char *id, bool persistent, int broker)
{
	struct conn *c;
	char topic[256];

	if (broker < 0) {
		broker = broker_for(id, persistent);
	}
	if (soak.conn_count >= MAX_CONNS || broker < 0 || soak.down[broker]) {
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	assert_non_null(c);
	c->user = u;
	c->key = -1;
	c->persistent = persistent;
	c->broker = broker;
	if (soak.grace > 0 && rnd(3) == 0) {
		/* A long session: the false-offline check needs sessions older than G. */
		c->close_after = now_s() + 5 + rnd(10);
	}
	snprintf(c->id, sizeof(c->id), "%s", id);
	c->mosq = mosquitto_new(c->id, !persistent, c);
	assert_non_null(c->mosq);
	mosquitto_username_pw_set(c->mosq, u->name, NULL);
	mosquitto_connect_callback_set(c->mosq, on_connect);
	mosquitto_disconnect_callback_set(c->mosq, on_disconnect);
	mosquitto_publish_callback_set(c->mosq, on_publish);
	if (rnd(3) == 0) {
		/* A Will on the user's own state that must never be applied. */
		soak.wills++;
		if (rnd(2) == 0) {
			snprintf(topic, sizeof(topic), "presence/%s/state", u->level);
			mosquitto_will_set(c->mosq, topic, 16, "{\"will\":\"WILL\"}", 1, true);
		} else {
			snprintf(topic, sizeof(topic), "presence/%s/state/will", u->level);
			mosquitto_will_set(c->mosq, topic, 4, "WILL", 1, true);
		}
	}
	if (mosquitto_connect_async(c->mosq, "127.0.0.1", broker_port(soak.b[broker]), 60) !=
	    MOSQ_ERR_SUCCESS) {
		fail_soak("cannot connect %s", c->id);
		mosquitto_destroy(c->mosq);
		free(c);
		return NULL;
	}
	c->phase = CONN_CONNECTING;
	soak.conns[soak.conn_count++] = c;
	return c;
}

/* Closes c: cleanly (DISCONNECT, then the library closes) or abruptly (no DISCONNECT: the
 * broker sees the socket close and sends the Will). */
static void conn_close(struct conn *c, bool clean)
{
	if (clean) {
		soak.clean_closes++;
		set_phase(c, CONN_CLOSING);
		if (mosquitto_disconnect(c->mosq) != MOSQ_ERR_SUCCESS) {
			set_phase(c, CONN_DEAD);
		}
		return;
	}
	soak.abrupt_closes++;
	shutdown(mosquitto_socket(c->mosq), SHUT_RDWR);
	set_phase(c, CONN_DEAD);
}

/* Writes the next value of c's key (taking a free key of its user first). */
static void conn_write(struct conn *c)
{
	char topic[256], payload[32];
	struct user *u = c->user;
	int len = 0;

	if (c->pending != 0) {
		return;
	}
	if (c->key < 0) {
		int k = (int)rnd(SOAK_KEYS);

		if (u->writer[k] != NULL) {
			return;
		}
		u->writer[k] = c;
		c->key = k;
	}
	snprintf(topic, sizeof(topic), "presence/%s/state/k%d", u->level, c->key);
	if (rnd(8) == 0) {
		/* An empty payload removes the key. */
		c->pending = UINT32_MAX;
	} else {
		c->pending = ++u->issued[c->key];
		len = snprintf(payload, sizeof(payload), "v%u", c->pending);
	}
	if (mosquitto_publish(c->mosq, &c->pending_mid, topic, len, payload, 1, false) !=
	    MOSQ_ERR_SUCCESS) {
		c->pending = 0;
	}
}

static void conn_free_dead(void)
{
	int kept = 0;

	for (int i = 0; i < soak.conn_count; i++) {
		struct conn *c = soak.conns[i];

		if (c->phase == CONN_DEAD) {
			mosquitto_destroy(c->mosq);
			free(c);
		} else {
			soak.conns[kept++] = c;
		}
	}
	soak.conn_count = kept;
}

/* ---- documents --------------------------------------------------------------------------- */

static long json_long(const cJSON *object, const char *name)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, name);

	return cJSON_IsNumber(item) ? (long)item->valuedouble : -1;
}

/* The user u was forgotten (an empty message): it has no document now, and its state went with
 * it (it had no session then). A connection of the user made since may already count as
 * connected here, and its writes acknowledged: its CONNACK and PUBACKs come on another socket
 * and can be read before this message. So each key may be absent or hold any value written to
 * it, until its next acknowledged write (as after a writer died with a write in flight). */
static void user_forgotten(struct user *u, struct view *v, bool retained)
{
	if (retained || v->forgotten || v->seq == 0) {
		fail_soak("%s was forgotten (an empty %smessage) while it had no document", u->name,
		          retained ? "retained " : "");
		return;
	}
	v->forgotten = true;
	v->sessions = 0;
	v->available = false;
	cJSON_Delete(v->state);
	v->state = NULL;
	for (int k = 0; k < SOAK_KEYS; k++) {
		u->may_hold_count[k] = -1;
	}
	soak.forgotten++;
}

/* FNV-1a of a payload. */
static uint64_t payload_hash(const struct mosquitto_message *msg)
{
	uint64_t h = 14695981039346656037u;

	for (int i = 0; i < msg->payloadlen; i++) {
		h = (h ^ ((const unsigned char *)msg->payload)[i]) * 1099511628211u;
	}
	return h;
}

/* Every broker must publish the same bytes for one seq of a user. */
static void compare_across_brokers(struct user *u, long seq, const struct mosquitto_message *msg)
{
	int slot = (int)(seq % RING);
	uint64_t h = payload_hash(msg);

	if (SOAK_BROKERS == 1) {
		return;
	}
	if (u->ring_seq[slot] == seq) {
		soak.compared++;
		if (u->ring_hash[slot] != h) {
			fail_soak("document %ld of %s differs between brokers: %.*s", seq, u->name,
			          msg->payloadlen, (const char *)msg->payload);
		}
		return;
	}
	u->ring_seq[slot] = seq;
	u->ring_hash[slot] = h;
}

/* An unavailable document on subscriber i: no connection of u may have been connected for
 * longer than G to a broker that ran all that time (and the subscriber's broker itself must
 * not have been held up meanwhile: it then publishes documents late). */
static void check_not_false_offline(struct user *u, int i, long seq)
{
	double now = now_s();

	if (soak.grace <= 0 || soak.stopped[i] || now - soak.back_at[i] < soak.grace) {
		return;
	}
	for (int k = 0; k < soak.conn_count; k++) {
		const struct conn *c = soak.conns[k];
		double since;

		if (c->user != u || c->phase != CONN_CONNECTED || soak.stopped[c->broker]) {
			continue;
		}
		since = c->connack_at > soak.back_at[c->broker] ? c->connack_at
		                                                : soak.back_at[c->broker];
		if (now - since > soak.grace) {
			if (explain_user != NULL && soak.failure[0] == '\0') {
				explain_user(u->name);
			}
			fail_soak("false offline: document %ld of %s on b%d says unavailable; its "
			          "session %s on b%d has been connected for %.1f s",
			          seq, u->name, i + 1, c->id, c->broker + 1, now - c->connack_at);
			return;
		}
	}
}

/* Checks one document of user u on subscriber i (from the stream, or retained when
 * retained). */
static void check_document(struct user *u, int i, const struct mosquitto_message *msg,
                           bool retained)
{
	struct view *v = &u->view[i];
	cJSON *doc;
	const cJSON *name, *state, *entry;
	const cJSON *available;
	long seq, sessions;
	bool seq_ok;

	if (msg->payloadlen == 0) {
		user_forgotten(u, v, retained);
		return;
	}
	doc = cJSON_ParseWithLength(msg->payload, (size_t)msg->payloadlen);
	if (doc == NULL) {
		fail_soak("document of %s is not JSON", u->name);
		return;
	}
	name = cJSON_GetObjectItemCaseSensitive(doc, "username");
	available = cJSON_GetObjectItemCaseSensitive(doc, "available");
	state = cJSON_GetObjectItemCaseSensitive(doc, "state");
	seq = json_long(doc, "seq");
	sessions = json_long(doc, "sessions");
	if (v->rebase) {
		/* A new subscriber: its first document of the user never goes back. */
		seq_ok = seq >= v->seq;
	} else if (retained) {
		seq_ok = seq == v->seq && !v->forgotten;
	} else {
		seq_ok = v->seq == 0 || (v->forgotten ? seq > v->seq : seq == v->seq + 1);
	}
	if (!cJSON_IsString(name) || strcmp(name->valuestring, u->name) != 0) {
		fail_soak("document on %s names another user", msg->topic);
	} else if (!cJSON_IsBool(available) || sessions < 0 ||
	           cJSON_IsTrue(available) != (sessions > 0)) {
		fail_soak("document %ld of %s: available %d with %ld sessions", seq, u->name,
		          cJSON_IsTrue(available), sessions);
	} else if (!seq_ok) {
		fail_soak("%s document of %s on b%d has seq %ld after %ld%s",
		          retained ? "retained" : "a", u->name, i + 1, seq, v->seq,
		          v->forgotten ? " (it was forgotten)" : "");
	} else if (!cJSON_IsObject(state)) {
		fail_soak("document %ld of %s has no state object", seq, u->name);
	}
	cJSON_ArrayForEach(entry, state)
	{
		unsigned k, value;

		if (sscanf(entry->string, "k%u", &k) != 1 || k >= SOAK_KEYS ||
		    !cJSON_IsString(entry) || sscanf(entry->valuestring, "v%u", &value) != 1 ||
		    value == 0 || value > u->issued[k]) {
			fail_soak("document %ld of %s holds %s, which the soak never wrote "
			          "(a Will applied?)",
			          seq, u->name, cJSON_PrintUnformatted(state));
			break;
		}
	}
	compare_across_brokers(u, seq, msg);
	if (retained && !v->rebase) {
		if (sessions != v->sessions || cJSON_IsTrue(available) != v->available ||
		    !cJSON_Compare(state, v->state, true)) {
			fail_soak("retained document %ld of %s on b%d differs from the last one "
			          "received",
			          seq, u->name, i + 1);
		}
		cJSON_Delete(doc);
		return;
	}
	if (!retained && !cJSON_IsTrue(available)) {
		check_not_false_offline(u, i, seq);
	}
	if (v->forgotten) {
		v->forgotten = false;
		soak.returned++;
	}
	v->rebase = false;
	v->seq = seq;
	v->sessions = sessions;
	v->available = cJSON_IsTrue(available);
	cJSON_Delete(v->state);
	v->state = cJSON_DetachItemFromObjectCaseSensitive(doc, "state");
	u->documents++;
	soak.documents++;
	cJSON_Delete(doc);
}

/* Finds the user of a document's topic; NULL (and a failure) when there is none. */
static struct user *document_user(const struct mosquitto_message *msg)
{
	struct user *u;

	if (strncmp(msg->topic, "presence/", 9) != 0) {
		return NULL;
	}
	u = user_by_level(msg->topic + 9);
	if (u == NULL) {
		fail_soak("document on %s for no user of the soak", msg->topic);
	}
	return u;
}

/* The presence/+ stream of the subscriber that watches the whole run on broker *obj (its
 * retained documents first, after a restart). */
static void on_document(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
	struct user *u = document_user(msg);

	(void)m;
	if (u != NULL) {
		check_document(u, *(const int *)obj, msg, msg->retain);
	}
}

/* The broker's count of retained messages, as last published ($SYS, every sys_interval);
 * -1 before the first. */
static long broker_retained = -1;

#define RETAINED_COUNT_TOPIC "$SYS/broker/retained messages/count"

/* The distinct $SYS topics seen. */
#define MAX_SYS_TOPICS 512
static char *sys_topics[MAX_SYS_TOPICS];
static int sys_topic_count;

/* What the check at the end counts on one broker. */
struct retained_check {
	int broker;
	long count;
};

/* The retained documents a new subscriber gets at the end (obj: a struct retained_check). */
static void on_retained(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
	struct retained_check *rc = obj;
	struct user *u;

	(void)m;
	if (strncmp(msg->topic, "$SYS/", 5) == 0) {
		/* The broker keeps its $SYS values retained too: count the topics. */
		bool seen = false;

		for (int i = 0; i < sys_topic_count && !seen; i++) {
			seen = strcmp(sys_topics[i], msg->topic) == 0;
		}
		if (!seen && sys_topic_count < MAX_SYS_TOPICS) {
			sys_topics[sys_topic_count] = strdup(msg->topic);
			assert_non_null(sys_topics[sys_topic_count]);
			sys_topic_count++;
		}
		if (strcmp(msg->topic, RETAINED_COUNT_TOPIC) == 0) {
			broker_retained = strtol(msg->payload, NULL, 10);
		}
		return;
	}
	u = document_user(msg);
	if (u != NULL && msg->retain) {
		check_document(u, rc->broker, msg, true);
		rc->count++;
	} else if (u != NULL) {
		fail_soak("a document of %s came after the churn ended", u->name);
	}
}

/* The subscriber takes the documents at QoS 0, as the benchmarks' does: Mosquitto 2.0.11 loses
 * track of a QoS 1 subscriber's inflight quota under sustained load (eclipse/mosquitto#2306,
 * fixed in 2.0.13), after which it delivers queued and new messages out of order. A long run
 * saw seq 336 of a user arrive right after 334, about 100 000 documents in. At QoS 0 an online
 * subscriber's messages are never queued, so they arrive in order or not at all (the broker
 * drops them only with max_queued_messages packets waiting, 100 000 here). */
static void on_sub_connect(struct mosquitto *m, void *obj, int rc)
{
	(void)obj;
	assert_int_equal(rc, 0);
	mosquitto_subscribe(m, NULL, "presence/+", 0);
}

static void on_check_connect(struct mosquitto *m, void *obj, int rc)
{
	(void)obj;
	assert_int_equal(rc, 0);
	mosquitto_subscribe(m, NULL, "$SYS/#", 0);
	mosquitto_subscribe(m, NULL, "presence/+", 0);
}

/* SUBACK of the subscriber of broker *obj: it is ready. */
static void on_sub_subscribe(struct mosquitto *m, void *obj, int mid, int count, const int *granted)
{
	(void)m;
	(void)mid;
	(void)count;
	(void)granted;
	soak.sub_ready[*(const int *)obj] = true;
}

/* SUBACK: the subscriber is ready. */
static void on_subscribe(struct mosquitto *m, void *obj, int mid, int count, const int *granted)
{
	(void)m;
	(void)obj;
	(void)mid;
	(void)count;
	(void)granted;
	*subscribed_flag = true;
}

/* ---- the event loop -------------------------------------------------------------------- */

/* Runs one round of I/O for the subscriber(s) and every connection, waiting at most
 * timeout_ms for something to happen. */
static void pump(struct mosquitto **extra, int extra_count, int timeout_ms)
{
	struct pollfd fds[MAX_CONNS + SOAK_BROKERS + 4];
	struct mosquitto *ms[MAX_CONNS + SOAK_BROKERS + 4];
	int n = 0;

	for (int i = 0; i < SOAK_BROKERS; i++) {
		if (soak.sub[i] != NULL) {
			ms[n++] = soak.sub[i];
		}
	}
	for (int i = 0; i < extra_count; i++) {
		ms[n++] = extra[i];
	}
	for (int i = 0; i < soak.conn_count; i++) {
		if (soak.conns[i]->phase != CONN_DEAD) {
			ms[n++] = soak.conns[i]->mosq;
		}
	}
	for (int i = 0; i < n; i++) {
		fds[i].fd = mosquitto_socket(ms[i]);
		fds[i].events = (short)(POLLIN | (mosquitto_want_write(ms[i]) ? POLLOUT : 0));
		fds[i].revents = 0;
	}
	if (poll(fds, (nfds_t)n, timeout_ms) < 0 && errno != EINTR) {
		fail_msg("poll: %s", strerror(errno));
	}
	for (int i = 0; i < n; i++) {
		if (fds[i].fd < 0) {
			continue;
		}
		if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
			mosquitto_loop_read(ms[i], 1);
		}
		if (mosquitto_socket(ms[i]) >= 0 && (fds[i].revents & POLLOUT)) {
			mosquitto_loop_write(ms[i], 1);
		}
		mosquitto_loop_misc(ms[i]);
	}
	conn_free_dead();
}

static struct conn *random_connected(void)
{
	for (int tries = 0; tries < 8 && soak.conn_count > 0; tries++) {
		struct conn *c = soak.conns[rnd((unsigned)soak.conn_count)];

		if (c->phase == CONN_CONNECTED) {
			return c;
		}
	}
	return NULL;
}

/* One random step of churn. */
static void churn(int target)
{
	struct conn *c;
	char id[64];
	unsigned dice = rnd(100);

	if (soak.conn_count < target && dice < 40) {
		struct user *u = &soak.users[rnd((unsigned)soak.regular)];

		if (SOAK_BROKERS == 1 && rnd(10) == 0 &&
		    soak.user_count < soak.regular + ONCE_MAX) {
			/* A user that comes once. */
			u = &soak.users[soak.user_count++];
			snprintf(u->name, sizeof(u->name), "once%ld", soak.once);
			encode(u->name, u->level);
			snprintf(id, sizeof(id), "o%lu", soak.once++);
			conn_start(u, id, false, -1);
		} else if (rnd(5) == 0) {
			/* A persistent session from a small pool: resumed when its id comes back.
			 */
			snprintf(id, sizeof(id), "p%ld-%u", (long)(u - soak.users), rnd(2));
			for (int i = 0; i < soak.conn_count; i++) {
				if (strcmp(soak.conns[i]->id, id) == 0) {
					return;
				}
			}
			soak.resumes++;
			conn_start(u, id, true, -1);
		} else if (rnd(12) == 0) {
			/* Two CONNECTs racing with one fresh client id. */
			snprintf(id, sizeof(id), "r%lu", soak.serial++);
			soak.races++;
			c = conn_start(u, id, false, -1);
			if (c != NULL) {
				conn_start(u, id, false, c->broker);
			}
		} else {
			snprintf(id, sizeof(id), "c%lu", soak.serial++);
			conn_start(u, id, false, -1);
		}
		return;
	}
	c = random_connected();
	if (c == NULL) {
		return;
	}
	if (dice < 75) {
		/* Writes are the most frequent step: a few connections write at once. */
		conn_write(c);
		for (int i = 0; i < 3 && (c = random_connected()) != NULL; i++) {
			conn_write(c);
		}
	} else if (now_s() < c->close_after) {
		/* A long session, not closed yet. */
	} else if (dice < 84) {
		conn_close(c, true);
	} else if (dice < 92) {
		conn_close(c, false);
	} else if (!c->persistent && !soak.stopped[c->broker]) {
		/* Take-over: a new connection of the same user with the same client id (on the
		 * same broker: on another, it would be another session). */
		soak.takeovers++;
		snprintf(id, sizeof(id), "%s", c->id);
		conn_start(c->user, id, false, c->broker);
	}
}

/* True when every user's last document agrees with the truth. Names the first that does not
 * in why. */
static bool converged(char *why, size_t size)
{
	for (int n = 0; n < soak.user_count * SOAK_BROKERS; n++) {
		struct user *u = &soak.users[n / SOAK_BROKERS];
		int b = n % SOAK_BROKERS;
		const struct view *v = &u->view[b];

		if (v->seq == 0 || v->forgotten) {
			if (u->connected > 0) {
				snprintf(why, size, "%s has %d sessions and no document on b%d",
				         u->name, u->connected, b + 1);
				return false;
			}
			continue;
		}
		if (v->seq != u->view[0].seq) {
			snprintf(why, size, "%s: the last document on b%d is %ld, on b1 %ld",
			         u->name, b + 1, v->seq, u->view[0].seq);
			return false;
		}
		if (v->sessions != u->connected || v->available != (u->connected > 0)) {
			snprintf(why, size,
			         "%s: document on b%d says %ld sessions, the soak counts %d",
			         u->name, b + 1, v->sessions, u->connected);
			return false;
		}
		for (int k = 0; k < SOAK_KEYS; k++) {
			char key[8];
			const cJSON *item;
			unsigned value = 0;

			snprintf(key, sizeof(key), "k%d", k);
			item = cJSON_GetObjectItemCaseSensitive(v->state, key);
			if (item != NULL) {
				sscanf(item->valuestring, "v%u", &value);
			}
			if (u->may_hold_count[k] != 0 ? !key_may_hold(u, k, value) : value != 0) {
				snprintf(why, size,
				         "%s: %s is v%u, which is not what the soak wrote last",
				         u->name, key, value);
				return false;
			}
		}
	}
	return true;
}

/* The index of each broker, for the callbacks of its subscriber. */
static int broker_index[SOAK_BROKERS];

/* Connects the subscriber of broker i (not waiting for it). */
static void subscriber_start(int i)
{
	char id[32];

	broker_index[i] = i;
	snprintf(id, sizeof(id), "soak-subscriber-%d", i + 1);
	soak.sub[i] = mosquitto_new(id, true, &broker_index[i]);
	assert_non_null(soak.sub[i]);
	soak.sub_ready[i] = false;
	mosquitto_connect_callback_set(soak.sub[i], on_sub_connect);
	mosquitto_subscribe_callback_set(soak.sub[i], on_sub_subscribe);
	mosquitto_message_callback_set(soak.sub[i], on_document);
	assert_int_equal(mosquitto_connect(soak.sub[i], "127.0.0.1", broker_port(soak.b[i]), 60),
	                 0);
}

/* Pumps (bounded) until every subscriber has its SUBACK. */
static void subscribers_await(void)
{
	double start = now_s();
	bool ready = false;

	while (!ready && now_s() - start < 10) {
		pump(NULL, 0, 100);
		ready = true;
		for (int i = 0; i < SOAK_BROKERS; i++) {
			ready &= soak.sub_ready[i];
		}
	}
	assert_true(ready);
}

/* No ghost: a user with no connection (connected, connecting or closing) for longer than G,
 * counted from the last moment a broker came back from a fault, is shown unavailable on every
 * subscriber whose broker was not held up meanwhile. */
static void check_ghosts(void)
{
	double now = now_s();

	if (soak.grace <= 0) {
		return;
	}
	for (int n = 0; n < soak.user_count; n++) {
		struct user *u = &soak.users[n];
		bool active = u->connected > 0;

		for (int k = 0; k < soak.conn_count && !active; k++) {
			active = soak.conns[k]->user == u && soak.conns[k]->phase != CONN_DEAD;
		}
		if (active) {
			u->idle_since = 0;
			continue;
		}
		if (u->idle_since == 0) {
			u->idle_since = now;
			continue;
		}
		if (now - (u->idle_since > soak.fault_end ? u->idle_since : soak.fault_end) <=
		        soak.grace ||
		    (offline_held != NULL && offline_held())) {
			continue;
		}
		for (int i = 0; i < SOAK_BROKERS; i++) {
			if (soak.sub_ready[i] && !soak.stopped[i] && !soak.down[i] &&
			    now - soak.back_at[i] > soak.grace && u->view[i].available) {
				if (explain_user != NULL && soak.failure[0] == '\0') {
					explain_user(u->name);
				}
				fail_soak(
				    "ghost: %s has had no session for %.1f s and is still "
				    "available on b%d (document %ld; last documents on b1..b%d: "
				    "%ld %ld %ld; %.1f s into the run, the last fault ended "
				    "%.1f s ago)",
				    u->name, now - u->idle_since, i + 1, u->view[i].seq,
				    SOAK_BROKERS, u->view[0].seq,
				    u->view[SOAK_BROKERS > 1 ? 1 : 0].seq,
				    u->view[SOAK_BROKERS > 2 ? 2 : 0].seq, now - soak.started,
				    now - soak.fault_end);
				return;
			}
		}
	}
}

#ifdef SOAK_CLUSTER
/* The cluster's faults, one at a time, in turn. */
enum fault { FAULT_STOP_LONG, FAULT_PAUSE, FAULT_KILL, FAULT_REDIS, FAULT_STOP_SHORT, FAULTS };

#define HEARTBEAT_MS 250
#define LEASE_MS 1000
/* The longest fault: a broker stopped, or Redis paused, for a lease and a half. */
#define FAULT_MS (LEASE_MS + 500)

static struct cluster cl;
static struct redis *redis;
static unsigned long faults;
/* The fault under way (FAULTS: none), its victim and when it ends. */
static enum fault fault = FAULTS;
static int victim;
static double fault_until;
/* Which brokers were stopped past their lease or killed: the only ones that may be declared
 * dead. */
static bool may_die[SOAK_BROKERS];

static const char *const fault_names[FAULTS] = {"broker stopped past its lease", "Redis paused",
                                                "broker killed", "Redis restarted",
                                                "broker stopped 200 ms"};

/* Prints the user's hash, its place in the offline queue, the barrier and each broker's
 * confirmation, and the last fault. */
static void explain(const char *name)
{
	static const char *const commands[] = {"HGETALL " K "u:%s",
	                                       "ZSCORE " K "grace %s",
	                                       "GET " K "barrier",
	                                       "HGETALL " K "synced",
	                                       "ZRANGE " K "live 0 -1 WITHSCORES",
	                                       "TIME"};

	printf("soak: the last fault was %s (b%d)\n",
	       faults > 0 ? fault_names[(faults - 1) % FAULTS] : "none", victim + 1);
	for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++) {
		redisReply *reply = redis_cmd(redis, commands[k], name);

		printf("soak: %s:", commands[k]);
		if (reply != NULL && reply->type == REDIS_REPLY_ARRAY) {
			for (size_t e = 0; e < reply->elements; e++) {
				printf(" %s", reply->element[e]->str != NULL
				                  ? reply->element[e]->str
				                  : "?");
			}
		} else if (reply != NULL && reply->str != NULL) {
			printf(" %s", reply->str);
		} else if (reply != NULL && reply->type == REDIS_REPLY_INTEGER) {
			printf(" %lld", reply->integer);
		}
		printf("\n");
		freeReplyObject(reply);
	}
}

/* When the cluster's hold last ended (Redis time, ms), read at most every 100 ms. */
static bool held(void)
{
	static double checked;
	static bool answer;
	redisReply *hold, *time;
	long long until, now_ms;

	if (fault != FAULTS) {
		/* Redis may be paused or gone: the fault's own end counts. */
		return true;
	}
	if (now_s() - checked < 0.1) {
		return answer;
	}
	checked = now_s();
	hold = redis_cmd(redis, "GET " K "hold");
	time = redis_cmd(redis, "TIME");
	until = hold != NULL && hold->type == REDIS_REPLY_STRING ? atoll(hold->str) : 0;
	now_ms = time != NULL && time->type == REDIS_REPLY_ARRAY && time->elements == 2
	             ? atoll(time->element[0]->str) * 1000 + atoll(time->element[1]->str) / 1000
	             : 0;
	freeReplyObject(hold);
	freeReplyObject(time);
	answer = now_ms - until < (long long)(soak.grace * 1000);
	return answer;
}

static void broker_back(int i)
{
	soak.back_at[i] = now_s();
	soak.fault_end = soak.back_at[i];
}

/* Starts the next fault. */
static void fault_start(void)
{
	fault = (enum fault)(faults % FAULTS);
	victim = (int)((faults / FAULTS + faults) % SOAK_BROKERS);
	faults++;
	switch (fault) {
	case FAULT_STOP_LONG:
	case FAULT_STOP_SHORT:
		if (fault == FAULT_STOP_LONG) {
			soak.stops_long++;
			may_die[victim] = true;
		} else {
			soak.stops_short++;
		}
		soak.stopped[victim] = true;
		kill(broker_pid(soak.b[victim]), SIGSTOP);
		fault_until = now_s() + (fault == FAULT_STOP_LONG ? FAULT_MS : 200) / 1000.0;
		break;
	case FAULT_PAUSE:
		soak.pauses++;
		freeReplyObject(redis_cmd(redis, "CLIENT PAUSE %d ALL", FAULT_MS));
		fault_until = now_s() + FAULT_MS / 1000.0;
		break;
	case FAULT_REDIS:
		/* Every write is in the AOF (fsync always): started again, Redis has it all. */
		soak.redis_restarts++;
		redis_kill(redis);
		fault_until = now_s() + 1.0;
		break;
	case FAULT_KILL:
		/* kill -9: its connections close with it (the soak counts them gone now, before
		 * their sockets say so); started again on its port, it waits for its old lease
		 * to run out, registers, and takes every document before it accepts clients. */
		soak.kills++;
		may_die[victim] = true;
		broker_crash(soak.b[victim]);
		soak.down[victim] = true;
		for (int k = 0; k < soak.conn_count; k++) {
			if (soak.conns[k]->broker == victim) {
				set_phase(soak.conns[k], CONN_DEAD);
			}
		}
		mosquitto_destroy(soak.sub[victim]);
		soak.sub[victim] = NULL;
		soak.sub_ready[victim] = false;
		conn_free_dead();
		broker_restart(&soak.b[victim], cl.conf[victim], false);
		cl.b[victim] = soak.b[victim];
		await_registered(&cl, victim);
		soak.down[victim] = false;
		for (int n = 0; n < soak.user_count; n++) {
			soak.users[n].view[victim].rebase = true;
		}
		subscriber_start(victim);
		broker_back(victim);
		fault_until = now_s();
		break;
	case FAULTS:
		break;
	}
}

/* Ends the fault under way when its time has come (or now, with force). */
static void fault_step(bool force)
{
	if (fault == FAULTS || (!force && now_s() < fault_until)) {
		return;
	}
	switch (fault) {
	case FAULT_STOP_LONG:
	case FAULT_STOP_SHORT:
		kill(broker_pid(soak.b[victim]), SIGCONT);
		soak.stopped[victim] = false;
		broker_back(victim);
		break;
	case FAULT_REDIS:
		redis_launch(redis);
		soak.fault_end = now_s();
		break;
	case FAULT_PAUSE:
		soak.fault_end = now_s();
		break;
	case FAULT_KILL:
	case FAULTS:
		break;
	}
	fault = FAULTS;
}

/* Every "declared broker bN dead" in the brokers' logs names a broker that was stopped past
 * its lease or killed. */
static void check_deaths(void)
{
	for (int i = 0; i < SOAK_BROKERS; i++) {
		char *log = broker_log(soak.b[i]);
		const char *p = log;
		int n;

		while ((p = strstr(p, "declared broker b")) != NULL) {
			p += strlen("declared broker b");
			n = atoi(p) - 1;
			if (n < 0 || n >= SOAK_BROKERS || !may_die[n]) {
				fail_soak(
				    "b%d declared b%d dead, which was neither stopped past its "
				    "lease nor killed",
				    i + 1, n + 1);
			}
		}
		free(log);
	}
}
#endif

static void soak_run(void **state)
{
	int seconds = env_int("SOAK_SECONDS", SOAK_BROKERS > 1 ? 30 : 10);
	int user_count = env_int("SOAK_USERS", 100);
	int target = env_int("SOAK_CONNECTIONS", 60);
	static const char *const odd[] = {"a/b",    "plus+",      "hash#", "pct%",
	                                  "sp ace", "zo\xc3\xab", "%2F"};
	char options[1024];
	double start, end, next_freeze, converged_after, steps_done = 0;
	char why[256] = "";
	long users_with_documents[SOAK_BROKERS] = {0};

	(void)state;
	/* No write limit: the soak's truth is that every acknowledged write applies. */
	snprintf(options, sizeof(options),
	         "%s"
	         "plugin_opt_keep_state true\nplugin_opt_metrics_interval 0\n"
	         "plugin_opt_max_users %d\nplugin_opt_max_writes_per_second 0\n"
	         "max_queued_messages 100000\nsys_interval 1\n"
	         "log_type error\nlog_type warning\n",
	         SOAK_BROKERS > 1 ? "" : "plugin_opt_auth allow\nplugin_opt_acl allow\n",
	         SOAK_BROKERS > 1 ? user_count * 4 : user_count + 20);
	rnd_state = (uint64_t)env_int("SOAK_SEED", 11) * 0x9E3779B97F4A7C15u + 1;
#ifdef SOAK_CLUSTER
	snprintf(options + strlen(options), sizeof(options) - strlen(options),
	         "plugin_opt_cluster_heartbeat_ms %d\nplugin_opt_cluster_lease_ms %d\n",
	         HEARTBEAT_MS, LEASE_MS);
	redis = redis_start(true);
	cl.redis = redis;
	for (int i = 0; i < SOAK_BROKERS; i++) {
		cl.conf[i] = cluster_conf(redis, i, options);
		cl.b[i] = soak.b[i] = broker_start(cl.conf[i]);
		await_registered(&cl, i);
	}
	soak.grace = 2 * FAULT_MS / 1000.0 + 1;
	explain_user = explain;
	offline_held = held;
	soak.steps = env_int("SOAK_STEPS", 300);
#else
	{
		char *conf = broker_conf(options);

		soak.b[0] = broker_start(conf);
		free(conf);
	}
#endif
	soak.user_count = user_count;
	soak.regular = user_count;
	soak.users = calloc((size_t)user_count + ONCE_MAX, sizeof(*soak.users));
	assert_non_null(soak.users);
	for (int i = 0; i < user_count; i++) {
		if (i % 5 == 4) {
			snprintf(soak.users[i].name, sizeof(soak.users[i].name), "%s%d",
			         odd[(i / 5) % 7], i);
		} else {
			snprintf(soak.users[i].name, sizeof(soak.users[i].name), "u%d", i);
		}
		encode(soak.users[i].name, soak.users[i].level);
	}
	for (int i = 0; i < SOAK_BROKERS; i++) {
		subscriber_start(i);
	}
	subscribers_await();

	start = now_s();
	soak.started = start;
	end = start + seconds;
	next_freeze = start + 2;
	while (now_s() < end && soak.failure[0] == '\0') {
		double now = now_s();
		int steps = 8;

		if (soak.steps > 0) {
			/* Paced: as many steps as the rate allows since the start. */
			steps = (int)((now - start) * soak.steps - steps_done);
			if (steps > 50) {
				/* After a fault that held the loop up: no burst. */
				steps = 50;
				steps_done = (now - start) * soak.steps;
			} else {
				steps_done += steps;
			}
		}
		for (int i = 0; i < steps; i++) {
			churn(target);
		}
		pump(NULL, 0, 5);
		check_ghosts();
#ifdef SOAK_CLUSTER
		fault_step(false);
		/* Faults every few seconds, the last one over well before the end. */
		if (fault == FAULTS && now >= next_freeze && now < end - soak.grace) {
			fault_start();
			next_freeze = now + 4;
		}
#else
		if (now >= next_freeze) {
			double until = now_s() + 0.2;

			soak.freezes++;
			kill(broker_pid(soak.b[0]), SIGSTOP);
			while (now_s() < until) {
				churn(target);
				pump(NULL, 0, 10);
			}
			kill(broker_pid(soak.b[0]), SIGCONT);
			next_freeze = now_s() + 2;
		}
#endif
	}
#ifdef SOAK_CLUSTER
	fault_step(true);
#endif

	/* Quiesce: no new connections; half of the rest close cleanly; wait for handshakes,
	 * closes and writes in flight. */
	for (int i = 0; i < soak.conn_count; i++) {
		if (soak.conns[i]->phase == CONN_CONNECTED && rnd(2) == 0) {
			conn_close(soak.conns[i], true);
		}
	}
	start = now_s();
	for (;;) {
		bool busy = false;

		for (int i = 0; i < soak.conn_count; i++) {
			struct conn *c = soak.conns[i];

			busy |= c->phase == CONN_CONNECTING || c->phase == CONN_CLOSING ||
			        c->pending != 0;
		}
		if ((!busy && converged(why, sizeof(why))) || soak.failure[0] != '\0' ||
		    now_s() - start > 30) {
			break;
		}
		pump(NULL, 0, 50);
		check_ghosts();
	}
	converged_after = now_s() - start;
	if (soak.failure[0] == '\0' && !converged(why, sizeof(why))) {
		fail_soak("no agreement with the truth 30 s after the churn stopped: %s", why);
	}

	/* On every broker: the retained documents are the last ones received, one for every
	 * user that has any, and nothing else is retained (no Will below presence/, which no
	 * subscriber could read with the plugin loaded), but $SYS. */
	for (int b = 0; b < SOAK_BROKERS && soak.failure[0] == '\0'; b++) {
		struct retained_check rc = {.broker = b};
		struct mosquitto *check;
		bool check_ready = false;

		users_with_documents[b] = 0;
		for (int i = 0; i < soak.user_count; i++) {
			users_with_documents[b] +=
			    soak.users[i].view[b].seq > 0 && !soak.users[i].view[b].forgotten;
		}
		broker_retained = -1;
		for (int i = 0; i < sys_topic_count; i++) {
			free(sys_topics[i]);
		}
		sys_topic_count = 0;
		check = mosquitto_new("soak-check", true, &rc);
		assert_non_null(check);
		mosquitto_connect_callback_set(check, on_check_connect);
		mosquitto_subscribe_callback_set(check, on_subscribe);
		mosquitto_message_callback_set(check, on_retained);
		subscribed_flag = &check_ready;
		assert_int_equal(mosquitto_connect(check, "127.0.0.1", broker_port(soak.b[b]), 60),
		                 0);
		start = now_s();
		while ((!check_ready || rc.count < users_with_documents[b] ||
		        broker_retained != users_with_documents[b] + sys_topic_count) &&
		       now_s() - start < 10 && soak.failure[0] == '\0') {
			pump(&check, 1, 100);
		}
		if (rc.count != users_with_documents[b]) {
			fail_soak("b%d: %ld retained documents for %ld users with documents", b + 1,
			          rc.count, users_with_documents[b]);
		}
		if (broker_retained != users_with_documents[b] + sys_topic_count) {
			fail_soak("b%d holds %ld retained messages for %ld documents and %d $SYS "
			          "topics (a Will retained on a state topic?)",
			          b + 1, broker_retained, users_with_documents[b], sys_topic_count);
		}
		mosquitto_disconnect(check);
		mosquitto_destroy(check);
	}

	printf("soak: %d s, %d brokers, %d users and %lu that came once (%ld with documents at "
	       "the end), %lu sessions, %lu clean and %lu abrupt closes, %lu take-overs, %lu "
	       "races, %lu persistent connects, %lu closed by the broker, %lu Wills, %lu writes "
	       "acknowledged, %lu documents checked, %lu freezes, %lu users forgotten, %lu came "
	       "back; agreement with the truth %.2f s after the churn stopped\n",
	       seconds, SOAK_BROKERS, user_count, soak.once, users_with_documents[0], soak.sessions,
	       soak.clean_closes, soak.abrupt_closes, soak.takeovers, soak.races, soak.resumes,
	       soak.broker_closes, soak.wills, soak.writes_acked, soak.documents, soak.freezes,
	       soak.forgotten, soak.returned, converged_after);
#ifdef SOAK_CLUSTER
	printf("soak: faults: %lu brokers stopped past the lease, %lu for 200 ms, %lu killed and "
	       "started again, %lu Redis pauses of %d ms, %lu Redis restarts from the AOF; %lu "
	       "documents compared across brokers; G = %.1f s\n",
	       soak.stops_long, soak.stops_short, soak.kills, soak.pauses, FAULT_MS,
	       soak.redis_restarts, soak.compared, soak.grace);
	check_deaths();
	if (soak.failure[0] == '\0' && faults < FAULTS) {
		fail_soak("only %lu faults in %d s: run longer (SOAK_SECONDS)", faults, seconds);
	}
#else
	if (soak.failure[0] == '\0' && soak.forgotten == 0) {
		fail_soak("nobody was forgotten: %lu users came once, max_users is %d", soak.once,
		          user_count + 20);
	}
#endif
	if (soak.failure[0] != '\0') {
		fail_msg("%s", soak.failure);
	}

	for (int i = 0; i < soak.conn_count; i++) {
		mosquitto_destroy(soak.conns[i]->mosq);
		free(soak.conns[i]);
	}
	for (int b = 0; b < SOAK_BROKERS; b++) {
		mosquitto_disconnect(soak.sub[b]);
		mosquitto_destroy(soak.sub[b]);
		for (int i = 0; i < soak.user_count; i++) {
			cJSON_Delete(soak.users[i].view[b].state);
		}
	}
	free(soak.users);
	for (int i = 0; i < sys_topic_count; i++) {
		free(sys_topics[i]);
	}
#ifdef SOAK_CLUSTER
	cluster_stop(&cl);
#else
	broker_stop(soak.b[0]);
#endif
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(soak_run, harness_teardown),
	};

	mosquitto_lib_init();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
