/* SPDX-License-Identifier: Apache-2.0 */
/* Proxied connections: upstream connect, the copy and splice forwarding paths, half-close, close. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine_int.h"

/* From linux/netfilter_ipv4.h and ip6_tables.h, which clash with netinet/in.h. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

/* Freed connections kept for reuse; beyond this they go back to malloc. */
#define ENG_CONN_CACHE 1024

static void recv_resume(struct eng_conn *c, unsigned d);
static void splice_pump(struct eng_conn *c, unsigned d);

static struct eng_conn *conn_alloc(struct eng_worker *w)
{
	struct eng_conn *c;

	if (!eng_list_empty(&w->conn_free)) {
		c = eng_list_entry(w->conn_free.next, struct eng_conn, link);
		eng_list_del(&c->link);
		w->nfree--;
	} else {
		c = malloc(sizeof(*c));
		if (!c)
			return NULL;
	}
	memset(c, 0, sizeof(*c));
	eng_list_init(&c->link);
	eng_list_init(&c->nobuf);
	c->w = w;
	c->fd[0] = c->fd[1] = -1;
	c->id = ++w->next_conn_id;
	c->active_ms = w->now_ms;
	return c;
}

static void conn_release(struct eng_worker *w, struct eng_conn *c)
{
	if (w->nfree < ENG_CONN_CACHE) {
		eng_list_add_tail(&w->conn_free, &c->link);
		w->nfree++;
		return;
	}
	free(c);
}

void eng__touch(struct eng_conn *c)
{
	struct eng_worker *w = c->w;

	if (c->active_ms != w->now_ms) {
		c->active_ms = w->now_ms;
		eng_list_move_tail(&w->conns, &c->link);
	}
}

static void set_linger0(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/* pipes */

static struct eng_pipe *pipe_get(struct eng_worker *w)
{
	struct eng_pipe *p = w->pipe_free;

	if (p) {
		w->pipe_free = p->next;
		return p;
	}
	if (w->npipes >= ENG_PIPES_MAX)
		return NULL;
	p = malloc(sizeof(*p));
	if (!p)
		return NULL;
	if (pipe2(p->fd, O_NONBLOCK | O_CLOEXEC) == -1) {
		free(p);
		return NULL;
	}
	w->npipes++;
	eng__stat_add(&w->stats.pipes, 1);
	return p;
}

/* A pipe that still holds bytes cannot be reused: those bytes belong to a dead flow. */
static void pipe_put(struct eng_worker *w, struct eng_pipe *p, bool empty)
{
	if (empty) {
		p->next = w->pipe_free;
		w->pipe_free = p;
		return;
	}
	close(p->fd[0]);
	close(p->fd[1]);
	free(p);
	w->npipes--;
	atomic_store_explicit(&w->stats.pipes, w->npipes, memory_order_relaxed);
}

void eng__pipes_free(struct eng_worker *w)
{
	while (w->pipe_free) {
		struct eng_pipe *p = w->pipe_free;

		w->pipe_free = p->next;
		pipe_put(w, p, false);
	}
}

/* close */

static void maybe_free(struct eng_conn *c)
{
	struct eng_worker *w = c->w;

	if (c->state != ENG_CONN_CLOSING || c->inflight)
		return;
	for (unsigned d = 0; d < 2; d++) {
		struct eng_dir *dr = &c->dir[d];

		for (uint16_t bid = dr->qhead; dr->nq; dr->nq--) {
			uint16_t next = w->buf_next[bid];

			eng__buf_put(w, bid);
			bid = next;
		}
		if (dr->pipe)
			pipe_put(w, dr->pipe, dr->pipe_bytes == 0);
		/* A plain close: nothing is in flight on it any more. */
		if (c->fd[d] >= 0)
			close(c->fd[d]);
	}
	if (c->own_tag) {
		uint32_t tag = c->own_tag;

		/* Only ours: the port may have gone to another socket since. */
		atomic_compare_exchange_strong_explicit(&w->eng->own_ports[c->own_port], &tag, 0,
							memory_order_relaxed, memory_order_relaxed);
		c->own_tag = 0;
	}
	eng__tls_free(c);
	w->nconns--;
	conn_release(w, c);
}

void eng__conn_close(struct eng_conn *c, enum tap_close_reason why)
{
	struct eng_worker *w = c->w;
	bool reset = why != TAP_CLOSE_EOF && why != TAP_CLOSE_IDLE_TIMEOUT;

	if (c->state == ENG_CONN_CLOSING)
		return;
	c->state = ENG_CONN_CLOSING;
	if (c->cap)
		eng__cap_close(c, why);
	eng_list_del(&c->link);
	eng_list_del(&c->nobuf);
	eng__stat_add(&w->stats.ctr[c->kind][ENG_CTR_CLOSED], 1);
	if (reset) {
		/* SO_LINGER 0: the close sends RST, so the peer learns the flow broke. */
		set_linger0(c->fd[0]);
		set_linger0(c->fd[1]);
	}
	if (c->inflight) {
		for (unsigned i = 0; i < 2; i++) {
			struct io_uring_sqe *sqe;

			if (c->fd[i] < 0)
				continue;
			sqe = eng__sqe(w);
			io_uring_prep_cancel_fd(sqe, c->fd[i], IORING_ASYNC_CANCEL_ALL);
			io_uring_sqe_set_data64(sqe, eng__ud(ENG_OP_CANCEL, c, 0));
			c->inflight++;
		}
	}
	maybe_free(c);
}

static void dir_error(struct eng_conn *c, unsigned d, int err)
{
	struct eng_worker *w = c->w;

	eng__stat_add(&w->stats.ctr[c->kind][ENG_CTR_RESETS], 1);
	ENG_LOG(ENG_LOG_DEBUG, "connection reset", "worker=%u conn=%lu side=%s err=\"%s\"", w->idx,
		(unsigned long)c->id, d == ENG_C2U ? "client" : "upstream", strerror(err));
	eng__conn_close(c, TAP_CLOSE_RESET);
}

/* A direction whose source hit EOF and whose bytes are all forwarded passes the EOF on. */
static void dir_maybe_done(struct eng_conn *c, unsigned d)
{
	struct eng_dir *dr = &c->dir[d];

	if (!(dr->flags & ENG_DIR_F_EOF) || (dr->flags & (ENG_DIR_F_SEND | ENG_DIR_F_DONE)) ||
	    dr->nq || dr->pipe_bytes)
		return;
	/* Half-close: the other direction keeps flowing until its own EOF. */
	shutdown(c->fd[!d], SHUT_WR);
	dr->flags |= ENG_DIR_F_DONE;
	if (c->dir[!d].flags & ENG_DIR_F_DONE)
		eng__conn_close(c, TAP_CLOSE_EOF);
}

/* copy path */

static void recv_arm(struct eng_conn *c, unsigned d)
{
	struct io_uring_sqe *sqe = eng__sqe(c->w);

	io_uring_prep_recv_multishot(sqe, c->fd[d], NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = ENG_BUF_GROUP;
	io_uring_sqe_set_data64(sqe, eng__ud(ENG_OP_RECV, c, d));
	c->dir[d].flags |= ENG_DIR_F_RECV;
	c->inflight++;
}

static void recv_cancel(struct eng_conn *c, unsigned d)
{
	struct io_uring_sqe *sqe = eng__sqe(c->w);

	io_uring_prep_cancel64(sqe, eng__ud(ENG_OP_RECV, c, d), 0);
	io_uring_sqe_set_data64(sqe, eng__ud(ENG_OP_CANCEL, c, 0));
	c->dir[d].flags |= ENG_DIR_F_RECV_CANCEL;
	c->inflight++;
}

static void send_head(struct eng_conn *c, unsigned d)
{
	struct eng_worker *w = c->w;
	struct eng_dir *dr = &c->dir[d];
	struct io_uring_sqe *sqe = eng__sqe(w);

	io_uring_prep_send(sqe, c->fd[!d], eng__buf(w, dr->qhead) + dr->send_off,
			   w->buf_len[dr->qhead] - dr->send_off, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, eng__ud(ENG_OP_SEND, c, d));
	dr->flags |= ENG_DIR_F_SEND;
	c->inflight++;
}

static void splice_enter(struct eng_conn *c, unsigned d)
{
	struct eng_dir *dr = &c->dir[d];

	dr->flags &= (uint16_t)~ENG_DIR_F_TO_SPLICE;
	/* Capture took the bytes that arrived meanwhile, and with them the whole budget. */
	if (c->cap && c->cap->budget[d] == 0) {
		recv_resume(c, d);
		return;
	}
	dr->flags |= ENG_DIR_F_SPLICE;
	eng__stat_add(&c->w->stats.ctr[c->kind][ENG_CTR_SPLICE_SWITCHES], 1);
	splice_pump(c, d);
}

/* Re-arms the receive of a direction whose recv ended, unless something holds it back. */
static void recv_resume(struct eng_conn *c, unsigned d)
{
	struct eng_dir *dr = &c->dir[d];

	if (c->state != ENG_CONN_FORWARDING ||
	    (dr->flags & (ENG_DIR_F_RECV | ENG_DIR_F_EOF | ENG_DIR_F_NOBUF | ENG_DIR_F_DONE)))
		return;
	/* TLS: not while the client's first bytes are held, nor while the other side is full. */
	if (c->tls &&
	    (c->tls->state == ENG_TLS_SNIFF || c->tls->state == ENG_TLS_PLAIN ||
	     (d == ENG_C2U && c->tls->state == ENG_TLS_UPSTREAM) || eng__tls_blocked(c, d)))
		return;
	if (dr->flags & ENG_DIR_F_TO_SPLICE) {
		if (dr->nq == 0 && !(dr->flags & ENG_DIR_F_SEND))
			splice_enter(c, d);
		return;
	}
	if (dr->nq > ENG_DIR_HIWAT / 2)
		return;
	recv_arm(c, d);
}

/*
 * Whether a direction that just read <res> bytes should move to the splice
 * path. Without capture (auto): a full buffer after --splice-threshold bytes,
 * a bulk flow. With capture: only while capture needs none of the next bytes
 * (a body past the capture limit), for auto and splice alike.
 */
static bool wants_splice(struct eng_conn *c, unsigned d, int res)
{
	const struct eng_config *cfg = c->w->cfg;

	if (cfg->forward == ENG_FORWARD_COPY)
		return false;
	if (c->cap)
		return (cfg->forward == ENG_FORWARD_SPLICE || res == ENG_BUF_SIZE) &&
		       eng__cap_may_splice(c, d,
					   cfg->forward == ENG_FORWARD_SPLICE ? 1 : ENG_BUF_SIZE);
	return res == ENG_BUF_SIZE && c->dir[d].bytes >= cfg->splice_threshold;
}

void eng__recv_resume(struct eng_conn *c, unsigned d)
{
	recv_resume(c, d);
}

void eng__recv_start(struct eng_conn *c, unsigned d)
{
	if (!(c->dir[d].flags & ENG_DIR_F_RECV))
		recv_arm(c, d);
}

/* A buffer received on a connection whose TLS the engine terminates. */
static void tls_recv(struct eng_conn *c, unsigned d, unsigned bid, int res, bool more)
{
	struct eng_worker *w = c->w;
	struct eng_dir *dr = &c->dir[d];

	eng__touch(c);
	eng__tls_on_recv(c, d, eng__buf(w, bid), (size_t)res);
	/* The ciphertext was copied into the session: the buffer is free at once. */
	eng__buf_put(w, bid);
	if (c->state != ENG_CONN_FORWARDING)
		return;
	if ((dr->flags & (ENG_DIR_F_RECV | ENG_DIR_F_RECV_CANCEL)) == ENG_DIR_F_RECV &&
	    eng__tls_blocked(c, d))
		recv_cancel(c, d);
	if (!more)
		recv_resume(c, d);
}

static void on_recv_one(struct eng_conn *c, unsigned d, const struct io_uring_cqe *cqe);

static void on_recv(struct eng_conn *c, unsigned d, const struct io_uring_cqe *cqe)
{
	if (!c->tls) {
		on_recv_one(c, d, cqe);
		return;
	}
	/* Held: the TLS code may close <c> midway; it is freed only once we are done with it. */
	c->inflight++;
	on_recv_one(c, d, cqe);
	c->inflight--;
	maybe_free(c);
}

static void on_recv_one(struct eng_conn *c, unsigned d, const struct io_uring_cqe *cqe)
{
	struct eng_worker *w = c->w;
	struct eng_dir *dr = &c->dir[d];
	bool more = cqe->flags & IORING_CQE_F_MORE;
	int res = cqe->res;

	if (!more) {
		dr->flags &= (uint16_t) ~(ENG_DIR_F_RECV | ENG_DIR_F_RECV_CANCEL);
		c->inflight--;
	}
	if (res > 0) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

		if (c->state == ENG_CONN_CLOSING) {
			eng__buf_put(w, bid);
			maybe_free(c);
			return;
		}
		if (c->tls && c->tls->state == ENG_TLS_SNIFF && d == ENG_U2C)
			eng__tls_server_spoke(c);
		if (c->tls && c->tls->state >= ENG_TLS_UPSTREAM) {
			tls_recv(c, d, bid, res, more);
			return;
		}
		eng__touch(c);
		w->buf_len[bid] = (uint32_t)res;
		if (dr->nq++)
			w->buf_next[dr->qtail] = (uint16_t)bid;
		else
			dr->qhead = (uint16_t)bid;
		dr->qtail = (uint16_t)bid;
		if (!(dr->flags & ENG_DIR_F_SEND))
			send_head(c, d);
		/* The send is queued first: capture reads the buffer we already have. */
		if (c->cap)
			eng__cap_feed(c, d, eng__buf(w, bid), (size_t)res);
		if ((dr->flags & (ENG_DIR_F_RECV | ENG_DIR_F_RECV_CANCEL)) == ENG_DIR_F_RECV) {
			if (wants_splice(c, d, res)) {
				dr->flags |= ENG_DIR_F_TO_SPLICE;
				recv_cancel(c, d);
			} else if (dr->nq >= ENG_DIR_HIWAT) {
				recv_cancel(c, d);
			}
		}
		if (!more)
			recv_resume(c, d);
		return;
	}
	if (c->state == ENG_CONN_CLOSING) {
		maybe_free(c);
		return;
	}
	if (res == 0) {
		dr->flags |= ENG_DIR_F_EOF;
		if (c->tls && c->tls->state >= ENG_TLS_UPSTREAM) {
			eng__tls_on_eof(c, d);
			return;
		}
		if (c->cap)
			eng__cap_eof(c, d);
		dir_maybe_done(c, d);
		return;
	}
	switch (-res) {
	case ENOBUFS:
		/* The ring ran dry: grow it, or wait until sends give buffers back. */
		eng__stat_add(&w->stats.ctr[c->kind][ENG_CTR_NOBUFS], 1);
		if (eng__bufs_grow(w) == 0) {
			recv_resume(c, d);
			return;
		}
		dr->flags |= ENG_DIR_F_NOBUF;
		if (eng_list_empty(&c->nobuf))
			eng_list_add_tail(&w->nobuf, &c->nobuf);
		break;
	case ECANCELED:
		recv_resume(c, d);
		break;
	default:
		dir_error(c, d, -res);
		break;
	}
}

static void on_send(struct eng_conn *c, unsigned d, int res)
{
	struct eng_worker *w = c->w;
	struct eng_dir *dr = &c->dir[d];
	unsigned bid;

	c->inflight--;
	dr->flags &= (uint16_t)~ENG_DIR_F_SEND;
	if (c->state == ENG_CONN_CLOSING) {
		maybe_free(c);
		return;
	}
	if (res < 0) {
		dir_error(c, d, -res);
		return;
	}
	eng__touch(c);
	dr->bytes += (unsigned)res;
	eng__stat_add(&w->stats.ctr[c->kind][ENG_CTR_BYTES_C2U + d], (unsigned)res);
	dr->send_off += (unsigned)res;
	bid = dr->qhead;
	if (dr->send_off < w->buf_len[bid]) {
		send_head(c, d);
		return;
	}
	dr->send_off = 0;
	dr->qhead = w->buf_next[bid];
	dr->nq--;
	eng__buf_put(w, bid);
	if (dr->nq)
		send_head(c, d);
	if (dr->flags & ENG_DIR_F_EOF)
		dir_maybe_done(c, d);
	else
		recv_resume(c, d);
}

void eng__conn_retry_nobuf(struct eng_worker *w)
{
	while (!eng_list_empty(&w->nobuf)) {
		struct eng_conn *c = eng_list_entry(w->nobuf.next, struct eng_conn, nobuf);

		eng_list_del(&c->nobuf);
		for (unsigned d = 0; d < 2; d++) {
			if (c->dir[d].flags & ENG_DIR_F_NOBUF) {
				c->dir[d].flags &= (uint16_t)~ENG_DIR_F_NOBUF;
				recv_resume(c, d);
			}
		}
	}
}

/* splice path */

static void poll_arm(struct eng_conn *c, unsigned d, bool out)
{
	struct eng_dir *dr = &c->dir[d];
	uint16_t flag = out ? ENG_DIR_F_POLL_OUT : ENG_DIR_F_POLL_IN;
	struct io_uring_sqe *sqe;

	if (dr->flags & flag)
		return;
	sqe = eng__sqe(c->w);
	io_uring_prep_poll_add(sqe, c->fd[out ? !d : d], out ? POLLOUT : POLLIN);
	io_uring_sqe_set_data64(sqe, eng__ud(out ? ENG_OP_POLL_OUT : ENG_OP_POLL_IN, c, d));
	dr->flags |= flag;
	c->inflight++;
}

/*
 * Moves bytes source -> pipe -> destination with non-blocking splice(2) from
 * this thread, driven by io_uring polls: IORING_OP_SPLICE would run each call
 * on an io-wq kernel thread (a thread hop per call; perf/RESULTS.md).
 */
static void splice_pump(struct eng_conn *c, unsigned d)
{
	struct eng_worker *w = c->w;
	struct eng_dir *dr = &c->dir[d];
	unsigned rounds = 0;
	size_t want;
	ssize_t n;

	for (;;) {
		if (dr->pipe_bytes) {
			n = splice(dr->pipe->fd[0], NULL, c->fd[!d], NULL, dr->pipe_bytes,
				   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
			if (n > 0) {
				dr->pipe_bytes -= (uint32_t)n;
				dr->bytes += (uint64_t)n;
				eng__stat_add(&w->stats.ctr[c->kind][ENG_CTR_BYTES_C2U + d],
					      (uint64_t)n);
				eng__stat_add(&w->stats.ctr[c->kind][ENG_CTR_SPLICE_BYTES],
					      (uint64_t)n);
				eng__touch(c);
				continue;
			}
			if (n == -1 && errno == EINTR)
				continue;
			if (n == -1 && errno == EAGAIN) {
				poll_arm(c, d, true);
				return;
			}
			dir_error(c, d, n == 0 ? EPIPE : errno);
			return;
		}
		if (dr->flags & ENG_DIR_F_EOF) {
			if (dr->pipe) {
				pipe_put(w, dr->pipe, true);
				dr->pipe = NULL;
			}
			dir_maybe_done(c, d);
			return;
		}
		if (c->cap && c->cap->budget[d] == 0) {
			/* What capture let go by has passed: its next bytes go by copy again. */
			if (dr->pipe) {
				pipe_put(w, dr->pipe, true);
				dr->pipe = NULL;
			}
			eng__cap_skip_flush(c, d);
			dr->flags &= (uint16_t)~ENG_DIR_F_SPLICE;
			recv_resume(c, d);
			return;
		}
		if (++rounds > ENG_SPLICE_ROUNDS) {
			/* Let the worker's other connections run; the poll fires at once. */
			poll_arm(c, d, false);
			return;
		}
		if (!dr->pipe && !(dr->pipe = pipe_get(w))) {
			/* No pipe to be had: this direction goes on by copy. */
			dr->flags &= (uint16_t)~ENG_DIR_F_SPLICE;
			recv_resume(c, d);
			return;
		}
		want = (size_t)1 << 20;
		if (c->cap && c->cap->budget[d] < want)
			want = (size_t)c->cap->budget[d];
		n = splice(c->fd[d], NULL, dr->pipe->fd[1], NULL, want,
			   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (n > 0) {
			dr->pipe_bytes += (uint32_t)n;
			if (c->cap) {
				c->cap->budget[d] -= (uint64_t)n;
				c->cap->skipped[d] += (uint64_t)n;
			}
			eng__touch(c);
			continue;
		}
		if (n == 0) {
			dr->flags |= ENG_DIR_F_EOF;
			if (c->cap) {
				eng__cap_skip_flush(c, d);
				eng__cap_eof(c, d);
			}
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			/* Nothing in flight: the pipe goes back to the pool until data comes. */
			pipe_put(w, dr->pipe, true);
			dr->pipe = NULL;
			poll_arm(c, d, false);
			return;
		}
		dir_error(c, d, errno);
		return;
	}
}

static void on_poll(struct eng_conn *c, unsigned d, bool out, int res)
{
	c->inflight--;
	c->dir[d].flags &= (uint16_t) ~(out ? ENG_DIR_F_POLL_OUT : ENG_DIR_F_POLL_IN);
	if (c->state == ENG_CONN_CLOSING) {
		maybe_free(c);
		return;
	}
	if (res < 0) {
		dir_error(c, d, -res);
		return;
	}
	splice_pump(c, d);
}

/* connect */

static void dir_start(struct eng_conn *c, unsigned d)
{
	/* Captured bytes go by copy: capture reads the buffers the copy path has. */
	if (c->w->cfg->forward == ENG_FORWARD_SPLICE && !c->cap) {
		c->dir[d].flags |= ENG_DIR_F_SPLICE;
		splice_pump(c, d);
	} else {
		recv_arm(c, d);
	}
}

static void on_connect(struct eng_conn *c, int res)
{
	struct eng_worker *w = c->w;
	char dst[ENG_ADDR_STRLEN];
	uint32_t suppressed;

	c->inflight--;
	if (c->state == ENG_CONN_CLOSING) {
		maybe_free(c);
		return;
	}
	if (res >= 0) {
		/* The poll for writability: whether the connect worked is the socket's error. */
		int err = c->connect_err;
		socklen_t len = sizeof(err);

		if (!err && getsockopt(c->fd[ENG_U2C], SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err)
			res = -err;
	}
	if (res < 0) {
		/* The linked timeout fired when the connect comes back cancelled. */
		bool timeout = res == -ECANCELED;

		eng__stat_add(&w->stats.ctr[c->kind][timeout ? ENG_CTR_CONNECT_TIMEOUTS :
							       ENG_CTR_CONNECT_ERRORS],
			      1);
		if (eng_ratelimit_ok(&w->rl_conn, w->now_ms, 1000, &suppressed))
			eng_log(ENG_LOG_WARN, "upstream connect failed",
				"worker=%u listener=%s conn=%lu upstream=%s err=\"%s\" suppressed=%u",
				w->idx, eng_listener_kind_name(c->kind), (unsigned long)c->id,
				eng_addr_format(&c->dst, dst, sizeof(dst)),
				timeout ? "connect timeout" : strerror(-res), suppressed);
		/* The client sees what it would have seen connecting directly: a reset. */
		eng__conn_close(c, timeout ? TAP_CLOSE_CONNECT_TIMEOUT : TAP_CLOSE_CONNECT_FAILED);
		return;
	}
	c->state = ENG_CONN_FORWARDING;
	eng__touch(c);
	/* A listener that unwraps TLS holds the client's first bytes until they are known. */
	if (eng__tls_wanted(c) && eng__tls_start(c) == 0) {
		/* The copy path, even with --forward splice: the upstream's bytes may be TLS. */
		recv_arm(c, ENG_U2C);
		return;
	}
	dir_start(c, ENG_C2U);
	/* Server-first protocols (MySQL, SMTP, ...): the greeting flows at once. */
	if (c->state == ENG_CONN_FORWARDING)
		dir_start(c, ENG_U2C);
}

static int orig_dst(int fd, sa_family_t family, struct eng_addr *dst)
{
	socklen_t len = sizeof(dst->u);
	int ret;

	memset(dst, 0, sizeof(*dst));
	if (family == AF_INET6)
		ret = getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst->u.in6, &len);
	else
		ret = getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst->u.in, &len);
	if (ret == -1)
		return -errno;
	dst->len = dst->u.sa.sa_family == AF_INET6 ? sizeof(dst->u.in6) : sizeof(dst->u.in);
	return 0;
}

/* A tag for a connection from <local> to <dst>, never 0 (FNV-1a). */
static uint32_t own_tag(const struct eng_addr *local, const struct eng_addr *dst)
{
	const struct eng_addr *a[2] = { local, dst };
	uint32_t h = 2166136261u;

	for (unsigned k = 0; k < 2; k++) {
		const uint8_t *p = a[k]->u.sa.sa_family == AF_INET6 ?
					   (const uint8_t *)&a[k]->u.in6.sin6_addr :
					   (const uint8_t *)&a[k]->u.in.sin_addr;
		size_t n = a[k]->u.sa.sa_family == AF_INET6 ? 16 : 4;

		for (size_t i = 0; i < n; i++)
			h = (h ^ p[i]) * 16777619u;
	}
	h = (h ^ (eng_addr_port(dst) >> 8)) * 16777619u;
	h = (h ^ (eng_addr_port(dst) & 0xff)) * 16777619u;
	return h | 1;
}

/* True when the client on <fd> is one of our own upstream sockets, connecting to <dst>. */
static bool is_own_connect(const struct eng_engine *e, int fd, const struct eng_addr *dst)
{
	struct eng_addr peer;
	socklen_t len = sizeof(peer.u);
	uint32_t tag;

	if (getpeername(fd, &peer.u.sa, &len) == -1)
		return false;
	peer.len = len;
	tag = atomic_load_explicit(&e->own_ports[eng_addr_port(&peer)], memory_order_relaxed);
	return tag && tag == own_tag(&peer, dst);
}

/* True when <dst> is one of this process's listeners: forwarding there would loop. */
static bool is_own_listener(const struct eng_engine *e, const struct eng_addr *dst)
{
	for (unsigned k = 0; k < ENG_LISTENER_KINDS; k++) {
		for (unsigned i = 0; i < e->cfg->listen[k].naddrs; i++) {
			const struct eng_addr *la = &e->laddr[k][i];

			if (la->u.sa.sa_family != dst->u.sa.sa_family ||
			    eng_addr_port(la) != eng_addr_port(dst))
				continue;
			if (eng_addr_is_any(la) ? eng_addr_is_local(dst) : eng_addr_equal(la, dst))
				return true;
		}
	}
	return false;
}

/* Enters <c>'s upstream socket, connecting now, in the table of our own ports. */
static void own_register(struct eng_engine *e, struct eng_conn *c)
{
	struct eng_addr local;
	socklen_t len = sizeof(local.u);

	if (getsockname(c->fd[ENG_U2C], &local.u.sa, &len) == -1)
		return;
	local.len = len;
	c->own_port = eng_addr_port(&local);
	c->own_tag = own_tag(&local, &c->dst);
	atomic_store_explicit(&e->own_ports[c->own_port], c->own_tag, memory_order_relaxed);
}

static void reject(struct eng_worker *w, struct eng_listener *l, int fd, enum eng_ctr why)
{
	eng__stat_add(&w->stats.ctr[l->kind][why], 1);
	eng__stat_add(&w->stats.ctr[l->kind][ENG_CTR_CLOSED], 1);
	set_linger0(fd);
	close(fd);
}

/*
 * Finds where a new connection goes: *<dst> the upstream, *<orig> its original
 * destination (transparent mode; the listener's address in reverse mode).
 * Returns 0, or the counter that says why it cannot go anywhere.
 */
static enum eng_ctr upstream_of(struct eng_worker *w, struct eng_listener *l, int fd,
				struct eng_addr *dst, struct eng_addr *orig)
{
	const struct eng_listener_cfg *lc = &w->cfg->listen[l->kind];
	uint32_t suppressed;

	if (lc->mode == ENG_MODE_REVERSE) {
		*dst = lc->upstream;
		*orig = *l->addr;
		return 0;
	}
	if (orig_dst(fd, l->family, dst) < 0 || is_own_listener(w->eng, dst)) {
		/* Not redirected (no NAT entry), or redirected to ourselves: a loop. */
		if (eng_ratelimit_ok(&w->rl_conn, w->now_ms, 1000, &suppressed))
			eng_log(ENG_LOG_WARN, "loop guard: destination is sidetap itself, closing",
				"worker=%u listener=%s suppressed=%u", w->idx,
				eng_listener_kind_name(l->kind), suppressed);
		return ENG_CTR_LOOP_GUARD;
	}
	if (is_own_connect(w->eng, fd, dst)) {
		/* Our own upstream connect, redirected back: the rules miss sidetap's UID. */
		if (eng_ratelimit_ok(&w->rl_conn, w->now_ms, 1000, &suppressed))
			eng_log(ENG_LOG_WARN,
				"loop guard: sidetap's own connection came back, closing",
				"worker=%u listener=%s suppressed=%u fix=\"exclude sidetap's UID from the "
				"pod's REDIRECT rules (-m owner --uid-owner UID -j RETURN)\"",
				w->idx, eng_listener_kind_name(l->kind), suppressed);
		return ENG_CTR_LOOP_GUARD;
	}
	*orig = *dst;
	/* Inbound traffic goes to the app in this pod, on loopback, same port. */
	if (l->kind == ENG_INBOUND)
		eng_addr_to_loopback(dst);
	return 0;
}

void eng__conn_accept(struct eng_worker *w, struct eng_listener *l, int fd)
{
	struct io_uring_sqe *sqe;
	struct eng_conn *c;
	struct eng_addr dst, orig;
	enum eng_ctr why;
	uint32_t suppressed;
	int one = 1, ufd;

	eng__stat_add(&w->stats.ctr[l->kind][ENG_CTR_ACCEPTED], 1);
	/* Accepted by the kernel before the drain closed the listener: not ours to serve. */
	if (w->phase != ENG_PHASE_RUN) {
		reject(w, l, fd, ENG_CTR_DRAIN_CLOSED);
		return;
	}
	if (w->nconns >= w->cfg->max_connections) {
		if (eng_ratelimit_ok(&w->rl_accept, w->now_ms, 1000, &suppressed))
			eng_log(ENG_LOG_WARN, "connection limit reached, closing new connections",
				"worker=%u listener=%s max_connections=%u suppressed=%u", w->idx,
				eng_listener_kind_name(l->kind), w->cfg->max_connections,
				suppressed);
		reject(w, l, fd, ENG_CTR_REJECTED_LIMIT);
		return;
	}
	why = upstream_of(w, l, fd, &dst, &orig);
	if (why) {
		reject(w, l, fd, why);
		return;
	}
	ufd = socket(dst.u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ufd == -1) {
		if (eng_ratelimit_ok(&w->rl_conn, w->now_ms, 1000, &suppressed))
			eng_log(ENG_LOG_WARN, "cannot create upstream socket",
				"worker=%u err=\"%s\" suppressed=%u", w->idx, strerror(errno),
				suppressed);
		reject(w, l, fd, ENG_CTR_CONNECT_ERRORS);
		return;
	}
	c = conn_alloc(w);
	if (!c) {
		close(ufd);
		reject(w, l, fd, ENG_CTR_REJECTED_LIMIT);
		return;
	}
	setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->kind = l->kind;
	c->dst = dst;
	c->fd[ENG_C2U] = fd;
	c->fd[ENG_U2C] = ufd;
	w->nconns++;
	eng_list_add_tail(&w->conns, &c->link);
	if (w->eng->ring)
		eng__cap_open(c, &orig);

	/*
	 * connect(2) here rather than IORING_OP_CONNECT: the local port is known
	 * before any completion, so a redirected copy of this connection, accepted
	 * by any worker, is recognised (is_own_connect). A poll waits for it.
	 */
	if (connect(ufd, &c->dst.u.sa, c->dst.len) == -1 && errno != EINPROGRESS)
		c->connect_err = errno;
	else
		own_register(w->eng, c);
	/* A linked pair must reach the kernel in one submission. */
	if (io_uring_sq_space_left(&w->ring) < 2)
		io_uring_submit(&w->ring);
	sqe = eng__sqe(w);
	io_uring_prep_poll_add(sqe, ufd, POLLOUT);
	io_uring_sqe_set_data64(sqe, eng__ud(ENG_OP_CONNECT, c, 0));
	sqe->flags |= IOSQE_IO_LINK;
	sqe = eng__sqe(w);
	io_uring_prep_link_timeout(sqe, &w->connect_ts, 0);
	io_uring_sqe_set_data64(sqe, eng__ud(ENG_OP_CONNECT_TIMEOUT, c, 0));
	c->inflight += 2;
}

void eng__conn_on_cqe(struct eng_worker *w, enum eng_op op, struct eng_conn *c, unsigned arg,
		      const struct io_uring_cqe *cqe)
{
	(void)w;
	switch (op) {
	case ENG_OP_CONNECT:
		on_connect(c, cqe->res);
		break;
	case ENG_OP_CONNECT_TIMEOUT:
	case ENG_OP_CANCEL:
		c->inflight--;
		maybe_free(c);
		break;
	case ENG_OP_RECV:
		on_recv(c, arg, cqe);
		break;
	case ENG_OP_SEND:
		on_send(c, arg, cqe->res);
		break;
	case ENG_OP_POLL_IN:
		on_poll(c, arg, false, cqe->res);
		break;
	case ENG_OP_POLL_OUT:
		on_poll(c, arg, true, cqe->res);
		break;
	case ENG_OP_TLS_SNIFF:
		/* Held: what the TLS code does may close <c>, never free it under it. */
		c->inflight++;
		eng__tls_on_sniff(c, cqe->res);
		c->inflight--;
		maybe_free(c);
		break;
	case ENG_OP_TLS_SEND:
		c->inflight++;
		eng__tls_on_send(c, arg, cqe->res);
		c->inflight--;
		maybe_free(c);
		break;
	default:
		break;
	}
}

void eng__conn_expire_idle(struct eng_worker *w)
{
	unsigned idle = w->cfg->idle_timeout_ms;

	if (!idle)
		return;
	while (!eng_list_empty(&w->conns)) {
		struct eng_conn *c = eng_list_entry(w->conns.next, struct eng_conn, link);

		if (w->now_ms - c->active_ms < idle)
			break;
		eng__stat_add(&w->stats.ctr[c->kind][ENG_CTR_IDLE_TIMEOUTS], 1);
		ENG_LOG(ENG_LOG_DEBUG, "idle timeout", "worker=%u conn=%lu", w->idx,
			(unsigned long)c->id);
		eng__conn_close(c, TAP_CLOSE_IDLE_TIMEOUT);
	}
}
