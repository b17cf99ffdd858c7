/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sidetap-injector: the Kubernetes mutating admission webhook that adds
 * sidetap-init and the sidetap sidecar to workloads annotated
 * <prefix>/inject: "true", and takes them out again when the annotation
 * turns "false" or goes away. --review answers one AdmissionReview from a
 * file, without a server.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inject.h"
#include "server.h"
#include "tap/args.h"

static void usage(FILE *o)
{
	fputs("usage: sidetap-injector --listen ADDR --cert FILE --key FILE [FLAG VALUE]...\n"
	      "       sidetap-injector --review FILE|- [FLAG VALUE]...\n"
	      "\n"
	      "Kubernetes mutating admission webhook (AdmissionReview admission.k8s.io/v1 on\n"
	      "POST /mutate, GET /healthz for probes, GET /metrics). A Deployment, StatefulSet,\n"
	      "DaemonSet, ReplicaSet, Job or Pod annotated PREFIX/inject: \"true\" gets the\n"
	      "sidetap-init init container and the sidetap sidecar; \"false\" or no annotation\n"
	      "takes out what was injected. sidetapctl install sets all of this up.\n"
	      "\n"
	      "  --listen ADDR               HOST:PORT to serve HTTPS on (default 0.0.0.0:8443)\n"
	      "  --cert FILE, --key FILE     PEM certificate (chain) and key; reloaded when they change\n"
	      "  --annotation-prefix P       annotation prefix (default sidecar.speedscale.com)\n"
	      "  --image IMAGE               the sidecar's image (default ghcr.io/sidetap/sidetap:" SIDETAP_VERSION
	      ")\n"
	      "  --init-image IMAGE          sidetap-init's image (default: --image)\n"
	      "  --namespace NS              the injector's own namespace, never patched\n"
	      "                              (default $POD_NAMESPACE, else sidetap)\n"
	      "  --native-sidecar on|off     inject the sidecar as a native sidecar (an init container\n"
	      "                              with restartPolicy Always, Kubernetes 1.29+) unless the\n"
	      "                              PREFIX/native-sidecar annotation says otherwise (default off)\n"
	      "  --proxy-uid N, --proxy-gid N  the sidecar's user and group; sidetap-init's rules\n"
	      "                              exclude them (default 2102)\n"
	      "  --admin-port N              sidetap's admin port (default 4191)\n"
	      "  --tls-ca-secret NAME        Secret (tls.crt, tls.key) that tls-out unwrapping signs\n"
	      "                              with, in each workload's namespace (default sidetap-certs)\n"
	      "  --max-body-bytes BYTES      longest AdmissionReview accepted (default 8M)\n"
	      "  --max-connections N         connections served at once (default 256)\n"
	      "  --log-level LEVEL           error, warn, info or debug (default info)\n"
	      "  --review FILE|-             answer the AdmissionReview in FILE (- for stdin) on stdout\n"
	      "                              and exit, without serving\n"
	      "  --help, --version\n",
	      o);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Reports a usage error on stderr. Returns 2, the exit status of usage errors. */
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "sidetap-injector: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see sidetap-injector --help)\n");
	return 2;
}

static bool parse_uint(const char *v, unsigned long max, unsigned long *out)
{
	char *end;

	if (!isdigit((unsigned char)v[0]))
		return false;
	errno = 0;
	*out = strtoul(v, &end, 10);
	return !errno && *end == '\0' && *out <= max;
}

static bool parse_bytes(const char *v, size_t *out)
{
	char *end;
	unsigned long long n;
	unsigned shift = 0;

	if (!isdigit((unsigned char)v[0]))
		return false;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno)
		return false;
	if (*end == 'K' || *end == 'k')
		shift = 10;
	else if (*end == 'M' || *end == 'm')
		shift = 20;
	if (shift)
		end++;
	if (*end || n == 0 || n > ((256ull << 20) >> shift))
		return false;
	*out = (size_t)(n << shift);
	return true;
}

/* A DNS-1123 subdomain (annotation prefixes) or label (namespaces). */
static bool is_dns(const char *v, size_t max, bool dots)
{
	size_t n = strlen(v);

	if (n == 0 || n > max || !isalnum((unsigned char)v[0]) || !isalnum((unsigned char)v[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(islower((unsigned char)v[i]) || isdigit((unsigned char)v[i]) || v[i] == '-' ||
		      (dots && v[i] == '.')))
			return false;
	return true;
}

static bool is_image(const char *v)
{
	if (!v[0] || strlen(v) > 512)
		return false;
	for (; *v; v++)
		if (isspace((unsigned char)*v) || !isprint((unsigned char)*v) || *v == '"')
			return false;
	return true;
}

static char *read_all(const char *path, size_t *len)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	size_t cap = 65536, n = 0;
	char *buf = NULL;

	if (!f)
		return NULL;
	for (;;) {
		char *nb = realloc(buf, cap);

		if (!nb) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = nb;
		n += fread(buf + n, 1, cap - n, f);
		if (n < cap)
			break;
		cap *= 2;
	}
	if (buf && ferror(f)) {
		free(buf);
		buf = NULL;
	}
	if (f != stdin)
		fclose(f);
	*len = n;
	return buf;
}

static int review_file(const struct inj_config *cfg, const char *path)
{
	struct inj_result res;
	size_t len;
	char *body = read_all(path, &len);
	int ret;

	if (!body) {
		fprintf(stderr, "sidetap-injector: --review %s: %s\n", path, strerror(errno));
		return 1;
	}
	ret = inj_review_handle(cfg, body, len, &res);
	free(body);
	if (ret == -EBADMSG) {
		fprintf(stderr, "sidetap-injector: --review %s: malformed AdmissionReview: %s\n",
			path, res.error);
		return 1;
	}
	if (ret) {
		fprintf(stderr, "sidetap-injector: --review %s: %s\n", path, strerror(-ret));
		return 1;
	}
	inj_log(INJ_LOG_DEBUG, "review", "%s", res.log);
	fwrite(res.response, 1, res.response_len, stdout);
	fputc('\n', stdout);
	inj_result_fini(&res);
	return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	struct inj_server_opts o = { .listen = "0.0.0.0:8443",
				     .max_body_bytes = 8u << 20,
				     .max_conns = 256 };
	const char *review = NULL, *init_image = NULL;
	struct inj_config cfg;
	unsigned long n;

	inj_config_defaults(&cfg);
	if (getenv("POD_NAMESPACE") && getenv("POD_NAMESPACE")[0])
		cfg.own_namespace = getenv("POD_NAMESPACE");
	for (int i = 1; i < argc; i++) {
		bool missing = false;
		const char *v;

		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(argv[i], "--version") == 0) {
			printf("sidetap-injector %s\n", SIDETAP_VERSION);
			return 0;
		}
#define FLAG(name) ((v = tap_arg_value(argc, argv, &i, name, &missing)) || missing)
		if (FLAG("--listen")) {
			o.listen = v;
		} else if (FLAG("--cert")) {
			o.cert = v;
		} else if (FLAG("--key")) {
			o.key = v;
		} else if (FLAG("--annotation-prefix")) {
			if (v && !is_dns(v, 253, true))
				return usage_error(
					"--annotation-prefix: invalid value '%s': %s", v,
					"accepted: a DNS subdomain such as sidecar.speedscale.com");
			cfg.prefix = v;
		} else if (FLAG("--image")) {
			if (v && !is_image(v))
				return usage_error("--image: invalid value '%s': %s", v,
						   "accepted: an image reference without spaces");
			cfg.image = v;
		} else if (FLAG("--init-image")) {
			if (v && !is_image(v))
				return usage_error("--init-image: invalid value '%s': %s", v,
						   "accepted: an image reference without spaces");
			init_image = v;
		} else if (FLAG("--namespace")) {
			if (v && !is_dns(v, 63, false))
				return usage_error("--namespace: invalid value '%s': %s", v,
						   "accepted: a namespace name (DNS label)");
			cfg.own_namespace = v;
		} else if (FLAG("--native-sidecar")) {
			if (v && strcmp(v, "on") != 0 && strcmp(v, "off") != 0)
				return usage_error("--native-sidecar: invalid value '%s': %s", v,
						   "accepted: on, off");
			cfg.native_sidecar = v && strcmp(v, "on") == 0;
		} else if (FLAG("--proxy-uid")) {
			if (v && (!parse_uint(v, 2147483647, &n) || n == 0))
				return usage_error("--proxy-uid: invalid value '%s': %s", v,
						   "accepted: a number from 1 to 2147483647");
			if (v)
				cfg.proxy_uid = (unsigned)n;
		} else if (FLAG("--proxy-gid")) {
			if (v && (!parse_uint(v, 2147483647, &n) || n == 0))
				return usage_error("--proxy-gid: invalid value '%s': %s", v,
						   "accepted: a number from 1 to 2147483647");
			if (v)
				cfg.proxy_gid = (unsigned)n;
		} else if (FLAG("--admin-port")) {
			if (v && (!parse_uint(v, 65535, &n) || n == 0))
				return usage_error("--admin-port: invalid value '%s': %s", v,
						   "accepted: a port from 1 to 65535");
			if (v)
				cfg.admin_port = (unsigned)n;
		} else if (FLAG("--tls-ca-secret")) {
			if (v && !is_dns(v, 253, true))
				return usage_error("--tls-ca-secret: invalid value '%s': %s", v,
						   "accepted: a Secret name");
			cfg.ca_secret = v;
		} else if (FLAG("--max-body-bytes")) {
			if (v && !parse_bytes(v, &o.max_body_bytes))
				return usage_error(
					"--max-body-bytes: invalid value '%s': %s", v,
					"accepted: bytes from 1 to 256M (K, M suffixes)");
		} else if (FLAG("--max-connections")) {
			if (v && (!parse_uint(v, 100000, &n) || n == 0))
				return usage_error("--max-connections: invalid value '%s': %s", v,
						   "accepted: a number from 1 to 100000");
			if (v)
				o.max_conns = (unsigned)n;
		} else if (FLAG("--log-level")) {
			static const char *const lv[] = { "error", "warn", "info", "debug" };
			int found = -1;

			for (int l = 0; v && l < 4; l++)
				if (strcmp(v, lv[l]) == 0)
					found = l;
			if (v && found < 0)
				return usage_error("--log-level: invalid value '%s': %s", v,
						   "accepted: error, warn, info, debug");
			if (v)
				inj_log_level = found;
		} else if (FLAG("--review")) {
			review = v;
		} else {
			return usage_error("unknown flag '%s'", argv[i]);
		}
		if (missing)
			return usage_error("%s needs a value", argv[i]);
#undef FLAG
	}
	cfg.init_image = init_image ? init_image : cfg.image;
	if (review)
		return review_file(&cfg, review);
	if (!o.cert || !o.key)
		return usage_error("--cert and --key are required");
	o.cfg = &cfg;
	return inj_server_run(&o);
}
