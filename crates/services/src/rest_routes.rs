//! The route table: every route romanad serves, with its service and what it takes and answers.
//! The OpenAPI document is generated from it (and the ToSchema types), and a test checks that
//! the router serves exactly these routes.

use romana_auth::Access;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem, PathsBuilder};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{ComponentsBuilder, Content, InfoBuilder, OpenApi, OpenApiBuilder, Ref};

#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub service: &'static str,
    /// Who may call it (checked by the auth middleware, and by handlers for tenant scopes).
    pub access: Access,
    pub summary: &'static str,
    /// Schema of the request body, if any.
    pub request: Option<&'static str>,
    /// Schema of the success body ("" for none), and its status.
    pub response: &'static str,
    pub status: u16,
}

#[allow(clippy::too_many_arguments)]
const fn r(
    method: &'static str,
    path: &'static str,
    service: &'static str,
    access: Access,
    summary: &'static str,
    request: Option<&'static str>,
    response: &'static str,
    status: u16,
) -> RouteSpec {
    RouteSpec { method, path, service, access, summary, request, response, status }
}

/// The rule of `method` on the route template `path`, if it is in the table.
pub fn route(method: &str, path: &str) -> Option<&'static RouteSpec> {
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}

pub const ROUTES: &[RouteSpec] = &[
    r(
        "GET",
        "/",
        "root",
        Access::Public,
        "Service index with live instances (1.x readable)",
        None,
        "RootIndex",
        200,
    ),
    r("GET", "/config/{service}", "root", Access::Service, "A service's configuration", None, "", 200),
    r(
        "PUT",
        "/config/{service}",
        "root",
        Access::Admin,
        "Set a service's configuration (a JSON object)",
        None,
        "",
        200,
    ),
    r("GET", "/tenants", "tenant", Access::TenantFiltered, "List tenants", None, "Tenant", 200),
    r(
        "POST",
        "/tenants",
        "tenant",
        Access::Service,
        "Create a tenant (numbered)",
        Some("TenantRequest"),
        "Tenant",
        201,
    ),
    r(
        "GET",
        "/tenants/{tenant}",
        "tenant",
        Access::TenantPath,
        "A tenant by name or external id",
        None,
        "Tenant",
        200,
    ),
    r(
        "PUT",
        "/tenants/{tenant}",
        "tenant",
        Access::Service,
        "Update a tenant's external id and labels",
        Some("TenantRequest"),
        "Tenant",
        200,
    ),
    r(
        "DELETE",
        "/tenants/{tenant}",
        "tenant",
        Access::Service,
        "Delete a tenant without addresses (its number is retired)",
        None,
        "",
        204,
    ),
    r(
        "GET",
        "/tenants/{tenant}/segments",
        "tenant",
        Access::TenantPath,
        "List a tenant's segments",
        None,
        "Segment",
        200,
    ),
    r(
        "POST",
        "/tenants/{tenant}/segments",
        "tenant",
        Access::TenantPath,
        "Add a segment (numbered)",
        Some("SegmentRequest"),
        "Segment",
        201,
    ),
    r(
        "GET",
        "/tenants/{tenant}/segments/{segment}",
        "tenant",
        Access::TenantPath,
        "A segment",
        None,
        "Segment",
        200,
    ),
    r(
        "DELETE",
        "/tenants/{tenant}/segments/{segment}",
        "tenant",
        Access::TenantPath,
        "Delete a segment without addresses",
        None,
        "",
        204,
    ),
    r("GET", "/networks", "topology", Access::Read, "Networks (2.0 shape)", None, "NetworkInfo", 200),
    r(
        "GET",
        "/networks/{network}/blocks",
        "topology",
        Access::Service,
        "Blocks of one network",
        None,
        "BlockList",
        200,
    ),
    r(
        "GET",
        "/topology",
        "topology",
        Access::Service,
        "The topology with carved group CIDRs and hosts",
        None,
        "",
        200,
    ),
    r(
        "POST",
        "/topology",
        "topology",
        Access::Admin,
        "Apply a topology as a merge",
        None,
        "TopologyChangeSummary",
        200,
    ),
    r("GET", "/hosts", "topology", Access::Service, "Hosts (2.0 shape)", None, "HostList", 200),
    r(
        "POST",
        "/hosts",
        "topology",
        Access::Service,
        "Add a host (least-loaded placement)",
        Some("HostRequest"),
        "Host",
        201,
    ),
    r("GET", "/hosts/{host}", "topology", Access::Service, "A host and its placements", None, "Host", 200),
    r(
        "DELETE",
        "/hosts/{host}",
        "topology",
        Access::Service,
        "Remove a host, releasing its addresses",
        None,
        "Address",
        200,
    ),
    r(
        "PUT",
        "/hosts/{host}/tags",
        "topology",
        Access::Service,
        "Replace a host's tags (must keep its groups)",
        Some("TagsRequest"),
        "Host",
        200,
    ),
    r(
        "GET",
        "/routes/{host}",
        "topology",
        Access::Service,
        "Route manager: the routes a host installs",
        None,
        "HostRoutesInfo",
        200,
    ),
    r(
        "PUT",
        "/hosts/{host}/alive",
        "topology",
        Access::Service,
        "An agent's heartbeat: the host stays alive while it renews",
        None,
        "",
        200,
    ),
    r("GET", "/liveness", "topology", Access::Service, "Monitored hosts and which are alive", None, "", 200),
    r(
        "GET",
        "/fabric",
        "topology",
        Access::Service,
        "Route manager: what each group announces and needs",
        None,
        "",
        200,
    ),
    r(
        "POST",
        "/address",
        "ipam",
        Access::TenantBody,
        "Allocate (2.0): answers the address as a JSON string",
        Some("AddressRequest"),
        "",
        200,
    ),
    r(
        "DELETE",
        "/address",
        "ipam",
        Access::TenantFiltered,
        "Release by ?addressName= (name or address) (2.0)",
        None,
        "Address",
        200,
    ),
    r(
        "GET",
        "/addresses",
        "ipam",
        Access::TenantFiltered,
        "Allocated addresses (?host= ?tenant= ?network=)",
        None,
        "Address",
        200,
    ),
    r(
        "POST",
        "/addresses",
        "ipam",
        Access::TenantBody,
        "Allocate (idempotent by name; ?RequestToken= for retried POSTs)",
        Some("AddressRequest"),
        "Address",
        201,
    ),
    r(
        "GET",
        "/addresses/{name}",
        "ipam",
        Access::TenantFiltered,
        "An allocation by name or address",
        None,
        "Address",
        200,
    ),
    r(
        "DELETE",
        "/addresses/{name}",
        "ipam",
        Access::TenantFiltered,
        "Release by name or address",
        None,
        "Address",
        200,
    ),
    r("GET", "/blocks", "ipam", Access::Service, "Blocks and their use (2.0 shape)", None, "BlockList", 200),
    r("GET", "/blackouts", "ipam", Access::Service, "Blacked-out ranges", None, "BlackoutRequest", 200),
    r("POST", "/blackouts", "ipam", Access::Admin, "Black out a range", Some("BlackoutRequest"), "", 201),
    r(
        "DELETE",
        "/blackouts",
        "ipam",
        Access::Admin,
        "Remove a blackout (?cidr=, exact match)",
        None,
        "",
        204,
    ),
    r("GET", "/policies", "policy", Access::TenantFiltered, "List policies", None, "Policy", 200),
    r(
        "POST",
        "/policies",
        "policy",
        Access::TenantBody,
        "Create a policy (validated; 422 lists every problem)",
        Some("Policy"),
        "Policy",
        201,
    ),
    r(
        "DELETE",
        "/policies",
        "policy",
        Access::TenantFiltered,
        "Delete a policy given {\"id\"} (2.0)",
        None,
        "Policy",
        200,
    ),
    r("GET", "/policies/{id}", "policy", Access::TenantFiltered, "A policy", None, "Policy", 200),
    r(
        "PUT",
        "/policies/{id}",
        "policy",
        Access::TenantBody,
        "Create or replace a policy",
        Some("Policy"),
        "Policy",
        200,
    ),
    r("DELETE", "/policies/{id}", "policy", Access::TenantFiltered, "Delete a policy", None, "Policy", 200),
    r(
        "GET",
        "/networkpolicies",
        "policy",
        Access::TenantFiltered,
        "Kubernetes NetworkPolicies (networking.k8s.io/v1)",
        None,
        "",
        200,
    ),
    r(
        "POST",
        "/networkpolicies",
        "policy",
        Access::TenantBody,
        "Create or replace a Kubernetes NetworkPolicy, JSON or YAML (Content-Type: application/yaml); 422 lists every problem",
        None,
        "",
        201,
    ),
    r(
        "GET",
        "/networkpolicies/{tenant}/{name}",
        "policy",
        Access::TenantPath,
        "A Kubernetes NetworkPolicy (tenant = namespace)",
        None,
        "",
        200,
    ),
    r(
        "DELETE",
        "/networkpolicies/{tenant}/{name}",
        "policy",
        Access::TenantPath,
        "Delete a Kubernetes NetworkPolicy",
        None,
        "",
        200,
    ),
    r(
        "GET",
        "/endpoints",
        "topology",
        Access::Service,
        "Endpoints with labels and named ports",
        None,
        "EndpointInfo",
        200,
    ),
    r("GET", "/endpoints/{name}", "topology", Access::Service, "An endpoint", None, "EndpointInfo", 200),
    r(
        "PUT",
        "/endpoints/{name}",
        "topology",
        Access::Service,
        "Create or replace an endpoint (its address must be IPAM's for that name)",
        Some("EndpointInfo"),
        "EndpointInfo",
        200,
    ),
    r(
        "DELETE",
        "/endpoints/{name}",
        "topology",
        Access::Service,
        "Delete an endpoint (absent is success)",
        None,
        "",
        204,
    ),
    r(
        "PUT",
        "/endpoints/{name}/labels",
        "topology",
        Access::Service,
        "Replace an endpoint's labels",
        Some("LabelsRequest"),
        "EndpointInfo",
        200,
    ),
    r(
        "POST",
        "/auth/login",
        "auth",
        Access::Public,
        "Log in: username and password for an access and a refresh token",
        Some("LoginRequest"),
        "TokenResponse",
        200,
    ),
    r(
        "POST",
        "/auth/refresh",
        "auth",
        Access::Public,
        "A new token pair for a refresh token",
        Some("RefreshRequest"),
        "TokenResponse",
        200,
    ),
    r("GET", "/auth/keys", "auth", Access::Public, "The keys that verify tokens (by key id)", None, "", 200),
    r(
        "POST",
        "/auth/keys/rotate",
        "auth",
        Access::Admin,
        "Start signing with a new key; old keys verify until their tokens expire",
        None,
        "",
        200,
    ),
    r("GET", "/auth/users", "auth", Access::Admin, "Users and service accounts", None, "User", 200),
    r(
        "POST",
        "/auth/users",
        "auth",
        Access::Admin,
        "Create a user or service account",
        Some("UserRequest"),
        "User",
        201,
    ),
    r("DELETE", "/auth/users/{user}", "auth", Access::Admin, "Delete a user", None, "", 204),
    r("GET", "/auth/whoami", "auth", Access::Authenticated, "Who the token belongs to", None, "User", 200),
    r(
        "GET",
        "/watch",
        "watch",
        Access::Service,
        "Stream of changes (NDJSON), resumable with ?from=",
        None,
        "WatchEvent",
        200,
    ),
    r("GET", "/healthz", "ops", Access::Public, "Liveness", None, "", 200),
    r("GET", "/readyz", "ops", Access::Public, "Readiness (the replica and the store serve)", None, "", 200),
    r("GET", "/metrics", "ops", Access::Public, "Prometheus metrics", None, "", 200),
    r("GET", "/openapi.json", "ops", Access::Public, "This document", None, "", 200),
];

fn method(m: &str) -> HttpMethod {
    match m {
        "GET" => HttpMethod::Get,
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "DELETE" => HttpMethod::Delete,
        other => unreachable!("route table uses only GET/POST/PUT/DELETE, not {other}"),
    }
}

/// The OpenAPI document of every route.
pub fn openapi() -> OpenApi {
    use romana_api::{policy, rest};
    let components = ComponentsBuilder::new()
        .schema_from::<rest::ErrorBody>()
        .schema_from::<rest::Link>()
        .schema_from::<rest::ServiceInstance>()
        .schema_from::<rest::ServiceEntry>()
        .schema_from::<rest::RootIndex>()
        .schema_from::<rest::TenantRequest>()
        .schema_from::<rest::Tenant>()
        .schema_from::<rest::SegmentRequest>()
        .schema_from::<rest::Segment>()
        .schema_from::<rest::HostRequest>()
        .schema_from::<rest::Placement>()
        .schema_from::<rest::Host>()
        .schema_from::<rest::HostList>()
        .schema_from::<rest::TagsRequest>()
        .schema_from::<rest::AddressRequest>()
        .schema_from::<rest::Address>()
        .schema_from::<rest::BlockInfo>()
        .schema_from::<rest::BlockList>()
        .schema_from::<rest::NetworkInfo>()
        .schema_from::<rest::BlackoutRequest>()
        .schema_from::<rest::TopologyChangeSummary>()
        .schema_from::<rest::RouteInfo>()
        .schema_from::<rest::HostRoutesInfo>()
        .schema_from::<rest::WatchEvent>()
        .schema_from::<rest::LoginRequest>()
        .schema_from::<rest::RefreshRequest>()
        .schema_from::<rest::TokenResponse>()
        .schema_from::<rest::UserRequest>()
        .schema_from::<rest::User>()
        .schema_from::<rest::EndpointInfo>()
        .schema_from::<rest::EndpointPort>()
        .schema_from::<rest::LabelsRequest>()
        .schema_from::<policy::PolicyPeer>()
        .schema_from::<policy::Rule>()
        .schema_from::<policy::RuleSet>()
        .schema_from::<policy::Policy>()
        .build();
    let mut paths = PathsBuilder::new();
    let mut by_path: std::collections::BTreeMap<&str, Vec<&RouteSpec>> = std::collections::BTreeMap::new();
    for route in ROUTES {
        by_path.entry(route.path).or_default().push(route);
    }
    for (path, routes) in by_path {
        let mut item: Option<PathItem> = None;
        for route in routes {
            let mut op = OperationBuilder::new()
                .tag(route.service)
                .summary(Some(route.summary))
                .description(Some(format!("Access: {:?}", route.access)))
                .operation_id(Some(format!(
                    "{}{}",
                    route.method.to_ascii_lowercase(),
                    route.path.replace(['/', '{', '}'], "_")
                )));
            if let Some(req) = route.request {
                op = op.request_body(Some(
                    RequestBodyBuilder::new()
                        .content("application/json", Content::new(Some(Ref::from_schema_name(req))))
                        .build(),
                ));
            }
            let mut ok = ResponseBuilder::new().description("success");
            if !route.response.is_empty() {
                ok =
                    ok.content("application/json", Content::new(Some(Ref::from_schema_name(route.response))));
            }
            let err = ResponseBuilder::new()
                .description(
                    "error (400 malformed, 404 unknown, 409 conflict, 422 invalid, 503 store unavailable)",
                )
                .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorBody"))));
            op = op.response(route.status.to_string(), ok.build()).response("default", err.build());
            item = Some(match item {
                None => PathItem::new(method(route.method), op.build()),
                Some(mut i) => {
                    match method(route.method) {
                        HttpMethod::Get => i.get = Some(op.build()),
                        HttpMethod::Post => i.post = Some(op.build()),
                        HttpMethod::Put => i.put = Some(op.build()),
                        _ => i.delete = Some(op.build()),
                    }
                    i
                }
            });
        }
        if let Some(i) = item {
            paths = paths.path(path, i);
        }
    }
    OpenApiBuilder::new()
        .info(InfoBuilder::new().title("romanad").version(env!("CARGO_PKG_VERSION")).build())
        .paths(paths.build())
        .components(Some(components))
        .build()
}
