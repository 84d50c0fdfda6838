#!/usr/bin/env bash
# Does an OTLP backend that black-holes (accepts connections, never answers)
# change model traffic? Runs modelwatch three ways in front of the same nginx
# stand-in upstream, each at a fixed 1,000 req/s for DURATION seconds with oha,
# and prints the latency percentiles, modelwatch's RSS and its export counters:
#   off        no OTLP endpoint
#   healthy    OTLP to a sink that answers 200 at once
#   blackhole  OTLP (metrics every 1 s, spans for every request) to a black hole
# Loopback only; everything it starts is stopped by PID at the end.
#
#   benches/otlp-outage.sh            # DURATION=20 RATE=1000
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
  server { listen 127.0.0.1:28181; location / { default_type application/json; return 200 '{"choices":[{"message":{"content":"ok"}}]}'; } } }
NGX
taskset -c 1 nginx -c "$W/up.conf" -p "$W" & PIDS+=($!)
# A sink that answers every OTLP export at once, and a black hole that never answers.
python3 - "$W" <<'PY' & PIDS+=($!)
import socket, sys, threading, http.server
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
threading.Thread(target=http.server.ThreadingHTTPServer(("127.0.0.1", 28183), Sink).serve_forever, daemon=True).start()
hole = socket.socket(); hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
hole.bind(("127.0.0.1", 28184)); hole.listen(1024); held = []
while True:
    held.append(hole.accept()[0])
PY
sleep 1

run() {  # name otlp-endpoint
  local name=$1 endpoint=$2
  env RUST_LOG=warn OTEL_EXPORTER_OTLP_ENDPOINT="$endpoint" OTEL_METRIC_EXPORT_INTERVAL=1000 OTEL_EXPORTER_OTLP_TIMEOUT=2000 \
    taskset -c 1 "$BIN" run --listen 127.0.0.1:28180 --upstream http://127.0.0.1:28181 --admin-listen 127.0.0.1:28190 &
  local pid=$!
  sleep 1
  taskset -c 0 "$OHA" -z 3s -q "$RATE" --no-tui http://127.0.0.1:28180/v1/chat/completions >/dev/null
  taskset -c 0 "$OHA" -z "${DURATION}s" -q "$RATE" --latency-correction --no-tui --output-format json \
    http://127.0.0.1:28180/v1/chat/completions > "$W/$name.json"
  local rss; rss=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
  local export; export=$(curl -s http://127.0.0.1:28190/v1/status | python3 -c 'import json,sys; e=json.load(sys.stdin)["export"]; print("metrics", e["metrics"] and {k: e["metrics"][k] for k in ("attempts","failures","skipped")}, "traces", e["traces"] and {k: e["traces"][k] for k in ("failures","skipped","dropped")})')
  kill -TERM $pid; wait $pid || true
  python3 - "$W/$name.json" "$name" "$rss" "$export" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); p = d["latencyPercentiles"]; s = d["summary"]
ms = lambda v: f"{v*1000:.3f}"
print(f'{sys.argv[2]:<10} rps={s["requestsPerSec"]:.0f} ok={s["successRate"]*100:.1f}% p50={ms(p["p50"])} p90={ms(p["p90"])} p99={ms(p["p99"])} ms  peakRSS={int(sys.argv[3])//1024} MB  {sys.argv[4]}')
PY
}
run off ""
run healthy http://127.0.0.1:28183
run blackhole http://127.0.0.1:28184
