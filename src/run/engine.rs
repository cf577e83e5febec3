//! The engines a model can run in, behind one interface: tract (embedded, always available) and
//! onnxruntime (loaded at run time when installed). `auto` runs tract, and onnxruntime where
//! tract cannot load or run the model; callers say which engine produced what.

use serde::{Deserialize, Serialize};

use super::ort::OrtRunner;
use super::{InputDesc, NamedTensor, RunError, Runner};
use crate::onnx::Model;

/// An engine by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Tract,
    Ort,
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

impl Engine {
    /// Loads `model` in the chosen engine (for `auto`: the first of [`auto_order`] that loads).
    pub fn load(model: &Model, choice: EngineChoice) -> Result<Engine, RunError> {
        in_either(model, choice, |kind| Engine::load_in(model, kind))
    }

    pub fn load_in(model: &Model, kind: EngineKind) -> Result<Engine, RunError> {
        Engine::load_as(model, kind, OrtRunner::new)
    }

    /// Loads `model` for serving, as [`Engine::load`] does, with onnxruntime's threads as
    /// [`OrtRunner::serving`] has them.
    pub fn load_serving(model: &Model, choice: EngineChoice) -> Result<Engine, RunError> {
        in_either(model, choice, |kind| {
            Engine::load_as(model, kind, OrtRunner::serving)
        })
    }

    fn load_as(
        model: &Model,
        kind: EngineKind,
        ort: fn(&Model) -> Result<OrtRunner, RunError>,
    ) -> Result<Engine, RunError> {
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
        let outputs = match self {
            Engine::Tract(r) => r.run(given),
            Engine::Ort(r) => r.run(given),
        };
        clear_upper_vector_state();
        outputs
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
    // weights in Constant nodes and in If/Loop/Scan bodies count too
    fn holds(g: &crate::onnx::proto::GraphProto) -> bool {
        let of_kind = |t: &crate::onnx::proto::TensorProto| {
            [Float16, Int4, Uint4]
                .iter()
                .any(|d| t.data_type() == d.code())
        };
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
        g.initializer.iter().any(of_kind)
            || g.node.iter().any(|n| {
                int8(n)
                    || n.attribute.iter().filter_map(|a| a.t.as_ref()).any(of_kind)
                    || crate::graph::subgraphs(n).any(holds)
            })
    }
    holds(model.graph())
}

/// Whether onnxruntime's library can be found.
pub fn ort_available() -> bool {
    available(EngineKind::Ort)
}

/// `attempt` in the engine `choice` names; for `auto`, in the first of [`auto_order`] for
/// `model`, then, where that fails for a reason other than the inputs and the other engine is
/// installed, in the other, failing with both reasons where neither succeeds.
pub fn in_either<T>(
    model: &Model,
    choice: EngineChoice,
    mut attempt: impl FnMut(EngineKind) -> Result<T, RunError>,
) -> Result<T, RunError> {
    let [first, second] = match choice {
        EngineChoice::Only(kind) => return attempt(kind),
        EngineChoice::Auto => auto_order(model),
    };
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
    matches!(e, RunError::Input { .. } | RunError::MissingInput(_))
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
    let kind = run_each(model, choice, samples, |k, out| {
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
    samples: &[&[NamedTensor]],
    mut on_output: impl FnMut(usize, Vec<NamedTensor>),
) -> Result<EngineKind, RunError> {
    let mut engine = Engine::load(model, choice)?;
    let mut fell_back = false;
    loop {
        let mut failure = None;
        for (k, s) in samples.iter().enumerate() {
            match engine.run(s) {
                Ok(out) => on_output(k, out),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let Some(e) = failure else {
            return Ok(engine.kind());
        };
        let other = match engine.kind() {
            EngineKind::Tract => EngineKind::Ort,
            EngineKind::Ort => EngineKind::Tract,
        };
        let retry =
            choice == EngineChoice::Auto && !fell_back && !is_input_problem(&e) && available(other);
        if !retry {
            return Err(e);
        }
        let failed = engine.kind();
        engine = Engine::load_in(model, other).map_err(|o| neither(failed, e, o))?;
        fell_back = true;
    }
}
