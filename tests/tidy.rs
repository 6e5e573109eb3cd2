//! Tidy: the structural rules of `ARCHITECTURE.md` and `docs/dev/style.md` as a test (after
//! rust-analyzer's `tidy.rs`). Reads `cargo metadata` and the source tree; builds and runs nothing else.
//!
//! Each failure names the offending crate, file or dependency chain and says what to do. The
//! checks themselves are pure functions over data, tested below on small made-up inputs so that a
//! check that could never fail would be noticed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Crates that do no I/O (ARCHITECTURE.md, "pure"): none may depend, even through another crate,
/// on a runtime, the kernel, the store or the HTTP stack.
const PURE_CRATES: &[&str] =
    &["romana-model", "romana-ipam", "romana-dataplane", "romana-policy", "romana-auth"];

/// What a pure crate must not reach: (name, or prefix ending in `-`; what it is).
#[rustfmt::skip]
const FORBIDDEN_IN_PURE: &[(&str, &str)] = &[
    ("tokio", "an async runtime"), ("rtnetlink", "netlink"), ("netlink-", "netlink"), ("nftables", "nftables"),
    ("aya", "BPF loading"), ("romana-host", "the kernel adapter"), ("romana-store", "the store"),
    ("romana-store-etcd", "the store"), ("etcd-client", "the store"), ("axum", "the HTTP stack"),
    ("axum-", "the HTTP stack"), ("hyper", "the HTTP stack"), ("hyper-", "the HTTP stack"),
    ("reqwest", "the HTTP stack"), ("tower", "the HTTP stack"), ("tower-", "the HTTP stack"),
    ("romana-client", "the HTTP stack"), ("romana-services", "the HTTP stack"),
];

/// The crate map's layers (ARCHITECTURE.md, "Code map"): a crate depends only on crates of lower
/// layers. 0 foundations, 1 pure cores, 2 the wire, 3 pure over the wire and adapters,
/// 4 components, 5 the daemon, 6 cross-crate tests. `romana-kube-testserver`, `romana-fabric` and
/// `romana-k8s` are the crates of branches not merged when this was written (their deps placed them).
#[rustfmt::skip]
const LAYERS: &[(&str, u8)] = &[
    ("romana-model", 0), ("romana-auth", 0), ("romana-store", 0), ("romana-test-support", 0),
    ("romana-kube-testserver", 0),
    ("romana-ipam", 1), ("romana-dataplane", 1),
    ("romana-api", 2),
    ("romana-policy", 3), ("romana-host", 3), ("romana-store-etcd", 3), ("romana-client", 3),
    ("romana-fabric", 3),
    ("romana-services", 4), ("romana-agent", 4), ("romana-cni", 4), ("romana-cli", 4),
    ("romana-k8s", 4),
    ("romanad", 5),
    ("romana-tests", 6),
];

/// Directories whose files must stay within `MAX_LINES` (where the next features land).
const SIZE_CHECKED: &[&str] = &["crates/agent/src", "crates/services/src"];
const MAX_LINES: usize = 600;
/// Files over `MAX_LINES` today, with the issue that splits them. Remove an entry when its file is
/// split; never add one without an issue.
const KNOWN_LONG: &[(&str, u32)] = &[];

/// Import circles between files of a crate today, as sorted file lists, with the issue that
/// removes them. Remove an entry when its circle is gone.
const KNOWN_CIRCLES: &[(&[&str], u32)] = &[];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_path_buf()
}

/// The workspace's dependency graph: package names, and per package its normal (not dev, not
/// build) dependencies, for every platform.
#[derive(Debug, Default)]
struct Graph {
    members: BTreeSet<String>,
    normal: BTreeMap<String, BTreeSet<String>>,
}

/// Read once per test run (two tests use it).
fn metadata() -> &'static Graph {
    static GRAPH: std::sync::OnceLock<Graph> = std::sync::OnceLock::new();
    GRAPH.get_or_init(read_metadata)
}

fn read_metadata() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("running {cargo} metadata: {e}"));
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    graph_from_metadata(&v)
}

fn graph_from_metadata(v: &Value) -> Graph {
    let names: HashMap<&str, &str> = v["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("id"), p["name"].as_str().expect("name")))
        .collect();
    let name = |id: &Value| names[id.as_str().expect("package id")].to_string();
    let mut g = Graph {
        members: v["workspace_members"].as_array().expect("members").iter().map(name).collect(),
        ..Graph::default()
    };
    for node in v["resolve"]["nodes"].as_array().expect("resolve.nodes") {
        let deps =
            node["deps"].as_array().expect("deps").iter().filter(|d| {
                d["dep_kinds"].as_array().expect("dep_kinds").iter().any(|k| k["kind"].is_null())
            });
        g.normal.entry(name(&node["id"])).or_default().extend(deps.map(|d| name(&d["pkg"])));
    }
    g
}

fn forbidden(dep: &str) -> Option<&'static str> {
    FORBIDDEN_IN_PURE
        .iter()
        .find(|(p, _)| if p.ends_with('-') { dep.starts_with(p) } else { dep == *p })
        .map(|(_, what)| *what)
}

/// Every forbidden package a pure crate reaches, with the chain that reaches it.
fn pure_violations(g: &Graph) -> Vec<String> {
    let mut found = Vec::new();
    for krate in PURE_CRATES {
        let mut via: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([*krate]);
        while let Some(at) = queue.pop_front() {
            for dep in g.normal.get(at).into_iter().flatten() {
                if dep.as_str() == *krate || via.contains_key(dep.as_str()) {
                    continue;
                }
                via.insert(dep, at);
                if let Some(what) = forbidden(dep) {
                    let mut chain = vec![dep.as_str()];
                    while let Some(prev) = via.get(chain.last().expect("non-empty")) {
                        chain.push(prev);
                    }
                    chain.reverse();
                    found.push(format!(
                        "{krate} is pure but depends on {dep} ({what}) through {}: keep the I/O in an adapter crate \
                         (romana-host, the store, the agent, services) and pass values into the core",
                        chain.join(" -> ")
                    ));
                } else {
                    queue.push_back(dep);
                }
            }
        }
    }
    found
}

fn layer_violations(g: &Graph) -> Vec<String> {
    let layer: HashMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut found = Vec::new();
    for m in &g.members {
        let Some(&lm) = layer.get(m.as_str()) else {
            found.push(format!("workspace member {m} has no layer: add it to LAYERS in tests/tidy.rs and to ARCHITECTURE.md's code map"));
            continue;
        };
        for dep in g.normal.get(m).into_iter().flatten().filter(|d| g.members.contains(*d)) {
            let ld = layer.get(dep.as_str()).copied().unwrap_or(u8::MAX);
            if ld >= lm {
                found.push(format!(
                    "{m} (layer {lm}) depends on {dep} (layer {ld}): dependencies point down; move the shared code \
                     to a lower crate, or if the map itself changed, change LAYERS here and ARCHITECTURE.md together"
                ));
            }
        }
    }
    found
}

/// Every `.rs` file under `dir`, sorted, relative to the workspace root.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display())) {
            let p = e.expect("directory entry").path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "target") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p.strip_prefix(root()).expect("under the root").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn read(rel: &Path) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {}: {e}", rel.display()))
}

fn doc_line_violation(rel: &Path, text: &str) -> Option<String> {
    (!text.starts_with("//!")).then(|| {
        format!("{} does not start with a `//!` line: say in one line what the file is (and what it knows nothing about)", rel.display())
    })
}

fn size_violation(rel: &Path, lines: usize, known: Option<u32>) -> Option<String> {
    match (lines > MAX_LINES, known) {
        (true, None) => Some(format!(
            "{} has {lines} lines (limit {MAX_LINES}): split it by responsibility (one per file, see docs/dev/style.md)",
            rel.display()
        )),
        (false, Some(issue)) => Some(format!(
            "{} has {lines} lines, within the limit now: remove it from KNOWN_LONG in tests/tidy.rs (issue {issue})",
            rel.display()
        )),
        _ => None,
    }
}

/// Module path of a file under a crate's `src` (`a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs`,
/// `main.rs` and `bin/*` are roots, `None`).
fn module_of(rel_to_src: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = rel_to_src.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    let file = parts.pop()?;
    match file.as_str() {
        "lib.rs" | "main.rs" if parts.is_empty() => Some(vec![]),
        "mod.rs" => Some(parts),
        f => {
            parts.push(f.trim_end_matches(".rs").to_string());
            Some(parts)
        }
    }
}

/// Source text without `//` comments (a `//` at a line's start or after whitespace).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| {
            let cut =
                l.match_indices("//").find(|(i, _)| *i == 0 || l.as_bytes()[i - 1].is_ascii_whitespace());
            cut.map_or(l, |(i, _)| &l[..i])
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a use tree names, starting at `s` (just after `crate::`): `a::{b, c::D}` gives
/// `a::b` and `a::c::D`. Stops at anything that is not part of a path (a call, a generic).
fn use_paths(s: &str) -> Vec<Vec<String>> {
    fn tree(s: &mut &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            *s = s.trim_start();
            if let Some(rest) = s.strip_prefix('{') {
                *s = rest;
                loop {
                    *s = s.trim_start();
                    if let Some(rest) = s.strip_prefix('}') {
                        *s = rest;
                        return;
                    }
                    if s.is_empty() {
                        return;
                    }
                    tree(s, &path, out);
                    *s = s.trim_start();
                    if let Some(rest) = s.strip_prefix(',') {
                        *s = rest;
                    } else if !s.starts_with('}') {
                        return;
                    }
                }
            }
            let n = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
            if n == 0 {
                break;
            }
            if &s[..n] != "self" {
                path.push(s[..n].to_string());
            }
            *s = &s[n..];
            match s.strip_prefix("::") {
                Some(rest) if !rest.starts_with('<') => *s = rest,
                _ => break,
            }
        }
        out.push(path);
    }
    let mut out = Vec::new();
    let mut s = s;
    tree(&mut s, &[], &mut out);
    out
}

/// The modules of the same crate a file refers to: every `crate::` path, and `super::` in the
/// file's top-level `use` lines (inside an inline module `super` would mean the file itself).
fn referenced(module: &[String], text: &str) -> Vec<Vec<String>> {
    let text = strip_comments(text);
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        out.extend(use_paths(&text[i + "crate::".len()..]));
    }
    if let Some((_, parent)) = module.split_last() {
        for (i, _) in text.match_indices("\nuse super::") {
            for p in use_paths(&text[i + "\nuse super::".len()..]) {
                out.push(parent.iter().cloned().chain(p).collect());
            }
        }
    }
    out
}

/// Circles (strongly connected components of more than one file) in a crate's file graph, where a
/// file points at each module it names, except its own ancestors (a child naturally uses its
/// parent's items; the parent reaches the child through `mod`).
fn circles(files: &BTreeMap<Vec<String>, String>) -> Vec<Vec<String>> {
    let mut edges: BTreeMap<&Vec<String>, BTreeSet<&Vec<String>>> = BTreeMap::new();
    for (module, text) in files {
        let targets = edges.entry(module).or_default();
        for path in referenced(module, text) {
            let target = (1..=path.len())
                .rev()
                .map(|n| &path[..n])
                .find_map(|p| files.get_key_value(p).map(|(k, _)| k));
            if let Some(t) = target
                && !module.starts_with(t)
            {
                targets.insert(t);
            }
        }
    }
    // Tarjan's strongly connected components, iterative enough for a few hundred files.
    struct Tarjan<'a> {
        edges: &'a BTreeMap<&'a Vec<String>, BTreeSet<&'a Vec<String>>>,
        index: HashMap<&'a Vec<String>, (usize, usize)>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a Vec<String>) {
            let i = self.index.len();
            self.index.insert(v, (i, i));
            self.stack.push(v);
            self.on.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.index[w].1.min(self.index[v].1);
                    self.index.get_mut(v).expect("visited").1 = low;
                } else if self.on.contains(w) {
                    let low = self.index[w].0.min(self.index[v].1);
                    self.index.get_mut(v).expect("visited").1 = low;
                }
            }
            if self.index[v].0 == self.index[v].1 {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.join("::"));
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges: &edges,
        index: HashMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

fn crate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("src").is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn fail_if_any(what: &str, found: Vec<String>) {
    assert!(found.is_empty(), "{what}:\n  {}", found.join("\n  "));
}

#[test]
fn pure_crates_stay_pure() {
    let g = metadata();
    // The graph is real: a crate known to reach the kernel is seen to (else every check passes on nothing).
    assert!(
        g.normal.get("romana-host").is_some_and(|d| d.contains("rtnetlink")),
        "cargo metadata read wrongly"
    );
    fail_if_any("a pure crate reaches I/O", pure_violations(g));
}

#[test]
fn dependencies_point_down() {
    fail_if_any("a dependency runs upward or sideways", layer_violations(metadata()));
}

#[test]
fn every_file_says_what_it_is() {
    let files: Vec<PathBuf> =
        rust_files(&root().join("crates")).into_iter().chain(rust_files(&root().join("tests"))).collect();
    assert!(files.len() > 100, "only {} files found under crates/ and tests/", files.len());
    let found = files.iter().filter_map(|f| doc_line_violation(f, &read(f))).collect();
    fail_if_any("files without their `//!` line", found);
}

#[test]
fn files_stay_small() {
    let mut found = Vec::new();
    for dir in SIZE_CHECKED {
        for f in rust_files(&root().join(dir)) {
            let known = KNOWN_LONG.iter().find(|(k, _)| Path::new(k) == f).map(|(_, i)| *i);
            found.extend(size_violation(&f, read(&f).lines().count(), known));
        }
    }
    for (k, issue) in KNOWN_LONG {
        if !root().join(k).exists() {
            found.push(format!(
                "{k} no longer exists: remove it from KNOWN_LONG in tests/tidy.rs (issue {issue})"
            ));
        }
    }
    fail_if_any("files over the size limit", found);
}

#[test]
fn no_import_circles() {
    let mut found = Vec::new();
    let mut seen = Vec::new();
    for dir in crate_dirs() {
        let src = dir.join("src");
        let paths: BTreeMap<String, PathBuf> = rust_files(&src)
            .into_iter()
            .filter_map(|f| {
                Some((module_of(root().join(&f).strip_prefix(&src).expect("under src"))?.join("::"), f))
            })
            .collect();
        let files: BTreeMap<Vec<String>, String> = paths
            .iter()
            .map(|(m, f)| (m.split("::").filter(|s| !s.is_empty()).map(String::from).collect(), read(f)))
            .collect();
        for circle in circles(&files) {
            let listed: Vec<String> = circle.iter().map(|m| paths[m].display().to_string()).collect();
            seen.push(listed.clone());
            if !KNOWN_CIRCLES.iter().any(|(k, _)| k.iter().map(|s| s.to_string()).eq(listed.iter().cloned()))
            {
                found.push(format!(
                    "{} import each other in a circle: move what they share into its own file (or up to their common \
                     parent) so that the imports point one way",
                    listed.join(", ")
                ));
            }
        }
    }
    for (k, issue) in KNOWN_CIRCLES {
        if !seen.iter().any(|s| s.iter().map(String::as_str).eq(k.iter().copied())) {
            found.push(format!(
                "the circle {k:?} is gone: remove it from KNOWN_CIRCLES in tests/tidy.rs (issue {issue})"
            ));
        }
    }
    fail_if_any("import circles between files of a crate", found);
}

// The checks on made-up inputs: each must catch what it exists to catch.

fn graph(members: &[&str], edges: &[(&str, &str)]) -> Graph {
    let mut g = Graph { members: members.iter().map(|s| s.to_string()).collect(), ..Graph::default() };
    for (a, b) in edges {
        g.normal.entry(a.to_string()).or_default().insert(b.to_string());
    }
    g
}

#[test]
fn pure_check_finds_indirect_io() {
    let g = graph(
        &["romana-policy", "romana-api"],
        &[
            ("romana-policy", "romana-api"),
            ("romana-api", "serde"),
            ("romana-api", "hyper-util"),
            ("hyper-util", "tokio"),
        ],
    );
    let v = pure_violations(&g);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("romana-policy -> romana-api -> hyper-util"), "{v:?}");
    assert!(
        pure_violations(&graph(&["romana-ipam"], &[("romana-ipam", "hashbrown"), ("romana-agent", "tokio")]))
            .is_empty()
    );
}

#[test]
fn layer_check_finds_upward_and_unknown() {
    let g = graph(
        &["romana-api", "romana-policy", "romana-new"],
        &[("romana-api", "romana-policy"), ("romana-api", "serde")],
    );
    let v = layer_violations(&g);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[0].contains("romana-api (layer 2) depends on romana-policy (layer 3)"), "{v:?}");
    assert!(v[1].contains("romana-new has no layer"), "{v:?}");
}

#[test]
fn line_checks() {
    let p = Path::new("crates/x/src/a.rs");
    assert!(doc_line_violation(p, "//! A thing.\nfn f() {}").is_none());
    assert!(doc_line_violation(p, "// A thing.\n").is_some());
    assert!(doc_line_violation(p, "\n//! late").is_some());
    assert!(size_violation(p, 601, None).is_some());
    assert!(size_violation(p, 600, None).is_none());
    assert!(size_violation(p, 900, Some(15)).is_none());
    assert!(size_violation(p, 500, Some(15)).is_some_and(|m| m.contains("remove it from KNOWN_LONG")));
}

#[test]
fn use_trees() {
    let check = |src: &str, want: &[&str]| {
        let got: Vec<String> = use_paths(src).iter().map(|p| p.join("::")).collect();
        assert_eq!(got, want, "{src}");
    };
    check("a::B;", &["a::B"]);
    check("a::{b, c::{D, self}, e::*};", &["a::b", "a::c::D", "a::c", "a::e"]);
    check("a::{\n    b::C,\n    d,\n};", &["a::b::C", "a::d"]);
    check("a::f(x)", &["a::f"]);
    check("a::T::<u8>::new()", &["a::T"]);
    assert_eq!(module_of(Path::new("machine/mod.rs")), Some(vec!["machine".into()]));
    assert_eq!(module_of(Path::new("machine/pass.rs")), Some(vec!["machine".into(), "pass".into()]));
    assert_eq!(module_of(Path::new("lib.rs")), Some(vec![]));
    assert_eq!(module_of(Path::new("bin/x.rs")), None);
}

#[test]
fn circle_check() {
    let m = |s: &str| -> Vec<String> {
        if s.is_empty() { vec![] } else { s.split("::").map(String::from).collect() }
    };
    let files: BTreeMap<Vec<String>, String> = [
        ("", "//! root\nuse crate::a::A;\n"),
        ("a", "//! a\nuse crate::{b::B, Root};\n"),
        ("b", "//! b\n// use crate::d::D; (a comment)\nfn f() { crate::c::g() }\n"),
        ("c", "//! c\nuse crate::a;\n"),
        ("d", "//! d\nuse crate::a::A;\n"),
        ("m", "//! parent\nuse crate::m::k::K;\n"),
        ("m::k", "//! child, uses its parent and a sibling\nuse super::j::J;\nuse crate::m::P;\n"),
        ("m::j", "//! sibling\nuse crate::m::k::K;\nmod tests {\n    use super::x;\n}\n"),
    ]
    .into_iter()
    .map(|(k, v)| (m(k), v.to_string()))
    .collect();
    assert_eq!(circles(&files), vec![vec!["a", "b", "c"], vec!["m::j", "m::k"]]);
}
