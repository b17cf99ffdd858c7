/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sidetap-uploader: drains the shared-memory ring that sidetap fills and
 * ships the frames to a sink. The ring's read position moves only once the
 * frames are durable: written to a segment file (file:), acknowledged by the
 * collector or Kafka, or written to the spool. At-least-once delivery, with
 * stable frame ids for de-duplication. This file: flags, logging, the ring,
 * waiting, and main().
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tap/frame.h"
#include "tap/log.h"
#include "tap/ring.h"
#include "tap/sink.h"
#include "upl.h"

volatile sig_atomic_t upl_stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	if (upl_stop_requested < 2)
		upl_stop_requested++;
}

uint64_t upl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t upl_unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int verbose_level = UPL_LOG_INFO;

void upl_log(int level, const char *msg, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	va_list ap;

	if (level > verbose_level)
		return;
	va_start(ap, fmt);
	tap_log_vwrite(names[level], msg, "uploader", fmt, ap);
	va_end(ap);
}

void upl_set_error(struct upl *u, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(u->m.last_error, sizeof(u->m.last_error), fmt, ap);
	va_end(ap);
	u->m.last_error_unix_ms = upl_unix_ms();
}

int upl_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: sidetap-uploader --ring PATH --sink URL [FLAG VALUE]...\n"
		"\n"
		"Drains the shared-memory ring sidetap writes capture frames into and ships them\n"
		"to the sink. The ring's read position moves only once the frames are durable: a\n"
		"segment file written and fsync'd (file:), a batch acknowledged by the collector\n"
		"(2xx) or by Kafka (delivery report), or a batch written to the spool when the sink\n"
		"is down or slow. A restarted uploader resumes there, so every frame arrives at\n"
		"least once; duplicates after a crash carry the same frame id. sidetap starts and\n"
		"supervises the uploader unless it runs with --uploader off.\n"
		"\n"
		"  --ring PATH             the ring file (sidetap --ring); env SIDETAP_RING\n"
		"  --sink URL              where frames go; env SIDETAP_SINK:\n"
		"                            file:DIR                 segment files DIR/sidetap-*.msgpack\n"
		"                            http://HOST:PORT/PATH    POST batches to a collector\n"
		"                            https://HOST:PORT/PATH   the same over verified TLS\n"
		"                            kafka://BROKER[,BROKER...]/TOPIC  one message per frame\n"
		"  --segment-bytes N       file: close a segment at this size (default 16M; K, M suffixes)\n"
		"  --segment-ms MS         file: close a segment when its oldest frame is this old (default 1000)\n"
		"  --batch-frames N        remote sinks: frames per batch at most (default 1000)\n"
		"  --batch-bytes N         remote sinks: bytes per batch at most (default 1M; at most an\n"
		"                          eighth of --spool-limit)\n"
		"  --batch-ms MS           remote sinks: ship a batch when its oldest frame is this old\n"
		"                          (default 1000)\n"
		"  --spool-dir DIR         remote sinks: where batches wait while the sink is down or slow\n"
		"                          (default ./sidetap-spool; rejected batches go to DIR/rejected)\n"
		"  --spool-limit N         bytes the spool may hold (default 1G; 0: no spool)\n"
		"  --spool-full POLICY     when the spool is full (its limit or its file system):\n"
		"                            stop (default)  stop draining: the ring drops the newest\n"
		"                                            frames and counts them\n"
		"                            drop-oldest     delete the oldest waiting batches to make\n"
		"                                            room, counting their frames as dropped\n"
		"  --sink-timeout MS       remote sinks: give an attempt up after this long (default 30000)\n"
		"  --sink-compression C    none (default); http(s): gzip, zstd; kafka: gzip, zstd, lz4, snappy\n"
		"  --token-file FILE       http(s): send 'Authorization: Bearer <its content>'; re-read\n"
		"                          when it changes\n"
		"  --sink-ca FILE          https: verify the collector against these CA certificates\n"
		"                          (default: the system's store)\n"
		"  --kafka-prop K=V        kafka: a librdkafka property (SASL, TLS, ...); repeatable\n"
		"  --admin-addr ADDR|off   Prometheus metrics at http://ADDR/metrics (default off);\n"
		"                          env SIDETAP_UPLOADER_ADMIN_ADDR\n"
		"  --once                  drain what the ring holds now, then exit\n"
		"  --log-level LEVEL       error, warn, info, debug (default info); env SIDETAP_LOG_LEVEL\n"
		"  --help                  this text\n"
		"\n"
		"Flags without an env name above read SIDETAP_<FLAG> (e.g. SIDETAP_SPOOL_DIR);\n"
		"SIDETAP_KAFKA_PROP holds K=V pairs separated by ';'. A flag wins over the environment.\n"
		"\n"
		"SIGTERM or SIGINT: ship what the ring holds (until it is drained; what the sink does\n"
		"not take goes to the spool), then exit 0. When neither the sink nor the spool takes\n"
		"it, exit 1 at once, leaving it unreleased in the ring; a second signal exits at once\n"
		"too. Segments, spool files and collector request bodies are readable with sidetapctl\n"
		"dump.\n");
}

/* A byte count with an optional K, M or G suffix, within [<min>, <max>]. */
static int parse_bytes(const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned long long n;
	unsigned shift = 0;
	char *end;

	if (v[0] < '0' || v[0] > '9')
		return -EINVAL;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno)
		return -EINVAL;
	if (*end == 'K' || *end == 'k')
		shift = 10;
	else if (*end == 'M' || *end == 'm')
		shift = 20;
	else if (*end == 'G' || *end == 'g')
		shift = 30;
	if (shift)
		end++;
	if (*end != '\0' || n > (max >> shift) || ((uint64_t)n << shift) < min)
		return -EINVAL;
	*out = (uint64_t)n << shift;
	return 0;
}

static int parse_uint(const char *v, unsigned long min, unsigned long max, unsigned *out)
{
	unsigned long n;
	char *end;

	if (v[0] < '0' || v[0] > '9')
		return -EINVAL;
	errno = 0;
	n = strtoul(v, &end, 10);
	if (errno || *end != '\0' || n < min || n > max)
		return -EINVAL;
	*out = (unsigned)n;
	return 0;
}

typedef int (*flag_set_cb)(struct upl_opts *o, const char *v, const char **why);

struct flag {
	const char *name; /* without "--" */
	const char *env; /* NULL: none */
	flag_set_cb set;
};

static int set_ring(struct upl_opts *o, const char *v, const char **why)
{
	(void)why;
	o->ring = v;
	return 0;
}

static int set_sink(struct upl_opts *o, const char *v, const char **why)
{
	(void)why;
	o->sink = v;
	return 0;
}

static int set_segment_bytes(struct upl_opts *o, const char *v, const char **why)
{
	*why = "bytes from 4K to 4G (K, M suffixes allowed)";
	return parse_bytes(v, 4096, 1ull << 32, &o->segment_bytes);
}

static int set_segment_ms(struct upl_opts *o, const char *v, const char **why)
{
	*why = "milliseconds from 1 to 3600000";
	return parse_uint(v, 1, 3600000, &o->segment_ms);
}

static int set_batch_frames(struct upl_opts *o, const char *v, const char **why)
{
	*why = "frames from 1 to 1000000";
	return parse_uint(v, 1, 1000000, &o->batch_frames);
}

static int set_batch_bytes(struct upl_opts *o, const char *v, const char **why)
{
	*why = "bytes from 1K to 256M (K, M suffixes allowed)";
	return parse_bytes(v, 1024, 256ull << 20, &o->batch_bytes);
}

static int set_batch_ms(struct upl_opts *o, const char *v, const char **why)
{
	*why = "milliseconds from 1 to 3600000";
	return parse_uint(v, 1, 3600000, &o->batch_ms);
}

static int set_spool_dir(struct upl_opts *o, const char *v, const char **why)
{
	*why = "a directory path";
	if (v[0] == '\0' || strlen(v) > PATH_MAX - 64)
		return -EINVAL;
	o->spool_dir = v;
	return 0;
}

static int set_spool_limit(struct upl_opts *o, const char *v, const char **why)
{
	*why = "bytes: 0 (no spool), or 64K to 16T (K, M, G suffixes allowed)";
	if (parse_bytes(v, 0, 16ull << 40, &o->spool_limit) != 0 ||
	    (o->spool_limit && o->spool_limit < 64u << 10))
		return -EINVAL;
	return 0;
}

static int set_spool_full(struct upl_opts *o, const char *v, const char **why)
{
	if (strcmp(v, "stop") == 0) {
		o->spool_full = UPL_SPOOL_FULL_STOP;
		return 0;
	}
	if (strcmp(v, "drop-oldest") == 0) {
		o->spool_full = UPL_SPOOL_FULL_DROP_OLDEST;
		return 0;
	}
	*why = "accepted: stop, drop-oldest";
	return -EINVAL;
}

static int set_sink_timeout(struct upl_opts *o, const char *v, const char **why)
{
	*why = "milliseconds from 100 to 3600000";
	return parse_uint(v, 100, 3600000, &o->sink_timeout_ms);
}

static const char *const compression_names[] = { "none", "gzip", "zstd", "lz4", "snappy" };

const char *upl_compression_name(enum upl_compression c)
{
	return (unsigned)c < sizeof(compression_names) / sizeof(compression_names[0]) ?
		       compression_names[c] :
		       "none";
}

static int set_compression(struct upl_opts *o, const char *v, const char **why)
{
	for (unsigned i = 0; i < sizeof(compression_names) / sizeof(compression_names[0]); i++) {
		if (strcmp(v, compression_names[i]) == 0) {
			o->compression = (enum upl_compression)i;
			return 0;
		}
	}
	*why = "accepted: none, gzip, zstd, lz4, snappy";
	return -EINVAL;
}

static int set_token_file(struct upl_opts *o, const char *v, const char **why)
{
	*why = "a file path";
	if (v[0] == '\0')
		return -EINVAL;
	o->token_file = v;
	return 0;
}

static int set_sink_ca(struct upl_opts *o, const char *v, const char **why)
{
	*why = "a file of PEM CA certificates";
	if (v[0] == '\0')
		return -EINVAL;
	o->sink_ca = v;
	return 0;
}

static int add_kafka_prop(struct upl_opts *o, const char *v, const char **why)
{
	const char *eq = strchr(v, '=');

	if (!eq || eq == v) {
		*why = "KEY=VALUE, a librdkafka property such as security.protocol=ssl";
		return -EINVAL;
	}
	if (o->nkafka_props == UPL_KAFKA_PROPS_MAX) {
		*why = "at most 32 properties";
		return -EINVAL;
	}
	o->kafka_props[o->nkafka_props++] = v;
	return 0;
}

/* The environment form: K=V pairs separated by ';'. */
static int set_kafka_props_env(struct upl_opts *o, const char *v, const char **why)
{
	char *copy = strdup(v), *save, *tok;

	if (!copy)
		return -ENOMEM;
	/* Kept for the process's life: the options point into it. */
	for (tok = strtok_r(copy, ";", &save); tok; tok = strtok_r(NULL, ";", &save))
		if (add_kafka_prop(o, tok, why) != 0)
			return -EINVAL;
	return 0;
}

static int set_admin(struct upl_opts *o, const char *v, const char **why)
{
	*why = "IP:PORT, [IPv6]:PORT or off, e.g. 127.0.0.1:4192";
	if (strcmp(v, "off") == 0) {
		o->admin_addr = NULL;
		return 0;
	}
	if (!upl_admin_addr_ok(v))
		return -EINVAL;
	o->admin_addr = v;
	return 0;
}

static int set_log_level(struct upl_opts *o, const char *v, const char **why)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };

	for (int l = 0; l < 4; l++) {
		if (strcmp(v, names[l]) == 0) {
			o->verbose = l;
			return 0;
		}
	}
	*why = "accepted: error, warn, info, debug";
	return -EINVAL;
}

static const struct flag flags[] = {
	{ "ring", "SIDETAP_RING", set_ring },
	{ "sink", "SIDETAP_SINK", set_sink },
	{ "segment-bytes", NULL, set_segment_bytes },
	{ "segment-ms", NULL, set_segment_ms },
	{ "batch-frames", "SIDETAP_BATCH_FRAMES", set_batch_frames },
	{ "batch-bytes", "SIDETAP_BATCH_BYTES", set_batch_bytes },
	{ "batch-ms", "SIDETAP_BATCH_MS", set_batch_ms },
	{ "spool-dir", "SIDETAP_SPOOL_DIR", set_spool_dir },
	{ "spool-limit", "SIDETAP_SPOOL_LIMIT", set_spool_limit },
	{ "spool-full", "SIDETAP_SPOOL_FULL", set_spool_full },
	{ "sink-timeout", "SIDETAP_SINK_TIMEOUT", set_sink_timeout },
	{ "sink-compression", "SIDETAP_SINK_COMPRESSION", set_compression },
	{ "token-file", "SIDETAP_TOKEN_FILE", set_token_file },
	{ "sink-ca", "SIDETAP_SINK_CA", set_sink_ca },
	{ "kafka-prop", "SIDETAP_KAFKA_PROP", add_kafka_prop },
	{ "admin-addr", "SIDETAP_UPLOADER_ADMIN_ADDR", set_admin },
	{ "log-level", "SIDETAP_LOG_LEVEL", set_log_level },
};

#define NFLAGS (sizeof(flags) / sizeof(flags[0]))

static const struct flag *flag_find(const char *name)
{
	for (size_t i = 0; i < NFLAGS; i++)
		if (strcmp(flags[i].name, name) == 0)
			return &flags[i];
	return NULL;
}

/* Splits and checks --sink, and the flags that only some sinks take; says what is wrong on stderr. */
static int parse_sink(struct upl_opts *o)
{
	const struct tap_sink_flags given = {
		.token_file = o->token_file != NULL,
		.sink_ca = o->sink_ca != NULL,
		.kafka_props = o->nkafka_props > 0,
		.compression = upl_compression_name(o->compression),
	};
	const char *why;
	char err[256];

	if (tap_sink_parse(o->sink, &o->dest, &why) != 0) {
		fprintf(stderr, "sidetap-uploader: --sink: invalid value '%s': %s\n", o->sink, why);
		return -EINVAL;
	}
	if (tap_sink_check_flags(&o->dest, &given, err, sizeof(err)) != 0) {
		fprintf(stderr, "sidetap-uploader: %s\n", err);
		return -EINVAL;
	}
	return o->dest.kind == TAP_SINK_KAFKA ? upl_kafka_check_props(o) : 0;
}

static int apply(struct upl_opts *o, const struct flag *f, const char *v, const char *source)
{
	const char *why = "invalid value";

	if (f->set(o, v, &why) != 0) {
		fprintf(stderr, "sidetap-uploader: %s: invalid value '%s': %s\n", source, v, why);
		return -EINVAL;
	}
	return 0;
}

static int parse_args(int argc, char **argv, struct upl_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->segment_bytes = 16u << 20;
	o->segment_ms = 1000;
	o->batch_frames = 1000;
	o->batch_bytes = 1u << 20;
	o->batch_ms = 1000;
	o->spool_dir = "./sidetap-spool";
	o->spool_limit = 1ull << 30;
	o->sink_timeout_ms = 30000;
	o->verbose = UPL_LOG_INFO;
	for (size_t i = 0; i < NFLAGS; i++) {
		const char *v = flags[i].env ? getenv(flags[i].env) : NULL;

		if (!v || !v[0])
			continue;
		if (flags[i].set == add_kafka_prop) {
			const char *why = "invalid value";

			if (set_kafka_props_env(o, v, &why) != 0) {
				fprintf(stderr, "sidetap-uploader: %s: invalid value '%s': %s\n",
					flags[i].env, v, why);
				return -EINVAL;
			}
		} else if (apply(o, &flags[i], v, flags[i].env) != 0) {
			return -EINVAL;
		}
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		const char *eq = strchr(a, '=');
		const struct flag *f;
		char name[32], source[40];
		size_t n = eq ? (size_t)(eq - a) : strlen(a);

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			exit(0);
		}
		if (strcmp(a, "--once") == 0) {
			o->once = true;
			continue;
		}
		if (strncmp(a, "--", 2) != 0 || n - 2 >= sizeof(name)) {
			fprintf(stderr, "sidetap-uploader: unexpected argument '%s' (see --help)\n",
				a);
			return -EINVAL;
		}
		memcpy(name, a + 2, n - 2);
		name[n - 2] = '\0';
		f = flag_find(name);
		if (!f) {
			fprintf(stderr, "sidetap-uploader: unknown flag '--%s' (see --help)\n",
				name);
			return -EINVAL;
		}
		if (eq)
			v = eq + 1;
		else if (i + 1 < argc)
			v = argv[++i];
		if (!v) {
			fprintf(stderr, "sidetap-uploader: --%s needs a value (see --help)\n",
				name);
			return -EINVAL;
		}
		snprintf(source, sizeof(source), "--%s", name);
		if (apply(o, f, v, source) != 0)
			return -EINVAL;
	}
	if (!o->ring || !o->sink) {
		fprintf(stderr,
			"sidetap-uploader: --ring PATH and --sink URL are both needed (see --help)\n");
		return -EINVAL;
	}
	return parse_sink(o);
}

void upl_ring_detach(struct upl *u)
{
	if (!u->ring)
		return;
	tap_ring_close(u->ring, false);
	u->ring = NULL;
	free(u->pos);
	free(u->unacked);
	u->pos = u->unacked = NULL;
}

int upl_ring_attach(struct upl *u)
{
	char err[256];
	struct stat st;
	unsigned n;
	int ret;

	ret = tap_ring_open(u->o.ring, &u->ring, err, sizeof(err));
	if (ret < 0) {
		if (ret != -ENOENT)
			upl_log(UPL_LOG_ERR, "cannot use the ring", "path=%s err=\"%s\"", u->o.ring,
				err);
		return ret;
	}
	if (stat(u->o.ring, &st) == 0)
		u->ino = st.st_ino;
	n = tap_ring_count(u->ring);
	u->pos = calloc(n, sizeof(*u->pos));
	u->unacked = calloc(n, sizeof(*u->unacked));
	if (!u->pos || !u->unacked) {
		upl_ring_detach(u);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++)
		u->pos[i] = tap_ring_tail(u->ring, i);
	upl_log(UPL_LOG_INFO, "attached to the ring",
		"path=%s generation=%016lx rings=%u ring_size=%lu", u->o.ring,
		(unsigned long)tap_ring_generation(u->ring), n,
		(unsigned long)tap_ring_size(u->ring));
	return 0;
}

bool upl_ring_replaced(struct upl *u)
{
	struct stat st;

	return stat(u->o.ring, &st) == 0 && st.st_ino != u->ino;
}

bool upl_ring_pressed(struct upl *u)
{
	for (unsigned i = 0; i < tap_ring_count(u->ring); i++)
		if (u->pos[i] - tap_ring_tail(u->ring, i) > tap_ring_size(u->ring) / 2)
			return true;
	return false;
}

bool upl_ring_drained(struct upl *u)
{
	for (unsigned i = 0; i < tap_ring_count(u->ring); i++)
		if (u->pos[i] != tap_ring_head(u->ring, i))
			return false;
	return true;
}

void upl_ring_skip_corrupt(struct upl *u, unsigned idx, uint64_t at)
{
	/* Not a crash: count, skip to what the producer wrote last, go on. */
	u->m.corrupt++;
	tap_ring_count_rejected(u->ring, idx, 1);
	upl_log(UPL_LOG_ERR, "corrupt record in the ring, skipping to its head",
		"ring=%u pos=%lu corrupt_total=%lu", idx, (unsigned long)at,
		(unsigned long)u->m.corrupt);
	u->pos[idx] = tap_ring_head(u->ring, idx);
}

bool upl_record_is_frame(struct upl *u, unsigned idx, uint64_t at, const void *p, uint32_t len)
{
	const char *why = "";

	/*
	 * Every record is checked before it reaches the sink: well-formed
	 * msgpack with a frame's shape (tap_frame_check, cheap enough for
	 * every frame; readers decode fully).
	 */
	if (tap_frame_check(p, len, &why) == 0)
		return true;
	u->m.invalid++;
	tap_ring_count_rejected(u->ring, idx, 1);
	upl_log(UPL_LOG_WARN, "invalid frame in the ring, not shipped",
		"ring=%u pos=%lu why=\"%s\" invalid_total=%lu", idx, (unsigned long)at, why,
		(unsigned long)u->m.invalid);
	return false;
}

#define WAIT_FDS_MAX 64

void upl_wait(struct upl *u, int timeout_ms)
{
	struct pollfd fds[WAIT_FDS_MAX];
	unsigned n = upl_admin_fds(u, fds, WAIT_FDS_MAX);

	if (timeout_ms < 0)
		timeout_ms = 0;
	if (n == 0 && timeout_ms == 0 && !(u->ops && u->sink))
		return;
	if (u->ops && u->sink && u->ops->wait) {
		u->ops->wait(u->sink, fds, n, timeout_ms);
	} else if (poll(fds, n, timeout_ms) == -1) {
		/* EINTR: a signal, which the loop looks at next. */
		for (unsigned i = 0; i < n; i++)
			fds[i].revents = 0;
	}
	if (n)
		upl_admin_serve(u, fds, n);
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_signal };
	sigset_t stop;
	struct upl u;
	int ret;

	memset(&u, 0, sizeof(u));
	if (parse_args(argc, argv, &u.o) != 0)
		return 2;
	verbose_level = u.o.verbose;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* sidetap starts us with them blocked, so that one sent early waits for the handler. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigprocmask(SIG_UNBLOCK, &stop, NULL);
	srandom((unsigned)(upl_unix_ms() ^ (uint64_t)getpid() << 16));
	u.dec = tap_decoder_new();
	if (!u.dec) {
		upl_log(UPL_LOG_ERR, "out of memory", "what=decoder");
		return 1;
	}
	if (u.o.admin_addr && upl_admin_open(&u, u.o.admin_addr) < 0) {
		ret = 1;
		goto out_free_decoder;
	}
	if (u.o.dest.kind == TAP_SINK_FILE)
		ret = upl_file_run(&u);
	else
		ret = upl_remote_run(&u);
	upl_admin_close(&u);
out_free_decoder:
	tap_decoder_free(u.dec);
	return ret;
}
