/* SPDX-License-Identifier: Apache-2.0 */
/* Admin HTTP endpoint on worker 0's loop: /healthz, /readyz, /metrics, POST /shutdown. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine_int.h"

#define ENG_ADMIN_REQ_MAX 4096

struct eng_admin_conn {
	struct eng_list link;
	struct eng_admin *a;
	int fd;
	unsigned inflight;
	bool closing;
	uint64_t deadline_ms;
	char *resp;
	size_t resp_len, resp_off;
	size_t len;
	char req[ENG_ADMIN_REQ_MAX];
};

struct eng_admin {
	struct eng_worker *w;
	int fd;
	bool armed;
	struct eng_list conns;
	unsigned nconns;
};

static void accept_arm(struct eng_admin *a)
{
	struct io_uring_sqe *sqe = eng__sqe(a->w);

	io_uring_prep_multishot_accept(sqe, a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, eng__ud(ENG_OP_ADMIN_ACCEPT, a, 0));
	a->armed = true;
}

int eng__admin_open(struct eng_worker *w, int fd)
{
	struct eng_admin *a = calloc(1, sizeof(*a));

	if (!a)
		return -ENOMEM;
	a->w = w;
	a->fd = fd;
	eng_list_init(&a->conns);
	w->admin = a;
	return 0;
}

static void conn_free(struct eng_admin_conn *ac)
{
	if (ac->closing && ac->inflight == 0) {
		eng_list_del(&ac->link);
		ac->a->nconns--;
		close(ac->fd);
		free(ac->resp);
		free(ac);
	}
}

static void conn_close(struct eng_admin_conn *ac)
{
	if (!ac->closing) {
		ac->closing = true;
		if (ac->inflight) {
			struct io_uring_sqe *sqe = eng__sqe(ac->a->w);

			io_uring_prep_cancel_fd(sqe, ac->fd, IORING_ASYNC_CANCEL_ALL);
			io_uring_sqe_set_data64(sqe, 0);
		}
	}
	conn_free(ac);
}

static void recv_arm(struct eng_admin_conn *ac)
{
	struct io_uring_sqe *sqe = eng__sqe(ac->a->w);

	io_uring_prep_recv(sqe, ac->fd, ac->req + ac->len, sizeof(ac->req) - 1 - ac->len, 0);
	io_uring_sqe_set_data64(sqe, eng__ud(ENG_OP_ADMIN_RECV, ac, 0));
	ac->inflight++;
}

static void send_arm(struct eng_admin_conn *ac)
{
	struct io_uring_sqe *sqe = eng__sqe(ac->a->w);

	io_uring_prep_send(sqe, ac->fd, ac->resp + ac->resp_off, ac->resp_len - ac->resp_off,
			   MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, eng__ud(ENG_OP_ADMIN_SEND, ac, 0));
	ac->inflight++;
}

static bool peer_is_loopback(int fd)
{
	struct eng_addr peer;

	peer.len = sizeof(peer.u);
	if (getpeername(fd, &peer.u.sa, &peer.len) == -1)
		return false;
	if (peer.u.sa.sa_family == AF_INET)
		return (ntohl(peer.u.in.sin_addr.s_addr) >> 24) == 127;
	if (peer.u.sa.sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&peer.u.in6.sin6_addr) ||
		       (IN6_IS_ADDR_V4MAPPED(&peer.u.in6.sin6_addr) &&
			peer.u.in6.sin6_addr.s6_addr[12] == 127);
	return false;
}

static void respond(struct eng_admin_conn *ac, int status, const char *reason, const char *ctype,
		    const char *body, size_t body_len, bool head, const char *extra)
{
	char hdr[512];
	int n;

	n = snprintf(
		hdr, sizeof(hdr),
		"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
		status, reason, ctype, body_len, extra ? extra : "");
	ac->resp_len = (size_t)n + (head ? 0 : body_len);
	ac->resp = malloc(ac->resp_len);
	if (!ac->resp) {
		conn_close(ac);
		return;
	}
	memcpy(ac->resp, hdr, (size_t)n);
	if (!head)
		memcpy(ac->resp + n, body, body_len);
	ac->resp_off = 0;
	send_arm(ac);
}

static void respond_text(struct eng_admin_conn *ac, int status, const char *reason,
			 const char *body, bool head, const char *extra)
{
	respond(ac, status, reason, "text/plain; charset=utf-8", body, strlen(body), head, extra);
}

static void handle(struct eng_admin_conn *ac)
{
	struct eng_worker *w = ac->a->w;
	struct eng_engine *e = w->eng;
	char method[16], target[256], *q;
	bool get, head, post;

	eng__stat_add(&w->stats.admin_requests, 1);
	if (sscanf(ac->req, "%15s %255s HTTP/1.%*c", method, target) != 2 || target[0] != '/') {
		respond_text(ac, 400, "Bad Request", "bad request\n", false, NULL);
		return;
	}
	q = strchr(target, '?');
	if (q)
		*q = '\0';
	get = strcmp(method, "GET") == 0;
	head = strcmp(method, "HEAD") == 0;
	post = strcmp(method, "POST") == 0;

	if (strcmp(target, "/healthz") == 0 || strcmp(target, "/readyz") == 0 ||
	    strcmp(target, "/metrics") == 0) {
		if (!get && !head) {
			respond_text(ac, 405, "Method Not Allowed", "use GET\n", false,
				     "Allow: GET, HEAD\r\n");
			return;
		}
		if (target[1] == 'h') {
			respond_text(ac, 200, "OK", "ok\n", head, NULL);
		} else if (target[1] == 'r') {
			bool ready =
				atomic_load(&e->ready) && atomic_load(&e->phase) == ENG_PHASE_RUN;

			if (ready)
				respond_text(ac, 200, "OK", "ready\n", head, NULL);
			else
				respond_text(ac, 503, "Service Unavailable",
					     atomic_load(&e->phase) == ENG_PHASE_RUN ?
						     "starting\n" :
						     "draining\n",
					     head, NULL);
		} else {
			size_t len;
			char *body = eng__metrics_render(e, &len);

			if (!body) {
				respond_text(ac, 500, "Internal Server Error", "out of memory\n",
					     head, NULL);
				return;
			}
			respond(ac, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body,
				len, head, NULL);
			free(body);
		}
		return;
	}
	if (strcmp(target, "/shutdown") == 0) {
		if (!post) {
			respond_text(ac, 405, "Method Not Allowed", "use POST\n", false,
				     "Allow: POST\r\n");
			return;
		}
		if (!peer_is_loopback(ac->fd)) {
			respond_text(ac, 403, "Forbidden",
				     "POST /shutdown is accepted from loopback only\n", false,
				     NULL);
			return;
		}
		respond_text(ac, 202, "Accepted", "draining\n", false, NULL);
		eng_engine_drain(e, w->cfg->drain_timeout_ms, "admin POST /shutdown");
		return;
	}
	respond_text(ac, 404, "Not Found",
		     "not found: try /healthz, /readyz, /metrics, POST /shutdown\n", head, NULL);
}

static void on_accept(struct eng_admin *a, const struct io_uring_cqe *cqe)
{
	struct eng_worker *w = a->w;
	struct eng_admin_conn *ac;

	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		a->armed = false;
		/* After an error (EMFILE...) the next tick re-arms: no busy loop. */
		if (a->fd >= 0 && cqe->res >= 0)
			accept_arm(a);
	}
	if (cqe->res < 0)
		return;
	if (a->nconns >= ENG_ADMIN_CONNS_MAX || !(ac = calloc(1, sizeof(*ac)))) {
		close(cqe->res);
		return;
	}
	ac->a = a;
	ac->fd = cqe->res;
	ac->deadline_ms = w->now_ms + ENG_ADMIN_TIMEOUT_MS;
	eng_list_add_tail(&a->conns, &ac->link);
	a->nconns++;
	recv_arm(ac);
}

static void on_recv(struct eng_admin_conn *ac, int res)
{
	ac->inflight--;
	if (ac->closing || res <= 0) {
		conn_close(ac);
		return;
	}
	ac->len += (size_t)res;
	ac->req[ac->len] = '\0';
	if (strstr(ac->req, "\r\n\r\n") || strstr(ac->req, "\n\n")) {
		handle(ac);
		return;
	}
	if (ac->len >= sizeof(ac->req) - 1) {
		respond_text(ac, 431, "Request Header Fields Too Large", "request too large\n",
			     false, NULL);
		return;
	}
	recv_arm(ac);
}

static void on_send(struct eng_admin_conn *ac, int res)
{
	ac->inflight--;
	if (ac->closing || res <= 0) {
		conn_close(ac);
		return;
	}
	ac->resp_off += (size_t)res;
	if (ac->resp_off < ac->resp_len) {
		send_arm(ac);
		return;
	}
	conn_close(ac);
}

void eng__admin_on_cqe(struct eng_worker *w, enum eng_op op, void *obj,
		       const struct io_uring_cqe *cqe)
{
	(void)w;
	switch (op) {
	case ENG_OP_ADMIN_ACCEPT:
		on_accept(obj, cqe);
		break;
	case ENG_OP_ADMIN_RECV:
		on_recv(obj, cqe->res);
		break;
	case ENG_OP_ADMIN_SEND:
		on_send(obj, cqe->res);
		break;
	default:
		break;
	}
}

void eng__admin_expire(struct eng_worker *w, bool all)
{
	struct eng_admin *a = w->admin;
	struct eng_list *pos, *next;

	if (!a)
		return;
	if (a->fd >= 0 && !a->armed && !all)
		accept_arm(a);
	for (pos = a->conns.next; pos != &a->conns; pos = next) {
		struct eng_admin_conn *ac = eng_list_entry(pos, struct eng_admin_conn, link);

		next = pos->next;
		if (all || w->now_ms >= ac->deadline_ms)
			conn_close(ac);
	}
}

bool eng__admin_busy(const struct eng_worker *w)
{
	return w->admin && w->admin->nconns > 0;
}

void eng__admin_start(struct eng_worker *w)
{
	if (w->admin)
		accept_arm(w->admin);
}

void eng__admin_free(struct eng_worker *w)
{
	struct eng_admin *a = w->admin;

	if (!a)
		return;
	while (!eng_list_empty(&a->conns)) {
		struct eng_admin_conn *ac =
			eng_list_entry(a->conns.next, struct eng_admin_conn, link);

		ac->closing = true;
		ac->inflight = 0;
		conn_free(ac);
	}
	if (a->fd >= 0)
		close(a->fd);
	free(a);
	w->admin = NULL;
}
