//! `romana chaos`: the processes it kills and restarts. A replicated control plane of its own
//! (three etcd members from Debian's etcd-server and three romanad replicas on 127.0.0.1, ports
//! chosen at run time, data in a private directory), or one it was given (then only agents are
//! its to kill), and the sandbox's agents. Everything it started stops when it is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::chaos_plan::{Kind, Sizes, Target};
use crate::chaos_procs::{Etcd, Replica};
use anyhow::{Context, Result, bail};
use romana_api::rest::Credentials;

/// The etcd key prefix of the chaos control plane (its own etcd: any prefix would do).
const PREFIX: &str = "/romana-chaos/";

/// The processes of one run. Fields drop in order: replicas stop before etcd.
#[derive(Debug)]
pub struct Plane {
    replicas: Vec<Replica>,
    etcd: Option<Etcd>,
    pub urls: Vec<String>,
    /// The admin's credentials (the first replica wrote them), when the plane is ours.
    pub admin: Option<Credentials>,
    /// The sandbox whose agents are killed: its state directory and name.
    sandbox: Option<(PathBuf, String)>,
}

impl Plane {
    /// Three etcd members and three replicas on them, logs and data under `work`.
    pub fn start(work: &Path, members: usize, replicas: usize) -> Result<Plane> {
        let etcd = Etcd::start(work, members).context("starting etcd")?;
        let endpoints = etcd.endpoints().join(",");
        let bin = crate::sandbox::sibling("romanad");
        let mut plane =
            Plane { replicas: Vec::new(), etcd: Some(etcd), urls: Vec::new(), admin: None, sandbox: None };
        for i in 0..replicas {
            let data = work.join(format!("romanad-{i}"));
            std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
            let args: Vec<String> = [
                "--etcd-endpoints",
                &endpoints,
                "--prefix",
                PREFIX,
                "--data-dir",
                &data.display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let log = work.join(format!("romanad-{i}.log"));
            let r = Replica::start(&bin, &args, &log).with_context(|| {
                format!("starting romanad replica {i} ({}; log {})", bin.display(), log.display())
            })?;
            println!("romanad replica {i}: {} (pid {}, log {})", r.url, r.pid().unwrap_or(0), log.display());
            plane.urls.push(r.url.clone());
            plane.replicas.push(r);
        }
        // The first replica creates the admin and writes its credentials; the others find the
        // admin in etcd and write none.
        let creds = work.join("romanad-0/admin.credentials");
        let text = std::fs::read_to_string(&creds).with_context(|| format!("reading {}", creds.display()))?;
        plane.admin =
            Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", creds.display()))?);
        Ok(plane)
    }

    /// A control plane someone else runs: nothing of it is ours to kill.
    pub fn given(urls: Vec<String>) -> Plane {
        Plane { replicas: Vec::new(), etcd: None, urls, admin: None, sandbox: None }
    }

    pub fn attach_sandbox(&mut self, state_dir: &Path, name: &str) {
        self.sandbox = Some((state_dir.to_owned(), name.to_owned()));
    }

    pub fn sizes(&self, agents: usize) -> Sizes {
        Sizes {
            agents: if self.sandbox.is_some() { agents } else { 0 },
            replicas: self.replicas.len(),
            members: self.etcd.as_ref().map_or(0, |e| e.endpoints().len()),
        }
    }

    fn agent_pid(&self, host: usize) -> Result<(String, Option<u32>)> {
        let (dir, name) = self.sandbox.as_ref().context("no sandbox attached")?;
        let state = crate::sandbox::load(dir, name)?;
        let layout = state.layout()?;
        let h = layout.hosts.get(host).with_context(|| format!("no host number {host}"))?;
        let pid =
            state.agents.get(&h.name).copied().filter(|p| crate::sandbox_bgp::pid_alive(*p, "romana-agent"));
        Ok((h.name.clone(), pid))
    }

    /// `kill -9` of one process; returns what was killed, for the log.
    pub fn kill(&mut self, (kind, i): Target) -> Result<String> {
        match kind {
            Kind::Agent => {
                let (host, pid) = self.agent_pid(i)?;
                let Some(pid) = pid else { bail!("the agent of {host} is not running") };
                let ok =
                    Command::new("kill").args(["-9", &pid.to_string()]).status().is_ok_and(|s| s.success());
                if !ok {
                    bail!("kill -9 {pid} (agent of {host}) failed");
                }
                Ok(format!("agent of {host} (pid {pid})"))
            }
            Kind::Romanad => {
                let r = self.replicas.get_mut(i).with_context(|| format!("no replica {i}"))?;
                let pid = r.pid().unwrap_or(0);
                r.kill9();
                Ok(format!("romanad replica {i} (pid {pid}, {})", r.url))
            }
            Kind::Etcd => {
                let e = self.etcd.as_mut().context("etcd is not ours")?;
                let pid = e.pid(i).unwrap_or(0);
                e.kill9(i);
                Ok(format!("etcd member {i} (pid {pid})"))
            }
        }
    }

    /// Starts a killed process again (same ports, same data).
    pub fn restart(&mut self, (kind, i): Target) -> Result<String> {
        match kind {
            Kind::Agent => {
                let (dir, name) = self.sandbox.clone().context("no sandbox attached")?;
                let mut state = crate::sandbox::load(&dir, &name)?;
                let layout = state.layout()?;
                let h = layout.hosts.get(i).with_context(|| format!("no host number {i}"))?;
                let pid = crate::sandbox::start_agent(&layout, &h.name, &crate::sandbox::dir(&dir, &name))?;
                state.agents.insert(h.name.clone(), pid);
                crate::sandbox::save(&dir, &state)?;
                Ok(format!("agent of {} (pid {pid})", h.name))
            }
            Kind::Romanad => {
                let r = self.replicas.get_mut(i).with_context(|| format!("no replica {i}"))?;
                r.restart().with_context(|| format!("restarting romanad replica {i}"))?;
                Ok(format!("romanad replica {i} (pid {})", r.pid().unwrap_or(0)))
            }
            Kind::Etcd => {
                let e = self.etcd.as_mut().context("etcd is not ours")?;
                e.restart(i).with_context(|| format!("restarting etcd member {i}"))?;
                Ok(format!("etcd member {i} (pid {})", e.pid(i).unwrap_or(0)))
            }
        }
    }
}
