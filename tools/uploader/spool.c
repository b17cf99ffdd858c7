/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The spool: a bounded directory of batches waiting for a remote sink, each
 * a capture file (concatenated frames) named spool-<seq>-<frames>-<ms>.msgpack
 * (sequence number, frame count, its first frame's time in Unix ms), shipped
 * first-in first-out. A file is written as spool-<seq>.partial, fdatasync'd,
 * renamed and the directory fsync'd before the ring lets go of its frames;
 * after a power loss a spool file is complete or absent. Batches the sink
 * refused for good are kept in rejected/.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "upl.h"

/* What rejected/ keeps when --spool-limit is 0. */
#define REJECTED_LIMIT_NO_SPOOL (64ull << 20)

struct upl_spool {
	char dir[PATH_MAX];
	int dirfd;
	int lockfd;
	int rejfd; /* rejected/, opened when first needed */
	uint64_t limit, bytes;
	unsigned nfiles;
	uint64_t next_seq;
	uint64_t rejected_seq;
	bool full;
	struct upl_spool_file *head, *tail;
};

static void file_name(const struct upl_spool_file *f, char *buf, size_t len)
{
	snprintf(buf, len, "spool-%020" PRIu64 "-%u-%" PRIu64 ".msgpack", f->seq, f->frames,
		 f->first_ts_ms);
}

static void list_append(struct upl_spool *s, struct upl_spool_file *f)
{
	f->next = NULL;
	if (s->tail)
		s->tail->next = f;
	else
		s->head = f;
	s->tail = f;
	s->bytes += f->bytes;
	s->nfiles++;
}

static void list_unlink(struct upl_spool *s, struct upl_spool_file *f)
{
	struct upl_spool_file **pp = &s->head, *prev = NULL;

	while (*pp && *pp != f) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (!*pp)
		return;
	*pp = f->next;
	if (s->tail == f)
		s->tail = prev;
	s->bytes -= f->bytes;
	s->nfiles--;
	s->full = false;
}

static int cmp_seq(const void *a, const void *b)
{
	const struct upl_spool_file *x = *(struct upl_spool_file *const *)a;
	const struct upl_spool_file *y = *(struct upl_spool_file *const *)b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Lists the waiting files in sequence order and removes unfinished ones (we hold the lock). */
static int scan(struct upl_spool *s)
{
	struct upl_spool_file **v = NULL, *f;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	d = fdopendir(dup(s->dirfd));
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		const char *name = de->d_name;
		size_t len = strlen(name);
		struct stat st;
		uint64_t seq, ms;
		unsigned frames;
		int used = 0;

		if (strncmp(name, "spool-", 6) != 0)
			continue;
		if (len > 8 && strcmp(name + len - 8, ".partial") == 0) {
			if (unlinkat(s->dirfd, name, 0) == 0)
				upl_log(UPL_LOG_INFO, "removed an unfinished spool file", "file=%s",
					name);
			continue;
		}
		if (sscanf(name, "spool-%" SCNu64 "-%u-%" SCNu64 ".msgpack%n", &seq, &frames, &ms,
			   &used) != 3 ||
		    (size_t)used != len) {
			upl_log(UPL_LOG_WARN, "not a spool file, left alone", "dir=%s file=%s",
				s->dir, name);
			continue;
		}
		if (fstatat(s->dirfd, name, &st, 0) == -1)
			continue;
		if (n == cap) {
			struct upl_spool_file **nv;

			cap = cap ? cap * 2 : 64;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv)
				goto err_nomem;
			v = nv;
		}
		f = calloc(1, sizeof(*f));
		if (!f)
			goto err_nomem;
		f->seq = seq;
		f->frames = frames;
		f->first_ts_ms = ms;
		f->bytes = (uint64_t)st.st_size;
		v[n++] = f;
	}
	closedir(d);
	if (n)
		qsort(v, n, sizeof(*v), cmp_seq);
	for (size_t i = 0; i < n; i++) {
		list_append(s, v[i]);
		if (v[i]->seq >= s->next_seq)
			s->next_seq = v[i]->seq + 1;
	}
	free(v);
	return 0;

err_nomem:
	closedir(d);
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
	return -ENOMEM;
}

int upl_spool_open(const char *dir, uint64_t limit, struct upl_spool **out)
{
	struct upl_spool *s;
	int ret;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	s->limit = limit;
	s->rejfd = -1;
	s->next_seq = 1;
	/* Captured traffic: readable by the uploader's user only. */
	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		ret = -errno;
		upl_log(UPL_LOG_ERR, "cannot create the spool directory", "dir=%s err=\"%s\"", dir,
			strerror(-ret));
		goto err_free;
	}
	s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd == -1) {
		ret = -errno;
		upl_log(UPL_LOG_ERR, "cannot open the spool directory", "dir=%s err=\"%s\"", dir,
			strerror(-ret));
		goto err_free;
	}
	s->lockfd = openat(s->dirfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->lockfd == -1) {
		ret = -errno;
		upl_log(UPL_LOG_ERR, "cannot create the spool's lock file", "dir=%s err=\"%s\"",
			dir, strerror(-ret));
		goto err_close_dir;
	}
	/* Two uploaders on one spool would ship and delete each other's files. */
	if (flock(s->lockfd, LOCK_EX | LOCK_NB) == -1) {
		ret = errno == EWOULDBLOCK ? -EBUSY : -errno;
		upl_log(UPL_LOG_ERR, "the spool directory is in use by another uploader",
			"dir=%s err=\"%s\"", dir, strerror(-ret));
		goto err_close_lock;
	}
	ret = scan(s);
	if (ret < 0) {
		upl_log(UPL_LOG_ERR, "cannot read the spool directory", "dir=%s err=\"%s\"", dir,
			strerror(-ret));
		goto err_close_lock;
	}
	upl_log(UPL_LOG_INFO, "spool opened", "dir=%s files=%u bytes=%lu limit=%lu", dir, s->nfiles,
		(unsigned long)s->bytes, (unsigned long)limit);
	*out = s;
	return 0;

err_close_lock:
	close(s->lockfd);
err_close_dir:
	close(s->dirfd);
err_free:
	free(s);
	return ret;
}

void upl_spool_close(struct upl_spool *s)
{
	struct upl_spool_file *f, *next;

	if (!s)
		return;
	for (f = s->head; f; f = next) {
		next = f->next;
		free(f);
	}
	if (s->rejfd >= 0)
		close(s->rejfd);
	close(s->lockfd);
	close(s->dirfd);
	free(s);
}

/*
 * Writes <len> bytes as <final> in directory <dfd>: a .partial file written
 * and fdatasync'd, renamed, the directory fsync'd. Returns 0 or a negative errno.
 */
static int write_durable(int dfd, const char *partial, const char *final, const void *buf,
			 size_t len)
{
	int fd, ret = 0;

	fd = openat(dfd, partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd == -1)
		return -errno;
	ret = upl_write_all(fd, buf, len);
	if (ret == 0 && fdatasync(fd) == -1)
		ret = -errno;
	close(fd);
	/* The name appears only with the data behind it; the directory entry is made durable. */
	if (ret == 0 && (renameat(dfd, partial, dfd, final) == -1 || fsync(dfd) == -1))
		ret = -errno;
	if (ret < 0)
		unlinkat(dfd, partial, 0);
	return ret;
}

int upl_spool_put(struct upl_spool *s, struct upl_batch *b)
{
	struct upl_spool_file *f;
	char partial[64], final[128];
	int ret;

	if (s->limit == 0 || s->bytes + b->len > s->limit) {
		s->full = true;
		return -ENOSPC;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->seq = s->next_seq++;
	f->frames = b->nframes;
	f->first_ts_ms = b->first_ts_ns / 1000000;
	f->bytes = b->len;
	snprintf(partial, sizeof(partial), "spool-%020" PRIu64 ".partial", f->seq);
	file_name(f, final, sizeof(final));
	ret = write_durable(s->dirfd, partial, final, b->buf, b->len);
	if (ret < 0) {
		free(f);
		if (ret == -ENOSPC || ret == -EDQUOT) {
			/* The file system is full before our limit: the same policy. */
			s->full = true;
			return -ENOSPC;
		}
		upl_log(UPL_LOG_ERR, "cannot write a spool file", "dir=%s file=%s err=\"%s\"",
			s->dir, final, strerror(-ret));
		return ret;
	}
	list_append(s, f);
	s->full = false;
	b->sf = f;
	upl_log(UPL_LOG_DEBUG, "batch spooled", "file=%s frames=%u bytes=%zu", final, b->nframes,
		b->len);
	return 0;
}

struct upl_spool_file *upl_spool_next(struct upl_spool *s)
{
	for (struct upl_spool_file *f = s->head; f; f = f->next)
		if (!f->busy)
			return f;
	return NULL;
}

int upl_spool_load(struct upl_spool *s, struct upl_spool_file *f, struct upl_batch *b)
{
	char name[128], chunk[64 << 10];
	ssize_t n;
	int fd, ret = 0;

	file_name(f, name, sizeof(name));
	fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd == -1) {
		ret = -errno;
		upl_log(UPL_LOG_ERR, "cannot read a spool file, forgetting it",
			"dir=%s file=%s err=\"%s\"", s->dir, name, strerror(-ret));
		/* Gone or unreadable: shipping it is impossible, keeping it in the list is pointless. */
		list_unlink(s, f);
		free(f);
		return ret;
	}
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n == -1) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		ret = upl_batch_append(b, chunk, (size_t)n);
		if (ret < 0)
			break;
	}
	close(fd);
	if (ret < 0) {
		upl_log(UPL_LOG_ERR, "cannot read a spool file", "dir=%s file=%s err=\"%s\"",
			s->dir, name, strerror(-ret));
		return ret;
	}
	b->nframes = f->frames;
	b->first_ts_ns = f->first_ts_ms * 1000000;
	b->from_spool = true;
	b->sf = f;
	f->busy = true;
	return 0;
}

void upl_spool_remove(struct upl_spool *s, struct upl_spool_file *f)
{
	char name[128];

	file_name(f, name, sizeof(name));
	/*
	 * No directory fsync: a deletion lost to a power cut brings the batch
	 * back, and it is shipped again (a duplicate, never a loss).
	 */
	if (unlinkat(s->dirfd, name, 0) == -1 && errno != ENOENT)
		upl_log(UPL_LOG_WARN, "cannot delete a spool file", "file=%s err=\"%s\"", name,
			strerror(errno));
	list_unlink(s, f);
	free(f);
}

static int rejected_dir(struct upl_spool *s)
{
	if (s->rejfd >= 0)
		return 0;
	if (mkdirat(s->dirfd, "rejected", 0700) == -1 && errno != EEXIST)
		return -errno;
	s->rejfd = openat(s->dirfd, "rejected", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return s->rejfd == -1 ? -errno : 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Deletes the oldest rejected files while they hold more than <limit> bytes. */
static void prune_rejected(struct upl_spool *s, uint64_t limit)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	uint64_t total = 0;
	struct dirent *de;
	DIR *d = fdopendir(dup(s->rejfd));

	if (!d)
		return;
	while ((de = readdir(d))) {
		struct stat st;

		if (strncmp(de->d_name, "rejected-", 9) != 0 ||
		    fstatat(s->rejfd, de->d_name, &st, 0) == -1)
			continue;
		if (n == cap) {
			char **nv;

			cap = cap ? cap * 2 : 64;
			nv = realloc(names, cap * sizeof(*names));
			if (!nv)
				break;
			names = nv;
		}
		names[n] = strdup(de->d_name);
		if (!names[n])
			break;
		n++;
		total += (uint64_t)st.st_size;
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++) {
		struct stat st;

		if (total > limit && fstatat(s->rejfd, names[i], &st, 0) == 0 &&
		    unlinkat(s->rejfd, names[i], 0) == 0) {
			total -= (uint64_t)st.st_size;
			upl_log(UPL_LOG_WARN, "deleted an old rejected batch to make room",
				"file=rejected/%s", names[i]);
		}
		free(names[i]);
	}
	free(names);
}

int upl_spool_reject(struct upl_spool *s, struct upl_batch *b)
{
	char name[128], partial[160], from[128];
	int ret;

	ret = rejected_dir(s);
	if (ret < 0) {
		upl_log(UPL_LOG_ERR, "cannot create the rejected directory",
			"dir=%s/rejected err=\"%s\"", s->dir, strerror(-ret));
		return ret;
	}
	snprintf(name, sizeof(name), "rejected-%013" PRIu64 "-%06" PRIu64 ".msgpack", upl_unix_ms(),
		 ++s->rejected_seq);
	if (b->sf) {
		file_name(b->sf, from, sizeof(from));
		if (renameat(s->dirfd, from, s->rejfd, name) == -1 || fsync(s->rejfd) == -1) {
			ret = -errno;
			upl_log(UPL_LOG_ERR, "cannot move a refused spool file aside",
				"file=%s err=\"%s\"", from, strerror(-ret));
		}
		list_unlink(s, b->sf);
		free(b->sf);
		b->sf = NULL;
	} else {
		snprintf(partial, sizeof(partial), "%s.partial", name);
		ret = write_durable(s->rejfd, partial, name, b->buf, b->len);
		if (ret < 0)
			upl_log(UPL_LOG_ERR, "cannot write a refused batch aside",
				"dir=%s/rejected err=\"%s\"", s->dir, strerror(-ret));
	}
	if (ret == 0)
		upl_log(UPL_LOG_INFO, "refused batch kept", "file=%s/rejected/%s frames=%u", s->dir,
			name, b->nframes);
	prune_rejected(s, s->limit ? s->limit : REJECTED_LIMIT_NO_SPOOL);
	return ret;
}

unsigned upl_spool_files(const struct upl_spool *s)
{
	return s ? s->nfiles : 0;
}

uint64_t upl_spool_bytes(const struct upl_spool *s)
{
	return s ? s->bytes : 0;
}

uint64_t upl_spool_oldest_ms(const struct upl_spool *s)
{
	uint64_t oldest = 0;

	if (!s)
		return 0;
	/* Files are in shipping order; their first frames are nearly, not strictly, in time order. */
	for (const struct upl_spool_file *f = s->head; f; f = f->next)
		if (f->first_ts_ms && (!oldest || f->first_ts_ms < oldest))
			oldest = f->first_ts_ms;
	return oldest;
}

bool upl_spool_is_full(const struct upl_spool *s)
{
	return s && s->full;
}

void upl_spool_forget_full(struct upl_spool *s)
{
	if (s && s->nfiles == 0)
		s->full = false;
}

uint64_t upl_spool_limit(const struct upl_spool *s)
{
	return s ? s->limit : 0;
}
