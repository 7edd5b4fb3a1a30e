/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Reading a Mosquitto 2.0 property list; see props_v20.h.
 */
#include "props_v20.h"

#include <string.h>

/* Returns a NUL-terminated copy of the len bytes at data (none when data is NULL) from alloc,
 * or NULL when that fails. */
static char *copy_value(const char *data, uint16_t len, void *(*alloc)(size_t))
{
	char *copy;

	if (data == NULL) {
		len = 0;
	}
	copy = alloc((size_t)len + 1);
	if (copy != NULL) {
		if (len > 0) {
			memcpy(copy, data, len);
		}
		copy[len] = '\0';
	}
	return copy;
}

bool presence_props20_read(const struct mosquitto20_property *props, void *(*alloc)(size_t),
                           void (*release)(void *), struct presence_props20 *out)
{
	const struct mosquitto20_property *prop;

	memset(out, 0, sizeof(*out));
	/* The broker has validated the list: each of the two appears at most once. The first
	 * is taken all the same. */
	for (prop = props; prop != NULL; prop = prop->next) {
		if (prop->identifier == PRESENCE_PROP_CORRELATION_DATA &&
		    out->correlation == NULL) {
			out->correlation =
			    copy_value(prop->value.bin.v, prop->value.bin.len, alloc);
			if (out->correlation == NULL) {
				goto out_nomem;
			}
			out->correlation_len = prop->value.bin.v != NULL ? prop->value.bin.len : 0;
		} else if (prop->identifier == PRESENCE_PROP_RESPONSE_TOPIC &&
		           out->response_topic == NULL) {
			out->response_topic = copy_value(prop->value.s.v, prop->value.s.len, alloc);
			if (out->response_topic == NULL) {
				goto out_nomem;
			}
			out->response_topic_len = prop->value.s.v != NULL ? prop->value.s.len : 0;
		}
	}
	return true;

out_nomem:
	release(out->correlation);
	release(out->response_topic);
	memset(out, 0, sizeof(*out));
	return false;
}
