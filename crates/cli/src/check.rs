//! `romana check`: romanad's consistency check (`GET /check`) as a table of disagreements with
//! what to do, or its JSON/YAML; the command fails (exit 1) when anything disagrees. The CA the
//! CLI trusts is judged too (`doctor_certs`): near its end a warning on stderr, expired a failure.

use anyhow::{Context, Result};
use romana_client::Client;
use serde_json::Value;

use crate::Format;
use crate::output::show;

/// The table's rows: one per disagreement.
fn rows(v: &Value) -> Vec<Vec<String>> {
    let cell = |d: &Value, k: &str| d[k].as_str().unwrap_or_default().to_owned();
    v["disagreements"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .map(|d| {
                    ["kind", "subject", "ip", "host", "detail", "action"].iter().map(|k| cell(d, k)).collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the check; `Ok(true)` when everything agrees. `ca`: the CA this CLI trusts, as (where it
/// came from, PEM).
pub async fn run(
    c: &Client,
    f: Format,
    leak_grace: Option<u64>,
    ca: Option<(String, String)>,
) -> Result<bool> {
    let path = leak_grace.map(|s| format!("/check?leak_grace={s}")).unwrap_or_else(|| "/check".to_owned());
    let resp = c.send(reqwest::Method::GET, &path, None).await?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.context("reading romanad's answer to GET /check")?;
    if status != 200 {
        anyhow::bail!(
            "romanad answered {status} to GET /check: {}",
            v["message"].as_str().unwrap_or("no message")
        );
    }
    show(f, &v, &["KIND", "SUBJECT", "IP", "HOST", "DETAIL", "WHAT TO DO"], rows)?;
    let consistent = v["consistent"].as_bool().unwrap_or(false);
    if f == Format::Table {
        let c = &v["checked"];
        eprintln!(
            "{} disagreement(s) among {} allocations, {} endpoints, {} hosts ({} dead)",
            v["disagreements"].as_array().map_or(0, Vec::len),
            c["allocations"],
            c["endpoints"],
            c["hosts"],
            c["dead_hosts"]
        );
    }
    let mut expired = false;
    if let Some((name, pem)) = ca {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let src = crate::doctor_certs::CertSource { name, certs: crate::doctor_certs::read_pem(&pem) };
        for (kind, what, fix, warning) in crate::doctor_certs::judge(&src, now as i64) {
            expired |= !warning;
            eprintln!("{}: {kind}: {what}; {fix}", if warning { "warning" } else { "error" });
        }
    }
    Ok(consistent && !expired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_carry_every_column_in_order() {
        let v = serde_json::json!({"disagreements": [
            {"kind": "leak", "subject": "lost", "ip": "10.0.0.3", "host": "h1", "detail": "d", "action": "a"}
        ]});
        assert_eq!(rows(&v), vec![vec!["leak", "lost", "10.0.0.3", "h1", "d", "a"]]);
        assert!(rows(&serde_json::json!({"disagreements": []})).is_empty());
    }
}
