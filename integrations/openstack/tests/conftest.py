"""Shared fixtures: a real romanad (built by cargo) with authentication on, and a service user."""

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

from networking_romana import client as rc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
ROMANAD = os.environ.get("ROMANAD", os.path.join(REPO, "target", "debug", "romanad"))
FLAT = {"networks": [{"name": "os", "cidr": "10.50.0.0/16", "block_mask": 28}],
        "topologies": [{"networks": ["os"], "map": [{"groups": []}]}]}


# Dual stack: an IPv4 and an IPv6 network over the same (flat) topology.
DUAL = {"networks": [{"name": "os", "cidr": "10.60.0.0/16", "block_mask": 28},
                     {"name": "os6", "cidr": "fd00:60::/112", "block_mask": 124}],
        "topologies": [{"networks": ["os", "os6"], "map": [{"groups": []}]}]}


def _romanad(topology):
    """romanad on 127.0.0.1 (a port chosen at run time); yields (url, admin client, service creds)."""
    if not os.path.exists(ROMANAD):
        pytest.skip("no romanad binary at %s (cargo build -p romanad)" % ROMANAD)
    d = tempfile.mkdtemp(prefix="romana-os-")
    topo = os.path.join(d, "topology.json")
    with open(topo, "w") as f:
        json.dump(topology, f)
    log = open(os.path.join(d, "romanad.log"), "w")
    p = subprocess.Popen([ROMANAD, "--listen", "127.0.0.1:0", "--data-dir", os.path.join(d, "data"),
                          "--initial-topology", topo], stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("romanad listening on "), "romanad did not start: %r" % line
        url = line.split()[3]
        with open(os.path.join(d, "data", "admin.credentials")) as f:
            creds = json.load(f)
        admin = rc.Client(url, creds["username"], creds["password"])
        password = uuid.uuid4().hex
        admin.call("POST", "/auth/users", {"name": "neutron", "password": password, "roles": ["service"]})
        creds_file = os.path.join(d, "data", "admin.credentials")
        yield url, admin, {"url": url, "username": "neutron", "password": password, "admin_file": creds_file}
    finally:
        p.terminate()
        p.wait(timeout=30)
        log.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def romanad():
    """romanad with an IPv4 network only (10.50.0.0/16)."""
    yield from _romanad(FLAT)


@pytest.fixture(scope="session")
def romanad_dual():
    """romanad with an IPv4 (10.60.0.0/16) and an IPv6 (fd00:60::/112) network."""
    yield from _romanad(DUAL)


@pytest.fixture(autouse=True)
def callbacks_registry():
    """Each test starts with Neutron's callbacks registry empty (drivers subscribe in initialize)."""
    from neutron_lib.callbacks import registry
    registry.clear()
    yield
    registry.clear()
