//! The thin pyo3 layer: argument conversion, GIL release, error mapping (a panic becomes an
//! InferenceError, see `error::guarded`). Logic lives in the pure-Rust modules, each with its own
//! `cargo test`.

pub mod batching;
pub mod bi;
pub mod cache;
pub mod colbert;
pub mod cross;
pub mod error;
pub mod fusion;
pub mod openvino;
pub mod pool;
pub mod pooling;
pub mod runtime;
pub mod tokenize;
pub mod windows;

use std::path::PathBuf;
use std::sync::Arc;

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

use crate::error::{guarded, CoreError};

create_exception!(_core, LrtError, PyException, "Base class of lrt_rerank errors.");
create_exception!(_core, ModelError, LrtError, "A model directory or file is missing, malformed, or does not fit.");
create_exception!(_core, InferenceError, LrtError, "Tokenization or ONNX Runtime inference failed.");
create_exception!(_core, RuntimeLoadError, LrtError, "A runtime's shared library (ONNX Runtime, OpenVINO) could not be loaded.");

fn to_py(e: CoreError) -> PyErr {
    let msg = e.to_string();
    match e {
        CoreError::Runtime { .. } => RuntimeLoadError::new_err(msg),
        CoreError::Model { .. } => ModelError::new_err(msg),
        CoreError::Tokenize(_) | CoreError::Inference(_) => InferenceError::new_err(msg),
        CoreError::InvalidArgument(_) => PyValueError::new_err(msg),
    }
}

/// Run `work` on `texts` (as `&str`s) with the GIL released; a panic or core error becomes a Python exception.
fn detached<T: Send>(
    py: Python<'_>,
    texts: Vec<String>,
    work: impl FnOnce(&[&str]) -> crate::error::Result<T> + Send,
) -> PyResult<T> {
    py.detach(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        guarded(|| work(&refs))
    })
    .map_err(to_py)
}

/// Load a model core with the GIL released (loading reads the files and runs the probe batch); a panic or
/// core error becomes a Python exception.
fn load_detached<T: Send>(load: impl FnOnce() -> crate::error::Result<T> + Send) -> PyResult<Arc<T>> {
    Python::attach(|py| py.detach(|| guarded(load))).map(Arc::new).map_err(to_py)
}

/// Load libonnxruntime from `path` (once per process; later calls are no-ops).
#[pyfunction]
fn init_runtime(py: Python<'_>, path: PathBuf) -> PyResult<()> {
    py.detach(|| runtime::init_runtime(&path)).map_err(to_py)
}

#[pyfunction]
fn runtime_ready() -> bool {
    runtime::runtime_ready()
}

/// Load libopenvino_c from `path` (once per process; later calls are no-ops).
#[pyfunction]
fn init_openvino(py: Python<'_>, path: PathBuf) -> PyResult<()> {
    py.detach(|| openvino::init_openvino(&path)).map_err(to_py)
}

#[pyfunction]
fn openvino_ready() -> bool {
    openvino::openvino_ready()
}

/// The runtime named by a constructor's `backend` and `precision` arguments.
fn runtime_of(backend: &str, precision: Option<&str>) -> PyResult<runtime::Runtime> {
    runtime::Runtime::parse(backend, precision).map_err(to_py)
}

/// Thread-safe bounded LRU of scores keyed by (model fingerprint, query, passage).
#[pyclass(name = "ScoreCache", module = "lrt_rerank._core", frozen)]
struct PyScoreCache {
    inner: Arc<cache::ScoreCache>,
}

#[pymethods]
impl PyScoreCache {
    #[new]
    #[pyo3(signature = (capacity = 100_000))]
    fn new(capacity: i64) -> PyResult<Self> {
        // Taken signed so that a negative capacity is a ValueError like 0, not an OverflowError.
        let capacity = usize::try_from(capacity).unwrap_or(0);
        Ok(Self { inner: Arc::new(cache::ScoreCache::new(capacity).map_err(to_py)?) })
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
    #[getter]
    fn hits(&self) -> u64 {
        self.inner.hits()
    }
    #[getter]
    fn misses(&self) -> u64 {
        self.inner.misses()
    }
    #[getter]
    fn evictions(&self) -> u64 {
        self.inner.evictions()
    }
    fn __len__(&self) -> usize {
        self.inner.len()
    }
    fn clear(&self) {
        self.inner.clear();
    }
    fn reset_counters(&self) {
        self.inner.reset_counters();
    }
    /// Look up scores; None for a miss. Counts hits and misses.
    fn get_many(&self, py: Python<'_>, fingerprint: &str, query: &str, passages: Vec<String>) -> Vec<Option<f32>> {
        let keys: Vec<u128> = passages.iter().map(|p| cache::cache_key(fingerprint, query, p)).collect();
        py.detach(|| self.inner.get_many(&keys))
    }
    /// Store scores for (query, passage) pairs under a model fingerprint.
    fn put_many(&self, fingerprint: &str, query: &str, passages: Vec<String>, scores: Vec<f32>) -> PyResult<()> {
        if passages.len() != scores.len() {
            return Err(PyValueError::new_err(format!(
                "put_many: {} passages but {} scores",
                passages.len(),
                scores.len()
            )));
        }
        let items: Vec<(u128, f32)> =
            passages.iter().zip(scores).map(|(p, s)| (cache::cache_key(fingerprint, query, p), s)).collect();
        self.inner.put_many(&items);
        Ok(())
    }
    fn __repr__(&self) -> String {
        format!(
            "ScoreCache(capacity={}, len={}, hits={}, misses={}, evictions={})",
            self.inner.capacity(),
            self.inner.len(),
            self.inner.hits(),
            self.inner.misses(),
            self.inner.evictions()
        )
    }
}

/// The cache key of a (fingerprint, query, passage) triple as 32 hex digits (shared with
/// external cache tiers such as Redis).
#[pyfunction]
fn cache_key(fingerprint: &str, query: &str, passage: &str) -> String {
    format!("{:032x}", cache::cache_key(fingerprint, query, passage))
}

/// One passage's `score_details` row.
type Details = (f32, usize, usize, usize, usize, usize, usize, usize);
/// One encoded pair: (token ids, token type ids).
type Pair = (Vec<i64>, Vec<i64>);

/// Cross-encoder session: scores (query, passage) pairs. Concurrent calls tokenize in parallel
/// (the GIL is released) and then queue for the session, whose run uses `threads` intra-op threads.
#[pyclass(name = "CrossEncoderCore", module = "lrt_rerank._core", frozen)]
struct PyCrossEncoder {
    inner: Arc<cross::CrossEncoderCore>,
    /// The cache key's fingerprint: the model's, plus the window settings (see
    /// `WindowOptions::cache_fingerprint`).
    fingerprint: String,
    /// The model's fingerprint as given.
    model_fingerprint: String,
    cache: Option<Arc<cache::ScoreCache>>,
}

fn window_options(
    long_documents: &str,
    window_stride: Option<usize>,
    max_windows: usize,
    aggregate: &str,
    max_tokens_per_doc: Option<usize>,
) -> PyResult<windows::WindowOptions> {
    let options = windows::WindowOptions {
        long_documents: windows::LongDocuments::parse(long_documents).map_err(to_py)?,
        stride: window_stride,
        max_windows,
        aggregate: windows::Aggregate::parse(aggregate).map_err(to_py)?,
        max_passage_tokens: max_tokens_per_doc,
    };
    options.validate().map_err(to_py)?;
    Ok(options)
}

#[pymethods]
impl PyCrossEncoder {
    #[new]
    #[pyo3(signature = (
        model_dir, max_length, fingerprint, threads = None, batch_size = 16, cache = None, token_budget = None,
        long_documents = "truncate", window_stride = None, max_windows = 8, aggregate = "max", max_tokens_per_doc = None,
        backend = "ort", precision = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        model_dir: PathBuf,
        max_length: usize,
        fingerprint: String,
        threads: Option<usize>,
        batch_size: usize,
        cache: Option<PyRef<'_, PyScoreCache>>,
        token_budget: Option<usize>,
        long_documents: &str,
        window_stride: Option<usize>,
        max_windows: usize,
        aggregate: &str,
        max_tokens_per_doc: Option<usize>,
        backend: &str,
        precision: Option<&str>,
    ) -> PyResult<Self> {
        // The parameters are exactly the Python ones; the GIL token comes from `Python::attach`
        // (already held here, so it only borrows it) rather than from one more parameter.
        let defaults = cross::CrossEncoderOptions::default();
        let options = cross::CrossEncoderOptions {
            max_length,
            threads: threads.unwrap_or(defaults.threads),
            batch_size,
            token_budget: token_budget.unwrap_or(defaults.token_budget),
            windows: window_options(long_documents, window_stride, max_windows, aggregate, max_tokens_per_doc)?,
            runtime: runtime_of(backend, precision)?,
        };
        // Cached scores are keyed by the model and, for windows, by the window settings.
        let model_fingerprint = fingerprint;
        let fingerprint = options.windows.cache_fingerprint(&model_fingerprint);
        let inner = load_detached(|| cross::CrossEncoderCore::load(&model_dir, &options))?;
        Ok(Self { inner, fingerprint, model_fingerprint, cache: cache.map(|c| c.inner.clone()) })
    }

    /// This model (the same sessions, tokenizer and cache) under other window settings.
    #[pyo3(signature = (long_documents = "truncate", window_stride = None, max_windows = 8, aggregate = "max", max_tokens_per_doc = None))]
    fn with_windows(
        &self,
        long_documents: &str,
        window_stride: Option<usize>,
        max_windows: usize,
        aggregate: &str,
        max_tokens_per_doc: Option<usize>,
    ) -> PyResult<Self> {
        let options = window_options(long_documents, window_stride, max_windows, aggregate, max_tokens_per_doc)?;
        let inner = self.inner.with_windows(options).map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(inner),
            fingerprint: options.cache_fingerprint(&self.model_fingerprint),
            model_fingerprint: self.model_fingerprint.clone(),
            cache: self.cache.clone(),
        })
    }

    #[getter]
    fn model_fingerprint(&self) -> &str {
        &self.model_fingerprint
    }
    #[getter]
    fn max_tokens_per_doc(&self) -> Option<usize> {
        self.inner.windows().max_passage_tokens
    }

    /// Per passage, without scoring (tokenization only): (tokens, tokens scored, windows scored,
    /// windows dropped) as `score_details` would report them.
    fn window_stats(&self, py: Python<'_>, query: String, passages: Vec<String>) -> PyResult<Vec<(usize, usize, usize, usize)>> {
        let inner = self.inner.clone();
        let stats = detached(py, passages, move |refs| inner.window_stats(&query, refs))?;
        Ok(stats.into_iter().map(|p| (p.tokens, p.tokens_scored, p.spans.len(), p.dropped)).collect())
    }

    #[getter]
    fn long_documents(&self) -> &'static str {
        self.inner.windows().long_documents.name()
    }
    #[getter]
    fn window_stride(&self) -> Option<usize> {
        self.inner.windows().stride
    }
    #[getter]
    fn max_windows(&self) -> usize {
        self.inner.windows().max_windows
    }
    #[getter]
    fn aggregate(&self) -> &'static str {
        self.inner.windows().aggregate.name()
    }
    /// Special tokens the model's pair template adds (3 for BERT, 4 for XLM-R).
    #[getter]
    fn pair_special_tokens(&self) -> usize {
        self.inner.tokenizer().pair_specials()
    }

    /// Tokens per window for `query` (None when the query alone leaves no room).
    fn window_width(&self, py: Python<'_>, query: String) -> PyResult<Option<usize>> {
        let inner = self.inner.clone();
        py.detach(move || guarded(|| inner.tokenizer().window_width(&query))).map_err(to_py)
    }

    /// Per passage: (score, winning window, span start, span end (characters), tokens, tokens
    /// scored, windows scored, windows dropped). Not cached.
    fn score_details(&self, py: Python<'_>, query: String, passages: Vec<String>) -> PyResult<Vec<Details>> {
        let inner = self.inner.clone();
        let details = detached(py, passages, move |refs| inner.score_details(&query, refs))?;
        Ok(details
            .into_iter()
            .map(|d| (d.score, d.window, d.span.0, d.span.1, d.tokens, d.tokens_scored, d.windows_scored, d.windows_dropped))
            .collect())
    }

    /// Each window as this engine feeds it: per passage, (token ids, token type ids) per window.
    fn encode_windows(&self, py: Python<'_>, query: String, passages: Vec<String>) -> PyResult<Vec<Vec<Pair>>> {
        let inner = self.inner.clone();
        let plans = detached(py, passages, move |refs| {
            let w = inner.windows();
            let (cap, _) = inner.cap_and_aggregate();
            inner.tokenizer().encode_windows(&query, refs, w.stride, cap, w.max_passage_tokens)
        })?;
        Ok(plans.into_iter().map(|p| p.encs.into_iter().map(|e| (e.ids, e.type_ids)).collect()).collect())
    }

    #[getter]
    fn max_length(&self) -> usize {
        self.inner.tokenizer().max_length()
    }
    #[getter]
    fn batch_size(&self) -> usize {
        self.inner.batching().batch_size
    }
    #[getter]
    fn token_budget(&self) -> usize {
        self.inner.batching().token_budget
    }
    #[getter]
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    #[getter]
    fn feeds_token_type_ids(&self) -> bool {
        self.inner.model().feeds_token_type_ids()
    }
    /// Batches run through the ONNX session since load (the load-time probe included).
    #[getter]
    fn batches_run(&self) -> u64 {
        self.inner.model().runs()
    }
    /// (backend, precision) the model runs at: ("ort", "graph") or ("openvino", "bf16" | "f32").
    #[getter]
    fn runs_as(&self) -> (&'static str, String) {
        self.inner.model().runs_as()
    }

    /// Raw logits (float32) for each passage, in input order. With a cache, only misses run.
    fn score<'py>(&self, py: Python<'py>, query: String, passages: Vec<String>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let inner = self.inner.clone();
        let cache = self.cache.clone();
        let fp = self.fingerprint.clone();
        let scores = py
            .detach(move || guarded(|| inner.score_with_cache(cache.as_deref(), &fp, &query, &passages)))
            .map_err(to_py)?;
        Ok(PyArray1::from_vec(py, scores))
    }

    /// Token ids and type ids of each pair as this engine feeds them (for parity checks).
    fn encode(&self, py: Python<'_>, query: String, passages: Vec<String>) -> PyResult<Vec<(Vec<i64>, Vec<i64>)>> {
        let inner = self.inner.clone();
        let encs = detached(py, passages, move |refs| inner.tokenizer().encode_pairs(&query, refs))?;
        Ok(encs.into_iter().map(|e| (e.ids, e.type_ids)).collect())
    }

    /// Padded token count of one call under this engine's batching, and under one batch padded
    /// to the longest pair: (length-bucketed, pad-to-longest, real tokens).
    fn padding_stats(&self, py: Python<'_>, query: String, passages: Vec<String>) -> PyResult<(usize, usize, usize)> {
        let inner = self.inner.clone();
        detached(py, passages, move |refs| inner.padding_stats(&query, refs))
    }
}

/// Bi-encoder session: mean- or CLS-pooled embeddings, L2-normalised unless asked not to be.
#[pyclass(name = "BiEncoderCore", module = "lrt_rerank._core", frozen)]
struct PyBiEncoder {
    inner: Arc<bi::BiEncoderCore>,
}

#[pymethods]
impl PyBiEncoder {
    #[new]
    #[pyo3(signature = (
        model_dir, max_length, threads = None, batch_size = 32, pooling = "mean", normalize = true, token_budget = None,
        backend = "ort", precision = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        model_dir: PathBuf,
        max_length: usize,
        threads: Option<usize>,
        batch_size: usize,
        pooling: &str,
        normalize: bool,
        token_budget: Option<usize>,
        backend: &str,
        precision: Option<&str>,
    ) -> PyResult<Self> {
        // As for CrossEncoderCore: the Python parameters only, the GIL token from `Python::attach`.
        let defaults = bi::BiEncoderOptions::default();
        let options = bi::BiEncoderOptions {
            max_length,
            threads: threads.unwrap_or(defaults.threads),
            batch_size,
            token_budget: token_budget.unwrap_or(defaults.token_budget),
            pooling: crate::pooling::Pooling::parse(pooling).map_err(to_py)?,
            normalize,
            runtime: runtime_of(backend, precision)?,
        };
        Ok(Self { inner: load_detached(|| bi::BiEncoderCore::load(&model_dir, &options))? })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    #[getter]
    fn max_length(&self) -> usize {
        self.inner.tokenizer().max_length()
    }
    #[getter]
    fn feeds_token_type_ids(&self) -> bool {
        self.inner.model().feeds_token_type_ids()
    }
    #[getter]
    fn pooling(&self) -> &'static str {
        self.inner.pooling().name()
    }
    /// (backend, precision) the model runs at, as `CrossEncoderCore.runs_as`.
    #[getter]
    fn runs_as(&self) -> (&'static str, String) {
        self.inner.model().runs_as()
    }
    #[getter]
    fn normalize(&self) -> bool {
        self.inner.normalize()
    }

    /// float32 array (n, dim), pooled as the model asks, rows L2-normalised unless `normalize` is off.
    fn embed<'py>(&self, py: Python<'py>, texts: Vec<String>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let inner = self.inner.clone();
        let dim = inner.dim();
        let n = texts.len();
        let flat = detached(py, texts, move |refs| inner.embed(refs))?;
        let arr = PyArray1::from_vec(py, flat);
        arr.reshape([n, dim])
    }

    /// Token ids of each text as this engine feeds them (for parity checks).
    fn encode(&self, py: Python<'_>, texts: Vec<String>) -> PyResult<Vec<Vec<i64>>> {
        let inner = self.inner.clone();
        let encs = detached(py, texts, move |refs| inner.tokenizer().encode_texts(refs))?;
        Ok(encs.into_iter().map(|e| e.ids).collect())
    }
}

/// Late-interaction (ColBERT) session: L2-normalised token matrices of queries and documents, MaxSim.
#[pyclass(name = "ColbertCore", module = "lrt_rerank._core", frozen)]
struct PyColbert {
    inner: Arc<colbert::ColbertCore>,
}

/// Token matrices as (float32 array (tokens, dim), token count per text).
type Matrices<'py> = (Bound<'py, PyArray2<f32>>, Vec<usize>);

fn matrices<'py>(py: Python<'py>, m: colbert::TokenMatrices, dim: usize) -> PyResult<Matrices<'py>> {
    let rows = m.data.len() / dim.max(1);
    Ok((PyArray1::from_vec(py, m.data).reshape([rows, dim])?, m.lengths))
}

#[pymethods]
impl PyColbert {
    #[new]
    #[pyo3(signature = (
        model_dir, query_length, document_length, mask_id, query_marker = None, document_marker = None,
        query_expansion = true, attend_expansion = false, skiplist = Vec::new(), threads = None, batch_size = 32, token_budget = None,
        backend = "ort", precision = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        model_dir: PathBuf,
        query_length: usize,
        document_length: usize,
        mask_id: i64,
        query_marker: Option<i64>,
        document_marker: Option<i64>,
        query_expansion: bool,
        attend_expansion: bool,
        skiplist: Vec<i64>,
        threads: Option<usize>,
        batch_size: usize,
        token_budget: Option<usize>,
        backend: &str,
        precision: Option<&str>,
    ) -> PyResult<Self> {
        let defaults = colbert::ColbertOptions::default();
        let options = colbert::ColbertOptions {
            query_length,
            document_length,
            query_marker,
            document_marker,
            query_expansion,
            attend_expansion,
            mask_id,
            skiplist,
            threads: threads.unwrap_or(defaults.threads),
            batch_size,
            token_budget: token_budget.unwrap_or(defaults.token_budget),
            runtime: runtime_of(backend, precision)?,
        };
        Ok(Self { inner: load_detached(|| colbert::ColbertCore::load(&model_dir, &options))? })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    #[getter]
    fn token_budget(&self) -> usize {
        self.inner.options().token_budget
    }
    /// Batches run through the ONNX sessions since load (the load-time probe included).
    #[getter]
    fn batches_run(&self) -> u64 {
        self.inner.model().runs()
    }
    /// (backend, precision) the model runs at, as `CrossEncoderCore.runs_as`.
    #[getter]
    fn runs_as(&self) -> (&'static str, String) {
        self.inner.model().runs_as()
    }
    /// Threads (sessions) of this model; MaxSim splits its documents over as many.
    #[getter]
    fn threads(&self) -> usize {
        self.inner.options().threads
    }

    /// Query token matrices: (float32 (tokens, dim), tokens per query).
    fn encode_queries<'py>(&self, py: Python<'py>, queries: Vec<String>) -> PyResult<Matrices<'py>> {
        let inner = self.inner.clone();
        let m = detached(py, queries, move |refs| inner.encode_queries(refs))?;
        matrices(py, m, self.inner.dim())
    }

    /// Document token matrices (padding and skiplist tokens removed): (float32 (tokens, dim), tokens per document).
    fn encode_documents<'py>(&self, py: Python<'py>, documents: Vec<String>) -> PyResult<Matrices<'py>> {
        let inner = self.inner.clone();
        let m = detached(py, documents, move |refs| inner.encode_documents(refs))?;
        matrices(py, m, self.inner.dim())
    }

    /// (ids, attention mask) of each query as fed to the model.
    fn query_ids(&self, py: Python<'_>, queries: Vec<String>) -> PyResult<Vec<(Vec<i64>, Vec<i64>)>> {
        let inner = self.inner.clone();
        detached(py, queries, move |refs| inner.query_ids(refs))
    }

    /// Token ids of each document as fed to the model.
    fn document_ids(&self, py: Python<'_>, documents: Vec<String>) -> PyResult<Vec<Vec<i64>>> {
        let inner = self.inner.clone();
        detached(py, documents, move |refs| inner.document_ids(refs))
    }

    /// MaxSim scores (float32) of each passage for the query, in input order.
    fn score<'py>(&self, py: Python<'py>, query: String, passages: Vec<String>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let inner = self.inner.clone();
        let scores = detached(py, passages, move |refs| inner.score(&query, refs))?;
        Ok(PyArray1::from_vec(py, scores))
    }
}

/// MaxSim of a query matrix (nq, dim) against documents stacked in one (tokens, dim) matrix, with
/// each document's token count: float32 scores in document order. The GIL is released.
#[pyfunction]
#[pyo3(signature = (query, documents, lengths, threads = 1))]
fn maxsim<'py>(
    py: Python<'py>,
    query: PyReadonlyArray2<'py, f32>,
    documents: PyReadonlyArray2<'py, f32>,
    lengths: Vec<usize>,
    threads: usize,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let dim = query.shape()[1];
    if documents.shape()[1] != dim {
        return Err(PyValueError::new_err(format!(
            "maxsim: the query has dim {dim}, the documents {}",
            documents.shape()[1]
        )));
    }
    let (q, d) = (query.as_slice()?, documents.as_slice()?);
    let mut spans = Vec::with_capacity(lengths.len());
    let mut offset = 0usize;
    for &n in &lengths {
        let end = offset.saturating_add(n);
        spans.push((offset, end));
        offset = end;
    }
    if offset != documents.shape()[0] {
        return Err(PyValueError::new_err(format!(
            "maxsim: the lengths say {offset} document tokens, the documents hold {}",
            documents.shape()[0]
        )));
    }
    let scores =
        py.detach(|| guarded(|| colbert::maxsim_spans(q, colbert::Rows::F32(d), &spans, dim, threads))).map_err(to_py)?;
    Ok(PyArray1::from_vec(py, scores))
}

/// MaxSim of a query matrix (nq, dim) against stored document rows: `rows` is a (tokens, dim) array of
/// float16 bits (uint16), int8 (with `scale`, float32 (dim,): value = int8 × scale) or float32, memory-mapped
/// or not; document i is rows[spans[i].0 .. spans[i].1]. Float32 scores in span order, computed without
/// the GIL over `threads` threads.
#[pyfunction]
#[pyo3(signature = (query, rows, spans, scale = None, threads = 1))]
fn maxsim_stored<'py>(
    py: Python<'py>,
    query: PyReadonlyArray2<'py, f32>,
    rows: &Bound<'py, PyAny>,
    spans: Vec<(usize, usize)>,
    scale: Option<PyReadonlyArray1<'py, f32>>,
    threads: usize,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let dim = query.shape()[1];
    let q = query.as_slice()?;
    let f16 = rows.cast::<PyArray2<u16>>().ok().map(|a| a.readonly());
    let i8s = rows.cast::<PyArray2<i8>>().ok().map(|a| a.readonly());
    let f32s = rows.cast::<PyArray2<f32>>().ok().map(|a| a.readonly());
    let scale = scale.as_ref().map(|s| s.as_slice()).transpose()?;
    let (view, cols) = match (&f16, &i8s, &f32s, scale) {
        (Some(a), _, _, None) => (colbert::Rows::F16(a.as_slice()?), a.shape()[1]),
        (_, Some(a), _, Some(scale)) => (colbert::Rows::I8 { data: a.as_slice()?, scale }, a.shape()[1]),
        (_, _, Some(a), None) => (colbert::Rows::F32(a.as_slice()?), a.shape()[1]),
        (_, Some(_), _, None) => return Err(PyValueError::new_err("maxsim_stored: int8 rows need their per-dimension scale")),
        (None, None, None, _) => {
            return Err(PyValueError::new_err("maxsim_stored: rows must be a 2-D uint16 (float16 bits), int8 or float32 array"))
        }
        _ => return Err(PyValueError::new_err("maxsim_stored: a scale goes with int8 rows only")),
    };
    if cols != dim {
        return Err(PyValueError::new_err(format!("maxsim_stored: the query has dim {dim}, the stored rows {cols}")));
    }
    let scores = py.detach(|| guarded(|| colbert::maxsim_spans(q, view, &spans, dim, threads))).map_err(to_py)?;
    Ok(PyArray1::from_vec(py, scores))
}

/// Reciprocal Rank Fusion of ranked id lists: score = Σ weight / (k + rank), rank from 1.
#[pyfunction]
#[pyo3(signature = (runs, k = 60.0, weights = None, top_k = None))]
fn rrf(runs: Vec<Vec<String>>, k: f64, weights: Option<Vec<f64>>, top_k: Option<i64>) -> PyResult<Vec<(String, f64)>> {
    // Taken signed so that a negative top_k is a ValueError, not an OverflowError.
    let top_k = top_k
        .map(|t| usize::try_from(t).map_err(|_| PyValueError::new_err(format!("rrf: top_k must be >= 0, got {t}"))))
        .transpose()?;
    fusion::rrf(&runs, k, weights.as_deref(), top_k).map_err(to_py)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("LrtError", py.get_type::<LrtError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("InferenceError", py.get_type::<InferenceError>())?;
    m.add("RuntimeLoadError", py.get_type::<RuntimeLoadError>())?;
    m.add_function(wrap_pyfunction!(init_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(runtime_ready, m)?)?;
    m.add_function(wrap_pyfunction!(init_openvino, m)?)?;
    m.add_function(wrap_pyfunction!(openvino_ready, m)?)?;
    m.add_function(wrap_pyfunction!(cache_key, m)?)?;
    m.add_function(wrap_pyfunction!(rrf, m)?)?;
    m.add_class::<PyScoreCache>()?;
    m.add_class::<PyCrossEncoder>()?;
    m.add_class::<PyBiEncoder>()?;
    m.add_class::<PyColbert>()?;
    m.add_function(wrap_pyfunction!(maxsim, m)?)?;
    m.add_function(wrap_pyfunction!(maxsim_stored, m)?)?;
    Ok(())
}
