/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Kafka sink: one message per frame, the frame id as its key (so a
 * consumer can de-duplicate), produced by librdkafka with the idempotent
 * producer (acks=all, no duplicates or reordering from its own retries). A
 * batch is acknowledged when every message of it has a successful delivery
 * report; messages that failed for now make the whole batch a retry (those
 * already delivered come again: same key), messages refused for good (too
 * large, not authorised) are set aside.
 */
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap/frame.h"
#include "upl.h"

/* Batches in flight: librdkafka batches across them itself (linger.ms). */
#define KAFKA_INFLIGHT 16

enum kmsg_state {
	KMSG_PENDING = 0,
	KMSG_OK,
	KMSG_RETRY,
	KMSG_REJECT,
};

struct kafka_batch;

/* One message: its delivery report's opaque. */
struct kmsg {
	struct kafka_batch *kb;
	uint32_t off, len; /* the frame's bytes in the batch */
	uint8_t state;
	char key[TAP_FRAME_ID_LEN]; /* the frame id */
};

struct kafka_batch {
	struct kafka_batch *next; /* on the finished list */
	struct upl_batch *b;
	uint32_t n, outstanding;
	struct kmsg *msgs;
	rd_kafka_resp_err_t err; /* the last error a report carried */
};

struct kafka_sink {
	struct upl *u;
	rd_kafka_t *rk;
	rd_kafka_topic_t *rkt;
	int pipe[2]; /* librdkafka's queue wakes the loop through it */
	struct kafka_batch *finished;
	struct kafka_batch *live[KAFKA_INFLIGHT];
	bool fatal;
};

/* Errors that no retry will fix: the batch's frames are set aside. */
static bool permanent(rd_kafka_resp_err_t err)
{
	switch (err) {
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_INVALID_MSG:
	case RD_KAFKA_RESP_ERR_INVALID_RECORD:
	case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
	case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
	case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
	case RD_KAFKA_RESP_ERR__INVALID_ARG:
		return true;
	default:
		return false;
	}
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct kafka_sink *ks = opaque;
	struct kmsg *km = m->_private;
	struct kafka_batch *kb;

	(void)rk;
	if (!km)
		return;
	kb = km->kb;
	if (m->err) {
		km->state = permanent(m->err) ? KMSG_REJECT : KMSG_RETRY;
		kb->err = m->err;
	} else {
		km->state = KMSG_OK;
	}
	if (--kb->outstanding == 0) {
		kb->next = ks->finished;
		ks->finished = kb;
	}
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct kafka_sink *ks = opaque;

	(void)rk;
	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		ks->fatal = true;
		upl_log(UPL_LOG_ERR, "kafka producer failed for good, starting a new one",
			"reason=\"%s\"", reason);
	} else {
		/* Brokers down and the like: librdkafka retries; delivery reports say the outcome. */
		upl_log(UPL_LOG_WARN, "kafka", "err=%s reason=\"%s\"",
			rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
	}
	upl_set_error(ks->u, "kafka: %s", reason);
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void)rk;
	/* syslog levels: 0-4 are errors and warnings, the rest chatter. */
	upl_log(level <= 4 ? UPL_LOG_WARN : UPL_LOG_DEBUG, "librdkafka", "facility=%s log=\"%s\"",
		fac, buf);
}

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
	char err[512];

	if (rd_kafka_conf_set(conf, k, v, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
		upl_log(UPL_LOG_ERR, "invalid kafka property",
			"property=%s value=\"%s\" err=\"%s\"", k, v, err);
		return -EINVAL;
	}
	return 0;
}

int upl_kafka_check_props(const struct upl_opts *o)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	int ret = 0;

	for (unsigned i = 0; i < o->nkafka_props && ret == 0; i++) {
		const char *eq = strchr(o->kafka_props[i], '=');
		char key[256], err[512];
		size_t klen = (size_t)(eq - o->kafka_props[i]);

		if (klen >= sizeof(key)) {
			fprintf(stderr,
				"sidetap-uploader: --kafka-prop: invalid value '%s': name too long\n",
				o->kafka_props[i]);
			ret = -EINVAL;
			break;
		}
		memcpy(key, o->kafka_props[i], klen);
		key[klen] = '\0';
		if (rd_kafka_conf_set(conf, key, eq + 1, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
			fprintf(stderr, "sidetap-uploader: --kafka-prop: invalid value '%s': %s\n",
				o->kafka_props[i], err);
			ret = -EINVAL;
		}
	}
	rd_kafka_conf_destroy(conf);
	return ret;
}

static int producer_new(struct kafka_sink *ks)
{
	const struct upl_opts *o = &ks->u->o;
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char num[32], err[512];
	unsigned long long kbytes;
	rd_kafka_queue_t *q;
	int ret = 0;

	rd_kafka_conf_set_opaque(conf, ks);
	rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
	rd_kafka_conf_set_error_cb(conf, on_error);
	rd_kafka_conf_set_log_cb(conf, on_log);
	/* Room for every batch we may have in flight, whatever their size. */
	snprintf(num, sizeof(num), "%u",
		 KAFKA_INFLIGHT * o->batch_frames > 100000 ? KAFKA_INFLIGHT * o->batch_frames :
							     100000);
	ret |= conf_set(conf, "queue.buffering.max.messages", num);
	kbytes = (unsigned long long)KAFKA_INFLIGHT * (o->batch_bytes / 1024 + 1) + 65536;
	snprintf(num, sizeof(num), "%llu", kbytes > 2097151 ? 2097151ull : kbytes);
	ret |= conf_set(conf, "queue.buffering.max.kbytes", num);
	ret |= conf_set(conf, "bootstrap.servers", o->dest.kafka_brokers);
	ret |= conf_set(conf, "client.id", "sidetap-uploader");
	ret |= conf_set(conf, "enable.idempotence", "true");
	ret |= conf_set(conf, "compression.codec", upl_compression_name(o->compression));
	/* How long librdkafka itself retries a message before its report says it failed. */
	snprintf(num, sizeof(num), "%u", o->sink_timeout_ms);
	ret |= conf_set(conf, "message.timeout.ms", num);
	for (unsigned i = 0; i < o->nkafka_props && ret == 0; i++) {
		char key[256];
		const char *eq = strchr(o->kafka_props[i], '=');
		size_t klen = (size_t)(eq - o->kafka_props[i]);

		if (klen >= sizeof(key)) {
			upl_log(UPL_LOG_ERR, "invalid kafka property",
				"property=\"%s\" err=\"name too long\"", o->kafka_props[i]);
			ret = -EINVAL;
			break;
		}
		memcpy(key, o->kafka_props[i], klen);
		key[klen] = '\0';
		ret = conf_set(conf, key, eq + 1);
	}
	if (ret) {
		rd_kafka_conf_destroy(conf);
		return -EINVAL;
	}
	ks->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	if (!ks->rk) {
		rd_kafka_conf_destroy(conf);
		upl_log(UPL_LOG_ERR, "cannot create the kafka producer", "err=\"%s\"", err);
		return -EINVAL;
	}
	ks->rkt = rd_kafka_topic_new(ks->rk, o->dest.kafka_topic, NULL);
	if (!ks->rkt) {
		upl_log(UPL_LOG_ERR, "cannot use the kafka topic", "topic=%s err=\"%s\"",
			o->dest.kafka_topic, rd_kafka_err2str(rd_kafka_last_error()));
		rd_kafka_destroy(ks->rk);
		ks->rk = NULL;
		return -EINVAL;
	}
	/* Delivery reports wake the uploader's poll() through the pipe. */
	q = rd_kafka_queue_get_main(ks->rk);
	rd_kafka_queue_io_event_enable(q, ks->pipe[1], "k", 1);
	rd_kafka_queue_destroy(q);
	ks->fatal = false;
	return 0;
}

static void kb_free(struct kafka_batch *kb)
{
	if (!kb)
		return;
	free(kb->msgs);
	free(kb);
}

/* Splits the batch's bytes into frames (spool files are read back, so trust nothing). */
static int kb_new(struct kafka_sink *ks, struct upl_batch *b, struct kafka_batch **out)
{
	struct kafka_batch *kb = calloc(1, sizeof(*kb));
	size_t off = 0, cap = b->nframes ? b->nframes : 16;

	if (!kb)
		return -ENOMEM;
	kb->b = b;
	kb->msgs = calloc(cap, sizeof(*kb->msgs));
	if (!kb->msgs)
		goto err_nomem;
	while (off < b->len) {
		struct tap_frame f;
		size_t used;

		if (tap_frame_decode(ks->u->dec, b->buf + off, b->len - off, &used, &f, NULL) !=
		    0) {
			kb_free(kb);
			return -EBADMSG;
		}
		if (kb->n == cap) {
			struct kmsg *m = realloc(kb->msgs, cap * 2 * sizeof(*m));

			if (!m)
				goto err_nomem;
			kb->msgs = m;
			cap *= 2;
		}
		kb->msgs[kb->n] =
			(struct kmsg){ .kb = kb, .off = (uint32_t)off, .len = (uint32_t)used };
		tap_frame_id(&f, kb->msgs[kb->n].key, sizeof(kb->msgs[kb->n].key));
		kb->n++;
		off += used;
	}
	*out = kb;
	return 0;

err_nomem:
	kb_free(kb);
	return -ENOMEM;
}

static unsigned kafka_capacity(struct upl_sink *s)
{
	(void)s;
	return KAFKA_INFLIGHT;
}

static int kafka_send(struct upl_sink *s, struct upl_batch *b)
{
	struct kafka_sink *ks = (struct kafka_sink *)s;
	struct kafka_batch *kb;
	unsigned slot = KAFKA_INFLIGHT;
	int ret;

	if (!ks->rk)
		return -ENOTCONN;
	for (unsigned i = 0; i < KAFKA_INFLIGHT; i++)
		if (!ks->live[i])
			slot = i;
	if (slot == KAFKA_INFLIGHT)
		return -EBUSY;
	ret = kb_new(ks, b, &kb);
	if (ret < 0)
		return ret;
	for (uint32_t i = 0; i < kb->n; i++) {
		struct kmsg *km = &kb->msgs[i];
		rd_kafka_resp_err_t err;

		for (int tries = 0;; tries++) {
			/* The value is not copied: the batch outlives its delivery reports. */
			err = rd_kafka_producev(ks->rk, RD_KAFKA_V_RKT(ks->rkt),
						RD_KAFKA_V_KEY(km->key, strlen(km->key)),
						RD_KAFKA_V_VALUE(b->buf + km->off, km->len),
						RD_KAFKA_V_OPAQUE(km), RD_KAFKA_V_END);
			if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || tries == 100)
				break;
			/* Full local queue: serve delivery reports to make room. */
			rd_kafka_poll(ks->rk, 10);
		}
		if (err) {
			km->state = permanent(err) ? KMSG_REJECT : KMSG_RETRY;
			kb->err = err;
		} else {
			kb->outstanding++;
		}
	}
	ks->live[slot] = kb;
	b->sink_priv = kb;
	if (kb->outstanding == 0) {
		kb->next = ks->finished;
		ks->finished = kb;
	}
	return 0;
}

/* Sets the rejected messages of <kb> aside as a batch of their own. */
static void set_aside(struct kafka_sink *ks, struct kafka_batch *kb, const char *err)
{
	struct upl_batch part = { 0 };

	for (uint32_t i = 0; i < kb->n; i++) {
		if (kb->msgs[i].state != KMSG_REJECT)
			continue;
		if (upl_batch_append(&part, kb->b->buf + kb->msgs[i].off, kb->msgs[i].len) < 0)
			break;
		part.nframes++;
	}
	ks->u->m.batches_rejected++;
	ks->u->m.frames_rejected += part.nframes;
	upl_set_error(ks->u, "%s", err);
	upl_log(UPL_LOG_ERR, "kafka refused frames, setting them aside", "err=\"%s\" frames=%u",
		err, part.nframes);
	upl_spool_reject(ks->u->spool, &part);
	free(part.buf);
}

static void report(struct kafka_sink *ks, struct kafka_batch *kb)
{
	struct upl_batch *b = kb->b;
	bool retry = false, reject = false;
	char err[256];

	for (unsigned i = 0; i < KAFKA_INFLIGHT; i++)
		if (ks->live[i] == kb)
			ks->live[i] = NULL;
	for (uint32_t i = 0; i < kb->n; i++) {
		retry |= kb->msgs[i].state == KMSG_RETRY;
		reject |= kb->msgs[i].state == KMSG_REJECT;
	}
	snprintf(err, sizeof(err), "kafka: %s", rd_kafka_err2str(kb->err));
	if (reject && !retry && kb->n == 1) {
		const char *name = rd_kafka_err2name(kb->err);

		kb_free(kb);
		b->sink_priv = NULL;
		upl_batch_done(ks->u, b, UPL_REJECT, err, name);
		return;
	}
	if (reject)
		set_aside(ks, kb, err);
	kb_free(kb);
	b->sink_priv = NULL;
	if (retry)
		upl_batch_done(ks->u, b, UPL_RETRY, err, NULL);
	else
		upl_batch_done(ks->u, b, UPL_ACK, NULL, NULL);
}

static void kafka_process(struct upl_sink *s)
{
	struct kafka_sink *ks = (struct kafka_sink *)s;
	char drain[64];

	while (read(ks->pipe[0], drain, sizeof(drain)) > 0) {
	}
	if (!ks->rk)
		return;
	rd_kafka_poll(ks->rk, 0);
	if (ks->fatal) {
		/* Idempotence broken for good: every message still queued fails, a new producer starts. */
		rd_kafka_purge(ks->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
		rd_kafka_flush(ks->rk, 1000);
		rd_kafka_poll(ks->rk, 0);
	}
	while (ks->finished) {
		struct kafka_batch *kb = ks->finished;

		ks->finished = kb->next;
		report(ks, kb);
	}
	if (ks->fatal) {
		for (unsigned i = 0; i < KAFKA_INFLIGHT; i++) {
			struct kafka_batch *kb = ks->live[i];

			/* Reports that never came: those messages are tried again. */
			if (kb) {
				for (uint32_t k = 0; k < kb->n; k++)
					if (kb->msgs[k].state == KMSG_PENDING)
						kb->msgs[k].state = KMSG_RETRY;
				report(ks, kb);
			}
		}
		rd_kafka_topic_destroy(ks->rkt);
		rd_kafka_destroy(ks->rk);
		ks->rk = NULL;
		ks->rkt = NULL;
		producer_new(ks);
	}
}

static int kafka_wait(struct upl_sink *s, struct pollfd *fds, unsigned nfds, int timeout_ms)
{
	struct kafka_sink *ks = (struct kafka_sink *)s;
	struct pollfd p[65];
	unsigned n = nfds < 64 ? nfds : 64;

	memcpy(p, fds, n * sizeof(*p));
	p[n] = (struct pollfd){ .fd = ks->pipe[0], .events = POLLIN };
	if (poll(p, n + 1, timeout_ms) == -1) {
		for (unsigned i = 0; i < n; i++)
			fds[i].revents = 0;
		return -errno;
	}
	for (unsigned i = 0; i < n; i++)
		fds[i].revents = p[i].revents;
	return 0;
}

static void kafka_close(struct upl_sink *s)
{
	struct kafka_sink *ks = (struct kafka_sink *)s;

	if (ks->rk) {
		/* What is still queued is dropped here: it stays in the ring or the spool. */
		rd_kafka_purge(ks->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
		rd_kafka_flush(ks->rk, 1000);
		rd_kafka_poll(ks->rk, 0);
		rd_kafka_topic_destroy(ks->rkt);
		rd_kafka_destroy(ks->rk);
	}
	for (unsigned i = 0; i < KAFKA_INFLIGHT; i++) {
		struct kafka_batch *kb = ks->live[i];

		if (kb) {
			kb->b->sink_priv = NULL;
			upl_batch_abandon(ks->u, kb->b);
			kb_free(kb);
		}
	}
	close(ks->pipe[0]);
	close(ks->pipe[1]);
	free(ks);
}

static int kafka_open(struct upl *u, struct upl_sink **out)
{
	struct kafka_sink *ks = calloc(1, sizeof(*ks));
	int ret;

	if (!ks)
		return -ENOMEM;
	ks->u = u;
	if (pipe2(ks->pipe, O_NONBLOCK | O_CLOEXEC) == -1) {
		ret = -errno;
		goto err_free;
	}
	ret = producer_new(ks);
	if (ret < 0)
		goto err_close_pipe;
	upl_log(UPL_LOG_INFO, "shipping to kafka", "brokers=%s topic=%s compression=%s",
		u->o.dest.kafka_brokers, u->o.dest.kafka_topic,
		upl_compression_name(u->o.compression));
	*out = (struct upl_sink *)ks;
	return 0;

err_close_pipe:
	close(ks->pipe[0]);
	close(ks->pipe[1]);
err_free:
	free(ks);
	return ret;
}

const struct upl_sink_ops upl_sink_kafka = {
	.name = "kafka",
	.open = kafka_open,
	.capacity = kafka_capacity,
	.send = kafka_send,
	.wait = kafka_wait,
	.process = kafka_process,
	.close = kafka_close,
};
