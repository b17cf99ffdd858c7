/* SPDX-License-Identifier: Apache-2.0 */
/* sidetap-uploader's internals: options, shared state, sinks, the spool and the admin endpoint. */
#ifndef UPL_H
#define UPL_H

#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tap/sink.h"

struct tap_ring;
struct tap_decoder;
struct upl;

#define UPL_LOG_ERR 0
#define UPL_LOG_WARN 1
#define UPL_LOG_INFO 2
#define UPL_LOG_DEBUG 3

/* How many --kafka-prop flags are kept. */
#define UPL_KAFKA_PROPS_MAX 32

enum upl_compression {
	UPL_COMP_NONE = 0,
	UPL_COMP_GZIP,
	UPL_COMP_ZSTD,
	UPL_COMP_LZ4, /* kafka only */
	UPL_COMP_SNAPPY, /* kafka only */
};

/* What a remote sink's uploader does when a batch finds the spool full. */
enum upl_spool_full {
	UPL_SPOOL_FULL_STOP = 0, /* stop draining: the ring fills and drops the newest frames */
	UPL_SPOOL_FULL_DROP_OLDEST, /* delete the oldest waiting batches to make room */
};

struct upl_opts {
	const char *ring;
	const char *sink; /* the URL as given */
	struct tap_sink dest; /* the sink URL, parsed */
	uint64_t segment_bytes; /* file: */
	unsigned segment_ms;
	const char *spool_dir; /* remote sinks */
	uint64_t spool_limit; /* bytes; 0: no spool */
	enum upl_spool_full spool_full;
	unsigned batch_frames;
	uint64_t batch_bytes;
	unsigned batch_ms;
	const char *token_file; /* http(s): bearer token */
	const char *sink_ca; /* https: CA bundle instead of the system store */
	const char *kafka_props[UPL_KAFKA_PROPS_MAX];
	unsigned nkafka_props;
	enum upl_compression compression;
	unsigned sink_timeout_ms;
	const char *admin_addr; /* NULL: no admin endpoint */
	int verbose; /* UPL_LOG_* */
	bool once; /* drain what is there, then exit */
};

/* Counters and gauges the admin endpoint exposes (one thread: the uploader's loop). */
struct upl_metrics {
	uint64_t frames_shipped; /* acknowledged by the sink (file: durable in a segment) */
	uint64_t bytes_shipped;
	uint64_t batches_shipped;
	uint64_t batches_retried; /* attempts that failed and will be made again */
	uint64_t batches_rejected; /* set aside: the sink refused them for good */
	uint64_t frames_rejected;
	uint64_t frames_spooled; /* written to the spool (then released from the ring) */
	uint64_t spool_full_total; /* times the spool could not take a batch */
	uint64_t spool_dropped_frames; /* deleted from a full spool (drop-oldest), never shipped */
	uint64_t spool_dropped_batches;
	uint64_t corrupt; /* ring records that were not records: skipped to the head */
	uint64_t invalid; /* records that were not valid frames: not shipped */
	char last_error[256];
	uint64_t last_error_unix_ms;
};

struct upl_admin;
struct upl_spool;
struct upl_sink;
struct upl_batch;

/* What a sink says about a batch it was given. */
enum upl_result {
	UPL_ACK = 0, /* the sink has it: durable there */
	UPL_RETRY, /* failed for now (down, overloaded, timed out): try again after a back-off */
	UPL_REJECT, /* refused for good: set aside, never retried */
};

/*
 * A remote sink. send() starts shipping <b> and returns; the sink reports
 * the outcome later from process() through upl_batch_done(), exactly once
 * per batch sent. The batch stays valid until then.
 */
struct upl_sink_ops {
	const char *name;
	/* Sets up the sink from u->o; returns 0 or a negative errno (logged). */
	int (*open)(struct upl *u, struct upl_sink **out);
	/* Batches it may have in flight at once. */
	unsigned (*capacity)(struct upl_sink *s);
	/*
	 * Returns 0, -EBADMSG when <b> is not a capture file (set aside), or
	 * another negative errno when it could not be started (a retry).
	 */
	int (*send)(struct upl_sink *s, struct upl_batch *b);
	/*
	 * Waits up to <timeout_ms> for the sink's own descriptors or <fds>
	 * (whose revents it fills). Returns 0 or a negative errno.
	 */
	int (*wait)(struct upl_sink *s, struct pollfd *fds, unsigned nfds, int timeout_ms);
	/* Moves transfers on and reports finished batches. */
	void (*process)(struct upl_sink *s);
	/* Abandons the batches in flight (upl_batch_abandon) and frees the sink. */
	void (*close)(struct upl_sink *s);
};

extern const struct upl_sink_ops upl_sink_http;
extern const struct upl_sink_ops upl_sink_kafka;

/* The --sink-compression name of <c>. */
const char *upl_compression_name(enum upl_compression c);

/* Checks every --kafka-prop against librdkafka; says what is wrong on stderr. Returns 0 or -EINVAL. */
int upl_kafka_check_props(const struct upl_opts *o);

/* A batch of frames: the bytes of a capture file, concatenated frames. */
struct upl_batch {
	struct upl_batch *next; /* in the ring queue */
	char *buf;
	size_t len, cap;
	uint32_t nframes;
	uint64_t first_ts_ns; /* the first frame's ts, for the age gauge (0: unknown) */
	uint64_t opened_ms; /* when its first record was read */
	/* Ring batches: per ring, the read position after the batch and records it took. */
	uint64_t *end, *records;
	bool in_ring_queue; /* its ring positions are not released yet */
	bool sealed; /* no more frames go in */
	bool inflight; /* a sink has it */
	bool acked; /* the sink acknowledged it, or it was set aside */
	bool spooled; /* a copy of it is durable in the spool */
	struct upl_spool_file *sf; /* while in flight or loaded: its spool file (busy), or NULL */
	bool from_spool; /* loaded from <sf> to be shipped; never in the ring queue */
	void *sink_priv; /* the sink's, while in flight */
	uint64_t sent_ms; /* when the sink was given it */
};

/* The uploader: one process, one thread. */
struct upl {
	struct upl_opts o;
	struct tap_ring *ring;
	ino_t ino;
	uint64_t *pos; /* per ring: how far we have read */
	uint64_t *unacked; /* file sink: per ring, records read since the last release */
	struct upl_metrics m;
	struct upl_admin *admin;
	struct tap_decoder *dec;
	/* Remote sinks */
	const struct upl_sink_ops *ops;
	struct upl_sink *sink;
	struct upl_spool *spool;
	struct upl_batch *rq_head, *rq_tail; /* batches read from the ring, in order */
	struct upl_batch *filling; /* the ring queue's last batch while it takes frames */
	unsigned inflight;
	unsigned failures; /* consecutive failed attempts: the back-off's exponent */
	uint64_t retry_at_ms; /* no new attempt before this */
	uint64_t backoff_set_ms; /* when the back-off was last lengthened */
	bool failed_while_stopping;
	uint64_t retry_hint_ms; /* the sink's wish for the next back-off (Retry-After), once */
	uint64_t drop_logged_ms; /* when dropping from a full spool was last logged */
};

extern volatile sig_atomic_t upl_stop_requested;

/* Writes one key=value log line on stderr at <level> (UPL_LOG_*), in sidetap's format. */
void upl_log(int level, const char *msg, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Records <fmt> as the last error the metrics show. */
void upl_set_error(struct upl *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Milliseconds of CLOCK_MONOTONIC, and of the real-time clock. */
uint64_t upl_now_ms(void);
uint64_t upl_unix_ms(void);

/* Writes all of <buf> to <fd>. Returns 0 or a negative errno. */
int upl_write_all(int fd, const void *buf, size_t len);

/*
 * Maps the ring file (u->o.ring) and sets the read positions to its tails.
 * Returns 0, -ENOENT while it does not exist, or another negative errno (logged).
 */
int upl_ring_attach(struct upl *u);

/* Unmaps the ring; NULL ring is a no-op. */
void upl_ring_detach(struct upl *u);

/* True when the file at the ring's path is no longer the one mapped (sidetap restarted). */
bool upl_ring_replaced(struct upl *u);

/* True when the ring <idx> holds more than half its size unreleased. */
bool upl_ring_pressed(struct upl *u);

/* True when every ring was read up to its producer's head. */
bool upl_ring_drained(struct upl *u);

/*
 * Ring <idx> holds at <at> something that is not a record: counts it (here
 * and in the ring's rejected count), logs it, and moves the read position to
 * the producer's head.
 */
void upl_ring_skip_corrupt(struct upl *u, unsigned idx, uint64_t at);

/*
 * True when the record <p> (<len> bytes, at <at> in ring <idx>) is a valid
 * frame; otherwise it is counted and logged, and is not to be shipped.
 */
bool upl_record_is_frame(struct upl *u, unsigned idx, uint64_t at, const void *p, uint32_t len);

/*
 * Waits up to <timeout_ms> for the sink (when it has descriptors) or an
 * admin client, and answers admin requests. Returns when something happened
 * or the time is up.
 */
void upl_wait(struct upl *u, int timeout_ms);

/* Runs the file: sink until stopped. Returns the exit status. */
int upl_file_run(struct upl *u);

/* Runs a remote sink (u->ops) with the spool until stopped. Returns the exit status. */
int upl_remote_run(struct upl *u);

/*
 * Reports the outcome of a batch a sink was given: <err> says why for a
 * retry or a rejection (logged, and shown as the last error), <detail>
 * (may be NULL) is what the sink answered. Called from the sink's process().
 */
void upl_batch_done(struct upl *u, struct upl_batch *b, enum upl_result r, const char *err,
		    const char *detail);

/* A sink that closes gives up batch <b> without an outcome: it is freed unless the ring queue has it. */
void upl_batch_abandon(struct upl *u, struct upl_batch *b);

/* Appends <len> bytes to <b>'s buffer. Returns 0 or -ENOMEM. */
int upl_batch_append(struct upl_batch *b, const void *p, size_t len);

/* Admin endpoint (admin.c) */

/*
 * Opens the admin endpoint on <addr> (IP:PORT, [IPv6]:PORT; port 0 picks
 * one) and logs where it listens. Returns 0 or a negative errno (logged).
 */
int upl_admin_open(struct upl *u, const char *addr);

/* True when <addr> is an address upl_admin_open() takes. */
bool upl_admin_addr_ok(const char *addr);

/* Closes the endpoint and its clients; no endpoint is a no-op. */
void upl_admin_close(struct upl *u);

/* Fills <fds> (room for <max>) with what the endpoint waits on. Returns how many. */
unsigned upl_admin_fds(struct upl *u, struct pollfd *fds, unsigned max);

/* Serves what <fds> (as upl_admin_fds filled them, revents set) says is ready. */
void upl_admin_serve(struct upl *u, const struct pollfd *fds, unsigned n);

/* Spool (spool.c): a directory of batch files, first in first out. */

struct upl_spool_file {
	struct upl_spool_file *next;
	uint64_t seq;
	uint64_t bytes;
	uint32_t frames;
	uint64_t first_ts_ms; /* its first frame's ts */
	bool busy; /* being shipped */
};

/*
 * Opens (creating it) the spool directory <dir> with room for <limit>
 * bytes: takes its lock (one uploader per spool), removes unfinished files
 * and lists the batches that wait there. Returns 0 and *<out>, or a
 * negative errno (logged; -EBUSY when another uploader holds it).
 */
int upl_spool_open(const char *dir, uint64_t limit, struct upl_spool **out);

/* Closes the spool (files stay); NULL is a no-op. */
void upl_spool_close(struct upl_spool *s);

/*
 * Writes <b> as a spool file: written, fdatasync'd, renamed, the directory
 * fsync'd. Returns 0 with b->sf set, -ENOSPC when the spool is full (its
 * limit, or the file system's), or another negative errno (logged).
 */
int upl_spool_put(struct upl_spool *s, struct upl_batch *b);

/* The oldest file not being shipped, or NULL. */
struct upl_spool_file *upl_spool_next(struct upl_spool *s);

/* Reads <f> into <b> (b->sf = <f>). Returns 0 or a negative errno (logged). */
int upl_spool_load(struct upl_spool *s, struct upl_spool_file *f, struct upl_batch *b);

/* Deletes <f> (acknowledged, or dropped from a full spool) and frees it. */
void upl_spool_remove(struct upl_spool *s, struct upl_spool_file *f);

/*
 * Sets <b> aside in the spool's rejected/ directory (moving its spool file
 * there when it has one; b->sf is then freed and NULL). Older rejected
 * files go when they pass the spool's limit. Returns 0 or a negative errno.
 */
int upl_spool_reject(struct upl_spool *s, struct upl_batch *b);

/* Files and bytes waiting, the oldest file's first frame time, whether it is full. */
unsigned upl_spool_files(const struct upl_spool *s);
uint64_t upl_spool_bytes(const struct upl_spool *s);
uint64_t upl_spool_oldest_ms(const struct upl_spool *s);
bool upl_spool_is_full(const struct upl_spool *s);
uint64_t upl_spool_limit(const struct upl_spool *s);

/*
 * The sink took a batch straight from the ring: an empty spool that was
 * full (its file system full of other things) holds nobody up any more.
 */
void upl_spool_forget_full(struct upl_spool *s);

#endif
