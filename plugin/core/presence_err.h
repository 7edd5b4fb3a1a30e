/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The one error contract of the presence core.
 *
 * Every action in plugin/core returns an enum presence_err: PRESENCE_OK (0) on success, another
 * value on failure, and a failed action leaves its object exactly as it was unless its
 * declaration says otherwise. Predicates return bool and constructors return a pointer or NULL.
 * The adapter (plugin/mosquitto/) maps these values to MOSQ_ERR_* in one place.
 */
#ifndef PRESENCE_ERR_H
#define PRESENCE_ERR_H

enum presence_err {
	PRESENCE_OK = 0,
	/* An allocation failed; nothing was changed. */
	PRESENCE_ERR_NOMEM,
	/* The input is malformed or breaks a rule (a key, a payload, an option value). */
	PRESENCE_ERR_INVAL,
	/* The result would break a configured limit (max_state_bytes, max_keys). */
	PRESENCE_ERR_TOO_LARGE,
	/* The thing asked for does not exist. */
	PRESENCE_ERR_NOT_FOUND,
	/* A file could not be read or written. */
	PRESENCE_ERR_IO,
	/* A configured capacity is reached (max_users, every user online). */
	PRESENCE_ERR_FULL,
};

/* Returns a static, human-readable name for err; never NULL. */
const char *presence_strerror(enum presence_err err);

#endif
