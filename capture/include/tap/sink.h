/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The --sink URL that sidetap passes on to sidetap-uploader: its forms, and
 * which of the sink flags each form takes. Both programs check it the same way.
 */
#ifndef TAP_SINK_H
#define TAP_SINK_H

#include <stdbool.h>
#include <stddef.h>

enum tap_sink_kind {
	TAP_SINK_FILE = 0, /* file:DIR */
	TAP_SINK_HTTP, /* http://HOST:PORT/PATH and https://... collectors */
	TAP_SINK_KAFKA, /* kafka://BROKER[,BROKER...]/TOPIC */
};

struct tap_sink {
	enum tap_sink_kind kind;
	bool https;
	const char *dir; /* file: the directory, borrowed from the URL parsed */
	char kafka_brokers[1024];
	char kafka_topic[256];
};

/* The flags that only some sinks take, as given. */
struct tap_sink_flags {
	bool token_file; /* --token-file */
	bool sink_ca; /* --sink-ca */
	bool kafka_props; /* one --kafka-prop or more */
	const char *compression; /* --sink-compression: none, gzip, zstd, lz4 or snappy */
};

/*
 * Parses <url> into <out>; out->dir borrows from <url>. Returns 0, or
 * -EINVAL with *<why> saying what is wrong and what is accepted.
 */
int tap_sink_parse(const char *url, struct tap_sink *out, const char **why);

/*
 * Checks that <sink> uses every flag in <f>, so that a mistake does not go
 * unseen. Returns 0, or -EINVAL with a message naming the flag in <err>
 * (<len> bytes).
 */
int tap_sink_check_flags(const struct tap_sink *sink, const struct tap_sink_flags *f, char *err,
			 size_t len);

#endif
