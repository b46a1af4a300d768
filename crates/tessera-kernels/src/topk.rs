//! A bounded top-k collector: keeps the `k` highest scores seen, ties broken
//! by the smaller key so that results are deterministic.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A scored item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit<K> {
    pub score: f32,
    pub key: K,
}

/// Orders hits best-first: higher score, then smaller key.
fn better<K: Ord>(a: &Hit<K>, b: &Hit<K>) -> Ordering {
    b.score.total_cmp(&a.score).then_with(|| a.key.cmp(&b.key))
}

/// Heap entry ordered so that the heap's max is the *worst* kept hit.
struct Worst<K>(Hit<K>);

impl<K: Ord> PartialEq for Worst<K> {
    fn eq(&self, other: &Self) -> bool {
        better(&self.0, &other.0) == Ordering::Equal
    }
}
impl<K: Ord> Eq for Worst<K> {}
impl<K: Ord> PartialOrd for Worst<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord> Ord for Worst<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        better(&self.0, &other.0)
    }
}

/// Keeps the best `k` hits pushed into it.
pub struct TopK<K> {
    k: usize,
    heap: BinaryHeap<Worst<K>>,
}

impl<K: Ord> TopK<K> {
    pub fn new(k: usize) -> Self {
        Self { k, heap: BinaryHeap::with_capacity(k.min(1 << 16) + 1) }
    }

    /// The score a new hit must beat (or tie with a smaller key) to enter, once full.
    #[inline]
    pub fn threshold(&self) -> Option<f32> {
        (self.heap.len() == self.k).then(|| self.heap.peek().map_or(f32::INFINITY, |w| w.0.score))
    }

    #[inline]
    pub fn push(&mut self, score: f32, key: K) {
        if self.k == 0 {
            return;
        }
        let hit = Hit { score, key };
        if self.heap.len() < self.k {
            self.heap.push(Worst(hit));
        } else if let Some(mut worst) = self.heap.peek_mut()
            && better(&hit, &worst.0) == Ordering::Less
        {
            *worst = Worst(hit);
        }
    }

    /// Absorbs another collector's hits.
    pub fn merge(&mut self, other: TopK<K>) {
        for w in other.heap {
            self.push(w.0.score, w.0.key);
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The kept hits, best first.
    pub fn into_sorted_vec(self) -> Vec<Hit<K>> {
        let mut v: Vec<Hit<K>> = self.heap.into_iter().map(|w| w.0).collect();
        v.sort_by(better);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_best_k_with_key_tiebreak() {
        let mut t = TopK::new(3);
        for (s, k) in [(1.0, 5u32), (3.0, 1), (2.0, 9), (3.0, 0), (0.5, 2), (2.0, 3)] {
            t.push(s, k);
        }
        let got: Vec<(f32, u32)> = t.into_sorted_vec().iter().map(|h| (h.score, h.key)).collect();
        assert_eq!(got, vec![(3.0, 0), (3.0, 1), (2.0, 3)]);
    }

    #[test]
    fn zero_k_keeps_nothing() {
        let mut t = TopK::new(0);
        t.push(1.0, 1u32);
        assert!(t.is_empty());
    }
}
