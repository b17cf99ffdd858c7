/* SPDX-License-Identifier: Apache-2.0 */
/* TLS sessions over memory BIOs: the engine feeds ciphertext in and takes ciphertext out. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "tap/tls_hello.h"
#include "tls_int.h"

/*
 * A session: an SSL whose read BIO holds what the peer sent (fed) and whose
 * write BIO holds what goes to the peer (taken). States: handshaking (done
 * false) until tlx_session_handshake() returns 1, then open; closed once a
 * close_notify was queued. Errors do not change the state: the caller frees.
 */
struct tlx_session {
	SSL *ssl;
	BIO *rbio, *wbio; /* owned by ssl */
	enum tlx_side side;
	bool done, closed;
	bool cert_requested; /* client: the upstream asked for a client certificate */
	char alpn[256];
	struct tlx_client *cli; /* client: whose resumption cache takes its tickets */
	char key[TLX_RESUME_KEY_MAX]; /* client: the key of that cache */
};

static struct tlx_session *session_new(SSL_CTX *ctx, enum tlx_side side, const char **why)
{
	struct tlx_session *s = calloc(1, sizeof(*s));

	if (!s)
		goto err_nomem;
	s->side = side;
	s->ssl = SSL_new(ctx);
	s->rbio = BIO_new(BIO_s_mem());
	s->wbio = BIO_new(BIO_s_mem());
	if (!s->ssl || !s->rbio || !s->wbio) {
		BIO_free(s->rbio);
		BIO_free(s->wbio);
		SSL_free(s->ssl);
		free(s);
		goto err_nomem;
	}
	/* An empty read BIO means "retry later" (want read), not end of file. */
	BIO_set_mem_eof_return(s->rbio, -1);
	SSL_set_bio(s->ssl, s->rbio, s->wbio);
	SSL_set_app_data(s->ssl, &s->cert_requested);
	return s;

err_nomem:
	ERR_clear_error();
	*why = "out of memory";
	return NULL;
}

struct tlx_session *tlx_session_server(struct tlx_server *srv, const char *name, const char **why)
{
	const char *unused;
	struct tlx_session *s;
	X509 *leaf;

	if (!why)
		why = &unused;
	s = session_new(srv->ctx, TLX_SERVER, why);
	if (!s)
		return NULL;
	if (srv->ca) {
		leaf = tlx__server_leaf(srv, name, why);
		if (!leaf)
			goto err_free_session;
		/* The CA goes in the chain: clients that trust it need nothing else. */
		if (SSL_use_certificate(s->ssl, leaf) != 1 ||
		    SSL_use_PrivateKey(s->ssl, srv->leaf_key) != 1 ||
		    SSL_add1_chain_cert(s->ssl, srv->ca->cert) != 1) {
			*why = tlx__ssl_reason();
			X509_free(leaf);
			goto err_free_session;
		}
		X509_free(leaf);
	}
	SSL_set_accept_state(s->ssl);
	return s;

err_free_session:
	tlx_session_free(s);
	return NULL;
}

int tlx__session_new_cb(SSL *ssl, SSL_SESSION *sess)
{
	bool *requested = SSL_get_app_data(ssl);
	struct tlx_session *s;
	SSL_SESSION *copy;

	if (!requested || !SSL_SESSION_is_resumable(sess))
		return 0;
	s = (struct tlx_session *)((char *)requested - offsetof(struct tlx_session, cert_requested));
	/* Only what a verified handshake gave (or, to the pod's app, unverified by design). */
	if (!s->cli || (s->cli->verify && SSL_get_verify_result(ssl) != X509_V_OK))
		return 0;
	/*
	 * A copy: <sess> is the connection's own, and freeing a connection that
	 * ended without close_notify marks it not resumable.
	 */
	copy = SSL_SESSION_dup(sess);
	if (copy)
		tlx__resume_put(s->cli, s->key, copy);
	return 0;
}

static bool is_ip(const char *name)
{
	unsigned char addr[16];

	return inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
}

struct tlx_session *tlx_session_client(struct tlx_client *cli, const char *name, bool alpn_http11,
				       const char **why)
{
	static const unsigned char http11[] = "\x08http/1.1";
	const char *unused;
	struct tlx_session *s;
	bool ok;

	if (!why)
		why = &unused;
	if (!name || !name[0] || strlen(name) > TAP_TLS_SNI_MAX) {
		*why = "upstream name empty or longer than 255 bytes";
		return NULL;
	}
	s = session_new(cli->ctx, TLX_CLIENT, why);
	if (!s)
		return NULL;
	if (is_ip(name)) {
		/* No SNI for an address (RFC 6066 3); the certificate must name it as an IP SAN. */
		ok = !cli->verify ||
		     X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), name) == 1;
	} else {
		ok = SSL_set_tlsext_host_name(s->ssl, name) == 1;
		if (ok && cli->verify) {
			SSL_set_hostflags(s->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
#ifndef TLX_MUTANT_NO_HOST_CHECK
			ok = SSL_set1_host(s->ssl, name) == 1;
#endif
		}
	}
	/* SSL_set_alpn_protos() returns 0 on success. */
	if (ok && alpn_http11)
		ok = SSL_set_alpn_protos(s->ssl, http11, sizeof(http11) - 1) == 0;
	if (ok && cli->resume) {
		SSL_SESSION *sess;

		s->cli = cli;
		snprintf(s->key, sizeof(s->key), "%c%s", alpn_http11 ? 'h' : '-', name);
		sess = tlx__resume_take(cli, s->key);
		if (sess) {
			ok = SSL_set_session(s->ssl, sess) == 1;
			SSL_SESSION_free(sess);
		}
	}
	if (!ok) {
		*why = tlx__ssl_reason();
		tlx_session_free(s);
		return NULL;
	}
	SSL_set_connect_state(s->ssl);
	return s;
}

void tlx_session_free(struct tlx_session *s)
{
	if (!s)
		return;
	SSL_free(s->ssl);
	free(s);
}

int tlx_session_feed(struct tlx_session *s, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		int n = BIO_write(s->rbio, p, len > INT_MAX ? INT_MAX : (int)len);

		if (n <= 0) {
			ERR_clear_error();
			return -ENOMEM;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Translates a failed SSL call: 0 for "needs more input", else a negative
 * errno with OpenSSL's reason. Clears OpenSSL's error queue (per thread), so
 * that the next session on this thread does not read this one's errors.
 */
static int session_error(struct tlx_session *s, int ret, const char **why)
{
	long vr;

	switch (SSL_get_error(s->ssl, ret)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		ERR_clear_error();
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		ERR_clear_error();
		*why = "the peer closed the TLS session";
		return -EPIPE;
	case SSL_ERROR_SSL:
		vr = SSL_get_verify_result(s->ssl);
		if (s->side == TLX_CLIENT && vr != X509_V_OK) {
			ERR_clear_error();
			*why = X509_verify_cert_error_string(vr);
			return -EPERM;
		}
		if (s->cert_requested) {
			ERR_clear_error();
			*why = "the upstream requires a client certificate";
			return -EACCES;
		}
		*why = tlx__ssl_reason();
		return -EPROTO;
	default:
		ERR_clear_error();
		*why = "TLS session failed";
		return -EPROTO;
	}
}

int tlx_session_handshake(struct tlx_session *s, const char **why)
{
	const unsigned char *alpn;
	const char *unused;
	unsigned int alpn_len;
	int ret;

	if (!why)
		why = &unused;
	if (s->done)
		return 1;
	ERR_clear_error();
	ret = SSL_do_handshake(s->ssl);
	if (ret != 1) {
		ret = session_error(s, ret, why);
		/* A close_notify before the handshake's end is a failed handshake. */
		return ret == -EPIPE ? -EPROTO : ret;
	}
	s->done = true;
	SSL_get0_alpn_selected(s->ssl, &alpn, &alpn_len);
	if (alpn && alpn_len < sizeof(s->alpn)) {
		memcpy(s->alpn, alpn, alpn_len);
		s->alpn[alpn_len] = '\0';
	}
	return 1;
}

ssize_t tlx_session_read(struct tlx_session *s, void *buf, size_t len, const char **why)
{
	const char *unused;
	size_t n = 0;

	if (!why)
		why = &unused;
	if (!s->done) {
		*why = "the handshake is not complete";
		return -ENOTCONN;
	}
	if (len == 0)
		return 0;
	ERR_clear_error();
	if (SSL_read_ex(s->ssl, buf, len, &n) == 1)
		return (ssize_t)n;
	return session_error(s, 0, why);
}

ssize_t tlx_session_write(struct tlx_session *s, const void *buf, size_t len, const char **why)
{
	const char *unused;
	size_t n = 0;
	int ret;

	if (!why)
		why = &unused;
	if (!s->done) {
		*why = "the handshake is not complete";
		return -ENOTCONN;
	}
	if (s->closed) {
		*why = "the TLS session was closed";
		return -EPIPE;
	}
	if (len == 0)
		return 0;
	ERR_clear_error();
	/* Without SSL_MODE_ENABLE_PARTIAL_WRITE, and with a memory BIO, all of it or an error. */
	if (SSL_write_ex(s->ssl, buf, len, &n) == 1)
		return (ssize_t)n;
	ret = session_error(s, 0, why);
	if (ret == 0) {
		*why = "TLS write did not complete";
		ret = -EPROTO;
	}
	return ret;
}

void tlx_session_close(struct tlx_session *s)
{
	if (s->closed)
		return;
	s->closed = true;
	/* Before the handshake's end there is no session to close: nothing is sent. */
	if (!s->done)
		return;
	ERR_clear_error();
	SSL_shutdown(s->ssl);
	ERR_clear_error();
}

size_t tlx_session_pending(const struct tlx_session *s)
{
	return BIO_ctrl_pending(s->wbio);
}

size_t tlx_session_take(struct tlx_session *s, void *buf, size_t len)
{
	int n;

	if (len == 0)
		return 0;
	n = BIO_read(s->wbio, buf, len > INT_MAX ? INT_MAX : (int)len);
	return n > 0 ? (size_t)n : 0;
}

const char *tlx_session_version(const struct tlx_session *s)
{
	return s->done ? SSL_get_version(s->ssl) : "";
}

uint32_t tlx_session_version_mask(const struct tlx_session *s)
{
	if (!s->done)
		return 0;
	switch (SSL_version(s->ssl)) {
	case TLS1_2_VERSION:
		return TAP_TLS_V12;
	case TLS1_3_VERSION:
		return TAP_TLS_V13;
	}
	return 0;
}

const char *tlx_session_cipher(const struct tlx_session *s)
{
	const SSL_CIPHER *c = s->done ? SSL_get_current_cipher(s->ssl) : NULL;
	const char *name;

	if (!c)
		return "";
	name = SSL_CIPHER_standard_name(c);
	return name ? name : SSL_CIPHER_get_name(c);
}

const char *tlx_session_alpn(const struct tlx_session *s)
{
	return s->alpn;
}

bool tlx_session_resumed(const struct tlx_session *s)
{
	return s->done && SSL_session_reused(s->ssl);
}

bool tlx_session_cert_requested(const struct tlx_session *s)
{
	return s->cert_requested;
}

ssize_t tlx_session_cert_pem(const struct tlx_session *s, bool peer, char *buf, size_t len)
{
	X509 *x = peer ? SSL_get0_peer_certificate(s->ssl) : SSL_get_certificate(s->ssl);
	ssize_t ret;
	char *p;
	long n;
	BIO *bio;

	if (!x)
		return -ENOENT;
	bio = BIO_new(BIO_s_mem());
	if (!bio || !PEM_write_bio_X509(bio, x)) {
		BIO_free(bio);
		ERR_clear_error();
		return -ENOMEM;
	}
	n = BIO_get_mem_data(bio, &p);
	if ((size_t)n >= len) {
		ret = -ENOSPC;
	} else {
		memcpy(buf, p, (size_t)n);
		buf[n] = '\0';
		ret = n;
	}
	BIO_free(bio);
	return ret;
}

SSL *tlx__session_ssl(const struct tlx_session *s)
{
	return s->ssl;
}
