/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The registry's sessions: PENDING logins (Mosquitto 2.0), ACTIVE sessions and their users.
 *
 * PENDING sessions wait in an array of client pointers (a client that leaves while pending
 * leaves a stale pointer, skipped when read).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>
#include <utlist.h>

#include "registry.h"
#include "registry_private.h"

/* ---- sessions ------------------------------------------------------------------------- */

static struct presence_session *session_lookup(const struct presence_registry *reg,
                                               const void *client)
{
	struct presence_session *session = NULL;

	HASH_FIND_PTR(reg->sessions, &client, session);
	return session;
}

/* Makes room for one more element in the array *items of *cap elements of size bytes, *len of
 * them used. Returns false (nothing changed) when memory runs out. */
bool presence__registry_array_reserve(void **items, size_t *cap, size_t len, size_t size)
{
	size_t grown_cap;
	void *grown;

	if (len < *cap) {
		return true;
	}
	grown_cap = *cap > 0 ? 2 * *cap : 64;
	if (grown_cap > SIZE_MAX / size) {
		return false;
	}
	grown = realloc(*items, grown_cap * size);
	if (grown == NULL) {
		return false;
	}
	*items = grown;
	*cap = grown_cap;
	return true;
}

/* Adds a PENDING session of client to the table. Returns it, or NULL (nothing added). */
static struct presence_session *session_add(struct presence_registry *reg, const void *client)
{
	struct presence_session *session = calloc(1, sizeof(*session));

	if (session == NULL) {
		return NULL;
	}
	session->client = client;
	HASH_ADD_PTR(reg->sessions, client, session);
	if (session->hh.tbl == NULL) {
		free(session);
		return NULL;
	}
	return session;
}

enum presence_err presence_registry_session_pending(struct presence_registry *reg,
                                                    const void *client)
{
	struct presence_session *session;
	void *pending = (void *)reg->pending;

	if (session_lookup(reg, client) != NULL) {
		return PRESENCE_OK;
	}
	if (!presence__registry_array_reserve(&pending, &reg->pending_cap, reg->pending_len,
	                                      sizeof(*reg->pending))) {
		return PRESENCE_ERR_NOMEM;
	}
	reg->pending = pending;
	session = session_add(reg, client);
	if (session == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	reg->pending[reg->pending_len++] = client;
	return PRESENCE_OK;
}

static bool client_pending(const struct presence_registry *reg, const void *client)
{
	struct presence_session *session = session_lookup(reg, client);

	return session != NULL && session->user == NULL;
}

const void *presence_registry_pending_next(struct presence_registry *reg)
{
	while (reg->pending_head < reg->pending_len) {
		const void *client = reg->pending[reg->pending_head];

		if (client_pending(reg, client)) {
			return client;
		}
		reg->pending_head++;
	}
	reg->pending_head = reg->pending_len = 0;
	return NULL;
}

static void session_remove(struct presence_registry *reg, struct presence_session *session)
{
	HASH_DEL(reg->sessions, session);
	free(session);
}

static void session_attach(struct presence_registry *reg, struct presence_session *session,
                           struct presence_user *user)
{
	session->user = user;
	if (user->sessions++ == 0) {
		reg->available++;
		/* Back within the offline delay: nothing is published about the gap. */
		presence__registry_wait_end(reg, user);
		presence__registry_idle_sync(reg, user);
	}
	reg->active++;
	presence_registry_user_changed(reg, user);
}

/* Whether user has nothing to keep: no session, no document, no delay running, no count of
 * its sessions sent to the cluster without its end. */
enum presence_err presence_registry_session_start(struct presence_registry *reg, const void *client,
                                                  const char *user_name)
{
	struct presence_session *session = session_lookup(reg, client);
	struct presence_user *user;
	enum presence_err err;

	if (session == NULL || session->user != NULL) {
		return PRESENCE_OK;
	}
	if (reg->pending_head < reg->pending_len && reg->pending[reg->pending_head] == client) {
		reg->pending_head++;
	}
	if (user_name == NULL) {
		session_remove(reg, session);
		return PRESENCE_OK;
	}
	err = presence_registry_user_get(reg, user_name, &user);
	if (err != PRESENCE_OK) {
		session_remove(reg, session);
		return err;
	}
	session_attach(reg, session, user);
	return PRESENCE_OK;
}

enum presence_err presence_registry_session_connect(struct presence_registry *reg,
                                                    const void *client, const char *user_name)
{
	struct presence_session *session;
	struct presence_user *user;
	enum presence_err err;

	if (user_name == NULL || session_lookup(reg, client) != NULL) {
		return PRESENCE_OK;
	}
	err = presence_registry_user_get(reg, user_name, &user);
	if (err != PRESENCE_OK) {
		return err;
	}
	session = session_add(reg, client);
	if (session == NULL) {
		presence__registry_discard_if_unused(reg, user);
		return PRESENCE_ERR_NOMEM;
	}
	session_attach(reg, session, user);
	return PRESENCE_OK;
}

void presence_registry_session_gone(struct presence_registry *reg, const void *client)
{
	struct presence_session *session = session_lookup(reg, client);
	struct presence_user *user;

	if (session == NULL) {
		return;
	}
	user = session->user;
	session_remove(reg, session);
	if (user == NULL) {
		return;
	}
	if (--user->sessions == 0) {
		reg->available--;
		/* Only a user subscribers see as available has anything to wait for. */
		if (reg->offline_delay_ms > 0 && user->pub_available && !user->waiting) {
			presence__registry_wait_begin(reg, user);
		}
		presence__registry_idle_sync(reg, user);
	}
	reg->active--;
	presence_registry_user_changed(reg, user);
}

bool presence_registry_session_find(const struct presence_registry *reg, const void *client,
                                    struct presence_user **user)
{
	struct presence_session *session = session_lookup(reg, client);

	if (user != NULL) {
		*user = session != NULL ? session->user : NULL;
	}
	return session != NULL;
}
