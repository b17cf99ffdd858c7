/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sidetap-injector's HTTPS server: HTTP/1.1 with keep-alive over OpenSSL,
 * one thread per connection (bounded), AdmissionReview on POST /mutate.
 *
 * The certificate and key are files (a Secret volume in Kubernetes); before
 * each handshake the server stats them and, when either changed, loads the
 * pair into a new context: the next handshake presents the new certificate,
 * handshakes under way finish with the old one. A pair that does not load
 * (a half-written update, a key of another certificate) keeps the old one
 * in service and is tried again at the next connection.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server.h"
#include "tap/log.h"

#define HEAD_MAX 16384 /* request line and headers */
#define IO_TIMEOUT_S 10 /* for each read or write within a request */
#define IDLE_TIMEOUT_MS 60000 /* a kept-alive connection waits this long for the next request */
#define DRAIN_TIMEOUT_MS 10000 /* at exit, open connections may finish within this */

int inj_log_level = INJ_LOG_INFO;

void inj_log(int level, const char *msg, const char *fields, ...)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	va_list ap;

	if (level > inj_log_level)
		return;
	va_start(ap, fields);
	tap_log_vwrite(names[level], msg, "injector", fields, ap);
	va_end(ap);
}

/* counters for /metrics */
static atomic_ulong reviews_total[INJ_REFUSED + 1];
static atomic_ulong bad_requests_total, rejected_conns_total, handshake_errors_total;
static atomic_ulong cert_reloads_total, cert_reload_errors_total;
static atomic_uint active_conns;
static atomic_ulong review_us_sum;
static volatile sig_atomic_t stop_requested;

struct file_sig {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
};

/* Only the accepting thread touches this: connections get their SSL from it there. */
struct tls {
	const struct inj_server_opts *o;
	SSL_CTX *ctx;
	struct file_sig cert, key; /* of the pair in ctx */
	struct file_sig failed_cert, failed_key; /* of the last pair that did not load */
	char not_after[64];
};

static bool sig_read(const char *path, struct file_sig *s)
{
	struct stat st;

	if (stat(path, &st) != 0)
		return false;
	*s = (struct file_sig){ st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim };
	return true;
}

static bool sig_eq(const struct file_sig *a, const struct file_sig *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
	       a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* The first OpenSSL error, for a log field (quotes removed). */
static void ssl_err(char *out, size_t len)
{
	unsigned long e = ERR_get_error();

	if (!e)
		snprintf(out, len, "unknown error");
	else
		ERR_error_string_n(e, out, len);
	for (char *c = out; *c; c++)
		if (*c == '"')
			*c = '\'';
	ERR_clear_error();
}

/* Loads the pair into a new context. Returns it, or NULL with the reason in <why>. */
static SSL_CTX *tls_load(const struct inj_server_opts *o, char *why, size_t len, char *not_after,
			 size_t na_len)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	X509 *leaf;

	if (!ctx) {
		ssl_err(why, len);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		ssl_err(why, len);
		SSL_CTX_free(ctx);
		return NULL;
	}
	leaf = SSL_CTX_get0_certificate(ctx);
	not_after[0] = '\0';
	if (leaf) {
		const ASN1_TIME *t = X509_get0_notAfter(leaf);
		struct tm tm;

		if (t && ASN1_TIME_to_tm(t, &tm) == 1)
			strftime(not_after, na_len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	}
	return ctx;
}

/* Loads the pair again when a file changed. Returns 0, or -1 when there is no usable pair at all. */
static int tls_refresh(struct tls *t)
{
	struct file_sig c, k;
	char why[256], not_after[64];
	SSL_CTX *ctx;

	if (!sig_read(t->o->cert, &c) || !sig_read(t->o->key, &k)) {
		if (!t->ctx)
			inj_log(INJ_LOG_ERROR, "cannot read the certificate or key",
				"cert=%s key=%s err=\"%s\"", t->o->cert, t->o->key,
				strerror(errno));
		return t->ctx ? 0 : -1;
	}
	if (t->ctx && sig_eq(&c, &t->cert) && sig_eq(&k, &t->key))
		return 0;
	if (t->ctx && sig_eq(&c, &t->failed_cert) && sig_eq(&k, &t->failed_key))
		return 0;
	ctx = tls_load(t->o, why, sizeof(why), not_after, sizeof(not_after));
	if (!ctx) {
		/* Logged once per pair of file versions, retried when they change again. */
		t->failed_cert = c;
		t->failed_key = k;
		if (t->ctx)
			atomic_fetch_add(&cert_reload_errors_total, 1);
		inj_log(t->ctx ? INJ_LOG_WARN : INJ_LOG_ERROR,
			t->ctx ? "new certificate not loaded, serving the previous one" :
				 "cannot load the certificate and key",
			"cert=%s key=%s err=\"%s\"", t->o->cert, t->o->key, why);
		return t->ctx ? 0 : -1;
	}
	if (t->ctx) {
		atomic_fetch_add(&cert_reloads_total, 1);
		inj_log(INJ_LOG_INFO, "certificate reloaded", "cert=%s not_after=%s", t->o->cert,
			not_after);
	}
	/* Connections hold a reference through their SSL: the old context goes with the last. */
	SSL_CTX_free(t->ctx);
	t->ctx = ctx;
	t->cert = c;
	t->key = k;
	snprintf(t->not_after, sizeof(t->not_after), "%s", not_after);
	return 0;
}

/* one connection */

struct conn {
	const struct inj_server_opts *o;
	SSL *ssl;
	int fd;
	char peer[64];
	char *buf; /* HEAD_MAX bytes: the head, and bytes read past it */
	size_t len; /* bytes in buf */
};

struct request {
	char method[16];
	char target[256];
	bool http10;
	bool close;
	bool expect_continue;
	long long content_length; /* -1: none */
	char content_type[128];
	bool chunked;
	size_t head_len;
};

static int conn_write(struct conn *c, const void *p, size_t len)
{
	while (len) {
		int n = SSL_write(c->ssl, p, len > 1 << 30 ? 1 << 30 : (int)len);

		if (n <= 0)
			return -EIO;
		p = (const char *)p + n;
		len -= (size_t)n;
	}
	return 0;
}

static const char *status_text(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 411:
		return "Length Required";
	case 415:
		return "Unsupported Media Type";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	}
	return "Error";
}

/* Writes the response in one piece: a head and a body written apart wait on Nagle and delayed ACK. */
static int respond(struct conn *c, int status, const char *type, const char *body, size_t len,
		   bool close, const char *extra)
{
	char head[512], *buf;
	int n, ret;

	n = snprintf(head, sizeof(head),
		     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
		     status, status_text(status), type, len, close ? "Connection: close\r\n" : "",
		     extra ? extra : "");
	buf = malloc((size_t)n + len);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, head, (size_t)n);
	if (len)
		memcpy(buf + n, body, len);
	ret = conn_write(c, buf, (size_t)n + len);
	free(buf);
	return ret;
}

static int respond_text(struct conn *c, int status, bool close, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int respond_text(struct conn *c, int status, bool close, const char *fmt, ...)
{
	char body[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(body, sizeof(body) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(body) - 2)
		n = sizeof(body) - 2;
	body[n++] = '\n';
	return respond(c, status, "text/plain; charset=utf-8", body, (size_t)n, close, NULL);
}

/*
 * Waits for the next request's first bytes (up to the idle timeout, or until
 * the server stops). Returns true when there is something to read.
 */
static bool conn_wait(struct conn *c)
{
	int waited = 0;

	if (c->len || SSL_pending(c->ssl))
		return true;
	while (waited < IDLE_TIMEOUT_MS && !stop_requested) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		int n = poll(&p, 1, 200);

		if (n > 0)
			return true;
		if (n < 0 && errno != EINTR)
			return false;
		waited += 200;
	}
	return false;
}

/* Reads until the head is complete. Returns its length, 0 on a clean EOF, or a negative errno. */
static ssize_t read_head(struct conn *c)
{
	for (;;) {
		char *end = c->len >= 4 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
		int n;

		if (end)
			return end - c->buf + 4;
		if (c->len == HEAD_MAX)
			return -E2BIG;
		n = SSL_read(c->ssl, c->buf + c->len, (int)(HEAD_MAX - c->len));
		if (n <= 0)
			return c->len == 0 ? 0 : -EIO;
		c->len += (size_t)n;
	}
}

static void trim(char **v)
{
	size_t n;

	while (**v == ' ' || **v == '\t')
		(*v)++;
	n = strlen(*v);
	while (n && ((*v)[n - 1] == ' ' || (*v)[n - 1] == '\t'))
		(*v)[--n] = '\0';
}

/* Parses the head in c->buf (NUL-terminates its lines in place). Returns 0 or -EINVAL. */
static int parse_head(struct conn *c, size_t head_len, struct request *r)
{
	char *line = c->buf, *end, *sp1, *sp2;
	bool first = true;

	memset(r, 0, sizeof(*r));
	r->content_length = -1;
	r->head_len = head_len;
	c->buf[head_len - 2] = '\0';
	for (; line < c->buf + head_len - 2; line = end + 2) {
		char *colon, *v;

		end = strstr(line, "\r\n");
		if (!end)
			end = c->buf + head_len - 2;
		*end = '\0';
		if (first) {
			first = false;
			sp1 = strchr(line, ' ');
			sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
			if (!sp1 || !sp2 || (size_t)(sp1 - line) >= sizeof(r->method) ||
			    (size_t)(sp2 - sp1 - 1) >= sizeof(r->target))
				return -EINVAL;
			memcpy(r->method, line, (size_t)(sp1 - line));
			memcpy(r->target, sp1 + 1, (size_t)(sp2 - sp1 - 1));
			if (strcmp(sp2 + 1, "HTTP/1.1") == 0)
				r->http10 = false;
			else if (strcmp(sp2 + 1, "HTTP/1.0") == 0)
				r->http10 = r->close = true;
			else
				return -EINVAL;
			continue;
		}
		colon = strchr(line, ':');
		if (!colon || colon == line)
			return -EINVAL;
		*colon = '\0';
		v = colon + 1;
		trim(&v);
		if (strcasecmp(line, "Content-Length") == 0) {
			char *e;
			long long n;

			errno = 0;
			n = strtoll(v, &e, 10);
			if (v[0] < '0' || v[0] > '9' || *e || errno ||
			    (r->content_length >= 0 && r->content_length != n))
				return -EINVAL;
			r->content_length = n;
		} else if (strcasecmp(line, "Content-Type") == 0) {
			snprintf(r->content_type, sizeof(r->content_type), "%s", v);
		} else if (strcasecmp(line, "Transfer-Encoding") == 0) {
			r->chunked = true;
		} else if (strcasecmp(line, "Connection") == 0) {
			if (strcasestr(v, "close"))
				r->close = true;
			else if (strcasestr(v, "keep-alive"))
				r->close = false;
		} else if (strcasecmp(line, "Expect") == 0) {
			r->expect_continue = strcasecmp(v, "100-continue") == 0;
		}
	}
	return first ? -EINVAL : 0;
}

/* application/json, with or without parameters such as charset. */
static bool is_json(const char *type)
{
	size_t n = strlen("application/json");

	return strncasecmp(type, "application/json", n) == 0 &&
	       (type[n] == '\0' || type[n] == ';' || type[n] == ' ');
}

/* After an answer to a body we will not read: take what the client still sends, for a while. */
static void drain_and_close(struct conn *c)
{
	char sink[16384];
	size_t total = 0;
	int left_ms = 2000;

	while (left_ms > 0 && total < (64u << 20)) {
		int n;

		struct pollfd p = { .fd = c->fd, .events = POLLIN };

		if (!SSL_pending(c->ssl) && poll(&p, 1, 100) <= 0) {
			left_ms -= 100;
			continue;
		}
		n = SSL_read(c->ssl, sink, sizeof(sink));
		if (n <= 0)
			break;
		total += (size_t)n;
	}
}

static void metrics(struct conn *c, bool close)
{
	char body[2048];
	size_t n = 0;

	n += (size_t)snprintf(
		body + n, sizeof(body) - n,
		"# HELP sidetap_injector_reviews_total AdmissionReviews answered, by result.\n"
		"# TYPE sidetap_injector_reviews_total counter\n");
	for (int i = INJ_SKIPPED; i <= INJ_REFUSED; i++)
		n += (size_t)snprintf(body + n, sizeof(body) - n,
				      "sidetap_injector_reviews_total{result=\"%s\"} %lu\n",
				      inj_outcome_name((enum inj_outcome)i),
				      atomic_load(&reviews_total[i]));
	n += (size_t)snprintf(
		body + n, sizeof(body) - n,
		"# HELP sidetap_injector_bad_requests_total Requests answered 4xx (malformed, oversized, wrong type).\n"
		"# TYPE sidetap_injector_bad_requests_total counter\n"
		"sidetap_injector_bad_requests_total %lu\n"
		"# HELP sidetap_injector_review_seconds_sum Time spent deciding on reviews.\n"
		"# TYPE sidetap_injector_review_seconds_sum counter\n"
		"sidetap_injector_review_seconds_sum %.6f\n"
		"# TYPE sidetap_injector_rejected_connections_total counter\n"
		"sidetap_injector_rejected_connections_total %lu\n"
		"# TYPE sidetap_injector_handshake_errors_total counter\n"
		"sidetap_injector_handshake_errors_total %lu\n"
		"# TYPE sidetap_injector_cert_reloads_total counter\n"
		"sidetap_injector_cert_reloads_total %lu\n"
		"# TYPE sidetap_injector_cert_reload_errors_total counter\n"
		"sidetap_injector_cert_reload_errors_total %lu\n"
		"# TYPE sidetap_injector_connections_active gauge\n"
		"sidetap_injector_connections_active %u\n",
		atomic_load(&bad_requests_total), (double)atomic_load(&review_us_sum) / 1e6,
		atomic_load(&rejected_conns_total), atomic_load(&handshake_errors_total),
		atomic_load(&cert_reloads_total), atomic_load(&cert_reload_errors_total),
		atomic_load(&active_conns));
	respond(c, 200, "text/plain; version=0.0.4", body, n, close, NULL);
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Answers a 4xx and logs why. Returns -1: the connection ends after it. */
static int reject(struct conn *c, int status, const char *why)
{
	atomic_fetch_add(&bad_requests_total, 1);
	inj_log(INJ_LOG_WARN, "bad request", "peer=%s status=%d err=\"%s\"", c->peer, status, why);
	respond_text(c, status, true, "%s", why);
	return -1;
}

/* Reads the body and answers the review. Returns 0 to keep the connection, -1 to end it. */
static int serve_mutate(struct conn *c, struct request *r)
{
	const struct inj_server_opts *o = c->o;
	struct inj_result res;
	char why[512];
	size_t have, len;
	uint64_t t0;
	char *body;
	int ret;

	if (strcmp(r->method, "POST") != 0) {
		atomic_fetch_add(&bad_requests_total, 1);
		respond(c, 405, "text/plain", "POST only\n", 10, true, "Allow: POST\r\n");
		return -1;
	}
	if (!is_json(r->content_type)) {
		snprintf(
			why, sizeof(why),
			"Content-Type \"%.100s\" is not application/json (an AdmissionReview is JSON)",
			r->content_type);
		return reject(c, 415, why);
	}
	if (r->chunked)
		return reject(c, 400, "chunked bodies are not accepted: send Content-Length");
	if (r->content_length < 0)
		return reject(c, 411, "Content-Length is required");
	if ((unsigned long long)r->content_length > o->max_body_bytes) {
		snprintf(why, sizeof(why),
			 "body of %lld bytes is over the limit of %zu bytes (--max-body-bytes)",
			 r->content_length, o->max_body_bytes);
		reject(c, 400, why);
		if (!r->expect_continue)
			drain_and_close(c);
		return -1;
	}
	len = (size_t)r->content_length;
	if (r->expect_continue && c->len - r->head_len < len &&
	    conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0)
		return -1;
	body = malloc(len + 1);
	if (!body)
		return reject(c, 500, "out of memory");
	have = c->len - r->head_len < len ? c->len - r->head_len : len;
	memcpy(body, c->buf + r->head_len, have);
	/* What followed the body is the next request's beginning. */
	memmove(c->buf, c->buf + r->head_len + have, c->len - r->head_len - have);
	c->len -= r->head_len + have;
	while (have < len) {
		int n = SSL_read(c->ssl, body + have,
				 len - have > 1 << 20 ? 1 << 20 : (int)(len - have));

		if (n <= 0) {
			free(body);
			inj_log(INJ_LOG_WARN, "connection ended inside a request body",
				"peer=%s have=%zu want=%zu", c->peer, have, len);
			return -1;
		}
		have += (size_t)n;
	}
	t0 = now_us();
	ret = inj_review_handle(o->cfg, body, len, &res);
	free(body);
	if (ret == -EBADMSG) {
		snprintf(why, sizeof(why), "malformed AdmissionReview: %s", res.error);
		return reject(c, 400, why);
	}
	if (ret) {
		inj_log(INJ_LOG_ERROR, "cannot answer a review", "peer=%s err=\"%s\"", c->peer,
			strerror(-ret));
		respond_text(c, 500, true, "internal error: %s", strerror(-ret));
		return -1;
	}
	atomic_fetch_add(&review_us_sum, now_us() - t0);
	atomic_fetch_add(&reviews_total[res.outcome], 1);
	inj_log(res.outcome == INJ_REFUSED ? INJ_LOG_WARN : INJ_LOG_INFO, "review", "%s us=%lu",
		res.log, (unsigned long)(now_us() - t0));
	ret = respond(c, 200, "application/json", res.response, res.response_len, r->close, NULL);
	inj_result_fini(&res);
	return ret || r->close ? -1 : 0;
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	char why[256];

	if (SSL_accept(c->ssl) != 1) {
		ssl_err(why, sizeof(why));
		atomic_fetch_add(&handshake_errors_total, 1);
		inj_log(INJ_LOG_DEBUG, "handshake failed", "peer=%s err=\"%s\"", c->peer, why);
		goto out;
	}
	while (conn_wait(c)) {
		struct request r;
		ssize_t head = read_head(c);

		if (head == 0)
			break;
		if (head == -E2BIG) {
			reject(c, 431, "request head over 16 KiB");
			break;
		}
		if (head < 0)
			break;
		if (parse_head(c, (size_t)head, &r) != 0) {
			reject(c, 400, "malformed HTTP request");
			break;
		}
		if (strcmp(r.target, "/mutate") == 0) {
			if (serve_mutate(c, &r) != 0)
				break;
			continue;
		}
		/* Bodies of other requests are not read: end the connection after them. */
		if (r.content_length > 0 || r.chunked)
			r.close = true;
		c->len -= (size_t)head;
		memmove(c->buf, c->buf + head, c->len);
		if (strcmp(r.method, "GET") == 0 && strcmp(r.target, "/healthz") == 0)
			respond(c, 200, "text/plain", "ok\n", 3, r.close, NULL);
		else if (strcmp(r.method, "GET") == 0 && strcmp(r.target, "/metrics") == 0)
			metrics(c, r.close);
		else
			respond_text(c, 404, r.close,
				     "not found: POST /mutate, GET /healthz, GET /metrics");
		if (r.close)
			break;
	}
	SSL_shutdown(c->ssl);
out:
	SSL_free(c->ssl);
	close(c->fd);
	free(c->buf);
	free(c);
	atomic_fetch_sub(&active_conns, 1);
	return NULL;
}

/* listening and accepting */

static int listen_on(const char *addr, char *bound, size_t bound_len)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res;
	char host[256], *colon;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd, one = 1, ret;

	if (snprintf(host, sizeof(host), "%s", addr) >= (int)sizeof(host) ||
	    !(colon = strrchr(host, ':')))
		return -EINVAL;
	*colon = '\0';
	if (host[0] == '[' && colon > host + 1 && colon[-1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	ret = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
	if (ret != 0)
		return -EINVAL;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		ret = -errno;
		freeaddrinfo(res);
		return ret;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 256) != 0) {
		ret = -errno;
		freeaddrinfo(res);
		goto err_close_fd;
	}
	freeaddrinfo(res);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
		char h[NI_MAXHOST], p[NI_MAXSERV];

		if (getnameinfo((struct sockaddr *)&ss, sl, h, sizeof(h), p, sizeof(p),
				NI_NUMERICHOST | NI_NUMERICSERV) == 0)
			snprintf(bound, bound_len, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
				 h, p);
	}
	return fd;

err_close_fd:
	close(fd);
	return ret;
}

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void conn_start(struct tls *t, int fd, const struct sockaddr_storage *ss, socklen_t sl)
{
	struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
	int one = 1;
	pthread_attr_t attr;
	pthread_t tid;
	struct conn *c;

	if (atomic_load(&active_conns) >= t->o->max_conns) {
		atomic_fetch_add(&rejected_conns_total, 1);
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		goto err_close_fd;
	c->buf = malloc(HEAD_MAX);
	c->o = t->o;
	c->fd = fd;
	if (getnameinfo((const struct sockaddr *)ss, sl, c->peer, sizeof(c->peer), NULL, 0,
			NI_NUMERICHOST) != 0)
		snprintf(c->peer, sizeof(c->peer), "?");
	c->ssl = c->buf ? SSL_new(t->ctx) : NULL;
	if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1)
		goto err_free_conn;
	/* Each read and write within a request waits this long at most: no thread hangs on a peer. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	atomic_fetch_add(&active_conns, 1);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 << 10);
	if (pthread_create(&tid, &attr, conn_main, c) != 0) {
		pthread_attr_destroy(&attr);
		atomic_fetch_sub(&active_conns, 1);
		goto err_free_conn;
	}
	pthread_attr_destroy(&attr);
	return;

err_free_conn:
	SSL_free(c->ssl);
	free(c->buf);
	free(c);
err_close_fd:
	close(fd);
}

int inj_server_run(const struct inj_server_opts *o)
{
	struct tls t = { .o = o };
	struct sigaction sa = { .sa_handler = on_stop };
	char bound[128] = "";
	int lfd, waited;

	if (tls_refresh(&t) != 0)
		return 1;
	lfd = listen_on(o->listen, bound, sizeof(bound));
	if (lfd < 0) {
		inj_log(INJ_LOG_ERROR, "cannot listen", "listen=%s err=\"%s\"", o->listen,
			strerror(-lfd));
		SSL_CTX_free(t.ctx);
		return 1;
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	inj_log(INJ_LOG_INFO, "started",
		"listen=%s cert=%s not_after=%s prefix=%s image=%s namespace=%s native_sidecar=%d",
		bound, o->cert, t.not_after, o->cfg->prefix, o->cfg->image, o->cfg->own_namespace,
		o->cfg->native_sidecar);
	while (!stop_requested) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd;

		if (poll(&p, 1, 500) <= 0)
			continue;
		fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EMFILE || errno == ENFILE)
				usleep(10000);
			continue;
		}
		tls_refresh(&t);
		conn_start(&t, fd, &ss, sl);
	}
	close(lfd);
	inj_log(INJ_LOG_INFO, "stopping", "connections=%u", atomic_load(&active_conns));
	for (waited = 0; atomic_load(&active_conns) && waited < DRAIN_TIMEOUT_MS; waited += 50)
		usleep(50000);
	SSL_CTX_free(t.ctx);
	inj_log(INJ_LOG_INFO, "stopped", "connections_left=%u", atomic_load(&active_conns));
	return 0;
}
