/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Stress of the capture ring for the ThreadSanitizer build (TESTPLAN D9): a
 * producer thread writes sequence-numbered records of random sizes into a
 * small ring, a consumer thread reads them back, sometimes stalling so the
 * ring fills, and a third thread reads the counters. The consumer checks
 * that every payload is intact and that the sequence is gap-free except for
 * exactly the frames (and bytes) the ring counted as dropped. Run twice: the
 * consumer on the producer's own mapping (what TSan can follow: one address
 * per byte) and on a second mapping of the file (what the uploader does).
 *   ring_stress [seconds per phase] [max records per phase]
 * Exits 0 when every check held.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tap/ring.h"
#include "th.h"

#define RING_SIZE (64u * 1024)

struct phase {
	struct tap_ring *prod, *cons;
	double seconds;
	uint64_t max_records;
	uint64_t last_seq; /* written by the producer before <done> */
	int done, stop_stats;
	/* consumer's findings */
	uint64_t seen, gap_frames, gap_bytes, bad;
	int bad_stats; /* stats reader's findings */
};

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

/* Each record's size follows from its sequence number: the consumer can count dropped bytes. */
static size_t size_of(uint64_t seq)
{
	uint64_t h = mix(seq);

	/* Mostly small, sometimes up to 16 KiB: the wrap marker path runs often. */
	return 8 + (h % 16 == 0 ? h % 16384 : h % 600);
}

static uint8_t byte_of(uint64_t seq, size_t i)
{
	return (uint8_t)(seq * 131 + i * 7);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *producer(void *arg)
{
	struct phase *ph = arg;
	double end = now_s() + ph->seconds;
	uint64_t seq;

	for (seq = 1; seq <= ph->max_records; seq++) {
		size_t len = size_of(seq);
		uint8_t *p;

		if ((seq & 1023) == 0 && now_s() > end)
			break;
		p = tap_ring_reserve(ph->prod, 0, len);
		if (!p) {
			/* Dropped and counted by the ring; let the consumer run now and then. */
			if ((seq & 63) == 0)
				sched_yield();
			continue;
		}
		memcpy(p, &seq, 8);
		for (size_t i = 8; i < len; i++)
			p[i] = byte_of(seq, i);
		tap_ring_commit(ph->prod, 0, len);
	}
	ph->last_seq = seq - 1;
	__atomic_store_n(&ph->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void gap(struct phase *ph, uint64_t from, uint64_t to)
{
	for (uint64_t s = from; s < to; s++) {
		ph->gap_frames++;
		ph->gap_bytes += size_of(s);
	}
}

static void *consumer(void *arg)
{
	struct phase *ph = arg;
	uint64_t pos = tap_ring_tail(ph->cons, 0), expected = 1, unreleased = 0;

	for (;;) {
		const uint8_t *p;
		const void *payload;
		uint64_t seq;
		uint32_t len;
		int ret;
		bool done = __atomic_load_n(&ph->done, __ATOMIC_ACQUIRE);

		ret = tap_ring_next(ph->cons, 0, &pos, &payload, &len);
		if (ret < 0) {
			fprintf(stderr, "ring_stress: tap_ring_next at %llu: %s\n",
				(unsigned long long)pos, strerror(-ret));
			ph->bad++;
			break;
		}
		if (ret == 0) {
			tap_ring_release(ph->cons, 0, pos, unreleased);
			unreleased = 0;
			/* <done> was read before this empty next(): nothing more will come. */
			if (done)
				break;
			sched_yield();
			continue;
		}
		p = payload;
		memcpy(&seq, p, 8);
		if (seq < expected || len != size_of(seq)) {
			fprintf(stderr, "ring_stress: record seq %llu len %u after seq %llu\n",
				(unsigned long long)seq, len, (unsigned long long)expected - 1);
			ph->bad++;
			break;
		}
		for (size_t i = 8; i < len; i++) {
			if (p[i] != byte_of(seq, i)) {
				fprintf(stderr, "ring_stress: seq %llu byte %zu corrupt\n",
					(unsigned long long)seq, i);
				ph->bad++;
				break;
			}
		}
		gap(ph, expected, seq);
		expected = seq + 1;
		ph->seen++;
		if (++unreleased == 32) {
			tap_ring_release(ph->cons, 0, pos, unreleased);
			unreleased = 0;
		}
		/* A slow sink now and then: the ring fills and the producer drops. */
		if (ph->seen % 50000 == 0)
			usleep(2000);
	}
	/* Whatever the producer attempted after the last record seen was dropped. */
	gap(ph, expected, ph->last_seq + 1);
	return NULL;
}

static void *stats_reader(void *arg)
{
	struct phase *ph = arg;
	uint64_t last_frames = 0;

	while (!__atomic_load_n(&ph->stop_stats, __ATOMIC_ACQUIRE)) {
		struct tap_ring_stats st;

		tap_ring_stats(ph->prod, 0, &st);
		if (st.frames < last_frames || st.tail > st.head || st.head - st.tail > RING_SIZE) {
			fprintf(stderr, "ring_stress: counters went backwards or out of range\n");
			ph->bad_stats++;
		}
		last_frames = st.frames;
		usleep(1000);
	}
	return NULL;
}

static int run_phase(const char *name, const char *path, bool second_mapping, double seconds,
		     uint64_t max_records)
{
	struct phase ph = { .seconds = seconds, .max_records = max_records };
	pthread_t tp, tc, ts;
	struct tap_ring_stats st;
	char err[256];
	int ret, fails = 0;

	ret = tap_ring_create(path, 1, RING_SIZE, 0x5eed, &ph.prod);
	if (ret) {
		fprintf(stderr, "ring_stress: create %s: %s\n", path, strerror(-ret));
		return 1;
	}
	ph.cons = ph.prod;
	if (second_mapping && tap_ring_open(path, &ph.cons, err, sizeof(err))) {
		fprintf(stderr, "ring_stress: %s\n", err);
		tap_ring_close(ph.prod, false);
		return 1;
	}
	pthread_create(&ts, NULL, stats_reader, &ph);
	pthread_create(&tc, NULL, consumer, &ph);
	pthread_create(&tp, NULL, producer, &ph);
	pthread_join(tp, NULL);
	pthread_join(tc, NULL);
	__atomic_store_n(&ph.stop_stats, 1, __ATOMIC_RELEASE);
	pthread_join(ts, NULL);

	tap_ring_stats(ph.prod, 0, &st);
	printf("ring_stress: %s: %llu attempted, %llu read, %llu dropped (%llu bytes), "
	       "head %llu (%llu laps)\n",
	       name, (unsigned long long)ph.last_seq, (unsigned long long)ph.seen,
	       (unsigned long long)st.dropped_frames, (unsigned long long)st.dropped_bytes,
	       (unsigned long long)st.head, (unsigned long long)(st.head / RING_SIZE));
	if (ph.bad || ph.bad_stats)
		fails++;
	if (ph.gap_frames != st.dropped_frames || ph.gap_bytes != st.dropped_bytes) {
		fprintf(stderr,
			"ring_stress: %s: gaps %llu frames %llu bytes, ring counted %llu/%llu\n",
			name, (unsigned long long)ph.gap_frames, (unsigned long long)ph.gap_bytes,
			(unsigned long long)st.dropped_frames,
			(unsigned long long)st.dropped_bytes);
		fails++;
	}
	if (st.frames != ph.seen || st.consumed_frames != ph.seen ||
	    ph.seen + st.dropped_frames != ph.last_seq || st.tail != st.head) {
		fprintf(stderr, "ring_stress: %s: frames %llu consumed %llu, read %llu\n", name,
			(unsigned long long)st.frames, (unsigned long long)st.consumed_frames,
			(unsigned long long)ph.seen);
		fails++;
	}
	if (ph.seen == 0 || st.head < 4 * RING_SIZE) {
		fprintf(stderr, "ring_stress: %s: too little traffic to mean anything\n", name);
		fails++;
	}
	if (second_mapping)
		tap_ring_close(ph.cons, false);
	tap_ring_close(ph.prod, true);
	unlink(path);
	return fails;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 2.0;
	uint64_t max_records = argc > 2 ? strtoull(argv[2], NULL, 10) : 5000000;
	char path[512];
	int fails = 0;

	if (seconds <= 0 || max_records == 0) {
		fprintf(stderr, "usage: ring_stress [seconds per phase] [max records per phase]\n");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/ring-stress-%d", th_tmpdir(), (int)getpid());
	fails += run_phase("one mapping", path, false, seconds, max_records);
	fails += run_phase("two mappings", path, true, seconds, max_records);
	printf("ring_stress: %s\n", fails ? "FAILED" : "ok");
	return fails ? 1 : 0;
}
