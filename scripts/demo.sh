#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, and plan the shipped multi-zone topology with
# simulated hosts and endpoints, printing prefix groups, blocks, per-host routes and what the
# fabric sees.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p romana-cli
./target/release/romana ipam plan examples/topologies/multi-zone.json \
    --hosts-per-group 2 --endpoints-per-host 20 --tenants red,blue "$@"
