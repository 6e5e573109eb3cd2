//! Allocation load for the replicated control plane's kill tests (`tests/ha.rs`), and the figures
//! taken from it: the longest interval with no acknowledged allocation around a kill, the calls
//! that failed and the slowest acknowledged one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use romana_api::rest::AddressRequest;
use romana_client::Client;

/// One acknowledged allocation: when it was sent, when acknowledged, its name and address.
type Acked = (Instant, Instant, String, String);

/// `workers` tasks, each with a client over every replica (each starting on another one),
/// allocating new names until stopped; a failed allocation is retried under the same name
/// (idempotent by name, as the CNI plugin's) after 20 ms.
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    errors: Arc<Mutex<Vec<(Instant, String)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What one kill did to the load.
#[derive(Debug, Clone)]
pub struct Window {
    /// The longest interval with no acknowledged allocation.
    pub gap: Duration,
    /// When it began, from the window's start.
    pub gap_at: Duration,
    /// Calls that failed (each retried).
    pub failed: usize,
    /// The first failure's text.
    pub first_error: Option<String>,
    /// The slowest acknowledged call that ended in the window.
    pub slowest: Duration,
}

impl Load {
    pub fn start(urls: &[String], token: Option<String>, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for w in 0..workers {
            let mut mine = urls.to_vec();
            mine.rotate_left(w % urls.len());
            let c = Client::new(mine);
            c.set_token(token.clone());
            let (stop, acked, errors) = (stop.clone(), acked.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let req = AddressRequest {
                        name: format!("w{w}-{i}"),
                        host: format!("h{}", i % 2),
                        tenant: "t".into(),
                        segment: String::new(),
                        ip: None,
                    };
                    let sent = Instant::now();
                    match c.allocate(&req, None).await {
                        Ok(a) => {
                            acked.lock().unwrap().push((sent, Instant::now(), req.name, a.ip));
                            i += 1;
                        }
                        Err(e) => {
                            errors.lock().unwrap().push((Instant::now(), e.to_string()));
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }));
        }
        Load { stop, acked, errors, tasks }
    }

    /// The figures between `from` and `to`.
    pub fn window(&self, from: Instant, to: Instant) -> Window {
        let acked = self.acked.lock().unwrap();
        let inside: Vec<&Acked> = acked.iter().filter(|(_, t, ..)| *t > from && *t < to).collect();
        let mut times: Vec<Instant> = inside.iter().map(|(_, t, ..)| *t).collect();
        times.sort();
        let mut edges = vec![from];
        edges.extend(times);
        edges.push(to);
        let (gap, gap_at) = edges.windows(2).map(|w| (w[1] - w[0], w[0] - from)).max().unwrap_or_default();
        let slowest = inside.iter().map(|(s, t, ..)| *t - *s).max().unwrap_or_default();
        let errors = self.errors.lock().unwrap();
        let failed: Vec<&String> =
            errors.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, e)| e).collect();
        Window {
            gap,
            gap_at,
            failed: failed.len(),
            first_error: failed.first().map(|e| e.to_string()),
            slowest,
        }
    }

    /// How long after `at` the first allocation was acknowledged (`None`: none yet).
    pub fn first_ack_after(&self, at: Instant) -> Option<Duration> {
        let acked = self.acked.lock().unwrap();
        acked.iter().filter(|(_, t, ..)| *t >= at).map(|(_, t, ..)| *t - at).min()
    }

    /// Every failure since `from`, with its offset (for `HA_DEBUG`).
    pub fn print_errors_since(&self, from: Instant) {
        for (t, e) in self.errors.lock().unwrap().iter().filter(|(t, _)| *t >= from) {
            eprintln!("+{} ms {}", (*t - from).as_millis(), &e[..e.len().min(200)]);
        }
    }

    /// Stops the workers; every acknowledged (name, address).
    pub async fn stop(self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("worker");
        }
        self.acked.lock().unwrap().iter().map(|(_, _, n, ip)| (n.clone(), ip.clone())).collect()
    }
}

/// Gaps per kind of kill, over the rounds: "kind: p50 X ms, max Y ms (rounds: a, b, c)".
#[derive(Default)]
pub struct Figures(BTreeMap<String, Vec<Duration>>);

impl Figures {
    pub fn add(&mut self, kind: &str, gap: Duration) {
        self.0.entry(kind.to_owned()).or_default().push(gap);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(kind, gaps)| {
                let mut sorted = gaps.clone();
                sorted.sort();
                let ms = |d: &Duration| d.as_millis().to_string();
                format!(
                    "{kind}: longest interval without an allocation p50 {} ms, max {} ms over {} kills ({})",
                    ms(&sorted[sorted.len() / 2]),
                    ms(sorted.last().expect("one kill at least")),
                    gaps.len(),
                    gaps.iter().map(ms).collect::<Vec<_>>().join(", ")
                )
            })
            .collect()
    }
}
