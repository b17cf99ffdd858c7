/* SPDX-License-Identifier: Apache-2.0 */
/* Opens N idle TCP connections (through a proxy) and holds them; or is the sink that accepts them. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Connects in flight at once: more would overflow a proxy's accept backlog. */
#define DEFAULT_WINDOW 256
#define DEFAULT_TIMEOUT_S 60
#define SPARE_FDS 64
#define SINK_NOFILE 131072UL
#define GREETING 'g'

enum conn_state { C_CONNECTING, C_GREETING, C_OPEN };

struct opts {
	struct sockaddr_storage addr;
	socklen_t addr_len;
	long count;
	long window;
	double hold_s;
	double timeout_s;
	bool greeting;
	bool sink;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Raises RLIMIT_NOFILE to at least <need>: the soft limit first, the hard one too as root. */
static int raise_nofile(unsigned long need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return -errno;
	if (rl.rlim_cur >= need)
		return 0;
	if (rl.rlim_max < need)
		rl.rlim_max = need;
	rl.rlim_cur = need;
	if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
		/* Not root: go as high as the hard limit allows and report what is missing. */
		getrlimit(RLIMIT_NOFILE, &rl);
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		fprintf(stderr,
			"idle_conns: nofile=%lu need=%lu fix=\"raise ulimit -Hn or run as root\"\n",
			(unsigned long)rl.rlim_max, need);
		return -EMFILE;
	}
	return 0;
}

/* Parses HOST:PORT or [V6]:PORT, numeric only. */
static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
				  .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai;
	char host[256];
	const char *colon = strrchr(s, ':');
	size_t hl;
	int ret;

	if (!colon)
		return -EINVAL;
	hl = (size_t)(colon - s);
	if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
		s++;
		hl -= 2;
	}
	if (hl == 0 || hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hl);
	host[hl] = '\0';
	ret = getaddrinfo(host, colon + 1, &hints, &ai);
	if (ret != 0)
		return -EINVAL;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static int epoll_set(int ep, int op, int fd, unsigned events, long idx)
{
	struct epoll_event ev = { .events = events, .data.u64 = (uint64_t)idx };

	return epoll_ctl(ep, op, fd, &ev);
}

/* Starts a non-blocking connect for slot <i>; returns the fd or a negative errno. */
static int start_connect(const struct opts *o, int ep, long i)
{
	int fd = socket(o->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int ret;

	if (fd == -1)
		return -errno;
	if (connect(fd, (const struct sockaddr *)&o->addr, o->addr_len) == -1 &&
	    errno != EINPROGRESS) {
		ret = -errno;
		goto err_close_fd;
	}
	if (epoll_set(ep, EPOLL_CTL_ADD, fd, EPOLLOUT, i) == -1) {
		ret = -errno;
		goto err_close_fd;
	}
	return fd;

err_close_fd:
	close(fd);
	return ret;
}

/* Counts connections that the other side has closed or reset while we held them. */
static long count_dropped(const int *fds, long n)
{
	long dropped = 0;

	for (long i = 0; i < n; i++) {
		struct pollfd p = { .fd = fds[i], .events = POLLIN | POLLRDHUP };

		if (poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
			dropped++;
	}
	return dropped;
}

/* Waits for a line (or EOF) on stdin, or <hold_s> seconds when that is set. */
static void hold(double hold_s)
{
	char line[64];

	if (hold_s > 0) {
		struct timespec ts = { .tv_sec = (time_t)hold_s,
				       .tv_nsec = (long)((hold_s - (double)(time_t)hold_s) * 1e9) };

		while (!stop && nanosleep(&ts, &ts) == -1 && errno == EINTR)
			;
		return;
	}
	while (!stop && !fgets(line, sizeof(line), stdin) && errno == EINTR && !feof(stdin))
		clearerr(stdin);
}

static int run_client(const struct opts *o)
{
	enum conn_state *state;
	int *fds, ep, ret = 1;
	long started = 0, open = 0, inflight = 0;
	double t0 = now_s(), deadline = t0 + o->timeout_s;

	fds = calloc((size_t)o->count, sizeof(*fds));
	state = calloc((size_t)o->count, sizeof(*state));
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (!fds || !state || ep == -1) {
		fprintf(stderr, "idle_conns: setup: %s\n", strerror(errno));
		goto out_free;
	}

	while (open < o->count && !stop) {
		struct epoll_event evs[256];
		int n;

		while (started < o->count && inflight < o->window) {
			int fd = start_connect(o, ep, started);

			if (fd < 0) {
				fprintf(stderr, "idle_conns: connect #%ld: %s\n", started + 1,
					strerror(-fd));
				goto out_close;
			}
			fds[started++] = fd;
			inflight++;
		}
		if (now_s() > deadline) {
			fprintf(stderr, "idle_conns: timeout: open=%ld of %ld after %.0f s\n", open,
				o->count, o->timeout_s);
			goto out_close;
		}
		n = epoll_wait(ep, evs, 256, 100);
		if (n == -1 && errno != EINTR) {
			fprintf(stderr, "idle_conns: epoll_wait: %s\n", strerror(errno));
			goto out_close;
		}
		for (int k = 0; k < n; k++) {
			long i = (long)evs[k].data.u64;
			int err = 0;
			socklen_t el = sizeof(err);
			char c;

			if (state[i] == C_CONNECTING) {
				getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &el);
				if (err) {
					fprintf(stderr, "idle_conns: connect #%ld: %s\n", i + 1,
						strerror(err));
					goto out_close;
				}
				if (o->greeting) {
					state[i] = C_GREETING;
					epoll_set(ep, EPOLL_CTL_MOD, fds[i], EPOLLIN, i);
					continue;
				}
			} else if (recv(fds[i], &c, 1, 0) != 1) {
				fprintf(stderr,
					"idle_conns: connection #%ld closed before the greeting: "
					"is the upstream an idle_conns --sink?\n",
					i + 1);
				goto out_close;
			}
			state[i] = C_OPEN;
			epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
			open++;
			inflight--;
		}
	}
	if (stop)
		goto out_close;
	printf("open=%ld seconds=%.2f\n", open, now_s() - t0);
	fflush(stdout);

	hold(o->hold_s);
	printf("closed=%ld dropped_while_held=%ld\n", started, count_dropped(fds, started));
	fflush(stdout);
	ret = 0;

out_close:
	for (long i = 0; i < started; i++)
		close(fds[i]);
	if (ep != -1)
		close(ep);
out_free:
	free(state);
	free(fds);
	return ret;
}

/* Accepts everything, greets each connection with one byte, closes on EOF, until a signal. */
static int run_sink(const struct opts *o)
{
	int one = 1, lfd, ep;
	long open = 0, total = 0;
	bool full = false;
	char buf[4096];

	lfd = socket(o->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (lfd == -1 || ep == -1 ||
	    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(lfd, (const struct sockaddr *)&o->addr, o->addr_len) == -1 ||
	    listen(lfd, SOMAXCONN) == -1 || epoll_set(ep, EPOLL_CTL_ADD, lfd, EPOLLIN, -1) == -1) {
		fprintf(stderr, "idle_conns: sink listen: %s\n", strerror(errno));
		return 1;
	}
	printf("sink=listening\n");
	fflush(stdout);

	while (!stop) {
		struct epoll_event evs[256];
		int n = epoll_wait(ep, evs, 256, 500);

		for (int k = 0; k < n; k++) {
			long id = (long)evs[k].data.u64;
			int fd;

			if (id == -1) {
				while ((fd = accept4(lfd, NULL, NULL,
						     SOCK_NONBLOCK | SOCK_CLOEXEC)) != -1) {
					if (o->greeting && send(fd, "g", 1, MSG_NOSIGNAL) != 1) {
						close(fd);
						continue;
					}
					epoll_set(ep, EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLRDHUP, fd);
					open++;
					total++;
				}
				if (errno == EMFILE || errno == ENFILE) {
					/* Level-triggered: the backlog stays readable; say it once. */
					if (!full)
						fprintf(stderr, "idle_conns: sink accept: %s\n",
							strerror(errno));
					full = true;
					usleep(10000);
				}
				continue;
			}
			/* Anything read is discarded; EOF or an error closes. */
			if (recv((int)id, buf, sizeof(buf), 0) <= 0) {
				close((int)id);
				open--;
			}
		}
	}
	fprintf(stderr, "idle_conns: sink stopped: accepted=%ld open=%ld\n", total, open);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: idle_conns [--greeting] [--hold S] [--window N] [--timeout S] HOST:PORT N\n"
		"       idle_conns --sink [--greeting] HOST:PORT\n"
		"\n"
		"Client: opens N connections to HOST:PORT, at most --window connecting at once, and\n"
		"prints 'open=N seconds=T' once all are established (with --greeting: once each has\n"
		"received the sink's one-byte greeting, which proves the proxied path end to end).\n"
		"Then holds them until a line or EOF on stdin (or --hold S seconds), closes them all\n"
		"and prints 'closed=N dropped_while_held=D'. Exit 0 on success.\n"
		"Sink: accepts and holds connections, with --greeting sends each one byte, closes\n"
		"on EOF, until SIGTERM or SIGINT.\n"
		"Both raise RLIMIT_NOFILE as far as they need (the hard limit too when root).\n");
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "greeting", no_argument, NULL, 'g' },
		{ "hold", required_argument, NULL, 'H' },
		{ "window", required_argument, NULL, 'w' },
		{ "timeout", required_argument, NULL, 't' },
		{ "sink", no_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .window = DEFAULT_WINDOW, .timeout_s = DEFAULT_TIMEOUT_S };
	struct sigaction sa = { .sa_handler = on_signal };
	int opt;

	while ((opt = getopt_long(argc, argv, "gH:w:t:sh", lopts, NULL)) != -1) {
		switch (opt) {
		case 'g':
			o.greeting = true;
			break;
		case 'H':
			o.hold_s = atof(optarg);
			break;
		case 'w':
			o.window = atol(optarg);
			break;
		case 't':
			o.timeout_s = atof(optarg);
			break;
		case 's':
			o.sink = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (argc - optind != (o.sink ? 1 : 2) ||
	    parse_addr(argv[optind], &o.addr, &o.addr_len) < 0) {
		usage(stderr);
		return 2;
	}
	if (!o.sink) {
		o.count = atol(argv[optind + 1]);
		if (o.count < 1 || o.window < 1 || o.timeout_s <= 0) {
			fprintf(stderr, "idle_conns: N, --window and --timeout must be positive\n");
			return 2;
		}
	}

	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* The sink holds as many as clients send: ask for plenty. */
	if (raise_nofile(o.sink ? SINK_NOFILE : (unsigned long)o.count + SPARE_FDS) < 0 && !o.sink)
		return 1;
	return o.sink ? run_sink(&o) : run_client(&o);
}
