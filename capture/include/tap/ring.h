/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The shared-memory ring file between sidetap (producer) and sidetap-uploader
 * (consumer): one single-producer/single-consumer ring per worker. The layout
 * is in capture/FORMAT.md.
 */
#ifndef TAP_RING_H
#define TAP_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TAP_RING_MAGIC "SDTPRNG1"
#define TAP_RING_VERSION 1
#define TAP_RING_MAX 256
/* Smallest and largest data area of one ring. */
#define TAP_RING_SIZE_MIN (64u * 1024)
#define TAP_RING_SIZE_MAX (1ull << 34)

enum tap_ring_state {
	TAP_RING_RUNNING = 1,
	TAP_RING_STOPPED = 2, /* the producer closed it cleanly */
};

struct tap_ring;

/* Counters of one ring, as read from the file. */
struct tap_ring_stats {
	uint64_t head, tail; /* positions: bytes ever written / consumed */
	uint64_t frames, bytes; /* written */
	uint64_t dropped_frames, dropped_bytes;
	uint64_t consumed_frames;
	uint64_t rejected; /* records the consumer found corrupt or invalid (not shipped) */
};

/*
 * Producer: creates the ring file at <path> for <nrings> rings of
 * <ring_size> bytes (a power of two, TAP_RING_SIZE_MIN..MAX) with
 * <generation>, and maps it. The file is built under a temporary name and
 * renamed over <path>, so a consumer never sees a half-made header and one
 * still mapping an old file keeps it. Returns 0 and *<out>, or a negative
 * errno.
 */
int tap_ring_create(const char *path, unsigned nrings, uint64_t ring_size, uint64_t generation,
		    struct tap_ring **out);

/*
 * Consumer: maps the ring file at <path> and validates its header and
 * geometry against the file's size. Returns 0 and *<out>, or a negative errno
 * with a message naming the problem in <err> (<errlen> bytes): -EINVAL when
 * the file is not a valid ring, else open(2)'s or mmap(2)'s error.
 */
int tap_ring_open(const char *path, struct tap_ring **out, char *err, size_t errlen);

/* Unmaps <r>; with <stopped> (producer side), marks the ring TAP_RING_STOPPED first. */
void tap_ring_close(struct tap_ring *r, bool stopped);

/* Producer: marks the ring TAP_RING_STOPPED (no frame follows), keeping it mapped. */
void tap_ring_stop(struct tap_ring *r);

unsigned tap_ring_count(const struct tap_ring *r);
uint64_t tap_ring_size(const struct tap_ring *r);
uint64_t tap_ring_generation(const struct tap_ring *r);
uint32_t tap_ring_producer_pid(const struct tap_ring *r);
enum tap_ring_state tap_ring_state(const struct tap_ring *r);

/* Reads the counters of ring <idx>. Any thread or process. */
void tap_ring_stats(const struct tap_ring *r, unsigned idx, struct tap_ring_stats *out);

/*
 * Producer of ring <idx> (one thread): reserves room for a record of up to
 * <len> payload bytes and returns where to write it, or NULL when it does not
 * fit (the drop is counted: frames and bytes). Never blocks. A reservation is
 * followed by tap_ring_commit() before the next reserve. Records never
 * straddle the ring's end, so one longer than half the ring may not fit even
 * in an empty ring, depending on where the head stands.
 */
void *tap_ring_reserve(struct tap_ring *r, unsigned idx, size_t len);

/*
 * Publishes the reserved record with its final payload length <len> (at most
 * what was reserved; 0 abandons the reservation without counting a drop).
 */
void tap_ring_commit(struct tap_ring *r, unsigned idx, size_t len);

/* Producer: counts a frame dropped before it reached the ring (it could not be encoded). */
void tap_ring_count_drop(struct tap_ring *r, unsigned idx, size_t len);

/*
 * Consumer of ring <idx> (one thread): the record at position *<pos> (start
 * from tap_ring_tail()). Returns 1 with *<payload>, *<len> and *<pos> moved past
 * it; 0 when there is none yet; -EBADMSG when the ring is corrupt at *<pos>
 * (bad magic, length past the ring): the consumer logs, counts, and resyncs by
 * moving to the producer's head (*<pos> is left on the bad record). The
 * payload stays valid until the tail passes it; its bytes are as hostile as
 * the file. -EINVAL for an <idx> past the rings.
 */
int tap_ring_next(struct tap_ring *r, unsigned idx, uint64_t *pos, const void **payload,
		  uint32_t *len);

/* Consumer: the position consumption resumes from (survives consumer restarts). */
uint64_t tap_ring_tail(const struct tap_ring *r, unsigned idx);

/* Consumer: the producer's current head (acquire). */
uint64_t tap_ring_head(const struct tap_ring *r, unsigned idx);

/*
 * Consumer: frees everything before <pos> for the producer (release), counting
 * <frames> consumed. Call only once those frames are durable at the sink.
 */
void tap_ring_release(struct tap_ring *r, unsigned idx, uint64_t pos, uint64_t frames);

/*
 * Consumer: counts <n> records of ring <idx> it found corrupt or invalid and did
 * not ship, where the producer's /metrics can see them.
 */
void tap_ring_count_rejected(struct tap_ring *r, unsigned idx, uint64_t n);

#endif
