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
#[path = "ui_support/page.rs"]
mod page;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::Method;
use romana_test_support::TempDir;
use serde_json::{Value, json};

use page::{
    Api, PAGE_FABRIC, PAGE_GROUPS, PAGE_HOSTS, PAGE_ROUTES, PAGE_TENANTS, agree, api_fabric, api_groups,
    api_hosts, api_peers, api_tenants, log_in, page_peers, screenshots,
};

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

    let (_browser, mut page) = page::open(&chromium, dir.path().join("chromium"), &format!("{}/ui", d.url));

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
    let groups = agree(&rt, &mut page, "the groups", PAGE_GROUPS, move || api_groups(a));
    assert_eq!(groups[1][0], "rack-2");
    assert_eq!(groups[1][2], json!(["h2", "h3"]));

    // The chosen host's routes and the fabric's groups, as the API has them.
    agree(&rt, &mut page, "h1's routes", PAGE_ROUTES, move || async move {
        let r = a.ok(Method::GET, "/routes/h1", None).await;
        r["routes"].as_array().unwrap().iter().map(|x| x["dest"].clone()).collect()
    });
    agree(&rt, &mut page, "the fabric", PAGE_FABRIC, move || api_fabric(a));

    // Each tenant's endpoints, segments and policies.
    let (page_tenants, api_tenants) = (PAGE_TENANTS, move || api_tenants(a));
    assert_eq!(rt.block_on(api_tenants())["shop"][2], "NetworkPolicy db-from-web");
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
