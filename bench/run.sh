#!/usr/bin/env bash
# Runs the whole-process benchmark from the repository root; arguments go to
# the bench command (e.g. -quick, -streams 10000). Installs wrk and nginx-light
# from Debian if they are missing and apt-get is usable; otherwise the bench
# uses its built-in Go load generator, and runs without the nginx floor.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "bench/run.sh: installing wrk" >&2
		if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } >/dev/null 2>&1; then
			echo "bench/run.sh: could not install wrk; using the built-in Go load generator" >&2
		fi
	else
		echo "bench/run.sh: wrk not found and cannot install it; using the built-in Go load generator" >&2
	fi
fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "bench/run.sh: installing nginx-light (the second floor)" >&2
		if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; } >/dev/null 2>&1; then
			echo "bench/run.sh: could not install nginx-light; no nginx floor" >&2
		fi
	else
		echo "bench/run.sh: nginx not found and cannot install it; no nginx floor" >&2
	fi
fi
exec go run ./bench "$@"
