/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Micro-benchmark of the capture path (PERF.md method 7, target T10): frames
 * per second and GB/s from one producer thread to one consumer thread through
 * one ring, each pinned to its own CPU, at several payload sizes; and frames
 * per second of tap_frame_encode() and tap_frame_decode() for a typical http
 * frame. Prints a Markdown table.
 *   ring_bench [--cpu-producer N] [--cpu-consumer N] [--seconds S] [--ring-size BYTES]
 *              [--dir DIR] [--sizes 256,4096,16384]
 * Two ring modes per size. "lossless": the producer waits for room (reading the
 * consumer's tail) before it reserves, so nothing is dropped and the number is
 * the ring's capacity. "overload": the producer never waits, as sidetap does;
 * what does not fit is dropped and counted, and frames/s counts what arrived.
 * In both, the producer writes every payload byte and the consumer reads every
 * byte (a checksum), as the uploader would. A third row per size touches only
 * each payload's first 8 bytes: the ring's own cost, without the copies.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tap/frame.h"
#include "tap/ring.h"

struct run {
	struct tap_ring *r;
	size_t len;
	bool lossless;
	bool touch; /* write and read every payload byte, or only the first 8 */
	double seconds;
	int cpu_prod, cpu_cons;
	int done;
	uint64_t produced, consumed, sum;
	double elapsed;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
		fprintf(stderr, "ring_bench: cannot pin to cpu %d\n", cpu);
}

static void *producer(void *arg)
{
	struct run *ru = arg;
	uint64_t rec = 8 + ((ru->len + 7) & ~(size_t)7), n = 0, size = tap_ring_size(ru->r);
	uint64_t head = 0, tail = 0;
	uint8_t *src = malloc(ru->len);
	double start, end;

	pin(ru->cpu_prod);
	memset(src, 0xa5, ru->len);
	start = now_s();
	end = start + ru->seconds;
	for (;;) {
		uint8_t *p;

		if ((n & 255) == 0 && now_s() > end)
			break;
		/*
		 * Lossless: wait until the record (and a wrap marker's worth) fits,
		 * reading the consumer's tail only when the last one read says no.
		 */
		if (ru->lossless) {
			head = tap_ring_head(ru->r, 0);
			while (head + 2 * rec - tail > size)
				tail = tap_ring_tail(ru->r, 0);
		}
		p = tap_ring_reserve(ru->r, 0, ru->len);
		n++;
		if (!p)
			continue;
		memcpy(p, &n, 8);
		if (ru->touch)
			memcpy(p + 8, src + 8, ru->len - 8);
		tap_ring_commit(ru->r, 0, ru->len);
	}
	ru->produced = n;
	__atomic_store_n(&ru->done, 1, __ATOMIC_RELEASE);
	free(src);
	return NULL;
}

static void *consumer(void *arg)
{
	struct run *ru = arg;
	uint64_t pos = tap_ring_tail(ru->r, 0), n = 0, batch = 0, sum = 0;
	double start = now_s();

	pin(ru->cpu_cons);
	for (;;) {
		bool done = __atomic_load_n(&ru->done, __ATOMIC_ACQUIRE);
		const void *payload;
		uint32_t len;
		int ret = tap_ring_next(ru->r, 0, &pos, &payload, &len);

		if (ret == 1) {
			const uint64_t *w = payload;

			for (uint32_t i = 0; i < (ru->touch ? len / 8 : 1); i++)
				sum += w[i];
			n++;
			/* Release in batches, as an uploader does after a sink write. */
			if (++batch == 64) {
				tap_ring_release(ru->r, 0, pos, batch);
				batch = 0;
			}
			continue;
		}
		if (ret < 0) {
			fprintf(stderr, "ring_bench: corrupt ring at %llu\n",
				(unsigned long long)pos);
			exit(1);
		}
		tap_ring_release(ru->r, 0, pos, batch);
		batch = 0;
		if (done)
			break;
	}
	ru->elapsed = now_s() - start;
	ru->consumed = n;
	ru->sum = sum;
	return NULL;
}

static int bench_ring(const char *dir, uint64_t ring_size, size_t len, bool lossless, bool touch,
		      double seconds, int cpu_prod, int cpu_cons)
{
	struct run ru = { .len = len,
			  .lossless = lossless,
			  .touch = touch,
			  .seconds = seconds,
			  .cpu_prod = cpu_prod,
			  .cpu_cons = cpu_cons };
	struct tap_ring_stats st;
	pthread_t tp, tc;
	char path[512];
	int ret;

	snprintf(path, sizeof(path), "%s/ring-bench-%d", dir, (int)getpid());
	ret = tap_ring_create(path, 1, ring_size, 1, &ru.r);
	if (ret) {
		fprintf(stderr, "ring_bench: create %s: %s\n", path, strerror(-ret));
		return 1;
	}
	pthread_create(&tc, NULL, consumer, &ru);
	pthread_create(&tp, NULL, producer, &ru);
	pthread_join(tp, NULL);
	pthread_join(tc, NULL);
	tap_ring_stats(ru.r, 0, &st);
	printf("| ring %s%s | %zu B | %.2f M | %.2f | %llu (%.1f%%) |\n",
	       lossless ? "lossless" : "overload", touch ? "" : ", 8 bytes touched", len,
	       (double)ru.consumed / ru.elapsed / 1e6,
	       (double)ru.consumed * (double)len / ru.elapsed / 1e9,
	       (unsigned long long)st.dropped_frames,
	       ru.produced ? 100.0 * (double)st.dropped_frames / (double)ru.produced : 0.0);
	fflush(stdout);
	tap_ring_close(ru.r, true);
	unlink(path);
	return st.frames == ru.consumed ? 0 : 1;
}

/* A small GET and its 200: eight headers each, a 100-byte response body. */
static void typical_http(struct tap_frame *f)
{
	static const struct tap_header req_h[] = {
		{ { "Host", 4 }, { "api.example.com", 15 } },
		{ { "User-Agent", 10 }, { "Mozilla/5.0 (X11; Linux x86_64)", 31 } },
		{ { "Accept", 6 }, { "application/json", 16 } },
		{ { "Accept-Encoding", 15 }, { "gzip, deflate, br", 17 } },
		{ { "Accept-Language", 15 }, { "en-US,en;q=0.9", 14 } },
		{ { "Connection", 10 }, { "keep-alive", 10 } },
		{ { "X-Request-Id", 12 }, { "6f1c0e0a-5f7b-4b8e-9d3c-2a1b0c9d8e7f", 36 } },
		{ { "Cookie", 6 }, { "session=abcdef0123456789", 24 } },
	};
	static const struct tap_header resp_h[] = {
		{ { "Content-Type", 12 }, { "application/json", 16 } },
		{ { "Content-Length", 14 }, { "100", 3 } },
		{ { "Date", 4 }, { "Tue, 25 Nov 2025 10:00:00 GMT", 29 } },
		{ { "Server", 6 }, { "nginx/1.22.1", 12 } },
		{ { "Cache-Control", 13 }, { "no-cache", 8 } },
		{ { "Connection", 10 }, { "keep-alive", 10 } },
		{ { "X-Request-Id", 12 }, { "6f1c0e0a-5f7b-4b8e-9d3c-2a1b0c9d8e7f", 36 } },
		{ { "Vary", 4 }, { "Accept-Encoding", 15 } },
	};
	static char body[100];

	memset(body, 'j', sizeof(body));
	memset(f, 0, sizeof(*f));
	f->type = TAP_FRAME_HTTP;
	f->gen = 0x0123456789abcdefull;
	f->worker = 1;
	f->seq = 123456;
	f->conn_id = (1ull << 40) | 99;
	f->ts_ns = 1764064800000000000ull;
	f->client = (struct tap_str){ "10.1.2.3:51234", 14 };
	f->dst = (struct tap_str){ "10.1.2.4:8080", 13 };
	f->upstream = (struct tap_str){ "127.0.0.1:8080", 14 };
	f->http.pair = 3;
	f->http.req = (struct tap_http_msg){ .method = { "GET", 3 },
					     .target = { "/api/v1/items?id=42", 19 },
					     .version_major = 1,
					     .version_minor = 1,
					     .headers = req_h,
					     .nheaders = 8 };
	f->http.has_resp = true;
	f->http.resp = (struct tap_http_msg){ .status = 200,
					      .reason = { "OK", 2 },
					      .version_major = 1,
					      .version_minor = 1,
					      .headers = resp_h,
					      .nheaders = 8,
					      .body = { body, sizeof(body) },
					      .body_size = sizeof(body) };
	f->http.req_start = f->ts_ns - 4000000;
	f->http.req_end = f->ts_ns - 3990000;
	f->http.resp_start = f->ts_ns - 1000000;
	f->http.resp_end = f->ts_ns;
}

static int bench_codec(double seconds, int cpu)
{
	struct tap_decoder *dec = tap_decoder_new();
	static uint8_t buf[8192];
	struct tap_frame f, g;
	uint64_t n = 0;
	double t0, el;
	ssize_t len;
	size_t used;

	pin(cpu);
	typical_http(&f);
	len = tap_frame_encode(&f, buf, sizeof(buf));
	if (len <= 0 || !dec)
		return 1;
	t0 = now_s();
	do {
		for (int i = 0; i < 1000; i++) {
			f.seq++;
			/* What a producer does: size the reservation, then encode into it. */
			if (tap_frame_encoded_max(&f) > sizeof(buf) ||
			    tap_frame_encode(&f, buf, sizeof(buf)) <= 0)
				return 1;
		}
		n += 1000;
	} while ((el = now_s() - t0) < seconds);
	printf("| encode http (%zd B) | | %.2f M | %.0f ns/frame | |\n", len, (double)n / el / 1e6,
	       el / (double)n * 1e9);
	len = tap_frame_encode(&f, buf, sizeof(buf));
	n = 0;
	t0 = now_s();
	do {
		for (int i = 0; i < 1000; i++)
			if (tap_frame_decode(dec, buf, (size_t)len, &used, &g, NULL) != 0)
				return 1;
		n += 1000;
	} while ((el = now_s() - t0) < seconds);
	printf("| decode http (%zd B) | | %.2f M | %.0f ns/frame | |\n", len, (double)n / el / 1e6,
	       el / (double)n * 1e9);
	tap_decoder_free(dec);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cpu-producer", required_argument, NULL, 'p' },
		{ "cpu-consumer", required_argument, NULL, 'c' },
		{ "seconds", required_argument, NULL, 's' },
		{ "ring-size", required_argument, NULL, 'r' },
		{ "dir", required_argument, NULL, 'd' },
		{ "sizes", required_argument, NULL, 'z' },
		{ NULL, 0, NULL, 0 },
	};
	int cpu_prod = 0, cpu_cons = sysconf(_SC_NPROCESSORS_ONLN) > 1 ? 1 : 0, opt, fails = 0;
	const char *dir = "/dev/shm", *sizes = "256,4096,16384";
	uint64_t ring_size = 4u << 20;
	double seconds = 1.0;
	char *list, *tok, *save;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			cpu_prod = atoi(optarg);
			break;
		case 'c':
			cpu_cons = atoi(optarg);
			break;
		case 's':
			seconds = atof(optarg);
			break;
		case 'r':
			ring_size = strtoull(optarg, NULL, 0);
			break;
		case 'd':
			dir = optarg;
			break;
		case 'z':
			sizes = optarg;
			break;
		default:
			fprintf(stderr,
				"usage: ring_bench [--cpu-producer N] [--cpu-consumer N] "
				"[--seconds S] [--ring-size BYTES] [--dir DIR] [--sizes A,B]\n");
			return 2;
		}
	}
	printf("ring_bench: producer cpu %d, consumer cpu %d, ring %llu KiB in %s, %.1f s each\n\n",
	       cpu_prod, cpu_cons, (unsigned long long)(ring_size >> 10), dir, seconds);
	printf("| what | payload | frames/s | GB/s | dropped |\n|---|---|---|---|---|\n");
	list = strdup(sizes);
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		size_t len = strtoul(tok, NULL, 0);

		if (len < 8) {
			fprintf(stderr, "ring_bench: payloads of at least 8 bytes\n");
			return 2;
		}
		fails += bench_ring(dir, ring_size, len, true, true, seconds, cpu_prod, cpu_cons);
		fails += bench_ring(dir, ring_size, len, false, true, seconds, cpu_prod, cpu_cons);
		fails += bench_ring(dir, ring_size, len, true, false, seconds, cpu_prod, cpu_cons);
	}
	free(list);
	fails += bench_codec(seconds, cpu_prod);
	return fails ? 1 : 0;
}
