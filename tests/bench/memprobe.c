/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * memprobe: the plugin's own memory per session and per user, measured exactly.
 *
 * The broker-level memory scenario (loadgen --mode memory) sees the whole process: RSS also
 * holds the broker's copy of every retained document and its malloc headers, and how well
 * malloc reuses freed space. This probe links the plugin's core alone (no broker), drives it
 * the way the adapter does for S sessions of U users (login, promotion at the end of the loop
 * iteration, a document rendered and handed over for each user, optionally one state write of
 * --state-bytes per user and its document), and reads glibc's count of bytes in allocated
 * chunks (mallinfo2: uordblks + hblkhd, malloc headers included) before and after. Documents
 * are freed as soon as they are rendered, as the broker owns them.
 *
 *   memprobe --users U [--sessions-per-user S] [--state-bytes B] [--pending-change]
 *            [--disconnect [--offline-delay-ms D]] [--save-file PATH]
 *
 * Prints one key=value line: bytes_per_session (the whole delta / sessions) and
 * bytes_per_session_beyond_state (minus B per user, spread over the sessions), and:
 * - with --pending-change (and --state-bytes), pending_bytes_per_user: what the user's last
 *   published state costs while a change waits for its document. Every user writes a new value
 *   of the same size after its state was published, and the memory is read before the flush
 *   that publishes it (the published text is kept beside the live one until then), then after
 *   it (published_bytes_per_user: what it costs once the document is out, nothing);
 * - with --disconnect, offline_bytes_per_user: what the plugin holds per known user after every
 *   session left and the documents were published (with --offline-delay-ms, the registry runs
 *   with that delay, so every user is still waiting it out: its wait record is included);
 * - with --save-file, save_ms and save_ns_per_user: the median of 5 complete compactions of
 *   the state file (store.h) at PATH (a snapshot of every known user, fsync included); the
 *   adapter compacts when the journal has grown to twice the snapshot, in steps of
 *   PRESENCE_STORE_STEP_USERS users per loop iteration.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "document.h"
#include "registry.h"
#include "state.h"
#include "store.h"
#include "testing.h"

/* Logins per broker loop iteration. */
#define LOGINS_PER_ITERATION 64

static size_t in_use(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

static bool flag(int argc, char **argv, const char *name)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], name) == 0) {
			return true;
		}
	}
	return false;
}

static const char *text_arg(int argc, char **argv, const char *name)
{
	for (int i = 1; i + 1 < argc; i++) {
		if (strcmp(argv[i], name) == 0) {
			return argv[i + 1];
		}
	}
	return NULL;
}

static unsigned long arg(int argc, char **argv, const char *name, unsigned long fallback)
{
	for (int i = 1; i + 1 < argc; i++) {
		if (strcmp(argv[i], name) == 0) {
			return strtoul(argv[i + 1], NULL, 10);
		}
	}
	return fallback;
}

/* Writes payload (a JSON string making a state of state_bytes) as the key "blob" of each of the
 * users, as a state write does, and marks them changed. Exits on failure. */
static void write_states(struct presence_registry *reg, const struct presence_state_limits *limits,
                         size_t users, const char *payload, size_t state_bytes)
{
	char reason[PRESENCE_STATE_REASON_SIZE];
	char name[32];

	for (size_t u = 0; u < users; u++) {
		struct presence_user *user;
		bool changed;

		snprintf(name, sizeof(name), "u%07zu", u);
		user = presence_registry_user_find(reg, name);
		if (user == NULL ||
		    presence_state_set_key(presence_user_state(user), limits, "blob", 4, payload,
		                           strlen("\"\"") + (state_bytes - 11), &changed,
		                           reason) != PRESENCE_OK) {
			fprintf(stderr, "memprobe: state write failed: %s\n", reason);
			exit(1);
		}
		presence_registry_user_changed(reg, user);
	}
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Returns the median time of SAVES complete compactions of the state file at path (a new
 * snapshot of every user of reg, store.h), in ms. Exits on failure. */
#define SAVES 5
static double median_save_ms(struct presence_registry *reg, const char *path)
{
	struct presence_store *store = presence_store_new(path, PRESENCE_STORE_SEQ_MARGIN);
	char err[PRESENCE_STORE_ERR_SIZE];
	double ms[SAVES];

	if (store == NULL) {
		fprintf(stderr, "memprobe: out of memory\n");
		exit(1);
	}
	if (presence_store_start(store, reg, err, sizeof(err)) != PRESENCE_OK) {
		fprintf(stderr, "memprobe: %s\n", err);
		exit(1);
	}
	for (int i = 0; i < SAVES; i++) {
		double start = now_ms();
		bool finished = false;

		presence_store_request_compaction(store);
		while (!finished) {
			if (presence_store_compact_step(store, reg, PRESENCE_STORE_STEP_USERS,
			                                PRESENCE_STORE_STEP_BYTES, &finished, err,
			                                sizeof(err)) != PRESENCE_OK) {
				fprintf(stderr, "memprobe: %s\n", err);
				exit(1);
			}
		}
		ms[i] = now_ms() - start;
	}
	presence_store_free(store);
	qsort(ms, SAVES, sizeof(ms[0]), compare_doubles);
	return ms[SAVES / 2];
}

/* Publishes every due document, as the adapter's TICK does. */
static void flush(struct presence_registry *reg, int64_t now_ms)
{
	struct presence_user *user;
	struct presence_document doc;
	bool due;

	while ((user = presence_registry_dirty_next(reg)) != NULL) {
		if (presence_registry_document_prepare(reg, user, now_ms, &doc, &due) !=
		    PRESENCE_OK) {
			fprintf(stderr, "memprobe: prepare failed\n");
			exit(1);
		}
		if (due) {
			size_t len;
			char *text = presence_document_render(&doc, &len);

			if (text == NULL) {
				fprintf(stderr, "memprobe: out of memory\n");
				exit(1);
			}
			presence_document_free(text);
			presence_registry_document_sent(reg, user);
		}
	}
	presence_registry_flush_done(reg);
}

int main(int argc, char **argv)
{
	size_t users = arg(argc, argv, "--users", 10000);
	size_t per_user = arg(argc, argv, "--sessions-per-user", 1);
	size_t state_bytes = arg(argc, argv, "--state-bytes", 0);
	unsigned long delay_ms = arg(argc, argv, "--offline-delay-ms", 0);
	bool pending_change = flag(argc, argv, "--pending-change");
	bool disconnect = flag(argc, argv, "--disconnect");
	const char *save_file = text_arg(argc, argv, "--save-file");
	size_t sessions = users * per_user;
	struct presence_state_limits limits = {
	    .max_state_bytes = 1 << 20, .max_keys = 64, .max_depth = 32};
	/* Stand-ins for the broker's client pointers: never dereferenced. */
	char *clients = malloc(sessions > 0 ? sessions : 1);
	char *payload = NULL;
	struct presence_registry *reg;
	const void *client;
	size_t before, after;
	char name[32];

	if (clients == NULL || users == 0 || per_user == 0 ||
	    (pending_change && state_bytes == 0)) {
		fprintf(stderr,
		        "usage: memprobe --users U [--sessions-per-user S] [--state-bytes B] "
		        "[--pending-change] [--disconnect [--offline-delay-ms D]]\n");
		return 1;
	}
	if (state_bytes > 0) {
		/* {"blob":"xxx..."}: 11 bytes plus the string make the state state_bytes long. */
		size_t xs = state_bytes > 11 ? state_bytes - 11 : 1;

		payload = malloc(xs + 2);
		if (payload == NULL) {
			return 1;
		}
		payload[0] = '"';
		memset(payload + 1, 'x', xs);
		payload[xs + 1] = '"';
	}
	before = in_use();
	reg = presence_registry_new("presence");
	if (reg == NULL) {
		return 1;
	}
	presence_registry_set_offline_delay(reg, (int64_t)delay_ms);
	/* Logins arrive a few per loop iteration (loadgen keeps 64 handshakes in flight). */
	for (size_t first = 0; first < sessions; first += LOGINS_PER_ITERATION) {
		for (size_t i = first; i < sessions && i < first + LOGINS_PER_ITERATION; i++) {
			if (presence_registry_session_pending(reg, clients + i) != PRESENCE_OK) {
				return 1;
			}
		}
		while ((client = presence_registry_pending_next(reg)) != NULL) {
			size_t i = (size_t)((const char *)client - clients);

			snprintf(name, sizeof(name), "u%07zu", i / per_user);
			if (presence_registry_session_start(reg, client, name) != PRESENCE_OK) {
				return 1;
			}
		}
		flush(reg, 1764265200123);
	}
	if (payload != NULL) {
		write_states(reg, &limits, users, payload, state_bytes);
		flush(reg, 1764265200124);
	}
	after = in_use();
	printf("mode=memprobe users=%zu sessions=%zu state_bytes=%zu plugin_bytes=%zu "
	       "bytes_per_session=%.1f bytes_per_session_beyond_state=%.1f",
	       users, sessions, state_bytes, after - before,
	       (double)(after - before) / (double)sessions,
	       ((double)(after - before) - (double)(state_bytes * users)) / (double)sessions);
	if (pending_change) {
		size_t pending, published;

		/* The same size, another value: every user has a change waiting for its document.
		 */
		memset(payload + 1, 'y', state_bytes - 11);
		write_states(reg, &limits, users, payload, state_bytes);
		pending = in_use();
		flush(reg, 1764265200125);
		published = in_use();
		printf(" pending_bytes_per_user=%.1f published_bytes_per_user=%.1f",
		       ((double)pending - (double)after) / (double)users,
		       ((double)published - (double)after) / (double)users);
	}
	if (disconnect) {
		for (size_t i = 0; i < sessions; i++) {
			presence_registry_session_gone(reg, clients + i);
		}
		flush(reg, 1764265200126);
		printf(" offline_delay_ms=%lu offline_bytes_per_user=%.1f", delay_ms,
		       (double)(in_use() - before) / (double)users);
	}
	if (save_file != NULL) {
		double ms = median_save_ms(reg, save_file);

		printf(" save_ms=%.2f save_ns_per_user=%.0f", ms, ms * 1e6 / (double)users);
	}
	printf(" status=OK\n");
	presence_registry_free(reg);
	free(payload);
	free(clients);
	return 0;
}
