#!/usr/bin/env bash
# The main job on a fresh machine (as root): set up, build, then
#  1. plan the shipped multi-zone topology offline (prefix groups, blocks, per-host routes, what
#     the fabric sees), and
#  2. run romanad on its embedded store and a sandbox of 2 racks x 2 hosts (network namespaces
#     behind rack routers and a spine, a real romana-agent per host), place pods of two tenants on
#     every host through romana-cni, print each host's route table size against the number of
#     endpoints and the reachability matrix; then isolate tenant blue and apply a Kubernetes
#     NetworkPolicy to red's database pod, print the matrix again with every refused pair marked
#     and check it cell by cell against what isolation and the policy say (the demo fails loudly
#     otherwise), show the routes one host holds against one route per endpoint, run
#     `romana doctor` on a host, say where the web view is, and tear everything down (with
#     --keep: only after Ctrl-C).
# Everything runs on 127.0.0.1 and inside namespaces named rms-demo-*; nothing touches the root
# namespace's addresses, routes or firewall.
#
# Usage: scripts/demo.sh [--keep] [--ipv6] [ARGS for romana ipam plan...]
# --ipv6 (or ROMANA_DEMO_IPV6=CIDR): a dual-stack sandbox (pods also get an address of
# fd00:10::/64, or CIDR); every matrix is printed and checked for IPv4 and for IPv6.
# ROMANA_DEMO_BIN=DIR uses the binaries in DIR and skips set-up and build (the demo's test).
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
ipv6=${ROMANA_DEMO_IPV6:-}
plan_args=()
for a in "$@"; do
    case $a in
        --keep) keep=1 ;;
        --ipv6) ipv6=fd00:10::/64 ;;
        *) plan_args+=("$a") ;;
    esac
done
up_args=()
[ -n "$ipv6" ] && up_args=(--ipv6 "$ipv6")
started=$(date +%s)
# A long step: its name first, then how long it took.
step() {
    local what=$1 t0
    shift
    t0=$(date +%s)
    echo "... $what"
    "$@"
    echo "... $what: done in $(($(date +%s) - t0)) s"
}
if [ -n "${ROMANA_DEMO_BIN:-}" ]; then
    bin=$ROMANA_DEMO_BIN
else
    step "setting up the machine (scripts/setup.sh)" bash scripts/setup.sh
    step "building romana, romanad, romana-agent and romana-cni (release; the first build takes minutes)" \
        cargo build --release --locked -p romana-cli -p romanad -p romana-agent -p romana-cni
    bin=./target/release
fi

echo "== 1. romana ipam plan (offline)"
$bin/romana ipam plan examples/topologies/multi-zone.json --hosts-per-group 2 --endpoints-per-host 20 --tenants red,blue --limit 12 "${plan_args[@]}"

echo
echo "== 2. romanad + a sandbox of 2 racks x 2 hosts"
data=$(mktemp -d /tmp/romana-demo.XXXXXX)
out="$data/romanad.out"
$bin/romanad --listen 127.0.0.1:0 --data-dir "$data/store" >"$out" 2>"$data/romanad.log" &
pid=$!
sandbox=(--name demo --state-dir "$data/sandbox")
cleanup() {
    $bin/romana sandbox down "${sandbox[@]}" || true
    kill $pid 2>/dev/null
    wait $pid 2>/dev/null || true
    rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q listening "$out" 2>/dev/null && break; sleep 0.1; done
export ROMANA_ENDPOINT=$(awk '{print $4}' "$out")
# romanad created an admin account on first start; the CLI and the agents use the file it wrote.
export ROMANA_CREDENTIALS="$data/store/admin.credentials"
echo "romanad at $ROMANA_ENDPOINT"
step "bringing the sandbox up (namespaces, routers, 4 agents)" \
    $bin/romana sandbox up "${sandbox[@]}" --racks 2 --hosts-per-rack 2 "${up_args[@]}"
for tenant in red blue; do
    $bin/romana tenant create $tenant >/dev/null
    $bin/romana segment add $tenant web >/dev/null
done
n=0
for host in r1h1 r1h2 r2h1 r2h2; do
    n=$((n + 1))
    # red1 is red's database (app=db); the NetworkPolicy below lets only red's web pods in.
    app=web
    [ $n = 1 ] && app=db
    $bin/romana sandbox pod add "${sandbox[@]}" --host $host --tenant red --segment web --label app=$app --pod red$n
    $bin/romana sandbox pod add "${sandbox[@]}" --host $host --tenant blue --segment web --label app=web --pod blue$n
done
echo
echo "-- hosts: kernel routes = the route manager's set + one /32 per local endpoint;"
echo "   PER-ENDPOINT is what one route per endpoint in the cluster would need"
$bin/romana sandbox status "${sandbox[@]}"
echo
echo "-- reachability (ping every pod from every pod): both tenants have isolation none, as Kubernetes"
echo "   namespaces do by default, so every pair is reachable"
$bin/romana sandbox probe "${sandbox[@]}"
echo
# What isolation and the policy allow: "." reachable, "X" refused. A pod always reaches itself.
expected() {
    local from=$1 to=$2
    if [ "$from" = "$to" ]; then echo .; return; fi
    case $to in
        blue*) [[ $from == blue* ]] && echo . || echo X ;;  # blue is isolated: only blue gets in
        red1) [[ $from == red* ]] && echo . || echo X ;;    # the policy: only red's web pods
        *) echo . ;;                                         # red's web pods: open, as by default
    esac
}
# Probes until the matrix is what `expected` says (agents apply changes within a second or two),
# then prints it with each cell marked; fails loudly with the cells that differ after 30 s. In a
# dual-stack sandbox the probe prints the IPv6 matrix after an "IPv6:" line, in the same columns:
# its rows are checked the same way.
check_matrix() {
    local out cells bad row from to got want i pods
    for attempt in $(seq 30); do
        out=$($bin/romana sandbox probe "${sandbox[@]}" || true)
        # The columns in the probe's order (its header line: from\to POD...).
        read -r -a pods <<<"$(head -n1 <<<"$out")"
        pods=("${pods[@]:1}")
        bad=()
        while read -r row; do
            [[ $row == *@* ]] || continue
            read -r -a cells <<<"$row"
            from=${cells[0]%@*}
            for i in "${!pods[@]}"; do
                to=${pods[$i]}
                got=${cells[$((i + 1))]}
                want=$(expected "$from" "$to")
                [ "$got" = "$want" ] || bad+=("$from->$to: got $got, want $want")
            done
        done <<<"$out"
        [ ${#bad[@]} -eq 0 ] && break
        sleep 1
    done
    printf '%-12s' 'from\to'
    for to in "${pods[@]}"; do printf ' %6s' "$to"; done
    echo
    while read -r row; do
        if [ "$row" = IPv6: ]; then
            printf 'IPv6:\n%-12s' 'from\to'
            for to in "${pods[@]}"; do printf ' %6s' "$to"; done
            echo
        fi
        [[ $row == *@* ]] || continue
        read -r -a cells <<<"$row"
        printf '%-12s' "${cells[0]}"
        for i in "${!pods[@]}"; do
            got=${cells[$((i + 1))]}
            want=$(expected "${cells[0]%@*}" "${pods[$i]}")
            if [ "$got" != "$want" ]; then printf ' %6s' "!$got"
            elif [ "$got" = X ]; then printf ' %6s' "X"
            else printf ' %6s' "."; fi
        done
        echo
    done <<<"$out"
    echo "(. reachable; X refused, as the policy says; !x: NOT what the policy says)"
    if [ ${#bad[@]} -ne 0 ]; then
        echo "DEMO FAILED: the matrix is not what isolation and the policy say:" >&2
        printf '  %s\n' "${bad[@]}" >&2
        exit 1
    fi
}
echo "-- romana tenant isolate blue tenant: blue's pods now accept traffic only from blue's pods"
echo "   (and their own host); each agent updates its nftables table from the watch"
$bin/romana tenant isolate blue tenant >/dev/null
echo "-- romana policy apply: a Kubernetes NetworkPolicy in namespace (tenant) red lets only"
echo "   red's app=web pods reach red's app=db pod (red1)"
cat >"$data/db-policy.yaml" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: red}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
YAML
$bin/romana policy apply -f "$data/db-policy.yaml" >/dev/null
echo
echo "-- reachability again, checked against isolation and the policy"
check_matrix
echo
echo "-- the routes host r1h1 holds: one per block and peer, not one per endpoint"
$bin/romana routes r1h1
echo "   (the sandbox status above: ROUTES per host against PER-ENDPOINT, one route per pod)"
echo
echo "-- romana doctor r1h1: forwarding, routes, gateway, nftables table, agent, clock, credentials"
$bin/romana doctor r1h1 --sandbox demo --state-dir "$data/sandbox"
echo
user=$(sed -n 's/.*"username": *"\([^"]*\)".*/\1/p' "$ROMANA_CREDENTIALS")
password=$(sed -n 's/.*"password": *"\([^"]*\)".*/\1/p' "$ROMANA_CREDENTIALS")
echo "-- the web view: $ROMANA_ENDPOINT/ui  (log in as $user, password $password)"
echo "demo done in $(($(date +%s) - started)) s"
if [ $keep = 1 ]; then
    echo "everything stays up (--keep): romana CLI with ROMANA_ENDPOINT=$ROMANA_ENDPOINT"
    echo "ROMANA_CREDENTIALS=$ROMANA_CREDENTIALS; Ctrl-C tears it down"
    while true; do sleep 3600; done
fi
