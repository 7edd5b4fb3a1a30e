/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The callbacks every broker generation registers (plugin.c): each takes the struct
 * presence_plugin as userdata. The generation's own callbacks are in its lifecycle file
 * (broker.h).
 */
#ifndef PRESENCE_CALLBACKS_H
#define PRESENCE_CALLBACKS_H

struct presence_plugin;

/* events.c: access checks, and state writes (MESSAGE). */
int presence_acl_check_cb(int event, void *event_data, void *userdata);
int presence_message_cb(int event, void *event_data, void *userdata);

/* tick.c */
int presence_tick_cb(int event, void *event_data, void *userdata);
/* tick.c: saves the state file now when a privacy choice changed, within the budget of such
 * saves (called by MESSAGE, before the publisher's PUBACK). */
void presence_tick_save_urgent(struct presence_plugin *p);

/* control.c: the query API on $CONTROL/presence/v1. */
int presence_control_cb(int event, void *event_data, void *userdata);

#endif
