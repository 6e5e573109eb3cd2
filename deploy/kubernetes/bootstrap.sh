#!/usr/bin/env bash
# Gives romanad its TLS certificate, creates Romana's service users on a cluster and puts each
# credential where it is used, and nowhere else (docs/kubernetes.md, "Bootstrap"). Idempotent:
# run it after `kubectl apply -f romana.yaml`, and again whenever nodes join; what is already in
# place is left alone.
#
#   romanad: a CA (Secret romana-system/romana-ca, mounted by nothing) and a certificate it signs
#     for the romanad Service's DNS names, its ClusterIP and 127.0.0.1 (Secret romanad-tls,
#     mounted by romanad, which serves HTTPS only); `romanad --tls-issue` makes both. The CA is in
#     every credentials file below, so every client checks romanad's certificate.
#   romana-k8s (the controller): an unbound `service` user -> Secret romana-system/romana-k8s-credentials
#   each node N: a `service` user agent-N bound to host N -> /etc/romana/agent.credentials on N,
#     written by a one-shot pod on N from a Secret that only N's kubelet may read; the pod and the
#     Secret are deleted when the file is written, and the Node is annotated
#     romana.io/agent-credentials=agent-N.
#
# Usage: bootstrap.sh [--reissue NAME]... [--new-ca]
#   --reissue NODE, --reissue romana-k8s: a new password, the old one stops working (a re-imaged
#     node, a credential that may have leaked).
#   --reissue tls: a new certificate for romanad from the same CA (names changed, key leaked);
#     credentials stay valid. romanad is restarted.
#   --new-ca: a new CA and certificate, and every credential issued again with the new CA.
# Needs kubectl with cluster-admin rights. The `romana` commands run inside romanad's pod as the
# admin, whose credentials never leave it; new passwords go to it on stdin, never as arguments.
# Environment: KUBECTL (default kubectl), ROMANA_NAMESPACE (romana-system), ROMANA_IMAGE (default:
# the agent DaemonSet's image), ROMANA_ENDPOINT (default: https://<romanad Service ClusterIP>:9600),
# ROMANA_WAIT (how long a node's credential pod may take, default 180s); for the certificate:
# ROMANAD (the romanad that issues it; default romanad on PATH, else the image under podman or
# docker), ROMANA_TLS_NAMES (more names, comma separated), ROMANA_CLUSTER_DOMAIN (cluster.local),
# or ROMANA_TLS_CERT, ROMANA_TLS_KEY and ROMANA_TLS_CA: your own certificate, key and CA instead.
# (Sourced, it only defines its functions: tests/deploy.rs runs `tls_names`, `issue_cert` and
# `issue` against a real romanad.)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
NS=${ROMANA_NAMESPACE:-romana-system}
KUBECTL=${KUBECTL:-kubectl}
WAIT=${ROMANA_WAIT:-180s}
ANNOTATION=romana.io/agent-credentials
# Inside romanad's pod (romana.yaml: --data-dir /var/lib/romana/data).
ADMIN_CREDENTIALS=${ROMANA_ADMIN_CREDENTIALS:-/var/lib/romana/data/admin.credentials}
# romanad as seen from inside its pod (hostNetwork: the node's loopback, a name in its
# certificate), checked against the CA in the pod's TLS Secret.
ADMIN_ENDPOINT=${ROMANA_ADMIN_ENDPOINT:-https://127.0.0.1:9600}
ADMIN_CA=${ROMANA_ADMIN_CA:-/etc/romana/tls/ca.crt}

k() { $KUBECTL -n "$NS" "$@"; }

# romana as the admin, inside romanad's pod.
romana() {
    k exec -i romanad-0 -c romanad -- \
        romana --credentials "$ADMIN_CREDENTIALS" --endpoint "$ADMIN_ENDPOINT" --ca-file "$ADMIN_CA" "$@"
}

# The names romanad's certificate is for: the Service's DNS names (as clients in pods use them),
# loopback (romana inside romanad's pod, probes), the ClusterIP agents use, and ROMANA_TLS_NAMES.
tls_names() { # tls_names CLUSTER_IP
    local svc=romanad domain=${ROMANA_CLUSTER_DOMAIN:-cluster.local}
    printf '%s' "$svc,$svc.$NS,$svc.$NS.svc,$svc.$NS.svc.$domain,localhost,127.0.0.1,$1${ROMANA_TLS_NAMES:+,$ROMANA_TLS_NAMES}"
}

# romanad --tls-issue DIR: keeps DIR/ca.pem + ca.key (or makes them), writes DIR/server.pem and
# server.key for NAMES. With ROMANAD, or romanad on PATH, or the image under podman or docker.
issue_cert() { # issue_cert DIR NAMES
    local dir=$1 names=$2 run
    if [ -n "${ROMANAD:-}" ] || command -v romanad >/dev/null; then
        "${ROMANAD:-romanad}" --tls-issue "$dir" --tls-name "$names"
    elif run=$(command -v podman || command -v docker); then
        "$run" run --rm --network none --user "$(id -u):$(id -g)" -v "$dir:/tls" "$IMAGE" \
            /usr/local/bin/romanad --tls-issue /tls --tls-name "$names"
    else
        echo "bootstrap.sh: no romanad, podman or docker to issue romanad's certificate; set ROMANAD," \
            "or give your own with ROMANA_TLS_CERT, ROMANA_TLS_KEY and ROMANA_TLS_CA" >&2
        return 1
    fi
}

# romanad's certificate (Secrets romana-ca and romanad-tls), made unless it exists; leaves the CA
# clients trust in $CA_FILE.
tls() { # tls CLUSTER_IP
    local dir=$tmp/tls existed=no
    CA_FILE=$tmp/ca.pem
    if k get secret romanad-tls >/dev/null 2>&1; then
        existed=yes
        if [[ $reissue != *" tls "* ]]; then
            k get secret romanad-tls -o jsonpath='{.data.ca\.crt}' | base64 -d >"$CA_FILE"
            echo "romanad: Secret romanad-tls exists"
            return
        fi
    fi
    mkdir -m 700 "$dir"
    if [ -n "${ROMANA_TLS_CERT:-}" ]; then
        cp "$ROMANA_TLS_CERT" "$dir/server.pem"
        cp "${ROMANA_TLS_KEY:?ROMANA_TLS_CERT needs ROMANA_TLS_KEY}" "$dir/server.key"
        cp "${ROMANA_TLS_CA:?ROMANA_TLS_CERT needs ROMANA_TLS_CA (the CA clients are to trust)}" "$dir/ca.pem"
    else
        if ! $new_ca && k get secret romana-ca >/dev/null 2>&1; then
            k get secret romana-ca -o jsonpath='{.data.ca\.crt}' | base64 -d >"$dir/ca.pem"
            k get secret romana-ca -o jsonpath='{.data.ca\.key}' | base64 -d >"$dir/ca.key"
        fi
        issue_cert "$dir" "$(tls_names "$1")"
        k create secret generic romana-ca --from-file=ca.crt="$dir/ca.pem" --from-file=ca.key="$dir/ca.key" \
            --dry-run=client -o yaml | k apply -f - >/dev/null
    fi
    k create secret generic romanad-tls --type=kubernetes.io/tls --from-file=tls.crt="$dir/server.pem" \
        --from-file=tls.key="$dir/server.key" --from-file=ca.crt="$dir/ca.pem" \
        --dry-run=client -o yaml | k apply -f - >/dev/null
    k label secret romanad-tls romana-ca app.kubernetes.io/part-of=romana --overwrite >/dev/null 2>&1 || true
    cp "$dir/ca.pem" "$CA_FILE"
    rm -rf "$dir"
    # romanad reads its certificate when it starts (a first install: the pod was waiting for it).
    [[ $existed == yes ]] && k rollout restart statefulset/romanad >/dev/null
    echo "romanad: certificate for $(tls_names "$1") in Secret romanad-tls"
}

# (Re)creates service user NAME with a fresh password and writes its credentials file to FILE.
# Deleting first makes a re-run after a half-finished run converge (the old password is lost).
issue() { # issue NAME FILE [romana user create flags]...
    local name=$1 file=$2 pw
    shift 2
    pw=$(head -c 30 /dev/urandom | base64 | tr -d '+/=\n')
    romana user delete "$name" </dev/null
    printf '%s\n' "$pw" | k exec -i romanad-0 -c romanad -- /bin/sh -c \
        'IFS= read -r ROMANA_NEW_PASSWORD; export ROMANA_NEW_PASSWORD; e=$1 ca=$2; shift 2; exec romana --credentials "$0" --endpoint "$e" --ca-file "$ca" user create "$@"' \
        "$ADMIN_CREDENTIALS" "$ADMIN_ENDPOINT" "$ADMIN_CA" "$name" --role service "$@" >/dev/null
    # The CA as a JSON string (PEM has no quotes or backslashes, only line ends to escape).
    local ca=""
    [ -n "${CA_FILE:-}" ] && ca=$(printf ', "ca": "%s"' "$(awk '{printf "%s\\n", $0}' "$CA_FILE")")
    (umask 077 && printf '{"endpoint": "%s", "username": "%s", "password": "%s"%s}\n' \
        "$ENDPOINT" "$name" "$pw" "$ca" >"$file")
}

main() {
    reissue=" "
    new_ca=false
    while (($#)); do
        case $1 in
        --reissue) reissue+="${2:?--reissue needs a node name, romana-k8s or tls} "; shift 2 ;;
        --new-ca) new_ca=true; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bootstrap.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
        esac
    done
    tmp=$(mktemp -d)
    chmod 700 "$tmp"
    trap 'rm -rf "$tmp"' EXIT

    IMAGE=${ROMANA_IMAGE:-$(k get daemonset romana-agent -o jsonpath='{.spec.template.spec.containers[0].image}')}
    # The Service's address, not its DNS name: agents start before cluster DNS has a pod network.
    ip=$(k get service romanad -o jsonpath='{.spec.clusterIP}')
    if $new_ca; then
        # Every credentials file holds the CA: all are issued again with the new one.
        reissue+="tls romana-k8s $($KUBECTL get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{end}')"
    fi
    # romanad waits (ContainerCreating) for its certificate's Secret.
    tls "$ip"
    if [ -z "${ROMANA_ENDPOINT:-}" ]; then
        [[ $ip == *:* ]] && ip="[$ip]"
        ENDPOINT="https://$ip:9600"
    else
        ENDPOINT=$ROMANA_ENDPOINT
    fi
    echo "romanad: $ENDPOINT (for agents and the controller); image $IMAGE"
    echo "waiting for romanad"
    k rollout status statefulset/romanad --timeout=300s

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
