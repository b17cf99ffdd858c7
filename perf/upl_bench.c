/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers of perf/uploader_bench.sh, which measures what sidetap-uploader ships:
 *   upl_bench fill RING RINGS FRAMES BYTES   a new ring with FRAMES tcp frames of BYTES
 *                                            payload in each of RINGS rings
 *   upl_bench kafka-mock                     librdkafka's mock cluster (3 brokers, topic
 *                                            "frames", 4 partitions): prints its bootstrap
 *                                            servers, runs until stdin closes
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap/frame.h"
#include "tap/ring.h"

static int fill(const char *path, unsigned rings, unsigned long frames, size_t bytes)
{
	uint64_t size = TAP_RING_SIZE_MIN;
	struct tap_ring *r;
	char *data = malloc(bytes);
	int ret;

	if (!data)
		return 1;
	memset(data, 'x', bytes);
	/* Room for every frame: the payload, the frame's keys, the record header. */
	while (size < frames * (bytes + 256) * 2)
		size *= 2;
	ret = tap_ring_create(path, rings, size, 0x5eed, &r);
	if (ret < 0) {
		fprintf(stderr, "upl_bench: cannot create the ring %s: %s\n", path, strerror(-ret));
		return 1;
	}
	for (unsigned i = 0; i < rings; i++) {
		for (unsigned long s = 1; s <= frames; s++) {
			struct tap_frame f = {
				.type = TAP_FRAME_TCP,
				.gen = 0x5eed,
				.worker = i,
				.seq = s,
				.conn_id = s / 10,
				.ts_ns = 1700000000000000000ull + s,
				.client = { "10.0.0.1:40000", 14 },
				.dst = { "10.0.0.2:8080", 13 },
				.upstream = { "10.0.0.2:8080", 13 },
				.tcp = { .dir = TAP_C2U,
					 .off = s * bytes,
					 .data = { data, (uint32_t)bytes } },
			};
			size_t max = tap_frame_encoded_max(&f);
			void *p = tap_ring_reserve(r, i, max);
			ssize_t n;

			if (!p) {
				fprintf(stderr, "upl_bench: the ring is full at frame %lu\n", s);
				return 1;
			}
			n = tap_frame_encode(&f, p, max);
			tap_ring_commit(r, i, n > 0 ? (size_t)n : 0);
		}
	}
	tap_ring_close(r, true);
	free(data);
	return 0;
}

static int kafka_mock(void)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_mock_cluster_t *mc;
	char err[256], buf[64];
	rd_kafka_t *rk;

	rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	if (!rk) {
		fprintf(stderr, "upl_bench: %s\n", err);
		return 1;
	}
	mc = rd_kafka_mock_cluster_new(rk, 3);
	if (!mc || rd_kafka_mock_topic_create(mc, "frames", 4, 3) != 0) {
		fprintf(stderr, "upl_bench: cannot start the mock cluster\n");
		return 1;
	}
	printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
	fflush(stdout);
	while (read(STDIN_FILENO, buf, sizeof(buf)) > 0) {
	}
	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(rk);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 6 && strcmp(argv[1], "fill") == 0)
		return fill(argv[2], (unsigned)atoi(argv[3]), strtoul(argv[4], NULL, 10),
			    strtoul(argv[5], NULL, 10));
	if (argc == 2 && strcmp(argv[1], "kafka-mock") == 0)
		return kafka_mock();
	fprintf(stderr, "usage: upl_bench fill RING RINGS FRAMES BYTES | upl_bench kafka-mock\n");
	return 2;
}
