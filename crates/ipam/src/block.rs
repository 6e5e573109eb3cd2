//! Blocks: runs of addresses owned by one (tenant, segment) on one host, with one slot per endpoint.
//!
//! The same structure serves both layouts: a topology block (slot i = address first + i) and a
//! classic (host, tenant, segment) range (slot i = address first + 3 + i * 2^space). Block headers
//! and their slots live in two append-only tables (`BlockTable`); blocks are never deleted, only
//! emptied and reused.

use romana_model::Cidr;

use crate::chunked::ChunkedVec;
use crate::ids::{BlockId, EntryId, Owner};

/// Slot value of a free address.
pub(crate) const FREE: EntryId = EntryId(u32::MAX);

/// Slots per slot chunk: the largest block (2^16 addresses) fills one exactly.
const SLOT_CHUNK: usize = 1 << 16;

#[derive(Debug)]
pub(crate) struct Block {
    // 64 bytes: a million addresses in /29 blocks need 125,000 of these.
    /// The block's prefix (classic layout: the tenant/segment prefix on the host).
    pub cidr: Cidr,
    /// Bumped on every change, for watchers that filter by revision.
    pub revision: u32,
    /// Private: set through `BlockTable::set_owner`, which counts the changes route sets
    /// depend on.
    owner: Option<Owner>,
    /// Leaf group (topology layout) the block was carved from; unused for classic blocks.
    pub group: u32,
    pub used: u32,
    /// No free slot lies below this one.
    hint: u32,
    slot_chunk: u32,
    slot_start: u32,
    capacity: u32,
    /// Index of the network the block lives in.
    pub net: u16,
    first_offset: u8,
    stride_log2: u8,
}

impl Block {
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The (tenant, segment) on a host that holds the block (`None`: free to take).
    pub fn owner(&self) -> Option<Owner> {
        self.owner
    }

    pub fn is_full(&self) -> bool {
        self.used == self.capacity
    }

    /// Integer address of `slot`.
    pub fn value_of(&self, slot: u32) -> u128 {
        self.cidr.first() + u128::from(self.first_offset) + (u128::from(slot) << self.stride_log2)
    }

    /// The slot whose address is exactly `value`, if any.
    pub fn slot_of(&self, value: u128) -> Option<u32> {
        if !self.cidr.contains_value(self.cidr.family(), value) {
            return None;
        }
        let off = (value - self.cidr.first()).checked_sub(u128::from(self.first_offset))?;
        if off & ((1u128 << self.stride_log2) - 1) != 0 {
            return None;
        }
        let slot = off >> self.stride_log2;
        (slot < u128::from(self.capacity)).then_some(slot as u32)
    }

    /// The endpoint's own prefix: /width, or shorter when each endpoint gets 2^space addresses.
    pub fn endpoint_prefix_len(&self) -> u8 {
        self.cidr.family().width() - self.stride_log2
    }
}

#[derive(Debug, Default)]
pub(crate) struct BlockTable {
    blocks: ChunkedVec<Block>,
    slots: Vec<Vec<EntryId>>,
    /// +1 whenever a block's owner changes (taken, given back): with the topology's revision,
    /// what moves when a host's route set may (`Ipam::routes_revision`).
    pub owner_changes: u64,
}

impl BlockTable {
    pub fn ids(&self) -> impl Iterator<Item = BlockId> + use<> {
        (0..self.blocks.len() as u32).map(BlockId)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Block> {
        self.blocks.iter()
    }

    /// Gives block `id` to `owner` (`None`: gives it back), counting the change.
    pub fn set_owner(&mut self, id: BlockId, owner: Option<Owner>) {
        let b = &mut self.blocks[id.0 as usize];
        if b.owner != owner {
            b.owner = owner;
            self.owner_changes += 1;
        }
    }

    /// A topology block covering all of `cidr` (at most 2^16 addresses, validated upstream).
    pub fn push_topology(&mut self, cidr: Cidr, net: u16, group: u32) -> BlockId {
        self.push(cidr, net, group, 0, 0, cidr.size() as usize)
    }

    pub fn push_classic(&mut self, cidr: Cidr, net: u16, stride_log2: u8, slots: usize) -> BlockId {
        self.push(cidr, net, u32::MAX, 3, stride_log2, slots)
    }

    fn push(
        &mut self,
        cidr: Cidr,
        net: u16,
        group: u32,
        first_offset: u8,
        stride_log2: u8,
        n: usize,
    ) -> BlockId {
        if self.slots.last().is_none_or(|c| c.len() + n > SLOT_CHUNK) {
            self.slots.push(Vec::with_capacity(SLOT_CHUNK));
        }
        let chunk = self.slots.len() - 1;
        let start = self.slots[chunk].len();
        self.slots[chunk].resize(start + n, FREE);
        let block = Block {
            cidr,
            revision: 0,
            owner: None,
            group,
            used: 0,
            hint: 0,
            slot_chunk: chunk as u32,
            slot_start: start as u32,
            capacity: n as u32,
            net,
            first_offset,
            stride_log2,
        };
        BlockId(self.blocks.push(block) as u32)
    }

    fn slots(&self, b: &Block) -> &[EntryId] {
        let s = b.slot_start as usize;
        &self.slots[b.slot_chunk as usize][s..s + b.capacity as usize]
    }

    pub fn entry(&self, id: BlockId, slot: u32) -> EntryId {
        let b = &self[id];
        self.slots[b.slot_chunk as usize][(b.slot_start + slot) as usize]
    }

    /// The lowest free slot whose address `blocked` does not refuse.
    pub fn lowest_free(&self, id: BlockId, blocked: impl Fn(u128) -> bool) -> Option<u32> {
        let b = &self[id];
        if b.is_full() {
            return None;
        }
        let slots = self.slots(b);
        (b.hint..b.capacity).find(|&s| slots[s as usize] == FREE && !blocked(b.value_of(s)))
    }

    pub fn occupy(&mut self, id: BlockId, slot: u32, entry: EntryId) {
        let b = &mut self.blocks[id.0 as usize];
        let slots = &mut self.slots[b.slot_chunk as usize]
            [b.slot_start as usize..(b.slot_start + b.capacity) as usize];
        debug_assert_eq!(slots[slot as usize], FREE);
        slots[slot as usize] = entry;
        b.used += 1;
        b.revision = b.revision.wrapping_add(1);
        if slot == b.hint {
            b.hint = (slot + 1..b.capacity).find(|&s| slots[s as usize] == FREE).unwrap_or(b.capacity);
        }
    }

    /// Frees `slot`, returning the entry that held it.
    pub fn vacate(&mut self, id: BlockId, slot: u32) -> Option<EntryId> {
        let b = &mut self.blocks[id.0 as usize];
        let at = (b.slot_start + slot) as usize;
        let entry = std::mem::replace(&mut self.slots[b.slot_chunk as usize][at], FREE);
        if entry == FREE {
            return None;
        }
        b.used -= 1;
        b.revision = b.revision.wrapping_add(1);
        b.hint = b.hint.min(slot);
        Some(entry)
    }

    /// Occupied slots of a block, lowest first.
    pub fn occupied(&self, id: BlockId) -> impl Iterator<Item = (u32, EntryId)> + '_ {
        self.slots(&self[id]).iter().enumerate().filter(|(_, e)| **e != FREE).map(|(s, e)| (s as u32, *e))
    }

    pub fn heap_bytes(&self) -> usize {
        self.blocks.heap_bytes()
            + self.slots.iter().map(|c| c.capacity() * std::mem::size_of::<EntryId>()).sum::<usize>()
    }
}

impl std::ops::Index<BlockId> for BlockTable {
    type Output = Block;
    fn index(&self, id: BlockId) -> &Block {
        &self.blocks[id.0 as usize]
    }
}

impl std::ops::IndexMut<BlockId> for BlockTable {
    fn index_mut(&mut self, id: BlockId) -> &mut Block {
        &mut self.blocks[id.0 as usize]
    }
}

impl std::ops::Index<&BlockId> for BlockTable {
    type Output = Block;
    fn index(&self, id: &BlockId) -> &Block {
        &self[*id]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn block_header_is_64_bytes() {
        assert_eq!(std::mem::size_of::<super::Block>(), 64);
    }
}
