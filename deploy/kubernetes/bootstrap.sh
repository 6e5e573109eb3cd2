#!/usr/bin/env bash
# Creates Romana's service users on a cluster and puts each credential where it is used, and
# nowhere else (docs/kubernetes.md, "Bootstrap"). Idempotent: run it after `kubectl apply -f
# romana.yaml`, and again whenever nodes join; what is already in place is left alone.
#
#   romana-k8s (the controller): an unbound `service` user -> Secret romana-system/romana-k8s-credentials
#   each node N: a `service` user agent-N bound to host N -> /etc/romana/agent.credentials on N,
#     written by a one-shot pod on N from a Secret that only N's kubelet may read; the pod and the
#     Secret are deleted when the file is written, and the Node is annotated
#     romana.io/agent-credentials=agent-N.
#
# Usage: bootstrap.sh [--reissue NAME]...   NAME: a node, or romana-k8s (a new password, the old
#        one stops working; for a re-imaged node or a credential that may have leaked).
# Needs kubectl with cluster-admin rights. The `romana` commands run inside romanad's pod as the
# admin, whose credentials never leave it; new passwords go to it on stdin, never as arguments.
# Environment: KUBECTL (default kubectl), ROMANA_NAMESPACE (romana-system), ROMANA_IMAGE (default:
# the agent DaemonSet's image), ROMANA_ENDPOINT (default: http://<romanad Service ClusterIP>:9600),
# ROMANA_WAIT (how long a node's credential pod may take, default 180s).
# (Sourced, it only defines its functions: tests/deploy.rs runs `issue` against a real romanad.)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
NS=${ROMANA_NAMESPACE:-romana-system}
KUBECTL=${KUBECTL:-kubectl}
WAIT=${ROMANA_WAIT:-180s}
ANNOTATION=romana.io/agent-credentials
# Inside romanad's pod (romana.yaml: --data-dir /var/lib/romana/data).
ADMIN_CREDENTIALS=${ROMANA_ADMIN_CREDENTIALS:-/var/lib/romana/data/admin.credentials}

k() { $KUBECTL -n "$NS" "$@"; }

# romana as the admin, inside romanad's pod.
romana() { k exec -i romanad-0 -c romanad -- romana --credentials "$ADMIN_CREDENTIALS" "$@"; }

# (Re)creates service user NAME with a fresh password and writes its credentials file to FILE.
# Deleting first makes a re-run after a half-finished run converge (the old password is lost).
issue() { # issue NAME FILE [romana user create flags]...
    local name=$1 file=$2 pw
    shift 2
    pw=$(head -c 30 /dev/urandom | base64 | tr -d '+/=\n')
    romana user delete "$name" </dev/null
    printf '%s\n' "$pw" | k exec -i romanad-0 -c romanad -- /bin/sh -c \
        'IFS= read -r ROMANA_NEW_PASSWORD; export ROMANA_NEW_PASSWORD; exec romana --credentials "$0" user create "$@"' \
        "$ADMIN_CREDENTIALS" "$name" --role service "$@" >/dev/null
    (umask 077 && printf '{"endpoint": "%s", "username": "%s", "password": "%s"}\n' "$ENDPOINT" "$name" "$pw" >"$file")
}

main() {
    reissue=" "
    while (($#)); do
        case $1 in
        --reissue) reissue+="${2:?--reissue needs a node name or romana-k8s} "; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bootstrap.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
        esac
    done
    tmp=$(mktemp -d)
    chmod 700 "$tmp"
    trap 'rm -rf "$tmp"' EXIT

    echo "waiting for romanad"
    k rollout status statefulset/romanad --timeout=300s
    if [ -z "${ROMANA_ENDPOINT:-}" ]; then
        # The Service's address, not its DNS name: agents start before cluster DNS has a pod network.
        ip=$(k get service romanad -o jsonpath='{.spec.clusterIP}')
        [[ $ip == *:* ]] && ip="[$ip]"
        ENDPOINT="http://$ip:9600"
    else
        ENDPOINT=$ROMANA_ENDPOINT
    fi
    IMAGE=${ROMANA_IMAGE:-$(k get daemonset romana-agent -o jsonpath='{.spec.template.spec.containers[0].image}')}
    echo "romanad: $ENDPOINT (for agents and the controller); image $IMAGE"

    # The controller.
    if k get secret romana-k8s-credentials >/dev/null 2>&1 && [[ $reissue != *" romana-k8s "* ]]; then
        echo "romana-k8s: Secret romana-k8s-credentials exists"
    else
        issue romana-k8s "$tmp/romana-k8s.json"
        k create secret generic romana-k8s-credentials --from-file=credentials.json="$tmp/romana-k8s.json" \
            --dry-run=client -o yaml | k apply -f - >/dev/null
        k label secret romana-k8s-credentials app.kubernetes.io/part-of=romana --overwrite >/dev/null
        rm -f "$tmp/romana-k8s.json"
        k rollout restart deployment/romana-k8s >/dev/null
        echo "romana-k8s: user romana-k8s, Secret romana-k8s-credentials"
    fi

    # The agents, one node at a time.
    failed=()
    for node in $($KUBECTL get nodes -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'); do
        mark=$($KUBECTL get node "$node" -o jsonpath="{.metadata.annotations.romana\.io/agent-credentials}")
        if [ -n "$mark" ] && [[ $reissue != *" $node "* ]]; then
            echo "$node: has its credential ($mark)"
            continue
        fi
        user="agent-$node"
        if ((${#user} > 64)); then
            echo "$node: the user name $user is over 64 characters; create it by hand (docs/kubernetes.md)" >&2
            failed+=("$node")
            continue
        fi
        pod="romana-agent-credentials-$node"
        issue "$user" "$tmp/$node.json" --host "$node"
        k delete pod "$pod" --ignore-not-found --wait=true >/dev/null
        k create secret generic "$pod" --from-file=credentials.json="$tmp/$node.json" \
            --dry-run=client -o yaml | k apply -f - >/dev/null
        rm -f "$tmp/$node.json"
        sed -e "s|__NODE__|$node|g" -e "s|__IMAGE__|$IMAGE|g" "$here/agent-credentials-pod.yaml" | k apply -f - >/dev/null
        if k wait --for=jsonpath='{.status.phase}'=Succeeded "pod/$pod" --timeout="$WAIT" >/dev/null; then
            $KUBECTL annotate node "$node" "$ANNOTATION=$user" --overwrite >/dev/null
            # A running agent keeps the password it read at start: restart it on a reissue.
            k delete pod -l app.kubernetes.io/name=romana-agent --field-selector "spec.nodeName=$node" >/dev/null
            echo "$node: user $user, /etc/romana/agent.credentials written"
        else
            echo "$node: the credential pod did not finish; its log:" >&2
            k logs "pod/$pod" >&2 || true
            failed+=("$node")
        fi
        k delete pod "$pod" --ignore-not-found --wait=false >/dev/null
        k delete secret "$pod" --ignore-not-found >/dev/null
    done

    if ((${#failed[@]})); then
        echo "bootstrap.sh: no credential on ${failed[*]}; fix and run it again" >&2
        exit 1
    fi
    echo "bootstrap.sh: done"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
