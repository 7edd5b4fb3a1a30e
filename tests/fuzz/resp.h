/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * What the harnesses of the Redis codec share: a small reader of RESP2 (the protocol Redis
 * answers in) that turns the fuzz input into the redisReply tree hiredis would hand the codec,
 * and builders of such trees for the round trips. The trees are allocated here with libc and
 * freed with fuzz_reply_free (the codec never frees a reply), so libhiredis is not linked.
 *
 * The reader accepts "+text\r\n", "-error\r\n", ":integer\r\n", "$len\r\n<len bytes>\r\n" (and
 * "$-1\r\n", nil), "*count\r\n<count replies>" (and "*-1\r\n", nil), like hiredis: a string is
 * NUL-terminated after its len bytes and may hold NUL bytes. Nesting is at most FUZZ_RESP_DEPTH
 * deep and an array at most FUZZ_RESP_ELEMENTS long, so a reply is bounded by the input.
 */
#ifndef PRESENCE_FUZZ_RESP_H
#define PRESENCE_FUZZ_RESP_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

#include "fuzz.h"

#define FUZZ_RESP_DEPTH 8
#define FUZZ_RESP_ELEMENTS 512

static inline void fuzz_reply_free(redisReply *r)
{
	if (r == NULL) {
		return;
	}
	for (size_t i = 0; i < r->elements; i++) {
		fuzz_reply_free(r->element[i]);
	}
	free(r->element);
	free(r->str);
	free(r);
}

/* A string reply of type (STRING, STATUS or ERROR) holding len bytes of s. */
static inline redisReply *fuzz_reply_str(int type, const char *s, size_t len)
{
	redisReply *r = calloc(1, sizeof(*r));

	FUZZ_CHECK(r != NULL);
	r->type = type;
	r->str = malloc(len + 1);
	FUZZ_CHECK(r->str != NULL);
	memcpy(r->str, s, len);
	r->str[len] = '\0';
	r->len = len;
	return r;
}

/* An array reply of n elements (taken over). */
static inline redisReply *fuzz_reply_array(size_t n, redisReply **elements)
{
	redisReply *r = calloc(1, sizeof(*r));

	FUZZ_CHECK(r != NULL);
	r->type = REDIS_REPLY_ARRAY;
	r->elements = n;
	r->element = calloc(n > 0 ? n : 1, sizeof(*r->element));
	FUZZ_CHECK(r->element != NULL);
	for (size_t i = 0; i < n; i++) {
		r->element[i] = elements[i];
	}
	return r;
}

struct fuzz_resp {
	const uint8_t *p;
	size_t left;
};

/* Reads a line up to "\r\n" (not included) into *line, *len. False when there is none. */
static inline bool fuzz_resp_line(struct fuzz_resp *in, const char **line, size_t *len)
{
	for (size_t i = 0; i + 1 < in->left; i++) {
		if (in->p[i] == '\r' && in->p[i + 1] == '\n') {
			*line = (const char *)in->p;
			*len = i;
			in->p += i + 2;
			in->left -= i + 2;
			return true;
		}
	}
	return false;
}

/* Parses a decimal integer of a line (an optional '-', then 1 to 18 digits). */
static inline bool fuzz_resp_int(const char *s, size_t len, long long *out)
{
	bool neg = len > 0 && s[0] == '-';
	long long v = 0;
	size_t i = neg ? 1 : 0;

	if (len == i || len - i > 18) {
		return false;
	}
	for (; i < len; i++) {
		if (s[i] < '0' || s[i] > '9') {
			return false;
		}
		v = v * 10 + (s[i] - '0');
	}
	*out = neg ? -v : v;
	return true;
}

/* Reads one reply, or NULL when the input is no reply. */
static inline redisReply *fuzz_resp_read(struct fuzz_resp *in, int depth)
{
	const char *line;
	size_t len;
	long long n;
	redisReply *r;
	char type;

	if (in->left == 0 || depth > FUZZ_RESP_DEPTH) {
		return NULL;
	}
	type = (char)in->p[0];
	in->p++;
	in->left--;
	if (!fuzz_resp_line(in, &line, &len)) {
		return NULL;
	}
	switch (type) {
	case '+':
		return fuzz_reply_str(REDIS_REPLY_STATUS, line, len);
	case '-':
		return fuzz_reply_str(REDIS_REPLY_ERROR, line, len);
	case ':':
		if (!fuzz_resp_int(line, len, &n)) {
			return NULL;
		}
		r = calloc(1, sizeof(*r));
		FUZZ_CHECK(r != NULL);
		r->type = REDIS_REPLY_INTEGER;
		r->integer = n;
		return r;
	case '$':
		if (!fuzz_resp_int(line, len, &n) || n < -1) {
			return NULL;
		}
		if (n == -1) {
			r = calloc(1, sizeof(*r));
			FUZZ_CHECK(r != NULL);
			r->type = REDIS_REPLY_NIL;
			return r;
		}
		if ((unsigned long long)n + 2 > in->left || in->p[n] != '\r' ||
		    in->p[n + 1] != '\n') {
			return NULL;
		}
		r = fuzz_reply_str(REDIS_REPLY_STRING, (const char *)in->p, (size_t)n);
		in->p += n + 2;
		in->left -= (size_t)n + 2;
		return r;
	case '*': {
		redisReply **elements;

		if (!fuzz_resp_int(line, len, &n) || n < -1 || n > FUZZ_RESP_ELEMENTS) {
			return NULL;
		}
		if (n == -1) {
			r = calloc(1, sizeof(*r));
			FUZZ_CHECK(r != NULL);
			r->type = REDIS_REPLY_NIL;
			return r;
		}
		elements = calloc(n > 0 ? (size_t)n : 1, sizeof(*elements));
		FUZZ_CHECK(elements != NULL);
		for (long long i = 0; i < n; i++) {
			elements[i] = fuzz_resp_read(in, depth + 1);
			if (elements[i] == NULL) {
				for (long long j = 0; j < i; j++) {
					fuzz_reply_free(elements[j]);
				}
				free(elements);
				return NULL;
			}
		}
		r = fuzz_reply_array((size_t)n, elements);
		free(elements);
		return r;
	}
	default:
		return NULL;
	}
}

/* The reply the whole input holds (trailing bytes are ignored), or NULL. */
static inline redisReply *fuzz_resp_parse(const uint8_t *data, size_t size)
{
	struct fuzz_resp in = {data, size};

	return fuzz_resp_read(&in, 0);
}

/* Whether every byte of rec is zero (a decoder's output after a failure). */
static inline bool fuzz_all_zero(const void *p, size_t size)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < size; i++) {
		if (b[i] != 0) {
			return false;
		}
	}
	return true;
}

#endif
