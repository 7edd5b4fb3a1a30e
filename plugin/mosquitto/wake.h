/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Waking the broker's loop up from another thread (opt-in, plugin_opt_cluster_wake_signal): a
 * real-time signal, whose handler does nothing, sent to the broker's thread makes epoll_wait
 * return (EINTR, which Mosquitto treats as a wake-up; epoll_wait is never restarted), so the
 * loop runs again at once instead of sleeping up to 100 ms. Other interrupted calls are
 * restarted (SA_RESTART). POSIX only (sigaction, pthread_kill): builds with glibc and musl.
 *
 * Each user takes its own signal, SIGRTMIN + offset, and only when nothing else in the process
 * handles it; install reports whether it could. Install and uninstall are called on the
 * broker's thread; now from any thread, once per wake-up (no timer).
 */
#ifndef PRESENCE_WAKE_H
#define PRESENCE_WAKE_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>

struct presence_wake {
	/* The signal, or 0 when not installed. */
	int signal;
	/* The broker's thread. */
	pthread_t thread;
	/* The signal's disposition before install, restored by uninstall. */
	struct sigaction old_action;
};

/* Takes SIGRTMIN + offset for w on the calling (broker) thread. Returns false, with w unused
 * and nothing changed, when that signal does not exist or something else handles it. */
bool presence_wake_install(struct presence_wake *w, int offset);

/* Gives the signal back; a w never installed is left alone. */
void presence_wake_uninstall(struct presence_wake *w);

/* Wakes the broker's loop once (no-op when w is not installed). Any thread. */
void presence_wake_now(const struct presence_wake *w);

#endif
