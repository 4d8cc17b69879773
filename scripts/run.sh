#!/usr/bin/env bash
# The first command of the README: build journeyd, start it on its embedded defaults (no config
# file, no S3), replay tracks into it, and print the replay summary and what the store holds.
#
#   scripts/run.sh [TRACK FILES OR FOLDERS...]
#
# Tracks: the ones given; else ../shared/data/tracks beside the checkout when present; else a
# generated set of journeys. The server keeps running afterwards when started from a terminal
# (Ctrl-C stops it); otherwise it stops once the summary is printed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/install-deps.sh
cargo build --locked --bin journeyd
bin="$root/target/debug/journeyd"

data="journeyd-data"
rm -f "$data/ready.json"
# The server logs warnings only here, so the summary stays readable; `journeyd serve` alone logs
# its lifecycle at info.
"$bin" --log warn serve &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
    [ -f "$data/ready.json" ] && break
    kill -0 $server 2>/dev/null || { echo "journeyd serve exited; see the log above" >&2; exit 1; }
    sleep 0.1
done
[ -f "$data/ready.json" ] || { echo "journeyd serve did not get ready" >&2; exit 1; }

if [ $# -gt 0 ]; then
    tracks=("$@")
elif [ -d "$root/../shared/data/tracks" ]; then
    tracks=("$root/../shared/data/tracks")
else
    "$bin" demo-tracks "$data/generated-tracks" --devices 5
    tracks=("$data/generated-tracks")
fi

echo
echo "== replay"
"$bin" --log warn replay "${tracks[@]}"
echo
echo "== journeyd stats"
"$bin" --log warn stats

if [ -t 0 ]; then
    echo
    echo "journeyd is serving: devices on UDP 4433, the query API on https://localhost:8443"
    echo "(data in $root/$data; the admin password is in $data/demo-admin-password). Ctrl-C stops it."
    wait $server
fi
