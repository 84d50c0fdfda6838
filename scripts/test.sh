#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). Installs what the
# tests need first (Prometheus, promtool, VictoriaMetrics: scripts/testbed.sh),
# then checks formatting and lints, then runs every test. The integration tests
# start and stop the real backends themselves, on loopback.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

# Each phase says how long it took (what CI's 30 minutes go to).
phase() { echo "== $1 (at ${SECONDS}s)"; }

# One build each, from scratch: incremental compilation only costs time and
# disk here (gigabytes that CI's machine must have free).
export CARGO_INCREMENTAL=0

scripts/testbed.sh install
phase "testbed installed"
export MODELWATCH_TESTBED="$PWD/.testbed/root/usr/bin"

phase "cargo fmt --check"
cargo fmt --all -- --check
phase "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
phase "cargo test"
cargo test --locked --no-run
# The tests wait on real servers for much of their time: the image's build
# stage (Dockerfile, without Docker) is checked meanwhile, at the lowest CPU
# priority so that the tests keep the processors they ask for.
image_log="$(mktemp)"
nice -n 19 scripts/image-build-check.sh >"$image_log" 2>&1 &
image_pid=$!
test_rc=0
cargo test --locked || test_rc=$?
phase "tests done; waiting for the image's build stage"
image_rc=0
wait "$image_pid" || image_rc=$?
cat "$image_log"
rm -f "$image_log"
if [[ $test_rc -ne 0 || $image_rc -ne 0 ]]; then
  echo "== failed: cargo test exit $test_rc, image build check exit $image_rc" >&2
  exit 1
fi
phase "done"
