/* SPDX-License-Identifier: Apache-2.0 */
/* The TLS ClientHello sniffer: SNI, ALPN and offered versions from a client's first records. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tap/tls_hello.h"

#define REC_HDR 5
#define HS_HDR 4
#define REC_MAX 16384 /* a record's fragment: at most 2^14 bytes (RFC 8446 5.1) */
/*
 * The shortest ClientHello body: legacy_version, random, an empty session id,
 * one cipher suite, one compression method.
 */
#define HELLO_MIN (2 + 32 + 1 + 2 + 2 + 1 + 1)

#define EXT_SERVER_NAME 0
#define EXT_ALPN 16
#define EXT_SUPPORTED_VERSIONS 43

/* A bounded reader over the ClientHello's body: every read checks what is left. */
struct rd {
	const uint8_t *p;
	size_t left;
};

static bool rd_u8(struct rd *r, unsigned *v)
{
	if (r->left < 1)
		return false;
	*v = r->p[0];
	r->p++;
	r->left--;
	return true;
}

static bool rd_u16(struct rd *r, unsigned *v)
{
	if (r->left < 2)
		return false;
	*v = (unsigned)r->p[0] << 8 | r->p[1];
	r->p += 2;
	r->left -= 2;
	return true;
}

/* Splits the next <n> bytes off <r> into <sub>. */
static bool rd_sub(struct rd *r, size_t n, struct rd *sub)
{
	if (r->left < n)
		return false;
	sub->p = r->p;
	sub->left = n;
	r->p += n;
	r->left -= n;
	return true;
}

/* A vector: its length in <lenbytes> (1 or 2) bytes, then that many bytes, all inside <r>. */
static bool rd_vec(struct rd *r, unsigned lenbytes, struct rd *sub)
{
	unsigned n;

	if (!(lenbytes == 1 ? rd_u8(r, &n) : rd_u16(r, &n)))
		return false;
	return rd_sub(r, n, sub);
}

static uint32_t version_bit(unsigned v)
{
	switch (v) {
	case 0x0301:
		return TAP_TLS_V10;
	case 0x0302:
		return TAP_TLS_V11;
	case 0x0303:
		return TAP_TLS_V12;
	case 0x0304:
		return TAP_TLS_V13;
	}
	/* SSL 3.0, drafts, GREASE (RFC 8701): not versions we name. */
	return 0;
}

/* server_name (RFC 6066 3): the first host_name; other name types are skipped. */
static int parse_sni(struct rd *ext, struct tap_tls_hello *out, const char **why)
{
	struct rd list, name;
	bool have = false;

	if (!rd_vec(ext, 2, &list) || ext->left || !list.left) {
		*why = "server_name: bad list length";
		return -EBADMSG;
	}
	while (list.left) {
		unsigned type;

		if (!rd_u8(&list, &type) || !rd_vec(&list, 2, &name)) {
			*why = "server_name: bad name length";
			return -EBADMSG;
		}
		if (type != 0 || have)
			continue;
		/* What servers refuse too (OpenSSL: empty, longer than 255, or with a NUL). */
		if (name.left == 0 || name.left > TAP_TLS_SNI_MAX) {
			*why = "server_name: host_name empty or longer than 255 bytes";
			return -EBADMSG;
		}
		if (memchr(name.p, '\0', name.left)) {
			*why = "server_name: host_name holds a NUL byte";
			return -EBADMSG;
		}
		memcpy(out->sni, name.p, name.left);
		out->sni[name.left] = '\0';
		have = true;
	}
	return 0;
}

/* application_layer_protocol_negotiation (RFC 7301 3.1): a non-empty list of non-empty names. */
static int parse_alpn(struct rd *ext, struct tap_tls_hello *out, const char **why)
{
	struct rd list, name;

	if (!rd_vec(ext, 2, &list) || ext->left || !list.left) {
		*why = "alpn: bad list length";
		return -EBADMSG;
	}
	while (list.left) {
		if (!rd_vec(&list, 1, &name) || name.left == 0) {
			*why = "alpn: bad protocol name length";
			return -EBADMSG;
		}
		if (out->nalpn < TAP_TLS_ALPN_MAX) {
			size_t n =
				name.left < TAP_TLS_ALPN_LEN - 1 ? name.left : TAP_TLS_ALPN_LEN - 1;

			memcpy(out->alpn[out->nalpn], name.p, n);
			out->alpn[out->nalpn][n] = '\0';
			out->alpn_len[out->nalpn] = (uint8_t)name.left;
			out->nalpn++;
		}
		if (out->alpn_total < UINT8_MAX)
			out->alpn_total++;
	}
	return 0;
}

/* supported_versions (RFC 8446 4.2.1), the ClientHello form: a list of 2-byte versions. */
static int parse_versions(struct rd *ext, struct tap_tls_hello *out, const char **why)
{
	struct rd list;

	if (!rd_vec(ext, 1, &list) || ext->left || list.left < 2 || list.left % 2) {
		*why = "supported_versions: bad list length";
		return -EBADMSG;
	}
	out->versions = 0;
	while (list.left) {
		unsigned v = 0;

		rd_u16(&list, &v);
		out->versions |= version_bit(v);
	}
	return 0;
}

/* The ClientHello's body (after its 4-byte handshake header), all of it in <p>. */
static int parse_body(const uint8_t *p, size_t n, struct tap_tls_hello *out, const char **why)
{
	struct rd r = { p, n }, sub, exts;
	bool seen_sni = false, seen_alpn = false, seen_versions = false;
	unsigned legacy = 0;

	rd_u16(&r, &legacy); /* n >= HELLO_MIN */
	if (legacy >> 8 != 3) {
		*why = "ClientHello: legacy_version is not 3.x";
		return -EBADMSG;
	}
	out->versions = version_bit(legacy);
	rd_sub(&r, 32, &sub); /* random */
	if (!rd_vec(&r, 1, &sub) || sub.left > 32) {
		*why = "ClientHello: bad session id length";
		return -EBADMSG;
	}
	if (!rd_vec(&r, 2, &sub) || sub.left < 2 || sub.left % 2) {
		*why = "ClientHello: bad cipher suites length";
		return -EBADMSG;
	}
	if (!rd_vec(&r, 1, &sub) || sub.left < 1) {
		*why = "ClientHello: bad compression methods length";
		return -EBADMSG;
	}
	/* Clients from before extensions end here (RFC 5246 7.4.1.2). */
	if (r.left == 0)
		return 0;
	if (!rd_vec(&r, 2, &exts) || r.left) {
		*why = "ClientHello: extensions length does not match the message";
		return -EBADMSG;
	}
	while (exts.left) {
		struct rd ext;
		unsigned type;
		int ret = 0;

		if (!rd_u16(&exts, &type) || !rd_vec(&exts, 2, &ext)) {
			*why = "ClientHello: bad extension length";
			return -EBADMSG;
		}
		/* The same extension twice is refused by servers: two readers could take different ones. */
		switch (type) {
		case EXT_SERVER_NAME:
			if (seen_sni)
				goto err_twice;
			seen_sni = true;
			ret = parse_sni(&ext, out, why);
			break;
		case EXT_ALPN:
			if (seen_alpn)
				goto err_twice;
			seen_alpn = true;
			ret = parse_alpn(&ext, out, why);
			break;
		case EXT_SUPPORTED_VERSIONS:
			if (seen_versions)
				goto err_twice;
			seen_versions = true;
			ret = parse_versions(&ext, out, why);
			break;
		}
		if (ret)
			return ret;
	}
	return 0;

err_twice:
	*why = "ClientHello: an extension appears twice";
	return -EBADMSG;
}

/*
 * Walks the handshake records at the start of <buf>. The ClientHello may be
 * fragmented over several records (even its 4-byte header); its bytes are
 * gathered into <gather> only when it does not fit in the first record.
 */
int tap_tls_hello_parse(const void *buf, size_t len, struct tap_tls_hello *out, const char **why)
{
	const uint8_t *p = buf;
	uint8_t hs[HS_HDR], gather[HS_HDR + TAP_TLS_HELLO_MAX];
	const uint8_t *body = NULL;
	size_t pos = 0, got = 0, total = 0;
	const char *unused;
	int ret;

	if (!why)
		why = &unused;
	*why = NULL;
	memset(out, 0, sizeof(*out));
	for (;;) {
		size_t rlen, avail, take;

		if (pos + REC_HDR + 1 > TAP_TLS_HELLO_BYTES_MAX) {
			*why = "ClientHello: its records take more than 32 KiB";
			return -EBADMSG;
		}
		/* The header's bytes are checked as they arrive: garbage is refused early. */
		if (len > pos && p[pos] != 22) {
			*why = pos ? "ClientHello: a record that is not a handshake before its end" :
				     "not a TLS handshake record";
			return -EBADMSG;
		}
		if (len > pos + 1 && p[pos + 1] != 3) {
			*why = "TLS record: version is not 3.x";
			return -EBADMSG;
		}
		if (len > pos + 2 && p[pos + 2] > 4) {
			*why = "TLS record: version newer than 3.4";
			return -EBADMSG;
		}
		if (len < pos + REC_HDR)
			return 0;
		rlen = (size_t)p[pos + 3] << 8 | p[pos + 4];
		if (rlen == 0 || rlen > REC_MAX) {
			*why = rlen ? "TLS record: longer than 2^14 bytes" :
				      "TLS record: empty handshake record";
			return -EBADMSG;
		}
		if (pos + REC_HDR + rlen > TAP_TLS_HELLO_BYTES_MAX) {
			*why = "ClientHello: its records take more than 32 KiB";
			return -EBADMSG;
		}
		pos += REC_HDR;
		avail = len - pos < rlen ? len - pos : rlen;
		/* The handshake header, byte by byte: it may straddle records. */
		for (take = 0; got < HS_HDR && take < avail; take++)
			hs[got++] = p[pos + take];
		if (got >= 1 && hs[0] != 1) {
			*why = "TLS handshake: the first message is not a ClientHello";
			return -EBADMSG;
		}
		if (got == HS_HDR && !total) {
			size_t mlen = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];

			if (mlen > TAP_TLS_HELLO_MAX) {
				*why = "ClientHello: longer than 16 KiB";
				return -EBADMSG;
			}
			if (mlen < HELLO_MIN) {
				*why = "ClientHello: shorter than its fixed fields";
				return -EBADMSG;
			}
			total = HS_HDR + mlen;
			/* The common case: the whole message in the first record, parsed in place. */
			if (pos == REC_HDR && rlen >= total)
				body = p + pos + HS_HDR;
		}
		/* Gather the body's bytes in this record, up to the message's end. */
		if (total && !body) {
			size_t want = total - got, n = avail - take < want ? avail - take : want;

			memcpy(gather + got, p + pos + take, n);
			got += n;
			take += n;
		} else if (body) {
			take = avail < total ? avail : total;
			got = take;
		}
		if (avail < rlen)
			return 0;
		/* A whole record: nothing of another message may follow the ClientHello in it. */
		if (total && got >= total) {
			if (take < rlen) {
				*why = "ClientHello: more handshake data after it in its record";
				return -EBADMSG;
			}
			pos += rlen;
			break;
		}
		pos += rlen;
	}
	ret = parse_body(body ? body : gather + HS_HDR, total - HS_HDR, out, why);
	if (ret) {
		memset(out, 0, sizeof(*out));
		return ret;
	}
	out->len = pos;
	return 1;
}

char *tap_tls_versions_name(uint32_t mask, char *buf, size_t len)
{
	static const char *const names[] = { "TLS1.0", "TLS1.1", "TLS1.2", "TLS1.3" };
	size_t off = 0;

	if (!len)
		return buf;
	buf[0] = '\0';
	for (unsigned i = 0; i < 4; i++) {
		int n;

		if (!(mask & (1u << i)))
			continue;
		n = snprintf(buf + off, len - off, "%s%s", off ? "," : "", names[i]);
		if (n < 0 || (size_t)n >= len - off) {
			buf[off] = '\0'; /* whole names only */
			break;
		}
		off += (size_t)n;
	}
	return buf;
}

bool tap_tls_hello_offers(const struct tap_tls_hello *h, const char *proto, bool or_none)
{
	size_t n = strlen(proto);

	if (h->alpn_total == 0)
		return or_none;
	for (unsigned i = 0; i < h->nalpn && i < TAP_TLS_ALPN_MAX; i++)
		if (h->alpn_len[i] == n && n < TAP_TLS_ALPN_LEN &&
		    memcmp(h->alpn[i], proto, n) == 0)
			return true;
	return false;
}
