//! The fast path's BPF object: the two programs and their maps, written in restricted C
//! (`crates/host/bpf/fastpath.bpf.c`, which says what they do), compiled by `build.rs` with
//! Debian's clang and embedded here; and the byte layouts of the maps' keys and values as this
//! side writes them (the C structs `endpoint_key`, `endpoint6_key`, `endpoint_value`,
//! `uplink_key`, `uplink_value`).

use std::net::{Ipv4Addr, Ipv6Addr};

/// The compiled object (an ELF of BPF code, BTF and map definitions), 8-byte aligned as aya reads
/// it.
pub const OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fastpath.bpf.o"));

/// The uplinks' program.
pub const DELIVER: &str = "romana_deliver";
/// The endpoint links' program.
pub const SEND: &str = "romana_send";
/// IPv4 address -> host-side veth index.
pub const ENDPOINTS_MAP: &str = "romana_eps";
/// IPv6 address -> host-side veth index.
pub const ENDPOINTS6_MAP: &str = "romana_eps6";
/// Uplink index -> `uplink_value`.
pub const UPLINKS_MAP: &str = "romana_uplinks";

/// `struct endpoint_key`: the address as on the wire.
pub type EndpointKey = [u8; 4];
/// `struct endpoint6_key`: the address as on the wire.
pub type Endpoint6Key = [u8; 16];
/// `struct endpoint_value`: the veth's index, in the host's byte order.
pub type EndpointValue = u32;
/// `struct uplink_key`: the uplink's index, in the host's byte order.
pub type UplinkKey = u32;
/// `struct uplink_value`: `far_end[6]`, `handoff`, a pad byte.
pub type UplinkValue = [u8; 8];

pub fn endpoint_key(ip: Ipv4Addr) -> EndpointKey {
    ip.octets()
}

pub fn endpoint6_key(ip: Ipv6Addr) -> Endpoint6Key {
    ip.octets()
}

/// An uplink's entry in `romana_send`'s map: the MAC of the far end it may hand packets to and
/// the flag saying so; all zero when it must transmit.
pub fn uplink_value(far_end: Option<[u8; 6]>) -> UplinkValue {
    match far_end {
        Some(m) => [m[0], m[1], m[2], m[3], m[4], m[5], 1, 0],
        None => [0; 8],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya_obj::maps::Map;
    use aya_obj::{Object, ProgramSection};

    fn object() -> Object {
        Object::parse(OBJECT).expect("the embedded object parses")
    }

    #[test]
    fn the_object_holds_both_programs_as_classifiers() {
        let obj = object();
        let mut names: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, [DELIVER, SEND]);
        for (name, p) in &obj.programs {
            assert!(matches!(p.section, ProgramSection::SchedClassifier), "{name}: {:?}", p.section);
        }
        // The kernel truncates program names to 15 bytes; the agent finds its programs by name.
        assert!(DELIVER.len() <= 15 && SEND.len() <= 15);
    }

    /// Every call is to a kernel helper or a function of the object: clang emits calls to
    /// `memcmp` and the like for some builtins, which no kernel links (aya fails the same way at
    /// load).
    #[test]
    fn the_programs_call_nothing_outside_the_kernel() {
        let mut obj = object();
        obj.relocate_calls(&Default::default()).expect("every call resolves");
    }

    /// The C structs' sizes are the Rust types' (what aya also checks at load), and the maps are
    /// hash maps allocating entries as they are added.
    #[test]
    fn the_maps_have_the_layouts_this_side_writes() {
        let obj = object();
        let mut names: Vec<&str> = obj.maps.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, [ENDPOINTS_MAP, ENDPOINTS6_MAP, UPLINKS_MAP]);
        let check = |name: &str, key: usize, value: usize, max: u32| {
            let m: &Map = &obj.maps[name];
            let got = (
                m.map_type(),
                m.key_size() as usize,
                m.value_size() as usize,
                m.max_entries(),
                m.map_flags(),
            );
            // BPF_MAP_TYPE_HASH, BPF_F_NO_PREALLOC.
            assert_eq!(got, (1, key, value, max, 1), "{name}");
        };
        check(ENDPOINTS_MAP, size_of::<EndpointKey>(), size_of::<EndpointValue>(), 65_536);
        check(ENDPOINTS6_MAP, size_of::<Endpoint6Key>(), size_of::<EndpointValue>(), 65_536);
        check(UPLINKS_MAP, size_of::<UplinkKey>(), size_of::<UplinkValue>(), 64);
    }

    /// The program reads the flag at 6, after the MAC (`offsetof(struct uplink_value, handoff)`,
    /// asserted in the C source).
    #[test]
    fn an_uplink_value_is_the_far_ends_mac_then_the_flag() {
        let mac = [2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
        assert_eq!(uplink_value(Some(mac)), [2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 1, 0]);
        assert_eq!(uplink_value(None), [0; 8]);
        assert_eq!(endpoint_key(Ipv4Addr::new(10, 1, 2, 3)), [10, 1, 2, 3]);
    }

    /// An IPv6 key is the address in network order, as the program copies it from the header.
    #[test]
    fn an_ipv6_key_is_the_address_as_on_the_wire() {
        let ip: Ipv6Addr = "fd10:1::2".parse().expect("test address");
        assert_eq!(endpoint6_key(ip), [0xfd, 0x10, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    }
}
