#!/usr/bin/env bash
# Soak: modelwatch for a long run at a steady load while its sinks fail in turn.
#
#   load (oha, 2,000 req/s in all) -> modelwatch -> nginx stand-in model server
#   a label feeder: its own predictions (20/s, known request ids) and their labels
#   modelwatch -> OTLP receiver (metrics, spans and payload logs), -> Alertmanager
#
# The run is cut into six equal phases (SOAK_MINUTES=60: ten minutes each):
#   1 warm-up, all up        2 OTLP receiver down     3 all up
#   4 Alertmanager down      5 label feed down         6 all up
# "Down" means the process is stopped (connections refused) and started again at the
# end of its phase; the label feeder keeps sending predictions while its labels wait,
# then sends the backlog. RSS is read every 10 s; the figure of merit is the highest
# RSS after warm-up against the RSS at the end of warm-up (target: within 10%).
# At the end: oha's status codes and errors (target: no failed model request), the
# feeder's totals, and every counter of dropped or failed data modelwatch exports.
#
#   benches/soak.sh                      # SOAK_MINUTES=60 RATE=2000
#   SOAK_MINUTES=6 benches/soak.sh       # a 6-minute rehearsal
# Needs nginx, oha, python3 and the testbed (scripts/testbed.sh install) for
# Alertmanager. Loopback only; everything it starts is stopped by PID at the end.
# Output: benches/soak-results/<timestamp>/ (rss.csv, oha-*.json, metrics-end.txt,
# feeder.json, summary.txt).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SOAK_MINUTES=${SOAK_MINUTES:-60}
RATE=${RATE:-2000}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
AM=${AM:-$ROOT/.testbed/root/usr/bin/prometheus-alertmanager}
BIN=${BIN:-$ROOT/target/release/modelwatch}
[[ -n "${BIN_PREBUILT:-}" ]] || cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
for t in nginx python3 curl "$OHA" "$AM"; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }; done

PHASE=$((SOAK_MINUTES * 60 / 6))
TOTAL=$((PHASE * 6))
OUT="$ROOT/benches/soak-results/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
W=$(mktemp -d)
PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$W"; }
trap stop_all EXIT

UP=28281 PX=28280 ADMIN=28290 SINK=28283 AMP=28293
cat > "$W/up.conf" <<NGX
worker_processes 1; pid $W/up.pid; error_log $W/up.err warn; daemon off;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $W/b; proxy_temp_path $W/p; fastcgi_temp_path $W/f; uwsgi_temp_path $W/u; scgi_temp_path $W/s;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP;
    location = /v1/models/m:predict { default_type application/json; return 200 '{"predictions":[1]}'; }
    location / { default_type application/json;
      return 200 '{"id":"c1","object":"chat.completion","model":"soak-7b","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}'; } } }
NGX
nginx -c "$W/up.conf" -p "$W" & PIDS+=($!)

# OTLP receiver: answers every export (metrics, traces, logs) with 200 and counts them.
start_sink() {
  python3 - "$SINK" "$W/sink.count" <<'PY' &
import http.server, sys
port, count = int(sys.argv[1]), sys.argv[2]
n = {"requests": 0, "bytes": 0}
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        b = self.rfile.read(int(self.headers.get("content-length", 0)))
        n["requests"] += 1; n["bytes"] += len(b)
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
        with open(count, "a") as f: f.write(f"{self.path} {len(b)}\n")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
PY
  SINK_PID=$!
}
start_am() {
  mkdir -p "$W/am"
  printf 'route:\n  receiver: none\n  group_wait: 1s\nreceivers:\n  - name: none\n' > "$W/am/am.yml"
  "$AM" --config.file="$W/am/am.yml" --storage.path="$W/am/data" --web.listen-address=127.0.0.1:$AMP \
    --cluster.listen-address= >>"$W/am/log" 2>&1 &
  AM_PID=$!
}
start_sink; start_am

cat > "$W/mw.yaml" <<YAML
proxy: {listen: "127.0.0.1:$PX", upstream: "http://127.0.0.1:$UP"}
admin: {listen: "127.0.0.1:$ADMIN"}
quality: {store_path: "$W/store.redb", windows: [5m, 1h]}
telemetry: {otlp: {endpoint: "http://127.0.0.1:$SINK", metrics_interval: 10s, timeout: 2s, max_backoff: 1m}}
alerts:
  evaluation_interval: 5s
  alertmanager: {url: "http://127.0.0.1:$AMP", resend_interval: 30s, timeout: 2s}
  rules:
    - {name: SoakAlwaysFiring, figure: modelwatch.upstream.up, below: 2, severity: info}
YAML
RUST_LOG=warn "$BIN" run --config "$W/mw.yaml" > "$OUT/modelwatch.log" 2>&1 & MW=$!; PIDS+=($MW)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.1; done

# The label feeder: predictions with known ids through the proxy, their labels to the
# admin port every 2 s, held back while $W/labels-down exists.
python3 - "$PX" "$ADMIN" "$W/labels-down" "$OUT/feeder.json" <<'PY' & FEEDER=$!
import http.client, json, os, random, signal, sys, time
px, admin, down, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
tot = {"predictions": 0, "prediction_failures": 0, "labels_sent": 0, "feedback_failures": 0,
       "joined": 0, "unmatched": 0, "duplicate": 0, "invalid": 0, "max_backlog": 0}
def finish(*_):
    json.dump(tot, open(out, "w")); sys.exit(0)
signal.signal(signal.SIGTERM, finish)
model = http.client.HTTPConnection("127.0.0.1", px, timeout=10)
fb = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
backlog, i, last = [], 0, time.time()
while True:
    t = time.time()
    rid = f"soak-{i}"; i += 1
    try:
        model.request("POST", "/v1/models/m:predict", json.dumps({"instances": [[random.random() for _ in range(4)]]}),
                      {"content-type": "application/json", "x-request-id": rid})
        r = model.getresponse(); r.read()
        tot["predictions"] += 1
        if r.status == 200: backlog.append((t, {"request_id": rid, "label": random.choice([0, 1])}))
        else: tot["prediction_failures"] += 1
    except Exception:
        tot["prediction_failures"] += 1; model.close()
    tot["max_backlog"] = max(tot["max_backlog"], len(backlog))
    if t - last >= 2 and not os.path.exists(down) and backlog:
        last = t
        # labels follow their predictions by at least a second, as a labelling system's do
        ready = [b for b in backlog if t - b[0] >= 1]
        backlog = backlog[len(ready):]
        while ready:
            batch, ready = ready[:500], ready[500:]
            try:
                fb.request("POST", "/v1/feedback", json.dumps({"items": [b[1] for b in batch]}), {"content-type": "application/json"})
                r = fb.getresponse(); a = json.loads(r.read() or b"{}")
                tot["labels_sent"] += len(batch)
                for k in ("joined", "unmatched", "duplicate", "invalid"): tot[k] += a.get(k, 0)
            except Exception:
                tot["feedback_failures"] += 1; fb.close(); backlog = batch + ready + backlog; break
    time.sleep(max(0, 0.05 - (time.time() - t)))
PY
PIDS+=($FEEDER)

python3 - "$MW" "$OUT/rss.csv" <<'PY' & RSS=$!
import sys, time
pid, out = sys.argv[1], sys.argv[2]
t0 = time.time()
with open(out, "w") as f:
    f.write("seconds,rss_kib\n")
    while True:
        try: rss = next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
        except Exception: break
        f.write(f"{time.time()-t0:.0f},{rss}\n"); f.flush(); time.sleep(10)
PY
PIDS+=($RSS)

chat='{"model":"soak-7b","messages":[{"role":"user","content":"Say ok."}],"max_tokens":4}'
predict='{"instances":[[0.1,0.2,0.3,0.4]]}'
"$OHA" -z "${TOTAL}s" -q $((RATE * 3 / 4)) -c 32 --latency-correction --no-tui --output-format json -m POST \
  -H 'content-type: application/json' -d "$predict" "http://127.0.0.1:$PX/v1/models/m:predict" > "$OUT/oha-predict.json" & OP=$!
"$OHA" -z "${TOTAL}s" -q $((RATE / 4)) -c 16 --latency-correction --no-tui --output-format json -m POST \
  -H 'content-type: application/json' -d "$chat" "http://127.0.0.1:$PX/v1/chat/completions" > "$OUT/oha-chat.json" & OC=$!
PIDS+=($OP $OC)

say() { echo "$(date +%T) $*" | tee -a "$OUT/phases.txt"; }
say "phase 1/6: warm-up (${PHASE}s)"; sleep "$PHASE"
WARM_RSS=$(awk '/VmRSS/{print $2}' /proc/$MW/status)
say "warm-up RSS ${WARM_RSS} KiB; phase 2/6: OTLP receiver down"; kill "$SINK_PID"; sleep "$PHASE"
start_sink; say "phase 3/6: all up"; sleep "$PHASE"
say "phase 4/6: Alertmanager down"; kill "$AM_PID"; sleep "$PHASE"
start_am; say "phase 5/6: label feed down"; touch "$W/labels-down"; sleep "$PHASE"
rm -f "$W/labels-down"; say "phase 6/6: all up"; sleep "$PHASE"
wait "$OP" "$OC" || true
sleep 5
kill -TERM "$FEEDER"; wait "$FEEDER" || true
curl -s "http://127.0.0.1:$ADMIN/metrics" > "$OUT/metrics-end.txt"
curl -s "http://127.0.0.1:$ADMIN/v1/status" > "$OUT/status-end.json"
kill "$SINK_PID" "$AM_PID" 2>/dev/null || true

python3 - "$OUT" "$WARM_RSS" "$PHASE" <<'PY' | tee "$OUT/summary.txt"
import csv, json, re, sys
out, warm, phase = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [(int(r["seconds"]), int(r["rss_kib"])) for r in csv.DictReader(open(f"{out}/rss.csv"))]
after = [r for s, r in rows if s >= phase]
print(f"RSS after warm-up: {warm/1024:.1f} MiB; highest after: {max(after)/1024:.1f} MiB "
      f"({(max(after)/warm-1)*100:+.1f}%); lowest after: {min(after)/1024:.1f} MiB; at the end: {after[-1]/1024:.1f} MiB")
for name in ("predict", "chat"):
    d = json.load(open(f"{out}/oha-{name}.json")); s = d["summary"]; p = d["latencyPercentiles"]
    print(f"load {name}: {sum(d['statusCodeDistribution'].values())} answers, status {d['statusCodeDistribution']}, "
          f"errors {d.get('errorDistribution', {})}, p50 {p['p50']*1000:.2f} ms, p99 {p['p99']*1000:.2f} ms, "
          f"p99.9 {p['p99.9']*1000:.2f} ms")
print("feeder:", json.load(open(f"{out}/feeder.json")))
print("counters of lost or failed data (non-zero):")
for line in open(f"{out}/metrics-end.txt"):
    if line.startswith("#"): continue
    m = re.match(r"(\S+)\s+(\S+)$", line.strip())
    if m and re.search(r"dropped|failures|skipped|removed|evicted|errors|retries|truncated|result=\"(failed|dropped)\"", m.group(1)) and float(m.group(2)) != 0:
        print("  ", m.group(1), m.group(2))
PY
echo "results in $OUT"
