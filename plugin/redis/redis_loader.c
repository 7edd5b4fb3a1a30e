/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * hiredis loaded at run time (see redis_loader.h).
 */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "redis_loader.h"

/* The process's one table: the libraries are process-wide, and loaded at most once. */
static struct presence_hiredis api_table;
static void *hiredis_handle;
static void *hiredis_ssl_handle;

/* Looks up name in handle into *fn (a function pointer's storage of size bytes). */
static bool load_symbol(void *handle, void *fn, size_t size, const char *name)
{
	void *sym = dlsym(handle, name);

	if (sym == NULL || size != sizeof(sym)) {
		return false;
	}
	memcpy(fn, &sym, size);
	return true;
}

enum presence_err presence_hiredis_load(const struct presence_hiredis **api, char *reason,
                                        size_t reason_size)
{
	struct presence_hiredis t = {0};
	const char *missing = NULL;
	void *handle;

	*api = NULL;
	if (hiredis_handle != NULL) {
		*api = &api_table;
		return PRESENCE_OK;
	}
	handle = dlopen(PRESENCE_HIREDIS_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (handle == NULL) {
		snprintf(reason, reason_size, "cannot load %s (%s): install Debian's %s",
		         PRESENCE_HIREDIS_SONAME, dlerror(), PRESENCE_HIREDIS_PACKAGE);
		return PRESENCE_ERR_NOT_FOUND;
	}
#define LOAD(field, name)                                                                          \
	if (missing == NULL && !load_symbol(handle, &t.field, sizeof(t.field), name)) {            \
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
		snprintf(reason, reason_size, "%s has no %s", PRESENCE_HIREDIS_SONAME, missing);
		dlclose(handle);
		return PRESENCE_ERR_NOT_FOUND;
	}
	api_table = t;
	hiredis_handle = handle;
	*api = &api_table;
	return PRESENCE_OK;
}

enum presence_err presence_hiredis_load_tls(char *reason, size_t reason_size)
{
#if PRESENCE_CLUSTER_TLS
	int (*init_openssl)(void) = NULL;
	void *handle;

	if (hiredis_ssl_handle != NULL) {
		return PRESENCE_OK;
	}
	if (hiredis_handle == NULL) {
		snprintf(reason, reason_size, "%s is not loaded", PRESENCE_HIREDIS_SONAME);
		return PRESENCE_ERR_NOT_FOUND;
	}
	/* hiredis' TLS library uses hiredis' functions without naming hiredis among the libraries
	 * it needs: they must be global. hiredis is loaded already; this only makes its symbols
	 * global (RTLD_NOLOAD), and only for rediss://. */
	if (dlopen(PRESENCE_HIREDIS_SONAME, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL) == NULL) {
		snprintf(reason, reason_size, "cannot make %s global (%s)", PRESENCE_HIREDIS_SONAME,
		         dlerror());
		return PRESENCE_ERR_NOT_FOUND;
	}
	handle = dlopen(PRESENCE_HIREDIS_SSL_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (handle == NULL) {
		snprintf(reason, reason_size, "cannot load %s (%s): install Debian's %s",
		         PRESENCE_HIREDIS_SSL_SONAME, dlerror(), PRESENCE_HIREDIS_PACKAGE);
		return PRESENCE_ERR_NOT_FOUND;
	}
	if (!load_symbol(handle, &api_table.initiate_ssl, sizeof(api_table.initiate_ssl),
	                 "redisInitiateSSL")) {
		snprintf(reason, reason_size, "%s has no redisInitiateSSL",
		         PRESENCE_HIREDIS_SSL_SONAME);
		dlclose(handle);
		return PRESENCE_ERR_NOT_FOUND;
	}
	/* (hiredis 1.0 wants it called once; later versions do it themselves.) */
	if (load_symbol(handle, &init_openssl, sizeof(init_openssl), "redisInitOpenSSL")) {
		(void)init_openssl();
	}
	hiredis_ssl_handle = handle;
	return PRESENCE_OK;
#else
	snprintf(reason, reason_size,
	         "rediss:// needs hiredis with TLS, and this build's %s has none (Debian 12's "
	         "hiredis 0.14): reach Redis through stunnel (see the README)",
	         PRESENCE_HIREDIS_SONAME);
	(void)hiredis_ssl_handle;
	return PRESENCE_ERR_NOT_FOUND;
#endif
}
