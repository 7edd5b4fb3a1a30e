/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * libFuzzer harness: the decoders of the stream of documents (plugin/redis/redis_codec.h): the
 * reply of pv2_read ({"GAP"} or {"ENTRIES", [[id, fields], ...]}) in RESP (see resp.h), each
 * entry, and each record (a document, with or without a privacy choice, a privacy choice
 * alone, a user forgotten, a barrier).
 * Invariants: a record that fails to decode leaves nothing allocated and its output zeroed; a
 * document has a name, a state and seq >= 1; a privacy choice alone has a name, a privacy and
 * no state; a user forgotten has a name and no state; a barrier has neither; an entry's id fits
 * its buffer; and a record written back as the fields presence_v2.lua appends ({u, q, a, n, t,
 * s[, p]}, {u, p}, {u, q, f}, {y}) decodes to the same values (decode(encode(x)) == x).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "redis_codec.h"
#include "resp.h"

static redisReply *str(const char *s)
{
	return fuzz_reply_str(REDIS_REPLY_STRING, s, strlen(s));
}

/* The fields presence_v2.lua appends for rec. */
static redisReply *record_fields(const struct presence_redis_stream_record *sr)
{
	const struct presence_cluster_record *rec = &sr->rec;
	redisReply *e[14];
	char seq[32], sess[32], since[32];
	size_t n = 0;

	snprintf(seq, sizeof(seq), "%" PRIu64, rec->seq);
	switch (sr->kind) {
	case PRESENCE_REDIS_RECORD_BARRIER:
		e[n++] = str("y");
		e[n++] = str(seq);
		break;
	case PRESENCE_REDIS_RECORD_FORGOTTEN:
		e[n++] = str("u");
		e[n++] = str(rec->name);
		e[n++] = str("q");
		e[n++] = str(seq);
		e[n++] = str("f");
		e[n++] = str("1");
		break;
	case PRESENCE_REDIS_RECORD_DOCUMENT:
		snprintf(sess, sizeof(sess), "%u", rec->sessions);
		snprintf(since, sizeof(since), "%" PRId64, rec->since_ms);
		e[n++] = str("u");
		e[n++] = str(rec->name);
		e[n++] = str("q");
		e[n++] = str(seq);
		e[n++] = str("a");
		e[n++] = str(rec->available ? "1" : "0");
		e[n++] = str("n");
		e[n++] = str(sess);
		e[n++] = str("t");
		e[n++] = str(since);
		e[n++] = str("s");
		e[n++] = str(rec->state);
		if (rec->privacy != NULL) {
			e[n++] = str("p");
			e[n++] = str(rec->privacy);
		}
		break;
	case PRESENCE_REDIS_RECORD_PRIVACY:
		e[n++] = str("u");
		e[n++] = str(rec->name);
		e[n++] = str("p");
		e[n++] = str(rec->privacy);
		break;
	}
	return fuzz_reply_array(n, e);
}

static bool same_string(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void check_record(const redisReply *fields)
{
	struct presence_redis_stream_record sr, again;
	enum presence_err err = presence_redis_decode_record(fields, &sr);
	redisReply *back;

	if (err != PRESENCE_OK) {
		FUZZ_CHECK(err == PRESENCE_ERR_INVAL || err == PRESENCE_ERR_NOMEM);
		FUZZ_CHECK(fuzz_all_zero(&sr.rec, sizeof(sr.rec)));
		return;
	}
	switch (sr.kind) {
	case PRESENCE_REDIS_RECORD_DOCUMENT:
		FUZZ_CHECK(sr.rec.name != NULL && sr.rec.state != NULL && sr.rec.seq >= 1);
		FUZZ_CHECK(sr.rec.since_ms >= 0);
		break;
	case PRESENCE_REDIS_RECORD_PRIVACY:
		FUZZ_CHECK(sr.rec.name != NULL && sr.rec.privacy != NULL && sr.rec.state == NULL &&
		           sr.rec.seq == 0);
		break;
	case PRESENCE_REDIS_RECORD_FORGOTTEN:
		FUZZ_CHECK(sr.rec.name != NULL && sr.rec.state == NULL && sr.rec.privacy == NULL);
		break;
	case PRESENCE_REDIS_RECORD_BARRIER:
		FUZZ_CHECK(sr.rec.name == NULL && sr.rec.state == NULL && sr.rec.privacy == NULL);
		break;
	}
	back = record_fields(&sr);
	FUZZ_CHECK(presence_redis_decode_record(back, &again) == PRESENCE_OK);
	FUZZ_CHECK(again.kind == sr.kind && again.rec.seq == sr.rec.seq &&
	           same_string(again.rec.name, sr.rec.name) &&
	           same_string(again.rec.state, sr.rec.state) &&
	           same_string(again.rec.privacy, sr.rec.privacy));
	if (sr.kind == PRESENCE_REDIS_RECORD_DOCUMENT) {
		FUZZ_CHECK(again.rec.available == sr.rec.available &&
		           again.rec.sessions == sr.rec.sessions &&
		           again.rec.since_ms == sr.rec.since_ms);
	}
	presence_redis_record_clear(&again.rec);
	fuzz_reply_free(back);
	presence_redis_record_clear(&sr.rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	redisReply *reply = fuzz_resp_parse(data, size);
	const redisReply *entries;
	bool gap;

	if (reply == NULL) {
		return 0;
	}
	if (presence_redis_decode_read(reply, &gap, &entries) == PRESENCE_OK && !gap) {
		FUZZ_CHECK(entries != NULL && entries->type == REDIS_REPLY_ARRAY);
		for (size_t i = 0; i < entries->elements; i++) {
			char id[PRESENCE_REDIS_ID_SIZE];
			const redisReply *fields;

			if (presence_redis_decode_entry(entries->element[i], id, &fields) !=
			    PRESENCE_OK) {
				FUZZ_CHECK(id[0] == '\0' && fields == NULL);
				continue;
			}
			FUZZ_CHECK(id[0] != '\0' && strlen(id) < sizeof(id));
			FUZZ_CHECK(!presence_redis_id_after(id, id));
			if (fields != NULL) {
				check_record(fields);
			}
		}
	} else if (gap) {
		FUZZ_CHECK(entries == NULL);
	}
	/* The input as one record too. */
	check_record(reply);
	fuzz_reply_free(reply);
	return 0;
}
