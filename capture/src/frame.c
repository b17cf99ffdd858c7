/* SPDX-License-Identifier: Apache-2.0 */
/* The capture frame's msgpack encoder and its never-trusting decoder (capture/FORMAT.md). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "tap/frame.h"
#include "tap/sniff.h"

/* Deepest container nesting the decoder accepts; a v1 frame needs 4 (frame, req, headers, pair). */
#define DEPTH_MAX 16

static const char *const flag_names[] = {
	"desync", "upgrade", "headers_truncated", "body_until_close", "no_response", "head",
};

static const char *const reason_names[] = {
	[TAP_CLOSE_EOF] = "eof",
	[TAP_CLOSE_RESET] = "reset",
	[TAP_CLOSE_IDLE_TIMEOUT] = "idle_timeout",
	[TAP_CLOSE_CONNECT_FAILED] = "connect_failed",
	[TAP_CLOSE_CONNECT_TIMEOUT] = "connect_timeout",
	[TAP_CLOSE_DRAIN] = "drain",
	[TAP_CLOSE_ERROR] = "error",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

const char *tap_frame_type_name(enum tap_frame_type type)
{
	switch (type) {
	case TAP_FRAME_CONN:
		return "conn";
	case TAP_FRAME_HTTP:
		return "http";
	case TAP_FRAME_TCP:
		return "tcp";
	case TAP_FRAME_TLS:
		return "tls";
	}
	return "invalid";
}

const char *tap_dir_name(enum tap_dir dir)
{
	switch (dir) {
	case TAP_C2U:
		return "c2u";
	case TAP_U2C:
		return "u2c";
	}
	return "invalid";
}

const char *tap_listener_name(enum tap_listener listener)
{
	switch (listener) {
	case TAP_INBOUND:
		return "inbound";
	case TAP_OUTBOUND:
		return "outbound";
	}
	return "invalid";
}

const char *tap_close_reason_name(enum tap_close_reason reason)
{
	if ((unsigned)reason >= NELEM(reason_names) || !reason_names[reason])
		return "invalid";
	return reason_names[reason];
}

static const char *const tls_event_names[] = {
	[TAP_TLS_PASSTHROUGH] = "passthrough",
	[TAP_TLS_UNWRAPPED] = "unwrapped",
	[TAP_TLS_FAILED] = "failed",
};

static const char *const tls_side_names[] = {
	[TAP_TLS_SIDE_CLIENT] = "client",
	[TAP_TLS_SIDE_UPSTREAM] = "upstream",
};

/* Index i names bit (1 << i) of the TAP_TLS_V* mask. */
static const char *const tls_version_names[] = { "TLS1.0", "TLS1.1", "TLS1.2", "TLS1.3" };

#define TLS_VERSIONS_ALL ((1u << NELEM(tls_version_names)) - 1)

const char *tap_tls_event_name(enum tap_tls_event event)
{
	if ((unsigned)event >= NELEM(tls_event_names) || !tls_event_names[event])
		return "invalid";
	return tls_event_names[event];
}

const char *tap_tls_side_name(enum tap_tls_side side)
{
	if ((unsigned)side >= NELEM(tls_side_names))
		return "invalid";
	return tls_side_names[side];
}

const char *tap_tls_version_name(uint32_t version)
{
	if (!version || (version & (version - 1)) || (version & ~TLS_VERSIONS_ALL))
		return "invalid";
	return tls_version_names[__builtin_ctz(version)];
}

static const char *conn_event_name(enum tap_conn_event event)
{
	return event == TAP_CONN_OPEN ? "open" : "close";
}

/* Writes the decimal digits of <v> at <p>; returns the end. */
static char *put_dec(char *p, uint64_t v)
{
	char tmp[20];
	unsigned n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

/* The frame id without its NUL; <p> has room for TAP_FRAME_ID_LEN bytes. Returns the length. */
static size_t format_id(const struct tap_frame *f, char *p)
{
	static const char hex[] = "0123456789abcdef";
	char *s = p;

	for (int shift = 60; shift >= 0; shift -= 4)
		*s++ = hex[(f->gen >> shift) & 0xf];
	*s++ = '-';
	s = put_dec(s, f->worker);
	*s++ = '-';
	s = put_dec(s, f->seq);
	return (size_t)(s - p);
}

char *tap_frame_id(const struct tap_frame *f, char *buf, size_t len)
{
	char tmp[TAP_FRAME_ID_LEN];
	size_t n = format_id(f, tmp);

	if (len == 0)
		return buf;
	if (n >= len)
		n = len - 1;
	memcpy(buf, tmp, n);
	buf[n] = '\0';
	return buf;
}

/*
 * Encoded-size bounds: a str or bin header takes at most 5 bytes, an unsigned
 * integer at most 9, a map or array header at most 5, and every key is a
 * fixstr shorter than 32 bytes (1 + its length, at most 17 here).
 */
#define KEY_MAX 18
#define UINT_MAX_ENC 9
#define HDR_MAX 5
/* One key/value pair of a scalar (integer, bool, nil, or a name shorter than 24 bytes). */
#define SCALAR_KV_MAX (KEY_MAX + HDR_MAX + 24)
/* Everything but the variable-length strings of the common keys and the type's keys. */
#define COMMON_FIXED_MAX (HDR_MAX + 12 * SCALAR_KV_MAX + TAP_FRAME_ID_LEN + 3 * HDR_MAX)
#define TYPE_FIXED_MAX (8 * SCALAR_KV_MAX)

static size_t msg_max(const struct tap_http_msg *m)
{
	/* method, target, reason, version and body (each key + str/bin header + text) */
	size_t n = 9 * SCALAR_KV_MAX + 5 * (KEY_MAX + HDR_MAX) + HDR_MAX;

	n += (size_t)m->method.len + m->target.len + m->reason.len + m->body.len;
	n += KEY_MAX + HDR_MAX + TAP_INFORMATIONAL_MAX * UINT_MAX_ENC;
	n += KEY_MAX + HDR_MAX;
	for (uint32_t i = 0; m->headers && i < m->nheaders; i++)
		n += 1 + 2 * HDR_MAX + (size_t)m->headers[i].name.len + m->headers[i].value.len;
	return n;
}

size_t tap_frame_encoded_max(const struct tap_frame *f)
{
	size_t n = COMMON_FIXED_MAX + TYPE_FIXED_MAX;

	n += (size_t)f->client.len + f->dst.len + f->upstream.len;
	switch (f->type) {
	case TAP_FRAME_HTTP:
		n += 2 * (KEY_MAX + HDR_MAX); /* req, resp */
		n += msg_max(&f->http.req);
		if (f->http.has_resp)
			n += msg_max(&f->http.resp);
		n += KEY_MAX + HDR_MAX + 4 * SCALAR_KV_MAX; /* timing */
		n += KEY_MAX + HDR_MAX + NELEM(flag_names) * (HDR_MAX + 24);
		if (f->http.has_tls)
			n += KEY_MAX + HDR_MAX + 3 * SCALAR_KV_MAX + f->http.tls.cipher.len +
			     f->http.tls.sni.len;
		break;
	case TAP_FRAME_TCP:
		n += f->tcp.data.len;
		break;
	case TAP_FRAME_TLS:
		/* 10 keys, the versions' names, each ALPN name's header; then the strings. */
		n += 10 * SCALAR_KV_MAX + TAP_TLS_ALPN_MAX * HDR_MAX;
		n += (size_t)f->tls.sni.len + f->tls.reason.len + f->tls.cipher.len +
		     f->tls.alpn.len + f->tls.upstream_verify.len;
		for (unsigned i = 0; i < f->tls.nalpn_offered && i < TAP_TLS_ALPN_MAX; i++)
			n += f->tls.alpn_offered[i].len;
		break;
	default:
		break;
	}
	return n;
}

/*
 * The encoder writes msgpack itself: through msgpack_packer, every key and
 * value went through an indirect call and a memcpy() call of a few bytes, and
 * a typical http frame took about three times as long (perf/ring_bench). The
 * output is the same standard msgpack, in the smallest form of each integer
 * and header, byte for byte what msgpack-c's packer writes.
 *
 * The output: the caller's buffer; a write that does not fit sets <full>,
 * and the encoder checks it once at the end.
 */
struct wbuf {
	uint8_t *p, *end;
	bool full;
};

static inline bool room(struct wbuf *w, size_t n)
{
	if (__builtin_expect(w->full || (size_t)(w->end - w->p) < n, 0)) {
		w->full = true;
		return false;
	}
	return true;
}

static inline void put_raw(struct wbuf *w, const void *b, size_t n)
{
	if (room(w, n)) {
		memcpy(w->p, b, n);
		w->p += n;
	}
}

static inline void put_byte(struct wbuf *w, uint8_t b)
{
	if (room(w, 1))
		*w->p++ = b;
}

/* A one-byte tag followed by <n> bytes of <v>, big-endian. */
static inline void put_tagged(struct wbuf *w, uint8_t tag, uint64_t v, unsigned n)
{
	if (!room(w, 1 + n))
		return;
	*w->p++ = tag;
	for (unsigned i = n; i--;)
		*w->p++ = (uint8_t)(v >> (8 * i));
}

static inline void put_uint(struct wbuf *w, uint64_t v)
{
	if (v < 0x80)
		put_byte(w, (uint8_t)v);
	else if (v <= UINT8_MAX)
		put_tagged(w, 0xcc, v, 1);
	else if (v <= UINT16_MAX)
		put_tagged(w, 0xcd, v, 2);
	else if (v <= UINT32_MAX)
		put_tagged(w, 0xce, v, 4);
	else
		put_tagged(w, 0xcf, v, 8);
}

/* Map (0x80/0xde/0xdf) and array (0x90/0xdc/0xdd) headers. */
static inline void put_container(struct wbuf *w, uint8_t fix, uint8_t tag16, uint32_t n)
{
	if (n < 16)
		put_byte(w, (uint8_t)(fix | n));
	else if (n <= UINT16_MAX)
		put_tagged(w, tag16, n, 2);
	else
		put_tagged(w, (uint8_t)(tag16 + 1), n, 4);
}

#define put_map(w, n) put_container(w, 0x80, 0xde, n)
#define put_array(w, n) put_container(w, 0x90, 0xdc, n)

static inline void put_str_hdr(struct wbuf *w, uint32_t len)
{
	if (len < 32)
		put_byte(w, (uint8_t)(0xa0 | len));
	else if (len <= UINT8_MAX)
		put_tagged(w, 0xd9, len, 1);
	else if (len <= UINT16_MAX)
		put_tagged(w, 0xda, len, 2);
	else
		put_tagged(w, 0xdb, len, 4);
}

static inline void put_str(struct wbuf *w, const struct tap_str *s)
{
	put_str_hdr(w, s->len);
	if (s->len)
		put_raw(w, s->p, s->len);
}

static inline void put_strn(struct wbuf *w, const char *s, size_t len)
{
	put_str_hdr(w, (uint32_t)len);
	put_raw(w, s, len);
}

static inline void put_cstr(struct wbuf *w, const char *s)
{
	put_strn(w, s, strlen(s));
}

/* A key: a fixstr of a literal, whose constant length lets the compiler inline the copy. */
static inline void put_key(struct wbuf *w, const char *k, size_t len)
{
	if (room(w, 1 + len)) {
		*w->p++ = (uint8_t)(0xa0 | len);
		memcpy(w->p, k, len);
		w->p += len;
	}
}

#define KEY(w, k) put_key(w, k, sizeof(k) - 1)

static inline void put_bin(struct wbuf *w, const struct tap_str *s)
{
	if (s->len <= UINT8_MAX)
		put_tagged(w, 0xc4, s->len, 1);
	else if (s->len <= UINT16_MAX)
		put_tagged(w, 0xc5, s->len, 2);
	else
		put_tagged(w, 0xc6, s->len, 4);
	if (s->len)
		put_raw(w, s->p, s->len);
}

static inline void put_bool(struct wbuf *w, bool b)
{
	put_byte(w, b ? 0xc3 : 0xc2);
}

static bool str_ok(const struct tap_str *s)
{
	return s->p || s->len == 0;
}

static bool msg_ok(const struct tap_http_msg *m)
{
	if (!str_ok(&m->method) || !str_ok(&m->target) || !str_ok(&m->reason) ||
	    !str_ok(&m->body) || (m->nheaders && !m->headers) ||
	    m->ninformational > TAP_INFORMATIONAL_MAX || m->body.len > m->body_size)
		return false;
	for (uint32_t i = 0; i < m->nheaders; i++)
		if (!str_ok(&m->headers[i].name) || !str_ok(&m->headers[i].value))
			return false;
	return true;
}

static bool tls_ok(const struct tap_frame *f)
{
	if (strcmp(tap_tls_event_name(f->tls.event), "invalid") == 0 ||
	    (unsigned)f->tls.side > TAP_TLS_SIDE_UPSTREAM || !str_ok(&f->tls.sni) ||
	    f->tls.nalpn_offered > TAP_TLS_ALPN_MAX ||
	    (f->tls.versions_offered & ~TLS_VERSIONS_ALL))
		return false;
	for (unsigned i = 0; i < f->tls.nalpn_offered; i++)
		if (!str_ok(&f->tls.alpn_offered[i]))
			return false;
	switch (f->tls.event) {
	case TAP_TLS_UNWRAPPED:
		return strcmp(tap_tls_version_name(f->tls.version), "invalid") != 0 &&
		       str_ok(&f->tls.cipher) && str_ok(&f->tls.alpn) &&
		       str_ok(&f->tls.upstream_verify);
	default:
		return str_ok(&f->tls.reason);
	}
}

/* Checks what the encoder cannot write: enum values outside the format, strings without bytes. */
static bool frame_ok(const struct tap_frame *f)
{
	if ((unsigned)f->listener > TAP_OUTBOUND || !str_ok(&f->client) || !str_ok(&f->dst) ||
	    !str_ok(&f->upstream))
		return false;
	switch (f->type) {
	case TAP_FRAME_CONN:
		if (f->conn.event == TAP_CONN_OPEN)
			return true;
		return f->conn.event == TAP_CONN_CLOSE && f->conn.proto <= TAP_PROTO_OTHER &&
		       strcmp(tap_close_reason_name(f->conn.reason), "invalid") != 0;
	case TAP_FRAME_HTTP:
		if (f->http.flags & ~TAP_HTTP_F_ALL)
			return false;
		if ((f->http.flags & TAP_HTTP_F_DESYNC) && (unsigned)f->http.desync_dir > TAP_U2C)
			return false;
		if (f->http.has_tls &&
		    (strcmp(tap_tls_version_name(f->http.tls.version), "invalid") == 0 ||
		     !str_ok(&f->http.tls.cipher) || !str_ok(&f->http.tls.sni)))
			return false;
		return msg_ok(&f->http.req) && (!f->http.has_resp || msg_ok(&f->http.resp));
	case TAP_FRAME_TCP:
		return (unsigned)f->tcp.dir <= TAP_U2C && str_ok(&f->tcp.data);
	case TAP_FRAME_TLS:
		return tls_ok(f);
	}
	return false;
}

static void put_msg(struct wbuf *w, const struct tap_http_msg *m, bool resp)
{
	char ver[8], *e;

	put_map(w, resp ? 9 : 8);
	if (resp) {
		KEY(w, "status");
		put_uint(w, m->status);
		KEY(w, "reason");
		put_str(w, &m->reason);
	} else {
		KEY(w, "method");
		put_str(w, &m->method);
		KEY(w, "target");
		put_str(w, &m->target);
	}
	KEY(w, "version");
	e = put_dec(ver, m->version_major);
	*e++ = '.';
	e = put_dec(e, m->version_minor);
	put_strn(w, ver, (size_t)(e - ver));
	KEY(w, "headers");
	put_array(w, m->nheaders);
	for (uint32_t i = 0; i < m->nheaders; i++) {
		put_array(w, 2);
		put_str(w, &m->headers[i].name);
		put_str(w, &m->headers[i].value);
	}
	KEY(w, "body");
	put_bin(w, &m->body);
	KEY(w, "body_size");
	put_uint(w, m->body_size);
	KEY(w, "body_truncated");
	put_bool(w, m->body_truncated);
	KEY(w, "chunked");
	put_bool(w, m->chunked);
	if (resp) {
		KEY(w, "informational");
		put_array(w, m->ninformational);
		for (unsigned i = 0; i < m->ninformational; i++)
			put_uint(w, m->informational[i]);
	}
}

static void put_http(struct wbuf *w, const struct tap_frame *f)
{
	unsigned nflags = (unsigned)__builtin_popcount(f->http.flags);

	KEY(w, "pair");
	put_uint(w, f->http.pair);
	KEY(w, "req");
	put_msg(w, &f->http.req, false);
	KEY(w, "resp");
	if (f->http.has_resp)
		put_msg(w, &f->http.resp, true);
	else
		put_byte(w, 0xc0);
	KEY(w, "timing");
	put_map(w, f->http.has_resp ? 4 : 2);
	KEY(w, "req_start");
	put_uint(w, f->http.req_start);
	KEY(w, "req_end");
	put_uint(w, f->http.req_end);
	if (f->http.has_resp) {
		KEY(w, "resp_start");
		put_uint(w, f->http.resp_start);
		KEY(w, "resp_end");
		put_uint(w, f->http.resp_end);
	}
	KEY(w, "flags");
	put_array(w, nflags);
	for (unsigned i = 0; i < NELEM(flag_names); i++)
		if (f->http.flags & (1u << i))
			put_cstr(w, flag_names[i]);
	if (f->http.flags & TAP_HTTP_F_DESYNC) {
		KEY(w, "desync_off");
		put_uint(w, f->http.desync_off);
		KEY(w, "desync_dir");
		put_cstr(w, tap_dir_name(f->http.desync_dir));
	}
	if (f->http.has_tls) {
		KEY(w, "tls");
		put_map(w, 3);
		KEY(w, "version");
		put_cstr(w, tap_tls_version_name(f->http.tls.version));
		KEY(w, "cipher");
		put_str(w, &f->http.tls.cipher);
		KEY(w, "sni");
		put_str(w, &f->http.tls.sni);
	}
}

static void put_tls(struct wbuf *w, const struct tap_frame *f)
{
	KEY(w, "event");
	put_cstr(w, tap_tls_event_name(f->tls.event));
	KEY(w, "side");
	put_cstr(w, tap_tls_side_name(f->tls.side));
	KEY(w, "sni");
	put_str(w, &f->tls.sni);
	KEY(w, "alpn_offered");
	put_array(w, f->tls.nalpn_offered);
	for (unsigned i = 0; i < f->tls.nalpn_offered; i++)
		put_str(w, &f->tls.alpn_offered[i]);
	KEY(w, "versions_offered");
	put_array(w, (uint32_t)__builtin_popcount(f->tls.versions_offered));
	for (unsigned i = 0; i < NELEM(tls_version_names); i++)
		if (f->tls.versions_offered & (1u << i))
			put_cstr(w, tls_version_names[i]);
	if (f->tls.event != TAP_TLS_UNWRAPPED) {
		KEY(w, "reason");
		put_str(w, &f->tls.reason);
		return;
	}
	KEY(w, "version");
	put_cstr(w, tap_tls_version_name(f->tls.version));
	KEY(w, "cipher");
	put_str(w, &f->tls.cipher);
	KEY(w, "alpn");
	put_str(w, &f->tls.alpn);
	KEY(w, "upstream_verify");
	put_str(w, &f->tls.upstream_verify);
}

static unsigned frame_nkeys(const struct tap_frame *f)
{
	switch (f->type) {
	case TAP_FRAME_CONN:
		return f->conn.event == TAP_CONN_CLOSE ? 6 : 1;
	case TAP_FRAME_HTTP:
		return (f->http.flags & TAP_HTTP_F_DESYNC ? 7 : 5) + f->http.has_tls;
	case TAP_FRAME_TCP:
		return 3;
	case TAP_FRAME_TLS:
		return f->tls.event == TAP_TLS_UNWRAPPED ? 9 : 6;
	default:
		return 0;
	}
}

ssize_t tap_frame_encode(const struct tap_frame *f, void *buf, size_t cap)
{
	struct wbuf wb = { .p = buf, .end = (uint8_t *)buf + cap }, *w = &wb;
	char id[TAP_FRAME_ID_LEN];

	if (!frame_ok(f))
		return -EINVAL;
	put_map(w, 12 + frame_nkeys(f));
	KEY(w, "v");
	put_uint(w, TAP_FORMAT_VERSION);
	KEY(w, "id");
	put_strn(w, id, format_id(f, id));
	KEY(w, "type");
	put_cstr(w, tap_frame_type_name(f->type));
	KEY(w, "gen");
	put_uint(w, f->gen);
	KEY(w, "worker");
	put_uint(w, f->worker);
	KEY(w, "seq");
	put_uint(w, f->seq);
	KEY(w, "conn_id");
	put_uint(w, f->conn_id);
	KEY(w, "ts");
	put_uint(w, f->ts_ns);
	KEY(w, "listener");
	put_cstr(w, tap_listener_name(f->listener));
	KEY(w, "client");
	put_str(w, &f->client);
	KEY(w, "dst");
	put_str(w, &f->dst);
	KEY(w, "upstream");
	put_str(w, &f->upstream);

	switch (f->type) {
	case TAP_FRAME_CONN:
		KEY(w, "event");
		put_cstr(w, conn_event_name(f->conn.event));
		if (f->conn.event != TAP_CONN_CLOSE)
			break;
		KEY(w, "proto");
		put_cstr(w, tap_proto_name(f->conn.proto));
		KEY(w, "reason");
		put_cstr(w, tap_close_reason_name(f->conn.reason));
		KEY(w, "bytes_c2u");
		put_uint(w, f->conn.bytes_c2u);
		KEY(w, "bytes_u2c");
		put_uint(w, f->conn.bytes_u2c);
		KEY(w, "open_ts");
		put_uint(w, f->conn.open_ts_ns);
		break;
	case TAP_FRAME_HTTP:
		put_http(w, f);
		break;
	case TAP_FRAME_TCP:
		KEY(w, "dir");
		put_cstr(w, tap_dir_name(f->tcp.dir));
		KEY(w, "off");
		put_uint(w, f->tcp.off);
		KEY(w, "data");
		put_bin(w, &f->tcp.data);
		break;
	case TAP_FRAME_TLS:
		put_tls(w, f);
		break;
	}
	if (wb.full)
		return -ENOSPC;
	return wb.p - (uint8_t *)buf;
}

/*
 * Decoding. msgpack_unpack_next() allocates each array's and map's elements
 * from its zone at the count the header claims, before reading them: a
 * 5-byte array32 header could ask for 100 GB. So scan_object() first walks
 * the object's structure without allocating, checks that every count and
 * length fits in what the buffer holds (each element takes at least one
 * byte), bounds the nesting, and finds the frame's end; only then does
 * msgpack-c build the object tree, whose size is now bounded by the input
 * (at most 48 bytes of zone per input byte).
 *
 * Lifetime: msgpack-c's C unpacker (4.0) does not copy str, bin or ext
 * payloads: those objects point into the input buffer (the test
 * decoded_strings_point_into_the_input checks it). Arrays and maps live in
 * the zone of dec->up, freed by the next msgpack_unpack_next() or
 * tap_decoder_free(). A decoded frame's strings and bodies therefore borrow
 * the caller's <buf>, its header arrays borrow dec->hdrs (valid until the
 * next decode), and nothing borrows the zone after tap_frame_decode() returns.
 */
struct tap_decoder {
	msgpack_unpacked up;
	struct tap_header *hdrs;
	size_t hdrs_cap;
};

struct tap_decoder *tap_decoder_new(void)
{
	struct tap_decoder *dec = calloc(1, sizeof(*dec));

	if (dec)
		msgpack_unpacked_init(&dec->up);
	return dec;
}

void tap_decoder_free(struct tap_decoder *dec)
{
	if (!dec)
		return;
	msgpack_unpacked_destroy(&dec->up);
	free(dec->hdrs);
	free(dec);
}

static uint64_t be_read(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/*
 * Walks the msgpack object at the start of <p> (<len> bytes) without building
 * it. Returns 0 with its length in *<end>, -EAGAIN when <len> ends inside it
 * (or a count promises more than <len> can hold), -EBADMSG for a byte that is
 * not msgpack or nesting deeper than DEPTH_MAX.
 */
static int scan_object(const uint8_t *p, size_t len, size_t *end, const char **why)
{
	uint64_t left[DEPTH_MAX + 1];
	size_t i = 0;
	int d = 0;

	left[0] = 1;
	while (d >= 0) {
		uint64_t n = 0, skip = 0;
		unsigned lenbytes = 0;
		bool container = false;
		uint8_t b;

		if (left[d] == 0) {
			d--;
			continue;
		}
		left[d]--;
		if (i >= len)
			return -EAGAIN;
		b = p[i++];
		if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
			continue; /* fixints, nil, false, true */
		} else if (b <= 0x8f) {
			n = 2 * (uint64_t)(b & 0x0f);
			container = true;
		} else if (b <= 0x9f) {
			n = b & 0x0f;
			container = true;
		} else if (b <= 0xbf) {
			skip = b & 0x1f;
		} else {
			switch (b) {
			case 0xc4:
			case 0xc5:
			case 0xc6: /* bin 8/16/32 */
				lenbytes = 1u << (b - 0xc4);
				break;
			case 0xc7:
			case 0xc8:
			case 0xc9: /* ext 8/16/32: length, then a type byte */
				lenbytes = 1u << (b - 0xc7);
				skip = 1;
				break;
			case 0xca: /* float 32 */
				skip = 4;
				break;
			case 0xcb: /* float 64 */
				skip = 8;
				break;
			case 0xcc:
			case 0xcd:
			case 0xce:
			case 0xcf: /* uint 8..64 */
				skip = 1u << (b - 0xcc);
				break;
			case 0xd0:
			case 0xd1:
			case 0xd2:
			case 0xd3: /* int 8..64 */
				skip = 1u << (b - 0xd0);
				break;
			case 0xd4:
			case 0xd5:
			case 0xd6:
			case 0xd7:
			case 0xd8: /* fixext 1..16 */
				skip = 1 + (1u << (b - 0xd4));
				break;
			case 0xd9:
			case 0xda:
			case 0xdb: /* str 8/16/32 */
				lenbytes = 1u << (b - 0xd9);
				break;
			case 0xdc:
			case 0xdd: /* array 16/32 */
				if (len - i < 2u << (b - 0xdc))
					return -EAGAIN;
				n = be_read(p + i, 2u << (b - 0xdc));
				i += 2u << (b - 0xdc);
				container = true;
				break;
			case 0xde:
			case 0xdf: /* map 16/32 */
				if (len - i < 2u << (b - 0xde))
					return -EAGAIN;
				n = 2 * be_read(p + i, 2u << (b - 0xde));
				i += 2u << (b - 0xde);
				container = true;
				break;
			default: /* 0xc1: never used */
				*why = "not msgpack: byte 0xc1";
				return -EBADMSG;
			}
		}
		if (lenbytes) {
			if (len - i < lenbytes)
				return -EAGAIN;
			skip += be_read(p + i, lenbytes);
			i += lenbytes;
		}
		if (container) {
			/* Every element takes a byte at least: a count the buffer cannot hold is cut short. */
			if (n > len - i)
				return -EAGAIN;
			if (n == 0)
				continue;
			if (d == DEPTH_MAX) {
				*why = "containers nested deeper than 16";
				return -EBADMSG;
			}
			left[++d] = n;
			continue;
		}
		if (skip > len - i)
			return -EAGAIN;
		i += skip;
	}
	*end = i;
	return 0;
}

/* A key the decoder knows, and the messages that name it. */
struct key {
	const char *name;
	uint8_t len;
	const char *missing, *bad, *dup;
};

#define K(name, path, want)                                                                      \
	{                                                                                        \
		name, sizeof(name) - 1, path ": missing", path ": " want, path ": duplicate key" \
	}

enum {
	F_V,
	F_ID,
	F_TYPE,
	F_GEN,
	F_WORKER,
	F_SEQ,
	F_CONN_ID,
	F_TS,
	F_LISTENER,
	F_CLIENT,
	F_DST,
	F_UPSTREAM,
	F_EVENT,
	F_PROTO,
	F_REASON,
	F_BYTES_C2U,
	F_BYTES_U2C,
	F_OPEN_TS,
	F_PAIR,
	F_REQ,
	F_RESP,
	F_TIMING,
	F_FLAGS,
	F_DESYNC_OFF,
	F_DESYNC_DIR,
	F_DIR,
	F_OFF,
	F_DATA,
	F_TLS,
	F_SIDE,
	F_SNI,
	F_ALPN_OFFERED,
	F_VERSIONS_OFFERED,
	F_VERSION,
	F_CIPHER,
	F_ALPN,
	F_UPSTREAM_VERIFY,
	F_NKEYS
};

static const struct key frame_keys[F_NKEYS] = {
	[F_V] = K("v", "v", "not an unsigned integer"),
	[F_ID] = K("id", "id", "not a str"),
	[F_TYPE] = K("type", "type", "not a str"),
	[F_GEN] = K("gen", "gen", "not an unsigned integer"),
	[F_WORKER] = K("worker", "worker", "not a 32-bit unsigned integer"),
	[F_SEQ] = K("seq", "seq", "not an unsigned integer"),
	[F_CONN_ID] = K("conn_id", "conn_id", "not an unsigned integer"),
	[F_TS] = K("ts", "ts", "not an unsigned integer"),
	[F_LISTENER] = K("listener", "listener", "not a str"),
	[F_CLIENT] = K("client", "client", "not a str"),
	[F_DST] = K("dst", "dst", "not a str"),
	[F_UPSTREAM] = K("upstream", "upstream", "not a str"),
	[F_EVENT] = K("event", "event", "not a str"),
	[F_PROTO] = K("proto", "proto", "not a str"),
	[F_REASON] = K("reason", "reason", "not a str"),
	[F_BYTES_C2U] = K("bytes_c2u", "bytes_c2u", "not an unsigned integer"),
	[F_BYTES_U2C] = K("bytes_u2c", "bytes_u2c", "not an unsigned integer"),
	[F_OPEN_TS] = K("open_ts", "open_ts", "not an unsigned integer"),
	[F_PAIR] = K("pair", "pair", "not an unsigned integer"),
	[F_REQ] = K("req", "req", "not a map"),
	[F_RESP] = K("resp", "resp", "not a map or nil"),
	[F_TIMING] = K("timing", "timing", "not a map"),
	[F_FLAGS] = K("flags", "flags", "not an array of str"),
	[F_DESYNC_OFF] = K("desync_off", "desync_off", "not an unsigned integer"),
	[F_DESYNC_DIR] = K("desync_dir", "desync_dir", "not a str"),
	[F_DIR] = K("dir", "dir", "not a str"),
	[F_OFF] = K("off", "off", "not an unsigned integer"),
	[F_DATA] = K("data", "data", "not a bin"),
	[F_TLS] = K("tls", "tls", "not a map"),
	[F_SIDE] = K("side", "side", "not a str"),
	[F_SNI] = K("sni", "sni", "not a str"),
	[F_ALPN_OFFERED] = K("alpn_offered", "alpn_offered", "not an array of at most 8 str"),
	[F_VERSIONS_OFFERED] = K("versions_offered", "versions_offered", "not an array of str"),
	[F_VERSION] = K("version", "version", "not a str"),
	[F_CIPHER] = K("cipher", "cipher", "not a str"),
	[F_ALPN] = K("alpn", "alpn", "not a str"),
	[F_UPSTREAM_VERIFY] = K("upstream_verify", "upstream_verify", "not a str"),
};

enum { TI_VERSION, TI_CIPHER, TI_SNI, TI_NKEYS };

static const struct key tls_info_keys[TI_NKEYS] = {
	[TI_VERSION] = K("version", "tls.version", "not a str"),
	[TI_CIPHER] = K("cipher", "tls.cipher", "not a str"),
	[TI_SNI] = K("sni", "tls.sni", "not a str"),
};

enum {
	M_METHOD,
	M_TARGET,
	M_STATUS,
	M_REASON,
	M_VERSION,
	M_HEADERS,
	M_BODY,
	M_BODY_SIZE,
	M_BODY_TRUNCATED,
	M_CHUNKED,
	M_INFORMATIONAL,
	M_NKEYS
};

#define MSG_KEYS(p)                                                                            \
	{                                                                                      \
		[M_METHOD] = K("method", p ".method", "not a str"),                            \
		[M_TARGET] = K("target", p ".target", "not a str"),                            \
		[M_STATUS] = K("status", p ".status", "not a 16-bit unsigned integer"),        \
		[M_REASON] = K("reason", p ".reason", "not a str"),                            \
		[M_VERSION] = K("version", p ".version", "not a str \"<major>.<minor>\""),     \
		[M_HEADERS] = K("headers", p ".headers", "not an array of [name, value] str"), \
		[M_BODY] = K("body", p ".body", "not a bin"),                                  \
		[M_BODY_SIZE] = K("body_size", p ".body_size", "not an unsigned integer"),     \
		[M_BODY_TRUNCATED] = K("body_truncated", p ".body_truncated", "not a bool"),   \
		[M_CHUNKED] = K("chunked", p ".chunked", "not a bool"),                        \
		[M_INFORMATIONAL] = K("informational", p ".informational",                     \
				      "not an array of at most 4 16-bit unsigned integers"),   \
	}

static const struct key req_keys[M_NKEYS] = MSG_KEYS("req");
static const struct key resp_keys[M_NKEYS] = MSG_KEYS("resp");

enum { T_REQ_START, T_REQ_END, T_RESP_START, T_RESP_END, T_NKEYS };

static const struct key timing_keys[T_NKEYS] = {
	[T_REQ_START] = K("req_start", "timing.req_start", "not an unsigned integer"),
	[T_REQ_END] = K("req_end", "timing.req_end", "not an unsigned integer"),
	[T_RESP_START] = K("resp_start", "timing.resp_start", "not an unsigned integer"),
	[T_RESP_END] = K("resp_end", "timing.resp_end", "not an unsigned integer"),
};

/*
 * Finds <name> among <keys>. The encoder writes keys in the tables' order, so
 * the key after the last one found (<hint>) is tried first: one comparison
 * per key for our own frames, a search only for others' orders.
 */
static int find_key(const struct key *keys, unsigned nkeys, const char *name, uint32_t len,
		    unsigned hint)
{
	if (hint < nkeys && keys[hint].len == len && memcmp(keys[hint].name, name, len) == 0)
		return (int)hint;
	for (unsigned k = 0; k < nkeys; k++)
		if (keys[k].len == len && memcmp(keys[k].name, name, len) == 0)
			return (int)k;
	return -1;
}

/*
 * Collects the values of the known keys of map <o> into <vals> (NULL where
 * absent); other keys, string or not, are ignored. A known key twice is
 * refused: two readers could take different ones.
 */
static int collect(const msgpack_object *o, const struct key *keys, unsigned nkeys,
		   const msgpack_object **vals, const char **why)
{
	unsigned hint = 0;

	for (unsigned k = 0; k < nkeys; k++)
		vals[k] = NULL;
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object_kv *kv = &o->via.map.ptr[i];
		int k;

		if (kv->key.type != MSGPACK_OBJECT_STR)
			continue;
		k = find_key(keys, nkeys, kv->key.via.str.ptr, kv->key.via.str.size, hint);
		if (k < 0)
			continue;
		if (vals[k]) {
			*why = keys[k].dup;
			return -EBADMSG;
		}
		vals[k] = &kv->val;
		hint = (unsigned)k + 1;
	}
	return 0;
}

/* The value of key <k>, which must be there; sets *why naming the key if it is not. */
static const msgpack_object *need(const msgpack_object **vals, const struct key *keys, unsigned k,
				  const char **why)
{
	if (!vals[k])
		*why = keys[k].missing;
	return vals[k];
}

static int get_uint(const msgpack_object *o, const struct key *key, uint64_t max, uint64_t *out,
		    const char **why)
{
	if (!o) {
		*why = key->missing;
		return -EBADMSG;
	}
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max) {
		*why = key->bad;
		return -EBADMSG;
	}
	*out = o->via.u64;
	return 0;
}

static int get_str(const msgpack_object *o, const struct key *key, struct tap_str *out,
		   const char **why)
{
	if (!o) {
		*why = key->missing;
		return -EBADMSG;
	}
	if (o->type != MSGPACK_OBJECT_STR) {
		*why = key->bad;
		return -EBADMSG;
	}
	out->p = o->via.str.ptr;
	out->len = o->via.str.size;
	return 0;
}

static int get_bin(const msgpack_object *o, const struct key *key, struct tap_str *out,
		   const char **why)
{
	if (!o) {
		*why = key->missing;
		return -EBADMSG;
	}
	if (o->type != MSGPACK_OBJECT_BIN) {
		*why = key->bad;
		return -EBADMSG;
	}
	out->p = o->via.bin.ptr;
	out->len = o->via.bin.size;
	return 0;
}

static int get_bool(const msgpack_object *o, const struct key *key, bool *out, const char **why)
{
	if (!o) {
		*why = key->missing;
		return -EBADMSG;
	}
	if (o->type != MSGPACK_OBJECT_BOOLEAN) {
		*why = key->bad;
		return -EBADMSG;
	}
	*out = o->via.boolean;
	return 0;
}

static bool str_is(const struct tap_str *s, const char *name)
{
	size_t len = strlen(name);

	return s->len == len && memcmp(s->p, name, len) == 0;
}

/*
 * Maps the str at key <k> to the index of its name in <names> (<n> of them;
 * NULL entries skipped). Returns the index or -EBADMSG with <bad> as reason.
 */
static int get_name(const msgpack_object *o, const struct key *key, const char *const *names,
		    unsigned n, const char *bad, const char **why)
{
	struct tap_str s;
	int ret = get_str(o, key, &s, why);

	if (ret)
		return ret;
	for (unsigned i = 0; i < n; i++)
		if (names[i] && str_is(&s, names[i]))
			return (int)i;
	*why = bad;
	return -EBADMSG;
}

/* Parses "<major>.<minor>", each a decimal of 1 to 3 digits up to 255. */
static bool parse_version(const struct tap_str *s, uint8_t *major, uint8_t *minor)
{
	unsigned v[2] = { 0, 0 }, part = 0, digits = 0;

	for (uint32_t i = 0; i < s->len; i++) {
		char c = s->p[i];

		if (c == '.' && part == 0 && digits) {
			part = 1;
			digits = 0;
		} else if (c >= '0' && c <= '9' && digits < 3) {
			v[part] = v[part] * 10 + (unsigned)(c - '0');
			digits++;
		} else {
			return false;
		}
	}
	if (part != 1 || !digits || v[0] > 255 || v[1] > 255)
		return false;
	*major = (uint8_t)v[0];
	*minor = (uint8_t)v[1];
	return true;
}

static int get_headers(struct tap_decoder *dec, size_t *used, const msgpack_object *o,
		       const struct key *key, struct tap_http_msg *m, const char **why)
{
	struct tap_header *h;

	if (!o) {
		*why = key->missing;
		return -EBADMSG;
	}
	if (o->type != MSGPACK_OBJECT_ARRAY)
		goto bad;
	m->nheaders = o->via.array.size;
	m->headers = NULL;
	if (!m->nheaders)
		return 0;
	/* Room was made for both messages' headers before either was filled: see decode_http(). */
	h = dec->hdrs + *used;
	*used += m->nheaders;
	for (uint32_t i = 0; i < m->nheaders; i++) {
		const msgpack_object *e = &o->via.array.ptr[i];

		if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 2 ||
		    e->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
		    e->via.array.ptr[1].type != MSGPACK_OBJECT_STR)
			goto bad;
		h[i].name.p = e->via.array.ptr[0].via.str.ptr;
		h[i].name.len = e->via.array.ptr[0].via.str.size;
		h[i].value.p = e->via.array.ptr[1].via.str.ptr;
		h[i].value.len = e->via.array.ptr[1].via.str.size;
	}
	m->headers = h;
	return 0;
bad:
	*why = key->bad;
	return -EBADMSG;
}

static int decode_msg(struct tap_decoder *dec, size_t *hused, const msgpack_object *o,
		      const struct key *keys, bool resp, struct tap_http_msg *m, const char **why)
{
	const msgpack_object *v[M_NKEYS];
	struct tap_str ver;
	uint64_t u;
	int ret;

	ret = collect(o, keys, M_NKEYS, v, why);
	if (ret)
		return ret;
	if (resp) {
		if ((ret = get_uint(v[M_STATUS], &keys[M_STATUS], UINT16_MAX, &u, why)) ||
		    (ret = get_str(v[M_REASON], &keys[M_REASON], &m->reason, why)))
			return ret;
		m->status = (uint16_t)u;
	} else {
		if ((ret = get_str(v[M_METHOD], &keys[M_METHOD], &m->method, why)) ||
		    (ret = get_str(v[M_TARGET], &keys[M_TARGET], &m->target, why)))
			return ret;
	}
	if ((ret = get_str(v[M_VERSION], &keys[M_VERSION], &ver, why)))
		return ret;
	if (!parse_version(&ver, &m->version_major, &m->version_minor)) {
		*why = keys[M_VERSION].bad;
		return -EBADMSG;
	}
	if ((ret = get_headers(dec, hused, v[M_HEADERS], &keys[M_HEADERS], m, why)) ||
	    (ret = get_bin(v[M_BODY], &keys[M_BODY], &m->body, why)) ||
	    (ret = get_uint(v[M_BODY_SIZE], &keys[M_BODY_SIZE], UINT64_MAX, &m->body_size, why)) ||
	    (ret = get_bool(v[M_BODY_TRUNCATED], &keys[M_BODY_TRUNCATED], &m->body_truncated,
			    why)) ||
	    (ret = get_bool(v[M_CHUNKED], &keys[M_CHUNKED], &m->chunked, why)))
		return ret;
	if (m->body.len > m->body_size) {
		*why = resp ? "resp.body: longer than resp.body_size" :
			      "req.body: longer than req.body_size";
		return -EBADMSG;
	}
	if (!resp)
		return 0;
	o = need(v, keys, M_INFORMATIONAL, why);
	if (!o)
		return -EBADMSG;
	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > TAP_INFORMATIONAL_MAX)
		goto bad_informational;
	for (uint32_t i = 0; i < o->via.array.size; i++) {
		const msgpack_object *e = &o->via.array.ptr[i];

		if (e->type != MSGPACK_OBJECT_POSITIVE_INTEGER || e->via.u64 > UINT16_MAX)
			goto bad_informational;
		m->informational[i] = (uint16_t)e->via.u64;
	}
	m->ninformational = (uint8_t)o->via.array.size;
	return 0;
bad_informational:
	*why = keys[M_INFORMATIONAL].bad;
	return -EBADMSG;
}

/* Header arrays of request and response, each bounded by the input (scan_object). */
static uint64_t count_headers(const msgpack_object *msg)
{
	if (!msg || msg->type != MSGPACK_OBJECT_MAP)
		return 0;
	for (uint32_t i = 0; i < msg->via.map.size; i++) {
		const msgpack_object_kv *kv = &msg->via.map.ptr[i];

		if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 7 &&
		    memcmp(kv->key.via.str.ptr, "headers", 7) == 0 &&
		    kv->val.type == MSGPACK_OBJECT_ARRAY)
			return kv->val.via.array.size;
	}
	return 0;
}

static int reserve_headers(struct tap_decoder *dec, uint64_t n)
{
	struct tap_header *h;

	if (n <= dec->hdrs_cap)
		return 0;
	if (n > SIZE_MAX / sizeof(*h))
		return -ENOMEM;
	h = realloc(dec->hdrs, n * sizeof(*h));
	if (!h)
		return -ENOMEM;
	dec->hdrs = h;
	dec->hdrs_cap = n;
	return 0;
}

static int decode_http(struct tap_decoder *dec, const msgpack_object **v, struct tap_frame *f,
		       const char **why)
{
	const msgpack_object *req, *resp, *timing, *flags, *t[T_NKEYS];
	size_t hused = 0;
	int ret;

	if ((ret = get_uint(v[F_PAIR], &frame_keys[F_PAIR], UINT64_MAX, &f->http.pair, why)))
		return ret;
	req = need(v, frame_keys, F_REQ, why);
	resp = need(v, frame_keys, F_RESP, why);
	timing = need(v, frame_keys, F_TIMING, why);
	flags = need(v, frame_keys, F_FLAGS, why);
	if (!req || !resp || !timing || !flags)
		return -EBADMSG;
	if (req->type != MSGPACK_OBJECT_MAP) {
		*why = frame_keys[F_REQ].bad;
		return -EBADMSG;
	}
	if (resp->type != MSGPACK_OBJECT_MAP && resp->type != MSGPACK_OBJECT_NIL) {
		*why = frame_keys[F_RESP].bad;
		return -EBADMSG;
	}
	/*
	 * Both messages' headers share dec->hdrs; size it once for both so the
	 * first message's pointer survives the second's.
	 */
	ret = reserve_headers(dec, count_headers(req) + count_headers(resp));
	if (ret)
		return ret;
	ret = decode_msg(dec, &hused, req, req_keys, false, &f->http.req, why);
	if (ret)
		return ret;
	f->http.has_resp = resp->type == MSGPACK_OBJECT_MAP;
	if (f->http.has_resp) {
		ret = decode_msg(dec, &hused, resp, resp_keys, true, &f->http.resp, why);
		if (ret)
			return ret;
	}

	if (timing->type != MSGPACK_OBJECT_MAP) {
		*why = frame_keys[F_TIMING].bad;
		return -EBADMSG;
	}
	if ((ret = collect(timing, timing_keys, T_NKEYS, t, why)))
		return ret;
	if ((ret = get_uint(t[T_REQ_START], &timing_keys[T_REQ_START], UINT64_MAX,
			    &f->http.req_start, why)) ||
	    (ret = get_uint(t[T_REQ_END], &timing_keys[T_REQ_END], UINT64_MAX, &f->http.req_end,
			    why)))
		return ret;
	/* A missing response has no resp_* times; where there is one, both are needed. */
	if ((f->http.has_resp || t[T_RESP_START]) &&
	    (ret = get_uint(t[T_RESP_START], &timing_keys[T_RESP_START], UINT64_MAX,
			    &f->http.resp_start, why)))
		return ret;
	if ((f->http.has_resp || t[T_RESP_END]) &&
	    (ret = get_uint(t[T_RESP_END], &timing_keys[T_RESP_END], UINT64_MAX, &f->http.resp_end,
			    why)))
		return ret;

	if (flags->type != MSGPACK_OBJECT_ARRAY) {
		*why = frame_keys[F_FLAGS].bad;
		return -EBADMSG;
	}
	for (uint32_t i = 0; i < flags->via.array.size; i++) {
		ret = get_name(&flags->via.array.ptr[i], &frame_keys[F_FLAGS], flag_names,
			       NELEM(flag_names), "flags: unknown flag", why);
		if (ret < 0)
			return ret;
		f->http.flags |= 1u << ret;
	}
	if (f->http.flags & TAP_HTTP_F_DESYNC) {
		static const char *const dirs[] = { "c2u", "u2c" };

		if ((ret = get_uint(v[F_DESYNC_OFF], &frame_keys[F_DESYNC_OFF], UINT64_MAX,
				    &f->http.desync_off, why)))
			return ret;
		ret = get_name(v[F_DESYNC_DIR], &frame_keys[F_DESYNC_DIR], dirs, 2,
			       "desync_dir: not c2u or u2c", why);
		if (ret < 0)
			return ret;
		f->http.desync_dir = (enum tap_dir)ret;
	}
	/* Optional: only the pairs of unwrapped connections have it. */
	if (v[F_TLS]) {
		const msgpack_object *ti[TI_NKEYS];

		if (v[F_TLS]->type != MSGPACK_OBJECT_MAP) {
			*why = frame_keys[F_TLS].bad;
			return -EBADMSG;
		}
		if ((ret = collect(v[F_TLS], tls_info_keys, TI_NKEYS, ti, why)))
			return ret;
		ret = get_name(ti[TI_VERSION], &tls_info_keys[TI_VERSION], tls_version_names,
			       NELEM(tls_version_names), "tls.version: not TLS1.0 to TLS1.3", why);
		if (ret < 0)
			return ret;
		f->http.tls.version = 1u << ret;
		if ((ret = get_str(ti[TI_CIPHER], &tls_info_keys[TI_CIPHER], &f->http.tls.cipher,
				   why)) ||
		    (ret = get_str(ti[TI_SNI], &tls_info_keys[TI_SNI], &f->http.tls.sni, why)))
			return ret;
		f->http.has_tls = true;
	}
	return 0;
}

static int decode_tls(const msgpack_object **v, struct tap_frame *f, const char **why)
{
	const msgpack_object *o;
	int ret;

	ret = get_name(v[F_EVENT], &frame_keys[F_EVENT], tls_event_names, NELEM(tls_event_names),
		       "event: not passthrough, unwrapped or failed", why);
	if (ret < 0)
		return ret;
	f->tls.event = (enum tap_tls_event)ret;
	ret = get_name(v[F_SIDE], &frame_keys[F_SIDE], tls_side_names, NELEM(tls_side_names),
		       "side: not client or upstream", why);
	if (ret < 0)
		return ret;
	f->tls.side = (enum tap_tls_side)ret;
	if ((ret = get_str(v[F_SNI], &frame_keys[F_SNI], &f->tls.sni, why)))
		return ret;
	o = need(v, frame_keys, F_ALPN_OFFERED, why);
	if (!o)
		return -EBADMSG;
	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > TAP_TLS_ALPN_MAX)
		goto bad_alpn;
	for (uint32_t i = 0; i < o->via.array.size; i++) {
		const msgpack_object *e = &o->via.array.ptr[i];

		if (e->type != MSGPACK_OBJECT_STR)
			goto bad_alpn;
		f->tls.alpn_offered[i].p = e->via.str.ptr;
		f->tls.alpn_offered[i].len = e->via.str.size;
	}
	f->tls.nalpn_offered = (uint8_t)o->via.array.size;
	o = need(v, frame_keys, F_VERSIONS_OFFERED, why);
	if (!o)
		return -EBADMSG;
	if (o->type != MSGPACK_OBJECT_ARRAY) {
		*why = frame_keys[F_VERSIONS_OFFERED].bad;
		return -EBADMSG;
	}
	for (uint32_t i = 0; i < o->via.array.size; i++) {
		ret = get_name(&o->via.array.ptr[i], &frame_keys[F_VERSIONS_OFFERED],
			       tls_version_names, NELEM(tls_version_names),
			       "versions_offered: not TLS1.0 to TLS1.3", why);
		if (ret < 0)
			return ret;
		f->tls.versions_offered |= 1u << ret;
	}
	if (f->tls.event != TAP_TLS_UNWRAPPED)
		return get_str(v[F_REASON], &frame_keys[F_REASON], &f->tls.reason, why);
	ret = get_name(v[F_VERSION], &frame_keys[F_VERSION], tls_version_names,
		       NELEM(tls_version_names), "version: not TLS1.0 to TLS1.3", why);
	if (ret < 0)
		return ret;
	f->tls.version = 1u << ret;
	if ((ret = get_str(v[F_CIPHER], &frame_keys[F_CIPHER], &f->tls.cipher, why)) ||
	    (ret = get_str(v[F_ALPN], &frame_keys[F_ALPN], &f->tls.alpn, why)) ||
	    (ret = get_str(v[F_UPSTREAM_VERIFY], &frame_keys[F_UPSTREAM_VERIFY],
			   &f->tls.upstream_verify, why)))
		return ret;
	return 0;
bad_alpn:
	*why = frame_keys[F_ALPN_OFFERED].bad;
	return -EBADMSG;
}

static int decode_conn(const msgpack_object **v, struct tap_frame *f, const char **why)
{
	static const char *const events[] = {
		[TAP_CONN_OPEN] = "open", [TAP_CONN_CLOSE] = "close"
	};
	static const char *const protos[] = {
		[TAP_PROTO_UNKNOWN] = "unknown",
		[TAP_PROTO_HTTP1] = "http1",
		[TAP_PROTO_TLS] = "tls",
		[TAP_PROTO_OTHER] = "other",
	};
	int ret;

	ret = get_name(v[F_EVENT], &frame_keys[F_EVENT], events, NELEM(events),
		       "event: not open or close", why);
	if (ret < 0)
		return ret;
	f->conn.event = (enum tap_conn_event)ret;
	if (f->conn.event == TAP_CONN_OPEN)
		return 0;
	ret = get_name(v[F_PROTO], &frame_keys[F_PROTO], protos, NELEM(protos),
		       "proto: not http1, tls, other or unknown", why);
	if (ret < 0)
		return ret;
	f->conn.proto = (uint8_t)ret;
	ret = get_name(v[F_REASON], &frame_keys[F_REASON], reason_names, NELEM(reason_names),
		       "reason: unknown close reason", why);
	if (ret < 0)
		return ret;
	f->conn.reason = (enum tap_close_reason)ret;
	if ((ret = get_uint(v[F_BYTES_C2U], &frame_keys[F_BYTES_C2U], UINT64_MAX,
			    &f->conn.bytes_c2u, why)) ||
	    (ret = get_uint(v[F_BYTES_U2C], &frame_keys[F_BYTES_U2C], UINT64_MAX,
			    &f->conn.bytes_u2c, why)) ||
	    (ret = get_uint(v[F_OPEN_TS], &frame_keys[F_OPEN_TS], UINT64_MAX, &f->conn.open_ts_ns,
			    why)))
		return ret;
	return 0;
}

static int decode_tcp(const msgpack_object **v, struct tap_frame *f, const char **why)
{
	static const char *const dirs[] = { "c2u", "u2c" };
	int ret;

	ret = get_name(v[F_DIR], &frame_keys[F_DIR], dirs, 2, "dir: not c2u or u2c", why);
	if (ret < 0)
		return ret;
	f->tcp.dir = (enum tap_dir)ret;
	if ((ret = get_uint(v[F_OFF], &frame_keys[F_OFF], UINT64_MAX, &f->tcp.off, why)) ||
	    (ret = get_bin(v[F_DATA], &frame_keys[F_DATA], &f->tcp.data, why)))
		return ret;
	return 0;
}

static int decode_frame(struct tap_decoder *dec, const msgpack_object *root, struct tap_frame *f,
			const char **why)
{
	static const char *const types[] = {
		[TAP_FRAME_CONN] = "conn",
		[TAP_FRAME_HTTP] = "http",
		[TAP_FRAME_TCP] = "tcp",
		[TAP_FRAME_TLS] = "tls",
	};
	static const char *const listeners[] = { "inbound", "outbound" };
	const msgpack_object *v[F_NKEYS];
	char want[TAP_FRAME_ID_LEN];
	struct tap_str id;
	uint64_t u;
	int ret;

	if (root->type != MSGPACK_OBJECT_MAP) {
		*why = "frame: not a map";
		return -EBADMSG;
	}
	ret = collect(root, frame_keys, F_NKEYS, v, why);
	if (ret)
		return ret;
	/* The version first: a newer frame may mean something else by the other keys. */
	if ((ret = get_uint(v[F_V], &frame_keys[F_V], UINT64_MAX, &u, why)))
		return ret;
	if (u > TAP_FORMAT_VERSION) {
		*why = "v: frame format newer than this reader's version 1";
		return -EBADMSG;
	}
	if (u == 0) {
		*why = "v: 0 is not a format version";
		return -EBADMSG;
	}
	f->version = (uint32_t)u;
	ret = get_name(v[F_TYPE], &frame_keys[F_TYPE], types, NELEM(types),
		       "type: not conn, http, tcp or tls", why);
	if (ret < 0)
		return ret;
	f->type = (enum tap_frame_type)ret;
	if ((ret = get_uint(v[F_GEN], &frame_keys[F_GEN], UINT64_MAX, &f->gen, why)) ||
	    (ret = get_uint(v[F_WORKER], &frame_keys[F_WORKER], UINT32_MAX, &u, why)))
		return ret;
	f->worker = (uint32_t)u;
	if ((ret = get_uint(v[F_SEQ], &frame_keys[F_SEQ], UINT64_MAX, &f->seq, why)) ||
	    (ret = get_uint(v[F_CONN_ID], &frame_keys[F_CONN_ID], UINT64_MAX, &f->conn_id, why)) ||
	    (ret = get_uint(v[F_TS], &frame_keys[F_TS], UINT64_MAX, &f->ts_ns, why)) ||
	    (ret = get_str(v[F_ID], &frame_keys[F_ID], &id, why)))
		return ret;
	/* Readers de-duplicate by id: it must say what gen, worker and seq say. */
	if (id.len != format_id(f, want) || memcmp(id.p, want, id.len) != 0) {
		*why = "id: not <gen>-<worker>-<seq> of this frame";
		return -EBADMSG;
	}
	ret = get_name(v[F_LISTENER], &frame_keys[F_LISTENER], listeners, 2,
		       "listener: not inbound or outbound", why);
	if (ret < 0)
		return ret;
	f->listener = (enum tap_listener)ret;
	if ((ret = get_str(v[F_CLIENT], &frame_keys[F_CLIENT], &f->client, why)) ||
	    (ret = get_str(v[F_DST], &frame_keys[F_DST], &f->dst, why)) ||
	    (ret = get_str(v[F_UPSTREAM], &frame_keys[F_UPSTREAM], &f->upstream, why)))
		return ret;

	switch (f->type) {
	case TAP_FRAME_CONN:
		return decode_conn(v, f, why);
	case TAP_FRAME_HTTP:
		return decode_http(dec, v, f, why);
	case TAP_FRAME_TCP:
		return decode_tcp(v, f, why);
	case TAP_FRAME_TLS:
		return decode_tls(v, f, why);
	}
	return 0;
}

int tap_frame_decode(struct tap_decoder *dec, const void *buf, size_t len, size_t *used,
		     struct tap_frame *f, const char **why)
{
	const char *unused_why;
	size_t end = 0, off = 0;
	int ret;

	if (!why)
		why = &unused_why;
	*why = NULL;
	memset(f, 0, sizeof(*f));
	ret = scan_object(buf, len, &end, why);
	if (ret == -EAGAIN)
		*why = "truncated: the buffer ends inside the frame";
	if (ret)
		return ret;
	switch (msgpack_unpack_next(&dec->up, buf, end, &off)) {
	case MSGPACK_UNPACK_SUCCESS:
	case MSGPACK_UNPACK_EXTRA_BYTES:
		break;
	case MSGPACK_UNPACK_CONTINUE:
		*why = "truncated: the buffer ends inside the frame";
		return -EAGAIN;
	case MSGPACK_UNPACK_NOMEM_ERROR:
		*why = "out of memory";
		return -ENOMEM;
	default:
		*why = "not msgpack";
		return -EBADMSG;
	}
	if (off != end) {
		/* scan_object() and msgpack-c must agree on where the object ends. */
		*why = "not msgpack: inconsistent object length";
		return -EBADMSG;
	}
	ret = decode_frame(dec, &dec->up.data, f, why);
	if (ret) {
		memset(f, 0, sizeof(*f));
		return ret;
	}
	*used = end;
	return 0;
}

/* Reads a str header at p[*i]; returns its length or -1 when p[*i] is not a str. */
static int64_t str_at(const uint8_t *p, size_t len, size_t *i)
{
	uint8_t b = p[*i];
	unsigned n;
	uint64_t v;

	if (b >= 0xa0 && b <= 0xbf) {
		v = b & 0x1f;
		n = 0;
	} else if (b >= 0xd9 && b <= 0xdb) {
		n = 1u << (b - 0xd9);
		if (len - *i - 1 < n)
			return -1;
		v = be_read(p + *i + 1, n);
	} else {
		return -1;
	}
	*i += 1 + n;
	return v <= len - *i ? (int64_t)v : -1;
}

int tap_frame_check(const void *buf, size_t len, const char **why)
{
	const uint8_t *p = buf;
	const char *dummy;
	bool has_v = false, has_type = false, has_id = false;
	uint64_t n;
	size_t vend, i;
	int ret;

	if (!why)
		why = &dummy;
	*why = "not a frame";
	if (len == 0)
		return -EBADMSG;
	/* One walk: the map's header, then each key and value checked and skipped in turn. */
	if (p[0] >= 0x80 && p[0] <= 0x8f) {
		n = p[0] & 0x0f;
		i = 1;
	} else if (p[0] == 0xde || p[0] == 0xdf) {
		unsigned nb = 2u << (p[0] - 0xde);

		if (len - 1 < nb)
			goto err_truncated;
		n = be_read(p + 1, nb);
		i = 1 + nb;
	} else {
		*why = p[0] == 0xc1 ? "not msgpack: byte 0xc1" : "a frame is a msgpack map";
		return -EBADMSG;
	}
	while (n--) {
		size_t at = i;
		int64_t klen;
		const char *key = "";

		if (i >= len)
			goto err_truncated;
		klen = str_at(p, len, &i);
		if (klen < 0) {
			/* A key that is not a string is no key of ours: skip it, as the decoder does. */
			i = at;
			ret = scan_object(p + i, len - i, &vend, why);
			if (ret < 0)
				goto err_scan;
			i += vend;
			klen = 0;
		} else {
			key = (const char *)p + i;
			i += (size_t)klen;
		}
		if (i >= len)
			goto err_truncated;
		if (klen == 1 && key[0] == 'v') {
			uint64_t v = p[i];

			/* Any unsigned encoding of 1 (fixint, or uint 8..64). */
			if (p[i] >= 0xcc && p[i] <= 0xcf && len - i - 1 >= 1u << (p[i] - 0xcc))
				v = be_read(p + i + 1, 1u << (p[i] - 0xcc));
			else if (p[i] > 0x7f)
				v = 0;
			if (v != TAP_FORMAT_VERSION) {
				*why = "key v: not format version 1";
				return -EBADMSG;
			}
			has_v = true;
		} else if (klen == 4 && memcmp(key, "type", 4) == 0) {
			size_t j = i;
			int64_t tlen = str_at(p, len, &j);

			if (tlen < 0) {
				*why = "key type: not a string";
				return -EBADMSG;
			}
			for (int t = TAP_FRAME_CONN; t <= TAP_FRAME_TLS; t++) {
				const char *name = tap_frame_type_name((enum tap_frame_type)t);

				if ((size_t)tlen == strlen(name) &&
				    memcmp(p + j, name, (size_t)tlen) == 0)
					has_type = true;
			}
			if (!has_type) {
				*why = "key type: unknown frame type";
				return -EBADMSG;
			}
		} else if (klen == 2 && memcmp(key, "id", 2) == 0) {
			size_t j = i;

			if (str_at(p, len, &j) <= 0) {
				*why = "key id: not a string";
				return -EBADMSG;
			}
			has_id = true;
		}
		ret = scan_object(p + i, len - i, &vend, why);
		if (ret < 0)
			goto err_scan;
		i += vend;
	}
	if (i != len) {
		*why = "bytes after the frame";
		return -EBADMSG;
	}
	if (!has_v || !has_type || !has_id) {
		*why = !has_v ? "missing key v" : !has_type ? "missing key type" : "missing key id";
		return -EBADMSG;
	}
	return 0;

err_scan:
	/* scan_object names what is wrong; running out of bytes is a truncated frame. */
	if (ret != -EAGAIN)
		return -EBADMSG;
err_truncated:
	*why = "truncated frame";
	return -EBADMSG;
}
