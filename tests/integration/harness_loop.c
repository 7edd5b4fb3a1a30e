/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The live brokers and clients of a test process, and the one wait: harness_until services
 * every live client while it waits for a condition, so a wait on one client or broker keeps
 * the others answering pings and receiving messages (see harness_internal.h).
 */
#include "harness_internal.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

/* Longest single poll(); bounds how late a process exit is noticed. */
#define HARNESS_SLICE_MS 50

struct broker *harness_brokers;
struct client *harness_clients;
size_t harness_client_count;
static bool harness_initialised;

static void harness_kill_all(void);

static void harness_atexit(void)
{
	harness_kill_all();
	if (harness_initialised)
		mosquitto_lib_cleanup();
}

void harness_init(void)
{
	if (harness_initialised)
		return;
	harness_initialised = true;
	/* A write to a socket the broker closed must be an error, not a fatal signal. */
	signal(SIGPIPE, SIG_IGN);
	mosquitto_lib_init();
	atexit(harness_atexit);
}

/* Lets libmosquitto handle whatever c's socket is ready for. */
static void harness_service(struct client *c, short revents)
{
	if (revents & (POLLIN | POLLERR | POLLHUP))
		(void)mosquitto_loop_read(c->mosq, 1);
	if (!c->closed && mosquitto_socket(c->mosq) >= 0 && (revents & POLLOUT))
		(void)mosquitto_loop_write(c->mosq, 1);
	if (!c->closed && mosquitto_socket(c->mosq) >= 0)
		(void)mosquitto_loop_misc(c->mosq);
	if (!c->closed && mosquitto_socket(c->mosq) < 0) {
		/* Closed without a callback (should not happen, but never wait on a dead
		 * socket). */
		c->closed = true;
		c->disconnect_rc = MOSQ_ERR_CONN_LOST;
	}
}

/* Waits at most timeout_ms for any client socket (or extra_fd, if >= 0) to become ready, then
 * services every ready client and keeps every live client's keepalive going. */
static void harness_pump(int extra_fd, int timeout_ms)
{
	struct pollfd *fds = harness_xcalloc(harness_client_count + 1, sizeof(*fds));
	struct client **owners = harness_xcalloc(harness_client_count + 1, sizeof(*owners));
	struct client *c;
	nfds_t n = 0;
	nfds_t nclients;
	nfds_t i;
	int rc;

	for (c = harness_clients; c; c = c->next) {
		int sock = mosquitto_socket(c->mosq);

		if (c->closed || sock < 0)
			continue;
		fds[n].fd = sock;
		fds[n].events = POLLIN;
		if (mosquitto_want_write(c->mosq))
			fds[n].events |= POLLOUT;
		owners[n] = c;
		n++;
	}
	nclients = n;
	if (extra_fd >= 0) {
		fds[n].fd = extra_fd;
		fds[n].events = POLLIN;
		n++;
	}
	rc = poll(fds, n, timeout_ms);
	for (i = 0; i < nclients; i++)
		harness_service(owners[i], rc > 0 ? fds[i].revents : 0);
	free(owners);
	free(fds);
}

/* Waits, servicing all clients, until done(arg) is true or timeout_ms (already scaled) has
 * passed. extra_fd (or -1) also wakes the wait. Returns done(arg). */
bool harness_until(bool (*done)(const void *arg), const void *arg, int extra_fd, int timeout_ms)
{
	long long deadline = harness_now_ms() + timeout_ms;

	for (;;) {
		long long left;

		if (done(arg))
			return true;
		left = deadline - harness_now_ms();
		if (left <= 0)
			return done(arg);
		harness_pump(extra_fd, left < HARNESS_SLICE_MS ? (int)left : HARNESS_SLICE_MS);
	}
}

/* Frees every client and kills (SIGKILL) every broker, without verdicts. */
static void harness_kill_all(void)
{
	while (harness_clients)
		client_free(harness_clients);
	while (harness_brokers) {
		struct broker *b = harness_brokers;

		broker_kill(b);
		broker_free(b);
	}
}

int harness_teardown(void **state)
{
	struct broker *b;
	struct broker *next;

	(void)state;
	while (harness_clients)
		client_free(harness_clients);
	/* A broker that died by itself explains a failed test: show its verdict. */
	for (b = harness_brokers; b; b = next) {
		next = b->next;
		if (b->pid > 0 && broker_reap(b) && !b->killed_by_harness) {
			char *report = NULL;
			int findings = broker_stop_verdict(b, &report);

			if (findings > 0)
				fprintf(stderr, "harness: a broker had died: %s\n", report);
			free(report);
		}
	}
	harness_kill_all();
	return 0;
}
