//! `romana vip add|list|delete|ranges`: VIPs over REST (the assignment is romanad's; this only
//! asks and shows).

use anyhow::{Result, bail};
use romana_api::vip::{VipConfig, VipPort, VipRequest};
use romana_client::Client;

use crate::Format;
use crate::output::{kv, show};

/// `PROTO:PORT[:TARGET]`, e.g. `tcp:80:8080`.
pub fn parse_port(s: &str) -> Result<VipPort> {
    let f: Vec<&str> = s.split(':').collect();
    let num =
        |t: &str| t.parse::<u16>().map_err(|_| anyhow::anyhow!("port {s:?}: {t:?} is not a port number"));
    match f.as_slice() {
        [p, port] => Ok(VipPort { protocol: p.to_ascii_uppercase(), port: num(port)?, target_port: 0 }),
        [p, port, target] => {
            Ok(VipPort { protocol: p.to_ascii_uppercase(), port: num(port)?, target_port: num(target)? })
        }
        _ => bail!("port {s:?}: expected PROTO:PORT or PROTO:PORT:TARGET (e.g. tcp:80:8080)"),
    }
}

/// `KEY=VALUE`.
pub fn parse_label(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
        None => bail!("selector {s:?}: expected KEY=VALUE"),
    }
}

pub async fn list(c: &Client, f: Format) -> Result<()> {
    let v = c.vips().await?;
    show(f, &v, &["ADDRESS", "TENANT", "SERVICE", "SELECTOR", "PORTS", "SERVED BY", "STANDBY"], |v| {
        v.iter()
            .map(|x| {
                let ports: Vec<String> = x
                    .ports
                    .iter()
                    .map(|p| {
                        let target = if p.target_port == 0 { p.port } else { p.target_port };
                        format!("{}/{}->{target}", p.protocol.to_ascii_lowercase(), p.port)
                    })
                    .collect();
                vec![
                    x.address.clone(),
                    x.tenant.clone(),
                    x.service.clone(),
                    kv(&x.selector),
                    if ports.is_empty() { "all".into() } else { ports.join(",") },
                    if x.assigned.is_empty() { "-".into() } else { x.assigned.clone() },
                    if x.standby.is_empty() { "-".into() } else { x.standby.clone() },
                ]
            })
            .collect()
    })
}

pub async fn add(c: &Client, f: Format, req: &VipRequest) -> Result<()> {
    let v = c.add_vip(req).await?;
    match f {
        Format::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        _ => println!(
            "VIP {} for service {} of tenant {} (endpoints {})",
            v.address,
            v.service,
            v.tenant,
            kv(&v.selector)
        ),
    }
    Ok(())
}

pub async fn delete(c: &Client, address: &str) -> Result<()> {
    c.delete_vip(address).await?;
    println!("VIP {address} deleted");
    Ok(())
}

pub async fn set_ranges(c: &Client, ranges: Vec<String>) -> Result<()> {
    let cfg = c.set_vip_config(&VipConfig { ranges }).await?;
    println!("VIP ranges: {}", if cfg.ranges.is_empty() { "none".into() } else { cfg.ranges.join(", ") });
    Ok(())
}

/// The sandbox's external range (documentation addresses, TEST-NET-2), set at `up` unless the
/// admin configured one: its routers are rendered to accept VIP /32s inside it.
pub const SANDBOX_RANGE: &str = "198.51.100.0/28";

pub async fn sandbox_range(c: &Client) -> Result<()> {
    let cfg = c.vip_config().await?;
    if cfg.ranges.is_empty() {
        c.set_vip_config(&VipConfig { ranges: vec![SANDBOX_RANGE.to_owned()] }).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_labels() {
        let p = parse_port("tcp:80:8080").expect("parses");
        assert_eq!((p.protocol.as_str(), p.port, p.target_port), ("TCP", 80, 8080));
        assert_eq!(parse_port("udp:53").expect("parses").target_port, 0);
        for bad in ["tcp", "tcp:x", "tcp:80:8080:1", "tcp:70000"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_label("app=web").expect("parses"), ("app".into(), "web".into()));
        assert!(parse_label("app").is_err());
    }
}
