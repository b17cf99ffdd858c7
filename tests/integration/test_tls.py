# SPDX-License-Identifier: Apache-2.0
"""Integration tests of TLS through the sidetap binary against real peers: curl and openssl
s_client as clients, nginx and openssl s_server as upstreams, certificates made by the test with
the openssl CLI, sidetap's CA made with sidetapctl. Captures are read back with Debian's
python3-msgpack.

Run by CTest: /usr/bin/python3 test_tls.py BINDIR. Skips, saying why, without openssl, curl,
nginx or python3-msgpack.
"""
import calendar
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

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


def slurp(path):
    with open(path, "rb") as f:
        return f.read()


def netns(ns):
    return ["ip", "netns", "exec", ns] if ns else []


def wait_ns_port(ns, addr, port, proc, timeout=10):
    """Waits until something listens on <addr>:<port> in namespace <ns>."""
    deadline = time.time() + timeout
    want = "%s:%d" % (addr, port)
    while time.time() < deadline:
        out = subprocess.run(netns(ns) + ["ss", "-Hltn"], stdout=subprocess.PIPE).stdout.decode()
        if any(want in line for line in out.splitlines()):
            return
        if proc.poll() is not None:
            raise RuntimeError("process exited before listening on %s in %s" % (want, ns))
        time.sleep(0.05)
    raise RuntimeError("nothing listens on %s in %s" % (want, ns))


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

    def __init__(self, d, crt, key, port=None, addr="127.0.0.1", ns=None):
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
    listen {a}:{p} ssl; ssl_certificate {crt}; ssl_certificate_key {key};
    root {www};
    location = /echo {{ return 200 "$request_method $request_uri\\n"; }}
  }}
}}
""".format(d=d, a=addr, p=self.port, crt=crt, key=key, www=www))
        self.proc = subprocess.Popen(netns(ns) + [NGINX, "-c", conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if ns:
            wait_ns_port(ns, addr, self.port, self.proc)
        else:
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
        return harness.scrape(self.admin, series)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.test.assertEqual(self.proc.wait(timeout=30), 0, self.read_log())
        self.logf.close()
        return read_frames(self.sink)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.logf.close()


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

    def download_big(self, st, name):
        """/big through <st>, compared with the origin's file by digest."""
        out = os.path.join(self.d, name)
        r = curl(st.port, "api.example.test", self.ca, "/big", "-o", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(out, "rb") as a, open(self.good.big, "rb") as b:
            self.assertEqual(hashlib.sha256(a.read()).digest(),
                             hashlib.sha256(b.read()).digest(), "download corrupted")

    def test_unwrapped_https_is_captured_in_plaintext(self):
        st = self.unwrap(self.good.port)
        try:
            r = curl(st.port, "api.example.test", self.ca)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, b"hello over tls\n")
            r = curl(st.port, "api.example.test", self.ca, "/echo?x=1", "-d", "item=1")
            self.assertEqual(r.stdout, b"POST /echo?x=1\n")
            self.assertEqual(st.metric('sidetap_tls_unwrapped_total{listener="outbound"}'), 2)
            # The second connection resumed the first one's session with the upstream.
            self.assertEqual(
                st.metric('sidetap_tls_upstream_resumed_total{listener="outbound"}'), 1)
            frames = st.stop()
        finally:
            st.close()
        pairs = [f for f in frames if f["type"] == "http"]
        self.assertEqual(sorted(p["req"]["target"] for p in pairs), ["/echo?x=1", "/hello"])
        post = [p for p in pairs if p["req"]["method"] == "POST"][0]
        self.assertEqual(post["req"]["body"], b"item=1", "plaintext captured")
        self.assertEqual(post["resp"]["body"], b"POST /echo?x=1\n")
        self.assertEqual(post["tls"]["sni"], "api.example.test")
        self.assertIn(post["tls"]["version"], ("TLS1.2", "TLS1.3"), post["tls"])
        tls = [f for f in frames if f["type"] == "tls"]
        self.assertEqual([t["event"] for t in tls], ["unwrapped", "unwrapped"])
        self.assertEqual(tls[0]["sni"], "api.example.test")
        self.assertEqual(tls[0]["upstream_verify"], "ok")
        self.assertIn("http/1.1", tls[0]["alpn_offered"])

    def leaf_text(self, port, name):
        """The leaf sidetap presents for <name>, verified against our CA, as openssl x509 -text."""
        out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                              "-servername", name, "-CAfile", self.ca, "-verify_return_error",
                              "-verify_hostname", name],
                             input=b"", stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
        self.assertIn(b"Verify return code: 0 (ok)", out.stdout, out.stderr)
        pem = out.stdout[out.stdout.index(b"-----BEGIN CERTIFICATE-----"):]
        pem = pem[:pem.index(b"-----END CERTIFICATE-----") + 25]
        return subprocess.run(["openssl", "x509", "-noout", "-text", "-serial", "-startdate",
                               "-enddate"], input=pem, stdout=subprocess.PIPE,
                              check=True).stdout.decode()

    def test_minted_leaves_are_for_the_name_signed_by_our_ca(self):
        # An upstream whose certificate covers every name below.
        crt, key = self.pki.leaf("wild", "DNS:*.leaf.test")
        wild = Nginx(self.d, crt, key)
        st = self.unwrap(wild.port, "--tls-leaf-hours=6")
        serials = set()
        try:
            for i in range(24):
                name = "n%d.leaf.test" % i
                text = self.leaf_text(st.port, name)
                self.assertIn("DNS:%s" % name, text)
                self.assertEqual(text.count("DNS:"), 1, "one name per leaf")
                self.assertIn("TLS Web Server Authentication", text)
                self.assertIn("CA:FALSE", text)
                self.assertIn("ecdsa-with-SHA256", text)
                self.assertIn("ASN1 OID: prime256v1", text)
                serial = int(text.split("serial=")[1].split()[0], 16)
                self.assertGreaterEqual(serial.bit_length(), 64, "serial of 64 random bits")
                serials.add(serial)
                start = text.split("notBefore=")[1].splitlines()[0]
                end = text.split("notAfter=")[1].splitlines()[0]
                fmt = "%b %d %H:%M:%S %Y GMT"
                t0 = calendar.timegm(time.strptime(start, fmt))
                t1 = calendar.timegm(time.strptime(end, fmt))
                self.assertLessEqual(t0, time.time())
                self.assertLessEqual(t1 - t0, 7 * 3600, "--tls-leaf-hours 6, an hour early")
                self.assertGreater(t1, time.time() + 5 * 3600)
            self.assertEqual(len(serials), 24, "serials are unique")
            # The cache: the same name gets the same leaf.
            again = self.leaf_text(st.port, "n0.leaf.test")
            self.assertIn(int(again.split("serial=")[1].split()[0], 16), serials)
        finally:
            st.close()
            wild.stop()

    def test_big_download_and_keepalive_through_unwrap(self):
        st = self.unwrap(self.good.port)
        try:
            self.download_big(st, "big.out")
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

    def test_ktls_auto_seals_in_the_kernel_where_it_can(self):
        st = self.unwrap(self.good.port, "--ktls=auto")
        try:
            # Whatever the kernel has, the bytes are the same.
            self.download_big(st, "big-ktls.out")
            r = curl(st.port, "api.example.test", self.ca, "/echo?k=1", "-d", "ktls=1")
            self.assertEqual(r.stdout, b"POST /echo?k=1\n", r.stderr)
            log = st.read_log()
            tx = st.metric('sidetap_ktls_tx_total{listener="outbound"}')
            fallbacks = st.metric('sidetap_ktls_fallbacks_total{listener="outbound"}')
            supported = st.metric("sidetap_ktls_supported")
            frames = st.stop()
        finally:
            st.close()
        pairs = [f for f in frames if f["type"] == "http"]
        post = [p for p in pairs if p["req"]["method"] == "POST"][0]
        self.assertEqual(post["req"]["body"], b"ktls=1", "plaintext captured")
        if supported != 1:
            # The fallback: a warning that says why and what to do, and TLS in userspace.
            self.assertIn("ktls not supported, TLS stays in userspace", log)
            self.assertIn("fix=", log)
            self.assertEqual(tx, 0)
            why = log.split("ktls not supported")[1].split('why="')[1].split('"')[0]
            self.skipTest("this kernel has no kTLS (%s): the fallback was checked, "
                          "sealing in the kernel was not" % why)
        # curl and nginx speak TLS 1.3 with AES-GCM: both sides of both connections.
        self.assertEqual(tx, 4, "sides handed to the kernel")
        self.assertEqual(fallbacks, 0)

    def test_unwrap_with_splice_forwarding_and_capture_off(self):
        # Nothing of an unwrapped connection may bypass its TLS sessions on the splice path.
        st = self.unwrap(self.good.port, "--forward=splice", "--capture=off")
        try:
            self.download_big(st, "big-splice.out")
            r = curl(st.port, "api.example.test", self.ca, "/echo?s=1", "-d", "x=1")
            self.assertEqual(r.stdout, b"POST /echo?s=1\n", r.stderr)
            self.assertEqual(st.metric('sidetap_tls_unwrapped_total{listener="outbound"}'), 2)
            st.proc.send_signal(signal.SIGTERM)
            self.assertEqual(st.proc.wait(timeout=30), 0, st.read_log())
        finally:
            st.close()

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
            # Bulk: the bytes at both ends are the same (TLS would refuse a changed one).
            out = os.path.join(self.d, "big-pass.out")
            r = curl(st.port, "api.example.test", self.pki.ca + ".crt", "/big", "-o", out)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(out, "rb") as a, open(self.good.big, "rb") as b:
                self.assertEqual(hashlib.sha256(a.read()).digest(),
                                 hashlib.sha256(b.read()).digest())
            frames = st.stop()
        finally:
            st.close()
        tls = [f for f in frames if f["type"] == "tls"]
        self.assertEqual(len(tls), 2)
        self.assertEqual(tls[0]["event"], "passthrough")
        self.assertEqual(tls[0]["sni"], "api.example.test")
        self.assertEqual(tls[0]["upstream"], "127.0.0.1:%d" % self.good.port)
        self.assertIn("off", tls[0]["reason"])
        closes = [f for f in frames if f["type"] == "conn" and f["event"] == "close"]
        self.assertEqual(sorted(c["proto"] for c in closes), ["tls", "tls"])
        self.assertGreater(max(c["bytes_u2c"] for c in closes), 10 << 20)
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
                        plain.stdout.close()
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


POD_IP = "10.232.0.1"
REMOTE_IP = "10.232.0.2"
PROXY_UID = "2102"


class TransparentTlsTest(unittest.TestCase):
    """A pod in a network namespace: iptables REDIRECT sends the app's outbound TCP to
    sidetap's 4140 and inbound TCP to 4143, as an init container sets them up. The app
    (curl, openssl s_client) talks to a remote namespace's nginx and openssl s_server by their
    real addresses; sidetap unwraps both ways."""

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root for network namespaces and iptables")
        for tool in ("ip", "iptables", "setpriv", "openssl", "curl", "ss"):
            if shutil.which(tool) is None:
                raise unittest.SkipTest("%s is missing (cmake/deps.sh test)" % tool)
        if not os.access(NGINX, os.X_OK) or msgpack is None:
            raise unittest.SkipTest("nginx or python3-msgpack is missing (cmake/deps.sh test)")
        pid = os.getpid()
        cls.pod, cls.remote, veth = "st-tlsp-%d" % pid, "st-tlsr-%d" % pid, "stt%d" % (pid % 100000)
        cls.procs = []
        cls.d = tempfile.mkdtemp(prefix="sidetap-tls-ns-")
        os.chmod(cls.d, 0o755)
        try:
            sh = lambda cmd: subprocess.run(cmd, shell=True, check=True, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE)
            harness.two_namespaces(cls.pod, cls.remote, veth, POD_IP, REMOTE_IP)
            sh("ip netns exec {p} sh -ec '"
               "iptables -t nat -N SIDETAP_OUTPUT; "
               "iptables -t nat -A OUTPUT -p tcp -j SIDETAP_OUTPUT; "
               "iptables -t nat -A SIDETAP_OUTPUT -m owner --uid-owner {u} -j RETURN; "
               "iptables -t nat -A SIDETAP_OUTPUT -d 127.0.0.1/32 -j RETURN; "
               "iptables -t nat -A SIDETAP_OUTPUT -p tcp -j REDIRECT --to-ports 4140; "
               "iptables -t nat -N SIDETAP_INBOUND; "
               "iptables -t nat -A PREROUTING -p tcp -j SIDETAP_INBOUND; "
               "iptables -t nat -A SIDETAP_INBOUND -p tcp -j REDIRECT --to-ports 4143'"
               .format(p=cls.pod, u=PROXY_UID))
            cls.pki = Pki(cls.d)
            ca_dir = os.path.join(cls.d, "sidetap-ca")
            run(os.path.join(BINDIR, "sidetapctl"), "ca", "create", "--out", ca_dir)
            cls.ca = os.path.join(ca_dir, "ca.crt")
            # The remote's services, trusted through the upstream CA.
            crt, key = cls.pki.leaf("remote", "DNS:remote.example.test,IP:" + REMOTE_IP)
            cls.nginx = Nginx(cls.d, crt, key, port=443, addr=REMOTE_IP, ns=cls.remote)
            s_server = subprocess.Popen(
                netns(cls.remote) + ["openssl", "s_server", "-accept", REMOTE_IP + ":8443",
                                     "-cert", crt, "-key", key, "-www", "-quiet"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cls.procs.append(s_server)
            wait_ns_port(cls.remote, REMOTE_IP, 8443, s_server)
            # The pod's own app, serving TLS with the service's certificate.
            cls.svc_crt, cls.svc_key = cls.pki.leaf("svc", "DNS:svc.example.test")
            cls.app = Nginx(cls.d, cls.svc_crt, cls.svc_key, port=9443, addr="0.0.0.0",
                            ns=cls.pod)
            # sidetap as its own user, which the rules leave alone.
            run_dir = os.path.join(cls.d, "run")
            os.makedirs(run_dir)
            for path in (run_dir, ca_dir, os.path.join(ca_dir, "ca.key"), cls.svc_key):
                os.chown(path, int(PROXY_UID), int(PROXY_UID))
            cls.sink = os.path.join(run_dir, "capture")
            cls.log = os.path.join(cls.d, "sidetap.log")
            cls.logf = open(cls.log, "w")
            cls.sidetap = subprocess.Popen(
                netns(cls.pod) + ["setpriv", "--reuid=" + PROXY_UID, "--regid=" + PROXY_UID,
                                  "--clear-groups", os.path.join(BINDIR, "sidetap"),
                                  "--inbound-addr=0.0.0.0:4143", "--outbound-addr=127.0.0.1:4140",
                                  "--admin-addr=127.0.0.1:4191", "--workers=2",
                                  "--ring=" + os.path.join(run_dir, "ring"),
                                  "--sink=file:" + cls.sink, "--tls-out=unwrap",
                                  "--tls-ca-cert=" + cls.ca,
                                  "--tls-ca-key=" + os.path.join(ca_dir, "ca.key"),
                                  "--tls-upstream-ca=" + cls.pki.ca + ".crt",
                                  "--tls-in-cert=" + cls.svc_crt, "--tls-in-key=" + cls.svc_key],
                stdout=cls.logf, stderr=subprocess.STDOUT)
            wait_ns_port(cls.pod, "0.0.0.0", 4143, cls.sidetap)
            wait_ns_port(cls.pod, "127.0.0.1", 4140, cls.sidetap)
        except Exception:
            if hasattr(cls, "log"):
                with open(cls.log) as f:
                    sys.stderr.write("sidetap's log:\n" + f.read())
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for p in cls.procs:
            p.kill()
            p.wait()
        for name in ("nginx", "app"):
            if hasattr(cls, name):
                getattr(cls, name).stop()
        if hasattr(cls, "sidetap") and cls.sidetap.poll() is None:
            cls.sidetap.kill()
            cls.sidetap.wait()
        subprocess.run("ip netns del %s; ip netns del %s" % (cls.pod, cls.remote), shell=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(cls.d, ignore_errors=True)

    def in_pod(self, *args, input=None):
        return subprocess.run(netns(self.pod) + list(args), input=input, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=30)

    def test_a_pod_unwraps_both_ways_through_iptables(self):
        # curl by name: SNI, a minted leaf for it, nginx verified by name.
        r = self.in_pod("curl", "-sS", "--max-time", "10", "--cacert", self.ca, "--resolve",
                        "remote.example.test:443:" + REMOTE_IP,
                        "https://remote.example.test/hello")
        self.assertEqual((r.returncode, r.stdout), (0, b"hello over tls\n"),
                         r.stderr + slurp(self.log))
        # A big download, intact.
        out = os.path.join(self.d, "big.out")
        r = self.in_pod("curl", "-sS", "--max-time", "20", "--cacert", self.ca, "--resolve",
                        "remote.example.test:443:" + REMOTE_IP, "-o", out,
                        "https://remote.example.test/big")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(out, "rb") as a, open(self.nginx.big, "rb") as b:
            self.assertEqual(hashlib.sha256(a.read()).digest(), hashlib.sha256(b.read()).digest())
        # openssl s_client to openssl s_server by IP: no SNI, the leaf and the check are for
        # the IP address.
        r = self.in_pod("openssl", "s_client", "-connect", REMOTE_IP + ":8443", "-CAfile",
                        self.ca, "-verify_return_error", "-quiet", "-noservername",
                        input=b"GET /ip HTTP/1.0\r\n\r\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"HTTP/1.0 200 ok", r.stdout)
        # Inbound: a client in the remote namespace calls the pod's app.
        r = subprocess.run(netns(self.remote) + [
            "curl", "-sS", "--max-time", "10", "--cacert", self.pki.ca + ".crt", "--resolve",
            "svc.example.test:9443:" + POD_IP, "https://svc.example.test:9443/hello"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual((r.returncode, r.stdout), (0, b"hello over tls\n"), r.stderr)

        self.sidetap.send_signal(signal.SIGTERM)
        self.assertEqual(self.sidetap.wait(timeout=30), 0)
        self.logf.close()
        frames = read_frames(self.sink)
        pairs = {(f["listener"], f["req"]["target"]): f for f in frames if f["type"] == "http"}
        self.assertEqual(sorted(pairs), [("inbound", "/hello"), ("outbound", "/big"),
                                         ("outbound", "/hello"), ("outbound", "/ip")])
        hello = pairs[("outbound", "/hello")]
        self.assertEqual(hello["dst"], REMOTE_IP + ":443", "the original destination")
        self.assertEqual(hello["tls"]["sni"], "remote.example.test")
        self.assertEqual(hello["resp"]["body"], b"hello over tls\n")
        ip = pairs[("outbound", "/ip")]
        self.assertEqual(ip["dst"], REMOTE_IP + ":8443")
        self.assertEqual(ip["tls"]["sni"], "")
        self.assertEqual(ip["resp"]["status"], 200)
        inbound = pairs[("inbound", "/hello")]
        self.assertEqual(inbound["tls"]["sni"], "svc.example.test")
        self.assertEqual(inbound["resp"]["body"], b"hello over tls\n")
        tls = [f for f in frames if f["type"] == "tls"]
        self.assertEqual(sorted(t["event"] for t in tls), ["unwrapped"] * 4, tls)


if __name__ == "__main__":
    BINDIR = sys.argv.pop(1)
    unittest.main(verbosity=2)
