#!/usr/bin/env bash
# Runs every test of mcp-oauth-proxy on a fresh machine: installs the e2e
# suite's pinned npm packages, checks formatting and vet, runs the Go tests
# with the race detector (unit, PID 1, end-to-end), then each fuzzer briefly.
# Some e2e tests also use Debian's redis-server, nginx and chromium (.ci/run
# installs them); without them those tests skip, naming what is missing, and
# fail instead when CI is set.
#   FUZZTIME=1m ./test.sh          # fuzz each target longer or shorter (0 skips fuzzing)
#   SOAK_DURATION=5m ./test.sh     # a longer soak (soak_test.go)
set -euo pipefail
cd "$(dirname "$0")"
fuzztime="${FUZZTIME:-15s}"
# The soak runs only when SOAK_DURATION (or SOAK=1) is set, so a plain
# `go test ./...` skips it; CI runs it here.
export SOAK_DURATION="${SOAK_DURATION:-60s}"

if command -v npm >/dev/null 2>&1; then
  echo "== npm ci (e2e)"
  (cd e2e && npm ci --no-audit --no-fund --loglevel=error)
else
  echo "== npm not found: the e2e suite will skip (install Node 20+ and npm to run it)"
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './e2e/node_modules/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change: $unformatted"
  exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 10m ./...

# fuzz_one runs one target. Go 1.26's fuzzing coordinator can fail a target
# with a bare "context deadline exceeded" as -fuzztime ends, having found
# nothing (golang/go#75804, fixed in Go 1.27). A failure that ends so and
# wrote no failing input is run once more and named; any other failure, a
# written input or a second such failure fails the run.
fuzz_one() {
  local pkg=$1 target=$2 out corpus before
  out=$(mktemp)
  corpus="$pkg/testdata/fuzz/$target"
  before=$(ls "$corpus" 2>/dev/null | sort || true)
  if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$out"; then
    rm -f "$out"
    return 0
  fi
  if grep -q '^    context deadline exceeded$' "$out" && [ "$(ls "$corpus" 2>/dev/null | sort || true)" = "$before" ]; then
    rm -f "$out"
    echo "-- $pkg $target: the fuzzing coordinator's deadline race (golang/go#75804), no failing input written; once more"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
    return
  fi
  rm -f "$out"
  return 1
}

if [ "$fuzztime" != "0" ]; then
  echo "== fuzzing, $fuzztime each"
  # Each fuzz target, found in the sources, runs alone in its package.
  grep -rl --include='*_test.go' '^func Fuzz' . | grep -v node_modules | sort | while read -r file; do
    pkg="./$(dirname "${file#./}")"
    for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
      echo "-- $pkg $target"
      fuzz_one "$pkg" "$target"
    done
  done
fi
echo "== all tests passed"
