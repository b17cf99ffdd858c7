/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of tls/src/server.c: minting servers (names refused, the leaf cache:
 * reuse, LRU eviction, renewal near expiry, the CA's own expiry, threads) and fixed
 * servers (files refused with a message).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509v3.h>

#include "th.h"
#include "tls_th.h"

static struct tlx_server *minting(struct tlx_ca *ca, unsigned hours, unsigned cache)
{
	struct tlx_server *srv = NULL;
	char err[256] = "";

	cr_assert_eq(tlx_server_new_minting(ca, hours, cache, &srv, err, sizeof(err)), 0, "%s",
		     err);
	return srv;
}

/* The leaf a new session on <srv> presents for <name>. */
static X509 *leaf(struct tlx_server *srv, const char *name)
{
	const char *why = NULL;
	struct tlx_session *s = tlx_session_server(srv, name, &why);
	X509 *x;

	cr_assert_not_null(s, "%s: %s", name, why);
	x = tth_session_cert(s, false);
	tlx_session_free(s);
	return x;
}

static bool same(X509 *a, X509 *b)
{
	return X509_cmp(a, b) == 0;
}

Test(tlx_server, same_name_same_leaf_until_evicted_lru)
{
	const char *dir = tth_dir();
	struct tlx_ca *ca = tth_ca(dir);
	struct tlx_server *srv = minting(ca, 24, 3);
	X509 *a = leaf(srv, "a.example"), *b = leaf(srv, "b.example"), *c, *x;

	x = leaf(srv, "a.example");
	cr_expect(same(a, x), "cached");
	X509_free(x);
	x = leaf(srv, "A.Example");
	cr_expect(same(a, x), "names are case-insensitive");
	X509_free(x);
	/* a is now the most recent: c fills the cache, d evicts b, the least recently used. */
	c = leaf(srv, "c.example");
	X509_free(leaf(srv, "d.example"));
	x = leaf(srv, "a.example");
	cr_expect(same(a, x), "a survived");
	X509_free(x);
	x = leaf(srv, "c.example");
	cr_expect(same(c, x), "c survived");
	X509_free(x);
	x = leaf(srv, "b.example");
	cr_expect_not(same(b, x), "b was evicted and minted anew");
	X509_free(x);
	X509_free(a);
	X509_free(b);
	X509_free(c);
	tlx_server_free(srv);
	tlx_ca_free(ca);
}

Test(tlx_server, no_cache_mints_every_time)
{
	const char *dir = tth_dir();
	struct tlx_ca *ca = tth_ca(dir);
	struct tlx_server *srv = minting(ca, 24, 0);
	X509 *a = leaf(srv, "a.example"), *b = leaf(srv, "a.example");

	cr_expect_not(same(a, b));
	X509_free(a);
	X509_free(b);
	tlx_server_free(srv);
	tlx_ca_free(ca);
}

Test(tlx_server, a_leaf_is_minted_again_when_a_quarter_of_its_life_is_left)
{
	const char *dir = tth_dir();
	struct tlx_ca *ca = tth_ca(dir);
	/* 4 hours from an hour ago: 5 hours of validity, renewed with less than 75 minutes left. */
	struct tlx_server *srv = minting(ca, 4, 8);
	X509 *a = leaf(srv, "a.example"), *x;

	tth_clock_offset = 2 * 3600 + 40 * 60; /* 80 minutes left */
	x = leaf(srv, "a.example");
	cr_expect(same(a, x), "still fresh");
	X509_free(x);
	tth_clock_offset = 2 * 3600 + 50 * 60; /* 70 minutes left */
	x = leaf(srv, "a.example");
	cr_expect_not(same(a, x), "renewed");
	cr_expect_gt(ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(a)), 0);
	X509_free(a);
	a = x;
	x = leaf(srv, "a.example");
	cr_expect(same(a, x), "the renewed leaf is cached");
	X509_free(x);
	X509_free(a);
	tlx_server_free(srv);
	tlx_ca_free(ca);
}

Test(tlx_server, leaves_never_outlive_the_ca_and_none_after_it)
{
	const char *dir = tth_dir();
	char err[256];
	struct tlx_ca *ca;
	struct tlx_server *srv;
	const char *why = NULL;
	X509 *cax, *x;

	/* A CA valid for a day; leaves asked for 48 hours end with it. */
	cr_assert_eq(tlx_ca_create(dir, NULL, 1, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(tlx_ca_load(tth_path(dir, "ca.crt"), tth_path(dir, "ca.key"), &ca, err,
				 sizeof(err)),
		     0, "%s", err);
	srv = minting(ca, 48, 8);
	x = leaf(srv, "a.example");
	cax = tth_read_cert(tth_path(dir, "ca.crt"));
	cr_expect_eq(ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(cax)), 0);
	X509_free(x);
	X509_free(cax);
	/* Two days on, the CA has expired: nothing is minted (TESTPLAN T7). */
	tth_clock_offset = 2 * 86400;
	cr_expect_null(tlx_session_server(srv, "b.example", &why));
	cr_expect_str_eq(why, "the CA certificate has expired");
	cr_expect_null(tlx_session_server(srv, "a.example", &why), "nor served from the cache");
	tlx_server_free(srv);
	tlx_ca_free(ca);
}

Test(tlx_server, names_that_cannot_be_a_certificates_are_refused)
{
	static const struct {
		const char *name;
		const char *why;
	} bad[] = {
		{ "", "no name" },
		{ "*.example.com", "wildcard names are not minted" },
		{ "a..example", "name has an empty label" },
		{ ".example", "name has an empty label" },
		{ "example.com.", "name has an empty label" },
		{ "exa mple.com",
		  "name has a character that is not a letter, digit, '-', '_' or '.'" },
		{ "fe80::1%eth0",
		  "name has a character that is not a letter, digit, '-', '_' or '.'" },
		{ "a/b", "name has a character that is not a letter, digit, '-', '_' or '.'" },
		{ "caf\xc3\xa9.example",
		  "name has a character that is not a letter, digit, '-', '_' or '.'" },
	};
	const char *dir = tth_dir();
	struct tlx_ca *ca = tth_ca(dir);
	struct tlx_server *srv = minting(ca, 1, 8);
	char label[80], longname[300];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *why = NULL;

		cr_expect_null(tlx_session_server(srv, bad[i].name, &why), "%s", bad[i].name);
		cr_expect_str_eq(why ? why : "(null)", bad[i].why, "%s", bad[i].name);
	}
	cr_expect_null(tlx_session_server(srv, NULL, NULL), "NULL, and no why asked");
	memset(label, 'a', 64);
	strcpy(label + 64, ".example");
	cr_expect_null(tlx_session_server(srv, label, NULL), "a label of 64 bytes");
	strcpy(label + 63, ".example");
	X509_free(leaf(srv, label));
	memset(longname, 'a', 254);
	for (int i = 50; i < 254; i += 50)
		longname[i] = '.';
	longname[254] = '\0';
	cr_expect_null(tlx_session_server(srv, longname, NULL), "254 bytes");
	longname[253] = '\0';
	X509_free(leaf(srv, longname));
	X509_free(leaf(srv, "under_score-1.example"));
	tlx_server_free(srv);
	tlx_ca_free(ca);
}

Test(tlx_server, minting_needs_hours)
{
	const char *dir = tth_dir();
	struct tlx_ca *ca = tth_ca(dir);
	struct tlx_server *srv = NULL;
	char err[256] = "";

	cr_expect_eq(tlx_server_new_minting(ca, 0, 8, &srv, err, sizeof(err)), -EINVAL);
	cr_expect_str_eq(err, "leaf_hours: must be at least 1");
	tlx_server_free(NULL);
	tlx_ca_free(ca);
}

Test(tlx_server, fixed_refuses_a_key_of_another_certificate)
{
	const char *dir = tth_dir();
	struct tth_cert a = { .cn = "a", .dns = "a.test", .not_before = -60, .not_after = 3600 };
	struct tlx_server *srv = NULL;
	char err[512] = "";

	tth_make_cert(dir, "a", &a, NULL);
	tth_make_cert(dir, "b", &a, NULL);
	cr_expect_eq(tlx_server_new_fixed(tth_path(dir, "a.crt"), tth_path(dir, "b.key"), &srv, err,
					  sizeof(err)),
		     -EINVAL);
	cr_expect_null(srv);
	cr_expect(strstr(err, "b.key: the key does not match the certificate in ") &&
			  strstr(err, "a.crt"),
		  "%s", err);
	cr_expect_eq(tlx_server_new_fixed(tth_path(dir, "nope.crt"), tth_path(dir, "a.key"), &srv,
					  err, sizeof(err)),
		     -ENOENT);
	cr_expect(strstr(err, "nope.crt: cannot read: No such file or directory"), "%s", err);
	cr_expect_eq(tlx_server_new_fixed(tth_path(dir, "a.key"), tth_path(dir, "a.key"), &srv, err,
					  sizeof(err)),
		     -EINVAL);
	cr_expect(strstr(err, "a.key: no PEM certificate chain in it"), "%s", err);
	cr_expect_eq(tlx_server_new_fixed(tth_path(dir, "a.crt"), tth_path(dir, "a.crt"), &srv, err,
					  sizeof(err)),
		     -EINVAL);
	cr_expect(strstr(err, "a.crt: no PEM private key in it"), "%s", err);
	cr_assert_eq(tlx_server_new_fixed(tth_path(dir, "a.crt"), tth_path(dir, "a.key"), &srv, err,
					  sizeof(err)),
		     0, "%s", err);
	tlx_server_free(srv);
}

struct hammer {
	struct tlx_server *srv;
	unsigned seed;
	int wrong, failed;
};

/* Sessions for names drawn from 24, on a cache of 8: hits, misses and evictions race. */
static void *hammer_run(void *arg)
{
	struct hammer *h = arg;
	char name[64];

	for (int i = 0; i < 150; i++) {
		const char *why;
		struct tlx_session *s;
		X509 *x;

		h->seed = h->seed * 1103515245u + 12345u;
		snprintf(name, sizeof(name), "n%u.example", (h->seed >> 16) % 24);
		s = tlx_session_server(h->srv, name, &why);
		if (!s) {
			h->failed++;
			continue;
		}
		x = tth_session_cert(s, false);
		/* The one property that must never break: the leaf is the name's. */
		if (X509_check_host(x, name, 0, 0, NULL) != 1)
			h->wrong++;
		X509_free(x);
		tlx_session_free(s);
	}
	return NULL;
}

Test(tlx_server, threads_share_the_cache_and_each_gets_its_names_leaf)
{
	const char *dir = tth_dir();
	struct tlx_ca *ca = tth_ca(dir);
	struct tlx_server *srv = minting(ca, 24, 8);
	struct hammer h[4];
	pthread_t t[4];

	for (int i = 0; i < 4; i++) {
		h[i] = (struct hammer){ .srv = srv, .seed = (unsigned)i * 7919u + 1 };
		cr_assert_eq(pthread_create(&t[i], NULL, hammer_run, &h[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		cr_expect_eq(h[i].failed, 0, "thread %d", i);
		cr_expect_eq(h[i].wrong, 0, "thread %d got another name's leaf", i);
	}
	tlx_server_free(srv);
	tlx_ca_free(ca);
}
