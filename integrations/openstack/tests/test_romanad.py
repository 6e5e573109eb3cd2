"""The drivers against a real romanad (authentication on, a service user), and, as root, a real
romana-agent whose host is a test namespace: a VM stands in as a namespace behind a tap-like veth
created after the bind, as nova does. Namespaces carry a unique prefix and are deleted even when
a test fails."""

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid

import netaddr
import pytest
from neutron.ipam import requests as ipam_req
from neutron_lib.api.definitions import portbindings as pb

from networking_romana import client as rc
from networking_romana.ipam_driver import RomanaPool
from networking_romana.mech_driver import RomanaMechanismDriver, tap_name

from conftest import REPO
from test_units import BindContext

AGENT = os.environ.get("ROMANA_AGENT", os.path.join(REPO, "target", "debug", "romana-agent"))


def service(creds):
    return rc.Client(**creds)


def test_service_login_and_refresh(romanad):
    url, _, creds = romanad
    c = service(creds)
    assert "hosts" in c.call("GET", "/hosts")
    # An expired or revoked access token: the client refreshes (no new login) and retries once.
    logins = []
    real_login = c.login
    c.login = lambda: logins.append(1) or real_login()
    c._access = "not-a-token"
    assert "hosts" in c.call("GET", "/hosts")
    assert c._access != "not-a-token" and logins == []
    # A refresh token that no longer works: it logs in again.
    c._access, c._refresh = "not-a-token", "not-a-refresh-token"
    assert "hosts" in c.call("GET", "/hosts")
    assert logins == [1]
    # Wrong password: the error names romanad's answer, nothing is sent without a token.
    bad = rc.Client(url, "neutron", "wrong")
    with pytest.raises(rc.RomanaError) as e:
        bad.call("GET", "/hosts")
    assert e.value.status == 401


def port(port_id, host, ip, project, network, mac="fa:16:3e:00:00:01"):
    return {"id": port_id, "mac_address": mac, "device_owner": "compute:nova", "network_id": network,
            "project_id": project, "fixed_ips": [{"ip_address": ip, "subnet_id": "sub"}],
            pb.HOST_ID: host, pb.VIF_TYPE: pb.VIF_TYPE_TAP}


def ipam_flow(admin, creds, host):
    """Subnet and a port's address through the IPAM driver; returns (pool, subnet, port id, ip)."""
    project, network, subnet_id = uuid.uuid4().hex, "net-" + uuid.uuid4().hex[:8], "sub-1"
    info = {subnet_id: (network, project, "10.50.0.0/16", None, None)}
    pool = RomanaPool(None, None, romana=service(creds), subnet_info=lambda i: info[i])
    pool.allocate_subnet(ipam_req.SpecificSubnetRequest(project, subnet_id, "10.50.0.0/16"))
    port_id = uuid.uuid4().hex
    p = {"id": port_id, "network_id": network, "project_id": project, pb.HOST_ID: host}
    req = pool.get_address_request_factory().get_request(None, p, {})
    subnet = pool.get_subnet(subnet_id)
    ip = subnet.allocate(req)
    assert ip in netaddr.IPNetwork("10.50.0.0/16")
    rec = admin.call("GET", "/addresses/%s" % port_id)
    assert (rec["ip"], rec["tenant"], rec["segment"], rec["host"]) == (str(ip), project, network, host)
    return pool, subnet, port_id, str(ip), project, network


def test_ipam_driver_against_romanad(romanad):
    _, admin, creds = romanad
    admin.call("POST", "/hosts", {"name": "hv-ipam", "ip": "192.0.2.50"})
    pool, subnet, port_id, ip, project, network = ipam_flow(admin, creds, "hv-ipam")
    # A specific address, then both released; nothing stays in romanad's IPAM.
    want = str(netaddr.IPAddress(ip) + 1)
    p2 = {"id": uuid.uuid4().hex, "network_id": network, "project_id": project, pb.HOST_ID: "hv-ipam"}
    got = subnet.allocate(pool.get_address_request_factory().get_request(None, p2, {"ip_address": want}))
    assert str(got) == want
    subnet.deallocate(netaddr.IPAddress(ip))
    subnet.deallocate(got)
    subnet.deallocate(got)  # already gone: not an error
    assert admin.address(port_id) is None
    left = [a for a in admin.call("GET", "/addresses") if a["tenant"] == project]
    assert left == []


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout


@pytest.fixture
def namespaces():
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 for network namespaces")
    prefix = "ros-%d-%s" % (os.getpid(), uuid.uuid4().hex[:4])
    names = [prefix + "-host", prefix + "-vm"]
    for n in names:
        sh("ip", "netns", "add", n)
    try:
        yield names
    finally:
        for n in names:
            sh("ip", "netns", "del", n, check=False)


@contextlib.contextmanager
def agent_on(admin, creds, hostns, tmp_path):
    """A real romana-agent for a host whose namespace is ``hostns``, its /vm API on 127.0.0.1;
    yields the host's name once the agent is registered and answers."""
    if not os.path.exists(AGENT):
        pytest.skip("no romana-agent binary at %s" % AGENT)
    host = "hv-" + uuid.uuid4().hex[:6]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        listen_port = s.getsockname()[1]
    agent = subprocess.Popen(
        [AGENT, "--host", host, "--host-ip", "127.0.0.1", "--netns", hostns,
         "--listen", "127.0.0.1:%d" % listen_port, "--socket", str(tmp_path / "agent.sock"),
         "--state-dir", str(tmp_path / "state"), "--credentials", creds["admin_file"]],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "agent.log", "w"))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                # Registered, and its /vm API up (it registers before it listens).
                if admin.host(host).get("agent_port") == listen_port:
                    rc.http("GET", "http://127.0.0.1:%d/vm" % listen_port)
                    break
            except rc.RomanaError:
                pass
            assert time.monotonic() < deadline, open(tmp_path / "agent.log").read()
            time.sleep(0.1)
        yield host
    finally:
        agent.terminate()
        agent.wait(timeout=30)


def test_vm_bound_plumbed_and_removed(romanad, namespaces, tmp_path):
    url, admin, creds = romanad
    hostns, vmns = namespaces
    with agent_on(admin, creds, hostns, tmp_path) as host:
        pool, subnet, port_id, ip, project, network = ipam_flow(admin, creds, host)
        mech = RomanaMechanismDriver(romana=service(creds))
        mech.initialize()
        bound = port(port_id, host, ip, project, network)
        unbound = dict(bound, **{pb.VIF_TYPE: pb.VIF_TYPE_UNBOUND})
        # The bind is told to the agent before the tap exists, and answered at once.
        mech.update_port_postcommit(BindContext(bound, unbound))
        # nova starts the VM: its tap appears on the host.
        tap = tap_name(port_id)
        sh("ip", "-n", hostns, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", vmns)
        for cmd in (["link", "set", "eth0", "up"], ["addr", "add", ip + "/32", "dev", "eth0"],
                    ["route", "add", "169.254.1.1", "dev", "eth0"],
                    ["route", "add", "default", "via", "169.254.1.1", "dev", "eth0"]):
            sh("ip", "-n", vmns, *cmd)
        deadline = time.monotonic() + 30
        while "proto 77" not in sh("ip", "-n", hostns, "route", "show", ip + "/32"):
            assert time.monotonic() < deadline, open(tmp_path / "agent.log").read()
            time.sleep(0.1)
        deadline = time.monotonic() + 15
        while subprocess.run(["ip", "netns", "exec", hostns, "ping", "-c1", "-W1", ip],
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "the host cannot reach the VM"
        # Routed, the VM is an endpoint of its project's tenant and its network's segment.
        deadline = time.monotonic() + 30
        while True:
            try:
                e = admin.call("GET", "/endpoints/%s" % port_id)
                break
            except rc.RomanaError as err:
                assert err.status == 404 and time.monotonic() < deadline, err
                time.sleep(0.1)
        assert (e["ip"], e["tenant"], e["segment"], e["host"]) == (ip, project, network, host)
        # The port goes: the agent drops the route and the record, the IPAM driver releases the address.
        mech.delete_port_postcommit(BindContext(bound))
        subnet.deallocate(netaddr.IPAddress(ip))
        assert sh("ip", "-n", hostns, "route", "show", ip + "/32").strip() == ""
        assert admin.address(port_id) is None
        with pytest.raises(rc.RomanaError) as gone:
            admin.call("GET", "/endpoints/%s" % port_id)
        assert gone.value.status == 404
        assert tap in sh("ip", "-n", hostns, "-br", "link"), "the tap is nova's: it stays"


def test_security_group_policies_against_romanad(romanad):
    """The translation is accepted by romanad's validator as it is, and a resync converges the
    policies from the whole picture, touching no Kubernetes namespace's policy."""
    from networking_romana import secgroups
    _, admin, creds = romanad
    project, sg, gone = uuid.uuid4().hex, str(uuid.uuid4()), str(uuid.uuid4())
    rule = dict(security_group_id=sg, project_id=project, ethertype="IPv4", port_range_min=None,
                port_range_max=None, remote_ip_prefix=None, remote_group_id=None)
    group = {"id": sg, "project_id": project, "security_group_rules": [
        dict(rule, id="r1", direction="ingress", protocol="tcp", port_range_min=22, port_range_max=22,
             remote_ip_prefix="10.0.0.0/8"),
        dict(rule, id="r2", direction="ingress", protocol="udp", port_range_min=5000, port_range_max=5100,
             remote_group_id=sg),
        dict(rule, id="r3", direction="egress", protocol=None, ethertype="IPv6"),
        dict(rule, id="r4", direction="ingress", protocol="icmp")]}
    svc = service(creds)
    # A stale policy of a deleted group, and a Kubernetes namespace's policy with an sg- name.
    stale, _ = secgroups.translate({"id": gone, "project_id": project, "security_group_rules": []})
    svc.apply_policy(stale)
    admin.call("POST", "/tenants", {"name": "k8s-" + project[:8],
                                    "labels": {"romana.io/managed-by": "romana-k8s"}})
    theirs, _ = secgroups.translate({"id": gone, "project_id": "k8s-" + project[:8], "security_group_rules": []})
    svc.apply_policy(theirs)
    mech = RomanaMechanismDriver(romana=svc, get_groups=lambda ctx: [group], admin_context=lambda: None)
    mech.initialize()
    assert mech.resync_security_groups(None) == (1, 1)
    held = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in admin.call("GET", "/networkpolicies")}
    assert (project, "sg-" + gone) not in held
    assert ("k8s-" + project[:8], "sg-" + gone) in held, "a Kubernetes namespace's policy stays"
    spec = held[(project, "sg-" + sg)]["spec"]
    assert len(spec["ingress"]) == 2 and len(spec["egress"]) == 1, spec  # ICMP left out
    assert spec["ingress"][1]["ports"][0].get("endPort") == 5100, spec
