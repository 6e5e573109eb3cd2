//! The embedded store's log format: framed, checksummed records of changes and snapshots, and the
//! scan that tells a torn final write (droppable: never acknowledged) from damage (refused).
//! Pure: bytes in, records and a verdict out; knows nothing about files.
//!
//! Format 2 (written now): the file starts with `RMNLOG` and the version (u16), then records
//! `[marker: u32][len: u32][crc32(len ++ payload): u32][payload]`, little endian. The marker lets
//! the scan find intact records after damage; the checksum covers the length field too.
//! Format 1 (read, upgraded on open): no file header, records `[len][crc32(payload)][payload]`.
//!
//! Everything before the last write was acknowledged only after it was synced, so the only bytes
//! a crash may leave bad are at the very end. The scan therefore drops only an incomplete final
//! record (header cut short, length past the end of the file, or zeros to the end) with nothing
//! intact after it; anything else that fails is damage and is reported, never skipped.

use crate::engine::{Change, Snapshot, Write};
use crate::types::{KeyValue, Result, StoreError};

const KIND_WRITE: u8 = 1;
const KIND_LEASE_GRANT: u8 = 2;
const KIND_LEASE_REVOKE: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;
const WRITE_PUT: u8 = 1;
const WRITE_DELETE: u8 = 2;

/// The start of a format-2 file; the version follows as a little-endian u16.
const FILE_MAGIC: &[u8; 6] = b"RMNLOG";
/// The format written now.
pub(crate) const VERSION: u16 = 2;
/// The format-2 file header.
pub(crate) fn file_header() -> Vec<u8> {
    let mut h = FILE_MAGIC.to_vec();
    h.extend_from_slice(&VERSION.to_le_bytes());
    h
}
/// Precedes every format-2 record ("RMNR" read as little-endian bytes).
const FRAME_MAGIC: [u8; 4] = *b"RMNR";

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32 (IEEE), table driven.
fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, b| CRC_TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8))
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    Change(Change),
    Snapshot(Snapshot),
}

struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
    }
}

struct Dec<'a>(&'a [u8]);

impl Dec<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            return Err(StoreError::Corrupt("record ends early".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Result<Vec<u8>> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?).map_err(|_| StoreError::Corrupt("key is not UTF-8".into()))
    }
}

/// The checksum of a format-2 record: its length field, then its payload.
fn crc_v2(len: u32, payload: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in len.to_le_bytes().iter().chain(payload) {
        c = CRC_TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

fn frame(payload: Vec<u8>) -> Vec<u8> {
    let len =
        u32::try_from(payload.len()).expect("a record is far below 4 GiB (the whole store is in memory)");
    let mut out = Vec::with_capacity(payload.len() + 12);
    out.extend_from_slice(&FRAME_MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc_v2(len, &payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

pub(crate) fn encode_change(c: &Change) -> Vec<u8> {
    let mut e = Enc(Vec::new());
    match c {
        Change::Write { revision, writes } => {
            e.u8(KIND_WRITE);
            e.i64(*revision);
            e.i64(writes.len() as i64);
            for w in writes {
                match w {
                    Write::Put { key, value, lease } => {
                        e.u8(WRITE_PUT);
                        e.bytes(key.as_bytes());
                        e.bytes(value);
                        e.i64(*lease);
                    }
                    Write::Delete { key } => {
                        e.u8(WRITE_DELETE);
                        e.bytes(key.as_bytes());
                    }
                }
            }
        }
        Change::LeaseGrant { id, ttl } => {
            e.u8(KIND_LEASE_GRANT);
            e.i64(*id);
            e.i64(*ttl);
        }
        Change::LeaseRevoke { id, revision } => {
            e.u8(KIND_LEASE_REVOKE);
            e.i64(*id);
            e.i64(*revision);
        }
    }
    frame(e.0)
}

pub(crate) fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let mut e = Enc(Vec::new());
    e.u8(KIND_SNAPSHOT);
    e.i64(s.revision);
    e.i64(s.next_lease);
    e.i64(s.leases.len() as i64);
    for (id, ttl) in &s.leases {
        e.i64(*id);
        e.i64(*ttl);
    }
    e.i64(s.kvs.len() as i64);
    for kv in &s.kvs {
        e.bytes(kv.key.as_bytes());
        e.bytes(&kv.value);
        e.i64(kv.create_revision);
        e.i64(kv.mod_revision);
        e.i64(kv.version);
        e.i64(kv.lease);
    }
    frame(e.0)
}

fn decode(payload: &[u8]) -> Result<Record> {
    let mut d = Dec(payload);
    let count = |d: &mut Dec| -> Result<usize> {
        usize::try_from(d.i64()?).map_err(|_| StoreError::Corrupt("negative count".into()))
    };
    Ok(match d.u8()? {
        KIND_WRITE => {
            let revision = d.i64()?;
            let n = count(&mut d)?;
            let mut writes = Vec::with_capacity(n.min(d.0.len()));
            for _ in 0..n {
                writes.push(match d.u8()? {
                    WRITE_PUT => Write::Put { key: d.string()?, value: d.bytes()?, lease: d.i64()? },
                    WRITE_DELETE => Write::Delete { key: d.string()? },
                    k => return Err(StoreError::Corrupt(format!("unknown write kind {k}"))),
                });
            }
            Record::Change(Change::Write { revision, writes })
        }
        KIND_LEASE_GRANT => Record::Change(Change::LeaseGrant { id: d.i64()?, ttl: d.i64()? }),
        KIND_LEASE_REVOKE => Record::Change(Change::LeaseRevoke { id: d.i64()?, revision: d.i64()? }),
        KIND_SNAPSHOT => {
            let revision = d.i64()?;
            let next_lease = d.i64()?;
            let n = count(&mut d)?;
            let mut leases = Vec::with_capacity(n.min(d.0.len()));
            for _ in 0..n {
                leases.push((d.i64()?, d.i64()?));
            }
            let n = count(&mut d)?;
            let mut kvs = Vec::with_capacity(n.min(d.0.len()));
            for _ in 0..n {
                kvs.push(KeyValue {
                    key: d.string()?,
                    value: d.bytes()?,
                    create_revision: d.i64()?,
                    mod_revision: d.i64()?,
                    version: d.i64()?,
                    lease: d.i64()?,
                });
            }
            Record::Snapshot(Snapshot { revision, next_lease, leases, kvs })
        }
        k => return Err(StoreError::Corrupt(format!("unknown record kind {k}"))),
    })
}

/// How a log ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// Every byte belongs to an intact record.
    Clean,
    /// An incomplete final write from a crash (never acknowledged): safe to cut at `offset`.
    Torn { offset: usize, bytes: usize, what: String },
    /// Damage that a crash cannot explain: the start must stop. `intact_after` counts intact
    /// records found after it (they show the damage is not at the end).
    Damaged { offset: usize, what: String, intact_after: usize },
}

/// What a log holds: its format, the records of its intact prefix, where that prefix ends, and
/// how the rest looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    pub version: u16,
    pub records: Vec<Record>,
    /// Length of the intact prefix (file header and whole records).
    pub valid: usize,
    pub end: End,
}

/// One attempt to read a record at an offset.
enum Frame<'a> {
    Whole {
        payload: &'a [u8],
        end: usize,
    },
    /// Fewer bytes left than a record header.
    Short,
    /// No record marker (format 2).
    NoMarker,
    /// The length field points past the end of the file.
    PastEnd {
        len: usize,
    },
    BadChecksum {
        len: usize,
    },
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"))
}

fn frame_at(data: &[u8], at: usize, version: u16) -> Frame<'_> {
    let rest = &data[at..];
    let (header, len_at) = if version == 1 { (8, 0) } else { (12, 4) };
    if rest.len() < header {
        return Frame::Short;
    }
    if version != 1 && rest[..4] != FRAME_MAGIC {
        return Frame::NoMarker;
    }
    let len = u32_at(rest, len_at) as usize;
    let Some(payload) = rest.get(header..header + len) else { return Frame::PastEnd { len } };
    if !checks(rest, payload, version) {
        return Frame::BadChecksum { len };
    }
    Frame::Whole { payload, end: at + header + len }
}

/// Whether `payload` matches the checksum in the record header at the start of `rest`.
fn checks(rest: &[u8], payload: &[u8], version: u16) -> bool {
    if version == 1 {
        crc32(payload) == u32_at(rest, 4)
    } else {
        crc_v2(payload.len() as u32, payload) == u32_at(rest, 8)
    }
}

/// For a record whose length runs past the end: whether the checksum matches when the record is
/// taken to run exactly to the end of the file (then the record is whole and its length field
/// damaged).
fn fits_rest(data: &[u8], at: usize, version: u16) -> bool {
    let rest = &data[at..];
    let header = if version == 1 { 8 } else { 12 };
    rest.len() >= header && checks(rest, &rest[header..], version)
}

/// The end of an intact record (whole, readable, checksummed) starting exactly at `at`. Runs at
/// many offsets after damage, so the cheap tests come first and nothing is summed in vain.
fn intact_at(data: &[u8], at: usize, version: u16) -> Option<usize> {
    let rest = &data[at..];
    let (header, len_at) = if version == 1 { (8, 0) } else { (12, 4) };
    if rest.len() < header || (version != 1 && rest[..4] != FRAME_MAGIC) {
        return None;
    }
    let len = u32_at(rest, len_at) as usize;
    let payload = rest.get(header..header + len)?;
    if !(KIND_WRITE..=KIND_SNAPSHOT).contains(payload.first()?) || decode(payload).is_err() {
        return None;
    }
    checks(rest, payload, version).then_some(at + header + len)
}

/// Intact records (whole, checksummed and readable) that start after `from`.
fn intact_after(data: &[u8], from: usize, version: u16) -> usize {
    let mut count = 0;
    let mut at = from;
    while at < data.len() {
        if version != 1 {
            // Only a record marker can start a record: jump to the next one.
            match data[at..].windows(4).position(|w| w == FRAME_MAGIC) {
                Some(p) => at += p,
                None => break,
            }
        }
        match intact_at(data, at, version) {
            Some(end) => {
                count += 1;
                at = end;
            }
            None => at += 1,
        }
    }
    count
}

/// Reads a whole log: its records, and whether what follows the intact prefix is a torn final
/// write or damage. Fails only for a format this build does not know.
pub(crate) fn scan(data: &[u8]) -> Result<Scan> {
    let (version, mut at) = if data.is_empty() {
        (VERSION, 0)
    } else if data.len() >= 8 && data.starts_with(FILE_MAGIC) {
        (u16::from_le_bytes([data[6], data[7]]), 8)
    } else if !data.is_empty() && data.len() < 8 && file_header().starts_with(data) {
        // The file was created and the crash came before its header was whole.
        let end = End::Torn { offset: 0, bytes: data.len(), what: "file header cut short".into() };
        return Ok(Scan { version: VERSION, records: Vec::new(), valid: 0, end });
    } else {
        (1, 0)
    };
    if version != 1 && version != VERSION {
        return Err(StoreError::Corrupt(format!(
            "log format {version} is unknown to this romanad (it reads 1 and {VERSION}); a newer release wrote it"
        )));
    }
    let mut records = Vec::new();
    let end = loop {
        if at == data.len() {
            break End::Clean;
        }
        let bad = match frame_at(data, at, version) {
            Frame::Whole { payload, end } => match decode(payload) {
                Ok(r) => {
                    records.push(r);
                    at = end;
                    continue;
                }
                Err(e) => format!(
                    "a record of {} bytes passes its checksum but cannot be read ({e})",
                    payload.len()
                ),
            },
            Frame::Short => format!("a record header cut short ({} bytes left)", data.len() - at),
            Frame::NoMarker => "no record marker where a record should start".into(),
            Frame::PastEnd { len } if fits_rest(data, at, version) => format!(
                "the length field says {len} bytes but the checksum matches the {} bytes that follow: the length field is damaged",
                data.len() - at - if version == 1 { 8 } else { 12 }
            ),
            Frame::PastEnd { len } => {
                format!("a record of {len} bytes runs past the end of the file ({} bytes)", data.len())
            }
            Frame::BadChecksum { len } => format!("a record of {len} bytes fails its checksum"),
        };
        let rest = &data[at..];
        if rest.iter().all(|b| *b == 0) {
            // The file grew but the write never landed (some file systems show zeros then).
            break End::Torn { offset: at, bytes: rest.len(), what: "zeros to the end of the file".into() };
        }
        let after = intact_after(data, at + 1, version);
        let torn = matches!(frame_at(data, at, version), Frame::Short | Frame::PastEnd { .. })
            && !fits_rest(data, at, version);
        break if torn && after == 0 {
            End::Torn { offset: at, bytes: rest.len(), what: bad }
        } else {
            End::Damaged { offset: at, what: bad, intact_after: after }
        };
    };
    Ok(Scan { version, records, valid: at, end })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn crc_known_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    fn sample() -> (Vec<Record>, Vec<u8>) {
        let a = Change::Write {
            revision: 7,
            writes: vec![
                Write::Put { key: "/a".into(), value: b"x".to_vec(), lease: 3 },
                Write::Delete { key: "/b".into() },
            ],
        };
        let b = Change::LeaseGrant { id: 3, ttl: 10 };
        let s = Snapshot {
            revision: 9,
            next_lease: 4,
            leases: vec![(3, 10)],
            kvs: vec![KeyValue {
                key: "/a".into(),
                value: vec![1],
                create_revision: 7,
                mod_revision: 7,
                version: 1,
                lease: 3,
            }],
        };
        let mut log = file_header();
        log.extend(encode_change(&a));
        log.extend(encode_change(&b));
        log.extend(encode_snapshot(&s));
        (vec![Record::Change(a), Record::Change(b), Record::Snapshot(s)], log)
    }

    #[test]
    fn round_trip() {
        let (records, log) = sample();
        let s = scan(&log).unwrap();
        assert_eq!((s.version, s.valid, s.end, s.records), (VERSION, log.len(), End::Clean, records));
    }

    #[test]
    fn every_cut_is_a_torn_tail_keeping_the_whole_records_before_it() {
        let (records, log) = sample();
        let ends: Vec<usize> = {
            let mut at = 8;
            let mut v = vec![at];
            while at < log.len() {
                let Frame::Whole { end, .. } = frame_at(&log, at, VERSION) else { panic!("whole") };
                v.push(end);
                at = end;
            }
            v
        };
        for cut in 0..log.len() {
            let s = scan(&log[..cut]).unwrap();
            let whole = ends.iter().filter(|e| **e <= cut).count().saturating_sub(1);
            assert_eq!(s.records, records[..whole].to_vec(), "cut at {cut}");
            let clean = cut == 0 || ends.contains(&cut);
            assert_eq!(matches!(s.end, End::Clean), clean, "cut at {cut}: {:?}", s.end);
            assert!(!matches!(s.end, End::Damaged { .. }), "cut at {cut}: {:?}", s.end);
        }
    }

    #[test]
    fn format_1_still_reads() {
        let (records, _) = sample();
        let mut log = Vec::new();
        for r in &records {
            // Format 1: [len][crc32(payload)][payload], no file header.
            let framed = match r {
                Record::Change(c) => encode_change(c),
                Record::Snapshot(s) => encode_snapshot(s),
            };
            let payload = &framed[12..];
            log.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            log.extend_from_slice(&crc32(payload).to_le_bytes());
            log.extend_from_slice(payload);
        }
        let s = scan(&log).unwrap();
        assert_eq!((s.version, s.valid, s.end, s.records), (1, log.len(), End::Clean, records));
        // The bug of issue 14: zeros in the middle were taken for a torn tail.
        let mut zeroed = log.clone();
        zeroed[20..40].fill(0);
        let s = scan(&zeroed).unwrap();
        assert!(matches!(s.end, End::Damaged { offset: 0, intact_after: 2, .. }), "{:?}", s.end);
    }

    #[test]
    fn zeros_in_the_middle_of_a_large_format_1_log_are_found_with_everything_after_them() {
        // The shape of the finding: 13.5 MB, zeros at the half. Here 30,000 records (2.2 MB).
        let mut log = Vec::new();
        let mut starts = Vec::new();
        for i in 0..30_000i64 {
            let c = Change::Write {
                revision: i + 1,
                writes: vec![Write::Put {
                    key: format!("/romana/ipam/addr/{i:06}"),
                    value: vec![7; 24],
                    lease: 0,
                }],
            };
            let framed = encode_change(&c);
            let payload = &framed[12..];
            starts.push(log.len());
            log.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            log.extend_from_slice(&crc32(payload).to_le_bytes());
            log.extend_from_slice(payload);
        }
        let mid = starts[15_000] + 5;
        log[mid..mid + 64].fill(0);
        let s = scan(&log).unwrap();
        assert_eq!(s.records.len(), 15_000);
        assert_eq!(
            s.end,
            End::Damaged {
                offset: starts[15_000],
                what: format!("a record of {} bytes fails its checksum", starts[1] - 8),
                intact_after: 30_000 - 15_000 - 1,
            }
        );
    }

    #[test]
    fn an_unknown_format_is_refused() {
        let mut log = b"RMNLOG".to_vec();
        log.extend_from_slice(&9u16.to_le_bytes());
        let e = scan(&log).unwrap_err().to_string();
        assert!(e.contains("log format 9 is unknown"), "{e}");
    }
}
