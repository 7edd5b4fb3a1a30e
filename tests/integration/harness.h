/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The integration-test harness: a real mosquitto on 127.0.0.1, started from a generated config
 * on a free port, and libmosquitto clients that talk real MQTT to it.
 *
 * Every wait is bounded and event-driven: it returns as soon as the awaited message, packet,
 * log line or process exit is there, and gives up at a deadline. Clients have no background
 * thread; every wait (on any client or on a broker) services the sockets of ALL live clients,
 * so a wait on one client keeps the others answering pings and receiving messages, which queue
 * per client in arrival order. Failures are reported through cmocka (fail_msg, with the tail of
 * the broker log), so the functions below only return what the test needs.
 *
 * Environment (set by tests/CMakeLists.txt): PRESENCE_PLUGIN, PRESENCE_PLAIN_PLUGIN,
 * PRESENCE_HELPER_PLUGIN, PRESENCE_ASAN_RUNTIME, PRESENCE_WORK_DIR, MOSQUITTO_BIN,
 * MOSQUITTO_PASSWD_BIN. Optional: PRESENCE_TIMEOUT_SCALE (an integer factor applied to every
 * deadline, for slow machines), VALGRIND_BIN (default: valgrind from PATH).
 *
 * Timeouts: every timeout_ms in these headers is multiplied by the broker's scale: 10 under
 * valgrind, else 1, times PRESENCE_TIMEOUT_SCALE. A client's waits use its broker's scale.
 *
 * One header per concern, all included here (tests include this one):
 *   harness_process.h    brokers: start, log, signals, restart, stop, teardown
 *   harness_config.h     their configuration and other files (@PORT@, @DIR@, @PLUGIN@, ...)
 *   harness_sanitizer.h  the sanitizer and valgrind verdict when a broker stops
 *   harness_client.h     MQTT clients: connect, publish, subscribe, receive, round trips
 *   harness_presence.h   assertions about presence documents
 * rawmqtt.h (included where needed) is a raw-socket client for what libmosquitto cannot do.
 */
#ifndef PRESENCE_HARNESS_H
#define PRESENCE_HARNESS_H

/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <sys/types.h>

#include <cjson/cJSON.h>
#include <mosquitto.h>
/* Mosquitto 2.1's mosquitto.h includes the protocol header itself (its old name is a shim
 * that warns); 2.0's does not. */
#if !__has_include(<mosquitto/mqtt_protocol.h>)
#include <mqtt_protocol.h>
#endif

#include "harness_client.h"
#include "harness_config.h"
#include "harness_presence.h"
#include "harness_process.h"
#include "harness_sanitizer.h"

#endif
