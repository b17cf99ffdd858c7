# SPDX-License-Identifier: Apache-2.0
"""Integration tests of sidetap-uploader's collector sink and spool, end to end: real traffic through
sidetap, frames through the ring and the uploader, POSTed to a collector this test runs (collector.py:
plain HTTP or HTTPS with a test CA, told to answer 200, 503, 401 or to hang), the bodies decoded by an
independent msgpack decoder (python3-msgpack) and by sidetapctl dump. Covers TESTPLAN 6.5: D1 (SIGKILL
at random moments), D2 (collector down, failing, slow), D5 (spool full: a low limit and a full file
system), D6 (power cut: a shim that keeps only what was fsync'd), D7 (duplicates carry the same id).

Run by CTest: /usr/bin/python3 test_sinks.py BINDIR POWERLOSS_SO. Needs python3-msgpack, openssl and
zstd; skips with the reason when they are missing.
"""
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import collector  # noqa: E402
from harness import Sidetap, scrape, wait_for  # noqa: E402

BINDIR = None
SHIM = None


class Upstream(collector.http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Traffic:
    """Keep-alive GETs through the proxy from a thread, each checked; records latencies."""

    def __init__(self, port, per_conn=20, pause=0.0):
        self.port, self.per_conn, self.pause = port, per_conn, pause
        self.done = 0
        self.errors = []
        self.latencies = []
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        i = 0
        while self.running:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                    for k in range(self.per_conn):
                        t0 = time.monotonic()
                        s.sendall(b"GET /r%d-%d HTTP/1.1\r\nHost: x\r\n\r\n" % (i, k))
                        data = b""
                        while not data.endswith(b"hello\n"):
                            chunk = s.recv(4096)
                            if not chunk:
                                raise IOError("closed early")
                            data += chunk
                        self.latencies.append(time.monotonic() - t0)
                        self.done += 1
                        if self.pause:
                            time.sleep(self.pause)
            except Exception as e:  # the proxy must not fail a single request
                self.errors.append(repr(e))
            i += 1

    def stop(self):
        self.running = False
        self.thread.join(timeout=30)

    def rate(self, seconds):
        """Requests per second over the next <seconds>."""
        n0, t0 = self.done, time.monotonic()
        time.sleep(seconds)
        return (self.done - n0) / (time.monotonic() - t0)

    def p99(self, since=0):
        lat = sorted(self.latencies[since:])
        return lat[int(len(lat) * 0.99)] if lat else 0.0


class Proxy(Sidetap):
    """sidetap in reverse mode in front of an upstream, capture on, its uploader's spool and
    metrics endpoint in the scratch directory."""

    def __init__(self, test, upstream_port, *extra):
        super().__init__(test, "sidetap-sink-")
        self.ring = os.path.join(self.dir, "ring")
        self.spool = os.path.join(self.dir, "spool")
        self.start(BINDIR, upstream_port,
                   ["--ring=" + self.ring, "--spool-dir=" + self.spool,
                    "--uploader-admin-addr=127.0.0.1:0", "--batch-ms=50"] + list(extra))

    def uploader_admin(self):
        key = 'msg="admin endpoint" component=uploader addr='
        wait_for(lambda: key in self.log(), 10)
        return self.addr(self.log(), key)

    def upl_metric(self, series):
        return scrape(self.uploader_admin(), series)

    def settle(self):
        """Waits until the frame count stops moving (closes captured); returns written, dropped."""
        last = None
        for _ in range(100):
            now = (self.metric("sidetap_capture_frames_total"),
                   self.metric("sidetap_capture_dropped_frames_total"))
            if now == last:
                break
            last = now
            time.sleep(0.1)
        return int(last[0]), int(last[1])


def uploader(ring, sink, logf, *extra, env=None):
    """A standalone sidetap-uploader (the proxy runs with --uploader off)."""
    return subprocess.Popen([os.path.join(BINDIR, "sidetap-uploader"), "--ring", ring, "--sink",
                             sink, "--batch-ms=50"] + list(extra),
                            stdout=logf, stderr=subprocess.STDOUT, env=env)


def gaps(ids):
    """Frames missing below each worker's newest one in <ids> (a worker's seq counts from 1)."""
    by_worker = {}
    for fid in ids:
        gen, worker, seq = fid.split("-")
        by_worker.setdefault((gen, worker), set()).add(int(seq))
    return sum(max(seqs) - len(seqs) for seqs in by_worker.values())


def check_ids(test, ids, written, dropped):
    """Every frame the ring took arrived (duplicates allowed); gaps only where frames were dropped."""
    unique = set(ids)
    test.assertEqual(len(unique), written,
                     "collector holds %d unique frames, the ring took %d" % (len(unique), written))
    missing = gaps(unique)
    test.assertLessEqual(missing, dropped, "frames missing that were not counted as dropped")
    if dropped == 0:
        test.assertEqual(missing, 0)
    return unique


class SinkTestBase(unittest.TestCase):
    def setUp(self):
        if collector.msgpack is None:
            self.skipTest("python3-msgpack is missing (apt-get install python3-msgpack)")
        self.upstream = collector.socketserver.ThreadingTCPServer(("127.0.0.1", 0), Upstream)
        self.upstream.daemon_threads = True
        threading.Thread(target=self.upstream.serve_forever, daemon=True).start()
        self.uport = self.upstream.server_address[1]
        self.cleanups = []

    def tearDown(self):
        for f in reversed(self.cleanups):
            f()
        self.upstream.shutdown()
        self.upstream.server_close()

    def collector(self, *args, **kw):
        c = collector.Collector(*args, **kw)
        self.cleanups.append(c.stop)
        return c

    def arrive(self, t, p, c, timeout=40):
        """Stops traffic <t> (which must have seen no error), waits for proxy <p>'s frame counts to
        settle and for collector <c> to hold every frame the ring took; returns written, dropped."""
        t.stop()
        self.assertEqual(t.errors, [])
        written, dropped = p.settle()
        self.assertTrue(wait_for(lambda: len(c.unique_ids()) >= written, timeout),
                        "%d of %d arrived" % (len(c.unique_ids()), written))
        return written, dropped

    def proxy(self, *args):
        p = Proxy(self, self.uport, *args)
        self.cleanups.append(p.close)
        return p


class HttpSinkTest(SinkTestBase):
    def test_every_frame_arrives_and_a_body_reads_with_sidetapctl(self):
        c = self.collector()
        p = self.proxy("--sink=http://127.0.0.1:%d/v1/frames" % c.port)
        t = Traffic(p.port)
        wait_for(lambda: t.done >= 300, 20)
        written, dropped = self.arrive(t, p, c, 10)
        self.assertEqual(p.upl_metric("sidetap_uploader_frames_shipped_total"), written)
        self.assertEqual(p.upl_metric("sidetap_uploader_batches_retried_total"), 0)
        p.stop()
        self.assertEqual(c.errors, [])
        self.assertEqual(dropped, 0)
        check_ids(self, c.ids, written, 0)
        self.assertEqual(len(c.ids), written, "no duplicates without failures")
        pairs = [f for body in c.bodies for f in collector.decode_frames(body)
                 if f["type"] == "http"]
        self.assertEqual(len(pairs), t.done, "every request captured")
        # A saved request body is a capture file: sidetapctl reads it as it reads a segment.
        body = os.path.join(p.dir, "body.msgpack")
        with open(body, "wb") as f:
            f.write(c.bodies[0])
        out = subprocess.run([os.path.join(BINDIR, "sidetapctl"), "dump", body], check=True,
                             stdout=subprocess.PIPE).stdout.decode().splitlines()
        self.assertEqual(len(out), len(collector.decode_frames(c.bodies[0])))
        self.assertIn('"id":"', out[0])

    def test_503_for_a_while_then_200_loses_nothing_and_counts_retries(self):
        c = self.collector()
        c.status = 503
        p = self.proxy("--sink=http://127.0.0.1:%d/v1/frames" % c.port)
        t = Traffic(p.port, pause=0.001)
        self.assertTrue(wait_for(lambda: c.requests >= 3, 15), "no attempts while failing")
        self.assertTrue(wait_for(
            lambda: (p.upl_metric("sidetap_uploader_spool_files") or 0) > 0, 10),
            "the spool did not take the batches the collector refused")
        self.assertGreater(p.upl_metric(
            'sidetap_uploader_last_error_timestamp_seconds{error="HTTP 503"}') or 0, 0,
            "the last error is not in the metrics")
        c.status = 200
        time.sleep(0.5)
        written, dropped = self.arrive(t, p, c, 30)
        retried = p.upl_metric("sidetap_uploader_batches_retried_total")
        self.assertGreaterEqual(retried, 3)
        self.assertTrue(wait_for(lambda: p.upl_metric("sidetap_uploader_spool_files") == 0, 10),
                        "the spool was not emptied")
        self.assertEqual(p.upl_metric("sidetap_uploader_spool_bytes"), 0)
        self.assertIn("HTTP 503", p.log())
        self.assertIn("collector says 503", p.log(), "the response body is logged")
        p.stop()
        self.assertEqual(dropped, 0)
        check_ids(self, c.ids, written, 0)

    def test_collector_down_longer_than_the_ring_holds_the_spool_absorbs_it(self):
        c = self.collector()
        port = c.port
        c.stop()  # refused connections from here on
        self.cleanups.remove(c.stop)
        p = self.proxy("--sink=http://127.0.0.1:%d/v1/frames" % port, "--ring-size=256K")
        t = Traffic(p.port, pause=0.0005)
        # Several times what the ring holds, while nothing listens.
        self.assertTrue(wait_for(lambda: (p.metric("sidetap_capture_bytes_total") or 0)
                                 > 4 * 256 * 1024, 30))
        self.assertEqual(p.metric("sidetap_capture_dropped_frames_total"), 0,
                         "the ring overflowed while the spool had room")
        spooled = p.upl_metric("sidetap_uploader_spool_bytes")
        self.assertGreater(spooled, 256 * 1024, "the spool holds more than the ring could")
        self.assertGreater(p.upl_metric("sidetap_uploader_oldest_unshipped_age_seconds"), 0)
        self.assertRegex(p.log(), r"Couldn't connect to server|Connection refused")
        c = self.collector(port)
        written, dropped = self.arrive(t, p, c)
        self.assertTrue(wait_for(lambda: p.upl_metric("sidetap_uploader_spool_files") == 0, 10))
        self.assertEqual(p.upl_metric("sidetap_uploader_oldest_unshipped_age_seconds"), 0)
        p.stop()
        self.assertEqual(dropped, 0)
        check_ids(self, c.ids, written, 0)
        self.assertEqual(c.errors, [])

    def test_hanging_collector_times_out_and_is_retried(self):
        c = self.collector()
        c.hang_s = 1.0
        p = self.proxy("--sink=http://127.0.0.1:%d/v1/frames" % c.port, "--sink-timeout=300")
        t = Traffic(p.port)
        wait_for(lambda: t.done >= 100, 10)
        self.assertTrue(wait_for(lambda: "Timeout was reached" in p.log(), 10), p.log())
        c.hang_s = 0
        t.stop()
        written, _ = p.settle()
        self.assertTrue(wait_for(lambda: len(c.unique_ids()) >= written, 30))
        self.assertGreater(p.upl_metric("sidetap_uploader_batches_retried_total"), 0)
        p.stop()
        check_ids(self, c.ids, written, 0)

    def test_requests_in_flight_do_not_hold_the_loop_up(self):
        c = self.collector()
        c.hang_s = 4.0
        p = self.proxy("--sink=http://127.0.0.1:%d/v1/frames" % c.port, "--ring-size=256K",
                       "--sink-timeout=20000")
        t = Traffic(p.port, pause=0.0005)
        self.assertTrue(wait_for(lambda: c.requests >= 1, 10), "no request reached the collector")
        hung_at = time.monotonic()
        # While the collector sits on every request, the uploader keeps draining the ring (into
        # the spool) and answers its /metrics at once: nothing waits on a transfer.
        worst = 0.0
        while time.monotonic() - hung_at < 2.5:
            t0 = time.monotonic()
            inflight = p.upl_metric("sidetap_uploader_inflight_batches")
            worst = max(worst, time.monotonic() - t0)
            self.assertGreaterEqual(inflight, 1, "the collector answered early: proves nothing")
            time.sleep(0.1)
        self.assertLess(worst, 0.5, "/metrics took %.3f s while requests were in flight" % worst)
        self.assertGreater(p.metric("sidetap_capture_bytes_total"), 2 * 256 * 1024,
                           "not enough traffic to fill the ring")
        self.assertEqual(p.metric("sidetap_capture_dropped_frames_total"), 0,
                         "the ring overflowed while requests were in flight")
        self.assertGreater(p.upl_metric("sidetap_uploader_frames_spooled_total"), 0)
        c.hang_s = 0
        written, dropped = self.arrive(t, p, c)
        p.stop()
        self.assertEqual(dropped, 0)
        check_ids(self, c.ids, written, 0)

    def test_gzip_and_zstd_bodies_decode_to_the_same_frames(self):
        if shutil.which("zstd") is None:
            self.skipTest("zstd is missing (apt-get install zstd)")
        for comp in ("gzip", "zstd"):
            c = self.collector()
            p = self.proxy("--sink=http://127.0.0.1:%d/f" % c.port, "--sink-compression=" + comp)
            t = Traffic(p.port)
            wait_for(lambda: t.done >= 100, 10)
            t.stop()
            written, _ = p.settle()
            p.stop()
            self.assertEqual(c.encodings, {comp}, comp)
            self.assertEqual(c.errors, [], comp)
            check_ids(self, c.ids, written, 0)

    def test_bad_token_gets_401_the_batch_is_set_aside_then_a_new_token_works(self):
        c = self.collector()
        c.token = "s3cret"
        tmp = tempfile.mkdtemp(prefix="sidetap-token-")
        self.cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
        token = os.path.join(tmp, "token")
        with open(token, "w") as f:
            f.write("wrong\n")
        p = self.proxy("--sink=http://127.0.0.1:%d/f" % c.port, "--token-file=" + token)
        t = Traffic(p.port, pause=0.002)
        self.assertTrue(wait_for(lambda: "HTTP 401" in p.log(), 10), p.log())
        text = p.log()
        self.assertIn("the sink refused a batch, setting it aside", text)
        self.assertIn("invalid token: the collector wants another one", text)
        self.assertGreater(p.upl_metric(
            'sidetap_uploader_last_error_timestamp_seconds{error="HTTP 401"}') or 0, 0)
        rejected = os.path.join(p.spool, "rejected")
        self.assertTrue(wait_for(lambda: os.listdir(rejected), 5))
        # The set-aside batch is a capture file, kept for a person to look at.
        name = os.path.join(rejected, sorted(os.listdir(rejected))[0])
        out = subprocess.run([os.path.join(BINDIR, "sidetapctl"), "dump", name], check=True,
                             stdout=subprocess.PIPE).stdout
        self.assertGreater(len(out.splitlines()), 0)
        # A rotated token (a new file moved in, as a Secret volume does) is read again.
        with open(token + ".new", "w") as f:
            f.write("s3cret\n")
        os.rename(token + ".new", token)
        self.assertTrue(wait_for(lambda: len(c.ids) > 0, 10), "the new token was not used")
        self.assertIn("token file changed", p.log())
        t.stop()
        written, _ = p.settle()
        self.assertTrue(wait_for(lambda: p.upl_metric("sidetap_uploader_inflight_batches") == 0
                                 and p.metric("sidetap_capture_ring_used_bytes") == 0, 10))
        refused = p.upl_metric("sidetap_uploader_frames_rejected_total")
        self.assertGreater(refused, 0)
        self.assertGreater(p.upl_metric("sidetap_uploader_batches_rejected_total"), 0)
        self.assertEqual(p.upl_metric("sidetap_uploader_batches_retried_total"), 0,
                         "401 is not retried")
        p.stop()
        # Every frame went somewhere: to the collector or aside, none retried forever.
        self.assertEqual(len(set(c.ids)) + refused, written)

    def test_https_with_a_test_ca(self):
        if shutil.which("openssl") is None:
            self.skipTest("openssl is missing (apt-get install openssl)")
        tmp = tempfile.mkdtemp(prefix="sidetap-tls-")
        self.cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
        ca_key, ca, key, csr, crt, ext = (os.path.join(tmp, n) for n in
                                          ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem",
                                           "ext.cnf"))
        with open(ext, "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run = lambda *a: subprocess.run(a, check=True, stdout=subprocess.DEVNULL,  # noqa: E731
                                        stderr=subprocess.DEVNULL)
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
            "-out", ca, "-days", "2", "-subj", "/CN=sidetap test CA")
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
            "-subj", "/CN=127.0.0.1")
        run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
            "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)
        c = self.collector(tls=(crt, key))
        url = "https://127.0.0.1:%d/v1/frames" % c.port
        # Not in the system store: refused, and retried until it is trusted.
        p = self.proxy("--sink=" + url)
        t = Traffic(p.port)
        self.assertTrue(wait_for(lambda: "certificate" in p.log(), 10), p.log())
        t.stop()
        p.stop()
        self.assertEqual(c.ids, [], "an unverified collector got frames")
        c2 = self.collector(tls=(crt, key))
        p = self.proxy("--sink=https://127.0.0.1:%d/v1/frames" % c2.port, "--sink-ca=" + ca)
        t = Traffic(p.port)
        wait_for(lambda: t.done >= 200, 10)
        t.stop()
        written, _ = p.settle()
        p.stop()
        self.assertEqual(c2.errors, [])
        check_ids(self, c2.ids, written, 0)


class CrashTest(SinkTestBase):
    """TESTPLAN D1 and D7: SIGKILL the uploader at random moments while traffic and a collector run."""

    def test_sigkill_at_random_moments_loses_no_frame(self):
        c = self.collector()
        p = self.proxy("--uploader=off", "--ring-size=64M")
        sink = "http://127.0.0.1:%d/v1/frames" % c.port
        logf = open(os.path.join(p.dir, "uploader.log"), "w+")
        args = ("--spool-dir=" + p.spool, "--batch-frames=50", "--log-level=warn")
        t = Traffic(p.port, per_conn=5)
        rng = random.Random(int(os.environ.get("SIDETAP_TEST_SEED", time.time())))
        kills = 0
        deadline = time.time() + 8
        while time.time() < deadline:
            # The collector fails now and then, so that kills also land while spooling.
            c.status = 503 if rng.random() < 0.2 else 200
            up = uploader(p.ring, sink, logf, *args)
            time.sleep(rng.uniform(0.02, 0.3))
            up.kill()
            up.wait()
            kills += 1
        c.status = 200
        t.stop()
        self.assertEqual(t.errors, [], "traffic was affected")
        self.assertGreaterEqual(kills, 20)
        written, dropped = p.settle()
        p.stop()
        up = uploader(p.ring, sink, logf, *args, "--once")
        self.assertEqual(up.wait(timeout=60), 0)
        logf.close()
        self.assertEqual(dropped, 0)
        self.assertEqual(c.errors, [])
        check_ids(self, c.ids, written, 0)
        # D7: a frame sent twice is the same frame, with the same id.
        frames = {}
        for body in c.bodies:
            for f in collector.decode_frames(body):
                self.assertEqual(frames.setdefault(f["id"], f), f, "a duplicate differs")
        self.assertFalse([n for n in os.listdir(p.spool) if n.startswith("spool-")],
                         "spool files left")


class PowerLossTest(SinkTestBase):
    """TESTPLAN D6: only what was fsync'd survives a power cut; nothing released is lost."""

    def rebuild(self, spool, shadow):
        """The spool as a power cut would leave it: synced content, synced directory entries."""
        with open(os.path.join(shadow, "snap")) as f:
            entries = [line.split() for line in f if line.strip()]
        for name in os.listdir(spool):
            path = os.path.join(spool, name)
            if os.path.isfile(path):
                os.unlink(path)
        for name, key in entries:
            data = b""
            if key != "0":
                with open(os.path.join(shadow, "c-" + key), "rb") as f:
                    data = f.read()
            with open(os.path.join(spool, name), "wb") as f:
                f.write(data)

    def test_power_cut_keeps_every_released_frame(self):
        if not SHIM or not os.path.exists(SHIM):
            self.skipTest("the power-cut shim was not built")
        c = self.collector()
        p = self.proxy("--uploader=off", "--ring-size=64M")
        sink = "http://127.0.0.1:%d/v1/frames" % c.port
        shadow = os.path.join(p.dir, "shadow")
        os.mkdir(shadow)
        os.mkdir(p.spool)
        env = dict(os.environ, LD_PRELOAD=SHIM, POWERLOSS_DIR=p.spool, POWERLOSS_SHADOW=shadow,
                   ASAN_OPTIONS="verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", ""))
        logf = open(os.path.join(p.dir, "uploader.log"), "w+")
        args = ("--spool-dir=" + p.spool, "--batch-frames=40", "--log-level=warn")
        t = Traffic(p.port, per_conn=5, pause=0.0005)
        rng = random.Random(int(os.environ.get("SIDETAP_TEST_SEED", time.time())))
        cuts = spooled = 0
        deadline = time.time() + 8
        while time.time() < deadline:
            # Mostly down: the spool takes the frames, and the cut lands among its writes.
            c.status = 503 if rng.random() < 0.7 else 200
            up = uploader(p.ring, sink, logf, *args, env=env)
            time.sleep(rng.uniform(0.05, 0.4))
            up.kill()
            up.wait()
            spooled += len([n for n in os.listdir(p.spool) if n.endswith(".msgpack")])
            self.rebuild(p.spool, shadow)
            cuts += 1
        c.status = 200
        t.stop()
        self.assertEqual(t.errors, [])
        self.assertGreaterEqual(cuts, 10)
        self.assertGreater(spooled, 0, "the spool was never used: the test proves nothing")
        written, dropped = p.settle()
        p.stop()
        up = uploader(p.ring, sink, logf, *args, "--once")
        self.assertEqual(up.wait(timeout=60), 0)
        logf.close()
        self.assertEqual(c.errors, [], "a spool file came back torn")
        self.assertEqual(dropped, 0)
        check_ids(self, c.ids, written, 0)


class SpoolFullTest(SinkTestBase):
    """TESTPLAN D5: a full spool stops draining (the ring drops the newest, counted) or, with
    --spool-full drop-oldest, deletes its oldest batches (counted); the proxy goes on."""

    def run_full(self, *extra):
        c = self.collector()
        p = self.proxy("--sink=http://127.0.0.1:%d/f" % c.port, "--ring-size=256K", *extra)
        t = Traffic(p.port)
        self.assertTrue(wait_for(lambda: t.done >= 300, 10))
        # The yardstick: the proxy's rate while the collector takes every batch.
        base_rate = t.rate(1.0)
        c.status = 503
        self.assertTrue(wait_for(lambda: (p.metric("sidetap_capture_dropped_frames_total") or 0)
                                 > 500, 30), "the ring never dropped")
        # The ring can drop first on a busy machine (the uploader fsyncs each batch it spools).
        # The gauge says whether the last batch fitted: a smaller one after a refused one can,
        # so the count of refusals is what must grow.
        self.assertTrue(wait_for(
            lambda: (p.upl_metric("sidetap_uploader_spool_full_total") or 0) > 0, 20),
            "the spool never reported itself full: spool_bytes=%s spool_files=%s\n%s"
            % (p.upl_metric("sidetap_uploader_spool_bytes"),
               p.upl_metric("sidetap_uploader_spool_files"), p.log()[-3000:]))
        self.assertIsNotNone(p.upl_metric('sidetap_uploader_spool_full{policy="stop"}'))
        self.assertGreater(p.upl_metric("sidetap_uploader_spool_bytes"), 32 * 1024)
        self.assertEqual(p.upl_metric("sidetap_uploader_spool_dropped_frames_total"), 0,
                         "stop deletes nothing from the spool")
        # The proxy keeps forwarding at full speed with capture blocked behind it.
        i0 = len(t.latencies)
        full_rate = t.rate(1.0)
        self.assertGreater(full_rate, 0.5 * base_rate,
                           "the proxy slowed down: %.0f req/s with the spool full, %.0f before"
                           % (full_rate, base_rate))
        self.assertLess(t.p99(i0), 0.2, "requests waited on capture")
        self.assertIn("the spool is full", p.log())
        # The uploader's endpoint shows the ring's drops too (read first: they still grow).
        upl_dropped = p.upl_metric("sidetap_uploader_ring_dropped_frames_total")
        self.assertGreater(upl_dropped, 0)
        self.assertLessEqual(upl_dropped, p.metric("sidetap_capture_dropped_frames_total"))
        c.status = 200
        written, dropped = self.arrive(t, p, c)
        self.assertTrue(wait_for(
            lambda: p.upl_metric('sidetap_uploader_spool_full{policy="stop"}') == 0, 10))
        p.stop()
        self.assertNotIn("frames left in the ring", p.log())
        # The counts add up: what the ring took arrived, what it dropped was counted.
        check_ids(self, c.ids, written, dropped)
        self.assertGreater(dropped, 0)
        return p

    def test_low_spool_limit_stops_draining_and_the_counts_add_up(self):
        self.run_full("--spool-limit=64K")

    def test_full_file_system_under_the_spool_is_the_same_policy(self):
        if os.geteuid() != 0 or shutil.which("mount") is None:
            self.skipTest("mounting a small tmpfs needs root")
        tmp = tempfile.mkdtemp(prefix="sidetap-tmpfs-")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", tmp]).returncode:
            shutil.rmtree(tmp, ignore_errors=True)
            self.skipTest("cannot mount a tmpfs here")

        def unmount():
            subprocess.run(["umount", "-l", tmp])
            shutil.rmtree(tmp, ignore_errors=True)
        self.cleanups.append(unmount)
        # Room for a few batches before ENOSPC, rather than the limit, stops the spool.
        self.run_full("--spool-limit=1G", "--spool-dir=" + os.path.join(tmp, "spool"),
                      "--batch-bytes=64K")

    def test_drop_oldest_deletes_the_oldest_batches_and_counts_them(self):
        c = self.collector()
        c.status = 503
        p = self.proxy("--sink=http://127.0.0.1:%d/f" % c.port, "--ring-size=256K",
                       "--spool-limit=512K", "--spool-full=drop-oldest")
        t = Traffic(p.port)
        self.assertTrue(wait_for(
            lambda: (p.upl_metric("sidetap_uploader_spool_dropped_frames_total") or 0) > 500, 30),
            "the spool never dropped a batch")
        self.assertLessEqual(p.upl_metric("sidetap_uploader_spool_bytes"), 512 * 1024)
        self.assertGreater(p.upl_metric("sidetap_uploader_spool_dropped_batches_total"), 0)
        self.assertIsNotNone(p.upl_metric('sidetap_uploader_spool_full{policy="drop-oldest"}'))
        self.assertIn("the spool is full: deleting its oldest batches", p.log())
        c.status = 200
        t.stop()
        self.assertEqual(t.errors, [])
        written, ring_dropped = p.settle()
        self.assertTrue(wait_for(lambda: p.upl_metric("sidetap_uploader_spool_files") == 0
                                 and p.metric("sidetap_capture_ring_used_bytes") == 0, 40),
                        "the spool and the ring were not emptied")
        spool_dropped = int(p.upl_metric("sidetap_uploader_spool_dropped_frames_total"))
        p.stop()
        # The spool made room rather than the ring dropping (it drops only where the uploader,
        # fsyncing each batch, falls behind on a busy machine).
        self.assertLess(ring_dropped, spool_dropped / 10,
                        "the ring dropped %d frames, the spool deleted %d"
                        % (ring_dropped, spool_dropped))
        # The counts add up: every frame the ring took arrived or was counted as deleted...
        unique = c.unique_ids()
        self.assertEqual(len(unique) + spool_dropped, written)
        # ...and the deleted ones are the oldest: each is below the newest frame of its worker.
        missing = gaps(unique)
        self.assertGreaterEqual(missing, spool_dropped, "the newest frames were deleted")
        self.assertLessEqual(missing, spool_dropped + ring_dropped)

    def test_sidetap_stopping_with_nowhere_to_put_frames_says_how_many_it_leaves(self):
        c = self.collector()
        c.status = 503
        p = self.proxy("--sink=http://127.0.0.1:%d/f" % c.port, "--ring-size=64M",
                       "--spool-limit=64K")
        t = Traffic(p.port)
        self.assertTrue(wait_for(lambda: "the spool is full" in p.log(), 30), p.log())
        t.stop()
        self.assertEqual(t.errors, [])
        written, dropped = p.settle()
        p.stop()
        # The uploader could ship or spool none of what is left: sidetap counts it at exit.
        line = [ln for ln in p.log().splitlines() if "frames left in the ring at exit" in ln]
        self.assertEqual(len(line), 1, p.log())
        left = int(line[0].split(" frames=")[1].split()[0])
        self.assertGreater(left, 0)
        self.assertLessEqual(left, written)
        # What the collector never acknowledged and the spool does not hold is exactly that.
        self.assertEqual(dropped, 0, "a 64 MiB ring should not drop here")

    def test_stopping_with_nowhere_to_put_frames_exits_and_leaves_them_in_the_ring(self):
        c = self.collector()
        c.status = 503
        p = self.proxy("--uploader=off", "--ring-size=64M")
        sink = "http://127.0.0.1:%d/v1/frames" % c.port
        logf = open(os.path.join(p.dir, "uploader.log"), "w+")
        self.cleanups.append(logf.close)
        up = uploader(p.ring, sink, logf, "--spool-dir=" + p.spool, "--spool-limit=64K")
        self.cleanups.append(lambda: up.poll() is None and (up.kill(), up.wait()))
        t = Traffic(p.port)

        def log():
            logf.flush()
            with open(logf.name) as f:
                return f.read()
        self.assertTrue(wait_for(lambda: "the spool is full" in log(), 30), log())
        t.stop()
        self.assertEqual(t.errors, [])
        # Sink down, spool full: a stopping uploader does not wait for either (it would outlive
        # sidetap and hold the spool's lock against the next uploader).
        up.send_signal(signal.SIGTERM)
        self.assertEqual(up.wait(timeout=10), 1, log())
        self.assertIn("stopping with frames left in the ring", log())
        # What it did not ship or spool is still in the ring: the next uploader ships it.
        c.status = 200
        written, dropped = p.settle()
        p.stop()
        self.assertEqual(uploader(p.ring, sink, logf, "--spool-dir=" + p.spool, "--once")
                         .wait(timeout=60), 0, log())
        self.assertEqual(dropped, 0)
        check_ids(self, c.ids, written, 0)


if __name__ == "__main__":
    BINDIR = sys.argv.pop(1)
    SHIM = sys.argv.pop(1) if len(sys.argv) > 1 and sys.argv[1].endswith(".so") else None
    unittest.main(verbosity=2)
