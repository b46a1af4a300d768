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
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    list: Vec<Weak<Collection>>,
    /// A collection was added since the watcher last looked.
    pushed: bool,
}

fn watched() -> &'static Watched {
    static W: OnceLock<Watched> = OnceLock::new();
    static STARTED: OnceLock<()> = OnceLock::new();
    let w = W.get_or_init(|| Watched { state: Mutex::new(State::default()), wake: Condvar::new() });
    STARTED.get_or_init(|| {
        // The thread waits while nothing is watched; it lives as long as the process.
        let _ = std::thread::Builder::new().name("tessera-idle-seal".into()).spawn(watch);
    });
    w
}

/// Watches `c` until it has been quiet for its period (it was just written).
pub(crate) fn watch_after_write(c: &Arc<Collection>) {
    let w = watched();
    let mut st = w.state.lock().unwrap_or_else(|p| p.into_inner());
    if !st.list.iter().any(|x| std::ptr::eq(x.as_ptr(), Arc::as_ptr(c))) {
        st.list.push(Arc::downgrade(c));
        st.pushed = true;
        w.wake.notify_one();
    }
}

fn watch() {
    let w = watched();
    loop {
        // Which collections are due, which still wait (and how long), which are done.
        let now = Instant::now();
        let mut next = Duration::from_secs(1);
        let mut held = Vec::new();
        {
            let mut st = w.state.lock().unwrap_or_else(|p| p.into_inner());
            st.pushed = false;
            st.list.retain(|weak| {
                let Some(c) = weak.upgrade() else { return false };
                // A collection whose check panics (a poisoned lock) is left alone.
                let quiet = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.quiet_for(now)))
                    .unwrap_or(Quiet::Nothing);
                let keep = match quiet {
                    Quiet::Not(left) => {
                        next = next.min(left);
                        true
                    }
                    Quiet::Yes => {
                        held.push((c.clone(), true));
                        false
                    }
                    Quiet::Nothing => false,
                };
                // The last handle may be this one: dropped below, off the lock.
                held.push((c, false));
                keep
            });
        }
        for (c, due) in &held {
            if *due {
                c.seal_when_idle();
            }
        }
        drop(held);
        let st = w.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.pushed {
            continue;
        }
        if st.list.is_empty() {
            let _st = w.wake.wait_while(st, |s| !s.pushed).unwrap_or_else(|p| p.into_inner());
        } else {
            let wait = next.max(Duration::from_millis(10));
            let _st = w.wake.wait_timeout_while(st, wait, |s| !s.pushed).unwrap_or_else(|p| p.into_inner());
        }
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
