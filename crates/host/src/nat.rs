//! Whether this kernel can hold egress NAT's chain (`type nat hook postrouting` in our `inet`
//! table): inet-family nat chains exist since Linux 5.2, and need the nf_nat modules. Asked once
//! at the agent's start, in the host's namespace, by a check-only nft transaction on our own
//! table (`nft -c`: nothing is committed, nothing else is named).

use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatUnavailable {
    #[error("kernel {release} is older than 5.2, which brought nat chains to inet tables")]
    OldKernel { release: String },
    #[error("nftables refused a nat postrouting chain in table inet romana: {0}")]
    Refused(String),
}

/// Whether a kernel release (`uname -r`, e.g. `6.1.0-18-amd64`) is 5.2 or newer. An unreadable
/// release is taken as new enough: the check-only transaction still asks the kernel itself.
pub fn inet_nat_supported(release: &str) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (5, 2),
        _ => true,
    }
}

/// The check-only transaction: what the agent's table will hold, on our table only.
pub const PROBE: &str = "add table inet romana\n\
    add chain inet romana nat-probe { type nat hook postrouting priority 100; policy accept; }\n\
    add rule inet romana nat-probe ip saddr 10.0.0.0/8 ip daddr != { 10.0.0.0/8 } masquerade\n";

/// Asks the kernel of the calling thread's namespace whether egress NAT can work here.
pub fn probe() -> Result<(), NatUnavailable> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    if !inet_nat_supported(release) {
        return Err(NatUnavailable::OldKernel { release: release.to_owned() });
    }
    let nft = ["/usr/sbin/nft", "/sbin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nft");
    let refused = |e: String| NatUnavailable::Refused(e);
    let mut child = Command::new(nft)
        .args(["-c", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| refused(format!("running {nft}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(PROBE.as_bytes()).map_err(|e| refused(format!("writing to nft: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| refused(format!("waiting for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(refused(String::from_utf8_lossy(&out.stderr).lines().take(3).collect::<Vec<_>>().join(" | ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases() {
        for (release, ok) in [
            ("6.18.44-fc-v1252", true),
            ("5.2.0", true),
            ("5.10.0-28-amd64", true),
            ("5.1.21", false),
            ("4.19.0-26-amd64", false),
            ("3.10.0-1160.el7.x86_64", false),
            ("", true),
        ] {
            assert_eq!(inet_nat_supported(release), ok, "{release}");
        }
    }
}
