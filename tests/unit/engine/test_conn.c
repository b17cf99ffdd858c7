/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of engine/src/conn.c: the connection state machine's edge cases, with
 * the engine running in this process in reverse mode in front of a loopback
 * upstream that each test drives by hand.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "th.h"
#include "th_eng.h"

static const char *const modes[] = { "--forward=copy", "--forward=splice", "--forward=auto" };

struct fixture {
	struct th_eng eng;
	int lfd; /* upstream listener */
	uint16_t port; /* its port */
	char upstream[64];
};

static void start_backlog(struct fixture *f, const char *mode, const char *const extra[],
			  int backlog)
{
	const char *args[32] = { "--inbound-mode=reverse", f->upstream, mode };
	unsigned n = 3;

	f->lfd = th_listen(&f->port, backlog);
	cr_assert_geq(f->lfd, 0);
	snprintf(f->upstream, sizeof(f->upstream), "--inbound-upstream=127.0.0.1:%u", f->port);
	for (unsigned i = 0; extra && extra[i]; i++)
		args[n++] = extra[i];
	args[n] = NULL;
	th_eng_start(&f->eng, args);
}

static void start(struct fixture *f, const char *mode, const char *const extra[])
{
	start_backlog(f, mode, extra, 128);
}

/* Connects a client through sidetap and accepts the upstream side. */
static void pair(struct fixture *f, int *client, int *upstream)
{
	*client = th_connect(f->eng.inbound_port);
	cr_assert_geq(*client, 0, "connect to sidetap: %s", strerror(-*client));
	*upstream = th_accept(f->lfd, 2000);
	cr_assert_geq(*upstream, 0, "sidetap did not connect upstream");
}

static long long metric(struct fixture *f, const char *series)
{
	return th_metric(f->eng.admin_port, series);
}

Test(eng_conn, upstream_refused_resets_client_within_a_second)
{
	struct fixture f;
	uint64_t t0;
	int c, ret;

	start(&f, "--forward=auto", NULL);
	close(f.lfd); /* nothing listens on the upstream port now */
	c = th_connect(f.eng.inbound_port);
	cr_assert_geq(c, 0);
	t0 = th_now_ms();
	ret = th_wait_close(c, 3000, NULL);
	cr_assert(ret == -ECONNRESET || ret == 0, "client not closed: %s", strerror(-ret));
	cr_assert_lt(th_now_ms() - t0, 1000, "closing took %lu ms",
		     (unsigned long)(th_now_ms() - t0));
	cr_assert_eq(metric(&f, "sidetap_connect_errors_total{listener=\"inbound\"}"), 1);
	close(c);
	cr_assert_eq(th_eng_stop(&f.eng, 1000), 0);
}

Test(eng_conn, connect_timeout_resets_client)
{
	const char *const extra[] = { "--connect-timeout=300", NULL };
	struct fixture f;
	uint64_t t0;
	int c, filler, ret;

	/* Backlog 0 with one connection queued: further SYNs are dropped, connects hang. */
	start_backlog(&f, "--forward=auto", extra, 0);
	filler = th_connect(f.port);
	cr_assert_geq(filler, 0);
	c = th_connect(f.eng.inbound_port);
	cr_assert_geq(c, 0);
	t0 = th_now_ms();
	ret = th_wait_close(c, 5000, NULL);
	cr_assert(ret == -ECONNRESET || ret == 0, "client not closed: %s", strerror(-ret));
	cr_assert_geq(th_now_ms() - t0, 250, "closed before the timeout");
	cr_assert_lt(th_now_ms() - t0, 1500, "closing took %lu ms",
		     (unsigned long)(th_now_ms() - t0));
	cr_assert_eq(metric(&f, "sidetap_connect_timeouts_total{listener=\"inbound\"}"), 1);
	close(c);
	close(filler);
	cr_assert_eq(th_eng_stop(&f.eng, 1000), 0);
}

static void greeting_flows_first(const char *mode)
{
	static const char hello[] = "220 smtp.example ESMTP ready\r\n";
	char buf[sizeof(hello)];
	struct fixture f;
	int c, u;

	start(&f, mode, NULL);
	pair(&f, &c, &u);
	cr_assert_eq(th_write_all(u, hello, sizeof(hello) - 1), 0);
	/* The client has sent nothing: the greeting must still arrive. */
	cr_assert_eq(th_read_full(c, buf, sizeof(hello) - 1, 2000), (ssize_t)sizeof(hello) - 1,
		     "%s: greeting did not arrive", mode);
	cr_assert_eq(memcmp(buf, hello, sizeof(hello) - 1), 0);
	close(c);
	close(u);
	cr_assert_eq(th_eng_stop(&f.eng, 1000), 0);
}

Test(eng_conn, server_greeting_reaches_client_that_sent_nothing)
{
	for (unsigned i = 0; i < 3; i++)
		greeting_flows_first(modes[i]);
}

static void half_close(const char *mode)
{
	size_t len = 1 << 20, off;
	char req[4], *resp = malloc(len), *got = malloc(len);
	struct fixture f;
	int c, u;

	start(&f, mode, NULL);
	pair(&f, &c, &u);
	th_pattern(7, 0, resp, len);
	cr_assert_eq(th_write_all(c, "req!", 4), 0);
	cr_assert_eq(shutdown(c, SHUT_WR), 0);
	/* The upstream sees the request, then EOF: the client's half-close. */
	cr_assert_eq(th_read_full(u, req, sizeof(req), 2000), 4, "%s", mode);
	cr_assert_eq(th_wait_close(u, 2000, NULL), 0, "%s: upstream did not see EOF", mode);
	/* The other direction still flows, all of it, then closes. */
	cr_assert_eq(th_write_all(u, resp, len), 0);
	close(u);
	off = (size_t)th_read_full(c, got, len, 5000);
	cr_assert_eq(off, len, "%s: client got %zu of %zu bytes", mode, off, len);
	cr_assert_eq(memcmp(got, resp, len), 0, "%s: response corrupted", mode);
	cr_assert_eq(th_wait_close(c, 2000, NULL), 0, "%s: client did not see EOF", mode);
	close(c);
	cr_assert_eq(th_eng_stop(&f.eng, 1000), 0);
	free(resp);
	free(got);
}

Test(eng_conn, half_close_keeps_the_other_direction_flowing)
{
	for (unsigned i = 0; i < 3; i++)
		half_close(modes[i]);
}

static void reset_propagates(const char *mode, bool client_resets)
{
	char buf[8];
	struct fixture f;
	int c, u, ret;

	start(&f, mode, NULL);
	pair(&f, &c, &u);
	cr_assert_eq(th_write_all(c, "ping", 4), 0);
	cr_assert_eq(th_read_full(u, buf, 4, 2000), 4);
	cr_assert_eq(th_write_all(u, "pong", 4), 0);
	cr_assert_eq(th_read_full(c, buf, 4, 2000), 4);
	th_close_reset(client_resets ? c : u);
	ret = th_wait_close(client_resets ? u : c, 2000, NULL);
	cr_assert_eq(ret, -ECONNRESET, "%s: the %s saw %s, not a reset", mode,
		     client_resets ? "upstream" : "client", ret == 0 ? "EOF" : strerror(-ret));
	close(client_resets ? u : c);
	cr_assert_eq(metric(&f, "sidetap_resets_total{listener=\"inbound\"}"), 1);
	cr_assert_eq(th_eng_stop(&f.eng, 1000), 0);
}

Test(eng_conn, client_reset_resets_upstream)
{
	for (unsigned i = 0; i < 3; i++)
		reset_propagates(modes[i], true);
}

Test(eng_conn, upstream_reset_resets_client)
{
	for (unsigned i = 0; i < 3; i++)
		reset_propagates(modes[i], false);
}

Test(eng_conn, idle_timeout_closes_quiet_connections_only)
{
	const char *const extra[] = { "--idle-timeout=300", NULL };
	struct fixture f;
	char b;
	int c, u, c2, u2;
	uint64_t t0;

	start(&f, "--forward=auto", extra);
	pair(&f, &c, &u);
	pair(&f, &c2, &u2);
	t0 = th_now_ms();
	/* c2 talks every 100 ms for 900 ms: it must survive three timeouts' worth. */
	while (th_now_ms() - t0 < 900) {
		cr_assert_eq(th_write_all(c2, "x", 1), 0);
		cr_assert_eq(th_read_full(u2, &b, 1, 1000), 1, "active connection was closed");
		usleep(100000);
	}
	/* c has been quiet all along: by now it is closed, both sides. */
	cr_assert_eq(th_wait_close(c, 100, NULL), 0, "idle client side still open");
	cr_assert_eq(th_wait_close(u, 100, NULL), 0, "idle upstream side still open");
	cr_assert_eq(metric(&f, "sidetap_idle_timeouts_total{listener=\"inbound\"}"), 1);
	close(c);
	close(u);
	close(c2);
	close(u2);
	cr_assert_eq(th_eng_stop(&f.eng, 1000), 0);
}

Test(eng_conn, max_connections_closes_new_ones_and_keeps_old_ones)
{
	const char *const extra[] = { "--workers=1", "--max-connections=2", NULL };
	struct fixture f;
	int c[3], u[2], ret;
	char buf[4];

	start(&f, "--forward=auto", extra);
	pair(&f, &c[0], &u[0]);
	pair(&f, &c[1], &u[1]);
	c[2] = th_connect(f.eng.inbound_port);
	cr_assert_geq(c[2], 0);
	ret = th_wait_close(c[2], 2000, NULL);
	cr_assert(ret == -ECONNRESET || ret == 0, "connection over the limit was not closed");
	cr_assert_eq(th_accept(f.lfd, 200), -ETIMEDOUT, "sidetap connected upstream anyway");
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(th_write_all(c[i], "abcd", 4), 0);
		cr_assert_eq(th_read_full(u[i], buf, 4, 2000), 4, "old connection %d broken", i);
		close(c[i]);
		close(u[i]);
	}
	close(c[2]);
	cr_assert_eq(
		metric(&f,
		       "sidetap_connections_rejected_total{listener=\"inbound\",reason=\"max_connections\"}"),
		1);
	cr_assert_eq(th_eng_stop(&f.eng, 1000), 0);
}

struct sender {
	int fd;
	size_t len;
	int ret;
};

static void *send_then_shutdown(void *arg)
{
	struct sender *s = arg;
	char buf[65536];

	for (size_t off = 0; off < s->len && s->ret == 0; off += sizeof(buf)) {
		th_pattern(11, off, buf, sizeof(buf));
		s->ret = th_write_all(s->fd, buf, sizeof(buf));
	}
	shutdown(s->fd, SHUT_WR);
	return NULL;
}

static void slow_reader(const char *mode)
{
	struct sender s = { .len = 8 << 20 };
	char *want = malloc(s.len), *got = malloc(s.len);
	struct fixture f;
	pthread_t th;
	int u;

	start(&f, mode, NULL);
	pair(&f, &s.fd, &u);
	th_pattern(11, 0, want, s.len);
	pthread_create(&th, NULL, send_then_shutdown, &s);
	/* The upstream does not read for a while: sidetap must hold back, not drop. */
	usleep(300000);
	cr_assert_eq(th_read_full(u, got, s.len, 10000), (ssize_t)s.len, "%s: bytes lost", mode);
	cr_assert_eq(memcmp(got, want, s.len), 0, "%s: bytes reordered or corrupted", mode);
	cr_assert_eq(th_wait_close(u, 2000, NULL), 0, "%s: EOF not passed on", mode);
	pthread_join(th, NULL);
	cr_assert_eq(s.ret, 0);
	close(s.fd);
	close(u);
	cr_assert_eq(th_eng_stop(&f.eng, 1000), 0);
	free(want);
	free(got);
}

Test(eng_conn, slow_reader_gets_every_byte_in_order_then_eof, .timeout = 60)
{
	for (unsigned i = 0; i < 3; i++)
		slow_reader(modes[i]);
}

Test(eng_conn, bytes_are_counted_per_direction)
{
	char buf[3000];
	struct fixture f;
	int c, u;

	start(&f, "--forward=copy", NULL);
	pair(&f, &c, &u);
	memset(buf, 'a', sizeof(buf));
	cr_assert_eq(th_write_all(c, buf, 1000), 0);
	cr_assert_eq(th_read_full(u, buf, 1000, 2000), 1000);
	cr_assert_eq(th_write_all(u, buf, 3000), 0);
	cr_assert_eq(th_read_full(c, buf, 3000, 2000), 3000);
	cr_assert_eq(
		metric(&f,
		       "sidetap_bytes_total{listener=\"inbound\",direction=\"client_to_upstream\"}"),
		1000);
	cr_assert_eq(
		metric(&f,
		       "sidetap_bytes_total{listener=\"inbound\",direction=\"upstream_to_client\"}"),
		3000);
	cr_assert_eq(metric(&f, "sidetap_connections_active{listener=\"inbound\"}"), 1);
	close(c);
	close(u);
	cr_assert_eq(th_eng_stop(&f.eng, 1000), 0);
}

Test(eng_conn, auto_moves_bulk_directions_to_splice)
{
	const char *const extra[] = { "--splice-threshold=65536", NULL };
	size_t len = 4 << 20;
	char *buf = malloc(len), *got = malloc(len);
	struct fixture f;
	int c, u;

	start(&f, "--forward=auto", extra);
	pair(&f, &c, &u);
	th_pattern(3, 0, buf, len);
	cr_assert_eq(th_write_all(u, buf, len), 0);
	cr_assert_eq(th_read_full(c, got, len, 5000), (ssize_t)len);
	cr_assert_eq(memcmp(buf, got, len), 0);
	cr_assert_eq(metric(&f, "sidetap_splice_switches_total{listener=\"inbound\"}"), 1);
	cr_assert_gt(metric(&f, "sidetap_splice_bytes_total{listener=\"inbound\"}"), 0);
	close(c);
	close(u);
	cr_assert_eq(th_eng_stop(&f.eng, 1000), 0);
	free(buf);
	free(got);
}

Test(eng_conn, drain_stops_accepting_and_lets_open_connections_finish)
{
	struct fixture f;
	char buf[4];
	int c, u, late = 0;
	uint64_t t0;

	start(&f, "--forward=auto", NULL);
	pair(&f, &c, &u);
	eng_engine_drain(f.eng.e, 10000, "test");
	/* New connections are refused once the listeners are closed. */
	for (t0 = th_now_ms(); th_now_ms() - t0 < 2000; usleep(20000)) {
		late = th_connect(f.eng.inbound_port);
		if (late < 0)
			break;
		close(late);
	}
	/* Refused, or reset when the SYN raced the listener's close. */
	cr_assert(late == -ECONNREFUSED || late == -ECONNRESET,
		  "still accepting while draining: %s", late >= 0 ? "connected" : strerror(-late));
	/* The open connection still works both ways. */
	cr_assert_eq(th_write_all(c, "ping", 4), 0);
	cr_assert_eq(th_read_full(u, buf, 4, 2000), 4);
	cr_assert_eq(th_write_all(u, "pong", 4), 0);
	cr_assert_eq(th_read_full(c, buf, 4, 2000), 4);
	cr_assert_not(eng_engine_is_done(f.eng.e));
	close(c);
	close(u);
	for (t0 = th_now_ms(); !eng_engine_is_done(f.eng.e) && th_now_ms() - t0 < 2000;)
		usleep(10000);
	cr_assert(eng_engine_is_done(f.eng.e), "engine still running with no connections");
	cr_assert_eq(eng_engine_wait(f.eng.e), 0);
	eng_engine_free(f.eng.e);
}

Test(eng_conn, drain_deadline_closes_what_remains)
{
	struct fixture f;
	int c, u, ret;
	uint64_t t0;

	start(&f, "--forward=auto", NULL);
	pair(&f, &c, &u);
	t0 = th_now_ms();
	eng_engine_drain(f.eng.e, 300, "test");
	ret = th_wait_close(c, 3000, NULL);
	cr_assert(ret == 0 || ret == -ECONNRESET, "connection survived the deadline");
	cr_assert_geq(th_now_ms() - t0, 250);
	for (; !eng_engine_is_done(f.eng.e) && th_now_ms() - t0 < 3000;)
		usleep(10000);
	cr_assert(eng_engine_is_done(f.eng.e));
	cr_assert_eq(eng_engine_wait(f.eng.e), 0);
	eng_engine_free(f.eng.e);
	close(c);
	close(u);
}

Test(eng_conn, loop_guard_closes_connections_not_redirected_to_a_transparent_listener)
{
	const char *const args[] = { "--inbound-mode=transparent", NULL };
	struct th_eng t;
	int c, ret;

	th_eng_start(&t, args);
	/* Straight to the listener, no iptables: its destination is sidetap itself. */
	c = th_connect(t.inbound_port);
	cr_assert_geq(c, 0);
	ret = th_wait_close(c, 2000, NULL);
	cr_assert(ret == 0 || ret == -ECONNRESET, "looping connection left open");
	close(c);
	cr_assert_eq(th_metric(t.admin_port, "sidetap_loop_guard_total{listener=\"inbound\"}"), 1);
	cr_assert_eq(th_eng_stop(&t, 1000), 0);
}

static int v6_socket(uint16_t port, bool listen_it, uint16_t *bound)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6,
				   .sin6_port = htons(port),
				   .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (listen_it ? bind(fd, (struct sockaddr *)&sa, len) || listen(fd, 8) ||
				getsockname(fd, (struct sockaddr *)&sa, &len) :
			connect(fd, (struct sockaddr *)&sa, len)) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	if (bound)
		*bound = ntohs(sa.sin6_port);
	return fd;
}

Test(eng_conn, ipv6_listener_and_upstream)
{
	char up[64], buf[5];
	struct th_eng t;
	uint16_t port;
	int lfd = v6_socket(0, true, &port), c, u;

	if (lfd < 0)
		cr_skip_test("no IPv6 loopback here: %s", strerror(-lfd));
	snprintf(up, sizeof(up), "--inbound-upstream=[::1]:%u", port);
	th_eng_start(&t, (const char *const[]){ "--inbound-addr=[::1]:0", "--inbound-mode=reverse",
						up, NULL });
	c = v6_socket(t.inbound_port, false, NULL);
	cr_assert_geq(c, 0, "connect to [::1]: %s", strerror(-c));
	u = th_accept(lfd, 2000);
	cr_assert_geq(u, 0, "no upstream connection over IPv6");
	cr_assert_eq(th_write_all(c, "hello", 5), 0);
	cr_assert_eq(th_read_full(u, buf, 5, 2000), 5);
	cr_assert_eq(memcmp(buf, "hello", 5), 0);
	close(c);
	close(u);
	close(lfd);
	cr_assert_eq(th_eng_stop(&t, 1000), 0);
}
