//! Windows of long passages: the arithmetic (which token ranges of a passage are scored) and the
//! aggregation of their scores into one per passage. Pure and independent of the tokenizer and
//! the model, so that other encoders (late interaction) can reuse the plans.
//!
//! For a passage of `tokens` tokens and a window of `width` tokens, the windows start at
//! 0, stride, 2·stride, … up to and including the first window that reaches the end, and at most
//! `max_windows` of them are kept; the rest are counted as dropped. A passage that fits has
//! exactly one window (the whole passage).

use std::ops::Range;

use crate::error::{CoreError, Result};

/// How a passage longer than the model's window is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongDocuments {
    /// Today's rule: the passage is cut to fit (one pair per passage).
    Truncate,
    /// The passage is scored as overlapping windows, aggregated by `Aggregate`.
    Windows,
}

impl LongDocuments {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "truncate" => Ok(Self::Truncate),
            "windows" => Ok(Self::Windows),
            other => Err(CoreError::InvalidArgument(format!(
                "long_documents must be \"truncate\" or \"windows\", got {other:?}"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Truncate => "truncate",
            Self::Windows => "windows",
        }
    }
}

/// How the window scores of one passage become its score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// The best window (MaxP).
    Max,
    /// The mean over the scored windows.
    Mean,
    /// The sum over the scored windows.
    Sum,
    /// The first window only (FirstP: truncation, with the telemetry of windows).
    First,
}

impl Aggregate {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "max" => Ok(Self::Max),
            "mean" => Ok(Self::Mean),
            "sum" => Ok(Self::Sum),
            "first" => Ok(Self::First),
            other => Err(CoreError::InvalidArgument(format!(
                "aggregate must be one of \"max\", \"mean\", \"sum\", \"first\", got {other:?}"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Max => "max",
            Self::Mean => "mean",
            Self::Sum => "sum",
            Self::First => "first",
        }
    }

    /// The aggregate of `scores` (the window scores of one passage, in window order) and the
    /// winning window: the best one (the first of equals) for max, mean and sum; 0 for first.
    /// No scores: (0.0, 0).
    pub fn apply(self, scores: &[f32]) -> (f32, usize) {
        let Some(&first) = scores.first() else {
            return (0.0, 0);
        };
        let mut best = 0usize;
        for (i, &s) in scores.iter().enumerate() {
            if s > scores[best] {
                best = i;
            }
        }
        match self {
            Self::Max => (scores[best], best),
            // accumulated in f64 and in window order, so that a reference summing the same
            // window scores gets the same f32
            Self::Sum => (scores.iter().map(|&s| f64::from(s)).sum::<f64>() as f32, best),
            Self::Mean => ((scores.iter().map(|&s| f64::from(s)).sum::<f64>() / scores.len() as f64) as f32, best),
            Self::First => (first, 0),
        }
    }
}

/// Window settings of a cross-encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowOptions {
    pub long_documents: LongDocuments,
    /// Tokens between window starts; None: half the window (at least 1).
    pub stride: Option<usize>,
    /// Most windows scored per passage.
    pub max_windows: usize,
    pub aggregate: Aggregate,
    /// Most passage tokens read (Cohere's `max_tokens_per_doc`): the passage's tokens past it are
    /// dropped before truncation or windows; None: all of them.
    pub max_passage_tokens: Option<usize>,
}

impl Default for WindowOptions {
    fn default() -> Self {
        Self {
            long_documents: LongDocuments::Truncate,
            stride: None,
            max_windows: 8,
            aggregate: Aggregate::Max,
            max_passage_tokens: None,
        }
    }
}

impl WindowOptions {
    pub fn validate(&self) -> Result<()> {
        if self.max_windows == 0 {
            return Err(CoreError::InvalidArgument("max_windows must be at least 1".into()));
        }
        if self.stride == Some(0) {
            return Err(CoreError::InvalidArgument("window_stride must be at least 1 token".into()));
        }
        if self.max_passage_tokens == Some(0) {
            return Err(CoreError::InvalidArgument("max_tokens_per_doc must be at least 1 token".into()));
        }
        Ok(())
    }

    /// Most windows actually scored per passage: 1 for `first`, else `max_windows`.
    pub fn cap(&self) -> usize {
        match (self.long_documents, self.aggregate) {
            (LongDocuments::Truncate, _) | (_, Aggregate::First) => 1,
            _ => self.max_windows,
        }
    }

    /// The fingerprint that keys cached scores: the model's own under truncation (so that the keys
    /// stay those of every other cache tier), the model's plus the window settings otherwise.
    pub fn cache_fingerprint(&self, model: &str) -> String {
        let limit = self.max_passage_tokens.map_or_else(String::new, |n| format!("|max_tokens_per_doc={n}"));
        match self.long_documents {
            LongDocuments::Truncate => format!("{model}{limit}"),
            LongDocuments::Windows => {
                let stride = self.stride.map_or_else(|| "auto".to_string(), |s| s.to_string());
                format!(
                    "{model}|windows(stride={stride},max_windows={},aggregate={}){limit}",
                    self.max_windows,
                    self.aggregate.name()
                )
            }
        }
    }
}

/// The default stride of a window of `width` tokens: half of it, at least 1.
pub fn default_stride(width: usize) -> usize {
    (width / 2).max(1)
}

/// The windows of one passage of `tokens` tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowPlan {
    /// The passage's length in tokens.
    pub tokens: usize,
    /// Tokens per window (at least 1).
    pub width: usize,
    /// Tokens between window starts (at least 1).
    pub stride: usize,
    /// Start of each scored window, ascending.
    pub starts: Vec<usize>,
    /// Windows the passage has before the cap (the scored ones included).
    pub total: usize,
}

impl WindowPlan {
    /// Windows of `width` tokens every `stride` tokens over `tokens` tokens, at most `max_windows`
    /// (each of width, stride and max_windows taken as at least 1).
    pub fn new(tokens: usize, width: usize, stride: usize, max_windows: usize) -> Self {
        let (width, stride, max_windows) = (width.max(1), stride.max(1), max_windows.max(1));
        let total = if tokens <= width { 1 } else { 1 + (tokens - width).div_ceil(stride) };
        let starts = (0..total.min(max_windows)).map(|k| k * stride).collect();
        Self { tokens, width, stride, starts, total }
    }

    /// Token range of scored window `k` (empty past the last one).
    pub fn range(&self, k: usize) -> Range<usize> {
        match self.starts.get(k) {
            Some(&s) => s.min(self.tokens)..(s + self.width).min(self.tokens),
            None => self.tokens..self.tokens,
        }
    }

    /// The scored windows' token ranges, in order.
    pub fn ranges(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..self.starts.len()).map(|k| self.range(k))
    }

    pub fn scored(&self) -> usize {
        self.starts.len()
    }

    /// Windows not scored because of the cap.
    pub fn dropped(&self) -> usize {
        self.total - self.starts.len()
    }

    /// Distinct passage tokens inside at least one scored window.
    pub fn tokens_scored(&self) -> usize {
        let mut covered_until = 0usize;
        let mut count = 0usize;
        for r in self.ranges() {
            let from = r.start.max(covered_until);
            if r.end > from {
                count += r.end - from;
                covered_until = r.end;
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(plan: &WindowPlan) -> Vec<(usize, usize)> {
        plan.ranges().map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn a_passage_that_fits_has_one_window() {
        for tokens in [0, 1, 5, 10] {
            let plan = WindowPlan::new(tokens, 10, 5, 8);
            assert_eq!(ranges(&plan), vec![(0, tokens)]);
            assert_eq!((plan.total, plan.dropped(), plan.tokens_scored()), (1, 0, tokens));
        }
    }

    #[test]
    fn windows_run_up_to_and_including_the_first_that_reaches_the_end() {
        // 11 tokens, width 10, stride 5: [0,10) then [5,11) reaches the end
        let plan = WindowPlan::new(11, 10, 5, 8);
        assert_eq!(ranges(&plan), vec![(0, 10), (5, 11)]);
        // 20 tokens: [0,10) [5,15) [10,20): the third ends exactly at the end, no fourth
        let plan = WindowPlan::new(20, 10, 5, 8);
        assert_eq!(ranges(&plan), vec![(0, 10), (5, 15), (10, 20)]);
        assert_eq!(plan.tokens_scored(), 20);
        // 21 tokens: a fourth, [15, 21)
        assert_eq!(ranges(&WindowPlan::new(21, 10, 5, 8)), vec![(0, 10), (5, 15), (10, 20), (15, 21)]);
        // stride = width: disjoint windows
        assert_eq!(ranges(&WindowPlan::new(25, 10, 10, 8)), vec![(0, 10), (10, 20), (20, 25)]);
        // stride 1
        assert_eq!(WindowPlan::new(13, 10, 1, 8).total, 4);
    }

    #[test]
    fn the_cap_keeps_the_first_windows_and_counts_the_rest() {
        let plan = WindowPlan::new(100, 10, 5, 3);
        assert_eq!(ranges(&plan), vec![(0, 10), (5, 15), (10, 20)]);
        // 1 + ceil(90 / 5) = 19 windows in all
        assert_eq!((plan.total, plan.scored(), plan.dropped()), (19, 3, 16));
        assert_eq!(plan.tokens_scored(), 20);
        // a huge passage: the plan stays bounded by the cap
        let plan = WindowPlan::new(10_000_000, 500, 250, 8);
        assert_eq!(plan.scored(), 8);
        assert_eq!(plan.total, 1 + (10_000_000 - 500usize).div_ceil(250));
    }

    #[test]
    fn a_stride_past_the_width_leaves_gaps_that_are_not_counted_as_scored() {
        let plan = WindowPlan::new(30, 5, 10, 8);
        assert_eq!(ranges(&plan), vec![(0, 5), (10, 15), (20, 25), (30, 30)]);
        assert_eq!(plan.tokens_scored(), 15);
        // zero width / stride / cap are taken as 1
        let plan = WindowPlan::new(3, 0, 0, 0);
        assert_eq!((plan.width, plan.stride, plan.scored(), plan.total), (1, 1, 1, 3));
        assert_eq!(plan.range(7), 3..3);
    }

    #[test]
    fn default_stride_is_half_the_window() {
        assert_eq!(default_stride(125), 62);
        assert_eq!(default_stride(1), 1);
        assert_eq!(default_stride(0), 1);
    }

    #[test]
    fn aggregates() {
        let s = [1.0f32, 3.0, 2.0, 3.0];
        assert_eq!(Aggregate::Max.apply(&s), (3.0, 1));
        assert_eq!(Aggregate::Sum.apply(&s), (9.0, 1));
        assert_eq!(Aggregate::Mean.apply(&s), (2.25, 1));
        assert_eq!(Aggregate::First.apply(&s), (1.0, 0));
        assert_eq!(Aggregate::Max.apply(&[]), (0.0, 0));
        assert_eq!(Aggregate::Max.apply(&[-2.0]), (-2.0, 0));
        for name in ["max", "mean", "sum", "first"] {
            assert_eq!(Aggregate::parse(name).map(Aggregate::name).ok(), Some(name));
        }
        assert!(matches!(Aggregate::parse("median"), Err(CoreError::InvalidArgument(m)) if m.contains("aggregate")));
    }

    #[test]
    fn options_validate_and_key_the_cache() {
        let o = WindowOptions::default();
        assert_eq!((o.long_documents, o.stride, o.max_windows, o.aggregate), (LongDocuments::Truncate, None, 8, Aggregate::Max));
        assert!(o.validate().is_ok());
        assert_eq!(o.cap(), 1);
        assert_eq!(o.cache_fingerprint("sha"), "sha");
        let limited = WindowOptions { max_passage_tokens: Some(100), ..o };
        assert_eq!(limited.cache_fingerprint("sha"), "sha|max_tokens_per_doc=100");
        assert!(WindowOptions { max_passage_tokens: Some(0), ..o }.validate().is_err());
        let w = WindowOptions { long_documents: LongDocuments::Windows, ..o };
        assert_eq!(w.cap(), 8);
        let keys = [
            w.cache_fingerprint("sha"),
            WindowOptions { stride: Some(16), ..w }.cache_fingerprint("sha"),
            WindowOptions { max_windows: 2, ..w }.cache_fingerprint("sha"),
            WindowOptions { aggregate: Aggregate::Mean, ..w }.cache_fingerprint("sha"),
            WindowOptions { max_passage_tokens: Some(100), ..w }.cache_fingerprint("sha"),
        ];
        for (i, a) in keys.iter().enumerate() {
            assert!(a.starts_with("sha|windows("));
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(WindowOptions { aggregate: Aggregate::First, ..w }.cap(), 1);
        assert!(WindowOptions { max_windows: 0, ..w }.validate().is_err());
        assert!(WindowOptions { stride: Some(0), ..w }.validate().is_err());
        assert_eq!(LongDocuments::parse("windows").ok(), Some(LongDocuments::Windows));
        assert!(matches!(LongDocuments::parse("chunk"), Err(CoreError::InvalidArgument(m)) if m.contains("long_documents")));
    }
}
