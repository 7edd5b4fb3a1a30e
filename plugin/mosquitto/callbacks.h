/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The callbacks every broker generation registers (plugin.c): each takes the struct
 * presence_plugin as userdata. The generation's own callbacks are in its lifecycle file
 * (broker.h).
 */
#ifndef PRESENCE_CALLBACKS_H
#define PRESENCE_CALLBACKS_H

/* events.c: access checks, and state writes (MESSAGE). */
int presence_acl_check_cb(int event, void *event_data, void *userdata);
int presence_message_cb(int event, void *event_data, void *userdata);

/* tick.c */
int presence_tick_cb(int event, void *event_data, void *userdata);

/* control.c: the query API on $CONTROL/presence/v1. */
int presence_control_cb(int event, void *event_data, void *userdata);

#endif
