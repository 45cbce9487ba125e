//! Reciprocal Rank Fusion: score(d) = Σ_r weight_r / (k + rank_r(d)), ranks start at 1.
//!
//! This is the definition used by OpenSearch's `score-ranker-processor`. Ties are broken
//! deterministically: higher score first, then the better (smaller) best rank, then the
//! earlier run that gave that best rank, then the id.

use std::collections::HashMap;

use crate::error::{CoreError, Result};

struct Acc {
    score: f64,
    best_rank: usize,
    best_run: usize,
}

/// Fuse ranked id lists. A duplicate id within one run counts once, at its best rank.
pub fn rrf(runs: &[Vec<String>], k: f64, weights: Option<&[f64]>, top_k: Option<usize>) -> Result<Vec<(String, f64)>> {
    if !k.is_finite() || k < 0.0 {
        return Err(CoreError::InvalidArgument(format!("rrf: k must be a finite number >= 0, got {k}")));
    }
    if let Some(w) = weights {
        if w.len() != runs.len() {
            return Err(CoreError::InvalidArgument(format!(
                "rrf: weights has {} entries but there are {} runs",
                w.len(),
                runs.len()
            )));
        }
        if let Some((i, bad)) = w.iter().enumerate().find(|(_, x)| !x.is_finite() || **x < 0.0) {
            return Err(CoreError::InvalidArgument(format!("rrf: weights[{i}] must be finite and >= 0, got {bad}")));
        }
    }
    let mut acc: HashMap<&str, Acc> = HashMap::new();
    for (run_idx, run) in runs.iter().enumerate() {
        let weight = weights.map_or(1.0, |w| w[run_idx]);
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::with_capacity(run.len());
        for (pos, id) in run.iter().enumerate() {
            if !seen.insert(id.as_str()) {
                continue;
            }
            let rank = pos + 1;
            let contrib = weight / (k + rank as f64);
            let entry = acc.entry(id.as_str()).or_insert(Acc { score: 0.0, best_rank: usize::MAX, best_run: usize::MAX });
            entry.score += contrib;
            if rank < entry.best_rank {
                entry.best_rank = rank;
                entry.best_run = run_idx;
            }
        }
    }
    let mut fused: Vec<(&str, Acc)> = acc.into_iter().collect();
    fused.sort_by(|(id_a, a), (id_b, b)| {
        b.score
            .total_cmp(&a.score)
            .then(a.best_rank.cmp(&b.best_rank))
            .then(a.best_run.cmp(&b.best_run))
            .then(id_a.cmp(id_b))
    });
    let limit = top_k.unwrap_or(fused.len());
    Ok(fused.into_iter().take(limit).map(|(id, a)| (id.to_string(), a.score)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(v: &[&[&str]]) -> Vec<Vec<String>> {
        v.iter().map(|r| r.iter().map(|s| s.to_string()).collect()).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn two_runs_hand_computed() {
        // d1: 1/61 ; d2: 1/62 + 1/61 ; d3: 1/62
        let out = rrf(&runs(&[&["d1", "d2"], &["d2", "d3"]]), 60.0, None, None).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].0, "d2");
        assert!(close(out[0].1, 1.0 / 62.0 + 1.0 / 61.0));
        assert_eq!(out[1].0, "d1");
        assert!(close(out[1].1, 1.0 / 61.0));
        assert_eq!(out[2].0, "d3");
        assert!(close(out[2].1, 1.0 / 62.0));
    }

    #[test]
    fn weights_and_k() {
        // k = 1: a: 2/(1+1) = 1.0 ; b: 2/(1+2) + 0.5/(1+1) = 0.9166.. ; c: 0.5/(1+2) = 0.1666..
        let out = rrf(&runs(&[&["a", "b"], &["b", "c"]]), 1.0, Some(&[2.0, 0.5]), None).unwrap();
        let got: Vec<&str> = out.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(got, vec!["a", "b", "c"]);
        assert!(close(out[0].1, 1.0));
        assert!(close(out[1].1, 2.0 / 3.0 + 0.25));
        assert!(close(out[2].1, 0.5 / 3.0));
    }

    #[test]
    fn ties_break_by_best_rank_then_run_then_id() {
        // x is rank 1 in run 0, y rank 1 in run 1: equal scores, run 0 wins.
        let out = rrf(&runs(&[&["x"], &["y"]]), 60.0, None, None).unwrap();
        assert_eq!(out[0].0, "x");
        assert_eq!(out[1].0, "y");
        // p: 1/61 + 1/64 and q: 1/64 + 1/61 tie; both have best rank 1, p got it in run 0.
        let out = rrf(&runs(&[&["p", "a", "b", "q"], &["q", "c", "d", "p"]]), 60.0, None, None).unwrap();
        assert_eq!(out[0].0, "p");
        assert_eq!(out[1].0, "q");
        // k = 0: x = 1/1, b = 1/1, a = 1/2 + 1/2: a three-way tie at exactly 1.0;
        // x and b have best rank 1 (runs 0 and 1), a only rank 2.
        let out = rrf(&runs(&[&["x", "a"], &["b", "a"]]), 0.0, None, None).unwrap();
        let got: Vec<&str> = out.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(got, vec!["x", "b", "a"]);
        assert!(out.iter().all(|(_, s)| close(*s, 1.0)));
    }

    #[test]
    fn duplicates_in_a_run_count_once() {
        let out = rrf(&runs(&[&["a", "a", "b"]]), 60.0, None, None).unwrap();
        assert!(close(out[0].1, 1.0 / 61.0));
        // b keeps its position-based rank 3
        assert!(close(out[1].1, 1.0 / 63.0));
    }

    #[test]
    fn top_k_and_empty() {
        let out = rrf(&runs(&[&["a", "b", "c"]]), 60.0, None, Some(2)).unwrap();
        assert_eq!(out.len(), 2);
        assert!(rrf(&[], 60.0, None, None).unwrap().is_empty());
    }

    #[test]
    fn bad_arguments() {
        assert!(rrf(&runs(&[&["a"]]), -1.0, None, None).is_err());
        assert!(rrf(&runs(&[&["a"]]), f64::NAN, None, None).is_err());
        assert!(rrf(&runs(&[&["a"]]), 60.0, Some(&[1.0, 2.0]), None).is_err());
        assert!(rrf(&runs(&[&["a"]]), 60.0, Some(&[-1.0]), None).is_err());
    }
}
