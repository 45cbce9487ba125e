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
