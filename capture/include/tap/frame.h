/* SPDX-License-Identifier: Apache-2.0 */
/* The capture frame model (capture/FORMAT.md) and its msgpack encoder and decoder. */
#ifndef TAP_FRAME_H
#define TAP_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tap/tls_hello.h"

#define TAP_FORMAT_VERSION 1

enum tap_frame_type {
	TAP_FRAME_CONN = 1,
	TAP_FRAME_HTTP,
	TAP_FRAME_TCP,
	TAP_FRAME_TLS,
};

enum tap_dir {
	TAP_C2U = 0, /* client -> upstream */
	TAP_U2C = 1, /* upstream -> client */
};

enum tap_listener {
	TAP_INBOUND = 0,
	TAP_OUTBOUND = 1,
};

/* Bytes borrowed from elsewhere (a buffer, a decoder); never owned by the frame. */
struct tap_str {
	const char *p; /* may be NULL when len is 0 */
	uint32_t len;
};

struct tap_header {
	struct tap_str name;
	struct tap_str value;
};

/* conn frames */
enum tap_conn_event {
	TAP_CONN_OPEN = 1,
	TAP_CONN_CLOSE,
};

enum tap_close_reason {
	TAP_CLOSE_EOF = 1,
	TAP_CLOSE_RESET,
	TAP_CLOSE_IDLE_TIMEOUT,
	TAP_CLOSE_CONNECT_FAILED,
	TAP_CLOSE_CONNECT_TIMEOUT,
	TAP_CLOSE_DRAIN,
	TAP_CLOSE_ERROR,
};

/* What the client's first bytes looked like (tap/sniff.h's enum tap_proto, by value). */

/* http frame flags (FORMAT.md names them) */
#define TAP_HTTP_F_DESYNC (1u << 0)
#define TAP_HTTP_F_UPGRADE (1u << 1)
#define TAP_HTTP_F_HEADERS_TRUNCATED (1u << 2)
#define TAP_HTTP_F_BODY_UNTIL_CLOSE (1u << 3)
#define TAP_HTTP_F_NO_RESPONSE (1u << 4)
#define TAP_HTTP_F_HEAD (1u << 5)
#define TAP_HTTP_F_ALL ((1u << 6) - 1)

#define TAP_INFORMATIONAL_MAX 4

/* tls frames (FORMAT.md): what a TLS handshake showed, and what became of the connection. */
enum tap_tls_event {
	TAP_TLS_PASSTHROUGH = 1, /* not unwrapped: forwarded as it came */
	TAP_TLS_UNWRAPPED, /* terminated and re-encrypted: its HTTP is captured */
	TAP_TLS_FAILED, /* a handshake that failed */
};

enum tap_tls_side {
	TAP_TLS_SIDE_CLIENT = 0, /* the handshake of the app or client that opened the connection */
	TAP_TLS_SIDE_UPSTREAM = 1, /* sidetap's own handshake with the upstream */
};

/* The TLS of an unwrapped connection, as its http frames carry it. */
struct tap_tls_info {
	uint32_t version; /* one TAP_TLS_V* bit (tap/tls_hello.h) */
	struct tap_str cipher; /* IANA name */
	struct tap_str sni; /* "" if none */
};

/* One HTTP/1 message: a request or a response. */
struct tap_http_msg {
	struct tap_str method; /* request */
	struct tap_str target; /* request */
	uint16_t status; /* response */
	struct tap_str reason; /* response */
	uint8_t version_major, version_minor;
	const struct tap_header *headers;
	uint32_t nheaders;
	struct tap_str body; /* de-chunked, at most the body limit */
	uint64_t body_size; /* the body's full decoded length */
	bool body_truncated;
	bool chunked;
	uint16_t informational[TAP_INFORMATIONAL_MAX]; /* response: 1xx seen before it */
	uint8_t ninformational;
};

struct tap_frame {
	enum tap_frame_type type;
	uint32_t version; /* decoded frames: the version read; encoding writes TAP_FORMAT_VERSION */
	uint64_t gen;
	uint32_t worker;
	uint64_t seq;
	uint64_t conn_id;
	uint64_t ts_ns;
	enum tap_listener listener;
	struct tap_str client, dst, upstream; /* "IP:PORT" */
	union {
		struct {
			enum tap_conn_event event;
			uint8_t proto; /* enum tap_proto (close) */
			enum tap_close_reason reason; /* close */
			uint64_t bytes_c2u, bytes_u2c; /* close */
			uint64_t open_ts_ns; /* close */
		} conn;
		struct {
			uint64_t pair;
			struct tap_http_msg req;
			struct tap_http_msg resp;
			bool has_resp;
			uint64_t req_start, req_end, resp_start, resp_end; /* ns since the epoch */
			uint32_t flags; /* TAP_HTTP_F_* */
			uint64_t desync_off; /* with TAP_HTTP_F_DESYNC */
			enum tap_dir desync_dir;
			bool has_tls; /* the connection was unwrapped: tls holds its TLS */
			struct tap_tls_info tls;
		} http;
		struct {
			enum tap_dir dir;
			uint64_t off;
			struct tap_str data;
		} tcp;
		struct {
			enum tap_tls_event event;
			enum tap_tls_side side;
			struct tap_str sni; /* "" if none */
			struct tap_str
				alpn_offered[TAP_TLS_ALPN_MAX]; /* in the ClientHello's order */
			uint8_t nalpn_offered;
			uint32_t versions_offered; /* TAP_TLS_V* bits */
			struct tap_str reason; /* passthrough, failed: why */
			uint32_t version; /* unwrapped: one TAP_TLS_V* bit */
			struct tap_str cipher; /* unwrapped: IANA name */
			struct tap_str alpn; /* unwrapped: chosen with the client, "" if none */
			struct tap_str upstream_verify; /* unwrapped: "ok", "off" or the reason */
		} tls;
	};
};

/* Names used in the format and in logs. */
const char *tap_frame_type_name(enum tap_frame_type type);
const char *tap_dir_name(enum tap_dir dir); /* "c2u", "u2c" */
const char *tap_listener_name(enum tap_listener listener); /* "inbound", "outbound" */
const char *tap_close_reason_name(enum tap_close_reason reason); /* "eof", "reset", ... */
const char *tap_tls_event_name(enum tap_tls_event event); /* "passthrough", ... */
const char *tap_tls_side_name(enum tap_tls_side side); /* "client", "upstream" */
/* "TLS1.0" .. "TLS1.3" for one TAP_TLS_V* bit, else "invalid". */
const char *tap_tls_version_name(uint32_t version);

/*
 * Formats the frame id "<gen as 16 hex digits>-<worker>-<seq>" into <buf>
 * (at least TAP_FRAME_ID_LEN bytes). Returns <buf>.
 */
#define TAP_FRAME_ID_LEN 64
char *tap_frame_id(const struct tap_frame *f, char *buf, size_t len);

/*
 * Returns an upper bound of the encoded size of <f>: what tap_frame_encode()
 * needs at most. Cheap (sums lengths, no encoding).
 */
size_t tap_frame_encoded_max(const struct tap_frame *f);

/*
 * Encodes <f> as one msgpack map into <buf> (<cap> bytes). Returns the bytes
 * written, or -ENOSPC when <cap> is too small (nothing useful written), or
 * -EINVAL for a frame that breaks the model (unknown type or enum value).
 */
ssize_t tap_frame_encode(const struct tap_frame *f, void *buf, size_t cap);

/*
 * A decoder: holds what decoded frames borrow (header arrays, msgpack
 * objects). One frame at a time: the next decode invalidates the last frame.
 */
struct tap_decoder;

/* Returns a new decoder or NULL (out of memory). */
struct tap_decoder *tap_decoder_new(void);

/* Frees <dec>; NULL is a no-op. */
void tap_decoder_free(struct tap_decoder *dec);

/*
 * Decodes the frame at the start of <buf> (<len> bytes, which may hold more
 * frames after it). On success returns 0, sets *<used> to the bytes the frame
 * took, and fills <f>, whose strings point into <buf> and <dec>. Never trusts
 * the input: returns -EAGAIN when <buf> ends inside the frame (truncated),
 * -EBADMSG when it is not a valid frame, with a static reason in *<why>
 * (if not NULL) naming the key or the problem ("req.method: missing"), or
 * -ENOMEM. Memory used is bounded by a small multiple of <len>. Keys the
 * format does not define for the frame's type are ignored; a known key twice,
 * an unknown flag or enum name, or an id that disagrees with gen, worker and
 * seq is -EBADMSG. Fields the format leaves out (a request's status, a
 * missing response's times) are zero.
 */
int tap_frame_decode(struct tap_decoder *dec, const void *buf, size_t len, size_t *used,
		     struct tap_frame *f, const char **why);

/*
 * Checks the frame that is exactly <buf> (<len> bytes) cheaply, without
 * decoding it: well-formed msgpack, nothing after it, and a map with key v 1,
 * a known type and an id. What the uploader does to every record before it
 * ships it; readers that use the fields call tap_frame_decode(). Returns 0 or
 * -EBADMSG with a static reason in *<why>.
 */
int tap_frame_check(const void *buf, size_t len, const char **why);

#endif
