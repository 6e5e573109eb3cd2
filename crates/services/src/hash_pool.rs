//! A small, bounded pool of threads for password hashing (argon2 takes tens of milliseconds and
//! 19 MiB each), so logins never run on the request threads: heartbeats and the watch keep their
//! threads and most of the CPU. A full queue answers at once (`Busy`) instead of growing; the
//! caller sheds the login with 503. Knows nothing of HTTP or passwords.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// The pool is full (every thread busy and the queue at its bound), or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

#[derive(Debug)]
pub struct HashPool {
    tx: SyncSender<Job>,
    threads: usize,
    queue: usize,
}

impl HashPool {
    /// `threads` workers (at least one) and at most `queue` jobs waiting. The workers run at a
    /// lower CPU priority (nice 10) so that, when hashing saturates them, request threads still win.
    pub fn new(threads: usize, queue: usize) -> std::io::Result<HashPool> {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new().name(format!("romanad-hash-{i}")).spawn(move || worker(&rx))?;
        }
        Ok(HashPool { tx, threads, queue })
    }

    /// The default size for this machine: half the cores (at least one, at most four), and a
    /// queue of eight jobs per thread.
    pub fn for_this_machine() -> std::io::Result<HashPool> {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let threads = (cores / 2).clamp(1, 4);
        HashPool::new(threads, 8 * threads)
    }

    /// Workers and queue bound.
    pub fn size(&self) -> (usize, usize) {
        (self.threads, self.queue)
    }

    /// Queues `f`, or refuses at once when the pool is full; the receiver gets its result.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<T>, Busy> {
        let (otx, orx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = otx.send(f());
        });
        match self.tx.try_send(job) {
            Ok(()) => Ok(orx),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }

    /// Runs `f` on the pool and waits for its result without holding a request thread.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        self.submit(f)?.await.map_err(|_| Busy)
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    // Nice 10: when hashing saturates the pool, request threads still win.
    crate::background::lower_priority(10);
    loop {
        // The lock is held only while waiting for the next job; a poisoned lock still holds the
        // receiver, which is fine to use.
        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return, // the pool was dropped
        };
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_pool_sheds_at_once_and_recovers() {
        let pool = HashPool::new(1, 2).expect("threads start");
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let job = |started: Option<std::sync::mpsc::Sender<()>>| {
            let rx = Arc::clone(&release_rx);
            move || {
                if let Some(s) = started {
                    s.send(()).expect("the test waits");
                }
                rx.lock().expect("lock").recv().is_ok()
            }
        };
        // One job runs (blocked), two wait: the fourth is refused at once.
        let first = pool.submit(job(Some(started_tx))).expect("room");
        started_rx.recv().expect("the worker took the first job");
        let queued = [pool.submit(job(None)).expect("room"), pool.submit(job(None)).expect("room")];
        assert_eq!(pool.submit(|| ()).err(), Some(Busy), "a full pool refuses");
        for _ in 0..3 {
            release_tx.send(()).expect("a worker listens");
        }
        assert_eq!(first.await, Ok(true));
        for r in queued {
            assert_eq!(r.await, Ok(true));
        }
        assert_eq!(pool.run(|| 7).await, Ok(7), "free again");
    }
}
