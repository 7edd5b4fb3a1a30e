/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Waking the broker's loop up from outside its event sources: a real-time signal, whose
 * handler does nothing, sent to the broker's thread makes epoll_wait return (EINTR, which
 * Mosquitto treats as a wake-up; epoll_wait is never restarted), so the loop runs again at once
 * instead of sleeping up to 100 ms. Other interrupted calls are restarted (SA_RESTART).
 *
 * Each user takes its own signal, SIGRTMIN + offset, and only when nothing else in the process
 * handles it; install reports whether it could. Install, repeat and uninstall are called on the
 * broker's thread; now from any thread.
 */
#ifndef PRESENCE_WAKE_H
#define PRESENCE_WAKE_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

struct presence_wake {
	/* The signal, or 0 when not installed. */
	int signal;
	/* The broker's thread, as a pthread and as a kernel thread id (for the timer). */
	pthread_t thread;
	pid_t tid;
	/* The signal's disposition before install, restored by uninstall. */
	struct sigaction old_action;
	/* The timer of presence_wake_repeat, once made, and whether it is running. */
	bool timer_made;
	bool repeating;
	timer_t timer;
};

/* Takes SIGRTMIN + offset for w on the calling (broker) thread. Returns false, with w unused
 * and nothing changed, when that signal does not exist or something else handles it. */
bool presence_wake_install(struct presence_wake *w, int offset);

/* Stops the timer and gives the signal back; a w never installed is left alone. */
void presence_wake_uninstall(struct presence_wake *w);

/* Wakes the broker's loop once (no-op when w is not installed). Any thread. */
void presence_wake_now(const struct presence_wake *w);

/* on: wakes the broker's loop 0.03 ms from now and then every 0.5 ms until called with off
 * (no-op when w is not installed, or when the timer cannot be made). */
void presence_wake_repeat(struct presence_wake *w, bool on);

#endif
