/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Transparent mode in network namespaces made by the test: a "pod" with
 * iptables REDIRECT rules (OUTPUT -> 4140, PREROUTING -> 4143, sidetap's own
 * UID excluded), an app in it, and a "remote" host across a veth pair.
 * Needs root, ip and iptables; skips with the reason otherwise.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "th.h"

#define POD_IP "10.231.0.1"
#define REMOTE_IP "10.231.0.2"
#define PROXY_UID "2102"

static char pod[32], remote[32], veth[16];
static struct th_proc sidetap_proc, app, remote_a, remote_b;
static bool ready;

static void require(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root for network namespaces and iptables");
	if (!th_have("ip") || !th_have("iptables") || !th_have("setpriv") || !th_have("curl"))
		cr_skip_test("needs ip (iproute2), iptables, setpriv and curl: cmake/deps.sh test");
	if (!th_netns_works())
		cr_skip_test("ip netns add fails here (no CAP_SYS_ADMIN?)");
}

static void setup(void)
{
	int pid = (int)getpid();
	char cmd[1024];

	require();
	snprintf(pod, sizeof(pod), "st-pod-%d", pid);
	snprintf(remote, sizeof(remote), "st-rem-%d", pid);
	snprintf(veth, sizeof(veth), "stv%d", pid % 100000);
	cr_assert_eq(th_sh("ip netns add %s && ip netns add %s && "
			   "ip link add %sa type veth peer name %sb && "
			   "ip link set %sa netns %s && ip link set %sb netns %s && "
			   "ip -n %s addr add " POD_IP "/24 dev %sa && ip -n %s link set %sa up && "
			   "ip -n %s link set lo up && "
			   "ip -n %s addr add " REMOTE_IP
			   "/24 dev %sb && ip -n %s link set %sb up && "
			   "ip -n %s link set lo up",
			   pod, remote, veth, veth, veth, pod, veth, remote, pod, veth, pod, veth,
			   pod, remote, veth, remote, veth, remote),
		     0, "namespace set-up failed");
	/*
	 * The pod's rules, as an init container writes them: sidetap's own
	 * traffic (its UID) returns untouched, loopback is not captured, every
	 * other outbound TCP goes to 4140 and every inbound TCP to 4143.
	 */
	snprintf(cmd, sizeof(cmd),
		 "ip netns exec %s sh -ec '"
		 "iptables -t nat -N SIDETAP_OUTPUT; "
		 "iptables -t nat -A OUTPUT -p tcp -j SIDETAP_OUTPUT; "
		 "iptables -t nat -A SIDETAP_OUTPUT -m owner --uid-owner " PROXY_UID " -j RETURN; "
		 "iptables -t nat -A SIDETAP_OUTPUT -d 127.0.0.1/32 -j RETURN; "
		 "iptables -t nat -A SIDETAP_OUTPUT -p tcp -j REDIRECT --to-ports 4140; "
		 "iptables -t nat -N SIDETAP_INBOUND; "
		 "iptables -t nat -A PREROUTING -p tcp -j SIDETAP_INBOUND; "
		 "iptables -t nat -A SIDETAP_INBOUND -p tcp -j REDIRECT --to-ports 4143'",
		 pod);
	cr_assert_eq(th_sh("%s", cmd), 0, "iptables rules failed");
	cr_assert_eq(th_ns_web(&app, pod, "0.0.0.0", 8080, "pod-app"), 0);
	cr_assert_eq(th_ns_web(&remote_a, remote, REMOTE_IP, 8080, "remote-8080"), 0);
	cr_assert_eq(th_ns_web(&remote_b, remote, REMOTE_IP, 9090, "remote-9090"), 0);
	cr_assert(th_proc_log_wait(&app, "Serving HTTP", 10000), "the app did not start");
	cr_assert(th_proc_log_wait(&remote_a, "Serving HTTP", 10000));
	cr_assert(th_proc_log_wait(&remote_b, "Serving HTTP", 10000));
	snprintf(cmd, sizeof(cmd),
		 "exec setpriv --reuid=" PROXY_UID " --regid=" PROXY_UID " --clear-groups %s "
		 "--inbound-addr 0.0.0.0:4143 --outbound-addr 127.0.0.1:4140 "
		 "--admin-addr 127.0.0.1:4191 --workers 2 --capture off",
		 th_sidetap_bin());
	cr_assert_eq(th_ns_spawn(&sidetap_proc, pod, cmd), 0);
	cr_assert(th_proc_log_wait(&sidetap_proc, "msg=\"started\"", 10000),
		  "sidetap did not start");
	ready = true;
}

static void teardown(void)
{
	if (!pod[0])
		return;
	th_proc_stop(&sidetap_proc, SIGTERM, 5000);
	th_proc_stop(&app, SIGTERM, 2000);
	th_proc_stop(&remote_a, SIGTERM, 2000);
	th_proc_stop(&remote_b, SIGTERM, 2000);
	th_sh("ip netns del %s 2>/dev/null; ip netns del %s 2>/dev/null", pod, remote);
}

TestSuite(netns, .init = setup, .fini = teardown, .timeout = 60);

/* Output of curl run in <ns>, with a trailing newline removed; "" on failure. */
static char *ns_curl(const char *ns, const char *url)
{
	char out[256], cmd[512], *text;
	FILE *f;
	size_t n;

	snprintf(out, sizeof(out), "%s/curl-%s.out", th_tmpdir(), ns);
	snprintf(cmd, sizeof(cmd), "ip netns exec %s curl -s -m 5 -o %s %s", ns, out, url);
	text = calloc(1, 256);
	if (th_sh("%s", cmd) != 0)
		return text;
	f = fopen(out, "r");
	if (f) {
		n = fread(text, 1, 255, f);
		while (n && text[n - 1] == '\n')
			n--;
		text[n] = '\0';
		fclose(f);
	}
	return text;
}

/* A metric of the sidetap in the pod (its admin endpoint is on the pod's loopback). */
static long long pod_metric(const char *series)
{
	char cmd[512], out[256];
	FILE *f;
	long long v = -1;

	snprintf(out, sizeof(out), "%s/metrics-%s.txt", th_tmpdir(), pod);
	snprintf(cmd, sizeof(cmd),
		 "ip netns exec %s curl -s -m 5 http://127.0.0.1:4191/metrics | grep -F '%s ' > %s",
		 pod, series, out);
	if (th_sh("%s", cmd) != 0)
		return -1;
	f = fopen(out, "r");
	if (f) {
		char line[512];

		if (fgets(line, sizeof(line), f) && strlen(line) > strlen(series))
			v = strtoll(line + strlen(series) + 1, NULL, 10);
		fclose(f);
	}
	return v;
}

Test(netns, app_reaches_remote_through_4140_with_original_destination)
{
	char *a = ns_curl(pod, "http://" REMOTE_IP ":8080/"),
	     *b = ns_curl(pod, "http://" REMOTE_IP ":9090/");

	cr_assert_str_eq(a, "remote-8080", "outbound call on port 8080 got '%s'", a);
	cr_assert_str_eq(b, "remote-9090", "outbound call on port 9090 got '%s'", b);
	cr_assert_eq(pod_metric("sidetap_connections_accepted_total{listener=\"outbound\"}"), 2,
		     "the calls did not pass through sidetap's outbound listener");
	cr_assert_gt(
		pod_metric(
			"sidetap_bytes_total{listener=\"outbound\",direction=\"upstream_to_client\"}"),
		0);
	free(a);
	free(b);
}

Test(netns, remote_client_reaches_app_through_4143)
{
	char *a = ns_curl(remote, "http://" POD_IP ":8080/");

	cr_assert_str_eq(a, "pod-app", "inbound call got '%s'", a);
	cr_assert_eq(pod_metric("sidetap_connections_accepted_total{listener=\"inbound\"}"), 1,
		     "the call did not pass through sidetap's inbound listener");
	free(a);
}

Test(netns, inbound_to_a_port_nobody_listens_on_is_refused_once)
{
	char *a = ns_curl(remote, "http://" POD_IP ":7777/");

	cr_assert_str_eq(a, "", "got '%s' from a closed port", a);
	cr_assert_eq(pod_metric("sidetap_connect_errors_total{listener=\"inbound\"}"), 1);
	free(a);
}

Test(netns, loop_guard_closes_connections_to_sidetap_itself)
{
	/* Straight to the outbound listener (loopback is not redirected). */
	char *a = ns_curl(pod, "http://127.0.0.1:4140/");
	/* To the pod IP on the inbound port: redirected to 4143, destination 4143 again. */
	char *b = ns_curl(remote, "http://" POD_IP ":4143/");

	cr_assert_str_eq(a, "");
	cr_assert_str_eq(b, "");
	cr_assert_eq(pod_metric("sidetap_loop_guard_total{listener=\"outbound\"}"), 1);
	cr_assert_eq(pod_metric("sidetap_loop_guard_total{listener=\"inbound\"}"), 1);
	/* And the proxy still works. */
	free(a);
	a = ns_curl(pod, "http://" REMOTE_IP ":8080/");
	cr_assert_str_eq(a, "remote-8080");
	free(a);
	free(b);
}

/* Descriptors the pod's sidetap holds (its pid is the one spawned: ip netns exec, setpriv exec). */
static int sidetap_fds(void)
{
	char path[64];
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)sidetap_proc.pid);
	DIR *d = opendir(path);

	if (!d)
		return -1;
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* TESTPLAN L1: the rules lose sidetap's UID exclusion, so its own upstream connect comes back. */
Test(netns, own_connect_redirected_back_is_closed_not_multiplied)
{
	int fds = sidetap_fds();
	long long accepted;
	char *a;

	cr_assert_gt(fds, 0);
	cr_assert_eq(th_sh("ip netns exec %s iptables -t nat -D SIDETAP_OUTPUT -m owner "
			   "--uid-owner " PROXY_UID " -j RETURN",
			   pod),
		     0);
	a = ns_curl(pod, "http://" REMOTE_IP ":8080/");
	cr_assert_str_eq(a, "", "the looped call got '%s'", a);
	cr_assert_eq(pod_metric("sidetap_loop_guard_total{listener=\"outbound\"}"), 1);
	/* The app's connection and its one looped copy: no storm. */
	accepted = pod_metric("sidetap_connections_accepted_total{listener=\"outbound\"}");
	cr_assert_eq(accepted, 2, "accepted %lld", accepted);
	usleep(300 * 1000);
	cr_assert_eq(pod_metric("sidetap_connections_accepted_total{listener=\"outbound\"}"),
		     accepted);
	/* Closing ends with completions: give a busy machine a moment before counting. */
	for (int i = 0; i < 30 && pod_metric("sidetap_connections_active{listener=\"outbound\"}");
	     i++)
		usleep(100 * 1000);
	cr_assert_eq(pod_metric("sidetap_connections_active{listener=\"outbound\"}"), 0);
	/* A loop would hold hundreds; a few may come and go (admin scrapes, pipes). */
	cr_assert_lt(sidetap_fds(), fds + 8, "descriptors grew from %d", fds);
	free(a);
}
