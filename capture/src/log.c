/* SPDX-License-Identifier: Apache-2.0 */
/* The key=value log line of every sidetap program (tap/log.h). */
#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "tap/log.h"

void tap_log_vwrite(const char *level, const char *msg, const char *component, const char *fields,
		    va_list ap)
{
	char line[4096];
	struct timespec ts;
	struct tm tm;
	size_t n;
	int ret;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof(line), "ts=%Y-%m-%dT%H:%M:%S", &tm);
	ret = snprintf(line + n, sizeof(line) - n, ".%03ldZ level=%s msg=\"%s\"%s%s",
		       ts.tv_nsec / 1000000, level, msg, component ? " component=" : "",
		       component ? component : "");
	n += ret > 0 ? (size_t)ret : 0;
	if (fields[0] != '\0' && n < sizeof(line) - 2) {
		line[n++] = ' ';
		ret = vsnprintf(line + n, sizeof(line) - n, fields, ap);
		n += ret > 0 ? (size_t)ret : 0;
	}
	/* Truncated lines still end in a newline. */
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	while (write(STDERR_FILENO, line, n) == -1 && errno == EINTR)
		;
}
