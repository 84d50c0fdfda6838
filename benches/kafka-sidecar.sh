#!/usr/bin/env bash
# The sidecar's CPU with quality.backend kafka against embedded, at a fixed
# rate of Open Inference Protocol requests whose answers are predictions
# (each one stored by the embedded backend, or produced to Kafka).
#
#   benches/kafka-sidecar.sh              # 5000 req/s, 20 s per mode
#   RATE=1000 DURATION=10 benches/kafka-sidecar.sh
#
# Needs: nginx (the upstream: a fixed OIP answer), oha, the tansu broker
# (scripts/testbed.sh kafka). modelwatch and the upstream share core 1, the
# load generator has core 0 (taskset). CPU is the sidecar's utime+stime over
# the run, from /proc.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RATE=${RATE:-5000}
DURATION=${DURATION:-20}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
TANSU=${MODELWATCH_KAFKA_BROKER:-$ROOT/.testbed/kafka/bin/tansu}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/modelwatch"
W=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"' EXIT

mkdir -p "$W/tmp"
cat > "$W/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $W/nginx.pid;
error_log $W/nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $W/tmp;
  server {
    listen 127.0.0.1:18181;
    location / {
      default_type application/json;
      return 200 '{"model_name":"fraud","model_version":"v1","outputs":[{"name":"predict","shape":[1],"datatype":"INT64","data":[1]},{"name":"predict_proba","shape":[1,2],"datatype":"FP64","data":[0.2,0.8]}]}';
    }
  }
}
CONF
taskset -c 1 "$NGINX" -c "$W/nginx.conf" & PIDS+=($!)
taskset -c 1 "$TANSU" broker --listener-url tcp://127.0.0.1:18192 --advertised-listener-url tcp://127.0.0.1:18192 \
  --storage-engine memory://tansu/ >/dev/null 2>&1 & PIDS+=($!)
sleep 1
for t in modelwatch.predictions modelwatch.labels; do
  "$TANSU" topic create --broker tcp://127.0.0.1:18192 --partitions 4 "$t" >/dev/null
done
BODY='{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64","data":[5.1,3.5,1.4,0.2]}]}'
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
for mode in embedded kafka; do
  cat > "$W/$mode.yaml" <<CONF
quality:
  backend: $mode
  store_path: $W/$mode/quality.redb
  kafka:
    bootstrap: 127.0.0.1:18192
protocol:
  models:
    - name: fraud
      class_names: [legit, fraud]
      label_output: predict
      scores_output: predict_proba
CONF
  RUST_LOG=warn taskset -c 1 "$BIN" run --config "$W/$mode.yaml" --listen 127.0.0.1:18180 \
    --upstream http://127.0.0.1:18181 --admin-listen 127.0.0.1:18190 & MW=$!
  sleep 2
  taskset -c 0 "$OHA" -z 3s -q "$RATE" -c 32 --no-tui -m POST -H 'content-type: application/json' -d "$BODY" \
    http://127.0.0.1:18180/v2/models/fraud/infer >/dev/null
  c0=$(cpu $MW)
  taskset -c 0 "$OHA" -z "${DURATION}s" -q "$RATE" -c 32 --no-tui -m POST -H 'content-type: application/json' -d "$BODY" \
    http://127.0.0.1:18180/v2/models/fraud/infer > "$W/$mode.oha"
  c1=$(cpu $MW)
  sleep 2
  m=$(curl -s 127.0.0.1:18190/metrics)
  stored=$(echo "$m" | awk '/^modelwatch_quality_predictions_total/ {s+=$2} END {print s+0}')
  produced=$(echo "$m" | awk '/^modelwatch_kafka_produced_total.*delivered/ {s+=$2} END {print s+0}')
  dropped=$(echo "$m" | awk '/^modelwatch_quality_predictions_dropped_total/ {s+=$2} END {print s+0}')
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$MW/status")
  ok=$(grep -E "Success rate" "$W/$mode.oha" | awk '{print $3}')
  p99=$(grep -E "^ +99.00%" "$W/$mode.oha" | awk '{print $3, $4}')
  echo "$mode: $(echo "($c1 - $c0) / 100 / $DURATION" | bc -l | xargs printf '%.3f') vCPU at $RATE req/s" \
    "($(echo "($c1 - $c0) / 100 / $DURATION / $RATE * 1000" | bc -l | xargs printf '%.4f') per 1k req/s);" \
    "success $ok; p99 $p99; stored $stored, produced $produced, dropped $dropped; peak RSS $((rss / 1024)) MB"
  kill -TERM $MW; wait $MW 2>/dev/null || true
done
