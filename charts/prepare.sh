#!/usr/bin/env bash
# Installs what the chart tests (operator/tests/chart.rs, charts/tests/chartcheck.py) need,
# and does nothing for what is already there:
# - PyPI: helm-python-sdk (the Helm v4 library: lint, render, schema validation),
#   kubernetes-validate (Kubernetes OpenAPI schemas), cloudcoil-models-prometheus-operator
#   (models generated from the Prometheus Operator CRDs: ServiceMonitor, PodMonitor,
#   PrometheusRule), PyYAML;
# - Debian: prometheus (the server and promtool).
set -euo pipefail

pip_pins=(
  helm-python-sdk==0.2.2
  kubernetes-validate==1.37.0
  cloudcoil-models-prometheus-operator==0.80.1.0
  PyYAML==6.0.3
)

have_pins() {
  python3 - "$@" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}

if ! have_pins "${pip_pins[@]}"; then
  echo "charts/prepare.sh: installing ${pip_pins[*]} (pip)"
  python3 -m pip install -q --disable-pip-version-check "${pip_pins[@]}"
fi

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "charts/prepare.sh: installing prometheus (apt)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package starts a system service on :9090; the tests start their own server.
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  else
    echo "charts/prepare.sh: prometheus is missing and cannot be installed here (apt, root)" >&2
    exit 1
  fi
fi
