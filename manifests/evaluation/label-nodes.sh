#!/usr/bin/env bash
# Labels the nodes of the paper's two hardware classes, which DSSMRClusters with
# `placement.hardwareProfile: paper` and bench-job.yaml select:
#   dssmr.io/hardware=hp-se1102    replicas: HP SE1102, 2x Xeon L5420 2.5 GHz (8 cores), 8 GB
#   dssmr.io/hardware=dell-sc1435  clients:  Dell SC1435, 2x Opteron 2212 2.0 GHz (4 cores), 4 GB
# The paper's nodes hang off two gigabit switches joined by a 20 Gbps link; --switch labels
# nodes dssmr.io/switch=<a|b> so that this can be seen (nothing selects on it).
#
# Usage: label-nodes.sh --replicas NODE[,NODE...] --clients NODE[,NODE...]
#                       [--switch-a NODE,...] [--switch-b NODE,...] [--dry-run]
# Example (8 partitions + oracle = 27 replicas, 3 per node: 9 replica nodes):
#   manifests/evaluation/label-nodes.sh --replicas n1,n2,n3,n4,n5,n6,n7,n8,n9 --clients c1,c2
set -euo pipefail

replicas="" clients="" switch_a="" switch_b="" dry=()
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) replicas="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --switch-a) switch_a="$2"; shift 2 ;;
    --switch-b) switch_b="$2"; shift 2 ;;
    --dry-run) dry=(--dry-run=client -o name); shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "label-nodes.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$replicas" ] || [ -z "$clients" ]; then
  echo "label-nodes.sh: --replicas and --clients are required (see --help)" >&2
  exit 2
fi

label() { # NODES LABEL=VALUE
  local IFS=,
  for node in $1; do
    kubectl label node "$node" "$2" --overwrite "${dry[@]}"
  done
}
label "$replicas" dssmr.io/hardware=hp-se1102
label "$clients" dssmr.io/hardware=dell-sc1435
[ -z "$switch_a" ] || label "$switch_a" dssmr.io/switch=a
[ -z "$switch_b" ] || label "$switch_b" dssmr.io/switch=b
