/* SPDX-License-Identifier: Apache-2.0 */
/* The engine: binds listeners, starts one worker thread per core, drains and stops them. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine_int.h"
#include "tlx/ktls.h"

/* How long the uploader may take to ship what is left in the ring at exit. */
#define ENG_UPLOADER_DRAIN_MS 10000

/*
 * Opens a non-blocking SO_REUSEPORT listener on <addr>; with port 0 the kernel
 * picks one and <addr> is updated to it. Returns the fd or a negative errno.
 */
static int listener_open(struct eng_addr *addr, bool reuseport)
{
	int one = 1;
	int fd, ret;

	fd = socket(addr->u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	/* IPv6 listeners take IPv6 only: IPv4 has its own, with its own SO_ORIGINAL_DST. */
	if (addr->u.sa.sa_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1)
		goto err_close_fd;
	/* One listener per worker: the kernel spreads connections across them. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1 ||
	    bind(fd, &addr->u.sa, addr->len) == -1 || listen(fd, SOMAXCONN) == -1)
		goto err_close_fd;
	if (eng_addr_port(addr) == 0) {
		socklen_t len = sizeof(addr->u);

		if (getsockname(fd, &addr->u.sa, &len) == -1)
			goto err_close_fd;
	}
	return fd;

err_close_fd:
	ret = -errno;
	close(fd);
	return ret;
}

/*
 * SO_REUSEPORT would let us share a port with another sidetap still running,
 * silently splitting its traffic: a plain bind first tells whether anyone
 * holds it. Returns 0 or a negative errno.
 */
static int port_is_free(const struct eng_addr *addr)
{
	int one = 1, fd, ret = 0;

	if (eng_addr_port(addr) == 0)
		return 0;
	fd = socket(addr->u.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	if (addr->u.sa.sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, &addr->u.sa, addr->len) == -1)
		ret = -errno;
	close(fd);
	return ret;
}

static const char *bind_fix(int err)
{
	switch (err) {
	case EADDRINUSE:
		return "another process holds the port: stop it or choose another address";
	case EACCES:
		return "ports below 1024 need CAP_NET_BIND_SERVICE: choose a higher port";
	case EADDRNOTAVAIL:
		return "the address is not assigned to this host: use 0.0.0.0 or an address of this host";
	case EAFNOSUPPORT:
		return "this kernel has no IPv6: drop the IPv6 address";
	case EMFILE:
	case ENFILE:
		return "raise the descriptor limit (ulimit -n)";
	}
	return "check the address";
}

static int bind_error(const char *flag, const struct eng_addr *a, int err)
{
	char buf[ENG_ADDR_STRLEN];

	eng_log(ENG_LOG_ERROR, "cannot listen", "flag=%s addr=%s err=\"%s\" fix=\"%s\"", flag,
		eng_addr_format(a, buf, sizeof(buf)), strerror(-err), bind_fix(-err));
	return err;
}

static int listeners_open(struct eng_engine *e)
{
	const struct eng_config *cfg = e->cfg;

	for (unsigned k = 0; k < ENG_LISTENER_KINDS; k++) {
		const struct eng_listener_cfg *lc = &cfg->listen[k];
		const char *flag = k == ENG_INBOUND ? "--inbound-addr" : "--outbound-addr";

		for (unsigned i = 0; i < lc->naddrs; i++) {
			int ret = port_is_free(&lc->addrs[i]);

			if (ret < 0)
				return bind_error(flag, &lc->addrs[i], ret);
			e->laddr[k][i] = lc->addrs[i];
			for (unsigned wi = 0; wi < e->nworkers; wi++) {
				struct eng_worker *w = &e->workers[wi];
				struct eng_listener *l = &w->listeners[w->nlisteners];
				int fd = listener_open(&e->laddr[k][i], true);

				if (fd < 0)
					return bind_error(flag, &e->laddr[k][i], fd);
				l->w = w;
				l->fd = fd;
				l->kind = (uint8_t)k;
				l->family = e->laddr[k][i].u.sa.sa_family;
				l->addr = &e->laddr[k][i];
				w->nlisteners++;
			}
		}
	}
	if (cfg->admin_enabled) {
		int ret;

		e->admin_addr = cfg->admin;
		e->admin_fd = listener_open(&e->admin_addr, false);
		if (e->admin_fd < 0)
			return bind_error("--admin-addr", &e->admin_addr, e->admin_fd);
		ret = eng__admin_open(&e->workers[0], e->admin_fd);
		if (ret < 0)
			return ret;
		/* The admin endpoint owns the socket from now on. */
		e->admin_fd = -1;
	}
	return 0;
}

int eng_engine_new(const struct eng_config *cfg, struct eng_engine **out)
{
	struct eng_engine *e;
	unsigned nl = cfg->listen[ENG_INBOUND].naddrs + cfg->listen[ENG_OUTBOUND].naddrs;
	const char *why = NULL;
	int ret;

	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->cfg = cfg;
	e->admin_fd = -1;
	e->uploader_pid = -1;
	e->nworkers = cfg->workers;
	e->start_ms = eng_now_ms();
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->cond, NULL);
	e->workers = calloc(e->nworkers, sizeof(*e->workers));
	e->own_ports = calloc(65536, sizeof(*e->own_ports));
	if (!e->workers || !e->own_ports) {
		ret = -ENOMEM;
		goto err_free;
	}
	for (unsigned i = 0; i < e->nworkers; i++) {
		struct eng_worker *w = &e->workers[i];

		w->eng = e;
		w->cfg = cfg;
		w->idx = i;
		w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		eng_list_init(&w->conns);
		eng_list_init(&w->conn_free);
		eng_list_init(&w->nobuf);
		eng_list_init(&w->tls_hs);
		w->listeners = calloc(nl ? nl : 1, sizeof(*w->listeners));
		if (!w->listeners || w->wake_fd == -1) {
			ret = w->wake_fd == -1 ? -errno : -ENOMEM;
			goto err_free;
		}
		for (unsigned j = 0; j < nl; j++)
			w->listeners[j].fd = -1;
	}
	ret = listeners_open(e);
	if (ret < 0)
		goto err_free;
	e->ktls = tlx_ktls_probe(&why);
	if (e->ktls == 1)
		eng_log(ENG_LOG_INFO, "ktls supported", "ktls=1 used=%s", cfg->ktls ? "yes" : "no");
	else if (cfg->ktls)
		eng_log(ENG_LOG_WARN, "ktls not supported, TLS stays in userspace",
			"ktls=0 why=\"%s\" fix=\"load the tls module (modprobe tls) or use --ktls off\"",
			why ? why : "unknown");
	ret = eng__tls_engine_open(e);
	if (ret < 0)
		goto err_free;
	if (cfg->capture) {
		ret = eng__cap_engine_open(e);
		if (ret < 0)
			goto err_free;
	}
	*out = e;
	return 0;

err_free:
	eng_engine_free(e);
	return ret;
}

int eng_engine_start(struct eng_engine *e)
{
	sigset_t all, old;
	unsigned n = 0;
	int ret = 0;

	/* Workers take no signals: the thread that owns the engine handles them. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	atomic_store(&e->running, e->nworkers);
	for (; n < e->nworkers; n++) {
		ret = -pthread_create(&e->workers[n].thread, NULL, eng__worker_main,
				      &e->workers[n]);
		if (ret < 0)
			break;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	e->threads = true;
	if (n < e->nworkers) {
		eng_log(ENG_LOG_ERROR, "cannot start worker thread", "worker=%u err=\"%s\"", n,
			strerror(-ret));
		/* The threads never created count as finished. */
		atomic_fetch_sub(&e->running, e->nworkers - n);
		e->nworkers = n;
	}

	pthread_mutex_lock(&e->lock);
	while (e->started < n)
		pthread_cond_wait(&e->cond, &e->lock);
	if (ret == 0)
		ret = e->start_err;
	pthread_mutex_unlock(&e->lock);
	if (ret < 0) {
		atomic_store(&e->phase, ENG_PHASE_FORCE);
		for (unsigned i = 0; i < n; i++)
			eng__worker_wake(&e->workers[i]);
		return ret;
	}
	if (e->ring && e->cfg->uploader)
		eng__uploader_start(e);
	atomic_store(&e->ready, true);
	return 0;
}

void eng_engine_drain(struct eng_engine *e, unsigned deadline_ms, const char *why)
{
	int phase = atomic_load(&e->phase);

	while (phase != ENG_PHASE_FORCE) {
		int next = phase == ENG_PHASE_RUN ? ENG_PHASE_DRAIN : ENG_PHASE_FORCE;

		atomic_store_explicit(&e->drain_ms, deadline_ms, memory_order_relaxed);
		if (atomic_compare_exchange_weak(&e->phase, &phase, next)) {
			eng_log(ENG_LOG_INFO,
				next == ENG_PHASE_DRAIN ? "draining" : "closing all connections",
				"why=\"%s\" drain_timeout_ms=%u", why, deadline_ms);
			for (unsigned i = 0; i < e->nworkers; i++)
				eng__worker_wake(&e->workers[i]);
			return;
		}
	}
}

bool eng_engine_is_done(const struct eng_engine *e)
{
	return atomic_load(&((struct eng_engine *)e)->running) == 0;
}

int eng_engine_wait(struct eng_engine *e)
{
	int ret = 0;

	if (!e->threads)
		return 0;
	for (unsigned i = 0; i < e->nworkers; i++) {
		pthread_join(e->workers[i].thread, NULL);
		if (e->workers[i].err && ret == 0)
			ret = e->workers[i].err;
	}
	e->threads = false;
	return ret;
}

void eng_engine_free(struct eng_engine *e)
{
	bool had_ring;

	if (!e)
		return;
	if (e->workers) {
		for (unsigned i = 0; i < e->cfg->workers; i++) {
			struct eng_worker *w = &e->workers[i];

			/* Only workers that never ran still hold their sockets. */
			for (unsigned j = 0; w->listeners && j < w->nlisteners; j++)
				if (w->listeners[j].fd >= 0)
					close(w->listeners[j].fd);
			if (w->admin)
				eng__admin_free(w);
			free(w->listeners);
			if (w->wake_fd >= 0)
				close(w->wake_fd);
		}
		free(e->workers);
	}
	if (e->admin_fd >= 0)
		close(e->admin_fd);
	eng__tls_engine_close(e);
	had_ring = e->ring != NULL;
	if (had_ring && atomic_load(&e->ready) && e->cfg->uploader) {
		/* Stopped first, so the uploader knows no frame will follow what it drains. */
		tap_ring_stop(e->ring);
		eng__uploader_stop(e, ENG_UPLOADER_DRAIN_MS);
		eng__cap_report_left(e);
	}
	eng__cap_engine_close(e);
	pthread_mutex_destroy(&e->lock);
	pthread_cond_destroy(&e->cond);
	free(e->own_ports);
	free(e);
}

int eng_engine_listen_addr(const struct eng_engine *e, enum eng_listener_kind kind, unsigned idx,
			   struct eng_addr *out)
{
	if ((unsigned)kind >= ENG_LISTENER_KINDS || idx >= e->cfg->listen[kind].naddrs)
		return -ENOENT;
	*out = e->laddr[kind][idx];
	return 0;
}

int eng_engine_admin_addr(const struct eng_engine *e, struct eng_addr *out)
{
	if (!e->cfg->admin_enabled)
		return -ENOENT;
	*out = e->admin_addr;
	return 0;
}
