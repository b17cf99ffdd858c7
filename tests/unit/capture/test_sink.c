/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of capture/src/sink.c: the --sink URL forms and the flags each takes. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "tap/sink.h"

Test(tap_sink, every_form_parses_into_its_parts)
{
	const char *url = "file:/var/capture", *why = NULL;
	struct tap_sink s;

	cr_assert_eq(tap_sink_parse(url, &s, &why), 0);
	cr_assert_eq(s.kind, TAP_SINK_FILE);
	cr_assert_eq(s.dir, url + 5, "the directory borrows from the URL");
	cr_assert_eq(tap_sink_parse("http://collector:8080/v1/frames", &s, &why), 0);
	cr_assert_eq(s.kind, TAP_SINK_HTTP);
	cr_assert_not(s.https);
	cr_assert_eq(tap_sink_parse("https://collector.example:8443/v1/frames?x=1", &s, &why), 0);
	cr_assert_eq(s.kind, TAP_SINK_HTTP);
	cr_assert(s.https);
	cr_assert_eq(
		tap_sink_parse("kafka://b1:9092,b2:9092,[::1]:9093/sidetap.frames_v1", &s, &why),
		0);
	cr_assert_eq(s.kind, TAP_SINK_KAFKA);
	cr_assert_str_eq(s.kafka_brokers, "b1:9092,b2:9092,[::1]:9093");
	cr_assert_str_eq(s.kafka_topic, "sidetap.frames_v1");
}

Test(tap_sink, bad_urls_say_what_is_accepted)
{
	static const struct {
		const char *url, *want;
	} bad[] = {
		{ "/tmp/x", "accepted: file:DIR, http://HOST:PORT/PATH" },
		{ "file:", "accepted: file:DIR" },
		{ "s3://bucket", "kafka://BROKER[,BROKER...]/TOPIC" },
		{ "http://", "needs a host" },
		{ "https:///path", "needs a host" },
		{ "http://:80/f", "needs a host" },
		{ "http://a b/f", "needs a host" },
		{ "kafka://b:9092", "expected kafka://BROKER" },
		{ "kafka:///topic", "expected kafka://BROKER" },
		{ "kafka://b:9092/", "the topic 1 to 249" },
		{ "kafka://b:9092/bad topic", "a-z A-Z 0-9 . _ -" },
		{ "kafka://b:9092/..", "the topic" },
	};
	char longer[2048];
	struct tap_sink s;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *why = NULL;

		cr_assert_eq(tap_sink_parse(bad[i].url, &s, &why), -EINVAL, "%s", bad[i].url);
		cr_assert_not_null(why, "%s", bad[i].url);
		cr_assert(strstr(why, bad[i].want), "%s: %s", bad[i].url, why);
	}
	/* Brokers longer than the room for them, and a topic of 250 characters. */
	memset(longer, 'b', sizeof(longer));
	memcpy(longer, "kafka://", 8);
	strcpy(longer + 1500, "/t");
	cr_assert_eq(tap_sink_parse(longer, &s, &(const char *){ NULL }), -EINVAL);
	memset(longer, 't', sizeof(longer));
	memcpy(longer, "kafka://b/", 10);
	longer[10 + 250] = '\0';
	cr_assert_eq(tap_sink_parse(longer, &s, &(const char *){ NULL }), -EINVAL);
	longer[10 + 249] = '\0';
	cr_assert_eq(tap_sink_parse(longer, &s, &(const char *){ NULL }), 0);
}

static int check(const char *url, struct tap_sink_flags f, char *err, size_t len)
{
	const char *why;
	struct tap_sink s;

	cr_assert_eq(tap_sink_parse(url, &s, &why), 0, "%s", url);
	err[0] = '\0';
	return tap_sink_check_flags(&s, &f, err, len);
}

Test(tap_sink, flags_are_taken_only_by_the_sinks_that_use_them)
{
	char err[256];

	cr_assert_eq(check("https://c/f",
			   (struct tap_sink_flags){
				   .token_file = true, .sink_ca = true, .compression = "zstd" },
			   err, sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(check("kafka://b/t",
			   (struct tap_sink_flags){ .kafka_props = true, .compression = "snappy" },
			   err, sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(check("file:/d", (struct tap_sink_flags){ .compression = "none" }, err,
			   sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(check("file:/d", (struct tap_sink_flags){ 0 }, err, sizeof(err)), 0,
		     "no compression given is none");

	cr_assert_eq(check("kafka://b/t", (struct tap_sink_flags){ .token_file = true }, err,
			   sizeof(err)),
		     -EINVAL);
	cr_assert_str_eq(err, "--token-file is only used with an http:// or https:// sink");
	cr_assert_eq(
		check("http://c/f", (struct tap_sink_flags){ .sink_ca = true }, err, sizeof(err)),
		-EINVAL);
	cr_assert_str_eq(err, "--sink-ca is only used with an https:// sink");
	cr_assert_eq(check("https://c/f", (struct tap_sink_flags){ .kafka_props = true }, err,
			   sizeof(err)),
		     -EINVAL);
	cr_assert_str_eq(err, "--kafka-prop is only used with a kafka:// sink");
	cr_assert_eq(check("file:/d", (struct tap_sink_flags){ .compression = "gzip" }, err,
			   sizeof(err)),
		     -EINVAL);
	cr_assert_str_eq(err, "--sink-compression is only used with http(s):// and kafka:// sinks");
	cr_assert_eq(check("http://c/f", (struct tap_sink_flags){ .compression = "lz4" }, err,
			   sizeof(err)),
		     -EINVAL);
	cr_assert(strstr(err, "--sink-compression lz4 is for kafka:// sinks"), "%s", err);
	/* A short buffer gets a truncated, terminated message. */
	cr_assert_eq(check("http://c/f", (struct tap_sink_flags){ .sink_ca = true }, err, 8),
		     -EINVAL);
	cr_assert_str_eq(err, "--sink-");
}
