/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of capture/src/ring.c: the ring file's creation and validation, the
 * record protocol (reserve, commit, next, release, wrap markers), drops, and
 * a consumer facing a corrupt or replaced file. The layout is checked from
 * capture/FORMAT.md by mapping the file here, independently of ring.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap/ring.h"
#include "th.h"

#define SZ TAP_RING_SIZE_MIN

/* Offsets of FORMAT.md's "Shared-memory ring". */
#define H_VERSION 8
#define H_NRINGS 12
#define H_RING_SIZE 16
#define H_GENERATION 24
#define H_PID 32
#define H_STATE 36
#define H_CREATED 40
#define H_DATA_OFF 48
#define CTL(i) (256 + 256 * (i))
#define C_TAIL 128

static char *ring_path(const char *name)
{
	static char path[512];

	snprintf(path, sizeof(path), "%s/ring-%d-%s", th_tmpdir(), (int)getpid(), name);
	return path;
}

/* The file's bytes, mapped read-write by the test as another process would. */
struct raw {
	uint8_t *p;
	size_t len;
};

static void raw_map(struct raw *m, const char *path)
{
	struct stat st;
	int fd = open(path, O_RDWR);

	cr_assert_geq(fd, 0);
	cr_assert_eq(fstat(fd, &st), 0);
	m->len = (size_t)st.st_size;
	m->p = mmap(NULL, m->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(m->p, MAP_FAILED);
	close(fd);
}

static void raw_unmap(struct raw *m)
{
	munmap(m->p, m->len);
}

static uint64_t rd64(const struct raw *m, size_t off)
{
	uint64_t v;

	memcpy(&v, m->p + off, 8);
	return v;
}

static uint32_t rd32(const struct raw *m, size_t off)
{
	uint32_t v;

	memcpy(&v, m->p + off, 4);
	return v;
}

static void wr64(struct raw *m, size_t off, uint64_t v)
{
	memcpy(m->p + off, &v, 8);
}

static void wr32(struct raw *m, size_t off, uint32_t v)
{
	memcpy(m->p + off, &v, 4);
}

/* Writes one record of <len> bytes of <fill>; returns false when it was dropped. */
static bool put(struct tap_ring *r, unsigned idx, size_t len, uint8_t fill)
{
	uint8_t *p = tap_ring_reserve(r, idx, len);

	if (!p)
		return false;
	memset(p, fill, len);
	tap_ring_commit(r, idx, len);
	return true;
}

/* Reads the next record, which must be there, of <len> bytes of <fill>. */
static void expect_next(struct tap_ring *r, unsigned idx, uint64_t *pos, size_t len, uint8_t fill)
{
	const void *payload;
	uint32_t got;

	cr_assert_eq(tap_ring_next(r, idx, pos, &payload, &got), 1, "a record at %llu",
		     (unsigned long long)*pos);
	cr_assert_eq(got, len);
	for (size_t i = 0; i < len; i++)
		cr_assert_eq(((const uint8_t *)payload)[i], fill, "byte %zu", i);
}

static int open_err(const char *path, char *err, size_t errlen)
{
	struct tap_ring *c = NULL;
	int ret = tap_ring_open(path, &c, err, errlen);

	if (ret == 0)
		tap_ring_close(c, false);
	return ret;
}

Test(tap_ring, create_writes_the_format_header)
{
	const char *path = ring_path("hdr");
	struct tap_ring *p, *c;
	struct raw m;
	char err[256];

	cr_assert_eq(tap_ring_create(path, 3, 2 * SZ, 0xfeedull, &p), 0);
	raw_map(&m, path);
	cr_expect_eq(memcmp(m.p, "SDTPRNG1", 8), 0);
	cr_expect_eq(rd32(&m, H_VERSION), 1);
	cr_expect_eq(rd32(&m, H_NRINGS), 3);
	cr_expect_eq(rd64(&m, H_RING_SIZE), 2 * SZ);
	cr_expect_eq(rd64(&m, H_GENERATION), 0xfeed);
	cr_expect_eq(rd32(&m, H_PID), (uint32_t)getpid());
	cr_expect_eq(rd32(&m, H_STATE), TAP_RING_RUNNING);
	cr_expect_gt(rd64(&m, H_CREATED), 1600000000ull * 1000000000ull);
	cr_expect_geq(rd64(&m, H_DATA_OFF), CTL(3));
	cr_expect_eq(m.len, rd64(&m, H_DATA_OFF) + 3 * 2 * SZ);
	raw_unmap(&m);

	cr_assert_eq(tap_ring_open(path, &c, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(tap_ring_count(c), 3);
	cr_expect_eq(tap_ring_size(c), 2 * SZ);
	cr_expect_eq(tap_ring_generation(c), 0xfeed);
	cr_expect_eq(tap_ring_producer_pid(c), (uint32_t)getpid());
	cr_expect_eq(tap_ring_state(c), TAP_RING_RUNNING);
	tap_ring_close(p, true);
	cr_expect_eq(tap_ring_state(c), TAP_RING_STOPPED, "close(stopped) marks the file");
	tap_ring_close(c, false);
	unlink(path);
}

Test(tap_ring, create_refuses_bad_geometry)
{
	const char *path = ring_path("geom");
	struct tap_ring *p;

	cr_expect_eq(tap_ring_create(path, 0, SZ, 1, &p), -EINVAL);
	cr_expect_eq(tap_ring_create(path, TAP_RING_MAX + 1, SZ, 1, &p), -EINVAL);
	cr_expect_eq(tap_ring_create(path, 1, SZ + 8, 1, &p), -EINVAL, "not a power of two");
	cr_expect_eq(tap_ring_create(path, 1, SZ / 2, 1, &p), -EINVAL, "too small");
	cr_expect_eq(tap_ring_create(path, 1, TAP_RING_SIZE_MAX * 2, 1, &p), -EINVAL);
	cr_expect_eq(tap_ring_create("/nonexistent-dir/ring", 1, SZ, 1, &p), -ENOENT);
	cr_expect_eq(access(path, F_OK), -1, "nothing left behind");
}

/* Corrupts one header field of a fresh ring file and expects tap_ring_open() to name it. */
static void expect_open_refuses(const char *name, size_t off, uint64_t val, int width,
				const char *needle)
{
	const char *path = ring_path(name);
	struct tap_ring *p;
	struct raw m;
	char err[256] = "";

	cr_assert_eq(tap_ring_create(path, 2, SZ, 7, &p), 0);
	raw_map(&m, path);
	if (width == 8)
		wr64(&m, off, val);
	else
		wr32(&m, off, (uint32_t)val);
	raw_unmap(&m);
	cr_expect_eq(open_err(path, err, sizeof(err)), -EINVAL, "%s", name);
	cr_expect_not_null(strstr(err, needle), "%s: message '%s' lacks '%s'", name, err, needle);
	cr_expect_not_null(strstr(err, path), "%s: message names the file", name);
	tap_ring_close(p, false);
	unlink(path);
}

Test(tap_ring, open_explains_each_bad_header)
{
	expect_open_refuses("magic", 0, 0x31474e5250544458ull, 8, "bad magic");
	expect_open_refuses("version", H_VERSION, 2, 4, "version 2");
	expect_open_refuses("nrings0", H_NRINGS, 0, 4, "0 rings");
	expect_open_refuses("nrings", H_NRINGS, 257, 4, "257 rings");
	expect_open_refuses("nrings3", H_NRINGS, 3, 4, "truncated");
	expect_open_refuses("pow2", H_RING_SIZE, SZ + 4096, 8, "not a power of two");
	expect_open_refuses("small", H_RING_SIZE, 4096, 8, "not a power of two in");
	expect_open_refuses("bigger", H_RING_SIZE, 2 * SZ, 8, "file is");
	expect_open_refuses("dataoff", H_DATA_OFF, 8, 8, "data offset 8");
	expect_open_refuses("dataoff_huge", H_DATA_OFF, UINT64_MAX - 7, 8, "data offset");
}

Test(tap_ring, open_explains_short_and_resized_files)
{
	const char *path = ring_path("short");
	struct tap_ring *p;
	char err[256] = "";
	int fd;

	cr_expect_eq(open_err(path, err, sizeof(err)), -ENOENT);
	cr_expect_not_null(strstr(err, "cannot open"), "%s", err);

	fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "SDTPRNG1", 8), 8);
	close(fd);
	cr_expect_eq(open_err(path, err, sizeof(err)), -EINVAL);
	cr_expect_not_null(strstr(err, "too short for a ring header"), "%s", err);

	cr_assert_eq(tap_ring_create(path, 2, SZ, 7, &p), 0);
	cr_assert_eq(truncate(path, 4096 + SZ), 0);
	cr_expect_eq(open_err(path, err, sizeof(err)), -EINVAL);
	cr_expect_not_null(strstr(err, "truncated"), "%s", err);
	cr_assert_eq(truncate(path, 4096 + 3 * SZ), 0);
	cr_expect_eq(open_err(path, err, sizeof(err)), -EINVAL, "longer than the header says");
	cr_expect_not_null(strstr(err, "file is"), "%s", err);
	tap_ring_close(p, false);
	unlink(path);
}

Test(tap_ring, records_come_out_in_order_and_release_frees_them)
{
	const char *path = ring_path("order");
	struct tap_ring *p, *c;
	struct tap_ring_stats st;
	const void *payload;
	uint64_t pos;
	uint32_t len;
	char err[256];
	uint8_t *w;

	cr_assert_eq(tap_ring_create(path, 1, SZ, 1, &p), 0);
	cr_assert_eq(tap_ring_open(path, &c, err, sizeof(err)), 0, "%s", err);
	pos = tap_ring_tail(c, 0);
	cr_assert_eq(pos, 0);
	cr_assert_eq(tap_ring_next(c, 0, &pos, &payload, &len), 0, "empty");
	cr_assert(put(p, 0, 1, 'a'));
	cr_assert(put(p, 0, 13, 'b'));
	/* Reserve more than is written: the record has the committed length. */
	w = tap_ring_reserve(p, 0, 1000);
	cr_assert_not_null(w);
	memset(w, 'c', 8);
	tap_ring_commit(p, 0, 8);
	/* A reservation committed with 0 is abandoned: nothing published, nothing dropped. */
	cr_assert_not_null(tap_ring_reserve(p, 0, 64));
	tap_ring_commit(p, 0, 0);
	cr_assert_eq(tap_ring_head(c, 0), (8 + 8) + (8 + 16) + (8 + 8), "8-byte aligned records");

	expect_next(c, 0, &pos, 1, 'a');
	expect_next(c, 0, &pos, 13, 'b');
	expect_next(c, 0, &pos, 8, 'c');
	cr_assert_eq(tap_ring_next(c, 0, &pos, &payload, &len), 0);
	cr_assert_eq(pos, tap_ring_head(c, 0));
	cr_assert_eq(tap_ring_tail(c, 0), 0, "reading does not release");
	tap_ring_release(c, 0, pos, 3);
	cr_assert_eq(tap_ring_tail(c, 0), pos);

	tap_ring_stats(p, 0, &st);
	cr_expect_eq(st.head, pos);
	cr_expect_eq(st.tail, pos);
	cr_expect_eq(st.frames, 3);
	cr_expect_eq(st.bytes, 1 + 13 + 8);
	cr_expect_eq(st.dropped_frames, 0);
	cr_expect_eq(st.dropped_bytes, 0);
	cr_expect_eq(st.consumed_frames, 3);
	tap_ring_stats(p, 5, &st);
	cr_expect_eq(st.head, 0, "no such ring: zeros");
	tap_ring_close(c, false);
	tap_ring_close(p, true);
	unlink(path);
}

Test(tap_ring, wrap_around_with_records_of_many_sizes)
{
	const char *path = ring_path("wrap");
	struct tap_ring *p, *c;
	struct tap_ring_stats st;
	uint64_t pos, wraps = 0, written = 0, bytes = 0;
	uint64_t x = 12345;
	char err[256];
	struct raw m;

	cr_assert_eq(tap_ring_create(path, 1, SZ, 1, &p), 0);
	cr_assert_eq(tap_ring_open(path, &c, err, sizeof(err)), 0, "%s", err);
	raw_map(&m, path);
	pos = tap_ring_tail(c, 0);
	/* Many laps of the ring, a few records at a time, sizes from 0 to 20 KiB. */
	for (int round = 0; round < 3000; round++) {
		int batch = 1 + round % 5;
		size_t lens[5];

		for (int k = 0; k < batch; k++) {
			uint64_t before = tap_ring_head(c, 0);
			size_t rec;

			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			lens[k] = 1 + (k == 0 ? x % 20000 : x % 300);
			cr_assert(put(p, 0, lens[k], (uint8_t)(written + k)), "round %d", round);
			rec = 8 + ((lens[k] + 7) & ~(size_t)7);
			/* The head grew by more than the record: the rest of the lap was a marker. */
			if (tap_ring_head(c, 0) - before > rec) {
				size_t off = before & (SZ - 1);
				size_t data_off = rd64(&m, H_DATA_OFF);

				wraps++;
				cr_assert_eq(rd32(&m, data_off + off + 4), 0x50415257,
					     "WRAP marker");
				cr_assert_eq(tap_ring_head(c, 0) - before, SZ - off + rec);
			}
		}
		for (int k = 0; k < batch; k++) {
			expect_next(c, 0, &pos, lens[k], (uint8_t)(written + k));
			bytes += lens[k];
		}
		written += (uint64_t)batch;
		tap_ring_release(c, 0, pos, (uint64_t)batch);
	}
	cr_expect_gt(wraps, 100, "the wrap path ran: %llu", (unsigned long long)wraps);
	cr_expect_gt(pos, 50ull * SZ, "many laps");
	tap_ring_stats(c, 0, &st);
	cr_expect_eq(st.frames, written);
	cr_expect_eq(st.bytes, bytes);
	cr_expect_eq(st.consumed_frames, written);
	cr_expect_eq(st.dropped_frames, 0);
	raw_unmap(&m);
	tap_ring_close(c, false);
	tap_ring_close(p, false);
	unlink(path);
}

Test(tap_ring, full_ring_drops_and_counts_exactly_then_recovers)
{
	const char *path = ring_path("full");
	struct tap_ring *p, *c;
	struct tap_ring_stats st;
	uint64_t pos;
	char err[256];
	int n = 0;

	cr_assert_eq(tap_ring_create(path, 1, SZ, 1, &p), 0);
	cr_assert_eq(tap_ring_open(path, &c, err, sizeof(err)), 0, "%s", err);
	/* 1000-byte records take 1008: 65 fit in 64 KiB, the 66th is dropped. */
	while (put(p, 0, 1000, 'x'))
		n++;
	cr_assert_eq(n, SZ / 1008);
	for (int i = 0; i < 9; i++)
		cr_assert_not(put(p, 0, 1000 + (size_t)i, 'y'));
	cr_assert_not(put(p, 0, 1001, 'y'), "never blocks, never overwrites");
	cr_assert(put(p, 0, SZ - n * 1008 - 8, 'z'), "what still fits goes in");
	tap_ring_stats(p, 0, &st);
	cr_expect_eq(st.dropped_frames, 11);
	cr_expect_eq(st.dropped_bytes, 1000 + 9 * 1000 + 36 + 1001);
	cr_expect_eq(st.frames, (uint64_t)n + 1);

	/* Releasing one record makes room for one more of its size. */
	pos = tap_ring_tail(c, 0);
	expect_next(c, 0, &pos, 1000, 'x');
	tap_ring_release(c, 0, pos, 1);
	cr_assert(put(p, 0, 1000, 'w'), "room after release");
	cr_assert_not(put(p, 0, 1000, 'w'));
	tap_ring_count_drop(p, 0, 4242);
	tap_ring_stats(c, 0, &st);
	cr_expect_eq(st.dropped_frames, 13);
	cr_expect_eq(st.dropped_bytes, 1000 + 9 * 1000 + 36 + 1001 + 1000 + 4242);
	/* Every surviving record is intact, in order. */
	for (int i = 1; i < n; i++)
		expect_next(c, 0, &pos, 1000, 'x');
	expect_next(c, 0, &pos, SZ - n * 1008 - 8, 'z');
	expect_next(c, 0, &pos, 1000, 'w');
	tap_ring_close(c, false);
	tap_ring_close(p, false);
	unlink(path);
}

Test(tap_ring, reserve_bigger_than_the_ring_is_a_counted_drop)
{
	const char *path = ring_path("huge");
	struct tap_ring *p;
	struct tap_ring_stats st;

	cr_assert_eq(tap_ring_create(path, 1, SZ, 1, &p), 0);
	cr_expect_null(tap_ring_reserve(p, 0, SZ));
	cr_expect_null(tap_ring_reserve(p, 0, SZ - 7));
	cr_expect_null(tap_ring_reserve(p, 0, (size_t)1 << 40));
	cr_expect_null(tap_ring_reserve(p, 1, 10), "no such ring");
	tap_ring_commit(p, 0, 100); /* after a failed reserve: no-op */
	cr_expect_not_null(tap_ring_reserve(p, 0, SZ - 8), "exactly the ring");
	tap_ring_commit(p, 0, SZ - 8);
	tap_ring_stats(p, 0, &st);
	cr_expect_eq(st.dropped_frames, 3);
	cr_expect_eq(st.dropped_bytes, SZ + SZ - 7 + (1ull << 40));
	cr_expect_eq(st.frames, 1);
	cr_expect_eq(st.head, SZ);
	tap_ring_close(p, false);
	unlink(path);
}

Test(tap_ring, consumer_restart_resumes_from_the_tail)
{
	const char *path = ring_path("restart");
	struct tap_ring *p, *c;
	uint64_t pos;
	char err[256];

	cr_assert_eq(tap_ring_create(path, 1, SZ, 1, &p), 0);
	for (int i = 0; i < 10; i++)
		cr_assert(put(p, 0, 100 + (size_t)i, (uint8_t)i));
	cr_assert_eq(tap_ring_open(path, &c, err, sizeof(err)), 0, "%s", err);
	pos = tap_ring_tail(c, 0);
	for (int i = 0; i < 10; i++)
		expect_next(c, 0, &pos, 100 + (size_t)i, (uint8_t)i);
	/* Only the first four reached the sink before the consumer died. */
	pos = tap_ring_tail(c, 0);
	for (int i = 0; i < 4; i++)
		expect_next(c, 0, &pos, 100 + (size_t)i, (uint8_t)i);
	tap_ring_release(c, 0, pos, 4);
	tap_ring_close(c, false);

	cr_assert_eq(tap_ring_open(path, &c, err, sizeof(err)), 0, "%s", err);
	pos = tap_ring_tail(c, 0);
	for (int i = 4; i < 10; i++)
		expect_next(c, 0, &pos, 100 + (size_t)i, (uint8_t)i);
	cr_assert(put(p, 0, 7, 'n'), "the producer carries on meanwhile");
	expect_next(c, 0, &pos, 7, 'n');
	tap_ring_close(c, false);
	tap_ring_close(p, false);
	unlink(path);
}

/* Reads until a record fails; returns tap_ring_next's value and never reads out of bounds. */
static int next_ret(struct tap_ring *c, uint64_t *pos)
{
	const void *payload;
	uint32_t len;

	return tap_ring_next(c, 0, pos, &payload, &len);
}

Test(tap_ring, corrupt_records_are_ebadmsg_and_the_consumer_resyncs)
{
	const char *path = ring_path("corrupt");
	struct tap_ring *p, *c;
	size_t data;
	uint64_t pos, save, head;
	char err[256];
	struct raw m;

	cr_assert_eq(tap_ring_create(path, 1, SZ, 1, &p), 0);
	cr_assert_eq(tap_ring_open(path, &c, err, sizeof(err)), 0, "%s", err);
	raw_map(&m, path);
	data = rd64(&m, H_DATA_OFF);
	for (int i = 0; i < 3; i++)
		cr_assert(put(p, 0, 100, (uint8_t)i));
	pos = tap_ring_tail(c, 0);
	head = rd64(&m, CTL(0));
	cr_assert_eq(head, 3 * 112);

	/* Bad magic on the first record. */
	save = rd64(&m, data);
	wr32(&m, data + 4, 0xdeadbeef);
	cr_expect_eq(next_ret(c, &pos), -EBADMSG);
	cr_expect_eq(pos, 0, "*pos stays on the bad record");
	/* A length past the head, then past the ring's end, then 4 GiB. */
	wr64(&m, data, save);
	wr32(&m, data, 400);
	cr_expect_eq(next_ret(c, &pos), -EBADMSG, "past the head");
	wr32(&m, data, SZ);
	cr_expect_eq(next_ret(c, &pos), -EBADMSG, "past the ring");
	wr32(&m, data, UINT32_MAX);
	cr_expect_eq(next_ret(c, &pos), -EBADMSG, "4 GiB");
	/* A wrap marker where none can be (offset 0), a misaligned or wild position. */
	wr64(&m, data, (uint64_t)0x50415257 << 32);
	cr_expect_eq(next_ret(c, &pos), -EBADMSG, "wrap at 0");
	wr64(&m, data, save);
	pos = 3;
	cr_expect_eq(next_ret(c, &pos), -EBADMSG, "misaligned");
	pos = 1ull << 50;
	cr_expect_eq(next_ret(c, &pos), -EBADMSG, "ahead of the head");
	/*
	 * A head the producer never wrote, more than a ring ahead: seen once the
	 * consumer has caught up with the head it read before.
	 */
	wr64(&m, CTL(0), 5 * SZ);
	pos = head;
	cr_expect_eq(next_ret(c, &pos), -EBADMSG, "head a lap ahead");
	wr64(&m, CTL(0), head - 8);
	cr_expect_eq(next_ret(c, &pos), -EBADMSG, "head gone backwards");
	wr64(&m, CTL(0), head);

	/* Resync: skip to the head, release, and new records flow again. */
	pos = 0;
	wr32(&m, data + 4, 0);
	cr_assert_eq(next_ret(c, &pos), -EBADMSG);
	pos = tap_ring_head(c, 0);
	tap_ring_release(c, 0, pos, 0);
	cr_assert(put(p, 0, 50, 'r'));
	expect_next(c, 0, &pos, 50, 'r');
	raw_unmap(&m);
	tap_ring_close(c, false);
	tap_ring_close(p, false);
	unlink(path);
}

Test(tap_ring, garbage_everywhere_never_reads_out_of_bounds)
{
	const char *path = ring_path("garbage");
	struct tap_ring *p, *c;
	const uint8_t *base;
	const void *payload;
	uint64_t x = 99, pos = 0;
	uint32_t len;
	size_t data;
	char err[256];
	struct raw m;

	cr_assert_eq(tap_ring_create(path, 1, SZ, 1, &p), 0);
	cr_assert_eq(tap_ring_open(path, &c, err, sizeof(err)), 0, "%s", err);
	raw_map(&m, path);
	data = rd64(&m, H_DATA_OFF);
	/* Where the consumer's mapping of the data area starts: before the first payload. */
	cr_assert(put(p, 0, 8, 'f'));
	cr_assert_eq(tap_ring_next(c, 0, &pos, &payload, &len), 1);
	base = (const uint8_t *)payload - 8;
	/* Another process scribbles over the data and the positions: every read stays inside. */
	for (int iter = 0; iter < 20000; iter++) {
		int ret;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		wr64(&m, data + (x % SZ & ~(uint64_t)7), x * 0x9e3779b97f4a7c15ull);
		if (iter % 3 == 0)
			wr32(&m, data + (x % SZ & ~(uint64_t)7) + 4,
			     iter % 2 ? 0x31524d46 : 0x50415257);
		wr64(&m, CTL(0), (x >> 20) % (2 * SZ));
		pos = (x >> 7) % (2 * SZ) & ~(uint64_t)(iter % 5 ? 7 : 0);
		while ((ret = tap_ring_next(c, 0, &pos, &payload, &len)) == 1) {
			const uint8_t *b = payload;

			cr_assert(b >= base + 8 && b + len <= base + SZ,
				  "payload outside the ring");
		}
		cr_assert(ret == 0 || ret == -EBADMSG);
	}
	/*
	 * The producer keeps its own head: the scribbled one does not move where
	 * it writes. A wild tail reads as a full ring once the producer looks.
	 */
	tap_ring_release(c, 0, 1ull << 60, 0);
	for (unsigned i = 0; i < SZ / 112; i++)
		put(p, 0, 100, 'p');
	cr_expect_null(tap_ring_reserve(p, 0, 100), "a wild tail reads as full");
	cr_expect_eq(rd64(&m, CTL(0)), SZ, "the head moved by whole records, to exactly full");
	raw_unmap(&m);
	tap_ring_close(c, false);
	tap_ring_close(p, false);
	unlink(path);
}

Test(tap_ring, rings_are_independent)
{
	const char *path = ring_path("multi");
	struct tap_ring *p, *c;
	struct tap_ring_stats st;
	uint64_t pos[4];
	char err[256];

	cr_assert_eq(tap_ring_create(path, 4, SZ, 1, &p), 0);
	cr_assert_eq(tap_ring_open(path, &c, err, sizeof(err)), 0, "%s", err);
	for (unsigned r = 0; r < 4; r++)
		for (unsigned i = 0; i <= r; i++)
			cr_assert(put(p, r, 10 * (r + 1), (uint8_t)('a' + r)));
	while (put(p, 2, 4000, 'f'))
		;
	for (unsigned r = 0; r < 4; r++) {
		pos[r] = tap_ring_tail(c, r);
		for (unsigned i = 0; i <= r; i++)
			expect_next(c, r, &pos[r], 10 * (r + 1), (uint8_t)('a' + r));
		tap_ring_stats(c, r, &st);
		cr_expect_eq(st.frames, r == 2 ? 3 + (SZ - 3 * 40) / 4008 : r + 1, "ring %u", r);
		cr_expect_eq(st.dropped_frames, r == 2 ? 1 : 0,
			     "ring %u: a full ring 2 drops alone", r);
	}
	cr_assert(put(p, 3, 8, 'q'), "ring 3 is not full");
	tap_ring_release(c, 1, pos[1], 2);
	cr_expect_eq(tap_ring_tail(c, 1), pos[1]);
	cr_expect_eq(tap_ring_tail(c, 0), 0);
	cr_expect_eq(tap_ring_next(c, 9, &pos[0], &(const void *){ NULL }, &(uint32_t){ 0 }),
		     -EINVAL);
	tap_ring_close(c, false);
	tap_ring_close(p, false);
	unlink(path);
}

Test(tap_ring, recreate_keeps_old_mapping_and_new_open_sees_new_generation)
{
	const char *path = ring_path("recreate");
	struct tap_ring *p1, *p2, *c1, *c2;
	uint64_t pos;
	char err[256];

	cr_assert_eq(tap_ring_create(path, 1, SZ, 111, &p1), 0);
	cr_assert_eq(tap_ring_open(path, &c1, err, sizeof(err)), 0, "%s", err);
	cr_assert(put(p1, 0, 33, 'o'));
	tap_ring_close(p1, true);
	/* A restarted sidetap makes a new file at the same path. */
	cr_assert_eq(tap_ring_create(path, 2, 2 * SZ, 222, &p2), 0);
	cr_assert(put(p2, 0, 44, 'n'));

	/* The old consumer still reads the old file, untouched. */
	cr_expect_eq(tap_ring_generation(c1), 111);
	cr_expect_eq(tap_ring_state(c1), TAP_RING_STOPPED);
	pos = tap_ring_tail(c1, 0);
	expect_next(c1, 0, &pos, 33, 'o');
	/* A fresh open finds the new one. */
	cr_assert_eq(tap_ring_open(path, &c2, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(tap_ring_generation(c2), 222);
	cr_expect_eq(tap_ring_count(c2), 2);
	cr_expect_eq(tap_ring_state(c2), TAP_RING_RUNNING);
	pos = tap_ring_tail(c2, 0);
	expect_next(c2, 0, &pos, 44, 'n');
	tap_ring_close(c1, false);
	tap_ring_close(c2, false);
	tap_ring_close(p2, false);
	unlink(path);
}
