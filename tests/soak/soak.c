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
 *
 * Built with SOAK_VISIBILITY (the executable visibility_soak, test integration.visibility_soak):
 * the same churn on one broker with `visibility group` (SOAK_VISIBILITY=everyone: `visibility
 * everyone`), a groups_file, group_from_username "/" and see_everyone, stepped: one step of
 * churn at a time, and after each the soak waits until it has settled. A step may also be a
 * privacy write of a connected session (P/U/privacy: everyone, group, nobody, a list of 0..6
 * contacts drawn from watchers and users, an empty payload, or one the plugin must reject), or,
 * one step in 150, a new groups file and SIGHUP (a quarter of the users move to other groups;
 * one time in four the file is wrong and the old groups must stay). Seven watchers subscribe
 * to presence/+: the see_everyone "dashboard" (the subscriber of the checks above), watchers in
 * one group, in two groups (to presence/#: it must get nothing but documents), in a group by
 * their username's prefix, one without a group, an anonymous one, and u0 (a user watching
 * itself). The soak keeps a model of issue 18's rule (may W see U: W is U, W in see_everyone,
 * then U's choice narrowing the operator's rule). Settled means: every connection's handshake,
 * close and write done, the dashboard's documents agreeing with the truth, then a marker user (in
 * every group) writes its state and the dashboard receives that document, then the marker publishes
 * on soak/marker and every watcher receives it; each watcher then has everything the step made the
 * broker send it. Checked:
 * - on every message: a watcher never receives a document of a user the model says it may not
 *   see at that moment, nor a zero-length message of a user it holds no document of; a
 *   document of a user it holds goes forward in seq, and one of a user it gains sight of has
 *   seq >= the wall clock (ms) at the step's start (nothing learnt of the hidden time);
 * - after every step: each watcher's view (user -> last document, a zero-length message
 *   deleting the entry) is exactly the dashboard's documents of the users it may see, byte for
 *   byte; every 100 steps and at the end, a new client of each watcher's identity subscribing
 *   to presence/+ receives exactly those documents retained.
 * A failure names the step and SOAK_SEED, which replays the run's choices.
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

#ifdef SOAK_VISIBILITY
#define VISIBILITY true
#else
#define VISIBILITY false
#endif
/* The visibility soak: the most contacts in one privacy write, the groups of the groups file
 * (bit i of a member set: group_names[i]; "a" is also the group of "a/..." usernames), the
 * watchers besides the dashboard. */
#define LIST_MAX 6
#define GROUP_COUNT 4
#define WATCHERS 6
/* The longest a step may take to settle (s). */
#define SETTLE_S 10

/* A user's choice on P/U/privacy, as the model holds it. */
enum choice { CHOICE_EVERYONE, CHOICE_GROUP, CHOICE_NOBODY, CHOICE_LIST };

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
	/* Visibility soak: the user's choice and contacts (names of watchers and users), its
	 * groups from the groups file (bits), the step of its last privacy write; the dashboard's
	 * last document of it (NULL: none, or forgotten since) and the step that document came in
	 * after none. */
	enum choice choice;
	const char *contacts[LIST_MAX];
	int contact_count;
	unsigned groups;
	unsigned long privacy_step;
	char *ref;
	int ref_len;
	unsigned long born_step;
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
	/* A privacy write not acknowledged yet, and its mid. */
	bool privacy_pending;
	int privacy_mid;
};

/* A watcher of the visibility soak: a subscriber of one identity (NULL: anonymous) to filter
 * (presence/+, or presence/#: then nothing but documents may come either) and its view, per
 * user index: the last document (NULL: none) and its seq; the last marker (soak/marker) it
 * received. */
struct watcher {
	const char *name;
	unsigned groups;
	const char *filter;
	struct mosquitto *mosq;
	bool ready;
	unsigned long marker;
	char **doc;
	int *doc_len;
	long *seq;
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
	/* Visibility soak: the steps, the step's start on the wall clock (ms), the seed, the
	 * watchers, the marker's client and the last marker document the dashboard received;
	 * figures. */
	unsigned long step;
	long long step_wall_ms;
	/* The step of the last groups file reload (SIGHUP), and how many the broker logged. */
	unsigned long reload_step;
	unsigned long reloads, bad_reloads;
	int seed;
	struct watcher watchers[WATCHERS];
	struct mosquitto *marker;
	unsigned long marker_doc;
	unsigned long privacy_writes, privacy_rejects, deliveries, deletions, gains, fresh_checks;
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

/* ---- the visibility model ---------------------------------------------------------------- */

/* The groups of the groups file; "a" is also the group of usernames "a/...". */
static const char *const group_names[GROUP_COUNT] = {"g0", "g1", "g2", "a"};
static const char *const choice_names[] = {"everyone", "group", "nobody", "list"};
#define SEE_EVERYONE "dashboard"
#define MARKER_NAME "soak-marker"
#define MARKER_TOPIC "soak/marker"
/* The operator's rule: visibility group (else everyone). */
static bool rule_group = true;
/* The marker user: in every group, never writes its privacy. */
static struct user marker_user;
/* The names privacy lists draw from: the named watchers and the regular users. */
static const char **contact_pool;
static int contact_pool_count;

/* The group a username has from its prefix (group_from_username "/"): the bit of that group of
 * the file (0: none, or a group the file does not name; *prefix_len tells which). */
static unsigned prefix_group(const char *name, size_t *prefix_len)
{
	const char *sep = name != NULL ? strchr(name, '/') : NULL;

	*prefix_len = 0;
	if (sep == NULL || sep == name) {
		return 0;
	}
	*prefix_len = (size_t)(sep - name);
	for (int g = 0; g < GROUP_COUNT; g++) {
		if (strlen(group_names[g]) == *prefix_len &&
		    strncmp(group_names[g], name, *prefix_len) == 0) {
			return 1u << g;
		}
	}
	return 0;
}

/* Whether a and b (NULL: anonymous, in no group) share a group, from the file (ga, gb) or from
 * their names' prefixes. */
static bool share_group(const char *a, unsigned ga, const char *b, unsigned gb)
{
	size_t la, lb;

	if (a == NULL || b == NULL) {
		return false;
	}
	ga |= prefix_group(a, &la);
	gb |= prefix_group(b, &lb);
	return (ga & gb) != 0 || (la > 0 && la == lb && strncmp(a, b, la) == 0);
}

/* The contract's rule: may the watcher w (NULL: anonymous) in groups wg see u now? */
static bool may_see(const char *w, unsigned wg, const struct user *u)
{
	bool listed = false;

	if (w != NULL && (strcmp(w, u->name) == 0 || strcmp(w, SEE_EVERYONE) == 0)) {
		return true;
	}
	switch (u->choice) {
	case CHOICE_NOBODY:
		return false;
	case CHOICE_LIST:
		for (int i = 0; i < u->contact_count && w != NULL && !listed; i++) {
			listed = strcmp(u->contacts[i], w) == 0;
		}
		return listed && (!rule_group || share_group(w, wg, u->name, u->groups));
	case CHOICE_GROUP:
		return share_group(w, wg, u->name, u->groups);
	case CHOICE_EVERYONE:
		break;
	}
	return !rule_group || share_group(w, wg, u->name, u->groups);
}

/* What the model holds of u, for a failure: its choice, contacts, groups. */
static const char *describe(const struct user *u, char *buf, size_t size)
{
	size_t n =
	    (size_t)snprintf(buf, size, "%s's choice is %s", u->name, choice_names[u->choice]);

	for (int i = 0; i < u->contact_count && n < size; i++) {
		n += (size_t)snprintf(buf + n, size - n, "%s%s", i == 0 ? " [" : ",",
		                      u->contacts[i]);
	}
	if (n < size) {
		n += (size_t)snprintf(
		    buf + n, size - n, "%s (written at step %lu), file groups %#x",
		    u->choice == CHOICE_LIST ? (u->contact_count > 0 ? "]" : " []") : "",
		    u->privacy_step, u->groups);
	}
	return buf;
}

static const char *watcher_name(const struct watcher *w)
{
	return w->name != NULL ? w->name : "(anonymous)";
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
	if (c->privacy_pending && mid == c->privacy_mid) {
		c->privacy_pending = false;
		return;
	}
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

/* A privacy write of c's user (visibility soak): a random choice, an empty payload (everyone)
 * or, one time in ten, one the plugin must reject (which changes nothing). The model takes the
 * choice when it is sent: from then on, nothing the model forbids may arrive. */
static void privacy_write(struct conn *c)
{
	static const char *const rejected[] = {"{\"visible_to\":\"friends\"}",
	                                       "{\"visible_to\":\"group\",\"since\":1}",
	                                       "visible",
	                                       "{\"visible_to\":[\"\"]}",
	                                       "{\"visible_to\":[1]}",
	                                       "[\"everyone\"]"};
	struct user *u = c->user;
	char topic[256], payload[2048];
	enum choice choice = CHOICE_EVERYONE;
	const char *contacts[LIST_MAX];
	int count = 0, len = 0;
	unsigned dice = rnd(20);
	bool valid = true;

	if (c->privacy_pending) {
		return;
	}
	if (dice == 0) {
		valid = false;
		len = snprintf(payload, sizeof(payload), "%s", rejected[rnd(6)]);
	} else if (dice == 1) {
		/* 101 names: one too many. */
		valid = false;
		len = snprintf(payload, sizeof(payload), "{\"visible_to\":[");
		for (int i = 0; i <= 100; i++) {
			len += snprintf(payload + len, sizeof(payload) - (size_t)len, "%s\"n%d\"",
			                i > 0 ? "," : "", i);
		}
		len += snprintf(payload + len, sizeof(payload) - (size_t)len, "]}");
	} else if (dice > 2) {
		/* (dice 2: an empty payload, everyone.) */
		choice = (enum choice)rnd(4);
		if (choice == CHOICE_LIST) {
			int n = (int)rnd(LIST_MAX + 1);

			len = snprintf(payload, sizeof(payload), "{\"visible_to\":[");
			for (int i = 0; i < n; i++) {
				const char *name = contact_pool[rnd((unsigned)contact_pool_count)];
				bool seen = false;

				/* Duplicates are merged. */
				len += snprintf(payload + len, sizeof(payload) - (size_t)len,
				                "%s\"%s\"", i > 0 ? "," : "", name);
				for (int k = 0; k < count && !seen; k++) {
					seen = strcmp(contacts[k], name) == 0;
				}
				if (!seen) {
					contacts[count++] = name;
				}
			}
			len += snprintf(payload + len, sizeof(payload) - (size_t)len, "]}");
		} else {
			len = snprintf(payload, sizeof(payload), "{\"visible_to\":\"%s\"}",
			               choice_names[choice]);
		}
	}
	snprintf(topic, sizeof(topic), "presence/%s/privacy", u->level);
	if (mosquitto_publish(c->mosq, &c->privacy_mid, topic, len, payload, 1, false) !=
	    MOSQ_ERR_SUCCESS) {
		return;
	}
	c->privacy_pending = true;
	soak.privacy_writes++;
	if (!valid) {
		soak.privacy_rejects++;
		return;
	}
	u->choice = choice;
	u->contact_count = count;
	memcpy(u->contacts, contacts, sizeof(contacts[0]) * (size_t)count);
	u->privacy_step = soak.step;
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
		/* Visibility: a user that became visible to more watchers is published again
		 * with seq max(seq + 1, the wall clock in ms). */
		seq_ok |= VISIBILITY && !v->forgotten &&
		          (u->privacy_step == soak.step || soak.reload_step == soak.step) &&
		          seq > v->seq && seq >= soak.step_wall_ms;
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

/* Visibility soak: the dashboard's last document of u is the reference every watcher that may
 * see u must hold. A zero-length message: u was forgotten, and its choice with it. */
static void reference_document(struct user *u, const struct mosquitto_message *msg)
{
	free(u->ref);
	u->ref = NULL;
	if (msg->payloadlen == 0) {
		u->choice = CHOICE_EVERYONE;
		u->contact_count = 0;
		return;
	}
	u->ref = malloc((size_t)msg->payloadlen);
	assert_non_null(u->ref);
	memcpy(u->ref, msg->payload, (size_t)msg->payloadlen);
	u->ref_len = msg->payloadlen;
}

/* The marker's document on the dashboard: the step it was written at ("s<step>" in key m). */
static void marker_document(const struct mosquitto_message *msg)
{
	cJSON *doc = cJSON_ParseWithLength(msg->payload, (size_t)msg->payloadlen);
	const cJSON *m =
	    cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "state"), "m");
	unsigned long step;

	if (cJSON_IsString(m) && sscanf(m->valuestring, "s%lu", &step) == 1) {
		soak.marker_doc = step;
	}
	cJSON_Delete(doc);
}

/* What a watcher (obj) receives: checked against the model at that moment, then kept. */
static void on_watched(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
	struct watcher *w = obj;
	struct user *u;
	char model[512];
	cJSON *doc;
	long i, seq;

	(void)m;
	if (strcmp(msg->topic, MARKER_TOPIC) == 0) {
		w->marker = strtoul(msg->payload, NULL, 10);
		return;
	}
	if (strcmp(msg->topic, "presence/" MARKER_NAME) == 0) {
		if (msg->payloadlen > 0 && !may_see(w->name, w->groups, &marker_user)) {
			fail_soak("%s received the marker's document, which it may not see (%s)",
			          watcher_name(w), describe(&marker_user, model, sizeof(model)));
		}
		return;
	}
	u = document_user(msg);
	if (u == NULL) {
		return;
	}
	i = u - soak.users;
	if (msg->payloadlen == 0) {
		if (w->doc[i] == NULL) {
			fail_soak(
			    "%s received a zero-length message on %s while it held no document "
			    "of %s (it never saw it, or lost sight of it already): %s",
			    watcher_name(w), msg->topic, u->name,
			    describe(u, model, sizeof(model)));
			return;
		}
		free(w->doc[i]);
		w->doc[i] = NULL;
		soak.deletions++;
		return;
	}
	if (!may_see(w->name, w->groups, u)) {
		fail_soak("%s received a%s document of %s, which it may not see: %s; %.*s",
		          watcher_name(w), msg->retain ? " retained" : "", u->name,
		          describe(u, model, sizeof(model)), msg->payloadlen,
		          (const char *)msg->payload);
		return;
	}
	doc = cJSON_ParseWithLength(msg->payload, (size_t)msg->payloadlen);
	seq = json_long(doc, "seq");
	cJSON_Delete(doc);
	if (w->doc[i] != NULL && seq <= w->seq[i]) {
		fail_soak("%s received document %ld of %s after %ld", watcher_name(w), seq, u->name,
		          w->seq[i]);
		return;
	}
	if (w->doc[i] == NULL && !msg->retain && u->ref != NULL && u->born_step < soak.step) {
		/* It gains sight of a user that had a document before this step. */
		soak.gains++;
		if (seq < soak.step_wall_ms) {
			fail_soak(
			    "%s gained sight of %s with seq %ld, below the wall clock at the "
			    "step's start (%lld ms): the seq tells what happened while it could "
			    "not see (%s)",
			    watcher_name(w), u->name, seq, soak.step_wall_ms,
			    describe(u, model, sizeof(model)));
			return;
		}
	}
	free(w->doc[i]);
	w->doc[i] = malloc((size_t)msg->payloadlen);
	assert_non_null(w->doc[i]);
	memcpy(w->doc[i], msg->payload, (size_t)msg->payloadlen);
	w->doc_len[i] = msg->payloadlen;
	w->seq[i] = seq;
	soak.deliveries++;
}

/* The presence/+ stream of the subscriber that watches the whole run on broker *obj (its
 * retained documents first, after a restart). */
static void on_document(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
	struct user *u;

	(void)m;
	if (VISIBILITY && strcmp(msg->topic, "presence/" MARKER_NAME) == 0) {
		marker_document(msg);
		return;
	}
	u = document_user(msg);
	if (u != NULL) {
		check_document(u, *(const int *)obj, msg, msg->retain);
		if (VISIBILITY) {
			if (u->ref == NULL && msg->payloadlen > 0) {
				u->born_step = soak.step;
			}
			reference_document(u, msg);
		}
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
	/* Visibility soak: the marker's retained document came. */
	bool marker;
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
	if (VISIBILITY && strcmp(msg->topic, "presence/" MARKER_NAME) == 0) {
		rc->marker = msg->retain;
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
	struct pollfd fds[MAX_CONNS + SOAK_BROKERS + WATCHERS + 8];
	struct mosquitto *ms[MAX_CONNS + SOAK_BROKERS + WATCHERS + 8];
	int n = 0;

	for (int i = 0; i < SOAK_BROKERS; i++) {
		if (soak.sub[i] != NULL) {
			ms[n++] = soak.sub[i];
		}
	}
	for (int i = 0; i < WATCHERS; i++) {
		if (soak.watchers[i].mosq != NULL) {
			ms[n++] = soak.watchers[i].mosq;
		}
	}
	if (soak.marker != NULL) {
		ms[n++] = soak.marker;
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
	if (VISIBILITY && rnd(5) == 0) {
		privacy_write(c);
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

/* ---- the visibility soak's steps --------------------------------------------------------- */

static long long wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A watcher subscribes to its filter and to the markers (QoS 0, as the dashboard: in order).
 * The watcher of u0's identity is one of u0's sessions: the soak counts it connected. */
static void on_watcher_connect(struct mosquitto *m, void *obj, int rc)
{
	struct watcher *w = obj;
	char filter[32], marker[] = MARKER_TOPIC;
	char *subs[] = {filter, marker};

	snprintf(filter, sizeof(filter), "%s", w->filter);
	assert_int_equal(rc, 0);
	if (w->name != NULL && strcmp(w->name, soak.users[0].name) == 0) {
		soak.users[0].connected++;
	}
	assert_int_equal(mosquitto_subscribe_multiple(m, NULL, 2, subs, 0, 0, NULL), 0);
}

static void on_watcher_subscribe(struct mosquitto *m, void *obj, int mid, int count,
                                 const int *granted)
{
	(void)m;
	(void)mid;
	(void)count;
	(void)granted;
	((struct watcher *)obj)->ready = true;
}

/* Connects w (its name and groups set) with client id id, not waiting. */
static void watcher_start(struct watcher *w, const char *id)
{
	size_t cap = (size_t)soak.regular + ONCE_MAX;

	w->doc = calloc(cap, sizeof(*w->doc));
	w->doc_len = calloc(cap, sizeof(*w->doc_len));
	w->seq = calloc(cap, sizeof(*w->seq));
	assert_true(w->doc != NULL && w->doc_len != NULL && w->seq != NULL);
	w->mosq = mosquitto_new(id, true, w);
	assert_non_null(w->mosq);
	if (w->name != NULL) {
		mosquitto_username_pw_set(w->mosq, w->name, NULL);
	}
	mosquitto_connect_callback_set(w->mosq, on_watcher_connect);
	mosquitto_subscribe_callback_set(w->mosq, on_watcher_subscribe);
	mosquitto_message_callback_set(w->mosq, on_watched);
	assert_int_equal(mosquitto_connect(w->mosq, "127.0.0.1", broker_port(soak.b[0]), 60), 0);
}

static void watcher_free(struct watcher *w)
{
	if (w->mosq != NULL) {
		mosquitto_disconnect(w->mosq);
		mosquitto_destroy(w->mosq);
		w->mosq = NULL;
	}
	for (int i = 0; w->doc != NULL && i < soak.regular + ONCE_MAX; i++) {
		free(w->doc[i]);
	}
	free(w->doc);
	free(w->doc_len);
	free(w->seq);
}

/* Whether the step is done on the soak's side: every handshake, close and write, and the
 * dashboard's documents agree with the truth (why says what is missing). */
static bool step_quiet(char *why, size_t size)
{
	for (int i = 0; i < soak.conn_count; i++) {
		const struct conn *c = soak.conns[i];

		if (c->phase == CONN_CONNECTING || c->phase == CONN_CLOSING || c->pending != 0 ||
		    c->privacy_pending) {
			snprintf(why, size, "connection %s of %s is busy (phase %d, write %u%s)",
			         c->id, c->user->name, c->phase, c->pending,
			         c->privacy_pending ? ", privacy write" : "");
			return false;
		}
	}
	return converged(why, size);
}

/* Publishes the next marker on soak/marker and pumps until each of ws has it: then each has
 * everything the broker queued for it before. */
static bool plain_marker(struct watcher *ws, int count, struct mosquitto **extra, int extra_count)
{
	static unsigned long markers;
	char payload[32];
	int len = snprintf(payload, sizeof(payload), "%lu", ++markers);
	double start = now_s();
	bool all = false;

	assert_int_equal(mosquitto_publish(soak.marker, NULL, MARKER_TOPIC, len, payload, 0, false),
	                 0);
	while (!all && soak.failure[0] == '\0' && now_s() - start < SETTLE_S) {
		pump(extra, extra_count, 5);
		all = true;
		for (int i = 0; i < count; i++) {
			all &= ws[i].marker == markers;
		}
	}
	if (!all) {
		fail_soak("the marker %lu on " MARKER_TOPIC " did not reach every watcher in %d s",
		          markers, SETTLE_S);
	}
	return all;
}

/* w's view must be exactly the dashboard's documents of the users w may see. */
static void compare_view(const struct watcher *w, const char *what)
{
	char model[512];

	for (int i = 0; i < soak.user_count && soak.failure[0] == '\0'; i++) {
		const struct user *u = &soak.users[i];
		bool expect = u->ref != NULL && may_see(w->name, w->groups, u);

		if (expect && w->doc[i] == NULL) {
			fail_soak("%s: %s has no document of %s, which it may see (%s); the "
			          "dashboard's: %.*s",
			          what, watcher_name(w), u->name, describe(u, model, sizeof(model)),
			          u->ref_len, u->ref);
		} else if (!expect && w->doc[i] != NULL) {
			fail_soak(
			    "%s: %s holds a document of %s, which it may not see%s (%s): %.*s",
			    what, watcher_name(w), u->name,
			    u->ref == NULL ? " (the dashboard has none)" : "",
			    describe(u, model, sizeof(model)), w->doc_len[i], w->doc[i]);
		} else if (expect && (w->doc_len[i] != u->ref_len ||
		                      memcmp(w->doc[i], u->ref, (size_t)u->ref_len) != 0)) {
			fail_soak("%s: %s's document of %s is %.*s, the dashboard's %.*s", what,
			          watcher_name(w), u->name, w->doc_len[i], w->doc[i], u->ref_len,
			          u->ref);
		}
	}
}

/* After a step: waits (bounded) until it settled (step_quiet, then the marker's document on
 * the dashboard, then a marker on soak/marker at every watcher), then compares every view. */
static void vis_settle(void)
{
	char why[256] = "", payload[32];
	double start = now_s();
	int len;

	while (!step_quiet(why, sizeof(why)) && soak.failure[0] == '\0') {
		if (now_s() - start > SETTLE_S) {
			fail_soak("the step did not settle in %d s: %s", SETTLE_S, why);
			return;
		}
		pump(NULL, 0, 5);
	}
	len = snprintf(payload, sizeof(payload), "s%lu", soak.step);
	assert_int_equal(mosquitto_publish(soak.marker, NULL, "presence/" MARKER_NAME "/state/m",
	                                   len, payload, 0, false),
	                 0);
	start = now_s();
	while (soak.marker_doc != soak.step && soak.failure[0] == '\0') {
		if (now_s() - start > SETTLE_S) {
			fail_soak("the marker's document did not reach the dashboard in %d s",
			          SETTLE_S);
			return;
		}
		pump(NULL, 0, 5);
	}
	if (soak.failure[0] != '\0' || !plain_marker(soak.watchers, WATCHERS, NULL, 0)) {
		return;
	}
	for (int i = 0; i < WATCHERS; i++) {
		compare_view(&soak.watchers[i], "after the step");
	}
}

/* A new client of proto's identity subscribes to presence/+: the retained documents it gets
 * must be exactly those of the users it may see (the dashboard's). Not for u0's identity (a
 * session of u0 would change its document). */
static void fresh_check(const struct watcher *proto)
{
	struct watcher w = {.name = proto->name, .groups = proto->groups, .filter = proto->filter};
	char id[64];
	double start = now_s();

	if (proto->name != NULL && strcmp(proto->name, soak.users[0].name) == 0) {
		return;
	}
	snprintf(id, sizeof(id), "soak-fresh-%lu", soak.fresh_checks++);
	watcher_start(&w, id);
	while (!w.ready && soak.failure[0] == '\0' && now_s() - start < SETTLE_S) {
		pump(&w.mosq, 1, 5);
	}
	if (!w.ready) {
		fail_soak("a new subscriber of %s's identity got no SUBACK in %d s",
		          watcher_name(&w), SETTLE_S);
	} else if (plain_marker(&w, 1, &w.mosq, 1)) {
		compare_view(&w, "a new subscriber's retained documents");
	}
	watcher_free(&w);
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
	if (VISIBILITY) {
		mosquitto_username_pw_set(soak.sub[i], SEE_EVERYONE, NULL);
	}
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

/* The watchers besides the dashboard: their identity (NULL: anonymous), file groups (u0's are
 * its own, set at the start) and filter. w-g12 takes presence/#: no state write, privacy write,
 * Will or another user's error notice may reach it (document_user fails on those topics). */
static const struct {
	const char *name;
	unsigned groups;
	const char *filter;
} watcher_setup[WATCHERS] = {{"w-g0", 1u, "presence/+"},   {"w-g12", 6u, "presence/#"},
                             {"a/watch", 0, "presence/+"}, {"w-none", 0, "presence/+"},
                             {NULL, 0, "presence/+"},      {"u0", 0, "presence/+"}};

/* The groups file of the visibility soak: every group holds the marker; each member once, in
 * one of two blocks of its group (a group opened twice is merged). The caller frees it. */
static char *groups_file(void)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);

	assert_non_null(f);
	fprintf(f, "# The visibility soak's groups (\"a\" is also the group of \"a/...\")\n");
	for (int block = 0; block < 2; block++) {
		for (int g = 0; g < GROUP_COUNT; g++) {
			fprintf(f, "\n  # block %d\ngroup %s\n", block, group_names[g]);
			if (block == 0) {
				fprintf(f, "user " MARKER_NAME "\n");
				for (int i = 0; i < WATCHERS; i++) {
					if (watcher_setup[i].groups & (1u << g)) {
						fprintf(f, "user %s\n", watcher_setup[i].name);
					}
				}
			}
			for (int i = block; i < soak.regular; i += 2) {
				if (soak.users[i].groups & (1u << g)) {
					fprintf(f, "user %s\n", soak.users[i].name);
				}
			}
		}
	}
	fclose(f);
	return text;
}

/* Starts the visibility soak's watchers and marker client, and waits for them. */
static void watchers_start(void)
{
	double start = now_s();
	bool ready = false;

	contact_pool = calloc(WATCHERS + 1 + (size_t)soak.regular, sizeof(*contact_pool));
	assert_non_null(contact_pool);
	contact_pool[contact_pool_count++] = SEE_EVERYONE;
	for (int i = 0; i < WATCHERS; i++) {
		char id[64];

		soak.watchers[i].name = watcher_setup[i].name;
		soak.watchers[i].groups = watcher_setup[i].groups;
		soak.watchers[i].filter = watcher_setup[i].filter;
		if (watcher_setup[i].name != NULL &&
		    strcmp(watcher_setup[i].name, soak.users[0].name) == 0) {
			soak.watchers[i].groups = soak.users[0].groups;
		}
		if (watcher_setup[i].name != NULL) {
			contact_pool[contact_pool_count++] = watcher_setup[i].name;
		}
		snprintf(id, sizeof(id), "soak-watcher-%d", i);
		watcher_start(&soak.watchers[i], id);
	}
	for (int i = 0; i < soak.regular; i++) {
		contact_pool[contact_pool_count++] = soak.users[i].name;
	}
	snprintf(marker_user.name, sizeof(marker_user.name), MARKER_NAME);
	marker_user.groups = (1u << GROUP_COUNT) - 1;
	soak.marker = mosquitto_new("soak-marker", true, NULL);
	assert_non_null(soak.marker);
	mosquitto_username_pw_set(soak.marker, MARKER_NAME, NULL);
	assert_int_equal(mosquitto_connect(soak.marker, "127.0.0.1", broker_port(soak.b[0]), 60),
	                 0);
	while (!ready && now_s() - start < 10) {
		pump(NULL, 0, 100);
		ready = true;
		for (int i = 0; i < WATCHERS; i++) {
			ready &= soak.watchers[i].ready;
		}
	}
	assert_true(ready);
}

/* Waits (bounded, pumping) until the broker's log, from offset on (its first 64 KiB), holds
 * needle. */
static bool log_wait_from(long offset, const char *needle)
{
	static char buf[65536];
	char path[4096];
	double start = now_s();

	snprintf(path, sizeof(path), "%s/broker.log", broker_dir(soak.b[0]));
	while (now_s() - start < SETTLE_S) {
		FILE *f = fopen(path, "r");
		size_t len;

		assert_non_null(f);
		fseek(f, offset, SEEK_SET);
		len = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[len] = '\0';
		if (strstr(buf, needle) != NULL) {
			return true;
		}
		pump(NULL, 0, 5);
	}
	return false;
}

/* A step of the visibility soak: a new groups file and SIGHUP. One time in four the file is
 * wrong (a member before any group): the broker logs it and keeps the groups it had. Else a
 * quarter of the users move to other groups (u0 keeps g0, the marker stays in all); watchers
 * that lose sight get a zero-length message, those that gain it the document again. The model
 * takes the new groups when the signal is sent; the step waits for the broker's log line. */
static void groups_reload(void)
{
	char path[4096];
	bool bad = rnd(4) == 0;
	FILE *f;
	long offset;

	snprintf(path, sizeof(path), "%s/broker.log", broker_dir(soak.b[0]));
	f = fopen(path, "r");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	offset = ftell(f);
	fclose(f);
	if (bad) {
		broker_write_file(soak.b[0], "groups", "user u1\ngroup g0\n");
		soak.bad_reloads++;
	} else {
		char *text;

		for (int i = 0; i < soak.regular; i++) {
			if (rnd(4) == 0) {
				soak.users[i].groups =
				    rnd(8) | (rnd(4) == 0 ? 8u : 0u) | (i == 0 ? 1u : 0u);
			}
		}
		for (int i = 0; i < WATCHERS; i++) {
			if (soak.watchers[i].name != NULL &&
			    strcmp(soak.watchers[i].name, soak.users[0].name) == 0) {
				soak.watchers[i].groups = soak.users[0].groups;
			}
		}
		text = groups_file();
		broker_write_file(soak.b[0], "groups", text);
		free(text);
		soak.reloads++;
	}
	soak.reload_step = soak.step;
	broker_signal(soak.b[0], SIGHUP);
	if (!log_wait_from(offset, bad ? "could not re-read plugin_opt_groups_file" : "re-read ")) {
		fail_soak("the broker did not log the %s groups file's reload in %d s",
		          bad ? "wrong" : "new", SETTLE_S);
	}
}

static void soak_run(void **state)
{
	int seconds = env_int("SOAK_SECONDS", SOAK_BROKERS > 1 ? 30 : 10);
	int user_count = env_int("SOAK_USERS", 100);
	int target = env_int("SOAK_CONNECTIONS", 60);
	static const char *const odd[] = {"a/b",    "plus+",      "hash#", "pct%",
	                                  "sp ace", "zo\xc3\xab", "%2F"};
	const char *rule = getenv("SOAK_VISIBILITY") != NULL ? getenv("SOAK_VISIBILITY") : "group";
	char options[2048];
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
	         SOAK_BROKERS > 1 ? user_count * 4
	                          : (VISIBILITY ? user_count / 2 + 10 : user_count + 20));
	soak.seed = env_int("SOAK_SEED", 11);
	rnd_state = (uint64_t)soak.seed * 0x9E3779B97F4A7C15u + 1;
	if (VISIBILITY) {
		/* The watchers are not users (ignore_users), but u0's. */
		rule_group = strcmp(rule, "everyone") != 0;
		snprintf(options + strlen(options), sizeof(options) - strlen(options),
		         "plugin_opt_visibility %s\nplugin_opt_groups_file @DIR@/groups\n"
		         "plugin_opt_group_from_username /\nplugin_opt_see_everyone " SEE_EVERYONE
		         "\nplugin_opt_ignore_users " SEE_EVERYONE ",w-g0,w-g12,a/watch,w-none\n",
		         rule_group ? "group" : "everyone");
	}
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
		if (VISIBILITY) {
			/* Groups g0..g2 at random, "a" one time in four; u0 in g0 at least. */
			soak.users[i].groups =
			    rnd(8) | (rnd(4) == 0 ? 8u : 0u) | (i == 0 ? 1u : 0u);
		}
	}
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

		soak.b[0] = broker_prepare(NULL);
		if (VISIBILITY) {
			char *groups = groups_file();

			broker_write_file(soak.b[0], "groups", groups);
			free(groups);
		}
		broker_launch(soak.b[0], conf);
		free(conf);
	}
#endif
	for (int i = 0; i < SOAK_BROKERS; i++) {
		subscriber_start(i);
	}
	subscribers_await();
	if (VISIBILITY) {
		watchers_start();
	}

	start = now_s();
	soak.started = start;
	end = start + seconds;
	next_freeze = start + 2;
	while (now_s() < end && soak.failure[0] == '\0') {
		double now = now_s();
		int steps = 8;

		if (VISIBILITY) {
			/* One step, settled and checked; every 100 steps, a new subscriber. */
			soak.step++;
			soak.step_wall_ms = wall_ms();
			if (rnd(150) == 0) {
				groups_reload();
			} else {
				churn(target);
			}
			vis_settle();
			if (soak.step % 100 == 0 && soak.failure[0] == '\0') {
				fresh_check(&soak.watchers[(soak.step / 100) % WATCHERS]);
			}
			continue;
		}

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
	if (VISIBILITY && soak.failure[0] == '\0') {
		/* The closes above as one last step; then a new subscriber of each identity. */
		soak.step++;
		soak.step_wall_ms = wall_ms();
		vis_settle();
		for (int i = 0; i < WATCHERS && soak.failure[0] == '\0'; i++) {
			fresh_check(&soak.watchers[i]);
		}
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
		if (VISIBILITY) {
			mosquitto_username_pw_set(check, SEE_EVERYONE, NULL);
		}
		mosquitto_connect_callback_set(check, on_check_connect);
		mosquitto_subscribe_callback_set(check, on_subscribe);
		mosquitto_message_callback_set(check, on_retained);
		subscribed_flag = &check_ready;
		assert_int_equal(mosquitto_connect(check, "127.0.0.1", broker_port(soak.b[b]), 60),
		                 0);
		start = now_s();
		/* (Visibility soak: the marker's document is retained too.) */
		users_with_documents[b] += VISIBILITY;
		while ((!check_ready || rc.count + VISIBILITY < users_with_documents[b] ||
		        broker_retained != users_with_documents[b] + sys_topic_count) &&
		       now_s() - start < 10 && soak.failure[0] == '\0') {
			pump(&check, 1, 100);
		}
		users_with_documents[b] -= VISIBILITY;
		if (VISIBILITY && !rc.marker) {
			fail_soak("the marker's document is not retained");
		}
		if (rc.count != users_with_documents[b]) {
			fail_soak("b%d: %ld retained documents for %ld users with documents", b + 1,
			          rc.count, users_with_documents[b]);
		}
		if (broker_retained != users_with_documents[b] + VISIBILITY + sys_topic_count) {
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
	if (VISIBILITY) {
		printf("soak: visibility %s: %lu steps settled and checked on %d watchers and the "
		       "dashboard, %lu privacy writes (%lu to be rejected), %lu documents and %lu "
		       "deletions delivered to the watchers, %lu gains of sight, %lu new "
		       "subscribers' retained documents checked, %lu groups file reloads (and %lu "
		       "of a wrong one)\n",
		       rule_group ? "group" : "everyone", soak.step, WATCHERS, soak.privacy_writes,
		       soak.privacy_rejects, soak.deliveries, soak.deletions, soak.gains,
		       soak.fresh_checks, soak.reloads, soak.bad_reloads);
	}
	if (soak.failure[0] == '\0' && soak.forgotten == 0) {
		fail_soak("nobody was forgotten: %lu users came once, max_users is %d", soak.once,
		          VISIBILITY ? user_count / 2 + 10 : user_count + 20);
	}
#endif
	if (soak.failure[0] != '\0' && VISIBILITY) {
		fail_msg("step %lu: %s (replay: SOAK_SEED=%d SOAK_VISIBILITY=%s)", soak.step,
		         soak.failure, soak.seed, rule_group ? "group" : "everyone");
	}
	if (soak.failure[0] != '\0') {
		fail_msg("%s (replay: SOAK_SEED=%d)", soak.failure, soak.seed);
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
	for (int i = 0; i < WATCHERS; i++) {
		watcher_free(&soak.watchers[i]);
	}
	if (soak.marker != NULL) {
		mosquitto_disconnect(soak.marker);
		mosquitto_destroy(soak.marker);
	}
	for (int i = 0; i < soak.user_count; i++) {
		free(soak.users[i].ref);
	}
	free(contact_pool);
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
