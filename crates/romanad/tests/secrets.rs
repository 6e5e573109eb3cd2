//! Secrets never leave romanad, tested from the attacker's side: every route of the table called
//! by every role with plausible parameters, every answer (streamed watches up to their `synced`
//! line, for every prefix a caller might ask) searched for private key bytes in any encoding,
//! argon2 hashes, and other users' passwords and tokens; a service credential trying to become
//! admin; store dumps after start, rotation and migration holding public keys only.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use romana_api::rest::{Credentials, SegmentRequest, TenantRequest, UserRequest};
use romana_auth::{Claims, Role, SigningKey, TokenKind, b64_decode, b64_encode, b64_std_encode};
use romana_client::Client;
use romana_store::{EmbeddedStore, MemStore, Store, StoreExt};
use romana_test_support::TempDir;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Every way `bytes` could show in a body: raw, hex (both cases), base64url and base64, and the
/// base64 characters that `bytes` alone decide at each of the three alignments inside a longer
/// encoded blob.
fn encodings(bytes: &[u8]) -> Vec<Vec<u8>> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = vec![bytes.to_vec(), hex.clone().into_bytes(), hex.to_uppercase().into_bytes()];
    for shift in 0..3usize {
        let mut padded = vec![0u8; shift];
        padded.extend_from_slice(bytes);
        let url = b64_encode(&padded);
        // Character i holds bits [6i, 6i + 6); ours are [8 shift, 8 (shift + len)).
        let first = (8 * shift).div_ceil(6);
        let last = (8 * (shift + bytes.len()) - 6) / 6;
        let inner = &url[first..=last];
        out.push(inner.as_bytes().to_vec());
        out.push(inner.replace('-', "+").replace('_', "/").into_bytes());
    }
    out.push(b64_encode(bytes).into_bytes());
    out.push(b64_std_encode(bytes).into_bytes());
    out
}

/// What must not leave romanad, each with whom it belongs to (its owner may see it).
#[derive(Default)]
struct Secrets {
    items: Vec<(String, Option<String>, Vec<Vec<u8>>)>,
}

impl Secrets {
    fn key(&mut self, what: &str, key: &SigningKey) {
        // The whole PKCS#8, and the 32-byte private seed inside it (after the 16-byte header).
        self.items.push((format!("{what} PKCS#8"), None, encodings(key.pkcs8())));
        self.items.push((format!("{what} seed"), None, encodings(&key.pkcs8()[16..48])));
    }

    fn text(&mut self, what: &str, owner: Option<&str>, text: &str) {
        self.items.push((what.to_owned(), owner.map(str::to_owned), vec![text.as_bytes().to_vec()]));
    }

    /// What `body`, answered to `caller`, reveals.
    fn found_in(&self, caller: &str, body: &[u8]) -> Vec<String> {
        let mut found = Vec::new();
        if find(body, b"$argon2") || find(body, b"password_hash") {
            found.push("an argon2 password hash".to_owned());
        }
        if find(body, b"pkcs8") || find(body, b"PRIVATE KEY") {
            found.push("a private key field".to_owned());
        }
        for (what, owner, forms) in &self.items {
            if owner.as_deref() == Some(caller) {
                continue;
            }
            if forms.iter().any(|f| find(body, f)) {
                found.push(what.clone());
            }
        }
        found
    }
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// One request; a 200 `/watch` is read up to its `synced` line (or, resuming from a revision,
/// until it has been quiet for a second), anything else to its end.
async fn call(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Vec<u8>) {
    let mut req = romana_client::http()
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{url}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_owned());
    }
    let mut resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let streaming = path.starts_with("/watch") && status == 200;
    let mut out = Vec::new();
    loop {
        let idle = if streaming { Duration::from_secs(1) } else { Duration::from_secs(15) };
        match tokio::time::timeout(idle, resp.chunk()).await {
            Ok(Ok(Some(c))) => out.extend_from_slice(&c),
            Ok(Ok(None)) => break,
            Ok(Err(e)) => panic!("{method} {path}: {e}"),
            Err(_) if streaming => break,
            Err(_) => panic!("{method} {path}: no answer in 15 s"),
        }
        if streaming && find(&out, b"\"kind\":\"synced\"") {
            break;
        }
    }
    (status, out)
}

struct Caller {
    name: &'static str,
    password: String,
    tokens: Option<romana_api::rest::TokenResponse>,
}

impl Caller {
    fn token(&self) -> Option<&str> {
        self.tokens.as_ref().map(|t| t.access_token.as_str())
    }
}

fn user(name: &str, roles: &[&str], tenants: &[&str]) -> UserRequest {
    UserRequest {
        name: name.into(),
        password: format!("{name}-secret-password-1"),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        hosts: vec![],
    }
}

fn tenant(name: &str) -> TenantRequest {
    TenantRequest {
        name: name.into(),
        external_id: String::new(),
        labels: Default::default(),
        isolation: Default::default(),
    }
}

/// Tenants red and blue, segment web, host h1 with address p1, its endpoint, a policy, a
/// NetworkPolicy and a configuration; a service account and a tenant user, logged in.
async fn populate(url: &str, admin: &Client) -> (Caller, Caller) {
    for t in ["red", "blue"] {
        admin.create_tenant(&tenant(t)).await.unwrap();
    }
    admin
        .add_segment("red", &serde_json::from_str::<SegmentRequest>(r#"{"name":"web"}"#).unwrap())
        .await
        .unwrap();
    let host = serde_json::json!({"name": "h1", "ip": "192.168.0.1"});
    let (s, b) = call(url, "POST", "/hosts", admin.token().as_deref(), Some(&host.to_string())).await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    let a = serde_json::json!({"name": "p1", "host": "h1", "tenant": "red", "segment": "web"});
    let (s, b) = call(url, "POST", "/addresses", admin.token().as_deref(), Some(&a.to_string())).await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    let ip = serde_json::from_slice::<serde_json::Value>(&b).unwrap()["ip"].as_str().unwrap().to_owned();
    let ep = serde_json::json!({"name": "p1", "ip": ip, "tenant": "red", "segment": "web", "host": "h1", "labels": {"app": "web"}});
    let (s, b) = call(url, "PUT", "/endpoints/p1", admin.token().as_deref(), Some(&ep.to_string())).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let policy = serde_json::json!({"id": "r1", "applied_to": [{"tenant": "red"}], "ingress": [{"peers": [{"peer": "any"}], "rules": [{"protocol": "tcp", "ports": [80]}]}]});
    admin.add_policy(&policy).await.unwrap();
    let np = serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "np1", "namespace": "red"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}});
    admin.apply_netpol(&np).await.unwrap();
    let (s, _) = call(url, "PUT", "/config/ipam", admin.token().as_deref(), Some(r#"{"x":1}"#)).await;
    assert_eq!(s, 200);
    let mut out = Vec::new();
    for (name, roles, tenants) in
        [("agent-1", &["service"][..], &[][..]), ("alice", &["tenant"][..], &["red"][..])]
    {
        let u = user(name, roles, tenants);
        admin.create_user(&u).await.unwrap();
        let c = Client::new(vec![url.to_owned()]);
        let tokens = c.login(name, &u.password).await.unwrap();
        out.push(Caller {
            name: if name == "alice" { "alice" } else { "agent-1" },
            password: u.password,
            tokens: Some(tokens),
        });
    }
    let alice = out.pop().unwrap();
    (out.pop().unwrap(), alice)
}

/// The path of a route template with the existing objects' names.
fn concrete(template: &str) -> String {
    let path = if template.starts_with("/networkpolicies/") {
        template.replace("{tenant}", "red").replace("{name}", "np1")
    } else {
        template.replace("{tenant}", "red").replace("{name}", "p1")
    };
    path.replace("{segment}", "web")
        .replace("{service}", "ipam")
        .replace("{network}", "flat")
        .replace("{host}", "h1")
        .replace("{id}", "r1")
        .replace("{user}", "alice")
}

/// A plausible body for a route called by `c`.
fn body_for(method: &str, path: &str, c: &Caller, secrets: &mut Secrets) -> Option<String> {
    let j = match (method, path) {
        ("POST", "/auth/login") => serde_json::json!({"username": c.name, "password": c.password}),
        ("POST", "/auth/refresh") => serde_json::json!({
            "refresh_token": c.tokens.as_ref().map_or("none", |t| t.refresh_token.as_str())
        }),
        ("POST", "/auth/users") => {
            let u = user(&format!("new-{}", c.name), &["tenant"], &["red"]);
            secrets.text(&format!("{}'s password", u.name), Some(c.name), &u.password);
            serde_json::to_value(&u).unwrap()
        }
        ("POST", "/tenants") => serde_json::json!({"name": format!("t-{}", c.name)}),
        ("PUT", "/tenants/red") => serde_json::json!({"name": "red", "external_id": "proj-1"}),
        ("POST", "/tenants/red/segments") => serde_json::json!({"name": format!("s-{}", c.name)}),
        ("POST", "/addresses") | ("POST", "/address") => {
            serde_json::json!({"name": format!("a-{}", c.name), "host": "h1", "tenant": "red", "segment": "web"})
        }
        ("POST", "/policies") | ("PUT", "/policies/r1") => {
            serde_json::json!({"id": "r1", "applied_to": [{"tenant": "red"}], "ingress": [{"peers": [{"peer": "any"}], "rules": [{"protocol": "tcp", "ports": [443]}]}]})
        }
        ("PUT", "/hosts/h1/tags") => serde_json::json!({"tags": {}}),
        ("PUT", "/endpoints/p1/labels") => serde_json::json!({"labels": {"app": "db"}}),
        (_, "/config/ipam") => serde_json::json!({"x": 2}),
        ("POST" | "PUT", _) => serde_json::json!({}),
        _ => return None,
    };
    Some(j.to_string())
}

/// Watch queries every caller tries: every resource, `auth/` in its spellings, paths out of the
/// prefix, and a replay of the whole history.
const WATCHES: &[&str] = &[
    "/watch?from=0&prefix=",
    "/watch?from=0",
    "/watch?from=0&prefix=auth/",
    "/watch?from=0&prefix=auth/keys/",
    "/watch?from=0&prefix=auth/users/",
    "/watch?from=0&prefix=auth",
    "/watch?from=0&prefix=a",
    "/watch?from=0&prefix=../",
    "/watch?from=0&prefix=%2e%2e/",
    "/watch?from=0&prefix=routes/../auth/",
    "/watch?from=0&prefix=%2Fromana%2Fauth%2F",
    "/watch?from=0&prefix=ipam/",
    "/watch?from=0&prefix=routes/",
    "/watch?from=0&prefix=tenants/",
    "/watch?from=0&prefix=services/",
    "/watch?from=0&prefix=config/",
    "/watch?from=1&prefix=",
    "/watch?from=1&prefix=auth/",
    // Several prefixes on one stream (the agent's form): a forbidden one hidden among allowed ones.
    "/watch?from=0&prefix=routes/&prefix=auth/",
    "/watch?from=0&prefix=tenants/&prefix=auth/keys/&prefix=vips/",
    "/watch?from=0&prefix=tenants/&prefix=",
    "/watch?from=0&prefix=tenants/&prefix=a",
    "/watch?from=0&prefix=tenants/&prefix=%2e%2e/auth/",
    "/watch?from=1&prefix=tenants/&prefix=auth/",
    "/watch?from=1&prefix=routes/&prefix=endpoints/&prefix=policies/",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_answers_a_secret_to_any_role() {
    let dir = TempDir::new("secrets");
    let topo = common::topology_file("flat.json").display().to_string();
    let d = common::embedded(&dir, &["--initial-topology", &topo]);
    let creds: Credentials =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("admin.credentials")).unwrap())
            .unwrap();
    let admin_c = Client::new(vec![d.url.clone()]);
    let admin_tokens = admin_c.login("admin", &creds.password).await.unwrap();
    let (agent, alice) = populate(&d.url, &admin_c).await;
    let admin = Caller { name: "admin", password: creds.password.clone(), tokens: Some(admin_tokens) };
    let anonymous = Caller { name: "anonymous", password: "not-the-password".into(), tokens: None };
    let callers = [anonymous, alice, agent, admin];

    let mut secrets = Secrets::default();
    let key_path = dir.path().join("signing-key.pem");
    let first_key = romana_services::key_file::read(&key_path).unwrap();
    secrets.key("the signing key", &first_key);
    for c in &callers {
        secrets.text(&format!("{}'s password", c.name), Some(c.name), &c.password);
        if let Some(t) = &c.tokens {
            secrets.text(&format!("{}'s access token", c.name), Some(c.name), &t.access_token);
            secrets.text(&format!("{}'s refresh token", c.name), Some(c.name), &t.refresh_token);
        }
    }

    // The detectors see a key and a hash the way the store held them before, in a watch line.
    let old_line = format!(
        r#"{{"revision":3,"kind":"put","key":"auth/keys/{}","value":{{"kid":"{}","pkcs8":"{}","created":1}}}}"#,
        first_key.kid,
        first_key.kid,
        b64_encode(first_key.pkcs8())
    );
    let found = secrets.found_in("agent-1", old_line.as_bytes());
    assert!(
        found.contains(&"the signing key PKCS#8".to_owned())
            && found.contains(&"the signing key seed".to_owned()),
        "{found:?}"
    );
    assert!(!secrets.found_in("agent-1", br#"{"password_hash":"$argon2id$v=19$..."}"#).is_empty());

    // Reads first (every object still there), then changes; each caller in turn, admin last.
    let mut answers: Vec<(&str, String, u16, Vec<u8>)> = Vec::new();
    for pass in ["read", "change"] {
        for c in &callers {
            for r in romana_services::rest_routes::ROUTES {
                if (r.method == "GET") != (pass == "read") {
                    continue;
                }
                let paths: Vec<String> = if r.path == "/watch" {
                    WATCHES.iter().map(|w| w.to_string()).collect()
                } else {
                    vec![concrete(r.path)]
                };
                for path in paths {
                    let body = body_for(r.method, &path, c, &mut secrets);
                    let (status, text) = call(&d.url, r.method, &path, c.token(), body.as_deref()).await;
                    assert!(
                        status < 500,
                        "{} {} {path} answered {status}: {}",
                        c.name,
                        r.method,
                        String::from_utf8_lossy(&text)
                    );
                    if path.ends_with("/auth/login") || path.ends_with("/auth/refresh") {
                        // The caller's own new tokens: its own, and must not leak to others later.
                        if let Ok(t) = serde_json::from_slice::<romana_api::rest::TokenResponse>(&text) {
                            secrets.text(
                                &format!("{}'s new access token", c.name),
                                Some(c.name),
                                &t.access_token,
                            );
                            secrets.text(
                                &format!("{}'s new refresh token", c.name),
                                Some(c.name),
                                &t.refresh_token,
                            );
                        }
                    }
                    answers.push((c.name, format!("{} {path}", r.method), status, text));
                }
            }
        }
    }
    // The admin's pass rotated the key: the new one must not have leaked either.
    let second_key = romana_services::key_file::read(&key_path).unwrap();
    assert_ne!(first_key.kid, second_key.kid, "the admin's POST /auth/keys/rotate replaced the key file");
    secrets.key("the rotated signing key", &second_key);

    let mut leaks = Vec::new();
    for (caller, route, status, body) in &answers {
        for what in secrets.found_in(caller, body) {
            leaks.push(format!("{caller}: {route} ({status}) answered {what}"));
        }
    }
    assert!(leaks.is_empty(), "{} leaks:\n{}", leaks.len(), leaks.join("\n"));
    let watches = answers.iter().filter(|(_, r, s, _)| r.starts_with("GET /watch") && *s == 200).count();
    assert!(watches >= 2 * 8, "service and admin watches were answered ({watches})");
    assert!(answers.len() >= romana_services::rest_routes::ROUTES.len() * 4, "every route, every caller");
}

/// Every JSON string in `bodies` that decodes (base64url, base64, hex) to an Ed25519 PKCS#8 key.
fn keys_in(bodies: &[Vec<u8>]) -> Vec<SigningKey> {
    fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for body in bodies {
        for line in body.split(|b| *b == b'\n') {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
            let mut texts = Vec::new();
            strings(&v, &mut texts);
            for t in texts {
                let url = t.trim_end_matches('=').replace('+', "-").replace('/', "_");
                let hex = (t.len() % 2 == 0)
                    .then(|| {
                        (0..t.len())
                            .step_by(2)
                            .map(|i| u8::from_str_radix(&t[i..i + 2], 16).ok())
                            .collect::<Option<Vec<u8>>>()
                    })
                    .flatten();
                for bytes in [b64_decode(&url), hex].into_iter().flatten() {
                    if let Some(k) = SigningKey::from_pkcs8(&bytes) {
                        found.push(k);
                    }
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_credential_cannot_become_admin() {
    let dir = TempDir::new("forge");
    let d = common::embedded(&dir, &[]);
    let admin = common::admin(&dir).await;
    let u = user("agent-1", &["service"], &[]);
    admin.create_user(&u).await.unwrap();
    let agent = Client::new(vec![d.url.clone()]);
    let svc = agent.login("agent-1", &u.password).await.unwrap().access_token;

    // The attacker reads everything a service credential can: every GET route, every watch.
    let mut bodies = Vec::new();
    for r in romana_services::rest_routes::ROUTES.iter().filter(|r| r.method == "GET") {
        let paths: Vec<String> = if r.path == "/watch" {
            WATCHES.iter().map(|w| w.to_string()).collect()
        } else {
            vec![concrete(r.path)]
        };
        for p in paths {
            bodies.push(call(&d.url, "GET", &p, Some(&svc), None).await.1);
        }
    }
    // The detector finds a key the way the store held it before (a watch line of `auth/keys/`).
    let probe = SigningKey::generate(&ring::rand::SystemRandom::new());
    let line = serde_json::json!({"revision": 3, "kind": "put", "key": "auth/keys/k", "value": {"kid": "k", "pkcs8": b64_encode(probe.pkcs8()), "created": 1}});
    assert_eq!(keys_in(&[line.to_string().into_bytes()]).len(), 1, "the key detector works");
    let stolen = keys_in(&bodies);
    let kids: Vec<String> = stolen.iter().map(|k| k.kid.clone()).collect();
    // Whatever it found (nothing), and a key of its own: neither makes an admin.
    let mut forgers = stolen;
    forgers.push(SigningKey::generate(&ring::rand::SystemRandom::new()));
    let mut answers = Vec::new();
    for k in &forgers {
        let forged = k.sign(&Claims {
            sub: "admin".into(),
            roles: vec![Role::Admin],
            tenants: vec![],
            hosts: vec![],
            iat: now(),
            exp: now() + 600,
            typ: TokenKind::Access,
        });
        let body = serde_json::to_string(&user("mallory", &["admin"], &[])).unwrap();
        answers
            .push((k.kid.clone(), call(&d.url, "POST", "/auth/users", Some(&forged), Some(&body)).await.0));
    }
    assert!(
        kids.is_empty(),
        "a service credential read private keys {kids:?}; forged admin tokens got {answers:?}"
    );
    assert!(answers.iter().all(|(_, s)| *s == 401), "forged admin tokens: {answers:?}");
    assert_eq!(admin.whoami().await.unwrap().name, "admin");
    let (_, users) = call(&d.url, "GET", "/auth/users", admin.token().as_deref(), None).await;
    let users = String::from_utf8(users).unwrap();
    assert!(users.contains("agent-1") && !users.contains("mallory"), "{users}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_refusals_are_json_errors() {
    let dir = TempDir::new("watch-errors");
    let d = common::embedded(&dir, &[]);
    let admin = common::admin(&dir).await;
    admin.create_user(&user("agent-1", &["service"], &[])).await.unwrap();
    admin.create_tenant(&tenant("red")).await.unwrap();
    admin.create_user(&user("alice", &["tenant"], &["red"])).await.unwrap();
    let login = |name: &'static str| {
        let url = d.url.clone();
        async move {
            Client::new(vec![url])
                .login(name, &format!("{name}-secret-password-1"))
                .await
                .unwrap()
                .access_token
        }
    };
    let (svc, alice) = (login("agent-1").await, login("alice").await);
    let admin_t = admin.token().unwrap();
    let (_, synced) = call(&d.url, "GET", "/watch?from=0&prefix=tenants/", Some(&svc), None).await;
    let text = String::from_utf8(synced).unwrap();
    assert!(text.contains("\"key\":\"tenants/red\""), "{text}");
    let rev: i64 =
        serde_json::from_str::<serde_json::Value>(text.lines().last().unwrap()).unwrap()["revision"]
            .as_i64()
            .unwrap();
    let far = format!("/watch?from={}", rev + 1000);
    let cases: Vec<(&str, &str, u16, &str)> = vec![
        (&svc, "/watch?from=abc", 400, "\"abc\" is not a revision"),
        (&svc, "/watch?from=-1", 400, "\"-1\" is not a revision"),
        (&svc, "/watch?from=18446744073709551615", 400, "18446744073709551615 is past the largest revision"),
        (&svc, "/watch?from=9223372036854775808", 400, "9223372036854775808 is past the largest revision"),
        (&svc, &far, 400, "past the store's next revision"),
        (&svc, "/watch?from=0&color=red", 400, "unknown field `color`"),
        (&svc, "/watch?from=0&prefix=../", 400, "\"../\" is not a key prefix"),
        (&svc, "/watch?from=0&prefix=%2e%2e/auth/", 400, "is not a key prefix"),
        (&svc, "/watch?from=0&prefix=auth/keys/", 403, "may not watch \"auth/keys/\""),
        (&svc, "/watch?from=0&prefix=counters/", 403, "may not watch \"counters/\""),
        (&alice, "/watch?from=0&prefix=tenants/red", 403, "needs Service"),
        (&admin_t, "/watch?from=0&prefix=auth/", 403, "may not watch \"auth/\""),
        // Several prefixes: each is checked as a single one is, and one refusal refuses the stream.
        (&svc, "/watch?from=0&prefix=tenants/&prefix=auth/keys/", 403, "may not watch \"auth/keys/\""),
        (&svc, "/watch?from=0&prefix=auth/&prefix=tenants/", 403, "may not watch \"auth/\""),
        (&svc, "/watch?from=0&prefix=tenants/&prefix=counters/", 403, "may not watch \"counters/\""),
        (&svc, "/watch?from=0&prefix=tenants/&prefix=../", 400, "\"../\" is not a key prefix"),
        (&svc, "/watch?from=0&from=1&prefix=tenants/", 400, "from: given twice"),
        (&alice, "/watch?from=0&prefix=tenants/red&prefix=segments/", 403, "needs Service"),
        (&admin_t, "/watch?from=0&prefix=counters/&prefix=auth/users/", 403, "may not watch \"auth/users/\""),
    ];
    for (token, path, status, needle) in cases {
        let (s, body) = call(&d.url, "GET", path, Some(token), None).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            panic!("{path}: not our JSON error body: {}", String::from_utf8_lossy(&body))
        });
        assert_eq!(s, status, "{path}: {v}");
        assert_eq!(v["status_code"], status, "{path}: {v}");
        let m = v["message"].as_str().unwrap();
        assert!(m.contains(needle), "{path}: {m:?} should contain {needle:?}");
    }
    // The next revision is where a client that saw everything resumes: it waits, it is no error.
    let next = format!("/watch?from={}&prefix=tenants/", rev + 1);
    let (s, _) = call(&d.url, "GET", &next, Some(&svc), None).await;
    assert_eq!(s, 200);
}

/// Every key and value of the store, as bytes.
async fn dump(store: &dyn Store) -> Vec<(String, Vec<u8>)> {
    store.range("").await.unwrap().0.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

fn assert_clean(dump: &[(String, Vec<u8>)], keys: &[&SigningKey], passwords: &[&str], when: &str) {
    let published = dump.iter().filter(|(k, _)| k.contains("/auth/keys/")).count();
    assert!(published >= keys.len() - 1, "{when}: the dump holds the published keys ({published})");
    assert!(dump.iter().any(|(k, _)| k.contains("/auth/users/admin")), "{when}: the dump holds the users");
    let mut secrets = Secrets::default();
    for (i, k) in keys.iter().enumerate() {
        secrets.key(&format!("signing key {i}"), k);
    }
    for p in passwords {
        secrets.text("a password", None, p);
    }
    for (key, value) in dump {
        let mut found = secrets.found_in("store", value);
        if key.contains("/auth/users/") {
            // Hashes stay in the store (they never leave it through a route).
            let rec: serde_json::Value = serde_json::from_slice(value).unwrap();
            assert!(rec["password_hash"].as_str().unwrap().starts_with("$argon2id$"), "{when}: {key}");
            found.retain(|f| f != "an argon2 password hash");
        }
        assert!(found.is_empty(), "{when}: {key} holds {found:?}");
        if key.contains("/auth/keys/") {
            let rec: serde_json::Value = serde_json::from_slice(value).unwrap();
            let fields: Vec<&str> = rec.as_object().unwrap().keys().map(String::as_str).collect();
            assert!(
                fields.iter().all(|f| ["kid", "public", "created", "retired", "revoked"].contains(f)),
                "{when}: {key} {fields:?}"
            );
        }
    }
}

/// romanad's services in this process on `store`, authentication on, with a key file.
async fn serve(store: Arc<dyn Store>, dir: &Path) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let opts = romana_services::Options {
        prefix: "/romana/".into(),
        services: romana_services::ALL_SERVICES.iter().map(|s| s.to_string()).collect(),
        instance: "dump".into(),
        url: url.clone(),
        initial_topology: None,
        auth: true,
        credentials: Some(dir.join("admin.credentials")),
        ca_pem: None,
        access_ttl: 900,
        liveness_ttl: 2,
        graces: Default::default(),
        signing_key: Some(dir.join("signing-key.pem")),
    };
    let state = romana_services::start(store, &opts).await.unwrap();
    let app = romana_services::router(state);
    (url, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_dumps_hold_public_keys_only() {
    for backend in ["memory", "embedded"] {
        let dir = TempDir::new("dump");
        let store: Arc<dyn Store> = if backend == "memory" {
            Arc::new(MemStore::new())
        } else {
            Arc::new(EmbeddedStore::open(&dir.path().join("store")).await.unwrap())
        };
        // A store written before keys left it: a private key in its record.
        let legacy = SigningKey::generate(&ring::rand::SystemRandom::new());
        let record = serde_json::json!({"kid": legacy.kid, "pkcs8": b64_encode(legacy.pkcs8()), "created": now() - 60});
        store
            .put(&format!("/romana/auth/keys/{}", legacy.kid), serde_json::to_vec(&record).unwrap())
            .await
            .unwrap();

        let (url, task) = serve(Arc::clone(&store), dir.path()).await;
        let creds: Credentials =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("admin.credentials")).unwrap())
                .unwrap();
        let admin = Client::new(vec![url.clone()]);
        admin.login("admin", &creds.password).await.unwrap();
        let u = user("agent-1", &["service"], &[]);
        admin.create_user(&u).await.unwrap();
        let first = romana_services::key_file::read(&dir.path().join("signing-key.pem")).unwrap();
        let all = [&legacy, &first];
        assert_clean(
            &dump(&*store).await,
            &all,
            &[&creds.password, &u.password],
            &format!("{backend} after start"),
        );

        // The migrated key was exposed (older versions streamed it): it signs and verifies nothing.
        let old_token = legacy.sign(&Claims {
            sub: "admin".into(),
            roles: vec![Role::Admin],
            tenants: vec![],
            hosts: vec![],
            iat: now(),
            exp: now() + 60,
            typ: TokenKind::Access,
        });
        let (s, _) = call(&url, "GET", "/auth/whoami", Some(&old_token), None).await;
        assert_eq!(s, 401, "{backend}: a token of the migrated key is refused");
        let keys: serde_json::Value =
            serde_json::from_slice(&call(&url, "GET", "/auth/keys", None, None).await.1).unwrap();
        let published: Vec<&str> =
            keys["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(published, vec![first.kid.as_str()], "{backend}: only the replica's own key verifies");
        let raw = store.get(&format!("/romana/auth/keys/{}", legacy.kid)).await.unwrap().unwrap();
        let rec: serde_json::Value = serde_json::from_slice(&raw.value).unwrap();
        assert_eq!(
            (rec["revoked"].as_bool(), rec["public"].as_str()),
            (Some(true), Some(b64_encode(&legacy.public_key()).as_str())),
            "{backend}: {rec}"
        );
        assert_eq!(admin.whoami().await.unwrap().name, "admin");

        let (s, _) = call(&url, "POST", "/auth/keys/rotate", admin.token().as_deref(), None).await;
        assert_eq!(s, 200);
        let second = romana_services::key_file::read(&dir.path().join("signing-key.pem")).unwrap();
        assert_ne!(second.kid, first.kid);
        assert_clean(
            &dump(&*store).await,
            &[&legacy, &first, &second],
            &[&creds.password, &u.password],
            &format!("{backend} after rotation"),
        );
        assert_eq!(
            admin.whoami().await.unwrap().name,
            "admin",
            "{backend}: the old key's tokens still verify"
        );
        task.abort();
    }
}

/// Polls `f` until it holds (replicas re-read the published keys every 2 s).
async fn eventually<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) -> bool {
    for _ in 0..50 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_etcd_sign_with_their_own_keys() {
    let etcd = common::etcd("own-keys");
    let (da, db) = (TempDir::new("own-keys-a"), TempDir::new("own-keys-b"));
    let a = common::on_etcd(&etcd, "/own-keys/", &["--data-dir", &da.path().display().to_string()]);
    let b = common::on_etcd(&etcd, "/own-keys/", &["--data-dir", &db.path().display().to_string()]);
    let creds: Credentials =
        serde_json::from_str(&std::fs::read_to_string(da.path().join("admin.credentials")).unwrap()).unwrap();
    let read = |d: &TempDir| romana_services::key_file::read(&d.path().join("signing-key.pem")).unwrap();
    let (ka, kb) = (read(&da), read(&db));
    assert_ne!(ka.kid, kb.kid, "each replica has its own key");

    // A token of either replica verifies at the other.
    let (ca, cb) = (Client::new(vec![a.url.clone()]), Client::new(vec![b.url.clone()]));
    let ta = ca.login("admin", &creds.password).await.unwrap().access_token;
    let tb = cb.login("admin", &creds.password).await.unwrap().access_token;
    for (token, url) in [(&ta, &b.url), (&tb, &a.url)] {
        assert!(
            eventually(|| async { call(url, "GET", "/auth/whoami", Some(token), None).await.0 == 200 }).await,
            "a token of the other replica verifies at {url}"
        );
    }

    // Rotation at A replaces A's key only; B's tokens and key stay.
    let (s, _) = call(&a.url, "POST", "/auth/keys/rotate", Some(&ta), None).await;
    assert_eq!(s, 200);
    let ka2 = read(&da);
    assert_ne!(ka2.kid, ka.kid);
    assert_eq!(read(&db).kid, kb.kid, "B keeps its key");
    let ta2 = ca.login("admin", &creds.password).await.unwrap().access_token;
    assert!(ta2.split('.').next() != ta.split('.').next(), "A signs with its new key");
    assert!(
        eventually(|| async { call(&b.url, "GET", "/auth/whoami", Some(&ta2), None).await.0 == 200 }).await,
        "B verifies A's new key"
    );
    for (token, url) in [(&ta, &b.url), (&tb, &a.url), (&tb, &b.url)] {
        assert_eq!(
            call(url, "GET", "/auth/whoami", Some(token), None).await.0,
            200,
            "older tokens verify at {url}"
        );
    }
    let keys: serde_json::Value =
        serde_json::from_slice(&call(&b.url, "GET", "/auth/keys", None, None).await.1).unwrap();
    let mut kids: Vec<&str> =
        keys["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    kids.sort_unstable();
    let mut expect = vec![ka.kid.as_str(), ka2.kid.as_str(), kb.kid.as_str()];
    expect.sort_unstable();
    assert_eq!(kids, expect);

    // What etcd holds: public keys, hashes, nothing else secret.
    let store = romana_store_etcd::EtcdStore::connect(std::slice::from_ref(&etcd.endpoint)).await.unwrap();
    assert_clean(&dump(&store).await, &[&ka, &ka2, &kb], &[&creds.password], "etcd after rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_user_reads_nothing_in_the_data_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("private");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let _d = common::embedded(&dir, &[]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.path()), 0o700, "the data dir (store, credentials, key) is private");
    for f in ["admin.credentials", "signing-key.pem"] {
        assert_eq!(mode(&dir.path().join(f)), 0o600, "{f}");
    }
}
