/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of tls/src/ktls.c: the kTLS probe, and the keys it gives the kernel. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "tls_th.h"
#include "tlx/ktls.h"

Test(tlx_ktls, probe_answers_with_a_reason_when_unsupported)
{
	const char *why = NULL;
	int ret = tlx_ktls_probe(&why);

	cr_assert(ret == 0 || ret == 1, "probe failed: %d", ret);
	if (ret == 0)
		cr_assert(why && why[0], "no reason given");
}

Test(tlx_ktls, probe_agrees_with_the_kernels_ulp_list)
{
	char list[256] = "";
	int ret = tlx_ktls_probe(NULL);
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");

	if (!f)
		cr_skip_test("/proc/sys/net/ipv4/tcp_available_ulp is not readable here");
	/* After the probe (which loads the module if it can), the list names "tls" iff kTLS works. */
	cr_assert(fgets(list, sizeof(list), f) || feof(f));
	fclose(f);
	cr_assert_eq(ret == 1, strstr(list, "tls") != NULL, "probe %d, kernel lists \"%s\"", ret,
		     list);
}

/*
 * The key and IV tlx_ktls_tx_info() gives the kernel, checked without one:
 * records sealed with them as the kernel would seal them (RFC 8446 5.2, the
 * nonce the IV XOR the sequence number) must open at the peer.
 */

struct kfix {
	const char *dir;
	struct tlx_ca *ca;
	struct tlx_server *srv;
	struct tlx_client *cli;
};

static void kfix_init(struct kfix *f, bool keep)
{
	char err[512] = "";

	f->dir = strdup(tth_dir());
	f->ca = tth_ca(f->dir);
	cr_assert_eq(tlx_server_new_minting(f->ca, 24, 16, &f->srv, err, sizeof(err)), 0, "%s",
		     err);
	cr_assert_eq(tlx_client_new(tth_path(f->dir, "ca.crt"), &f->cli, err, sizeof(err)), 0, "%s",
		     err);
	if (keep) {
		tlx_ktls_keep_secrets_server(f->srv);
		tlx_ktls_keep_secrets_client(f->cli);
	}
}

static void kfix_fini(struct kfix *f)
{
	tlx_client_free(f->cli);
	tlx_server_free(f->srv);
	tlx_ca_free(f->ca);
	free((char *)f->dir);
}

static void server_end(struct tth_end *e, struct tlx_server *srv)
{
	const char *why = NULL;

	memset(e, 0, sizeof(*e));
	e->s = tlx_session_server(srv, "app.example", &why);
	cr_assert_not_null(e->s, "%s", why);
}

/* A bare OpenSSL client offering only TLS 1.3 suite <suite> (or only TLS 1.2 if NULL). */
static void raw_client(struct tth_end *e, const char *suite)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	cr_assert_not_null(ctx);
	if (suite)
		cr_assert_eq(SSL_CTX_set_ciphersuites(ctx, suite), 1);
	else
		SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
	tth_raw_client(e, ctx, "app.example");
	SSL_CTX_free(ctx);
}

/* Seals <len> bytes of application data as TLS 1.3 record number <seq> under <ki>. */
static size_t seal(const struct tlx_ktls_info *ki, uint64_t seq, const void *data, size_t len,
		   uint8_t *rec)
{
	const EVP_CIPHER *cipher;
	const uint8_t *key;
	uint8_t nonce[12], inner[256];
	size_t clen = len + 1 + 16;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n = 0;

	cr_assert(len + 1 <= sizeof(inner));
	switch (ki->u.info.cipher_type) {
	case TLS_CIPHER_AES_GCM_128:
		cipher = EVP_aes_128_gcm();
		key = ki->u.aes128.key;
		memcpy(nonce, ki->u.aes128.salt, 4);
		memcpy(nonce + 4, ki->u.aes128.iv, 8);
		break;
	case TLS_CIPHER_AES_GCM_256:
		cipher = EVP_aes_256_gcm();
		key = ki->u.aes256.key;
		memcpy(nonce, ki->u.aes256.salt, 4);
		memcpy(nonce + 4, ki->u.aes256.iv, 8);
		break;
	default:
		cr_assert_eq(ki->u.info.cipher_type, TLS_CIPHER_CHACHA20_POLY1305);
		cipher = EVP_chacha20_poly1305();
		key = ki->u.chacha.key;
		memcpy(nonce, ki->u.chacha.iv, 12);
		break;
	}
	for (int i = 0; i < 8; i++)
		nonce[4 + i] ^= (uint8_t)(seq >> (56 - 8 * i));
	rec[0] = 0x17;
	rec[1] = 0x03;
	rec[2] = 0x03;
	rec[3] = (uint8_t)(clen >> 8);
	rec[4] = (uint8_t)clen;
	memcpy(inner, data, len);
	inner[len] = 0x17; /* the real content type: application data */
	cr_assert_eq(EVP_EncryptInit_ex(ctx, cipher, NULL, key, nonce), 1);
	cr_assert_eq(EVP_EncryptUpdate(ctx, NULL, &n, rec, 5), 1);
	cr_assert_eq(EVP_EncryptUpdate(ctx, rec + 5, &n, inner, (int)len + 1), 1);
	cr_assert_eq(EVP_EncryptFinal_ex(ctx, rec + 5 + n, &n), 1);
	cr_assert_eq(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, rec + 5 + len + 1), 1);
	EVP_CIPHER_CTX_free(ctx);
	return 5 + clen;
}

/* What the server's keys seal, for suite <suite>, is what the bare client reads. */
static void server_keys_open_at_the_client(const char *suite, uint16_t type)
{
	struct tth_end c, s;
	struct tlx_ktls_info ki;
	const char *why = NULL;
	uint8_t rec[512];
	char got[64] = "";
	struct kfix f;

	kfix_init(&f, true);
	raw_client(&c, suite);
	server_end(&s, f.srv);
	tth_pump(&c, &s);
	cr_assert_eq(s.hs, 1, "%s", s.why);
	cr_assert_eq(tlx_ktls_tx_info(s.s, &ki, &why), 0, "%s", why);
	cr_expect_eq(ki.u.info.version, TLS_1_3_VERSION);
	cr_expect_eq(ki.u.info.cipher_type, type, "%s", suite);
	for (uint64_t seq = 0; seq < 3; seq++) {
		char msg[32];
		size_t n;
		int r;

		snprintf(msg, sizeof(msg), "record %lu from the kernel", (unsigned long)seq);
		n = seal(&ki, seq, msg, strlen(msg), rec);
		cr_assert_eq(BIO_write(c.in, rec, (int)n), (int)n);
		r = SSL_read(c.ssl, got, sizeof(got) - 1);
		cr_assert_eq(r, (int)strlen(msg), "%s: record %lu did not open (%d)", suite,
			     (unsigned long)seq, SSL_get_error(c.ssl, r));
		got[r] = '\0';
		cr_expect_str_eq(got, msg);
	}
	OPENSSL_cleanse(&ki, sizeof(ki));
	tth_end_free(&c);
	tth_end_free(&s);
	kfix_fini(&f);
}

Test(tlx_ktls, aes128_server_keys_open_at_the_client)
{
	server_keys_open_at_the_client("TLS_AES_128_GCM_SHA256", TLS_CIPHER_AES_GCM_128);
}

Test(tlx_ktls, aes256_server_keys_open_at_the_client)
{
	server_keys_open_at_the_client("TLS_AES_256_GCM_SHA384", TLS_CIPHER_AES_GCM_256);
}

Test(tlx_ktls, chacha_server_keys_open_at_the_client)
{
	server_keys_open_at_the_client("TLS_CHACHA20_POLY1305_SHA256",
				       TLS_CIPHER_CHACHA20_POLY1305);
}

Test(tlx_ktls, client_keys_open_at_the_server)
{
	struct tth_end c, s;
	struct tlx_ktls_info ki;
	const char *why = NULL, *msg = "GET / HTTP/1.1\r\n\r\n";
	uint8_t rec[512];
	char got[64] = "";
	ssize_t r;
	struct kfix f;

	kfix_init(&f, true);
	memset(&c, 0, sizeof(c));
	c.s = tlx_session_client(f.cli, "app.example", true, &why);
	cr_assert_not_null(c.s, "%s", why);
	server_end(&s, f.srv);
	tth_pump(&c, &s);
	cr_assert_eq(c.hs, 1, "%s", c.why);
	cr_assert_eq(s.hs, 1, "%s", s.why);
	cr_assert_eq(tlx_ktls_tx_info(c.s, &ki, &why), 0, "%s", why);
	cr_assert_eq(tlx_session_feed(s.s, rec, seal(&ki, 0, msg, strlen(msg), rec)), 0);
	r = tlx_session_read(s.s, got, sizeof(got) - 1, &why);
	cr_assert_eq(r, (ssize_t)strlen(msg), "%zd %s", r, why ? why : "");
	cr_expect(memcmp(got, msg, strlen(msg)) == 0);
	tth_end_free(&c);
	tth_end_free(&s);
	kfix_fini(&f);
}

Test(tlx_ktls, sessions_kTLS_cannot_take_say_why)
{
	struct tth_end c, s;
	struct tlx_ktls_info ki;
	const char *why = NULL;
	struct kfix f, bare;

	kfix_init(&f, true);
	/* Before the handshake. */
	server_end(&s, f.srv);
	cr_expect_eq(tlx_ktls_tx_info(s.s, &ki, &why), -ENOTCONN);
	cr_expect_str_eq(why, "the handshake is not complete");
	tth_end_free(&s);
	/* TLS 1.2. */
	raw_client(&c, NULL);
	server_end(&s, f.srv);
	tth_pump(&c, &s);
	cr_assert_eq(s.hs, 1, "%s", s.why);
	cr_expect_eq(tlx_ktls_tx_info(s.s, &ki, &why), -EOPNOTSUPP);
	cr_expect_str_eq(why, "kTLS is used for TLS 1.3 only");
	tth_end_free(&c);
	tth_end_free(&s);
	kfix_fini(&f);
	/* Secrets not kept. */
	kfix_init(&bare, false);
	raw_client(&c, "TLS_AES_128_GCM_SHA256");
	server_end(&s, bare.srv);
	tth_pump(&c, &s);
	cr_assert_eq(s.hs, 1, "%s", s.why);
	cr_expect_eq(tlx_ktls_tx_info(s.s, &ki, &why), -ENOKEY);
	cr_expect(strstr(why, "not kept"), "%s", why);
	tth_end_free(&c);
	tth_end_free(&s);
	kfix_fini(&bare);
}

/* With a kernel that has kTLS: plaintext written to the socket arrives as records the client opens. */
Test(tlx_ktls, the_kernel_seals_what_is_written)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t slen = sizeof(sa);
	const char *why = NULL, *msg = "sealed by the kernel";
	struct tth_end c, s;
	struct kfix f;
	uint8_t buf[512];
	char got[64];
	int lfd, cfd, afd, r;
	ssize_t n;

	if (tlx_ktls_probe(&why) != 1)
		cr_skip_test("this kernel has no kTLS: %s", why ? why : "unknown");
	kfix_init(&f, true);
	raw_client(&c, "TLS_AES_128_GCM_SHA256");
	server_end(&s, f.srv);
	tth_pump(&c, &s);
	cr_assert_eq(s.hs, 1, "%s", s.why);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 1) == 0);
	cr_assert(getsockname(lfd, (struct sockaddr *)&sa, &slen) == 0);
	cfd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert(connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	afd = accept(lfd, NULL, NULL);
	cr_assert(afd >= 0);
	cr_assert_eq(tlx_ktls_tx(s.s, afd, &why), 0, "%s", why);
	cr_assert_eq(write(afd, msg, strlen(msg)), (ssize_t)strlen(msg));
	cr_assert_eq(tlx_ktls_close_notify(afd), 0);
	shutdown(afd, SHUT_WR);
	n = read(cfd, buf, sizeof(buf));
	cr_assert_gt(n, 5 + (ssize_t)strlen(msg), "the kernel sent %zd bytes", n);
	cr_expect_eq(buf[0], 0x17, "not an application_data record");
	cr_assert_eq(BIO_write(c.in, buf, (int)n), (int)n);
	r = SSL_read(c.ssl, got, sizeof(got) - 1);
	cr_assert_eq(r, (int)strlen(msg), "%d", SSL_get_error(c.ssl, r));
	cr_expect(memcmp(got, msg, strlen(msg)) == 0);
	close(afd);
	close(cfd);
	close(lfd);
	tth_end_free(&c);
	tth_end_free(&s);
	kfix_fini(&f);
}
