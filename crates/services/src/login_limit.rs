//! Failed-login accounting: how many wrong passwords each (user, source address), each source
//! and each user had in the current window, in a table of fixed capacity. Pure: the caller
//! passes the time; knows nothing of HTTP, the store or password hashes.
//!
//! Three locks, so that nobody can lock a user out from everywhere:
//! - (user, source): `pair` failures lock that user from that address only;
//! - source: `source` failures (any user names) lock that address, against spraying names;
//! - user: `user` failures from anywhere lock that user, against guessing from many addresses,
//!   except from loopback: the admin on the server itself can always log in, and except from an
//!   address where this user logged in successfully within `trust` and has not failed since: an
//!   agent that logs in again when its token expires is not locked out by someone guessing its
//!   password from elsewhere (a service account locked everywhere would make its host look dead).
//!
//! Keys are keyed hashes (SipHash with a per-process random key) of the name and the address,
//! never the name itself, so a flood of long names costs 24 bytes an entry. IPv6 sources count
//! per /64 (one host usually holds a whole /64).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The thresholds, window and capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failures of one user from one address before that pair is locked.
    pub pair: u32,
    /// Failures from one address (any users) before the address is locked.
    pub source: u32,
    /// Failures of one user from all addresses before the user is locked (except from loopback).
    pub user: u32,
    /// How long failures count, and how long a lock lasts from the first failure.
    pub window: Duration,
    /// Most entries kept (each is a few dozen bytes).
    pub capacity: usize,
    /// How long a successful login exempts its (user, address) from the user lock.
    pub trust: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            pair: 5,
            source: 20,
            user: 30,
            window: Duration::from_secs(60),
            capacity: 4096,
            trust: Duration::from_secs(24 * 3600),
        }
    }
}

/// Which lock refused a login, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    pub by: LockKind,
    pub wait: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// This user from this address.
    Pair,
    /// This address, for every user.
    Source,
    /// This user, from every address but loopback.
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Pair(u64),
    Source(u64),
    User(u64),
    /// This user logged in successfully from this address (`since` is when).
    Trusted(u64),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u32,
    since: Instant,
}

/// The failure table.
#[derive(Debug)]
pub struct FailureTable {
    limits: Limits,
    seed: std::collections::hash_map::RandomState,
    entries: HashMap<Key, Entry>,
}

/// The address a lock counts: IPv4 as is, IPv6 by its /64, IPv4-mapped IPv6 as IPv4.
fn source_bits(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) >> 64) | (1 << 127),
    }
}

impl FailureTable {
    pub fn new(limits: Limits) -> FailureTable {
        FailureTable {
            limits,
            seed: std::collections::hash_map::RandomState::new(),
            entries: HashMap::with_capacity(limits.capacity.min(1024)),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Entries held now (at most `capacity`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn hash(&self, tag: u8, user: Option<&str>, source: Option<IpAddr>) -> u64 {
        let mut h = self.seed.build_hasher();
        tag.hash(&mut h);
        user.hash(&mut h);
        source.map(source_bits).hash(&mut h);
        h.finish()
    }

    /// The keys a login of `user` from `source` counts against, with their thresholds. Without a
    /// known source (a listener that does not say), the pair lock is the user's alone.
    fn keys(&self, user: &str, source: Option<IpAddr>) -> Vec<(Key, u32, LockKind)> {
        let l = self.limits;
        let mut keys = vec![(Key::Pair(self.hash(0, Some(user), source)), l.pair, LockKind::Pair)];
        if source.is_some() {
            keys.push((Key::Source(self.hash(1, None, source)), l.source, LockKind::Source));
        }
        keys.push((Key::User(self.hash(2, Some(user), None)), l.user, LockKind::User));
        keys
    }

    /// Whether `user` logged in successfully from `source` within `trust` and has had no failure
    /// from there since (a success clears the pair's failures, so any pair entry in the window is
    /// a later failure).
    fn trusted(&self, user: &str, source: Option<IpAddr>, now: Instant) -> bool {
        if source.is_none() {
            return false;
        }
        let trusted = self
            .entries
            .get(&Key::Trusted(self.hash(3, Some(user), source)))
            .is_some_and(|e| now.saturating_duration_since(e.since) < self.limits.trust);
        let failed_since = self
            .entries
            .get(&Key::Pair(self.hash(0, Some(user), source)))
            .is_some_and(|e| e.count > 0 && now.saturating_duration_since(e.since) < self.limits.window);
        trusted && !failed_since
    }

    /// `Err` when a login of `user` from `source` is locked now.
    pub fn check(&self, user: &str, source: Option<IpAddr>, now: Instant) -> Result<(), Locked> {
        let loopback = source.is_some_and(|ip| ip.to_canonical().is_loopback());
        let exempt = loopback || self.trusted(user, source, now);
        for (key, limit, by) in self.keys(user, source) {
            if by == LockKind::User && exempt {
                continue;
            }
            if let Some(e) = self.entries.get(&key) {
                let age = now.saturating_duration_since(e.since);
                if e.count >= limit && age < self.limits.window {
                    return Err(Locked { by, wait: self.limits.window - age });
                }
            }
        }
        Ok(())
    }

    /// Counts a wrong password (or unknown user) of `user` from `source`.
    pub fn failed(&mut self, user: &str, source: Option<IpAddr>, now: Instant) {
        for (key, _, _) in self.keys(user, source) {
            let window = self.limits.window;
            match self.entries.get_mut(&key) {
                Some(e) if now.saturating_duration_since(e.since) < window => {
                    e.count = e.count.saturating_add(1)
                }
                Some(e) => *e = Entry { count: 1, since: now },
                None => {
                    self.make_room(now);
                    self.entries.insert(key, Entry { count: 1, since: now });
                }
            }
        }
    }

    /// A successful login clears its (user, source) pair and trusts the pair for `trust` (the
    /// user lock no longer applies to it); the source's and the user's counts stay until they
    /// expire, so one good account does not wash an address clean.
    pub fn succeeded(&mut self, user: &str, source: Option<IpAddr>, now: Instant) {
        let keys = self.keys(user, source);
        self.entries.remove(&keys[0].0);
        if source.is_some() {
            let key = Key::Trusted(self.hash(3, Some(user), source));
            if !self.entries.contains_key(&key) {
                self.make_room(now);
            }
            self.entries.insert(key, Entry { count: 0, since: now });
        }
    }

    /// Whether an entry still counts: failures for `window`, trust for `trust`.
    fn live(&self, key: &Key, e: &Entry, now: Instant) -> bool {
        let keep = if matches!(key, Key::Trusted(_)) { self.limits.trust } else { self.limits.window };
        now.saturating_duration_since(e.since) < keep
    }

    /// Frees room when full: expired entries first, then the entries with the fewest failures
    /// (oldest first), so a flood of one-off names cannot push out the entries that lock; trust
    /// goes last (only a right password makes it, so a flood cannot). Frees
    /// an eighth of the table at once, so the sort is paid once per many inserts.
    fn make_room(&mut self, now: Instant) {
        let capacity = self.limits.capacity.max(1);
        if self.entries.len() < capacity {
            return;
        }
        let live: Vec<Key> =
            self.entries.iter().filter(|(k, e)| !self.live(k, e, now)).map(|(k, _)| *k).collect();
        for k in live {
            self.entries.remove(&k);
        }
        let keep = capacity - capacity.div_ceil(8);
        if self.entries.len() <= keep {
            return;
        }
        let weight = |k: &Key, e: &Entry| if matches!(k, Key::Trusted(_)) { u32::MAX } else { e.count };
        let mut by_weight: Vec<(u32, Instant, Key)> =
            self.entries.iter().map(|(k, e)| (weight(k, e), e.since, *k)).collect();
        by_weight.sort_unstable_by_key(|(count, since, _)| (*count, *since));
        let drop = self.entries.len() - keep;
        for (_, _, k) in by_weight.into_iter().take(drop) {
            self.entries.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("an address"))
    }

    fn small() -> Limits {
        Limits {
            pair: 3,
            source: 5,
            user: 8,
            window: Duration::from_secs(60),
            capacity: 64,
            trust: Duration::from_secs(3600),
        }
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_long_distinct_names() {
        let mut t = FailureTable::new(Limits::default());
        let now = Instant::now();
        let long = "x".repeat(253);
        for i in 0..20_000u32 {
            let source = Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
            t.failed(&format!("{long}{i}"), source, now);
        }
        assert!(t.len() <= Limits::default().capacity, "{} entries", t.len());
        assert!(t.len() > Limits::default().capacity / 2, "the table is used: {}", t.len());
    }

    #[test]
    fn a_flood_of_one_off_names_does_not_evict_a_lock() {
        let mut t = FailureTable::new(small());
        let now = Instant::now();
        for _ in 0..3 {
            t.failed("admin", ip("192.0.2.1"), now);
        }
        assert!(t.check("admin", ip("192.0.2.1"), now).is_err());
        for i in 0..1000u32 {
            let source = Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
            t.failed(&format!("u{i}"), source, now);
            assert!(t.len() <= 64);
        }
        assert_eq!(t.check("admin", ip("192.0.2.1"), now).map_err(|l| l.by), Err(LockKind::Pair));
    }

    #[test]
    fn entries_expire_with_the_window() {
        let mut t = FailureTable::new(small());
        let now = Instant::now();
        for _ in 0..3 {
            t.failed("admin", ip("192.0.2.1"), now);
        }
        let locked = t.check("admin", ip("192.0.2.1"), now + Duration::from_secs(10));
        assert_eq!(locked, Err(Locked { by: LockKind::Pair, wait: Duration::from_secs(50) }));
        assert!(t.check("admin", ip("192.0.2.1"), now + Duration::from_secs(60)).is_ok());
        // A full table drops what expired before anything else.
        let later = now + Duration::from_secs(61);
        for i in 0..64u32 {
            t.failed(&format!("u{i}"), ip("198.51.100.1"), later);
        }
        assert!(t.len() <= 64);
    }

    /// (failures as (user, source), then a login to check, expected refusal)
    #[test]
    fn locks_per_pair_per_source_and_per_user() {
        type Case =
            (&'static str, Vec<(&'static str, &'static str)>, (&'static str, &'static str), Option<LockKind>);
        let three = |u, s| vec![(u, s); 3];
        let cases: Vec<Case> = vec![
            ("the pair locks", three("admin", "192.0.2.1"), ("admin", "192.0.2.1"), Some(LockKind::Pair)),
            ("other addresses are not locked", three("admin", "192.0.2.1"), ("admin", "192.0.2.2"), None),
            ("other users are not locked", three("admin", "192.0.2.1"), ("bob", "192.0.2.1"), None),
            ("two fail", vec![("admin", "192.0.2.1"); 2], ("admin", "192.0.2.1"), None),
            (
                "spraying names locks the address",
                (0..5).map(|i| (["a", "b", "c", "d", "e"][i], "192.0.2.1")).collect(),
                ("f", "192.0.2.1"),
                Some(LockKind::Source),
            ),
            (
                "one /64 is one source",
                (0..5)
                    .map(|i| (["a", "b", "c", "d", "e"][i], ["2001:db8::1", "2001:db8::2"][i % 2]))
                    .collect(),
                ("f", "2001:db8::ffff"),
                Some(LockKind::Source),
            ),
            (
                "guessing from many addresses locks the user",
                (0..8)
                    .map(|i| ("admin", ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"][i % 4]))
                    .collect(),
                ("admin", "192.0.2.9"),
                Some(LockKind::User),
            ),
            (
                "but not from loopback",
                (0..8)
                    .map(|i| ("admin", ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"][i % 4]))
                    .collect(),
                ("admin", "127.0.0.1"),
                None,
            ),
            (
                "nor from IPv6 loopback",
                (0..8)
                    .map(|i| ("admin", ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"][i % 4]))
                    .collect(),
                ("admin", "::1"),
                None,
            ),
            (
                "loopback's own pair still locks",
                three("admin", "127.0.0.1"),
                ("admin", "127.0.0.1"),
                Some(LockKind::Pair),
            ),
        ];
        for (name, failures, (user, source), expect) in cases {
            let mut t = FailureTable::new(small());
            let now = Instant::now();
            for (u, s) in failures {
                t.failed(u, ip(s), now);
            }
            assert_eq!(t.check(user, ip(source), now).err().map(|l| l.by), expect, "{name}");
        }
    }

    #[test]
    fn success_clears_the_pair_only() {
        let mut t = FailureTable::new(small());
        let now = Instant::now();
        for u in ["a", "b", "c", "d"] {
            t.failed(u, ip("192.0.2.1"), now);
        }
        t.failed("admin", ip("192.0.2.1"), now);
        t.succeeded("admin", ip("192.0.2.1"), now);
        assert_eq!(t.check("x", ip("192.0.2.1"), now).err().map(|l| l.by), Some(LockKind::Source));
        let _ = LOCAL;
    }

    #[test]
    fn without_a_source_the_pair_is_the_user() {
        let mut t = FailureTable::new(small());
        let now = Instant::now();
        for _ in 0..3 {
            t.failed("admin", None, now);
        }
        assert_eq!(t.check("admin", None, now).err().map(|l| l.by), Some(LockKind::Pair));
        assert!(t.check("bob", None, now).is_ok());
        assert!(t.check("admin", LOCAL, now).is_ok(), "a known source is another pair");
    }

    /// F2: an agent's service account guessed at from other addresses stays usable from the
    /// address where it logged in before (it logs in again when its token expires), but not from
    /// a new address, nor once its trust expires or it fails from there itself.
    #[test]
    fn a_user_lock_spares_an_address_that_logged_in_and_has_not_failed() {
        let now = Instant::now();
        let agent = ip("192.0.2.10");
        let guess = |t: &mut FailureTable, at: Instant| {
            for i in 0..8 {
                t.failed("agent-node-1", ip(["198.51.100.1", "198.51.100.2"][i % 2]), at);
            }
        };
        let lock = |t: &FailureTable, source, at| t.check("agent-node-1", source, at).err().map(|l| l.by);

        let mut t = FailureTable::new(small());
        t.succeeded("agent-node-1", agent, now);
        guess(&mut t, now + Duration::from_secs(1));
        let later = now + Duration::from_secs(2);
        assert_eq!(lock(&t, agent, later), None, "the agent's own address logs in again");
        assert_eq!(lock(&t, ip("192.0.2.11"), later), Some(LockKind::User), "a new address is locked");
        assert!(lock(&t, ip("198.51.100.1"), later).is_some(), "the guessers are locked");

        // Trust ends: past `trust`, fresh guesses lock the agent's address too.
        let expired = now + Duration::from_secs(3601);
        guess(&mut t, expired);
        assert_eq!(lock(&t, agent, expired), Some(LockKind::User));

        // A failure of its own from the trusted address ends the exemption.
        let mut t = FailureTable::new(small());
        t.succeeded("agent-node-1", agent, now);
        guess(&mut t, now);
        t.failed("agent-node-1", agent, now);
        assert_eq!(lock(&t, agent, now), Some(LockKind::User));

        // A flood of one-off failures does not evict the trust.
        let mut t = FailureTable::new(small());
        t.succeeded("agent-node-1", agent, now);
        for i in 0..1000u32 {
            t.failed(&format!("u{i}"), Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))), now);
        }
        guess(&mut t, now);
        assert_eq!(lock(&t, agent, now), None);
    }
}
