/* SPDX-License-Identifier: Apache-2.0 */
/* Socket addresses: parsing "HOST:PORT" / "[V6]:PORT", formatting, comparing. */
#ifndef ENG_ADDR_H
#define ENG_ADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* An IPv4 or IPv6 socket address, small enough to keep in every connection. */
struct eng_addr {
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} u;
	socklen_t len;
};

/* Longest string eng_addr_format() writes, with its NUL. */
#define ENG_ADDR_STRLEN (INET6_ADDRSTRLEN + 8)

/*
 * Parses "<host>:<port>" where host is an IPv4 literal, an IPv6 literal in
 * brackets, or (when <resolve>) a name looked up with getaddrinfo (first
 * TCP result). Port 0 is accepted only when <allow_port0>. Returns 0, or
 * -EINVAL with *<why> (if not NULL) set to a static explanation.
 */
int eng_addr_parse(const char *spec, bool resolve, bool allow_port0, struct eng_addr *out,
		   const char **why);

/* Writes "1.2.3.4:80" or "[::1]:80" into <buf>. Returns <buf>. */
char *eng_addr_format(const struct eng_addr *a, char *buf, size_t len);

/* Returns the port in host byte order. */
uint16_t eng_addr_port(const struct eng_addr *a);

/* Sets the port (host byte order). */
void eng_addr_set_port(struct eng_addr *a, uint16_t port);

/* True when family, address and port are equal. */
bool eng_addr_equal(const struct eng_addr *a, const struct eng_addr *b);

/* True for 0.0.0.0 and ::. */
bool eng_addr_is_any(const struct eng_addr *a);

/* True when <a>'s address is assigned to this host (a bind to it succeeds). */
bool eng_addr_is_local(const struct eng_addr *a);

/* Makes <a> the loopback address of its family (127.0.0.1 or ::1), keeping the port. */
void eng_addr_to_loopback(struct eng_addr *a);

#endif
