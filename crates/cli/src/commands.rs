//! The commands that talk to romanad over REST.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use romana_api::rest::{AddressRequest, HostRequest, RouteKind, SegmentRequest, TagsRequest, TenantRequest};
use romana_api::topology::TopologyRequest;
use romana_client::Client;

use crate::Format;
use crate::output::{kv, show};

pub fn parse_kv(items: &[String]) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("expected KEY=VALUE, got {s:?}"),
        })
        .collect()
}

fn read(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        return Ok(s);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// JSON or YAML text as a JSON value.
fn document(path: &Path) -> Result<serde_json::Value> {
    let text = read(path)?;
    match serde_json::from_str(&text) {
        Ok(v) => Ok(v),
        Err(json_err) => serde_saphyr::from_str::<serde_json::Value>(&text)
            .with_context(|| format!("{} is neither JSON ({json_err}) nor YAML", path.display())),
    }
}

pub async fn services(c: &Client, f: Format) -> Result<()> {
    let idx = c.index().await?;
    show(f, &idx, &["SERVICE", "INSTANCES"], |i| {
        i.services
            .iter()
            .map(|s| {
                vec![s.name.clone(), s.instances.iter().map(|x| x.url.clone()).collect::<Vec<_>>().join(", ")]
            })
            .collect()
    })
}

pub async fn networks(c: &Client, f: Format) -> Result<()> {
    let n = c.networks().await?;
    show(f, &n, &["NETWORK", "CIDR", "LAYOUT", "BLOCK", "TENANTS", "ALLOCATED", "BLACKED OUT"], |n| {
        n.iter()
            .map(|x| {
                vec![
                    x.name.clone(),
                    x.cidr.clone(),
                    x.layout.clone(),
                    format!("/{}", x.block_mask),
                    if x.tenants.is_empty() { "*".into() } else { x.tenants.join(",") },
                    x.allocated.to_string(),
                    x.blacked_out.join(","),
                ]
            })
            .collect()
    })
}

pub async fn topology_show(c: &Client, f: Format) -> Result<()> {
    let t = c.topology().await?;
    match f {
        Format::Table => {
            let spec = t.to_spec().map_err(|e| anyhow::anyhow!("{e}"))?;
            let ipam = romana_ipam::Ipam::new(spec)?;
            show(f, &t, &["NETWORK", "GROUP", "CIDR", "HOSTS"], |_| {
                ipam.groups()
                    .iter()
                    .filter(|g| !g.padding)
                    .map(|g| {
                        let hosts = g.hosts.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
                        vec![
                            g.network.to_string(),
                            format!("{}{}", "  ".repeat(g.depth), g.path),
                            g.cidr.to_string(),
                            hosts,
                        ]
                    })
                    .collect()
            })
        }
        _ => show(f, &t, &[], |_| vec![]),
    }
}

fn group_lines(t: &TopologyRequest) -> Result<Vec<String>> {
    let spec = t.to_spec().map_err(|e| anyhow::anyhow!("{e}"))?;
    let ipam = romana_ipam::Ipam::new(spec)?;
    let mut lines: Vec<String> =
        ipam.networks().iter().map(|n| format!("network {} {} /{}", n.name, n.cidr, n.block_mask)).collect();
    lines.extend(
        ipam.groups()
            .iter()
            .filter(|g| !g.padding)
            .map(|g| format!("group {} {} {}", g.network, g.path, g.cidr)),
    );
    Ok(lines)
}

pub async fn topology_apply(c: &Client, f: Format, file: &Path) -> Result<()> {
    let t: TopologyRequest = serde_json::from_value(document(file)?)
        .with_context(|| format!("{} is not a topology", file.display()))?;
    let change = c.apply_topology(&t).await?;
    show(
        f,
        &change,
        &["KEPT ADDRESSES", "KEPT HOSTS", "ADDED NETWORKS", "REMOVED NETWORKS", "DROPPED HOSTS"],
        |c| {
            vec![vec![
                c.kept_addresses.to_string(),
                c.kept_hosts.join(","),
                c.added_networks.join(","),
                c.removed_networks.join(","),
                c.dropped_hosts.join(","),
            ]]
        },
    )
}

/// What applying `file` would change in networks and groups (hosts and addresses are kept by the merge).
pub async fn topology_diff(c: &Client, file: &Path) -> Result<bool> {
    let want: TopologyRequest = serde_json::from_value(document(file)?)
        .with_context(|| format!("{} is not a topology", file.display()))?;
    let have = group_lines(&c.topology().await?)?;
    let want = group_lines(&want)?;
    let mut changed = false;
    for l in have.iter().filter(|l| !want.contains(l)) {
        println!("- {l}");
        changed = true;
    }
    for l in want.iter().filter(|l| !have.contains(l)) {
        println!("+ {l}");
        changed = true;
    }
    if !changed {
        println!("no change");
    }
    Ok(changed)
}

fn host_rows(hosts: &[romana_api::rest::Host]) -> Vec<Vec<String>> {
    hosts
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                // A dual-stack underlay shows both addresses in the one column.
                h.ipv6.as_ref().map_or_else(|| h.ip.clone(), |v6| format!("{} {v6}", h.ip)),
                h.agent_port.to_string(),
                kv(&h.tags),
                h.placements
                    .iter()
                    .map(|p| format!("{}:{} ({})", p.network, p.group, p.cidr))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect()
}

const HOST_HEADER: &[&str] = &["HOST", "IP", "AGENT PORT", "TAGS", "GROUPS"];

pub async fn host_list(c: &Client, f: Format) -> Result<()> {
    let l = c.hosts().await?;
    show(f, &l, HOST_HEADER, |l| host_rows(&l.hosts))
}

pub async fn host_add(
    c: &Client,
    f: Format,
    name: &str,
    (ip, ipv6): (&str, Option<&str>),
    port: Option<u16>,
    tags: &[String],
) -> Result<()> {
    let h = c
        .add_host(&HostRequest {
            name: name.into(),
            ip: ip.into(),
            ipv6: ipv6.map(Into::into),
            agent_port: port,
            tags: parse_kv(tags)?,
            k8s_info: None,
        })
        .await?;
    show(f, &h, HOST_HEADER, |h| host_rows(std::slice::from_ref(h)))
}

pub async fn host_show(c: &Client, f: Format, name: &str) -> Result<()> {
    let h = c.host(name).await?;
    show(f, &h, HOST_HEADER, |h| host_rows(std::slice::from_ref(h)))
}

pub async fn host_remove(c: &Client, f: Format, name: &str) -> Result<()> {
    let r = c.remove_host(name).await?;
    show(f, &r, &["RELEASED", "IP"], |r| r.iter().map(|a| vec![a.name.clone(), a.ip.clone()]).collect())
}

pub async fn host_tags(c: &Client, f: Format, name: &str, tags: &[String]) -> Result<()> {
    let h = c.set_tags(name, &TagsRequest { tags: parse_kv(tags)? }).await?;
    show(f, &h, HOST_HEADER, |h| host_rows(std::slice::from_ref(h)))
}

fn tenant_rows(t: &[romana_api::rest::Tenant]) -> Vec<Vec<String>> {
    t.iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.number.to_string(),
                t.external_id.clone(),
                kv(&t.labels),
                t.segments.iter().map(|s| format!("{}({})", s.name, s.number)).collect::<Vec<_>>().join(","),
                t.isolation.clone(),
            ]
        })
        .collect()
}

const TENANT_HEADER: &[&str] = &["TENANT", "NUMBER", "EXTERNAL ID", "LABELS", "SEGMENTS", "ISOLATION"];

pub async fn tenant_list(c: &Client, f: Format) -> Result<()> {
    let t = c.tenants().await?;
    show(f, &t, TENANT_HEADER, |t| tenant_rows(t))
}

pub async fn tenant_create(
    c: &Client,
    f: Format,
    name: &str,
    external_id: &str,
    labels: &[String],
    isolation: &str,
) -> Result<()> {
    let t = c
        .create_tenant(&TenantRequest {
            name: name.into(),
            external_id: external_id.into(),
            labels: parse_kv(labels)?,
            isolation: isolation.into(),
        })
        .await?;
    show(f, &t, TENANT_HEADER, |t| tenant_rows(std::slice::from_ref(t)))
}

pub async fn tenant_isolate(c: &Client, f: Format, name: &str, mode: &str) -> Result<()> {
    let cur = c.tenant(name).await?;
    let t = c
        .update_tenant(&TenantRequest {
            name: cur.name,
            external_id: cur.external_id,
            labels: cur.labels,
            isolation: mode.into(),
        })
        .await?;
    show(f, &t, TENANT_HEADER, |t| tenant_rows(std::slice::from_ref(t)))
}

const ENDPOINT_HEADER: &[&str] = &["ENDPOINT", "ADDRESS", "TENANT", "SEGMENT", "HOST", "LABELS"];

fn endpoint_rows(e: &[romana_api::rest::EndpointInfo]) -> Vec<Vec<String>> {
    e.iter()
        .map(|e| {
            vec![
                e.name.clone(),
                e.ip.clone(),
                e.tenant.clone(),
                e.segment.clone(),
                e.host.clone(),
                kv(&e.labels),
            ]
        })
        .collect()
}

pub async fn endpoint_list(c: &Client, f: Format) -> Result<()> {
    let e = c.endpoint_list().await?;
    show(f, &e, ENDPOINT_HEADER, |e| endpoint_rows(e))
}

pub async fn endpoint_label(c: &Client, f: Format, name: &str, labels: &[String]) -> Result<()> {
    let req = romana_api::rest::LabelsRequest { labels: parse_kv(labels)? };
    let e = c.set_endpoint_labels(name, &req).await?;
    show(f, &e, ENDPOINT_HEADER, |e| endpoint_rows(std::slice::from_ref(e)))
}

/// Every document of a YAML stream or a JSON file, with `List`s (kind `List` or
/// `NetworkPolicyList`) and Romana's `{"securitypolicies": [...]}` opened into their items.
fn policy_documents(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = read(path)?;
    let docs: Vec<serde_json::Value> = match serde_json::from_str(&text) {
        Ok(v) => vec![v],
        Err(json_err) => serde_saphyr::from_multiple(&text)
            .with_context(|| format!("{} is neither JSON ({json_err}) nor YAML", path.display()))?,
    };
    let mut out = Vec::new();
    for d in docs {
        match d {
            serde_json::Value::Null => {}
            serde_json::Value::Array(a) => out.extend(a),
            serde_json::Value::Object(mut m) if m.get("items").is_some_and(|v| v.is_array()) => {
                if let Some(serde_json::Value::Array(a)) = m.remove("items") {
                    out.extend(a);
                }
            }
            serde_json::Value::Object(mut m) if m.contains_key("securitypolicies") => {
                match m.remove("securitypolicies") {
                    Some(serde_json::Value::Array(a)) => out.extend(a),
                    _ => bail!("securitypolicies must be a list"),
                }
            }
            one => out.push(one),
        }
    }
    Ok(out)
}

fn is_k8s(doc: &serde_json::Value) -> bool {
    doc.get("kind").and_then(|k| k.as_str()) == Some("NetworkPolicy")
        || doc.get("apiVersion").and_then(|v| v.as_str()).is_some_and(|v| v.starts_with("networking.k8s.io"))
}

/// `romana policy apply -f`: each policy is sent on its own; a refused one prints every problem
/// romanad listed and the command fails at the end, after the others were applied.
pub async fn policy_apply(c: &Client, f: Format, file: &Path) -> Result<()> {
    let docs = policy_documents(file)?;
    if docs.is_empty() {
        bail!("{} holds no policy", file.display());
    }
    let mut applied: Vec<Vec<String>> = Vec::new();
    let mut failed = 0;
    for d in &docs {
        let (kind, r) = if is_k8s(d) {
            let name = format!(
                "{}/{}",
                d["metadata"]["namespace"].as_str().unwrap_or("?"),
                d["metadata"]["name"].as_str().unwrap_or("?")
            );
            ("NetworkPolicy", c.apply_netpol(d).await.map(|_| name))
        } else {
            ("Policy", c.add_policy(d).await.map(|p| if p.id.is_empty() { p.name } else { p.id }))
        };
        match r {
            Ok(name) => applied.push(vec![kind.to_owned(), name, "applied".to_owned()]),
            Err(e) => {
                failed += 1;
                eprintln!(
                    "romana: {kind} {}: {e}",
                    d["metadata"]["name"].as_str().or(d["name"].as_str()).unwrap_or("?")
                );
                if let romana_client::ClientError::Api { body, .. } = &e {
                    for problem in &body.details {
                        eprintln!("  - {problem}");
                    }
                }
            }
        }
    }
    show(f, &applied, &["KIND", "NAME", "RESULT"], |rows| rows.clone())?;
    if failed > 0 {
        bail!("{failed} of {} policies were refused", docs.len());
    }
    Ok(())
}

pub async fn netpol_list(c: &Client, f: Format) -> Result<()> {
    let list = c.netpols().await?;
    show(f, &list, &["NAMESPACE", "NAME", "POD SELECTOR", "TYPES"], |l| {
        l.iter()
            .map(|np| {
                vec![
                    np.metadata.namespace.clone(),
                    np.metadata.name.clone(),
                    kv(&np.spec.pod_selector.match_labels),
                    np.spec.policy_types.as_ref().map(|t| t.join(",")).unwrap_or_else(|| "(default)".into()),
                ]
            })
            .collect()
    })
}

pub async fn netpol_delete(c: &Client, namespace: &str, name: &str) -> Result<()> {
    c.delete_netpol(namespace, name).await?;
    Ok(())
}

pub async fn tenant_show(c: &Client, f: Format, name: &str) -> Result<()> {
    let t = c.tenant(name).await?;
    show(f, &t, TENANT_HEADER, |t| tenant_rows(std::slice::from_ref(t)))
}

pub async fn tenant_delete(c: &Client, name: &str) -> Result<()> {
    c.delete_tenant(name).await?;
    println!("tenant {name} deleted");
    Ok(())
}

const SEGMENT_HEADER: &[&str] = &["TENANT", "SEGMENT", "NUMBER", "EXTERNAL ID", "LABELS"];

fn segment_rows(s: &[romana_api::rest::Segment]) -> Vec<Vec<String>> {
    s.iter()
        .map(|s| {
            vec![s.tenant.clone(), s.name.clone(), s.number.to_string(), s.external_id.clone(), kv(&s.labels)]
        })
        .collect()
}

pub async fn segment_list(c: &Client, f: Format, tenant: &str) -> Result<()> {
    let s = c.segments(tenant).await?;
    show(f, &s, SEGMENT_HEADER, |s| segment_rows(s))
}

pub async fn segment_add(
    c: &Client,
    f: Format,
    tenant: &str,
    name: &str,
    external_id: &str,
    labels: &[String],
) -> Result<()> {
    let s = c
        .add_segment(
            tenant,
            &SegmentRequest { name: name.into(), external_id: external_id.into(), labels: parse_kv(labels)? },
        )
        .await?;
    show(f, &s, SEGMENT_HEADER, |s| segment_rows(std::slice::from_ref(s)))
}

pub async fn segment_remove(c: &Client, tenant: &str, name: &str) -> Result<()> {
    c.delete_segment(tenant, name).await?;
    println!("segment {name} of tenant {tenant} deleted");
    Ok(())
}

const ADDRESS_HEADER: &[&str] = &["NAME", "IP", "HOST", "TENANT", "SEGMENT", "NETWORK", "BLOCK"];

fn address_rows(a: &[romana_api::rest::Address]) -> Vec<Vec<String>> {
    a.iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.ip.clone(),
                a.host.clone(),
                a.tenant.clone(),
                a.segment.clone(),
                a.network.clone(),
                a.block.clone(),
            ]
        })
        .collect()
}

pub async fn address_list(c: &Client, f: Format, host: Option<&str>, tenant: Option<&str>) -> Result<()> {
    let mut q = Vec::new();
    if let Some(h) = host {
        q.push(format!("host={h}"));
    }
    if let Some(t) = tenant {
        q.push(format!("tenant={t}"));
    }
    let query = if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) };
    let a = c.addresses(&query).await?;
    show(f, &a, ADDRESS_HEADER, |a| address_rows(a))
}

#[allow(clippy::too_many_arguments)]
pub async fn address_allocate(
    c: &Client,
    f: Format,
    name: &str,
    host: &str,
    tenant: &str,
    segment: &str,
    ip: Option<&str>,
    token: Option<&str>,
) -> Result<()> {
    let req = AddressRequest {
        name: name.into(),
        host: host.into(),
        tenant: tenant.into(),
        segment: segment.into(),
        ip: ip.map(str::to_owned),
    };
    let a = c.allocate(&req, token).await?;
    show(f, &a, ADDRESS_HEADER, |a| address_rows(std::slice::from_ref(a)))
}

pub async fn address_show(c: &Client, f: Format, key: &str) -> Result<()> {
    let a = c.address(key).await?;
    show(f, &a, ADDRESS_HEADER, |a| address_rows(std::slice::from_ref(a)))
}

pub async fn address_release(c: &Client, f: Format, key: &str) -> Result<()> {
    let a = c.release(key).await?;
    show(f, &a, &["RELEASED", "IP", "HOST"], |a| vec![vec![a.name.clone(), a.ip.clone(), a.host.clone()]])
}

pub async fn block_list(c: &Client, f: Format) -> Result<()> {
    let b = c.blocks().await?;
    show(f, &b, &["NETWORK", "BLOCK", "TENANT:SEGMENT", "HOST", "USED"], |b| {
        b.blocks
            .iter()
            .map(|x| {
                let owner = if x.host.is_empty() {
                    "(reusable)".into()
                } else {
                    format!("{}:{}", x.tenant, x.segment)
                };
                vec![
                    x.network.clone(),
                    x.cidr.clone(),
                    owner,
                    x.host.clone(),
                    format!("{}/{}", x.allocated_ip_count, x.capacity),
                ]
            })
            .collect()
    })
}

pub async fn blackout_list(c: &Client, f: Format) -> Result<()> {
    let b = c.blackouts().await?;
    show(f, &b, &["BLACKED OUT"], |b| b.iter().map(|x| vec![x.cidr.clone()]).collect())
}

pub async fn blackout_add(c: &Client, cidr: &str) -> Result<()> {
    c.add_blackout(cidr).await?;
    println!("{cidr} blacked out");
    Ok(())
}

pub async fn blackout_remove(c: &Client, cidr: &str) -> Result<()> {
    c.remove_blackout(cidr).await?;
    println!("{cidr} no longer blacked out");
    Ok(())
}

const POLICY_HEADER: &[&str] = &["ID", "DIRECTION", "APPLIED TO", "INGRESS", "EGRESS", "DESCRIPTION"];

fn policy_rows(p: &[romana_api::policy::Policy]) -> Vec<Vec<String>> {
    let target = |e: &romana_api::policy::PolicyPeer| {
        [e.dest.as_str(), e.cidr.as_str(), e.tenant.as_str(), e.segment.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/")
    };
    p.iter()
        .map(|p| {
            vec![
                p.id.clone(),
                p.direction.clone(),
                p.applied_to.iter().map(target).collect::<Vec<_>>().join(","),
                p.ingress.len().to_string(),
                p.egress.len().to_string(),
                p.description.clone(),
            ]
        })
        .collect()
}

pub async fn policy_list(c: &Client, f: Format) -> Result<()> {
    let p = c.policies().await?;
    show(f, &p, POLICY_HEADER, |p| policy_rows(p))
}

/// Adds every policy in a file: `{"securitypolicies": [...]}`, a list, or one policy (JSON or YAML).
pub async fn policy_add(c: &Client, f: Format, file: &Path) -> Result<()> {
    let doc = document(file)?;
    let list = match doc {
        serde_json::Value::Object(mut m) if m.contains_key("securitypolicies") => {
            match m.remove("securitypolicies") {
                Some(serde_json::Value::Array(a)) => a,
                _ => bail!("securitypolicies must be a list"),
            }
        }
        serde_json::Value::Array(a) => a,
        one => vec![one],
    };
    let mut added = Vec::new();
    let mut failed = 0;
    for p in &list {
        match c.add_policy(p).await {
            Ok(p) => added.push(p),
            Err(e) => {
                failed += 1;
                eprintln!(
                    "romana: policy {}: {e}",
                    p.get("id").or_else(|| p.get("name")).and_then(|v| v.as_str()).unwrap_or("?")
                );
            }
        }
    }
    show(f, &added, POLICY_HEADER, |p| policy_rows(p))?;
    if failed > 0 {
        bail!("{failed} of {} policies were refused", list.len());
    }
    Ok(())
}

pub async fn policy_show(c: &Client, f: Format, id: &str) -> Result<()> {
    let p = c.policy(id).await?;
    match f {
        Format::Table => println!("{}", serde_json::to_string_pretty(&p)?),
        _ => show(f, &p, &[], |_| vec![])?,
    }
    Ok(())
}

pub async fn policy_remove(c: &Client, id: &str) -> Result<()> {
    c.delete_policy(id).await?;
    println!("policy {id} deleted");
    Ok(())
}

pub async fn routes(c: &Client, f: Format, host: &str) -> Result<()> {
    let r = c.routes(host).await?;
    show(f, &r, &["DESTINATION", "KIND", "VIA", "VIA IP"], |r| {
        r.routes
            .iter()
            .map(|x| {
                let via_ip = match &x.kind {
                    RouteKind::Host { via_ip, .. } => via_ip.clone(),
                    _ => String::new(),
                };
                vec![x.dest.clone(), x.kind.name().to_owned(), x.kind.via().to_owned(), via_ip]
            })
            .collect()
    })
}

/// A password from the kernel's random source: 24 characters of a-z A-Z 0-9.
pub fn random_password() -> Result<String> {
    use std::io::Read;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    // 62 does not divide 256; the bias (under 2% per character) does not matter at this length.
    Ok(bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect())
}

/// Who a new user is: its name, roles, and what it is bound to (tenants of a tenant user, hosts
/// of an agent).
pub struct NewUser<'a> {
    pub name: &'a str,
    pub roles: &'a [String],
    pub tenants: &'a [String],
    pub hosts: &'a [String],
}

/// Where a new user's credentials file goes, and the CA (PEM) it tells clients to trust.
#[derive(Debug, Clone, Copy)]
pub struct CredentialsOut<'a> {
    pub path: &'a Path,
    pub ca: Option<&'a str>,
}

/// Creates a user and, with `credentials_out`, writes a credentials file (0600) an agent or the
/// CLI can log in with. Returns the user and the password (generated when not given).
pub async fn create_user(
    c: &Client,
    new: &NewUser<'_>,
    password: Option<String>,
    credentials_out: Option<CredentialsOut<'_>>,
) -> Result<(romana_api::rest::User, String)> {
    let name = new.name;
    let password = match password {
        Some(p) => p,
        None => random_password()?,
    };
    let req = romana_api::rest::UserRequest {
        name: name.into(),
        password: password.clone(),
        roles: new.roles.to_vec(),
        tenants: new.tenants.to_vec(),
        hosts: new.hosts.to_vec(),
    };
    let u = c.create_user(&req).await.with_context(|| format!("creating user {name}"))?;
    if let Some(CredentialsOut { path, ca }) = credentials_out {
        let creds = romana_api::rest::Credentials {
            endpoint: c.endpoints().join(","),
            username: name.into(),
            password: password.clone(),
            ca: ca.map(str::to_owned),
        };
        crate::write_private(path, &serde_json::to_string_pretty(&creds)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok((u, password))
}

/// `romana user delete`: deleting a user that is already gone is success (reconcilers such as
/// deploy/kubernetes/bootstrap.sh delete before they re-create).
pub async fn user_delete(c: &Client, name: &str) -> Result<()> {
    match c.delete_user(name).await {
        Ok(()) => eprintln!("deleted user {name}"),
        Err(e) if e.status() == Some(404) => eprintln!("user {name} does not exist; nothing to delete"),
        Err(e) => return Err(e).with_context(|| format!("deleting user {name}")),
    }
    Ok(())
}

/// `romana user create`: the password is printed only when it was generated and not written to a
/// credentials file.
pub async fn user_create(
    c: &Client,
    f: Format,
    new: &NewUser<'_>,
    password: Option<String>,
    credentials_out: Option<CredentialsOut<'_>>,
) -> Result<()> {
    let name = new.name;
    let generated = password.is_none();
    let (u, password) = create_user(c, new, password, credentials_out).await?;
    match credentials_out {
        Some(CredentialsOut { path, .. }) => {
            eprintln!("credentials for {name} written to {} (mode 0600)", path.display())
        }
        None if generated => eprintln!("generated password for {name}: {password}"),
        None => {}
    }
    show(f, &u, &["NAME", "ROLES", "TENANTS", "HOSTS"], |u| {
        vec![vec![u.name.clone(), u.roles.join(","), u.tenants.join(","), u.hosts.join(",")]]
    })
}
