/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * One connection to Redis (see redis_conn.h).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#if PRESENCE_CLUSTER_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#endif

#include "redis_conn.h"

struct presence_redis_conn {
	const struct presence_hiredis *hi;
	redisContext *ctx;
};

static struct timeval ms_timeval(int64_t ms)
{
	struct timeval tv;

	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
	return tv;
}

#if PRESENCE_CLUSTER_TLS
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

struct ssl_ctx_st *presence_redis_tls_new(const char *cafile, const char *certfile,
                                          const char *keyfile, char *reason, size_t reason_size)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char why[160];

	if (ctx == NULL) {
		snprintf(reason, reason_size, "cannot set up TLS: %s",
		         openssl_reason(why, sizeof(why), "out of memory"));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (cafile != NULL ? SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1
	                   : SSL_CTX_set_default_verify_paths(ctx) != 1) {
		snprintf(reason, reason_size, "cannot use %s: %s",
		         cafile != NULL ? cafile : "the system's CA certificates",
		         openssl_reason(why, sizeof(why), "unreadable"));
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (certfile != NULL && (SSL_CTX_use_certificate_chain_file(ctx, certfile) != 1 ||
	                         SSL_CTX_use_PrivateKey_file(ctx, keyfile, SSL_FILETYPE_PEM) != 1 ||
	                         SSL_CTX_check_private_key(ctx) != 1)) {
		snprintf(reason, reason_size,
		         "cannot use the client certificate %s with the key %s: %s", certfile,
		         keyfile, openssl_reason(why, sizeof(why), "unreadable"));
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

void presence_redis_tls_free(struct ssl_ctx_st *tls)
{
	SSL_CTX_free(tls);
}

/* The TLS handshake on conn, Redis' certificate checked for its host name (or IP address).
 * False with a reason. */
static bool tls_handshake(struct presence_redis_conn *conn, const char *host, SSL_CTX *tls,
                          char *reason, size_t reason_size)
{
	unsigned char addr[sizeof(struct in6_addr)];
	SSL *ssl = SSL_new(tls);
	char why[160];
	long verify;

	if (ssl == NULL) {
		snprintf(reason, reason_size, "TLS: %s",
		         openssl_reason(why, sizeof(why), "out of memory"));
		return false;
	}
	if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1) {
		(void)X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
	} else {
		(void)SSL_set1_host(ssl, host);
		(void)SSL_set_tlsext_host_name(ssl, host);
	}
	if (conn->hi->initiate_ssl != NULL && conn->hi->initiate_ssl(conn->ctx, ssl) == REDIS_OK) {
		return true;
	}
	verify = SSL_get_verify_result(ssl);
	if (verify != X509_V_OK) {
		snprintf(reason, reason_size, "TLS: Redis' certificate was not accepted: %s",
		         X509_verify_cert_error_string(verify));
	} else {
		snprintf(reason, reason_size, "TLS: %s", conn->ctx->errstr);
	}
	SSL_free(ssl);
	ERR_clear_error();
	return false;
}
#else
struct ssl_ctx_st *presence_redis_tls_new(const char *cafile, const char *certfile,
                                          const char *keyfile, char *reason, size_t reason_size)
{
	(void)cafile;
	(void)certfile;
	(void)keyfile;
	snprintf(reason, reason_size, "this build has no TLS to Redis");
	return NULL;
}

void presence_redis_tls_free(struct ssl_ctx_st *tls)
{
	(void)tls;
}
#endif

const char *presence_redis_conn_error(const struct presence_redis_conn *conn, const char *fallback)
{
	return conn != NULL && conn->ctx != NULL && conn->ctx->err != 0 ? conn->ctx->errstr
	                                                                : fallback;
}

enum presence_err presence_redis_conn_send(struct presence_redis_conn *conn,
                                           struct presence_redis_cmd *c)
{
	if (c->failed || c->argc == 0 ||
	    conn->hi->append_argv(conn->ctx, c->argc, c->argv, c->len) != REDIS_OK) {
		return PRESENCE_ERR_NOMEM;
	}
	return PRESENCE_OK;
}

enum presence_err presence_redis_conn_receive(struct presence_redis_conn *conn, redisReply **reply)
{
	void *r = NULL;

	*reply = NULL;
	if (conn->hi->get_reply(conn->ctx, &r) != REDIS_OK || r == NULL) {
		if (r != NULL) {
			conn->hi->free_reply(r);
		}
		return PRESENCE_ERR_IO;
	}
	*reply = r;
	return PRESENCE_OK;
}

redisReply *presence_redis_conn_run(struct presence_redis_conn *conn, struct presence_redis_cmd *c)
{
	redisReply *reply = NULL;

	if (presence_redis_conn_send(conn, c) == PRESENCE_OK) {
		(void)presence_redis_conn_receive(conn, &reply);
	}
	presence_redis_cmd_free(c);
	return reply;
}

void presence_redis_conn_reply_free(const struct presence_redis_conn *conn, redisReply *reply)
{
	if (reply != NULL) {
		conn->hi->free_reply(reply);
	}
}

/* Logs in with the endpoint's user and password. False with a reason (never the password). */
static bool authenticate(struct presence_redis_conn *conn,
                         const struct presence_cluster_endpoint *ep, char *reason,
                         size_t reason_size)
{
	struct presence_redis_cmd c = {0};
	redisReply *reply;
	const char *refused;

	presence_redis_cmd_add(&c, "AUTH");
	if (ep->user[0] != '\0') {
		presence_redis_cmd_add(&c, ep->user);
	}
	presence_redis_cmd_add(&c, ep->password);
	reply = presence_redis_conn_run(conn, &c);
	if (reply == NULL) {
		snprintf(reason, reason_size, "%s",
		         presence_redis_conn_error(conn, "out of memory"));
		return false;
	}
	refused = presence_redis_reply_error(reply);
	if (refused != NULL) {
		snprintf(reason, reason_size, "Redis refused the login%s%s: %s",
		         ep->user[0] != '\0' ? " as " : " with the password",
		         ep->user[0] != '\0' ? ep->user : "", refused);
	}
	presence_redis_conn_reply_free(conn, reply);
	return refused == NULL;
}

/* One PING on a new connection. False with a reason when the connection fails (an error reply,
 * such as NOAUTH, is left to the caller's first command). */
static bool ping(struct presence_redis_conn *conn, char *reason, size_t reason_size)
{
	struct presence_redis_cmd c = {0};
	redisReply *reply;

	presence_redis_cmd_add(&c, "PING");
	reply = presence_redis_conn_run(conn, &c);
	if (reply == NULL) {
		snprintf(reason, reason_size, "%s",
		         presence_redis_conn_error(conn, "out of memory"));
		return false;
	}
	presence_redis_conn_reply_free(conn, reply);
	return true;
}

struct presence_redis_conn *presence_redis_conn_open(const struct presence_hiredis *hi,
                                                     const struct presence_cluster_endpoint *ep,
                                                     struct ssl_ctx_st *tls, int64_t timeout_ms,
                                                     char *reason, size_t reason_size)
{
	struct presence_redis_conn *conn = calloc(1, sizeof(*conn));
	struct timeval tv = ms_timeval(timeout_ms);

	if (conn == NULL) {
		snprintf(reason, reason_size, "out of memory");
		return NULL;
	}
	conn->hi = hi;
	conn->ctx = ep->path[0] != '\0' ? hi->connect_unix(ep->path, tv)
	                                : hi->connect_tcp(ep->host, ep->port, tv);
	if (conn->ctx == NULL) {
		snprintf(reason, reason_size, "out of memory");
		goto fail;
	}
	if (conn->ctx->err != 0) {
		snprintf(reason, reason_size, "%s", conn->ctx->errstr);
		goto fail;
	}
	if (hi->set_timeout(conn->ctx, tv) != REDIS_OK ||
	    (ep->path[0] == '\0' && hi->keep_alive(conn->ctx) != REDIS_OK)) {
		snprintf(reason, reason_size, "%s",
		         presence_redis_conn_error(conn, "socket options"));
		goto fail;
	}
#if PRESENCE_CLUSTER_TLS
	if (ep->tls && !tls_handshake(conn, ep->host, tls, reason, reason_size)) {
		goto fail;
	}
#else
	(void)tls;
#endif
	if (ep->password[0] != '\0' ? !authenticate(conn, ep, reason, reason_size)
	                            : !ping(conn, reason, reason_size)) {
#if PRESENCE_CLUSTER_TLS
		/* With TLS 1.3 a server that wants a client certificate says so only by closing
		 * the connection after the handshake. */
		if (ep->tls &&
		    (conn->ctx->err == REDIS_ERR_IO || conn->ctx->err == REDIS_ERR_EOF)) {
			snprintf(
			    reason, reason_size,
			    "TLS: Redis closed the connection after the handshake (%s): does it "
			    "want a client certificate (plugin_opt_cluster_tls_certfile)?",
			    conn->ctx->errstr);
		}
#endif
		goto fail;
	}
	return conn;

fail:
	presence_redis_conn_close(conn);
	return NULL;
}

void presence_redis_conn_close(struct presence_redis_conn *conn)
{
	if (conn == NULL) {
		return;
	}
	if (conn->ctx != NULL) {
		conn->hi->free_context(conn->ctx);
	}
	free(conn);
}
