//! The `bpf(2)` system call, only as far as the fast path needs it: a hash map, a program loaded
//! from instructions we assemble ourselves (no compiler, no object files), and tcx attachments
//! (Linux 6.6+) on a device's ingress: attach, replace in place, query, detach.
// The one place that talks to the kernel's BPF interface: raw attribute buffers for a system call
// libc does not wrap. Each call passes a buffer that lives across it and pointers into buffers
// that outlive it.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// Commands (`enum bpf_cmd`).
const MAP_CREATE: i64 = 0;
const MAP_UPDATE_ELEM: i64 = 2;
const MAP_DELETE_ELEM: i64 = 3;
const PROG_LOAD: i64 = 5;
const PROG_ATTACH: i64 = 8;
const PROG_DETACH: i64 = 9;
const PROG_GET_FD_BY_ID: i64 = 13;
const OBJ_GET_INFO_BY_FD: i64 = 15;
const PROG_QUERY: i64 = 16;

const MAP_TYPE_HASH: u32 = 1;
/// Entries are allocated as they are added: an idle agent holds no kernel memory for a full map.
const F_NO_PREALLOC: u32 = 1;
const PROG_TYPE_SCHED_CLS: u32 = 3;
/// `BPF_TCX_INGRESS` of `enum bpf_attach_type` (Linux 6.6).
const TCX_INGRESS: u32 = 46;
const TCX_EGRESS: u32 = 47;
const F_REPLACE: u32 = 1 << 2;

/// What a BPF call failed with, and which call.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("bpf {call}: {source}")]
    Sys { call: &'static str, source: std::io::Error },
    #[error("the verifier refused program {name}: {source}\n{log}")]
    Verifier { name: String, source: std::io::Error, log: String },
}

impl BpfError {
    /// The errno, for callers that tell "not supported here" from real failures.
    pub fn errno(&self) -> Option<i32> {
        match self {
            BpfError::Sys { source, .. } | BpfError::Verifier { source, .. } => source.raw_os_error(),
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
    fn bytes(mut self, off: usize, b: &[u8]) -> Attr {
        self.0[off..off + b.len()].copy_from_slice(b);
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

/// A hash map of `key_size`-byte keys to `value_size`-byte values.
pub fn map_create(name: &str, key_size: u32, value_size: u32, max_entries: u32) -> Result<OwnedFd, BpfError> {
    let mut a = Attr::new()
        .u32(0, MAP_TYPE_HASH)
        .u32(4, key_size)
        .u32(8, value_size)
        .u32(12, max_entries)
        .u32(16, F_NO_PREALLOC)
        .bytes(28, &obj_name(name));
    fd("map create", MAP_CREATE, &mut a)
}

/// Sets `key` to `value` (any flag: create or replace).
pub fn map_update(map: &OwnedFd, key: &[u8], value: &[u8]) -> Result<(), BpfError> {
    let mut a =
        Attr::new().u32(0, map.as_raw_fd() as u32).u64(8, ptr(key.as_ptr())).u64(16, ptr(value.as_ptr()));
    sys("map update", MAP_UPDATE_ELEM, &mut a).map(drop)
}

/// Removes `key`; a key that is not there is success.
pub fn map_delete(map: &OwnedFd, key: &[u8]) -> Result<(), BpfError> {
    let mut a = Attr::new().u32(0, map.as_raw_fd() as u32).u64(8, ptr(key.as_ptr()));
    match sys("map delete", MAP_DELETE_ELEM, &mut a) {
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
        r => r.map(drop),
    }
}

/// Object names are at most 15 bytes and a NUL.
fn obj_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = name.len().min(15);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// Loads a traffic-control classifier program (`insns` as the kernel's 8-byte instructions). On
/// refusal the verifier's log is in the error.
pub fn prog_load(name: &str, insns: &[u64]) -> Result<OwnedFd, BpfError> {
    let license = c"Dual MIT/GPL";
    let mut log = vec![0u8; 64 * 1024];
    let attr = |log_level: u32, log: &mut [u8]| {
        Attr::new()
            .u32(0, PROG_TYPE_SCHED_CLS)
            .u32(4, insns.len() as u32)
            .u64(8, ptr(insns.as_ptr()))
            .u64(16, ptr(license.as_ptr()))
            .u32(24, log_level)
            .u32(28, if log_level > 0 { log.len() as u32 } else { 0 })
            .u64(32, if log_level > 0 { ptr(log.as_ptr()) } else { 0 })
            .bytes(48, &obj_name(name))
    };
    // Without a log first (cheaper); again with one when the verifier refuses, for the error.
    match fd("prog load", PROG_LOAD, &mut attr(0, &mut log)) {
        Ok(f) => Ok(f),
        Err(BpfError::Sys { source, .. }) if source.raw_os_error() == Some(libc::EACCES) => {
            let again = fd("prog load", PROG_LOAD, &mut attr(1, &mut log));
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]).into_owned();
            match again {
                Ok(f) => Ok(f),
                Err(e) => Err(BpfError::Verifier {
                    name: name.to_owned(),
                    source: match e {
                        BpfError::Sys { source, .. } | BpfError::Verifier { source, .. } => source,
                    },
                    log: text,
                }),
            }
        }
        Err(e) => Err(e),
    }
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
pub fn tcx_attach(ifindex: u32, prog: &OwnedFd, replace: Option<&OwnedFd>) -> Result<(), BpfError> {
    let mut a = Attr::new().u32(0, ifindex).u32(4, prog.as_raw_fd() as u32).u32(8, TCX_INGRESS);
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

/// An assembler for the few instructions the fast path uses, with forward labels.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<u64>,
    /// (instruction index, label) of jumps to patch.
    fixups: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

/// Registers: r0 return value, r1-r5 arguments, r6-r9 kept across calls, r10 the frame pointer.
pub type Reg = u8;

/// Operand sizes of loads and stores.
#[derive(Debug, Clone, Copy)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

fn size_bits(s: Size) -> u8 {
    match s {
        Size::W => 0x00,
        Size::H => 0x08,
        Size::B => 0x10,
        Size::DW => 0x18,
    }
}

/// Conditional jumps against an immediate (`JEQ`, `JNE`, `JLE`) or a register (`JGT`).
#[derive(Debug, Clone, Copy)]
pub enum Cond {
    Eq,
    Ne,
    Le,
    Gt,
}

/// `BPF_JMP | op | BPF_K`.
fn cond_code(cond: Cond) -> u8 {
    match cond {
        Cond::Eq => 0x15,
        Cond::Ne => 0x55,
        Cond::Le => 0xb5,
        Cond::Gt => 0x25,
    }
}

impl Asm {
    fn raw(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) {
        let w = u64::from(code)
            | (u64::from(dst & 0xf) << 8)
            | (u64::from(src & 0xf) << 12)
            | (u64::from(off as u16) << 16)
            | (u64::from(imm as u32) << 32);
        self.insns.push(w);
    }

    /// `dst = src` (64-bit).
    pub fn mov(&mut self, dst: Reg, src: Reg) {
        self.raw(0xbf, dst, src, 0, 0);
    }
    /// `dst = imm` (sign-extended to 64 bits).
    pub fn mov_imm(&mut self, dst: Reg, imm: i32) {
        self.raw(0xb7, dst, 0, 0, imm);
    }
    /// `dst += imm`.
    pub fn add_imm(&mut self, dst: Reg, imm: i32) {
        self.raw(0x07, dst, 0, 0, imm);
    }
    /// `dst = *(size *)(src + off)`.
    pub fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) {
        self.raw(0x61 | size_bits(size), dst, src, off, 0);
    }
    /// `*(size *)(dst + off) = src`.
    pub fn store(&mut self, size: Size, dst: Reg, off: i16, src: Reg) {
        self.raw(0x63 | size_bits(size), dst, src, off, 0);
    }
    /// `*(size *)(dst + off) = imm`.
    pub fn store_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) {
        self.raw(0x62 | size_bits(size), dst, 0, off, imm);
    }
    /// `dst = the map behind file descriptor fd` (a two-slot `ld_imm64`, `BPF_PSEUDO_MAP_FD`).
    pub fn load_map(&mut self, dst: Reg, map: &OwnedFd) {
        self.raw(0x18, dst, 1, 0, map.as_raw_fd());
        self.insns.push(0);
    }
    /// Jump to `label` when `dst cond imm`.
    pub fn jump_imm(&mut self, cond: Cond, dst: Reg, imm: i32, label: &'static str) {
        self.jump(cond_code(cond), dst, 0, imm, label);
    }
    /// Jump to `label` when `dst cond src` (registers: the same opcode with `BPF_X`).
    pub fn jump_reg(&mut self, cond: Cond, dst: Reg, src: Reg, label: &'static str) {
        self.jump(cond_code(cond) | 0x08, dst, src, 0, label);
    }
    fn jump(&mut self, code: u8, dst: Reg, src: Reg, imm: i32, label: &'static str) {
        self.fixups.push((self.insns.len(), label));
        self.raw(code, dst, src, 0, imm);
    }
    /// Calls kernel helper `id` (arguments in r1-r5, result in r0).
    pub fn call(&mut self, id: i32) {
        self.raw(0x85, 0, 0, 0, id);
    }
    pub fn exit(&mut self) {
        self.raw(0x95, 0, 0, 0, 0);
    }
    /// Places `label` at the next instruction.
    pub fn label(&mut self, label: &'static str) {
        self.labels.push((label, self.insns.len()));
    }

    /// The instructions with every jump resolved. Panics on a label never placed: a bug in the
    /// program's source, not in its input.
    pub fn finish(mut self) -> Vec<u64> {
        for (at, label) in std::mem::take(&mut self.fixups) {
            let target = self.labels.iter().find(|(l, _)| *l == label).map(|(_, i)| *i);
            let target = target.unwrap_or_else(|| panic!("jump to label {label:?}, never placed"));
            let off = (target as i64 - at as i64 - 1) as i16;
            self.insns[at] = (self.insns[at] & !(0xffff << 16)) | (u64::from(off as u16) << 16);
        }
        self.insns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Assembles `build` and compares each instruction's opcode, registers and offset (the
    /// encoding the kernel reads: code, dst | src << 4, little-endian offset, immediate).
    fn check(build: impl FnOnce(&mut Asm), expect: &[(u8, u8, u8, i16, i32)]) {
        let mut a = Asm::default();
        build(&mut a);
        let got: Vec<(u8, u8, u8, i16, i32)> = a
            .finish()
            .iter()
            .map(|w| {
                let b = w.to_le_bytes();
                (
                    b[0],
                    b[1] & 0xf,
                    b[1] >> 4,
                    i16::from_le_bytes([b[2], b[3]]),
                    i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                )
            })
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn jumps_resolve_to_their_labels_over_two_slot_loads() {
        let map = std::fs::File::open("/dev/null").expect("a file descriptor").into();
        check(
            |a| {
                a.jump_imm(Cond::Ne, 2, 0x45, "out");
                a.load_map(1, &map);
                a.jump_reg(Cond::Gt, 2, 8, "out");
                a.store(Size::H, 7, 22, 4);
                a.label("out");
                a.mov_imm(0, -1);
                a.exit();
            },
            &[
                (0x55, 2, 0, 4, 0x45),
                (0x18, 1, 1, 0, std::os::fd::AsRawFd::as_raw_fd(&map)),
                (0x00, 0, 0, 0, 0),
                (0x2d, 2, 8, 1, 0),
                (0x6b, 7, 4, 22, 0),
                (0xb7, 0, 0, 0, -1),
                (0x95, 0, 0, 0, 0),
            ],
        );
    }

    #[test]
    #[should_panic(expected = "never placed")]
    fn a_jump_to_a_missing_label_is_a_bug_caught_at_assembly() {
        let mut a = Asm::default();
        a.jump_imm(Cond::Eq, 0, 0, "nowhere");
        a.finish();
    }
}
