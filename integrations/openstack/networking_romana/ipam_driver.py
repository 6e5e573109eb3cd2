"""The Neutron IPAM driver: subnets are Romana's address space, and every port's address comes
from romanad's IPAM (tenant = project, segment = network, host = the port's ``binding:host_id``,
address name = the port id). Romana allocates per host, so a port needs its host when its address
is allocated (nova creates instance ports with ``binding:host_id`` set).

IPv6 subnets pass through like IPv4 ones: each subnet's allocation asks romanad for an address of
the subnet's family (``POST /addresses?family=``), so a dual-stack port (one fixed IP on an IPv4
and one on an IPv6 subnet) holds the names a dual-stack pod holds: the port id for IPv4 and
``<port id>#v6`` for IPv6 (an IPv6-only topology: the port id). A subnet whose family romanad's
topology has no network of (none overlapping the subnet) is refused when it is created, naming
the subnet; an allocation romanad refuses as unprocessable (422) names the subnet too.
"""

import netaddr
from neutron.ipam import driver as ipam_base
from neutron.ipam import exceptions as ipam_exc
from neutron.ipam import requests as ipam_req
from neutron.ipam import subnet_alloc
from neutron_lib import exceptions as n_exc
from neutron_lib.api.definitions import portbindings as pb
from oslo_log import log

from networking_romana import client as rc
from networking_romana import config

LOG = log.getLogger(__name__)


class AddressRefused(n_exc.BadRequest):
    """An address request Romana cannot serve (HTTP 400 to the API user)."""
    message = "Romana cannot allocate this address: %(reason)s"


class RomanaAddressRequest(ipam_req.AnyAddressRequest):
    """An address for one port, with what Romana allocates by."""

    def __init__(self, port_id, host, project_id, network_id, ip=None):
        super().__init__()
        self.port_id = port_id
        self.host = host
        self.project_id = project_id
        self.network_id = network_id
        self.ip = ip


class RomanaAddressRequestFactory(ipam_req.AddressRequestFactory):
    @classmethod
    def get_request(cls, context, port, ip_dict):
        ip = ip_dict.get("ip_address")
        if not port.get("id") or not port.get("network_id"):
            return super().get_request(context, port, ip_dict)
        return RomanaAddressRequest(port["id"], port.get(pb.HOST_ID) or "",
                                    port.get("project_id") or port.get("tenant_id") or "",
                                    port["network_id"], str(ip) if ip else None)


def _subnet_info(context, subnet_id):
    """(network id, project id, cidr, gateway ip, allocation pools) from Neutron's database."""
    from neutron.objects import subnet as subnet_obj  # a Neutron server has it; tests pass their own
    s = subnet_obj.Subnet.get_object(context, id=subnet_id)
    if s is None:
        raise ipam_exc.InvalidSubnetRequest(reason="no subnet %s" % subnet_id)
    pools = [netaddr.IPRange(p.start, p.end) for p in s.allocation_pools]
    return s.network_id, s.project_id, str(s.cidr), s.gateway_ip, pools


def check_family(romana, subnet_id, cidr):
    """Refuses a subnet no network of romanad's topology can serve: none of its family overlaps
    it (an IPv6 subnet on an IPv4-only topology, above all). The error names the subnet."""
    net = netaddr.IPNetwork(cidr)
    nets = romana.networks()
    if any(netaddr.IPNetwork(n["cidr"]).version == net.version
           and (netaddr.IPNetwork(n["cidr"]) in net or net in netaddr.IPNetwork(n["cidr"])) for n in nets):
        return
    have = ", ".join("%s (%s)" % (n["name"], n["cidr"]) for n in nets) or "none"
    raise ipam_exc.InvalidSubnetRequest(
        reason="subnet %s (%s) is IPv%d, but romanad's topology has no IPv%d network inside it "
               "(its networks: %s); add one to the topology first" % (subnet_id, cidr, net.version, net.version, have))


class RomanaSubnet(ipam_base.Subnet):
    """A Neutron subnet whose addresses romanad hands out."""

    def __init__(self, romana, subnet_id, network_id, project_id, cidr, gateway_ip=None, pools=None):
        self._romana = romana
        self._subnet_id = subnet_id
        self._network_id = network_id
        self._project_id = project_id
        self._cidr = cidr
        self._gateway_ip = gateway_ip
        self._pools = pools

    @property
    def _family(self):
        return "ipv%d" % netaddr.IPNetwork(self._cidr).version

    def allocate(self, address_request):
        if not isinstance(address_request, RomanaAddressRequest):
            raise AddressRefused(
                reason="Romana allocates addresses for ports only (got %s)" % type(address_request).__name__)
        r = address_request
        if not r.host:
            raise AddressRefused(
                reason="port %s has no binding:host_id: Romana allocates addresses per host" % r.port_id)
        project = r.project_id or self._project_id
        network = r.network_id or self._network_id
        self._romana.ensure_segment(project, network)
        try:
            rec = self._romana.allocate(r.port_id, r.host, project, network, r.ip, family=self._family)
        except rc.RomanaError as e:
            if e.status == 422:
                raise AddressRefused(reason="subnet %s (%s): %s" % (self._subnet_id, self._cidr, e.message))
            if e.status == 409 and r.ip:
                raise ipam_exc.IpAddressAlreadyAllocated(ip=r.ip, subnet_id=self._subnet_id)
            if e.status == 409:
                raise ipam_exc.IpAddressGenerationFailure(subnet_id=self._subnet_id)
            raise
        ip = netaddr.IPAddress(rec["ip"])
        if ip not in netaddr.IPNetwork(self._cidr):
            self._romana.release(rec["ip"])
            LOG.error("romanad gave %s, outside subnet %s: the subnet must cover Romana's network", ip, self._cidr)
            raise ipam_exc.InvalidIpForSubnet(ip=str(ip), subnet_id=self._subnet_id)
        return ip

    def deallocate(self, address):
        self._romana.release(str(address))

    def get_details(self):
        return ipam_req.SpecificSubnetRequest(self._project_id, self._subnet_id, self._cidr,
                                              self._gateway_ip, self._pools)


class RomanaPool(ipam_base.Pool):
    """``ipam_driver = romana``."""

    def __init__(self, subnetpool, context, romana=None, subnet_info=None):
        super().__init__(subnetpool, context)
        self._romana = romana or rc.Client(**config.settings())
        self._info = subnet_info or (lambda subnet_id: _subnet_info(self._context, subnet_id))
        # Subnets created through this pool object, before the database knows them.
        self._fresh = {}

    def get_address_request_factory(self):
        return RomanaAddressRequestFactory

    def allocate_subnet(self, request):
        if not isinstance(request, ipam_req.SpecificSubnetRequest):
            raise ipam_exc.InvalidSubnetRequest(
                reason="Romana needs the subnet's CIDR (its network's), not a subnet from a pool")
        check_family(self._romana, request.subnet_id, str(request.subnet_cidr))
        self._romana.ensure_tenant(request.project_id)
        s = RomanaSubnet(self._romana, request.subnet_id, None, request.project_id,
                         str(request.subnet_cidr), request.gateway_ip, request.allocation_pools)
        self._fresh[request.subnet_id] = s
        return s

    def get_subnet(self, subnet_id):
        if subnet_id in self._fresh:  # created by this pool object; the port names the network
            return self._fresh[subnet_id]
        network_id, project_id, cidr, gateway_ip, pools = self._info(subnet_id)
        return RomanaSubnet(self._romana, subnet_id, network_id, project_id, cidr, gateway_ip, pools)

    def update_subnet(self, request):
        return RomanaSubnet(self._romana, request.subnet_id, None, request.project_id,
                            str(request.subnet_cidr), request.gateway_ip, request.allocation_pools)

    def remove_subnet(self, subnet_id):
        # Addresses go with their ports; Romana's network outlives a Neutron subnet.
        self._fresh.pop(subnet_id, None)

    def get_allocator(self, subnet_ids):
        return subnet_alloc.IpamSubnetGroup(self, subnet_ids)
