//! The policy bench's reading of the agent's log: each ADD's steps (`CNI ADD` lines) and where
//! each policy write's time went (`firewall watch event` and `firewall pass` lines against the
//! bench's own clock).

use super::pct;

/// Now, in seconds since the epoch (the clock the agent's log lines are stamped with).
pub fn epoch_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64()
}

/// A log line's timestamp (`2026-12-05T13:40:37.318118Z`, UTC) in seconds since the epoch.
fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let d: Vec<i64> = date.split('-').map(str::parse).collect::<Result<_, _>>().ok()?;
    let (y, m, day) = (*d.first()?, *d.get(1)?, *d.get(2)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let t: Vec<f64> = time.split(':').map(str::parse).collect::<Result<_, _>>().ok()?;
    Some(days as f64 * 86_400.0 + t.first()? * 3_600.0 + t.get(1)? * 60.0 + t.get(2)?)
}

/// One policy write of the write -> enforced probes, wall clock (seconds since the epoch).
pub struct Write {
    pub sent: f64,
    pub answered: f64,
    pub enforced: f64,
}

/// Where each write's time went, from the agent's debug log: romanad's answer, the change's
/// arrival at the agent (its `firewall watch event` line for the server's policy, when the agent
/// logs it), the start of the pass that enforced it (the first `firewall pass` line ending after
/// the write, less its `total_ms`, or its compile and apply when the agent does not log that),
/// that pass's compile and apply (`compile_ms`, `pass_ms`), the write -> committed time, and the
/// probe's detection after the pass.
pub fn write_steps(log: &str, writes: &[Write]) -> String {
    let field = |line: &str, name: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(name)).and_then(|v| v.parse::<f64>().ok())
    };
    let events: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("firewall watch event") && l.contains("key=netpols/bench/srv"))
        .filter_map(log_time)
        .collect();
    // (end, total, compile, apply) of each pass.
    let passes: Vec<(f64, f64, f64, f64)> = log
        .lines()
        .filter(|l| l.contains("firewall pass"))
        .filter_map(|l| {
            let (compile, apply) = (field(l, "compile_ms=")?, field(l, "pass_ms=")?);
            let total = field(l, "total_ms=")
                .unwrap_or_else(|| compile + apply + field(l, "read_wait_ms=").unwrap_or(0.0));
            Some((log_time(l)?, total, compile, apply))
        })
        .collect();
    let mut steps: Vec<(&str, Vec<f64>)> =
        ["answered", "arrived", "pass started", "compile", "apply", "committed", "probe"]
            .into_iter()
            .map(|k| (k, Vec::new()))
            .collect();
    for w in writes {
        let Some(&(end, total, compile, apply)) = passes.iter().find(|p| p.0 - p.1 / 1e3 >= w.sent) else {
            continue;
        };
        let arrived = events.iter().find(|t| **t >= w.sent).map_or(f64::NAN, |t| (t - w.sent) * 1e3);
        let values = [
            (w.answered - w.sent) * 1e3,
            arrived,
            (end - total / 1e3 - w.sent) * 1e3,
            compile,
            apply,
            (end - w.sent) * 1e3,
            (w.enforced - end) * 1e3,
        ];
        for ((_, v), x) in steps.iter_mut().zip(values) {
            if !x.is_nan() {
                v.push(x);
            }
        }
    }
    steps
        .iter()
        .map(|(k, v)| format!("{k} {:.2}/{:.2}", pct(v, 0.5), pct(v, 0.99)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The agent's account of each ADD (its `CNI ADD` log line: `alloc_ms=`, `policy_ms=`,
/// `plumb_ms=`...), over the ADDs of containers named `<prefix><n>`: each step's p50 and p99.
pub fn add_steps(log: &str, prefix: &str) -> String {
    let mut steps: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for line in log.lines().filter(|l| l.contains("CNI ADD")) {
        let fields: Vec<(&str, &str)> = line.split_whitespace().filter_map(|f| f.split_once('=')).collect();
        let ours = fields.iter().any(|(k, v)| {
            let n = v.split(':').nth(2).and_then(|cid| cid.strip_prefix(prefix));
            *k == "address" && n.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
        if !ours {
            continue;
        }
        for (k, v) in fields.into_iter().filter(|(k, _)| k.ends_with("_ms")) {
            if let Ok(v) = v.parse::<f64>() {
                steps.entry(k).or_default().push(v);
            }
        }
    }
    steps
        .iter()
        .map(|(k, v)| format!("{k} {:.2}/{:.2}", pct(v, 0.5), pct(v, 0.99)))
        .collect::<Vec<_>>()
        .join(", ")
}
