//! Why a firewall pass or a read of romanad's policies failed, naming the part that failed.

use romana_client::ClientError;
use romana_policy::nftjson;

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("reading policies from romanad: {0}")]
    Fetch(#[from] ClientError),
    #[error("programming nftables: {0}")]
    Nft(#[from] romana_host::nft::NftError),
    #[error("reading the nftables table back: {0}")]
    Json(#[from] nftjson::JsonError),
    #[error("entering the host's namespace: {0}")]
    Netns(#[from] romana_host::NetnsError),
    #[error("firewall worker: {0}")]
    Join(String),
    #[error("policies have not been read from romanad yet")]
    NotLoaded,
    #[error("romanad's lists changed while they were read; reading again")]
    Overtaken,
    #[error("updating the fast path: {0}")]
    FastPath(#[from] romana_host::BpfError),
}
