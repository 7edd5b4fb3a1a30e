/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Cluster mode end to end (ctest label "cluster", see cluster.h): sessions, state writes,
 * crashes and stalls of brokers and of Redis, the bounds, a Sentinel failover, and the Redis
 * functions on their own.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"

/* ---------------------------------------------------------------------------------------- */
/* Scenarios                                                                                   */
/* ---------------------------------------------------------------------------------------- */

static void sessions_of_one_user_on_two_brokers_make_one_document_everywhere(void **state)
{
	struct cluster cl;
	struct client *a1, *a2, *q;
	char *last_alice;
	struct msg *m;
	long seq1, seq2, seq3, seq4;

	(void)state;
	reset_seen();
	cluster_start(&cl, false, NULL);
	a1 = client_connect_as(cl.b[0], "alice1", "alice", 5);
	seq1 = await_everywhere(&cl, "alice", true, 1, "{}");
	a2 = client_connect_as(cl.b[1], "alice2", "alice", 4);
	seq2 = await_everywhere(&cl, "alice", true, 2, "{}");
	assert_true(seq2 > seq1);
	/* Without its closing brace, as a query embeds it. */
	last_alice = strdup(last_payload);
	assert_non_null(last_alice);
	last_alice[strlen(last_alice) - 1] = '\0';

	/* The cluster metrics: connected, three brokers alive. */
	{
		struct client *sys = client_connect_as(cl.b[1], "sys", NULL, 4);

		assert_int_equal(client_subscribe(sys, "$SYS/broker/presence/cluster/#", 0), 0);
		bool connected = false, three = false, synced = false;

		/* (The brokers' count may have been 2 for a heartbeat while b3 registered.) */
		while (!connected || !three || !synced) {
			m = client_next_msg(sys, 5000);
			assert_non_null(m);
			if (strcmp(m->topic, "$SYS/broker/presence/cluster/connected") == 0) {
				assert_string_equal(m->payload, "1");
				connected = true;
			} else if (strcmp(m->topic, "$SYS/broker/presence/cluster/brokers") == 0) {
				three = strcmp(m->payload, "3") == 0;
			} else if (strcmp(m->topic, "$SYS/broker/presence/cluster/last_sync") ==
			           0) {
				/* Unix seconds of this century. */
				synced = strlen(m->payload) == 10;
			}
			msg_free(m);
		}
		client_disconnect(sys);
	}
	/* A query on the third broker answers with the cluster's document. */
	q = client_connect_as(cl.b[2], "querier", NULL, 5);
	assert_int_equal(client_subscribe(q, "$CONTROL/presence/v1/response", 1), 1);
	publish_text_ok(q, "$CONTROL/presence/v1",
	                "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[\"alice\"]}]}",
	                1);
	m = client_next_msg(q, 5000);
	assert_non_null(m);
	/* The retained document with ,"known":true appended. */
	assert_non_null(strstr(m->payload, last_alice));
	assert_non_null(strstr(m->payload, ",\"known\":true}"));
	msg_free(m);
	free(last_alice);
	client_disconnect(q);

	client_disconnect(a1);
	seq3 = await_everywhere(&cl, "alice", true, 1, "{}");
	assert_true(seq3 > seq2);
	client_disconnect(a2);
	seq4 = await_everywhere(&cl, "alice", false, 0, "{}");
	assert_true(seq4 > seq3);
	cluster_stop(&cl);
}

static void state_writes_through_any_broker_reach_every_broker(void **state)
{
	struct cluster cl;
	struct client *a1, *a3;
	long seq;

	(void)state;
	reset_seen();
	cluster_start(&cl, false, NULL);
	a1 = client_connect_as(cl.b[0], "alice1", "alice", 4);
	a3 = client_connect_as(cl.b[2], "alice3", "alice", 5);
	await_everywhere(&cl, "alice", true, 2, "{}");
	publish_text_ok(a1, "presence/alice/state", "{\"status\":\"away\"}", 1);
	seq = await_everywhere(&cl, "alice", true, 2, "{\"status\":\"away\"}");
	publish_text_ok(a3, "presence/alice/state/mood", "fine", 1);
	assert_true(await_everywhere(&cl, "alice", true, 2,
	                             "{\"status\":\"away\",\"mood\":\"fine\"}") > seq);
	/* A bad write gets its notice from the broker it arrived at, and changes nothing. */
	assert_int_equal(client_subscribe(a3, "presence/alice/error", 1), 1);
	publish_text_ok(a3, "presence/alice/state", "[1,2]", 1);
	{
		struct msg *m = client_next_msg(a3, 5000);

		assert_non_null(m);
		assert_string_equal(m->topic, "presence/alice/error");
		msg_free(m);
	}
	client_disconnect(a1);
	client_disconnect(a3);
	await_everywhere(&cl, "alice", false, 0, "{}");
	cluster_stop(&cl);
}

/* Publishes count merges {"<prefix><i>":i} from c at QoS 1. */
static void merge_many(struct client *c, const char *prefix, int count)
{
	for (int i = 0; i < count; i++) {
		char payload[64];

		snprintf(payload, sizeof(payload), "{\"%s%d\":%d,\"shared\":\"%s%d\"}", prefix, i,
		         i, prefix, i);
		publish_text_ok(c, "presence/alice/state", payload, 0);
	}
}

static void concurrent_merges_through_two_brokers_lose_no_key(void **state)
{
	struct cluster cl;
	struct client *a1, *a3;
	const int count = 60;

	(void)state;
	reset_seen();
	cluster_start(&cl, false, "plugin_opt_max_keys 1000\nplugin_opt_max_state_bytes 65536\n");
	a1 = client_connect_as(cl.b[0], "alice1", "alice", 4);
	a3 = client_connect_as(cl.b[2], "alice3", "alice", 4);
	assert_int_equal(client_subscribe(a1, "presence/alice/error", 1), 1);
	assert_int_equal(client_subscribe(a3, "presence/alice/error", 1), 1);
	await_everywhere(&cl, "alice", true, 2, "{}");
	/* Interleaved, in bursts, so that commits of both brokers race. */
	for (int round = 0; round < count / 30; round++) {
		char p1[16], p3[16];

		snprintf(p1, sizeof(p1), "a%d_", round);
		snprintf(p3, sizeof(p3), "c%d_", round);
		merge_many(a1, p1, 30);
		merge_many(a3, p3, 30);
	}
	/* The state must end with every key of both (and "shared" from whichever came last). */
	for (int i = 0; i < BROKERS; i++) {
		int last_keys = 0;

		/* Wait for a document with every key (shared is not compared). */
		for (int n = 0;; n++) {
			struct msg *m = client_next_msg(cl.w[i], 5000);
			cJSON *doc, *st;
			int keys;
			long *last;
			cJSON *seq;

			if (m == NULL) {
				redisReply *rst =
				    redis_cmd(cl.redis, "HGET {presence}:u:alice state");
				redisReply *sq = redis_cmd(cl.redis, "HGET {presence}:u:alice seq");
				cJSON *in_redis =
				    rst->type == REDIS_REPLY_STRING ? cJSON_Parse(rst->str) : NULL;

				fail_msg(
				    "broker b%d never showed all %d keys (last: %d keys, seq %ld; "
				    "Redis: %d keys, seq %s)",
				    i + 1, 2 * count + 1, last_keys, *last_seq(i, "alice"),
				    cJSON_GetArraySize(in_redis),
				    sq->type == REDIS_REPLY_STRING ? sq->str : "?");
			}
			doc = msg_json(m);
			st = cJSON_GetObjectItemCaseSensitive(doc, "state");
			seq = cJSON_GetObjectItemCaseSensitive(doc, "seq");
			last = last_seq(i, "alice");
			assert_true((long)seq->valuedouble > *last);
			*last = (long)seq->valuedouble;
			keys = cJSON_GetArraySize(st);
			last_keys = keys;
			cJSON_Delete(doc);
			msg_free(m);
			if (keys == 2 * count + 1) {
				break;
			}
			assert_true(n < 10000);
		}
	}
	/* No write was refused. */
	expect_nothing(a1);
	expect_nothing(a3);
	client_disconnect(a1);
	client_disconnect(a3);
	cluster_stop(&cl);
}

static void a_killed_broker_s_sessions_leave_and_its_restart_shows_the_truth(void **state)
{
	struct broker_opts opts = {0};
	struct cluster cl;
	struct client *bob, *w2;
	long seq_gone, seq;
	char *dir;

	(void)state;
	reset_seen();
	/* With Mosquitto's persistence and a state file, as in production. */
	cluster_start(&cl, false,
	              "persistence true\npersistence_location @DIR@/\n"
	              "plugin_opt_state_file @DIR@/presence-state.json\n");
	bob = client_connect_as(cl.b[1], "bob1", "bob", 4);
	await_everywhere(&cl, "bob", true, 1, "{}");
	/* b2's database holds the retained "bob available" document when it dies. */
	broker_signal(cl.b[1], SIGUSR1);
	if (!broker_log_wait(cl.b[1], "Saving in-memory database", 10000)) {
		fail_msg("b2 did not save its database");
	}
	/* kill -9: the survivors sweep its sessions once its lease runs out. */
	client_drop(cl.w[1]);
	cl.w[1] = NULL;
	broker_crash(cl.b[1]);
	seq_gone = await_everywhere(&cl, "bob", false, 0, "{}");
	client_drop(bob);

	/* The restarted broker (same id, same directory) gets a new epoch and publishes the
	 * cluster's document; its old epoch was swept and stays so. */
	dir = strdup(broker_dir(cl.b[1]));
	assert_non_null(dir);
	opts.dir = dir;
	opts.port = broker_port(cl.b[1]);
	broker_stop(cl.b[1]);
	cl.b[1] = broker_start_opts(cl.conf[1], &opts);
	free(dir);
	await_registered(&cl, 1);
	w2 = client_watch(cl.b[1], "watch2b", "presence/+");
	cl.w[1] = w2;
	/* b2 restored the stale "available" document from its database, but replaced it with
	 * the cluster's before it let anyone in: a new watcher's first message is the truth. */
	reset_seen_of(1);
	{
		struct msg *m = client_next_msg(w2, 5000);
		cJSON *doc;

		assert_non_null(m);
		assert_string_equal(m->topic, "presence/bob");
		assert_true(m->retain);
		doc = msg_json(m);
		assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(doc, "available")));
		seq = (long)cJSON_GetObjectItemCaseSensitive(doc, "seq")->valuedouble;
		assert_int_equal(seq, seq_gone);
		*last_seq(1, "bob") = seq;
		cJSON_Delete(doc);
		msg_free(m);
	}
	/* And it counts new sessions again. */
	bob = client_connect_as(cl.b[1], "bob2", "bob", 4);
	assert_true(await_everywhere(&cl, "bob", true, 1, "{}") > seq_gone);
	client_disconnect(bob);
	await_everywhere(&cl, "bob", false, 0, "{}");
	cluster_stop(&cl);
}

static void a_stopped_broker_is_swept_and_joins_again_when_it_wakes_up(void **state)
{
	struct cluster cl;
	struct client *carol;
	long seq_gone;

	(void)state;
	reset_seen();
	cluster_start(&cl, false, NULL);
	carol = client_connect_as(cl.b[2], "carol1", "carol", 4);
	await_everywhere(&cl, "carol", true, 1, "{}");
	/* SIGSTOP past the lease: declared dead by the others. */
	broker_signal(cl.b[2], SIGSTOP);
	{
		struct client *w3 = cl.w[2];

		cl.w[2] = NULL;
		seq_gone = await_everywhere(&cl, "carol", false, 0, "{}");
		broker_signal(cl.b[2], SIGCONT);
		cl.w[2] = w3;
	}
	/* It wakes up, learns it was swept, registers again, and carol (still connected to it)
	 * is available again everywhere. */
	if (!broker_log_wait(cl.b[2], "declared this broker", 10000)) {
		fail_msg("b3 did not notice that it was declared dead");
	}
	assert_true(await_everywhere(&cl, "carol", true, 1, "{}") > seq_gone);
	client_disconnect(carol);
	await_everywhere(&cl, "carol", false, 0, "{}");
	cluster_stop(&cl);
}

/* The answer of broker b to a getPresence query for user (the caller frees it). */
static struct msg *query_presence(struct broker *b, const char *user)
{
	struct client *q = client_connect_as(b, NULL, NULL, 5);
	char query[256];
	struct msg *m;

	assert_int_equal(client_subscribe(q, "$CONTROL/presence/v1/response", 1), 1);
	snprintf(query, sizeof(query),
	         "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[\"%s\"]}]}", user);
	publish_text_ok(q, "$CONTROL/presence/v1", query, 1);
	m = client_next_msg(q, 5000);
	assert_non_null(m);
	client_disconnect(q);
	return m;
}

/* Kills Redis, checks that state writes are refused with a notice while it is gone, restarts
 * it (empty, or from its AOF) and checks that everyone converges with seq above what was
 * published, without anyone shown offline. */
static void redis_outage(bool aof)
{
	struct cluster cl;
	struct client *a1, *dave;
	struct msg *m;
	long seq_before, seq_after;

	reset_seen();
	cluster_start(&cl, aof, NULL);
	a1 = client_connect_as(cl.b[0], "alice1", "alice", 4);
	assert_int_equal(client_subscribe(a1, "presence/alice/error", 1), 1);
	publish_text_ok(a1, "presence/alice/state", "{\"status\":\"here\"}", 1);
	seq_before = await_everywhere(&cl, "alice", true, 1, "{\"status\":\"here\"}");

	/* From now until Redis is back and alice wrote again, nobody may show her offline. */
	always_available = "alice";
	redis_kill(cl.redis);
	for (int i = 0; i < BROKERS; i++) {
		if (!broker_log_wait(cl.b[i], "lost the connection to Redis", 10000)) {
			fail_msg("b%d did not notice that Redis is gone", i + 1);
		}
	}
	/* Brokers keep serving MQTT; state writes get a clear notice. */
	publish_text_ok(a1, "presence/alice/state", "{\"status\":\"lost\"}", 1);
	m = client_next_msg(a1, 5000);
	assert_non_null(m);
	assert_string_equal(m->topic, "presence/alice/error");
	assert_non_null(strstr(m->payload, "unavailable"));
	msg_free(m);
	dave = client_connect_as(cl.b[1], "dave1", "dave", 4);
	/* erin comes and goes during the outage (a take-over of her client id in between): her
	 * counts wait for Redis with dave's, in order, and leave her offline. */
	{
		struct client *e1 = client_connect_as(cl.b[1], "erin1", "erin", 4);
		struct client *e2 = client_connect_as(cl.b[1], "erin1", "erin", 4);

		assert_true(client_wait_closed(e1, 5000));
		client_drop(e1);
		client_disconnect(e2);
	}
	/* Queries still answer, with the last document the cluster numbered. */
	{
		char want[64];

		m = query_presence(cl.b[2], "alice");
		snprintf(want, sizeof(want), "\"seq\":%ld,", seq_before);
		assert_non_null(strstr(m->payload, "\"available\":true"));
		assert_non_null(strstr(m->payload, want));
		msg_free(m);
	}

	redis_launch(cl.redis);
	for (int i = 0; i < BROKERS; i++) {
		if (!broker_log_wait(cl.b[i], "connected to Redis again", 10000)) {
			fail_msg("b%d did not reconnect", i + 1);
		}
	}
	/* dave, who connected during the outage, is counted once Redis is back. */
	await_everywhere(&cl, "dave", true, 1, "{}");
	/* Writes work again, numbered above everything published before; alice was never shown
	 * offline (await_doc would have seen that document first and failed on its values only
	 * if it came last; check it directly). */
	publish_text_ok(a1, "presence/alice/state", "{\"status\":\"back\"}", 1);
	for (int i = 0; i < BROKERS; i++) {
		for (;;) {
			long s;
			char *p = await_doc(&cl, i, "alice", true, 1, NULL, &s);
			bool done = strstr(p, "\"back\"") != NULL;

			free(p);
			if (done) {
				assert_true(s > seq_before);
				seq_after = s;
				break;
			}
		}
	}
	(void)seq_after;
	always_available = NULL;
	client_disconnect(dave);
	client_disconnect(a1);
	/* An end waits for every broker's confirmation, which comes only once every count a
	 * broker decided before is in: by then erin's were long in. (dave's document may come
	 * before or after alice's.) */
	await_everywhere(&cl, "alice", false, 0, "{}");
	m = query_presence(cl.b[0], "erin");
	if (strstr(m->payload, "\"available\":true") != NULL) {
		fail_msg("erin, whose only sessions came and went while Redis was down, is still "
		         "available: %s",
		         m->payload);
	}
	msg_free(m);
	cluster_stop(&cl);
}

static void redis_killed_and_restarted_empty_is_reseeded(void **state)
{
	(void)state;
	redis_outage(false);
}

static void redis_killed_and_restarted_from_its_aof_resumes(void **state)
{
	(void)state;
	redis_outage(true);
}

/* How Redis stops answering for a while. */
enum redis_stall {
	/* DEBUG SLEEP 4: the whole server sleeps. */
	STALL_DEBUG_SLEEP,
	/* CLIENT PAUSE 4000 ALL: commands wait, connections are accepted. */
	STALL_CLIENT_PAUSE,
	/* SIGSTOP: a half-open server, its sockets open and silent, until SIGCONT. */
	STALL_SIGSTOP,
};

/* While Redis does not answer, every broker accepts a login and answers round trips, and
 * notices (its command deadline) that Redis does not answer; when Redis answers again the
 * login is counted everywhere, and nobody else was shown offline meanwhile. */
static void redis_stall(enum redis_stall how)
{
	struct cluster cl;
	redisContext *c = NULL;
	struct client *erin, *gina;
	struct pollfd pfd;
	redisReply *reply = NULL;

	reset_seen();
	cluster_start(&cl, false, NULL);
	gina = client_connect_as(cl.b[1], "gina1", "gina", 4);
	await_everywhere(&cl, "gina", true, 1, "{}");
	always_available = "gina";
	if (how == STALL_SIGSTOP) {
		assert_int_equal(kill(cl.redis->pid, SIGSTOP), 0);
	} else {
		c = redisConnectUnix(cl.redis->sock);
		assert_true(c != NULL && c->err == 0);
		if (how == STALL_DEBUG_SLEEP) {
			redis_send_only(c, "DEBUG SLEEP 4");
		} else {
			reply = redisCommand(c, "CLIENT PAUSE 4000 ALL");
			assert_true(reply != NULL && reply->type == REDIS_REPLY_STATUS);
			freeReplyObject(reply);
			/* Answered only when the pause ends. */
			redis_send_only(c, "PING");
		}
	}
	erin = client_connect_as(cl.b[0], "erin1", "erin", 4);
	for (int i = 0; i < BROKERS; i++) {
		assert_true(client_sync(cl.w[i], 2000));
	}
	if (how == STALL_SIGSTOP) {
		for (int i = 0; i < BROKERS; i++) {
			if (!broker_log_wait(cl.b[i], "lost the connection to Redis", 10000)) {
				fail_msg("b%d did not give up on the stopped Redis", i + 1);
			}
			assert_true(client_sync(cl.w[i], 2000));
		}
		assert_int_equal(kill(cl.redis->pid, SIGCONT), 0);
	} else {
		/* Redis has not answered our own command yet: it still does not answer. */
		pfd.fd = c->fd;
		pfd.events = POLLIN;
		assert_int_equal(poll(&pfd, 1, 0), 0);
		assert_int_equal(redisGetReply(c, (void **)&reply), REDIS_OK);
		freeReplyObject(reply);
		redisFree(c);
	}
	/* Once it answers again, erin is counted everywhere. */
	await_everywhere(&cl, "erin", true, 1, "{}");
	client_disconnect(erin);
	await_everywhere(&cl, "erin", false, 0, "{}");
	always_available = NULL;
	client_disconnect(gina);
	await_everywhere(&cl, "gina", false, 0, "{}");
	cluster_stop(&cl);
}

static void a_sleeping_redis_does_not_stall_the_brokers(void **state)
{
	(void)state;
	redis_stall(STALL_DEBUG_SLEEP);
}

static void a_paused_redis_does_not_stall_the_brokers(void **state)
{
	(void)state;
	redis_stall(STALL_CLIENT_PAUSE);
}

static void a_stopped_redis_does_not_stall_the_brokers(void **state)
{
	(void)state;
	redis_stall(STALL_SIGSTOP);
}

/* Waits (bounded: about 10 s in steps of 10 ms) until Redis has user waiting out the offline
 * delay. */
static void await_in_grace(struct cluster *cl, const char *user)
{
	for (int tries = 0; tries < 1000; tries++) {
		redisReply *reply = redis_cmd(cl->redis, "ZSCORE {presence}:grace %s", user);
		bool waiting = reply->type == REDIS_REPLY_STRING;
		struct timespec ts = {0, 10 * 1000 * 1000};

		freeReplyObject(reply);
		if (waiting) {
			return;
		}
		nanosleep(&ts, NULL);
	}
	fail_msg("%s never started its offline delay in Redis", user);
}

static void offline_delay_and_keep_state_work_across_brokers(void **state)
{
	struct cluster cl;
	struct client *h1, *h2;
	long seq_on, seq_off;

	(void)state;
	reset_seen();
	cluster_start(&cl, false, "plugin_opt_offline_delay 1\nplugin_opt_keep_state true\n");
	h1 = client_connect_as(cl.b[0], "hal1", "hal", 4);
	publish_text_ok(h1, "presence/hal/state", "{\"status\":\"busy\"}", 1);
	seq_on = await_everywhere(&cl, "hal", true, 1, "{\"status\":\"busy\"}");
	/* Leaving b1 and coming back on b3 within the delay: nobody sees hal offline. */
	always_available = "hal";
	client_disconnect(h1);
	/* b1's count (0) reached Redis, which started the delay: only then the new session,
	 * so that no document shows two sessions in between. */
	await_in_grace(&cl, "hal");
	h2 = client_connect_as(cl.b[2], "hal2", "hal", 4);
	for (int i = 0; i < BROKERS; i++) {
		expect_nothing(cl.w[i]);
	}
	always_available = NULL;
	/* Leaving for good: one unavailable document after the delay, the state kept. */
	client_disconnect(h2);
	seq_off = await_everywhere(&cl, "hal", false, 0, "{\"status\":\"busy\"}");
	assert_true(seq_off > seq_on);
	for (int i = 0; i < BROKERS; i++) {
		expect_nothing(cl.w[i]);
	}
	cluster_stop(&cl);
}

static void a_broker_starts_and_serves_while_redis_is_unreachable(void **state)
{
	char lines[512];
	struct broker *b;
	struct client *w, *ivy;
	struct msg *m;
	char *conf;

	(void)state;
	snprintf(lines, sizeof(lines),
	         "plugin_opt_auth allow\nplugin_opt_acl allow\n"
	         "plugin_opt_cluster_url unix:%s/no-such-redis.sock\n"
	         "plugin_opt_broker_id lonely\n",
	         getenv("PRESENCE_WORK_DIR"));
	conf = broker_conf(lines);
	b = broker_start(conf);
	w = client_watch(b, "watcher", "presence/+");
	ivy = client_connect_as(b, "ivy1", "ivy", 4);
	assert_int_equal(client_subscribe(ivy, "presence/ivy/error", 1), 1);
	publish_text_ok(ivy, "presence/ivy/state", "{\"a\":1}", 1);
	m = client_next_msg(ivy, 5000);
	assert_non_null(m);
	assert_string_equal(m->topic, "presence/ivy/error");
	assert_non_null(strstr(m->payload, "unavailable"));
	msg_free(m);
	/* No document is numbered without Redis. */
	expect_nothing(w);
	client_disconnect(ivy);
	client_disconnect(w);
	broker_stop(b);
	free(conf);
}

/* Whether the process pid has a file whose path contains needle mapped. */
static bool maps_contain(pid_t pid, const char *needle)
{
	char path[64], line[1024];
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "r");
	assert_non_null(f);
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		found = strstr(line, needle) != NULL;
	}
	fclose(f);
	return found;
}

static void hiredis_is_loaded_only_in_cluster_mode(void **state)
{
	char *conf = broker_conf("plugin_opt_auth allow\nplugin_opt_acl allow\n");
	struct broker *single = broker_start(conf);
	struct cluster cl;

	(void)state;
	assert_false(maps_contain(broker_pid(single), "libhiredis"));
	assert_true(maps_contain(broker_pid(single), "mosquitto_presence"));
	broker_stop(single);
	free(conf);
	reset_seen();
	cluster_start(&cl, false, NULL);
	assert_true(maps_contain(broker_pid(cl.b[0]), "libhiredis"));
	cluster_stop(&cl);
}

static void a_clean_stop_hands_its_sessions_over_at_once(void **state)
{
	struct cluster cl;
	struct client *frank;
	redisReply *reply;

	(void)state;
	reset_seen();
	cluster_start(&cl, false, NULL);
	frank = client_connect_as(cl.b[2], "frank1", "frank", 4);
	await_everywhere(&cl, "frank", true, 1, "{}");
	client_drop(cl.w[2]);
	cl.w[2] = NULL;
	client_drop(frank);
	/* frank's disconnect may or may not be seen before the stop: either way he leaves. */
	broker_stop(cl.b[2]);
	cl.b[2] = NULL;
	await_everywhere(&cl, "frank", false, 0, "{}");
	/* b3 deregistered: it holds no lease. */
	reply = redis_cmd(cl.redis, "ZSCORE {presence}:live b3");
	assert_int_equal(reply->type, REDIS_REPLY_NIL);
	freeReplyObject(reply);
	cluster_stop(&cl);
}

static void a_cluster_broker_is_clean_under_valgrind(void **state)
{
	struct broker_opts opts = {.valgrind = true};
	struct redis *redis;
	struct broker *vb, *b2;
	struct client *w, *alice, *bob;
	struct msg *m;
	char *conf1, *conf2;

	(void)state;
	if (!harness_have_valgrind()) {
		skip();
	}
	reset_seen();
	redis = redis_start(false);
	conf1 = cluster_conf(redis, 0, "plugin_opt_keep_state true\n");
	conf2 = cluster_conf(redis, 1, "plugin_opt_keep_state true\n");
	vb = broker_start_opts(conf1, &opts);
	if (!broker_log_wait(vb, "registered in the cluster as broker", 20000)) {
		fail_msg("the broker under valgrind did not register");
	}
	b2 = broker_start(conf2);
	w = client_watch(b2, "watch2", "presence/+");
	/* Sessions, state writes (one refused), a Redis restart, a disconnect: every path of the
	 * link and of the cluster adapter under memcheck. */
	alice = client_connect_as(vb, "alice1", "alice", 5);
	expect_doc(w, "presence/alice", "alice", true, 1, "{}");
	assert_int_equal(client_subscribe(alice, "presence/alice/error", 1), 1);
	publish_text_ok(alice, "presence/alice/state", "{\"status\":\"away\"}", 1);
	expect_doc(w, "presence/alice", "alice", true, 1, "{\"status\":\"away\"}");
	publish_text_ok(alice, "presence/alice/state", "not json", 1);
	m = client_next_msg(alice, 5000);
	assert_non_null(m);
	msg_free(m);
	bob = client_connect_as(b2, "bob1", "bob", 4);
	expect_doc(w, "presence/bob", "bob", true, 1, "{}");
	redis_kill(redis);
	if (!broker_log_wait(vb, "lost the connection to Redis", 20000)) {
		fail_msg("the broker under valgrind did not notice that Redis is gone");
	}
	redis_launch(redis);
	if (!broker_log_wait(vb, "connected to Redis again", 20000)) {
		fail_msg("the broker under valgrind did not reconnect");
	}
	client_disconnect(alice);
	expect_doc(w, "presence/alice", "alice", false, 0, "{\"status\":\"away\"}");
	/* bob stays: the broker under valgrind knows him from the cluster at its stop. */
	broker_stop(vb);
	client_disconnect(bob);
	client_disconnect(w);
	broker_stop(b2);
	redis_stop(redis);
	free(conf1);
	free(conf2);
}

/* ---------------------------------------------------------------------------------------- */
/* Bounds: forgetting, max_users, the stream's budget                                          */
/* ---------------------------------------------------------------------------------------- */

static void the_cluster_forgets_idle_users_and_their_seq_goes_on(void **state)
{
	struct cluster cl;
	struct client *alice, *carol;
	long gone, back;

	(void)state;
	reset_seen();
	cluster_start(&cl, false, "plugin_opt_forget_after 1\n");
	alice = client_connect_as(cl.b[0], "alice1", "alice", 4);
	await_everywhere(&cl, "alice", true, 1, "{}");
	publish_text_ok(alice, "presence/alice/state/status", "away", 1);
	await_everywhere(&cl, "alice", true, 1, "{\"status\":\"away\"}");
	client_disconnect(alice);
	gone = await_everywhere(&cl, "alice", false, 0, "{}");
	assert_int_equal(reply_number(redis_cmd(cl.redis, "ZCARD {presence}:idle")), 1);

	/* A second later every broker removes her document, and Redis holds nothing of her but
	 * the floor. */
	await_forgotten_everywhere(&cl, "alice");
	assert_int_equal(reply_number(redis_cmd(cl.redis, "EXISTS {presence}:u:alice")), 0);
	assert_int_equal(reply_number(redis_cmd(cl.redis, "ZCARD {presence}:idle")), 0);
	assert_int_equal(reply_number(redis_cmd(cl.redis, "ZCARD {presence}:grace")), 0);
	assert_int_equal(reply_number(redis_cmd(cl.redis, "GET {presence}:count")), 0);
	assert_int_equal(reply_number(redis_cmd(cl.redis, "GET {presence}:floor")), gone);

	/* She comes back through another broker: numbered above every seq she had. */
	alice = client_connect_as(cl.b[1], "alice2", "alice", 4);
	back = await_everywhere(&cl, "alice", true, 1, "{}");
	assert_true(back > gone);
	assert_int_equal(reply_number(redis_cmd(cl.redis, "GET {presence}:count")), 1);

	/* Redis loses everything, the floor included: the brokers give theirs back, so a new user
	 * still starts above it. */
	redis_kill(cl.redis);
	for (int i = 0; i < BROKERS; i++) {
		if (!broker_log_wait(cl.b[i], "lost the connection to Redis", 10000)) {
			fail_msg("b%d did not notice that Redis is gone", i + 1);
		}
	}
	redis_launch(cl.redis);
	for (int i = 0; i < BROKERS; i++) {
		if (!broker_log_wait(cl.b[i], "registered in the cluster as broker", 10000)) {
			fail_msg("b%d did not register again", i + 1);
		}
	}
	carol = client_connect_as(cl.b[2], "carol1", "carol", 4);
	assert_true(await_everywhere(&cl, "carol", true, 1, "{}") > gone);
	client_disconnect(carol);
	await_everywhere(&cl, "carol", false, 0, "{}");
	client_disconnect(alice);
	await_everywhere(&cl, "alice", false, 0, "{}");
	cluster_stop(&cl);
}

static void max_users_holds_cluster_wide(void **state)
{
	struct cluster cl;
	struct client *u1, *u2, *u3, *sys;

	(void)state;
	reset_seen();
	cluster_start(&cl, false, "plugin_opt_max_users 2\nplugin_opt_metrics_interval 1\n");
	sys = client_connect_as(cl.b[2], "sys", NULL, 4);
	assert_int_equal(client_subscribe(sys, "$SYS/broker/presence/sessions/untracked", 0), 0);
	u1 = client_connect_as(cl.b[0], "c1", "u1", 4);
	await_everywhere(&cl, "u1", true, 1, "{}");
	client_disconnect(u1);
	await_everywhere(&cl, "u1", false, 0, "{}");
	u2 = client_connect_as(cl.b[1], "c2", "u2", 4);
	await_everywhere(&cl, "u2", true, 1, "{}");
	/* A third user, on a third broker: u1, offline the longest, makes room everywhere (the
	 * two documents may come in either order: b3 publishes u3's from Redis' answer, before it
	 * reads the stream). */
	u3 = client_connect_as(cl.b[2], "c3", "u3", 4);
	for (int i = 0; i < BROKERS; i++) {
		bool forgotten = false, arrived = false;

		while (!forgotten || !arrived) {
			struct msg *m = client_next_msg(cl.w[i], 10000);

			if (m == NULL) {
				fail_msg("b%d: u1 forgotten %d, u3 arrived %d", i + 1, forgotten,
				         arrived);
			}
			forgotten = forgotten ||
			            (strcmp(m->topic, "presence/u1") == 0 && m->payloadlen == 0);
			arrived = arrived || (strcmp(m->topic, "presence/u3") == 0 &&
			                      strstr(m->payload, "\"available\":true") != NULL);
			msg_free(m);
		}
		*last_seq(i, "u1") = 0;
	}
	assert_int_equal(reply_number(redis_cmd(cl.redis, "GET {presence}:count")), 2);
	assert_int_equal(reply_number(redis_cmd(cl.redis, "EXISTS {presence}:u:u1")), 0);
	/* Everyone known is online: a new user gets no presence, its login stands. */
	u1 = client_connect_as(cl.b[2], "c1", "u1", 4);
	{
		struct msg *m;

		for (;;) {
			m = client_next_msg(sys, 10000);
			assert_non_null(m);
			if (m->payloadlen == 1 && m->payload[0] == '1') {
				break;
			}
			msg_free(m);
		}
		msg_free(m);
	}
	assert_true(broker_log_contains(cl.b[2], "max_users (2) users are known to the cluster"));
	assert_int_equal(reply_number(redis_cmd(cl.redis, "EXISTS {presence}:u:u1")), 0);
	for (int i = 0; i < BROKERS; i++) {
		expect_nothing(cl.w[i]);
	}
	client_disconnect(u1);
	client_disconnect(u3);
	client_disconnect(u2);
	client_disconnect(sys);
	cluster_stop(&cl);
}

/* The stream is trimmed at 16 MiB of records (plugin/mosquitto/cluster.c, STREAM_BUDGET). */
#define STREAM_BUDGET_BYTES (16LL * 1024 * 1024)

/* One user with four sessions on one broker writes 8 KB states at QoS 1 for 15 s, as fast as
 * they are acknowledged (no write limit). Redis grows by the stream's budget at most (plus what
 * its allocator rounds up), whatever the rate; a broker stopped meanwhile falls behind the
 * trimmed records and catches up with a snapshot. */
static void a_write_flood_keeps_redis_within_its_budget(void **state)
{
	struct cluster cl;
	struct client *s[4];
	char *value = malloc(8192);
	long long before, after, peak = 0, deadline;
	bool stopped, gap = false;
	long writes = 0;

	(void)state;
	assert_non_null(value);
	reset_seen();
	/* b3 falls behind the trimmed records and catches up with a snapshot: it skips. */
	cluster_seq_gaps_allowed = true;
	/* b3 resumes behind thousands of documents and sends its watcher each one as fast as it
	 * reads the stream; on a loaded machine the test's watcher reads slower, and Mosquitto's
	 * default queue (max_queued_messages 1000) would drop the newest: the broker's documented
	 * overload behaviour, not what this test measures (Redis' budget). */
	cluster_start(&cl, false,
	              "plugin_opt_max_writes_per_second 0\nplugin_opt_max_state_bytes 9000\n"
	              "max_queued_messages 20000\n");
	for (int i = 0; i < 4; i++) {
		char id[16];

		snprintf(id, sizeof(id), "flood%d", i);
		s[i] = client_connect_as(cl.b[0], id, "flood", 4);
	}
	await_everywhere(&cl, "flood", true, 4, "{}");
	{
		redisReply *info = redis_cmd(cl.redis, "INFO memory");
		const char *used = strstr(info->str, "used_memory:");

		before = used != NULL ? strtoll(used + strlen("used_memory:"), NULL, 10) : 0;
		freeReplyObject(info);
	}
	/* b3 stops until records it had not read were trimmed: it missed them. */
	broker_signal(cl.b[2], SIGSTOP);
	stopped = true;
	deadline = mono_ms() + 15000;
	while (mono_ms() < deadline) {
		int n = snprintf(value, 8192, "{\"blob\":\"%ld-", writes);

		memset(value + n, 'x', 8000 - (size_t)n);
		memcpy(value + 8000, "\"}", 3);
		publish_text_ok(s[writes % 4], "presence/flood/state", value, 1);
		writes++;
		if (writes % 200 == 0) {
			redisReply *info = redis_cmd(cl.redis, "INFO memory");
			const char *used = strstr(info->str, "used_memory:");
			long long now = used != NULL ? strtoll(used + 13, NULL, 10) : 0;

			freeReplyObject(info);
			peak = now > peak ? now : peak;
		}
		if (stopped && writes % 50 == 0) {
			redisReply *trimmed = redis_cmd(cl.redis, "GET {presence}:trimmed");

			if (trimmed->type == REDIS_REPLY_STRING) {
				broker_signal(cl.b[2], SIGCONT);
				stopped = false;
				gap = true;
			}
			freeReplyObject(trimmed);
		}
	}
	if (stopped) {
		broker_signal(cl.b[2], SIGCONT);
	}
	after = peak;
	fprintf(stderr,
	        "flood: %ld writes of 8 KB in 15 s; Redis used_memory %lld -> peak %lld "
	        "(%+lld); stream bytes counted %lld\n",
	        writes, before, after, after - before,
	        reply_number(redis_cmd(cl.redis, "GET {presence}:logbytes")));
	assert_true(reply_number(redis_cmd(cl.redis, "GET {presence}:logbytes")) <=
	            STREAM_BUDGET_BYTES);
	/* Stream records cost Redis about what they are counted for, in listpacks; allow half
	 * as much again for its allocator and the stream's index. */
	assert_true(after - before <= STREAM_BUDGET_BYTES + STREAM_BUDGET_BYTES / 2);
	/* The last write reaches every broker, b3 included (after a snapshot if it fell behind
	 * the trimmed records). */
	{
		char last[64];

		snprintf(last, sizeof(last), "\"%ld-", writes - 1);
		for (int i = 0; i < BROKERS; i++) {
			for (;;) {
				long seq;
				char *p = await_doc(&cl, i, "flood", true, 4, NULL, &seq);
				bool done = strstr(p, last) != NULL;

				free(p);
				if (done) {
					break;
				}
			}
		}
	}
	if (gap) {
		assert_true(broker_log_contains(cl.b[2], "trimmed past the last record read"));
	}
	for (int i = 0; i < 4; i++) {
		client_disconnect(s[i]);
	}
	await_everywhere(&cl, "flood", false, 0, "{}");
	free(value);
	cluster_stop(&cl);
}

/* ---------------------------------------------------------------------------------------- */
/* Failover with a replica and Sentinel                                                        */
/* ---------------------------------------------------------------------------------------- */

/* Runs one command on the server at 127.0.0.1:port (printf-style) and returns its reply, or
 * NULL when the server does not answer. */
static redisReply *tcp_cmd(int port, const char *fmt, ...)
{
	struct timeval tv = {2, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	redisReply *reply = NULL;
	va_list ap;

	if (c != NULL && c->err == 0) {
		va_start(ap, fmt);
		reply = redisvCommand(c, fmt, ap);
		va_end(ap);
	}
	redisFree(c);
	return reply;
}

/* Waits (bounded: about 20 s in steps of 20 ms) until the reply of a command on port contains
 * needle; fails with what. */
static void await_reply(int port, const char *command, const char *needle, const char *what)
{
	for (int tries = 0; tries < 1000; tries++) {
		redisReply *reply = tcp_cmd(port, command);
		bool found = false;
		struct timespec ts = {0, 20 * 1000 * 1000};

		if (reply != NULL &&
		    (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS)) {
			found = strstr(reply->str, needle) != NULL;
		} else if (reply != NULL && reply->type == REDIS_REPLY_ARRAY) {
			/* SENTINEL GET-MASTER-ADDR-BY-NAME: an array of strings; SENTINEL REPLICAS:
			 * an array of flat maps. Look at every string in them. */
			for (size_t i = 0; i < reply->elements && !found; i++) {
				redisReply *e = reply->element[i];

				if (e->type == REDIS_REPLY_STRING &&
				    strstr(e->str, needle) != NULL) {
					found = true;
				}

				for (size_t j = 0; e->type == REDIS_REPLY_ARRAY && j < e->elements;
				     j++) {
					if (e->element[j]->type == REDIS_REPLY_STRING &&
					    strstr(e->element[j]->str, needle) != NULL) {
						found = true;
					}
				}
			}
		}
		freeReplyObject(reply);
		if (found) {
			return;
		}
		nanosleep(&ts, NULL);
	}
	fail_msg("%s (no \"%s\" in the reply to %s)", what, needle, command);
}

/* Waits (bounded: about 20 s) until the symlink at path points to target. */
static void await_link(const char *path, const char *target)
{
	char now[300];

	for (int tries = 0; tries < 1000; tries++) {
		ssize_t n = readlink(path, now, sizeof(now) - 1);
		struct timespec ts = {0, 20 * 1000 * 1000};

		if (n > 0) {
			now[n] = '\0';
			if (strcmp(now, target) == 0) {
				return;
			}
		}
		nanosleep(&ts, NULL);
	}
	fail_msg("%s does not point to %s: Sentinel did not run its reconfiguration script", path,
	         target);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
}

/*
 * The README's advice for availability, end to end: a primary, a replica and one Sentinel;
 * the brokers reach Redis through a stable address (here a symlink to a unix socket, which
 * Sentinel's client-reconfig-script moves, as a failover script moves a virtual IP or a DNS
 * name). A forced failover (SENTINEL FAILOVER) promotes the replica, the script moves the
 * address, Sentinel turns the old primary into a replica and disconnects its clients; the
 * brokers reconnect to the new primary and the cluster carries on: nobody is shown offline,
 * sessions and state are what they were, seq keeps growing, every broker agrees.
 */
static void a_sentinel_failover_moves_the_cluster_to_the_promoted_replica(void **state)
{
	const char *work = getenv("PRESENCE_WORK_DIR");
	char dir[256], pdir[300], rdir[300], sdir[300], psock[320], rsock[320], link[300];
	char tmp[320], plog[330], rlog[330], slog[330], sconf[330], script[330], pport_s[16];
	char rport_s[16], sport_s[16], text[4096], primary_of[32];
	struct redis addr = {0};
	struct cluster cl;
	struct client *a1, *b1, *c1;
	pid_t primary, replica, sentinel;
	int pport = harness_free_port(), rport = harness_free_port(), sport = harness_free_port();
	long seq_before, seq_during, seq_after;
	redisReply *reply;

	(void)state;
	reset_seen();
	assert_non_null(work);
	mkdir(work, 0755);
	snprintf(dir, sizeof(dir), "%s/failover-XXXXXX", work);
	assert_non_null(mkdtemp(dir));
	snprintf(pdir, sizeof(pdir), "%s/primary", dir);
	snprintf(rdir, sizeof(rdir), "%s/replica", dir);
	snprintf(sdir, sizeof(sdir), "%s/sentinel", dir);
	assert_int_equal(mkdir(pdir, 0700), 0);
	assert_int_equal(mkdir(rdir, 0700), 0);
	assert_int_equal(mkdir(sdir, 0700), 0);
	snprintf(psock, sizeof(psock), "%s/r.sock", pdir);
	snprintf(rsock, sizeof(rsock), "%s/r.sock", rdir);
	snprintf(link, sizeof(link), "%s/redis.sock", dir);
	snprintf(plog, sizeof(plog), "%s/redis.log", pdir);
	snprintf(rlog, sizeof(rlog), "%s/redis.log", rdir);
	snprintf(slog, sizeof(slog), "%s/sentinel.log", sdir);
	snprintf(pport_s, sizeof(pport_s), "%d", pport);
	snprintf(rport_s, sizeof(rport_s), "%d", rport);
	snprintf(sport_s, sizeof(sport_s), "%d", sport);

	primary = server_spawn((const char *const[]){
	    "--port", pport_s, "--bind", "127.0.0.1", "--unixsocket", psock, "--unixsocketperm",
	    "700", "--save", "", "--appendonly", "no", "--dir", pdir, "--logfile", plog, NULL});
	replica = server_spawn((const char *const[]){"--port",
	                                             rport_s,
	                                             "--bind",
	                                             "127.0.0.1",
	                                             "--unixsocket",
	                                             rsock,
	                                             "--unixsocketperm",
	                                             "700",
	                                             "--save",
	                                             "",
	                                             "--appendonly",
	                                             "no",
	                                             "--dir",
	                                             rdir,
	                                             "--logfile",
	                                             rlog,
	                                             "--replicaof",
	                                             "127.0.0.1",
	                                             pport_s,
	                                             NULL});
	await_reply(pport, "PING", "PONG", "the primary did not start");
	await_reply(rport, "INFO replication", "master_link_status:up",
	            "the replica did not sync with the primary");
	assert_int_equal(symlink(psock, link), 0);

	/* The script Sentinel runs at the end of a failover: <master> <role> <state> <from-ip>
	 * <from-port> <to-ip> <to-port>. It points the address at the new primary's socket. */
	snprintf(script, sizeof(script), "%s/reconfig.sh", sdir);
	snprintf(tmp, sizeof(tmp), "%s/redis.sock.new", dir);
	snprintf(text, sizeof(text),
	         "#!/bin/sh\n"
	         "case \"$7\" in\n"
	         "%d) target=%s ;;\n"
	         "%d) target=%s ;;\n"
	         "*) exit 0 ;;\n"
	         "esac\n"
	         "ln -sfn \"$target\" %s && mv -Tf %s %s\n",
	         pport, psock, rport, rsock, tmp, tmp, link);
	write_file(script, text, 0700);
	snprintf(sconf, sizeof(sconf), "%s/sentinel.conf", sdir);
	snprintf(text, sizeof(text),
	         "port %d\n"
	         "bind 127.0.0.1\n"
	         "dir %s\n"
	         "logfile %s\n"
	         "sentinel monitor m 127.0.0.1 %d 1\n"
	         /* No failover of its own during the test: only the forced one. */
	         "sentinel down-after-milliseconds m 60000\n"
	         "sentinel failover-timeout m 20000\n"
	         "sentinel client-reconfig-script m %s\n",
	         sport, sdir, slog, pport, script);
	write_file(sconf, text, 0600);
	sentinel = server_spawn((const char *const[]){sconf, "--sentinel", NULL});
	await_reply(sport, "SENTINEL REPLICAS m", rport_s, "Sentinel did not discover the replica");

	snprintf(addr.sock, sizeof(addr.sock), "%s", link);
	memset(&cl, 0, sizeof(cl));
	/* The brokers' address: the link Sentinel's script moves. */
	cl.redis = &addr;
	for (int i = 0; i < BROKERS; i++) {
		cluster_join(&cl, i, NULL);
	}
	a1 = client_connect_as(cl.b[0], "alice1", "alice", 4);
	publish_text_ok(a1, "presence/alice/state", "{\"status\":\"before\"}", 1);
	await_everywhere(&cl, "alice", true, 1, "{\"status\":\"before\"}");
	b1 = client_connect_as(cl.b[1], "bob1", "bob", 4);
	seq_before = await_everywhere(&cl, "bob", true, 1, "{}");
	/* Everything so far is on the replica before the failover starts. */
	reply = tcp_cmd(pport, "WAIT 1 10000");
	assert_non_null(reply);
	assert_int_equal(reply->type, REDIS_REPLY_INTEGER);
	assert_int_equal(reply->integer, 1);
	freeReplyObject(reply);

	always_available = "alice";
	reply = tcp_cmd(sport, "SENTINEL FAILOVER m");
	assert_non_null(reply);
	if (reply->type != REDIS_REPLY_STATUS) {
		fail_msg("SENTINEL FAILOVER: %s",
		         reply->type == REDIS_REPLY_ERROR ? reply->str : "?");
	}
	freeReplyObject(reply);
	await_link(link, rsock);
	snprintf(primary_of, sizeof(primary_of), "%d", rport);
	await_reply(sport, "SENTINEL GET-MASTER-ADDR-BY-NAME m", primary_of,
	            "Sentinel did not switch to the replica");
	/* Until Sentinel gets round to the old primary (its next INFO, up to 10 s), the brokers
	 * still talk to it, and what they write there is lost when it becomes a replica: a
	 * session, a state write and their documents in that window. */
	c1 = client_connect_as(cl.b[2], "carol1", "carol", 4);
	await_everywhere(&cl, "carol", true, 1, "{}");
	publish_text_ok(a1, "presence/alice/state", "{\"status\":\"during\"}", 1);
	seq_during = await_everywhere(&cl, "alice", true, 1, "{\"status\":\"during\"}");
	/* The old primary becomes a replica of the new one; Sentinel disconnects its clients,
	 * and the brokers reconnect through the moved address. */
	await_reply(pport, "INFO replication", "role:slave",
	            "Sentinel did not turn the old primary into a replica");
	for (int i = 0; i < BROKERS; i++) {
		if (!broker_log_wait(cl.b[i], "connected to Redis again", 20000)) {
			fail_msg("b%d did not reconnect after the failover", i + 1);
		}
	}
	/* The cluster carries on on the new primary: a write, numbered above everything before,
	 * seen the same everywhere, merged into the state written during the switch (which the
	 * new primary lacked: the brokers put it back); alice was never shown offline. */
	publish_text_ok(a1, "presence/alice/state", "{\"mood\":\"fine\"}", 1);
	seq_after =
	    await_everywhere(&cl, "alice", true, 1, "{\"status\":\"during\",\"mood\":\"fine\"}");
	assert_true(seq_after > seq_during && seq_during > seq_before);
	/* carol's session, counted on the lost primary, is counted again: her leaving is seen. */
	client_disconnect(c1);
	await_everywhere(&cl, "carol", false, 0, "{}");
	reply = redis_cmd(&addr, "ROLE");
	assert_int_equal(reply->type, REDIS_REPLY_ARRAY);
	assert_string_equal(reply->element[0]->str, "master");
	freeReplyObject(reply);
	always_available = NULL;
	client_disconnect(b1);
	await_everywhere(&cl, "bob", false, 0, "{}");
	client_disconnect(a1);
	await_everywhere(&cl, "alice", false, 0, "{}");

	for (int i = 0; i < BROKERS; i++) {
		client_disconnect(cl.w[i]);
		broker_stop(cl.b[i]);
		free(cl.conf[i]);
	}
	kill(sentinel, SIGKILL);
	kill(replica, SIGKILL);
	kill(primary, SIGKILL);
	waitpid(sentinel, NULL, 0);
	waitpid(replica, NULL, 0);
	waitpid(primary, NULL, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(
	        sessions_of_one_user_on_two_brokers_make_one_document_everywhere, harness_teardown),
	    cmocka_unit_test_teardown(state_writes_through_any_broker_reach_every_broker,
	                              harness_teardown),
	    cmocka_unit_test_teardown(concurrent_merges_through_two_brokers_lose_no_key,
	                              harness_teardown),
	    cmocka_unit_test_teardown(
	        a_killed_broker_s_sessions_leave_and_its_restart_shows_the_truth, harness_teardown),
	    cmocka_unit_test_teardown(a_stopped_broker_is_swept_and_joins_again_when_it_wakes_up,
	                              harness_teardown),
	    cmocka_unit_test_teardown(redis_killed_and_restarted_empty_is_reseeded,
	                              harness_teardown),
	    cmocka_unit_test_teardown(redis_killed_and_restarted_from_its_aof_resumes,
	                              harness_teardown),
	    cmocka_unit_test_teardown(a_sleeping_redis_does_not_stall_the_brokers,
	                              harness_teardown),
	    cmocka_unit_test_teardown(a_paused_redis_does_not_stall_the_brokers, harness_teardown),
	    cmocka_unit_test_teardown(a_stopped_redis_does_not_stall_the_brokers, harness_teardown),
	    cmocka_unit_test_teardown(offline_delay_and_keep_state_work_across_brokers,
	                              harness_teardown),
	    cmocka_unit_test_teardown(a_broker_starts_and_serves_while_redis_is_unreachable,
	                              harness_teardown),
	    cmocka_unit_test_teardown(hiredis_is_loaded_only_in_cluster_mode, harness_teardown),
	    cmocka_unit_test_teardown(a_cluster_broker_is_clean_under_valgrind, harness_teardown),
	    cmocka_unit_test_teardown(the_cluster_forgets_idle_users_and_their_seq_goes_on,
	                              harness_teardown),
	    cmocka_unit_test_teardown(max_users_holds_cluster_wide, harness_teardown),
	    cmocka_unit_test_teardown(a_write_flood_keeps_redis_within_its_budget,
	                              harness_teardown),
	    cmocka_unit_test_teardown(a_clean_stop_hands_its_sessions_over_at_once,
	                              harness_teardown),
	    cmocka_unit_test_teardown(a_sentinel_failover_moves_the_cluster_to_the_promoted_replica,
	                              harness_teardown),
	};

	/* PRESENCE_TEST_FILTER (a cmocka pattern such as "*merges*") runs some scenarios only. */
	if (getenv("PRESENCE_TEST_FILTER") != NULL) {
		cmocka_set_test_filter(getenv("PRESENCE_TEST_FILTER"));
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
