/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kernel TLS (kTLS): detection, and handing the sending half of a session's
 * records to the kernel. Only the sending half: what sidetap receives it must
 * read in plaintext for capture anyway, and records other than application
 * data (alerts, session tickets, key updates) stay OpenSSL's to handle.
 */
#ifndef TLX_KTLS_H
#define TLX_KTLS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <linux/tls.h>

#include "tlx/tls.h"

/*
 * Probes whether this kernel accepts the "tls" TCP upper-layer protocol, the
 * precondition for kTLS. Opens a loopback TCP connection for the probe (the
 * kernel only attaches a ULP to an established socket). Returns 1 when
 * supported, 0 when not, a negative errno when the probe itself failed; on
 * 0 or error, <why> (if not NULL) receives a short reason string.
 */
int tlx_ktls_probe(const char **why);

/*
 * Makes the sessions of <srv> (<cli>) keep their TLS 1.3 traffic secrets, for
 * tlx_ktls_tx(): a keylog callback that stores them with the session (never
 * logged, wiped when the session is freed). Call before creating sessions.
 */
void tlx_ktls_keep_secrets_server(struct tlx_server *srv);
void tlx_ktls_keep_secrets_client(struct tlx_client *cli);

/* What the kernel is given for one direction: setsockopt(SOL_TLS, TLS_TX, &u, len). */
struct tlx_ktls_info {
	union {
		struct tls_crypto_info info;
		struct tls12_crypto_info_aes_gcm_128 aes128;
		struct tls12_crypto_info_aes_gcm_256 aes256;
		struct tls12_crypto_info_chacha20_poly1305 chacha;
	} u;
	socklen_t len;
};

/*
 * The key, IV and sequence number of what <s> sends from now on, for the
 * kernel: TLS 1.3 only, with TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384
 * or TLS_CHACHA20_POLY1305_SHA256, right after the handshake and before <s>
 * wrote application data or anything after its Finished (sequence 0; sidetap
 * sends no session tickets). Returns 0, -EOPNOTSUPP (version or cipher),
 * -ENOKEY (the secret was not kept: tlx_ktls_keep_secrets_*()), -ENOTCONN
 * (handshake not complete), with a static reason in *<why>. Wipe <info> after
 * use.
 */
int tlx_ktls_tx_info(const struct tlx_session *s, struct tlx_ktls_info *info, const char **why);

/*
 * Moves the sending half of <s> to the kernel on socket <fd>, which must have
 * nothing of <s>'s queued: attaches the tls ULP and sets TLS_TX. From then on
 * plaintext sent on <fd> leaves as records, and <s> must not write again.
 * Returns 0, an error of tlx_ktls_tx_info(), or the kernel's negative errno
 * (the socket still sends as before) with *<why>.
 */
int tlx_ktls_tx(const struct tlx_session *s, int fd, const char **why);

/*
 * Sends a close_notify alert on kTLS socket <fd> (non-blocking). Returns 0 or
 * a negative errno (-EAGAIN: the socket is full; a FIN will do).
 */
int tlx_ktls_close_notify(int fd);

#endif
