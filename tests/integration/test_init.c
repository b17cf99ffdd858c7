/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sidetap-init without a network namespace: the rules --dry-run prints
 * against the golden files in tests/golden (TESTPLAN L4), and every bad flag
 * or variable an exit status 2 with a message naming it.
 *
 * After a deliberate change to the rules, regenerate the golden files and
 * review their diff:
 *   SIDETAP_UPDATE_GOLDEN=1 build/bin/test_integration_init --filter 'init_golden/dry_run*'
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "init_run.h"
#include "th.h"

#define ARGV_MAX 32

struct golden_case {
	const char *name; /* tests/golden/init-<name>.golden */
	const char *args[ARGV_MAX];
	const char *env[8]; /* added to the clean environment */
};

static const struct golden_case golden_cases[] = {
	{ "defaults", { "--dry-run" }, { NULL } },
	{ "rich",
	  { "--dry-run", "--inbound-port", "15006", "--outbound-port", "15001", "--admin-port",
	    "15020", "--proxy-uid", "1337", "--proxy-gid", "1338", "--skip-inbound-ports",
	    "22,9000:9100,15020", "--skip-outbound-ports", "25, 3306-3307,25",
	    "--skip-outbound-cidrs",
	    "10.96.0.0/12,169.254.169.254,fd00::/8,2001:db8:1::7/48,10.1.2.3/8", "--ipv6", "on" },
	  { NULL } },
	{ "ipv6-off",
	  { "--dry-run", "--ipv6=off", "--skip-outbound-cidrs=10.0.0.0/8,fd00::/8,0.0.0.0/0" },
	  { NULL } },
	/* Inbound sources skipped: -s rules in each family's inbound chain, duplicates once. */
	{ "skip-sources",
	  { "--dry-run", "--ipv6", "on", "--skip-inbound-cidrs",
	    "10.0.5.0/24,192.0.2.7,fd00:5::/64,10.0.5.9/24" },
	  { NULL } },
	/* Variables set what no flag sets; a flag wins over its variable; empty is unset. */
	{ "env",
	  { "--dry-run", "--proxy-uid", "1001" },
	  { "SIDETAP_INIT_PROXY_UID=1000", "SIDETAP_INIT_SKIP_OUTBOUND_PORTS=443,8443",
	    "SIDETAP_INIT_SKIP_INBOUND_PORTS=22", "SIDETAP_INIT_IPV6=off",
	    "SIDETAP_INIT_INBOUND_PORT=", NULL } },
};
#define NGOLDEN (sizeof(golden_cases) / sizeof(golden_cases[0]))

/* Runs sidetap-init with <args> (NULL-terminated) and the clean environment plus <env>. */
static int run_init(const char *const args[], const char *const env[], char **out, char **err)
{
	char *argv[ARGV_MAX + 2] = { INIT_BIN };
	char *envp[16];
	char *const *clean = ti_clean_env();
	unsigned n = 1, e = 0;

	for (unsigned i = 0; args[i]; i++)
		argv[n++] = (char *)args[i];
	argv[n] = NULL;
	for (unsigned i = 0; clean[i]; i++)
		envp[e++] = clean[i];
	for (unsigned i = 0; env && env[i]; i++)
		envp[e++] = (char *)env[i];
	envp[e] = NULL;
	return ti_run(argv, envp, out, err);
}

static void golden_path(const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/init-%s.golden", GOLDEN_DIR, name);
}

/* Prints the first line where <a> and <b> differ, for the failure message. */
static void first_difference(const char *a, const char *b, char *buf, size_t len)
{
	unsigned line = 1;
	size_t i = 0, start = 0;

	while (a[i] && a[i] == b[i]) {
		if (a[i] == '\n') {
			line++;
			start = i + 1;
		}
		i++;
	}
	snprintf(buf, len, "line %u: golden '%.*s', now '%.*s'", line,
		 (int)strcspn(a + start, "\n"), a + start, (int)strcspn(b + start, "\n"),
		 b + start);
}

TestSuite(init_golden, .fini = ti_tmpdir_remove);

Test(init_golden, dry_run_equals_the_golden_files_byte_for_byte)
{
	bool update = getenv("SIDETAP_UPDATE_GOLDEN") != NULL;

	for (unsigned i = 0; i < NGOLDEN; i++) {
		const struct golden_case *c = &golden_cases[i];
		char path[512], diff[512], *out, *err, *want;

		cr_assert_eq(run_init(c->args, c->env, &out, &err), 0, "case %s: %s", c->name, err);
		cr_assert_str_empty(err, "case %s wrote to stderr: %s", c->name, err);
		golden_path(c->name, path, sizeof(path));
		if (update) {
			FILE *f = fopen(path, "w");

			cr_assert(f, "cannot write %s", path);
			fputs(out, f);
			fclose(f);
			fprintf(stderr, "updated %s\n", path);
		}
		want = ti_read_file(path);
		cr_assert(want, "%s is missing: regenerate with SIDETAP_UPDATE_GOLDEN=1", path);
		if (strcmp(want, out) != 0) {
			first_difference(want, out, diff, sizeof(diff));
			cr_assert_fail(
				"case %s differs from %s (%s); if the change is meant, "
				"regenerate with SIDETAP_UPDATE_GOLDEN=1 and review the diff",
				c->name, path, diff);
		}
		free(want);
		free(out);
		free(err);
	}
}

Test(init_golden, every_golden_file_belongs_to_a_case)
{
	DIR *d = opendir(GOLDEN_DIR);
	struct dirent *de;
	unsigned found = 0;

	cr_assert(d, "cannot open %s", GOLDEN_DIR);
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		bool known = false;

		if (strncmp(de->d_name, "init-", 5) != 0 || n < 12 ||
		    strcmp(de->d_name + n - 7, ".golden") != 0)
			continue;
		for (unsigned i = 0; i < NGOLDEN; i++) {
			char name[256];

			snprintf(name, sizeof(name), "init-%s.golden", golden_cases[i].name);
			known = known || strcmp(name, de->d_name) == 0;
		}
		cr_expect(known, "%s/%s is stale: no case in test_init.c produces it; delete it",
			  GOLDEN_DIR, de->d_name);
		found++;
	}
	closedir(d);
	cr_assert_eq(found, NGOLDEN, "expected %zu golden files in %s, found %u", NGOLDEN,
		     GOLDEN_DIR, found);
}

Test(init_golden, golden_rules_have_the_guards_the_testplan_asks_for)
{
	char path[512], *text;

	golden_path("defaults", path, sizeof(path));
	text = ti_read_file(path);
	cr_assert(text);
	/* UID and GID RETURN, loopback handling, the admin port, each once per family. */
	cr_assert_eq(ti_count_line(text, "-A SIDETAP_OUTPUT -m owner --uid-owner 2102 -j RETURN"),
		     2);
	cr_assert_eq(ti_count_line(text, "-A SIDETAP_OUTPUT -m owner --gid-owner 2102 -j RETURN"),
		     2);
	cr_assert_eq(ti_count_line(text, "-A SIDETAP_OUTPUT -d 127.0.0.0/8 -o lo -j RETURN"), 1);
	cr_assert_eq(ti_count_line(text, "-A SIDETAP_OUTPUT -d ::1/128 -o lo -j RETURN"), 1);
	cr_assert_eq(ti_count_line(text, "-A SIDETAP_INBOUND -p tcp -m tcp --dport 4191 -j RETURN"),
		     2);
	cr_assert_eq(ti_count_line(text, "-A PREROUTING -p tcp -j SIDETAP_INBOUND"), 2);
	cr_assert_eq(ti_count_line(text, "-A OUTPUT -p tcp -j SIDETAP_OUTPUT"), 2);
	free(text);
}

struct bad_case {
	const char *args[8];
	const char *env[4];
	const char *expect[3]; /* each must appear in stderr */
};

#define PORT_OK "a TCP port from 1 to 65535"
#define ID_OK "a number from 0 to 4294967294"
#define LIST_OK "ranges LO:HI or LO-HI"
#define CIDR_OK "IPv4 or IPv6 addresses or CIDRs"

static const struct bad_case bad_cases[] = {
	{ { "--inbound-port", "0" }, { NULL }, { "--inbound-port", "'0'", PORT_OK } },
	{ { "--inbound-port", "65536" }, { NULL }, { "--inbound-port", "'65536'", PORT_OK } },
	{ { "--inbound-port", "" }, { NULL }, { "--inbound-port", "''", PORT_OK } },
	{ { "--outbound-port=http" }, { NULL }, { "--outbound-port", "'http'", PORT_OK } },
	{ { "--outbound-port", "+80" }, { NULL }, { "--outbound-port", "'+80'", PORT_OK } },
	{ { "--admin-port", "-1" }, { NULL }, { "--admin-port", "'-1'", PORT_OK } },
	{ { "--admin-port", "99999999999999999999999" },
	  { NULL },
	  { "--admin-port", "'99999999999999999999999'", PORT_OK } },
	{ { "--proxy-uid", "-1" }, { NULL }, { "--proxy-uid", "'-1'", ID_OK } },
	{ { "--proxy-uid", "4294967295" }, { NULL }, { "--proxy-uid", "'4294967295'", ID_OK } },
	{ { "--proxy-gid", "staff" }, { NULL }, { "--proxy-gid", "'staff'", ID_OK } },
	{ { "--skip-inbound-ports", "80,,90" },
	  { NULL },
	  { "--skip-inbound-ports", "'80,,90'", LIST_OK } },
	{ { "--skip-inbound-ports", "9100:9000" },
	  { NULL },
	  { "--skip-inbound-ports", "'9100:9000'", LIST_OK } },
	{ { "--skip-inbound-ports", "22 80" },
	  { NULL },
	  { "--skip-inbound-ports", "'22 80'", LIST_OK } },
	{ { "--skip-outbound-ports", "70000" },
	  { NULL },
	  { "--skip-outbound-ports", "'70000'", LIST_OK } },
	{ { "--skip-outbound-ports", "80," },
	  { NULL },
	  { "--skip-outbound-ports", "'80,'", LIST_OK } },
	{ { "--skip-outbound-ports", "1:2:3" },
	  { NULL },
	  { "--skip-outbound-ports", "'1:2:3'", LIST_OK } },
	{ { "--skip-outbound-ports", "0:80" },
	  { NULL },
	  { "--skip-outbound-ports", "'0:80'", LIST_OK } },
	{ { "--skip-outbound-ports", "443:" },
	  { NULL },
	  { "--skip-outbound-ports", "'443:'", LIST_OK } },
	{ { "--skip-outbound-cidrs", "10.0.0.0/33" },
	  { NULL },
	  { "--skip-outbound-cidrs", "'10.0.0.0/33'", CIDR_OK } },
	{ { "--skip-outbound-cidrs", "300.1.1.1" },
	  { NULL },
	  { "--skip-outbound-cidrs", "'300.1.1.1'", CIDR_OK } },
	{ { "--skip-outbound-cidrs", "10.1.1" },
	  { NULL },
	  { "--skip-outbound-cidrs", "'10.1.1'", CIDR_OK } },
	{ { "--skip-outbound-cidrs", "fd00::/129" },
	  { NULL },
	  { "--skip-outbound-cidrs", "'fd00::/129'", CIDR_OK } },
	{ { "--skip-outbound-cidrs", "fd00:::1" },
	  { NULL },
	  { "--skip-outbound-cidrs", "'fd00:::1'", CIDR_OK } },
	{ { "--skip-outbound-cidrs", "10.0.0.0/" },
	  { NULL },
	  { "--skip-outbound-cidrs", "'10.0.0.0/'", CIDR_OK } },
	{ { "--skip-outbound-cidrs", "10.0.0.0/+8" },
	  { NULL },
	  { "--skip-outbound-cidrs", "'10.0.0.0/+8'", CIDR_OK } },
	{ { "--skip-outbound-cidrs", "10.0.0.0/8/8" },
	  { NULL },
	  { "--skip-outbound-cidrs", "'10.0.0.0/8/8'", CIDR_OK } },
	{ { "--skip-outbound-cidrs", "example.com" },
	  { NULL },
	  { "--skip-outbound-cidrs", "'example.com'", CIDR_OK } },
	{ { "--skip-outbound-cidrs", "10.0.0.0/8,," },
	  { NULL },
	  { "--skip-outbound-cidrs", "'10.0.0.0/8,,'", CIDR_OK } },
	{ { "--skip-inbound-cidrs", "10.0.0.0/33" },
	  { NULL },
	  { "--skip-inbound-cidrs", "'10.0.0.0/33'", CIDR_OK } },
	{ { "--ipv6", "yes" }, { NULL }, { "--ipv6", "'yes'", "auto, on, off" } },
	{ { "--dry-run=yes" }, { NULL }, { "--dry-run", "takes no value", "'yes'" } },
	{ { "--inbound-port" }, { NULL }, { "--inbound-port", "needs a value", "PORT" } },
	{ { "--frobnicate", "1" }, { NULL }, { "unknown flag", "'--frobnicate'", "--help" } },
	{ { "4143" }, { NULL }, { "unexpected argument", "'4143'", "--help" } },
	{ { "--inbound-port", "4140" }, { NULL }, { "--inbound-port", "--outbound-port", "4140" } },
	{ { "--admin-port", "4143" }, { NULL }, { "--admin-port", "4143", "must differ" } },
	{ { NULL },
	  { "SIDETAP_INIT_OUTBOUND_PORT=x", NULL },
	  { "SIDETAP_INIT_OUTBOUND_PORT", "'x'", PORT_OK } },
	{ { NULL },
	  { "SIDETAP_INIT_SKIP_OUTBOUND_CIDRS=10.0.0.0/99", NULL },
	  { "SIDETAP_INIT_SKIP_OUTBOUND_CIDRS", "'10.0.0.0/99'", CIDR_OK } },
	{ { NULL },
	  { "SIDETAP_INIT_DRY_RUN=maybe", NULL },
	  { "SIDETAP_INIT_DRY_RUN", "'maybe'", "1, true, yes, on, 0, false, no, off" } },
	{ { NULL },
	  { "SIDETAP_INIT_IPV6=v6", NULL },
	  { "SIDETAP_INIT_IPV6", "'v6'", "auto, on, off" } },
};

TestSuite(init_flags, .fini = ti_tmpdir_remove);

Test(init_flags, each_bad_value_exits_2_naming_flag_value_and_what_is_accepted)
{
	for (unsigned i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *c = &bad_cases[i];
		const char *args[12] = { "--dry-run" };
		char *out, *err;
		unsigned n = 1;
		int status;

		/* --dry-run first: a value wrongly accepted never touches this machine's rules. */
		for (unsigned k = 0; c->args[k]; k++)
			args[n++] = c->args[k];
		args[n] = NULL;
		status = run_init(args, c->env, &out, &err);
		cr_expect_eq(status, 2, "case %u (%s %s): exit %d, stderr: %s", i,
			     c->args[0] ? c->args[0] : c->env[0], c->args[1] ? c->args[1] : "",
			     status, err);
		for (unsigned k = 0; k < 3 && c->expect[k]; k++)
			cr_expect(strstr(err, c->expect[k]), "case %u: '%s' missing from: %s", i,
				  c->expect[k], err);
		cr_expect_str_empty(out, "case %u printed rules: %s", i, out);
		cr_expect(!strstr(err, "AddressSanitizer") && !strstr(err, "runtime error"),
			  "case %u: %s", i, err);
		free(out);
		free(err);
	}
}

Test(init_flags, list_longer_than_256_entries_is_refused)
{
	char list[4096] = "", *out, *err;
	const char *args[] = { "--dry-run", "--skip-outbound-ports", list, NULL };

	for (unsigned p = 1; p <= 257; p++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%u", p > 1 ? "," : "",
			 p);
	cr_assert_eq(run_init(args, NULL, &out, &err), 2, "%s", err);
	cr_assert(strstr(err, "--skip-outbound-ports") && strstr(err, "at most 256 entries"), "%s",
		  err);
	free(out);
	free(err);
	/* 256 is fine: one rule each. */
	strrchr(list, ',')[0] = '\0';
	cr_assert_eq(run_init(args, NULL, &out, &err), 0, "%s", err);
	cr_assert_eq(ti_count_line(out, "-A SIDETAP_OUTPUT -p tcp -m tcp --dport 256 -j RETURN"),
		     2);
	free(out);
	free(err);
}

Test(init_flags, help_lists_every_flag_with_its_variable)
{
	static const char *const flags[] = {
		"inbound-port",
		"outbound-port",
		"admin-port",
		"proxy-uid",
		"proxy-gid",
		"skip-inbound-ports",
		"skip-inbound-cidrs",
		"skip-outbound-ports",
		"skip-outbound-cidrs",
		"ipv6",
		"dry-run",
		"cleanup",
	};
	const char *args[] = { "--help", NULL };
	char *out, *err;

	cr_assert_eq(run_init(args, NULL, &out, &err), 0);
	cr_assert(strstr(out, "usage: sidetap-init"));
	cr_assert(strstr(out, "NET_ADMIN") && strstr(out, "NET_RAW"));
	for (unsigned i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		char flag[64], env[64];
		size_t n = 0;

		snprintf(flag, sizeof(flag), "--%s", flags[i]);
		n = (size_t)snprintf(env, sizeof(env), "SIDETAP_INIT_");
		for (const char *p = flags[i]; *p; p++)
			env[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
		env[n] = '\0';
		cr_expect(strstr(out, flag), "%s missing from --help", flag);
		cr_expect(strstr(out, env), "%s missing from --help", env);
	}
	free(out);
	free(err);
	args[0] = "--version";
	cr_assert_eq(run_init(args, NULL, &out, &err), 0);
	cr_assert(strstr(out, "sidetap-init " SIDETAP_VERSION), "%s", out);
	free(out);
	free(err);
}

Test(init_flags, missing_iptables_exits_1_naming_the_program_and_the_package)
{
	char *argv[] = { INIT_BIN, NULL };
	char path[300], *envp[] = { path, NULL };
	char *out, *err;

	/* An empty directory as PATH: nothing to run, so nothing on this machine can change. */
	snprintf(path, sizeof(path), "PATH=%s/empty-path", th_tmpdir());
	cr_assert_eq(th_sh("mkdir -p %s/empty-path", th_tmpdir()), 0);
	cr_assert_eq(ti_run(argv, envp, &out, &err), 1, "%s", err);
	cr_assert(strstr(err, "program=iptables-restore") &&
			  strstr(err, "apt-get install iptables"),
		  "%s", err);
	cr_assert(strstr(err, "level=error"), "%s", err);
	free(out);
	free(err);
}
