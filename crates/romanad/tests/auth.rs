//! Authentication and authorization, black box: the authorization matrix over every route of the
//! table, logins and their rate limit, malformed tokens, refresh and key rotation, the first
//! admin's credentials, and TLS.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use romana_api::rest::{Credentials, TenantRequest, UserRequest};
use romana_auth::{Claims, Decision, Principal, Role, SigningKey, TokenKind, b64_encode, decide};
use romana_client::Client;
use romana_test_support::{Romanad, TempDir};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The signing key romanad keeps in its data directory (the test reads it to craft tokens).
fn replica_key(data_dir: &Path) -> SigningKey {
    romana_services::key_file::read(&data_dir.join("signing-key.pem")).unwrap()
}

fn claims(sub: &str, roles: &[Role], tenants: &[&str], exp: u64) -> Claims {
    Claims {
        sub: sub.into(),
        roles: roles.to_vec(),
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        hosts: vec![],
        iat: now(),
        exp,
        typ: TokenKind::Access,
    }
}

async fn status(url: &str, method: &str, path: &str, token: Option<&str>, body: bool) -> u16 {
    let mut req = romana_client::http()
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{url}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body {
        req = req.header("content-type", "application/json").body("{}");
    }
    match tokio::time::timeout(std::time::Duration::from_secs(3), req.send()).await {
        Ok(Ok(r)) => r.status().as_u16(),
        Ok(Err(e)) => panic!("{method} {path}: {e}"),
        Err(_) => 200, // the watch stream stays open: it was allowed
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_over_every_route() {
    let etcd = common::etcd("authz");
    let dir = TempDir::new("authz");
    let d = common::on_etcd(&etcd, "/authz/", &["--data-dir", &dir.path().display().to_string()]);
    let admin = common::admin(&dir).await;
    for t in ["red", "blue"] {
        admin
            .create_tenant(&TenantRequest {
                name: t.into(),
                external_id: String::new(),
                labels: Default::default(),
                isolation: Default::default(),
            })
            .await
            .unwrap();
    }
    // Real accounts, logged in.
    let mk = |name: &str, roles: &[&str], tenants: &[&str]| UserRequest {
        name: name.into(),
        password: format!("{name}-password-123"),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        hosts: vec![],
    };
    admin.create_user(&mk("agent-1", &["service"], &[])).await.unwrap();
    admin.create_user(&mk("alice", &["tenant"], &["red"])).await.unwrap();
    let login = |user: &'static str| {
        let url = d.url.clone();
        async move {
            let c = Client::new(vec![url]);
            c.login(user, &format!("{user}-password-123")).await.unwrap();
            c.token().unwrap()
        }
    };
    let (svc_t, alice_t) = (login("agent-1").await, login("alice").await);
    let admin_t = admin.token().unwrap();
    // Crafted tokens: expired, forged (claims edited after signing), and signed by another key.
    let key = replica_key(dir.path());
    let expired = key.sign(&claims("admin", &[Role::Admin], &[], now() - 10));
    let mut parts: Vec<String> = alice_t.split('.').map(str::to_owned).collect();
    parts[1] = b64_encode(&serde_json::to_vec(&claims("alice", &[Role::Admin], &[], now() + 600)).unwrap());
    let forged = parts.join(".");
    let other_key = SigningKey::generate(&ring::rand::SystemRandom::new()).sign(&claims(
        "admin",
        &[Role::Admin],
        &[],
        now() + 600,
    ));

    let svc =
        Principal { name: "agent-1".into(), roles: vec![Role::Service], tenants: vec![], hosts: vec![] };
    let alice = Principal {
        name: "alice".into(),
        roles: vec![Role::Tenant],
        tenants: vec!["red".into()],
        hosts: vec![],
    };
    let adm = Principal { name: "admin".into(), roles: vec![Role::Admin], tenants: vec![], hosts: vec![] };
    // (case, token, principal as verified, tenant in the path)
    let cases: Vec<(&str, Option<&str>, Option<&Principal>, &str)> = vec![
        ("anonymous", None, None, "zz"),
        ("expired", Some(&expired), None, "zz"),
        ("forged", Some(&forged), None, "zz"),
        ("other key", Some(&other_key), None, "zz"),
        ("tenant on another tenant", Some(&alice_t), Some(&alice), "blue"),
        ("tenant on its own", Some(&alice_t), Some(&alice), "red"),
        ("service", Some(&svc_t), Some(&svc), "zz"),
        ("admin", Some(&admin_t), Some(&adm), "zz"),
    ];
    let mut checked = 0;
    for r in romana_services::rest_routes::ROUTES {
        for (case, token, principal, tenant) in &cases {
            let path = r
                .path
                .replace("{tenant}", tenant)
                .replace("{segment}", "s")
                .replace("{service}", "ipam")
                .replace("{network}", "n")
                .replace("{host}", "nohost")
                .replace("{name}", "noaddr")
                .replace("{id}", "nopolicy")
                .replace("{user}", "nobody");
            let path_tenant = r.path.contains("{tenant}").then_some(*tenant);
            let expect = decide(r.access, *principal, path_tenant);
            let got = status(
                &d.url,
                r.method,
                &path,
                *token,
                r.request.is_some() || r.method == "POST" || r.method == "PUT",
            )
            .await;
            match expect {
                Decision::Unauthenticated => assert_eq!(got, 401, "{case}: {} {path}", r.method),
                Decision::Forbidden => assert_eq!(got, 403, "{case}: {} {path}", r.method),
                Decision::Allow => {
                    assert!(got != 401 && got != 403, "{case}: {} {path} answered {got}", r.method)
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, romana_services::rest_routes::ROUTES.len() * cases.len(), "every route, every case");

    // Tenant scoping inside handlers: alice sees and changes only red.
    let alice_c = common::same_token(&admin, &d.url);
    alice_c.set_token(Some(alice_t.clone()));
    assert_eq!(
        alice_c.tenants().await.unwrap().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        vec!["red"]
    );
    let blue_policy = serde_json::json!({"id": "b", "applied_to": [{"tenant": "blue"}], "ingress": [{"peers": [{"peer": "any"}], "rules": [{"protocol": "any"}]}]});
    assert_eq!(alice_c.add_policy(&blue_policy).await.unwrap_err().status(), Some(403));
    admin.add_policy(&blue_policy).await.unwrap();
    assert!(alice_c.policies().await.unwrap().is_empty(), "blue's policy is invisible to alice");
    assert_eq!(alice_c.policy("b").await.unwrap_err().status(), Some(404));
    let red_policy = serde_json::json!({"id": "r", "applied_to": [{"tenant": "red"}], "ingress": [{"peers": [{"peer": "any"}], "rules": [{"protocol": "any"}]}]});
    alice_c.add_policy(&red_policy).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_tokens_keys_and_credentials() {
    let dir = TempDir::new("login");
    let log = dir.path().join("romanad.log");
    let d = Romanad::start_logged(
        Path::new(common::BIN),
        &["--data-dir".into(), dir.path().display().to_string()],
        Some(&log),
    )
    .unwrap();
    let creds_path = dir.path().join("admin.credentials");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&creds_path).unwrap().permissions().mode() & 0o777,
        0o600,
        "credentials are private"
    );
    let creds: Credentials = serde_json::from_str(&std::fs::read_to_string(&creds_path).unwrap()).unwrap();
    assert_eq!(creds.endpoint, d.url);

    // Malformed credentials get 401 with a message.
    for (header, needle) in [
        ("Basic YWRtaW46eA==", "Bearer"),
        ("Bearer ", "empty"),
        ("Bearer not.a.token", "malformed token"),
        ("Bearer a.b.c.d", "malformed token"),
    ] {
        let r = romana_client::http()
            .get(format!("{}/hosts", d.url))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{header}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains(needle), "{header}: {body}");
    }

    // Refresh, whoami, and rotation without downtime.
    let admin = Client::new(vec![d.url.clone()]);
    let tokens = admin.login("admin", &creds.password).await.unwrap();
    assert_eq!(admin.whoami().await.unwrap().name, "admin");
    let old_token = tokens.access_token.clone();
    let refreshed = Client::new(vec![d.url.clone()]);
    refreshed.refresh(&tokens.refresh_token).await.unwrap();
    assert_eq!(refreshed.whoami().await.unwrap().roles, vec!["admin"]);
    assert_eq!(
        refreshed.refresh(&tokens.access_token).await.unwrap_err().status(),
        Some(401),
        "an access token is no refresh token"
    );
    let r = romana_client::http()
        .post(format!("{}/auth/keys/rotate", d.url))
        .bearer_auth(&old_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let keys: serde_json::Value =
        romana_client::http().get(format!("{}/auth/keys", d.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    assert_eq!(admin.whoami().await.unwrap().name, "admin", "tokens of the old key still verify");
    let fresh = Client::new(vec![d.url.clone()]);
    let t = fresh.login("admin", &creds.password).await.unwrap();
    assert_ne!(t.access_token.split('.').next(), old_token.split('.').next(), "new tokens name the new key");

    // Wrong passwords are rate limited (and so is the right one meanwhile).
    let c = Client::new(vec![d.url.clone()]);
    for _ in 0..5 {
        assert_eq!(c.login("admin", "wrong").await.unwrap_err().status(), Some(401));
    }
    assert_eq!(c.login("admin", "wrong").await.unwrap_err().status(), Some(429));
    assert_eq!(c.login("admin", &creds.password).await.unwrap_err().status(), Some(429));
    assert_eq!(c.login("nobody", "x").await.unwrap_err().status(), Some(401), "other names are not locked");

    // Secrets never reach the log.
    drop(d);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains(&creds.password) && !text.contains(&old_token), "a secret in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_self_signed_and_client_certificates() {
    let dir = TempDir::new("tls");
    let d = common::embedded(&dir, &["--tls-self-signed"]);
    assert!(d.url.starts_with("https://"), "{}", d.url);
    let creds: Credentials =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("admin.credentials")).unwrap())
            .unwrap();
    let ca = creds.ca.clone().expect("the credentials carry the CA");
    let c = Client::from_credentials(&creds).await.unwrap();
    assert_eq!(c.whoami().await.unwrap().name, "admin");

    // Another CA is refused, and so is plain HTTP on the TLS port.
    let other = rcgen::CertifiedIssuer::self_signed(
        {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p
        },
        rcgen::KeyPair::generate().unwrap(),
    )
    .unwrap();
    let wrong = Client::with_tls(
        vec![d.url.clone()],
        Some(&romana_client::Tls { ca_pem: Some(other.pem()), ..Default::default() }),
    )
    .unwrap();
    assert!(wrong.index().await.is_err(), "a client trusting another CA is refused");
    let plain = romana_client::http().get(d.url.replacen("https://", "http://", 1)).send().await;
    assert!(plain.is_err() || plain.unwrap().status().is_server_error(), "plain HTTP gets no answer");

    // Client certificates: required when --tls-client-ca is given.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let client_ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let client_ca_path = dir.path().join("client-ca.pem");
    std::fs::write(&client_ca_path, client_ca.pem()).unwrap();
    let agent_key = rcgen::KeyPair::generate().unwrap();
    let agent_cert = rcgen::CertificateParams::new(vec!["agent-1".into()])
        .unwrap()
        .signed_by(&agent_key, &client_ca)
        .unwrap();
    let dir2 = TempDir::new("mtls");
    let m = common::embedded(
        &dir2,
        &["--tls-self-signed", "--tls-client-ca", &client_ca_path.display().to_string()],
    );
    let ca2: Credentials =
        serde_json::from_str(&std::fs::read_to_string(dir2.path().join("admin.credentials")).unwrap())
            .unwrap();
    let no_cert = Client::with_tls(
        vec![m.url.clone()],
        Some(&romana_client::Tls { ca_pem: ca2.ca.clone(), ..Default::default() }),
    )
    .unwrap();
    assert!(no_cert.index().await.is_err(), "no client certificate, no connection");
    let with_cert = Client::with_tls(
        vec![m.url.clone()],
        Some(&romana_client::Tls {
            ca_pem: ca2.ca.clone(),
            client_cert_pem: Some(agent_cert.pem()),
            client_key_pem: Some(agent_key.serialize_pem()),
        }),
    )
    .unwrap();
    assert_eq!(with_cert.index().await.unwrap().service_name, "root");
    let _ = ca;
}
