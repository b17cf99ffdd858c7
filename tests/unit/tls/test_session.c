/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of tls/src/session.c and client.c: sessions over memory BIOs pumped
 * into each other (handshake, data both ways, close_notify), a verifying
 * client against each bad certificate (TESTPLAN T1, T2), what a server
 * session refuses (T4), hostile peers, and real peers over loopback sockets:
 * openssl s_server (and one that wants a client certificate, T9), openssl
 * s_client and curl.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "tap/tls_hello.h"
#include "th.h"
#include "tls_th.h"

/* A CA in a new directory, a server minting with it, a client trusting it. */
struct fix {
	const char *dir;
	struct tlx_ca *ca;
	struct tlx_server *srv;
	struct tlx_client *cli;
};

static void fix_init(struct fix *f)
{
	char err[512] = "";

	f->dir = strdup(tth_dir());
	f->ca = tth_ca(f->dir);
	cr_assert_eq(tlx_server_new_minting(f->ca, 24, 64, &f->srv, err, sizeof(err)), 0, "%s",
		     err);
	cr_assert_eq(tlx_client_new(tth_path(f->dir, "ca.crt"), &f->cli, err, sizeof(err)), 0, "%s",
		     err);
}

static void fix_fini(struct fix *f)
{
	tlx_client_free(f->cli);
	tlx_server_free(f->srv);
	tlx_ca_free(f->ca);
	free((char *)f->dir);
}

static void client_end(struct tth_end *e, struct tlx_client *cli, const char *name, bool alpn)
{
	const char *why = NULL;

	memset(e, 0, sizeof(*e));
	e->s = tlx_session_client(cli, name, alpn, &why);
	cr_assert_not_null(e->s, "%s", why);
}

static void server_end(struct tth_end *e, struct tlx_server *srv, const char *name)
{
	const char *why = NULL;

	memset(e, 0, sizeof(*e));
	e->s = tlx_session_server(srv, name, &why);
	cr_assert_not_null(e->s, "%s", why);
}

/* Moves what <from> has pending into <to>. Returns the bytes moved. */
static size_t move(struct tlx_session *from, struct tlx_session *to)
{
	static char buf[65536];
	size_t n, total = 0;

	while ((n = tlx_session_take(from, buf, sizeof(buf))) > 0) {
		cr_assert_eq(tlx_session_feed(to, buf, n), 0);
		total += n;
	}
	return total;
}

/* Sends <len> bytes from <a> to <b> and checks that <b> reads exactly them. */
static void transfer(struct tlx_session *a, struct tlx_session *b, const char *data, size_t len)
{
	char *got = malloc(len + 1);
	const char *why = NULL;
	size_t have = 0;

	cr_assert_eq(tlx_session_write(a, data, len, &why), (ssize_t)len, "%s", why);
	move(a, b);
	while (have < len) {
		ssize_t n = tlx_session_read(b, got + have, len - have, &why);

		cr_assert_gt(n, 0, "read: %zd %s", n, n ? why : "needs more");
		have += (size_t)n;
	}
	cr_assert_eq(memcmp(got, data, len), 0);
	cr_assert_eq(tlx_session_read(b, got, 1, &why), 0, "nothing more");
	free(got);
}

Test(tlx_session, handshake_in_memory_then_data_both_ways_and_close_notify)
{
	struct fix f;
	struct tth_end c, s;
	const char *why = NULL;
	char *big = malloc(300000), buf[16];

	fix_init(&f);
	client_end(&c, f.cli, "app.example", true);
	server_end(&s, f.srv, "app.example");
	cr_expect_str_eq(tlx_session_version(c.s), "", "nothing before the handshake");
	tth_pump(&c, &s);
	cr_assert_eq(c.hs, 1, "client: %s", c.why);
	cr_assert_eq(s.hs, 1, "server: %s", s.why);
	cr_expect_eq(tlx_session_handshake(c.s, NULL), 1, "complete stays complete");
	cr_expect_str_eq(tlx_session_version(c.s), "TLSv1.3");
	cr_expect_str_eq(tlx_session_version(s.s), "TLSv1.3");
	cr_expect_eq(tlx_session_version_mask(s.s), TAP_TLS_V13);
	cr_expect_eq(strncmp(tlx_session_cipher(s.s), "TLS_AES_", 8), 0, "%s",
		     tlx_session_cipher(s.s));
	cr_expect_str_eq(tlx_session_cipher(c.s), tlx_session_cipher(s.s));
	cr_expect_str_eq(tlx_session_alpn(c.s), "http/1.1");
	cr_expect_str_eq(tlx_session_alpn(s.s), "http/1.1");
	cr_expect_not(tlx_session_cert_requested(c.s));
	{
		X509 *peer = tth_session_cert(c.s, true), *own = tth_session_cert(s.s, false);

		cr_expect_eq(X509_cmp(peer, own), 0, "the client saw the minted leaf");
		cr_expect_eq(X509_check_host(peer, "app.example", 0, 0, NULL), 1);
		X509_free(peer);
		X509_free(own);
	}

	transfer(c.s, s.s, "GET / HTTP/1.1\r\nHost: app.example\r\n\r\n", 37);
	for (size_t i = 0; i < 300000; i++)
		big[i] = (char)(i * 31 + 7);
	transfer(s.s, c.s, big, 300000);
	transfer(c.s, s.s, big, 300000);

	/* close_notify: the peer reads -EPIPE; writing after closing is refused. */
	tlx_session_close(c.s);
	tlx_session_close(c.s);
	cr_assert_gt(move(c.s, s.s), 0, "an alert went out");
	cr_expect_eq(tlx_session_read(s.s, buf, sizeof(buf), &why), -EPIPE);
	cr_expect_str_eq(why, "the peer closed the TLS session");
	cr_expect_eq(tlx_session_write(c.s, "x", 1, &why), -EPIPE);
	tlx_session_close(s.s);
	move(s.s, c.s);
	cr_expect_eq(tlx_session_read(c.s, buf, sizeof(buf), &why), -EPIPE);
	tth_end_free(&c);
	tth_end_free(&s);
	free(big);
	fix_fini(&f);
}

Test(tlx_session, alpn_is_http11_or_nothing)
{
	struct fix f;
	struct tth_end c, s;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	fix_init(&f);
	client_end(&c, f.cli, "app.example", false);
	server_end(&s, f.srv, "app.example");
	tth_pump(&c, &s);
	cr_assert(c.hs == 1 && s.hs == 1, "%s / %s", c.why, s.why);
	cr_expect_str_eq(tlx_session_alpn(s.s), "", "client offered none");
	tth_end_free(&c);
	tth_end_free(&s);

	/* An h2-only client: no protocol chosen (the engine passes those through). */
	tth_raw_client(&c, ctx, "app.example");
	cr_assert_eq(SSL_set_alpn_protos(c.ssl, (const unsigned char *)"\x02h2", 3), 0);
	server_end(&s, f.srv, "app.example");
	tth_pump(&c, &s);
	cr_assert(c.hs == 1 && s.hs == 1, "%s / %s", c.why, s.why);
	cr_expect_str_eq(tlx_session_alpn(s.s), "");
	tth_end_free(&c);
	tth_end_free(&s);

	tth_raw_client(&c, ctx, "app.example");
	cr_assert_eq(SSL_set_alpn_protos(c.ssl, (const unsigned char *)"\x02h2\x08http/1.1", 12),
		     0);
	server_end(&s, f.srv, "app.example");
	tth_pump(&c, &s);
	cr_expect_str_eq(tlx_session_alpn(s.s), "http/1.1");
	tth_end_free(&c);
	tth_end_free(&s);
	SSL_CTX_free(ctx);
	fix_fini(&f);
}

/* Parses the ClientHello a client session sends first. */
static void first_hello(struct tlx_session *c, struct tap_tls_hello *h)
{
	char buf[8192];
	size_t n;

	cr_assert_eq(tlx_session_handshake(c, NULL), 0);
	n = tlx_session_take(c, buf, sizeof(buf));
	cr_assert_eq(tap_tls_hello_parse(buf, n, h, NULL), 1);
}

Test(tlx_session, ip_names_verify_an_ip_san_and_send_no_sni)
{
	struct fix f;
	struct tth_end c, s;
	struct tap_tls_hello h;

	fix_init(&f);
	client_end(&c, f.cli, "127.0.0.1", true);
	first_hello(c.s, &h);
	cr_expect_str_eq(h.sni, "", "no SNI for an address");
	cr_expect(tap_tls_hello_offers(&h, "http/1.1", false));
	tth_end_free(&c);
	client_end(&c, f.cli, "app.example", false);
	first_hello(c.s, &h);
	cr_expect_str_eq(h.sni, "app.example");
	cr_expect_eq(h.alpn_total, 0);
	cr_expect_eq(h.versions, TAP_TLS_V12 | TAP_TLS_V13, "%#x", h.versions);
	tth_end_free(&c);

	client_end(&c, f.cli, "127.0.0.1", true);
	server_end(&s, f.srv, "127.0.0.1");
	tth_pump(&c, &s);
	cr_expect_eq(c.hs, 1, "%s", c.why);
	tth_end_free(&c);
	tth_end_free(&s);
	client_end(&c, f.cli, "::1", true);
	server_end(&s, f.srv, "::1");
	tth_pump(&c, &s);
	cr_expect_eq(c.hs, 1, "%s", c.why);
	tth_end_free(&c);
	tth_end_free(&s);
	fix_fini(&f);
}

/* A client session for <name> against a fixed server presenting <crt>; returns the client's end. */
static int against(struct fix *f, struct tlx_client *cli, const char *crt, const char *name,
		   const char **why, const char **server_why)
{
	struct tlx_server *srv;
	struct tth_end c, s;
	char err[512] = "", cpath[512], kpath[512];
	int ret;

	snprintf(cpath, sizeof(cpath), "%s/%s.crt", f->dir, crt);
	snprintf(kpath, sizeof(kpath), "%s/%s.key", f->dir, crt);
	cr_assert_eq(tlx_server_new_fixed(cpath, kpath, &srv, err, sizeof(err)), 0, "%s", err);
	client_end(&c, cli, name, true);
	server_end(&s, srv, NULL);
	tth_pump(&c, &s);
	ret = c.hs;
	*why = c.why;
	if (server_why)
		*server_why = s.why;
	if (ret == 1)
		cr_expect_eq(s.hs, 1, "server: %s", s.why);
	else
		cr_expect_eq(s.hs, -EPROTO, "the server sees the client's alert: %s", s.why);
	tth_end_free(&c);
	tth_end_free(&s);
	tlx_server_free(srv);
	return ret;
}

Test(tlx_session, a_bad_upstream_certificate_fails_with_eperm_and_names_why)
{
	static const struct {
		const char *crt, *name, *why;
	} bad[] = {
		{ "selfsigned", "app.test", "self-signed certificate" },
		{ "expired", "app.test", "certificate has expired" },
		{ "future", "app.test", "certificate is not yet valid" },
		{ "other", "app.test", "hostname mismatch" },
		{ "ip", "10.1.1.1", "IP address mismatch" },
		{ "ip", "app.test", "hostname mismatch" },
		{ "untrusted", "app.test", "unable to get local issuer certificate" },
		{ "viaintermediate", "app.test", "unable to get local issuer certificate" },
		{ "wildcard", "a.b.app.test", "hostname mismatch" },
	};
	struct tth_cert ok = {
		.cn = "app.test", .dns = "app.test", .not_before = -60, .not_after = 3600
	};
	struct tth_cert other = ok, expired = ok, future = ok, ip = ok, wildcard = ok;
	struct tth_cert ca2 = {
		.cn = "other CA", .ca = true, .not_before = -60, .not_after = 3600
	};
	struct fix f;

	fix_init(&f);
	other.dns = other.cn = "other.test";
	expired.not_before = -7200;
	expired.not_after = -60;
	future.not_before = 3600;
	future.not_after = 7200;
	/* Without a DNS SAN, OpenSSL (like curl) falls back to the CN: this one names no host. */
	ip.dns = NULL;
	ip.cn = "10.9.9.9";
	ip.ip = "10.9.9.9";
	wildcard.dns = "*.app.test";
	tth_make_cert(f.dir, "good", &ok, "ca");
	tth_make_cert(f.dir, "selfsigned", &ok, NULL);
	tth_make_cert(f.dir, "expired", &expired, "ca");
	tth_make_cert(f.dir, "future", &future, "ca");
	tth_make_cert(f.dir, "other", &other, "ca");
	tth_make_cert(f.dir, "ip", &ip, "ca");
	tth_make_cert(f.dir, "wildcard", &wildcard, "ca");
	tth_make_cert(f.dir, "ca2", &ca2, NULL);
	tth_make_cert(f.dir, "untrusted", &ok, "ca2");
	/* An intermediate of the trusted CA that the server does not send. */
	tth_make_cert(f.dir, "inter", &ca2, "ca");
	tth_make_cert(f.dir, "viaintermediate", &ok, "inter");

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *why = NULL;

		cr_expect_eq(against(&f, f.cli, bad[i].crt, bad[i].name, &why, NULL), -EPERM,
			     "%s as %s", bad[i].crt, bad[i].name);
		cr_expect_str_eq(why ? why : "(null)", bad[i].why, "%s as %s", bad[i].crt,
				 bad[i].name);
	}
	/* The same certificates pass where they are right: each failure above is the check's. */
	{
		static const struct {
			const char *crt, *name;
		} good[] = {
			{ "good", "app.test" },
			{ "other", "other.test" },
			{ "ip", "10.9.9.9" },
			{ "wildcard", "x.app.test" },
		};
		const char *why = NULL;

		for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
			cr_expect_eq(against(&f, f.cli, good[i].crt, good[i].name, &why, NULL), 1,
				     "%s as %s: %s", good[i].crt, good[i].name, why);
	}
	fix_fini(&f);
}

/*
 * TESTPLAN T2: with TLX_MUTANT_NO_HOST_CHECK (the library built without
 * SSL_set1_host), a certificate for another name must get through. The
 * mutant test binary (test_tls_mutant) runs only this test, and it passes
 * there only because the hostname check is gone: the wrong-hostname case
 * above is what catches that.
 */
Test(tlx_session, the_hostname_check_is_what_refuses_another_name)
{
	struct tth_cert other = {
		.cn = "other.test", .dns = "other.test", .not_before = -60, .not_after = 3600
	};
	const char *why = NULL;
	struct fix f;
	int ret;

	fix_init(&f);
	tth_make_cert(f.dir, "other", &other, "ca");
	ret = against(&f, f.cli, "other", "app.test", &why, NULL);
#ifdef TLX_MUTANT_NO_HOST_CHECK
	cr_expect_eq(ret, 1, "without SSL_set1_host, a certificate for other.test passes: %s", why);
#else
	cr_expect_eq(ret, -EPERM);
	cr_expect_str_eq(why, "hostname mismatch");
#endif
	fix_fini(&f);
}

Test(tlx_session, noverify_client_takes_any_certificate)
{
	struct tth_cert expired = {
		.cn = "app.test", .dns = "app.test", .not_before = -7200, .not_after = -60
	};
	struct tlx_client *cli;
	char err[256];
	const char *why = NULL;
	struct fix f;

	fix_init(&f);
	cr_assert_eq(tlx_client_new_noverify(&cli, err, sizeof(err)), 0, "%s", err);
	tth_make_cert(f.dir, "selfsigned", &expired, NULL);
	cr_expect_eq(against(&f, cli, "selfsigned", "elsewhere.test", &why, NULL), 1, "%s", why);
	cr_expect_eq(against(&f, cli, "selfsigned", "10.0.0.1", &why, NULL), 1, "%s", why);
	tlx_client_free(cli);
	fix_fini(&f);
}

Test(tlx_session, client_contexts_refuse_bad_bundles_with_a_message)
{
	struct tlx_client *cli = NULL;
	char err[512] = "";
	const char *dir = tth_dir();

	cr_expect_eq(tlx_client_new(tth_path(dir, "missing.pem"), &cli, err, sizeof(err)), -ENOENT);
	cr_expect(strstr(err, "missing.pem: cannot read: No such file or directory"), "%s", err);
	cr_assert_eq(th_sh("echo not a certificate > %s/junk.pem", dir), 0);
	cr_expect_eq(tlx_client_new(tth_path(dir, "junk.pem"), &cli, err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "junk.pem: no PEM certificate in it"), "%s", err);
	cr_expect_null(cli);
	/* The system's store. */
	cr_assert_eq(tlx_client_new(NULL, &cli, err, sizeof(err)), 0, "%s", err);
	tlx_client_free(cli);
	tlx_client_free(NULL);
	tlx_session_free(NULL);
}

Test(tlx_session, client_names_are_checked)
{
	struct fix f;
	const char *why = NULL;
	char big[300];

	fix_init(&f);
	cr_expect_null(tlx_session_client(f.cli, "", true, &why));
	cr_expect_str_eq(why, "upstream name empty or longer than 255 bytes");
	cr_expect_null(tlx_session_client(f.cli, NULL, true, NULL));
	memset(big, 'a', 256);
	big[256] = '\0';
	cr_expect_null(tlx_session_client(f.cli, big, true, &why));
	fix_fini(&f);
}

/* A bare OpenSSL client with <setup> applied to its context, against a minting server session. */
static void raw_against(struct fix *f, void (*setup)(SSL_CTX *), struct tth_end *c,
			struct tth_end *s)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	cr_assert_not_null(ctx);
	setup(ctx);
	tth_raw_client(c, ctx, "app.example");
	SSL_CTX_free(ctx); /* the SSL keeps its reference */
	server_end(s, f->srv, "app.example");
	tth_pump(c, s);
}

static void tls12(SSL_CTX *ctx)
{
	SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
}

static void tls11(SSL_CTX *ctx)
{
	SSL_CTX_set_security_level(ctx, 0);
	SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_1_VERSION);
}

static void weak_ciphers(SSL_CTX *ctx)
{
	/* Static RSA, 3DES, NULL and anonymous suites only: nothing forward secret. */
	SSL_CTX_set_security_level(ctx, 0);
	SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_cipher_list(ctx, "AES128-SHA:AES256-GCM-SHA384:DES-CBC3-SHA:NULL-SHA256:"
				     "ECDHE-ECDSA-NULL-SHA:ADH-AES128-SHA:AECDH-AES128-SHA");
}

Test(tlx_session, server_speaks_tls12_with_forward_secret_aead_and_nothing_weaker)
{
	struct fix f;
	struct tth_end c, s;
	char buf[64];

	fix_init(&f);
	raw_against(&f, tls12, &c, &s);
	cr_assert(c.hs == 1 && s.hs == 1, "%s / %s", c.why, s.why);
	cr_expect_str_eq(tlx_session_version(s.s), "TLSv1.2");
	cr_expect_eq(tlx_session_version_mask(s.s), TAP_TLS_V12);
	cr_expect_str_eq(tlx_session_cipher(s.s), "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
	cr_expect_null(SSL_get_current_compression(c.ssl), "no compression");
	cr_expect(SSL_get_secure_renegotiation_support(c.ssl), "secure renegotiation advertised");

	/* A renegotiation attempt: the server answers no_renegotiation and never hands over. */
	cr_assert_eq(SSL_renegotiate(c.ssl), 1);
	c.hs = 0;
	SSL_do_handshake(c.ssl);
	ERR_clear_error();
	{
		char out[8192];
		int n = BIO_read(c.out, out, sizeof(out));

		cr_assert_gt(n, 0, "a renegotiating ClientHello");
		cr_assert_eq(tlx_session_feed(s.s, out, (size_t)n), 0);
	}
	cr_expect_leq(tlx_session_read(s.s, buf, sizeof(buf), NULL), 0);
	{
		char out[8192];
		size_t n = tlx_session_take(s.s, out, sizeof(out));

		/* Only an alert record (type 21) comes back, no ServerHello (a handshake, 22). */
		cr_assert_gt(n, 0);
		cr_expect_eq(out[0], 21, "record type %d", out[0]);
		BIO_write(c.in, out, (int)n);
	}
	cr_expect_neq(SSL_do_handshake(c.ssl), 1, "renegotiation never completes");
	ERR_clear_error();
	tth_end_free(&c);
	tth_end_free(&s);

	raw_against(&f, tls11, &c, &s);
	cr_expect_lt(s.hs, 0, "TLS 1.1 refused");
	cr_expect_neq(c.hs, 1);
	tth_end_free(&c);
	tth_end_free(&s);

	raw_against(&f, weak_ciphers, &c, &s);
	cr_expect_eq(s.hs, -EPROTO, "weak suites refused");
	cr_expect_str_eq(s.why ? s.why : "(null)", "no shared cipher");
	tth_end_free(&c);
	tth_end_free(&s);
	fix_fini(&f);
}

Test(tlx_session, garbage_and_silence_are_errors_not_crashes)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: app.example\r\n\r\n";
	struct fix f;
	struct tth_end c, s;
	const char *why = NULL;
	char buf[8192];
	size_t n;

	fix_init(&f);
	/* HTTP where a ClientHello belongs. */
	server_end(&s, f.srv, "app.example");
	cr_assert_eq(tlx_session_feed(s.s, http, sizeof(http) - 1), 0);
	cr_expect_eq(tlx_session_handshake(s.s, &why), -EPROTO);
	cr_expect_not_null(why);
	cr_expect_gt(strlen(why), 0);
	cr_expect_eq(tlx_session_read(s.s, buf, sizeof(buf), &why), -ENOTCONN);
	cr_expect_eq(tlx_session_write(s.s, "x", 1, &why), -ENOTCONN);
	cr_expect_str_eq(why, "the handshake is not complete");
	tlx_session_close(s.s);
	tth_end_free(&s);

	/* A client answered with garbage. */
	client_end(&c, f.cli, "app.example", true);
	cr_assert_eq(tlx_session_handshake(c.s, &why), 0);
	cr_assert_gt(tlx_session_take(c.s, buf, sizeof(buf)), 0);
	memset(buf, 0x17, 64);
	cr_assert_eq(tlx_session_feed(c.s, buf, 64), 0);
	cr_expect_eq(tlx_session_handshake(c.s, &why), -EPROTO);
	cr_expect_not_null(why);
	tth_end_free(&c);

	/* A peer that stops halfway through its ClientHello: waiting, then freed (no leak). */
	client_end(&c, f.cli, "app.example", true);
	server_end(&s, f.srv, "app.example");
	cr_assert_eq(tlx_session_handshake(c.s, NULL), 0);
	n = tlx_session_take(c.s, buf, sizeof(buf));
	cr_assert_eq(tlx_session_feed(s.s, buf, n / 2), 0);
	cr_expect_eq(tlx_session_handshake(s.s, &why), 0);
	cr_expect_eq(tlx_session_pending(s.s), 0);
	tth_end_free(&c);
	tth_end_free(&s);

	/* A server that stops after its first flight: the client waits. */
	client_end(&c, f.cli, "app.example", true);
	server_end(&s, f.srv, "app.example");
	cr_assert_eq(tlx_session_handshake(c.s, NULL), 0);
	move(c.s, s.s);
	cr_assert_eq(tlx_session_handshake(s.s, NULL), 0);
	n = tlx_session_take(s.s, buf, sizeof(buf));
	cr_assert_gt(n, 100);
	cr_assert_eq(tlx_session_feed(c.s, buf, n - 100), 0);
	cr_expect_eq(tlx_session_handshake(c.s, &why), 0);
	tth_end_free(&c);
	tth_end_free(&s);
	fix_fini(&f);
}

/* Real peers over loopback sockets. */

static void need(const char *prog)
{
	if (!th_have(prog))
		cr_skip_test("%s is not installed (apt-get install %s)", prog, prog);
}

/* Starts `openssl s_server` with <args> on a free port; returns the port. */
static uint16_t s_server(struct th_proc *p, const char *dir, const char *crt, const char *args)
{
	char cmd[2048];
	uint16_t port;
	int lfd = th_listen(&port, 1);

	cr_assert_geq(lfd, 0);
	close(lfd);
	snprintf(cmd, sizeof(cmd),
		 "exec openssl s_server -accept 127.0.0.1:%u -cert %s/%s.crt -key %s/%s.key "
		 "-naccept 1 %s",
		 port, dir, crt, dir, crt, args);
	cr_assert_eq(th_spawn(p, (char *const[]){ "/bin/sh", "-c", cmd, NULL }, NULL), 0);
	cr_assert(th_proc_log_wait(p, "ACCEPT", 5000), "s_server did not start: %s",
		  th_proc_log(p));
	return port;
}

/* Connects a client session for <name> to 127.0.0.1:<port> and does the handshake. */
static int connect_tls(uint16_t port, struct tlx_client *cli, const char *name,
		       struct tlx_session **s, const char **why)
{
	int fd = th_connect(port);

	cr_assert_geq(fd, 0, "connect: %s", strerror(-fd));
	*s = tlx_session_client(cli, name, true, why);
	cr_assert_not_null(*s, "%s", *why);
	return fd;
}

/* Reads until the peer closes (close_notify or EOF); returns what came, NUL-terminated. */
static char *read_all(int fd, struct tlx_session *s, const char **why, ssize_t *last)
{
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap + 1);

	for (;;) {
		ssize_t n = tth_sock_read(fd, s, buf + len, cap - len, why, 5000);

		if (n <= 0) {
			*last = n;
			break;
		}
		len += (size_t)n;
		if (len == cap)
			break;
	}
	buf[len] = '\0';
	return buf;
}

Test(tlx_session_interop, our_client_against_openssl_s_server)
{
	struct tth_cert leaf = {
		.cn = "app.test", .dns = "app.test", .not_before = -60, .not_after = 3600
	};
	static const char *const versions[] = { "-tls1_3", "-tls1_2" };
	struct fix f;

	need("openssl");
	fix_init(&f);
	tth_make_cert(f.dir, "app", &leaf, "ca");
	for (int i = 0; i < 2; i++) {
		char args[64];
		struct th_proc p;
		struct tlx_session *s;
		const char *why = NULL;
		ssize_t last;
		uint16_t port;
		char *resp;
		int fd;

		snprintf(args, sizeof(args), "-www %s", versions[i]);
		port = s_server(&p, f.dir, "app", args);
		fd = connect_tls(port, f.cli, "app.test", &s, &why);
		cr_assert_eq(tth_sock_handshake(fd, s, &why, 5000), 1, "%s", why);
		cr_expect_str_eq(tlx_session_version(s), i ? "TLSv1.2" : "TLSv1.3");
		tth_sock_write(fd, s, "GET / HTTP/1.0\r\n\r\n", 18);
		resp = read_all(fd, s, &why, &last);
		cr_expect(strstr(resp, "HTTP/1.0 200 ok"), "%.300s", resp);
		cr_expect(last == -EPIPE || last == -ECONNRESET, "%zd %s", last, why);
		free(resp);
		tlx_session_free(s);
		close(fd);
		th_proc_stop(&p, SIGTERM, 2000);
	}
	fix_fini(&f);
}

Test(tlx_session_interop, an_upstream_that_wants_a_client_certificate_is_flagged)
{
	struct tth_cert leaf = {
		.cn = "app.test", .dns = "app.test", .not_before = -60, .not_after = 3600
	};
	struct fix f;
	struct th_proc p;
	struct tlx_session *s;
	const char *why = NULL;
	char buf[256], args[600];
	uint16_t port;
	ssize_t n;
	int fd, ret;

	need("openssl");
	fix_init(&f);
	tth_make_cert(f.dir, "app", &leaf, "ca");
	snprintf(args, sizeof(args), "-www -Verify 1 -CAfile %s/ca.crt", f.dir);
	port = s_server(&p, f.dir, "app", args);
	fd = connect_tls(port, f.cli, "app.test", &s, &why);
	ret = tth_sock_handshake(fd, s, &why, 5000);
	/* TLS 1.3: the client's side completes, and the refusal comes with the first read. */
	if (ret == 1) {
		tth_sock_write(fd, s, "GET / HTTP/1.0\r\n\r\n", 18);
		n = tth_sock_read(fd, s, buf, sizeof(buf), &why, 5000);
		cr_expect_eq(n, -EACCES, "%zd %s", n, why);
	} else {
		cr_expect_eq(ret, -EACCES, "%s", why);
	}
	cr_expect_str_eq(why, "the upstream requires a client certificate");
	cr_expect(tlx_session_cert_requested(s));
	tlx_session_free(s);
	close(fd);
	th_proc_stop(&p, SIGTERM, 2000);
	fix_fini(&f);
}

/*
 * Accepts one connection on <lfd> and serves it as sidetap's engine would:
 * the ClientHello parsed first for its SNI, then a minting server session
 * fed the bytes so far. Returns the session; *<fd> the socket.
 */
static struct tlx_session *serve_accept(struct fix *f, int lfd, int *fd, struct tap_tls_hello *h,
					const char **why)
{
	char buf[TAP_TLS_HELLO_BYTES_MAX];
	size_t len = 0;
	struct tlx_session *s;
	int ret = 0;

	*fd = th_accept(lfd, 5000);
	cr_assert_geq(*fd, 0, "accept: %s", strerror(-*fd));
	while (ret == 0) {
		ssize_t n = th_read_full(*fd, buf + len, 1, 5000);

		cr_assert_eq(n, 1, "the client's first flight");
		len++;
		ret = tap_tls_hello_parse(buf, len, h, why);
	}
	cr_assert_eq(ret, 1, "%s", *why);
	s = tlx_session_server(f->srv, h->sni[0] ? h->sni : "127.0.0.1", why);
	cr_assert_not_null(s, "%s", *why);
	cr_assert_eq(tlx_session_feed(s, buf, len), 0);
	return s;
}

Test(tlx_session_interop, our_server_against_openssl_s_client)
{
	struct fix f;
	struct th_proc p;
	struct tap_tls_hello h;
	struct tlx_session *s;
	const char *why = NULL;
	char cmd[2048], buf[256], *log;
	uint16_t port;
	ssize_t n;
	int lfd, fd;

	need("openssl");
	fix_init(&f);
	lfd = th_listen(&port, 4);
	snprintf(cmd, sizeof(cmd),
		 "printf 'ping from s_client\\n' | exec openssl s_client -connect 127.0.0.1:%u "
		 "-servername app.test -verify_return_error -CAfile %s/ca.crt -alpn h2,http/1.1 "
		 "-ign_eof",
		 port, f.dir);
	cr_assert_eq(th_spawn(&p, (char *const[]){ "/bin/sh", "-c", cmd, NULL }, NULL), 0);
	s = serve_accept(&f, lfd, &fd, &h, &why);
	cr_expect_str_eq(h.sni, "app.test");
	cr_expect(tap_tls_hello_offers(&h, "h2", false) &&
		  tap_tls_hello_offers(&h, "http/1.1", false));
	cr_assert_eq(tth_sock_handshake(fd, s, &why, 5000), 1, "%s", why);
	cr_expect_str_eq(tlx_session_alpn(s), "http/1.1");
	n = tth_sock_read(fd, s, buf, sizeof(buf) - 1, &why, 5000);
	cr_assert_gt(n, 0, "%s", why);
	buf[n] = '\0';
	cr_expect_str_eq(buf, "ping from s_client\n");
	tth_sock_write(fd, s, "pong from sidetap\n", 18);
	tlx_session_close(s);
	tth_sock_flush(fd, s);
	cr_expect_eq(th_proc_wait(&p, 5000), 0, "s_client exit status");
	log = th_proc_log(&p);
	cr_expect(strstr(log, "Verify return code: 0 (ok)"), "%s", log);
	cr_expect(strstr(log, "ALPN protocol: http/1.1"), "%s", log);
	cr_expect(strstr(log, "pong from sidetap"), "%s", log);
	/* The CA goes with the leaf, and no session ticket follows (no resumption). */
	cr_expect(strstr(log, " 0 s:CN = app.test") && strstr(log, " 1 s:CN = test CA"), "%s", log);
	cr_expect_null(strstr(log, "Session Ticket arrived"), "%s", log);
	free(log);
	tlx_session_free(s);
	close(fd);
	close(lfd);
	fix_fini(&f);
}

Test(tlx_session_interop, a_client_that_does_not_trust_us_fails_our_handshake)
{
	struct fix f;
	struct th_proc p;
	struct tap_tls_hello h;
	struct tlx_session *s;
	const char *why = NULL;
	char cmd[2048];
	uint16_t port;
	int lfd, fd, ret;

	need("openssl");
	fix_init(&f);
	lfd = th_listen(&port, 4);
	/* The system's trust store, which does not hold this test's CA. */
	snprintf(cmd, sizeof(cmd),
		 "exec openssl s_client -connect 127.0.0.1:%u -servername app.test "
		 "-verify_return_error </dev/null",
		 port);
	cr_assert_eq(th_spawn(&p, (char *const[]){ "/bin/sh", "-c", cmd, NULL }, NULL), 0);
	s = serve_accept(&f, lfd, &fd, &h, &why);
	ret = tth_sock_handshake(fd, s, &why, 5000);
	cr_expect(ret == -EPROTO || ret == -ECONNRESET, "%d %s", ret, why);
	if (ret == -EPROTO)
		cr_expect(strstr(why, "unknown ca") || strstr(why, "certificate"), "%s", why);
	cr_expect_neq(th_proc_wait(&p, 5000), 0, "s_client refused us");
	tlx_session_free(s);
	close(fd);
	close(lfd);
	fix_fini(&f);
}

Test(tlx_session_interop, our_server_against_curl)
{
	static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n"
				   "Connection: close\r\n\r\nhello from tlx!\n";
	struct fix f;
	struct th_proc p;
	struct tap_tls_hello h;
	struct tlx_session *s;
	const char *why = NULL;
	char cmd[2048], req[4096], *log;
	size_t len = 0;
	uint16_t port;
	int lfd, fd;

	need("curl");
	fix_init(&f);
	lfd = th_listen(&port, 4);
	snprintf(cmd, sizeof(cmd),
		 "exec curl -sS --max-time 10 --cacert %s/ca.crt --resolve app.test:%u:127.0.0.1 "
		 "https://app.test:%u/path",
		 f.dir, port, port);
	cr_assert_eq(th_spawn(&p, (char *const[]){ "/bin/sh", "-c", cmd, NULL }, NULL), 0);
	s = serve_accept(&f, lfd, &fd, &h, &why);
	cr_expect_str_eq(h.sni, "app.test");
	cr_assert_eq(tth_sock_handshake(fd, s, &why, 5000), 1, "%s", why);
	cr_expect_str_eq(tlx_session_alpn(s), "http/1.1", "curl offered h2 and http/1.1");
	while (!memmem(req, len, "\r\n\r\n", 4)) {
		ssize_t n = tth_sock_read(fd, s, req + len, sizeof(req) - len, &why, 5000);

		cr_assert_gt(n, 0, "%s", why);
		len += (size_t)n;
	}
	cr_expect_eq(strncmp(req, "GET /path HTTP/1.1\r\n", 20), 0, "%.*s", (int)len, req);
	tth_sock_write(fd, s, resp, sizeof(resp) - 1);
	tlx_session_close(s);
	tth_sock_flush(fd, s);
	close(fd);
	cr_expect_eq(th_proc_wait(&p, 10000), 0, "curl exit status");
	log = th_proc_log(&p);
	cr_expect_str_eq(log, "hello from tlx!\n");
	free(log);
	tlx_session_free(s);
	close(lfd);
	fix_fini(&f);
}

/* A bare OpenSSL server context that issues TLS 1.3 tickets, with <dir>/srv.crt and .key. */
static SSL_CTX *ticket_ctx(const char *dir)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	cr_assert_not_null(ctx);
	cr_assert_eq(SSL_CTX_use_certificate_chain_file(ctx, tth_path(dir, "srv.crt")), 1);
	cr_assert_eq(SSL_CTX_use_PrivateKey_file(ctx, tth_path(dir, "srv.key"), SSL_FILETYPE_PEM),
		     1);
	return ctx;
}

/* One client handshake with <name> against a server on <ctx>; reads the tickets after. */
static bool resumes(struct fix *f, SSL_CTX *ctx, const char *name, bool alpn, int *hs)
{
	struct tth_end c, s;
	const char *why = NULL;
	char buf[16];
	bool resumed;

	client_end(&c, f->cli, name, alpn);
	tth_raw_client(&s, ctx, NULL);
	SSL_set_accept_state(s.ssl);
	tth_pump(&c, &s);
	*hs = c.hs;
	/* The tickets come after the handshake: reading takes them in. */
	if (c.hs == 1)
		cr_expect_eq(tlx_session_read(c.s, buf, sizeof(buf), &why), 0);
	resumed = tlx_session_resumed(c.s);
	tth_end_free(&c);
	tth_end_free(&s);
	return resumed;
}

Test(tlx_session, upstream_sessions_resume_per_name_and_never_across_names)
{
	struct tth_cert srv = { .cn = "app.example", .dns = "app.example", .not_before = -60,
				.not_after = 3600 };
	SSL_CTX *ctx;
	struct fix f;
	int hs;

	fix_init(&f);
	tth_make_cert(f.dir, "srv", &srv, "ca");
	ctx = ticket_ctx(f.dir);
	cr_expect_not(resumes(&f, ctx, "app.example", true, &hs), "first handshake resumed");
	cr_assert_eq(hs, 1);
	cr_expect(resumes(&f, ctx, "app.example", true, &hs), "second handshake did not resume");
	cr_assert_eq(hs, 1);
	/* Another ALPN offer: another key. */
	cr_expect_not(resumes(&f, ctx, "app.example", false, &hs));
	cr_assert_eq(hs, 1);
	/* Another name, same server: no session of app.example's, and its check still refuses. */
	cr_expect_not(resumes(&f, ctx, "other.example", true, &hs));
	cr_expect_eq(hs, -EPERM, "a name the certificate does not have got through");
	/* app.example's session is still there for it. */
	cr_expect(resumes(&f, ctx, "app.example", true, &hs));
	cr_assert_eq(hs, 1);
	SSL_CTX_free(ctx);
	fix_fini(&f);
}
