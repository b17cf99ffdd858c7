/* SPDX-License-Identifier: Apache-2.0 */
/* Test helpers: loopback sockets, child processes, and sidetap started as a process. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tap/frame.h"
#include "tap/ring.h"
#include "th.h"

extern char **environ;

uint64_t th_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct sockaddr_in loopback(uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sa;
}

int th_listen(uint16_t *port, int backlog)
{
	struct sockaddr_in sa = loopback(0);
	socklen_t len = sizeof(sa);
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd == -1)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 || listen(fd, backlog) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) == -1) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

/* Tests measure sidetap, not Nagle's algorithm meeting delayed ACKs. */
static void nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int th_connect(uint16_t port)
{
	struct sockaddr_in sa = loopback(port);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd == -1)
		return -errno;
	nodelay(fd);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	return fd;
}

static int wait_fd(int fd, short events, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	int ret;

	do
		ret = poll(&p, 1, timeout_ms);
	while (ret == -1 && errno == EINTR);
	if (ret == -1)
		return -errno;
	return ret == 0 ? -ETIMEDOUT : 0;
}

int th_accept(int lfd, int timeout_ms)
{
	int ret = wait_fd(lfd, POLLIN, timeout_ms);

	if (ret < 0)
		return ret;
	ret = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (ret == -1)
		return -errno;
	nodelay(ret);
	return ret;
}

int th_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

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

ssize_t th_read_full(int fd, void *buf, size_t len, int timeout_ms)
{
	uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
	size_t got = 0;

	while (got < len) {
		int64_t left = (int64_t)(end - th_now_ms());
		ssize_t n;
		int ret;

		ret = wait_fd(fd, POLLIN, left > 0 ? (int)left : 0);
		if (ret < 0)
			return got ? (ssize_t)got : ret;
		n = recv(fd, (char *)buf + got, len - got, 0);
		if (n == 0)
			break;
		if (n == -1) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return got ? (ssize_t)got : -errno;
		}
		got += (size_t)n;
	}
	return (ssize_t)got;
}

int th_wait_close(int fd, int timeout_ms, size_t *discarded)
{
	uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
	char buf[65536];

	for (;;) {
		int64_t left = (int64_t)(end - th_now_ms());
		ssize_t n;
		int ret;

		ret = wait_fd(fd, POLLIN, left > 0 ? (int)left : 0);
		if (ret < 0)
			return ret;
		n = recv(fd, buf, sizeof(buf), 0);
		if (n == 0)
			return 0;
		if (n == -1) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		if (discarded)
			*discarded += (size_t)n;
	}
}

void th_close_reset(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

int th_http(uint16_t port, const char *method, const char *path, char **body, size_t *body_len)
{
	char req[512], *resp, *sep;
	size_t cap = 1 << 20, len;
	ssize_t n;
	int fd, status;

	fd = th_connect(port);
	if (fd < 0)
		return fd;
	snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: test\r\n\r\n", method, path);
	if (th_write_all(fd, req, strlen(req)) < 0) {
		close(fd);
		return -EIO;
	}
	resp = malloc(cap + 1);
	n = th_read_full(fd, resp, cap, 5000);
	close(fd);
	if (n <= 0) {
		free(resp);
		return n < 0 ? (int)n : -EPROTO;
	}
	len = (size_t)n;
	resp[len] = '\0';
	if (sscanf(resp, "HTTP/1.%*c %d", &status) != 1) {
		free(resp);
		return -EPROTO;
	}
	sep = strstr(resp, "\r\n\r\n");
	if (body) {
		size_t off = sep ? (size_t)(sep + 4 - resp) : len;

		*body = malloc(len - off + 1);
		memcpy(*body, resp + off, len - off);
		(*body)[len - off] = '\0';
		if (body_len)
			*body_len = len - off;
	}
	free(resp);
	return status;
}

long long th_metric(uint16_t admin_port, const char *series)
{
	char *body, *line;
	long long v = -1;
	size_t n = strlen(series);

	if (th_http(admin_port, "GET", "/metrics", &body, NULL) != 200)
		return -1;
	for (line = body; line && *line;
	     line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		if (strncmp(line, series, n) == 0 && line[n] == ' ') {
			v = strtoll(line + n + 1, NULL, 10);
			break;
		}
	}
	free(body);
	return v;
}

const char *th_tmpdir(void)
{
	static char dir[128];

	if (!dir[0]) {
		snprintf(dir, sizeof(dir), "/tmp/sidetap-test.XXXXXX");
		if (!mkdtemp(dir))
			snprintf(dir, sizeof(dir), "/tmp");
	}
	return dir;
}

int th_spawn(struct th_proc *p, char *const argv[], char *const envp[])
{
	static unsigned seq;
	posix_spawn_file_actions_t fa;
	int ret;

	snprintf(p->log, sizeof(p->log), "%s/proc-%d-%u.log", th_tmpdir(), (int)getpid(), seq++);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, p->log, O_WRONLY | O_CREAT | O_TRUNC,
					 0644);
	posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
	ret = posix_spawnp(&p->pid, argv[0], &fa, NULL, argv, envp ? envp : environ);
	posix_spawn_file_actions_destroy(&fa);
	if (ret != 0) {
		p->pid = -1;
		return -ret;
	}
	return 0;
}

int th_proc_wait(struct th_proc *p, int timeout_ms)
{
	uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
	int status;

	if (p->pid <= 0)
		return -ECHILD;
	for (;;) {
		pid_t r = waitpid(p->pid, &status, WNOHANG);

		if (r == p->pid) {
			p->pid = -1;
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		}
		if (r == -1 && errno != EINTR)
			return -errno;
		if (th_now_ms() >= end)
			return -ETIMEDOUT;
		usleep(5000);
	}
}

int th_proc_stop(struct th_proc *p, int sig, int timeout_ms)
{
	int ret;

	if (p->pid <= 0)
		return -ECHILD;
	kill(p->pid, sig);
	ret = th_proc_wait(p, timeout_ms);
	if (ret == -ETIMEDOUT) {
		kill(p->pid, SIGKILL);
		th_proc_wait(p, 5000);
	}
	return ret;
}

char *th_proc_log(const struct th_proc *p)
{
	FILE *f = fopen(p->log, "r");
	char *buf;
	long n;

	if (!f)
		return strdup("");
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	n = (long)fread(buf, 1, (size_t)n, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

bool th_proc_log_wait(const struct th_proc *p, const char *needle, int timeout_ms)
{
	uint64_t end = th_now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		char *log = th_proc_log(p);
		bool found = strstr(log, needle) != NULL;

		free(log);
		if (found)
			return true;
		if (th_now_ms() >= end)
			return false;
		usleep(10000);
	}
}

const char *th_sidetap_bin(void)
{
	const char *env = getenv("SIDETAP_BIN");

	return env ? env : SIDETAP_BIN;
}

/* Reads the port of "<key>127.0.0.1:PORT" from a log. */
static uint16_t log_port(const char *log, const char *key)
{
	const char *p = strstr(log, key);

	if (!p)
		return 0;
	p = strstr(p, "addr=127.0.0.1:");
	return p ? (uint16_t)atoi(p + strlen("addr=127.0.0.1:")) : 0;
}

int th_sidetap_start(struct th_sidetap *st, const char *const wrapper[], const char *const args[])
{
	const char *argv[64];
	unsigned n = 0;
	char *log;
	int ret;

	memset(st, 0, sizeof(*st));
	for (unsigned i = 0; wrapper && wrapper[i]; i++)
		argv[n++] = wrapper[i];
	argv[n++] = th_sidetap_bin();
	argv[n++] = "--inbound-addr=127.0.0.1:0";
	argv[n++] = "--outbound-addr=127.0.0.1:0";
	argv[n++] = "--admin-addr=127.0.0.1:0";
	argv[n++] = "--workers=2";
	argv[n++] = "--capture=off";
	for (unsigned i = 0; args && args[i] && n < 63; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	ret = th_spawn(&st->proc, (char *const *)argv, NULL);
	if (ret < 0)
		return ret;
	if (!th_proc_log_wait(&st->proc, "msg=\"started\"", 10000)) {
		log = th_proc_log(&st->proc);
		fprintf(stderr, "sidetap did not start; its log:\n%s\n", log);
		free(log);
		th_proc_stop(&st->proc, SIGKILL, 1000);
		return -ETIMEDOUT;
	}
	log = th_proc_log(&st->proc);
	st->inbound_port = log_port(log, "listener=inbound addr=");
	st->outbound_port = log_port(log, "listener=outbound addr=");
	st->admin_port = log_port(log, "msg=\"admin endpoint\"");
	free(log);
	return 0;
}

bool th_have(const char *prog)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "command -v '%s' >/dev/null 2>&1", prog);
	return system(cmd) == 0;
}

int th_sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int ret;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	ret = system(cmd);
	if (ret == -1 || !WIFEXITED(ret))
		return -1;
	return WEXITSTATUS(ret);
}

/* splitmix64: every 8-byte word of the stream depends on the seed and its offset only. */
static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

void th_pattern(uint64_t seed, uint64_t off, void *buf, size_t len)
{
	uint64_t *w = buf;

	for (size_t i = 0; i < len / 8; i++)
		w[i] = mix(seed ^ (off / 8 + i));
}

uint64_t th_sum(uint64_t sum, const void *buf, size_t len)
{
	const uint64_t *w = buf;

	for (size_t i = 0; i < len / 8; i++)
		sum = (sum ^ w[i]) * 0x100000001b3ULL;
	return sum;
}

int th_ring_put_tcp(struct tap_ring *r, unsigned idx, uint64_t seq, uint64_t ts_ns,
		    const void *data, size_t len)
{
	struct tap_frame f;
	size_t max;
	ssize_t n;
	void *p;

	memset(&f, 0, sizeof(f));
	f.type = TAP_FRAME_TCP;
	f.gen = tap_ring_generation(r);
	f.worker = idx;
	f.seq = seq;
	f.conn_id = 7;
	f.ts_ns = ts_ns;
	f.client = (struct tap_str){ "10.0.0.1:1000", 13 };
	f.dst = (struct tap_str){ "10.0.0.2:80", 11 };
	f.upstream = f.dst;
	f.tcp.dir = TAP_C2U;
	f.tcp.data = (struct tap_str){ data, (uint32_t)len };
	max = tap_frame_encoded_max(&f);
	p = tap_ring_reserve(r, idx, max);
	if (!p)
		return -ENOBUFS;
	n = tap_frame_encode(&f, p, max);
	if (n <= 0) {
		/* Abandons the reservation: nothing is published, no drop counted. */
		tap_ring_commit(r, idx, 0);
		return -EINVAL;
	}
	tap_ring_commit(r, idx, (size_t)n);
	return 0;
}

bool th_netns_works(void)
{
	return th_sh("ip netns add st-probe-%d 2>/dev/null && ip netns del st-probe-%d",
		     (int)getpid(), (int)getpid()) == 0;
}

int th_ns_spawn(struct th_proc *p, const char *ns, const char *cmd)
{
	char *const argv[] = { "ip", "netns", "exec", (char *)ns, "sh", "-c", (char *)cmd, NULL };

	return th_spawn(p, argv, NULL);
}

int th_ns_web(struct th_proc *p, const char *ns, const char *ip, unsigned port, const char *text)
{
	char dir[256], cmd[768];
	int ret;

	snprintf(dir, sizeof(dir), "%s/web-%s-%u", th_tmpdir(), ns, port);
	ret = th_sh("mkdir -p %s && printf '%%s\\n' '%s' > %s/index.html", dir, text, dir);
	if (ret != 0)
		return -EIO;
	snprintf(cmd, sizeof(cmd),
		 "exec /usr/bin/python3 -u -m http.server --bind %s --directory %s %u", ip, dir,
		 port);
	return th_ns_spawn(p, ns, cmd);
}
