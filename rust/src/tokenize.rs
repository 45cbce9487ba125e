//! Pair and single-text encoding with the `tokenizers` crate.
//!
//! Padding and truncation stored inside `tokenizer.json` are discarded on load (files written by
//! `save_pretrained` often carry a fixed 128 of both) and replaced by ours: no padding here (the
//! encoder pads each batch to its own longest sequence) and truncation of the passage only.

use std::path::Path;

use tokenizers::{Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{CoreError, Result};
use crate::windows::{default_stride, WindowPlan};

/// One encoded sequence, without padding. The attention mask is implied: 1 for every token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    pub type_ids: Vec<i64>,
}

impl Encoded {
    fn from_encoding(e: &Encoding) -> Self {
        Encoded {
            ids: e.get_ids().iter().map(|&x| i64::from(x)).collect(),
            type_ids: e.get_type_ids().iter().map(|&x| i64::from(x)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The windows of one (query, passage) pair: each scored window as its own pair, its character
/// span in the passage, and the plan's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairWindows {
    /// One pair per scored window, through the model's pair template.
    pub encs: Vec<Encoded>,
    /// Character span (start, end) in the passage of each window's tokens ((0, 0) when empty).
    pub spans: Vec<(usize, usize)>,
    /// The passage's tokens (without special tokens).
    pub tokens: usize,
    /// Distinct passage tokens inside a scored window.
    pub tokens_scored: usize,
    /// Windows not scored because of the cap.
    pub dropped: usize,
}

fn tokenize_error(e: impl std::fmt::Display) -> CoreError {
    CoreError::Tokenize(e.to_string())
}

/// Encoding of tokens `range` of `enc` (a single sequence without special tokens) as the second
/// sequence of a pair: type id 1, as the tokenizer gives a pair's second sequence before its
/// post-processor runs.
fn slice_as_second(enc: &Encoding, range: std::ops::Range<usize>) -> Encoding {
    let r = range;
    Encoding::new(
        enc.get_ids()[r.clone()].to_vec(),
        vec![1; r.len()],
        enc.get_tokens()[r.clone()].to_vec(),
        enc.get_word_ids()[r.clone()].to_vec(),
        enc.get_offsets()[r.clone()].to_vec(),
        enc.get_special_tokens_mask()[r.clone()].to_vec(),
        enc.get_attention_mask()[r].to_vec(),
        Vec::new(),
        Default::default(),
    )
}

/// Character span of the non-special tokens of sequence `seq` in `enc` ((0, 0) when none).
fn sequence_span(enc: &Encoding, seq: usize) -> (usize, usize, usize) {
    let mut count = 0usize;
    let mut span: Option<(usize, usize)> = None;
    for (i, (&(start, end), &special)) in enc.get_offsets().iter().zip(enc.get_special_tokens_mask()).enumerate() {
        if special == 0 && enc.get_sequence_ids().get(i).copied().flatten() == Some(seq) {
            count += 1;
            span = Some(span.map_or((start, end), |(s, e)| (s.min(start), e.max(end))));
        }
    }
    let (s, e) = span.unwrap_or((0, 0));
    (s, e, count)
}

/// A causal LM's prompt template (the card's `prompt`, see python/lrt_rerank/models/prompts.py):
/// `prefix` and `suffix` are tokenized on their own; `format` (with `{instruction}`, `{query}` and
/// `{document}`) is filled in and tokenized as one sequence, cut at its tail so that the whole prompt
/// fits `max_length`, exactly as the Qwen3-Reranker model card's code does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct PromptTemplate {
    pub prefix: String,
    pub format: String,
    pub suffix: String,
    pub instruction: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Query,
    Document,
}

/// `format` as literal text and the query / document slots (`{instruction}` filled in now).
fn parse_format(format: &str, instruction: &str) -> Result<Vec<Segment>> {
    let mut segments = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    let (mut queries, mut documents) = (0, 0);
    while let Some(c) = rest.chars().next() {
        let slot = [("{instruction}", None), ("{query}", Some(Segment::Query)), ("{document}", Some(Segment::Document))]
            .into_iter()
            .find(|(name, _)| rest.starts_with(name));
        match slot {
            Some((name, None)) => {
                text.push_str(instruction);
                rest = &rest[name.len()..];
            }
            Some((name, Some(seg))) => {
                if !text.is_empty() {
                    segments.push(Segment::Text(std::mem::take(&mut text)));
                }
                if seg == Segment::Query {
                    queries += 1;
                } else {
                    documents += 1;
                }
                segments.push(seg);
                rest = &rest[name.len()..];
            }
            None => {
                text.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !text.is_empty() {
        segments.push(Segment::Text(text));
    }
    if queries != 1 || documents != 1 {
        return Err(CoreError::InvalidArgument(format!(
            "a prompt format needs {{query}} and {{document}} once each, got {queries} and {documents}: {format:?}"
        )));
    }
    Ok(segments)
}

/// The prompt mode of a tokenizer: prefix and suffix ids, the format's segments and a tokenizer
/// that truncates the formatted text to what is left of `max_length`.
struct PromptEncoder {
    prefix: Vec<i64>,
    suffix: Vec<i64>,
    segments: Vec<Segment>,
    body: Tokenizer,
}

impl PromptEncoder {
    /// The formatted text and the character offset at which the document starts.
    fn format(&self, query: &str, document: &str) -> (String, usize) {
        let mut out = String::new();
        let mut doc_start = 0;
        for seg in &self.segments {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Query => out.push_str(query),
                Segment::Document => {
                    doc_start = out.chars().count();
                    out.push_str(document);
                }
            }
        }
        (out, doc_start)
    }

    fn wrap(&self, body: &Encoding) -> Encoded {
        let mut ids = Vec::with_capacity(self.prefix.len() + body.len() + self.suffix.len());
        ids.extend_from_slice(&self.prefix);
        ids.extend(body.get_ids().iter().map(|&x| i64::from(x)));
        ids.extend_from_slice(&self.suffix);
        let type_ids = vec![0; ids.len()];
        Encoded { ids, type_ids }
    }
}

/// The first `chars` characters of `text`.
fn char_prefix(text: &str, chars: usize) -> &str {
    text.char_indices().nth(chars).map_or(text, |(b, _)| &text[..b])
}

pub struct TextTokenizer {
    /// Neither truncates nor pads: encodes the query and passage of windows and applies the
    /// pair template to each window.
    plain: Tokenizer,
    /// Special tokens the pair template adds (3 for BERT, 4 for XLM-R).
    pair_specials: usize,
    /// Truncates only the second sequence (the passage); used for pairs.
    only_second: Tokenizer,
    /// Truncates the longest sequence first; used for single texts and for pairs whose
    /// query alone does not fit (where `only_second` has nothing left to cut).
    longest_first: Tokenizer,
    max_length: usize,
    pad_id: i64,
    /// Set by `with_prompt`: pairs become prompts of a causal LM.
    prompt: Option<PromptEncoder>,
}

fn with_truncation(mut tok: Tokenizer, path: &Path, max_length: usize, strategy: TruncationStrategy) -> Result<Tokenizer> {
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        max_length,
        strategy,
        stride: 0,
        direction: TruncationDirection::Right,
    }))
    .map_err(|e| CoreError::model(path, format!("cannot set truncation to {max_length} tokens: {e}")))?;
    Ok(tok)
}

impl TextTokenizer {
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        if max_length < 4 {
            return Err(CoreError::InvalidArgument(format!("max_length must be at least 4 tokens, got {max_length}")));
        }
        if !path.is_file() {
            return Err(CoreError::model(path, "tokenizer file not found"));
        }
        let base = Tokenizer::from_file(path).map_err(|e| CoreError::model(path, format!("not a valid tokenizer.json: {e}")))?;
        let pad_id = base
            .get_padding()
            .map(|p| i64::from(p.pad_id))
            .or_else(|| base.token_to_id("[PAD]").map(i64::from))
            .or_else(|| base.token_to_id("<pad>").map(i64::from))
            .unwrap_or(0);
        let mut plain = base.clone();
        plain.with_padding(None);
        plain
            .with_truncation(None)
            .map_err(|e| CoreError::model(path, format!("cannot turn truncation off: {e}")))?;
        // The template's special tokens, counted on an empty pair (no tokens of its own).
        let pair_specials = plain
            .encode_fast(("", ""), true)
            .map_err(|e| CoreError::model(path, format!("cannot encode an empty pair: {e}")))?
            .len();
        let only_second = with_truncation(base.clone(), path, max_length, TruncationStrategy::OnlySecond)?;
        let longest_first = with_truncation(base, path, max_length, TruncationStrategy::LongestFirst)?;
        Ok(Self { plain, pair_specials, only_second, longest_first, max_length, pad_id, prompt: None })
    }

    /// This tokenizer (loaded from `path`) encoding pairs through `template`: prefix ids, the
    /// formatted (query, document) cut to `max_length` − prefix − suffix tokens at its tail, suffix
    /// ids. The pad id becomes the tokenizer's padding token, else its `<|endoftext|>`, else 0 (the
    /// engine pads on the right and the graph reads the last real token, so its value is never seen).
    pub fn with_prompt(mut self, path: &Path, template: &PromptTemplate) -> Result<Self> {
        let ids = |text: &str| -> Result<Vec<i64>> {
            let enc = self.plain.encode_fast(text, false).map_err(|e| CoreError::model(path, format!("cannot encode the prompt: {e}")))?;
            Ok(enc.get_ids().iter().map(|&x| i64::from(x)).collect())
        };
        let (prefix, suffix) = (ids(&template.prefix)?, ids(&template.suffix)?);
        let segments = parse_format(&template.format, &template.instruction)?;
        let budget = self.max_length.checked_sub(prefix.len() + suffix.len()).filter(|&b| b >= 1).ok_or_else(|| {
            CoreError::InvalidArgument(format!(
                "max_length {} leaves no room for the prompt's {} prefix and {} suffix tokens",
                self.max_length,
                prefix.len(),
                suffix.len()
            ))
        })?;
        let body = with_truncation(self.plain.clone(), path, budget, TruncationStrategy::LongestFirst)?;
        if let Some(id) = self.plain.token_to_id("<|endoftext|>") {
            self.pad_id = i64::from(id);
        }
        self.prompt = Some(PromptEncoder { prefix, suffix, segments, body });
        Ok(self)
    }

    /// Whether pairs are encoded through a prompt template.
    pub fn has_prompt(&self) -> bool {
        self.prompt.is_some()
    }

    /// The prompt of each (query, passage) pair, with its one window's telemetry; with
    /// `max_passage_tokens`, the passage is first cut after that many of its own tokens.
    fn encode_prompts(&self, prompt: &PromptEncoder, query: &str, passages: &[&str], max_passage_tokens: Option<usize>) -> Result<Vec<PairWindows>> {
        let alone = self.plain.encode_batch_char_offsets(passages.to_vec(), false).map_err(tokenize_error)?;
        passages
            .iter()
            .zip(&alone)
            .map(|(&passage, own)| {
                let read = match max_passage_tokens {
                    Some(n) if n < own.len() => {
                        let end = own.get_offsets().get(n.saturating_sub(1)).map_or(0, |&(_, e)| e);
                        char_prefix(passage, if n == 0 { 0 } else { end })
                    }
                    _ => passage,
                };
                let (text, doc_start) = prompt.format(query, read);
                let body = prompt.body.encode_char_offsets(text.as_str(), true).map_err(tokenize_error)?;
                let kept_end = body.get_offsets().iter().map(|&(_, e)| e).max().unwrap_or(0);
                let span_end = kept_end.saturating_sub(doc_start).min(read.chars().count());
                let tokens_scored = own.get_offsets().iter().filter(|&&(_, e)| e <= span_end).count();
                Ok(PairWindows {
                    encs: vec![prompt.wrap(&body)],
                    spans: vec![(0, span_end)],
                    tokens: own.len(),
                    tokens_scored,
                    dropped: 0,
                })
            })
            .collect()
    }

    /// Special tokens the model's pair template adds (3 for BERT, 4 for XLM-R).
    pub fn pair_specials(&self) -> usize {
        self.pair_specials
    }

    /// Tokens of each window for `query`: `max_length` − the query's tokens − the pair template's
    /// special tokens; None when the query alone leaves no passage token (today's truncation
    /// rule applies then, without windows).
    pub fn window_width(&self, query: &str) -> Result<Option<usize>> {
        if self.prompt.is_some() {
            return Ok(None);
        }
        let q = self.plain.encode_fast(query, false).map_err(tokenize_error)?;
        Ok(self.width_after(q.len()))
    }

    fn width_after(&self, query_tokens: usize) -> Option<usize> {
        self.max_length.checked_sub(query_tokens + self.pair_specials).filter(|&w| w >= 1)
    }

    /// The windows of each passage for `query` (see `windows::WindowPlan`): windows of
    /// `window_width(query)` tokens every `stride` tokens (default: half the window), at most
    /// `max_windows` per passage, each through the pair template. A passage that fits gets one
    /// window, the pair `encode_pairs` gives; so does every passage when the query alone leaves
    /// no room (today's rule, longest-first truncation). With `max_passage_tokens`, only the
    /// passage's first tokens up to it are windowed (the rest count as not scored).
    pub fn encode_windows(
        &self,
        query: &str,
        passages: &[&str],
        stride: Option<usize>,
        max_windows: usize,
        max_passage_tokens: Option<usize>,
    ) -> Result<Vec<PairWindows>> {
        if let Some(prompt) = &self.prompt {
            return self.encode_prompts(prompt, query, passages, max_passage_tokens);
        }
        let q = self.plain.encode_fast(query, false).map_err(tokenize_error)?;
        let encs = self.plain.encode_batch_char_offsets(passages.to_vec(), false).map_err(tokenize_error)?;
        let Some(width) = self.width_after(q.len()) else {
            return passages.iter().zip(&encs).map(|(p, enc)| self.fallback_window(query, p, enc.len())).collect();
        };
        let stride = stride.unwrap_or_else(|| default_stride(width));
        encs.iter()
            .map(|p| {
                let read = max_passage_tokens.map_or(p.len(), |n| n.min(p.len()));
                let plan = WindowPlan::new(read, width, stride, max_windows);
                let mut out = Vec::with_capacity(plan.scored());
                let mut spans = Vec::with_capacity(plan.scored());
                for r in plan.ranges() {
                    spans.push(match (p.get_offsets().get(r.start), r.end.checked_sub(1).and_then(|e| p.get_offsets().get(e))) {
                        (Some(&(start, _)), Some(&(_, end))) if !r.is_empty() => (start, end),
                        _ => (0, 0),
                    });
                    let pair = self.plain.post_process(q.clone(), Some(slice_as_second(p, r)), true).map_err(tokenize_error)?;
                    out.push(Encoded::from_encoding(&pair));
                }
                Ok(PairWindows {
                    encs: out,
                    spans,
                    tokens: p.len(),
                    tokens_scored: plan.tokens_scored(),
                    dropped: plan.dropped(),
                })
            })
            .collect()
    }

    /// The one window of a pair whose query alone leaves no room: today's pair.
    fn fallback_window(&self, query: &str, passage: &str, tokens: usize) -> Result<PairWindows> {
        let enc = match self.only_second.encode_char_offsets((query, passage), true) {
            Ok(e) => e,
            Err(_) => self.longest_first.encode_char_offsets((query, passage), true).map_err(tokenize_error)?,
        };
        let (start, end, kept) = sequence_span(&enc, 1);
        Ok(PairWindows { encs: vec![Encoded::from_encoding(&enc)], spans: vec![(start, end)], tokens, tokens_scored: kept, dropped: 0 })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// Size of the vocabulary including added tokens: every id produced is below it.
    pub fn vocab_size(&self) -> usize {
        self.only_second.get_vocab_size(true)
    }

    /// Encode (query, passage) pairs, truncating the passage only where possible.
    pub fn encode_pairs(&self, query: &str, passages: &[&str]) -> Result<Vec<Encoded>> {
        if let Some(prompt) = &self.prompt {
            let texts: Vec<String> = passages.iter().map(|p| prompt.format(query, p).0).collect();
            let bodies = prompt.body.encode_batch_fast(texts, true).map_err(tokenize_error)?;
            return Ok(bodies.iter().map(|b| prompt.wrap(b)).collect());
        }
        let inputs: Vec<(String, String)> = passages.iter().map(|p| (query.to_string(), (*p).to_string())).collect();
        match self.only_second.encode_batch_fast(inputs, true) {
            Ok(encs) => Ok(encs.iter().map(Encoded::from_encoding).collect()),
            // The query alone exceeds max_length for at least one pair: encode one by one and
            // fall back to longest-first truncation where passage-only truncation cannot fit.
            Err(_) => passages.iter().map(|p| self.encode_pair(query, p)).collect(),
        }
    }

    fn encode_pair(&self, query: &str, passage: &str) -> Result<Encoded> {
        let enc = match self.only_second.encode_fast((query, passage), true) {
            Ok(e) => e,
            Err(_) => self
                .longest_first
                .encode_fast((query, passage), true)
                .map_err(|e| CoreError::Tokenize(e.to_string()))?,
        };
        Ok(Encoded::from_encoding(&enc))
    }

    /// Encode single texts (for the bi-encoder).
    pub fn encode_texts(&self, texts: &[&str]) -> Result<Vec<Encoded>> {
        let inputs: Vec<&str> = texts.to_vec();
        let encs = self
            .longest_first
            .encode_batch_fast(inputs, true)
            .map_err(|e| CoreError::Tokenize(e.to_string()))?;
        Ok(encs.iter().map(Encoded::from_encoding).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const PAD: i64 = 0;
    const CLS: i64 = 2;
    const SEP: i64 = 3;
    const A: i64 = 4;
    const B: i64 = 5;
    const C: i64 = 6;
    const D: i64 = 7;
    const E: i64 = 8;

    /// A BERT-style WordPiece tokenizer over the words a–e ([PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3):
    /// single texts are `[CLS] A [SEP]`, pairs `[CLS] A [SEP] B [SEP]` with type ids 0 then 1.
    fn tokenizer_json(pad_token: &str) -> String {
        let added: Vec<String> = [(pad_token, 0), ("[UNK]", 1), ("[CLS]", 2), ("[SEP]", 3)]
            .iter()
            .map(|(t, id)| {
                format!(r#"{{"id":{id},"content":"{t}","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}}"#)
            })
            .collect();
        format!(
            r###"{{
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [{added}],
  "normalizer": {{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}},
  "pre_tokenizer": {{"type": "BertPreTokenizer"}},
  "post_processor": {{"type": "TemplateProcessing",
    "single": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}],
    "pair": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}},
             {{"Sequence": {{"id": "B", "type_id": 1}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 1}}}}],
    "special_tokens": {{"[CLS]": {{"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}}, "[SEP]": {{"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}}}}},
  "decoder": null,
  "model": {{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
    "vocab": {{"{pad_token}": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4, "b": 5, "c": 6, "d": 7, "e": 8}}}}
}}"###,
            added = added.join(",")
        )
    }

    /// Write `text` to a fresh file under the system temp folder.
    fn temp_file(text: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("lrt-tokenize-test-{}-{n}.json", std::process::id()));
        std::fs::write(&path, text).expect("write a temp tokenizer file");
        path
    }

    fn load(max_length: usize) -> TextTokenizer {
        TextTokenizer::from_file(&temp_file(&tokenizer_json("[PAD]")), max_length).expect("a valid tokenizer")
    }

    fn pair(tok: &TextTokenizer, query: &str, passage: &str) -> Encoded {
        let mut encs = tok.encode_pairs(query, &[passage]).expect("encodable");
        assert_eq!(encs.len(), 1);
        encs.remove(0)
    }

    #[test]
    fn a_pair_that_fits_is_not_truncated() {
        let enc = pair(&load(10), "a", "b c");
        assert_eq!(enc.ids, vec![CLS, A, SEP, B, C, SEP]);
        assert_eq!(enc.type_ids, vec![0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn pairs_truncate_the_passage_only() {
        // 2 query tokens + 10 passage tokens + 3 special > 10: the passage keeps 10 - 3 - 2 = 5.
        let enc = pair(&load(10), "a b", "c d e c d e c d e c");
        assert_eq!(enc.ids, vec![CLS, A, B, SEP, C, D, E, C, D, SEP]);
        assert_eq!(enc.type_ids, vec![0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
        // A query that fills the whole budget leaves no passage token, which passage-only
        // truncation refuses: longest-first keeps the shorter passage and cuts the query.
        let enc = pair(&load(10), "a b c d e a b", "c d e");
        assert_eq!(enc.ids, vec![CLS, A, B, C, D, SEP, C, D, E, SEP]);
    }

    #[test]
    fn a_query_longer_than_the_limit_falls_back_to_longest_first() {
        let tok = load(8);
        // 10 query tokens: passage-only truncation cannot fit 8; longest-first keeps the short
        // passage whole and cuts the query to the remaining 8 - 3 - 2 = 3 tokens.
        let query = "a b c d e a b c d e";
        let enc = pair(&tok, query, "b c");
        assert_eq!(enc.ids, vec![CLS, A, B, C, SEP, B, C, SEP]);
        assert_eq!(enc.type_ids, vec![0, 0, 0, 0, 0, 1, 1, 1]);
        // The same for every pair of a batch, in input order; a long passage is cut too.
        let encs = tok.encode_pairs(query, &["b c", "d d d d d d d d", ""]).expect("encodable");
        assert_eq!(encs[0], enc);
        assert_eq!(encs[1].len(), 8);
        assert_eq!(&encs[1].ids[encs[1].len() - 3..], &[D, D, SEP]);
        assert_eq!(encs[2].ids, vec![CLS, A, B, C, D, E, SEP, SEP]);
        for e in &encs {
            assert!(e.len() <= 8);
            assert_eq!(e.ids.len(), e.type_ids.len());
        }
    }

    #[test]
    fn the_smallest_limit_never_exceeds_max_length() {
        let tok = load(4);
        for (query, passage) in [("a b c d e", "a b c d e"), ("", "a b c d e"), ("a b c d e", ""), ("", "")] {
            let enc = pair(&tok, query, passage);
            assert!(enc.len() <= 4, "{query:?} / {passage:?}: {:?}", enc.ids);
            assert_eq!(enc.ids.first(), Some(&CLS));
        }
        let texts = tok.encode_texts(&["a b c d e"]).expect("encodable");
        assert_eq!(texts[0].ids, vec![CLS, A, B, SEP]);
    }

    #[test]
    fn empty_inputs() {
        let tok = load(16);
        assert!(tok.encode_pairs("q", &[]).expect("encodable").is_empty());
        assert!(tok.encode_texts(&[]).expect("encodable").is_empty());
        let enc = pair(&tok, "", "");
        assert_eq!((enc.ids, enc.type_ids), (vec![CLS, SEP, SEP], vec![0, 0, 1]));
        // Control characters and whitespace are cleaned away; an unknown word is one [UNK].
        let texts = tok.encode_texts(&["", " \t\n", "\u{0}\u{7}", "zzz"]).expect("encodable");
        let ids: Vec<Vec<i64>> = texts.into_iter().map(|e| e.ids).collect();
        assert_eq!(ids, vec![vec![CLS, SEP], vec![CLS, SEP], vec![CLS, SEP], vec![CLS, 1, SEP]]);
    }

    /// The tokenizer of `tokenizer_json` with an XLM-R-style pair template:
    /// `[CLS] A [SEP] [SEP] B [SEP]`, all type ids 0 (4 special tokens).
    fn load_xlmr(max_length: usize) -> TextTokenizer {
        let bert = r#""pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
             {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}]"#;
        let xlmr = r#""pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
             {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}]"#;
        let json = tokenizer_json("[PAD]");
        assert!(json.contains(bert));
        TextTokenizer::from_file(&temp_file(&json.replace(bert, xlmr)), max_length).expect("a valid tokenizer")
    }

    fn windows(tok: &TextTokenizer, query: &str, passage: &str, stride: Option<usize>, cap: usize) -> PairWindows {
        let mut w = tok.encode_windows(query, &[passage], stride, cap, None).expect("encodable");
        assert_eq!(w.len(), 1);
        w.remove(0)
    }

    #[test]
    fn the_pair_template_counts_its_special_tokens() {
        assert_eq!(load(10).pair_specials(), 3);
        assert_eq!(load_xlmr(10).pair_specials(), 4);
        // 10 - 2 query tokens - 3 specials
        assert_eq!(load(10).window_width("a b").expect("encodable"), Some(5));
        assert_eq!(load_xlmr(10).window_width("a b").expect("encodable"), Some(4));
        assert_eq!(load(10).window_width("a b c d e").expect("encodable"), Some(2));
        assert_eq!(load(10).window_width("a b c d e a b").expect("encodable"), None);
    }

    #[test]
    fn windows_are_pairs_of_passage_slices() {
        let tok = load(10);
        // W = 5, stride 2: 8 tokens -> starts 0, 2, 4 ([4, 8) reaches the end)
        let w = windows(&tok, "a b", "c d e c d e c d", Some(2), 8);
        let ids: Vec<Vec<i64>> = w.encs.iter().map(|e| e.ids.clone()).collect();
        assert_eq!(
            ids,
            vec![
                vec![CLS, A, B, SEP, C, D, E, C, D, SEP],
                vec![CLS, A, B, SEP, E, C, D, E, C, SEP],
                vec![CLS, A, B, SEP, D, E, C, D, SEP],
            ]
        );
        assert_eq!(w.encs[2].type_ids, vec![0, 0, 0, 0, 1, 1, 1, 1, 1]);
        // character spans in the passage: "c d e c d" is 0..9, "e c d e c" 4..13, "d e c d" 8..15
        assert_eq!(w.spans, vec![(0, 9), (4, 13), (8, 15)]);
        assert_eq!((w.tokens, w.tokens_scored, w.dropped), (8, 8, 0));
        // the first window is today's truncated pair; the default stride is W // 2 = 2
        assert_eq!(w.encs[0], pair(&tok, "a b", "c d e c d e c d"));
        assert_eq!(windows(&tok, "a b", "c d e c d e c d", None, 8), w);
        // the cap keeps the first windows and counts the rest
        let capped = windows(&tok, "a b", "c d e c d e c d", Some(2), 2);
        assert_eq!((capped.encs.len(), capped.dropped, capped.tokens_scored), (2, 1, 7));
        assert_eq!(capped.encs[..], w.encs[..2]);
        // at most 6 passage tokens read: windows over "c d e c d e" only
        let limited = tok.encode_windows("a b", &["c d e c d e c d"], Some(2), 8, Some(6)).expect("encodable");
        assert_eq!(limited[0].encs.len(), 2);
        assert_eq!(limited[0].encs[1].ids, vec![CLS, A, B, SEP, E, C, D, E, SEP]);
        assert_eq!((limited[0].tokens, limited[0].tokens_scored), (8, 6));
    }

    #[test]
    fn a_passage_that_fits_is_one_window_equal_to_todays_pair() {
        let tok = load(10);
        for passage in ["b c", "", "c d e c d"] {
            let w = windows(&tok, "a b", passage, Some(1), 8);
            assert_eq!(w.encs, vec![pair(&tok, "a b", passage)], "{passage:?}");
            assert_eq!(w.dropped, 0);
        }
        assert_eq!(windows(&tok, "a b", "", None, 8).spans, vec![(0, 0)]);
        // unicode: spans count characters, not bytes
        let w = windows(&tok, "a", "é b", None, 8);
        assert_eq!(w.spans, vec![(0, 3)]);
    }

    #[test]
    fn a_query_that_fills_the_limit_gets_todays_pair_and_no_windows() {
        let tok = load(8);
        let query = "a b c d e a b c d e";
        let w = windows(&tok, query, "b c d e b c d e", None, 8);
        assert_eq!(w.encs, vec![pair(&tok, query, "b c d e b c d e")]);
        assert_eq!((w.tokens, w.dropped, w.encs.len()), (8, 0, 1));
        assert!(w.tokens_scored <= 8);
    }

    #[test]
    fn xlmr_style_windows_use_the_four_token_template() {
        let tok = load_xlmr(10);
        // W = 10 - 2 - 4 = 4, stride 2: 7 tokens -> [0,4) [2,6) [4,7)
        let w = windows(&tok, "a b", "c d e c d e c", None, 8);
        assert_eq!(w.encs.len(), 3);
        assert_eq!(w.encs[0].ids, vec![CLS, A, B, SEP, SEP, C, D, E, C, SEP]);
        assert_eq!(w.encs[2].ids, vec![CLS, A, B, SEP, SEP, D, E, C, SEP]);
        assert!(w.encs.iter().all(|e| e.type_ids.iter().all(|&t| t == 0) && e.len() <= 10));
        assert_eq!(w.encs[0], pair(&tok, "a b", "c d e c d e c"));
    }

    #[test]
    fn a_huge_passage_has_bounded_windows() {
        let tok = load(16);
        let passage = "a b c d e ".repeat(20_000);
        let w = windows(&tok, "a", &passage, None, 8);
        assert_eq!((w.tokens, w.encs.len()), (100_000, 8));
        assert!(w.encs.iter().all(|e| e.len() <= 16));
        assert_eq!(w.tokens_scored, 12 + 7 * 6);
        assert_eq!(w.dropped, 1 + (100_000 - 12usize).div_ceil(6) - 8);
    }

    fn prompted(max_length: usize, format: &str) -> Result<TextTokenizer> {
        let template = PromptTemplate { prefix: "a".into(), format: format.into(), suffix: "b".into(), instruction: "c".into() };
        let path = temp_file(&tokenizer_json("[PAD]"));
        TextTokenizer::from_file(&path, max_length)?.with_prompt(&path, &template)
    }

    #[test]
    fn a_prompt_is_prefix_then_the_formatted_pair_cut_at_its_tail_then_suffix() {
        let tok = prompted(8, "{instruction} {query} {document}").expect("a valid template");
        assert!(tok.has_prompt());
        // budget 8 - 1 - 1 = 6 tokens for "c d e e e e e e" with its [CLS] .. [SEP]: the document's tail goes
        let encs = tok.encode_pairs("d", &["e e e e e e", "e"]).expect("encodable");
        assert_eq!(encs[0].ids, vec![A, CLS, C, D, E, E, SEP, B]);
        assert_eq!(encs[1].ids, vec![A, CLS, C, D, E, SEP, B]);
        assert!(encs.iter().all(|e| e.type_ids.iter().all(|&t| t == 0)));
        // one window per passage, the same prompt; the span covers the document's kept characters
        let w = tok.encode_windows("d", &["e e e e e e", "e"], None, 8, None).expect("encodable");
        assert_eq!(w[0].encs, vec![encs[0].clone()]);
        assert_eq!((w[0].spans.clone(), w[0].tokens, w[0].tokens_scored), (vec![(0, 3)], 6, 2));
        assert_eq!((w[1].spans.clone(), w[1].tokens, w[1].tokens_scored), (vec![(0, 1)], 1, 1));
        // max_tokens_per_doc cuts the document first; a query placed after the document is kept
        let cut = tok.encode_windows("d", &["e e e e e e"], None, 8, Some(1)).expect("encodable");
        assert_eq!(cut[0].encs[0].ids, vec![A, CLS, C, D, E, SEP, B]);
        let after = prompted(8, "{document} {query}").expect("valid");
        assert_eq!(after.encode_pairs("d", &["e e e e e e"]).expect("encodable")[0].ids, vec![A, CLS, E, E, E, E, SEP, B]);
        assert_eq!(tok.window_width("d").expect("encodable"), None);
    }

    #[test]
    fn bad_prompts_are_errors() {
        assert!(matches!(prompted(8, "{query} only"), Err(CoreError::InvalidArgument(m)) if m.contains("{document}")));
        assert!(matches!(prompted(8, "{query} {document} {document}"), Err(CoreError::InvalidArgument(_))));
        // a prefix that fills max_length leaves the pair no token
        let template = PromptTemplate { prefix: "a a a a".into(), format: "{query}{document}".into(), suffix: "".into(), instruction: "".into() };
        let path = temp_file(&tokenizer_json("[PAD]"));
        let err = TextTokenizer::from_file(&path, 4).expect("valid").with_prompt(&path, &template);
        assert!(matches!(err, Err(CoreError::InvalidArgument(m)) if m.contains("no room")));
    }

    #[test]
    fn pad_id_and_vocabulary() {
        let tok = load(16);
        assert_eq!(tok.pad_id(), PAD);
        assert_eq!(tok.vocab_size(), 9);
        assert_eq!(tok.max_length(), 16);
        let angle = TextTokenizer::from_file(&temp_file(&tokenizer_json("<pad>")), 16).expect("valid");
        assert_eq!(angle.pad_id(), 0);
        // No pad token at all: id 0.
        let other = TextTokenizer::from_file(&temp_file(&tokenizer_json("[NOTHING]")), 16).expect("valid");
        assert_eq!(other.pad_id(), 0);
    }

    #[test]
    fn bad_files_and_limits_are_errors() {
        let good = temp_file(&tokenizer_json("[PAD]"));
        assert!(matches!(TextTokenizer::from_file(&good, 3), Err(CoreError::InvalidArgument(_))));
        let missing = std::env::temp_dir().join("lrt-tokenize-test-missing.json");
        assert!(matches!(TextTokenizer::from_file(&missing, 16), Err(CoreError::Model { .. })));
        let broken = temp_file(r#"{"version": "1.0", "model": 42}"#);
        match TextTokenizer::from_file(&broken, 16) {
            Err(CoreError::Model { path, msg }) => {
                assert_eq!(path, broken.display().to_string());
                assert!(msg.contains("not a valid tokenizer.json"), "{msg}");
            }
            other => panic!("expected a model error, got {:?}", other.map(|_| ())),
        }
    }
}
