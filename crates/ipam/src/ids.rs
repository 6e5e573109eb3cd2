//! Small copyable ids that index the IPAM's tables; they never leave the crate.

/// Index of a host in the host table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct HostId(pub u32);

/// Index of an interned (tenant, segment) pair. Stored as index + 1 so that `Option<Owner>` fits in
/// 8 bytes, which keeps a block header at 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct OwnerId(std::num::NonZeroU32);

impl OwnerId {
    pub fn from_index(i: usize) -> OwnerId {
        OwnerId(std::num::NonZeroU32::new(i as u32 + 1).expect("fewer than 2^32 - 1 owners"))
    }

    pub fn index(self) -> usize {
        self.0.get() as usize - 1
    }
}

/// Index of a block in the block table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct BlockId(pub u32);

/// Index of an address name entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct EntryId(pub u32);

/// Who a block belongs to: a (tenant, segment) on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Owner {
    pub owner: OwnerId,
    pub host: HostId,
}
