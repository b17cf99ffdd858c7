/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The pipeline of the remote sinks (collector, Kafka): frames go from the
 * ring into batches, batches go to the sink, and a batch's ring positions
 * are released only once it is durable: acknowledged by the sink, set aside
 * (refused for good), or written to the spool.
 *
 * A batch read from the ring lives in the ring queue, in read order:
 *
 *   filling ──seal──► sealed ──send──► in flight ──ack / set aside──► durable
 *                       │                  │ retry                      │
 *                       │                  ▼                            │
 *                       └──── spool ───► durable (spooled) ─────────────┤
 *                                                                       ▼
 *                         released: the queue's durable prefix frees its ring positions
 *
 * A sealed batch goes to the spool instead of the sink while the spool holds
 * older batches or the sink is backing off after a failure; every batch not
 * yet durable goes there when the ring is more than half full, so a slow or
 * dead sink never makes the ring overflow while the spool has room. Spool
 * files ship first-in first-out and are deleted once acknowledged. When the
 * spool is full (--spool-full stop, the default), reading stops once the
 * sink's share of batches is taken: the ring fills and its producer drops
 * the newest frames, counted. With drop-oldest, the oldest spool files not
 * being shipped are deleted to make room, their frames counted as dropped.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tap/frame.h"
#include "tap/ring.h"
#include "upl.h"

/* Between drains: 5 ms under load, backing off to 50 ms when idle. */
#define IDLE_MIN_MS 5
#define IDLE_MAX_MS 50
/* Records read per ring before looking at the next one: fairness between workers. */
#define READ_PER_RING 1024
/* Retries: exponential from 100 ms to 30 s, each with jitter (half of it random). */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 30000
#define RETRY_AFTER_MAX_MS 300000
/*
 * A spool holds this many batches at least (--batch-bytes is lowered to fit):
 * room to spool more while a collector has its 4 in flight.
 */
#define SPOOL_BATCHES_MIN 8
/* At stop, how long a ring that was not marked stopped gets to deliver its last frames. */
#define STOP_GRACE_MS 2000

static struct upl_batch *batch_new(struct upl *u, bool from_ring)
{
	struct upl_batch *b = calloc(1, sizeof(*b));
	unsigned n;

	if (!b || !from_ring)
		return b;
	n = tap_ring_count(u->ring);
	b->end = calloc(n, sizeof(*b->end));
	b->records = calloc(n, sizeof(*b->records));
	if (!b->end || !b->records) {
		free(b->end);
		free(b->records);
		free(b);
		return NULL;
	}
	return b;
}

static void batch_free(struct upl_batch *b)
{
	if (!b)
		return;
	free(b->buf);
	free(b->end);
	free(b->records);
	free(b);
}

int upl_batch_append(struct upl_batch *b, const void *p, size_t len)
{
	if (b->len + len > b->cap) {
		size_t cap = b->cap ? b->cap : 64u << 10;
		char *buf;

		while (cap < b->len + len)
			cap *= 2;
		buf = realloc(b->buf, cap);
		if (!buf)
			return -ENOMEM;
		b->buf = buf;
		b->cap = cap;
	}
	memcpy(b->buf + b->len, p, len);
	b->len += len;
	return 0;
}

static bool batch_durable(const struct upl_batch *b)
{
	return b->acked || b->spooled;
}

/* Batches of the ring queue that are not durable yet (the filling one included). */
static unsigned pending(struct upl *u)
{
	unsigned n = 0;

	for (struct upl_batch *b = u->rq_head; b; b = b->next)
		n += !batch_durable(b);
	return n;
}

static bool backing_off(struct upl *u)
{
	return u->failures > 0;
}

/*
 * --spool-full drop-oldest: deletes the oldest batch waiting in the spool
 * (not one being shipped) to make room. Returns false when none can go.
 */
static bool drop_oldest(struct upl *u)
{
	struct upl_spool_file *f = upl_spool_next(u->spool);
	uint64_t now = upl_now_ms();

	if (!f)
		return false;
	u->m.spool_dropped_frames += f->frames;
	u->m.spool_dropped_batches++;
	/* A sink that stays down drops a batch per batch read: one line every 10 s says so. */
	if (!u->drop_logged_ms || now - u->drop_logged_ms >= 10000) {
		upl_log(UPL_LOG_WARN, "the spool is full: deleting its oldest batches",
			"spool_bytes=%lu spool_limit=%lu dropped_frames_total=%lu",
			(unsigned long)upl_spool_bytes(u->spool),
			(unsigned long)upl_spool_limit(u->spool),
			(unsigned long)u->m.spool_dropped_frames);
		u->drop_logged_ms = now;
	}
	upl_set_error(u, "spool full, oldest batches deleted");
	upl_spool_remove(u->spool, f);
	return true;
}

/*
 * Writes ring batch <b> to the spool, under --spool-full drop-oldest making
 * room first. Returns 0 when it is durable there, -ENOSPC when the spool is
 * full or disabled, or another negative errno.
 */
static int spool_batch(struct upl *u, struct upl_batch *b)
{
	bool was_full;
	int ret;

	if (b->spooled || b->acked)
		return 0;
	if (!u->spool || upl_spool_limit(u->spool) == 0)
		return -ENOSPC;
	was_full = upl_spool_is_full(u->spool);
	ret = upl_spool_put(u->spool, b);
	if (ret == -ENOSPC && !was_full)
		u->m.spool_full_total++;
	/* A batch larger than the whole spool would empty it for nothing. */
	while (ret == -ENOSPC && u->o.spool_full == UPL_SPOOL_FULL_DROP_OLDEST &&
	       b->len <= upl_spool_limit(u->spool) && drop_oldest(u))
		ret = upl_spool_put(u->spool, b);
	if (ret == -ENOSPC) {
		if (!was_full) {
			upl_log(UPL_LOG_WARN,
				"the spool is full: draining stops, the ring drops the newest frames",
				"spool_bytes=%lu spool_limit=%lu",
				(unsigned long)upl_spool_bytes(u->spool),
				(unsigned long)upl_spool_limit(u->spool));
			upl_set_error(u, "spool full");
		}
		return ret;
	}
	if (ret < 0) {
		upl_set_error(u, "cannot write to the spool: %s", strerror(-ret));
		return ret;
	}
	b->spooled = true;
	u->m.frames_spooled += b->nframes;
	if (b->inflight) {
		/* The sink still has it: its spool copy waits for the outcome. */
		b->sf->busy = true;
	} else {
		b->sf = NULL;
	}
	return 0;
}

/* Frees the ring positions of the queue's durable prefix. */
static void release(struct upl *u)
{
	struct upl_batch *b;

	while ((b = u->rq_head) && b->sealed && batch_durable(b)) {
		u->rq_head = b->next;
		if (!u->rq_head)
			u->rq_tail = NULL;
		b->in_ring_queue = false;
		for (unsigned i = 0; i < tap_ring_count(u->ring); i++)
			if (b->records[i] || b->end[i] != tap_ring_tail(u->ring, i))
				tap_ring_release(u->ring, i, b->end[i], b->records[i]);
		if (!b->inflight)
			batch_free(b);
	}
}

/* Closes the filling batch: it goes to the sink, or to the spool when the sink is not taking. */
static void seal(struct upl *u)
{
	struct upl_batch *b = u->filling;

	if (!b)
		return;
	u->filling = NULL;
	for (unsigned i = 0; i < tap_ring_count(u->ring); i++)
		b->end[i] = u->pos[i];
	b->sealed = true;
	if (b->nframes == 0) {
		/* Only records that were not frames: nothing to ship, the ring may have them back. */
		b->acked = true;
		return;
	}
	if ((u->spool && upl_spool_files(u->spool) > 0) || backing_off(u) ||
	    u->failed_while_stopping)
		spool_batch(u, b);
}

/* A ring more than half full: every batch not yet durable goes to the spool, to free it. */
static void relieve_pressure(struct upl *u)
{
	if (!u->spool || upl_spool_limit(u->spool) == 0 || !upl_ring_pressed(u))
		return;
	if (u->filling && u->filling->opened_ms)
		seal(u);
	for (struct upl_batch *b = u->rq_head; b; b = b->next)
		if (b->sealed && spool_batch(u, b) == -ENOSPC)
			break;
}

static struct upl_batch *open_batch(struct upl *u)
{
	struct upl_batch *b;

	/* The sink's share in flight, one sealed behind it, one filling: then reading waits. */
	if (pending(u) >= u->ops->capacity(u->sink) + 2)
		return NULL;
	b = batch_new(u, true);
	if (!b)
		return NULL;
	b->in_ring_queue = true;
	if (u->rq_tail)
		u->rq_tail->next = b;
	else
		u->rq_head = b;
	u->rq_tail = b;
	u->filling = b;
	return b;
}

/* Reads ring records into the filling batch. Returns how many frames were taken. */
static long fill(struct upl *u)
{
	long taken = 0;

	for (unsigned i = 0; i < tap_ring_count(u->ring); i++) {
		for (unsigned k = 0; k < READ_PER_RING; k++) {
			struct upl_batch *b = u->filling;
			uint64_t at = u->pos[i];
			const void *payload;
			uint32_t len;
			int ret;

			ret = tap_ring_next(u->ring, i, &u->pos[i], &payload, &len);
			if (ret == 0)
				break;
			/* A batch is opened for a record, so an idle ring leaves none behind. */
			if (!b && !(b = open_batch(u))) {
				u->pos[i] = at;
				return taken;
			}
			if (ret < 0) {
				upl_ring_skip_corrupt(u, i, at);
				continue;
			}
			if (b->nframes &&
			    (b->nframes >= u->o.batch_frames || b->len + len > u->o.batch_bytes)) {
				/* Full: this record opens the next batch. */
				u->pos[i] = at;
				seal(u);
				continue;
			}
			if (!b->opened_ms)
				b->opened_ms = upl_now_ms();
			b->records[i]++;
			if (!upl_record_is_frame(u, i, at, payload, len))
				continue;
			if (upl_batch_append(b, payload, len) < 0) {
				/* Read it again later; what the batch holds ships first. */
				b->records[i]--;
				u->pos[i] = at;
				seal(u);
				return taken;
			}
			if (b->nframes++ == 0) {
				struct tap_frame f;
				size_t used;

				if (tap_frame_decode(u->dec, payload, len, &used, &f, NULL) == 0)
					b->first_ts_ns = f.ts_ns;
			}
			taken++;
		}
	}
	return taken;
}

static uint64_t backoff_ms(unsigned failures)
{
	unsigned shift = failures > 16 ? 16 : failures - 1;
	uint64_t d = (uint64_t)BACKOFF_MIN_MS << shift;

	if (d > BACKOFF_MAX_MS)
		d = BACKOFF_MAX_MS;
	/* Jitter: uploaders that failed together do not come back together. */
	return d / 2 + (uint64_t)random() % (d / 2 + 1);
}

void upl_batch_done(struct upl *u, struct upl_batch *b, enum upl_result r, const char *err,
		    const char *detail)
{
	uint64_t delay;
	bool round;

	b->inflight = false;
	u->inflight--;
	switch (r) {
	case UPL_ACK:
		u->failures = 0;
		u->retry_at_ms = 0;
		u->m.frames_shipped += b->nframes;
		u->m.bytes_shipped += b->len;
		u->m.batches_shipped++;
		if (b->sf) {
			upl_spool_remove(u->spool, b->sf);
			b->sf = NULL;
		}
		b->acked = true;
		if (!b->from_spool)
			upl_spool_forget_full(u->spool);
		upl_log(UPL_LOG_DEBUG, "batch shipped", "frames=%u bytes=%zu from=%s", b->nframes,
			b->len, b->from_spool ? "spool" : "ring");
		break;
	case UPL_RETRY:
		u->m.batches_retried++;
		/*
		 * Batches that were in flight together fail together: one longer
		 * back-off for them all, not one per batch.
		 */
		round = b->sent_ms >= u->backoff_set_ms || !u->failures;
		if (round) {
			u->failures++;
			delay = backoff_ms(u->failures);
			if (u->retry_hint_ms > delay)
				delay = u->retry_hint_ms > RETRY_AFTER_MAX_MS ? RETRY_AFTER_MAX_MS :
										u->retry_hint_ms;
			u->retry_at_ms = upl_now_ms() + delay;
			u->backoff_set_ms = upl_now_ms();
		}
		delay = u->retry_at_ms > upl_now_ms() ? u->retry_at_ms - upl_now_ms() : 0;
		u->retry_hint_ms = 0;
		if (upl_stop_requested || u->o.once)
			u->failed_while_stopping = true;
		upl_set_error(u, "%s", err);
		/* One line per round of failures; the rest of the round at debug level. */
		upl_log(round ? UPL_LOG_WARN : UPL_LOG_DEBUG,
			"the sink did not take a batch, retrying",
			"sink=%s err=\"%s\" frames=%u attempt=%u retry_in_ms=%lu%s%s%s",
			u->ops->name, err, b->nframes, u->failures, (unsigned long)delay,
			detail && detail[0] ? " response=\"" : "", detail ? detail : "",
			detail && detail[0] ? "\"" : "");
		if (b->sf) {
			/* Its spool file waits for the next attempt. */
			b->sf->busy = false;
			b->sf = NULL;
		} else if (b->in_ring_queue) {
			spool_batch(u, b);
		}
		break;
	case UPL_REJECT:
		u->m.batches_rejected++;
		u->m.frames_rejected += b->nframes;
		upl_set_error(u, "%s", err);
		upl_log(UPL_LOG_ERR, "the sink refused a batch, setting it aside",
			"sink=%s err=\"%s\" frames=%u response=\"%s\"", u->ops->name, err,
			b->nframes, detail ? detail : "");
		if (upl_spool_reject(u->spool, b) < 0)
			upl_log(UPL_LOG_ERR, "cannot keep the refused batch", "frames=%u",
				b->nframes);
		b->acked = true;
		break;
	}
	if (!b->in_ring_queue)
		batch_free(b);
}

/* Starts what the sink has room for: spool files first (oldest first), then ring batches. */
static void dispatch(struct upl *u)
{
	unsigned cap = u->ops->capacity(u->sink);

	while (u->inflight < cap && upl_now_ms() >= u->retry_at_ms) {
		/* A sink that failed at stop gets no spool file: they wait for the next start. */
		struct upl_spool_file *f =
			u->failed_while_stopping ? NULL : upl_spool_next(u->spool);
		struct upl_batch *b = NULL;
		int ret;

		if (f) {
			b = batch_new(u, false);
			if (!b)
				return;
			if (upl_spool_load(u->spool, f, b) < 0) {
				batch_free(b);
				return;
			}
		} else {
			for (b = u->rq_head; b; b = b->next)
				if (b->sealed && !b->inflight && !batch_durable(b))
					break;
			if (!b)
				return;
		}
		b->inflight = true;
		b->sent_ms = upl_now_ms();
		u->inflight++;
		ret = u->ops->send(u->sink, b);
		if (ret == -EBADMSG)
			upl_batch_done(u, b, UPL_REJECT, "not a capture file", NULL);
		else if (ret < 0)
			upl_batch_done(u, b, UPL_RETRY, strerror(-ret), NULL);
	}
}

/*
 * Every ring batch not yet durable to the spool (a failing sink at stop).
 * Returns false when one could not be written there.
 */
static bool spool_all(struct upl *u)
{
	seal(u);
	for (struct upl_batch *b = u->rq_head; b; b = b->next)
		if (spool_batch(u, b) < 0)
			return false;
	return true;
}

void upl_batch_abandon(struct upl *u, struct upl_batch *b)
{
	b->inflight = false;
	u->inflight--;
	if (b->sf) {
		b->sf->busy = false;
		b->sf = NULL;
	}
	if (!b->in_ring_queue)
		batch_free(b);
}

/* Frees the ring queue (after the sink abandoned what it had): its frames stay in the ring. */
static void free_all(struct upl *u)
{
	struct upl_batch *b, *next;

	for (b = u->rq_head; b; b = next) {
		next = b->next;
		batch_free(b);
	}
	u->rq_head = u->rq_tail = u->filling = NULL;
}

int upl_remote_run(struct upl *u)
{
	uint64_t waiting_since = 0, stop_since = 0;
	unsigned idle_ms = IDLE_MIN_MS;
	bool ring_done = false;
	int ret, status = 0;

	ret = upl_spool_open(u->o.spool_dir, u->o.spool_limit, &u->spool);
	if (ret < 0)
		return 1;
	/*
	 * A batch larger than the spool could never be spooled, and reading
	 * would stop behind it whenever the sink is down: a small spool gets
	 * small batches, several to a spool.
	 */
	if (u->o.spool_limit && u->o.batch_bytes > u->o.spool_limit / SPOOL_BATCHES_MIN) {
		u->o.batch_bytes = u->o.spool_limit / SPOOL_BATCHES_MIN;
		upl_log(UPL_LOG_INFO, "batches made smaller to fit the spool",
			"batch_bytes=%lu spool_limit=%lu", (unsigned long)u->o.batch_bytes,
			(unsigned long)u->o.spool_limit);
	}
	u->ops = u->o.dest.kind == TAP_SINK_KAFKA ? &upl_sink_kafka : &upl_sink_http;
	ret = u->ops->open(u, &u->sink);
	if (ret < 0) {
		upl_spool_close(u->spool);
		return 1;
	}
	for (;;) {
		bool stopping = upl_stop_requested || u->o.once;
		long got = 0;
		int timeout;

		if (upl_stop_requested > 1) {
			upl_log(UPL_LOG_WARN,
				"stopping at once: what is not durable stays in the ring",
				"batches=%u", pending(u));
			break;
		}
		u->ops->process(u->sink);
		if (!u->ring && !ring_done) {
			ret = upl_ring_attach(u);
			if (ret == -ENOENT) {
				if (stopping)
					ring_done = true;
				else if (!waiting_since) {
					waiting_since = upl_now_ms();
					upl_log(UPL_LOG_INFO, "waiting for the ring", "path=%s",
						u->o.ring);
				}
			} else if (ret < 0) {
				status = 1;
				break;
			}
		}
		if (u->ring && !ring_done) {
			got = fill(u);
			if (u->filling && u->filling->opened_ms &&
			    (upl_now_ms() - u->filling->opened_ms >= u->o.batch_ms ||
			     (stopping && got == 0 && upl_ring_drained(u))))
				seal(u);
			relieve_pressure(u);
		}
		dispatch(u);
		if (u->ring)
			release(u);
		if (u->ring && got == 0 && !u->filling && !u->rq_head) {
			/* Drained and all durable. A stopped or replaced ring is finished with. */
			if (stopping) {
				if (!stop_since)
					stop_since = upl_now_ms();
				/* sidetap flushes its last frames on the way out: give it a moment. */
				if (u->o.once || tap_ring_state(u->ring) == TAP_RING_STOPPED ||
				    upl_now_ms() - stop_since >= STOP_GRACE_MS)
					ring_done = true;
			} else if (upl_ring_replaced(u)) {
				upl_log(UPL_LOG_INFO,
					"the ring was replaced (sidetap restarted), switching",
					"path=%s", u->o.ring);
				upl_ring_detach(u);
				continue;
			}
		}
		if (stopping && u->failed_while_stopping && u->ring && !spool_all(u)) {
			/*
			 * Waiting would outlive sidetap (an uploader whose sidetap was
			 * killed holds the spool's lock against the next one): what is
			 * not durable stays in the ring, unreleased, for the next uploader.
			 */
			upl_log(UPL_LOG_WARN,
				"stopping with frames left in the ring: neither the sink nor the spool takes them",
				"batches=%u spool_bytes=%lu spool_limit=%lu", pending(u),
				(unsigned long)upl_spool_bytes(u->spool),
				(unsigned long)upl_spool_limit(u->spool));
			status = 1;
			break;
		}
		if (ring_done && !u->rq_head &&
		    (u->failed_while_stopping ||
		     (u->inflight == 0 && upl_spool_files(u->spool) == 0)))
			break;
		if (got) {
			idle_ms = IDLE_MIN_MS;
			timeout = 0;
		} else {
			uint64_t now = upl_now_ms();

			timeout = (int)idle_ms;
			if (idle_ms < IDLE_MAX_MS)
				idle_ms *= 2;
			if (u->filling && u->filling->opened_ms &&
			    u->filling->opened_ms + u->o.batch_ms < now + (uint64_t)timeout)
				timeout =
					(int)(u->filling->opened_ms + u->o.batch_ms > now ?
						      u->filling->opened_ms + u->o.batch_ms - now :
						      0);
			if (u->retry_at_ms > now && u->retry_at_ms < now + (uint64_t)timeout)
				timeout = (int)(u->retry_at_ms - now);
		}
		upl_wait(u, timeout);
	}
	u->ops->close(u->sink);
	u->sink = NULL;
	free_all(u);
	upl_ring_detach(u);
	upl_log(UPL_LOG_INFO, "stopped",
		"frames=%lu batches=%lu retried=%lu rejected=%lu spooled=%lu spool_files=%u spool_dropped=%lu corrupt=%lu invalid=%lu",
		(unsigned long)u->m.frames_shipped, (unsigned long)u->m.batches_shipped,
		(unsigned long)u->m.batches_retried, (unsigned long)u->m.batches_rejected,
		(unsigned long)u->m.frames_spooled, upl_spool_files(u->spool),
		(unsigned long)u->m.spool_dropped_frames, (unsigned long)u->m.corrupt,
		(unsigned long)u->m.invalid);
	upl_spool_close(u->spool);
	u->spool = NULL;
	return status;
}
