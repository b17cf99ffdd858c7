/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of tls/src/ktls.c: the kTLS probe. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tlx/ktls.h"

Test(tlx_ktls, probe_answers_with_a_reason_when_unsupported)
{
	const char *why = NULL;
	int ret = tlx_ktls_probe(&why);

	cr_assert(ret == 0 || ret == 1, "probe failed: %d", ret);
	if (ret == 0)
		cr_assert(why && why[0], "no reason given");
}

Test(tlx_ktls, probe_agrees_with_the_kernels_ulp_list)
{
	char list[256] = "";
	int ret = tlx_ktls_probe(NULL);
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");

	if (!f)
		cr_skip_test("/proc/sys/net/ipv4/tcp_available_ulp is not readable here");
	/* After the probe (which loads the module if it can), the list names "tls" iff kTLS works. */
	cr_assert(fgets(list, sizeof(list), f) || feof(f));
	fclose(f);
	cr_assert_eq(ret == 1, strstr(list, "tls") != NULL, "probe %d, kernel lists \"%s\"", ret,
		     list);
}
