/* SPDX-License-Identifier: Apache-2.0 */
/* Capture of one proxied connection: protocol detection, tcp stream frames, dispatch to HTTP/1. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "conn_int.h"
#include "tap/sniff.h"
#include "tap/tls_hello.h"

#define TAP_CONN_DEF_BODY_LIMIT (1u << 20)
#define TAP_CONN_DEF_HEADER_LIMIT (64u << 10)
#define TAP_CONN_DEF_MAX_PENDING 64
#define TAP_CONN_DEF_TCP_CHUNK (64u << 10)

void tap_conn_cfg_default(struct tap_conn_cfg *cfg)
{
	cfg->body_limit = TAP_CONN_DEF_BODY_LIMIT;
	cfg->header_limit = TAP_CONN_DEF_HEADER_LIMIT;
	cfg->max_pending = TAP_CONN_DEF_MAX_PENDING;
	cfg->tcp_chunk = TAP_CONN_DEF_TCP_CHUNK;
	cfg->redact = true;
}

struct tap_conn *tap_conn_new(const struct tap_conn_cfg *cfg, tap_emit_cb emit, void *ctx)
{
	struct tap_conn *tc;

	/* Only this small struct until the first bytes say HTTP/1. */
	tc = calloc(1, sizeof(*tc));
	if (!tc)
		return NULL;
	tc->cfg = cfg;
	tc->emit = emit;
	tc->ctx = ctx;
	tc->mode = TAP__MODE_SNIFF;
	tc->proto = TAP_PROTO_UNKNOWN;
	return tc;
}

void tap_conn_free(struct tap_conn *tc)
{
	if (!tc)
		return;
	if (tc->mode == TAP__MODE_TLS)
		free(tc->hello);
	else
		tap__http_free(tc);
	free(tc);
}

void tap_conn_tls_reason(struct tap_conn *tc, const char *why)
{
	tc->tls_reason = why;
}

static struct tap_str str_of(const char *s)
{
	return (struct tap_str){ s, (uint32_t)strlen(s) };
}

/*
 * Ends TLS mode: one tls frame with what the ClientHello offered (<h>, NULL
 * when it could not be read, then <why> says so), and nothing captured after.
 */
static void tls_done(struct tap_conn *tc, const struct tap_tls_hello *h, const char *why)
{
	struct tap_frame f;

	memset(&f, 0, sizeof(f));
	f.type = TAP_FRAME_TLS;
	f.ts_ns = tc->sniff_ts;
	f.tls.event = TAP_TLS_PASSTHROUGH;
	f.tls.side = TAP_TLS_SIDE_CLIENT;
	if (h) {
		f.tls.sni = str_of(h->sni);
		for (unsigned i = 0; i < h->nalpn && i < TAP_TLS_ALPN_MAX; i++)
			f.tls.alpn_offered[i] = str_of(h->alpn[i]);
		f.tls.nalpn_offered = h->nalpn;
		f.tls.versions_offered = h->versions;
	}
	f.tls.reason = str_of(why);
	tc->emit(tc->ctx, &f);
	free(tc->hello);
	tc->hello = NULL;
	tc->mode = TAP__MODE_DONE;
}

/* Appends the client's bytes to the held ClientHello until it parses (or cannot). */
static void tls_feed(struct tap_conn *tc, enum tap_dir dir, const void *buf, size_t len)
{
	const char *reason =
		tc->tls_reason ? tc->tls_reason : "TLS unwrapping is off for this listener";
	struct tap__hello *hb = tc->hello;
	struct tap_tls_hello h;
	const char *why = NULL;
	uint32_t have = hb ? hb->len : 0;
	size_t n;
	int ret;

	if (dir == TAP_U2C) {
		tls_done(tc, NULL, "the server answered before the ClientHello was complete");
		return;
	}
	n = TAP_TLS_HELLO_BYTES_MAX - have;
	if (n > len)
		n = len;
	if (!hb || have + n > hb->cap) {
		size_t cap = hb ? hb->cap : 1024;

		while (cap < have + n)
			cap *= 2;
		if (cap > TAP_TLS_HELLO_BYTES_MAX)
			cap = TAP_TLS_HELLO_BYTES_MAX;
		hb = realloc(hb, sizeof(*hb) + cap);
		if (!hb) {
			tls_done(tc, NULL, "out of memory while reading the ClientHello");
			return;
		}
		hb->len = have;
		hb->cap = (uint32_t)cap;
		tc->hello = hb;
	}
	memcpy(hb->buf + hb->len, buf, n);
	hb->len += (uint32_t)n;
	ret = tap_tls_hello_parse(hb->buf, hb->len, &h, &why);
	if (ret == 1)
		tls_done(tc, &h, reason);
	else if (ret < 0 || hb->len == TAP_TLS_HELLO_BYTES_MAX)
		/* The parser's reasons are static strings ("truncated extension", ...). */
		tls_done(tc, NULL, why ? why : "not a ClientHello that can be read");
}

void tap__tcp_emit(struct tap_conn *tc, enum tap_dir dir, uint64_t off, const void *buf, size_t len,
		   uint64_t ts_ns)
{
	size_t chunk = tc->cfg->tcp_chunk ? tc->cfg->tcp_chunk : TAP_CONN_DEF_TCP_CHUNK;
	const char *p = buf;
	struct tap_frame f;

	while (len) {
		size_t n = len < chunk ? len : chunk;

		memset(&f, 0, sizeof(f));
		f.type = TAP_FRAME_TCP;
		f.ts_ns = ts_ns;
		f.tcp.dir = dir;
		f.tcp.off = off;
		f.tcp.data.p = p;
		f.tcp.data.len = (uint32_t)n;
		tc->emit(tc->ctx, &f);
		p += n;
		off += n;
		len -= n;
	}
}

/* Keeps classifying the client's first bytes for tap_conn_proto() once capture is tcp. */
static void sniff_more(struct tap_conn *tc, const void *buf, size_t len)
{
	size_t n = TAP__SNIFF_MAX - tc->sniff_len;

	if (tc->proto != TAP_PROTO_UNKNOWN || !len)
		return;
	if (n > len)
		n = len;
	memcpy(tc->sniff + tc->sniff_len, buf, n);
	tc->sniff_len += n;
	tc->proto = tap_sniff(tc->sniff, tc->sniff_len);
}

/* Leaves SNIFF for TCP: the client bytes held so far go out first, from offset 0. */
static void sniff_to_tcp(struct tap_conn *tc, uint64_t ts_ns)
{
	tc->mode = TAP__MODE_TCP;
	tap__tcp_emit(tc, TAP_C2U, 0, tc->sniff, tc->sniff_len, ts_ns);
}

/*
 * Buffers the client's first bytes until tap_sniff() decides. Returns true
 * when it decided: the mode is then HTTP or TCP and the held bytes were
 * passed on; the caller passes on <buf> (none of it was).
 */
static bool sniff_feed(struct tap_conn *tc, const void *buf, size_t len, uint64_t ts_ns)
{
	size_t held = tc->sniff_len;
	size_t n = TAP__SNIFF_MAX - held;
	enum tap_proto proto;

	if (n > len)
		n = len;
	memcpy(tc->sniff + held, buf, n);
	tc->sniff_len += n;
	if (!held)
		tc->sniff_ts = ts_ns;
	proto = tap_sniff(tc->sniff, tc->sniff_len);
	if (proto == TAP_PROTO_UNKNOWN) {
		/* 16 bytes always decide, so all of <buf> is held. */
		tc->off[TAP_C2U] += len;
		return false;
	}
	tc->proto = proto;
	if (proto == TAP_PROTO_TLS) {
		/* The held bytes start the ClientHello; the caller passes on <buf>. */
		tc->mode = TAP__MODE_TLS;
		if (held)
			tls_feed(tc, TAP_C2U, tc->sniff, held);
		return true;
	}
	/*
	 * "PRI * HTTP/2.0" opens HTTP/2 with prior knowledge: not HTTP/1, and
	 * llhttp would stop on it. Out of memory: degrade to tcp capture.
	 */
	if (proto != TAP_PROTO_HTTP1 || memcmp(tc->sniff, "PRI ", 4) == 0 ||
	    tap__http_start(tc) < 0) {
		tc->mode = TAP__MODE_TCP;
		tap__tcp_emit(tc, TAP_C2U, 0, tc->sniff, held, tc->sniff_ts);
		return true;
	}
	tc->mode = TAP__MODE_HTTP;
	if (held) {
		/* A method prefix cannot fail to parse, but stay correct if it did. */
		n = tap__http_feed(tc, TAP_C2U, (const char *)tc->sniff, held, 0, tc->sniff_ts);
		if (n < held)
			tap__tcp_emit(tc, TAP_C2U, n, tc->sniff + n, held - n, tc->sniff_ts);
	}
	return true;
}

void tap_conn_feed(struct tap_conn *tc, enum tap_dir dir, const void *buf, size_t len,
		   uint64_t ts_ns)
{
	uint64_t base;
	size_t n;

	if (!len)
		return;
	if (tc->mode == TAP__MODE_DONE) {
		tc->off[dir] += len;
		return;
	}
	if (tc->mode == TAP__MODE_SNIFF) {
		if (dir == TAP_C2U) {
			if (!sniff_feed(tc, buf, len, ts_ns))
				return;
		} else {
			/* The server spoke first (or before the client's first bytes decided). */
			sniff_to_tcp(tc, ts_ns);
		}
	} else if (dir == TAP_C2U) {
		sniff_more(tc, buf, len);
	}
	base = tc->off[dir];
	tc->off[dir] += len;
	if (tc->mode == TAP__MODE_TLS)
		tls_feed(tc, dir, buf, len);
	if (tc->mode == TAP__MODE_TLS || tc->mode == TAP__MODE_DONE)
		return;
	n = 0;
	if (tc->mode == TAP__MODE_HTTP)
		n = tap__http_feed(tc, dir, buf, len, base, ts_ns);
	if (n < len)
		tap__tcp_emit(tc, dir, base + n, (const char *)buf + n, len - n, ts_ns);
}

void tap_conn_eof(struct tap_conn *tc, enum tap_dir dir, uint64_t ts_ns)
{
	if (tc->mode == TAP__MODE_HTTP)
		tap__http_eof(tc, dir, ts_ns);
}

void tap_conn_end(struct tap_conn *tc, uint64_t ts_ns)
{
	switch (tc->mode) {
	case TAP__MODE_SNIFF:
		/* The client's few bytes never decided: they are not HTTP/1. */
		if (tc->sniff_len) {
			tc->proto = TAP_PROTO_OTHER;
			sniff_to_tcp(tc, ts_ns);
		}
		break;
	case TAP__MODE_HTTP:
		tap__http_end(tc, ts_ns);
		break;
	case TAP__MODE_TLS:
		tls_done(tc, NULL, "the connection ended before its ClientHello was complete");
		break;
	case TAP__MODE_TCP:
	case TAP__MODE_DONE:
		break;
	}
	if (tc->proto == TAP_PROTO_UNKNOWN && tc->sniff_len)
		tc->proto = TAP_PROTO_OTHER;
	tc->mode = TAP__MODE_DONE;
}

int tap_conn_proto(const struct tap_conn *tc)
{
	return tc->proto;
}

uint64_t tap_conn_offset(const struct tap_conn *tc, enum tap_dir dir)
{
	return tc->off[dir];
}

size_t tap_conn_memory(const struct tap_conn *tc)
{
	if (tc->mode == TAP__MODE_TLS)
		return sizeof(*tc) + (tc->hello ? sizeof(*tc->hello) + tc->hello->cap : 0);
	return sizeof(*tc) + (tc->http ? tap__http_memory(tc) : 0);
}

bool tap_conn_wants(const struct tap_conn *tc, enum tap_dir dir, uint64_t *skip)
{
	if (tc->mode == TAP__MODE_HTTP)
		return tap__http_wants(tc, dir, skip);
	if (tc->mode == TAP__MODE_DONE) {
		*skip = UINT64_MAX;
		return false;
	}
	return true;
}

void tap_conn_skip(struct tap_conn *tc, enum tap_dir dir, uint64_t len, uint64_t ts_ns)
{
	if (!len)
		return;
	if (tc->mode == TAP__MODE_SNIFF) {
		/* Never offered: the held bytes cannot decide any more. */
		if (tc->sniff_len)
			tc->proto = TAP_PROTO_OTHER;
		sniff_to_tcp(tc, ts_ns);
	}
	if (tc->mode == TAP__MODE_HTTP)
		tap__http_skip(tc, dir, len, ts_ns);
	else if (tc->mode == TAP__MODE_TLS)
		tls_done(tc, NULL, "part of the ClientHello passed uncaptured");
	tc->off[dir] += len;
}
