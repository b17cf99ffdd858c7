/* SPDX-License-Identifier: Apache-2.0 */
/* Server contexts, terminating a client's TLS: minting leaves with a cache, or one fixed chain. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "tls_int.h"

/*
 * TLS 1.2 suites: forward secret, AEAD first, CBC kept for the few clients
 * without GCM; ECDSA for minted leaves, RSA for fixed certificates. TLS 1.3's
 * suites are OpenSSL's defaults (all AEAD).
 */
#define SERVER_CIPHERS                                                              \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                \
	"ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:" \
	"ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA"

int tlx__ctx_harden(SSL_CTX *ctx, const char *ciphers)
{
	/* No renegotiation at all (and secure renegotiation's extension still sent). */
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	/* Many idle connections: their read and write buffers go back while idle. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_cipher_list(ctx, ciphers))
		return -1;
	return 0;
}

/* ALPN: http/1.1 when the client offers it, else no protocol (what capture can parse). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char http11[] = "\x08http/1.1";
	unsigned char *sel;

	(void)ssl, (void)arg;
	if (SSL_select_next_proto(&sel, outlen, http11, sizeof(http11) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static struct tlx_server *server_new(char *err, size_t errlen)
{
	struct tlx_server *srv = calloc(1, sizeof(*srv));

	if (!srv) {
		tlx__err(err, errlen, "out of memory");
		return NULL;
	}
	srv->ctx = SSL_CTX_new(TLS_server_method());
	if (!srv->ctx || tlx__ctx_harden(srv->ctx, SERVER_CIPHERS)) {
		tlx__err(err, errlen, "cannot make a TLS server context: %s", tlx__ssl_reason());
		SSL_CTX_free(srv->ctx);
		free(srv);
		return NULL;
	}
	SSL_CTX_set_options(srv->ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
	/* No resumption for now: no tickets (TLS 1.3 and 1.2), no session cache. */
	SSL_CTX_set_num_tickets(srv->ctx, 0);
	SSL_CTX_set_session_cache_mode(srv->ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_alpn_select_cb(srv->ctx, alpn_select, NULL);
	pthread_mutex_init(&srv->lock, NULL);
	return srv;
}

int tlx_server_new_minting(struct tlx_ca *ca, unsigned leaf_hours, unsigned cache,
			   struct tlx_server **out, char *err, size_t errlen)
{
	struct tlx_server *srv;

	if (leaf_hours == 0) {
		tlx__err(err, errlen, "leaf_hours: must be at least 1");
		return -EINVAL;
	}
	srv = server_new(err, errlen);
	if (!srv)
		return -ENOMEM;
	srv->ca = ca;
	srv->leaf_hours = leaf_hours;
	srv->cache_max = cache;
	srv->leaf_key = EVP_EC_gen("P-256");
	if (srv->leaf_key)
		srv->leaf_tmpl = tlx__leaf_template(ca, srv->leaf_key);
	if (!srv->leaf_tmpl) {
		tlx__err(err, errlen, "cannot make the leaves' key: %s", tlx__ssl_reason());
		goto err_free_srv;
	}
	if (cache) {
		/* Twice as many buckets as entries, a power of two. */
		srv->nbuckets = 16;
		while (srv->nbuckets < 2 * cache && srv->nbuckets < (1u << 24))
			srv->nbuckets *= 2;
		srv->buckets = calloc(srv->nbuckets, sizeof(*srv->buckets));
		if (!srv->buckets) {
			tlx__err(err, errlen, "out of memory for a cache of %u leaves", cache);
			goto err_free_srv;
		}
	}
	*out = srv;
	return 0;

err_free_srv:
	tlx_server_free(srv);
	return -ENOMEM;
}

int tlx_server_new_fixed(const char *cert_path, const char *key_path, struct tlx_server **out,
			 char *err, size_t errlen)
{
	struct tlx_server *srv;
	EVP_PKEY *key = NULL;
	X509 *cert;
	char *pem;
	size_t len;
	int ret;

	srv = server_new(err, errlen);
	if (!srv)
		return -ENOMEM;
	/* Read once here, for a message that names the file and says what is wrong with it. */
	ret = tlx__read_file(cert_path, &pem, &len);
	if (ret) {
		tlx__err(err, errlen, "%s: cannot read: %s", cert_path, strerror(-ret));
		goto err_free_srv;
	}
	free(pem);
	if (SSL_CTX_use_certificate_chain_file(srv->ctx, cert_path) != 1) {
		tlx__err(err, errlen, "%s: no PEM certificate chain in it (%s)", cert_path,
			 tlx__ssl_reason());
		ret = -EINVAL;
		goto err_free_srv;
	}
	ret = tlx__read_key(key_path, &key, err, errlen);
	if (ret)
		goto err_free_srv;
	cert = SSL_CTX_get0_certificate(srv->ctx);
	if (X509_check_private_key(cert, key) != 1) {
		ERR_clear_error();
		tlx__err(err, errlen, "%s: the key does not match the certificate in %s", key_path,
			 cert_path);
		ret = -EINVAL;
		goto err_free_key;
	}
	if (SSL_CTX_use_PrivateKey(srv->ctx, key) != 1) {
		tlx__err(err, errlen, "%s: %s", key_path, tlx__ssl_reason());
		ret = -EINVAL;
		goto err_free_key;
	}
	EVP_PKEY_free(key);
	*out = srv;
	return 0;

err_free_key:
	EVP_PKEY_free(key);
err_free_srv:
	tlx_server_free(srv);
	return ret;
}

void tlx_server_free(struct tlx_server *srv)
{
	struct tlx_leaf *l, *next;

	if (!srv)
		return;
	for (l = srv->head; l; l = next) {
		next = l->next;
		X509_free(l->cert);
		free(l);
	}
	free(srv->buckets);
	X509_free(srv->leaf_tmpl);
	EVP_PKEY_free(srv->leaf_key);
	SSL_CTX_free(srv->ctx);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
}

/* The leaf cache: a hash of canonical names, and an LRU list to evict from its tail. */

static unsigned name_hash(const char *name)
{
	uint32_t h = 2166136261u;

	for (; *name; name++)
		h = (h ^ (uint8_t)*name) * 16777619u;
	return h;
}

static struct tlx_leaf **bucket_of(struct tlx_server *srv, const char *name)
{
	return &srv->buckets[name_hash(name) & (srv->nbuckets - 1)];
}

static void lru_unlink(struct tlx_server *srv, struct tlx_leaf *l)
{
	if (l->prev)
		l->prev->next = l->next;
	else
		srv->head = l->next;
	if (l->next)
		l->next->prev = l->prev;
	else
		srv->tail = l->prev;
	l->prev = l->next = NULL;
}

static void lru_push(struct tlx_server *srv, struct tlx_leaf *l)
{
	l->prev = NULL;
	l->next = srv->head;
	if (srv->head)
		srv->head->prev = l;
	srv->head = l;
	if (!srv->tail)
		srv->tail = l;
}

static struct tlx_leaf *cache_find(struct tlx_server *srv, const char *name)
{
	for (struct tlx_leaf *l = *bucket_of(srv, name); l; l = l->hnext)
		if (strcmp(l->name, name) == 0)
			return l;
	return NULL;
}

static void cache_drop(struct tlx_server *srv, struct tlx_leaf *l)
{
	struct tlx_leaf **pp = bucket_of(srv, l->name);

	while (*pp != l)
		pp = &(*pp)->hnext;
	*pp = l->hnext;
	lru_unlink(srv, l);
	srv->cache_n--;
	X509_free(l->cert);
	free(l);
}

/* Fresh: valid now, and more than a quarter of its validity left (else it is minted anew). */
static bool leaf_fresh(const struct tlx_leaf *l, time_t now)
{
	return now >= l->not_before && now < l->not_after - (l->not_after - l->not_before) / 4;
}

/* Looks <name> up; a fresh leaf becomes the most recent and is returned with a new reference. */
static X509 *cache_get(struct tlx_server *srv, const char *name, time_t now)
{
	struct tlx_leaf *l;
	X509 *x = NULL;

	pthread_mutex_lock(&srv->lock);
	l = cache_find(srv, name);
	if (l && leaf_fresh(l, now)) {
		lru_unlink(srv, l);
		lru_push(srv, l);
		X509_up_ref(l->cert);
		x = l->cert;
	}
	pthread_mutex_unlock(&srv->lock);
	return x;
}

/*
 * Stores <x> (a new reference taken) for <name>, replacing a stale leaf and
 * evicting the least recently used one when full. When another thread stored
 * a fresh leaf for the name meanwhile, that one is returned instead.
 */
static X509 *cache_put(struct tlx_server *srv, const char *name, X509 *x, time_t now)
{
	struct tlx_leaf *l, *old;
	X509 *ret = x;

	l = calloc(1, sizeof(*l));
	pthread_mutex_lock(&srv->lock);
	old = cache_find(srv, name);
	if (old && leaf_fresh(old, now)) {
		X509_up_ref(old->cert);
		ret = old->cert;
		X509_free(x);
		free(l);
		goto unlock;
	}
	if (!l)
		goto unlock; /* out of memory: serve this leaf uncached */
	if (old)
		cache_drop(srv, old);
	else if (srv->cache_n == srv->cache_max)
		cache_drop(srv, srv->tail);
	strcpy(l->name, name);
	l->cert = x;
	X509_up_ref(x);
	/* What tlx__leaf_mint() wrote into it. */
	l->not_before = now - 3600;
	l->not_after = now + (time_t)srv->leaf_hours * 3600;
	if (l->not_after > srv->ca->not_after)
		l->not_after = srv->ca->not_after;
	l->hnext = *bucket_of(srv, name);
	*bucket_of(srv, name) = l;
	lru_push(srv, l);
	srv->cache_n++;
unlock:
	pthread_mutex_unlock(&srv->lock);
	return ret;
}

X509 *tlx__server_leaf(struct tlx_server *srv, const char *name, const char **why)
{
	char canon[256];
	enum tlx_name_kind kind = tlx__name_check(name, canon, sizeof(canon), why);
	time_t now = tlx__now();
	X509 *x;

	if (kind == TLX_NAME_BAD)
		return NULL;
	if (srv->cache_max && (x = cache_get(srv, canon, now)))
		return x;
	x = tlx__leaf_mint(srv->ca, srv->leaf_tmpl, canon, kind, srv->leaf_hours, now, why);
	if (x && srv->cache_max)
		x = cache_put(srv, canon, x, now);
	return x;
}
