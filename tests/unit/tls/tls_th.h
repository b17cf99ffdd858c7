/* SPDX-License-Identifier: Apache-2.0 */
/* tls/ test helpers: certificates made with OpenSSL, sessions pumped in memory or over sockets. */
#ifndef TLS_TH_H
#define TLS_TH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tlx/tls.h"

/* Seconds added to the library's clock (tlx__now), for leaf and CA expiry. */
extern time_t tth_clock_offset;

/* A new, empty scratch directory for one test. */
const char *tth_dir(void);

/* Creates a CA in <dir> with tlx_ca_create() and loads it. */
struct tlx_ca *tth_ca(const char *dir);

/* A certificate and key made with OpenSSL's API: <dir>/<name>.crt and <dir>/<name>.key. */
struct tth_cert {
	const char *cn; /* NULL: none */
	const char *dns; /* subjectAltName DNS, NULL: none */
	const char *ip; /* subjectAltName IP, NULL: none */
	long not_before, not_after; /* seconds from now */
	bool ca; /* basicConstraints CA:TRUE, keyCertSign */
	bool no_key_cert_sign; /* a CA whose keyUsage lacks keyCertSign */
};

/*
 * Writes the certificate of <spec> with a new P-256 key, signed by the CA in
 * <dir>/<issuer>.crt and .key (NULL: self-signed).
 */
void tth_make_cert(const char *dir, const char *name, const struct tth_cert *spec,
		   const char *issuer);

/* "<dir>/<name>" in a static buffer of its own (one of 8, rotating). */
const char *tth_path(const char *dir, const char *name);

/* Parses the certificate a session presents (or its peer's). Caller frees. */
X509 *tth_session_cert(const struct tlx_session *s, bool peer);

/* X509 from a PEM file. Caller frees. */
X509 *tth_read_cert(const char *path);

/* One end of an in-memory connection: a tlx session, or a bare OpenSSL SSL over memory BIOs. */
struct tth_end {
	struct tlx_session *s;
	SSL *ssl;
	BIO *in, *out; /* of ssl */
	int hs; /* handshake: 0 going on, 1 done, < 0 failed */
	const char *why;
};

/* A bare OpenSSL client end (no verification) on <ctx>, with SNI <sni> (NULL: none). */
void tth_raw_client(struct tth_end *e, SSL_CTX *ctx, const char *sni);

/* Moves bytes between <a> and <b> and drives both handshakes until neither moves. */
void tth_pump(struct tth_end *a, struct tth_end *b);

void tth_end_free(struct tth_end *e);

/* Over a socket: drive <s>'s handshake, reads and writes against <fd>, within <timeout_ms>. */
int tth_sock_handshake(int fd, struct tlx_session *s, const char **why, int timeout_ms);
ssize_t tth_sock_read(int fd, struct tlx_session *s, void *buf, size_t len, const char **why,
		      int timeout_ms);
int tth_sock_write(int fd, struct tlx_session *s, const void *buf, size_t len);
/* Sends what <s> has pending to <fd>. Returns 0 or a negative errno. */
int tth_sock_flush(int fd, struct tlx_session *s);

#endif
