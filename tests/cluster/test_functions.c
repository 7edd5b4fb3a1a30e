/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The Redis functions of cluster mode (plugin/redis/presence_v2.lua) called directly on a real
 * server, as a broker calls them, in the orders a network can deliver: epochs that fence old
 * incarnations, seq floors, compare-and-set, counts of one broker that arrive late, the barrier
 * a user waits for before it goes offline, two brokers with one id, the timers' hold after
 * a stall, and privacy choices.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

/* A count of n sessions of alice from broker b (epoch e), the broker's count number cseq. */
static const char *count(struct redis *r, char *buf, const char *b, const char *e, const char *n,
                         const char *floor, const char *cseq)
{
	char set[64];

	snprintf(set, sizeof(set), K "bu:%s:%s", b, e);
	return fcall(r, buf, 64,
	             (const char *const[]){"pv2_contrib", KEYS(K "u:alice", set), BOUNDS, b, e, n,
	                                   "0", floor, "alice", "0", cseq, NULL});
}

/* Registers broker b as running instance inst (lease 60 s) into epoch (or the clash). */
static const char *enroll(struct redis *r, char *epoch, size_t size, const char *b,
                          const char *inst)
{
	return fcall(r, epoch, size,
	             (const char *const[]){"pv2_register", KEYS(K "u:", K "none"), b, "60000", "g1",
	                                   inst, NULL});
}

static const char *field(struct redis *r, char *buf, size_t size, const char *key,
                         const char *name);

/* The timers' end of offline waits, as a broker calls it (pv2_grace_due; a gap so long that
 * the test's own pace starts no hold): "offline <seq>" when alice went offline, "stays" when
 * she did not (not due, waiting for a barrier, or held). */
static const char *expire_alice(struct redis *r, char *buf)
{
	char n[64], seq[32];

	fcall(r, n, sizeof(n),
	      (const char *const[]){"pv2_grace_due", KEYS(K "u:", K "none"), BOUNDS, "200",
	                            "600000", "1000", "0", NULL});
	if (strcmp(n, "0") == 0) {
		return "stays";
	}
	assert_string_equal(n, "1");
	assert_string_equal(field(r, buf, 64, K "u:alice", "avail"), "0");
	snprintf(buf, 64, "offline %s", field(r, seq, sizeof(seq), K "u:alice", "seq"));
	return buf;
}

/* Broker b (epoch e) confirms barrier bar. */
static const char *confirm(struct redis *r, char *buf, const char *b, const char *e,
                           const char *bar)
{
	return fcall(r, buf, 64,
	             (const char *const[]){"pv2_sync", KEYS(K "u:", K "none"), b, e, bar, NULL});
}

static const char *field(struct redis *r, char *buf, size_t size, const char *key, const char *name)
{
	redisReply *reply = redis_cmd(r, "HGET %s %s", key, name);

	snprintf(buf, size, "%s", reply->type == REDIS_REPLY_STRING ? reply->str : "(nil)");
	freeReplyObject(reply);
	return buf;
}

static struct redis *functions_start(void)
{
	struct redis *r = redis_start(false);

	redis_load_library(r);
	return r;
}

static void the_functions_fence_old_epochs_and_keep_seq_above_floors(void **state)
{
	struct redis *r = functions_start();
	char e1[32], e2[32], buf[64];
	redisReply *reply;

	(void)state;
	/* Epoch 1; one session of alice. */
	enroll(r, e1, sizeof(e1), "b1", "i1");
	assert_string_equal(count(r, buf, "b1", e1, "1", "0", "1"), "OK 1");
	/* The broker restarts (a new instance, once the old one's lease is gone): epoch 2 >
	 * epoch 1, and epoch 1 waits to be swept. */
	reply = redis_cmd(r, "ZADD " K "live 1 b1");
	freeReplyObject(reply);
	enroll(r, e2, sizeof(e2), "b1", "i2");
	assert_true(strtoll(e2, NULL, 10) > strtoll(e1, NULL, 10));
	reply = redis_cmd(r, "LRANGE " K "dead 0 -1");
	assert_int_equal(reply->elements, 1);
	assert_true(strstr(reply->element[0]->str, e1) != NULL);
	freeReplyObject(reply);
	/* The generation is kept: only a Redis that lost its data gets a new one. */
	reply = redis_cmd(r, "GET " K "gen");
	assert_string_equal(reply->str, "g1");
	freeReplyObject(reply);
	/* A late write of the old epoch is refused, whatever it says. */
	assert_string_equal(count(r, buf, "b1", e1, "5", "0", "9"), "STALE");
	/* The new epoch counts (its count numbers start again); the floor keeps seq above what
	 * a broker published. */
	assert_string_equal(count(r, buf, "b1", e2, "2", "1000", "1"), "OK 1001");
	/* The sweeper's tombstone for epoch 1 comes too late to touch epoch 2's count. */
	assert_string_equal(count(r, buf, "b1", e1, "-1", "0", "0"), "STALE");
	assert_string_equal(field(r, buf, sizeof(buf), K "u:alice", "sess"), "2");
	/* A compare-and-set on an old seq is a conflict carrying the current document. */
	assert_string_equal(
	    fcall(r, buf, sizeof(buf),
	          (const char *const[]){"pv2_cas", KEYS(K "u:alice", K "none"), BOUNDS, "b1", e2,
	                                "alice", "1", "{\"a\":1}", "0", "0", NULL}),
	    "CONFLICT 1001");
	assert_string_equal(
	    fcall(r, buf, sizeof(buf),
	          (const char *const[]){"pv2_cas", KEYS(K "u:alice", K "none"), BOUNDS, "b1", e2,
	                                "alice", "1001", "{\"a\":1}", "0", "0", NULL}),
	    "OK 1002");
	/* The state is stored byte for byte (no cjson round trip). */
	assert_string_equal(field(r, buf, sizeof(buf), K "u:alice", "state"), "{\"a\":1}");
	/* A write that reaches Redis after the user went offline (its session ended on another
	 * broker first): without keep_state it is refused, the state went with the session. */
	reply = redis_cmd(r, "HSET " K "u:alice avail 0");
	freeReplyObject(reply);
	assert_string_equal(
	    fcall(r, buf, sizeof(buf),
	          (const char *const[]){"pv2_cas", KEYS(K "u:alice", K "none"), BOUNDS, "b1", e2,
	                                "alice", "1002", "{\"b\":1}", "0", "0", NULL}),
	    "OFFLINE");
	assert_string_equal(
	    fcall(r, buf, sizeof(buf),
	          (const char *const[]){"pv2_cas", KEYS(K "u:alice", K "none"), BOUNDS, "b1", e2,
	                                "alice", "1002", "{\"b\":1}", "0", "1", NULL}),
	    "OK 1003");
	redis_stop(r);
}

/* A broker gave up a connection with a count on it (a command deadline) and sent the count
 * again, and newer ones, on a new connection; the old connection's copy is executed last. */
static void a_late_count_of_a_broker_never_undoes_a_newer_one(void **state)
{
	struct redis *r = functions_start();
	char e[32], buf[64];

	(void)state;
	enroll(r, e, sizeof(e), "b1", "i1");
	assert_string_equal(count(r, buf, "b1", e, "1", "0", "7"), "OK 1");
	assert_string_equal(count(r, buf, "b1", e, "2", "0", "8"), "OK 2");
	/* Count 7 again (the copy on the old connection), and an even older one. */
	assert_string_equal(count(r, buf, "b1", e, "1", "0", "7"), "OLD");
	assert_string_equal(count(r, buf, "b1", e, "0", "0", "3"), "OLD");
	assert_string_equal(field(r, buf, sizeof(buf), K "u:alice", "sess"), "2");
	{
		char want[64];

		snprintf(want, sizeof(want), "%s:2:8", e);
		assert_string_equal(field(r, buf, sizeof(buf), K "u:alice", "b:b1"), want);
	}
	redis_stop(r);
}

/*
 * b2 counts a new session of alice while b1 counts the end of her other one, and b1's count
 * arrives first: alice must not go offline. She waits for a barrier that b2 confirms only after
 * its own count was answered, so the count comes first and she stays.
 */
static void a_user_goes_offline_only_once_every_live_broker_confirmed_its_barrier(void **state)
{
	struct redis *r = functions_start();
	char e1[32], e2[32], buf[64], bar[32];
	redisReply *reply;

	(void)state;
	enroll(r, e1, sizeof(e1), "b1", "i1");
	enroll(r, e2, sizeof(e2), "b2", "i2");
	assert_string_equal(count(r, buf, "b1", e1, "1", "0", "1"), "OK 1");
	/* b1: no session left. Nothing is published; alice waits for barrier 1. */
	assert_string_equal(count(r, buf, "b1", e1, "0", "0", "2"), "SAME 1");
	assert_string_equal(field(r, bar, sizeof(bar), K "u:alice", "bar"), "1");
	reply = redis_cmd(r, "XREVRANGE " K "log + - COUNT 1");
	assert_int_equal(reply->elements, 1);
	assert_string_equal(reply->element[0]->element[1]->element[0]->str, "y");
	assert_string_equal(reply->element[0]->element[1]->element[1]->str, "1");
	freeReplyObject(reply);
	/* Neither broker confirmed: she waits. b1 alone is not enough. */
	assert_string_equal(expire_alice(r, buf), "stays");
	assert_string_equal(confirm(r, buf, "b1", e1, bar), "OK");
	assert_string_equal(expire_alice(r, buf), "stays");
	/* b2's count of her new session arrives before b2's confirmation: she stays, with one
	 * session, and waits no more. */
	assert_string_equal(count(r, buf, "b2", e2, "1", "0", "1"), "SAME 1");
	assert_string_equal(confirm(r, buf, "b2", e2, bar), "OK");
	assert_string_equal(expire_alice(r, buf), "stays");
	assert_string_equal(field(r, buf, sizeof(buf), K "u:alice", "avail"), "1");
	/* Now b2's session ends too: a new barrier, and once both confirmed it she leaves. */
	assert_string_equal(count(r, buf, "b2", e2, "0", "0", "2"), "SAME 1");
	assert_string_equal(field(r, bar, sizeof(bar), K "u:alice", "bar"), "2");
	assert_string_equal(confirm(r, buf, "b2", e2, bar), "OK");
	assert_string_equal(expire_alice(r, buf), "stays");
	assert_string_equal(confirm(r, buf, "b1", e1, bar), "OK");
	assert_string_equal(expire_alice(r, buf), "offline 2");
	assert_string_equal(field(r, buf, sizeof(buf), K "u:alice", "avail"), "0");
	/* A broker that is not live (declared dead, stopped) is not waited for. */
	assert_string_equal(count(r, buf, "b1", e1, "1", "0", "3"), "OK 3");
	assert_string_equal(count(r, buf, "b1", e1, "0", "0", "4"), "SAME 3");
	field(r, bar, sizeof(bar), K "u:alice", "bar");
	assert_string_equal(
	    fcall(r, buf, sizeof(buf),
	          (const char *const[]){"pv2_deregister", KEYS(K "u:", K "none"), "b2", e2, NULL}),
	    "1");
	assert_string_equal(confirm(r, buf, "b1", e1, bar), "OK");
	assert_string_equal(expire_alice(r, buf), "offline 4");
	/* A broker that is not live confirms nothing. */
	assert_string_equal(confirm(r, buf, "b2", e2, "99"), "STALE");
	redis_stop(r);
}

/* A second running broker registering an id another one holds is refused and fences nothing;
 * once the first one stopped, it registers. */
static void a_second_broker_with_the_same_id_is_refused(void **state)
{
	struct redis *r = functions_start();
	char e1[32], clash[32], e2[32], buf[64];

	(void)state;
	enroll(r, e1, sizeof(e1), "b1", "instance-a");
	assert_string_equal(count(r, buf, "b1", e1, "1", "0", "1"), "OK 1");
	assert_string_equal(enroll(r, clash, sizeof(clash), "b1", "instance-b"), "CLASH");
	/* The first one's epoch is untouched and still counts. */
	assert_string_equal(field(r, buf, sizeof(buf), K "epoch", "b1"), e1);
	assert_string_equal(count(r, buf, "b1", e1, "2", "0", "2"), "OK 2");
	/* The same instance registering again (after it was declared dead) is not a clash. */
	assert_string_equal(field(r, buf, sizeof(buf), K "owner", "b1"), "instance-a");
	assert_string_equal(
	    fcall(r, buf, sizeof(buf),
	          (const char *const[]){"pv2_deregister", KEYS(K "u:", K "none"), "b1", e1, NULL}),
	    "1");
	enroll(r, e2, sizeof(e2), "b1", "instance-b");
	assert_true(strtoll(e2, NULL, 10) > strtoll(e1, NULL, 10));
	assert_string_equal(field(r, buf, sizeof(buf), K "owner", "b1"), "instance-b");
	redis_stop(r);
}

/* The timers notice a stall shorter than a lease (any gap longer than they are told) and hold
 * the sweeps; and a sweeper never declares itself dead. */
static void a_stall_holds_the_sweeps_and_no_sweeper_claims_itself(void **state)
{
	struct redis *r = functions_start();
	char e1[32], e2[32], buf[64];
	redisReply *reply;

	(void)state;
	enroll(r, e1, sizeof(e1), "b1", "i1");
	enroll(r, e2, sizeof(e2), "b2", "i2");
	/* Both leases ran out (as when Redis was paused): b1 sweeps, and claims only b2. */
	reply = redis_cmd(r, "ZADD " K "live 1 b1 1 b2");
	freeReplyObject(reply);
	assert_string_equal(fcall(r, buf, sizeof(buf),
	                          (const char *const[]){"pv2_sweep_claim", KEYS(K "u:", K "none"),
	                                                "8", "100000", "1000", "b1", NULL}),
	                    "b2");
	reply = redis_cmd(r, "ZSCORE " K "live b1");
	assert_int_equal(reply->type, REDIS_REPLY_STRING);
	freeReplyObject(reply);
	/* The last timer call was 2 s ago, longer than the 150 ms gap a broker allows: hold. */
	reply = redis_cmd(r, "EVAL %s 0",
	                  "local t = redis.call('TIME') "
	                  "return redis.call('SET', '{presence}:seen', "
	                  "tostring(t[1] * 1000 - 2000))");
	freeReplyObject(reply);
	assert_string_equal(fcall(r, buf, sizeof(buf),
	                          (const char *const[]){"pv2_sweep_claim", KEYS(K "u:", K "none"),
	                                                "8", "150", "1000", "b2", NULL}),
	                    "");
	reply = redis_cmd(r, "GET " K "hold");
	assert_int_equal(reply->type, REDIS_REPLY_STRING);
	freeReplyObject(reply);
	/* alice's last session ends and b1, the one live broker, confirms her barrier: she is
	 * due, but the hold keeps her; once it is over she goes offline. */
	assert_string_equal(count(r, buf, "b1", e1, "1", "0", "1"), "OK 1");
	assert_string_equal(count(r, buf, "b1", e1, "0", "0", "2"), "SAME 1");
	assert_string_equal(confirm(r, buf, "b1", e1, "1"), "OK");
	assert_string_equal(expire_alice(r, buf), "stays");
	freeReplyObject(redis_cmd(r, "DEL " K "hold"));
	assert_string_equal(expire_alice(r, buf), "offline 2");
	redis_stop(r);
}

/* A privacy write of alice through broker b1 (epoch e): choice, the broker's choice before, and
 * whether it shows her to more watchers. */
static const char *choose(struct redis *r, char *buf, const char *e, const char *choice,
                          const char *expected, const char *widens)
{
	return fcall(r, buf, 64,
	             (const char *const[]){"pv2_privacy", KEYS(K "u:alice", K "none"), BOUNDS, "b1",
	                                   e, "alice", choice, expected, widens, "0", NULL});
}

/* The fields of the stream's last record, joined by spaces ("u alice p ..."). */
static const char *last_record(struct redis *r, char *buf, size_t size)
{
	redisReply *reply = redis_cmd(r, "XREVRANGE " K "log + - COUNT 1");
	size_t len = 0;

	assert_int_equal(reply->type, REDIS_REPLY_ARRAY);
	assert_int_equal(reply->elements, 1);
	buf[0] = '\0';
	for (size_t i = 0; i < reply->element[0]->element[1]->elements; i++) {
		len += (size_t)snprintf(buf + len, size - len, "%s%s", i > 0 ? " " : "",
		                        reply->element[0]->element[1]->element[i]->str);
		assert_true(len < size);
	}
	freeReplyObject(reply);
	return buf;
}

/* Privacy choices are kept with the user and carried by the stream: alone when nobody gains
 * sight, with the document (seq jumped to Redis' clock, since = now) when someone may; a
 * groups file re-read asks for the same jump; forgetting the user forgets the choice. */
static void privacy_choices_are_kept_with_the_user_and_jump_the_document(void **state)
{
	struct redis *r = functions_start();
	char e1[32], buf[64], rec[256], want[128], seq[32], since[32];

	(void)state;
	enroll(r, e1, sizeof(e1), "b1", "i1");
	assert_string_equal(count(r, buf, "b1", e1, "1", "0", "1"), "OK 1");
	/* Narrowing: the choice alone, no document. */
	assert_string_equal(choose(r, buf, e1, "{\"visible_to\":\"nobody\"}", "", "0"), "OK");
	assert_string_equal(field(r, buf, sizeof(buf), K "u:alice", "priv"),
	                    "{\"visible_to\":\"nobody\"}");
	assert_string_equal(last_record(r, rec, sizeof(rec)),
	                    "u alice p {\"visible_to\":\"nobody\"}");
	assert_string_equal(field(r, buf, sizeof(buf), K "u:alice", "seq"), "1");
	/* The same choice again changes nothing. */
	assert_string_equal(choose(r, buf, e1, "{\"visible_to\":\"nobody\"}", "", "0"), "SAME");
	/* Widening: the document again, seq jumped to Redis' clock in ms, since = now. */
	assert_string_equal(choose(r, buf, e1, "", "{\"visible_to\":\"nobody\"}", "1"), "OK");
	assert_string_equal(field(r, buf, sizeof(buf), K "u:alice", "priv"), "(nil)");
	assert_string_not_equal(field(r, buf, sizeof(buf), K "u:alice", "pid"), "(nil)");
	field(r, seq, sizeof(seq), K "u:alice", "seq");
	field(r, since, sizeof(since), K "u:alice", "since");
	assert_true(strtoll(seq, NULL, 10) > 1000000000000LL);
	assert_string_equal(seq, since);
	snprintf(want, sizeof(want), "u alice q %s a 1 n 1 t %s s {} p ", seq, since);
	assert_string_equal(last_record(r, rec, sizeof(rec)), want);
	/* A broker that reckoned from another choice than Redis has: jumped anyway. */
	assert_string_equal(choose(r, buf, e1, "{\"visible_to\":\"group\"}", "", "0"), "OK");
	assert_string_equal(
	    choose(r, buf, e1, "{\"visible_to\":[\"bob\"]}", "{\"visible_to\":\"nobody\"}", "0"),
	    "OK");
	assert_true(strtoll(field(r, buf, sizeof(buf), K "u:alice", "seq"), NULL, 10) >
	            strtoll(seq, NULL, 10));
	assert_non_null(strstr(last_record(r, rec, sizeof(rec)), " p {\"visible_to\":[\"bob\"]}"));
	/* A re-read groups file: the document again, jumped, the choice unchanged. */
	field(r, seq, sizeof(seq), K "u:alice", "seq");
	assert_string_equal(fcall(r, buf, sizeof(buf),
	                          (const char *const[]){"pv2_widen", KEYS(K "u:alice", K "none"),
	                                                "16777216", "b1", e1, "alice", "0", NULL}),
	                    "OK");
	assert_true(strtoll(field(r, buf, sizeof(buf), K "u:alice", "seq"), NULL, 10) >
	            strtoll(seq, NULL, 10));
	assert_null(strstr(last_record(r, rec, sizeof(rec)), " p "));
	assert_string_equal(field(r, buf, sizeof(buf), K "u:alice", "priv"),
	                    "{\"visible_to\":[\"bob\"]}");
	assert_string_equal(fcall(r, buf, sizeof(buf),
	                          (const char *const[]){"pv2_widen", KEYS(K "u:bob", K "none"),
	                                                "16777216", "b1", e1, "bob", "0", NULL}),
	                    "NONE");
	/* A write of an epoch that is not live is refused. */
	assert_string_equal(choose(r, buf, "1", "", "", "1"), "STALE");
	/* A user Redis does not hold yet (its count is on its way) is made with the choice. */
	assert_string_equal(fcall(r, buf, sizeof(buf),
	                          (const char *const[]){
	                              "pv2_privacy", KEYS(K "u:carol", K "none"), BOUNDS, "b1", e1,
	                              "carol", "{\"visible_to\":\"nobody\"}", "", "0", "0", NULL}),
	                    "OK");
	assert_string_equal(field(r, buf, sizeof(buf), K "u:carol", "priv"),
	                    "{\"visible_to\":\"nobody\"}");
	assert_string_equal(field(r, buf, sizeof(buf), K "u:carol", "avail"), "0");
	/* A Redis that lost its data: a count makes dave again, without his choice (no pid),
	 * and a broker's seed brings it back; a choice Redis knows is not replaced. */
	assert_string_equal(
	    fcall(r, buf, sizeof(buf),
	          (const char *const[]){"pv2_contrib", KEYS(K "u:dave", K "bu:b1"), BOUNDS, "b1",
	                                e1, "1", "0", "0", "dave", "0", "3", NULL}),
	    "OK 1");
	assert_string_equal(field(r, buf, sizeof(buf), K "u:dave", "pid"), "(nil)");
	/* A seed of the default choice writes nothing (most users never choose). */
	assert_string_equal(
	    fcall(r, buf, sizeof(buf),
	          (const char *const[]){"pv2_seed", KEYS(K "u:dave", K "none"), BOUNDS, "dave", "1",
	                                "1", "1", "5", "{}", "0", "", NULL}),
	    "SAME");
	assert_string_equal(field(r, buf, sizeof(buf), K "u:dave", "pid"), "(nil)");
	for (int i = 0; i < 2; i++) {
		assert_string_equal(
		    fcall(r, buf, sizeof(buf),
		          (const char *const[]){"pv2_seed", KEYS(K "u:dave", K "none"), BOUNDS,
		                                "dave", "1", "1", "1", "5", "{}", "0",
		                                i == 0 ? "{\"visible_to\":\"nobody\"}" : "", NULL}),
		    "SAME");
		assert_string_equal(field(r, buf, sizeof(buf), K "u:dave", "priv"),
		                    "{\"visible_to\":\"nobody\"}");
		assert_string_equal(field(r, buf, sizeof(buf), K "u:dave", "pid"), "0-0");
	}
	/* Forgotten (offline for forget_after): the choice goes with the user. */
	assert_non_null(strstr(count(r, buf, "b1", e1, "0", "0", "2"), "SAME "));
	freeReplyObject(redis_cmd(r, "ZADD " K "idle 1 alice 1 carol"));
	assert_string_equal(fcall(r, buf, sizeof(buf),
	                          (const char *const[]){"pv2_forget_due", KEYS(K "u:", K "none"),
	                                                BOUNDS, "10", "600000", "1000", "1", NULL}),
	                    "2");
	assert_int_equal(reply_number(redis_cmd(r, "EXISTS " K "u:alice " K "u:carol")), 0);
	redis_stop(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(the_functions_fence_old_epochs_and_keep_seq_above_floors,
	                              harness_teardown),
	    cmocka_unit_test_teardown(a_late_count_of_a_broker_never_undoes_a_newer_one,
	                              harness_teardown),
	    cmocka_unit_test_teardown(
	        a_user_goes_offline_only_once_every_live_broker_confirmed_its_barrier,
	        harness_teardown),
	    cmocka_unit_test_teardown(a_second_broker_with_the_same_id_is_refused,
	                              harness_teardown),
	    cmocka_unit_test_teardown(a_stall_holds_the_sweeps_and_no_sweeper_claims_itself,
	                              harness_teardown),
	    cmocka_unit_test_teardown(privacy_choices_are_kept_with_the_user_and_jump_the_document,
	                              harness_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
