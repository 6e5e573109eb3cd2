//! `EtcdCluster`: a throwaway etcd cluster of several members on 127.0.0.1 (ports chosen at run
//! time, one temporary data directory each), for tests that kill members. Killed and removed
//! when dropped.

use std::path::PathBuf;
use std::process::Child;

use crate::server::{Member, free_port, installed, wait_port};

#[derive(Debug)]
pub struct EtcdCluster {
    dir: PathBuf,
    token: String,
    /// Client and peer port of each member.
    ports: Vec<(u16, u16)>,
    /// `None` while a member is stopped (`kill9`).
    children: Vec<Option<Child>>,
}

impl EtcdCluster {
    /// Starts `n` members (Debian's etcd-server) and waits until each accepts connections;
    /// `None` if etcd is not installed.
    pub fn start(tag: &str, n: usize) -> std::io::Result<Option<EtcdCluster>> {
        if !installed() {
            return Ok(None);
        }
        let mut ports = Vec::new();
        for _ in 0..n {
            ports.push((free_port()?, free_port()?));
        }
        let token = format!("romana-{tag}-{}-{}", std::process::id(), ports[0].0);
        let dir = std::env::temp_dir().join(&token);
        let _ = std::fs::remove_dir_all(&dir);
        let mut cluster = EtcdCluster { dir, token, ports, children: (0..n).map(|_| None).collect() };
        for i in 0..n {
            std::fs::create_dir_all(cluster.member_dir(i))?;
            cluster.spawn(i)?;
        }
        for i in 0..n {
            wait_port(cluster.ports[i].0, &cluster.member_dir(i))?;
        }
        Ok(Some(cluster))
    }

    fn member_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("m{i}"))
    }

    fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let initial: Vec<String> =
            self.ports.iter().enumerate().map(|(k, (_, p))| format!("m{k}=http://127.0.0.1:{p}")).collect();
        let name = format!("m{i}");
        let (client_port, peer_port) = self.ports[i];
        let member = Member { name: &name, client_port, peer_port };
        self.children[i] = Some(member.spawn(&self.member_dir(i), &initial.join(","), &self.token)?);
        Ok(())
    }

    /// Every member's client URL, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.ports.iter().map(|(c, _)| format!("http://127.0.0.1:{c}")).collect()
    }

    /// Member `i`'s process id while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }

    /// Kills member `i` with SIGKILL, as a crash would; its data directory stays.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data directory and ports (it rejoins the cluster).
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.kill9(i);
        self.spawn(i)?;
        wait_port(self.ports[i].0, &self.member_dir(i))
    }

    /// Every member's election steps logged so far (`election_log`), members named `m0`, `m1`, ...
    pub fn election_events(&self) -> Vec<crate::election_log::Event> {
        (0..self.ports.len())
            .flat_map(|i| {
                let log = std::fs::read_to_string(self.member_dir(i).join("etcd.log")).unwrap_or_default();
                crate::election_log::parse(&format!("m{i}"), &log)
            })
            .collect()
    }

    /// The member that leads now, as a running member sees it (`None` while there is none).
    pub async fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leader = None;
        for (i, endpoint) in self.endpoints().iter().enumerate() {
            if self.children[i].is_none() {
                continue;
            }
            let opts = etcd_client::ConnectOptions::new()
                .with_connect_timeout(std::time::Duration::from_secs(1))
                .with_timeout(std::time::Duration::from_secs(1));
            let Ok(mut c) = etcd_client::Client::connect([endpoint.as_str()], Some(opts)).await else {
                continue;
            };
            let Ok(s) = c.status().await else { continue };
            ids.push((i, s.header().map_or(0, |h| h.member_id())));
            if s.leader() != 0 {
                leader = Some(s.leader());
            }
        }
        let leader = leader?;
        ids.into_iter().find(|(_, id)| *id == leader).map(|(i, _)| i)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill9(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
