"""Neutron security groups as Romana policies: pure translation, no I/O.

Each security group becomes one policy in its project's tenant (tenant = project), named
``sg-<group id>``, written in romanad's NetworkPolicy form (``POST /networkpolicies``), the policy
front end that selects endpoints by label. A port's endpoint carries one label per group it is in
(``sg.romana.io/<group id>: "member"``), so:

- the policy selects exactly the group's ports (``podSelector`` on that label);
- it isolates them in both directions (``policyTypes: [Ingress, Egress]``), as a port with a
  security group drops what no rule allows;
- each rule is one ingress or egress rule of the policy; several groups on one port add up, as
  policies do (a connection passes when any selecting policy allows it);
- replies always pass (connection tracking), as with Neutron's stateful groups.

Rule mapping (see docs/openstack.md, "Security groups"):

- ``protocol`` tcp/udp/sctp (names or numbers 6/17/132) -> a port entry; with
  ``port_range_min``/``max`` -> ``port`` (and ``endPort`` for a range); none or ``any`` -> no port
  entry (every protocol);
- ``remote_ip_prefix`` -> ``ipBlock`` (host bits cleared); none and no remote group ->
  ``0.0.0.0/0`` or ``::/0`` by ``ethertype``;
- ``remote_group_id`` -> the members of that group in the same project (``podSelector`` on its
  label).

Not expressible, so left out (which only ever allows less, never more) and reported by
``translate``: ICMP and other protocols without ports (icmp, ipv6-icmp, gre, ...), remote address
groups, and a port range on a protocol without ports.
"""

import ipaddress
import uuid

from neutron_lib import constants as n_const

#: The label key prefix of security-group membership (the key's name part is the group id).
LABEL_PREFIX = "sg.romana.io/"
#: The value of a membership label.
MEMBER = "member"
#: Every policy written for a security group is named this prefix + the group id.
POLICY_PREFIX = "sg-"
#: The label every VM endpoint carries.
KIND = ("romana.io/kind", "vm")

# Protocols with ports, by Neutron's names and numbers, as NetworkPolicy names them.
_PORT_PROTOCOLS = {
    n_const.PROTO_NAME_TCP: "TCP", str(n_const.PROTO_NUM_TCP): "TCP",
    n_const.PROTO_NAME_UDP: "UDP", str(n_const.PROTO_NUM_UDP): "UDP",
    n_const.PROTO_NAME_SCTP: "SCTP", str(n_const.PROTO_NUM_SCTP): "SCTP",
}
_ANY = (None, "", "any", "0")


def label(sg_id):
    """The membership label key of group ``sg_id``."""
    return LABEL_PREFIX + sg_id


def policy_name(sg_id):
    return POLICY_PREFIX + sg_id


def group_of_policy(name):
    """The group id a policy name stands for, or None for policies that are not ours (ours are
    ``sg-`` and a UUID, so a hand-written ``sg-web`` is never taken for one)."""
    if not name.startswith(POLICY_PREFIX):
        return None
    rest = name[len(POLICY_PREFIX):]
    try:
        return rest if str(uuid.UUID(rest)) == rest else None
    except ValueError:
        return None


def endpoint_labels(port):
    """The endpoint labels of a port: the VM kind and one per security group it enforces
    (none when port security is off, so no group's policy selects it)."""
    labels = {KIND[0]: KIND[1]}
    if port.get("port_security_enabled", True) is not False:
        for g in port.get("security_groups") or []:
            labels[label(g)] = MEMBER
    return labels


def _everyone(ethertype):
    return "::/0" if ethertype == n_const.IPv6 else "0.0.0.0/0"


def _peer(rule):
    """The rule's peer, or (None, reason) when it cannot be expressed."""
    if rule.get("remote_address_group_id"):
        return None, "remote address groups are not expressible"
    if rule.get("remote_group_id"):
        return {"podSelector": {"matchLabels": {label(rule["remote_group_id"]): MEMBER}}}, None
    prefix = rule.get("remote_ip_prefix")
    if prefix:
        try:
            net = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            return None, "remote_ip_prefix %r is not a CIDR" % prefix
        return {"ipBlock": {"cidr": str(net)}}, None
    return {"ipBlock": {"cidr": _everyone(rule.get("ethertype"))}}, None


def _ports(rule):
    """The rule's port entries (None: every protocol), or (None, reason)."""
    proto = rule.get("protocol")
    proto = None if proto is None else str(proto).lower()
    lo, hi = rule.get("port_range_min"), rule.get("port_range_max")
    if proto in _ANY:
        if lo is not None or hi is not None:
            return None, "a port range needs a protocol with ports"
        return None, None
    name = _PORT_PROTOCOLS.get(proto)
    if name is None:
        return None, "protocol %s has no ports and is not expressible (only TCP, UDP, SCTP or any)" % proto
    if lo is None and hi is None:
        return [{"protocol": name}], None
    lo = int(lo if lo is not None else hi)
    hi = int(hi if hi is not None else lo)
    if not 1 <= lo <= hi <= 65535:
        return None, "port range %s-%s is not within 1-65535" % (lo, hi)
    entry = {"protocol": name, "port": lo}
    if hi != lo:
        entry["endPort"] = hi
    return [entry], None


def translate(sg, project_id=None):
    """One security group (Neutron's dict, with ``security_group_rules``) -> (the policy for
    romanad, [(rule id, why it was left out)]). ``project_id`` defaults to the group's."""
    project = project_id or sg.get("project_id") or sg.get("tenant_id")
    ingress, egress, skipped = [], [], []
    for rule in sorted(sg.get("security_group_rules") or [], key=lambda r: r.get("id") or ""):
        if rule.get("ethertype") not in (None, n_const.IPv4, n_const.IPv6):
            skipped.append((rule.get("id"), "ethertype %r is not IPv4 or IPv6" % rule.get("ethertype")))
            continue
        peer, why = _peer(rule)
        ports, why_ports = _ports(rule) if why is None else (None, None)
        why = why or why_ports
        if why:
            skipped.append((rule.get("id"), why))
            continue
        out = {}
        if ports is not None:
            out["ports"] = ports
        if rule.get("direction") == n_const.EGRESS_DIRECTION:
            out["to"] = [peer]
            egress.append(out)
        else:
            out["from"] = [peer]
            ingress.append(out)
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": policy_name(sg["id"]), "namespace": project},
        "spec": {
            "podSelector": {"matchLabels": {label(sg["id"]): MEMBER}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }
    return policy, skipped


def plan(groups, existing, foreign=()):
    """The whole picture: every group's policy to write and every policy of ours whose group is
    gone. ``groups``: Neutron's security groups; ``existing``: the (namespace, name) of the
    policies romanad holds; ``foreign``: namespaces never cleaned (Kubernetes namespaces' tenants,
    whose policies are the controller's whatever their names). Returns ([policy],
    [(namespace, name)], [(group, rule, why)])."""
    writes, skipped = [], []
    want = set()
    for sg in groups:
        p, s = translate(sg)
        writes.append(p)
        want.add((p["metadata"]["namespace"], p["metadata"]["name"]))
        skipped.extend((sg["id"], r, why) for r, why in s)
    deletes = sorted(k for k in existing
                     if group_of_policy(k[1]) is not None and k not in want and k[0] not in foreign)
    return writes, deletes, skipped
