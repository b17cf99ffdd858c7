/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Annotation settings: reads <prefix>/<name> annotations of a workload and its
 * pod template, checks each value, and refuses one it does not accept with a
 * message that names the annotation, the value and what is accepted.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inject_int.h"

struct reader {
	const struct inj_config *cfg;
	json_t *pod_ann, *wl_ann;
	char *why;
	size_t why_len;
};

/* Every annotation name the injector reads; others under the prefix get a warning. */
static const char *const known[] = {
	"inject",
	"insert-init-first",
	"native-sidecar",
	"capture-mode",
	"proxy-type",
	"proxy-protocol",
	"proxy-host",
	"proxy-port",
	"proxy-in-port",
	"proxy-out-port",
	"tls-out",
	"tls-in-secret",
	"tls-in-private",
	"tls-in-public",
	"tls-java-tool-options",
	"ignore-src-ips",
	"ignore-inbound-ports",
	"ignore-dst-ips",
	"ignore-outbound-ports",
	"ignore-loopback",
	"cpu-request",
	"cpu-limit",
	"memory-request",
	"memory-limit",
	"extra-container-env-vars",
	"capture-sink",
	"capture-body-limit",
	"log-level",
	"injected",
	"injected-config",
};

/* The value of <prefix>/<name>: the pod template's, else the workload's, else NULL. */
static const char *get(struct reader *r, const char *name)
{
	char key[256];
	json_t *v = NULL;

	snprintf(key, sizeof(key), "%s/%s", r->cfg->prefix, name);
	if (json_is_object(r->pod_ann))
		v = json_object_get(r->pod_ann, key);
	if (!v && json_is_object(r->wl_ann))
		v = json_object_get(r->wl_ann, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static int refuse(struct reader *r, const char *name, const char *value, const char *accepted)
{
	snprintf(r->why, r->why_len, "annotation %s/%s: invalid value \"%.80s\": %s",
		 r->cfg->prefix, name, value, accepted);
	return -EINVAL;
}

static int get_bool(struct reader *r, const char *name, bool dflt, bool *out)
{
	const char *v = get(r, name);

	*out = dflt;
	if (!v)
		return 0;
	if (strcmp(v, "true") == 0)
		*out = true;
	else if (strcmp(v, "false") == 0)
		*out = false;
	else
		return refuse(r, name, v, "accepted: true, false");
	return 0;
}

/* A decimal port, 1 to 65535, digits only. */
static bool port_parse(const char *v, size_t len, unsigned *out)
{
	unsigned n = 0;

	if (len == 0 || len > 5)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return false;
		n = n * 10 + (unsigned)(v[i] - '0');
	}
	if (n == 0 || n > 65535)
		return false;
	*out = n;
	return true;
}

static int get_port(struct reader *r, const char *name, unsigned dflt, unsigned *out)
{
	const char *v = get(r, name);

	*out = dflt;
	if (v && !port_parse(v, strlen(v), out))
		return refuse(r, name, v, "accepted: a port from 1 to 65535");
	return 0;
}

/* Splits a comma-separated list; calls <item> on each trimmed, non-empty element. */
static int list_each(const char *v, int (*item)(const char *p, size_t len, void *arg), void *arg)
{
	const char *p = v;

	for (;;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		while (len && isspace((unsigned char)*p))
			p++, len--;
		while (len && isspace((unsigned char)p[len - 1]))
			len--;
		if (len == 0 || item(p, len, arg) != 0)
			return -EINVAL;
		if (!end)
			return 0;
		p = end + 1;
	}
}

/* A port or a range LO-HI (or LO:HI), as sidetap-init takes them; written back as LO-HI. */
static int port_item(const char *p, size_t len, void *arg)
{
	const char *sep = memchr(p, '-', len);
	unsigned lo, hi;
	char buf[16];

	if (!sep)
		sep = memchr(p, ':', len);
	if (json_array_size(arg) >= 256)
		return -EINVAL;
	if (!sep) {
		if (!port_parse(p, len, &lo))
			return -EINVAL;
		snprintf(buf, sizeof(buf), "%u", lo);
	} else {
		if (!port_parse(p, (size_t)(sep - p), &lo) ||
		    !port_parse(sep + 1, len - (size_t)(sep - p) - 1, &hi) || lo > hi)
			return -EINVAL;
		snprintf(buf, sizeof(buf), "%u-%u", lo, hi);
	}
	return json_array_append_new(arg, json_string(buf)) == 0 ? 0 : -ENOMEM;
}

static int get_ports(struct reader *r, const char *name, json_t **out)
{
	const char *v = get(r, name);

	if (!v)
		return 0;
	*out = json_array();
	if (!*out)
		return -ENOMEM;
	if (list_each(v, port_item, *out) != 0)
		return refuse(
			r, name, v,
			"accepted: a comma-separated list of ports and ranges (8080,9000-9100)");
	return 0;
}

/* An IPv4 or IPv6 address, or a CIDR of one; a bare address becomes /32 or /128. */
static int cidr_item(const char *p, size_t len, void *arg)
{
	char addr[64], out[80];
	unsigned char bin[16];
	const char *slash;
	unsigned prefix, max;
	size_t alen;
	int af;

	slash = memchr(p, '/', len);
	alen = slash ? (size_t)(slash - p) : len;
	if (alen == 0 || alen >= sizeof(addr) || json_array_size(arg) >= 254)
		return -EINVAL;
	memcpy(addr, p, alen);
	addr[alen] = '\0';
	af = strchr(addr, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(af, addr, bin) != 1)
		return -EINVAL;
	max = af == AF_INET ? 32 : 128;
	prefix = max;
	if (slash) {
		size_t plen = len - alen - 1;

		prefix = 0;
		if (plen == 0 || plen > 3)
			return -EINVAL;
		for (size_t i = 0; i < plen; i++) {
			if (slash[1 + i] < '0' || slash[1 + i] > '9')
				return -EINVAL;
			prefix = prefix * 10 + (unsigned)(slash[1 + i] - '0');
		}
		if (prefix > max)
			return -EINVAL;
	}
	snprintf(out, sizeof(out), "%s/%u", addr, prefix);
	return json_array_append_new(arg, json_string(out)) == 0 ? 0 : -ENOMEM;
}

static int get_cidrs(struct reader *r, const char *name, json_t **out)
{
	const char *v = get(r, name);

	if (!v)
		return 0;
	*out = json_array();
	if (!*out)
		return -ENOMEM;
	if (list_each(v, cidr_item, *out) != 0)
		return refuse(
			r, name, v,
			"accepted: a comma-separated list of IP addresses or CIDRs (10.0.0.0/8,192.168.1.4)");
	return 0;
}

/*
 * A Kubernetes resource quantity ("100m", "1.5", "64Mi", "1e3"), non-negative.
 * Returns its value in base units, or -1 when it is not one.
 */
static double quantity_parse(const char *v)
{
	static const struct {
		const char *s;
		double mul;
	} suffix[] = {
		{ "Ki", 0x1p10 }, { "Mi", 0x1p20 }, { "Gi", 0x1p30 }, { "Ti", 0x1p40 },
		{ "Pi", 0x1p50 }, { "Ei", 0x1p60 }, { "n", 1e-9 },    { "u", 1e-6 },
		{ "m", 1e-3 },	  { "k", 1e3 },	    { "M", 1e6 },     { "G", 1e9 },
		{ "T", 1e12 },	  { "P", 1e15 },    { "E", 1e18 },    { "", 1 },
	};
	const char *p = v;
	size_t digits = 0;
	double num;
	char *end;

	if (*p == '+')
		p++;
	while (*p >= '0' && *p <= '9')
		p++, digits++;
	if (*p == '.') {
		p++;
		while (*p >= '0' && *p <= '9')
			p++, digits++;
	}
	if (digits == 0 || p - v > 40)
		return -1;
	num = strtod(v, &end);
	if (end != p)
		return -1;
	if ((*p == 'e' || *p == 'E') && p[1]) {
		const char *q = p + 1;

		if (*q == '+' || *q == '-')
			q++;
		if (*q < '0' || *q > '9' || strlen(q) > 3)
			return -1;
		for (const char *d = q; *d; d++)
			if (*d < '0' || *d > '9')
				return -1;
		return num * pow(10, atoi(p + 1));
	}
	for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++)
		if (strcmp(p, suffix[i].s) == 0)
			return num * suffix[i].mul;
	return -1;
}

static int get_quantity(struct reader *r, const char *name, const char **out, double *val)
{
	const char *v = get(r, name);

	*out = v;
	*val = -1;
	if (!v)
		return 0;
	*val = quantity_parse(v);
	if (*val < 0)
		return refuse(
			r, name, v,
			"accepted: a Kubernetes quantity (cpu: 100m, 0.5, 2; memory: 64Mi, 1Gi)");
	return 0;
}

/* A DNS-1123 subdomain: what a Secret's name must be. */
static bool is_dns_subdomain(const char *v)
{
	size_t n = strlen(v);

	if (n == 0 || n > 253 || !isalnum((unsigned char)v[0]) || !isalnum((unsigned char)v[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(islower((unsigned char)v[i]) || isdigit((unsigned char)v[i]) || v[i] == '-' ||
		      v[i] == '.'))
			return false;
	return true;
}

/* A Secret's key, which is also the file name of its volume: [-._a-zA-Z0-9]+, not "." or "..". */
static bool is_secret_key(const char *v)
{
	size_t n = strlen(v);

	if (n == 0 || n > 253 || strcmp(v, ".") == 0 || strcmp(v, "..") == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)v[i]) || v[i] == '-' || v[i] == '.' || v[i] == '_'))
			return false;
	return true;
}

/* A host name or an IP address. */
static bool is_host(const char *v)
{
	unsigned char bin[16];
	size_t n = strlen(v);

	if (inet_pton(AF_INET6, v, bin) == 1)
		return true;
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)v[i]) || v[i] == '-' || v[i] == '.'))
			return false;
	return true;
}

/* Environment variables the injector sets on the sidecar: extra ones may not repeat them. */
static bool is_reserved_env(const char *name, size_t len)
{
	return len >= 8 && strncmp(name, "SIDETAP_", 8) == 0;
}

static int env_item(const char *p, size_t len, void *arg)
{
	const char *eq = memchr(p, '=', len);
	size_t nlen;
	json_t *e;
	char *name, *value;

	if (!eq || eq == p)
		return -EINVAL;
	nlen = (size_t)(eq - p);
	if (!(isalpha((unsigned char)p[0]) || p[0] == '_' || p[0] == '-' || p[0] == '.'))
		return -EINVAL;
	for (size_t i = 0; i < nlen; i++)
		if (!(isalnum((unsigned char)p[i]) || p[i] == '_' || p[i] == '-' || p[i] == '.'))
			return -EINVAL;
	if (is_reserved_env(p, nlen))
		return -EINVAL;
	name = strndup(p, nlen);
	value = strndup(eq + 1, len - nlen - 1);
	e = json_object();
	if (!name || !value || !e || json_object_set_new(e, "name", json_string(name)) != 0 ||
	    json_object_set_new(e, "value", json_string(value)) != 0 ||
	    json_array_append_new(arg, e) != 0) {
		free(name);
		free(value);
		return -ENOMEM;
	}
	free(name);
	free(value);
	return 0;
}

/* Byte counts as sidetap's --capture-body-limit takes them: digits and K, M or G, at most 64M. */
static bool is_body_limit(const char *v)
{
	char *end;
	unsigned long long n;
	unsigned shift = 0;

	if (v[0] < '0' || v[0] > '9')
		return false;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno)
		return false;
	if (*end == 'K' || *end == 'k')
		shift = 10;
	else if (*end == 'M' || *end == 'm')
		shift = 20;
	else if (*end == 'G' || *end == 'g')
		shift = 30;
	if (shift)
		end++;
	return *end == '\0' && n <= ((64ull << 20) >> shift);
}

static void warn(struct inj_settings *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void warn(struct inj_settings *s, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	json_array_append_new(s->warnings, json_string(buf));
}

/* Warns once about each annotation under the prefix that the injector does not read. */
static void warn_unknown(struct reader *r, struct inj_settings *s, json_t *ann)
{
	size_t plen = strlen(r->cfg->prefix);
	const char *key;
	json_t *v;

	if (!json_is_object(ann))
		return;
	json_object_foreach(ann, key, v) {
		bool found = false;

		if (strncmp(key, r->cfg->prefix, plen) != 0 || key[plen] != '/')
			continue;
		for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			found |= strcmp(key + plen + 1, known[i]) == 0;
		if (!found)
			warn(s,
			     "annotation %.120s is not read by sidetap-injector and has no effect",
			     key);
	}
}

static int parse_proxy(struct reader *r, struct inj_settings *s)
{
	const char *v;
	int ret;

	v = get(r, "capture-mode");
	if (v && strcmp(v, "proxy") != 0)
		return refuse(r, "capture-mode", v, "accepted: proxy");
	v = get(r, "proxy-type");
	if (!v || strcmp(v, "transparent") == 0)
		s->type = INJ_PROXY_TRANSPARENT;
	else if (strcmp(v, "reverse") == 0)
		s->type = INJ_PROXY_REVERSE;
	else if (strcmp(v, "forward") == 0 || strcmp(v, "dual") == 0)
		return refuse(r, "proxy-type", v,
			      "sidetap has no forward proxy yet; accepted: transparent, reverse");
	else
		return refuse(r, "proxy-type", v, "accepted: transparent, reverse");
	v = get(r, "proxy-protocol");
	if (v && (s->type != INJ_PROXY_REVERSE || strcmp(v, "tcp") != 0))
		return refuse(r, "proxy-protocol", v,
			      s->type == INJ_PROXY_REVERSE ?
				      "accepted: tcp (sidetap's reverse proxy forwards TCP)" :
				      "only a reverse proxy-type takes one (tcp)");
	s->proxy_host = get(r, "proxy-host");
	if (s->proxy_host && !is_host(s->proxy_host))
		return refuse(r, "proxy-host", s->proxy_host,
			      "accepted: a host name or IP address");
	if (!s->proxy_host)
		s->proxy_host = "localhost";
	if ((ret = get_port(r, "proxy-port", 80, &s->proxy_port)) ||
	    (ret = get_port(r, "proxy-in-port", 4143, &s->in_port)) ||
	    (ret = get_port(r, "proxy-out-port", 4140, &s->out_port)))
		return ret;
	if (s->in_port == s->out_port || s->in_port == r->cfg->admin_port ||
	    s->out_port == r->cfg->admin_port) {
		snprintf(
			r->why, r->why_len,
			"annotations %s/proxy-in-port (%u) and proxy-out-port (%u) must differ from each other and from the admin port %u",
			r->cfg->prefix, s->in_port, s->out_port, r->cfg->admin_port);
		return -EINVAL;
	}
	return 0;
}

static int parse_tls(struct reader *r, struct inj_settings *s)
{
	int ret;

	if ((ret = get_bool(r, "tls-out", false, &s->tls_out)) ||
	    (ret = get_bool(r, "tls-java-tool-options", false, &s->java_tool_options)))
		return ret;
	if (s->java_tool_options && !s->tls_out)
		warn(s,
		     "annotation %s/tls-java-tool-options has no effect without tls-out: \"true\"",
		     r->cfg->prefix);
	s->tls_in_secret = get(r, "tls-in-secret");
	s->tls_in_private = get(r, "tls-in-private");
	s->tls_in_public = get(r, "tls-in-public");
	if (s->tls_in_secret && !is_dns_subdomain(s->tls_in_secret))
		return refuse(r, "tls-in-secret", s->tls_in_secret,
			      "accepted: the name of a Secret in the workload's namespace");
	if (s->tls_in_private && !is_secret_key(s->tls_in_private))
		return refuse(r, "tls-in-private", s->tls_in_private,
			      "accepted: a key of the Secret (a file name such as tls.key)");
	if (s->tls_in_public && !is_secret_key(s->tls_in_public))
		return refuse(r, "tls-in-public", s->tls_in_public,
			      "accepted: a key of the Secret (a file name such as tls.crt)");
	if (!s->tls_in_secret && (s->tls_in_private || s->tls_in_public))
		warn(s,
		     "annotations %s/tls-in-private and tls-in-public have no effect without tls-in-secret",
		     r->cfg->prefix);
	if (!s->tls_in_private)
		s->tls_in_private = "tls.key";
	if (!s->tls_in_public)
		s->tls_in_public = "tls.crt";
	return 0;
}

static int parse_redirect(struct reader *r, struct inj_settings *s)
{
	bool loopback;
	int ret;

	if ((ret = get_ports(r, "ignore-inbound-ports", &s->skip_in_ports)) ||
	    (ret = get_ports(r, "ignore-outbound-ports", &s->skip_out_ports)) ||
	    (ret = get_bool(r, "ignore-loopback", false, &loopback)))
		return ret;
	if ((ret = get_cidrs(r, "ignore-dst-ips", &s->skip_out_cidrs)) ||
	    (ret = get_cidrs(r, "ignore-src-ips", &s->skip_in_cidrs)))
		return ret;
	/* Traffic to the loopback addresses then never reaches sidetap's outbound listener. */
	if (loopback) {
		if (!s->skip_out_cidrs && !(s->skip_out_cidrs = json_array()))
			return -ENOMEM;
		if (json_array_append_new(s->skip_out_cidrs, json_string("127.0.0.0/8")) ||
		    json_array_append_new(s->skip_out_cidrs, json_string("::1/128")))
			return -ENOMEM;
	}
	if (s->type != INJ_PROXY_TRANSPARENT &&
	    (s->skip_in_ports || s->skip_in_cidrs || s->skip_out_ports || s->skip_out_cidrs))
		warn(s, "annotations %s/ignore-* only apply to proxy-type transparent",
		     r->cfg->prefix);
	return 0;
}

static int parse_resources(struct reader *r, struct inj_settings *s)
{
	double cpu_req, cpu_lim, mem_req, mem_lim;
	int ret;

	if ((ret = get_quantity(r, "cpu-request", &s->cpu_request, &cpu_req)) ||
	    (ret = get_quantity(r, "cpu-limit", &s->cpu_limit, &cpu_lim)) ||
	    (ret = get_quantity(r, "memory-request", &s->memory_request, &mem_req)) ||
	    (ret = get_quantity(r, "memory-limit", &s->memory_limit, &mem_lim)))
		return ret;
	if (cpu_lim >= 0 && cpu_req > cpu_lim) {
		snprintf(r->why, r->why_len,
			 "annotation %s/cpu-request (%s) is above cpu-limit (%s)", r->cfg->prefix,
			 s->cpu_request, s->cpu_limit);
		return -EINVAL;
	}
	if (mem_lim >= 0 && mem_req > mem_lim) {
		snprintf(r->why, r->why_len,
			 "annotation %s/memory-request (%s) is above memory-limit (%s)",
			 r->cfg->prefix, s->memory_request, s->memory_limit);
		return -EINVAL;
	}
	/* A limit below the default request takes the request down with it (Kubernetes refuses request > limit). */
	if (cpu_lim >= 0 && !s->cpu_request && cpu_lim < quantity_parse(INJ_DEFAULT_CPU_REQUEST))
		s->cpu_request = s->cpu_limit;
	if (mem_lim >= 0 && !s->memory_request &&
	    mem_lim < quantity_parse(INJ_DEFAULT_MEMORY_REQUEST))
		s->memory_request = s->memory_limit;
	if (!s->cpu_request)
		s->cpu_request = INJ_DEFAULT_CPU_REQUEST;
	if (!s->memory_request)
		s->memory_request = INJ_DEFAULT_MEMORY_REQUEST;
	/* One io_uring loop per CPU the limit grants: more would only be throttled. */
	if (cpu_lim > 0) {
		double w = ceil(cpu_lim - 1e-9);

		s->workers = w < 1 ? 1 : w > 64 ? 64 : (unsigned)w;
	}
	return 0;
}

static int parse_sidetap(struct reader *r, struct inj_settings *s)
{
	const char *v;

	v = get(r, "extra-container-env-vars");
	if (v) {
		s->extra_env = json_array();
		if (!s->extra_env)
			return -ENOMEM;
		if (list_each(v, env_item, s->extra_env) != 0)
			return refuse(
				r, "extra-container-env-vars", v,
				"accepted: NAME=value pairs separated by commas, names not starting with SIDETAP_");
	}
	s->sink = get(r, "capture-sink");
	if (s->sink && strncmp(s->sink, "file:/", 6) != 0 && strncmp(s->sink, "http://", 7) != 0 &&
	    strncmp(s->sink, "https://", 8) != 0 && strncmp(s->sink, "kafka://", 8) != 0)
		return refuse(
			r, "capture-sink", s->sink,
			"accepted: file:/DIR (an absolute path), http(s)://collector, kafka://brokers/topic");
	s->body_limit = get(r, "capture-body-limit");
	if (s->body_limit && !is_body_limit(s->body_limit))
		return refuse(r, "capture-body-limit", s->body_limit,
			      "accepted: bytes from 0 to 64M (K, M suffixes allowed)");
	s->log_level = get(r, "log-level");
	if (s->log_level && strcmp(s->log_level, "error") != 0 &&
	    strcmp(s->log_level, "warn") != 0 && strcmp(s->log_level, "info") != 0 &&
	    strcmp(s->log_level, "debug") != 0)
		return refuse(r, "log-level", s->log_level, "accepted: error, warn, info, debug");
	return 0;
}

int inj__settings_parse(const struct inj_config *cfg, json_t *pod_ann, json_t *wl_ann,
			struct inj_settings *s, char *why, size_t why_len)
{
	struct reader r = { cfg, pod_ann, wl_ann, why, why_len };
	const char *v;
	int ret;

	memset(s, 0, sizeof(*s));
	s->warnings = json_array();
	if (!s->warnings)
		return -ENOMEM;
	v = get(&r, "inject");
	if (v && strcmp(v, "true") != 0 && strcmp(v, "false") != 0)
		return refuse(&r, "inject", v, "accepted: true, false");
	s->inject = v && strcmp(v, "true") == 0;
	if (!s->inject)
		return 0;
	warn_unknown(&r, s, wl_ann);
	if (pod_ann != wl_ann)
		warn_unknown(&r, s, pod_ann);
	if ((ret = get_bool(&r, "insert-init-first", false, &s->insert_init_first)) ||
	    (ret = get_bool(&r, "native-sidecar", cfg->native_sidecar, &s->native)) ||
	    (ret = parse_proxy(&r, s)) || (ret = parse_tls(&r, s)) ||
	    (ret = parse_redirect(&r, s)) || (ret = parse_resources(&r, s)) ||
	    (ret = parse_sidetap(&r, s)))
		return ret;
	if (s->insert_init_first && !s->native && s->type == INJ_PROXY_TRANSPARENT)
		warn(s,
		     "%s/insert-init-first: the other init containers' outbound traffic goes to sidetap before it runs; use native-sidecar: \"true\"",
		     cfg->prefix);
	return 0;
}

void inj__settings_fini(struct inj_settings *s)
{
	json_decref(s->skip_in_ports);
	json_decref(s->skip_out_ports);
	json_decref(s->skip_out_cidrs);
	json_decref(s->skip_in_cidrs);
	json_decref(s->extra_env);
	json_decref(s->warnings);
	memset(s, 0, sizeof(*s));
}
