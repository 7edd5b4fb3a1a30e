/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Reading a query's Correlation Data and Response Topic from a Mosquitto 2.0 property list,
 * without the broker: brokers built the upstream way export no property reader (their
 * src/linker.syms has none), so lifecycle_v20.c reads the list itself, whose element layout
 * (lib/property_mosq.h, struct mqtt5__property) is the same from 2.0.0 to 2.0.22. Pure C with no
 * broker header, so that the fuzz build (tests/fuzz/fuzz_props_v20.c) compiles it too.
 */
#ifndef PRESENCE_PROPS_V20_H
#define PRESENCE_PROPS_V20_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* MQTT 5 property identifiers (MQTT 5.0, 2.2.2.2). */
#define PRESENCE_PROP_RESPONSE_TOPIC 8
#define PRESENCE_PROP_CORRELATION_DATA 9

/* The layout of Mosquitto 2.0's property list element. Only read, never written or freed. */
struct mosquitto20_string {
	char *v;
	uint16_t len;
};

struct mosquitto20_property {
	struct mosquitto20_property *next;
	union {
		uint8_t i8;
		uint16_t i16;
		uint32_t i32;
		uint32_t varint;
		struct mosquitto20_string bin;
		struct mosquitto20_string s;
	} value;
	struct mosquitto20_string name;
	int32_t identifier;
	bool client_generated;
};

/* The two values a query response needs: each is a copy, NUL-terminated (len bytes and a NUL),
 * from the allocator given to presence_props20_read, or NULL when the list has none. */
struct presence_props20 {
	char *correlation;
	uint16_t correlation_len;
	char *response_topic;
	uint16_t response_topic_len;
};

/* Reads the first Correlation Data and the first Response Topic of the list at props (NULL:
 * an empty list) into *out, which is zeroed first; a value with a length but no bytes counts
 * as empty. Copies are made with alloc (size in bytes) and freed with release. Returns false
 * when an allocation fails: *out then holds nothing (what was copied is released). */
bool presence_props20_read(const struct mosquitto20_property *props, void *(*alloc)(size_t),
                           void (*release)(void *), struct presence_props20 *out);

#endif
