/* SPDX-License-Identifier: Apache-2.0 */
/* sidetapctl's Kubernetes commands: dispatch, running kubectl, and wait-ready. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "k8s.h"

const char *ctl_kubectl(void)
{
	const char *k = getenv("KUBECTL");

	return k && k[0] ? k : "kubectl";
}

bool ctl_is_dns(const char *v, size_t max, bool dots)
{
	size_t n = strlen(v);

	if (n == 0 || n > max || !isalnum((unsigned char)v[0]) || !isalnum((unsigned char)v[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(islower((unsigned char)v[i]) || isdigit((unsigned char)v[i]) || v[i] == '-' ||
		      (dots && v[i] == '.')))
			return false;
	return true;
}

void ctl_yaml_quote(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/* Writes all of <buf> to <fd>; a reader that went away is not an error of ours. */
static void write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			return;
		}
		buf += n;
		len -= (size_t)n;
	}
}

int ctl_run(char *const argv[], const char *in, size_t in_len, char **out)
{
	int inp[2] = { -1, -1 }, outp[2] = { -1, -1 }, status;
	size_t len = 0, cap = 0;
	char *buf = NULL;
	pid_t pid;

	if (out)
		*out = NULL;
	if ((in && pipe2(inp, O_CLOEXEC) != 0) || (out && pipe2(outp, O_CLOEXEC) != 0))
		goto err_close;
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		goto err_close;
	if (pid == 0) {
		if (in)
			dup2(inp[0], STDIN_FILENO);
		if (out)
			dup2(outp[1], STDOUT_FILENO);
		execvp(argv[0], argv);
		fprintf(stderr, "sidetapctl: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	if (in) {
		struct sigaction ign = { .sa_handler = SIG_IGN }, old;

		close(inp[0]);
		inp[0] = -1;
		/* kubectl may exit before it has read all of stdin: that is its error to report. */
		sigaction(SIGPIPE, &ign, &old);
		write_all(inp[1], in, in_len);
		sigaction(SIGPIPE, &old, NULL);
		close(inp[1]);
		inp[1] = -1;
	}
	if (out) {
		close(outp[1]);
		outp[1] = -1;
		for (;;) {
			ssize_t n;

			if (len + 4097 > cap) {
				char *nb = realloc(buf, cap = cap ? 2 * cap : 65536);

				if (!nb)
					break;
				buf = nb;
			}
			n = read(outp[0], buf + len, cap - len - 1);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			len += (size_t)n;
		}
		close(outp[0]);
		outp[0] = -1;
		if (buf)
			buf[len] = '\0';
		*out = buf;
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);

err_close:
	for (int i = 0; i < 2; i++) {
		if (inp[i] >= 0)
			close(inp[i]);
		if (outp[i] >= 0)
			close(outp[i]);
	}
	return -1;
}

/* wait-ready */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* GET /readyz on <addr> within <timeout_ms>. Returns the HTTP status, or -1. */
static int readyz(const char *addr, int timeout_ms)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	char host[256], req[320], resp[64], *colon;
	struct pollfd p;
	size_t got = 0;
	int fd, status = -1;

	if (snprintf(host, sizeof(host), "%s", addr) >= (int)sizeof(host) ||
	    !(colon = strrchr(host, ':')))
		return -1;
	*colon = '\0';
	if (host[0] == '[' && colon > host + 1 && colon[-1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
		return -1;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || (connect(fd, res->ai_addr, res->ai_addrlen) != 0 && errno != EINPROGRESS)) {
		freeaddrinfo(res);
		goto out_close;
	}
	freeaddrinfo(res);
	p = (struct pollfd){ .fd = fd, .events = POLLOUT };
	if (poll(&p, 1, timeout_ms) != 1 || (p.revents & (POLLERR | POLLHUP)))
		goto out_close;
	snprintf(req, sizeof(req), "GET /readyz HTTP/1.0\r\nHost: %s\r\n\r\n", addr);
	if (send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req))
		goto out_close;
	while (got < sizeof(resp) - 1) {
		ssize_t n;

		p = (struct pollfd){ .fd = fd, .events = POLLIN };
		if (poll(&p, 1, timeout_ms) != 1)
			break;
		n = recv(fd, resp + got, sizeof(resp) - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	resp[got] = '\0';
	if (got >= 12 && strncmp(resp, "HTTP/1.", 7) == 0)
		status = atoi(resp + 9);
out_close:
	if (fd >= 0)
		close(fd);
	return status;
}

static void usage_wait(FILE *o)
{
	fputs("usage: sidetapctl wait-ready [--admin HOST:PORT] [--timeout SECONDS]\n"
	      "\n"
	      "Waits until the sidetap at --admin (default 127.0.0.1:4191) answers GET /readyz\n"
	      "with 200, checking every 200 ms, for at most --timeout seconds (default 60).\n"
	      "The injected sidecar's postStart hook runs it, so that kubelet starts the app's\n"
	      "containers only once sidetap is listening. Exit status 0 when ready, 1 if not.\n",
	      o);
}

static int cmd_wait_ready(int argc, char **argv)
{
	const char *admin = "127.0.0.1:4191";
	unsigned long timeout_s = 60;
	uint64_t deadline;
	int last = -1;

	for (int i = 1; i < argc; i++) {
		bool missing = false;
		const char *v;
		char *end;

		if (tap_arg_is_help(argv[i])) {
			usage_wait(stdout);
			return 0;
		}
		if ((v = tap_arg_value(argc, argv, &i, "--admin", &missing))) {
			admin = v;
		} else if ((v = tap_arg_value(argc, argv, &i, "--timeout", &missing))) {
			timeout_s = strtoul(v, &end, 10);
			if (!isdigit((unsigned char)v[0]) || *end || timeout_s > 86400) {
				fprintf(stderr,
					"sidetapctl wait-ready: --timeout: invalid value '%s': seconds from 0 to 86400\n",
					v);
				return 2;
			}
		} else {
			fprintf(stderr,
				"sidetapctl wait-ready: %s '%s' (see sidetapctl wait-ready --help)\n",
				missing ? "missing value for" : "unexpected argument", argv[i]);
			return 2;
		}
	}
	deadline = now_ms() + timeout_s * 1000;
	for (;;) {
		uint64_t t = now_ms();

		last = readyz(admin, 1000);
		if (last == 200)
			return 0;
		if (t >= deadline)
			break;
		usleep(200000);
	}
	if (last < 0)
		fprintf(stderr, "sidetapctl wait-ready: no answer from http://%s/readyz in %lu s\n",
			admin, timeout_s);
	else
		fprintf(stderr,
			"sidetapctl wait-ready: http://%s/readyz still answers %d after %lu s\n",
			admin, last, timeout_s);
	return 1;
}

bool ctl_k8s_is_command(const char *cmd)
{
	return strcmp(cmd, "install") == 0 || strcmp(cmd, "uninstall") == 0 ||
	       strcmp(cmd, "inject") == 0 || strcmp(cmd, "wait-ready") == 0;
}

int ctl_k8s_main(int argc, char **argv)
{
	if (strcmp(argv[0], "install") == 0)
		return ctl_install(argc, argv);
	if (strcmp(argv[0], "uninstall") == 0)
		return ctl_uninstall(argc, argv);
	if (strcmp(argv[0], "inject") == 0)
		return ctl_inject(argc, argv);
	return cmd_wait_ready(argc, argv);
}
