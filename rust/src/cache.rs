//! Bounded LRU cache of re-ranker scores keyed by a 128-bit hash of
//! (model fingerprint, query, passage). Thread-safe; counts hits, misses and evictions.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use parking_lot::Mutex;
use xxhash_rust::xxh3::Xxh3;

use crate::error::{CoreError, Result};

/// Hash of (fingerprint, query, passage). Each part is length-prefixed so that
/// ("ab", "c") and ("a", "bc") never collide by construction.
pub fn cache_key(fingerprint: &str, query: &str, passage: &str) -> u128 {
    let mut h = Xxh3::new();
    for part in [fingerprint, query, passage] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.digest128()
}

pub struct ScoreCache {
    inner: Mutex<LruCache<u128, f32>>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl ScoreCache {
    pub fn new(capacity: usize) -> Result<Self> {
        let cap = NonZeroUsize::new(capacity)
            .ok_or_else(|| CoreError::InvalidArgument("ScoreCache: capacity must be at least 1 entry".into()))?;
        Ok(Self {
            inner: Mutex::new(LruCache::new(cap)),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Look up many keys under one lock; counts a hit or a miss for each.
    pub fn get_many(&self, keys: &[u128]) -> Vec<Option<f32>> {
        let mut guard = self.inner.lock();
        let out: Vec<Option<f32>> = keys.iter().map(|k| guard.get(k).copied()).collect();
        drop(guard);
        let hits = out.iter().filter(|v| v.is_some()).count() as u64;
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses.fetch_add(keys.len() as u64 - hits, Ordering::Relaxed);
        out
    }

    /// Insert many entries under one lock; counts evictions of other keys.
    pub fn put_many(&self, items: &[(u128, f32)]) {
        let mut guard = self.inner.lock();
        let mut evicted = 0u64;
        for &(k, v) in items {
            if let Some((old_k, _)) = guard.push(k, v) {
                if old_k != k {
                    evicted += 1;
                }
            }
        }
        drop(guard);
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
    }

    pub fn clear(&self) {
        self.inner.lock().clear();
    }

    pub fn reset_counters(&self) {
        self.hits.store(0, Ordering::Relaxed);
        self.misses.store(0, Ordering::Relaxed);
        self.evictions.store(0, Ordering::Relaxed);
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_depends_on_every_part_and_boundaries() {
        let base = cache_key("m", "q", "p");
        assert_ne!(base, cache_key("m2", "q", "p"));
        assert_ne!(base, cache_key("m", "q2", "p"));
        assert_ne!(base, cache_key("m", "q", "p2"));
        assert_ne!(cache_key("m", "ab", "c"), cache_key("m", "a", "bc"));
        assert_eq!(base, cache_key("m", "q", "p"));
    }

    #[test]
    fn lru_eviction_and_counters() {
        let c = ScoreCache::new(2).unwrap();
        c.put_many(&[(1, 0.1), (2, 0.2)]);
        assert_eq!(c.get_many(&[1]), vec![Some(0.1)]); // 1 is now most recent
        c.put_many(&[(3, 0.3)]); // evicts 2
        assert_eq!(c.get_many(&[2, 1, 3]), vec![None, Some(0.1), Some(0.3)]);
        assert_eq!(c.hits(), 3);
        assert_eq!(c.misses(), 1);
        assert_eq!(c.evictions(), 1);
        assert_eq!(c.len(), 2);
        c.put_many(&[(3, 0.5)]); // update in place: not an eviction
        assert_eq!(c.evictions(), 1);
        assert_eq!(c.get_many(&[3]), vec![Some(0.5)]);
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn zero_capacity_is_an_error() {
        assert!(ScoreCache::new(0).is_err());
    }

    #[test]
    fn concurrent_use_keeps_capacity() {
        let c = std::sync::Arc::new(ScoreCache::new(100).unwrap());
        let handles: Vec<_> = (0..4u128)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u128 {
                        c.put_many(&[(t * 10_000 + i, i as f32)]);
                        c.get_many(&[t * 10_000 + i]);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(c.len(), 100);
        assert_eq!(c.hits() + c.misses(), 4000);
        assert_eq!(c.evictions(), 4000 - 100);
    }
}
