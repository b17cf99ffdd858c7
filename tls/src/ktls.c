/* SPDX-License-Identifier: Apache-2.0 */
/* Kernel TLS (kTLS) support detection by attaching the "tls" ULP to a loopback socket. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tlx/ktls.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

int tlx_ktls_probe(const char **why)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int lfd, cfd = -1, ret;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd == -1)
		goto err_probe;
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == -1 || listen(lfd, 1) == -1 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len) == -1)
		goto err_close_lfd;
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cfd == -1 || connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) == -1)
		goto err_close_lfd;
	if (setsockopt(cfd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) == 0) {
		ret = 1;
	} else {
		/* ENOENT: the tls module is not built or cannot be loaded. */
		if (why)
			*why = errno == ENOENT ? "kernel has no tls module (TCP_ULP tls: ENOENT)" :
						 strerror(errno);
		ret = 0;
	}
	close(cfd);
	close(lfd);
	return ret;

err_close_lfd:
	ret = -errno;
	if (cfd != -1)
		close(cfd);
	close(lfd);
	if (why)
		*why = strerror(-ret);
	return ret;
err_probe:
	ret = -errno;
	if (why)
		*why = strerror(-ret);
	return ret;
}
