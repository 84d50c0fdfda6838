"""The injection webhook end to end, as the Kubernetes API server uses it.

For a table of pods, builds the AdmissionReview the API server sends (the pod
after the API server's defaulting: service-account volume, tolerations,
termination message fields, ...), POSTs it over TLS to a running
`modelwatch inject-webhook` (Python's http.client, verifying the certificate
against the test CA), decodes the JSONPatch it answers, applies it with the
`jsonpatch` package (an implementation independent of the webhook's), and
validates the patched Pod with kubernetes-validate --strict for several
Kubernetes versions, plus the rules the OpenAPI schema cannot express (unique
names, port-name syntax, probes that name a port of their own container).

Then the unhappy paths: malformed JSON, a body that is not an AdmissionReview,
a review of another kind, a huge body, a wrong method; and the certificate
reload: the files are replaced and a new handshake must present the new one.

Usage: admission_table.py --native URL --legacy URL --ca CA.pem
           [--reload CERT KEY NEWCERT NEWKEY] [--metrics URL] [--out DIR]
Exit status 0 when every check passed; each failure is printed.
"""

import argparse
import base64
import copy
import http.client
import json
import os
import re
import shutil
import ssl
import sys
import time
import urllib.parse
import urllib.request
import uuid

import jsonpatch
import kubernetes_validate

NATIVE_VERSIONS = ["1.29", "1.31", "1.33", "1.35", "1.37"]
LEGACY_VERSIONS = ["1.25", "1.27", "1.28", "1.33"]

FAILURES = []


def fail(case, message):
    FAILURES.append(f"{case}: {message}")
    print(f"FAIL {case}: {message}", flush=True)


def defaulted(pod, namespace):
    """The pod as the API server holds it when mutating webhooks run: after
    defaulting and the ServiceAccount admission plugin."""
    pod = copy.deepcopy(pod)
    pod.setdefault("apiVersion", "v1")
    pod.setdefault("kind", "Pod")
    meta = pod.setdefault("metadata", {})
    meta["namespace"] = namespace
    meta.setdefault("creationTimestamp", None)
    spec = pod["spec"]
    token = "kube-api-access-" + uuid.uuid4().hex[:5]
    spec.setdefault("volumes", []).append({
        "name": token,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })
    for group in ("initContainers", "containers"):
        for c in spec.get(group, []):
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            image = c.get("image", "")
            c.setdefault("imagePullPolicy", "Always" if image.endswith(":latest") or ":" not in image else "IfNotPresent")
            c.setdefault("resources", {})
            for p in c.get("ports", []):
                p.setdefault("protocol", "TCP")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe in c:
                    pr = c[probe]
                    for k, v in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)):
                        pr.setdefault(k, v)
                    if "httpGet" in pr:
                        pr["httpGet"].setdefault("scheme", "HTTP")
            c.setdefault("volumeMounts", []).append({
                "name": token, "readOnly": True,
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            })
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("serviceAccountName", "default")
    spec["serviceAccount"] = spec["serviceAccountName"]
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("tolerations", []).extend([
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    ])
    spec.setdefault("priority", 0)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    pod["status"] = {}
    return pod


def review(pod, namespace):
    """An AdmissionReview exactly as the API server sends it for a pod CREATE."""
    obj = defaulted(pod, namespace)
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": obj["metadata"].get("name", ""),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": str(uuid.uuid4()),
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
            },
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def owned(kind, name):
    return [{"apiVersion": "apps/v1" if kind != "Job" else "batch/v1", "kind": kind, "name": name,
             "uid": str(uuid.uuid4()), "controller": True, "blockOwnerDeletion": True}]


def model_container(name="model", image="example/model:1.4.2", ports=None, **extra):
    c = {"name": name, "image": image}
    if ports is not None:
        c["ports"] = ports
    c.update(extra)
    return c


def pod(containers, annotations=None, labels=None, owner=None, init=None, **spec_extra):
    meta = {"generateName": "model-7d9f8b6c5d-", "labels": {"app": "model", **(labels or {})}}
    if annotations:
        meta["annotations"] = annotations
    if owner:
        meta["ownerReferences"] = owner
    spec = {"containers": containers}
    if init:
        spec["initContainers"] = init
    spec.update(spec_extra)
    return {"metadata": meta, "spec": spec}


HTTP = [{"name": "http", "containerPort": 8080}]

KSERVE_LABELS = {"serving.kserve.io/inferenceservice": "iris", "component": "predictor",
                 "app": "isvc.iris-predictor"}

# Knative's queue-proxy as the revision reconciler renders it (its ports and
# the user port it forwards to).
QUEUE_PROXY = {"name": "queue-proxy", "image": "gcr.io/knative-releases/knative.dev/serving/cmd/queue:v1.15.2",
               "ports": [{"name": "http-queueadm", "containerPort": 8022}, {"name": "http-autometric", "containerPort": 9090},
                         {"name": "http-usermetric", "containerPort": 9091}, {"name": "queue-port", "containerPort": 8012}],
               "env": [{"name": "SERVING_NAMESPACE", "value": "models"}, {"name": "USER_PORT", "value": "8080"},
                       {"name": "SERVING_READINESS_PROBE", "value": "{\"tcpSocket\":{\"port\":8080,\"host\":\"127.0.0.1\"},\"successThreshold\":1}"}],
               "readinessProbe": {"httpGet": {"path": "/", "port": 8012,
                                              "httpHeaders": [{"name": "K-Network-Probe", "value": "queue"}]}}}

# A pod as Istio's injector (1.24, metrics merging on) leaves it: its proxy's
# ports, the model's probe rewritten to the agent with the original kept in
# ISTIO_KUBE_APP_PROBERS, and the prometheus.io annotations on 15020.
ISTIO_POD = {
    "metadata": {"generateName": "model-7d9f8b6c5d-", "labels": {"app": "model", "security.istio.io/tlsMode": "istio"},
                 "annotations": {"sidecar.istio.io/status": "{\"initContainers\":[\"istio-init\"],\"containers\":[\"istio-proxy\"]}",
                                 "prometheus.io/scrape": "true", "prometheus.io/port": "15020",
                                 "prometheus.io/path": "/stats/prometheus"}},
    "spec": {
        "initContainers": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.24.2",
                            "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                                     "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020"]}],
        "containers": [
            model_container(ports=HTTP, readinessProbe={"httpGet": {"path": "/app-health/model/readyz", "port": 15020}}),
            {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.2",
             "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
             "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
             "env": [{"name": "ISTIO_KUBE_APP_PROBERS",
                      "value": "{\"/app-health/model/readyz\":{\"httpGet\":{\"path\":\"/ready\",\"port\":8080,\"scheme\":\"HTTP\"},\"timeoutSeconds\":1}}"}],
             "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}}},
        ],
    },
}

# name, pod, namespace opted in, webhook (native or legacy), expected outcome,
# extra checks on the patched pod.
CASES = [
    ("deployment-pod", pod([model_container(ports=HTTP)], owner=owned("ReplicaSet", "model-7d9f8b6c5d")),
     True, "native", "injected", {"proxy_name": "http", "upstream": 8080}),
    ("kserve-style", pod(
        [model_container("kserve-container", "kserve/sklearnserver:v0.14.0",
                         [{"name": "user-port", "containerPort": 8080}],
                         args=["--model_name=iris", "--model_dir=/mnt/models", "--http_port=8080"],
                         readinessProbe={"httpGet": {"path": "/v2/health/ready", "port": "user-port"}},
                         volumeMounts=[{"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": True}])],
        annotations={"modelwatch.io/inject": "true", "serving.kserve.io/deploymentMode": "RawDeployment",
                     "modelwatch.io/protocol": "kserve-v1"},
        labels={"serving.kserve.io/inferenceservice": "iris", "component": "predictor"},
        owner=owned("ReplicaSet", "iris-predictor-5f7b8c"),
        init=[{"name": "storage-initializer", "image": "kserve/storage-initializer:v0.14.0",
               "args": ["gs://kfserving-examples/models/sklearn/1.0/model", "/mnt/models"],
               "volumeMounts": [{"name": "kserve-provision-location", "mountPath": "/mnt/models"}]}],
        volumes=[{"name": "kserve-provision-location", "emptyDir": {}}]),
     False, "native", "injected",
     {"proxy_name": "user-port", "upstream": 17100, "by_number": 8080, "moved": ("args", "--http_port=17100"),
      "init_before": "storage-initializer", "env": {"MODELWATCH_PROTOCOL": "kserve-v1", "MODELWATCH_MODEL_VERSION": "v0.14.0"}}),
    ("vllm-style", pod(
        [model_container("vllm", "vllm/vllm-openai:v0.6.3",
                         [{"name": "http", "containerPort": 8000}],
                         args=["--model", "meta-llama/Llama-3.1-8B-Instruct", "--port", "8000"],
                         resources={"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "4", "memory": "24Gi"}},
                         livenessProbe={"httpGet": {"path": "/health", "port": "http"}},
                         readinessProbe={"httpGet": {"path": "/health", "port": "http"}},
                         startupProbe={"tcpSocket": {"port": "http"}, "failureThreshold": 120},
                         volumeMounts=[{"name": "shm", "mountPath": "/dev/shm"}])],
        annotations={"modelwatch.io/protocol": "openai", "modelwatch.io/sample-rate": "0.25",
                     "modelwatch.io/model-version": "llama-3.1-8b-2024-07"},
        owner=owned("ReplicaSet", "vllm-6c9d7"),
        volumes=[{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]),
     True, "native", "injected",
     {"proxy_name": "http", "upstream": 8000, "probes_numeric": 8000,
      "env": {"MODELWATCH_PROTOCOL": "openai", "MODELWATCH_SAMPLE_RATE": "0.25", "MODELWATCH_MODEL_VERSION": "llama-3.1-8b-2024-07"}}),
    ("unnamed-port", pod([model_container(ports=[{"containerPort": 8080}])]),
     True, "native", "skipped:unnamed_port", {}),
    ("unnamed-port-chosen", pod([model_container(ports=[{"containerPort": 8080}])],
                                annotations={"modelwatch.io/model-port": "8080"}),
     True, "native", "injected", {"proxy_name": "mw-proxy", "upstream": 8080, "warns": True}),
    ("no-port", pod([model_container()]), True, "native", "skipped:no_port", {}),
    # REST and gRPC of one server (MLServer, Triton, KServe): both taken over.
    ("rest-and-grpc", pod([model_container("mlserver", "seldonio/mlserver:1.7.1",
                                           [{"name": "http", "containerPort": 8080}, {"name": "grpc", "containerPort": 8081}])]),
     True, "native", "injected", {"proxy_name": "http", "upstream": 8080,
                                  "extra_ports": {"grpc": (17081, "http://127.0.0.1:8081")}}),
    # Istio's webhook ran first: its proxy's ports (15090 among them) are not
    # the model's and do not collide with the sidecar's; its merged-metrics
    # annotations point at 15020, so modelwatch joins the merge.
    ("istio-meshed", ISTIO_POD, True, "native", "injected",
     {"proxy_name": "http", "upstream": 8080, "istio_merge": "17090"}),
    # KServe RawDeployment, as the controller renders the predictor from
    # config/runtimes/kserve-sklearnserver.yaml: no port declared, the
    # Service targets 8080 by number (service_reconciler.go createDefaultSvc).
    ("kserve-raw-sklearn", pod(
        [model_container("kserve-container", "kserve/sklearnserver:v0.15.0", None,
                         args=["--model_name=iris", "--model_dir=/mnt/models", "--http_port=8080"],
                         volumeMounts=[{"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": True}])],
        labels=KSERVE_LABELS, owner=owned("ReplicaSet", "iris-predictor-5f7b8c"),
        init=[{"name": "storage-initializer", "image": "kserve/storage-initializer:v0.15.0",
               "args": ["gs://kfserving-examples/models/sklearn/1.0/model", "/mnt/models"],
               "volumeMounts": [{"name": "kserve-provision-location", "mountPath": "/mnt/models"}]}],
        volumes=[{"name": "kserve-provision-location", "emptyDir": {}}]),
     True, "native", "injected", {"proxy_name": "mw-proxy", "upstream": 17100, "by_number": 8080, "moved": ("args", "--http_port=17100")}),
    # KServe's Triton runtime (config/runtimes/kserve-tritonserver.yaml):
    # gRPC 9000 and metrics 8002 bound undeclared.
    ("kserve-raw-triton", pod(
        [model_container("kserve-container", "nvcr.io/nvidia/tritonserver:24.08-py3", None,
                         args=["tritonserver", "--model-store=/mnt/models", "--grpc-port=9000", "--http-port=8080",
                               "--allow-grpc=true", "--allow-http=true"])],
        labels=KSERVE_LABELS),
     True, "native", "injected", {"proxy_name": "mw-proxy", "upstream": 17100, "by_number": 8080, "moved": ("args", "--http-port=17100")}),
    # KServe's TF Serving runtime (config/runtimes/kserve-tensorflow-serving.yaml):
    # --model_name as KServe's Python servers take it, gRPC on --port=9000.
    ("kserve-raw-tfserving", pod(
        [model_container("kserve-container", "tensorflow/serving:2.6.2", None,
                         command=["/usr/bin/tensorflow_model_server"],
                         args=["--model_name=flowers", "--port=9000", "--rest_api_port=8080",
                               "--model_base_path=/mnt/models", "--rest_api_timeout_in_ms=60000"])],
        labels=KSERVE_LABELS),
     True, "native", "injected", {"proxy_name": "mw-proxy", "upstream": 17100, "by_number": 8080,
                                  "moved": ("args", "--rest_api_port=17100")}),
    # KServe Serverless: Knative's revision adds user-port 8080 and the
    # queue-proxy, which forwards to USER_PORT by number (knative.dev/serving
    # pkg/reconciler/revision/resources/deploy.go, queue.go); MLServer from
    # config/runtimes/kserve-mlserver.yaml.
    ("kserve-serverless-mlserver", pod(
        [model_container("kserve-container", "docker.io/seldonio/mlserver:1.7.1",
                         [{"name": "user-port", "containerPort": 8080}],
                         env=[{"name": "MLSERVER_MODEL_IMPLEMENTATION", "value": "mlserver_sklearn.SKLearnModel"},
                              {"name": "MLSERVER_HTTP_PORT", "value": "8080"}, {"name": "MLSERVER_GRPC_PORT", "value": "9000"},
                              {"name": "PORT", "value": "8080"}, {"name": "K_REVISION", "value": "iris-predictor-00001"}]),
         QUEUE_PROXY],
        labels={**KSERVE_LABELS, "serving.knative.dev/revision": "iris-predictor-00001",
                "serving.knative.dev/service": "iris-predictor"}),
     True, "native", "injected", {"proxy_name": "user-port", "upstream": 17100, "by_number": 8080,
                                  "moved": ("env", "MLSERVER_HTTP_PORT", "17100")}),
    # KServe's TorchServe runtime reads its port from config.properties:
    # refused, and the warning says how to opt in.
    ("kserve-torchserve", pod(
        [model_container("kserve-container", "pytorch/torchserve-kfs:0.12.0", None,
                         args=["torchserve", "--start", "--model-store=/mnt/models/model-store",
                               "--ts-config=/mnt/models/config/config.properties"])],
        labels=KSERVE_LABELS),
     True, "native", "skipped:cannot_move_port", {"warning_has": "TS_INFERENCE_ADDRESS"}),
    ("kserve-unknown-server", pod(
        [model_container("kserve-container", "example/custom-predictor:3", [{"name": "user-port", "containerPort": 8080}]),
         QUEUE_PROXY],
        labels={**KSERVE_LABELS, "serving.knative.dev/revision": "custom-00001"}),
     True, "native", "skipped:cannot_move_port", {"warning_has": "modelwatch.io/model-port-arg"}),
    ("kserve-unknown-server-annotated", pod(
        [model_container("kserve-container", "example/custom-predictor:3", [{"name": "user-port", "containerPort": 8080}],
                         args=["serve", "--listen", "8080"]),
         QUEUE_PROXY],
        labels={**KSERVE_LABELS, "serving.knative.dev/revision": "custom-00001"},
        annotations={"modelwatch.io/model-port-arg": "--listen"}),
     True, "native", "injected", {"proxy_name": "user-port", "upstream": 17100, "by_number": 8080, "moved": ("args", "17100")}),
    # KServe RawDeployment in an Istio mesh: Istio ran first and keeps the
    # predictor's probe (port 8080) for its agent; the copy follows the move.
    ("kserve-raw-istio", pod(
        [model_container("kserve-container", "kserve/sklearnserver:v0.15.0", None,
                         args=["--model_name=iris", "--model_dir=/mnt/models", "--http_port=8080"],
                         readinessProbe={"httpGet": {"path": "/app-health/kserve-container/readyz", "port": 15020}}),
         {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.2",
          "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
          "env": [{"name": "ISTIO_KUBE_APP_PROBERS",
                   "value": "{\"/app-health/kserve-container/readyz\":{\"httpGet\":{\"path\":\"/v1/models/iris\",\"port\":8080,\"scheme\":\"HTTP\"},\"timeoutSeconds\":1}}"}]}],
        labels=KSERVE_LABELS,
        annotations={"prometheus.io/scrape": "true", "prometheus.io/port": "15020", "prometheus.io/path": "/stats/prometheus"}),
     True, "native", "injected", {"proxy_name": "mw-proxy", "upstream": 17100, "by_number": 8080,
                                  "moved": ("args", "--http_port=17100"), "istio_merge": "17090", "istio_probe_port": 17100}),
    # Linkerd's proxy (its webhook ran first): its ports are not the model's.
    ("linkerd-meshed", pod([model_container(ports=HTTP),
                            {"name": "linkerd-proxy", "image": "cr.l5d.io/linkerd/proxy:edge-24.11.8",
                             "ports": [{"name": "linkerd-proxy", "containerPort": 4143}, {"name": "linkerd-admin", "containerPort": 4191}]}],
                           annotations={"linkerd.io/inject": "enabled", "linkerd.io/proxy-version": "edge-24.11.8"}),
     True, "native", "injected", {"proxy_name": "http", "upstream": 8080}),
    # An unnamed port of a server modelwatch knows: moved, not refused.
    ("tgi-unnamed-port", pod(
        [model_container("tgi", "ghcr.io/huggingface/text-generation-inference:2.4.0", [{"containerPort": 80}],
                         args=["--model-id", "HuggingFaceTB/SmolLM2-360M-Instruct"],
                         readinessProbe={"httpGet": {"path": "/health", "port": 80}})]),
     True, "legacy", "injected", {"proxy_name": "mw-proxy", "upstream": 17100, "by_number": 80,
                                  "moved": ("env", "PORT", "17100"), "probes_numeric": 17100}),
    ("vllm-unnamed-port", pod(
        [model_container("vllm", "vllm/vllm-openai:v0.6.3", [{"containerPort": 8000}],
                         args=["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--port", "8000"],
                         livenessProbe={"httpGet": {"path": "/health", "port": 8000}})]),
     True, "native", "injected", {"proxy_name": "mw-proxy", "upstream": 17100, "by_number": 8000,
                                  "moved": ("args", "17100"), "probes_numeric": 17100}),
    ("three-ports", pod([model_container(ports=[{"name": "http", "containerPort": 8080}, {"name": "grpc", "containerPort": 8081},
                                                {"name": "metrics", "containerPort": 8082}])]),
     True, "native", "skipped:ambiguous_port", {}),
    ("two-ports-both-chosen", pod([model_container(ports=[{"name": "http", "containerPort": 8080}, {"name": "admin-api", "containerPort": 8090}])],
                                  annotations={"modelwatch.io/model-port": "http,admin-api"}),
     True, "legacy", "injected", {"proxy_name": "http", "upstream": 8080,
                                  "extra_ports": {"admin-api": (17081, "http://127.0.0.1:8090")}}),
    ("two-ports-chosen", pod([model_container(ports=[{"name": "http", "containerPort": 8080}, {"name": "grpc", "containerPort": 8081}])],
                             annotations={"modelwatch.io/model-port": "http"}),
     True, "native", "injected", {"proxy_name": "http", "upstream": 8080}),
    ("sidecars-and-model", pod([model_container("log-shipper", "fluent/fluent-bit:3.1", []),
                                model_container("model", "example/model:2.0", HTTP)],
                               annotations={"modelwatch.io/model-container": "model", "modelwatch.io/config": "iris-modelwatch",
                                            "modelwatch.io/cpu-limit": "500m", "modelwatch.io/memory-limit": "512Mi",
                                            "modelwatch.io/share-process-namespace": "true"}),
     True, "native", "injected",
     {"proxy_name": "http", "upstream": 8080, "config_map": "iris-modelwatch", "limits": {"cpu": "500m", "memory": "512Mi"}, "share_pid": True}),
    ("already-injected", pod([model_container(ports=[{"name": "mw-http", "containerPort": 8080}])],
                             annotations={"modelwatch.io/status": "injected"},
                             init=[{"name": "modelwatch", "image": "ghcr.io/modelwatch/modelwatch:0.1.0", "restartPolicy": "Always",
                                    "ports": [{"name": "http", "containerPort": 17080}]}]),
     True, "native", "skipped:already_injected", {}),
    ("opted-out", pod([model_container(ports=HTTP)], annotations={"modelwatch.io/inject": "false"}),
     True, "native", "skipped:opted_out", {}),
    ("not-selected", pod([model_container(ports=HTTP)]), False, "native", "skipped:not_selected", {}),
    # The label form, as Istio users write it; the label wins over the annotation.
    ("label-opt-in", pod([model_container(ports=HTTP)], labels={"modelwatch.io/inject": "true"},
                         annotations={"modelwatch.io/inject": "false"}),
     False, "native", "injected", {"proxy_name": "http", "upstream": 8080}),
    ("label-opt-out", pod([model_container(ports=HTTP)], labels={"modelwatch.io/inject": "false"}),
     True, "native", "skipped:opted_out", {}),
    ("job-native", pod([model_container("batch-scorer", "example/scorer:3", HTTP)], owner=owned("Job", "nightly-scoring"),
                       restartPolicy="Never"),
     True, "native", "injected", {"proxy_name": "http", "upstream": 8080}),
    ("job-legacy", pod([model_container("batch-scorer", "example/scorer:3", HTTP)], owner=owned("Job", "nightly-scoring"),
                       restartPolicy="Never"),
     True, "legacy", "skipped:job_needs_native_sidecar", {}),
    ("deployment-pod-legacy", pod([model_container(ports=HTTP,
                                                  readinessProbe={"httpGet": {"path": "/ready", "port": "http"}})],
                                  owner=owned("ReplicaSet", "model-7d9f8b6c5d")),
     True, "legacy", "injected", {"proxy_name": "http", "upstream": 8080, "probes_numeric": 8080}),
    ("port-conflict", pod([model_container(ports=[{"name": "http", "containerPort": 8080}, {"name": "admin", "containerPort": 17090}])],
                          annotations={"modelwatch.io/model-port": "http"}),
     True, "native", "skipped:conflict", {}),
    ("name-conflict", pod([model_container(ports=[{"name": "http", "containerPort": 8080}, {"name": "mw-http", "containerPort": 9000}])],
                          annotations={"modelwatch.io/model-port": "8080"}),
     True, "native", "skipped:conflict", {}),
    ("host-network", pod([model_container(ports=[{"name": "http", "containerPort": 8080, "hostPort": 8080}])], hostNetwork=True),
     True, "native", "skipped:host_network", {}),
    ("bad-sample-rate", pod([model_container(ports=HTTP)], annotations={"modelwatch.io/sample-rate": "2"}),
     True, "native", "skipped:bad_annotation", {}),
    ("bad-protocol", pod([model_container(ports=HTTP)], annotations={"modelwatch.io/protocol": "grpc"}),
     True, "native", "skipped:bad_annotation", {}),
]

def find_port(pod, name, minor):
    """The container port a Service's targetPort `name` (TCP) resolves to in
    the EndpointSlices of Kubernetes 1.<minor>: the EndpointSlice controller's
    FindPort (staging/src/k8s.io/endpointslice/utils.go). It looks through
    spec.containers; from 1.33 also through init containers with
    restartPolicy: Always (kubernetes/kubernetes#128850, merged for 1.33, not
    backported). #127976 (1.32) taught the same to pkg/api/v1/pod's FindPort,
    which only the older Endpoints controller uses; kube-proxy reads
    EndpointSlices. None: the Service gets no port for this pod, and sends it
    nothing."""
    def match(containers):
        for c in containers:
            for p in c.get("ports", []):
                if p.get("name") == name and p.get("protocol", "TCP") == "TCP":
                    return p["containerPort"]
        return None
    found = match(pod["spec"]["containers"])
    if found is None and minor >= 33:
        found = match(c for c in pod["spec"].get("initContainers", []) if c.get("restartPolicy") == "Always")
    return found


PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def semantic_checks(case, pod):
    """What the API server's validation adds to the OpenAPI schema."""
    spec = pod["spec"]
    everything = spec.get("initContainers", []) + spec["containers"]
    names = [c["name"] for c in everything]
    if len(names) != len(set(names)):
        fail(case, f"container names repeat: {names}")
    vols = [v["name"] for v in spec.get("volumes", [])]
    if len(vols) != len(set(vols)):
        fail(case, f"volume names repeat: {vols}")
    port_names = [p["name"] for c in everything for p in c.get("ports", []) if "name" in p]
    if len(port_names) != len(set(port_names)):
        fail(case, f"port names repeat: {port_names}")
    for n in port_names:
        if len(n) > 15 or "--" in n or not PORT_NAME.match(n):
            fail(case, f"port name {n!r} is not an IANA service name")
    for c in everything:
        own = {p.get("name") for p in c.get("ports", [])}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            pr = c.get(probe) or {}
            for action in ("httpGet", "tcpSocket"):
                port = (pr.get(action) or {}).get("port")
                if isinstance(port, str) and port not in own:
                    fail(case, f"{c['name']}.{probe} names port {port!r}, which the container does not declare")
        mounts = {m["name"] for m in c.get("volumeMounts", [])}
        if not mounts <= set(vols):
            fail(case, f"{c['name']} mounts volumes {mounts - set(vols)} that the pod lacks")
    if pod["metadata"].get("ownerReferences", [{}])[0].get("kind") == "Job" and any(
            c["name"] == "modelwatch" for c in spec["containers"]):
        fail(case, "a Job's pod got a regular sidecar container; it would never complete")


def post(url, ca, body, method="POST", headers=None):
    u = urllib.parse.urlsplit(url)
    ctx = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=30)
    path = u.path + (("?" + u.query) if u.query else "")
    conn.request(method, path, body=body, headers=headers or {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def run_table(urls, ca, out):
    counts = {}
    for name, p, ns_enabled, mode, expected, checks in CASES:
        rev = review(p, "models")
        url = urls[mode] + ("/namespace" if ns_enabled else "")
        status, data = post(url, ca, json.dumps(rev).encode())
        if status != 200:
            fail(name, f"HTTP {status}: {data[:300]!r}")
            continue
        ans = json.loads(data)
        resp = ans.get("response", {})
        if ans.get("apiVersion") != "admission.k8s.io/v1" or ans.get("kind") != "AdmissionReview":
            fail(name, f"response is not an admission.k8s.io/v1 AdmissionReview: {ans}")
        if resp.get("uid") != rev["request"]["uid"]:
            fail(name, "response uid differs from the request's")
        if resp.get("allowed") is not True:
            fail(name, f"pod not allowed: {resp}")
        warnings = resp.get("warnings", [])
        key = expected.split(":")[0]
        counts[(mode, expected)] = counts.get((mode, expected), 0) + 1
        if expected.startswith("skipped"):
            reason = expected.split(":")[1]
            if "patch" in resp:
                fail(name, f"expected no patch ({reason}), got one")
            warns = reason not in ("not_selected", "opted_out", "already_injected")
            if warns and not any(reason in w for w in warnings):
                fail(name, f"expected a warning naming {reason}, got {warnings}")
            if checks.get("warning_has") and not any(checks["warning_has"] in w for w in warnings):
                fail(name, f"expected a warning naming {checks['warning_has']}, got {warnings}")
            if not warns and warnings:
                fail(name, f"expected no warning, got {warnings}")
            print(f"ok   {name}: admitted unchanged ({reason})" + (f"; warning: {warnings[0]}" if warnings else ""))
            continue
        if resp.get("patchType") != "JSONPatch" or "patch" not in resp:
            fail(name, f"expected a JSONPatch, got {resp}")
            continue
        ops = json.loads(base64.b64decode(resp["patch"]))
        before = rev["request"]["object"]
        after = jsonpatch.JsonPatch(ops).apply(before)
        if out:
            with open(os.path.join(out, f"{name}.json"), "w") as f:
                json.dump({"patch": ops, "pod": after}, f, indent=1)
        # The user's containers are changed only where the port takeover says.
        for op in ops:
            if op["op"] == "remove":
                fail(name, f"the patch removes {op['path']}")
            # A moved model (by_number) also gets its port's number and the
            # argument or variable that sets it rewritten, and Istio's copy
            # of its probes.
            allowed = r"ports/\d+/name|(liveness|readiness|startup)Probe/(httpGet|tcpSocket)/port"
            if "by_number" in checks:
                allowed += r"|ports/\d+/containerPort|args/\d+|command/\d+|env/\d+/value"
            if op["op"] == "replace" and not re.match(rf"^/spec/containers/\d+/({allowed})$", op["path"]):
                fail(name, f"the patch replaces {op['path']}")
        for v in (NATIVE_VERSIONS if mode == "native" else LEGACY_VERSIONS):
            try:
                kubernetes_validate.validate(after, v, strict=True)
            except Exception as e:  # ValidationError and schema errors alike
                fail(name, f"kubernetes-validate --strict {v}: {str(e).splitlines()[0][:300]}")
        if mode == "native":
            # A native sidecar is not a valid Pod before 1.28: the check is real.
            try:
                kubernetes_validate.validate(after, "1.27", strict=True)
                fail(name, "a native sidecar validated on 1.27, where restartPolicy on a container does not exist")
            except kubernetes_validate.ValidationError:
                pass
        semantic_checks(name, after)
        spec = after["spec"]
        group = spec.get("initContainers", []) if mode == "native" else spec["containers"]
        mw = [c for c in group if c["name"] == "modelwatch"]
        if len(mw) != 1:
            fail(name, f"expected one modelwatch container in {'initContainers' if mode == 'native' else 'containers'}")
            continue
        mw = mw[0]
        if mode == "native" and mw.get("restartPolicy") != "Always":
            fail(name, "native sidecar without restartPolicy: Always")
        if mode == "legacy" and "restartPolicy" in mw:
            fail(name, "a regular container carries restartPolicy")
        if checks.get("init_before") and [c["name"] for c in spec["initContainers"]].index(checks["init_before"]) > [c["name"] for c in spec["initContainers"]].index("modelwatch"):
            fail(name, f"the sidecar runs before {checks['init_before']}")
        sc = mw.get("securityContext", {})
        hardened = (sc.get("runAsNonRoot") is True and sc.get("readOnlyRootFilesystem") is True
                    and sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"]
                    and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault" and sc.get("runAsUser", 0) > 0)
        if not hardened:
            fail(name, f"sidecar not hardened: {sc}")
        if "add" in sc.get("capabilities", {}):
            fail(name, "sidecar adds capabilities")
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in mw.get("env", [])}
        if env.get("MODELWATCH_UPSTREAM") != f"http://127.0.0.1:{checks['upstream']}":
            fail(name, f"upstream is {env.get('MODELWATCH_UPSTREAM')}")
        for k in ("K8S_POD_NAME", "K8S_NAMESPACE_NAME", "K8S_NODE_NAME"):
            if not isinstance(env.get(k), dict) or "fieldRef" not in env[k]:
                fail(name, f"{k} is not from the downward API")
        for k, v in checks.get("env", {}).items():
            if env.get(k) != v:
                fail(name, f"{k} is {env.get(k)!r}, expected {v!r}")
        ports = {p["name"]: p["containerPort"] for p in mw["ports"]}
        if checks["proxy_name"] not in ports or ports[checks["proxy_name"]] != int(env["MODELWATCH_LISTEN"].rsplit(":", 1)[1]):
            fail(name, f"the sidecar does not serve port {checks['proxy_name']!r} on its listen address: {ports}, {env['MODELWATCH_LISTEN']}")
        # The Service keeps targeting the port by name: it must reach the
        # sidecar on every version this form is used on (native: 1.33+, which
        # the chart's nativeSidecar: auto follows; regular: any), and a native
        # sidecar must be unreachable before 1.33 (why auto exists).
        listen = int(env["MODELWATCH_LISTEN"].rsplit(":", 1)[1])
        if "by_number" in checks:
            # The Service (KServe) or the queue-proxy (Knative) addresses the
            # number, which needs no resolution on any version: the sidecar
            # must listen on it and the model must have left it.
            number = checks["by_number"]
            if listen != number:
                fail(name, f"the sidecar listens on {listen}, not on the number {number} the Service targets")
            others = [c["name"] for c in spec["containers"] + spec.get("initContainers", []) if c["name"] != "modelwatch"
                      and any(p["containerPort"] == number for p in c.get("ports", []))]
            if others:
                fail(name, f"{others} still declare port {number}")
            model = spec["containers"][0]
            kind = checks["moved"][0]
            if kind == "args" and not any(checks["moved"][1] == a or checks["moved"][1] in a for a in model.get("args", []) + model.get("command", [])):
                fail(name, f"the model's command line does not set {checks['moved'][1]}: {model.get('command')} {model.get('args')}")
            if kind == "env" and {e["name"]: e.get("value") for e in model.get("env", [])}.get(checks["moved"][1]) != checks["moved"][2]:
                fail(name, f"the model's {checks['moved'][1]} is not {checks['moved'][2]}: {model.get('env')}")
            if not any(p["containerPort"] == checks["upstream"] for p in model.get("ports", [])):
                fail(name, f"the model does not declare its new port {checks['upstream']}: {model.get('ports')}")
        else:
            for minor in ((33, 34, 35) if mode == "native" else (25, 28, 29, 32, 33, 34)):
                if find_port(after, checks["proxy_name"], minor) != listen:
                    fail(name, f"on 1.{minor} the Service's port {checks['proxy_name']!r} resolves to {find_port(after, checks['proxy_name'], minor)}, not the sidecar's {listen}")
            if mode == "native" and find_port(after, checks["proxy_name"], 32) is not None:
                fail(name, "a native sidecar's port resolved on 1.32: find_port no longer follows the Kubernetes sources")
        if "istio_merge" in checks:
            proxy = [c for c in spec["containers"] if c["name"] == "istio-proxy"][0]
            merged = {e["name"]: e.get("value") for e in proxy.get("env", [])}.get("ISTIO_PROMETHEUS_ANNOTATIONS")
            if not merged or json.loads(merged) != {"scrape": "true", "path": "/metrics", "port": checks["istio_merge"]}:
                fail(name, f"Istio's agent is not told to merge modelwatch's metrics: {merged!r}")
            if after["metadata"]["annotations"].get("prometheus.io/port") != "15020":
                fail(name, "Istio's merged-metrics annotations were changed")
        if "istio_probe_port" in checks:
            proxy = [c for c in spec["containers"] if c["name"] == "istio-proxy"][0]
            probers = json.loads({e["name"]: e.get("value") for e in proxy.get("env", [])}["ISTIO_KUBE_APP_PROBERS"])
            ports = {p["httpGet"]["port"] for p in probers.values()}
            if ports != {checks["istio_probe_port"]}:
                fail(name, f"Istio's copy of the model's probes points at {ports}, not {checks['istio_probe_port']}")
        model_names = {p.get("name") for c in spec["containers"] if c["name"] != "modelwatch" for p in c.get("ports", [])}
        if checks["proxy_name"] in model_names:
            fail(name, f"the model still declares port name {checks['proxy_name']!r}")
        extra = checks.get("extra_ports", {})
        pairs = [f"0.0.0.0:{n}={u}" for n, u in extra.values()]
        if (env.get("MODELWATCH_EXTRA_PORTS") or None) != (",".join(pairs) or None):
            fail(name, f"MODELWATCH_EXTRA_PORTS is {env.get('MODELWATCH_EXTRA_PORTS')!r}, expected {','.join(pairs)!r}")
        for port_name, (number, _) in extra.items():
            if ports.get(port_name) != number or port_name in model_names:
                fail(name, f"port {port_name!r} is not the sidecar's {number}: {ports}, model {model_names}")
            if find_port(after, port_name, 33) != number:
                fail(name, f"the Service's port {port_name!r} does not resolve to the sidecar's {number}")
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if not (mw.get(probe) or {}).get("httpGet", {}).get("port") == "mw-admin":
                fail(name, f"sidecar {probe} is not on the admin port")
        if "probes_numeric" in checks:
            model = [c for c in spec["containers"] if c["name"] != "modelwatch"][0]
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe in model:
                    action = model[probe].get("httpGet") or model[probe].get("tcpSocket")
                    if action["port"] != checks["probes_numeric"]:
                        fail(name, f"model {probe} points at {action['port']!r}, not the model's port number")
        store = [v for v in spec["volumes"] if v["name"] == "modelwatch-store"]
        if not store or "emptyDir" not in store[0] or "sizeLimit" not in store[0]["emptyDir"]:
            fail(name, f"no bounded emptyDir for the store: {store}")
        if "config_map" in checks:
            cm = [v for v in spec["volumes"] if v.get("configMap", {}).get("name") == checks["config_map"]]
            if not cm or env.get("MODELWATCH_CONFIG") != "/etc/modelwatch/modelwatch.yaml":
                fail(name, "the ConfigMap is not mounted as the config file")
        for k, v in checks.get("limits", {}).items():
            if mw.get("resources", {}).get("limits", {}).get(k) != v:
                fail(name, f"limit {k} is {mw.get('resources')}")
        if checks.get("share_pid") and spec.get("shareProcessNamespace") is not True:
            fail(name, "shareProcessNamespace not set")
        if checks.get("warns") and not warnings:
            fail(name, "expected a warning")
        if after["metadata"]["annotations"].get("modelwatch.io/status") != "injected":
            fail(name, "no modelwatch.io/status annotation")
        # Idempotent: the injected pod, reviewed again, is left alone.
        again = review(after, "models")
        s2, d2 = post(url, ca, json.dumps(again).encode())
        r2 = json.loads(d2).get("response", {})
        if s2 != 200 or "patch" in r2:
            fail(name, f"second injection changed the pod again: {s2} {r2}")
        print(f"ok   {name}: injected ({len(ops)} operations), valid on {', '.join(NATIVE_VERSIONS if mode == 'native' else LEGACY_VERSIONS)}")
    return counts


def unhappy_paths(url, ca):
    def expect(case, status, data, want_status, want_type):
        if status != want_status:
            fail(case, f"HTTP {status}, expected {want_status}: {data[:200]!r}")
            return
        try:
            err = json.loads(data)["error"]
        except Exception:
            fail(case, f"not a JSON error: {data[:200]!r}")
            return
        if err.get("type") != want_type or not err.get("message"):
            fail(case, f"error {err}, expected type {want_type}")
        else:
            print(f"ok   {case}: {status} {err['message'][:100]}")

    s, d = post(url, ca, b'{"kind": "AdmissionReview", "apiVersion": ')
    expect("malformed-json", s, d, 400, "malformed")
    s, d = post(url, ca, b"\xff\xfe not json at all")
    expect("binary-garbage", s, d, 400, "malformed")
    s, d = post(url, ca, json.dumps({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "x"}}).encode())
    expect("wrong-kind-body", s, d, 400, "wrong_kind")
    s, d = post(url, ca, json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1", "request": {}}).encode())
    expect("v1beta1-review", s, d, 400, "wrong_kind")
    s, d = post(url, ca, json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": 5}}).encode())
    expect("bad-request-field", s, d, 400, "malformed")
    huge = b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","pad":"' + b"x" * (9 * 1024 * 1024) + b'"}'
    s, d = post(url, ca, huge)
    expect("huge-body", s, d, 413, "too_large")
    s, d = post(url, ca, None, method="GET")
    expect("get", s, d, 405, "method_not_allowed")
    # Another kind of object under review: admitted, untouched.
    dep = review(pod([model_container(ports=HTTP)]), "models")
    dep["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    dep["request"]["resource"] = {"group": "apps", "version": "v1", "resource": "deployments"}
    s, d = post(url + "/namespace", ca, json.dumps(dep).encode())
    r = json.loads(d).get("response", {}) if s == 200 else {}
    if s != 200 or r.get("allowed") is not True or "patch" in r or r.get("uid") != dep["request"]["uid"]:
        fail("deployment-review", f"expected an allowed response without a patch: {s} {d[:200]!r}")
    else:
        print("ok   deployment-review: allowed, no patch")
    # An UPDATE of a pod (e.g. a label change): untouched.
    upd = review(pod([model_container(ports=HTTP)]), "models")
    upd["request"]["operation"] = "UPDATE"
    s, d = post(url + "/namespace", ca, json.dumps(upd).encode())
    r = json.loads(d).get("response", {}) if s == 200 else {}
    if s != 200 or "patch" in r:
        fail("pod-update", f"expected no patch: {s} {d[:200]!r}")
    else:
        print("ok   pod-update: allowed, no patch")
    # Still serving after all that.
    s, d = post(url + "/namespace", ca, json.dumps(review(pod([model_container(ports=HTTP)]), "models")).encode())
    if s != 200 or "patch" not in json.loads(d).get("response", {}):
        fail("after-errors", f"the webhook no longer injects: {s}")


def peer_serial(url, ca):
    u = urllib.parse.urlsplit(url)
    ctx = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
    conn.connect()
    serial = conn.sock.getpeercert()["serialNumber"]
    conn.close()
    return serial


def reload_check(url, ca, cert, key, new_cert, new_key):
    first = peer_serial(url, ca)
    # A broken pair first: the webhook must keep serving the old certificate.
    with open(cert, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    time.sleep(2.5)
    if peer_serial(url, ca) != first:
        fail("tls-reload", "a broken certificate file replaced the working one")
    shutil.copy(new_key, key + ".tmp")
    shutil.copy(new_cert, cert + ".tmp")
    os.replace(key + ".tmp", key)
    os.replace(cert + ".tmp", cert)
    deadline = time.time() + 20
    while time.time() < deadline:
        if peer_serial(url, ca) != first:
            print(f"ok   tls-reload: serial {first} -> {peer_serial(url, ca)} without a restart")
            return
        time.sleep(0.5)
    fail("tls-reload", "the new certificate was not served within 20 s")


def metrics_check(url, counts, reloaded):
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("modelwatch_injector_pods_total{"):
            labels, v = line.rsplit(" ", 1)
            values[labels] = float(v)
    injected = values.get('modelwatch_injector_pods_total{outcome="injected",reason=""}', 0)
    want = sum(n for (mode, e), n in counts.items() if mode == "native" and e == "injected")
    # +1: the after-errors check injects once more.
    if injected != want + 1:
        fail("metrics", f"injected counter {injected}, expected {want + 1}")
    for (mode, e), n in counts.items():
        if mode == "native" and e.startswith("skipped:"):
            reason = e.split(":")[1]
            got = values.get(f'modelwatch_injector_pods_total{{outcome="skipped",reason="{reason}"}}', 0)
            extra = sum(n2 for (m2, e2), n2 in counts.items() if m2 == "native" and e2 == "injected") if reason == "already_injected" else 0
            if got != n + extra:
                fail("metrics", f"skipped {reason}: {got}, expected {n + extra}")
    if reloaded and 'modelwatch_injector_tls_reloads_total{result="reloaded"} 1' not in text:
        fail("metrics", "the certificate reload is not counted")
    if reloaded and 'modelwatch_injector_tls_reloads_total{result="failed"} 0' in text:
        fail("metrics", "the broken certificate file is not counted")
    print(f"ok   metrics: {int(injected)} injected; skipped counted per reason")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--native", required=True)
    ap.add_argument("--legacy", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--reload", nargs=4, metavar=("CERT", "KEY", "NEWCERT", "NEWKEY"))
    ap.add_argument("--metrics")
    ap.add_argument("--out")
    a = ap.parse_args()
    counts = run_table({"native": a.native, "legacy": a.legacy}, a.ca, a.out)
    unhappy_paths(a.native, a.ca)
    if a.reload:
        reload_check(a.native, a.ca, *a.reload)
    if a.metrics:
        metrics_check(a.metrics, counts, bool(a.reload))
    if FAILURES:
        print(f"\n{len(FAILURES)} failure(s)")
        sys.exit(1)
    print(f"\nall {len(CASES)} pods and the error paths passed")


if __name__ == "__main__":
    main()
