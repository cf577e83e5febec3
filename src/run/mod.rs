//! Running models with tract: the execution engine behind verification, calibration and constant
//! evaluation. A [`Runner`] parses the model once and plans it per set of concrete input shapes,
//! so symbolic dims (batch, sequence) take whatever size the inputs have. A model computing in
//! float16 is handed to tract with its float16 nodes computing in float32 (`widen`).

mod engine;
pub mod ort;
mod random;
mod shapes;
pub mod tensor_io;
mod widen;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use prost::Message;
use tract_onnx::prelude::*;

#[cfg(test)]
pub(crate) use engine::OneByOne;
pub use engine::{
    Engine, EngineChoice, EngineKind, Floats, GraphLevel, OnChunk, RawOutput, SampleChunks,
    auto_order, first_engine, four_bit, in_either, is_input_problem, ort_available,
    reduced_precision, run_all, run_each, run_each_at,
};
pub use random::random_inputs;
pub use shapes::{Dim, InputShapes, ValueShape};
pub use tensor_io::NamedTensor;

use crate::onnx::{DataType, Model};

/// Why a model could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("tract cannot load the model: {0}")]
    Load(String),
    #[error("tract cannot run the model: {0}")]
    Run(String),
    #[error("input '{name}': {what}")]
    Input { name: String, what: String },
    #[error("no value for input '{0}'")]
    MissingInput(String),
    #[error("onnxruntime is not available: {0}")]
    OrtUnavailable(String),
    #[error("onnxruntime cannot load the model: {0}")]
    OrtLoad(String),
    #[error("onnxruntime cannot run the model: {0}")]
    OrtRun(String),
    #[error("neither engine can run the model; tract: {tract}; onnxruntime: {ort}")]
    Neither { tract: String, ort: String },
    /// The samples could not be read (a calibration set read a chunk at a time).
    #[error("the samples: {0}")]
    Samples(#[from] tensor_io::TensorIoError),
    #[error("stopped: the outputs are no longer wanted")]
    Stopped,
}

/// A graph input as the model declares it.
#[derive(Debug, Clone)]
pub struct InputDesc {
    pub name: String,
    pub dtype: Option<DataType>,
    pub shape: ValueShape,
    /// For integer inputs used as `Gather` indices into a constant table: the table's size on the
    /// gathered axis, so generated ids stay in range.
    pub index_bound: Option<u64>,
}

/// The real inputs of a graph: its inputs that no initializer provides.
pub fn graph_inputs(model: &Model) -> Vec<InputDesc> {
    let g = model.graph();
    let graph = crate::graph::Graph::new(g.clone());
    g.input
        .iter()
        .filter(|i| !g.initializer.iter().any(|t| t.name() == i.name()))
        .map(|i| InputDesc {
            name: i.name().to_string(),
            dtype: ValueShape::elem_type(i),
            shape: ValueShape::of(i),
            index_bound: index_bound(&graph, i.name()),
        })
        .collect()
}

/// The smallest table size among the constant tables `value` indexes with `Gather`, following
/// shape-preserving casts and reshapes on the way.
fn index_bound(graph: &crate::graph::Graph, value: &str) -> Option<u64> {
    const PASS_THROUGH: &[&str] = &[
        "Cast",
        "Unsqueeze",
        "Squeeze",
        "Reshape",
        "Identity",
        "Flatten",
    ];
    let mut bound: Option<u64> = None;
    let mut frontier = vec![value.to_string()];
    let mut seen = std::collections::HashSet::new();
    while let Some(v) = frontier.pop() {
        if !seen.insert(v.clone()) {
            continue;
        }
        for &i in graph.consumers(&v) {
            let node = &graph.nodes()[i];
            match node.op_type() {
                "Gather" if node.input.get(1) == Some(&v) => {
                    let axis = node
                        .attribute
                        .iter()
                        .find(|a| a.name() == "axis")
                        .map_or(0, |a| a.i());
                    let table = node.input.first().and_then(|t| graph.constant(t));
                    if let Some(t) = table {
                        let rank = t.dims.len() as i64;
                        let axis = if axis < 0 { axis + rank } else { axis };
                        if let Some(&n) = t.dims.get(axis as usize) {
                            bound = Some(bound.map_or(n as u64, |b| b.min(n as u64)));
                        }
                    }
                }
                op if PASS_THROUGH.contains(&op) && node.input.first() == Some(&v) => {
                    frontier.extend(node.output.iter().cloned());
                }
                _ => {}
            }
        }
    }
    bound
}

type Plan = Arc<TypedRunnableModel>;

/// A model loaded in tract, planned lazily per input shapes.
pub struct Runner {
    model: InferenceModel,
    inputs: Vec<InputDesc>,
    outputs: Vec<String>,
    plans: PlanCache<Plan>,
}

/// Plans a server's runner keeps at least. A plan is made per set of input shapes; clients that
/// send a new shape every time must not grow a server's memory without bound, so there the least
/// recently used plan goes when a new one would pass the limit ([`Runner::limit_plans`]). Runs
/// over a fixed set of samples (verify, calibration) keep every plan.
pub const PLANS_KEPT: usize = 8;

/// The most recently used plans by input shapes, at most `capacity`, most recent first.
#[derive(Debug)]
struct PlanCache<V> {
    capacity: usize,
    entries: Vec<(Vec<Vec<usize>>, V)>,
}

impl<V: Clone> PlanCache<V> {
    fn new(capacity: usize) -> Self {
        PlanCache {
            capacity: capacity.max(1),
            entries: Vec::new(),
        }
    }

    /// The plan for `shapes`, made by `make` when not kept; kept as the most recent either way.
    fn get_or_make<E>(
        &mut self,
        shapes: Vec<Vec<usize>>,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        if let Some(at) = self.entries.iter().position(|(s, _)| *s == shapes) {
            let hit = self.entries.remove(at);
            self.entries.insert(0, hit);
        } else {
            let made = make()?;
            self.entries.truncate(self.capacity - 1);
            self.entries.insert(0, (shapes, made));
        }
        Ok(self.entries[0].1.clone())
    }
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

/// Runs `f`, turning a panic inside tract into an error instead of a crash.
pub fn guard<T>(what: &str, f: impl FnOnce() -> TractResult<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(format!("tract failed while {what}: {msg}"))
        }
    }
}

/// Parses `model` into tract's inference model (external data resolved from the model's dir).
/// `value_info` is ignored: it is a hint that may be stale or symbolic, and tract would treat it
/// as a constraint that concrete inputs then contradict.
pub fn tract_model(model: &Model) -> Result<InferenceModel, RunError> {
    let load = |e: &dyn std::fmt::Display| RunError::Load(e.to_string());
    // the encoded bytes are dropped as soon as tract's own proto is decoded from them
    let pb = {
        let bytes = proto_by_reference(model)
            .map_err(|e| load(&e))?
            .0
            .encode_to_vec();
        tract_onnx::pb::ModelProto::decode(bytes.as_slice()).map_err(|e| load(&e))?
    };
    let dir = model.dir().to_string_lossy().to_string();
    guard("parsing the model", || {
        let parsed = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .parse(&pb, Some(&dir))?;
        if !parsed.unresolved_inputs.is_empty() {
            anyhow::bail!("unresolved inputs {:?}", parsed.unresolved_inputs)
        }
        Ok(parsed.model)
    })
    .map_err(RunError::Load)
}

/// Tensors at least this large are handed to an engine by reference into the model file.
const BY_REFERENCE: usize = 1 << 16;

/// The proto given to an engine: large unchanged tensors become external-data references into
/// the file the model was loaded from, so the engine reads each weight from the file once
/// instead of through in-memory copies of the whole model (tract's protobuf types copy
/// `raw_data`; onnxruntime parses from an encoded buffer). Says whether any tensor went by
/// reference.
pub(crate) fn proto_by_reference(
    model: &Model,
) -> Result<(crate::onnx::ModelProto, bool), crate::onnx::OnnxError> {
    use crate::onnx::proto::StringStringEntryProto;
    use crate::onnx::proto::tensor_proto::DataLocation;
    let mut proto = model.proto.clone();
    let Some(file_name) = model
        .path()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
    else {
        return Ok((proto, false));
    };
    let mut any = false;
    let entry = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    crate::onnx::save::relocate_tensors(&mut proto, &mut |t| {
        if let Some(raw) = t.raw_data.as_ref().filter(|r| r.len() >= BY_REFERENCE)
            && let Some(offset) = model.offset_in_source(raw)
        {
            t.external_data = vec![
                entry("location", file_name.to_string()),
                entry("offset", offset.to_string()),
                entry("length", raw.len().to_string()),
            ];
            t.data_location = Some(DataLocation::External as i32);
            t.raw_data = None;
            any = true;
        }
        Ok(())
    })?;
    Ok((proto, any))
}

impl Runner {
    pub fn new(model: &Model) -> Result<Runner, RunError> {
        let inputs = graph_inputs(model);
        let outputs = model
            .graph()
            .output
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let widened = widen::float16_in_float32(model);
        let tract = tract_model(widened.as_ref().unwrap_or(model))?;
        Ok(Runner {
            model: tract,
            inputs,
            outputs,
            plans: PlanCache::new(usize::MAX),
        })
    }

    pub fn inputs(&self) -> &[InputDesc] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    /// Keeps at most `n` plans from now on (the least recently used go first).
    pub fn limit_plans(&mut self, n: usize) {
        self.plans.capacity = n.max(1);
        self.plans.entries.truncate(self.plans.capacity);
    }

    /// Runs the model. Inputs are matched by name; unnamed tensors are taken in input order.
    pub fn run(&mut self, given: &[NamedTensor]) -> Result<Vec<NamedTensor>, RunError> {
        let ordered = order_inputs(&self.inputs, given)?;
        let shapes: Vec<Vec<usize>> = ordered.iter().map(|t| t.shape().to_vec()).collect();
        let model = &self.model;
        let plan = self
            .plans
            .get_or_make(shapes, || plan_for(model, &ordered))?;
        let values: TVec<TValue> = ordered.into_iter().map(|t| t.into_tvalue()).collect();
        let outputs = guard("running the model", || plan.run(values)).map_err(RunError::Run)?;
        Ok(self
            .outputs
            .iter()
            .zip(outputs)
            .map(|(name, v)| NamedTensor {
                name: name.clone(),
                tensor: onnx_typed(v.into_tensor()),
            })
            .collect())
    }
}

/// `model` planned for inputs of these types and shapes.
fn plan_for(model: &InferenceModel, inputs: &[Tensor]) -> Result<Plan, RunError> {
    let mut model = model.clone();
    let facts: Vec<InferenceFact> = inputs
        .iter()
        .map(|t| InferenceFact::dt_shape(t.datum_type(), t.shape()))
        .collect();
    guard("planning the model", move || {
        for (i, fact) in facts.into_iter().enumerate() {
            model.set_input_fact(i, fact)?;
        }
        model.into_optimized()?.into_runnable()
    })
    .map_err(RunError::Load)
}

/// The tensors for `inputs`, in order: matched by name, or taken in input order when none is
/// named; each checked against its declared type and fixed dims.
pub(crate) fn order_inputs(
    inputs: &[InputDesc],
    given: &[NamedTensor],
) -> Result<Vec<Tensor>, RunError> {
    let all_unnamed = given.iter().all(|t| t.name.is_empty());
    let mut out = Vec::with_capacity(inputs.len());
    for (pos, desc) in inputs.iter().enumerate() {
        let found = if all_unnamed {
            given.get(pos)
        } else {
            given.iter().find(|t| t.name == desc.name)
        };
        let t = found.ok_or_else(|| RunError::MissingInput(desc.name.clone()))?;
        desc.check(&t.tensor)?;
        out.push(t.tensor.clone());
    }
    Ok(out)
}

/// tract computes shapes as `TDim`; ONNX says INT64.
fn onnx_typed(t: Tensor) -> Tensor {
    if t.datum_type() == DatumType::TDim
        && let Ok(cast) = t.cast_to::<i64>()
    {
        return cast.into_owned();
    }
    t
}

impl InputDesc {
    /// Checks a tensor fits this input: element type and every fixed dim.
    pub fn check(&self, t: &Tensor) -> Result<(), RunError> {
        let err = |what: String| RunError::Input {
            name: self.name.clone(),
            what,
        };
        if let Some(want) = self.dtype
            && tensor_io::onnx_dtype(t.datum_type()) != Some(want)
        {
            return Err(err(format!(
                "model expects {want}, got {:?}",
                t.datum_type()
            )));
        }
        if let ValueShape::Known(dims) = &self.shape {
            if dims.len() != t.rank() {
                return Err(err(format!(
                    "model expects rank {} ({}), got shape {:?}",
                    dims.len(),
                    self.shape,
                    t.shape()
                )));
            }
            for (d, &n) in dims.iter().zip(t.shape()) {
                if let Dim::Fixed(want) = d
                    && *want as usize != n
                {
                    return Err(err(format!(
                        "model expects shape {}, got {:?}",
                        self.shape,
                        t.shape()
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::PlanCache;

    /// `auto` runs a float16, 4-bit or int8 model in onnxruntime first (where it is installed,
    /// as in `.ci/run`), a float model in tract first.
    #[test]
    fn auto_runs_reduced_precision_models_in_onnxruntime_first() {
        use super::engine::reduced_precision;
        use super::{EngineKind, auto_order, ort_available};
        use crate::graph::builder::{ModelBuilder, raw_tensor};
        use crate::onnx::{DataType, Model};
        let with = |op: &str, inputs: &[&str], dtype: DataType| {
            let proto = ModelBuilder::new(17)
                .input("x", DataType::Float, &["4"])
                .initializer(raw_tensor(
                    "w",
                    dtype,
                    &[],
                    vec![0; dtype.bits().unwrap_or(8).div_ceil(8)],
                ))
                .initializer_f32("s", &[], &[0.5])
                .node(op, inputs, &["y"])
                .output("y", DataType::Float, &["4"])
                .build();
            let model = Model::from_proto(proto, ".".into());
            (reduced_precision(&model), auto_order(&model))
        };
        let reduced = if ort_available() {
            [EngineKind::Ort, EngineKind::Tract]
        } else {
            [EngineKind::Tract, EngineKind::Ort]
        };
        let float = with("Mul", &["x", "w"], DataType::Float);
        assert_eq!(float, (false, [EngineKind::Tract, EngineKind::Ort]));
        assert_eq!(with("Mul", &["x", "w"], DataType::Float16), (true, reduced));
        // an int8 weight dequantized: onnxruntime's int8 kernels
        let int8 = with("DequantizeLinear", &["w", "s"], DataType::Int8);
        assert_eq!(int8, (true, reduced));
    }

    #[test]
    fn plan_cache_keeps_the_most_recently_used_and_no_more() {
        let mut cache = PlanCache::new(2);
        let made = std::cell::Cell::new(0);
        let get = |cache: &mut PlanCache<usize>, n: usize| {
            cache
                .get_or_make::<()>(vec![vec![n]], || {
                    made.set(made.get() + 1);
                    Ok(n)
                })
                .unwrap()
        };
        assert_eq!(get(&mut cache, 1), 1);
        assert_eq!(get(&mut cache, 2), 2);
        assert_eq!(get(&mut cache, 1), 1); // kept: 1 is now the most recent
        assert_eq!(get(&mut cache, 3), 3); // 2 goes
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(get(&mut cache, 1), 1);
        assert_eq!(get(&mut cache, 2), 2); // made again
        assert_eq!(made.get(), 4);
        // a failed plan is not kept
        assert!(cache.get_or_make(vec![vec![9]], || Err("no")).is_err());
        assert!(cache.entries.iter().all(|(s, _)| s != &vec![vec![9]]));
    }
}
