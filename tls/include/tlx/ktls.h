/* SPDX-License-Identifier: Apache-2.0 */
/* Kernel TLS (kTLS) support detection. */
#ifndef TLX_KTLS_H
#define TLX_KTLS_H

#include <stdbool.h>

/*
 * Probes whether this kernel accepts the "tls" TCP upper-layer protocol, the
 * precondition for kTLS. Opens a loopback TCP connection for the probe (the
 * kernel only attaches a ULP to an established socket). Returns 1 when
 * supported, 0 when not, a negative errno when the probe itself failed; on
 * 0 or error, <why> (if not NULL) receives a short reason string.
 */
int tlx_ktls_probe(const char **why);

#endif
