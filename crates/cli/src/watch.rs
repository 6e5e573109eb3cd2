//! `--watch` of the list commands: print the list, then print it again on every change under its
//! prefix on romanad's watch (a burst of changes gives one print), reopening the watch when it
//! breaks. A user romanad lets watch nothing (tenant users) gets the list every 2 s instead.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Result;
use romana_api::rest::WatchKind;
use romana_client::Client;

/// How often the list is read when the watch is refused.
pub const POLL: Duration = Duration::from_secs(2);

/// What a stream's line means for the printed list.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Print now (the state is complete, or changed after it was).
    Print,
    /// Part of the first state, before `synced`: wait for the rest.
    Wait,
}

/// The pure decision: before `synced` nothing is printed (the list is read whole afterwards);
/// after it, every change prints.
pub fn on_event(synced: &mut bool, kind: WatchKind) -> Next {
    match kind {
        WatchKind::Synced => {
            *synced = true;
            Next::Print
        }
        _ if *synced => Next::Print,
        _ => Next::Wait,
    }
}

/// Clears a terminal before each print; separates prints by an empty line otherwise (a pipe, a
/// file: every print stays readable).
fn separate(first: bool) {
    let mut out = std::io::stdout();
    if out.is_terminal() {
        let _ = write!(out, "\x1b[H\x1b[2J");
    } else if !first {
        let _ = writeln!(out);
    }
    let _ = out.flush();
}

/// Runs `print` now and after every change under `prefix`, until the process is stopped.
pub async fn follow<F, Fut>(c: &Client, prefix: &str, mut print: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut first = true;
    loop {
        let mut rx = match c.watch(prefix, 0).await {
            Ok(rx) => rx,
            Err(e) if e.status() == Some(403) => {
                eprintln!(
                    "romana: this user may not watch {prefix}; reading the list every {} s",
                    POLL.as_secs()
                );
                loop {
                    separate(first);
                    first = false;
                    print().await?;
                    tokio::time::sleep(POLL).await;
                }
            }
            Err(e) => return Err(e.into()),
        };
        let mut synced = false;
        let lost = loop {
            let Some(ev) = rx.recv().await else { break "the stream ended".to_owned() };
            let kind = match ev {
                Ok(ev) => ev.kind,
                Err(e) => break e.to_string(),
            };
            if kind == WatchKind::Error {
                break "romanad reported an error on the stream".to_owned();
            }
            if on_event(&mut synced, kind) == Next::Print {
                // A burst (a topology change, a pod wave) prints once.
                while rx.try_recv().is_ok() {}
                separate(first);
                first = false;
                print().await?;
            }
        };
        eprintln!("romana: the watch of {prefix} was lost ({lost}); reopening");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kinds: &[WatchKind], expect: &[Next]) {
        let mut synced = false;
        let got: Vec<Next> = kinds.iter().map(|k| on_event(&mut synced, *k)).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn prints_once_synced_then_on_every_change() {
        use WatchKind::{Delete, Put, Synced};
        check(&[Put, Put, Synced], &[Next::Wait, Next::Wait, Next::Print]);
        check(&[Synced, Put, Delete], &[Next::Print, Next::Print, Next::Print]);
        check(&[Delete], &[Next::Wait]);
    }
}
