/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration tests of sidetap-uploader against a ring this test produces
 * into: what it ships, what it refuses, its segment files and its errors.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap/frame.h"
#include "tap/ring.h"
#include "th.h"

static char dir[200], ring_path[300], sink_arg[320], sink_dir[300];

static void setup(void)
{
	static unsigned n;

	snprintf(dir, sizeof(dir), "%s/upl-%d-%u", th_tmpdir(), (int)getpid(), n++);
	cr_assert_eq(mkdir(dir, 0755), 0);
	snprintf(ring_path, sizeof(ring_path), "%s/ring", dir);
	snprintf(sink_dir, sizeof(sink_dir), "%s/capture", dir);
	snprintf(sink_arg, sizeof(sink_arg), "--sink=file:%s", sink_dir);
}

TestSuite(uploader, .init = setup, .timeout = 30);

/* Writes a tcp frame with seq <seq> and <data> into ring <idx>. */
static void produce(struct tap_ring *r, unsigned idx, uint64_t seq, const char *data)
{
	cr_assert_eq(th_ring_put_tcp(r, idx, seq, 1, data, strlen(data)), 0);
}

/* Writes <len> bytes that are not a frame as a record of ring <idx>. */
static void produce_raw(struct tap_ring *r, unsigned idx, const void *bytes, size_t len)
{
	void *p = tap_ring_reserve(r, idx, len);

	cr_assert_not_null(p);
	memcpy(p, bytes, len);
	tap_ring_commit(r, idx, len);
}

static int run_uploader(const char *const extra[], char **log)
{
	char *argv[16] = { UPLOADER_BIN };
	struct th_proc p;
	unsigned n = 1;
	int ret;

	for (unsigned i = 0; extra[i]; i++)
		argv[n++] = (char *)extra[i];
	argv[n] = NULL;
	cr_assert_eq(th_spawn(&p, argv, NULL), 0);
	ret = th_proc_wait(&p, 20000);
	if (ret == -ETIMEDOUT)
		th_proc_stop(&p, 9, 1000);
	*log = th_proc_log(&p);
	return ret;
}

/* Decodes every finished segment of the sink; returns the frames' data concatenated. */
static char *read_sink(unsigned *frames, unsigned *segments)
{
	struct tap_decoder *dec = tap_decoder_new();
	struct dirent **names;
	char *out = calloc(1, 1 << 16);
	int n = scandir(sink_dir, &names, NULL, alphasort);

	*frames = *segments = 0;
	cr_assert_geq(n, 0, "no sink directory");
	for (int i = 0; i < n; i++) {
		char path[600], buf[1 << 16];
		size_t len, off = 0;
		FILE *f;

		if (!strstr(names[i]->d_name, ".msgpack")) {
			cr_expect(names[i]->d_name[0] == '.', "stray file %s", names[i]->d_name);
			free(names[i]);
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s", sink_dir, names[i]->d_name);
		f = fopen(path, "rb");
		len = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		(*segments)++;
		while (off < len) {
			struct tap_frame fr;
			const char *why = NULL;
			size_t used;

			cr_assert_eq(tap_frame_decode(dec, buf + off, len - off, &used, &fr, &why),
				     0, "%s: %s", names[i]->d_name, why);
			strncat(out, fr.tcp.data.p, fr.tcp.data.len);
			strcat(out, "|");
			(*frames)++;
			off += used;
		}
		free(names[i]);
	}
	free(names);
	tap_decoder_free(dec);
	return out;
}

Test(uploader, ships_every_frame_in_order_and_releases_the_ring)
{
	struct tap_ring_stats st;
	struct tap_ring *r;
	unsigned frames, segments;
	char *log, *got;

	cr_assert_eq(tap_ring_create(ring_path, 2, TAP_RING_SIZE_MIN, 0x1234, &r), 0);
	produce(r, 0, 1, "a");
	produce(r, 0, 2, "b");
	produce(r, 1, 1, "c");
	cr_assert_eq(
		run_uploader((const char *const[]){ "--ring", ring_path, sink_arg, "--once", NULL },
			     &log),
		0, "%s", log);
	free(log);
	got = read_sink(&frames, &segments);
	cr_assert_eq(frames, 3);
	cr_assert_str_eq(got, "a|b|c|", "ring 0 in order, then ring 1");
	free(got);
	for (unsigned i = 0; i < 2; i++) {
		tap_ring_stats(r, i, &st);
		cr_assert_eq(st.tail, st.head, "ring %u released up to its head", i);
		cr_assert_eq(st.consumed_frames, i == 0 ? 2 : 1);
	}
	/* Nothing new: a second pass ships nothing again. */
	cr_assert_eq(
		run_uploader((const char *const[]){ "--ring", ring_path, sink_arg, "--once", NULL },
			     &log),
		0);
	free(log);
	free(read_sink(&frames, &segments));
	cr_assert_eq(frames, 3, "frames shipped twice");
	tap_ring_close(r, true);
}

Test(uploader, refuses_records_that_are_not_frames_and_counts_them)
{
	static const char garbage[] = "\x83\xa1v\x02this is not a frame";
	struct tap_ring_stats st;
	struct tap_ring *r;
	unsigned frames, segments;
	char *log, *got;

	cr_assert_eq(tap_ring_create(ring_path, 1, TAP_RING_SIZE_MIN, 0x99, &r), 0);
	produce(r, 0, 1, "before");
	produce_raw(r, 0, garbage, sizeof(garbage) - 1);
	produce(r, 0, 3, "after");
	cr_assert_eq(
		run_uploader((const char *const[]){ "--ring", ring_path, sink_arg, "--once", NULL },
			     &log),
		0, "%s", log);
	cr_assert(strstr(log, "invalid frame in the ring, not shipped"), "%s", log);
	free(log);
	got = read_sink(&frames, &segments);
	cr_assert_str_eq(got, "before|after|", "the bad record left out, nothing else");
	free(got);
	tap_ring_stats(r, 0, &st);
	cr_assert_eq(st.rejected, 1, "counted where sidetap's /metrics reads it");
	cr_assert_eq(st.tail, st.head);
	tap_ring_close(r, true);
}

Test(uploader, leaves_no_partial_segment_and_removes_stale_ones)
{
	struct tap_ring *r;
	char stale[600], *log;
	unsigned frames, segments;
	struct stat sb;
	int fd;

	cr_assert_eq(tap_ring_create(ring_path, 1, TAP_RING_SIZE_MIN, 0x42, &r), 0);
	produce(r, 0, 1, "x");
	mkdir(sink_dir, 0755);
	/* What a killed uploader (a pid that no longer runs) left behind. */
	snprintf(stale, sizeof(stale), "%s/sidetap-0000000000000042-1-000001.999999999.partial",
		 sink_dir);
	fd = open(stale, O_WRONLY | O_CREAT, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "junk", 4), 4);
	close(fd);
	cr_assert_eq(
		run_uploader((const char *const[]){ "--ring", ring_path, sink_arg, "--once", NULL },
			     &log),
		0, "%s", log);
	free(log);
	cr_assert_neq(stat(stale, &sb), 0, "stale .partial kept");
	free(read_sink(&frames, &segments));
	cr_assert_eq(frames, 1);
	cr_assert_eq(segments, 1);
	tap_ring_close(r, true);
}

Test(uploader, bad_arguments_exit_2_naming_the_flag)
{
	char *log;

	cr_assert_eq(run_uploader((const char *const[]){ "--ring", ring_path, NULL }, &log), 2);
	cr_assert(strstr(log, "--ring PATH and --sink URL are both needed"), "%s", log);
	free(log);
	cr_assert_eq(
		run_uploader((const char *const[]){ "--ring", ring_path, "--sink", "s3://b", NULL },
			     &log),
		2);
	cr_assert(strstr(log, "--sink: invalid value 's3://b'") && strstr(log, "file:DIR"), "%s",
		  log);
	free(log);
	cr_assert_eq(run_uploader((const char *const[]){ "--ring", ring_path, sink_arg,
							 "--segment-ms", "0", NULL },
				  &log),
		     2);
	cr_assert(strstr(log, "--segment-ms: invalid value '0'"), "%s", log);
	free(log);
	cr_assert_eq(run_uploader((const char *const[]){ "--bogus", NULL }, &log), 2);
	cr_assert(strstr(log, "unknown flag '--bogus'"), "%s", log);
	free(log);
	cr_assert_eq(run_uploader((const char *const[]){ "--help", NULL }, &log), 0);
	cr_assert(strstr(log, "usage: sidetap-uploader"), "%s", log);
	free(log);
}

Test(uploader, unusable_sink_or_ring_exits_1_saying_why)
{
	char bad_sink[600], junk[400], *log;
	int fd;

	/* A sink under a regular file cannot be created. */
	snprintf(junk, sizeof(junk), "%s/file", dir);
	fd = open(junk, O_WRONLY | O_CREAT, 0644);
	close(fd);
	snprintf(bad_sink, sizeof(bad_sink), "--sink=file:%s/sub", junk);
	cr_assert_eq(
		run_uploader((const char *const[]){ "--ring", ring_path, bad_sink, "--once", NULL },
			     &log),
		1);
	cr_assert(strstr(log, "cannot create the sink directory"), "%s", log);
	free(log);
	/* A ring file that is not a ring. */
	cr_assert_eq(run_uploader((const char *const[]){ "--ring", junk, sink_arg, "--once", NULL },
				  &log),
		     1);
	cr_assert(strstr(log, "cannot use the ring"), "%s", log);
	free(log);
	/* No ring yet and --once: nothing to do, a clean exit. */
	cr_assert_eq(
		run_uploader((const char *const[]){ "--ring", ring_path, sink_arg, "--once", NULL },
			     &log),
		0, "%s", log);
	free(log);
}

Test(uploader, remote_sink_flags_are_checked_and_refused_with_exit_2)
{
	static const struct {
		const char *args[4];
		const char *want;
	} cases[] = {
		{ { "--sink=http://", NULL }, "needs a host" },
		{ { "--sink=kafka://b:9092/", NULL }, "kafka://BROKER[,BROKER...]/TOPIC" },
		{ { "--sink=http://c:1/f", "--spool-limit=1K", NULL },
		  "--spool-limit: invalid value '1K'" },
		{ { "--sink=http://c:1/f", "--spool-full=drop", NULL },
		  "--spool-full: invalid value 'drop': accepted: stop, drop-oldest" },
		{ { "--sink=http://c:1/f", "--batch-frames=0", NULL },
		  "--batch-frames: invalid value '0'" },
		{ { "--sink=http://c:1/f", "--batch-bytes=1T", NULL }, "--batch-bytes" },
		{ { "--sink=http://c:1/f", "--sink-timeout=5", NULL }, "100 to 3600000" },
		{ { "--sink=http://c:1/f", "--sink-compression=lz4", NULL },
		  "--sink-compression lz4 is for kafka:// sinks" },
		{ { "--sink=http://c:1/f", "--sink-compression=br", NULL }, "none, gzip, zstd" },
		{ { "--sink=http://c:1/f", "--sink-ca=/x.pem", NULL },
		  "--sink-ca is only used with an https" },
		{ { "--sink=file:/tmp/x", "--token-file=/t", NULL },
		  "--token-file is only used with an http" },
		{ { "--sink=file:/tmp/x", "--sink-compression=gzip", NULL },
		  "--sink-compression is only used" },
		{ { "--sink=file:/tmp/x", "--admin-addr=localhost:4192", NULL },
		  "--admin-addr: invalid value" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *argv[8] = { "--ring", ring_path };
		unsigned n = 2;
		char *log;

		for (unsigned k = 0; cases[i].args[k]; k++)
			argv[n++] = cases[i].args[k];
		argv[n] = NULL;
		cr_assert_eq(run_uploader(argv, &log), 2, "case %zu: %s", i, log);
		cr_assert(strstr(log, cases[i].want), "case %zu: wanted \"%s\" in: %s", i,
			  cases[i].want, log);
		free(log);
	}
}

Test(uploader, remote_sink_start_problems_exit_1_saying_why)
{
	char spool[400], spool_arg2[420], token[400], token_arg[420], admin_arg[64], *log;
	struct th_proc first;
	uint16_t port;
	int lfd;
	char *argv[] = { UPLOADER_BIN, "--ring", ring_path, "--sink=http://127.0.0.1:1/f",
			 spool_arg2,   NULL };

	snprintf(spool, sizeof(spool), "%s/spool", dir);
	snprintf(spool_arg2, sizeof(spool_arg2), "--spool-dir=%s", spool);
	snprintf(token, sizeof(token), "%s/missing-token", dir);
	snprintf(token_arg, sizeof(token_arg), "--token-file=%s", token);
	cr_assert_eq(run_uploader((const char *const[]){ "--ring", ring_path,
							 "--sink=http://127.0.0.1:1/f", spool_arg2,
							 token_arg, "--once", NULL },
				  &log),
		     1, "%s", log);
	cr_assert(strstr(log, "cannot read the token file"), "%s", log);
	free(log);
	/* An admin port someone else holds. */
	lfd = th_listen(&port, 1);
	cr_assert_geq(lfd, 0);
	snprintf(admin_arg, sizeof(admin_arg), "--admin-addr=127.0.0.1:%u", port);
	cr_assert_eq(run_uploader((const char *const[]){ "--ring", ring_path,
							 "--sink=http://127.0.0.1:1/f", spool_arg2,
							 admin_arg, "--once", NULL },
				  &log),
		     1, "%s", log);
	cr_assert(strstr(log, "cannot open the admin endpoint"), "%s", log);
	free(log);
	close(lfd);
	/* Two uploaders on one spool would ship and delete each other's files. */
	cr_assert_eq(th_spawn(&first, argv, NULL), 0);
	cr_assert(th_proc_log_wait(&first, "spool opened", 5000));
	cr_assert_eq(run_uploader((const char *const[]){ "--ring", ring_path,
							 "--sink=http://127.0.0.1:1/f", spool_arg2,
							 "--once", NULL },
				  &log),
		     1, "%s", log);
	cr_assert(strstr(log, "the spool directory is in use by another uploader"), "%s", log);
	free(log);
	cr_assert_eq(th_proc_stop(&first, SIGTERM, 5000), 0);
}
