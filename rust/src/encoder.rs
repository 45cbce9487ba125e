//! ONNX Runtime sessions (through `ort`, loading libonnxruntime dynamically) and the
//! length-bucketed batching shared by the cross-encoder and the bi-encoder.
//!
//! Inputs are split into windows of at most `window` items (memory is bounded by the window,
//! not by the call), each window is sorted by token count, cut into batches of `batch_size`,
//! each batch padded to its own longest sequence, and results are written back in input order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};

use crate::error::{CoreError, Result};
use crate::tokenize::{Encoded, TextTokenizer};

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Load libonnxruntime from `path` and create the process-wide environment. Idempotent: once a
/// library is loaded, later calls return Ok without loading another one.
pub fn init_runtime(path: &Path) -> Result<()> {
    let _guard = INIT_LOCK.lock().map_err(|_| CoreError::Runtime { path: path.display().to_string(), msg: "init lock poisoned".into() })?;
    if ENVIRONMENT.get().is_some() {
        return Ok(());
    }
    let err = |msg: String| CoreError::Runtime { path: path.display().to_string(), msg };
    if !path.is_file() {
        return Err(err("file not found (set ORT_DYLIB_PATH or install the onnxruntime wheel)".into()));
    }
    let builder = ort::init_from(path).map_err(|e| err(e.to_string()))?;
    let env = builder.with_name("lrt-rerank").build().map_err(|e| err(e.to_string()))?;
    // A concurrent caller cannot have set it: we hold INIT_LOCK.
    let _ = ENVIRONMENT.set(env);
    Ok(())
}

pub fn runtime_ready() -> bool {
    ENVIRONMENT.get().is_some()
}

fn environment() -> Result<&'static Environment> {
    ENVIRONMENT.get().ok_or_else(|| CoreError::Runtime {
        path: "<none>".into(),
        msg: "ONNX Runtime is not initialised: call init_runtime(path) first".into(),
    })
}

/// Result of one batch: the output tensor's shape and its data, row-major.
pub struct BatchOutput {
    pub shape: Vec<i64>,
    pub data: Vec<f32>,
    /// The attention mask fed to the model (batch × seq), for pooling.
    pub mask: Vec<i64>,
    pub seq_len: usize,
}

pub struct OnnxModel {
    /// One session per worker; each runs with `intra_threads` threads. Batches of one call are
    /// spread over the sessions in parallel (see `run_many`).
    sessions: Vec<Mutex<Session>>,
    /// Number of batches run through the session since load (probes included).
    runs: AtomicU64,
    path: PathBuf,
    feeds_token_type_ids: bool,
    /// Name of the first graph output, the one read.
    output_name: String,
    /// Its declared shape; -1 marks a dynamic (symbolic) dimension.
    output_dims: Vec<i64>,
}

/// A dimension of a declared shape that is not fixed (ONNX Runtime reports symbolic and unknown
/// dimensions as -1).
const DYNAMIC: i64 = -1;

const ID_INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];

impl OnnxModel {
    /// `sessions` sessions of `intra_threads` intra-op threads each.
    pub fn load(path: &Path, sessions: usize, intra_threads: usize) -> Result<Self> {
        if !path.is_file() {
            return Err(CoreError::model(path, "model file not found"));
        }
        let meta = std::fs::metadata(path).map_err(|e| CoreError::model(path, format!("cannot read: {e}")))?;
        if meta.len() == 0 {
            return Err(CoreError::model(path, "model file is empty"));
        }
        let env = environment()?;
        let fail = |what: &str, e: String| CoreError::model(path, format!("{what}: {e}"));
        let count = sessions.max(1);
        let mut sessions = Vec::with_capacity(count);
        for _ in 0..count {
            let session = Session::builder(env)
                .map_err(|e| fail("cannot create a session", e.to_string()))?
                .with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(|e| fail("cannot set the optimisation level", e.to_string()))?
                .with_intra_threads(intra_threads.max(1))
                .map_err(|e| fail("cannot set intra-op threads", e.to_string()))?
                .with_inter_threads(1)
                .map_err(|e| fail("cannot set inter-op threads", e.to_string()))?
                .commit_from_file(path)
                .map_err(|e| fail("not a loadable ONNX model", e.to_string()))?;
            sessions.push(session);
        }
        let session = &sessions[0];

        let mut names = Vec::new();
        for input in session.inputs() {
            let name = input.name();
            if !ID_INPUTS.contains(&name) {
                return Err(CoreError::model(
                    path,
                    format!("graph input '{name}' is not one of input_ids, attention_mask, token_type_ids"),
                ));
            }
            match input.dtype() {
                ValueType::Tensor { ty: TensorElementType::Int64, shape, .. } if shape.len() == 2 => {}
                other => {
                    return Err(CoreError::model(
                        path,
                        format!("graph input '{name}' must be an int64 tensor [batch, sequence], found {other:?}"),
                    ))
                }
            }
            names.push(name.to_string());
        }
        for required in ["input_ids", "attention_mask"] {
            if !names.iter().any(|n| n == required) {
                return Err(CoreError::model(path, format!("graph has no '{required}' input (inputs: {names:?})")));
            }
        }
        let output = session
            .outputs()
            .first()
            .ok_or_else(|| CoreError::model(path, "graph has no outputs"))?;
        if output.name().is_empty() {
            return Err(CoreError::model(path, "the first graph output has no name"));
        }
        let output_dims = match output.dtype() {
            ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } => shape.to_vec(),
            other => {
                return Err(CoreError::model(
                    path,
                    format!("first graph output '{}' must be a float32 tensor, found {other:?}", output.name()),
                ))
            }
        };
        if output_dims.first().is_some_and(|&d| d != DYNAMIC) {
            return Err(CoreError::model(
                path,
                format!(
                    "graph output '{}' has a fixed batch dimension (declared shape {output_dims:?}); the engine needs a dynamic batch axis",
                    output.name()
                ),
            ));
        }
        let output_name = output.name().to_string();
        let feeds_token_type_ids = names.iter().any(|n| n == "token_type_ids");
        Ok(Self {
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            runs: AtomicU64::new(0),
            path: path.to_path_buf(),
            feeds_token_type_ids,
            output_name,
            output_dims,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn feeds_token_type_ids(&self) -> bool {
        self.feeds_token_type_ids
    }

    /// Declared shape of the output read (-1 for a dynamic dimension).
    pub fn output_dims(&self) -> &[i64] {
        &self.output_dims
    }

    /// Check a batch output against the declared output and the batch that was fed: the declared
    /// rank, every fixed declared dimension, `batch` rows, and as many values as the shape holds.
    /// Returns what does not fit; callers name the model file and choose the error kind.
    pub fn check_output(&self, out: &BatchOutput, batch: usize) -> std::result::Result<(), String> {
        let declared = &self.output_dims;
        let fits_declared = out.shape.len() == declared.len()
            && out.shape.iter().zip(declared).all(|(&got, &want)| want == DYNAMIC || got == want);
        if !fits_declared {
            return Err(format!("output '{}' has shape {:?}, the graph declares {declared:?}", self.output_name, out.shape));
        }
        if out.shape.first().and_then(|&d| usize::try_from(d).ok()) != Some(batch) {
            return Err(format!("output '{}' has shape {:?} for a batch of {batch}", self.output_name, out.shape));
        }
        let count = out.shape.iter().try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)));
        if count != Some(out.data.len()) {
            return Err(format!("output '{}' holds {} values, its shape {:?} says otherwise", self.output_name, out.data.len(), out.shape));
        }
        Ok(())
    }

    /// An inference error naming the model file.
    fn inference_error(&self, msg: impl std::fmt::Display) -> CoreError {
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
        let workers = self.sessions.len().min(batches.len());
        if workers <= 1 {
            return batches.iter().map(|b| self.run_batch_on(0, b, pad_id)).collect();
        }
        let next = AtomicUsize::new(0);
        let slots: Vec<Mutex<Option<Result<BatchOutput>>>> = batches.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for w in 0..workers {
                let (next, slots) = (&next, &slots);
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= batches.len() {
                        break;
                    }
                    let out = self.run_batch_on(w, &batches[i], pad_id);
                    let failed = out.is_err();
                    if let Ok(mut slot) = slots[i].lock() {
                        *slot = Some(out);
                    }
                    if failed {
                        next.store(batches.len(), Ordering::Relaxed);
                    }
                });
            }
        });
        let mut outs = Vec::with_capacity(batches.len());
        for slot in slots {
            match slot.into_inner() {
                Ok(Some(out)) => outs.push(out?),
                Ok(None) => {} // skipped after an earlier failure, which is reported below
                Err(_) => return Err(CoreError::Inference("a worker panicked".into())),
            }
        }
        if outs.len() != batches.len() {
            return Err(CoreError::Inference("a batch failed".into()));
        }
        Ok(outs)
    }

    fn run_batch_on(&self, session_idx: usize, batch: &[&Encoded], pad_id: i64) -> Result<BatchOutput> {
        let b = batch.len();
        let seq_len = batch.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![pad_id; b * seq_len];
        let mut mask = vec![0i64; b * seq_len];
        let mut types = vec![0i64; b * seq_len];
        for (row, enc) in batch.iter().enumerate() {
            let off = row * seq_len;
            ids[off..off + enc.len()].copy_from_slice(&enc.ids);
            types[off..off + enc.len()].copy_from_slice(&enc.type_ids);
            mask[off..off + enc.len()].fill(1);
        }
        let shape = [b, seq_len];
        let infer = |e: ort::Error| CoreError::Inference(format!("{}: {e}", self.path.display()));
        let mut inputs = ort::inputs! {
            "input_ids" => Tensor::from_array((shape, ids)).map_err(infer)?,
            "attention_mask" => Tensor::from_array((shape, mask.clone())).map_err(infer)?,
        };
        if self.feeds_token_type_ids {
            inputs.push(("token_type_ids".into(), Tensor::from_array((shape, types)).map_err(infer)?.into()));
        }
        // A panic while the lock was held (caught by `error::guarded`) leaves the ONNX Runtime
        // session itself intact: keep using it rather than failing every later call.
        let mut session = self.sessions[session_idx % self.sessions.len()]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.runs.fetch_add(1, Ordering::Relaxed);
        let outputs = session.run(inputs).map_err(infer)?;
        let value = outputs
            .get(self.output_name.as_str())
            .ok_or_else(|| self.inference_error(format_args!("the run returned no output '{}'", self.output_name)))?;
        let (out_shape, data) = value.try_extract_tensor::<f32>().map_err(infer)?;
        Ok(BatchOutput { shape: out_shape.to_vec(), data: data.to_vec(), mask, seq_len })
    }
}

/// Padded tokens (rows × longest) a batch may hold by default. Past a few hundred tokens a
/// transformer batch stops getting faster per token on CPU: its attention scores (batch × heads ×
/// seq²) and FFN activations leave the caches, and fewer, larger batches balance worse over the
/// parallel sessions. Measured in benches/bench_peers.py (see docs/performance.md).
pub const DEFAULT_TOKEN_BUDGET: usize = 512;

/// Batching policy shared by both encoders.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub batch_size: usize,
    /// Largest padded size (rows × longest sequence) of a batch; a longer single sequence still
    /// gets a batch of its own.
    pub token_budget: usize,
    pub window: usize,
}

impl Batching {
    pub fn new(batch_size: usize, token_budget: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(CoreError::InvalidArgument("batch_size must be at least 1".into()));
        }
        if token_budget == 0 {
            return Err(CoreError::InvalidArgument("token_budget must be at least 1".into()));
        }
        Ok(Self { batch_size, token_budget, window: (batch_size * 16).max(256) })
    }

    /// Sort the indices of `encs` by token count (stable) and cut them into batches of at most
    /// `batch_size` items, equal in size (their count a multiple of `workers` where there are
    /// enough items, so parallel sessions get equal shares), then split further wherever a batch
    /// would pad past `token_budget` tokens.
    pub fn batches(&self, encs: &[Encoded], workers: usize) -> Vec<Vec<usize>> {
        let n = encs.len();
        if n == 0 {
            return Vec::new();
        }
        let workers = workers.max(1);
        let mut count = n.div_ceil(self.batch_size);
        if n >= workers {
            count = count.div_ceil(workers) * workers;
        }
        let size = n.div_ceil(count);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| encs[i].len());
        let mut batches = Vec::with_capacity(count);
        for chunk in order.chunks(size) {
            let mut batch: Vec<usize> = Vec::with_capacity(chunk.len());
            for &i in chunk {
                // ascending lengths: item i is the longest of the batch it joins
                if !batch.is_empty() && (batch.len() + 1) * encs[i].len() > self.token_budget {
                    batches.push(std::mem::take(&mut batch));
                }
                batch.push(i);
            }
            batches.push(batch);
        }
        batches
    }
}

/// Padded token count a batching produces: the sum over batches of size × longest.
pub fn padded_tokens(encs: &[Encoded], batches: &[Vec<usize>]) -> usize {
    batches
        .iter()
        .map(|b| b.len() * b.iter().map(|&i| encs[i].len()).max().unwrap_or(0))
        .sum()
}

pub struct CrossEncoderCore {
    model: OnnxModel,
    tokenizer: TextTokenizer,
    batching: Batching,
}

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
}

pub struct BiEncoderCore {
    model: OnnxModel,
    tokenizer: TextTokenizer,
    batching: Batching,
    pooling: Pooling,
    normalize: bool,
    /// Embedding dimension, from the load-time probe.
    dim: usize,
}

/// Run a probe of `max_length` tokens using the tokenizer's largest id: a tokenizer whose
/// vocabulary exceeds the model's embedding table, or a max_length beyond its position
/// embeddings, fails here (at load time) rather than on the first user query. The probe's output
/// is then checked against the declared output (a ModelError naming the model file).
fn probe(model: &OnnxModel, tokenizer: &TextTokenizer, tok_path: &Path) -> Result<BatchOutput> {
    let top = i64::try_from(tokenizer.vocab_size().saturating_sub(1)).unwrap_or(0);
    let n = tokenizer.max_length();
    let enc = Encoded { ids: vec![top; n], type_ids: vec![0; n] };
    let out = model.run_batch(&[&enc], tokenizer.pad_id()).map_err(|e| {
        CoreError::model(
            tok_path,
            format!(
                "does not fit {} (vocabulary of {} tokens, max_length {}): {e}",
                model.path().display(),
                tokenizer.vocab_size(),
                n
            ),
        )
    })?;
    model
        .check_output(&out, 1)
        .map_err(|msg| CoreError::model(model.path(), format!("probe run of one sequence of {n} tokens: {msg}")))?;
    Ok(out)
}

fn load_parts(dir: &Path, max_length: usize, threads: usize, batching: Batching) -> Result<(OnnxModel, TextTokenizer, Batching)> {
    if !dir.is_dir() {
        return Err(CoreError::model(dir, "model directory not found"));
    }
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = TextTokenizer::from_file(&tok_path, max_length)?;
    // One single-threaded session per core, batches run in parallel: on small transformer graphs
    // this beats one session with intra-op threads, which synchronise on every operator.
    let model = OnnxModel::load(&dir.join("model.onnx"), threads, 1)?;
    Ok((model, tokenizer, batching))
}

/// The logits of a cross-encoder batch of `batch` pairs: the output must be [batch] or
/// [batch, 1] and finite.
fn check_logits<'a>(model: &OnnxModel, out: &'a BatchOutput, batch: usize) -> std::result::Result<&'a [f32], String> {
    model.check_output(out, batch)?;
    if !matches!(out.shape.as_slice(), [b] | [b, 1] if usize::try_from(*b).ok() == Some(batch)) {
        return Err(format!("expected one logit per pair ([{batch}] or [{batch}, 1]), got shape {:?}", out.shape));
    }
    if let Some(j) = out.data.iter().position(|x| !x.is_finite()) {
        return Err(format!("the model returned a non-finite logit ({}) for row {j} of a batch of {batch}", out.data[j]));
    }
    Ok(&out.data)
}

impl CrossEncoderCore {
    pub fn load(dir: &Path, max_length: usize, threads: usize, batching: Batching) -> Result<Self> {
        let (model, tokenizer, batching) = load_parts(dir, max_length, threads, batching)?;
        let declared = model.output_dims();
        if !matches!(declared, [_] | [_, 1 | DYNAMIC]) {
            return Err(CoreError::model(
                model.path(),
                format!("a cross-encoder must output one logit per pair ([batch] or [batch, 1]); the graph declares {declared:?}"),
            ));
        }
        let out = probe(&model, &tokenizer, &dir.join("tokenizer.json"))?;
        check_logits(&model, &out, 1).map_err(|msg| CoreError::model(model.path(), format!("probe run: {msg}")))?;
        Ok(Self { model, tokenizer, batching })
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    pub fn model(&self) -> &OnnxModel {
        &self.model
    }

    pub fn batching(&self) -> Batching {
        self.batching
    }

    /// Raw logits for (query, passage) pairs, in input order. Every batch's output is checked
    /// (shape against the batch and the declared output, finite values) before it is read.
    pub fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>> {
        let mut scores = vec![0f32; passages.len()];
        for (w, window) in passages.chunks(self.batching.window).enumerate() {
            let base = w * self.batching.window;
            let encs = self.tokenizer.encode_pairs(query, window)?;
            let batches = self.batching.batches(&encs, self.model.sessions());
            let refs: Vec<Vec<&Encoded>> = batches.iter().map(|b| b.iter().map(|&i| &encs[i]).collect()).collect();
            let outs = self.model.run_many(&refs, self.tokenizer.pad_id())?;
            for (batch, out) in batches.iter().zip(outs) {
                let logits = check_logits(&self.model, &out, batch.len()).map_err(|msg| self.model.inference_error(msg))?;
                for (&i, &logit) in batch.iter().zip(logits) {
                    scores[base + i] = logit;
                }
            }
        }
        Ok(scores)
    }
}

impl BiEncoderCore {
    pub fn load(
        dir: &Path,
        max_length: usize,
        threads: usize,
        batching: Batching,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Self> {
        let (model, tokenizer, batching) = load_parts(dir, max_length, threads, batching)?;
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
        let out = probe(&model, &tokenizer, &dir.join("tokenizer.json"))?;
        let n = tokenizer.max_length() as i64;
        let dim = match out.shape.as_slice() {
            [1, seq, d] if *seq == n => usize::try_from(*d).ok(),
            [1, d] => usize::try_from(*d).ok(),
            _ => None,
        };
        let Some(dim) = dim.filter(|&d| d > 1) else {
            return Err(CoreError::model(
                model.path(),
                format!(
                    "a bi-encoder must output token embeddings [batch, seq, dim] or pooled [batch, dim]; got shape {:?} for one sequence of {n} tokens",
                    out.shape
                ),
            ));
        };
        Ok(Self { model, tokenizer, batching, pooling, normalize, dim })
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    pub fn model(&self) -> &OnnxModel {
        &self.model
    }

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
        for (w, window) in texts.chunks(self.batching.window).enumerate() {
            let base = w * self.batching.window;
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

/// A bi-encoder batch output must be [batch, seq_len, dim] (token embeddings of the sequences fed)
/// or [batch, dim] (pooled), and finite: `pool_row` indexes it on that basis.
fn check_embeddings(model: &OnnxModel, out: &BatchOutput, batch: usize, dim: usize) -> std::result::Result<(), String> {
    model.check_output(out, batch)?;
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

/// Pool row `row` of a checked batch output into `dst`: token embeddings [batch, seq, dim] by
/// `pooling`; an already pooled output [batch, dim] is copied.
fn pool_row(out: &BatchOutput, row: usize, dim: usize, pooling: Pooling, dst: &mut [f32]) {
    match (out.shape.len(), pooling) {
        (3, Pooling::Mean) => mean_pool(out, row, dim, dst),
        (3, Pooling::Cls) => {
            let start = row * out.seq_len * dim;
            dst.copy_from_slice(&out.data[start..start + dim]);
        }
        _ => dst.copy_from_slice(&out.data[row * dim..(row + 1) * dim]),
    }
}

fn mean_pool(out: &BatchOutput, row: usize, dim: usize, dst: &mut [f32]) {
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

fn l2_normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    for x in v.iter_mut() {
        *x /= norm;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(n: usize) -> Encoded {
        Encoded { ids: vec![1; n], type_ids: vec![0; n] }
    }

    fn batching(batch_size: usize, token_budget: usize) -> Batching {
        Batching::new(batch_size, token_budget).expect("valid batching")
    }

    #[test]
    fn batches_are_length_sorted_and_cover_every_index() {
        let encs: Vec<Encoded> = [5, 1, 9, 3, 7, 2].iter().map(|&n| enc(n)).collect();
        // 6 items, at most 4 per batch: two equal batches of 3, shortest first
        let batches = batching(4, usize::MAX).batches(&encs, 1);
        assert_eq!(batches, vec![vec![1, 5, 3], vec![0, 4, 2]]);
        // padded: 3 × 3 + 3 × 9 = 36, against 6 × 9 = 54 padding to the longest of all
        assert_eq!(padded_tokens(&encs, &batches), 36);
        // 3 workers: the batch count becomes a multiple of 3
        assert_eq!(batching(4, usize::MAX).batches(&encs, 3).len(), 3);
        // 5 items, batch 16, 2 workers: sizes 3 + 2
        let five: Vec<Encoded> = (1..=5).map(enc).collect();
        let sizes: Vec<usize> = batching(16, usize::MAX).batches(&five, 2).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 2]);
        assert!(batching(16, 512).batches(&[], 2).is_empty());
    }

    #[test]
    fn token_budget_splits_batches() {
        let encs: Vec<Encoded> = [5, 1, 9, 3, 7, 2].iter().map(|&n| enc(n)).collect();
        // budget 10: [1, 2, 3] pads to 9; 5 would make 4 × 5 = 20; [5] alone, then 7 and 9 alone
        let batches = batching(16, 10).batches(&encs, 1);
        assert_eq!(batches, vec![vec![1, 5, 3], vec![0], vec![4], vec![2]]);
        assert!(batches.iter().all(|b| b.len() * b.iter().map(|&i| encs[i].len()).max().unwrap_or(0) <= 10));
        // a sequence longer than the budget still runs, alone
        assert_eq!(batching(16, 4).batches(&[enc(8), enc(8)], 1), vec![vec![0], vec![1]]);
        let mut seen: Vec<usize> = batching(3, 12).batches(&encs, 2).concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..6).collect::<Vec<_>>());
    }

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
    fn zero_batch_size_is_rejected() {
        assert!(Batching::new(0, 512).is_err());
        assert!(Batching::new(16, 0).is_err());
    }
}
