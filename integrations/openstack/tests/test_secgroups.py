"""Security groups as Romana policies: the pure translation as data (rules built with Neutron's
own API converters, as the API stores them), the driver's callbacks with neutron-lib's real event
payloads, and the port hooks' order (policies and labels before the agent is told)."""

import pytest
from neutron.extensions import securitygroup as ext_sg
from neutron_lib import constants as n_const
from neutron_lib.api.definitions import portbindings as pb
from neutron_lib.callbacks import events, registry, resources

from networking_romana import secgroups
from networking_romana.mech_driver import RomanaMechanismDriver
from test_units import BindContext, FakeRomana, port

SG = "5e1a0b7c-7a4b-4a7e-9d55-1f0e3c2b9a01"
OTHER = "0c6f1e2d-3b4a-4c5d-8e9f-a0b1c2d3e4f5"
GONE = "9d8c7b6a-5f4e-4d3c-8b2a-190817263544"
PROJECT = "3f2a9c0d1e4b4a6c8d7e9f0a1b2c3d4e"


def rule(direction="ingress", ethertype="IPv4", protocol=None, lo=None, hi=None, prefix=None,
         group=None, address_group=None, rid="r1"):
    """A rule as Neutron stores it after its API converters ran."""
    return {"id": rid, "security_group_id": SG, "project_id": PROJECT, "direction": direction,
            "ethertype": ext_sg.convert_ethertype_to_case_insensitive(ethertype),
            "protocol": ext_sg.convert_protocol(protocol),
            "port_range_min": ext_sg.convert_validate_port_value(lo),
            "port_range_max": ext_sg.convert_validate_port_value(hi),
            "remote_ip_prefix": ext_sg.convert_ip_prefix_to_cidr(prefix),
            "remote_group_id": group, "remote_address_group_id": address_group}


def group(*rules, sg_id=SG):
    return {"id": sg_id, "name": "web", "project_id": PROJECT, "stateful": True,
            "security_group_rules": list(rules)}


def check(r, direction=None, entry=None, skipped=None):
    """One rule -> the policy's one rule in `direction` (`entry`), or left out for `skipped`."""
    p, s = secgroups.translate(group(r))
    spec = p["spec"]
    if skipped:
        assert spec["ingress"] == [] and spec["egress"] == [], spec
        assert len(s) == 1 and skipped in s[0][1], s
        return
    assert s == [], s
    other = "egress" if direction == "ingress" else "ingress"
    assert spec[direction] == [entry] and spec[other] == [], spec


ANY4 = {"ipBlock": {"cidr": "0.0.0.0/0"}}


@pytest.mark.parametrize("r,direction,entry", [
    # SSH from anywhere (IPv4).
    (rule(protocol="tcp", lo=22, hi=22), "ingress", {"ports": [{"protocol": "TCP", "port": 22}], "from": [ANY4]}),
    # Protocol by number and upper case; a range.
    (rule(protocol="6", lo=8000, hi=8080), "ingress",
     {"ports": [{"protocol": "TCP", "port": 8000, "endPort": 8080}], "from": [ANY4]}),
    (rule(protocol="UDP", lo=53, hi=53, prefix="10.1.2.0/24"), "ingress",
     {"ports": [{"protocol": "UDP", "port": 53}], "from": [{"ipBlock": {"cidr": "10.1.2.0/24"}}]}),
    (rule(protocol="sctp"), "ingress", {"ports": [{"protocol": "SCTP"}], "from": [ANY4]}),
    # A bare host address is a /32 (Neutron's converter), host bits cleared.
    (rule(protocol="tcp", lo=22, hi=22, prefix="10.1.2.3"), "ingress",
     {"ports": [{"protocol": "TCP", "port": 22}], "from": [{"ipBlock": {"cidr": "10.1.2.3/32"}}]}),
    # Remote group: that group's members (same project).
    (rule(protocol="tcp", lo=5432, hi=5432, group=OTHER), "ingress",
     {"ports": [{"protocol": "TCP", "port": 5432}],
      "from": [{"podSelector": {"matchLabels": {"sg.romana.io/" + OTHER: "member"}}}]}),
    # The default group's rules: from its own members, and egress anywhere (both families).
    (rule(group=SG), "ingress", {"from": [{"podSelector": {"matchLabels": {"sg.romana.io/" + SG: "member"}}}]}),
    (rule(direction="egress"), "egress", {"to": [ANY4]}),
    (rule(direction="egress", ethertype="IPv6"), "egress", {"to": [{"ipBlock": {"cidr": "::/0"}}]}),
    (rule(protocol="any"), "ingress", {"from": [ANY4]}),
    # Neutron's API takes "any" or 0 for every protocol (any case).
    (rule(protocol="0"), "ingress", {"from": [ANY4]}),
    (rule(protocol="ANY"), "ingress", {"from": [ANY4]}),
    (rule(direction="egress", protocol="tcp", lo=443, hi=443, prefix="192.0.2.0/24"), "egress",
     {"ports": [{"protocol": "TCP", "port": 443}], "to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}),
])
def test_rules_translate(r, direction, entry):
    check(r, direction, entry)


@pytest.mark.parametrize("r,why", [
    (rule(protocol="icmp"), "protocol icmp has no ports"),
    (rule(protocol="1"), "protocol 1 has no ports"),
    (rule(protocol="ipv6-icmp", ethertype="IPv6"), "ipv6-icmp"),
    (rule(protocol="gre"), "protocol gre"),
    (rule(protocol="tcp", address_group="ag-1"), "remote address groups"),
    (rule(protocol="tcp", lo=0, hi=0), "not within 1-65535"),
])
def test_what_is_not_expressible_is_left_out_and_said(r, why):
    check(r, skipped=why)


def test_the_policy_selects_the_group_and_isolates_both_directions():
    p, _ = secgroups.translate(group(rule(protocol="tcp", lo=22, hi=22), rule(direction="egress", rid="r2")))
    assert p["metadata"] == {"name": "sg-" + SG, "namespace": PROJECT}
    assert p["spec"]["podSelector"] == {"matchLabels": {"sg.romana.io/" + SG: "member"}}
    assert p["spec"]["policyTypes"] == ["Ingress", "Egress"]
    # A group without rules: its ports accept and send nothing (Neutron's meaning).
    empty, _ = secgroups.translate(group())
    assert empty["spec"]["ingress"] == [] and empty["spec"]["egress"] == []
    assert empty["spec"]["policyTypes"] == ["Ingress", "Egress"]


@pytest.mark.parametrize("p,labels", [
    ({"security_groups": [SG, OTHER]},
     {"romana.io/kind": "vm", "sg.romana.io/" + SG: "member", "sg.romana.io/" + OTHER: "member"}),
    ({"security_groups": []}, {"romana.io/kind": "vm"}),
    ({"security_groups": [SG], "port_security_enabled": False}, {"romana.io/kind": "vm"}),
])
def test_endpoint_labels(p, labels):
    assert secgroups.endpoint_labels(p) == labels


def test_plan_writes_every_group_and_deletes_only_our_orphans():
    writes, deletes, skipped = secgroups.plan(
        [group(rule(protocol="icmp")), group(sg_id=OTHER)],
        [(PROJECT, "sg-" + SG), (PROJECT, "sg-" + GONE), (PROJECT, "hand-made"), ("other", "sg-web"),
         ("k8s-ns", "sg-" + GONE)], foreign={"k8s-ns"})
    assert [w["metadata"]["name"] for w in writes] == ["sg-" + SG, "sg-" + OTHER]
    # Only policies named sg-<uuid> are ours: a hand-written sg-web stays, and nothing in a
    # Kubernetes namespace is touched whatever its name.
    assert deletes == [(PROJECT, "sg-" + GONE)]
    assert skipped == [(SG, "r1", "protocol icmp has no ports and is not expressible "
                                  "(only TCP, UDP, SCTP or any)")]


def driver(groups):
    fake, sent = FakeRomana(), []
    d = RomanaMechanismDriver(romana=fake, agent_http=lambda *a: sent.append(a) or fake.calls.append(("agent", a[0])),
                              get_group=lambda ctx, i: groups.get(i), get_groups=lambda ctx: list(groups.values()),
                              admin_context=lambda: None)
    d.initialize()
    return d, fake


def test_bind_writes_policies_and_labels_before_the_agent_hears():
    d, fake = driver({SG: group(rule(protocol="tcp", lo=22, hi=22))})
    p = port(security_groups=[SG])
    d.update_port_postcommit(BindContext(p, port(**{pb.VIF_TYPE: pb.VIF_TYPE_UNBOUND})))
    kinds = [c[0] for c in fake.calls if c[0] in ("apply", "endpoint", "agent")]
    assert kinds == ["apply", "endpoint", "agent"]
    assert ("endpoint", p["id"], ("romana.io/kind", "sg.romana.io/" + SG)) in fake.calls
    # The port's groups change: relabelled, the agent not told again.
    fake.calls.clear()
    d.update_port_postcommit(BindContext(port(security_groups=[]), p))
    assert fake.calls == [("labels", p["id"], ("romana.io/kind",))]
    # The port goes: the agent forgets it and its endpoint record goes.
    fake.calls.clear()
    d.delete_port_postcommit(BindContext(p))
    assert [c[0] for c in fake.calls if c[0] != "host"] == ["agent", "delete-endpoint"]


def test_callbacks_follow_groups_and_rules():
    groups = {SG: group(rule(protocol="tcp", lo=22, hi=22))}
    d, fake = driver(groups)
    ctx = object()
    # A group created or updated: its policy from the payload's state.
    d.security_group_changed(resources.SECURITY_GROUP, events.AFTER_CREATE, None,
                             events.DBEventPayload(ctx, resource_id=SG, states=(groups[SG],)))
    assert fake.calls[-1] == ("apply", "sg-" + SG, 1)
    # A rule added, then deleted: the group as Neutron holds it now.
    groups[SG]["security_group_rules"].append(rule(protocol="udp", lo=53, hi=53, rid="r2"))
    new_rule = groups[SG]["security_group_rules"][-1]
    d.security_group_rule_changed(resources.SECURITY_GROUP_RULE, events.AFTER_CREATE, None,
                                  events.DBEventPayload(ctx, resource_id="r2", states=(new_rule,)))
    assert fake.calls[-1] == ("apply", "sg-" + SG, 2)
    groups[SG]["security_group_rules"].pop()
    d.security_group_rule_changed(resources.SECURITY_GROUP_RULE, events.AFTER_DELETE, None,
                                  events.DBEventPayload(ctx, resource_id="r2", metadata={"security_group_id": SG}))
    assert fake.calls[-1] == ("apply", "sg-" + SG, 1)
    # The group deleted: its policy goes.
    gone = groups.pop(SG)
    d.security_group_deleted(resources.SECURITY_GROUP, events.AFTER_DELETE, None,
                             events.DBEventPayload(ctx, resource_id=SG, states=(gone,)))
    assert fake.calls[-1] == ("delete-policy", PROJECT, "sg-" + SG)


def test_resync_converges_from_the_whole_picture():
    d, fake = driver({SG: group(), OTHER: group(sg_id=OTHER)})
    assert d.resync_security_groups(None) == (2, 1)
    want = [("apply", "sg-" + SG, 0), ("apply", "sg-" + OTHER, 0), ("delete-policy", PROJECT, "sg-" + GONE)]
    assert fake.calls == want
    # Neutron's server announces it has started: the same resync, through the registry.
    fake.calls.clear()
    registry.publish(resources.PROCESS, events.AFTER_INIT, None)
    assert fake.calls == want


def test_protocol_constants_are_neutrons():
    # The names the translation keys on are neutron-lib's.
    assert (n_const.PROTO_NAME_TCP, n_const.PROTO_NAME_UDP, n_const.PROTO_NAME_SCTP) == ("tcp", "udp", "sctp")
