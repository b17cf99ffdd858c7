#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""sidetap-injector over real HTTPS (TESTPLAN W4-W6): curl and Python's ssl as clients,
certificates made with the openssl command, the server on a loopback ephemeral port.

    /usr/bin/python3 tests/integration/test_injector.py build/bin
"""
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "unit", "injector", "fixtures")
BIN = None
HOST = "sidetap-injector.sidetap.svc"  # the name the API server checks the certificate against


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, **kw)


def make_pair(d, name, ca=None):
    """A CA (when <ca> is None) or a serving certificate for HOST signed by <ca>."""
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".crt")
    sh("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    if ca is None:
        sh("openssl", "req", "-x509", "-new", "-key", key, "-out", crt, "-days", "2",
           "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
           "-addext", "keyUsage=critical,keyCertSign")
    else:
        csr = os.path.join(d, name + ".csr")
        ext = os.path.join(d, name + ".ext")
        with open(ext, "w") as f:
            f.write(f"subjectAltName=DNS:{HOST}\nextendedKeyUsage=serverAuth\n")
        sh("openssl", "req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={name}")
        sh("openssl", "x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0],
           "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)
    return key, crt


def fingerprint(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def fixture(name):
    with open(os.path.join(FIXTURES, name + ".json")) as f:
        return json.load(f)


class Injector(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for prog in ("curl", "openssl"):
            if not shutil.which(prog):
                raise unittest.SkipTest(f"{prog} is not installed (apt-get install {prog})")
        cls.dir = tempfile.mkdtemp(prefix="sidetap-injector-")
        cls.ca = make_pair(cls.dir, "ca")
        cls.ca2 = make_pair(cls.dir, "ca2")
        cls.key, cls.crt = make_pair(cls.dir, "serving", cls.ca)
        # The files the server reads; the tests replace them as kubelet updates a Secret volume.
        cls.live_key = os.path.join(cls.dir, "tls.key")
        cls.live_crt = os.path.join(cls.dir, "tls.crt")
        shutil.copy(cls.key, cls.live_key)
        shutil.copy(cls.crt, cls.live_crt)
        cls.log = open(os.path.join(cls.dir, "injector.log"), "w+")
        cls.proc = subprocess.Popen(
            [os.path.join(BIN, "sidetap-injector"), "--listen", "127.0.0.1:0", "--cert",
             cls.live_crt, "--key", cls.live_key, "--max-body-bytes", "256K", "--namespace",
             "sidetap"], stderr=cls.log, stdout=subprocess.DEVNULL)
        deadline = time.time() + 10
        cls.port = None
        while time.time() < deadline and cls.port is None:
            m = re.search(r'msg="started".* listen=127\.0\.0\.1:(\d+)', cls.read_log())
            if m:
                cls.port = int(m.group(1))
            elif cls.proc.poll() is not None:
                break
            else:
                time.sleep(0.05)
        if cls.port is None:
            cls.proc.kill()
            raise AssertionError("sidetap-injector did not start:\n" + cls.read_log())

    @classmethod
    def tearDownClass(cls):
        if cls.proc.poll() is None:
            cls.proc.kill()
            cls.proc.wait()
        cls.log.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def read_log(cls):
        cls.log.flush()
        with open(cls.log.name) as f:
            return f.read()

    def curl(self, path, data=None, ctype="application/json", extra=(), cacert=None):
        """(status, body, stderr) of one HTTPS request, the certificate verified for HOST."""
        argv = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10",
                "--resolve", f"{HOST}:{self.port}:127.0.0.1",
                "--cacert", cacert or self.ca[1], *extra]
        if data is not None:
            body = os.path.join(self.dir, "body")
            with open(body, "wb") as f:
                f.write(data if isinstance(data, bytes) else data.encode())
            argv += ["-X", "POST", "--data-binary", "@" + body, "-H", "Content-Type: " + ctype]
        argv.append(f"https://{HOST}:{self.port}{path}")
        out = subprocess.run(argv, capture_output=True, timeout=30)
        text = out.stdout.decode(errors="replace")
        body, _, code = text.rpartition("\n")
        return int(code or 0), body, out.stderr.decode(errors="replace")

    def peer_cert(self):
        """The DER certificate the server presents in a new handshake."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname=HOST) as t:
                return t.getpeercert(binary_form=True)

    def replace(self, src, dst):
        """Replaces <dst> atomically, as kubelet's symlink swap does."""
        tmp = dst + ".new"
        shutil.copy(src, tmp)
        os.rename(tmp, dst)

    def test_01_healthz(self):
        code, body, err = self.curl("/healthz")
        self.assertEqual((code, body), (200, "ok\n"), err)

    def test_02_valid_review_gets_the_patch(self):
        rv = fixture("deployment_plain")
        code, body, err = self.curl("/mutate", json.dumps(rv))
        self.assertEqual(code, 200, err + body)
        resp = json.loads(body)["response"]
        self.assertEqual(resp["uid"], rv["request"]["uid"])
        self.assertTrue(resp["allowed"])
        patch = json.loads(base64.b64decode(resp["patch"]))
        self.assertIn("/spec/template/spec/containers/0", [op["path"] for op in patch])
        self.assertRegex(self.read_log(), r'msg="review" .*uid=d-plain .*result=injected')

    def test_03_malformed_json_is_400_and_logged(self):
        code, body, _ = self.curl("/mutate", '{"apiVersion": "admission.k8s.io/v1", "kind":')
        self.assertEqual(code, 400)
        self.assertIn("malformed AdmissionReview", body)
        code, body, _ = self.curl("/mutate", '{"apiVersion":"admission.k8s.io/v1beta1",'
                                  '"kind":"AdmissionReview","request":{}}')
        self.assertEqual(code, 400)
        self.assertIn("admission.k8s.io/v1", body)
        self.assertRegex(self.read_log(), r'level=warn msg="bad request" .*status=400 .*not JSON')

    def test_04_oversized_body_is_400(self):
        big = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                          "request": {"uid": "big", "pad": "x" * (300 << 10)}})
        # With Expect: 100-continue (curl's default for large bodies) and without it.
        for extra in ((), ("-H", "Expect:")):
            code, body, err = self.curl("/mutate", big, extra=extra)
            self.assertEqual(code, 400, err)
            self.assertIn("over the limit of 262144 bytes", body)
        self.assertRegex(self.read_log(), r'msg="bad request" .*over the limit')

    def test_05_wrong_content_type_is_415(self):
        code, body, _ = self.curl("/mutate", json.dumps(fixture("deployment_plain")),
                                  ctype="application/x-www-form-urlencoded")
        self.assertEqual(code, 415)
        self.assertIn("application/json", body)

    def test_06_dry_run_is_allowed_without_a_patch(self):
        rv = fixture("deployment_dry_run")
        self.assertTrue(rv["request"]["dryRun"])
        code, body, _ = self.curl("/mutate", json.dumps(rv))
        self.assertEqual(code, 200)
        resp = json.loads(body)["response"]
        self.assertEqual((resp["allowed"], "patch" in resp), (True, False))
        self.assertRegex(self.read_log(), r'uid=d-dry .*dry_run=1 result=skipped')

    def test_07_other_methods_and_paths(self):
        self.assertEqual(self.curl("/mutate")[0], 405)
        self.assertEqual(self.curl("/nope")[0], 404)
        # A request line that is not HTTP is a 400, and the server carries on.
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            ctx = ssl.create_default_context(cafile=self.ca[1])
            with ctx.wrap_socket(s, server_hostname=HOST) as t:
                t.sendall(b"GARBAGE\r\n\r\n")
                self.assertTrue(t.recv(100).startswith(b"HTTP/1.1 400"))
        self.assertEqual(self.curl("/healthz")[0], 200)

    def test_08_keep_alive_serves_requests_on_one_connection(self):
        rv = os.path.join(self.dir, "rv.json")
        with open(rv, "w") as f:
            json.dump(fixture("pod_plain"), f)
        out = subprocess.run(
            ["curl", "-sv", "--resolve", f"{HOST}:{self.port}:127.0.0.1", "--cacert",
             self.ca[1], "-H", "Content-Type: application/json", "--data-binary", "@" + rv,
             f"https://{HOST}:{self.port}/mutate", f"https://{HOST}:{self.port}/mutate"],
            capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.count(b'"uid":"p-plain"'), 2)
        self.assertIn(b"Re-using existing connection", out.stderr)

    def test_09_latency_is_far_below_the_webhook_timeout(self):
        body = json.dumps(fixture("deployment_tls"))
        ctx = ssl.create_default_context(cafile=self.ca[1])
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=10)
        ctx.check_hostname = False
        times = []
        for _ in range(200):
            t0 = time.monotonic()
            conn.request("POST", "/mutate", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            times.append(time.monotonic() - t0)
            self.assertEqual(r.status, 200)
        conn.close()
        times.sort()
        p99 = times[int(len(times) * 0.99) - 1]
        # timeoutSeconds is 5: an answer needs to be orders of magnitude faster.
        self.assertLess(p99, 0.25, f"p99 {p99 * 1000:.1f} ms")

    def test_10_certificate_reload(self):
        self.assertEqual(self.peer_cert(), fingerprint(self.crt))
        key2, crt2 = make_pair(self.dir, "serving2", self.ca2)
        # A certificate whose key is not there yet: the old pair stays in service.
        self.replace(crt2, self.live_crt)
        self.assertEqual(self.peer_cert(), fingerprint(self.crt))
        self.assertRegex(self.read_log(), r'new certificate not loaded')
        # With its key too, the very next handshake presents the new one.
        self.replace(key2, self.live_key)
        self.assertEqual(self.peer_cert(), fingerprint(crt2))
        code, _, err = self.curl("/healthz", cacert=self.ca2[1])
        self.assertEqual(code, 200, err)
        code, _, _ = self.curl("/healthz")  # the old CA no longer verifies it
        self.assertNotEqual(code, 200)
        self.assertRegex(self.read_log(), r'msg="certificate reloaded"')
        # And back, so that the tests after this one find the first pair.
        self.replace(self.key, self.live_key)
        self.replace(self.crt, self.live_crt)
        self.assertEqual(self.peer_cert(), fingerprint(self.crt))

    def test_11_metrics_count_what_happened(self):
        self.curl("/mutate", "{")
        code, body, _ = self.curl("/metrics")
        self.assertEqual(code, 200)
        m = dict(re.findall(r"^(sidetap_injector_\S+) (\S+)$", body, re.M))
        self.assertGreaterEqual(float(m['sidetap_injector_reviews_total{result="injected"}']), 1)
        self.assertGreaterEqual(float(m["sidetap_injector_bad_requests_total"]), 1)

    def test_12_sigterm_stops_cleanly(self):
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=15), 0)
        self.assertIn('msg="stopped"', self.read_log())


class Flags(unittest.TestCase):
    def run_injector(self, *args):
        return subprocess.run([os.path.join(BIN, "sidetap-injector"), *args],
                              capture_output=True, text=True, timeout=10)

    def test_usage_errors_exit_2_with_a_message(self):
        for args, needle in ((["--listen", "127.0.0.1:0"], "--cert and --key are required"),
                             (["--bogus"], "unknown flag '--bogus'"),
                             (["--native-sidecar", "maybe"], "accepted: on, off"),
                             (["--annotation-prefix", "Not A Prefix"], "--annotation-prefix"),
                             (["--max-body-bytes", "0"], "--max-body-bytes"),
                             (["--image"], "--image needs a value")):
            r = self.run_injector(*args)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(needle, r.stderr, args)

    def test_missing_certificate_is_a_runtime_error(self):
        r = self.run_injector("--listen", "127.0.0.1:0", "--cert", "/nonexistent.crt", "--key",
                              "/nonexistent.key")
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot read the certificate or key", r.stderr)

    def test_review_of_a_malformed_file_exits_1(self):
        r = subprocess.run([os.path.join(BIN, "sidetap-injector"), "--review", "-"],
                           input="not json", capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 1)
        self.assertIn("malformed AdmissionReview", r.stderr)

    def test_prefix_and_image_flags_apply(self):
        rv = fixture("pod_plain")
        ann = rv["request"]["object"]["metadata"]["annotations"]
        ann["sidetap.example.com/inject"] = ann.pop("sidecar.speedscale.com/inject")
        r = subprocess.run([os.path.join(BIN, "sidetap-injector"), "--review", "-",
                            "--annotation-prefix", "sidetap.example.com", "--image",
                            "registry.example/sidetap:9", "--native-sidecar", "on"],
                           input=json.dumps(rv), capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        patch = json.loads(base64.b64decode(json.loads(r.stdout)["response"]["patch"]))
        inits = [op for op in patch if op["path"] == "/spec/initContainers"][0]["value"]
        self.assertEqual([c["name"] for c in inits], ["sidetap-init", "sidetap"])
        self.assertEqual(inits[1]["image"], "registry.example/sidetap:9")
        self.assertIn("/metadata/annotations/sidetap.example.com~1injected",
                      [op["path"] for op in patch])


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: test_injector.py BIN_DIR", file=sys.stderr)
        sys.exit(2)
    BIN = sys.argv.pop(1)
    unittest.main(verbosity=1)
