//! OpenVINO as a second `Backend`: `libopenvino_c` (shipped by the PyPI `openvino` wheel) loaded
//! at run time through `libloading`, once per process, by `init_openvino`, and a thin binding to
//! the few C API calls the engine needs (read an ONNX model or IR, compile it for CPU with a thread
//! count and an inference precision, run padded int64 batches with dynamic shapes).

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::{Mutex, OnceLock};

use libloading::Library;

use crate::batching::PaddedBatch;
use crate::error::{CoreError, Result};
use crate::runtime::{graph_spec, Backend, GraphSpec, RawOutput, DYNAMIC};

/// Sequence lengths are padded up to a multiple of this many tokens. OpenVINO's CPU plugin
/// prepares its kernels for each new input shape (about half a batch's run time more on the first
/// run of a shape, measured in benches/RESULTS.md, "Issue 33, round 2"); with length-sorted
/// batches nearly every batch of a call has a new length, so bucketing the length lets shapes repeat.
const SEQ_BUCKET: usize = 16;

/// `batch` with its sequence length padded up to a multiple of `bucket` (pad id, mask 0, type 0),
/// or None where it already is one. The added columns are masked out: the real tokens' outputs do
/// not change.
fn widen(batch: &PaddedBatch, bucket: usize) -> Option<PaddedBatch> {
    let seq_len = batch.seq_len.div_ceil(bucket.max(1)) * bucket.max(1);
    if seq_len == batch.seq_len {
        return None;
    }
    let grow = |data: &[i64], fill: i64| {
        let mut out = vec![fill; batch.rows * seq_len];
        for (dst, src) in out.chunks_mut(seq_len).zip(data.chunks(batch.seq_len)) {
            dst[..batch.seq_len].copy_from_slice(src);
        }
        out
    };
    Some(PaddedBatch {
        rows: batch.rows,
        seq_len,
        ids: grow(&batch.ids, batch.pad_id),
        mask: grow(&batch.mask, 0),
        type_ids: grow(&batch.type_ids, 0),
        pad_id: batch.pad_id,
    })
}

/// A per-token output (`[rows, widened, ...]`, its second axis dynamic in the graph) cut back to
/// the batch's own `seq_len` columns.
fn narrow(mut out: RawOutput, per_token: bool, widened: usize, seq_len: usize) -> RawOutput {
    if !per_token || widened == seq_len || out.shape.len() < 3 || out.shape[1] != widened as i64 {
        return out;
    }
    let inner: usize = out.shape[2..].iter().map(|&d| d.max(0) as usize).product();
    out.data = out.data.chunks(widened * inner).flat_map(|row| row[..seq_len * inner].iter().copied()).collect();
    out.shape[1] = seq_len as i64;
    out
}

/// `ov_element_type_e` codes of f32 and i64: the enum follows `ov::element::Type_t`, which lost its
/// leading `undefined` in 2025, so `init_openvino` finds which numbering the library uses.
#[derive(Clone, Copy)]
struct Codes {
    f32: u32,
    i64: u32,
}

#[repr(C)]
struct Dimension {
    min: i64,
    max: i64,
}

#[repr(C)]
struct PartialShape {
    rank: Dimension,
    dims: *mut Dimension,
}

#[repr(C)]
struct Shape {
    rank: i64,
    dims: *mut i64,
}

type Status = i32;
type Handle = *mut c_void;

/// The C API calls used, resolved once from the library.
struct Api {
    _lib: Library,
    core: usize,
    codes: Codes,
    get_error_info: unsafe extern "C" fn(Status) -> *const c_char,
    get_last_err_msg: Option<unsafe extern "C" fn() -> *const c_char>,
    free_str: unsafe extern "C" fn(*const c_char),
    read_model: unsafe extern "C" fn(Handle, *const c_char, *const c_char, *mut Handle) -> Status,
    model_free: unsafe extern "C" fn(Handle),
    compile_model: unsafe extern "C" fn(Handle, Handle, *const c_char, usize, *mut Handle, ...) -> Status,
    compiled_free: unsafe extern "C" fn(Handle),
    compiled_get_property: unsafe extern "C" fn(Handle, *const c_char, *mut *mut c_char) -> Status,
    create_request: unsafe extern "C" fn(Handle, *mut Handle) -> Status,
    request_free: unsafe extern "C" fn(Handle),
    inputs_size: unsafe extern "C" fn(Handle, *mut usize) -> Status,
    outputs_size: unsafe extern "C" fn(Handle, *mut usize) -> Status,
    const_input: unsafe extern "C" fn(Handle, usize, *mut Handle) -> Status,
    const_output: unsafe extern "C" fn(Handle, usize, *mut Handle) -> Status,
    port_free: unsafe extern "C" fn(Handle),
    port_name: unsafe extern "C" fn(Handle, *mut *mut c_char) -> Status,
    port_type: unsafe extern "C" fn(Handle, *mut u32) -> Status,
    port_shape: unsafe extern "C" fn(Handle, *mut PartialShape) -> Status,
    partial_shape_free: unsafe extern "C" fn(*mut PartialShape),
    shape_create: unsafe extern "C" fn(i64, *const i64, *mut Shape) -> Status,
    shape_free: unsafe extern "C" fn(*mut Shape) -> Status,
    tensor_from_host: unsafe extern "C" fn(u32, Shape, *mut c_void, *mut Handle) -> Status,
    tensor_free: unsafe extern "C" fn(Handle),
    tensor_shape: unsafe extern "C" fn(Handle, *mut Shape) -> Status,
    tensor_type: unsafe extern "C" fn(Handle, *mut u32) -> Status,
    tensor_data: unsafe extern "C" fn(Handle, *mut *mut c_void) -> Status,
    set_tensor: unsafe extern "C" fn(Handle, *const c_char, Handle) -> Status,
    get_output_tensor: unsafe extern "C" fn(Handle, usize, *mut Handle) -> Status,
    infer: unsafe extern "C" fn(Handle) -> Status,
}

static API: OnceLock<Api> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

fn runtime_error(path: &Path, msg: impl Into<String>) -> CoreError {
    CoreError::Runtime { runtime: "OpenVINO", path: path.display().to_string(), msg: msg.into() }
}

/// Load `libopenvino_c` from `path` and create the process-wide OpenVINO core. Idempotent.
pub fn init_openvino(path: &Path) -> Result<()> {
    let _guard = INIT_LOCK.lock().map_err(|_| runtime_error(path, "init lock poisoned"))?;
    if API.get().is_some() {
        return Ok(());
    }
    if !path.is_file() {
        return Err(runtime_error(path, "file not found (set LRT_OPENVINO_LIB or pip install lrt-rerank[openvino])"));
    }
    // SAFETY: loading the library runs its initialisers; libopenvino_c is a well-formed C library.
    let lib = unsafe { Library::new(path) }.map_err(|e| runtime_error(path, e.to_string()))?;
    let api = resolve(lib, path)?;
    let mut core: Handle = null_mut();
    // SAFETY: `ov_core_create` writes a new core to the out pointer.
    let create: unsafe extern "C" fn(*mut Handle) -> Status =
        *unsafe { api._lib.get(b"ov_core_create\0") }.map_err(|e| runtime_error(path, e.to_string()))?;
    let status = unsafe { create(&mut core) };
    if status != 0 || core.is_null() {
        return Err(runtime_error(path, format!("ov_core_create failed: {}", api.error(status))));
    }
    let codes = element_codes(&api, path)?;
    let _ = API.set(Api { core: core as usize, codes, ..api });
    Ok(())
}

/// The element type codes of this library: code 4 is f32 (4 bytes) in the numbering without
/// `undefined`, f16 (2 bytes) in the older one.
fn element_codes(api: &Api, path: &Path) -> Result<Codes> {
    type Create = unsafe extern "C" fn(u32, Shape, *mut Handle) -> Status;
    type ByteSize = unsafe extern "C" fn(Handle, *mut usize) -> Status;
    // SAFETY: the symbols' types are the C API's signatures of those names.
    let create: Create = *unsafe { api._lib.get(b"ov_tensor_create\0") }.map_err(|e| runtime_error(path, e.to_string()))?;
    let size: ByteSize =
        *unsafe { api._lib.get(b"ov_tensor_get_byte_size\0") }.map_err(|e| runtime_error(path, e.to_string()))?;
    let mut dims = [1i64];
    let mut tensor: Handle = null_mut();
    let mut bytes = 0usize;
    // SAFETY: a one-element tensor of type 4 is created, measured and freed.
    let status = unsafe { create(4, Shape { rank: 1, dims: dims.as_mut_ptr() }, &mut tensor) };
    api.check(status, "probe tensor").map_err(|e| runtime_error(path, e))?;
    let status = unsafe { size(tensor, &mut bytes) };
    unsafe { (api.tensor_free)(tensor) };
    api.check(status, "probe tensor size").map_err(|e| runtime_error(path, e))?;
    match bytes {
        4 => Ok(Codes { f32: 4, i64: 10 }),
        2 => Ok(Codes { f32: 5, i64: 11 }),
        other => Err(runtime_error(path, format!("unknown element type numbering (type 4 takes {other} bytes)"))),
    }
}

pub fn openvino_ready() -> bool {
    API.get().is_some()
}

fn resolve(lib: Library, path: &Path) -> Result<Api> {
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the symbol's type is the C API's signature of that name.
            *unsafe { lib.get(concat!($name, "\0").as_bytes()) }
                .map_err(|e| runtime_error(path, format!("not an OpenVINO C library ({}): {e}", $name)))?
        };
    }
    let last_err = unsafe { lib.get(b"ov_get_last_err_msg\0") }.ok().map(|s| *s);
    Ok(Api {
        core: 0,
        codes: Codes { f32: 0, i64: 0 },
        get_error_info: sym!("ov_get_error_info"),
        get_last_err_msg: last_err,
        free_str: sym!("ov_free"),
        read_model: sym!("ov_core_read_model"),
        model_free: sym!("ov_model_free"),
        compile_model: sym!("ov_core_compile_model"),
        compiled_free: sym!("ov_compiled_model_free"),
        compiled_get_property: sym!("ov_compiled_model_get_property"),
        create_request: sym!("ov_compiled_model_create_infer_request"),
        request_free: sym!("ov_infer_request_free"),
        inputs_size: sym!("ov_model_inputs_size"),
        outputs_size: sym!("ov_model_outputs_size"),
        const_input: sym!("ov_model_const_input_by_index"),
        const_output: sym!("ov_model_const_output_by_index"),
        port_free: sym!("ov_output_const_port_free"),
        port_name: sym!("ov_port_get_any_name"),
        port_type: sym!("ov_port_get_element_type"),
        port_shape: sym!("ov_port_get_partial_shape"),
        partial_shape_free: sym!("ov_partial_shape_free"),
        shape_create: sym!("ov_shape_create"),
        shape_free: sym!("ov_shape_free"),
        tensor_from_host: sym!("ov_tensor_create_from_host_ptr"),
        tensor_free: sym!("ov_tensor_free"),
        tensor_shape: sym!("ov_tensor_get_shape"),
        tensor_type: sym!("ov_tensor_get_element_type"),
        tensor_data: sym!("ov_tensor_data"),
        set_tensor: sym!("ov_infer_request_set_tensor"),
        get_output_tensor: sym!("ov_infer_request_get_output_tensor_by_index"),
        infer: sym!("ov_infer_request_infer"),
        _lib: lib,
    })
}

impl Api {
    /// The message of a failed call: OpenVINO's last error where the library keeps one.
    fn error(&self, status: Status) -> String {
        // SAFETY: both return static or thread-local NUL-terminated strings (or null).
        let text = |p: *const c_char| (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().trim().to_string());
        let last = self.get_last_err_msg.and_then(|f| text(unsafe { f() })).filter(|s| !s.is_empty());
        last.or_else(|| text(unsafe { (self.get_error_info)(status) })).unwrap_or_else(|| format!("status {status}"))
    }

    fn check(&self, status: Status, what: &str) -> std::result::Result<(), String> {
        if status == 0 {
            Ok(())
        } else {
            Err(format!("{what}: {}", self.error(status)))
        }
    }

    /// Take a C string the library allocated.
    fn take_str(&self, p: *mut c_char) -> String {
        if p.is_null() {
            return String::new();
        }
        // SAFETY: `p` is a NUL-terminated string from the library, freed once here.
        let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        unsafe { (self.free_str)(p) };
        s
    }

    /// Name, element type and dimensions (`DYNAMIC` where not fixed) of a model port.
    fn port(&self, port: Handle) -> std::result::Result<(String, u32, Vec<i64>), String> {
        let mut name = null_mut();
        let mut ty = 0u32;
        let mut shape = PartialShape { rank: Dimension { min: 0, max: 0 }, dims: null_mut() };
        // SAFETY: `port` is a live port; each call writes its out parameter.
        let out = unsafe {
            self.check((self.port_name)(port, &mut name), "port name")
                .and_then(|_| self.check((self.port_type)(port, &mut ty), "port type"))
                .and_then(|_| self.check((self.port_shape)(port, &mut shape), "port shape"))
        };
        let name = self.take_str(name);
        out?;
        let rank = shape.rank.min;
        let dims = if rank != shape.rank.max || rank < 0 || shape.dims.is_null() {
            None
        } else {
            // SAFETY: a static rank's `dims` holds `rank` dimensions.
            let dims = unsafe { std::slice::from_raw_parts(shape.dims, rank as usize) };
            Some(dims.iter().map(|d| if d.min == d.max { d.min } else { DYNAMIC }).collect::<Vec<_>>())
        };
        unsafe { (self.partial_shape_free)(&mut shape) };
        let dims = dims.ok_or_else(|| format!("'{name}' has a dynamic rank"))?;
        Ok((name, ty, dims))
    }
}

fn api() -> Result<&'static Api> {
    API.get().ok_or_else(|| CoreError::Runtime {
        runtime: "OpenVINO",
        path: "<none>".into(),
        msg: "OpenVINO is not initialised: call init_openvino(path) first".into(),
    })
}

/// The inference precision to compile for: the model's own (`f32`) or bf16 (where the CPU has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    Bf16,
}

impl Precision {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            other => Err(CoreError::InvalidArgument(format!("precision must be 'f32' or 'bf16', got '{other}'"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

/// A compiled OpenVINO model and its infer request (one per pool worker).
pub struct OvSession {
    compiled: Handle,
    request: Handle,
    inputs: Vec<(String, u32, usize)>,
    output: (String, u32, Vec<i64>),
    /// The inference precision the compiled model reports.
    precision: String,
    path: PathBuf,
}

// SAFETY: the handles are owned by this session and used by one thread at a time (`&mut self`,
// the pool's lock); OpenVINO's compiled models and requests may move between threads.
unsafe impl Send for OvSession {}

impl Drop for OvSession {
    fn drop(&mut self) {
        if let Some(api) = API.get() {
            // SAFETY: both handles were created by this session and are freed once.
            unsafe {
                (api.request_free)(self.request);
                (api.compiled_free)(self.compiled);
            }
        }
    }
}

/// Frees a model at the end of `OvSession::load`.
struct ModelGuard<'a>(&'a Api, Handle);

impl Drop for ModelGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the model was read by `load` and is freed once.
        unsafe { (self.0.model_free)(self.1) };
    }
}

impl OvSession {
    /// Read the model at `path` (ONNX, or an IR `.xml` beside its `.bin`) and compile it for CPU
    /// with `intra_threads` threads, at `precision` (None: OpenVINO's default for the CPU).
    pub fn load(path: &Path, intra_threads: usize, precision: Option<Precision>) -> Result<Self> {
        let api = api()?;
        let fail = |msg: String| CoreError::model(path, format!("OpenVINO cannot load this model: {msg}"));
        let c_path = CString::new(path.to_string_lossy().as_bytes()).map_err(|e| fail(e.to_string()))?;
        let mut model: Handle = null_mut();
        // SAFETY: the core is live for the process; `read_model` writes a new model.
        api.check(unsafe { (api.read_model)(api.core as Handle, c_path.as_ptr(), null(), &mut model) }, "read")
            .map_err(fail)?;
        let guard = ModelGuard(api, model);
        let (inputs, output) = Self::ports(api, guard.1).map_err(fail)?;
        let threads = CString::new(intra_threads.max(1).to_string()).map_err(|e| fail(e.to_string()))?;
        let mut props: Vec<(&CStr, &CStr)> = vec![
            (c"INFERENCE_NUM_THREADS", threads.as_c_str()),
            (c"NUM_STREAMS", c"1"),
            // Pinning each single-threaded session of a pool would put them all on one core.
            (c"ENABLE_CPU_PINNING", c"NO"),
        ];
        if let Some(p) = precision {
            props.push((c"INFERENCE_PRECISION_HINT", if p == Precision::Bf16 { c"bf16" } else { c"f32" }));
        }
        let mut compiled: Handle = null_mut();
        let arg = |i: usize| props.get(i / 2).map_or(null(), |(k, v)| if i.is_multiple_of(2) { k.as_ptr() } else { v.as_ptr() });
        // SAFETY: `props.len() * 2` key/value C strings follow, as the variadic call expects.
        let status = unsafe {
            (api.compile_model)(
                api.core as Handle,
                guard.1,
                c"CPU".as_ptr(),
                props.len() * 2,
                &mut compiled,
                arg(0),
                arg(1),
                arg(2),
                arg(3),
                arg(4),
                arg(5),
                arg(6),
                arg(7),
            )
        };
        api.check(status, "compile for CPU").map_err(fail)?;
        let mut value = null_mut();
        // SAFETY: `compiled` is live; the property call writes a string the library allocated.
        let got = unsafe { (api.compiled_get_property)(compiled, c"INFERENCE_PRECISION_HINT".as_ptr(), &mut value) };
        let precision = if got == 0 { api.take_str(value) } else { String::from("unknown") };
        let mut request: Handle = null_mut();
        // SAFETY: `compiled` is live; the call writes a new request.
        if let Err(e) = api.check(unsafe { (api.create_request)(compiled, &mut request) }, "infer request") {
            unsafe { (api.compiled_free)(compiled) };
            return Err(fail(e));
        }
        Ok(Self { compiled, request, inputs, output, precision, path: path.to_path_buf() })
    }

    /// The model's inputs (name, element type, rank) and first output (name, element type, dims).
    #[allow(clippy::type_complexity)]
    fn ports(api: &Api, model: Handle) -> std::result::Result<(Vec<(String, u32, usize)>, (String, u32, Vec<i64>)), String> {
        let (mut n_in, mut n_out) = (0usize, 0usize);
        // SAFETY: `model` is live; the calls write counts and new ports, each freed below.
        unsafe {
            api.check((api.inputs_size)(model, &mut n_in), "inputs")?;
            api.check((api.outputs_size)(model, &mut n_out), "outputs")?;
        }
        let port = |get: unsafe extern "C" fn(Handle, usize, *mut Handle) -> Status, i: usize| {
            let mut p: Handle = null_mut();
            api.check(unsafe { get(model, i, &mut p) }, "port")?;
            let out = api.port(p);
            unsafe { (api.port_free)(p) };
            out
        };
        let mut inputs = Vec::with_capacity(n_in);
        for i in 0..n_in {
            let (name, ty, dims) = port(api.const_input, i)?;
            inputs.push((name, ty, dims.len()));
        }
        if n_out == 0 {
            return Err("graph has no outputs".into());
        }
        Ok((inputs, port(api.const_output, 0)?))
    }

    /// The inference precision the compiled model runs at ("f32", "bf16").
    pub fn precision(&self) -> &str {
        &self.precision
    }

    fn tensor(api: &Api, data: &[i64], shape: [i64; 2]) -> std::result::Result<Handle, String> {
        let mut s = Shape { rank: 0, dims: null_mut() };
        let mut t: Handle = null_mut();
        // SAFETY: `shape_create` copies the dims; the tensor wraps `data`, which outlives the run
        // (OpenVINO only reads inputs).
        unsafe {
            api.check((api.shape_create)(2, shape.as_ptr(), &mut s), "shape")?;
            let status = (api.tensor_from_host)(api.codes.i64, Shape { rank: s.rank, dims: s.dims }, data.as_ptr() as *mut c_void, &mut t);
            (api.shape_free)(&mut s);
            api.check(status, "input tensor")?;
        }
        Ok(t)
    }

    fn run_inner(&mut self, api: &Api, batch: &PaddedBatch, spec: &GraphSpec) -> std::result::Result<RawOutput, String> {
        let seq_len = batch.seq_len;
        let widened = widen(batch, SEQ_BUCKET);
        let batch = widened.as_ref().unwrap_or(batch);
        let shape = [batch.rows as i64, batch.seq_len as i64];
        let mut feeds = vec![("input_ids", &batch.ids), ("attention_mask", &batch.mask)];
        if spec.feeds_token_type_ids {
            feeds.push(("token_type_ids", &batch.type_ids));
        }
        for (name, data) in feeds {
            let t = Self::tensor(api, data, shape)?;
            let c_name = CString::new(name).map_err(|e| e.to_string())?;
            // SAFETY: the request and tensor are live; the request keeps its own reference.
            let status = unsafe { (api.set_tensor)(self.request, c_name.as_ptr(), t) };
            unsafe { (api.tensor_free)(t) };
            api.check(status, name)?;
        }
        // SAFETY: the request is live and all its inputs are set.
        api.check(unsafe { (api.infer)(self.request) }, "infer")?;
        let mut out: Handle = null_mut();
        api.check(unsafe { (api.get_output_tensor)(self.request, 0, &mut out) }, "output")?;
        let read = || -> std::result::Result<RawOutput, String> {
            let (mut ty, mut s, mut data) = (0u32, Shape { rank: 0, dims: null_mut() }, null_mut());
            // SAFETY: `out` is live; the calls write its type, shape (freed below) and data pointer.
            unsafe {
                api.check((api.tensor_type)(out, &mut ty), "output type")?;
                if ty != api.codes.f32 {
                    return Err(format!("output '{}' is not float32 (element type {ty})", spec.output_name));
                }
                api.check((api.tensor_shape)(out, &mut s), "output shape")?;
                let dims = std::slice::from_raw_parts(s.dims, s.rank.max(0) as usize).to_vec();
                (api.shape_free)(&mut s);
                api.check((api.tensor_data)(out, &mut data), "output data")?;
                let count = dims.iter().try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)));
                let count = count.ok_or_else(|| format!("output shape {dims:?}"))?;
                let values = std::slice::from_raw_parts(data as *const f32, count).to_vec();
                Ok(RawOutput { shape: dims, data: values })
            }
        };
        let result = read();
        unsafe { (api.tensor_free)(out) };
        let per_token = spec.output_dims.get(1) == Some(&DYNAMIC);
        result.map(|raw| narrow(raw, per_token, batch.seq_len, seq_len))
    }
}

impl Backend for OvSession {
    fn describe(&self, path: &Path) -> Result<GraphSpec> {
        let codes = api()?.codes;
        let inputs = self
            .inputs
            .iter()
            .map(|(name, ty, rank)| {
                let mismatch = (*ty != codes.i64 || *rank != 2).then(|| format!("OpenVINO type {ty}, rank {rank}"));
                (name.clone(), mismatch)
            })
            .collect();
        let (name, ty, dims) = &self.output;
        let dims = if *ty == codes.f32 { Ok(dims.clone()) } else { Err(format!("OpenVINO type {ty}")) };
        graph_spec(path, inputs, Some((name.clone(), dims)))
    }

    fn run(&mut self, batch: &PaddedBatch, spec: &GraphSpec) -> Result<RawOutput> {
        let api = api()?;
        self.run_inner(api, batch, spec)
            .map_err(|e| CoreError::Inference(format!("{} (OpenVINO): {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_a_runtime_error() {
        let missing = Path::new("/nonexistent/libopenvino_c.so");
        if openvino_ready() {
            return;
        }
        match init_openvino(missing) {
            Err(CoreError::Runtime { msg, .. }) => assert!(msg.starts_with("file not found"), "{msg}"),
            other => panic!("expected a runtime error, got {:?}", other.err()),
        }
        assert!(matches!(OvSession::load(Path::new("m.onnx"), 1, None), Err(CoreError::Runtime { .. })));
    }

    #[test]
    fn widening_pads_to_the_bucket_with_masked_pad_columns() {
        let a = crate::tokenize::Encoded { ids: vec![5, 6, 7], type_ids: vec![0, 1, 1] };
        let b = crate::tokenize::Encoded { ids: vec![8], type_ids: vec![0] };
        let batch = PaddedBatch::new(&[&a, &b], 9);
        assert!(widen(&batch, 3).is_none(), "a length already on the bucket stays as it is");
        let wide = widen(&batch, 4).expect("3 tokens go up to 4");
        assert_eq!((wide.rows, wide.seq_len, wide.pad_id), (2, 4, 9));
        assert_eq!(wide.ids, vec![5, 6, 7, 9, 8, 9, 9, 9]);
        assert_eq!(wide.mask, vec![1, 1, 1, 0, 1, 0, 0, 0]);
        assert_eq!(wide.type_ids, vec![0, 1, 1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn narrowing_cuts_per_token_outputs_back_and_leaves_pooled_ones() {
        // [2 rows, 4 tokens, 2 dims] from a batch of 3 tokens: each row keeps its first 3 tokens
        let data: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let out = narrow(RawOutput { shape: vec![2, 4, 2], data }, true, 4, 3);
        assert_eq!(out.shape, vec![2, 3, 2]);
        assert_eq!(out.data, vec![0., 1., 2., 3., 4., 5., 8., 9., 10., 11., 12., 13.]);
        let pooled = narrow(RawOutput { shape: vec![2, 4], data: vec![0.; 8] }, true, 4, 3);
        assert_eq!(pooled.shape, vec![2, 4], "a [rows, labels] output is not per token");
        let fixed = narrow(RawOutput { shape: vec![2, 4, 1], data: vec![0.; 8] }, false, 4, 3);
        assert_eq!(fixed.shape, vec![2, 4, 1], "an output whose second axis is fixed in the graph stays whole");
    }

    #[test]
    fn precisions_parse_by_name() {
        assert_eq!(Precision::parse("bf16").ok(), Some(Precision::Bf16));
        assert_eq!(Precision::parse("f32").map(Precision::name).ok(), Some("f32"));
        assert!(matches!(Precision::parse("fp8"), Err(CoreError::InvalidArgument(m)) if m.contains("'fp8'")));
    }
}
