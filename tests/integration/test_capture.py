# SPDX-License-Identifier: Apache-2.0
"""Integration tests of capture, end to end: real clients (curl, raw sockets) through the sidetap
binary to real upstreams, frames through the shared-memory ring and sidetap-uploader into segment
files, read back with an independent msgpack implementation (Debian's python3-msgpack) and with
sidetapctl (dump, har).

Run by CTest: /usr/bin/python3 test_capture.py BINDIR (BINDIR holds sidetap, sidetap-uploader and
sidetapctl). Needs python3-msgpack and curl; skips with the reason when they are missing.
"""
import gzip
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import unittest

try:
    import msgpack
except ImportError:  # the test says why it skips
    msgpack = None

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

BINDIR = None


class Upstream(http.server.BaseHTTPRequestHandler):
    """The demo service: every case the capture tests need, on HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle meets delayed ACKs.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", headers=(), send_body=True):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body and status not in (204, 304):
            self.wfile.write(body)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_HEAD(self):
        self.reply(200, b"hello\n", [("Content-Type", "text/plain")], send_body=False)

    def do_POST(self):
        body = self.read_body()
        self.reply(200, body, [("Content-Type", "application/octet-stream")])

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path == "/hello":
            self.reply(200, b"hello\n", [("Content-Type", "text/plain"), ("X-Twice", "a"),
                                         ("X-Twice", "b")])
        elif path == "/empty":
            self.reply(204)
        elif path == "/cached":
            self.reply(304, headers=[("ETag", '"v1"')])
        elif path == "/gzip":
            self.reply(200, gzip.compress(b"compressed hello\n" * 20),
                       [("Content-Encoding", "gzip"), ("Content-Type", "text/plain")])
        elif path == "/big":
            n = int(query.split("=")[1])
            self.reply(200, pattern(n), [("Content-Type", "application/octet-stream")])
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"first ", b"second ", b"third"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/upgrade" and self.headers.get("Upgrade") == "echo":
            self.send_response(101)
            self.send_header("Upgrade", "echo")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            while True:
                data = self.connection.recv(65536)
                if not data:
                    break
                self.connection.sendall(data)
        else:
            self.reply(404, b"not found\n")


def pattern(n):
    unit = bytes(range(256))
    return (unit * (n // 256 + 1))[:n]


class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class EchoServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A raw TCP echo service: not HTTP, so sidetap captures it as tcp frames."""

    daemon_threads = True
    allow_reuse_address = True

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                self.request.sendall(data)


def read_frames(directory):
    """Every frame of every finished segment, in order, decoded by python3-msgpack."""
    frames = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".msgpack"):
            continue
        with open(os.path.join(directory, name), "rb") as f:
            unpacker = msgpack.Unpacker(f, raw=False, unicode_errors="surrogateescape",
                                        max_buffer_size=256 << 20)
            for frame in unpacker:
                frames.append(frame)
    return frames


COMMON = {"v": int, "id": str, "type": str, "gen": int, "worker": int, "seq": int, "conn_id": int,
          "ts": int, "listener": str, "client": str, "dst": str, "upstream": str}
MSG = {"version": str, "headers": list, "body": bytes, "body_size": int, "body_truncated": bool,
       "chunked": bool}


class Sidetap(harness.Sidetap):
    """sidetap with capture on, its uploader, a ring and a sink in a scratch directory."""

    def __init__(self, test, upstream_port, *extra):
        super().__init__(test, "sidetap-cap-")
        self.sink = os.path.join(self.dir, "capture")
        self.start(BINDIR, upstream_port,
                   ["--ring=" + os.path.join(self.dir, "ring"), "--sink=file:" + self.sink,
                    "--log-level=info"] + list(extra))

    def uploader_pid(self):
        with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
            kids = f.read().split()
        return int(kids[0]) if kids else None

    def stop(self):
        """SIGTERM: drain, flush capture through the uploader, exit 0. Returns the frames."""
        super().stop(timeout=30)
        return read_frames(self.sink)


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "20"] + list(args), check=True,
                          stdout=subprocess.PIPE).stdout


def http_frames(frames):
    return [f for f in frames if f["type"] == "http"]


def header(msg, name):
    return [v for k, v in msg["headers"] if k.lower() == name.lower()]


class CaptureTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if msgpack is None:
            raise unittest.SkipTest("python3-msgpack is missing (apt-get install python3-msgpack)")
        if shutil.which("curl") is None:
            raise unittest.SkipTest("curl is missing (apt-get install curl)")
        cls.server = ThreadingServer(("127.0.0.1", 0), Upstream)
        cls.port = cls.server.server_address[1]
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def setUp(self):
        self.st = Sidetap(self, self.port)

    def tearDown(self):
        self.st.close()

    def check_frame(self, f):
        """Every key of FORMAT.md with its type: what an independent reader relies on."""
        for key, typ in COMMON.items():
            self.assertIsInstance(f.get(key), typ, "%s in %r" % (key, f))
        self.assertEqual(f["v"], 1)
        self.assertEqual(f["id"], "%016x-%d-%d" % (f["gen"], f["worker"], f["seq"]))
        self.assertEqual(f["listener"], "inbound")
        self.assertEqual(f["upstream"], "127.0.0.1:%d" % self.port)
        self.assertEqual(f["dst"], "127.0.0.1:%d" % self.st.port)
        if f["type"] == "http":
            for key, typ in MSG.items():
                self.assertIsInstance(f["req"].get(key), typ, key)
                if f["resp"] is not None:
                    self.assertIsInstance(f["resp"].get(key), typ, key)
            self.assertIsInstance(f["flags"], list)

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.st.port, path)

    def test_requests_of_every_shape_become_pairs(self):
        curl(self.url("/hello"))
        self.assertEqual(curl("-d", "name=demo&x=1", self.url("/echo")), b"name=demo&x=1")
        curl("-I", self.url("/hello"))
        curl(self.url("/empty"))
        curl("-H", 'If-None-Match: "v1"', self.url("/cached"))
        self.assertEqual(curl(self.url("/chunked")), b"first second third")
        frames = self.st.stop()
        for f in frames:
            self.check_frame(f)
        pairs = {f["req"]["target"] + " " + f["req"]["method"]: f for f in http_frames(frames)}
        self.assertEqual(len(pairs), 6, sorted(pairs))

        get = pairs["/hello GET"]
        self.assertEqual(get["req"]["version"], "1.1")
        self.assertEqual(header(get["req"], "Host"), ["127.0.0.1:%d" % self.st.port])
        self.assertEqual(get["resp"]["status"], 200)
        self.assertEqual(get["resp"]["reason"], "OK")
        self.assertEqual(get["resp"]["body"], b"hello\n")
        self.assertEqual(header(get["resp"], "X-Twice"), ["a", "b"], "repeated headers kept")
        timing = get["timing"]
        self.assertTrue(timing["req_start"] <= timing["req_end"] <= timing["resp_start"]
                        <= timing["resp_end"], timing)

        post = pairs["/echo POST"]
        self.assertEqual(post["req"]["body"], b"name=demo&x=1")
        self.assertEqual(post["req"]["body_size"], 13)
        self.assertEqual(post["resp"]["body"], b"name=demo&x=1")

        head = pairs["/hello HEAD"]
        self.assertIn("head", head["flags"])
        self.assertEqual(head["resp"]["body"], b"")
        self.assertEqual(header(head["resp"], "Content-Length"), ["6"])

        self.assertEqual(pairs["/empty GET"]["resp"]["status"], 204)
        self.assertEqual(pairs["/cached GET"]["resp"]["status"], 304)
        chunked = pairs["/chunked GET"]["resp"]
        self.assertTrue(chunked["chunked"])
        self.assertEqual(chunked["body"], b"first second third", "captured de-chunked")

        conns = [f for f in frames if f["type"] == "conn"]
        opens = [f for f in conns if f["event"] == "open"]
        closes = [f for f in conns if f["event"] == "close"]
        self.assertEqual(len(opens), 6)
        self.assertEqual(len(closes), 6)
        self.assertTrue(all(f["proto"] == "http1" for f in closes))
        self.assertEqual(len({f["id"] for f in frames}), len(frames), "frame ids are unique")

    def test_chunked_upload_with_expect_100_continue(self):
        body = pattern(3000)
        path = os.path.join(self.st.dir, "upload")
        with open(path, "wb") as f:
            f.write(body)
        got = curl("-H", "Transfer-Encoding: chunked", "-H", "Expect: 100-continue",
                   "--data-binary", "@" + path, self.url("/echo"))
        self.assertEqual(got, body)
        (pair,) = http_frames(self.st.stop())
        self.assertTrue(pair["req"]["chunked"])
        self.assertEqual(pair["req"]["body"], body, "request body captured de-chunked")
        self.assertEqual(pair["resp"]["informational"], [100])
        self.assertEqual(pair["resp"]["status"], 200)
        self.assertEqual(pair["resp"]["body"], body)

    def test_hundred_requests_on_one_keepalive_connection(self):
        urls = [self.url("/hello?i=%d" % i) for i in range(100)]
        curl(*urls)
        pairs = http_frames(self.st.stop())
        self.assertEqual(len(pairs), 100)
        self.assertEqual(len({p["conn_id"] for p in pairs}), 1, "one connection")
        self.assertEqual([p["pair"] for p in pairs], list(range(1, 101)))
        self.assertEqual([p["req"]["target"] for p in pairs], ["/hello?i=%d" % i for i in range(100)])

    def test_pipelined_requests_pair_in_order(self):
        reqs = b"".join(b"GET /hello?p=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(10))
        with socket.create_connection(("127.0.0.1", self.st.port)) as s:
            s.sendall(reqs)
            data = b""
            while data.count(b"hello\n") < 10:
                chunk = s.recv(65536)
                self.assertTrue(chunk, "connection closed early")
                data += chunk
        pairs = http_frames(self.st.stop())
        self.assertEqual([p["req"]["target"] for p in pairs], ["/hello?p=%d" % i for i in range(10)])
        self.assertTrue(all(p["resp"]["status"] == 200 for p in pairs))

    def test_gzip_response_body_kept_as_sent(self):
        body = curl(self.url("/gzip"))
        (pair,) = http_frames(self.st.stop())
        self.assertEqual(header(pair["resp"], "Content-Encoding"), ["gzip"])
        self.assertEqual(pair["resp"]["body"], body)
        self.assertEqual(gzip.decompress(pair["resp"]["body"]), b"compressed hello\n" * 20)

    def test_ten_mib_body_truncated_in_capture_but_forwarded_whole(self):
        n = 10 << 20
        got = curl(self.url("/big?n=%d" % n))
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(pattern(n)).hexdigest(),
                         "forwarded intact")
        (pair,) = http_frames(self.st.stop())
        resp = pair["resp"]
        self.assertTrue(resp["body_truncated"])
        self.assertEqual(resp["body_size"], n)
        self.assertEqual(resp["body"], pattern(n)[:1 << 20], "the first --capture-body-limit bytes")

    def test_upgrade_then_the_stream_as_tcp_frames(self):
        with socket.create_connection(("127.0.0.1", self.st.port)) as s:
            s.sendall(b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                      b"Upgrade: echo\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(4096)
            self.assertTrue(head.startswith(b"HTTP/1.1 101"), head)
            rest = head.split(b"\r\n\r\n", 1)[1]
            for msg in (b"ping", b"pong after ping"):
                s.sendall(msg)
                while len(rest) < len(msg):
                    rest += s.recv(4096)
                self.assertEqual(rest[:len(msg)], msg)
                rest = rest[len(msg):]
        frames = self.st.stop()
        (pair,) = http_frames(frames)
        self.assertIn("upgrade", pair["flags"])
        self.assertEqual(pair["resp"]["status"], 101)
        tcp = [f for f in frames if f["type"] == "tcp"]
        c2u = b"".join(f["data"] for f in tcp if f["dir"] == "c2u")
        u2c = b"".join(f["data"] for f in tcp if f["dir"] == "u2c")
        self.assertEqual(c2u, b"pingpong after ping")
        self.assertEqual(u2c, b"pingpong after ping")

    def test_sidetapctl_dump_and_har(self):
        curl(self.url("/hello"))
        curl("-d", "x", self.url("/echo"))
        curl(self.url("/empty"))
        frames = self.st.stop()
        ctl = os.path.join(BINDIR, "sidetapctl")
        out = subprocess.run([ctl, "dump", self.st.sink], check=True, stdout=subprocess.PIPE).stdout
        lines = [json.loads(line) for line in out.decode().splitlines()]
        self.assertEqual([l["id"] for l in lines], [f["id"] for f in frames],
                         "sidetapctl and python-msgpack see the same frames")
        for line in lines:
            for key in ("id", "type", "conn_id", "listener"):
                self.assertIn(key, line)
        hello = [l for l in lines if l["type"] == "http" and l["request"]["target"] == "/hello"][0]
        self.assertEqual(hello["request"]["method"], "GET")
        self.assertEqual(hello["response"]["body"], "hello\n")
        self.assertEqual(hello["response"]["body_encoding"], "utf-8")
        for key in ("method", "target", "version", "headers", "body", "body_encoding",
                    "body_size", "body_truncated"):
            self.assertIn(key, hello["request"])
        for key in ("status", "reason", "headers", "body", "body_encoding", "body_size",
                    "body_truncated"):
            self.assertIn(key, hello["response"])
        only = subprocess.run([ctl, "dump", "--type", "http", "--status", "204", self.st.sink],
                              check=True, stdout=subprocess.PIPE).stdout.decode().splitlines()
        self.assertEqual([json.loads(l)["request"]["target"] for l in only], ["/empty"])
        two = subprocess.run([ctl, "dump", "--status", "2xx", self.st.sink], check=True,
                             stdout=subprocess.PIPE).stdout.decode().splitlines()
        self.assertEqual(len(two), 3)

        har = json.loads(subprocess.run([ctl, "har", self.st.sink], check=True,
                                        stdout=subprocess.PIPE).stdout)
        log = har["log"]
        self.assertEqual(log["version"], "1.2")
        self.assertEqual(log["creator"]["name"], "sidetap")
        self.assertEqual(len(log["entries"]), 3)
        for e in log["entries"]:
            for key in ("startedDateTime", "time", "request", "response", "cache", "timings"):
                self.assertIn(key, e)
            time.strptime(e["startedDateTime"][:19], "%Y-%m-%dT%H:%M:%S")
            for key in ("method", "url", "httpVersion", "cookies", "headers", "queryString",
                        "headersSize", "bodySize"):
                self.assertIn(key, e["request"])
            for key in ("status", "statusText", "httpVersion", "cookies", "headers", "content",
                        "redirectURL", "headersSize", "bodySize"):
                self.assertIn(key, e["response"])
            self.assertIn("mimeType", e["response"]["content"])
            for key in ("send", "wait", "receive"):
                self.assertGreaterEqual(e["timings"][key], 0)
        urls = sorted(e["request"]["url"] for e in log["entries"])
        self.assertEqual(urls, sorted("http://127.0.0.1:%d%s" % (self.st.port, p)
                                      for p in ("/hello", "/echo", "/empty")))
        post = [e for e in log["entries"] if e["request"]["method"] == "POST"][0]
        self.assertEqual(post["request"]["postData"]["text"], "x")

    def test_sidetapctl_refuses_what_is_not_a_capture(self):
        ctl = os.path.join(BINDIR, "sidetapctl")
        self.st.stop()
        bad = os.path.join(self.st.dir, "notes.txt")
        with open(bad, "w") as f:
            f.write("hello, this is not msgpack\n")
        run = subprocess.run([ctl, "dump", bad], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(run.returncode, 1)
        self.assertIn(b"not a sidetap capture file", run.stderr)
        run = subprocess.run([ctl, "dump", "/nonexistent"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.assertEqual(run.returncode, 1)
        self.assertIn(b"No such file", run.stderr)


class RingLifecycleTest(unittest.TestCase):
    """A standalone uploader across a sidetap restart, and two sidetaps on one ring."""

    def setUp(self):
        if msgpack is None:
            self.skipTest("python3-msgpack is missing (apt-get install python3-msgpack)")
        self.server = ThreadingServer(("127.0.0.1", 0), Upstream)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()

    def test_restarted_proxy_new_generation_is_noticed_by_the_uploader(self):
        port = self.server.server_address[1]
        first = Sidetap(self, port, "--uploader=off")
        ring = os.path.join(first.dir, "ring")
        sink = first.sink
        up = subprocess.Popen([os.path.join(BINDIR, "sidetap-uploader"), "--ring", ring,
                               "--sink", "file:" + sink, "--segment-ms", "100"],
                              stderr=subprocess.PIPE)
        second = None
        try:
            curl("http://127.0.0.1:%d/hello?gen=1" % first.port)
            # sidetap dies outright: the ring stays as it was, its frames unshipped or not.
            first.proc.kill()
            first.proc.wait()
            second = Sidetap(self, port, "--uploader=off", "--ring=" + ring, "--sink=file:" + sink)
            curl("http://127.0.0.1:%d/hello?gen=2" % second.port)
            deadline = time.time() + 10
            pairs = []
            while time.time() < deadline:
                pairs = http_frames(read_frames(sink))
                if len(pairs) == 2:
                    break
                time.sleep(0.1)
            self.assertEqual(sorted(p["req"]["target"] for p in pairs),
                             ["/hello?gen=1", "/hello?gen=2"])
            self.assertEqual(len({p["gen"] for p in pairs}), 2, "a new generation per start")
        finally:
            up.send_signal(signal.SIGTERM)
            up.wait(timeout=10)
            if second:
                second.close()
            first.close()

    def test_second_sidetap_on_a_ring_in_use_is_refused(self):
        first = Sidetap(self, self.server.server_address[1])
        try:
            run = subprocess.run([os.path.join(BINDIR, "sidetap"), "--inbound-addr=127.0.0.1:0",
                                  "--outbound-addr=off", "--admin-addr=off",
                                  "--ring=" + os.path.join(first.dir, "ring")],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
            self.assertEqual(run.returncode, 1)
            self.assertIn(b"ring in use by another sidetap", run.stdout)
            self.assertIn(b"pid=%d" % first.proc.pid, run.stdout)
        finally:
            first.close()

    def test_sidetapctl_stats_reads_admin_and_ring(self):
        st = Sidetap(self, self.server.server_address[1])
        try:
            curl("http://127.0.0.1:%d/hello" % st.port)
            ctl = os.path.join(BINDIR, "sidetapctl")
            # curl is done when it has the response; sidetap records the close a moment later.
            deadline = time.time() + 5
            while True:
                out = subprocess.run([ctl, "stats", "--admin", "127.0.0.1:%d" % st.admin],
                                     check=True, stdout=subprocess.PIPE).stdout.decode()
                if "capture: frames 3," in out or time.time() > deadline:
                    break
                time.sleep(0.05)
            self.assertIn("inbound   connections: accepted 1,", out)
            self.assertIn("capture: frames 3,", out, "open, pair, close")
            out = subprocess.run([ctl, "stats", "--ring", os.path.join(st.dir, "ring")],
                                 check=True, stdout=subprocess.PIPE).stdout.decode()
            self.assertIn("running, producer pid %d, 2 rings" % st.proc.pid, out)
            self.assertEqual(out.count("dropped 0 (0 bytes)"), 2)
            run = subprocess.run([ctl, "stats", "--admin", "127.0.0.1:1"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            self.assertEqual(run.returncode, 1)
            self.assertIn(b"cannot read http://127.0.0.1:1/metrics", run.stderr)
        finally:
            st.close()


class Recorder(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """Reads what arrives until the client's half-close, keeps it, answers one 200 and closes."""

    daemon_threads = True
    allow_reuse_address = True
    seen = []

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            data = b""
            while True:
                chunk = self.request.recv(65536)
                if not chunk:
                    break
                data += chunk
            Recorder.seen.append(data)
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


class RedactionTest(unittest.TestCase):
    """TESTPLAN X1: credentials are forwarded as they are but never enter the ring."""

    BODY = b'{"user": "bob", "password": "CANARY-B1", "client": {"apiKey": "CANARY-B2"}}'
    REQUEST = (b"POST /login?user=bob&token=CANARY-Q1 HTTP/1.1\r\nHost: x\r\n"
               b"Authorization: Bearer CANARY-H1\r\nProxy-Authorization: Basic CANARY-H2\r\n"
               b"Cookie: sid=CANARY-H3\r\nX-Api-Key: CANARY-H4\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
               % (len(BODY), BODY))

    def captured(self, *flags):
        """Sends REQUEST through sidetap; returns what the upstream got and the ring and sink
        files' bytes."""
        server = Recorder(("127.0.0.1", 0), Recorder.Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        Recorder.seen.clear()
        st = Sidetap(self, server.server_address[1], *flags)
        try:
            with socket.create_connection(("127.0.0.1", st.port)) as c:
                c.sendall(self.REQUEST)
                c.shutdown(socket.SHUT_WR)
                while c.recv(65536):
                    pass
            self.assertTrue(harness.wait_for(lambda: Recorder.seen, 5))
            frames = st.stop()
            stored = b""
            for root, _, files in os.walk(st.dir):
                for name in files:
                    if name != "sidetap.log":
                        with open(os.path.join(root, name), "rb") as f:
                            stored += f.read()
        finally:
            st.close()
        self.assertEqual(len(http_frames(frames)), 1)
        return Recorder.seen[0], stored

    def test_credentials_are_forwarded_but_never_stored(self):
        if msgpack is None:
            self.skipTest("python3-msgpack is missing (apt-get install python3-msgpack)")
        seen, stored = self.captured()
        self.assertEqual(seen, self.REQUEST, "forwarding changed the request")
        self.assertGreater(len(stored), 0)
        self.assertNotIn(b"CANARY", stored, "a credential reached the ring or the sink")
        self.assertIn(b"/login?user=bob&token=[redacted]", stored)
        self.assertIn(b'"password": "*********"', stored)

    def test_capture_redact_off_stores_them(self):
        if msgpack is None:
            self.skipTest("python3-msgpack is missing (apt-get install python3-msgpack)")
        _, stored = self.captured("--capture-redact=off")
        for canary in (b"CANARY-Q1", b"CANARY-H1", b"CANARY-H2", b"CANARY-H3", b"CANARY-H4",
                       b"CANARY-B1", b"CANARY-B2"):
            self.assertIn(canary, stored)


# TESTPLAN P4: framing that proxies and servers may read differently (request smuggling).
SMUGGLING = {
    "cl_and_te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
    "te_chunked_chunked": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n"
                          b"\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
    "te_space_colon": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"
                      b"0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
    "duplicate_cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 30\r\n"
                    b"\r\nabcGET /admin HTTP/1.1\r\n\r\n",
    "cl_plus": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabcGET /admin HTTP/1.1\r\n\r\n",
    "nul_in_value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
    "bare_lf_chunk": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n"
                     b"0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
    "te_comma_chunked": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                        b"Transfer-Encoding: ,chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
    "tab_before_te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                     b"\tTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
    "empty_cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
    "hex_cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n"
              b"GET /admin HTTP/1.1\r\n\r\n",
    "cl_trailing_garbage": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1Z\r\n\r\n"
                           b"aGET /admin HTTP/1.1\r\n\r\n",
    "chunk_size_overflow": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"ffffffffffffffffff1\r\nabc\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
}


class SmugglingTest(unittest.TestCase):
    def test_smuggling_shapes_pass_unchanged_and_are_flagged_desync(self):
        if msgpack is None:
            self.skipTest("python3-msgpack is missing (apt-get install python3-msgpack)")
        server = Recorder(("127.0.0.1", 0), Recorder.Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        st = Sidetap(self, server.server_address[1])
        try:
            for name, payload in SMUGGLING.items():
                Recorder.seen.clear()
                with socket.create_connection(("127.0.0.1", st.port)) as s:
                    s.sendall(payload)
                    s.shutdown(socket.SHUT_WR)
                    while s.recv(65536):
                        pass
                deadline = time.time() + 5
                while not Recorder.seen and time.time() < deadline:
                    time.sleep(0.01)
                self.assertEqual(Recorder.seen, [payload], "%s: forwarded bytes changed" % name)
            frames = st.stop()
            by_conn = {}
            for f in http_frames(frames):
                by_conn.setdefault(f["conn_id"], []).append(f)
            self.assertEqual(len(by_conn), len(SMUGGLING))
            for pairs in by_conn.values():
                targets = [p["req"]["target"] for p in pairs]
                self.assertNotIn("/admin", targets, "a smuggled request became a pair")
                self.assertTrue(any("desync" in p["flags"] for p in pairs), targets)
        finally:
            st.close()
            server.shutdown()
            server.server_close()


class UpstreamResetTest(unittest.TestCase):
    """TESTPLAN R7: an upstream that resets mid-body must reach the client as a reset. A clean
    EOF would pass a truncated body delimited by close off as complete."""

    def reset_mid_body(self, mode):
        ls = socket.socket()
        self.addCleanup(ls.close)
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)

        def upstream():
            c, _ = ls.accept()
            c.recv(100)
            c.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
            chunk = os.urandom(1 << 20)
            for _ in range(40):
                c.sendall(chunk)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        t = threading.Thread(target=upstream, daemon=True)
        t.start()
        st = harness.Sidetap(self, "sidetap-reset-")
        self.addCleanup(st.close)
        st.start(BINDIR, ls.getsockname()[1], ["--forward=" + mode, "--capture=" + (
            "on" if mode == "auto" else "off"), "--ring=" + os.path.join(st.dir, "ring"),
            "--sink=file:" + os.path.join(st.dir, "capture")])
        with socket.create_connection(("127.0.0.1", st.port), timeout=20) as c:
            c.sendall(b"GET /big HTTP/1.0\r\n\r\n")
            got = 0
            with self.assertRaises(ConnectionResetError, msg="%s: a clean EOF" % mode):
                while True:
                    d = c.recv(1 << 16)
                    if not d:
                        break
                    got += len(d)
        t.join(20)
        self.assertGreater(got, 0)
        st.stop()

    def test_reset_reaches_the_client_on_the_copy_path(self):
        self.reset_mid_body("copy")

    def test_reset_reaches_the_client_on_the_splice_path(self):
        self.reset_mid_body("splice")

    def test_reset_reaches_the_client_with_auto_and_capture(self):
        self.reset_mid_body("auto")


class TcpCaptureTest(unittest.TestCase):
    """A protocol that is not HTTP: the client's first bytes decide, both directions as streams."""

    def test_non_http_protocol_is_captured_as_tcp_streams(self):
        if msgpack is None:
            self.skipTest("python3-msgpack is missing (apt-get install python3-msgpack)")
        server = EchoServer(("127.0.0.1", 0), EchoServer.Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        st = Sidetap(self, server.server_address[1])
        try:
            sent = [b"*1\r\n$4\r\nPING\r\n", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"]
            with socket.create_connection(("127.0.0.1", st.port)) as s:
                for msg in sent:
                    s.sendall(msg)
                    got = b""
                    while len(got) < len(msg):
                        got += s.recv(4096)
                    self.assertEqual(got, msg)
            frames = st.stop()
            tcp = [f for f in frames if f["type"] == "tcp"]
            for d in ("c2u", "u2c"):
                chunks = [f for f in tcp if f["dir"] == d]
                self.assertEqual(b"".join(f["data"] for f in chunks), b"".join(sent), d)
                offs = [f["off"] for f in chunks]
                self.assertEqual(offs[0], 0)
                self.assertEqual(offs, sorted(offs))
            close = [f for f in frames if f["type"] == "conn" and f["event"] == "close"][0]
            self.assertEqual(close["proto"], "other")
            self.assertEqual(close["bytes_c2u"], sum(map(len, sent)))
        finally:
            st.close()
            server.shutdown()
            server.server_close()


class UploaderCrashTest(unittest.TestCase):
    """SIGKILL the uploader while traffic runs: sidetap restarts it, nothing durable is lost."""

    def test_stop_before_the_uploader_is_up_loses_nothing(self):
        """A SIGTERM that reaches the uploader before its handler is set waits for it."""
        if msgpack is None:
            self.skipTest("python3-msgpack is missing (apt-get install python3-msgpack)")
        server = ThreadingServer(("127.0.0.1", 0), Upstream)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        st = harness.Sidetap(self, "sidetap-early-")
        try:
            # sidetap runs the sidetap-uploader beside it: here one that takes a second to start.
            slow = os.path.join(st.dir, "bin")
            os.mkdir(slow)
            shutil.copy(os.path.join(BINDIR, "sidetap"), slow)
            with open(os.path.join(slow, "sidetap-uploader"), "w") as f:
                # Python, not sh: dash unblocks every signal when it starts.
                f.write("#!/usr/bin/python3\nimport os, sys, time\ntime.sleep(1)\n"
                        "os.execv(%r, [%r] + sys.argv[1:])\n"
                        % ((os.path.join(BINDIR, "sidetap-uploader"),) * 2))
            os.chmod(os.path.join(slow, "sidetap-uploader"), 0o755)
            sink = os.path.join(st.dir, "capture")
            st.start(slow, server.server_address[1],
                     ["--ring=" + os.path.join(st.dir, "ring"), "--sink=file:" + sink])
            with socket.create_connection(("127.0.0.1", st.port), timeout=10) as c:
                c.sendall(b"GET /hello?early=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while c.recv(4096):
                    pass
            st.stop()
            pairs = http_frames(read_frames(sink))
        finally:
            st.close()
            server.shutdown()
        self.assertEqual([p["req"]["target"] for p in pairs], ["/hello?early=1"])

    def test_uploader_killed_during_traffic(self):
        if msgpack is None:
            self.skipTest("python3-msgpack is missing (apt-get install python3-msgpack)")
        server = ThreadingServer(("127.0.0.1", 0), Upstream)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        st = Sidetap(self, server.server_address[1], "--ring-size=64M")
        done = []
        errors = []
        running = [True]

        def traffic():
            i = 0
            while running[0] or i < 100:
                try:
                    with socket.create_connection(("127.0.0.1", st.port), timeout=10) as s:
                        for k in range(5):
                            s.sendall(b"GET /hello?r=%d-%d HTTP/1.1\r\nHost: x\r\n\r\n" % (i, k))
                            data = b""
                            while not data.endswith(b"hello\n"):
                                chunk = s.recv(4096)
                                if not chunk:
                                    raise IOError("closed early")
                                data += chunk
                            done.append((i, k))
                except Exception as e:  # the proxy must not fail a single request
                    errors.append(repr(e))
                i += 1

        try:
            t = threading.Thread(target=traffic)
            t.start()
            kills = 0
            deadline = time.time() + 30
            while kills < 5 and time.time() < deadline:
                time.sleep(0.25)
                pid = st.uploader_pid()
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
            running[0] = False
            t.join()
            self.assertEqual(errors, [], "traffic was affected")
            self.assertEqual(kills, 5, "the uploader was not killed five times during traffic")
            self.assertGreaterEqual(st.metric("sidetap_uploader_restarts_total"), kills - 1)
            self.assertEqual(st.metric("sidetap_capture_dropped_frames_total"), 0)
            frames = st.stop()
            ids = [f["id"] for f in frames]
            unique = {f["id"]: f for f in frames}
            pairs = [f for f in unique.values() if f["type"] == "http"]
            self.assertEqual(len(pairs), len(done), "every request captured, at least once")
            self.assertEqual({p["req"]["target"] for p in pairs},
                             {"/hello?r=%d-%d" % d for d in done})
            for fid in set(ids):
                copies = [f for f in frames if f["id"] == fid]
                self.assertTrue(all(c == copies[0] for c in copies), "duplicates are identical")
            segments = [n for n in os.listdir(st.sink)]
            self.assertFalse([n for n in segments if n.endswith(".partial")],
                             "no unfinished segment left")
        finally:
            st.close()
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    BINDIR = sys.argv.pop(1)
    unittest.main(verbosity=2)
