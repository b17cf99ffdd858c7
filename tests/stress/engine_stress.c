/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Stress for the ThreadSanitizer build (Criterion's forked runner does not run
 * under TSan): the engine in this process with two workers, client threads
 * echoing through it, a thread reading /metrics the whole time, then a drain.
 * Exits 0 when every byte came back intact; TSan makes a race fail the run.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "eng/config.h"
#include "eng/engine.h"
#include "th.h"

#define CLIENTS 8
#define ROUNDS 500

static int upstream_fd;
static uint16_t inbound_port, admin_port;
static int failures, stop;

static void *echo_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[8192];
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		if (th_write_all(fd, buf, (size_t)n) < 0)
			break;
	close(fd);
	return NULL;
}

static void *echo_accept(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_t th;
		int fd = th_accept(upstream_fd, 200);

		if (fd == -ETIMEDOUT) {
			if (__atomic_load_n(&stop, __ATOMIC_ACQUIRE))
				return NULL;
			continue;
		}
		if (fd < 0)
			return NULL;
		pthread_create(&th, NULL, echo_conn, (void *)(intptr_t)fd);
		pthread_detach(th);
	}
}

static void *client(void *arg)
{
	unsigned seed = (unsigned)(intptr_t)arg;
	static __thread char out[65536], in[65536];

	for (int r = 0; r < ROUNDS; r++) {
		int fd = th_connect(inbound_port);
		size_t len =
			1 + (size_t)((seed * 2654435761u + (unsigned)r * 40503u) % sizeof(out));

		if (fd < 0) {
			__atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
			continue;
		}
		th_pattern(seed, (uint64_t)r * 8, out, sizeof(out));
		/* Several exchanges on one connection, then a half-close. */
		for (int k = 0; k < 3; k++) {
			if (th_write_all(fd, out, len) < 0 ||
			    th_read_full(fd, in, len, 5000) != (ssize_t)len ||
			    memcmp(in, out, len)) {
				__atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
				break;
			}
		}
		shutdown(fd, SHUT_WR);
		th_wait_close(fd, 5000, NULL);
		close(fd);
	}
	return NULL;
}

static void *metrics_reader(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		th_metric(admin_port, "sidetap_connections_active{listener=\"inbound\"}");
		usleep(2000);
	}
	return NULL;
}

int main(void)
{
	pthread_t clients[CLIENTS], acceptor, reader;
	struct eng_config cfg;
	struct eng_engine *e;
	struct eng_addr a;
	char up[64], err[256];
	uint16_t port;

	upstream_fd = th_listen(&port, 512);
	snprintf(up, sizeof(up), "--inbound-upstream=127.0.0.1:%u", port);
	char *argv[] = { "sidetap",
			 "--inbound-addr=127.0.0.1:0",
			 "--outbound-addr=off",
			 "--admin-addr=127.0.0.1:0",
			 "--inbound-mode=reverse",
			 up,
			 "--workers=2",
			 "--splice-threshold=1024",
			 "--log-level=warn",
			 NULL };
	if (eng_config_parse(&cfg, 9, argv, (char *[]){ NULL }, err, sizeof(err)) != 0) {
		fprintf(stderr, "engine_stress: %s\n", err);
		return 1;
	}
	eng_log_threshold = cfg.log_level;
	if (eng_engine_new(&cfg, &e) != 0 || eng_engine_start(e) != 0)
		return 1;
	eng_engine_listen_addr(e, ENG_INBOUND, 0, &a);
	inbound_port = eng_addr_port(&a);
	eng_engine_admin_addr(e, &a);
	admin_port = eng_addr_port(&a);

	pthread_create(&acceptor, NULL, echo_accept, NULL);
	pthread_create(&reader, NULL, metrics_reader, NULL);
	for (int i = 0; i < CLIENTS; i++)
		pthread_create(&clients[i], NULL, client, (void *)(intptr_t)(i + 1));
	for (int i = 0; i < CLIENTS; i++)
		pthread_join(clients[i], NULL);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	pthread_join(reader, NULL);
	pthread_join(acceptor, NULL);
	eng_engine_drain(e, 1000, "stress done");
	if (eng_engine_wait(e) != 0)
		failures++;
	eng_engine_free(e);
	close(upstream_fd);
	printf("engine_stress: %d clients x %d connections, %d failures\n", CLIENTS, ROUNDS,
	       failures);
	return failures ? 1 : 0;
}
