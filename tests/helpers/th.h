/* SPDX-License-Identifier: Apache-2.0 */
/* Test helpers: loopback sockets, child processes, and sidetap started as a process or in-process. */
#ifndef TH_H
#define TH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Opens a loopback TCP listener on an ephemeral port; *<port> receives it. Returns the fd. */
int th_listen(uint16_t *port, int backlog);

/* Blocking connect to 127.0.0.1:<port>. Returns the fd or a negative errno. */
int th_connect(uint16_t port);

/* Accepts one connection within <timeout_ms>. Returns the fd or a negative errno. */
int th_accept(int lfd, int timeout_ms);

/* Writes all of <buf>. Returns 0 or a negative errno. */
int th_write_all(int fd, const void *buf, size_t len);

/*
 * Reads until <len> bytes, EOF, an error or <timeout_ms> (all of it, not per
 * read). Returns the bytes read (short on EOF) or a negative errno
 * (-ETIMEDOUT when the time ran out with nothing read).
 */
ssize_t th_read_full(int fd, void *buf, size_t len, int timeout_ms);

/*
 * Waits for the peer to end the connection. Returns 0 on EOF, -ECONNRESET on
 * reset, -ETIMEDOUT after <timeout_ms>; data read meanwhile is discarded and
 * counted into *<discarded> when not NULL.
 */
int th_wait_close(int fd, int timeout_ms, size_t *discarded);

/* Sets SO_LINGER 0 and closes: the peer sees RST. */
void th_close_reset(int fd);

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t th_now_ms(void);

/*
 * Sends "<method> <path> HTTP/1.0" to 127.0.0.1:<port> and reads the whole
 * response. Returns the status (or a negative errno); the body, NUL-terminated,
 * goes to *<body> (malloc'd; caller frees) when <body> is not NULL.
 */
int th_http(uint16_t port, const char *method, const char *path, char **body, size_t *body_len);

/*
 * Returns the value of the Prometheus sample <series> (name with its labels,
 * exactly as exposed) from the admin endpoint on <admin_port>, or -1.
 */
long long th_metric(uint16_t admin_port, const char *series);

/* A child process with its stderr (and stdout) in a log file. */
struct th_proc {
	pid_t pid;
	char log[256];
};

/*
 * Starts <argv> (argv[0] a path) with <envp> (NULL: inherit), output to a new
 * log file. Returns 0 or a negative errno.
 */
int th_spawn(struct th_proc *p, char *const argv[], char *const envp[]);

/*
 * Waits up to <timeout_ms> for the process to exit. Returns its exit status
 * (128+signal when killed), or -ETIMEDOUT.
 */
int th_proc_wait(struct th_proc *p, int timeout_ms);

/* Sends <sig>; then, if it has not exited in <timeout_ms>, SIGKILL. Returns th_proc_wait's value. */
int th_proc_stop(struct th_proc *p, int sig, int timeout_ms);

/* Returns the whole log of <p> as a malloc'd string (caller frees). */
char *th_proc_log(const struct th_proc *p);

/* Waits until the log of <p> contains <needle>. Returns true when it did in time. */
bool th_proc_log_wait(const struct th_proc *p, const char *needle, int timeout_ms);

/* sidetap, started as a process on loopback ephemeral ports. */
struct th_sidetap {
	struct th_proc proc;
	uint16_t inbound_port;
	uint16_t outbound_port;
	uint16_t admin_port;
};

/*
 * Starts the sidetap binary with listeners and admin on 127.0.0.1 ephemeral
 * ports, two workers and capture off, then <args> (NULL-terminated; later
 * flags win, so they may override those), and waits until
 * it logs "started" (the ports are read from its log). <wrapper> (may be NULL)
 * is a NULL-terminated command put in front, such as prlimit. Returns 0 or a
 * negative errno; on failure the log is printed.
 */
int th_sidetap_start(struct th_sidetap *st, const char *const wrapper[], const char *const args[]);

/* Path of the sidetap binary under test. */
const char *th_sidetap_bin(void);

/* Directory for a test's scratch files (created once per process). */
const char *th_tmpdir(void);

/* True when a program is on PATH (or an absolute path exists). */
bool th_have(const char *prog);

/* Runs a shell command line; returns its exit status (or -1). */
int th_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* True when this process may make network namespaces (root with CAP_SYS_ADMIN). */
bool th_netns_works(void);

struct th_proc;

/* Runs <cmd> with sh in network namespace <ns> as a background process. Returns th_spawn's. */
int th_ns_spawn(struct th_proc *p, const char *ns, const char *cmd);

/*
 * Starts Python's http.server in namespace <ns> on <ip>:<port>, answering every
 * path with <text> and a newline; it logs "Serving HTTP" once up. Returns th_spawn's.
 */
int th_ns_web(struct th_proc *p, const char *ns, const char *ip, unsigned port, const char *text);

/* Fills <buf> with the deterministic stream of <seed> starting at byte <off> (8-aligned). */
void th_pattern(uint64_t seed, uint64_t off, void *buf, size_t len);

/* FNV-1a-style 64-bit running checksum over 8-byte words (len a multiple of 8). */
uint64_t th_sum(uint64_t sum, const void *buf, size_t len);

struct tap_ring;

/*
 * Writes a tcp frame into ring <idx> of <r> as that worker's producer would:
 * seq <seq>, timestamp <ts_ns>, client to server, <len> bytes of <data>.
 * Returns 0, -ENOBUFS when the ring is full, or -EINVAL when it does not encode.
 */
int th_ring_put_tcp(struct tap_ring *r, unsigned idx, uint64_t seq, uint64_t ts_ns,
		    const void *data, size_t len);

#endif
