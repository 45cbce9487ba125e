//! Late interaction (ColBERT): queries and documents become matrices of L2-normalised token
//! embeddings, and a document's score is MaxSim: the sum over query tokens of the best dot product
//! with any document token.
//!
//! Encoding follows PyLate (and Stanford's colbert-ai): the text is tokenized to `length - 1`
//! tokens when a marker token is inserted after [CLS] (`[Q] `/`[D] `, or colbert-ai's
//! `[unused0]`/`[unused1]`), so that the sequence with its marker is at most `length` tokens.
//! Queries with expansion are padded with [MASK] to `query_length` exactly, the expansion tokens
//! attended or not as the model asks, and every query token (expansion included) is kept; without
//! expansion only the query's own tokens are. Documents are truncated at `document_length`, their
//! padding removed and their skiplist tokens (punctuation) dropped after encoding (they are still
//! attended by the other tokens, as in PyLate).

use std::path::Path;

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

use crate::batching::{Batching, PaddedBatch, DEFAULT_TOKEN_BUDGET};
use crate::error::{CoreError, Result};
use crate::runtime::Runtime;
use crate::pool::{default_threads, load_model_dir, BatchOutput, SessionPool};
use crate::pooling::l2_normalise;
use crate::runtime::DYNAMIC;
use crate::tokenize::{Encoded, TextTokenizer};

/// How a late-interaction model encodes (from its card) and how it batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColbertOptions {
    /// Query tokens, marker included; with expansion every query has exactly this many.
    pub query_length: usize,
    /// Most document tokens, marker included (longer documents are truncated).
    pub document_length: usize,
    /// Token inserted after [CLS] in queries / documents (None: no marker).
    pub query_marker: Option<i64>,
    pub document_marker: Option<i64>,
    /// Pad queries with `mask_id` up to `query_length`.
    pub query_expansion: bool,
    /// Whether the other query tokens attend to the expansion tokens.
    pub attend_expansion: bool,
    /// The [MASK] token's id, the expansion token.
    pub mask_id: i64,
    /// Document token ids dropped after encoding (punctuation).
    pub skiplist: Vec<i64>,
    /// Sessions (single-threaded, one per core by default) that run batches in parallel.
    pub threads: usize,
    pub batch_size: usize,
    /// Most padded tokens (rows × longest) in one batch.
    pub token_budget: usize,
    /// The runtime that loads and runs the graph.
    pub runtime: Runtime,
}

impl Default for ColbertOptions {
    fn default() -> Self {
        Self {
            query_length: 32,
            document_length: 180,
            query_marker: None,
            document_marker: None,
            query_expansion: true,
            attend_expansion: false,
            mask_id: 0,
            skiplist: Vec::new(),
            threads: default_threads(),
            batch_size: 32,
            token_budget: DEFAULT_TOKEN_BUDGET * 4,
            runtime: Runtime::default(),
        }
    }
}

/// Token matrices of several texts: `data` holds each text's rows (tokens × dim) one after the other;
/// `lengths[i]` is the token count of text i.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenMatrices {
    pub data: Vec<f32>,
    pub lengths: Vec<usize>,
}

/// The tokenizer's budget for a text that gets a marker: one token less than `length`.
fn text_budget(length: usize, marker: Option<i64>, what: &str) -> Result<usize> {
    let budget = if marker.is_some() { length.checked_sub(1) } else { Some(length) };
    match budget {
        Some(b) if b >= 4 => Ok(b),
        _ => Err(CoreError::InvalidArgument(format!(
            "{what} must leave at least 4 tokens besides the marker, got {length}"
        ))),
    }
}

/// `enc` with `marker` inserted after its first token ([CLS]), type id 0.
fn with_marker(mut enc: Encoded, marker: Option<i64>) -> Encoded {
    if let Some(m) = marker {
        let at = enc.ids.len().min(1);
        enc.ids.insert(at, m);
        enc.type_ids.insert(at, 0);
    }
    enc
}

/// A [rows, seq, dim] output of the batch fed, all values finite.
fn check_token_output(out: &BatchOutput, rows: usize, dim: usize) -> std::result::Result<(), String> {
    let want = [rows as i64, out.seq_len as i64, dim as i64];
    if out.shape.as_slice() != want || out.data.len() != rows * out.seq_len * dim {
        return Err(format!(
            "unexpected output shape {:?} for a batch of {rows} sequences of {} tokens (dim {dim})",
            out.shape, out.seq_len
        ));
    }
    if out.data.iter().any(|x| !x.is_finite()) {
        return Err("the model returned non-finite token embeddings".into());
    }
    Ok(())
}

pub struct ColbertCore {
    model: SessionPool,
    query_tokenizer: TextTokenizer,
    document_tokenizer: TextTokenizer,
    batching: Batching,
    options: ColbertOptions,
    dim: usize,
}

impl ColbertCore {
    pub fn load(dir: &Path, options: &ColbertOptions) -> Result<Self> {
        let batching = Batching::new(options.batch_size, options.token_budget)?;
        let query_budget = text_budget(options.query_length, options.query_marker, "query_length")?;
        let document_budget = text_budget(options.document_length, options.document_marker, "document_length")?;
        let (model, document_tokenizer) = load_model_dir(dir, document_budget, options.threads, true, options.runtime)?;
        let tok_path = dir.join("tokenizer.json");
        let query_tokenizer = TextTokenizer::from_file(&tok_path, query_budget)?;
        let vocab = document_tokenizer.vocab_size();
        let ids = [("query marker", options.query_marker), ("document marker", options.document_marker), ("mask token", Some(options.mask_id))];
        for (what, id) in ids.iter().filter_map(|(w, id)| id.map(|i| (w, i))) {
            if usize::try_from(id).map_or(true, |i| i >= vocab) {
                return Err(CoreError::model(&tok_path, format!("the {what} id {id} is outside the vocabulary of {vocab} tokens")));
            }
        }
        let declared = model.output_dims();
        if !matches!(declared, [_, DYNAMIC, d] if *d == DYNAMIC || *d > 1) {
            return Err(CoreError::model(
                model.path(),
                format!("a late-interaction model must output token embeddings [batch, seq, dim] (dynamic seq); the graph declares {declared:?}"),
            ));
        }
        let out = model.probe(&document_tokenizer, &tok_path)?;
        let dim = match out.shape.as_slice() {
            [1, _, d] => usize::try_from(*d).ok().filter(|&d| d > 1),
            _ => None,
        }
        .ok_or_else(|| CoreError::model(model.path(), format!("probe output has shape {:?}, not [1, seq, dim]", out.shape)))?;
        Ok(Self { model, query_tokenizer, document_tokenizer, batching, options: options.clone(), dim })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn options(&self) -> &ColbertOptions {
        &self.options
    }

    pub fn model(&self) -> &SessionPool {
        &self.model
    }

    /// A query as fed to the model: its ids (marker inserted, [MASK]-expanded) and attention mask.
    fn query_input(&self, enc: Encoded) -> (Encoded, Vec<i64>) {
        let o = &self.options;
        let mut enc = with_marker(enc, o.query_marker);
        let real = enc.len();
        let mut mask = vec![1i64; real];
        if o.query_expansion && real < o.query_length {
            let extra = o.query_length - real;
            enc.ids.extend(std::iter::repeat_n(o.mask_id, extra));
            enc.type_ids.extend(std::iter::repeat_n(0, extra));
            mask.extend(std::iter::repeat_n(i64::from(o.attend_expansion), extra));
        }
        (enc, mask)
    }

    /// Token ids of each query as fed (marker, expansion) and of each document (marker), for parity checks.
    pub fn query_ids(&self, queries: &[&str]) -> Result<Vec<(Vec<i64>, Vec<i64>)>> {
        let encs = self.query_tokenizer.encode_texts(queries)?;
        Ok(encs.into_iter().map(|e| self.query_input(e)).map(|(e, m)| (e.ids, m)).collect())
    }

    pub fn document_ids(&self, documents: &[&str]) -> Result<Vec<Vec<i64>>> {
        let encs = self.document_tokenizer.encode_texts(documents)?;
        Ok(encs.into_iter().map(|e| with_marker(e, self.options.document_marker).ids).collect())
    }

    /// Query token matrices: every token with expansion (query_length rows each), else the query's own.
    pub fn encode_queries(&self, queries: &[&str]) -> Result<TokenMatrices> {
        let mut out = TokenMatrices::default();
        for (_, window) in self.batching.windows(queries) {
            let inputs: Vec<(Encoded, Vec<i64>)> =
                self.query_tokenizer.encode_texts(window)?.into_iter().map(|e| self.query_input(e)).collect();
            let encs: Vec<Encoded> = inputs.iter().map(|(e, _)| e.clone()).collect();
            let batches = self.batching.batches(&encs, self.model.sessions());
            let padded: Vec<PaddedBatch> = batches
                .iter()
                .map(|b| {
                    let refs: Vec<&Encoded> = b.iter().map(|&i| &encs[i]).collect();
                    let mut p = PaddedBatch::new(&refs, self.options.mask_id);
                    for (row, &i) in b.iter().enumerate() {
                        let mask = &inputs[i].1;
                        p.mask[row * p.seq_len..row * p.seq_len + mask.len()].copy_from_slice(mask);
                    }
                    p
                })
                .collect();
            let outs = self.model.run_many_padded(&padded)?;
            self.collect(&batches, &outs, window.len(), |i| encs[i].len(), |_, _| true, &mut out)?;
        }
        Ok(out)
    }

    /// Document token matrices: padding removed, skiplist tokens dropped, truncated at document_length.
    pub fn encode_documents(&self, documents: &[&str]) -> Result<TokenMatrices> {
        let mut out = TokenMatrices::default();
        let skip = &self.options.skiplist;
        for (_, window) in self.batching.windows(documents) {
            let encs: Vec<Encoded> = self
                .document_tokenizer
                .encode_texts(window)?
                .into_iter()
                .map(|e| with_marker(e, self.options.document_marker))
                .collect();
            let batches = self.batching.batches(&encs, self.model.sessions());
            let refs: Vec<Vec<&Encoded>> = batches.iter().map(|b| b.iter().map(|&i| &encs[i]).collect()).collect();
            let outs = self.model.run_many(&refs, self.options.mask_id)?;
            self.collect(&batches, &outs, window.len(), |i| encs[i].len(), |i, t| !skip.contains(&encs[i].ids[t]), &mut out)?;
        }
        Ok(out)
    }

    /// Append to `out`, in input order, the first `len(i)` tokens of each of `count` texts that `keep(i, t)`
    /// accepts, each row L2-normalised. Every output is checked first.
    fn collect(
        &self,
        batches: &[Vec<usize>],
        outs: &[BatchOutput],
        count: usize,
        len: impl Fn(usize) -> usize,
        keep: impl Fn(usize, usize) -> bool,
        out: &mut TokenMatrices,
    ) -> Result<()> {
        let dim = self.dim;
        let mut rows: Vec<Vec<f32>> = vec![Vec::new(); count];
        for (batch, o) in batches.iter().zip(outs) {
            check_token_output(o, batch.len(), dim).map_err(|msg| self.model.inference_error(msg))?;
            for (j, &i) in batch.iter().enumerate() {
                let n = len(i).min(o.seq_len);
                let text = &mut rows[i];
                for t in (0..n).filter(|&t| keep(i, t)) {
                    let start = (j * o.seq_len + t) * dim;
                    let mut row = o.data[start..start + dim].to_vec();
                    l2_normalise(&mut row);
                    text.extend_from_slice(&row);
                }
            }
        }
        for text in rows {
            out.lengths.push(text.len() / dim);
            out.data.extend_from_slice(&text);
        }
        Ok(())
    }

    /// MaxSim scores of `documents` for `query`, in input order.
    pub fn score(&self, query: &str, documents: &[&str]) -> Result<Vec<f32>> {
        let q = self.encode_queries(&[query])?;
        let d = self.encode_documents(documents)?;
        maxsim_many(&q.data, &d.data, &d.lengths, self.dim)
    }
}

/// Document token rows in the form they are held: float32, float16 bits (the index store's default),
/// or int8 with one float32 scale per dimension (value = int8 × scale[d]).
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
    I8 { data: &'a [i8], scale: &'a [f32] },
}

impl Rows<'_> {
    fn len(&self) -> usize {
        match self {
            Rows::F32(d) => d.len(),
            Rows::F16(d) => d.len(),
            Rows::I8 { data, .. } => data.len(),
        }
    }

    /// Rows `start..end` (dim values each) as float32 into `out` (int8 unscaled: the scale is folded into the query).
    fn widen(&self, start: usize, end: usize, dim: usize, out: &mut Vec<f32>) {
        let range = start * dim..end * dim;
        match self {
            Rows::F32(d) => out.extend_from_slice(&d[range]),
            Rows::F16(d) => {
                let at = out.len();
                out.resize(at + range.len(), 0.0);
                d[range].reinterpret_cast::<f16>().convert_to_f32_slice(&mut out[at..]);
            }
            Rows::I8 { data, .. } => out.extend(data[range].iter().map(|&v| f32::from(v))),
        }
    }
}

/// Query rows per GEMM chunk of document tokens: sims of a chunk (nq × CHUNK_TOKENS) stay in L2.
const CHUNK_TOKENS: usize = 2048;

/// MaxSim of one query matrix (nq × dim) against each document matrix in `docs` (their token counts
/// in `lengths`): Σ over query tokens of the largest dot product with a document token; 0 for a
/// document without tokens.
pub fn maxsim_many(query: &[f32], docs: &[f32], lengths: &[usize], dim: usize) -> Result<Vec<f32>> {
    let mut spans = Vec::with_capacity(lengths.len());
    let mut offset = 0usize;
    for &n in lengths {
        let end = offset.checked_add(n).ok_or_else(|| CoreError::InvalidArgument("document lengths overflow".into()))?;
        spans.push((offset, end));
        offset = end;
    }
    if dim == 0 || offset.checked_mul(dim) != Some(docs.len()) {
        return Err(CoreError::InvalidArgument(format!(
            "the documents hold {} values, their lengths say {offset} tokens of dim {dim}",
            docs.len()
        )));
    }
    maxsim_spans(query, Rows::F32(docs), &spans, dim, 1)
}

/// MaxSim of one query matrix (nq × dim) against the documents whose rows are `rows[start..end]` for
/// each `(start, end)` of `spans`, in span order; documents split over `threads` threads. Each chunk
/// of documents is one matrix product Q·Dᵀ (ndarray → matrixmultiply's sgemm) then a row-wise max per
/// document and the sum.
pub fn maxsim_spans(query: &[f32], rows: Rows<'_>, spans: &[(usize, usize)], dim: usize, threads: usize) -> Result<Vec<f32>> {
    if dim == 0 || !query.len().is_multiple_of(dim) {
        return Err(CoreError::InvalidArgument(format!("the query holds {} values, not a multiple of dim {dim}", query.len())));
    }
    if !rows.len().is_multiple_of(dim) {
        return Err(CoreError::InvalidArgument(format!("the document rows hold {} values, not a multiple of dim {dim}", rows.len())));
    }
    let total = rows.len() / dim;
    if let Some((i, &(s, e))) = spans.iter().enumerate().find(|(_, &(s, e))| s > e || e > total) {
        return Err(CoreError::InvalidArgument(format!("document {i}: rows {s}..{e} do not fit the {total} stored rows")));
    }
    let mut q = query.to_vec();
    if let Rows::I8 { scale, .. } = rows {
        if scale.len() != dim {
            return Err(CoreError::InvalidArgument(format!("the int8 scale holds {} values, not dim {dim}", scale.len())));
        }
        // Σ_d q[d]·(x[d]·scale[d]) = Σ_d (q[d]·scale[d])·x[d]: scale the query once, not every row
        for row in q.chunks_exact_mut(dim) {
            row.iter_mut().zip(scale).for_each(|(v, &s)| *v *= s);
        }
    }
    let nq = q.len() / dim;
    if nq == 0 {
        return Ok(vec![0.0; spans.len()]);
    }
    let parts = split_by_tokens(spans, threads.max(1));
    if parts.len() <= 1 {
        return maxsim_part(&q, nq, rows, spans, dim);
    }
    let q = &q;
    let scores = std::thread::scope(|scope| {
        let handles: Vec<_> = parts.iter().map(|p| scope.spawn(move || maxsim_part(q, nq, rows, p, dim))).collect();
        handles.into_iter().map(|h| h.join()).collect::<std::result::Result<Vec<_>, _>>()
    })
    .map_err(|_| CoreError::Inference("a MaxSim thread panicked".into()))?;
    Ok(scores.into_iter().collect::<Result<Vec<_>>>()?.concat())
}

/// `spans` cut into at most `parts` consecutive runs of about equal token counts (none empty).
fn split_by_tokens(spans: &[(usize, usize)], parts: usize) -> Vec<&[(usize, usize)]> {
    let tokens: usize = spans.iter().map(|(s, e)| e - s).sum();
    if parts <= 1 || spans.len() < 2 || tokens < CHUNK_TOKENS {
        return vec![spans];
    }
    let per = tokens.div_ceil(parts);
    let mut out = Vec::with_capacity(parts);
    let (mut begin, mut acc) = (0, 0);
    for (i, (s, e)) in spans.iter().enumerate() {
        acc += e - s;
        if acc >= per && out.len() + 1 < parts {
            out.push(&spans[begin..=i]);
            begin = i + 1;
            acc = 0;
        }
    }
    if begin < spans.len() {
        out.push(&spans[begin..]);
    }
    out
}

/// One thread's MaxSim: documents gathered into chunks of about CHUNK_TOKENS rows, one GEMM per chunk.
fn maxsim_part(q: &[f32], nq: usize, rows: Rows<'_>, spans: &[(usize, usize)], dim: usize) -> Result<Vec<f32>> {
    let shape = |e: ndarray::ShapeError| CoreError::InvalidArgument(format!("maxsim: {e}"));
    let qv = ArrayView2::from_shape((nq, dim), q).map_err(shape)?;
    let mut scores = Vec::with_capacity(spans.len());
    let mut buf: Vec<f32> = Vec::new();
    let mut sims: Vec<f32> = Vec::new();
    let mut first = 0;
    while first < spans.len() {
        let mut last = first;
        let mut n = 0;
        while last < spans.len() && (last == first || n + spans[last].1 - spans[last].0 <= CHUNK_TOKENS) {
            n += spans[last].1 - spans[last].0;
            last += 1;
        }
        let chunk = &spans[first..last];
        first = last;
        if n == 0 {
            scores.extend(std::iter::repeat_n(0.0, chunk.len()));
            continue;
        }
        // float32 rows whose documents are consecutive are read in place; the rest are widened into `buf`
        let contiguous = chunk.windows(2).all(|w| w[0].1 == w[1].0);
        let data: &[f32] = match rows {
            Rows::F32(d) if contiguous => &d[chunk[0].0 * dim..chunk[chunk.len() - 1].1 * dim],
            _ => {
                buf.clear();
                for &(s, e) in chunk {
                    rows.widen(s, e, dim, &mut buf);
                }
                &buf
            }
        };
        let dv = ArrayView2::from_shape((n, dim), data).map_err(shape)?;
        sims.clear();
        sims.resize(nq * n, 0.0);
        let mut sv = ArrayViewMut2::from_shape((nq, n), &mut sims[..]).map_err(shape)?;
        general_mat_mul(1.0, &qv, &dv.t(), 0.0, &mut sv);
        let mut at = 0;
        for &(s, e) in chunk {
            let len = e - s;
            let score = if len == 0 {
                0.0
            } else {
                sims.chunks_exact(n).map(|row| row[at..at + len].iter().copied().fold(f32::NEG_INFINITY, f32::max)).sum()
            };
            scores.push(score);
            at += len;
        }
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxsim_sums_each_query_tokens_best_match() {
        // query: two tokens of dim 2; doc A: three tokens, doc B: none, doc C: one
        let query = [1.0, 0.0, 0.0, 1.0];
        let docs = [0.5, 0.1, 0.2, 0.9, -1.0, 0.0, 0.3, 0.3];
        let scores = maxsim_many(&query, &docs, &[3, 0, 1], 2).expect("valid shapes");
        assert_eq!(scores, vec![0.5 + 0.9, 0.0, 0.3 + 0.3]);
        assert!(maxsim_many(&query, &docs, &[3], 2).is_err());
        assert!(maxsim_many(&[1.0, 2.0, 3.0], &docs, &[4], 2).is_err());
        assert_eq!(maxsim_many(&[], &[], &[0], 2).expect("empty"), vec![0.0]);
    }

    #[test]
    fn markers_go_after_the_first_token() {
        let enc = Encoded { ids: vec![2, 7, 8, 3], type_ids: vec![0; 4] };
        assert_eq!(with_marker(enc.clone(), Some(9)).ids, vec![2, 9, 7, 8, 3]);
        assert_eq!(with_marker(enc.clone(), None), enc);
        assert_eq!(text_budget(32, Some(1), "query_length").ok(), Some(31));
        assert_eq!(text_budget(32, None, "query_length").ok(), Some(32));
        assert!(text_budget(4, Some(1), "query_length").is_err());
    }

    #[test]
    fn token_outputs_must_fit_the_batch() {
        let out = BatchOutput { shape: vec![2, 3, 4], data: vec![0.1; 24], mask: vec![1; 6], seq_len: 3 };
        assert!(check_token_output(&out, 2, 4).is_ok());
        assert!(check_token_output(&out, 2, 8).is_err());
        let nan = BatchOutput { data: vec![f32::NAN; 24], ..out };
        assert_eq!(check_token_output(&nan, 2, 4).unwrap_err(), "the model returned non-finite token embeddings");
    }
}
