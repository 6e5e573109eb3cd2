#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, then
#  1. plan the shipped multi-zone topology offline (prefix groups, blocks, per-host routes, what
#     the fabric sees), and
#  2. run romanad on its embedded store and drive it with the romana CLI: topology, hosts,
#     tenants, addresses, blocks and a host's aggregated routes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p romana-cli -p romanad
bin=./target/release

echo "== 1. romana ipam plan (offline)"
$bin/romana ipam plan examples/topologies/multi-zone.json --hosts-per-group 2 --endpoints-per-host 20 --tenants red,blue "$@"

echo "== 2. romanad + romana CLI"
data=$(mktemp -d /tmp/romana-demo.XXXXXX)
out="$data/romanad.out"
$bin/romanad --listen 127.0.0.1:0 --data-dir "$data/store" >"$out" 2>"$data/romanad.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do grep -q listening "$out" 2>/dev/null && break; sleep 0.1; done
export ROMANA_ENDPOINT=$(awk '{print $4}' "$out")
# romanad created an admin account on first start; the CLI logs in with the file it wrote (0600).
export ROMANA_CREDENTIALS="$data/store/admin.credentials"
echo "romanad at $ROMANA_ENDPOINT (credentials in $ROMANA_CREDENTIALS)"
$bin/romana topology apply -f examples/topologies/multi-zone.json
for rack in 1 2; do
    for h in 1 2; do
        $bin/romana host add "a$rack-$h" "192.0.2.$((rack * 10 + h))" --tag zone=zone-a --tag rack=zone-a-rack-$rack >/dev/null
    done
done
$bin/romana host list
$bin/romana tenant create red >/dev/null
$bin/romana segment add red web >/dev/null
for i in $(seq 1 12); do
    host="a$(( (i % 2) + 1 ))-$(( (i / 2) % 2 + 1 ))"
    $bin/romana address allocate "pod-$i" --host "$host" --tenant red --segment web >/dev/null
done
$bin/romana block list
echo "-- routes of host a1-1 (other hosts' blocks in its rack, aggregated):"
$bin/romana routes a1-1
$bin/romana address release pod-1
$bin/romana whoami
$bin/romana services
