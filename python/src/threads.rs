//! The extension's rayon pool, where engine calls run with the GIL released.

use crate::*;
use std::sync::OnceLock;

/// The engine's thread pool: one thread per core (or `RAYON_NUM_THREADS`).
pub(crate) fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("tessera-{i}"))
            .build()
            .expect("the engine's thread pool")
    })
}

/// Runs an engine call with the GIL released, on the engine's pool: the
/// whole call is handed to a pool thread once, so the engine's own parallel
/// steps run inside the pool instead of each being handed over from the
/// calling Python thread.
pub(crate) fn engine<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    py.detach(|| pool().install(f))
}
