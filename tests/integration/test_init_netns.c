/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sidetap-init in a network namespace the test creates, read back with
 * iptables-save: each rule once, a second run changes nothing, --cleanup
 * puts the nat table back as it was, other rules and tables survive, and the
 * errors when it lacks privileges. Needs root, ip and iptables; skips with
 * the reason otherwise.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "init_run.h"
#include "th.h"

static char ns[32];

static void require(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root for network namespaces and iptables");
	if (!th_have("ip") || !th_have("iptables-save") || !th_have("iptables-restore") ||
	    !th_have("ip6tables-save") || !th_have("setpriv"))
		cr_skip_test("needs ip (iproute2), iptables and setpriv: cmake/deps.sh test");
	if (!th_netns_works())
		cr_skip_test("ip netns add fails here (no CAP_SYS_ADMIN?)");
}

/* A namespace with rules of someone else's: a chain of theirs, a jump to it, a filter rule. */
static void setup(void)
{
	require();
	snprintf(ns, sizeof(ns), "st-init-%d", (int)getpid());
	cr_assert_eq(th_sh("ip netns add %s && ip -n %s link set lo up", ns, ns), 0);
	cr_assert_eq(th_sh("ip netns exec %s sh -ec '"
			   "iptables -t nat -N USER_CHAIN; "
			   "iptables -t nat -A USER_CHAIN -p tcp --dport 7 -j RETURN; "
			   "iptables -t nat -A OUTPUT -p tcp --dport 7 -j USER_CHAIN; "
			   "iptables -t nat -A PREROUTING -p udp --dport 53 -j RETURN; "
			   "iptables -A INPUT -p tcp --dport 22 -j ACCEPT; "
			   "ip6tables -t nat -A OUTPUT -p tcp --dport 7 -j RETURN'",
			   ns),
		     0, "the namespace's own rules could not be written");
}

static void teardown(void)
{
	if (ns[0])
		th_sh("ip netns del %s 2>/dev/null", ns);
	ti_tmpdir_remove();
}

TestSuite(init_netns, .init = setup, .fini = teardown, .timeout = 60);

/*
 * Runs sidetap-init in the namespace with <args> (NULL-terminated) and
 * <path_env> (NULL: the clean environment). Returns its exit status; stdout
 * and stderr to *<out> and *<err> when not NULL.
 */
static int init_in_ns(const char *const args[], const char *path_env, char **out, char **err)
{
	char *argv[40] = { "ip", "netns", "exec", ns, INIT_BIN };
	char *envp[4] = { NULL };
	char *const *clean = ti_clean_env();
	char *o = NULL, *e = NULL;
	unsigned n = 5;
	int ret;

	for (unsigned i = 0; args[i]; i++)
		argv[n++] = (char *)args[i];
	argv[n] = NULL;
	envp[0] = path_env ? (char *)path_env : clean[0];
	envp[1] = "LC_ALL=C";
	ret = ti_run(argv, envp, &o, &e);
	if (out)
		*out = o;
	else
		free(o);
	if (err)
		*err = e;
	else
		free(e);
	return ret;
}

/* Runs sidetap-init with <args> and fails the test unless it exits 0. */
static void init_ok(const char *const args[])
{
	char *err;
	int ret = init_in_ns(args, NULL, NULL, &err);

	cr_assert_eq(ret, 0, "sidetap-init exited %d: %s", ret, err);
	free(err);
}

#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define NO_ARGS ((const char *const[]){ NULL })

/* <prog> (iptables-save or ip6tables-save) -t <table> of the namespace, normalized. */
static char *save(const char *prog, const char *table)
{
	char *argv[] = { "ip", "netns", "exec", ns, (char *)prog, "-t", (char *)table, NULL };
	char *out, *norm;

	cr_assert_eq(ti_run(argv, NULL, &out, NULL), 0, "%s -t %s failed", prog, table);
	norm = ti_save_normalize(out);
	free(out);
	return norm;
}

/* Each "-A" and chain line of <dry> (one family's --dry-run) is in <saved> exactly once. */
static void assert_each_rule_once(const char *dry, const char *saved)
{
	unsigned rules = 0;

	for (const char *p = dry; *p;) {
		const char *nl = strchr(p, '\n');
		char line[512];

		snprintf(line, sizeof(line), "%.*s", (int)(nl - p), p);
		if (strncmp(line, "-A ", 3) == 0) {
			cr_expect_eq(ti_count_line(saved, line), 1, "'%s' is in the table %u times",
				     line, ti_count_line(saved, line));
			rules++;
		} else if (line[0] == ':') {
			/* Saved as ":NAME - [0:0]", exactly as declared. */
			cr_expect_eq(ti_count_line(saved, line), 1, "chain '%s' missing", line);
		}
		p = nl + 1;
	}
	cr_assert_gt(rules, 8, "the dry run held %u rules", rules);
}

/* The part of a --dry-run output for one family (from its "# ..." header to COMMIT). */
static char *dry_run_family(const char *const args[], const char *restore_prog)
{
	char *out, *err, *start, *end, *part;
	const char *all[32];
	unsigned n = 0;

	all[n++] = "--dry-run";
	for (unsigned i = 0; args[i]; i++)
		all[n++] = args[i];
	all[n] = NULL;
	cr_assert_eq(init_in_ns(all, NULL, &out, &err), 0, "%s", err);
	start = strstr(out, strncmp(restore_prog, "ip6", 3) == 0 ?
				    "# sidetap-init: ip6tables-restore" :
				    "# sidetap-init: iptables-restore");
	cr_assert(start, "no %s section in: %s", restore_prog, out);
	end = strstr(start, "COMMIT\n");
	cr_assert(end);
	part = strndup(start, (size_t)(end - start) + 7);
	free(out);
	free(err);
	return part;
}

static const char *const rich[] = { "--inbound-port",
				    "15006",
				    "--outbound-port",
				    "15001",
				    "--proxy-uid",
				    "1337",
				    "--proxy-gid",
				    "1338",
				    "--skip-inbound-ports",
				    "22,9000:9100",
				    "--skip-outbound-ports",
				    "25,3306-3307",
				    "--skip-outbound-cidrs",
				    "10.96.0.0/12,169.254.169.254,fd00::/8",
				    "--ipv6",
				    "off",
				    NULL };

Test(init_netns, rules_are_in_the_table_once_as_the_dry_run_prints_them)
{
	char *nat, *dry = dry_run_family(rich, "iptables-restore");

	init_ok(rich);
	nat = save("iptables-save", "nat");
	assert_each_rule_once(dry, nat);
	/* The namespace's own rules are still there, once. */
	cr_assert_eq(ti_count_line(nat, "-A OUTPUT -p tcp -m tcp --dport 7 -j USER_CHAIN"), 1);
	cr_assert_eq(ti_count_line(nat, "-A USER_CHAIN -p tcp -m tcp --dport 7 -j RETURN"), 1);
	cr_assert_eq(ti_count_line(nat, "-A PREROUTING -p udp -m udp --dport 53 -j RETURN"), 1);
	free(nat);
	free(dry);
}

Test(init_netns, second_run_leaves_the_tables_identical)
{
	char *nat1, *nat2, *filter1, *filter2;

	init_ok(rich);
	nat1 = save("iptables-save", "nat");
	filter1 = save("iptables-save", "filter");
	init_ok(rich);
	nat2 = save("iptables-save", "nat");
	filter2 = save("iptables-save", "filter");
	cr_assert_str_eq(nat1, nat2, "the second run changed the nat table");
	cr_assert_str_eq(filter1, filter2);
	free(nat1);
	free(nat2);
	free(filter1);
	free(filter2);
}

Test(init_netns, run_with_other_flags_replaces_the_rules)
{
	char *want, *got;

	init_ok(NO_ARGS);
	want = save("iptables-save", "nat");
	init_ok(rich);
	got = save("iptables-save", "nat");
	cr_assert_str_neq(want, got, "the rich flags changed nothing");
	free(got);
	init_ok(NO_ARGS);
	got = save("iptables-save", "nat");
	cr_assert_str_eq(want, got, "rules of the earlier run were left behind");
	free(want);
	free(got);
}

Test(init_netns, cleanup_restores_the_tables_exactly)
{
	char *nat0 = save("iptables-save", "nat"), *filter0 = save("iptables-save", "filter");
	char *nat6_0 = save("ip6tables-save", "nat"), *nat, *filter, *nat6, *err;

	init_ok(ARGS("--ipv6", "on"));
	nat = save("iptables-save", "nat");
	cr_assert_str_neq(nat0, nat);
	free(nat);
	init_ok(ARGS("--cleanup", "--ipv6", "on"));
	nat = save("iptables-save", "nat");
	filter = save("iptables-save", "filter");
	nat6 = save("ip6tables-save", "nat");
	cr_assert_str_eq(nat0, nat, "cleanup left the nat table different");
	cr_assert_str_eq(filter0, filter);
	cr_assert_str_eq(nat6_0, nat6, "cleanup left the IPv6 nat table different");
	free(nat);
	/* Again, on a clean namespace: nothing to do, and it says so. */
	cr_assert_eq(init_in_ns(ARGS("--cleanup"), NULL, NULL, &err), 0, "%s", err);
	cr_assert(strstr(err, "msg=\"nothing to remove\" component=init family=ipv4"), "%s", err);
	nat = save("iptables-save", "nat");
	cr_assert_str_eq(nat0, nat);
	free(err);
	free(nat);
	free(nat0);
	free(filter0);
	free(filter);
	free(nat6_0);
	free(nat6);
}

Test(init_netns, duplicated_or_changed_jumps_become_one)
{
	char *nat;

	init_ok(NO_ARGS);
	/* An older or hand-edited set-up: our jump twice, and one without -p tcp. */
	cr_assert_eq(th_sh("ip netns exec %s sh -ec '"
			   "iptables -t nat -A PREROUTING -p tcp -j SIDETAP_INBOUND; "
			   "iptables -t nat -I OUTPUT 1 -j SIDETAP_OUTPUT'",
			   ns),
		     0);
	init_ok(NO_ARGS);
	nat = save("iptables-save", "nat");
	cr_assert_eq(ti_count_line(nat, "-A PREROUTING -p tcp -j SIDETAP_INBOUND"), 1, "%s", nat);
	cr_assert_eq(ti_count_line(nat, "-A OUTPUT -p tcp -j SIDETAP_OUTPUT"), 1, "%s", nat);
	cr_assert_eq(ti_count_line(nat, "-A OUTPUT -j SIDETAP_OUTPUT"), 0, "%s", nat);
	cr_assert_eq(ti_count_line(nat, "-A OUTPUT -p tcp -m tcp --dport 7 -j USER_CHAIN"), 1);
	free(nat);
}

Test(init_netns, cleanup_dry_run_prints_the_deletions_and_changes_nothing)
{
	char *envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SIDETAP_INIT_DRY_RUN=1",
			 "SIDETAP_INIT_CLEANUP=true", NULL };
	char *argv[] = { "ip", "netns", "exec", ns, INIT_BIN, NULL };
	char *before, *after, *out, *err;

	init_ok(NO_ARGS);
	before = save("iptables-save", "nat");
	cr_assert_eq(init_in_ns(ARGS("--cleanup", "--dry-run"), NULL, &out, &err), 0, "%s", err);
	cr_assert_eq(ti_count_line(out, "-D PREROUTING -p tcp -j SIDETAP_INBOUND"), 1, "%s", out);
	cr_assert_eq(ti_count_line(out, "-X SIDETAP_OUTPUT_REDIRECT"), 1, "%s", out);
	after = save("iptables-save", "nat");
	cr_assert_str_eq(before, after, "--cleanup --dry-run changed the table");
	free(out);
	free(err);
	free(after);
	/* The variables work as the flags do. */
	cr_assert_eq(ti_run(argv, envp, &out, &err), 0, "%s", err);
	cr_assert(strstr(out, "-X SIDETAP_INBOUND"), "%s", out);
	after = save("iptables-save", "nat");
	cr_assert_str_eq(before, after, "SIDETAP_INIT_DRY_RUN=1 changed the table");
	free(out);
	free(err);
	free(after);
	free(before);
}

Test(init_netns, ipv6_rules_follow_the_flag_and_a_global_address)
{
	char *nat6_0 = save("ip6tables-save", "nat"), *nat6, *dry;

	/* auto, no global IPv6 address: IPv4 only. */
	init_ok(NO_ARGS);
	nat6 = save("ip6tables-save", "nat");
	cr_assert_str_eq(nat6_0, nat6, "auto wrote IPv6 rules into a namespace without IPv6");
	free(nat6);
	/* auto with a global address (on a veth: lo does not count). */
	cr_assert_eq(th_sh("ip -n %s link add v0 type veth peer name v1 && "
			   "ip -n %s addr add fd00:232::1/64 dev v0 nodad && "
			   "ip -n %s link set v0 up && ip -n %s link set v1 up",
			   ns, ns, ns, ns),
		     0);
	init_ok(ARGS("--skip-outbound-cidrs", "10.0.0.0/8,fd00:1::/32"));
	dry = dry_run_family(ARGS("--skip-outbound-cidrs", "10.0.0.0/8,fd00:1::/32"),
			     "ip6tables-restore");
	nat6 = save("ip6tables-save", "nat");
	assert_each_rule_once(dry, nat6);
	cr_assert_eq(ti_count_line(nat6, "-A SIDETAP_OUTPUT -d fd00:1::/32 -j RETURN"), 1);
	cr_assert(!strstr(nat6, "10.0.0.0"));
	cr_assert_eq(ti_count_line(nat6, "-A OUTPUT -p tcp -m tcp --dport 7 -j RETURN"), 1);
	free(nat6);
	/* off: cleanup leaves IPv6 alone; auto: removes it. */
	init_ok(ARGS("--cleanup", "--ipv6", "off"));
	nat6 = save("ip6tables-save", "nat");
	cr_assert(strstr(nat6, "SIDETAP_OUTPUT"));
	free(nat6);
	init_ok(ARGS("--cleanup"));
	nat6 = save("ip6tables-save", "nat");
	cr_assert_str_eq(nat6_0, nat6);
	free(nat6);
	free(nat6_0);
	free(dry);
}

/* A directory whose iptables programs are the legacy (x_tables) backend. */
static const char *legacy_path(void)
{
	static char env[512];
	char dir[300];

	if (access("/usr/sbin/xtables-legacy-multi", X_OK) != 0)
		cr_skip_test("needs /usr/sbin/xtables-legacy-multi (Debian's iptables)");
	snprintf(dir, sizeof(dir), "%s/legacy", th_tmpdir());
	cr_assert_eq(th_sh("mkdir -p %s && for p in iptables-restore iptables-save "
			   "ip6tables-restore ip6tables-save; do "
			   "ln -sf /usr/sbin/xtables-legacy-multi %s/$p; done",
			   dir, dir),
		     0);
	snprintf(env, sizeof(env), "PATH=%s", dir);
	return env;
}

Test(init_netns, legacy_backend_is_idempotent_and_cleaned_up_too)
{
	const char *path = legacy_path();
	char *nat0 = save("iptables-legacy-save", "nat"), *nat1, *nat2, *err;

	cr_assert_eq(init_in_ns(rich, path, NULL, &err), 0, "%s", err);
	free(err);
	nat1 = save("iptables-legacy-save", "nat");
	cr_assert_eq(ti_count_line(nat1, "-A OUTPUT -p tcp -j SIDETAP_OUTPUT"), 1, "%s", nat1);
	cr_assert_eq(init_in_ns(rich, path, NULL, &err), 0, "%s", err);
	free(err);
	nat2 = save("iptables-legacy-save", "nat");
	cr_assert_str_eq(nat1, nat2);
	free(nat2);
	cr_assert_eq(init_in_ns(ARGS("--cleanup"), path, NULL, &err), 0, "%s", err);
	free(err);
	nat2 = save("iptables-legacy-save", "nat");
	cr_assert_str_eq(nat0, nat2);
	free(nat0);
	free(nat1);
	free(nat2);
}

Test(init_netns, without_net_admin_exits_1_naming_the_capabilities)
{
	char *argv[] = { "ip",	   "netns",   "exec",
			 ns,	   "setpriv", "--bounding-set=-net_admin,-net_raw",
			 INIT_BIN, NULL };
	char *nat0 = save("iptables-save", "nat"), *nat, *out, *err;

	cr_assert_eq(ti_run(argv, ti_clean_env(), &out, &err), 1, "%s", err);
	cr_assert(strstr(err, "NET_ADMIN") && strstr(err, "NET_RAW") && strstr(err, "level=error"),
		  "%s", err);
	nat = save("iptables-save", "nat");
	cr_assert_str_eq(nat0, nat);
	free(out);
	free(err);
	free(nat);
	free(nat0);
}

Test(init_netns, iptables_refusal_is_explained_with_the_capabilities)
{
	/* Legacy iptables needs a raw socket: NET_ADMIN alone is refused by iptables itself. */
	const char *path = legacy_path();
	char *argv[] = { "ip",	"netns",      "exec",	ns,  "setpriv", "--bounding-set=-net_raw",
			 "env", (char *)path, INIT_BIN, NULL };
	char *out, *err;

	cr_assert_eq(ti_run(argv, ti_clean_env(), &out, &err), 1, "%s", err);
	cr_assert(strstr(err, "stderr=") && strstr(err, "Permission denied"), "%s", err);
	cr_assert(strstr(err, "NET_ADMIN and NET_RAW"), "%s", err);
	free(out);
	free(err);
}

Test(init_netns, ipv6_on_without_ip6tables_exits_1_before_changing_anything)
{
	char dir[300], path[320], *nat0 = save("iptables-save", "nat"), *nat, *out, *err;

	snprintf(dir, sizeof(dir), "%s/v4only", th_tmpdir());
	cr_assert_eq(th_sh("mkdir -p %s && ln -sf \"$(command -v iptables-restore)\" %s/ && "
			   "ln -sf \"$(command -v iptables-save)\" %s/",
			   dir, dir, dir),
		     0);
	snprintf(path, sizeof(path), "PATH=%s", dir);
	cr_assert_eq(init_in_ns(ARGS("--ipv6", "on"), path, &out, &err), 1, "%s", err);
	cr_assert(strstr(err, "program=ip6tables-restore") && strstr(err, "--ipv6 off"), "%s", err);
	nat = save("iptables-save", "nat");
	cr_assert_str_eq(nat0, nat, "IPv4 rules were written although IPv6 could not be");
	free(out);
	free(err);
	free(nat);
	free(nat0);
}
