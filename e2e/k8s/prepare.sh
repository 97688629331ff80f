#!/usr/bin/env bash
# Prepares the Kubernetes e2e (e2e/tests/operator_k8s.rs): a REAL control plane built from
# Debian's source package, cached on this machine (not in the repo), then returns.
#
#   etcd                       apt: etcd-server (the system's Debian release)
#   rsync                      apt (the Kubernetes build scripts use it)
#   Go 1.15                    Debian bullseye's golang-1.15-go + golang-1.15-src, fetched
#                              with `apt-get download` and unpacked with `dpkg -x`
#   kubernetes 1.20.2 source   `apt-get source kubernetes` from bullseye (all Go deps vendored)
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet
#                              `make WHAT=cmd/...` offline, copied to $CACHE/bin
#   pause                      the tree's build/pause/linux/pause.c, `gcc -static`, copied to
#                              $CACHE/bin/pause (the harness builds the pod sandbox image
#                              FROM scratch with it: no image can be pulled here)
#   dnsmasq-base, fuse-overlayfs, iproute2, iptables, util-linux, gcc, libc6-dev
#                              apt (system sources): what the kubelet nodes of the harness use
#                              (cluster DNS, each node's Docker engine storage, node bridges and
#                              the rules between them, nsenter into a pod's network) and the
#                              static pause build. dnsmasq-base is the binary alone: no system
#                              service is started.
#
# Bullseye's sources (deb + deb-src) live in a PRIVATE apt configuration under $CACHE/apt
# (APT_CONFIG with its own Dir::Etc, lists and archives); the system's apt settings are never
# changed. Idempotent: a second run finds the binaries and returns in about a second; a cache
# holding only some of them (e.g. from before the kubelet was added) builds only the missing.
# Cold run measured on the 2-core CI machine class: 678 s (downloads ~1 min, kube-apiserver
# 541 s, kube-controller-manager 98 s, kube-scheduler 31 s) while other cargo builds shared
# the cores (DESIGN.md §4 reports ~3.5 min for the build alone on an idle machine). With the
# kubelet (2026-12-02, 2 cores shared with a release cargo build): 1297 s in all, of which
# kube-apiserver 674 s, kube-controller-manager 132 s, kube-scheduler 40 s, kubelet 412 s,
# pause < 1 s; warm: under a second. The timing of each step is printed.
#
# Cache: $DSSMR_CACHE/k8s (default /var/cache/dssmr/k8s). The harness (e2e/src/kube/) looks
# for the binaries in $CACHE/bin, or in $DSSMR_K8S_BIN when set.
set -euo pipefail

CACHE="${DSSMR_CACHE:-/var/cache/dssmr}/k8s"
BIN="$CACHE/bin"
K8S_VERSION=1.20.2
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
started=$(date +%s)

say() { printf 'e2e/k8s/prepare.sh: %s\n' "$*"; }
die() { printf 'e2e/k8s/prepare.sh: ERROR: %s\n' "$*" >&2; exit 1; }
elapsed() { echo "$(( $(date +%s) - started )) s"; }

# The components not yet in $BIN for this version (all of them if $BIN holds another version).
missing_components() {
  local c
  if [ -f "$BIN/VERSION" ] && ! grep -qx "v$K8S_VERSION" "$BIN/VERSION"; then
    echo "${COMPONENTS[@]}"
    return
  fi
  for c in "${COMPONENTS[@]}"; do
    [ -x "$BIN/$c" ] || printf '%s ' "$c"
  done
}
have_binaries() {
  [ -z "$(missing_components)" ] && [ -x "$BIN/pause" ] \
    && [ -f "$BIN/VERSION" ] && grep -qx "v$K8S_VERSION" "$BIN/VERSION"
}

root_apt_install() {
  # $1..: packages from the system's own apt sources.
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "needs root to apt-get install ${missing[*]}"
  say "installing ${missing[*]} (apt, system sources)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- 1. etcd and rsync (system apt), and what the kubelet nodes use -----------------------------
root_apt_install etcd-server rsync dnsmasq-base fuse-overlayfs iproute2 iptables util-linux gcc libc6-dev
# The package may start a system etcd on :2379; the tests start their own on free ports.
if command -v systemctl >/dev/null && systemctl is-active -q etcd 2>/dev/null; then
  say "stopping the system etcd service started by the package (tests run their own)"
  systemctl disable --now etcd >/dev/null 2>&1 || true
fi
command -v etcd >/dev/null || die "etcd not found after installing etcd-server"
say "etcd: $(etcd --version 2>/dev/null | head -1)"

if have_binaries; then
  say "control plane, kubelet and pause v$K8S_VERSION already built in $BIN ($(elapsed))"
  exit 0
fi
# A cache from another version starts over; otherwise keep what is there.
if [ -f "$BIN/VERSION" ] && ! grep -qx "v$K8S_VERSION" "$BIN/VERSION"; then
  rm -rf "$BIN"
fi

mkdir -p "$CACHE"
say "building the Kubernetes v$K8S_VERSION control plane and kubelet into $CACHE (cold: ~10-15 min on 2 cores)"

# --- 2. private apt configuration with bullseye (deb + deb-src) --------------------------------
APTDIR="$CACHE/apt"
mkdir -p "$APTDIR/etc/sources.list.d" "$APTDIR/etc/preferences.d" "$APTDIR/etc/apt.conf.d" \
  "$APTDIR/state/lists/partial" "$APTDIR/cache/archives/partial"
# The Debian archive this machine's own apt configuration uses (its mirror), never a host
# named here: the URI that serves the machine's own release's main component.
system_mirror() {
  local codename
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [ -n "$codename" ] || return 0
  apt-cache policy 2>/dev/null | awk -v s="$codename/main" '$3 == s { print $2; exit }'
}
MIRROR=$(system_mirror)
if [ -z "$MIRROR" ]; then
  apt-get update -qq >/dev/null 2>&1 || true
  MIRROR=$(system_mirror)
fi
[ -n "$MIRROR" ] || die "cannot find the Debian archive in this machine's apt sources (apt-cache policy lists no <release>/main)"
cat >"$APTDIR/etc/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bullseye main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bullseye main
EOF
cat >"$APTDIR/apt.conf" <<EOF
Dir::Etc "$APTDIR/etc";
Dir::Etc::sourcelist "$APTDIR/etc/sources.list";
Dir::Etc::sourceparts "$APTDIR/etc/sources.list.d";
Dir::Etc::preferencesparts "$APTDIR/etc/preferences.d";
Dir::Etc::parts "$APTDIR/etc/apt.conf.d";
Dir::State "$APTDIR/state";
Dir::State::status "/var/lib/dpkg/status";
Dir::Cache "$APTDIR/cache";
APT::Sandbox::User "root";
Acquire::Languages "none";
EOF
papt() { APT_CONFIG="$APTDIR/apt.conf" "$@"; }
say "private apt config: APT_CONFIG=$APTDIR/apt.conf (bullseye main, deb + deb-src, from $MIRROR)"
papt apt-get update -qq >/dev/null || die "apt-get update with the private bullseye config failed"

# dpkg-source (dpkg-dev) unpacks the source package.
command -v dpkg-source >/dev/null || root_apt_install dpkg-dev

# --- 3. Go 1.15 from bullseye (download + dpkg -x, nothing installed system-wide) --------------
GOROOT_DIR="$CACHE/go/usr/lib/go-1.15"
if [ ! -x "$GOROOT_DIR/bin/go" ] || [ ! -d "$CACHE/go/usr/share/go-1.15/src/runtime" ]; then
  say "fetching Go 1.15 (bullseye golang-1.15-go, golang-1.15-src)"
  mkdir -p "$CACHE/debs" "$CACHE/go"
  (cd "$CACHE/debs" && papt apt-get download -qq golang-1.15-go golang-1.15-src) \
    || die "apt-get download golang-1.15-go golang-1.15-src failed"
  for deb in "$CACHE"/debs/golang-1.15-*.deb; do dpkg -x "$deb" "$CACHE/go"; done
fi
# The packages link GOROOT's src/pkg into /usr/share/go-1.15 with absolute symlinks; point
# them at the unpacked copy.
for link in "$GOROOT_DIR"/*; do
  if [ -L "$link" ]; then
    target=$(readlink "$link")
    case "$target" in
      /usr/*) ln -sfn "$CACHE/go$target" "$link" ;;
    esac
  fi
done
export GOROOT="$GOROOT_DIR"
export PATH="$GOROOT/bin:$PATH"
say "go: $(go version)"

# --- 4. kubernetes 1.20.2 source (apt-get source, bullseye) ------------------------------------
SRC_PARENT="$CACHE/src"
SRC_DIR=$(find "$SRC_PARENT" -maxdepth 1 -type d -name "kubernetes-$K8S_VERSION*" 2>/dev/null | head -1 || true)
if [ -z "$SRC_DIR" ] || [ ! -f "$SRC_DIR/Makefile" ]; then
  say "fetching the kubernetes source package (apt-get source, ~35 MB)"
  rm -rf "$SRC_PARENT"
  mkdir -p "$SRC_PARENT"
  if ! (cd "$SRC_PARENT" && papt apt-get source -qq kubernetes >/dev/null 2>"$CACHE/apt-source.err"); then
    # Some mirrors serve the upstream tarball but not the .dsc / .debian.tar.xz. The upstream
    # tree (checksum verified by apt against the Sources index) builds the same binaries: the
    # Debian packaging only adds install rules and man pages.
    sed 's/^/  apt: /' "$CACHE/apt-source.err" >&2
    say "the mirror lacks the Debian parts of the source package; using its upstream tarball (apt-get source --tar-only)"
    (cd "$SRC_PARENT" && papt apt-get source -qq --tar-only kubernetes >/dev/null) \
      || die "apt-get source --tar-only kubernetes failed"
    tarball=$(find "$SRC_PARENT" -maxdepth 1 -name "kubernetes_*.orig.tar.gz" | head -1)
    [ -n "$tarball" ] || die "no kubernetes_*.orig.tar.gz after apt-get source --tar-only"
    tar -xzf "$tarball" -C "$SRC_PARENT"
  fi
  SRC_DIR=$(find "$SRC_PARENT" -maxdepth 1 -type d -name "kubernetes-*" | head -1)
  [ -n "$SRC_DIR" ] || die "no kubernetes-* directory after apt-get source"
fi
say "source: $SRC_DIR"

# --- 5. build offline -------------------------------------------------------------------------
export GOPATH="$CACHE/gopath" GOCACHE="$CACHE/gocache" GOFLAGS=-mod=vendor GOPROXY=off
export GO111MODULE=on KUBE_GIT_VERSION="v$K8S_VERSION" KUBE_GIT_TREE_STATE=clean
mkdir -p "$GOPATH" "$GOCACHE" "$BIN"
read -r -a TO_BUILD <<<"$(missing_components)"
for c in "${TO_BUILD[@]}"; do
  t0=$(date +%s)
  say "make WHAT=cmd/$c"
  make -C "$SRC_DIR" WHAT="cmd/$c" >"$CACHE/build-$c.log" 2>&1 \
    || { tail -30 "$CACHE/build-$c.log" >&2; die "make WHAT=cmd/$c failed (log: $CACHE/build-$c.log)"; }
  out=$(find "$SRC_DIR/_output" -type f -name "$c" -perm -u+x | head -1)
  [ -n "$out" ] || die "make WHAT=cmd/$c produced no binary"
  install -m 0755 "$out" "$BIN/$c"
  say "  $c built in $(( $(date +%s) - t0 )) s: $("$BIN/$c" --version 2>/dev/null)"
done

# --- 6. the pause binary (pod sandbox) --------------------------------------------------------
if [ ! -x "$BIN/pause" ]; then
  t0=$(date +%s)
  pause_src="$SRC_DIR/build/pause/linux/pause.c"
  [ -f "$pause_src" ] || die "no $pause_src in the source tree"
  say "gcc -static build/pause/linux/pause.c"
  gcc -Os -static -DVERSION="v$K8S_VERSION" -o "$BIN/pause.tmp" "$pause_src" \
    || die "gcc -static pause.c failed (libc6-dev provides the static libc)"
  strip "$BIN/pause.tmp" 2>/dev/null || true
  mv "$BIN/pause.tmp" "$BIN/pause"
  say "  pause built in $(( $(date +%s) - t0 )) s"
fi
echo "v$K8S_VERSION" >"$BIN/VERSION"
say "done: ${COMPONENTS[*]} pause in $BIN (run took $(elapsed))"
