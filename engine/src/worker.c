/* SPDX-License-Identifier: Apache-2.0 */
/* A worker: its io_uring, provided buffers, listeners, timers, and the loop that reaps completions. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine_int.h"

#define ENG_SQ_ENTRIES 512
#define ENG_CQ_ENTRIES 8192
/* Completions copied out of the CQ per round, so handlers may submit freely. */
#define ENG_CQE_BATCH 256
#define ENG_ACCEPT_BACKOFF_MIN_MS 20
#define ENG_ACCEPT_BACKOFF_MAX_MS 1000

struct io_uring_sqe *eng__sqe(struct eng_worker *w)
{
	struct io_uring_sqe *sqe;
	int ret;

	while (!(sqe = io_uring_get_sqe(&w->ring))) {
		/* The completions we hold were copied out of the CQ already: no -EBUSY loop. */
		ret = io_uring_submit(&w->ring);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
			eng_log(ENG_LOG_ERROR, "io_uring submit failed", "worker=%u err=\"%s\"",
				w->idx, strerror(-ret));
			abort();
		}
	}
	return sqe;
}

void eng__worker_wake(struct eng_worker *w)
{
	uint64_t one = 1;

	if (w->wake_fd >= 0 && write(w->wake_fd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		eng_log(ENG_LOG_WARN, "cannot wake worker", "worker=%u err=\"%s\"", w->idx,
			strerror(errno));
}

/*
 * Sets up the ring: SINGLE_ISSUER and DEFER_TASKRUN (6.1+) keep completion
 * work on this thread, run when we wait; older kernels get a plain ring.
 * No SQPOLL: its kernel thread would spin on a core of a small pod.
 */
static int ring_open(struct eng_worker *w)
{
	struct io_uring_params p;
	int ret;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE |
		  IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN;
	p.cq_entries = ENG_CQ_ENTRIES;
	ret = io_uring_queue_init_params(ENG_SQ_ENTRIES, &w->ring, &p);
	if (ret == -EINVAL) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = ENG_CQ_ENTRIES;
		ret = io_uring_queue_init_params(ENG_SQ_ENTRIES, &w->ring, &p);
	}
	if (ret < 0)
		return ret;
	w->ring_ok = true;
	/* Saves an fd lookup per io_uring_enter; fine to lack on old kernels. */
	io_uring_register_ring_fd(&w->ring);
	return 0;
}

int eng__bufs_grow(struct eng_worker *w)
{
	unsigned chunk = w->nbufs / ENG_BUF_CHUNK;
	uint8_t *mem;

	if (w->nbufs >= ENG_BUF_MAX)
		return -ENOSPC;
	mem = mmap(NULL, (size_t)ENG_BUF_CHUNK * ENG_BUF_SIZE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return -ENOMEM;
	w->buf_chunk[chunk] = mem;
	w->nbufs += ENG_BUF_CHUNK;
	for (unsigned i = 0; i < ENG_BUF_CHUNK; i++)
		eng__buf_put(w, chunk * ENG_BUF_CHUNK + i);
	/* Visible to the kernel before the receive that ran dry is re-armed. */
	eng__bufs_flush(w);
	return 0;
}

static int bufs_open(struct eng_worker *w)
{
	struct io_uring_buf_reg reg;
	size_t len = ENG_BUF_MAX * sizeof(struct io_uring_buf);
	void *br;
	int ret;

	br = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (br == MAP_FAILED)
		return -ENOMEM;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (unsigned long)br;
	reg.ring_entries = ENG_BUF_MAX;
	reg.bgid = ENG_BUF_GROUP;
	ret = io_uring_register_buf_ring(&w->ring, &reg, 0);
	if (ret < 0) {
		munmap(br, len);
		return ret;
	}
	w->br = br;
	io_uring_buf_ring_init(w->br);
	return eng__bufs_grow(w);
}

static void bufs_close(struct eng_worker *w)
{
	for (unsigned i = 0; i < w->nbufs / ENG_BUF_CHUNK; i++)
		munmap(w->buf_chunk[i], (size_t)ENG_BUF_CHUNK * ENG_BUF_SIZE);
	w->nbufs = 0;
	if (w->br)
		munmap(w->br, ENG_BUF_MAX * sizeof(struct io_uring_buf));
	w->br = NULL;
}

static void listener_arm(struct eng_listener *l)
{
	struct io_uring_sqe *sqe = eng__sqe(l->w);

	io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, eng__ud(ENG_OP_ACCEPT, l, 0));
	l->armed = true;
}

static void tick_arm(struct eng_worker *w)
{
	struct io_uring_sqe *sqe = eng__sqe(w);

	io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, eng__ud(ENG_OP_TICK, w, 0));
	w->tick_armed = true;
}

static void wake_arm(struct eng_worker *w)
{
	struct io_uring_sqe *sqe = eng__sqe(w);

	io_uring_prep_read(sqe, w->wake_fd, &w->wake_val, sizeof(w->wake_val), 0);
	io_uring_sqe_set_data64(sqe, eng__ud(ENG_OP_WAKE, w, 0));
	w->wake_armed = true;
}

/* Stops accepting: cancels the multishot accepts; the final completion closes the socket. */
static void listeners_stop(struct eng_worker *w)
{
	for (unsigned i = 0; i < w->nlisteners; i++) {
		struct eng_listener *l = &w->listeners[i];

		if (l->fd < 0)
			continue;
		if (l->armed) {
			struct io_uring_sqe *sqe = eng__sqe(w);

			io_uring_prep_cancel64(sqe, eng__ud(ENG_OP_ACCEPT, l, 0), 0);
			io_uring_sqe_set_data64(sqe, 0);
		} else {
			/* Waiting on a back-off timer: nothing holds the socket. */
			close(l->fd);
			l->fd = -1;
		}
	}
}

static void accept_backoff(struct eng_listener *l)
{
	struct io_uring_sqe *sqe;

	l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : ENG_ACCEPT_BACKOFF_MIN_MS;
	if (l->backoff_ms > ENG_ACCEPT_BACKOFF_MAX_MS)
		l->backoff_ms = ENG_ACCEPT_BACKOFF_MAX_MS;
	l->backoff_ts.tv_sec = l->backoff_ms / 1000;
	l->backoff_ts.tv_nsec = (long long)(l->backoff_ms % 1000) * 1000000;
	sqe = eng__sqe(l->w);
	io_uring_prep_timeout(sqe, &l->backoff_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, eng__ud(ENG_OP_ACCEPT_RETRY, l, 0));
	l->backoff = true;
}

static void on_accept(struct eng_worker *w, struct eng_listener *l, const struct io_uring_cqe *cqe)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	uint32_t suppressed;
	int err = -cqe->res;

	if (cqe->res >= 0) {
		l->backoff_ms = 0;
		eng__conn_accept(w, l, cqe->res);
	} else if (err != ECANCELED) {
		eng__stat_add(&w->stats.ctr[l->kind][ENG_CTR_ACCEPT_ERRORS], 1);
		/* Out of descriptors or memory: keep serving, retry after a pause. */
		if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
			if (eng_ratelimit_ok(&w->rl_accept, w->now_ms, 1000, &suppressed))
				eng_log(ENG_LOG_WARN, "accept failed, backing off",
					"worker=%u listener=%s err=\"%s\" suppressed=%u fix=\"raise the descriptor limit (ulimit -n) or lower --max-connections\"",
					w->idx, eng_listener_kind_name(l->kind), strerror(err),
					suppressed);
			if (more && !l->backoff) {
				struct io_uring_sqe *sqe = eng__sqe(w);

				io_uring_prep_cancel64(sqe, eng__ud(ENG_OP_ACCEPT, l, 0), 0);
				io_uring_sqe_set_data64(sqe, 0);
			}
			l->backoff = true;
		} else {
			ENG_LOG(ENG_LOG_DEBUG, "accept error", "worker=%u listener=%s err=\"%s\"",
				w->idx, eng_listener_kind_name(l->kind), strerror(err));
		}
	}
	if (more)
		return;
	l->armed = false;
	if (w->phase != ENG_PHASE_RUN) {
		close(l->fd);
		l->fd = -1;
	} else if (l->backoff) {
		accept_backoff(l);
	} else {
		/* Multishot ended without an error (CQ overflow): arm it again. */
		listener_arm(l);
	}
}

static void on_accept_retry(struct eng_worker *w, struct eng_listener *l)
{
	l->backoff = false;
	if (w->phase == ENG_PHASE_RUN && l->fd >= 0)
		listener_arm(l);
}

static void close_all(struct eng_worker *w, enum eng_ctr why)
{
	while (!eng_list_empty(&w->conns)) {
		struct eng_conn *c = eng_list_entry(w->conns.next, struct eng_conn, link);

		eng__stat_add(&w->stats.ctr[c->kind][why], 1);
		eng__conn_close(c, TAP_CLOSE_DRAIN);
	}
}

/* Acts on a phase change of the engine (drain, force) that this worker has not seen yet. */
static void phase_check(struct eng_worker *w)
{
	int phase = atomic_load_explicit(&w->eng->phase, memory_order_acquire);

	if (phase == w->phase)
		return;
	if (w->phase == ENG_PHASE_RUN) {
		w->drain_deadline_ms =
			w->now_ms + atomic_load_explicit(&w->eng->drain_ms, memory_order_relaxed);
		listeners_stop(w);
	}
	w->phase = phase;
	if (phase == ENG_PHASE_FORCE)
		close_all(w, ENG_CTR_DRAIN_CLOSED);
}

static void on_tick(struct eng_worker *w)
{
	w->tick_armed = false;
	eng__conn_expire_idle(w);
	eng__tls_expire(w);
	if (w->admin)
		eng__admin_expire(w, false);
	if (w->phase != ENG_PHASE_RUN && w->now_ms >= w->drain_deadline_ms)
		close_all(w, ENG_CTR_DRAIN_CLOSED);
	tick_arm(w);
}

static void dispatch(struct eng_worker *w, const struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	enum eng_op op = eng__ud_op(ud);
	void *obj = eng__ud_obj(ud);

	switch (op) {
	case ENG_OP_NONE:
		break;
	case ENG_OP_ACCEPT:
		on_accept(w, obj, cqe);
		break;
	case ENG_OP_ACCEPT_RETRY:
		on_accept_retry(w, obj);
		break;
	case ENG_OP_TICK:
		on_tick(w);
		break;
	case ENG_OP_WAKE:
		w->wake_armed = false;
		phase_check(w);
		wake_arm(w);
		break;
	case ENG_OP_CONNECT:
	case ENG_OP_CONNECT_TIMEOUT:
	case ENG_OP_RECV:
	case ENG_OP_SEND:
	case ENG_OP_POLL_IN:
	case ENG_OP_POLL_OUT:
	case ENG_OP_CANCEL:
	case ENG_OP_TLS_SNIFF:
	case ENG_OP_TLS_SEND:
		eng__conn_on_cqe(w, op, obj, eng__ud_arg(ud), cqe);
		break;
	case ENG_OP_ADMIN_ACCEPT:
	case ENG_OP_ADMIN_RECV:
	case ENG_OP_ADMIN_SEND:
		eng__admin_on_cqe(w, op, obj, cqe);
		break;
	}
}

/* True once a draining worker has nothing left to wait for. */
static bool worker_finished(struct eng_worker *w)
{
	if (w->phase == ENG_PHASE_RUN || w->nconns > 0)
		return false;
	for (unsigned i = 0; i < w->nlisteners; i++)
		if (w->listeners[i].fd >= 0)
			return false;
	if (w->admin) {
		/* Worker 0 serves /readyz (503) until every other worker is done. */
		if (atomic_load(&w->eng->running) > 1)
			return false;
		if (eng__admin_busy(w))
			return false;
	}
	return true;
}

static void loop(struct eng_worker *w)
{
	struct io_uring_cqe batch[ENG_CQE_BATCH];
	struct io_uring_cqe *cqe;
	unsigned head, n;
	int ret;

	for (;;) {
		ret = io_uring_submit_and_wait(&w->ring, 1);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY && ret != -ETIME) {
			eng_log(ENG_LOG_ERROR, "io_uring wait failed", "worker=%u err=\"%s\"",
				w->idx, strerror(-ret));
			w->err = ret;
			return;
		}
		w->now_ms = eng_now_ms();
		if (w->eng->ring)
			w->now_ns = eng__realtime_ns();
		do {
			n = 0;
			io_uring_for_each_cqe(&w->ring, head, cqe)
			{
				batch[n++] = *cqe;
				if (n == ENG_CQE_BATCH)
					break;
			}
			io_uring_cq_advance(&w->ring, n);
			for (unsigned i = 0; i < n; i++)
				dispatch(w, &batch[i]);
		} while (n == ENG_CQE_BATCH);
		if (w->br_pending) {
			eng__bufs_flush(w);
			eng__conn_retry_nobuf(w);
		}
		if (w->phase != ENG_PHASE_RUN && worker_finished(w))
			return;
	}
}

static int worker_setup(struct eng_worker *w)
{
	unsigned tick_ms;
	int ret;

	ret = ring_open(w);
	if (ret < 0)
		return ret;
	ret = bufs_open(w);
	if (ret < 0)
		return ret;
	/* Idle timeouts are checked on a tick: a quarter of the timeout, 50 ms to 1 s. */
	tick_ms = w->cfg->idle_timeout_ms ? w->cfg->idle_timeout_ms / 4 : 1000;
	tick_ms = tick_ms < 50 ? 50 : tick_ms > 1000 ? 1000 : tick_ms;
	w->tick_ts.tv_sec = tick_ms / 1000;
	w->tick_ts.tv_nsec = (long long)(tick_ms % 1000) * 1000000;
	w->connect_ts.tv_sec = w->cfg->connect_timeout_ms / 1000;
	w->connect_ts.tv_nsec = (long long)(w->cfg->connect_timeout_ms % 1000) * 1000000;
	w->now_ms = eng_now_ms();
	for (unsigned i = 0; i < w->nlisteners; i++)
		listener_arm(&w->listeners[i]);
	eng__admin_start(w);
	tick_arm(w);
	wake_arm(w);
	ret = io_uring_submit(&w->ring);
	return ret < 0 ? ret : 0;
}

static void worker_teardown(struct eng_worker *w)
{
	/* Exiting the ring cancels what is still in flight (timers, the wake read). */
	if (w->ring_ok)
		io_uring_queue_exit(&w->ring);
	w->ring_ok = false;
	while (!eng_list_empty(&w->conn_free)) {
		struct eng_conn *c = eng_list_entry(w->conn_free.next, struct eng_conn, link);

		eng_list_del(&c->link);
		free(c);
	}
	eng__pipes_free(w);
	bufs_close(w);
	if (w->admin)
		eng__admin_free(w);
	for (unsigned i = 0; i < w->nlisteners; i++) {
		if (w->listeners[i].fd >= 0)
			close(w->listeners[i].fd);
		w->listeners[i].fd = -1;
	}
}

static void report_start(struct eng_engine *e, int ret)
{
	pthread_mutex_lock(&e->lock);
	e->started++;
	if (ret < 0 && e->start_err == 0)
		e->start_err = ret;
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
}

void *eng__worker_main(void *arg)
{
	struct eng_worker *w = arg;
	struct eng_engine *e = w->eng;
	char name[16];
	int ret;

	snprintf(name, sizeof(name), "sidetap-w%u", w->idx);
	pthread_setname_np(pthread_self(), name);
	ret = worker_setup(w);
	if (ret < 0) {
		w->err = ret;
		if (ret == -EPERM || ret == -ENOSYS)
			eng_log(ENG_LOG_ERROR, "io_uring is not available",
				"worker=%u err=\"%s\" cause=\"the seccomp profile of the container probably blocks io_uring (containerd 2.0 and Docker 25+ default profiles do), or sysctl kernel.io_uring_disabled is set\" fix=\"run sidetap with a seccomp profile that allows io_uring_setup, io_uring_enter and io_uring_register, and kernel.io_uring_disabled=0\"",
				w->idx, strerror(-ret));
		else
			eng_log(ENG_LOG_ERROR, "worker set-up failed",
				"worker=%u err=\"%s\" need=\"Linux 6.0 or later (multishot recv, provided buffer rings)\"",
				w->idx, strerror(-ret));
		report_start(e, ret);
		goto out;
	}
	report_start(e, 0);
	/* The start may have failed elsewhere: then the phase says stop at once. */
	phase_check(w);
	loop(w);
out:
	worker_teardown(w);
	atomic_fetch_sub(&e->running, 1);
	if (w->idx != 0)
		eng__worker_wake(&e->workers[0]);
	return NULL;
}
