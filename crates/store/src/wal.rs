//! The embedded store's log: framed, checksummed records of changes and snapshots.
//!
//! A record is `[len: u32][crc32: u32][payload]`, little endian. Reading stops at the first record
//! that is short or fails its checksum (a write torn by a crash); everything before it was
//! acknowledged only after it was synced, so nothing acknowledged is lost.

use crate::engine::{Change, Snapshot, Write};
use crate::types::{KeyValue, Result, StoreError};

const KIND_WRITE: u8 = 1;
const KIND_LEASE_GRANT: u8 = 2;
const KIND_LEASE_REVOKE: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;
const WRITE_PUT: u8 = 1;
const WRITE_DELETE: u8 = 2;

/// CRC-32 (IEEE), table driven.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
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
    !data.iter().fold(!0u32, |c, b| TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8))
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

fn frame(payload: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(&payload).to_le_bytes());
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
            let mut writes = Vec::with_capacity(n.min(1 << 16));
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
            let mut leases = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                leases.push((d.i64()?, d.i64()?));
            }
            let n = count(&mut d)?;
            let mut kvs = Vec::with_capacity(n.min(1 << 16));
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

/// Reads records from the start of `data`; returns them and the length of the valid prefix.
pub(crate) fn read_all(data: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while data.len() - at >= 8 {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(payload) = data.get(at + 8..at + 8 + len) else { break };
        if crc32(payload) != crc {
            break;
        }
        match decode(payload) {
            Ok(r) => records.push(r),
            Err(_) => break,
        }
        at += 8 + len;
    }
    (records, at)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn crc_known_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn round_trip_and_torn_tail() {
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
        let mut log = encode_change(&a);
        log.extend(encode_change(&b));
        log.extend(encode_snapshot(&s));
        let full = log.len();
        let (records, valid) = read_all(&log);
        assert_eq!(valid, full);
        assert_eq!(records, vec![Record::Change(a.clone()), Record::Change(b), Record::Snapshot(s)]);
        // Every truncation point keeps exactly the whole records before it.
        for cut in 0..full {
            let (r, v) = read_all(&log[..cut]);
            assert!(v <= cut && r.len() <= 3);
        }
        // A flipped bit stops reading at that record.
        log[10] ^= 1;
        assert_eq!(read_all(&log).0.len(), 0);
    }
}
