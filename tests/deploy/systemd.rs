//! The systemd units in deploy/systemd: each `ExecStart=` accepted by its binary with its
//! settings file expanded, the hardening kept, the agent's capabilities equal to the DaemonSet's,
//! and `systemd-analyze verify` silent. Knows nothing of Kubernetes but the agent's capability list.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use super::manifest::{arr, containers, find, pod_spec, s};
use super::{BIN_DIR, accepted, built, check_env, deploy, manifest, tempdir, units};

/// Each unit with its environment file and the hardening it must keep.
#[rustfmt::skip]
const UNITS: &[(&str, &str, &str)] = &[
    ("romanad.service", "romanad.env", "romanad"),
    ("romana-agent.service", "agent.env", "romana-agent"),
    ("romana-k8s.service", "k8s.env", "romana-k8s"),
];

#[test]
fn systemd_exec_start_lines_are_accepted_and_units_hardened() {
    for (unit_name, env_name, bin) in UNITS {
        let unit = units::Unit::load(&deploy(&format!("systemd/{unit_name}")));
        let env = units::env_file(&deploy(&format!("systemd/{env_name}")));
        let env_files = unit.service("EnvironmentFile");
        assert!(
            env_files.iter().any(|f| f.trim_start_matches('-') == format!("/etc/romana/{env_name}")),
            "{unit_name}: EnvironmentFile is not /etc/romana/{env_name}"
        );
        let mut vars = units::systemd_vars(&unit, unit_name);
        vars.extend(env.clone());
        let exec = unit.service("ExecStart");
        assert_eq!(exec.len(), 1, "{unit_name}: one ExecStart");
        let words = units::exec_words(exec[0], &vars);
        assert_eq!(words[0], format!("{BIN_DIR}/{bin}"), "{unit_name}: runs {bin} from the image's path");
        let help = accepted(bin, &words[1..], unit_name);
        let used: BTreeSet<String> = env
            .keys()
            .filter(|k| exec[0].contains(&format!("${k}")) || exec[0].contains(&format!("${{{k}}}")))
            .cloned()
            .collect();
        check_env(unit_name, &help, &env.keys().cloned().collect(), &used);
        for (key, want) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("Restart", "on-failure"),
            ("UMask", "0077"),
        ] {
            assert_eq!(unit.one(key), Some(want), "{unit_name}: {key}");
        }
        assert!(unit.one("CapabilityBoundingSet").is_some(), "{unit_name}: capabilities unbounded");
    }
    // The agent's bounding set is the DaemonSet's list: one statement of what it needs.
    let unit = units::Unit::load(&deploy("systemd/romana-agent.service"));
    let caps: BTreeSet<String> = unit
        .one("CapabilityBoundingSet")
        .unwrap_or("")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    let docs = manifest();
    let spec = pod_spec(find(&docs, "DaemonSet", "romana-agent")).expect("a pod template");
    let agent = containers(spec).into_iter().find(|c| s(c, "/name") == "romana-agent").expect("the agent");
    let added: BTreeSet<String> = arr(agent, "/securityContext/capabilities/add")
        .iter()
        .map(|c| c.as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(caps, added, "the agent's capabilities under systemd and in the DaemonSet");
    // Unprivileged services get none.
    for u in ["romanad.service", "romana-k8s.service"] {
        let unit = units::Unit::load(&deploy(&format!("systemd/{u}")));
        assert_eq!(unit.one("CapabilityBoundingSet"), Some(""), "{u}");
        assert_eq!(unit.one("DynamicUser"), Some("yes"), "{u}");
    }
}

/// `systemd-analyze verify` on copies of the units whose ExecStart names the built binaries (it
/// checks that the program exists). Any message it prints is a failure: it reports unknown keys
/// and bad values as warnings with exit status 0.
#[test]
fn systemd_analyze_verifies_the_units() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        println!("skipped: {} is not installed", analyze.display());
        return;
    }
    let dir = tempdir("units");
    let mut names = Vec::new();
    for (unit_name, _, bin) in UNITS {
        let text = std::fs::read_to_string(deploy(&format!("systemd/{unit_name}"))).expect("unit");
        let path = built(bin);
        let text = text.replace(&format!("{BIN_DIR}/{bin}"), &path.to_string_lossy());
        std::fs::write(dir.join(unit_name), text).expect("write");
        names.push(dir.join(unit_name));
    }
    let out = Command::new(analyze).arg("verify").args(&names).output().expect("systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() && said.contains("Failed to") && said.contains("bus") {
        println!("skipped: systemd-analyze cannot run here: {said}");
        return;
    }
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");
}
