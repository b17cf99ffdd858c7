/* SPDX-License-Identifier: Apache-2.0 */
/* Protocol detection: what the first bytes of a TCP stream look like. */
#ifndef TAP_SNIFF_H
#define TAP_SNIFF_H

#include <stddef.h>

enum tap_proto {
	TAP_PROTO_UNKNOWN = 0, /* too few bytes to tell yet */
	TAP_PROTO_HTTP1, /* an HTTP/1.x request line */
	TAP_PROTO_TLS, /* a TLS handshake record (ClientHello) */
	TAP_PROTO_OTHER, /* anything else: captured as a raw stream */
};

/*
 * Classifies the first <len> bytes that a client sent on a connection. Returns
 * TAP_PROTO_UNKNOWN while <len> is too short to decide; feed it again with more.
 * Reads at most the first 16 bytes of <buf>; never writes.
 */
enum tap_proto tap_sniff(const void *buf, size_t len);

/* Returns the lower-case name of <proto> ("http1", "tls", "other", "unknown"). */
const char *tap_proto_name(enum tap_proto proto);

#endif
