//! etcd's elections as its members log them (`--logger zap`: one JSON object a line, times to the
//! millisecond): who noticed the leader's death, who campaigned at which term, who won and when.
//! Pure: tests that kill the etcd leader read the members' logs and print this next to the pause
//! their clients saw, so that a long pause is explained (a split vote, a slow notice).

use std::fmt;

/// One step of an election, as one member logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// "lost leader X at term T": the member noticed that its leader is gone.
    Lost,
    /// "became pre-candidate at term T" (only with `--pre-vote`; T is the current term).
    PreCandidate,
    /// "became candidate at term T": it asks for votes at term T.
    Candidate,
    /// "became leader at term T".
    Leader,
}

/// A step with its member's name and its time (milliseconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at_ms: u64,
    pub member: String,
    pub step: Step,
    pub term: u64,
}

/// Milliseconds since the Unix epoch of zap's time stamp (`2026-12-05T14:15:06.605Z`, UTC).
pub fn unix_ms(ts: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    if ts.len() < 23 || !ts.ends_with('Z') || ts.as_bytes()[10] != b'T' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from 1970-01-01 to y-m-d (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3_600 + mm * 60 + ss;
    u64::try_from(secs * 1_000 + ms).ok()
}

/// The string value of `"field":"..."` in one zap line (raft's messages hold no quotes).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// The number after the last "at term " in `msg`.
fn term_of(msg: &str) -> Option<u64> {
    let at = msg.rfind("at term ")? + "at term ".len();
    msg[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The election steps in `member`'s log, in the log's order; other lines are skipped.
pub fn parse(member: &str, log: &str) -> Vec<Event> {
    log.lines()
        .filter_map(|line| {
            let msg = field(line, "msg")?;
            let step = if msg.starts_with("raft.node: ") && msg.contains(" lost leader ") {
                Step::Lost
            } else if msg.contains(" became pre-candidate at term ") {
                Step::PreCandidate
            } else if msg.contains(" became candidate at term ") {
                Step::Candidate
            } else if msg.contains(" became leader at term ") {
                Step::Leader
            } else {
                return None;
            };
            Some(Event {
                at_ms: unix_ms(field(line, "ts")?)?,
                member: member.to_owned(),
                step,
                term: term_of(msg)?,
            })
        })
        .collect()
}

/// One election after a leader's death, from every member's steps at or after `from_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    /// The first member to notice the leader was gone, and when (ms after `from_ms`).
    pub noticed: Option<(String, u64)>,
    /// Every candidacy: member, term, ms after `from_ms`.
    pub candidates: Vec<(String, u64, u64)>,
    /// The first member that became leader: member, term, ms after `from_ms`.
    pub leader: Option<(String, u64, u64)>,
}

impl Election {
    /// The steps in `events` (every member's, any order) from `from_ms` on, up to the first leader.
    pub fn after(events: &[Event], from_ms: u64) -> Election {
        let mut steps: Vec<&Event> = events.iter().filter(|e| e.at_ms >= from_ms).collect();
        steps.sort_by_key(|e| e.at_ms);
        let mut election = Election { noticed: None, candidates: Vec::new(), leader: None };
        for e in steps {
            let ms = e.at_ms - from_ms;
            match e.step {
                Step::Lost | Step::PreCandidate if election.noticed.is_none() => {
                    election.noticed = Some((e.member.clone(), ms));
                }
                Step::Candidate => {
                    election.noticed.get_or_insert_with(|| (e.member.clone(), ms));
                    election.candidates.push((e.member.clone(), e.term, ms));
                }
                Step::Leader => {
                    election.leader = Some((e.member.clone(), e.term, ms));
                    break;
                }
                _ => {}
            }
        }
        election
    }

    /// Terms in which more than one member stood (each voted for itself: nobody won).
    pub fn split_terms(&self) -> Vec<u64> {
        let mut terms: Vec<u64> = self.candidates.iter().map(|(_, t, _)| *t).collect();
        terms.sort_unstable();
        let mut split: Vec<u64> = terms.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
        split.dedup();
        split
    }
}

impl fmt::Display for Election {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.noticed {
            Some((m, ms)) => write!(f, "{m} noticed +{ms} ms")?,
            None => write!(f, "nobody noticed")?,
        }
        for (m, t, ms) in &self.candidates {
            write!(f, "; {m} candidate t{t} +{ms} ms")?;
        }
        match &self.leader {
            Some((m, t, ms)) => write!(f, "; {m} leader t{t} +{ms} ms")?,
            None => write!(f, "; no leader logged")?,
        }
        let split = self.split_terms();
        if !split.is_empty() {
            write!(f, " (split vote in term {split:?})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ts: &str, msg: &str) -> String {
        format!(r#"{{"level":"info","ts":"{ts}","caller":"raft/raft.go:1","msg":"{msg}"}}"#)
    }

    fn check_ts(ts: &str, want: Option<u64>) {
        assert_eq!(unix_ms(ts), want, "{ts}");
    }

    #[test]
    fn zap_time_stamps() {
        check_ts("1970-01-01T00:00:00.000Z", Some(0));
        check_ts("2000-03-01T00:00:00.001Z", Some(951_868_800_001));
        check_ts("2026-12-05T14:15:06.605Z", Some(1_796_480_106_605));
        check_ts("2024-02-29T23:59:59.999Z", Some(1_709_251_199_999));
        check_ts("2026-12-05 14:15:06.605", None);
        check_ts("2026-13-05T14:15:06.605Z", None);
        check_ts("", None);
    }

    const T0: &str = "2026-12-05T14:15:06";

    fn at(ms: u32) -> String {
        format!("{T0}.{ms:03}Z")
    }

    /// A log's lines, the steps read from it.
    fn check_parse(lines: &[(u32, &str)], want: &[(u32, Step, u64)]) {
        let log: String = lines.iter().map(|(ms, msg)| line(&at(*ms), msg) + "\n").collect();
        let base = unix_ms(&at(0)).expect("ts");
        let got: Vec<(u32, Step, u64)> = parse("m1", &log)
            .into_iter()
            .map(|e| (u32::try_from(e.at_ms - base).expect("small"), e.step, e.term))
            .collect();
        assert_eq!(got, want.to_vec());
    }

    #[test]
    fn reads_the_steps_of_an_election() {
        check_parse(
            &[
                (578, "c88e is starting a new election at term 2"),
                (578, "c88e became pre-candidate at term 2"),
                (578, "raft.node: c88e lost leader b47b at term 2"),
                (579, "c88e [logterm: 2, index: 8] sent MsgVote request to 7a52 at term 3"),
                (580, "c88e became candidate at term 3"),
                (605, "c88e has received 2 MsgVoteResp votes and 0 vote rejections"),
                (605, "c88e became leader at term 3"),
                (606, "raft.node: c88e elected leader c88e at term 3"),
                (607, "c88e became follower at term 3"),
            ],
            &[
                (578, Step::PreCandidate, 2),
                (578, Step::Lost, 2),
                (580, Step::Candidate, 3),
                (605, Step::Leader, 3),
            ],
        );
        // Not zap's JSON (capnslog), or no term: nothing.
        check_parse(&[], &[]);
        let capnslog = "raft2026/12/05 14:14:41 INFO: e450 became leader at term 2";
        assert_eq!(parse("m0", capnslog), vec![]);
    }

    fn ev(member: &str, ms: u64, step: Step, term: u64) -> Event {
        Event { at_ms: 10_000 + ms, member: member.into(), step, term }
    }

    #[test]
    fn an_election_from_every_members_steps() {
        // Before the kill: an older election, ignored.
        let old = ev("m0", 0, Step::Leader, 2);
        // m1 and m2 both stand in term 3 (each votes for itself), m2 wins term 4.
        let events = vec![
            ev("m2", 1_310, Step::Candidate, 3),
            old.clone(),
            ev("m1", 1_305, Step::Lost, 2),
            ev("m1", 1_306, Step::Candidate, 3),
            ev("m2", 1_820, Step::Candidate, 4),
            ev("m2", 1_840, Step::Leader, 4),
            ev("m1", 1_900, Step::Candidate, 5),
        ];
        let e = Election::after(&events, 11_000);
        assert_eq!(e.noticed, Some(("m1".into(), 305)));
        assert_eq!(e.candidates, vec![("m1".into(), 3, 306), ("m2".into(), 3, 310), ("m2".into(), 4, 820)]);
        assert_eq!(e.leader, Some(("m2".into(), 4, 840)));
        assert_eq!(e.split_terms(), vec![3]);
        assert_eq!(
            e.to_string(),
            "m1 noticed +305 ms; m1 candidate t3 +306 ms; m2 candidate t3 +310 ms; m2 candidate t4 +820 ms; \
             m2 leader t4 +840 ms (split vote in term [3])"
        );
        // Nothing after the kill.
        let none = Election::after(&[old], 11_000);
        assert_eq!(none.to_string(), "nobody noticed; no leader logged");
    }
}
