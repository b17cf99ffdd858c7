/* SPDX-License-Identifier: Apache-2.0 */
/* Integration tests of sidetap at its resource limits: out of file descriptors. */
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

#define MAXC 512

/* An upstream that accepts everything and echoes, until told to stop. */
struct echo {
	int lfd;
	int stop;
};

static void *echo_run(void *arg)
{
	struct echo *s = arg;
	struct pollfd p[MAXC + 1];
	unsigned n = 1;
	char buf[512];

	p[0].fd = s->lfd;
	p[0].events = POLLIN;
	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		if (poll(p, n, 50) <= 0)
			continue;
		if ((p[0].revents & POLLIN) && n <= MAXC) {
			int fd = accept(s->lfd, NULL, NULL);

			if (fd >= 0) {
				p[n].fd = fd;
				p[n++].events = POLLIN;
			}
		}
		for (unsigned i = 1; i < n; i++) {
			ssize_t r;

			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			r = recv(p[i].fd, buf, sizeof(buf), 0);
			if (r > 0) {
				th_write_all(p[i].fd, buf, (size_t)r);
				continue;
			}
			close(p[i].fd);
			p[i--] = p[--n];
		}
	}
	for (unsigned i = 1; i < n; i++)
		close(p[i].fd);
	return NULL;
}

static bool echo_through(uint16_t port, int timeout_ms)
{
	char got[6];
	int fd = th_connect(port);
	bool ok;

	if (fd < 0)
		return false;
	ok = th_write_all(fd, "hello!", 6) == 0 && th_read_full(fd, got, 6, timeout_ms) == 6 &&
	     memcmp(got, "hello!", 6) == 0;
	close(fd);
	return ok;
}

static unsigned count(const char *hay, const char *needle)
{
	unsigned n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

Test(limits, out_of_descriptors_survives_and_serves_again, .timeout = 60)
{
	const char *const wrapper[] = { "prlimit", "--nofile=40:40", NULL };
	struct rlimit rl = { 4096, 4096 };
	struct echo srv = { 0 };
	struct th_sidetap st;
	int fds[200];
	char up[64], *log;
	uint16_t port;
	pthread_t th;
	uint64_t t0, dt;
	bool ok = false;

	if (!th_have("prlimit"))
		cr_skip_test("prlimit (util-linux) is not installed");
	setrlimit(RLIMIT_NOFILE, &rl);
	srv.lfd = th_listen(&port, 1024);
	pthread_create(&th, NULL, echo_run, &srv);
	snprintf(up, sizeof(up), "--inbound-upstream=127.0.0.1:%u", port);
	cr_assert_eq(th_sidetap_start(&st, wrapper,
				      (const char *const[]){ "--inbound-mode=reverse", up,
							     "--workers=1", NULL }),
		     0);
	cr_assert(echo_through(st.inbound_port, 2000), "not working before the test");

	/* Five times more clients than descriptors. */
	t0 = th_now_ms();
	for (unsigned i = 0; i < 200; i++) {
		fds[i] = th_connect(st.inbound_port);
		if (fds[i] >= 0)
			th_write_all(fds[i], "x", 1);
	}
	usleep(1500000);
	cr_assert_eq(kill(st.proc.pid, 0), 0, "sidetap died out of descriptors");
	cr_assert_eq(th_proc_wait(&st.proc, 0), -ETIMEDOUT, "sidetap exited");
	for (unsigned i = 0; i < 200; i++)
		if (fds[i] >= 0)
			close(fds[i]);

	/* The descriptors come back: service resumes, without a restart. */
	for (uint64_t t1 = th_now_ms(); th_now_ms() - t1 < 3000 && !ok;)
		ok = echo_through(st.inbound_port, 500);
	cr_assert(ok, "sidetap does not serve again once clients went away");
	cr_assert_gt(th_metric(st.admin_port, "sidetap_accept_errors_total{listener=\"inbound\"}") +
			     th_metric(st.admin_port,
				       "sidetap_connect_errors_total{listener=\"inbound\"}"),
		     0, "the test never ran out of descriptors");
	dt = th_now_ms() - t0;
	cr_assert_eq(th_proc_stop(&st.proc, SIGTERM, 5000), 0);
	log = th_proc_log(&st.proc);
	/* At most one warning per second and per call site. */
	cr_assert_leq(count(log, "accept failed, backing off"), dt / 1000 + 1, "%s", log);
	cr_assert_leq(count(log, "cannot create upstream socket"), dt / 1000 + 1, "%s", log);
	free(log);
	__atomic_store_n(&srv.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	close(srv.lfd);
}
