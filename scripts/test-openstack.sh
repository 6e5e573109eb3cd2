#!/usr/bin/env bash
# Tests of the OpenStack drivers (integrations/openstack): creates a venv under target/openstack
# with neutron (and neutron-lib) from PyPI and pytest, installs the package, builds romanad,
# romana-agent and romana-cni, and runs pytest. The namespace tests need root (they skip otherwise).
# First run: about 2 minutes (the venv); later runs: about 40 seconds plus the cargo build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/openstack/venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import neutron.ipam.driver, neutron_lib, pytest' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q neutron neutron-lib pytest
fi
"$VENV/bin/pip" install -q --no-deps -e ./integrations/openstack
cargo build -q -p romanad -p romana-agent -p romana-cni
cd integrations/openstack
exec "../../$VENV/bin/python" -m pytest -q "$@"
