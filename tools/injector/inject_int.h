/* SPDX-License-Identifier: Apache-2.0 */
/* Internal interfaces of the injector: annotation settings and the patch builder. */
#ifndef SIDETAP_INJECT_INT_H
#define SIDETAP_INJECT_INT_H

#include <jansson.h>
#include <stdbool.h>

#include "inject.h"

/* The sidecar's requests when no annotation says otherwise; no limits by default. */
#define INJ_DEFAULT_CPU_REQUEST "50m"
#define INJ_DEFAULT_MEMORY_REQUEST "64Mi"

enum inj_proxy_type {
	INJ_PROXY_TRANSPARENT,
	INJ_PROXY_REVERSE,
};

/*
 * What the annotations of one workload ask for. Strings are borrowed from the
 * review's JSON (or are literals); json_t members are owned.
 */
struct inj_settings {
	bool inject;
	bool insert_init_first;
	bool native;
	enum inj_proxy_type type;
	const char *proxy_host;
	unsigned proxy_port;
	unsigned in_port, out_port;
	bool tls_out;
	bool java_tool_options;
	const char *tls_in_secret, *tls_in_private, *tls_in_public;
	json_t *skip_in_ports; /* strings, normalised */
	json_t *skip_in_cidrs; /* inbound sources */
	json_t *skip_out_ports;
	json_t *skip_out_cidrs;
	const char *cpu_request, *cpu_limit, *memory_request, *memory_limit;
	unsigned workers; /* from cpu-limit; 0: sidetap's default */
	json_t *extra_env; /* [{name, value}] */
	const char *sink, *body_limit, *log_level;
	json_t *warnings; /* strings for the AdmissionReview response */
};

/*
 * Reads the settings from the pod's annotations <pod_ann> and then the
 * workload's <wl_ann> (either may be NULL; the pod's win, key by key).
 * Returns 0, or -EINVAL with a message for the user in <why> (an annotation's
 * value is not accepted), or -ENOMEM. On success the caller calls
 * inj__settings_fini().
 */
int inj__settings_parse(const struct inj_config *cfg, json_t *pod_ann, json_t *wl_ann,
			struct inj_settings *s, char *why, size_t why_len);

/* Frees what inj__settings_parse() allocated. */
void inj__settings_fini(struct inj_settings *s);

/*
 * Builds the JSON Patch that takes the pod template (or pod) of <obj> from
 * what it is to what <s> asks for. <meta_path> and <spec_path> are the JSON
 * pointers of its metadata and spec inside <obj>; <meta> and <spec> those
 * objects (meta may be NULL). Returns a new array of operations (empty when
 * nothing is to be done) and sets *<outcome>, or NULL on allocation failure.
 * Warnings for the user are appended to s->warnings. Borrows everything.
 */
json_t *inj__patch_build(const struct inj_config *cfg, struct inj_settings *s, json_t *obj,
			 const char *meta_path, const char *spec_path, enum inj_outcome *outcome);

#endif
