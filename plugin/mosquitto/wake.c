/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Waking the broker's loop up; see wake.h.
 */
#include <string.h>

#include "wake.h"

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
	return true;
}

void presence_wake_uninstall(struct presence_wake *w)
{
	if (w->signal == 0) {
		return;
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
