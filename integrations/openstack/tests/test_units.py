"""Unit tests against neutron-lib's and neutron's real base classes, with romanad and the agent
replaced by recorders (the same paths run against a real romanad in test_romanad.py)."""

import netaddr
import pytest
from neutron.ipam import driver as ipam_base
from neutron.ipam import exceptions as ipam_exc
from neutron.ipam import requests as ipam_req
from neutron_lib.api.definitions import portbindings as pb
from neutron_lib.plugins.ml2 import api

from networking_romana import client as rc
from networking_romana.ipam_driver import AddressRefused, RomanaAddressRequest, RomanaPool
from networking_romana.mech_driver import RomanaMechanismDriver, tap_name


class FakeRomana:
    def __init__(self):
        self.calls = []
        self.next_ip = 10

    def host(self, name):
        self.calls.append(("host", name))
        return {"name": name, "ip": "192.0.2.7", "agent_port": 9604}

    def ensure_tenant(self, p):
        self.calls.append(("tenant", p))

    def ensure_segment(self, p, n):
        self.calls.append(("segment", p, n))

    def allocate(self, name, host, tenant, segment, ip=None, family=None):
        self.calls.append(("allocate", name, host, tenant, segment, ip, family))
        if ip == "10.50.0.99":
            raise rc.RomanaError("POST", "/addresses", 409, "taken")
        if family == "ipv6" and host == "hv-v4only":
            raise rc.RomanaError("POST", "/addresses", 422, "host hv-v4only has no IPv6 network")
        self.next_ip += 1
        if family == "ipv6":
            return {"ip": ip or "fd00:50::%x" % self.next_ip, "name": name + "#v6"}
        return {"ip": ip or "10.50.0.%d" % self.next_ip, "name": name}

    def networks(self):
        return [{"name": "os", "cidr": "10.50.0.0/16"}, {"name": "os6", "cidr": "fd00:50::/64"}]

    def address(self, ip):
        self.calls.append(("address", ip))
        return {"name": "0123456789abcdef#v6", "ip": ip} if ":" in ip else {"name": "0123456789abcdef", "ip": ip}

    def release(self, x):
        self.calls.append(("release", x))

    def apply_policy(self, p):
        self.calls.append(("apply", p["metadata"]["name"], len(p["spec"]["ingress"])))

    def delete_policy(self, ns, name):
        self.calls.append(("delete-policy", ns, name))

    def policies(self):
        return [("3f2a9c0d1e4b4a6c8d7e9f0a1b2c3d4e", "sg-9d8c7b6a-5f4e-4d3c-8b2a-190817263544"),
                ("k8s-ns", "sg-9d8c7b6a-5f4e-4d3c-8b2a-190817263544")]

    def kubernetes_tenants(self):
        return {"k8s-ns"}

    def put_endpoint(self, rec):
        self.calls.append(("endpoint", rec["name"], tuple(sorted(rec["labels"]))))
        self.records = getattr(self, "records", []) + [rec]

    def set_labels(self, name, labels):
        self.calls.append(("labels", name, tuple(sorted(labels))))
        return True

    def delete_endpoint(self, name):
        self.calls.append(("delete-endpoint", name))


class BindContext(api.PortContext):
    """A PortContext: neutron-lib's abstract class, with only what binding reads."""
    # Every abstract member of the real class, answered from the dicts below.
    current = property(lambda s: s._current)
    original = property(lambda s: s._original)
    status = property(lambda s: "DOWN")
    original_status = property(lambda s: "DOWN")
    network = property(lambda s: None)
    binding_levels = property(lambda s: [])
    original_binding_levels = property(lambda s: [])
    top_bound_segment = property(lambda s: None)
    original_top_bound_segment = property(lambda s: None)
    bottom_bound_segment = property(lambda s: None)
    original_bottom_bound_segment = property(lambda s: None)
    host = property(lambda s: s._current.get(pb.HOST_ID))
    original_host = property(lambda s: None)
    vif_type = property(lambda s: s._current.get(pb.VIF_TYPE))
    original_vif_type = property(lambda s: None)
    vif_details = property(lambda s: {})
    original_vif_details = property(lambda s: {})
    segments_to_bind = property(lambda s: s._segments)

    def __init__(self, current, original=None, segments=()):
        self._current, self._original, self._segments = current, original, list(segments)
        self.bound = None

    def host_agents(self, agent_type):
        return []

    def set_binding(self, segment_id, vif_type, vif_details, status=None):
        self.bound = (segment_id, vif_type, vif_details, status)

    def continue_binding(self, segment_id, next_segments_to_bind):
        raise AssertionError("not used")

    def allocate_dynamic_segment(self, segment):
        raise AssertionError("not used")

    def release_dynamic_segment(self, segment_id):
        raise AssertionError("not used")


def port(**kw):
    p = {"id": "0123456789abcdef", "mac_address": "fa:16:3e:00:00:01", "device_owner": "compute:nova",
         "fixed_ips": [{"ip_address": "10.50.0.5", "subnet_id": "s1"}], pb.HOST_ID: "hv1",
         pb.VIF_TYPE: pb.VIF_TYPE_TAP, "network_id": "net1", "project_id": "proj1"}
    p.update(kw)
    return p


def driver():
    fake, sent = FakeRomana(), []
    d = RomanaMechanismDriver(romana=fake, agent_http=lambda *a: sent.append(a))
    d.initialize()
    return d, fake, sent


@pytest.mark.parametrize("segments,expect", [
    ([{api.ID: "seg-f", api.NETWORK_TYPE: "flat"}], ("seg-f", "tap")),
    ([{api.ID: "seg-l", api.NETWORK_TYPE: "local"}], ("seg-l", "tap")),
    ([{api.ID: "seg-v", api.NETWORK_TYPE: "vlan"}, {api.ID: "seg-f", api.NETWORK_TYPE: "flat"}], ("seg-f", "tap")),
    ([{api.ID: "seg-v", api.NETWORK_TYPE: "vxlan"}], None),
])
def test_bind_port(segments, expect):
    d, _, _ = driver()
    assert isinstance(d, api.MechanismDriver)
    ctx = BindContext(port(**{pb.VIF_TYPE: pb.VIF_TYPE_UNBOUND}), segments=segments)
    d.bind_port(ctx)
    assert (ctx.bound[:2] if ctx.bound else None) == expect
    if ctx.bound:
        assert ctx.bound[3] == "ACTIVE"
    assert d.connectivity == pb.CONNECTIVITY_L3


def test_port_bound_tells_the_agent_once_and_delete_forgets():
    d, _, sent = driver()
    unbound = port(**{pb.VIF_TYPE: pb.VIF_TYPE_UNBOUND})
    d.update_port_postcommit(BindContext(port(), unbound))
    assert sent == [("POST", "192.0.2.7", 9604, "/vm",
                     {"interface": "tap0123456789a", "mac": "fa:16:3e:00:00:01", "ip": "10.50.0.5"})]
    assert tap_name("0123456789abcdef") == "tap0123456789a"
    # A status-only update of a bound port says nothing again.
    d.update_port_postcommit(BindContext(port(), port()))
    assert len(sent) == 1
    # A move to another host: forgotten on the old host, told to the new.
    d.update_port_postcommit(BindContext(port(**{pb.HOST_ID: "hv2"}), port()))
    assert [s[0] for s in sent[1:]] == ["DELETE", "POST"]
    d.delete_port_postcommit(BindContext(port(**{pb.HOST_ID: "hv2"})))
    assert sent[-1] == ("DELETE", "192.0.2.7", 9604, "/vm/fa:16:3e:00:00:01")


@pytest.mark.parametrize("p", [
    port(device_owner="network:dhcp"),
    port(device_owner="network:router_interface"),
    port(**{pb.VIF_TYPE: "ovs"}),
    port(**{pb.HOST_ID: ""}),
    port(fixed_ips=[]),
])
def test_ports_that_are_not_vms_are_left_alone(p):
    d, _, sent = driver()
    d.update_port_postcommit(BindContext(p, None))
    d.delete_port_postcommit(BindContext(p))
    assert sent == []


def pool():
    fake = FakeRomana()
    info = {"sub1": ("net1", "proj1", "10.50.0.0/16", "10.50.0.1", None)}
    return RomanaPool(None, None, romana=fake, subnet_info=lambda i: info[i]), fake


def test_ipam_subnet_and_addresses():
    p, fake = pool()
    assert isinstance(p, ipam_base.Pool)
    req = ipam_req.SpecificSubnetRequest("proj1", "sub1", "10.50.0.0/16", gateway_ip="10.50.0.1")
    s = p.allocate_subnet(req)
    assert isinstance(s, ipam_base.Subnet)
    assert ("tenant", "proj1") in fake.calls
    assert str(s.get_details().subnet_cidr) == "10.50.0.0/16"
    factory = p.get_address_request_factory()
    r = factory.get_request(None, port(), {})
    assert isinstance(r, RomanaAddressRequest)
    ip = p.get_subnet("sub1").allocate(r)
    assert ip == netaddr.IPAddress("10.50.0.11")
    assert fake.calls[-2:] == [("segment", "proj1", "net1"),
                               ("allocate", "0123456789abcdef", "hv1", "proj1", "net1", None, "ipv4")]
    r = factory.get_request(None, port(), {"ip_address": "10.50.0.77"})
    assert p.get_subnet("sub1").allocate(r) == netaddr.IPAddress("10.50.0.77")
    p.get_subnet("sub1").deallocate(netaddr.IPAddress("10.50.0.77"))
    assert fake.calls[-1] == ("release", "10.50.0.77")


@pytest.mark.parametrize("req,exc", [
    (RomanaAddressRequest("p", "", "proj1", "net1"), AddressRefused),
    (ipam_req.AnyAddressRequest(), AddressRefused),
    (RomanaAddressRequest("p", "hv1", "proj1", "net1", "10.50.0.99"), ipam_exc.IpAddressAlreadyAllocated),
    (RomanaAddressRequest("p", "hv1", "proj1", "net1", "10.99.0.1"), ipam_exc.InvalidIpForSubnet),
])
def test_ipam_refusals_name_the_problem(req, exc):
    p, _ = pool()
    with pytest.raises(exc):
        p.get_subnet("sub1").allocate(req)


def test_any_subnet_request_is_refused():
    p, _ = pool()
    with pytest.raises(ipam_exc.InvalidSubnetRequest):
        p.allocate_subnet(ipam_req.AnySubnetRequest("proj1", "sub2", "IPv4", 24))


def test_client_refuses_no_password():
    with pytest.raises(ValueError):
        rc.Client("http://127.0.0.1:1", "neutron", "")


def dual_port(**kw):
    return port(fixed_ips=[{"ip_address": "fd00:50::5", "subnet_id": "s6"},
                           {"ip_address": "10.50.0.5", "subnet_id": "s1"}], **kw)


def test_dual_stack_port_is_told_and_registered_with_both_addresses():
    d, fake, sent = driver()
    d.update_port_postcommit(BindContext(dual_port(), dual_port(**{pb.VIF_TYPE: pb.VIF_TYPE_UNBOUND})))
    # IPv4 first in `ip` (what the old agents read), both in `ips`.
    assert sent == [("POST", "192.0.2.7", 9604, "/vm",
                     {"interface": "tap0123456789a", "mac": "fa:16:3e:00:00:01", "ip": "10.50.0.5",
                      "ips": ["10.50.0.5", "fd00:50::5"]})]
    # One endpoint record per address, under the IPAM's names, before the agent is told.
    assert [(r["name"], r["ip"]) for r in fake.records] == [
        ("0123456789abcdef", "10.50.0.5"), ("0123456789abcdef#v6", "fd00:50::5")]
    assert ("address", "fd00:50::5") in fake.calls and ("address", "10.50.0.5") not in fake.calls
    # Relabelling (a group added) relabels both.
    d._get_group = lambda ctx, sg_id: None  # the group's policy is not what this test is about
    d.update_port_postcommit(BindContext(dual_port(security_groups=["g1"]), dual_port()))
    assert [c[1] for c in fake.calls if c[0] == "labels"] == ["0123456789abcdef", "0123456789abcdef#v6"]
    # Delete: both names, without looking the (maybe released) addresses up.
    fake.calls.clear()
    d.delete_port_postcommit(BindContext(dual_port()))
    assert [c for c in fake.calls if c[0] == "delete-endpoint"] == [
        ("delete-endpoint", "0123456789abcdef"), ("delete-endpoint", "0123456789abcdef#v6")]
    assert not [c for c in fake.calls if c[0] == "address"]


def test_single_family_ports_send_no_ips():
    d, _, sent = driver()
    v6 = port(fixed_ips=[{"ip_address": "fd00:50::9", "subnet_id": "s6"}])
    d.update_port_postcommit(BindContext(v6, None))
    assert sent[-1][4] == {"interface": "tap0123456789a", "mac": "fa:16:3e:00:00:01", "ip": "fd00:50::9"}


def v6_pool():
    fake = FakeRomana()
    info = {"sub6": ("net1", "proj1", "fd00:50::/64", None, None)}
    return RomanaPool(None, None, romana=fake, subnet_info=lambda i: info[i]), fake


def test_ipv6_subnet_allocates_ipv6():
    p, fake = v6_pool()
    p.allocate_subnet(ipam_req.SpecificSubnetRequest("proj1", "sub6", "fd00:50::/64"))
    r = p.get_address_request_factory().get_request(None, port(), {})
    ip = p.get_subnet("sub6").allocate(r)
    assert ip.version == 6 and ip in netaddr.IPNetwork("fd00:50::/64")
    assert fake.calls[-1] == ("allocate", "0123456789abcdef", "hv1", "proj1", "net1", None, "ipv6")
    # romanad's 422 (the host draws no IPv6 for the project) names the subnet.
    r = p.get_address_request_factory().get_request(None, port(**{pb.HOST_ID: "hv-v4only"}), {})
    with pytest.raises(AddressRefused) as e:
        p.get_subnet("sub6").allocate(r)
    assert "subnet sub6 (fd00:50::/64)" in str(e.value) and "no IPv6 network" in str(e.value)


def test_subnet_without_a_network_of_its_family_is_refused():
    p, _ = pool()
    with pytest.raises(ipam_exc.InvalidSubnetRequest) as e:
        p.allocate_subnet(ipam_req.SpecificSubnetRequest("proj1", "sub7", "fd99::/64"))
    assert "subnet sub7 (fd99::/64) is IPv6" in str(e.value)
    assert "os (10.50.0.0/16), os6 (fd00:50::/64)" in str(e.value)
