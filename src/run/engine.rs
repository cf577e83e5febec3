//! The engines a model can run in, behind one interface: tract (embedded, always available) and
//! onnxruntime (loaded at run time when installed). `auto` runs tract, and onnxruntime where
//! tract cannot load or run the model; callers say which engine produced what.

use serde::{Deserialize, Serialize};

use std::borrow::Cow;

use tract_onnx::prelude::{DatumType, Tensor};

use super::ort::OrtRunner;
use super::{InputDesc, NamedTensor, RunError, Runner};
use crate::onnx::Model;

/// `model` raised to opset 7 where it is at 6 ([`crate::onnx::upgrade::raise_legacy`]: neither
/// engine implements the ops' versions before 7). The raise keeps what every node computes, and
/// every name; `None` for a model at 7 or above (or below 6, left to the engines).
fn below_opset_7_raised(model: &Model) -> Result<Option<Model>, String> {
    let from = model.opset("").unwrap_or(1);
    if from >= crate::onnx::upgrade::LOWEST_KEPT {
        return Ok(None);
    }
    let mut raised = model.rewritten(model.proto.clone());
    match crate::onnx::upgrade::raise_legacy(&mut raised) {
        None => Ok(None),
        Some(Ok(_)) => Ok(Some(raised)),
        // a model with no form that changed at 7 runs as it is (an op the raise has no
        // schema for may still have a kernel)
        Some(Err(_)) if !crate::onnx::upgrade::has_legacy_forms(model) => Ok(None),
        Some(Err(why)) => Err(format!(
            "its opset {from} is run raised to 7, which would change what it computes: {}",
            why.join("; ")
        )),
    }
}

/// An engine by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Tract,
    Ort,
}

impl EngineKind {
    /// The engine that is not this one.
    pub fn other(self) -> EngineKind {
        match self {
            EngineKind::Tract => EngineKind::Ort,
            EngineKind::Ort => EngineKind::Tract,
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Tract => "tract",
            EngineKind::Ort => "ort",
        })
    }
}

/// Which engine to run a model in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// tract, and onnxruntime where tract cannot load or run the model.
    #[default]
    Auto,
    Only(EngineKind),
    /// This engine, and the other where this one cannot load or run the model: `auto` with
    /// the order chosen by the caller (two models compared side by side in one engine).
    First(EngineKind),
}

impl std::str::FromStr for EngineChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(EngineChoice::Auto),
            "tract" => Ok(EngineChoice::Only(EngineKind::Tract)),
            "ort" | "onnxruntime" => Ok(EngineChoice::Only(EngineKind::Ort)),
            _ => Err(format!("unknown engine '{s}' (tract, ort or auto)")),
        }
    }
}

/// A model loaded in one engine.
#[derive(Debug)]
pub enum Engine {
    Tract(Box<Runner>),
    Ort(Box<OrtRunner>),
}

/// How onnxruntime prepares the graph of a session that measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphLevel {
    /// onnxruntime's default, every graph optimization: the numbers a user's session computes.
    Default,
    /// None of onnxruntime's optimization levels: for a model whose outputs are statistics of
    /// its values (a reduction of each), which onnxruntime's optimizers take long over. Loading
    /// the session of one with three reductions of each of a 2.4 GB model's 802 values took
    /// 1.7 to 1.9 s at the default level and 0.16 to 0.2 s at none, MiniLM's 663 reductions
    /// 0.23 s and 0.09 s; runs after the first took about as long (onnxruntime 1.31.1).
    Unoptimized,
}

impl Engine {
    /// Loads `model` in `kind`, for `runs` runs ([`OrtRunner::measuring`]).
    pub fn load_in(model: &Model, kind: EngineKind, runs: usize) -> Result<Engine, RunError> {
        Engine::load_at(model, kind, runs, GraphLevel::Default)
    }

    /// [`Engine::load_in`] with onnxruntime preparing the graph at `level` (tract as ever).
    pub fn load_at(
        model: &Model,
        kind: EngineKind,
        runs: usize,
        level: GraphLevel,
    ) -> Result<Engine, RunError> {
        Engine::load_as(model, kind, |m| OrtRunner::measuring(m, runs, level))
    }

    /// Loads `model` for serving in the chosen engine (for `auto`: the first of [`auto_order`]
    /// that loads), with onnxruntime's threads and weights as [`OrtRunner::serving`] has them.
    pub fn load_serving(model: &Model, choice: EngineChoice) -> Result<Engine, RunError> {
        in_either(model, choice, |kind| {
            Engine::load_as(model, kind, OrtRunner::serving)
        })
    }

    fn load_as(
        model: &Model,
        kind: EngineKind,
        ort: impl FnOnce(&Model) -> Result<OrtRunner, RunError>,
    ) -> Result<Engine, RunError> {
        let raised = below_opset_7_raised(model).map_err(|why| match kind {
            EngineKind::Tract => RunError::Load(why),
            EngineKind::Ort => RunError::OrtLoad(why),
        })?;
        let model = raised.as_ref().unwrap_or(model);
        let engine = match kind {
            EngineKind::Tract => Runner::new(model).map(|r| Engine::Tract(Box::new(r))),
            EngineKind::Ort => ort(model).map(|r| Engine::Ort(Box::new(r))),
        };
        // loading folds constants with the engines' kernels too, loaded or not
        clear_upper_vector_state();
        engine
    }

    /// Bounds the plans a tract engine keeps (onnxruntime plans on its own).
    pub fn limit_plans(&mut self, n: usize) {
        if let Engine::Tract(r) = self {
            r.limit_plans(n);
        }
    }

    pub fn kind(&self) -> EngineKind {
        match self {
            Engine::Tract(_) => EngineKind::Tract,
            Engine::Ort(_) => EngineKind::Ort,
        }
    }

    pub fn inputs(&self) -> &[InputDesc] {
        match self {
            Engine::Tract(r) => r.inputs(),
            Engine::Ort(r) => r.inputs(),
        }
    }

    pub fn outputs(&self) -> &[String] {
        match self {
            Engine::Tract(r) => r.outputs(),
            Engine::Ort(r) => r.outputs(),
        }
    }

    pub fn run(&mut self, given: &[NamedTensor]) -> Result<Vec<NamedTensor>, RunError> {
        match self {
            Engine::Tract(r) => {
                let outputs = r.run(given);
                clear_upper_vector_state();
                outputs
            }
            // clears them itself, before copying the outputs
            Engine::Ort(r) => r.run(given),
        }
    }

    /// Runs on `given` and hands `visit` the outputs where the engine holds them: onnxruntime's
    /// buffers are read in place rather than copied into tensors of ours (measuring a
    /// detector's exposed activations, gigabytes of them, spent a third of its page faults on
    /// those copies into fresh memory).
    pub fn run_raw<R>(
        &mut self,
        given: &[NamedTensor],
        visit: impl FnOnce(&[RawOutput]) -> R,
    ) -> Result<R, RunError> {
        if let Engine::Ort(r) = self {
            return r.run_raw(given, visit);
        }
        // tract's outputs are tensors of ours already
        let outputs = self.run(given)?;
        let raw: Vec<RawOutput> = outputs.iter().map(RawOutput::of).collect();
        Ok(visit(&raw))
    }
}

/// One output of a run as the engine holds it: its element type, shape and bytes (which hold
/// the shape's elements of that type, as built here only).
#[derive(Debug)]
pub struct RawOutput<'a> {
    name: &'a str,
    datum_type: DatumType,
    shape: Vec<usize>,
    bytes: &'a [u8],
    /// The tensor of ours it lies in, if it does.
    tensor: Option<&'a Tensor>,
}

/// A float output's elements, in the type the engine computed them in.
pub enum Floats<'a> {
    F32(Cow<'a, [f32]>),
    F16(Cow<'a, [half::f16]>),
    F64(Cow<'a, [f64]>),
}

impl<'a> RawOutput<'a> {
    /// A tensor of ours, as it lies.
    pub fn of(t: &'a NamedTensor) -> RawOutput<'a> {
        RawOutput {
            name: &t.name,
            datum_type: t.tensor.datum_type(),
            shape: t.tensor.shape().to_vec(),
            // a plain (numeric or boolean) tensor's bytes are its elements; others (strings,
            // blobs) have none to read here
            bytes: if t.tensor.datum_type().is_copy() {
                t.tensor.as_bytes()
            } else {
                &[]
            },
            tensor: Some(&t.tensor),
        }
    }

    /// One in an engine's buffer: `bytes` holds the shape's elements of `datum_type`.
    pub(super) fn in_buffer(
        name: &'a str,
        datum_type: DatumType,
        shape: Vec<usize>,
        bytes: &'a [u8],
    ) -> RawOutput<'a> {
        RawOutput {
            name,
            datum_type,
            shape,
            bytes,
            tensor: None,
        }
    }

    pub fn name(&self) -> &'a str {
        self.name
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// A named tensor of ours with these elements (copied).
    pub fn to_named(&self) -> Result<NamedTensor, String> {
        Ok(NamedTensor {
            name: self.name.to_string(),
            tensor: self
                .to_tensor()
                .map_err(|e| format!("output '{}': {e}", self.name))?,
        })
    }

    /// A tensor of ours with these elements (copied).
    pub fn to_tensor(&self) -> Result<Tensor, String> {
        if let Some(t) = self.tensor {
            return Ok(t.clone());
        }
        if !self.datum_type.is_copy() {
            return Err(format!("{:?} values are not read here", self.datum_type));
        }
        // SAFETY: `bytes` holds the shape's elements of `datum_type`, as the engine wrote them
        unsafe { Tensor::from_raw_dt(self.datum_type, &self.shape, self.bytes) }
            .map_err(|e| e.to_string())
    }

    /// The elements of a float32, float16 or float64 output, borrowed where aligned (copied
    /// where not).
    pub fn floats(&self) -> Option<Floats<'a>> {
        fn cast<'b, T: Copy>(bytes: &'b [u8], from: fn(&[u8]) -> T) -> Cow<'b, [T]> {
            // SAFETY: T is a plain float type, any bit pattern of which is a value
            match unsafe { bytes.align_to::<T>() } {
                ([], elements, []) => Cow::Borrowed(elements),
                _ => Cow::Owned(
                    bytes
                        .chunks_exact(std::mem::size_of::<T>())
                        .map(from)
                        .collect(),
                ),
            }
        }
        Some(match self.datum_type {
            DatumType::F32 => Floats::F32(cast(self.bytes, |b| {
                f32::from_le_bytes(b.try_into().expect("4 bytes"))
            })),
            DatumType::F16 => Floats::F16(cast(self.bytes, |b| {
                half::f16::from_le_bytes(b.try_into().expect("2 bytes"))
            })),
            DatumType::F64 => Floats::F64(cast(self.bytes, |b| {
                f64::from_le_bytes(b.try_into().expect("8 bytes"))
            })),
            _ => return None,
        })
    }
}

impl Floats<'_> {
    pub fn len(&self) -> usize {
        match self {
            Floats::F32(v) => v.len(),
            Floats::F16(v) => v.len(),
            Floats::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements from `start` on, as many as `buf` holds, as float32: borrowed where they
    /// are float32, else widened (float16, vectorized) or narrowed (float64) into `buf`.
    pub fn block<'s>(&'s self, start: usize, buf: &'s mut [f32]) -> &'s [f32] {
        let end = start + buf.len();
        match self {
            Floats::F32(v) => &v[start..end],
            Floats::F16(v) => {
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[start..end], buf);
                buf
            }
            Floats::F64(v) => {
                for (o, x) in buf.iter_mut().zip(&v[start..end]) {
                    *o = *x as f32;
                }
                buf
            }
        }
    }

    /// All the elements as float32.
    pub fn to_f32(&self) -> Cow<'_, [f32]> {
        match self {
            Floats::F32(v) => Cow::Borrowed(v),
            _ => {
                let mut all = vec![0f32; self.len()];
                self.block(0, &mut all);
                Cow::Owned(all)
            }
        }
    }
}

/// Clears the upper halves of the vector registers (`vzeroupper`) after an engine's kernels
/// ran on this thread. tract 0.23's AVX-512 matrix kernels return with them dirty, and while
/// they are, every SSE instruction of ours (mdeploy's own float code is built for baseline
/// x86-64) waits on a false dependency: quantizing a BERT-size model's weights after the float
/// model ran took 15 ns a value instead of 2.5.
pub fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx")]
        fn zero_upper() {
            std::arch::x86_64::_mm256_zeroupper();
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX, checked just above
            unsafe { zero_upper() }
        }
    }
}

/// The order `auto` tries the engines in: tract, then onnxruntime; for a model that computes in
/// float16, holds 4-bit weights or runs int8 kernels, onnxruntime first when it is installed.
/// onnxruntime's CPU provider runs float16 ops through float32 kernels with Casts; tract
/// emulates float16 arithmetic where the CPU has none, which takes minutes on a detection
/// network a second takes in onnxruntime; tract has no 4-bit types at all; tract's integer
/// MatMul sums rows in a scalar reduce that took a third of a BERT-size model's quantization.
pub fn auto_order(model: &Model) -> [EngineKind; 2] {
    if reduced_precision(model) && available(EngineKind::Ort) {
        [EngineKind::Ort, EngineKind::Tract]
    } else {
        [EngineKind::Tract, EngineKind::Ort]
    }
}

/// Whether `model` computes in float16, holds 4-bit weights or runs int8 kernels (standard
/// ONNX's or onnxruntime's contrib ops), in its main graph or any If/Loop/Scan body.
pub fn reduced_precision(model: &Model) -> bool {
    use crate::onnx::DataType::{Float16, Int4, Uint4};
    let int8 = |n: &crate::onnx::proto::NodeProto| {
        n.op_type().starts_with("QLinear")
            || matches!(
                n.op_type(),
                "QuantizeLinear"
                    | "DequantizeLinear"
                    | "DynamicQuantizeLinear"
                    | "MatMulInteger"
                    | "ConvInteger"
                    | "MatMulIntegerToFloat"
                    | "DynamicQuantizeMatMul"
                    | "QGemm"
                    | "QAttention"
            )
    };
    holds(model.graph(), &[Float16, Int4, Uint4], &int8)
}

/// Whether `model` holds 4-bit weights or onnxruntime's 4-bit MatMul, in its main graph or any
/// If/Loop/Scan body: onnxruntime's `MatMulNBits` (which it also fuses a 4-bit
/// DequantizeLinear and its MatMul into) quantizes activations to int8 only with its weights
/// prepacked, and computes in float32 without.
pub fn four_bit(model: &Model) -> bool {
    use crate::onnx::DataType::{Int4, Uint4};
    holds(model.graph(), &[Int4, Uint4], &|n| {
        n.op_type() == "MatMulNBits"
    })
}

/// Whether `g` or any If/Loop/Scan body in it has a tensor (initializer, or a Constant's or
/// other node's tensor attribute) of one of `types`, or a node `node` picks.
fn holds(
    g: &crate::onnx::proto::GraphProto,
    types: &[crate::onnx::DataType],
    node: &dyn Fn(&crate::onnx::proto::NodeProto) -> bool,
) -> bool {
    let of_kind =
        |t: &crate::onnx::proto::TensorProto| types.iter().any(|d| t.data_type() == d.code());
    g.initializer.iter().any(of_kind)
        || g.node.iter().any(|n| {
            node(n)
                || n.attribute.iter().filter_map(|a| a.t.as_ref()).any(of_kind)
                || crate::graph::subgraphs(n).any(|b| holds(b, types, node))
        })
}

/// Whether onnxruntime's library can be found.
pub fn ort_available() -> bool {
    available(EngineKind::Ort)
}

/// The engine `choice` runs `model` in first.
pub fn first_engine(model: &Model, choice: EngineChoice) -> EngineKind {
    match choice {
        EngineChoice::Only(kind) | EngineChoice::First(kind) => kind,
        EngineChoice::Auto => auto_order(model)[0],
    }
}

/// `attempt` in the engine `choice` names; for `auto`, in the first of [`auto_order`] for
/// `model` (for `First`, in the one named), then, where that fails for a reason other than the
/// inputs and the other engine is installed, in the other, failing with both reasons where
/// neither succeeds.
pub fn in_either<T>(
    model: &Model,
    choice: EngineChoice,
    mut attempt: impl FnMut(EngineKind) -> Result<T, RunError>,
) -> Result<T, RunError> {
    if let EngineChoice::Only(kind) = choice {
        return attempt(kind);
    }
    let first = first_engine(model, choice);
    let second = first.other();
    match attempt(first) {
        Ok(done) => Ok(done),
        Err(e) if is_input_problem(&e) || !available(second) => Err(e),
        Err(e) => attempt(second).map_err(|other| neither(first, e, other)),
    }
}

fn available(kind: EngineKind) -> bool {
    kind == EngineKind::Tract || super::ort::library().is_ok()
}

fn neither(first: EngineKind, first_error: RunError, ort_or_tract: RunError) -> RunError {
    let (tract, ort) = match first {
        EngineKind::Tract => (first_error, ort_or_tract),
        EngineKind::Ort => (ort_or_tract, first_error),
    };
    RunError::Neither {
        tract: tract.to_string(),
        ort: ort.to_string(),
    }
}

/// Is a run error the inputs' fault (rather than the engine's or the model's)?
pub fn is_input_problem(e: &RunError) -> bool {
    matches!(
        e,
        RunError::Input { .. } | RunError::MissingInput(_) | RunError::Samples(_)
    )
}

/// What [`SampleChunks::each_chunk`] calls with each chunk.
pub type OnChunk<'f> = dyn FnMut(&[&[NamedTensor]]) -> Result<(), RunError> + 'f;

/// Samples handed out a chunk at a time: a set need not fit in memory, only a chunk of it does
/// (`pipeline::data::SampleSet` reads calibration data from disk as each pass over it goes).
/// Samples in memory are one chunk.
pub trait SampleChunks {
    /// Samples in all.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first sample (the shapes inference sizes a model at).
    fn first(&self) -> Option<&[NamedTensor]>;

    /// Calls `f` with each chunk of samples in turn, in order, and stops at the first error,
    /// its own or `f`'s.
    fn each_chunk(&self, f: &mut OnChunk) -> Result<(), RunError>;
}

/// Samples in memory, as a slice, a `Vec` or an array of them: one chunk.
macro_rules! in_memory {
    ($([$($generics:tt)*] $t:ty;)*) => {$(
        impl<$($generics)*> SampleChunks for $t {
            fn len(&self) -> usize {
                self[..].len()
            }

            fn first(&self) -> Option<&[NamedTensor]> {
                self[..].first().copied()
            }

            fn each_chunk(
                &self,
                f: &mut OnChunk,
            ) -> Result<(), RunError> {
                f(&self[..])
            }
        }
    )*};
}

in_memory! {
    ['a] &'a [&'a [NamedTensor]];
    ['a] Vec<&'a [NamedTensor]>;
    ['a, const N: usize] [&'a [NamedTensor]; N];
}

/// Runs `model` on every set of inputs in the chosen engine. With `auto`, a model the first
/// engine loads but cannot run (in tract: a shape only the taken branch of an If satisfies,
/// say) is run again, from the first sample, in the other. Returns the engine that produced the outputs.
pub fn run_all(
    model: &Model,
    choice: EngineChoice,
    samples: &[&[NamedTensor]],
    mut on_sample: impl FnMut(),
) -> Result<(EngineKind, Vec<Vec<NamedTensor>>), RunError> {
    let mut all = Vec::with_capacity(samples.len());
    let kind = run_each(model, choice, &samples, |k, out| {
        all.truncate(k);
        all.push(out);
        on_sample();
    })?;
    Ok((kind, all))
}

/// [`run_all`] without keeping the outputs: `on_output(k, outputs)` gets sample `k`'s outputs as
/// they come, so memory does not grow with the number of samples. After a fall-back to
/// onnxruntime the samples come again from 0: a caller that accumulates starts over when `k`
/// is 0.
pub fn run_each(
    model: &Model,
    choice: EngineChoice,
    samples: &dyn SampleChunks,
    on_output: impl FnMut(usize, Vec<NamedTensor>),
) -> Result<EngineKind, RunError> {
    run_each_at(model, choice, samples, GraphLevel::Default, on_output)
}

/// [`run_each`] with onnxruntime preparing the graph at `level`.
pub fn run_each_at(
    model: &Model,
    choice: EngineChoice,
    samples: &dyn SampleChunks,
    level: GraphLevel,
    mut on_output: impl FnMut(usize, Vec<NamedTensor>),
) -> Result<EngineKind, RunError> {
    let runs = samples.len();
    let mut engine = in_either(model, choice, |kind| {
        Engine::load_at(model, kind, runs, level)
    })?;
    let mut fell_back = false;
    loop {
        // a run that fails may go to the other engine; samples that cannot be read may not
        let mut run_failed = false;
        let mut k = 0;
        let outcome = samples.each_chunk(&mut |chunk| {
            for s in chunk {
                let out = engine.run(s).inspect_err(|_| run_failed = true)?;
                on_output(k, out);
                k += 1;
            }
            Ok(())
        });
        let e = match outcome {
            Ok(()) => return Ok(engine.kind()),
            Err(e) if !run_failed => return Err(e),
            Err(e) => e,
        };
        let other = engine.kind().other();
        let retry = !matches!(choice, EngineChoice::Only(_))
            && !fell_back
            && !is_input_problem(&e)
            && available(other);
        if !retry {
            return Err(e);
        }
        let failed = engine.kind();
        engine = Engine::load_at(model, other, runs, level).map_err(|o| neither(failed, e, o))?;
        fell_back = true;
    }
}

/// Samples handed out one chunk each, as a set larger than a chunk is; reading the one at
/// `broken` fails, as a truncated file does.
#[cfg(test)]
pub(crate) struct OneByOne<'a> {
    pub samples: Vec<&'a [NamedTensor]>,
    pub broken: Option<usize>,
}

#[cfg(test)]
impl SampleChunks for OneByOne<'_> {
    fn len(&self) -> usize {
        self.samples[..].len()
    }

    fn first(&self) -> Option<&[NamedTensor]> {
        self.samples[..].first().copied()
    }

    fn each_chunk(&self, f: &mut OnChunk) -> Result<(), RunError> {
        for (k, s) in self.samples.iter().enumerate() {
            if Some(k) == self.broken {
                return Err(RunError::Samples(
                    crate::run::tensor_io::TensorIoError::Format {
                        path: format!("test_data_set_{k}").into(),
                        what: "truncated".into(),
                    },
                ));
            }
            f(&[s])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::builder::ModelBuilder;
    use crate::onnx::DataType;
    use tract_onnx::prelude::tract_ndarray;

    /// Read in place, a run's outputs are the ones it returns as tensors, in both engines.
    #[test]
    fn raw_outputs_are_the_outputs_a_run_returns() {
        let proto = ModelBuilder::new(17)
            .input("x", DataType::Float, &["2", "3"])
            .node("Relu", &["x"], &["r"])
            .node("Cast", &["r"], &["h"])
            .attr(crate::graph::builder::attr_int(
                "to",
                DataType::Float16.code() as i64,
            ))
            .output("r", DataType::Float, &["2", "3"])
            .output("h", DataType::Float16, &["2", "3"])
            .build();
        let model = Model::from_proto(proto, ".".into());
        let x = vec![NamedTensor {
            name: "x".into(),
            tensor: Tensor::from(tract_ndarray::arr2(&[
                [1.5f32, -2.0, 3.25],
                [0.1, 7.0, -0.5],
            ])),
        }];
        let mut engines = vec![EngineKind::Tract];
        if ort_available() {
            engines.push(EngineKind::Ort);
        }
        for kind in engines {
            let mut engine = Engine::load_in(&model, kind, 1).unwrap();
            let owned = engine.run(&x).unwrap();
            let raw = engine
                .run_raw(&x, |outputs| {
                    outputs
                        .iter()
                        .map(|o| {
                            (
                                o.name().to_string(),
                                o.shape().to_vec(),
                                o.to_tensor().unwrap(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap();
            assert_eq!(raw.len(), 2);
            for (t, (name, shape, tensor)) in owned.iter().zip(&raw) {
                assert_eq!((&t.name, t.tensor.shape()), (name, &shape[..]), "{kind:?}");
                assert_eq!(&t.tensor, tensor, "{kind:?}");
            }
            let widened = engine
                .run_raw(&x, |outputs| {
                    let floats = outputs[1].floats().unwrap();
                    assert!(matches!(floats, Floats::F16(_)));
                    floats.to_f32().into_owned()
                })
                .unwrap();
            assert_eq!(widened, [1.5, 0.0, 3.25, 0.099975586, 7.0, 0.0], "{kind:?}");
        }
    }

    /// Elements are read in blocks as float32 from any float type, aligned or not.
    #[test]
    fn floats_widen_narrow_and_survive_misalignment() {
        let values = [1.0f32, -2.5, 65504.0, 1e-3];
        let t = NamedTensor {
            name: "v".into(),
            tensor: Tensor::from(tract_ndarray::arr1(&values)),
        };
        let raw = RawOutput::of(&t);
        let Some(Floats::F32(Cow::Borrowed(read))) = raw.floats() else {
            panic!("float32 is read in place");
        };
        assert_eq!(read, values);
        // the same bytes one byte off their alignment are copied, not misread
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(raw.bytes);
        let off = RawOutput::in_buffer("v", DatumType::F32, vec![4], &shifted[1..]);
        assert_eq!(off.floats().unwrap().to_f32().as_ref(), values);
        let f64s: Vec<u8> = values
            .iter()
            .flat_map(|v| f64::from(*v).to_le_bytes())
            .collect();
        let wide = RawOutput::in_buffer("v", DatumType::F64, vec![4], &f64s);
        let floats = wide.floats().unwrap();
        let mut buf = [0f32; 2];
        assert_eq!(floats.block(2, &mut buf), &values[2..]);
        let f16s: Vec<u8> = values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let halves = RawOutput::in_buffer("v", DatumType::F16, vec![4], &f16s);
        let got = halves.floats().unwrap().to_f32().into_owned();
        let want: Vec<f32> = values
            .iter()
            .map(|v| half::f16::from_f32(*v).to_f32())
            .collect();
        assert_eq!(got, want);
        let ints = RawOutput::in_buffer("v", DatumType::I32, vec![1], &[0; 4]);
        assert!(ints.floats().is_none());
    }

    /// Chunk after chunk, the samples are numbered in order as from one slice; a sample that
    /// cannot be read ends the runs with that error (in no other engine: it is the data's).
    #[test]
    fn runs_over_chunks_number_samples_in_order_and_stop_where_one_cannot_be_read() {
        let proto = ModelBuilder::new(17)
            .input("x", DataType::Float, &["2"])
            .node("Neg", &["x"], &["y"])
            .output("y", DataType::Float, &["2"])
            .build();
        let model = Model::from_proto(proto, ".".into());
        let sample = |v: f32| {
            vec![NamedTensor {
                name: "x".into(),
                tensor: tract_ndarray::arr1(&[v, v]).into(),
            }]
        };
        let (a, b, c) = (sample(1.0), sample(2.0), sample(3.0));
        let samples = vec![a.as_slice(), b.as_slice(), c.as_slice()];
        let first =
            |outputs: &[NamedTensor]| outputs[0].tensor.to_plain_array_view::<f32>().unwrap()[0];
        let mut seen = Vec::new();
        let whole = OneByOne {
            samples: samples.clone(),
            broken: None,
        };
        run_each(&model, EngineChoice::Auto, &whole, |k, out| {
            seen.push((k, first(&out)))
        })
        .unwrap();
        assert_eq!(seen, [(0, -1.0), (1, -2.0), (2, -3.0)]);
        let mut seen = Vec::new();
        let broken = OneByOne {
            samples,
            broken: Some(1),
        };
        let e = run_each(&model, EngineChoice::Auto, &broken, |k, out| {
            seen.push((k, first(&out)))
        })
        .unwrap_err();
        assert!(matches!(e, RunError::Samples(_)), "{e}");
        assert_eq!(seen, [(0, -1.0)]);
    }
}
