/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of engine/src/addr.c: parsing, formatting, comparison, locality. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "eng/addr.h"

static struct eng_addr a;

static const char *fmt(const struct eng_addr *x)
{
	static char buf[ENG_ADDR_STRLEN];

	return eng_addr_format(x, buf, sizeof(buf));
}

Test(eng_addr, parses_ipv4_and_ipv6_literals)
{
	cr_assert_eq(eng_addr_parse("10.1.2.3:80", false, false, &a, NULL), 0);
	cr_assert_eq(a.u.sa.sa_family, AF_INET);
	cr_assert_eq(a.len, sizeof(struct sockaddr_in));
	cr_assert_eq(eng_addr_port(&a), 80);
	cr_assert_str_eq(fmt(&a), "10.1.2.3:80");

	cr_assert_eq(eng_addr_parse("[fe80::1:2]:65535", false, false, &a, NULL), 0);
	cr_assert_eq(a.u.sa.sa_family, AF_INET6);
	cr_assert_eq(a.len, sizeof(struct sockaddr_in6));
	cr_assert_eq(eng_addr_port(&a), 65535);
	cr_assert_str_eq(fmt(&a), "[fe80::1:2]:65535");
}

Test(eng_addr, port_zero_only_when_allowed)
{
	const char *why = NULL;

	cr_assert_eq(eng_addr_parse("127.0.0.1:0", false, true, &a, &why), 0);
	cr_assert_eq(eng_addr_parse("127.0.0.1:0", false, false, &a, &why), -EINVAL);
	cr_assert(strstr(why, "1 to 65535"));
}

Test(eng_addr, rejects_malformed_input_with_a_reason)
{
	static const char *const bad[] = {
		"",
		":80",
		"1.2.3.4",
		"1.2.3.4:",
		"1.2.3.4:x",
		"1.2.3.4:-1",
		"1.2.3.4:65536",
		"1.2.3.4:+80",
		"[::1]",
		"[::1]80",
		"::1:80",
		"[zz::1]:80",
		"[]:80",
		"1.2.3.4:80 ",
		"1.2.3.4:99999999999999999999",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *why = NULL;

		cr_expect_eq(eng_addr_parse(bad[i], false, true, &a, &why), -EINVAL,
			     "'%s' accepted", bad[i]);
		cr_expect(why && why[0], "'%s' has no reason", bad[i]);
	}
}

Test(eng_addr, names_need_resolve)
{
	const char *why = NULL;

	cr_assert_eq(eng_addr_parse("localhost:80", false, false, &a, &why), -EINVAL);
	cr_assert(strstr(why, "IP address"));
	cr_assert_eq(eng_addr_parse("localhost:80", true, false, &a, &why), 0);
	cr_assert_eq(eng_addr_port(&a), 80);
	cr_assert_eq(eng_addr_parse("no-such-host.invalid:80", true, false, &a, &why), -EINVAL);
}

Test(eng_addr, equal_compares_family_address_and_port)
{
	struct eng_addr b;

	eng_addr_parse("127.0.0.1:80", false, false, &a, NULL);
	eng_addr_parse("127.0.0.1:80", false, false, &b, NULL);
	cr_assert(eng_addr_equal(&a, &b));
	eng_addr_set_port(&b, 81);
	cr_assert_not(eng_addr_equal(&a, &b));
	eng_addr_parse("[::1]:80", false, false, &b, NULL);
	cr_assert_not(eng_addr_equal(&a, &b));
}

Test(eng_addr, any_and_loopback)
{
	eng_addr_parse("0.0.0.0:1", false, false, &a, NULL);
	cr_assert(eng_addr_is_any(&a));
	eng_addr_to_loopback(&a);
	cr_assert_str_eq(fmt(&a), "127.0.0.1:1");
	eng_addr_parse("[::]:2", false, false, &a, NULL);
	cr_assert(eng_addr_is_any(&a));
	eng_addr_to_loopback(&a);
	cr_assert_str_eq(fmt(&a), "[::1]:2");
}

Test(eng_addr, is_local_knows_this_hosts_addresses)
{
	eng_addr_parse("127.0.0.1:4140", false, false, &a, NULL);
	cr_assert(eng_addr_is_local(&a));
	/* TEST-NET-3 (RFC 5737): documentation only, never assigned. */
	eng_addr_parse("203.0.113.7:4140", false, false, &a, NULL);
	cr_assert_not(eng_addr_is_local(&a));
}
