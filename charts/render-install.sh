#!/usr/bin/env bash
# Regenerates what is derived from other files, with the real Helm library (helm-python-sdk):
# - charts/dssmr-operator/files/crds/dssmr.io_dssmrclusters.yaml, a byte-exact copy of the
#   generated crds/dssmr.io_dssmrclusters.yaml (run `dssmr-operator crd` first when the CRD
#   types changed);
# - manifests/install.yaml, the chart rendered with its default values (release
#   dssmr-operator, namespace dssmr-system).
# operator/tests/chart.rs fails while either is stale. Needs charts/prepare.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 charts/tests/chartcheck.py fresh --write
