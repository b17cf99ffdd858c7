#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the AdmissionReview fixtures of the injector's golden tests into fixtures/.

Deployments and Jobs are what `kubectl create deployment|job ... --dry-run=client -o json`
makes (kubectl works offline for that); the other kinds are written by hand in the shape
the API server sends. Fixtures whose name starts with "after_" are recipes, built by
test_review.py from another case's object with that case's golden patch applied (the
object as the API server stores it after injection), then changed as the recipe says.

    tests/unit/injector/make_fixtures.py     # then review and commit fixtures/
"""
import copy
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
P = "sidecar.speedscale.com/"


def kubectl(*args, command=()):
    argv = ["kubectl", *args, "--dry-run=client", "-o", "json"]
    if command:
        argv += ["--", *command]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def review(obj, group, kind, uid, namespace="shop", operation="CREATE", dry_run=False,
           old=None):
    resource = {"Deployment": "deployments", "StatefulSet": "statefulsets",
                "DaemonSet": "daemonsets", "ReplicaSet": "replicasets", "Job": "jobs",
                "Pod": "pods"}[kind]
    name = obj.get("metadata", {}).get("name", "")
    req = {
        "uid": uid,
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "requestKind": {"group": group, "version": "v1", "kind": kind},
        "requestResource": {"group": group, "version": "v1", "resource": resource},
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]},
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": operation.capitalize() + "Options"},
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


def annotate(meta, **ann):
    meta.setdefault("annotations", {}).update({P + k.replace("_", "-"): v
                                               for k, v in ann.items()})
    return meta


def deployment(**ann):
    d = kubectl("create", "deployment", "web", "--image=nginx:1.25", "--port=80",
                "--replicas=2")
    d["metadata"]["namespace"] = "shop"
    if ann:
        annotate(d["spec"]["template"]["metadata"], **ann)
    return d


def job(**ann):
    j = kubectl("create", "job", "report", "--image=busybox:1.36",
                command=("/bin/sh", "-c", "wget -qO- http://api.shop.svc/report"))
    j["metadata"]["namespace"] = "shop"
    if ann:
        annotate(j["spec"]["template"]["metadata"], **ann)
    return j


def pod_spec():
    return {
        "containers": [{
            "name": "app",
            "image": "registry.example/app:2.3",
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "env": [{"name": "MODE", "value": "production"}],
            "resources": {"requests": {"cpu": "100m"}},
        }],
        "serviceAccountName": "app",
    }


def workload(kind, name, **ann):
    o = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec()},
        },
    }
    if kind == "StatefulSet":
        o["spec"]["serviceName"] = name
    if kind in ("StatefulSet", "ReplicaSet"):
        o["spec"]["replicas"] = 1
    if ann:
        annotate(o["spec"]["template"]["metadata"], **ann)
    return o


def pod(name="app", **ann):
    p = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
        "spec": pod_spec(),
    }
    if ann:
        annotate(p["metadata"], **ann)
    return p


def main():
    cases = {}
    add = cases.__setitem__

    # Deployments, as kubectl makes them.
    add("deployment_plain", review(deployment(inject="true"), "apps", "Deployment", "d-plain"))
    d = deployment()
    annotate(d["metadata"], inject="true")
    add("deployment_workload_annotation", review(d, "apps", "Deployment", "d-workload"))
    d = deployment(inject="true")
    d["spec"]["template"]["spec"]["initContainers"] = [
        {"name": "migrate", "image": "registry.example/migrate:1", "args": ["--up"]},
        {"name": "warmup", "image": "busybox:1.36", "command": ["sh", "-c", "true"]},
    ]
    add("deployment_init_containers", review(d, "apps", "Deployment", "d-init"))
    d2 = copy.deepcopy(d)
    annotate(d2["spec"]["template"]["metadata"], insert_init_first="true")
    add("deployment_insert_init_first", review(d2, "apps", "Deployment", "d-init-first"))
    d2 = copy.deepcopy(d)
    annotate(d2["spec"]["template"]["metadata"], native_sidecar="true")
    add("deployment_native", review(d2, "apps", "Deployment", "d-native"))
    d = deployment(inject="true", tls_out="true", tls_java_tool_options="true",
                   tls_in_secret="web-tls", tls_in_private="server.key")
    spec = d["spec"]["template"]["spec"]
    spec["containers"][0]["volumeMounts"] = [{"name": "conf", "mountPath": "/etc/nginx/conf.d"}]
    spec["containers"].append({"name": "exporter", "image": "registry.example/exporter:1",
                               "env": [{"name": "SSL_CERT_FILE",
                                        "value": "/etc/ssl/certs/corp.pem"}]})
    spec["volumes"] = [{"name": "conf", "configMap": {"name": "web-conf"}}]
    add("deployment_tls", review(d, "apps", "Deployment", "d-tls"))
    d = deployment(inject="true", proxy_in_port="15001", proxy_out_port="15006",
                   ignore_inbound_ports="9090, 9091, 9100:9110", ignore_outbound_ports="5432",
                   ignore_dst_ips="10.0.0.0/8,169.254.169.254", ignore_loopback="true",
                   ignore_src_ips="10.1.2.3", cpu_request="100m", cpu_limit="1500m",
                   memory_limit="512Mi", extra_container_env_vars="TEAM=shop,TRACE=1",
                   capture_sink="file:/var/lib/sidetap/web", capture_body_limit="256K",
                   log_level="debug", host_resolution="smart")
    add("deployment_settings", review(d, "apps", "Deployment", "d-settings"))
    add("deployment_reverse", review(deployment(inject="true", proxy_type="reverse",
                                                proxy_protocol="tcp", proxy_port="80"),
                                     "apps", "Deployment", "d-reverse"))
    add("deployment_refused_proxy_type", review(deployment(inject="true", proxy_type="dual"),
                                                "apps", "Deployment", "d-dual"))
    add("deployment_refused_inject", review(deployment(inject="yes"), "apps", "Deployment",
                                            "d-yes"))
    add("deployment_refused_memory", review(deployment(inject="true", memory_request="1Gi",
                                                       memory_limit="512Mi"),
                                            "apps", "Deployment", "d-mem"))
    add("deployment_no_annotation", review(deployment(), "apps", "Deployment", "d-none"))
    add("deployment_dry_run", review(deployment(inject="true"), "apps", "Deployment", "d-dry",
                                     dry_run=True))
    add("deployment_kube_system", review(deployment(inject="true"), "apps", "Deployment",
                                         "d-kube-system", namespace="kube-system"))
    d = deployment(inject="true")
    d["spec"]["template"]["spec"]["hostNetwork"] = True
    add("deployment_host_network", review(d, "apps", "Deployment", "d-hostnet"))

    # Jobs, as kubectl makes them.
    add("job_plain", review(job(inject="true"), "batch", "Job", "j-plain"))
    add("job_native", review(job(inject="true", native_sidecar="true"), "batch", "Job",
                             "j-native"))
    add("job_update", review(job(inject="true"), "batch", "Job", "j-update",
                             operation="UPDATE", old=job(inject="true")))

    # The other workloads and bare pods, by hand.
    add("statefulset_plain", review(workload("StatefulSet", "db", inject="true"), "apps",
                                    "StatefulSet", "s-plain"))
    add("daemonset_plain", review(workload("DaemonSet", "agent", inject="true"), "apps",
                                  "DaemonSet", "ds-plain"))
    add("replicaset_plain", review(workload("ReplicaSet", "legacy", inject="true"), "apps",
                                   "ReplicaSet", "rs-plain"))
    rs = workload("ReplicaSet", "web-5d8f7c9b6", inject="true")
    rs["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": "web", "uid": "0b7c", "controller": True,
                                          "blockOwnerDeletion": True}]
    add("replicaset_of_deployment", review(rs, "apps", "ReplicaSet", "rs-owned"))
    add("pod_plain", review(pod(inject="true"), "", "Pod", "p-plain"))
    add("pod_kube_system", review(pod(inject="true"), "", "Pod", "p-kube-system",
                                  namespace="kube-system"))
    add("pod_own_namespace", review(pod(inject="true"), "", "Pod", "p-own-ns",
                                    namespace="sidetap"))
    p = pod(inject="true")
    p["spec"]["hostNetwork"] = True
    add("pod_host_network", review(p, "", "Pod", "p-hostnet"))
    p = pod(inject="true")
    p["metadata"]["annotations"]["kubernetes.io/config.mirror"] = "1f3a"
    add("pod_mirror", review(p, "", "Pod", "p-mirror"))
    add("pod_dry_run", review(pod(inject="true"), "", "Pod", "p-dry", dry_run=True))
    p = pod("web-5d8f7c9b6-x2x7q", inject="true")
    p["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                         "name": "web-5d8f7c9b6", "uid": "9e1d",
                                         "controller": True, "blockOwnerDeletion": True}]
    add("pod_of_replicaset", review(p, "", "Pod", "p-owned"))
    p = pod(inject="true")
    p["spec"]["containers"].append({"name": "sidetap", "image": "registry.example/own:1"})
    add("pod_foreign_sidetap", review(p, "", "Pod", "p-foreign"))
    p = pod(inject="true")
    p["metadata"].pop("labels")
    add("pod_update", review(p, "", "Pod", "p-update", operation="UPDATE", old=pod()))

    # Recipes: another case's object after its golden patch, then changed.
    recipes = {
        "after_deployment_plain_unchanged": {
            "from": "deployment_plain", "operation": "UPDATE", "uid": "a-unchanged"},
        "after_deployment_plain_false": {
            "from": "deployment_plain", "operation": "UPDATE", "uid": "a-false",
            "template_annotations": {P + "inject": "false"}},
        "after_deployment_plain_removed": {
            "from": "deployment_plain", "operation": "UPDATE", "uid": "a-removed",
            "template_annotations": {P + "inject": None}},
        "after_deployment_plain_changed": {
            "from": "deployment_plain", "operation": "UPDATE", "uid": "a-changed",
            "template_annotations": {P + "proxy-in-port": "15001"}},
        "after_deployment_init_containers_false": {
            "from": "deployment_init_containers", "operation": "UPDATE", "uid": "a-init-false",
            "template_annotations": {P + "inject": "false"}},
        "after_deployment_native_false": {
            "from": "deployment_native", "operation": "UPDATE", "uid": "a-native-false",
            "template_annotations": {P + "inject": "false"}},
        "after_deployment_tls_false": {
            "from": "deployment_tls", "operation": "UPDATE", "uid": "a-tls-false",
            "template_annotations": {P + "inject": "false"}},
        "after_deployment_workload_annotation_false": {
            "from": "deployment_workload_annotation", "operation": "UPDATE",
            "uid": "a-workload-false", "workload_annotations": {P + "inject": "false"}},
        "after_pod_plain_unchanged": {
            "from": "pod_plain", "operation": "CREATE", "uid": "a-pod"},
    }
    os.makedirs(OUT, exist_ok=True)
    for name, rv in list(cases.items()) + list(recipes.items()):
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(rv, f, indent=2)
            f.write("\n")
    print(f"make_fixtures: wrote {len(cases) + len(recipes)} fixtures to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
