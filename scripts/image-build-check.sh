#!/usr/bin/env bash
# Builds modelwatch the way the Dockerfile's build stage does, without Docker:
# the files its COPY lines name (minus .dockerignore) are copied into an empty
# folder, and its `RUN cargo build ...` line runs there. A Dockerfile whose
# context misses a file the build needs, or whose cargo command no longer
# builds, fails here. Prints the binary's size before and after the
# Dockerfile's strip step.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT

# The build stage: from the first FROM up to the second.
stage="$(awk '/^FROM /{n++} n==1' Dockerfile)"
cargo_line="$(printf '%s\n' "$stage" | sed -n 's/^RUN \(cargo build .*\)$/\1/p')"
strip_line="$(printf '%s\n' "$stage" | sed -n 's/^RUN \(strip .*\)$/\1/p')"
[[ -n "$cargo_line" ]] || { echo "image-build-check: no 'RUN cargo build' in the Dockerfile's build stage" >&2; exit 1; }

# COPY <src>... <dest> (dest relative to WORKDIR): copy the sources, honouring .dockerignore.
while read -r -a words; do
  srcs=("${words[@]:1:${#words[@]}-2}")
  for s in "${srcs[@]}"; do
    if grep -qxF "$s" .dockerignore 2>/dev/null; then
      echo "image-build-check: COPY $s is excluded by .dockerignore" >&2; exit 1
    fi
    cp -r "$ROOT/$s" "$CTX/"
  done
done < <(printf '%s\n' "$stage" | grep '^COPY ' | grep -v -- '--from=')

echo "image-build-check: $cargo_line (in a copy of the build context: $(ls "$CTX" | tr '\n' ' '))"
# Dependencies come from the shared target folder; the crate itself is built anew.
(cd "$CTX" && CARGO_TARGET_DIR="$ROOT/target/image" bash -c "$cargo_line")
BIN="$ROOT/target/image/release/modelwatch"
cp "$BIN" "$ROOT/target/image/modelwatch.stripped"
if [[ -n "$strip_line" ]]; then
  (cd "$ROOT/target/image" && ${strip_line/target\/release\/modelwatch/modelwatch.stripped})
fi
"$ROOT/target/image/modelwatch.stripped" --version
printf 'image-build-check: binary %s bytes, %s bytes after "%s"\n' \
  "$(stat -c %s "$BIN")" "$(stat -c %s "$ROOT/target/image/modelwatch.stripped")" "$strip_line"
