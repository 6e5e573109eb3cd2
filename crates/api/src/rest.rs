//! REST bodies of romanad, with Romana 2.0's field names where a 2.0 route exists.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The one error body every route returns (`status_code` and `details` as in Romana 1.x/2.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub status_code: u16,
    /// A stable machine-readable code: `bad_request`, `not_found`, `conflict`, `invalid`, ...
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Link {
    pub rel: String,
    pub href: String,
}

/// A live instance of a service, registered with a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceInstance {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub instance: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceEntry {
    pub name: String,
    /// 1.x style: `[{rel: "service", href}]`, one per live instance.
    pub links: Vec<Link>,
    pub instances: Vec<ServiceInstance>,
}

/// `GET /`: the service index, readable by a Romana 1.x client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RootIndex {
    #[serde(rename = "serviceName")]
    pub service_name: String,
    pub links: Vec<Link>,
    pub services: Vec<ServiceEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantRequest {
    pub name: String,
    /// OpenStack project id or Kubernetes namespace UID.
    #[serde(default)]
    pub external_id: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Default isolation of the tenant's endpoints: `none` (Kubernetes behaviour, the default),
    /// `tenant` (ingress only from the same tenant and the endpoint's own host) or `segment`
    /// (only from the same tenant and segment, and the own host). Policies open more.
    #[serde(default)]
    pub isolation: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub name: String,
    pub external_id: String,
    pub labels: BTreeMap<String, String>,
    /// Number used by the classic address layout; never reused.
    pub number: u32,
    pub segments: Vec<Segment>,
    /// `none`, `tenant` or `segment` (see `TenantRequest`).
    #[serde(default)]
    pub isolation: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentRequest {
    pub name: String,
    #[serde(default)]
    pub external_id: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Segment {
    pub name: String,
    pub tenant: String,
    pub external_id: String,
    pub labels: BTreeMap<String, String>,
    pub number: u32,
}

/// `POST /hosts` (Romana 2.0 fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostRequest {
    pub name: String,
    pub ip: String,
    /// The host's IPv6 underlay address beside its IPv4 `ip` (a dual-stack underlay): the next
    /// hop of other hosts' IPv6 routes to its blocks. Absent: IPv6 blocks on the host are
    /// unreachable from elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    #[serde(default)]
    pub agent_port: Option<u16>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Accepted for Romana 2.0 compatibility and ignored.
    #[serde(default)]
    pub k8s_info: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Placement {
    pub network: String,
    pub group: String,
    pub cidr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Host {
    pub name: String,
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    pub agent_port: u16,
    pub tags: BTreeMap<String, String>,
    /// `topology` (listed in the topology) or `dynamic` (added at run time).
    pub origin: String,
    pub placements: Vec<Placement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostList {
    pub hosts: Vec<Host>,
    pub revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagsRequest {
    pub tags: BTreeMap<String, String>,
}

/// `POST /address` (Romana 2.0) and `POST /addresses`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    pub name: String,
    pub host: String,
    #[serde(default)]
    pub tenant: String,
    #[serde(default)]
    pub segment: String,
    /// Pins this exact address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Address {
    pub name: String,
    pub ip: String,
    /// Route length of the endpoint (32 or 128; shorter with classic endpoint space).
    pub prefix_len: u8,
    pub network: String,
    pub block: String,
    pub host: String,
    pub tenant: String,
    pub segment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BlockInfo {
    pub network: String,
    pub cidr: String,
    pub tenant: String,
    pub segment: String,
    pub host: String,
    pub allocated_ip_count: u32,
    pub capacity: u32,
    pub revision: u32,
}

/// `GET /blocks` (Romana 2.0 shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BlockList {
    pub revision: i64,
    pub blocks: Vec<BlockInfo>,
}

/// `GET /networks` (Romana 2.0 `id` is the name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    pub cidr: String,
    pub block_mask: u8,
    pub tenants: Vec<String>,
    pub layout: String,
    pub blacked_out: Vec<String>,
    pub allocated: usize,
    pub revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlackoutRequest {
    pub cidr: String,
}

/// What a topology update kept and changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TopologyChangeSummary {
    pub kept_addresses: usize,
    pub kept_hosts: Vec<String>,
    pub dropped_hosts: Vec<String>,
    pub added_networks: Vec<String>,
    pub removed_networks: Vec<String>,
    pub dropped_blackouts: Vec<String>,
}

/// One route: a destination and how it is reached. On the wire the kind is a field beside the
/// destination: `{"dest": "10.0.0.0/28", "kind": "host", "via": "h1", "via_ip": "192.168.0.1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RouteInfo {
    pub dest: String,
    #[serde(flatten)]
    pub kind: RouteKind,
}

/// How a route's destination is reached (`kind` on the wire, with the fields of that kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RouteKind {
    /// Directly through a host of the same leaf group (one L2 segment): its name and address.
    Host {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        via: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        via_ip: String,
    },
    /// Through the fabric toward a prefix group (its path, e.g. `/rack-1`).
    Group {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        via: String,
    },
    /// Not routed by this table: the lookup goes on to the next (the default route, the fabric).
    Throw,
}

impl RouteKind {
    /// The `kind` as on the wire: `host`, `group` or `throw`.
    pub fn name(&self) -> &'static str {
        match self {
            RouteKind::Host { .. } => "host",
            RouteKind::Group { .. } => "group",
            RouteKind::Throw => "throw",
        }
    }

    /// The host's name or the group's path; empty for `throw`.
    pub fn via(&self) -> &str {
        match self {
            RouteKind::Host { via, .. } | RouteKind::Group { via } => via,
            RouteKind::Throw => "",
        }
    }
}

/// Compares with the wire's name (`route.kind == "throw"`).
impl PartialEq<&str> for RouteKind {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

/// `GET /routes/{host}`: what the route manager computes for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostRoutesInfo {
    pub host: String,
    pub revision: i64,
    pub routes: Vec<RouteInfo>,
    /// Routes a one-route-per-block scheme would install (they move with every address
    /// allocated; the stamp does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_block: Option<usize>,
    /// Routes a one-route-per-endpoint scheme would install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_endpoint: Option<usize>,
    /// The stamp of what this set was computed from (`RouteSetNotice::stamp`): equal to the last
    /// notice's, the replica that answered has the set announced; different, it is behind (or
    /// ahead, and a newer notice is on its way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<String>,
}

/// `routes/<host>` on the watch: the route manager's notice that the host's route set changed.
/// The set itself is `GET /routes/{host}`: publishing every set whole wrote every host's set
/// (300 KB each at 50,000 endpoints in a leaf of 100 hosts) to the store for every new block,
/// and pod starts waited behind those writes; a notice naming each set by a digest of its
/// routes cost the route manager every set of the leaf computed again per new block (80-100 ms
/// of CPU at that size, beside the pod starts), so it names the set by the stamp of its inputs
/// (issue 22).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RouteSetNotice {
    pub host: String,
    /// Lowercase hex (16 digits) of the 64-bit stamp of what the set is computed from: the
    /// blocks of the host's leaf groups with their owners (name, addresses, alive or not), or
    /// the hosts of its classic networks. Equal stamps mean equal sets; a stamp moves when the
    /// set's inputs do, mostly when the set does (a new block of the host's own that no other
    /// host's aggregate covered moves the stamp, not the routes: `GET /routes/{host}` with the
    /// `ETag` of the routes held answers 304 then). `GET /routes/{host}` answers the stamp of
    /// the set it serves, in the body and in the `Romana-Route-Stamp` header (a 304 too).
    pub stamp: String,
}

/// The header of `GET /routes/{host}`'s answer (200 and 304) naming the stamp of the set it was
/// computed from. A reader whose notice named another stamp was answered by a replica that had
/// not yet applied the change (or had applied a later one): it reads again, and does not keep a
/// stale set until the next notice.
pub const ROUTE_STAMP_HEADER: &str = "romana-route-stamp";

/// `GET /fabric`: one prefix group as the fabric sees it: its prefix, the aggregate it announces,
/// its hosts and the routes a router of the group needs. (Fields in this order: the JSON that
/// `json!` built before this type existed had them sorted, and clients see the same bytes.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FabricGroup {
    /// The prefix the group announces upward, if any.
    pub announce: Option<String>,
    pub cidr: String,
    /// The group's path, e.g. `/` or `/rack-1`.
    pub group: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub network: String,
    pub routes: Vec<RouteInfo>,
    /// VIPs: a /32 toward the host serving each (a leaf's route to the host, each ancestor's
    /// toward the child group holding it), for routers of a static fabric; with BGP the hosts
    /// announce them. Absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<RouteInfo>,
}

/// What a line of `GET /watch` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WatchKind {
    /// The key holds `value` from `revision` on.
    Put,
    /// The key was deleted at `revision`.
    Delete,
    /// The current state has been sent (opened from 0) or the stream is in place: resume from
    /// `revision` + 1.
    Synced,
    /// The stream failed (`value` says why) and ends.
    Error,
}

impl WatchKind {
    /// The name on the wire: `put`, `delete`, `synced` or `error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            WatchKind::Put => "put",
            WatchKind::Delete => "delete",
            WatchKind::Synced => "synced",
            WatchKind::Error => "error",
        }
    }
}

impl std::fmt::Display for WatchKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with the wire's name (`event.kind == "put"`).
impl PartialEq<&str> for WatchKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One line of `GET /watch`: a change to Romana's state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WatchEvent {
    pub revision: i64,
    pub kind: WatchKind,
    /// The key below the store prefix, e.g. `ipam/blocks/net1/10.0.0.0_29`.
    pub key: String,
    /// The value (any JSON) of a `put`, or the reason of an `error`.
    // Kept as the line carries it, checked but not parsed into a tree: a consumer decodes it
    // once, into its type (`Watched`); a stream's first listing is tens of thousands of lines,
    // and a tree per line then a type from the tree was most of an agent's start (issue 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub value: Option<Box<serde_json::value::RawValue>>,
}

impl WatchEvent {
    /// An event with a value given as a tree (tests, markers, values that are not JSON).
    pub fn with_value(
        revision: i64,
        kind: WatchKind,
        key: String,
        value: Option<&serde_json::Value>,
    ) -> Self {
        let value = value.map(|v| serde_json::value::to_raw_value(v).expect("a JSON tree serializes"));
        WatchEvent { revision, kind, key, value }
    }
}

/// Equal when the lines say the same: the values compared as JSON, not as text.
impl PartialEq for WatchEvent {
    fn eq(&self, other: &Self) -> bool {
        let tree = |v: &Option<Box<serde_json::value::RawValue>>| {
            v.as_ref().map(|v| serde_json::from_str::<serde_json::Value>(v.get()).ok())
        };
        (self.revision, &self.kind, &self.key) == (other.revision, &other.kind, &other.key)
            && tree(&self.value) == tree(&other.value)
    }
}

impl Eq for WatchEvent {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub token_type: String,
}

/// `POST /auth/users`. Roles: `admin`, `service`, `tenant` (with `tenants`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    pub name: String,
    pub password: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Hosts a `service` user is bound to: it becomes an agent of those hosts only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub name: String,
    pub roles: Vec<String>,
    pub tenants: Vec<String>,
    /// Hosts an agent is bound to (empty: not bound).
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// What romanad writes to `DATA_DIR/admin.credentials` (mode 0600) on first start.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub endpoint: String,
    pub username: String,
    pub password: String,
    /// PEM of the CA that signed romanad's certificate, when TLS is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// Never prints the password: a `{:?}` in a log line or a panic must not leak it.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .finish()
    }
}

/// An endpoint (pod or VM) as the policy dataplane sees it: its address, owner, place and the
/// labels and named ports that policies select. Agents write it on CNI ADD; orchestrator
/// controllers change its labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointInfo {
    /// The endpoint's IPAM address name (`cni:<network>:<container>:<ifname>` for pods).
    pub name: String,
    pub ip: String,
    pub tenant: String,
    #[serde(default)]
    pub segment: String,
    pub host: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Named ports (a pod's containerPorts), for policies that name ports.
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
    /// The Kubernetes pod this endpoint is (`namespace/name`), or empty. When set, romanad takes
    /// `labels` and `ports` from the pod's record (`PUT /pods/...`), which is the truth for
    /// them, at registration and on every later change of the record.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPort {
    pub name: String,
    /// TCP, UDP or SCTP.
    pub protocol: String,
    pub port: u16,
}

/// `PUT /endpoints/{name}/labels`: the endpoint's labels, replaced whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsRequest {
    pub labels: BTreeMap<String, String>,
}

/// `PUT /pods/{namespace}/{name}`: what the Kubernetes controller knows of a pod. CNI ADD of a
/// pod started by kubelet (`K8S_POD_NAMESPACE`, `K8S_POD_NAME` in `CNI_ARGS`) takes the
/// endpoint's segment, labels and named ports from this record, waiting for it (bounded) when
/// it is not there yet; a later `PUT` updates the labels and ports of the pod's registered
/// endpoint in the same store transaction. `DELETE` removes the record only: the endpoint and
/// its address go with CNI DEL (or the controller's reclaim of a lost node's pods).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PodInfo {
    /// The namespace, which is the tenant.
    pub namespace: String,
    pub name: String,
    /// `metadata.uid`: a pod deleted and created again under the same name is another pod.
    #[serde(default)]
    pub uid: String,
    /// `spec.nodeName`, the host; empty while the pod is not scheduled.
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The containers' named ports (`containerPorts` with a name).
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
    /// From the annotation `romana.io/segment`; empty is the tenant's default segment.
    #[serde(default)]
    pub segment: String,
}
