/* SPDX-License-Identifier: Apache-2.0 */
/* Test helper: the engine run in the test's own process. */
#include <criterion/criterion.h>
#include <string.h>

#include "th_eng.h"

void th_eng_start(struct th_eng *t, const char *const args[])
{
	char *argv[64] = { "sidetap",
			   "--admin-addr=127.0.0.1:0",
			   "--inbound-addr=127.0.0.1:0",
			   "--outbound-addr=off",
			   "--log-level=warn",
			   "--capture=off" };
	char *const envp[] = { NULL };
	char err[512];
	struct eng_addr a;
	int argc = 6;

	for (unsigned i = 0; args && args[i] && argc < 63; i++)
		argv[argc++] = (char *)args[i];
	argv[argc] = NULL;
	memset(t, 0, sizeof(*t));
	cr_assert_eq(eng_config_parse(&t->cfg, argc, argv, envp, err, sizeof(err)), 0, "%s", err);
	eng_log_threshold = t->cfg.log_level;
	cr_assert_eq(eng_engine_new(&t->cfg, &t->e), 0);
	cr_assert_eq(eng_engine_start(t->e), 0);
	if (eng_engine_listen_addr(t->e, ENG_INBOUND, 0, &a) == 0)
		t->inbound_port = eng_addr_port(&a);
	if (eng_engine_listen_addr(t->e, ENG_OUTBOUND, 0, &a) == 0)
		t->outbound_port = eng_addr_port(&a);
	if (eng_engine_admin_addr(t->e, &a) == 0)
		t->admin_port = eng_addr_port(&a);
}

int th_eng_stop(struct th_eng *t, unsigned deadline_ms)
{
	int ret;

	eng_engine_drain(t->e, deadline_ms, "test");
	ret = eng_engine_wait(t->e);
	eng_engine_free(t->e);
	t->e = NULL;
	return ret;
}
