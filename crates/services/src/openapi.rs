//! The OpenAPI document of romanad, generated from the route table (`table.rs`) and the API
//! types' schemas. Knows nothing of handlers.

use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem, PathsBuilder};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{ComponentsBuilder, Content, InfoBuilder, OpenApi, OpenApiBuilder, Ref};

use crate::rest_routes::{ROUTES, RouteSpec};

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
        .schema_from::<rest::RouteKind>()
        .schema_from::<rest::FabricGroup>()
        .schema_from::<rest::HostRoutesInfo>()
        .schema_from::<rest::RouteSetNotice>()
        .schema_from::<rest::WatchEvent>()
        .schema_from::<rest::WatchKind>()
        .schema_from::<rest::LoginRequest>()
        .schema_from::<rest::RefreshRequest>()
        .schema_from::<rest::TokenResponse>()
        .schema_from::<rest::UserRequest>()
        .schema_from::<rest::User>()
        .schema_from::<rest::EndpointInfo>()
        .schema_from::<rest::EndpointPort>()
        .schema_from::<rest::LabelsRequest>()
        .schema_from::<rest::PodInfo>()
        .schema_from::<romana_api::reach::ReachInfo>()
        .schema_from::<romana_api::reach::SelectingPolicy>()
        .schema_from::<romana_api::reach::ReachPeer>()
        .schema_from::<romana_api::vip::VipRequest>()
        .schema_from::<romana_api::vip::VipInfo>()
        .schema_from::<romana_api::vip::VipPort>()
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
