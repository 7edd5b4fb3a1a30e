/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * hiredis, loaded at run time: the plugin does not link libhiredis, it opens it (dlopen) the
 * first time cluster mode starts, so that a broker without plugin_opt_cluster_url never loads
 * it and the plugin's package does not depend on it. The library opened is the one whose
 * headers the plugin was built with (PRESENCE_HIREDIS_SONAME): hiredis changes its structures
 * between versions. With rediss://, hiredis' TLS library (PRESENCE_HIREDIS_SSL_SONAME) is
 * opened the same way.
 *
 * Invariants: a table handed out is complete (every pointer set) and stays valid for the life
 * of the process (the libraries are never closed once loaded). Loading runs on one thread (the
 * broker's, at init); using the table is safe from any thread.
 */
#ifndef PRESENCE_REDIS_LOADER_H
#define PRESENCE_REDIS_LOADER_H

#include <stddef.h>
#include <sys/time.h>

#include <hiredis.h>

#include "presence_err.h"

struct ssl_st;

/* The hiredis functions the link calls. */
struct presence_hiredis {
	redisContext *(*connect_unix)(const char *path, const struct timeval tv);
	redisContext *(*connect_tcp)(const char *ip, int port, const struct timeval tv);
	int (*set_timeout)(redisContext *c, const struct timeval tv);
	int (*keep_alive)(redisContext *c);
	void (*free_context)(redisContext *c);
	int (*append_argv)(redisContext *c, int argc, const char **argv, const size_t *argvlen);
	int (*get_reply)(redisContext *c, void **reply);
	void (*free_reply)(void *reply);
	/* Set by presence_hiredis_load_tls, NULL before: the TLS handshake on an OpenSSL
	 * connection object the caller made (hiredis takes it over on success). */
	int (*initiate_ssl)(redisContext *c, struct ssl_st *ssl);
};

/* Loads hiredis (once; later calls return the same table). Returns PRESENCE_OK with *api set,
 * or PRESENCE_ERR_NOT_FOUND (the library or one of its functions is missing) with a reason in
 * reason (reason_size bytes, naming the Debian package to install) and *api NULL; nothing stays
 * loaded then. */
enum presence_err presence_hiredis_load(const struct presence_hiredis **api, char *reason,
                                        size_t reason_size);

/* Loads hiredis' TLS library (once) after presence_hiredis_load, which sets initiate_ssl in the
 * table. Returns PRESENCE_OK, or PRESENCE_ERR_NOT_FOUND with a reason (this build has no TLS
 * library, or it cannot be loaded); the table is unchanged then. */
enum presence_err presence_hiredis_load_tls(char *reason, size_t reason_size);

#endif
