/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The file: sink: segment files of concatenated frames, written as
 * NAME.partial, fdatasync'd, renamed to NAME.msgpack, and the directory
 * fsync'd; only then does the ring's read position move. A segment is closed
 * when it reaches --segment-bytes, when its oldest frame is --segment-ms old,
 * or when the rings are drained and quiet.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tap/frame.h"
#include "tap/ring.h"
#include "upl.h"

/*
 * Between drains the uploader sleeps 5 ms, backing off to 50 ms when idle: a
 * few hundred frames per wake-up under load, and an idle sidecar stays cheap.
 */
#define IDLE_SLEEP_MIN_MS 5
#define IDLE_SLEEP_MAX_MS 50
/* Frames read per ring before looking at the next one: fairness between workers. */
#define BATCH_FRAMES 1024

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

struct file_sink {
	struct upl *u;
	struct segment seg;
	uint64_t seq; /* segments written by this process */
	int dirfd;
};
/* Removes NAME.partial files left by uploaders that no longer run (their frames are re-read). */
static void remove_stale_partials(struct file_sink *fs)
{
	DIR *d = fdopendir(dup(fs->dirfd));
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
		if (unlinkat(fs->dirfd, de->d_name, 0) == 0)
			upl_log(UPL_LOG_INFO, "removed an unfinished segment", "file=%s",
				de->d_name);
	}
	closedir(d);
}

static int segment_open(struct file_sink *fs)
{
	struct segment *s = &fs->seg;
	struct upl *u = fs->u;
	struct timespec ts;
	char name[160];

	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(name, sizeof(name), "sidetap-%016lx-%lu-%06lu",
		 (unsigned long)tap_ring_generation(u->ring),
		 (unsigned long)ts.tv_sec * 1000 + (unsigned long)ts.tv_nsec / 1000000,
		 (unsigned long)++fs->seq);
	snprintf(s->final, sizeof(s->final), "%s.msgpack", name);
	snprintf(s->partial, sizeof(s->partial), "%s.%d.partial", name, (int)getpid());
	s->fd = openat(fs->dirfd, s->partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (s->fd == -1)
		return -errno;
	s->bytes = 0;
	s->frames = 0;
	s->wlen = 0;
	s->first_ms = upl_now_ms();
	return 0;
}

/*
 * Makes the open segment durable (data, name, directory entry), then lets
 * the producer reuse what it held. Returns 0 or a negative errno; on error
 * nothing is released and the frames are read again.
 */
static int segment_flush(struct segment *s)
{
	int ret = s->wlen ? upl_write_all(s->fd, s->wbuf, s->wlen) : 0;

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
		return upl_write_all(s->fd, p, len);
	memcpy(s->wbuf + s->wlen, p, len);
	s->wlen += len;
	return 0;
}

static int segment_commit(struct file_sink *fs)
{
	struct segment *s = &fs->seg;
	struct upl *u = fs->u;
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
		unlinkat(fs->dirfd, s->partial, 0);
		s->fd = -1;
		return 0;
	}
	if (fdatasync(s->fd) == -1 || renameat(fs->dirfd, s->partial, fs->dirfd, s->final) == -1 ||
	    fsync(fs->dirfd) == -1)
		ret = -errno;
	close(s->fd);
	s->fd = -1;
err_unlink:
	if (ret < 0) {
		upl_log(UPL_LOG_ERR, "cannot make a segment durable", "file=%s err=\"%s\"",
			s->partial, strerror(-ret));
		upl_set_error(u, "cannot make a segment durable: %s", strerror(-ret));
		unlinkat(fs->dirfd, s->partial, 0);
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
	u->m.frames_shipped += s->frames;
	u->m.bytes_shipped += s->bytes;
	u->m.batches_shipped++;
	upl_log(UPL_LOG_DEBUG, "segment written", "file=%s frames=%lu bytes=%lu", s->final,
		(unsigned long)s->frames, (unsigned long)s->bytes);
	return 0;
}

/*
 * Copies up to BATCH_FRAMES frames of ring <idx> into the segment. Returns
 * the frames taken, or a negative errno when the segment cannot be written.
 */
static long drain_one(struct file_sink *fs, unsigned idx)
{
	struct upl *u = fs->u;
	long taken = 0;

	while (taken < BATCH_FRAMES) {
		const void *payload;
		uint32_t len;
		uint64_t at = u->pos[idx];
		int ret;

		ret = tap_ring_next(u->ring, idx, &u->pos[idx], &payload, &len);
		if (ret == 0)
			break;
		if (ret < 0) {
			upl_ring_skip_corrupt(u, idx, at);
			continue;
		}
		u->unacked[idx]++;
		if (!upl_record_is_frame(u, idx, at, payload, len))
			continue;
		if (fs->seg.fd < 0 && (ret = segment_open(fs)) < 0)
			return ret;
		ret = segment_append(&fs->seg, payload, len);
		if (ret < 0)
			return ret;
		fs->seg.bytes += len;
		fs->seg.frames++;
		taken++;
	}
	return taken;
}

static int run(struct file_sink *fs)
{
	struct upl *u = fs->u;
	uint64_t waiting_since = 0, stop_since = 0;
	unsigned idle_ms = IDLE_SLEEP_MIN_MS;
	int ret;

	for (;;) {
		long got = 0;

		if (!u->ring) {
			ret = upl_ring_attach(u);
			if (ret == -ENOENT) {
				if (upl_stop_requested || u->o.once)
					return 0;
				if (!waiting_since) {
					waiting_since = upl_now_ms();
					upl_log(UPL_LOG_INFO, "waiting for the ring", "path=%s",
						u->o.ring);
				}
				upl_wait(u, 50);
				continue;
			}
			if (ret < 0)
				return 1;
		}
		for (unsigned i = 0; i < tap_ring_count(u->ring); i++) {
			long n = drain_one(fs, i);

			if (n < 0) {
				upl_log(UPL_LOG_ERR, "cannot write a segment", "dir=%s err=\"%s\"",
					u->o.dest.dir, strerror((int)-n));
				upl_set_error(u, "cannot write a segment: %s", strerror((int)-n));
				segment_commit(fs);
				upl_wait(u, 1000);
				break;
			}
			got += n;
		}
		if (fs->seg.fd >= 0 &&
		    (fs->seg.bytes >= u->o.segment_bytes ||
		     upl_now_ms() - fs->seg.first_ms >= u->o.segment_ms || upl_ring_pressed(u) ||
		     ((upl_stop_requested || u->o.once) && got == 0 && upl_ring_drained(u))))
			segment_commit(fs);
		if (got) {
			idle_ms = IDLE_SLEEP_MIN_MS;
			/* An admin client is answered between drains too. */
			upl_wait(u, 0);
			continue;
		}
		/* Drained. A stopped or replaced ring is finished with; a new one may follow. */
		if (upl_stop_requested || u->o.once) {
			if (!stop_since)
				stop_since = upl_now_ms();
			/* sidetap flushes its last frames on the way out: give it a moment. */
			if (u->o.once || tap_ring_state(u->ring) == TAP_RING_STOPPED ||
			    upl_now_ms() - stop_since >= 2000 || upl_stop_requested > 1)
				break;
		}
		if (upl_ring_replaced(u)) {
			segment_commit(fs);
			upl_log(UPL_LOG_INFO,
				"the ring was replaced (sidetap restarted), switching", "path=%s",
				u->o.ring);
			upl_ring_detach(u);
			continue;
		}
		upl_wait(u, (int)idle_ms);
		if (idle_ms < IDLE_SLEEP_MAX_MS)
			idle_ms *= 2;
	}
	segment_commit(fs);
	upl_log(UPL_LOG_INFO, "stopped", "frames=%lu corrupt=%lu invalid=%lu",
		(unsigned long)u->m.frames_shipped, (unsigned long)u->m.corrupt,
		(unsigned long)u->m.invalid);
	return 0;
}

int upl_file_run(struct upl *u)
{
	struct file_sink fs = { .u = u, .seg = { .fd = -1 } };
	int ret;

	if (mkdir(u->o.dest.dir, 0755) == -1 && errno != EEXIST) {
		upl_log(UPL_LOG_ERR, "cannot create the sink directory", "dir=%s err=\"%s\"",
			u->o.dest.dir, strerror(errno));
		return 1;
	}
	fs.dirfd = open(u->o.dest.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fs.dirfd == -1) {
		upl_log(UPL_LOG_ERR, "cannot open the sink directory", "dir=%s err=\"%s\"",
			u->o.dest.dir, strerror(errno));
		return 1;
	}
	fs.seg.wbuf = malloc(WBUF_SIZE);
	if (!fs.seg.wbuf) {
		upl_log(UPL_LOG_ERR, "out of memory", "bytes=%u", WBUF_SIZE);
		ret = 1;
		goto out_close_dir;
	}
	remove_stale_partials(&fs);
	ret = run(&fs);
	upl_ring_detach(u);
	free(fs.seg.wbuf);
out_close_dir:
	close(fs.dirfd);
	return ret;
}
