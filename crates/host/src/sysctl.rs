//! The sysctls a Romana host needs: IP forwarding for IPv4 and IPv6 in the host's namespace.
//! Written from a thread inside that namespace (`/proc/sys/net` shows the writer's namespace).

use std::path::Path;

use crate::netns::{NetnsError, in_netns_path};

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("cannot write {key}: {source}")]
    Write { key: &'static str, source: std::io::Error },
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// Keys and the value a router needs. IPv6 is best effort: a kernel without IPv6 has no key.
const FORWARDING: [(&str, bool); 2] =
    [("/proc/sys/net/ipv4/ip_forward", true), ("/proc/sys/net/ipv6/conf/all/forwarding", false)];

/// Turns forwarding on in `host_ns` (`None`: the caller's namespace). Returns the keys changed.
pub fn enable_forwarding(host_ns: Option<&Path>) -> Result<Vec<&'static str>, SysctlError> {
    in_netns_path(host_ns, || async {
        let mut changed = Vec::new();
        for (key, required) in FORWARDING {
            match std::fs::read_to_string(key) {
                Ok(v) if v.trim() == "1" => continue,
                Ok(_) => {}
                Err(_) if !required => continue,
                Err(source) => return Err(SysctlError::Write { key, source }),
            }
            std::fs::write(key, "1").map_err(|source| SysctlError::Write { key, source })?;
            changed.push(key);
        }
        Ok(changed)
    })?
}
