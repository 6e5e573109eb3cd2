"""VMs and pods together, as root, in namespaces this test creates: two compute hosts (namespaces
joined by a veth, no link leaves them), each with a real romana-agent; Neutron's drivers (IPAM and
ML2, this package) create the ports against a real romanad and bind them, nova's part (the tap,
the VM) is a namespace behind a veth named ``tap...``; pods come through the real romana-cni.

- A VM and pods of the same project (tenant) reach each other over TCP and UDP, on the VM's host
  and across hosts.
- Another project's VM, isolated per tenant, refuses them.
- A security group whose one ingress rule opens TCP 22 from one VM lets exactly that through
  (not TCP 80, not UDP 22, not from a pod or another project); the rule's deletion, followed
  through Neutron's callbacks registry, closes it again; a rule from the group's own members
  (remote group) admits a member on the other host and nobody else; the port leaving the group
  opens it.
- Deleting the ports, the pods and the group leaves nothing in IPAM, the endpoint registry, the
  policies or the hosts' kernels (routes, firewall).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid

import netaddr
import pytest
from neutron.ipam import requests as ipam_req
from neutron_lib.api.definitions import portbindings as pb
from neutron_lib.callbacks import events, registry, resources

from networking_romana import client as rc
from networking_romana.ipam_driver import RomanaPool
from networking_romana.mech_driver import RomanaMechanismDriver, tap_name

from conftest import REPO
from test_units import BindContext

AGENT = os.environ.get("ROMANA_AGENT", os.path.join(REPO, "target", "debug", "romana-agent"))
CNI = os.environ.get("ROMANA_CNI", os.path.join(REPO, "target", "debug", "romana-cni"))
PROBE = os.path.join(os.path.dirname(__file__), "netprobe.py")
CIDR = "10.50.0.0/16"


def sh(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError("%s: %s" % (" ".join(args), r.stderr))
    return r.stdout


def until(what, f, secs=30):
    deadline = time.monotonic() + secs
    while not f():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


class World:
    """Namespaces (unique prefix, all deleted at the end), agents and servers of one test."""

    def __init__(self, tmp):
        self.prefix = "rvp-%d-%s" % (os.getpid(), uuid.uuid4().hex[:4])
        self.tmp = tmp
        self.namespaces, self.procs = [], []

    def ns(self, name):
        n = "%s-%s" % (self.prefix, name)
        sh("ip", "netns", "add", n)
        self.namespaces.append(n)
        sh("ip", "-n", n, "link", "set", "lo", "up")
        return n

    def spawn(self, args, log):
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.tmp / log, "w"))
        self.procs.append(p)
        return p

    def serve(self, ns):
        """TCP and UDP echo on 22 and 80 in namespace `ns`."""
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, PROBE, "serve", "22", "80"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "serving"

    def close(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=30)
        for n in self.namespaces:
            sh("ip", "netns", "del", n, check=False)


def can(ns, proto, ip, port):
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, PROBE, "probe", proto, ip, str(port)],
                       capture_output=True)
    return r.returncode == 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def world(tmp_path):
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"):
        pytest.skip("needs root, iproute2 and nft for network namespaces")
    for b in (AGENT, CNI):
        if not os.path.exists(b):
            pytest.skip("no binary at %s (cargo build -p romana-agent -p romana-cni)" % b)
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.close()


class Cloud:
    """Neutron's side: the IPAM and mechanism drivers against romanad, security groups as
    Neutron's database would hold them, and nova's part (taps and VMs)."""

    def __init__(self, world, admin, creds, hosts):
        self.w, self.admin, self.hosts = world, admin, hosts
        svc = rc.Client(**creds)
        self.groups = {}
        self.subnet_info = {}
        self.pool = RomanaPool(None, None, romana=svc, subnet_info=lambda i: self.subnet_info[i])
        # The agents' /vm APIs listen on loopback (the test's side of their hosts); their host
        # records carry the hosts' addresses inside the test namespaces.
        loopback = {h["ip"]: "127.0.0.1" for h in hosts.values()}
        self.mech = RomanaMechanismDriver(
            romana=svc, agent_http=lambda m, ip, port, path, body=None: rc.agent_call(m, loopback[ip], port, path, body),
            get_group=lambda ctx, i: self.groups.get(i), get_groups=lambda ctx: list(self.groups.values()))
        self.mech.initialize()
        self.ports = {}

    def network(self, project):
        network, subnet_id = "net-" + uuid.uuid4().hex[:8], "sub-" + uuid.uuid4().hex[:8]
        self.subnet_info[subnet_id] = (network, project, CIDR, None, None)
        self.pool.allocate_subnet(ipam_req.SpecificSubnetRequest(project, subnet_id, CIDR))
        return network, subnet_id

    def vm(self, name, host, project, network, subnet_id, groups=()):
        """Port created (address from the IPAM driver), bound (driver -> agent), VM started."""
        port_id = str(uuid.uuid4())
        mac = "fa:16:3e:%02x:%02x:%02x" % tuple(os.urandom(3))
        p = {"id": port_id, "network_id": network, "project_id": project, "mac_address": mac,
             "device_owner": "compute:nova", "security_groups": list(groups), pb.HOST_ID: host}
        subnet = self.pool.get_subnet(subnet_id)
        ip = str(subnet.allocate(self.pool.get_address_request_factory().get_request(None, p, {})))
        p.update({"fixed_ips": [{"ip_address": ip, "subnet_id": subnet_id}], pb.VIF_TYPE: pb.VIF_TYPE_TAP})
        self.mech.update_port_postcommit(BindContext(p, dict(p, **{pb.VIF_TYPE: pb.VIF_TYPE_UNBOUND})))
        vmns = self.w.ns(name)
        hostns = self.hosts[host]["ns"]
        sh("ip", "-n", hostns, "link", "add", tap_name(port_id), "type", "veth", "peer", "name", "eth0",
           "netns", vmns)
        for cmd in (["link", "set", "eth0", "up"], ["addr", "add", ip + "/32", "dev", "eth0"],
                    ["route", "add", "169.254.1.1", "dev", "eth0"],
                    ["route", "add", "default", "via", "169.254.1.1", "dev", "eth0"]):
            sh("ip", "-n", vmns, *cmd)
        until("%s never routed on %s" % (name, host),
              lambda: "proto 77" in sh("ip", "-n", hostns, "route", "show", ip + "/32"))
        self.w.serve(vmns)
        self.ports[name] = (p, subnet)
        return vmns, ip

    def delete_vm(self, name):
        p, subnet = self.ports.pop(name)
        self.mech.delete_port_postcommit(BindContext(p))
        subnet.deallocate(netaddr.IPAddress(p["fixed_ips"][0]["ip_address"]))

    def publish(self, resource, event, **kw):
        registry.publish(resource, event, self, payload=events.DBEventPayload(None, **kw))


def cni(command, cid, ns, conf):
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": "/var/run/netns/" + ns,
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": "ROMANA_LABELS=app=web"}
    r = subprocess.run([CNI], input=json.dumps(conf), env=env, capture_output=True, text=True)
    assert r.returncode == 0, "%s %s: %s %s" % (command, cid, r.stdout, r.stderr)
    return json.loads(r.stdout) if r.stdout.strip() else None


def test_vm_and_pods_reach_each_other_under_isolation_and_security_groups(romanad, world):
    url, admin, creds = romanad
    w = world
    # Two hosts joined by a veth; an agent on each.
    h1, h2 = w.ns("h1"), w.ns("h2")
    sh("ip", "-n", h1, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", h2)
    for ns, ip in ((h1, "192.168.93.1"), (h2, "192.168.93.2")):
        sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
    hosts = {}
    for short, ns, ip in (("1", h1, "192.168.93.1"), ("2", h2, "192.168.93.2")):
        name, port = "hv%s-%s" % (short, w.prefix[-4:]), free_port()
        sock = w.tmp / ("agent%s.sock" % short)
        w.spawn([AGENT, "--host", name, "--host-ip", ip, "--netns", ns, "--interval-ms", "200",
                 "--listen", "127.0.0.1:%d" % port, "--socket", str(sock),
                 "--state-dir", str(w.tmp / ("state" + short)), "--credentials", creds["admin_file"]],
                "agent%s.log" % short)
        hosts[name] = {"ns": ns, "ip": ip, "port": port, "sock": str(sock)}
    for name, h in hosts.items():
        def up(name=name, h=h):
            try:
                return admin.host(name).get("agent_port") == h["port"] and os.path.exists(h["sock"])
            except rc.RomanaError:
                return False
        until("agent %s never came up: %s" % (name, (w.tmp / "agent1.log").read_text()), up)
    hv1, hv2 = list(hosts)
    cloud = Cloud(w, admin, creds, hosts)

    # Project A: a VM without security groups on hv1, pods through romana-cni on hv1 and hv2.
    proj_a, proj_b = uuid.uuid4().hex, uuid.uuid4().hex
    net_a, sub_a = cloud.network(proj_a)
    a1, a1_ip = cloud.vm("a1", hv1, proj_a, net_a, sub_a)
    pods = {}
    for short, host in (("p1", hv1), ("p2", hv2)):
        ns = w.ns(short)
        conf = {"cniVersion": "1.0.0", "name": "romana-os", "type": "romana-cni",
                "agent_socket": hosts[host]["sock"], "tenant": proj_a, "segment": net_a}
        res = cni("ADD", "c-" + short + w.prefix[-4:], ns, conf)
        ip = res["ips"][0]["address"].split("/")[0]
        assert netaddr.IPAddress(ip) in netaddr.IPNetwork(CIDR), res
        w.serve(ns)
        pods[short] = (ns, ip, conf)
    (p1, p1_ip, _), (p2, p2_ip, _) = pods["p1"], pods["p2"]
    until("the VM never reached the pod on another host", lambda: can(a1, "tcp", p2_ip, 80))
    for src, dst_ip, where in ((a1, p1_ip, "VM -> pod, same host"), (p1, a1_ip, "pod -> VM, same host"),
                               (a1, p2_ip, "VM -> pod, other host"), (p2, a1_ip, "pod -> VM, other host")):
        for proto in ("tcp", "udp"):
            assert can(src, proto, dst_ip, 80), "%s over %s" % (where, proto)
    # The VM is an endpoint of its project's tenant and its network's segment, as the pods are.
    eps = {e["ip"]: e for e in admin.call("GET", "/endpoints")}
    assert {(eps[i]["tenant"], eps[i]["segment"]) for i in (a1_ip, p1_ip, p2_ip)} == {(proj_a, net_a)}
    assert eps[a1_ip]["labels"] == {"romana.io/kind": "vm"}

    # Project B isolates per tenant: its VM refuses project A's VM and pods.
    net_b, sub_b = cloud.network(proj_b)
    admin.call("PUT", "/tenants/" + proj_b, {"name": proj_b, "external_id": proj_b, "isolation": "tenant"})
    b1, b1_ip = cloud.vm("b1", hv1, proj_b, net_b, sub_b)
    until("B's VM never reachable from its host", lambda: subprocess.run(
        ["ip", "netns", "exec", h1, "ping", "-c1", "-W1", b1_ip], capture_output=True).returncode == 0)
    until("another tenant's isolated VM stays reachable", lambda: not can(a1, "tcp", b1_ip, 80))
    for src in (a1, p1, p2):
        for proto in ("tcp", "udp"):
            assert not can(src, proto, b1_ip, 80), "%s -> B's VM over %s" % (src, proto)
    assert can(b1, "tcp", a1_ip, 80), "B's VM reaches A's (A is not isolated): the refusal was B's isolation"

    # A security group: egress anywhere, ingress TCP 22 from VM a1 only.
    sg_id = str(uuid.uuid4())
    rules = [
        {"id": str(uuid.uuid4()), "security_group_id": sg_id, "project_id": proj_a, "direction": "egress",
         "ethertype": "IPv4", "protocol": None, "port_range_min": None, "port_range_max": None,
         "remote_ip_prefix": None, "remote_group_id": None},
        {"id": str(uuid.uuid4()), "security_group_id": sg_id, "project_id": proj_a, "direction": "ingress",
         "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
         "remote_ip_prefix": a1_ip + "/32", "remote_group_id": None},
    ]
    cloud.groups[sg_id] = {"id": sg_id, "name": "ssh", "project_id": proj_a, "stateful": True,
                           "security_group_rules": list(rules)}
    cloud.publish(resources.SECURITY_GROUP, events.AFTER_CREATE, resource_id=sg_id, states=(cloud.groups[sg_id],))
    pol = admin.call("GET", "/networkpolicies/%s/sg-%s" % (proj_a, sg_id))
    assert pol["spec"]["podSelector"]["matchLabels"] == {"sg.romana.io/" + sg_id: "member"}
    s1, s1_ip = cloud.vm("s1", hv1, proj_a, net_a, sub_a, groups=[sg_id])
    assert admin.call("GET", "/endpoints/" + cloud.ports["s1"][0]["id"])["labels"] == {
        "romana.io/kind": "vm", "sg.romana.io/" + sg_id: "member"}
    until("TCP 22 from the allowed VM never passed", lambda: can(a1, "tcp", s1_ip, 22))
    for src, proto, port, what in ((a1, "tcp", 80, "another port"), (a1, "udp", 22, "another protocol"),
                                   (p1, "tcp", 22, "a pod on the same host"), (p2, "tcp", 22, "a pod elsewhere"),
                                   (b1, "tcp", 22, "another project's VM")):
        assert not can(src, proto, s1_ip, port), "%s reached the group's VM" % what
    assert can(a1, "tcp", s1_ip, 22), "still open to the allowed VM"
    assert can(s1, "tcp", p2_ip, 80), "the group's egress rule lets its VM out"
    # A rule from the group's own members (remote group), added in Neutron: a second member on
    # the other host reaches TCP 80, while a1 (not a member) still does not.
    peers = {"id": str(uuid.uuid4()), "security_group_id": sg_id, "project_id": proj_a, "direction": "ingress",
             "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80,
             "remote_ip_prefix": None, "remote_group_id": sg_id}
    cloud.groups[sg_id]["security_group_rules"].append(peers)
    cloud.publish(resources.SECURITY_GROUP_RULE, events.AFTER_CREATE, resource_id=peers["id"], states=(peers,))
    s2, s2_ip = cloud.vm("s2", hv2, proj_a, net_a, sub_a, groups=[sg_id])
    until("a member of the remote group never reached TCP 80", lambda: can(s2, "tcp", s1_ip, 80))
    assert not can(a1, "tcp", s1_ip, 80), "a VM outside the group reached TCP 80"
    assert not can(s2, "udp", s1_ip, 80), "the member reached UDP 80"
    # The rule is deleted in Neutron: the callback rewrites the group's policy, port 22 closes.
    cloud.groups[sg_id]["security_group_rules"] = [rules[0], peers]
    cloud.publish(resources.SECURITY_GROUP_RULE, events.AFTER_DELETE, resource_id=rules[1]["id"],
                  metadata={"security_group_id": sg_id})
    until("TCP 22 stays open after its rule was deleted", lambda: not can(a1, "tcp", s1_ip, 22))
    assert can(s1, "tcp", a1_ip, 80), "egress still open"
    # The control: the port leaves the group (a port update), its endpoint is relabelled and the
    # VM is open again, so what refused port 80 and the pods was the group's policy.
    p, _ = cloud.ports["s1"]
    cloud.mech.update_port_postcommit(BindContext(dict(p, security_groups=[]), p))
    assert admin.call("GET", "/endpoints/" + p["id"])["labels"] == {"romana.io/kind": "vm"}
    until("the VM stays closed after leaving its group", lambda: can(p1, "tcp", s1_ip, 80))
    assert can(a1, "udp", s1_ip, 22) and can(p2, "tcp", s1_ip, 22)

    # Everything goes: ports (agent told, addresses released), pods (CNI DEL), the group.
    ips = [a1_ip, b1_ip, s1_ip, s2_ip, p1_ip, p2_ip]
    for name in ("a1", "b1", "s1", "s2"):
        cloud.delete_vm(name)
    for short, (ns, _, conf) in pods.items():
        cni("DEL", "c-" + short + w.prefix[-4:], ns, conf)
    gone = cloud.groups.pop(sg_id)
    cloud.publish(resources.SECURITY_GROUP, events.AFTER_DELETE, resource_id=sg_id, states=(gone,))
    tenants = (proj_a, proj_b)
    assert [a for a in admin.call("GET", "/addresses") if a["tenant"] in tenants] == []
    assert [e for e in admin.call("GET", "/endpoints") if e["tenant"] in tenants] == []
    assert [p for p in admin.call("GET", "/networkpolicies") if p["metadata"]["namespace"] in tenants] == []
    for h in (h1, h2):
        for ip in ips:
            assert sh("ip", "-n", h, "route", "show", ip + "/32").strip() == "", "%s keeps a route to %s" % (h, ip)
        until("%s's firewall keeps a deleted endpoint" % h,
              lambda h=h: not any(ip in sh("ip", "netns", "exec", h, "nft", "list", "ruleset") for ip in ips))
