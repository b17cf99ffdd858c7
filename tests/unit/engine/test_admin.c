/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of engine/src/admin.c and metrics.c: the admin endpoint as a kubelet and Prometheus see it. */
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

#include "th.h"
#include "th_eng.h"

static struct th_eng t;
static int upstream_fd;

static void setup(void)
{
	char up[64];
	uint16_t port;

	upstream_fd = th_listen(&port, 16);
	snprintf(up, sizeof(up), "--inbound-upstream=127.0.0.1:%u", port);
	th_eng_start(&t, (const char *const[]){ "--inbound-mode=reverse", up, NULL });
}

static void teardown(void)
{
	if (t.e)
		th_eng_stop(&t, 0);
	close(upstream_fd);
}

TestSuite(eng_admin, .init = setup, .fini = teardown);

Test(eng_admin, healthz_and_readyz_answer_200_while_running)
{
	char *body;

	cr_assert_eq(th_http(t.admin_port, "GET", "/healthz", &body, NULL), 200);
	cr_assert_str_eq(body, "ok\n");
	free(body);
	cr_assert_eq(th_http(t.admin_port, "GET", "/readyz", &body, NULL), 200);
	cr_assert_str_eq(body, "ready\n");
	free(body);
	cr_assert_eq(th_http(t.admin_port, "HEAD", "/readyz?verbose=1", &body, NULL), 200);
	cr_assert_str_eq(body, "", "HEAD must not carry a body");
	free(body);
}

Test(eng_admin, metrics_is_prometheus_text_with_every_family)
{
	static const char *const families[] = {
		"sidetap_connections_accepted_total",
		"sidetap_connections_closed_total",
		"sidetap_connections_active",
		"sidetap_connections_rejected_total",
		"sidetap_loop_guard_total",
		"sidetap_accept_errors_total",
		"sidetap_connect_errors_total",
		"sidetap_connect_timeouts_total",
		"sidetap_idle_timeouts_total",
		"sidetap_bytes_total",
		"sidetap_workers",
		"sidetap_ready",
		"sidetap_ktls_supported",
	};
	char *body, want[128];

	cr_assert_eq(th_http(t.admin_port, "GET", "/metrics", &body, NULL), 200);
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		snprintf(want, sizeof(want), "# TYPE %s ", families[i]);
		cr_expect(strstr(body, want), "no TYPE line for %s", families[i]);
	}
	/* Every sample line is "name{labels} value" or "name value". */
	for (char *line = strtok(body, "\n"); line; line = strtok(NULL, "\n")) {
		if (line[0] == '#')
			continue;
		cr_expect(strncmp(line, "sidetap_", 8) == 0, "stray line: %s", line);
		cr_expect(strrchr(line, ' ') && strrchr(line, ' ')[1] >= '0' &&
				  strrchr(line, ' ')[1] <= '9',
			  "no value: %s", line);
	}
	free(body);
	cr_assert_eq(th_metric(t.admin_port, "sidetap_ready"), 1);
	cr_assert_eq(th_metric(t.admin_port, "sidetap_workers"), (long long)t.cfg.workers);
}

Test(eng_admin, readyz_turns_503_when_draining)
{
	int c;
	char *body;

	/* An open connection keeps the drain going while we ask. */
	c = th_connect(t.inbound_port);
	cr_assert_geq(c, 0);
	cr_assert_geq(th_accept(upstream_fd, 2000), 0);
	eng_engine_drain(t.e, 5000, "test");
	usleep(50000);
	cr_assert_eq(th_http(t.admin_port, "GET", "/readyz", &body, NULL), 503);
	cr_assert_str_eq(body, "draining\n");
	free(body);
	cr_assert_eq(th_http(t.admin_port, "GET", "/healthz", NULL, NULL), 200,
		     "liveness must stay up while draining");
	close(c);
}

Test(eng_admin, post_shutdown_from_loopback_drains)
{
	uint64_t t0;

	cr_assert_eq(th_http(t.admin_port, "POST", "/shutdown", NULL, NULL), 202);
	for (t0 = th_now_ms(); !eng_engine_is_done(t.e) && th_now_ms() - t0 < 3000;)
		usleep(10000);
	cr_assert(eng_engine_is_done(t.e), "POST /shutdown did not stop the engine");
}

Test(eng_admin, wrong_methods_and_paths_get_405_and_404)
{
	cr_assert_eq(th_http(t.admin_port, "GET", "/shutdown", NULL, NULL), 405);
	cr_assert_eq(th_http(t.admin_port, "POST", "/metrics", NULL, NULL), 405);
	cr_assert_eq(th_http(t.admin_port, "GET", "/nope", NULL, NULL), 404);
	cr_assert_eq(th_http(t.admin_port, "GET", "/readyz", NULL, NULL), 200,
		     "a bad request must not stop the next one");
}

Test(eng_admin, malformed_and_oversized_requests_are_refused)
{
	char big[8192], buf[256];
	int fd;
	ssize_t n;

	fd = th_connect(t.admin_port);
	cr_assert_eq(th_write_all(fd, "BLAH\r\n\r\n", 8), 0);
	n = th_read_full(fd, buf, sizeof(buf) - 1, 2000);
	cr_assert_gt(n, 0);
	buf[n] = '\0';
	cr_assert(strstr(buf, "HTTP/1.1 400"), "got: %s", buf);
	close(fd);

	fd = th_connect(t.admin_port);
	memset(big, 'a', sizeof(big));
	memcpy(big, "GET /", 5);
	th_write_all(fd, big, sizeof(big));
	n = th_read_full(fd, buf, sizeof(buf) - 1, 2000);
	cr_assert_gt(n, 0);
	buf[n] = '\0';
	cr_assert(strstr(buf, "HTTP/1.1 431"), "got: %s", buf);
	close(fd);
	cr_assert_eq(th_http(t.admin_port, "GET", "/healthz", NULL, NULL), 200);
}
