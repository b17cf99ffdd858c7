/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP/1 capture of a connection: llhttp parses each direction; requests and responses pair up. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "conn_int.h"

/* One kept header: name at blk[off], its value right after it. */
struct hdr_ix {
	uint32_t off;
	uint32_t name_len;
	uint32_t value_len;
};

#define MSG_DONE (1u << 0) /* its last byte came */
#define MSG_HAS_METHOD (1u << 1) /* request: method parsed */
#define MSG_HAS_STATUS (1u << 2) /* response: status line parsed */
#define MSG_CHUNKED (1u << 3)
#define MSG_BODY_TRUNC (1u << 4)
#define MSG_HEAD_TRUNC (1u << 5) /* part of the head was left out: the rest is too */
#define MSG_LINE_DONE (1u << 6) /* target or reason complete */
#define MSG_LINE_TRUNC (1u << 7) /* target or reason cut at the limit */
#define MSG_BLK_OWNED (1u << 8) /* blk was allocated apart from its pair */

/*
 * Head storage of each message inside its pair: a small exchange (a GET with
 * a dozen headers) needs no allocation but the pair's, and the pair stays in
 * malloc's per-thread cache sizes.
 */
#define PAIR_INLINE_BLK 376u
#define MSG_BODY_MIN 256u
/* Head bytes counted for a start line besides its strings: spaces, "HTTP/1.1", CRLFs. */
#define REQ_LINE_COST 14u
#define RESP_LINE_COST 17u
/* Head bytes counted for a header besides its name and value: ": " and CRLF. */
#define HDR_COST 4u
/* Headers per message converted on the stack when a pair is emitted. */
#define HDRS_ON_STACK 32

/*
 * One HTTP/1 message as captured. <blk> holds the start line's string (request
 * target or response reason) at its front, then header names and values, and
 * the header index (struct hdr_ix) from its back, growing down.
 */
struct msg {
	char *blk;
	char *body;
	uint64_t body_size; /* decoded body bytes seen, kept or not */
	uint64_t start_ts, end_ts;
	uint32_t blk_cap;
	uint32_t head_len; /* string bytes at the front of blk */
	uint32_t head_cost; /* head bytes counted against header_limit */
	uint32_t nhdrs;
	uint32_t line_len; /* target or reason, at blk[0] */
	uint32_t body_len, body_cap;
	uint16_t status;
	uint16_t flags; /* MSG_* */
	uint8_t method, vmaj, vmin;
};

/* A request and its response, from the request's first byte until emitted. */
struct pair {
	struct pair *next;
	uint64_t no;
	struct msg req, resp;
	uint32_t flags; /* TAP_HTTP_F_* known so far */
	uint16_t info[TAP_INFORMATIONAL_MAX];
	uint8_t ninfo;
	bool final_head; /* the final response's head is complete */
	/* Not cleared when allocated: the messages' first head blocks. */
	char _Alignas(8) inline_blk[2][PAIR_INLINE_BLK];
};

/* glibc serves blocks up to 1032 bytes from a per-thread cache, without locks. */
_Static_assert(sizeof(struct pair) <= 1024, "struct pair outgrew malloc's fast sizes");

enum body_kind {
	BODY_NONE = 0,
	BODY_LENGTH, /* Content-Length: the parser counts down what remains */
	BODY_CHUNKED,
	BODY_EOF, /* response delimited by the close */
};

enum hdr_state {
	HDR_NONE = 0,
	HDR_NAME,
	HDR_VALUE,
};

/* Client bytes that came after a request asking to upgrade, before its response decided. */
struct held {
	uint64_t off, ts;
	uint32_t len, cap;
	char data[];
};

/* One direction: its parser and the message it is in. */
struct http_dir {
	llhttp_t parser;
	uint64_t ts; /* when the slice being parsed came */
	struct pair *pair; /* whose message is being parsed; NULL between messages */
	struct msg *msg;
	uint64_t hdr_len; /* header being read: name and value bytes so far, kept or not */
	uint32_t hdr_off; /* where it starts in msg->blk */
	uint32_t hdr_name; /* its name's length */
	uint8_t hdr_state; /* enum hdr_state */
	uint8_t body; /* enum body_kind, once the head is done */
	bool in_body;
};

/*
 * HTTP/1 state of a connection.
 *
 * Each request opens a pair at its first byte (queued, at most max_pending);
 * a response fills the oldest pair whose response is not complete; a pair is
 * emitted once both its messages are complete, oldest first. 1xx responses
 * other than 101 only add to the pair's informational list.
 *
 * Upgrades: llhttp stops the request parser after a request asking for one
 * (Upgrade, CONNECT). Client bytes are then held until the response decides:
 * 101, or 2xx to CONNECT, switches the connection to tcp capture (held bytes
 * first); any other final response resumes the request parser on them.
 *
 * A parse error in either direction, a response with no request, or more
 * pending requests than allowed: pending pairs go out flagged desync and
 * the rest of the connection is tcp (leave_http()).
 */
struct tap__http {
	struct http_dir d[2];
	struct tap_conn *tc;
	struct pair *head, *tail; /* pending pairs, oldest first */
	struct pair *wait_pair; /* asked to upgrade: its response decides */
	struct held *held; /* client bytes held meanwhile */
	uint64_t next_no;
	uint32_t npending;
	uint32_t header_limit, body_limit, max_pending; /* the cfg's, when the connection began */
	bool c2u_paused; /* the request parser stopped for an upgrade */
	bool resume_now; /* ... but the response already declined it */
	bool resume_c2u; /* the response declined: parse the held bytes */
};

static const char empty[1];

static inline struct tap__http *parser_http(llhttp_t *p)
{
	return p->data;
}

/* The parser is the first member of its direction. */
static inline struct http_dir *parser_dir(llhttp_t *p)
{
	return (struct http_dir *)p;
}

static inline uint32_t header_limit(const struct tap__http *h)
{
	return h->header_limit;
}

static inline uint32_t body_limit(const struct tap__http *h)
{
	return h->body_limit;
}

static inline struct hdr_ix *msg_ix(const struct msg *m, uint32_t i)
{
	return (struct hdr_ix *)(m->blk + m->blk_cap) - (i + 1);
}

/*
 * Makes room for <extra> string bytes and one more index entry (msg_reserve()
 * when they do not fit), growing the
 * block no further than a head of <limit> bytes can need: its strings, and an
 * index entry per header of at least HDR_COST + 1 bytes. Returns false when
 * out of memory.
 */
static bool msg_grow(struct msg *m, size_t extra, uint32_t limit)
{
	size_t need = (size_t)m->head_len + extra + ((size_t)m->nhdrs + 1) * sizeof(struct hdr_ix);
	size_t most = limit + ((size_t)limit / (HDR_COST + 1) + 1) * sizeof(struct hdr_ix);
	size_t cap = m->blk_cap;
	size_t ixlen = (size_t)m->nhdrs * sizeof(struct hdr_ix);
	char *blk;

	if (need <= m->blk_cap)
		return true;
	while (cap < need)
		cap *= 2;
	if (cap > most)
		cap = need > most ? need : most;
	/* The index at the back stays aligned. */
	cap = (cap + 7) & ~(size_t)7;
	if (cap > UINT32_MAX)
		return false;
	if (m->flags & MSG_BLK_OWNED) {
		blk = realloc(m->blk, cap);
		if (!blk)
			return false;
		/* The index lives at the back: move it to the new back. */
		memmove(blk + cap - ixlen, blk + m->blk_cap - ixlen, ixlen);
	} else {
		/* Out of the pair's inline block, for good. */
		blk = malloc(cap);
		if (!blk)
			return false;
		memcpy(blk, m->blk, m->head_len);
		memcpy(blk + cap - ixlen, m->blk + m->blk_cap - ixlen, ixlen);
		m->flags |= MSG_BLK_OWNED;
	}
	m->blk = blk;
	m->blk_cap = (uint32_t)cap;
	return true;
}

static inline bool msg_reserve(struct msg *m, size_t extra, uint32_t limit)
{
	if ((size_t)m->head_len + extra + ((size_t)m->nhdrs + 1) * sizeof(struct hdr_ix) <=
	    m->blk_cap)
		return true;
	return msg_grow(m, extra, limit);
}

static void msg_fini(struct msg *m)
{
	if (m->flags & MSG_BLK_OWNED)
		free(m->blk);
	free(m->body);
}

static void msg_begin(struct msg *m, uint32_t line_cost, uint64_t ts)
{
	m->start_ts = ts;
	m->end_ts = ts;
	m->head_cost = line_cost;
}

/* Forgets a 1xx response's head, keeping its storage for the response after it. */
static void msg_reset(struct msg *m)
{
	char *blk = m->blk, *body = m->body;
	uint32_t blk_cap = m->blk_cap, body_cap = m->body_cap;
	uint16_t owned = m->flags & MSG_BLK_OWNED;

	memset(m, 0, sizeof(*m));
	m->blk = blk;
	m->blk_cap = blk_cap;
	m->flags = owned;
	m->body = body;
	m->body_cap = body_cap;
}

/* A new pair, its head blocks inside it; NULL when out of memory. */
static struct pair *pair_new(struct tap__http *h)
{
	struct pair *p = malloc(sizeof(*p));

	if (!p)
		return NULL;
	memset(p, 0, offsetof(struct pair, inline_blk));
	p->no = ++h->next_no;
	for (int i = 0; i < 2; i++) {
		struct msg *m = i ? &p->resp : &p->req;

		m->blk = p->inline_blk[i];
		m->blk_cap = PAIR_INLINE_BLK;
	}
	return p;
}

static void pair_free(struct pair *p)
{
	msg_fini(&p->req);
	msg_fini(&p->resp);
	free(p);
}

/* Appends to the start line's string (target or reason): what fits under the head limit. */
static void line_append(struct tap__http *h, struct msg *m, const char *at, size_t len)
{
	uint32_t limit = header_limit(h);
	size_t room = m->head_cost < limit ? limit - m->head_cost : 0;
	size_t n = len < room ? len : room;

	if (m->flags & MSG_LINE_TRUNC)
		return;
	if (n && !msg_reserve(m, n, limit))
		n = 0;
	if (n) {
		memcpy(m->blk + m->head_len, at, n);
		m->head_len += n;
		m->line_len += n;
		m->head_cost += n;
	}
	if (n < len)
		m->flags |= MSG_LINE_TRUNC;
}

/* The target or reason is complete: it counts (and its truncation) from now on. */
static void line_end(struct msg *m)
{
	m->flags |= MSG_LINE_DONE;
	if (m->flags & MSG_LINE_TRUNC)
		m->flags |= MSG_HEAD_TRUNC;
}

/*
 * Appends a piece of a header's name or value. Whether the header is kept is
 * decided on its full length when it completes (hdr_end()), so that slicing
 * never changes what is kept; bytes past the limit are not copied at all.
 */
static void hdr_append(struct tap__http *h, struct http_dir *d, const char *at, size_t len)
{
	struct msg *m = d->msg;

	d->hdr_len += len;
	if (m->flags & MSG_HEAD_TRUNC || !len)
		return;
	if (m->head_cost + d->hdr_len + HDR_COST > header_limit(h))
		return;
	if (!msg_reserve(m, len, header_limit(h)))
		return;
	memcpy(m->blk + m->head_len, at, len);
	m->head_len += len;
}

static void hdr_end(struct tap__http *h, struct http_dir *d)
{
	struct msg *m = d->msg;
	struct hdr_ix *ix;

	d->hdr_state = HDR_NONE;
	if (!(m->flags & MSG_HEAD_TRUNC) &&
	    m->head_cost + d->hdr_len + HDR_COST <= header_limit(h) &&
	    m->head_len - d->hdr_off == d->hdr_len && msg_reserve(m, 0, header_limit(h))) {
		ix = msg_ix(m, m->nhdrs++);
		ix->off = d->hdr_off;
		ix->name_len = d->hdr_name;
		ix->value_len = (uint32_t)d->hdr_len - d->hdr_name;
		m->head_cost += (uint32_t)d->hdr_len + HDR_COST;
		return;
	}
	/* Headers past the limit are left out, and every one after them. */
	m->head_len = d->hdr_off;
	m->flags |= MSG_HEAD_TRUNC;
}

static void body_append(struct tap__http *h, struct http_dir *d, const char *at, size_t len)
{
	struct msg *m = d->msg;
	uint32_t limit = body_limit(h);
	size_t keep = limit - m->body_len;
	size_t cap;
	char *body;

	m->body_size += len;
	if (m->body_size > limit)
		m->flags |= MSG_BODY_TRUNC;
	if (keep > len)
		keep = len;
	if (!keep)
		return;
	if (m->body_len + keep > m->body_cap) {
		cap = m->body_cap ? (size_t)m->body_cap * 2 : MSG_BODY_MIN;
		while (cap < m->body_len + keep)
			cap *= 2;
		if (cap > limit)
			cap = limit;
		body = realloc(m->body, cap);
		if (!body)
			return;
		m->body = body;
		m->body_cap = (uint32_t)cap;
	}
	memcpy(m->body + m->body_len, at, keep);
	m->body_len += keep;
}

/* A Content-Length body: one allocation of the size that will be kept. */
static void body_reserve(struct tap__http *h, struct msg *m, uint64_t len)
{
	uint32_t limit = body_limit(h);
	size_t cap = len < limit ? (size_t)len : limit;
	char *body;

	if (cap <= m->body_cap)
		return;
	body = realloc(m->body, cap);
	if (!body)
		return;
	m->body = body;
	m->body_cap = (uint32_t)cap;
}

/*
 * Fills <out> from <m>, its headers into <hdrs> (room for <nroom>). Returns
 * TAP_HTTP_F_HEADERS_TRUNCATED when headers were left out, else 0.
 */
static uint32_t msg_export(const struct msg *m, bool is_req, struct tap_http_msg *out,
			   struct tap_header *hdrs, uint32_t nroom)
{
	uint32_t n = m->nhdrs < nroom ? m->nhdrs : nroom;
	/*
	 * Like a header, the target or reason goes out only once complete: llhttp
	 * passes the pieces of an unfinished one only at the end of each slice,
	 * so what came before a parse error would depend on the slicing.
	 */
	uint32_t line_len = m->flags & MSG_LINE_DONE ? m->line_len : 0;

	if (is_req) {
		if (m->flags & MSG_HAS_METHOD) {
			out->method.p = llhttp_method_name(m->method);
			out->method.len = (uint32_t)strlen(out->method.p);
		}
		out->target.p = m->blk;
		out->target.len = line_len;
	} else {
		out->status = m->status;
		out->reason.p = m->blk;
		out->reason.len = line_len;
	}
	out->version_major = m->vmaj;
	out->version_minor = m->vmin;
	for (uint32_t i = 0; i < n; i++) {
		const struct hdr_ix *ix = msg_ix(m, i);

		hdrs[i].name.p = m->blk + ix->off;
		hdrs[i].name.len = ix->name_len;
		hdrs[i].value.p = m->blk + ix->off + ix->name_len;
		hdrs[i].value.len = ix->value_len;
	}
	out->headers = hdrs;
	out->nheaders = n;
	out->body.p = m->body;
	out->body.len = m->body_len;
	out->body_size = m->body_size;
	out->body_truncated = m->flags & MSG_BODY_TRUNC;
	out->chunked = m->flags & MSG_CHUNKED;
	return m->flags & MSG_HEAD_TRUNC || n < m->nhdrs ? TAP_HTTP_F_HEADERS_TRUNCATED : 0;
}

/* A name, with its length: the length is compared first, so most names cost one compare. */
struct name {
	const char *s;
	size_t len;
};

#define NAME(lit)                    \
	{                            \
		lit, sizeof(lit) - 1 \
	}

static bool name_is(const char *p, size_t len, const struct name *names)
{
	/* Lengths, then first letters (the names are lower case): most miss before strncasecmp. */
	for (; names->s; names++)
		if (names->len == len && (p[0] | 0x20) == names->s[0] &&
		    strncasecmp(p, names->s, len) == 0)
			return true;
	return false;
}

static const struct name secret_headers[] = { NAME("authorization"),
					      NAME("proxy-authorization"),
					      NAME("cookie"),
					      NAME("set-cookie"),
					      NAME("x-api-key"),
					      NAME("x-auth-token"),
					      NAME("x-amz-security-token"),
					      { NULL, 0 } };

static const struct name secret_params[] = {
	NAME("token"),	  NAME("access_token"),	   NAME("refresh_token"),
	NAME("id_token"), NAME("api_key"),	   NAME("apikey"),
	NAME("key"),	  NAME("password"),	   NAME("passwd"),
	NAME("secret"),	  NAME("client_secret"),   NAME("signature"),
	NAME("sig"),	  NAME("x-amz-signature"), NAME("x-amz-credential"),
	{ NULL, 0 }
};

/* JSON members whose string values are credentials (names in any case: apiKey, ApiKey...). */
static const struct name secret_json_keys[] = {
	NAME("token"),	 NAME("access_token"),	NAME("refresh_token"), NAME("id_token"),
	NAME("api_key"), NAME("apikey"),	NAME("password"),      NAME("passwd"),
	NAME("secret"),	 NAME("client_secret"), NAME("authorization"), { NULL, 0 }
};

static const struct name content_type[] = { NAME("content-type"), { NULL, 0 } };

static const struct tap_str redacted = { TAP_REDACTED, sizeof(TAP_REDACTED) - 1 };

/* Replaces the values of the credential headers among <n> at <hdrs> (tap/conn.h). */
static void redact_headers(struct tap_header *hdrs, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (name_is(hdrs[i].name.p, hdrs[i].name.len, secret_headers))
			hdrs[i].value = redacted;
}

/* Room for <len> bytes whose values may each grow to the placeholder. */
static size_t redact_room(size_t len)
{
	return len + (len / 2 + 1) * redacted.len;
}

/*
 * Writes the replacement of a <len>-byte value at <out>: the placeholder, or
 * with <mask> as many '*' (a body keeps its length: its frame gives its size).
 * Returns the bytes written.
 */
static size_t put_redacted(char *out, size_t len, bool mask)
{
	if (mask) {
		memset(out, '*', len);
		return len;
	}
	memcpy(out, redacted.p, redacted.len);
	return redacted.len;
}

/*
 * Copies <len> bytes of name=value&... parameters at <s> to <out> (with
 * redact_room(len) bytes), the values of credential ones replaced (see
 * put_redacted()). Returns the bytes written; sets *<changed> when a value
 * was replaced.
 */
static size_t redact_params(const char *s, size_t len, char *out, bool mask, bool *changed)
{
	const char *end = s + len;
	size_t n = 0;

	while (s < end) {
		const char *amp = memchr(s, '&', (size_t)(end - s)), *e = amp ? amp : end;
		const char *eq = memchr(s, '=', (size_t)(e - s));

		if (eq && name_is(s, (size_t)(eq - s), secret_params)) {
			memcpy(out + n, s, (size_t)(eq - s) + 1);
			n += (size_t)(eq - s) + 1;
			n += put_redacted(out + n, (size_t)(e - eq - 1), mask);
			*changed = true;
		} else {
			memcpy(out + n, s, (size_t)(e - s));
			n += (size_t)(e - s);
		}
		if (amp)
			out[n++] = '&';
		s = e + 1;
	}
	return n;
}

/* Whether the name=value&... parameters at <s> (<len> bytes) include a credential. */
static bool has_secret_param(const char *s, size_t len)
{
	const char *end = s + len;

	while (s < end) {
		const char *amp = memchr(s, '&', (size_t)(end - s)), *e = amp ? amp : end;
		const char *eq = memchr(s, '=', (size_t)(e - s));

		if (eq && name_is(s, (size_t)(eq - s), secret_params))
			return true;
		s = e + 1;
	}
	return false;
}

/* The end of the JSON string that starts at <s> (a quote), past its closing quote, or <end>. */
static const char *json_string_end(const char *s, const char *end)
{
	for (s++; s < end; s++) {
		if (*s == '\\')
			s++;
		else if (*s == '"')
			return s + 1;
	}
	return end;
}

static const char *json_space(const char *s, const char *end)
{
	while (s < end && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n'))
		s++;
	return s;
}

/* Whether the JSON text at <s> has a member with a credential name (redact_json()'s test). */
static bool json_has_secret(const char *s, size_t len)
{
	const char *end = s + len;

	while ((s = memchr(s, '"', (size_t)(end - s)))) {
		const char *key_end = json_string_end(s, end), *colon = json_space(key_end, end);

		if (colon < end && *colon == ':' && key_end - s >= 2 &&
		    name_is(s + 1, (size_t)(key_end - s - 2), secret_json_keys))
			return true;
		s = key_end;
	}
	return false;
}

/*
 * Copies the JSON text at <s> to <out> (<len> bytes), the insides of the
 * string values of members with a credential name masked with '*' (a value
 * cut short by the body limit too). Not a validator: anything else is copied.
 */
static size_t redact_json(const char *s, size_t len, char *out, bool *changed)
{
	const char *end = s + len;
	size_t n = 0;

	while (s < end) {
		const char *key_end, *colon, *v;

		if (*s != '"') {
			out[n++] = *s++;
			continue;
		}
		key_end = json_string_end(s, end);
		memcpy(out + n, s, (size_t)(key_end - s));
		n += (size_t)(key_end - s);
		colon = json_space(key_end, end);
		if (colon == end || *colon != ':' || key_end - s < 2 ||
		    !name_is(s + 1, (size_t)(key_end - s - 2), secret_json_keys)) {
			s = key_end;
			continue;
		}
		v = json_space(colon + 1, end);
		memcpy(out + n, key_end, (size_t)(v - key_end));
		n += (size_t)(v - key_end);
		s = v;
		if (v < end && *v == '"') {
			const char *v_end = json_string_end(v, end);
			/* A value cut short has no closing quote to keep. */
			size_t inner =
				(size_t)(v_end - v) - (v_end[-1] == '"' && v_end - v > 1 ? 2 : 1);

			out[n++] = '"';
			n += put_redacted(out + n, inner, true);
			if ((size_t)(v_end - v) > inner + 1)
				out[n++] = '"';
			s = v_end;
			*changed = true;
		}
	}
	return n;
}

/*
 * <target> with the values of credential query parameters replaced, in a new
 * buffer that <target> then points to (the caller frees the return value), or
 * NULL when it has none (or no memory: then the whole query goes).
 */
static char *redact_target(struct tap_str *target)
{
	bool changed = false;
	const char *q;
	size_t n;
	char *buf;

	if (!target->len || !(q = memchr(target->p, '?', target->len)) ||
	    !has_secret_param(q + 1, (size_t)(target->p + target->len - q - 1)))
		return NULL;
	buf = malloc(redact_room(target->len));
	if (!buf) {
		target->len = (uint32_t)(q - target->p + 1);
		return NULL;
	}
	n = (size_t)(q - target->p) + 1;
	memcpy(buf, target->p, n);
	n += redact_params(q + 1, target->len - n, buf + n, false, &changed);
	if (!changed) {
		free(buf);
		return NULL;
	}
	target->p = buf;
	target->len = (uint32_t)n;
	return buf;
}

/*
 * <m>'s body with credential values masked when its Content-Type says it is a
 * form or JSON, in a new buffer of the same length as redact_target(); other
 * bodies are kept.
 */
static char *redact_body(struct tap_http_msg *m)
{
	const struct tap_str *ct = NULL;
	bool changed = false, json;
	size_t n;
	char *buf;

	for (uint32_t i = 0; i < m->nheaders; i++)
		if (name_is(m->headers[i].name.p, m->headers[i].name.len, content_type))
			ct = &m->headers[i].value;
	if (!m->body.len || !ct)
		return NULL;
	json = memmem(ct->p, ct->len, "json", 4) != NULL;
	if (json ? !json_has_secret(m->body.p, m->body.len) :
		   ct->len < 33 || strncasecmp(ct->p, "application/x-www-form-urlencoded", 33) ||
			    !has_secret_param(m->body.p, m->body.len))
		return NULL;
	buf = malloc(m->body.len);
	if (!buf) {
		/* Never the body unredacted. */
		m->body.len = 0;
		return NULL;
	}
	n = json ? redact_json(m->body.p, m->body.len, buf, &changed) :
		   redact_params(m->body.p, m->body.len, buf, true, &changed);
	if (!changed) {
		free(buf);
		return NULL;
	}
	m->body.p = buf;
	m->body.len = (uint32_t)n;
	return buf;
}

/* Emits <p> as an http frame, adding <flags> (with DESYNC, at <desync_dir>/<desync_off>). */
static void emit_pair(struct tap_conn *tc, struct pair *p, uint32_t flags, enum tap_dir desync_dir,
		      uint64_t desync_off, uint64_t ts)
{
	struct tap_header stack_hdrs[2][HDRS_ON_STACK];
	struct tap_header *hdrs[2] = { stack_hdrs[0], stack_hdrs[1] };
	uint32_t room[2] = { HDRS_ON_STACK, HDRS_ON_STACK };
	const struct msg *m[2] = { &p->req, &p->resp };
	char *target = NULL, *body[2] = { NULL, NULL };
	struct tap_frame f;

	memset(&f, 0, sizeof(f));
	f.type = TAP_FRAME_HTTP;
	f.ts_ns = ts;
	f.http.pair = p->no;
	f.http.flags = p->flags | flags;
	/* A response whose status line did not parse holds nothing understood. */
	f.http.has_resp = p->resp.flags & MSG_HAS_STATUS;
	for (int i = 0; i < 2; i++) {
		if (m[i]->nhdrs > HDRS_ON_STACK) {
			/* Out of memory: the first HDRS_ON_STACK go out, flagged truncated. */
			struct tap_header *big = malloc(m[i]->nhdrs * sizeof(*big));

			if (big) {
				hdrs[i] = big;
				room[i] = m[i]->nhdrs;
			}
		}
	}
	f.http.flags |= msg_export(&p->req, true, &f.http.req, hdrs[0], room[0]);
	f.http.req_start = p->req.start_ts;
	f.http.req_end = p->req.end_ts;
	if (f.http.has_resp) {
		f.http.flags |= msg_export(&p->resp, false, &f.http.resp, hdrs[1], room[1]);
		memcpy(f.http.resp.informational, p->info, sizeof(p->info));
		f.http.resp.ninformational = p->ninfo;
		f.http.resp_start = p->resp.start_ts;
		f.http.resp_end = p->resp.end_ts;
	}
	if (f.http.flags & TAP_HTTP_F_DESYNC) {
		f.http.desync_dir = desync_dir;
		f.http.desync_off = desync_off;
	}
	if (tc->cfg->redact) {
		redact_headers(hdrs[0], f.http.req.nheaders);
		redact_headers(hdrs[1], f.http.resp.nheaders);
		target = redact_target(&f.http.req.target);
		body[0] = redact_body(&f.http.req);
		body[1] = f.http.has_resp ? redact_body(&f.http.resp) : NULL;
	}
	tc->emit(tc->ctx, &f);
	free(target);
	free(body[0]);
	free(body[1]);
	for (int i = 0; i < 2; i++)
		if (hdrs[i] != stack_hdrs[i])
			free(hdrs[i]);
}

static struct pair *pop_pair(struct tap__http *h)
{
	struct pair *p = h->head;

	h->head = p->next;
	if (!h->head)
		h->tail = NULL;
	h->npending--;
	if (h->wait_pair == p)
		h->wait_pair = NULL;
	return p;
}

/* Emits the oldest pairs while both their messages are complete. */
static void emit_ready(struct tap__http *h, uint64_t ts)
{
	struct pair *p;

	while ((p = h->head) && p->req.flags & MSG_DONE && p->resp.flags & MSG_DONE) {
		pop_pair(h);
		emit_pair(h->tc, p, 0, TAP_C2U, 0, ts);
		pair_free(p);
	}
}

/*
 * Leaves HTTP capture: pending pairs go out, flagged desync at <dir>/<off>
 * (except, after an upgrade, the pair that upgraded), then the held client
 * bytes as tcp; tc->http is freed and the connection is tcp from now on.
 */
static void leave_http(struct tap_conn *tc, enum tap_dir dir, uint64_t off, bool upgrade,
		       uint64_t ts)
{
	struct tap__http *h = tc->http;
	struct held *held = h->held;
	struct pair *p;

	while (h->head) {
		uint32_t flags = TAP_HTTP_F_DESYNC;

		p = pop_pair(h);
		if (upgrade && p->flags & TAP_HTTP_F_UPGRADE)
			flags = 0;
		emit_pair(tc, p, flags, dir, off, ts);
		pair_free(p);
	}
	h->held = NULL;
	tap__http_free(tc);
	tc->mode = TAP__MODE_TCP;
	if (held) {
		tap__tcp_emit(tc, TAP_C2U, held->off, held->data, held->len, ts);
		free(held);
	}
}

/* llhttp callbacks: 0 goes on, -1 stops the parser and capture leaves HTTP. */

static int on_message_begin(llhttp_t *parser)
{
	struct tap__http *h = parser_http(parser);
	struct http_dir *d = parser_dir(parser);
	struct pair *p;

	if (parser->type == HTTP_REQUEST) {
		if (h->npending >= h->max_pending)
			return -1;
		p = pair_new(h);
		if (!p)
			return -1;
		if (h->tail)
			h->tail->next = p;
		else
			h->head = p;
		h->tail = p;
		h->npending++;
		d->msg = &p->req;
		msg_begin(d->msg, REQ_LINE_COST, d->ts);
	} else {
		/* The oldest pair without a complete response; none: a response to nothing. */
		for (p = h->head; p && p->resp.flags & MSG_DONE; p = p->next)
			;
		if (!p)
			return -1;
		d->msg = &p->resp;
		msg_begin(d->msg, RESP_LINE_COST, d->ts);
	}
	d->pair = p;
	d->hdr_state = HDR_NONE;
	d->body = BODY_NONE;
	d->in_body = false;
	return 0;
}

static int on_url(llhttp_t *parser, const char *at, size_t len)
{
	struct http_dir *d = parser_dir(parser);

	line_append(parser_http(parser), d->msg, at, len);
	return 0;
}

static int on_status(llhttp_t *parser, const char *at, size_t len)
{
	struct http_dir *d = parser_dir(parser);

	line_append(parser_http(parser), d->msg, at, len);
	return 0;
}

static int on_url_complete(llhttp_t *parser)
{
	line_end(parser_dir(parser)->msg);
	return 0;
}

static int on_method_complete(llhttp_t *parser)
{
	struct msg *m = parser_dir(parser)->msg;

	m->method = parser->method;
	m->flags |= MSG_HAS_METHOD;
	m->head_cost += (uint32_t)strlen(llhttp_method_name(parser->method));
	return 0;
}

static int on_version_complete(llhttp_t *parser)
{
	struct msg *m = parser_dir(parser)->msg;

	m->vmaj = parser->http_major;
	m->vmin = parser->http_minor;
	return 0;
}

static int on_status_complete(llhttp_t *parser)
{
	struct msg *m = parser_dir(parser)->msg;

	m->status = parser->status_code;
	m->flags |= MSG_HAS_STATUS;
	line_end(m);
	return 0;
}

static int on_header_field(llhttp_t *parser, const char *at, size_t len)
{
	struct http_dir *d = parser_dir(parser);

	if (d->hdr_state != HDR_NAME) {
		d->hdr_state = HDR_NAME;
		d->hdr_off = d->msg->head_len;
		d->hdr_len = 0;
	}
	hdr_append(parser_http(parser), d, at, len);
	return 0;
}

static int on_header_field_complete(llhttp_t *parser)
{
	struct http_dir *d = parser_dir(parser);

	/* An empty header name: llhttp lets it through, servers disagree on it. */
	if (d->hdr_state != HDR_NAME || !d->hdr_len)
		return -1;
	d->hdr_name = (uint32_t)d->hdr_len;
	d->hdr_state = HDR_VALUE;
	return 0;
}

static int on_header_value(llhttp_t *parser, const char *at, size_t len)
{
	hdr_append(parser_http(parser), parser_dir(parser), at, len);
	return 0;
}

static int on_header_value_complete(llhttp_t *parser)
{
	hdr_end(parser_http(parser), parser_dir(parser));
	return 0;
}

static int on_headers_complete(llhttp_t *parser)
{
	struct tap__http *h = parser_http(parser);
	struct http_dir *d = parser_dir(parser);
	struct pair *p = d->pair;
	struct msg *m = d->msg;
	unsigned status = parser->status_code;
	bool head, connect;

	m->vmaj = parser->http_major;
	m->vmin = parser->http_minor;
	if (parser->type == HTTP_RESPONSE) {
		m->status = status;
		m->flags |= MSG_HAS_STATUS;
		if (status >= 100 && status < 200 && status != 101) {
			if (p->ninfo < TAP_INFORMATIONAL_MAX)
				p->info[p->ninfo++] = status;
			return 1;
		}
		p->final_head = true;
		head = p->req.flags & MSG_HAS_METHOD && p->req.method == HTTP_HEAD;
		connect = p->req.flags & MSG_HAS_METHOD && p->req.method == HTTP_CONNECT;
		if (p == h->wait_pair) {
			/* The response to a request that asked to upgrade decides what follows. */
			h->wait_pair = NULL;
			if (status != 101 && !(connect && status / 100 == 2))
				h->resume_c2u = true;
		}
		if (status == 101) {
			p->flags |= TAP_HTTP_F_UPGRADE;
			return 0;
		}
		if (connect && status / 100 == 2) {
			/* A tunnel: no body, and llhttp stops as for an upgrade. */
			p->flags |= TAP_HTTP_F_UPGRADE;
			return 2;
		}
		if (head) {
			p->flags |= TAP_HTTP_F_HEAD;
			return 1;
		}
		if (status == 204 || status == 304)
			return 1;
	}
	d->in_body = true;
	if (parser->flags & F_CHUNKED) {
		d->body = BODY_CHUNKED;
		m->flags |= MSG_CHUNKED;
	} else if (parser->flags & F_CONTENT_LENGTH) {
		if (parser->content_length) {
			d->body = BODY_LENGTH;
			body_reserve(h, m, parser->content_length);
		}
	} else if (llhttp_message_needs_eof(parser)) {
		d->body = BODY_EOF;
		p->flags |= TAP_HTTP_F_BODY_UNTIL_CLOSE;
	}
	return 0;
}

static int on_body(llhttp_t *parser, const char *at, size_t len)
{
	body_append(parser_http(parser), parser_dir(parser), at, len);
	return 0;
}

static int on_message_complete(llhttp_t *parser)
{
	struct tap__http *h = parser_http(parser);
	struct http_dir *d = parser_dir(parser);
	struct pair *p = d->pair;
	struct msg *m = d->msg;

	d->pair = NULL;
	d->msg = NULL;
	d->in_body = false;
	if (parser->type == HTTP_RESPONSE && m->status >= 100 && m->status < 200 &&
	    m->status != 101) {
		msg_reset(m);
		return 0;
	}
	m->flags |= MSG_DONE;
	m->end_ts = d->ts;
	if (parser->type == HTTP_REQUEST && parser->upgrade) {
		/* llhttp stops after this request: see tap__http_feed(). */
		if (p->final_head)
			h->resume_now = true;
		else
			h->wait_pair = p;
	}
	emit_ready(h, d->ts);
	/*
	 * A response that declined an upgrade: the held client bytes must be
	 * parsed (opening their pairs) before the next response begins.
	 */
	if (parser->type == HTTP_RESPONSE && h->resume_c2u)
		return HPE_PAUSED;
	return 0;
}

static const llhttp_settings_t http_settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_status = on_status,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
	.on_url_complete = on_url_complete,
	.on_method_complete = on_method_complete,
	.on_version_complete = on_version_complete,
	.on_status_complete = on_status_complete,
	.on_header_field_complete = on_header_field_complete,
	.on_header_value_complete = on_header_value_complete,
};

int tap__http_start(struct tap_conn *tc)
{
	struct tap__http *h;

	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->tc = tc;
	h->header_limit = tc->cfg->header_limit;
	h->body_limit = tc->cfg->body_limit;
	h->max_pending = tc->cfg->max_pending ? tc->cfg->max_pending : 1;
	/* No lenient flag, ever: smuggling-shaped framing must stop the parser. */
	llhttp_init(&h->d[TAP_C2U].parser, HTTP_REQUEST, &http_settings);
	llhttp_init(&h->d[TAP_U2C].parser, HTTP_RESPONSE, &http_settings);
	h->d[TAP_C2U].parser.data = h;
	h->d[TAP_U2C].parser.data = h;
	tc->http = h;
	return 0;
}

void tap__http_free(struct tap_conn *tc)
{
	struct tap__http *h = tc->http;
	struct pair *p;

	if (!h)
		return;
	while ((p = h->head)) {
		h->head = p->next;
		pair_free(p);
	}
	free(h->held);
	free(h);
	tc->http = NULL;
}

/*
 * Holds client bytes while an upgrade is undecided, up to the head limit.
 * Returns <len>, or 0 when they did not fit: capture left HTTP.
 */
static size_t hold(struct tap_conn *tc, const char *buf, size_t len, uint64_t base, uint64_t ts)
{
	struct tap__http *h = tc->http;
	struct held *held = h->held;
	size_t have = held ? held->len : 0;
	size_t cap;

	if (!len)
		return 0;
	if (have + len > h->header_limit)
		goto err_leave;
	if (!held || have + len > held->cap) {
		cap = held ? held->cap : MSG_BODY_MIN;
		while (cap < have + len)
			cap *= 2;
		if (cap > h->header_limit)
			cap = h->header_limit;
		held = realloc(held, sizeof(*held) + cap);
		if (!held)
			goto err_leave;
		if (!h->held) {
			held->off = base;
			held->ts = ts;
			held->len = 0;
		}
		held->cap = (uint32_t)cap;
		h->held = held;
	}
	memcpy(held->data + held->len, buf, len);
	held->len += len;
	return len;

err_leave:
	leave_http(tc, TAP_C2U, h->held ? h->held->off : base, false, ts);
	return 0;
}

/* The response declined the upgrade: the request parser goes on with the held bytes. */
static void resume_c2u(struct tap_conn *tc)
{
	struct tap__http *h = tc->http;
	struct held *held = h->held;
	size_t n;

	h->resume_c2u = false;
	h->held = NULL;
	if (h->c2u_paused) {
		h->c2u_paused = false;
		llhttp_resume_after_upgrade(&h->d[TAP_C2U].parser);
	}
	if (!held)
		return;
	n = tap__http_feed(tc, TAP_C2U, held->data, held->len, held->off, held->ts);
	if (n < held->len)
		tap__tcp_emit(tc, TAP_C2U, held->off + n, held->data + n, held->len - n, held->ts);
	free(held);
}

size_t tap__http_feed(struct tap_conn *tc, enum tap_dir dir, const char *buf, size_t len,
		      uint64_t base, uint64_t ts_ns)
{
	struct tap__http *h = tc->http;
	struct http_dir *d = &h->d[dir];
	size_t pos = 0, at;
	llhttp_errno_t err;

	if (dir == TAP_C2U && h->c2u_paused)
		return hold(tc, buf, len, base, ts_ns);
	d->ts = ts_ns;
	for (;;) {
		err = llhttp_execute(&d->parser, buf + pos, len - pos);
		if (err == HPE_OK)
			break;
		at = pos;
		if (d->parser.error_pos >= buf + pos && d->parser.error_pos <= buf + len)
			at = d->parser.error_pos - buf;
		if (err == HPE_PAUSED && dir == TAP_U2C && h->resume_c2u) {
			resume_c2u(tc);
			if (tc->mode != TAP__MODE_HTTP)
				return at;
			llhttp_resume(&d->parser);
			pos = at;
			continue;
		}
		if (err != HPE_PAUSED_UPGRADE) {
			leave_http(tc, dir, base + at, false, ts_ns);
			return at;
		}
		if (dir == TAP_U2C) {
			/* 101 or a CONNECT tunnel: what follows the head is the new protocol. */
			leave_http(tc, TAP_U2C, base + at, true, ts_ns);
			return at;
		}
		if (h->resume_now) {
			h->resume_now = false;
			llhttp_resume_after_upgrade(&d->parser);
			pos = at;
			continue;
		}
		h->c2u_paused = true;
		return at + hold(tc, buf + at, len - at, base + at, ts_ns);
	}
	if (d->msg)
		d->msg->end_ts = ts_ns;
	return len;
}

void tap__http_eof(struct tap_conn *tc, enum tap_dir dir, uint64_t ts_ns)
{
	struct http_dir *d = &tc->http->d[dir];

	/* Only a response can be delimited by the close; a broken one waits for tap_conn_end(). */
	if (dir != TAP_U2C || d->parser.error != HPE_OK)
		return;
	d->ts = ts_ns;
	llhttp_finish(&d->parser);
	if (tc->http->resume_c2u)
		resume_c2u(tc);
}

void tap__http_end(struct tap_conn *tc, uint64_t ts_ns)
{
	struct tap__http *h = tc->http;
	struct held *held = h->held;
	struct pair *p;

	while (h->head) {
		p = pop_pair(h);
		emit_pair(tc, p, p->resp.flags & MSG_DONE ? 0 : TAP_HTTP_F_NO_RESPONSE, TAP_C2U, 0,
			  ts_ns);
		pair_free(p);
	}
	h->held = NULL;
	tap__http_free(tc);
	if (held) {
		tap__tcp_emit(tc, TAP_C2U, held->off, held->data, held->len, ts_ns);
		free(held);
	}
}

size_t tap__http_memory(const struct tap_conn *tc)
{
	const struct tap__http *h = tc->http;
	size_t n = sizeof(*h);

	if (h->held)
		n += sizeof(*h->held) + h->held->cap;
	for (const struct pair *p = h->head; p; p = p->next)
		n += sizeof(*p) + p->req.body_cap + p->resp.body_cap +
		     (p->req.flags & MSG_BLK_OWNED ? p->req.blk_cap : 0) +
		     (p->resp.flags & MSG_BLK_OWNED ? p->resp.blk_cap : 0);
	return n;
}

bool tap__http_wants(const struct tap_conn *tc, enum tap_dir dir, uint64_t *skip)
{
	const struct http_dir *d = &tc->http->d[dir];

	if (!d->in_body || d->msg->body_len < tc->http->body_limit)
		return true;
	if (d->body == BODY_LENGTH && d->parser.content_length) {
		*skip = d->parser.content_length;
		return false;
	}
	if (d->body == BODY_EOF) {
		*skip = UINT64_MAX;
		return false;
	}
	return true;
}

void tap__http_skip(struct tap_conn *tc, enum tap_dir dir, uint64_t len, uint64_t ts_ns)
{
	struct tap__http *h = tc->http;
	struct http_dir *d = &h->d[dir];
	uint64_t skip;

	if (!(dir == TAP_C2U && h->c2u_paused) && !tap__http_wants(tc, dir, &skip) && len <= skip) {
		d->msg->body_size += len;
		d->msg->flags |= MSG_BODY_TRUNC;
		d->msg->end_ts = ts_ns;
		if (d->body == BODY_EOF)
			return;
		/*
		 * llhttp counts the body down in content_length: take the skipped
		 * bytes off, and let it see the end of the body with no bytes.
		 */
		d->parser.content_length -= len;
		if (!d->parser.content_length)
			tap__http_feed(tc, dir, empty, 0, tc->off[dir] + len, ts_ns);
		return;
	}
	/* Bytes the parser needed went by: it cannot follow any more. */
	leave_http(tc, dir, tc->off[dir], false, ts_ns);
}
