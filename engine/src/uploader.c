/* SPDX-License-Identifier: Apache-2.0 */
/* Supervision of sidetap-uploader: start it, restart it with back-off when it dies, stop it last. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine_int.h"

#define ENG_UPLOADER_BACKOFF_MIN_MS 100
#define ENG_UPLOADER_BACKOFF_MAX_MS 10000
#define ENG_UPLOADER_NICE 10
/* An uploader that ran this long is healthy again: the back-off starts over. */
#define ENG_UPLOADER_STABLE_MS 30000

/* The uploader beside our own executable (build/bin, /usr/bin), else the one on PATH. */
static void uploader_path(char *buf, size_t len)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n > 0) {
		self[n] = '\0';
		snprintf(buf, len, "%s/sidetap-uploader", dirname(self));
		if (access(buf, X_OK) == 0)
			return;
	}
	snprintf(buf, len, "sidetap-uploader");
}

/* Room for the uploader's arguments (built before fork): the fixed flags, then one per --kafka-prop. */
#define UPL_ARGS_MAX (20 + ENG_KAFKA_PROPS_MAX)
#define UPL_ARG_LEN PATH_MAX

/* Builds the uploader's argv from the configuration into <buf>; <argv> ends with NULL. */
static void build_args(const struct eng_config *cfg, const char *path, bool once,
		       char (*buf)[UPL_ARG_LEN], char **argv)
{
	char addr[ENG_ADDR_STRLEN];
	unsigned n = 0;

#define ARG(...) (snprintf(buf[n], UPL_ARG_LEN, __VA_ARGS__), argv[n] = buf[n], n++)
	ARG("%s", path);
	ARG("--ring=%s", cfg->ring_path);
	ARG("--sink=%s", cfg->sink);
	ARG("--log-level=%s", eng_log_level_name(cfg->log_level));
	ARG("--spool-dir=%s", cfg->spool_dir);
	ARG("--spool-limit=%llu", (unsigned long long)cfg->spool_limit);
	ARG("--spool-full=%s", cfg->spool_full);
	ARG("--batch-frames=%u", cfg->batch_frames);
	ARG("--batch-bytes=%llu", (unsigned long long)cfg->batch_bytes);
	ARG("--batch-ms=%u", cfg->batch_ms);
	ARG("--sink-timeout=%u", cfg->sink_timeout_ms);
	ARG("--sink-compression=%s", cfg->sink_compression);
	if (cfg->token_file[0])
		ARG("--token-file=%s", cfg->token_file);
	if (cfg->sink_ca[0])
		ARG("--sink-ca=%s", cfg->sink_ca);
	for (unsigned i = 0; i < cfg->nkafka_props; i++)
		ARG("--kafka-prop=%s", cfg->kafka_props[i]);
	ARG("--admin-addr=%s", cfg->uploader_admin_enabled ?
				       eng_addr_format(&cfg->uploader_admin, addr, sizeof(addr)) :
				       "off");
	if (once)
		ARG("--once");
#undef ARG
	argv[n] = NULL;
}

/* Starts the uploader; with <once>, it drains the ring and exits by itself. */
static int spawn(struct eng_engine *e, bool once)
{
	const struct eng_config *cfg = e->cfg;
	static char args[UPL_ARGS_MAX][UPL_ARG_LEN];
	char path[PATH_MAX], *argv[UPL_ARGS_MAX + 1];
	pid_t parent = getpid(), pid;

	uploader_path(path, sizeof(path));
	build_args(cfg, path, once, args, argv);
	pid = fork();
	if (pid == -1)
		return -errno;
	if (pid == 0) {
		sigset_t stop;

		/*
		 * Only async-signal-safe calls between fork and exec. SIGTERM and
		 * SIGINT stay blocked until the uploader has its handlers: a stop
		 * right after the start would otherwise kill it before it drains.
		 */
		sigemptyset(&stop);
		sigaddset(&stop, SIGTERM);
		sigaddset(&stop, SIGINT);
		sigprocmask(SIG_SETMASK, &stop, NULL);
		/* Its own process group: a terminal's Ctrl-C reaches sidetap, which stops it last. */
		setpgid(0, 0);
		/* sidetap killed outright: the uploader drains what is left and exits. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		/* Capture is best-effort, forwarding is not: on a busy core the proxy goes first. */
		setpriority(PRIO_PROCESS, 0, ENG_UPLOADER_NICE);
		if (getppid() != parent)
			_exit(0);
		execvp(path, argv);
		_exit(127);
	}
	e->uploader_pid = pid;
	e->uploader_started_ms = eng_now_ms();
	atomic_store(&e->uploader_up, true);
	eng_log(ENG_LOG_INFO, "uploader started", "pid=%d bin=%s sink=%s", (int)pid, path,
		cfg->sink);
	return 0;
}

int eng__uploader_start(struct eng_engine *e)
{
	int ret = spawn(e, false);

	if (ret < 0)
		eng_log(ENG_LOG_ERROR, "cannot start the uploader", "err=\"%s\"", strerror(-ret));
	return ret;
}

void eng_engine_supervise(struct eng_engine *e)
{
	uint64_t now = eng_now_ms();
	int status;

	if (!e->cfg->capture || !e->cfg->uploader)
		return;
	if (e->uploader_pid > 0 && waitpid(e->uploader_pid, &status, WNOHANG) == e->uploader_pid) {
		bool stable = now - e->uploader_started_ms >= ENG_UPLOADER_STABLE_MS;

		e->uploader_pid = -1;
		atomic_store(&e->uploader_up, false);
		e->uploader_backoff_ms = stable || !e->uploader_backoff_ms ?
						 ENG_UPLOADER_BACKOFF_MIN_MS :
						 e->uploader_backoff_ms * 2;
		if (e->uploader_backoff_ms > ENG_UPLOADER_BACKOFF_MAX_MS)
			e->uploader_backoff_ms = ENG_UPLOADER_BACKOFF_MAX_MS;
		e->uploader_restart_ms = now + e->uploader_backoff_ms;
		eng_log(ENG_LOG_WARN, "uploader exited, restarting",
			"status=%d signal=%d restart_in_ms=%u",
			WIFEXITED(status) ? WEXITSTATUS(status) : -1,
			WIFSIGNALED(status) ? WTERMSIG(status) : 0, e->uploader_backoff_ms);
	}
	if (e->uploader_pid <= 0 && e->uploader_restart_ms && now >= e->uploader_restart_ms &&
	    atomic_load(&e->phase) == ENG_PHASE_RUN) {
		e->uploader_restart_ms = 0;
		if (spawn(e, false) == 0)
			atomic_fetch_add(&e->uploader_restarts, 1);
		else
			e->uploader_restart_ms = now + ENG_UPLOADER_BACKOFF_MAX_MS;
	}
}

void eng__uploader_stop(struct eng_engine *e, unsigned timeout_ms)
{
	uint64_t end = eng_now_ms() + timeout_ms;
	int status;

	if (!e->cfg->capture || !e->cfg->uploader)
		return;
	if (e->uploader_pid > 0) {
		/* The ring is marked stopped: on SIGTERM the uploader ships what is left, then exits. */
		kill(e->uploader_pid, SIGTERM);
	} else if (spawn(e, true) < 0) {
		/* Down (waiting out a back-off) at exit: one more, draining once, so nothing is left. */
		return;
	}
	while (waitpid(e->uploader_pid, &status, WNOHANG) == 0) {
		if (eng_now_ms() >= end) {
			eng_log(ENG_LOG_WARN, "uploader did not finish, killing it",
				"pid=%d timeout_ms=%u", (int)e->uploader_pid, timeout_ms);
			kill(e->uploader_pid, SIGKILL);
			waitpid(e->uploader_pid, &status, 0);
			break;
		}
		usleep(10000);
	}
	e->uploader_pid = -1;
	atomic_store(&e->uploader_up, false);
}
