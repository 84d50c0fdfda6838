#!/usr/bin/env bash
# Load benchmark: nginx and modelwatch as the proxy under test, side by side, on
# loopback, with the harness in benches/load (fixed rates with oha, max throughput
# with wrk, streaming first-event delay). modelwatch samples 100% of requests.
#
#   benches/proxy.sh                # full run: 3 reps of 15 s per point (~15 min)
#   QUICK=1 benches/proxy.sh        # smoke run: 1 rep of 5 s per point
#   ONLY=modelwatch benches/proxy.sh
#
# Needs: nginx, wrk (apt-get install nginx wrk), oha (cargo install oha --locked),
# python3, taskset, GNU time. Results: benches/load/results/<stamp>-<name>/summary.txt
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
export OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
cd "$ROOT/benches/load"
if [[ "${ONLY:-}" != modelwatch ]]; then
  PROXY_NAME=nginx ./run.sh
fi
if [[ "${ONLY:-}" != nginx ]]; then
  PROXY_NAME=modelwatch \
  PROXY_CMD="env RUST_LOG=warn $ROOT/target/release/modelwatch run --listen 127.0.0.1:18080 --upstream http://127.0.0.1:18081 --admin-listen 127.0.0.1:18090" \
    ./run.sh
fi
