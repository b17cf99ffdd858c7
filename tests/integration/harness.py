# SPDX-License-Identifier: Apache-2.0
"""What the Python integration tests share: waiting for a condition, reading one series from a
/metrics endpoint, and sidetap run in reverse mode from a scratch directory."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time


def wait_for(cond, timeout, step=0.05):
    """Polls <cond> until it is true or <timeout> seconds pass; returns its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def scrape(port, series):
    """The value of <series> at 127.0.0.1:<port>/metrics, or None (absent, or nothing listens).
    <series> is a name with its labels as exposed, or a bare name, which also matches its one
    labelled line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    for line in data.decode().splitlines():
        if line.startswith(series + " ") or (line.startswith(series + "{") and "{" not in series):
            return float(line.split()[-1])
    return None


class Sidetap:
    """sidetap in a scratch directory (self.dir, removed by close()), its log in sidetap.log there.
    A subclass makes the directory's paths, then calls start()."""

    def __init__(self, test, prefix):
        self.test = test
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.logf = open(os.path.join(self.dir, "sidetap.log"), "w+")
        self.proc = None

    def start(self, bindir, upstream_port, args):
        """Runs BINDIR/sidetap in reverse mode in front of 127.0.0.1:<upstream_port> on ephemeral
        ports (self.port, self.admin), with <args> after, and waits until it has started."""
        self.proc = subprocess.Popen(
            [os.path.join(bindir, "sidetap"), "--inbound-addr=127.0.0.1:0", "--outbound-addr=off",
             "--admin-addr=127.0.0.1:0", "--workers=2", "--inbound-mode=reverse",
             "--inbound-upstream=127.0.0.1:%d" % upstream_port] + list(args),
            stdout=self.logf, stderr=subprocess.STDOUT)
        wait_for(lambda: 'msg="started"' in self.log() or self.proc.poll() is not None, 10, 0.02)
        text = self.log()
        self.test.assertIn('msg="started"', text, "sidetap did not start:\n" + text)
        self.port = self.addr(text, "listener=inbound addr=")
        self.admin = self.addr(text, 'msg="admin endpoint" addr=')

    @staticmethod
    def addr(text, key):
        """The port of the last ADDR:PORT logged after <key>."""
        at = text.rindex(key) + len(key)
        return int(text[at:].split()[0].rsplit(":", 1)[1])

    def log(self):
        self.logf.flush()
        with open(self.logf.name) as f:
            return f.read()

    def metric(self, series):
        return scrape(self.admin, series)

    def stop(self, timeout=40):
        """SIGTERM: sidetap drains, its uploader ships what is left, and it exits 0."""
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout=timeout)
        self.test.assertEqual(status, 0, "sidetap did not exit 0:\n" + self.log())

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.logf.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def two_namespaces(pod, remote, veth, pod_ip, remote_ip):
    """Creates network namespaces <pod> and <remote> joined by the veth pair <veth>a/<veth>b,
    with <pod_ip>/24 and <remote_ip>/24 on them and loopback up (root; raises on failure)."""
    subprocess.run(
        "ip netns add {p} && ip netns add {r} && "
        "ip link add {v}a type veth peer name {v}b && "
        "ip link set {v}a netns {p} && ip link set {v}b netns {r} && "
        "ip -n {p} addr add {pi}/24 dev {v}a && ip -n {p} link set {v}a up && "
        "ip -n {p} link set lo up && "
        "ip -n {r} addr add {ri}/24 dev {v}b && ip -n {r} link set {v}b up && "
        "ip -n {r} link set lo up".format(p=pod, r=remote, v=veth, pi=pod_ip, ri=remote_ip),
        shell=True, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
