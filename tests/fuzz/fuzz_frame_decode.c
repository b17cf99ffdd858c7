/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target of tap_frame_decode() (capture/src/frame.c): decodes frame
 * after frame from the input, as a reader of a capture file does, and checks
 * what every success must satisfy: the frame re-encodes, decodes again to
 * bytes that re-encode identically, and each prefix of it is "truncated".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "tap/frame.h"

static void fail(const char *what, size_t off)
{
	fprintf(stderr, "fuzz_frame_decode: %s (frame at offset %zu)\n", what, off);
	abort();
}

static void check_frame(struct tap_decoder *dec2, const struct tap_frame *f, const uint8_t *in,
			size_t used, size_t off)
{
	size_t max = tap_frame_encoded_max(f), used2 = 0;
	uint8_t *a = malloc(max), *b;
	struct tap_frame g;
	const char *why = NULL;
	ssize_t n, n2;

	if (!a)
		return;
	n = tap_frame_encode(f, a, max);
	if (n <= 0)
		fail("a decoded frame does not re-encode", off);
	if (tap_frame_decode(dec2, a, (size_t)n, &used2, &g, &why) != 0 || used2 != (size_t)n)
		fail("a re-encoded frame does not decode", off);
	b = malloc((size_t)n);
	if (!b)
		goto out;
	/* Encoding is canonical: what decoding our own output gives encodes to the same bytes. */
	n2 = tap_frame_encode(&g, b, (size_t)n);
	if (n2 != n || memcmp(a, b, (size_t)n) != 0)
		fail("re-encoding is not a fixed point", off);
	/* Every strict prefix of a complete object is truncated, never invalid. */
	if (tap_frame_decode(dec2, in, used - 1, &used2, &g, &why) != -EAGAIN)
		fail("a prefix of a valid frame is not -EAGAIN", off);
	free(b);
out:
	free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct tap_decoder *dec, *dec2;
	size_t off = 0;

	if (!dec)
		dec = tap_decoder_new();
	if (!dec2)
		dec2 = tap_decoder_new();
	if (!dec || !dec2)
		return 0;
	/* Whatever the input, the cheap check never reads past it nor crashes. */
	tap_frame_check(data, size, NULL);
	while (off < size) {
		const char *why = NULL;
		struct tap_frame f;
		size_t used = 0;
		int ret;

		ret = tap_frame_decode(dec, data + off, size - off, &used, &f, &why);
		if (ret == -EAGAIN || ret == -EBADMSG || ret == -ENOMEM) {
			if (!why)
				fail("a failure without a reason", off);
			break;
		}
		if (ret != 0)
			fail("an error outside the contract", off);
		if (used == 0 || used > size - off)
			fail("used outside the input", off);
		/* The uploader's cheap check must pass every frame the decoder accepts. */
		if (tap_frame_check(data + off, used, &why) != 0) {
			fprintf(stderr, "tap_frame_check: %s\n", why);
			fail("a decodable frame that tap_frame_check refuses", off);
		}
		check_frame(dec2, &f, data + off, used, off);
		off += used;
	}
	return 0;
}
