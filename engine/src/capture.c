/* SPDX-License-Identifier: Apache-2.0 */
/* The engine's side of capture: per-connection tap state, frames encoded into the worker's ring. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine_int.h"
#include "tap/sniff.h"

uint64_t eng__realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Each ring a power of two no larger than its share of --ring-size. */
static uint64_t ring_share(const struct eng_config *cfg)
{
	uint64_t share = cfg->ring_size / cfg->workers, size = TAP_RING_SIZE_MIN;

	while (size * 2 <= share && size * 2 <= TAP_RING_SIZE_MAX)
		size *= 2;
	return size;
}

int eng__cap_engine_open(struct eng_engine *e)
{
	const struct eng_config *cfg = e->cfg;
	struct tap_ring *old;
	char err[256];
	uint64_t gen;
	int ret;

	tap_conn_cfg_default(&e->tap_cfg);
	e->tap_cfg.body_limit = cfg->capture_body_limit;
	e->tap_cfg.header_limit = cfg->capture_header_limit;
	e->tap_cfg.redact = cfg->capture_redact;
	/* Two sidetaps on one ring would take each other's frames: refuse the second. */
	if (tap_ring_open(cfg->ring_path, &old, err, sizeof(err)) == 0) {
		pid_t pid = (pid_t)tap_ring_producer_pid(old);
		bool running = tap_ring_state(old) == TAP_RING_RUNNING && pid > 0 &&
			       pid != getpid() && kill(pid, 0) == 0;

		tap_ring_close(old, false);
		if (running) {
			eng_log(ENG_LOG_ERROR, "ring in use by another sidetap",
				"flag=--ring path=%s pid=%d fix=\"give each sidetap its own --ring\"",
				cfg->ring_path, (int)pid);
			return -EBUSY;
		}
	}
	if (getrandom(&gen, sizeof(gen), 0) != sizeof(gen))
		gen = eng__realtime_ns() ^ ((uint64_t)getpid() << 32);
	ret = tap_ring_create(cfg->ring_path, e->nworkers, ring_share(cfg), gen, &e->ring);
	if (ret < 0) {
		eng_log(ENG_LOG_ERROR, "cannot create the capture ring",
			"flag=--ring path=%s err=\"%s\" fix=\"point --ring at a writable directory (a tmpfs such as /dev/shm) or use --capture off\"",
			cfg->ring_path, strerror(-ret));
		return ret;
	}
	e->generation = gen;
	eng_log(ENG_LOG_INFO, "capture ring", "path=%s rings=%u ring_size=%lu generation=%016lx",
		cfg->ring_path, e->nworkers, (unsigned long)ring_share(cfg), (unsigned long)gen);
	return 0;
}

void eng__cap_report_left(struct eng_engine *e)
{
	uint64_t frames = 0, bytes = 0;

	for (unsigned i = 0; i < tap_ring_count(e->ring); i++) {
		struct tap_ring_stats st;

		tap_ring_stats(e->ring, i, &st);
		if (st.frames > st.consumed_frames + st.rejected)
			frames += st.frames - st.consumed_frames - st.rejected;
		bytes += st.head - st.tail;
	}
	/* The next sidetap makes a new ring: these would be gone without a word. */
	if (frames)
		eng_log(ENG_LOG_WARN, "frames left in the ring at exit, not shipped",
			"frames=%lu bytes=%lu ring=%s fix=\"see the uploader's last lines: the sink "
			"and its spool did not take them in time\"",
			(unsigned long)frames, (unsigned long)bytes, e->cfg->ring_path);
}

void eng__cap_engine_close(struct eng_engine *e)
{
	if (e->ring)
		tap_ring_close(e->ring, true);
	e->ring = NULL;
}

static struct tap_str str_of(const char *s)
{
	return (struct tap_str){ s, (uint32_t)strlen(s) };
}

/* Fills the common fields of <f> for connection <c> and writes it to the worker's ring. */
static void emit(void *ctx, struct tap_frame *f)
{
	struct eng_conn *c = ctx;
	struct eng_worker *w = c->w;
	struct tap_ring *ring = w->eng->ring;
	const struct eng_cap *cap = c->cap;
	const char *a = cap->addrs;
	size_t max;
	ssize_t n;
	void *p;

	f->gen = w->eng->generation;
	f->worker = w->idx;
	f->seq = ++w->cap_seq;
	f->conn_id = (uint64_t)w->idx << 40 | c->id;
	f->listener = c->kind == ENG_INBOUND ? TAP_INBOUND : TAP_OUTBOUND;
	f->client = (struct tap_str){ a, cap->addr_len[0] };
	a += cap->addr_len[0];
	f->dst = (struct tap_str){ a, cap->addr_len[1] };
	a += cap->addr_len[1];
	f->upstream = (struct tap_str){ a, cap->addr_len[2] };
	if (f->type == TAP_FRAME_HTTP && c->tls && c->tls->state == ENG_TLS_OPEN) {
		/* Pairs of an unwrapped connection say how it was protected. */
		f->http.has_tls = true;
		f->http.tls.version = tlx_session_version_mask(c->tls->s[0]);
		f->http.tls.cipher = str_of(tlx_session_cipher(c->tls->s[0]));
		f->http.tls.sni = str_of(c->tls->hello.sni);
	}
	max = tap_frame_encoded_max(f);
	p = tap_ring_reserve(ring, w->idx, max);
	if (!p)
		return; /* counted by the ring: the proxy never waits for capture */
	n = tap_frame_encode(f, p, max);
	if (n < 0) {
		tap_ring_commit(ring, w->idx, 0);
		tap_ring_count_drop(ring, w->idx, max);
		eng__stat_add(&w->stats.cap_encode_errors, 1);
		return;
	}
	tap_ring_commit(ring, w->idx, (size_t)n);
}

void eng__cap_open(struct eng_conn *c, const struct eng_addr *orig)
{
	struct eng_worker *w = c->w;
	char text[3][ENG_ADDR_STRLEN];
	struct eng_addr client;
	struct eng_cap *cap;
	struct tap_frame f;
	size_t len[3];

	/* Multishot accept gives no peer address: one getpeername per captured connection. */
	client.len = sizeof(client.u);
	if (getpeername(c->fd[ENG_C2U], &client.u.sa, &client.len) == -1)
		memset(&client, 0, sizeof(client));
	eng_addr_format(&client, text[0], sizeof(text[0]));
	eng_addr_format(orig, text[1], sizeof(text[1]));
	eng_addr_format(&c->dst, text[2], sizeof(text[2]));
	for (unsigned i = 0; i < 3; i++)
		len[i] = strlen(text[i]);
	cap = calloc(1, sizeof(*cap) + len[0] + len[1] + len[2]);
	if (!cap)
		goto err_count;
	for (unsigned i = 0, off = 0; i < 3; off += (unsigned)len[i], i++) {
		memcpy(cap->addrs + off, text[i], len[i]);
		cap->addr_len[i] = (uint8_t)len[i];
	}
	cap->tap = tap_conn_new(&w->eng->tap_cfg, emit, c);
	if (!cap->tap) {
		free(cap);
		goto err_count;
	}
	cap->open_ts_ns = w->now_ns;
	c->cap = cap;

	memset(&f, 0, sizeof(f));
	f.type = TAP_FRAME_CONN;
	f.ts_ns = w->now_ns;
	f.conn.event = TAP_CONN_OPEN;
	emit(c, &f);
	return;

err_count:
	/* Out of memory: this connection is forwarded, not captured. */
	eng__stat_add(&w->stats.cap_oom, 1);
}

void eng__cap_feed(struct eng_conn *c, unsigned d, const void *buf, size_t len)
{
	struct eng_cap *cap = c->cap;

	/* Bytes received while a move to splice is pending were captured after all. */
	cap->budget[d] = cap->budget[d] > len ? cap->budget[d] - len : 0;
	tap_conn_feed(cap->tap, (enum tap_dir)d, buf, len, c->w->now_ns);
}

void eng__cap_eof(struct eng_conn *c, unsigned d)
{
	tap_conn_eof(c->cap->tap, (enum tap_dir)d, c->w->now_ns);
}

void eng__cap_skip_flush(struct eng_conn *c, unsigned d)
{
	struct eng_cap *cap = c->cap;

	if (cap->skipped[d]) {
		tap_conn_skip(cap->tap, (enum tap_dir)d, cap->skipped[d], c->w->now_ns);
		cap->skipped[d] = 0;
	}
	cap->budget[d] = 0;
}

bool eng__cap_may_splice(struct eng_conn *c, unsigned d, uint64_t min)
{
	struct eng_cap *cap = c->cap;
	uint64_t skip = 0;

	if (tap_conn_wants(cap->tap, (enum tap_dir)d, &skip) || skip < min)
		return false;
	cap->budget[d] = skip;
	cap->skipped[d] = 0;
	return true;
}

void eng__cap_tls(struct eng_conn *c, int event, const char *why)
{
	const struct eng_tls *t = c->tls;
	const struct tap_tls_hello *h = &t->hello;
	struct tap_frame f;

	memset(&f, 0, sizeof(f));
	f.type = TAP_FRAME_TLS;
	f.ts_ns = c->w->now_ns;
	f.tls.event = (enum tap_tls_event)event;
	f.tls.side = t->state == ENG_TLS_UPSTREAM ? TAP_TLS_SIDE_UPSTREAM : TAP_TLS_SIDE_CLIENT;
	f.tls.sni = str_of(h->sni);
	for (unsigned i = 0; i < h->nalpn && i < TAP_TLS_ALPN_MAX; i++)
		f.tls.alpn_offered[i] = str_of(h->alpn[i]);
	f.tls.nalpn_offered = h->nalpn;
	f.tls.versions_offered = h->versions;
	if (why)
		f.tls.reason = str_of(why);
	if (event == TAP_TLS_UNWRAPPED) {
		f.tls.version = tlx_session_version_mask(t->s[0]);
		f.tls.cipher = str_of(tlx_session_cipher(t->s[0]));
		f.tls.alpn = str_of(tlx_session_alpn(t->s[0]));
		f.tls.upstream_verify = str_of(t->verify);
	}
	emit(c, &f);
}

void eng__cap_tls_reason(struct eng_conn *c, const char *why)
{
	tap_conn_tls_reason(c->cap->tap, why);
}

void eng__cap_close(struct eng_conn *c, enum tap_close_reason why)
{
	struct eng_cap *cap = c->cap;
	struct tap_frame f;

	for (unsigned d = 0; d < 2; d++)
		if (cap->skipped[d])
			eng__cap_skip_flush(c, d);
	tap_conn_end(cap->tap, c->w->now_ns);
	memset(&f, 0, sizeof(f));
	f.type = TAP_FRAME_CONN;
	f.ts_ns = c->w->now_ns;
	f.conn.event = TAP_CONN_CLOSE;
	f.conn.proto = (uint8_t)tap_conn_proto(cap->tap);
	f.conn.reason = why;
	f.conn.bytes_c2u = c->dir[ENG_C2U].bytes;
	f.conn.bytes_u2c = c->dir[ENG_U2C].bytes;
	f.conn.open_ts_ns = cap->open_ts_ns;
	emit(c, &f);
	tap_conn_free(cap->tap);
	free(cap);
	c->cap = NULL;
}
