#!/usr/bin/env bash
# The first command of the README: build journeyd, start it on its embedded defaults (no config
# file, no S3), replay tracks into it, print the replay summary and what the store holds, then
# show the rest of a journey's life: archived into encrypted Parquet (in journeyd-data/archive),
# read back without a server, restored for an investigator, and the node backed up.
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
# Under `set -e` a failing command in the trap ends the script with its status: the server may
# have stopped already, so neither step may fail.
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
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

# The rest of a journey's life. The compactor needs the store to itself, so the server stops
# for it (serve also compacts hourly on its own). --now moves the clock 70 days ahead so that
# even fresh journeys are past the 60-day hot retention.
kill -TERM $server 2>/dev/null
wait $server 2>/dev/null || true
echo
echo "== journeyd compact --now (70 days from now)"
"$bin" --log warn compact --now "$(date -u -d '+70 days' +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "== journeyd archive list (first 5)"
"$bin" --log warn archive list | head -5
first_file="$(find "$data/archive" -name '*.parquet' | sort | head -1)"
if [ -n "$first_file" ]; then
    echo
    echo "== journeyd archive read $first_file (with the tenant key; first 5 rows)"
    JOURNEYD_TENANT_KEY="$("$bin" --log warn keys export)" \
        "$bin" --log warn archive read "$first_file" | head -6
    first="$("$bin" --log warn archive list --json |
        python3 -c 'import json,sys; e=json.load(sys.stdin)[0]; print(e["device"], e["journey"])')"
    echo
    echo "== journeyd archive restore (device ${first% *}, journey ${first#* }, for 7 days)"
    "$bin" --log warn archive restore --device "${first% *}" --journey "${first#* }" --days 7
fi
echo
echo "== journeyd stats"
"$bin" --log warn stats
echo
echo "== journeyd backup"
"$bin" --log warn backup

if [ -t 0 ]; then
    "$bin" --log warn serve &
    server=$!
    echo
    echo "journeyd is serving: devices on UDP 4433, the query API on https://localhost:8443"
    echo "(data in $root/$data; the admin password is in $data/demo-admin-password). Ctrl-C stops it."
    wait $server
fi
