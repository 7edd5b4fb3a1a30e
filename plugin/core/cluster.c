/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Cluster mode's broker-independent rules (see cluster.h).
 *
 * Pending state writes live in a uthash table keyed by the user's address, one entry per user
 * that has writes: a FIFO of copies of the writes, of which the first in_flight are in the
 * commit in flight. Only users with writes cost anything, and every operation is O(1) in the
 * number of users (folding is O(writes of that user)).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "cluster.h"
#include "testing.h"
#include "text.h"
#include "utf8.h"

/* One state write waiting to be committed. */
struct pending_write {
	struct pending_write *next;
	enum presence_cluster_write_kind kind;
	/* The key (SET_KEY only), its length, the payload and the topic, all owned. */
	char *key;
	size_t key_len;
	char *payload;
	size_t payload_len;
	char *topic;
};

/* The writes of one user. */
struct user_writes {
	/* The hash key. */
	struct presence_user *user;
	struct pending_write *head, *tail;
	/* How many writes at the head are in the commit in flight (0: none in flight). */
	size_t in_flight;
	/* The newest document values Redis answered a commit with (0 / NULL: none). */
	uint64_t base_seq;
	char *base_state;
	UT_hash_handle hh;
};

struct presence_cluster_writes {
	struct user_writes *users;
};

enum presence_err presence_cluster_apply_record(struct presence_registry *reg,
                                                const struct presence_cluster_record *rec,
                                                bool force, struct presence_user **user, bool *due)
{
	struct presence_document doc;
	struct presence_user *u;
	enum presence_err err;
	uint64_t seq = 0;

	*due = false;
	*user = NULL;
	if (rec->name == NULL || rec->state == NULL ||
	    !presence_utf8_valid(rec->name, strlen(rec->name)) || rec->seq == 0) {
		return PRESENCE_ERR_INVAL;
	}
	err = presence_registry_user_get(reg, rec->name, &u);
	if (err != PRESENCE_OK) {
		return err;
	}
	if (presence_user_published(u, &doc)) {
		seq = doc.seq;
	}
	*user = u;
	if (rec->seq < seq || (rec->seq == seq && !force)) {
		return PRESENCE_OK;
	}
	doc.username = rec->name;
	doc.available = rec->available;
	doc.sessions = rec->sessions;
	doc.since_ms = rec->since_ms;
	doc.seq = rec->seq;
	doc.state_json = rec->state;
	err = presence_registry_user_adopt(reg, u, &doc);
	if (err != PRESENCE_OK) {
		return err;
	}
	*due = true;
	return PRESENCE_OK;
}

struct presence_cluster_writes *presence_cluster_writes_new(void)
{
	return calloc(1, sizeof(struct presence_cluster_writes));
}

static void write_free(struct pending_write *pw)
{
	if (pw == NULL) {
		return;
	}
	free(pw->key);
	free(pw->payload);
	free(pw->topic);
	free(pw);
}

/* Forgets the entry of a user (its writes are freed). */
static void entry_remove(struct presence_cluster_writes *w, struct user_writes *uw)
{
	struct pending_write *pw, *next;

	for (pw = uw->head; pw != NULL; pw = next) {
		next = pw->next;
		write_free(pw);
	}
	HASH_DEL(w->users, uw);
	free(uw->base_state);
	free(uw);
}

void presence_cluster_writes_free(struct presence_cluster_writes *w)
{
	struct user_writes *uw, *tmp;

	if (w == NULL) {
		return;
	}
	HASH_ITER(hh, w->users, uw, tmp)
	{
		entry_remove(w, uw);
	}
	free(w);
}

static struct user_writes *entry_find(const struct presence_cluster_writes *w,
                                      const struct presence_user *user)
{
	struct user_writes *uw = NULL;

	HASH_FIND_PTR(w->users, &user, uw);
	return uw;
}

/* Applies one write to st. Returns what the state module returns. */
static enum presence_err write_apply(struct presence_state *st,
                                     const struct presence_state_limits *limits,
                                     enum presence_cluster_write_kind kind, const char *key,
                                     size_t key_len, const void *payload, size_t payload_len,
                                     bool *changed, char *reason)
{
	if (kind == PRESENCE_CLUSTER_WRITE_SET_KEY) {
		return presence_state_set_key(st, limits, key, key_len, payload, payload_len,
		                              changed, reason);
	}
	return presence_state_merge(st, limits, payload, payload_len, changed, reason);
}

enum presence_err presence_cluster_write_add(struct presence_cluster_writes *w,
                                             struct presence_user *user, const char *base,
                                             const struct presence_state_limits *limits,
                                             enum presence_cluster_write_kind kind, const char *key,
                                             size_t key_len, const void *payload,
                                             size_t payload_len, const char *topic, bool *changed,
                                             char *reason)
{
	struct user_writes *uw = entry_find(w, user);
	struct presence_state st;
	struct pending_write *pw;
	enum presence_err err;

	*changed = false;
	presence_state_init(&st);
	/* With writes queued before it, the write is checked on its own (its syntax and keys,
	 * on an empty state: cheap) and its limits when it is folded, where the state it applies
	 * to is known; otherwise it is checked on base, as a single broker checks it. base is a
	 * state the registry adopted, so it parsed before: failing now is cJSON running out of
	 * memory, which it reports as a syntax error. */
	err = presence_state_adopt(&st, uw != NULL ? "{}" : base) == PRESENCE_OK
	          ? PRESENCE_OK
	          : PRESENCE_ERR_NOMEM;
	if (err == PRESENCE_OK) {
		err = write_apply(&st, limits, kind, key, key_len, payload, payload_len, changed,
		                  reason);
	}
	presence_state_release(&st);
	if (err == PRESENCE_ERR_TOO_LARGE && uw != NULL) {
		err = PRESENCE_OK;
	}
	if (err != PRESENCE_OK) {
		*changed = false;
		return err;
	}
	/* With writes queued before it, the write counts even when it leaves base as it is:
	 * it may undo one of them. */
	if (!*changed && uw == NULL) {
		return PRESENCE_OK;
	}
	*changed = true;
	pw = calloc(1, sizeof(*pw));
	if (pw == NULL) {
		goto out_nomem;
	}
	pw->kind = kind;
	pw->key_len = key_len;
	pw->payload_len = payload_len;
	pw->key = presence_text_dup(key, kind == PRESENCE_CLUSTER_WRITE_SET_KEY ? key_len : 0);
	pw->payload = presence_text_dup(payload, payload_len);
	pw->topic = presence_text_dup(topic, strlen(topic));
	if (pw->key == NULL || pw->payload == NULL || pw->topic == NULL) {
		goto out_nomem;
	}
	if (uw == NULL) {
		uw = calloc(1, sizeof(*uw));
		if (uw == NULL) {
			goto out_nomem;
		}
		uw->user = user;
		HASH_ADD_PTR(w->users, user, uw);
		if (uw->hh.tbl == NULL) {
			free(uw);
			goto out_nomem;
		}
	}
	if (uw->tail != NULL) {
		uw->tail->next = pw;
	} else {
		uw->head = pw;
	}
	uw->tail = pw;
	return PRESENCE_OK;

out_nomem:
	write_free(pw);
	*changed = false;
	return PRESENCE_ERR_NOMEM;
}

bool presence_cluster_write_in_flight(const struct presence_cluster_writes *w,
                                      const struct presence_user *user)
{
	const struct user_writes *uw = entry_find(w, user);

	return uw != NULL && uw->in_flight > 0;
}

bool presence_cluster_write_pending(const struct presence_cluster_writes *w,
                                    const struct presence_user *user)
{
	const struct user_writes *uw = entry_find(w, user);
	const struct pending_write *pw;
	size_t i = 0;

	if (uw == NULL) {
		return false;
	}
	for (pw = uw->head; pw != NULL && i < uw->in_flight; pw = pw->next) {
		i++;
	}
	return pw != NULL;
}

enum presence_err presence_cluster_write_fold(struct presence_cluster_writes *w,
                                              struct presence_user *user, const char *base,
                                              const struct presence_state_limits *limits,
                                              presence_cluster_reject_fn reject, void *arg,
                                              char **state)
{
	struct user_writes *uw = entry_find(w, user);
	char reason[PRESENCE_STATE_REASON_SIZE];
	struct pending_write **link, *pw;
	struct presence_state st;
	enum presence_err err;
	size_t count = 0;

	*state = NULL;
	if (uw == NULL) {
		return PRESENCE_OK;
	}
	presence_state_init(&st);
	/* As in presence_cluster_write_add: base parsed before. */
	if (presence_state_adopt(&st, base) != PRESENCE_OK) {
		err = PRESENCE_ERR_NOMEM;
		goto out_release;
	}
	link = &uw->head;
	uw->tail = NULL;
	while ((pw = *link) != NULL) {
		bool changed;

		reason[0] = '\0';
		err = write_apply(&st, limits, pw->kind, pw->key, pw->key_len, pw->payload,
		                  pw->payload_len, &changed, reason);
		/* The write was checked when it arrived, and whether its payload and key are
		 * valid does not depend on the state: INVAL now means that cJSON ran out of memory
		 * parsing it (state.h). Only a limit can refuse it now. */
		if (err == PRESENCE_ERR_NOMEM || err == PRESENCE_ERR_INVAL) {
			err = PRESENCE_ERR_NOMEM;
			goto out_release;
		}
		if (err != PRESENCE_OK) {
			/* Valid when it arrived, refused on the state it now applies to. */
			*link = pw->next;
			if (reject != NULL) {
				reject(arg, user, pw->topic, reason);
			}
			write_free(pw);
			continue;
		}
		uw->tail = pw;
		link = &pw->next;
		count++;
	}
	err = PRESENCE_OK;
	if (count == 0) {
		entry_remove(w, uw);
		goto out_release;
	}
	*state = presence_text_dup(presence_state_json(&st), presence_state_json_len(&st));
	if (*state == NULL) {
		err = PRESENCE_ERR_NOMEM;
		goto out_release;
	}
	uw->in_flight = count;
out_release:
	if (err == PRESENCE_ERR_NOMEM && uw != NULL && uw->head != NULL) {
		/* The tail may not have been found: find it again. */
		for (pw = uw->head; pw->next != NULL; pw = pw->next) {
		}
		uw->tail = pw;
	}
	presence_state_release(&st);
	return err;
}

void presence_cluster_write_done(struct presence_cluster_writes *w, struct presence_user *user,
                                 bool committed, const char *reason,
                                 presence_cluster_reject_fn reject, void *arg)
{
	struct user_writes *uw = entry_find(w, user);

	if (uw == NULL) {
		return;
	}
	while (uw->in_flight > 0 && uw->head != NULL) {
		struct pending_write *pw = uw->head;

		uw->head = pw->next;
		if (uw->head == NULL) {
			uw->tail = NULL;
		}
		uw->in_flight--;
		if (!committed && reject != NULL) {
			reject(arg, user, pw->topic, reason);
		}
		write_free(pw);
	}
	uw->in_flight = 0;
	if (uw->head == NULL) {
		entry_remove(w, uw);
	}
}

void presence_cluster_write_retry(struct presence_cluster_writes *w, struct presence_user *user)
{
	struct user_writes *uw = entry_find(w, user);

	if (uw != NULL) {
		uw->in_flight = 0;
	}
}

void presence_cluster_write_fail_all(struct presence_cluster_writes *w, const char *reason,
                                     presence_cluster_reject_fn reject, void *arg)
{
	struct user_writes *uw, *tmp;

	HASH_ITER(hh, w->users, uw, tmp)
	{
		uw->in_flight = SIZE_MAX;
		presence_cluster_write_done(w, uw->user, false, reason, reject, arg);
	}
}

void presence_cluster_write_forget(struct presence_cluster_writes *w,
                                   const struct presence_user *user)
{
	struct user_writes *uw = entry_find(w, user);

	if (uw != NULL) {
		entry_remove(w, uw);
	}
}

enum presence_err presence_cluster_write_rebase(struct presence_cluster_writes *w,
                                                const struct presence_user *user, uint64_t seq,
                                                const char *state)
{
	struct user_writes *uw = entry_find(w, user);
	char *copy;

	if (uw == NULL || seq <= uw->base_seq) {
		return PRESENCE_OK;
	}
	copy = presence_text_dup(state, strlen(state));
	if (copy == NULL) {
		return PRESENCE_ERR_NOMEM;
	}
	free(uw->base_state);
	uw->base_state = copy;
	uw->base_seq = seq;
	return PRESENCE_OK;
}

const char *presence_cluster_write_base(const struct presence_cluster_writes *w,
                                        const struct presence_user *user, uint64_t *seq)
{
	const struct user_writes *uw = entry_find(w, user);

	if (uw == NULL || uw->base_state == NULL || uw->base_seq <= *seq) {
		return NULL;
	}
	*seq = uw->base_seq;
	return uw->base_state;
}

size_t presence_cluster_write_users(const struct presence_cluster_writes *w)
{
	return HASH_COUNT(w->users);
}

/* Copies len bytes of s into out (size bytes) with a NUL; false when it does not fit. */
static bool copy_into(char *out, size_t size, const char *s, size_t len)
{
	if (len >= size) {
		return false;
	}
	memcpy(out, s, len);
	out[len] = '\0';
	return true;
}

/* Percent-decodes len bytes of s into out (size bytes, NUL-terminated). False when an escape
 * is malformed, a byte is a control character (NUL included) or the result does not fit. */
static bool url_decode(char *out, size_t size, const char *s, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '%') {
			unsigned int v = 0;

			if (i + 2 >= len) {
				return false;
			}
			for (int k = 1; k <= 2; k++) {
				char h = s[i + (size_t)k];

				v <<= 4;
				if (h >= '0' && h <= '9') {
					v |= (unsigned int)(h - '0');
				} else if (h >= 'a' && h <= 'f') {
					v |= (unsigned int)(h - 'a' + 10);
				} else if (h >= 'A' && h <= 'F') {
					v |= (unsigned int)(h - 'A' + 10);
				} else {
					return false;
				}
			}
			c = (unsigned char)v;
			i += 2;
		}
		if (c < 0x20 || c == 0x7f || n + 1 >= size) {
			return false;
		}
		out[n++] = (char)c;
	}
	out[n] = '\0';
	return true;
}

enum presence_err presence_cluster_endpoint_parse(const char *url,
                                                  struct presence_cluster_endpoint *out,
                                                  char *reason, size_t reason_size)
{
	static const char redis_scheme[] = "redis://";
	static const char rediss_scheme[] = "rediss://";
	static const char unix_scheme[] = "unix:";
	const char *host, *end, *colon, *at;
	size_t host_len;

	memset(out, 0, sizeof(*out));
	if (strncmp(url, unix_scheme, sizeof(unix_scheme) - 1) == 0 || url[0] == '/') {
		const char *path = url[0] == '/' ? url : url + sizeof(unix_scheme) - 1;

		if (path[0] != '/' ||
		    !copy_into(out->path, sizeof(out->path), path, strlen(path))) {
			snprintf(reason, reason_size,
			         "give an absolute unix socket path of at most %zu bytes",
			         sizeof(out->path) - 1);
			return PRESENCE_ERR_INVAL;
		}
		return PRESENCE_OK;
	}
	if (strncmp(url, redis_scheme, sizeof(redis_scheme) - 1) == 0) {
		host = url + sizeof(redis_scheme) - 1;
	} else if (strncmp(url, rediss_scheme, sizeof(rediss_scheme) - 1) == 0) {
		host = url + sizeof(rediss_scheme) - 1;
		out->tls = true;
	} else {
		goto out_syntax;
	}
	end = host + strlen(host);
	if (end > host && end[-1] == '/') {
		end--;
	}
	/* user[:password]@ (the last '@': a password may hold one unencoded) */
	at = NULL;
	for (const char *p = host; p < end && *p != '/'; p++) {
		if (*p == '@') {
			at = p;
		}
	}
	if (at != NULL) {
		const char *sep = memchr(host, ':', (size_t)(at - host));
		const char *user_end = sep != NULL ? sep : at;

		if (!url_decode(out->user, sizeof(out->user), host, (size_t)(user_end - host)) ||
		    (sep != NULL &&
		     (sep + 1 == at || !url_decode(out->password, sizeof(out->password), sep + 1,
		                                   (size_t)(at - sep - 1))))) {
			snprintf(reason, reason_size,
			         "the user name or password in the URL is too long, empty or not "
			         "percent-encoded (use %%40 for @, %%3A for :, %%25 for %%)");
			memset(out, 0, sizeof(*out));
			return PRESENCE_ERR_INVAL;
		}
		if (sep == NULL && out->user[0] == '\0') {
			goto out_syntax;
		}
		host = at + 1;
	}
	if (*host == '[') {
		const char *close = memchr(host, ']', (size_t)(end - host));

		if (close == NULL) {
			goto out_syntax;
		}
		host_len = (size_t)(close - host - 1);
		colon = close + 1 < end && close[1] == ':' ? close + 1 : NULL;
		if (colon == NULL && close + 1 != end) {
			goto out_syntax;
		}
		host++;
	} else {
		colon = memchr(host, ':', (size_t)(end - host));
		host_len = (size_t)((colon != NULL ? colon : end) - host);
	}
	if (host_len == 0 || memchr(host, '/', host_len) != NULL || memchr(host, '@', host_len) ||
	    !copy_into(out->host, sizeof(out->host), host, host_len)) {
		goto out_syntax;
	}
	out->port = 6379;
	if (colon != NULL) {
		uint64_t port;

		if (!presence_text_parse_uint(colon + 1, (size_t)(end - colon - 1), 1, 65535,
		                              &port)) {
			goto out_syntax;
		}
		out->port = (int)port;
	}
	return PRESENCE_OK;

out_syntax:
	snprintf(
	    reason, reason_size,
	    "use redis://[user[:password]@]host[:port], rediss://... (TLS), unix:/path/to/socket "
	    "or /path/to/socket");
	memset(out, 0, sizeof(*out));
	return PRESENCE_ERR_INVAL;
}

void presence_cluster_endpoint_describe(const struct presence_cluster_endpoint *ep, char *out,
                                        size_t size)
{
	if (ep->path[0] != '\0') {
		snprintf(out, size, "unix:%s", ep->path);
		return;
	}
	snprintf(out, size, "%s://%s%s%s%s%s:%d", ep->tls ? "rediss" : "redis", ep->user,
	         ep->user[0] != '\0' ? "@" : "", strchr(ep->host, ':') != NULL ? "[" : "", ep->host,
	         strchr(ep->host, ':') != NULL ? "]" : "", ep->port);
}

bool presence_cluster_broker_id_valid(const char *id)
{
	size_t len = strlen(id);

	if (len == 0 || len > 64) {
		return false;
	}
	for (size_t i = 0; i < len; i++) {
		char c = id[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-')) {
			return false;
		}
	}
	return true;
}

int64_t presence_cluster_backoff_ms(unsigned int attempt, int64_t cap_ms, uint32_t rnd)
{
	int64_t wait = 100;

	for (unsigned int i = 1; i < attempt && wait < cap_ms; i++) {
		wait *= 2;
	}
	if (wait > cap_ms) {
		wait = cap_ms;
	}
	return wait / 2 + (int64_t)(rnd % (uint32_t)(wait / 2 + 1));
}
