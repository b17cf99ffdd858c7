#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The pod that sidetap-injector makes, run with the real sidetap-init and sidetap.

The injector writes the init container's args and the sidecar's environment; sidetap-init
and sidetap read them. These tests take both from the injector's own patches, never from a
copy, so that a flag renamed on one side fails here:

- every injected case of the golden fixtures: sidetap-init accepts the init container's args
  (with --dry-run), and its rules redirect to the ports the sidecar listens on, return the
  UID and GID the sidecar runs as and the admin port its probes use; sidetap reads every
  SIDETAP_* variable the sidecar gets;
- as root, one injected pod comes up in network namespaces the test creates: sidetap-init
  with the init container's args, sidetap as the sidecar's runAsUser with the sidecar's
  environment, the postStart hook and readiness probe as written; the app's outbound call
  and a client's inbound call pass through sidetap, skipped ports and sources do not, and
  --cleanup puts the nat table back.

    /usr/bin/python3 tests/integration/test_injected_pod.py build/bin
"""
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

try:
    import jsonpatch
except ImportError:  # the tests report the skip with the package to install
    jsonpatch = None

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "unit", "injector", "fixtures")
BIN = None
# The case the pod runs: non-default ports, skipped ports and CIDRs, a CPU limit, extra env.
POD_CASE = "deployment_settings"
POD_IP, REMOTE_IP = "172.30.232.1", "172.30.232.2"  # outside the case's ignore-dst-ips
IGNORED_SRC_IP = "10.1.2.3"  # the case's ignore-src-ips
# Variables of issue 4's TLS flags: sidetap reads them once TLS unwrapping is built.
TLS_ENV = ("SIDETAP_TLS_OUT", "SIDETAP_TLS_CA_CERT", "SIDETAP_TLS_CA_KEY",
           "SIDETAP_TLS_IN_CERT", "SIDETAP_TLS_IN_KEY")


def injected(name):
    """(init container or None, sidecar) of case <name>'s object with the injector's patch."""
    with open(os.path.join(FIXTURES, name + ".json")) as f:
        review = json.load(f)
    out = subprocess.run([os.path.join(BIN, "sidetap-injector"), "--review", "-"],
                         input=json.dumps(review).encode(), capture_output=True, timeout=30,
                         check=True)
    resp = json.loads(out.stdout)["response"]
    if "patch" not in resp:
        return None
    obj = jsonpatch.apply_patch(review["request"]["object"],
                                json.loads(base64.b64decode(resp["patch"])))
    spec = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
    every = spec.get("initContainers", []) + spec["containers"]
    init = [c for c in every if c["name"] == "sidetap-init"]
    side = [c for c in every if c["name"] == "sidetap"]
    assert len(side) == 1 and len(init) <= 1, (name, [c["name"] for c in every])
    return (init[0] if init else None), side[0]


def injected_cases():
    """{case: (init, sidecar)} for every fixture the injector injects."""
    cases = {}
    for f in sorted(os.listdir(FIXTURES)):
        with open(os.path.join(FIXTURES, f)) as fh:
            if f.endswith(".json") and "from" not in json.load(fh):
                got = injected(f[:-5])
                if got:
                    cases[f[:-5]] = got
    return cases


def env_of(container):
    return {e["name"]: e["value"] for e in container.get("env", [])}


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def admin_hook(side):
    """argv of the sidecar's wait for readiness: the postStart hook, else None."""
    hook = side.get("lifecycle", {}).get("postStart")
    return hook["exec"]["command"] if hook else None


def require_jsonpatch():
    if jsonpatch is None:
        raise unittest.SkipTest("python3-jsonpatch is not installed "
                                "(apt-get install python3-jsonpatch)")


def clean_env():
    """The test's environment without sidetap's variables, which would change what runs."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SIDETAP_")}


class InjectedContainers(unittest.TestCase):
    """What the injector writes, read by the programs it is written for (any user)."""

    @classmethod
    def setUpClass(cls):
        require_jsonpatch()
        cls.cases = injected_cases()
        help_out = subprocess.run([os.path.join(BIN, "sidetap"), "--help"],
                                  capture_output=True, text=True, timeout=10)
        cls.sidetap_env = set(re.findall(r"\benv (SIDETAP_[A-Z0-9_]+)", help_out.stdout))

    def test_cases_cover_transparent_reverse_and_native(self):
        self.assertIn(POD_CASE, self.cases)
        kinds = {("init" if init else "reverse", "restartPolicy" in side)
                 for init, side in self.cases.values()}
        self.assertEqual(kinds, {("init", False), ("init", True), ("reverse", False)})

    def test_sidetap_init_accepts_the_init_container_and_matches_the_sidecar(self):
        for name, (init, side) in self.cases.items():
            if init is None:
                continue
            with self.subTest(case=name):
                self.assertEqual(init["command"], ["sidetap-init"])
                out = subprocess.run([os.path.join(BIN, "sidetap-init"), *init["args"],
                                      "--dry-run"], capture_output=True, text=True,
                                     timeout=10, env=clean_env())
                self.assertEqual(out.returncode, 0, f"sidetap-init {init['args']}: "
                                 f"{out.stderr}")
                rules = set(out.stdout.splitlines())
                env = env_of(side)
                sc = side["securityContext"]
                admin = port_of(env["SIDETAP_ADMIN_ADDR"])
                want = [
                    "-A SIDETAP_INBOUND_REDIRECT -p tcp -j REDIRECT --to-ports "
                    f"{port_of(env['SIDETAP_INBOUND_ADDR'])}",
                    "-A SIDETAP_OUTPUT_REDIRECT -p tcp -j REDIRECT --to-ports "
                    f"{port_of(env['SIDETAP_OUTBOUND_ADDR'])}",
                    f"-A SIDETAP_OUTPUT -m owner --uid-owner {sc['runAsUser']} -j RETURN",
                    f"-A SIDETAP_OUTPUT -m owner --gid-owner {sc['runAsGroup']} -j RETURN",
                    f"-A SIDETAP_INBOUND -p tcp -m tcp --dport {admin} -j RETURN",
                ]
                for rule in want:
                    self.assertIn(rule, rules, f"not in sidetap-init's rules:\n{out.stdout}")
                self.assertEqual(side["readinessProbe"]["httpGet"]["port"], admin)
                self.assertEqual(init["securityContext"]["runAsUser"], 0)

    def test_the_readiness_wait_asks_the_admin_port(self):
        for name, (_, side) in self.cases.items():
            with self.subTest(case=name):
                admin = port_of(env_of(side)["SIDETAP_ADMIN_ADDR"])
                hook = admin_hook(side)
                if hook is None:  # the native sidecar: kubelet's startupProbe gates the app
                    self.assertEqual(side["startupProbe"]["httpGet"]["port"], admin)
                    continue
                self.assertEqual(hook[:2], ["sidetapctl", "wait-ready"])
                self.assertEqual(hook[hook.index("--admin") + 1], f"127.0.0.1:{admin}")

    def test_sidetap_reads_every_variable_of_the_sidecar(self):
        for name, (_, side) in self.cases.items():
            names = {n for n in env_of(side) if n.startswith("SIDETAP_")} - set(TLS_ENV)
            with self.subTest(case=name):
                self.assertEqual(sorted(names - self.sidetap_env), [],
                                 "variables sidetap --help does not list")

    def test_sidetap_reads_the_tls_variables(self):
        used = set()
        for _, side in self.cases.values():
            used |= set(env_of(side)) & set(TLS_ENV)
        self.assertTrue(used, "no case sets the TLS variables: deployment_tls should")
        missing = sorted(used - self.sidetap_env)
        if missing == sorted(used):
            self.skipTest("this sidetap has no TLS unwrapping yet (sidetap --help lists none "
                          f"of {', '.join(missing)}): tls-out and tls-in-secret inject "
                          "variables it ignores")
        self.assertEqual(missing, [], "TLS variables sidetap --help does not list")


def have(prog):
    return shutil.which(prog) is not None


class Proc:
    """A background process whose stdout and stderr go to <log>."""

    def __init__(self, argv, log, env=None):
        self.log = log
        with open(log, "w") as f:
            self.p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env)

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def wait_for(self, pattern, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.text()):
                return True
            if self.p.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def stop(self, sig=signal.SIGTERM, timeout=5):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                return self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
        return self.p.wait()


class InjectedPod(unittest.TestCase):
    """Case POD_CASE's pod in network namespaces "pod" and "remote" (root only)."""

    @classmethod
    def setUpClass(cls):
        require_jsonpatch()
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root for network namespaces and iptables")
        for prog in ("ip", "iptables-restore", "iptables-save", "setpriv", "curl"):
            if not have(prog):
                raise unittest.SkipTest(f"needs {prog}: cmake/deps.sh test installs it")
        pid = os.getpid()
        probe = f"st-jprobe-{pid}"
        if subprocess.run(f"ip netns add {probe} && ip netns del {probe}", shell=True,
                          capture_output=True).returncode != 0:
            raise unittest.SkipTest("ip netns add fails here (no CAP_SYS_ADMIN?)")
        cls.procs = []
        cls.pod, cls.remote, veth = f"st-jpod-{pid}", f"st-jrem-{pid}", f"stj{pid % 100000}"
        cls.dir = tempfile.mkdtemp(prefix="sidetap-injected-pod-")
        try:
            cls.start(veth)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start(cls, veth):
        cls.init, cls.side = injected(POD_CASE)
        sh(f"ip netns add {cls.pod} && ip netns add {cls.remote} && "
           f"ip link add {veth}a type veth peer name {veth}b && "
           f"ip link set {veth}a netns {cls.pod} && ip link set {veth}b netns {cls.remote} && "
           f"ip -n {cls.pod} addr add {POD_IP}/24 dev {veth}a && "
           f"ip -n {cls.pod} link set {veth}a up && ip -n {cls.pod} link set lo up && "
           f"ip -n {cls.remote} addr add {REMOTE_IP}/24 dev {veth}b && "
           f"ip -n {cls.remote} addr add {IGNORED_SRC_IP}/32 dev {veth}b && "
           f"ip -n {cls.pod} route add {IGNORED_SRC_IP}/32 dev {veth}a && "
           f"ip -n {cls.remote} link set {veth}b up && ip -n {cls.remote} link set lo up")
        cls.nat_before = cls.nat()
        # The init container, as injected.
        out = cls.in_pod(os.path.join(BIN, "sidetap-init"), *cls.init["args"])
        if out.returncode != 0:
            raise AssertionError(f"sidetap-init {cls.init['args']} exited {out.returncode}: "
                                 f"{out.stderr}")
        # The app and the remote service: a port that goes through sidetap, one skipped. The
        # app listens on every address, as containers do: sidetap hands it inbound calls on
        # 127.0.0.1.
        cls.web(cls.pod, "0.0.0.0", 8080, "pod-app")
        cls.web(cls.pod, "0.0.0.0", 9090, "pod-app-9090")  # ignore-inbound-ports
        cls.web(cls.remote, REMOTE_IP, 8080, "remote-8080")
        cls.web(cls.remote, REMOTE_IP, 5432, "remote-5432")  # ignore-outbound-ports
        # The sidecar: the image runs sidetap, as runAsUser/runAsGroup, with the injected
        # environment. Only the ring and the sink move: /dev/shm is the host's here, and the
        # sink's emptyDir is a directory of the test.
        sc = cls.side["securityContext"]
        uid, gid = sc["runAsUser"], sc["runAsGroup"]
        os.chmod(cls.dir, 0o755)
        sink = os.path.join(cls.dir, "capture")
        os.mkdir(sink)
        os.chown(sink, uid, gid)
        cls.env = env_of(cls.side)
        env = {**clean_env(), **cls.env, "SIDETAP_RING": os.path.join(sink, "ring"),
               "SIDETAP_SINK": "file:" + sink}
        cls.sidetap = Proc(["ip", "netns", "exec", cls.pod, "setpriv", f"--reuid={uid}",
                            f"--regid={gid}", "--clear-groups",
                            os.path.join(BIN, "sidetap")],
                           os.path.join(cls.dir, "sidetap.log"), env=env)
        cls.procs.append(cls.sidetap)
        # kubelet runs the postStart hook, and starts the app's containers once it returns.
        hook = admin_hook(cls.side)
        cls.hook = cls.in_pod(os.path.join(BIN, hook[0]), *hook[1:], timeout=60)
        cls.admin = port_of(cls.env["SIDETAP_ADMIN_ADDR"])

    @classmethod
    def tearDownClass(cls):
        for p in cls.procs:
            p.stop()
        subprocess.run(f"ip netns del {cls.pod}; ip netns del {cls.remote}", shell=True,
                       capture_output=True)
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def in_pod(cls, *argv, ns=None, timeout=30):
        return subprocess.run(["ip", "netns", "exec", ns or cls.pod, *argv],
                              capture_output=True, text=True, timeout=timeout,
                              env=clean_env())

    @classmethod
    def nat(cls):
        out = cls.in_pod("iptables-save", "-t", "nat")
        assert out.returncode == 0, out.stderr
        # Counters and the header's timestamps change by themselves.
        return [re.sub(r"\[\d+:\d+\]", "", line) for line in out.stdout.splitlines()
                if not line.startswith("#")]

    @classmethod
    def web(cls, ns, ip, port, text):
        d = os.path.join(cls.dir, f"web-{ns}-{port}")
        os.mkdir(d)
        with open(os.path.join(d, "index.html"), "w") as f:
            f.write(text + "\n")
        p = Proc(["ip", "netns", "exec", ns, "/usr/bin/python3", "-u", "-m", "http.server",
                  "--bind", ip, "--directory", d, str(port)],
                 os.path.join(cls.dir, f"web-{ns}-{port}.log"))
        cls.procs.append(p)
        if not p.wait_for("Serving HTTP"):
            raise AssertionError(f"web server {ns} {ip}:{port} did not start:\n{p.text()}")

    def get(self, ns, url, *curl_args):
        out = self.in_pod("curl", "-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}",
                          *curl_args, url, ns=ns)
        body, _, code = out.stdout.rpartition("\n")
        return int(code or 0), body.strip()

    def metric(self, series):
        code, body = self.get(self.pod, f"http://127.0.0.1:{self.admin}/metrics")
        self.assertEqual(code, 200)
        for line in body.splitlines():
            if line.startswith(series + " "):
                return int(float(line.split()[1]))
        self.fail(f"{series} not in /metrics")

    def accepted(self, listener):
        return self.metric(f'sidetap_connections_accepted_total{{listener="{listener}"}}')

    def test_1_the_sidecar_starts_with_the_injected_environment(self):
        self.assertEqual(self.hook.returncode, 0,
                         f"the postStart hook failed: {self.hook.stdout}{self.hook.stderr}\n"
                         f"sidetap's log:\n{self.sidetap.text()}")
        self.assertIsNone(self.sidetap.p.poll(), self.sidetap.text())
        # The readiness probe, as kubelet sends it: from outside the pod to the pod's IP.
        probe = self.side["readinessProbe"]["httpGet"]
        code, _ = self.get(self.remote, f"http://{POD_IP}:{probe['port']}{probe['path']}")
        self.assertEqual(code, 200)
        # The settings of the annotations reached sidetap: cpu-limit's workers, the ports.
        log = self.sidetap.text()
        self.assertEqual(self.metric("sidetap_workers"), int(self.env["SIDETAP_WORKERS"]),
                         log)
        for listener in ("inbound", "outbound"):
            addr = self.env[f"SIDETAP_{listener.upper()}_ADDR"]
            self.assertRegex(log, f'msg="listening" listener={listener} addr={addr} ')

    def test_2_outbound_and_inbound_calls_pass_through_sidetap(self):
        out0, in0 = self.accepted("outbound"), self.accepted("inbound")
        self.assertEqual(self.get(self.pod, f"http://{REMOTE_IP}:8080/"), (200, "remote-8080"))
        self.assertEqual(self.accepted("outbound"), out0 + 1)
        self.assertEqual(self.get(self.remote, f"http://{POD_IP}:8080/"), (200, "pod-app"))
        self.assertEqual(self.accepted("inbound"), in0 + 1)
        self.assertEqual(self.metric('sidetap_loop_guard_total{listener="outbound"}'), 0)

    def test_3_ignored_ports_and_sources_bypass_sidetap(self):
        out0, in0 = self.accepted("outbound"), self.accepted("inbound")
        self.assertEqual(self.get(self.pod, f"http://{REMOTE_IP}:5432/"),
                         (200, "remote-5432"))
        self.assertEqual(self.get(self.remote, f"http://{POD_IP}:9090/"),
                         (200, "pod-app-9090"))
        self.assertEqual(self.get(self.remote, f"http://{POD_IP}:8080/", "--interface",
                                  IGNORED_SRC_IP), (200, "pod-app"))
        self.assertEqual((self.accepted("outbound"), self.accepted("inbound")), (out0, in0))
        # From any other source the same port goes through sidetap.
        self.assertEqual(self.get(self.remote, f"http://{POD_IP}:8080/"), (200, "pod-app"))
        self.assertEqual(self.accepted("inbound"), in0 + 1)

    def test_4_rerun_keeps_the_rules_and_cleanup_restores_the_nat_table(self):
        rules = self.nat()
        again = self.in_pod(os.path.join(BIN, "sidetap-init"), *self.init["args"])
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(self.nat(), rules, "a second run of the init container changed them")
        # --cleanup with the same flags, as an operator would run it from the same spec.
        out = self.in_pod(os.path.join(BIN, "sidetap-init"), *self.init["args"], "--cleanup")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(self.nat(), self.nat_before)
        out0 = self.accepted("outbound")
        self.assertEqual(self.get(self.pod, f"http://{REMOTE_IP}:8080/"), (200, "remote-8080"))
        self.assertEqual(self.accepted("outbound"), out0)


def sh(cmd):
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"{cmd}: {out.stderr}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: test_injected_pod.py BIN_DIR", file=sys.stderr)
        sys.exit(2)
    BIN = sys.argv.pop(1)
    unittest.main(verbosity=2)
