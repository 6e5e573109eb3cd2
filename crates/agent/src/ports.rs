//! The ports the agent's adapters implement: the kernel's routes and links, nftables, the fast
//! path's map, and romanad. The core never calls them; the runners in `drive` do, so that a test
//! drives them with fakes and no root. Knows nothing about how the real ones work.

use std::collections::BTreeSet;
use std::net::IpAddr;

use romana_api::rest::{Address, AddressRequest, EndpointInfo, HostRoutesInfo, PodInfo, Tenant};
use romana_client::ClientError;
use romana_dataplane::{HostState, LinkName, Plan};
use romana_host::nft::NftError;
use romana_host::{Attachment, EndpointError, EndpointSpec};
use romana_policy::nftplan::{NftPlan, Observed};
use romana_store::BoxFut;

use crate::error::FirewallError;
use crate::machine::cni::EnforceFailure;
use crate::machine::inputs::Lists;

/// The host's links, addresses and routes (netlink, in the host's namespace).
pub trait KernelRoutes {
    type Error: std::error::Error + Send + Sync + 'static;
    fn observe(&mut self) -> BoxFut<'_, Result<HostState, Self::Error>>;
    fn apply<'a>(&'a mut self, plan: &'a Plan) -> BoxFut<'a, Result<(), Self::Error>>;
}

/// nftables in the host's namespace: our table, transactions, the generation id.
pub trait Nftables {
    fn generation(&self) -> Result<u32, NftError>;
    /// Our table (`None`: there is none); `background`: at the lowest CPU priority.
    fn list(&self, background: bool) -> Result<Option<Observed>, FirewallError>;
    fn apply(&self, script: &str) -> Result<(), NftError>;
    /// Applies a plan: its script, or, when it changes set elements only, those (the real one
    /// sends them over netlink, without nft's copy of the table).
    fn apply_plan(&self, plan: &NftPlan) -> Result<(), NftError> {
        self.apply(&plan.script)
    }
    /// Whether transactions go through libnftables (`None`: none ran yet).
    fn uses_library(&self) -> Option<bool>;
}

/// The fast path's set of endpoints that may skip the forward hook.
pub trait FastPathMap {
    fn narrow(&self, allowed: &BTreeSet<IpAddr>) -> Result<usize, romana_host::BpfError>;
    fn allow(&self, allowed: BTreeSet<IpAddr>) -> Result<usize, romana_host::BpfError>;
}

/// What the agent's loops ask romanad.
pub trait Romanad: Sync {
    fn heartbeat<'a>(&'a self, host: &'a str) -> BoxFut<'a, Result<(), ClientError>>;
    fn routes<'a>(&'a self, host: &'a str) -> BoxFut<'a, Result<HostRoutesInfo, ClientError>>;
    /// Tenants, policies, NetworkPolicies and, with `endpoints`, every endpoint.
    fn lists(&self, endpoints: bool) -> BoxFut<'_, Result<Lists, ClientError>>;
    fn tenants(&self) -> BoxFut<'_, Result<Vec<Tenant>, ClientError>>;
    /// CNI ADD and DEL: a pod's record, addresses, endpoint records.
    fn pod<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFut<'a, Result<PodInfo, ClientError>>;
    /// One address of each family the host draws from for the tenant, both or none
    /// (`POST /address-stacks`), IPv4 first.
    fn allocate_stack<'a>(&'a self, req: &'a AddressRequest)
    -> BoxFut<'a, Result<Vec<Address>, ClientError>>;
    fn release<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<Address, ClientError>>;
    fn endpoint<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<EndpointInfo, ClientError>>;
    fn put_endpoint<'a>(&'a self, e: &'a EndpointInfo) -> BoxFut<'a, Result<EndpointInfo, ClientError>>;
    /// Every record of endpoint `name` (`<name>`, `<name>#v6`) in one transaction, all or none
    /// (`PUT /endpoint-stacks/{name}`).
    fn put_endpoint_stack<'a>(
        &'a self,
        name: &'a str,
        records: &'a [EndpointInfo],
    ) -> BoxFut<'a, Result<Vec<EndpointInfo>, ClientError>>;
    /// One that is already gone counts as deleted.
    fn delete_endpoint<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<(), ClientError>>;
}

/// The CNI path's kernel side: a pod's veth, address and routes (`romana_host::attach`).
pub trait Plumbing: Sync {
    fn attach<'a>(&'a self, spec: &'a EndpointSpec) -> BoxFut<'a, Result<Attachment, EndpointError>>;
    /// `true`: a link was removed (none is success too).
    fn detach<'a>(&'a self, link: &'a LinkName) -> BoxFut<'a, Result<bool, EndpointError>>;
}

/// The firewall as the CNI path needs it.
pub trait Enforcer: Sync {
    /// Puts an endpoint's registered records (one per address) under their policies in the
    /// kernel before it is plumbed, in one pass when it can.
    fn enforce<'a>(&'a self, infos: &'a [EndpointInfo]) -> BoxFut<'a, Result<(), EnforceFailure>>;
    /// Takes an endpoint out of the table (best effort: failures are logged).
    fn forget<'a>(&'a self, name: &'a str) -> BoxFut<'a, ()>;
}

impl Romanad for romana_client::Client {
    fn heartbeat<'a>(&'a self, host: &'a str) -> BoxFut<'a, Result<(), ClientError>> {
        Box::pin(romana_client::Client::heartbeat(self, host))
    }
    fn routes<'a>(&'a self, host: &'a str) -> BoxFut<'a, Result<HostRoutesInfo, ClientError>> {
        Box::pin(romana_client::Client::routes(self, host))
    }
    fn lists(&self, endpoints: bool) -> BoxFut<'_, Result<Lists, ClientError>> {
        Box::pin(async move {
            let (tenants, policies, netpols) =
                tokio::try_join!(romana_client::Client::tenants(self), self.policies(), self.netpols())?;
            let endpoints = if endpoints { Some(self.endpoint_list().await?) } else { None };
            Ok(Lists { tenants, policies, netpols, endpoints })
        })
    }
    fn tenants(&self) -> BoxFut<'_, Result<Vec<Tenant>, ClientError>> {
        Box::pin(romana_client::Client::tenants(self))
    }
    fn pod<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFut<'a, Result<PodInfo, ClientError>> {
        Box::pin(romana_client::Client::pod(self, namespace, name))
    }
    fn allocate_stack<'a>(
        &'a self,
        req: &'a AddressRequest,
    ) -> BoxFut<'a, Result<Vec<Address>, ClientError>> {
        Box::pin(romana_client::Client::allocate_stack(self, req))
    }
    fn release<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<Address, ClientError>> {
        Box::pin(romana_client::Client::release(self, name))
    }
    fn endpoint<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<EndpointInfo, ClientError>> {
        Box::pin(romana_client::Client::endpoint(self, name))
    }
    fn put_endpoint<'a>(&'a self, e: &'a EndpointInfo) -> BoxFut<'a, Result<EndpointInfo, ClientError>> {
        Box::pin(romana_client::Client::put_endpoint(self, e))
    }
    fn put_endpoint_stack<'a>(
        &'a self,
        name: &'a str,
        records: &'a [EndpointInfo],
    ) -> BoxFut<'a, Result<Vec<EndpointInfo>, ClientError>> {
        Box::pin(romana_client::Client::put_endpoint_stack(self, name, records))
    }
    fn delete_endpoint<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<(), ClientError>> {
        Box::pin(romana_client::Client::delete_endpoint(self, name))
    }
}
