#!/usr/bin/env bash
# Prepares what the tests need beyond cargo, then returns:
# - what the chart tests need (charts/prepare.sh);
# - the Kubernetes control plane of the operator e2e (e2e/k8s/prepare.sh);
# - Prometheus and promtool (Debian's `prometheus` package; the e2e scrapes every replica with
#   it and the metric tests run `promtool check metrics`);
# - where a Docker engine runs, the `dssmr:e2e` and `dssmr-operator:e2e` images (`scratch`
#   base; the dev-profile binaries `cargo test` links too, with their shared libraries).
# Without Docker the e2e runs replicas as 127.0.0.1 processes (and says so loudly).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "e2e/prepare.sh: installing prometheus (apt)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package starts its own service on :9090; the tests start their own servers. Stop
    # that service through its init script (never by process name: other Prometheus servers
    # on the machine are not ours).
    systemctl disable --now prometheus >/dev/null 2>&1 \
      || invoke-rc.d prometheus stop >/dev/null 2>&1 || true
  else
    echo "e2e/prepare.sh: prometheus is missing and cannot be installed here (apt, root)" >&2
  fi
fi

# kubernetes-validate (PyPI) checks the objects the operator renders against the Kubernetes
# OpenAPI schemas, strictly (unknown fields fail).
if ! command -v kubernetes-validate >/dev/null; then
  echo "e2e/prepare.sh: installing kubernetes-validate (pip)"
  python3 -m pip install -q --disable-pip-version-check kubernetes-validate==1.37.0 >/dev/null 2>&1 \
    || echo "e2e/prepare.sh: kubernetes-validate could not be installed" >&2
fi

# The chart tests: helm-python-sdk (the Helm library), kubernetes-validate, the Prometheus
# Operator models, PyYAML (pinned), and prometheus/promtool.
bash charts/prepare.sh

# The Kubernetes e2e (e2e/tests/operator_k8s.rs): etcd from apt and a real 1.20.2 control
# plane built offline from Debian's source package, cached in /var/cache/dssmr/k8s (cold:
# ~6-11 min on 2 cores; then about a second).
bash e2e/k8s/prepare.sh

if docker info >/dev/null 2>&1; then
  echo "e2e/prepare.sh: building the dssmr:e2e image (the tests' dev-profile binaries)"
  DSSMR_IMAGE_PROFILE=dev e2e/build-images.sh e2e
else
  echo "e2e/prepare.sh: no Docker engine: the e2e will run replicas as processes" >&2
fi
