/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The collector sink: each batch is one POST of a capture file (the bytes of
 * a file: segment; application/vnd.sidetap.frames+msgpack), optionally gzip
 * or zstd encoded, with a bearer token from a file. 2xx acknowledges it; 408,
 * 429, 5xx and transport errors (refused, reset, timeout, TLS) are retried;
 * any other status sets the batch aside. Requests run on libcurl's multi
 * interface, so the uploader's loop keeps draining the ring meanwhile.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "upl.h"

/* Requests in flight at once (each on its own kept-alive connection). */
#define HTTP_INFLIGHT 4
/* Response bytes kept for the log when a batch is refused or retried. */
#define HTTP_RESP_KEEP 512
#define TOKEN_MAX 8192
#define CONNECT_TIMEOUT_MAX_MS 10000

struct http_req {
	struct http_sink *hs;
	CURL *easy;
	struct upl_batch *b;
	struct curl_slist *headers;
	char *zbuf; /* the compressed body */
	size_t zcap;
	char resp[HTTP_RESP_KEEP + 1];
	size_t resp_len;
	char errbuf[CURL_ERROR_SIZE];
};

struct http_sink {
	struct upl *u;
	CURLM *multi;
	struct http_req req[HTTP_INFLIGHT];
	char token[TOKEN_MAX];
	bool have_token;
	struct stat token_st; /* the token file as last read */
	bool token_warned;
};

/* Reads the token file when it changed (a mounted Secret is rotated by replacing it). */
static int token_refresh(struct http_sink *hs)
{
	const char *path = hs->u->o.token_file;
	char buf[TOKEN_MAX];
	struct stat st;
	ssize_t n;
	int fd;

	if (!path)
		return 0;
	if (stat(path, &st) == -1)
		goto err_read;
	if (hs->have_token && st.st_ino == hs->token_st.st_ino &&
	    st.st_mtim.tv_sec == hs->token_st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == hs->token_st.st_mtim.tv_nsec &&
	    st.st_size == hs->token_st.st_size)
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		goto err_read;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		goto err_read;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
			 buf[n - 1] == '\t'))
		n--;
	buf[n] = '\0';
	if (n == 0 || strpbrk(buf, "\r\n")) {
		upl_log(UPL_LOG_ERR, "the token file holds no usable token",
			"file=%s want=\"one line, the bearer token\"", path);
		return hs->have_token ? 0 : -EINVAL;
	}
	memcpy(hs->token, buf, (size_t)n + 1);
	if (hs->have_token)
		upl_log(UPL_LOG_INFO, "token file changed, using the new token", "file=%s", path);
	hs->have_token = true;
	hs->token_st = st;
	hs->token_warned = false;
	return 0;

err_read:
	if (!hs->token_warned)
		upl_log(hs->have_token ? UPL_LOG_WARN : UPL_LOG_ERR, "cannot read the token file",
			"file=%s err=\"%s\"%s", path, strerror(errno),
			hs->have_token ? " using=previous" : "");
	hs->token_warned = true;
	return hs->have_token ? 0 : -errno;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
	struct http_req *r = arg;
	size_t n = size * nmemb, keep = n;

	if (keep > HTTP_RESP_KEEP - r->resp_len)
		keep = HTTP_RESP_KEEP - r->resp_len;
	for (size_t i = 0; i < keep; i++)
		/* One log line: control characters and quotes become spaces. */
		r->resp[r->resp_len++] = (p[i] < 0x20 || p[i] == '"' || p[i] == 0x7f) ? ' ' : p[i];
	r->resp[r->resp_len] = '\0';
	return n;
}

/* Compresses <b> into r->zbuf. Returns the length, or a negative errno. */
static ssize_t compress_body(struct http_req *r, enum upl_compression c, const struct upl_batch *b)
{
	size_t need = c == UPL_COMP_ZSTD ? ZSTD_compressBound(b->len) :
					   (size_t)deflateBound(NULL, (uLong)b->len) + 32;

	if (need > r->zcap) {
		char *z = realloc(r->zbuf, need);

		if (!z)
			return -ENOMEM;
		r->zbuf = z;
		r->zcap = need;
	}
	if (c == UPL_COMP_ZSTD) {
		size_t n = ZSTD_compress(r->zbuf, r->zcap, b->buf, b->len, 1);

		return ZSTD_isError(n) ? -EIO : (ssize_t)n;
	} else {
		z_stream zs = { 0 };
		ssize_t n;

		/* windowBits 15 + 16: a gzip wrapper, what Content-Encoding: gzip means. */
		if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
		    Z_OK)
			return -ENOMEM;
		zs.next_in = (Bytef *)b->buf;
		zs.avail_in = (uInt)b->len;
		zs.next_out = (Bytef *)r->zbuf;
		zs.avail_out = (uInt)r->zcap;
		n = deflate(&zs, Z_FINISH) == Z_STREAM_END ? (ssize_t)zs.total_out : -EIO;
		deflateEnd(&zs);
		return n;
	}
}

static unsigned http_capacity(struct upl_sink *s)
{
	(void)s;
	return HTTP_INFLIGHT;
}

static int http_send(struct upl_sink *s, struct upl_batch *b)
{
	struct http_sink *hs = (struct http_sink *)s;
	const struct upl_opts *o = &hs->u->o;
	struct http_req *r = NULL;
	char hdr[TOKEN_MAX + 64];
	const char *body = b->buf;
	size_t len = b->len;
	int ret;

	for (unsigned i = 0; i < HTTP_INFLIGHT && !r; i++)
		if (!hs->req[i].b)
			r = &hs->req[i];
	if (!r)
		return -EBUSY;
	ret = token_refresh(hs);
	if (ret < 0)
		return ret;
	if (o->compression != UPL_COMP_NONE) {
		ssize_t n = compress_body(r, o->compression, b);

		if (n < 0)
			return (int)n;
		body = r->zbuf;
		len = (size_t)n;
	}
	curl_slist_free_all(r->headers);
	r->headers =
		curl_slist_append(NULL, "Content-Type: application/vnd.sidetap.frames+msgpack");
	/* No "Expect: 100-continue" round trip before each body. */
	r->headers = curl_slist_append(r->headers, "Expect:");
	snprintf(hdr, sizeof(hdr), "X-Sidetap-Frames: %u", b->nframes);
	r->headers = curl_slist_append(r->headers, hdr);
	if (o->compression != UPL_COMP_NONE)
		r->headers = curl_slist_append(r->headers, o->compression == UPL_COMP_ZSTD ?
								   "Content-Encoding: zstd" :
								   "Content-Encoding: gzip");
	if (hs->have_token) {
		snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s", hs->token);
		r->headers = curl_slist_append(r->headers, hdr);
	}
	if (!r->headers)
		return -ENOMEM;
	r->resp_len = 0;
	r->resp[0] = '\0';
	r->errbuf[0] = '\0';
	curl_easy_setopt(r->easy, CURLOPT_URL, o->sink);
	curl_easy_setopt(r->easy, CURLOPT_POST, 1L);
	curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
	curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
	curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, (long)o->sink_timeout_ms);
	curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)(o->sink_timeout_ms < CONNECT_TIMEOUT_MAX_MS ?
					o->sink_timeout_ms :
					CONNECT_TIMEOUT_MAX_MS));
	if (curl_multi_add_handle(hs->multi, r->easy) != CURLM_OK)
		return -ENOMEM;
	r->b = b;
	b->sink_priv = r;
	return 0;
}

/* Retry-After in seconds (the HTTP-date form is not worth a parser here). */
static uint64_t retry_after_ms(CURL *easy)
{
	struct curl_header *h;
	char *end;
	unsigned long s;

	if (curl_easy_header(easy, "Retry-After", 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
		return 0;
	s = strtoul(h->value, &end, 10);
	return end != h->value && *end == '\0' ? (uint64_t)s * 1000 : 0;
}

static void finish(struct http_sink *hs, struct http_req *r, CURLcode res)
{
	struct upl_batch *b = r->b;
	long status = 0;
	char err[CURL_ERROR_SIZE + 64];

	curl_multi_remove_handle(hs->multi, r->easy);
	r->b = NULL;
	b->sink_priv = NULL;
	if (res != CURLE_OK) {
		/* Refused, reset, timed out, name or certificate problems: the sink is not there yet. */
		snprintf(err, sizeof(err), "%s%s%s", curl_easy_strerror(res),
			 r->errbuf[0] ? ": " : "", r->errbuf);
		upl_batch_done(hs->u, b, UPL_RETRY, err, NULL);
		return;
	}
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	snprintf(err, sizeof(err), "HTTP %ld", status);
	if (status >= 200 && status < 300) {
		upl_batch_done(hs->u, b, UPL_ACK, NULL, NULL);
	} else if (status == 408 || status == 429 || status >= 500) {
		hs->u->retry_hint_ms = retry_after_ms(r->easy);
		upl_batch_done(hs->u, b, UPL_RETRY, err, r->resp);
	} else {
		upl_batch_done(hs->u, b, UPL_REJECT, err, r->resp);
	}
}

static void http_process(struct upl_sink *s)
{
	struct http_sink *hs = (struct http_sink *)s;
	struct CURLMsg *msg;
	int running, left;

	curl_multi_perform(hs->multi, &running);
	while ((msg = curl_multi_info_read(hs->multi, &left))) {
		struct http_req *r = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		if (r && r->b)
			finish(hs, r, msg->data.result);
	}
}

static int http_wait(struct upl_sink *s, struct pollfd *fds, unsigned nfds, int timeout_ms)
{
	struct http_sink *hs = (struct http_sink *)s;
	struct curl_waitfd w[64];
	unsigned n = nfds < 64 ? nfds : 64;

	for (unsigned i = 0; i < n; i++)
		w[i] = (struct curl_waitfd){ .fd = fds[i].fd, .events = CURL_WAIT_POLLIN };
	if (curl_multi_poll(hs->multi, w, n, timeout_ms, NULL) != CURLM_OK)
		return -EIO;
	for (unsigned i = 0; i < n; i++)
		fds[i].revents = (short)((w[i].revents & CURL_WAIT_POLLIN) ? POLLIN : 0);
	return 0;
}

static void http_close(struct upl_sink *s)
{
	struct http_sink *hs = (struct http_sink *)s;

	for (unsigned i = 0; i < HTTP_INFLIGHT; i++) {
		struct http_req *r = &hs->req[i];

		if (r->b) {
			curl_multi_remove_handle(hs->multi, r->easy);
			upl_batch_abandon(hs->u, r->b);
			r->b = NULL;
		}
		curl_easy_cleanup(r->easy);
		curl_slist_free_all(r->headers);
		free(r->zbuf);
	}
	curl_multi_cleanup(hs->multi);
	curl_global_cleanup();
	free(hs);
}

static int http_open(struct upl *u, struct upl_sink **out)
{
	struct http_sink *hs;
	int ret;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		upl_log(UPL_LOG_ERR, "cannot initialise libcurl", "sink=%s", u->o.sink);
		return -ENOMEM;
	}
	hs = calloc(1, sizeof(*hs));
	if (!hs) {
		ret = -ENOMEM;
		goto err_global;
	}
	hs->u = u;
	if (u->o.sink_ca && access(u->o.sink_ca, R_OK) == -1) {
		ret = -errno;
		upl_log(UPL_LOG_ERR, "cannot read the sink's CA file", "file=%s err=\"%s\"",
			u->o.sink_ca, strerror(errno));
		goto err_free;
	}
	ret = token_refresh(hs);
	if (ret < 0)
		goto err_free;
	hs->multi = curl_multi_init();
	if (!hs->multi) {
		ret = -ENOMEM;
		goto err_free;
	}
	curl_multi_setopt(hs->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)HTTP_INFLIGHT);
	for (unsigned i = 0; i < HTTP_INFLIGHT; i++) {
		CURL *e = curl_easy_init();

		if (!e) {
			ret = -ENOMEM;
			goto err_easy;
		}
		hs->req[i].hs = hs;
		hs->req[i].easy = e;
		curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(e, CURLOPT_USERAGENT, "sidetap-uploader/" SIDETAP_VERSION);
		curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
		curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
		/* TLS: peer and host name verified (libcurl's defaults), against --sink-ca if given. */
		if (u->o.sink_ca)
			curl_easy_setopt(e, CURLOPT_CAINFO, u->o.sink_ca);
	}
	upl_log(UPL_LOG_INFO, "shipping to a collector", "url=%s compression=%s token=%s",
		u->o.sink, upl_compression_name(u->o.compression),
		u->o.token_file ? u->o.token_file : "none");
	*out = (struct upl_sink *)hs;
	return 0;

err_easy:
	for (unsigned i = 0; i < HTTP_INFLIGHT; i++)
		curl_easy_cleanup(hs->req[i].easy);
	curl_multi_cleanup(hs->multi);
err_free:
	free(hs);
err_global:
	curl_global_cleanup();
	return ret;
}

const struct upl_sink_ops upl_sink_http = {
	.name = "http",
	.open = http_open,
	.capacity = http_capacity,
	.send = http_send,
	.wait = http_wait,
	.process = http_process,
	.close = http_close,
};
