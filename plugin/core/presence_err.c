/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Names for the core's error values (see presence_err.h).
 */
#include "presence_err.h"

const char *presence_strerror(enum presence_err err)
{
	switch (err) {
	case PRESENCE_OK:
		return "success";
	case PRESENCE_ERR_NOMEM:
		return "out of memory";
	case PRESENCE_ERR_INVAL:
		return "invalid input";
	case PRESENCE_ERR_TOO_LARGE:
		return "limit exceeded";
	case PRESENCE_ERR_NOT_FOUND:
		return "not found";
	case PRESENCE_ERR_IO:
		return "input/output error";
	case PRESENCE_ERR_FULL:
		return "capacity reached";
	}
	return "unknown error";
}
