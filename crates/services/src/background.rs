//! romanad's background CPU work, off the async runtime's workers: the route manager's pass
//! (every host's route set computed again after a new block: tens of ms at 100 hosts in one
//! leaf), the consistency check (10,000 endpoint records parsed and compared every 5 s) and the
//! watch lines of large batches. On the runtime that work held a worker for as long as it ran,
//! and requests waited behind it: an allocation's tail at 1,000 policies x 10,000 endpoints
//! was 131 ms against 1 ms on an empty cluster (docs/benchmarks.md, issue 22). Knows nothing of
//! what the jobs do.
//!
//! Two pools. `run`'s threads run at the normal priority: its jobs take the IPAM's read lock
//! (the route pass's plan, the listing of allocations), and at nice 10 a job preempted while
//! holding it kept the IPAM actor waiting for the lock (allocations p99 64 ms, maximum 668 ms, at
//! load average 15; the same run at normal priority is in docs/benchmarks.md). `run_low`'s
//! thread is for jobs that hold no lock (the route sets' routes, JSON and digests from an owned
//! plan): at the normal priority a new block's 80-100 ms of that work at 5,000 x 50,000 competed
//! with the pod starts beside it. Each of its jobs starts at idle priority (`SCHED_IDLE`: it
//! never preempts a woken request; at nice 10 the pod starts beside a pass waited longer,
//! docs/benchmarks.md), and one that has not answered within `IDLE_GRACE` is raised to nice 10,
//! so that a saturated machine delays a route pass by that much, not indefinitely. Leaving idle
//! priority needs `CAP_SYS_NICE` or `RLIMIT_NICE` of 10 or more (root, or systemd's
//! `LimitNICE=10`): where the thread cannot, its jobs stay at nice 10 and never go idle.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// Threads of the normal pool (the machines Romana runs on have two cores or more; the jobs are
/// few).
const THREADS: usize = 2;

/// The low pool's nice value, once a job is raised from idle priority.
const LOW_NICE: libc::c_int = 10;

/// How long a low job runs at idle priority before it is raised to `LOW_NICE`.
const IDLE_GRACE: Duration = Duration::from_millis(500);

/// The low pool thread's kernel thread id (0 until it started).
static LOW_TID: AtomicI32 = AtomicI32::new(0);

/// The low pool's thread can go to idle priority and come back (`probe_idle`).
static IDLE_OK: AtomicBool = AtomicBool::new(false);

/// Starts `threads` threads named `name-N` taking jobs from one queue, each lowering its own
/// priority to `nice` first (0: as it is).
fn start(name: &str, threads: usize, nice: libc::c_int) -> Option<Mutex<Sender<Job>>> {
    let (tx, rx) = channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let mut started = 0;
    for i in 0..threads {
        let rx = Arc::clone(&rx);
        let spawned = std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
            if nice != 0 {
                lower_priority(nice);
                LOW_TID.store(thread_id(), Ordering::Relaxed);
                IDLE_OK.store(probe_idle(nice), Ordering::Relaxed);
            }
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

#[allow(unsafe_code)]
fn thread_id() -> i32 {
    // SAFETY: gettid takes nothing and cannot fail.
    unsafe { libc::gettid() }
}

/// Puts thread `tid` (0: the calling one) at idle priority, or back to the normal policy (its
/// nice value kept); says whether the kernel agreed.
#[allow(unsafe_code)]
fn set_idle(tid: i32, idle: bool) -> bool {
    let policy = if idle { libc::SCHED_IDLE } else { libc::SCHED_OTHER };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` lives across the call, which only reads it.
    unsafe { libc::sched_setscheduler(tid, policy, &param) == 0 }
}

/// Whether a thread at `nice` can go to idle priority and come back: going is always allowed,
/// coming back only with `CAP_SYS_NICE` or `RLIMIT_NICE` >= 20 - `nice` (a thread that went and
/// could not come back would run every later job at idle priority, on a busy machine for as long
/// as it stays busy). Tried on a thread of its own, which stays behind if it cannot.
fn probe_idle(nice: libc::c_int) -> bool {
    let tried = std::thread::Builder::new().name("romanad-probe".into()).spawn(move || {
        lower_priority(nice);
        set_idle(0, true) && set_idle(0, false)
    });
    let ok = tried.ok().and_then(|t| t.join().ok()).unwrap_or(false);
    if !ok {
        tracing::warn!(
            "route passes cannot use idle priority (leaving it needs CAP_SYS_NICE or RLIMIT_NICE >= 10, \
             e.g. systemd's LimitNICE=10); they run at nice 10"
        );
    }
    ok
}

/// Raises the low pool's thread (running the late job, or one queued ahead of it) from idle
/// priority to `LOW_NICE`.
fn raise_low() {
    let tid = LOW_TID.load(Ordering::Relaxed);
    if tid != 0 && !set_idle(tid, false) {
        tracing::warn!("could not raise a late route pass from idle priority");
    }
}

fn pool() -> Option<&'static Mutex<Sender<Job>>> {
    static POOL: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();
    POOL.get_or_init(|| start("romanad-bg", THREADS, 0)).as_ref()
}

fn low_pool() -> Option<&'static Mutex<Sender<Job>>> {
    static POOL: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();
    POOL.get_or_init(|| start("romanad-low", 1, LOW_NICE)).as_ref()
}

/// Runs `f` on a background thread and waits for its result without holding a runtime worker.
/// Runs it in place when no background thread could be started (the work is done either way).
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    on(pool(), f, None).await
}

/// `run` at a lower priority, for jobs that take no lock (a job preempted while holding one
/// would keep those who wait for it waiting at its priority).
pub async fn run_low<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    on(low_pool(), f, Some(IDLE_GRACE)).await
}

/// Runs `f` on `pool` (in place without one). With a `grace` (the low pool), the job starts at
/// idle priority on the low pool's thread, and after `grace` without an answer it is raised (or,
/// still queued, starts raised).
async fn on<T: Send + 'static>(
    pool: Option<&Mutex<Sender<Job>>>,
    f: impl FnOnce() -> T + Send + 'static,
    grace: Option<Duration>,
) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let late = Arc::new(AtomicBool::new(false));
    let late_job = Arc::clone(&late);
    let job: Job = Box::new(move || {
        let on_low = LOW_TID.load(Ordering::Relaxed) == thread_id();
        if grace.is_some() && on_low && IDLE_OK.load(Ordering::Relaxed) && !late_job.load(Ordering::Relaxed) {
            set_idle(0, true);
        }
        let _ = tx.send(f());
    });
    let job = match pool {
        Some(p) => match p.lock().unwrap_or_else(|e| e.into_inner()).send(job) {
            Ok(()) => None,
            Err(e) => Some(e.0),
        },
        None => Some(job),
    };
    if let Some(job) = job {
        job();
    }
    let mut rx = rx;
    let answer = match grace {
        Some(g) => match tokio::time::timeout(g, &mut rx).await {
            Ok(a) => a,
            Err(_) => {
                late.store(true, Ordering::Relaxed);
                raise_low();
                rx.await
            }
        },
        None => rx.await,
    };
    match answer {
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

    /// The low pool's thread runs at nice 10, below the normal pool's.
    #[tokio::test(flavor = "current_thread")]
    async fn low_jobs_run_at_nice_10_below_normal_jobs() {
        #[allow(unsafe_code)]
        fn nice() -> libc::c_int {
            // SAFETY: getpriority takes plain integers and touches no memory of ours.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
        }
        let low = run_low(|| (nice(), std::thread::current().name().map(str::to_owned))).await;
        assert!(low.1.is_some_and(|n| n.starts_with("romanad-low-")));
        // The normal pool's threads keep the priority they were started with (this test's,
        // which a CI may have lowered itself).
        let normal = run(nice).await;
        assert!(normal < LOW_NICE, "the tests run at nice {normal}: nothing to compare");
        assert_eq!(low.0, LOW_NICE);
    }

    #[allow(unsafe_code)]
    fn policy() -> libc::c_int {
        // SAFETY: sched_getscheduler takes a plain integer and touches no memory of ours.
        unsafe { libc::sched_getscheduler(0) }
    }

    /// Runs until the calling thread's policy is not idle (at most 10 s); returns the policy and
    /// the nice value then.
    fn until_raised() -> (libc::c_int, libc::c_int) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while policy() == libc::SCHED_IDLE && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        #[allow(unsafe_code)]
        // SAFETY: getpriority takes plain integers and touches no memory of ours.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        (policy(), nice)
    }

    /// A low job starts at idle priority (where the thread can come back from it) and, still
    /// running after `IDLE_GRACE`, is raised to the normal policy at nice 10; a job queued
    /// behind it past its own grace starts raised; the next one starts idle again. One test:
    /// the pool has one thread, and another test's long job would make these late.
    #[tokio::test(flavor = "current_thread")]
    async fn a_low_job_starts_idle_and_is_raised_after_the_grace() {
        let idle = if run_low(|| IDLE_OK.load(Ordering::Relaxed)).await {
            libc::SCHED_IDLE
        } else {
            libc::SCHED_OTHER
        };
        let (first, raised) = run_low(move || (policy(), until_raised())).await;
        assert_eq!(first, idle);
        assert_eq!(raised, (libc::SCHED_OTHER, LOW_NICE));
        // A job queued behind a long one: its caller's grace ends while it waits.
        let (long, queued) = tokio::join!(
            run_low(|| {
                std::thread::sleep(IDLE_GRACE * 2);
                policy()
            }),
            run_low(policy)
        );
        assert_eq!((long, queued), (libc::SCHED_OTHER, libc::SCHED_OTHER), "both raised");
        assert_eq!(run_low(policy).await, idle, "the next job starts idle again");
    }
}
