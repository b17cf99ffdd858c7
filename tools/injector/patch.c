/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The patch builder: from a pod template (or pod) and the settings its
 * annotations ask for, the JSON Patch that adds sidetap-init and the sidetap
 * sidecar, removes exactly what an earlier patch added, or does nothing.
 *
 * Every operation is applied to a working copy of the object as it is made,
 * so that each index and each "is the array there yet" is computed from the
 * object as the previous operations left it: the patch applies, in order, to
 * the object the API server sent.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inject_int.h"

/* Mount points inside the sidecar. */
#define DATA_DIR "/var/lib/sidetap"
#define CA_DIR "/etc/sidetap/ca"
#define TLS_IN_DIR "/etc/sidetap/tls-in"
#define JAVA_TRUSTSTORE "cacerts.jks"

struct builder {
	const struct inj_config *cfg;
	struct inj_settings *s;
	json_t *ops;
	bool failed;
};

/* JSON pointers */

/* Writes <base>/<token> with the token escaped (RFC 6901: ~ as ~0, / as ~1). */
static void ptr_join(char *out, size_t len, const char *base, const char *token)
{
	size_t n = (size_t)snprintf(out, len, "%s/", base);

	for (const char *t = token; *t && n + 3 < len; t++) {
		if (*t == '~') {
			out[n++] = '~';
			out[n++] = '0';
		} else if (*t == '/') {
			out[n++] = '~';
			out[n++] = '1';
		} else {
			out[n++] = *t;
		}
	}
	out[n < len ? n : len - 1] = '\0';
}

/* snprintf, through a va_list: pointers longer than their buffer are cut, never overrun. */
static void fmt(char *out, size_t len, const char *f, ...) __attribute__((format(printf, 3, 4)));

static void fmt(char *out, size_t len, const char *f, ...)
{
	va_list ap;

	va_start(ap, f);
	vsnprintf(out, len, f, ap);
	va_end(ap);
}

static void ptr_index(char *out, size_t len, const char *base, size_t idx)
{
	fmt(out, len, "%s/%zu", base, idx);
}

/* Follows a pointer of plain object keys (our fixed paths need no escapes). */
static json_t *ptr_get(json_t *doc, const char *path)
{
	char key[64];

	while (*path == '/' && doc) {
		const char *end = strchr(path + 1, '/');
		size_t n = end ? (size_t)(end - path - 1) : strlen(path + 1);

		if (n >= sizeof(key) || !json_is_object(doc))
			return NULL;
		memcpy(key, path + 1, n);
		key[n] = '\0';
		doc = json_object_get(doc, key);
		path += n + 1;
	}
	return doc;
}

/* operations, each applied to the working copy as it is recorded */

static void op_record(struct builder *b, const char *op, const char *path, json_t *value)
{
	json_t *o = json_pack("{s:s, s:s}", "op", op, "path", path);

	/* jansson's *_new calls take the reference even when they fail. */
	if (o && value && json_object_set_new(o, "value", json_deep_copy(value))) {
		json_decref(o);
		o = NULL;
	}
	if (!o || json_array_append_new(b->ops, o))
		b->failed = true;
}

/* Adds <key> (absent) to <obj> at <path>. Takes <value>. */
static void add_key(struct builder *b, const char *path, json_t *obj, const char *key,
		    json_t *value)
{
	char p[512];

	if (!value) {
		b->failed = true;
		return;
	}
	ptr_join(p, sizeof(p), path, key);
	op_record(b, "add", p, value);
	if (json_object_set_new(obj, key, value))
		b->failed = true;
}

static void remove_key(struct builder *b, const char *path, json_t *obj, const char *key)
{
	char p[512];

	ptr_join(p, sizeof(p), path, key);
	op_record(b, "remove", p, NULL);
	json_object_del(obj, key);
}

/* Appends (or, <front>, inserts at <at>) <value> to the array <arr> at <path>. Takes <value>. */
static void arr_add(struct builder *b, const char *path, json_t *arr, json_t *value, bool front,
		    size_t at)
{
	char p[512];

	if (!value) {
		b->failed = true;
		return;
	}
	if (front)
		ptr_index(p, sizeof(p), path, at);
	else
		fmt(p, sizeof(p), "%s/-", path);
	op_record(b, "add", p, value);
	if ((front ? json_array_insert_new(arr, at, value) : json_array_append_new(arr, value)))
		b->failed = true;
}

/*
 * Adds the elements of <items> to the array <key> of <parent> (at <path>):
 * one operation that creates the array when there is none, else one per
 * element, at the end or (<front>) at the start. Takes <items>.
 */
static void arr_add_items(struct builder *b, const char *path, json_t *parent, const char *key,
			  json_t *items, bool front)
{
	json_t *arr = json_object_get(parent, key);
	char p[512];
	size_t i;
	json_t *v;

	if (!items) {
		b->failed = true;
		return;
	}
	if (json_array_size(items) == 0) {
		json_decref(items);
		return;
	}
	if (!json_is_array(arr)) {
		add_key(b, path, parent, key, items);
		return;
	}
	ptr_join(p, sizeof(p), path, key);
	json_array_foreach(items, i, v)
		arr_add(b, p, arr, json_incref(v), front, i);
	json_decref(items);
}

/*
 * Removes the elements of the array <key> of <parent> (at <path>) that
 * <match> picks: the whole array when they are all of it (it was ours),
 * else each one, from the last, so that no removal shifts the next.
 */
static void arr_remove_matching(struct builder *b, const char *path, json_t *parent,
				const char *key, bool (*match)(json_t *el, const void *arg),
				const void *arg)
{
	json_t *arr = json_object_get(parent, key);
	size_t n = json_array_size(arr), hits = 0;
	char p[512], q[600];

	if (!json_is_array(arr))
		return;
	for (size_t i = 0; i < n; i++)
		hits += match(json_array_get(arr, i), arg);
	if (hits == 0)
		return;
	if (hits == n) {
		remove_key(b, path, parent, key);
		return;
	}
	ptr_join(p, sizeof(p), path, key);
	for (size_t i = n; i-- > 0;) {
		if (!match(json_array_get(arr, i), arg))
			continue;
		ptr_index(q, sizeof(q), p, i);
		op_record(b, "remove", q, NULL);
		json_array_remove(arr, i);
	}
}

static const char *name_of(json_t *el)
{
	return json_string_value(json_object_get(el, "name"));
}

/* <arg> is a NULL-terminated list of names. */
static bool match_names(json_t *el, const void *arg)
{
	const char *name = name_of(el);

	for (const char *const *n = arg; name && *n; n++)
		if (strcmp(name, *n) == 0)
			return true;
	return false;
}

static const char *const trust_env_names[] = { "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS",
					       "JAVA_TOOL_OPTIONS", NULL };

/* An env var the injector set on an app container: one of its names, pointing into its mount. */
static bool match_trust_env(json_t *el, const void *arg)
{
	const char *value = json_string_value(json_object_get(el, "value"));

	(void)arg;
	return match_names(el, trust_env_names) && value && strstr(value, INJ_TRUST_DIR "/");
}

static bool has_named(json_t *arr, const char *name)
{
	size_t i;
	json_t *el;

	json_array_foreach(arr, i, el)
		if (name_of(el) && strcmp(name_of(el), name) == 0)
			return true;
	return false;
}

/* what is injected */

static json_t *env_var(const char *name, const char *value)
{
	return json_pack("{s:s, s:s}", "name", name, "value", value);
}

static void env_add(json_t *env, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void env_add(json_t *env, const char *name, const char *fmt, ...)
{
	char value[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(value, sizeof(value), fmt, ap);
	va_end(ap);
	json_array_append_new(env, env_var(name, value));
}

static json_t *list_join(json_t *arr)
{
	size_t len = 0, i;
	json_t *v, *out;
	char *buf;

	json_array_foreach(arr, i, v)
		len += strlen(json_string_value(v)) + 1;
	buf = calloc(1, len + 1);
	if (!buf)
		return NULL;
	json_array_foreach(arr, i, v) {
		if (i)
			strcat(buf, ",");
		strcat(buf, json_string_value(v));
	}
	out = json_string(buf);
	free(buf);
	return out;
}

static json_t *init_container(struct builder *b)
{
	const struct inj_config *cfg = b->cfg;
	struct inj_settings *s = b->s;
	json_t *args;
	char num[16];

	args = json_array();
#define ARG(flag, value)                                        \
	do {                                                    \
		json_array_append_new(args, json_string(flag)); \
		json_array_append_new(args, value);             \
	} while (0)
#define ARG_NUM(flag, n)                               \
	do {                                           \
		snprintf(num, sizeof(num), "%u", (n)); \
		ARG(flag, json_string(num));           \
	} while (0)
	ARG_NUM("--inbound-port", s->in_port);
	ARG_NUM("--outbound-port", s->out_port);
	ARG_NUM("--proxy-uid", cfg->proxy_uid);
	ARG_NUM("--proxy-gid", cfg->proxy_gid);
	ARG_NUM("--admin-port", cfg->admin_port);
	/* sidetap listens on IPv4 only; IPv6 traffic passes untouched rather than into a void. */
	ARG("--ipv6", json_string("off"));
	if (s->skip_in_ports)
		ARG("--skip-inbound-ports", list_join(s->skip_in_ports));
	if (s->skip_in_cidrs)
		ARG("--skip-inbound-cidrs", list_join(s->skip_in_cidrs));
	if (s->skip_out_ports)
		ARG("--skip-outbound-ports", list_join(s->skip_out_ports));
	if (s->skip_out_cidrs)
		ARG("--skip-outbound-cidrs", list_join(s->skip_out_cidrs));
#undef ARG
#undef ARG_NUM
	return json_pack("{s:s, s:s, s:s, s:[s], s:o, s:{s:{s:s, s:s}, s:{s:s, s:s}}, "
			 "s:{s:b, s:b, s:b, s:i, s:i, s:{s:[s, s], s:[s]}}}",
			 "name", INJ_INIT_NAME, "image", cfg->init_image, "imagePullPolicy",
			 "IfNotPresent", "command", "sidetap-init", "args", args, "resources",
			 "requests", "cpu", "10m", "memory", "16Mi", "limits", "cpu", "100m",
			 "memory", "64Mi", "securityContext", "allowPrivilegeEscalation", 0,
			 "privileged", 0, "runAsNonRoot", 0, "runAsUser", 0, "runAsGroup", 0,
			 "capabilities", "add", "NET_ADMIN", "NET_RAW", "drop", "ALL");
}

static json_t *sidecar_env(struct builder *b)
{
	const struct inj_config *cfg = b->cfg;
	struct inj_settings *s = b->s;
	json_t *env = json_array();

	if (!env)
		return NULL;
	env_add(env, "SIDETAP_INBOUND_ADDR", "0.0.0.0:%u", s->in_port);
	if (s->type == INJ_PROXY_REVERSE) {
		bool v6 = strchr(s->proxy_host, ':');

		env_add(env, "SIDETAP_INBOUND_MODE", "reverse");
		env_add(env, "SIDETAP_INBOUND_UPSTREAM", "%s%s%s:%u", v6 ? "[" : "", s->proxy_host,
			v6 ? "]" : "", s->proxy_port);
		env_add(env, "SIDETAP_OUTBOUND_ADDR", "off");
	} else {
		env_add(env, "SIDETAP_INBOUND_MODE", "transparent");
		env_add(env, "SIDETAP_OUTBOUND_ADDR", "127.0.0.1:%u", s->out_port);
	}
	env_add(env, "SIDETAP_ADMIN_ADDR", "0.0.0.0:%u", cfg->admin_port);
	env_add(env, "SIDETAP_SINK", "%s", s->sink ? s->sink : "file:" DATA_DIR "/capture");
	/* Remote sinks spool there while the sink is down (the root filesystem is read-only). */
	env_add(env, "SIDETAP_SPOOL_DIR", DATA_DIR "/spool");
	if (s->body_limit)
		env_add(env, "SIDETAP_CAPTURE_BODY_LIMIT", "%s", s->body_limit);
	if (s->log_level)
		env_add(env, "SIDETAP_LOG_LEVEL", "%s", s->log_level);
	if (s->workers)
		env_add(env, "SIDETAP_WORKERS", "%u", s->workers);
	if (s->tls_out) {
		env_add(env, "SIDETAP_TLS_OUT", "unwrap");
		env_add(env, "SIDETAP_TLS_CA_CERT", CA_DIR "/tls.crt");
		env_add(env, "SIDETAP_TLS_CA_KEY", CA_DIR "/tls.key");
	}
	if (s->tls_in_secret) {
		env_add(env, "SIDETAP_TLS_IN_CERT", TLS_IN_DIR "/%s", s->tls_in_public);
		env_add(env, "SIDETAP_TLS_IN_KEY", TLS_IN_DIR "/%s", s->tls_in_private);
	}
	if (s->extra_env)
		json_array_extend(env, s->extra_env);
	return env;
}

static json_t *http_probe(struct builder *b, int period, int failures)
{
	return json_pack("{s:{s:s, s:i}, s:i, s:i}", "httpGet", "path", "/readyz", "port",
			 (int)b->cfg->admin_port, "periodSeconds", period, "failureThreshold",
			 failures);
}

static json_t *sidecar_container(struct builder *b)
{
	const struct inj_config *cfg = b->cfg;
	struct inj_settings *s = b->s;
	json_t *c, *ports, *res, *mounts;
	char admin[32];

	ports = json_pack("[{s:s, s:i, s:s}]", "name", "sidetap-in", "containerPort",
			  (int)s->in_port, "protocol", "TCP");
	if (ports && s->type == INJ_PROXY_TRANSPARENT)
		json_array_append_new(ports, json_pack("{s:s, s:i, s:s}", "name", "sidetap-out",
						       "containerPort", (int)s->out_port,
						       "protocol", "TCP"));
	if (ports)
		json_array_append_new(ports, json_pack("{s:s, s:i, s:s}", "name", "sidetap-admin",
						       "containerPort", (int)cfg->admin_port,
						       "protocol", "TCP"));
	res = json_pack("{s:{s:s, s:s}}", "requests", "cpu", s->cpu_request, "memory",
			s->memory_request);
	if (res && (s->cpu_limit || s->memory_limit)) {
		json_t *lim = json_object();

		if (s->cpu_limit)
			json_object_set_new(lim, "cpu", json_string(s->cpu_limit));
		if (s->memory_limit)
			json_object_set_new(lim, "memory", json_string(s->memory_limit));
		json_object_set_new(res, "limits", lim);
	}
	mounts = json_pack("[{s:s, s:s}]", "name", INJ_VOL_DATA, "mountPath", DATA_DIR);
	if (mounts && s->tls_out)
		json_array_append_new(mounts, json_pack("{s:s, s:s, s:b}", "name", INJ_VOL_CA,
							"mountPath", CA_DIR, "readOnly", 1));
	if (mounts && s->tls_in_secret)
		json_array_append_new(mounts, json_pack("{s:s, s:s, s:b}", "name", INJ_VOL_TLS_IN,
							"mountPath", TLS_IN_DIR, "readOnly", 1));
	c = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o}", "name", INJ_SIDECAR_NAME, "image",
		      cfg->image, "imagePullPolicy", "IfNotPresent", "env", sidecar_env(b), "ports",
		      ports, "readinessProbe", http_probe(b, 5, 3));
	if (!c) {
		json_decref(res);
		json_decref(mounts);
		return NULL;
	}
	if (s->native) {
		/* kubelet starts the next container once this probe passes: the app finds sidetap up. */
		json_object_set_new(c, "startupProbe", http_probe(b, 1, 120));
	} else {
		/* kubelet starts the next container when this hook returns: sidetap is then ready. */
		snprintf(admin, sizeof(admin), "127.0.0.1:%u", cfg->admin_port);
		json_object_set_new(c, "lifecycle",
				    json_pack("{s:{s:{s:[s, s, s, s, s, s]}}}", "postStart", "exec",
					      "command", "sidetapctl", "wait-ready", "--admin",
					      admin, "--timeout", "120"));
	}
	json_object_set_new(c, "resources", res);
	json_object_set_new(c, "securityContext",
			    json_pack("{s:b, s:b, s:b, s:i, s:i, s:{s:[s]}}",
				      "allowPrivilegeEscalation", 0, "readOnlyRootFilesystem", 1,
				      "runAsNonRoot", 1, "runAsUser", (int)cfg->proxy_uid,
				      "runAsGroup", (int)cfg->proxy_gid, "capabilities", "drop",
				      "ALL"));
	json_object_set_new(c, "volumeMounts", mounts);
	if (s->native)
		json_object_set_new(c, "restartPolicy", json_string("Always"));
	return c;
}

static json_t *volumes(struct builder *b)
{
	struct inj_settings *s = b->s;
	json_t *v = json_pack("[{s:s, s:{}}]", "name", INJ_VOL_DATA, "emptyDir");

	if (!v)
		return NULL;
	if (s->tls_out) {
		json_t *items = json_pack("[{s:s, s:s}]", "key", "tls.crt", "path", "ca.crt");

		if (items && s->java_tool_options)
			json_array_append_new(items, json_pack("{s:s, s:s}", "key", JAVA_TRUSTSTORE,
							       "path", JAVA_TRUSTSTORE));
		json_array_append_new(v, json_pack("{s:s, s:{s:s}}", "name", INJ_VOL_CA, "secret",
						   "secretName", b->cfg->ca_secret));
		/* The app containers see the certificate only, never the CA's key. */
		json_array_append_new(v, json_pack("{s:s, s:{s:s, s:o}}", "name", INJ_VOL_TRUST,
						   "secret", "secretName", b->cfg->ca_secret,
						   "items", items));
	}
	if (s->tls_in_secret)
		json_array_append_new(v, json_pack("{s:s, s:{s:s}}", "name", INJ_VOL_TLS_IN,
						   "secret", "secretName", s->tls_in_secret));
	return v;
}

/* The env vars that make an app container trust the CA that tls-out signs with. */
static json_t *trust_env(struct builder *b)
{
	json_t *env = json_array();

	if (!env || !b->s->tls_out)
		return env;
	env_add(env, "SSL_CERT_FILE", INJ_TRUST_DIR "/ca.crt");
	env_add(env, "NODE_EXTRA_CA_CERTS", INJ_TRUST_DIR "/ca.crt");
	if (b->s->java_tool_options)
		env_add(env, "JAVA_TOOL_OPTIONS",
			"-Djavax.net.ssl.trustStore=" INJ_TRUST_DIR "/" JAVA_TRUSTSTORE
			" -Djavax.net.ssl.trustStorePassword=changeit");
	return env;
}

/* Everything the settings put into the pod; its digest tells whether an injection is current. */
struct desired {
	json_t *all; /* {init, sidecar, volumes, trustEnv, insertInitFirst, native} */
	char digest[17];
};

static int desired_build(struct builder *b, struct desired *d)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char *text;

	d->all =
		json_pack("{s:o?, s:o, s:o, s:o, s:b, s:b}", "init",
			  b->s->type == INJ_PROXY_TRANSPARENT ? init_container(b) : NULL, "sidecar",
			  sidecar_container(b), "volumes", volumes(b), "trustEnv", trust_env(b),
			  "insertInitFirst", b->s->insert_init_first, "native", b->s->native);
	if (!d->all)
		return -ENOMEM;
	text = json_dumps(d->all, JSON_COMPACT);
	if (!text || !EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL)) {
		free(text);
		json_decref(d->all);
		return -ENOMEM;
	}
	free(text);
	for (unsigned i = 0; i < 8; i++)
		snprintf(d->digest + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* removal and addition */

static bool is_app(json_t *c)
{
	const char *n = name_of(c);

	return !n || strcmp(n, INJ_SIDECAR_NAME) != 0;
}

static void remove_injected(struct builder *b, json_t *meta, const char *meta_path, json_t *spec,
			    const char *spec_path)
{
	static const char *const inits[] = { INJ_INIT_NAME, INJ_SIDECAR_NAME, NULL };
	static const char *const sidecars[] = { INJ_SIDECAR_NAME, NULL };
	static const char *const vols[] = { INJ_VOL_DATA, INJ_VOL_CA, INJ_VOL_TRUST, INJ_VOL_TLS_IN,
					    NULL };
	static const char *const mounts[] = { INJ_VOL_TRUST, NULL };
	json_t *containers = json_object_get(spec, "containers"), *ann, *c;
	char p[512], cp[600], key[2][256];
	size_t i, ours = 0;

	ptr_join(p, sizeof(p), spec_path, "containers");
	json_array_foreach(containers, i, c) {
		if (!is_app(c) || !json_is_object(c))
			continue;
		ptr_index(cp, sizeof(cp), p, i);
		arr_remove_matching(b, cp, c, "env", match_trust_env, NULL);
		arr_remove_matching(b, cp, c, "volumeMounts", match_names, mounts);
	}
	arr_remove_matching(b, spec_path, spec, "initContainers", match_names, inits);
	arr_remove_matching(b, spec_path, spec, "containers", match_names, sidecars);
	arr_remove_matching(b, spec_path, spec, "volumes", match_names, vols);

	ann = json_object_get(meta, "annotations");
	snprintf(key[0], sizeof(key[0]), "%s/injected", b->cfg->prefix);
	snprintf(key[1], sizeof(key[1]), "%s/injected-config", b->cfg->prefix);
	for (int k = 0; k < 2; k++)
		ours += json_object_get(ann, key[k]) != NULL;
	if (ours && ours == json_object_size(ann)) {
		remove_key(b, meta_path, meta, "annotations");
		return;
	}
	ptr_join(p, sizeof(p), meta_path, "annotations");
	for (int k = 0; k < 2; k++)
		if (json_object_get(ann, key[k]))
			remove_key(b, p, ann, key[k]);
}

static void add_trust(struct builder *b, json_t *spec, const char *spec_path, json_t *env)
{
	json_t *containers = json_object_get(spec, "containers"), *c, *e;
	char p[512], cp[600];
	size_t i, j;

	ptr_join(p, sizeof(p), spec_path, "containers");
	json_array_foreach(containers, i, c) {
		json_t *add, *have;

		if (!is_app(c) || !json_is_object(c))
			continue;
		ptr_index(cp, sizeof(cp), p, i);
		have = json_object_get(c, "env");
		add = json_array();
		json_array_foreach(env, j, e) {
			if (json_is_array(have) && has_named(have, name_of(e))) {
				/* The user's own value stays: never change what the user wrote. */
				char w[256];

				snprintf(
					w, sizeof(w),
					"container %.60s already sets %s: left as it is, so it may not trust sidetap's CA",
					name_of(c) ? name_of(c) : "?", name_of(e));
				json_array_append_new(b->s->warnings, json_string(w));
				continue;
			}
			json_array_append(add, e);
		}
		arr_add_items(b, cp, c, "env", add, false);
		arr_add_items(b, cp, c, "volumeMounts",
			      json_pack("[{s:s, s:s, s:b}]", "name", INJ_VOL_TRUST, "mountPath",
					INJ_TRUST_DIR, "readOnly", 1),
			      false);
	}
}

static void add_injected(struct builder *b, json_t *doc, const char *meta_path, json_t *spec,
			 const char *spec_path, const struct desired *d)
{
	json_t *init = json_object_get(d->all, "init"), *items, *meta, *ann;
	char key[256], mkey[256];

	items = json_array();
	if (json_is_object(init))
		json_array_append(items, init);
	if (b->s->native)
		json_array_append(items, json_object_get(d->all, "sidecar"));
	arr_add_items(b, spec_path, spec, "initContainers", items, b->s->insert_init_first);
	if (!b->s->native) {
		/* First in containers: kubelet starts it, and runs its postStart hook, before the app. */
		arr_add_items(b, spec_path, spec, "containers",
			      json_pack("[O]", json_object_get(d->all, "sidecar")), true);
	}
	arr_add_items(b, spec_path, spec, "volumes",
		      json_deep_copy(json_object_get(d->all, "volumes")), false);
	if (b->s->tls_out)
		add_trust(b, spec, spec_path, json_object_get(d->all, "trustEnv"));

	snprintf(mkey, sizeof(mkey), "%s/injected", b->cfg->prefix);
	snprintf(key, sizeof(key), "%s/injected-config", b->cfg->prefix);
	meta = ptr_get(doc, meta_path);
	if (!json_is_object(meta)) {
		char parent[256];

		snprintf(parent, sizeof(parent), "%s", meta_path);
		*strrchr(parent, '/') = '\0';
		add_key(b, parent, ptr_get(doc, parent), strrchr(meta_path, '/') + 1,
			json_pack("{s:{s:s, s:s}}", "annotations", mkey, "true", key, d->digest));
		return;
	}
	ann = json_object_get(meta, "annotations");
	if (!json_is_object(ann)) {
		add_key(b, meta_path, meta, "annotations",
			json_pack("{s:s, s:s}", mkey, "true", key, d->digest));
		return;
	}
	{
		char p[512];

		ptr_join(p, sizeof(p), meta_path, "annotations");
		add_key(b, p, ann, mkey, json_string("true"));
		add_key(b, p, ann, key, json_string(d->digest));
	}
}

/* Whether the pod has a container or init container named <name>. */
static bool pod_has(json_t *spec, const char *name)
{
	return has_named(json_object_get(spec, "containers"), name) ||
	       has_named(json_object_get(spec, "initContainers"), name);
}

json_t *inj__patch_build(const struct inj_config *cfg, struct inj_settings *s, json_t *obj,
			 const char *meta_path, const char *spec_path, enum inj_outcome *outcome)
{
	struct builder b = { .cfg = cfg, .s = s };
	struct desired d = { 0 };
	json_t *doc, *meta, *spec, *ann;
	const char *marker, *digest;
	char key[256];
	bool marked, ours;

	*outcome = INJ_UNCHANGED;
	b.ops = json_array();
	doc = json_deep_copy(obj);
	if (!b.ops || !doc)
		goto err_free;
	meta = ptr_get(doc, meta_path);
	spec = ptr_get(doc, spec_path);
	ann = json_object_get(meta, "annotations");
	snprintf(key, sizeof(key), "%s/injected", cfg->prefix);
	marker = json_string_value(json_object_get(ann, key));
	snprintf(key, sizeof(key), "%s/injected-config", cfg->prefix);
	digest = json_string_value(json_object_get(ann, key));
	marked = marker && strcmp(marker, "true") == 0;
	ours = pod_has(spec, INJ_SIDECAR_NAME) || pod_has(spec, INJ_INIT_NAME);

	if (!marked && ours) {
		if (s->inject)
			json_array_append_new(
				s->warnings,
				json_string("a container named " INJ_SIDECAR_NAME
					    " or " INJ_INIT_NAME
					    " is there without the injected marker: left alone"));
		goto out;
	}
	if (!s->inject) {
		if (marked) {
			remove_injected(&b, meta, meta_path, spec, spec_path);
			*outcome = INJ_REMOVED;
		}
		goto out;
	}
	if (desired_build(&b, &d) != 0)
		goto err_free;
	if (marked && digest && strcmp(digest, d.digest) == 0 && pod_has(spec, INJ_SIDECAR_NAME) &&
	    (s->type != INJ_PROXY_TRANSPARENT || pod_has(spec, INJ_INIT_NAME)))
		goto out;
	if (marked) {
		remove_injected(&b, meta, meta_path, spec, spec_path);
	}
	add_injected(&b, doc, meta_path, spec, spec_path, &d);
	*outcome = marked ? INJ_UPDATED : INJ_INJECTED;
out:
	json_decref(d.all);
	json_decref(doc);
	if (b.failed) {
		json_decref(b.ops);
		return NULL;
	}
	return b.ops;

err_free:
	json_decref(d.all);
	json_decref(doc);
	json_decref(b.ops);
	return NULL;
}
