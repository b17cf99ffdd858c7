/* SPDX-License-Identifier: Apache-2.0 */
/* Engine internals shared by the engine's source files: workers, listeners, connections. */
#ifndef ENG_ENGINE_INT_H
#define ENG_ENGINE_INT_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "eng/config.h"
#include "eng/engine.h"
#include "eng/log.h"
#include "list.h"
#include "tap/conn.h"
#include "tap/frame.h"
#include "tap/ring.h"
#include "tap/tls_hello.h"
#include "tlx/tls.h"

/*
 * Provided-buffer ring of each worker: what the copy path receives into. It
 * starts with one chunk of buffers and grows by a chunk each time it runs dry,
 * up to ENG_BUF_MAX buffers (64 MiB), so that a few slow readers holding
 * buffers cannot starve every other connection of the worker.
 */
#define ENG_BUF_SIZE 16384
#define ENG_BUF_CHUNK 256 /* buffers per chunk */
#define ENG_BUF_MAX 4096 /* ring entries: a power of two, a multiple of the chunk */
#define ENG_BUF_GROUP 0
/* Buffers one direction may hold queued for send before its recv is paused. */
#define ENG_DIR_HIWAT 4
/* Splice rounds (a pipe's worth each) one direction runs before it yields. */
#define ENG_SPLICE_ROUNDS 16
/* Pipes one worker keeps for the splice path (each is two descriptors). */
#define ENG_PIPES_MAX 256
/* Admin connections served at once, and how long one may take. */
#define ENG_ADMIN_CONNS_MAX 32
#define ENG_ADMIN_TIMEOUT_MS 5000

/*
 * user_data of every SQE: bits 63..56 the operation, bits 55..48 an argument
 * (the direction), bits 47..0 the object the completion belongs to. User-space
 * pointers fit in 48 bits on x86_64 and arm64 (4-level and default 5-level).
 */
enum eng_op {
	ENG_OP_NONE = 0, /* fire and forget: completions ignored */
	ENG_OP_ACCEPT, /* struct eng_listener */
	ENG_OP_ACCEPT_RETRY, /* struct eng_listener: back-off timer after EMFILE */
	ENG_OP_TICK, /* struct eng_worker: periodic timer */
	ENG_OP_WAKE, /* struct eng_worker: eventfd read */
	ENG_OP_CONNECT, /* struct eng_conn */
	ENG_OP_CONNECT_TIMEOUT, /* struct eng_conn: timeout linked to the connect */
	ENG_OP_RECV, /* struct eng_conn, arg: direction */
	ENG_OP_SEND, /* struct eng_conn, arg: direction */
	ENG_OP_POLL_IN, /* struct eng_conn, arg: direction (its source) */
	ENG_OP_POLL_OUT, /* struct eng_conn, arg: direction (its destination) */
	ENG_OP_CANCEL, /* struct eng_conn */
	ENG_OP_TLS_SNIFF, /* struct eng_conn: recv of the client's first bytes */
	ENG_OP_TLS_SEND, /* struct eng_conn, arg: 0 to the client, 1 to the upstream */
	ENG_OP_ADMIN_ACCEPT, /* struct eng_admin */
	ENG_OP_ADMIN_RECV, /* struct eng_admin_conn */
	ENG_OP_ADMIN_SEND, /* struct eng_admin_conn */
};

static inline uint64_t eng__ud(enum eng_op op, const void *obj, unsigned arg)
{
	return (uint64_t)(uintptr_t)obj | (uint64_t)op << 56 | (uint64_t)(arg & 0xff) << 48;
}

static inline enum eng_op eng__ud_op(uint64_t ud)
{
	return (enum eng_op)(ud >> 56);
}

static inline unsigned eng__ud_arg(uint64_t ud)
{
	return (unsigned)(ud >> 48) & 0xff;
}

static inline void *eng__ud_obj(uint64_t ud)
{
	return (void *)(uintptr_t)(ud & ((1ULL << 48) - 1));
}

/* Counters per worker and listener kind; only the owning worker writes them. */
enum eng_ctr {
	ENG_CTR_ACCEPTED,
	ENG_CTR_CLOSED,
	ENG_CTR_REJECTED_LIMIT,
	ENG_CTR_LOOP_GUARD,
	ENG_CTR_ACCEPT_ERRORS,
	ENG_CTR_CONNECT_ERRORS,
	ENG_CTR_CONNECT_TIMEOUTS,
	ENG_CTR_IDLE_TIMEOUTS,
	ENG_CTR_RESETS,
	ENG_CTR_DRAIN_CLOSED,
	ENG_CTR_BYTES_C2U,
	ENG_CTR_BYTES_U2C,
	ENG_CTR_SPLICE_BYTES,
	ENG_CTR_SPLICE_SWITCHES,
	ENG_CTR_NOBUFS,
	ENG_CTR_TLS_UNWRAPPED, /* connections whose TLS was terminated and captured */
	ENG_CTR_TLS_PASSTHROUGH, /* ClientHellos not ours to unwrap (h2 only) */
	ENG_CTR_TLS_VERIFY_FAILED, /* upstream certificates refused */
	ENG_CTR_TLS_FAILED, /* other handshake or record failures */
	ENG_CTR_TLS_TIMEOUTS, /* handshakes past --tls-handshake-timeout */
	ENG_CTR_TLS_RESUMED, /* upstream handshakes that resumed an earlier session */
	ENG_CTR_KTLS_TX, /* sides whose records the kernel encrypts (--ktls auto) */
	ENG_CTR_KTLS_FALLBACKS, /* sides that stayed in userspace although kTLS was on */
	ENG_CTR_COUNT,
};

struct eng_stats {
	_Atomic uint64_t ctr[ENG_LISTENER_KINDS][ENG_CTR_COUNT];
	_Atomic uint64_t admin_requests;
	_Atomic uint64_t pipes; /* pipes held (pool and in use) */
	_Atomic uint64_t cap_encode_errors; /* frames the encoder refused */
	_Atomic uint64_t cap_oom; /* connections not captured for lack of memory */
};

/*
 * Single writer: a relaxed load and store, no locked instruction. Readers on
 * other threads (the admin endpoint) see a value that is at most a little late.
 */
static inline void eng__stat_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

enum eng_dir_idx {
	ENG_C2U = 0, /* client -> upstream: source fd[ENG_C2U] is the client */
	ENG_U2C = 1, /* upstream -> client: source fd[ENG_U2C] is the upstream */
};

/* Per-direction flags. */
#define ENG_DIR_F_RECV (1u << 0) /* multishot recv in flight on the source */
#define ENG_DIR_F_RECV_CANCEL (1u << 1) /* ... and a cancel for it submitted */
#define ENG_DIR_F_SEND (1u << 2) /* send in flight to the destination */
#define ENG_DIR_F_EOF (1u << 3) /* the source reached EOF */
#define ENG_DIR_F_DONE (1u << 4) /* destination shut down for writing */
#define ENG_DIR_F_POLL_IN (1u << 5) /* splice path: poll on the source */
#define ENG_DIR_F_POLL_OUT (1u << 6) /* splice path: poll on the destination */
#define ENG_DIR_F_SPLICE (1u << 7) /* forwarding by splice (else copy) */
#define ENG_DIR_F_TO_SPLICE (1u << 8) /* auto: move to splice once the queue is empty */
#define ENG_DIR_F_NOBUF (1u << 9) /* recv stopped for lack of buffers: on the worker's list */

struct eng_pipe {
	int fd[2]; /* [0] read end, [1] write end */
	struct eng_pipe *next;
};

struct eng_dir {
	uint64_t bytes; /* forwarded to the destination */
	struct eng_pipe *pipe; /* splice path, only while bytes sit in it */
	uint32_t pipe_bytes; /* bytes in <pipe> */
	uint32_t send_off; /* bytes of the head buffer already sent */
	uint16_t qhead, qtail; /* buffer ids queued for send, linked by eng_worker.buf_next */
	uint16_t nq; /* queued buffers */
	uint16_t flags; /* ENG_DIR_F_* */
};

/* Capture state of one connection (--capture on), allocated with it. */
struct eng_cap {
	struct tap_conn *tap;
	uint64_t open_ts_ns;
	uint64_t budget[2]; /* splice path: bytes a direction may still move uncaptured */
	uint64_t skipped[2]; /* ... moved so far, not yet told to capture */
	/*
	 * Every frame carries the client's address, the original destination (or
	 * the listener's, in reverse mode) and the upstream's, as text: formatted
	 * once, here, back to back with their lengths.
	 */
	uint8_t addr_len[3];
	char addrs[];
};

/*
 * TLS unwrapping of one connection (a listener with --tls-out unwrap or
 * --tls-in-cert):
 *
 *   SNIFF --not TLS, h2 only, server spoke first--> PLAIN (held bytes sent, then the copy path)
 *     |
 *     +--ClientHello--> UPSTREAM (our handshake with the upstream, verified)
 *                          --ok--> CLIENT (the client's, with a leaf for its name) --ok--> OPEN
 *   (inbound with a plaintext app goes from SNIFF straight to CLIENT)
 *   A failed or timed-out handshake closes the connection; the client never
 *   gets a certificate for an upstream that failed its check.
 */
enum eng_tls_state {
	ENG_TLS_SNIFF = 1,
	ENG_TLS_PLAIN,
	ENG_TLS_UPSTREAM,
	ENG_TLS_CLIENT,
	ENG_TLS_OPEN,
};

/*
 * Bytes waiting to go to one socket (ciphertext, or plaintext to a plain
 * upstream): buf[cur] is being sent and never moves while a send is in
 * flight; new bytes go to buf[!cur], which becomes the one sent next.
 */
struct eng_tls_buf {
	uint8_t *buf[2];
	uint32_t len[2], cap[2];
	uint32_t off; /* of buf[cur], sent */
	uint8_t cur;
	bool busy; /* a send in flight */
	bool shut; /* close_notify queued: SHUT_WR once the buffer is out */
	bool done; /* SHUT_WR sent */
	bool ktls; /* the kernel encrypts what is sent: the buffer holds plaintext */
	bool ktls_wait; /* kTLS once what the handshake queued is sent */
};

struct eng_tls {
	struct eng_conn *conn;
	struct eng_list hs; /* worker's list of handshakes in progress, by deadline */
	uint64_t deadline_ms;
	struct tlx_session
		*s[2]; /* [0] facing the client (server side), [1] the upstream (or NULL) */
	struct eng_tls_buf out[2]; /* [0] to the client, [1] to the upstream */
	bool eof[2]; /* that side ended its stream (close_notify or FIN) */
	uint8_t state; /* enum eng_tls_state */
	uint8_t *held; /* the client's first bytes, while sniffed */
	uint32_t held_len, held_cap;
	struct tap_tls_hello hello;
	char name[256]; /* SNI, or the destination's IP: what the leaf and the check are for */
	char verify[128]; /* the upstream check's outcome */
};

enum eng_conn_state {
	ENG_CONN_CONNECTING = 0,
	ENG_CONN_FORWARDING,
	ENG_CONN_CLOSING,
};

/*
 * A proxied connection: the accepted client socket and the upstream socket.
 *
 *   CONNECTING --connect ok--> FORWARDING --both directions DONE--> CLOSING
 *        |                        |  error, reset, idle timeout, drain    |
 *        +--refused, timeout------+----------------------------------> CLOSING
 *   CLOSING: in-flight requests are cancelled; the memory is freed by the
 *   completion that brings <inflight> to zero (never earlier).
 *
 * Each direction, in FORWARDING, on the copy path: a multishot recv on its
 * source fills provided buffers that queue for one send at a time to its
 * destination; ENG_DIR_HIWAT queued buffers cancel the recv, an empty queue
 * re-arms it. With --forward auto, a full buffer read after splice_threshold
 * bytes cancels the recv and, once the queue is empty, moves the direction to
 * the splice path: poll(source, IN) -> splice(source -> pipe) ->
 * splice(pipe -> destination), poll(destination, OUT) when it is full. EOF
 * from the source, once all is forwarded, is passed on as shutdown(SHUT_WR):
 * the direction is DONE while the other one keeps flowing.
 */
struct eng_conn {
	struct eng_list link; /* worker's LRU idle list, or its free list */
	struct eng_list nobuf; /* worker's list of directions waiting for buffers */
	struct eng_worker *w;
	uint64_t id;
	uint64_t active_ms; /* last time a byte moved */
	int fd[2]; /* [ENG_C2U] client, [ENG_U2C] upstream */
	uint16_t inflight; /* submitted requests whose final completion is pending */
	uint8_t state; /* enum eng_conn_state */
	uint8_t kind; /* enum eng_listener_kind */
	struct eng_dir dir[2];
	struct eng_addr dst; /* upstream address */
	struct eng_cap *cap; /* NULL when not captured */
	struct eng_tls *tls; /* NULL unless the listener unwraps TLS */
	uint16_t own_port; /* local port of the upstream socket, in eng_engine.own_ports */
	uint32_t own_tag;
	int connect_err; /* connect(2) failed at once: the poll that follows reports it */
};

struct eng_listener {
	struct eng_worker *w;
	int fd;
	uint8_t kind; /* enum eng_listener_kind */
	sa_family_t family;
	const struct eng_addr *addr; /* bound address (engine's laddr) */
	bool armed; /* multishot accept in flight */
	bool backoff; /* waiting on the retry timer */
	unsigned backoff_ms;
	struct __kernel_timespec backoff_ts;
};

struct eng_admin;

struct eng_worker {
	struct eng_engine *eng;
	const struct eng_config *cfg;
	unsigned idx;
	pthread_t thread;
	struct io_uring ring;
	bool ring_ok;

	/* provided buffers */
	struct io_uring_buf_ring *br;
	uint8_t *buf_chunk[ENG_BUF_MAX / ENG_BUF_CHUNK];
	unsigned nbufs; /* buffers allocated, in chunks */
	uint16_t buf_next[ENG_BUF_MAX]; /* queue links, by buffer id */
	uint32_t buf_len[ENG_BUF_MAX]; /* bytes received into each buffer */
	unsigned br_pending; /* buffers added since the last advance */

	struct eng_pipe *pipe_free;
	unsigned npipes;

	struct eng_list conns; /* LRU: least recently active first */
	struct eng_list conn_free;
	unsigned nfree;
	struct eng_list nobuf;
	struct eng_list tls_hs; /* TLS handshakes in progress, oldest first */
	unsigned nconns;
	uint64_t next_conn_id;

	struct eng_listener *listeners;
	unsigned nlisteners;
	unsigned listeners_armed; /* accepts or retry timers in flight */
	struct eng_admin *admin; /* worker 0 only */

	int wake_fd;
	uint64_t wake_val;
	bool wake_armed;
	bool tick_armed;
	struct __kernel_timespec tick_ts;
	struct __kernel_timespec connect_ts;

	uint64_t now_ms;
	uint64_t now_ns; /* CLOCK_REALTIME at the start of this loop turn: capture timestamps */
	uint64_t cap_seq; /* frames produced by this worker */
	int phase; /* the engine phase this worker has acted on */
	uint64_t drain_deadline_ms;

	struct eng_ratelimit rl_accept, rl_conn;
	struct eng_stats stats;
	int err; /* why the worker stopped, 0 when cleanly */
};

enum eng_phase {
	ENG_PHASE_RUN = 0,
	ENG_PHASE_DRAIN,
	ENG_PHASE_FORCE,
};

struct eng_engine {
	const struct eng_config *cfg;
	unsigned nworkers;
	struct eng_worker *workers;
	struct eng_addr laddr[ENG_LISTENER_KINDS][ENG_LISTEN_ADDRS_MAX]; /* bound addresses */
	struct eng_addr admin_addr;
	int admin_fd;
	int ktls; /* tlx_ktls_probe() result */
	/*
	 * Our upstream sockets by local port: a tag of their local address and
	 * destination (0: none). A transparent accept whose peer is one of them,
	 * for the same destination, is our own connect redirected back to us:
	 * the loop an iptables rule without sidetap's UID exclusion makes.
	 */
	_Atomic uint32_t *own_ports;
	uint64_t start_ms;
	struct tlx_ca *tls_ca; /* --tls-out unwrap */
	struct tlx_server *tls_mint; /* leaves minted by tls_ca */
	struct tlx_client *tls_cli; /* verified connections to upstreams */
	struct tlx_server *tls_in_srv; /* --tls-in-cert: the service's own certificate */
	struct tlx_client *tls_in_cli; /* re-encrypting to the app (NULL: plain app) */
	struct tap_ring *ring; /* --capture on: one ring per worker in one file */
	uint64_t generation;
	struct tap_conn_cfg tap_cfg;

	/* sidetap-uploader, supervised from the thread that owns the engine */
	pid_t uploader_pid;
	uint64_t uploader_started_ms, uploader_restart_ms;
	unsigned uploader_backoff_ms;
	_Atomic bool uploader_up;
	_Atomic uint64_t uploader_restarts;

	_Atomic int phase;
	_Atomic unsigned drain_ms;
	_Atomic unsigned running; /* worker threads not yet finished */
	_Atomic bool ready; /* all workers started */

	pthread_mutex_t lock; /* start-up hand-shake only */
	pthread_cond_t cond;
	unsigned started;
	int start_err;
	bool threads;
};

/* worker.c */

/*
 * Returns an SQE of <w>'s ring, submitting queued ones first when the
 * submission queue is full. Never NULL: the ring is drained until one frees.
 */
struct io_uring_sqe *eng__sqe(struct eng_worker *w);

/* The worker thread's body. */
void *eng__worker_main(void *arg);

/* Writes to <w>'s eventfd so that its loop looks at the engine phase. Thread-safe. */
void eng__worker_wake(struct eng_worker *w);

/* conn.c */

/* Takes ownership of the accepted client socket <fd> on listener <l>. */
void eng__conn_accept(struct eng_worker *w, struct eng_listener *l, int fd);

/* Completion handlers for the ops whose object is a connection. */
void eng__conn_on_cqe(struct eng_worker *w, enum eng_op op, struct eng_conn *c, unsigned arg,
		      const struct io_uring_cqe *cqe);

/*
 * Closes <c> for reason <why>: cancels what is in flight and frees it once
 * nothing is. Resets, failed connects and drains close both sockets with RST
 * (SO_LINGER 0), the others with FIN.
 */
void eng__conn_close(struct eng_conn *c, enum tap_close_reason why);

/* Re-arms receives that stopped for lack of buffers, now that some returned. */
void eng__conn_retry_nobuf(struct eng_worker *w);

/* Closes connections idle for longer than --idle-timeout. */
void eng__conn_expire_idle(struct eng_worker *w);

/* Returns the address of buffer <bid>. */
static inline uint8_t *eng__buf(struct eng_worker *w, unsigned bid)
{
	return w->buf_chunk[bid / ENG_BUF_CHUNK] + (size_t)(bid % ENG_BUF_CHUNK) * ENG_BUF_SIZE;
}

/* Gives buffer <bid> back to the ring; the kernel sees it at the next eng__bufs_flush(). */
static inline void eng__buf_put(struct eng_worker *w, unsigned bid)
{
	io_uring_buf_ring_add(w->br, eng__buf(w, bid), ENG_BUF_SIZE, (unsigned short)bid,
			      io_uring_buf_ring_mask(ENG_BUF_MAX), (int)w->br_pending++);
}

/*
 * Adds a chunk of buffers to <w>'s ring. Returns 0, -ENOSPC at ENG_BUF_MAX,
 * or -ENOMEM.
 */
int eng__bufs_grow(struct eng_worker *w);

/* Returns buffers added back to the ring to the kernel (once per loop turn). */
static inline void eng__bufs_flush(struct eng_worker *w)
{
	if (w->br_pending) {
		io_uring_buf_ring_advance(w->br, (int)w->br_pending);
		w->br_pending = 0;
	}
}

/* Frees the worker's pooled pipes. */
void eng__pipes_free(struct eng_worker *w);

/* Re-arms the copy path's receive on direction <d> if nothing holds it back. */
void eng__recv_resume(struct eng_conn *c, unsigned d);

/* Starts the copy path's multishot receive on direction <d>. */
void eng__recv_start(struct eng_conn *c, unsigned d);

/* Marks <c> active now (idle timeout). */
void eng__touch(struct eng_conn *c);

/* tls.c */

/* True when <c>'s listener unwraps TLS. */
bool eng__tls_wanted(const struct eng_conn *c);

/* Starts sniffing the client's first bytes (instead of forwarding them). Returns 0 or -ENOMEM. */
int eng__tls_start(struct eng_conn *c);

/* Arms (again) the receive of the client's first bytes into the held buffer. */
void eng__tls_sniff_arm(struct eng_conn *c);

/* The upstream spoke while the client's bytes were held: not TLS, forward them. */
void eng__tls_server_spoke(struct eng_conn *c);

/* Bytes received on socket <i> of a connection whose TLS is handled here. */
void eng__tls_on_recv(struct eng_conn *c, unsigned i, const void *p, size_t len);

/* Socket <i> reached EOF. */
void eng__tls_on_eof(struct eng_conn *c, unsigned i);

/* Completions of the TLS ops. */
void eng__tls_on_send(struct eng_conn *c, unsigned i, int res);
void eng__tls_on_sniff(struct eng_conn *c, int res);

/* True while socket <d>'s receive must wait: the other side has enough queued. */
bool eng__tls_blocked(const struct eng_conn *c, unsigned d);

/* Closes handshakes past their deadline. */
void eng__tls_expire(struct eng_worker *w);

/* Frees <c>'s TLS state (once nothing is in flight). */
void eng__tls_free(struct eng_conn *c);

/* Sets up the TLS contexts the configuration asks for (logs failures). */
int eng__tls_engine_open(struct eng_engine *e);
void eng__tls_engine_close(struct eng_engine *e);

/* capture.c */

/* CLOCK_REALTIME in nanoseconds. */
uint64_t eng__realtime_ns(void);

/*
 * --capture on: creates the ring file (refusing one that a live sidetap
 * produces into) and the per-connection capture settings. Logs failures.
 */
int eng__cap_engine_open(struct eng_engine *e);

/* Marks the ring stopped and unmaps it. */
void eng__cap_engine_close(struct eng_engine *e);
/* At exit, after the uploader stopped: logs the frames it left in the ring, if any. */
void eng__cap_report_left(struct eng_engine *e);

/*
 * Starts capturing <c>; <orig> is its original destination (transparent) or
 * the listener's address (reverse). Emits the open frame. Out of memory, the
 * connection goes uncaptured (counted).
 */
void eng__cap_open(struct eng_conn *c, const struct eng_addr *orig);

/* Feeds <len> bytes forwarded in direction <d>. */
void eng__cap_feed(struct eng_conn *c, unsigned d, const void *buf, size_t len);

/* Direction <d>'s source reached EOF. */
void eng__cap_eof(struct eng_conn *c, unsigned d);

/*
 * True when capture does not need the next bytes of direction <d> (at least
 * <min> of them): then c->cap->budget[d] holds how many may be spliced.
 */
bool eng__cap_may_splice(struct eng_conn *c, unsigned d, uint64_t min);

/* Tells capture how many bytes of <d> went by uncaptured, and ends the budget. */
void eng__cap_skip_flush(struct eng_conn *c, unsigned d);

/* Emits the tls frame of <c>: <event> (TAP_TLS_*), with <why> when it failed. */
void eng__cap_tls(struct eng_conn *c, int event, const char *why);

/* The reason the passthrough tls frame of <c> will give (static), before its bytes are fed. */
void eng__cap_tls_reason(struct eng_conn *c, const char *why);

/* Ends capture of <c>: pending pairs, the close frame; frees the state. */
void eng__cap_close(struct eng_conn *c, enum tap_close_reason why);

/* uploader.c */

/* Starts sidetap-uploader for the engine's ring and sink. Returns 0 or a negative errno (logged). */
int eng__uploader_start(struct eng_engine *e);

/* Stops the uploader: SIGTERM (it drains the stopped ring), then SIGKILL after <timeout_ms>. */
void eng__uploader_stop(struct eng_engine *e, unsigned timeout_ms);

/* admin.c */

/* Sets up the admin endpoint on worker <w> for the listening socket <fd>. */
int eng__admin_open(struct eng_worker *w, int fd);

/* Arms the admin listener's accept (on worker 0's thread, after its ring is up). */
void eng__admin_start(struct eng_worker *w);

/* Completion handlers for admin ops. */
void eng__admin_on_cqe(struct eng_worker *w, enum eng_op op, void *obj,
		       const struct io_uring_cqe *cqe);

/* Closes admin connections past their deadline; with <all>, every one and the listener. */
void eng__admin_expire(struct eng_worker *w, bool all);

/* True while the admin endpoint has requests in flight. */
bool eng__admin_busy(const struct eng_worker *w);

/* Frees the admin endpoint (after its ring is gone). */
void eng__admin_free(struct eng_worker *w);

/* metrics.c */

/*
 * Renders the Prometheus text exposition of <e>'s counters, summed over the
 * workers. Returns a new malloc'd string (caller frees) and its length, or NULL.
 */
char *eng__metrics_render(struct eng_engine *e, size_t *len);

#endif
