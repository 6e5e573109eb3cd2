//! The nftables adapter: reads our table (`nft -j list table inet romana`) and applies a
//! transaction (`nft -f -`, all or nothing). It runs Debian's `nft` in the calling thread's network
//! namespace (children inherit it), so `in_netns_path` selects the host. Only our table is ever
//! named: never `flush ruleset`, never another table. The policy crate builds and reads the text.
//! The ruleset's generation id is read over netlink (`NFT_MSG_GETGEN`): it tells, for a few
//! microseconds, whether anything changed since a known point, where listing the table costs
//! hundreds of milliseconds.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::nftnl::{self, ElementPath, ElementSocket, SetElements};

pub use crate::nft_error::{NftError, TABLE_SPEC};

fn nft_path() -> &'static str {
    // /usr/sbin may be missing from a service's PATH.
    ["/usr/sbin/nft", "/sbin/nft"].into_iter().find(|p| std::path::Path::new(p).exists()).unwrap_or("nft")
}

fn nft() -> Command {
    Command::new(nft_path())
}

fn spawn_err(e: std::io::Error, what: &str) -> NftError {
    if e.kind() == std::io::ErrorKind::NotFound {
        NftError::NotInstalled(e)
    } else {
        NftError::Io { what: what.to_owned(), source: e }
    }
}

/// Our table as nft's JSON, or `None` when it does not exist. With `background`, nft runs at
/// the lowest CPU priority (`nice -n 19`): listing a table of 30,000 elements costs nft about
/// 300 ms of CPU, which a periodic check should not take from the work it checks.
pub fn list_table(background: bool) -> Result<Option<String>, NftError> {
    let mut cmd = if background && std::path::Path::new("/usr/bin/nice").exists() {
        let mut c = Command::new("/usr/bin/nice");
        c.args(["-n", "19", nft_path()]);
        c
    } else {
        nft()
    };
    let out = cmd.arg("-j").arg("list").args(TABLE_SPEC).output().map_err(|e| spawn_err(e, "list"))?;
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if stderr.contains("No such file or directory") {
        return Ok(None);
    }
    Err(NftError::Failed { what: "list table inet romana".into(), stderr })
}

/// Every table's chains with their hooks (`nft list chains`, text), of every family: what else
/// hooks this namespace's packets.
pub fn list_chains() -> Result<String, NftError> {
    let out = nft().args(["list", "chains"]).output().map_err(|e| spawn_err(e, "list chains"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        return Err(NftError::Failed { what: "list chains".into(), stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies `script` as one transaction: the kernel takes all of it or none. (No `--echo`: it
/// makes nft read the whole table first, 100 ms at 30,000 elements.)
pub fn apply(script: &str) -> Result<(), NftError> {
    let mut child = nft()
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_err(e, "-f"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let written = stdin.write_all(script.as_bytes());
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| NftError::Io { what: "-f".into(), source: e })?;
    if let Err(e) = written {
        return Err(NftError::Io { what: "-f (writing the script)".into(), source: e });
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Failed {
            what: "-f (transaction)".into(),
            stderr: short(&String::from_utf8_lossy(&out.stderr)),
        })
    }
}

/// nft's error text on one line: it names the failing line of the script, the first few say it.
fn short(stderr: &str) -> String {
    stderr.lines().take(6).collect::<Vec<_>>().join(" | ")
}

// nfnetlink's framing for the one request we send (linux/netfilter/nfnetlink.h, nf_tables.h).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;

/// The nftables ruleset generation of the calling thread's network namespace. The kernel bumps
/// it on every committed transaction, of any table and any process (an empty one excepted), so
/// an unchanged value means the kernel's tables are as they were when it was last read.
pub fn generation() -> Result<u32, NftError> {
    ask_generation(&generation_socket()?, 1)
}

fn gen_err(what: &str, e: std::io::Error) -> NftError {
    NftError::Generation(format!("{what}: {e}"))
}

fn generation_socket() -> Result<netlink_sys::Socket, NftError> {
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
    let mut s = Socket::new(NETLINK_NETFILTER).map_err(|e| gen_err("socket", e))?;
    s.bind_auto().map_err(|e| gen_err("bind", e))?;
    s.connect(&SocketAddr::new(0, 0)).map_err(|e| gen_err("connect", e))?;
    Ok(s)
}

fn ask_generation(s: &netlink_sys::Socket, seq: u32) -> Result<u32, NftError> {
    // nlmsghdr (length, type, flags, sequence, port) and nfgenmsg (AF_UNSPEC, version 0, res 0).
    let mut req = Vec::with_capacity(20);
    req.extend_from_slice(&20u32.to_ne_bytes());
    req.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req.extend_from_slice(&seq.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[0, 0, 0, 0]);
    s.send(&req, 0).map_err(|e| gen_err("send", e))?;
    loop {
        let (buf, _) = s.recv_from_full().map_err(|e| gen_err("receive", e))?;
        // An answer to an earlier request that was given up on is skipped.
        if word(&buf, 8).map(u32::from_ne_bytes) == Some(seq) {
            return parse_generation(&buf);
        }
    }
}

/// Transactions and generation checks in one namespace over connections kept open: a libnftables
/// context (`nft -f` where the library is missing) and a netlink socket. Its first use must be in
/// the namespace it is for (the connections belong to the namespace they were opened in).
#[derive(Debug, Default)]
pub struct Nft {
    /// `None`: not tried yet; `Some(None)`: no library, `nft -f` it is.
    session: Option<Option<crate::nftlib::Session>>,
    socket: Option<netlink_sys::Socket>,
    seq: u32,
    /// Element batches (`nftnl.rs`); `Some(None)`: this kernel refused them, text it is.
    elements: Option<Option<ElementSocket>>,
}

/// The text path as an `ElementPath`: the same changes as an nft script, one transaction.
impl ElementPath for Nft {
    fn apply_elements(&mut self, changes: &[SetElements]) -> Result<(), NftError> {
        let script = nftnl::script(changes);
        if script.is_empty() { Ok(()) } else { self.apply(&script) }
    }
}

impl Nft {
    /// Applies `script` as one transaction, as `apply` does.
    pub fn apply(&mut self, script: &str) -> Result<(), NftError> {
        match self.session.get_or_insert_with(crate::nftlib::Session::open) {
            Some(session) => session.run(script).map_err(|e| NftError::Failed {
                what: "transaction (libnftables)".into(),
                stderr: short(&e),
            }),
            None => apply(script),
        }
    }

    /// Applies element changes of existing sets as one transaction: a netlink batch
    /// (`nftnl.rs`), without nft's cache of the table; as nft text when the batch would be over
    /// the socket's largest batch (`nftnl::MAX_BATCH`, more as root). A batch the kernel refuses changed nothing: the text path then tries
    /// the same changes, and when it succeeds where the batch failed, batches are not tried
    /// again (a kernel that does not take our encoding: `uses_batches` tells). A failure of both
    /// is the text path's error.
    pub fn apply_elements(&mut self, changes: &[SetElements]) -> Result<(), NftError> {
        if self.elements.is_none() {
            self.elements = Some(ElementSocket::open().ok());
        }
        let Some(Some(socket)) = self.elements.as_mut() else {
            return ElementPath::apply_elements(self, changes);
        };
        if nftnl::batch_size(changes) > socket.max_batch() {
            return ElementPath::apply_elements(self, changes);
        }
        if socket.apply_elements(changes).is_ok() {
            return Ok(());
        }
        ElementPath::apply_elements(self, changes)?;
        self.elements = Some(None);
        Ok(())
    }

    /// Applies a whole plan as one netlink batch (`nftnl/ops.rs`), without nft's cache of the
    /// table, whose fill costs a dump of every set (quadratic in their number in the kernel). A
    /// batch the kernel refuses changed nothing: `script`, the same plan as nft text, is then
    /// applied instead. Returns why the kernel refused the batch (`None`: it took it, or there is
    /// no netlink socket here, which `uses_batches` reports, and the text was applied).
    pub fn apply_ops(&mut self, ops: &[nftnl::ops::Op], script: &str) -> Result<Option<String>, NftError> {
        if self.elements.is_none() {
            self.elements = Some(ElementSocket::open().ok());
        }
        let Some(Some(socket)) = self.elements.as_mut() else {
            self.apply(script)?;
            return Ok(None);
        };
        let refused = match socket.apply_ops(ops) {
            Ok(()) => return Ok(None),
            Err(e) => e.to_string(),
        };
        self.apply(script)?;
        Ok(Some(refused))
    }

    /// Our table read over netlink (`nftread.rs`), on the socket element batches use; `Err`
    /// when netlink cannot read it (the caller lists it with `nft -j` instead).
    pub fn read_table(&mut self) -> Result<Option<crate::nftread::TableRead>, NftError> {
        if let Some(Some(socket)) = self.elements.as_mut() {
            let r = socket.read_table();
            if r.is_err() {
                // A socket left mid-dump is not reused.
                self.elements = None;
            }
            return r;
        }
        ElementSocket::open()?.read_table()
    }

    /// Our table without its sets' elements (`nftread::read_structure`), on a socket of its own.
    pub fn read_structure() -> Result<Option<crate::nftread::TableRead>, NftError> {
        ElementSocket::open()?.read_structure()
    }

    /// Whether element changes go over netlink (`None`: none was applied yet).
    pub fn uses_batches(&self) -> Option<bool> {
        self.elements.as_ref().map(Option::is_some)
    }

    /// Whether transactions go through libnftables (known after the first `apply`).
    pub fn uses_library(&self) -> Option<bool> {
        self.session.as_ref().map(Option::is_some)
    }

    /// As `generation`, on the kept socket.
    pub fn generation(&mut self) -> Result<u32, NftError> {
        if self.socket.is_none() {
            self.socket = Some(generation_socket()?);
        }
        self.seq = self.seq.wrapping_add(1);
        let r = ask_generation(self.socket.as_ref().expect("opened above"), self.seq);
        if r.is_err() {
            // A broken socket is replaced on the next call.
            self.socket = None;
        }
        r
    }
}

/// The four bytes at `i`, if the buffer has them.
fn word(buf: &[u8], i: usize) -> Option<[u8; 4]> {
    buf.get(i..i + 4).and_then(|b| b.try_into().ok())
}

/// The generation id in the kernel's answer to `NFT_MSG_GETGEN`.
fn parse_generation(buf: &[u8]) -> Result<u32, NftError> {
    let bad = |what: String| NftError::Generation(what);
    let u16_at = |i: usize| buf.get(i..i + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let len = word(buf, 0).map(|w| u32::from_ne_bytes(w) as usize);
    let (Some(len), Some(kind)) = (len, u16_at(4)) else {
        return Err(bad(format!("short answer of {} bytes", buf.len())));
    };
    if kind == NLMSG_ERROR {
        let code = word(buf, 16).map(i32::from_ne_bytes).unwrap_or(0);
        return Err(bad(format!("the kernel answered {}", std::io::Error::from_raw_os_error(-code))));
    }
    if kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
        return Err(bad(format!("unexpected message type {kind:#x}")));
    }
    // Attributes follow the 16-byte header and the 4-byte nfgenmsg, each 4-byte aligned.
    let end = len.min(buf.len());
    let mut at = 20;
    while let (Some(alen), Some(atype)) = (u16_at(at), u16_at(at + 2)) {
        let alen = alen as usize;
        if alen < 4 || at + alen > end {
            break;
        }
        if let Some(id) = word(buf, at + 4).filter(|_| atype & 0x3fff == NFTA_GEN_ID && alen >= 8) {
            return Ok(u32::from_be_bytes(id));
        }
        at += (alen + 3) & !3;
    }
    Err(bad("no generation id in the answer".into()))
}
