//! When segments merge, and which: the smallest while there are more than
//! `max_segments`, or those with a quarter of their rows deleted.

use super::MERGE_DELETED_SHARE;
use crate::segment::SegmentView;

/// Whether segments are due for a merge: more than `max_segments`, or one
/// with at least [`MERGE_DELETED_SHARE`] of its rows deleted.
pub(super) fn merge_due(segments: &[SegmentView], max_segments: usize) -> bool {
    segments.len() > max_segments || segments.iter().any(deleted_share_due)
}

fn deleted_share_due(s: &SegmentView) -> bool {
    let n = s.seg.n_docs();
    n > 0 && (n - s.live.len()) as f64 >= MERGE_DELETED_SHARE * n as f64
}

/// The segments to merge next (indices, ascending): the smallest ones while
/// there are more than `max_segments`, else those with too many deleted rows.
pub(super) fn merge_pick(segments: &[SegmentView], max_segments: usize) -> Option<Vec<usize>> {
    let n = segments.len();
    let mut chosen: Vec<usize> = if n > max_segments {
        let mut by_size: Vec<usize> = (0..n).collect();
        by_size.sort_by_key(|&i| segments[i].live.len());
        by_size.truncate((n - max_segments + 1).max(2));
        by_size
    } else {
        (0..n).filter(|&i| deleted_share_due(&segments[i])).collect()
    };
    chosen.sort_unstable();
    (!chosen.is_empty()).then_some(chosen)
}
