/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of tls/src/ca.c: creating and loading a CA (files, modes, refusals
 * with their messages), and the leaves it mints, read back with OpenSSL's API
 * and with `openssl x509 -text` (TESTPLAN T3).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "th.h"
#include "tls_th.h"

static mode_t mode_of(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
	return st.st_mode & 07777;
}

static time_t asn1_epoch(const ASN1_TIME *t)
{
	struct tm tm;

	cr_assert(ASN1_TIME_to_tm(t, &tm));
	return timegm(&tm);
}

static bool ext_critical(X509 *x, int nid)
{
	int i = X509_get_ext_by_NID(x, nid, -1);

	cr_assert_geq(i, 0, "extension %s missing", OBJ_nid2sn(nid));
	return X509_EXTENSION_get_critical(X509_get_ext(x, i));
}

Test(tlx_ca, create_writes_a_p256_ca_with_the_modes_asked)
{
	const char *dir = tth_dir();
	char err[512] = "";
	mode_t old = umask(077); /* 0644 must hold whatever the umask */
	X509 *x;
	EVP_PKEY *pub;
	time_t now = time(NULL);
	char name[64];

	cr_assert_eq(tlx_ca_create(dir, "Acme sidetap CA", 10, err, sizeof(err)), 0, "%s", err);
	umask(old);
	cr_expect_eq(mode_of(tth_path(dir, "ca.key")), 0600);
	cr_expect_eq(mode_of(tth_path(dir, "ca.crt")), 0644);
	x = tth_read_cert(tth_path(dir, "ca.crt"));
	cr_expect(X509_get_extension_flags(x) & EXFLAG_CA, "CA:TRUE");
	cr_expect(ext_critical(x, NID_basic_constraints));
	cr_expect_eq(X509_get_pathlen(x), 0, "signs leaves only");
	cr_expect_eq(X509_get_key_usage(x), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	cr_expect(X509_get_extension_flags(x) & EXFLAG_SS, "self-signed");
	pub = X509_get0_pubkey(x);
	cr_expect_eq(X509_verify(x, pub), 1, "signed by its own key");
	cr_expect_eq(EVP_PKEY_get_id(pub), EVP_PKEY_EC);
	cr_assert(EVP_PKEY_get_group_name(pub, name, sizeof(name), NULL));
	cr_expect_str_eq(name, "prime256v1");
	cr_expect_eq(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, name, sizeof(name));
	cr_expect_str_eq(name, "Acme sidetap CA");
	cr_expect(labs(asn1_epoch(X509_get0_notBefore(x)) - (now - 3600)) < 60);
	cr_expect(labs(asn1_epoch(X509_get0_notAfter(x)) - (now + 10 * 86400)) < 60);
	X509_free(x);
	/* And the text a person reads. */
	cr_expect_eq(th_sh("openssl x509 -in %s/ca.crt -noout -text | grep -q 'CA:TRUE, pathlen:0'",
			   dir),
		     0);
	cr_expect_eq(th_sh("openssl pkey -in %s/ca.key -noout -check >/dev/null 2>&1", dir), 0);
}

Test(tlx_ca, create_refuses_to_overwrite_and_leaves_no_half)
{
	const char *dir = tth_dir();
	char err[512] = "";

	cr_assert_eq(tlx_ca_create(dir, NULL, 1, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(tlx_ca_create(dir, NULL, 1, err, sizeof(err)), -EEXIST);
	cr_expect(strstr(err, "ca.key: exists: refusing to overwrite it"), "%s", err);
	/* Only ca.crt there: refused, and no ca.key left behind. */
	cr_assert_eq(unlink(tth_path(dir, "ca.key")), 0);
	cr_assert_eq(tlx_ca_create(dir, NULL, 1, err, sizeof(err)), -EEXIST);
	cr_expect(strstr(err, "ca.crt: exists: refusing to overwrite it"), "%s", err);
	cr_expect_neq(access(tth_path(dir, "ca.key"), F_OK), 0, "no half-made CA");
	/* A symlink named ca.key is not followed. */
	cr_assert_eq(unlink(tth_path(dir, "ca.crt")), 0);
	cr_assert_eq(symlink("/tmp/elsewhere", tth_path(dir, "ca.key")), 0);
	cr_expect_eq(tlx_ca_create(dir, NULL, 1, err, sizeof(err)), -EEXIST);
}

Test(tlx_ca, create_refuses_bad_arguments_with_a_message)
{
	const char *dir = tth_dir();
	char err[512] = "", file[512], big[80];

	cr_expect_eq(tlx_ca_create(dir, NULL, 0, err, sizeof(err)), -EINVAL);
	cr_expect_str_eq(err, "days: 0 is not from 1 to 36500");
	cr_expect_eq(tlx_ca_create(dir, NULL, 36501, err, sizeof(err)), -EINVAL);
	memset(big, 'x', 65);
	big[65] = '\0';
	cr_expect_eq(tlx_ca_create(dir, big, 1, err, sizeof(err)), -EINVAL);
	cr_expect_str_eq(err, "name: must be 1 to 64 bytes");
	cr_expect_eq(tlx_ca_create(dir, "", 1, err, sizeof(err)), -EINVAL);
	snprintf(file, sizeof(file), "%s/missing", dir);
	cr_expect_eq(tlx_ca_create(file, NULL, 1, err, sizeof(err)), -ENOENT);
	cr_expect(strstr(err, "missing: No such file or directory"), "%s", err);
	snprintf(file, sizeof(file), "%s/file", dir);
	cr_assert_eq(th_sh("touch %s", file), 0);
	cr_expect_eq(tlx_ca_create(file, NULL, 1, err, sizeof(err)), -ENOTDIR);
	cr_expect_eq(access(tth_path(dir, "ca.key"), F_OK), -1, "nothing written");
}

static int load(const char *dir, const char *crt, const char *key, char *err, size_t len)
{
	struct tlx_ca *ca = NULL;
	int ret = tlx_ca_load(tth_path(dir, crt), tth_path(dir, key), &ca, err, len);

	cr_assert(ret ? ca == NULL : ca != NULL);
	tlx_ca_free(ca);
	return ret;
}

Test(tlx_ca, load_refuses_what_cannot_sign_with_a_message_naming_the_file)
{
	const char *dir = tth_dir();
	char err[512] = "";
	struct tth_cert leaf = {
		.cn = "leaf", .dns = "leaf.test", .not_before = -60, .not_after = 3600
	};
	struct tth_cert old = {
		.cn = "old CA", .ca = true, .not_before = -7200, .not_after = -3600
	};
	struct tth_cert future = {
		.cn = "future CA", .ca = true, .not_before = 3600, .not_after = 7200
	};
	struct tth_cert no_sign = { .cn = "no sign",
				    .ca = true,
				    .no_key_cert_sign = true,
				    .not_before = -60,
				    .not_after = 3600 };

	cr_assert_eq(tlx_ca_create(dir, NULL, 1, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(load(dir, "ca.crt", "ca.key", err, sizeof(err)), 0, "%s", err);
	tth_make_cert(dir, "leaf", &leaf, "ca");
	tth_make_cert(dir, "old", &old, NULL);
	tth_make_cert(dir, "future", &future, NULL);
	tth_make_cert(dir, "nosign", &no_sign, NULL);

	cr_expect_eq(load(dir, "leaf.crt", "leaf.key", err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "leaf.crt: not a CA certificate (no basicConstraints CA:TRUE)"), "%s",
		  err);
	cr_expect_eq(load(dir, "old.crt", "old.key", err, sizeof(err)), -EKEYEXPIRED);
	cr_expect(strstr(err, "old.crt: the CA certificate expired on 20"), "%s", err);
	cr_expect_eq(load(dir, "future.crt", "future.key", err, sizeof(err)), -EKEYEXPIRED);
	cr_expect(strstr(err, "future.crt: the CA certificate is not valid before 20"), "%s", err);
	cr_expect_eq(load(dir, "nosign.crt", "nosign.key", err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "nosign.crt: the CA's keyUsage does not allow keyCertSign"), "%s",
		  err);
	cr_expect_eq(load(dir, "ca.crt", "leaf.key", err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "leaf.key: the key does not match the certificate in "), "%s", err);
	cr_expect_eq(load(dir, "missing.crt", "ca.key", err, sizeof(err)), -ENOENT);
	cr_expect(strstr(err, "missing.crt: cannot read: No such file or directory"), "%s", err);
	cr_expect_eq(load(dir, "ca.crt", "missing.key", err, sizeof(err)), -ENOENT);
	cr_expect(strstr(err, "missing.key: cannot read"), "%s", err);
	cr_expect_eq(load(dir, ".", "ca.key", err, sizeof(err)), -EISDIR);
	/* Swapped: the key file where the certificate goes, and the other way round. */
	cr_expect_eq(load(dir, "ca.key", "ca.crt", err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "ca.key: no PEM certificate in it"), "%s", err);
	cr_assert_eq(th_sh("openssl pkey -in %s/ca.key -aes256 -passout pass:x -out %s/enc.key",
			   dir, dir),
		     0);
	cr_expect_eq(load(dir, "ca.crt", "enc.key", err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "enc.key: no PEM private key in it") &&
			  strstr(err, "encrypted keys are not supported"),
		  "%s", err);
}

/* A minting server on a new CA, and the leaf it presents for <name>. */
static X509 *mint(const char *dir, unsigned hours, const char *name, struct tlx_ca **ca)
{
	struct tlx_server *srv;
	struct tlx_session *s;
	const char *why = NULL;
	char err[256];
	X509 *x;

	*ca = tth_ca(dir);
	cr_assert_eq(tlx_server_new_minting(*ca, hours, 16, &srv, err, sizeof(err)), 0, "%s", err);
	s = tlx_session_server(srv, name, &why);
	cr_assert_not_null(s, "%s: %s", name, why);
	x = tth_session_cert(s, false);
	tlx_session_free(s);
	tlx_server_free(srv);
	return x;
}

Test(tlx_ca, minted_leaf_has_every_property_openssl_api)
{
	const char *dir = tth_dir();
	struct tlx_ca *ca;
	time_t now = time(NULL);
	X509 *x = mint(dir, 24, "api.example.com", &ca), *cax;
	GENERAL_NAMES *san;
	const GENERAL_NAME *gen;
	BIGNUM *serial;
	char cn[80], group[64];
	X509_STORE *store;
	X509_STORE_CTX *vctx;

	/* SAN: exactly the name, as a DNS name. */
	san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	cr_assert_not_null(san);
	cr_assert_eq(sk_GENERAL_NAME_num(san), 1);
	gen = sk_GENERAL_NAME_value(san, 0);
	cr_assert_eq(gen->type, GEN_DNS);
	cr_expect_eq(ASN1_STRING_length(gen->d.dNSName), 15);
	cr_expect_eq(memcmp(ASN1_STRING_get0_data(gen->d.dNSName), "api.example.com", 15), 0);
	GENERAL_NAMES_free(san);
	cr_expect_eq(X509_check_host(x, "api.example.com", 0, 0, NULL), 1);
	cr_expect_neq(X509_check_host(x, "other.example.com", 0, 0, NULL), 1);
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
	cr_expect_str_eq(cn, "api.example.com");

	/* Serial: positive, at least 64 bits (127 here). */
	serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	cr_expect_not(BN_is_negative(serial));
	cr_expect_geq(BN_num_bits(serial), 64, "%d bits", BN_num_bits(serial));
	BN_free(serial);

	/* Not a CA, critical; digitalSignature only; serverAuth only. */
	cr_expect(X509_get_extension_flags(x) & EXFLAG_BCONS);
	cr_expect_not(X509_get_extension_flags(x) & EXFLAG_CA);
	cr_expect(ext_critical(x, NID_basic_constraints));
	cr_expect_eq(X509_check_ca(x), 0);
	cr_expect_eq(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE);
	cr_expect(ext_critical(x, NID_key_usage));
	cr_expect_eq(X509_get_extended_key_usage(x), XKU_SSL_SERVER);
	cr_expect_eq(X509_get_version(x), 2, "v3");

	/* Validity: from an hour ago, for the hours asked. */
	cr_expect(labs(asn1_epoch(X509_get0_notBefore(x)) - (now - 3600)) < 60);
	cr_expect(labs(asn1_epoch(X509_get0_notAfter(x)) - (now + 24 * 3600)) < 60);

	/* ECDSA P-256 key, signed ECDSA with SHA-256 by the CA, which verifies the chain. */
	cr_expect_eq(EVP_PKEY_get_id(X509_get0_pubkey(x)), EVP_PKEY_EC);
	cr_assert(EVP_PKEY_get_group_name(X509_get0_pubkey(x), group, sizeof(group), NULL));
	cr_expect_str_eq(group, "prime256v1");
	cr_expect_eq(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
	cax = tth_read_cert(tth_path(dir, "ca.crt"));
	cr_expect_eq(X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(cax)), 0);
	cr_expect_eq(X509_verify(x, X509_get0_pubkey(cax)), 1);
	store = X509_STORE_new();
	X509_STORE_add_cert(store, cax);
	vctx = X509_STORE_CTX_new();
	X509_STORE_CTX_init(vctx, store, x, NULL);
	X509_STORE_CTX_set_purpose(vctx, X509_PURPOSE_SSL_SERVER);
	cr_expect_eq(X509_verify_cert(vctx), 1, "%s",
		     X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx)));
	X509_STORE_CTX_free(vctx);
	X509_STORE_free(store);
	X509_free(cax);
	X509_free(x);
	tlx_ca_free(ca);
}

/* Writes <x> as PEM and returns `openssl x509 -text -noout` of it (malloc'd). */
static char *x509_text(const char *dir, X509 *x)
{
	char path[512], cmd[1100], *text = malloc(65536);
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "%s/leaf.pem", dir);
	f = fopen(path, "w");
	cr_assert(f && PEM_write_X509(f, x));
	fclose(f);
	snprintf(cmd, sizeof(cmd), "openssl x509 -in %s -noout -text", path);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	n = fread(text, 1, 65535, f);
	text[n] = '\0';
	cr_assert_eq(pclose(f), 0);
	return text;
}

/* The bytes of the serial as `openssl x509 -text` prints it ("Serial Number:\n    7d:1c:..."). */
static int serial_bytes(const char *text)
{
	const char *p = strstr(text, "Serial Number:");
	int n = 0;

	cr_assert_not_null(p);
	p = strchr(p, '\n') + 1;
	while (*p == ' ')
		p++;
	for (; *p && *p != '\n'; p++)
		if (*p == ':')
			n++;
	return n + 1;
}

Test(tlx_ca, minted_leaf_as_openssl_x509_text_shows_it)
{
	const char *dir = tth_dir();
	struct tlx_ca *ca;
	X509 *x = mint(dir, 12, "shop.example.org", &ca);
	char *t = x509_text(dir, x);

	cr_expect(strstr(t, "DNS:shop.example.org"), "%s", t);
	cr_expect(strstr(t, "Subject: CN = shop.example.org"), "%s", t);
	cr_expect(strstr(t, "Issuer: CN = test CA"), "%s", t);
	cr_expect(strstr(t, "X509v3 Basic Constraints: critical\n                CA:FALSE"), "%s",
		  t);
	cr_expect(strstr(t, "X509v3 Key Usage: critical\n                Digital Signature\n"),
		  "%s", t);
	cr_expect(strstr(t, "X509v3 Extended Key Usage: \n                TLS Web Server "
			    "Authentication\n"),
		  "%s", t);
	cr_expect(strstr(t, "Signature Algorithm: ecdsa-with-SHA256"), "%s", t);
	cr_expect(strstr(t, "ASN1 OID: prime256v1") && strstr(t, "NIST CURVE: P-256"), "%s", t);
	cr_expect(strstr(t, "Version: 3 (0x2)"), "%s", t);
	cr_expect_geq(serial_bytes(t), 8, "64 bits at least: %s", t);
	cr_expect(strstr(t, "X509v3 Authority Key Identifier"), "%s", t);
	free(t);
	X509_free(x);
	tlx_ca_free(ca);
}

Test(tlx_ca, ip_literals_get_an_ip_san_and_long_names_no_cn)
{
	static const char *const ips[] = { "10.1.2.3", "2001:db8::1" };
	static const char *const want[] = { "IP Address:10.1.2.3",
					    "IP Address:2001:DB8:0:0:0:0:0:1" };
	const char *dir = tth_dir();
	char long_name[100];
	struct tlx_ca *ca;

	for (int i = 0; i < 2; i++) {
		X509 *x = mint(tth_dir(), 1, ips[i], &ca);
		char *t = x509_text(dir, x);

		cr_expect(strstr(t, want[i]), "%s", t);
		cr_expect_null(strstr(t, "DNS:"), "%s", t);
		cr_expect_eq(X509_check_ip_asc(x, ips[i], 0), 1);
		free(t);
		X509_free(x);
		tlx_ca_free(ca);
	}
	/* 65 bytes and more cannot be a commonName: SAN alone, critical (RFC 5280 4.2.1.6). */
	memset(long_name, 'a', 60);
	strcpy(long_name + 60, ".example.com");
	{
		X509 *x = mint(tth_dir(), 1, long_name, &ca);
		char *t = x509_text(dir, x);

		cr_expect(strstr(t, "X509v3 Subject Alternative Name: critical"), "%s", t);
		cr_expect_eq(X509_NAME_entry_count(X509_get_subject_name(x)), 0);
		cr_expect_eq(X509_check_host(x, long_name, 0, 0, NULL), 1);
		free(t);
		X509_free(x);
		tlx_ca_free(ca);
	}
}

static int serial_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 17);
}

/* Reads a DER length at *<p>; moves past it. */
static size_t der_len(const unsigned char **p)
{
	size_t n = *(*p)++;

	if (n & 0x80) {
		unsigned k = n & 0x7f;

		for (n = 0; k--;)
			n = n << 8 | *(*p)++;
	}
	return n;
}

/*
 * The serial of the certificate the session presents, straight from its DER
 * (Certificate, TBSCertificate, [0] version, serial): parsing the whole
 * certificate would decode its key, which OpenSSL 3.0 takes long for.
 * Writes the INTEGER's content bytes (sign byte included) into <out>, and
 * returns their number.
 */
static size_t session_serial(const struct tlx_session *s, unsigned char *out, size_t cap)
{
	char pem[4096], b64[4096];
	unsigned char der[3072];
	const unsigned char *p = der;
	size_t n = 0, len;
	char *line;

	cr_assert_gt(tlx_session_cert_pem(s, false, pem, sizeof(pem)), 0);
	for (line = strtok(pem, "\n"); line; line = strtok(NULL, "\n"))
		if (line[0] != '-')
			n += (size_t)sprintf(b64 + n, "%s", line);
	cr_assert_gt(EVP_DecodeBlock(der, (unsigned char *)b64, (int)n), 0);
	cr_assert_eq(*p++, 0x30);
	der_len(&p);
	cr_assert_eq(*p++, 0x30);
	der_len(&p);
	cr_assert_eq(*p++, 0xa0, "explicit version");
	p += der_len(&p);
	cr_assert_eq(*p++, 0x02, "serial INTEGER");
	len = der_len(&p);
	cr_assert_leq(len, cap);
	memcpy(out, p, len);
	return len;
}

Test(tlx_ca, serials_are_unique_over_many_leaves, .timeout = 120)
{
	enum { N = 10000 };
	const char *dir = tth_dir();
	struct tlx_ca *ca = tth_ca(dir);
	struct tlx_server *srv;
	unsigned char(*serials)[17] = calloc(N, 17);
	char err[256], name[64];
	uint64_t t0 = th_now_ms();

	/* No cache: every session mints. */
	cr_assert_eq(tlx_server_new_minting(ca, 1, 0, &srv, err, sizeof(err)), 0, "%s", err);
	for (int i = 0; i < N; i++) {
		const char *why;
		struct tlx_session *s;
		size_t len;

		snprintf(name, sizeof(name), "host%d.example.com", i % 7);
		s = tlx_session_server(srv, name, &why);
		cr_assert_not_null(s, "%s", why);
		len = session_serial(s, serials[i], 17);
		/* 16 content bytes, positive (top bit clear), and at least 64 bits (the 0x40 bit). */
		cr_assert_eq(len, 16, "serial of %zu bytes", len);
		cr_assert_eq(serials[i][0] & 0xc0, 0x40);
		tlx_session_free(s);
	}
	qsort(serials, N, 17, serial_cmp);
	for (int i = 1; i < N; i++)
		cr_assert_neq(memcmp(serials[i - 1], serials[i], 17), 0, "serial repeated");
	cr_log_info("%d leaves minted in %llu ms", N, (unsigned long long)(th_now_ms() - t0));
	free(serials);
	tlx_server_free(srv);
	tlx_ca_free(ca);
}
