#!/usr/bin/env bash
# Installs the real backends the integration tests talk to, into .testbed/ of
# this checkout: Prometheus + promtool and VictoriaMetrics (its OTLP/HTTP
# receiver), from Debian trixie packages unpacked with dpkg -x. The system's
# apt sources are not touched. Idempotent: a second run does nothing.
#
#   scripts/testbed.sh install     # fetch and unpack (about 15 s, 75 MB)
#   scripts/testbed.sh path        # print the bin folder the tests use
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TB="$ROOT/.testbed"
BIN="$TB/root/usr/bin"

install() {
  if [[ -x "$BIN/prometheus" && -x "$BIN/promtool" && -x "$BIN/victoria-metrics" ]]; then
    echo "testbed: already installed in $BIN"
    return
  fi
  command -v apt-get >/dev/null || { echo "testbed: apt-get is needed (Debian or Ubuntu)" >&2; exit 1; }
  command -v dpkg >/dev/null || { echo "testbed: dpkg is needed" >&2; exit 1; }
  local T="$TB/apt"
  mkdir -p "$T/lists/partial" "$T/etc" "$T/cache/archives/partial" "$TB/root" "$TB/debs"
  printf 'deb http://deb.debian.org/debian trixie main\n' > "$T/etc/sources.list"
  local o=(-o "Dir::Etc::SourceList=$T/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
           -o "Dir::State::Lists=$T/lists" -o "Dir::Cache=$T/cache" -o Debug::NoLocking=1)
  echo "testbed: fetching the package index (Debian trixie)"
  apt-get "${o[@]}" -qq update
  (cd "$TB/debs" && apt-get "${o[@]}" -qq download prometheus promtool victoria-metrics)
  for d in "$TB"/debs/*.deb; do dpkg -x "$d" "$TB/root"; done
  "$BIN/prometheus" --version 2>&1 | head -1
  "$BIN/victoria-metrics" -version 2>&1 | head -1
  echo "testbed: installed in $BIN"
}

path() { echo "$BIN"; }

"${1:-install}"
