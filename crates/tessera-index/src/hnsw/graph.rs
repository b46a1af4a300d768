//! The HNSW beam search, shared by construction (over the in-memory graph)
//! and queries (over the verified file), with its reusable scratch space.
//!
//! A [`View`] gives a node's links on a level (padded with `u32::MAX`) and a
//! node's similarity to the query. The visited set is a generation-stamped
//! array, so starting a search costs nothing; queries keep one [`Scratch`]
//! per thread.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Padding of a link list.
pub(crate) const NONE: u32 = u32::MAX;

pub(crate) trait View {
    fn n(&self) -> usize;
    /// Links of `node` on `level`, possibly followed by `NONE` padding.
    fn links(&self, node: u32, level: usize) -> &[u32];
    fn sim(&self, node: u32, q: &[f32]) -> f32;
}

/// A node and its similarity to the query, ordered by similarity (then id, for determinism).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cand {
    pub sim: f32,
    pub node: u32,
}

impl Eq for Cand {}

impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.sim.total_cmp(&o.sim).then(o.node.cmp(&self.node))
    }
}

impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Debug, Default)]
pub(crate) struct Scratch {
    stamps: Vec<u32>,
    generation: u32,
    cands: BinaryHeap<Cand>,
    results: BinaryHeap<Reverse<Cand>>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch (a fresh one if it is already in use,
/// e.g. when a filter closure itself searches).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

impl Scratch {
    fn start(&mut self, n: usize) {
        if self.stamps.len() < n {
            self.stamps.resize(n, 0);
        }
        if self.generation == u32::MAX {
            self.stamps.fill(0);
            self.generation = 0;
        }
        self.generation += 1;
        self.cands.clear();
        self.results.clear();
    }

    /// Marks `node` visited; false if it already was.
    fn visit(&mut self, node: u32) -> bool {
        let s = &mut self.stamps[node as usize];
        let fresh = *s != self.generation;
        *s = self.generation;
        fresh
    }
}

/// Greedy walk on one level: moves to the best neighbour until none is better.
pub(crate) fn greedy(view: &impl View, q: &[f32], mut at: Cand, level: usize) -> Cand {
    loop {
        let mut moved = false;
        for &nb in view.links(at.node, level).iter().take_while(|&&x| x != NONE) {
            let c = Cand { sim: view.sim(nb, q), node: nb };
            if c > at {
                at = c;
                moved = true;
            }
        }
        if !moved {
            return at;
        }
    }
}

/// Beam search on one level from `entry`: the best `ef` nodes for which
/// `accept` holds, best first. Rejected nodes are still expanded.
pub(crate) fn search_level(
    view: &impl View,
    q: &[f32],
    entry: &[Cand],
    ef: usize,
    level: usize,
    accept: &impl Fn(u32) -> bool,
    s: &mut Scratch,
) -> Vec<Cand> {
    s.start(view.n());
    for &e in entry {
        if s.visit(e.node) {
            s.cands.push(e);
            if accept(e.node) {
                s.results.push(Reverse(e));
            }
        }
    }
    while s.results.len() > ef {
        s.results.pop();
    }
    while let Some(c) = s.cands.pop() {
        if s.results.len() >= ef && s.results.peek().is_some_and(|w| c < w.0) {
            break;
        }
        for &nb in view.links(c.node, level).iter().take_while(|&&x| x != NONE) {
            if !s.visit(nb) {
                continue;
            }
            let cand = Cand { sim: view.sim(nb, q), node: nb };
            if s.results.len() < ef || s.results.peek().is_some_and(|w| cand > w.0) {
                s.cands.push(cand);
                if accept(nb) {
                    s.results.push(Reverse(cand));
                    if s.results.len() > ef {
                        s.results.pop();
                    }
                }
            }
        }
    }
    let mut out: Vec<Cand> = s.results.drain().map(|r| r.0).collect();
    out.sort_unstable_by(|a, b| b.cmp(a));
    out
}
