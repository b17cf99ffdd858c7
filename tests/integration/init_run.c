/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers of the sidetap-init tests: run a program, its stdout and stderr apart; compare tables. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "init_run.h"
#include "th.h"

extern char **environ;

char *ti_read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	if (!buf) {
		fclose(f);
		return NULL;
	}
	n = (long)fread(buf, 1, (size_t)n, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

int ti_run(char *const argv[], char *const envp[], char **out, char **err)
{
	static unsigned seq;
	char out_path[256], err_path[256];
	posix_spawn_file_actions_t fa;
	uint64_t end = th_now_ms() + 10000;
	pid_t pid;
	int ret, status;

	snprintf(out_path, sizeof(out_path), "%s/run-%d-%u.out", th_tmpdir(), (int)getpid(), seq);
	snprintf(err_path, sizeof(err_path), "%s/run-%d-%u.err", th_tmpdir(), (int)getpid(), seq++);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_path, O_WRONLY | O_CREAT | O_TRUNC,
					 0644);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err_path, O_WRONLY | O_CREAT | O_TRUNC,
					 0644);
	ret = posix_spawnp(&pid, argv[0], &fa, NULL, argv, envp ? envp : environ);
	posix_spawn_file_actions_destroy(&fa);
	if (ret != 0)
		return -ret;
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			break;
		if (r == -1 && errno != EINTR)
			return -errno;
		if (th_now_ms() >= end) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			break;
		}
		usleep(2000);
	}
	if (out)
		*out = ti_read_file(out_path);
	if (err)
		*err = ti_read_file(err_path);
	unlink(out_path);
	unlink(err_path);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

char *const *ti_clean_env(void)
{
	static char path[4096];
	static char *env[] = { path, "LC_ALL=C", NULL };
	const char *p = getenv("PATH");

	snprintf(path, sizeof(path), "PATH=%s", p ? p : "/usr/sbin:/usr/bin:/sbin:/bin");
	return env;
}

unsigned ti_count_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	unsigned count = 0;

	for (const char *p = text; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);

		if (len == n && memcmp(p, line, n) == 0)
			count++;
		p = nl ? nl + 1 : NULL;
	}
	return count;
}

char *ti_save_normalize(const char *text)
{
	char *out = malloc(strlen(text) + 1), *o = out;

	for (const char *p = text; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p + 1) : strlen(p);

		if (*p != '#') {
			for (size_t i = 0; i < len; i++) {
				size_t digits = strspn(p + i + 1, "0123456789");

				/* "[12:720]" -> "[0:0]": counters move, rules do not. */
				if (p[i] == '[' && digits && p[i + 1 + digits] == ':') {
					size_t d2 = strspn(p + i + 2 + digits, "0123456789");

					if (d2 && p[i + 2 + digits + d2] == ']') {
						memcpy(o, "[0:0]", 5);
						o += 5;
						i += 2 + digits + d2;
						continue;
					}
				}
				*o++ = p[i];
			}
		}
		p += len;
	}
	*o = '\0';
	return out;
}

void ti_tmpdir_remove(void)
{
	const char *dir = th_tmpdir();

	/* th_tmpdir falls back to /tmp itself when it cannot make a directory: keep that. */
	if (strncmp(dir, "/tmp/sidetap-test.", 18) == 0)
		th_sh("rm -rf '%s'", dir);
}
