/* SPDX-License-Identifier: Apache-2.0 */
/*
 * AdmissionReview handling: decodes the review (never trusted), decides
 * whether the object is one to touch, and answers with the patch.
 *
 * Never touched: dry-run requests, kube-system, kube-node-lease and the
 * injector's own namespace, host-network pods, mirror pods, pods that a
 * workload controller created (their workload was patched: the pod comes
 * from the patched template) and ReplicaSets of a Deployment (likewise).
 * Pods and Jobs are patched at CREATE only, their pod spec being immutable.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inject_int.h"

void inj_config_defaults(struct inj_config *cfg)
{
	*cfg = (struct inj_config){
		.prefix = "sidecar.speedscale.com",
		.image = "ghcr.io/sidetap/sidetap:" SIDETAP_VERSION,
		.init_image = NULL,
		.own_namespace = "sidetap",
		.ca_secret = "sidetap-certs",
		.proxy_uid = 2102,
		.proxy_gid = 2102,
		.admin_port = 4191,
		.native_sidecar = false,
	};
	cfg->init_image = cfg->image;
}

const char *inj_outcome_name(enum inj_outcome o)
{
	switch (o) {
	case INJ_SKIPPED:
		return "skipped";
	case INJ_UNCHANGED:
		return "unchanged";
	case INJ_INJECTED:
		return "injected";
	case INJ_UPDATED:
		return "updated";
	case INJ_REMOVED:
		return "removed";
	case INJ_REFUSED:
		return "refused";
	}
	return "?";
}

/* The kinds the injector patches, at the version its webhook rules ask for. */
static const struct kind {
	const char *group, *kind;
	bool pod; /* the object is the pod itself (else a workload with spec.template) */
	bool update; /* UPDATE is patched too (else CREATE only) */
} kinds[] = {
	{ "", "Pod", true, false },
	{ "apps", "Deployment", false, true },
	{ "apps", "StatefulSet", false, true },
	{ "apps", "DaemonSet", false, true },
	{ "apps", "ReplicaSet", false, true },
	{ "batch", "Job", false, false },
};

struct review {
	json_t *root;
	json_t *obj;
	const char *uid, *group, *version, *kind, *ns, *name, *op;
	bool dry_run;
};

static int bad(struct inj_result *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int bad(struct inj_result *res, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(res->error, sizeof(res->error), fmt, ap);
	va_end(ap);
	return -EBADMSG;
}

/* A string member of <o>, or NULL when it is absent; *<ok> turns false when it is not a string. */
static const char *str_member(json_t *o, const char *key, bool *ok)
{
	json_t *v = json_object_get(o, key);

	if (!v || json_is_null(v))
		return NULL;
	if (!json_is_string(v)) {
		*ok = false;
		return NULL;
	}
	return json_string_value(v);
}

static int review_decode(struct review *rv, const char *body, size_t len, struct inj_result *res)
{
	json_error_t err;
	json_t *req, *kind, *meta, *dry;
	const char *api, *k;
	bool ok = true;

	rv->root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
	if (!rv->root)
		return bad(res, "not JSON: %s at byte %d", err.text, err.position);
	if (!json_is_object(rv->root))
		return bad(res, "not an AdmissionReview: the JSON is not an object");
	api = str_member(rv->root, "apiVersion", &ok);
	k = str_member(rv->root, "kind", &ok);
	if (!ok || !k || strcmp(k, "AdmissionReview") != 0)
		return bad(res, "not an AdmissionReview: kind is not \"AdmissionReview\"");
	if (!api || strcmp(api, "admission.k8s.io/v1") != 0)
		return bad(res, "apiVersion is not admission.k8s.io/v1 (the only version served)");
	req = json_object_get(rv->root, "request");
	if (!json_is_object(req))
		return bad(res, "AdmissionReview without a request object");
	rv->uid = str_member(req, "uid", &ok);
	if (!ok || !rv->uid || !rv->uid[0] || strlen(rv->uid) > 256)
		return bad(res, "request.uid is missing or not a string of 1 to 256 characters");
	kind = json_object_get(req, "kind");
	if (!json_is_object(kind))
		return bad(res, "request.kind is missing or not an object");
	rv->group = str_member(kind, "group", &ok);
	rv->version = str_member(kind, "version", &ok);
	rv->kind = str_member(kind, "kind", &ok);
	rv->op = str_member(req, "operation", &ok);
	rv->ns = str_member(req, "namespace", &ok);
	rv->name = str_member(req, "name", &ok);
	if (!ok || !rv->kind || !rv->version || !rv->op)
		return bad(
			res,
			"request.kind.kind, .version or request.operation is missing or not a string");
	if (!rv->group)
		rv->group = "";
	if (!rv->ns)
		rv->ns = "";
	dry = json_object_get(req, "dryRun");
	if (dry && !json_is_boolean(dry) && !json_is_null(dry))
		return bad(res, "request.dryRun is not a boolean");
	rv->dry_run = json_is_true(dry);
	rv->obj = json_object_get(req, "object");
	if (rv->obj && !json_is_object(rv->obj) && !json_is_null(rv->obj))
		return bad(res, "request.object is not an object");
	if (json_is_null(rv->obj))
		rv->obj = NULL;
	if (!rv->obj && (strcmp(rv->op, "CREATE") == 0 || strcmp(rv->op, "UPDATE") == 0))
		return bad(res, "request.object is missing for a %s", rv->op);
	meta = json_object_get(rv->obj, "metadata");
	if (!rv->name || !rv->name[0]) {
		rv->name = json_string_value(json_object_get(meta, "name"));
		if (!rv->name)
			rv->name = json_string_value(json_object_get(meta, "generateName"));
	}
	if (!rv->name)
		rv->name = "";
	return 0;
}

/* Copies <s> for a log field: at most 100 characters, nothing that could end the field. */
static void log_safe(char *out, size_t len, const char *s)
{
	size_t n = 0;

	for (; s && *s && n + 1 < len && n < 100; s++)
		out[n++] = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
					   (*s >= '0' && *s <= '9') || strchr("._:/-", *s) ?
				   *s :
				   '?';
	out[n] = '\0';
}

static char *base64(const char *in, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out)
		EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in, (int)len);
	return out;
}

/* The controller that owns <obj> (its ownerReference with controller: true), or NULL. */
static const char *controller_kind(json_t *meta)
{
	json_t *refs = json_object_get(meta, "ownerReferences"), *r;
	size_t i;

	json_array_foreach(refs, i, r)
		if (json_is_true(json_object_get(r, "controller")))
			return json_string_value(json_object_get(r, "kind"));
	return NULL;
}

/* Why the object is not one to touch, or NULL when it is. */
static const char *skip_reason(const struct inj_config *cfg, const struct review *rv,
			       const struct kind **kp)
{
	const struct kind *k = NULL;
	json_t *meta, *spec, *pmeta;
	const char *owner;

	if (rv->dry_run)
		return "dry-run";
	if (strcmp(rv->ns, "kube-system") == 0 || strcmp(rv->ns, "kube-node-lease") == 0 ||
	    strcmp(rv->ns, cfg->own_namespace) == 0)
		return "excluded namespace";
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strcmp(rv->group, kinds[i].group) == 0 && strcmp(rv->kind, kinds[i].kind) == 0)
			k = &kinds[i];
	if (!k || strcmp(rv->version, "v1") != 0)
		return "kind not handled";
	if (strcmp(rv->op, "CREATE") != 0 && !(k->update && strcmp(rv->op, "UPDATE") == 0))
		return k->update ? "operation not handled" : "pod spec is immutable after CREATE";
	*kp = k;
	meta = json_object_get(rv->obj, "metadata");
	spec = k->pod ? json_object_get(rv->obj, "spec") :
			json_object_get(
				json_object_get(json_object_get(rv->obj, "spec"), "template"),
				"spec");
	pmeta = k->pod ? meta :
			 json_object_get(
				 json_object_get(json_object_get(rv->obj, "spec"), "template"),
				 "metadata");
	if (!json_is_object(spec) || !json_is_array(json_object_get(spec, "containers")))
		return "no pod spec with containers";
	if ((meta && !json_is_object(meta)) || (pmeta && !json_is_object(pmeta)))
		return "metadata is not an object";
	if (json_is_true(json_object_get(spec, "hostNetwork")))
		return "host network";
	if (k->pod &&
	    json_object_get(json_object_get(meta, "annotations"), "kubernetes.io/config.mirror"))
		return "mirror pod";
	owner = controller_kind(meta);
	if (owner && k->pod &&
	    (strcmp(owner, "ReplicaSet") == 0 || strcmp(owner, "StatefulSet") == 0 ||
	     strcmp(owner, "DaemonSet") == 0 || strcmp(owner, "Job") == 0))
		return "pod of a workload (the workload is patched)";
	if (owner && strcmp(rv->kind, "ReplicaSet") == 0 && strcmp(owner, "Deployment") == 0)
		return "replica set of a deployment (the deployment is patched)";
	return NULL;
}

/* Builds the response; takes <warnings>; <patch> (may be NULL) and <refusal> are borrowed. */
static int respond(struct inj_result *res, const struct review *rv, const char *patch,
		   const char *refusal, json_t *warnings)
{
	json_t *r, *out;
	char *b64 = NULL;

	r = json_pack("{s:s, s:b}", "uid", rv->uid, "allowed", !refusal);
	if (r && patch) {
		b64 = base64(patch, strlen(patch));
		if (!b64 || json_object_set_new(r, "patchType", json_string("JSONPatch")) ||
		    json_object_set_new(r, "patch", json_string(b64)))
			goto err_put_r;
	}
	if (r && refusal &&
	    json_object_set_new(r, "status",
				json_pack("{s:i, s:s, s:s}", "code", 400, "reason", "BadRequest",
					  "message", refusal)))
		goto err_put_r;
	if (r && json_array_size(warnings) && json_object_set(r, "warnings", warnings))
		goto err_put_r;
	out = json_pack("{s:s, s:s, s:o}", "apiVersion", "admission.k8s.io/v1", "kind",
			"AdmissionReview", "response", r);
	free(b64);
	json_decref(warnings);
	if (!out)
		return -ENOMEM;
	res->response = json_dumps(out, JSON_COMPACT);
	json_decref(out);
	if (!res->response)
		return -ENOMEM;
	res->response_len = strlen(res->response);
	return 0;

err_put_r:
	free(b64);
	json_decref(r);
	json_decref(warnings);
	return -ENOMEM;
}

static void log_fields(struct inj_result *res, const struct review *rv, const char *reason,
		       size_t ops)
{
	char uid[128], kind[128], ns[128], name[128], op[32], why[128];

	log_safe(uid, sizeof(uid), rv->uid);
	log_safe(kind, sizeof(kind), rv->kind);
	log_safe(ns, sizeof(ns), rv->ns);
	log_safe(name, sizeof(name), rv->name);
	log_safe(op, sizeof(op), rv->op);
	snprintf(why, sizeof(why), "%s", reason ? reason : "");
	for (char *c = why; *c; c++)
		if (*c == '"' || *c == '\\' || *c < 0x20)
			*c = '\'';
	snprintf(
		res->log, sizeof(res->log),
		"uid=%s kind=%s namespace=%s name=%s operation=%s dry_run=%d result=%s patch_ops=%zu reason=\"%s\"",
		uid, kind, ns, name, op, rv->dry_run, inj_outcome_name(res->outcome), ops, why);
}

int inj_review_handle(const struct inj_config *cfg, const char *body, size_t len,
		      struct inj_result *res)
{
	const struct kind *k = NULL;
	struct inj_settings s;
	struct review rv = { 0 };
	json_t *ops = NULL, *pod_ann, *wl_ann;
	const char *reason;
	char why[512];
	int ret;

	memset(res, 0, sizeof(*res));
	ret = review_decode(&rv, body, len, res);
	if (ret)
		goto out_put_root;
	reason = skip_reason(cfg, &rv, &k);
	if (reason) {
		res->outcome = INJ_SKIPPED;
		ret = respond(res, &rv, NULL, NULL, NULL);
		log_fields(res, &rv, reason, 0);
		goto out_put_root;
	}
	if (k->pod) {
		pod_ann = json_object_get(json_object_get(rv.obj, "metadata"), "annotations");
		wl_ann = NULL;
	} else {
		json_t *tpl = json_object_get(json_object_get(rv.obj, "spec"), "template");

		pod_ann = json_object_get(json_object_get(tpl, "metadata"), "annotations");
		wl_ann = json_object_get(json_object_get(rv.obj, "metadata"), "annotations");
	}
	ret = inj__settings_parse(cfg, pod_ann, wl_ann, &s, why, sizeof(why));
	if (ret == -EINVAL) {
		res->outcome = INJ_REFUSED;
		ret = respond(res, &rv, NULL, why, json_incref(s.warnings));
		log_fields(res, &rv, why, 0);
		goto out_fini_settings;
	}
	if (ret)
		goto out_fini_settings;
	ops = inj__patch_build(cfg, &s, rv.obj, k->pod ? "/metadata" : "/spec/template/metadata",
			       k->pod ? "/spec" : "/spec/template/spec", &res->outcome);
	if (!ops) {
		ret = -ENOMEM;
		goto out_fini_settings;
	}
	if (json_array_size(ops)) {
		res->patch = json_dumps(ops, JSON_COMPACT);
		if (!res->patch) {
			ret = -ENOMEM;
			goto out_put_ops;
		}
	}
	if (strcmp(rv.kind, "Job") == 0 && s.inject && !s.native &&
	    (res->outcome == INJ_INJECTED || res->outcome == INJ_UPDATED))
		json_array_append_new(s.warnings,
				      json_string("the sidecar keeps a Job's pods running: use "
						  "native-sidecar \"true\" or have the job POST "
						  "/shutdown to sidetap's admin port"));
	ret = respond(res, &rv, res->patch, NULL, json_incref(s.warnings));
	log_fields(res, &rv,
		   res->outcome == INJ_UNCHANGED ?
			   (s.inject ? "already injected as asked" : "not asked for") :
			   NULL,
		   json_array_size(ops));
out_put_ops:
	json_decref(ops);
out_fini_settings:
	inj__settings_fini(&s);
out_put_root:
	json_decref(rv.root);
	if (ret)
		inj_result_fini(res);
	return ret;
}

void inj_result_fini(struct inj_result *res)
{
	free(res->response);
	free(res->patch);
	res->response = NULL;
	res->patch = NULL;
	res->response_len = 0;
}
