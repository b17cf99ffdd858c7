/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A pod end to end (TESTPLAN L1, L2, L4): network namespaces "pod" and
 * "remote" joined by a veth pair; sidetap-init programs the pod (no
 * hand-written rules), the real sidetap runs in it as UID/GID 2102 with
 * capture on, beside an app; the app's outbound calls and a remote client's
 * inbound calls go through sidetap (its /metrics and its capture say so),
 * over IPv4 and IPv6, skipped ports and CIDRs do not, nothing loops, and
 * --cleanup puts the nat tables back. Needs root, ip, iptables, setpriv and
 * curl; skips otherwise.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "init_run.h"
#include "th.h"

#define POD_IP "10.232.0.1"
#define REMOTE_IP "10.232.0.2"
#define REMOTE_SKIPPED_IP "10.232.0.3" /* in --skip-outbound-cidrs */
/* Global IPv6 addresses: --ipv6 auto writes ip6tables rules too. */
#define POD_IP6 "fd00:232::1"
#define REMOTE_IP6 "fd00:232::2"
#define PROXY_ID "2102"

/* The flags the injector would pass: one skipped port each way and one skipped CIDR. */
#define INIT_FLAGS                                                                         \
	"--skip-outbound-ports", "9090", "--skip-outbound-cidrs", REMOTE_SKIPPED_IP "/32", \
		"--skip-inbound-ports", "8081", "--proxy-uid", PROXY_ID, "--proxy-gid", PROXY_ID

static char pod[32], remote[32], veth[16], work[256];
static struct th_proc sidetap_proc, app, app_skipped, remote_a, remote_b;
static char *nat_before, *nat6_before;

static void require(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root for network namespaces and iptables");
	if (!th_have("ip") || !th_have("iptables-save") || !th_have("iptables-restore") ||
	    !th_have("setpriv") || !th_have("curl"))
		cr_skip_test("needs ip (iproute2), iptables, setpriv and curl: cmake/deps.sh test");
	if (access("/usr/bin/python3", X_OK) != 0)
		cr_skip_test("needs /usr/bin/python3 for the app and the remote service");
	if (!th_netns_works())
		cr_skip_test("ip netns add fails here (no CAP_SYS_ADMIN?)");
}

/* <prog> (iptables-save or ip6tables-save) -t nat of the pod, normalized. */
static char *pod_save(const char *prog)
{
	char *argv[] = { "ip", "netns", "exec", pod, (char *)prog, "-t", "nat", NULL };
	char *out, *norm;

	cr_assert_eq(ti_run(argv, NULL, &out, NULL), 0, "%s failed", prog);
	norm = ti_save_normalize(out);
	free(out);
	return norm;
}

static char *pod_nat(void)
{
	return pod_save("iptables-save");
}

/* Runs sidetap-init in the pod with <args>; fails the test unless it exits 0. */
static void pod_init(const char *const args[])
{
	char *argv[32] = { "ip", "netns", "exec", pod, INIT_BIN };
	char *err;
	unsigned n = 5;
	int ret;

	for (unsigned i = 0; args[i]; i++)
		argv[n++] = (char *)args[i];
	argv[n] = NULL;
	ret = ti_run(argv, ti_clean_env(), NULL, &err);
	cr_assert_eq(ret, 0, "sidetap-init exited %d: %s", ret, err);
	free(err);
}

#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

static void setup(void)
{
	int pid = (int)getpid();
	char cmd[1024];

	require();
	snprintf(pod, sizeof(pod), "st-ipod-%d", pid);
	snprintf(remote, sizeof(remote), "st-irem-%d", pid);
	snprintf(veth, sizeof(veth), "sti%d", pid % 100000);
	cr_assert_eq(th_sh("ip netns add %s && ip netns add %s && "
			   "ip link add %sa type veth peer name %sb && "
			   "ip link set %sa netns %s && ip link set %sb netns %s && "
			   "ip -n %s addr add " POD_IP "/24 dev %sa && "
			   "ip -n %s addr add " POD_IP6 "/64 dev %sa nodad && "
			   "ip -n %s link set %sa up && ip -n %s link set lo up && "
			   "ip -n %s addr add " REMOTE_IP "/24 dev %sb && "
			   "ip -n %s addr add " REMOTE_SKIPPED_IP "/24 dev %sb && "
			   "ip -n %s addr add " REMOTE_IP6 "/64 dev %sb nodad && "
			   "ip -n %s link set %sb up && ip -n %s link set lo up",
			   pod, remote, veth, veth, veth, pod, veth, remote, pod, veth, pod, veth,
			   pod, veth, pod, remote, veth, remote, veth, remote, veth, remote, veth,
			   remote),
		     0, "namespace set-up failed");
	nat_before = pod_nat();
	nat6_before = pod_save("ip6tables-save");
	pod_init(ARGS(INIT_FLAGS));

	/* sidetap runs as 2102: its ring and capture directory must be its to write. */
	snprintf(work, sizeof(work), "%s/pod-%d", th_tmpdir(), pid);
	cr_assert_eq(chmod(th_tmpdir(), 0755), 0);
	cr_assert_eq(th_sh("mkdir -p %s/cap && chown -R " PROXY_ID ":" PROXY_ID " %s", work, work),
		     0);
	cr_assert_eq(chmod(work, 0755), 0);
	/* "::" is dual-stack: IPv4 and IPv6 callers alike. */
	cr_assert_eq(th_ns_web(&app, pod, "::", 8080, "pod-app"), 0);
	cr_assert_eq(th_ns_web(&app_skipped, pod, "0.0.0.0", 8081, "pod-app-8081"), 0);
	cr_assert_eq(th_ns_web(&remote_a, remote, "::", 8080, "remote-8080"), 0);
	cr_assert_eq(th_ns_web(&remote_b, remote, REMOTE_IP, 9090, "remote-9090"), 0);
	snprintf(cmd, sizeof(cmd),
		 "exec setpriv --reuid=" PROXY_ID " --regid=" PROXY_ID " --clear-groups %s "
		 "--inbound-addr 0.0.0.0:4143,[::]:4143 --outbound-addr 127.0.0.1:4140,[::1]:4140 "
		 "--admin-addr 0.0.0.0:4191 --workers 1 --capture on --ring %s/ring "
		 "--sink file:%s/cap --drain-timeout 2000",
		 th_sidetap_bin(), work, work);
	cr_assert_eq(th_ns_spawn(&sidetap_proc, pod, cmd), 0);
	cr_assert(th_proc_log_wait(&sidetap_proc, "msg=\"started\"", 10000),
		  "sidetap did not start");
	cr_assert(th_proc_log_wait(&app, "Serving HTTP", 10000), "the app did not start");
	cr_assert(th_proc_log_wait(&app_skipped, "Serving HTTP", 10000));
	cr_assert(th_proc_log_wait(&remote_a, "Serving HTTP", 10000));
	cr_assert(th_proc_log_wait(&remote_b, "Serving HTTP", 10000));
}

static void teardown(void)
{
	if (!pod[0]) {
		ti_tmpdir_remove();
		return;
	}
	th_proc_stop(&sidetap_proc, SIGTERM, 5000);
	th_proc_stop(&app, SIGTERM, 2000);
	th_proc_stop(&app_skipped, SIGTERM, 2000);
	th_proc_stop(&remote_a, SIGTERM, 2000);
	th_proc_stop(&remote_b, SIGTERM, 2000);
	th_sh("ip netns del %s 2>/dev/null; ip netns del %s 2>/dev/null", pod, remote);
	ti_tmpdir_remove();
	free(nat_before);
	free(nat6_before);
}

TestSuite(init_pod, .init = setup, .fini = teardown, .timeout = 60);

/* Body of a GET by curl in <ns>, trailing newline removed; "" on failure. Caller frees. */
static char *ns_curl(const char *ns, const char *url)
{
	char *argv[] = { "ip", "netns", "exec", (char *)ns,  "curl",
			 "-s", "-m",	"5",	(char *)url, NULL };
	char *out = NULL;
	size_t n;

	if (ti_run(argv, NULL, &out, NULL) != 0) {
		free(out);
		return strdup("");
	}
	n = strlen(out);
	while (n && out[n - 1] == '\n')
		out[--n] = '\0';
	return out;
}

/* A sample of the pod's sidetap /metrics (on the pod's loopback), or -1. */
static long long pod_metric(const char *series)
{
	char *argv[] = { "ip", "netns", "exec",
			 pod,  "curl",	"-s",
			 "-m", "5",	"http://127.0.0.1:4191/metrics",
			 NULL };
	char *out = NULL, *line;
	size_t n = strlen(series);
	long long v = -1;

	if (ti_run(argv, NULL, &out, NULL) != 0) {
		free(out);
		return -1;
	}
	for (line = out; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
		if (strncmp(line, series, n) == 0 && line[n] == ' ') {
			v = strtoll(line + n + 1, NULL, 10);
			break;
		}
	free(out);
	return v;
}

#define ACCEPTED_OUT "sidetap_connections_accepted_total{listener=\"outbound\"}"
#define ACCEPTED_IN "sidetap_connections_accepted_total{listener=\"inbound\"}"
#define LOOP_OUT "sidetap_loop_guard_total{listener=\"outbound\"}"
#define LOOP_IN "sidetap_loop_guard_total{listener=\"inbound\"}"

/* Asserts a curl in <ns> of <url> got <want>. */
static void expect_body(const char *ns, const char *url, const char *want)
{
	char *got = ns_curl(ns, url);

	cr_assert_str_eq(got, want, "GET %s from %s: got '%s', want '%s'", url, ns, got, want);
	free(got);
}

Test(init_pod, app_outbound_call_goes_through_sidetap_once)
{
	expect_body(pod, "http://" REMOTE_IP ":8080/", "remote-8080");
	cr_assert_eq(pod_metric(ACCEPTED_OUT), 1, "the call did not pass through sidetap");
	/*
	 * Had sidetap's own connection upstream been redirected again (no UID
	 * exclusion), it would have come back to 4140: a second accept.
	 */
	cr_assert_eq(pod_metric(LOOP_OUT), 0);
	cr_assert_eq(pod_metric(ACCEPTED_IN), 0);
}

Test(init_pod, remote_inbound_call_goes_through_sidetap_to_the_app)
{
	expect_body(remote, "http://" POD_IP ":8080/", "pod-app");
	cr_assert_eq(pod_metric(ACCEPTED_IN), 1, "the call did not pass through sidetap");
	/* sidetap's leg to the app on loopback is its own: not redirected outbound. */
	cr_assert_eq(pod_metric(ACCEPTED_OUT), 0);
	cr_assert_eq(pod_metric(LOOP_IN), 0);
}

/* True when a JSON line of <dump> has every one of the NULL-terminated <needles>. */
static bool dump_has(const char *dump, const char *const needles[])
{
	for (const char *p = dump; p && *p;) {
		const char *nl = strchr(p, '\n');
		char *line = strndup(p, nl ? (size_t)(nl - p) : strlen(p));
		bool all = true;

		for (unsigned i = 0; needles[i] && all; i++)
			all = strstr(line, needles[i]) != NULL;
		free(line);
		if (all)
			return true;
		p = nl ? nl + 1 : NULL;
	}
	return false;
}

Test(init_pod, capture_records_each_call_with_its_original_destination)
{
	char dir[300], *argv[] = { CTL_BIN, "dump", "--type", "http", dir, NULL };
	char *dump, *err;
	int ret;

	expect_body(pod, "http://" REMOTE_IP ":8080/?from=app", "remote-8080");
	expect_body(remote, "http://" POD_IP ":8080/?from=remote", "pod-app");
	ret = th_proc_stop(&sidetap_proc, SIGTERM, 10000);
	cr_assert_eq(ret, 0, "sidetap exited %d after SIGTERM", ret);
	snprintf(dir, sizeof(dir), "%s/cap", work);
	ret = ti_run(argv, NULL, &dump, &err);
	cr_assert_eq(ret, 0, "sidetapctl dump exited %d: %s", ret, err);
	cr_assert(dump_has(dump, ARGS("\"type\":\"http\"", "\"listener\":\"outbound\"",
				      "\"dst\":\"" REMOTE_IP ":8080\"", "\"target\":\"/?from=app\"",
				      "\"status\":200")),
		  "no outbound http frame to " REMOTE_IP ":8080 in:\n%s", dump);
	cr_assert(dump_has(dump, ARGS("\"type\":\"http\"", "\"listener\":\"inbound\"",
				      "\"dst\":\"" POD_IP ":8080\"", "\"target\":\"/?from=remote\"",
				      "\"status\":200")),
		  "no inbound http frame to " POD_IP ":8080 in:\n%s", dump);
	free(dump);
	free(err);
}

Test(init_pod, ipv6_calls_go_through_sidetap_too)
{
	char *nat6 = pod_save("ip6tables-save");

	cr_assert(strstr(nat6, "-A OUTPUT -p tcp -j SIDETAP_OUTPUT"),
		  "--ipv6 auto wrote no IPv6 rules in a pod with a global IPv6 address:\n%s", nat6);
	free(nat6);
	expect_body(pod, "http://[" REMOTE_IP6 "]:8080/", "remote-8080");
	cr_assert_eq(pod_metric(ACCEPTED_OUT), 1, "the IPv6 call did not pass through sidetap");
	expect_body(remote, "http://[" POD_IP6 "]:8080/", "pod-app");
	cr_assert_eq(pod_metric(ACCEPTED_IN), 1, "the IPv6 call did not pass through sidetap");
	cr_assert_eq(pod_metric(LOOP_OUT), 0);
	/* Localhost is not captured in IPv6 either. */
	expect_body(pod, "http://[::1]:8080/", "pod-app");
	cr_assert_eq(pod_metric(ACCEPTED_OUT), 1);
}

Test(init_pod, skipped_ports_and_cidrs_bypass_sidetap)
{
	expect_body(pod, "http://" REMOTE_IP ":9090/", "remote-9090");
	expect_body(pod, "http://" REMOTE_SKIPPED_IP ":8080/", "remote-8080");
	cr_assert_eq(pod_metric(ACCEPTED_OUT), 0, "a skipped destination went through sidetap");
	expect_body(remote, "http://" POD_IP ":8081/", "pod-app-8081");
	/* The admin port is never redirected: the remote reaches sidetap's own endpoint. */
	expect_body(remote, "http://" POD_IP ":4191/healthz", "ok");
	cr_assert_eq(pod_metric(ACCEPTED_IN), 0, "a skipped port went through sidetap");
	/* And what is not skipped still goes through. */
	expect_body(pod, "http://" REMOTE_IP ":8080/", "remote-8080");
	cr_assert_eq(pod_metric(ACCEPTED_OUT), 1);
}

Test(init_pod, direct_connections_to_sidetap_are_closed_by_the_loop_guard)
{
	/* Loopback is not redirected: the connection arrives with no original destination. */
	expect_body(pod, "http://127.0.0.1:4140/", "");
	/* Redirected to 4143 with 4143 as the original destination. */
	expect_body(remote, "http://" POD_IP ":4143/", "");
	cr_assert_eq(pod_metric(LOOP_OUT), 1);
	cr_assert_eq(pod_metric(LOOP_IN), 1);
	expect_body(pod, "http://" REMOTE_IP ":8080/", "remote-8080");
}

Test(init_pod, app_calling_its_own_pod_ip_is_captured_once)
{
	expect_body(pod, "http://" POD_IP ":8080/", "pod-app");
	/* Outbound once; PREROUTING never sees a locally made connection, so no inbound. */
	cr_assert_eq(pod_metric(ACCEPTED_OUT), 1);
	cr_assert_eq(pod_metric(ACCEPTED_IN), 0);
	cr_assert_eq(pod_metric(LOOP_OUT), 0);
	/* Localhost between the pod's containers is not captured at all. */
	expect_body(pod, "http://127.0.0.1:8080/", "pod-app");
	cr_assert_eq(pod_metric(ACCEPTED_OUT), 1);
}

Test(init_pod, rerun_changes_nothing_and_cleanup_restores_the_nat_table)
{
	char *nat1 = pod_nat(), *nat2;

	pod_init(ARGS(INIT_FLAGS));
	nat2 = pod_nat();
	cr_assert_str_eq(nat1, nat2, "a second sidetap-init changed the rules");
	free(nat2);
	expect_body(pod, "http://" REMOTE_IP ":8080/", "remote-8080");
	cr_assert_eq(pod_metric(ACCEPTED_OUT), 1);

	pod_init(ARGS("--cleanup"));
	nat2 = pod_nat();
	cr_assert_str_eq(nat_before, nat2, "--cleanup left the nat table different");
	free(nat2);
	nat2 = pod_save("ip6tables-save");
	cr_assert_str_eq(nat6_before, nat2, "--cleanup left the IPv6 nat table different");
	/* No longer redirected: straight to the remote, sidetap sees nothing new. */
	expect_body(pod, "http://" REMOTE_IP ":8080/", "remote-8080");
	expect_body(remote, "http://" POD_IP ":8080/", "pod-app");
	cr_assert_eq(pod_metric(ACCEPTED_OUT), 1);
	cr_assert_eq(pod_metric(ACCEPTED_IN), 0);
	free(nat1);
	free(nat2);
}
