//! Length-bucketed batching shared by the cross-encoder and the bi-encoder.
//!
//! Inputs are split into windows of at most `window` items (memory is bounded by the window,
//! not by the call), each window is sorted by token count, cut into batches of `batch_size`,
//! each batch padded to its own longest sequence (`PaddedBatch`), and results are written back in
//! input order.

use crate::error::{CoreError, Result};
use crate::tokenize::Encoded;

/// Padded tokens (rows × longest) a batch may hold by default. Past a few hundred tokens a
/// transformer batch stops getting faster per token on CPU: its attention scores (batch × heads ×
/// seq²) and FFN activations leave the caches, and fewer, larger batches balance worse over the
/// parallel sessions. Measured in benches/bench_peers.py (see docs/performance.md).
pub const DEFAULT_TOKEN_BUDGET: usize = 512;

/// Batching policy shared by both encoders.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub batch_size: usize,
    /// Largest padded size (rows × longest sequence) of a batch; a longer single sequence still
    /// gets a batch of its own.
    pub token_budget: usize,
    pub window: usize,
}

impl Batching {
    pub fn new(batch_size: usize, token_budget: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(CoreError::InvalidArgument("batch_size must be at least 1".into()));
        }
        if token_budget == 0 {
            return Err(CoreError::InvalidArgument("token_budget must be at least 1".into()));
        }
        Ok(Self { batch_size, token_budget, window: (batch_size * 16).max(256) })
    }

    /// The windows of a call: consecutive chunks of at most `window` items, each with the input
    /// index of its first item.
    pub fn windows<'a, T>(&self, items: &'a [T]) -> impl Iterator<Item = (usize, &'a [T])> + 'a {
        let window = self.window;
        items.chunks(window).enumerate().map(move |(w, chunk)| (w * window, chunk))
    }

    /// Sort the indices of `encs` by token count (stable) and cut them into batches of at most
    /// `batch_size` items, equal in size (their count a multiple of `workers` where there are
    /// enough items, so parallel sessions get equal shares), then split further wherever a batch
    /// would pad past `token_budget` tokens.
    pub fn batches(&self, encs: &[Encoded], workers: usize) -> Vec<Vec<usize>> {
        let n = encs.len();
        if n == 0 {
            return Vec::new();
        }
        let workers = workers.max(1);
        let mut count = n.div_ceil(self.batch_size);
        if n >= workers {
            count = count.div_ceil(workers) * workers;
        }
        let size = n.div_ceil(count);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| encs[i].len());
        let mut batches = Vec::with_capacity(count);
        for chunk in order.chunks(size) {
            let mut batch: Vec<usize> = Vec::with_capacity(chunk.len());
            for &i in chunk {
                // ascending lengths: item i is the longest of the batch it joins
                if !batch.is_empty() && (batch.len() + 1) * encs[i].len() > self.token_budget {
                    batches.push(std::mem::take(&mut batch));
                }
                batch.push(i);
            }
            batches.push(batch);
        }
        batches
    }

    /// Padded token count of `encs` (one call, not windowed) under this batching over `workers`
    /// sessions, and under one batch padded to the longest sequence:
    /// (length-bucketed, pad-to-longest, real tokens).
    pub fn padding_stats(&self, encs: &[Encoded], workers: usize) -> (usize, usize, usize) {
        let batches = self.batches(encs, workers);
        let real: usize = encs.iter().map(|e| e.len()).sum();
        let longest = encs.iter().map(|e| e.len()).max().unwrap_or(0);
        (padded_tokens(encs, &batches), longest * encs.len(), real)
    }
}

/// Padded token count a batching produces: the sum over batches of size × longest.
pub fn padded_tokens(encs: &[Encoded], batches: &[Vec<usize>]) -> usize {
    batches
        .iter()
        .map(|b| b.len() * b.iter().map(|&i| encs[i].len()).max().unwrap_or(0))
        .sum()
}

/// One batch padded to its own longest sequence (at least one token): row-major
/// `rows × seq_len` input ids (padded with the tokenizer's pad id), attention mask and token type
/// ids (both padded with 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedBatch {
    pub rows: usize,
    pub seq_len: usize,
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    pub type_ids: Vec<i64>,
    /// The id the rows are padded with.
    pub pad_id: i64,
}

impl PaddedBatch {
    pub fn new(batch: &[&Encoded], pad_id: i64) -> Self {
        let rows = batch.len();
        let seq_len = batch.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![pad_id; rows * seq_len];
        let mut mask = vec![0i64; rows * seq_len];
        let mut type_ids = vec![0i64; rows * seq_len];
        for (row, enc) in batch.iter().enumerate() {
            let off = row * seq_len;
            ids[off..off + enc.len()].copy_from_slice(&enc.ids);
            type_ids[off..off + enc.len()].copy_from_slice(&enc.type_ids);
            mask[off..off + enc.len()].fill(1);
        }
        Self { rows, seq_len, ids, mask, type_ids, pad_id }
    }

    /// The tensor shape of each input: [rows, seq_len].
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.seq_len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(n: usize) -> Encoded {
        Encoded { ids: vec![1; n], type_ids: vec![0; n] }
    }

    fn batching(batch_size: usize, token_budget: usize) -> Batching {
        Batching::new(batch_size, token_budget).expect("valid batching")
    }

    #[test]
    fn batches_are_length_sorted_and_cover_every_index() {
        let encs: Vec<Encoded> = [5, 1, 9, 3, 7, 2].iter().map(|&n| enc(n)).collect();
        // 6 items, at most 4 per batch: two equal batches of 3, shortest first
        let batches = batching(4, usize::MAX).batches(&encs, 1);
        assert_eq!(batches, vec![vec![1, 5, 3], vec![0, 4, 2]]);
        // padded: 3 × 3 + 3 × 9 = 36, against 6 × 9 = 54 padding to the longest of all
        assert_eq!(padded_tokens(&encs, &batches), 36);
        // 3 workers: the batch count becomes a multiple of 3
        assert_eq!(batching(4, usize::MAX).batches(&encs, 3).len(), 3);
        // 5 items, batch 16, 2 workers: sizes 3 + 2
        let five: Vec<Encoded> = (1..=5).map(enc).collect();
        let sizes: Vec<usize> = batching(16, usize::MAX).batches(&five, 2).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 2]);
        assert!(batching(16, 512).batches(&[], 2).is_empty());
    }

    #[test]
    fn token_budget_splits_batches() {
        let encs: Vec<Encoded> = [5, 1, 9, 3, 7, 2].iter().map(|&n| enc(n)).collect();
        // budget 10: [1, 2, 3] pads to 9; 5 would make 4 × 5 = 20; [5] alone, then 7 and 9 alone
        let batches = batching(16, 10).batches(&encs, 1);
        assert_eq!(batches, vec![vec![1, 5, 3], vec![0], vec![4], vec![2]]);
        assert!(batches.iter().all(|b| b.len() * b.iter().map(|&i| encs[i].len()).max().unwrap_or(0) <= 10));
        // a sequence longer than the budget still runs, alone
        assert_eq!(batching(16, 4).batches(&[enc(8), enc(8)], 1), vec![vec![0], vec![1]]);
        let mut seen: Vec<usize> = batching(3, 12).batches(&encs, 2).concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn zero_batch_size_is_rejected() {
        assert!(Batching::new(0, 512).is_err());
        assert!(Batching::new(16, 0).is_err());
    }

    #[test]
    fn padding_stats_compare_bucketing_with_padding_to_the_longest() {
        let encs: Vec<Encoded> = [5, 1, 9, 3, 7, 2].iter().map(|&n| enc(n)).collect();
        // the batches of the first test: 36 padded tokens, 6 × 9 = 54 padded to the longest, 27 real
        assert_eq!(batching(4, usize::MAX).padding_stats(&encs, 1), (36, 54, 27));
        assert_eq!(batching(4, 512).padding_stats(&[], 2), (0, 0, 0));
    }

    #[test]
    fn windows_cover_the_call_with_their_offsets() {
        let b = batching(1, 512); // window: max(16, 256) = 256
        assert_eq!(b.window, 256);
        let items: Vec<usize> = (0..600).collect();
        let windows: Vec<(usize, usize, usize)> = b.windows(&items).map(|(base, w)| (base, w.len(), w[0])).collect();
        assert_eq!(windows, vec![(0, 256, 0), (256, 256, 256), (512, 88, 512)]);
        assert_eq!(b.windows::<usize>(&[]).count(), 0);
    }

    #[test]
    fn a_padded_batch_pads_each_row_to_the_longest() {
        let a = Encoded { ids: vec![7, 8, 9], type_ids: vec![0, 1, 1] };
        let b = Encoded { ids: vec![5], type_ids: vec![0] };
        let padded = PaddedBatch::new(&[&a, &b], 3);
        assert_eq!(padded.shape(), [2, 3]);
        assert_eq!(padded.ids, vec![7, 8, 9, 5, 3, 3]);
        assert_eq!(padded.mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(padded.type_ids, vec![0, 1, 1, 0, 0, 0]);
        // an empty sequence still gets one (padding) position
        let empty = Encoded { ids: vec![], type_ids: vec![] };
        let padded = PaddedBatch::new(&[&empty], 0);
        assert_eq!((padded.shape(), padded.mask), ([1, 1], vec![0]));
    }
}
