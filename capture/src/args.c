/* SPDX-License-Identifier: Apache-2.0 */
/* Command-line flags of the sidetap tools (tap/args.h). */
#include <string.h>

#include "tap/args.h"

const char *tap_arg_value(int argc, char **argv, int *i, const char *flag, bool *missing)
{
	size_t n = strlen(flag);

	if (strncmp(argv[*i], flag, n) != 0)
		return NULL;
	if (argv[*i][n] == '=')
		return argv[*i] + n + 1;
	if (argv[*i][n] != '\0')
		return NULL;
	if (*i + 1 >= argc) {
		*missing = true;
		return NULL;
	}
	return argv[++*i];
}

bool tap_arg_is_help(const char *arg)
{
	return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}
