#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Golden tests of sidetap-injector's AdmissionReview answers (TESTPLAN W1-W3).

Each fixture in fixtures/ is answered by `sidetap-injector --review`; the answer (allowed,
the decoded JSON Patch, warnings, status) must equal golden/<case>.json byte for byte.
Every golden file must have its fixture and every fixture its golden (stale-golden
check). Refresh them after an intended change with

    SIDETAP_REFRESH_GOLDEN=1 /usr/bin/python3 tests/unit/injector/test_review.py build/bin

Beyond the bytes, each patch is applied with an independent JSON Patch implementation
(python3-jsonpatch) and the result checked: the sidecar and init container where they
belong, the pod one container larger (or smaller), nothing of the user's changed, only
add/remove operations, and the patched object answered with no patch at all.
"""
import base64
import copy
import json
import os
import re
import subprocess
import sys
import unittest

try:
    import jsonpatch
except ImportError:  # the test reports the skip with the package to install
    jsonpatch = None

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
GOLDEN = os.path.join(HERE, "golden")
BIN = None
REFRESH = os.environ.get("SIDETAP_REFRESH_GOLDEN") == "1"
P = "sidecar.speedscale.com/"
OURS = ("sidetap", "sidetap-init")

# What each case must come to; "injected" and "updated" cases are checked in depth.
EXPECT = {
    "deployment_plain": "injected",
    "deployment_workload_annotation": "injected",
    "deployment_init_containers": "injected",
    "deployment_insert_init_first": "injected",
    "deployment_native": "injected",
    "deployment_tls": "injected",
    "deployment_settings": "injected",
    "deployment_reverse": "injected",
    "deployment_refused_proxy_type": "refused",
    "deployment_refused_inject": "refused",
    "deployment_refused_memory": "refused",
    "deployment_no_annotation": "unchanged",
    "deployment_dry_run": "unchanged",
    "deployment_kube_system": "unchanged",
    "deployment_host_network": "unchanged",
    "job_plain": "injected",
    "job_native": "injected",
    "job_update": "unchanged",
    "statefulset_plain": "injected",
    "daemonset_plain": "injected",
    "replicaset_plain": "injected",
    "replicaset_of_deployment": "unchanged",
    "pod_plain": "injected",
    "pod_kube_system": "unchanged",
    "pod_own_namespace": "unchanged",
    "pod_host_network": "unchanged",
    "pod_mirror": "unchanged",
    "pod_dry_run": "unchanged",
    "pod_of_replicaset": "unchanged",
    "pod_foreign_sidetap": "unchanged",
    "pod_update": "unchanged",
    "after_deployment_plain_unchanged": "unchanged",
    "after_deployment_plain_false": "removed",
    "after_deployment_plain_removed": "removed",
    "after_deployment_plain_changed": "updated",
    "after_deployment_init_containers_false": "removed",
    "after_deployment_native_false": "removed",
    "after_deployment_tls_false": "removed",
    "after_deployment_workload_annotation_false": "removed",
    "after_pod_plain_unchanged": "unchanged",
}


def run_review(review):
    out = subprocess.run([os.path.join(BIN, "sidetap-injector"), "--review", "-"],
                         input=json.dumps(review).encode(), capture_output=True, timeout=30)
    if out.returncode != 0:
        raise AssertionError(f"sidetap-injector --review exited {out.returncode}: "
                             f"{out.stderr.decode(errors='replace')}")
    return out.stdout


def decode(raw, uid):
    """The response of an AdmissionReview answer, its patch decoded."""
    r = json.loads(raw)
    assert r["apiVersion"] == "admission.k8s.io/v1" and r["kind"] == "AdmissionReview", r
    resp = r["response"]
    assert resp["uid"] == uid, (resp["uid"], uid)
    patch = None
    if "patch" in resp:
        assert resp["patchType"] == "JSONPatch", resp
        patch = json.loads(base64.b64decode(resp["patch"], validate=True))
    return resp, patch


def golden_text(resp, patch):
    g = {"allowed": resp["allowed"], "patch": patch,
         "warnings": resp.get("warnings", []), "status": resp.get("status")}
    return json.dumps(g, indent=2) + "\n"


def pod_parts(obj):
    """(metadata, spec) of the pod: the object itself, or its template."""
    if obj["kind"] == "Pod":
        return obj.get("metadata", {}), obj["spec"]
    t = obj["spec"]["template"]
    return t.get("metadata", {}), t["spec"]


def names(items):
    return [c.get("name") for c in items or []]


def strip(obj):
    """The object less everything the injector may add: what is left is the user's."""
    o = copy.deepcopy(obj)
    meta, spec = pod_parts(o)
    for key in ("initContainers", "containers"):
        if key in spec:
            spec[key] = [c for c in spec[key] if c.get("name") not in OURS]
            if not spec[key] and key == "initContainers":
                del spec[key]
    if "volumes" in spec:
        spec["volumes"] = [v for v in spec["volumes"] if not v["name"].startswith("sidetap-")]
        if not spec["volumes"]:
            del spec["volumes"]
    for c in spec.get("containers", []):
        if "env" in c:
            c["env"] = [e for e in c["env"] if "/etc/sidetap/trust/" not in e.get("value", "")]
            if not c["env"]:
                del c["env"]
        if "volumeMounts" in c:
            c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "sidetap-ca-trust"]
            if not c["volumeMounts"]:
                del c["volumeMounts"]
    ann = meta.get("annotations")
    if ann is not None:
        for k in (P + "injected", P + "injected-config"):
            ann.pop(k, None)
        if not ann:
            del meta["annotations"]
    return o


class Answers:
    """Every case's review and answer, computed once: recipes need their base's patch."""

    def __init__(self):
        self.reviews, self.raw, self.resp, self.patch = {}, {}, {}, {}
        files = sorted(f[:-5] for f in os.listdir(FIXTURES) if f.endswith(".json"))
        for name in sorted(files, key=lambda n: n.startswith("after_")):
            with open(os.path.join(FIXTURES, name + ".json")) as f:
                fx = json.load(f)
            rv = self.recipe(fx) if "from" in fx else fx
            self.reviews[name] = rv
            self.raw[name] = run_review(rv)
            self.resp[name], self.patch[name] = decode(self.raw[name], rv["request"]["uid"])

    def patched(self, name):
        """The object of case <name> after its patch."""
        obj = self.reviews[name]["request"]["object"]
        p = self.patch[name]
        return jsonpatch.apply_patch(obj, p) if p else copy.deepcopy(obj)

    def recipe(self, fx):
        base = self.reviews[fx["from"]]
        obj = self.patched(fx["from"])
        meta, _ = pod_parts(obj)
        for k, v in fx.get("template_annotations", {}).items():
            if v is None:
                meta["annotations"].pop(k, None)
            else:
                meta.setdefault("annotations", {})[k] = v
        for k, v in fx.get("workload_annotations", {}).items():
            obj["metadata"].setdefault("annotations", {})[k] = v
        rv = copy.deepcopy(base)
        rv["request"]["uid"] = fx["uid"]
        rv["request"]["operation"] = fx["operation"]
        rv["request"]["oldObject"] = base["request"]["object"] if fx["operation"] == "UPDATE" \
            else None
        rv["request"]["object"] = obj
        return rv


ANSWERS = None


class TestGolden(unittest.TestCase):
    def setUp(self):
        if jsonpatch is None:
            self.skipTest("python3-jsonpatch is not installed (apt-get install python3-jsonpatch)")

    def test_every_fixture_has_a_golden_and_an_expectation(self):
        fixtures = {f[:-5] for f in os.listdir(FIXTURES) if f.endswith(".json")}
        goldens = {f[:-5] for f in os.listdir(GOLDEN) if f.endswith(".json")} \
            if os.path.isdir(GOLDEN) else set()
        self.assertEqual(sorted(goldens - fixtures), [],
                         "stale golden files without a fixture: delete them")
        self.assertEqual(sorted(fixtures - goldens), [],
                         "fixtures without a golden file: run with SIDETAP_REFRESH_GOLDEN=1")
        self.assertEqual(sorted(fixtures ^ set(EXPECT)), [],
                         "fixtures and EXPECT must name the same cases")

    def test_answers_are_deterministic(self):
        for name in ("deployment_plain", "deployment_tls", "after_deployment_plain_changed"):
            self.assertEqual(run_review(ANSWERS.reviews[name]), ANSWERS.raw[name], name)


def make_case(name):
    def test(self):
        resp, patch = ANSWERS.resp[name], ANSWERS.patch[name]
        text = golden_text(resp, patch)
        path = os.path.join(GOLDEN, name + ".json")
        if REFRESH:
            os.makedirs(GOLDEN, exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        with open(path) as f:
            self.assertEqual(text, f.read(), f"{name}: answer differs from {path}")
        expect = EXPECT[name]
        if expect in ("injected", "updated"):
            check_injected(self, name)
        elif expect == "removed":
            check_removed(self, name)
        elif expect == "unchanged":
            self.assertTrue(resp["allowed"])
            self.assertIsNone(patch, f"{name}: no patch expected")
        elif expect == "refused":
            self.assertFalse(resp["allowed"])
            self.assertIsNone(patch)
            self.assertIn(P, resp["status"]["message"])
            self.assertEqual(resp["status"]["code"], 400)
    return test


def check_ops(t, name, patch, old):
    """W3: add and remove only, never a user's containers or args replaced."""
    _, spec = pod_parts(old)
    for op in patch:
        t.assertIn(op["op"], ("add", "remove"), f"{name}: {op}")
        t.assertNotRegex(op["path"], r"/(args|command)(/|$)", f"{name}: {op}")
        if op["path"].endswith("/containers"):
            t.assertNotIn("containers", spec, f"{name}: containers replaced wholesale")
        v = op.get("value")
        if isinstance(v, dict) and "image" in v:
            t.assertIn(v["name"], OURS, f"{name}: a container with another name added")
    text = json.dumps(patch)
    t.assertNotRegex(text, r"\d{4}-\d\d-\d\dT\d\d:", f"{name}: a timestamp in the patch")


def check_injected(t, name):
    rv, patch = ANSWERS.reviews[name], ANSWERS.patch[name]
    old = rv["request"]["object"]
    t.assertTrue(ANSWERS.resp[name]["allowed"])
    t.assertIsNotNone(patch, f"{name}: a patch expected")
    check_ops(t, name, patch, old)
    new = jsonpatch.apply_patch(old, patch)
    _, ospec = pod_parts(strip(old))
    nmeta, nspec = pod_parts(new)
    inits = names(nspec.get("initContainers"))
    native = "sidetap" in inits
    ann = {**old["metadata"].get("annotations", {}), **nmeta.get("annotations", {})}
    transparent = ann.get(P + "proxy-type", "transparent") == "transparent"
    first = ann.get(P + "insert-init-first") == "true"
    user_inits = names(ospec.get("initContainers"))
    ours = (["sidetap-init"] if transparent else []) + (["sidetap"] if native else [])
    t.assertEqual(inits, ours + user_inits if first else user_inits + ours,
                  f"{name}: init containers in the wrong order")
    if native:
        t.assertEqual(names(nspec["containers"]), names(ospec["containers"]))
        side = nspec["initContainers"][inits.index("sidetap")]
        t.assertEqual(side["restartPolicy"], "Always")
        t.assertIn("startupProbe", side)
    else:
        t.assertEqual(len(nspec["containers"]), len(ospec["containers"]) + 1,
                      f"{name}: the pod must grow by one container")
        t.assertEqual(nspec["containers"][0]["name"], "sidetap", "the sidecar goes first")
        side = nspec["containers"][0]
        t.assertIn("postStart", side["lifecycle"])
    t.assertEqual(side["securityContext"]["runAsUser"], 2102)
    t.assertEqual(side["readinessProbe"]["httpGet"]["path"], "/readyz")
    t.assertEqual(nmeta["annotations"][P + "injected"], "true")
    if transparent:
        init = nspec["initContainers"][inits.index("sidetap-init")]
        args = init["args"]
        t.assertEqual(args[args.index("--proxy-uid") + 1], "2102")
        t.assertEqual(sorted(init["securityContext"]["capabilities"]["add"]),
                      ["NET_ADMIN", "NET_RAW"])
    # Nothing of the user's changed: less what the injector adds, the object is as it was.
    t.assertEqual(strip(new), strip(old), f"{name}: the user's part of the object changed")
    # W2: the patched object, sent again, gets no patch.
    again = copy.deepcopy(rv)
    again["request"]["object"] = new
    resp, p2 = decode(run_review(again), rv["request"]["uid"])
    t.assertTrue(resp["allowed"])
    t.assertIsNone(p2, f"{name}: re-submitting the patched object gave a patch: {p2}")


def check_removed(t, name):
    rv, patch = ANSWERS.reviews[name], ANSWERS.patch[name]
    old = rv["request"]["object"]
    t.assertTrue(ANSWERS.resp[name]["allowed"])
    t.assertIsNotNone(patch, f"{name}: a patch expected")
    check_ops(t, name, patch, old)
    new = jsonpatch.apply_patch(old, patch)
    _, ospec = pod_parts(old)
    _, nspec = pod_parts(new)
    classic = "sidetap" in names(ospec["containers"])
    t.assertEqual(len(nspec["containers"]), len(ospec["containers"]) - (1 if classic else 0))
    for key in ("initContainers", "containers"):
        for n in names(nspec.get(key)):
            t.assertNotIn(n, OURS, f"{name}: {n} left in {key}")
    # Exactly what was there before the injection comes back, the annotation change aside.
    t.assertEqual(new, strip(old), f"{name}: removal left or took something else")
    with open(os.path.join(FIXTURES, name + ".json")) as f:
        base = ANSWERS.reviews[json.load(f)["from"]]["request"]["object"]
    expect = copy.deepcopy(base)
    meta, _ = pod_parts(expect)
    nmeta, _ = pod_parts(new)
    meta["annotations"] = nmeta.get("annotations")
    if meta["annotations"] is None:
        del meta["annotations"]
    expect["metadata"]["annotations"] = new["metadata"].get("annotations")
    if expect["metadata"]["annotations"] is None:
        del expect["metadata"]["annotations"]
    t.assertEqual(new, expect, f"{name}: not the object as it was before injection")
    again = copy.deepcopy(rv)
    again["request"]["object"] = new
    resp, p2 = decode(run_review(again), rv["request"]["uid"])
    t.assertIsNone(p2, f"{name}: re-submitting the cleaned object gave a patch: {p2}")


for _name in EXPECT:
    setattr(TestGolden, "test_" + _name, make_case(_name))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: test_review.py BIN_DIR", file=sys.stderr)
        sys.exit(2)
    BIN = sys.argv.pop(1)
    if jsonpatch is not None:
        ANSWERS = Answers()
    unittest.main(verbosity=1)
