#!/usr/bin/env bash
# Builds the `dssmr` and `dssmr-operator` binaries and the Docker images `dssmr:TAG` and
# `dssmr-operator:TAG` from them (no image is pulled: the base is `scratch`).
# Usage: e2e/build-images.sh [TAG]     (default tag: e2e)
#
# DSSMR_IMAGE_PROFILE picks the binaries:
# - release (default, what users ship): static glibc binaries of the release profile, so the
#   image holds nothing but the binary;
# - dev (the tests' images, e2e/prepare.sh): the binaries `cargo test --workspace
#   --all-targets` builds anyway (built here with --no-run, the same invocation, so the same
#   features: the tests that follow compile nothing more, and CI compiles the workspace once,
#   not twice), dynamically linked: the shared libraries they load (glibc, libgcc_s; found
#   with ldd) are copied into the image beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-e2e}"
profile="${DSSMR_IMAGE_PROFILE:-release}"
target_dir="${CARGO_TARGET_DIR:-target}"
triple=x86_64-unknown-linux-gnu

rm -rf dist && mkdir -p dist/data dist/root
touch dist/data/.keep
case "$profile" in
  release)
    # Static glibc: the binaries run on an empty image. RUSTFLAGS with --target apply to the
    # target only, not to build scripts and proc macros.
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --locked --target "$triple" --bin dssmr --bin dssmr-operator
    bin_dir="$target_dir/$triple/release"
    ;;
  dev)
    cargo test --workspace --all-targets --locked --no-run
    bin_dir="$target_dir/debug"
    ;;
  *)
    echo "build-images.sh: DSSMR_IMAGE_PROFILE must be release or dev, not $profile" >&2
    exit 2
    ;;
esac
cp "$bin_dir/dssmr" "$bin_dir/dssmr-operator" dist/
# Images do not need the line tables (profiling) or debug info.
strip dist/dssmr dist/dssmr-operator
if [ "$profile" = dev ]; then
  # Every library the loader resolves (and the loader itself), at the same path in the image.
  libs=$(for b in dist/dssmr dist/dssmr-operator; do
    ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
  done | sort -u)
  for lib in $libs; do
    mkdir -p "dist/root$(dirname "$lib")"
    cp -L "$lib" "dist/root$lib"
  done
fi
docker build --quiet -t "dssmr:$tag" --target dssmr . >/dev/null
docker build --quiet -t "dssmr-operator:$tag" --target operator . >/dev/null
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^dssmr(-operator)?:$tag "
