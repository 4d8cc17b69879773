#!/usr/bin/env bash
# The second command of the README: install what the tests need, then run the whole suite
# (unit, property, end-to-end and field-case tests; each benchmark once on a tiny size).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/install-deps.sh

# xmllint checks GPX exports against the GPX 1.1 schema.
if ! command -v xmllint >/dev/null 2>&1; then
    echo "installing libxml2-utils" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libxml2-utils >/dev/null
fi

# PostgreSQL, the baseline `journeyd bench --baselines` loads the same rows into.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    echo "installing postgresql" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi

# Outside readers the interop tests use: pyarrow (Parquet), geojson, gpxpy and cryptography.
if ! python3 -c "import pyarrow, geojson, gpxpy, cryptography" >/dev/null 2>&1; then
    echo "installing pyarrow, geojson, gpxpy and cryptography" >&2
    python3 -m pip install --quiet --disable-pip-version-check pyarrow geojson gpxpy cryptography 2>/dev/null ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages pyarrow geojson gpxpy cryptography
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest" >&2
    cargo install --locked cargo-nextest
fi

# A real S3-compatible server (Garage) on loopback for the object-store tests. The first run builds
# garage into the tools cache (~10 min); later runs reuse it. The server lives in a temp dir that is
# stopped and removed on exit, and its JOURNEYD_TEST_S3_* variables reach the tests.
scripts/s3-test-server.sh install >/dev/null
s3_state="$(mktemp -d)"
trap '"$root/scripts/s3-test-server.sh" stop "$s3_state"; rm -rf "$s3_state"' EXIT
s3_env="$(scripts/s3-test-server.sh start "$s3_state")"
# shellcheck source=/dev/null
source "$s3_env"

# One profile (dev, dependencies optimised) for tests, benches and the binary: nothing compiles
# twice.
cargo nextest run --locked --workspace --lib --bins --tests --no-fail-fast
# Each criterion benchmark once, in test mode.
cargo test --locked -p journeyd --bench wire --bench store --bench archive
cargo test --locked --workspace --doc

# The load benchmark once, tiny, so it cannot rot (its figures are not checked). The binary is the
# one the end-to-end tests built.
target/debug/journeyd --log warn bench --devices 20 --batch 50 --duration 2s --baselines
target/debug/journeyd --log warn bench --sweep --sweep-devices 5,20 --sweep-batches 1,50 --duration 1s \
    --chart "$(mktemp -d)/sweep.svg"
target/debug/journeyd --log warn bench --restart --devices 5 --batch 50 --duration 1s
