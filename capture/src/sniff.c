/* SPDX-License-Identifier: Apache-2.0 */
/* Protocol detection from the first bytes of a client stream. */
#include <stdbool.h>
#include <string.h>

#include "tap/sniff.h"

/*
 * HTTP/1 request lines start with a method token followed by one space. The
 * registered methods that clients send in practice are listed; an unknown
 * token is not HTTP/1 for capture purposes (llhttp would refuse it too).
 */
static const char *const http_methods[] = {
	"GET ",	  "HEAD ",   "POST ",	  "PUT ",	"DELETE ", "CONNECT ", "OPTIONS ",
	"TRACE ", "PATCH ",  "PROPFIND ", "PROPPATCH ", "MKCOL ",  "COPY ",    "MOVE ",
	"LOCK ",  "UNLOCK ", "REPORT ",	  "SEARCH ",	"PURGE ",  "PRI ",
};

static bool is_prefix_of_method(const char *p, size_t len, bool *complete)
{
	bool partial = false;

	*complete = false;
	for (size_t i = 0; i < sizeof(http_methods) / sizeof(http_methods[0]); i++) {
		size_t mlen = strlen(http_methods[i]);

		if (len >= mlen) {
			if (memcmp(p, http_methods[i], mlen) == 0) {
				*complete = true;
				return true;
			}
		} else if (memcmp(p, http_methods[i], len) == 0) {
			partial = true;
		}
	}
	return partial;
}

enum tap_proto tap_sniff(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	bool complete;

	if (len == 0)
		return TAP_PROTO_UNKNOWN;
	/* TLS record: handshake (22), major version 3, then minor 0..4. */
	if (p[0] == 0x16) {
		if (len < 3)
			return TAP_PROTO_UNKNOWN;
		return p[1] == 3 && p[2] <= 4 ? TAP_PROTO_TLS : TAP_PROTO_OTHER;
	}
	if (is_prefix_of_method((const char *)p, len, &complete))
		return complete ? TAP_PROTO_HTTP1 : TAP_PROTO_UNKNOWN;
	return TAP_PROTO_OTHER;
}

const char *tap_proto_name(enum tap_proto proto)
{
	switch (proto) {
	case TAP_PROTO_HTTP1:
		return "http1";
	case TAP_PROTO_TLS:
		return "tls";
	case TAP_PROTO_OTHER:
		return "other";
	case TAP_PROTO_UNKNOWN:
		break;
	}
	return "unknown";
}
