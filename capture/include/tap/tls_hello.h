/* SPDX-License-Identifier: Apache-2.0 */
/* TLS ClientHello sniffing: SNI, ALPN and offered versions, from the bytes a client sent first. */
#ifndef TAP_TLS_HELLO_H
#define TAP_TLS_HELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TAP_TLS_SNI_MAX 255
#define TAP_TLS_ALPN_MAX 8 /* protocols kept (more are counted, not kept) */
#define TAP_TLS_ALPN_LEN 32

/*
 * Limits: a ClientHello (its handshake message) longer than TAP_TLS_HELLO_MAX
 * bytes, or spread over records that take more than TAP_TLS_HELLO_BYTES_MAX
 * bytes, is refused. So tap_tls_hello_parse() never asks for more once it has
 * TAP_TLS_HELLO_BYTES_MAX bytes: what a caller buffers is bounded by it.
 */
#define TAP_TLS_HELLO_MAX 16384
#define TAP_TLS_HELLO_BYTES_MAX 32768

/* Offered versions (bitmask). */
#define TAP_TLS_V10 (1u << 0)
#define TAP_TLS_V11 (1u << 1)
#define TAP_TLS_V12 (1u << 2)
#define TAP_TLS_V13 (1u << 3)

struct tap_tls_hello {
	/*
	 * host_name of server_name as sent: 1..255 bytes without NUL, not checked
	 * as a DNS name (IP literals are seen); NUL-terminated, "" if none.
	 */
	char sni[TAP_TLS_SNI_MAX + 1];
	uint8_t nalpn; /* ALPN protocols kept */
	uint8_t alpn_total; /* ALPN protocols offered */
	char alpn[TAP_TLS_ALPN_MAX][TAP_TLS_ALPN_LEN]; /* NUL-terminated (longer names cut) */
	uint8_t alpn_len[TAP_TLS_ALPN_MAX]; /* each name's length on the wire (cut or not) */
	uint32_t versions; /* TAP_TLS_V*: supported_versions, or legacy_version without it */
	size_t len; /* bytes of the records that held the ClientHello */
};

/*
 * Parses the ClientHello at the start of a client's stream (<len> bytes of
 * <buf>, possibly spread over several handshake records). Never trusts the
 * input: every length is checked against its container, and nothing beyond
 * <len> is read. Returns 1 with *<out> filled, 0 when <len> ends before the
 * ClientHello does (feed more), -EBADMSG when the bytes are not a TLS
 * ClientHello, or one past the limits above, or handshake data follows it in
 * its last record (with a static reason in *<why> when not NULL). Record
 * versions 3.0 to 3.4 are accepted, as servers do for a first flight.
 * Stateless: call it again with all the bytes so far.
 */
int tap_tls_hello_parse(const void *buf, size_t len, struct tap_tls_hello *out, const char **why);

/* Writes the names of the versions in <mask> ("TLS1.2,TLS1.3") into <buf>. Returns <buf>. */
char *tap_tls_versions_name(uint32_t mask, char *buf, size_t len);

/*
 * True when <h> offers ALPN protocol <proto> (or offers no ALPN at all, when
 * <or_none>). Names are compared whole; a protocol past the first
 * TAP_TLS_ALPN_MAX is not known, so not offered.
 */
bool tap_tls_hello_offers(const struct tap_tls_hello *h, const char *proto, bool or_none);

#endif
