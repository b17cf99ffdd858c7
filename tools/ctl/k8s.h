/* SPDX-License-Identifier: Apache-2.0 */
/* sidetapctl's Kubernetes commands: install, uninstall, inject, wait-ready. */
#ifndef SIDETAPCTL_K8S_H
#define SIDETAPCTL_K8S_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "tap/args.h"

/* The lines sidetapctl's usage shows for these commands. */
#define CTL_K8S_USAGE                                                                              \
	"  install         print or apply what Kubernetes needs for the sidecar injector\n"        \
	"  uninstall       take sidetap out of every annotated workload, then remove it\n"         \
	"  inject          annotate the workloads of a manifest for injection (stdin to stdout)\n" \
	"  wait-ready      wait until a sidetap's admin endpoint answers /readyz\n"

/* True when <cmd> is one of these commands. */
bool ctl_k8s_is_command(const char *cmd);

/*
 * Runs the command argv[0] with its arguments. Returns the process's exit
 * status: 0, 1 for a runtime failure, 2 for a usage error.
 */
int ctl_k8s_main(int argc, char **argv);

/* internal to the k8s files */

/*
 * The commands, argv[0] their name. Each returns the exit status: 0, 1 for a
 * runtime failure (kubectl failed, bad input), 2 for a usage error.
 */
int ctl_install(int argc, char **argv);
int ctl_uninstall(int argc, char **argv);
int ctl_inject(int argc, char **argv);

/* The kubectl to run: $KUBECTL, else "kubectl" on PATH. */
const char *ctl_kubectl(void);

/*
 * Runs <argv> (argv[0] looked up on PATH) with <in> (may be NULL) on its
 * stdin; its stdout goes to *<out> (malloc'd, NUL-terminated; may be NULL to
 * let it through), its stderr through. Returns its exit status, 127 when it
 * could not run, or -1.
 */
int ctl_run(char *const argv[], const char *in, size_t in_len, char **out);

/* Writes <s> as a double-quoted YAML (and JSON) string. */
void ctl_yaml_quote(FILE *f, const char *s);

/* True for a DNS-1123 label (namespaces) or, with <dots>, subdomain (annotation prefixes). */
bool ctl_is_dns(const char *v, size_t max, bool dots);

#endif
