//! The firewall table an agent applied, as it saves it for its successor: the table, the
//! nftables generation right after the transaction that made it, and which kernel and network
//! namespace that generation counts in. A restarted agent that finds the generation unchanged
//! (no commit by anyone since, in the same namespace of the same boot) knows the kernel's table
//! without reading it back: at 5,000 policies x 50,000 endpoints that read took 3.5 s, one
//! element dump per set, each finding its set by walking the table's list of sets. Pure: the
//! text in and out; the host adapter reads the boot id, the namespace's cookie and the file.
//!
//! A table saved by an agent is removed by the next commit of any agent (the host adapter's
//! `SaveGuard`), so a saved table that is still there is the one the last agent's commit left;
//! when the generation moved, someone else committed since, and a restart checks the table's
//! structure (one cheap read without elements) before it takes it (`Restore::CheckStructure`).
//!
//! The format is line-based text (`romana-table 2`, then `boot`, `netns`, `generation`, one
//! `set NAME TYPE ELEMENT...` per set and one `chain NAME HOOK PRIORITY KEY...` per chain, `-`
//! for no hook). Names and keys are the compiler's (`[A-Za-z0-9_.:/-]`): a table with anything
//! else in them (a foreign set, a rule without our comment) is not saved, and the successor reads
//! the kernel.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Arc;

use romana_model::Family;
use romana_policy::nftjson::hook;
use romana_policy::nftplan::{Observed, ObservedChain};
use romana_policy::ruleset::{Element, Set, SetType};

const MAGIC: &str = "romana-table 2";

/// Where a generation counts: nftables' generation is per network namespace and starts over
/// with it, and with the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot: String,
    /// The namespace's cookie (`SO_NETNS_COOKIE`): unlike its inode number, never reused
    /// within a boot.
    pub netns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedTable {
    pub place: Place,
    /// The generation right after the transaction that left `table`, with nothing else committed
    /// around it (`PassState::known_gen`).
    pub generation: u32,
    pub table: Observed,
}

/// What a restarted agent may do with a saved table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// Nothing was committed since, by anyone: the kernel holds exactly this table, known at
    /// this generation.
    Exact(Observed, u32),
    /// Something was committed since in the same namespace of the same boot, not by an agent
    /// (every agent removes the saved table before it commits): the table holds unless someone
    /// changed it; its structure can be checked cheaply (`same_structure`), its elements only by
    /// a full read.
    CheckStructure(Observed),
    /// Another boot or namespace: read the kernel's table.
    Read,
}

impl SavedTable {
    /// What the saved table is worth where the kernel of `place` reports `generation_now`
    /// (`None`: unreadable).
    pub fn restore(self, place: &Place, generation_now: Option<u32>) -> Restore {
        match (self.place == *place, generation_now == Some(self.generation)) {
            (true, true) => Restore::Exact(self.table, self.generation),
            (true, false) => Restore::CheckStructure(self.table),
            (false, _) => Restore::Read,
        }
    }
}

/// Whether `read` (the kernel's table read without its elements) has `saved`'s structure: the
/// same sets with the same types, nothing foreign, the same chains with the same hooks and rules.
pub fn same_structure(saved: &Observed, read: &Observed) -> bool {
    saved.foreign_sets.is_empty()
        && read.foreign_sets.is_empty()
        && saved.sets.len() == read.sets.len()
        && saved.sets.iter().zip(&read.sets).all(|((a, x), (b, y))| a == b && x.ty == y.ty)
        && saved.chains == read.chains
}

/// Whether `s` can stand as one word of the format.
fn word(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:/-".contains(&b))
}

fn set_type(t: SetType) -> &'static str {
    match t {
        SetType::Addr(Family::V4) => "addr4",
        SetType::Addr(Family::V6) => "addr6",
        SetType::AddrPort(Family::V4) => "port4",
        SetType::AddrPort(Family::V6) => "port6",
    }
}

fn parse_set_type(s: &str) -> Option<SetType> {
    Some(match s {
        "addr4" => SetType::Addr(Family::V4),
        "addr6" => SetType::Addr(Family::V6),
        "port4" => SetType::AddrPort(Family::V4),
        "port6" => SetType::AddrPort(Family::V6),
        _ => return None,
    })
}

/// The saved form; `None` when the table holds what the format cannot (see the module's note).
pub fn encode(saved: &SavedTable) -> Option<String> {
    let t = &saved.table;
    if !t.foreign_sets.is_empty() || !word(&saved.place.boot) {
        return None;
    }
    let mut out =
        String::with_capacity(64 + t.sets.values().map(|s| 16 + s.elements.len() * 12).sum::<usize>());
    let _ = writeln!(
        out,
        "{MAGIC}\nboot {}\nnetns {}\ngeneration {}",
        saved.place.boot, saved.place.netns, saved.generation
    );
    for (name, set) in &t.sets {
        if !word(name) {
            return None;
        }
        let _ = write!(out, "set {name} {}", set_type(set.ty));
        for e in &set.elements {
            let _ = match e {
                Element::Addr(a) => write!(out, " {a}"),
                Element::AddrPort(a, p) => write!(out, " {a},{p}"),
            };
        }
        out.push('\n');
    }
    for (name, chain) in &t.chains {
        if !word(name) || !chain.rules.iter().all(|k| word(k)) {
            return None;
        }
        let _ = match chain.base {
            Some((h, prio)) => write!(out, "chain {name} {h} {prio}"),
            None => write!(out, "chain {name} - -"),
        };
        for k in chain.rules.iter() {
            out.push(' ');
            out.push_str(k);
        }
        out.push('\n');
    }
    Some(out)
}

/// The saved table back; the error names the line that is not of the format.
pub fn decode(text: &str) -> Result<SavedTable, String> {
    let mut lines = text.lines().enumerate();
    let bad = |n: usize, why: &str| format!("line {}: {why}", n + 1);
    let mut header = |key: &str| -> Result<String, String> {
        let (n, line) = lines.next().ok_or_else(|| format!("ends before `{key}`"))?;
        line.strip_prefix(key)
            .and_then(|v| v.strip_prefix(' '))
            .map(str::to_owned)
            .ok_or_else(|| bad(n, &format!("expected `{key} ...`")))
    };
    if header("romana-table")? != "2" {
        return Err("line 1: not `romana-table 2`".into());
    }
    let boot = header("boot")?;
    let netns = header("netns")?.parse().map_err(|_| "line 3: netns is not a number".to_owned())?;
    let generation =
        header("generation")?.parse().map_err(|_| "line 4: generation is not a number".to_owned())?;
    let mut table = Observed::default();
    for (n, line) in lines {
        let mut w = line.split(' ');
        match (w.next(), w.next(), w.next()) {
            (Some("set"), Some(name), Some(ty)) => {
                let ty = parse_set_type(ty).ok_or_else(|| bad(n, &format!("unknown set type `{ty}`")))?;
                let elements = w.map(|e| element(e).ok_or_else(|| bad(n, &format!("bad element `{e}`"))));
                let elements = elements.collect::<Result<BTreeSet<_>, _>>()?;
                table.sets.insert(name.to_owned(), Arc::new(Set { ty, elements }));
            }
            (Some("chain"), Some(name), Some(h)) => {
                let prio = w.next().ok_or_else(|| bad(n, "chain without a priority"))?;
                let base = match (h, prio) {
                    ("-", "-") => None,
                    _ => {
                        let h = hook(h).ok_or_else(|| bad(n, &format!("unknown hook `{h}`")))?;
                        Some((h, prio.parse().map_err(|_| bad(n, &format!("bad priority `{prio}`")))?))
                    }
                };
                let rules = Arc::new(w.map(str::to_owned).collect());
                table.chains.insert(name.to_owned(), ObservedChain { base, rules });
            }
            _ => return Err(bad(n, "expected `set NAME TYPE ...` or `chain NAME HOOK PRIORITY ...`")),
        }
    }
    Ok(SavedTable { place: Place { boot, netns }, generation, table })
}

fn element(e: &str) -> Option<Element> {
    match e.split_once(',') {
        Some((a, p)) => Some(Element::AddrPort(a.parse::<IpAddr>().ok()?, p.parse().ok()?)),
        None => Some(Element::Addr(e.parse().ok()?)),
    }
}

#[cfg(test)]
mod tests;
