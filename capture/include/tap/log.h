/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The log line every sidetap program writes: key=value on stderr,
 *   ts=2026-01-02T03:04:05.678Z level=info msg="..." [component=NAME] [FIELDS]
 * so that sidetap, its uploader, sidetap-init and the injector read alike.
 */
#ifndef TAP_LOG_H
#define TAP_LOG_H

#include <stdarg.h>

/*
 * Writes one line: <level> ("error", "warn", ...), <msg>, <component> (NULL:
 * none), then <fields> formatted with <ap> (may be ""). One write(2), cut at
 * 4 KiB, always ending in a newline.
 */
void tap_log_vwrite(const char *level, const char *msg, const char *component, const char *fields,
		    va_list ap) __attribute__((format(printf, 4, 0)));

#endif
