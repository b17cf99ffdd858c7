/* SPDX-License-Identifier: Apache-2.0 */
/* Micro-benchmark: loopback socket to socket by copy, splice(2), io_uring splice, poll+splice. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <liburing.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KIB (1024UL)
#define MIB (1024UL * KIB)
#define GIB (1024UL * MIB)

/* A run that has not finished by then is stuck: SIGALRM ends the process. */
#define RUN_TIMEOUT_S 300
#define MAX_REPS 15

/*
 * One transfer: source child -> in_fd (loopback TCP) -> mover (this process)
 * -> out_fd (loopback TCP) -> sink child. Only the mover runs in this
 * process, so getrusage(RUSAGE_SELF) is the mover's CPU, including the io-wq
 * kernel threads that io_uring creates in this thread group.
 */
struct run {
	int in_fd;
	int out_fd;
	int pipe_fd[2];
	size_t bytes;
	size_t chunk;
	size_t pipe_size;
	char *buf;
	struct io_uring ring;
	unsigned long ops;
	unsigned long waits;
};

struct method {
	const char *name;
	const char *what;
	bool nonblock;
	bool uring;
	int (*move)(struct run *r);
};

struct sample {
	double wall_s;
	double user_s;
	double sys_s;
	unsigned long ops;
	unsigned long waits;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double tv_s(const struct timeval *tv)
{
	return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

/* Submits what is queued and waits for one completion; returns its result. */
static int uring_one(struct run *r)
{
	struct io_uring_cqe *cqe;
	int ret;

	ret = io_uring_submit_and_wait(&r->ring, 1);
	if (ret < 0)
		return ret;
	r->waits++;
	ret = io_uring_wait_cqe(&r->ring, &cqe);
	if (ret < 0)
		return ret;
	ret = cqe->res;
	io_uring_cqe_seen(&r->ring, cqe);
	return ret;
}

static struct io_uring_sqe *get_sqe(struct run *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

	/* The ring is drained after every step, so a slot is always free. */
	if (!sqe) {
		fprintf(stderr, "splice_bench: submission queue full\n");
		exit(1);
	}
	return sqe;
}

/* Reference: blocking recv(2)/send(2) through one buffer. */
static int move_copy(struct run *r)
{
	size_t moved = 0;

	while (moved < r->bytes) {
		ssize_t n = recv(r->in_fd, r->buf, r->chunk, 0);

		r->ops++;
		if (n <= 0)
			return n == 0 ? -EPIPE : -errno;
		for (ssize_t off = 0; off < n;) {
			ssize_t w = send(r->out_fd, r->buf + off, (size_t)(n - off), MSG_NOSIGNAL);

			r->ops++;
			if (w < 0)
				return -errno;
			off += w;
		}
		moved += (size_t)n;
	}
	return 0;
}

/* What sidetap's copy path does: io_uring recv, then io_uring send, one at a time. */
static int move_uring_copy(struct run *r)
{
	size_t moved = 0;

	while (moved < r->bytes) {
		int n, w;

		io_uring_prep_recv(get_sqe(r), r->in_fd, r->buf, r->chunk, 0);
		r->ops++;
		n = uring_one(r);
		if (n <= 0)
			return n == 0 ? -EPIPE : n;
		for (int off = 0; off < n; off += w) {
			io_uring_prep_send(get_sqe(r), r->out_fd, r->buf + off, (size_t)(n - off),
					   MSG_NOSIGNAL);
			r->ops++;
			w = uring_one(r);
			if (w < 0)
				return w;
		}
		moved += (size_t)n;
	}
	return 0;
}

/* Blocking splice(2) socket -> pipe -> socket from this thread: splice's lower bound. */
static int move_splice(struct run *r)
{
	size_t moved = 0;

	while (moved < r->bytes) {
		ssize_t n = splice(r->in_fd, NULL, r->pipe_fd[1], NULL, r->chunk, SPLICE_F_MOVE);

		r->ops++;
		if (n <= 0)
			return n == 0 ? -EPIPE : -errno;
		while (n > 0) {
			ssize_t w = splice(r->pipe_fd[0], NULL, r->out_fd, NULL, (size_t)n,
					   SPLICE_F_MOVE);

			r->ops++;
			if (w <= 0)
				return w == 0 ? -EPIPE : -errno;
			n -= w;
			moved += (size_t)w;
		}
	}
	return 0;
}

/* Empties <n> bytes from the pipe into out_fd with IORING_OP_SPLICE. */
static int uring_drain_pipe(struct run *r, size_t n, size_t *moved)
{
	while (n > 0) {
		int w;

		io_uring_prep_splice(get_sqe(r), r->pipe_fd[0], -1, r->out_fd, -1, (unsigned)n,
				     SPLICE_F_MOVE);
		r->ops++;
		w = uring_one(r);
		if (w <= 0)
			return w == 0 ? -EPIPE : w;
		n -= (size_t)w;
		*moved += (size_t)w;
	}
	return 0;
}

/*
 * IORING_OP_SPLICE back to back: socket -> pipe, wait, pipe -> socket, wait.
 * The kernel always runs SPLICE on an io-wq worker: a thread hop per call.
 */
static int move_uring_splice(struct run *r)
{
	size_t moved = 0;

	while (moved < r->bytes) {
		int n, ret;

		io_uring_prep_splice(get_sqe(r), r->in_fd, -1, r->pipe_fd[1], -1,
				     (unsigned)r->chunk, SPLICE_F_MOVE);
		r->ops++;
		n = uring_one(r);
		if (n <= 0)
			return n == 0 ? -EPIPE : n;
		ret = uring_drain_pipe(r, (size_t)n, &moved);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/*
 * IORING_OP_SPLICE linked: socket -> pipe (IOSQE_IO_LINK) then pipe -> socket
 * in one submission. A short first splice fails the link (the second comes
 * back -ECANCELED) and the pipe is then drained by a separate request.
 */
static int move_uring_splice_linked(struct run *r)
{
	size_t moved = 0;

	while (moved < r->bytes) {
		struct io_uring_sqe *sqe;
		struct io_uring_cqe *cqe;
		int res[2] = { 0, 0 };
		int ret;

		sqe = get_sqe(r);
		io_uring_prep_splice(sqe, r->in_fd, -1, r->pipe_fd[1], -1, (unsigned)r->chunk,
				     SPLICE_F_MOVE);
		sqe->flags |= IOSQE_IO_LINK;
		sqe->user_data = 0;
		sqe = get_sqe(r);
		io_uring_prep_splice(sqe, r->pipe_fd[0], -1, r->out_fd, -1, (unsigned)r->chunk,
				     SPLICE_F_MOVE);
		sqe->user_data = 1;
		r->ops += 2;
		ret = io_uring_submit_and_wait(&r->ring, 2);
		if (ret < 0)
			return ret;
		r->waits++;
		for (int i = 0; i < 2; i++) {
			ret = io_uring_wait_cqe(&r->ring, &cqe);
			if (ret < 0)
				return ret;
			res[cqe->user_data & 1] = cqe->res;
			io_uring_cqe_seen(&r->ring, cqe);
		}
		if (res[0] <= 0)
			return res[0] == 0 ? -EPIPE : res[0];
		if (res[1] == -ECANCELED) {
			ret = uring_drain_pipe(r, (size_t)res[0], &moved);
			if (ret < 0)
				return ret;
			continue;
		}
		if (res[1] < 0)
			return res[1];
		moved += (size_t)res[1];
		/* A short second splice leaves the rest in the pipe. */
		ret = uring_drain_pipe(r, (size_t)(res[0] - res[1]), &moved);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Waits with io_uring POLL_ADD until <fd> reports <mask>. */
static int uring_poll(struct run *r, int fd, unsigned mask)
{
	int ret;

	io_uring_prep_poll_add(get_sqe(r), fd, mask);
	ret = uring_one(r);
	return ret < 0 ? ret : 0;
}

/*
 * Readiness-driven, as HAProxy and sidetap's splice path do it: non-blocking
 * splice(2) from the loop thread, and an io_uring poll only when a side
 * answers EAGAIN. No io-wq hop.
 */
static int move_poll_splice(struct run *r)
{
	const unsigned flags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE;
	size_t moved = 0, pending = 0;
	bool eof = false;

	while (moved < r->bytes) {
		bool progress = false, out_blocked = false;
		ssize_t n;
		int ret;

		if (!eof && pending < r->pipe_size) {
			n = splice(r->in_fd, NULL, r->pipe_fd[1], NULL, r->pipe_size - pending,
				   flags);
			r->ops++;
			if (n > 0) {
				pending += (size_t)n;
				progress = true;
			} else if (n == 0) {
				eof = true;
			} else if (errno != EAGAIN) {
				return -errno;
			}
		}
		if (pending > 0) {
			n = splice(r->pipe_fd[0], NULL, r->out_fd, NULL, pending, flags);
			r->ops++;
			if (n > 0) {
				pending -= (size_t)n;
				moved += (size_t)n;
				progress = true;
			} else if (n < 0 && errno == EAGAIN) {
				out_blocked = true;
			} else {
				return n == 0 ? -EPIPE : -errno;
			}
		}
		if (progress || moved == r->bytes)
			continue;
		if (eof)
			return -EPIPE;
		ret = out_blocked ? uring_poll(r, r->out_fd, POLLOUT) :
				    uring_poll(r, r->in_fd, POLLIN);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static const struct method methods[] = {
	{ "copy", "blocking recv/send, one buffer", false, false, move_copy },
	{ "uring-copy", "io_uring RECV then SEND", true, true, move_uring_copy },
	{ "splice", "blocking splice(2), loop thread", false, false, move_splice },
	{ "uring-splice", "IORING_OP_SPLICE back to back", false, true, move_uring_splice },
	{ "uring-splice-linked", "IORING_OP_SPLICE linked pair", false, true,
	  move_uring_splice_linked },
	{ "poll-splice", "io_uring POLL_ADD + splice NONBLOCK", true, true, move_poll_splice },
};

#define NMETHODS (sizeof(methods) / sizeof(methods[0]))

/* Returns a connected loopback pair: <a> connects, <b> is accepted. */
static int tcp_pair(int lfd, int *a, int *b)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int ret;

	if (getsockname(lfd, (struct sockaddr *)&sin, &len) == -1)
		return -errno;
	*a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*a == -1)
		return -errno;
	if (connect(*a, (struct sockaddr *)&sin, len) == -1)
		goto err_close_a;
	*b = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (*b == -1)
		goto err_close_a;
	return 0;

err_close_a:
	ret = -errno;
	close(*a);
	return ret;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
		return -errno;
	return 0;
}

/* In a child: closes the <n> descriptors in <fds> except <keep1> and <keep2>. */
static void close_except(const int *fds, size_t n, int keep1, int keep2)
{
	for (size_t i = 0; i < n; i++)
		if (fds[i] != keep1 && fds[i] != keep2)
			close(fds[i]);
}

/* Source child: waits for the start byte on <go>, then sends <bytes> and exits. */
static void __attribute__((noreturn)) run_source(int fd, int go, size_t bytes, size_t chunk)
{
	char *buf = malloc(chunk);
	char c;

	if (!buf || read(go, &c, 1) != 1)
		_exit(2);
	memset(buf, 'x', chunk);
	while (bytes > 0) {
		ssize_t n = send(fd, buf, bytes < chunk ? bytes : chunk, MSG_NOSIGNAL);

		if (n <= 0)
			_exit(1);
		bytes -= (size_t)n;
	}
	_exit(0);
}

/* Sink child: discards (MSG_TRUNC: no copy on TCP) until EOF; exit 0 if it saw <bytes>. */
static void __attribute__((noreturn)) run_sink(int fd, size_t bytes)
{
	size_t got = 0;
	char dummy[64];

	for (;;) {
		ssize_t n = recv(fd, dummy, 1 << 20, MSG_TRUNC);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	_exit(got == bytes ? 0 : 1);
}

/* Runs <m> once over fresh sockets; fills <s>. Returns 0 or a negative errno. */
static int run_method(const struct method *m, size_t bytes, size_t chunk, size_t pipe_size,
		      char *buf, struct sample *s)
{
	struct run r = { .bytes = bytes, .chunk = chunk, .buf = buf };
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct rusage ru0, ru1;
	int src_fd, dst_fd, lfd, go[2], all[9];
	pid_t src_pid, dst_pid;
	int ret, st_src, st_dst;
	double t0;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd == -1)
		return -errno;
	if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == -1 || listen(lfd, 4) == -1) {
		ret = -errno;
		goto err_close_lfd;
	}
	ret = tcp_pair(lfd, &src_fd, &r.in_fd);
	if (ret < 0)
		goto err_close_lfd;
	ret = tcp_pair(lfd, &r.out_fd, &dst_fd);
	if (ret < 0)
		goto err_close_in;
	if (pipe2(r.pipe_fd, O_CLOEXEC) == -1) {
		ret = -errno;
		goto err_close_out;
	}
	if (fcntl(r.pipe_fd[1], F_SETPIPE_SZ, (int)pipe_size) == -1) {
		ret = -errno;
		fprintf(stderr,
			"splice_bench: F_SETPIPE_SZ %zu: %s (see /proc/sys/fs/pipe-max-size)\n",
			pipe_size, strerror(errno));
		goto err_close_pipe;
	}
	r.pipe_size = (size_t)fcntl(r.pipe_fd[1], F_GETPIPE_SZ);
	if (pipe2(go, O_CLOEXEC) == -1) {
		ret = -errno;
		goto err_close_pipe;
	}
	all[0] = lfd;
	all[1] = src_fd;
	all[2] = r.in_fd;
	all[3] = r.out_fd;
	all[4] = dst_fd;
	all[5] = r.pipe_fd[0];
	all[6] = r.pipe_fd[1];
	all[7] = go[0];
	all[8] = go[1];

	/* Each child keeps only its own socket, or the sink would never see EOF. */
	src_pid = fork();
	if (src_pid == 0) {
		close_except(all, sizeof(all) / sizeof(all[0]), src_fd, go[0]);
		run_source(src_fd, go[0], bytes, chunk);
	}
	dst_pid = fork();
	if (dst_pid == 0) {
		close_except(all, sizeof(all) / sizeof(all[0]), dst_fd, -1);
		run_sink(dst_fd, bytes);
	}
	close(go[0]);
	close(src_fd);
	close(dst_fd);
	close(lfd);
	if (src_pid == -1 || dst_pid == -1) {
		fprintf(stderr, "splice_bench: fork: %s\n", strerror(errno));
		exit(1);
	}

	if (m->nonblock && (set_nonblock(r.in_fd) < 0 || set_nonblock(r.out_fd) < 0)) {
		fprintf(stderr, "splice_bench: O_NONBLOCK: %s\n", strerror(errno));
		exit(1);
	}
	if (m->uring) {
		/* The engine's ring flags (6.1+); older kernels get a plain ring. */
		ret = io_uring_queue_init(8, &r.ring,
					  IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
		if (ret == -EINVAL)
			ret = io_uring_queue_init(8, &r.ring, 0);
		if (ret < 0) {
			fprintf(stderr, "splice_bench: io_uring_queue_init: %s\n", strerror(-ret));
			exit(1);
		}
	}

	getrusage(RUSAGE_SELF, &ru0);
	t0 = now_s();
	if (write(go[1], "g", 1) != 1) {
		fprintf(stderr, "splice_bench: start pipe: %s\n", strerror(errno));
		exit(1);
	}
	ret = m->move(&r);
	getrusage(RUSAGE_SELF, &ru1);
	close(r.out_fd);
	waitpid(dst_pid, &st_dst, 0);
	s->wall_s = now_s() - t0;
	close(r.in_fd);
	waitpid(src_pid, &st_src, 0);
	close(go[1]);
	close(r.pipe_fd[0]);
	close(r.pipe_fd[1]);
	if (m->uring)
		io_uring_queue_exit(&r.ring);

	s->user_s = tv_s(&ru1.ru_utime) - tv_s(&ru0.ru_utime);
	s->sys_s = tv_s(&ru1.ru_stime) - tv_s(&ru0.ru_stime);
	s->ops = r.ops;
	s->waits = r.waits;
	if (ret == 0 && (!WIFEXITED(st_dst) || WEXITSTATUS(st_dst) != 0 || !WIFEXITED(st_src) ||
			 WEXITSTATUS(st_src) != 0))
		ret = -EIO;
	return ret;

err_close_pipe:
	close(r.pipe_fd[0]);
	close(r.pipe_fd[1]);
err_close_out:
	close(r.out_fd);
	close(dst_fd);
err_close_in:
	close(r.in_fd);
	close(src_fd);
err_close_lfd:
	close(lfd);
	return ret;
}

/* Parses "<n>[KMG]" (binary units) into bytes; 0 on error. */
static size_t parse_size(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	switch (*end) {
	case 'k':
	case 'K':
		v *= KIB;
		end++;
		break;
	case 'm':
	case 'M':
		v *= MIB;
		end++;
		break;
	case 'g':
	case 'G':
		v *= GIB;
		end++;
		break;
	}
	if (*end == 'i' && end[1] == 'B')
		end += 2;
	return *end || end == s ? 0 : (size_t)v;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: splice_bench [--bytes SIZE] [--chunk SIZE] [--pipe-size SIZE] [--reps N]\n"
		"                    [--methods NAME,...] [--cpu N]\n"
		"\n"
		"Moves SIZE bytes source -> loopback TCP -> mover -> loopback TCP -> sink with each\n"
		"method, runs interleaved, and prints the median of N runs. CPU is the mover's\n"
		"(user+sys of this process, io_uring's io-wq workers included; source and sink are\n"
		"child processes and not counted). SIZE takes K, M, G (binary).\n"
		"  --bytes SIZE      bytes per run (default 1G)\n"
		"  --chunk SIZE      bytes asked per recv/splice call (default 64K)\n"
		"  --pipe-size SIZE  F_SETPIPE_SZ of the pipe (default 64K)\n"
		"  --reps N          runs per method, median reported (default 1, at most %d)\n"
		"  --cpu N           pin this process and its children to CPU N\n"
		"  --methods LIST    comma-separated subset of:",
		MAX_REPS);
	for (size_t i = 0; i < NMETHODS; i++)
		fprintf(f, " %s", methods[i].name);
	fprintf(f, "\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "bytes", required_argument, NULL, 'b' },
		{ "chunk", required_argument, NULL, 'c' },
		{ "pipe-size", required_argument, NULL, 'p' },
		{ "reps", required_argument, NULL, 'r' },
		{ "methods", required_argument, NULL, 'm' },
		{ "cpu", required_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	size_t bytes = GIB, chunk = 64 * KIB, pipe_size = 64 * KIB;
	struct sample samples[NMETHODS][MAX_REPS];
	bool want[NMETHODS];
	char where[32] = "not pinned";
	int reps = 1, cpu = -1, opt;
	char *buf;

	for (size_t i = 0; i < NMETHODS; i++)
		want[i] = true;
	while ((opt = getopt_long(argc, argv, "b:c:p:r:m:C:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'b':
			bytes = parse_size(optarg);
			break;
		case 'c':
			chunk = parse_size(optarg);
			break;
		case 'p':
			pipe_size = parse_size(optarg);
			break;
		case 'r':
			reps = atoi(optarg);
			break;
		case 'C':
			cpu = atoi(optarg);
			break;
		case 'm': {
			char *list = strdup(optarg), *save = NULL;

			for (size_t i = 0; i < NMETHODS; i++)
				want[i] = false;
			for (char *t = strtok_r(list, ",", &save); t;
			     t = strtok_r(NULL, ",", &save)) {
				size_t i;

				for (i = 0; i < NMETHODS && strcmp(t, methods[i].name); i++)
					;
				if (i == NMETHODS) {
					fprintf(stderr, "splice_bench: unknown method '%s'\n", t);
					usage(stderr);
					return 2;
				}
				want[i] = true;
			}
			free(list);
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || bytes == 0 || chunk == 0 || chunk > INT32_MAX || pipe_size == 0 ||
	    reps < 1 || reps > MAX_REPS) {
		fprintf(stderr,
			"splice_bench: bad arguments: sizes need a number (1G, 64K), "
			"--reps 1..%d\n",
			MAX_REPS);
		usage(stderr);
		return 2;
	}
	if (cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set) == -1) {
			fprintf(stderr, "splice_bench: --cpu %d: %s\n", cpu, strerror(errno));
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	buf = malloc(chunk);
	if (!buf) {
		fprintf(stderr, "splice_bench: out of memory for a %zu-byte buffer\n", chunk);
		return 1;
	}

	/* Interleaved: each repetition runs every method once, so drift hits all alike. */
	for (int rep = 0; rep < reps; rep++) {
		for (size_t i = 0; i < NMETHODS; i++) {
			int ret;

			if (!want[i])
				continue;
			alarm(RUN_TIMEOUT_S);
			ret = run_method(&methods[i], bytes, chunk, pipe_size, buf,
					 &samples[i][rep]);
			alarm(0);
			if (ret < 0) {
				fprintf(stderr, "splice_bench: method=%s rep=%d failed: %s\n",
					methods[i].name, rep + 1, strerror(-ret));
				return 1;
			}
		}
	}

	if (cpu >= 0)
		snprintf(where, sizeof(where), "pinned to cpu %d", cpu);
	printf("splice_bench: %zu bytes per run, chunk %zu, pipe %zu, %d run(s) per method "
	       "(median), %s\n\n",
	       bytes, chunk, pipe_size, reps, where);
	printf("| method | what | GB/s | CPU ms/GiB | user ms/GiB | sys ms/GiB | CPU %% of wall | "
	       "ops | KiB/op | waits |\n");
	printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (size_t i = 0; i < NMETHODS; i++) {
		double gbs[MAX_REPS], cpu_ms[MAX_REPS], usr[MAX_REPS], sys[MAX_REPS], pct[MAX_REPS];
		double ops[MAX_REPS], waits[MAX_REPS];
		double gib = (double)bytes / (double)GIB;
		double mops;

		if (!want[i])
			continue;
		for (int rep = 0; rep < reps; rep++) {
			const struct sample *s = &samples[i][rep];

			gbs[rep] = (double)bytes / s->wall_s / 1e9;
			cpu_ms[rep] = (s->user_s + s->sys_s) * 1e3 / gib;
			usr[rep] = s->user_s * 1e3 / gib;
			sys[rep] = s->sys_s * 1e3 / gib;
			pct[rep] = (s->user_s + s->sys_s) / s->wall_s * 100;
			ops[rep] = (double)s->ops;
			waits[rep] = (double)s->waits;
		}
		mops = median(ops, reps);
		printf("| %s | %s | %.2f | %.0f | %.0f | %.0f | %.0f | %.0f | %.1f | %.0f |\n",
		       methods[i].name, methods[i].what, median(gbs, reps), median(cpu_ms, reps),
		       median(usr, reps), median(sys, reps), median(pct, reps), mops,
		       mops > 0 ? (double)bytes / mops / KIB : 0.0, median(waits, reps));
	}
	free(buf);
	return 0;
}
