/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * libFuzzer harness: the decoders of the replies of the cluster's Redis functions
 * (plugin/redis/redis_codec.h). The first byte picks the decoder, the rest is the reply in RESP
 * (see resp.h), as hiredis would hand it over.
 * Invariants: a decoder that fails leaves its output zeroed with nothing allocated (LeakSanitizer
 * checks the latter); one that succeeds meets the bounds its declaration gives (non-empty
 * identifiers that fit their buffers, seq >= 1, counts >= 0, borrowed strings inside the
 * reply); and a document decoded from a pv2_cas or an HMGET reply (with priv: the privacy choice),
 * written back as such a reply, decodes to the same values (decode(encode(x)) == x).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "redis_codec.h"
#include "resp.h"

#define NAME "alice"

/* The reply {status, seq, avail, sess, since, state} (status NULL: the values of an HMGET
 * reply, with priv and pid when rec has a privacy) of rec. */
static redisReply *document_reply(const char *status, const struct presence_cluster_record *rec)
{
	redisReply *e[8];
	char buf[32];
	size_t n = 0;

	if (status != NULL) {
		e[n++] = fuzz_reply_str(REDIS_REPLY_STATUS, status, strlen(status));
	}
	snprintf(buf, sizeof(buf), "%" PRIu64, rec->seq);
	e[n++] = fuzz_reply_str(REDIS_REPLY_STRING, buf, strlen(buf));
	e[n++] = fuzz_reply_str(REDIS_REPLY_STRING, rec->available ? "1" : "0", 1);
	snprintf(buf, sizeof(buf), "%u", rec->sessions);
	e[n++] = fuzz_reply_str(REDIS_REPLY_STRING, buf, strlen(buf));
	snprintf(buf, sizeof(buf), "%" PRId64, rec->since_ms);
	e[n++] = fuzz_reply_str(REDIS_REPLY_STRING, buf, strlen(buf));
	e[n++] = fuzz_reply_str(REDIS_REPLY_STRING, rec->state, strlen(rec->state));
	if (status == NULL && rec->privacy != NULL) {
		e[n++] = fuzz_reply_str(REDIS_REPLY_STRING, rec->privacy, strlen(rec->privacy));
		e[n++] = fuzz_reply_str(REDIS_REPLY_STRING, "1-1", 3);
	}
	return fuzz_reply_array(n, e);
}

/* The bounds of a decoded document of user name. */
static void check_document(const struct presence_cluster_record *rec, const char *name)
{
	FUZZ_CHECK(rec->name != NULL && strcmp(rec->name, name) == 0);
	FUZZ_CHECK(rec->state != NULL);
	FUZZ_CHECK(rec->seq >= 1);
	FUZZ_CHECK(rec->since_ms >= 0);
}

static bool same_document(const struct presence_cluster_record *a,
                          const struct presence_cluster_record *b)
{
	return strcmp(a->name, b->name) == 0 && a->seq == b->seq && a->available == b->available &&
	       a->sessions == b->sessions && a->since_ms == b->since_ms &&
	       strcmp(a->state, b->state) == 0 &&
	       ((a->privacy == NULL && b->privacy == NULL) ||
	        (a->privacy != NULL && b->privacy != NULL && strcmp(a->privacy, b->privacy) == 0));
}

static void check_cas(const redisReply *reply)
{
	enum presence_redis_outcome out;
	struct presence_cluster_record rec, again;
	enum presence_err err = presence_redis_decode_cas(reply, NAME, &out, &rec);

	if (err != PRESENCE_OK) {
		FUZZ_CHECK(err == PRESENCE_ERR_INVAL || err == PRESENCE_ERR_NOMEM);
		FUZZ_CHECK(fuzz_all_zero(&rec, sizeof(rec)));
		return;
	}
	if (out != PRESENCE_REDIS_COMMITTED && out != PRESENCE_REDIS_CONFLICT) {
		FUZZ_CHECK(out == PRESENCE_REDIS_STALE || out == PRESENCE_REDIS_OFFLINE ||
		           out == PRESENCE_REDIS_USERS_FULL);
		FUZZ_CHECK(fuzz_all_zero(&rec, sizeof(rec)));
		return;
	}
	check_document(&rec, NAME);
	{
		redisReply *back =
		    document_reply(out == PRESENCE_REDIS_CONFLICT ? "CONFLICT" : "OK", &rec);
		enum presence_redis_outcome out2;

		FUZZ_CHECK(presence_redis_decode_cas(back, NAME, &out2, &again) == PRESENCE_OK);
		FUZZ_CHECK(out2 == out && same_document(&rec, &again));
		presence_redis_record_clear(&again);
		fuzz_reply_free(back);
	}
	presence_redis_record_clear(&rec);
}

static void check_user_doc(const redisReply *reply)
{
	struct presence_cluster_record rec, again;
	enum presence_err err = presence_redis_decode_user_doc(reply, NAME, &rec);
	redisReply *back;

	if (err != PRESENCE_OK) {
		FUZZ_CHECK(fuzz_all_zero(&rec, sizeof(rec)));
		return;
	}
	check_document(&rec, NAME);
	/* The privacy choice comes with the priv and pid fields, and only with them. */
	FUZZ_CHECK((rec.privacy != NULL) == (reply->elements == 7));
	{
		char pid[PRESENCE_REDIS_ID_SIZE];

		presence_redis_decode_user_privacy_id(reply, pid);
		FUZZ_CHECK(strlen(pid) < sizeof(pid));
		FUZZ_CHECK(pid[0] == '\0' || reply->elements == 7);
	}
	back = document_reply(NULL, &rec);
	FUZZ_CHECK(presence_redis_decode_user_doc(back, NAME, &again) == PRESENCE_OK);
	FUZZ_CHECK(same_document(&rec, &again));
	presence_redis_record_clear(&again);
	fuzz_reply_free(back);
	presence_redis_record_clear(&rec);
}

static void check_register(const redisReply *reply)
{
	struct presence_redis_registration reg;

	if (presence_redis_decode_register(reply, &reg) != PRESENCE_OK) {
		FUZZ_CHECK(fuzz_all_zero(&reg, sizeof(reg)));
		return;
	}
	if (reg.clash) {
		FUZZ_CHECK(strlen(reg.other) > 0 && strlen(reg.other) < sizeof(reg.other));
		FUZZ_CHECK(strlen(reg.left_ms) > 0 && strlen(reg.left_ms) < sizeof(reg.left_ms));
		FUZZ_CHECK(reg.epoch[0] == '\0' && reg.gen[0] == '\0');
	} else {
		FUZZ_CHECK(strlen(reg.epoch) > 0 && strlen(reg.epoch) < sizeof(reg.epoch));
		FUZZ_CHECK(strlen(reg.gen) > 0 && strlen(reg.gen) < sizeof(reg.gen));
	}
}

static void check_heartbeat(const redisReply *reply)
{
	struct presence_redis_heartbeat hb;

	if (presence_redis_decode_heartbeat(reply, &hb) != PRESENCE_OK) {
		FUZZ_CHECK(fuzz_all_zero(&hb, sizeof(hb)));
		return;
	}
	FUZZ_CHECK(hb.brokers >= 0);
	FUZZ_CHECK(strlen(hb.gen) < sizeof(hb.gen));
	if (hb.stale) {
		FUZZ_CHECK(hb.gen[0] == '\0' && hb.brokers == 0 && hb.barrier == 0);
	}
}

static void check_outcomes(const redisReply *reply)
{
	enum presence_redis_outcome out;
	long long changed;

	if (presence_redis_decode_contrib(reply, &out) == PRESENCE_OK) {
		FUZZ_CHECK(out == PRESENCE_REDIS_DONE || out == PRESENCE_REDIS_STALE ||
		           out == PRESENCE_REDIS_USERS_FULL);
		FUZZ_CHECK(presence_redis_reply_error(reply) == NULL);
	} else {
		FUZZ_CHECK(out == PRESENCE_REDIS_DONE);
	}
	if (presence_redis_decode_seed(reply, &out) == PRESENCE_OK) {
		FUZZ_CHECK(out == PRESENCE_REDIS_DONE || out == PRESENCE_REDIS_STALE ||
		           out == PRESENCE_REDIS_USERS_FULL || out == PRESENCE_REDIS_FORGOTTEN);
	} else {
		FUZZ_CHECK(out == PRESENCE_REDIS_DONE);
	}
	if (presence_redis_decode_sync(reply, &out) == PRESENCE_OK) {
		FUZZ_CHECK(out == PRESENCE_REDIS_DONE || out == PRESENCE_REDIS_STALE);
	}
	if (presence_redis_decode_privacy(reply, &out) == PRESENCE_OK) {
		FUZZ_CHECK(out == PRESENCE_REDIS_DONE || out == PRESENCE_REDIS_STALE ||
		           out == PRESENCE_REDIS_USERS_FULL);
		FUZZ_CHECK(reply->type == REDIS_REPLY_ARRAY);
	} else {
		FUZZ_CHECK(out == PRESENCE_REDIS_DONE);
	}
	if (presence_redis_decode_due(reply, &changed) == PRESENCE_OK) {
		FUZZ_CHECK(changed >= 0 && reply->type == REDIS_REPLY_INTEGER);
	} else {
		FUZZ_CHECK(changed == 0);
	}
}

/* A borrowed string lies inside one of the reply's strings. */
static bool inside(const redisReply *reply, const char *s)
{
	if (reply == NULL) {
		return false;
	}
	if (reply->str != NULL && s >= reply->str && s <= reply->str + reply->len) {
		return true;
	}
	for (size_t i = 0; i < reply->elements; i++) {
		if (inside(reply->element[i], s)) {
			return true;
		}
	}
	return false;
}

static void check_names(const redisReply *reply)
{
	const char *names[8];
	size_t n;

	if (presence_redis_decode_names(reply, names, 8, &n) != PRESENCE_OK) {
		FUZZ_CHECK(n == 0);
		return;
	}
	FUZZ_CHECK(n <= 8);
	for (size_t i = 0; i < n; i++) {
		FUZZ_CHECK(inside(reply, names[i]));
	}
}

static void check_stream_shapes(const redisReply *reply)
{
	char cursor[32], id[PRESENCE_REDIS_ID_SIZE];
	const redisReply *keys;
	bool found, has;

	if (presence_redis_decode_scan(reply, cursor, &keys) == PRESENCE_OK) {
		FUZZ_CHECK(keys != NULL && keys->type == REDIS_REPLY_ARRAY);
		FUZZ_CHECK(cursor[0] != '\0' && strlen(cursor) < sizeof(cursor));
		for (size_t i = 0; i < keys->elements; i++) {
			const char *key = presence_redis_reply_str(keys->element[i]);
			const char *name = presence_redis_user_of_key(key);

			FUZZ_CHECK(name == NULL || (name > key && name <= key + strlen(key)));
		}
	} else {
		FUZZ_CHECK(keys == NULL);
	}
	if (presence_redis_decode_last_record(reply, id, &found) == PRESENCE_OK && found) {
		FUZZ_CHECK(strlen(id) < sizeof(id));
		FUZZ_CHECK(!presence_redis_id_after(id, id));
	}
	if (presence_redis_decode_has_record(reply, &has) != PRESENCE_OK) {
		FUZZ_CHECK(!has);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	redisReply *reply;

	if (size < 1) {
		return 0;
	}
	reply = fuzz_resp_parse(data + 1, size - 1);
	if (reply == NULL) {
		return 0;
	}
	switch (data[0] % 8) {
	case 0:
		check_cas(reply);
		break;
	case 1:
		check_user_doc(reply);
		break;
	case 2:
		check_register(reply);
		break;
	case 3:
		check_heartbeat(reply);
		break;
	case 4:
		check_outcomes(reply);
		break;
	case 5:
		check_names(reply);
		break;
	case 6:
		check_stream_shapes(reply);
		break;
	default:
		/* Every decoder on the same reply. */
		check_cas(reply);
		check_user_doc(reply);
		check_register(reply);
		check_heartbeat(reply);
		check_outcomes(reply);
		check_names(reply);
		check_stream_shapes(reply);
		break;
	}
	fuzz_reply_free(reply);
	return 0;
}
