#!/usr/bin/env bash
# Side-by-side benchmark of two revisions of dssmr on this machine: builds both in release
# mode (a git worktree of each revision under the build cache, a target dir per revision:
# generated code must not be shared between them) and runs the same `dssmr bench` commands
# alternately, each on a fresh cluster, so that both are measured in one run under the same
# conditions. The order alternates between repeats (base first, then head first): on this
# machine the second of two identical runs is up to ~15 % faster. Prints one table.
#
#   scripts/compare-revs.sh BASE [HEAD]
#
# BASE and HEAD are git revisions; HEAD defaults to the working tree as it is (uncommitted
# changes included). REPEAT=n runs every case n times per revision (default 2); CASES picks
# cases by name (default: every case below). Results (the benches' own CSV/JSON files and a
# summary.csv) go to $OUT (default: a new directory under $CARGO_TARGET_DIR/tmp).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

base="${1:?usage: scripts/compare-revs.sh BASE [HEAD]}"
head="${2:-}"
repeat="${REPEAT:-2}"
cache="${CARGO_TARGET_DIR:-/var/cache/dssmr/target}"
work="$cache/compare"
out="${OUT:-$cache/tmp/compare-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$work/bin" "$out"

# name | bench arguments (chirper cases write --out DIR, mcast cases --json FILE)
cases=(
  "mix8-dssmr|chirper --workload mix --partitions 8 --mode dssmr --duration 12s --warmup 10s"
  "mix8-ssmr|chirper --workload mix --partitions 8 --mode ssmr --duration 12s --warmup 10s"
  "timeline1-dssmr|chirper --workload timeline --partitions 1 --mode dssmr --duration 12s --warmup 10s"
  "mcast1|mcast --groups 1 --duration 8s"
  "mcast8|mcast --groups 8 --duration 8s"
)

# Builds revision $1 (empty: the working tree) and prints the path of its binary.
build() {
  local rev="$1" src name
  if [ -z "$rev" ]; then
    src="$PWD"
    name="worktree"
  else
    name="$(git rev-parse --short "$rev")"
    src="$work/src-$name"
    if [ ! -d "$src" ]; then
      git worktree add --detach "$src" "$rev" >&2
    fi
  fi
  (cd "$src" && CARGO_TARGET_DIR="$work/target-$name" cargo build --release -q -p dssmr >&2)
  cp "$work/target-$name/release/dssmr" "$work/bin/dssmr-$name"
  echo "$work/bin/dssmr-$name"
}

base_bin="$(build "$base")"
head_bin="$(build "$head")"
echo "base: $base ($base_bin)"
echo "head: ${head:-working tree} ($head_bin)"

summary="$out/summary.csv"
echo "case,rev,repeat,throughput,p50_ms,p99_ms" >"$summary"

# Runs one case with one binary; appends a line to the summary.
run_case() {
  local name="$1" args="$2" rev="$3" bin="$4" r="$5" dir
  dir="$out/$name/$rev-$r"
  mkdir -p "$dir"
  # shellcheck disable=SC2086 # the case's arguments are meant to be split
  case "$args" in
    chirper*) "$bin" bench $args --quiet --out "$dir" >"$dir/stdout.txt" ;;
    mcast*) "$bin" bench $args --quiet --json "$dir/mcast.json" >"$dir/stdout.txt" ;;
  esac
  python3 - "$dir" "$name" "$rev" "$r" >>"$summary" <<'EOF'
import csv, json, os, sys
d, name, rev, r = sys.argv[1:]
if os.path.exists(os.path.join(d, "results.csv")):
    row = next(csv.DictReader(open(os.path.join(d, "results.csv"))))
    t, p50, p99 = row["throughput_cps"], row["p50_ms"], row["p99_ms"]
else:
    rec = json.load(open(os.path.join(d, "mcast.json")))[0]
    t, p50, p99 = rec["throughput_msgs_per_s"], rec["p50_ms"], rec["p99_ms"]
print(f"{name},{rev},{r},{float(t):.0f},{float(p50):.2f},{float(p99):.2f}")
EOF
  tail -n 1 "$summary"
}

for entry in "${cases[@]}"; do
  name="${entry%%|*}"
  args="${entry#*|}"
  if [ -n "${CASES:-}" ] && [[ ",$CASES," != *",$name,"* ]]; then
    continue
  fi
  for r in $(seq 1 "$repeat"); do
    if [ $((r % 2)) -eq 1 ]; then
      run_case "$name" "$args" base "$base_bin" "$r"
      run_case "$name" "$args" head "$head_bin" "$r"
    else
      run_case "$name" "$args" head "$head_bin" "$r"
      run_case "$name" "$args" base "$base_bin" "$r"
    fi
  done
done

python3 - "$summary" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
names = list(dict.fromkeys(r["case"] for r in rows))
print(f"\n{'case':<18}{'base':>10}{'head':>10}{'head/base':>11}{'p50 base':>10}{'p50 head':>10}")
for n in names:
    def mean(rev, col):
        v = [float(r[col]) for r in rows if r["case"] == n and r["rev"] == rev]
        return statistics.mean(v) if v else float("nan")
    b, h = mean("base", "throughput"), mean("head", "throughput")
    print(f"{n:<18}{b:>10.0f}{h:>10.0f}{h / b:>11.2f}{mean('base', 'p50_ms'):>10.2f}{mean('head', 'p50_ms'):>10.2f}")
EOF
echo "files: $out"
