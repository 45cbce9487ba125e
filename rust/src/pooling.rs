//! How a bi-encoder turns a batch output into one vector per text: CLS or mean pooling of token
//! embeddings (an already pooled output is taken as is), then L2 normalisation.

use crate::error::{CoreError, Result};
use crate::pool::BatchOutput;

/// How a bi-encoder turns token embeddings into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the attention mask.
    Mean,
    /// The first token's ([CLS]) embedding.
    Cls,
}

impl Pooling {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "mean" => Ok(Self::Mean),
            "cls" => Ok(Self::Cls),
            other => Err(CoreError::InvalidArgument(format!("pooling must be 'mean' or 'cls', got {other:?}"))),
        }
    }

    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
        }
    }
}

/// Pool row `row` of a checked batch output into `dst` (zeroed, `dim` long): token embeddings
/// [batch, seq, dim] by `pooling`; an already pooled output [batch, dim] is copied.
pub fn pool_row(out: &BatchOutput, row: usize, dim: usize, pooling: Pooling, dst: &mut [f32]) {
    match (out.shape.len(), pooling) {
        (3, Pooling::Mean) => mean_pool(out, row, dim, dst),
        (3, Pooling::Cls) => {
            let start = row * out.seq_len * dim;
            dst.copy_from_slice(&out.data[start..start + dim]);
        }
        _ => dst.copy_from_slice(&out.data[row * dim..(row + 1) * dim]),
    }
}

/// Mean of row `row`'s token embeddings over its attention mask, accumulated into `dst`.
pub fn mean_pool(out: &BatchOutput, row: usize, dim: usize, dst: &mut [f32]) {
    let s = out.seq_len;
    let mut count = 0f32;
    for t in 0..s {
        if out.mask[row * s + t] == 0 {
            continue;
        }
        count += 1.0;
        let src = &out.data[(row * s + t) * dim..(row * s + t + 1) * dim];
        for (d, v) in dst.iter_mut().zip(src) {
            *d += *v;
        }
    }
    let denom = count.max(1e-9);
    for d in dst.iter_mut() {
        *d /= denom;
    }
}

pub fn l2_normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    for x in v.iter_mut() {
        *x /= norm;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_ignores_padding_and_normalises() {
        // one row, seq 3 (last is padding), dim 2
        let out = BatchOutput { shape: vec![1, 3, 2], data: vec![1.0, 0.0, 3.0, 0.0, 100.0, 100.0], mask: vec![1, 1, 0], seq_len: 3 };
        let mut row = vec![0.0; 2];
        mean_pool(&out, 0, 2, &mut row);
        assert_eq!(row, vec![2.0, 0.0]);
        l2_normalise(&mut row);
        assert_eq!(row, vec![1.0, 0.0]);
    }

    #[test]
    fn cls_pooling_takes_each_rows_first_token() {
        // two rows, seq 2, dim 2
        let out = BatchOutput {
            shape: vec![2, 2, 2],
            data: vec![1.0, 2.0, 9.0, 9.0, 3.0, 4.0, 7.0, 7.0],
            mask: vec![1, 1, 1, 0],
            seq_len: 2,
        };
        let mut row = vec![0.0; 2];
        pool_row(&out, 1, 2, Pooling::Cls, &mut row);
        assert_eq!(row, vec![3.0, 4.0]);
        let mut row = vec![0.0; 2]; // mean pooling accumulates into a zeroed row
        pool_row(&out, 1, 2, Pooling::Mean, &mut row);
        assert_eq!(row, vec![3.0, 4.0]); // the padded token is ignored
        assert!(Pooling::parse("max").is_err());
    }

    #[test]
    fn a_pooled_output_is_copied_and_names_round_trip() {
        let out = BatchOutput { shape: vec![2, 2], data: vec![1.0, 2.0, 3.0, 4.0], mask: vec![1, 1], seq_len: 1 };
        for pooling in [Pooling::Mean, Pooling::Cls] {
            let mut row = vec![0.0; 2];
            pool_row(&out, 1, 2, pooling, &mut row);
            assert_eq!(row, vec![3.0, 4.0]);
            assert_eq!(Pooling::parse(pooling.name()).ok(), Some(pooling));
        }
        let mut zero = vec![0.0; 3];
        l2_normalise(&mut zero); // a zero vector stays zero, no NaN
        assert_eq!(zero, vec![0.0; 3]);
        match Pooling::parse("max") {
            Err(CoreError::InvalidArgument(msg)) => assert_eq!(msg, "pooling must be 'mean' or 'cls', got \"max\""),
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }
}
