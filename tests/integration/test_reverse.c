/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration tests of the sidetap binary in reverse mode on loopback, against
 * real peers: curl, Python's http.server, nginx, and C clients and servers
 * that move a gigabyte each way or hold a thousand connections at once.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "th.h"

static char upstream_arg[64];

static void set_upstream(uint16_t port)
{
	snprintf(upstream_arg, sizeof(upstream_arg), "--inbound-upstream=127.0.0.1:%u", port);
}

/* Starts Python's http.server on an ephemeral port serving <dir>; returns its port. */
static uint16_t python_http(struct th_proc *p, const char *dir)
{
	char *const argv[] = {
		"/usr/bin/python3", "-u",	   "-m",	"http.server", "--bind",
		"127.0.0.1",	    "--directory", (char *)dir, "0",	       NULL
	};
	char *log, *at;
	uint16_t port = 0;

	cr_assert_eq(th_spawn(p, argv, NULL), 0);
	cr_assert(th_proc_log_wait(p, "Serving HTTP", 10000), "http.server did not start");
	log = th_proc_log(p);
	at = strstr(log, " port ");
	if (at)
		port = (uint16_t)atoi(at + 6);
	free(log);
	cr_assert_gt(port, 0);
	return port;
}

static void write_file(const char *path, size_t len, uint64_t seed)
{
	FILE *f = fopen(path, "w");
	char buf[4096];

	cr_assert(f);
	for (size_t off = 0; off < len; off += sizeof(buf)) {
		size_t n = len - off < sizeof(buf) ? len - off : sizeof(buf);

		th_pattern(seed, off, buf, sizeof(buf));
		fwrite(buf, 1, n, f);
	}
	fclose(f);
}

Test(reverse, curl_through_sidetap_to_python_http_server, .timeout = 60)
{
	struct th_proc py;
	struct th_sidetap st;
	const char *dir = th_tmpdir();
	char path[256];

	if (!th_have("curl"))
		cr_skip_test("curl is not installed (cmake/deps.sh test)");
	snprintf(path, sizeof(path), "%s/small.txt", dir);
	write_file(path, 4096, 1);
	snprintf(path, sizeof(path), "%s/big.bin", dir);
	write_file(path, 3 << 20, 2);
	set_upstream(python_http(&py, dir));
	cr_assert_eq(th_sidetap_start(
			     &st, NULL,
			     (const char *const[]){ "--inbound-mode=reverse", upstream_arg, NULL }),
		     0);
	for (int i = 0; i < 3; i++) {
		const char *name = (const char *[]){ "small.txt", "big.bin", "small.txt" }[i];

		cr_assert_eq(
			th_sh("curl -sf -o %s/got http://127.0.0.1:%u/%s && cmp -s %s/got %s/%s",
			      dir, st.inbound_port, name, dir, dir, name),
			0, "curl through sidetap: %s differs", name);
	}
	cr_assert_eq(
		th_sh("curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%u/missing | grep -qx 404",
		      st.inbound_port),
		0, "404 not passed through");
	cr_assert_geq(th_metric(st.admin_port,
				"sidetap_connections_accepted_total{listener=\"inbound\"}"),
		      4);
	cr_assert_eq(th_proc_stop(&st.proc, SIGTERM, 5000), 0);
	th_proc_stop(&py, SIGTERM, 2000);
}

Test(reverse, curl_keepalive_through_sidetap_to_nginx, .timeout = 60)
{
	struct th_proc ng;
	struct th_sidetap st;
	const char *dir = th_tmpdir();
	char conf[256], urls[4096] = "";
	uint16_t port;
	int fd;
	FILE *f;

	if (!th_have("nginx") && access("/usr/sbin/nginx", X_OK) != 0)
		cr_skip_test("nginx is not installed (cmake/deps.sh test)");
	if (!th_have("curl"))
		cr_skip_test("curl is not installed (cmake/deps.sh test)");
	fd = th_listen(&port, 1);
	close(fd);
	snprintf(conf, sizeof(conf), "%s/nginx.conf", dir);
	f = fopen(conf, "w");
	cr_assert(f);
	fprintf(f,
		"worker_processes 1; daemon off; pid %s/nginx.pid; error_log %s/nginx-error.log;\n"
		"events { worker_connections 256; }\n"
		"http { access_log off; client_body_temp_path %s; proxy_temp_path %s;\n"
		"  fastcgi_temp_path %s; uwsgi_temp_path %s; scgi_temp_path %s;\n"
		"  server { listen 127.0.0.1:%u; location / { return 200 \"hello $request_uri\\n\"; } } }\n",
		dir, dir, dir, dir, dir, dir, dir, port);
	fclose(f);
	cr_assert_eq(th_spawn(&ng, (char *const[]){ "/usr/sbin/nginx", "-c", conf, NULL }, NULL),
		     0);
	for (int i = 0; i < 50 && (fd = th_connect(port)) < 0; i++)
		usleep(50000);
	cr_assert_geq(fd, 0, "nginx did not start");
	close(fd);
	set_upstream(port);
	cr_assert_eq(th_sidetap_start(
			     &st, NULL,
			     (const char *const[]){ "--inbound-mode=reverse", upstream_arg, NULL }),
		     0);
	/* Twenty requests on one keep-alive connection (curl reuses it for a URL list). */
	for (int i = 0; i < 20; i++)
		snprintf(urls + strlen(urls), sizeof(urls) - strlen(urls),
			 " http://127.0.0.1:%u/r%d", st.inbound_port, i);
	cr_assert_eq(th_sh("curl -sf %s > %s/keepalive.out", urls, dir), 0);
	for (int i = 0; i < 20; i++) {
		char want[64];

		snprintf(want, sizeof(want), "grep -qx 'hello /r%d' %s/keepalive.out", i, dir);
		cr_assert_eq(th_sh("%s", want), 0, "response %d missing", i);
	}
	cr_assert_eq(th_metric(st.admin_port,
			       "sidetap_connections_accepted_total{listener=\"inbound\"}"),
		     1, "curl should have reused one connection");
	cr_assert_eq(th_proc_stop(&st.proc, SIGTERM, 5000), 0);
	th_proc_stop(&ng, SIGQUIT, 3000);
}

/* One end of a stream that sends <len> bytes of pattern <seed> and checksums what it receives. */
struct end {
	int fd;
	uint64_t len;
	uint64_t seed;
	uint64_t sent_sum, got_sum, got;
	int err;
};

static void *end_send(void *arg)
{
	struct end *e = arg;
	char *buf = malloc(1 << 16);

	for (uint64_t off = 0; off < e->len && !e->err; off += 1 << 16) {
		th_pattern(e->seed, off, buf, 1 << 16);
		e->sent_sum = th_sum(e->sent_sum, buf, 1 << 16);
		if (th_write_all(e->fd, buf, 1 << 16) < 0)
			e->err = -EIO;
	}
	shutdown(e->fd, SHUT_WR);
	free(buf);
	return NULL;
}

/* Receives until EOF; sums 8-byte words in stream order whatever the read sizes. */
static void end_recv(struct end *e)
{
	char *buf = malloc(1 << 16);
	size_t have = 0;

	for (;;) {
		ssize_t n = recv(e->fd, buf + have, (1 << 16) - have, 0);

		if (n <= 0) {
			if (n < 0)
				e->err = -errno;
			break;
		}
		have += (size_t)n;
		e->got += (uint64_t)n;
		e->got_sum = th_sum(e->got_sum, buf, have & ~(size_t)7);
		memmove(buf, buf + (have & ~(size_t)7), have & 7);
		have &= 7;
	}
	free(buf);
}

static void *end_run(void *arg)
{
	struct end *e = arg;
	pthread_t tx;

	pthread_create(&tx, NULL, end_send, e);
	end_recv(e);
	pthread_join(tx, NULL);
	return NULL;
}

static void gigabyte_each_way(const char *forward)
{
	struct th_sidetap st;
	struct end c = { .len = 1ULL << 30, .seed = 101 }, u = { .len = 1ULL << 30, .seed = 202 };
	pthread_t ct, ut;
	uint16_t port;
	int lfd = th_listen(&port, 4);

	set_upstream(port);
	cr_assert_eq(th_sidetap_start(&st, NULL,
				      (const char *const[]){ "--inbound-mode=reverse", upstream_arg,
							     forward, NULL }),
		     0);
	c.fd = th_connect(st.inbound_port);
	cr_assert_geq(c.fd, 0);
	u.fd = th_accept(lfd, 5000);
	cr_assert_geq(u.fd, 0);
	pthread_create(&ct, NULL, end_run, &c);
	pthread_create(&ut, NULL, end_run, &u);
	pthread_join(ct, NULL);
	pthread_join(ut, NULL);
	cr_assert_eq(c.err, 0, "%s: client error %s", forward, strerror(-c.err));
	cr_assert_eq(u.err, 0, "%s: upstream error %s", forward, strerror(-u.err));
	cr_assert_eq(u.got, c.len, "%s: upstream got %lu of %lu bytes", forward,
		     (unsigned long)u.got, (unsigned long)c.len);
	cr_assert_eq(c.got, u.len, "%s: client got %lu of %lu bytes", forward, (unsigned long)c.got,
		     (unsigned long)u.len);
	cr_assert_eq(u.got_sum, c.sent_sum, "%s: client->upstream checksum differs", forward);
	cr_assert_eq(c.got_sum, u.sent_sum, "%s: upstream->client checksum differs", forward);
	if (strcmp(forward, "--forward=splice") == 0)
		cr_assert_geq(th_metric(st.admin_port,
					"sidetap_splice_bytes_total{listener=\"inbound\"}"),
			      (long long)(2ULL << 30) - (1 << 20), "splice path not used");
	if (strcmp(forward, "--forward=copy") == 0)
		cr_assert_eq(th_metric(st.admin_port,
				       "sidetap_splice_bytes_total{listener=\"inbound\"}"),
			     0, "copy path spliced");
	close(c.fd);
	close(u.fd);
	close(lfd);
	cr_assert_eq(th_proc_stop(&st.proc, SIGTERM, 5000), 0);
}

Test(reverse, one_gib_each_way_intact_on_the_splice_path, .timeout = 120)
{
	gigabyte_each_way("--forward=splice");
}

Test(reverse, one_gib_each_way_intact_on_the_copy_path, .timeout = 120)
{
	gigabyte_each_way("--forward=copy");
}

Test(reverse, one_gib_each_way_intact_on_the_auto_path, .timeout = 120)
{
	gigabyte_each_way("--forward=auto");
}

#define NCONNS 1000

struct echo_server {
	int lfd;
	int done;
};

/* Accepts NCONNS connections and echoes on each until it closes. */
static void *echo_run(void *arg)
{
	struct echo_server *s = arg;
	struct pollfd *p = calloc(NCONNS + 1, sizeof(*p));
	unsigned n = 1, closed = 0;
	char buf[256];

	p[0].fd = s->lfd;
	p[0].events = POLLIN;
	while (closed < NCONNS) {
		if (poll(p, n, 10000) <= 0)
			break;
		if (p[0].revents & POLLIN && n <= NCONNS) {
			int fd = accept(s->lfd, NULL, NULL);

			if (fd >= 0) {
				p[n].fd = fd;
				p[n++].events = POLLIN;
			}
		}
		for (unsigned i = 1; i < n; i++) {
			ssize_t r;

			if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			r = recv(p[i].fd, buf, sizeof(buf), 0);
			if (r > 0) {
				th_write_all(p[i].fd, buf, (size_t)r);
			} else {
				close(p[i].fd);
				p[i].fd = -1;
				closed++;
			}
		}
	}
	s->done = (int)closed;
	free(p);
	return NULL;
}

Test(reverse, thousand_concurrent_connections_all_complete, .timeout = 60)
{
	struct rlimit rl = { 8192, 8192 };
	struct echo_server srv;
	struct th_sidetap st;
	pthread_t th;
	int *fds = calloc(NCONNS, sizeof(int));
	unsigned ok = 0;
	uint16_t port;

	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		cr_skip_test("cannot raise the descriptor limit to 8192 for 1000 connections");
	srv.lfd = th_listen(&port, 4096);
	set_upstream(port);
	pthread_create(&th, NULL, echo_run, &srv);
	cr_assert_eq(th_sidetap_start(
			     &st, NULL,
			     (const char *const[]){ "--inbound-mode=reverse", upstream_arg, NULL }),
		     0);
	/* All open at once, then each one talks. */
	for (unsigned i = 0; i < NCONNS; i++) {
		fds[i] = th_connect(st.inbound_port);
		cr_assert_geq(fds[i], 0, "connection %u: %s", i, strerror(-fds[i]));
	}
	for (unsigned i = 0; i < NCONNS; i++) {
		char msg[32], got[32];
		int len = snprintf(msg, sizeof(msg), "conn %u\n", i);

		cr_assert_eq(th_write_all(fds[i], msg, (size_t)len), 0);
		if (th_read_full(fds[i], got, (size_t)len, 5000) == len &&
		    memcmp(got, msg, (size_t)len) == 0)
			ok++;
	}
	cr_assert_eq(ok, NCONNS, "only %u of %u connections echoed", ok, NCONNS);
	cr_assert_eq(th_metric(st.admin_port, "sidetap_connections_active{listener=\"inbound\"}"),
		     NCONNS);
	for (unsigned i = 0; i < NCONNS; i++)
		close(fds[i]);
	pthread_join(th, NULL);
	cr_assert_eq(srv.done, NCONNS, "upstream saw %d of %d connections end", srv.done, NCONNS);
	cr_assert_eq(th_proc_stop(&st.proc, SIGTERM, 5000), 0);
	close(srv.lfd);
	free(fds);
}

Test(reverse, upstream_refused_client_closed_within_a_second, .timeout = 30)
{
	struct th_sidetap st;
	uint64_t t0;
	uint16_t port;
	int fd = th_listen(&port, 1);

	close(fd);
	set_upstream(port);
	cr_assert_eq(th_sidetap_start(
			     &st, NULL,
			     (const char *const[]){ "--inbound-mode=reverse", upstream_arg, NULL }),
		     0);
	t0 = th_now_ms();
	/* curl: 56 (reset) or 52 (empty reply), never a hang. */
	cr_assert_neq(th_sh("curl -s -m 5 http://127.0.0.1:%u/", st.inbound_port), 0);
	cr_assert_lt(th_now_ms() - t0, 1000, "client waited %lu ms",
		     (unsigned long)(th_now_ms() - t0));
	cr_assert_eq(th_metric(st.admin_port, "sidetap_connect_errors_total{listener=\"inbound\"}"),
		     1);
	cr_assert_eq(th_proc_stop(&st.proc, SIGTERM, 5000), 0);
}

Test(reverse, upstream_that_never_answers_hits_the_idle_timeout, .timeout = 30)
{
	struct th_sidetap st;
	uint64_t t0, dt;
	uint16_t port;
	int lfd = th_listen(&port, 8), u, c, ret;

	set_upstream(port);
	cr_assert_eq(th_sidetap_start(&st, NULL,
				      (const char *const[]){ "--inbound-mode=reverse", upstream_arg,
							     "--idle-timeout=500", NULL }),
		     0);
	c = th_connect(st.inbound_port);
	cr_assert_geq(c, 0);
	u = th_accept(lfd, 2000);
	cr_assert_geq(u, 0);
	t0 = th_now_ms();
	cr_assert_eq(th_write_all(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27), 0);
	/* The upstream reads nothing and says nothing. */
	ret = th_wait_close(c, 5000, NULL);
	dt = th_now_ms() - t0;
	cr_assert(ret == 0 || ret == -ECONNRESET, "client still open after %lu ms",
		  (unsigned long)dt);
	cr_assert_geq(dt, 450);
	cr_assert_lt(dt, 1500, "idle timeout took %lu ms", (unsigned long)dt);
	cr_assert_eq(th_wait_close(u, 1000, NULL), 0, "upstream side not closed");
	cr_assert_eq(th_metric(st.admin_port, "sidetap_idle_timeouts_total{listener=\"inbound\"}"),
		     1);
	close(c);
	close(u);
	close(lfd);
	cr_assert_eq(th_proc_stop(&st.proc, SIGTERM, 5000), 0);
}

/* Answers one request after <delay> ms with <len> bytes, as a slow backend would. */
struct slow_server {
	int lfd;
	int delay_ms;
	size_t len;
	int got_request;
};

static void *slow_run(void *arg)
{
	struct slow_server *s = arg;
	char req[1024], hdr[128];
	char *body = malloc(s->len);
	int fd = th_accept(s->lfd, 10000);

	if (fd >= 0 && th_read_full(fd, req, 16, 5000) == 16) {
		__atomic_store_n(&s->got_request, 1, __ATOMIC_RELEASE);
		usleep((useconds_t)s->delay_ms * 1000);
		memset(body, 'z', s->len);
		snprintf(hdr, sizeof(hdr), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n",
			 s->len);
		th_write_all(fd, hdr, strlen(hdr));
		th_write_all(fd, body, s->len);
		th_wait_close(fd, 5000, NULL);
		close(fd);
	}
	free(body);
	return NULL;
}

Test(reverse, sigterm_lets_requests_in_flight_complete_then_exits_0, .timeout = 30)
{
	struct slow_server srv = { .delay_ms = 1500, .len = 1 << 20 };
	struct th_sidetap st;
	struct th_proc curl;
	char out[256], url[128], *body;
	uint16_t port;
	pthread_t th;

	srv.lfd = th_listen(&port, 8);
	set_upstream(port);
	pthread_create(&th, NULL, slow_run, &srv);
	cr_assert_eq(th_sidetap_start(&st, NULL,
				      (const char *const[]){ "--inbound-mode=reverse", upstream_arg,
							     "--drain-timeout=10000", NULL }),
		     0);
	snprintf(out, sizeof(out), "%s/slow.out", th_tmpdir());
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/slow", st.inbound_port);
	cr_assert_eq(th_spawn(&curl, (char *const[]){ "curl", "-sf", "-o", out, url, NULL }, NULL),
		     0);
	for (int i = 0; i < 500 && !__atomic_load_n(&srv.got_request, __ATOMIC_ACQUIRE); i++)
		usleep(10000);
	cr_assert(srv.got_request, "request never reached the upstream");
	kill(st.proc.pid, SIGTERM);
	usleep(200000);
	/* Draining: not ready any more, new connections refused, the request goes on. */
	cr_assert_eq(th_http(st.admin_port, "GET", "/readyz", &body, NULL), 503);
	free(body);
	cr_assert_lt(th_connect(st.inbound_port), 0, "still accepting after SIGTERM");
	cr_assert_eq(th_proc_wait(&curl, 10000), 0, "the request in flight failed");
	cr_assert_eq(th_sh("test $(stat -c %%s %s) -eq %d", out, 1 << 20), 0, "response truncated");
	cr_assert_eq(th_proc_wait(&st.proc, 5000), 0, "sidetap did not exit 0 after draining");
	pthread_join(th, NULL);
	close(srv.lfd);
}

Test(reverse, second_sigterm_closes_everything_at_once, .timeout = 30)
{
	struct th_sidetap st;
	uint16_t port;
	int lfd = th_listen(&port, 8), c, u;
	uint64_t t0;

	set_upstream(port);
	cr_assert_eq(th_sidetap_start(&st, NULL,
				      (const char *const[]){ "--inbound-mode=reverse", upstream_arg,
							     "--drain-timeout=60000", NULL }),
		     0);
	c = th_connect(st.inbound_port);
	u = th_accept(lfd, 2000);
	cr_assert_geq(u, 0);
	t0 = th_now_ms();
	kill(st.proc.pid, SIGTERM);
	usleep(200000);
	cr_assert_eq(th_proc_wait(&st.proc, 100), -ETIMEDOUT, "exited with a connection open");
	kill(st.proc.pid, SIGTERM);
	cr_assert_eq(th_proc_wait(&st.proc, 3000), 0);
	cr_assert_lt(th_now_ms() - t0, 3000);
	cr_assert_neq(th_wait_close(c, 1000, NULL), -ETIMEDOUT, "client left open");
	close(c);
	close(u);
	close(lfd);
}
