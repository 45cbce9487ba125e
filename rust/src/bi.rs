//! Bi-encoder embeddings: one pooled (and, unless asked not to be, L2-normalised) vector per
//! text, row-major, in input order.

use std::path::Path;

use crate::batching::{Batching, DEFAULT_TOKEN_BUDGET};
use crate::error::{CoreError, Result};
use crate::runtime::Runtime;
use crate::pool::{default_threads, load_model_dir, BatchOutput, SessionPool};
use crate::pooling::{l2_normalise, pool_row, Pooling};
use crate::runtime::DYNAMIC;
use crate::tokenize::{Encoded, TextTokenizer};

/// How a bi-encoder is loaded, batches its calls and pools its outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BiEncoderOptions {
    /// Longest text, in tokens (longer ones are truncated).
    pub max_length: usize,
    /// Sessions (single-threaded, one per core by default) that run batches in parallel.
    pub threads: usize,
    /// Most texts in one batch.
    pub batch_size: usize,
    /// Most padded tokens (rows × longest) in one batch.
    pub token_budget: usize,
    pub pooling: Pooling,
    /// L2-normalise each embedding.
    pub normalize: bool,
    /// The runtime that loads and runs the graph.
    pub runtime: Runtime,
}

impl Default for BiEncoderOptions {
    fn default() -> Self {
        Self {
            max_length: 512,
            threads: default_threads(),
            batch_size: 32,
            token_budget: DEFAULT_TOKEN_BUDGET,
            pooling: Pooling::Mean,
            normalize: true,
            runtime: Runtime::default(),
        }
    }
}

pub struct BiEncoderCore {
    model: SessionPool,
    tokenizer: TextTokenizer,
    batching: Batching,
    pooling: Pooling,
    normalize: bool,
    /// Embedding dimension, from the load-time probe.
    dim: usize,
}

/// A bi-encoder batch output (already checked against the declared output) must be
/// [batch, seq_len, dim] (token embeddings of the sequences fed) or [batch, dim] (pooled), and
/// finite: `pool_row` indexes it on that basis.
fn check_embedding_shape(out: &BatchOutput, batch: usize, dim: usize) -> std::result::Result<(), String> {
    let (b, s, d) = (batch as i64, out.seq_len as i64, dim as i64);
    let fits = match out.shape.as_slice() {
        [rows, seq, width] => *rows == b && *seq == s && *width == d,
        [rows, width] => *rows == b && *width == d,
        _ => false,
    };
    if !fits || out.mask.len() != batch * out.seq_len {
        return Err(format!(
            "unexpected output shape {:?} for a batch of {batch} sequences of {} tokens (dim {dim})",
            out.shape, out.seq_len
        ));
    }
    if out.data.iter().any(|x| !x.is_finite()) {
        return Err("the model returned non-finite embedding values".into());
    }
    Ok(())
}

fn check_embeddings(model: &SessionPool, out: &BatchOutput, batch: usize, dim: usize) -> std::result::Result<(), String> {
    model.check_output(out, batch)?;
    check_embedding_shape(out, batch, dim)
}

/// The embedding dimension of a probe output for one sequence of `n` tokens: [1, n, dim] or
/// [1, dim], dim above 1.
fn probe_dim(shape: &[i64], n: i64) -> Option<usize> {
    let dim = match shape {
        [1, seq, d] if *seq == n => usize::try_from(*d).ok(),
        [1, d] => usize::try_from(*d).ok(),
        _ => None,
    };
    dim.filter(|&d| d > 1)
}

impl BiEncoderCore {
    pub fn load(dir: &Path, options: &BiEncoderOptions) -> Result<Self> {
        let batching = Batching::new(options.batch_size, options.token_budget)?;
        let (model, tokenizer) = load_model_dir(dir, options.max_length, options.threads, true, options.runtime)?;
        let declared = model.output_dims();
        // An embedding of one dimension is a score, not an embedding: a cross-encoder graph.
        if !matches!(declared, [_, DYNAMIC, d] | [_, d] if *d == DYNAMIC || *d > 1) {
            return Err(CoreError::model(
                model.path(),
                format!(
                    "a bi-encoder must output token embeddings [batch, seq, dim] (dynamic seq) or pooled [batch, dim]; the graph declares {declared:?}"
                ),
            ));
        }
        let out = model.probe(&tokenizer, &dir.join("tokenizer.json"))?;
        let n = tokenizer.max_length() as i64;
        let Some(dim) = probe_dim(&out.shape, n) else {
            return Err(CoreError::model(
                model.path(),
                format!(
                    "a bi-encoder must output token embeddings [batch, seq, dim] or pooled [batch, dim]; got shape {:?} for one sequence of {n} tokens",
                    out.shape
                ),
            ));
        };
        Ok(Self { model, tokenizer, batching, pooling: options.pooling, normalize: options.normalize, dim })
    }

    crate::pool::encoder_accessors!();

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    pub fn normalize(&self) -> bool {
        self.normalize
    }

    /// Embedding dimension (the last dimension of the load-time probe's output).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Pooled (mean over the attention mask, or the first token) and, if the model asks for it,
    /// L2-normalised embeddings, row-major (n × dim). A pooled output [batch, dim] is taken as is.
    /// Every batch's output is checked (shape against the batch, its sequence length, the declared
    /// output and `dim`; finite values) before it is pooled.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<f32>> {
        let dim = self.dim;
        let mut out_rows = vec![0f32; texts.len() * dim];
        for (base, window) in self.batching.windows(texts) {
            let encs = self.tokenizer.encode_texts(window)?;
            let batches = self.batching.batches(&encs, self.model.sessions());
            let refs: Vec<Vec<&Encoded>> = batches.iter().map(|b| b.iter().map(|&i| &encs[i]).collect()).collect();
            let outs = self.model.run_many(&refs, self.tokenizer.pad_id())?;
            for (batch, out) in batches.iter().zip(outs) {
                check_embeddings(&self.model, &out, batch.len(), dim).map_err(|msg| self.model.inference_error(msg))?;
                for (j, &i) in batch.iter().enumerate() {
                    let row = &mut out_rows[(base + i) * dim..(base + i + 1) * dim];
                    pool_row(&out, j, dim, self.pooling, row);
                    if self.normalize {
                        l2_normalise(row);
                    }
                }
            }
        }
        Ok(out_rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(shape: Vec<i64>, n: usize, seq_len: usize, rows: usize) -> BatchOutput {
        BatchOutput { shape, data: vec![0.5; n], mask: vec![1; rows * seq_len], seq_len }
    }

    #[test]
    fn embedding_outputs_must_fit_the_batch_fed() {
        assert!(check_embedding_shape(&out(vec![2, 3, 4], 24, 3, 2), 2, 4).is_ok());
        assert!(check_embedding_shape(&out(vec![2, 4], 8, 3, 2), 2, 4).is_ok());
        let wrong_seq = check_embedding_shape(&out(vec![2, 5, 4], 40, 3, 2), 2, 4).unwrap_err();
        assert_eq!(wrong_seq, "unexpected output shape [2, 5, 4] for a batch of 2 sequences of 3 tokens (dim 4)");
        assert!(check_embedding_shape(&out(vec![2, 3, 8], 48, 3, 2), 2, 4).is_err());
        assert!(check_embedding_shape(&out(vec![2, 3, 4, 1], 24, 3, 2), 2, 4).is_err());
        let mut nan = out(vec![1, 2], 2, 1, 1);
        nan.data[1] = f32::INFINITY;
        assert_eq!(check_embedding_shape(&nan, 1, 2).unwrap_err(), "the model returned non-finite embedding values");
    }

    #[test]
    fn the_probe_gives_the_embedding_dimension() {
        assert_eq!(probe_dim(&[1, 8, 384], 8), Some(384));
        assert_eq!(probe_dim(&[1, 768], 8), Some(768));
        assert_eq!(probe_dim(&[1, 7, 384], 8), None); // not the sequence fed
        assert_eq!(probe_dim(&[1, 1], 8), None); // a score, not an embedding
        assert_eq!(probe_dim(&[2, 384], 8), None);
        assert_eq!(probe_dim(&[1, -1], 8), None);
    }

    #[test]
    fn options_default_to_the_python_defaults() {
        let o = BiEncoderOptions::default();
        assert_eq!((o.batch_size, o.token_budget, o.pooling, o.normalize), (32, DEFAULT_TOKEN_BUDGET, Pooling::Mean, true));
        assert!(o.threads >= 1);
    }
}
