//! The `bpf(2)` calls the fast path needs and aya does not make: tcx attachments that outlive the
//! agent (attach, replace in place, detach), and queries of a device's tcx programs by index.
//! aya loads the object, its maps and programs (fastpath.rs); its tcx attachments are links,
//! which end with the process that holds them unless pinned in a bpffs (not mounted inside
//! `ip netns exec`, nor in every container), while ours must stay when the agent stops and be
//! replaced in place by the next one (`BPF_F_REPLACE`, docs/fastpath.md); and its query takes a
//! device's name, where the agent knows devices by index (a link made again under the same name
//! is another link).
// The one place that talks to the kernel's BPF interface directly: raw attribute buffers for a
// system call libc does not wrap. Each call passes a buffer that lives across it and pointers
// into buffers that outlive it.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

// Commands (`enum bpf_cmd`).
const PROG_ATTACH: i64 = 8;
const PROG_DETACH: i64 = 9;
const PROG_GET_FD_BY_ID: i64 = 13;
const OBJ_GET_INFO_BY_FD: i64 = 15;
const PROG_QUERY: i64 = 16;

/// `BPF_TCX_INGRESS` of `enum bpf_attach_type` (Linux 6.6).
const TCX_INGRESS: u32 = 46;
const TCX_EGRESS: u32 = 47;
const F_REPLACE: u32 = 1 << 2;

/// What a BPF call failed with, and which call or object.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("bpf {call}: {source}")]
    Sys { call: &'static str, source: std::io::Error },
    #[error("the verifier refused program {name}: {source}\n{log}")]
    Verifier { name: String, source: std::io::Error, log: String },
    /// The embedded object could not be loaded (its maps created, its BTF read or relocated).
    #[error("loading the fast path's object: {0}")]
    Object(String),
    /// A program in the object could not be prepared or loaded, for another reason than the
    /// verifier's.
    #[error("fast path program {name}: {source}")]
    Program { name: &'static str, source: Box<aya::programs::ProgramError> },
    /// The object lacks a map or program, or one has another type or layout than this code
    /// writes (an object built from another source).
    #[error("fast path object: {0}")]
    Layout(String),
    #[error("fast path map {map}: {source}")]
    Map { map: &'static str, source: Box<aya::maps::MapError> },
    /// The kernel has no tcx (before Linux 6.6): the fast path stays off.
    #[error("this kernel has no tcx attachments (Linux 6.6+): {0}")]
    NoTcx(std::io::Error),
}

impl BpfError {
    /// An error of aya's loader, with its causes (its own message names only the step).
    pub(crate) fn object(e: &aya::EbpfError) -> BpfError {
        let mut msg = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            msg = format!("{msg}: {c}");
            cause = c.source();
        }
        BpfError::Object(msg)
    }

    /// The errno, for callers that tell "not supported here" from real failures.
    pub fn errno(&self) -> Option<i32> {
        match self {
            BpfError::Sys { source, .. } | BpfError::Verifier { source, .. } | BpfError::NoTcx(source) => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}

/// A `union bpf_attr`, zeroed (the kernel requires unknown trailing bytes to be zero).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(mut self, off: usize, v: u32) -> Attr {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, off: usize, v: u64) -> Attr {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn read_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
    }
}

fn ptr<T>(p: *const T) -> u64 {
    p as usize as u64
}

fn sys(call: &'static str, cmd: i64, attr: &mut Attr) -> Result<i64, BpfError> {
    // SAFETY: `attr` is a valid, writable 128-byte buffer for the duration of the call, and every
    // pointer stored in it points into memory the caller keeps alive across this call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len() as u32) };
    if r < 0 {
        return Err(BpfError::Sys { call, source: std::io::Error::last_os_error() });
    }
    Ok(r)
}

fn fd(call: &'static str, cmd: i64, attr: &mut Attr) -> Result<OwnedFd, BpfError> {
    let r = sys(call, cmd, attr)?;
    // SAFETY: these commands return a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// The program ids attached at `ifindex`'s tcx ingress (of the calling thread's namespace), in
/// the order they run.
pub fn tcx_ingress_programs(ifindex: u32) -> Result<Vec<u32>, BpfError> {
    tcx_query(ifindex, TCX_INGRESS)
}

/// The program ids attached at `ifindex`'s tcx egress.
pub fn tcx_egress_programs(ifindex: u32) -> Result<Vec<u32>, BpfError> {
    tcx_query(ifindex, TCX_EGRESS)
}

fn tcx_query(ifindex: u32, attach_type: u32) -> Result<Vec<u32>, BpfError> {
    let mut ids = [0u32; 64];
    let mut a = Attr::new().u32(0, ifindex).u32(4, attach_type).u64(16, ptr(ids.as_mut_ptr())).u32(24, 64);
    sys("prog query", PROG_QUERY, &mut a)?;
    let n = (a.read_u32(24) as usize).min(ids.len());
    Ok(ids[..n].to_vec())
}

/// Attaches `prog` at `ifindex`'s tcx ingress; with `replace`, atomically in that program's place
/// (no packet sees neither).
pub fn tcx_attach(ifindex: u32, prog: &impl AsFd, replace: Option<&OwnedFd>) -> Result<(), BpfError> {
    let mut a = Attr::new().u32(0, ifindex).u32(4, prog.as_fd().as_raw_fd() as u32).u32(8, TCX_INGRESS);
    if let Some(old) = replace {
        a = a.u32(12, F_REPLACE).u32(16, old.as_raw_fd() as u32);
    }
    sys("prog attach", PROG_ATTACH, &mut a).map(drop)
}

/// Detaches `prog` from `ifindex`'s tcx ingress.
pub fn tcx_detach(ifindex: u32, prog: &OwnedFd) -> Result<(), BpfError> {
    let mut a = Attr::new().u32(0, ifindex).u32(4, prog.as_raw_fd() as u32).u32(8, TCX_INGRESS);
    sys("prog detach", PROG_DETACH, &mut a).map(drop)
}

/// A file descriptor for the loaded program `id`.
pub fn prog_by_id(id: u32) -> Result<OwnedFd, BpfError> {
    fd("prog get fd by id", PROG_GET_FD_BY_ID, &mut Attr::new().u32(0, id))
}

/// A loaded program's id and name (`struct bpf_prog_info`: id at 4, name at 64).
pub fn prog_info(prog: &OwnedFd) -> Result<(u32, String), BpfError> {
    let mut info = [0u8; 96];
    let mut a =
        Attr::new().u32(0, prog.as_raw_fd() as u32).u32(4, info.len() as u32).u64(8, ptr(info.as_mut_ptr()));
    sys("prog info", OBJ_GET_INFO_BY_FD, &mut a)?;
    let id = u32::from_ne_bytes(info[4..8].try_into().expect("4 bytes"));
    let name = &info[64..80];
    let end = name.iter().position(|b| *b == 0).unwrap_or(16);
    Ok((id, String::from_utf8_lossy(&name[..end]).into_owned()))
}

/// Gives the memory freed since back to the kernel. aya's loader parses the kernel's whole BTF
/// (`/sys/kernel/btf/vmlinux`, megabytes) on every load, which this object does not need (no CO-RE
/// relocations); freed, its many small allocations would stay in malloc's arenas and in the
/// agent's resident memory (docs/fastpath.md, "The programs and their build").
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}
