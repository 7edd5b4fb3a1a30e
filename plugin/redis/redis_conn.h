/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * One connection to Redis: hiredis' synchronous context, set up (TCP or a Unix socket, a
 * deadline on every command, keep-alive, the TLS handshake with rediss://, the login), then
 * used to send commands built by the codec (redis_codec.h) and to take their replies.
 *
 * Invariants: a connection belongs to one thread. A command's deadline (timeout_ms) bounds every
 * read and write; once a call failed (PRESENCE_ERR_IO) the connection is unusable and is only
 * closed. Replies are hiredis' (free them with presence_redis_conn_reply_free). Reasons never
 * quote the password.
 */
#ifndef PRESENCE_REDIS_CONN_H
#define PRESENCE_REDIS_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "presence_err.h"
#include "redis_codec.h"
#include "redis_loader.h"

struct ssl_ctx_st;
struct presence_redis_conn;

/* The TLS settings of every connection of a link (rediss://): TLS 1.2 or later, Redis'
 * certificate checked against cafile (NULL: the system's CAs), a client certificate and key
 * when certfile is not NULL. Returns NULL with a reason (reason_size bytes) when a file cannot
 * be used, memory runs out, or this build has no TLS. Free with presence_redis_tls_free (NULL
 * allowed). */
struct ssl_ctx_st *presence_redis_tls_new(const char *cafile, const char *certfile,
                                          const char *keyfile, char *reason, size_t reason_size);
void presence_redis_tls_free(struct ssl_ctx_st *tls);

/* Connects to ep with the deadline timeout_ms for each command, makes the TLS handshake with
 * tls (when ep->tls; Redis' host name is checked against its certificate), logs in (ep's user
 * and password, when the password is set) or else sends one PING. Returns NULL with a reason
 * when any step fails; nothing is left open then. Close with presence_redis_conn_close. */
struct presence_redis_conn *presence_redis_conn_open(const struct presence_hiredis *hi,
                                                     const struct presence_cluster_endpoint *ep,
                                                     struct ssl_ctx_st *tls, int64_t timeout_ms,
                                                     char *reason, size_t reason_size);

/* Closes the connection; NULL is allowed. */
void presence_redis_conn_close(struct presence_redis_conn *conn);

/* Why the connection failed (hiredis' text), or fallback when it did not. */
const char *presence_redis_conn_error(const struct presence_redis_conn *conn, const char *fallback);

/* Queues c in the output buffer (sent by the next receive). Returns PRESENCE_OK, or
 * PRESENCE_ERR_NOMEM (c failed to build, or hiredis' buffer); c is left to the caller. */
enum presence_err presence_redis_conn_send(struct presence_redis_conn *conn,
                                           struct presence_redis_cmd *c);

/* Takes the next reply (sending what is queued first). Returns PRESENCE_OK with *reply set (the
 * caller frees it), or PRESENCE_ERR_IO (the connection failed or the deadline passed) with
 * *reply NULL. */
enum presence_err presence_redis_conn_receive(struct presence_redis_conn *conn, redisReply **reply);

/* Sends c, frees it (always) and returns its reply, or NULL when c could not be built or the
 * connection failed. */
redisReply *presence_redis_conn_run(struct presence_redis_conn *conn, struct presence_redis_cmd *c);

/* Frees a reply of this connection's library; NULL is allowed. */
void presence_redis_conn_reply_free(const struct presence_redis_conn *conn, redisReply *reply);

#endif
