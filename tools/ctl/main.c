/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sidetapctl: the user's tool. Reads captures (dump as JSON lines, har as
 * HAR 1.2), shows counters (stats, from the admin endpoint or the ring), and
 * makes the CA that TLS unwrapping mints certificates with (ca create).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "k8s.h"
#include "tap/frame.h"
#include "tap/ring.h"
#include "tap/sniff.h"
#include "tlx/tls.h"

/* JSON output */

/* Length of the valid UTF-8 sequence at <p> (1..4), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *p, size_t left)
{
	unsigned c = p[0];
	size_t n;
	unsigned min;

	if (c < 0x80)
		return 1;
	if ((c & 0xe0) == 0xc0)
		n = 2, min = 0x80;
	else if ((c & 0xf0) == 0xe0)
		n = 3, min = 0x800;
	else if ((c & 0xf8) == 0xf0)
		n = 4, min = 0x10000;
	else
		return 0;
	if (n > left)
		return 0;
	unsigned cp = c & (0x3f >> (n - 1));
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	/* Overlong forms, surrogates and values past U+10FFFF are not UTF-8. */
	if (cp < min || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return n;
}

static bool json_is_utf8(const char *p, size_t len)
{
	const unsigned char *u = (const unsigned char *)p;

	for (size_t i = 0; i < len;) {
		size_t n = utf8_len(u + i, len - i);

		if (n == 0 || u[i] == 0)
			return false;
		i += n;
	}
	return true;
}

static void json_str(FILE *f, const char *p, size_t len)
{
	const unsigned char *u = (const unsigned char *)p;

	fputc('"', f);
	for (size_t i = 0; i < len;) {
		unsigned c = u[i];
		size_t n;

		switch (c) {
		case '"':
			fputs("\\\"", f);
			i++;
			continue;
		case '\\':
			fputs("\\\\", f);
			i++;
			continue;
		case '\n':
			fputs("\\n", f);
			i++;
			continue;
		case '\r':
			fputs("\\r", f);
			i++;
			continue;
		case '\t':
			fputs("\\t", f);
			i++;
			continue;
		}
		if (c < 0x20) {
			fprintf(f, "\\u%04x", c);
			i++;
			continue;
		}
		n = utf8_len(u + i, len - i);
		if (n == 0) {
			fprintf(f, "\\u%04x", c);
			i++;
			continue;
		}
		fwrite(u + i, 1, n, f);
		i += n;
	}
	fputc('"', f);
}

static void json_cstr(FILE *f, const char *s)
{
	json_str(f, s, strlen(s));
}

static void json_base64(FILE *f, const void *p, size_t len)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *u = p;
	size_t i;

	fputc('"', f);
	for (i = 0; i + 3 <= len; i += 3) {
		unsigned v = (unsigned)u[i] << 16 | (unsigned)u[i + 1] << 8 | u[i + 2];

		fputc(tab[v >> 18], f);
		fputc(tab[(v >> 12) & 63], f);
		fputc(tab[(v >> 6) & 63], f);
		fputc(tab[v & 63], f);
	}
	if (i < len) {
		unsigned v = (unsigned)u[i] << 16 | (i + 1 < len ? (unsigned)u[i + 1] << 8 : 0);

		fputc(tab[v >> 18], f);
		fputc(tab[(v >> 12) & 63], f);
		fputc(i + 1 < len ? tab[(v >> 6) & 63] : '=', f);
		fputc('=', f);
	}
	fputc('"', f);
}

/* Writes bytes as "text" when they are UTF-8, else base64; then the encoding key. */
static void json_bytes(FILE *f, const char *key, const char *enc_key, struct tap_str s)
{
	bool text = json_is_utf8(s.p, s.len);

	fprintf(f, "\"%s\":", key);
	if (text)
		json_str(f, s.p, s.len);
	else
		json_base64(f, s.p, s.len);
	fprintf(f, ",\"%s\":\"%s\"", enc_key, text ? "utf-8" : "base64");
}

static void json_key_str(FILE *f, const char *key, struct tap_str s)
{
	fprintf(f, "\"%s\":", key);
	json_str(f, s.p, s.len);
}

/* reading capture files */

struct input {
	const char *path;
	const unsigned char *data;
	size_t len;
};

static int input_map(struct input *in, const char *path)
{
	struct stat st;
	int fd;

	in->path = path;
	in->data = NULL;
	in->len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1 || fstat(fd, &st) == -1) {
		fprintf(stderr, "sidetapctl: %s: %s\n", path, strerror(errno));
		if (fd != -1)
			close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		fprintf(stderr, "sidetapctl: %s: not a regular file\n", path);
		close(fd);
		return -1;
	}
	in->len = (size_t)st.st_size;
	if (in->len) {
		void *p = mmap(NULL, in->len, PROT_READ, MAP_PRIVATE, fd, 0);

		if (p == MAP_FAILED) {
			fprintf(stderr, "sidetapctl: %s: %s\n", path, strerror(errno));
			close(fd);
			return -1;
		}
		in->data = p;
	}
	close(fd);
	return 0;
}

static void input_unmap(struct input *in)
{
	if (in->data)
		munmap((void *)in->data, in->len);
	in->data = NULL;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Expands <path>: a directory gives its finished segments (*.msgpack, in name
 * order, which is time order); a file gives itself. Appends to *<list>.
 */
static int expand(const char *path, char ***list, size_t *n, size_t *cap)
{
	struct stat st;
	DIR *d;
	struct dirent *de;
	size_t first = *n;

	if (stat(path, &st) == -1) {
		fprintf(stderr, "sidetapctl: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		if (*n == *cap &&
		    !(*list = realloc(*list, (*cap = *cap * 2 + 16) * sizeof(char *))))
			return -1;
		(*list)[(*n)++] = strdup(path);
		return 0;
	}
	d = opendir(path);
	if (!d) {
		fprintf(stderr, "sidetapctl: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		char *full;

		if (l < 9 || strcmp(de->d_name + l - 8, ".msgpack") != 0)
			continue;
		if (*n == *cap &&
		    !(*list = realloc(*list, (*cap = *cap * 2 + 16) * sizeof(char *)))) {
			closedir(d);
			return -1;
		}
		full = malloc(strlen(path) + l + 2);
		sprintf(full, "%s/%s", path, de->d_name);
		(*list)[(*n)++] = full;
	}
	closedir(d);
	qsort(*list + first, *n - first, sizeof(char *), cmp_str);
	return 0;
}

typedef void (*frame_cb)(void *ctx, const struct tap_frame *f);

/*
 * Decodes every frame of every input, calling <cb>. A file that does not
 * start with a frame is not a capture: a clear error. A file that ends
 * inside a frame (a copy cut short) or turns bad later: the frames before are
 * shown, then the error. Returns 0 when every input was whole.
 */
static int for_each_frame(char **paths, size_t npaths, frame_cb cb, void *ctx)
{
	struct tap_decoder *dec = tap_decoder_new();
	int ret = 0;

	if (!dec)
		return 1;
	for (size_t i = 0; i < npaths; i++) {
		struct input in;
		size_t off = 0, count = 0;

		if (input_map(&in, paths[i]) != 0) {
			ret = 1;
			continue;
		}
		while (off < in.len) {
			struct tap_frame f;
			const char *why = "invalid";
			size_t used = 0;
			int r = tap_frame_decode(dec, in.data + off, in.len - off, &used, &f, &why);

			if (r != 0) {
				if (count == 0 && off == 0)
					fprintf(stderr,
						"sidetapctl: %s: not a sidetap capture file (%s at its first byte)\n",
						paths[i],
						r == -EAGAIN ? "ends inside the first frame" : why);
				else
					fprintf(stderr,
						"sidetapctl: %s: %s at byte %zu, after %zu frames; the rest of the file is skipped\n",
						paths[i], r == -EAGAIN ? "truncated frame" : why,
						off, count);
				ret = 1;
				break;
			}
			cb(ctx, &f);
			off += used;
			count++;
		}
		input_unmap(&in);
	}
	tap_decoder_free(dec);
	return ret;
}

/* dump */

struct filter {
	int type; /* 0: any */
	const char *host; /* Host header or destination host */
	int status; /* exact status, 0: any */
	int status_class; /* 1..5 for "2xx", 0: none */
};

static bool header_get(const struct tap_http_msg *m, const char *name, struct tap_str *out)
{
	size_t n = strlen(name);

	for (uint32_t i = 0; i < m->nheaders; i++) {
		if (m->headers[i].name.len == n &&
		    strncasecmp(m->headers[i].name.p, name, n) == 0) {
			*out = m->headers[i].value;
			return true;
		}
	}
	return false;
}

/* The host part of "IP:PORT" / "[IP]:PORT" or of a Host header value. */
static struct tap_str host_part(struct tap_str s)
{
	if (s.len && s.p[0] == '[') {
		const char *rb = memchr(s.p, ']', s.len);

		if (rb)
			return (struct tap_str){ s.p + 1, (uint32_t)(rb - s.p - 1) };
	}
	for (uint32_t i = s.len; i > 0; i--)
		if (s.p[i - 1] == ':')
			return (struct tap_str){ s.p, i - 1 };
	return s;
}

static bool str_ieq(struct tap_str s, const char *c)
{
	return s.len == strlen(c) && strncasecmp(s.p, c, s.len) == 0;
}

static bool filter_match(const struct filter *flt, const struct tap_frame *f)
{
	if (flt->type && (int)f->type != flt->type)
		return false;
	if (flt->host) {
		struct tap_str h;
		bool hit = str_ieq(host_part(f->dst), flt->host) ||
			   str_ieq(host_part(f->upstream), flt->host);

		if (!hit && f->type == TAP_FRAME_HTTP && header_get(&f->http.req, "host", &h))
			hit = str_ieq(host_part(h), flt->host);
		if (!hit)
			return false;
	}
	if (flt->status || flt->status_class) {
		if (f->type != TAP_FRAME_HTTP || !f->http.has_resp)
			return false;
		if (flt->status && f->http.resp.status != flt->status)
			return false;
		if (flt->status_class && f->http.resp.status / 100 != flt->status_class)
			return false;
	}
	return true;
}

static void json_headers(FILE *o, const struct tap_http_msg *m)
{
	fputs("\"headers\":[", o);
	for (uint32_t i = 0; i < m->nheaders; i++) {
		fputs(i ? ",[" : "[", o);
		json_str(o, m->headers[i].name.p, m->headers[i].name.len);
		fputc(',', o);
		json_str(o, m->headers[i].value.p, m->headers[i].value.len);
		fputc(']', o);
	}
	fputc(']', o);
}

static void json_msg_common(FILE *o, const struct tap_http_msg *m)
{
	fprintf(o, ",\"version\":\"%u.%u\",", m->version_major, m->version_minor);
	json_headers(o, m);
	fputc(',', o);
	json_bytes(o, "body", "body_encoding", m->body);
	fprintf(o, ",\"body_size\":%lu,\"body_truncated\":%s,\"chunked\":%s",
		(unsigned long)m->body_size, m->body_truncated ? "true" : "false",
		m->chunked ? "true" : "false");
}

static const char *const http_flag_names[] = {
	"desync", "upgrade", "headers_truncated", "body_until_close", "no_response", "head",
};

static void dump_tls(FILE *o, const struct tap_frame *f)
{
	static const uint32_t versions[] = { TAP_TLS_V10, TAP_TLS_V11, TAP_TLS_V12, TAP_TLS_V13 };
	bool first = true;

	fprintf(o, ",\"event\":\"%s\",\"side\":\"%s\",", tap_tls_event_name(f->tls.event),
		tap_tls_side_name(f->tls.side));
	json_key_str(o, "sni", f->tls.sni);
	fputs(",\"alpn_offered\":[", o);
	for (unsigned i = 0; i < f->tls.nalpn_offered; i++) {
		if (i)
			fputc(',', o);
		json_str(o, f->tls.alpn_offered[i].p, f->tls.alpn_offered[i].len);
	}
	fputs("],\"versions_offered\":[", o);
	for (unsigned i = 0; i < 4; i++) {
		if (!(f->tls.versions_offered & versions[i]))
			continue;
		fprintf(o, "%s\"%s\"", first ? "" : ",", tap_tls_version_name(versions[i]));
		first = false;
	}
	fputc(']', o);
	if (f->tls.event != TAP_TLS_UNWRAPPED) {
		fputc(',', o);
		json_key_str(o, "reason", f->tls.reason);
		return;
	}
	fprintf(o, ",\"version\":\"%s\",", tap_tls_version_name(f->tls.version));
	json_key_str(o, "cipher", f->tls.cipher);
	fputc(',', o);
	json_key_str(o, "alpn", f->tls.alpn);
	fputc(',', o);
	json_key_str(o, "upstream_verify", f->tls.upstream_verify);
}

static void dump_frame(void *ctx, const struct tap_frame *f)
{
	const struct filter *flt = ctx;
	FILE *o = stdout;
	char id[TAP_FRAME_ID_LEN];

	if (!filter_match(flt, f))
		return;
	fputs("{\"id\":", o);
	json_cstr(o, tap_frame_id(f, id, sizeof(id)));
	fprintf(o,
		",\"v\":%u,\"type\":\"%s\",\"gen\":\"%016lx\",\"worker\":%u,\"seq\":%lu,"
		"\"conn_id\":%lu,\"ts\":%lu,\"listener\":\"%s\",",
		f->version, tap_frame_type_name(f->type), (unsigned long)f->gen, f->worker,
		(unsigned long)f->seq, (unsigned long)f->conn_id, (unsigned long)f->ts_ns,
		tap_listener_name(f->listener));
	json_key_str(o, "client", f->client);
	fputc(',', o);
	json_key_str(o, "dst", f->dst);
	fputc(',', o);
	json_key_str(o, "upstream", f->upstream);
	switch (f->type) {
	case TAP_FRAME_CONN:
		fprintf(o, ",\"event\":\"%s\"", f->conn.event == TAP_CONN_OPEN ? "open" : "close");
		if (f->conn.event == TAP_CONN_CLOSE)
			fprintf(o,
				",\"proto\":\"%s\",\"reason\":\"%s\",\"bytes_c2u\":%lu,\"bytes_u2c\":%lu,\"open_ts\":%lu",
				tap_proto_name(f->conn.proto),
				tap_close_reason_name(f->conn.reason),
				(unsigned long)f->conn.bytes_c2u, (unsigned long)f->conn.bytes_u2c,
				(unsigned long)f->conn.open_ts_ns);
		break;
	case TAP_FRAME_HTTP: {
		const struct tap_http_msg *rq = &f->http.req, *rs = &f->http.resp;
		bool first = true;

		fprintf(o, ",\"pair\":%lu,\"request\":{", (unsigned long)f->http.pair);
		json_key_str(o, "method", rq->method);
		fputc(',', o);
		json_key_str(o, "target", rq->target);
		json_msg_common(o, rq);
		fputs("},\"response\":", o);
		if (f->http.has_resp) {
			fprintf(o, "{\"status\":%u,", rs->status);
			json_key_str(o, "reason", rs->reason);
			json_msg_common(o, rs);
			fputs(",\"informational\":[", o);
			for (unsigned i = 0; i < rs->ninformational; i++)
				fprintf(o, "%s%u", i ? "," : "", rs->informational[i]);
			fputs("]}", o);
		} else {
			fputs("null", o);
		}
		fprintf(o, ",\"timing\":{\"req_start\":%lu,\"req_end\":%lu",
			(unsigned long)f->http.req_start, (unsigned long)f->http.req_end);
		if (f->http.has_resp)
			fprintf(o, ",\"resp_start\":%lu,\"resp_end\":%lu",
				(unsigned long)f->http.resp_start, (unsigned long)f->http.resp_end);
		fputs("},\"flags\":[", o);
		for (unsigned b = 0; b < sizeof(http_flag_names) / sizeof(http_flag_names[0]);
		     b++) {
			if (f->http.flags & (1u << b)) {
				fprintf(o, "%s\"%s\"", first ? "" : ",", http_flag_names[b]);
				first = false;
			}
		}
		fputc(']', o);
		if (f->http.flags & TAP_HTTP_F_DESYNC)
			fprintf(o, ",\"desync_off\":%lu,\"desync_dir\":\"%s\"",
				(unsigned long)f->http.desync_off,
				tap_dir_name(f->http.desync_dir));
		if (f->http.has_tls) {
			fprintf(o, ",\"tls\":{\"version\":\"%s\",",
				tap_tls_version_name(f->http.tls.version));
			json_key_str(o, "cipher", f->http.tls.cipher);
			fputc(',', o);
			json_key_str(o, "sni", f->http.tls.sni);
			fputc('}', o);
		}
		break;
	}
	case TAP_FRAME_TCP:
		fprintf(o, ",\"dir\":\"%s\",\"off\":%lu,", tap_dir_name(f->tcp.dir),
			(unsigned long)f->tcp.off);
		json_bytes(o, "data", "data_encoding", f->tcp.data);
		fprintf(o, ",\"data_size\":%u", f->tcp.data.len);
		break;
	case TAP_FRAME_TLS:
		dump_tls(o, f);
		break;
	}
	fputs("}\n", o);
}

/* har */

struct har {
	bool first;
	unsigned long entries;
};

static void iso8601(FILE *o, uint64_t ns)
{
	time_t s = (time_t)(ns / 1000000000ull);
	struct tm tm;
	char buf[40];

	gmtime_r(&s, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(o, "\"%s.%03luZ\"", buf, (unsigned long)(ns / 1000000 % 1000));
}

static double ms_between(uint64_t a, uint64_t b)
{
	return b >= a && a ? (double)(b - a) / 1e6 : 0.0;
}

static void har_headers(FILE *o, const struct tap_http_msg *m)
{
	fputs("\"headers\":[", o);
	for (uint32_t i = 0; i < m->nheaders; i++) {
		fputs(i ? ",{\"name\":" : "{\"name\":", o);
		json_str(o, m->headers[i].name.p, m->headers[i].name.len);
		fputs(",\"value\":", o);
		json_str(o, m->headers[i].value.p, m->headers[i].value.len);
		fputc('}', o);
	}
	fputc(']', o);
}

static void har_query(FILE *o, struct tap_str target)
{
	const char *q = memchr(target.p, '?', target.len), *end = target.p + target.len;
	bool first = true;

	fputs("\"queryString\":[", o);
	for (const char *p = q ? q + 1 : end; p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p)), *stop = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(stop - p));

		if (stop > p) {
			fputs(first ? "{\"name\":" : ",{\"name\":", o);
			json_str(o, p, (size_t)((eq ? eq : stop) - p));
			fputs(",\"value\":", o);
			if (eq)
				json_str(o, eq + 1, (size_t)(stop - eq - 1));
			else
				fputs("\"\"", o);
			fputc('}', o);
			first = false;
		}
		p = stop + 1;
	}
	fputc(']', o);
}

static void har_url(FILE *o, const struct tap_frame *f)
{
	struct tap_str t = f->http.req.target, host;
	char *url;
	size_t n;

	/* Absolute-form targets (requests to a forward proxy) are URLs already. */
	if (t.len > 7 &&
	    (strncasecmp(t.p, "http://", 7) == 0 || strncasecmp(t.p, "https://", 8) == 0)) {
		json_str(o, t.p, t.len);
		return;
	}
	if (!header_get(&f->http.req, "host", &host))
		host = f->dst;
	n = host.len + t.len + 16;
	url = malloc(n);
	if (!url) {
		fputs("\"\"", o);
		return;
	}
	/* CONNECT's target is an authority: no path. */
	if (str_ieq(f->http.req.method, "CONNECT"))
		n = (size_t)snprintf(url, n, "http://%.*s", (int)t.len, t.p);
	else
		n = (size_t)snprintf(url, n, "http://%.*s%.*s", (int)host.len, host.p, (int)t.len,
				     t.p);
	json_str(o, url, n);
	free(url);
}

static void har_mime(FILE *o, const struct tap_http_msg *m)
{
	struct tap_str ct;

	fputs("\"mimeType\":", o);
	if (header_get(m, "content-type", &ct))
		json_str(o, ct.p, ct.len);
	else
		fputs("\"\"", o);
}

static void har_frame(void *ctx, const struct tap_frame *f)
{
	struct har *h = ctx;
	const struct tap_http_msg *rq = &f->http.req, *rs = &f->http.resp;
	FILE *o = stdout;
	char id[TAP_FRAME_ID_LEN];
	double send, wait, recv;

	if (f->type != TAP_FRAME_HTTP)
		return;
	send = ms_between(f->http.req_start, f->http.req_end);
	wait = f->http.has_resp ? ms_between(f->http.req_end, f->http.resp_start) : 0;
	recv = f->http.has_resp ? ms_between(f->http.resp_start, f->http.resp_end) : 0;
	fputs(h->first ? "\n    {" : ",\n    {", o);
	h->first = false;
	h->entries++;
	fputs("\"startedDateTime\":", o);
	iso8601(o, f->http.req_start ? f->http.req_start : f->ts_ns);
	fprintf(o, ",\"time\":%.3f,\"request\":{\"method\":", send + wait + recv);
	json_str(o, rq->method.p, rq->method.len);
	fputs(",\"url\":", o);
	har_url(o, f);
	fprintf(o, ",\"httpVersion\":\"HTTP/%u.%u\",\"cookies\":[],", rq->version_major,
		rq->version_minor);
	har_headers(o, rq);
	fputc(',', o);
	har_query(o, rq->target);
	if (rq->body_size) {
		fputs(",\"postData\":{", o);
		har_mime(o, rq);
		/* HAR has no encoding for postData: binary bodies are left out, the size stays. */
		if (json_is_utf8(rq->body.p, rq->body.len)) {
			fputs(",\"text\":", o);
			json_str(o, rq->body.p, rq->body.len);
		}
		fputs(",\"params\":[]}", o);
	}
	fprintf(o, ",\"headersSize\":-1,\"bodySize\":%lu},\"response\":{",
		(unsigned long)rq->body_size);
	if (f->http.has_resp) {
		fprintf(o, "\"status\":%u,\"statusText\":", rs->status);
		json_str(o, rs->reason.p, rs->reason.len);
		fprintf(o, ",\"httpVersion\":\"HTTP/%u.%u\",\"cookies\":[],", rs->version_major,
			rs->version_minor);
		har_headers(o, rs);
		fprintf(o, ",\"content\":{\"size\":%lu,", (unsigned long)rs->body_size);
		har_mime(o, rs);
		fputs(",\"text\":", o);
		if (json_is_utf8(rs->body.p, rs->body.len)) {
			json_str(o, rs->body.p, rs->body.len);
		} else {
			json_base64(o, rs->body.p, rs->body.len);
			fputs(",\"encoding\":\"base64\"", o);
		}
		fprintf(o, "},\"redirectURL\":\"\",\"headersSize\":-1,\"bodySize\":%lu}",
			(unsigned long)rs->body_size);
	} else {
		/* No response (the connection ended first): status 0, as browsers record it. */
		fputs("\"status\":0,\"statusText\":\"\",\"httpVersion\":\"\",\"cookies\":[],"
		      "\"headers\":[],\"content\":{\"size\":0,\"mimeType\":\"\"},\"redirectURL\":\"\","
		      "\"headersSize\":-1,\"bodySize\":-1}",
		      o);
	}
	fprintf(o, ",\"cache\":{},\"timings\":{\"send\":%.3f,\"wait\":%.3f,\"receive\":%.3f}", send,
		wait, recv);
	fputs(",\"serverIPAddress\":", o);
	json_str(o, host_part(f->upstream).p, host_part(f->upstream).len);
	fprintf(o, ",\"connection\":\"%lu\",\"_sidetap\":{\"id\":", (unsigned long)f->conn_id);
	json_cstr(o, tap_frame_id(f, id, sizeof(id)));
	fprintf(o,
		",\"listener\":\"%s\",\"request_body_truncated\":%s,\"response_body_truncated\":%s,\"flags\":%u}}",
		tap_listener_name(f->listener), rq->body_truncated ? "true" : "false",
		rs->body_truncated ? "true" : "false", f->http.flags);
}

/* stats */

/* GET <path> from the admin endpoint at <addr> (HOST:PORT); returns the body or NULL. */
static char *http_get(const char *addr, const char *path)
{
	char host[256], req[512], *colon, *buf = NULL;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	size_t len = 0, cap = 0;
	int fd, ret;

	if (strlen(addr) >= sizeof(host))
		return NULL;
	strcpy(host, addr);
	colon = strrchr(host, ':');
	if (!colon)
		return NULL;
	*colon = '\0';
	if (host[0] == '[') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	ret = getaddrinfo(host, colon + 1, &hints, &res);
	if (ret != 0)
		return NULL;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1 || connect(fd, res->ai_addr, res->ai_addrlen) == -1) {
		freeaddrinfo(res);
		if (fd != -1)
			close(fd);
		return NULL;
	}
	freeaddrinfo(res);
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr);
	if (write(fd, req, strlen(req)) < 0) {
		close(fd);
		return NULL;
	}
	for (;;) {
		ssize_t n;

		if (len + 4096 + 1 > cap) {
			char *nb = realloc(buf, cap = cap * 2 + 8192);

			if (!nb) {
				free(buf);
				close(fd);
				return NULL;
			}
			buf = nb;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (!buf)
		return NULL;
	buf[len] = '\0';
	if (strncmp(buf, "HTTP/1.1 200", 12) != 0) {
		free(buf);
		return NULL;
	}
	char *body = strstr(buf, "\r\n\r\n");

	if (!body) {
		free(buf);
		return NULL;
	}
	memmove(buf, body + 4, strlen(body + 4) + 1);
	return buf;
}

/* Sums the samples of metric <name> (every label set) in Prometheus text. */
static double metric_sum(const char *text, const char *name, const char *label)
{
	size_t n = strlen(name);
	double v = 0;

	for (const char *line = text; line && *line;) {
		const char *next = strchr(line, '\n');

		if (strncmp(line, name, n) == 0 && (line[n] == ' ' || line[n] == '{')) {
			size_t ll = next ? (size_t)(next - line) : strlen(line);
			const char *sp = line + ll;

			/* The value follows the line's last space. */
			while (sp > line && sp[-1] != ' ')
				sp--;
			if (sp > line && (!label || memmem(line, ll, label, strlen(label))))
				v += strtod(sp, NULL);
		}
		line = next ? next + 1 : NULL;
	}
	return v;
}

static int stats_admin(const char *addr)
{
	char *m = http_get(addr, "/metrics");
	static const char *const kinds[] = { "inbound", "outbound" };

	if (!m) {
		fprintf(stderr,
			"sidetapctl: cannot read http://%s/metrics: is sidetap running with --admin-addr %s? (or use --ring PATH)\n",
			addr, addr);
		return 1;
	}
	printf("sidetap at %s\n", addr);
	for (int k = 0; k < 2; k++) {
		char l[64];

		snprintf(l, sizeof(l), "listener=\"%s\"", kinds[k]);
		printf("  %-9s connections: accepted %.0f, active %.0f, closed %.0f; bytes: client->upstream %.0f, upstream->client %.0f\n",
		       kinds[k], metric_sum(m, "sidetap_connections_accepted_total", l),
		       metric_sum(m, "sidetap_connections_active", l),
		       metric_sum(m, "sidetap_connections_closed_total", l),
		       metric_sum(m, "sidetap_bytes_total",
				  k ? "listener=\"outbound\",direction=\"client_to_upstream\"" :
				      "listener=\"inbound\",direction=\"client_to_upstream\""),
		       metric_sum(m, "sidetap_bytes_total",
				  k ? "listener=\"outbound\",direction=\"upstream_to_client\"" :
				      "listener=\"inbound\",direction=\"upstream_to_client\""));
	}
	printf("  errors: connect %.0f, connect timeouts %.0f, resets %.0f, loop guard %.0f, accept %.0f\n",
	       metric_sum(m, "sidetap_connect_errors_total", NULL),
	       metric_sum(m, "sidetap_connect_timeouts_total", NULL),
	       metric_sum(m, "sidetap_resets_total", NULL),
	       metric_sum(m, "sidetap_loop_guard_total", NULL),
	       metric_sum(m, "sidetap_accept_errors_total", NULL));
	if (strstr(m, "sidetap_capture_frames_total"))
		printf("  capture: frames %.0f, dropped %.0f (%.0f bytes), shipped %.0f, ring %.0f of %.0f bytes in use; uploader %s, restarts %.0f\n",
		       metric_sum(m, "sidetap_capture_frames_total", NULL),
		       metric_sum(m, "sidetap_capture_dropped_frames_total", NULL),
		       metric_sum(m, "sidetap_capture_dropped_bytes_total", NULL),
		       metric_sum(m, "sidetap_capture_consumed_frames_total", NULL),
		       metric_sum(m, "sidetap_capture_ring_used_bytes", NULL),
		       metric_sum(m, "sidetap_capture_ring_size_bytes", NULL),
		       metric_sum(m, "sidetap_uploader_up", NULL) > 0 ? "up" : "down",
		       metric_sum(m, "sidetap_uploader_restarts_total", NULL));
	else
		printf("  capture: off\n");
	free(m);
	return 0;
}

static int stats_ring(const char *path)
{
	struct tap_ring *r;
	char err[256];

	if (tap_ring_open(path, &r, err, sizeof(err)) != 0) {
		fprintf(stderr, "sidetapctl: %s\n", err);
		return 1;
	}
	printf("ring %s: generation %016lx, %s, producer pid %u, %u rings of %lu bytes\n", path,
	       (unsigned long)tap_ring_generation(r),
	       tap_ring_state(r) == TAP_RING_STOPPED ? "stopped" : "running",
	       tap_ring_producer_pid(r), tap_ring_count(r), (unsigned long)tap_ring_size(r));
	for (unsigned i = 0; i < tap_ring_count(r); i++) {
		struct tap_ring_stats st;

		tap_ring_stats(r, i, &st);
		printf("  ring %u: frames %lu (%lu bytes), dropped %lu (%lu bytes), shipped %lu, waiting %lu bytes\n",
		       i, (unsigned long)st.frames, (unsigned long)st.bytes,
		       (unsigned long)st.dropped_frames, (unsigned long)st.dropped_bytes,
		       (unsigned long)st.consumed_frames, (unsigned long)(st.head - st.tail));
	}
	tap_ring_close(r, false);
	return 0;
}

/* commands */

static void usage(FILE *o)
{
	fputs("usage: sidetapctl COMMAND [ARGS]...\n"
	      "\n"
	      "  dump PATH...    captured frames as JSON lines (files, or directories of segments)\n"
	      "  har PATH...     the HTTP pairs as HAR 1.2 (devtools, HAR viewers)\n"
	      "  stats           connections, pairs and drops of a running sidetap\n"
	      "  ca create       a CA for TLS unwrapping (ca.crt, ca.key)\n" CTL_K8S_USAGE "\n"
	      "sidetapctl COMMAND --help describes each.\n",
	      o);
}

static void usage_dump(FILE *o)
{
	fputs("usage: sidetapctl dump [--type conn|http|tcp|tls] [--host HOST] [--status CODE|Nxx]\n"
	      "                      PATH...\n"
	      "\n"
	      "Prints every frame of the capture files (a directory: its *.msgpack segments, in\n"
	      "time order) as one JSON object per line, with the keys of capture/FORMAT.md:\n"
	      "id, type, conn_id, listener, client, dst, upstream, and for http frames request\n"
	      "{method, target, version, headers [[name, value]...], body, body_encoding,\n"
	      "body_size, body_truncated} and response {status, reason, ...} (and tls {version,\n"
	      "cipher, sni} when sidetap unwrapped the connection's TLS), for tls frames event,\n"
	      "side, sni, alpn_offered, versions_offered and reason or version, cipher, alpn,\n"
	      "upstream_verify. Bodies and tcp data are UTF-8 text when they are, else base64,\n"
	      "as body_encoding / data_encoding say.\n"
	      "\n"
	      "  --type T        only frames of type T\n"
	      "  --host HOST     only frames whose destination, upstream or Host header is HOST\n"
	      "  --status S      only http frames with response status S (200) or class S (5xx)\n",
	      o);
}

static void usage_har(FILE *o)
{
	fputs("usage: sidetapctl har PATH... > capture.har\n"
	      "\n"
	      "Writes the HTTP request/response pairs of the capture files as a HAR 1.2 log on\n"
	      "stdout. Binary response bodies are base64 (content.encoding); pairs without a\n"
	      "response have status 0.\n",
	      o);
}

static void usage_stats(FILE *o)
{
	fputs("usage: sidetapctl stats [--admin HOST:PORT | --ring PATH]\n"
	      "\n"
	      "Shows a running sidetap's connections, bytes, errors and capture counters, read\n"
	      "from its admin endpoint (default 127.0.0.1:4191), or the counters of a ring file\n"
	      "(--ring, e.g. /dev/shm/sidetap.ring) when there is no admin endpoint.\n",
	      o);
}

static void usage_ca(FILE *o)
{
	fputs("usage: sidetapctl ca create --out DIR [--name CN] [--days N]\n"
	      "\n"
	      "Creates the CA that sidetap mints server certificates with when it unwraps TLS:\n"
	      "DIR/ca.key (ECDSA P-256, PEM, mode 0600) and DIR/ca.crt (self-signed, CA:TRUE,\n"
	      "mode 0644). Clients whose TLS sidetap unwraps must trust ca.crt; keep ca.key\n"
	      "secret (a Kubernetes Secret, one CA per cluster). Existing files are never\n"
	      "overwritten. DIR is created (mode 0700) when it does not exist.\n"
	      "\n"
	      "  --out DIR       where to write ca.crt and ca.key\n"
	      "  --name CN       the CA's common name (default \"sidetap CA\"; at most 64 bytes)\n"
	      "  --days N        how long the CA is valid, 1 to 36500 (default 365)\n",
	      o);
}

/* The flag at argv[i] came last, without its value: a usage error that says so. */
static int needs_value(const char *cmd, const char *flag)
{
	fprintf(stderr, "sidetapctl %s: %s needs a value (see sidetapctl %s --help)\n", cmd, flag,
		cmd);
	return 2;
}

static int cmd_paths(int argc, char **argv, bool dump)
{
	struct filter flt = { 0 };
	char **paths = NULL;
	size_t n = 0, cap = 0;
	int ret;

	bool missing = false;

	for (int i = 1; i < argc; i++) {
		const char *v;

		if (tap_arg_is_help(argv[i])) {
			dump ? usage_dump(stdout) : usage_har(stdout);
			return 0;
		}
		if (dump && (v = tap_arg_value(argc, argv, &i, "--type", &missing))) {
			if (strcmp(v, "conn") == 0)
				flt.type = TAP_FRAME_CONN;
			else if (strcmp(v, "http") == 0)
				flt.type = TAP_FRAME_HTTP;
			else if (strcmp(v, "tcp") == 0)
				flt.type = TAP_FRAME_TCP;
			else if (strcmp(v, "tls") == 0)
				flt.type = TAP_FRAME_TLS;
			else {
				fprintf(stderr,
					"sidetapctl dump: --type: invalid value '%s': accepted: conn, http, tcp, tls\n",
					v);
				return 2;
			}
			continue;
		}
		if (dump && (v = tap_arg_value(argc, argv, &i, "--host", &missing))) {
			flt.host = v;
			continue;
		}
		if (dump && (v = tap_arg_value(argc, argv, &i, "--status", &missing))) {
			char *end;
			long s = strtol(v, &end, 10);

			if (strlen(v) == 3 && v[0] >= '1' && v[0] <= '5' &&
			    strcmp(v + 1, "xx") == 0) {
				flt.status_class = v[0] - '0';
			} else if (*end == '\0' && end != v && s >= 100 && s <= 999) {
				flt.status = (int)s;
			} else {
				fprintf(stderr,
					"sidetapctl dump: --status: invalid value '%s': a status (200) or a class (2xx)\n",
					v);
				return 2;
			}
			continue;
		}
		if (missing)
			return needs_value(argv[0], argv[i]);
		if (argv[i][0] == '-' && argv[i][1] == '-') {
			fprintf(stderr,
				"sidetapctl %s: unknown flag '%s' (see sidetapctl %s --help)\n",
				argv[0], argv[i], argv[0]);
			return 2;
		}
		if (expand(argv[i], &paths, &n, &cap) != 0) {
			ret = 1;
			goto out;
		}
	}
	if (n == 0) {
		fprintf(stderr, "sidetapctl %s: no capture file given (see sidetapctl %s --help)\n",
			argv[0], argv[0]);
		return 2;
	}
	if (dump) {
		ret = for_each_frame(paths, n, dump_frame, &flt);
	} else {
		struct har h = { .first = true };

		printf("{\"log\":{\"version\":\"1.2\",\"creator\":{\"name\":\"sidetap\",\"version\":\"%s\"},\"pages\":[],\"entries\":[",
		       SIDETAP_VERSION);
		ret = for_each_frame(paths, n, har_frame, &h);
		printf("%s]}}\n", h.entries ? "\n  " : "");
	}
out:
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	return ret;
}

static int cmd_stats(int argc, char **argv)
{
	const char *admin = "127.0.0.1:4191", *ring = NULL, *v;
	bool missing = false;

	for (int i = 1; i < argc; i++) {
		if (tap_arg_is_help(argv[i])) {
			usage_stats(stdout);
			return 0;
		}
		if ((v = tap_arg_value(argc, argv, &i, "--admin", &missing))) {
			admin = v;
		} else if ((v = tap_arg_value(argc, argv, &i, "--ring", &missing))) {
			ring = v;
		} else if (missing) {
			return needs_value("stats", argv[i]);
		} else {
			fprintf(stderr,
				"sidetapctl stats: unexpected argument '%s' (see sidetapctl stats --help)\n",
				argv[i]);
			return 2;
		}
	}
	return ring ? stats_ring(ring) : stats_admin(admin);
}

static int cmd_ca_create(int argc, char **argv)
{
	const char *out = NULL, *name = NULL, *v;
	unsigned long days = 365;
	bool missing = false;
	char err[1024];
	int ret;

	for (int i = 1; i < argc; i++) {
		if (tap_arg_is_help(argv[i])) {
			usage_ca(stdout);
			return 0;
		}
		if ((v = tap_arg_value(argc, argv, &i, "--out", &missing))) {
			out = v;
		} else if ((v = tap_arg_value(argc, argv, &i, "--name", &missing))) {
			name = v;
		} else if ((v = tap_arg_value(argc, argv, &i, "--days", &missing))) {
			char *end;

			errno = 0;
			days = strtoul(v, &end, 10);
			if (errno || end == v || *end || v[0] == '-' || days < 1 || days > 36500) {
				fprintf(stderr,
					"sidetapctl ca create: --days: invalid value '%s': a number of days from 1 to 36500\n",
					v);
				return 2;
			}
		} else if (missing) {
			return needs_value("ca create", argv[i]);
		} else {
			fprintf(stderr,
				"sidetapctl ca create: unexpected argument '%s' (see sidetapctl ca create --help)\n",
				argv[i]);
			return 2;
		}
	}
	if (!out || !out[0]) {
		fprintf(stderr,
			"sidetapctl ca create: --out DIR is required (see sidetapctl ca create --help)\n");
		return 2;
	}
	if (name && (!name[0] || strlen(name) > 64)) {
		fprintf(stderr, "sidetapctl ca create: --name: invalid value '%s': 1 to 64 bytes\n",
			name);
		return 2;
	}
	if (mkdir(out, 0700) == -1 && errno != EEXIST) {
		fprintf(stderr, "sidetapctl ca create: %s: %s\n", out, strerror(errno));
		return 1;
	}
	ret = tlx_ca_create(out, name, (unsigned)days, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "sidetapctl ca create: %s\n", err);
		return 1;
	}
	printf("wrote %s/ca.crt (\"%s\", valid %lu days) and %s/ca.key (mode 0600)\n", out,
	       name ? name : "sidetap CA", days, out);
	return 0;
}

static int cmd_ca(int argc, char **argv)
{
	if (argc < 2) {
		usage_ca(stderr);
		return 2;
	}
	if (tap_arg_is_help(argv[1])) {
		usage_ca(stdout);
		return 0;
	}
	if (strcmp(argv[1], "create") == 0)
		return cmd_ca_create(argc - 1, argv + 1);
	fprintf(stderr,
		"sidetapctl ca: unknown subcommand '%s' (subcommands: create; see sidetapctl ca --help)\n",
		argv[1]);
	return 2;
}

int main(int argc, char **argv)
{
	if (argc < 2 || tap_arg_is_help(argv[1])) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("sidetapctl %s\n", SIDETAP_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "dump") == 0)
		return cmd_paths(argc - 1, argv + 1, true);
	if (strcmp(argv[1], "har") == 0)
		return cmd_paths(argc - 1, argv + 1, false);
	if (strcmp(argv[1], "stats") == 0)
		return cmd_stats(argc - 1, argv + 1);
	if (strcmp(argv[1], "ca") == 0)
		return cmd_ca(argc - 1, argv + 1);
	if (ctl_k8s_is_command(argv[1]))
		return ctl_k8s_main(argc - 1, argv + 1);
	fprintf(stderr,
		"sidetapctl: unknown command '%s' (commands: dump, har, stats, ca, install, uninstall, inject, wait-ready; see sidetapctl --help)\n",
		argv[1]);
	return 2;
}
