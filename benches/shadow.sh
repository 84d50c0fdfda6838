#!/usr/bin/env bash
# Does shadow traffic change the primary's latency? Runs modelwatch four ways
# in front of the same nginx stand-in upstream, each at a fixed RATE req/s for
# DURATION seconds with oha, and prints the primary's latency percentiles,
# modelwatch's peak RSS and CPU, and its shadow counters:
#   off        no shadow
#   healthy    every request mirrored to a second nginx that answers at once
#   slow       every request mirrored to a server that answers after 2 s
#   blackhole  every request mirrored to a server that never answers (timeout 5 s)
# Loopback only; everything it starts is stopped by PID at the end.
#
#   benches/shadow.sh            # DURATION=20 RATE=1000
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION=${DURATION:-20}
RATE=${RATE:-1000}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
BIN="$ROOT/target/release/modelwatch"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
W=$(mktemp -d); PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"' EXIT

cat > "$W/up.conf" <<NGX
worker_processes 1; pid $W/up.pid; error_log $W/up.err warn; daemon off;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $W/b; proxy_temp_path $W/p; fastcgi_temp_path $W/f; uwsgi_temp_path $W/u; scgi_temp_path $W/s;
  server { listen 127.0.0.1:28281; listen 127.0.0.1:28282; location / { default_type application/json; return 200 '{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'; } } }
NGX
taskset -c 1 nginx -c "$W/up.conf" -p "$W" & PIDS+=($!)
# A shadow that answers after 2 s, and a black hole that never answers.
python3 - <<'PY' & PIDS+=($!)
import asyncio
async def slow(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            n = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")]
            if n: await reader.readexactly(n[0])
            await asyncio.sleep(2)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"); await writer.drain()
    except Exception:
        writer.close()
async def hole(reader, writer):
    await asyncio.sleep(3600)
async def main():
    await asyncio.start_server(slow, "127.0.0.1", 28283, backlog=4096)
    await asyncio.start_server(hole, "127.0.0.1", 28284, backlog=4096)
    await asyncio.sleep(1e9)
asyncio.run(main())
PY
sleep 1

run() {  # name shadow-upstream
  local name=$1 shadow=$2 cfg="$W/$1.yaml"
  if [[ -n "$shadow" ]]; then
    printf 'rollout:\n  shadow:\n    upstream: %s\n    rate: 1.0\n    timeout: 5s\n' "$shadow" > "$cfg"
  else
    : > "$cfg"
  fi
  env RUST_LOG=warn taskset -c 1 "$BIN" run --config "$cfg" --listen 127.0.0.1:28280 --upstream http://127.0.0.1:28281 --admin-listen 127.0.0.1:28290 &
  local pid=$!
  PIDS+=("$pid")
  sleep 1
  taskset -c 0 "$OHA" -z 3s -q "$RATE" --no-tui -m POST -d '{"model":"m","messages":[{"role":"user","content":"hi"}]}' -T application/json \
    http://127.0.0.1:28280/v1/chat/completions >/dev/null
  local t0; t0=$(awk '{print $14+$15}' /proc/$pid/stat)
  taskset -c 0 "$OHA" -z "${DURATION}s" -q "$RATE" --latency-correction --no-tui --output-format json \
    -m POST -d '{"model":"m","messages":[{"role":"user","content":"hi"}]}' -T application/json \
    http://127.0.0.1:28280/v1/chat/completions > "$W/$name.json"
  local t1; t1=$(awk '{print $14+$15}' /proc/$pid/stat)
  local rss; rss=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
  local shadow_counts; shadow_counts=$(curl -s http://127.0.0.1:28290/metrics | { grep '^modelwatch_shadow_requests_total' || true; } | sed 's/modelwatch_shadow_requests_total//' | tr '\n' ' ')
  kill -TERM $pid; wait $pid || true
  python3 - "$W/$name.json" "$name" "$rss" "$(( t1 - t0 ))" "$DURATION" "$shadow_counts" <<'PY'
import json, os, sys
d = json.load(open(sys.argv[1])); p = d["latencyPercentiles"]; s = d["summary"]
ms = lambda v: f"{v*1000:.3f}"
cpu = int(sys.argv[4]) / os.sysconf("SC_CLK_TCK") / float(sys.argv[5]) * 100
print(f'{sys.argv[2]:<10} rps={s["requestsPerSec"]:.0f} ok={s["successRate"]*100:.1f}% p50={ms(p["p50"])} p90={ms(p["p90"])} p99={ms(p["p99"])} ms  cpu={cpu:.1f}% peakRSS={int(sys.argv[3])//1024} MB  shadow: {sys.argv[6] or "-"}')
PY
}
run off ""
run healthy http://127.0.0.1:28282
run slow http://127.0.0.1:28283
run blackhole http://127.0.0.1:28284
