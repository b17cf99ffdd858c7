/* SPDX-License-Identifier: Apache-2.0 */
/* Test helper: collects tap_conn's frames as a canonical text, checking their invariants. */
#ifndef CONN_DUMP_H
#define CONN_DUMP_H

#include <stddef.h>
#include <stdint.h>

#include "tap/conn.h"

/* Timings and flags of one http frame, as emitted (the text leaves timings out). */
struct conn_dump_pair {
	uint64_t pair;
	uint64_t req_start, req_end, resp_start, resp_end;
	uint64_t ts_ns;
	uint32_t flags;
	int has_resp;
};

/* One contiguous run of tcp bytes of a direction: frames merged, however they were cut. */
struct conn_dump_run {
	uint64_t off;
	size_t len, cap;
	unsigned char *data;
};

struct conn_dump {
	const struct tap_conn_cfg *cfg;
	char *text; /* http frames in order, one block each */
	size_t len, cap;
	struct conn_dump_run *runs[2]; /* per direction */
	size_t nruns[2];
	struct conn_dump_pair *pairs;
	size_t npairs;
	size_t ntcp;
	size_t ntls;
	char err[256]; /* the first broken invariant, "" when none */
};

/* Prepares <d> for the frames of one connection captured with <cfg> (borrowed). */
void conn_dump_init(struct conn_dump *d, const struct tap_conn_cfg *cfg);

/* Frees what <d> holds. */
void conn_dump_fini(struct conn_dump *d);

/*
 * A tap_emit_cb: <ctx> is a struct conn_dump. Appends <f> to the text (http,
 * tls) or to its direction's runs (tcp), and records in d->err the first broken
 * invariant: pair numbers from 1 without gaps, strings with bytes behind them,
 * bodies within the limit, tcp frames in order, not overlapping, within
 * tcp_chunk.
 */
void conn_dump_emit(void *ctx, struct tap_frame *f);

/*
 * Returns the canonical text of everything emitted: the http and tls frames in order,
 * then each direction's tcp runs. Timings and frame timestamps are left out,
 * so any slicing of the same streams gives the same text. The caller frees it.
 */
char *conn_dump_text(const struct conn_dump *d);

#endif
