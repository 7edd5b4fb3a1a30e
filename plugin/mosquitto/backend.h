/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Where the documents come from and where state writes go: the registry of this broker alone
 * (backend_local.c), or the cluster's store in Redis (backend_cluster.c). init chooses one
 * (plugin_opt_cluster_url) and stores it in the plugin's context; the callbacks call it through
 * that pointer and never ask which one it is. A backend calls the core and publish.h only.
 */
#ifndef PRESENCE_BACKEND_H
#define PRESENCE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "presence_err.h"

struct presence_plugin;
struct presence_topic;
struct presence_user;

struct presence_backend {
	/* Called last in init, after the callbacks are registered: publishes what the broker
	 * must show before any client connects. Returns a MOSQ_ERR_* value, the reason logged;
	 * on failure nothing is left to end. */
	int (*start)(struct presence_plugin *p);
	/* Called by cleanup (and by a failed init, also when start was never called): ends what
	 * start began. */
	void (*end)(struct presence_plugin *p);
	/* Applies a state write of user to write_topic (parsed as topic, payload of len bytes):
	 * the writer owns the user, and the write is within its rate limit. Returns PRESENCE_OK
	 * when the write is accepted (applied, or on its way), with *changed telling whether
	 * documents may be due now (see publish_due); otherwise the write is rejected, reason
	 * (PRESENCE_STATE_REASON_SIZE bytes) says why (empty for PRESENCE_ERR_NOMEM), and the
	 * caller logs and answers it. A write the backend rejects later answers itself. */
	enum presence_err (*write)(struct presence_plugin *p, struct presence_user *user,
	                           const char *write_topic, const struct presence_topic *topic,
	                           const void *payload, size_t len, bool *changed, char *reason);
	/* TICK's work: documents, forgetting, the link's results. */
	void (*tick)(struct presence_plugin *p);
	/* Publishes the documents due now, outside TICK (presence_lifecycle_changed). */
	void (*publish_due)(struct presence_plugin *p);
	/* user is shown to more watchers than before (a groups file re-read): its document is
	 * published again with seq and since jumped (sight.h). */
	void (*widen)(struct presence_plugin *p, struct presence_user *user);
};

extern const struct presence_backend presence_backend_local;
/* Without cluster mode in the build, its start logs why and fails. */
extern const struct presence_backend presence_backend_cluster;

#endif
