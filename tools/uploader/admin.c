/* SPDX-License-Identifier: Apache-2.0 */
/* The uploader's admin endpoint: GET /metrics (Prometheus text) and /healthz, served from its loop. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tap/frame.h"
#include "tap/ring.h"
#include "upl.h"

#define ADMIN_CLIENTS 8
/* A scraper that has not sent its request in this long is dropped. */
#define ADMIN_CLIENT_TIMEOUT_MS 2000

struct admin_client {
	int fd;
	uint64_t since_ms;
	size_t len;
	char req[2048];
};

struct upl_admin {
	int lfd;
	struct admin_client c[ADMIN_CLIENTS];
};

static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[64];
	const char *colon;
	unsigned long port;
	char *end;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':' || (size_t)(close - s - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, (size_t)(close - s - 1));
		host[close - s - 1] = '\0';
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
	}
	port = strtoul(colon + 1, &end, 10);
	if (colon[1] < '0' || colon[1] > '9' || *end || port > 65535)
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		((struct sockaddr_in *)ss)->sin_family = AF_INET;
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
		*len = sizeof(struct sockaddr_in);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
		*len = sizeof(struct sockaddr_in6);
		return 0;
	}
	return -EINVAL;
}

bool upl_admin_addr_ok(const char *addr)
{
	struct sockaddr_storage ss;
	socklen_t len;

	return parse_addr(addr, &ss, &len) == 0;
}

int upl_admin_open(struct upl *u, const char *addr)
{
	struct sockaddr_storage ss;
	char host[INET6_ADDRSTRLEN];
	struct upl_admin *a;
	socklen_t len;
	int one = 1, ret;

	if (parse_addr(addr, &ss, &len) < 0) {
		upl_log(UPL_LOG_ERR, "invalid admin address",
			"addr=%s accepted=\"IP:PORT, [IPv6]:PORT\"", addr);
		return -EINVAL;
	}
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	for (unsigned i = 0; i < ADMIN_CLIENTS; i++)
		a->c[i].fd = -1;
	a->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (a->lfd == -1) {
		ret = -errno;
		goto err_free;
	}
	setsockopt(a->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(a->lfd, (struct sockaddr *)&ss, len) == -1 || listen(a->lfd, 16) == -1 ||
	    getsockname(a->lfd, (struct sockaddr *)&ss, &len) == -1) {
		ret = -errno;
		goto err_close;
	}
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
	else
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
	upl_log(UPL_LOG_INFO, "admin endpoint",
		ss.ss_family == AF_INET ? "addr=%s:%u" : "addr=[%s]:%u", host,
		ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port :
						((struct sockaddr_in6 *)&ss)->sin6_port));
	u->admin = a;
	return 0;

err_close:
	close(a->lfd);
err_free:
	free(a);
	upl_log(UPL_LOG_ERR, "cannot open the admin endpoint", "addr=%s err=\"%s\"", addr,
		strerror(-ret));
	return ret;
}

void upl_admin_close(struct upl *u)
{
	struct upl_admin *a = u->admin;

	if (!a)
		return;
	for (unsigned i = 0; i < ADMIN_CLIENTS; i++)
		if (a->c[i].fd >= 0)
			close(a->c[i].fd);
	close(a->lfd);
	free(a);
	u->admin = NULL;
}

unsigned upl_admin_fds(struct upl *u, struct pollfd *fds, unsigned max)
{
	struct upl_admin *a = u->admin;
	uint64_t now = upl_now_ms();
	unsigned n = 0;

	if (!a || max == 0)
		return 0;
	fds[n++] = (struct pollfd){ .fd = a->lfd, .events = POLLIN };
	for (unsigned i = 0; i < ADMIN_CLIENTS && n < max; i++) {
		struct admin_client *c = &a->c[i];

		if (c->fd < 0)
			continue;
		if (now - c->since_ms > ADMIN_CLIENT_TIMEOUT_MS) {
			close(c->fd);
			c->fd = -1;
			continue;
		}
		fds[n++] = (struct pollfd){ .fd = c->fd, .events = POLLIN };
	}
	return n;
}

/* The first frame time still in the ring (read, not released) or the spool, Unix ms; 0: none. */
static uint64_t oldest_unshipped_ms(struct upl *u)
{
	uint64_t oldest = upl_spool_oldest_ms(u->spool);

	for (unsigned i = 0; u->ring && i < tap_ring_count(u->ring); i++) {
		uint64_t pos = tap_ring_tail(u->ring, i);
		const void *p;
		struct tap_frame f;
		uint32_t len;
		size_t used;

		/* The consumer's own tail: the producer does not write there until we release it. */
		if (pos == tap_ring_head(u->ring, i) ||
		    tap_ring_next(u->ring, i, &pos, &p, &len) != 1 ||
		    tap_frame_decode(u->dec, p, len, &used, &f, NULL) != 0)
			continue;
		if (f.ts_ns && (!oldest || f.ts_ns / 1000000 < oldest))
			oldest = f.ts_ns / 1000000;
	}
	return oldest;
}

/* Prometheus label value: backslash, quote and newline escaped. */
static void label_escape(const char *in, char *out, size_t len)
{
	size_t o = 0;

	for (; *in && o + 3 < len; in++) {
		if (*in == '\\' || *in == '"') {
			out[o++] = '\\';
			out[o++] = *in;
		} else if (*in == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else {
			out[o++] = *in;
		}
	}
	out[o] = '\0';
}

static size_t render_metrics(struct upl *u, char *buf, size_t cap)
{
	uint64_t produced = 0, dropped = 0, used = 0, oldest = oldest_unshipped_ms(u);
	uint64_t now = upl_unix_ms();
	char err[600];
	const char *sink = u->o.dest.kind == TAP_SINK_FILE  ? "file" :
			   u->o.dest.kind == TAP_SINK_KAFKA ? "kafka" :
							      "http";
	int n;

	for (unsigned i = 0; u->ring && i < tap_ring_count(u->ring); i++) {
		struct tap_ring_stats st;

		tap_ring_stats(u->ring, i, &st);
		produced += st.frames;
		dropped += st.dropped_frames;
		used += st.head - st.tail;
	}
	label_escape(u->m.last_error, err, sizeof(err));
	n = snprintf(
		buf, cap,
		"# HELP sidetap_uploader_frames_shipped_total Frames the sink acknowledged (file: written and fsync'd).\n"
		"# TYPE sidetap_uploader_frames_shipped_total counter\n"
		"sidetap_uploader_frames_shipped_total{sink=\"%s\"} %lu\n"
		"# HELP sidetap_uploader_bytes_shipped_total Bytes of frames the sink acknowledged.\n"
		"# TYPE sidetap_uploader_bytes_shipped_total counter\n"
		"sidetap_uploader_bytes_shipped_total{sink=\"%s\"} %lu\n"
		"# HELP sidetap_uploader_batches_shipped_total Batches (requests, segments) the sink acknowledged.\n"
		"# TYPE sidetap_uploader_batches_shipped_total counter\n"
		"sidetap_uploader_batches_shipped_total{sink=\"%s\"} %lu\n"
		"# HELP sidetap_uploader_batches_retried_total Attempts that failed (5xx, 429, timeouts, broker errors) and were made again.\n"
		"# TYPE sidetap_uploader_batches_retried_total counter\n"
		"sidetap_uploader_batches_retried_total{sink=\"%s\"} %lu\n"
		"# HELP sidetap_uploader_batches_rejected_total Batches the sink refused for good, set aside.\n"
		"# TYPE sidetap_uploader_batches_rejected_total counter\n"
		"sidetap_uploader_batches_rejected_total{sink=\"%s\"} %lu\n"
		"# HELP sidetap_uploader_frames_rejected_total Frames in the batches set aside.\n"
		"# TYPE sidetap_uploader_frames_rejected_total counter\n"
		"sidetap_uploader_frames_rejected_total{sink=\"%s\"} %lu\n"
		"# HELP sidetap_uploader_frames_spooled_total Frames written to the spool.\n"
		"# TYPE sidetap_uploader_frames_spooled_total counter\n"
		"sidetap_uploader_frames_spooled_total %lu\n"
		"# HELP sidetap_uploader_spool_bytes Bytes waiting in the spool.\n"
		"# TYPE sidetap_uploader_spool_bytes gauge\n"
		"sidetap_uploader_spool_bytes %lu\n"
		"# HELP sidetap_uploader_spool_files Batches waiting in the spool.\n"
		"# TYPE sidetap_uploader_spool_files gauge\n"
		"sidetap_uploader_spool_files %u\n"
		"# HELP sidetap_uploader_spool_limit_bytes What the spool may hold (0: no spool).\n"
		"# TYPE sidetap_uploader_spool_limit_bytes gauge\n"
		"sidetap_uploader_spool_limit_bytes %lu\n"
		"# HELP sidetap_uploader_spool_full 1 while the spool is full; the label is the --spool-full policy (stop: draining stops, the ring drops the newest frames).\n"
		"# TYPE sidetap_uploader_spool_full gauge\n"
		"sidetap_uploader_spool_full{policy=\"%s\"} %d\n"
		"# HELP sidetap_uploader_spool_full_total Times the spool became full.\n"
		"# TYPE sidetap_uploader_spool_full_total counter\n"
		"sidetap_uploader_spool_full_total %lu\n"
		"# HELP sidetap_uploader_spool_dropped_frames_total Frames deleted from the full spool, never shipped (--spool-full drop-oldest).\n"
		"# TYPE sidetap_uploader_spool_dropped_frames_total counter\n"
		"sidetap_uploader_spool_dropped_frames_total %lu\n"
		"# HELP sidetap_uploader_spool_dropped_batches_total Batches deleted from the full spool (--spool-full drop-oldest).\n"
		"# TYPE sidetap_uploader_spool_dropped_batches_total counter\n"
		"sidetap_uploader_spool_dropped_batches_total %lu\n"
		"# HELP sidetap_uploader_oldest_unshipped_age_seconds Age of the oldest frame not yet acknowledged (ring or spool; 0: none).\n"
		"# TYPE sidetap_uploader_oldest_unshipped_age_seconds gauge\n"
		"sidetap_uploader_oldest_unshipped_age_seconds %.3f\n"
		"# HELP sidetap_uploader_inflight_batches Batches the sink has and has not answered yet.\n"
		"# TYPE sidetap_uploader_inflight_batches gauge\n"
		"sidetap_uploader_inflight_batches %u\n"
		"# HELP sidetap_uploader_ring_frames_total Frames the proxy wrote into the ring (this generation).\n"
		"# TYPE sidetap_uploader_ring_frames_total counter\n"
		"sidetap_uploader_ring_frames_total %lu\n"
		"# HELP sidetap_uploader_ring_dropped_frames_total Frames the proxy dropped because the ring was full.\n"
		"# TYPE sidetap_uploader_ring_dropped_frames_total counter\n"
		"sidetap_uploader_ring_dropped_frames_total %lu\n"
		"# HELP sidetap_uploader_ring_used_bytes Bytes in the ring not yet released by the uploader.\n"
		"# TYPE sidetap_uploader_ring_used_bytes gauge\n"
		"sidetap_uploader_ring_used_bytes %lu\n"
		"# HELP sidetap_uploader_records_corrupt_total Ring records that were not records (skipped).\n"
		"# TYPE sidetap_uploader_records_corrupt_total counter\n"
		"sidetap_uploader_records_corrupt_total %lu\n"
		"# HELP sidetap_uploader_frames_invalid_total Ring records that were not valid frames (not shipped).\n"
		"# TYPE sidetap_uploader_frames_invalid_total counter\n"
		"sidetap_uploader_frames_invalid_total %lu\n"
		"# HELP sidetap_uploader_last_error_timestamp_seconds When the last error happened (0: none); the label says what it was.\n"
		"# TYPE sidetap_uploader_last_error_timestamp_seconds gauge\n"
		"sidetap_uploader_last_error_timestamp_seconds{error=\"%s\"} %.3f\n",
		sink, (unsigned long)u->m.frames_shipped, sink, (unsigned long)u->m.bytes_shipped,
		sink, (unsigned long)u->m.batches_shipped, sink,
		(unsigned long)u->m.batches_retried, sink, (unsigned long)u->m.batches_rejected,
		sink, (unsigned long)u->m.frames_rejected, (unsigned long)u->m.frames_spooled,
		(unsigned long)upl_spool_bytes(u->spool), upl_spool_files(u->spool),
		(unsigned long)upl_spool_limit(u->spool),
		u->o.spool_full == UPL_SPOOL_FULL_DROP_OLDEST ? "drop-oldest" : "stop",
		upl_spool_is_full(u->spool) ? 1 : 0, (unsigned long)u->m.spool_full_total,
		(unsigned long)u->m.spool_dropped_frames, (unsigned long)u->m.spool_dropped_batches,
		oldest && oldest < now ? (double)(now - oldest) / 1000.0 : 0.0, u->inflight,
		(unsigned long)produced, (unsigned long)dropped, (unsigned long)used,
		(unsigned long)u->m.corrupt, (unsigned long)u->m.invalid, err,
		(double)u->m.last_error_unix_ms / 1000.0);
	return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

static void respond(struct upl *u, struct admin_client *c)
{
	static char body[16384];
	char head[256];
	const char *status = "200 OK", *type = "text/plain; version=0.0.4";
	size_t blen;
	int hlen;

	if (strncmp(c->req, "GET /metrics ", 13) == 0 ||
	    strncmp(c->req, "GET /metrics?", 13) == 0) {
		blen = render_metrics(u, body, sizeof(body));
	} else if (strncmp(c->req, "GET /healthz ", 13) == 0) {
		blen = (size_t)snprintf(body, sizeof(body), "ok\n");
		type = "text/plain";
	} else {
		status = "404 Not Found";
		type = "text/plain";
		blen = (size_t)snprintf(body, sizeof(body),
					"not found: GET /metrics or /healthz\n");
	}
	hlen = snprintf(
		head, sizeof(head),
		"HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
		status, type, blen);
	/* Small answers on loopback: the socket buffer takes them whole, or the scraper retries. */
	if (send(c->fd, head, (size_t)hlen, MSG_NOSIGNAL) == hlen)
		(void)!send(c->fd, body, blen, MSG_NOSIGNAL);
}

void upl_admin_serve(struct upl *u, const struct pollfd *fds, unsigned n)
{
	struct upl_admin *a = u->admin;

	if (!a)
		return;
	for (unsigned k = 1; k < n; k++) {
		struct admin_client *c = NULL;
		ssize_t got;

		if (!fds[k].revents)
			continue;
		for (unsigned i = 0; i < ADMIN_CLIENTS; i++)
			if (a->c[i].fd == fds[k].fd)
				c = &a->c[i];
		if (!c)
			continue;
		got = recv(c->fd, c->req + c->len, sizeof(c->req) - 1 - c->len, 0);
		if (got > 0) {
			c->len += (size_t)got;
			c->req[c->len] = '\0';
			if (!strstr(c->req, "\r\n\r\n") && !strstr(c->req, "\n\n") &&
			    c->len < sizeof(c->req) - 1)
				continue;
			respond(u, c);
		} else if (got == -1 && (errno == EAGAIN || errno == EINTR)) {
			continue;
		}
		close(c->fd);
		c->fd = -1;
	}
	if (n && (fds[0].revents & POLLIN)) {
		for (;;) {
			int fd = accept4(a->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
			struct admin_client *c = NULL;

			if (fd == -1)
				break;
			for (unsigned i = 0; i < ADMIN_CLIENTS && !c; i++)
				if (a->c[i].fd < 0)
					c = &a->c[i];
			if (!c) {
				close(fd);
				continue;
			}
			c->fd = fd;
			c->len = 0;
			c->since_ms = upl_now_ms();
		}
	}
}
