/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of sidetapctl as a process: ca create (files, modes, refusals), tls frames in dump. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "th.h"
#include "tap/frame.h"
#include "tlx/tls.h"

/* Runs sidetapctl with <args> to completion; returns its exit status and its output. */
static int ctl(char *const args[], char **log)
{
	char *argv[16] = { SIDETAPCTL_BIN };
	struct th_proc p;
	unsigned n = 1;
	int ret;

	for (unsigned i = 0; args[i]; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	cr_assert_eq(th_spawn(&p, argv, NULL), 0);
	ret = th_proc_wait(&p, 20000);
	if (ret == -ETIMEDOUT)
		th_proc_stop(&p, SIGKILL, 1000);
	*log = th_proc_log(&p);
	return ret;
}

#define ARGS(...) ((char *const[]){ __VA_ARGS__, NULL })

static const char *new_dir(void)
{
	static char dir[256];

	snprintf(dir, sizeof(dir), "%s/ctl.XXXXXX", th_tmpdir());
	cr_assert_not_null(mkdtemp(dir));
	return dir;
}

static mode_t mode_of(const char *dir, const char *file)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
	return st.st_mode & 07777;
}

Test(ctl_ca, create_writes_a_ca_the_library_loads)
{
	char out[300], crt[320], key[320], err[512], *log;
	struct tlx_ca *ca = NULL;

	snprintf(out, sizeof(out), "%s/new", new_dir());
	cr_assert_eq(
		ctl(ARGS("ca", "create", "--out", out, "--name", "Test Cluster CA", "--days", "30"),
		    &log),
		0, "%s", log);
	cr_expect(strstr(log, "ca.crt") && strstr(log, "ca.key"), "%s", log);
	free(log);
	cr_expect_eq(mode_of(out, "."), 0700, "the directory is made private");
	cr_expect_eq(mode_of(out, "ca.key"), 0600);
	cr_expect_eq(mode_of(out, "ca.crt"), 0644);
	/* A CA, as a person reads it, valid for 30 days and not 31. */
	cr_expect_eq(th_sh("openssl x509 -in %s/ca.crt -noout -text | grep -q 'CA:TRUE'", out), 0);
	cr_expect_eq(th_sh("openssl x509 -in %s/ca.crt -noout -subject | grep -q 'CN = Test "
			   "Cluster CA'",
			   out),
		     0);
	cr_expect_eq(
		th_sh("openssl x509 -in %s/ca.crt -noout -checkend %d >/dev/null", out, 29 * 86400),
		0);
	cr_expect_neq(
		th_sh("openssl x509 -in %s/ca.crt -noout -checkend %d >/dev/null", out, 31 * 86400),
		0);
	snprintf(crt, sizeof(crt), "%s/ca.crt", out);
	snprintf(key, sizeof(key), "%s/ca.key", out);
	cr_expect_eq(tlx_ca_load(crt, key, &ca, err, sizeof(err)), 0, "%s", err);
	tlx_ca_free(ca);
}

Test(ctl_ca, a_second_run_refuses_to_overwrite)
{
	const char *out = new_dir();
	char before[4096], after[4096], *log;
	FILE *f;
	size_t n1, n2;

	cr_assert_eq(ctl(ARGS("ca", "create", "--out", (char *)out), &log), 0, "%s", log);
	free(log);
	snprintf(before, sizeof(before), "%s/ca.key", out);
	f = fopen(before, "r");
	n1 = fread(before, 1, sizeof(before), f);
	fclose(f);
	cr_assert_eq(ctl(ARGS("ca", "create", "--out", (char *)out), &log), 1);
	cr_expect(strstr(log, "ca.key: exists: refusing to overwrite it"), "%s", log);
	free(log);
	snprintf(after, sizeof(after), "%s/ca.key", out);
	f = fopen(after, "r");
	n2 = fread(after, 1, sizeof(after), f);
	fclose(f);
	cr_expect(n1 == n2 && memcmp(before, after, n1) == 0, "the key is untouched");
}

Test(ctl_ca, bad_arguments_exit_2_naming_the_flag)
{
	static const char *const bad_days[] = {
		"0", "-5", "abc", "36501", "", "12x", "99999999999999999999"
	};
	const char *out = new_dir();
	char *log;

	for (size_t i = 0; i < sizeof(bad_days) / sizeof(bad_days[0]); i++) {
		cr_expect_eq(ctl(ARGS("ca", "create", "--out", (char *)out, "--days",
				      (char *)bad_days[i]),
				 &log),
			     2, "--days '%s'", bad_days[i]);
		cr_expect(strstr(log, "--days: invalid value"), "%s", log);
		free(log);
	}
	cr_expect_eq(ctl(ARGS("ca", "create"), &log), 2);
	cr_expect(strstr(log, "--out DIR is required"), "%s", log);
	free(log);
	cr_expect_eq(ctl(ARGS("ca", "create", "--out"), &log), 2);
	cr_expect(strstr(log, "sidetapctl ca create: --out needs a value"), "%s", log);
	free(log);
	cr_expect_eq(ctl(ARGS("dump", "--type"), &log), 2);
	cr_expect(strstr(log, "sidetapctl dump: --type needs a value"), "%s", log);
	free(log);
	cr_expect_eq(ctl(ARGS("stats", "--ring"), &log), 2);
	cr_expect(strstr(log, "sidetapctl stats: --ring needs a value"), "%s", log);
	free(log);
	cr_expect_eq(ctl(ARGS("ca", "create", "--out", (char *)out, "--bogus"), &log), 2);
	cr_expect(strstr(log, "unexpected argument '--bogus'"), "%s", log);
	free(log);
	cr_expect_eq(ctl(ARGS("ca", "create", "--out", (char *)out, "--name", ""), &log), 2);
	cr_expect(strstr(log, "--name: invalid value"), "%s", log);
	free(log);
	cr_expect_eq(ctl(ARGS("ca", "destroy"), &log), 2);
	cr_expect(strstr(log, "unknown subcommand 'destroy'"), "%s", log);
	free(log);
	cr_expect_eq(ctl(ARGS("ca"), &log), 2);
	cr_expect(strstr(log, "usage: sidetapctl ca create"), "%s", log);
	free(log);
	/* Nothing was written by any of them. */
	cr_expect_neq(th_sh("ls %s/ca.key >/dev/null 2>&1", out), 0);
}

Test(ctl_ca, help_and_runtime_failures)
{
	char out[300], *log;

	cr_expect_eq(ctl(ARGS("ca", "create", "--help"), &log), 0);
	cr_expect(strstr(log, "--out DIR") && strstr(log, "--name CN") && strstr(log, "--days N"),
		  "%s", log);
	free(log);
	cr_expect_eq(ctl(ARGS("ca", "--help"), &log), 0);
	free(log);
	cr_expect_eq(ctl(ARGS("--help"), &log), 0);
	cr_expect(strstr(log, "ca create"), "%s", log);
	free(log);
	/* A parent that does not exist: a runtime failure naming the path. */
	snprintf(out, sizeof(out), "%s/no/such/dir", new_dir());
	cr_expect_eq(ctl(ARGS("ca", "create", "--out", out), &log), 1);
	cr_expect(strstr(log, "No such file or directory") && strstr(log, "no/such/dir"), "%s",
		  log);
	free(log);
}

#define S(lit) ((struct tap_str){ lit, sizeof(lit) - 1 })

/* Writes <n> frames to a new capture file in <dir>; returns its path. */
static const char *write_frames(const char *dir, const struct tap_frame *frames, int n)
{
	static char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/frames.msgpack", dir);
	f = fopen(path, "wb");
	cr_assert_not_null(f);
	for (int i = 0; i < n; i++) {
		uint8_t buf[4096];
		ssize_t len = tap_frame_encode(&frames[i], buf, sizeof(buf));

		cr_assert_gt(len, 0, "frame %d: %zd", i, len);
		cr_assert_eq(fwrite(buf, 1, (size_t)len, f), (size_t)len);
	}
	fclose(f);
	return path;
}

Test(ctl_dump, tls_frames_and_the_tls_map_of_http_frames)
{
	struct tap_frame fr[3];
	const char *dir = new_dir(), *path;
	char *log, cmd[1024];

	memset(fr, 0, sizeof(fr));
	for (int i = 0; i < 3; i++) {
		fr[i].gen = 0xabc;
		fr[i].seq = (uint64_t)i + 1;
		fr[i].client = S("10.0.0.1:40000");
		fr[i].dst = S("93.184.216.34:443");
		fr[i].upstream = S("93.184.216.34:443");
		fr[i].listener = TAP_OUTBOUND;
	}
	fr[0].type = TAP_FRAME_TLS;
	fr[0].tls.event = TAP_TLS_UNWRAPPED;
	fr[0].tls.side = TAP_TLS_SIDE_CLIENT;
	fr[0].tls.sni = S("example.com");
	fr[0].tls.alpn_offered[0] = S("h2");
	fr[0].tls.alpn_offered[1] = S("http/1.1");
	fr[0].tls.nalpn_offered = 2;
	fr[0].tls.versions_offered = TAP_TLS_V12 | TAP_TLS_V13;
	fr[0].tls.version = TAP_TLS_V13;
	fr[0].tls.cipher = S("TLS_AES_128_GCM_SHA256");
	fr[0].tls.alpn = S("http/1.1");
	fr[0].tls.upstream_verify = S("ok");
	fr[1].type = TAP_FRAME_TLS;
	fr[1].tls.event = TAP_TLS_FAILED;
	fr[1].tls.side = TAP_TLS_SIDE_UPSTREAM;
	fr[1].tls.sni = S("example.com");
	fr[1].tls.versions_offered = TAP_TLS_V12;
	fr[1].tls.reason = S("certificate has expired");
	fr[2].type = TAP_FRAME_HTTP;
	fr[2].http.pair = 1;
	fr[2].http.req.method = S("GET");
	fr[2].http.req.target = S("/");
	fr[2].http.req.version_major = fr[2].http.req.version_minor = 1;
	fr[2].http.has_tls = true;
	fr[2].http.tls.version = TAP_TLS_V13;
	fr[2].http.tls.cipher = S("TLS_AES_128_GCM_SHA256");
	fr[2].http.tls.sni = S("example.com");
	path = write_frames(dir, fr, 3);

	cr_assert_eq(ctl(ARGS("dump", (char *)path), &log), 0, "%s", log);
	cr_expect(strstr(log, "\"type\":\"tls\",") &&
			  strstr(log, "\"event\":\"unwrapped\",\"side\":\"client\",\"sni\":"
				      "\"example.com\",\"alpn_offered\":[\"h2\",\"http/1.1\"],"
				      "\"versions_offered\":[\"TLS1.2\",\"TLS1.3\"],\"version\":"
				      "\"TLS1.3\",\"cipher\":\"TLS_AES_128_GCM_SHA256\",\"alpn\":"
				      "\"http/1.1\",\"upstream_verify\":\"ok\"}"),
		  "%s", log);
	cr_expect(strstr(log, "\"event\":\"failed\",\"side\":\"upstream\",\"sni\":\"example.com\","
			      "\"alpn_offered\":[],\"versions_offered\":[\"TLS1.2\"],\"reason\":"
			      "\"certificate has expired\"}"),
		  "%s", log);
	cr_expect(strstr(log,
			 ",\"tls\":{\"version\":\"TLS1.3\",\"cipher\":\"TLS_AES_128_GCM_SHA256\","
			 "\"sni\":\"example.com\"}}"),
		  "%s", log);
	free(log);
	/* Every line is JSON, as a reader parses it. */
	snprintf(cmd, sizeof(cmd),
		 "%s dump %s | /usr/bin/python3 -c 'import json,sys; "
		 "[json.loads(l) for l in sys.stdin]' 2>&1",
		 SIDETAPCTL_BIN, path);
	cr_expect_eq(th_sh("%s", cmd), 0);
	cr_assert_eq(ctl(ARGS("dump", "--type", "tls", (char *)path), &log), 0, "%s", log);
	cr_expect_null(strstr(log, "\"type\":\"http\""), "%s", log);
	free(log);
}
