# SPDX-License-Identifier: Apache-2.0
"""Integration tests of TLS through the sidetap binary against real peers: curl and openssl
s_client as clients, nginx and openssl s_server as upstreams, certificates made by the test with
the openssl CLI, sidetap's CA made with sidetapctl. Captures are read back with Debian's
python3-msgpack.

Run by CTest: /usr/bin/python3 test_tls.py BINDIR. Skips, saying why, without openssl, curl,
nginx or python3-msgpack.
"""
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

try:
    import msgpack
except ImportError:
    msgpack = None

BINDIR = None
NGINX = "/usr/sbin/nginx"


def run(*args, **kw):
    return subprocess.run(list(args), check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("process exited before listening on %d" % port)
            time.sleep(0.02)
    raise RuntimeError("nothing listens on %d" % port)


class Pki:
    """An upstream CA and the certificates upstreams present, good and bad."""

    def __init__(self, d):
        self.d = d
        self.ca = self.path("up-ca")
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", self.ca + ".key", "-out", self.ca + ".crt", "-days", "30",
            "-subj", "/CN=upstream test CA")
        self.other_ca = self.path("other-ca")
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", self.other_ca + ".key", "-out", self.other_ca + ".crt", "-days",
            "30", "-subj", "/CN=a CA nobody trusts")

    def path(self, name):
        return os.path.join(self.d, name)

    def leaf(self, name, san, ca=None, days="30"):
        """A leaf for <san> signed by <ca> (the upstream CA by default); returns (crt, key)."""
        ca = ca or self.ca
        base = self.csr(name)
        ext = base + ".ext"
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\n" % san)
        run("openssl", "x509", "-req", "-in", base + ".csr", "-CA", ca + ".crt", "-CAkey",
            ca + ".key", "-CAcreateserial", "-out", base + ".crt", "-extfile", ext, "-days", days)
        return base + ".crt", base + ".key"

    def csr(self, name):
        base = self.path(name)
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", base + ".key", "-out", base + ".csr", "-subj", "/CN=" + name)
        return base

    def expired(self, name, san):
        """A leaf for <san> that was valid for one day in 2020 (openssl ca can backdate)."""
        base = self.csr(name)
        db = self.path("ca-db")
        os.makedirs(db, exist_ok=True)
        open(os.path.join(db, "index.txt"), "w").close()
        with open(os.path.join(db, "serial"), "w") as f:
            f.write("1000\n")
        conf = os.path.join(db, "ca.cnf")
        with open(conf, "w") as f:
            f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = {db}/index.txt\n"
                    "new_certs_dir = {db}\nserial = {db}/serial\ndefault_md = sha256\n"
                    "policy = p\nx509_extensions = e\n[p]\ncommonName = supplied\n"
                    "[e]\nsubjectAltName = {san}\nextendedKeyUsage = serverAuth\n"
                    .format(db=db, san=san))
        run("openssl", "ca", "-batch", "-config", conf, "-cert", self.ca + ".crt", "-keyfile",
            self.ca + ".key", "-in", base + ".csr", "-out", base + ".crt", "-notext",
            "-startdate", "20200101000000Z", "-enddate", "20200102000000Z")
        return base + ".crt", base + ".key"

    def self_signed(self, name):
        base = self.path(name)
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", base + ".key", "-out", base + ".crt", "-days", "30", "-subj",
            "/CN=" + name, "-addext", "subjectAltName=DNS:" + name)
        return base + ".crt", base + ".key"


class Nginx:
    """An HTTPS origin: a small page, a 10 MiB file, keep-alive."""

    def __init__(self, d, crt, key, port=None):
        self.port = port or free_port()
        self.dir = d
        www = os.path.join(d, "www-%d" % self.port)
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "hello"), "w") as f:
            f.write("hello over tls\n")
        self.big = os.path.join(www, "big")
        with open(self.big, "wb") as f:
            f.write(os.urandom(10 << 20))
        conf = os.path.join(d, "nginx-%d.conf" % self.port)
        with open(conf, "w") as f:
            f.write("""
worker_processes 1; daemon off; pid {d}/nginx-{p}.pid; error_log {d}/nginx-{p}.err;
events {{ worker_connections 256; }}
http {{
  access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d}; keepalive_requests 10000;
  server {{
    listen 127.0.0.1:{p} ssl; ssl_certificate {crt}; ssl_certificate_key {key};
    root {www};
    location = /echo {{ return 200 "$request_method $request_uri\\n"; }}
  }}
}}
""".format(d=d, p=self.port, crt=crt, key=key, www=www))
        self.proc = subprocess.Popen([NGINX, "-c", conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def read_frames(directory):
    frames = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".msgpack"):
            with open(os.path.join(directory, name), "rb") as f:
                frames += list(msgpack.Unpacker(f, raw=False, unicode_errors="surrogateescape",
                                                max_buffer_size=256 << 20))
    return frames


class Sidetap:
    """sidetap with its outbound listener in reverse mode in front of <upstream_port>."""
    runs = 0

    def __init__(self, test, d, upstream_port, *flags, inbound=False):
        self.test = test
        Sidetap.runs += 1
        name = "%d-%d" % (upstream_port, Sidetap.runs)
        self.sink = os.path.join(d, "capture-" + name)
        self.log = os.path.join(d, "sidetap-%s.log" % name)
        kind = "inbound" if inbound else "outbound"
        other = "outbound" if inbound else "inbound"
        args = [os.path.join(BINDIR, "sidetap"), "--%s-addr=127.0.0.1:0" % kind,
                "--%s-addr=off" % other, "--%s-mode=reverse" % kind,
                "--%s-upstream=127.0.0.1:%d" % (kind, upstream_port),
                "--admin-addr=127.0.0.1:0", "--workers=2",
                "--ring=" + os.path.join(d, "ring-" + name), "--sink=file:" + self.sink,
                "--tls-handshake-timeout=1000"] + list(flags)
        self.logf = open(self.log, "w")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        text = ""
        while time.time() < deadline:
            text = self.read_log()
            if 'msg="started"' in text or self.proc.poll() is not None:
                break
            time.sleep(0.02)
        test.assertIn('msg="started"', text, "sidetap did not start:\n" + text)
        key = "listener=%s addr=127.0.0.1:" % kind
        self.port = int(text[text.index(key) + len(key):].split()[0])
        key = 'msg="admin endpoint" addr=127.0.0.1:'
        self.admin = int(text[text.index(key) + len(key):].split()[0])

    def read_log(self):
        with open(self.log) as f:
            return f.read()

    def metric(self, series):
        with socket.create_connection(("127.0.0.1", self.admin)) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        for line in data.decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.test.assertEqual(self.proc.wait(timeout=30), 0, self.read_log())
        self.logf.close()
        return read_frames(self.sink)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def curl(port, name, cafile, path="/hello", *extra):
    return subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", cafile, "--resolve",
                           "%s:%d:127.0.0.1" % (name, port)] + list(extra) +
                          ["https://%s:%d%s" % (name, port, path)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for tool in ("openssl", "curl"):
            if shutil.which(tool) is None:
                raise unittest.SkipTest("%s is missing (cmake/deps.sh test)" % tool)
        if not os.access(NGINX, os.X_OK):
            raise unittest.SkipTest("nginx is missing (cmake/deps.sh test)")
        if msgpack is None:
            raise unittest.SkipTest("python3-msgpack is missing (cmake/deps.sh test)")
        cls.d = tempfile.mkdtemp(prefix="sidetap-tls-")
        cls.pki = Pki(cls.d)
        # sidetap's own CA, the one apps trust for minted leaves.
        cls.ca_dir = os.path.join(cls.d, "sidetap-ca")
        run(os.path.join(BINDIR, "sidetapctl"), "ca", "create", "--out", cls.ca_dir)
        cls.ca = os.path.join(cls.ca_dir, "ca.crt")
        crt, key = cls.pki.leaf("api.example.test", "DNS:api.example.test,IP:127.0.0.1")
        cls.good = Nginx(cls.d, crt, key)

    @classmethod
    def tearDownClass(cls):
        cls.good.stop()
        shutil.rmtree(cls.d, ignore_errors=True)

    def unwrap(self, upstream_port, *flags):
        return Sidetap(self, self.d, upstream_port, "--tls-out=unwrap",
                       "--tls-ca-cert=" + self.ca, "--tls-ca-key=" + os.path.join(self.ca_dir,
                                                                                   "ca.key"),
                       "--tls-upstream-ca=" + self.pki.ca + ".crt", *flags)

    def test_unwrapped_https_is_captured_in_plaintext(self):
        st = self.unwrap(self.good.port)
        try:
            r = curl(st.port, "api.example.test", self.ca)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, b"hello over tls\n")
            r = curl(st.port, "api.example.test", self.ca, "/echo?x=1", "-d", "secret=1")
            self.assertEqual(r.stdout, b"POST /echo?x=1\n")
            self.assertEqual(st.metric('sidetap_tls_unwrapped_total{listener="outbound"}'), 2)
            frames = st.stop()
        finally:
            st.close()
        pairs = [f for f in frames if f["type"] == "http"]
        self.assertEqual(sorted(p["req"]["target"] for p in pairs), ["/echo?x=1", "/hello"])
        post = [p for p in pairs if p["req"]["method"] == "POST"][0]
        self.assertEqual(post["req"]["body"], b"secret=1", "plaintext captured")
        self.assertEqual(post["resp"]["body"], b"POST /echo?x=1\n")
        self.assertEqual(post["tls"]["sni"], "api.example.test")
        self.assertIn(post["tls"]["version"], ("TLS1.2", "TLS1.3"), post["tls"])
        tls = [f for f in frames if f["type"] == "tls"]
        self.assertEqual([t["event"] for t in tls], ["unwrapped", "unwrapped"])
        self.assertEqual(tls[0]["sni"], "api.example.test")
        self.assertEqual(tls[0]["upstream_verify"], "ok")
        self.assertIn("http/1.1", tls[0]["alpn_offered"])

    def test_the_minted_leaf_is_for_the_name_and_signed_by_our_ca(self):
        st = self.unwrap(self.good.port)
        try:
            out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % st.port,
                                  "-servername", "api.example.test", "-CAfile", self.ca,
                                  "-verify_return_error", "-showcerts"],
                                 input=b"", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 timeout=10)
            self.assertIn(b"Verify return code: 0 (ok)", out.stdout)
            pem = out.stdout[out.stdout.index(b"-----BEGIN CERTIFICATE-----"):]
            pem = pem[:pem.index(b"-----END CERTIFICATE-----") + 25]
            text = subprocess.run(["openssl", "x509", "-noout", "-text"], input=pem,
                                  stdout=subprocess.PIPE, check=True).stdout.decode()
            self.assertIn("DNS:api.example.test", text)
            self.assertIn("TLS Web Server Authentication", text)
            self.assertIn("CA:FALSE", text)
            self.assertIn("ecdsa-with-SHA256", text)
        finally:
            st.close()

    def test_big_download_and_keepalive_through_unwrap(self):
        st = self.unwrap(self.good.port)
        try:
            out = os.path.join(self.d, "big.out")
            r = curl(st.port, "api.example.test", self.ca, "/big", "-o", out)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(out, "rb") as a, open(self.good.big, "rb") as b:
                self.assertEqual(hashlib.sha256(a.read()).digest(),
                                 hashlib.sha256(b.read()).digest(), "download corrupted")
            urls = ["https://api.example.test:%d/echo?i=%d" % (st.port, i) for i in range(50)]
            r = subprocess.run(["curl", "-sS", "--cacert", self.ca, "--resolve",
                                "api.example.test:%d:127.0.0.1" % st.port] + urls,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.count(b"GET /echo?i="), 50)
            frames = st.stop()
        finally:
            st.close()
        pairs = [f for f in frames if f["type"] == "http"]
        big = [p for p in pairs if p["req"]["target"] == "/big"][0]
        self.assertEqual(big["resp"]["body_size"], 10 << 20)
        self.assertTrue(big["resp"]["body_truncated"])
        keep = [p for p in pairs if p["req"]["target"].startswith("/echo")]
        self.assertEqual(len(keep), 50)
        self.assertEqual(len({p["conn_id"] for p in keep}), 1, "one keep-alive connection")

    def check_refused(self, crt, key, why, name="api.example.test"):
        """An upstream presenting <crt>: the app's handshake fails, nothing reaches the upstream."""
        bad = Nginx(self.d, crt, key)
        st = self.unwrap(bad.port)
        try:
            r = curl(st.port, name, self.ca)
            self.assertNotEqual(r.returncode, 0, "the app got through: %s" % r.stdout)
            self.assertEqual(
                st.metric('sidetap_tls_upstream_verify_failures_total{listener="outbound"}'), 1)
            frames = st.stop()
        finally:
            st.close()
            bad.stop()
        tls = [f for f in frames if f["type"] == "tls"]
        self.assertEqual([t["event"] for t in tls], ["failed"])
        self.assertIn(why, tls[0]["reason"])
        self.assertEqual([f for f in frames if f["type"] == "http"], [], "no request forwarded")

    def test_self_signed_upstream_is_refused(self):
        self.check_refused(*self.pki.self_signed("api.example.test"), why="self-signed")

    def test_untrusted_chain_is_refused(self):
        self.check_refused(*self.pki.leaf("untrusted", "DNS:api.example.test",
                                          ca=self.pki.other_ca), why="issuer")

    def test_wrong_hostname_is_refused_and_the_check_has_teeth(self):
        crt, key = self.pki.leaf("other-name", "DNS:other.example.test")
        self.check_refused(crt, key, why="hostname")
        # The same certificate passes for the name it carries: the refusal was the name.
        ok = Nginx(self.d, crt, key)
        st = self.unwrap(ok.port)
        try:
            r = curl(st.port, "other.example.test", self.ca)
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            st.close()
            ok.stop()

    def test_expired_upstream_is_refused(self):
        crt, key = self.pki.expired("expired", "DNS:api.example.test")
        self.check_refused(crt, key, why="expired")

    def test_passthrough_leaves_tls_untouched_and_records_the_sni(self):
        st = Sidetap(self, self.d, self.good.port)
        try:
            # End to end: the client verifies the upstream's own certificate.
            r = curl(st.port, "api.example.test", self.pki.ca + ".crt")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, b"hello over tls\n")
            frames = st.stop()
        finally:
            st.close()
        tls = [f for f in frames if f["type"] == "tls"]
        self.assertEqual(len(tls), 1)
        self.assertEqual(tls[0]["event"], "passthrough")
        self.assertEqual(tls[0]["sni"], "api.example.test")
        self.assertEqual([f for f in frames if f["type"] in ("http", "tcp")], [],
                         "no ciphertext captured")

    def test_h2_only_client_passes_through(self):
        st = self.unwrap(self.good.port)
        try:
            subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % st.port,
                            "-servername", "api.example.test", "-alpn", "h2",
                            "-CAfile", self.pki.ca + ".crt", "-verify_return_error"],
                           input=b"", stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
            self.assertEqual(st.metric('sidetap_tls_passthrough_total{listener="outbound"}'), 1)
            frames = st.stop()
        finally:
            st.close()
        tls = [f for f in frames if f["type"] == "tls"]
        self.assertEqual(tls[0]["event"], "passthrough")
        self.assertEqual(tls[0]["alpn_offered"], ["h2"])

    def test_stalled_garbage_and_aborted_handshakes(self):
        st = self.unwrap(self.good.port)
        try:
            # Says nothing: the handshake timeout (1 s here) closes it.
            quiet = socket.create_connection(("127.0.0.1", st.port))
            # Half a ClientHello, then gone.
            half = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % st.port,
                                   "-servername", "api.example.test", "-msg"], input=b"Q\n",
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
            with socket.create_connection(("127.0.0.1", st.port)) as s:
                s.sendall(b"\x16\x03\x01\x00\x05hello")
            with socket.create_connection(("127.0.0.1", st.port)) as s:
                s.sendall(b"\x16\x03\x01\xff\xff" + os.urandom(300))
            quiet.settimeout(5)
            t0 = time.time()
            try:
                got = quiet.recv(10)
            except ConnectionResetError:
                got = b""
            self.assertEqual(got, b"", "a silent client was not closed")
            self.assertLess(time.time() - t0, 3)
            quiet.close()
            # Nobody else was hurt.
            r = curl(st.port, "api.example.test", self.ca)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertGreaterEqual(
                st.metric('sidetap_tls_handshake_timeouts_total{listener="outbound"}'), 1)
            del half
            st.stop()
        finally:
            st.close()

    def test_inbound_unwrap_with_the_services_certificate(self):
        crt, key = self.pki.leaf("svc", "DNS:svc.example.test")
        app = Nginx(self.d, crt, key)
        try:
            for upstream in ("tls", "plain"):
                port = app.port
                plain = None
                if upstream == "plain":
                    plain = subprocess.Popen(["/usr/bin/python3", "-m", "http.server", "--bind",
                                              "127.0.0.1", "0"],
                                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                             cwd=self.d)
                    line = plain.stdout.readline().decode()
                    port = int(line.split(" port ")[1].split()[0])
                st = Sidetap(self, self.d, port, "--tls-in-cert=" + crt, "--tls-in-key=" + key,
                             "--tls-in-upstream=" + upstream, inbound=True)
                try:
                    path = "/hello" if upstream == "tls" else "/"
                    r = curl(st.port, "svc.example.test", self.pki.ca + ".crt", path)
                    self.assertEqual(r.returncode, 0, "%s: %s" % (upstream, r.stderr))
                    frames = st.stop()
                finally:
                    st.close()
                    if plain:
                        plain.kill()
                        plain.wait()
                pairs = [f for f in frames if f["type"] == "http"]
                self.assertEqual(len(pairs), 1, upstream)
                self.assertEqual(pairs[0]["listener"], "inbound")
                self.assertEqual(pairs[0]["resp"]["status"], 200, upstream)
        finally:
            app.stop()

    def test_bad_tls_flags_are_refused_with_the_fix(self):
        sidetap = os.path.join(BINDIR, "sidetap")
        r = subprocess.run([sidetap, "--tls-out=unwrap", "--admin-addr=off"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"sidetapctl ca create", r.stdout)
        r = subprocess.run([sidetap, "--tls-out=unwrap", "--tls-ca-cert=/nonexistent",
                            "--tls-ca-key=/nonexistent", "--admin-addr=off", "--capture=off",
                            "--inbound-addr=127.0.0.1:0", "--outbound-addr=127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"/nonexistent", r.stdout)


class KtlsTest(unittest.TestCase):
    def test_ktls_is_used_where_the_kernel_has_it(self):
        try:
            with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
                ulps = f.read()
        except OSError:
            ulps = ""
        if "tls" not in ulps.split():
            subprocess.run(["modprobe", "tls"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
                ulps = f.read()
        if "tls" not in ulps.split():
            self.skipTest("this kernel has no kTLS (the tls ULP is not available): "
                          "sidetap keeps TLS in userspace here")
        self.fail("kTLS is available here: run the kTLS forwarding checks")


if __name__ == "__main__":
    BINDIR = sys.argv.pop(1)
    unittest.main(verbosity=2)
