//! Graph construction: level draw, deterministic batch-parallel insertion,
//! neighbour selection.
//!
//! The node with the highest level (lowest id on ties) is inserted first and
//! is the entry point throughout, so no insertion ever changes it. The other
//! nodes follow in id order, in batches that grow with the graph (1 node at
//! first, at most 256): every node of a batch searches the graph as it was
//! before the batch (in parallel), then links to the best of what it found
//! plus the batch's earlier nodes, and finally the reverse links are merged
//! (in parallel, one target node at a time). No step depends on thread
//! timing, so the same vectors and params always give the same bytes.
//!
//! Neighbours are chosen with the paper's heuristic (Algorithm 4) for inner
//! product: a candidate `c` of node `q` is kept unless an already-kept `r`
//! is more similar to `c` than `q` is (⟨c, r⟩ ≥ ⟨c, q⟩); pruned candidates
//! are not used to fill up lists (as in hnswlib).

use super::HnswParams;
use super::graph::{Cand, NONE, Scratch, View, greedy, search_level};
use super::layout;
use crate::dot::dot;
use crate::rng::SplitMix64;
use half::f16;
use rayon::prelude::*;

/// Highest level a node can be drawn at (levels are stored as u8).
const MAX_LEVEL: usize = 32;
const FILL_OWN: bool = true;

/// Builds the graph over `vectors` (n × dim f32, row i = node i) and returns
/// the complete index file bytes. Vectors are rounded to f16 first, so the
/// graph is built on exactly the values that are searched. `n = 0` gives a
/// valid empty index. Panics if `dim == 0`, `vectors.len()` is not a multiple
/// of `dim`, `n ≥ 2^32 − 1`, `m` is not in 2..=128 or `ef_construction == 0`.
pub fn build_index(vectors: &[f32], dim: usize, params: &HnswParams) -> Vec<u8> {
    assert!(dim >= 1 && vectors.len().is_multiple_of(dim), "vectors must be n × {dim}");
    assert!(super::M_RANGE.contains(&params.m), "m must be in {:?}", super::M_RANGE);
    assert!(params.ef_construction >= 1, "ef_construction must be ≥ 1");
    let n = vectors.len() / dim;
    assert!(n < NONE as usize, "at most 2^32 − 2 nodes");
    let halves: Vec<f16> = vectors.iter().map(|&x| f16::from_f32(x)).collect();
    let rounded: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
    let graph = Graph::build(&rounded, dim, params);
    layout::write(&halves, dim, params, &graph)
}

/// The graph in the file's representation (see `layout.rs`).
pub(crate) struct Graph {
    pub m: usize,
    pub m0: usize,
    pub levels: Vec<u8>,
    pub entry: u32,
    pub max_level: usize,
    /// n × m0 links, NONE-padded.
    pub layer0: Vec<u32>,
    /// Node i's lists on levels 1..=levels[i] are lists upper_off[i].. of `upper`.
    pub upper_off: Vec<u64>,
    /// n_upper × m links, NONE-padded.
    pub upper: Vec<u32>,
}

struct Building<'a> {
    g: Graph,
    vecs: &'a [f32],
    dim: usize,
}

impl View for Building<'_> {
    fn n(&self) -> usize {
        self.g.levels.len()
    }
    fn links(&self, node: u32, level: usize) -> &[u32] {
        self.g.list(node, level)
    }
    fn sim(&self, node: u32, q: &[f32]) -> f32 {
        dot(self.vec(node), q)
    }
}

impl Graph {
    fn build(vecs: &[f32], dim: usize, p: &HnswParams) -> Self {
        let n = vecs.len() / dim;
        let (m, m0) = (p.m, 2 * p.m);
        let levels = draw_levels(n, m, p.seed);
        let max_level = levels.iter().copied().max().unwrap_or(0) as usize;
        let entry = levels.iter().position(|&l| l as usize == max_level).map_or(NONE, |i| i as u32);
        let mut upper_off = Vec::with_capacity(n + 1);
        upper_off.push(0u64);
        for &l in &levels {
            upper_off.push(upper_off.last().unwrap() + l as u64);
        }
        let n_upper = *upper_off.last().unwrap() as usize;
        let g = Graph {
            m,
            m0,
            levels,
            entry,
            max_level,
            layer0: vec![NONE; n * m0],
            upper_off,
            upper: vec![NONE; n_upper * m],
        };
        let mut b = Building { g, vecs, dim };
        if n > 1 {
            b.insert_all(p.ef_construction);
        }
        b.g
    }

    pub(crate) fn list(&self, node: u32, level: usize) -> &[u32] {
        let r = self.list_range(node, level);
        if level == 0 { &self.layer0[r] } else { &self.upper[r] }
    }

    fn list_range(&self, node: u32, level: usize) -> std::ops::Range<usize> {
        let i = node as usize;
        if level == 0 {
            i * self.m0..(i + 1) * self.m0
        } else {
            let j = self.upper_off[i] as usize + level - 1;
            j * self.m..(j + 1) * self.m
        }
    }

    fn set_list(&mut self, node: u32, level: usize, links: &[u32]) {
        let r = self.list_range(node, level);
        let dst = if level == 0 { &mut self.layer0[r] } else { &mut self.upper[r] };
        dst.fill(NONE);
        dst[..links.len()].copy_from_slice(links);
    }

    fn cap(&self, level: usize) -> usize {
        if level == 0 { self.m0 } else { self.m }
    }
}

/// Level of each node: ⌊−ln(U)·mL⌋ with mL = 1/ln(m), capped at `MAX_LEVEL`.
fn draw_levels(n: usize, m: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let ml = 1.0 / (m as f64).ln();
    (0..n).map(|_| ((-rng.next_f64().ln() * ml) as usize).min(MAX_LEVEL) as u8).collect()
}

impl Building<'_> {
    fn vec(&self, node: u32) -> &[f32] {
        &self.vecs[node as usize * self.dim..(node as usize + 1) * self.dim]
    }

    fn insert_all(&mut self, ef: usize) {
        let n = self.g.levels.len();
        let entry = self.g.entry;
        let order: Vec<u32> = std::iter::once(entry).chain((0..n as u32).filter(|&i| i != entry)).collect();
        let mut done = 1;
        while done < n {
            let b = (done / 8).clamp(1, 256).min(n - done);
            self.insert_batch(&order[done..done + b], ef);
            done += b;
        }
    }

    fn insert_batch(&mut self, batch: &[u32], ef: usize) {
        let this = &*self;
        let found: Vec<Vec<Vec<Cand>>> =
            batch.par_iter().map_init(Scratch::default, |s, &q| this.search_for_insert(q, ef, s)).collect();
        let own: Vec<Vec<Vec<u32>>> =
            batch.par_iter().enumerate().map(|(i, &q)| this.own_links(q, &found[i], &batch[..i])).collect();
        let mut reverse: Vec<(u32, usize, u32)> = Vec::new();
        for (&q, lists) in batch.iter().zip(&own) {
            for (level, links) in lists.iter().enumerate() {
                self.g.set_list(q, level, links);
                reverse.extend(links.iter().map(|&t| (t, level, q)));
            }
        }
        reverse.sort_unstable();
        let groups: Vec<&[(u32, usize, u32)]> = reverse.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1).collect();
        let this = &*self;
        let merged: Vec<Vec<u32>> = groups.par_iter().map(|g| this.merge_reverse(g)).collect();
        for (g, links) in groups.iter().zip(&merged) {
            self.g.set_list(g[0].0, g[0].1, links);
        }
    }

    /// Candidates of `q` on each of its levels, from the graph before the batch.
    fn search_for_insert(&self, q: u32, ef: usize, s: &mut Scratch) -> Vec<Vec<Cand>> {
        let qv = self.vec(q);
        let ql = self.g.levels[q as usize] as usize;
        let e = self.g.entry;
        let mut at = Cand { sim: self.sim(e, qv), node: e };
        for level in (ql + 1..=self.g.max_level).rev() {
            at = greedy(self, qv, at, level);
        }
        let mut per_level = vec![Vec::new(); ql + 1];
        let mut entry = vec![at];
        for level in (0..=ql.min(self.g.max_level)).rev() {
            let out = search_level(self, qv, &entry, ef, level, &|_| true, s);
            entry.clone_from(&out);
            per_level[level] = out;
        }
        per_level
    }

    /// `q`'s own lists: the heuristic over what it found plus earlier batch nodes.
    fn own_links(&self, q: u32, found: &[Vec<Cand>], earlier: &[u32]) -> Vec<Vec<u32>> {
        let qv = self.vec(q);
        (0..found.len())
            .map(|level| {
                let mut c = found[level].clone();
                c.extend(
                    earlier
                        .iter()
                        .filter(|&&p| self.g.levels[p as usize] as usize >= level)
                        .map(|&p| Cand { sim: dot(self.vec(p), qv), node: p }),
                );
                c.sort_unstable_by(|a, b| b.cmp(a));
                self.select(&c, self.g.cap(level), FILL_OWN)
            })
            .collect()
    }

    /// A target's list after adding the batch's reverse links (`group`: same target and level).
    fn merge_reverse(&self, group: &[(u32, usize, u32)]) -> Vec<u32> {
        let (t, level) = (group[0].0, group[0].1);
        let tv = self.vec(t);
        let existing = self.g.list(t, level).iter().take_while(|&&x| x != NONE).copied();
        let mut ids: Vec<u32> = existing.chain(group.iter().map(|g| g.2)).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut c: Vec<Cand> = ids.into_iter().map(|i| Cand { sim: dot(self.vec(i), tv), node: i }).collect();
        c.sort_unstable_by(|a, b| b.cmp(a));
        if c.len() <= self.g.cap(level) {
            return c.into_iter().map(|c| c.node).collect();
        }
        self.select(&c, self.g.cap(level), false)
    }

    /// The diversity heuristic over candidates sorted best first.
    fn select(&self, cands: &[Cand], cap: usize, fill: bool) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(cap);
        let mut pruned: Vec<u32> = Vec::new();
        for c in cands {
            if kept.len() == cap {
                break;
            }
            let cv = self.vec(c.node);
            if kept.iter().all(|&r| dot(cv, self.vec(r)) < c.sim) {
                kept.push(c.node);
            } else if fill {
                pruned.push(c.node);
            }
        }
        let room = cap - kept.len();
        kept.extend(pruned.into_iter().take(room));
        kept
    }
}
