/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sidetapctl install and uninstall: the injector's manifests (namespace,
 * ServiceAccount, serving certificate Secret, Deployment, Service,
 * PodDisruptionBudget, MutatingWebhookConfiguration), with a CA and serving
 * certificate minted here; and the way back out, workloads first.
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s.h"

#define SVC "sidetap-injector"
#define TLS_SECRET "sidetap-injector-tls"
#define WEBHOOK "inject.sidetap.io"
#define CA_DAYS 3650
#define LEAF_DAYS 730

struct install {
	const char *ns;
	const char *image;
	const char *prefix;
	const char *failure_policy;
	bool native;
	bool dry_run;
	bool placeholders;
	unsigned replicas;
};

/* PEM text of what install mints. */
struct certs {
	char *ca; /* the CA certificate: the webhook's caBundle */
	char *bundle; /* caBundle: the CA, and the one before it while pods still serve its leaf */
	char *crt; /* the serving certificate, SAN <svc>.<ns>.svc */
	char *key;
};

static void certs_fini(struct certs *c)
{
	free(c->ca);
	free(c->bundle);
	free(c->crt);
	free(c->key);
	memset(c, 0, sizeof(*c));
}

static char *bio_string(BIO *b)
{
	char *data, *out;
	long n = BIO_get_mem_data(b, &data);

	out = n >= 0 ? malloc((size_t)n + 1) : NULL;
	if (out) {
		memcpy(out, data, (size_t)n);
		out[n] = '\0';
	}
	return out;
}

static char *pem_of_cert(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *s = NULL;

	if (b && PEM_write_bio_X509(b, x) == 1)
		s = bio_string(b);
	BIO_free(b);
	return s;
}

static char *pem_of_key(EVP_PKEY *k)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *s = NULL;

	if (b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1)
		s = bio_string(b);
	BIO_free(b);
	return s;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return -1;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok == 1 ? 0 : -1;
}

/*
 * A certificate for <key> named <cn>, signed by <ca_key> (as <ca>, or itself
 * when <ca> is NULL). Returns it or NULL.
 */
static X509 *cert_make(EVP_PKEY *key, const char *cn, X509 *ca, EVP_PKEY *ca_key, int days,
		       const char *san)
{
	unsigned char serial[16];
	X509 *x = X509_new();
	BIGNUM *bn = NULL;
	X509_NAME *name;

	if (!x || RAND_bytes(serial, sizeof(serial)) != 1)
		goto err_free_x;
	serial[0] &= 0x7f; /* positive, 127 random bits */
	bn = BN_bin2bn(serial, sizeof(serial), NULL);
	name = X509_get_subject_name(x);
	if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) || !X509_set_version(x, 2) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
					-1, 0) ||
	    !X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : name) ||
	    /* An hour back: nodes whose clocks run a little behind accept it at once. */
	    !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400) || !X509_set_pubkey(x, key))
		goto err_free_x;
	if (!ca) {
		if (add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
		    add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") ||
		    add_ext(x, x, NID_subject_key_identifier, "hash"))
			goto err_free_x;
	} else {
		if (add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE") ||
		    add_ext(x, ca, NID_key_usage, "critical,digitalSignature") ||
		    add_ext(x, ca, NID_ext_key_usage, "serverAuth") ||
		    add_ext(x, ca, NID_subject_alt_name, san) ||
		    add_ext(x, ca, NID_subject_key_identifier, "hash") ||
		    add_ext(x, ca, NID_authority_key_identifier, "keyid:always"))
			goto err_free_x;
	}
	if (X509_sign(x, ca_key, EVP_sha256()) <= 0)
		goto err_free_x;
	BN_free(bn);
	return x;

err_free_x:
	BN_free(bn);
	X509_free(x);
	return NULL;
}

/* Mints a CA and a serving certificate for <svc>.<ns>.svc. Returns 0 or -1. */
static int certs_mint(const char *ns, struct certs *c)
{
	EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *key = EVP_EC_gen("P-256");
	char san[300], cn[300];
	X509 *ca = NULL, *leaf = NULL;
	int ret = -1;

	memset(c, 0, sizeof(*c));
	snprintf(san, sizeof(san), "DNS:" SVC ".%s.svc", ns);
	snprintf(cn, sizeof(cn), SVC ".%s.svc", ns);
	if (!ca_key || !key)
		goto out;
	ca = cert_make(ca_key, "sidetap-injector CA", NULL, ca_key, CA_DAYS, NULL);
	leaf = ca ? cert_make(key, cn, ca, ca_key, LEAF_DAYS, san) : NULL;
	if (!leaf)
		goto out;
	c->ca = pem_of_cert(ca);
	c->bundle = c->ca ? strdup(c->ca) : NULL;
	c->crt = pem_of_cert(leaf);
	c->key = pem_of_key(key);
	if (c->ca && c->bundle && c->crt && c->key)
		ret = 0;
out:
	if (ret)
		certs_fini(c);
	X509_free(ca);
	X509_free(leaf);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(key);
	return ret;
}

static char *b64(const char *s)
{
	size_t len = strlen(s);
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out)
		EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)len);
	return out;
}

/* Prints one base64 value: the PEM's, or a placeholder (deploy/) that says what goes there. */
static void data_value(FILE *f, const struct install *o, const char *pem, const char *what)
{
	char text[128], *v;

	snprintf(text, sizeof(text), "placeholder: sidetapctl install mints the %s", what);
	v = b64(o->placeholders ? text : pem);
	fputs(v ? v : "", f);
	free(v);
}

static void render(FILE *f, const struct install *o, const struct certs *c)
{
	const char *ns = o->ns;

	fputs("# sidetap's sidecar injector: a mutating admission webhook that adds sidetap to the\n"
	      "# workloads annotated for it. Made by sidetapctl install --dry-run; apply it with\n"
	      "# sidetapctl install, which mints the webhook's CA and serving certificate (the\n"
	      "# Secret's data and the caBundle, placeholders in deploy/sidetap.yaml).\n",
	      f);
	fprintf(f,
		"---\n"
		"apiVersion: v1\n"
		"kind: Namespace\n"
		"metadata:\n"
		"  name: \"%s\"\n"
		"  labels:\n"
		"    app.kubernetes.io/part-of: sidetap\n"
		"---\n"
		"# The injector needs no access to the Kubernetes API: its ServiceAccount has no\n"
		"# roles bound and no token mounted.\n"
		"apiVersion: v1\n"
		"kind: ServiceAccount\n"
		"metadata:\n"
		"  name: " SVC "\n"
		"  namespace: \"%s\"\n"
		"  labels:\n"
		"    app.kubernetes.io/name: " SVC "\n"
		"    app.kubernetes.io/part-of: sidetap\n"
		"automountServiceAccountToken: false\n"
		"---\n"
		"apiVersion: v1\n"
		"kind: Secret\n"
		"metadata:\n"
		"  name: " TLS_SECRET "\n"
		"  namespace: \"%s\"\n"
		"  labels:\n"
		"    app.kubernetes.io/name: " SVC "\n"
		"    app.kubernetes.io/part-of: sidetap\n"
		"type: kubernetes.io/tls\n"
		"data:\n"
		"  ca.crt: ",
		ns, ns, ns);
	data_value(f, o, c->ca, "CA certificate");
	fputs("\n  tls.crt: ", f);
	data_value(f, o, c->crt, "serving certificate");
	fputs("\n  tls.key: ", f);
	data_value(f, o, c->key, "serving key");
	fprintf(f,
		"\n"
		"---\n"
		"apiVersion: apps/v1\n"
		"kind: Deployment\n"
		"metadata:\n"
		"  name: " SVC "\n"
		"  namespace: \"%s\"\n"
		"  labels:\n"
		"    app.kubernetes.io/name: " SVC "\n"
		"    app.kubernetes.io/part-of: sidetap\n"
		"spec:\n"
		"  replicas: %u\n"
		"  selector:\n"
		"    matchLabels:\n"
		"      app.kubernetes.io/name: " SVC "\n"
		"  template:\n"
		"    metadata:\n"
		"      labels:\n"
		"        app.kubernetes.io/name: " SVC "\n"
		"        app.kubernetes.io/part-of: sidetap\n"
		"    spec:\n"
		"      serviceAccountName: " SVC "\n"
		"      automountServiceAccountToken: false\n"
		"      securityContext:\n"
		"        runAsNonRoot: true\n"
		"        runAsUser: 65532\n"
		"        runAsGroup: 65532\n"
		"        seccompProfile:\n"
		"          type: RuntimeDefault\n"
		"      affinity:\n"
		"        podAntiAffinity:\n"
		"          preferredDuringSchedulingIgnoredDuringExecution:\n"
		"            - weight: 100\n"
		"              podAffinityTerm:\n"
		"                topologyKey: kubernetes.io/hostname\n"
		"                labelSelector:\n"
		"                  matchLabels:\n"
		"                    app.kubernetes.io/name: " SVC "\n"
		"      containers:\n"
		"        - name: injector\n"
		"          image: ",
		ns, o->replicas);
	ctl_yaml_quote(f, o->image);
	fprintf(f,
		"\n"
		"          imagePullPolicy: IfNotPresent\n"
		"          command: [\"sidetap-injector\"]\n"
		"          args:\n"
		"            - \"--listen=0.0.0.0:8443\"\n"
		"            - \"--cert=/etc/sidetap-injector/tls/tls.crt\"\n"
		"            - \"--key=/etc/sidetap-injector/tls/tls.key\"\n"
		"            - \"--namespace=%s\"\n"
		"            - \"--annotation-prefix=%s\"\n"
		"            - ",
		ns, o->prefix);
	{
		char arg[600];

		snprintf(arg, sizeof(arg), "--image=%s", o->image);
		ctl_yaml_quote(f, arg);
	}
	fprintf(f,
		"\n"
		"            - \"--native-sidecar=%s\"\n"
		"          ports:\n"
		"            - name: https\n"
		"              containerPort: 8443\n"
		"              protocol: TCP\n"
		"          readinessProbe:\n"
		"            httpGet:\n"
		"              path: /healthz\n"
		"              port: https\n"
		"              scheme: HTTPS\n"
		"            periodSeconds: 5\n"
		"          livenessProbe:\n"
		"            httpGet:\n"
		"              path: /healthz\n"
		"              port: https\n"
		"              scheme: HTTPS\n"
		"            periodSeconds: 10\n"
		"            failureThreshold: 6\n"
		"          resources:\n"
		"            requests:\n"
		"              cpu: 20m\n"
		"              memory: 32Mi\n"
		"            limits:\n"
		"              memory: 128Mi\n"
		"          securityContext:\n"
		"            allowPrivilegeEscalation: false\n"
		"            readOnlyRootFilesystem: true\n"
		"            capabilities:\n"
		"              drop: [\"ALL\"]\n"
		"          volumeMounts:\n"
		"            - name: tls\n"
		"              mountPath: /etc/sidetap-injector/tls\n"
		"              readOnly: true\n"
		"      volumes:\n"
		"        # The injector reloads the certificate when kubelet updates this volume.\n"
		"        - name: tls\n"
		"          secret:\n"
		"            secretName: " TLS_SECRET "\n"
		"---\n"
		"apiVersion: v1\n"
		"kind: Service\n"
		"metadata:\n"
		"  name: " SVC "\n"
		"  namespace: \"%s\"\n"
		"  labels:\n"
		"    app.kubernetes.io/name: " SVC "\n"
		"    app.kubernetes.io/part-of: sidetap\n"
		"spec:\n"
		"  selector:\n"
		"    app.kubernetes.io/name: " SVC "\n"
		"  ports:\n"
		"    - name: https\n"
		"      port: 443\n"
		"      targetPort: https\n"
		"      protocol: TCP\n"
		"---\n"
		"apiVersion: policy/v1\n"
		"kind: PodDisruptionBudget\n"
		"metadata:\n"
		"  name: " SVC "\n"
		"  namespace: \"%s\"\n"
		"  labels:\n"
		"    app.kubernetes.io/name: " SVC "\n"
		"    app.kubernetes.io/part-of: sidetap\n"
		"spec:\n"
		"  maxUnavailable: 1\n"
		"  selector:\n"
		"    matchLabels:\n"
		"      app.kubernetes.io/name: " SVC "\n"
		"---\n"
		"apiVersion: admissionregistration.k8s.io/v1\n"
		"kind: MutatingWebhookConfiguration\n"
		"metadata:\n"
		"  name: " SVC "\n"
		"  labels:\n"
		"    app.kubernetes.io/name: " SVC "\n"
		"    app.kubernetes.io/part-of: sidetap\n"
		"webhooks:\n"
		"  - name: " WEBHOOK "\n"
		"    admissionReviewVersions: [\"v1\"]\n"
		"    sideEffects: None\n"
		"    # Ignore: while the injector is unreachable, workloads start without sidetap\n"
		"    # rather than not at all (capture is best-effort; see README).\n"
		"    failurePolicy: %s\n"
		"    matchPolicy: Equivalent\n"
		"    reinvocationPolicy: IfNeeded\n"
		"    timeoutSeconds: 5\n"
		"    clientConfig:\n"
		"      service:\n"
		"        name: " SVC "\n"
		"        namespace: \"%s\"\n"
		"        path: /mutate\n"
		"        port: 443\n"
		"      caBundle: ",
		o->native ? "on" : "off", ns, ns, o->failure_policy, ns);
	data_value(f, o, c->bundle, "CA certificate");
	fprintf(f,
		"\n"
		"    namespaceSelector:\n"
		"      matchExpressions:\n"
		"        - key: kubernetes.io/metadata.name\n"
		"          operator: NotIn\n"
		"          values: [\"kube-system\", \"kube-node-lease\", \"%s\"]\n"
		"    rules:\n"
		"      - apiGroups: [\"\"]\n"
		"        apiVersions: [\"v1\"]\n"
		"        operations: [\"CREATE\"]\n"
		"        resources: [\"pods\"]\n"
		"        scope: Namespaced\n"
		"      - apiGroups: [\"apps\"]\n"
		"        apiVersions: [\"v1\"]\n"
		"        operations: [\"CREATE\", \"UPDATE\"]\n"
		"        resources: [\"deployments\", \"statefulsets\", \"daemonsets\", \"replicasets\"]\n"
		"        scope: Namespaced\n"
		"      - apiGroups: [\"batch\"]\n"
		"        apiVersions: [\"v1\"]\n"
		"        operations: [\"CREATE\"]\n"
		"        resources: [\"jobs\"]\n"
		"        scope: Namespaced\n",
		ns);
}

/*
 * Adds to the new bundle the CA of the webhook now installed, while it is
 * valid: pods keep serving the old leaf until kubelet updates their Secret
 * volume, and the API server must trust both meanwhile.
 */
static void bundle_keep_previous(const struct install *o, struct certs *c)
{
	char *argv[] = { (char *)ctl_kubectl(),
			 "get",
			 "mutatingwebhookconfiguration",
			 SVC,
			 "--ignore-not-found",
			 "-o",
			 "jsonpath={.webhooks[0].clientConfig.caBundle}",
			 NULL };
	unsigned char *pem = NULL;
	X509 *old = NULL, *cur = NULL;
	char *out = NULL, *oldpem = NULL;
	BIO *b = NULL;
	int n;

	(void)o;
	if (ctl_run(argv, NULL, 0, &out) != 0 || !out || !out[0])
		goto out;
	for (char *e = out + strlen(out); e > out && isspace((unsigned char)e[-1]);)
		*--e = '\0';
	pem = malloc(strlen(out) + 1);
	n = pem ? EVP_DecodeBlock(pem, (unsigned char *)out, (int)strlen(out)) : -1;
	if (n <= 0)
		goto out;
	b = BIO_new_mem_buf(pem, n);
	old = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	b = BIO_new_mem_buf(c->ca, -1);
	cur = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	if (!old || !cur || X509_cmp(old, cur) == 0 ||
	    X509_cmp_time(X509_get0_notAfter(old), NULL) <= 0)
		goto out;
	oldpem = pem_of_cert(old);
	if (oldpem) {
		char *both = malloc(strlen(c->ca) + strlen(oldpem) + 1);

		if (both) {
			strcpy(both, c->ca);
			strcat(both, oldpem);
			free(c->bundle);
			c->bundle = both;
			fprintf(stderr,
				"sidetapctl install: the webhook trusts the previous CA too until it expires or the next install\n");
		}
	}
out:
	BIO_free(b);
	X509_free(old);
	X509_free(cur);
	free(oldpem);
	free(pem);
	free(out);
}

static void usage_install(FILE *o)
{
	fputs("usage: sidetapctl install [--dry-run] [FLAG VALUE]...\n"
	      "\n"
	      "Prints (--dry-run) or applies (kubectl apply -f -) what the cluster needs for\n"
	      "sidetap's sidecar injector: its namespace, ServiceAccount, serving certificate\n"
	      "Secret, Deployment, Service, PodDisruptionBudget and MutatingWebhookConfiguration.\n"
	      "The CA and serving certificate (SAN sidetap-injector.NS.svc) are minted on each\n"
	      "run; applied over an earlier install, the webhook trusts the previous CA as well\n"
	      "until the injector pods serve the new certificate. $KUBECTL names kubectl.\n"
	      "\n"
	      "  --dry-run                 print the manifests, apply nothing\n"
	      "  --namespace NS            the injector's namespace (default sidetap)\n"
	      "  --image IMAGE             image of the injector, sidetap and sidetap-init\n"
	      "                            (default ghcr.io/sidetap/sidetap:" SIDETAP_VERSION ")\n"
	      "  --annotation-prefix P     annotations the injector reads (default sidecar.speedscale.com)\n"
	      "  --failure-policy Ignore|Fail  when the injector cannot be reached (default Ignore:\n"
	      "                            workloads start without sidetap rather than not at all)\n"
	      "  --native-sidecar on|off   inject native sidecars by default (Kubernetes 1.29+; default off)\n"
	      "  --replicas N              injector replicas (default 2)\n"
	      "  --placeholders            with --dry-run: placeholders for the certificates, as in\n"
	      "                            deploy/sidetap.yaml\n",
	      o);
}

/*
 * Reads the flags of install (<all>) or uninstall (--dry-run, --namespace and
 * --annotation-prefix only). Returns 0, 1 for --help, or -2 after a usage error.
 */
static int install_args(int argc, char **argv, struct install *o, const char *cmd, bool all)
{
	for (int i = 1; i < argc; i++) {
		bool missing = false;
		const char *v;

		if (tap_arg_is_help(argv[i]))
			return 1;
		if (strcmp(argv[i], "--dry-run") == 0) {
			o->dry_run = true;
		} else if (all && strcmp(argv[i], "--placeholders") == 0) {
			o->placeholders = true;
		} else if ((v = tap_arg_value(argc, argv, &i, "--namespace", &missing))) {
			if (!ctl_is_dns(v, 63, false)) {
				fprintf(stderr,
					"sidetapctl %s: --namespace: invalid value '%s': a namespace name (DNS label)\n",
					cmd, v);
				return -2;
			}
			o->ns = v;
		} else if ((v = tap_arg_value(argc, argv, &i, "--annotation-prefix", &missing))) {
			if (!ctl_is_dns(v, 253, true)) {
				fprintf(stderr,
					"sidetapctl %s: --annotation-prefix: invalid value '%s': a DNS subdomain such as sidecar.speedscale.com\n",
					cmd, v);
				return -2;
			}
			o->prefix = v;
		} else if (all && (v = tap_arg_value(argc, argv, &i, "--image", &missing))) {
			bool ok = v[0] && strlen(v) < 512;

			for (const char *p = v; *p; p++)
				ok &= isgraph((unsigned char)*p) && *p != '"' && *p != '\\';
			if (!ok) {
				fprintf(stderr,
					"sidetapctl %s: --image: invalid value '%s': an image reference without spaces or quotes\n",
					cmd, v);
				return -2;
			}
			o->image = v;
		} else if (all && (v = tap_arg_value(argc, argv, &i, "--failure-policy", &missing))) {
			if (strcmp(v, "Ignore") != 0 && strcmp(v, "Fail") != 0) {
				fprintf(stderr,
					"sidetapctl %s: --failure-policy: invalid value '%s': accepted: Ignore, Fail\n",
					cmd, v);
				return -2;
			}
			o->failure_policy = v;
		} else if (all && (v = tap_arg_value(argc, argv, &i, "--native-sidecar", &missing))) {
			if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0) {
				fprintf(stderr,
					"sidetapctl %s: --native-sidecar: invalid value '%s': accepted: on, off\n",
					cmd, v);
				return -2;
			}
			o->native = strcmp(v, "on") == 0;
		} else if (all && (v = tap_arg_value(argc, argv, &i, "--replicas", &missing))) {
			char *end;
			unsigned long n = strtoul(v, &end, 10);

			if (!isdigit((unsigned char)v[0]) || *end || n < 1 || n > 100) {
				fprintf(stderr,
					"sidetapctl %s: --replicas: invalid value '%s': a number from 1 to 100\n",
					cmd, v);
				return -2;
			}
			o->replicas = (unsigned)n;
		} else {
			fprintf(stderr, "sidetapctl %s: %s '%s' (see sidetapctl %s --help)\n", cmd,
				missing ? "missing value for" : "unexpected argument", argv[i],
				cmd);
			return -2;
		}
	}
	if (o->placeholders && !o->dry_run) {
		fprintf(stderr, "sidetapctl %s: --placeholders goes with --dry-run only\n", cmd);
		return -2;
	}
	return 0;
}

/* Prints the command, as the shell's set -x does, then runs it. */
static int run_echo(char *const argv[], const char *in, size_t in_len)
{
	fputs("+", stderr);
	for (int i = 0; argv[i]; i++)
		fprintf(stderr, " %s", argv[i]);
	fputs(in ? " < manifests\n" : "\n", stderr);
	return ctl_run(argv, in, in_len, NULL);
}

int ctl_install(int argc, char **argv)
{
	struct install o = { .ns = "sidetap",
			     .image = "ghcr.io/sidetap/sidetap:" SIDETAP_VERSION,
			     .prefix = "sidecar.speedscale.com",
			     .failure_policy = "Ignore",
			     .replicas = 2 };
	struct certs c;
	char *text = NULL;
	size_t len = 0;
	FILE *f;
	int ret;

	ret = install_args(argc, argv, &o, "install", true);
	if (ret == 1) {
		usage_install(stdout);
		return 0;
	}
	if (ret)
		return 2;
	if (certs_mint(o.ns, &c) != 0) {
		fprintf(stderr, "sidetapctl install: cannot mint the webhook's certificates\n");
		return 1;
	}
	if (o.dry_run) {
		render(stdout, &o, &c);
		certs_fini(&c);
		return fflush(stdout) == 0 ? 0 : 1;
	}
	bundle_keep_previous(&o, &c);
	f = open_memstream(&text, &len);
	if (!f) {
		certs_fini(&c);
		return 1;
	}
	render(f, &o, &c);
	fclose(f);
	certs_fini(&c);
	{
		char *apply[] = { (char *)ctl_kubectl(), "apply", "-f", "-", NULL };
		char deploy[80], *status[] = {
			(char *)ctl_kubectl(), "rollout", "status", "--timeout=180s", "-n",
			(char *)o.ns,	       deploy,	  NULL
		};

		snprintf(deploy, sizeof(deploy), "deployment/" SVC);
		ret = run_echo(apply, text, len);
		free(text);
		if (ret != 0) {
			fprintf(stderr, "sidetapctl install: kubectl apply failed (status %d)\n",
				ret);
			return 1;
		}
		ret = run_echo(status, NULL, 0);
		if (ret != 0) {
			fprintf(stderr,
				"sidetapctl install: the injector is not ready yet (kubectl rollout status: %d); see kubectl -n %s get pods\n",
				ret, o.ns);
			return 1;
		}
	}
	printf("sidetap: the injector runs in namespace %s. Annotate a workload's pod template with\n"
	       "  %s/inject: \"true\"\n"
	       "and its pods get the sidetap sidecar.\n",
	       o.ns, o.prefix);
	return 0;
}

/* uninstall */

struct target {
	const char *kind, *ns, *name;
	bool pod_spec_immutable; /* Job, Pod */
	bool rolls; /* Deployment, StatefulSet, DaemonSet: a template change replaces the pods */
};

static const char *ann_value(json_t *meta, const char *key)
{
	return json_string_value(json_object_get(json_object_get(meta, "annotations"), key));
}

static const char *controller_kind(json_t *meta)
{
	json_t *refs = json_object_get(meta, "ownerReferences"), *r;
	size_t i;

	json_array_foreach(refs, i, r)
		if (json_is_true(json_object_get(r, "controller")))
			return json_string_value(json_object_get(r, "kind"));
	return NULL;
}

/* Whether <item> carries sidetap (or asks for it), and is not one its owner stands for. */
static bool is_target(json_t *item, const char *prefix, struct target *t)
{
	json_t *meta = json_object_get(item, "metadata"), *pmeta;
	const char *kind = json_string_value(json_object_get(item, "kind")), *owner, *v;
	char key[300], marker[300];
	bool pod;

	if (!kind || !json_is_object(meta))
		return false;
	pod = strcmp(kind, "Pod") == 0;
	pmeta = pod ? meta :
		      json_object_get(json_object_get(json_object_get(item, "spec"), "template"),
				      "metadata");
	owner = controller_kind(meta);
	if (owner && pod &&
	    (strcmp(owner, "ReplicaSet") == 0 || strcmp(owner, "StatefulSet") == 0 ||
	     strcmp(owner, "DaemonSet") == 0 || strcmp(owner, "Job") == 0))
		return false;
	if (owner && strcmp(kind, "ReplicaSet") == 0 && strcmp(owner, "Deployment") == 0)
		return false;
	snprintf(key, sizeof(key), "%s/inject", prefix);
	snprintf(marker, sizeof(marker), "%s/injected", prefix);
	v = ann_value(meta, key);
	if (!(v && strcmp(v, "true") == 0) &&
	    !((v = ann_value(pmeta, key)) && strcmp(v, "true") == 0) &&
	    !((v = ann_value(pmeta, marker)) && strcmp(v, "true") == 0))
		return false;
	t->kind = kind;
	t->ns = json_string_value(json_object_get(meta, "namespace"));
	t->name = json_string_value(json_object_get(meta, "name"));
	t->pod_spec_immutable = pod || strcmp(kind, "Job") == 0;
	t->rolls = strcmp(kind, "Deployment") == 0 || strcmp(kind, "StatefulSet") == 0 ||
		   strcmp(kind, "DaemonSet") == 0;
	return t->ns && t->name;
}

static void lower(char *dst, size_t len, const char *s)
{
	size_t n = 0;

	for (; *s && n + 1 < len; s++)
		dst[n++] = (char)tolower((unsigned char)*s);
	dst[n] = '\0';
}

/* Prints and (unless <dry_run>) runs one step. Returns its exit status (0 in a dry run). */
static int step(bool dry_run, char *const argv[])
{
	if (dry_run) {
		for (int i = 0; argv[i]; i++) {
			bool plain = argv[i][0] != '\0';

			for (const char *p = argv[i]; *p; p++)
				plain &= isalnum((unsigned char)*p) || strchr("-_./=:,", *p);
			fputs(i ? " " : "", stdout);
			if (plain)
				fputs(argv[i], stdout);
			else
				printf("'%s'", argv[i]);
		}
		putchar('\n');
		return 0;
	}
	return run_echo(argv, NULL, 0);
}

static void usage_uninstall(FILE *o)
{
	fputs("usage: sidetapctl uninstall [--dry-run] [--namespace NS] [--annotation-prefix P]\n"
	      "\n"
	      "Takes sidetap out of the cluster, workloads first: every Deployment, StatefulSet,\n"
	      "DaemonSet and ReplicaSet annotated PREFIX/inject: \"true\" (or carrying the injected\n"
	      "marker) gets PREFIX/inject: \"false\" on itself and its pod template, so that the\n"
	      "webhook removes what it injected and the workload rolls; then the webhook and the\n"
	      "injector's namespace are deleted. Jobs and bare Pods cannot change their pod spec:\n"
	      "they are listed, to be re-created. --dry-run prints the steps (it only reads the\n"
	      "cluster). $KUBECTL names kubectl.\n",
	      o);
}

int ctl_uninstall(int argc, char **argv)
{
	struct install o = { .ns = "sidetap", .prefix = "sidecar.speedscale.com" };
	char *list[] = { (char *)ctl_kubectl(),
			 "get",
			 "deployments,statefulsets,daemonsets,replicasets,jobs,pods",
			 "--all-namespaces",
			 "-o",
			 "json",
			 NULL };
	json_t *doc = NULL, *items, *item;
	char *out = NULL, patch[700];
	int ret, failures = 0;
	size_t i, found = 0;

	ret = install_args(argc, argv, &o, "uninstall", false);
	if (ret == 1) {
		usage_uninstall(stdout);
		return 0;
	}
	if (ret)
		return 2;
	snprintf(
		patch, sizeof(patch),
		"{\"metadata\":{\"annotations\":{\"%s/inject\":\"false\"}},"
		"\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"%s/inject\":\"false\"}}}}}",
		o.prefix, o.prefix);
	printf("# 1. workloads with sidetap: PREFIX/inject \"false\", so that the webhook takes it out\n");
	ret = ctl_run(list, NULL, 0, &out);
	if (ret == 0 && out)
		doc = json_loads(out, 0, NULL);
	free(out);
	items = json_object_get(doc, "items");
	if (!json_is_array(items)) {
		fprintf(stderr,
			"sidetapctl uninstall: cannot list the workloads (kubectl get: status %d)%s\n",
			ret, o.dry_run ? "" : "; nothing was changed");
		if (!o.dry_run) {
			json_decref(doc);
			return 1;
		}
		printf("# (the cluster could not be read: each workload annotated %s/inject=true gets)\n"
		       "%s patch -n NAMESPACE KIND NAME --type=merge -p '%s'\n",
		       o.prefix, ctl_kubectl(), patch);
	}
	json_array_foreach(items, i, item) {
		struct target t;
		char kind[64], ref[400];

		if (!is_target(item, o.prefix, &t))
			continue;
		found++;
		lower(kind, sizeof(kind), t.kind);
		snprintf(ref, sizeof(ref), "%s/%s", kind, t.name);
		if (t.pod_spec_immutable) {
			printf("# %s in namespace %s keeps sidetap until it is re-created (its pod spec cannot change)\n",
			       ref, t.ns);
			continue;
		}
		{
			char *argv2[] = { (char *)ctl_kubectl(), "patch", "-n",	 (char *)t.ns, ref,
					  "--type=merge",	 "-p",	  patch, NULL };

			if (step(o.dry_run, argv2) != 0)
				failures++;
		}
		if (t.rolls) {
			char *argv3[] = {
				(char *)ctl_kubectl(), "rollout", "status",	    "-n",
				(char *)t.ns,	       ref,	  "--timeout=300s", NULL
			};

			if (step(o.dry_run, argv3) != 0)
				failures++;
		} else {
			printf("# %s in namespace %s: its pods keep sidetap until they are replaced\n",
			       ref, t.ns);
		}
	}
	if (json_is_array(items) && found == 0)
		printf("# (no workload carries sidetap)\n");
	json_decref(doc);
	printf("# 2. the webhook, then the injector's namespace (its Deployment, Service, Secret, ...)\n");
	{
		char *mwc[] = { (char *)ctl_kubectl(),		"delete",
				"mutatingwebhookconfiguration", SVC,
				"--ignore-not-found",		NULL };
		char *nsdel[] = { (char *)ctl_kubectl(), "delete", "namespace", (char *)o.ns,
				  "--ignore-not-found",	 NULL };

		if (step(o.dry_run, mwc) != 0 || step(o.dry_run, nsdel) != 0) {
			fprintf(stderr, "sidetapctl uninstall: kubectl delete failed\n");
			return 1;
		}
	}
	if (failures) {
		fprintf(stderr,
			"sidetapctl uninstall: %d step(s) failed for workloads (see above); sidetap itself is removed\n",
			failures);
		return 1;
	}
	return 0;
}
