//! The web view (`GET /ui`, docs/ui.md) in a real browser: a romanad process (embedded store)
//! with a topology, hosts, tenants, endpoints and a NetworkPolicy made through the API; headless
//! Chromium, driven over the DevTools protocol, logs in and what the page shows is checked
//! against what the API answers (hosts and liveness, blocks, each tenant's endpoints, an
//! endpoint's reach); changes made through the API appear without a reload; a tenant user sees
//! only its tenant; the page fetches nothing from another origin and breaks no CSP rule.
//! Screenshots go to `target/ui-screenshots/`. No root. Skips, saying so, without `chromium`
//! (scripts/setup.sh installs it).
#![allow(clippy::unwrap_used)]

#[path = "ui_support/cdp.rs"]
mod cdp;
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::Method;
use romana_test_support::TempDir;
use serde_json::{Value, json};

/// romanad's API as the test's own client (not the page's).
#[derive(Clone)]
struct Api {
    url: String,
    token: String,
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
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

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method.clone(), path, body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {v}");
        v
    }

    async fn login(url: &str, user: &str, password: &str) -> Api {
        let anon = Api { url: url.to_owned(), token: String::new() };
        let t =
            anon.ok(Method::POST, "/auth/login", Some(json!({"username": user, "password": password}))).await;
        Api { url: url.to_owned(), token: t["access_token"].as_str().unwrap().to_owned() }
    }

    /// An endpoint: its address allocated, then its record.
    async fn endpoint(&self, name: &str, host: &str, tenant: &str, segment: &str, labels: Value) {
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

const TOPOLOGY: &str = r#"{"networks": [{"name": "pods", "cidr": "10.120.0.0/16", "block_mask": 28}],
  "topologies": [{"networks": ["pods"], "map": [
    {"name": "rack-1", "assignment": {"rack": "r1"}, "groups": []},
    {"name": "rack-2", "assignment": {"rack": "r2"}, "groups": []}]}]}"#;

const DB_FROM_WEB: &str = r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
  "metadata": {"name": "db-from-web", "namespace": "shop"},
  "spec": {"podSelector": {"matchLabels": {"app": "db"}},
           "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                        "ports": [{"protocol": "TCP", "port": 5432}]}]}}"#;

async fn populate(admin: &Api) {
    let topo: Value = serde_json::from_str(TOPOLOGY).unwrap();
    admin.ok(Method::POST, "/topology", Some(topo)).await;
    for (name, ip, rack) in
        [("h1", "192.0.2.11", "r1"), ("h2", "192.0.2.12", "r2"), ("h3", "192.0.2.13", "r2")]
    {
        admin.ok(Method::POST, "/hosts", Some(json!({"name": name, "ip": ip, "tags": {"rack": rack}}))).await;
    }
    for (t, isolation) in [("shop", "none"), ("other", "tenant")] {
        admin.ok(Method::POST, "/tenants", Some(json!({"name": t, "isolation": isolation}))).await;
    }
    for s in ["web", "data"] {
        admin.ok(Method::POST, "/tenants/shop/segments", Some(json!({"name": s}))).await;
    }
    admin.endpoint("web", "h1", "shop", "web", json!({"app": "web"})).await;
    admin.endpoint("db", "h2", "shop", "data", json!({"app": "db"})).await;
    admin.endpoint("cron", "h2", "shop", "data", json!({"app": "cron"})).await;
    admin.endpoint("secret-1", "h1", "other", "", json!({"app": "vault"})).await;
    admin.ok(Method::POST, "/networkpolicies", Some(serde_json::from_str(DB_FROM_WEB).unwrap())).await;
}

/// Heartbeats for `host` every second while `on` holds (romanad runs with a 3 s liveness TTL).
fn beat(rt: &tokio::runtime::Runtime, admin: &Api, host: &str, on: Arc<AtomicBool>) {
    let (admin, host) = (admin.clone(), host.to_owned());
    rt.spawn(async move {
        while on.load(Ordering::Relaxed) {
            let _ = admin.call(Method::PUT, &format!("/hosts/{host}/alive"), None).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// What the page shows of each host: name, state, block count, addresses used.
const PAGE_HOSTS: &str = "[...document.querySelectorAll('li.host')].map(li => [li.dataset.host, \
    li.querySelector('.state').textContent, li.querySelector('.blocks').textContent, \
    li.querySelector('.use').textContent])";

/// The same, from the API.
async fn api_hosts(admin: &Api) -> Value {
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
fn page_peers(dir: &str) -> String {
    format!(
        "Object.fromEntries([...document.querySelectorAll('#reach-{dir} tr[data-peer]')].map(tr => \
         [tr.dataset.peer, tr.querySelector('.ports').textContent]))"
    )
}

fn api_peers(reach: &Value, dir: &str) -> Value {
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
fn agree<F, Fut>(rt: &tokio::runtime::Runtime, page: &mut cdp::Page, what: &str, expr: &str, api: F) -> Value
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

fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn log_in(page: &mut cdp::Page, user: &str, password: &str) {
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

fn screenshots() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots")
}

#[test]
fn the_web_view_shows_what_the_api_holds_and_follows_it() {
    let Some(chromium) = cdp::chromium() else {
        eprintln!("SKIPPED: no chromium on PATH (scripts/setup.sh installs Debian's chromium)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = TempDir::new("ui");
    let d = common::embedded(&dir, &["--host-liveness-ttl", "3"]);
    let creds: romana_api::rest::Credentials =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("admin.credentials")).unwrap())
            .unwrap();
    let admin = rt.block_on(Api::login(&d.url, &creds.username, &creds.password));
    rt.block_on(populate(&admin));
    let (h1_on, h2_on) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(true)));
    beat(&rt, &admin, "h1", Arc::clone(&h1_on));
    beat(&rt, &admin, "h2", Arc::clone(&h2_on));

    let browser = cdp::Browser::start(&chromium, dir.path().join("chromium"));
    let mut page = browser.page();
    for domain in ["Page.enable", "Runtime.enable", "Log.enable", "Network.enable"] {
        page.call(domain, json!({}));
    }
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
    );
    page.navigate(&format!("{}/ui", d.url));

    // A wrong password is refused on the page, with romanad's message.
    log_in(&mut page, &creds.username, "not-the-password");
    let err = page.wait_for("the refusal", "document.getElementById('login-error').textContent", |v| {
        v.as_str().is_some_and(|s| !s.is_empty())
    });
    assert!(err.as_str().unwrap().contains("wrong username or password"), "{err}");

    log_in(&mut page, &creds.username, &creds.password);
    page.wait_for("the topology", "document.querySelectorAll('li.host').length", |v| v == 3);
    // The token is in this tab's sessionStorage, never in a cookie.
    assert_eq!(page.eval("document.cookie"), json!(""));
    assert_eq!(page.eval("sessionStorage.getItem('romana.token') !== null"), json!(true));
    assert_eq!(page.eval("localStorage.length"), json!(0));

    // Hosts, liveness, blocks and use, as the API has them; the groups with their prefixes.
    let a = &admin;
    let hosts = agree(&rt, &mut page, "hosts", PAGE_HOSTS, move || api_hosts(a));
    assert_eq!(hosts[0][0], "h1");
    assert_eq!(hosts[2], json!(["h3", "no heartbeat yet", "0 blocks", "0/0 addresses"]));
    let groups = page.eval(
        "[...document.querySelectorAll('li.group')].map(g => [g.dataset.group, g.querySelector('.cidr').textContent, \
         [...g.querySelectorAll('li.host')].map(h => h.dataset.host)])",
    );
    let topo = rt.block_on(admin.ok(Method::GET, "/topology", None));
    let map = topo["topologies"][0]["map"].as_array().unwrap();
    let want: Vec<Value> = map
        .iter()
        .map(|g| {
            let hs: Vec<&Value> = g["groups"].as_array().unwrap().iter().map(|h| &h["name"]).collect();
            json!([g["name"], g["cidr"], hs])
        })
        .collect();
    assert_eq!(groups, Value::Array(want));

    // The chosen host's routes and the fabric's groups, as the API has them.
    let page_routes = "[...document.querySelectorAll('#host-routes tbody tr')].map(tr => tr.dataset.dest)";
    agree(&rt, &mut page, "h1's routes", page_routes, move || async move {
        let r = a.ok(Method::GET, "/routes/h1", None).await;
        r["routes"].as_array().unwrap().iter().map(|x| x["dest"].clone()).collect()
    });
    let page_fabric = "[...document.querySelectorAll('#fabric tbody tr')].map(tr => [tr.dataset.fabricGroup, \
        tr.children[1].textContent, tr.children[2].textContent])";
    agree(&rt, &mut page, "the fabric", page_fabric, move || async move {
        let f = a.ok(Method::GET, "/fabric", None).await;
        let rows = f.as_array().unwrap().iter();
        rows.map(|g| json!([g["group"], g["cidr"], g["announce"].as_str().unwrap_or("-")])).collect()
    });

    // Each tenant's endpoints, segments and policies.
    let page_tenants = "Object.fromEntries([...document.querySelectorAll('[data-tenant]')].map(t => [t.dataset.tenant, \
        [[...t.querySelectorAll('li[data-endpoint]')].map(e => e.dataset.endpoint).sort(), \
         t.querySelector('.segments').textContent, t.querySelector('.policies').textContent]]))";
    let api_tenants = move || async move {
        let eps = a.ok(Method::GET, "/endpoints", None).await;
        let tenants = a.ok(Method::GET, "/tenants", None).await;
        let mut m = serde_json::Map::new();
        for t in tenants.as_array().unwrap() {
            let mut mine: Vec<&str> = eps
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["tenant"] == t["name"])
                .map(|e| e["name"].as_str().unwrap())
                .collect();
            mine.sort();
            let segs: Vec<&str> = t["segments"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s["name"].as_str())
                .filter(|s| !s.is_empty())
                .collect();
            let pols = if t["name"] == "shop" { "NetworkPolicy db-from-web" } else { "none" };
            let segs = if segs.is_empty() { "none".to_owned() } else { segs.join(", ") };
            m.insert(t["name"].as_str().unwrap().to_owned(), json!([mine, segs, pols]));
        }
        Value::Object(m)
    };
    let shown = agree(&rt, &mut page, "tenants", page_tenants, api_tenants);
    assert_eq!(shown["shop"][0], json!(["cron", "db", "web"]));

    // The reach of db: the page's rows are the API's answer, which is the policy's meaning.
    page.eval("document.querySelector('[data-pick-endpoint=\"db\"]').click(); true");
    page.wait_for("db's reach", "(document.getElementById('reach-summary') || {}).textContent || ''", |v| {
        v.as_str().is_some_and(|s| s.starts_with("db "))
    });
    let reach = rt.block_on(admin.ok(Method::GET, "/endpoints/db/reach", None));
    for dir in ["ingress", "egress"] {
        let want = api_peers(&reach, dir);
        page.wait_for(&format!("db's {dir}"), &page_peers(dir), |v| *v == want);
    }
    assert_eq!(api_peers(&reach, "ingress"), json!({"endpoint:web": "TCP 5432"}));
    assert_eq!(
        page.eval("document.getElementById('reach-policies').textContent"),
        json!("k8s:shop/db-from-web (ingress)")
    );
    assert_eq!(page.eval("document.getElementById('live').textContent"), json!("live"));
    page.screenshot(&screenshots().join("admin.png"));

    // Live: changes through the API appear without a reload (the marker would not survive one).
    page.eval("window.romanaTestMarker = 42; true");
    rt.block_on(admin.endpoint("cache", "h3", "shop", "data", json!({"app": "cache"})));
    agree(&rt, &mut page, "tenants after a new endpoint", page_tenants, api_tenants);
    agree(&rt, &mut page, "hosts after a new endpoint", PAGE_HOSTS, move || api_hosts(a));
    rt.block_on(admin.ok(Method::DELETE, "/networkpolicies/shop/db-from-web", None));
    let open = "TCP all; UDP all; SCTP all; ICMP echo";
    page.wait_for("db open again", &page_peers("ingress"), |v| v["endpoint:cron"] == open);
    h2_on.store(false, Ordering::Relaxed);
    page.wait_for("h2 dead", "document.querySelector('[data-host=\"h2\"] .state').textContent", |v| {
        v == "dead"
    });
    let since = page.eval("document.querySelector('[data-host=\"h2\"] .since').textContent");
    assert!(since.as_str().unwrap().starts_with(" since "), "{since}");
    agree(&rt, &mut page, "hosts after h2 died", PAGE_HOSTS, move || api_hosts(a));
    assert_eq!(page.eval("window.romanaTestMarker"), json!(42), "the page was reloaded");

    // A tenant user: only its tenant, no topology, no reach; the page does not break.
    let ann_pw = "ann-has-a-long-password-0123";
    let user = json!({"name": "ann", "password": ann_pw, "roles": ["tenant"], "tenants": ["shop"]});
    rt.block_on(admin.ok(Method::POST, "/auth/users", Some(user)));
    page.eval("document.getElementById('logout').click(); true");
    assert_eq!(page.eval("sessionStorage.getItem('romana.token')"), Value::Null);
    log_in(&mut page, "ann", ann_pw);
    page.wait_for(
        "ann's tenants",
        "[...document.querySelectorAll('[data-tenant]')].map(t => t.dataset.tenant)",
        |v| *v == json!(["shop"]),
    );
    let ann = rt.block_on(Api::login(&d.url, "ann", ann_pw));
    let addrs = rt.block_on(ann.ok(Method::GET, "/addresses", None));
    let mut want: Vec<&str> = addrs.as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    want.sort();
    page.wait_for(
        "ann's endpoints",
        "[...document.querySelectorAll('[data-tenant=\"shop\"] li[data-endpoint]')].map(e => e.dataset.endpoint).sort()",
        |v| *v == json!(want),
    );
    let text = page.eval("document.body.innerText").as_str().unwrap().to_owned();
    let secret = rt.block_on(admin.ok(Method::GET, "/endpoints/secret-1", None));
    for hidden in ["other", "secret-1", secret["ip"].as_str().unwrap(), "192.0.2.1"] {
        assert!(!text.contains(hidden), "ann's page shows {hidden:?}:\n{text}");
    }
    assert_eq!(page.eval("document.querySelectorAll('li.host').length"), json!(0));
    assert_eq!(
        page.eval("document.querySelectorAll('#endpoint-select option, #host-select option').length"),
        json!(0)
    );
    assert!(
        page.eval("document.querySelector('[data-note=\"topology\"]').textContent")
            .as_str()
            .unwrap()
            .contains("admin or service")
    );
    assert_eq!(page.eval("document.getElementById('live').textContent"), json!("polling every 3 s"));
    page.screenshot(&screenshots().join("tenant.png"));

    // From the attacker's side: ann's token reads nothing more through the API than the page shows.
    for (path, want) in
        [("/endpoints/db/reach", 403), ("/topology", 403), ("/watch", 403), ("/endpoints", 403)]
    {
        let (status, body) = rt.block_on(ann.call(Method::GET, path, None));
        assert_eq!(status, want, "ann GET {path}: {body}");
    }
    let (status, _) = rt.block_on(Api { url: d.url.clone(), token: String::new() }.call(
        Method::GET,
        "/endpoints/db/reach",
        None,
    ));
    assert_eq!(status, 401);
    // The page's files hold no data, carry the policy, and say what they are.
    for (path, ctype) in
        [("/ui", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")]
    {
        let resp = rt.block_on(romana_client::http().get(format!("{}{path}", d.url)).send()).unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let h = resp.headers().clone();
        assert!(h["content-type"].to_str().unwrap().starts_with(ctype), "{path}");
        assert!(h["content-security-policy"].to_str().unwrap().contains("script-src 'self'"), "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let body = rt.block_on(resp.text()).unwrap();
        for data in ["shop", "secret-1", "192.0.2.11"] {
            assert!(!body.contains(data), "{path} holds {data}");
        }
    }

    // Nothing from another origin, no CSP violation, no uncaught exception.
    page.eval("true");
    for ev in &page.events {
        let p = &ev["params"];
        match ev["method"].as_str().unwrap_or("") {
            "Network.requestWillBeSent" => {
                let url = p["request"]["url"].as_str().unwrap_or("");
                assert!(
                    url.starts_with(&d.url) || url.starts_with("about:") || url.starts_with("data:"),
                    "the page fetched {url}"
                );
            }
            "Log.entryAdded" => {
                let text = p["entry"]["text"].as_str().unwrap_or("");
                assert!(!text.contains("Content Security Policy"), "CSP violation: {text}");
            }
            "Runtime.exceptionThrown" => panic!("the page threw: {p}"),
            _ => {}
        }
    }
    let fetched = page.events.iter().filter(|e| e["method"] == "Network.requestWillBeSent").count();
    assert!(fetched > 10, "the network log saw the page's requests ({fetched})");
    h1_on.store(false, Ordering::Relaxed);
}
