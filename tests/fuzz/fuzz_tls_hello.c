/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target of tap_tls_hello_parse() (capture/src/tls_hello.c): any bytes as
 * a client's first flight. Besides the sanitizers, it checks the contract: a
 * known result with a reason for every refusal, a sane hello on success, the
 * same answer whatever follows the hello's records, "need more" for a prefix,
 * never "need more" past TAP_TLS_HELLO_BYTES_MAX, and the same fields when
 * the hello is re-fragmented over two records.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "tap/tls_hello.h"

#define ALL_VERSIONS (TAP_TLS_V10 | TAP_TLS_V11 | TAP_TLS_V12 | TAP_TLS_V13)

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_tls_hello: %s\n", what);
	abort();
}

static bool same_fields(const struct tap_tls_hello *a, const struct tap_tls_hello *b)
{
	if (strcmp(a->sni, b->sni) || a->nalpn != b->nalpn || a->alpn_total != b->alpn_total ||
	    a->versions != b->versions)
		return false;
	for (unsigned i = 0; i < a->nalpn; i++)
		if (strcmp(a->alpn[i], b->alpn[i]) || a->alpn_len[i] != b->alpn_len[i])
			return false;
	return true;
}

/* The hello's handshake message, gathered from its records (well-formed: it parsed). */
static uint8_t *message_of(const uint8_t *data, size_t len, size_t *mlen)
{
	uint8_t *msg = malloc(len);
	size_t pos = 0;

	*mlen = 0;
	if (!msg)
		return NULL;
	while (pos + 5 <= len) {
		size_t rlen = (size_t)data[pos + 3] << 8 | data[pos + 4];

		memcpy(msg + *mlen, data + pos + 5, rlen);
		*mlen += rlen;
		pos += 5 + rlen;
	}
	return msg;
}

static void check_refragmented(const uint8_t *data, const struct tap_tls_hello *h)
{
	struct tap_tls_hello h2;
	size_t mlen, cut, n;
	uint8_t *msg = message_of(data, h->len, &mlen), *two;
	int ret;

	if (!msg)
		return;
	/* A cut that depends on the input, inside the message, within one record's size. */
	cut = 1 + (data[h->len / 2] * 131u + h->len) % (mlen - 1);
	if (cut > 16384 || mlen - cut > 16384) {
		free(msg);
		return;
	}
	two = malloc(mlen + 10);
	if (!two) {
		free(msg);
		return;
	}
	n = 0;
	for (int r = 0; r < 2; r++) {
		size_t off = r ? cut : 0, len = r ? mlen - cut : cut;

		two[n++] = 22;
		two[n++] = 3;
		two[n++] = 3;
		two[n++] = (uint8_t)(len >> 8);
		two[n++] = (uint8_t)len;
		memcpy(two + n, msg + off, len);
		n += len;
	}
	ret = tap_tls_hello_parse(two, n, &h2, NULL);
	if (ret != 1 || h2.len != n || !same_fields(h, &h2))
		fail("the same hello in two records parses differently");
	free(two);
	free(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tap_tls_hello h, h2;
	const char *why = NULL;
	int ret, ret2;

	ret = tap_tls_hello_parse(data, size, &h, &why);
	if (ret == -EBADMSG) {
		if (!why)
			fail("a refusal without a reason");
		return 0;
	}
	if (ret == 0) {
		if (size >= TAP_TLS_HELLO_BYTES_MAX)
			fail("needs more past TAP_TLS_HELLO_BYTES_MAX");
		return 0;
	}
	if (ret != 1)
		fail("a result outside the contract");
	if (why)
		fail("a reason on success");
	if (h.len == 0 || h.len > size || strlen(h.sni) > TAP_TLS_SNI_MAX ||
	    h.nalpn > TAP_TLS_ALPN_MAX || h.nalpn > h.alpn_total || (h.versions & ~ALL_VERSIONS))
		fail("a hello outside its limits");
	for (unsigned i = 0; i < h.nalpn; i++)
		if (strlen(h.alpn[i]) >= TAP_TLS_ALPN_LEN || h.alpn_len[i] == 0)
			fail("an ALPN name outside its limits");
	/* What follows the hello's records is not read. */
	ret2 = tap_tls_hello_parse(data, h.len, &h2, NULL);
	if (ret2 != 1 || h2.len != h.len || !same_fields(&h, &h2))
		fail("the bytes after the hello changed the result");
	/* Its prefixes need more. */
	if (tap_tls_hello_parse(data, h.len - 1, &h2, NULL) != 0 ||
	    tap_tls_hello_parse(data, h.len / 2, &h2, NULL) != 0)
		fail("a prefix of a hello does not need more");
	check_refragmented(data, &h);
	return 0;
}
