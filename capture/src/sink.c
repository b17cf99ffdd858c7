/* SPDX-License-Identifier: Apache-2.0 */
/* The --sink URL's forms and the flags each takes, shared by sidetap and sidetap-uploader. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tap/sink.h"

/* A Kafka topic: 1 to 249 of [a-zA-Z0-9._-], not "." or "..". */
static bool topic_ok(const char *t)
{
	size_t n = strlen(t);

	if (n == 0 || n > 249 || strcmp(t, ".") == 0 || strcmp(t, "..") == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
		      (t[i] >= '0' && t[i] <= '9') || t[i] == '.' || t[i] == '_' || t[i] == '-'))
			return false;
	return true;
}

int tap_sink_parse(const char *url, struct tap_sink *out, const char **why)
{
	memset(out, 0, sizeof(*out));
	if (strncmp(url, "file:", 5) == 0 && url[5] != '\0') {
		out->kind = TAP_SINK_FILE;
		out->dir = url + 5;
		return 0;
	}
	if (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0) {
		const char *host = url + (url[4] == 's' ? 8 : 7);

		if (host[0] == '\0' || host[0] == '/' || host[0] == ':' || strchr(host, ' ')) {
			*why = "the collector URL needs a host, e.g. https://collector:8443/v1/frames";
			return -EINVAL;
		}
		out->kind = TAP_SINK_HTTP;
		out->https = url[4] == 's';
		return 0;
	}
	if (strncmp(url, "kafka://", 8) == 0) {
		const char *brokers = url + 8, *slash = strchr(brokers, '/');

		if (!slash || slash == brokers ||
		    (size_t)(slash - brokers) >= sizeof(out->kafka_brokers) ||
		    !topic_ok(slash + 1)) {
			*why = "expected kafka://BROKER[,BROKER...]/TOPIC, the topic 1 to 249 of a-z A-Z 0-9 . _ -";
			return -EINVAL;
		}
		memcpy(out->kafka_brokers, brokers, (size_t)(slash - brokers));
		out->kafka_brokers[slash - brokers] = '\0';
		snprintf(out->kafka_topic, sizeof(out->kafka_topic), "%s", slash + 1);
		out->kind = TAP_SINK_KAFKA;
		return 0;
	}
	*why = "accepted: file:DIR, http://HOST:PORT/PATH, https://HOST:PORT/PATH, kafka://BROKER[,BROKER...]/TOPIC";
	return -EINVAL;
}

static int fail(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

int tap_sink_check_flags(const struct tap_sink *sink, const struct tap_sink_flags *f, char *err,
			 size_t len)
{
	const char *c = f->compression ? f->compression : "none";

	if (f->token_file && sink->kind != TAP_SINK_HTTP)
		return fail(err, len, "--token-file is only used with an http:// or https:// sink");
	if (f->sink_ca && !sink->https)
		return fail(err, len, "--sink-ca is only used with an https:// sink");
	if (f->kafka_props && sink->kind != TAP_SINK_KAFKA)
		return fail(err, len, "--kafka-prop is only used with a kafka:// sink");
	if (strcmp(c, "none") != 0 && sink->kind == TAP_SINK_FILE)
		return fail(err, len,
			    "--sink-compression is only used with http(s):// and kafka:// sinks");
	if ((strcmp(c, "lz4") == 0 || strcmp(c, "snappy") == 0) && sink->kind == TAP_SINK_HTTP)
		return fail(
			err, len,
			"--sink-compression %s is for kafka:// sinks; a collector takes none, gzip or zstd",
			c);
	return 0;
}
