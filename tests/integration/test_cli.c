/* SPDX-License-Identifier: Apache-2.0 */
/* Integration tests of the sidetap command line: help, exit codes, error messages, environment. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "th.h"

/* Runs sidetap with <args> (and <envp>, NULL: inherit) to completion; returns status and log. */
static int run(char *const args[], char *const envp[], char **log)
{
	char *argv[32] = { (char *)th_sidetap_bin() };
	struct th_proc p;
	unsigned n = 1;
	int ret;

	for (unsigned i = 0; args[i]; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	cr_assert_eq(th_spawn(&p, argv, envp), 0);
	ret = th_proc_wait(&p, 10000);
	if (ret == -ETIMEDOUT)
		th_proc_stop(&p, SIGKILL, 1000);
	*log = th_proc_log(&p);
	return ret;
}

#define ARGS(...) ((char *const[]){ __VA_ARGS__, NULL })

Test(cli, help_lists_every_flag_and_exits_0)
{
	char *log;

	cr_assert_eq(run(ARGS("--help"), NULL, &log), 0);
	cr_assert(strstr(log, "usage: sidetap"));
	cr_assert(strstr(log, "--inbound-addr") && strstr(log, "SIDETAP_INBOUND_ADDR"));
	cr_assert(strstr(log, "--max-connections") && strstr(log, "SIDETAP_MAX_CONNECTIONS"));
	cr_assert(strstr(log, "REVERSE_PROXY_HOST"));
	free(log);
	cr_assert_eq(run(ARGS("--version"), NULL, &log), 0);
	cr_assert(strstr(log, "sidetap " SIDETAP_VERSION), "%s", log);
	free(log);
}

Test(cli, bad_flag_value_exits_2_naming_flag_value_and_choices)
{
	char *log;

	cr_assert_eq(run(ARGS("--forward", "fast"), NULL, &log), 2);
	cr_assert(strstr(log, "--forward") && strstr(log, "'fast'") &&
			  strstr(log, "auto, splice, copy"),
		  "%s", log);
	free(log);
	cr_assert_eq(run(ARGS("--bogus"), NULL, &log), 2);
	cr_assert(strstr(log, "unknown flag '--bogus'"), "%s", log);
	free(log);
}

Test(cli, bad_environment_value_exits_2_naming_the_variable)
{
	char *log;

	cr_assert_eq(run(ARGS("--admin-addr=off"), ARGS("SIDETAP_IDLE_TIMEOUT=soon"), &log), 2);
	cr_assert(strstr(log, "SIDETAP_IDLE_TIMEOUT") && strstr(log, "'soon'"), "%s", log);
	free(log);
	cr_assert_eq(run(ARGS("--admin-addr=off"), ARGS("PROXY_TYPE=forward"), &log), 2);
	cr_assert(strstr(log, "PROXY_TYPE") && strstr(log, "transparent, reverse"), "%s", log);
	free(log);
}

Test(cli, port_in_use_exits_1_naming_flag_and_fix)
{
	char addr[64], *log;
	uint16_t port;
	int fd = th_listen(&port, 1);

	snprintf(addr, sizeof(addr), "--outbound-addr=127.0.0.1:%u", port);
	cr_assert_eq(run(ARGS("--inbound-addr=off", addr, "--admin-addr=off", "--capture=off"),
			 NULL, &log),
		     1);
	cr_assert(strstr(log, "--outbound-addr") && strstr(log, "Address already in use") &&
			  strstr(log, "fix="),
		  "%s", log);
	free(log);
	close(fd);
}

Test(cli, second_sidetap_on_the_same_port_is_refused)
{
	struct th_sidetap first;
	char addr[64], *log;

	/* SO_REUSEPORT must not let a second instance share (and split) the listener. */
	cr_assert_eq(th_sidetap_start(&first, NULL,
				      (const char *const[]){ "--outbound-addr=off", NULL }),
		     0);
	snprintf(addr, sizeof(addr), "--inbound-addr=127.0.0.1:%u", first.inbound_port);
	cr_assert_eq(run(ARGS(addr, "--outbound-addr=off", "--admin-addr=off", "--capture=off"),
			 NULL, &log),
		     1);
	cr_assert(strstr(log, "--inbound-addr") && strstr(log, "Address already in use"), "%s",
		  log);
	free(log);
	cr_assert_eq(th_proc_stop(&first.proc, SIGTERM, 5000), 0);
}

Test(cli, goproxy_environment_configures_a_reverse_proxy)
{
	struct th_proc p;
	char *log, port_env[64], up_env[64],
		*argv[] = { (char *)th_sidetap_bin(), "--admin-addr=off", "--outbound-addr=off",
			    "--capture=off", NULL };
	uint16_t port, up;
	int lfd = th_listen(&up, 4), fd = th_listen(&port, 1), c, u;

	close(fd);
	snprintf(port_env, sizeof(port_env), "PROXY_IN_PORT=%u", port);
	snprintf(up_env, sizeof(up_env), "REVERSE_PROXY_PORT=%u", up);
	cr_assert_eq(th_spawn(&p, argv,
			      ARGS("PROXY_TYPE=reverse", port_env, "REVERSE_PROXY_HOST=127.0.0.1",
				   up_env, "LOG_LEVEL=info")),
		     0);
	cr_assert(th_proc_log_wait(&p, "msg=\"started\"", 5000));
	log = th_proc_log(&p);
	cr_assert(strstr(log, "listener=inbound addr=0.0.0.0:") && strstr(log, "mode=reverse"),
		  "%s", log);
	free(log);
	c = th_connect(port);
	cr_assert_geq(c, 0);
	u = th_accept(lfd, 2000);
	cr_assert_geq(u, 0, "the goproxy-configured upstream got no connection");
	close(c);
	close(u);
	close(lfd);
	cr_assert_eq(th_proc_stop(&p, SIGTERM, 5000), 0);
}

Test(cli, io_uring_blocked_by_seccomp_exits_1_and_says_why)
{
	char *argv[] = { NO_IO_URING_BIN,
			 (char *)th_sidetap_bin(),
			 "--inbound-addr=127.0.0.1:0",
			 "--outbound-addr=off",
			 "--admin-addr=off",
			 "--workers=1",
			 "--capture=off",
			 NULL };
	struct th_proc p;
	char *log;

	cr_assert_eq(th_spawn(&p, argv, NULL), 0);
	cr_assert_eq(th_proc_wait(&p, 10000), 1);
	log = th_proc_log(&p);
	cr_assert(strstr(log, "io_uring is not available") && strstr(log, "seccomp") &&
			  strstr(log, "fix="),
		  "%s", log);
	free(log);
}

Test(cli, logs_are_key_value_lines)
{
	struct th_sidetap st;
	char *log, *line;

	cr_assert_eq(th_sidetap_start(&st, NULL,
				      (const char *const[]){ "--outbound-addr=off",
							     "--log-level=info", NULL }),
		     0);
	cr_assert_eq(th_proc_stop(&st.proc, SIGTERM, 5000), 0);
	log = th_proc_log(&st.proc);
	for (line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
		cr_expect(strncmp(line, "ts=", 3) == 0, "not key=value: %s", line);
		cr_expect(strstr(line, " level=") && strstr(line, " msg=\""), "no level/msg: %s",
			  line);
	}
	free(log);
}
