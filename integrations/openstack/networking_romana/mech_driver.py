"""The ML2 mechanism driver: binds ports on ``local``/``flat`` networks with ``vif_type`` tap and
tells the compute host's romana-agent about the VM over its ``/vm`` API (``POST /vm`` when the
port is bound, ``DELETE /vm/<mac>`` when it goes). The agent answers at once and routes the VM
when nova creates the tap. The host's address and agent port come from romanad's host record.
"""

from neutron_lib import constants as n_const
from neutron_lib.api.definitions import portbindings as pb
from neutron_lib.plugins.ml2 import api
from oslo_log import log

from networking_romana import client as rc
from networking_romana import config

LOG = log.getLogger(__name__)

SUPPORTED_NETWORK_TYPES = (n_const.TYPE_LOCAL, n_const.TYPE_FLAT)


def tap_name(port_id):
    """nova's name for a port's tap: ``tap`` + the first 11 characters of the port id."""
    return "tap" + port_id[:11]


def vm_body(port):
    """The agent's ``POST /vm`` body for a bound port, or None when there is nothing to plumb."""
    ips = port.get("fixed_ips") or []
    if not ips:
        return None
    return {"interface": tap_name(port["id"]), "mac": port["mac_address"], "ip": ips[0]["ip_address"]}


def needs_agent(port):
    """Only VM ports bound by us with an address; DHCP and router ports are not VMs."""
    return (port.get(pb.VIF_TYPE) == pb.VIF_TYPE_TAP
            and port.get(pb.HOST_ID)
            and not (port.get("device_owner") or "").startswith(n_const.DEVICE_OWNER_NETWORK_PREFIX)
            and vm_body(port) is not None)


class RomanaMechanismDriver(api.MechanismDriver):
    """Port binding for Romana: routed layer-3 taps, no overlays."""

    def __init__(self, romana=None, agent_http=None):
        self._romana = romana
        self._agent_http = agent_http or rc.agent_call
        self.vif_details = {pb.CAP_PORT_FILTER: False}

    def initialize(self):
        if self._romana is None:
            s = config.settings()
            self._romana = rc.Client(**s)
            self._agent_port = s["agent_port"]
        else:
            self._agent_port = getattr(self._romana, "agent_port", 9604)

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
            return
        if needs_agent(original) and original.get(pb.HOST_ID) != port.get(pb.HOST_ID):
            self._forget(original)
        ip, agent_port = self._agent(port[pb.HOST_ID])
        self._agent_http("POST", ip, agent_port, "/vm", vm_body(port))

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
