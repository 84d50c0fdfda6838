"""The plain manifests of deploy/: every Kubernetes object is validated with
kubernetes-validate --strict; where modelwatch was added to a pod by hand, the
port takeover is checked the way the injector does it (the Service's
targetPort names the sidecar's port, the sidecar forwards to a port the model
declares, the model no longer carries the name); the sidecar is hardened; an
embedded modelwatch config passes `modelwatch check-config`. The OpenTelemetry
Collector config is checked for pipelines that use only defined components.

Usage: deploy_check.py --deploy DIR --modelwatch BIN
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml

VERSIONS = ["1.29", "1.33", "1.37"]
FAILURES = []


def fail(where, message):
    FAILURES.append(f"{where}: {message}")
    print(f"FAIL {where}: {message}", flush=True)


def check_sidecar(where, pod_spec, services, a):
    everything = pod_spec.get("initContainers", []) + pod_spec["containers"]
    mw = [c for c in everything if c["name"] == "modelwatch"]
    if not mw:
        return False
    mw = mw[0]
    if mw not in pod_spec.get("initContainers", []) or mw.get("restartPolicy") != "Always":
        fail(where, "the sidecar is not a native sidecar")
    sc = mw.get("securityContext", {})
    if not (sc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"] and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"):
        fail(where, f"the sidecar is not hardened: {sc}")
    env = {e["name"]: e.get("value") for e in mw.get("env", [])}
    listen = int(env["MODELWATCH_LISTEN"].rsplit(":", 1)[1])
    upstream = int(env["MODELWATCH_UPSTREAM"].rsplit(":", 1)[1])
    mw_ports = {p["name"]: p["containerPort"] for p in mw["ports"]}
    model_ports = {p.get("name"): p["containerPort"] for c in pod_spec["containers"] for p in c.get("ports", [])}
    if upstream not in model_ports.values():
        fail(where, f"MODELWATCH_UPSTREAM port {upstream} is not a model container port")
    for svc in services:
        for p in svc["spec"]["ports"]:
            t = p["targetPort"]
            if not isinstance(t, str):
                fail(where, f"Service {svc['metadata']['name']} targets a number ({t}); traffic would bypass the sidecar")
            elif t in model_ports:
                fail(where, f"Service targetPort {t} is still the model's")
            elif t not in mw_ports:
                fail(where, f"Service targetPort {t} names no port")
            elif t != "mw-admin" and mw_ports[t] != listen:
                fail(where, f"Service targetPort {t} is not the sidecar's proxy port")
    mounts = {m["name"] for m in mw.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for m in mounts:
        if m not in vols:
            fail(where, f"sidecar mounts missing volume {m}")
    store = vols.get("modelwatch-store", {})
    if "sizeLimit" not in store.get("emptyDir", {}):
        fail(where, "the store is not a size-limited emptyDir")
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--deploy", required=True)
    ap.add_argument("--modelwatch", required=True)
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.deploy, "kubernetes", "*.yaml"))) + [os.path.join(a.deploy, "otel-collector", "collector.yaml")]
    sidecars = 0
    for f in files:
        docs = [d for d in yaml.safe_load_all(open(f)) if d]
        name = os.path.relpath(f, a.deploy)
        for d in docs:
            for v in VERSIONS:
                try:
                    kubernetes_validate.validate(d, v, strict=True)
                except Exception as e:
                    fail(f"{name} {d['kind']}/{d['metadata']['name']}", f"kubernetes-validate --strict {v}: {str(e).splitlines()[0][:300]}")
            if d["kind"] == "ConfigMap" and "modelwatch.yaml" in d.get("data", {}):
                with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as t:
                    t.write(d["data"]["modelwatch.yaml"])
                r = subprocess.run([a.modelwatch, "check-config", t.name], capture_output=True, text=True)
                if r.returncode != 0:
                    fail(name, f"modelwatch check-config refuses the ConfigMap: {r.stderr}")
        services = [d for d in docs if d["kind"] == "Service"]
        for d in docs:
            if d["kind"] == "Deployment":
                pod = d["spec"]["template"]
                if check_sidecar(f"{name} Deployment/{d['metadata']['name']}", pod["spec"], services, a):
                    sidecars += 1
                    for cm in [v["configMap"]["name"] for v in pod["spec"].get("volumes", []) if "configMap" in v]:
                        if cm not in [x["metadata"]["name"] for x in docs if x["kind"] == "ConfigMap"]:
                            fail(name, f"ConfigMap {cm} is mounted but not in the file")
        print(f"ok   {name}: {len(docs)} objects" if not FAILURES else f"..   {name}")
    if sidecars < 2:
        fail("deploy/kubernetes", f"expected the vLLM-style and KServe-style examples, found {sidecars} pods with the sidecar")

    # The collector: every pipeline names defined components of known types.
    cfg = yaml.safe_load(open(os.path.join(a.deploy, "otel-collector", "config.yaml")))
    known = {"receivers": {"otlp"}, "processors": {"memory_limiter", "batch", "resource"},
             "exporters": {"otlphttp", "elasticsearch", "otlp"}, "extensions": {"health_check"}}
    for section, types in known.items():
        for comp in cfg.get(section, {}):
            if comp.split("/")[0] not in types:
                fail("otel-collector", f"unknown {section[:-1]} type {comp}")
    for ext in cfg["service"].get("extensions", []):
        if ext not in cfg.get("extensions", {}):
            fail("otel-collector", f"extension {ext} is not defined")
    signals = {}
    for pname, p in cfg["service"]["pipelines"].items():
        for section in ("receivers", "processors", "exporters"):
            for comp in p.get(section, []):
                if comp not in cfg.get(section, {}):
                    fail("otel-collector", f"pipeline {pname} uses undefined {section[:-1]} {comp}")
        signals[pname.split("/")[0]] = p["exporters"]
    if set(signals) != {"metrics", "logs", "traces"}:
        fail("otel-collector", f"pipelines for {sorted(signals)}; expected metrics, logs and traces")
    if cfg["exporters"].get("elasticsearch", {}).get("mapping", {}).get("mode") != "ecs":
        fail("otel-collector", "logs are not ECS-mapped")
    if not cfg["exporters"]["otlphttp/prometheus"]["metrics_endpoint"].endswith("/api/v1/otlp/v1/metrics"):
        fail("otel-collector", "metrics do not go to Prometheus's OTLP receiver")
    if FAILURES:
        print(f"\n{len(FAILURES)} failure(s)")
        sys.exit(1)
    print(f"\ndeploy/ manifests are valid ({sidecars} pods with the sidecar added by hand)")


if __name__ == "__main__":
    main()
