//! The classic layer-3 tenancy layout (Romana 0.6/1.x): host, tenant and segment encoded in address bits.
//!
//! `prefix | host | tenant | segment | endpoint (+ space)`. With 10.0.0.0/8 and 8/4/4/8 bits,
//! host 1 owns 10.1.0.0/16 (gateway 10.1.0.1), and tenant 2 / segment 2 there is 10.1.34.0/24
//! whose first endpoint is 10.1.34.3. Numbers are bounded by their bits and never reused.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::net::IpAddr;

use romana_model::{Cidr, NetworkName, SegmentName, TenantName};

use crate::error::IpamError;
use crate::ids::{BlockId, HostId};
use crate::spec::ClassicBits;

#[derive(Debug, Default)]
pub(crate) struct ClassicNet {
    pub bits: ClassicBits,
    pub hosts: BTreeMap<u32, HostId>,
    pub tenants: BTreeMap<TenantName, u32>,
    next_tenant: u32,
    pub segments: BTreeMap<(TenantName, SegmentName), u32>,
    next_segment: BTreeMap<TenantName, u32>,
    pub blocks: HashMap<(u32, u32, u32), BlockId>,
}

impl Default for ClassicBits {
    fn default() -> Self {
        ClassicBits {
            host_bits: 8,
            tenant_bits: 4,
            segment_bits: 4,
            endpoint_bits: 8,
            endpoint_space_bits: 0,
        }
    }
}

/// An address decoded back into the classic fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassicAddress {
    pub host: u32,
    pub tenant: u32,
    pub segment: u32,
    /// The endpoint's sequence number, when the address is an endpoint address (3 + 2^space * seq).
    pub seq: Option<u32>,
}

fn limit(bits: u8) -> u64 {
    1u64 << bits
}

impl ClassicNet {
    pub fn new(bits: ClassicBits) -> ClassicNet {
        ClassicNet { bits, ..ClassicNet::default() }
    }

    pub fn free_host_index(&self) -> Option<u32> {
        (0..limit(self.bits.host_bits)).map(|k| k as u32).find(|k| !self.hosts.contains_key(k))
    }

    pub fn host_cidr(&self, net: Cidr, host: u32) -> Cidr {
        net.subnet(u128::from(host), net.prefix_len() + self.bits.host_bits)
            .expect("host index below 2^host_bits")
    }

    /// The host's gateway: the first host address of its prefix (10.H.0.1).
    pub fn gateway(&self, net: Cidr, host: u32) -> IpAddr {
        let c = self.host_cidr(net, host);
        c.family().addr(c.first() + 1)
    }

    pub fn segment_cidr(&self, net: Cidr, host: u32, tenant: u32, segment: u32) -> Cidr {
        let b = &self.bits;
        let index = (u128::from(host) << (b.tenant_bits + b.segment_bits))
            | (u128::from(tenant) << b.segment_bits)
            | u128::from(segment);
        net.subnet(index, net.prefix_len() + b.host_bits + b.tenant_bits + b.segment_bits)
            .expect("numbers are checked against their bits")
    }

    /// Endpoints per (host, tenant, segment): sequence numbers 0.. with 3 + 2^space * seq inside the range.
    pub fn slots(&self) -> usize {
        let span = 1usize << (self.bits.endpoint_bits + self.bits.endpoint_space_bits);
        (span - 4) / (1usize << self.bits.endpoint_space_bits) + 1
    }

    pub fn decode(&self, net: Cidr, value: u128) -> Option<ClassicAddress> {
        if !net.contains_value(net.family(), value) {
            return None;
        }
        let b = &self.bits;
        let off = value - net.first();
        let ep_bits = b.endpoint_bits + b.endpoint_space_bits;
        let field = |shift: u8, bits: u8| ((off >> shift) & ((1u128 << bits) - 1)) as u32;
        let endpoint = field(0, ep_bits);
        let seq = endpoint
            .checked_sub(3)
            .filter(|e| e % (1 << b.endpoint_space_bits) == 0)
            .map(|e| e >> b.endpoint_space_bits)
            .filter(|s| (*s as usize) < self.slots());
        Some(ClassicAddress {
            host: field(ep_bits + b.segment_bits + b.tenant_bits, b.host_bits),
            tenant: field(ep_bits + b.segment_bits, b.tenant_bits),
            segment: field(ep_bits, b.segment_bits),
            seq,
        })
    }

    /// The tenant's number, assigning the next unused one on first use.
    pub fn tenant_number(&mut self, network: &NetworkName, tenant: &TenantName) -> Result<u32, IpamError> {
        if let Some(n) = self.tenants.get(tenant) {
            return Ok(*n);
        }
        let n = self.next_tenant;
        if u64::from(n) >= limit(self.bits.tenant_bits) {
            return Err(IpamError::ClassicNumbersExhausted {
                network: network.clone(),
                what: "tenant",
                bits: self.bits.tenant_bits,
                limit: limit(self.bits.tenant_bits),
            });
        }
        self.next_tenant += 1;
        self.tenants.insert(tenant.clone(), n);
        Ok(n)
    }

    pub fn segment_number(
        &mut self,
        network: &NetworkName,
        tenant: &TenantName,
        segment: &SegmentName,
    ) -> Result<u32, IpamError> {
        if let Some(n) = self.segments.get(&(tenant.clone(), segment.clone())) {
            return Ok(*n);
        }
        let next = self.next_segment.entry(tenant.clone()).or_insert(0);
        if u64::from(*next) >= limit(self.bits.segment_bits) {
            return Err(IpamError::ClassicNumbersExhausted {
                network: network.clone(),
                what: "segment",
                bits: self.bits.segment_bits,
                limit: limit(self.bits.segment_bits),
            });
        }
        let n = *next;
        *next += 1;
        self.segments.insert((tenant.clone(), segment.clone()), n);
        Ok(n)
    }

    /// Gives a tenant an explicit number (as the Tenant service does). Numbers are never reused.
    pub fn register_tenant(
        &mut self,
        network: &NetworkName,
        tenant: &TenantName,
        n: u32,
    ) -> Result<(), IpamError> {
        if self.tenants.get(tenant) == Some(&n) {
            return Ok(());
        }
        let taken = self.tenants.values().any(|x| *x == n) || self.tenants.contains_key(tenant);
        if taken || u64::from(n) >= limit(self.bits.tenant_bits) {
            return Err(IpamError::ClassicNumberUnavailable {
                network: network.clone(),
                what: "tenant",
                number: n.into(),
                bits: self.bits.tenant_bits,
            });
        }
        self.tenants.insert(tenant.clone(), n);
        self.next_tenant = self.next_tenant.max(n + 1);
        Ok(())
    }

    pub fn register_segment(
        &mut self,
        network: &NetworkName,
        tenant: &TenantName,
        segment: &SegmentName,
        n: u32,
    ) -> Result<(), IpamError> {
        let key = (tenant.clone(), segment.clone());
        if self.segments.get(&key) == Some(&n) {
            return Ok(());
        }
        let taken = self.segments.contains_key(&key)
            || self.segments.iter().any(|((t, _), x)| t == tenant && *x == n);
        if taken || u64::from(n) >= limit(self.bits.segment_bits) {
            return Err(IpamError::ClassicNumberUnavailable {
                network: network.clone(),
                what: "segment",
                number: n.into(),
                bits: self.bits.segment_bits,
            });
        }
        self.segments.insert(key, n);
        let next = self.next_segment.entry(tenant.clone()).or_insert(0);
        *next = (*next).max(n + 1);
        Ok(())
    }
}
