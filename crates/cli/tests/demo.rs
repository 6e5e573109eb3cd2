//! The main job (`scripts/demo.sh`) end to end (root), on the binaries this build made
//! (`ROMANA_DEMO_BIN`: no set-up, no release build): it must finish, its checked matrix after
//! tenant isolation and the NetworkPolicy must have refused pairs and no cell against the policy
//! (the script fails loudly on one), and `romana doctor` on a host must find nothing.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod common;
use common::{namespaces, run_demo};

#[test]
fn the_demo_shows_isolation_and_the_policy_and_a_healthy_doctor() {
    let Some(text) = run_demo(env!("CARGO_BIN_EXE_romana"), &[]) else { return };
    let matrix = text.split("checked against isolation and the policy").nth(1).unwrap();
    assert!(matrix.contains("      X"), "refused pairs are marked:\n{text}");
    assert!(!matrix.split("(. reachable").next().unwrap().contains('!'), "{text}");
    assert!(text.contains("0 problem(s) on r1h1"), "{text}");
    assert!(text.contains("/ui  (log in as"), "{text}");
    assert!(namespaces("rms-demo-").is_empty(), "the demo tears its sandbox down");
}
