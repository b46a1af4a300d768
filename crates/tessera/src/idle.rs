//! Sealing a memtable once its collection has been quiet: a two-stage search
//! scores the memtable's documents exactly, so a freshly written collection
//! searches slower until its memtable is sealed into a segment (with its
//! candidate index). After a write, a collection with a quiet period set
//! ([`Database::set_seal_idle`](crate::Database::set_seal_idle)) is watched
//! by one process-wide thread; when no write came for that long, the thread
//! queues a flush on the collection's build pool, as `flush()` would do it.

use crate::collection::Collection;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// The collections written to since their last quiet check.
struct Watched {
    list: Mutex<Vec<Weak<Collection>>>,
    wake: Condvar,
}

fn watched() -> &'static Watched {
    static W: OnceLock<Watched> = OnceLock::new();
    static STARTED: OnceLock<()> = OnceLock::new();
    let w = W.get_or_init(|| Watched { list: Mutex::new(Vec::new()), wake: Condvar::new() });
    STARTED.get_or_init(|| {
        // The thread sleeps while nothing is watched; it lives as long as the process.
        let _ = std::thread::Builder::new().name("tessera-idle-seal".into()).spawn(watch);
    });
    w
}

/// Watches `c` until it has been quiet for its period (it was just written).
pub(crate) fn watch_after_write(c: &Arc<Collection>) {
    let w = watched();
    let mut list = w.list.lock().unwrap_or_else(|p| p.into_inner());
    if !list.iter().any(|x| std::ptr::eq(x.as_ptr(), Arc::as_ptr(c))) {
        list.push(Arc::downgrade(c));
        w.wake.notify_one();
    }
}

fn watch() {
    let w = watched();
    let mut list = w.list.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if list.is_empty() {
            list = w.wake.wait(list).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        // Check each collection: sealed, still writing (wait on), or gone.
        let now = Instant::now();
        let mut next = Duration::from_secs(1);
        let mut due = Vec::new();
        list.retain(|weak| {
            let Some(c) = weak.upgrade() else { return false };
            match c.quiet_for(now) {
                Quiet::Not(left) => {
                    next = next.min(left);
                    true
                }
                Quiet::Yes => {
                    due.push(c);
                    false
                }
                Quiet::Nothing => false,
            }
        });
        drop(list);
        for c in due {
            c.seal_when_idle();
        }
        std::thread::sleep(next.max(Duration::from_millis(10)));
        list = w.list.lock().unwrap_or_else(|p| p.into_inner());
    }
}

/// Where a watched collection stands.
pub(crate) enum Quiet {
    /// Quiet for its period with something to seal.
    Yes,
    /// Written within the period: check again after this long.
    Not(Duration),
    /// Nothing to seal, or sealing when quiet is off: stop watching.
    Nothing,
}
