/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of capture/src/conn.c and http.c: per-connection capture against the HTTP corpus. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conn_dump.h"
#include "tap/conn.h"
#include "tap/sniff.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifdef UNDER_ASAN
#include <sanitizer/lsan_interface.h>
#endif

#ifndef SIDETAP_CORPUS_DIR
#error "SIDETAP_CORPUS_DIR must name tests/corpus"
#endif

/*
 * Criterion reports a test before its worker exits, where LeakSanitizer would
 * look, and ignores failures in .fini: each test checks for leaks at its end.
 */
static void no_leaks(void)
{
#ifdef UNDER_ASAN
	cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "LeakSanitizer found leaks (above)");
#endif
}

/* A corpus case: each direction's bytes, the turns that interleave them, its limits. */
struct corpus {
	char name[64];
	unsigned char *data[2];
	size_t len[2];
	struct {
		enum tap_dir dir;
		size_t len;
	} turns[64];
	size_t nturns;
	struct tap_conn_cfg cfg;
};

enum slicing {
	SLICE_WHOLE, /* each turn in one slice */
	SLICE_SPLIT, /* one turn cut in two at a stream offset */
	SLICE_BYTES, /* one byte at a time */
	SLICE_RANDOM, /* random lengths */
};

struct plan {
	enum slicing slicing;
	enum tap_dir split_dir;
	size_t split_at;
	unsigned seed;
	bool skip; /* act like the engine: skip what tap_conn_wants() offers */
};

static unsigned char *read_file(const char *path, size_t *len)
{
	unsigned char *buf = NULL;
	size_t cap = 0, n;
	FILE *f = fopen(path, "rb");

	*len = 0;
	if (!f)
		return NULL;
	for (;;) {
		if (*len == cap) {
			cap = cap ? cap * 2 : 4096;
			buf = realloc(buf, cap + 1);
			cr_assert(buf);
		}
		n = fread(buf + *len, 1, cap - *len, f);
		if (!n)
			break;
		*len += n;
	}
	fclose(f);
	buf[*len] = '\0';
	return buf;
}

static void corpus_path(char *buf, size_t size, const char *name, const char *ext)
{
	snprintf(buf, size, "%s/http/%s.%s", SIDETAP_CORPUS_DIR, name, ext);
}

static void parse_cfg(struct tap_conn_cfg *cfg, char *line)
{
	char *save = NULL;

	for (char *tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
		unsigned v;
		char key[32];

		cr_assert_eq(sscanf(tok, "%31[a-z_]=%u", key, &v), 2, "bad cfg token %s", tok);
		if (!strcmp(key, "body_limit"))
			cfg->body_limit = v;
		else if (!strcmp(key, "header_limit"))
			cfg->header_limit = v;
		else if (!strcmp(key, "max_pending"))
			cfg->max_pending = v;
		else if (!strcmp(key, "tcp_chunk"))
			cfg->tcp_chunk = v;
		else
			cr_assert_fail("unknown cfg key %s", key);
	}
}

static void corpus_load(struct corpus *cc, const char *name)
{
	static const char *const ext[2] = { "c2u", "u2c" };
	char path[512], line[256];
	size_t used[2] = { 0, 0 };
	FILE *f;

	memset(cc, 0, sizeof(*cc));
	snprintf(cc->name, sizeof(cc->name), "%s", name);
	tap_conn_cfg_default(&cc->cfg);
	/* Small tcp frames, so that tcp chunking is exercised by every case. */
	cc->cfg.tcp_chunk = 7;
	for (int d = 0; d < 2; d++) {
		corpus_path(path, sizeof(path), name, ext[d]);
		cc->data[d] = read_file(path, &cc->len[d]);
		cr_assert(cc->data[d], "cannot read %s", path);
	}
	corpus_path(path, sizeof(path), name, "case");
	f = fopen(path, "r");
	cr_assert(f, "cannot read %s", path);
	while (fgets(line, sizeof(line), f)) {
		size_t n;

		if (!strncmp(line, "cfg ", 4)) {
			parse_cfg(&cc->cfg, line + 4);
			continue;
		}
		cr_assert_lt(cc->nturns, 64);
		cr_assert_eq(sscanf(line + 4, "%zu", &n), 1, "bad turn %s", line);
		cc->turns[cc->nturns].dir = strncmp(line, "c2u", 3) == 0 ? TAP_C2U : TAP_U2C;
		cc->turns[cc->nturns].len = n;
		used[cc->turns[cc->nturns].dir] += n;
		cc->nturns++;
	}
	fclose(f);
	cr_assert_eq(used[0], cc->len[0], "%s: turns do not cover c2u", name);
	cr_assert_eq(used[1], cc->len[1], "%s: turns do not cover u2c", name);
}

static void corpus_free(struct corpus *cc)
{
	free(cc->data[0]);
	free(cc->data[1]);
}

static unsigned next_rand(unsigned *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static size_t slice_len(const struct plan *pl, unsigned *rnd, enum tap_dir dir, size_t pos,
			size_t end)
{
	size_t n;

	switch (pl->slicing) {
	case SLICE_SPLIT:
		if (dir == pl->split_dir && pos < pl->split_at && pl->split_at < end)
			return pl->split_at - pos;
		return end - pos;
	case SLICE_BYTES:
		return 1;
	case SLICE_RANDOM:
		n = 1 + next_rand(rnd) % (next_rand(rnd) % 4 ? 8 : 300);
		return n < end - pos ? n : end - pos;
	case SLICE_WHOLE:
		break;
	}
	return end - pos;
}

/*
 * Slices are fed from a copy that ends right at an unreadable page, and the
 * copy is scribbled over after each call: a read past a slice faults, and a
 * pointer kept into an old slice shows up as different frames.
 */
struct guard {
	unsigned char *base;
	size_t size; /* readable bytes before the guard page */
};

static void guard_init(struct guard *g, size_t max)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	g->size = (max + page - 1) / page * page + page;
	g->base = mmap(NULL, g->size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	cr_assert(g->base != MAP_FAILED);
	cr_assert_eq(mprotect(g->base + g->size, page, PROT_NONE), 0);
}

static void guard_fini(struct guard *g)
{
	munmap(g->base, g->size + (size_t)sysconf(_SC_PAGESIZE));
}

static void guard_feed(struct guard *g, struct tap_conn *tc, enum tap_dir dir, const void *buf,
		       size_t len, uint64_t ts)
{
	unsigned char *p = g->base + g->size - len;

	memcpy(p, buf, len);
	tap_conn_feed(tc, dir, p, len, ts);
	memset(p, 0xaa, len);
}

/*
 * Feeds the case's turns to a new tap_conn as <pl> slices them, then EOF both
 * ways and the end; the frames go to <out>. Timestamps count up from 1000 per
 * call. Returns the connection's proto.
 */
static int run_case(const struct corpus *cc, const struct plan *pl, struct conn_dump *out)
{
	struct tap_conn *tc;
	size_t pos[2] = { 0, 0 };
	unsigned rnd = pl->seed | 1;
	uint64_t ts = 1000;
	int proto;

	struct guard g;

	guard_init(&g, cc->len[0] > cc->len[1] ? cc->len[0] : cc->len[1]);
	conn_dump_init(out, &cc->cfg);
	tc = tap_conn_new(&cc->cfg, conn_dump_emit, out);
	cr_assert(tc);
	for (size_t t = 0; t < cc->nturns; t++) {
		enum tap_dir dir = cc->turns[t].dir;
		size_t end = pos[dir] + cc->turns[t].len;

		while (pos[dir] < end) {
			uint64_t skip;
			size_t n;

			if (pl->skip && !tap_conn_wants(tc, dir, &skip)) {
				n = skip < end - pos[dir] ? (size_t)skip : end - pos[dir];
				cr_assert_gt(n, 0);
				tap_conn_skip(tc, dir, n, ts++);
				pos[dir] += n;
				cr_assert_eq(tap_conn_offset(tc, dir), pos[dir]);
				continue;
			}
			n = slice_len(pl, &rnd, dir, pos[dir], end);
			guard_feed(&g, tc, dir, cc->data[dir] + pos[dir], n, ts++);
			pos[dir] += n;
			cr_assert_eq(tap_conn_offset(tc, dir), pos[dir]);
		}
	}
	tap_conn_eof(tc, TAP_U2C, ts++);
	tap_conn_eof(tc, TAP_C2U, ts++);
	tap_conn_end(tc, ts++);
	proto = tap_conn_proto(tc);
	tap_conn_free(tc);
	guard_fini(&g);
	return proto;
}

static const char *plan_name(const struct plan *pl, char *buf, size_t size)
{
	switch (pl->slicing) {
	case SLICE_WHOLE:
		snprintf(buf, size, "whole%s", pl->skip ? " +skip" : "");
		break;
	case SLICE_SPLIT:
		snprintf(buf, size, "split %s at %zu%s", pl->split_dir == TAP_C2U ? "c2u" : "u2c",
			 pl->split_at, pl->skip ? " +skip" : "");
		break;
	case SLICE_BYTES:
		snprintf(buf, size, "byte at a time%s", pl->skip ? " +skip" : "");
		break;
	case SLICE_RANDOM:
		snprintf(buf, size, "random seed %u%s", pl->seed, pl->skip ? " +skip" : "");
		break;
	}
	return buf;
}

/* Runs <pl> and asserts that it gives exactly <want> with no broken invariant. */
static void expect_same(const struct corpus *cc, const struct plan *pl, const char *want)
{
	struct conn_dump d;
	char name[64];
	char *got;

	run_case(cc, pl, &d);
	got = conn_dump_text(&d);
	cr_assert_str_empty(d.err, "%s, %s: %s", cc->name, plan_name(pl, name, sizeof(name)),
			    d.err);
	cr_assert_str_eq(got, want, "%s, %s: frames differ from whole:\n--- got\n%s--- want\n%s",
			 cc->name, plan_name(pl, name, sizeof(name)), got, want);
	free(got);
	conn_dump_fini(&d);
}

/*
 * The corpus check of one case: fed whole, the frames must be those of
 * NAME.expect (CONN_CORPUS_BLESS=1 rewrites it, to be read before committing);
 * then every slicing (TESTPLAN P3), with the engine's skips, must give the same.
 */
static void check_case(const char *name)
{
	struct plan whole = { .slicing = SLICE_WHOLE };
	struct corpus cc;
	struct conn_dump d;
	char path[512];
	unsigned char *want;
	size_t want_len;
	char *text;

	corpus_load(&cc, name);
	run_case(&cc, &whole, &d);
	cr_assert_str_empty(d.err, "%s: %s", name, d.err);
	for (size_t i = 0; i < d.npairs; i++) {
		const struct conn_dump_pair *p = &d.pairs[i];

		cr_expect(p->req_start && p->req_start <= p->req_end, "%s pair %zu: request timing",
			  name, i + 1);
		if (p->has_resp)
			cr_expect(p->resp_start && p->resp_start <= p->resp_end,
				  "%s pair %zu: response timing", name, i + 1);
		else
			cr_expect(!p->resp_start && !p->resp_end,
				  "%s pair %zu: no response, no timing", name, i + 1);
	}
	text = conn_dump_text(&d);
	conn_dump_fini(&d);

	corpus_path(path, sizeof(path), name, "expect");
	if (getenv("CONN_CORPUS_BLESS")) {
		FILE *f = fopen(path, "w");

		cr_assert(f, "cannot write %s", path);
		fputs(text, f);
		fclose(f);
	}
	want = read_file(path, &want_len);
	cr_assert(want, "cannot read %s", path);
	cr_assert_str_eq(text, (char *)want, "%s: frames differ from %s:\n--- got\n%s--- want\n%s",
			 name, path, text, want);
	free(want);

	expect_same(&cc, &(struct plan){ .slicing = SLICE_WHOLE, .skip = true }, text);
	expect_same(&cc, &(struct plan){ .slicing = SLICE_BYTES }, text);
	expect_same(&cc, &(struct plan){ .slicing = SLICE_BYTES, .skip = true }, text);
	for (int dir = 0; dir < 2; dir++) {
		for (size_t at = 1; at < cc.len[dir]; at++) {
			struct plan pl = { .slicing = SLICE_SPLIT,
					   .split_dir = dir,
					   .split_at = at,
					   .skip = at & 1 };

			expect_same(&cc, &pl, text);
		}
	}
	for (unsigned seed = 1; seed <= 40; seed++)
		expect_same(
			&cc,
			&(struct plan){ .slicing = SLICE_RANDOM, .seed = seed, .skip = seed & 1 },
			text);
	free(text);
	corpus_free(&cc);
}

#define CORPUS_CASE(name)           \
	Test(tap_conn_corpus, name) \
	{                           \
		check_case(#name);  \
		no_leaks();         \
	}

CORPUS_CASE(get_keepalive)
CORPUS_CASE(post_content_length)
CORPUS_CASE(chunked_upload)
CORPUS_CASE(chunked_trailers)
CORPUS_CASE(expect_continue)
CORPUS_CASE(early_hints)
CORPUS_CASE(pipeline_100)
CORPUS_CASE(pipeline_overflow)
CORPUS_CASE(head)
CORPUS_CASE(no_content_204)
CORPUS_CASE(not_modified_304)
CORPUS_CASE(until_close)
CORPUS_CASE(until_close_big)
CORPUS_CASE(big_body)
CORPUS_CASE(many_headers)
CORPUS_CASE(long_target)
CORPUS_CASE(websocket)
CORPUS_CASE(connect_tunnel)
CORPUS_CASE(upgrade_declined)
CORPUS_CASE(connect_declined)
CORPUS_CASE(redis)
CORPUS_CASE(smtp_server_first)
CORPUS_CASE(tls_client_hello)
CORPUS_CASE(tls_truncated_hello)
CORPUS_CASE(garbage_after_pair)
CORPUS_CASE(garbage_response)
CORPUS_CASE(no_response)
CORPUS_CASE(partial_response)
CORPUS_CASE(skip_body)
CORPUS_CASE(smuggle_cl_te)
CORPUS_CASE(smuggle_te_chunked_chunked)
CORPUS_CASE(smuggle_te_chunked_gzip)
CORPUS_CASE(smuggle_te_gzip)
CORPUS_CASE(smuggle_dup_cl)
CORPUS_CASE(smuggle_cl_plus)
CORPUS_CASE(smuggle_te_space_colon)
CORPUS_CASE(smuggle_nul_value)
CORPUS_CASE(smuggle_empty_name)
CORPUS_CASE(smuggle_cr_value)
CORPUS_CASE(smuggle_chunk_bare_lf)
CORPUS_CASE(smuggle_cr_end_of_headers)
CORPUS_CASE(smuggle_chunk_size_cr)

/* Direct tests of the interface, one behaviour each. */

struct conn_fixture {
	struct tap_conn_cfg cfg;
	struct conn_dump d;
	struct tap_conn *tc;
};

static void fx_init(struct conn_fixture *fx)
{
	tap_conn_cfg_default(&fx->cfg);
	conn_dump_init(&fx->d, &fx->cfg);
	fx->tc = tap_conn_new(&fx->cfg, conn_dump_emit, &fx->d);
	cr_assert(fx->tc);
}

static void fx_feed(struct conn_fixture *fx, enum tap_dir dir, const char *s, uint64_t ts)
{
	tap_conn_feed(fx->tc, dir, s, strlen(s), ts);
}

/* Feeds <s> in slices of <step> bytes (the last may be shorter). */
static void fx_feed_sliced(struct conn_fixture *fx, enum tap_dir dir, const char *s, size_t step,
			   uint64_t ts)
{
	size_t len = strlen(s);

	for (size_t off = 0; off < len; off += step)
		tap_conn_feed(fx->tc, dir, s + off, off + step < len ? step : len - off, ts);
}

/* Ends the connection and returns the canonical text (the caller frees it). */
static char *fx_end(struct conn_fixture *fx, uint64_t ts)
{
	char *text;

	tap_conn_end(fx->tc, ts);
	cr_assert_str_empty(fx->d.err, "%s", fx->d.err);
	text = conn_dump_text(&fx->d);
	return text;
}

static void fx_fini(struct conn_fixture *fx)
{
	tap_conn_free(fx->tc);
	fx->tc = NULL;
	conn_dump_fini(&fx->d);
}

/* One frame as the emit callback saw it, copied out for field checks. */
struct one_frame {
	int n;
	struct tap_frame f;
	char method[16], target[64], reason[64], hname[64], hvalue[64], body[64];
	uint32_t nreq_headers;
};

static void copy_str(char *dst, size_t size, struct tap_str s)
{
	size_t n = s.len < size - 1 ? s.len : size - 1;

	memcpy(dst, s.p ? s.p : "", n);
	dst[n] = '\0';
}

static void feed_str(struct tap_conn *tc, enum tap_dir dir, const char *s, uint64_t ts)
{
	tap_conn_feed(tc, dir, s, strlen(s), ts);
}

static void keep_one(void *ctx, struct tap_frame *f)
{
	struct one_frame *o = ctx;

	o->n++;
	cr_assert_eq(f->type, TAP_FRAME_HTTP);
	o->f = *f;
	copy_str(o->method, sizeof(o->method), f->http.req.method);
	copy_str(o->target, sizeof(o->target), f->http.req.target);
	copy_str(o->reason, sizeof(o->reason), f->http.resp.reason);
	if (f->http.req.nheaders) {
		copy_str(o->hname, sizeof(o->hname), f->http.req.headers[0].name);
		copy_str(o->hvalue, sizeof(o->hvalue), f->http.req.headers[0].value);
	}
	copy_str(o->body, sizeof(o->body), f->http.resp.body);
	o->nreq_headers = f->http.req.nheaders;
}

Test(tap_conn, pair_fields_and_timings_from_slices)
{
	struct tap_conn_cfg cfg;
	struct one_frame o = { 0 };
	struct tap_conn *tc;

	tap_conn_cfg_default(&cfg);
	tc = tap_conn_new(&cfg, keep_one, &o);
	cr_assert(tc);
	feed_str(tc, TAP_C2U, "GET /a?b=1 HTTP/1.1\r\nHo", 10);
	feed_str(tc, TAP_C2U, "st: x\r\n\r\n", 20);
	cr_assert_eq(o.n, 0, "nothing before the response");
	feed_str(tc, TAP_U2C, "HTTP/1.1 201 Made\r\nContent-Length: 5\r\n\r\nab", 30);
	feed_str(tc, TAP_U2C, "cde", 40);
	cr_assert_eq(o.n, 1, "the pair goes out with the response's last byte");
	cr_assert_eq(o.f.type, TAP_FRAME_HTTP);
	cr_assert_eq(o.f.ts_ns, 40);
	cr_assert_eq(o.f.http.pair, 1);
	cr_assert_str_eq(o.method, "GET");
	cr_assert_str_eq(o.target, "/a?b=1");
	cr_assert_eq(o.f.http.req.version_major, 1);
	cr_assert_eq(o.f.http.req.version_minor, 1);
	cr_assert_eq(o.nreq_headers, 1);
	cr_assert_str_eq(o.hname, "Host");
	cr_assert_str_eq(o.hvalue, "x");
	cr_assert(o.f.http.has_resp);
	cr_assert_eq(o.f.http.resp.status, 201);
	cr_assert_str_eq(o.reason, "Made");
	cr_assert_str_eq(o.body, "abcde");
	cr_assert_eq(o.f.http.resp.body_size, 5);
	cr_assert_not(o.f.http.resp.body_truncated);
	cr_assert_eq(o.f.http.flags, 0);
	cr_assert_eq(o.f.http.req_start, 10);
	cr_assert_eq(o.f.http.req_end, 20);
	cr_assert_eq(o.f.http.resp_start, 30);
	cr_assert_eq(o.f.http.resp_end, 40);
	tap_conn_end(tc, 50);
	cr_assert_eq(o.n, 1, "nothing pending at the end");
	tap_conn_free(tc);
	no_leaks();
}

Test(tap_conn, final_response_timing_skips_1xx)
{
	struct tap_conn_cfg cfg;
	struct one_frame o = { 0 };
	struct tap_conn *tc;

	tap_conn_cfg_default(&cfg);
	tc = tap_conn_new(&cfg, keep_one, &o);
	feed_str(tc, TAP_C2U, "PUT / HTTP/1.1\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
		 10);
	feed_str(tc, TAP_U2C, "HTTP/1.1 100 Continue\r\n\r\n", 20);
	feed_str(tc, TAP_C2U, "x", 30);
	feed_str(tc, TAP_U2C, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 40);
	cr_assert_eq(o.n, 1);
	cr_assert_eq(o.f.http.req_end, 30);
	cr_assert_eq(o.f.http.resp_start, 40, "the final response's first byte, not the 100's");
	cr_assert_eq(o.f.http.resp.ninformational, 1);
	cr_assert_eq(o.f.http.resp.informational[0], 100);
	tap_conn_end(tc, 50);
	tap_conn_free(tc);
	no_leaks();
}

Test(tap_conn, skip_offered_past_body_limit_then_next_pair)
{
	struct conn_fixture fx;
	uint64_t skip = 0;
	char body[200];
	char *text;

	fx_init(&fx);
	fx.cfg.body_limit = 16;
	memset(body, 'b', sizeof(body));
	fx_feed(&fx, TAP_C2U, "POST /up HTTP/1.1\r\nContent-Length: 200\r\n\r\n", 1);
	cr_assert(tap_conn_wants(fx.tc, TAP_C2U, &skip), "limit not reached yet");
	tap_conn_feed(fx.tc, TAP_C2U, body, 10, 2);
	cr_assert(tap_conn_wants(fx.tc, TAP_C2U, &skip));
	tap_conn_feed(fx.tc, TAP_C2U, body, 20, 3);
	cr_assert_not(tap_conn_wants(fx.tc, TAP_C2U, &skip), "past the limit with a known length");
	cr_assert_eq(skip, 170);
	cr_assert(tap_conn_wants(fx.tc, TAP_U2C, &skip), "the other direction is unaffected");
	/* The engine may move the offered bytes in pieces. */
	tap_conn_skip(fx.tc, TAP_C2U, 100, 4);
	cr_assert_not(tap_conn_wants(fx.tc, TAP_C2U, &skip));
	cr_assert_eq(skip, 70);
	tap_conn_skip(fx.tc, TAP_C2U, 70, 5);
	cr_assert_eq(tap_conn_offset(fx.tc, TAP_C2U), 42 + 200);
	cr_assert(tap_conn_wants(fx.tc, TAP_C2U, &skip),
		  "the body is over: the next head is needed");
	fx_feed(&fx, TAP_C2U, "GET /next HTTP/1.1\r\n\r\n", 6);
	fx_feed(&fx, TAP_U2C, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 7);
	fx_feed(&fx, TAP_U2C, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz", 8);
	cr_assert_eq(fx.d.npairs, 2);
	cr_assert_eq(fx.d.pairs[0].req_end, 5, "the request ended with the skipped bytes");
	text = fx_end(&fx, 9);
	cr_assert(strstr(text, "body size=200 truncated \"bbbbbbbbbbbbbbbb\"\n"), "%s", text);
	cr_assert(strstr(text, "http pair=2 flags=-\n req \"GET\" \"/next\""), "%s", text);
	cr_assert_null(strstr(text, "desync"), "%s", text);
	free(text);
	fx_fini(&fx);
	no_leaks();
}

Test(tap_conn, skip_until_close_offers_the_rest)
{
	struct conn_fixture fx;
	uint64_t skip = 0;
	char *text;

	fx_init(&fx);
	fx.cfg.body_limit = 4;
	fx_feed(&fx, TAP_C2U, "GET / HTTP/1.1\r\n\r\n", 1);
	fx_feed(&fx, TAP_U2C, "HTTP/1.1 200 OK\r\n\r\nabcdefgh", 2);
	cr_assert_not(tap_conn_wants(fx.tc, TAP_U2C, &skip));
	cr_assert_eq(skip, UINT64_MAX, "nothing more is captured in this direction");
	tap_conn_skip(fx.tc, TAP_U2C, 1000, 3);
	tap_conn_eof(fx.tc, TAP_U2C, 4);
	cr_assert_eq(fx.d.npairs, 1, "the close completes the response");
	text = fx_end(&fx, 5);
	cr_assert(strstr(text, "flags=body_until_close\n"), "%s", text);
	cr_assert(strstr(text, "body size=1008 truncated \"abcd\"\n"), "%s", text);
	free(text);
	fx_fini(&fx);
	no_leaks();
}

Test(tap_conn, skip_not_offered_leaves_http_with_a_gap)
{
	struct conn_fixture fx;
	char *text;

	fx_init(&fx);
	fx_feed(&fx, TAP_C2U, "GET / HTTP/1.1\r\n", 1);
	tap_conn_skip(fx.tc, TAP_C2U, 5, 2);
	fx_feed(&fx, TAP_C2U, "rest", 3);
	text = fx_end(&fx, 4);
	cr_assert(strstr(text, "flags=desync desync=c2u@16\n"), "%s", text);
	cr_assert(strstr(text, "tcp c2u off=21 len=4 \"rest\"\n"), "%s", text);
	free(text);
	fx_fini(&fx);
	no_leaks();
}

Test(tap_conn, tcp_capture_always_wants_and_chunks)
{
	struct conn_fixture fx;
	uint64_t skip;
	char data[100];

	fx_init(&fx);
	fx.cfg.tcp_chunk = 16;
	memset(data, 'r', sizeof(data));
	data[0] = '*';
	tap_conn_feed(fx.tc, TAP_C2U, data, sizeof(data), 1);
	cr_assert(tap_conn_wants(fx.tc, TAP_C2U, &skip));
	cr_assert(tap_conn_wants(fx.tc, TAP_U2C, &skip));
	cr_assert_eq(fx.d.ntcp, 7, "100 bytes in frames of at most 16");
	cr_assert_eq(fx.d.nruns[TAP_C2U], 1);
	cr_assert_eq(fx.d.runs[TAP_C2U][0].len, 100);
	cr_assert_str_empty(fx.d.err, "%s", fx.d.err);
	tap_conn_end(fx.tc, 2);
	cr_assert_not(tap_conn_wants(fx.tc, TAP_C2U, &skip), "nothing after the end");
	fx_fini(&fx);
	no_leaks();
}

Test(tap_conn, proto_from_the_clients_first_bytes)
{
	static const struct {
		const char *c2u, *u2c;
		int proto, http, tls;
	} cases[] = {
		{ "GET / HTTP/1.1\r\n\r\n", NULL, TAP_PROTO_HTTP1, 1, 0 },
		/* TLS: one tls frame when the connection ends, no ciphertext as tcp. */
		{ "\x16\x03\x01\x00\x05", NULL, TAP_PROTO_TLS, 0, 1 },
		{ "*1\r\n$4\r\nPING\r\n", NULL, TAP_PROTO_OTHER, 0, 0 },
		{ NULL, NULL, TAP_PROTO_UNKNOWN, 0, 0 },
		{ "GE", NULL, TAP_PROTO_OTHER, 0, 0 },
		/* The server spoke first: tcp capture, but the client's bytes still name it. */
		{ "GET / HTTP/1.1\r\n\r\n", "220 hello\r\n", TAP_PROTO_HTTP1, 0, 0 },
		/* HTTP/2 with prior knowledge is not HTTP/1. */
		{ "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NULL, TAP_PROTO_HTTP1, 0, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct conn_fixture fx;
		char *text;

		fx_init(&fx);
		if (cases[i].u2c)
			fx_feed(&fx, TAP_U2C, cases[i].u2c, 1);
		if (cases[i].c2u) {
			/* One byte at a time: undecided bytes are held, then passed on. */
			for (const char *p = cases[i].c2u; *p; p++)
				tap_conn_feed(fx.tc, TAP_C2U, p, 1, 2);
		}
		text = fx_end(&fx, 3);
		cr_expect_eq(tap_conn_proto(fx.tc), cases[i].proto, "case %zu", i);
		cr_expect_eq(fx.d.npairs ? 1 : 0, cases[i].http, "case %zu: %s", i, text);
		cr_expect_eq(fx.d.ntls, (size_t)cases[i].tls, "case %zu: %s", i, text);
		if (cases[i].tls) {
			cr_expect_eq(fx.d.nruns[TAP_C2U] + fx.d.nruns[TAP_U2C], 0, "case %zu: %s",
				     i, text);
			cr_expect(strstr(text, "ended before its ClientHello was complete"),
				  "case %zu: %s", i, text);
		} else if (cases[i].c2u && !cases[i].http) {
			cr_expect_eq(fx.d.nruns[TAP_C2U], 1, "case %zu", i);
			cr_expect_eq(fx.d.runs[TAP_C2U][0].off, 0, "case %zu", i);
			cr_expect_eq(fx.d.runs[TAP_C2U][0].len, strlen(cases[i].c2u), "case %zu",
				     i);
		}
		free(text);
		fx_fini(&fx);
	}
	no_leaks();
}

/* A listener that unwraps but passes this client through says why in the tls frame. */
Test(tap_conn, tls_frame_gives_the_reason_it_passed_through)
{
	char path[512];
	unsigned char *hello;
	size_t len;
	struct conn_fixture fx;
	char *text;

	snprintf(path, sizeof(path), "%s/tls/openssl_tls13_sni_alpn.bin", SIDETAP_CORPUS_DIR);
	hello = read_file(path, &len);
	cr_assert(hello && len > 100, "%s", path);
	fx_init(&fx);
	tap_conn_tls_reason(fx.tc, "h2 only");
	/* Sliced at every byte: the frame comes once the whole ClientHello is in. */
	for (size_t i = 0; i < len; i++) {
		cr_expect_eq(fx.d.ntls, 0, "frame before byte %zu of %zu", i, len);
		tap_conn_feed(fx.tc, TAP_C2U, hello + i, 1, 5);
	}
	cr_expect_eq(fx.d.ntls, 1);
	/* What follows is ciphertext: not captured, but counted. */
	tap_conn_feed(fx.tc, TAP_U2C, "\x16\x03\x03", 3, 6);
	tap_conn_feed(fx.tc, TAP_C2U, "\x17\x03\x03", 3, 7);
	cr_expect_eq(tap_conn_offset(fx.tc, TAP_C2U), len + 3);
	cr_expect_eq(tap_conn_offset(fx.tc, TAP_U2C), 3);
	text = fx_end(&fx, 8);
	cr_expect_str_eq(text, "tls event=1 side=0 versions=0x8 sni \"example.com\" alpn \"h2\" "
			       "\"http/1.1\" reason \"h2 only\"\n");
	cr_expect_eq(tap_conn_proto(fx.tc), TAP_PROTO_TLS);
	free(text);
	free(hello);
	fx_fini(&fx);
	no_leaks();
}

/* Bytes after 0x16 0x03 that are no ClientHello: a tls frame with the parser's reason. */
Test(tap_conn, tls_frame_for_a_broken_hello_names_the_problem)
{
	struct conn_fixture fx;
	uint64_t skip = 0;
	char *text;

	fx_init(&fx);
	/* A handshake record holding a ServerHello (type 2), not a ClientHello. */
	tap_conn_feed(fx.tc, TAP_C2U, "\x16\x03\x01\x00\x04\x02\x00\x00\x00", 9, 1);
	cr_expect_eq(fx.d.ntls, 1);
	cr_expect_not(tap_conn_wants(fx.tc, TAP_C2U, &skip));
	cr_expect_eq(skip, UINT64_MAX, "the rest may be spliced");
	text = fx_end(&fx, 2);
	cr_expect(strstr(text, "tls event=1 side=0 versions=0x0 sni \"\" alpn reason \""), "%s",
		  text);
	cr_expect_null(strstr(text, "reason \"\""), "a reason is given: %s", text);
	free(text);
	fx_fini(&fx);
	no_leaks();
}

/* A client that sends endless handshake records: capture holds at most 32 KiB of them. */
Test(tap_conn, tls_hello_held_is_bounded)
{
	static unsigned char rec[16389];
	struct conn_fixture fx;
	size_t most = 0, fresh;
	char *text;

	/* Records of 16384 bytes of a ClientHello that claims to be 16 MiB long. */
	rec[0] = 0x16, rec[1] = 3, rec[2] = 1, rec[3] = 0x40, rec[4] = 0;
	rec[5] = 1, rec[6] = 0xff, rec[7] = 0xff, rec[8] = 0xff;
	fx_init(&fx);
	fresh = tap_conn_memory(fx.tc);
	for (int i = 0; i < 8; i++) {
		tap_conn_feed(fx.tc, TAP_C2U, rec, sizeof(rec), 1);
		if (tap_conn_memory(fx.tc) > most)
			most = tap_conn_memory(fx.tc);
	}
	cr_expect_leq(most, fresh + 64 + TAP_TLS_HELLO_BYTES_MAX, "%zu", most);
	cr_expect_eq(fx.d.ntls, 1);
	text = fx_end(&fx, 2);
	cr_expect_eq(fx.d.ntls, 1, "%s", text);
	free(text);
	fx_fini(&fx);
	no_leaks();
}

Test(tap_conn, header_limit_keeps_a_header_that_fits_exactly)
{
	/* "GET / HTTP/1.1" head: 14 + 3 + 1 = 18; "A: bc" costs 1 + 2 + 4 = 7. */
	for (uint32_t limit = 24; limit <= 26; limit++) {
		struct conn_fixture fx;
		char *text;

		fx_init(&fx);
		fx.cfg.header_limit = limit;
		fx_feed(&fx, TAP_C2U, "GET / HTTP/1.1\r\nA: bc\r\nD: e\r\n\r\n", 1);
		text = fx_end(&fx, 2);
		if (limit < 25) {
			cr_expect(strstr(text, "headers_truncated"), "limit %u: %s", limit, text);
			cr_expect_null(strstr(text, "h \"A\""), "limit %u: %s", limit, text);
		} else {
			cr_expect(strstr(text, "h \"A\" \"bc\""), "limit %u: %s", limit, text);
			cr_expect(strstr(text, "headers_truncated"), "limit %u: D does not fit",
				  limit);
		}
		free(text);
		fx_fini(&fx);
	}
	no_leaks();
}

Test(tap_conn, many_headers_beyond_the_stack_array)
{
	struct conn_fixture fx;
	char req[4096];
	size_t n;
	char *text;

	fx_init(&fx);
	n = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\n");
	for (int i = 0; i < 100; i++)
		n += (size_t)snprintf(req + n, sizeof(req) - n, "X-%d: %d\r\n", i, i);
	n += (size_t)snprintf(req + n, sizeof(req) - n, "\r\n");
	tap_conn_feed(fx.tc, TAP_C2U, req, n, 1);
	text = fx_end(&fx, 2);
	cr_assert(strstr(text, "h \"X-0\" \"0\"\n"), "%s", text);
	cr_assert(strstr(text, "h \"X-99\" \"99\"\n"), "%s", text);
	cr_assert_null(strstr(text, "headers_truncated"), "%s", text);
	free(text);
	fx_fini(&fx);
	no_leaks();
}

Test(tap_conn, held_bytes_past_the_limit_while_upgrade_undecided)
{
	struct conn_fixture fx;
	char *text;

	fx_init(&fx);
	fx.cfg.header_limit = 80;
	fx_feed(&fx, TAP_C2U, "GET / HTTP/1.1\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n", 1);
	fx_feed(&fx, TAP_C2U, "0123456789012345678901234567890123456789", 2);
	fx_feed(&fx, TAP_C2U, "0123456789012345678901234567890123456789", 3);
	fx_feed(&fx, TAP_C2U, "!", 4);
	fx_feed(&fx, TAP_U2C, "HTTP/1.1 101 OK\r\n\r\n", 5);
	text = fx_end(&fx, 6);
	cr_assert(strstr(text, "flags=desync desync=c2u@51\n"), "%s", text);
	cr_assert(strstr(text, "tcp c2u off=51 len=81 "), "%s", text);
	cr_assert(strstr(text, "tcp u2c off=0 len=19 "), "%s", text);
	free(text);
	fx_fini(&fx);
	no_leaks();
}

Test(tap_conn, early_response_waits_for_the_request)
{
	struct conn_fixture fx;
	char *text;

	fx_init(&fx);
	fx_feed(&fx, TAP_C2U, "POST / HTTP/1.1\r\nContent-Length: 6\r\n\r\nabc", 1);
	fx_feed(&fx, TAP_U2C, "HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n", 2);
	cr_assert_eq(fx.d.npairs, 0, "the request is not complete yet");
	fx_feed(&fx, TAP_C2U, "def", 3);
	cr_assert_eq(fx.d.npairs, 1);
	cr_assert_eq(fx.d.pairs[0].resp_end, 2);
	cr_assert_eq(fx.d.pairs[0].req_end, 3);
	text = fx_end(&fx, 4);
	cr_assert(strstr(text, "body size=6 \"abcdef\"\n resp 413"), "%s", text);
	free(text);
	fx_fini(&fx);
	no_leaks();
}

Test(tap_conn, unsolicited_response_desyncs)
{
	struct conn_fixture fx;
	char *text;

	fx_init(&fx);
	fx_feed(&fx, TAP_C2U, "GET / HTTP/1.1\r\n\r\n", 1);
	fx_feed(&fx, TAP_U2C, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2);
	fx_feed(&fx, TAP_U2C, "HTTP/1.1 408 Request Timeout\r\n\r\n", 3);
	text = fx_end(&fx, 4);
	cr_assert_eq(fx.d.npairs, 1);
	cr_assert(strstr(text, "tcp u2c off=38 len=32 \"HTTP/1.1 408"), "%s", text);
	free(text);
	fx_fini(&fx);
	no_leaks();
}

Test(tap_conn, free_without_end_releases_everything)
{
	struct conn_fixture fx;

	/* Run under ASan: LeakSanitizer fails the test on anything left behind. */
	fx_init(&fx);
	fx_feed(&fx, TAP_C2U,
		"POST / HTTP/1.1\r\nUpgrade: a\r\nConnection: upgrade\r\n"
		"Content-Length: 3\r\n\r\nabcGET /x HTTP/1.1\r\n",
		1);
	fx_feed(&fx, TAP_U2C, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart", 2);
	cr_assert_eq(fx.d.npairs, 0);
	fx_fini(&fx);
	no_leaks();
}

static void noop_emit(void *ctx, struct tap_frame *f)
{
	(void)ctx;
	(void)f;
}

Test(tap_conn, idle_connection_holds_little_memory)
{
	static const char req[] = "GET /x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
	static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
	struct tap_conn_cfg cfg;
	struct tap_conn *tc;
	size_t fresh, idle;

	tap_conn_cfg_default(&cfg);
	tc = tap_conn_new(&cfg, noop_emit, NULL);
	fresh = tap_conn_memory(tc);
	for (int i = 0; i < 3; i++) {
		tap_conn_feed(tc, TAP_C2U, req, sizeof(req) - 1, 1);
		cr_assert_gt(tap_conn_memory(tc), fresh + 512, "a pending pair holds its buffers");
		tap_conn_feed(tc, TAP_U2C, resp, sizeof(resp) - 1, 2);
	}
	idle = tap_conn_memory(tc);
	cr_log_info("tap_conn: %zu bytes before its first byte, %zu idle between pairs", fresh,
		    idle);
	cr_expect_leq(fresh, 96, "before the first byte: %zu bytes", fresh);
	cr_expect_leq(idle, 512, "idle keep-alive connection: %zu bytes", idle);
	tap_conn_end(tc, 3);
	tap_conn_free(tc);
	no_leaks();
}

Test(tap_conn, memory_bounded_by_limits_and_pending)
{
	struct tap_conn_cfg cfg;
	struct tap_conn *tc;
	char head[2048], body[3000];
	size_t n, most = 0, bound;

	tap_conn_cfg_default(&cfg);
	cfg.header_limit = 1024;
	cfg.body_limit = 1024;
	cfg.max_pending = 8;
	tc = tap_conn_new(&cfg, noop_emit, NULL);
	memset(body, 'b', sizeof(body));
	/* Pipelined requests with heads and bodies past the limits, no response. */
	for (int i = 0; i < 8; i++) {
		n = (size_t)snprintf(head, sizeof(head), "POST /%d HTTP/1.1\r\n", i);
		for (int h = 0; h < 200; h++)
			n += (size_t)snprintf(head + n, sizeof(head) - n, "a:\r\n");
		n += (size_t)snprintf(head + n, sizeof(head) - n,
				      "Transfer-Encoding: chunked\r\n\r\n%zx\r\n", sizeof(body));
		tap_conn_feed(tc, TAP_C2U, head, n, 1);
		tap_conn_feed(tc, TAP_C2U, body, sizeof(body), 1);
		tap_conn_feed(tc, TAP_C2U, "\r\n0\r\n\r\n", 7, 1);
		if (tap_conn_memory(tc) > most)
			most = tap_conn_memory(tc);
	}
	/* A head is its strings and index (at most 12 bytes per 5 head bytes), rounded up. */
	bound = 1024 + (1 + cfg.max_pending) * (2 * 4 * cfg.header_limit + cfg.body_limit + 512);
	cr_log_info("8 pending requests at their limits: %zu bytes (bound %zu)", most, bound);
	cr_expect_leq(most, bound);
	tap_conn_end(tc, 2);
	tap_conn_free(tc);
	no_leaks();
}

/* TESTPLAN X1: credentials in headers and query strings never reach a frame, whatever slicing. */
Test(tap_conn, credentials_are_redacted_before_the_frame)
{
	static const char req[] =
		"GET /a?user=bob&token=CANARY1&Access_Token=CANARY2&x=1&sig=CANARY3 HTTP/1.1\r\n"
		"Host: h\r\nauthorization: Bearer CANARY4\r\nCookie: s=CANARY5\r\n"
		"X-Api-Key: CANARY6\r\nX-Trace: keep\r\n\r\n";
	static const char resp[] =
		"HTTP/1.1 200 OK\r\nSet-Cookie: s=CANARY7\r\nContent-Length: 2\r\n\r\nok";
	const size_t steps[] = { 1, 7, sizeof(req) };

	for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
		struct conn_fixture fx;
		char *text;

		fx_init(&fx);
		fx_feed_sliced(&fx, TAP_C2U, req, steps[k], 1);
		fx_feed(&fx, TAP_U2C, resp, 2);
		text = fx_end(&fx, 3);
		cr_expect_null(strstr(text, "CANARY"), "step %zu: a secret got through:\n%s",
			       steps[k], text);
		cr_expect(strstr(text, "\"/a?user=bob&token=[redacted]&Access_Token=[redacted]&x=1"
				       "&sig=[redacted]\""),
			  "%s", text);
		cr_expect(strstr(text, "h \"authorization\" \"[redacted]\""), "%s", text);
		cr_expect(strstr(text, "h \"Set-Cookie\" \"[redacted]\""), "%s", text);
		cr_expect(strstr(text, "h \"X-Trace\" \"keep\""), "other headers are kept: %s",
			  text);
		free(text);
		fx_fini(&fx);
	}
	no_leaks();
}

Test(tap_conn, redaction_off_keeps_credentials)
{
	struct conn_fixture fx;
	char *text;

	fx_init(&fx);
	fx.cfg.redact = false;
	fx_feed(&fx, TAP_C2U, "GET /?token=t1 HTTP/1.1\r\nAuthorization: Basic x\r\n\r\n", 1);
	text = fx_end(&fx, 2);
	cr_expect(strstr(text, "\"/?token=t1\""), "%s", text);
	cr_expect(strstr(text, "h \"Authorization\" \"Basic x\""), "%s", text);
	free(text);
	fx_fini(&fx);
	no_leaks();
}

/* Form and JSON bodies: the credential values go, the rest stays, whatever the slicing. */
Test(tap_conn, credentials_in_form_and_json_bodies_are_redacted)
{
	static const char form[] = "POST /login HTTP/1.1\r\nContent-Type: application/x-www-form-"
				   "urlencoded\r\nContent-Length: 40\r\n\r\n"
				   "user=bob&password=CANARY1&remember=yes&x";
	static const char json_resp[] =
		"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
		"Transfer-Encoding: chunked\r\n\r\n"
		"40\r\n{\"user\":\"bob\", \"apiKey\" : \"CANARY2\", \"note\":\"say \\\"token\\\": hi\",\r\n"
		"2E\r\n \"nested\":{\"Access_Token\":\"CANARY3\\\"x\"},\"n\":1}\r\n0\r\n\r\n";
	const size_t steps[] = { 1, 5, 1000 };

	for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
		struct conn_fixture fx;
		char *text;

		fx_init(&fx);
		fx_feed_sliced(&fx, TAP_C2U, form, steps[k], 1);
		fx_feed_sliced(&fx, TAP_U2C, json_resp, steps[k], 2);
		text = fx_end(&fx, 3);
		cr_expect_null(strstr(text, "CANARY"), "step %zu: a secret got through:\n%s",
			       steps[k], text);
		cr_expect(strstr(text, "user=bob&password=*******&remember=yes&x"), "%s", text);
		/* conn_dump writes a quote as \x22, a backslash as \x5c. */
		cr_expect(strstr(text, "\\x22apiKey\\x22 : \\x22*******\\x22"), "%s", text);
		cr_expect(strstr(text, "\\x22Access_Token\\x22:\\x22**********\\x22}"), "%s", text);
		cr_expect(strstr(text, "say \\x5c\\x22token\\x5c\\x22: hi"),
			  "a string that only looks like a key is kept: %s", text);
		free(text);
		fx_fini(&fx);
	}
	no_leaks();
}

Test(tap_conn, a_json_secret_cut_by_the_body_limit_is_still_redacted)
{
	struct conn_fixture fx;
	char *text;

	fx_init(&fx);
	fx.cfg.body_limit = 24;
	fx_feed(&fx, TAP_C2U,
		"POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 34\r\n\r\n"
		"{\"password\": \"CANARY-LONG-SECRET\"}",
		1);
	text = fx_end(&fx, 2);
	cr_expect_null(strstr(text, "CANARY"), "%s", text);
	cr_expect(strstr(text, "truncated \"{\\x22password\\x22: \\x22**********\""), "%s", text);
	free(text);
	fx_fini(&fx);
	no_leaks();
}
