/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of capture/src/frame.c: the msgpack encoder and decoder of capture
 * frames. Round trips of every field, the decoder against every truncation,
 * corruption, missing and mistyped keys, inputs against a guard page, and the
 * encoding read back by an independent decoder (Debian's python3-msgpack).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <msgpack.h>

#include "tap/frame.h"
#include "tap/sniff.h"
#include "th.h"

#define S(lit) ((struct tap_str){ lit, sizeof(lit) - 1 })

/* Storage for the sample frames' big strings and header arrays; alive for the whole process. */
static char *big_text, *big_body;
static struct tap_header many_headers[3000];
static char header_names[3000][16];

static const struct tap_header get_headers[] = {
	{ S("Host"), S("example.com") },
	{ S("User-Agent"), S("curl/8.0") },
	{ S("Accept"), S("*/*") },
	{ S("Cookie"), S("a=1") },
	{ S("Cookie"), S("b=2") },
	{ S("X-Empty"), { NULL, 0 } },
	{ S("X-Bytes"), S("\xff\xfe\x00z") },
	{ S("Connection"), S("keep-alive") },
};

static const struct tap_header resp_headers[] = {
	{ S("Content-Type"), S("text/plain") },
	{ S("Set-Cookie"), S("x=1") },
	{ S("Set-Cookie"), S("y=2") },
	{ S("Content-Length"), S("5") },
};

static void common(struct tap_frame *f, enum tap_frame_type type)
{
	memset(f, 0, sizeof(*f));
	f->type = type;
	f->version = TAP_FORMAT_VERSION;
	f->gen = 0x0123456789abcdefull;
	f->worker = 3;
	f->seq = 42;
	f->conn_id = (3ull << 40) | 7;
	f->ts_ns = 1700000000123456789ull;
	f->listener = TAP_INBOUND;
	f->client = S("10.0.0.1:50000");
	f->dst = S("10.0.0.2:8080");
	f->upstream = S("127.0.0.1:8080");
}

static void init_big(void)
{
	if (big_text)
		return;
	big_text = malloc(70000);
	big_body = malloc(70000);
	for (size_t i = 0; i < 70000; i++) {
		big_text[i] = (char)('a' + i % 26);
		big_body[i] = (char)(i * 7);
	}
	for (unsigned i = 0; i < 3000; i++) {
		/* Many repeated names, in a fixed order. */
		snprintf(header_names[i], sizeof(header_names[i]), "X-H%u", i % 10);
		many_headers[i].name.p = header_names[i];
		many_headers[i].name.len = (uint32_t)strlen(header_names[i]);
		many_headers[i].value.p = big_text + i;
		many_headers[i].value.len = i % 40;
	}
}

enum {
	SAMPLE_CONN_OPEN,
	SAMPLE_CONN_CLOSE,
	SAMPLE_HTTP,
	SAMPLE_HTTP_NO_RESP,
	SAMPLE_HTTP_ALL_FLAGS,
	SAMPLE_HTTP_EMPTY,
	SAMPLE_HTTP_BIG,
	SAMPLE_TCP,
	SAMPLE_TCP_EMPTY,
	SAMPLE_TCP_BIG,
	SAMPLE_TLS,
	SAMPLE_TLS_PASSTHROUGH,
	SAMPLE_TLS_FAILED,
	SAMPLE_HTTP_TLS,
	SAMPLE_MAX_INTS,
	SAMPLE_STR_EDGES,
	NSAMPLES
};

/* Small samples: every truncation point and byte flip is tried on these. */
static bool sample_is_small(int i)
{
	return i != SAMPLE_HTTP_BIG && i != SAMPLE_TCP_BIG && i != SAMPLE_STR_EDGES;
}

static void sample(int i, struct tap_frame *f)
{
	init_big();
	switch (i) {
	case SAMPLE_CONN_OPEN:
		common(f, TAP_FRAME_CONN);
		f->conn.event = TAP_CONN_OPEN;
		break;
	case SAMPLE_CONN_CLOSE:
		common(f, TAP_FRAME_CONN);
		f->listener = TAP_OUTBOUND;
		f->client = S("[::1]:50000");
		f->conn.event = TAP_CONN_CLOSE;
		f->conn.proto = TAP_PROTO_TLS;
		f->conn.reason = TAP_CLOSE_IDLE_TIMEOUT;
		f->conn.bytes_c2u = 517;
		f->conn.bytes_u2c = 1ull << 33;
		f->conn.open_ts_ns = 1700000000000000000ull;
		break;
	case SAMPLE_HTTP:
		common(f, TAP_FRAME_HTTP);
		f->http.pair = 1;
		f->http.req = (struct tap_http_msg){
			.method = S("GET"),
			.target = S("/index.html?q=1"),
			.version_major = 1,
			.version_minor = 1,
			.headers = get_headers,
			.nheaders = 8,
			.body = S("hello"),
			.body_size = 5,
		};
		f->http.has_resp = true;
		f->http.resp = (struct tap_http_msg){
			.status = 200,
			.reason = S("OK"),
			.version_major = 1,
			.version_minor = 0,
			.headers = resp_headers,
			.nheaders = 4,
			.body = S("world"),
			.body_size = 5,
			.informational = { 100, 103 },
			.ninformational = 2,
		};
		f->http.req_start = 1;
		f->http.req_end = 2;
		f->http.resp_start = 3;
		f->http.resp_end = 4;
		f->http.flags = TAP_HTTP_F_HEAD;
		break;
	case SAMPLE_HTTP_NO_RESP:
		sample(SAMPLE_HTTP, f);
		f->http.has_resp = false;
		memset(&f->http.resp, 0, sizeof(f->http.resp));
		f->http.resp_start = f->http.resp_end =
			0; /* not in the format without a response */
		f->http.req.body_truncated = true;
		f->http.req.body_size = 1ull << 40;
		f->http.req.chunked = true;
		f->http.flags = TAP_HTTP_F_NO_RESPONSE;
		break;
	case SAMPLE_HTTP_ALL_FLAGS:
		sample(SAMPLE_HTTP, f);
		f->http.flags = TAP_HTTP_F_ALL;
		f->http.desync_off = 12345;
		f->http.desync_dir = TAP_U2C;
		f->http.resp.informational[2] = 102;
		f->http.resp.informational[3] = 199;
		f->http.resp.ninformational = 4;
		f->http.resp.body_truncated = true;
		f->http.resp.chunked = true;
		f->http.resp.body_size = 100000;
		break;
	case SAMPLE_HTTP_EMPTY:
		common(f, TAP_FRAME_HTTP);
		f->client = f->dst = f->upstream = (struct tap_str){ NULL, 0 };
		f->http.has_resp = true; /* every string, array and body empty; integers 0 */
		break;
	case SAMPLE_HTTP_BIG:
		sample(SAMPLE_HTTP, f);
		f->http.req.target = (struct tap_str){ big_text, 70000 };
		f->http.req.headers = many_headers;
		f->http.req.nheaders = 3000;
		f->http.resp.headers = many_headers + 1000;
		f->http.resp.nheaders = 2000;
		f->http.resp.body = (struct tap_str){ big_body, 70000 };
		f->http.resp.body_size = 70000;
		break;
	case SAMPLE_TCP:
		common(f, TAP_FRAME_TCP);
		f->tcp.dir = TAP_U2C;
		f->tcp.off = 1ull << 36;
		f->tcp.data = S("\0\1\2binary\xff");
		break;
	case SAMPLE_TCP_EMPTY:
		common(f, TAP_FRAME_TCP);
		f->tcp.dir = TAP_C2U;
		break;
	case SAMPLE_TCP_BIG:
		common(f, TAP_FRAME_TCP);
		f->tcp.data = (struct tap_str){ big_body, 70000 };
		break;
	case SAMPLE_TLS:
		common(f, TAP_FRAME_TLS);
		f->tls.event = TAP_TLS_UNWRAPPED;
		f->tls.side = TAP_TLS_SIDE_CLIENT;
		f->tls.sni = S("api.example.com");
		f->tls.alpn_offered[0] = S("h2");
		f->tls.alpn_offered[1] = S("http/1.1");
		f->tls.nalpn_offered = 2;
		f->tls.versions_offered = TAP_TLS_V12 | TAP_TLS_V13;
		f->tls.version = TAP_TLS_V13;
		f->tls.cipher = S("TLS_AES_128_GCM_SHA256");
		f->tls.alpn = S("http/1.1");
		f->tls.upstream_verify = S("ok");
		break;
	case SAMPLE_TLS_PASSTHROUGH:
		/* No SNI, no ALPN, every version; eight ALPN names elsewhere would be the most. */
		common(f, TAP_FRAME_TLS);
		f->tls.event = TAP_TLS_PASSTHROUGH;
		f->tls.versions_offered = TAP_TLS_V10 | TAP_TLS_V11 | TAP_TLS_V12 | TAP_TLS_V13;
		f->tls.reason = S("h2 only");
		break;
	case SAMPLE_TLS_FAILED:
		common(f, TAP_FRAME_TLS);
		f->listener = TAP_OUTBOUND;
		f->tls.event = TAP_TLS_FAILED;
		f->tls.side = TAP_TLS_SIDE_UPSTREAM;
		f->tls.sni = S("192.0.2.7");
		for (int k = 0; k < TAP_TLS_ALPN_MAX; k++)
			f->tls.alpn_offered[k] = (struct tap_str){ big_text + k, (uint32_t)k + 1 };
		f->tls.nalpn_offered = TAP_TLS_ALPN_MAX;
		f->tls.versions_offered = TAP_TLS_V12;
		f->tls.reason = S("certificate has expired");
		break;
	case SAMPLE_HTTP_TLS:
		sample(SAMPLE_HTTP, f);
		f->http.has_tls = true;
		f->http.tls.version = TAP_TLS_V12;
		f->http.tls.cipher = S("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
		f->http.tls.sni = S("api.example.com");
		break;
	case SAMPLE_MAX_INTS:
		sample(SAMPLE_HTTP_ALL_FLAGS, f);
		f->gen = f->seq = f->conn_id = f->ts_ns = UINT64_MAX;
		f->worker = UINT32_MAX;
		f->http.pair = UINT64_MAX;
		f->http.req_start = f->http.req_end = f->http.resp_start = f->http.resp_end =
			UINT64_MAX;
		f->http.desync_off = UINT64_MAX;
		f->http.req.body_size = f->http.resp.body_size = UINT64_MAX;
		f->http.resp.status = UINT16_MAX;
		f->http.req.version_major = f->http.req.version_minor = 255;
		f->http.resp.informational[0] = UINT16_MAX;
		break;
	case SAMPLE_STR_EDGES:
		/* Lengths at each msgpack str/bin header boundary: fix/8, 8/16, 16/32. */
		sample(SAMPLE_HTTP, f);
		f->client = (struct tap_str){ big_text, 31 };
		f->dst = (struct tap_str){ big_text, 32 };
		f->upstream = (struct tap_str){ big_text, 255 };
		f->http.req.method = (struct tap_str){ big_text, 256 };
		f->http.req.target = (struct tap_str){ big_text, 65535 };
		f->http.resp.reason = (struct tap_str){ big_text, 65536 };
		f->http.req.body = (struct tap_str){ big_body, 255 };
		f->http.req.body_size = 255;
		f->http.resp.body = (struct tap_str){ big_body, 65536 };
		f->http.resp.body_size = 65536;
		break;
	}
}

static bool str_eq(const struct tap_str *a, const struct tap_str *b)
{
	return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static void expect_msg_eq(const char *what, const struct tap_http_msg *a,
			  const struct tap_http_msg *b)
{
	cr_expect(str_eq(&a->method, &b->method), "%s.method", what);
	cr_expect(str_eq(&a->target, &b->target), "%s.target", what);
	cr_expect_eq(a->status, b->status, "%s.status", what);
	cr_expect(str_eq(&a->reason, &b->reason), "%s.reason", what);
	cr_expect_eq(a->version_major, b->version_major, "%s.version", what);
	cr_expect_eq(a->version_minor, b->version_minor, "%s.version", what);
	cr_assert_eq(a->nheaders, b->nheaders, "%s.nheaders", what);
	for (uint32_t i = 0; i < a->nheaders; i++) {
		cr_expect(str_eq(&a->headers[i].name, &b->headers[i].name), "%s header %u", what,
			  i);
		cr_expect(str_eq(&a->headers[i].value, &b->headers[i].value), "%s header %u", what,
			  i);
	}
	cr_expect(str_eq(&a->body, &b->body), "%s.body", what);
	cr_expect_eq(a->body_size, b->body_size, "%s.body_size", what);
	cr_expect_eq(a->body_truncated, b->body_truncated, "%s.body_truncated", what);
	cr_expect_eq(a->chunked, b->chunked, "%s.chunked", what);
	cr_assert_eq(a->ninformational, b->ninformational, "%s.informational", what);
	for (unsigned i = 0; i < a->ninformational; i++)
		cr_expect_eq(a->informational[i], b->informational[i], "%s.informational", what);
}

/* Every field of the model, as the format carries it for the frame's type. */
static void expect_frame_eq(const struct tap_frame *a, const struct tap_frame *b)
{
	cr_assert_eq(a->type, b->type);
	cr_expect_eq(a->gen, b->gen);
	cr_expect_eq(a->worker, b->worker);
	cr_expect_eq(a->seq, b->seq);
	cr_expect_eq(a->conn_id, b->conn_id);
	cr_expect_eq(a->ts_ns, b->ts_ns);
	cr_expect_eq(a->listener, b->listener);
	cr_expect(str_eq(&a->client, &b->client), "client");
	cr_expect(str_eq(&a->dst, &b->dst), "dst");
	cr_expect(str_eq(&a->upstream, &b->upstream), "upstream");
	switch (a->type) {
	case TAP_FRAME_CONN:
		cr_expect_eq(a->conn.event, b->conn.event);
		cr_expect_eq(a->conn.proto, b->conn.proto);
		cr_expect_eq(a->conn.reason, b->conn.reason);
		cr_expect_eq(a->conn.bytes_c2u, b->conn.bytes_c2u);
		cr_expect_eq(a->conn.bytes_u2c, b->conn.bytes_u2c);
		cr_expect_eq(a->conn.open_ts_ns, b->conn.open_ts_ns);
		break;
	case TAP_FRAME_HTTP:
		cr_expect_eq(a->http.pair, b->http.pair);
		expect_msg_eq("req", &a->http.req, &b->http.req);
		cr_assert_eq(a->http.has_resp, b->http.has_resp);
		if (a->http.has_resp)
			expect_msg_eq("resp", &a->http.resp, &b->http.resp);
		cr_expect_eq(a->http.req_start, b->http.req_start);
		cr_expect_eq(a->http.req_end, b->http.req_end);
		cr_expect_eq(a->http.resp_start, b->http.resp_start);
		cr_expect_eq(a->http.resp_end, b->http.resp_end);
		cr_expect_eq(a->http.flags, b->http.flags);
		cr_expect_eq(a->http.desync_off, b->http.desync_off);
		cr_expect_eq(a->http.desync_dir, b->http.desync_dir);
		cr_assert_eq(a->http.has_tls, b->http.has_tls);
		cr_expect_eq(a->http.tls.version, b->http.tls.version);
		cr_expect(str_eq(&a->http.tls.cipher, &b->http.tls.cipher), "http.tls.cipher");
		cr_expect(str_eq(&a->http.tls.sni, &b->http.tls.sni), "http.tls.sni");
		break;
	case TAP_FRAME_TCP:
		cr_expect_eq(a->tcp.dir, b->tcp.dir);
		cr_expect_eq(a->tcp.off, b->tcp.off);
		cr_expect(str_eq(&a->tcp.data, &b->tcp.data), "tcp.data");
		break;
	case TAP_FRAME_TLS:
		cr_expect_eq(a->tls.event, b->tls.event);
		cr_expect_eq(a->tls.side, b->tls.side);
		cr_expect(str_eq(&a->tls.sni, &b->tls.sni), "tls.sni");
		cr_assert_eq(a->tls.nalpn_offered, b->tls.nalpn_offered);
		for (unsigned i = 0; i < a->tls.nalpn_offered; i++)
			cr_expect(str_eq(&a->tls.alpn_offered[i], &b->tls.alpn_offered[i]),
				  "tls.alpn_offered %u", i);
		cr_expect_eq(a->tls.versions_offered, b->tls.versions_offered);
		cr_expect(str_eq(&a->tls.reason, &b->tls.reason), "tls.reason");
		cr_expect_eq(a->tls.version, b->tls.version);
		cr_expect(str_eq(&a->tls.cipher, &b->tls.cipher), "tls.cipher");
		cr_expect(str_eq(&a->tls.alpn, &b->tls.alpn), "tls.alpn");
		cr_expect(str_eq(&a->tls.upstream_verify, &b->tls.upstream_verify),
			  "tls.upstream_verify");
		break;
	}
}

/* Encodes <f> into a new buffer of tap_frame_encoded_max() bytes; *<len> gets the size. */
static uint8_t *encode(const struct tap_frame *f, size_t *len)
{
	size_t max = tap_frame_encoded_max(f);
	uint8_t *buf = malloc(max);
	ssize_t n;

	cr_assert_not_null(buf);
	n = tap_frame_encode(f, buf, max);
	cr_assert_gt(n, 0, "encode: %zd", n);
	cr_assert_leq((size_t)n, max, "encoded %zd bytes, more than the bound %zu", n, max);
	*len = (size_t)n;
	return buf;
}

/* A buffer whose end touches a PROT_NONE page: reading one byte past <len> faults. */
struct guard {
	uint8_t *map;
	size_t maplen;
	uint8_t *end; /* the first byte of the guard page */
};

static void guard_init(struct guard *g, size_t cap)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	g->maplen = (cap + pg - 1) / pg * pg + pg;
	g->map = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(g->map, MAP_FAILED);
	g->end = g->map + g->maplen - pg;
	cr_assert_eq(mprotect(g->end, pg, PROT_NONE), 0);
}

/* Copies <len> bytes so that they end right before the guard page; returns where they start. */
static const uint8_t *guard_put(struct guard *g, const void *src, size_t len)
{
	memcpy(g->end - len, src, len);
	return g->end - len;
}

static void guard_fini(struct guard *g)
{
	munmap(g->map, g->maplen);
}

Test(tap_frame, names)
{
	cr_expect_str_eq(tap_frame_type_name(TAP_FRAME_CONN), "conn");
	cr_expect_str_eq(tap_frame_type_name(TAP_FRAME_HTTP), "http");
	cr_expect_str_eq(tap_frame_type_name(TAP_FRAME_TCP), "tcp");
	cr_expect_str_eq(tap_frame_type_name(TAP_FRAME_TLS), "tls");
	cr_expect_str_eq(tap_frame_type_name((enum tap_frame_type)99), "invalid");
	cr_expect_str_eq(tap_dir_name(TAP_C2U), "c2u");
	cr_expect_str_eq(tap_dir_name(TAP_U2C), "u2c");
	cr_expect_str_eq(tap_listener_name(TAP_INBOUND), "inbound");
	cr_expect_str_eq(tap_listener_name(TAP_OUTBOUND), "outbound");
	cr_expect_str_eq(tap_close_reason_name(TAP_CLOSE_EOF), "eof");
	cr_expect_str_eq(tap_close_reason_name(TAP_CLOSE_RESET), "reset");
	cr_expect_str_eq(tap_close_reason_name(TAP_CLOSE_IDLE_TIMEOUT), "idle_timeout");
	cr_expect_str_eq(tap_close_reason_name(TAP_CLOSE_CONNECT_FAILED), "connect_failed");
	cr_expect_str_eq(tap_close_reason_name(TAP_CLOSE_CONNECT_TIMEOUT), "connect_timeout");
	cr_expect_str_eq(tap_close_reason_name(TAP_CLOSE_DRAIN), "drain");
	cr_expect_str_eq(tap_close_reason_name(TAP_CLOSE_ERROR), "error");
	cr_expect_str_eq(tap_close_reason_name((enum tap_close_reason)0), "invalid");
	cr_expect_str_eq(tap_tls_event_name(TAP_TLS_PASSTHROUGH), "passthrough");
	cr_expect_str_eq(tap_tls_event_name(TAP_TLS_UNWRAPPED), "unwrapped");
	cr_expect_str_eq(tap_tls_event_name(TAP_TLS_FAILED), "failed");
	cr_expect_str_eq(tap_tls_event_name((enum tap_tls_event)0), "invalid");
	cr_expect_str_eq(tap_tls_side_name(TAP_TLS_SIDE_CLIENT), "client");
	cr_expect_str_eq(tap_tls_side_name(TAP_TLS_SIDE_UPSTREAM), "upstream");
	cr_expect_str_eq(tap_tls_side_name((enum tap_tls_side)2), "invalid");
	cr_expect_str_eq(tap_tls_version_name(TAP_TLS_V10), "TLS1.0");
	cr_expect_str_eq(tap_tls_version_name(TAP_TLS_V13), "TLS1.3");
	cr_expect_str_eq(tap_tls_version_name(0), "invalid");
	cr_expect_str_eq(tap_tls_version_name(TAP_TLS_V12 | TAP_TLS_V13), "invalid");
	cr_expect_str_eq(tap_tls_version_name(1u << 4), "invalid");
}

Test(tap_frame, id_is_gen_hex_worker_seq)
{
	struct tap_frame f;
	char buf[TAP_FRAME_ID_LEN], small[8];

	common(&f, TAP_FRAME_TCP);
	cr_assert_eq(tap_frame_id(&f, buf, sizeof(buf)), buf);
	cr_expect_str_eq(buf, "0123456789abcdef-3-42");
	f.gen = 0;
	f.worker = UINT32_MAX;
	f.seq = UINT64_MAX;
	cr_expect_str_eq(tap_frame_id(&f, buf, sizeof(buf)),
			 "0000000000000000-4294967295-18446744073709551615");
	cr_expect_str_eq(tap_frame_id(&f, small, sizeof(small)), "0000000", "cut, NUL-terminated");
}

Test(tap_frame, round_trip_of_every_sample)
{
	struct tap_decoder *dec = tap_decoder_new();

	cr_assert_not_null(dec);
	for (int i = 0; i < NSAMPLES; i++) {
		struct tap_frame f, g;
		const char *why = "unset";
		size_t len, used = 0;
		uint8_t *buf;

		sample(i, &f);
		buf = encode(&f, &len);
		cr_assert_eq(tap_frame_decode(dec, buf, len, &used, &g, &why), 0, "sample %d: %s",
			     i, why);
		cr_expect_null(why, "no reason on success");
		cr_assert_eq(used, len, "sample %d", i);
		cr_expect_eq(g.version, 1);
		expect_frame_eq(&f, &g);
		free(buf);
	}
	tap_decoder_free(dec);
	tap_decoder_free(NULL);
}

Test(tap_frame, every_close_reason_and_proto_round_trips)
{
	struct tap_decoder *dec = tap_decoder_new();

	for (int reason = TAP_CLOSE_EOF; reason <= TAP_CLOSE_ERROR; reason++) {
		for (int proto = TAP_PROTO_UNKNOWN; proto <= TAP_PROTO_OTHER; proto++) {
			struct tap_frame f, g;
			size_t len, used;
			uint8_t *buf;

			sample(SAMPLE_CONN_CLOSE, &f);
			f.conn.reason = (enum tap_close_reason)reason;
			f.conn.proto = (uint8_t)proto;
			f.listener = reason % 2 ? TAP_INBOUND : TAP_OUTBOUND;
			buf = encode(&f, &len);
			cr_assert_eq(tap_frame_decode(dec, buf, len, &used, &g, NULL), 0);
			expect_frame_eq(&f, &g);
			free(buf);
		}
	}
	for (uint32_t flags = 0; flags <= TAP_HTTP_F_ALL; flags++) {
		struct tap_frame f, g;
		size_t len, used;
		uint8_t *buf;

		sample(SAMPLE_HTTP, &f);
		f.http.flags = flags;
		f.http.desync_dir = TAP_C2U;
		f.http.desync_off = flags & TAP_HTTP_F_DESYNC ? 77 : 0;
		buf = encode(&f, &len);
		cr_assert_eq(tap_frame_decode(dec, buf, len, &used, &g, NULL), 0, "flags %#x",
			     flags);
		expect_frame_eq(&f, &g);
		free(buf);
	}
	tap_decoder_free(dec);
}

Test(tap_frame, decoded_strings_point_into_the_input)
{
	struct tap_decoder *dec = tap_decoder_new();
	struct tap_frame f, g;
	size_t len, used;
	uint8_t *buf;

	sample(SAMPLE_HTTP, &f);
	buf = encode(&f, &len);
	cr_assert_eq(tap_frame_decode(dec, buf, len, &used, &g, NULL), 0);
	/* msgpack-c references str and bin in the input: the frame borrows the caller's buffer. */
	cr_expect((const uint8_t *)g.client.p > buf && (const uint8_t *)g.client.p < buf + len);
	cr_expect((const uint8_t *)g.http.req.headers[0].name.p > buf &&
		  (const uint8_t *)g.http.req.headers[0].name.p < buf + len);
	cr_expect((const uint8_t *)g.http.resp.body.p > buf &&
		  (const uint8_t *)g.http.resp.body.p < buf + len);
	free(buf);
	tap_decoder_free(dec);
}

Test(tap_frame, encode_too_small_buffer_is_enospc)
{
	for (int i = 0; i < NSAMPLES; i++) {
		struct tap_frame f;
		size_t len, step;
		uint8_t *buf, *out;

		sample(i, &f);
		buf = encode(&f, &len);
		out = malloc(len);
		step = sample_is_small(i) ? 1 : 97;
		for (size_t cap = 0; cap < len; cap += step)
			cr_assert_eq(tap_frame_encode(&f, out, cap), -ENOSPC, "sample %d cap %zu",
				     i, cap);
		cr_assert_eq(tap_frame_encode(&f, out, len - 1), -ENOSPC);
		cr_assert_eq(tap_frame_encode(&f, out, len), (ssize_t)len, "exactly enough room");
		cr_assert_eq(memcmp(out, buf, len), 0);
		free(out);
		free(buf);
	}
}

Test(tap_frame, encode_rejects_frames_outside_the_model)
{
	struct tap_header bad_hdr = { { NULL, 3 }, S("v") };
	uint8_t buf[4096];
	struct tap_frame f;

	sample(SAMPLE_TCP, &f);
	f.type = (enum tap_frame_type)0;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "type 0");
	f.type = (enum tap_frame_type)5;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "type 5");
	sample(SAMPLE_TCP, &f);
	f.listener = (enum tap_listener)2;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "listener");
	sample(SAMPLE_TCP, &f);
	f.tcp.dir = (enum tap_dir)2;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "dir");
	sample(SAMPLE_TCP, &f);
	f.client = (struct tap_str){ NULL, 4 };
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "NULL with a length");
	sample(SAMPLE_CONN_CLOSE, &f);
	f.conn.event = (enum tap_conn_event)0;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "event");
	sample(SAMPLE_CONN_CLOSE, &f);
	f.conn.reason = (enum tap_close_reason)0;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "reason 0");
	f.conn.reason = (enum tap_close_reason)(TAP_CLOSE_ERROR + 1);
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "reason past the end");
	sample(SAMPLE_CONN_CLOSE, &f);
	f.conn.proto = TAP_PROTO_OTHER + 1;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "proto");
	sample(SAMPLE_HTTP, &f);
	f.http.flags = TAP_HTTP_F_ALL + 1;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "unknown flag");
	sample(SAMPLE_HTTP, &f);
	f.http.flags = TAP_HTTP_F_DESYNC;
	f.http.desync_dir = (enum tap_dir)7;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "desync_dir");
	sample(SAMPLE_HTTP, &f);
	f.http.resp.ninformational = TAP_INFORMATIONAL_MAX + 1;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "informational");
	sample(SAMPLE_HTTP, &f);
	f.http.req.body_size = 4;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "body longer than its size");
	sample(SAMPLE_HTTP, &f);
	f.http.req.headers = NULL;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "headers NULL");
	sample(SAMPLE_HTTP, &f);
	f.http.req.headers = &bad_hdr;
	f.http.req.nheaders = 1;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "header name NULL");
	sample(SAMPLE_TLS, &f);
	f.tls.event = (enum tap_tls_event)0;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "tls event");
	sample(SAMPLE_TLS, &f);
	f.tls.side = (enum tap_tls_side)2;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "tls side");
	sample(SAMPLE_TLS, &f);
	f.tls.nalpn_offered = TAP_TLS_ALPN_MAX + 1;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "alpn_offered");
	sample(SAMPLE_TLS, &f);
	f.tls.versions_offered = 1u << 4;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "versions_offered");
	sample(SAMPLE_TLS, &f);
	f.tls.version = TAP_TLS_V12 | TAP_TLS_V13;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "two versions");
	f.tls.version = 0;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "no version");
	sample(SAMPLE_TLS, &f);
	f.tls.cipher = (struct tap_str){ NULL, 3 };
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "cipher NULL");
	sample(SAMPLE_TLS_FAILED, &f);
	f.tls.version = 0; /* not in a failed frame */
	cr_expect_gt(tap_frame_encode(&f, buf, sizeof(buf)), 0);
	f.tls.reason = (struct tap_str){ NULL, 3 };
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "reason NULL");
	sample(SAMPLE_HTTP_TLS, &f);
	f.http.tls.version = 0;
	cr_expect_eq(tap_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "http tls without version");
	f.http.has_tls = false;
	cr_expect_gt(tap_frame_encode(&f, buf, sizeof(buf)), 0, "no tls map, nothing checked");
	/* A response's fields do not matter where there is none. */
	sample(SAMPLE_HTTP_NO_RESP, &f);
	f.http.resp.ninformational = 200;
	cr_expect_gt(tap_frame_encode(&f, buf, sizeof(buf)), 0);
}

/* Decodes the first <k> bytes of <buf>, placed against a guard page. */
static int decode_prefix(struct tap_decoder *dec, struct guard *g, const uint8_t *buf, size_t k,
			 const char **why)
{
	struct tap_frame f;
	size_t used = 0;

	return tap_frame_decode(dec, guard_put(g, buf, k), k, &used, &f, why);
}

Test(tap_frame, every_truncation_is_eagain_against_a_guard_page)
{
	struct tap_decoder *dec = tap_decoder_new();

	for (int i = 0; i < NSAMPLES; i++) {
		struct tap_frame f;
		struct guard g;
		size_t len;
		uint8_t *buf;

		sample(i, &f);
		buf = encode(&f, &len);
		guard_init(&g, len);
		for (size_t k = 0; k < len; k++) {
			const char *why = NULL;

			/* Big samples: every byte near both ends, a stride in between. */
			if (!sample_is_small(i) && k > 4096 && k + 4096 < len && k % 61)
				continue;
			cr_assert_eq(decode_prefix(dec, &g, buf, k, &why), -EAGAIN,
				     "sample %d cut at %zu of %zu: %s", i, k, len, why);
			cr_assert_not_null(why);
		}
		cr_assert_eq(decode_prefix(dec, &g, buf, len, NULL), 0, "whole, against the guard");
		guard_fini(&g);
		free(buf);
	}
	tap_decoder_free(dec);
}

Test(tap_frame, check_accepts_every_sample_and_refuses_every_truncation)
{
	for (int i = 0; i < NSAMPLES; i++) {
		struct tap_frame f;
		struct guard g;
		const char *why = NULL;
		size_t len;
		uint8_t *buf;

		sample(i, &f);
		buf = encode(&f, &len);
		guard_init(&g, len + 1);
		cr_assert_eq(tap_frame_check(guard_put(&g, buf, len), len, &why), 0,
			     "sample %d: %s", i, why);
		for (size_t k = 0; k < len; k++) {
			if (!sample_is_small(i) && k > 4096 && k + 4096 < len && k % 61)
				continue;
			why = NULL;
			cr_assert_eq(tap_frame_check(guard_put(&g, buf, k), k, &why), -EBADMSG,
				     "sample %d cut at %zu", i, k);
			cr_assert_not_null(why);
		}
		/* One byte more than the frame: the ring's record holds exactly one frame. */
		buf = realloc(buf, len + 1);
		buf[len] = 0xc0;
		cr_assert_eq(tap_frame_check(guard_put(&g, buf, len + 1), len + 1, &why), -EBADMSG);
		cr_assert_str_eq(why, "bytes after the frame");
		guard_fini(&g);
		free(buf);
	}
}

/* A byte string literal and its length. */
#define B(s) s, sizeof(s) - 1

Test(tap_frame, check_refuses_what_is_not_a_frame_and_says_why)
{
	static const struct {
		const char *bytes;
		size_t len;
		const char *why;
	} bad[] = {
		{ B("\x92\x01\x02"), "a frame is a msgpack map" },
		{ B("\x83\xa1v\x02\xa4type\xa3tcp\xa2id\xa1x"), "key v: not format version 1" },
		{ B("\x83\xa1v\x01\xa4type\xa3udp\xa2id\xa1x"), "key type: unknown frame type" },
		{ B("\x83\xa1v\x01\xa4type\x01\xa2id\xa1x"), "key type: not a string" },
		{ B("\x82\xa1v\x01\xa4type\xa3tcp"), "missing key id" },
		{ B("\x82\xa1v\x01\xa2id\xa1x"), "missing key type" },
		{ B("\x82\xa4type\xa3tcp\xa2id\xa1x"), "missing key v" },
		{ B("\xc1"), "not msgpack: byte 0xc1" },
	};
	const char *why;

	cr_assert_eq(tap_frame_check(B(""), &why), -EBADMSG);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		cr_expect_eq(tap_frame_check(bad[i].bytes, bad[i].len, &why), -EBADMSG, "case %zu",
			     i);
		cr_expect_str_eq(why ? why : "(none)", bad[i].why, "case %zu", i);
	}
	cr_assert_eq(tap_frame_check(B("\x83\xa1v\x01\xa4type\xa3tcp\xa2id\xa1x"), &why), 0,
		     "the minimal shape passes: %s", why);
	/* As the decoder does: v in any unsigned encoding, keys that are not strings skipped. */
	cr_assert_eq(
		tap_frame_check(B("\x84\x07\x07\xa1v\xcc\x01\xa4type\xa3tcp\xa2id\xa1x"), &why), 0,
		"%s", why);
}

Test(tap_frame, several_frames_in_one_buffer_decode_in_turn)
{
	struct tap_decoder *dec = tap_decoder_new();
	uint8_t *all = NULL;
	size_t total = 0, off = 0, lens[NSAMPLES];

	for (int i = 0; i < NSAMPLES; i++) {
		struct tap_frame f;
		uint8_t *buf;

		sample(i, &f);
		buf = encode(&f, &lens[i]);
		all = realloc(all, total + lens[i]);
		memcpy(all + total, buf, lens[i]);
		total += lens[i];
		free(buf);
	}
	for (int i = 0; i < NSAMPLES; i++) {
		struct tap_frame f, g;
		size_t used = 0;

		sample(i, &f);
		cr_assert_eq(tap_frame_decode(dec, all + off, total - off, &used, &g, NULL), 0,
			     "frame %d", i);
		cr_assert_eq(used, lens[i], "frame %d", i);
		expect_frame_eq(&f, &g);
		off += used;
	}
	cr_assert_eq(off, total);
	free(all);
	tap_decoder_free(dec);
}

/* A decode that succeeded must hold a frame the encoder accepts and that decodes the same again. */
static void expect_reencodes(const struct tap_frame *g)
{
	struct tap_decoder *dec2 = tap_decoder_new();
	size_t max = tap_frame_encoded_max(g), used;
	uint8_t *out = malloc(max);
	struct tap_frame h;
	ssize_t n;

	n = tap_frame_encode(g, out, max);
	cr_assert_gt(n, 0, "a decoded frame does not re-encode: %zd", n);
	cr_assert_eq(tap_frame_decode(dec2, out, (size_t)n, &used, &h, NULL), 0);
	cr_assert_eq(used, (size_t)n);
	expect_frame_eq(g, &h);
	free(out);
	tap_decoder_free(dec2);
}

static void decode_hostile(struct tap_decoder *dec, struct guard *g, const uint8_t *in, size_t len,
			   int *ok)
{
	const char *why = NULL;
	struct tap_frame f;
	size_t used = 0;
	int ret;

	ret = tap_frame_decode(dec, guard_put(g, in, len), len, &used, &f, &why);
	cr_assert(ret == 0 || ret == -EAGAIN || ret == -EBADMSG, "ret %d", ret);
	if (ret) {
		cr_assert_not_null(why, "a failure names its reason");
		return;
	}
	cr_assert(used > 0 && used <= len);
	(*ok)++;
	expect_reencodes(&f);
}

Test(tap_frame, flipped_bytes_never_crash)
{
	static const uint8_t masks[] = { 0x01, 0x10, 0x80, 0xff };
	struct tap_decoder *dec = tap_decoder_new();
	int ok = 0;

	for (int i = 0; i < NSAMPLES; i++) {
		struct tap_frame f;
		struct guard g;
		size_t len;
		uint8_t *buf;

		if (!sample_is_small(i))
			continue;
		sample(i, &f);
		buf = encode(&f, &len);
		guard_init(&g, len);
		for (size_t k = 0; k < len; k++) {
			for (size_t m = 0; m < sizeof(masks); m++) {
				buf[k] ^= masks[m];
				decode_hostile(dec, &g, buf, len, &ok);
				buf[k] ^= masks[m];
			}
		}
		guard_fini(&g);
		free(buf);
	}
	/* Flips inside strings and integers leave valid frames: the check above saw some. */
	cr_expect_gt(ok, 100);
	tap_decoder_free(dec);
}

Test(tap_frame, random_bytes_and_mutations_never_crash)
{
	struct tap_decoder *dec = tap_decoder_new();
	uint64_t x = 0x9e3779b97f4a7c15ull;
	uint8_t rnd[1024];
	struct guard g;
	int ok = 0;

	guard_init(&g, 1 << 20);
	for (int iter = 0; iter < 20000; iter++) {
		size_t len;

		for (size_t k = 0; k < sizeof(rnd); k++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			rnd[k] = (uint8_t)x;
		}
		len = x % sizeof(rnd);
		/* Half the time, start like a map so the decoder goes past the first byte. */
		if (iter % 2 && len)
			rnd[0] = 0x80 | (rnd[0] & 0x0f);
		decode_hostile(dec, &g, rnd, len, &ok);
	}
	for (int i = 0; i < NSAMPLES; i++) {
		struct tap_frame f;
		size_t len;
		uint8_t *buf;

		if (!sample_is_small(i))
			continue;
		sample(i, &f);
		buf = encode(&f, &len);
		for (int iter = 0; iter < 2000; iter++) {
			uint8_t *m = malloc(len);

			memcpy(m, buf, len);
			for (int k = 0; k < 1 + iter % 4; k++) {
				x ^= x << 13, x ^= x >> 7, x ^= x << 17;
				m[x % len] = (uint8_t)(x >> 32);
			}
			decode_hostile(dec, &g, m, len, &ok);
			free(m);
		}
		free(buf);
	}
	guard_fini(&g);
	tap_decoder_free(dec);
}

/*
 * Re-packs <o>, with the value at <path> ("req.method") dropped (<repl> NULL)
 * or replaced by <repl>. Sets *<hit> when the path was found.
 */
static void pack_edit(msgpack_packer *pk, const msgpack_object *o, const char *path,
		      const msgpack_object *repl, bool *hit)
{
	const char *dot = strchr(path, '.');
	size_t seg = dot ? (size_t)(dot - path) : strlen(path);
	uint32_t n = o->via.map.size;

	if (o->type != MSGPACK_OBJECT_MAP) {
		msgpack_pack_object(pk, *o);
		return;
	}
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object_kv *kv = &o->via.map.ptr[i];

		if (!dot && !repl && kv->key.via.str.size == seg &&
		    memcmp(kv->key.via.str.ptr, path, seg) == 0)
			n--;
	}
	msgpack_pack_map(pk, n);
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object_kv *kv = &o->via.map.ptr[i];
		bool match = kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == seg &&
			     memcmp(kv->key.via.str.ptr, path, seg) == 0;

		if (match && !dot) {
			*hit = true;
			if (!repl)
				continue;
			msgpack_pack_object(pk, kv->key);
			msgpack_pack_object(pk, *repl);
		} else if (match) {
			msgpack_pack_object(pk, kv->key);
			pack_edit(pk, &kv->val, dot + 1, repl, hit);
		} else {
			msgpack_pack_object(pk, kv->key);
			msgpack_pack_object(pk, kv->val);
		}
	}
}

/*
 * Encodes sample <i>, edits <path> as pack_edit() does (or, with <add_key>,
 * adds that key with <repl> to the top-level map), and decodes the result.
 */
static int decode_edited(int i, const char *path, const msgpack_object *repl, const char *add_key,
			 struct tap_frame *out, const char **why)
{
	static struct tap_decoder *dec;
	static msgpack_sbuffer sb;
	msgpack_unpacked up;
	msgpack_packer pk;
	struct tap_frame f;
	size_t len, used;
	uint8_t *buf;
	bool hit = false;
	int ret;

	if (!dec)
		dec = tap_decoder_new();
	sample(i, &f);
	buf = encode(&f, &len);
	msgpack_unpacked_init(&up);
	cr_assert_eq(msgpack_unpack_next(&up, (const char *)buf, len, NULL),
		     MSGPACK_UNPACK_SUCCESS);
	msgpack_sbuffer_destroy(&sb);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (add_key) {
		msgpack_pack_map(&pk, up.data.via.map.size + 1);
		msgpack_pack_str_with_body(&pk, add_key, strlen(add_key));
		msgpack_pack_object(&pk, *repl);
		for (uint32_t k = 0; k < up.data.via.map.size; k++) {
			msgpack_pack_object(&pk, up.data.via.map.ptr[k].key);
			msgpack_pack_object(&pk, up.data.via.map.ptr[k].val);
		}
	} else {
		pack_edit(&pk, &up.data, path, repl, &hit);
		cr_assert(hit, "sample %d has no key %s", i, path);
	}
	ret = tap_frame_decode(dec, sb.data, sb.size, &used, out, why);
	msgpack_unpacked_destroy(&up);
	free(buf);
	return ret;
}

static const msgpack_object nil_obj = { .type = MSGPACK_OBJECT_NIL };
static const msgpack_object int_obj = { .type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = 7 };
static const msgpack_object str_obj = { .type = MSGPACK_OBJECT_STR,
					.via.str = { .size = 1, .ptr = "x" } };

/* The keys each sample needs, with the type its value must have. */
struct need {
	int sample;
	const char *path;
	bool is_str; /* its value is a str: the wrong type tried is an integer */
};

static const struct need needs[] = {
	{ SAMPLE_TCP, "v", false },
	{ SAMPLE_TCP, "id", true },
	{ SAMPLE_TCP, "type", true },
	{ SAMPLE_TCP, "gen", false },
	{ SAMPLE_TCP, "worker", false },
	{ SAMPLE_TCP, "seq", false },
	{ SAMPLE_TCP, "conn_id", false },
	{ SAMPLE_TCP, "ts", false },
	{ SAMPLE_TCP, "listener", true },
	{ SAMPLE_TCP, "client", true },
	{ SAMPLE_TCP, "dst", true },
	{ SAMPLE_TCP, "upstream", true },
	{ SAMPLE_TCP, "dir", true },
	{ SAMPLE_TCP, "off", false },
	{ SAMPLE_TCP, "data", true },
	{ SAMPLE_CONN_OPEN, "event", true },
	{ SAMPLE_CONN_CLOSE, "event", true },
	{ SAMPLE_CONN_CLOSE, "proto", true },
	{ SAMPLE_CONN_CLOSE, "reason", true },
	{ SAMPLE_CONN_CLOSE, "bytes_c2u", false },
	{ SAMPLE_CONN_CLOSE, "bytes_u2c", false },
	{ SAMPLE_CONN_CLOSE, "open_ts", false },
	{ SAMPLE_HTTP, "pair", false },
	{ SAMPLE_HTTP, "req", true },
	{ SAMPLE_HTTP, "resp", true },
	{ SAMPLE_HTTP, "timing", true },
	{ SAMPLE_HTTP, "flags", true },
	{ SAMPLE_HTTP, "req.method", true },
	{ SAMPLE_HTTP, "req.target", true },
	{ SAMPLE_HTTP, "req.version", true },
	{ SAMPLE_HTTP, "req.headers", true },
	{ SAMPLE_HTTP, "req.body", true },
	{ SAMPLE_HTTP, "req.body_size", false },
	{ SAMPLE_HTTP, "req.body_truncated", false },
	{ SAMPLE_HTTP, "req.chunked", false },
	{ SAMPLE_HTTP, "resp.status", false },
	{ SAMPLE_HTTP, "resp.reason", true },
	{ SAMPLE_HTTP, "resp.version", true },
	{ SAMPLE_HTTP, "resp.headers", true },
	{ SAMPLE_HTTP, "resp.body", true },
	{ SAMPLE_HTTP, "resp.body_size", false },
	{ SAMPLE_HTTP, "resp.body_truncated", false },
	{ SAMPLE_HTTP, "resp.chunked", false },
	{ SAMPLE_HTTP, "resp.informational", true },
	{ SAMPLE_HTTP, "timing.req_start", false },
	{ SAMPLE_HTTP, "timing.req_end", false },
	{ SAMPLE_HTTP, "timing.resp_start", false },
	{ SAMPLE_HTTP, "timing.resp_end", false },
	{ SAMPLE_HTTP_ALL_FLAGS, "desync_off", false },
	{ SAMPLE_HTTP_ALL_FLAGS, "desync_dir", true },
	{ SAMPLE_TLS, "event", true },
	{ SAMPLE_TLS, "side", true },
	{ SAMPLE_TLS, "sni", true },
	{ SAMPLE_TLS, "alpn_offered", true },
	{ SAMPLE_TLS, "versions_offered", true },
	{ SAMPLE_TLS, "version", true },
	{ SAMPLE_TLS, "cipher", true },
	{ SAMPLE_TLS, "alpn", true },
	{ SAMPLE_TLS, "upstream_verify", true },
	{ SAMPLE_TLS_FAILED, "reason", true },
	{ SAMPLE_TLS_PASSTHROUGH, "reason", true },
	{ SAMPLE_HTTP_TLS, "tls.version", true },
	{ SAMPLE_HTTP_TLS, "tls.cipher", true },
	{ SAMPLE_HTTP_TLS, "tls.sni", true },
};

Test(tap_frame, missing_key_is_refused_and_named)
{
	for (size_t i = 0; i < sizeof(needs) / sizeof(needs[0]); i++) {
		const char *why = NULL;
		struct tap_frame f;
		char want[64];

		/* In the format's own words: "timing.req_start" is key req_start of map timing. */
		snprintf(want, sizeof(want), "%s: missing", needs[i].path);
		cr_expect_eq(decode_edited(needs[i].sample, needs[i].path, NULL, NULL, &f, &why),
			     -EBADMSG, "%s", needs[i].path);
		cr_expect_str_eq(why ? why : "(null)", want);
	}
}

Test(tap_frame, wrong_type_is_refused_and_named)
{
	for (size_t i = 0; i < sizeof(needs) / sizeof(needs[0]); i++) {
		const msgpack_object *wrong = needs[i].is_str ? &int_obj : &str_obj;
		const char *why = NULL;
		struct tap_frame f;
		char prefix[64];

		snprintf(prefix, sizeof(prefix), "%s: ", needs[i].path);
		cr_expect_eq(decode_edited(needs[i].sample, needs[i].path, wrong, NULL, &f, &why),
			     -EBADMSG, "%s", needs[i].path);
		cr_assert_not_null(why, "%s", needs[i].path);
		cr_expect_eq(strncmp(why, prefix, strlen(prefix)), 0, "%s: %s", needs[i].path, why);
		cr_expect_null(strstr(why, "missing"), "%s: %s", needs[i].path, why);
	}
}

static void expect_refused(int sample_idx, const char *path, const msgpack_object *repl,
			   const char *reason)
{
	const char *why = NULL;
	struct tap_frame f;

	cr_expect_eq(decode_edited(sample_idx, path, repl, NULL, &f, &why), -EBADMSG, "%s", path);
	cr_expect_str_eq(why ? why : "(null)", reason, "%s", path);
}

static msgpack_object str_of(const char *s)
{
	return (msgpack_object){ .type = MSGPACK_OBJECT_STR,
				 .via.str = { .size = (uint32_t)strlen(s), .ptr = s } };
}

static msgpack_object uint_of(uint64_t u)
{
	return (msgpack_object){ .type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = u };
}

Test(tap_frame, values_outside_the_format_are_refused)
{
	msgpack_object o, elems[5], pair[2];
	msgpack_object_kv bad_kv[1];

	o = uint_of(2);
	expect_refused(SAMPLE_TCP, "v", &o, "v: frame format newer than this reader's version 1");
	o = uint_of(0);
	expect_refused(SAMPLE_TCP, "v", &o, "v: 0 is not a format version");
	o = (msgpack_object){ .type = MSGPACK_OBJECT_NEGATIVE_INTEGER, .via.i64 = -1 };
	expect_refused(SAMPLE_TCP, "seq", &o, "seq: not an unsigned integer");
	o = uint_of(1ull << 32);
	expect_refused(SAMPLE_TCP, "worker", &o, "worker: not a 32-bit unsigned integer");
	o = str_of("udp");
	expect_refused(SAMPLE_TCP, "type", &o, "type: not conn, http, tcp or tls");
	o = str_of("sideways");
	expect_refused(SAMPLE_TCP, "listener", &o, "listener: not inbound or outbound");
	o = str_of("0123456789abcdef-3-43");
	expect_refused(SAMPLE_TCP, "id", &o, "id: not <gen>-<worker>-<seq> of this frame");
	o = str_of("C2U");
	expect_refused(SAMPLE_TCP, "dir", &o, "dir: not c2u or u2c");
	o = str_of("half");
	expect_refused(SAMPLE_CONN_CLOSE, "event", &o, "event: not open or close");
	o = str_of("http2");
	expect_refused(SAMPLE_CONN_CLOSE, "proto", &o, "proto: not http1, tls, other or unknown");
	o = str_of("invalid");
	expect_refused(SAMPLE_CONN_CLOSE, "reason", &o, "reason: unknown close reason");
	o = str_of("x2u");
	expect_refused(SAMPLE_HTTP_ALL_FLAGS, "desync_dir", &o, "desync_dir: not c2u or u2c");
	o = uint_of(1ull << 16);
	expect_refused(SAMPLE_HTTP, "resp.status", &o,
		       "resp.status: not a 16-bit unsigned integer");
	o = uint_of(4);
	expect_refused(SAMPLE_HTTP, "req.body_size", &o, "req.body: longer than req.body_size");
	o = uint_of(4);
	expect_refused(SAMPLE_HTTP, "resp.body_size", &o, "resp.body: longer than resp.body_size");

	static const char *const bad_versions[] = { "1",     "1.",     ".1", "1.1.1", "HTTP/1.1",
						    "256.0", "1.1000", "",   "1,1" };
	for (size_t i = 0; i < sizeof(bad_versions) / sizeof(bad_versions[0]); i++) {
		o = str_of(bad_versions[i]);
		expect_refused(SAMPLE_HTTP, "req.version", &o,
			       "req.version: not a str \"<major>.<minor>\"");
	}

	/* flags: an unknown name, a non-str */
	elems[0] = str_of("head");
	elems[1] = str_of("gzip");
	o = (msgpack_object){ .type = MSGPACK_OBJECT_ARRAY, .via.array = { 2, elems } };
	expect_refused(SAMPLE_HTTP, "flags", &o, "flags: unknown flag");
	elems[1] = uint_of(1);
	expect_refused(SAMPLE_HTTP, "flags", &o, "flags: not an array of str");

	/* informational: five, a value past 16 bits, a str */
	for (int i = 0; i < 5; i++)
		elems[i] = uint_of(100);
	o = (msgpack_object){ .type = MSGPACK_OBJECT_ARRAY, .via.array = { 5, elems } };
	expect_refused(SAMPLE_HTTP, "resp.informational", &o,
		       "resp.informational: not an array of at most 4 16-bit unsigned integers");
	o.via.array.size = 1;
	elems[0] = uint_of(70000);
	expect_refused(SAMPLE_HTTP, "resp.informational", &o,
		       "resp.informational: not an array of at most 4 16-bit unsigned integers");

	/* headers: a pair of three, a pair with an integer, a bare str, a map */
	pair[0] = str_of("Host");
	pair[1] = str_of("h");
	elems[0] = (msgpack_object){ .type = MSGPACK_OBJECT_ARRAY, .via.array = { 2, pair } };
	o = (msgpack_object){ .type = MSGPACK_OBJECT_ARRAY, .via.array = { 1, elems } };
	cr_expect_eq(
		decode_edited(SAMPLE_HTTP, "req.headers", &o, NULL, &(struct tap_frame){ 0 }, NULL),
		0, "one good pair decodes");
	elems[0].via.array.size = 1;
	expect_refused(SAMPLE_HTTP, "req.headers", &o,
		       "req.headers: not an array of [name, value] str");
	elems[0].via.array.size = 2;
	pair[1] = uint_of(3);
	expect_refused(SAMPLE_HTTP, "req.headers", &o,
		       "req.headers: not an array of [name, value] str");
	elems[0] = str_of("Host: h");
	expect_refused(SAMPLE_HTTP, "resp.headers", &o,
		       "resp.headers: not an array of [name, value] str");
	bad_kv[0].key = str_of("Host");
	bad_kv[0].val = str_of("h");
	elems[0] = (msgpack_object){ .type = MSGPACK_OBJECT_MAP, .via.map = { 1, bad_kv } };
	expect_refused(SAMPLE_HTTP, "resp.headers", &o,
		       "resp.headers: not an array of [name, value] str");

	/* tls frames: names outside the format, too many ALPN names, a version twice is one */
	o = str_of("intercepted");
	expect_refused(SAMPLE_TLS, "event", &o, "event: not passthrough, unwrapped or failed");
	o = str_of("server");
	expect_refused(SAMPLE_TLS, "side", &o, "side: not client or upstream");
	o = str_of("TLSv1.3");
	expect_refused(SAMPLE_TLS, "version", &o, "version: not TLS1.0 to TLS1.3");
	expect_refused(SAMPLE_HTTP_TLS, "tls.version", &o, "tls.version: not TLS1.0 to TLS1.3");
	elems[0] = str_of("TLS1.2");
	elems[1] = str_of("SSL3.0");
	o = (msgpack_object){ .type = MSGPACK_OBJECT_ARRAY, .via.array = { 2, elems } };
	expect_refused(SAMPLE_TLS, "versions_offered", &o,
		       "versions_offered: not TLS1.0 to TLS1.3");
	elems[1] = uint_of(3);
	expect_refused(SAMPLE_TLS, "versions_offered", &o, "versions_offered: not an array of str");
	elems[1] = str_of("TLS1.2");
	{
		struct tap_frame g;
		const char *why = NULL;

		cr_expect_eq(decode_edited(SAMPLE_TLS, "versions_offered", &o, NULL, &g, &why), 0,
			     "%s", why);
		cr_expect_eq(g.tls.versions_offered, TAP_TLS_V12);
	}
	{
		msgpack_object nine[9];

		for (int i = 0; i < 9; i++)
			nine[i] = str_of("h2");
		o = (msgpack_object){ .type = MSGPACK_OBJECT_ARRAY, .via.array = { 9, nine } };
		expect_refused(SAMPLE_TLS, "alpn_offered", &o,
			       "alpn_offered: not an array of at most 8 str");
		o.via.array.size = 1;
		nine[0] = uint_of(2);
		expect_refused(SAMPLE_TLS, "alpn_offered", &o,
			       "alpn_offered: not an array of at most 8 str");
	}
	o = str_of("TLS1.3");
	expect_refused(SAMPLE_HTTP_TLS, "tls", &o, "tls: not a map");

	/* bodies are bin, not str; a frame is a map */
	o = str_of("hello");
	expect_refused(SAMPLE_HTTP, "req.body", &o, "req.body: not a bin");
	o = uint_of(1);
	expect_refused(SAMPLE_HTTP, "req.body_truncated", &o, "req.body_truncated: not a bool");
	o = nil_obj;
	expect_refused(SAMPLE_HTTP, "req", &o, "req: not a map");
}

Test(tap_frame, unknown_keys_are_ignored_and_duplicates_refused)
{
	struct tap_frame f, want;
	const char *why = NULL;
	msgpack_object o = uint_of(99);

	sample(SAMPLE_HTTP, &want);
	cr_assert_eq(decode_edited(SAMPLE_HTTP, NULL, &o, "future_key", &f, &why), 0, "%s", why);
	expect_frame_eq(&want, &f);
	/* A key of another frame type is unknown here too. */
	o = str_of("not bin");
	cr_assert_eq(decode_edited(SAMPLE_HTTP, NULL, &o, "data", &f, &why), 0, "%s", why);
	o = uint_of(1);
	cr_expect_eq(decode_edited(SAMPLE_HTTP, NULL, &o, "seq", &f, &why), -EBADMSG);
	cr_expect_str_eq(why, "seq: duplicate key");
	o = str_of("tcp");
	cr_expect_eq(decode_edited(SAMPLE_HTTP, NULL, &o, "type", &f, &why), -EBADMSG);
	cr_expect_str_eq(why, "type: duplicate key");
	/* Keys of the nested maps are checked like the frame's. */
	cr_assert_eq(decode_edited(SAMPLE_HTTP_NO_RESP, "timing.req_end", &o, NULL, &f, &why),
		     -EBADMSG);
	cr_expect_str_eq(why, "timing.req_end: not an unsigned integer");
}

Test(tap_frame, nil_response_and_no_desync_need_no_keys)
{
	struct tap_frame f;
	const char *why = NULL;
	msgpack_object o = nil_obj;

	/* resp nil: a pair without a response, whatever timing says */
	cr_assert_eq(decode_edited(SAMPLE_HTTP, "resp", &o, NULL, &f, &why), 0, "%s", why);
	cr_expect_not(f.http.has_resp);
	cr_expect_eq(f.http.resp_start, 3, "resp_start decoded where present");
	cr_assert_eq(decode_edited(SAMPLE_HTTP_NO_RESP, "timing.req_start", NULL, NULL, &f, &why),
		     -EBADMSG);
	cr_expect_str_eq(why, "timing.req_start: missing");
}

Test(tap_frame, structure_bombs_are_bounded)
{
	struct tap_decoder *dec = tap_decoder_new();
	static uint8_t deep[4096];
	struct tap_frame f;
	const char *why = NULL;
	size_t used;
	size_t n = 0;

	/* { "x": [[[[...]]]] } nested 100 deep: refused as too deep, no recursion. */
	deep[n++] = 0x81;
	deep[n++] = 0xa1;
	deep[n++] = 'x';
	for (int i = 0; i < 100; i++)
		deep[n++] = 0x91;
	deep[n++] = 0xc0;
	cr_expect_eq(tap_frame_decode(dec, deep, n, &used, &f, &why), -EBADMSG);
	cr_expect_str_eq(why, "containers nested deeper than 16");

	/* array32 and map32 promising 4 billion elements in a few bytes: truncated, nothing allocated. */
	static const uint8_t arr[] = { 0x81, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0 };
	static const uint8_t map[] = { 0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0 };
	static const uint8_t str[] = { 0xdb, 0xff, 0xff, 0xff, 0xff, 'a' };
	cr_expect_eq(tap_frame_decode(dec, arr, sizeof(arr), &used, &f, &why), -EAGAIN);
	cr_expect_eq(tap_frame_decode(dec, map, sizeof(map), &used, &f, &why), -EAGAIN);
	cr_expect_eq(tap_frame_decode(dec, str, sizeof(str), &used, &f, &why), -EAGAIN);
	/* Not msgpack at all, and msgpack that is not a map. */
	cr_expect_eq(tap_frame_decode(dec, "\xc1", 1, &used, &f, &why), -EBADMSG);
	cr_expect_str_eq(why, "not msgpack: byte 0xc1");
	cr_expect_eq(tap_frame_decode(dec, "\x93\x01\x02\x03", 4, &used, &f, &why), -EBADMSG);
	cr_expect_str_eq(why, "frame: not a map");
	cr_expect_eq(tap_frame_decode(dec, "", 0, &used, &f, &why), -EAGAIN);
	tap_decoder_free(dec);
}

/* The canonical text of frame_check.py, written from the model (not from the encoder). */
struct centry {
	const char *key;
	char *val;
};

struct cmap {
	struct centry e[32];
	int n;
};

static char *c_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *c_fmt(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	cr_assert_geq(vasprintf(&s, fmt, ap), 0);
	va_end(ap);
	return s;
}

static char *c_hex(char tag, const void *p, size_t len)
{
	char *s = malloc(2 * len + 2);
	const uint8_t *b = p;

	s[0] = tag;
	for (size_t i = 0; i < len; i++)
		sprintf(s + 1 + 2 * i, "%02x", b[i]);
	s[2 * len + 1] = '\0';
	return s;
}

static char *c_str(const struct tap_str *s)
{
	return c_hex('s', s->p, s->len);
}

static char *c_cstr(const char *s)
{
	return c_hex('s', s, strlen(s));
}

static char *c_uint(uint64_t u)
{
	return c_fmt("i%llu", (unsigned long long)u);
}

static void cm_add(struct cmap *m, const char *key, char *val)
{
	m->e[m->n].key = key;
	m->e[m->n++].val = val;
}

static int centry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct centry *)a)->key, ((const struct centry *)b)->key);
}

/* Joins <items> (freeing them) between <open> and <close>. */
static char *c_join(char open, char **items, int n, char close)
{
	size_t len = 3;
	char *s, *p;

	for (int i = 0; i < n; i++)
		len += strlen(items[i]) + 1;
	s = p = malloc(len);
	*p++ = open;
	for (int i = 0; i < n; i++) {
		p = stpcpy(p, items[i]);
		if (i + 1 < n)
			*p++ = ',';
		free(items[i]);
	}
	*p++ = close;
	*p = '\0';
	return s;
}

static char *cm_done(struct cmap *m)
{
	char *items[32];

	qsort(m->e, (size_t)m->n, sizeof(m->e[0]), centry_cmp);
	for (int i = 0; i < m->n; i++) {
		items[i] = c_fmt("%s:%s", m->e[i].key, m->e[i].val);
		free(m->e[i].val);
	}
	return c_join('{', items, m->n, '}');
}

static char *c_msg(const struct tap_http_msg *msg, bool resp)
{
	char **hdrs = malloc((msg->nheaders + 1) * sizeof(*hdrs)), *info[4], *version;
	struct cmap m = { .n = 0 };

	if (resp) {
		cm_add(&m, "status", c_uint(msg->status));
		cm_add(&m, "reason", c_str(&msg->reason));
		for (int i = 0; i < msg->ninformational; i++)
			info[i] = c_uint(msg->informational[i]);
		cm_add(&m, "informational", c_join('[', info, msg->ninformational, ']'));
	} else {
		cm_add(&m, "method", c_str(&msg->method));
		cm_add(&m, "target", c_str(&msg->target));
	}
	version = c_fmt("%u.%u", msg->version_major, msg->version_minor);
	cm_add(&m, "version", c_cstr(version));
	free(version);
	for (uint32_t i = 0; i < msg->nheaders; i++) {
		char *pair[2] = { c_str(&msg->headers[i].name), c_str(&msg->headers[i].value) };

		hdrs[i] = c_join('[', pair, 2, ']');
	}
	cm_add(&m, "headers", c_join('[', hdrs, (int)msg->nheaders, ']'));
	free(hdrs);
	cm_add(&m, "body", c_hex('b', msg->body.p, msg->body.len));
	cm_add(&m, "body_size", c_uint(msg->body_size));
	cm_add(&m, "body_truncated", c_fmt("%c", msg->body_truncated ? 'T' : 'F'));
	cm_add(&m, "chunked", c_fmt("%c", msg->chunked ? 'T' : 'F'));
	return cm_done(&m);
}

static const char *const tls_versions[] = { "TLS1.0", "TLS1.1", "TLS1.2", "TLS1.3" };

static char *c_frame(const struct tap_frame *f)
{
	static const char *const flag_names[] = {
		"desync", "upgrade", "headers_truncated", "body_until_close", "no_response", "head"
	};
	static const char *const protos[] = { "unknown", "http1", "tls", "other" };
	static const char *const reasons[] = {
		"",	 "eof",	 "reset", "idle_timeout", "connect_failed", "connect_timeout",
		"drain", "error"
	};
	struct cmap m = { .n = 0 };
	char id[TAP_FRAME_ID_LEN];

	cm_add(&m, "v", c_uint(1));
	snprintf(id, sizeof(id), "%016llx-%u-%llu", (unsigned long long)f->gen, f->worker,
		 (unsigned long long)f->seq);
	cm_add(&m, "id", c_cstr(id));
	cm_add(&m, "type", c_cstr((const char *[]){ "", "conn", "http", "tcp", "tls" }[f->type]));
	cm_add(&m, "gen", c_uint(f->gen));
	cm_add(&m, "worker", c_uint(f->worker));
	cm_add(&m, "seq", c_uint(f->seq));
	cm_add(&m, "conn_id", c_uint(f->conn_id));
	cm_add(&m, "ts", c_uint(f->ts_ns));
	cm_add(&m, "listener", c_cstr(f->listener == TAP_INBOUND ? "inbound" : "outbound"));
	cm_add(&m, "client", c_str(&f->client));
	cm_add(&m, "dst", c_str(&f->dst));
	cm_add(&m, "upstream", c_str(&f->upstream));
	switch (f->type) {
	case TAP_FRAME_CONN:
		cm_add(&m, "event", c_cstr(f->conn.event == TAP_CONN_OPEN ? "open" : "close"));
		if (f->conn.event == TAP_CONN_OPEN)
			break;
		cm_add(&m, "proto", c_cstr(protos[f->conn.proto]));
		cm_add(&m, "reason", c_cstr(reasons[f->conn.reason]));
		cm_add(&m, "bytes_c2u", c_uint(f->conn.bytes_c2u));
		cm_add(&m, "bytes_u2c", c_uint(f->conn.bytes_u2c));
		cm_add(&m, "open_ts", c_uint(f->conn.open_ts_ns));
		break;
	case TAP_FRAME_HTTP: {
		struct cmap t = { .n = 0 };
		char *flags[6];
		int nflags = 0;

		cm_add(&m, "pair", c_uint(f->http.pair));
		cm_add(&m, "req", c_msg(&f->http.req, false));
		cm_add(&m, "resp", f->http.has_resp ? c_msg(&f->http.resp, true) : c_fmt("N"));
		cm_add(&t, "req_start", c_uint(f->http.req_start));
		cm_add(&t, "req_end", c_uint(f->http.req_end));
		if (f->http.has_resp) {
			cm_add(&t, "resp_start", c_uint(f->http.resp_start));
			cm_add(&t, "resp_end", c_uint(f->http.resp_end));
		}
		cm_add(&m, "timing", cm_done(&t));
		for (int i = 0; i < 6; i++)
			if (f->http.flags & (1u << i))
				flags[nflags++] = c_cstr(flag_names[i]);
		cm_add(&m, "flags", c_join('[', flags, nflags, ']'));
		if (f->http.flags & TAP_HTTP_F_DESYNC) {
			cm_add(&m, "desync_off", c_uint(f->http.desync_off));
			cm_add(&m, "desync_dir",
			       c_cstr(f->http.desync_dir == TAP_C2U ? "c2u" : "u2c"));
		}
		if (f->http.has_tls) {
			struct cmap ti = { .n = 0 };

			cm_add(&ti, "version",
			       c_cstr(tls_versions[__builtin_ctz(f->http.tls.version)]));
			cm_add(&ti, "cipher", c_str(&f->http.tls.cipher));
			cm_add(&ti, "sni", c_str(&f->http.tls.sni));
			cm_add(&m, "tls", cm_done(&ti));
		}
		break;
	}
	case TAP_FRAME_TCP:
		cm_add(&m, "dir", c_cstr(f->tcp.dir == TAP_C2U ? "c2u" : "u2c"));
		cm_add(&m, "off", c_uint(f->tcp.off));
		cm_add(&m, "data", c_hex('b', f->tcp.data.p, f->tcp.data.len));
		break;
	case TAP_FRAME_TLS: {
		static const char *const events[] = { "", "passthrough", "unwrapped", "failed" };
		char *alpn[TAP_TLS_ALPN_MAX], *vers[4];
		int nv = 0;

		cm_add(&m, "event", c_cstr(events[f->tls.event]));
		cm_add(&m, "side",
		       c_cstr(f->tls.side == TAP_TLS_SIDE_CLIENT ? "client" : "upstream"));
		cm_add(&m, "sni", c_str(&f->tls.sni));
		for (int i = 0; i < f->tls.nalpn_offered; i++)
			alpn[i] = c_str(&f->tls.alpn_offered[i]);
		cm_add(&m, "alpn_offered", c_join('[', alpn, f->tls.nalpn_offered, ']'));
		for (int i = 0; i < 4; i++)
			if (f->tls.versions_offered & (1u << i))
				vers[nv++] = c_cstr(tls_versions[i]);
		cm_add(&m, "versions_offered", c_join('[', vers, nv, ']'));
		if (f->tls.event != TAP_TLS_UNWRAPPED) {
			cm_add(&m, "reason", c_str(&f->tls.reason));
			break;
		}
		cm_add(&m, "version", c_cstr(tls_versions[__builtin_ctz(f->tls.version)]));
		cm_add(&m, "cipher", c_str(&f->tls.cipher));
		cm_add(&m, "alpn", c_str(&f->tls.alpn));
		cm_add(&m, "upstream_verify", c_str(&f->tls.upstream_verify));
		break;
	}
	}
	return cm_done(&m);
}

Test(tap_frame, python_msgpack_reads_what_we_encode)
{
	char path[512], cmd[1200], *line = NULL;
	size_t cap = 0;
	FILE *fp, *out;
	int n = 0;

	if (th_sh("/usr/bin/python3 -c 'import msgpack' 2>/dev/null") != 0)
		cr_skip_test(
			"/usr/bin/python3 has no msgpack module: apt-get install python3-msgpack");
	snprintf(path, sizeof(path), "%s/frames-%d.msgpack", th_tmpdir(), (int)getpid());
	fp = fopen(path, "wb");
	cr_assert_not_null(fp);
	for (int i = 0; i < NSAMPLES; i++) {
		struct tap_frame f;
		size_t len;
		uint8_t *buf;

		sample(i, &f);
		buf = encode(&f, &len);
		cr_assert_eq(fwrite(buf, 1, len, fp), len);
		free(buf);
	}
	cr_assert_eq(fclose(fp), 0);
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s 2>&1", FRAME_CHECK_PY, path);
	out = popen(cmd, "r");
	cr_assert_not_null(out);
	while (getline(&line, &cap, out) > 0) {
		struct tap_frame f;
		char *want;

		line[strcspn(line, "\n")] = '\0';
		cr_assert_lt(n, NSAMPLES, "more lines than frames: %.200s", line);
		sample(n, &f);
		want = c_frame(&f);
		cr_expect_str_eq(line, want, "frame %d as python reads it", n);
		free(want);
		n++;
	}
	cr_expect_eq(pclose(out), 0, "frame_check.py failed");
	cr_expect_eq(n, NSAMPLES);
	free(line);
	unlink(path);
}
