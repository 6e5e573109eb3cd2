#!/usr/bin/env bash
# Installs what building and testing Romana needs on a fresh Debian 12 machine (run as root).
# Idempotent: packages already present are not touched, and apt is only called when one is missing.
set -euo pipefail

# System packages the project uses. Later parts of the project add theirs here.
# nftables: the policy dataplane (the agent runs nft). iputils-ping, iperf3: probes in tests and
# benchmarks. containernetworking-plugins: the reference
# plugins (the CNI latency baseline). containerd, podman, runc, catatonit, busybox-static: the real
# CNI callers in tests (runc, because crun cannot run on this machine's hybrid cgroups).
# protobuf-compiler and libprotobuf-dev: etcd-client's build script runs protoc, which needs the
# well-known .proto files (google/protobuf/*.proto) that only libprotobuf-dev ships.
# clang, libbpf-dev, linux-libc-dev: crates/host's build script compiles the fast path's BPF
# programs (clang -target bpf; bpf/bpf_helpers.h from libbpf-dev; linux/bpf.h from linux-libc-dev).
# bird2: the routed fabric's BGP speaker (docs/fabric.md); tests run it only inside their own
# namespaces, so the package's own service is stopped and disabled below.
PACKAGES=(ca-certificates gcc pkg-config etcd-server protobuf-compiler libprotobuf-dev iproute2 nftables iputils-ping iperf3
    containernetworking-plugins busybox-static containerd runc podman catatonit clang libbpf-dev linux-libc-dev bird2)
# python3, python3-venv: scripts/test-openstack.sh (the OpenStack drivers' venv with neutron from PyPI).
PACKAGES+=(python3 python3-venv)
# chromium: the web view's browser test (crates/romanad/tests/ui.rs drives it headless over DevTools).
PACKAGES+=(chromium)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's bird2 enables bird.service, a BIRD in the root namespace; nothing here wants one (a
# BIRD peering from the machine's own namespace could announce test prefixes to a real network).
if command -v systemctl >/dev/null && systemctl list-unit-files bird.service >/dev/null 2>&1; then
    systemctl disable --now bird.service >/dev/null 2>&1 || true
fi

if ! command -v cargo >/dev/null; then
    # The machine image ships a rustup toolchain; Debian's own cargo is too old for this workspace.
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "setup: no Rust toolchain (cargo) found; install rustup's stable toolchain" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy 2>/dev/null || true

# After the install, check that what the build and the tests run is really there, and name the
# package that should have brought it (a partial install must not surface later as a build error).
need() { # need PATH-or-command PACKAGE
    if [[ $1 == /* ]]; then [ -e "$1" ] && return 0; else command -v "$1" >/dev/null && return 0; fi
    echo "setup: $1 is missing after the install; install the Debian package $2 (apt-get install -y $2)" >&2
    exit 1
}
need protoc protobuf-compiler
need /usr/include/google/protobuf/descriptor.proto libprotobuf-dev
need clang clang
need /usr/include/bpf/bpf_helpers.h libbpf-dev
need /usr/include/linux/bpf.h linux-libc-dev
need etcd etcd-server
need nft nftables
need ip iproute2
need bird bird2
need birdc bird2
need iperf3 iperf3
need /usr/lib/cni/bridge containernetworking-plugins
need podman podman
need ctr containerd
