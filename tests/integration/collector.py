# SPDX-License-Identifier: Apache-2.0
"""A capture collector for tests and benchmarks: takes sidetap-uploader's POSTs (capture files,
application/vnd.sidetap.frames+msgpack, optionally gzip or zstd encoded), keeps the bodies and the
frame ids they hold, and answers as it is told: 200, a status such as 503 or 401, a token check,
or a request that hangs.

As a program (for perf/uploader_bench.sh): collector.py PORT [--count-only] serves until killed
and prints "frames=N requests=M" on each SIGUSR1 and at exit.
"""
import gzip
import http.server
import os
import signal
import socketserver
import ssl
import subprocess
import sys
import threading
import time

try:
    import msgpack
except ImportError:  # the tests that decode say why they skip
    msgpack = None

CONTENT_TYPE = "application/vnd.sidetap.frames+msgpack"


def decode_frames(body):
    """Every frame of a capture file, decoded by python3-msgpack (an independent decoder)."""
    unpacker = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape",
                                max_buffer_size=max(len(body), 1 << 20))
    unpacker.feed(body)
    return list(unpacker)


def zstd_decompress(data):
    return subprocess.run(["zstd", "-d", "-c", "-q"], input=data, check=True,
                          stdout=subprocess.PIPE).stdout


class Collector(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """State shared by the handler threads; change the attributes to change its answers."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port=0, tls=None, decode=True):
        super().__init__(("127.0.0.1", port), Handler)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.socket = ctx.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        self.decode = decode
        self.lock = threading.Lock()
        self.status = 200  # what POSTs get
        self.hang_s = 0  # sleep this long before answering
        self.token = None  # when set, "Authorization: Bearer <token>" or 401
        self.bodies = []  # raw request bodies as sent (before decompression), acknowledged ones
        self.ids = []  # frame ids of acknowledged requests, duplicates kept
        self.frames = 0
        self.requests = 0  # all POSTs, whatever they got
        self.refused = 0
        self.encodings = set()
        self.errors = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address):
        # A client that gave up (its timeout) before the answer: expected in the hang tests.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    def unique_ids(self):
        with self.lock:
            return set(self.ids)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        c = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with c.lock:
            c.requests += 1
            status, hang, token = c.status, c.hang_s, c.token
        if hang:
            time.sleep(hang)
        if token is not None and self.headers.get("Authorization") != "Bearer " + token:
            with c.lock:
                c.refused += 1
            self.answer(401, b"invalid token: the collector wants another one")
            return
        if status != 200:
            with c.lock:
                c.refused += 1
            self.answer(status, b"collector says %d" % status)
            return
        if self.headers.get("Content-Type") != CONTENT_TYPE:
            c.errors.append("content type %r" % self.headers.get("Content-Type"))
        enc = self.headers.get("Content-Encoding", "identity")
        raw = body
        try:
            if enc == "gzip":
                raw = gzip.decompress(body)
            elif enc == "zstd":
                raw = zstd_decompress(body)
            if c.decode:
                frames = decode_frames(raw)
                ids = [f["id"] for f in frames]
                if int(self.headers.get("X-Sidetap-Frames", "-1")) != len(frames):
                    c.errors.append("X-Sidetap-Frames %s for %d frames"
                                    % (self.headers.get("X-Sidetap-Frames"), len(frames)))
            else:
                ids = []
                frames = [None] * int(self.headers.get("X-Sidetap-Frames", "0"))
        except Exception as e:  # a body that is not a capture file fails the test that reads errors
            c.errors.append(repr(e))
            self.answer(400, b"not a capture file")
            return
        with c.lock:
            if c.decode:
                c.bodies.append(raw)
            c.encodings.add(enc)
            c.ids.extend(ids)
            c.frames += len(frames)
        self.answer(200)


def main():
    port = int(sys.argv[1])
    c = Collector(port, decode="--count-only" not in sys.argv)

    def report(*_):
        print("frames=%d requests=%d" % (c.frames, c.requests), flush=True)

    signal.signal(signal.SIGUSR1, report)
    signal.signal(signal.SIGTERM, lambda *_: (report(), os._exit(0)))
    print("listening port=%d" % c.port, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
