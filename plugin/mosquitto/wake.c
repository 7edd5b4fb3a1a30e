/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Waking the broker's loop up; see wake.h.
 */
#define _GNU_SOURCE
#include <string.h>
#include <unistd.h>

#include "wake.h"

/* presence_wake_repeat: the first wake-up comes soon, normally while the broker already waits
 * for network events; one that comes before the wait begins is lost, so it repeats. */
#define FIRST_NS 30000L
#define REPEAT_NS 500000L

static void wake_handler(int sig)
{
	(void)sig;
}

bool presence_wake_install(struct presence_wake *w, int offset)
{
	struct sigaction action;
	int sig = SIGRTMIN + offset;

	memset(w, 0, sizeof(*w));
	if (sig > SIGRTMAX || sigaction(sig, NULL, &w->old_action) != 0 ||
	    (w->old_action.sa_handler != SIG_DFL && w->old_action.sa_handler != SIG_IGN) ||
	    (w->old_action.sa_flags & SA_SIGINFO) != 0) {
		return false;
	}
	memset(&action, 0, sizeof(action));
	action.sa_handler = wake_handler;
	action.sa_flags = SA_RESTART;
	sigemptyset(&action.sa_mask);
	if (sigaction(sig, &action, NULL) != 0) {
		return false;
	}
	w->signal = sig;
	w->thread = pthread_self();
	w->tid = gettid();
	return true;
}

void presence_wake_uninstall(struct presence_wake *w)
{
	if (w->signal == 0) {
		return;
	}
	if (w->timer_made) {
		timer_delete(w->timer);
	}
	sigaction(w->signal, &w->old_action, NULL);
	memset(w, 0, sizeof(*w));
}

void presence_wake_now(const struct presence_wake *w)
{
	if (w->signal != 0) {
		pthread_kill(w->thread, w->signal);
	}
}

void presence_wake_repeat(struct presence_wake *w, bool on)
{
	struct itimerspec period;

	if (w->signal == 0 || on == w->repeating) {
		return;
	}
	if (!w->timer_made) {
		struct sigevent event;

		memset(&event, 0, sizeof(event));
		event.sigev_notify = SIGEV_THREAD_ID;
		event.sigev_signo = w->signal;
		event._sigev_un._tid = w->tid;
		if (timer_create(CLOCK_MONOTONIC, &event, &w->timer) != 0) {
			return;
		}
		w->timer_made = true;
	}
	memset(&period, 0, sizeof(period));
	if (on) {
		period.it_value.tv_nsec = FIRST_NS;
		period.it_interval.tv_nsec = REPEAT_NS;
	}
	if (timer_settime(w->timer, 0, &period, NULL) == 0) {
		w->repeating = on;
	}
}
