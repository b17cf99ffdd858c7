/* SPDX-License-Identifier: Apache-2.0 */
/* The CA: loading and creating one, checking names, and minting leaf certificates with it. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "tls_int.h"

#define FILE_MAX (1 << 20)
#define CA_DAYS_MAX 36500
#define CN_MAX 64 /* ub-common-name (RFC 5280) */

__attribute__((weak)) time_t tlx__now(void)
{
	return time(NULL);
}

void tlx__err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

const char *tlx__ssl_reason(void)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	ERR_clear_error();
	return r ? r : "unknown OpenSSL error";
}

int tlx__read_file(const char *path, char **buf, size_t *len)
{
	struct stat st;
	size_t got = 0;
	char *b;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return -errno;
	if (fstat(fd, &st) == -1) {
		ret = -errno;
		goto err_close_fd;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -EISDIR;
		goto err_close_fd;
	}
	if (st.st_size > FILE_MAX) {
		ret = -EFBIG;
		goto err_close_fd;
	}
	b = malloc((size_t)st.st_size + 1);
	if (!b) {
		ret = -ENOMEM;
		goto err_close_fd;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, b + got, (size_t)st.st_size - got);

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n ? -errno : -EIO;
			goto err_free_buf;
		}
		got += (size_t)n;
	}
	close(fd);
	b[got] = '\0';
	*buf = b;
	*len = got;
	return 0;

err_free_buf:
	OPENSSL_cleanse(b, got);
	free(b);
err_close_fd:
	close(fd);
	return ret;
}

/* The time of an ASN1_TIME as seconds since the epoch; 0 when it cannot be read. */
static time_t asn1_time(const ASN1_TIME *t)
{
	struct tm tm;

	if (!t || !ASN1_TIME_to_tm(t, &tm))
		return 0;
	return timegm(&tm);
}

static const char *date(time_t t, char *buf, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
	return buf;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

int tlx__read_key(const char *path, EVP_PKEY **key, char *err, size_t errlen)
{
	char *pem;
	size_t len;
	BIO *bio;
	int ret;

	ret = tlx__read_file(path, &pem, &len);
	if (ret) {
		tlx__err(err, errlen, "%s: cannot read: %s", path, strerror(-ret));
		return ret;
	}
	bio = BIO_new_mem_buf(pem, (int)len);
	*key = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) : NULL;
	BIO_free(bio);
	OPENSSL_cleanse(pem, len);
	free(pem);
	if (!*key) {
		tlx__err(err, errlen,
			 "%s: no PEM private key in it (%s; encrypted keys are not supported)",
			 path, tlx__ssl_reason());
		return -EINVAL;
	}
	return 0;
}

static int read_cert(const char *path, X509 **cert, char *err, size_t errlen)
{
	char *pem;
	size_t len;
	BIO *bio;
	int ret;

	ret = tlx__read_file(path, &pem, &len);
	if (ret) {
		tlx__err(err, errlen, "%s: cannot read: %s", path, strerror(-ret));
		return ret;
	}
	bio = BIO_new_mem_buf(pem, (int)len);
	*cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	free(pem);
	if (!*cert) {
		tlx__err(err, errlen, "%s: no PEM certificate in it (%s)", path, tlx__ssl_reason());
		return -EINVAL;
	}
	return 0;
}

int tlx_ca_load(const char *cert_path, const char *key_path, struct tlx_ca **out, char *err,
		size_t errlen)
{
	struct tlx_ca *ca;
	char when[64];
	time_t now = tlx__now();
	int ret;

	ca = calloc(1, sizeof(*ca));
	if (!ca) {
		tlx__err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ret = read_cert(cert_path, &ca->cert, err, errlen);
	if (ret)
		goto err_free_ca;
	/* X509_check_ca() also says yes to v1 roots: only basicConstraints CA:TRUE will do. */
	if (!(X509_get_extension_flags(ca->cert) & EXFLAG_CA)) {
		tlx__err(err, errlen, "%s: not a CA certificate (no basicConstraints CA:TRUE)",
			 cert_path);
		ret = -EINVAL;
		goto err_free_ca;
	}
	if ((X509_get_extension_flags(ca->cert) & EXFLAG_KUSAGE) &&
	    !(X509_get_key_usage(ca->cert) & KU_KEY_CERT_SIGN)) {
		tlx__err(err, errlen, "%s: the CA's keyUsage does not allow keyCertSign",
			 cert_path);
		ret = -EINVAL;
		goto err_free_ca;
	}
	ca->not_before = asn1_time(X509_get0_notBefore(ca->cert));
	ca->not_after = asn1_time(X509_get0_notAfter(ca->cert));
	if (ca->not_after <= now) {
		tlx__err(err, errlen, "%s: the CA certificate expired on %s", cert_path,
			 date(ca->not_after, when, sizeof(when)));
		ret = -EKEYEXPIRED;
		goto err_free_ca;
	}
	if (ca->not_before > now) {
		tlx__err(err, errlen, "%s: the CA certificate is not valid before %s", cert_path,
			 date(ca->not_before, when, sizeof(when)));
		ret = -EKEYEXPIRED;
		goto err_free_ca;
	}
	ret = tlx__read_key(key_path, &ca->key, err, errlen);
	if (ret)
		goto err_free_ca;
	if (X509_check_private_key(ca->cert, ca->key) != 1) {
		ERR_clear_error();
		tlx__err(err, errlen, "%s: the key does not match the certificate in %s", key_path,
			 cert_path);
		ret = -EINVAL;
		goto err_free_ca;
	}
	*out = ca;
	return 0;

err_free_ca:
	tlx_ca_free(ca);
	return ret;
}

void tlx_ca_free(struct tlx_ca *ca)
{
	if (!ca)
		return;
	X509_free(ca->cert);
	/* OpenSSL clears a private key's numbers when it frees them. */
	EVP_PKEY_free(ca->key);
	free(ca);
}

int tlx__serial_set(X509 *x)
{
	unsigned char b[16];
	BIGNUM *bn;
	int ok;

	if (RAND_bytes(b, sizeof(b)) != 1)
		return -1;
	/* Positive (top bit clear) and 127 bits long: never fewer than 64 random bits (CA/B BR). */
	b[0] = (unsigned char)((b[0] & 0x7f) | 0x40);
	bn = BN_bin2bn(b, sizeof(b), NULL);
	ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
	BN_free(bn);
	return ok ? 0 : -1;
}

enum tlx_name_kind tlx__name_check(const char *name, char *canon, size_t len, const char **why)
{
	unsigned char addr[16];
	size_t n, label = 0;

	if (!name || !name[0]) {
		*why = "no name";
		return TLX_NAME_BAD;
	}
	n = strlen(name);
	if (inet_pton(AF_INET, name, addr) == 1)
		return inet_ntop(AF_INET, addr, canon, (socklen_t)len) ? TLX_NAME_IP : TLX_NAME_BAD;
	if (inet_pton(AF_INET6, name, addr) == 1)
		return inet_ntop(AF_INET6, addr, canon, (socklen_t)len) ? TLX_NAME_IP :
									  TLX_NAME_BAD;
	if (n > 253 || n >= len) {
		*why = "name longer than 253 bytes";
		return TLX_NAME_BAD;
	}
	for (size_t i = 0; i <= n; i++) {
		char c = name[i];

		if (c == '.' || c == '\0') {
			if (label == 0) {
				*why = "name has an empty label";
				return TLX_NAME_BAD;
			}
			label = 0;
			canon[i] = c;
			continue;
		}
		if (c == '*') {
			*why = "wildcard names are not minted";
			return TLX_NAME_BAD;
		}
		/* '_' is not a hostname character, but names with it exist and clients use them. */
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_')) {
			*why = "name has a character that is not a letter, digit, '-', '_' or '.'";
			return TLX_NAME_BAD;
		}
		if (++label > 63) {
			*why = "name has a label longer than 63 bytes";
			return TLX_NAME_BAD;
		}
		canon[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
	}
	return TLX_NAME_DNS;
}

/* Adds extension <nid> from its configuration text (the openssl.cnf syntax). */
static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	int ok;

	if (!ext)
		return -1;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

/* subjectAltName: one DNS name or one IP address, built directly (no string syntax to escape). */
static int add_san(X509 *x, const char *name, enum tlx_name_kind kind, bool critical)
{
	GENERAL_NAMES *gens = GENERAL_NAMES_new();
	GENERAL_NAME *gen = GENERAL_NAME_new();
	int ok = 0;

	if (!gens || !gen)
		goto out;
	if (kind == TLX_NAME_IP) {
		ASN1_OCTET_STRING *ip = a2i_IPADDRESS(name);

		if (!ip)
			goto out;
		GENERAL_NAME_set0_value(gen, GEN_IPADD, ip);
	} else {
		ASN1_IA5STRING *dns = ASN1_IA5STRING_new();

		if (!dns || !ASN1_STRING_set(dns, name, (int)strlen(name))) {
			ASN1_IA5STRING_free(dns);
			goto out;
		}
		GENERAL_NAME_set0_value(gen, GEN_DNS, dns);
	}
	if (!sk_GENERAL_NAME_push(gens, gen))
		goto out;
	gen = NULL;
	ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, critical, X509V3_ADD_DEFAULT) == 1;
out:
	GENERAL_NAME_free(gen);
	GENERAL_NAMES_free(gens);
	return ok ? 0 : -1;
}

/* Signs <x> with <key>: SHA-256, except for keys that bring their own digest (Ed25519). */
static int sign(X509 *x, EVP_PKEY *key)
{
	int id = EVP_PKEY_get_id(key);
	const EVP_MD *md = id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? NULL : EVP_sha256();

	return X509_sign(x, key, md) > 0 ? 0 : -1;
}

X509 *tlx__leaf_template(const struct tlx_ca *ca, EVP_PKEY *key)
{
	X509V3_CTX v3;
	X509 *x = X509_new();

	if (!x)
		return NULL;
	/* Serial and validity are each leaf's own; these only let the template encode. */
	if (!X509_set_version(x, 2) || !ASN1_INTEGER_set(X509_get_serialNumber(x), 1) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) ||
	    !ASN1_TIME_set(X509_getm_notBefore(x), ca->not_before) ||
	    !ASN1_TIME_set(X509_getm_notAfter(x), ca->not_before) || !X509_set_pubkey(x, key))
		goto err_free_x;
	X509V3_set_ctx(&v3, ca->cert, x, NULL, NULL, 0);
	if (add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") ||
	    add_ext(x, &v3, NID_key_usage, "critical,digitalSignature") ||
	    add_ext(x, &v3, NID_ext_key_usage, "serverAuth") ||
	    add_ext(x, &v3, NID_subject_key_identifier, "hash"))
		goto err_free_x;
	/* From the CA's subjectKeyIdentifier, which a CA made elsewhere may lack. */
	if (add_ext(x, &v3, NID_authority_key_identifier, "keyid"))
		ERR_clear_error();
	/* Signed, so that X509_dup() can encode it. */
	if (sign(x, ca->key))
		goto err_free_x;
	return x;

err_free_x:
	X509_free(x);
	return NULL;
}

X509 *tlx__leaf_mint(const struct tlx_ca *ca, const X509 *tmpl, const char *name,
		     enum tlx_name_kind kind, unsigned hours, time_t now, const char **why)
{
	X509_NAME *subj;
	time_t end;
	X509 *x;
	/* An empty subject needs a critical subjectAltName (RFC 5280 4.2.1.6). */
	bool cn = strlen(name) <= CN_MAX;

	if (now >= ca->not_after) {
		*why = "the CA certificate has expired";
		return NULL;
	}
	end = now + (time_t)hours * 3600;
	if (end > ca->not_after)
		end = ca->not_after; /* a leaf never outlives its issuer */
	/*
	 * From the template: OpenSSL 3.0 takes ~0.5 ms to encode a public key
	 * into a certificate (X509_set_pubkey), a third of that to copy one.
	 */
	x = X509_dup(tmpl);
	if (!x)
		goto err_ssl;
	subj = X509_get_subject_name(x);
	if (tlx__serial_set(x) ||
	    (cn && !X509_NAME_add_entry_by_NID(subj, NID_commonName, MBSTRING_ASC,
					       (const unsigned char *)name, -1, -1, 0)) ||
	    !ASN1_TIME_set(X509_getm_notBefore(x), now - 3600) ||
	    !ASN1_TIME_set(X509_getm_notAfter(x), end) || add_san(x, name, kind, !cn) ||
	    sign(x, ca->key))
		goto err_free_x;
	return x;

err_free_x:
	X509_free(x);
err_ssl:
	*why = tlx__ssl_reason();
	return NULL;
}

/* Opens <dir>/<file> for a new file with exactly <mode>, never over an existing one. */
static int create_excl(const char *dir, const char *file, mode_t mode, char *path, size_t len)
{
	int fd;

	snprintf(path, len, "%s/%s", dir, file);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd == -1)
		return -errno;
	/* The umask may have taken bits away: the modes are part of the contract. */
	if (fchmod(fd, mode) == -1) {
		int ret = -errno;

		close(fd);
		unlink(path);
		return ret;
	}
	return fd;
}

/* Writes the bytes of <bio> to <fd> and syncs them. */
static int write_bio(int fd, BIO *bio)
{
	char *p;
	long n = BIO_get_mem_data(bio, &p);

	while (n > 0) {
		ssize_t w = write(fd, p, (size_t)n);

		if (w == -1 && errno == EINTR)
			continue;
		if (w <= 0)
			return w ? -errno : -EIO;
		p += w;
		n -= w;
	}
	return fsync(fd) == -1 ? -errno : 0;
}

static X509 *ca_cert_new(EVP_PKEY *key, const char *cn, unsigned days)
{
	time_t now = tlx__now();
	X509V3_CTX v3;
	X509 *x = X509_new();

	if (!x)
		return NULL;
	if (!X509_set_version(x, 2) || tlx__serial_set(x) ||
	    !X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_commonName, MBSTRING_UTF8,
					(const unsigned char *)cn, -1, -1, 0) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(x)) ||
	    !ASN1_TIME_set(X509_getm_notBefore(x), now - 3600) ||
	    !ASN1_TIME_set(X509_getm_notAfter(x), now + (time_t)days * 86400) ||
	    !X509_set_pubkey(x, key))
		goto err_free_x;
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	/* pathlen:0: this CA signs leaves, never another CA. */
	if (add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
	    add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    add_ext(x, &v3, NID_subject_key_identifier, "hash") ||
	    add_ext(x, &v3, NID_authority_key_identifier, "keyid:always") || sign(x, key))
		goto err_free_x;
	return x;

err_free_x:
	X509_free(x);
	return NULL;
}

int tlx_ca_create(const char *dir, const char *common_name, unsigned days, char *err, size_t errlen)
{
	char key_path[4096], crt_path[4096];
	BIO *key_pem = NULL, *crt_pem = NULL;
	EVP_PKEY *key;
	struct stat st;
	X509 *x;
	int key_fd, crt_fd, dir_fd, ret;

	if (!common_name)
		common_name = "sidetap CA";
	if (days < 1 || days > CA_DAYS_MAX) {
		tlx__err(err, errlen, "days: %u is not from 1 to %u", days, CA_DAYS_MAX);
		return -EINVAL;
	}
	if (!common_name[0] || strlen(common_name) > CN_MAX) {
		tlx__err(err, errlen, "name: must be 1 to %u bytes", CN_MAX);
		return -EINVAL;
	}
	ret = stat(dir, &st) == -1 ? -errno : S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	if (ret) {
		tlx__err(err, errlen, "%s: %s", dir, strerror(-ret));
		return ret;
	}

	key = EVP_EC_gen("P-256");
	x = key ? ca_cert_new(key, common_name, days) : NULL;
	key_pem = BIO_new(BIO_s_secmem());
	crt_pem = BIO_new(BIO_s_mem());
	if (!x || !key_pem || !crt_pem ||
	    !PEM_write_bio_PrivateKey(key_pem, key, NULL, NULL, 0, NULL, NULL) ||
	    !PEM_write_bio_X509(crt_pem, x)) {
		tlx__err(err, errlen, "cannot make the CA: %s", tlx__ssl_reason());
		ret = -ENOMEM;
		goto free_pems;
	}

	key_fd = create_excl(dir, "ca.key", 0600, key_path, sizeof(key_path));
	if (key_fd < 0) {
		ret = key_fd;
		tlx__err(err, errlen, "%s: %s", key_path,
			 ret == -EEXIST ? "exists: refusing to overwrite it" : strerror(-ret));
		goto free_pems;
	}
	crt_fd = create_excl(dir, "ca.crt", 0644, crt_path, sizeof(crt_path));
	if (crt_fd < 0) {
		ret = crt_fd;
		tlx__err(err, errlen, "%s: %s", crt_path,
			 ret == -EEXIST ? "exists: refusing to overwrite it" : strerror(-ret));
		goto err_unlink_key;
	}
	ret = write_bio(key_fd, key_pem);
	if (!ret)
		ret = write_bio(crt_fd, crt_pem);
	if (ret) {
		tlx__err(err, errlen, "%s: cannot write: %s", dir, strerror(-ret));
		goto err_unlink_crt;
	}
	close(crt_fd);
	close(key_fd);
	/* The new names themselves are durable once the directory is synced. */
	dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd != -1) {
		fsync(dir_fd);
		close(dir_fd);
	}
	ret = 0;
	goto free_pems;

err_unlink_crt:
	close(crt_fd);
	unlink(crt_path);
err_unlink_key:
	close(key_fd);
	unlink(key_path);
free_pems:
	BIO_free(key_pem); /* secure memory: cleared when freed */
	BIO_free(crt_pem);
	X509_free(x);
	EVP_PKEY_free(key);
	return ret;
}
