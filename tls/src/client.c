/* SPDX-License-Identifier: Apache-2.0 */
/* Client contexts (originating TLS to an upstream): verifying, or not for the pod's own app. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "tls_int.h"

/*
 * TLS 1.2 suites an upstream may need, strong ones only: no RC4, 3DES, MD5,
 * export, anonymous or NULL suites. TLS 1.3's are OpenSSL's defaults.
 */
#define CLIENT_CIPHERS "HIGH:!aNULL:!eNULL:!3DES:!MD5:!RC4:!PSK:!SRP:!DSS:!CAMELLIA:!ARIA"

/* The upstream asked for a client certificate: remembered, and none sent (see session.c). */
static int client_cert_cb(SSL *ssl, X509 **x509, EVP_PKEY **pkey)
{
	bool *requested = SSL_get_app_data(ssl);

	(void)x509, (void)pkey;
	if (requested)
		*requested = true;
	return 0;
}

static int client_new(const char *ca_file, bool verify, struct tlx_client **out, char *err,
		      size_t errlen)
{
	struct tlx_client *cli = calloc(1, sizeof(*cli));
	char *pem;
	size_t len;
	int ret;

	if (!cli) {
		tlx__err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	cli->verify = verify;
	cli->ctx = SSL_CTX_new(TLS_client_method());
	if (!cli->ctx || tlx__ctx_harden(cli->ctx, CLIENT_CIPHERS)) {
		tlx__err(err, errlen, "cannot make a TLS client context: %s", tlx__ssl_reason());
		ret = -ENOMEM;
		goto err_free_cli;
	}
	/*
	 * Resumption with upstreams: a full handshake costs a chain check and a
	 * signature check more. Kept here, per name, never in OpenSSL's cache.
	 */
	pthread_mutex_init(&cli->lock, NULL);
	cli->resume = calloc(TLX_RESUME_SLOTS, sizeof(*cli->resume));
	if (!cli->resume) {
		tlx__err(err, errlen, "out of memory");
		ret = -ENOMEM;
		goto err_free_cli;
	}
	SSL_CTX_set_session_cache_mode(cli->ctx,
				       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(cli->ctx, tlx__session_new_cb);
	SSL_CTX_set_client_cert_cb(cli->ctx, client_cert_cb);
	if (!verify) {
		SSL_CTX_set_verify(cli->ctx, SSL_VERIFY_NONE, NULL);
		*out = cli;
		return 0;
	}
	SSL_CTX_set_verify(cli->ctx, SSL_VERIFY_PEER, NULL);
	if (!ca_file) {
		if (SSL_CTX_set_default_verify_paths(cli->ctx) != 1) {
			tlx__err(err, errlen, "cannot load the system's trust store: %s",
				 tlx__ssl_reason());
			ret = -EINVAL;
			goto err_free_cli;
		}
		*out = cli;
		return 0;
	}
	/* Read once here, for a message that names the file and what is wrong with it. */
	ret = tlx__read_file(ca_file, &pem, &len);
	if (ret) {
		tlx__err(err, errlen, "%s: cannot read: %s", ca_file, strerror(-ret));
		goto err_free_cli;
	}
	free(pem);
	if (SSL_CTX_load_verify_locations(cli->ctx, ca_file, NULL) != 1) {
		tlx__err(err, errlen, "%s: no PEM certificate in it (%s)", ca_file,
			 tlx__ssl_reason());
		ret = -EINVAL;
		goto err_free_cli;
	}
	*out = cli;
	return 0;

err_free_cli:
	tlx_client_free(cli);
	return ret;
}

int tlx_client_new(const char *ca_file, struct tlx_client **out, char *err, size_t errlen)
{
	return client_new(ca_file, true, out, err, errlen);
}

int tlx_client_new_noverify(struct tlx_client **out, char *err, size_t errlen)
{
	return client_new(NULL, false, out, err, errlen);
}

void tlx_client_free(struct tlx_client *cli)
{
	if (!cli)
		return;
	if (cli->resume) {
		for (unsigned i = 0; i < TLX_RESUME_SLOTS; i++)
			SSL_SESSION_free(cli->resume[i].sess);
		free(cli->resume);
		pthread_mutex_destroy(&cli->lock);
	}
	SSL_CTX_free(cli->ctx);
	free(cli);
}

static unsigned slot_of(const char *key)
{
	uint32_t h = 2166136261u;

	for (; *key; key++)
		h = (h ^ (uint8_t)*key) * 16777619u;
	return h % TLX_RESUME_SLOTS;
}

SSL_SESSION *tlx__resume_take(struct tlx_client *cli, const char *key)
{
	struct tlx_resume_slot *slot = &cli->resume[slot_of(key)];
	SSL_SESSION *sess = NULL;

	pthread_mutex_lock(&cli->lock);
	if (slot->sess && strcmp(slot->key, key) == 0) {
		sess = slot->sess;
		slot->sess = NULL;
	}
	pthread_mutex_unlock(&cli->lock);
	return sess;
}

void tlx__resume_put(struct tlx_client *cli, const char *key, SSL_SESSION *sess)
{
	struct tlx_resume_slot *slot = &cli->resume[slot_of(key)];
	SSL_SESSION *old;

	pthread_mutex_lock(&cli->lock);
	old = slot->sess;
	slot->sess = sess;
	snprintf(slot->key, sizeof(slot->key), "%s", key);
	pthread_mutex_unlock(&cli->lock);
	SSL_SESSION_free(old);
}
