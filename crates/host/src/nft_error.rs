//! What the nftables adapters share: the one table we touch and their error.

/// The only table we touch.
pub const TABLE_SPEC: [&str; 3] = ["table", "inet", "romana"];

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nft is not installed (Debian package nftables): {0}")]
    NotInstalled(std::io::Error),
    #[error("nft {what} failed: {stderr}")]
    Failed { what: String, stderr: String },
    #[error("nft {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("reading nftables' generation over netlink: {0}")]
    Generation(String),
    #[error("set elements over netlink: {0}")]
    Elements(String),
}
