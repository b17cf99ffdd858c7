/* SPDX-License-Identifier: Apache-2.0 */
/* Micro-benchmark of tap_conn: CPU per captured HTTP/1 pair, against llhttp parsing alone. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llhttp.h>

#include "tap/conn.h"

/* A typical small exchange: an 8-header GET and a 200 with a small JSON body. */
static const char req[] = "GET /api/v1/items?id=42 HTTP/1.1\r\n"
			  "Host: api.example.com\r\n"
			  "User-Agent: curl/8.5.0\r\n"
			  "Accept: application/json\r\n"
			  "Accept-Encoding: gzip, deflate\r\n"
			  "Accept-Language: en-US,en;q=0.9\r\n"
			  "Cache-Control: no-cache\r\n"
			  "X-Request-Id: 7f3c2a1e-9b4d-4c21-8f2e-0d6a5b1c3e77\r\n"
			  "Connection: keep-alive\r\n\r\n";
static const char resp[] = "HTTP/1.1 200 OK\r\n"
			   "Content-Type: application/json\r\n"
			   "Content-Length: 27\r\n"
			   "Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
			   "Server: nginx\r\n\r\n"
			   "{\"id\":42,\"name\":\"widget-1\"}";

struct sink {
	unsigned long pairs;
	unsigned long bytes; /* read from each frame, so that nothing is optimized away */
};

static void on_frame(void *ctx, struct tap_frame *f)
{
	struct sink *s = ctx;

	if (f->type != TAP_FRAME_HTTP)
		abort();
	s->pairs++;
	s->bytes += f->http.req.target.len + f->http.req.nheaders + f->http.resp.body.len;
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* One keep-alive connection, one slice per message. */
static double bench_keepalive(const struct tap_conn_cfg *cfg, long n)
{
	struct sink s = { 0 };
	struct tap_conn *tc = tap_conn_new(cfg, on_frame, &s);
	double t0, t1;

	if (!tc)
		abort();
	t0 = now_ns();
	for (long i = 0; i < n; i++) {
		tap_conn_feed(tc, TAP_C2U, req, sizeof(req) - 1, (uint64_t)i);
		tap_conn_feed(tc, TAP_U2C, resp, sizeof(resp) - 1, (uint64_t)i);
	}
	t1 = now_ns();
	tap_conn_end(tc, 0);
	tap_conn_free(tc);
	if (s.pairs != (unsigned long)n)
		abort();
	return (t1 - t0) / n;
}

/* A new connection per pair: detection, parser set-up and teardown included. */
static double bench_fresh(const struct tap_conn_cfg *cfg, long n)
{
	struct sink s = { 0 };
	double t0, t1;

	t0 = now_ns();
	for (long i = 0; i < n; i++) {
		struct tap_conn *tc = tap_conn_new(cfg, on_frame, &s);

		if (!tc)
			abort();
		tap_conn_feed(tc, TAP_C2U, req, sizeof(req) - 1, (uint64_t)i);
		tap_conn_feed(tc, TAP_U2C, resp, sizeof(resp) - 1, (uint64_t)i);
		tap_conn_eof(tc, TAP_U2C, (uint64_t)i);
		tap_conn_end(tc, (uint64_t)i);
		tap_conn_free(tc);
	}
	t1 = now_ns();
	if (s.pairs != (unsigned long)n)
		abort();
	return (t1 - t0) / n;
}

static int count_cb(llhttp_t *p)
{
	(*(unsigned long *)p->data)++;
	return 0;
}

/* The floor: llhttp alone on both messages, counting completed messages only. */
static double bench_llhttp(long n)
{
	llhttp_settings_t settings;
	llhttp_t rq, rs;
	unsigned long done = 0;
	double t0, t1;

	llhttp_settings_init(&settings);
	settings.on_message_complete = count_cb;
	llhttp_init(&rq, HTTP_REQUEST, &settings);
	llhttp_init(&rs, HTTP_RESPONSE, &settings);
	rq.data = rs.data = &done;
	t0 = now_ns();
	for (long i = 0; i < n; i++) {
		if (llhttp_execute(&rq, req, sizeof(req) - 1) != HPE_OK ||
		    llhttp_execute(&rs, resp, sizeof(resp) - 1) != HPE_OK)
			abort();
	}
	t1 = now_ns();
	if (done != 2 * (unsigned long)n)
		abort();
	return (t1 - t0) / n;
}

static double best(double (*fn)(const struct tap_conn_cfg *, long), const struct tap_conn_cfg *cfg,
		   long n, int reps)
{
	double b = 1e30;

	for (int r = 0; r < reps; r++) {
		double t = fn(cfg, n);

		if (t < b)
			b = t;
	}
	return b;
}

static double llhttp_wrap(const struct tap_conn_cfg *cfg, long n)
{
	(void)cfg;
	return bench_llhttp(n);
}

int main(int argc, char **argv)
{
	struct tap_conn_cfg cfg;
	long n = 1000000;
	const char *only = NULL;
	int reps = 5, opt;

	while ((opt = getopt(argc, argv, "n:r:m:h")) != -1) {
		switch (opt) {
		case 'm':
			only = optarg;
			break;
		case 'n':
			n = atol(optarg);
			break;
		case 'r':
			reps = atoi(optarg);
			break;
		default:
			fprintf(stderr,
				"usage: conn_bench [-n PAIRS] [-r REPEATS] [-m CASE]\n"
				"CPU time per captured pair, best of REPEATS runs; CASE is\n"
				"one of llhttp, keepalive, fresh (default: all)\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	if (n <= 0 || reps <= 0) {
		fprintf(stderr, "conn_bench: -n and -r must be positive\n");
		return 2;
	}
	tap_conn_cfg_default(&cfg);
	printf("request %zu bytes (8 headers), response %zu bytes (4 headers, 27-byte body)\n",
	       sizeof(req) - 1, sizeof(resp) - 1);
	if (!only || !strcmp(only, "llhttp"))
		printf("llhttp alone, both messages:       %5.0f ns/pair\n",
		       best(llhttp_wrap, &cfg, n, reps));
	if (!only || !strcmp(only, "keepalive"))
		printf("tap_conn, keep-alive connection:   %5.0f ns/pair\n",
		       best(bench_keepalive, &cfg, n, reps));
	if (!only || !strcmp(only, "fresh"))
		printf("tap_conn, new connection per pair: %5.0f ns/pair\n",
		       best(bench_fresh, &cfg, n, reps));
	return 0;
}
