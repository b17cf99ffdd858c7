/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Capture of one proxied connection: the bytes of both directions go in, as
 * forwarded, in any slices; frames come out through a callback. The client's
 * first bytes decide: HTTP/1 is parsed into request/response pairs (llhttp),
 * anything else becomes tcp stream frames, as does the rest of a connection
 * after an upgrade, a CONNECT tunnel or a parse error. Capture never fails the
 * connection and never blocks: it only reads what it is given.
 */
#ifndef TAP_CONN_H
#define TAP_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "tap/frame.h"

struct tap_conn_cfg {
	uint32_t body_limit; /* bytes of each body kept (--capture-body-limit) */
	uint32_t header_limit; /* bytes of each message's head kept (--capture-header-limit) */
	uint32_t max_pending; /* pipelined requests waiting for a response before capture desyncs */
	uint32_t tcp_chunk; /* largest data of one tcp frame; longer slices are split */
	bool redact; /* credentials in headers and query strings never reach a frame */
};

/*
 * What redaction replaces: the values of Authorization, Proxy-Authorization,
 * Cookie, Set-Cookie, X-Api-Key, X-Auth-Token and X-Amz-Security-Token, and
 * of query parameters named token, access_token, refresh_token, id_token,
 * api_key, apikey, key, password, passwd, secret, client_secret, signature,
 * sig, X-Amz-Signature and X-Amz-Credential (names compared case-insensitively).
 */
#define TAP_REDACTED "[redacted]"

/* Defaults: 1 MiB bodies, 64 KiB heads, 64 pending requests, 64 KiB tcp chunks, redaction on. */
void tap_conn_cfg_default(struct tap_conn_cfg *cfg);

/*
 * Receives each frame. <f> carries the type-specific fields and ts_ns; the
 * callee fills the common ones (gen, worker, seq, conn_id, listener,
 * addresses) and encodes it. Everything <f> points to is valid only during
 * the call.
 */
typedef void (*tap_emit_cb)(void *ctx, struct tap_frame *f);

struct tap_conn;

/* Returns new capture state for one connection, or NULL (out of memory). Borrows <cfg>. */
struct tap_conn *tap_conn_new(const struct tap_conn_cfg *cfg, tap_emit_cb emit, void *ctx);

/*
 * Frees <tc> (NULL is a no-op) without emitting anything: call tap_conn_end()
 * first to flush what is pending.
 */
void tap_conn_free(struct tap_conn *tc);

/*
 * Feeds <len> bytes that were forwarded in direction <dir> at <ts_ns>. Frames
 * that complete are emitted before it returns. Any slicing of a stream gives
 * the same http frames (timings aside).
 */
void tap_conn_feed(struct tap_conn *tc, enum tap_dir dir, const void *buf, size_t len,
		   uint64_t ts_ns);

/*
 * The stream in direction <dir> ended (EOF) at <ts_ns>: a response delimited by
 * the close completes.
 */
void tap_conn_eof(struct tap_conn *tc, enum tap_dir dir, uint64_t ts_ns);

/*
 * The connection is gone: requests still waiting are emitted with
 * TAP_HTTP_F_NO_RESPONSE (and what came of their responses). Call once.
 */
void tap_conn_end(struct tap_conn *tc, uint64_t ts_ns);

/*
 * A TLS connection's bytes are not captured: the ClientHello is parsed and one
 * tls frame (event passthrough) records the SNI, the ALPN protocols and the
 * versions offered, and <why> (a static string; by default "TLS unwrapping is
 * off for this listener"). Call before the first bytes are fed.
 */
void tap_conn_tls_reason(struct tap_conn *tc, const char *why);

/* What the client's first bytes looked like so far (enum tap_proto of tap/sniff.h). */
int tap_conn_proto(const struct tap_conn *tc);

/* Bytes seen so far in direction <dir>. */
uint64_t tap_conn_offset(const struct tap_conn *tc, enum tap_dir dir);

/*
 * Returns the heap bytes <tc> holds now: its state, the parsers, pending pairs
 * and their buffers, as requested from malloc. For tests and memory metrics.
 */
size_t tap_conn_memory(const struct tap_conn *tc);

/*
 * True while direction <dir> needs its bytes for capture. False once a
 * message's body is past the body limit and its remaining length is known
 * (then *<skip> says how many bytes may pass uncaptured: tap_conn_skip() must
 * be told when they did), or when nothing more is captured in that direction.
 */
bool tap_conn_wants(const struct tap_conn *tc, enum tap_dir dir, uint64_t *skip);

/* Tells capture that <len> bytes of direction <dir> passed without being fed (spliced). */
void tap_conn_skip(struct tap_conn *tc, enum tap_dir dir, uint64_t len, uint64_t ts_ns);

#endif
