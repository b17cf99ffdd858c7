/* SPDX-License-Identifier: Apache-2.0 */
/* sidetap-injector's HTTPS server and its log lines. */
#ifndef SIDETAP_INJECTOR_SERVER_H
#define SIDETAP_INJECTOR_SERVER_H

#include <stddef.h>

#include "inject.h"

enum { INJ_LOG_ERROR, INJ_LOG_WARN, INJ_LOG_INFO, INJ_LOG_DEBUG };

/* Lines above this level are not written; set once before the server starts. */
extern int inj_log_level;

/*
 * Writes one line "ts=... level=... msg="<msg>" component=injector <fields>"
 * to stderr with a single write(2). Thread-safe.
 */
void inj_log(int level, const char *msg, const char *fields, ...)
	__attribute__((format(printf, 3, 4)));

struct inj_server_opts {
	const char *listen; /* HOST:PORT, [V6]:PORT */
	const char *cert, *key; /* PEM files, reloaded when they change */
	size_t max_body_bytes; /* a longer AdmissionReview is answered 400 */
	unsigned max_conns; /* connections served at once; more are closed */
	const struct inj_config *cfg;
};

/*
 * Serves POST /mutate, GET /healthz and GET /metrics over HTTPS until SIGTERM
 * or SIGINT, then lets open connections finish (up to 10 s). Returns the
 * process's exit status: 0 after a clean stop, 1 when it could not start
 * (the reason logged).
 */
int inj_server_run(const struct inj_server_opts *o);

#endif
