/* SPDX-License-Identifier: Apache-2.0 */
/* Test helper: the canonical text of tap_conn's frames, and checks of their invariants. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_dump.h"

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		abort();
	return p;
}

static void put(struct conn_dump *d, const char *s, size_t n)
{
	if (d->len + n + 1 > d->cap) {
		d->cap = (d->len + n + 1) * 2;
		d->text = xrealloc(d->text, d->cap);
	}
	memcpy(d->text + d->len, s, n);
	d->len += n;
	d->text[d->len] = '\0';
}

static void __attribute__((format(printf, 2, 3))) putf(struct conn_dump *d, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	put(d, buf, n < (int)sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

static void __attribute__((format(printf, 2, 3))) fail(struct conn_dump *d, const char *fmt, ...)
{
	va_list ap;

	if (d->err[0])
		return;
	va_start(ap, fmt);
	vsnprintf(d->err, sizeof(d->err), fmt, ap);
	va_end(ap);
}

/* Quoted, with bytes outside printable ASCII (and quote, backslash) as \xNN. */
static void put_quoted(struct conn_dump *d, const char *what, const void *p, size_t len)
{
	const unsigned char *s = p;
	char esc[8];

	if (len && !p)
		fail(d, "%s: NULL with length %zu", what, len);
	put(d, "\"", 1);
	for (size_t i = 0; p && i < len; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\') {
			put(d, (const char *)s + i, 1);
		} else {
			snprintf(esc, sizeof(esc), "\\x%02x", s[i]);
			put(d, esc, 4);
		}
	}
	put(d, "\"", 1);
}

static const char *dir_name(enum tap_dir dir)
{
	return dir == TAP_C2U ? "c2u" : dir == TAP_U2C ? "u2c" : "?";
}

static void put_msg(struct conn_dump *d, const struct tap_http_msg *m, int is_req)
{
	if (is_req) {
		put(d, " req ", 5);
		put_quoted(d, "method", m->method.p, m->method.len);
		put(d, " ", 1);
		put_quoted(d, "target", m->target.p, m->target.len);
		if (m->status || m->reason.len)
			fail(d, "request with a status or reason");
	} else {
		putf(d, " resp %u ", m->status);
		put_quoted(d, "reason", m->reason.p, m->reason.len);
		if (m->method.len || m->target.len)
			fail(d, "response with a method or target");
	}
	putf(d, " %u.%u", m->version_major, m->version_minor);
	if (!is_req && m->ninformational) {
		put(d, " info=", 6);
		for (unsigned i = 0; i < m->ninformational && i < TAP_INFORMATIONAL_MAX; i++)
			putf(d, "%s%u", i ? "," : "", m->informational[i]);
	}
	put(d, "\n", 1);
	if (m->nheaders && !m->headers)
		fail(d, "%u headers, NULL array", m->nheaders);
	for (uint32_t i = 0; m->headers && i < m->nheaders; i++) {
		put(d, "  h ", 4);
		put_quoted(d, "header name", m->headers[i].name.p, m->headers[i].name.len);
		put(d, " ", 1);
		put_quoted(d, "header value", m->headers[i].value.p, m->headers[i].value.len);
		put(d, "\n", 1);
	}
	putf(d, "  body size=%llu%s%s ", (unsigned long long)m->body_size,
	     m->body_truncated ? " truncated" : "", m->chunked ? " chunked" : "");
	put_quoted(d, "body", m->body.p, m->body.len);
	put(d, "\n", 1);
	if (m->body.len > d->cfg->body_limit)
		fail(d, "body of %u bytes over the limit %u", m->body.len, d->cfg->body_limit);
	if (m->body_size < m->body.len)
		fail(d, "body_size %llu < body bytes %u", (unsigned long long)m->body_size,
		     m->body.len);
	if (m->body_truncated != (m->body_size > m->body.len))
		fail(d, "body_truncated %d with %llu of %u bytes", m->body_truncated,
		     (unsigned long long)m->body_size, m->body.len);
}

static const char *const flag_names[] = { "desync",	      "upgrade",     "headers_truncated",
					  "body_until_close", "no_response", "head" };

static void emit_http(struct conn_dump *d, const struct tap_frame *f)
{
	const uint64_t want = d->npairs ? d->pairs[d->npairs - 1].pair + 1 : 1;
	struct conn_dump_pair *p;
	int first = 1;

	if (f->http.pair != want)
		fail(d, "pair %llu after %llu", (unsigned long long)f->http.pair,
		     (unsigned long long)want - 1);
	if (f->http.flags & ~TAP_HTTP_F_ALL)
		fail(d, "unknown flags %#x", f->http.flags);
	d->pairs = xrealloc(d->pairs, (d->npairs + 1) * sizeof(*d->pairs));
	p = &d->pairs[d->npairs++];
	p->pair = f->http.pair;
	p->req_start = f->http.req_start;
	p->req_end = f->http.req_end;
	p->resp_start = f->http.resp_start;
	p->resp_end = f->http.resp_end;
	p->ts_ns = f->ts_ns;
	p->flags = f->http.flags;
	p->has_resp = f->http.has_resp;

	putf(d, "http pair=%llu flags=", (unsigned long long)f->http.pair);
	for (unsigned i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++) {
		if (f->http.flags & (1u << i)) {
			putf(d, "%s%s", first ? "" : ",", flag_names[i]);
			first = 0;
		}
	}
	if (first)
		put(d, "-", 1);
	if (f->http.flags & TAP_HTTP_F_DESYNC)
		putf(d, " desync=%s@%llu", dir_name(f->http.desync_dir),
		     (unsigned long long)f->http.desync_off);
	put(d, "\n", 1);
	put_msg(d, &f->http.req, 1);
	if (f->http.has_resp)
		put_msg(d, &f->http.resp, 0);
	else
		put(d, " resp none\n", 11);
}

static void emit_tcp(struct conn_dump *d, const struct tap_frame *f)
{
	enum tap_dir dir = f->tcp.dir;
	struct conn_dump_run *r;
	uint64_t end;

	d->ntcp++;
	if (dir != TAP_C2U && dir != TAP_U2C) {
		fail(d, "tcp frame with direction %d", (int)dir);
		return;
	}
	if (!f->tcp.data.len || !f->tcp.data.p)
		fail(d, "empty tcp frame at %s@%llu", dir_name(dir),
		     (unsigned long long)f->tcp.off);
	if (d->cfg->tcp_chunk && f->tcp.data.len > d->cfg->tcp_chunk)
		fail(d, "tcp frame of %u bytes over tcp_chunk %u", f->tcp.data.len,
		     d->cfg->tcp_chunk);
	r = d->nruns[dir] ? &d->runs[dir][d->nruns[dir] - 1] : NULL;
	end = r ? r->off + r->len : 0;
	if (r && f->tcp.off < end)
		fail(d, "tcp %s frame at %llu overlaps up to %llu", dir_name(dir),
		     (unsigned long long)f->tcp.off, (unsigned long long)end);
	if (!r || f->tcp.off != end) {
		d->runs[dir] = xrealloc(d->runs[dir], (d->nruns[dir] + 1) * sizeof(*r));
		r = &d->runs[dir][d->nruns[dir]++];
		memset(r, 0, sizeof(*r));
		r->off = f->tcp.off;
	}
	if (r->len + f->tcp.data.len > r->cap) {
		r->cap = (r->len + f->tcp.data.len) * 2;
		r->data = xrealloc(r->data, r->cap);
	}
	if (f->tcp.data.p)
		memcpy(r->data + r->len, f->tcp.data.p, f->tcp.data.len);
	r->len += f->tcp.data.len;
}

static void emit_tls(struct conn_dump *d, const struct tap_frame *f)
{
	d->ntls++;
	putf(d, "tls event=%d side=%d versions=0x%x sni ", (int)f->tls.event, (int)f->tls.side,
	     f->tls.versions_offered);
	put_quoted(d, "tls sni", f->tls.sni.p, f->tls.sni.len);
	put(d, " alpn", 5);
	for (unsigned i = 0; i < f->tls.nalpn_offered; i++) {
		put(d, " ", 1);
		put_quoted(d, "tls alpn", f->tls.alpn_offered[i].p, f->tls.alpn_offered[i].len);
	}
	put(d, " reason ", 8);
	put_quoted(d, "tls reason", f->tls.reason.p, f->tls.reason.len);
	put(d, "\n", 1);
}

void conn_dump_init(struct conn_dump *d, const struct tap_conn_cfg *cfg)
{
	memset(d, 0, sizeof(*d));
	d->cfg = cfg;
}

void conn_dump_fini(struct conn_dump *d)
{
	for (int dir = 0; dir < 2; dir++) {
		for (size_t i = 0; i < d->nruns[dir]; i++)
			free(d->runs[dir][i].data);
		free(d->runs[dir]);
	}
	free(d->pairs);
	free(d->text);
	memset(d, 0, sizeof(*d));
}

void conn_dump_emit(void *ctx, struct tap_frame *f)
{
	struct conn_dump *d = ctx;

	switch (f->type) {
	case TAP_FRAME_HTTP:
		emit_http(d, f);
		break;
	case TAP_FRAME_TCP:
		emit_tcp(d, f);
		break;
	case TAP_FRAME_TLS:
		emit_tls(d, f);
		break;
	default:
		fail(d, "frame of type %d", (int)f->type);
		break;
	}
}

char *conn_dump_text(const struct conn_dump *d)
{
	struct conn_dump out;
	char *text;

	conn_dump_init(&out, d->cfg);
	if (d->text)
		put(&out, d->text, d->len);
	for (int dir = 0; dir < 2; dir++) {
		for (size_t i = 0; i < d->nruns[dir]; i++) {
			const struct conn_dump_run *r = &d->runs[dir][i];

			putf(&out, "tcp %s off=%llu len=%zu ", dir_name(dir),
			     (unsigned long long)r->off, r->len);
			put_quoted(&out, "tcp data", r->data, r->len);
			put(&out, "\n", 1);
		}
	}
	if (!out.text)
		put(&out, "", 0);
	text = out.text;
	out.text = NULL;
	conn_dump_fini(&out);
	return text;
}
