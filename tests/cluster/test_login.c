/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Brokers that log in to Redis (ctest label "cluster", see cluster.h): a password (Redis'
 * requirepass) from a file or from the URL, an ACL user with the rights the README lists, and
 * TLS (rediss://) with certificates this test makes with openssl, where the plugin was built
 * with hiredis' TLS library (Debian 13 and sid); where it was not (Debian 12's hiredis 0.14),
 * rediss:// is refused at startup and stunnel carries the connection instead, as the README
 * describes. No password ever appears in a broker's log.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"

#define PASSWORD "s3cret-Pa55"
#define USER_PASSWORD "presence-pw"

/* The rights of the README's Redis user for the plugin: its keys only, and only the commands
 * it sends and its functions run. */
#define README_ACL_RULE                                                                            \
	"on resetkeys ~{presence}:* resetchannels -@all +ping +fcall +function|load +scan +xread " \
	"+xrange +xrevrange +xadd +xdel +time +get +set +incr +incrby +decr +exists +del +hget "   \
	"+hmget +hset +hgetall +hdel +zadd +zrem +zscore +zrange +zrangebyscore +zcount +sadd "    \
	"+srem +srandmember +rpush +lindex +lrem"

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, 0600), 0);
}

/* Asserts that no broker's log holds secret. */
static void never_logged(struct broker *const *b, size_t n, const char *secret)
{
	for (size_t i = 0; i < n; i++) {
		if (b[i] != NULL && broker_log_contains(b[i], secret)) {
			fail_msg("a broker logged a password:\n%s", broker_log(b[i]));
		}
	}
}

/* A broker that must not get in: starts it with extra and waits for needle in its log. */
static struct broker *kept_out(struct redis *r, const char *extra, const char *needle, char **conf)
{
	struct broker *b;

	*conf = cluster_conf(r, 3, extra);
	b = broker_start(*conf);
	if (!broker_log_wait(b, needle, 10000)) {
		fail_msg("no \"%s\" in the log:\n%s", needle, broker_log(b));
	}
	assert_false(broker_log_contains(b, "registered in the cluster"));
	return b;
}

/* alice on b1 is seen on every broker, and leaves. */
static void cluster_works(struct cluster *cl)
{
	struct client *alice = client_connect_as(cl->b[0], "alice1", "alice", 4);

	await_everywhere(cl, "alice", true, 1, "{}");
	publish_text_ok(alice, "presence/alice/state/via", "login", 1);
	await_everywhere(cl, "alice", true, 1, "{\"via\":\"login\"}");
	client_disconnect(alice);
	await_everywhere(cl, "alice", false, 0, "{}");
}

static void a_password_protected_redis_lets_in_the_brokers_with_its_password(void **state)
{
	int port = harness_free_port();
	char port_s[16], pwfile[512], wrongfile[512], extra[1024];
	struct cluster cl = {0};
	struct broker *nopw, *wrong;
	char *nopw_conf, *wrong_conf;

	(void)state;
	reset_seen();
	snprintf(port_s, sizeof(port_s), "%d", port);
	cl.redis =
	    redis_start_with(false, (const char *const[]){"--requirepass", PASSWORD, "--port",
	                                                  port_s, "--bind", "127.0.0.1", NULL});
	cl.redis->password = PASSWORD;
	snprintf(pwfile, sizeof(pwfile), "%s/redis.password", cl.redis->dir);
	write_text(pwfile, PASSWORD "\n");
	snprintf(wrongfile, sizeof(wrongfile), "%s/wrong.password", cl.redis->dir);
	write_text(wrongfile, "not-" PASSWORD "\n");
	/* b1 and b3: the password from a file, on the unix socket; b2: in the URL, over TCP. */
	snprintf(extra, sizeof(extra), "plugin_opt_cluster_password_file %s\n", pwfile);
	cluster_join(&cl, 0, extra);
	snprintf(extra, sizeof(extra), "plugin_opt_cluster_url redis://:%s@127.0.0.1:%d\n",
	         PASSWORD, port);
	cluster_join(&cl, 1, extra);
	snprintf(extra, sizeof(extra), "plugin_opt_cluster_password_file %s\n", pwfile);
	cluster_join(&cl, 2, extra);
	cluster_works(&cl);
	/* Without a password, and with a wrong one: kept out, and told why. */
	nopw = kept_out(cl.redis, NULL, "Redis asks for a password", &nopw_conf);
	snprintf(extra, sizeof(extra), "plugin_opt_cluster_password_file %s\n", wrongfile);
	wrong = kept_out(cl.redis, extra, "Redis refused the login with the password: WRONGPASS",
	                 &wrong_conf);
	never_logged(cl.b, BROKERS, PASSWORD);
	never_logged(&nopw, 1, PASSWORD);
	never_logged(&wrong, 1, PASSWORD);
	broker_stop(nopw);
	broker_stop(wrong);
	free(nopw_conf);
	free(wrong_conf);
	cluster_stop(&cl);
}

/* A Redis whose default user needs a password, and a user "presence" with the README's rights:
 * the brokers log in as that user (the name in an option or in the URL). */
static void an_acl_user_with_the_readme_rights_runs_the_cluster(void **state)
{
	char pwfile[512], extra[1024];
	struct cluster cl = {0};
	struct broker *stranger;
	char *stranger_conf;
	redisReply *reply;

	(void)state;
	reset_seen();
	cl.redis = redis_start_with(false, (const char *const[]){"--requirepass", PASSWORD, NULL});
	cl.redis->password = PASSWORD;
	reply = redis_cmd(cl.redis, "ACL SETUSER presence " README_ACL_RULE " >" USER_PASSWORD);
	if (reply->type == REDIS_REPLY_ERROR) {
		fail_msg("ACL SETUSER: %s", reply->str);
	}
	freeReplyObject(reply);
	snprintf(pwfile, sizeof(pwfile), "%s/presence.password", cl.redis->dir);
	write_text(pwfile, USER_PASSWORD "\n");
	snprintf(extra, sizeof(extra),
	         "plugin_opt_cluster_username presence\nplugin_opt_cluster_password_file %s\n",
	         pwfile);
	for (int i = 0; i < BROKERS; i++) {
		cluster_join(&cl, i, extra);
	}
	cluster_works(&cl);
	/* Another user name with that password is refused. */
	snprintf(extra, sizeof(extra),
	         "plugin_opt_cluster_username stranger\nplugin_opt_cluster_password_file %s\n",
	         pwfile);
	stranger = kept_out(cl.redis, extra, "Redis refused the login as stranger: WRONGPASS",
	                    &stranger_conf);
	never_logged(cl.b, BROKERS, USER_PASSWORD);
	never_logged(&stranger, 1, USER_PASSWORD);
	broker_stop(stranger);
	free(stranger_conf);
	cluster_stop(&cl);
}

/* Makes the test certificates in dir (tests/cluster/make-certs.sh). */
static void make_certs(const char *dir)
{
	char command[1024];

	snprintf(command, sizeof(command), "sh %s/tests/cluster/make-certs.sh %s",
	         getenv("PRESENCE_SOURCE_DIR"), dir);
	if (system(command) != 0) {
		fail_msg("%s failed", command);
	}
}

/* A Redis with TLS on a TCP port of 127.0.0.1 (and its unix socket without, for the test's own
 * commands), requiring a client certificate with client_certs, and the ACL user presence. */
static struct redis *tls_redis(int port, bool client_certs)
{
	const char *work = getenv("PRESENCE_WORK_DIR");
	char dir[300], port_s[16], cert[400], key[400], ca[400];
	struct redis *r;
	redisReply *reply;

	snprintf(dir, sizeof(dir), "%s/certs-XXXXXX", work);
	mkdir(work, 0755);
	assert_non_null(mkdtemp(dir));
	make_certs(dir);
	snprintf(port_s, sizeof(port_s), "%d", port);
	snprintf(cert, sizeof(cert), "%s/redis.crt", dir);
	snprintf(key, sizeof(key), "%s/redis.key", dir);
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	r = redis_start_with(false,
	                     (const char *const[]){"--tls-port", port_s, "--bind", "127.0.0.1",
	                                           "--tls-cert-file", cert, "--tls-key-file", key,
	                                           "--tls-ca-cert-file", ca, "--tls-auth-clients",
	                                           client_certs ? "yes" : "no", NULL});
	/* The certificates next to the server's files. */
	{
		char command[1200];

		snprintf(command, sizeof(command), "cp %s/*.crt %s/*.key %s/", dir, dir, r->dir);
		assert_int_equal(system(command), 0);
	}
	reply = redis_cmd(r, "ACL SETUSER presence " README_ACL_RULE " >" USER_PASSWORD);
	assert_int_not_equal(reply->type, REDIS_REPLY_ERROR);
	freeReplyObject(reply);
	snprintf(cert, sizeof(cert), "%s/presence.password", r->dir);
	write_text(cert, USER_PASSWORD "\n");
	return r;
}

#if PRESENCE_CLUSTER_TLS

/* The login options of a broker reaching r's TLS port as host (with the CA file ca of r's
 * directory), as the ACL user, plus more. */
static void tls_extra(char *out, size_t size, const struct redis *r, const char *host, int port,
                      const char *ca, const char *more)
{
	snprintf(out, size,
	         "plugin_opt_cluster_url rediss://presence@%s:%d\n"
	         "plugin_opt_cluster_password_file %s/presence.password\n"
	         "plugin_opt_cluster_tls_cafile %s/%s\n%s",
	         host, port, r->dir, r->dir, ca, more != NULL ? more : "");
}

/* rediss:// with the CA that signed Redis' certificate, for the name in it: every broker gets
 * in. Another CA, or an address the certificate does not name, is refused. */
static void brokers_reach_redis_over_tls_and_check_its_certificate(void **state)
{
	int port = harness_free_port();
	struct cluster cl = {0};
	struct broker *out[2];
	char *out_conf[2], extra[2048];

	(void)state;
	reset_seen();
	cl.redis = tls_redis(port, false);
	tls_extra(extra, sizeof(extra), cl.redis, "localhost", port, "ca.crt", NULL);
	for (int i = 0; i < BROKERS; i++) {
		cluster_join(&cl, i, extra);
	}
	cluster_works(&cl);
	tls_extra(extra, sizeof(extra), cl.redis, "localhost", port, "other-ca.crt", NULL);
	out[0] = kept_out(cl.redis, extra, "Redis' certificate was not accepted", &out_conf[0]);
	tls_extra(extra, sizeof(extra), cl.redis, "127.0.0.1", port, "ca.crt", NULL);
	out[1] = kept_out(cl.redis, extra, "Redis' certificate was not accepted", &out_conf[1]);
	never_logged(cl.b, BROKERS, USER_PASSWORD);
	never_logged(out, 2, USER_PASSWORD);
	for (int i = 0; i < 2; i++) {
		broker_stop(out[i]);
		free(out_conf[i]);
	}
	cluster_stop(&cl);
}

/* A Redis that asks for client certificates: brokers with one get in, one without does not. */
static void brokers_present_a_client_certificate_when_redis_asks(void **state)
{
	int port = harness_free_port();
	struct cluster cl = {0};
	struct broker *out;
	char *out_conf, extra[2048], more[1024];

	(void)state;
	reset_seen();
	cl.redis = tls_redis(port, true);
	snprintf(more, sizeof(more),
	         "plugin_opt_cluster_tls_certfile %s/client.crt\n"
	         "plugin_opt_cluster_tls_keyfile %s/client.key\n",
	         cl.redis->dir, cl.redis->dir);
	tls_extra(extra, sizeof(extra), cl.redis, "localhost", port, "ca.crt", more);
	for (int i = 0; i < BROKERS; i++) {
		cluster_join(&cl, i, extra);
	}
	cluster_works(&cl);
	tls_extra(extra, sizeof(extra), cl.redis, "localhost", port, "ca.crt", NULL);
	out = kept_out(cl.redis, extra, "cannot connect to Redis (TLS", &out_conf);
	broker_stop(out);
	free(out_conf);
	cluster_stop(&cl);
}

#else

/* Where the plugin's hiredis has no TLS (Debian 12): rediss:// is refused at startup with the
 * way out; stunnel (Debian's stunnel4) carries plain connections from the brokers to Redis'
 * TLS port, checking Redis' certificate, as the README shows. */
static void without_tls_in_hiredis_rediss_is_refused_and_stunnel_carries_it(void **state)
{
	int port = harness_free_port(), plain = harness_free_port();
	struct broker_opts opts = {.expect_failure = true};
	struct cluster cl = {0};
	char conf_path[512], text[2048], extra[1024], plain_s[16];
	struct broker *refused;
	char *refused_conf;
	pid_t stunnel;

	(void)state;
	reset_seen();
	cl.redis = tls_redis(port, false);
	snprintf(extra, sizeof(extra),
	         "plugin_opt_cluster_url rediss://presence@localhost:%d\n"
	         "plugin_opt_cluster_password_file %s/presence.password\n",
	         port, cl.redis->dir);
	refused_conf = cluster_conf(cl.redis, 0, extra);
	refused = broker_start_opts(refused_conf, &opts);
	if (!broker_log_contains(refused, "rediss:// needs hiredis with TLS") ||
	    !broker_log_contains(refused, "stunnel")) {
		fail_msg("no clear refusal of rediss://:\n%s", broker_log(refused));
	}
	broker_stop(refused);
	free(refused_conf);

	/* The README's stunnel client: plain on 127.0.0.1:plain, TLS to Redis. */
	snprintf(conf_path, sizeof(conf_path), "%s/stunnel.conf", cl.redis->dir);
	snprintf(text, sizeof(text),
	         "foreground = yes\n"
	         "pid =\n"
	         "output = %s/stunnel.log\n"
	         "[redis]\n"
	         "client = yes\n"
	         "accept = 127.0.0.1:%d\n"
	         "connect = localhost:%d\n"
	         "CAfile = %s/ca.crt\n"
	         "verifyChain = yes\n"
	         "checkHost = localhost\n",
	         cl.redis->dir, plain, port, cl.redis->dir);
	write_text(conf_path, text);
	stunnel = fork();
	assert_true(stunnel >= 0);
	if (stunnel == 0) {
		execlp("stunnel4", "stunnel4", conf_path, (char *)NULL);
		execlp("stunnel", "stunnel", conf_path, (char *)NULL);
		_exit(127);
	}
	/* Bounded: until stunnel accepts (about 10 s in steps of 10 ms). */
	snprintf(plain_s, sizeof(plain_s), "%d", plain);
	for (int tries = 0;; tries++) {
		struct timeval tv = {1, 0};
		redisContext *c = redisConnectWithTimeout("127.0.0.1", plain, tv);
		bool up = c != NULL && c->err == 0;
		struct timespec ts = {0, 10 * 1000 * 1000};

		redisFree(c);
		if (up) {
			break;
		}
		if (tries == 1000) {
			fail_msg("stunnel does not listen on %s", plain_s);
		}
		nanosleep(&ts, NULL);
	}
	snprintf(extra, sizeof(extra),
	         "plugin_opt_cluster_url redis://presence@127.0.0.1:%d\n"
	         "plugin_opt_cluster_password_file %s/presence.password\n",
	         plain, cl.redis->dir);
	for (int i = 0; i < BROKERS; i++) {
		cluster_join(&cl, i, extra);
	}
	cluster_works(&cl);
	never_logged(cl.b, BROKERS, USER_PASSWORD);
	cluster_stop(&cl);
	kill(stunnel, SIGTERM);
	waitpid(stunnel, NULL, 0);
}

#endif

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(
		    a_password_protected_redis_lets_in_the_brokers_with_its_password,
		    harness_teardown),
		cmocka_unit_test_teardown(an_acl_user_with_the_readme_rights_runs_the_cluster,
		                          harness_teardown),
#if PRESENCE_CLUSTER_TLS
		cmocka_unit_test_teardown(brokers_reach_redis_over_tls_and_check_its_certificate,
		                          harness_teardown),
		cmocka_unit_test_teardown(brokers_present_a_client_certificate_when_redis_asks,
		                          harness_teardown),
#else
		cmocka_unit_test_teardown(
		    without_tls_in_hiredis_rediss_is_refused_and_stunnel_carries_it,
		    harness_teardown),
#endif
	};

	if (getenv("PRESENCE_TEST_FILTER") != NULL) {
		cmocka_set_test_filter(getenv("PRESENCE_TEST_FILTER"));
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
