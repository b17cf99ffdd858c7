/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kernel TLS (kTLS): the probe (attaching the "tls" ULP to a loopback
 * socket), and the sending half of a TLS 1.3 session handed to the kernel:
 * the traffic secret kept from OpenSSL's keylog callback, expanded into key
 * and IV (RFC 8446 7.3), given to setsockopt(SOL_TLS, TLS_TX).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>

#include "tls_int.h"
#include "tlx/ktls.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

int tlx_ktls_probe(const char **why)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int lfd, cfd = -1, ret;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd == -1)
		goto err_probe;
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == -1 || listen(lfd, 1) == -1 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len) == -1)
		goto err_close_lfd;
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cfd == -1 || connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) == -1)
		goto err_close_lfd;
	if (setsockopt(cfd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) == 0) {
		ret = 1;
	} else {
		/* ENOENT: the tls module is not built or cannot be loaded. */
		if (why)
			*why = errno == ENOENT ? "kernel has no tls module (TCP_ULP tls: ENOENT)" :
						 strerror(errno);
		ret = 0;
	}
	close(cfd);
	close(lfd);
	return ret;

err_close_lfd:
	ret = -errno;
	if (cfd != -1)
		close(cfd);
	close(lfd);
	if (why)
		*why = strerror(-ret);
	return ret;
err_probe:
	ret = -errno;
	if (why)
		*why = strerror(-ret);
	return ret;
}

/* The traffic secrets of one session: [0] what the client sends, [1] what the server sends. */
struct ktls_secrets {
	uint8_t secret[2][EVP_MAX_MD_SIZE];
	uint8_t len[2];
};

static pthread_once_t ex_once = PTHREAD_ONCE_INIT;
static int ex_index = -1;

static void secrets_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			 void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	OPENSSL_clear_free(ptr, sizeof(struct ktls_secrets));
}

static void ex_init(void)
{
	ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, secrets_free);
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* "LABEL <client random> <secret>", in hex: keeps the application traffic secrets. */
static void keylog(const SSL *cssl, const char *line)
{
	SSL *ssl = (SSL *)cssl; /* ex_data is the session's own, set once */
	struct ktls_secrets *ks;
	const char *hex;
	unsigned side;
	size_t n = 0;

	if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0)
		side = 0;
	else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0)
		side = 1;
	else
		return;
	hex = strchr(line + 24, ' ');
	if (!hex || ex_index < 0)
		return;
	ks = SSL_get_ex_data(ssl, ex_index);
	if (!ks) {
		ks = OPENSSL_zalloc(sizeof(*ks));
		if (!ks || !SSL_set_ex_data(ssl, ex_index, ks)) {
			OPENSSL_free(ks);
			return;
		}
	}
	for (hex++; hex[0] && hex[1] && n < sizeof(ks->secret[side]); hex += 2) {
		int hi = hex_value(hex[0]), lo = hex_value(hex[1]);

		if (hi < 0 || lo < 0)
			break;
		ks->secret[side][n++] = (uint8_t)(hi << 4 | lo);
	}
	ks->len[side] = (uint8_t)n;
}

void tlx_ktls_keep_secrets_server(struct tlx_server *srv)
{
	pthread_once(&ex_once, ex_init);
	SSL_CTX_set_keylog_callback(srv->ctx, keylog);
}

void tlx_ktls_keep_secrets_client(struct tlx_client *cli)
{
	pthread_once(&ex_once, ex_init);
	SSL_CTX_set_keylog_callback(cli->ctx, keylog);
}

/* HKDF-Expand-Label(secret, label, "", len) of RFC 8446 7.1. Returns 0 or -1. */
static int expand_label(const EVP_MD *md, const uint8_t *secret, size_t slen, const char *label,
			uint8_t *out, size_t len)
{
	uint8_t info[2 + 1 + 6 + 16 + 1];
	size_t llen = strlen(label), n = 0;
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY, ret = -1;
	OSSL_PARAM params[5];
	EVP_KDF_CTX *kctx;
	EVP_KDF *kdf;

	info[n++] = (uint8_t)(len >> 8);
	info[n++] = (uint8_t)len;
	info[n++] = (uint8_t)(6 + llen);
	memcpy(info + n, "tls13 ", 6);
	n += 6;
	memcpy(info + n, label, llen);
	n += llen;
	info[n++] = 0; /* no context */
	kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
						     (char *)EVP_MD_get0_name(md), 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, slen);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, n);
	params[3] = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
	params[4] = OSSL_PARAM_construct_end();
	if (kctx && EVP_KDF_derive(kctx, out, len, params) == 1)
		ret = 0;
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	return ret;
}

int tlx_ktls_tx_info(const struct tlx_session *s, struct tlx_ktls_info *info, const char **why)
{
	SSL *ssl = tlx__session_ssl(s);
	const struct ktls_secrets *ks;
	const SSL_CIPHER *cipher;
	uint8_t key[32], iv[12];
	size_t key_len;
	unsigned side;
	uint16_t type;
	int ret = 0;

	memset(info, 0, sizeof(*info));
	if (!SSL_is_init_finished(ssl)) {
		*why = "the handshake is not complete";
		return -ENOTCONN;
	}
	if (SSL_version(ssl) != TLS1_3_VERSION) {
		*why = "kTLS is used for TLS 1.3 only";
		return -EOPNOTSUPP;
	}
	cipher = SSL_get_current_cipher(ssl);
	switch (cipher ? SSL_CIPHER_get_id(cipher) & 0xffff : 0) {
	case 0x1301:
		type = TLS_CIPHER_AES_GCM_128;
		key_len = TLS_CIPHER_AES_GCM_128_KEY_SIZE;
		info->len = sizeof(info->u.aes128);
		break;
	case 0x1302:
		type = TLS_CIPHER_AES_GCM_256;
		key_len = TLS_CIPHER_AES_GCM_256_KEY_SIZE;
		info->len = sizeof(info->u.aes256);
		break;
	case 0x1303:
		type = TLS_CIPHER_CHACHA20_POLY1305;
		key_len = TLS_CIPHER_CHACHA20_POLY1305_KEY_SIZE;
		info->len = sizeof(info->u.chacha);
		break;
	default:
		*why = "the cipher suite is not one kTLS takes";
		return -EOPNOTSUPP;
	}
	side = SSL_is_server(ssl) ? 1 : 0;
	ks = ex_index < 0 ? NULL : SSL_get_ex_data(ssl, ex_index);
	if (!ks || !ks->len[side]) {
		*why = "the traffic secret was not kept (tlx_ktls_keep_secrets)";
		return -ENOKEY;
	}
	if (expand_label(SSL_CIPHER_get_handshake_digest(cipher), ks->secret[side], ks->len[side],
			 "key", key, key_len) < 0 ||
	    expand_label(SSL_CIPHER_get_handshake_digest(cipher), ks->secret[side], ks->len[side],
			 "iv", iv, sizeof(iv)) < 0) {
		*why = "HKDF-Expand-Label failed";
		ret = -EIO;
		goto out;
	}
	info->u.info.version = TLS_1_3_VERSION;
	info->u.info.cipher_type = type;
	/* The record sequence starts at 0: nothing was sent under these keys yet. */
	switch (type) {
	case TLS_CIPHER_AES_GCM_128:
		memcpy(info->u.aes128.salt, iv, 4);
		memcpy(info->u.aes128.iv, iv + 4, 8);
		memcpy(info->u.aes128.key, key, key_len);
		break;
	case TLS_CIPHER_AES_GCM_256:
		memcpy(info->u.aes256.salt, iv, 4);
		memcpy(info->u.aes256.iv, iv + 4, 8);
		memcpy(info->u.aes256.key, key, key_len);
		break;
	default:
		memcpy(info->u.chacha.iv, iv, 12);
		memcpy(info->u.chacha.key, key, key_len);
		break;
	}
out:
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(iv, sizeof(iv));
	return ret;
}

int tlx_ktls_tx(const struct tlx_session *s, int fd, const char **why)
{
	struct tlx_ktls_info info;
	int ret = tlx_ktls_tx_info(s, &info, why);

	if (ret < 0)
		return ret;
	if (setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) == -1) {
		ret = -errno;
		*why = "the kernel refused the tls ULP on this socket";
	} else if (setsockopt(fd, SOL_TLS, TLS_TX, &info.u, info.len) == -1) {
		ret = -errno;
		*why = "the kernel refused the key (TLS_TX): the socket stays in userspace";
	}
	OPENSSL_cleanse(&info, sizeof(info));
	return ret;
}

int tlx_ktls_close_notify(int fd)
{
	unsigned char alert[2] = { 1, 0 }; /* warning, close_notify */
	char control[CMSG_SPACE(sizeof(unsigned char))];
	struct iovec iov = { alert, sizeof(alert) };
	struct msghdr msg = { 0 };
	struct cmsghdr *cmsg;

	memset(control, 0, sizeof(control));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control;
	msg.msg_controllen = sizeof(control);
	cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_TLS;
	cmsg->cmsg_type = TLS_SET_RECORD_TYPE;
	cmsg->cmsg_len = CMSG_LEN(sizeof(unsigned char));
	*CMSG_DATA(cmsg) = 21; /* alert */
	if (sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) == -1)
		return -errno;
	return 0;
}
