//! Reading systemd units and environment files for the deploy test, and expanding `ExecStart=`
//! the way systemd does (`${VAR}` is one word, a whole-word `$VAR` splits on whitespace).

use std::collections::BTreeMap;
use std::path::Path;

/// A unit's `Key=Value` lines by section, in order (keys may repeat).
#[derive(Debug, Default)]
pub struct Unit {
    pub sections: BTreeMap<String, Vec<(String, String)>>,
}

impl Unit {
    pub fn load(path: &Path) -> Unit {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut unit = Unit::default();
        let mut section = String::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{}:{}: not Key=Value: {line:?}", path.display(), n + 1));
            assert!(!section.is_empty(), "{}:{}: a setting before any section", path.display(), n + 1);
            unit.sections
                .entry(section.clone())
                .or_default()
                .push((k.trim().to_owned(), v.trim().to_owned()));
        }
        unit
    }

    /// Every value of `key` in `[Service]`.
    pub fn service(&self, key: &str) -> Vec<&str> {
        self.sections
            .get("Service")
            .map(|kv| kv.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect())
            .unwrap_or_default()
    }

    pub fn one(&self, key: &str) -> Option<&str> {
        self.service(key).last().copied()
    }
}

/// `KEY=VALUE` lines of an environment file (comments and blank lines skipped; no quoting used).
pub fn env_file(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (k, v) =
            line.split_once('=').unwrap_or_else(|| panic!("{}: not KEY=VALUE: {line:?}", path.display()));
        assert!(!v.contains(['"', '\'']), "{}: {k}: quoting is not used in these files", path.display());
        out.insert(k.to_owned(), v.to_owned());
    }
    out
}

/// The variables systemd itself sets for a unit, as on a real host.
pub fn systemd_vars(unit: &Unit, unit_name: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(d) = unit.one("StateDirectory") {
        out.insert("STATE_DIRECTORY".into(), format!("/var/lib/{d}"));
    }
    if let Some(d) = unit.one("RuntimeDirectory") {
        out.insert("RUNTIME_DIRECTORY".into(), format!("/run/{d}"));
    }
    if !unit.service("LoadCredential").is_empty() {
        out.insert("CREDENTIALS_DIRECTORY".into(), format!("/run/credentials/{unit_name}"));
    }
    out
}

/// `ExecStart=` split into words with variables expanded from `vars`. An unknown variable is an
/// error (systemd would make it empty, which is never what the unit means).
pub fn exec_words(exec: &str, vars: &BTreeMap<String, String>) -> Vec<String> {
    assert!(!exec.contains(['"', '\'', '\\']), "ExecStart uses no quoting here: {exec:?}");
    let lookup = |v: &str| {
        vars.get(v)
            .cloned()
            .unwrap_or_else(|| panic!("ExecStart refers to ${v}, which nothing sets: {exec:?}"))
    };
    let mut out = Vec::new();
    for word in exec.split_whitespace() {
        if let Some(v) = word.strip_prefix('$').filter(|v| !v.starts_with('{')) {
            out.extend(lookup(v).split_whitespace().map(str::to_owned));
            continue;
        }
        let mut w = String::new();
        let mut rest = word;
        while let Some(i) = rest.find("${") {
            w.push_str(&rest[..i]);
            let end = rest[i..].find('}').expect("a closed ${...}") + i;
            w.push_str(&lookup(&rest[i + 2..end]));
            rest = &rest[end + 1..];
        }
        w.push_str(rest);
        out.push(w);
    }
    out
}
