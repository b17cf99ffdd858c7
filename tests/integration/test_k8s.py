#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""sidetapctl install, uninstall, inject and wait-ready (TESTPLAN W6, W7).

Manifests are read back with python3-yaml, certificates checked with the openssl command,
the objects decoded by kubectl into their API types offline where kubectl is installed,
and the commands that talk to a cluster run against a fake kubectl that records what it
is asked and answers from canned objects.

    /usr/bin/python3 tests/integration/test_k8s.py build/bin
"""
import base64
import copy
import http.server
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import unittest

try:
    import yaml
except ImportError:
    yaml = None

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.join(HERE, "..", "..", "deploy", "sidetap.yaml")
BIN = None
P = "sidecar.speedscale.com/"

# Records its argv and stdin; answers "get" from files the test leaves in $FAKE_KUBECTL_DIR.
FAKE_KUBECTL = r"""#!/usr/bin/python3
import json, os, sys
d = os.environ["FAKE_KUBECTL_DIR"]
args = sys.argv[1:]
stdin = sys.stdin.read() if "-f" in args and "-" in args else None
with open(os.path.join(d, "calls.jsonl"), "a") as f:
    f.write(json.dumps({"args": args, "stdin": stdin}) + "\n")
if args[:1] == ["get"]:
    name = "list.json" if args[1].startswith("deployments,") else "bundle.txt"
    path = os.path.join(d, name)
    if os.path.exists(path):
        sys.stdout.write(open(path).read())
    elif name == "list.json":
        sys.stderr.write("The connection to the server was refused\n")
        sys.exit(1)
sys.exit(int(os.environ.get("FAKE_KUBECTL_STATUS", "0")))
"""


def ctl(*args, input=None, env=None):
    return subprocess.run([os.path.join(BIN, "sidetapctl"), *args], input=input,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def docs(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def by_kind(objs, kind):
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, (kind, len(found))
    return found[0]


def openssl(*args, input=None):
    return subprocess.run(["openssl", *args], input=input, capture_output=True, text=True,
                          check=True).stdout


class Base(unittest.TestCase):
    def setUp(self):
        if yaml is None:
            self.skipTest("python3-yaml is not installed (apt-get install python3-yaml)")
        self.dir = tempfile.mkdtemp(prefix="sidetapctl-k8s-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def fake_kubectl(self):
        path = os.path.join(self.dir, "kubectl")
        with open(path, "w") as f:
            f.write(FAKE_KUBECTL)
        os.chmod(path, stat.S_IRWXU)
        return {"KUBECTL": path, "FAKE_KUBECTL_DIR": self.dir}

    def calls(self):
        path = os.path.join(self.dir, "calls.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f]


PLACEHOLDER_LINE = re.compile(r"^(\s+(?:ca\.crt|tls\.crt|tls\.key|caBundle): )\S+$", re.M)


class Install(Base):
    def test_dry_run_with_placeholders_is_deploy(self):
        r = ctl("install", "--dry-run", "--placeholders")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(DEPLOY) as f:
            self.assertEqual(r.stdout, f.read(),
                             "deploy/sidetap.yaml is stale: sidetapctl install --dry-run "
                             "--placeholders > deploy/sidetap.yaml")

    def test_dry_run_equals_deploy_but_for_the_certificates(self):
        r = ctl("install", "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(DEPLOY) as f:
            deploy = f.read()
        placeholders = dict((m.group(1), m.group(0)) for m in PLACEHOLDER_LINE.finditer(deploy))
        self.assertEqual(len(PLACEHOLDER_LINE.findall(r.stdout)), 4)
        self.assertEqual(PLACEHOLDER_LINE.sub(lambda m: placeholders[m.group(1)], r.stdout),
                         deploy)

    def test_certificates_serve_the_webhook_service(self):
        objs = docs(ctl("install", "--dry-run", "--namespace", "capture").stdout)
        secret = by_kind(objs, "Secret")
        self.assertEqual(secret["type"], "kubernetes.io/tls")
        files = {}
        for k in ("ca.crt", "tls.crt", "tls.key"):
            files[k] = os.path.join(self.dir, k)
            with open(files[k], "wb") as f:
                f.write(base64.b64decode(secret["data"][k]))
        mwc = by_kind(objs, "MutatingWebhookConfiguration")
        bundle = base64.b64decode(mwc["webhooks"][0]["clientConfig"]["caBundle"])
        with open(files["ca.crt"], "rb") as f:
            self.assertEqual(bundle, f.read(), "caBundle is the Secret's CA")
        # The serving certificate verifies for <svc>.<ns>.svc against that CA, and only it.
        out = openssl("verify", "-CAfile", files["ca.crt"], "-purpose", "sslserver",
                      "-verify_hostname", "sidetap-injector.capture.svc", files["tls.crt"])
        self.assertIn("OK", out)
        text = openssl("x509", "-in", files["tls.crt"], "-noout", "-text")
        self.assertRegex(text, r"DNS:sidetap-injector\.capture\.svc\s*\n")
        self.assertIn("TLS Web Server Authentication", text)
        self.assertRegex(text, r"CA:FALSE")
        self.assertIn("CA:TRUE", openssl("x509", "-in", files["ca.crt"], "-noout", "-text"))
        # The key is the certificate's.
        self.assertEqual(openssl("pkey", "-in", files["tls.key"], "-pubout"),
                         openssl("x509", "-in", files["tls.crt"], "-noout", "-pubkey"))
        # Each run mints its own CA (TESTPLAN T6: one per install).
        again = by_kind(docs(ctl("install", "--dry-run").stdout), "Secret")
        self.assertNotEqual(again["data"]["ca.crt"], secret["data"]["ca.crt"])

    def test_webhook_configuration_lint(self):
        """W7: the rendered MutatingWebhookConfiguration, field by field."""
        for ns in ("sidetap", "capture"):
            objs = docs(ctl("install", "--dry-run", "--namespace", ns).stdout)
            mwc = by_kind(objs, "MutatingWebhookConfiguration")
            self.assertEqual(mwc["apiVersion"], "admissionregistration.k8s.io/v1")
            self.assertEqual(len(mwc["webhooks"]), 1)
            w = mwc["webhooks"][0]
            self.assertEqual(w["failurePolicy"], "Ignore")
            self.assertEqual(w["sideEffects"], "None")
            self.assertLessEqual(w["timeoutSeconds"], 10)
            self.assertEqual(w["matchPolicy"], "Equivalent")
            self.assertEqual(w["reinvocationPolicy"], "IfNeeded")
            self.assertEqual(w["admissionReviewVersions"], ["v1"])
            self.assertEqual(w["clientConfig"]["service"],
                             {"name": "sidetap-injector", "namespace": ns, "path": "/mutate",
                              "port": 443})
            sel = w["namespaceSelector"]["matchExpressions"]
            self.assertIn({"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                           "values": ["kube-system", "kube-node-lease", ns]}, sel)
            rules = {(tuple(r["apiGroups"]), tuple(r["operations"])): set(r["resources"])
                     for r in w["rules"]}
            self.assertEqual(rules, {
                (("",), ("CREATE",)): {"pods"},
                (("apps",), ("CREATE", "UPDATE")): {"deployments", "statefulsets",
                                                     "daemonsets", "replicasets"},
                (("batch",), ("CREATE",)): {"jobs"}})
            # The injector runs where the selector excludes, and knows its namespace.
            dep = by_kind(objs, "Deployment")
            self.assertEqual(dep["metadata"]["namespace"], ns)
            args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
            self.assertIn(f"--namespace={ns}", args)
            svc = by_kind(objs, "Service")
            self.assertEqual(svc["spec"]["ports"][0]["port"], 443)
        fail = by_kind(docs(ctl("install", "--dry-run", "--failure-policy", "Fail").stdout),
                       "MutatingWebhookConfiguration")
        self.assertEqual(fail["webhooks"][0]["failurePolicy"], "Fail")

    def test_flags_reach_the_injector(self):
        objs = docs(ctl("install", "--dry-run", "--image", "registry.example/sidetap:7",
                        "--annotation-prefix", "sidetap.example.com", "--native-sidecar", "on",
                        "--replicas", "3").stdout)
        dep = by_kind(objs, "Deployment")
        c = dep["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(c["image"], "registry.example/sidetap:7")
        self.assertEqual(dep["spec"]["replicas"], 3)
        for a in ("--image=registry.example/sidetap:7", "--native-sidecar=on",
                  "--annotation-prefix=sidetap.example.com"):
            self.assertIn(a, c["args"])

    def test_kubectl_decodes_every_object(self):
        """Offline, kubectl set env --local decodes each object into its API type."""
        if not shutil.which("kubectl"):
            self.skipTest("kubectl is not installed: the objects are not checked against the "
                          "API types")
        text = ctl("install", "--dry-run").stdout
        r = subprocess.run(["kubectl", "set", "env", "--local", "-f", "-", "-o", "name",
                            "SIDETAP_CHECK=1"], input=text, capture_output=True, text=True,
                           timeout=60)
        self.assertNotIn("unable to decode", r.stderr)
        self.assertIn("deployment.apps/sidetap-injector", r.stdout)
        # The check has teeth: a mistyped field fails it.
        bad = text.replace("timeoutSeconds: 5", 'timeoutSeconds: "5s"')
        r = subprocess.run(["kubectl", "set", "env", "--local", "-f", "-", "-o", "name",
                            "SIDETAP_CHECK=1"], input=bad, capture_output=True, text=True,
                           timeout=60)
        self.assertIn("unable to decode", r.stderr)

    def test_usage_errors(self):
        for args, needle in ((["--namespace", "Kube_System"], "--namespace"),
                             (["--failure-policy", "ignore"], "accepted: Ignore, Fail"),
                             (["--replicas", "0"], "--replicas"),
                             (["--placeholders"], "--placeholders goes with --dry-run"),
                             (["--image", "a b"], "--image"),
                             (["--bogus"], "unexpected argument '--bogus'")):
            r = ctl("install", *args)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(needle, r.stderr, args)
            self.assertEqual(r.stdout, "")

    def test_apply_goes_to_kubectl_and_keeps_the_previous_ca(self):
        env = self.fake_kubectl()
        old = by_kind(docs(ctl("install", "--dry-run").stdout), "MutatingWebhookConfiguration")
        old_ca = old["webhooks"][0]["clientConfig"]["caBundle"]
        with open(os.path.join(self.dir, "bundle.txt"), "w") as f:
            f.write(old_ca)
        r = ctl("install", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        calls = self.calls()
        self.assertEqual([c["args"][:2] for c in calls],
                         [["get", "mutatingwebhookconfiguration"], ["apply", "-f"],
                          ["rollout", "status"]])
        objs = docs(calls[1]["stdin"])
        bundle = base64.b64decode(by_kind(objs, "MutatingWebhookConfiguration")
                                  ["webhooks"][0]["clientConfig"]["caBundle"]).decode()
        ca = base64.b64decode(by_kind(objs, "Secret")["data"]["ca.crt"]).decode()
        self.assertEqual(bundle, ca + base64.b64decode(old_ca).decode(),
                         "the new CA first, then the one the running pods' certificate has")

    def test_apply_failure_is_reported(self):
        env = {**self.fake_kubectl(), "FAKE_KUBECTL_STATUS": "1"}
        r = ctl("install", env=env)
        self.assertEqual(r.returncode, 1)
        self.assertIn("kubectl apply failed", r.stderr)


def workload(kind, name, ns="shop", wl_ann=None, tpl_ann=None, owner=None, pod=False):
    o = {"apiVersion": "v1" if pod else "apps/v1", "kind": kind,
         "metadata": {"name": name, "namespace": ns}}
    if wl_ann:
        o["metadata"]["annotations"] = wl_ann
    if owner:
        o["metadata"]["ownerReferences"] = [{"kind": owner, "name": "x", "controller": True}]
    if pod:
        o["spec"] = {"containers": [{"name": "app"}]}
    else:
        o["spec"] = {"template": {"metadata": {"annotations": tpl_ann or {}},
                                  "spec": {"containers": [{"name": "app"}]}}}
    return o


class Uninstall(Base):
    ITEMS = [
        workload("Deployment", "web", tpl_ann={P + "inject": "true", P + "injected": "true"}),
        workload("Deployment", "api", wl_ann={P + "inject": "true"}),
        workload("Deployment", "left", tpl_ann={P + "injected": "true"}),
        workload("Deployment", "plain"),
        workload("StatefulSet", "db", ns="data", tpl_ann={P + "inject": "true"}),
        workload("ReplicaSet", "web-5d8f", tpl_ann={P + "inject": "true"}, owner="Deployment"),
        workload("ReplicaSet", "legacy", tpl_ann={P + "inject": "true"}),
        workload("Job", "report", tpl_ann={P + "inject": "true"}),
        workload("Pod", "web-5d8f-x", wl_ann={P + "inject": "true"}, owner="ReplicaSet",
                 pod=True),
        workload("Pod", "debug", wl_ann={P + "inject": "true"}, pod=True),
    ]

    def write_list(self):
        with open(os.path.join(self.dir, "list.json"), "w") as f:
            json.dump({"apiVersion": "v1", "kind": "List", "items": self.ITEMS}, f)

    def test_dry_run_prints_the_steps_for_the_annotated_workloads(self):
        env = self.fake_kubectl()
        self.write_list()
        r = ctl("uninstall", "--dry-run", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [l for l in r.stdout.splitlines() if not l.startswith("#")]
        patched = [l.split()[3:5] for l in lines if " patch " in l]
        self.assertEqual(patched, [["shop", "deployment/web"], ["shop", "deployment/api"],
                                   ["shop", "deployment/left"], ["data", "statefulset/db"],
                                   ["shop", "replicaset/legacy"]])
        for l in lines:
            if " patch " in l:
                body = json.loads(re.search(r"-p '(.*)'$", l).group(1))
                self.assertEqual(body["metadata"]["annotations"][P + "inject"], "false")
                self.assertEqual(body["spec"]["template"]["metadata"]["annotations"]
                                 [P + "inject"], "false")
        rolled = [l.split()[4:6] for l in lines if " rollout status " in l]
        self.assertEqual(rolled, [["shop", "deployment/web"], ["shop", "deployment/api"],
                                  ["shop", "deployment/left"], ["data", "statefulset/db"]])
        self.assertIn("job/report in namespace shop keeps sidetap", r.stdout)
        self.assertIn("pod/debug in namespace shop keeps sidetap", r.stdout)
        self.assertNotIn("web-5d8f", r.stdout)
        self.assertEqual(lines[-2:], [
            f"{env['KUBECTL']} delete mutatingwebhookconfiguration sidetap-injector "
            "--ignore-not-found",
            f"{env['KUBECTL']} delete namespace sidetap --ignore-not-found"])
        # A dry run only reads.
        self.assertEqual([c["args"][0] for c in self.calls()], ["get"])

    def test_dry_run_without_a_cluster_still_prints_the_steps(self):
        r = ctl("uninstall", "--dry-run", env=self.fake_kubectl())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("cannot list the workloads", r.stderr)
        self.assertIn("patch -n NAMESPACE KIND NAME --type=merge", r.stdout)
        self.assertIn("delete namespace sidetap", r.stdout)

    def test_uninstall_takes_workloads_out_before_removing_the_webhook(self):
        env = self.fake_kubectl()
        self.write_list()
        r = ctl("uninstall", "--namespace", "capture", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        verbs = [" ".join(c["args"][:2]) for c in self.calls()]
        first_delete = verbs.index("delete mutatingwebhookconfiguration")
        self.assertEqual(verbs.count("patch -n"), 5)
        self.assertLess(max(i for i, v in enumerate(verbs) if v == "patch -n"), first_delete)
        self.assertEqual(self.calls()[-1]["args"][:3], ["delete", "namespace", "capture"])

    def test_without_a_cluster_nothing_is_removed(self):
        env = self.fake_kubectl()
        r = ctl("uninstall", env=env)
        self.assertEqual(r.returncode, 1)
        self.assertIn("nothing was changed", r.stderr)
        self.assertNotIn("delete", [c["args"][0] for c in self.calls()])


MANIFEST = """\
# the app
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-conf
data:
  nginx.conf: |
    server { listen 80; }
  replicas: "2"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    team: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels:
        app: web
      annotations:
        prometheus.io/scrape: "true"
    spec:
      containers:
        - name: web
          image: nginx:1.25
          args: ["-g", "daemon off;"]
          ports:
            - containerPort: 80
---
apiVersion: batch/v1
kind: Job
metadata:
  name: report
spec:
  template:
    metadata:
    spec:
      restartPolicy: Never
      containers:
        - name: report
          image: busybox:1.36
          command: [sh, -c, "echo 'done' && exit 0"]
---
apiVersion: v1
kind: Pod
metadata:
  name: debug
  annotations:
    sidecar.speedscale.com/inject: "false"
spec:
  containers:
    - name: sh
      image: busybox:1.36
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
            - name: n
              image: busybox:1.36
---
apiVersion: v1
kind: List
items:
  - apiVersion: apps/v1
    kind: StatefulSet
    metadata: {name: db}
    spec:
      serviceName: db
      selector: {matchLabels: {app: db}}
      template:
        metadata: {labels: {app: db}}
        spec:
          containers: [{name: db, image: "postgres:16", env: [{name: PGPORT, value: "5432"}]}]
  - apiVersion: v1
    kind: Service
    metadata: {name: db}
    spec: {ports: [{port: 5432}]}
  - apiVersion: apps/v1
    kind: DaemonSet
    metadata: {name: agent}
    spec:
      selector: {matchLabels: {app: agent}}
      template:
        metadata: {labels: {app: agent}}
        spec: {containers: [{name: agent, image: "agent:1"}]}
  - apiVersion: apps/v1
    kind: ReplicaSet
    metadata: {name: legacy}
    spec:
      selector: {matchLabels: {app: legacy}}
      template:
        metadata: {labels: {app: legacy}}
        spec: {containers: [{name: legacy, image: "legacy:1"}]}
"""


def expected_after_inject(objs, extra=None):
    """What each document must be after inject: computed here, independently."""
    want = {P + "inject": "true", **{P + k: v for k, v in (extra or {}).items()}}
    out = copy.deepcopy(objs)

    def mark(o):
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
            meta = o["spec"]["template"].get("metadata") or {}
            o["spec"]["template"]["metadata"] = meta
        elif o["kind"] == "Pod":
            meta = o["metadata"]
        else:
            return
        meta["annotations"] = {**(meta.get("annotations") or {}), **want}

    for o in out:
        if o["kind"] == "List":
            for item in o["items"]:
                mark(item)
        else:
            mark(o)
    return out


class Inject(Base):
    def test_annotates_workloads_and_keeps_everything_else(self):
        r = ctl("inject", input=MANIFEST)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = docs(r.stdout)
        self.assertEqual(got, expected_after_inject(docs(MANIFEST)))
        for kind, name in (("Deployment", "web"), ("Job", "report"), ("Pod", "debug"),
                           ("StatefulSet", "db"), ("DaemonSet", "agent"),
                           ("ReplicaSet", "legacy")):
            self.assertIn(f"{kind} {name} annotated", r.stderr)
        self.assertNotIn("CronJob", r.stderr)
        # The value is a quoted string, as annotations must be.
        self.assertIn('sidecar.speedscale.com/inject: "true"', r.stdout)
        # Injecting again changes nothing.
        again = ctl("inject", input=r.stdout)
        self.assertEqual(docs(again.stdout), got)

    def test_set_and_prefix(self):
        r = ctl("inject", "--annotation-prefix", "sidetap.example.com", "--set", "tls-out=true",
                "--set", "proxy-in-port=15001", input=MANIFEST)
        self.assertEqual(r.returncode, 0, r.stderr)
        dep = [d for d in docs(r.stdout) if d["kind"] == "Deployment"][0]
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        self.assertEqual(ann["sidetap.example.com/inject"], "true")
        self.assertEqual(ann["sidetap.example.com/tls-out"], "true")
        self.assertEqual(ann["sidetap.example.com/proxy-in-port"], "15001")

    def test_files_and_kubectl_output(self):
        path = os.path.join(self.dir, "app.yaml")
        with open(path, "w") as f:
            f.write(MANIFEST)
        r = ctl("inject", path, path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(docs(r.stdout)), 2 * len(docs(MANIFEST)))
        if shutil.which("kubectl"):
            made = subprocess.run(["kubectl", "create", "deployment", "web", "--image=nginx",
                                   "--dry-run=client", "-o", "yaml"], capture_output=True,
                                  text=True, check=True).stdout
            r = ctl("inject", input=made)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(docs(r.stdout), expected_after_inject(docs(made)))

    def test_bad_input(self):
        r = ctl("inject", input="apiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r"sidetapctl inject: stdin:\d+:\d+: ")
        self.assertEqual(r.stdout, "", "no half manifest on stdout")
        r = ctl("inject", os.path.join(self.dir, "missing.yaml"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing.yaml", r.stderr)
        for args in (["--set", "no-equals"], ["--bogus"], ["--annotation-prefix", "A B"]):
            r = ctl("inject", *args, input="")
            self.assertEqual(r.returncode, 2, args)
        r = ctl("inject", input="")
        self.assertEqual((r.returncode, r.stdout), (0, ""))
        self.assertIn("no workload found", r.stderr)


class WaitReady(Base):
    def test_waits_for_readyz(self):
        answers = [503, 503, 200]

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                code = answers.pop(0) if len(answers) > 1 else answers[0]
                self.send_response(code if self.path == "/readyz" else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        srv = http.server.HTTPServer(("127.0.0.1", 0), H)
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        try:
            r = ctl("wait-ready", "--admin", f"127.0.0.1:{srv.server_port}", "--timeout", "10")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(answers, [200])
        finally:
            srv.shutdown()
            srv.server_close()

    def test_gives_up_after_the_timeout(self):
        r = ctl("wait-ready", "--admin", "127.0.0.1:1", "--timeout", "1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no answer from http://127.0.0.1:1/readyz in 1 s", r.stderr)
        self.assertEqual(ctl("wait-ready", "--timeout", "soon").returncode, 2)

    def test_help_lists_the_commands(self):
        r = ctl("--help")
        for cmd in ("install", "uninstall", "inject", "wait-ready", "dump", "har", "stats"):
            self.assertRegex(r.stdout, rf"\n  {cmd} ")
        for cmd in ("install", "uninstall", "inject", "wait-ready"):
            r = ctl(cmd, "--help")
            self.assertEqual(r.returncode, 0)
            self.assertTrue(r.stdout.startswith(f"usage: sidetapctl {cmd}"), r.stdout)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: test_k8s.py BIN_DIR", file=sys.stderr)
        sys.exit(2)
    BIN = sys.argv.pop(1)
    unittest.main(verbosity=1)
