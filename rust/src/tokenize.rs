//! Pair and single-text encoding with the `tokenizers` crate.
//!
//! Padding and truncation stored inside `tokenizer.json` are discarded on load (files written by
//! `save_pretrained` often carry a fixed 128 of both) and replaced by ours: no padding here (the
//! encoder pads each batch to its own longest sequence) and truncation of the passage only.

use std::path::Path;

use tokenizers::{Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{CoreError, Result};

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

pub struct TextTokenizer {
    /// Truncates only the second sequence (the passage); used for pairs.
    only_second: Tokenizer,
    /// Truncates the longest sequence first; used for single texts and for pairs whose
    /// query alone does not fit (where `only_second` has nothing left to cut).
    longest_first: Tokenizer,
    max_length: usize,
    pad_id: i64,
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
        let only_second = with_truncation(base.clone(), path, max_length, TruncationStrategy::OnlySecond)?;
        let longest_first = with_truncation(base, path, max_length, TruncationStrategy::LongestFirst)?;
        Ok(Self { only_second, longest_first, max_length, pad_id })
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
