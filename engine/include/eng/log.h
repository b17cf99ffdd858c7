/* SPDX-License-Identifier: Apache-2.0 */
/* Logging: one key=value line per event on stderr, with per-call-site rate limits. */
#ifndef ENG_LOG_H
#define ENG_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum eng_log_level {
	ENG_LOG_ERROR = 0,
	ENG_LOG_WARN,
	ENG_LOG_INFO,
	ENG_LOG_DEBUG,
};

/* The current threshold; set once at start-up, before any thread starts. */
extern enum eng_log_level eng_log_threshold;

/*
 * Writes one line "ts=... level=... msg="<msg>" <fields>" to stderr with a
 * single write(2), so lines from several threads never interleave. <fields>
 * is a printf format for further key=value pairs (may be ""). Thread-safe.
 */
void eng_log(enum eng_log_level level, const char *msg, const char *fields, ...)
	__attribute__((format(printf, 3, 4)));

#define ENG_LOG(level, msg, ...)                              \
	do {                                                  \
		if ((level) <= eng_log_threshold)             \
			eng_log((level), (msg), __VA_ARGS__); \
	} while (0)

/* A rate limit for one call site, owned by one thread. Zero-initialise. */
struct eng_ratelimit {
	uint64_t last_ms;
	uint32_t suppressed;
};

/*
 * Returns true when a line may be logged now (at most one per <interval_ms>);
 * then *<suppressed> receives how many calls were refused since the last line.
 */
bool eng_ratelimit_ok(struct eng_ratelimit *rl, uint64_t now_ms, uint64_t interval_ms,
		      uint32_t *suppressed);

/* Parses "error", "warn", "info" or "debug". Returns 0 or -EINVAL. */
int eng_log_level_parse(const char *s, enum eng_log_level *out);

/* Returns the name of <level>. */
const char *eng_log_level_name(enum eng_log_level level);

/* Milliseconds of CLOCK_MONOTONIC (coarse: a few ms resolution, no syscall). */
uint64_t eng_now_ms(void);

#endif
