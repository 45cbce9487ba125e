//! Cross-encoder scoring: one raw logit per (query, passage) pair, in input order, optionally
//! through a score cache (only misses run).

use std::path::Path;
use std::sync::Arc;

use crate::batching::{Batching, DEFAULT_TOKEN_BUDGET};
use crate::cache::{self, ScoreCache};
use crate::error::{CoreError, Result};
use crate::runtime::Runtime;
use crate::pool::{default_threads, load_model_dir, BatchOutput, SessionPool};
use crate::runtime::DYNAMIC;
use crate::tokenize::{Encoded, PairWindows, PromptTemplate, TextTokenizer};
use crate::windows::{Aggregate, LongDocuments, WindowOptions};

/// How a cross-encoder is loaded and batches its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossEncoderOptions {
    /// Longest pair, in tokens (the passage is truncated to fit).
    pub max_length: usize,
    /// Sessions (single-threaded, one per core by default) that run batches in parallel.
    pub threads: usize,
    /// Most pairs in one batch.
    pub batch_size: usize,
    /// Most padded tokens (rows × longest) in one batch.
    pub token_budget: usize,
    /// Long passages: truncated (default) or scored as windows and aggregated.
    pub windows: WindowOptions,
    /// The runtime that loads and runs the graph.
    pub runtime: Runtime,
}

impl Default for CrossEncoderOptions {
    fn default() -> Self {
        Self {
            max_length: 512,
            threads: default_threads(),
            batch_size: 16,
            token_budget: DEFAULT_TOKEN_BUDGET,
            windows: WindowOptions::default(),
            runtime: Runtime::default(),
        }
    }
}

/// A loaded cross-encoder. The model and tokenizer are shared (`with_windows` makes a view with
/// other window settings over the same sessions).
pub struct CrossEncoderCore {
    model: Arc<SessionPool>,
    tokenizer: Arc<TextTokenizer>,
    batching: Batching,
    windows: WindowOptions,
}

/// The score of one passage with its window telemetry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassageScore {
    /// The aggregate of the window scores (the truncated pair's score under truncation).
    pub score: f32,
    /// The winning window (see `Aggregate::apply`).
    pub window: usize,
    /// Character span (start, end) of the winning window in the passage.
    pub span: (usize, usize),
    /// The passage's tokens, without special tokens.
    pub tokens: usize,
    /// Distinct passage tokens inside a scored window.
    pub tokens_scored: usize,
    pub windows_scored: usize,
    pub windows_dropped: usize,
}

/// Per-passage aggregation of the window scores `flat` (all windows of `plans`, in order).
fn aggregate_windows(plans: &[PairWindows], flat: &[f32], aggregate: Aggregate) -> Vec<PassageScore> {
    let mut at = 0usize;
    plans
        .iter()
        .map(|p| {
            let n = p.encs.len();
            let scores = flat.get(at..at + n).unwrap_or(&[]);
            at += n;
            let (score, window) = aggregate.apply(scores);
            PassageScore {
                score,
                window,
                span: p.spans.get(window).copied().unwrap_or((0, 0)),
                tokens: p.tokens,
                tokens_scored: p.tokens_scored,
                windows_scored: n,
                windows_dropped: p.dropped,
            }
        })
        .collect()
}

/// The logits of a cross-encoder batch output of `batch` pairs (already checked against the
/// declared output): the output must be [batch] or [batch, 1] and finite.
fn logits(out: &BatchOutput, batch: usize) -> std::result::Result<&[f32], String> {
    if !matches!(out.shape.as_slice(), [b] | [b, 1] if usize::try_from(*b).ok() == Some(batch)) {
        return Err(format!("expected one logit per pair ([{batch}] or [{batch}, 1]), got shape {:?}", out.shape));
    }
    if let Some(j) = out.data.iter().position(|x| !x.is_finite()) {
        return Err(format!("the model returned a non-finite logit ({}) for row {j} of a batch of {batch}", out.data[j]));
    }
    Ok(&out.data)
}

/// The logits of a cross-encoder batch of `batch` pairs, checked against the declared output,
/// then by `logits`.
fn check_logits<'a>(model: &SessionPool, out: &'a BatchOutput, batch: usize) -> std::result::Result<&'a [f32], String> {
    model.check_output(out, batch)?;
    logits(out, batch)
}

/// Scores of `passages` for `query`, looked up in `cache` under `fingerprint` first: only the
/// misses go to `score` (in input order, one call), and their scores are stored.
fn through_cache(
    cache: &ScoreCache,
    fingerprint: &str,
    query: &str,
    passages: &[String],
    score: impl FnOnce(&[&str]) -> Result<Vec<f32>>,
) -> Result<Vec<f32>> {
    let keys: Vec<u128> = passages.iter().map(|p| cache::cache_key(fingerprint, query, p)).collect();
    let cached = cache.get_many(&keys);
    let miss_idx: Vec<usize> = (0..passages.len()).filter(|&i| cached[i].is_none()).collect();
    let mut scores: Vec<f32> = cached.iter().map(|v| v.unwrap_or(0.0)).collect();
    if !miss_idx.is_empty() {
        let refs: Vec<&str> = miss_idx.iter().map(|&i| passages[i].as_str()).collect();
        let fresh = score(&refs)?;
        let mut items = Vec::with_capacity(fresh.len());
        for (&i, s) in miss_idx.iter().zip(fresh) {
            scores[i] = s;
            items.push((keys[i], s));
        }
        cache.put_many(&items);
    }
    Ok(scores)
}

/// The `prompt` object of `dir`/card.json (python/lrt_rerank/models/prompts.py writes it); None
/// without a card or without the field.
pub fn read_card_prompt(dir: &Path) -> Result<Option<PromptTemplate>> {
    let path = dir.join("card.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let card: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| CoreError::model(&path, format!("not valid JSON: {e}")))?;
    match card.get("prompt") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| CoreError::model(&path, format!("field 'prompt': {e}"))),
    }
}

/// Windows of long passages are refused for a prompt template.
fn check_prompt_windows(tokenizer: &TextTokenizer, windows: &WindowOptions) -> Result<()> {
    if tokenizer.has_prompt() && windows.long_documents == LongDocuments::Windows {
        return Err(CoreError::InvalidArgument(
            "long_documents='windows' does not apply to a prompt-template re-ranker: its prompt cuts the document's tail to fit max_length".into(),
        ));
    }
    Ok(())
}

impl CrossEncoderCore {
    /// Load the model directory `dir`; a `prompt` in its card.json makes pairs prompts (see
    /// `load_with_prompt`).
    pub fn load(dir: &Path, options: &CrossEncoderOptions) -> Result<Self> {
        Self::load_with_prompt(dir, options, read_card_prompt(dir)?.as_ref())
    }

    /// `load`, with pairs encoded through `prompt` (a causal LM re-ranker) where given. Windows of
    /// long passages do not apply to a prompt (its document's tail is cut to fit, as the model's card does).
    pub fn load_with_prompt(dir: &Path, options: &CrossEncoderOptions, prompt: Option<&PromptTemplate>) -> Result<Self> {
        let batching = Batching::new(options.batch_size, options.token_budget)?;
        let (model, tokenizer) = load_model_dir(dir, options.max_length, options.threads, false, options.runtime)?;
        let tokenizer = match prompt {
            Some(p) => tokenizer.with_prompt(&dir.join("tokenizer.json"), p)?,
            None => tokenizer,
        };
        check_prompt_windows(&tokenizer, &options.windows)?;
        let declared = model.output_dims();
        if !matches!(declared, [_] | [_, 1 | DYNAMIC]) {
            return Err(CoreError::model(
                model.path(),
                format!("a cross-encoder must output one logit per pair ([batch] or [batch, 1]); the graph declares {declared:?}"),
            ));
        }
        let out = model.probe(&tokenizer, &dir.join("tokenizer.json"))?;
        check_logits(&model, &out, 1).map_err(|msg| CoreError::model(model.path(), format!("probe run: {msg}")))?;
        options.windows.validate()?;
        Ok(Self { model: Arc::new(model), tokenizer: Arc::new(tokenizer), batching, windows: options.windows })
    }

    /// This model (the same sessions and tokenizer) under other window settings.
    pub fn with_windows(&self, windows: WindowOptions) -> Result<Self> {
        windows.validate()?;
        check_prompt_windows(&self.tokenizer, &windows)?;
        Ok(Self { model: self.model.clone(), tokenizer: self.tokenizer.clone(), batching: self.batching, windows })
    }

    /// Window telemetry of each passage without scoring it (tokenization only): what
    /// `score_details` reports besides the score and the winning window.
    pub fn window_stats(&self, query: &str, passages: &[&str]) -> Result<Vec<PairWindows>> {
        let (cap, _) = self.cap_and_aggregate();
        let w = self.windows;
        let mut out = self.tokenizer.encode_windows(query, passages, w.stride, cap, w.max_passage_tokens)?;
        for p in &mut out {
            p.encs = Vec::new();
        }
        Ok(out)
    }

    /// Windows scored per passage and their aggregation: one window, the first, under truncation.
    pub fn cap_and_aggregate(&self) -> (usize, Aggregate) {
        match self.windows.long_documents {
            LongDocuments::Truncate => (1, Aggregate::First),
            LongDocuments::Windows => (self.windows.cap(), self.windows.aggregate),
        }
    }

    pub fn windows(&self) -> WindowOptions {
        self.windows
    }

    crate::pool::encoder_accessors!();

    /// Raw logits for (query, passage) pairs, in input order: the truncated pair's, or the
    /// aggregate of the passage's windows. Every batch's output is checked (shape against the
    /// batch and the declared output, finite values) before it is read.
    pub fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>> {
        match (self.windows.long_documents, self.windows.max_passage_tokens) {
            (LongDocuments::Truncate, None) => self.score_truncated(query, passages),
            _ => Ok(self.score_details(query, passages)?.into_iter().map(|d| d.score).collect()),
        }
    }

    /// Scores with window telemetry, in input order. Under truncation each passage has one
    /// window, the truncated pair (scored as `score` scores it), and the rest of its windows
    /// counted as dropped.
    pub fn score_details(&self, query: &str, passages: &[&str]) -> Result<Vec<PassageScore>> {
        let (cap, aggregate) = self.cap_and_aggregate();
        let mut details = Vec::with_capacity(passages.len());
        for (_, chunk) in self.batching.windows(passages) {
            let plans = self.tokenizer.encode_windows(query, chunk, self.windows.stride, cap, self.windows.max_passage_tokens)?;
            // The windows of all passages of the chunk share the token-budget batching.
            let flat: Vec<Encoded> = plans.iter().flat_map(|p| p.encs.iter().cloned()).collect();
            let scores = self.run(&flat)?;
            details.extend(aggregate_windows(&plans, &scores, aggregate));
        }
        Ok(details)
    }

    /// Logits of encoded pairs, in input order, through the token-budget batching.
    fn run(&self, encs: &[Encoded]) -> Result<Vec<f32>> {
        let mut scores = vec![0f32; encs.len()];
        let batches = self.batching.batches(encs, self.model.sessions());
        let refs: Vec<Vec<&Encoded>> = batches.iter().map(|b| b.iter().map(|&i| &encs[i]).collect()).collect();
        let outs = self.model.run_many(&refs, self.tokenizer.pad_id())?;
        for (batch, out) in batches.iter().zip(outs) {
            let logits = check_logits(&self.model, &out, batch.len()).map_err(|msg| self.model.inference_error(msg))?;
            for (&i, &logit) in batch.iter().zip(logits) {
                scores[i] = logit;
            }
        }
        Ok(scores)
    }

    fn score_truncated(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>> {
        let mut scores = Vec::with_capacity(passages.len());
        for (_, chunk) in self.batching.windows(passages) {
            scores.extend(self.run(&self.tokenizer.encode_pairs(query, chunk)?)?);
        }
        Ok(scores)
    }

    /// `score`, through `cache` (keyed under the model's `fingerprint`) where there is one.
    pub fn score_with_cache(
        &self,
        cache: Option<&ScoreCache>,
        fingerprint: &str,
        query: &str,
        passages: &[String],
    ) -> Result<Vec<f32>> {
        match cache {
            Some(cache) => through_cache(cache, fingerprint, query, passages, |refs| self.score(query, refs)),
            None => {
                let refs: Vec<&str> = passages.iter().map(String::as_str).collect();
                self.score(query, &refs)
            }
        }
    }

    /// Padded token count of one call under this engine's batching, and under one batch padded
    /// to the longest pair: (length-bucketed, pad-to-longest, real tokens).
    /// Under windows (or a token cap) the pairs are the passages' windows, as `score` runs them.
    pub fn padding_stats(&self, query: &str, passages: &[&str]) -> Result<(usize, usize, usize)> {
        let encs = match (self.windows.long_documents, self.windows.max_passage_tokens) {
            (LongDocuments::Truncate, None) => self.tokenizer.encode_pairs(query, passages)?,
            _ => {
                let (cap, _) = self.cap_and_aggregate();
                let plans = self.tokenizer.encode_windows(query, passages, self.windows.stride, cap, self.windows.max_passage_tokens)?;
                plans.into_iter().flat_map(|p| p.encs).collect()
            }
        };
        Ok(self.batching.padding_stats(&encs, self.model.sessions()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(shape: Vec<i64>, data: Vec<f32>) -> BatchOutput {
        BatchOutput { shape, data, mask: Vec::new(), seq_len: 1 }
    }

    #[test]
    fn logits_take_one_finite_value_per_pair() {
        assert_eq!(logits(&out(vec![2], vec![0.5, -1.0]), 2), Ok(&[0.5, -1.0][..]));
        assert_eq!(logits(&out(vec![2, 1], vec![0.5, -1.0]), 2), Ok(&[0.5, -1.0][..]));
        assert_eq!(
            logits(&out(vec![1, 2], vec![0.5, -1.0]), 1),
            Err("expected one logit per pair ([1] or [1, 1]), got shape [1, 2]".to_string())
        );
        assert_eq!(
            logits(&out(vec![2], vec![0.5, f32::NAN]), 2),
            Err("the model returned a non-finite logit (NaN) for row 1 of a batch of 2".to_string())
        );
    }

    #[test]
    fn only_cache_misses_are_scored_and_then_stored() {
        let cache = ScoreCache::new(16).expect("a capacity");
        let passages: Vec<String> = ["a", "bb", "ccc"].iter().map(|s| s.to_string()).collect();
        let by_len = |refs: &[&str]| Ok(refs.iter().map(|p| p.len() as f32).collect());
        let first = through_cache(&cache, "fp", "q", &passages[..2], by_len).expect("scored");
        assert_eq!(first, vec![1.0, 2.0]);
        let mut seen = Vec::new();
        let second = through_cache(&cache, "fp", "q", &passages, |refs| {
            seen.extend(refs.iter().map(|s| s.to_string()));
            by_len(refs)
        })
        .expect("scored");
        assert_eq!(second, vec![1.0, 2.0, 3.0]);
        assert_eq!(seen, vec!["ccc".to_string()]);
        // all hits: nothing runs; another fingerprint misses
        let all = through_cache(&cache, "fp", "q", &passages, |_| panic!("nothing should run")).expect("cached");
        assert_eq!(all, vec![1.0, 2.0, 3.0]);
        let other = through_cache(&cache, "fp2", "q", &passages[..1], |refs| Ok(vec![9.0; refs.len()])).expect("scored");
        assert_eq!(other, vec![9.0]);
    }

    #[test]
    fn a_failed_score_stores_nothing() {
        let cache = ScoreCache::new(16).expect("a capacity");
        let passages = vec!["a".to_string()];
        let failed = through_cache(&cache, "fp", "q", &passages, |_| Err(CoreError::Inference("boom".into())));
        assert!(matches!(failed, Err(CoreError::Inference(m)) if m == "boom"));
        assert!(cache.is_empty());
    }

    #[test]
    fn options_default_to_the_python_defaults() {
        let o = CrossEncoderOptions::default();
        assert_eq!((o.batch_size, o.token_budget), (16, DEFAULT_TOKEN_BUDGET));
        assert!(o.threads >= 1);
        assert_eq!(o.windows, WindowOptions::default());
    }

    fn plan(windows: usize, dropped: usize) -> PairWindows {
        PairWindows {
            encs: vec![Encoded { ids: vec![1], type_ids: vec![0] }; windows],
            spans: (0..windows).map(|k| (k * 10, k * 10 + 20)).collect(),
            tokens: 40,
            tokens_scored: 30,
            dropped,
        }
    }

    #[test]
    fn window_scores_aggregate_per_passage_in_order() {
        let plans = [plan(3, 2), plan(1, 0), plan(2, 0)];
        let flat = [1.0, 5.0, 2.0, 7.0, -1.0, -3.0];
        let max = aggregate_windows(&plans, &flat, Aggregate::Max);
        let got: Vec<_> = max.iter().map(|d| (d.score, d.window, d.span, d.windows_scored, d.windows_dropped)).collect();
        assert_eq!(got, vec![(5.0, 1, (10, 30), 3, 2), (7.0, 0, (0, 20), 1, 0), (-1.0, 0, (0, 20), 2, 0)]);
        let sum: Vec<f32> = aggregate_windows(&plans, &flat, Aggregate::Sum).iter().map(|d| d.score).collect();
        assert_eq!(sum, vec![8.0, 7.0, -4.0]);
        let first: Vec<f32> = aggregate_windows(&plans, &flat, Aggregate::First).iter().map(|d| d.score).collect();
        assert_eq!(first, vec![1.0, 7.0, -1.0]);
    }
}
