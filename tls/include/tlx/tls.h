/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TLS for sidetap: OpenSSL contexts, a CA that mints leaf certificates on the
 * fly (with a bounded cache), upstream verification, and sessions that do no
 * I/O of their own: the engine feeds them the ciphertext it received and sends
 * the ciphertext they produce (memory BIOs). OpenSSL's errors are translated
 * here into negative errnos and static reason strings.
 */
#ifndef TLX_TLS_H
#define TLX_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* CA */

struct tlx_ca;

/*
 * Loads a CA certificate and its private key (PEM) for minting leaves, and
 * checks that they belong together and that the certificate is a CA that may
 * sign. Returns 0 and *<out>, or a negative errno with a message naming the
 * file and the problem in <err>.
 */
int tlx_ca_load(const char *cert_path, const char *key_path, struct tlx_ca **out, char *err,
		size_t errlen);

/* Frees <ca> and its cache of leaves. NULL is a no-op. */
void tlx_ca_free(struct tlx_ca *ca);

/*
 * Creates a new CA (ECDSA P-256, self-signed, CA:TRUE, keyCertSign, <days>
 * valid) as <dir>/ca.crt (0644) and <dir>/ca.key (0600), refusing to overwrite
 * existing files. Returns 0 or a negative errno with a message in <err>.
 */
int tlx_ca_create(const char *dir, const char *common_name, unsigned days, char *err,
		  size_t errlen);

/* Server side: terminating a client's TLS */

struct tlx_server;

/*
 * A server context that presents leaves minted by <ca> (borrowed) for the
 * name each session asks for: ECDSA P-256, SAN = the name (a DNS name, or an
 * IP address), serial of 64 random bits and more, serverAuth EKU, not a CA,
 * valid <leaf_hours> (from an hour before now), SHA-256; cached per name, at
 * most <cache> leaves (least recently used go first). TLS 1.2 and 1.3 only,
 * no compression, no renegotiation. ALPN: http/1.1 only.
 */
int tlx_server_new_minting(struct tlx_ca *ca, unsigned leaf_hours, unsigned cache,
			   struct tlx_server **out, char *err, size_t errlen);

/* A server context that presents one certificate chain and key from files (a service's own). */
int tlx_server_new_fixed(const char *cert_path, const char *key_path, struct tlx_server **out,
			 char *err, size_t errlen);

void tlx_server_free(struct tlx_server *srv);

/* Client side: originating TLS to an upstream */

struct tlx_client;

/*
 * A client context that verifies upstream certificate chains against <ca_file>
 * (PEM bundle), or the system's trust store when NULL, and (per session) the
 * host name or IP address. TLS 1.2 and 1.3.
 */
int tlx_client_new(const char *ca_file, struct tlx_client **out, char *err, size_t errlen);

void tlx_client_free(struct tlx_client *cli);

/* Sessions */

struct tlx_session;

enum tlx_side {
	TLX_SERVER = 0, /* we present a certificate: the client's side */
	TLX_CLIENT = 1, /* we verify one: the upstream's side */
};

/*
 * A session terminating a client's TLS with <srv>: a minted leaf for <name>
 * (the SNI, or the destination IP when the client sent none), or the fixed
 * certificate. Returns NULL with a reason in *<why> (out of memory, minting
 * failed).
 */
struct tlx_session *tlx_session_server(struct tlx_server *srv, const char *name, const char **why);

/*
 * A session originating TLS with <cli> to an upstream known as <name> (SNI
 * and the name verified; an IP literal is verified as an IP SAN and sent
 * without SNI), offering ALPN http/1.1 when <alpn_http11>.
 */
struct tlx_session *tlx_session_client(struct tlx_client *cli, const char *name, bool alpn_http11,
				       const char **why);

void tlx_session_free(struct tlx_session *s);

/* Hands <len> bytes of ciphertext received from the peer to the session. Returns 0 or -ENOMEM. */
int tlx_session_feed(struct tlx_session *s, const void *buf, size_t len);

/*
 * Advances the handshake with what was fed. Returns 1 when it is complete, 0
 * when it needs more input (send tlx_session_pending() first), or a negative
 * errno: -EPROTO a protocol error or alert, -EPERM the peer's certificate
 * failed verification (client side); *<why> says what (OpenSSL's reason).
 */
int tlx_session_handshake(struct tlx_session *s, const char **why);

/*
 * Decrypts into <buf>. Returns the bytes (> 0), 0 when more input is needed,
 * -EPIPE when the peer closed the TLS session (close_notify), or another
 * negative errno with *<why>.
 */
ssize_t tlx_session_read(struct tlx_session *s, void *buf, size_t len, const char **why);

/* Encrypts <len> bytes of plaintext (all of them, or a negative errno). */
ssize_t tlx_session_write(struct tlx_session *s, const void *buf, size_t len, const char **why);

/* Queues a close_notify alert. */
void tlx_session_close(struct tlx_session *s);

/* Ciphertext waiting to be sent to the peer. */
size_t tlx_session_pending(const struct tlx_session *s);

/* Moves up to <len> bytes of pending ciphertext into <buf>. Returns the bytes moved. */
size_t tlx_session_take(struct tlx_session *s, void *buf, size_t len);

/* After the handshake: "TLSv1.3", the cipher suite's name, the ALPN protocol chosen ("" if none). */
const char *tlx_session_version(const struct tlx_session *s);
const char *tlx_session_cipher(const struct tlx_session *s);
const char *tlx_session_alpn(const struct tlx_session *s);

#endif
