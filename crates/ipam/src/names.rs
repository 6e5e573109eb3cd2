//! `NameIndex`: address name -> (block, slot), compact enough for millions of addresses.
//!
//! Names live back to back in a chunked byte arena; a table of 12-byte entries points into it, and a
//! hash table of entry ids finds them by content. Released names leave garbage in the arena that
//! is compacted once it outweighs the live names.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::chunked::ChunkedVec;
use crate::ids::{BlockId, EntryId};

/// 12 bytes: where the name's text is and which (block, slot) holds its address.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Arena chunk in the high 16 bits, offset in the low 16.
    start: u32,
    /// `u16::MAX` marks a free entry, whose `block` then links the free list.
    len: u16,
    slot: u16,
    block: u32,
}

const FREE_LEN: u16 = u16::MAX;
const NO_FREE: u32 = u32::MAX;
const ARENA_CHUNK: usize = 1 << 16;

#[derive(Debug, Default)]
struct Arena {
    chunks: Vec<Vec<u8>>,
}

impl Arena {
    fn text(&self, e: &Entry) -> &[u8] {
        let off = (e.start & 0xffff) as usize;
        &self.chunks[(e.start >> 16) as usize][off..off + e.len as usize]
    }

    fn push(&mut self, bytes: &[u8]) -> u32 {
        if self.chunks.last().is_none_or(|c| c.len() + bytes.len() > ARENA_CHUNK) {
            assert!(self.chunks.len() < 1 << 16, "address names exceed 4 GiB");
            self.chunks.push(Vec::with_capacity(ARENA_CHUNK));
        }
        let chunk = self.chunks.len() - 1;
        let off = self.chunks[chunk].len();
        self.chunks[chunk].extend_from_slice(bytes);
        ((chunk as u32) << 16) | off as u32
    }

    fn bytes(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }
}

#[derive(Debug, Default)]
pub(crate) struct NameIndex {
    arena: Arena,
    garbage: usize,
    entries: ChunkedVec<Entry>,
    free_head: Option<u32>,
    live: usize,
    table: HashTable<EntryId>,
    // Randomly seeded; the seed spreads keys and reaches no output.
    hasher: DefaultHashBuilder,
}

impl NameIndex {
    pub fn len(&self) -> usize {
        self.live
    }

    fn entry(&self, id: EntryId) -> &Entry {
        &self.entries[id.0 as usize]
    }

    pub fn get(&self, name: &str) -> Option<(EntryId, BlockId, u32)> {
        self.get_hashed(self.hash(name), name)
    }

    /// The hash of `name`, so that a lookup followed by an insert hashes once.
    pub fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name.as_bytes())
    }

    pub fn get_hashed(&self, hash: u64, name: &str) -> Option<(EntryId, BlockId, u32)> {
        let (arena, entries) = (&self.arena, &self.entries);
        let id = *self.table.find(hash, |id| arena.text(&entries[id.0 as usize]) == name.as_bytes())?;
        let e = self.entry(id);
        Some((id, BlockId(e.block), u32::from(e.slot)))
    }

    pub fn name(&self, id: EntryId) -> &str {
        // Only `&str` ever goes in, so the bytes are UTF-8.
        std::str::from_utf8(self.arena.text(self.entry(id))).expect("arena holds only UTF-8 names")
    }

    /// Adds a name (at most 512 bytes, as `AddressName` guarantees) that the caller checked is absent.
    pub fn insert_hashed(&mut self, hash: u64, name: &str, block: BlockId, slot: u32) -> EntryId {
        debug_assert!(self.get(name).is_none());
        let start = self.arena.push(name.as_bytes());
        let entry = Entry { start, len: name.len() as u16, slot: slot as u16, block: block.0 };
        let id = match self.free_head {
            Some(id) => {
                let next = self.entries[id as usize].block;
                self.free_head = (next != NO_FREE).then_some(next);
                self.entries[id as usize] = entry;
                EntryId(id)
            }
            None => EntryId(self.entries.push(entry) as u32),
        };
        let (arena, entries, hasher) = (&self.arena, &self.entries, &self.hasher);
        self.table.insert_unique(hash, id, |id| hasher.hash_one(arena.text(&entries[id.0 as usize])));
        self.live += 1;
        id
    }

    /// Removes `name`, returning where its address was: one probe for lookup and removal.
    pub fn take(&mut self, name: &str) -> Option<(BlockId, u32)> {
        let hash = self.hash(name);
        let (arena, entries) = (&self.arena, &self.entries);
        let found =
            self.table.find_entry(hash, |id| arena.text(&entries[id.0 as usize]) == name.as_bytes()).ok()?;
        let (id, _) = found.remove();
        let e = *self.entry(id);
        self.free(id, e);
        Some((BlockId(e.block), u32::from(e.slot)))
    }

    pub fn remove(&mut self, id: EntryId) {
        let e = *self.entry(id);
        debug_assert_ne!(e.len, FREE_LEN);
        let hash = self.hasher.hash_one(self.arena.text(&e));
        if let Ok(found) = self.table.find_entry(hash, |x| *x == id) {
            found.remove();
        }
        self.free(id, e);
    }

    fn free(&mut self, id: EntryId, e: Entry) {
        self.garbage += e.len as usize;
        self.entries[id.0 as usize] =
            Entry { start: 0, len: FREE_LEN, slot: 0, block: self.free_head.unwrap_or(NO_FREE) };
        self.free_head = Some(id.0);
        self.live -= 1;
        if self.garbage > ARENA_CHUNK * 4 && self.garbage * 2 > self.arena.bytes() {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let mut arena = Arena::default();
        for e in self.entries.iter_mut().filter(|e| e.len != FREE_LEN) {
            e.start = arena.push(self.arena.text(e));
        }
        self.arena = arena;
        self.garbage = 0;
    }

    /// Bytes held on the heap, for the memory budget.
    pub fn heap_bytes(&self) -> usize {
        self.arena.chunks.len() * ARENA_CHUNK
            + self.entries.heap_bytes()
            + self.table.capacity() * (std::mem::size_of::<EntryId>() + 1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove_compact() {
        let mut idx = NameIndex::default();
        let ids: Vec<_> = (0..100_000)
            .map(|i| {
                let n = format!("pod-{i}");
                idx.insert_hashed(idx.hash(&n), &n, BlockId(i), i % 8)
            })
            .collect();
        assert_eq!(idx.get("pod-77"), Some((ids[77], BlockId(77), 77 % 8)));
        let long = "x".repeat(512);
        let l = idx.insert_hashed(idx.hash(&long), &long, BlockId(1), 65_535);
        assert_eq!(idx.get(&long), Some((l, BlockId(1), 65_535)));
        for id in &ids[..90_000] {
            idx.remove(*id);
        }
        assert_eq!(idx.len(), 10_001);
        assert!(idx.get("pod-5").is_none());
        assert_eq!(idx.get("pod-95000").map(|x| x.1), Some(BlockId(95_000)));
        assert_eq!(idx.name(ids[99_999]), "pod-99999");
        // Freed entries are reused.
        let again = idx.insert_hashed(idx.hash("pod-5"), "pod-5", BlockId(1), 1);
        assert!(again.0 < 90_000);
        assert_eq!(idx.get("pod-5").map(|x| x.0), Some(again));
    }
}
