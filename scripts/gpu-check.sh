#!/usr/bin/env bash
# Exercises the NVML path on a machine with an NVIDIA GPU and driver: starts
# modelwatch (no model server needed), waits for two resource samples, and
# prints the GPU readings from /v1/status and the exported hw.gpu.* series.
# Exits 1 when modelwatch sees no GPU (the reason is printed).
#
#   scripts/gpu-check.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
W=$(mktemp -d)
printf 'resources:\n  interval: 1s\n' > "$W/c.yaml"
RUST_LOG=info "$ROOT/target/release/modelwatch" run --config "$W/c.yaml" \
  --listen 127.0.0.1:48080 --admin-listen 127.0.0.1:48090 --upstream http://127.0.0.1:48081 \
  > "$W/log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$W"' EXIT
sleep 3
grep -i "gpu" "$W/log" || true
curl -s 127.0.0.1:48090/v1/status | python3 -c '
import json, sys
r = json.load(sys.stdin)["resources"]
print("available:", r["gpu_available"], "driver:", r["gpu_driver_version"], "cuda:", r["cuda_version"])
if not r["gpu_available"]:
    print("reason:", r["gpu_unavailable_reason"]); sys.exit(1)
for g in r["gpus"]:
    print(json.dumps(g))
'
curl -s 127.0.0.1:48090/metrics | grep -E '^(hw_gpu|modelwatch_gpu)'
