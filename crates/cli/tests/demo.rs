//! The main job (`scripts/demo.sh`) end to end (root), on the binaries this build made
//! (`ROMANA_DEMO_BIN`: no set-up, no release build): it must finish, its checked matrix after
//! tenant isolation and the NetworkPolicy must have refused pairs and no cell against the policy
//! (the script fails loudly on one), and `romana doctor` on a host must find nothing.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use romana_test_support::sibling_bin;

#[allow(dead_code)]
mod common;
use common::{can_make_namespaces, namespaces};

#[test]
fn the_demo_shows_isolation_and_the_policy_and_a_healthy_doctor() {
    if !can_make_namespaces() {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    }
    if !namespaces("rms-demo-").is_empty() {
        eprintln!("SKIP: a demo sandbox (rms-demo-*) is running on this machine");
        return;
    }
    let romana = std::path::PathBuf::from(env!("CARGO_BIN_EXE_romana"));
    for bin in ["romanad", "romana-agent", "romana-cni"] {
        sibling_bin(env!("CARGO_BIN_EXE_romana"), bin);
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/demo.sh"))
        .env("ROMANA_DEMO_BIN", romana.parent().unwrap())
        .env_remove("ROMANA_ENDPOINT")
        .env_remove("ROMANA_CREDENTIALS")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the demo failed:\n{text}");
    let matrix = text.split("checked against isolation and the policy").nth(1).unwrap();
    assert!(matrix.contains("      X"), "refused pairs are marked:\n{text}");
    assert!(!matrix.split("(. reachable").next().unwrap().contains('!'), "{text}");
    assert!(text.contains("0 problem(s) on r1h1"), "{text}");
    assert!(text.contains("/ui  (log in as"), "{text}");
    assert!(namespaces("rms-demo-").is_empty(), "the demo tears its sandbox down");
}
