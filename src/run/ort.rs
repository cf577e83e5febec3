//! The onnxruntime engine, through the `ort` crate with the library loaded at run time: mdeploy
//! never links or downloads onnxruntime. The library is found from `ORT_DYLIB_PATH`, else the
//! `onnxruntime` Python package of the active virtualenv (`VIRTUAL_ENV`), else that of `python3`
//! on PATH (`onnxruntime/capi/libonnxruntime.so.*`).
//!
//! Models are handed over from our in-memory proto: large tensors that are unchanged slices of
//! the model file go by reference (external data pointing into that file), so onnxruntime reads
//! them from disk instead of from a second in-memory copy.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::memory::Allocator;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynTensor, TensorElementType, ValueType};
use prost::Message;
use tract_onnx::prelude::{DatumType, Tensor};

use super::{InputDesc, NamedTensor, RawOutput, RunError, graph_inputs, order_inputs};
use crate::onnx::Model;

/// The loaded library and the process's onnxruntime environment.
struct Runtime {
    path: PathBuf,
    environment: ort::environment::Environment,
}

fn runtime() -> Result<&'static Runtime, RunError> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let path = find_library()?;
            let builder = ort::init_from(&path)
                .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
            let environment = builder
                .with_name("mdeploy")
                .build()
                .map_err(|e| format!("cannot start onnxruntime from {}: {e}", path.display()))?;
            Ok(Runtime { path, environment })
        })
        .as_ref()
        .map_err(|e| RunError::OrtUnavailable(e.clone()))
}

/// Where the onnxruntime library was loaded from, or why none could be.
pub fn library() -> Result<&'static Path, RunError> {
    runtime().map(|r| r.path.as_path())
}

fn find_library() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "ORT_DYLIB_PATH names {}, which is not a file",
                p.display()
            ))
        };
    }
    let mut searched = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        let lib = Path::new(&venv).join("lib");
        for dir in std::fs::read_dir(&lib).into_iter().flatten().flatten() {
            let site = dir.path().join("site-packages");
            if let Some(found) = in_site_packages(&site) {
                return Ok(found);
            }
            searched.push(site);
        }
    }
    for site in python_site_packages() {
        if let Some(found) = in_site_packages(&site) {
            return Ok(found);
        }
        searched.push(site);
    }
    let mut listed: Vec<String> = Vec::new();
    for p in searched {
        let p = p.display().to_string();
        if !listed.contains(&p) {
            listed.push(p);
        }
    }
    Err(format!(
        "no onnxruntime library found (looked at ORT_DYLIB_PATH, {}); \
         `pip install onnxruntime` into the active virtualenv, or set ORT_DYLIB_PATH to \
         libonnxruntime.so",
        if listed.is_empty() {
            "and found no Python".to_string()
        } else {
            listed.join(", ")
        }
    ))
}

/// `onnxruntime/capi/libonnxruntime.so*` under a site-packages directory.
fn in_site_packages(site: &Path) -> Option<PathBuf> {
    let capi = site.join("onnxruntime").join("capi");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&capi)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib")
        })
        .collect();
    // the versioned file (libonnxruntime.so.1.31.1) over the bare link
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}

/// The site-packages directories of `python3` on PATH (without importing onnxruntime).
fn python_site_packages() -> Vec<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import site, sysconfig\nprint(sysconfig.get_paths()['purelib'])\nprint(sysconfig.get_paths()['platlib'])\nprint(site.getusersitepackages())",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .collect(),
        _ => vec![],
    }
}

/// A model loaded in onnxruntime.
pub struct OrtRunner {
    session: Session,
    inputs: Vec<InputDesc>,
    outputs: Vec<String>,
}

impl std::fmt::Debug for OrtRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtRunner")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

/// Runs past which a measuring session prepacks its weights. Prepacking copies every weight into
/// the layout onnxruntime's matrix kernels read, once, at load: without it, a model's weights
/// stay where onnxruntime mapped them (external data is read in place) and each run packs what
/// it multiplies. With onnxruntime 1.31.1 on a 2-core AVX2 machine, loading a 2.4 GB model of
/// BERT-base's layers took 2.5 s and 2.3 GB with prepacking, 0.04 s without, and a run at
/// sequence 128 took 0.73 s against 0.90 s (prepacking pays from about 15 runs); at 430 MB
/// (inline), 0.49 s against 0.33 s to load and 0.109 s against 0.125 s a run (from about 10).
/// MiniLM and the CNNs of `../shared/models` run as fast or faster without it. A model with
/// 4-bit weights is always prepacked: its kernel computes otherwise without ([`four_bit`]).
///
/// [`four_bit`]: super::four_bit
pub const PREPACK_PAST_RUNS: usize = 16;

/// What onnxruntime's idle intra-op threads do between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    Spinning,
    Sleeping,
}

fn load_err(e: impl std::fmt::Display) -> RunError {
    RunError::OrtLoad(e.to_string())
}

impl OrtRunner {
    /// Loads `model` with its graph optimized at `level`, for `runs` runs that mdeploy's own
    /// work comes between (measuring, verifying, `run`): onnxruntime's idle threads sleep
    /// instead of spinning, which would take the cores from that work (a MiniLM int4 search
    /// took a third more CPU time with them spinning, and longer). Weights are prepacked for
    /// its matrix kernels for more than [`PREPACK_PAST_RUNS`] runs, and where prepacking
    /// changes what a kernel computes (4-bit weights). At [`GraphLevel::Default`] the numbers
    /// are those of onnxruntime's default session, [`OrtRunner::serving`]'s; at
    /// [`GraphLevel::Unoptimized`] no optimization level applies (onnxruntime's required
    /// rewrites, such as the Casts around float16 nodes it has no float16 kernel for, do).
    ///
    /// [`GraphLevel::Default`]: super::GraphLevel::Default
    /// [`GraphLevel::Unoptimized`]: super::GraphLevel::Unoptimized
    pub fn measuring(
        model: &Model,
        runs: usize,
        level: super::GraphLevel,
    ) -> Result<OrtRunner, RunError> {
        OrtRunner::with_level(
            model,
            match level {
                super::GraphLevel::Default => GraphOptimizationLevel::All,
                super::GraphLevel::Unoptimized => GraphOptimizationLevel::Disable,
            },
            Threads::Sleeping,
            runs > PREPACK_PAST_RUNS || super::four_bit(model),
        )
    }

    /// Loads `model` for serving: runs follow each other on the worker's thread, and
    /// onnxruntime's idle threads spin between them, as onnxruntime has them by default, and
    /// weights are prepacked.
    pub fn serving(model: &Model) -> Result<OrtRunner, RunError> {
        OrtRunner::with_level(model, GraphOptimizationLevel::All, Threads::Spinning, true)
    }

    pub fn with_level(
        model: &Model,
        level: GraphOptimizationLevel,
        threads: Threads,
        prepack: bool,
    ) -> Result<OrtRunner, RunError> {
        OrtRunner::writing_optimized(model, level, threads, prepack, None)
    }

    /// The graph onnxruntime makes of `model` when it loads it with every optimization (the
    /// fusions it decides on this machine, such as its 4-bit MatMul kernel), weights left out.
    pub fn optimized_graph(model: &Model) -> Result<crate::onnx::GraphProto, RunError> {
        // onnxruntime writes the graph with its weights beside it: on a model of gigabytes, as
        // much in the temporary directory for the time of the load
        let written = |e: std::io::Error| load_err(format!("writing its optimized graph: {e}"));
        let dir = tempfile::tempdir().map_err(written)?;
        let path = dir.path().join("optimized.onnx");
        let level = GraphOptimizationLevel::All;
        drop(OrtRunner::writing_optimized(
            model,
            level,
            Threads::Sleeping,
            false,
            Some(&path),
        )?);
        let bytes = std::fs::read(&path).map_err(written)?;
        let proto = crate::onnx::ModelProto::decode(bytes.as_slice()).map_err(load_err)?;
        Ok(proto.graph.unwrap_or_default())
    }

    /// [`OrtRunner::with_level`], writing the graph onnxruntime optimized to `optimized`
    /// (initializers of 64 bytes or more to a file beside it).
    fn writing_optimized(
        model: &Model,
        level: GraphOptimizationLevel,
        threads: Threads,
        prepack: bool,
        optimized: Option<&Path>,
    ) -> Result<OrtRunner, RunError> {
        let rt = runtime()?;
        let (proto, by_reference) = super::proto_by_reference(model).map_err(load_err)?;
        let bytes = proto.encode_to_vec();
        drop(proto);
        let mut builder = Session::builder(&rt.environment)
            .map_err(load_err)?
            .with_optimization_level(level)
            .map_err(load_err)?
            .with_log_level(ort::logging::LogLevel::Fatal)
            .map_err(load_err)?;
        builder = builder
            .with_config_entry(
                "session.intra_op.allow_spinning",
                if threads == Threads::Spinning {
                    "1"
                } else {
                    "0"
                },
            )
            .map_err(load_err)?
            .with_config_entry(
                "session.disable_prepacking",
                if prepack { "0" } else { "1" },
            )
            .map_err(load_err)?;
        if by_reference || !model.dir().as_os_str().is_empty() {
            // external data (ours by reference into the model file, or the model's own
            // external data files) resolves against the model's directory
            builder = builder
                .with_config_entry(
                    "session.model_external_initializers_file_folder_path",
                    model.dir().to_string_lossy(),
                )
                .map_err(load_err)?;
        }
        if let Some(path) = optimized {
            builder = builder
                .with_optimized_model_path(path)
                .map_err(load_err)?
                .with_config_entry(
                    "session.optimized_model_external_initializers_file_name",
                    "optimized.weights",
                )
                .map_err(load_err)?
                .with_config_entry(
                    "session.optimized_model_external_initializers_min_size_in_bytes",
                    "64",
                )
                .map_err(load_err)?;
        }
        let session = builder.commit_from_memory(&bytes).map_err(load_err)?;
        Ok(OrtRunner {
            session,
            inputs: graph_inputs(model),
            outputs: model
                .graph()
                .output
                .iter()
                .map(|o| o.name().to_string())
                .collect(),
        })
    }

    pub fn inputs(&self) -> &[InputDesc] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    pub fn run(&mut self, given: &[NamedTensor]) -> Result<Vec<NamedTensor>, RunError> {
        self.run_raw(given, |outputs| {
            outputs
                .iter()
                .map(|o| o.to_named().map_err(RunError::OrtRun))
                .collect()
        })?
    }

    /// Runs on `given` and hands `visit` the outputs where onnxruntime holds them, read in
    /// place.
    pub fn run_raw<R>(
        &mut self,
        given: &[NamedTensor],
        visit: impl FnOnce(&[RawOutput]) -> R,
    ) -> Result<R, RunError> {
        let ordered = order_inputs(&self.inputs, given)?;
        let mut feeds: Vec<(String, ort::session::SessionInputValue<'static>)> = Vec::new();
        for (desc, t) in self.inputs.iter().zip(&ordered) {
            let value = to_ort(t).map_err(|what| RunError::Input {
                name: desc.name.clone(),
                what,
            })?;
            feeds.push((desc.name.clone(), value.into()));
        }
        let run = |e: ort::Error| RunError::OrtRun(e.to_string());
        let outputs = self.session.run(feeds);
        // onnxruntime's kernels ran on this thread too, failed or not
        super::engine::clear_upper_vector_state();
        let outputs = outputs.map_err(run)?;
        let raw = self
            .outputs
            .iter()
            .map(|name| {
                let v = outputs
                    .get(name)
                    .ok_or_else(|| RunError::OrtRun(format!("no output '{name}'")))?;
                raw_output(name, v).map_err(|e| RunError::OrtRun(format!("output '{name}': {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(visit(&raw))
    }
}

fn element_type(dt: DatumType) -> Option<TensorElementType> {
    Some(match dt {
        DatumType::F32 => TensorElementType::Float32,
        DatumType::F64 => TensorElementType::Float64,
        DatumType::F16 => TensorElementType::Float16,
        DatumType::I8 => TensorElementType::Int8,
        DatumType::I16 => TensorElementType::Int16,
        DatumType::I32 => TensorElementType::Int32,
        DatumType::I64 => TensorElementType::Int64,
        DatumType::U8 => TensorElementType::Uint8,
        DatumType::U16 => TensorElementType::Uint16,
        DatumType::U32 => TensorElementType::Uint32,
        DatumType::U64 => TensorElementType::Uint64,
        DatumType::Bool => TensorElementType::Bool,
        _ => return None,
    })
}

fn datum_type(t: TensorElementType) -> Option<DatumType> {
    Some(match t {
        TensorElementType::Float32 => DatumType::F32,
        TensorElementType::Float64 => DatumType::F64,
        TensorElementType::Float16 => DatumType::F16,
        TensorElementType::Int8 => DatumType::I8,
        TensorElementType::Int16 => DatumType::I16,
        TensorElementType::Int32 => DatumType::I32,
        TensorElementType::Int64 => DatumType::I64,
        TensorElementType::Uint8 => DatumType::U8,
        TensorElementType::Uint16 => DatumType::U16,
        TensorElementType::Uint32 => DatumType::U32,
        TensorElementType::Uint64 => DatumType::U64,
        TensorElementType::Bool => DatumType::Bool,
        _ => return None,
    })
}

/// A tensor as an onnxruntime value (the bytes are copied once, into onnxruntime's buffer).
fn to_ort(t: &Tensor) -> Result<DynTensor, String> {
    let ty = element_type(t.datum_type()).ok_or_else(|| {
        format!(
            "onnxruntime inputs of type {:?} are not supported here",
            t.datum_type()
        )
    })?;
    let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    let mut value = DynTensor::new(&Allocator::default(), ty, shape).map_err(|e| e.to_string())?;
    let bytes = t.as_bytes();
    if !bytes.is_empty() {
        // SAFETY: onnxruntime allocated exactly shape's element count of `ty`, whose size is
        // the tract type's; the buffers do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                value.data_ptr_mut().cast::<u8>(),
                bytes.len(),
            );
        }
    }
    Ok(value)
}

/// An onnxruntime output as a tract tensor.
/// An onnxruntime output as it lies in onnxruntime's buffer.
fn raw_output<'a>(name: &'a str, v: &'a ort::value::DynValue) -> Result<RawOutput<'a>, String> {
    let ValueType::Tensor { ty, shape, .. } = v.dtype() else {
        return Err(format!("{} values are not tensors", v.dtype()));
    };
    let dt = datum_type(*ty).ok_or_else(|| format!("element type {ty:?} is not supported here"))?;
    let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let count: usize = shape.iter().product();
    let len = count * dt.size_of();
    let view = v
        .view()
        .downcast::<ort::value::DynTensorValueType>()
        .map_err(|e| e.to_string())?;
    let data = view.data_ptr().cast::<u8>();
    let bytes = if len == 0 {
        &[][..]
    } else {
        // SAFETY: onnxruntime's buffer holds `count` elements of `ty` (checked by its own
        // dtype), and lives as long as the value `v` borrows it from
        unsafe { std::slice::from_raw_parts(data, len) }
    };
    Ok(RawOutput::in_buffer(name, dt, shape, bytes))
}
