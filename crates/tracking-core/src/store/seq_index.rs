//! The sparse, bounded index from sequence number to byte offset in `events.jsonl`.

/// Sparse index from sequence number to byte offset in `events.jsonl`, shared with the workers so
/// they can replay from the log. Bounded: an entry at most every [`SeqIndex::SPACING`] bytes
/// (doubling when more than [`SeqIndex::MAX_ENTRIES`] would be needed), so a replay reads at most
/// that far past the event it needs.
#[derive(Debug, Default)]
pub(crate) struct SeqIndex {
    /// (first seq of a batch, byte offset of its first line), increasing.
    entries: Vec<(u64, u64)>,
    /// Current minimum distance in bytes between entries.
    spacing: u64,
    /// The log stopped for good before this seq: events from it on are not in the log.
    pub(crate) broken_at: Option<u64>,
}

impl SeqIndex {
    /// Initial minimum distance between entries (bytes).
    pub(crate) const SPACING: u64 = 256 << 10;
    /// Most entries kept.
    pub(crate) const MAX_ENTRIES: usize = 4096;

    /// Records that the batch starting at `seq` begins at byte `offset` (kept only when far
    /// enough from the previous entry).
    pub(crate) fn push(&mut self, seq: u64, offset: u64) {
        if self.spacing == 0 {
            self.spacing = Self::SPACING;
        }
        if let Some(&(_, last)) = self.entries.last()
            && offset < last.saturating_add(self.spacing)
        {
            return;
        }
        if self.entries.len() >= Self::MAX_ENTRIES {
            // Keep every other entry and double the spacing.
            let mut i = 0;
            self.entries.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.spacing = self.spacing.saturating_mul(2);
        }
        self.entries.push((seq, offset));
    }

    /// Number of entries (bounded by [`Self::MAX_ENTRIES`]).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Offset of a line at or before `seq`.
    pub(crate) fn offset_for(&self, seq: u64) -> u64 {
        match self.entries.binary_search_by(|(s, _)| s.cmp(&seq)) {
            Ok(i) => self.entries[i].1,
            Err(0) => 0,
            Err(i) => self.entries[i - 1].1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_index_stays_bounded_and_points_at_or_before_each_seq() {
        let mut idx = SeqIndex::default();
        // A million batches of 1 KiB each (1 GiB of log).
        let mut offsets = Vec::new();
        for i in 0..1_000_000u64 {
            idx.push(i * 10 + 1, i * 1024);
            if i % 9973 == 0 {
                offsets.push((i * 10 + 1, i * 1024));
            }
        }
        assert!(idx.len() <= SeqIndex::MAX_ENTRIES, "{}", idx.len());
        for (seq, offset) in offsets {
            let at = idx.offset_for(seq);
            assert!(at <= offset, "seq {seq}: {at} > {offset}");
            // Never more than the current spacing behind.
            assert!(
                offset - at <= idx.spacing + 1024,
                "seq {seq}: {at} vs {offset}"
            );
        }
    }
}
