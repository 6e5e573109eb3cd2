"""The ML2 mechanism driver: binds ports on ``local``/``flat`` networks with ``vif_type`` tap and
tells the compute host's romana-agent about the VM over its ``/vm`` API (``POST /vm`` when the
port is bound, ``DELETE /vm/<mac>`` when it goes). The agent answers at once and routes the VM
when nova creates the tap. The host's address and agent port come from romanad's host record.

Security groups (``secgroups.py`` translates them): when a port binds, the driver writes the
policies of its groups and registers the port's endpoint with one label per group *before* it
tells the agent, so the VM's first packet already meets its rules (as a pod's CNI ADD does);
a change of the port's groups relabels the endpoint. Group and rule changes arrive through
Neutron's callbacks registry (created, updated, deleted groups; created and deleted rules):
each rewrites the whole group's policy from the group as Neutron then holds it.
``resync_security_groups`` converges everything from the whole picture (all groups against all
``sg-`` policies romanad holds); it runs when Neutron's server has started (``process``
``after_init``).
"""

import netaddr
from neutron_lib import constants as n_const
from neutron_lib.api.definitions import portbindings as pb
from neutron_lib.callbacks import events
from neutron_lib.callbacks import registry
from neutron_lib.callbacks import resources
from neutron_lib.plugins import directory
from neutron_lib.plugins.ml2 import api
from oslo_log import log

from networking_romana import client as rc
from networking_romana import config
from networking_romana import secgroups

LOG = log.getLogger(__name__)

SUPPORTED_NETWORK_TYPES = (n_const.TYPE_LOCAL, n_const.TYPE_FLAT)


def tap_name(port_id):
    """nova's name for a port's tap: ``tap`` + the first 11 characters of the port id."""
    return "tap" + port_id[:11]


def port_ips(port):
    """The port's fixed IPs, IPv4 first (the agent's ``ip`` is the first: what older agents know)."""
    ips = [f["ip_address"] for f in port.get("fixed_ips") or []]
    return sorted(ips, key=lambda ip: netaddr.IPAddress(ip).version)


def vm_body(port):
    """The agent's ``POST /vm`` body for a bound port, or None when there is nothing to plumb. A
    port with addresses of both families sends them all in ``ips`` (one per family)."""
    ips = port_ips(port)
    if not ips:
        return None
    body = {"interface": tap_name(port["id"]), "mac": port["mac_address"], "ip": ips[0]}
    if len(ips) > 1:
        body["ips"] = ips
    return body


def needs_agent(port):
    """Only VM ports bound by us with an address; DHCP and router ports are not VMs."""
    return (port.get(pb.VIF_TYPE) == pb.VIF_TYPE_TAP
            and port.get(pb.HOST_ID)
            and not (port.get("device_owner") or "").startswith(n_const.DEVICE_OWNER_NETWORK_PREFIX)
            and vm_body(port) is not None)


def _neutron_group(context, sg_id):
    """A security group with its rules, as Neutron's plugin holds it now (None when gone)."""
    from neutron.extensions import securitygroup as ext_sg  # a Neutron server has it
    try:
        return directory.get_plugin().get_security_group(context, sg_id)
    except ext_sg.SecurityGroupNotFound:
        return None


def _neutron_groups(context):
    return directory.get_plugin().get_security_groups(context)


V6_SUFFIX = "#v6"


def endpoint_names(port):
    """Every endpoint name a port's addresses may be registered under: the port id, and
    ``<port id>#v6`` when it has an IPv6 address (deletes need no lookup: the addresses may be
    released already)."""
    names = [port["id"]]
    if any(netaddr.IPAddress(ip).version == 6 for ip in port_ips(port)):
        names.append(port["id"] + V6_SUFFIX)
    return names


def endpoint_records(port, lookup):
    """The endpoint records of a bound VM port, one per address, as the IPAM driver allocated them
    (tenant = project, segment = network, host = binding host). The IPv4 address is the port id's;
    an IPv6 one is named by romanad (``lookup(ip)``: the port id on an IPv6-only topology, else
    ``<port id>#v6``)."""
    out = []
    for ip in port_ips(port):
        name = port["id"]
        if netaddr.IPAddress(ip).version == 6:
            rec = lookup(ip)
            name = rec["name"] if rec else port["id"] + V6_SUFFIX
        out.append({"name": name, "ip": ip, "tenant": port.get("project_id") or port.get("tenant_id"),
                    "segment": port["network_id"], "host": port[pb.HOST_ID],
                    "labels": secgroups.endpoint_labels(port)})
    return out


class RomanaMechanismDriver(api.MechanismDriver):
    """Port binding for Romana: routed layer-3 taps, no overlays."""

    def __init__(self, romana=None, agent_http=None, get_group=None, get_groups=None, admin_context=None):
        self._romana = romana
        self._admin_context = admin_context
        self._agent_http = agent_http or rc.agent_call
        self._get_group = get_group or _neutron_group
        self._get_groups = get_groups or _neutron_groups
        # Romana enforces the security groups itself (nftables on the host, from policies).
        self.vif_details = {pb.CAP_PORT_FILTER: True}

    def initialize(self):
        if self._romana is None:
            s = config.settings()
            self._romana = rc.Client(**s)
            self._agent_port = s["agent_port"]
        else:
            self._agent_port = getattr(self._romana, "agent_port", 9604)
        for ev in (events.AFTER_CREATE, events.AFTER_UPDATE):
            registry.subscribe(self.security_group_changed, resources.SECURITY_GROUP, ev)
        registry.subscribe(self.security_group_deleted, resources.SECURITY_GROUP, events.AFTER_DELETE)
        for ev in (events.AFTER_CREATE, events.AFTER_DELETE):
            registry.subscribe(self.security_group_rule_changed, resources.SECURITY_GROUP_RULE, ev)
        registry.subscribe(self.started, resources.PROCESS, events.AFTER_INIT)

    def started(self, resource, event, trigger, payload=None):
        """Neutron's server is up: converge every group's policy once (what changed while this
        server was down, or while romanad was unreachable). A failure is logged, never fatal."""
        from neutron_lib import context as n_context
        try:
            ctx = (self._admin_context or n_context.get_admin_context)()
            written, deleted = self.resync_security_groups(ctx)
            LOG.info("romana: security groups resynced: %d policies written, %d deleted", written, deleted)
        except Exception:  # romanad away: the next group or port event writes its policy again
            LOG.exception("romana: resyncing security groups failed")

    # -- security groups ------------------------------------------------------------------------
    def _apply_group(self, sg):
        policy, skipped = secgroups.translate(sg)
        for rule, why in skipped:
            LOG.warning("romana: security group %s rule %s is not enforced as written: %s", sg["id"], rule, why)
        self._romana.apply_policy(policy)

    def _converge_group(self, context, sg_id, project_id=None):
        """One group's policy from the group as Neutron holds it now (deleted when it is gone)."""
        sg = self._get_group(context, sg_id)
        if sg is not None:
            self._apply_group(sg)
        elif project_id:
            self._romana.delete_policy(project_id, secgroups.policy_name(sg_id))

    def security_group_changed(self, resource, event, trigger, payload):
        self._apply_group(payload.latest_state)

    def security_group_deleted(self, resource, event, trigger, payload):
        sg = payload.states[0] if payload.states else {}
        project = sg.get("project_id") or sg.get("tenant_id")
        if project:
            self._romana.delete_policy(project, secgroups.policy_name(payload.resource_id))

    def security_group_rule_changed(self, resource, event, trigger, payload):
        rule = payload.latest_state if payload.states else None
        sg_id = (rule or {}).get("security_group_id") or (payload.metadata or {}).get("security_group_id")
        if sg_id:
            self._converge_group(payload.context, sg_id, (rule or {}).get("project_id"))

    def resync_security_groups(self, context):
        """Every group's policy written, every ``sg-`` policy without a group deleted."""
        writes, deletes, skipped = secgroups.plan(self._get_groups(context), self._romana.policies(),
                                                  self._romana.kubernetes_tenants())
        for g, r, why in skipped:
            LOG.warning("romana: security group %s rule %s is not enforced as written: %s", g, r, why)
        for p in writes:
            self._romana.apply_policy(p)
        for ns, name in deletes:
            self._romana.delete_policy(ns, name)
        return len(writes), len(deletes)

    @property
    def connectivity(self):
        return pb.CONNECTIVITY_L3

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            if segment[api.NETWORK_TYPE] in SUPPORTED_NETWORK_TYPES:
                context.set_binding(segment[api.ID], pb.VIF_TYPE_TAP, self.vif_details,
                                    status=n_const.PORT_STATUS_ACTIVE)
                LOG.debug("romana: bound port %s on segment %s", context.current["id"], segment[api.ID])
                return
        LOG.debug("romana: no %s segment to bind port %s", SUPPORTED_NETWORK_TYPES, context.current["id"])

    def _agent(self, host):
        rec = self._romana.host(host)
        return rec["ip"], rec.get("agent_port") or self._agent_port

    def update_port_postcommit(self, context):
        port, original = context.current, context.original or {}
        if not needs_agent(port):
            return
        # Told once per binding: when the port becomes bound, moves host, or changes address.
        if (needs_agent(original) and original.get(pb.HOST_ID) == port.get(pb.HOST_ID)
                and vm_body(original) == vm_body(port)):
            labels = secgroups.endpoint_labels(port)
            if labels != secgroups.endpoint_labels(original):
                self._port_groups(context, port)
                for rec in self._records(port):
                    if not self._romana.set_labels(rec["name"], labels):
                        self._romana.put_endpoint(rec)
            return
        if needs_agent(original) and original.get(pb.HOST_ID) != port.get(pb.HOST_ID):
            self._forget(original)
        # Policies and labels first: the agent routes the VM only after they are in romanad.
        self._port_groups(context, port)
        for rec in self._records(port):
            self._romana.put_endpoint(rec)
        ip, agent_port = self._agent(port[pb.HOST_ID])
        self._agent_http("POST", ip, agent_port, "/vm", vm_body(port))

    def _records(self, port):
        return endpoint_records(port, self._romana.address)

    def _port_groups(self, context, port):
        """The policies of the port's groups, written from the groups as Neutron holds them."""
        plugin_context = getattr(context, "_plugin_context", None)
        for sg_id in port.get("security_groups") or []:
            self._converge_group(plugin_context, sg_id)

    def _forget(self, port):
        ip, agent_port = self._agent(port[pb.HOST_ID])
        try:
            self._agent_http("DELETE", ip, agent_port, "/vm/%s" % port["mac_address"])
        except rc.RomanaError as e:
            if e.status != 404:
                raise

    def delete_port_postcommit(self, context):
        if needs_agent(context.current):
            self._forget(context.current)
            for name in endpoint_names(context.current):
                self._romana.delete_endpoint(name)
