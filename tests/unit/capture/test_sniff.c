/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of capture/src/sniff.c: protocol detection from a stream's first bytes. */
#include <criterion/criterion.h>
#include <string.h>

#include "tap/sniff.h"

Test(tap_sniff, http1_request_lines)
{
	static const char *const reqs[] = { "GET / HTTP/1.1\r\n", "POST /x HTTP/1.0\r\n",
					    "OPTIONS * HTTP/1.1\r\n", "CONNECT h:443 HTTP/1.1\r\n",
					    "PATCH /a HTTP/1.1\r\n" };

	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++)
		cr_expect_eq(tap_sniff(reqs[i], strlen(reqs[i])), TAP_PROTO_HTTP1, "%s", reqs[i]);
}

Test(tap_sniff, tls_client_hello)
{
	static const unsigned char hello[] = { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01 };

	cr_assert_eq(tap_sniff(hello, sizeof(hello)), TAP_PROTO_TLS);
	cr_assert_eq(tap_sniff(hello, 2), TAP_PROTO_UNKNOWN, "2 bytes cannot tell");
}

Test(tap_sniff, other_protocols)
{
	static const unsigned char pg[] = { 0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f };

	cr_expect_eq(tap_sniff("*1\r\n$4\r\nPING\r\n", 14), TAP_PROTO_OTHER, "redis");
	cr_expect_eq(tap_sniff(pg, sizeof(pg)), TAP_PROTO_OTHER, "postgres");
	cr_expect_eq(tap_sniff("GETX / HTTP/1.1", 15), TAP_PROTO_OTHER);
	cr_expect_eq(tap_sniff("get / HTTP/1.1", 14), TAP_PROTO_OTHER,
		     "methods are case-sensitive");
	cr_expect_eq(tap_sniff("\x16\x02\x00", 3), TAP_PROTO_OTHER, "SSLv2-style version");
}

Test(tap_sniff, undecided_until_enough_bytes)
{
	const char *req = "DELETE /x HTTP/1.1\r\n";

	cr_assert_eq(tap_sniff("", 0), TAP_PROTO_UNKNOWN);
	/* Split at every byte: undecided until the method and its space arrive. */
	for (size_t n = 1; n < 7; n++)
		cr_expect_eq(tap_sniff(req, n), TAP_PROTO_UNKNOWN, "%zu bytes", n);
	cr_assert_eq(tap_sniff(req, 7), TAP_PROTO_HTTP1);
}

Test(tap_sniff, names)
{
	cr_assert_str_eq(tap_proto_name(TAP_PROTO_HTTP1), "http1");
	cr_assert_str_eq(tap_proto_name(TAP_PROTO_TLS), "tls");
	cr_assert_str_eq(tap_proto_name(TAP_PROTO_OTHER), "other");
	cr_assert_str_eq(tap_proto_name(TAP_PROTO_UNKNOWN), "unknown");
}
