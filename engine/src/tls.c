/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TLS unwrapping of a connection: the client's first bytes are held until
 * they say what they are; a ClientHello on a listener that unwraps starts our
 * own handshake with the upstream (verified), then the client's with a leaf
 * for the same name; from then on each side's ciphertext is fed to its
 * session and the plaintext is captured and re-encrypted for the other side.
 * tls/ does no I/O: the bytes go through the copy path's receives and the
 * sends below.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine_int.h"
#include "tap/sniff.h"
#include "tlx/ktls.h"

/* The client's first bytes held while they are sniffed: a ClientHello and a little more. */
#define ENG_TLS_HELD_MAX (32u << 10)
/* Ciphertext queued for one side before reading from the other side pauses. */
#define ENG_TLS_OUT_HIWAT (256u << 10)
#define ENG_TLS_PLAIN_CHUNK 16384

bool eng__tls_wanted(const struct eng_conn *c)
{
	const struct eng_engine *e = c->w->eng;

	return c->kind == ENG_INBOUND ? e->tls_in_srv != NULL : e->tls_mint != NULL;
}

static struct eng_tls *tls_new(void)
{
	return calloc(1, sizeof(struct eng_tls));
}

void eng__tls_free(struct eng_conn *c)
{
	struct eng_tls *t = c->tls;

	if (!t)
		return;
	eng_list_del(&t->hs);
	for (unsigned i = 0; i < 2; i++) {
		tlx_session_free(t->s[i]);
		free(t->out[i].buf[0]);
		free(t->out[i].buf[1]);
	}
	free(t->held);
	free(t);
	c->tls = NULL;
}

static void count(struct eng_conn *c, enum eng_ctr ctr)
{
	eng__stat_add(&c->w->stats.ctr[c->kind][ctr], 1);
}

/* Grows the buffer that takes new bytes for a socket to hold <more> beyond what it has. */
static int out_reserve(struct eng_tls_buf *o, size_t more)
{
	unsigned p = !o->cur;
	size_t need = (size_t)o->len[p] + more, cap = o->cap[p] ? o->cap[p] : 16384;
	uint8_t *b;

	if (need <= o->cap[p])
		return 0;
	while (cap < need)
		cap *= 2;
	if (cap > UINT32_MAX)
		return -ENOMEM;
	b = realloc(o->buf[p], cap);
	if (!b)
		return -ENOMEM;
	o->buf[p] = b;
	o->cap[p] = (uint32_t)cap;
	return 0;
}

/* Sends what socket <i> has queued, one send at a time. */
static void send_out(struct eng_conn *c, unsigned i)
{
	struct eng_tls_buf *o = &c->tls->out[i];
	struct io_uring_sqe *sqe;

	if (o->busy)
		return;
	if (o->off == o->len[o->cur]) {
		/* What was being sent is out: the buffer that took new bytes goes next. */
		o->len[o->cur] = 0;
		o->off = 0;
		if (o->len[!o->cur] == 0)
			return;
		o->cur = !o->cur;
	}
	sqe = eng__sqe(c->w);
	io_uring_prep_send(sqe, c->fd[i], o->buf[o->cur] + o->off, o->len[o->cur] - o->off,
			   MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, eng__ud(ENG_OP_TLS_SEND, c, i));
	o->busy = true;
	c->inflight++;
}

/* Queues <len> raw bytes for socket <i> (plaintext upstream, held bytes). */
static int out_append(struct eng_conn *c, unsigned i, const void *p, size_t len)
{
	struct eng_tls_buf *o = &c->tls->out[i];
	unsigned n = !o->cur;

	if (out_reserve(o, len) < 0)
		return -ENOMEM;
	memcpy(o->buf[n] + o->len[n], p, len);
	o->len[n] += (uint32_t)len;
	send_out(c, i);
	return 0;
}

/* Moves the ciphertext session <i> produced into out[i] and sends it. */
static int flush(struct eng_conn *c, unsigned i)
{
	struct eng_tls *t = c->tls;
	struct eng_tls_buf *o = &t->out[i];
	unsigned n = !o->cur;
	size_t pending;

	if (!t->s[i])
		return 0;
	if (o->ktls) {
		/*
		 * The kernel owns the sending sequence: records OpenSSL makes now
		 * (an alert, a key update's answer) cannot go out. They are dropped.
		 */
		uint8_t sink[512];

		while (tlx_session_pending(t->s[i]) > 0)
			tlx_session_take(t->s[i], sink, sizeof(sink));
		return 0;
	}
	while ((pending = tlx_session_pending(t->s[i])) > 0) {
		if (out_reserve(o, pending) < 0)
			return -ENOMEM;
		o->len[n] += (uint32_t)tlx_session_take(t->s[i], o->buf[n] + o->len[n],
							o->cap[n] - o->len[n]);
	}
	send_out(c, i);
	return 0;
}

/* Bytes queued for socket <i> and not sent yet. */
static size_t out_queued(const struct eng_conn *c, unsigned i)
{
	const struct eng_tls_buf *o = &c->tls->out[i];

	return (size_t)(o->len[o->cur] - o->off) + o->len[!o->cur];
}

bool eng__tls_blocked(const struct eng_conn *c, unsigned d)
{
	/* Reading from socket d produces bytes for the other one. */
	return c->tls && out_queued(c, !d) > ENG_TLS_OUT_HIWAT / 2;
}

static void fail(struct eng_conn *c, enum eng_ctr ctr, const char *what, const char *why)
{
	struct eng_worker *w = c->w;
	uint32_t suppressed;

	count(c, ctr);
	if (eng_ratelimit_ok(&w->rl_conn, w->now_ms, 1000, &suppressed))
		eng_log(ENG_LOG_WARN, what,
			"worker=%u listener=%s conn=%lu name=%s why=\"%s\" suppressed=%u", w->idx,
			eng_listener_kind_name(c->kind), (unsigned long)c->id,
			c->tls && c->tls->name[0] ? c->tls->name : "-", why ? why : "unknown",
			suppressed);
	if (c->cap && c->tls)
		eng__cap_tls(c, TAP_TLS_FAILED, why);
	/* The client learns the connection broke; never a valid-looking certificate. */
	eng__conn_close(c, TAP_CLOSE_ERROR);
}

/* Everything for socket <i> is sent: its close_notify (kTLS: from the kernel), then the FIN. */
static void shut_now(struct eng_conn *c, unsigned i)
{
	struct eng_tls_buf *o = &c->tls->out[i];

	if (o->ktls)
		tlx_ktls_close_notify(c->fd[i]); /* -EAGAIN: the FIN says it all the same */
	shutdown(c->fd[i], SHUT_WR);
	o->done = true;
}

/* The other side's half of a close: close_notify (TLS) or SHUT_WR (plain), once sent. */
static void shut_side(struct eng_conn *c, unsigned i)
{
	struct eng_tls *t = c->tls;

	if (t->out[i].shut)
		return;
	t->out[i].shut = true;
	if (t->s[i] && !t->out[i].ktls) {
		tlx_session_close(t->s[i]);
		flush(c, i);
	}
	if (!t->out[i].busy && out_queued(c, i) == 0)
		shut_now(c, i);
}

static void maybe_finished(struct eng_conn *c)
{
	struct eng_tls *t = c->tls;

	if (t->out[0].done && t->out[1].done && t->eof[0] && t->eof[1])
		eng__conn_close(c, TAP_CLOSE_EOF);
}

/* Plaintext from socket <i>'s side: captured, then sent to the other side. */
static int deliver(struct eng_conn *c, unsigned i, const void *p, size_t len)
{
	struct eng_tls *t = c->tls;
	const char *why = NULL;
	unsigned j = !i;

	c->dir[i].bytes += len;
	eng__stat_add(&c->w->stats.ctr[c->kind][ENG_CTR_BYTES_C2U + i], len);
	if (c->cap)
		eng__cap_feed(c, i, p, len);
	if (!t->s[j] || t->out[j].ktls)
		return out_append(c, j, p, len);
	/* Our own records go first: the kernel's sequence would no longer start at 0. */
	if (t->out[j].ktls_wait) {
		t->out[j].ktls_wait = false;
		count(c, ENG_CTR_KTLS_FALLBACKS);
	}
	if (tlx_session_write(t->s[j], p, len, &why) < 0) {
		fail(c, ENG_CTR_TLS_FAILED, "tls write failed", why);
		return -EIO;
	}
	return flush(c, j);
}

/* Reads every plaintext byte session <i> has (or, plain upstream, nothing: raw bytes go direct). */
static void pump(struct eng_conn *c, unsigned i)
{
	struct eng_tls *t = c->tls;
	char plain[ENG_TLS_PLAIN_CHUNK];
	const char *why = NULL;

	for (;;) {
		ssize_t n = tlx_session_read(t->s[i], plain, sizeof(plain), &why);

		if (n > 0) {
			if (deliver(c, i, plain, (size_t)n) < 0)
				return;
			continue;
		}
		if (n == 0)
			break;
		if (n == -EPIPE) {
			/* close_notify: this side is done sending; pass it on. */
			t->eof[i] = true;
			shut_side(c, !i);
			break;
		}
		fail(c, ENG_CTR_TLS_FAILED, "tls read failed", why);
		return;
	}
	/* Reading may have produced records of our own (alerts, key updates). */
	if (flush(c, i) < 0)
		eng__conn_close(c, TAP_CLOSE_ERROR);
	else
		maybe_finished(c);
}

/*
 * Hands the sending half of socket <i>'s session to the kernel (--ktls auto):
 * only with nothing of the handshake still queued, else once it is sent.
 */
static void ktls_try(struct eng_conn *c, unsigned i)
{
	struct eng_tls *t = c->tls;
	struct eng_tls_buf *o = &t->out[i];
	struct eng_worker *w = c->w;
	const char *why = NULL;
	uint32_t suppressed;

	if (o->busy || out_queued(c, i) > 0) {
		o->ktls_wait = true;
		return;
	}
	o->ktls_wait = false;
	if (tlx_ktls_tx(t->s[i], c->fd[i], &why) == 0) {
		o->ktls = true;
		count(c, ENG_CTR_KTLS_TX);
		return;
	}
	count(c, ENG_CTR_KTLS_FALLBACKS);
	if (eng_ratelimit_ok(&w->rl_conn, w->now_ms, 1000, &suppressed))
		eng_log(ENG_LOG_DEBUG, "ktls not used, this side stays in userspace",
			"worker=%u listener=%s conn=%lu side=%s why=\"%s\" suppressed=%u", w->idx,
			eng_listener_kind_name(c->kind), (unsigned long)c->id,
			i == 0 ? "client" : "upstream", why ? why : "unknown", suppressed);
}

static void open_both(struct eng_conn *c)
{
	struct eng_tls *t = c->tls;

	t->state = ENG_TLS_OPEN;
	if (c->w->cfg->ktls && c->w->eng->ktls == 1) {
		for (unsigned i = 0; i < 2; i++)
			if (t->s[i])
				ktls_try(c, i);
	}
	eng_list_del(&t->hs);
	count(c, ENG_CTR_TLS_UNWRAPPED);
	if (c->cap)
		eng__cap_tls(c, TAP_TLS_UNWRAPPED, NULL);
	pump(c, 0);
	if (c->state == ENG_CONN_FORWARDING && t->s[1])
		pump(c, 1);
}

/* The client's handshake with our certificate: held bytes first, then what the client sends. */
static void client_handshake(struct eng_conn *c)
{
	struct eng_tls *t = c->tls;
	const char *why = NULL;
	int ret = tlx_session_handshake(t->s[0], &why);

	if (flush(c, 0) < 0) {
		eng__conn_close(c, TAP_CLOSE_ERROR);
		return;
	}
	if (ret < 0) {
		fail(c, ENG_CTR_TLS_FAILED, "client tls handshake failed", why);
		return;
	}
	if (ret == 1)
		open_both(c);
}

static void start_client_side(struct eng_conn *c)
{
	struct eng_engine *e = c->w->eng;
	struct eng_tls *t = c->tls;
	const char *why = NULL;

	t->state = ENG_TLS_CLIENT;
	t->s[0] = tlx_session_server(c->kind == ENG_INBOUND ? e->tls_in_srv : e->tls_mint, t->name,
				     &why);

	if (!t->s[0]) {
		fail(c, ENG_CTR_TLS_FAILED, "cannot start the client's tls session", why);
		return;
	}
	if (tlx_session_feed(t->s[0], t->held, t->held_len) < 0) {
		eng__conn_close(c, TAP_CLOSE_ERROR);
		return;
	}
	free(t->held);
	t->held = NULL;
	t->held_len = t->held_cap = 0;
	/* The client's next flight comes through the copy path's receive. */
	eng__recv_start(c, ENG_C2U);
	client_handshake(c);
}

static void upstream_handshake(struct eng_conn *c)
{
	struct eng_tls *t = c->tls;
	const char *why = NULL;
	int ret = tlx_session_handshake(t->s[1], &why);

	if (flush(c, 1) < 0) {
		eng__conn_close(c, TAP_CLOSE_ERROR);
		return;
	}
	if (ret < 0) {
		snprintf(t->verify, sizeof(t->verify), "%s", why ? why : "handshake failed");
		fail(c, ret == -EPERM ? ENG_CTR_TLS_VERIFY_FAILED : ENG_CTR_TLS_FAILED,
		     ret == -EPERM ? "upstream certificate refused" :
				     "upstream tls handshake failed",
		     why);
		return;
	}
	if (ret == 1) {
		snprintf(t->verify, sizeof(t->verify), "%s",
			 c->kind == ENG_INBOUND ? "not verified (the app in this pod)" : "ok");
		if (tlx_session_resumed(t->s[1]))
			count(c, ENG_CTR_TLS_RESUMED);
		start_client_side(c);
	}
}

/* The client's first bytes were not a ClientHello we unwrap: they go on as they came. */
static void go_plain(struct eng_conn *c)
{
	struct eng_tls *t = c->tls;

	t->state = ENG_TLS_PLAIN;
	eng_list_del(&t->hs);
	if (c->cap && t->held_len)
		eng__cap_feed(c, ENG_C2U, t->held, t->held_len);
	c->dir[ENG_C2U].bytes += t->held_len;
	eng__stat_add(&c->w->stats.ctr[c->kind][ENG_CTR_BYTES_C2U], t->held_len);
	/* Held bytes first, then the copy path takes over once they are sent (on_send below). */
	if (t->held_len && out_append(c, 1, t->held, t->held_len) < 0) {
		eng__conn_close(c, TAP_CLOSE_ERROR);
		return;
	}
	free(t->held);
	t->held = NULL;
	t->held_len = t->held_cap = 0;
	if (!t->out[1].busy) {
		eng__tls_free(c);
		eng__recv_start(c, ENG_C2U);
	}
}

/* What the held bytes say: not yet, plain, passthrough, or a ClientHello to unwrap. */
static void sniffed(struct eng_conn *c)
{
	struct eng_engine *e = c->w->eng;
	struct eng_tls *t = c->tls;
	const char *why = NULL;
	char ip[ENG_ADDR_STRLEN], *colon;
	int ret;

	if (t->held[0] != 0x16) {
		go_plain(c);
		return;
	}
	ret = tap_tls_hello_parse(t->held, t->held_len, &t->hello, &why);
	if (ret == 0) {
		if (t->held_len < ENG_TLS_HELD_MAX) {
			eng__tls_sniff_arm(c);
			return;
		}
		ret = -EBADMSG;
	}
	if (ret < 0) {
		/* Not a ClientHello we understand: forwarded untouched, never broken. */
		go_plain(c);
		return;
	}
	/* An app that offers ALPN but not http/1.1 (h2 only) is not ours to parse yet. */
	if (!tap_tls_hello_offers(&t->hello, "http/1.1", true)) {
		count(c, ENG_CTR_TLS_PASSTHROUGH);
		if (c->cap)
			eng__cap_tls_reason(c, "the client does not offer http/1.1 (h2 only): "
					       "HTTP/2 is not captured, so it passes through");
		go_plain(c);
		return;
	}
	if (t->hello.sni[0]) {
		snprintf(t->name, sizeof(t->name), "%s", t->hello.sni);
	} else {
		/* No SNI: the leaf and the upstream check are for the destination's IP. */
		eng_addr_format(&c->dst, ip, sizeof(ip));
		colon = strrchr(ip, ':');
		if (colon)
			*colon = '\0';
		snprintf(t->name, sizeof(t->name), "%s", ip[0] == '[' ? ip + 1 : ip);
		if (t->name[0] && t->name[strlen(t->name) - 1] == ']')
			t->name[strlen(t->name) - 1] = '\0';
	}
	if (c->kind == ENG_INBOUND && !e->tls_in_cli) {
		/* The app listens in plaintext: only the client's side speaks TLS. */
		snprintf(t->verify, sizeof(t->verify), "plaintext upstream");
		start_client_side(c);
		return;
	}
	t->state = ENG_TLS_UPSTREAM;
	t->s[1] = tlx_session_client(c->kind == ENG_INBOUND ? e->tls_in_cli : e->tls_cli, t->name,
				     tap_tls_hello_offers(&t->hello, "http/1.1", false), &why);
	if (!t->s[1]) {
		fail(c, ENG_CTR_TLS_FAILED, "cannot start the upstream tls session", why);
		return;
	}
	upstream_handshake(c);
}

void eng__tls_sniff_arm(struct eng_conn *c)
{
	struct eng_tls *t = c->tls;
	struct io_uring_sqe *sqe;

	if (t->held_cap - t->held_len < 4096) {
		uint32_t cap = t->held_cap ? t->held_cap * 2 : 4096;
		uint8_t *b = realloc(t->held, cap);

		if (!b) {
			eng__conn_close(c, TAP_CLOSE_ERROR);
			return;
		}
		t->held = b;
		t->held_cap = cap;
	}
	sqe = eng__sqe(c->w);
	io_uring_prep_recv(sqe, c->fd[ENG_C2U], t->held + t->held_len, t->held_cap - t->held_len,
			   0);
	io_uring_sqe_set_data64(sqe, eng__ud(ENG_OP_TLS_SNIFF, c, 0));
	c->inflight++;
}

int eng__tls_start(struct eng_conn *c)
{
	c->tls = tls_new();
	if (!c->tls)
		return -ENOMEM;
	c->tls->conn = c;
	eng_list_init(&c->tls->hs);
	c->tls->state = ENG_TLS_SNIFF;
	c->tls->deadline_ms = c->w->now_ms + c->w->cfg->tls_handshake_timeout_ms;
	eng_list_add_tail(&c->w->tls_hs, &c->tls->hs);
	eng__tls_sniff_arm(c);
	return 0;
}

void eng__tls_on_sniff(struct eng_conn *c, int res)
{
	struct eng_tls *t = c->tls;

	c->inflight--;
	if (c->state == ENG_CONN_CLOSING)
		return;
	if (res == 0) {
		/* EOF before the client said anything useful: what there is goes on, then the EOF. */
		go_plain(c);
		return;
	}
	if (res < 0) {
		eng__conn_close(c, TAP_CLOSE_RESET);
		return;
	}
	t->held_len += (uint32_t)res;
	sniffed(c);
}

void eng__tls_server_spoke(struct eng_conn *c)
{
	/* Server-first bytes while the client's are held: this is no TLS connection. */
	go_plain(c);
}

void eng__tls_on_recv(struct eng_conn *c, unsigned i, const void *p, size_t len)
{
	struct eng_tls *t = c->tls;

	if (!t->s[i]) {
		/* Plaintext upstream (inbound, --tls-in-upstream plain). */
		if (t->state == ENG_TLS_OPEN)
			deliver(c, i, p, len);
		else
			fail(c, ENG_CTR_TLS_FAILED,
			     "the app spoke before the client's handshake ended",
			     "unexpected plaintext from the upstream");
		return;
	}
	if (tlx_session_feed(t->s[i], p, len) < 0) {
		eng__conn_close(c, TAP_CLOSE_ERROR);
		return;
	}
	switch (t->state) {
	case ENG_TLS_UPSTREAM:
		if (i == 1)
			upstream_handshake(c);
		break;
	case ENG_TLS_CLIENT:
		if (i == 0)
			client_handshake(c);
		break;
	case ENG_TLS_OPEN:
		pump(c, i);
		break;
	default:
		break;
	}
}

void eng__tls_on_eof(struct eng_conn *c, unsigned i)
{
	struct eng_tls *t = c->tls;

	if (t->state != ENG_TLS_OPEN) {
		/* A side that leaves mid-handshake ends the connection. */
		fail(c, ENG_CTR_TLS_FAILED, "connection closed during the tls handshake",
		     i == 0 ? "the client closed" : "the upstream closed");
		return;
	}
	/* TCP EOF without close_notify: pass the end on all the same. */
	t->eof[i] = true;
	if (c->cap)
		eng__cap_eof(c, i);
	shut_side(c, !i);
	maybe_finished(c);
}

void eng__tls_on_send(struct eng_conn *c, unsigned i, int res)
{
	struct eng_tls *t = c->tls;
	struct eng_tls_buf *o = &t->out[i];

	c->inflight--;
	o->busy = false;
	if (c->state == ENG_CONN_CLOSING)
		return;
	if (res < 0) {
		eng__stat_add(&c->w->stats.ctr[c->kind][ENG_CTR_RESETS], 1);
		eng__conn_close(c, TAP_CLOSE_RESET);
		return;
	}
	eng__touch(c);
	o->off += (uint32_t)res;
	if (o->off == o->len[o->cur]) {
		o->off = o->len[o->cur] = 0;
		/* A big burst is over: do not keep its buffer for an idle connection. */
		if (o->cap[o->cur] > 65536) {
			free(o->buf[o->cur]);
			o->buf[o->cur] = NULL;
			o->cap[o->cur] = 0;
		}
	}
	if (t->state == ENG_TLS_PLAIN) {
		/* The held bytes are out: the copy path carries the rest of the client's bytes. */
		if (out_queued(c, 1) == 0) {
			eng__tls_free(c);
			eng__recv_start(c, ENG_C2U);
		} else {
			send_out(c, i);
		}
		return;
	}
	if (o->ktls_wait && !o->busy && out_queued(c, i) == 0)
		ktls_try(c, i);
	send_out(c, i);
	if (o->shut && !o->done && !o->busy && out_queued(c, i) == 0) {
		shut_now(c, i);
		maybe_finished(c);
		return;
	}
	/* Room again: the side that feeds this one may read on. */
	if (out_queued(c, i) <= ENG_TLS_OUT_HIWAT / 2)
		eng__recv_resume(c, !i);
}

void eng__tls_expire(struct eng_worker *w)
{
	while (!eng_list_empty(&w->tls_hs)) {
		struct eng_tls *t = eng_list_entry(w->tls_hs.next, struct eng_tls, hs);

		if (w->now_ms < t->deadline_ms)
			break;
		eng_list_del(&t->hs);
		fail(t->conn, ENG_CTR_TLS_TIMEOUTS, "tls handshake timed out",
		     t->state == ENG_TLS_SNIFF	  ? "no ClientHello from the client" :
		     t->state == ENG_TLS_UPSTREAM ? "the upstream did not finish its handshake" :
						    "the client did not finish its handshake");
	}
}

int eng__tls_engine_open(struct eng_engine *e)
{
	const struct eng_config *cfg = e->cfg;
	char err[512];
	int ret = 0;

	if (cfg->tls_out == ENG_TLS_OUT_UNWRAP) {
		ret = tlx_ca_load(cfg->tls_ca_cert, cfg->tls_ca_key, &e->tls_ca, err, sizeof(err));
		if (ret == 0)
			ret = tlx_server_new_minting(e->tls_ca, cfg->tls_leaf_hours, 1024,
						     &e->tls_mint, err, sizeof(err));
		if (ret == 0)
			ret = tlx_client_new(cfg->tls_upstream_ca[0] ? cfg->tls_upstream_ca : NULL,
					     &e->tls_cli, err, sizeof(err));
		if (ret < 0) {
			eng_log(ENG_LOG_ERROR, "cannot set up outbound tls unwrapping",
				"flags=\"--tls-ca-cert --tls-ca-key --tls-upstream-ca\" err=\"%s\"",
				err);
			return ret;
		}
	}
	if (cfg->tls_in_cert[0]) {
		ret = tlx_server_new_fixed(cfg->tls_in_cert, cfg->tls_in_key, &e->tls_in_srv, err,
					   sizeof(err));
		if (ret == 0 && cfg->tls_in_upstream == ENG_TLS_IN_UPSTREAM_TLS)
			ret = tlx_client_new_noverify(&e->tls_in_cli, err, sizeof(err));
		if (ret < 0) {
			eng_log(ENG_LOG_ERROR, "cannot set up inbound tls unwrapping",
				"flags=\"--tls-in-cert --tls-in-key\" err=\"%s\"", err);
			return ret;
		}
	}
	if (cfg->ktls && e->ktls == 1) {
		/* kTLS needs the traffic secrets that OpenSSL keeps to itself otherwise. */
		if (e->tls_mint)
			tlx_ktls_keep_secrets_server(e->tls_mint);
		if (e->tls_in_srv)
			tlx_ktls_keep_secrets_server(e->tls_in_srv);
		if (e->tls_cli)
			tlx_ktls_keep_secrets_client(e->tls_cli);
		if (e->tls_in_cli)
			tlx_ktls_keep_secrets_client(e->tls_in_cli);
	}
	if (e->tls_mint || e->tls_in_srv)
		eng_log(ENG_LOG_INFO, "tls unwrapping",
			"outbound=%s inbound=%s inbound_upstream=%s",
			e->tls_mint ? "unwrap" : "passthrough",
			e->tls_in_srv ? "unwrap" : "passthrough",
			!e->tls_in_srv ? "-" :
			e->tls_in_cli  ? "tls" :
					 "plain");
	return 0;
}

void eng__tls_engine_close(struct eng_engine *e)
{
	tlx_client_free(e->tls_in_cli);
	tlx_server_free(e->tls_in_srv);
	tlx_client_free(e->tls_cli);
	tlx_server_free(e->tls_mint);
	tlx_ca_free(e->tls_ca);
	e->tls_in_cli = e->tls_cli = NULL;
	e->tls_in_srv = e->tls_mint = NULL;
	e->tls_ca = NULL;
}
