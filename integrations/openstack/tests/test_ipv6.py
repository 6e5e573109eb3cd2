"""IPv6 and dual-stack ports through the drivers against a real romanad, and (as root) a real
romana-agent in test namespaces: the IPAM driver passes IPv6 subnets through (an address of the
subnet's family from romanad's IPAM, named as a dual-stack pod's), a subnet romanad's topology
cannot serve is refused naming it, and a dual-stack VM is routed, reachable and registered over
both families, then removed with nothing left."""

import subprocess
import time
import urllib.parse
import uuid

import netaddr
import pytest
from neutron.ipam import exceptions as ipam_exc
from neutron.ipam import requests as ipam_req
from neutron_lib.api.definitions import portbindings as pb

from networking_romana import client as rc
from networking_romana.ipam_driver import AddressRefused, RomanaPool
from networking_romana.mech_driver import RomanaMechanismDriver, tap_name

from test_romanad import agent_on, namespaces, service, sh  # noqa: F401 (namespaces: a fixture)
from test_units import BindContext

V4, V6 = "10.60.0.0/16", "fd00:60::/112"


def pool_for(creds, project, network, subnets):
    """The IPAM driver with ``subnets`` ({id: cidr}) created through it, as Neutron creates them."""
    info = {i: (network, project, c, None, None) for i, c in subnets.items()}
    pool = RomanaPool(None, None, romana=service(creds), subnet_info=lambda i: info[i])
    for i, c in subnets.items():
        pool.allocate_subnet(ipam_req.SpecificSubnetRequest(project, i, c))
    return pool


def allocate(pool, subnet_id, port_id, project, network, host, ip=None):
    p = {"id": port_id, "network_id": network, "project_id": project, pb.HOST_ID: host}
    req = pool.get_address_request_factory().get_request(None, p, {"ip_address": ip} if ip else {})
    return pool.get_subnet(subnet_id).allocate(req)


def test_ipv6_subnet_without_an_ipv6_network_is_refused(romanad):
    """romanad's topology is IPv4 only: an IPv6 subnet is refused when created, naming it; an
    allocation that reaches romanad anyway is its 422, named with the subnet by the driver."""
    _, admin, creds = romanad
    admin.call("POST", "/hosts", {"name": "hv-v4", "ip": "192.0.2.61"})
    project, network = uuid.uuid4().hex, "net-" + uuid.uuid4().hex[:8]
    with pytest.raises(ipam_exc.InvalidSubnetRequest) as e:
        pool_for(creds, project, network, {"sub-v6": "fd00:99::/64"})
    assert "subnet sub-v6 (fd00:99::/64) is IPv6" in str(e.value), e.value
    assert "os (10.50.0.0/16)" in str(e.value), e.value
    # romanad itself: 422 naming the family, the host and the tenant's networks.
    svc = service(creds)
    svc.ensure_segment(project, network)
    with pytest.raises(rc.RomanaError) as e:
        svc.allocate("p1", "hv-v4", project, network, family="ipv6")
    assert e.value.status == 422, e.value
    assert "host hv-v4 has no IPv6 network" in e.value.message and "os (10.50.0.0/16)" in e.value.message
    with pytest.raises(rc.RomanaError) as e:
        svc.allocate("p1", "hv-v4", project, network, family="ipv5")
    assert e.value.status == 422 and "ipv5" in e.value.message, e.value
    # A subnet from before (the database knows it): the allocation is refused naming it.
    pool = RomanaPool(None, None, romana=svc, subnet_info=lambda i: (network, project, "fd00:99::/64", None, None))
    with pytest.raises(AddressRefused) as e:
        allocate(pool, "sub-old", "p1", project, network, "hv-v4")
    assert "subnet sub-old (fd00:99::/64)" in str(e.value) and "no IPv6 network" in str(e.value), e.value
    assert [a for a in admin.call("GET", "/addresses") if a["tenant"] == project] == []


def test_dual_stack_port_addresses(romanad_dual):
    """One fixed IP on each subnet: the names a dual-stack pod holds, pinned addresses of either
    family, and each released by its address (as Neutron deallocates)."""
    _, admin, creds = romanad_dual
    admin.call("POST", "/hosts", {"name": "hv-dual", "ip": "192.0.2.62"})
    project, network = uuid.uuid4().hex, "net-" + uuid.uuid4().hex[:8]
    pool = pool_for(creds, project, network, {"s4": V4, "s6": V6})
    port_id = uuid.uuid4().hex
    ip6 = allocate(pool, "s6", port_id, project, network, "hv-dual")  # Neutron's order is not fixed
    ip4 = allocate(pool, "s4", port_id, project, network, "hv-dual")
    assert (ip4.version, ip6.version) == (4, 6)
    assert ip4 in netaddr.IPNetwork(V4) and ip6 in netaddr.IPNetwork(V6)
    held = {a["name"]: a["ip"] for a in admin.call("GET", "/addresses") if a["tenant"] == project}
    assert held == {port_id: str(ip4), port_id + "#v6": str(ip6)}
    # A pinned IPv6 address (--fixed-ip ip_address=...), and one of the wrong family for the subnet.
    other = uuid.uuid4().hex
    want = str(netaddr.IPAddress(ip6) + 9)
    assert str(allocate(pool, "s6", other, project, network, "hv-dual", want)) == want
    assert admin.address(other + "#v6")["ip"] == want
    with pytest.raises(AddressRefused) as e:
        allocate(pool, "s6", uuid.uuid4().hex, project, network, "hv-dual", "10.60.0.77")
    assert "10.60.0.77 is not an IPv6 address" in str(e.value), e.value
    # Neutron deallocates each subnet's address by address.
    for ip in (ip4, ip6, netaddr.IPAddress(want)):
        pool.get_subnet("s4" if ip.version == 4 else "s6").deallocate(ip)
    assert [a for a in admin.call("GET", "/addresses") if a["tenant"] == project] == []


def wait(what, cond, log, secs=30):
    deadline = time.monotonic() + secs
    while not cond():
        assert time.monotonic() < deadline, "%s\n%s" % (what, open(log).read())
        time.sleep(0.1)


def route(ns, ip):
    """The main table's route for exactly ``ip`` in ``ns`` (either family)."""
    return sh("ip", "-n", ns, "-6" if ":" in ip else "-4", "route", "show", "table", "main", ip).strip()


def pings(ns, ip):
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W1", ip], capture_output=True).returncode == 0


def test_dual_stack_vm_plumbed_registered_and_removed(romanad_dual, namespaces, tmp_path):
    _, admin, creds = romanad_dual
    hostns, vmns = namespaces
    log = tmp_path / "agent.log"
    with agent_on(admin, creds, hostns, tmp_path) as host:
        project, network = uuid.uuid4().hex, "net-" + uuid.uuid4().hex[:8]
        pool = pool_for(creds, project, network, {"s4": V4, "s6": V6})
        port_id = uuid.uuid4().hex
        ip4 = str(allocate(pool, "s4", port_id, project, network, host))
        ip6 = str(allocate(pool, "s6", port_id, project, network, host))
        mech = RomanaMechanismDriver(romana=service(creds))
        mech.initialize()
        bound = {"id": port_id, "mac_address": "fa:16:3e:00:00:06", "device_owner": "compute:nova",
                 "network_id": network, "project_id": project, pb.HOST_ID: host, pb.VIF_TYPE: pb.VIF_TYPE_TAP,
                 "fixed_ips": [{"ip_address": ip6, "subnet_id": "s6"}, {"ip_address": ip4, "subnet_id": "s4"}]}
        mech.update_port_postcommit(BindContext(bound, dict(bound, **{pb.VIF_TYPE: pb.VIF_TYPE_UNBOUND})))
        # Registered by the driver before the agent heard of the VM: one record per address.
        for name, ip in ((port_id, ip4), (port_id + "#v6", ip6)):
            e = admin.call("GET", "/endpoints/%s" % urllib.parse.quote(name, safe=""))
            assert (e["ip"], e["tenant"], e["segment"], e["host"]) == (ip, project, network, host)
        # nova starts the VM; it uses 169.254.1.1 and fe80::1 as its gateways.
        tap = tap_name(port_id)
        sh("ip", "-n", hostns, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", vmns)
        # The host's own IPv6 address (a real host has one on its uplink), for the VM to reach.
        sh("ip", "-n", hostns, "link", "set", "lo", "up")
        sh("ip", "-n", hostns, "addr", "add", "fd00:ffff::1/128", "dev", "lo")
        for cmd in (["link", "set", "eth0", "up"], ["addr", "add", ip4 + "/32", "dev", "eth0"],
                    ["addr", "add", ip6 + "/128", "dev", "eth0", "nodad"],
                    ["route", "add", "169.254.1.1", "dev", "eth0"],
                    ["route", "add", "default", "via", "169.254.1.1", "dev", "eth0"],
                    ["-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0"]):
            sh("ip", "-n", vmns, *cmd)
        for ip in (ip4, ip6):
            wait("the agent never routed %s" % ip,
                 lambda ip=ip: "proto 77" in route(hostns, ip), log)
        assert "dev %s proto 77" % tap in sh("ip", "-n", hostns, "-6", "route", "show", ip6)
        assert "fe80::1/64" in sh("ip", "-n", hostns, "-6", "addr", "show", "dev", tap)
        wait("the host cannot reach the VM over IPv4", lambda: pings(hostns, ip4), log, 15)
        wait("the VM cannot reach the host over IPv6 (gateway fe80::1)", lambda: pings(vmns, "fd00:ffff::1"), log, 15)
        # The port goes: both routes and both records go, and Neutron releases both addresses.
        mech.delete_port_postcommit(BindContext(bound))
        for ip in (ip4, ip6):
            pool.get_subnet("s4" if ":" not in ip else "s6").deallocate(netaddr.IPAddress(ip))
            assert route(hostns, ip) == ""
        for name in (port_id, port_id + "#v6"):
            with pytest.raises(rc.RomanaError) as gone:
                admin.call("GET", "/endpoints/%s" % urllib.parse.quote(name, safe=""))
            assert gone.value.status == 404
        assert [a for a in admin.call("GET", "/addresses") if a["tenant"] == project] == []
