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

scripts/testbed.sh install
phase "testbed installed"
export MODELWATCH_TESTBED="$PWD/.testbed/root/usr/bin"

phase "cargo fmt --check"
cargo fmt --all -- --check
phase "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
phase "cargo test"
cargo test --locked
phase "the container image's build stage (Dockerfile), without Docker"
scripts/image-build-check.sh
phase "done"
