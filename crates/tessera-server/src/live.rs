//! Live recall: a sampled share of the two-stage token searches the server
//! answers is searched again, exactly, in the background, and the recall@k
//! of the answer given (the share of the exact top-k it held) is counted per
//! collection for `/metrics` (`tessera_live_recall_*`). Off by default
//! (`tessera serve --live-recall-rate`).
//!
//! The answered query never waits for it: the search hands over a copy of
//! its query and answer (a bounded queue; when it is full the sample is
//! skipped and counted) and returns. One background thread runs the exact
//! searches on a pool of one thread, and after each sleeps long enough that
//! it uses at most `cpu_share` of one core.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tessera::{Collection, Filter, SearchParams, Tokens};

/// Samples waiting for the background thread at most.
const QUEUE: usize = 16;

/// One answered search to check.
pub struct Sample {
    pub collection: Arc<Collection>,
    pub query: Tokens,
    pub k: usize,
    pub filter: Option<Filter>,
    /// The ids answered, best first.
    pub answered: Vec<String>,
}

/// Live recall of one collection since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    /// Answered searches checked.
    pub queries: u64,
    /// The sum of their recall@k (the mean is `recall_sum / queries`).
    pub recall_sum: f64,
    /// Searches sampled but skipped (the background thread was busy).
    pub skipped: u64,
}

#[derive(Default)]
pub struct LiveRecall {
    /// The sampled share of searches, as f64 bits (0: off).
    rate: AtomicU64,
    counter: AtomicU64,
    tx: OnceLock<SyncSender<Sample>>,
    tallies: Arc<Mutex<BTreeMap<String, Tally>>>,
}

impl std::fmt::Debug for LiveRecall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRecall").field("rate", &self.rate()).finish()
    }
}

impl LiveRecall {
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    /// Starts checking `rate` of the searches (0 < rate ≤ 1) with at most
    /// `cpu_share` of one core (0 < share ≤ 1).
    pub fn start(&self, rate: f64, cpu_share: f64) -> Result<(), String> {
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(format!("live recall rate must be in (0, 1], got {rate}"));
        }
        if !(cpu_share > 0.0 && cpu_share <= 1.0) {
            return Err(format!("live recall CPU share must be in (0, 1], got {cpu_share}"));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "tessera-live-recall".into())
            .build()
            .map_err(|e| format!("live recall pool: {e}"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Sample>(QUEUE);
        if self.tx.set(tx).is_err() {
            return Err("live recall is already running".into());
        }
        self.rate.store(rate.to_bits(), Ordering::Relaxed);
        let tallies = self.tallies.clone();
        std::thread::Builder::new()
            .name("tessera-live-recall".into())
            .spawn(move || {
                while let Ok(s) = rx.recv() {
                    let start = Instant::now();
                    let mut params = SearchParams::exact(s.k);
                    params.filter = s.filter;
                    let exact = pool.install(|| s.collection.search_with(&s.query, &params));
                    let Ok(exact) = exact else { continue };
                    let exact: Vec<&str> = exact.iter().map(|h| h.id.as_str()).collect();
                    // Nothing to recall (no document matches): the answer is complete.
                    let recall = tessera::share_kept(&s.answered, &exact).unwrap_or(1.0);
                    {
                        let mut t = tallies.lock().unwrap_or_else(|p| p.into_inner());
                        let t = t.entry(s.collection.name().to_string()).or_default();
                        t.queries += 1;
                        t.recall_sum += recall;
                    }
                    let spent = start.elapsed();
                    std::thread::sleep(spent.mul_f64(1.0 / cpu_share - 1.0));
                }
            })
            .map_err(|e| format!("live recall thread: {e}"))?;
        Ok(())
    }

    /// Whether the next answered search is sampled (a deterministic hash of a counter).
    pub fn sample(&self) -> bool {
        let rate = self.rate();
        if rate <= 0.0 {
            return false;
        }
        let z = tessera::SplitMix64::new(self.counter.fetch_add(1, Ordering::Relaxed)).next_u64();
        ((z >> 11) as f64 / (1u64 << 53) as f64) < rate
    }

    /// Hands a sampled search to the background thread, or counts it
    /// skipped when the queue is full; never waits.
    pub fn offer(&self, s: Sample) {
        let Some(tx) = self.tx.get() else { return };
        let name = s.collection.name().to_string();
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(s) {
            self.tallies.lock().unwrap_or_else(|p| p.into_inner()).entry(name).or_default().skipped += 1;
        }
    }

    /// Every collection's tally, by name.
    pub fn tallies(&self) -> BTreeMap<String, Tally> {
        self.tallies.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
