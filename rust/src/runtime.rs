//! The inference runtimes behind the encoders: a small `Backend` trait (one loaded graph that runs
//! padded batches, in the spirit of text-embeddings-inference's `backends/`), ONNX Runtime through
//! `ort` (libonnxruntime loaded dynamically, once per process, by `init_runtime`), and `Session`,
//! the session of whichever runtime a model was loaded with (`Runtime`: ONNX Runtime or OpenVINO,
//! see `openvino.rs`). The session pool, batching and the encoders only see the trait.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session as OrtGraphSession;
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::batching::PaddedBatch;
use crate::error::{CoreError, Result};
use crate::openvino::{OvSession, Precision};

/// A dimension of a declared shape that is not fixed (ONNX Runtime reports symbolic and unknown
/// dimensions as -1).
pub const DYNAMIC: i64 = -1;

/// The graph inputs the engine knows how to feed.
pub const ID_INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];

/// What the engine needs to know of a loaded graph: which id inputs it takes and which output it
/// reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphSpec {
    /// Whether the graph takes `token_type_ids` (it always takes `input_ids` and `attention_mask`).
    pub feeds_token_type_ids: bool,
    /// Name of the first graph output, the one read.
    pub output_name: String,
    /// Its declared shape; `DYNAMIC` marks a dynamic (symbolic) dimension.
    pub output_dims: Vec<i64>,
}

/// A graph's `GraphSpec` from a runtime's view of it: each input's name and, where it is not an int64
/// [batch, sequence] tensor, what it is; the first output's name and its declared dims or, where it
/// is not a float32 tensor, what it is. Errors are model errors naming `path`.
pub fn graph_spec(
    path: &Path,
    inputs: Vec<(String, Option<String>)>,
    output: Option<(String, std::result::Result<Vec<i64>, String>)>,
) -> Result<GraphSpec> {
    let mut names = Vec::new();
    for (name, mismatch) in inputs {
        if !ID_INPUTS.contains(&name.as_str()) {
            return Err(CoreError::model(
                path,
                format!("graph input '{name}' is not one of input_ids, attention_mask, token_type_ids"),
            ));
        }
        if let Some(found) = mismatch {
            return Err(CoreError::model(
                path,
                format!("graph input '{name}' must be an int64 tensor [batch, sequence], found {found}"),
            ));
        }
        names.push(name);
    }
    for required in ["input_ids", "attention_mask"] {
        if !names.iter().any(|n| n == required) {
            return Err(CoreError::model(path, format!("graph has no '{required}' input (inputs: {names:?})")));
        }
    }
    let (output_name, dims) = output.ok_or_else(|| CoreError::model(path, "graph has no outputs"))?;
    if output_name.is_empty() {
        return Err(CoreError::model(path, "the first graph output has no name"));
    }
    let output_dims = dims.map_err(|found| {
        CoreError::model(path, format!("first graph output '{output_name}' must be a float32 tensor, found {found}"))
    })?;
    Ok(GraphSpec { feeds_token_type_ids: names.iter().any(|n| n == "token_type_ids"), output_name, output_dims })
}

/// The output read from one run: its shape and its data, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct RawOutput {
    pub shape: Vec<i64>,
    pub data: Vec<f32>,
}

/// One loaded graph of a runtime. A session runs one batch at a time (`&mut self`); the pool
/// holds one per worker behind a lock.
pub trait Backend: Send {
    /// Check the graph's inputs and first output against what the engine feeds and reads, and
    /// describe them. Errors are model errors naming `path`.
    fn describe(&self, path: &Path) -> Result<GraphSpec>;

    /// Run one padded batch, feeding the inputs `spec` names, and return the output it names.
    /// Errors are inference errors naming the model file.
    fn run(&mut self, batch: &PaddedBatch, spec: &GraphSpec) -> Result<RawOutput>;
}

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Load libonnxruntime from `path` and create the process-wide environment. Idempotent: once a
/// library is loaded, later calls return Ok without loading another one.
pub fn init_runtime(path: &Path) -> Result<()> {
    let _guard = INIT_LOCK.lock().map_err(|_| CoreError::Runtime { runtime: "ONNX Runtime", path: path.display().to_string(), msg: "init lock poisoned".into() })?;
    if ENVIRONMENT.get().is_some() {
        return Ok(());
    }
    let err = |msg: String| CoreError::Runtime { runtime: "ONNX Runtime", path: path.display().to_string(), msg };
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
        runtime: "ONNX Runtime",
        path: "<none>".into(),
        msg: "ONNX Runtime is not initialised: call init_runtime(path) first".into(),
    })
}

/// An ONNX Runtime session (the one `Backend`).
pub struct OrtSession {
    session: OrtGraphSession,
    /// The model file, for error messages.
    path: PathBuf,
}

impl OrtSession {
    /// Load the graph at `path` (a file known to exist and to be non-empty) with `intra_threads`
    /// intra-op threads. Errors name the model file.
    pub fn load(path: &Path, intra_threads: usize) -> Result<Self> {
        let env = environment()?;
        let fail = |what: &str, e: String| CoreError::model(path, format!("{what}: {e}"));
        let session = OrtGraphSession::builder(env)
            .map_err(|e| fail("cannot create a session", e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| fail("cannot set the optimisation level", e.to_string()))?
            .with_intra_threads(intra_threads.max(1))
            .map_err(|e| fail("cannot set intra-op threads", e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| fail("cannot set inter-op threads", e.to_string()))?
            // Idle intra-op workers would spin after each run, taking the cores from whatever runs
            // next in the same request (MaxSim's threads, another model's sessions).
            .with_intra_op_spinning(false)
            .map_err(|e| fail("cannot turn off intra-op spinning", e.to_string()))?
            .commit_from_file(path)
            .map_err(|e| fail("not a loadable ONNX model", e.to_string()))?;
        Ok(Self { session, path: path.to_path_buf() })
    }
}

impl Backend for OrtSession {
    fn describe(&self, path: &Path) -> Result<GraphSpec> {
        let inputs = self
            .session
            .inputs()
            .iter()
            .map(|input| {
                let mismatch = match input.dtype() {
                    ValueType::Tensor { ty: TensorElementType::Int64, shape, .. } if shape.len() == 2 => None,
                    other => Some(format!("{other:?}")),
                };
                (input.name().to_string(), mismatch)
            })
            .collect();
        let output = self.session.outputs().first().map(|output| {
            let dims = match output.dtype() {
                ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } => Ok(shape.to_vec()),
                other => Err(format!("{other:?}")),
            };
            (output.name().to_string(), dims)
        });
        graph_spec(path, inputs, output)
    }

    fn run(&mut self, batch: &PaddedBatch, spec: &GraphSpec) -> Result<RawOutput> {
        let path = &self.path;
        let infer = |e: ort::Error| CoreError::Inference(format!("{}: {e}", path.display()));
        let shape = batch.shape();
        let mut inputs = ort::inputs! {
            "input_ids" => TensorRef::from_array_view((shape, batch.ids.as_slice())).map_err(infer)?,
            "attention_mask" => TensorRef::from_array_view((shape, batch.mask.as_slice())).map_err(infer)?,
        };
        if spec.feeds_token_type_ids {
            inputs.push((
                "token_type_ids".into(),
                TensorRef::from_array_view((shape, batch.type_ids.as_slice())).map_err(infer)?.into(),
            ));
        }
        let outputs = self.session.run(inputs).map_err(infer)?;
        let value = outputs.get(spec.output_name.as_str()).ok_or_else(|| {
            CoreError::Inference(format!("{}: the run returned no output '{}'", path.display(), spec.output_name))
        })?;
        let (out_shape, data) = value.try_extract_tensor::<f32>().map_err(infer)?;
        Ok(RawOutput { shape: out_shape.to_vec(), data: data.to_vec() })
    }
}

/// Which runtime loads a model: ONNX Runtime, or OpenVINO at a precision (None: its CPU default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    #[default]
    Ort,
    OpenVino(Option<Precision>),
}

impl Runtime {
    /// `backend` "ort" or "openvino"; `precision` ("f32", "bf16") applies to OpenVINO only.
    pub fn parse(backend: &str, precision: Option<&str>) -> Result<Self> {
        let precision = precision.map(Precision::parse).transpose()?;
        match (backend, precision) {
            ("ort", None) => Ok(Self::Ort),
            ("ort", Some(_)) => Err(CoreError::InvalidArgument(
                "precision applies to backend 'openvino' only (ONNX Runtime runs the graph's own types)".into(),
            )),
            ("openvino", p) => Ok(Self::OpenVino(p)),
            (other, _) => Err(CoreError::InvalidArgument(format!("backend must be 'ort' or 'openvino', got '{other}'"))),
        }
    }

    /// The graph file this runtime loads from a model directory: OpenVINO prefers an IR
    /// (`openvino_model.xml`, written at import) over `model.onnx`.
    pub fn model_file(self, dir: &Path) -> PathBuf {
        let ir = dir.join(OPENVINO_IR);
        match self {
            Self::OpenVino(_) if ir.is_file() => ir,
            _ => dir.join("model.onnx"),
        }
    }
}

/// The OpenVINO IR of a model directory (with its `.bin` beside it), when the import wrote one.
pub const OPENVINO_IR: &str = "openvino_model.xml";

/// A session of either runtime.
pub enum Session {
    Ort(OrtSession),
    OpenVino(OvSession),
}

impl Session {
    pub fn load(runtime: Runtime, path: &Path, intra_threads: usize) -> Result<Self> {
        match runtime {
            Runtime::Ort => OrtSession::load(path, intra_threads).map(Self::Ort),
            Runtime::OpenVino(p) => OvSession::load(path, intra_threads, p).map(Self::OpenVino),
        }
    }

    /// (backend, precision it runs at): ("ort", "graph") or ("openvino", "bf16" | "f32").
    pub fn runs_as(&self) -> (&'static str, String) {
        match self {
            Self::Ort(_) => ("ort", "graph".into()),
            Self::OpenVino(s) => ("openvino", s.precision().to_string()),
        }
    }
}

impl Backend for Session {
    fn describe(&self, path: &Path) -> Result<GraphSpec> {
        match self {
            Self::Ort(s) => s.describe(path),
            Self::OpenVino(s) => s.describe(path),
        }
    }

    fn run(&mut self, batch: &PaddedBatch, spec: &GraphSpec) -> Result<RawOutput> {
        match self {
            Self::Ort(s) => s.run(batch, spec),
            Self::OpenVino(s) => s.run(batch, spec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_a_session_needs_the_runtime() {
        // The unit tests never load libonnxruntime: a session cannot be created without it.
        if runtime_ready() {
            return;
        }
        match OrtSession::load(Path::new("model.onnx"), 1) {
            Err(CoreError::Runtime { path, msg, .. }) => {
                assert_eq!(path, "<none>");
                assert!(msg.contains("call init_runtime(path) first"), "{msg}");
            }
            Err(other) => panic!("expected a runtime error, got {other:?}"),
            Ok(_) => panic!("a session loaded without a runtime"),
        }
    }

    #[test]
    fn runtimes_parse_by_name_and_choose_their_file() {
        assert_eq!(Runtime::parse("ort", None).ok(), Some(Runtime::Ort));
        assert_eq!(Runtime::parse("openvino", Some("bf16")).ok(), Some(Runtime::OpenVino(Some(Precision::Bf16))));
        let msg = |r: Result<Runtime>| match r {
            Err(CoreError::InvalidArgument(m)) => m,
            other => panic!("expected an invalid argument, got {other:?}"),
        };
        assert!(msg(Runtime::parse("tensorrt", None)).contains("'tensorrt'"));
        assert!(msg(Runtime::parse("ort", Some("bf16"))).contains("applies to backend 'openvino' only"));
        let dir = std::env::temp_dir().join(format!("lrt-runtime-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        assert_eq!(Runtime::OpenVino(None).model_file(&dir), dir.join("model.onnx"));
        std::fs::write(dir.join(OPENVINO_IR), b"<net/>").expect("ir");
        assert_eq!(Runtime::OpenVino(None).model_file(&dir), dir.join(OPENVINO_IR));
        assert_eq!(Runtime::Ort.model_file(&dir), dir.join("model.onnx"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_runtime_library_is_a_runtime_error() {
        let missing = Path::new("/nonexistent/libonnxruntime.so");
        if runtime_ready() {
            // idempotent once loaded: later calls do nothing
            assert!(init_runtime(missing).is_ok());
            return;
        }
        match init_runtime(missing) {
            Err(CoreError::Runtime { path, msg, .. }) => {
                assert_eq!(path, missing.display().to_string());
                assert!(msg.starts_with("file not found"), "{msg}");
            }
            other => panic!("expected a runtime error, got {other:?}"),
        }
        assert!(!runtime_ready());
    }
}
