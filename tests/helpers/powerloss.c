/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An LD_PRELOAD shim that records what a power cut would leave of one
 * directory (POWERLOSS_DIR): the content of each file as of its last
 * fsync/fdatasync, and the directory's entries as of its last fsync. After
 * the process is killed, a test rebuilds the directory from the record in
 * POWERLOSS_SHADOW: SIGKILL alone keeps the page cache, and so would hide a
 * missing fsync. Files in the directory when the process starts count as
 * durable. Record files: c-<key> (a file's synced content) and snap (lines
 * "<name> <key>", key 0 for a file never synced).
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAP_MAX 65536

struct entry {
	ino_t ino;
	char key[40]; /* "" when the inode's content was never synced */
};

static char watched[PATH_MAX], shadow[PATH_MAX];
static dev_t watched_dev;
static ino_t watched_ino;
static struct entry map[MAP_MAX];
static unsigned nmap;
static unsigned long counter;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_openat)(int, const char *, int, ...);

static struct entry *lookup(ino_t ino, int create)
{
	for (unsigned i = 0; i < nmap; i++)
		if (map[i].ino == ino)
			return &map[i];
	if (!create || nmap == MAP_MAX)
		return NULL;
	map[nmap].ino = ino;
	map[nmap].key[0] = '\0';
	return &map[nmap++];
}

/* Writes <len> bytes as shadow/<name>, atomically. */
static void shadow_put(const char *name, const void *buf, size_t len)
{
	char tmp[PATH_MAX + 64], final[PATH_MAX + 64];
	const char *p = buf;
	int fd;

	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", shadow, name);
	snprintf(final, sizeof(final), "%s/%s", shadow, name);
	fd = real_openat(AT_FDCWD, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		abort();
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n <= 0)
			abort();
		p += n;
		len -= (size_t)n;
	}
	close(fd);
	if (rename(tmp, final) != 0)
		abort();
}

/* Records the content of <fd> (a file in the watched directory) as synced. */
static void record_file(int fd, ino_t ino)
{
	struct entry *e = lookup(ino, 1);
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap), name[64];
	ssize_t n;
	int rfd;

	/* The writer's descriptor may be write-only: read the same file through /proc. */
	snprintf(name, sizeof(name), "/proc/self/fd/%d", fd);
	rfd = real_openat(AT_FDCWD, name, O_RDONLY | O_CLOEXEC);
	if (!buf || !e || rfd < 0)
		abort();
	while ((n = pread(rfd, buf + len, cap - len, (off_t)len)) > 0) {
		len += (size_t)n;
		if (len == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			if (!buf)
				abort();
		}
	}
	close(rfd);
	snprintf(e->key, sizeof(e->key), "%d-%lu", (int)getpid(), ++counter);
	snprintf(name, sizeof(name), "c-%s", e->key);
	shadow_put(name, buf, len);
	free(buf);
}

/* Records the watched directory's entries, each with its last synced content. */
static void record_dir(void)
{
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	struct dirent *de;
	DIR *d = opendir(watched);

	if (!buf || !d)
		abort();
	while ((de = readdir(d))) {
		struct entry *e;
		struct stat st;
		char path[PATH_MAX + 256];

		snprintf(path, sizeof(path), "%s/%s", watched, de->d_name);
		if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		e = lookup(st.st_ino, 0);
		if (len + strlen(de->d_name) + 64 > cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			if (!buf)
				abort();
		}
		len += (size_t)snprintf(buf + len, cap - len, "%s %s\n", de->d_name,
					e && e->key[0] ? e->key : "0");
	}
	closedir(d);
	shadow_put("snap", buf, len);
	free(buf);
}

/* What <fd> is: 1 a file directly in the watched directory, 2 the directory, 0 neither. */
static int classify(int fd, struct stat *st)
{
	char link[64], path[PATH_MAX];
	ssize_t n;
	char *slash;

	if (fstat(fd, st) != 0)
		return 0;
	if (S_ISDIR(st->st_mode))
		return st->st_dev == watched_dev && st->st_ino == watched_ino ? 2 : 0;
	if (!S_ISREG(st->st_mode))
		return 0;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0)
		return 0;
	path[n] = '\0';
	slash = strrchr(path, '/');
	if (!slash)
		return 0;
	*slash = '\0';
	return strcmp(path, watched) == 0 ? 1 : 0;
}

static void after_sync(int fd)
{
	struct stat st;
	int what;

	if (!watched[0])
		return;
	pthread_mutex_lock(&lock);
	what = classify(fd, &st);
	if (what == 1)
		record_file(fd, st.st_ino);
	else if (what == 2)
		record_dir();
	pthread_mutex_unlock(&lock);
}

int fsync(int fd)
{
	int ret = real_fsync(fd);

	/* Recorded only once the kernel said it is durable. */
	if (ret == 0)
		after_sync(fd);
	return ret;
}

int fdatasync(int fd)
{
	int ret = real_fdatasync(fd);

	if (ret == 0)
		after_sync(fd);
	return ret;
}

int openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	int fd;

	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;

		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, int);
		va_end(ap);
	}
	fd = real_openat(dirfd, path, flags, mode);
	if (fd >= 0 && (flags & O_CREAT) && watched[0]) {
		struct stat st;

		/* A new file (maybe on a reused inode) has no synced content yet. */
		pthread_mutex_lock(&lock);
		if (classify(fd, &st) == 1) {
			struct entry *e = lookup(st.st_ino, 1);

			if (e)
				e->key[0] = '\0';
		}
		pthread_mutex_unlock(&lock);
	}
	return fd;
}

__attribute__((constructor)) static void init(void)
{
	const char *w = getenv("POWERLOSS_DIR"), *s = getenv("POWERLOSS_SHADOW");
	struct dirent *de;
	struct stat st;
	DIR *d;

	real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	real_openat = (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, "openat");
	if (!w || !s || !realpath(w, watched) || !realpath(s, shadow) || stat(watched, &st) != 0) {
		watched[0] = '\0';
		return;
	}
	watched_dev = st.st_dev;
	watched_ino = st.st_ino;
	/* What is there at start survived the last cut: durable. */
	d = opendir(watched);
	if (!d)
		abort();
	while ((de = readdir(d))) {
		char path[PATH_MAX + 256];
		int fd;

		snprintf(path, sizeof(path), "%s/%s", watched, de->d_name);
		if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		fd = real_openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			record_file(fd, st.st_ino);
			close(fd);
		}
	}
	closedir(d);
	record_dir();
}
