//! The few messages of the Kubernetes CRI (`runtime.v1`, k8s.io/cri-api `api.proto`) that
//! kubelet's pod sandbox lifecycle uses, written as prost messages with the proto's field
//! numbers (proto3 readers skip the fields left out), and a client that calls them on
//! containerd's Unix socket over tonic: what kubelet does, without kubelet.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tonic::codegen::http::Uri;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionRequest {
    #[prost(string, tag = "1")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(string, tag = "2")]
    pub hostname: String,
    #[prost(string, tag = "3")]
    pub log_directory: String,
    #[prost(map = "string, string", tag = "6")]
    pub labels: HashMap<String, String>,
    #[prost(map = "string, string", tag = "7")]
    pub annotations: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    pub config: Option<PodSandboxConfig>,
    #[prost(string, tag = "2")]
    pub runtime_handler: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxResponse {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// `StopPodSandboxRequest`, `RemovePodSandboxRequest`: the sandbox's id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxId {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxNetworkStatus {
    #[prost(string, tag = "1")]
    pub ip: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatus {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "5")]
    pub network: Option<PodSandboxNetworkStatus>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<PodSandboxStatus>,
    /// With `verbose`: containerd's `info`, JSON (the runtime spec, with the network namespace).
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

/// Connects to a Unix socket for tonic.
#[derive(Clone)]
struct Uds(PathBuf);

impl tower_service::Service<Uri> for Uds {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) })
    }
}

/// A CRI `RuntimeService` client on a Unix socket.
#[derive(Clone)]
pub struct Cri(Channel);

const SERVICE: &str = "/runtime.v1.RuntimeService/";

impl Cri {
    pub async fn connect(socket: PathBuf) -> Result<Cri, tonic::transport::Error> {
        // The authority is never used: the connector dials the socket.
        Ok(Cri(Endpoint::from_static("http://localhost").connect_with_connector(Uds(socket)).await?))
    }

    async fn call<Q, A>(&self, method: &str, req: Q) -> Result<A, tonic::Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.0.clone());
        grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = PathAndQuery::try_from(format!("{SERVICE}{method}")).expect("a method path");
        let codec = tonic_prost::ProstCodec::<Q, A>::default();
        Ok(grpc.unary(tonic::Request::new(req), path, codec).await?.into_inner())
    }

    pub async fn version(&self) -> Result<VersionResponse, tonic::Status> {
        self.call("Version", VersionRequest { version: "v1".into() }).await
    }

    /// RunPodSandbox as kubelet sends it: the pod's name, uid and namespace.
    pub async fn run(&self, namespace: &str, name: &str, uid: &str) -> Result<String, tonic::Status> {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            hostname: name.into(),
            ..Default::default()
        };
        let req = RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() };
        let r: RunPodSandboxResponse = self.call("RunPodSandbox", req).await?;
        Ok(r.pod_sandbox_id)
    }

    pub async fn stop(&self, id: &str) -> Result<(), tonic::Status> {
        self.call::<_, Empty>("StopPodSandbox", SandboxId { pod_sandbox_id: id.into() }).await.map(|_| ())
    }

    pub async fn remove(&self, id: &str) -> Result<(), tonic::Status> {
        self.call::<_, Empty>("RemovePodSandbox", SandboxId { pod_sandbox_id: id.into() }).await.map(|_| ())
    }

    /// The sandbox's IP and its network namespace's path (from the verbose info's runtime spec).
    pub async fn status(&self, id: &str) -> Result<(String, String), tonic::Status> {
        let req = PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true };
        let r: PodSandboxStatusResponse = self.call("PodSandboxStatus", req).await?;
        let ip = r.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default();
        let info: serde_json::Value =
            r.info.get("info").and_then(|i| serde_json::from_str(i).ok()).unwrap_or_default();
        let netns = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .and_then(|l| l.iter().find(|n| n["type"] == "network"))
            .and_then(|n| n["path"].as_str())
            .unwrap_or_default()
            .to_owned();
        Ok((ip, netns))
    }
}
