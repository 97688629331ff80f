#!/usr/bin/env bash
# Builds the static `dssmr` and `dssmr-operator` binaries and the Docker images `dssmr:e2e`
# and `dssmr-operator:e2e` from them (no image is pulled: the base is `scratch`).
# Usage: e2e/build-images.sh [TAG]     (default tag: e2e)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-e2e}"
target_dir="${CARGO_TARGET_DIR:-target}"
triple=x86_64-unknown-linux-gnu

# Static glibc: the binaries run on an empty image. RUSTFLAGS with --target apply to the
# target only, not to build scripts and proc macros.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$triple" --bin dssmr --bin dssmr-operator

rm -rf dist && mkdir -p dist/data
touch dist/data/.keep
cp "$target_dir/$triple/release/dssmr" "$target_dir/$triple/release/dssmr-operator" dist/
# The release profile keeps line tables for profiling; images do not need them.
strip dist/dssmr dist/dssmr-operator
docker build --quiet -t "dssmr:$tag" --target dssmr . >/dev/null
docker build --quiet -t "dssmr-operator:$tag" --target operator . >/dev/null
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^dssmr(-operator)?:$tag "
