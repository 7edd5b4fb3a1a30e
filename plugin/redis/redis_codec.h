/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The codec of the cluster's Redis calls: for each function of presence_v2.lua (and each plain
 * command the link sends) one encoder, which builds the argument vector, and one decoder, which
 * turns hiredis' reply tree into C values. It is pure: no thread, no I/O, no hiredis call (only
 * hiredis' header, for struct redisReply), and everything it allocates comes from libc, so the
 * fuzzers reach it without Redis.
 *
 * Invariants: a decoder never keeps or frees the reply it reads. Every string it hands back is
 * NUL-terminated and holds no NUL byte (a reply string with one is malformed). On failure a
 * decoder returns PRESENCE_ERR_INVAL (the reply is not what the function answers; an error
 * reply included, see presence_redis_reply_error) or PRESENCE_ERR_NOMEM, and leaves its output
 * zeroed with nothing allocated. An encoder that fails leaves its command empty.
 */
#ifndef PRESENCE_REDIS_CODEC_H
#define PRESENCE_REDIS_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis.h>

#include "cluster.h"
#include "presence_err.h"

/* Every key carries the hash tag {presence}, so that every call touches one slot. */
#define PRESENCE_REDIS_KEY_PREFIX "{presence}:"
#define PRESENCE_REDIS_USER_PREFIX PRESENCE_REDIS_KEY_PREFIX "u:"

/* The most arguments of one command. */
#define PRESENCE_REDIS_ARGS_MAX 40
/* Sizes of the identifiers a decoder copies (with the NUL). */
#define PRESENCE_REDIS_EPOCH_SIZE 24
#define PRESENCE_REDIS_GEN_SIZE 40
#define PRESENCE_REDIS_ID_SIZE 64

/* One command's arguments. argv[i] points to a caller's string (which must outlive the
 * command) or to a copy the command owns; presence_redis_cmd_free frees those. A zeroed struct
 * is an empty command. */
struct presence_redis_cmd {
	int argc;
	const char *argv[PRESENCE_REDIS_ARGS_MAX];
	size_t len[PRESENCE_REDIS_ARGS_MAX];
	char *owned[PRESENCE_REDIS_ARGS_MAX];
	int nowned;
	/* An argument could not be added: the command must not be sent. */
	bool failed;
};

/* What the functions take from the link's settings (see struct presence_redis_config). */
struct presence_redis_params {
	const char *broker_id;
	int64_t heartbeat_ms;
	int64_t lease_ms;
	int64_t grace_ms;
	bool keep_state;
	unsigned long stream_budget;
	unsigned long max_users;
	int64_t forget_after_ms;
};

/* Appends s (not copied: it must outlive c) or a formatted copy. On failure (too many
 * arguments, s NULL, memory) c->failed is set; the command is kept for cmd_free. */
void presence_redis_cmd_add(struct presence_redis_cmd *c, const char *s);
void presence_redis_cmd_addf(struct presence_redis_cmd *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Frees what c owns and empties it; a zeroed c is allowed. */
void presence_redis_cmd_free(struct presence_redis_cmd *c);

/* ---- encoders: each returns PRESENCE_OK, or PRESENCE_ERR_NOMEM with c empty ---------------- */

/* pv2_register: a new epoch of p->broker_id; gen the random generation to set when Redis has
 * none, instance this process's id. */
enum presence_err presence_redis_encode_register(struct presence_redis_cmd *c,
                                                 const struct presence_redis_params *p,
                                                 const char *gen, const char *instance);
enum presence_err presence_redis_encode_heartbeat(struct presence_redis_cmd *c,
                                                  const struct presence_redis_params *p,
                                                  const char *epoch);
/* pv2_hold: no sweep or expiry for 2 x lease. */
enum presence_err presence_redis_encode_hold(struct presence_redis_cmd *c,
                                             const struct presence_redis_params *p);
/* pv2_sweep_claim: at most 8 brokers whose lease expired. */
enum presence_err presence_redis_encode_sweep_claim(struct presence_redis_cmd *c,
                                                    const struct presence_redis_params *p);
/* pv2_contrib: broker's epoch has count sessions of name (-1: the tombstone of a swept epoch,
 * cseq 0), floor the highest seq it saw, cseq the count's number. */
enum presence_err presence_redis_encode_contrib(struct presence_redis_cmd *c,
                                                const struct presence_redis_params *p,
                                                const char *broker, const char *epoch,
                                                const char *name, long long count, uint64_t floor,
                                                uint64_t cseq);
/* pv2_cas: state as name's state if its seq is still expected. */
enum presence_err presence_redis_encode_cas(struct presence_redis_cmd *c,
                                            const struct presence_redis_params *p,
                                            const char *epoch, const char *name, uint64_t expected,
                                            const char *state, uint64_t floor);
/* pv2_privacy: privacy (compact JSON, "" the default) as name's privacy choice; expected the
 * choice the broker had ("" the default), widens whether some watcher gains sight from expected
 * to privacy. */
enum presence_err presence_redis_encode_privacy(struct presence_redis_cmd *c,
                                                const struct presence_redis_params *p,
                                                const char *epoch, const char *name,
                                                const char *privacy, const char *expected,
                                                bool widens, uint64_t floor);
/* pv2_widen: name's document again, seq and since jumped (more watchers may see it). */
enum presence_err presence_redis_encode_widen(struct presence_redis_cmd *c,
                                              const struct presence_redis_params *p,
                                              const char *epoch, const char *name, uint64_t floor);
/* pv2_floor: raise the cluster's seq floor. */
enum presence_err presence_redis_encode_floor(struct presence_redis_cmd *c, uint64_t floor);
/* pv2_seed: doc (seq, available, sessions, since_ms, state; NULL state: "{}"; privacy, NULL:
 * the default) as recorded. */
enum presence_err presence_redis_encode_seed(struct presence_redis_cmd *c,
                                             const struct presence_redis_params *p,
                                             const struct presence_cluster_record *doc);
/* pv2_grace_due and pv2_forget_due: at most PRESENCE_REDIS_DUE_BATCH users per call. */
#define PRESENCE_REDIS_DUE_BATCH 200
enum presence_err presence_redis_encode_grace_due(struct presence_redis_cmd *c,
                                                  const struct presence_redis_params *p);
enum presence_err presence_redis_encode_forget_due(struct presence_redis_cmd *c,
                                                   const struct presence_redis_params *p);
/* pv2_sync: confirm barrier bar. */
enum presence_err presence_redis_encode_sync(struct presence_redis_cmd *c,
                                             const struct presence_redis_params *p,
                                             const char *epoch, uint64_t bar);
enum presence_err presence_redis_encode_deregister(struct presence_redis_cmd *c,
                                                   const struct presence_redis_params *p,
                                                   const char *epoch);
/* pv2_read: at most count records after last_id. */
enum presence_err presence_redis_encode_read(struct presence_redis_cmd *c, const char *last_id,
                                             unsigned int count);

/* Plain commands: the head of the dead list (LINDEX), its removal (LREM), users of a dead epoch
 * (SRANDMEMBER of "broker:epoch"), a page of user hashes (SCAN), a user's document (HMGET), a
 * wait for a record after last_id (XREAD BLOCK), the stream's last record (XREVRANGE), the last
 * id trimmed (GET), whether the stream holds id (XRANGE). */
enum presence_err presence_redis_encode_dead_head(struct presence_redis_cmd *c);
enum presence_err presence_redis_encode_dead_remove(struct presence_redis_cmd *c, const char *dead);
enum presence_err presence_redis_encode_epoch_users(struct presence_redis_cmd *c,
                                                    const char *broker, const char *epoch);
enum presence_err presence_redis_encode_scan(struct presence_redis_cmd *c, const char *cursor);
enum presence_err presence_redis_encode_user_doc(struct presence_redis_cmd *c, const char *key);
enum presence_err presence_redis_encode_wait_record(struct presence_redis_cmd *c,
                                                    const char *last_id, int block_ms);
enum presence_err presence_redis_encode_last_record(struct presence_redis_cmd *c);
enum presence_err presence_redis_encode_last_trimmed(struct presence_redis_cmd *c);
enum presence_err presence_redis_encode_has_record(struct presence_redis_cmd *c, const char *id);

/* ---- decoders ------------------------------------------------------------------------------ */

/* The text of an error reply, or NULL when reply is no error reply. Borrowed from reply. */
const char *presence_redis_reply_error(const redisReply *reply);

/* The string of a string or status reply, or NULL (another type, or a NUL byte inside).
 * Borrowed from reply. */
const char *presence_redis_reply_str(const redisReply *reply);

/* Parses an unsigned decimal (digits only, no sign, no space, at most UINT64_MAX). Returns
 * false (and leaves *out alone) when s is NULL or not one. */
bool presence_redis_parse_u64(const char *s, uint64_t *out);

/* Frees rec's strings and zeroes it. */
void presence_redis_record_clear(struct presence_cluster_record *rec);

/* pv2_register: {epoch, generation}, or {"CLASH", instance, lease ms left}. */
struct presence_redis_registration {
	bool clash;
	/* Registered: the epoch and the cluster's generation (non-empty). */
	char epoch[PRESENCE_REDIS_EPOCH_SIZE];
	char gen[PRESENCE_REDIS_GEN_SIZE];
	/* Clash: the other instance and how long its lease runs (never empty: "?" when not
	 * given; cut to fit). */
	char other[PRESENCE_REDIS_ID_SIZE];
	char left_ms[PRESENCE_REDIS_EPOCH_SIZE];
};
enum presence_err presence_redis_decode_register(const redisReply *reply,
                                                 struct presence_redis_registration *out);

/* pv2_heartbeat: {"OK", generation, live brokers, barrier} or {"STALE"}. */
struct presence_redis_heartbeat {
	bool stale;
	char gen[PRESENCE_REDIS_GEN_SIZE];
	/* Live brokers (>= 0). */
	long long brokers;
	/* The latest barrier (0 when Redis gave none that parses). */
	uint64_t barrier;
};
enum presence_err presence_redis_decode_heartbeat(const redisReply *reply,
                                                  struct presence_redis_heartbeat *out);

/* What a count, a state write or a seed came to. */
enum presence_redis_outcome {
	/* Done (a count applied or old, a seed applied or not needed). */
	PRESENCE_REDIS_DONE = 0,
	/* The cluster declared this broker's epoch dead: register again. */
	PRESENCE_REDIS_STALE,
	/* max_users users are known and every one is online. */
	PRESENCE_REDIS_USERS_FULL,
	/* pv2_cas: the write was committed (rec: the new document values). */
	PRESENCE_REDIS_COMMITTED,
	/* pv2_cas: the user's seq moved on (rec: its current document values). */
	PRESENCE_REDIS_CONFLICT,
	/* pv2_cas: the user has no session and keep_state is off. */
	PRESENCE_REDIS_OFFLINE,
	/* pv2_seed: the cluster forgot the user. */
	PRESENCE_REDIS_FORGOTTEN,
};

/* pv2_contrib: {"STALE"}, {"FULL"} or anything else that is no error (DONE). */
enum presence_err presence_redis_decode_contrib(const redisReply *reply,
                                                enum presence_redis_outcome *out);

/* pv2_cas for user name: {"OK"|"SAME"|"CONFLICT", seq, avail, sess, since, state}, or
 * {"STALE"}, {"OFFLINE"}, {"FULL"}. With COMMITTED or CONFLICT rec is filled (name and state
 * copied, malloc'd: free with presence_redis_record_clear; seq >= 1); otherwise rec is zeroed. */
enum presence_err presence_redis_decode_cas(const redisReply *reply, const char *name,
                                            enum presence_redis_outcome *out,
                                            struct presence_cluster_record *rec);

/* pv2_seed: "FORGOTTEN", "FULL", {"STALE"}, or anything else that is no error (DONE). */
enum presence_err presence_redis_decode_seed(const redisReply *reply,
                                             enum presence_redis_outcome *out);

/* pv2_privacy and pv2_widen: {"OK"}, {"SAME"} or {"NONE"} (DONE), {"STALE"}, {"FULL"}. */
enum presence_err presence_redis_decode_privacy(const redisReply *reply,
                                                enum presence_redis_outcome *out);

/* pv2_grace_due and pv2_forget_due: the number of users changed (>= 0). */
enum presence_err presence_redis_decode_due(const redisReply *reply, long long *changed);

/* pv2_sync: "OK" (DONE) or "STALE". */
enum presence_err presence_redis_decode_sync(const redisReply *reply,
                                             enum presence_redis_outcome *out);

/* An array of names (pv2_sweep_claim, SRANDMEMBER): up to max of its strings, borrowed from
 * reply, into names; elements that are no string are skipped. A reply that is no array is
 * INVAL. */
enum presence_err presence_redis_decode_names(const redisReply *reply, const char **names,
                                              size_t max, size_t *n);

/* One stream record, a flat field/value array: a document {u, q, a, n, t, s} (with p, the
 * user's new privacy choice, when a privacy write showed it to more watchers), a privacy choice
 * alone {u, p}, a user forgotten {u, q, f}, or a barrier {y}. */
enum presence_redis_record_kind {
	PRESENCE_REDIS_RECORD_DOCUMENT = 0,
	PRESENCE_REDIS_RECORD_FORGOTTEN,
	PRESENCE_REDIS_RECORD_BARRIER,
	PRESENCE_REDIS_RECORD_PRIVACY,
};
struct presence_redis_stream_record {
	enum presence_redis_record_kind kind;
	/* DOCUMENT: every field, bounds as in decode_cas (privacy NULL without p). FORGOTTEN:
	 * name (malloc'd) and seq. PRIVACY: name and privacy (malloc'd), seq 0. BARRIER: seq is
	 * the barrier, name NULL. */
	struct presence_cluster_record rec;
};
/* INVAL for a record of none of these shapes (the link skips it). Free a decoded record with
 * presence_redis_record_clear(&out->rec). */
enum presence_err presence_redis_decode_record(const redisReply *fields,
                                               struct presence_redis_stream_record *out);

/* pv2_read: {"GAP"}, or {"ENTRIES", [[id, fields], ...]}. On PRESENCE_OK, *gap tells which;
 * entries (borrowed) is the array of entries, NULL with a gap. */
enum presence_err presence_redis_decode_read(const redisReply *reply, bool *gap,
                                             const redisReply **entries);

/* One entry of pv2_read's array: [id, fields]. Copies id into id (PRESENCE_REDIS_ID_SIZE
 * bytes) and sets *fields (borrowed; NULL when the entry has no field array). INVAL (id "",
 * *fields NULL) when the entry has no usable id, empty or too long (it is skipped). */
enum presence_err presence_redis_decode_entry(const redisReply *entry, char *id,
                                              const redisReply **fields);

/* SCAN: {cursor, [keys...]}: copies the next cursor (at most 31 bytes) into cursor (32
 * bytes) and sets *keys (borrowed). */
enum presence_err presence_redis_decode_scan(const redisReply *reply, char *cursor,
                                             const redisReply **keys);

/* The user name of the key of a user hash (borrowed from key), or NULL when key is none. */
const char *presence_redis_user_of_key(const char *key);

/* HMGET seq avail sess since state priv pid of user name: a document, filled into rec as
 * decode_cas does, with rec->privacy ("" when the user has none). A reply of the first five
 * alone is a document with rec->privacy NULL. */
enum presence_err presence_redis_decode_user_doc(const redisReply *reply, const char *name,
                                                 struct presence_cluster_record *rec);
/* The pid of that reply (the stream id of the record that carried the user's privacy choice)
 * into id (PRESENCE_REDIS_ID_SIZE bytes), "" when there is none (or it does not fit). */
void presence_redis_decode_user_privacy_id(const redisReply *reply, char *id);

/* XREVRANGE ... COUNT 1: copies the last record's id into id (PRESENCE_REDIS_ID_SIZE bytes);
 * *found false (id untouched) when the stream is empty. */
enum presence_err presence_redis_decode_last_record(const redisReply *reply, char *id, bool *found);

/* Whether stream id a ("ms-seq") comes after b; false when either is not an id. */
bool presence_redis_id_after(const char *a, const char *b);

/* XRANGE id id: *has tells whether the stream holds it. */
enum presence_err presence_redis_decode_has_record(const redisReply *reply, bool *has);

#endif
