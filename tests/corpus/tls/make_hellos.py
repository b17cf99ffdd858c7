#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Captures real TLS ClientHellos for tests/unit/capture/test_tls_hello.c: each client connects
to a recording relay in front of a local `openssl s_server`; the relay writes the client's first
records, up to the end of its ClientHello, to <name>.bin and forwards everything both ways.

  /usr/bin/python3 tests/corpus/tls/make_hellos.py [OUTDIR]   (default: this directory)

Needs openssl and curl; Chromium (chromium-headless-shell or chromium) is used when installed
and skipped otherwise. Key shares and randoms differ on every run; the fields the test checks
(SNI, ALPN, versions) do not.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def hello_end(buf):
    """Bytes of the records that hold a complete ClientHello at the start of buf, or 0."""
    pos, hs = 0, b""
    while len(buf) >= pos + 5:
        if buf[pos] != 22:
            raise ValueError("not a handshake record")
        rlen = int.from_bytes(buf[pos + 3:pos + 5], "big")
        if len(buf) < pos + 5 + rlen:
            return 0
        hs += buf[pos + 5:pos + 5 + rlen]
        pos += 5 + rlen
        if len(hs) >= 4 and len(hs) >= 4 + int.from_bytes(hs[1:4], "big"):
            return pos
    return 0


class Relay:
    """One connection at a time: records the client's ClientHello into self.path, then pumps."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.path = None
        self.done = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def expect(self, path):
        self.path = path
        self.done.clear()

    def serve(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self.conn, args=(c,), daemon=True).start()

    def conn(self, c):
        u = socket.create_connection(("127.0.0.1", self.upstream_port))
        buf, path = b"", self.path
        self.path = None  # only the first connection of each client is recorded

        def back():
            try:
                while data := u.recv(65536):
                    c.sendall(data)
            except OSError:
                pass
            finally:
                c.close()

        threading.Thread(target=back, daemon=True).start()
        try:
            while data := c.recv(65536):
                if path and not self.done.is_set():
                    buf += data
                    end = hello_end(buf)
                    if end:
                        with open(path, "wb") as f:
                            f.write(buf[:end])
                        self.done.set()
                u.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            u.close()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else HERE
    tmp = tempfile.mkdtemp()
    crt, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", "/CN=example.com"], check=True,
                   capture_output=True)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    sport = probe.getsockname()[1]
    probe.close()
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{sport}",
                               "-cert", crt, "-key", key, "-www", "-alpn", "http/1.1"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    relay = Relay(sport)
    p = relay.port
    sclient = ["openssl", "s_client", "-connect", f"127.0.0.1:{p}"]
    curl = ["curl", "-sk", "-o", "/dev/null", "--max-time", "5"]
    clients = {
        "openssl_tls13_sni_alpn": sclient + ["-servername", "example.com", "-alpn",
                                             "h2,http/1.1", "-tls1_3"],
        "openssl_tls12_sni_alpn": sclient + ["-servername", "example.com", "-alpn",
                                             "h2,http/1.1", "-tls1_2"],
        "openssl_no_sni": sclient + ["-noservername"],
        "openssl_ip_sni": sclient + ["-servername", "192.0.2.7", "-alpn", "http/1.1"],
        "curl_sni_alpn": curl + ["--resolve", f"example.com:{p}:127.0.0.1",
                                 f"https://example.com:{p}/"],
        "curl_http11_ip": curl + ["--http1.1", f"https://127.0.0.1:{p}/"],
    }
    chromium = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if chromium:
        clients["chromium_sni_alpn"] = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--user-data-dir=" + os.path.join(tmp, "chromium"),
            f"--host-resolver-rules=MAP example.com 127.0.0.1",
            "--ignore-certificate-errors", "--dump-dom", f"https://example.com:{p}/"]
    else:
        print("make_hellos: no chromium installed: skipping its ClientHello", file=sys.stderr)
    try:
        for name, argv in clients.items():
            path = os.path.join(out, name + ".bin")
            relay.expect(path)
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            ok = relay.done.wait(20)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if not ok:
                print(f"make_hellos: {name}: no ClientHello recorded", file=sys.stderr)
                return 1
            print(f"{name}.bin: {os.path.getsize(path)} bytes")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
