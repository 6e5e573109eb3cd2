#!/usr/bin/env bash
# Runs every test: formatting, lints, unit, property and acceptance tests, and a short run of each
# benchmark (so benchmarks keep working; their numbers are never asserted).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Every crate of the lock file, for every platform: `tests/tidy.rs` reads the whole dependency
# graph with `cargo metadata --offline`, which needs even the Windows-only crates' manifests that
# a Linux build never downloads (a fresh machine has only those).
cargo fetch --locked

# A full disk shows up as a linker crash; say up front how much room the build has.
df -h . | awk 'NR == 2 { print "disk: " $4 " free before the build" }'

log=$(mktemp)
trap 'rm -f "$log"' EXIT

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
cargo bench --locked -p romana-ipam --bench alloc -- --quick
cargo bench --locked -p romana-ipam --bench routes -- --quick
cargo bench --locked -p romana-host --bench program -- --quick
cargo bench --locked -p romana-policy --bench firewall -- --quick
cargo bench --locked -p romana-agent --bench rss -- --quick
# The CNI benchmarks run the release agent next to the plugin.
cargo build --locked --release -p romana-agent
cargo bench --locked -p romana-cni --bench add -- --quick
cargo bench --locked -p romana-cni --bench throughput -- --quick
cargo bench --locked -p romana-cni --bench propagation -- --quick
cargo bench --locked -p romana-cni --bench policy -- --quick
cargo bench --locked -p romanad --bench rest -- --quick
cargo bench --locked -p romanad --bench fanout -- --quick
cargo bench --locked -p romana-services --bench route_growth -- --quick
cargo bench --locked -p romana-services --bench consistency
cargo bench --locked -p romana-auth --bench verify -- --quick
# The Kubernetes controller at a tenth of its scale point, and the test API server's relist.
cargo bench --locked -p romana-k8s --bench scale -- --quick
cargo bench --locked -p romana-k8s --bench enforce -- --quick
cargo bench --locked -p romana-kube-testserver --bench list -- --test
# The BGP fabric: routes per router at 1,000 hosts, BIRD reload; failover BGP+BFD against the lease.
cargo bench --locked -p romana-fabric --bench scale
cargo build --locked --release -p romanad -p romana-cni -p romana-cli
cargo bench --locked -p romana-cli --bench failover
# The OpenStack drivers (Python, pytest against neutron-lib's real classes and a real romanad).
bash scripts/test-openstack.sh

du -sh target | awk '{ print "disk: target/ holds " $1 }'
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
