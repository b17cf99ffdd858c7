/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration tests of sidetap-uploader's Kafka sink against librdkafka's
 * mock cluster (the real Kafka protocol on loopback listeners, run in this
 * process): frames from a ring the test fills, read back by a librdkafka
 * consumer, keys checked against the frame ids; broker errors injected
 * through the mock API cause retries, never losses.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap/frame.h"
#include "tap/ring.h"
#include "th.h"

#define TOPIC "frames"
/* Kafka's ApiKey of Produce requests (librdkafka's RD_KAFKAP_Produce, in a header it does not install). */
#define API_PRODUCE 0
#define PARTITIONS 4

static char dir[200], ring_path[300], spool_arg[320], spool_dir[300], sink_arg[600];
static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mc;

static void setup(void)
{
	static unsigned n;
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char err[256];

	snprintf(dir, sizeof(dir), "%s/kafka-%d-%u", th_tmpdir(), (int)getpid(), n++);
	cr_assert_eq(mkdir(dir, 0755), 0);
	snprintf(ring_path, sizeof(ring_path), "%s/ring", dir);
	snprintf(spool_dir, sizeof(spool_dir), "%s/spool", dir);
	snprintf(spool_arg, sizeof(spool_arg), "--spool-dir=%s", spool_dir);
	/* The mock cluster lives in a client handle of its own; it needs no brokers. */
	rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
	mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	cr_assert_not_null(mock_rk, "%s", err);
	mc = rd_kafka_mock_cluster_new(mock_rk, 3);
	cr_assert_not_null(mc);
	cr_assert_eq(rd_kafka_mock_topic_create(mc, TOPIC, PARTITIONS, 3), 0);
	snprintf(sink_arg, sizeof(sink_arg), "--sink=kafka://%s/" TOPIC,
		 rd_kafka_mock_cluster_bootstraps(mc));
}

static void teardown(void)
{
	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(mock_rk);
}

TestSuite(kafka, .init = setup, .fini = teardown, .timeout = 60);

/* Writes a tcp frame with seq <seq> into ring <idx>, its <pad> bytes of data naming it. */
static void produce(struct tap_ring *r, unsigned idx, uint64_t seq, size_t pad)
{
	static char data[4096];
	int n;

	memset(data, 'x', sizeof(data));
	n = snprintf(data, sizeof(data), "frame %u/%lu", idx, (unsigned long)seq);
	data[n] = 'x';
	cr_assert_eq(th_ring_put_tcp(r, idx, seq, 1700000000000000000ull + seq, data,
				     pad < sizeof(data) ? pad : sizeof(data)),
		     0);
}

static void fill(struct tap_ring *r, unsigned per_ring)
{
	for (unsigned i = 0; i < tap_ring_count(r); i++)
		for (unsigned s = 1; s <= per_ring; s++)
			produce(r, i, s, 100);
}

static void start_uploader(struct th_proc *p, const char *const extra[])
{
	char *argv[32] = {
		UPLOADER_BIN, "--ring", ring_path, sink_arg, spool_arg, "--batch-ms=20"
	};
	unsigned n = 6;

	for (unsigned i = 0; extra[i]; i++)
		argv[n++] = (char *)extra[i];
	argv[n] = NULL;
	cr_assert_eq(th_spawn(p, argv, NULL), 0);
}

static int run_uploader(const char *const extra[], char **log)
{
	struct th_proc p;
	int ret;

	start_uploader(&p, extra);
	ret = th_proc_wait(&p, 40000);
	if (ret == -ETIMEDOUT)
		th_proc_stop(&p, 9, 1000);
	*log = th_proc_log(&p);
	return ret;
}

/* A counter from the uploader's last "stopped" line, e.g. "retried". */
static long stopped_field(const char *log, const char *key)
{
	const char *at = strstr(log, "msg=\"stopped\"");
	char want[64];

	cr_assert_not_null(at, "no stopped line in:\n%s", log);
	snprintf(want, sizeof(want), " %s=", key);
	at = strstr(at, want);
	cr_assert_not_null(at, "no %s in the stopped line", key);
	return strtol(at + strlen(want), NULL, 10);
}

struct seen {
	unsigned n; /* messages read */
	unsigned unique;
	bool *got; /* [ring * per_ring + seq - 1] */
	unsigned rings, per_ring;
};

/*
 * Reads the topic from the start until every partition is at its end or the
 * time is up, checking that each key is the id of the frame in its value.
 */
static void consume(struct seen *s, int timeout_ms)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
	struct tap_decoder *dec = tap_decoder_new();
	uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
	unsigned eof = 0;
	char err[256];
	rd_kafka_t *c;

	rd_kafka_conf_set(conf, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mc), err,
			  sizeof(err));
	rd_kafka_conf_set(conf, "group.id", "sidetap-test", err, sizeof(err));
	rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err));
	rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
	c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
	cr_assert_not_null(c, "%s", err);
	for (int i = 0; i < PARTITIONS; i++)
		rd_kafka_topic_partition_list_add(parts, TOPIC, i)->offset =
			RD_KAFKA_OFFSET_BEGINNING;
	cr_assert_eq(rd_kafka_assign(c, parts), 0);
	while (eof < PARTITIONS && th_now_ms() < end) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
		char id[TAP_FRAME_ID_LEN];
		struct tap_frame f;
		const char *why = NULL;
		size_t used;

		if (!m)
			continue;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			eof++;
			rd_kafka_message_destroy(m);
			continue;
		}
		cr_assert_eq(m->err, 0, "%s", rd_kafka_message_errstr(m));
		cr_assert_eq(tap_frame_decode(dec, m->payload, m->len, &used, &f, &why), 0, "%s",
			     why);
		cr_assert_eq(used, m->len, "one frame per message");
		tap_frame_id(&f, id, sizeof(id));
		cr_assert_eq(m->key_len, strlen(id));
		cr_assert(memcmp(m->key, id, m->key_len) == 0, "key is not the frame id %s", id);
		cr_assert_lt(f.worker, s->rings);
		cr_assert(f.seq >= 1 && f.seq <= s->per_ring);
		s->n++;
		if (!s->got[f.worker * s->per_ring + f.seq - 1])
			s->unique++;
		s->got[f.worker * s->per_ring + f.seq - 1] = true;
		rd_kafka_message_destroy(m);
	}
	rd_kafka_topic_partition_list_destroy(parts);
	rd_kafka_consumer_close(c);
	rd_kafka_destroy(c);
	tap_decoder_free(dec);
}

static void seen_init(struct seen *s, unsigned rings, unsigned per_ring)
{
	memset(s, 0, sizeof(*s));
	s->rings = rings;
	s->per_ring = per_ring;
	s->got = calloc(rings * per_ring, sizeof(bool));
}

Test(kafka, ships_every_frame_as_a_message_keyed_by_its_id)
{
	struct tap_ring_stats st;
	struct tap_ring *r;
	struct seen s;
	char *log;

	cr_assert_eq(tap_ring_create(ring_path, 2, 1 << 20, 0xabc, &r), 0);
	fill(r, 500);
	cr_assert_eq(
		run_uploader((const char *const[]){ "--once", "--batch-frames=100", NULL }, &log),
		0, "%s", log);
	cr_assert_eq(stopped_field(log, "frames"), 1000, "%s", log);
	free(log);
	for (unsigned i = 0; i < 2; i++) {
		tap_ring_stats(r, i, &st);
		cr_assert_eq(st.tail, st.head, "ring %u released once delivered", i);
		cr_assert_eq(st.consumed_frames, 500);
	}
	seen_init(&s, 2, 500);
	consume(&s, 20000);
	cr_assert_eq(s.unique, 1000, "every frame in the topic");
	cr_assert_eq(s.n, 1000, "and once: the idempotent producer does not duplicate");
	free(s.got);
	tap_ring_close(r, true);
}

Test(kafka, broker_errors_and_an_outage_cause_retries_not_loss)
{
	struct tap_ring *r;
	struct th_proc p;
	struct seen s;
	char *log;

	cr_assert_eq(tap_ring_create(ring_path, 2, 1 << 20, 0xdef, &r), 0);
	fill(r, 300);
	/* Errors librdkafka retries by itself (within --sink-timeout). */
	rd_kafka_mock_push_request_errors(
		mc, API_PRODUCE, 6, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
		RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
		RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
		RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
	/* A partition without a leader, and every broker down: delivery reports fail, we retry. */
	rd_kafka_mock_partition_set_leader(mc, TOPIC, 1, -1);
	for (int b = 1; b <= 3; b++)
		rd_kafka_mock_broker_set_down(mc, b);
	/* librdkafka's own reconnect back-off (up to 10 s by default) would make the test slow. */
	start_uploader(&p, (const char *const[]){ "--sink-timeout=500", "--batch-frames=50",
						  "--kafka-prop=reconnect.backoff.max.ms=200",
						  "--admin-addr=127.0.0.1:0", NULL });
	cr_assert(th_proc_log_wait(&p, "retrying", 15000), "no retry while the brokers are down");
	for (int b = 1; b <= 3; b++)
		rd_kafka_mock_broker_set_up(mc, b);
	rd_kafka_mock_partition_set_leader(mc, TOPIC, 1, 1);
	seen_init(&s, 2, 300);
	for (uint64_t end = th_now_ms() + 30000; s.unique < 600 && th_now_ms() < end;) {
		free(s.got);
		seen_init(&s, 2, 300);
		consume(&s, 5000);
	}
	cr_assert_eq(th_proc_stop(&p, SIGTERM, 20000), 0);
	log = th_proc_log(&p);
	cr_assert_eq(s.unique, 600, "frames lost: %u of 600 arrived\n%s", s.unique, log);
	cr_assert_geq(s.n, 600, "duplicates are allowed");
	cr_assert_gt(stopped_field(log, "retried"), 0, "%s", log);
	cr_assert_eq(stopped_field(log, "spool_files"), 0, "the spool was emptied");
	free(log);
	free(s.got);
	tap_ring_close(r, true);
}

/* Frames the uploaders released from <r> so far (delivered). */
static uint64_t released(struct tap_ring *r)
{
	struct tap_ring_stats st;
	uint64_t n = 0;

	for (unsigned i = 0; i < tap_ring_count(r); i++) {
		tap_ring_stats(r, i, &st);
		n += st.consumed_frames;
	}
	return n;
}

/* TESTPLAN D1 with the Kafka sink: SIGKILL mid-stream, restart; every frame arrives. */
Test(kafka, an_uploader_killed_at_random_moments_loses_no_frame)
{
	struct tap_ring_stats st;
	struct tap_ring *r;
	struct th_proc p;
	struct seen s;
	unsigned kills = 0;
	char *log;

	cr_assert_eq(tap_ring_create(ring_path, 2, 4 << 20, 0x5eed, &r), 0);
	fill(r, 6000);
	/* Slow brokers keep batches in flight when the kill comes. */
	for (int b = 1; b <= 3; b++)
		rd_kafka_mock_broker_set_rtt(mc, b, 40);
	srandom((unsigned)getpid());
	while (kills < 6 && released(r) < 12000) {
		uint64_t before = released(r), end = th_now_ms() + 10000;

		start_uploader(&p, (const char *const[]){ "--batch-frames=100", NULL });
		/* Once it delivers, a random moment later: batches are in flight then. */
		while (released(r) == before && th_now_ms() < end)
			usleep(5000);
		usleep((useconds_t)(random() % 150) * 1000);
		cr_assert_eq(kill(p.pid, SIGKILL), 0);
		th_proc_wait(&p, 5000);
		kills++;
	}
	cr_assert_gt(kills, 1, "the ring was shipped before a second kill");
	for (int b = 1; b <= 3; b++)
		rd_kafka_mock_broker_set_rtt(mc, b, 0);
	/* The next uploader ships what the killed ones did not release, spool first. */
	cr_assert_eq(run_uploader((const char *const[]){ "--once", NULL }, &log), 0, "%s", log);
	free(log);
	for (unsigned i = 0; i < 2; i++) {
		tap_ring_stats(r, i, &st);
		cr_assert_eq(st.tail, st.head, "ring %u drained", i);
	}
	seen_init(&s, 2, 6000);
	consume(&s, 30000);
	cr_assert_eq(s.unique, 12000, "frames lost after %u kills: %u of 12000 arrived", kills,
		     s.unique);
	cr_assert_geq(s.n, 12000, "duplicates are allowed");
	free(s.got);
	tap_ring_close(r, true);
}

Test(kafka, compression_and_extra_properties_are_used)
{
	struct tap_ring *r;
	struct seen s;
	char *log;

	cr_assert_eq(tap_ring_create(ring_path, 1, 1 << 20, 0x77, &r), 0);
	fill(r, 200);
	cr_assert_eq(run_uploader((const char *const[]){ "--once", "--sink-compression=zstd",
							 "--kafka-prop=linger.ms=1", "--kafka-prop",
							 "batch.num.messages=7",
							 "--log-level=debug", NULL },
				  &log),
		     0, "%s", log);
	cr_assert(strstr(log, "compression=zstd"), "%s", log);
	free(log);
	seen_init(&s, 1, 200);
	consume(&s, 20000);
	cr_assert_eq(s.unique, 200);
	free(s.got);
	tap_ring_close(r, true);
}

Test(kafka, a_frame_too_large_is_set_aside_the_rest_delivered)
{
	struct tap_ring *r;
	struct seen s;
	struct dirent *de;
	char rejected[400], *log;
	unsigned files = 0;
	DIR *d;

	cr_assert_eq(tap_ring_create(ring_path, 1, 1 << 20, 0x88, &r), 0);
	for (unsigned seq = 1; seq <= 20; seq++)
		produce(r, 0, seq, seq == 7 ? 4000 : 100);
	/* The client refuses what is over message.max.bytes: no retry can fix that. */
	cr_assert_eq(
		run_uploader((const char *const[]){ "--once", "--kafka-prop=message.max.bytes=2000",
						    NULL },
			     &log),
		0, "%s", log);
	cr_assert(strstr(log, "kafka refused frames, setting them aside") ||
			  strstr(log, "the sink refused a batch, setting it aside"),
		  "%s", log);
	cr_assert_eq(stopped_field(log, "retried"), 0, "%s", log);
	free(log);
	seen_init(&s, 1, 20);
	consume(&s, 20000);
	cr_assert_eq(s.unique, 19);
	cr_assert_not(s.got[6], "the large frame is not in the topic");
	snprintf(rejected, sizeof(rejected), "%s/rejected", spool_dir);
	d = opendir(rejected);
	cr_assert_not_null(d, "no %s", rejected);
	while ((de = readdir(d)))
		files += strncmp(de->d_name, "rejected-", 9) == 0;
	closedir(d);
	cr_assert_eq(files, 1, "the refused frame kept aside");
	free(s.got);
	tap_ring_close(r, true);
}

Test(kafka, bad_kafka_arguments_exit_2_naming_the_problem)
{
	char *argv_bad_url[] = {
		UPLOADER_BIN, "--ring", ring_path, "--sink", "kafka://b:9092", NULL
	};
	char *argv_bad_prop[] = {
		UPLOADER_BIN, "--ring", ring_path, sink_arg, "--kafka-prop=no.such.property=1", NULL
	};
	char *argv_http_prop[] = {
		UPLOADER_BIN, "--ring", ring_path, "--sink=http://c:1/f", "--kafka-prop=acks=all",
		NULL
	};
	char *const *cases[] = { argv_bad_url, argv_bad_prop, argv_http_prop };
	const char *want[] = { "kafka://BROKER[,BROKER...]/TOPIC", "no.such.property",
			       "--kafka-prop is only used with a kafka:// sink" };

	for (unsigned i = 0; i < 3; i++) {
		struct th_proc p;
		char *log;

		cr_assert_eq(th_spawn(&p, cases[i], NULL), 0);
		cr_assert_eq(th_proc_wait(&p, 10000), 2);
		log = th_proc_log(&p);
		cr_assert(strstr(log, want[i]), "%s", log);
		free(log);
	}
}
