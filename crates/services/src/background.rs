//! romanad's background CPU work, off the async runtime's workers: the route manager's pass
//! (every host's stamp, one walk over the blocks), the consistency check (10,000 endpoint
//! records parsed and compared every 5 s) and the watch lines of large batches. On the runtime
//! that work held a worker for as long as it ran, and requests waited behind it: an
//! allocation's tail at 1,000 policies x 10,000 endpoints was 131 ms against 1 ms on an empty
//! cluster (docs/benchmarks.md, issue 22). Knows nothing of what the jobs do.
//!
//! The threads run at the normal priority: jobs take the IPAM's read lock (the route pass's
//! stamps, the listing of allocations), and at nice 10 a job preempted while holding it kept
//! the IPAM actor waiting for the lock (allocations p99 64 ms, maximum 668 ms, at load average
//! 15; the same run at normal priority is in docs/benchmarks.md). (A second pool at idle
//! priority ran the route sets' aggregation and digests while notices carried a digest of each
//! set; the notices name the sets by their inputs' stamp now, and nothing is that heavy.)

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// Threads of the normal pool (the machines Romana runs on have two cores or more; the jobs are
/// few).
const THREADS: usize = 2;

/// Starts `threads` threads named `name-N` taking jobs from one queue.
fn start(name: &str, threads: usize) -> Option<Mutex<Sender<Job>>> {
    let (tx, rx) = channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let mut started = 0;
    for i in 0..threads {
        let rx = Arc::clone(&rx);
        let spawned = std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
            loop {
                // Held only while waiting for the next job.
                let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                    Ok(job) => job,
                    Err(_) => return,
                };
                // A job that panics loses its answer (its caller panics in turn), not the thread.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        });
        started += usize::from(spawned.is_ok());
    }
    (started > 0).then(|| Mutex::new(tx))
}

/// Lowers the calling thread's CPU priority (Linux: `PRIO_PROCESS` with 0 is the calling thread).
/// Best effort: without it the jobs compete with requests as equals.
#[allow(unsafe_code)]
pub(crate) fn lower_priority(nice: libc::c_int) {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
}

fn pool() -> Option<&'static Mutex<Sender<Job>>> {
    static POOL: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();
    POOL.get_or_init(|| start("romanad-bg", THREADS)).as_ref()
}

/// Runs `f` on a background thread and waits for its result without holding a runtime worker.
/// Runs it in place when no background thread could be started (the work is done either way).
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    let job = match pool() {
        Some(p) => match p.lock().unwrap_or_else(|e| e.into_inner()).send(job) {
            Ok(()) => None,
            Err(e) => Some(e.0),
        },
        None => Some(job),
    };
    if let Some(job) = job {
        job();
    }
    match rx.await {
        Ok(v) => v,
        // The job panicked on the thread: the same panic here, where it would have happened.
        Err(_) => panic!("a background job panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn jobs_run_off_the_runtime_thread_and_answer_in_order() {
        let here = std::thread::current().id();
        let (a, b) = tokio::join!(run(|| (1, std::thread::current().id())), run(|| 2));
        assert_eq!((a.0, b), (1, 2));
        assert_ne!(a.1, here, "the job ran on a thread of the pool");
        let name = run(|| std::thread::current().name().map(str::to_owned)).await;
        assert!(name.is_some_and(|n| n.starts_with("romanad-bg-")));
    }
}
