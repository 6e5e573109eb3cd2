//! `BlockIndex`: a leaf group's carved blocks by position, dense where carving went in order.
//!
//! Blocks are carved from position 0 upwards, so most positions below the highest carved one are
//! taken: a `Vec` holds that contiguous run at 4 bytes a block, and a `BTreeMap` holds the rest
//! (blocks pinned out of order by specific allocations, or carved past a blackout).

use std::collections::BTreeMap;

use crate::ids::BlockId;

#[derive(Debug, Default)]
pub(crate) struct BlockIndex {
    /// Positions 0..dense.len(), all carved.
    dense: Vec<BlockId>,
    /// Positions at or above dense.len().
    sparse: BTreeMap<u128, BlockId>,
}

impl BlockIndex {
    pub fn get(&self, pos: u128) -> Option<BlockId> {
        match usize::try_from(pos).ok().and_then(|p| self.dense.get(p)) {
            Some(id) => Some(*id),
            None => self.sparse.get(&pos).copied(),
        }
    }

    pub fn contains(&self, pos: u128) -> bool {
        self.get(pos).is_some()
    }

    pub fn insert(&mut self, pos: u128, id: BlockId) {
        debug_assert!(!self.contains(pos));
        if pos == self.dense.len() as u128 {
            self.dense.push(id);
            // Pinned blocks just above join the dense run once it reaches them.
            while let Some(next) = self.sparse.remove(&(self.dense.len() as u128)) {
                self.dense.push(next);
            }
        } else {
            self.sparse.insert(pos, id);
        }
    }

    pub fn len(&self) -> usize {
        self.dense.len() + self.sparse.len()
    }

    /// Blocks in address order.
    pub fn values(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.dense.iter().copied().chain(self.sparse.values().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_sparse() {
        let mut idx = BlockIndex::default();
        idx.insert(0, BlockId(10));
        idx.insert(2, BlockId(12));
        idx.insert(5, BlockId(15));
        assert_eq!(idx.get(2), Some(BlockId(12)));
        assert_eq!(idx.get(1), None);
        idx.insert(1, BlockId(11));
        // 0, 1, 2 are now dense; 5 stays sparse.
        assert_eq!(idx.dense.len(), 3);
        assert_eq!(
            idx.values().collect::<Vec<_>>(),
            vec![BlockId(10), BlockId(11), BlockId(12), BlockId(15)]
        );
        assert_eq!(idx.len(), 4);
        assert!(idx.contains(5) && !idx.contains(4));
        assert_eq!(idx.get(u128::MAX), None);
    }
}
