/* SPDX-License-Identifier: Apache-2.0 */
/* The entry point every fuzz target defines: libFuzzer calls it, and so does replay.c. */
#ifndef SIDETAP_FUZZ_H
#define SIDETAP_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/*
 * Runs one input of <size> bytes at <data> through the code under test. Returns
 * 0; a failed property aborts (libFuzzer and replay both report the input).
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
