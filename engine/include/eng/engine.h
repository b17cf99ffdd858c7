/* SPDX-License-Identifier: Apache-2.0 */
/* The proxy engine: worker threads, each with its own io_uring loop, listeners and connections. */
#ifndef ENG_ENGINE_H
#define ENG_ENGINE_H

#include <stdbool.h>

#include "eng/addr.h"
#include "eng/config.h"

struct eng_engine;

/*
 * Binds every listener (one SO_REUSEPORT socket per worker and address) and
 * allocates the workers; starts no thread. Borrows <cfg> until
 * eng_engine_free(). Returns 0 and *<out>, or a negative errno after logging
 * what failed and how to fix it.
 */
int eng_engine_new(const struct eng_config *cfg, struct eng_engine **out);

/*
 * Starts the worker threads and waits until each has set up its io_uring and
 * armed its listeners. Returns 0, or a negative errno (logged) after stopping
 * the workers that did start. Call once.
 */
int eng_engine_start(struct eng_engine *e);

/*
 * Asks the workers to stop: stop accepting, turn /readyz to 503, let open
 * connections finish for up to <deadline_ms>, then close what remains. A
 * second call closes everything at once. Thread-safe; <why> is logged.
 */
void eng_engine_drain(struct eng_engine *e, unsigned deadline_ms, const char *why);

/*
 * Looks after sidetap-uploader (--capture on --uploader on): reaps it when it
 * has exited and restarts it after a back-off. Call from the thread that
 * started the engine, every few hundred milliseconds and on SIGCHLD.
 */
void eng_engine_supervise(struct eng_engine *e);

/* True once every worker thread has finished. Thread-safe. */
bool eng_engine_is_done(const struct eng_engine *e);

/*
 * Joins the worker threads (returns when all have finished). Returns 0 when
 * every worker stopped cleanly, else a negative errno.
 */
int eng_engine_wait(struct eng_engine *e);

/*
 * Frees <e> (after eng_engine_wait, or when never started): marks the capture
 * ring stopped, lets the uploader drain it (up to a few seconds) and stops it.
 * NULL is a no-op.
 */
void eng_engine_free(struct eng_engine *e);

/*
 * Copies the bound address of listener <kind>, address index <idx> (the
 * actual port when the configuration asked for port 0). Returns 0 or -ENOENT.
 */
int eng_engine_listen_addr(const struct eng_engine *e, enum eng_listener_kind kind, unsigned idx,
			   struct eng_addr *out);

/* Copies the bound admin address. Returns 0 or -ENOENT when the admin endpoint is off. */
int eng_engine_admin_addr(const struct eng_engine *e, struct eng_addr *out);

#endif
