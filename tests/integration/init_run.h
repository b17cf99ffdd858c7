/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers of the sidetap-init tests: run a program, its stdout and stderr apart; compare tables. */
#ifndef INIT_RUN_H
#define INIT_RUN_H

/*
 * Runs <argv> (argv[0] a path or a name on PATH) with <envp> (NULL: inherit)
 * and waits up to 10 s (then kills it). *<out> and *<err> receive its stdout
 * and stderr, NUL-terminated (malloc'd; the caller frees; either pointer may
 * be NULL). Returns its exit status, 128+signal when killed, or a negative
 * errno when it could not be started.
 */
int ti_run(char *const argv[], char *const envp[], char **out, char **err);

/* The environment of a sidetap-init run that no SIDETAP_INIT_* of the caller leaks into. */
char *const *ti_clean_env(void);

/* How many lines of <text> are exactly <line>. */
unsigned ti_count_line(const char *text, const char *line);

/*
 * iptables-save output made comparable across runs: "#" lines dropped and
 * counters ("[packets:bytes]") zeroed. Returns a malloc'd string.
 */
char *ti_save_normalize(const char *text);

/* Reads a whole file; returns a malloc'd string, or NULL (errno set). */
char *ti_read_file(const char *path);

/* Removes this process's scratch directory (th_tmpdir) and all in it: a suite's .fini. */
void ti_tmpdir_remove(void);

#endif
