#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""TESTPLAN R8: a slow, lossy link between the pod and a remote host. A "pod" network namespace
runs sidetap in reverse mode in front of an echo server in a "remote" namespace, across a veth
pair that drops 2% of the packets each way (iptables statistic) and is shaped by tbf. Each
forwarding path carries 16 MiB up while the echo brings them back down: what comes back must be
byte for byte what was sent, and sidetap must not hold more memory than a few buffers.
Needs root, ip, iptables, tc and curl; skips and says why otherwise. Run by ctest:
    test_lossy.py BINDIR"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

BINDIR = None
POD_IP = "10.233.0.1"
REMOTE_IP = "10.233.0.2"
ECHO_PORT = 7007
SIZE = 16 << 20

ECHO = r"""
import socket, threading
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("%s", %d))
ls.listen(16)
print("listening", flush=True)
def echo(c):
    with c:
        while True:
            d = c.recv(1 << 16)
            if not d:
                c.shutdown(socket.SHUT_WR)
                return
            c.sendall(d)
while True:
    c, _ = ls.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
""" % (REMOTE_IP, ECHO_PORT)

# Sends SIZE random bytes to 127.0.0.1:PORT while reading the echo; prints both digests.
CLIENT = r"""
import hashlib, os, socket, sys, threading
port, size = int(sys.argv[1]), int(sys.argv[2])
data = os.urandom(size)
s = socket.create_connection(("127.0.0.1", port), timeout=60)
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
got = hashlib.sha256()
n = 0
while True:
    d = s.recv(1 << 16)
    if not d:
        break
    got.update(d)
    n += len(d)
t.join()
print(hashlib.sha256(data).hexdigest(), got.hexdigest(), n)
"""


def sh(cmd):
    return subprocess.run(cmd, shell=True, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)


class LossyLinkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root for network namespaces, iptables and tc")
        for tool in ("ip", "iptables", "tc", "curl"):
            if shutil.which(tool) is None:
                raise unittest.SkipTest("%s is missing (cmake/deps.sh test)" % tool)
        pid = os.getpid()
        cls.pod, cls.remote, veth = "st-lossp-%d" % pid, "st-lossr-%d" % pid, "stl%d" % (pid % 100000)
        cls.d = tempfile.mkdtemp(prefix="sidetap-lossy-")
        cls.echo = None
        try:
            harness.two_namespaces(cls.pod, cls.remote, veth, POD_IP, REMOTE_IP)
            # 2% of the packets lost each way, and 200 Mbit/s with a short queue.
            for ns, dev in ((cls.pod, veth + "a"), (cls.remote, veth + "b")):
                sh("ip netns exec %s iptables -A INPUT -i %s -m statistic --mode random "
                   "--probability 0.02 -j DROP" % (ns, dev))
                sh("ip netns exec %s tc qdisc replace dev %s root tbf rate 200mbit "
                   "burst 64kb latency 20ms" % (ns, dev))
            cls.echo = subprocess.Popen(["ip", "netns", "exec", cls.remote, "/usr/bin/python3",
                                         "-u", "-c", ECHO], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
            if cls.echo.stdout.readline().strip() != b"listening":
                raise RuntimeError("the echo server did not start")
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.echo:
            cls.echo.kill()
            cls.echo.wait()
            cls.echo.stdout.close()
        subprocess.run("ip netns del %s; ip netns del %s" % (cls.pod, cls.remote), shell=True,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(cls.d, ignore_errors=True)

    def through(self, mode):
        st = harness.Sidetap(self, "sidetap-lossy-")
        self.addCleanup(st.close)
        # harness.Sidetap runs sidetap here; it must run in the pod: wrap it in ip netns exec.
        wrapper = os.path.join(st.dir, "bin")
        os.mkdir(wrapper)
        with open(os.path.join(wrapper, "sidetap"), "w") as f:
            f.write("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n"
                    % (self.pod, os.path.join(BINDIR, "sidetap")))
        os.chmod(os.path.join(wrapper, "sidetap"), 0o755)
        # The last --inbound-upstream wins: the remote's address, not harness's loopback.
        st.start(wrapper, ECHO_PORT, ["--forward=" + mode, "--capture=off", "--workers=1",
                                      "--inbound-upstream=%s:%d" % (REMOTE_IP, ECHO_PORT)])
        out = subprocess.run(["ip", "netns", "exec", self.pod, "/usr/bin/python3", "-c", CLIENT,
                              str(st.port), str(SIZE)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=240)
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        sent, got, n = out.stdout.decode().split()
        self.assertEqual(int(n), SIZE, "%s: %s bytes came back of %d" % (mode, n, SIZE))
        self.assertEqual(got, sent, "%s: the bytes changed on the way" % mode)
        # Its admin endpoint is on the pod's loopback.
        metrics = subprocess.run(["ip", "netns", "exec", self.pod, "curl", "-s",
                                  "http://127.0.0.1:%d/metrics" % st.admin],
                                 stdout=subprocess.PIPE).stdout.decode()
        self.assertIn('sidetap_connections_active{listener="inbound"} 0\n', metrics)
        self.assertIn('sidetap_resets_total{listener="inbound"} 0\n', metrics)
        st.stop()
        # The link did lose packets.
        rules = sh("ip netns exec %s iptables -L INPUT -v -x -n" % self.pod).stdout.decode()
        dropped = [int(ln.split()[0]) for ln in rules.splitlines() if "DROP" in ln]
        self.assertTrue(dropped and dropped[0] > 0, rules)

    def test_copy_path_keeps_every_byte(self):
        self.through("copy")

    def test_splice_path_keeps_every_byte(self):
        self.through("splice")

    def test_auto_keeps_every_byte(self):
        self.through("auto")


if __name__ == "__main__":
    BINDIR = sys.argv.pop(1)
    unittest.main(verbosity=2)
