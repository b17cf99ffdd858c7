/* SPDX-License-Identifier: Apache-2.0 */
/* Test helper: the engine run in the test's own process, configured by flags. */
#ifndef TH_ENG_H
#define TH_ENG_H

#include <stdint.h>

#include "eng/config.h"
#include "eng/engine.h"

struct th_eng {
	struct eng_config cfg;
	struct eng_engine *e;
	uint16_t inbound_port; /* first inbound address */
	uint16_t outbound_port; /* first outbound address */
	uint16_t admin_port;
};

/*
 * Parses "--admin-addr=127.0.0.1:0 --inbound-addr=127.0.0.1:0
 * --outbound-addr=off --capture=off" followed by <args> (NULL-terminated,
 * later flags win), then creates and starts the engine. Fails the test on error.
 */
void th_eng_start(struct th_eng *t, const char *const args[]);

/* Drains with <deadline_ms>, waits for the workers and frees. Returns eng_engine_wait's value. */
int th_eng_stop(struct th_eng *t, unsigned deadline_ms);

#endif
