//! The sysctls a Romana host needs: IP forwarding for IPv4 and IPv6 in the host's namespace, and
//! no IPv6 address autoconfiguration on the host ends of pod veths. Written from a thread inside
//! that namespace (`/proc/sys/net` shows the writer's namespace).

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

/// `addr_gen_mode` of IPv6 that makes the kernel generate no link-local address on a link
/// (`IN6_ADDR_GEN_MODE_NONE`).
const ADDR_GEN_NONE: &str = "1";

/// The key that turns IPv6 address autoconfiguration of `link` off.
pub(crate) fn addr_gen_mode_key(link: &str) -> String {
    format!("/proc/sys/net/ipv6/conf/{link}/addr_gen_mode")
}

/// Makes the kernel generate no IPv6 link-local address on `link` when it comes up, from the
/// calling thread's namespace; to be called while the link is down. The host end of a pod's
/// veth carries only the addresses the CNI path gives it (`fe80::1` for a pod with IPv6,
/// nothing for an IPv4-only one): an address of its own would cost a duplicate address
/// detection, its multicast joins and their MLD reports per pod, kernel work under the lock
/// that the next pod's plumbing waits for. A kernel without IPv6 has no key: nothing to do.
pub(crate) fn no_ipv6_autoconf(link: &str) -> Result<(), std::io::Error> {
    let key = addr_gen_mode_key(link);
    match std::fs::write(&key, ADDR_GEN_NONE) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !Path::new("/proc/sys/net/ipv6").exists() => {
            Ok(())
        }
        Err(e) => Err(std::io::Error::new(e.kind(), format!("writing {ADDR_GEN_NONE} to {key}: {e}"))),
        Ok(()) => Ok(()),
    }
}
