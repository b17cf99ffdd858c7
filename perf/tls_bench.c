/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Micro-benchmark of tls/: what a minted leaf costs (a session on a server
 * without cache), what a cached one costs, what a key per leaf would add
 * (generating a P-256 key and encoding it into a certificate), and a whole
 * TLS 1.3 handshake in memory.
 *   tls_bench [-n N]
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "tlx/tls.h"

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static struct tlx_session *server_session(struct tlx_server *srv, const char *name)
{
	const char *why = NULL;
	struct tlx_session *s = tlx_session_server(srv, name, &why);

	if (!s) {
		fprintf(stderr, "tls_bench: session: %s\n", why);
		exit(1);
	}
	return s;
}

/* Pumps bytes between two sessions until both handshakes are done. */
static void handshake(struct tlx_session *c, struct tlx_session *s)
{
	static char buf[65536];
	int hc = 0, hs = 0;

	for (int round = 0; round < 16 && (hc != 1 || hs != 1); round++) {
		size_t n;

		if (hc != 1)
			hc = tlx_session_handshake(c, NULL);
		while ((n = tlx_session_take(c, buf, sizeof(buf))))
			tlx_session_feed(s, buf, n);
		if (hs != 1)
			hs = tlx_session_handshake(s, NULL);
		while ((n = tlx_session_take(s, buf, sizeof(buf))))
			tlx_session_feed(c, buf, n);
		if (hc < 0 || hs < 0) {
			fprintf(stderr, "tls_bench: handshake failed\n");
			exit(1);
		}
	}
}

int main(int argc, char **argv)
{
	char dir[] = "/tmp/tls_bench.XXXXXX", crt[64], key[64], err[512], name[64];
	struct tlx_server *mint, *cached;
	struct tlx_client *cli;
	struct tlx_ca *ca;
	double t0, t;
	int n = 2000, opt;

	while ((opt = getopt(argc, argv, "n:")) != -1) {
		if (opt != 'n' || (n = atoi(optarg)) <= 0) {
			fprintf(stderr, "usage: tls_bench [-n N]\n");
			return 2;
		}
	}
	if (!mkdtemp(dir) || tlx_ca_create(dir, NULL, 1, err, sizeof(err)) != 0) {
		fprintf(stderr, "tls_bench: CA: %s\n", err);
		return 1;
	}
	snprintf(crt, sizeof(crt), "%s/ca.crt", dir);
	snprintf(key, sizeof(key), "%s/ca.key", dir);
	if (tlx_ca_load(crt, key, &ca, err, sizeof(err)) ||
	    tlx_server_new_minting(ca, 24, 0, &mint, err, sizeof(err)) ||
	    tlx_server_new_minting(ca, 24, 1024, &cached, err, sizeof(err)) ||
	    tlx_client_new(crt, &cli, err, sizeof(err))) {
		fprintf(stderr, "tls_bench: %s\n", err);
		return 1;
	}

	t0 = now_us();
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "h%d.example.com", i);
		tlx_session_free(server_session(mint, name));
	}
	t = (now_us() - t0) / n;
	printf("server session, leaf minted (shared P-256 key):  %8.1f us\n", t);

	tlx_session_free(server_session(cached, "cached.example.com"));
	t0 = now_us();
	for (int i = 0; i < n; i++)
		tlx_session_free(server_session(cached, "cached.example.com"));
	printf("server session, leaf from the cache:              %8.1f us\n", (now_us() - t0) / n);

	/*
	 * A key per leaf instead: its generation, and encoding it into the
	 * certificate, which the per-server template otherwise does once.
	 */
	t0 = now_us();
	for (int i = 0; i < n; i++) {
		EVP_PKEY *k = EVP_EC_gen("P-256");
		X509 *x = X509_new();

		if (!k || !x || !X509_set_pubkey(x, k))
			return 1;
		X509_free(x);
		EVP_PKEY_free(k);
	}
	printf("a key per leaf would add (P-256 keygen, encoding): %7.1f us\n",
	       (now_us() - t0) / n);

	t0 = now_us();
	for (int i = 0; i < n / 4; i++) {
		const char *why;
		struct tlx_session *c = tlx_session_client(cli, "cached.example.com", true, &why);
		struct tlx_session *s = server_session(cached, "cached.example.com");

		handshake(c, s);
		tlx_session_free(c);
		tlx_session_free(s);
	}
	printf("TLS 1.3 handshake in memory, both sides, cached:  %8.1f us\n",
	       (now_us() - t0) / (n / 4));

	tlx_client_free(cli);
	tlx_server_free(cached);
	tlx_server_free(mint);
	tlx_ca_free(ca);
	unlink(crt);
	unlink(key);
	rmdir(dir);
	return 0;
}
