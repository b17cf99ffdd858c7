/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for tap_conn: two byte streams, random slicing, checked frames (TESTPLAN P1). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_dump.h"
#include "fuzz.h"
#include "tap/conn.h"

/*
 * Input layout:
 *   byte 0   options: bits 0-1 limits preset, bit 2 interleave the directions
 *            at random, bit 3 skip what tap_conn_wants() offers, bit 4 EOF
 *            c2u before u2c
 *   byte 1   seed of the slice lengths
 *   byte 2-3 c2u length, little-endian (clamped to what is left)
 *   then     the c2u bytes, then the u2c bytes
 *
 * Without interleaving, all of c2u goes before all of u2c, and the frames of
 * the sliced run must equal those of a run fed one slice per direction
 * (split invariance). Every run checks the frames' invariants and that each
 * tcp frame holds the input's bytes at its offset.
 *
 * Run it (clang and libclang-rt-14-dev):
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DSIDETAP_FUZZ=ON
 *   cmake --build build-fuzz --target fuzz_conn
 *   mkdir -p /tmp/conn && cp -r tests/fuzz/corpus/conn/. /tmp/conn/
 *   build-fuzz/tests/fuzz/fuzz_conn -max_total_time=240 -max_len=4096 /tmp/conn
 * A crash becomes a regression seed, tests/fuzz/corpus/conn/regress-<what>,
 * which replay_conn runs in every build (ctest -R fuzz_conn_replay).
 */
#define OPT_PRESET 0x03u
#define OPT_INTERLEAVE 0x04u
#define OPT_SKIP 0x08u
#define OPT_EOF_C2U_FIRST 0x10u

struct input {
	const uint8_t *data[2];
	size_t len[2];
	unsigned opts;
	uint32_t seed;
};

static const struct tap_conn_cfg presets[4] = {
	{ .body_limit = 64, .header_limit = 256, .max_pending = 4, .tcp_chunk = 16 },
	{ .body_limit = 0, .header_limit = 0, .max_pending = 1, .tcp_chunk = 1 },
	{ .body_limit = 1u << 20,
	  .header_limit = 64u << 10,
	  .max_pending = 64,
	  .tcp_chunk = 64u << 10 },
	{ .body_limit = 7, .header_limit = 40, .max_pending = 2, .tcp_chunk = 5 },
};

static void die(const char *what, const struct conn_dump *d, const char *a, const char *b)
{
	fprintf(stderr, "fuzz_conn: %s\n", what);
	if (d && d->err[0])
		fprintf(stderr, "  %s\n", d->err);
	if (a)
		fprintf(stderr, "--- one slice per direction\n%s", a);
	if (b)
		fprintf(stderr, "--- sliced\n%s", b);
	abort();
}

static uint32_t next_rand(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* Feeds <in>; <sliced> cuts slices at random, else one slice per direction. */
static char *run(const struct input *in, const struct tap_conn_cfg *cfg, bool sliced)
{
	uint32_t rnd = in->seed * 2654435761u + 1;
	size_t pos[2] = { 0, 0 };
	struct conn_dump d;
	struct tap_conn *tc;
	uint64_t ts = 1;
	char *text;

	conn_dump_init(&d, cfg);
	tc = tap_conn_new(cfg, conn_dump_emit, &d);
	if (!tc)
		abort();
	while (pos[0] < in->len[0] || pos[1] < in->len[1]) {
		enum tap_dir dir = pos[0] < in->len[0] ? TAP_C2U : TAP_U2C;
		size_t left, n;
		uint64_t skip;

		if (sliced && in->opts & OPT_INTERLEAVE && pos[0] < in->len[0] &&
		    pos[1] < in->len[1])
			dir = next_rand(&rnd) & 1 ? TAP_U2C : TAP_C2U;
		left = in->len[dir] - pos[dir];
		if (sliced && in->opts & OPT_SKIP && !tap_conn_wants(tc, dir, &skip)) {
			n = skip < left ? (size_t)skip : left;
			tap_conn_skip(tc, dir, n, ts++);
		} else {
			n = left;
			if (sliced) {
				uint32_t r = next_rand(&rnd);

				n = 1 + r % (r & 0x300 ? 16 : 512);
				if (n > left)
					n = left;
			}
			tap_conn_feed(tc, dir, in->data[dir] + pos[dir], n, ts++);
		}
		pos[dir] += n;
		if (tap_conn_offset(tc, dir) != pos[dir])
			die("tap_conn_offset() is not the bytes fed and skipped", NULL, NULL, NULL);
	}
	if (in->opts & OPT_EOF_C2U_FIRST)
		tap_conn_eof(tc, TAP_C2U, ts++);
	tap_conn_eof(tc, TAP_U2C, ts++);
	tap_conn_eof(tc, TAP_C2U, ts++);
	tap_conn_end(tc, ts++);
	tap_conn_free(tc);

	if (d.err[0])
		die("a frame broke an invariant", &d, NULL, NULL);
	for (int dir = 0; dir < 2; dir++) {
		for (size_t i = 0; i < d.nruns[dir]; i++) {
			const struct conn_dump_run *r = &d.runs[dir][i];

			if (r->off > in->len[dir] || r->len > in->len[dir] - r->off ||
			    memcmp(r->data, in->data[dir] + r->off, r->len) != 0)
				die("tcp frames do not hold the stream's bytes at their offsets",
				    &d, NULL, NULL);
		}
	}
	text = conn_dump_text(&d);
	conn_dump_fini(&d);
	return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in;
	size_t c2u;
	char *whole, *sliced;

	if (size < 4)
		return 0;
	in.opts = data[0];
	in.seed = data[1];
	c2u = (size_t)data[2] | (size_t)data[3] << 8;
	data += 4;
	size -= 4;
	if (c2u > size)
		c2u = size;
	in.data[TAP_C2U] = data;
	in.len[TAP_C2U] = c2u;
	in.data[TAP_U2C] = data + c2u;
	in.len[TAP_U2C] = size - c2u;

	sliced = run(&in, &presets[in.opts & OPT_PRESET], true);
	if (!(in.opts & OPT_INTERLEAVE)) {
		whole = run(&in, &presets[in.opts & OPT_PRESET], false);
		if (strcmp(whole, sliced) != 0)
			die("slicing changed the frames", NULL, whole, sliced);
		free(whole);
	}
	free(sliced);
	return 0;
}
