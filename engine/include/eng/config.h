/* SPDX-License-Identifier: Apache-2.0 */
/* sidetap's configuration: flags, SIDETAP_* and goproxy environment names, defaults. */
#ifndef ENG_CONFIG_H
#define ENG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "eng/addr.h"
#include "eng/log.h"

enum eng_listener_kind {
	ENG_INBOUND = 0,
	ENG_OUTBOUND = 1,
	ENG_LISTENER_KINDS,
};

enum eng_mode {
	ENG_MODE_TRANSPARENT = 0, /* destination from SO_ORIGINAL_DST */
	ENG_MODE_REVERSE, /* fixed upstream */
};

enum eng_tls_out {
	ENG_TLS_OUT_PASSTHROUGH = 0, /* outbound TLS forwarded as it is (SNI recorded) */
	ENG_TLS_OUT_UNWRAP, /* terminated with a minted leaf, re-originated upstream */
};

enum eng_tls_in_upstream {
	ENG_TLS_IN_UPSTREAM_TLS = 0, /* re-encrypted to the app */
	ENG_TLS_IN_UPSTREAM_PLAIN, /* the app listens in plaintext behind sidetap */
};

enum eng_forward {
	ENG_FORWARD_AUTO = 0, /* copy, then splice once a direction moves bulk */
	ENG_FORWARD_SPLICE,
	ENG_FORWARD_COPY,
};

#define ENG_LISTEN_ADDRS_MAX 4
#define ENG_WORKERS_MAX 256
#define ENG_KAFKA_PROPS_MAX 32

struct eng_listener_cfg {
	unsigned naddrs; /* 0: the listener is off */
	struct eng_addr addrs[ENG_LISTEN_ADDRS_MAX];
	enum eng_mode mode;
	bool has_upstream;
	struct eng_addr upstream;
};

struct eng_config {
	struct eng_listener_cfg listen[ENG_LISTENER_KINDS];
	bool admin_enabled;
	struct eng_addr admin;
	unsigned workers; /* resolved: never 0 after parsing */
	enum eng_forward forward;
	unsigned connect_timeout_ms;
	unsigned idle_timeout_ms; /* 0: no idle timeout */
	unsigned drain_timeout_ms;
	unsigned max_connections; /* per worker */
	unsigned splice_threshold; /* auto: bytes a direction moves before it may splice */
	bool capture;
	bool capture_redact; /* credentials in headers and query strings replaced in frames */
	unsigned capture_body_limit; /* bytes of each HTTP body kept */
	unsigned capture_header_limit; /* bytes of each HTTP message head kept */
	char ring_path[256];
	uint64_t ring_size; /* bytes, all workers' rings together */
	bool uploader; /* start and supervise sidetap-uploader */
	char sink[512]; /* file:DIR, http(s)://HOST:PORT/PATH or kafka://BROKERS/TOPIC */
	/* Passed on to the uploader: how remote sinks batch, spool and authenticate. */
	char spool_dir[256];
	uint64_t spool_limit; /* bytes; 0: no spool */
	char spool_full[16]; /* stop, drop-oldest */
	unsigned batch_frames;
	uint64_t batch_bytes;
	unsigned batch_ms;
	unsigned sink_timeout_ms;
	char sink_compression[8]; /* none, gzip, zstd, lz4, snappy */
	char token_file[256]; /* "": none */
	char sink_ca[256]; /* "": the system's store */
	char kafka_props[ENG_KAFKA_PROPS_MAX][256]; /* K=V, in the order given */
	unsigned nkafka_props;
	bool uploader_admin_enabled;
	struct eng_addr uploader_admin;
	enum eng_tls_out tls_out;
	char tls_ca_cert[256], tls_ca_key[256]; /* the CA that signs minted leaves */
	char tls_upstream_ca[256]; /* "" : the system's trust store */
	char tls_in_cert[256], tls_in_key[256]; /* the service's own; "" : no inbound unwrap */
	enum eng_tls_in_upstream tls_in_upstream;
	bool ktls; /* --ktls auto: use kTLS where the kernel has it */
	unsigned tls_handshake_timeout_ms; /* both handshakes of an unwrapped connection */
	unsigned tls_leaf_hours;
	enum eng_log_level log_level;
	bool help;
	bool version;
};

/*
 * Fills <cfg> from defaults, then the goproxy environment names, then
 * SIDETAP_<FLAG> variables, then the flags in <argv> (each later source wins).
 * <envp> is a NULL-terminated "NAME=value" array (environ). Empty variables
 * count as unset. Returns 0, or -EINVAL with a message naming the flag or
 * variable, the value and what is accepted written to <err> (<errlen> bytes).
 * Upstream host names are resolved here.
 */
int eng_config_parse(struct eng_config *cfg, int argc, char *const argv[], char *const envp[],
		     char *err, size_t errlen);

/* Writes the --help text (flags, environment names, defaults) to <out>. */
void eng_config_usage(FILE *out);

/* Names used in logs, metrics and errors. */
const char *eng_listener_kind_name(enum eng_listener_kind kind);
const char *eng_mode_name(enum eng_mode mode);
const char *eng_forward_name(enum eng_forward fwd);

#endif
