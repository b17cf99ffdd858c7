/* SPDX-License-Identifier: Apache-2.0 */
/* Internals shared by the connection capture (conn.c) and its HTTP/1 pairing (http.c). */
#ifndef TAP_CONN_INT_H
#define TAP_CONN_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tap/conn.h"
#include "tap/frame.h"

/* tap_sniff() reads at most this many bytes: enough to decide. */
#define TAP__SNIFF_MAX 16

/*
 * What a connection's capture does with the bytes it is fed:
 *
 *   SNIFF --c2u bytes decide: HTTP/1 request--> HTTP
 *   SNIFF --c2u bytes decide: TLS record------> TLS --ClientHello parsed or not--> DONE
 *   SNIFF --c2u bytes decide: anything else---> TCP
 *   SNIFF --u2c bytes first (server speaks)---> TCP
 *   HTTP  --parse error, upgrade, CONNECT-----> TCP
 *   any   --tap_conn_end()--------------------> DONE
 *
 * Only HTTP holds more than this struct: its parsers and pending pairs
 * (struct tap__http), allocated when the client's first bytes say HTTP/1.
 * TLS holds the ClientHello's records (at most TAP_TLS_HELLO_BYTES_MAX) until
 * they parse, emits one tls frame (passthrough: what the client offered) and
 * captures nothing more: the ciphertext is not worth recording.
 */
enum tap__mode {
	TAP__MODE_SNIFF = 0,
	TAP__MODE_HTTP,
	TAP__MODE_TCP,
	TAP__MODE_TLS,
	TAP__MODE_DONE,
};

struct tap__http;

/* The client's bytes while they are not yet a whole ClientHello. */
struct tap__hello {
	uint32_t len, cap;
	unsigned char buf[];
};

struct tap_conn {
	const struct tap_conn_cfg *cfg;
	tap_emit_cb emit;
	void *ctx;
	union {
		struct tap__http *http; /* while mode is TAP__MODE_HTTP */
		struct tap__hello *hello; /* while mode is TAP__MODE_TLS */
	};
	const char *tls_reason; /* why TLS passes through (tap_conn_tls_reason()) */
	uint64_t off[2]; /* bytes seen per direction: fed and skipped */
	uint64_t sniff_ts; /* when the first buffered c2u byte came */
	uint8_t mode; /* enum tap__mode */
	uint8_t proto; /* enum tap_proto */
	uint8_t sniff_len; /* bytes in sniff[] */
	unsigned char sniff[TAP__SNIFF_MAX]; /* the client's first bytes, until decided */
};

/*
 * Emits <len> bytes of direction <dir> starting at stream offset <off> as tcp
 * frames of at most cfg->tcp_chunk bytes each, stamped <ts_ns>.
 */
void tap__tcp_emit(struct tap_conn *tc, enum tap_dir dir, uint64_t off, const void *buf, size_t len,
		   uint64_t ts_ns);

/*
 * Starts HTTP/1 capture on <tc>: allocates the parsers. Returns 0 or -ENOMEM
 * (the caller falls back to tcp capture).
 */
int tap__http_start(struct tap_conn *tc);

/* Frees the HTTP/1 state of <tc> without emitting anything; tc->http becomes NULL. */
void tap__http_free(struct tap_conn *tc);

/*
 * Parses <len> bytes of direction <dir> whose first byte is at stream offset
 * <base>, emitting the pairs that complete. Returns how many bytes were taken
 * as HTTP: all of them, or fewer when capture left HTTP (a parse error, an
 * upgrade): then tc->mode is TAP__MODE_TCP, tc->http is gone, and the caller
 * emits the rest as tcp frames from <base> + the returned count.
 */
size_t tap__http_feed(struct tap_conn *tc, enum tap_dir dir, const char *buf, size_t len,
		      uint64_t base, uint64_t ts_ns);

/* Direction <dir> reached EOF: completes a response delimited by the close. */
void tap__http_eof(struct tap_conn *tc, enum tap_dir dir, uint64_t ts_ns);

/*
 * The connection ended: emits every pending pair (NO_RESPONSE where the
 * response did not complete) and the bytes held while an upgrade was
 * undecided, then frees the HTTP/1 state.
 */
void tap__http_end(struct tap_conn *tc, uint64_t ts_ns);

/* The heap bytes held by the HTTP/1 state of <tc> (tap_conn_memory()). */
size_t tap__http_memory(const struct tap_conn *tc);

/* tap_conn_wants() for a connection in HTTP mode. */
bool tap__http_wants(const struct tap_conn *tc, enum tap_dir dir, uint64_t *skip);

/*
 * <len> bytes of direction <dir> passed unfed; tc->off[dir] is still the
 * offset of the first of them. May leave HTTP mode (when the skip was not
 * offered); the caller then advances the offset like any tcp gap.
 */
void tap__http_skip(struct tap_conn *tc, enum tap_dir dir, uint64_t len, uint64_t ts_ns);

#endif
