#!/usr/bin/env bash
# CPU per request of a proxy, split into user and kernel time, at a fixed rate.
#
#   benches/load/split.sh nginx [RATE] [SECS]      # nginx as the proxy (the harness's config)
#   benches/load/split.sh modelwatch [RATE] [SECS] # target/release/modelwatch with its defaults
#   PROXY_CMD='...' benches/load/split.sh NAME [RATE] [SECS]   # any proxy on :18080
#   MW_ENV='MODELWATCH_SAMPLE_RATE=0' benches/load/split.sh modelwatch
#
# The upstream (nginx, the harness's config) and the proxy share CPU 1, oha drives
# 32 connections from CPU 0 with the harness's 309-byte chat POST. The proxy's
# utime and stime (its process tree, procstat.py) over the run, divided by the
# requests answered, give microseconds per request. Run benches/load/run.sh once
# first: it writes the configs this script uses (benches/load/run/conf).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN=$HERE/run
name=${1:?name: nginx, modelwatch or any with PROXY_CMD}; rate=${2:-5000}; secs=${3:-10}
[[ -f $RUN/conf/upstream.conf ]] || { echo "run benches/load/run.sh once first" >&2; exit 1; }
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
taskset -c 1 nginx -p "$RUN" -c "$RUN/conf/upstream.conf" -g 'daemon off;' >"$RUN/logs/split-up.out" 2>&1 & UP=$!
PX=
cleanup() { [[ -n "$PX" ]] && kill "$PX" 2>/dev/null; kill "$UP" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
sleep 0.5
case "$name" in
  nginx) cmd="nginx -p $RUN -c $RUN/conf/proxy.conf -g 'daemon off;'" ;;
  modelwatch) cmd="env RUST_LOG=warn ${MW_ENV:-} $HERE/../../target/release/modelwatch run --listen 127.0.0.1:18080 --upstream http://127.0.0.1:18081 --admin-listen 127.0.0.1:18090" ;;
  *) cmd=${PROXY_CMD:?PROXY_CMD} ;;
esac
bash -c "exec $cmd" >"$RUN/logs/split-proxy.out" 2>&1 & PX=$!
sleep 1.5
taskset -a -p -c 1 "$PX" >/dev/null
for c in $(pgrep -P "$PX" || true); do taskset -a -p -c 1 "$c" >/dev/null; done
BODY='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the plot of Hamlet in two sentences."}],"max_tokens":128,"temperature":0.2}'
load() {
  taskset -c 0 "$OHA" -z "$1" -c 32 -q "$rate" --no-tui -m POST -H 'content-type: application/json' \
    -d "$BODY" http://127.0.0.1:18080/v1/chat/completions
}
load 3s >/dev/null
ticks() { python3 "$HERE/procstat.py" --split "$PX"; }
read -r u0 s0 _ < <(ticks)
out=$(load "${secs}s")
read -r u1 s1 _ hwm _ < <(ticks)
n=$(grep -oE '\[200\] [0-9]+' <<<"$out" | awk '{print $2}')
tck=$(getconf CLK_TCK)
awk -v name="$name" -v rate="$rate" -v n="$n" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v t="$tck" \
  -v hwm="$hwm" 'BEGIN {
  printf "%s at %d req/s: %d answered; user %.1f us, kernel %.1f us per request; peak RSS %.1f MB\n",
    name, rate, n, du * 1e6 / t / n, ds * 1e6 / t / n, hwm / 1024 }'
