/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The cluster backend (backend.h; see core/cluster.h and the README's "Several brokers"): the
 * only file that connects the broker's events to the Redis link (plugin/redis/). Nothing
 * here waits on Redis: requests are queued for the link's threads, and their results are taken
 * in TICK, at most RESULTS_PER_TICK per tick.
 *
 * - TICK: results first (documents to publish, commits of state writes, a resynchronisation
 *   to start), then every dirty user's absolute session count is sent, then a bounded step of
 *   a resynchronisation in progress (every user seeded and every count sent again, after each
 *   registration of this broker and each reconnection to Redis), then the cluster metrics.
 * - A document is published only as Redis numbered it (never a local one), when its seq is
 *   above the one the broker has for the user; every broker renders the same values with the
 *   same code, so subscribers on every broker get the same bytes.
 * - State writes are checked at once against the user's current cluster state (a bad one gets
 *   its notice at once, as on a single broker) and then committed by compare-and-set; when the
 *   link is not connected they are refused at once.
 * - Privacy writes are checked at once too, then sent to Redis (pv2_privacy), which keeps the
 *   choice with the user and carries it to every broker by the stream; every broker, this one
 *   included, applies it when it comes (sight.h: the zero-length message to the watchers that
 *   lose sight). When some watcher gains sight, Redis publishes the user's document again with
 *   seq and since jumped, as a single broker does, so every broker publishes the same bytes. A
 *   groups file re-read asks Redis for the same jump (pv2_widen).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cluster.h"
#include "document.h"
#include "plugin.h"
#include "clock.h"
#include "publish.h"
#include "sight.h"
#include "text.h"

#if PRESENCE_CLUSTER
#include "redis_link.h"
#include "wake.h"

/* Results handled per TICK, users resynchronised per TICK, requests queued at most. A tick's
 * results reach every subscriber as one burst of documents, and Mosquitto queues at most
 * max_queued_messages (1000 by default) per client beyond its inflight window, dropping the
 * rest, the newest included: a burst stays well below that (one read of the stream, 500
 * records). Catching up still goes at 500 documents per loop iteration, 5 000 a second or more. */
#define RESULTS_PER_TICK 500
#define RESYNC_PER_TICK 500
#define BACKLOG_MAX 100000

/* The broker loop may stall this long (autosave of a large persistence file) before its
 * heartbeats stop, ms. */
#define STALL_TOLERANCE_MS 10000
#define COMMAND_TIMEOUT_MS 1000
/* The stream's records are trimmed beyond this many bytes (the largest record, a state of
 * max_state_bytes' 1 MiB and a name, fits many times over). */
#define STREAM_BUDGET (16UL * 1024 * 1024)
/* How long init waits for the cluster's first snapshot, ms. */
#define STARTUP_SNAPSHOT_MS 2000

struct presence_cluster_link {
	struct presence_redis *redis;
	struct presence_cluster_writes *writes;
	/* A resynchronisation in progress, where it is, and which one (the link's generation). */
	bool resyncing;
	struct presence_cursor resync;
	uint64_t resync_generation;
	/* The link's last status. */
	bool connected;
	long long brokers;
	/* The cluster metrics last published (-1: never), and when last_sync is due next
	 * (monotonic ms; it changes at every heartbeat, so it goes out once per interval). */
	long long pub_connected, pub_brokers, pub_last_sync;
	int64_t next_sync_publish;
	/* The wake-up signal (see wake_broker); its signal is 0 when none is used. */
	struct presence_wake wake;
};

/*
 * Waking the broker up (opt-in: plugin_opt_cluster_wake_signal). An idle Mosquitto sleeps up
 * to 100 ms in epoll_wait (2.0 always; 2.1 built with websockets, as Debian's), so a result of
 * the Redis link (a document to publish, the outcome of a state write) waits up to that long
 * for the next TICK. With the option, the link calls wake_broker instead (at most once per
 * drain of its results): it sends a real-time signal, whose handler does nothing, to the
 * broker's thread; epoll_wait returns EINTR, which Mosquitto treats as a wake-up, and TICK takes
 * the results (wake.h). The signal is SIGRTMIN + WAKE_SIGNAL_OFFSET, taken only when nobody
 * else handles it. Off by default: a plugin is a guest in the broker's process, and signal
 * dispositions are the process's.
 */
#define WAKE_SIGNAL_OFFSET 7

static void wake_broker(void *arg)
{
	const struct presence_cluster_link *cl = arg;

	presence_wake_now(&cl->wake);
}

/* Reports a write (what: "state" or "privacy") that was not applied on the user's error
 * topic. */
static void reject(struct presence_plugin *p, const char *what, struct presence_user *user,
                   const char *topic, const char *reason)
{
	p->state_rejected++;
	presence_log_limited(&p->rejected_log, MOSQ_LOG_WARNING,
	                     "rejected %s write of user %s to %s: %s", what,
	                     presence_user_name(user), topic, reason);
	presence_publish_rejection(p, user, topic, reason);
}

static void reject_cb(void *arg, struct presence_user *user, const char *topic, const char *reason)
{
	reject(arg, "state", user, topic, reason);
}

/* The text Redis keeps of a privacy choice: "" for the default (nothing kept), else its compact
 * JSON. NULL when memory runs out. */
static char *privacy_text(const struct presence_privacy *privacy)
{
	return privacy == NULL ? presence_text_dup("", 0) : presence_privacy_render(privacy);
}

/* Applies the privacy choice the cluster recorded for user (text as privacy_text makes it). The
 * document that goes with a choice showing user to more watchers comes from Redis (jumped). */
static void apply_privacy(struct presence_plugin *p, struct presence_user *user, const char *text)
{
	char reason[PRESENCE_STATE_REASON_SIZE];
	struct presence_privacy *choice = NULL;
	enum presence_err err =
	    presence_privacy_parse(text, strlen(text), &choice, reason, sizeof(reason));
	bool widened;

	if (err == PRESENCE_OK) {
		err = presence_sight_privacy_apply(p, user, choice, &widened);
	}
	if (err != PRESENCE_OK) {
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX "could not apply the cluster's privacy "
		                                         "choice of user %s: %s",
		                     presence_user_name(user),
		                     err == PRESENCE_ERR_NOMEM ? "out of memory" : reason);
	}
}

/* The user's current cluster state and seq (what a commit applies to). */
static const char *cluster_base(const struct presence_user *user, uint64_t *seq)
{
	struct presence_document doc;

	if (!presence_user_published(user, &doc)) {
		*seq = 0;
		return "{}";
	}
	*seq = doc.seq;
	return doc.state_json;
}

/* Starts the commit of user's waiting writes, when none is in flight. */
static void start_commit(struct presence_plugin *p, struct presence_user *user)
{
	struct presence_cluster_link *cl = p->cluster;
	struct presence_redis_request *req;
	uint64_t seq;
	const char *base = cluster_base(user, &seq);
	const char *newer = presence_cluster_write_base(cl->writes, user, &seq);
	char *state = NULL;

	/* A commit or conflict answered with a document the stream has not brought yet. */
	if (newer != NULL) {
		base = newer;
	}

	if (presence_cluster_write_in_flight(cl->writes, user) ||
	    !presence_cluster_write_pending(cl->writes, user)) {
		return;
	}
	if (!presence_redis_ready(cl->redis)) {
		/* Mark them in flight to drop them all with their notices. */
		if (presence_cluster_write_fold(cl->writes, user, base, &p->limits, reject_cb, p,
		                                &state) == PRESENCE_OK) {
			free(state);
		}
		presence_cluster_write_done(cl->writes, user, false,
		                            "the cluster store (Redis) is unavailable; the write "
		                            "was not applied",
		                            reject_cb, p);
		return;
	}
	if (presence_cluster_write_fold(cl->writes, user, base, &p->limits, reject_cb, p, &state) !=
	    PRESENCE_OK) {
		presence_cluster_write_done(cl->writes, user, false, "out of memory", reject_cb, p);
		return;
	}
	if (state == NULL) {
		return;
	}
	req = presence_redis_request_new(PRESENCE_REDIS_CAS, presence_user_name(user));
	if (req == NULL) {
		free(state);
		presence_cluster_write_done(cl->writes, user, false, "out of memory", reject_cb, p);
		return;
	}
	req->state = state;
	req->expected = seq;
	req->floor = seq;
	presence_redis_submit(cl->redis, req);
}

/* Applies a document from Redis and publishes it when it is news. */
static struct presence_user *apply_record(struct presence_plugin *p,
                                          const struct presence_cluster_record *rec, bool force)
{
	struct presence_user *user = NULL;
	enum presence_err err;
	bool due = false;

	err = presence_cluster_apply_record(p->reg, rec, force, &user, &due);
	if (err != PRESENCE_OK) {
		mosquitto_log_printf(
		    MOSQ_LOG_WARNING,
		    PRESENCE_LOG_PREFIX "could not apply the cluster's document of "
		                        "user %s (seq %" PRIu64 "): %s",
		    rec->name != NULL ? rec->name : "?", rec->seq, presence_strerror(err));
		return user;
	}
	/* Before the document goes out: its READ checks follow the choice it came with. */
	if (rec->privacy != NULL) {
		apply_privacy(p, user, rec->privacy);
	}
	if (due) {
		bool added;

		/* The state file records it at its next flush (no seq margin in cluster mode:
		 * nothing waits for that). */
		if (p->store != NULL &&
		    presence_store_note_change(p->store, user, &added) != PRESENCE_OK) {
			mosquitto_log_printf(MOSQ_LOG_WARNING,
			                     PRESENCE_LOG_PREFIX "out of memory: the state file "
			                                         "misses the document of user %s "
			                                         "until its next compaction",
			                     presence_user_name(user));
		}
		presence_publish_document(p, user);
	}
	return user;
}

/* Records the document a commit was answered with as the base of user's next commit. */
static void rebase(struct presence_plugin *p, struct presence_user *user,
                   const struct presence_cluster_record *rec)
{
	if (rec->state != NULL && presence_cluster_write_rebase(p->cluster->writes, user, rec->seq,
	                                                        rec->state) != PRESENCE_OK) {
		/* The next commit applies to an older state and conflicts: its answer is
		 * recorded again. */
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX "out of memory recording the cluster's "
		                                         "document of user %s",
		                     presence_user_name(user));
	}
}

static void handle_cas(struct presence_plugin *p, struct presence_redis_result *res)
{
	struct presence_cluster_link *cl = p->cluster;
	struct presence_user *user = presence_registry_user_find(p->reg, res->rec.name);

	if (user == NULL) {
		return;
	}
	/* The document itself comes through the stream (every broker publishes every document
	 * in seq order); the reply is what the next commit applies to. */
	switch (res->outcome) {
	case PRESENCE_REDIS_CAS_COMMITTED:
		presence_cluster_write_done(cl->writes, user, true, NULL, NULL, NULL);
		rebase(p, user, &res->rec);
		break;
	case PRESENCE_REDIS_CAS_CONFLICT:
		/* Another write came first: apply ours again to what it made. */
		presence_cluster_write_retry(cl->writes, user);
		rebase(p, user, &res->rec);
		break;
	case PRESENCE_REDIS_CAS_FAILED:
		presence_cluster_write_done(cl->writes, user, false,
		                            res->text != NULL ? res->text : "failed", reject_cb, p);
		break;
	}
	start_commit(p, user);
}

/* Drops what the link holds of user (its pending writes), which is leaving the registry. */
static void cluster_forget(struct presence_plugin *p, const struct presence_user *user)
{
	presence_cluster_write_forget(p->cluster->writes, user);
}

/* The cluster forgot a user (at seq): so does this broker, unless it has a session of it or a
 * newer document (the user came back meanwhile). */
static void forget_record(struct presence_plugin *p, const struct presence_cluster_record *rec)
{
	struct presence_user *user = presence_registry_user_find(p->reg, rec->name);
	struct presence_document doc;

	presence_registry_set_seq_floor(p->reg, rec->seq);
	if (user == NULL || presence_user_sessions(user) > 0 ||
	    !presence_user_published(user, &doc) || doc.seq > rec->seq) {
		return;
	}
	presence_announce_removal(p, user);
	if (p->store != NULL) {
		presence_store_note_forget(p->store, user);
	}
	cluster_forget(p, user);
	presence_registry_user_forget(p->reg, user);
}

static void handle_result(struct presence_plugin *p, struct presence_redis_result *res)
{
	struct presence_cluster_link *cl = p->cluster;
	struct presence_user *user;

	switch (res->kind) {
	case PRESENCE_REDIS_RECORD:
		apply_record(p, &res->rec, res->force);
		break;
	case PRESENCE_REDIS_CAS_DONE:
		handle_cas(p, res);
		break;
	case PRESENCE_REDIS_RESYNC:
		presence_registry_cursor_stop(p->reg, &cl->resync);
		cl->resync_generation = res->generation;
		cl->resyncing = presence_registry_cursor_start(p->reg, &cl->resync);
		if (!cl->resyncing) {
			/* No cursor to be had (out of memory): the counts sent so far stand. */
			presence_redis_resync_done(cl->redis, res->generation);
		}
		/* A Redis that lost its data lost the floor too: this broker's goes first. */
		if (cl->resyncing) {
			struct presence_redis_request *req =
			    presence_redis_request_new(PRESENCE_REDIS_FLOOR, "");

			if (req != NULL) {
				req->floor = presence_registry_seq_floor(p->reg);
				presence_redis_submit(cl->redis, req);
			}
		}
		break;
	case PRESENCE_REDIS_FORGET:
		forget_record(p, &res->rec);
		break;
	case PRESENCE_REDIS_PRIVACY:
		user = presence_registry_user_find(p->reg, res->rec.name);
		if (user != NULL) {
			apply_privacy(p, user, res->rec.privacy);
		}
		break;
	case PRESENCE_REDIS_PRIVACY_FAILED:
		user = presence_registry_user_find(p->reg, res->rec.name);
		if (user != NULL) {
			reject(p, "privacy", user, res->topic, res->text);
		}
		break;
	case PRESENCE_REDIS_FULL:
		p->sessions_untracked++;
		presence_log_limited(
		    &p->untracked_log, MOSQ_LOG_WARNING,
		    "max_users (%zu) users are known to the cluster and every one "
		    "of them is online: user %s gets no presence (its sessions are "
		    "not refused)",
		    p->cfg.max_users, res->rec.name);
		break;
	case PRESENCE_REDIS_STATUS:
		cl->connected = res->connected;
		if (res->brokers >= 0) {
			cl->brokers = res->brokers;
		}
		break;
	case PRESENCE_REDIS_SNAPSHOT_DONE:
		/* From now on the broker knows every user of the cluster. */
		p->documents_authoritative = true;
		break;
	case PRESENCE_REDIS_LOG:
		mosquitto_log_printf(res->level == 0   ? MOSQ_LOG_INFO
		                     : res->level == 1 ? MOSQ_LOG_WARNING
		                                       : MOSQ_LOG_ERR,
		                     PRESENCE_LOG_PREFIX "cluster: %s", res->text);
		break;
	}
}

/* Queues the absolute session count of user. Returns false when the backlog is full. */
static bool send_count(struct presence_plugin *p, struct presence_user *user)
{
	struct presence_cluster_link *cl = p->cluster;
	struct presence_redis_request *req;
	unsigned int count;
	uint64_t seq;

	if (presence_redis_backlog(cl->redis) >= BACKLOG_MAX) {
		return false;
	}
	req = presence_redis_request_new(PRESENCE_REDIS_CONTRIB, presence_user_name(user));
	if (req == NULL) {
		return false;
	}
	(void)cluster_base(user, &seq);
	count = presence_user_sessions(user);
	req->count = count;
	req->floor = seq;
	presence_redis_submit(cl->redis, req);
	/* Last: a user with nothing left to keep is freed here. */
	presence_registry_user_counted(p->reg, user, count);
	return true;
}

/* Queues the seed of user (its last document), for a Redis that lost it or its latest
 * documents. */
static bool send_seed(struct presence_plugin *p, struct presence_user *user)
{
	struct presence_redis_request *req;
	struct presence_document doc;

	if (!presence_user_published(user, &doc)) {
		return true;
	}
	req = presence_redis_request_new(PRESENCE_REDIS_SEED, presence_user_name(user));
	if (req == NULL) {
		return false;
	}
	req->state = presence_text_dup(doc.state_json, strlen(doc.state_json));
	if (req->state == NULL) {
		presence_redis_request_free(req);
		return false;
	}
	if (presence_user_privacy(user) != NULL) {
		req->privacy = presence_privacy_render(presence_user_privacy(user));
		if (req->privacy == NULL) {
			presence_redis_request_free(req);
			return false;
		}
	}
	req->floor = doc.seq;
	req->available = doc.available;
	req->sessions = doc.sessions;
	req->since_ms = doc.since_ms;
	presence_redis_submit(p->cluster->redis, req);
	return true;
}

/* One bounded step of a resynchronisation. */
static void resync_step(struct presence_plugin *p)
{
	struct presence_cluster_link *cl = p->cluster;

	for (int i = 0; i < RESYNC_PER_TICK; i++) {
		struct presence_user *user;

		if (presence_redis_backlog(cl->redis) >= BACKLOG_MAX) {
			return;
		}
		user = presence_registry_cursor_next(p->reg, &cl->resync);
		if (user == NULL) {
			cl->resyncing = false;
			presence_redis_resync_done(cl->redis, cl->resync_generation);
			return;
		}
		if (!send_seed(p, user) ||
		    (presence_user_sessions(user) > 0 && !send_count(p, user))) {
			/* Out of memory: the rest of the walk starts again at the next
			 * resynchronisation. */
			presence_registry_cursor_stop(p->reg, &cl->resync);
			cl->resyncing = false;
			presence_redis_resync_done(cl->redis, cl->resync_generation);
			return;
		}
	}
}

static void publish_metric(const char *topic, long long value, long long *published)
{
	char text[24];
	int len;

	if (value == *published) {
		return;
	}
	len = snprintf(text, sizeof(text), "%lld", value);
	if (presence_publish(NULL, topic, text, (size_t)len, 0, true, NULL) == MOSQ_ERR_SUCCESS) {
		*published = value;
	}
}

static void cluster_tick(struct presence_plugin *p)
{
	struct presence_cluster_link *cl = p->cluster;
	struct presence_redis_result *res;
	struct presence_user *user;
	bool complete = true;

	presence_redis_alive(cl->redis, presence_clock_monotonic_ms());
	for (int i = 0; i < RESULTS_PER_TICK && (res = presence_redis_take(cl->redis)) != NULL;
	     i++) {
		handle_result(p, res);
		presence_redis_result_free(res);
	}
	while ((user = presence_registry_dirty_next(p->reg)) != NULL) {
		if (!send_count(p, user)) {
			/* Kept dirty: sent again at the next tick. */
			presence_registry_document_failed(p->reg, user);
			complete = false;
		}
	}
	presence_registry_flush_done(p->reg);
	if (cl->resyncing) {
		resync_step(p);
	}
	/* Every count decided so far is on its way (or not: then no barrier is confirmed). */
	presence_redis_ticked(cl->redis, complete);
	if (p->cfg.metrics_interval > 0) {
		publish_metric("$SYS/broker/presence/cluster/connected", cl->connected ? 1 : 0,
		               &cl->pub_connected);
		publish_metric("$SYS/broker/presence/cluster/brokers",
		               cl->connected ? cl->brokers : 0, &cl->pub_brokers);
		if (presence_clock_monotonic_ms() >= cl->next_sync_publish &&
		    presence_redis_last_sync_ms(cl->redis) > 0) {
			cl->next_sync_publish =
			    presence_clock_monotonic_ms() + (int64_t)p->cfg.metrics_interval * 1000;
			publish_metric("$SYS/broker/presence/cluster/last_sync",
			               presence_redis_last_sync_ms(cl->redis) / 1000,
			               &cl->pub_last_sync);
		}
	}
}

/* Sends a privacy write of user to Redis (checked here; applied when the stream brings it).
 * Every valid write is sent and counted: one that changes nothing may be undoing another still
 * on its way, and Redis tells (it changes nothing there either). */
static enum presence_err privacy_write(struct presence_plugin *p, struct presence_user *user,
                                       const char *write_topic, const void *payload, size_t len,
                                       char *reason)
{
	const struct presence_privacy *old = presence_user_privacy(user);
	struct presence_privacy *choice = NULL;
	struct presence_redis_request *req;
	enum presence_err err;
	uint64_t seq;

	err = presence_privacy_parse(payload, len, &choice, reason, PRESENCE_STATE_REASON_SIZE);
	if (err != PRESENCE_OK) {
		return err;
	}
	/* What waits for Redis is bounded, as for counts and resyncs. */
	if (presence_redis_backlog(p->cluster->redis) >= BACKLOG_MAX) {
		presence_privacy_free(choice);
		snprintf(reason, PRESENCE_STATE_REASON_SIZE,
		         "too many requests waiting for the cluster store (Redis); the write was "
		         "not applied");
		return PRESENCE_ERR_FULL;
	}
	req = presence_redis_request_new(PRESENCE_REDIS_PRIVACY_WRITE, presence_user_name(user));
	if (req != NULL) {
		req->privacy = privacy_text(choice);
		req->expected_privacy = privacy_text(old);
		req->topic = presence_text_dup(write_topic, strlen(write_topic));
	}
	if (req == NULL || req->privacy == NULL || req->expected_privacy == NULL ||
	    req->topic == NULL) {
		presence_redis_request_free(req);
		presence_privacy_free(choice);
		return PRESENCE_ERR_NOMEM;
	}
	req->widens = presence_visibility_widens(&p->vis, old, choice);
	presence_privacy_free(choice);
	(void)cluster_base(user, &seq);
	req->floor = seq;
	presence_registry_write_charge(p->reg, user);
	presence_redis_submit(p->cluster->redis, req);
	return PRESENCE_OK;
}

static enum presence_err cluster_write(struct presence_plugin *p, struct presence_user *user,
                                       const char *write_topic, const struct presence_topic *topic,
                                       const void *payload, size_t payload_len, bool *changed,
                                       char *reason)
{
	struct presence_cluster_link *cl = p->cluster;
	enum presence_err err;
	uint64_t seq;

	*changed = false;
	if (!presence_redis_ready(cl->redis)) {
		snprintf(reason, PRESENCE_STATE_REASON_SIZE,
		         "the cluster store (Redis) is unavailable; the write was not applied");
		return PRESENCE_ERR_IO;
	}
	if (topic->kind == PRESENCE_TOPIC_PRIVACY) {
		/* The choice comes back through the stream, in a later TICK. */
		return privacy_write(p, user, write_topic, payload, payload_len, reason);
	}
	err = presence_cluster_write_add(
	    cl->writes, user, cluster_base(user, &seq), &p->limits,
	    topic->kind == PRESENCE_TOPIC_STATE ? PRESENCE_CLUSTER_WRITE_MERGE
	                                        : PRESENCE_CLUSTER_WRITE_SET_KEY,
	    topic->key, topic->key_len, payload, payload_len, write_topic, changed, reason);
	if (err != PRESENCE_OK) {
		return err;
	}
	if (*changed) {
		presence_registry_write_charge(p->reg, user);
		start_commit(p, user);
	}
	/* The documents come from the cluster, in a later TICK. */
	*changed = false;
	return PRESENCE_OK;
}

/*
 * At init, before the broker serves anyone: waits (at most STARTUP_SNAPSHOT_MS) for the first
 * snapshot of the cluster and publishes every document in it. Publishes from init are delivered
 * and retained before any client can connect, so a stale document the broker restored from its
 * persistence file is replaced before anyone reads it. Without Redis the broker starts after
 * the wait, and the documents are corrected when the snapshot comes.
 */
static void correct_at_start(struct presence_plugin *p)
{
	int64_t deadline = presence_clock_monotonic_ms() + STARTUP_SNAPSHOT_MS;
	uint64_t before = p->documents_published;
	int64_t left;

	while ((left = deadline - presence_clock_monotonic_ms()) > 0) {
		struct presence_redis_result *res =
		    presence_redis_take_wait(p->cluster->redis, left);
		bool done;

		if (res == NULL) {
			break;
		}
		done = res->kind == PRESENCE_REDIS_SNAPSHOT_DONE;
		handle_result(p, res);
		presence_redis_result_free(res);
		if (done) {
			mosquitto_log_printf(MOSQ_LOG_INFO,
			                     PRESENCE_LOG_PREFIX
			                     "published the cluster's documents "
			                     "of %" PRIu64 " users at startup",
			                     p->documents_published - before);
			return;
		}
	}
	mosquitto_log_printf(MOSQ_LOG_WARNING,
	                     PRESENCE_LOG_PREFIX "no snapshot from Redis within %d ms: starting "
	                                         "anyway; documents are corrected when it answers",
	                     STARTUP_SNAPSHOT_MS);
}

/* Reads the password from the first line of path into out (size bytes). False with a reason
 * (which never quotes the file's content). */
static bool read_password_file(const char *path, char *out, size_t size, char *reason,
                               size_t reason_size)
{
	FILE *f = fopen(path, "r");
	size_t len;

	if (f == NULL) {
		snprintf(reason, reason_size, "cannot read %s: %s", path, strerror(errno));
		return false;
	}
	if (fgets(out, (int)size, f) == NULL) {
		out[0] = '\0';
	}
	fclose(f);
	len = strcspn(out, "\r\n");
	if (out[len] == '\0' && len == size - 1) {
		snprintf(reason, reason_size, "the first line of %s is longer than %zu bytes", path,
		         size - 2);
		memset(out, 0, size);
		return false;
	}
	out[len] = '\0';
	if (len == 0) {
		snprintf(reason, reason_size, "%s holds no password on its first line", path);
		return false;
	}
	return true;
}

static void cluster_end(struct presence_plugin *p);

static int cluster_start(struct presence_plugin *p)
{
	struct presence_redis_config rc = {0};
	char reason[256], url[512];
	struct presence_user *user;

	if (presence_cluster_endpoint_parse(p->cfg.cluster_url, &rc.endpoint, reason,
	                                    sizeof(reason)) != PRESENCE_OK) {
		mosquitto_log_printf(MOSQ_LOG_ERR, PRESENCE_LOG_PREFIX "plugin_opt_cluster_url: %s",
		                     reason);
		return MOSQ_ERR_INVAL;
	}
	if (p->cfg.cluster_username != NULL) {
		snprintf(rc.endpoint.user, sizeof(rc.endpoint.user), "%s", p->cfg.cluster_username);
	}
	if (p->cfg.cluster_password_file != NULL &&
	    !read_password_file(p->cfg.cluster_password_file, rc.endpoint.password,
	                        sizeof(rc.endpoint.password), reason, sizeof(reason))) {
		mosquitto_log_printf(MOSQ_LOG_ERR,
		                     PRESENCE_LOG_PREFIX "plugin_opt_cluster_password_file: %s",
		                     reason);
		return MOSQ_ERR_INVAL;
	}
	rc.tls_cafile = p->cfg.cluster_tls_cafile;
	rc.tls_certfile = p->cfg.cluster_tls_certfile;
	rc.tls_keyfile = p->cfg.cluster_tls_keyfile;
	presence_cluster_endpoint_describe(&rc.endpoint, url, sizeof(url));
	p->cluster = calloc(1, sizeof(*p->cluster));
	if (p->cluster == NULL) {
		return MOSQ_ERR_NOMEM;
	}
	p->cluster->pub_connected = -1;
	p->cluster->pub_brokers = -1;
	p->cluster->pub_last_sync = -1;
	p->cluster->writes = presence_cluster_writes_new();
	if (p->cluster->writes == NULL) {
		cluster_end(p);
		return MOSQ_ERR_NOMEM;
	}
	/* What the state file restored is not news to publish: the cluster's documents are
	 * (they come with the first snapshot). */
	while ((user = presence_registry_dirty_next(p->reg)) != NULL) {
	}
	rc.broker_id = p->cfg.broker_id;
	rc.heartbeat_ms = (int64_t)p->cfg.cluster_heartbeat_ms;
	rc.lease_ms = (int64_t)p->cfg.cluster_lease_ms;
	rc.grace_ms = (int64_t)p->cfg.offline_delay * 1000;
	rc.keep_state = p->cfg.keep_state;
	rc.stall_tolerance_ms = STALL_TOLERANCE_MS;
	rc.command_timeout_ms = COMMAND_TIMEOUT_MS;
	rc.stream_budget = STREAM_BUDGET;
	rc.max_users = p->cfg.max_users;
	rc.forget_after_ms = (int64_t)p->cfg.forget_after * 1000;
	/* init runs on the broker's thread. */
	if (p->cfg.cluster_wake_signal) {
		if (presence_wake_install(&p->cluster->wake, WAKE_SIGNAL_OFFSET)) {
			rc.wake = wake_broker;
			rc.wake_arg = p->cluster;
		} else {
			mosquitto_log_printf(MOSQ_LOG_WARNING,
			                     PRESENCE_LOG_PREFIX
			                     "cluster: signal SIGRTMIN+%d is "
			                     "taken; results from Redis wait for "
			                     "the broker's next loop iteration (up "
			                     "to 100 ms)",
			                     WAKE_SIGNAL_OFFSET);
		}
	}
	p->cluster->redis = presence_redis_start(&rc, reason, sizeof(reason));
	/* The link keeps its own copy. */
	memset(&rc.endpoint, 0, sizeof(rc.endpoint));
	if (p->cluster->redis == NULL) {
		mosquitto_log_printf(MOSQ_LOG_ERR,
		                     PRESENCE_LOG_PREFIX "cluster mode cannot start: %s", reason);
		cluster_end(p);
		return MOSQ_ERR_UNKNOWN;
	}
	correct_at_start(p);
	mosquitto_log_printf(MOSQ_LOG_INFO,
	                     PRESENCE_LOG_PREFIX "cluster mode: broker %s, Redis at %s%s, "
	                                         "heartbeat %zu ms, lease %zu ms",
	                     p->cfg.broker_id, url,
	                     p->cfg.cluster_password_file != NULL ? " (password from file)" : "",
	                     p->cfg.cluster_heartbeat_ms, p->cfg.cluster_lease_ms);
	return MOSQ_ERR_SUCCESS;
}

static void cluster_end(struct presence_plugin *p)
{
	if (p->cluster == NULL) {
		return;
	}
	presence_registry_cursor_stop(p->reg, &p->cluster->resync);
	/* The threads first: nobody sends the signal once they are gone. */
	presence_redis_stop(p->cluster->redis);
	presence_wake_uninstall(&p->cluster->wake);
	presence_cluster_writes_free(p->cluster->writes);
	free(p->cluster);
	p->cluster = NULL;
}

static void cluster_publish_due(struct presence_plugin *p)
{
	/* Documents come from the cluster only (its results, in TICK). */
	(void)p;
}

/* Asks Redis to publish user's document again, jumped (pv2_widen): every broker publishes it. */
static void cluster_widen(struct presence_plugin *p, struct presence_user *user)
{
	struct presence_cluster_link *cl = p->cluster;
	struct presence_redis_request *req = NULL;
	uint64_t seq;

	if (presence_redis_backlog(cl->redis) < BACKLOG_MAX) {
		req = presence_redis_request_new(PRESENCE_REDIS_WIDEN, presence_user_name(user));
	}
	if (req == NULL) {
		presence_log_limited(
		    &p->untracked_log, MOSQ_LOG_WARNING,
		    "too many requests waiting for Redis: watchers that gained sight "
		    "of user %s get its document at its next change",
		    presence_user_name(user));
		return;
	}
	(void)cluster_base(user, &seq);
	req->floor = seq;
	presence_redis_submit(cl->redis, req);
}

const struct presence_backend presence_backend_cluster = {
    .start = cluster_start,
    .end = cluster_end,
    .write = cluster_write,
    .tick = cluster_tick,
    .publish_due = cluster_publish_due,
    .widen = cluster_widen,
};

#else /* !PRESENCE_CLUSTER */

static int cluster_start(struct presence_plugin *p)
{
	(void)p;
	mosquitto_log_printf(MOSQ_LOG_ERR, PRESENCE_LOG_PREFIX
	                     "plugin_opt_cluster_url is set, but this build has "
	                     "no cluster mode (libhiredis-dev was not found "
	                     "when it was built)");
	return MOSQ_ERR_NOT_SUPPORTED;
}

/* Never called: start fails. */
static void cluster_end(struct presence_plugin *p)
{
	(void)p;
}

static enum presence_err cluster_write(struct presence_plugin *p, struct presence_user *user,
                                       const char *write_topic, const struct presence_topic *topic,
                                       const void *payload, size_t payload_len, bool *changed,
                                       char *reason)
{
	(void)p;
	(void)user;
	(void)write_topic;
	(void)topic;
	(void)payload;
	(void)payload_len;
	(void)reason;
	*changed = false;
	return PRESENCE_OK;
}

static void cluster_tick(struct presence_plugin *p)
{
	(void)p;
}

static void cluster_widen(struct presence_plugin *p, struct presence_user *user)
{
	(void)p;
	(void)user;
}

const struct presence_backend presence_backend_cluster = {
    .start = cluster_start,
    .end = cluster_end,
    .write = cluster_write,
    .tick = cluster_tick,
    .publish_due = cluster_end,
    .widen = cluster_widen,
};

#endif
