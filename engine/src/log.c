/* SPDX-License-Identifier: Apache-2.0 */
/* key=value log lines on stderr, one write(2) each, and per-call-site rate limits. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "eng/log.h"
#include "tap/log.h"

enum eng_log_level eng_log_threshold = ENG_LOG_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void eng_log(enum eng_log_level level, const char *msg, const char *fields, ...)
{
	va_list ap;

	if (level > eng_log_threshold)
		return;
	va_start(ap, fields);
	tap_log_vwrite(eng_log_level_name(level), msg, NULL, fields, ap);
	va_end(ap);
}

bool eng_ratelimit_ok(struct eng_ratelimit *rl, uint64_t now_ms, uint64_t interval_ms,
		      uint32_t *suppressed)
{
	if (rl->last_ms != 0 && now_ms - rl->last_ms < interval_ms) {
		rl->suppressed++;
		return false;
	}
	*suppressed = rl->suppressed;
	rl->suppressed = 0;
	/* 0 means "never logged": keep a real timestamp non-zero. */
	rl->last_ms = now_ms ? now_ms : 1;
	return true;
}

int eng_log_level_parse(const char *s, enum eng_log_level *out)
{
	for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum eng_log_level)i;
			return 0;
		}
	}
	/* goproxy's manifests also say "warning". */
	if (strcasecmp(s, "warning") == 0) {
		*out = ENG_LOG_WARN;
		return 0;
	}
	return -EINVAL;
}

const char *eng_log_level_name(enum eng_log_level level)
{
	if ((unsigned)level >= sizeof(level_names) / sizeof(level_names[0]))
		return "unknown";
	return level_names[level];
}

uint64_t eng_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
