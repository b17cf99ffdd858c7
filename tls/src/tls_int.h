/* SPDX-License-Identifier: Apache-2.0 */
/* Internals of tls/: the structures behind tlx/tls.h and the helpers its files share. */
#ifndef TLX_TLS_INT_H
#define TLX_TLS_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tap/tls_hello.h"
#include "tlx/tls.h"

struct tlx_ca {
	X509 *cert;
	EVP_PKEY *key;
	time_t not_before, not_after;
};

/* A minted leaf in a server's cache: in a hash chain and on the LRU list. */
struct tlx_leaf {
	char name[256]; /* canonical: lower case, or the address as inet_ntop() writes it */
	X509 *cert;
	time_t not_before, not_after;
	struct tlx_leaf *hnext;
	struct tlx_leaf *prev, *next; /* LRU: head is the most recently used */
};

struct tlx_server {
	SSL_CTX *ctx;
	/* Minting (NULL ca for a fixed certificate). */
	struct tlx_ca *ca; /* borrowed */
	EVP_PKEY *leaf_key; /* one key for all of this server's leaves */
	X509 *leaf_tmpl; /* what they share (tlx__leaf_template) */
	unsigned leaf_hours;
	/* The cache, shared by the threads that create sessions. */
	pthread_mutex_t lock;
	unsigned cache_max, cache_n, nbuckets;
	struct tlx_leaf **buckets;
	struct tlx_leaf *head, *tail;
};

/* Upstream sessions kept for resumption: one per name (and ALPN offer), direct-mapped. */
#define TLX_RESUME_SLOTS 1024
#define TLX_RESUME_KEY_MAX (TAP_TLS_SNI_MAX + 2)

struct tlx_resume_slot {
	char key[TLX_RESUME_KEY_MAX]; /* "h" or "-" (ALPN http/1.1 offered or not), then the name */
	SSL_SESSION *sess;
};

struct tlx_client {
	SSL_CTX *ctx;
	bool verify;
	pthread_mutex_t lock; /* of resume: the engine's workers share one client */
	struct tlx_resume_slot *resume;
};

/*
 * Takes the session kept for <key>, or NULL; a taken session is removed (a
 * TLS 1.3 ticket is for one use). Caller frees it.
 */
SSL_SESSION *tlx__resume_take(struct tlx_client *cli, const char *key);

/* Keeps <sess> (the cache takes the caller's reference) for <key>, replacing what was there. */
void tlx__resume_put(struct tlx_client *cli, const char *key, SSL_SESSION *sess);

/* The new-session callback of client contexts (session.c): hands tickets to tlx__resume_put. */
int tlx__session_new_cb(SSL *ssl, SSL_SESSION *sess);

enum tlx_name_kind {
	TLX_NAME_BAD = 0,
	TLX_NAME_DNS,
	TLX_NAME_IP,
};

/*
 * The wall clock minting uses (seconds since the epoch). A weak symbol: a test
 * binary may define its own to move time (leaf expiry) without waiting.
 */
time_t tlx__now(void);

/*
 * Classifies <name> for a certificate: an IP address (IPv4 dotted or IPv6), or
 * a DNS name (labels of letters, digits, '-' and '_', 1 to 63 bytes each, 253
 * in all, no wildcard, no trailing dot). Writes the canonical form into
 * <canon> (<len> >= 256 bytes). Returns TLX_NAME_BAD with a static reason in
 * *<why> for anything else.
 */
enum tlx_name_kind tlx__name_check(const char *name, char *canon, size_t len, const char **why);

/*
 * What every leaf of a server shares: version, issuer <ca>, public key <key>,
 * basicConstraints CA:FALSE, keyUsage digitalSignature, EKU serverAuth, key
 * identifiers. Returns a new certificate or NULL.
 */
X509 *tlx__leaf_template(const struct tlx_ca *ca, EVP_PKEY *key);

/*
 * Mints a leaf for <name> (canonical, of <kind>) from <tmpl>: a random
 * serial, CN and subjectAltName <name>, valid from an hour before <now> for
 * <hours> (never past the CA's own end), signed by <ca>. Returns a new
 * certificate or NULL with a static reason.
 */
X509 *tlx__leaf_mint(const struct tlx_ca *ca, const X509 *tmpl, const char *name,
		     enum tlx_name_kind kind, unsigned hours, time_t now, const char **why);

/* Gives <x> a random positive serial of 127 bits, 126 of them random. Returns 0 or -1. */
int tlx__serial_set(X509 *x);

/* The reason of OpenSSL's most recent error on this thread (static), and clears the queue. */
const char *tlx__ssl_reason(void);

/* snprintf into <err>, when <err> is not NULL. */
void tlx__err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Reads the whole of <path> (at most 1 MiB) into a new buffer, NUL-terminated;
 * the caller cleanses and frees it. Returns 0 or a negative errno.
 */
int tlx__read_file(const char *path, char **buf, size_t *len);

/*
 * Reads a PEM private key (not encrypted) from <path> into *<key>; the file's
 * bytes do not outlive the call. Returns 0 or a negative errno with a message
 * naming the file in <err>.
 */
int tlx__read_key(const char *path, EVP_PKEY **key, char *err, size_t errlen);

/*
 * The leaf that <srv> presents for <name>: from its cache, or minted (outside
 * the cache's lock: other threads' hits do not wait for it). Returns a new
 * reference, or NULL with a static reason (a name that cannot be a
 * certificate's, the CA expired, OpenSSL's error).
 */
X509 *tlx__server_leaf(struct tlx_server *srv, const char *name, const char **why);

/* The OpenSSL object behind <s> (ktls.c). */
SSL *tlx__session_ssl(const struct tlx_session *s);

/* Sets what every context shares: TLS 1.2 at least, no compression, no renegotiation. */
int tlx__ctx_harden(SSL_CTX *ctx, const char *ciphers);

#endif
