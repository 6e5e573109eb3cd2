//! The romanad side: reads what romanad holds into `Actual` and performs one `Write` through
//! `romana-client`, renewing the access token once when it has expired. Knows nothing of
//! Kubernetes.

use std::collections::BTreeSet;

use reqwest::Method;
use romana_api::rest::{Credentials, HostRequest, SegmentRequest, TagsRequest};
use romana_api::vip::VipInfo;
use romana_client::{Client, ClientError};

use crate::map::HostDesired;
use crate::plan::Write;
use crate::state::{Actual, EndpointActual, TenantActual, parse_pod_ref};

/// How a write ended, when not well.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// romanad refused the content (400/422): retrying the same content cannot help.
    #[error("romanad refused it: {0}")]
    Refused(String),
    /// The node's host exists with another address.
    #[error("host {name} exists with IP {held}, the node says {wanted}: left alone")]
    HostConflict { name: String, held: String, wanted: String },
    #[error(transparent)]
    Other(#[from] ClientError),
}

#[derive(Debug)]
pub struct Romanad {
    pub client: Client,
    creds: Credentials,
}

fn absent_ok(r: Result<(), ClientError>) -> Result<(), ClientError> {
    match r {
        Err(e) if e.status() == Some(404) => Ok(()),
        r => r,
    }
}

impl Romanad {
    /// Logs in with the credentials; `endpoints` (when given) replace the file's endpoint.
    pub async fn connect(creds: Credentials, endpoints: Option<Vec<String>>) -> Result<Romanad, ClientError> {
        let tls =
            creds.ca.as_ref().map(|ca| romana_client::Tls { ca_pem: Some(ca.clone()), ..Default::default() });
        let endpoints = endpoints.unwrap_or_else(|| romana_client::endpoint_list(&creds.endpoint));
        let client = Client::with_tls(endpoints, tls.as_ref())?;
        client.login(&creds.username, &creds.password).await?;
        Ok(Romanad { client, creds })
    }

    /// Renews the token after a 401; true when the caller should retry.
    async fn renewed(&self, e: &ClientError) -> bool {
        e.status() == Some(401) && self.client.renew(&self.creds.username, &self.creds.password).await.is_ok()
    }

    /// Everything the plan compares, read afresh.
    pub async fn read(&self) -> Result<Actual, ClientError> {
        match self.read_once().await {
            Err(e) if self.renewed(&e).await => self.read_once().await,
            r => r,
        }
    }

    async fn read_once(&self) -> Result<Actual, ClientError> {
        let c = &self.client;
        let (tenants, pods, hosts, netpols, endpoints, vips) =
            tokio::try_join!(c.tenants(), c.pods(), c.hosts(), c.netpols(), self.endpoints(), c.vips())?;
        let vips = vips.into_iter().map(|v| (v.address.clone(), v)).collect();
        let mut a = Actual { endpoints, vips, ..Actual::default() };
        for t in tenants {
            let segments: BTreeSet<String> = t.segments.iter().map(|s| s.name.clone()).collect();
            let req = romana_api::rest::TenantRequest {
                name: t.name.clone(),
                external_id: t.external_id,
                labels: t.labels,
                isolation: if t.isolation.is_empty() { "none".into() } else { t.isolation },
            };
            a.tenants.insert(t.name, TenantActual { req, segments });
        }
        for p in pods {
            a.pods.insert((p.namespace.clone(), p.name.clone()), p);
        }
        for h in hosts.hosts {
            a.hosts.insert(h.name.clone(), HostDesired { name: h.name, ip: h.ip, tags: h.tags });
        }
        for n in netpols {
            a.netpols.insert((n.metadata.namespace.clone(), n.metadata.name.clone()), n);
        }
        Ok(a)
    }

    /// `GET /endpoints` read loosely: only the name, tenant and `pod` ("namespace/name", set by
    /// CNI ADD of a kubelet pod) matter here.
    async fn endpoints(&self) -> Result<std::collections::BTreeMap<String, EndpointActual>, ClientError> {
        let resp = self.client.send(Method::GET, "/endpoints", None).await?;
        let url = resp.url().to_string();
        let status = resp.status().as_u16();
        let body: serde_json::Value =
            resp.json().await.map_err(|e| ClientError::Decode { url: url.clone(), detail: e.to_string() })?;
        if status >= 400 {
            return Err(ClientError::Decode { url, detail: format!("status {status}: {body}") });
        }
        let list = body.as_array().cloned().unwrap_or_default();
        Ok(list
            .iter()
            .filter_map(|e| {
                let name = e.get("name")?.as_str()?.to_owned();
                let tenant = e.get("tenant").and_then(|t| t.as_str()).unwrap_or("").to_owned();
                let pod = e.get("pod").and_then(|p| p.as_str()).and_then(parse_pod_ref);
                Some((name, EndpointActual { tenant, pod }))
            })
            .collect())
    }

    /// Performs one write; for a VIP's creation, the record romanad made (its address may have
    /// been drawn).
    pub async fn apply(&self, w: &Write) -> Result<Option<VipInfo>, WriteError> {
        match self.apply_once(w).await {
            Err(WriteError::Other(e)) if self.renewed(&e).await => self.apply_once(w).await,
            r => r,
        }
    }

    async fn apply_once(&self, w: &Write) -> Result<Option<VipInfo>, WriteError> {
        let c = &self.client;
        let refused = |e: ClientError| match e.status() {
            Some(400 | 422) => WriteError::Refused(e.to_string()),
            _ => WriteError::Other(e),
        };
        // A VIP's address taken or out of the ranges (409) is the Service's to fix, like a 422.
        let vip_refused = |e: ClientError| match e.status() {
            Some(400 | 409 | 422) => WriteError::Refused(e.to_string()),
            _ => WriteError::Other(e),
        };
        match w {
            Write::PutTenant { create, req } => {
                let r = if *create { c.create_tenant(req).await } else { c.update_tenant(req).await };
                match r {
                    // Someone (another replica, an operator) made it, or it went: the other call.
                    Err(e) if *create && e.status() == Some(409) => {
                        c.update_tenant(req).await.map_err(refused)?
                    }
                    Err(e) if !*create && e.status() == Some(404) => {
                        c.create_tenant(req).await.map_err(refused)?
                    }
                    r => r.map_err(refused)?,
                };
            }
            Write::AddSegment { tenant, segment } => {
                let req = SegmentRequest {
                    name: segment.clone(),
                    external_id: String::new(),
                    labels: Default::default(),
                };
                match c.add_segment(tenant, &req).await {
                    Err(e) if e.status() == Some(409) => {}
                    r => drop(r.map_err(refused)?),
                }
            }
            Write::AddHost(h) => {
                let req = HostRequest {
                    name: h.name.clone(),
                    ip: h.ip.clone(),
                    ipv6: None,
                    agent_port: None,
                    tags: h.tags.clone(),
                    k8s_info: None,
                };
                match c.add_host(&req).await {
                    Ok(got) if got.ip == h.ip && got.tags != h.tags => {
                        c.set_tags(&h.name, &TagsRequest { tags: h.tags.clone() }).await?;
                    }
                    Ok(got) if got.ip != h.ip => {
                        return Err(WriteError::HostConflict {
                            name: h.name.clone(),
                            held: got.ip,
                            wanted: h.ip.clone(),
                        });
                    }
                    Ok(_) => {}
                    // Registered meanwhile (the agent): same IP is success, then our tags.
                    Err(e) if e.status() == Some(409) => {
                        let got = c.host(&h.name).await?;
                        if got.ip != h.ip {
                            return Err(WriteError::HostConflict {
                                name: h.name.clone(),
                                held: got.ip,
                                wanted: h.ip.clone(),
                            });
                        }
                        c.set_tags(&h.name, &TagsRequest { tags: h.tags.clone() }).await?;
                    }
                    Err(e) => return Err(refused(e)),
                }
            }
            Write::SetTags { host, tags } => {
                drop(c.set_tags(host, &TagsRequest { tags: tags.clone() }).await.map_err(refused)?)
            }
            Write::ApplyNetpol(_, n) => drop(c.apply_netpol(&n.json).await.map_err(refused)?),
            Write::PutPod(p) => drop(c.put_pod(p).await.map_err(refused)?),
            Write::DeletePod((ns, name)) => absent_ok(c.delete_pod(ns, name).await)?,
            Write::DeleteNetpol((ns, name)) => absent_ok(c.delete_netpol(ns, name).await.map(drop))?,
            Write::Reclaim(e) => {
                absent_ok(c.delete_endpoint(e).await)?;
                absent_ok(c.release(e).await.map(drop))?;
            }
            Write::DeleteTenant(t) => absent_ok(c.delete_tenant(t).await)?,
            Write::RemoveHost(h) => absent_ok(c.remove_host(h).await.map(drop))?,
            Write::CreateVip(r) => return Ok(Some(c.add_vip(r).await.map_err(vip_refused)?)),
            Write::ReplaceVip(r) => {
                absent_ok(c.delete_vip(&r.address).await.map(drop))?;
                return Ok(Some(c.add_vip(r).await.map_err(vip_refused)?));
            }
            Write::DeleteVip(addr, _) => absent_ok(c.delete_vip(addr).await.map(drop))?,
        }
        Ok(None)
    }
}
