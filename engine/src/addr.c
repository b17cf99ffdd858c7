/* SPDX-License-Identifier: Apache-2.0 */
/* Socket address parsing, formatting and comparison. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eng/addr.h"

static int parse_port(const char *s, bool allow_port0, uint16_t *port)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > 65535 || (v == 0 && !allow_port0))
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

int eng_addr_parse(const char *spec, bool resolve, bool allow_port0, struct eng_addr *out,
		   const char **why)
{
	char host[256];
	const char *colon, *hs;
	size_t hlen;
	uint16_t port;
	const char *dummy;

	if (!why)
		why = &dummy;
	memset(out, 0, sizeof(*out));
	if (spec[0] == '[') {
		const char *rb = strchr(spec, ']');

		if (!rb || rb[1] != ':') {
			*why = "IPv6 addresses need brackets and a port, e.g. [::1]:8080";
			return -EINVAL;
		}
		hs = spec + 1;
		hlen = (size_t)(rb - hs);
		colon = rb + 1;
	} else {
		colon = strrchr(spec, ':');
		if (!colon) {
			*why = "expected HOST:PORT, e.g. 127.0.0.1:8080";
			return -EINVAL;
		}
		if (memchr(spec, ':', (size_t)(colon - spec))) {
			*why = "IPv6 addresses need brackets, e.g. [::1]:8080";
			return -EINVAL;
		}
		hs = spec;
		hlen = (size_t)(colon - spec);
	}
	if (hlen == 0 || hlen >= sizeof(host)) {
		*why = "the host part is empty or too long";
		return -EINVAL;
	}
	if (parse_port(colon + 1, allow_port0, &port) != 0) {
		*why = allow_port0 ? "the port must be a number from 0 to 65535" :
				     "the port must be a number from 1 to 65535";
		return -EINVAL;
	}
	memcpy(host, hs, hlen);
	host[hlen] = '\0';

	if (inet_pton(AF_INET, host, &out->u.in.sin_addr) == 1) {
		out->u.in.sin_family = AF_INET;
		out->u.in.sin_port = htons(port);
		out->len = sizeof(out->u.in);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &out->u.in6.sin6_addr) == 1) {
		out->u.in6.sin6_family = AF_INET6;
		out->u.in6.sin6_port = htons(port);
		out->len = sizeof(out->u.in6);
		return 0;
	}
	if (spec[0] == '[') {
		*why = "not a valid IPv6 address";
		return -EINVAL;
	}
	if (!resolve) {
		*why = "the host must be an IP address here, e.g. 0.0.0.0:4143 or [::]:4143";
		return -EINVAL;
	}

	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res;
	int ret = getaddrinfo(host, NULL, &hints, &res);

	if (ret != 0) {
		*why = ret == EAI_NONAME || ret == EAI_NODATA ? "the host name does not resolve" :
								gai_strerror(ret);
		return -EINVAL;
	}
	memcpy(&out->u, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	freeaddrinfo(res);
	eng_addr_set_port(out, port);
	return 0;
}

char *eng_addr_format(const struct eng_addr *a, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (a->u.sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &a->u.in.sin_addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, eng_addr_port(a));
	} else if (a->u.sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &a->u.in6.sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, eng_addr_port(a));
	} else {
		snprintf(buf, len, "unknown");
	}
	return buf;
}

uint16_t eng_addr_port(const struct eng_addr *a)
{
	return ntohs(a->u.sa.sa_family == AF_INET6 ? a->u.in6.sin6_port : a->u.in.sin_port);
}

void eng_addr_set_port(struct eng_addr *a, uint16_t port)
{
	if (a->u.sa.sa_family == AF_INET6)
		a->u.in6.sin6_port = htons(port);
	else
		a->u.in.sin_port = htons(port);
}

bool eng_addr_equal(const struct eng_addr *a, const struct eng_addr *b)
{
	if (a->u.sa.sa_family != b->u.sa.sa_family)
		return false;
	if (a->u.sa.sa_family == AF_INET)
		return a->u.in.sin_port == b->u.in.sin_port &&
		       a->u.in.sin_addr.s_addr == b->u.in.sin_addr.s_addr;
	if (a->u.sa.sa_family == AF_INET6)
		return a->u.in6.sin6_port == b->u.in6.sin6_port &&
		       memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr, 16) == 0;
	return false;
}

bool eng_addr_is_any(const struct eng_addr *a)
{
	if (a->u.sa.sa_family == AF_INET)
		return a->u.in.sin_addr.s_addr == htonl(INADDR_ANY);
	if (a->u.sa.sa_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(&a->u.in6.sin6_addr);
	return false;
}

bool eng_addr_is_local(const struct eng_addr *a)
{
	struct eng_addr probe = *a;
	bool local;
	int fd;

	if (eng_addr_is_any(a))
		return true;
	fd = socket(a->u.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return false;
	/* Port 0: only the address is tested; EADDRNOTAVAIL means it is not ours. */
	eng_addr_set_port(&probe, 0);
	local = bind(fd, &probe.u.sa, probe.len) == 0;
	close(fd);
	return local;
}

void eng_addr_to_loopback(struct eng_addr *a)
{
	if (a->u.sa.sa_family == AF_INET6)
		a->u.in6.sin6_addr = in6addr_loopback;
	else
		a->u.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}
