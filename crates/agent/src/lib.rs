//! romana-agent's library: the agent's I/O-free core (`machine`: state, events, `step`, the
//! firewall pass's bookkeeping, route parsing), the ports its adapters implement (`ports`), the
//! runners that perform the core's actions through them (`drive`), and romanad's watch as a
//! source for the store's watch follower (`rest_watch`), and egress NAT's inputs as the firewall's
//! passes read them (`nat_slot`). The binary (`main.rs`) reads events,
//! calls `machine::step` and performs the actions.

pub mod diagnose;
pub mod drive;
pub mod drive_cni;
pub mod error;
pub mod firewall_ops;
pub mod machine;
pub mod nat_slot;
pub mod ports;
pub mod rest_watch;
