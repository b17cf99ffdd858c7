/* SPDX-License-Identifier: Apache-2.0 */
/* /metrics: per-worker counters summed into the Prometheus text exposition format. */
#include <stdio.h>
#include <stdlib.h>

#include "engine_int.h"

struct metric {
	enum eng_ctr ctr;
	const char *name;
	const char *type;
	const char *help;
	const char *labels; /* extra labels, after listener="..." */
};

static const struct metric metrics[] = {
	{ ENG_CTR_ACCEPTED, "sidetap_connections_accepted_total", "counter",
	  "Connections accepted by the listener.", "" },
	{ ENG_CTR_CLOSED, "sidetap_connections_closed_total", "counter",
	  "Connections closed, whatever the reason (rejected ones included).", "" },
	{ ENG_CTR_REJECTED_LIMIT, "sidetap_connections_rejected_total", "counter",
	  "Connections closed at once because the worker was at --max-connections.",
	  ",reason=\"max_connections\"" },
	{ ENG_CTR_LOOP_GUARD, "sidetap_loop_guard_total", "counter",
	  "Connections closed because their destination was sidetap itself.", "" },
	{ ENG_CTR_ACCEPT_ERRORS, "sidetap_accept_errors_total", "counter",
	  "accept() failures (descriptor or memory exhaustion among them).", "" },
	{ ENG_CTR_CONNECT_ERRORS, "sidetap_connect_errors_total", "counter",
	  "Upstream connects that failed (refused, unreachable, no socket).", "" },
	{ ENG_CTR_CONNECT_TIMEOUTS, "sidetap_connect_timeouts_total", "counter",
	  "Upstream connects that took longer than --connect-timeout.", "" },
	{ ENG_CTR_IDLE_TIMEOUTS, "sidetap_idle_timeouts_total", "counter",
	  "Connections closed after --idle-timeout without traffic.", "" },
	{ ENG_CTR_RESETS, "sidetap_resets_total", "counter",
	  "Connections closed with a reset after an error on either side.", "" },
	{ ENG_CTR_DRAIN_CLOSED, "sidetap_drain_closed_total", "counter",
	  "Connections still open at the drain deadline, closed by it.", "" },
	{ ENG_CTR_BYTES_C2U, "sidetap_bytes_total", "counter", "Bytes forwarded, per direction.",
	  ",direction=\"client_to_upstream\"" },
	{ ENG_CTR_BYTES_U2C, "sidetap_bytes_total", "counter", NULL,
	  ",direction=\"upstream_to_client\"" },
	{ ENG_CTR_SPLICE_BYTES, "sidetap_splice_bytes_total", "counter",
	  "Bytes forwarded on the splice path (both directions).", "" },
	{ ENG_CTR_SPLICE_SWITCHES, "sidetap_splice_switches_total", "counter",
	  "Directions moved from the copy path to the splice path (--forward auto).", "" },
	{ ENG_CTR_NOBUFS, "sidetap_buffer_exhausted_total", "counter",
	  "Receives that found the worker's buffer ring empty.", "" },
	{ ENG_CTR_TLS_UNWRAPPED, "sidetap_tls_unwrapped_total", "counter",
	  "TLS connections terminated (both handshakes done) and captured in plaintext.", "" },
	{ ENG_CTR_TLS_PASSTHROUGH, "sidetap_tls_passthrough_total", "counter",
	  "ClientHellos on an unwrapping listener forwarded as they are (h2 only).", "" },
	{ ENG_CTR_TLS_VERIFY_FAILED, "sidetap_tls_upstream_verify_failures_total", "counter",
	  "Upstream certificates refused (chain or name): the client's handshake failed too.", "" },
	{ ENG_CTR_TLS_FAILED, "sidetap_tls_failures_total", "counter",
	  "Other TLS handshake or record failures.", "" },
	{ ENG_CTR_TLS_TIMEOUTS, "sidetap_tls_handshake_timeouts_total", "counter",
	  "Handshakes that took longer than --tls-handshake-timeout.", "" },
	{ ENG_CTR_TLS_RESUMED, "sidetap_tls_upstream_resumed_total", "counter",
	  "Upstream TLS handshakes that resumed an earlier session with that name.", "" },
	{ ENG_CTR_KTLS_TX, "sidetap_ktls_tx_total", "counter",
	  "Unwrapped connections' sides whose records the kernel encrypts (kTLS, --ktls auto).",
	  "" },
	{ ENG_CTR_KTLS_FALLBACKS, "sidetap_ktls_fallbacks_total", "counter",
	  "Sides that stayed in userspace with --ktls auto (TLS 1.2, cipher, kernel refusal).",
	  "" },
};

static uint64_t sum(struct eng_engine *e, unsigned kind, enum eng_ctr ctr)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < e->nworkers; i++)
		v += atomic_load_explicit(&e->workers[i].stats.ctr[kind][ctr],
					  memory_order_relaxed);
	return v;
}

/* The ring's counters (all workers' rings summed) and the uploader's state. */
static void render_capture(struct eng_engine *e, FILE *f)
{
	struct tap_ring_stats sum = { 0 }, st;
	uint64_t enc = 0, oom = 0;

	for (unsigned i = 0; i < tap_ring_count(e->ring); i++) {
		tap_ring_stats(e->ring, i, &st);
		sum.frames += st.frames;
		sum.bytes += st.bytes;
		sum.dropped_frames += st.dropped_frames;
		sum.dropped_bytes += st.dropped_bytes;
		sum.consumed_frames += st.consumed_frames;
		sum.rejected += st.rejected;
		sum.head += st.head - st.tail; /* bytes waiting for the uploader */
	}
	for (unsigned i = 0; i < e->nworkers; i++) {
		enc += atomic_load_explicit(&e->workers[i].stats.cap_encode_errors,
					    memory_order_relaxed);
		oom += atomic_load_explicit(&e->workers[i].stats.cap_oom, memory_order_relaxed);
	}
	fprintf(f,
		"# HELP sidetap_capture_frames_total Frames written to the capture ring.\n"
		"# TYPE sidetap_capture_frames_total counter\nsidetap_capture_frames_total %lu\n"
		"# HELP sidetap_capture_bytes_total Bytes of frames written to the capture ring.\n"
		"# TYPE sidetap_capture_bytes_total counter\nsidetap_capture_bytes_total %lu\n"
		"# HELP sidetap_capture_dropped_frames_total Frames dropped: the ring was full (or the frame larger than it).\n"
		"# TYPE sidetap_capture_dropped_frames_total counter\nsidetap_capture_dropped_frames_total %lu\n"
		"# HELP sidetap_capture_dropped_bytes_total Bytes of the dropped frames.\n"
		"# TYPE sidetap_capture_dropped_bytes_total counter\nsidetap_capture_dropped_bytes_total %lu\n"
		"# HELP sidetap_capture_consumed_frames_total Frames the uploader has shipped and released.\n"
		"# TYPE sidetap_capture_consumed_frames_total counter\nsidetap_capture_consumed_frames_total %lu\n"
		"# HELP sidetap_capture_rejected_total Records the uploader found corrupt or invalid and did not ship.\n"
		"# TYPE sidetap_capture_rejected_total counter\nsidetap_capture_rejected_total %lu\n"
		"# HELP sidetap_capture_ring_used_bytes Bytes in the ring waiting for the uploader.\n"
		"# TYPE sidetap_capture_ring_used_bytes gauge\nsidetap_capture_ring_used_bytes %lu\n"
		"# HELP sidetap_capture_ring_size_bytes Size of the ring, all workers together.\n"
		"# TYPE sidetap_capture_ring_size_bytes gauge\nsidetap_capture_ring_size_bytes %lu\n"
		"# HELP sidetap_capture_encode_errors_total Frames the encoder refused (dropped).\n"
		"# TYPE sidetap_capture_encode_errors_total counter\nsidetap_capture_encode_errors_total %lu\n"
		"# HELP sidetap_capture_uncaptured_connections_total Connections forwarded but not captured (out of memory).\n"
		"# TYPE sidetap_capture_uncaptured_connections_total counter\nsidetap_capture_uncaptured_connections_total %lu\n"
		"# HELP sidetap_uploader_up 1 while sidetap-uploader runs under sidetap.\n"
		"# TYPE sidetap_uploader_up gauge\nsidetap_uploader_up %d\n"
		"# HELP sidetap_uploader_restarts_total Times sidetap restarted the uploader.\n"
		"# TYPE sidetap_uploader_restarts_total counter\nsidetap_uploader_restarts_total %lu\n",
		(unsigned long)sum.frames, (unsigned long)sum.bytes,
		(unsigned long)sum.dropped_frames, (unsigned long)sum.dropped_bytes,
		(unsigned long)sum.consumed_frames, (unsigned long)sum.rejected,
		(unsigned long)sum.head,
		(unsigned long)(tap_ring_size(e->ring) * tap_ring_count(e->ring)),
		(unsigned long)enc, (unsigned long)oom, atomic_load(&e->uploader_up) ? 1 : 0,
		(unsigned long)atomic_load(&e->uploader_restarts));
}

char *eng__metrics_render(struct eng_engine *e, size_t *len)
{
	uint64_t admin = 0, pipes = 0;
	char *buf = NULL;
	FILE *f;

	f = open_memstream(&buf, len);
	if (!f)
		return NULL;
	for (size_t m = 0; m < sizeof(metrics) / sizeof(metrics[0]); m++) {
		if (metrics[m].help)
			fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", metrics[m].name, metrics[m].help,
				metrics[m].name, metrics[m].type);
		for (unsigned k = 0; k < ENG_LISTENER_KINDS; k++)
			fprintf(f, "%s{listener=\"%s\"%s} %lu\n", metrics[m].name,
				eng_listener_kind_name(k), metrics[m].labels,
				(unsigned long)sum(e, k, metrics[m].ctr));
	}
	fprintf(f, "# HELP sidetap_connections_active Connections open now.\n"
		   "# TYPE sidetap_connections_active gauge\n");
	for (unsigned k = 0; k < ENG_LISTENER_KINDS; k++) {
		/* Counters are read one after the other: clamp a momentary negative. */
		uint64_t acc = sum(e, k, ENG_CTR_ACCEPTED), closed = sum(e, k, ENG_CTR_CLOSED);

		fprintf(f, "sidetap_connections_active{listener=\"%s\"} %lu\n",
			eng_listener_kind_name(k),
			(unsigned long)(acc > closed ? acc - closed : 0));
	}
	for (unsigned i = 0; i < e->nworkers; i++) {
		admin += atomic_load_explicit(&e->workers[i].stats.admin_requests,
					      memory_order_relaxed);
		pipes += atomic_load_explicit(&e->workers[i].stats.pipes, memory_order_relaxed);
	}
	fprintf(f,
		"# HELP sidetap_pipes Pipes held for the splice path (pooled and in use).\n"
		"# TYPE sidetap_pipes gauge\nsidetap_pipes %lu\n"
		"# HELP sidetap_admin_requests_total Requests served by the admin endpoint.\n"
		"# TYPE sidetap_admin_requests_total counter\nsidetap_admin_requests_total %lu\n"
		"# HELP sidetap_workers Worker threads, each with its own io_uring.\n"
		"# TYPE sidetap_workers gauge\nsidetap_workers %u\n"
		"# HELP sidetap_ready 1 while /readyz answers 200.\n"
		"# TYPE sidetap_ready gauge\nsidetap_ready %d\n"
		"# HELP sidetap_ktls_supported 1 when the kernel accepts the tls ULP (kTLS).\n"
		"# TYPE sidetap_ktls_supported gauge\nsidetap_ktls_supported %d\n"
		"# HELP sidetap_uptime_seconds Seconds since start.\n"
		"# TYPE sidetap_uptime_seconds gauge\nsidetap_uptime_seconds %lu\n"
		"# HELP sidetap_build_info Version and I/O backend.\n"
		"# TYPE sidetap_build_info gauge\n"
		"sidetap_build_info{version=\"%s\",backend=\"io_uring\",forward=\"%s\"} 1\n",
		(unsigned long)pipes, (unsigned long)admin, e->nworkers,
		atomic_load(&e->ready) && atomic_load(&e->phase) == ENG_PHASE_RUN, e->ktls == 1,
		(unsigned long)((eng_now_ms() - e->start_ms) / 1000), SIDETAP_VERSION,
		eng_forward_name(e->cfg->forward));
	if (e->ring)
		render_capture(e, f);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}
