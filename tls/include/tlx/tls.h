/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TLS for sidetap: OpenSSL contexts, a CA that mints leaf certificates on the
 * fly (with a bounded cache), upstream verification, and sessions that do no
 * I/O of their own: the engine feeds them the ciphertext it received and sends
 * the ciphertext they produce (memory BIOs). OpenSSL's errors are translated
 * here into negative errnos and static reason strings.
 *
 * Threads: a CA, server or client context may be used by several threads at
 * once (the leaf cache has a lock); a session by one thread at a time.
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
 * Loads a CA certificate and its private key (PEM, not encrypted) for minting
 * leaves, and checks that they belong together, that the certificate is a CA
 * (basicConstraints CA:TRUE; keyCertSign if it has a keyUsage) and that it is
 * valid now. Returns 0 and *<out>, or a negative errno with a message naming
 * the file and the problem in <err>: the errno of a file that cannot be read,
 * -EKEYEXPIRED for a CA outside its validity, -EINVAL for the rest.
 */
int tlx_ca_load(const char *cert_path, const char *key_path, struct tlx_ca **out, char *err,
		size_t errlen);

/* Frees <ca>. Servers that mint with it borrow it: free them first. NULL is a no-op. */
void tlx_ca_free(struct tlx_ca *ca);

/*
 * Creates a new CA (ECDSA P-256, self-signed, CA:TRUE with pathlen 0,
 * keyCertSign, valid from an hour ago for <days>, 1 to 36500) named
 * <common_name> (NULL: "sidetap CA"; at most 64 bytes) as <dir>/ca.crt (0644)
 * and <dir>/ca.key (0600, PKCS#8 PEM), refusing to overwrite existing files
 * (-EEXIST). Returns 0 or a negative errno with a message in <err>.
 */
int tlx_ca_create(const char *dir, const char *common_name, unsigned days, char *err,
		  size_t errlen);

/* Server side: terminating a client's TLS */

struct tlx_server;

/*
 * A server context that presents leaves minted by <ca> (borrowed) for the
 * name each session asks for: ECDSA P-256, SAN = the name (a DNS name, or an
 * IP address), serial of 64 random bits and more, serverAuth EKU, not a CA,
 * valid <leaf_hours> (from an hour before now, never past the CA's end),
 * SHA-256; cached per name, at most <cache> leaves (least recently used go
 * first; 0: no cache), minted again when less than a quarter of a leaf's
 * validity is left. One P-256 key, made here, serves all its leaves. TLS 1.2
 * and 1.3 only, no compression, no renegotiation, no session tickets. ALPN:
 * http/1.1 when the client offers it, else none. Returns 0 and *<out>, or a
 * negative errno with a message in <err>.
 */
int tlx_server_new_minting(struct tlx_ca *ca, unsigned leaf_hours, unsigned cache,
			   struct tlx_server **out, char *err, size_t errlen);

/*
 * A server context that presents one certificate chain and key from files (a
 * service's own), otherwise like tlx_server_new_minting(). A key that does
 * not match the certificate is refused. Returns 0 and *<out>, or a negative
 * errno with a message naming the file and the problem in <err>.
 */
int tlx_server_new_fixed(const char *cert_path, const char *key_path, struct tlx_server **out,
			 char *err, size_t errlen);

/* Frees <srv> and its cached leaves; its sessions must be freed first. NULL is a no-op. */
void tlx_server_free(struct tlx_server *srv);

/* Client side: originating TLS to an upstream */

struct tlx_client;

/*
 * A client context that verifies upstream certificate chains against <ca_file>
 * (PEM bundle), or the system's trust store when NULL, and (per session) the
 * host name or IP address. TLS 1.2 and 1.3, no compression, no renegotiation,
 * no client certificate (an upstream that requires one fails the session with
 * -EACCES). Returns 0 and *<out>, or a negative errno with a message in <err>.
 */
int tlx_client_new(const char *ca_file, struct tlx_client **out, char *err, size_t errlen);

/*
 * A client context that does not verify the peer at all: for re-encrypting to
 * the app on loopback in the same pod, behind a certificate sidetap itself
 * presented to the client (inbound unwrap). Never for an upstream elsewhere.
 */
int tlx_client_new_noverify(struct tlx_client **out, char *err, size_t errlen);

/* Frees <cli>; its sessions must be freed first. NULL is a no-op. */
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
 * certificate (<name> unused, may be NULL). Returns NULL with a reason in
 * *<why> (out of memory, a name that cannot be a certificate's: wildcards,
 * bad characters, too long; the CA expired).
 */
struct tlx_session *tlx_session_server(struct tlx_server *srv, const char *name, const char **why);

/*
 * A session originating TLS with <cli> to an upstream known as <name> (SNI
 * and the name verified; an IP literal is verified as an IP SAN and sent
 * without SNI), offering ALPN http/1.1 when <alpn_http11>. Returns NULL with a
 * reason in *<why>.
 */
struct tlx_session *tlx_session_client(struct tlx_client *cli, const char *name, bool alpn_http11,
				       const char **why);

/* Frees <s> (sends nothing: call tlx_session_close() first for a clean end). NULL is a no-op. */
void tlx_session_free(struct tlx_session *s);

/* Hands <len> bytes of ciphertext received from the peer to the session. Returns 0 or -ENOMEM. */
int tlx_session_feed(struct tlx_session *s, const void *buf, size_t len);

/*
 * Advances the handshake with what was fed. Returns 1 when it is complete, 0
 * when it needs more input (send tlx_session_pending() first), or a negative
 * errno: -EPROTO a protocol error or alert, -EPERM the peer's certificate
 * failed verification (client side), -EACCES the upstream requires a client
 * certificate (client side; see tlx_session_cert_requested()); *<why> says
 * what (OpenSSL's reason: "certificate has expired", "hostname mismatch",
 * "self-signed certificate", "unable to get local issuer certificate", ...).
 * Whatever it returns, send tlx_session_pending() bytes afterwards (an alert,
 * or the client's Finished). Returns 1 again once complete.
 */
int tlx_session_handshake(struct tlx_session *s, const char **why);

/*
 * Decrypts into <buf>. Returns the bytes (> 0), 0 when more input is needed,
 * -EPIPE when the peer closed the TLS session (close_notify), -ENOTCONN
 * before the handshake is complete, or another negative errno with *<why>
 * (-EACCES as for tlx_session_handshake(): TLS 1.3 clients learn that the
 * upstream wanted a certificate only after their side of the handshake).
 */
ssize_t tlx_session_read(struct tlx_session *s, void *buf, size_t len, const char **why);

/*
 * Encrypts <len> bytes of plaintext: returns <len>, or a negative errno with
 * *<why> (-ENOTCONN before the handshake is complete, -EPIPE after close).
 */
ssize_t tlx_session_write(struct tlx_session *s, const void *buf, size_t len, const char **why);

/* Queues a close_notify alert (once; nothing before the handshake is complete). */
void tlx_session_close(struct tlx_session *s);

/* Ciphertext waiting to be sent to the peer. */
size_t tlx_session_pending(const struct tlx_session *s);

/* Moves up to <len> bytes of pending ciphertext into <buf>. Returns the bytes moved. */
size_t tlx_session_take(struct tlx_session *s, void *buf, size_t len);

/*
 * After the handshake (else ""): "TLSv1.3", the cipher suite's IANA name
 * ("TLS_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"), the
 * ALPN protocol chosen ("" if none).
 */
const char *tlx_session_version(const struct tlx_session *s);
const char *tlx_session_cipher(const struct tlx_session *s);
const char *tlx_session_alpn(const struct tlx_session *s);

/* The version after the handshake as one TAP_TLS_V* bit (tap/tls_hello.h), for frames; else 0. */
uint32_t tlx_session_version_mask(const struct tlx_session *s);

/*
 * Client side: true once the upstream asked for a client certificate (mTLS).
 * sidetap cannot present the app's identity: such a connection is for
 * passthrough, not unwrapping.
 */
bool tlx_session_cert_requested(const struct tlx_session *s);

/*
 * True when the handshake resumed an earlier session. Client sessions resume
 * what an earlier handshake of the same client context with the same name
 * (and ALPN offer) left: its verified certificate is not sent again.
 */
bool tlx_session_resumed(const struct tlx_session *s);

/*
 * Writes the PEM of the certificate the session presents (<peer> false) or
 * the peer presented (<peer> true), NUL-terminated, into <buf>. Returns its
 * length, -ENOENT when there is none, -ENOSPC when <len> is too small.
 */
ssize_t tlx_session_cert_pem(const struct tlx_session *s, bool peer, char *buf, size_t len);

#endif
