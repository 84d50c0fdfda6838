#!/usr/bin/env bash
# CPU and RSS of an idle modelwatch, resource sampler on (interval 1 s) and off, 60 s each.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/modelwatch"
for mode in off on; do
  if [[ $mode == on ]]; then printf 'resources:\n  interval: 1s\n' > /tmp/m.yaml; else printf 'resources:\n  enabled: false\n' > /tmp/m.yaml; fi
  RUST_LOG=warn $BIN run --config /tmp/m.yaml --listen 127.0.0.1:58080 --admin-listen 127.0.0.1:58090 --upstream http://127.0.0.1:58081 >/dev/null 2>&1 &
  pid=$!
  sleep 5
  t0=$(awk '{print $14+$15}' /proc/$pid/stat)
  sleep 60
  t1=$(awk '{print $14+$15}' /proc/$pid/stat)
  rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  ms=$(curl -s 127.0.0.1:58090/v1/status | python3 -c 'import json,sys; r=json.load(sys.stdin).get("resources"); print(r and r["last_sample_ms"])')
  kill $pid; wait $pid || true
  echo "$mode cpu=$(python3 -c "print(round(($t1-$t0)/100/60*100,3))")% rss=${rss}kB last_sample_ms=$ms"
done
