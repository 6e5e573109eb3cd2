//! What the web view's browser tests share (romanad/tests/ui.rs on API-made data,
//! cli/tests/ui_sandbox.rs on a sandbox behind romanad): the test's own API client, the page
//! opened in Chromium and logged in, and each panel read from the page and the same facts read
//! from the API, to be compared. Expects the including crate to declare `mod cdp` (the
//! DevTools driver, `ui_support/cdp.rs`) beside it.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::cdp::{self, Browser, Page};

/// romanad's API as the test's own client (not the page's).
#[derive(Clone)]
pub struct Api {
    pub url: String,
    pub token: String,
}

impl Api {
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = romana_client::http()
            .request(method.clone(), format!("{}{path}", self.url))
            .timeout(Duration::from_secs(30));
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method.clone(), path, body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {v}");
        v
    }

    pub async fn login(url: &str, user: &str, password: &str) -> Api {
        let anon = Api { url: url.to_owned(), token: String::new() };
        let body = json!({"username": user, "password": password});
        // A password check is slow in a debug build on a loaded machine: romanad may answer 503
        // (its request deadline) while a sandbox's agents log in too. Tried again, a few times.
        for _ in 0..5 {
            let (status, t) = anon.call(Method::POST, "/auth/login", Some(body.clone())).await;
            if status != 503 {
                assert_eq!(status, 200, "POST /auth/login: {t}");
                return Api { url: url.to_owned(), token: t["access_token"].as_str().unwrap().to_owned() };
            }
        }
        panic!("POST /auth/login: 503 five times")
    }

    /// An endpoint: its address allocated, then its record.
    pub async fn endpoint(&self, name: &str, host: &str, tenant: &str, segment: &str, labels: Value) {
        let a = self
            .ok(
                Method::POST,
                "/addresses",
                Some(json!({"name": name, "host": host, "tenant": tenant, "segment": segment})),
            )
            .await;
        let e = json!({"name": name, "ip": a["ip"], "tenant": tenant, "segment": segment, "host": host,
                       "labels": labels});
        self.ok(Method::PUT, &format!("/endpoints/{name}"), Some(e)).await;
    }
}

/// What the page shows of each host: name, state, block count, addresses used.
pub const PAGE_HOSTS: &str = "[...document.querySelectorAll('li.host')].map(li => [li.dataset.host, \
    li.querySelector('.state').textContent, li.querySelector('.blocks').textContent, \
    li.querySelector('.use').textContent])";

/// The same, from the API.
pub async fn api_hosts(admin: &Api) -> Value {
    let hosts = admin.ok(Method::GET, "/hosts", None).await;
    let live = admin.ok(Method::GET, "/liveness", None).await;
    let blocks = admin.ok(Method::GET, "/blocks", None).await;
    let has = |list: &Value, h: &str| list.as_array().unwrap().iter().any(|x| x == h);
    let mut out = Vec::new();
    let mut names: Vec<String> =
        hosts["hosts"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    for h in names {
        let state = if has(&live["alive"], &h) {
            "alive"
        } else if has(&live["monitored"], &h) {
            "dead"
        } else {
            "no heartbeat yet"
        };
        let mine: Vec<&Value> =
            blocks["blocks"].as_array().unwrap().iter().filter(|b| b["host"] == *h).collect();
        let used: u64 = mine.iter().map(|b| b["allocated_ip_count"].as_u64().unwrap()).sum();
        let cap: u64 = mine.iter().map(|b| b["capacity"].as_u64().unwrap()).sum();
        let n = mine.len();
        out.push(json!([
            h,
            state,
            format!("{n} block{}", if n == 1 { "" } else { "s" }),
            format!("{used}/{cap} addresses")
        ]));
    }
    Value::Array(out)
}

/// Each shown peer of one direction of the reach panel: `kind:name` -> allowed ports.
pub fn page_peers(dir: &str) -> String {
    format!(
        "Object.fromEntries([...document.querySelectorAll('#reach-{dir} tr[data-peer]')].map(tr => \
         [tr.dataset.peer, tr.querySelector('.ports').textContent]))"
    )
}

pub fn api_peers(reach: &Value, dir: &str) -> Value {
    let mut m = serde_json::Map::new();
    for p in reach[dir].as_array().unwrap() {
        let ports: Vec<&str> = p["ports"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
        m.insert(
            format!("{}:{}", p["kind"].as_str().unwrap(), p["name"].as_str().unwrap()),
            json!(ports.join("; ")),
        );
    }
    Value::Object(m)
}

/// Waits until the page's `expr` equals what `api` answers at that moment.
pub fn agree<F, Fut>(rt: &tokio::runtime::Runtime, page: &mut Page, what: &str, expr: &str, api: F) -> Value
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let want = rt.block_on(api());
        let got = page.eval(expr);
        if got == want {
            return got;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: the page shows {got}, the API says {want}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

pub fn log_in(page: &mut Page, user: &str, password: &str) {
    page.wait_for(
        "the login form",
        "document.readyState === 'complete' && (document.getElementById('login-view') || {hidden: true}).hidden === false",
        |v| v == true,
    );
    page.eval(&format!(
        "document.getElementById('user').value = {}; document.getElementById('password').value = {}; \
         document.querySelector('#login button').click(); true",
        js(user),
        js(password)
    ));
}

pub fn screenshots() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots")
}

/// Chromium on `profile` with one page, its event domains on, a fixed window, at `url`.
pub fn open(chromium: &std::path::Path, profile: PathBuf, url: &str) -> (Browser, Page) {
    let browser = cdp::Browser::start(chromium, profile);
    let mut page = browser.page();
    for domain in ["Page.enable", "Runtime.enable", "Log.enable", "Network.enable"] {
        page.call(domain, json!({}));
    }
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
    );
    page.navigate(url);
    (browser, page)
}

/// Each tenant the page shows: its endpoints (sorted), segments and policies as shown.
pub const PAGE_TENANTS: &str = "Object.fromEntries([...document.querySelectorAll('[data-tenant]')].map(t => \
    [t.dataset.tenant, [[...t.querySelectorAll('li[data-endpoint]')].map(e => e.dataset.endpoint).sort(), \
    t.querySelector('.segments').textContent, t.querySelector('.policies').textContent]]))";

/// The same, from the API: each tenant's endpoints, its named segments, and the Romana policies
/// applied to it and the NetworkPolicies of its namespace.
pub async fn api_tenants(a: &Api) -> Value {
    let eps = a.ok(Method::GET, "/endpoints", None).await;
    let tenants = a.ok(Method::GET, "/tenants", None).await;
    let policies = a.ok(Method::GET, "/policies", None).await;
    let netpols = a.ok(Method::GET, "/networkpolicies", None).await;
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let mut m = serde_json::Map::new();
    for t in list(&tenants) {
        let name = t["name"].as_str().unwrap();
        let mut mine: Vec<&str> = eps
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["tenant"] == name)
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        mine.sort();
        let segs: Vec<String> = list(&t["segments"])
            .iter()
            .filter_map(|s| s["name"].as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let mut pols: Vec<String> = list(&policies)
            .iter()
            .filter(|p| list(&p["applied_to"]).iter().any(|x| x["tenant"] == name))
            .map(|p| format!("policy {}", p["id"].as_str().unwrap_or("")))
            .collect();
        pols.extend(
            list(&netpols)
                .iter()
                .filter(|n| n["metadata"]["namespace"] == name)
                .map(|n| format!("NetworkPolicy {}", n["metadata"]["name"].as_str().unwrap())),
        );
        let or_none = |v: Vec<String>| if v.is_empty() { "none".to_owned() } else { v.join(", ") };
        m.insert(name.to_owned(), json!([mine, or_none(segs), or_none(pols)]));
    }
    Value::Object(m)
}

/// The rows of `#host-routes` (the chosen host's routes) by destination.
pub const PAGE_ROUTES: &str =
    "[...document.querySelectorAll('#host-routes tbody tr')].map(tr => tr.dataset.dest)";

/// The fabric panel: group, prefix, announcement.
pub const PAGE_FABRIC: &str = "[...document.querySelectorAll('#fabric tbody tr')].map(tr => \
    [tr.dataset.fabricGroup, tr.children[1].textContent, tr.children[2].textContent])";

/// `GET /fabric` as the fabric panel shows it.
pub async fn api_fabric(a: &Api) -> Value {
    let f = a.ok(Method::GET, "/fabric", None).await;
    let rows = f.as_array().unwrap().iter();
    rows.map(|g| json!([g["group"], g["cidr"], g["announce"].as_str().unwrap_or("-")])).collect()
}

/// The topology tree: each group with its prefix and its hosts.
pub const PAGE_GROUPS: &str = "[...document.querySelectorAll('li.group')].map(g => [g.dataset.group, \
    g.querySelector('.cidr').textContent, [...g.querySelectorAll('li.host')].map(h => h.dataset.host)])";

/// `GET /topology` as the tree shows it: every group in document order (a group, then its
/// subgroups) with its prefix and the hosts under it; an entry without `groups` is a host.
pub async fn api_groups(a: &Api) -> Value {
    fn hosts(g: &Value, out: &mut Vec<Value>) {
        match g["groups"].as_array() {
            None => out.push(g["name"].clone()),
            Some(children) => children.iter().for_each(|c| hosts(c, out)),
        }
    }
    fn walk(g: &Value, out: &mut Vec<Value>) {
        let Some(children) = g["groups"].as_array() else { return };
        let mut hs = Vec::new();
        hosts(g, &mut hs);
        out.push(json!([g["name"], g["cidr"].as_str().unwrap_or(""), hs]));
        children.iter().for_each(|c| walk(c, out));
    }
    let topo = a.ok(Method::GET, "/topology", None).await;
    let mut out = Vec::new();
    for t in topo["topologies"].as_array().cloned().unwrap_or_default() {
        for g in t["map"].as_array().cloned().unwrap_or_default() {
            walk(&g, &mut out);
        }
    }
    Value::Array(out)
}
