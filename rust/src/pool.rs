//! The session pool of one model: one `Backend` session per worker, batches of one call spread
//! over them in parallel, every batch output checked against the graph's declared output; and
//! the loading of a model directory (tokenizer + pool, then a load-time probe).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::batching::PaddedBatch;
use crate::error::{CoreError, Result};
use crate::runtime::{Backend, GraphSpec, Runtime, Session, DYNAMIC};
use crate::tokenize::{Encoded, TextTokenizer};

/// Result of one batch: the output tensor's shape and its data, row-major.
pub struct BatchOutput {
    pub shape: Vec<i64>,
    pub data: Vec<f32>,
    /// The attention mask fed to the model (batch × seq), for pooling.
    pub mask: Vec<i64>,
    pub seq_len: usize,
}

/// The worker index that `spread` gives a call's single batch when the pool has a solo session.
const SOLO: usize = usize::MAX;

pub struct SessionPool<B: Backend = Session> {
    /// One session per worker; each runs with `intra_threads` threads. Batches of one call are
    /// spread over the sessions in parallel (see `run_many`).
    sessions: Vec<Mutex<B>>,
    /// An optional session with as many intra-op threads as the pool has sessions, for calls of a
    /// single batch (a query's encoding), which one single-threaded session would run on one core.
    solo: Option<Mutex<B>>,
    /// Number of batches run through the session since load (probes included).
    runs: AtomicU64,
    path: PathBuf,
    spec: GraphSpec,
}

impl<B: Backend> SessionPool<B> {
    /// `sessions` sessions, each opened by `open` (errors name the model file).
    pub fn load(path: &Path, sessions: usize, open: impl Fn(&Path) -> Result<B>) -> Result<Self> {
        if !path.is_file() {
            return Err(CoreError::model(path, "model file not found"));
        }
        let meta = std::fs::metadata(path).map_err(|e| CoreError::model(path, format!("cannot read: {e}")))?;
        if meta.len() == 0 {
            return Err(CoreError::model(path, "model file is empty"));
        }
        let count = sessions.max(1);
        let mut loaded = Vec::with_capacity(count);
        for _ in 0..count {
            loaded.push(open(path)?);
        }
        Self::from_sessions(path, loaded)
    }

    /// A pool of already loaded sessions of the graph at `path` (at least one), described by the
    /// first: its output must have a dynamic batch axis.
    pub fn from_sessions(path: &Path, sessions: Vec<B>) -> Result<Self> {
        let first = sessions.first().ok_or_else(|| CoreError::model(path, "no session loaded"))?;
        let spec = first.describe(path)?;
        if spec.output_dims.first().is_some_and(|&d| d != DYNAMIC) {
            return Err(CoreError::model(
                path,
                format!(
                    "graph output '{}' has a fixed batch dimension (declared shape {:?}); the engine needs a dynamic batch axis",
                    spec.output_name, spec.output_dims
                ),
            ));
        }
        Ok(Self {
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            solo: None,
            runs: AtomicU64::new(0),
            path: path.to_path_buf(),
            spec,
        })
    }

    /// Add the session that runs single-batch calls with `intra_threads` intra-op threads.
    pub fn with_solo(mut self, session: B) -> Self {
        self.solo = Some(Mutex::new(session));
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn feeds_token_type_ids(&self) -> bool {
        self.spec.feeds_token_type_ids
    }

    /// Declared shape of the output read (-1 for a dynamic dimension).
    pub fn output_dims(&self) -> &[i64] {
        &self.spec.output_dims
    }

    /// Check a batch output against the declared output and the batch that was fed: the declared
    /// rank, every fixed declared dimension, `batch` rows, and as many values as the shape holds.
    /// Returns what does not fit; callers name the model file and choose the error kind.
    pub fn check_output(&self, out: &BatchOutput, batch: usize) -> std::result::Result<(), String> {
        let declared = &self.spec.output_dims;
        let name = &self.spec.output_name;
        let fits_declared = out.shape.len() == declared.len()
            && out.shape.iter().zip(declared).all(|(&got, &want)| want == DYNAMIC || got == want);
        if !fits_declared {
            return Err(format!("output '{name}' has shape {:?}, the graph declares {declared:?}", out.shape));
        }
        if out.shape.first().and_then(|&d| usize::try_from(d).ok()) != Some(batch) {
            return Err(format!("output '{name}' has shape {:?} for a batch of {batch}", out.shape));
        }
        let count = out.shape.iter().try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)));
        if count != Some(out.data.len()) {
            return Err(format!("output '{name}' holds {} values, its shape {:?} says otherwise", out.data.len(), out.shape));
        }
        Ok(())
    }

    /// An inference error naming the model file.
    pub fn inference_error(&self, msg: impl std::fmt::Display) -> CoreError {
        CoreError::Inference(format!("{}: {msg}", self.path.display()))
    }

    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Run one batch padded to its own longest sequence, on the first session.
    pub fn run_batch(&self, batch: &[&Encoded], pad_id: i64) -> Result<BatchOutput> {
        self.run_batch_on(0, batch, pad_id)
    }

    /// Run many batches, spread over the sessions by as many worker threads (a batch at a time,
    /// taken from a shared counter); outputs come back in batch order.
    pub fn run_many(&self, batches: &[Vec<&Encoded>], pad_id: i64) -> Result<Vec<BatchOutput>> {
        self.spread(batches.len(), |w, i| self.run_batch_on(w, &batches[i], pad_id))
    }

    /// Like `run_many`, for batches the caller padded itself (with attention masks of its own, such
    /// as a late-interaction query's unattended expansion tokens).
    pub fn run_many_padded(&self, batches: &[PaddedBatch]) -> Result<Vec<BatchOutput>> {
        self.spread(batches.len(), |w, i| self.run_padded_on(w, &batches[i]))
    }

    /// Run `run(worker, i)` for every batch index `i < count`, over as many worker threads as there
    /// are sessions (a batch at a time, from a shared counter); outputs in batch order. The first
    /// failure stops the workers and fails the call.
    fn spread(&self, count: usize, run: impl Fn(usize, usize) -> Result<BatchOutput> + Sync) -> Result<Vec<BatchOutput>> {
        let workers = self.sessions.len().min(count);
        if count == 1 && self.solo.is_some() {
            return Ok(vec![run(SOLO, 0)?]);
        }
        if workers <= 1 {
            return (0..count).map(|i| run(0, i)).collect();
        }
        let next = AtomicUsize::new(0);
        let slots: Vec<Mutex<Option<Result<BatchOutput>>>> = (0..count).map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for w in 0..workers {
                let (next, slots, run) = (&next, &slots, &run);
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let out = run(w, i);
                    let failed = out.is_err();
                    if let Ok(mut slot) = slots[i].lock() {
                        *slot = Some(out);
                    }
                    if failed {
                        next.store(count, Ordering::Relaxed);
                    }
                });
            }
        });
        let mut outs = Vec::with_capacity(count);
        for slot in slots {
            match slot.into_inner() {
                Ok(Some(out)) => outs.push(out?),
                Ok(None) => {} // skipped after an earlier failure, which is reported below
                Err(_) => return Err(CoreError::Inference("a worker panicked".into())),
            }
        }
        if outs.len() != count {
            return Err(CoreError::Inference("a batch failed".into()));
        }
        Ok(outs)
    }

    fn run_batch_on(&self, session_idx: usize, batch: &[&Encoded], pad_id: i64) -> Result<BatchOutput> {
        self.run_padded_on(session_idx, &PaddedBatch::new(batch, pad_id))
    }

    fn run_padded_on(&self, session_idx: usize, padded: &PaddedBatch) -> Result<BatchOutput> {
        // A panic while the lock was held (caught by `error::guarded`) leaves the runtime
        // session itself intact: keep using it rather than failing every later call.
        let slot = match (&self.solo, session_idx) {
            (Some(solo), SOLO) => solo,
            _ => &self.sessions[session_idx % self.sessions.len()],
        };
        let mut session = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.runs.fetch_add(1, Ordering::Relaxed);
        let out = session.run(padded, &self.spec)?;
        drop(session);
        Ok(BatchOutput { shape: out.shape, data: out.data, mask: padded.mask.clone(), seq_len: padded.seq_len })
    }

    /// Run a probe of `max_length` tokens using the tokenizer's largest id: a tokenizer whose
    /// vocabulary exceeds the model's embedding table, or a max_length beyond its position
    /// embeddings, fails here (at load time) rather than on the first user query. The probe's
    /// output is then checked against the declared output (a ModelError naming the model file).
    pub fn probe(&self, tokenizer: &TextTokenizer, tok_path: &Path) -> Result<BatchOutput> {
        let top = i64::try_from(tokenizer.vocab_size().saturating_sub(1)).unwrap_or(0);
        let n = tokenizer.max_length();
        let enc = Encoded { ids: vec![top; n], type_ids: vec![0; n] };
        let out = self.run_batch(&[&enc], tokenizer.pad_id()).map_err(|e| {
            CoreError::model(
                tok_path,
                format!(
                    "does not fit {} (vocabulary of {} tokens, max_length {}): {e}",
                    self.path().display(),
                    tokenizer.vocab_size(),
                    n
                ),
            )
        })?;
        self.check_output(&out, 1)
            .map_err(|msg| CoreError::model(self.path(), format!("probe run of one sequence of {n} tokens: {msg}")))?;
        Ok(out)
    }
}

/// The default number of sessions of a pool: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl SessionPool<Session> {
    /// (backend, precision) the sessions run at (see `Session::runs_as`).
    pub fn runs_as(&self) -> (&'static str, String) {
        let first = self.sessions[0].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        first.runs_as()
    }
}

/// The `tokenizer()`, `model()` and `batching()` accessors of an encoder core (the bi- and the
/// cross-encoder) that holds `tokenizer`, `model` and `batching` fields as [`load_model_dir`] and
/// [`crate::batching::Batching::new`] make them.
macro_rules! encoder_accessors {
    () => {
        pub fn tokenizer(&self) -> &crate::tokenize::TextTokenizer {
            &self.tokenizer
        }

        pub fn model(&self) -> &crate::pool::SessionPool {
            &self.model
        }

        pub fn batching(&self) -> crate::batching::Batching {
            self.batching
        }
    };
}
pub(crate) use encoder_accessors;

/// The tokenizer (`tokenizer.json`) and the session pool (the graph `runtime` reads, see
/// `Runtime::model_file`) of a model directory: `threads` single-threaded sessions, plus (`solo`,
/// when `threads` > 1) one session of `threads` intra-op threads for calls of one batch, such as a
/// query's encoding.
pub fn load_model_dir(
    dir: &Path,
    max_length: usize,
    threads: usize,
    solo: bool,
    runtime: Runtime,
) -> Result<(SessionPool, TextTokenizer)> {
    if !dir.is_dir() {
        return Err(CoreError::model(dir, "model directory not found"));
    }
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = TextTokenizer::from_file(&tok_path, max_length)?;
    // One single-threaded session per core, batches run in parallel: on small transformer graphs
    // this beats one session with intra-op threads, which synchronise on every operator.
    let path = runtime.model_file(dir);
    let mut model = SessionPool::load(&path, threads, |p| Session::load(runtime, p, 1))?;
    if solo && threads > 1 {
        model = model.with_solo(Session::load(runtime, &path, threads)?);
    }
    Ok((model, tokenizer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::RawOutput;

    /// A backend answering each row with its token count (one logit per row), or with what its
    /// fields say.
    struct Fake {
        dims: Vec<i64>,
        /// Fail any batch holding a row this long.
        fail_on_len: Option<usize>,
    }

    impl Backend for Fake {
        fn describe(&self, _path: &Path) -> Result<GraphSpec> {
            Ok(GraphSpec { feeds_token_type_ids: false, output_name: "logits".into(), output_dims: self.dims.clone() })
        }
        fn run(&mut self, batch: &PaddedBatch, _spec: &GraphSpec) -> Result<RawOutput> {
            let lens: Vec<usize> = batch.mask.chunks(batch.seq_len).map(|r| r.iter().filter(|&&m| m == 1).count()).collect();
            if self.fail_on_len.is_some_and(|n| lens.contains(&n)) {
                return Err(CoreError::Inference("fake failure".into()));
            }
            Ok(RawOutput { shape: vec![batch.rows as i64, 1], data: lens.iter().map(|&n| n as f32).collect() })
        }
    }

    fn pool(sessions: usize, fail_on_len: Option<usize>) -> SessionPool<Fake> {
        let fakes = (0..sessions).map(|_| Fake { dims: vec![DYNAMIC, 1], fail_on_len }).collect();
        SessionPool::from_sessions(Path::new("m.onnx"), fakes).expect("a dynamic batch axis")
    }

    fn enc(n: usize) -> Encoded {
        Encoded { ids: vec![1; n], type_ids: vec![0; n] }
    }

    #[test]
    fn run_many_returns_outputs_in_batch_order_over_all_sessions() {
        let encs: Vec<Encoded> = (1..=9).map(enc).collect();
        let batches: Vec<Vec<&Encoded>> = encs.chunks(2).map(|c| c.iter().collect()).collect();
        let p = pool(3, None);
        let outs = p.run_many(&batches, 0).expect("no failure");
        let got: Vec<Vec<f32>> = outs.iter().map(|o| o.data.clone()).collect();
        assert_eq!(got, vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0], vec![7.0, 8.0], vec![9.0]]);
        assert_eq!(outs[0].seq_len, 2);
        assert_eq!(outs[0].mask, vec![1, 0, 1, 1]);
        assert_eq!(p.runs(), 5);
        assert_eq!(p.sessions(), 3);
        assert!(p.run_many(&[], 0).expect("nothing to run").is_empty());
    }

    #[test]
    fn a_failed_batch_fails_the_call() {
        let encs: Vec<Encoded> = (1..=6).map(enc).collect();
        let batches: Vec<Vec<&Encoded>> = encs.iter().map(|e| vec![e]).collect();
        for sessions in [1, 2] {
            match pool(sessions, Some(4)).run_many(&batches, 0) {
                Err(CoreError::Inference(msg)) => assert!(msg == "fake failure" || msg == "a batch failed", "{msg}"),
                other => panic!("expected an inference error, got {:?}", other.map(|o| o.len())),
            }
        }
    }

    #[test]
    fn a_single_batch_runs_on_the_solo_session_and_several_on_the_pool() {
        // The solo session fails rows of 3 tokens, the pool's never: which one ran shows in the result.
        let p = pool(2, None).with_solo(Fake { dims: vec![DYNAMIC, 1], fail_on_len: Some(3) });
        let (a, b) = (enc(3), enc(5));
        assert!(p.run_many(&[vec![&a]], 0).is_err(), "one batch went to the pool");
        let outs = p.run_many(&[vec![&a], vec![&b]], 0).expect("two batches on the pool");
        assert_eq!(outs.iter().map(|o| o.data.clone()).collect::<Vec<_>>(), vec![vec![3.0], vec![5.0]]);
        assert!(p.run_many(&[vec![&b]], 0).is_ok());
    }

    #[test]
    fn a_fixed_batch_axis_is_a_model_error() {
        let fixed = Fake { dims: vec![4, 1], fail_on_len: None };
        match SessionPool::from_sessions(Path::new("m.onnx"), vec![fixed]) {
            Err(CoreError::Model { path, msg }) => {
                assert_eq!(path, "m.onnx");
                assert!(msg.contains("fixed batch dimension (declared shape [4, 1])"), "{msg}");
            }
            Err(other) => panic!("expected a model error, got {other:?}"),
            Ok(_) => panic!("a fixed batch axis was accepted"),
        }
        assert!(SessionPool::<Fake>::from_sessions(Path::new("m.onnx"), Vec::new()).is_err());
    }

    #[test]
    fn outputs_are_checked_against_the_declared_shape_and_the_batch() {
        let p = pool(1, None);
        let out = |shape: Vec<i64>, n: usize| BatchOutput { shape, data: vec![0.0; n], mask: Vec::new(), seq_len: 1 };
        assert!(p.check_output(&out(vec![2, 1], 2), 2).is_ok());
        let rank = p.check_output(&out(vec![2], 2), 2).unwrap_err();
        assert_eq!(rank, "output 'logits' has shape [2], the graph declares [-1, 1]");
        let fixed = p.check_output(&out(vec![2, 3], 6), 2).unwrap_err();
        assert!(fixed.contains("the graph declares [-1, 1]"), "{fixed}");
        let rows = p.check_output(&out(vec![3, 1], 3), 2).unwrap_err();
        assert_eq!(rows, "output 'logits' has shape [3, 1] for a batch of 2");
        let values = p.check_output(&out(vec![2, 1], 5), 2).unwrap_err();
        assert_eq!(values, "output 'logits' holds 5 values, its shape [2, 1] says otherwise");
        assert_eq!(p.inference_error("boom").to_string(), "inference failed: m.onnx: boom");
    }

    #[test]
    fn a_missing_or_empty_model_file_is_a_model_error() {
        let dir = std::env::temp_dir().join(format!("lrt-pool-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty.onnx");
        std::fs::write(&empty, b"").expect("empty file");
        let msg = |r: Result<SessionPool<Fake>>| match r {
            Err(CoreError::Model { msg, .. }) => msg,
            Err(other) => panic!("expected a model error, got {other:?}"),
            Ok(_) => panic!("loaded"),
        };
        let open = |_: &Path| Ok(Fake { dims: vec![DYNAMIC, 1], fail_on_len: None });
        assert_eq!(msg(SessionPool::load(&dir.join("missing.onnx"), 1, open)), "model file not found");
        assert_eq!(msg(SessionPool::load(&empty, 1, open)), "model file is empty");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
