/* SPDX-License-Identifier: Apache-2.0 */
/* tls/ test helpers: certificates made with OpenSSL, sessions pumped in memory or over sockets. */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "th.h"
#include "tls_th.h"

time_t tth_clock_offset;

/* The library's clock, replaced here (tls/src declares it weak) so that tests can move time. */
time_t tlx__now(void);
time_t tlx__now(void)
{
	return time(NULL) + tth_clock_offset;
}

const char *tth_dir(void)
{
	static char dir[256];

	snprintf(dir, sizeof(dir), "%s/tls.XXXXXX", th_tmpdir());
	cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	return dir;
}

const char *tth_path(const char *dir, const char *name)
{
	static char bufs[8][512];
	static unsigned n;
	char *b = bufs[n++ % 8];

	snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name);
	return b;
}

struct tlx_ca *tth_ca(const char *dir)
{
	struct tlx_ca *ca = NULL;
	char err[512] = "";

	cr_assert_eq(tlx_ca_create(dir, "test CA", 30, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(tlx_ca_load(tth_path(dir, "ca.crt"), tth_path(dir, "ca.key"), &ca, err,
				 sizeof(err)),
		     0, "%s", err);
	return ca;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	cr_assert_not_null(ext, "extension %d %s", nid, value);
	cr_assert(X509_add_ext(x, ext, -1));
	X509_EXTENSION_free(ext);
}

X509 *tth_read_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	cr_assert_not_null(f, "%s", path);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(x, "%s", path);
	return x;
}

static EVP_PKEY *read_key(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *k;

	cr_assert_not_null(f, "%s", path);
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(k, "%s", path);
	return k;
}

void tth_make_cert(const char *dir, const char *name, const struct tth_cert *spec,
		   const char *issuer)
{
	EVP_PKEY *key = EVP_EC_gen("P-256"), *ikey;
	X509 *x = X509_new(), *ix;
	char path[512], san[300];
	unsigned char serial[12];
	FILE *f;

	cr_assert(key && x);
	RAND_bytes(serial, sizeof(serial));
	serial[0] &= 0x7f;
	BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
	BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	BN_free(bn);
	X509_set_version(x, 2);
	if (spec->cn)
		X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_commonName, MBSTRING_ASC,
					   (const unsigned char *)spec->cn, -1, -1, 0);
	X509_time_adj_ex(X509_getm_notBefore(x), 0, spec->not_before, NULL);
	X509_time_adj_ex(X509_getm_notAfter(x), 0, spec->not_after, NULL);
	X509_set_pubkey(x, key);
	if (issuer) {
		snprintf(path, sizeof(path), "%s/%s.crt", dir, issuer);
		ix = tth_read_cert(path);
		snprintf(path, sizeof(path), "%s/%s.key", dir, issuer);
		ikey = read_key(path);
	} else {
		ix = x;
		ikey = key;
	}
	X509_set_issuer_name(x, X509_get_subject_name(ix));
	if (spec->ca) {
		add_ext(x, ix, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, ix, NID_key_usage,
			spec->no_key_cert_sign ? "critical,digitalSignature" :
						 "critical,keyCertSign,cRLSign");
	} else {
		add_ext(x, ix, NID_basic_constraints, "critical,CA:FALSE");
		add_ext(x, ix, NID_ext_key_usage, "serverAuth");
	}
	add_ext(x, ix, NID_subject_key_identifier, "hash");
	if (spec->dns || spec->ip) {
		snprintf(san, sizeof(san), "%s%s%s%s%s", spec->dns ? "DNS:" : "",
			 spec->dns ? spec->dns : "", spec->dns && spec->ip ? "," : "",
			 spec->ip ? "IP:" : "", spec->ip ? spec->ip : "");
		add_ext(x, ix, NID_subject_alt_name, san);
	}
	cr_assert(X509_sign(x, ikey, EVP_sha256()) > 0);
	snprintf(path, sizeof(path), "%s/%s.crt", dir, name);
	f = fopen(path, "w");
	cr_assert(f && PEM_write_X509(f, x));
	fclose(f);
	snprintf(path, sizeof(path), "%s/%s.key", dir, name);
	f = fopen(path, "w");
	cr_assert(f && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL));
	fclose(f);
	if (issuer) {
		X509_free(ix);
		EVP_PKEY_free(ikey);
	}
	X509_free(x);
	EVP_PKEY_free(key);
}

X509 *tth_session_cert(const struct tlx_session *s, bool peer)
{
	char pem[8192];
	ssize_t n = tlx_session_cert_pem(s, peer, pem, sizeof(pem));
	BIO *bio;
	X509 *x;

	cr_assert_gt(n, 0, "tlx_session_cert_pem: %zd", n);
	cr_assert_eq(strlen(pem), (size_t)n);
	bio = BIO_new_mem_buf(pem, (int)n);
	x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	cr_assert_not_null(x);
	return x;
}

void tth_raw_client(struct tth_end *e, SSL_CTX *ctx, const char *sni)
{
	memset(e, 0, sizeof(*e));
	e->ssl = SSL_new(ctx);
	e->in = BIO_new(BIO_s_mem());
	e->out = BIO_new(BIO_s_mem());
	cr_assert(e->ssl && e->in && e->out);
	BIO_set_mem_eof_return(e->in, -1);
	SSL_set_bio(e->ssl, e->in, e->out);
	if (sni)
		SSL_set_tlsext_host_name(e->ssl, sni);
	SSL_set_connect_state(e->ssl);
}

static size_t end_take(struct tth_end *e, void *buf, size_t len)
{
	int n;

	if (e->s)
		return tlx_session_take(e->s, buf, len);
	n = BIO_read(e->out, buf, (int)len);
	return n > 0 ? (size_t)n : 0;
}

static void end_feed(struct tth_end *e, const void *buf, size_t len)
{
	if (e->s)
		cr_assert_eq(tlx_session_feed(e->s, buf, len), 0);
	else
		cr_assert_eq(BIO_write(e->in, buf, (int)len), (int)len);
}

static void end_step(struct tth_end *e)
{
	int r;

	if (e->hs)
		return;
	if (e->s) {
		e->hs = tlx_session_handshake(e->s, &e->why);
		return;
	}
	r = SSL_do_handshake(e->ssl);
	if (r == 1) {
		e->hs = 1;
	} else {
		int err = SSL_get_error(e->ssl, r);

		if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
			unsigned long code = ERR_get_error();

			e->hs = -EPROTO;
			e->why = code ? ERR_reason_error_string(code) : "raw client failed";
		}
		ERR_clear_error();
	}
}

void tth_pump(struct tth_end *a, struct tth_end *b)
{
	static char buf[65536];

	for (int round = 0; round < 64; round++) {
		size_t moved = 0, n;

		end_step(a);
		while ((n = end_take(a, buf, sizeof(buf))) > 0) {
			end_feed(b, buf, n);
			moved += n;
		}
		end_step(b);
		while ((n = end_take(b, buf, sizeof(buf))) > 0) {
			end_feed(a, buf, n);
			moved += n;
		}
		if (!moved && a->hs && b->hs)
			return;
		if (!moved && round > 4)
			return;
	}
}

void tth_end_free(struct tth_end *e)
{
	tlx_session_free(e->s);
	SSL_free(e->ssl);
	memset(e, 0, sizeof(*e));
}

int tth_sock_flush(int fd, struct tlx_session *s)
{
	char buf[16384];
	size_t n;

	while ((n = tlx_session_take(s, buf, sizeof(buf))) > 0) {
		int ret = th_write_all(fd, buf, n);

		if (ret)
			return ret;
	}
	return 0;
}

/* Reads what the socket has (waiting up to the deadline) into <s>. */
static int sock_fill(int fd, struct tlx_session *s, uint64_t deadline, const char **why)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char buf[16384];
	int64_t left = (int64_t)(deadline - th_now_ms());
	ssize_t n;

	if (left <= 0 || poll(&p, 1, (int)left) != 1) {
		*why = "timed out";
		return -ETIMEDOUT;
	}
	n = recv(fd, buf, sizeof(buf), 0);
	if (n <= 0) {
		*why = n ? strerror(errno) : "the peer closed the connection";
		return n ? -errno : -ECONNRESET;
	}
	return tlx_session_feed(s, buf, (size_t)n);
}

int tth_sock_handshake(int fd, struct tlx_session *s, const char **why, int timeout_ms)
{
	uint64_t deadline = th_now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		int r = tlx_session_handshake(s, why);
		int f = tth_sock_flush(fd, s);

		if (r)
			return r;
		if (f)
			return f;
		r = sock_fill(fd, s, deadline, why);
		if (r)
			return r;
	}
}

ssize_t tth_sock_read(int fd, struct tlx_session *s, void *buf, size_t len, const char **why,
		      int timeout_ms)
{
	uint64_t deadline = th_now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		ssize_t r = tlx_session_read(s, buf, len, why);

		tth_sock_flush(fd, s);
		if (r)
			return r;
		r = sock_fill(fd, s, deadline, why);
		if (r)
			return r;
	}
}

int tth_sock_write(int fd, struct tlx_session *s, const void *buf, size_t len)
{
	const char *why;
	ssize_t n = tlx_session_write(s, buf, len, &why);

	cr_assert_eq(n, (ssize_t)len, "tlx_session_write: %zd %s", n, n < 0 ? why : "");
	return tth_sock_flush(fd, s);
}
