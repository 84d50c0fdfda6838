"""The Helm chart, rendered by the real helm binary and checked without a cluster.

For every value set in helm/modelwatch/ci/ (and cert-manager "auto" with and
without the cert-manager API): `helm lint --strict`, `helm template`, and for
each rendered manifest:
- built-in kinds: kubernetes-validate --strict on several Kubernetes versions;
- cert-manager and Prometheus Operator kinds (no offline schema exists for
  them): their required fields, and the PrometheusRule's groups through
  `promtool check rules`;
- across objects: the webhook's Service, ports and paths exist; the TLS
  Secret's certificate verifies against the webhook's caBundle (openssl) and
  names the Service; volumes name ConfigMaps and Secrets the chart makes; the
  release's namespace and kube-system are never injected; the injector's
  settings file is accepted by `modelwatch inject-webhook --check-config`; the
  dashboards are JSON.
Then every file in tests/k8s/bad-values/ must be refused, naming the key.

Usage: chart_check.py --helm HELM --chart DIR --modelwatch BIN --promtool PROMTOOL
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml

VERSIONS = ["1.29", "1.33", "1.37"]
LEGACY_VERSIONS = ["1.25", "1.28"]
CRD_KINDS = {
    ("cert-manager.io/v1", "Issuer"): ["spec"],
    ("cert-manager.io/v1", "Certificate"): ["spec.secretName", "spec.issuerRef.name"],
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ["spec.selector", "spec.endpoints"],
    ("monitoring.coreos.com/v1", "PodMonitor"): ["spec.selector", "spec.podMetricsEndpoints"],
    ("monitoring.coreos.com/v1", "PrometheusRule"): ["spec.groups"],
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): ["spec.topicName", "spec.partitions", "spec.replicas", "metadata.labels"],
}
BAD_VALUES = {
    "port-out-of-range.yaml": "/sidecar/proxyPort",
    "failure-policy.yaml": "/injector/failurePolicy",
    "bad-quantity.yaml": "/sidecar/resources/limits/memory",
    "misspelled-key.yaml": "nativeSidcar",
    "cert-manager.yaml": "/tls/certManager",
    "same-ports.yaml": "must differ",
    "moved-port-is-admin-port.yaml": "sidecar.movedPort must differ",
    "otlp-without-scheme.yaml": "/sidecar/otlpEndpoint",
    "fleet-without-bootstrap.yaml": "/fleet/kafka/bootstrap",
}
FAILURES = []


def fail(where, message):
    FAILURES.append(f"{where}: {message}")
    print(f"FAIL {where}: {message}", flush=True)


def get(obj, dotted):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def render(a, name, values, extra):
    env = dict(os.environ)
    tmp = tempfile.mkdtemp()
    for k in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[k] = os.path.join(tmp, k.lower())
    lint = run([a.helm, "lint", "--strict", a.chart, "-f", values], env=env)
    if lint.returncode != 0:
        fail(name, f"helm lint --strict: {lint.stdout}{lint.stderr}")
    out = run([a.helm, "template", "mw", a.chart, "-n", "modelwatch", "-f", values] + extra, env=env)
    if out.returncode != 0:
        fail(name, f"helm template: {out.stderr}")
        return []
    notes = run([a.helm, "install", "mw", a.chart, "-n", "modelwatch", "-f", values, "--dry-run=client"], env=env)
    if notes.returncode != 0 or "NOTES:" not in notes.stdout:
        fail(name, f"helm install --dry-run=client (NOTES.txt): {notes.stderr[-500:]}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def native_expected(vals, kube):
    """Whether the injector makes native sidecars: sidecar.nativeSidecar, or
    with "auto" whether a Service's named port resolves to one on `kube`
    (admission_table.find_port: from 1.33)."""
    nat = vals.get("sidecar", {}).get("nativeSidecar", "auto")
    if isinstance(nat, bool):
        return nat
    major, minor = (int(x) for x in kube.split(".")[:2])
    return (major, minor) >= (1, 33)


def check_set(a, name, values, extra, want_cert_manager, kube="1.33.0"):
    before = len(FAILURES)
    docs = render(a, name, values, extra + ["--kube-version", kube])
    if not docs:
        return
    vals = yaml.safe_load(open(values)) or {}
    native = native_expected(vals, kube)
    legacy = not native
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        key = (d["apiVersion"], d["kind"])
        where = f"{name}: {d['kind']}/{d['metadata']['name']}"
        if key in CRD_KINDS:
            for field in CRD_KINDS[key]:
                if get(d, field) in (None, [], ""):
                    fail(where, f"missing {field}")
            continue
        for v in VERSIONS + (LEGACY_VERSIONS if legacy else []):
            try:
                kubernetes_validate.validate(d, v, strict=True)
            except Exception as e:
                fail(where, f"kubernetes-validate --strict {v}: {str(e).splitlines()[0][:300]}")

    injector_on = vals.get("injector", {}).get("enabled", True)
    kinds = set(by_kind)
    if injector_on:
        for k in ("Deployment", "Service", "ServiceAccount", "ConfigMap", "MutatingWebhookConfiguration"):
            if k not in kinds:
                fail(name, f"no {k} rendered")
        if vals.get("injector", {}).get("replicas", 2) > 1 and "PodDisruptionBudget" not in kinds:
            fail(name, "no PodDisruptionBudget with several replicas")
        check_injector(a, name, by_kind, want_cert_manager, vals, native)
    else:
        for k in ("MutatingWebhookConfiguration", "Secret"):
            if k in kinds:
                fail(name, f"{k} rendered with the injector off")
        if any(d["metadata"]["name"].endswith("-injector") for d in by_kind.get("Deployment", [])):
            fail(name, "the injector's Deployment rendered with the injector off")
    collector_on = vals.get("collector", {}).get("enabled", False)
    collectors = [d for d in by_kind.get("Deployment", []) if d["metadata"]["name"].endswith("-collector")]
    if collector_on:
        check_collector(a, name, by_kind, collectors)
    elif collectors:
        fail(name, "a collector rendered with collector.enabled false")
    fleet = vals.get("fleet", {})
    fleet_on = fleet.get("enabled", False)
    joiner_monitor = fleet_on and fleet.get("joiner", {}).get("serviceMonitor", False)
    for flag, kind in (("serviceMonitor", "ServiceMonitor"), ("podMonitor", "PodMonitor"), ("prometheusRule", "PrometheusRule")):
        on = vals.get(flag, {}).get("enabled", False) and (injector_on or kind != "ServiceMonitor")
        if kind == "ServiceMonitor":
            on = on or joiner_monitor
        if on != (kind in kinds):
            fail(name, f"{kind} rendered: {kind in kinds}, expected {on}")
    if fleet_on:
        check_fleet(a, name, by_kind, vals)
    elif "StatefulSet" in kinds or "KafkaTopic" in kinds:
        fail(name, "joiners or topics rendered with fleet.enabled false")
    for pm in by_kind.get("PodMonitor", []):
        port = pm["spec"]["podMetricsEndpoints"][0]["port"]
        if port != "mw-admin" or pm["spec"]["selector"]["matchLabels"] != {"modelwatch.io/injected": "true"}:
            fail(name, "the PodMonitor does not select injected pods' admin port")
    for pr in by_kind.get("PrometheusRule", []):
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            yaml.safe_dump(pr["spec"], f)
        r = run([a.promtool, "check", "rules", f.name])
        if r.returncode != 0:
            fail(name, f"promtool check rules on the PrometheusRule: {r.stdout}{r.stderr}")
        want = yaml.safe_load(open(os.path.join(a.chart, "..", "..", "deploy", "prometheus", "modelwatch-rules.yml")))
        if pr["spec"] != want:
            fail(name, "the PrometheusRule's groups differ from deploy/prometheus/modelwatch-rules.yml")
    dashboards = [c for c in by_kind.get("ConfigMap", []) if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    files = [f for f in os.listdir(os.path.join(a.chart, "dashboards")) if f.endswith(".json")]
    if len(dashboards) != len(files):
        fail(name, f"{len(dashboards)} dashboard ConfigMaps for {len(files)} dashboard files")
    for c in dashboards:
        for k, v in c["data"].items():
            try:
                json.loads(v)
            except ValueError as e:
                fail(name, f"dashboard {k} is not JSON: {e}")
        ns = vals.get("dashboards", {}).get("namespace") or "modelwatch"
        if c["metadata"]["namespace"] != ns:
            fail(name, f"dashboard in namespace {c['metadata']['namespace']}, expected {ns}")
    if len(FAILURES) == before:
        print(f"ok   {name}: {len(docs)} manifests ({', '.join(sorted(kinds))})")


def check_fleet(a, name, by_kind, vals):
    """The joiners: a StatefulSet with a volume per pod, its Services, PDB,
    topics, a config `modelwatch check-config` accepts with the Kafka
    environment the chart gives, and sidecars switched to Kafka."""
    fleet = vals["fleet"]
    kafka = fleet["kafka"]
    sts = [d for d in by_kind.get("StatefulSet", []) if d["metadata"]["name"].endswith("-joiner")]
    if len(sts) != 1:
        fail(name, "no joiner StatefulSet")
        return
    sts = sts[0]
    pod = sts["spec"]["template"]
    ctr = pod["spec"]["containers"][0]
    if ctr["args"][0] != "joiner" or not any(x.startswith("--store-dir=") for x in ctr["args"]):
        fail(name, f"the joiner's args: {ctr['args']}")
    claims = [c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])]
    mounts = {m["name"] for m in ctr["volumeMounts"]}
    if "store" not in claims or "store" not in mounts:
        fail(name, "the joiner's store is not a per-pod volume claim")
    env = {e["name"]: e for e in ctr["env"]}
    if env.get("MODELWATCH_QUALITY_BACKEND", {}).get("value") != "kafka" or env.get("MODELWATCH_KAFKA_BOOTSTRAP", {}).get("value") != kafka["bootstrap"]:
        fail(name, "the joiner lacks the Kafka environment")
    for s in kafka.get("secretEnv", []):
        ref = env.get(s["name"], {}).get("valueFrom", {}).get("secretKeyRef", {})
        if ref != {"name": s["secretName"], "key": s["key"]}:
            fail(name, f"the joiner's {s['name']} does not come from Secret {s['secretName']}")
    cports = {p["name"] for p in ctr["ports"]}
    sel = pod["metadata"]["labels"]
    svcs = [s for s in by_kind.get("Service", []) if "-joiner" in s["metadata"]["name"]]
    if len(svcs) != 2 or not any(s["spec"].get("clusterIP") == "None" and s["metadata"]["name"] == sts["spec"]["serviceName"] for s in svcs):
        fail(name, "the joiner needs a Service and a headless Service named by serviceName")
    for s in svcs:
        if any(sel.get(k) != v for k, v in s["spec"]["selector"].items()):
            fail(name, f"Service {s['metadata']['name']} does not select the joiners")
        for p in s["spec"]["ports"]:
            if p["targetPort"] not in cports:
                fail(name, f"Service {s['metadata']['name']} targets {p['targetPort']}, not a joiner port")
    pdbs = [p for p in by_kind.get("PodDisruptionBudget", []) if p["metadata"]["name"].endswith("-joiner")]
    if len(pdbs) != 1:
        fail(name, "no joiner PodDisruptionBudget")
    cms = [c for c in by_kind.get("ConfigMap", []) if "joiner.yaml" in c.get("data", {})]
    if len(cms) != 1:
        fail(name, "no joiner.yaml ConfigMap")
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(cms[0]["data"]["joiner.yaml"])
        run_env = dict(os.environ)
        for k, e in env.items():
            if "value" in e:
                run_env[k] = e["value"]
        for s in kafka.get("secretEnv", []):
            run_env[s["name"]] = "secret-from-the-test"
        r = run([a.modelwatch, "check-config", f.name], env=run_env)
        if r.returncode != 0:
            fail(name, f"modelwatch refuses the joiner's config: {r.stderr}")
        else:
            eff = yaml.safe_load(r.stdout)["quality"]
            if eff["backend"] != "kafka" or eff["kafka"]["state_topic"] != kafka.get("stateTopic", "modelwatch.quality-state"):
                fail(name, f"the joiner's effective quality settings: {eff['backend']} {eff['kafka']}")
            if "secret-from-the-test" in r.stdout:
                fail(name, "check-config shows a secret")
    topics = by_kind.get("KafkaTopic", [])
    if fleet.get("strimziTopics", {}).get("enabled"):
        names = sorted(t["spec"]["topicName"] for t in topics)
        want = sorted([kafka.get("predictionsTopic", "modelwatch.predictions"), kafka.get("labelsTopic", "modelwatch.labels"), kafka.get("stateTopic", "modelwatch.quality-state")])
        if names != want:
            fail(name, f"KafkaTopics {names}, expected {want}")
        for t in topics:
            compact = t["spec"].get("config", {}).get("cleanup.policy") == "compact"
            if compact != (t["spec"]["topicName"] == want[want.index(kafka.get("stateTopic", "modelwatch.quality-state"))]):
                fail(name, f"KafkaTopic {t['spec']['topicName']}: only the state topic is compacted")


def check_collector(a, name, by_kind, collectors):
    """The collector: a Service on its admin port with client affinity (a
    request's two events must meet in one replica), a config modelwatch
    accepts, and `run` with the proxy on loopback."""
    if len(collectors) != 1:
        fail(name, f"{len(collectors)} collector Deployments")
        return
    pod = collectors[0]["spec"]["template"]
    ctr = pod["spec"]["containers"][0]
    cports = {p["name"] for p in ctr["ports"]}
    if ctr["args"][0] != "run" or "--listen=127.0.0.1:8080" not in ctr["args"] or "--admin-listen=0.0.0.0:9464" not in ctr["args"]:
        fail(name, f"the collector's args: {ctr['args']}")
    svcs = [s for s in by_kind.get("Service", []) if s["metadata"]["name"].endswith("-collector")]
    if len(svcs) != 1 or svcs[0]["spec"].get("sessionAffinity") != "ClientIP":
        fail(name, "the collector needs one Service with sessionAffinity: ClientIP")
    for s in svcs:
        if any(pod["metadata"]["labels"].get(k) != v for k, v in s["spec"]["selector"].items()):
            fail(name, "the collector's Service does not select it")
        for p in s["spec"]["ports"]:
            if p["targetPort"] not in cports:
                fail(name, f"the collector's Service targets {p['targetPort']}, not a port of it")
    cms = [c for c in by_kind.get("ConfigMap", []) if c["metadata"]["name"].endswith("-collector")]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(cms[0]["data"]["modelwatch.yaml"])
    r = run([a.modelwatch, "check-config", f.name])
    if r.returncode != 0:
        fail(name, f"modelwatch refuses the collector's config: {r.stderr}")
    elif yaml.safe_load(r.stdout)["cloudevents"]["enabled"] is not True:
        fail(name, "the collector's config turns cloudevents off")


def check_injector(a, name, by_kind, want_cert_manager, vals, native):
    dep = [d for d in by_kind["Deployment"] if d["metadata"]["name"].endswith("-injector")][0]
    svc = [s for s in by_kind["Service"] if s["metadata"]["name"].endswith("-injector")][0]
    hook = by_kind["MutatingWebhookConfiguration"][0]
    pod = dep["spec"]["template"]
    ctr = pod["spec"]["containers"][0]
    cports = {p["name"] for p in ctr["ports"]}
    for p in svc["spec"]["ports"]:
        if p["targetPort"] not in cports:
            fail(name, f"Service targetPort {p['targetPort']} is not a container port")
    if any(svc["spec"]["selector"].get(k) != v for k, v in svc["spec"]["selector"].items() if pod["metadata"]["labels"].get(k) != v):
        fail(name, "the Service does not select the injector's pods")
    if pod["metadata"]["labels"].get("modelwatch.io/inject") != "false":
        fail(name, "the injector's own pods are not opted out")
    sc = ctr["securityContext"]
    if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False and sc["capabilities"]["drop"] == ["ALL"]
            and pod["spec"]["securityContext"].get("runAsNonRoot")):
        fail(name, "the injector is not hardened")
    secret_names = {s["metadata"]["name"] for s in by_kind.get("Secret", [])}
    secret_names |= {c["spec"]["secretName"] for c in by_kind.get("Certificate", [])}
    config_maps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    for v in pod["spec"]["volumes"]:
        if "secret" in v and v["secret"]["secretName"] not in secret_names:
            fail(name, f"volume {v['name']} names Secret {v['secret']['secretName']}, which nothing makes")
        if "configMap" in v and v["configMap"]["name"] not in config_maps:
            fail(name, f"volume {v['name']} names ConfigMap {v['configMap']['name']}, which the chart lacks")
    # The injector accepts its rendered settings.
    cm = [c for c in config_maps.values() if "injector.yaml" in c.get("data", {})]
    if len(cm) != 1:
        fail(name, "no injector.yaml ConfigMap")
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(cm[0]["data"]["injector.yaml"])
        r = run([a.modelwatch, "inject-webhook", "--check-config", "--config", f.name])
        if r.returncode != 0:
            fail(name, f"modelwatch refuses the rendered injector.yaml: {r.stderr}")
        else:
            eff = yaml.safe_load(r.stdout)
            sv = vals.get("sidecar", {})
            if eff["native_sidecar"] != native or eff["proxy_port"] != sv.get("proxyPort", 17080):
                fail(name, f"the injector's effective settings differ from the values: {eff}")
            env = {e["name"]: e.get("value") for e in eff["env"]}
            if sv.get("otlpEndpoint") and env.get("OTEL_EXPORTER_OTLP_ENDPOINT") != sv["otlpEndpoint"]:
                fail(name, "otlpEndpoint does not reach the sidecars' environment")
            fleet = vals.get("fleet", {})
            if fleet.get("enabled") and (env.get("MODELWATCH_QUALITY_BACKEND") != "kafka" or env.get("MODELWATCH_KAFKA_BOOTSTRAP") != fleet["kafka"]["bootstrap"]):
                fail(name, "fleet.enabled does not switch the sidecars to Kafka")
            if not fleet.get("enabled") and "MODELWATCH_QUALITY_BACKEND" in env:
                fail(name, "sidecars switched to Kafka with fleet.enabled false")
            img = vals.get("image", {})
            if img.get("repository") and not eff["image"].startswith(img["repository"] + ":"):
                fail(name, f"sidecar image {eff['image']} ignores image.repository")
    # The webhook entries.
    entries = {w["name"]: w for w in hook["webhooks"]}
    if set(entries) != {"namespace.inject.modelwatch.io", "pod.inject.modelwatch.io"}:
        fail(name, f"webhook entries {sorted(entries)}")
    for w in hook["webhooks"]:
        ref = w["clientConfig"]["service"]
        if ref["name"] != svc["metadata"]["name"] or ref["namespace"] != svc["metadata"]["namespace"] or ref["port"] not in [p["port"] for p in svc["spec"]["ports"]]:
            fail(name, f"{w['name']} calls a service the chart does not make: {ref}")
        if ref["path"] not in ("/mutate", "/mutate/namespace"):
            fail(name, f"{w['name']} path {ref['path']}")
        excluded = [e for e in w["namespaceSelector"]["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name"][0]["values"]
        if "modelwatch" not in excluded or "kube-system" not in excluded:
            fail(name, f"{w['name']} does not exclude its own namespace and kube-system: {excluded}")
        if w["failurePolicy"] != vals.get("injector", {}).get("failurePolicy", "Ignore"):
            fail(name, f"failurePolicy {w['failurePolicy']}")
    ns_entry = entries.get("namespace.inject.modelwatch.io", {})
    if ns_entry and ns_entry["clientConfig"]["service"]["path"] != "/mutate/namespace":
        fail(name, "the namespace entry does not tell the webhook the namespace opted in")
    # TLS.
    if want_cert_manager:
        if "Certificate" not in by_kind or "Secret" in by_kind:
            fail(name, "expected cert-manager objects, not a generated Secret")
        if not hook["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from"):
            fail(name, "no cert-manager.io/inject-ca-from annotation")
        serving = [c for c in by_kind.get("Certificate", []) if not c["spec"].get("isCA")]
        if not serving or f"{svc['metadata']['name']}.modelwatch.svc" not in serving[0]["spec"]["dnsNames"]:
            fail(name, "the serving Certificate does not name the Service")
    else:
        if "Certificate" in by_kind:
            fail(name, "cert-manager objects without cert-manager")
        secret = by_kind["Secret"][0]
        tmp = tempfile.mkdtemp()
        for k in ("ca.crt", "tls.crt", "tls.key"):
            with open(os.path.join(tmp, k), "wb") as f:
                f.write(base64.b64decode(secret["data"][k]))
        for w in hook["webhooks"]:
            if base64.b64decode(w["clientConfig"]["caBundle"]) != open(os.path.join(tmp, "ca.crt"), "rb").read():
                fail(name, f"{w['name']} caBundle is not the Secret's CA")
        host = f"{svc['metadata']['name']}.modelwatch.svc"
        r = run(["openssl", "verify", "-CAfile", os.path.join(tmp, "ca.crt"), "-verify_hostname", host, os.path.join(tmp, "tls.crt")])
        if r.returncode != 0:
            fail(name, f"the serving certificate does not verify for {host}: {r.stdout}{r.stderr}")
        r1 = run(["openssl", "x509", "-noout", "-pubkey", "-in", os.path.join(tmp, "tls.crt")])
        r2 = run(["openssl", "pkey", "-pubout", "-in", os.path.join(tmp, "tls.key")])
        if r1.stdout != r2.stdout:
            fail(name, "tls.key does not match tls.crt")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--helm", required=True)
    ap.add_argument("--chart", required=True)
    ap.add_argument("--modelwatch", required=True)
    ap.add_argument("--promtool", required=True)
    a = ap.parse_args()
    ci = os.path.join(a.chart, "ci")
    for f in sorted(os.listdir(ci)):
        path = os.path.join(ci, f)
        vals = yaml.safe_load(open(path)) or {}
        cm = str(vals.get("tls", {}).get("certManager", "auto")).lower() == "true"
        check_set(a, f, path, [], cm)
    default = os.path.join(ci, "default-values.yaml")
    check_set(a, "default-values.yaml + cert-manager API present", default, ["--api-versions", "cert-manager.io/v1"], True)
    # nativeSidecar: auto follows the cluster's version (regular containers
    # where a Service's named port would not resolve to a native sidecar).
    for kube in ("1.29.0", "1.32.4", "1.34.1"):
        check_set(a, f"default-values.yaml on Kubernetes {kube}", default, [], False, kube)
    # Forcing a native sidecar where it cannot be routed to is refused.
    r = run([a.helm, "template", "mw", a.chart, "--kube-version", "1.31.2", "--set", "sidecar.nativeSidecar=true"])
    if r.returncode == 0 or "before 1.33" not in r.stderr:
        fail("nativeSidecar: true on 1.31", f"not refused with the reason: {r.stderr.strip()[:300]}")
    else:
        print("ok   nativeSidecar: true on Kubernetes 1.31: refused")
    bad_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bad-values")
    for f, want in sorted(BAD_VALUES.items()):
        r = run([a.helm, "template", "mw", a.chart, "-f", os.path.join(bad_dir, f)])
        if r.returncode == 0:
            fail(f"bad-values/{f}", "helm template accepted it")
        elif want not in r.stderr:
            fail(f"bad-values/{f}", f"the error does not name {want!r}: {r.stderr.strip()[:300]}")
        else:
            print(f"ok   bad-values/{f}: refused ({r.stderr.strip().splitlines()[-1][:120]})")
    if set(os.listdir(bad_dir)) != set(BAD_VALUES):
        fail("bad-values", "every file there needs an expected error in BAD_VALUES")
    if FAILURES:
        print(f"\n{len(FAILURES)} failure(s)")
        sys.exit(1)
    print("\nthe chart renders valid manifests for every value set")


if __name__ == "__main__":
    main()
