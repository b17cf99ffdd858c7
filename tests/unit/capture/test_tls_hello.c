/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of capture/src/tls_hello.c: the ClientHello sniffer. Real ClientHellos
 * of openssl, curl and Chromium (tests/corpus/tls/), every truncation against
 * a guard page, hellos re-fragmented over records, hand-built hellos with
 * every length field wrong, and flipped bytes.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tap/tls_hello.h"

#define ALL_VERSIONS (TAP_TLS_V10 | TAP_TLS_V11 | TAP_TLS_V12 | TAP_TLS_V13)

/* A buffer whose end touches a PROT_NONE page: reading one byte past <len> faults. */
struct guard {
	uint8_t *map;
	size_t maplen;
	uint8_t *end;
};

static void guard_init(struct guard *g, size_t cap)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	g->maplen = (cap + pg - 1) / pg * pg + pg;
	g->map = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(g->map, MAP_FAILED);
	g->end = g->map + g->maplen - pg;
	cr_assert_eq(mprotect(g->end, pg, PROT_NONE), 0);
}

static const uint8_t *guard_put(struct guard *g, const void *src, size_t len)
{
	memcpy(g->end - len, src, len);
	return g->end - len;
}

static void guard_fini(struct guard *g)
{
	munmap(g->map, g->maplen);
}

/* Parses <len> bytes placed against a guard page. */
static int parse_guarded(const void *buf, size_t len, struct tap_tls_hello *h, const char **why)
{
	struct guard g;
	int ret;

	guard_init(&g, len);
	ret = tap_tls_hello_parse(guard_put(&g, buf, len), len, h, why);
	guard_fini(&g);
	return ret;
}

static uint8_t *read_corpus(const char *name, size_t *len)
{
	char path[512];
	uint8_t *buf;
	FILE *f;
	long n;

	snprintf(path, sizeof(path), "%s/tls/%s.bin", SIDETAP_CORPUS_DIR, name);
	f = fopen(path, "rb");
	cr_assert_not_null(f, "%s: missing (tests/corpus/tls/make_hellos.py makes it)", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n);
	cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* What each client was told to send (tests/corpus/tls/README.md). */
static const struct client {
	const char *name;
	const char *sni;
	const char *alpn; /* comma-separated */
	uint32_t versions;
} clients[] = {
	{ "openssl_tls13_sni_alpn", "example.com", "h2,http/1.1", TAP_TLS_V13 },
	{ "openssl_tls12_sni_alpn", "example.com", "h2,http/1.1", TAP_TLS_V12 },
	{ "openssl_no_sni", "", "", ALL_VERSIONS },
	{ "openssl_ip_sni", "192.0.2.7", "http/1.1", ALL_VERSIONS },
	{ "curl_sni_alpn", "example.com", "h2,http/1.1", ALL_VERSIONS },
	{ "curl_http11_ip", "", "http/1.1", ALL_VERSIONS },
	{ "chromium_sni_alpn", "example.com", "h2,http/1.1", TAP_TLS_V12 | TAP_TLS_V13 },
};

#define NCLIENTS (sizeof(clients) / sizeof(clients[0]))

static void alpn_join(const struct tap_tls_hello *h, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < h->nalpn; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "," : "", h->alpn[i]);
}

static void expect_client(const struct client *c, const struct tap_tls_hello *h, size_t len)
{
	char alpn[512];

	cr_expect_str_eq(h->sni, c->sni, "%s: sni", c->name);
	alpn_join(h, alpn, sizeof(alpn));
	cr_expect_str_eq(alpn, c->alpn, "%s: alpn", c->name);
	cr_expect_eq(h->alpn_total, h->nalpn, "%s", c->name);
	cr_expect_eq(h->versions, c->versions, "%s: versions %#x", c->name, h->versions);
	cr_expect_eq(h->len, len, "%s: len %zu of %zu", c->name, h->len, len);
}

Test(tap_tls_hello, real_clients_hellos_parse_with_every_field)
{
	for (size_t i = 0; i < NCLIENTS; i++) {
		struct tap_tls_hello h;
		const char *why = "unset";
		size_t len;
		uint8_t *buf = read_corpus(clients[i].name, &len);

		cr_assert_eq(parse_guarded(buf, len, &h, &why), 1, "%s: %s", clients[i].name, why);
		cr_expect_null(why, "no reason on success");
		expect_client(&clients[i], &h, len);
		free(buf);
	}
}

Test(tap_tls_hello, bytes_after_the_hellos_records_are_not_its)
{
	/* The client's next record (a ChangeCipherSpec, or early data) may follow in the buffer. */
	static const uint8_t ccs[] = { 20, 3, 3, 0, 1, 1 };

	for (size_t i = 0; i < NCLIENTS; i++) {
		struct tap_tls_hello h;
		size_t len;
		uint8_t *buf = read_corpus(clients[i].name, &len);

		buf = realloc(buf, len + sizeof(ccs));
		memcpy(buf + len, ccs, sizeof(ccs));
		cr_assert_eq(parse_guarded(buf, len + sizeof(ccs), &h, NULL), 1);
		expect_client(&clients[i], &h, len);
		free(buf);
	}
}

Test(tap_tls_hello, every_truncation_needs_more_against_a_guard_page)
{
	for (size_t i = 0; i < NCLIENTS; i++) {
		struct tap_tls_hello h;
		struct guard g;
		size_t len;
		uint8_t *buf = read_corpus(clients[i].name, &len);

		guard_init(&g, len);
		for (size_t k = 0; k < len; k++) {
			const char *why = NULL;
			int ret = tap_tls_hello_parse(guard_put(&g, buf, k), k, &h, &why);

			cr_assert_eq(ret, 0, "%s cut at %zu: %d %s", clients[i].name, k, ret, why);
		}
		guard_fini(&g);
		free(buf);
	}
}

/* The handshake message (header and body) of a hello held in one record. */
static const uint8_t *message_of(const uint8_t *buf, size_t len, size_t *mlen)
{
	cr_assert_geq(len, 9);
	cr_assert_eq((size_t)buf[3] << 8 | buf[4], len - 5, "one record");
	*mlen = len - 5;
	return buf + 5;
}

/* Writes <msg> as records of the given fragment sizes (the last takes the rest). Returns bytes. */
static size_t fragment(const uint8_t *msg, size_t mlen, const size_t *sizes, size_t nsizes,
		       uint8_t *out)
{
	size_t off = 0, pos = 0;

	for (size_t i = 0; off < mlen; i++) {
		size_t n = i < nsizes ? sizes[i] : mlen - off;

		if (n > mlen - off)
			n = mlen - off;
		out[pos++] = 22;
		out[pos++] = 3;
		out[pos++] = 1;
		out[pos++] = (uint8_t)(n >> 8);
		out[pos++] = (uint8_t)n;
		memcpy(out + pos, msg + off, n);
		pos += n;
		off += n;
	}
	return pos;
}

Test(tap_tls_hello, a_hello_split_over_two_records_at_every_point)
{
	for (size_t i = 0; i < NCLIENTS; i++) {
		size_t len, mlen;
		uint8_t *buf = read_corpus(clients[i].name, &len), *two = malloc(len + 5);
		const uint8_t *msg = message_of(buf, len, &mlen);

		for (size_t cut = 1; cut < mlen; cut++) {
			struct tap_tls_hello h;
			const char *why = NULL;
			size_t n = fragment(msg, mlen, &cut, 1, two);

			cr_assert_eq(n, len + 5);
			cr_assert_eq(parse_guarded(two, n, &h, &why), 1, "%s split at %zu: %s",
				     clients[i].name, cut, why);
			expect_client(&clients[i], &h, len + 5);
			/* Truncations near the records' boundary and the end still need more. */
			for (size_t k = cut; k < cut + 12 && k < n; k++)
				cr_assert_eq(parse_guarded(two, k, &h, NULL), 0,
					     "%s split at %zu, cut at %zu", clients[i].name, cut,
					     k);
			cr_assert_eq(parse_guarded(two, n - 1, &h, NULL), 0);
		}
		free(two);
		free(buf);
	}
}

Test(tap_tls_hello, a_hello_in_one_byte_records)
{
	size_t len, mlen, ones[4096], n;
	uint8_t *buf = read_corpus("openssl_tls13_sni_alpn", &len), *out;
	const uint8_t *msg = message_of(buf, len, &mlen);
	struct tap_tls_hello h;
	const char *why = NULL;

	for (size_t i = 0; i < mlen; i++)
		ones[i] = 1;
	out = malloc(6 * mlen);
	n = fragment(msg, mlen, ones, mlen, out);
	cr_assert_eq(n, 6 * mlen);
	cr_assert_eq(parse_guarded(out, n, &h, &why), 1, "%s", why);
	expect_client(&clients[0], &h, n);
	for (size_t k = 0; k < n; k++)
		cr_assert_eq(parse_guarded(out, k, &h, NULL), 0, "cut at %zu", k);
	free(out);
	free(buf);
}

/* A ClientHello built field by field, for lengths that lie. */
struct builder {
	uint8_t b[40000];
	size_t n;
};

static void put(struct builder *w, const void *p, size_t n)
{
	cr_assert_leq(w->n + n, sizeof(w->b));
	memcpy(w->b + w->n, p, n);
	w->n += n;
}

static void put8(struct builder *w, unsigned v)
{
	uint8_t b = (uint8_t)v;

	put(w, &b, 1);
}

static void put16(struct builder *w, unsigned v)
{
	put8(w, v >> 8);
	put8(w, v);
}

static void put24(struct builder *w, unsigned v)
{
	put8(w, v >> 16);
	put16(w, v);
}

/* Rewrites the <bytes>-byte big-endian length at <at> to <v>. */
static void set_len(struct builder *w, size_t at, unsigned bytes, size_t v)
{
	for (unsigned i = 0; i < bytes; i++)
		w->b[at + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
}

/* Where the lengths of build()'s hello are, to corrupt them. */
struct offs {
	size_t rec, hs, sid, ciphers, comp, exts, sni_ext, sni_list, sni_name, alpn_ext, alpn_list,
		alpn_proto, sv_ext, sv_list;
};

struct spec {
	const char *sni; /* NULL: no server_name */
	const char *const *alpn; /* NULL-terminated; NULL: no ALPN */
	const unsigned *versions; /* 0-terminated; NULL: no supported_versions */
	bool no_extensions;
	unsigned legacy;
};

/* Builds a one-record ClientHello from <s>; <o> gets where its length fields are. */
static void build(struct builder *w, const struct spec *s, struct offs *o)
{
	static const uint8_t random[32] = { 1, 2, 3 };
	size_t start;

	memset(o, 0, sizeof(*o));
	w->n = 0;
	put8(w, 22);
	put16(w, 0x0301);
	o->rec = w->n;
	put16(w, 0);
	put8(w, 1);
	o->hs = w->n;
	put24(w, 0);
	put16(w, s->legacy ? s->legacy : 0x0303);
	put(w, random, 32);
	o->sid = w->n;
	put8(w, 32);
	put(w, random, 32);
	o->ciphers = w->n;
	put16(w, 4);
	put16(w, 0x1301);
	put16(w, 0xc02b);
	o->comp = w->n;
	put8(w, 1);
	put8(w, 0);
	if (!s->no_extensions) {
		o->exts = w->n;
		put16(w, 0);
		start = w->n;
		/* A GREASE extension first, as Chromium sends. */
		put16(w, 0x0a0a);
		put16(w, 0);
		if (s->sni) {
			size_t l = strlen(s->sni);

			put16(w, 0);
			o->sni_ext = w->n;
			put16(w, l + 5);
			o->sni_list = w->n;
			put16(w, l + 3);
			put8(w, 0);
			o->sni_name = w->n;
			put16(w, l);
			put(w, s->sni, l);
		}
		if (s->alpn) {
			size_t l = 0;

			for (unsigned i = 0; s->alpn[i]; i++)
				l += 1 + strlen(s->alpn[i]);
			put16(w, 16);
			o->alpn_ext = w->n;
			put16(w, l + 2);
			o->alpn_list = w->n;
			put16(w, l);
			o->alpn_proto = w->n;
			for (unsigned i = 0; s->alpn[i]; i++) {
				put8(w, strlen(s->alpn[i]));
				put(w, s->alpn[i], strlen(s->alpn[i]));
			}
		}
		if (s->versions) {
			unsigned nv = 0;

			while (s->versions[nv])
				nv++;
			put16(w, 43);
			o->sv_ext = w->n;
			put16(w, 1 + 2 * nv);
			o->sv_list = w->n;
			put8(w, 2 * nv);
			for (unsigned i = 0; i < nv; i++)
				put16(w, s->versions[i]);
		}
		/* And a padding extension (21) last. */
		put16(w, 21);
		put16(w, 3);
		put8(w, 0);
		put16(w, 0);
		set_len(w, o->exts, 2, w->n - start);
	}
	set_len(w, o->hs, 3, w->n - o->hs - 3);
	set_len(w, o->rec, 2, w->n - o->rec - 2);
}

static const char *const h2_http11[] = { "h2", "http/1.1", NULL };
static const unsigned v13_v12[] = { 0x3a3a, 0x0304, 0x0303, 0 };

static const struct spec full = { .sni = "api.example.com",
				  .alpn = h2_http11,
				  .versions = v13_v12 };

Test(tap_tls_hello, built_hello_parses)
{
	struct builder w;
	struct offs o;
	struct tap_tls_hello h;
	const char *why = NULL;

	build(&w, &full, &o);
	cr_assert_eq(parse_guarded(w.b, w.n, &h, &why), 1, "%s", why);
	cr_expect_str_eq(h.sni, "api.example.com");
	cr_expect_eq(h.nalpn, 2);
	cr_expect_str_eq(h.alpn[0], "h2");
	cr_expect_str_eq(h.alpn[1], "http/1.1");
	cr_expect_eq(h.alpn_len[1], 8);
	cr_expect_eq(h.versions, TAP_TLS_V12 | TAP_TLS_V13, "GREASE ignored: %#x", h.versions);
	cr_expect_eq(h.len, w.n);
}

Test(tap_tls_hello, no_sni_no_alpn_no_extensions)
{
	struct builder w;
	struct offs o;
	struct tap_tls_hello h;
	const char *why = NULL;
	struct spec s = { 0 };

	build(&w, &s, &o);
	cr_assert_eq(parse_guarded(w.b, w.n, &h, &why), 1, "%s", why);
	cr_expect_str_eq(h.sni, "");
	cr_expect_eq(h.nalpn, 0);
	cr_expect_eq(h.alpn_total, 0);
	cr_expect_eq(h.versions, TAP_TLS_V12, "legacy_version without supported_versions");
	/* A hello from before extensions: the body ends after the compression methods. */
	s.no_extensions = true;
	s.legacy = 0x0301;
	build(&w, &s, &o);
	cr_assert_eq(parse_guarded(w.b, w.n, &h, &why), 1, "%s", why);
	cr_expect_eq(h.versions, TAP_TLS_V10);
	s.legacy = 0x0300; /* SSL 3.0: a ClientHello still, with no version we name */
	build(&w, &s, &o);
	cr_assert_eq(parse_guarded(w.b, w.n, &h, &why), 1, "%s", why);
	cr_expect_eq(h.versions, 0);
}

Test(tap_tls_hello, sni_bytes_are_kept_as_sent)
{
	static const char *const names[] = { "192.0.2.7", "[2001:db8::1]", "UPPER.Example.COM.",
					     "under_score.example", "a" };
	char long_name[256];
	struct builder w;
	struct offs o;
	struct tap_tls_hello h;
	const char *why = NULL;
	struct spec s = full;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		s.sni = names[i];
		build(&w, &s, &o);
		cr_assert_eq(parse_guarded(w.b, w.n, &h, &why), 1, "%s: %s", names[i], why);
		cr_expect_str_eq(h.sni, names[i]);
	}
	memset(long_name, 'a', 255);
	long_name[255] = '\0';
	s.sni = long_name;
	build(&w, &s, &o);
	cr_assert_eq(parse_guarded(w.b, w.n, &h, &why), 1, "%s", why);
	cr_expect_str_eq(h.sni, long_name, "255 bytes: the longest");
}

Test(tap_tls_hello, alpn_beyond_what_is_kept)
{
	static const char *const many[] = {
		"a1",	    "a2", "a3", "a4",
		"a5",	    "a6", "a7", "0123456789012345678901234567890123456789",
		"http/1.1", "h2", NULL
	};
	struct builder w;
	struct offs o;
	struct tap_tls_hello h;
	const char *why = NULL;
	struct spec s = full;

	s.alpn = many;
	build(&w, &s, &o);
	cr_assert_eq(parse_guarded(w.b, w.n, &h, &why), 1, "%s", why);
	cr_expect_eq(h.nalpn, TAP_TLS_ALPN_MAX);
	cr_expect_eq(h.alpn_total, 10);
	cr_expect_eq(strlen(h.alpn[7]), TAP_TLS_ALPN_LEN - 1, "cut and NUL-terminated");
	cr_expect_eq(h.alpn_len[7], 40);
	cr_expect_not(tap_tls_hello_offers(&h, "0123456789012345678901234567890", false),
		      "a cut name does not match its prefix");
	cr_expect(tap_tls_hello_offers(&h, "a7", false));
	cr_expect_not(tap_tls_hello_offers(&h, "http/1.1", true), "past the kept ones: unknown");
	cr_expect_not(tap_tls_hello_offers(&h, "a", false));
}

Test(tap_tls_hello, offers_and_version_names)
{
	struct tap_tls_hello h = { 0 };
	char buf[64], small[10];

	cr_expect(tap_tls_hello_offers(&h, "http/1.1", true), "no ALPN at all, or_none");
	cr_expect_not(tap_tls_hello_offers(&h, "http/1.1", false));
	h.nalpn = h.alpn_total = 1;
	strcpy(h.alpn[0], "h2");
	h.alpn_len[0] = 2;
	cr_expect_not(tap_tls_hello_offers(&h, "http/1.1", true), "h2 only");
	cr_expect(tap_tls_hello_offers(&h, "h2", false));

	cr_expect_str_eq(tap_tls_versions_name(0, buf, sizeof(buf)), "");
	cr_expect_str_eq(tap_tls_versions_name(TAP_TLS_V13, buf, sizeof(buf)), "TLS1.3");
	cr_expect_str_eq(tap_tls_versions_name(ALL_VERSIONS, buf, sizeof(buf)),
			 "TLS1.0,TLS1.1,TLS1.2,TLS1.3");
	cr_expect_str_eq(
		tap_tls_versions_name(TAP_TLS_V12 | TAP_TLS_V13 | (1u << 9), buf, sizeof(buf)),
		"TLS1.2,TLS1.3", "unknown bits ignored");
	cr_expect_str_eq(tap_tls_versions_name(ALL_VERSIONS, small, sizeof(small)), "TLS1.0",
			 "what fits, NUL-terminated");
	cr_expect_eq(tap_tls_versions_name(ALL_VERSIONS, small, 0), small);
}

/* Parses <w> and expects -EBADMSG with <reason>. */
static void expect_bad(const struct builder *w, const char *reason, const char *what)
{
	struct tap_tls_hello h;
	const char *why = NULL;

	cr_expect_eq(parse_guarded(w->b, w->n, &h, &why), -EBADMSG, "%s", what);
	cr_expect_str_eq(why ? why : "(null)", reason, "%s", what);
}

#define AT(f) offsetof(struct offs, f)

Test(tap_tls_hello, lying_lengths_are_refused_with_a_reason)
{
	static const struct {
		size_t at;
		unsigned bytes;
		int delta;
		const char *reason;
	} cases[] = {
		{ AT(sid), 1, 1, "ClientHello: bad session id length" },
		{ AT(ciphers), 2, -1, "ClientHello: bad cipher suites length" },
		{ AT(ciphers), 2, 1000, "ClientHello: bad cipher suites length" },
		{ AT(ciphers), 2, -4, "ClientHello: bad cipher suites length" },
		{ AT(comp), 1, 200, "ClientHello: bad compression methods length" },
		{ AT(comp), 1, -1, "ClientHello: bad compression methods length" },
		{ AT(exts), 2, 1, "ClientHello: extensions length does not match the message" },
		{ AT(exts), 2, -1, "ClientHello: extensions length does not match the message" },
		{ AT(exts), 2, -4, "ClientHello: extensions length does not match the message" },
		{ AT(sni_ext), 2, 1, "server_name: bad list length" },
		{ AT(sni_ext), 2, 1000, "ClientHello: bad extension length" },
		{ AT(sni_list), 2, 1, "server_name: bad list length" },
		{ AT(sni_list), 2, -1, "server_name: bad list length" },
		{ AT(sni_name), 2, 1, "server_name: bad name length" },
		{ AT(sni_name), 2, -1, "server_name: bad name length" },
		{ AT(alpn_ext), 2, -1, "alpn: bad list length" },
		{ AT(alpn_list), 2, -1, "alpn: bad list length" },
		{ AT(alpn_proto), 1, -1, "alpn: bad protocol name length" },
		{ AT(alpn_list), 2, 1, "alpn: bad list length" },
		{ AT(alpn_proto), 1, 1, "alpn: bad protocol name length" },
		{ AT(sv_ext), 2, 1, "supported_versions: bad list length" },
		{ AT(sv_list), 1, -1, "supported_versions: bad list length" },
		{ AT(sv_list), 1, 1, "supported_versions: bad list length" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct builder w;
		struct offs o;
		size_t at, v = 0;
		char what[64];

		build(&w, &full, &o);
		at = *(size_t *)((char *)&o + cases[i].at);
		cr_assert_gt(at, 0);
		for (unsigned k = 0; k < cases[i].bytes; k++)
			v = v << 8 | w.b[at + k];
		set_len(&w, at, cases[i].bytes, v + (size_t)(long)cases[i].delta);
		snprintf(what, sizeof(what), "case %zu", i);
		expect_bad(&w, cases[i].reason, what);
	}
}

Test(tap_tls_hello, values_a_server_refuses_are_refused)
{
	static const char *const empty_proto[] = { "h2", "", NULL };
	static const unsigned none[] = { 0 };
	struct builder w;
	struct offs o;
	struct spec s = full;
	char big[300];

	s.sni = "";
	build(&w, &s, &o);
	expect_bad(&w, "server_name: host_name empty or longer than 255 bytes", "empty SNI");
	memset(big, 'a', 256);
	big[256] = '\0';
	s.sni = big;
	build(&w, &s, &o);
	expect_bad(&w, "server_name: host_name empty or longer than 255 bytes", "256 bytes");
	s.sni = "evil.example\x01good.example";
	build(&w, &s, &o);
	w.b[o.sni_name + 2 + 12] = 0;
	expect_bad(&w, "server_name: host_name holds a NUL byte", "NUL in SNI");
	s = full;
	s.alpn = empty_proto;
	build(&w, &s, &o);
	expect_bad(&w, "alpn: bad protocol name length", "empty protocol");
	s = full;
	s.alpn = (const char *const[]){ NULL };
	build(&w, &s, &o);
	expect_bad(&w, "alpn: bad list length", "empty ALPN list");
	s = full;
	s.versions = none;
	build(&w, &s, &o);
	expect_bad(&w, "supported_versions: bad list length", "empty versions");
	s = full;
	s.legacy = 0x0202;
	build(&w, &s, &o);
	expect_bad(&w, "ClientHello: legacy_version is not 3.x", "legacy 2.2");
}

Test(tap_tls_hello, an_extension_twice_is_refused)
{
	static const uint16_t types[] = { 0, 16, 43 };
	struct builder w;
	struct offs o;

	for (size_t i = 0; i < 3; i++) {
		size_t at, elen;

		build(&w, &full, &o);
		/* Append a copy of the extension at the end of the list. */
		at = i == 0 ? o.sni_ext : i == 1 ? o.alpn_ext : o.sv_ext;
		elen = (size_t)w.b[at] << 8 | w.b[at + 1];
		memcpy(w.b + w.n, w.b + at - 2, 4 + elen);
		w.n += 4 + elen;
		set_len(&w, o.exts, 2, w.n - o.exts - 2);
		set_len(&w, o.hs, 3, w.n - o.hs - 3);
		set_len(&w, o.rec, 2, w.n - o.rec - 2);
		cr_assert_eq((unsigned)w.b[at - 2] << 8 | w.b[at - 1], types[i]);
		expect_bad(&w, "ClientHello: an extension appears twice", "duplicate");
	}
}

Test(tap_tls_hello, records_and_messages_that_are_not_a_hello)
{
	struct builder w;
	struct offs o;
	struct tap_tls_hello h;
	const char *why = NULL;

	cr_expect_eq(parse_guarded("GET / HTTP/1.1\r\n", 16, &h, &why), -EBADMSG);
	cr_expect_str_eq(why, "not a TLS handshake record");
	cr_expect_eq(parse_guarded("G", 1, &h, &why), -EBADMSG, "refused from its first byte");
	cr_expect_eq(parse_guarded("", 0, &h, &why), 0, "nothing yet");
	cr_expect_eq(parse_guarded("\x16", 1, &h, &why), 0);
	cr_expect_eq(parse_guarded("\x16\x02", 2, &h, &why), -EBADMSG);
	cr_expect_str_eq(why, "TLS record: version is not 3.x");
	cr_expect_eq(parse_guarded("\x16\x03\x05", 3, &h, &why), -EBADMSG);
	cr_expect_str_eq(why, "TLS record: version newer than 3.4");
	cr_expect_eq(parse_guarded("\x16\x03\x00\x00\x05\x01", 6, &h, &why), 0, "SSL 3.0 record");
	cr_expect_eq(parse_guarded("\x16\x03\x01\x00\x00", 5, &h, &why), -EBADMSG);
	cr_expect_str_eq(why, "TLS record: empty handshake record");
	cr_expect_eq(parse_guarded("\x16\x03\x01\x40\x01", 5, &h, &why), -EBADMSG);
	cr_expect_str_eq(why, "TLS record: longer than 2^14 bytes");
	cr_expect_eq(parse_guarded("\x16\x03\x01\x00\x04\x02", 6, &h, &why), -EBADMSG);
	cr_expect_str_eq(why, "TLS handshake: the first message is not a ClientHello");
	cr_expect_eq(parse_guarded("\x16\x03\x01\x00\x04\x01\x01\x00\x00", 9, &h, &why), -EBADMSG);
	cr_expect_str_eq(why, "ClientHello: longer than 16 KiB");
	cr_expect_eq(parse_guarded("\x16\x03\x01\x00\x04\x01\x00\x00\x28", 9, &h, &why), -EBADMSG);
	cr_expect_str_eq(why, "ClientHello: shorter than its fixed fields");

	/* Another handshake message after the hello in its record. */
	build(&w, &full, &o);
	put(&w, "\x0b\x00\x00\x00", 4);
	set_len(&w, o.rec, 2, w.n - o.rec - 2);
	expect_bad(&w, "ClientHello: more handshake data after it in its record", "trailing");

	/* An alert record where the hello's second fragment belongs. */
	{
		size_t len, mlen, cut = 100, n;
		uint8_t *buf = read_corpus("openssl_tls13_sni_alpn", &len), two[1024];
		const uint8_t *msg = message_of(buf, len, &mlen);

		n = fragment(msg, mlen, &cut, 1, two);
		two[5 + cut] = 21;
		cr_expect_eq(parse_guarded(two, n, &h, &why), -EBADMSG);
		cr_expect_str_eq(why,
				 "ClientHello: a record that is not a handshake before its end");
		free(buf);
	}
}

Test(tap_tls_hello, limits_bound_what_a_caller_buffers)
{
	struct builder w;
	struct offs o;
	struct tap_tls_hello h;
	const char *why = NULL;
	struct spec s = full;
	size_t mlen, sizes[8192], n;
	uint8_t *out;

	/* The largest hello accepted: a 16 KiB message in two records. */
	build(&w, &s, &o);
	{
		size_t pad = 4 + TAP_TLS_HELLO_MAX - (w.n - 5) - 4;

		put16(&w, 21);
		put16(&w, pad);
		memset(w.b + w.n, 0, pad);
		w.n += pad;
		set_len(&w, o.exts, 2, w.n - o.exts - 2);
		set_len(&w, o.hs, 3, w.n - o.hs - 3);
	}
	mlen = w.n - 5;
	cr_assert_eq(mlen, 4 + TAP_TLS_HELLO_MAX);
	out = malloc(2 * TAP_TLS_HELLO_BYTES_MAX);
	n = fragment(w.b + 5, mlen, (size_t[]){ 16384 }, 1, out);
	cr_assert_eq(parse_guarded(out, n, &h, &why), 1, "%s", why);
	cr_expect_str_eq(h.sni, "api.example.com");
	cr_expect_eq(h.len, n);

	/* One byte more: refused from its header on. */
	out[5 + 1] = 0;
	out[5 + 2] = 0x40;
	out[5 + 3] = 0x01;
	cr_expect_eq(parse_guarded(out, 9, &h, &why), -EBADMSG);
	cr_expect_str_eq(why, "ClientHello: longer than 16 KiB");

	/* The same 16 KiB in 1-byte records would take 96 KiB: refused at 32 KiB. */
	for (size_t i = 0; i < 8192; i++)
		sizes[i] = 1;
	free(out);
	out = malloc(6 * mlen);
	n = fragment(w.b + 5, mlen, sizes, 8192, out);
	cr_expect_eq(parse_guarded(out, TAP_TLS_HELLO_BYTES_MAX, &h, &why), -EBADMSG);
	cr_expect_str_eq(why, "ClientHello: its records take more than 32 KiB");
	/* 6-byte records: the one at 32760 still fits, the one at 32766 cannot. */
	for (size_t k = 32700; k < TAP_TLS_HELLO_BYTES_MAX; k++)
		cr_expect_eq(parse_guarded(out, k, &h, &why), k < 32766 ? 0 : -EBADMSG,
			     "cut at %zu", k);
	free(out);
}

/* Every result of a hostile input is within the contract, and a success is sane. */
static void parse_hostile(const uint8_t *in, size_t len, int *ok)
{
	struct tap_tls_hello h;
	const char *why = NULL;
	int ret = parse_guarded(in, len, &h, &why);

	cr_assert(ret == 0 || ret == 1 || ret == -EBADMSG, "ret %d", ret);
	if (ret == -EBADMSG)
		cr_assert_not_null(why, "a refusal names its reason");
	if (ret != 1)
		return;
	(*ok)++;
	cr_assert(h.len > 0 && h.len <= len);
	cr_assert_lt(strlen(h.sni), sizeof(h.sni));
	cr_assert_leq(h.nalpn, TAP_TLS_ALPN_MAX);
	cr_assert_leq(h.nalpn, h.alpn_total);
	for (unsigned i = 0; i < h.nalpn; i++)
		cr_assert_lt(strlen(h.alpn[i]), TAP_TLS_ALPN_LEN);
	cr_assert_eq(h.versions & ~(uint32_t)ALL_VERSIONS, 0);
}

Test(tap_tls_hello, flipped_bytes_never_crash)
{
	static const uint8_t masks[] = { 0x01, 0x80, 0xff };
	int ok = 0;

	for (size_t i = 0; i < NCLIENTS; i++) {
		size_t len;
		uint8_t *buf = read_corpus(clients[i].name, &len);

		for (size_t k = 0; k < len; k++) {
			for (size_t m = 0; m < sizeof(masks); m++) {
				buf[k] ^= masks[m];
				parse_hostile(buf, len, &ok);
				buf[k] ^= masks[m];
			}
		}
		free(buf);
	}
	/* Flips in randoms, key shares and cipher lists leave valid hellos: the check saw them. */
	cr_expect_gt(ok, 1000);
}
