/* SPDX-License-Identifier: Apache-2.0 */
/* Configuration: one table of options, read from defaults, environment and flags. */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eng/config.h"
#include "tap/sink.h"

/* What a setter writes into <why> on failure: the accepted form, for the error line. */
typedef int (*opt_set_cb)(struct eng_config *cfg, const char *val, const char **why);

struct opt {
	const char *flag; /* without the leading "--" */
	const char *metavar; /* shown in --help */
	const char *def; /* default, applied through <set>; NULL: unset */
	opt_set_cb set;
	const char *help;
};

static int set_listen_addrs(struct eng_listener_cfg *l, const char *val, const char **why)
{
	char buf[512];
	char *save, *tok;
	unsigned n = 0;

	if (strcmp(val, "off") == 0) {
		l->naddrs = 0;
		return 0;
	}
	if (strlen(val) >= sizeof(buf)) {
		*why = "too long";
		return -EINVAL;
	}
	strcpy(buf, val);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (n == ENG_LISTEN_ADDRS_MAX) {
			*why = "at most 4 addresses, separated by commas";
			return -EINVAL;
		}
		if (eng_addr_parse(tok, false, true, &l->addrs[n], why) != 0)
			return -EINVAL;
		n++;
	}
	if (n == 0) {
		*why = "expected IP:PORT[,IP:PORT...] or off, e.g. 0.0.0.0:4143,[::]:4143";
		return -EINVAL;
	}
	l->naddrs = n;
	return 0;
}

static int set_mode(enum eng_mode *mode, const char *val, const char **why)
{
	if (strcmp(val, "transparent") == 0)
		*mode = ENG_MODE_TRANSPARENT;
	else if (strcmp(val, "reverse") == 0)
		*mode = ENG_MODE_REVERSE;
	else {
		*why = "accepted: transparent, reverse";
		return -EINVAL;
	}
	return 0;
}

static int set_upstream(struct eng_listener_cfg *l, const char *val, const char **why)
{
	if (eng_addr_parse(val, true, false, &l->upstream, why) != 0)
		return -EINVAL;
	l->has_upstream = true;
	return 0;
}

static int set_uint(unsigned *out, const char *val, unsigned long min, unsigned long max,
		    const char *range, const char **why)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(val, &end, 10);
	if (val[0] < '0' || val[0] > '9' || errno != 0 || *end != '\0' || v < min || v > max) {
		*why = range;
		return -EINVAL;
	}
	*out = (unsigned)v;
	return 0;
}

static int set_in_addr(struct eng_config *c, const char *v, const char **why)
{
	return set_listen_addrs(&c->listen[ENG_INBOUND], v, why);
}

static int set_in_mode(struct eng_config *c, const char *v, const char **why)
{
	return set_mode(&c->listen[ENG_INBOUND].mode, v, why);
}

static int set_in_upstream(struct eng_config *c, const char *v, const char **why)
{
	return set_upstream(&c->listen[ENG_INBOUND], v, why);
}

static int set_out_addr(struct eng_config *c, const char *v, const char **why)
{
	return set_listen_addrs(&c->listen[ENG_OUTBOUND], v, why);
}

static int set_out_mode(struct eng_config *c, const char *v, const char **why)
{
	return set_mode(&c->listen[ENG_OUTBOUND].mode, v, why);
}

static int set_out_upstream(struct eng_config *c, const char *v, const char **why)
{
	return set_upstream(&c->listen[ENG_OUTBOUND], v, why);
}

static int set_admin(struct eng_config *c, const char *v, const char **why)
{
	if (strcmp(v, "off") == 0) {
		c->admin_enabled = false;
		return 0;
	}
	if (eng_addr_parse(v, false, true, &c->admin, why) != 0)
		return -EINVAL;
	c->admin_enabled = true;
	return 0;
}

static int set_workers(struct eng_config *c, const char *v, const char **why)
{
	if (strcmp(v, "auto") == 0) {
		cpu_set_t set;

		/* The CPUs this process may run on (taskset, cpuset), not all online ones. */
		if (sched_getaffinity(0, sizeof(set), &set) == 0)
			c->workers = (unsigned)CPU_COUNT(&set);
		else
			c->workers = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
		if (c->workers == 0)
			c->workers = 1;
		if (c->workers > ENG_WORKERS_MAX)
			c->workers = ENG_WORKERS_MAX;
		return 0;
	}
	return set_uint(&c->workers, v, 1, ENG_WORKERS_MAX, "accepted: auto or 1 to 256", why);
}

static int set_forward(struct eng_config *c, const char *v, const char **why)
{
	if (strcmp(v, "auto") == 0)
		c->forward = ENG_FORWARD_AUTO;
	else if (strcmp(v, "splice") == 0)
		c->forward = ENG_FORWARD_SPLICE;
	else if (strcmp(v, "copy") == 0)
		c->forward = ENG_FORWARD_COPY;
	else {
		*why = "accepted: auto, splice, copy";
		return -EINVAL;
	}
	return 0;
}

static int set_splice_threshold(struct eng_config *c, const char *v, const char **why)
{
	return set_uint(&c->splice_threshold, v, 0, UINT_MAX, "accepted: a byte count, 0 or more",
			why);
}

static int set_connect_timeout(struct eng_config *c, const char *v, const char **why)
{
	return set_uint(&c->connect_timeout_ms, v, 1, 3600000,
			"accepted: milliseconds from 1 to 3600000", why);
}

static int set_idle_timeout(struct eng_config *c, const char *v, const char **why)
{
	return set_uint(&c->idle_timeout_ms, v, 0, 86400000,
			"accepted: milliseconds from 0 (no timeout) to 86400000", why);
}

static int set_drain_timeout(struct eng_config *c, const char *v, const char **why)
{
	return set_uint(&c->drain_timeout_ms, v, 0, 3600000,
			"accepted: milliseconds from 0 to 3600000", why);
}

static int set_max_conns(struct eng_config *c, const char *v, const char **why)
{
	return set_uint(&c->max_connections, v, 1, 10000000, "accepted: 1 to 10000000", why);
}

static int set_onoff(bool *out, const char *v, const char **why)
{
	if (strcmp(v, "on") == 0)
		*out = true;
	else if (strcmp(v, "off") == 0)
		*out = false;
	else {
		*why = "accepted: on, off";
		return -EINVAL;
	}
	return 0;
}

/* A byte count with an optional K, M or G suffix (powers of 1024). */
static int parse_bytes(const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long n;
	unsigned shift = 0;

	if (v[0] < '0' || v[0] > '9')
		return -EINVAL;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno != 0)
		return -EINVAL;
	if (*end == 'K' || *end == 'k')
		shift = 10;
	else if (*end == 'M' || *end == 'm')
		shift = 20;
	else if (*end == 'G' || *end == 'g')
		shift = 30;
	if (shift)
		end++;
	if (*end != '\0' || n > (max >> shift) || (n << shift) < min)
		return -EINVAL;
	*out = (uint64_t)n << shift;
	return 0;
}

static int set_capture(struct eng_config *c, const char *v, const char **why)
{
	return set_onoff(&c->capture, v, why);
}

static int set_capture_redact(struct eng_config *c, const char *v, const char **why)
{
	return set_onoff(&c->capture_redact, v, why);
}

static int set_body_limit(struct eng_config *c, const char *v, const char **why)
{
	uint64_t n;

	if (parse_bytes(v, 0, 64ull << 20, &n) != 0) {
		*why = "accepted: bytes from 0 to 64M (K, M suffixes allowed)";
		return -EINVAL;
	}
	c->capture_body_limit = (unsigned)n;
	return 0;
}

static int set_header_limit(struct eng_config *c, const char *v, const char **why)
{
	uint64_t n;

	if (parse_bytes(v, 1024, 16ull << 20, &n) != 0) {
		*why = "accepted: bytes from 1K to 16M (K, M suffixes allowed)";
		return -EINVAL;
	}
	c->capture_header_limit = (unsigned)n;
	return 0;
}

static int set_ring(struct eng_config *c, const char *v, const char **why)
{
	if (v[0] == '\0' || strlen(v) >= sizeof(c->ring_path) - 16) {
		*why = "a file path of at most 239 bytes, e.g. /dev/shm/sidetap.ring";
		return -EINVAL;
	}
	strcpy(c->ring_path, v);
	return 0;
}

static int set_ring_size(struct eng_config *c, const char *v, const char **why)
{
	if (parse_bytes(v, 256ull << 10, 16ull << 30, &c->ring_size) != 0) {
		*why = "accepted: bytes from 256K to 16G (K, M, G suffixes allowed)";
		return -EINVAL;
	}
	return 0;
}

static int set_uploader(struct eng_config *c, const char *v, const char **why)
{
	return set_onoff(&c->uploader, v, why);
}

static int set_sink(struct eng_config *c, const char *v, const char **why)
{
	struct tap_sink sink;

	if (strlen(v) >= sizeof(c->sink)) {
		*why = "at most 511 bytes";
		return -EINVAL;
	}
	if (tap_sink_parse(v, &sink, why) != 0)
		return -EINVAL;
	strcpy(c->sink, v);
	return 0;
}

/* A string flag that fits <cap>; <what> says what is wanted when it does not. */
static int set_string(char *dst, size_t cap, const char *v, const char *what, const char **why)
{
	if (v[0] == '\0' || strlen(v) >= cap) {
		*why = what;
		return -EINVAL;
	}
	strcpy(dst, v);
	return 0;
}

static int set_path(char *dst, size_t cap, const char *v, const char **why)
{
	return set_string(dst, cap, v, "a file path of at most 255 bytes", why);
}

static int set_spool_dir(struct eng_config *c, const char *v, const char **why)
{
	return set_string(c->spool_dir, sizeof(c->spool_dir), v,
			  "a directory path of at most 255 bytes", why);
}

static int set_spool_limit(struct eng_config *c, const char *v, const char **why)
{
	if (parse_bytes(v, 0, 16ull << 40, &c->spool_limit) != 0 ||
	    (c->spool_limit && c->spool_limit < (64u << 10))) {
		*why = "accepted: 0 (no spool), or bytes from 64K to 16T (K, M, G suffixes allowed)";
		return -EINVAL;
	}
	return 0;
}

static int set_spool_full(struct eng_config *c, const char *v, const char **why)
{
	if (strcmp(v, "stop") != 0 && strcmp(v, "drop-oldest") != 0) {
		*why = "accepted: stop, drop-oldest";
		return -EINVAL;
	}
	strcpy(c->spool_full, v);
	return 0;
}

static int set_batch_frames(struct eng_config *c, const char *v, const char **why)
{
	return set_uint(&c->batch_frames, v, 1, 1000000, "accepted: frames from 1 to 1000000", why);
}

static int set_batch_bytes(struct eng_config *c, const char *v, const char **why)
{
	if (parse_bytes(v, 1024, 256ull << 20, &c->batch_bytes) != 0) {
		*why = "accepted: bytes from 1K to 256M (K, M suffixes allowed)";
		return -EINVAL;
	}
	return 0;
}

static int set_batch_ms(struct eng_config *c, const char *v, const char **why)
{
	return set_uint(&c->batch_ms, v, 1, 3600000, "accepted: milliseconds from 1 to 3600000",
			why);
}

static int set_sink_timeout(struct eng_config *c, const char *v, const char **why)
{
	return set_uint(&c->sink_timeout_ms, v, 100, 3600000,
			"accepted: milliseconds from 100 to 3600000", why);
}

static int set_sink_compression(struct eng_config *c, const char *v, const char **why)
{
	static const char *const names[] = { "none", "gzip", "zstd", "lz4", "snappy" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(v, names[i]) == 0) {
			strcpy(c->sink_compression, v);
			return 0;
		}
	}
	*why = "accepted: none, gzip, zstd (collector or kafka), lz4, snappy (kafka)";
	return -EINVAL;
}

static int set_token_file(struct eng_config *c, const char *v, const char **why)
{
	return set_path(c->token_file, sizeof(c->token_file), v, why);
}

static int set_sink_ca(struct eng_config *c, const char *v, const char **why)
{
	return set_path(c->sink_ca, sizeof(c->sink_ca), v, why);
}

/* Repeatable: each one is kept, in order (a flag's comes after the environment's, and wins). */
static int set_kafka_prop(struct eng_config *c, const char *v, const char **why)
{
	char buf[ENG_KAFKA_PROPS_MAX * 256];
	char *save, *tok;
	unsigned n = 0;

	/* The environment's form holds several, separated by ';'. */
	if (strlen(v) >= sizeof(buf)) {
		*why = "too long";
		return -EINVAL;
	}
	strcpy(buf, v);
	for (tok = strtok_r(buf, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
		const char *eq = strchr(tok, '=');

		if (!eq || eq == tok || strlen(tok) >= sizeof(c->kafka_props[0])) {
			*why = "KEY=VALUE, a librdkafka property such as security.protocol=ssl (at most 255 bytes)";
			return -EINVAL;
		}
		if (c->nkafka_props == ENG_KAFKA_PROPS_MAX) {
			*why = "at most 32 properties";
			return -EINVAL;
		}
		strcpy(c->kafka_props[c->nkafka_props++], tok);
		n++;
	}
	if (n == 0) {
		*why = "KEY=VALUE, a librdkafka property such as security.protocol=ssl";
		return -EINVAL;
	}
	return 0;
}

static int set_uploader_admin(struct eng_config *c, const char *v, const char **why)
{
	if (strcmp(v, "off") == 0) {
		c->uploader_admin_enabled = false;
		return 0;
	}
	if (eng_addr_parse(v, false, true, &c->uploader_admin, why) != 0)
		return -EINVAL;
	c->uploader_admin_enabled = true;
	return 0;
}

static int set_tls_out(struct eng_config *c, const char *v, const char **why)
{
	if (strcmp(v, "passthrough") == 0)
		c->tls_out = ENG_TLS_OUT_PASSTHROUGH;
	else if (strcmp(v, "unwrap") == 0)
		c->tls_out = ENG_TLS_OUT_UNWRAP;
	else {
		*why = "accepted: passthrough, unwrap";
		return -EINVAL;
	}
	return 0;
}

static int set_tls_ca_cert(struct eng_config *c, const char *v, const char **why)
{
	return set_path(c->tls_ca_cert, sizeof(c->tls_ca_cert), v, why);
}

static int set_tls_ca_key(struct eng_config *c, const char *v, const char **why)
{
	return set_path(c->tls_ca_key, sizeof(c->tls_ca_key), v, why);
}

static int set_tls_upstream_ca(struct eng_config *c, const char *v, const char **why)
{
	return set_path(c->tls_upstream_ca, sizeof(c->tls_upstream_ca), v, why);
}

static int set_tls_in_cert(struct eng_config *c, const char *v, const char **why)
{
	return set_path(c->tls_in_cert, sizeof(c->tls_in_cert), v, why);
}

static int set_tls_in_key(struct eng_config *c, const char *v, const char **why)
{
	return set_path(c->tls_in_key, sizeof(c->tls_in_key), v, why);
}

static int set_tls_in_upstream(struct eng_config *c, const char *v, const char **why)
{
	if (strcmp(v, "tls") == 0)
		c->tls_in_upstream = ENG_TLS_IN_UPSTREAM_TLS;
	else if (strcmp(v, "plain") == 0)
		c->tls_in_upstream = ENG_TLS_IN_UPSTREAM_PLAIN;
	else {
		*why = "accepted: tls, plain";
		return -EINVAL;
	}
	return 0;
}

static int set_ktls(struct eng_config *c, const char *v, const char **why)
{
	if (strcmp(v, "auto") == 0)
		c->ktls = true;
	else if (strcmp(v, "off") == 0)
		c->ktls = false;
	else {
		*why = "accepted: auto, off";
		return -EINVAL;
	}
	return 0;
}

static int set_tls_handshake_timeout(struct eng_config *c, const char *v, const char **why)
{
	return set_uint(&c->tls_handshake_timeout_ms, v, 1, 600000,
			"accepted: milliseconds from 1 to 600000", why);
}

static int set_tls_leaf_hours(struct eng_config *c, const char *v, const char **why)
{
	return set_uint(&c->tls_leaf_hours, v, 1, 8760, "accepted: hours from 1 to 8760", why);
}

static int set_log_level(struct eng_config *c, const char *v, const char **why)
{
	if (eng_log_level_parse(v, &c->log_level) != 0) {
		*why = "accepted: error, warn, info, debug";
		return -EINVAL;
	}
	return 0;
}

static const struct opt opts[] = {
	{ "inbound-addr", "ADDR[,ADDR]|off", "0.0.0.0:4143", set_in_addr,
	  "inbound listener (traffic to the service); IPv6 as [::]:4143" },
	{ "inbound-mode", "transparent|reverse", "transparent", set_in_mode,
	  "transparent: original destination, sent to the app on loopback; reverse: --inbound-upstream" },
	{ "inbound-upstream", "HOST:PORT", NULL, set_in_upstream,
	  "fixed upstream of the inbound listener (reverse mode)" },
	{ "outbound-addr", "ADDR[,ADDR]|off", "127.0.0.1:4140", set_out_addr,
	  "outbound listener (traffic from the service)" },
	{ "outbound-mode", "transparent|reverse", "transparent", set_out_mode,
	  "transparent: original destination; reverse: --outbound-upstream" },
	{ "outbound-upstream", "HOST:PORT", NULL, set_out_upstream,
	  "fixed upstream of the outbound listener (reverse mode)" },
	{ "admin-addr", "ADDR|off", "0.0.0.0:4191", set_admin,
	  "admin HTTP endpoint: /healthz /readyz /metrics, POST /shutdown (loopback only)" },
	{ "workers", "N|auto", "auto", set_workers,
	  "worker threads, each with its own io_uring (auto: one per usable CPU)" },
	{ "forward", "auto|splice|copy", "auto", set_forward,
	  "copy: recv/send through buffers; splice: socket-pipe-socket; auto: copy, splice for bulk" },
	{ "splice-threshold", "BYTES", "65536", set_splice_threshold,
	  "auto: bytes a direction forwards by copy before a full read moves it to splice" },
	{ "connect-timeout", "MS", "5000", set_connect_timeout, "upstream connect timeout" },
	{ "idle-timeout", "MS", "3600000", set_idle_timeout,
	  "close a connection after this long without a byte either way (0: never)" },
	{ "drain-timeout", "MS", "20000", set_drain_timeout,
	  "on SIGTERM, how long open connections may finish before they are closed" },
	{ "max-connections", "N", "10000", set_max_conns,
	  "open connections per worker; above it new ones are closed and counted" },
	{ "capture", "on|off", "on", set_capture,
	  "record what passes: HTTP/1 pairs, other TCP as streams (off: pure forwarding)" },
	{ "capture-body-limit", "BYTES", "1M", set_body_limit,
	  "bytes of each HTTP body kept; longer bodies are truncated (and flagged), not dropped" },
	{ "capture-header-limit", "BYTES", "64K", set_header_limit,
	  "bytes of each HTTP message's head kept; further headers are left out (and flagged)" },
	{ "capture-redact", "on|off", "on", set_capture_redact,
	  "replace credentials (Authorization, Cookie, ?token=...) in frames with [redacted]" },
	{ "ring", "PATH", "/dev/shm/sidetap.ring", set_ring,
	  "shared-memory ring file between sidetap and sidetap-uploader" },
	{ "ring-size", "BYTES", "32M", set_ring_size,
	  "size of the ring, all workers together; frames that do not fit are dropped and counted" },
	{ "uploader", "on|off", "on", set_uploader,
	  "start sidetap-uploader and restart it if it dies (off: run it yourself)" },
	{ "sink", "URL", "file:./sidetap-capture", set_sink,
	  "where the uploader ships frames: file:DIR, http(s)://HOST:PORT/PATH, kafka://BROKERS/TOPIC" },
	{ "spool-dir", "DIR", "./sidetap-spool", set_spool_dir,
	  "remote sinks: where batches wait while the sink is down or slow (rejected ones in DIR/rejected)" },
	{ "spool-limit", "BYTES", "1G", set_spool_limit,
	  "bytes the spool may hold (0: no spool); see --spool-full for when it is full" },
	{ "spool-full", "stop|drop-oldest", "stop", set_spool_full,
	  "full spool: stop draining (the ring drops the newest) or delete the oldest batches" },
	{ "batch-frames", "N", "1000", set_batch_frames,
	  "remote sinks: frames per batch (collector request, Kafka batch, spool file) at most" },
	{ "batch-bytes", "BYTES", "1M", set_batch_bytes, "remote sinks: bytes per batch at most" },
	{ "batch-ms", "MS", "1000", set_batch_ms,
	  "remote sinks: a batch ships when its oldest frame is this old" },
	{ "sink-timeout", "MS", "30000", set_sink_timeout,
	  "remote sinks: an attempt is given up (and retried) after this long" },
	{ "sink-compression", "none|gzip|zstd|lz4|snappy", "none", set_sink_compression,
	  "remote sinks: body or message compression (lz4, snappy: kafka only)" },
	{ "token-file", "FILE", NULL, set_token_file,
	  "http(s) sink: bearer token sent as Authorization, re-read when the file changes" },
	{ "sink-ca", "FILE", NULL, set_sink_ca,
	  "https sink: CA certificates (PEM) to verify the collector with, instead of the system's" },
	{ "kafka-prop", "KEY=VALUE", NULL, set_kafka_prop,
	  "kafka sink: a librdkafka property (SASL, TLS...); repeatable; env: several, ';'-separated" },
	{ "uploader-admin-addr", "ADDR|off", "off", set_uploader_admin,
	  "the uploader's own /metrics endpoint (frames shipped, retries, spool, oldest age)" },
	{ "tls-out", "passthrough|unwrap", "passthrough", set_tls_out,
	  "outbound TLS: forward untouched (SNI recorded), or terminate with a minted leaf and capture" },
	{ "tls-ca-cert", "FILE", NULL, set_tls_ca_cert,
	  "CA certificate that signs minted leaves (--tls-out unwrap; sidetapctl ca create)" },
	{ "tls-ca-key", "FILE", NULL, set_tls_ca_key, "that CA's private key" },
	{ "tls-upstream-ca", "FILE", NULL, set_tls_upstream_ca,
	  "CA bundle upstream certificates are verified against (default: the system's)" },
	{ "tls-in-cert", "FILE", NULL, set_tls_in_cert,
	  "the service's own certificate chain: inbound TLS is terminated with it and captured" },
	{ "tls-in-key", "FILE", NULL, set_tls_in_key, "the service's private key" },
	{ "tls-in-upstream", "tls|plain", "tls", set_tls_in_upstream,
	  "inbound unwrap: re-encrypt to the app, or the app listens in plaintext" },
	{ "ktls", "auto|off", "off", set_ktls,
	  "auto: the kernel seals what unwrapped TLS 1.3 connections send (kTLS), where it can" },
	{ "tls-handshake-timeout", "MS", "10000", set_tls_handshake_timeout,
	  "how long the handshakes of an unwrapped connection may take" },
	{ "tls-leaf-hours", "HOURS", "24", set_tls_leaf_hours, "validity of minted leaves" },
	{ "log-level", "LEVEL", "info", set_log_level, "error, warn, info or debug" },
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static void env_name(const char *flag, char *buf, size_t len)
{
	size_t i, n = strlen("SIDETAP_");

	memcpy(buf, "SIDETAP_", n);
	for (i = 0; flag[i] && n + 1 < len; i++)
		buf[n++] = flag[i] == '-' ?
				   '_' :
				   (char)(flag[i] - ('a' <= flag[i] && flag[i] <= 'z' ? 32 : 0));
	buf[n] = '\0';
}

static const char *env_get(char *const envp[], const char *name)
{
	size_t n = strlen(name);

	for (char *const *e = envp; e && *e; e++) {
		if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
			return (*e)[n + 1] ? *e + n + 1 : NULL; /* empty counts as unset */
	}
	return NULL;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int apply(struct eng_config *cfg, const struct opt *o, const char *val, const char *source,
		 char *err, size_t errlen)
{
	const char *why = "invalid value";

	if (o->set(cfg, val, &why) != 0)
		return fail(err, errlen, "%s: invalid value '%s': %s", source, val, why);
	return 0;
}

static const struct opt *opt_find(const char *flag)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (strcmp(opts[i].flag, flag) == 0)
			return &opts[i];
	return NULL;
}

/* goproxy's documented environment names, mapped onto ours (lowest precedence). */
static int apply_goproxy_env(struct eng_config *cfg, char *const envp[], char *err, size_t errlen)
{
	const char *v, *host, *port;
	char buf[300];
	int ret;

	if ((v = env_get(envp, "PROXY_TYPE"))) {
		ret = apply(cfg, opt_find("inbound-mode"), v, "PROXY_TYPE", err, errlen);
		if (ret)
			return ret;
	}
	if ((v = env_get(envp, "PROXY_IN_PORT"))) {
		snprintf(buf, sizeof(buf), "0.0.0.0:%s", v);
		if (strcmp(v, "0") == 0 ||
		    apply(cfg, opt_find("inbound-addr"), buf, "PROXY_IN_PORT", err, errlen))
			return fail(err, errlen,
				    "PROXY_IN_PORT: invalid value '%s': a port from 1 to 65535", v);
	}
	if ((v = env_get(envp, "PROXY_OUT_PORT"))) {
		snprintf(buf, sizeof(buf), "127.0.0.1:%s", v);
		if (strcmp(v, "0") == 0 ||
		    apply(cfg, opt_find("outbound-addr"), buf, "PROXY_OUT_PORT", err, errlen))
			return fail(err, errlen,
				    "PROXY_OUT_PORT: invalid value '%s': a port from 1 to 65535",
				    v);
	}
	host = env_get(envp, "REVERSE_PROXY_HOST");
	port = env_get(envp, "REVERSE_PROXY_PORT");
	if (host || port) {
		if (!host || !port)
			return fail(
				err, errlen,
				"%s is set but %s is not: set both, e.g. REVERSE_PROXY_HOST=127.0.0.1 REVERSE_PROXY_PORT=8080",
				host ? "REVERSE_PROXY_HOST" : "REVERSE_PROXY_PORT",
				host ? "REVERSE_PROXY_PORT" : "REVERSE_PROXY_HOST");
		snprintf(buf, sizeof(buf), strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
		ret = apply(cfg, opt_find("inbound-upstream"), buf,
			    "REVERSE_PROXY_HOST/REVERSE_PROXY_PORT", err, errlen);
		if (ret)
			return ret;
	}
	if ((v = env_get(envp, "TLS_OUT_UNWRAP"))) {
		if (strcmp(v, "true") && strcmp(v, "false"))
			return fail(err, errlen,
				    "TLS_OUT_UNWRAP: invalid value '%s': accepted: true, false", v);
		cfg->tls_out =
			strcmp(v, "true") == 0 ? ENG_TLS_OUT_UNWRAP : ENG_TLS_OUT_PASSTHROUGH;
	}
	if ((v = env_get(envp, "TLS_CERT_DIR"))) {
		if (strlen(v) > sizeof(cfg->tls_ca_cert) - sizeof("/tls.crt"))
			return fail(
				err, errlen,
				"TLS_CERT_DIR: invalid value '%s': a directory path of at most 240 bytes",
				v);
		snprintf(cfg->tls_ca_cert, sizeof(cfg->tls_ca_cert), "%s/tls.crt", v);
		snprintf(cfg->tls_ca_key, sizeof(cfg->tls_ca_key), "%s/tls.key", v);
	}
	if ((v = env_get(envp, "TLS_IN_UNWRAP")) && strcmp(v, "true") && strcmp(v, "false"))
		return fail(err, errlen, "TLS_IN_UNWRAP: invalid value '%s': accepted: true, false",
			    v);
	/* goproxy's inbound certificate: read only when TLS_IN_UNWRAP asks for inbound unwrap. */
	if (v && strcmp(v, "true") == 0) {
		const char *pub = env_get(envp, "TLS_IN_PUBLIC_KEY");
		const char *priv = env_get(envp, "TLS_IN_PRIVATE_KEY");

		if (!pub || !priv)
			return fail(
				err, errlen,
				"TLS_IN_UNWRAP=true needs TLS_IN_PUBLIC_KEY and TLS_IN_PRIVATE_KEY (the service's certificate and key files)");
		if ((ret = apply(cfg, opt_find("tls-in-cert"), pub, "TLS_IN_PUBLIC_KEY", err,
				 errlen)) ||
		    (ret = apply(cfg, opt_find("tls-in-key"), priv, "TLS_IN_PRIVATE_KEY", err,
				 errlen)))
			return ret;
	}
	if ((v = env_get(envp, "LOG_LEVEL")))
		return apply(cfg, opt_find("log-level"), v, "LOG_LEVEL", err, errlen);
	return 0;
}

/* Flags that only some sinks use are refused with the others, so a mistake does not go unseen. */
static int validate_sink(const struct eng_config *cfg, char *err, size_t errlen)
{
	const struct tap_sink_flags flags = {
		.token_file = cfg->token_file[0] != '\0',
		.sink_ca = cfg->sink_ca[0] != '\0',
		.kafka_props = cfg->nkafka_props > 0,
		.compression = cfg->sink_compression,
	};
	struct tap_sink sink;
	const char *why;
	char msg[256];

	/* set_sink() took it, so it parses. */
	tap_sink_parse(cfg->sink, &sink, &why);
	if (tap_sink_check_flags(&sink, &flags, msg, sizeof(msg)) != 0)
		return fail(err, errlen, "%s (the sink is %s)", msg, cfg->sink);
	/* Read by the uploader, but a typo is better refused here than in a restart loop. */
	if (cfg->token_file[0] && access(cfg->token_file, R_OK) == -1)
		return fail(err, errlen, "--token-file: cannot read '%s': %s", cfg->token_file,
			    strerror(errno));
	if (cfg->sink_ca[0] && access(cfg->sink_ca, R_OK) == -1)
		return fail(err, errlen, "--sink-ca: cannot read '%s': %s", cfg->sink_ca,
			    strerror(errno));
	return 0;
}

static int validate(struct eng_config *cfg, char *err, size_t errlen)
{
	for (int k = 0; k < ENG_LISTENER_KINDS; k++) {
		const struct eng_listener_cfg *l = &cfg->listen[k];
		const char *name = eng_listener_kind_name(k);

		if (l->mode == ENG_MODE_REVERSE && !l->has_upstream && l->naddrs > 0)
			return fail(
				err, errlen,
				"--%s-mode reverse needs --%s-upstream HOST:PORT (or SIDETAP_%s_UPSTREAM)",
				name, name, k == ENG_INBOUND ? "INBOUND" : "OUTBOUND");
		if (l->mode == ENG_MODE_TRANSPARENT && l->has_upstream)
			return fail(
				err, errlen,
				"--%s-upstream is only used with --%s-mode reverse; set the mode or drop the upstream",
				name, name);
	}
	if (cfg->listen[ENG_INBOUND].naddrs == 0 && cfg->listen[ENG_OUTBOUND].naddrs == 0)
		return fail(err, errlen,
			    "--inbound-addr and --outbound-addr are both off: nothing to proxy");
	if (cfg->tls_out == ENG_TLS_OUT_UNWRAP && (!cfg->tls_ca_cert[0] || !cfg->tls_ca_key[0]))
		return fail(
			err, errlen,
			"--tls-out unwrap needs --tls-ca-cert and --tls-ca-key (make a CA with: sidetapctl ca create --out DIR)");
	if (!cfg->tls_in_cert[0] != !cfg->tls_in_key[0])
		return fail(err, errlen,
			    "--tls-in-cert and --tls-in-key go together: set both or neither");
	return validate_sink(cfg, err, errlen);
}

int eng_config_parse(struct eng_config *cfg, int argc, char *const argv[], char *const envp[],
		     char *err, size_t errlen)
{
	char name[64];
	const char *v;
	int ret;

	memset(cfg, 0, sizeof(*cfg));
	err[0] = '\0';
	for (size_t i = 0; i < NOPTS; i++) {
		if (opts[i].def &&
		    (ret = apply(cfg, &opts[i], opts[i].def, "default", err, errlen)))
			return ret;
	}
	ret = apply_goproxy_env(cfg, envp, err, errlen);
	if (ret)
		return ret;
	for (size_t i = 0; i < NOPTS; i++) {
		env_name(opts[i].flag, name, sizeof(name));
		if ((v = env_get(envp, name)) && (ret = apply(cfg, &opts[i], v, name, err, errlen)))
			return ret;
	}
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *eq;
		const struct opt *o;
		char flag[64];
		size_t n;

		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			cfg->help = true;
			return 0;
		}
		if (strcmp(arg, "--version") == 0) {
			cfg->version = true;
			return 0;
		}
		if (strncmp(arg, "--", 2) != 0)
			return fail(err, errlen, "unexpected argument '%s' (see sidetap --help)",
				    arg);
		eq = strchr(arg, '=');
		n = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
		if (n >= sizeof(flag))
			n = sizeof(flag) - 1;
		memcpy(flag, arg + 2, n);
		flag[n] = '\0';
		o = opt_find(flag);
		if (!o)
			return fail(err, errlen, "unknown flag '--%s' (see sidetap --help)", flag);
		if (eq) {
			v = eq + 1;
		} else {
			if (i + 1 >= argc)
				return fail(err, errlen, "--%s needs a value: %s", flag,
					    o->metavar);
			v = argv[++i];
		}
		snprintf(name, sizeof(name), "--%s", o->flag);
		ret = apply(cfg, o, v, name, err, errlen);
		if (ret)
			return ret;
	}
	return validate(cfg, err, errlen);
}

void eng_config_usage(FILE *out)
{
	char name[64], left[96];

	fprintf(out,
		"usage: sidetap [FLAG VALUE]...\n"
		"\n"
		"sidetap forwards every TCP connection it accepts, byte for byte, to its upstream:\n"
		"the original destination (transparent mode, behind iptables REDIRECT) or a fixed\n"
		"HOST:PORT (reverse mode).\n"
		"\n"
		"Each flag can also be set as the environment variable shown; a flag wins over the\n"
		"environment. Flags take --flag VALUE or --flag=VALUE.\n"
		"\n");
	for (size_t i = 0; i < NOPTS; i++) {
		env_name(opts[i].flag, name, sizeof(name));
		snprintf(left, sizeof(left), "--%s %s", opts[i].flag, opts[i].metavar);
		fprintf(out, "  %-40s %s\n", left, opts[i].help);
		fprintf(out, "  %-40s env %s; default %s\n", "", name,
			opts[i].def ? opts[i].def : "none");
	}
	fprintf(out,
		"  %-40s print this help\n"
		"  %-40s print the version\n"
		"\n"
		"goproxy environment names, read with lower precedence than the above:\n"
		"  PROXY_TYPE=transparent|reverse          sets --inbound-mode\n"
		"  PROXY_IN_PORT=N                         sets --inbound-addr 0.0.0.0:N\n"
		"  PROXY_OUT_PORT=N                        sets --outbound-addr 127.0.0.1:N\n"
		"  REVERSE_PROXY_HOST=H REVERSE_PROXY_PORT=P  sets --inbound-upstream H:P\n"
		"  LOG_LEVEL=LEVEL                         sets --log-level\n"
		"  TLS_OUT_UNWRAP=true|false               sets --tls-out unwrap|passthrough\n"
		"  TLS_CERT_DIR=DIR                        sets --tls-ca-cert DIR/tls.crt --tls-ca-key DIR/tls.key\n"
		"  TLS_IN_UNWRAP=true TLS_IN_PUBLIC_KEY=F TLS_IN_PRIVATE_KEY=K  sets --tls-in-cert F --tls-in-key K\n"
		"\n"
		"Signals: SIGTERM stops accepting, turns /readyz to 503 and lets connections finish\n"
		"for up to --drain-timeout; SIGINT does the same with at most 1000 ms; a second signal\n"
		"closes everything at once. Exit status 0 after a clean stop.\n",
		"--help", "--version");
}

const char *eng_listener_kind_name(enum eng_listener_kind kind)
{
	return kind == ENG_INBOUND ? "inbound" : "outbound";
}

const char *eng_mode_name(enum eng_mode mode)
{
	return mode == ENG_MODE_REVERSE ? "reverse" : "transparent";
}

const char *eng_forward_name(enum eng_forward fwd)
{
	switch (fwd) {
	case ENG_FORWARD_SPLICE:
		return "splice";
	case ENG_FORWARD_COPY:
		return "copy";
	case ENG_FORWARD_AUTO:
		break;
	}
	return "auto";
}
