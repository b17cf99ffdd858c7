/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of engine/src/config.c: defaults, every flag, environment names, precedence, errors. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "eng/config.h"

static struct eng_config cfg;
static char err[512];

#define ARGV(...) ((char *const[]){ "sidetap", __VA_ARGS__, NULL })
#define NOENV ((char *const[]){ NULL })
#define NOARGS ((char *const[]){ "sidetap", NULL })
#define ENV(...) ((char *const[]){ __VA_ARGS__, NULL })

static int parse(char *const argv[], char *const envp[])
{
	int argc = 0;

	while (argv[argc])
		argc++;
	return eng_config_parse(&cfg, argc, argv, envp, err, sizeof(err));
}

static void addr_is(const struct eng_addr *a, const char *want)
{
	char buf[ENG_ADDR_STRLEN];

	cr_assert_str_eq(eng_addr_format(a, buf, sizeof(buf)), want);
}

/* Expects parsing to fail with an error mentioning each of the NULL-terminated strings. */
static void fails_with(char *const argv[], char *const envp[], const char *const want[])
{
	cr_assert_eq(parse(argv, envp), -EINVAL, "accepted what should fail");
	for (unsigned i = 0; want[i]; i++)
		cr_assert(strstr(err, want[i]), "error \"%s\" lacks \"%s\"", err, want[i]);
}

#define FAILS(argv, envp, ...) fails_with(argv, envp, (const char *const[]){ __VA_ARGS__, NULL })

Test(eng_config, defaults_match_the_design)
{
	cr_assert_eq(parse(NOARGS, NOENV), 0, "%s", err);
	cr_assert_eq(cfg.listen[ENG_INBOUND].naddrs, 1);
	addr_is(&cfg.listen[ENG_INBOUND].addrs[0], "0.0.0.0:4143");
	cr_assert_eq(cfg.listen[ENG_INBOUND].mode, ENG_MODE_TRANSPARENT);
	cr_assert_eq(cfg.listen[ENG_OUTBOUND].naddrs, 1);
	addr_is(&cfg.listen[ENG_OUTBOUND].addrs[0], "127.0.0.1:4140");
	cr_assert_eq(cfg.listen[ENG_OUTBOUND].mode, ENG_MODE_TRANSPARENT);
	cr_assert(cfg.admin_enabled);
	addr_is(&cfg.admin, "0.0.0.0:4191");
	cr_assert_geq(cfg.workers, 1);
	cr_assert_eq(cfg.forward, ENG_FORWARD_AUTO);
	cr_assert_eq(cfg.connect_timeout_ms, 5000);
	cr_assert_eq(cfg.idle_timeout_ms, 3600000);
	cr_assert_eq(cfg.drain_timeout_ms, 20000);
	cr_assert_eq(cfg.max_connections, 10000);
	cr_assert_eq(cfg.log_level, ENG_LOG_INFO);
	cr_assert(cfg.capture);
	cr_assert_eq(cfg.capture_body_limit, 1 << 20);
	cr_assert_eq(cfg.capture_header_limit, 64 << 10);
	cr_assert_str_eq(cfg.ring_path, "/dev/shm/sidetap.ring");
	cr_assert_eq(cfg.ring_size, 32 << 20);
	cr_assert(cfg.uploader);
	cr_assert_str_eq(cfg.sink, "file:./sidetap-capture");
	cr_assert_str_eq(cfg.spool_dir, "./sidetap-spool");
	cr_assert_eq(cfg.spool_limit, 1ull << 30);
	cr_assert_str_eq(cfg.spool_full, "stop");
	cr_assert_eq(cfg.batch_frames, 1000);
	cr_assert_eq(cfg.batch_bytes, 1 << 20);
	cr_assert_eq(cfg.batch_ms, 1000);
	cr_assert_eq(cfg.sink_timeout_ms, 30000);
	cr_assert_str_eq(cfg.sink_compression, "none");
	cr_assert_str_eq(cfg.token_file, "");
	cr_assert_str_eq(cfg.sink_ca, "");
	cr_assert_eq(cfg.nkafka_props, 0);
	cr_assert_not(cfg.uploader_admin_enabled);
}

Test(eng_config, capture_flags_are_applied)
{
	cr_assert_eq(parse(ARGV("--capture", "off", "--capture-body-limit", "4096",
				"--capture-header-limit=8K", "--ring", "/tmp/x.ring", "--ring-size",
				"1G", "--uploader=off", "--sink", "file:/var/capture"),
			   NOENV),
		     0, "%s", err);
	cr_assert_not(cfg.capture);
	cr_assert_eq(cfg.capture_body_limit, 4096);
	cr_assert_eq(cfg.capture_header_limit, 8192);
	cr_assert_str_eq(cfg.ring_path, "/tmp/x.ring");
	cr_assert_eq(cfg.ring_size, 1ull << 30);
	cr_assert_not(cfg.uploader);
	cr_assert_str_eq(cfg.sink, "file:/var/capture");
	cr_assert_eq(parse(ARGV("--capture-body-limit", "0", "--ring-size", "512k"), NOENV), 0,
		     "%s", err);
	cr_assert_eq(cfg.capture_body_limit, 0);
	cr_assert_eq(cfg.ring_size, 512 << 10);
}

Test(eng_config, sink_urls_of_every_kind_are_accepted)
{
	static char *const ok[] = {
		"file:/var/capture",
		"http://collector:8080/v1/frames",
		"https://collector.example:8443/v1/frames",
		"http://127.0.0.1:9",
		"kafka://broker-1:9092/capture",
		"kafka://b1:9092,b2:9092,[::1]:9093/sidetap.frames_v1",
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		cr_assert_eq(parse(ARGV("--sink", ok[i]), NOENV), 0, "%s: %s", ok[i], err);
		cr_assert_str_eq(cfg.sink, ok[i]);
	}
}

Test(eng_config, uploader_flags_are_applied)
{
	cr_assert_eq(
		parse(ARGV("--sink", "https://c:8443/f", "--spool-dir", "/var/spool/st",
			   "--spool-limit", "64K", "--spool-full", "drop-oldest", "--batch-frames",
			   "50", "--batch-bytes=2M", "--batch-ms", "250", "--sink-timeout", "1500",
			   "--sink-compression", "zstd", "--token-file", "/dev/null", "--sink-ca",
			   "/dev/null", "--uploader-admin-addr", "127.0.0.1:4192"),
		      NOENV),
		0, "%s", err);
	cr_assert_str_eq(cfg.spool_dir, "/var/spool/st");
	cr_assert_eq(cfg.spool_limit, 64 << 10);
	cr_assert_str_eq(cfg.spool_full, "drop-oldest");
	cr_assert_eq(cfg.batch_frames, 50);
	cr_assert_eq(cfg.batch_bytes, 2 << 20);
	cr_assert_eq(cfg.batch_ms, 250);
	cr_assert_eq(cfg.sink_timeout_ms, 1500);
	cr_assert_str_eq(cfg.sink_compression, "zstd");
	cr_assert_str_eq(cfg.token_file, "/dev/null");
	cr_assert_str_eq(cfg.sink_ca, "/dev/null");
	cr_assert(cfg.uploader_admin_enabled);
	addr_is(&cfg.uploader_admin, "127.0.0.1:4192");
	cr_assert_eq(parse(ARGV("--spool-limit", "0"), NOENV), 0, "%s", err);
	cr_assert_eq(cfg.spool_limit, 0, "0 turns the spool off");
}

Test(eng_config, kafka_props_repeat_and_the_env_holds_several)
{
	char *const env[] = { "SIDETAP_KAFKA_PROP=security.protocol=ssl;ssl.ca.location=/ca.pem",
			      "SIDETAP_SINK=kafka://b:9092/t", NULL };

	cr_assert_eq(parse(ARGV("--kafka-prop", "linger.ms=20", "--kafka-prop=acks=all"), env), 0,
		     "%s", err);
	cr_assert_eq(cfg.nkafka_props, 4);
	cr_assert_str_eq(cfg.kafka_props[0], "security.protocol=ssl");
	cr_assert_str_eq(cfg.kafka_props[1], "ssl.ca.location=/ca.pem");
	/* Flags come after the environment's: librdkafka applies them last, so they win. */
	cr_assert_str_eq(cfg.kafka_props[2], "linger.ms=20");
	cr_assert_str_eq(cfg.kafka_props[3], "acks=all");
}

Test(eng_config, uploader_flags_read_their_env_names)
{
	char *const env[] = { "SIDETAP_SPOOL_DIR=/s",
			      "SIDETAP_SPOOL_LIMIT=2G",
			      "SIDETAP_SPOOL_FULL=drop-oldest",
			      "SIDETAP_BATCH_FRAMES=7",
			      "SIDETAP_BATCH_BYTES=4K",
			      "SIDETAP_BATCH_MS=9",
			      "SIDETAP_SINK_TIMEOUT=200",
			      "SIDETAP_SINK=http://c:1/f",
			      "SIDETAP_SINK_COMPRESSION=gzip",
			      "SIDETAP_TOKEN_FILE=/dev/null",
			      "SIDETAP_UPLOADER_ADMIN_ADDR=[::1]:4192",
			      NULL };

	cr_assert_eq(parse(NOARGS, env), 0, "%s", err);
	cr_assert_str_eq(cfg.spool_dir, "/s");
	cr_assert_eq(cfg.spool_limit, 2ull << 30);
	cr_assert_str_eq(cfg.spool_full, "drop-oldest");
	cr_assert_eq(cfg.batch_frames, 7);
	cr_assert_eq(cfg.batch_bytes, 4096);
	cr_assert_eq(cfg.batch_ms, 9);
	cr_assert_eq(cfg.sink_timeout_ms, 200);
	cr_assert_str_eq(cfg.sink, "http://c:1/f");
	cr_assert_str_eq(cfg.sink_compression, "gzip");
	cr_assert_str_eq(cfg.token_file, "/dev/null");
	addr_is(&cfg.uploader_admin, "[::1]:4192");
}

Test(eng_config, sink_flags_must_fit_the_sink)
{
	FAILS(ARGV("--token-file", "/dev/null"), NOENV,
	      "--token-file is only used with an http:// or https:// sink (the sink is file:");
	FAILS(ARGV("--sink", "http://c:1/f", "--sink-ca", "/dev/null"), NOENV,
	      "--sink-ca is only used with an https:// sink (the sink is http://c:1/f)");
	FAILS(ARGV("--sink", "https://c:1/f", "--kafka-prop", "acks=all"), NOENV,
	      "--kafka-prop is only used with a kafka:// sink");
	FAILS(ARGV("--sink-compression", "gzip"), NOENV,
	      "--sink-compression is only used with http(s):// and kafka:// sinks");
	FAILS(ARGV("--sink", "http://c:1/f", "--sink-compression", "lz4"), NOENV,
	      "lz4 is for kafka:// sinks");
	FAILS(ARGV("--sink", "http://c:1/f", "--token-file", "/nonexistent/token"), NOENV,
	      "--token-file: cannot read '/nonexistent/token'", "No such file");
	FAILS(ARGV("--sink", "https://c:1/f", "--sink-ca", "/nonexistent/ca.pem"), NOENV,
	      "--sink-ca: cannot read '/nonexistent/ca.pem'");
	cr_assert_eq(parse(ARGV("--sink", "kafka://b:1/t", "--sink-compression", "snappy"), NOENV),
		     0, "%s", err);
}

Test(eng_config, every_flag_is_applied)
{
	cr_assert_eq(
		parse(ARGV("--inbound-addr", "127.0.0.1:5143,[::1]:5143", "--inbound-mode",
			   "reverse", "--inbound-upstream", "127.0.0.1:8080",
			   "--outbound-addr=127.0.0.1:5140", "--outbound-mode=reverse",
			   "--outbound-upstream=[::1]:9090", "--admin-addr", "127.0.0.1:5191",
			   "--workers", "3", "--forward", "splice", "--splice-threshold", "4096",
			   "--connect-timeout", "250", "--idle-timeout", "0", "--drain-timeout",
			   "1500", "--max-connections", "77", "--log-level", "debug"),
		      NOENV),
		0, "%s", err);
	cr_assert_eq(cfg.listen[ENG_INBOUND].naddrs, 2);
	addr_is(&cfg.listen[ENG_INBOUND].addrs[0], "127.0.0.1:5143");
	addr_is(&cfg.listen[ENG_INBOUND].addrs[1], "[::1]:5143");
	cr_assert_eq(cfg.listen[ENG_INBOUND].mode, ENG_MODE_REVERSE);
	addr_is(&cfg.listen[ENG_INBOUND].upstream, "127.0.0.1:8080");
	addr_is(&cfg.listen[ENG_OUTBOUND].addrs[0], "127.0.0.1:5140");
	cr_assert_eq(cfg.listen[ENG_OUTBOUND].mode, ENG_MODE_REVERSE);
	addr_is(&cfg.listen[ENG_OUTBOUND].upstream, "[::1]:9090");
	addr_is(&cfg.admin, "127.0.0.1:5191");
	cr_assert_eq(cfg.workers, 3);
	cr_assert_eq(cfg.forward, ENG_FORWARD_SPLICE);
	cr_assert_eq(cfg.splice_threshold, 4096);
	cr_assert_eq(cfg.connect_timeout_ms, 250);
	cr_assert_eq(cfg.idle_timeout_ms, 0);
	cr_assert_eq(cfg.drain_timeout_ms, 1500);
	cr_assert_eq(cfg.max_connections, 77);
	cr_assert_eq(cfg.log_level, ENG_LOG_DEBUG);
}

Test(eng_config, listeners_and_admin_can_be_off)
{
	cr_assert_eq(parse(ARGV("--outbound-addr", "off", "--admin-addr", "off"), NOENV), 0, "%s",
		     err);
	cr_assert_eq(cfg.listen[ENG_OUTBOUND].naddrs, 0);
	cr_assert(!cfg.admin_enabled);
	cr_assert_eq(cfg.listen[ENG_INBOUND].naddrs, 1);
}

Test(eng_config, forward_and_workers_keywords)
{
	cr_assert_eq(parse(ARGV("--forward", "copy", "--workers", "auto"), NOENV), 0, "%s", err);
	cr_assert_eq(cfg.forward, ENG_FORWARD_COPY);
	cr_assert_geq(cfg.workers, 1);
	cr_assert_eq(parse(ARGV("--forward", "auto"), NOENV), 0, "%s", err);
	cr_assert_eq(cfg.forward, ENG_FORWARD_AUTO);
}

Test(eng_config, sidetap_env_names_apply_and_flags_win)
{
	char *const env[] = { "SIDETAP_INBOUND_ADDR=127.0.0.1:6143",
			      "SIDETAP_WORKERS=5",
			      "SIDETAP_FORWARD=copy",
			      "SIDETAP_IDLE_TIMEOUT=1234",
			      "SIDETAP_ADMIN_ADDR=off",
			      NULL };

	cr_assert_eq(parse(ARGV("--workers", "2"), env), 0, "%s", err);
	addr_is(&cfg.listen[ENG_INBOUND].addrs[0], "127.0.0.1:6143");
	cr_assert_eq(cfg.workers, 2, "the flag must win over SIDETAP_WORKERS");
	cr_assert_eq(cfg.forward, ENG_FORWARD_COPY);
	cr_assert_eq(cfg.idle_timeout_ms, 1234);
	cr_assert(!cfg.admin_enabled);
}

Test(eng_config, empty_env_counts_as_unset)
{
	char *const env[] = { "SIDETAP_WORKERS=", "PROXY_TYPE=", NULL };

	cr_assert_eq(parse(NOARGS, env), 0, "%s", err);
	cr_assert_eq(cfg.listen[ENG_INBOUND].mode, ENG_MODE_TRANSPARENT);
}

Test(eng_config, goproxy_env_names_are_understood)
{
	char *const env[] = { "PROXY_TYPE=reverse",
			      "PROXY_IN_PORT=7143",
			      "PROXY_OUT_PORT=7140",
			      "REVERSE_PROXY_HOST=127.0.0.1",
			      "REVERSE_PROXY_PORT=8081",
			      "LOG_LEVEL=warning",
			      NULL };

	cr_assert_eq(parse(NOARGS, env), 0, "%s", err);
	cr_assert_eq(cfg.listen[ENG_INBOUND].mode, ENG_MODE_REVERSE);
	addr_is(&cfg.listen[ENG_INBOUND].addrs[0], "0.0.0.0:7143");
	addr_is(&cfg.listen[ENG_OUTBOUND].addrs[0], "127.0.0.1:7140");
	addr_is(&cfg.listen[ENG_INBOUND].upstream, "127.0.0.1:8081");
	cr_assert_eq(cfg.log_level, ENG_LOG_WARN);
}

Test(eng_config, sidetap_env_wins_over_goproxy_env)
{
	char *const env[] = { "PROXY_IN_PORT=7143", "SIDETAP_INBOUND_ADDR=127.0.0.1:6143",
			      "LOG_LEVEL=debug", "SIDETAP_LOG_LEVEL=error", NULL };

	cr_assert_eq(parse(NOARGS, env), 0, "%s", err);
	addr_is(&cfg.listen[ENG_INBOUND].addrs[0], "127.0.0.1:6143");
	cr_assert_eq(cfg.log_level, ENG_LOG_ERROR);
}

Test(eng_config, goproxy_ipv6_reverse_host_gets_brackets)
{
	char *const env[] = { "PROXY_TYPE=reverse", "REVERSE_PROXY_HOST=::1",
			      "REVERSE_PROXY_PORT=8081", NULL };

	cr_assert_eq(parse(NOARGS, env), 0, "%s", err);
	addr_is(&cfg.listen[ENG_INBOUND].upstream, "[::1]:8081");
}

Test(eng_config, upstream_host_names_resolve)
{
	cr_assert_eq(
		parse(ARGV("--inbound-mode", "reverse", "--inbound-upstream", "localhost:8080"),
		      NOENV),
		0, "%s", err);
	cr_assert_eq(eng_addr_port(&cfg.listen[ENG_INBOUND].upstream), 8080);
}

Test(eng_config, help_and_version)
{
	cr_assert_eq(parse(ARGV("--help"), NOENV), 0);
	cr_assert(cfg.help);
	cr_assert_eq(parse(ARGV("-h"), NOENV), 0);
	cr_assert(cfg.help);
	cr_assert_eq(parse(ARGV("--version"), NOENV), 0);
	cr_assert(cfg.version);
}

Test(eng_config, usage_lists_every_flag_with_env_and_default)
{
	static const char *const want[] = {
		"--inbound-addr",
		"SIDETAP_INBOUND_ADDR",
		"0.0.0.0:4143",
		"--inbound-mode",
		"SIDETAP_INBOUND_MODE",
		"--inbound-upstream",
		"--outbound-addr",
		"SIDETAP_OUTBOUND_ADDR",
		"127.0.0.1:4140",
		"--outbound-mode",
		"--outbound-upstream",
		"--admin-addr",
		"0.0.0.0:4191",
		"--workers",
		"--forward",
		"auto|splice|copy",
		"--splice-threshold",
		"--connect-timeout",
		"--idle-timeout",
		"--drain-timeout",
		"--max-connections",
		"--log-level",
		"SIDETAP_LOG_LEVEL",
		"PROXY_TYPE",
		"PROXY_IN_PORT",
		"PROXY_OUT_PORT",
		"REVERSE_PROXY_HOST",
		"REVERSE_PROXY_PORT",
		"LOG_LEVEL",
		"SIGTERM",
		"--capture",
		"--capture-body-limit",
		"--capture-header-limit",
		"--ring",
		"SIDETAP_RING",
		"--ring-size",
		"--uploader",
		"--sink",
		"file:./sidetap-capture",
		"http(s)://HOST:PORT/PATH",
		"kafka://BROKERS/TOPIC",
		"--spool-dir",
		"SIDETAP_SPOOL_DIR",
		"./sidetap-spool",
		"--spool-limit",
		"--spool-full",
		"stop|drop-oldest",
		"SIDETAP_SPOOL_FULL",
		"--batch-frames",
		"--batch-bytes",
		"--batch-ms",
		"--sink-timeout",
		"--sink-compression",
		"--token-file",
		"SIDETAP_TOKEN_FILE",
		"--sink-ca",
		"--kafka-prop",
		"SIDETAP_KAFKA_PROP",
		"--uploader-admin-addr",
		"SIDETAP_UPLOADER_ADMIN_ADDR",
	};
	char *text = NULL;
	size_t len;
	FILE *f = open_memstream(&text, &len);

	eng_config_usage(f);
	fclose(f);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		cr_expect(strstr(text, want[i]), "--help lacks %s", want[i]);
	free(text);
}

Test(eng_config, bad_values_name_flag_value_and_what_is_accepted)
{
	FAILS(ARGV("--inbound-addr", "4143"), NOENV, "--inbound-addr", "'4143'", "HOST:PORT");
	FAILS(ARGV("--inbound-addr", "localhost:4143"), NOENV, "--inbound-addr", "IP address");
	FAILS(ARGV("--inbound-addr", "::1:4143"), NOENV, "--inbound-addr", "brackets");
	FAILS(ARGV("--inbound-addr", "1.2.3.4:70000"), NOENV, "--inbound-addr", "'1.2.3.4:70000'",
	      "0 to 65535");
	FAILS(ARGV("--inbound-addr", "a:1,b:2"), NOENV, "--inbound-addr");
	FAILS(ARGV("--inbound-addr", "1.1.1.1:1,1.1.1.1:2,1.1.1.1:3,1.1.1.1:4,1.1.1.1:5"), NOENV,
	      "--inbound-addr", "at most 4");
	FAILS(ARGV("--inbound-mode", "dual"), NOENV, "--inbound-mode", "'dual'",
	      "transparent, reverse");
	FAILS(ARGV("--outbound-mode", "x"), NOENV, "--outbound-mode", "transparent, reverse");
	FAILS(ARGV("--inbound-upstream", "nohost.invalid:80", "--inbound-mode", "reverse"), NOENV,
	      "--inbound-upstream", "nohost.invalid:80");
	FAILS(ARGV("--outbound-upstream", "[::1]:0", "--outbound-mode", "reverse"), NOENV,
	      "--outbound-upstream", "1 to 65535");
	FAILS(ARGV("--admin-addr", "yes"), NOENV, "--admin-addr", "'yes'");
	FAILS(ARGV("--workers", "0"), NOENV, "--workers", "'0'", "auto or 1 to 256");
	FAILS(ARGV("--workers", "many"), NOENV, "--workers", "auto or 1 to 256");
	FAILS(ARGV("--forward", "zerocopy"), NOENV, "--forward", "'zerocopy'",
	      "auto, splice, copy");
	FAILS(ARGV("--splice-threshold", "-1"), NOENV, "--splice-threshold", "byte count");
	FAILS(ARGV("--connect-timeout", "0"), NOENV, "--connect-timeout", "1 to 3600000");
	FAILS(ARGV("--connect-timeout", "5s"), NOENV, "--connect-timeout", "'5s'", "milliseconds");
	FAILS(ARGV("--idle-timeout", "-5"), NOENV, "--idle-timeout", "0 (no timeout)");
	FAILS(ARGV("--drain-timeout", "99999999"), NOENV, "--drain-timeout", "0 to 3600000");
	FAILS(ARGV("--max-connections", "0"), NOENV, "--max-connections", "1 to 10000000");
	FAILS(ARGV("--log-level", "loud"), NOENV, "--log-level", "'loud'",
	      "error, warn, info, debug");
	FAILS(ARGV("--capture", "yes"), NOENV, "--capture", "'yes'", "on, off");
	FAILS(ARGV("--capture-body-limit", "65M"), NOENV, "--capture-body-limit", "0 to 64M");
	FAILS(ARGV("--capture-body-limit", "1T"), NOENV, "--capture-body-limit", "'1T'");
	FAILS(ARGV("--capture-header-limit", "100"), NOENV, "--capture-header-limit", "1K to 16M");
	FAILS(ARGV("--ring", ""), NOENV, "--ring", "file path");
	FAILS(ARGV("--ring-size", "1K"), NOENV, "--ring-size", "256K to 16G");
	FAILS(ARGV("--ring-size", "-1"), NOENV, "--ring-size", "'-1'");
	FAILS(ARGV("--uploader", "maybe"), NOENV, "--uploader", "on, off");
	FAILS(ARGV("--sink", "/tmp/x"), NOENV, "--sink", "'/tmp/x'", "file:DIR", "kafka://");
	FAILS(ARGV("--sink", "file:"), NOENV, "--sink", "file:DIR");
	FAILS(ARGV("--sink", "s3://bucket"), NOENV, "--sink", "'s3://bucket'", "https://HOST");
	FAILS(ARGV("--sink", "http:///path"), NOENV, "--sink", "needs a host");
	FAILS(ARGV("--sink", "https://"), NOENV, "--sink", "needs a host");
	FAILS(ARGV("--sink", "kafka://b:9092"), NOENV, "--sink",
	      "kafka://BROKER[,BROKER...]/TOPIC");
	FAILS(ARGV("--sink", "kafka:///topic"), NOENV, "--sink", "kafka://BROKER");
	FAILS(ARGV("--sink", "kafka://b:9092/bad topic"), NOENV, "--sink", "a-z A-Z 0-9");
	FAILS(ARGV("--spool-dir", ""), NOENV, "--spool-dir", "directory path");
	FAILS(ARGV("--spool-limit", "1K"), NOENV, "--spool-limit", "'1K'", "64K to 16T");
	FAILS(ARGV("--spool-limit", "lots"), NOENV, "--spool-limit", "0 (no spool)");
	FAILS(ARGV("--spool-full", "drop-newest"), NOENV, "--spool-full", "'drop-newest'",
	      "stop, drop-oldest");
	FAILS(ARGV("--batch-frames", "0"), NOENV, "--batch-frames", "1 to 1000000");
	FAILS(ARGV("--batch-bytes", "100"), NOENV, "--batch-bytes", "1K to 256M");
	FAILS(ARGV("--batch-ms", "0"), NOENV, "--batch-ms", "1 to 3600000");
	FAILS(ARGV("--sink-timeout", "10"), NOENV, "--sink-timeout", "100 to 3600000");
	FAILS(ARGV("--sink-compression", "brotli"), NOENV, "--sink-compression", "'brotli'",
	      "none, gzip, zstd");
	FAILS(ARGV("--token-file", ""), NOENV, "--token-file", "file path");
	FAILS(ARGV("--kafka-prop", "acks"), NOENV, "--kafka-prop", "'acks'", "KEY=VALUE");
	FAILS(ARGV("--kafka-prop", "=1"), NOENV, "--kafka-prop", "KEY=VALUE");
	FAILS(ARGV("--uploader-admin-addr", "4192"), NOENV, "--uploader-admin-addr", "'4192'");
}

Test(eng_config, bad_env_values_name_the_variable)
{
	FAILS(NOARGS, ENV("SIDETAP_WORKERS=x"), "SIDETAP_WORKERS", "'x'", "auto or 1 to 256");
	FAILS(NOARGS, ENV("PROXY_TYPE=dual"), "PROXY_TYPE", "'dual'", "transparent, reverse");
	FAILS(NOARGS, ENV("PROXY_IN_PORT=http"), "PROXY_IN_PORT", "'http'", "1 to 65535");
	FAILS(NOARGS, ENV("PROXY_OUT_PORT=0"), "PROXY_OUT_PORT", "1 to 65535");
	FAILS(NOARGS, ENV("REVERSE_PROXY_HOST=127.0.0.1"), "REVERSE_PROXY_PORT", "set both");
	FAILS(NOARGS, ENV("LOG_LEVEL=chatty"), "LOG_LEVEL", "'chatty'");
	FAILS(NOARGS, ENV("SIDETAP_SPOOL_LIMIT=-1"), "SIDETAP_SPOOL_LIMIT", "'-1'");
	FAILS(NOARGS, ENV("SIDETAP_KAFKA_PROP=a=1;b"), "SIDETAP_KAFKA_PROP", "KEY=VALUE");
	FAILS(NOARGS, ENV("SIDETAP_SINK=ftp://x"), "SIDETAP_SINK", "'ftp://x'");
}

Test(eng_config, flag_errors_name_the_problem)
{
	FAILS(ARGV("--inbound-adr", "1.2.3.4:5"), NOENV, "unknown flag '--inbound-adr'", "--help");
	FAILS(ARGV("inbound"), NOENV, "unexpected argument 'inbound'");
	FAILS(ARGV("--workers"), NOENV, "--workers needs a value");
}

Test(eng_config, mode_and_upstream_must_agree)
{
	FAILS(ARGV("--inbound-mode", "reverse"), NOENV,
	      "--inbound-mode reverse needs --inbound-upstream");
	FAILS(ARGV("--outbound-mode", "reverse"), NOENV,
	      "--outbound-mode reverse needs --outbound-upstream");
	FAILS(ARGV("--inbound-upstream", "127.0.0.1:80"), NOENV,
	      "--inbound-upstream is only used with --inbound-mode reverse");
	/* A listener that is off needs no upstream. */
	cr_assert_eq(parse(ARGV("--outbound-mode", "reverse", "--outbound-addr", "off"), NOENV), 0,
		     "%s", err);
}

Test(eng_config, both_listeners_off_is_refused)
{
	FAILS(ARGV("--inbound-addr", "off", "--outbound-addr", "off"), NOENV, "both off");
}
