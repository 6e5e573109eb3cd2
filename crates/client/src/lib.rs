//! `Client`: romanad's REST API as typed calls. Several endpoints may be given; a call that cannot
//! reach one, or that one answers with 503, tries the next, and the one that answered is tried
//! first next time.

use std::sync::atomic::{AtomicUsize, Ordering};

use rustls_pki_types::pem::PemObject;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use romana_api::netpol::NetworkPolicy;
use romana_api::policy::Policy;
use romana_api::rest::{
    Address, AddressRequest, BlackoutRequest, BlockList, Credentials, EndpointInfo, ErrorBody, FabricGroup,
    Host, HostList, HostRequest, HostRoutesInfo, LabelsRequest, LoginRequest, NetworkInfo, PodInfo,
    RootIndex, Segment, SegmentRequest, TagsRequest, Tenant, TenantRequest, TokenResponse,
    TopologyChangeSummary, User, UserRequest, WatchEvent,
};
use romana_api::topology::TopologyRequest;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// romanad answered with an error body.
    #[error("{} ({}){}", .body.message, .status, if .body.details.is_empty() { String::new() } else { format!(": {}", .body.details.join("; ")) })]
    Api { status: u16, body: ErrorBody },
    #[error("cannot reach romanad at {endpoints}: {detail}")]
    Unreachable { endpoints: String, detail: String },
    #[error("unexpected answer from {url}: {detail}")]
    Decode { url: String, detail: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// `Client::routes_json_if_changed`'s answer: the set's JSON and `ETag` unless the routes held
/// are current (`None`: 304), and the stamp of the set the answering replica computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutesAnswer {
    pub changed: Option<(Vec<u8>, Option<String>)>,
    pub stamp: Option<String>,
}

pub struct Client {
    endpoints: Vec<String>,
    http: reqwest::Client,
    current: AtomicUsize,
    token: std::sync::RwLock<Option<String>>,
    /// The refresh token of the last login or refresh: `renew` uses it before logging in again.
    refresh_token: std::sync::RwLock<Option<String>>,
}

impl std::fmt::Debug for Client {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("endpoints", &self.endpoints).finish_non_exhaustive()
    }
}

/// TLS settings of a client: the CA that signed romanad's certificate, and an optional client
/// certificate (PEM).
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca_pem: Option<String>,
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<String>,
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The endpoints of a comma-separated list (`ROMANA_ENDPOINT=a,b,c`, a credentials file's
/// `endpoint`), blanks dropped.
pub fn endpoint_list(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Whether a failed call may succeed later unchanged: romanad could not be reached or could not
/// serve (5xx). A 4xx is a refusal that repeating will not change, and so is a server
/// certificate our CA does not vouch for (or not for the name asked): a configuration error,
/// not an outage, which a daemon retrying forever would only hide.
pub fn worth_retrying(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { detail, .. } => !untrusted_certificate(detail),
        ClientError::Api { status, .. } => *status >= 500,
        ClientError::Decode { .. } => false,
    }
}

/// Whether an unreachable-romanad detail is rustls refusing the server's certificate. reqwest
/// reports a handshake failure as a connect error and std's `io::Error` hides the rustls error
/// from `source()`, so its text (rustls's own `Display`, "invalid peer certificate: ...") is
/// what can be matched.
fn untrusted_certificate(detail: &str) -> bool {
    detail.contains("invalid peer certificate")
}

impl Client {
    pub fn new(endpoints: Vec<String>) -> Client {
        Client::with_tls(endpoints, None).expect("a plain HTTP client builds")
    }

    /// A client that trusts `tls.ca_pem` (only) for https endpoints.
    pub fn with_tls(endpoints: Vec<String>, tls: Option<&Tls>) -> Result<Client> {
        ensure_crypto();
        let endpoints = endpoints.into_iter().map(|e| e.trim_end_matches('/').to_owned()).collect();
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64);
        if let Some(tls) = tls {
            b = b.use_preconfigured_tls(tls_config(tls)?);
        }
        let http = b
            .build()
            .map_err(|e| ClientError::Unreachable { endpoints: "tls".into(), detail: e.to_string() })?;
        Ok(Client {
            endpoints,
            http,
            current: AtomicUsize::new(0),
            token: std::sync::RwLock::new(None),
            refresh_token: std::sync::RwLock::new(None),
        })
    }

    /// Uses `token` as the bearer token from now on.
    pub fn set_token(&self, token: Option<String>) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = token;
    }

    pub fn token(&self) -> Option<String> {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Logs in and keeps the access token.
    pub async fn login(&self, username: &str, password: &str) -> Result<TokenResponse> {
        let req = LoginRequest { username: username.into(), password: password.into() };
        let t: TokenResponse = self.call(Method::POST, "/auth/login", Self::body(&req)).await?;
        self.keep(&t);
        Ok(t)
    }

    /// Exchanges a refresh token for a new access token, and keeps it.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenResponse> {
        let req = romana_api::rest::RefreshRequest { refresh_token: refresh_token.into() };
        let t: TokenResponse = self.call(Method::POST, "/auth/refresh", Self::body(&req)).await?;
        self.keep(&t);
        Ok(t)
    }

    fn keep(&self, t: &TokenResponse) {
        self.set_token(Some(t.access_token.clone()));
        *self.refresh_token.write().unwrap_or_else(|p| p.into_inner()) = Some(t.refresh_token.clone());
    }

    /// A new access token after the last one expired: with the kept refresh token first, and a
    /// login only when there is none or romanad refuses it (401/400: expired, revoked, a key
    /// rotated away). Logging in again on every expiry would make a long-running client (the
    /// agent) fail whenever its user is locked by someone guessing its password elsewhere.
    pub async fn renew(&self, username: &str, password: &str) -> Result<TokenResponse> {
        let kept = self.refresh_token.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(r) = kept {
            match self.refresh(&r).await {
                Ok(t) => return Ok(t),
                Err(e) if matches!(e.status(), Some(400 | 401)) => {}
                Err(e) => return Err(e),
            }
        }
        self.login(username, password).await
    }

    /// A client for the credentials romanad wrote on first start (endpoint, admin login, CA).
    /// The endpoint may be a list (`http://a:9600,http://b:9600`): every replica, failed over.
    pub async fn from_credentials(creds: &Credentials) -> Result<Client> {
        let tls = creds.ca.as_ref().map(|ca| Tls { ca_pem: Some(ca.clone()), ..Tls::default() });
        let c = Client::with_tls(endpoint_list(&creds.endpoint), tls.as_ref())?;
        c.login(&creds.username, &creds.password).await?;
        Ok(c)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Sends a request, failing over between endpoints when one cannot be reached.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<reqwest::Response> {
        self.send_with(method, path, body, None, None).await
    }

    /// `send` with this request's own total timeout (the client's is 30 s, from connecting to
    /// the end of the body: a watch stream needs longer).
    async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Option<Duration>,
        if_none_match: Option<&str>,
    ) -> Result<reqwest::Response> {
        let n = self.endpoints.len().max(1);
        let start = self.current.load(Ordering::Relaxed);
        let mut last = String::from("no endpoints configured");
        let mut unavailable: Option<reqwest::Response> = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let Some(base) = self.endpoints.get(idx) else { break };
            let mut req = self.http.request(method.clone(), format!("{base}{path}"));
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            if let Some(t) = self.token.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
                req = req.bearer_auth(t);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            if let Some(tag) = if_none_match {
                req = req.header(reqwest::header::IF_NONE_MATCH, tag);
            }
            match req.send().await {
                // romanad's 503 means "nothing was changed, try again" (its store or IPAM replica
                // cannot serve now): another replica may. The last 503 is answered if none can.
                Ok(resp) if resp.status().as_u16() == 503 && i + 1 < n => {
                    last = format!("{base}: answered 503");
                    unavailable = Some(resp);
                }
                Ok(resp) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok(resp);
                }
                Err(e) if e.is_connect() || e.is_timeout() => last = format!("{base}: {}", with_causes(&e)),
                Err(e) => {
                    return Err(ClientError::Unreachable {
                        endpoints: base.clone(),
                        detail: with_causes(&e),
                    });
                }
            }
        }
        if let Some(resp) = unavailable {
            return Ok(resp);
        }
        Err(ClientError::Unreachable { endpoints: self.endpoints.join(","), detail: last })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        Self::decode(self.send(method, path, body).await?).await
    }

    /// An answer's body as `T`, or the API error it carries.
    async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T> {
        let url = resp.url().to_string();
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Decode { url: url.clone(), detail: e.to_string() })?;
        if status >= 400 {
            return Err(api_error(status, &bytes));
        }
        let bytes = if bytes.is_empty() { &b"null"[..] } else { &bytes[..] };
        serde_json::from_slice(bytes).map_err(|e| ClientError::Decode { url, detail: e.to_string() })
    }

    fn body<T: Serialize>(v: &T) -> Option<serde_json::Value> {
        Some(serde_json::to_value(v).expect("request bodies serialize"))
    }

    pub async fn whoami(&self) -> Result<User> {
        self.call(Method::GET, "/auth/whoami", None).await
    }
    pub async fn create_user(&self, req: &UserRequest) -> Result<User> {
        self.call(Method::POST, "/auth/users", Self::body(req)).await
    }
    pub async fn delete_user(&self, name: &str) -> Result<()> {
        self.call::<serde_json::Value>(Method::DELETE, &format!("/auth/users/{}", enc(name)), None)
            .await
            .map(|_| ())
    }

    pub async fn index(&self) -> Result<RootIndex> {
        self.call(Method::GET, "/", None).await
    }

    /// URLs of the live instances of `service`, from Root.
    pub async fn discover(&self, service: &str) -> Result<Vec<String>> {
        let idx = self.index().await?;
        Ok(idx
            .services
            .into_iter()
            .filter(|s| s.name == service)
            .flat_map(|s| s.instances.into_iter().map(|i| i.url))
            .collect())
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>> {
        self.call(Method::GET, "/tenants", None).await
    }
    pub async fn create_tenant(&self, req: &TenantRequest) -> Result<Tenant> {
        self.call(Method::POST, "/tenants", Self::body(req)).await
    }
    pub async fn tenant(&self, name: &str) -> Result<Tenant> {
        self.call(Method::GET, &format!("/tenants/{}", enc(name)), None).await
    }
    /// Replaces a tenant's external id, labels and isolation (`PUT /tenants/{name}`).
    pub async fn update_tenant(&self, req: &TenantRequest) -> Result<Tenant> {
        self.call(Method::PUT, &format!("/tenants/{}", enc(&req.name)), Self::body(req)).await
    }
    pub async fn delete_tenant(&self, name: &str) -> Result<()> {
        self.call::<serde_json::Value>(Method::DELETE, &format!("/tenants/{}", enc(name)), None)
            .await
            .map(|_| ())
    }
    pub async fn add_segment(&self, tenant: &str, req: &SegmentRequest) -> Result<Segment> {
        self.call(Method::POST, &format!("/tenants/{}/segments", enc(tenant)), Self::body(req)).await
    }
    pub async fn segments(&self, tenant: &str) -> Result<Vec<Segment>> {
        self.call(Method::GET, &format!("/tenants/{}/segments", enc(tenant)), None).await
    }
    pub async fn delete_segment(&self, tenant: &str, segment: &str) -> Result<()> {
        self.call::<serde_json::Value>(
            Method::DELETE,
            &format!("/tenants/{}/segments/{}", enc(tenant), enc(segment)),
            None,
        )
        .await
        .map(|_| ())
    }
    pub async fn networks(&self) -> Result<Vec<NetworkInfo>> {
        self.call(Method::GET, "/networks", None).await
    }
    pub async fn topology(&self) -> Result<TopologyRequest> {
        self.call(Method::GET, "/topology", None).await
    }
    pub async fn apply_topology(&self, req: &TopologyRequest) -> Result<TopologyChangeSummary> {
        self.call(Method::POST, "/topology", Self::body(req)).await
    }
    pub async fn hosts(&self) -> Result<HostList> {
        self.call(Method::GET, "/hosts", None).await
    }
    pub async fn add_host(&self, req: &HostRequest) -> Result<Host> {
        self.call(Method::POST, "/hosts", Self::body(req)).await
    }
    pub async fn host(&self, name: &str) -> Result<Host> {
        self.call(Method::GET, &format!("/hosts/{}", enc(name)), None).await
    }
    pub async fn remove_host(&self, name: &str) -> Result<Vec<Address>> {
        self.call(Method::DELETE, &format!("/hosts/{}", enc(name)), None).await
    }
    pub async fn set_tags(&self, name: &str, req: &TagsRequest) -> Result<Host> {
        self.call(Method::PUT, &format!("/hosts/{}/tags", enc(name)), Self::body(req)).await
    }
    pub async fn allocate(&self, req: &AddressRequest, token: Option<&str>) -> Result<Address> {
        let q = token.map(|t| format!("?RequestToken={}", enc(t))).unwrap_or_default();
        self.call(Method::POST, &format!("/addresses{q}"), Self::body(req)).await
    }
    /// `POST /address-stacks`: one address of each family the host draws from, both or
    /// neither; the one named as asked first (a dual-stack endpoint's IPv6 one is `<name>#v6`).
    pub async fn allocate_stack(&self, req: &AddressRequest) -> Result<Vec<Address>> {
        self.call(Method::POST, "/address-stacks", Self::body(req)).await
    }
    pub async fn release(&self, key: &str) -> Result<Address> {
        self.call(Method::DELETE, &format!("/addresses/{}", enc(key)), None).await
    }
    pub async fn address(&self, key: &str) -> Result<Address> {
        self.call(Method::GET, &format!("/addresses/{}", enc(key)), None).await
    }
    pub async fn addresses(&self, query: &str) -> Result<Vec<Address>> {
        self.call(Method::GET, &format!("/addresses{query}"), None).await
    }
    pub async fn blocks(&self) -> Result<BlockList> {
        self.call(Method::GET, "/blocks", None).await
    }
    pub async fn blackouts(&self) -> Result<Vec<BlackoutRequest>> {
        self.call(Method::GET, "/blackouts", None).await
    }
    pub async fn add_blackout(&self, cidr: &str) -> Result<()> {
        self.call::<serde_json::Value>(
            Method::POST,
            "/blackouts",
            Self::body(&BlackoutRequest { cidr: cidr.into() }),
        )
        .await
        .map(|_| ())
    }
    pub async fn remove_blackout(&self, cidr: &str) -> Result<()> {
        self.call::<serde_json::Value>(Method::DELETE, &format!("/blackouts?cidr={}", enc(cidr)), None)
            .await
            .map(|_| ())
    }
    pub async fn policies(&self) -> Result<Vec<Policy>> {
        self.call(Method::GET, "/policies", None).await
    }
    pub async fn add_policy(&self, p: &serde_json::Value) -> Result<Policy> {
        self.call(Method::POST, "/policies", Some(p.clone())).await
    }
    pub async fn policy(&self, id: &str) -> Result<Policy> {
        self.call(Method::GET, &format!("/policies/{}", enc(id)), None).await
    }
    pub async fn delete_policy(&self, id: &str) -> Result<Policy> {
        self.call(Method::DELETE, &format!("/policies/{}", enc(id)), None).await
    }
    /// Every endpoint with its labels and named ports (`GET /endpoints`).
    pub async fn endpoint_list(&self) -> Result<Vec<EndpointInfo>> {
        self.call(Method::GET, "/endpoints", None).await
    }
    /// One endpoint (`GET /endpoints/{name}`; 404 when unknown).
    pub async fn endpoint(&self, name: &str) -> Result<EndpointInfo> {
        self.call(Method::GET, &format!("/endpoints/{}", enc(name)), None).await
    }
    pub async fn put_endpoint(&self, e: &EndpointInfo) -> Result<EndpointInfo> {
        self.call(Method::PUT, &format!("/endpoints/{}", enc(&e.name)), Self::body(e)).await
    }
    /// Every record of endpoint `name` (`name` and, dual stack, `name#v6`) in one transaction:
    /// all written or none (`PUT /endpoint-stacks/{name}`).
    pub async fn put_endpoint_stack(
        &self,
        name: &str,
        records: &[EndpointInfo],
    ) -> Result<Vec<EndpointInfo>> {
        self.call(Method::PUT, &format!("/endpoint-stacks/{}", enc(name)), Self::body(&records)).await
    }
    /// Deletes an endpoint record; one that is already gone (404) counts as deleted, as DEL retries.
    pub async fn delete_endpoint(&self, name: &str) -> Result<()> {
        match self.call::<serde_json::Value>(Method::DELETE, &format!("/endpoints/{}", enc(name)), None).await
        {
            Err(e) if e.status() == Some(404) => Ok(()),
            r => r.map(|_| ()),
        }
    }
    pub async fn set_endpoint_labels(&self, name: &str, req: &LabelsRequest) -> Result<EndpointInfo> {
        self.call(Method::PUT, &format!("/endpoints/{}/labels", enc(name)), Self::body(req)).await
    }
    /// Every pod record the Kubernetes controller wrote (`GET /pods`).
    pub async fn pods(&self) -> Result<Vec<PodInfo>> {
        self.call(Method::GET, "/pods", None).await
    }
    /// One pod record (`GET /pods/{namespace}/{name}`; 404 when unknown).
    pub async fn pod(&self, namespace: &str, name: &str) -> Result<PodInfo> {
        self.call(Method::GET, &format!("/pods/{}/{}", enc(namespace), enc(name)), None).await
    }
    /// Creates or replaces a pod record (`PUT /pods/{namespace}/{name}`).
    pub async fn put_pod(&self, p: &PodInfo) -> Result<PodInfo> {
        self.call(Method::PUT, &format!("/pods/{}/{}", enc(&p.namespace), enc(&p.name)), Self::body(p)).await
    }
    /// Removes a pod record (`DELETE /pods/{namespace}/{name}`; absent is success).
    pub async fn delete_pod(&self, namespace: &str, name: &str) -> Result<()> {
        self.call::<serde_json::Value>(
            Method::DELETE,
            &format!("/pods/{}/{}", enc(namespace), enc(name)),
            None,
        )
        .await
        .map(|_| ())
    }
    /// Kubernetes NetworkPolicies (`GET /networkpolicies`).
    pub async fn netpols(&self) -> Result<Vec<NetworkPolicy>> {
        self.call(Method::GET, "/networkpolicies", None).await
    }
    /// Creates or replaces a NetworkPolicy given as a JSON value (YAML is parsed by the caller).
    pub async fn apply_netpol(&self, np: &serde_json::Value) -> Result<NetworkPolicy> {
        self.call(Method::POST, "/networkpolicies", Some(np.clone())).await
    }
    pub async fn delete_netpol(&self, namespace: &str, name: &str) -> Result<NetworkPolicy> {
        self.call(Method::DELETE, &format!("/networkpolicies/{}/{}", enc(namespace), enc(name)), None).await
    }
    /// Every VIP the caller may see, with where each is served (`GET /vips`).
    pub async fn vips(&self) -> Result<Vec<romana_api::vip::VipInfo>> {
        self.call(Method::GET, "/vips", None).await
    }
    /// One VIP (`GET /vips/{address}`; 404 when unknown).
    pub async fn vip(&self, address: &str) -> Result<romana_api::vip::VipInfo> {
        self.call(Method::GET, &format!("/vips/{}", enc(address)), None).await
    }
    /// Creates a VIP (`POST /vips`): the given address, or one drawn from the external ranges.
    pub async fn add_vip(&self, req: &romana_api::vip::VipRequest) -> Result<romana_api::vip::VipInfo> {
        self.call(Method::POST, "/vips", Self::body(req)).await
    }
    pub async fn delete_vip(&self, address: &str) -> Result<romana_api::vip::VipInfo> {
        self.call(Method::DELETE, &format!("/vips/{}", enc(address)), None).await
    }
    /// The external ranges VIPs are drawn from (`GET /config/vips`; empty when none).
    pub async fn vip_config(&self) -> Result<romana_api::vip::VipConfig> {
        self.call(Method::GET, "/config/vips", None).await
    }
    pub async fn set_vip_config(
        &self,
        cfg: &romana_api::vip::VipConfig,
    ) -> Result<romana_api::vip::VipConfig> {
        self.call(Method::PUT, "/config/vips", Self::body(cfg)).await
    }
    /// An agent's heartbeat: keeps `host` alive for the route manager's liveness TTL.
    pub async fn heartbeat(&self, host: &str) -> Result<()> {
        self.call::<serde_json::Value>(Method::PUT, &format!("/hosts/{}/alive", enc(host)), None)
            .await
            .map(|_| ())
    }
    /// A heartbeat carrying the host's self-diagnosis (`GET /check` shows its drift).
    pub async fn heartbeat_with(&self, host: &str, report: &romana_api::diagnose::HostReport) -> Result<()> {
        self.call::<serde_json::Value>(
            Method::PUT,
            &format!("/hosts/{}/alive", enc(host)),
            Self::body(report),
        )
        .await
        .map(|_| ())
    }
    /// `GET /fabric`: per prefix group, what it announces and the routes its router needs.
    pub async fn fabric(&self) -> Result<Vec<FabricGroup>> {
        self.call(Method::GET, "/fabric", None).await
    }
    pub async fn routes(&self, host: &str) -> Result<HostRoutesInfo> {
        self.call(Method::GET, &format!("/routes/{}", enc(host)), None).await
    }

    /// The next request starts with the next of the configured endpoints (a replica answered
    /// with data behind what the caller knows it should have). One endpoint: no change.
    pub fn next_endpoint(&self) {
        let n = self.endpoints.len().max(1);
        let _ = self.current.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some((c + 1) % n));
    }

    /// `GET /routes/{host}` unless its routes are the ones `etag` names (the `ETag` of an earlier
    /// answer, sent as `If-None-Match`): `changed` is `None` when they are (304), else the set's
    /// JSON (a `HostRoutesInfo`, left to the caller to parse: 300 KB at 50,000 endpoints in a
    /// flat leaf, which an agent parses off its runtime) with its own `ETag`; either way with
    /// the stamp of the set the replica computed (`ROUTE_STAMP_HEADER`).
    pub async fn routes_json_if_changed(&self, host: &str, etag: Option<&str>) -> Result<RoutesAnswer> {
        let path = format!("/routes/{}", enc(host));
        let resp = self.send_with(Method::GET, &path, None, None, etag).await?;
        let status = resp.status().as_u16();
        let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let stamp = header(romana_api::rest::ROUTE_STAMP_HEADER).filter(|s| !s.is_empty());
        if status == 304 {
            return Ok(RoutesAnswer { changed: None, stamp });
        }
        let tag = header(reqwest::header::ETAG.as_str());
        let url = resp.url().to_string();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Decode { url, detail: e.to_string() })?;
        if status >= 400 {
            return Err(api_error(status, &bytes));
        }
        Ok(RoutesAnswer { changed: Some((bytes.to_vec(), tag)), stamp })
    }

    /// Follows `GET /watch` from a revision (0: current state first, then changes).
    pub async fn watch(
        &self,
        prefix: &str,
        from: i64,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<WatchEvent>>> {
        self.watch_prefixes(&[prefix.to_owned()], from).await
    }

    /// Follows several prefixes on one `GET /watch` stream (one `prefix` parameter each): one
    /// connection to romanad however many prefixes a watcher needs.
    pub async fn watch_prefixes(
        &self,
        prefixes: &[String],
        from: i64,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<WatchEvent>>> {
        let query: String = prefixes.iter().map(|p| format!("&prefix={}", enc(p))).collect();
        let resp =
            // A watch is one response that lasts as long as the watcher: no 30-s total timeout
            // (it cut every stream, and watchers fell back to polling until they reconnected).
            self.send_with(
                Method::GET,
                &format!("/watch?from={from}{query}"),
                None,
                Some(Duration::from_secs(365 * 24 * 3600)),
                None,
            )
            .await?;
        if resp.status().as_u16() >= 400 {
            let status = resp.status().as_u16();
            let body = resp
                .json::<ErrorBody>()
                .await
                .map_err(|e| ClientError::Decode { url: "watch".into(), detail: e.to_string() })?;
            return Err(ClientError::Api { status, body });
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let mut stream = resp.bytes_stream();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx
                            .send(Err(ClientError::Unreachable {
                                endpoints: "watch".into(),
                                detail: e.to_string(),
                            }))
                            .await;
                        return;
                    }
                };
                buf.extend_from_slice(&chunk);
                // Every whole line of the buffer, then what is left moved to its front once: a
                // chunk can hold hundreds of lines, and moving the rest after each one made a
                // chunk's cost grow with its square (a stream's first listing, issue 22).
                let mut start = 0;
                while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
                    let ev = serde_json::from_slice::<WatchEvent>(&buf[start..start + pos + 1])
                        .map_err(|e| ClientError::Decode { url: "watch".into(), detail: e.to_string() });
                    start += pos + 1;
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                buf.drain(..start);
            }
        });
        Ok(rx)
    }
}

/// The API error an answer of `status` carries in `body` (romanad's `ErrorBody`, else the text).
fn api_error(status: u16, body: &[u8]) -> ClientError {
    let body = serde_json::from_slice::<ErrorBody>(body).unwrap_or_else(|_| ErrorBody {
        status_code: status,
        error: "http".into(),
        message: String::from_utf8_lossy(body).trim().to_owned(),
        details: vec![],
    });
    ClientError::Api { status, body }
}

/// An error with its causes: reqwest's own text names only the request, and the reason (a
/// refused certificate, a refused connection) is in its sources.
fn with_causes(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Installs ring as the process's TLS crypto provider (once); reqwest needs one even for plain HTTP.
pub fn ensure_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A bare HTTP client for callers that build requests themselves (tests, probes).
pub fn http() -> reqwest::Client {
    ensure_crypto();
    reqwest::Client::new()
}

fn tls_config(tls: &Tls) -> Result<rustls::ClientConfig> {
    let bad = |detail: String| ClientError::Unreachable { endpoints: "tls".into(), detail };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &tls.ca_pem {
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(cert.map_err(|e| bad(format!("CA: {e}")))?).map_err(|e| bad(format!("CA: {e}")))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots);
    match (&tls.client_cert_pem, &tls.client_key_pem) {
        (Some(cert), Some(key)) => {
            let chain = rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("client certificate: {e}")))?;
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| bad(format!("client key: {e}")))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| bad(e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod failover_tests;
