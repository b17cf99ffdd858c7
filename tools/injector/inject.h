/* SPDX-License-Identifier: Apache-2.0 */
/* The injector's decisions: AdmissionReview in, AdmissionReview with a JSON Patch out (no I/O). */
#ifndef SIDETAP_INJECT_H
#define SIDETAP_INJECT_H

#include <stdbool.h>
#include <stddef.h>

/* Names of what the injector adds; fixed, so that removal finds exactly these. */
#define INJ_SIDECAR_NAME "sidetap"
#define INJ_INIT_NAME "sidetap-init"
#define INJ_VOL_DATA "sidetap-data"
#define INJ_VOL_CA "sidetap-ca"
#define INJ_VOL_TRUST "sidetap-ca-trust"
#define INJ_VOL_TLS_IN "sidetap-tls-in"
/* Where the app containers find the CA they are told to trust; also marks our env vars. */
#define INJ_TRUST_DIR "/etc/sidetap/trust"

/* How the injector is set up: flags of sidetap-injector, the same for every review. */
struct inj_config {
	const char *prefix; /* annotation prefix, e.g. "sidecar.speedscale.com" */
	const char *image; /* the sidecar's image */
	const char *init_image; /* sidetap-init's image */
	const char *own_namespace; /* never patched, like kube-system */
	const char *ca_secret; /* Secret with the CA that tls-out unwrapping signs with */
	unsigned proxy_uid, proxy_gid; /* the sidecar runs as these; the init rules exclude them */
	unsigned admin_port; /* sidetap's admin endpoint (readiness, POST /shutdown) */
	bool native_sidecar; /* default of the native-sidecar annotation */
};

/* Sets <cfg> to the defaults that sidetap-injector's flags override. */
void inj_config_defaults(struct inj_config *cfg);

enum inj_outcome {
	INJ_SKIPPED, /* not ours to touch: dry-run, excluded namespace, host network, kind... */
	INJ_UNCHANGED, /* nothing to do: not asked for, or already injected as asked */
	INJ_INJECTED, /* containers added */
	INJ_UPDATED, /* injected with other settings: removed and added again */
	INJ_REMOVED, /* what was injected is removed */
	INJ_REFUSED, /* an annotation has a value the injector does not accept */
};

/* Returns the outcome's name as logged and counted ("injected", ...). */
const char *inj_outcome_name(enum inj_outcome o);

struct inj_result {
	char *response; /* the AdmissionReview response, JSON (malloc'd) */
	size_t response_len;
	char *patch; /* the JSON Patch, JSON text, or NULL when there is none (malloc'd) */
	enum inj_outcome outcome;
	char log[1024]; /* key=value fields describing the review, for the log line */
	char error[256]; /* why the review was unusable (when -EBADMSG) */
};

/*
 * Decides on the AdmissionReview (admission.k8s.io/v1) of <len> bytes at
 * <body>, which is never trusted. Returns 0 with <res> filled (the caller
 * calls inj_result_fini()), -EBADMSG when <body> is not a usable
 * AdmissionReview (res->error says why; answer 400), or -ENOMEM.
 * Thread-safe: <cfg> is only read.
 */
int inj_review_handle(const struct inj_config *cfg, const char *body, size_t len,
		      struct inj_result *res);

/* Frees what inj_review_handle() allocated in <res>. */
void inj_result_fini(struct inj_result *res);

#endif
