/* SPDX-License-Identifier: Apache-2.0 */
/* sidetap: the proxy binary. Parses the configuration, runs the engine, turns signals into a drain. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "eng/config.h"
#include "eng/engine.h"
#include "eng/log.h"

extern char **environ;

/* SIGINT drains too, but for at most this long: someone at a terminal is waiting. */
#define SIGINT_DRAIN_MS 1000

/* Raises the soft descriptor limit to the hard one: each connection needs two. */
static void raise_nofile(const struct eng_config *cfg)
{
	struct rlimit rl;
	unsigned long need;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	need = 2UL * cfg->max_connections * cfg->workers + 64;
	if (rl.rlim_cur < need)
		eng_log(ENG_LOG_WARN, "descriptor limit below what --max-connections may use",
			"nofile=%lu need=%lu fix=\"raise ulimit -n or lower --max-connections\"",
			(unsigned long)rl.rlim_cur, need);
}

static void log_config(const struct eng_config *cfg, const struct eng_engine *e)
{
	char a[ENG_ADDR_STRLEN], u[ENG_ADDR_STRLEN];

	for (unsigned k = 0; k < ENG_LISTENER_KINDS; k++) {
		const struct eng_listener_cfg *lc = &cfg->listen[k];

		for (unsigned i = 0; i < lc->naddrs; i++) {
			struct eng_addr bound;

			eng_engine_listen_addr(e, k, i, &bound);
			eng_log(ENG_LOG_INFO, "listening",
				"listener=%s addr=%s mode=%s upstream=%s",
				eng_listener_kind_name(k), eng_addr_format(&bound, a, sizeof(a)),
				eng_mode_name(lc->mode),
				lc->has_upstream ? eng_addr_format(&lc->upstream, u, sizeof(u)) :
						   "original-destination");
		}
		if (lc->naddrs == 0)
			eng_log(ENG_LOG_INFO, "listener off", "listener=%s",
				eng_listener_kind_name(k));
	}
	if (cfg->admin_enabled) {
		struct eng_addr bound;

		eng_engine_admin_addr(e, &bound);
		eng_log(ENG_LOG_INFO, "admin endpoint", "addr=%s",
			eng_addr_format(&bound, a, sizeof(a)));
	}
}

int main(int argc, char **argv)
{
	static struct eng_config cfg;
	struct eng_engine *e;
	sigset_t set;
	char err[512];
	int ret;

	if (eng_config_parse(&cfg, argc, argv, environ, err, sizeof(err)) != 0) {
		fprintf(stderr, "sidetap: %s\n", err);
		return 2;
	}
	if (cfg.help) {
		eng_config_usage(stdout);
		return 0;
	}
	if (cfg.version) {
		printf("sidetap %s\n", SIDETAP_VERSION);
		return 0;
	}
	eng_log_threshold = cfg.log_level;
	raise_nofile(&cfg);

	/* Signals are taken synchronously below; no handler runs inside a worker. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGPIPE);
	sigaddset(&set, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	ret = eng_engine_new(&cfg, &e);
	if (ret < 0)
		return 1;
	ret = eng_engine_start(e);
	if (ret < 0) {
		eng_engine_wait(e);
		eng_engine_free(e);
		return 1;
	}
	log_config(&cfg, e);
	eng_log(ENG_LOG_INFO, "started", "version=%s workers=%u forward=%s pid=%d", SIDETAP_VERSION,
		cfg.workers, eng_forward_name(cfg.forward), (int)getpid());

	while (!eng_engine_is_done(e)) {
		struct timespec ts = { .tv_sec = 0, .tv_nsec = 100 * 1000000 };
		int sig = sigtimedwait(&set, NULL, &ts);

		if (sig == SIGTERM)
			eng_engine_drain(e, cfg.drain_timeout_ms, "SIGTERM");
		else if (sig == SIGINT)
			eng_engine_drain(e,
					 cfg.drain_timeout_ms < SIGINT_DRAIN_MS ?
						 cfg.drain_timeout_ms :
						 SIGINT_DRAIN_MS,
					 "SIGINT");
		eng_engine_supervise(e);
	}
	ret = eng_engine_wait(e);
	eng_engine_free(e);
	eng_log(ENG_LOG_INFO, "stopped", "status=%d", ret < 0 ? 1 : 0);
	return ret < 0 ? 1 : 0;
}
