/* SPDX-License-Identifier: Apache-2.0 */
/* The shared-memory ring file: single-producer/single-consumer rings of length-prefixed records. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tap/ring.h"

#define REC_FRAME 0x31524d46u /* "FMR1" */
#define REC_WRAP 0x50415257u /* "WRAP" */
#define REC_HDR 8u
#define CTL_OFF 256u
#define CTL_SIZE 256u
#define PAGE 4096u

#define ALIGN8(n) (((n) + 7) & ~(uint64_t)7)

/* Page 0 of the file (FORMAT.md): written once by the producer before the file is renamed in. */
struct ring_hdr {
	char magic[8];
	uint32_t version;
	uint32_t nrings;
	uint64_t ring_size;
	uint64_t generation;
	uint32_t producer_pid;
	uint32_t state;
	uint64_t created_ns;
	uint64_t data_off;
};

_Static_assert(offsetof(struct ring_hdr, version) == 8, "layout of FORMAT.md");
_Static_assert(offsetof(struct ring_hdr, ring_size) == 16, "layout of FORMAT.md");
_Static_assert(offsetof(struct ring_hdr, generation) == 24, "layout of FORMAT.md");
_Static_assert(offsetof(struct ring_hdr, producer_pid) == 32, "layout of FORMAT.md");
_Static_assert(offsetof(struct ring_hdr, state) == 36, "layout of FORMAT.md");
_Static_assert(offsetof(struct ring_hdr, created_ns) == 40, "layout of FORMAT.md");
_Static_assert(offsetof(struct ring_hdr, data_off) == 48, "layout of FORMAT.md");
_Static_assert(sizeof(struct ring_hdr) <= CTL_OFF, "the header ends before the control blocks");

/*
 * One ring's control block. The producer writes only the first half and the
 * consumer only the second, each on cache lines of its own, so neither side's
 * stores invalidate the lines the other one writes.
 */
struct ring_ctl {
	uint64_t head; /* bytes ever written: published with a release store */
	uint64_t frames, bytes;
	uint64_t dropped_frames, dropped_bytes;
	uint8_t pad0[128 - 5 * 8];
	uint64_t tail; /* bytes ever consumed: published with a release store */
	uint64_t consumed_frames;
	uint64_t rejected; /* records the consumer found corrupt or invalid */
	uint8_t pad1[128 - 3 * 8];
};

_Static_assert(sizeof(struct ring_ctl) == CTL_SIZE, "layout of FORMAT.md");
_Static_assert(offsetof(struct ring_ctl, tail) == 128, "layout of FORMAT.md");

/*
 * What this process keeps of one ring. The producer's fields are its own
 * copies, never read back from the file: a value another process wrote into
 * the mapping cannot move where the producer writes. Aligned so that the
 * producers of different rings (worker threads) do not share cache lines,
 * and the consumer's field sits on a line of its own.
 */
struct ring_local {
	struct ring_ctl *ctl;
	uint8_t *data;
	uint64_t head; /* producer: what it last published */
	uint64_t tail_seen; /* producer: the consumer's tail when last read */
	uint64_t resv_pos; /* producer: where the reserved record starts */
	uint32_t resv_len; /* producer: payload bytes reserved */
	bool reserved;
	uint64_t frames, bytes, dropped_frames, dropped_bytes;
	/* consumer: the producer's head when last read (acquire) */
	uint64_t head_seen __attribute__((aligned(64)));
} __attribute__((aligned(64)));

struct tap_ring {
	struct ring_hdr *hdr;
	void *map;
	size_t map_len;
	unsigned nrings;
	uint64_t ring_size, mask, generation;
	struct ring_local rings[];
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool size_ok(uint64_t ring_size)
{
	return ring_size >= TAP_RING_SIZE_MIN && ring_size <= TAP_RING_SIZE_MAX &&
	       (ring_size & (ring_size - 1)) == 0;
}

/* Builds the local view of a validated mapping (geometry from the caller's checked copies). */
static struct tap_ring *ring_new(void *map, size_t map_len, unsigned nrings, uint64_t ring_size,
				 uint64_t generation, uint64_t data_off)
{
	size_t len = sizeof(struct tap_ring) + nrings * sizeof(struct ring_local);
	struct tap_ring *r;

	len = (len + 63) & ~(size_t)63;
	r = aligned_alloc(64, len);
	if (!r)
		return NULL;
	memset(r, 0, len);
	r->map = map;
	r->map_len = map_len;
	r->hdr = map;
	r->nrings = nrings;
	r->ring_size = ring_size;
	r->mask = ring_size - 1;
	r->generation = generation;
	for (unsigned i = 0; i < nrings; i++) {
		r->rings[i].ctl = (struct ring_ctl *)((uint8_t *)map + CTL_OFF + i * CTL_SIZE);
		r->rings[i].data = (uint8_t *)map + data_off + i * ring_size;
	}
	return r;
}

int tap_ring_create(const char *path, unsigned nrings, uint64_t ring_size, uint64_t generation,
		    struct tap_ring **out)
{
	uint64_t data_off, size;
	struct ring_hdr *hdr;
	struct tap_ring *r;
	size_t tmplen;
	char *tmp;
	void *map;
	int fd, ret;

	if (!path || nrings == 0 || nrings > TAP_RING_MAX || !size_ok(ring_size))
		return -EINVAL;
	data_off = (CTL_OFF + (uint64_t)nrings * CTL_SIZE + PAGE - 1) & ~(uint64_t)(PAGE - 1);
	size = data_off + nrings * ring_size;

	/* A temporary name in the same directory: rename() then swaps the file in at once. */
	tmplen = strlen(path) + sizeof(".XXXXXX");
	tmp = malloc(tmplen);
	if (!tmp)
		return -ENOMEM;
	snprintf(tmp, tmplen, "%s.XXXXXX", path);
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd == -1) {
		ret = -errno;
		goto err_free_tmp;
	}
	if (ftruncate(fd, (off_t)size) == -1) {
		ret = -errno;
		goto err_unlink;
	}
	/*
	 * Allocate the pages now: on a tmpfs that fills up later, touching a hole
	 * of a shared mapping raises SIGBUS in the proxy instead of an error here.
	 */
	ret = posix_fallocate(fd, 0, (off_t)size);
	if (ret && ret != EOPNOTSUPP && ret != EINVAL) {
		ret = -ret;
		goto err_unlink;
	}
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		ret = -errno;
		goto err_unlink;
	}
	r = ring_new(map, size, nrings, ring_size, generation, data_off);
	if (!r) {
		ret = -ENOMEM;
		goto err_unmap;
	}
	hdr = map;
	memcpy(hdr->magic, TAP_RING_MAGIC, sizeof(hdr->magic));
	hdr->version = TAP_RING_VERSION;
	hdr->nrings = nrings;
	hdr->ring_size = ring_size;
	hdr->generation = generation;
	hdr->producer_pid = (uint32_t)getpid();
	hdr->state = TAP_RING_RUNNING;
	hdr->created_ns = now_ns();
	hdr->data_off = data_off;
	if (rename(tmp, path) == -1) {
		ret = -errno;
		goto err_free_ring;
	}
	close(fd);
	free(tmp);
	*out = r;
	return 0;

err_free_ring:
	free(r);
err_unmap:
	munmap(map, size);
err_unlink:
	unlink(tmp);
	close(fd);
err_free_tmp:
	free(tmp);
	return ret;
}

int tap_ring_open(const char *path, struct tap_ring **out, char *err, size_t errlen)
{
	struct ring_hdr h;
	struct tap_ring *r;
	struct stat st;
	uint64_t size, need;
	ssize_t n;
	void *map;
	int fd, ret;

	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd == -1) {
		ret = -errno;
		snprintf(err, errlen, "ring %s: cannot open: %s", path, strerror(errno));
		return ret;
	}
	if (fstat(fd, &st) == -1) {
		ret = -errno;
		snprintf(err, errlen, "ring %s: cannot stat: %s", path, strerror(errno));
		goto err_close;
	}
	size = (uint64_t)st.st_size;
	/* The header is read once, into a copy: what is checked is what is used. */
	n = pread(fd, &h, sizeof(h), 0);
	if (n < 0) {
		ret = -errno;
		snprintf(err, errlen, "ring %s: cannot read the header: %s", path, strerror(errno));
		goto err_close;
	}
	ret = -EINVAL;
	if ((size_t)n < sizeof(h)) {
		snprintf(err, errlen, "ring %s: %llu bytes, too short for a ring header (%zu)",
			 path, (unsigned long long)size, sizeof(h));
		goto err_close;
	}
	if (memcmp(h.magic, TAP_RING_MAGIC, sizeof(h.magic)) != 0) {
		snprintf(err, errlen, "ring %s: bad magic: not a sidetap ring file", path);
		goto err_close;
	}
	if (h.version != TAP_RING_VERSION) {
		snprintf(err, errlen, "ring %s: version %u, this reader knows version %u", path,
			 h.version, TAP_RING_VERSION);
		goto err_close;
	}
	if (h.nrings == 0 || h.nrings > TAP_RING_MAX) {
		snprintf(err, errlen, "ring %s: %u rings, outside 1..%u", path, h.nrings,
			 TAP_RING_MAX);
		goto err_close;
	}
	if (!size_ok(h.ring_size)) {
		snprintf(err, errlen, "ring %s: ring size %llu is not a power of two in %llu..%llu",
			 path, (unsigned long long)h.ring_size,
			 (unsigned long long)TAP_RING_SIZE_MIN,
			 (unsigned long long)TAP_RING_SIZE_MAX);
		goto err_close;
	}
	if (h.data_off < CTL_OFF + (uint64_t)h.nrings * CTL_SIZE || h.data_off % 8 ||
	    h.data_off > size) {
		snprintf(err, errlen,
			 "ring %s: data offset %llu overlaps the control blocks or the end", path,
			 (unsigned long long)h.data_off);
		goto err_close;
	}
	need = h.data_off + h.nrings * h.ring_size;
	if (size != need) {
		snprintf(err, errlen,
			 "ring %s: file is %llu bytes, its header says %llu (%u rings of %llu): "
			 "truncated or not a ring file",
			 path, (unsigned long long)size, (unsigned long long)need, h.nrings,
			 (unsigned long long)h.ring_size);
		goto err_close;
	}
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		ret = -errno;
		snprintf(err, errlen, "ring %s: cannot map %llu bytes: %s", path,
			 (unsigned long long)size, strerror(errno));
		goto err_close;
	}
	r = ring_new(map, size, h.nrings, h.ring_size, h.generation, h.data_off);
	if (!r) {
		ret = -ENOMEM;
		snprintf(err, errlen, "ring %s: out of memory", path);
		goto err_unmap;
	}
	close(fd);
	*out = r;
	return 0;

err_unmap:
	munmap(map, size);
err_close:
	close(fd);
	return ret;
}

void tap_ring_stop(struct tap_ring *r)
{
	__atomic_store_n(&r->hdr->state, TAP_RING_STOPPED, __ATOMIC_RELEASE);
}

void tap_ring_close(struct tap_ring *r, bool stopped)
{
	if (!r)
		return;
	if (stopped)
		tap_ring_stop(r);
	munmap(r->map, r->map_len);
	free(r);
}

unsigned tap_ring_count(const struct tap_ring *r)
{
	return r->nrings;
}

uint64_t tap_ring_size(const struct tap_ring *r)
{
	return r->ring_size;
}

uint64_t tap_ring_generation(const struct tap_ring *r)
{
	return r->generation;
}

uint32_t tap_ring_producer_pid(const struct tap_ring *r)
{
	return __atomic_load_n(&r->hdr->producer_pid, __ATOMIC_RELAXED);
}

enum tap_ring_state tap_ring_state(const struct tap_ring *r)
{
	return (enum tap_ring_state)__atomic_load_n(&r->hdr->state, __ATOMIC_ACQUIRE);
}

void tap_ring_stats(const struct tap_ring *r, unsigned idx, struct tap_ring_stats *out)
{
	const struct ring_ctl *c;

	memset(out, 0, sizeof(*out));
	if (idx >= r->nrings)
		return;
	c = r->rings[idx].ctl;
	out->head = __atomic_load_n(&c->head, __ATOMIC_ACQUIRE);
	out->tail = __atomic_load_n(&c->tail, __ATOMIC_ACQUIRE);
	out->frames = __atomic_load_n(&c->frames, __ATOMIC_RELAXED);
	out->bytes = __atomic_load_n(&c->bytes, __ATOMIC_RELAXED);
	out->dropped_frames = __atomic_load_n(&c->dropped_frames, __ATOMIC_RELAXED);
	out->dropped_bytes = __atomic_load_n(&c->dropped_bytes, __ATOMIC_RELAXED);
	out->consumed_frames = __atomic_load_n(&c->consumed_frames, __ATOMIC_RELAXED);
	out->rejected = __atomic_load_n(&c->rejected, __ATOMIC_RELAXED);
}

/* Counts a drop in the producer's copies and publishes them (one writer: plain stores). */
static void count_drop(struct ring_local *rl, size_t len)
{
	rl->dropped_frames++;
	rl->dropped_bytes += len;
	__atomic_store_n(&rl->ctl->dropped_frames, rl->dropped_frames, __ATOMIC_RELAXED);
	__atomic_store_n(&rl->ctl->dropped_bytes, rl->dropped_bytes, __ATOMIC_RELAXED);
}

/* True when <n> more bytes fit after the producer's head without passing the consumer's tail. */
static bool room_for(const struct tap_ring *r, struct ring_local *rl, uint64_t n)
{
	uint64_t used = rl->head - rl->tail_seen;

	if (used <= r->ring_size && n <= r->ring_size - used)
		return true;
	/*
	 * Only now read the shared tail (acquire: the consumer is done with what
	 * lies before it). A tail past the head or more than a ring behind it is
	 * garbage: "full", so nothing is written.
	 */
	rl->tail_seen = __atomic_load_n(&rl->ctl->tail, __ATOMIC_ACQUIRE);
	used = rl->head - rl->tail_seen;
	return used <= r->ring_size && n <= r->ring_size - used;
}

static void put_rec(uint8_t *at, uint32_t magic, uint32_t len)
{
	__atomic_store_n((uint64_t *)at, (uint64_t)magic << 32 | len, __ATOMIC_RELAXED);
}

void *tap_ring_reserve(struct tap_ring *r, unsigned idx, size_t len)
{
	struct ring_local *rl;
	uint64_t need, off, pad;

	if (idx >= r->nrings)
		return NULL;
	rl = &r->rings[idx];
	rl->reserved = false;
	if (len > UINT32_MAX || len > r->ring_size - REC_HDR)
		goto drop;
	need = REC_HDR + ALIGN8((uint64_t)len);
	off = rl->head & r->mask;
	/* A record never straddles the end: the rest of the ring becomes a wrap marker. */
	pad = off + need > r->ring_size ? r->ring_size - off : 0;
	if (!room_for(r, rl, pad + need))
		goto drop;
	if (pad)
		put_rec(rl->data + off, REC_WRAP, 0);
	rl->resv_pos = rl->head + pad;
	rl->resv_len = (uint32_t)len;
	rl->reserved = true;
	return rl->data + (rl->resv_pos & r->mask) + REC_HDR;

drop:
	count_drop(rl, len);
	return NULL;
}

void tap_ring_commit(struct tap_ring *r, unsigned idx, size_t len)
{
	struct ring_local *rl;

	if (idx >= r->nrings || !r->rings[idx].reserved)
		return;
	rl = &r->rings[idx];
	rl->reserved = false;
	if (len == 0)
		return;
	if (len > rl->resv_len) {
		/* The caller wrote past its reservation: publish nothing of it. */
		count_drop(rl, len);
		return;
	}
	put_rec(rl->data + (rl->resv_pos & r->mask), REC_FRAME, (uint32_t)len);
	rl->head = rl->resv_pos + REC_HDR + ALIGN8((uint64_t)len);
	rl->frames++;
	rl->bytes += len;
	__atomic_store_n(&rl->ctl->frames, rl->frames, __ATOMIC_RELAXED);
	__atomic_store_n(&rl->ctl->bytes, rl->bytes, __ATOMIC_RELAXED);
	/* Release: the record (and any wrap marker before it) is visible before the head says so. */
	__atomic_store_n(&rl->ctl->head, rl->head, __ATOMIC_RELEASE);
}

void tap_ring_count_drop(struct tap_ring *r, unsigned idx, size_t len)
{
	if (idx < r->nrings)
		count_drop(&r->rings[idx], len);
}

int tap_ring_next(struct tap_ring *r, unsigned idx, uint64_t *pos, const void **payload,
		  uint32_t *len)
{
	struct ring_local *rl;
	uint64_t p = *pos, head, avail, off, rec, size;
	bool wrapped = false;
	uint32_t rlen;

	if (idx >= r->nrings)
		return -EINVAL;
	rl = &r->rings[idx];
	/*
	 * Acquire: every record before the head is fully written. The head read
	 * last time still vouches for what lies before it, so the producer's
	 * cache line is touched only once the consumer has caught up with it.
	 */
	head = rl->head_seen;
	if (head == p || head - p > r->ring_size)
		head = rl->head_seen = __atomic_load_n(&rl->ctl->head, __ATOMIC_ACQUIRE);
again:
	avail = head - p;
	if (avail == 0)
		return 0;
	/* A head behind *pos or more than a ring ahead of it, or a misaligned *pos: corrupt. */
	if (avail > r->ring_size || p % 8)
		return -EBADMSG;
	off = p & r->mask;
	/* Each record header is read once, as one word, and checked before anything uses it. */
	rec = __atomic_load_n((const uint64_t *)(rl->data + off), __ATOMIC_RELAXED);
	rlen = (uint32_t)rec;
	switch ((uint32_t)(rec >> 32)) {
	case REC_WRAP:
		/* The producer writes a wrap marker only where a record did not fit before the end. */
		if (wrapped || off == 0 || r->ring_size - off > avail)
			return -EBADMSG;
		p += r->ring_size - off;
		wrapped = true;
		goto again;
	case REC_FRAME:
		size = REC_HDR + ALIGN8((uint64_t)rlen);
		if (size > r->ring_size - off || size > avail)
			return -EBADMSG;
		*payload = rl->data + off + REC_HDR;
		*len = rlen;
		*pos = p + size;
		return 1;
	default:
		return -EBADMSG;
	}
}

uint64_t tap_ring_tail(const struct tap_ring *r, unsigned idx)
{
	if (idx >= r->nrings)
		return 0;
	return __atomic_load_n(&r->rings[idx].ctl->tail, __ATOMIC_ACQUIRE);
}

uint64_t tap_ring_head(const struct tap_ring *r, unsigned idx)
{
	if (idx >= r->nrings)
		return 0;
	return __atomic_load_n(&r->rings[idx].ctl->head, __ATOMIC_ACQUIRE);
}

void tap_ring_release(struct tap_ring *r, unsigned idx, uint64_t pos, uint64_t frames)
{
	struct ring_ctl *c;

	if (idx >= r->nrings)
		return;
	c = r->rings[idx].ctl;
	/* One consumer per ring: a load and a store, not a read-modify-write, suffice. */
	__atomic_store_n(&c->consumed_frames,
			 __atomic_load_n(&c->consumed_frames, __ATOMIC_RELAXED) + frames,
			 __ATOMIC_RELAXED);
	/* Release: the consumer's reads of what lies before <pos> happen before the producer reuses it. */
	__atomic_store_n(&c->tail, pos, __ATOMIC_RELEASE);
}

void tap_ring_count_rejected(struct tap_ring *r, unsigned idx, uint64_t n)
{
	struct ring_ctl *c;

	if (idx >= r->nrings)
		return;
	c = r->rings[idx].ctl;
	/* One consumer: a relaxed read-modify-write of its own counter. */
	__atomic_store_n(&c->rejected, __atomic_load_n(&c->rejected, __ATOMIC_RELAXED) + n,
			 __ATOMIC_RELAXED);
}
