/* SPDX-License-Identifier: Apache-2.0 */
/* Command-line flags as every sidetap tool reads them: "--flag VALUE" or "--flag=VALUE". */
#ifndef TAP_ARGS_H
#define TAP_ARGS_H

#include <stdbool.h>

/*
 * The value of <flag> when argv[*i] is it, moving *<i> past a separate value;
 * NULL when argv[*i] is another flag, or when the value is missing (the last
 * argument), which sets *<missing> for the caller's "needs a value" error.
 */
const char *tap_arg_value(int argc, char **argv, int *i, const char *flag, bool *missing);

/* True for --help and -h. */
bool tap_arg_is_help(const char *arg);

#endif
