/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sidetap-uploader: drains the shared-memory ring that sidetap fills and
 * writes the frames to a sink. The ring's read position moves only once the
 * frames are durable at the sink: at-least-once delivery, with stable frame
 * ids for de-duplication.
 *
 * Sink file:DIR: segment files of concatenated frames, written as
 * NAME.partial, fdatasync'd, renamed to NAME.msgpack, and the directory
 * fsync'd. A segment is closed when it reaches --segment-bytes, when its
 * oldest frame is --segment-ms old, or when the rings are drained and quiet.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tap/frame.h"
#include "tap/ring.h"

/*
 * Between drains the uploader sleeps 5 ms, backing off to 50 ms when idle: a
 * few hundred frames per wake-up under load, and an idle sidecar stays cheap.
 */
#define IDLE_SLEEP_MIN_US 5000
#define IDLE_SLEEP_MAX_US 50000
/* Frames read per ring before looking at the next one: fairness between workers. */
#define BATCH_FRAMES 1024

struct opts {
	const char *ring;
	const char *sink;
	const char *dir;
	uint64_t segment_bytes;
	unsigned segment_ms;
	int verbose; /* 0 error, 1 warn, 2 info, 3 debug */
	bool once; /* drain what is there, then exit */
};

/* Frames are gathered here and written in large pieces: one write(2) per frame was most of our CPU. */
#define WBUF_SIZE (256u << 10)

struct segment {
	int fd;
	char *wbuf;
	size_t wlen;
	char partial[PATH_MAX];
	char final[PATH_MAX];
	uint64_t bytes;
	uint64_t frames;
	uint64_t first_ms; /* when its first frame was written */
};

struct uploader {
	struct opts o;
	struct tap_ring *ring;
	ino_t ino;
	uint64_t *pos; /* per ring: how far we have read */
	uint64_t *unacked; /* per ring: frames read since the last release */
	struct segment seg;
	uint64_t seq; /* segments written by this process */
	uint64_t frames_total, corrupt_total, invalid_total;
	int dirfd;
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int verbose_level = 2;

static void logf_(int level, const char *msg, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* One key=value line on stderr, in sidetap's format. */
static void logf_(int level, const char *msg, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	char line[1024];
	struct timespec ts;
	struct tm tm;
	size_t n;
	va_list ap;

	if (level > verbose_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof(line), "ts=%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n,
			      ".%03ldZ level=%s msg=\"%s\" component=uploader ",
			      ts.tv_nsec / 1000000, names[level], msg);
	va_start(ap, fmt);
	if (n < sizeof(line))
		n += (size_t)vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0) {
		/* Nothing better to do with a failed log write. */
	}
}

#define LOG_ERR 0
#define LOG_WARN 1
#define LOG_INFO 2
#define LOG_DEBUG 3

static void usage(FILE *out)
{
	fprintf(out,
		"usage: sidetap-uploader --ring PATH --sink file:DIR [FLAG VALUE]...\n"
		"\n"
		"Drains the shared-memory ring sidetap writes capture frames into and ships them\n"
		"to the sink. The ring's read position moves only after the sink has the frames\n"
		"(file written, fdatasync'd, renamed, directory fsync'd): a restarted uploader\n"
		"resumes there, so every frame arrives at least once; duplicates after a crash\n"
		"carry the same frame id. sidetap starts and supervises the uploader unless it\n"
		"runs with --uploader off.\n"
		"\n"
		"  --ring PATH           the ring file (sidetap --ring); env SIDETAP_RING\n"
		"  --sink URL            file:DIR, segment files DIR/sidetap-*.msgpack; env SIDETAP_SINK\n"
		"  --segment-bytes N     close a segment at this size (default 16M; K, M suffixes)\n"
		"  --segment-ms MS       close a segment when its oldest frame is this old (default 1000)\n"
		"  --once                drain what the ring holds now, then exit\n"
		"  --log-level LEVEL     error, warn, info, debug (default info); env SIDETAP_LOG_LEVEL\n"
		"  --help                this text\n"
		"\n"
		"SIGTERM or SIGINT: ship what the ring holds (until it is drained), then exit 0.\n"
		"Segments are readable with sidetapctl dump DIR.\n");
}

static int parse_size(const char *v, uint64_t *out)
{
	char *end;
	unsigned long long n;

	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || end == v || v[0] == '-')
		return -EINVAL;
	if (*end == 'K' || *end == 'k')
		n <<= 10, end++;
	else if (*end == 'M' || *end == 'm')
		n <<= 20, end++;
	if (*end != '\0' || n < 4096 || n > (1ull << 32))
		return -EINVAL;
	*out = n;
	return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	const char *level = getenv("SIDETAP_LOG_LEVEL");

	memset(o, 0, sizeof(*o));
	o->ring = getenv("SIDETAP_RING");
	o->sink = getenv("SIDETAP_SINK");
	o->segment_bytes = 16u << 20;
	o->segment_ms = 1000;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		const char *eq = strchr(a, '=');
		char flag[32];
		size_t n = eq ? (size_t)(eq - a) : strlen(a);

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			exit(0);
		}
		if (strcmp(a, "--once") == 0) {
			o->once = true;
			continue;
		}
		if (strncmp(a, "--", 2) != 0 || n >= sizeof(flag)) {
			fprintf(stderr, "sidetap-uploader: unexpected argument '%s' (see --help)\n",
				a);
			return -EINVAL;
		}
		memcpy(flag, a, n);
		flag[n] = '\0';
		if (strcmp(flag, "--ring") && strcmp(flag, "--sink") &&
		    strcmp(flag, "--segment-bytes") && strcmp(flag, "--segment-ms") &&
		    strcmp(flag, "--log-level")) {
			fprintf(stderr, "sidetap-uploader: unknown flag '%s' (see --help)\n", flag);
			return -EINVAL;
		}
		if (eq)
			v = eq + 1;
		else if (i + 1 < argc)
			v = argv[++i];
		if (!v) {
			fprintf(stderr, "sidetap-uploader: %s needs a value (see --help)\n", flag);
			return -EINVAL;
		}
		if (strcmp(flag, "--ring") == 0) {
			o->ring = v;
		} else if (strcmp(flag, "--sink") == 0) {
			o->sink = v;
		} else if (strcmp(flag, "--segment-bytes") == 0) {
			if (parse_size(v, &o->segment_bytes)) {
				fprintf(stderr,
					"sidetap-uploader: --segment-bytes: invalid value '%s': bytes from 4K to 4G (K, M suffixes allowed)\n",
					v);
				return -EINVAL;
			}
		} else if (strcmp(flag, "--segment-ms") == 0) {
			char *end;
			unsigned long ms = strtoul(v, &end, 10);

			if (*end || end == v || v[0] == '-' || ms < 1 || ms > 3600000) {
				fprintf(stderr,
					"sidetap-uploader: --segment-ms: invalid value '%s': milliseconds from 1 to 3600000\n",
					v);
				return -EINVAL;
			}
			o->segment_ms = (unsigned)ms;
		} else {
			level = v;
		}
	}
	if (level) {
		static const char *const names[] = { "error", "warn", "info", "debug" };
		int found = -1;

		for (int l = 0; l < 4; l++)
			if (strcmp(level, names[l]) == 0)
				found = l;
		if (found < 0) {
			fprintf(stderr,
				"sidetap-uploader: --log-level: invalid value '%s': accepted: error, warn, info, debug\n",
				level);
			return -EINVAL;
		}
		o->verbose = found;
	} else {
		o->verbose = LOG_INFO;
	}
	if (!o->ring || !o->sink) {
		fprintf(stderr,
			"sidetap-uploader: --ring PATH and --sink URL are both needed (see --help)\n");
		return -EINVAL;
	}
	if (strncmp(o->sink, "file:", 5) != 0 || o->sink[5] == '\0') {
		fprintf(stderr,
			"sidetap-uploader: --sink: invalid value '%s': accepted: file:DIR\n",
			o->sink);
		return -EINVAL;
	}
	o->dir = o->sink + 5;
	return 0;
}

/* Removes NAME.partial files left by uploaders that no longer run (their frames are re-read). */
static void remove_stale_partials(struct uploader *u)
{
	DIR *d = fdopendir(dup(u->dirfd));
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char name[NAME_MAX + 1], *dot;
		size_t n = strlen(de->d_name);
		int pid = 0;

		if (n < 8 || n > NAME_MAX || strcmp(de->d_name + n - 8, ".partial") != 0 ||
		    strncmp(de->d_name, "sidetap-", 8) != 0)
			continue;
		/* sidetap-<gen>-<ms>-<seq>.<pid>.partial: keep those of a live uploader. */
		memcpy(name, de->d_name, n - 8);
		name[n - 8] = '\0';
		dot = strrchr(name, '.');
		if (dot)
			pid = atoi(dot + 1);
		if (pid > 0 && pid != getpid() && kill(pid, 0) == 0)
			continue;
		if (unlinkat(u->dirfd, de->d_name, 0) == 0)
			logf_(LOG_INFO, "removed an unfinished segment", "file=%s", de->d_name);
	}
	closedir(d);
}

static int segment_open(struct uploader *u)
{
	struct segment *s = &u->seg;
	struct timespec ts;
	char name[160];

	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(name, sizeof(name), "sidetap-%016lx-%lu-%06lu",
		 (unsigned long)tap_ring_generation(u->ring),
		 (unsigned long)ts.tv_sec * 1000 + (unsigned long)ts.tv_nsec / 1000000,
		 (unsigned long)++u->seq);
	snprintf(s->final, sizeof(s->final), "%s.msgpack", name);
	snprintf(s->partial, sizeof(s->partial), "%s.%d.partial", name, (int)getpid());
	s->fd = openat(u->dirfd, s->partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (s->fd == -1)
		return -errno;
	s->bytes = 0;
	s->frames = 0;
	s->wlen = 0;
	s->first_ms = now_ms();
	return 0;
}

static int write_all(int fd, const void *buf, size_t len)
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

/*
 * Makes the open segment durable (data, name, directory entry), then lets
 * the producer reuse what it held. Returns 0 or a negative errno; on error
 * nothing is released and the frames are read again.
 */
static int segment_flush(struct segment *s)
{
	int ret = s->wlen ? write_all(s->fd, s->wbuf, s->wlen) : 0;

	s->wlen = 0;
	return ret;
}

/* Appends a frame to the open segment. Returns 0 or a negative errno. */
static int segment_append(struct segment *s, const void *p, size_t len)
{
	int ret;

	if (s->wlen + len > WBUF_SIZE && (ret = segment_flush(s)) < 0)
		return ret;
	if (len > WBUF_SIZE)
		return write_all(s->fd, p, len);
	memcpy(s->wbuf + s->wlen, p, len);
	s->wlen += len;
	return 0;
}

static int segment_commit(struct uploader *u)
{
	struct segment *s = &u->seg;
	int ret = 0;

	if (s->fd < 0)
		return 0;
	if (s->wlen && (ret = segment_flush(s)) < 0) {
		close(s->fd);
		s->fd = -1;
		goto err_unlink;
	}
	if (s->frames == 0) {
		close(s->fd);
		unlinkat(u->dirfd, s->partial, 0);
		s->fd = -1;
		return 0;
	}
	if (fdatasync(s->fd) == -1 || renameat(u->dirfd, s->partial, u->dirfd, s->final) == -1 ||
	    fsync(u->dirfd) == -1)
		ret = -errno;
	close(s->fd);
	s->fd = -1;
err_unlink:
	if (ret < 0) {
		logf_(LOG_ERR, "cannot make a segment durable", "file=%s err=\"%s\"", s->partial,
		      strerror(-ret));
		unlinkat(u->dirfd, s->partial, 0);
		/* Read again from the last release: at least once, never lost. */
		for (unsigned i = 0; i < tap_ring_count(u->ring); i++) {
			u->pos[i] = tap_ring_tail(u->ring, i);
			u->unacked[i] = 0;
		}
		return ret;
	}
	for (unsigned i = 0; i < tap_ring_count(u->ring); i++) {
		if (u->unacked[i] || u->pos[i] != tap_ring_tail(u->ring, i))
			tap_ring_release(u->ring, i, u->pos[i], u->unacked[i]);
		u->unacked[i] = 0;
	}
	u->frames_total += s->frames;
	logf_(LOG_DEBUG, "segment written", "file=%s frames=%lu bytes=%lu", s->final,
	      (unsigned long)s->frames, (unsigned long)s->bytes);
	return 0;
}

static void ring_detach(struct uploader *u)
{
	if (!u->ring)
		return;
	tap_ring_close(u->ring, false);
	u->ring = NULL;
	free(u->pos);
	free(u->unacked);
	u->pos = u->unacked = NULL;
}

/* Maps the ring file; returns 0, -ENOENT while it does not exist, or another error (logged). */
static int ring_attach(struct uploader *u)
{
	char err[256];
	struct stat st;
	unsigned n;
	int ret;

	ret = tap_ring_open(u->o.ring, &u->ring, err, sizeof(err));
	if (ret < 0)
		return ret == -ENOENT ? ret :
					(logf_(LOG_ERR, "cannot use the ring", "path=%s err=\"%s\"",
					       u->o.ring, err),
					 ret);
	if (stat(u->o.ring, &st) == 0)
		u->ino = st.st_ino;
	n = tap_ring_count(u->ring);
	u->pos = calloc(n, sizeof(*u->pos));
	u->unacked = calloc(n, sizeof(*u->unacked));
	if (!u->pos || !u->unacked) {
		ring_detach(u);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++)
		u->pos[i] = tap_ring_tail(u->ring, i);
	logf_(LOG_INFO, "attached to the ring", "path=%s generation=%016lx rings=%u ring_size=%lu",
	      u->o.ring, (unsigned long)tap_ring_generation(u->ring), n,
	      (unsigned long)tap_ring_size(u->ring));
	return 0;
}

/* True when the file at the ring's path is no longer the one we map (sidetap restarted). */
static bool ring_replaced(struct uploader *u)
{
	struct stat st;

	return stat(u->o.ring, &st) == 0 && st.st_ino != u->ino;
}

/*
 * Copies up to BATCH_FRAMES frames of ring <idx> into the segment. Returns
 * the frames taken, or a negative errno when the segment cannot be written.
 */
static long drain_one(struct uploader *u, unsigned idx)
{
	long taken = 0;

	while (taken < BATCH_FRAMES) {
		const void *payload;
		uint32_t len;
		uint64_t at = u->pos[idx];
		const char *why = "";
		int ret;

		ret = tap_ring_next(u->ring, idx, &u->pos[idx], &payload, &len);
		if (ret == 0)
			break;
		if (ret < 0) {
			/* Not a crash: count, skip to what the producer wrote last, go on. */
			u->corrupt_total++;
			tap_ring_count_rejected(u->ring, idx, 1);
			logf_(LOG_ERR, "corrupt record in the ring, skipping to its head",
			      "ring=%u pos=%lu corrupt_total=%lu", idx, (unsigned long)at,
			      (unsigned long)u->corrupt_total);
			u->pos[idx] = tap_ring_head(u->ring, idx);
			continue;
		}
		u->unacked[idx]++;
		/*
		 * Every record is checked before it reaches the sink: well-formed
		 * msgpack with a frame's shape (tap_frame_check, cheap enough for
		 * every frame; readers decode fully).
		 */
		if (tap_frame_check(payload, len, &why) != 0) {
			u->invalid_total++;
			tap_ring_count_rejected(u->ring, idx, 1);
			logf_(LOG_WARN, "invalid frame in the ring, not shipped",
			      "ring=%u pos=%lu why=\"%s\" invalid_total=%lu", idx,
			      (unsigned long)at, why, (unsigned long)u->invalid_total);
			continue;
		}
		if (u->seg.fd < 0 && (ret = segment_open(u)) < 0)
			return ret;
		ret = segment_append(&u->seg, payload, len);
		if (ret < 0)
			return ret;
		u->seg.bytes += len;
		u->seg.frames++;
		taken++;
	}
	return taken;
}

/* True when a ring holds more than half its size unreleased: commit to free it. */
static bool ring_pressed(struct uploader *u)
{
	for (unsigned i = 0; i < tap_ring_count(u->ring); i++)
		if (u->pos[i] - tap_ring_tail(u->ring, i) > tap_ring_size(u->ring) / 2)
			return true;
	return false;
}

static bool drained(struct uploader *u)
{
	for (unsigned i = 0; i < tap_ring_count(u->ring); i++)
		if (u->pos[i] != tap_ring_head(u->ring, i))
			return false;
	return true;
}

static int run(struct uploader *u)
{
	uint64_t waiting_since = 0, stop_since = 0;
	unsigned idle_us = IDLE_SLEEP_MIN_US;
	int ret;

	for (;;) {
		long got = 0;

		if (!u->ring) {
			ret = ring_attach(u);
			if (ret == -ENOENT) {
				if (stop_requested || u->o.once)
					return 0;
				if (!waiting_since) {
					waiting_since = now_ms();
					logf_(LOG_INFO, "waiting for the ring", "path=%s",
					      u->o.ring);
				}
				usleep(50000);
				continue;
			}
			if (ret < 0)
				return 1;
		}
		for (unsigned i = 0; i < tap_ring_count(u->ring); i++) {
			long n = drain_one(u, i);

			if (n < 0) {
				logf_(LOG_ERR, "cannot write a segment", "dir=%s err=\"%s\"",
				      u->o.dir, strerror((int)-n));
				segment_commit(u);
				sleep(1);
				break;
			}
			got += n;
		}
		if (u->seg.fd >= 0 &&
		    (u->seg.bytes >= u->o.segment_bytes ||
		     now_ms() - u->seg.first_ms >= u->o.segment_ms || ring_pressed(u) ||
		     ((stop_requested || u->o.once) && got == 0 && drained(u))))
			segment_commit(u);
		if (got) {
			idle_us = IDLE_SLEEP_MIN_US;
			continue;
		}
		/* Drained. A stopped or replaced ring is finished with; a new one may follow. */
		if (stop_requested || u->o.once) {
			if (!stop_since)
				stop_since = now_ms();
			/* sidetap flushes its last frames on the way out: give it a moment. */
			if (u->o.once || tap_ring_state(u->ring) == TAP_RING_STOPPED ||
			    now_ms() - stop_since >= 2000)
				break;
		}
		if (ring_replaced(u)) {
			segment_commit(u);
			logf_(LOG_INFO, "the ring was replaced (sidetap restarted), switching",
			      "path=%s", u->o.ring);
			ring_detach(u);
			continue;
		}
		usleep(idle_us);
		if (idle_us < IDLE_SLEEP_MAX_US)
			idle_us *= 2;
	}
	segment_commit(u);
	logf_(LOG_INFO, "stopped", "frames=%lu corrupt=%lu invalid=%lu",
	      (unsigned long)u->frames_total, (unsigned long)u->corrupt_total,
	      (unsigned long)u->invalid_total);
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_signal };
	struct uploader u;
	int ret;

	memset(&u, 0, sizeof(u));
	u.seg.fd = -1;
	if (parse_args(argc, argv, &u.o) != 0)
		return 2;
	verbose_level = u.o.verbose;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (mkdir(u.o.dir, 0755) == -1 && errno != EEXIST) {
		logf_(LOG_ERR, "cannot create the sink directory", "dir=%s err=\"%s\"", u.o.dir,
		      strerror(errno));
		return 1;
	}
	u.dirfd = open(u.o.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (u.dirfd == -1) {
		logf_(LOG_ERR, "cannot open the sink directory", "dir=%s err=\"%s\"", u.o.dir,
		      strerror(errno));
		return 1;
	}
	u.seg.wbuf = malloc(WBUF_SIZE);
	if (!u.seg.wbuf) {
		logf_(LOG_ERR, "out of memory", "bytes=%u", WBUF_SIZE);
		ret = 1;
		goto out_close_dir;
	}
	remove_stale_partials(&u);
	ret = run(&u);
	ring_detach(&u);
	free(u.seg.wbuf);
out_close_dir:
	close(u.dirfd);
	return ret;
}
