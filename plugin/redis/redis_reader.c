/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The link's reader thread (see redis_link.h and docs/DESIGN.md, "Cluster link"): it follows
 * the stream of documents (pv2_read, waiting with XREAD BLOCK), takes a snapshot of every user
 * when it cannot go on from the last record it read, and hands each document to the broker
 * thread as a result. Each step returns PRESENCE_OK or PRESENCE_ERR_IO (the connection failed:
 * the caller reconnects with backoff).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "redis_link_int.h"

/* Records read per pv2_read call. */
#define READ_COUNT 500

/*
 * A snapshot reads every user's privacy choice, then the reader follows the stream from where
 * it ended before the snapshot began: records written during the snapshot are read again. A
 * document's seq tells an old one from a new one; a privacy choice has no seq, so the snapshot
 * notes, for each user whose choice it read from a record written during it (the user's pid,
 * the id of the record that carried it, is after where the stream ended), that id: the choices
 * of records before it are older than the one the broker has, and are not applied again. The
 * notes go once the reader has caught up with the stream (every record before them read).
 */
struct privacy_seen {
	UT_hash_handle hh;
	char id[PRESENCE_REDIS_ID_SIZE];
	char name[];
};

static void seen_clear(struct privacy_seen **seen)
{
	struct privacy_seen *e, *tmp;

	HASH_ITER(hh, *seen, e, tmp)
	{
		HASH_DEL(*seen, e);
		free(e);
	}
}

/* Notes that the snapshot read name's choice from record id (when id is after mark). Out of
 * memory: not noted (an older choice may then be applied again until its newer one is read). */
static void seen_note(struct privacy_seen **seen, const char *name, const char *id,
                      const char *mark)
{
	size_t len = strlen(name);
	struct privacy_seen *e;

	if (id[0] == '\0' || !presence_redis_id_after(id, mark)) {
		return;
	}
	HASH_FIND(hh, *seen, name, len, e);
	if (e == NULL) {
		e = malloc(sizeof(*e) + len + 1);
		if (e == NULL) {
			return;
		}
		memcpy(e->name, name, len + 1);
		HASH_ADD_KEYPTR(hh, *seen, e->name, len, e);
	}
	memcpy(e->id, id, PRESENCE_REDIS_ID_SIZE);
}

/* Whether the choice of user name in record id is older than the one the snapshot read. */
static bool seen_newer(struct privacy_seen *seen, const char *name, const char *id)
{
	struct privacy_seen *e;

	HASH_FIND(hh, seen, name, strlen(name), e);
	return e != NULL && presence_redis_id_after(e->id, id);
}

/* Pushes the result of one stream record (its id): a document, a privacy choice, a user
 * forgotten, or a barrier to confirm. A record of no known shape is skipped. */
static void push_record(struct presence_redis *r, const redisReply *fields, const char *id,
                        struct privacy_seen *seen)
{
	struct presence_redis_stream_record sr;
	struct presence_redis_result *res;

	if (presence_redis_decode_record(fields, &sr) != PRESENCE_OK) {
		return;
	}
	switch (sr.kind) {
	case PRESENCE_REDIS_RECORD_BARRIER:
		/* A user waits to go offline: this broker is to confirm the barrier. */
		presence__redis_learn_barrier(r, sr.rec.seq);
		presence_redis_record_clear(&sr.rec);
		return;
	case PRESENCE_REDIS_RECORD_FORGOTTEN:
		presence__redis_push_named(r, PRESENCE_REDIS_FORGET, sr.rec.name, sr.rec.seq);
		presence_redis_record_clear(&sr.rec);
		return;
	case PRESENCE_REDIS_RECORD_DOCUMENT:
	case PRESENCE_REDIS_RECORD_PRIVACY:
		break;
	}
	if (sr.rec.privacy != NULL && seen_newer(seen, sr.rec.name, id)) {
		free(sr.rec.privacy);
		sr.rec.privacy = NULL;
		if (sr.kind == PRESENCE_REDIS_RECORD_PRIVACY) {
			presence_redis_record_clear(&sr.rec);
			return;
		}
	}
	res = calloc(1, sizeof(*res));
	if (res == NULL) {
		presence_redis_record_clear(&sr.rec);
		return;
	}
	res->kind = sr.kind == PRESENCE_REDIS_RECORD_PRIVACY ? PRESENCE_REDIS_PRIVACY
	                                                     : PRESENCE_REDIS_RECORD;
	res->rec = sr.rec;
	presence__redis_push(r, res);
}

/* Reads the user hashes of keys (a SCAN page) and pushes their documents; notes in seen the
 * privacy choices written after mark (where the stream ended). */
static enum presence_err snapshot_page(struct presence_redis *r, struct presence_redis_conn *conn,
                                       const redisReply *keys, bool force, const char *mark,
                                       struct privacy_seen **seen)
{
	struct presence_redis_cmd c = {0};
	size_t n = 0;

	for (size_t i = 0; i < keys->elements; i++) {
		const char *key = presence_redis_reply_str(keys->element[i]);

		if (presence_redis_user_of_key(key) == NULL) {
			continue;
		}
		if (presence_redis_encode_user_doc(&c, key) != PRESENCE_OK ||
		    presence_redis_conn_send(conn, &c) != PRESENCE_OK) {
			presence_redis_cmd_free(&c);
			return PRESENCE_ERR_IO;
		}
		presence_redis_cmd_free(&c);
		n++;
	}
	for (size_t i = 0, got = 0; got < n; i++) {
		const char *name =
		    presence_redis_user_of_key(presence_redis_reply_str(keys->element[i]));
		struct presence_redis_result *res;
		redisReply *reply;

		if (name == NULL) {
			continue;
		}
		got++;
		if (presence_redis_conn_receive(conn, &reply) != PRESENCE_OK) {
			return PRESENCE_ERR_IO;
		}
		res = calloc(1, sizeof(*res));
		if (res != NULL &&
		    presence_redis_decode_user_doc(reply, name, &res->rec) == PRESENCE_OK) {
			char pid[PRESENCE_REDIS_ID_SIZE];

			presence_redis_decode_user_privacy_id(reply, pid);
			seen_note(seen, name, pid, mark);
			if (pid[0] == '\0') {
				/* Redis does not know the user's choice (it lost its data, and
				 * this broker's seed brings the choice back): this broker's
				 * stands. */
				free(res->rec.privacy);
				res->rec.privacy = NULL;
			}
			res->kind = PRESENCE_REDIS_RECORD;
			res->force = force;
			presence__redis_push(r, res);
		} else {
			free(res);
		}
		presence_redis_conn_reply_free(conn, reply);
	}
	return PRESENCE_OK;
}

/* Pushes the snapshot of every user (force: the first snapshot, see PRESENCE_REDIS_RECORD),
 * taken after the stream ended at mark. */
static enum presence_err snapshot(struct presence_redis *r, struct presence_redis_conn *conn,
                                  bool force, const char *mark, struct privacy_seen **seen)
{
	char cursor[32] = "0";

	do {
		struct presence_redis_cmd c = {0};
		const redisReply *keys;
		enum presence_err err;
		redisReply *scan;

		if (presence_redis_encode_scan(&c, cursor) != PRESENCE_OK ||
		    (scan = presence_redis_conn_run(conn, &c)) == NULL) {
			return PRESENCE_ERR_IO;
		}
		if (presence_redis_decode_scan(scan, cursor, &keys) != PRESENCE_OK) {
			presence_redis_conn_reply_free(conn, scan);
			return PRESENCE_ERR_IO;
		}
		err = snapshot_page(r, conn, keys, force, mark, seen);
		presence_redis_conn_reply_free(conn, scan);
		if (err != PRESENCE_OK) {
			return err;
		}
	} while (strcmp(cursor, "0") != 0);
	return PRESENCE_OK;
}

/* Reads the stream from last_id (PRESENCE_REDIS_ID_SIZE bytes) on until the connection fails
 * or the link stops (PRESENCE_ERR_IO), or the stream was trimmed past last_id (PRESENCE_OK:
 * records were missed, take a snapshot). Waits for new records with XREAD BLOCK and reads them
 * with pv2_read, which checks for a gap in the same step. */
static enum presence_err follow(struct presence_redis *r, struct presence_redis_conn *conn,
                                char *last_id, struct privacy_seen **seen)
{
	while (!presence__redis_stopping(r)) {
		struct presence_redis_cmd c = {0};
		const redisReply *entries;
		redisReply *reply;
		bool gap;

		if (presence_redis_encode_read(&c, last_id, READ_COUNT) != PRESENCE_OK ||
		    (reply = presence_redis_conn_run(conn, &c)) == NULL) {
			return PRESENCE_ERR_IO;
		}
		if (presence_redis_decode_read(reply, &gap, &entries) != PRESENCE_OK) {
			presence_redis_conn_reply_free(conn, reply);
			return PRESENCE_ERR_IO;
		}
		if (gap) {
			presence_redis_conn_reply_free(conn, reply);
			presence__redis_log(
			    r, PRESENCE_REDIS_LOG_WARNING,
			    "the stream of documents was trimmed past the last record "
			    "read; taking a snapshot");
			return PRESENCE_OK;
		}
		for (size_t i = 0; i < entries->elements; i++) {
			const redisReply *fields;
			char id[PRESENCE_REDIS_ID_SIZE];

			if (presence_redis_decode_entry(entries->element[i], id, &fields) !=
			    PRESENCE_OK) {
				continue;
			}
			memcpy(last_id, id, PRESENCE_REDIS_ID_SIZE);
			if (fields != NULL) {
				push_record(r, fields, id, *seen);
			}
		}
		if (entries->elements > 0) {
			presence_redis_conn_reply_free(conn, reply);
			continue;
		}
		presence_redis_conn_reply_free(conn, reply);
		/* Caught up: every record the snapshot's notes are about was read. */
		seen_clear(seen);
		/* Nothing new: wait for a record (or READ_BLOCK_MS). */
		if (presence_redis_encode_wait_record(&c, last_id, PRESENCE_REDIS_READ_BLOCK_MS) !=
		        PRESENCE_OK ||
		    (reply = presence_redis_conn_run(conn, &c)) == NULL) {
			return PRESENCE_ERR_IO;
		}
		presence_redis_conn_reply_free(conn, reply);
	}
	return PRESENCE_ERR_IO;
}

/* Sets last_id (PRESENCE_REDIS_ID_SIZE bytes) to where the stream ends now: its last record, or
 * the last one trimmed when that is later (an empty stream). */
static enum presence_err stream_end(struct presence_redis_conn *conn, char *last_id)
{
	struct presence_redis_cmd c = {0};
	redisReply *reply;
	const char *trimmed;
	bool found;

	if (presence_redis_encode_last_record(&c) != PRESENCE_OK ||
	    (reply = presence_redis_conn_run(conn, &c)) == NULL) {
		return PRESENCE_ERR_IO;
	}
	(void)presence_redis_decode_last_record(reply, last_id, &found);
	presence_redis_conn_reply_free(conn, reply);
	if (presence_redis_encode_last_trimmed(&c) != PRESENCE_OK ||
	    (reply = presence_redis_conn_run(conn, &c)) == NULL) {
		return PRESENCE_ERR_IO;
	}
	trimmed = presence_redis_reply_str(reply);
	if (trimmed != NULL && strlen(trimmed) < PRESENCE_REDIS_ID_SIZE &&
	    presence_redis_id_after(trimmed, last_id)) {
		memcpy(last_id, trimmed, strlen(trimmed) + 1);
	}
	presence_redis_conn_reply_free(conn, reply);
	return PRESENCE_OK;
}

/* Whether the stream still holds the record last_id: 1 yes, 0 no (another server, or one that
 * lost its data), -1 unknown (the connection failed, or Redis answered an error, such as
 * LOADING while it reads its AOF after a restart). */
static int stream_has(struct presence_redis_conn *conn, const char *last_id)
{
	struct presence_redis_cmd c = {0};
	redisReply *reply;
	bool has;
	int found = -1;

	if (presence_redis_encode_has_record(&c, last_id) != PRESENCE_OK ||
	    (reply = presence_redis_conn_run(conn, &c)) == NULL) {
		return -1;
	}
	if (presence_redis_decode_has_record(reply, &has) == PRESENCE_OK) {
		found = has ? 1 : 0;
	}
	presence_redis_conn_reply_free(conn, reply);
	return found;
}

/* Reads on one connection: a snapshot first when snap, then the stream, until the connection
 * fails or the link stops. *first: no snapshot was taken yet; *attempt is reset once reading
 * goes well; *seen: the notes of privacy choices (see struct privacy_seen). */
static void read_on(struct presence_redis *r, struct presence_redis_conn *conn, bool snap,
                    char *last_id, bool *first, unsigned int *attempt, struct privacy_seen **seen)
{
	while (!presence__redis_stopping(r)) {
		if (snap) {
			seen_clear(seen);
			snprintf(last_id, PRESENCE_REDIS_ID_SIZE, "0-0");
			if (stream_end(conn, last_id) != PRESENCE_OK ||
			    snapshot(r, conn, *first, last_id, seen) != PRESENCE_OK) {
				/* Not knowing what the snapshot missed, take it again. */
				last_id[0] = '\0';
				return;
			}
			presence__redis_push_named(r, PRESENCE_REDIS_SNAPSHOT_DONE, NULL, 0);
			*first = false;
			*attempt = 0;
		}
		if (follow(r, conn, last_id, seen) != PRESENCE_OK) {
			return;
		}
		snap = true;
	}
}

void *presence__redis_reader_main(void *arg)
{
	struct presence_redis *r = arg;
	unsigned int attempt = 0;
	unsigned int rnd = r->reader_rnd;
	bool first = true;
	char why[256];
	/* The last record read ("" before the first snapshot). */
	char last_id[PRESENCE_REDIS_ID_SIZE] = "";
	/* The snapshot's notes of privacy choices (kept until the reader caught up, across
	 * connections to the same stream). */
	struct privacy_seen *seen = NULL;

	while (!presence__redis_stopping(r)) {
		struct presence_redis_conn *conn;
		bool snap;

		if (attempt > 0) {
			presence__redis_wait(r, presence__redis_backoff(r, attempt, &rnd), false);
			if (presence__redis_stopping(r)) {
				break;
			}
		}
		attempt++;
		/* (Why it fails is the writer's to say: it connects the same way.) */
		conn = presence_redis_conn_open(
		    r->hi, &r->cfg.endpoint, r->tls,
		    r->cfg.command_timeout_ms + PRESENCE_REDIS_READ_BLOCK_MS, why, sizeof(why));
		if (conn == NULL) {
			continue;
		}
		/* Back on the stream it read (the same Redis, or one restarted from its data): go
		 * on after the last record, so that every document is published. Otherwise note
		 * where the stream ends, then read every user, then follow from there: a change
		 * made during the snapshot is read again, which the seq rule ignores. A gap
		 * (records trimmed before they were read) takes another snapshot. */
		if (last_id[0] == '\0') {
			snap = true;
		} else {
			int has = stream_has(conn, last_id);

			if (has < 0) {
				/* Not known yet: keep the place and ask again (a snapshot now would
				 * skip the records after it). */
				presence_redis_conn_close(conn);
				continue;
			}
			snap = has == 0;
			if (!snap) {
				attempt = 0;
			}
		}
		read_on(r, conn, snap, last_id, &first, &attempt, &seen);
		presence_redis_conn_close(conn);
	}
	seen_clear(&seen);
	return NULL;
}
