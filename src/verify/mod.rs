//! `verify`: proves a candidate model computes what its reference does (or what stored expected
//! outputs say), output by output, with the evidence in a versioned report (`docs/verify.md`).
//!
//! Models run in the engine the caller chooses (`auto`: tract, and onnxruntime where tract cannot
//! run the model; both in onnxruntime where either computes in float16, int8 or 4-bit); the
//! report says which engine ran which model. A candidate that cannot be run
//! while its reference can is a failure. `unsupported` is left for a reference (or the only
//! model) that no available engine can run: never a pass, and distinct from `failed`.

mod metrics;
mod samples;
mod tolerance;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use metrics::{Accumulator, OutputReport, SampleSums, SideCounts, Similarity};
pub use samples::{Sample, SampleSource, load_samples, sample_sources, save_samples};
pub use tolerance::{PRESETS, Preset, Tolerance, parse_preset, preset};

use crate::convert::OpRef;
use crate::onnx::Model;
use crate::progress::Progress;
use crate::run::{EngineChoice, EngineKind, NamedTensor, RunError, is_input_problem, tract_model};

/// Identifies the report's format; bumped on any incompatible change.
pub const VERIFY_FORMAT: &str = "mdeploy.verify/2";
/// Read too: the same fields, with cosine and SQNR pooled over the samples instead of the worst
/// sample's.
pub const VERIFY_FORMATS_READ: &[&str] = &["mdeploy.verify/1"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    Unsupported,
}

/// A model tract cannot run: which ops (where known) and tract's message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unsupported {
    /// `reference` or `candidate`.
    pub model: String,
    pub ops: Vec<OpRef>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinRequired {
    /// The smallest single atol (with rtol 0) under which every output passes.
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub atol: f64,
    /// The smallest single rtol (with atol 0) under which every output passes.
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub rtol: f64,
}

/// The verification report (JSON format `mdeploy.verify/2`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyReport {
    pub format: String,
    pub mdeploy_version: String,
    pub status: Status,
    /// `models` (reference against candidate) or `stored` (a model against expected outputs).
    pub mode: String,
    pub reference: String,
    pub candidate: Option<String>,
    /// SHA-256 of the reference's ONNX file, when the caller recorded it (`pack` checks that a
    /// report describes the model it packs).
    #[serde(default)]
    pub reference_sha256: Option<String>,
    /// SHA-256 of the candidate's ONNX file, when recorded.
    #[serde(default)]
    pub candidate_sha256: Option<String>,
    /// `random` (with `seed`) or `files`.
    pub data: String,
    pub seed: Option<u64>,
    pub samples: usize,
    pub tolerance: Tolerance,
    pub outputs: Vec<OutputReport>,
    pub min_required: Option<MinRequired>,
    pub unsupported: Option<Unsupported>,
    /// The engine that ran each model (`reference`, `candidate`).
    pub engines: BTreeMap<String, EngineKind>,
    /// The candidate's outputs are those `optimize`'s accuracy search computed when it ran the
    /// same model, as written, on the same inputs in the same engine: read, not computed again.
    #[serde(default)]
    pub candidate_outputs_reused: bool,
    /// The reference's outputs are those `optimize` computed while it quantized, running the
    /// same model on the same inputs in the same engine: read, not computed again.
    #[serde(default)]
    pub reference_outputs_reused: bool,
    /// Why the check failed without comparing outputs (a candidate that does not run).
    pub failure: Option<String>,
    /// With `compare_engines`: the candidate's outputs in tract against its outputs in
    /// onnxruntime, at the same tolerance (evidence; it does not decide the status).
    pub cross_engine: Option<CrossEngine>,
}

impl VerifyReport {
    /// Records the SHA-256 of the files the models were loaded from.
    pub fn with_digests(mut self, reference: &Model, candidate: Option<&Model>) -> Self {
        self.reference_sha256 = reference.file_sha256();
        self.candidate_sha256 = candidate.and_then(Model::file_sha256);
        self
    }

    /// Reads a report, refusing anything that is not a verify report.
    pub fn from_json(bytes: &[u8], origin: &std::path::Path) -> Result<Self, VerifyError> {
        crate::json::read_document(bytes, origin, VERIFY_FORMAT, VERIFY_FORMATS_READ)
            .map_err(VerifyError::Input)
    }

    /// The SHA-256 of the model this report vouches for: the candidate's, or with one model
    /// checked against stored outputs, that model's.
    pub fn checked_sha256(&self) -> Option<&str> {
        match &self.candidate {
            Some(_) => self.candidate_sha256.as_deref(),
            None => self.reference_sha256.as_deref(),
        }
    }
}

/// How far two engines' answers for one model are apart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrossEngine {
    pub model: String,
    pub engines: [EngineKind; 2],
    pub outputs: Vec<OutputReport>,
    pub min_required: Option<MinRequired>,
    /// Why the comparison could not be made, if it could not.
    pub error: Option<String>,
}

/// Why verification could not even be attempted (the inputs' fault: exit 2).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Run(RunError),
    #[error(transparent)]
    Data(#[from] crate::run::tensor_io::TensorIoError),
}

/// Where the compared values come from, and which engines compute them.
pub struct Inputs<'a> {
    pub samples: &'a [Sample],
    pub random_seed: Option<u64>,
    pub engine: EngineChoice,
    /// Also run the candidate in both tract and onnxruntime and report how far they disagree.
    pub compare_engines: bool,
    /// What the candidate computed already: read instead of running it where it holds every
    /// sample's inputs, computed in the engine the candidate runs in first.
    pub computed: Option<&'a Computed>,
    /// What the reference computed already, read likewise.
    pub reference_computed: Option<&'a Computed>,
}

/// What a model computed on some inputs in one engine (`optimize`'s accuracy search ran the
/// quantized model as written on the samples it measured; `optimize` ran the input model on the
/// verification's samples while it quantized): a verification of that model on the same
/// inputs, in the same engine, reads its outputs instead of running it again.
pub struct Computed {
    pub engine: EngineKind,
    /// Per sample: its inputs and the model's outputs.
    pub samples: Vec<(Vec<NamedTensor>, Vec<NamedTensor>)>,
}

impl Computed {
    /// The outputs `engine` gave for each of `inputs`, in order.
    pub fn new<'a>(
        engine: EngineKind,
        inputs: impl Iterator<Item = &'a [NamedTensor]>,
        outputs: Vec<Vec<NamedTensor>>,
    ) -> Computed {
        Computed {
            engine,
            samples: inputs.map(<[NamedTensor]>::to_vec).zip(outputs).collect(),
        }
    }

    /// The outputs of each of `samples`, where every one's inputs are among those computed (the
    /// same names, types, shapes and values) and `engine` is where the model runs first.
    fn outputs_for(&self, samples: &[Sample], engine: EngineKind) -> Option<Vec<Vec<NamedTensor>>> {
        if engine != self.engine {
            return None;
        }
        // bit for bit where the type is plain data (float equality takes -0 for 0, and a
        // model may tell them apart)
        let equal = |a: &tract_onnx::prelude::Tensor, b: &tract_onnx::prelude::Tensor| {
            a.datum_type() == b.datum_type()
                && a.shape() == b.shape()
                && if a.datum_type().is_copy() {
                    a.as_bytes() == b.as_bytes()
                } else {
                    a == b
                }
        };
        let same = |a: &[NamedTensor], b: &[NamedTensor]| {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(a, b)| a.name == b.name && equal(&a.tensor, &b.tensor))
        };
        samples
            .iter()
            .map(|s| {
                self.samples
                    .iter()
                    .find(|(inputs, _)| same(inputs, &s.inputs))
                    .map(|(_, outputs)| outputs.clone())
            })
            .collect()
    }
}

/// Describes a tract failure: the ops tract does not know (from the parsed model), else the op
/// and node its error message names.
fn unsupported(model: &Model, which: &'static str, error: &RunError) -> Unsupported {
    let mut ops = match tract_model(model) {
        Ok(m) => m
            .nodes()
            .iter()
            .filter_map(|n| {
                let name = n.op.name();
                let op = name
                    .strip_prefix("Unimplemented(")?
                    .strip_suffix(')')?
                    .to_string();
                Some(OpRef {
                    op,
                    node: n.name.clone(),
                })
            })
            .collect(),
        Err(_) => vec![],
    };
    let message = error.to_string();
    if ops.is_empty()
        && let Some(op) = op_in_message(model, &message)
    {
        ops.push(op);
    }
    Unsupported {
        model: which.to_string(),
        ops,
        message,
    }
}

/// A model the engines fail to run on seeded random samples, for no op they lack, may fail for
/// the values and sizes it was given (a sample-rate input it branches on, a signal shorter than
/// it pads by): the message says what it ran on and how to give it better.
fn on_random_samples(mut u: Unsupported, inputs: &Inputs) -> Unsupported {
    if inputs.random_seed.is_none() || !u.ops.is_empty() {
        return u;
    }
    let Some(first) = inputs.samples.first() else {
        return u;
    };
    u.message = format!(
        "{} ({}; a model that needs real values, such as a sample rate or a minimum length, is verified on them with --data, and --input-shape sets other sizes)",
        u.message,
        random_inputs(&first.inputs)
    );
    u
}

/// What a model was run on, where it was seeded random inputs: `on seeded random inputs: x
/// [1, 64] FLOAT, sr [] INT64`.
pub fn random_inputs(sample: &[NamedTensor]) -> String {
    let shapes: Vec<String> = sample
        .iter()
        .map(|t| {
            let dtype = crate::run::tensor_io::onnx_dtype(t.tensor.datum_type())
                .map_or_else(|| format!("{:?}", t.tensor.datum_type()), |d| d.to_string());
            format!("{} {:?} {dtype}", t.name, t.tensor.shape())
        })
        .collect();
    format!("on seeded random inputs: {}", shapes.join(", "))
}

/// tract names the failing node as `Building node NAME (OP)` or `node #N "NAME" OP`, where an
/// unnamed ONNX node is named after its first output: find one of the model's nodes there.
fn op_in_message(model: &Model, message: &str) -> Option<OpRef> {
    model.graph().node.iter().find_map(|n| {
        let tract_name = match n.name() {
            "" => n.output.first().map(String::as_str).unwrap_or_default(),
            name => name,
        };
        let quoted = format!("\"{tract_name}\"");
        let building = format!("node {} ({})", n.name(), n.op_type());
        (message.contains(&building) || (!tract_name.is_empty() && message.contains(&quoted))).then(
            || OpRef {
                op: n.op_type().to_string(),
                node: tract_name.to_string(),
            },
        )
    })
}

/// Whether tract can take the model's inputs and give its outputs at all: tensors of element
/// types tract has (no sequences, optionals, 8-bit floats, 4-bit or 2-bit ints, bfloat16).
pub fn interface_problem(model: &Model, which: &'static str) -> Option<Unsupported> {
    use crate::onnx::proto::type_proto::Value;
    let g = model.graph();
    let interface = g
        .input
        .iter()
        .filter(|i| !g.initializer.iter().any(|t| t.name() == i.name()))
        .chain(&g.output);
    for v in interface {
        let problem = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(Value::TensorType(t)) => crate::onnx::DataType::from_code(t.elem_type())
                .ok()
                .filter(|d| crate::run::tensor_io::datum_type(*d).is_none())
                .map(|d| format!("'{}' is a {d} tensor, a type tract does not have", v.name())),
            Some(Value::SequenceType(_)) => Some(format!(
                "'{}' is a sequence; tract runs tensors only",
                v.name()
            )),
            Some(Value::OptionalType(_)) => Some(format!(
                "'{}' is an optional; tract runs tensors only",
                v.name()
            )),
            Some(Value::MapType(_)) => {
                Some(format!("'{}' is a map; tract runs tensors only", v.name()))
            }
            _ => None,
        };
        if let Some(message) = problem {
            return Some(Unsupported {
                model: which.to_string(),
                ops: vec![],
                message,
            });
        }
    }
    None
}

/// A report for a verification that could not run because a model is unsupported.
pub fn unsupported_report(
    reference: &str,
    candidate: Option<&str>,
    tolerance: Tolerance,
    unsupported: Unsupported,
) -> VerifyReport {
    let inputs = Inputs {
        samples: &[],
        random_seed: None,
        engine: EngineChoice::Auto,
        compare_engines: false,
        computed: None,
        reference_computed: None,
    };
    let mode = if candidate.is_some() {
        "models"
    } else {
        "stored"
    };
    let mut report = empty_report(mode, reference, candidate, &inputs, tolerance);
    report.unsupported = Some(unsupported);
    finish(report)
}

/// What a model gave on every sample, and the engine that ran it.
type Outputs = (EngineKind, Vec<Vec<NamedTensor>>);

/// Runs a model on every sample in the chosen engine; a failure that is not the inputs' fault
/// is returned as what could not be run.
fn run_samples(
    model: &Model,
    which: &'static str,
    samples: &[Sample],
    engine: EngineChoice,
    progress: &dyn Progress,
) -> Result<Result<Outputs, Unsupported>, VerifyError> {
    let inputs: Vec<&[NamedTensor]> = samples.iter().map(|s| s.inputs.as_slice()).collect();
    match crate::run::run_all(model, engine, &inputs, || progress.on_advance(1)) {
        Ok(done) => Ok(Ok(done)),
        // bad inputs, or an engine asked for by name that is not installed: the caller's to fix
        Err(e) if is_input_problem(&e) || matches!(e, RunError::OrtUnavailable(_)) => {
            Err(VerifyError::Run(e))
        }
        Err(e) => Ok(Err(unsupported(model, which, &e))),
    }
}

/// A model's outputs on every sample: read from `computed` where it holds them from the engine
/// the model runs in first (and then `true`), else run. With `to_half`, a model with a float16
/// interface (the candidate of `optimize --fp16 --fp16-io`) takes the same inputs rounded to
/// float16 (its float16 outputs are compared as float32).
#[allow(clippy::too_many_arguments)]
fn read_or_run(
    model: &Model,
    which: &'static str,
    samples: &[Sample],
    engine: EngineChoice,
    computed: Option<&Computed>,
    to_half: bool,
    progress: &dyn Progress,
) -> Result<(Result<Outputs, Unsupported>, bool), VerifyError> {
    let first = crate::run::first_engine(model, engine);
    if let Some(outputs) = computed.and_then(|c| c.outputs_for(samples, first)) {
        progress.on_advance(outputs.len() as u64);
        return Ok((Ok((first, outputs)), true));
    }
    let rounded = to_half.then(|| half_inputs(model, samples)).flatten();
    let ran = run_samples(
        model,
        which,
        rounded.as_deref().unwrap_or(samples),
        engine,
        progress,
    )?;
    Ok((ran, false))
}

/// The engine choice [`verify_models`] runs `reference` in beside a candidate that computes in
/// reduced precision (float16, int8, 4-bit), as a quantized one does.
pub fn beside_reduced_precision(choice: EngineChoice, reference: &Model) -> EngineChoice {
    side_by_side_with(choice, reference, crate::run::ort_available())
}

/// The samples with every float32 tensor fed to a float16 input of `model` rounded to float16;
/// `None` when the model takes no float16 input.
fn half_inputs(model: &Model, samples: &[Sample]) -> Option<Vec<Sample>> {
    let half = half_input_names(model);
    if half.is_empty() {
        return None;
    }
    let mut samples = samples.to_vec();
    for s in &mut samples {
        s.inputs = round_to_half(&s.inputs, &half);
    }
    Some(samples)
}

/// The names of `model`'s float16 graph inputs.
pub fn half_input_names(model: &Model) -> Vec<String> {
    crate::run::graph_inputs(model)
        .into_iter()
        .filter(|i| i.dtype == Some(crate::onnx::DataType::Float16))
        .map(|i| i.name)
        .collect()
}

/// One sample's inputs with every float32 tensor fed to one of the float16 inputs `half`
/// rounded to float16 (what a float16 interface is fed in place of float32 data).
pub fn round_to_half(inputs: &[NamedTensor], half: &[String]) -> Vec<NamedTensor> {
    use tract_onnx::prelude::{DatumType, f16};
    let mut inputs = inputs.to_vec();
    for t in inputs.iter_mut().filter(|t| half.contains(&t.name)) {
        if t.tensor.datum_type() == DatumType::F32
            && let Ok(h) = t.tensor.cast_to::<f16>()
        {
            t.tensor = h.into_owned();
        }
    }
    inputs
}

/// The candidate's float16 outputs as float32 where the reference's are float32 (a float16
/// interface compared with a float32 one); everything else as it is.
pub fn widen_half(
    mut got: Vec<Vec<NamedTensor>>,
    want: &[Vec<NamedTensor>],
) -> Vec<Vec<NamedTensor>> {
    use tract_onnx::prelude::DatumType;
    for (g, w) in got.iter_mut().zip(want) {
        for t in g
            .iter_mut()
            .filter(|t| t.tensor.datum_type() == DatumType::F16)
        {
            let reference_f32 = w
                .iter()
                .any(|r| r.name == t.name && r.tensor.datum_type() == DatumType::F32);
            if reference_f32 && let Ok(f) = t.tensor.cast_to::<f32>() {
                t.tensor = f.into_owned();
            }
        }
    }
    got
}

/// Compares a candidate against its reference on the same inputs.
pub fn verify_models(
    reference: (&Model, &str),
    candidate: (&Model, &str),
    inputs: Inputs,
    tolerance: Tolerance,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    let mut report = empty_report("models", reference.1, Some(candidate.1), &inputs, tolerance);
    check_outputs_named(&report.tolerance, reference.0)?;
    progress.on_start("verify", 2 * inputs.samples.len() as u64);
    let engine = side_by_side(inputs.engine, reference.0, candidate.0);
    let (want, reused) = read_or_run(
        reference.0,
        "reference",
        inputs.samples,
        engine,
        inputs.reference_computed,
        false,
        progress,
    )?;
    report.reference_outputs_reused = reused;
    let (got, reused) = read_or_run(
        candidate.0,
        "candidate",
        inputs.samples,
        engine,
        inputs.computed,
        true,
        progress,
    )?;
    report.candidate_outputs_reused = reused;
    progress.on_finish();
    match (want, got) {
        (Err(u), _) => report.unsupported = Some(on_random_samples(u, &inputs)),
        (Ok((engine, _)), Err(u)) => {
            // the reference runs: a candidate that does not is a failure, never "unsupported"
            report.engines.insert("reference".to_string(), engine);
            let ops: Vec<String> = u
                .ops
                .iter()
                .map(|o| format!("{} (node '{}')", o.op, o.node))
                .collect();
            report.failure = Some(match ops.is_empty() {
                true => format!("the candidate does not run: {}", u.message),
                false => format!(
                    "the candidate does not run ({}): {}",
                    ops.join(", "),
                    u.message
                ),
            });
        }
        (Ok((a, want)), Ok((b, got))) => {
            report.engines.insert("reference".to_string(), a);
            report.engines.insert("candidate".to_string(), b);
            let got = widen_half(got, &want);
            compare(&mut report, &want, &got);
        }
    }
    if inputs.compare_engines && report.failure.is_none() && report.unsupported.is_none() {
        report.cross_engine = Some(cross_engine(candidate.0, inputs.samples, &report.tolerance));
    }
    Ok(finish(report))
}

/// The engine two models compared run in: under `auto`, where either of them runs in
/// onnxruntime first (a float16, 4-bit or int8 model, [`crate::run::auto_order`]), both do, so
/// what the report measures is what tells the models apart, not how far two engines' float
/// kernels are, and a float reference runs at onnxruntime's speed (ppocr_v4_det: 0.57 s in
/// tract, 0.1 s); each still goes to the other engine where its first cannot load or run it.
/// An engine named is the one both run in.
fn side_by_side(choice: EngineChoice, reference: &Model, candidate: &Model) -> EngineChoice {
    side_by_side_with(choice, reference, ort_first(candidate))
}

fn ort_first(model: &Model) -> bool {
    crate::run::auto_order(model)[0] == EngineKind::Ort
}

/// [`side_by_side`] with a candidate that `auto` runs in onnxruntime first, or not.
fn side_by_side_with(
    choice: EngineChoice,
    reference: &Model,
    candidate_ort_first: bool,
) -> EngineChoice {
    match choice {
        EngineChoice::Auto if candidate_ort_first || ort_first(reference) => {
            EngineChoice::First(EngineKind::Ort)
        }
        other => other,
    }
}

/// The model's outputs in tract against its outputs in onnxruntime.
fn cross_engine(model: &Model, samples: &[Sample], tolerance: &Tolerance) -> CrossEngine {
    let inputs: Vec<&[NamedTensor]> = samples.iter().map(|s| s.inputs.as_slice()).collect();
    let mut result = CrossEngine {
        model: "candidate".to_string(),
        engines: [EngineKind::Tract, EngineKind::Ort],
        outputs: vec![],
        min_required: None,
        error: None,
    };
    let run = |kind| crate::run::run_all(model, EngineChoice::Only(kind), &inputs, || {});
    match (run(EngineKind::Tract), run(EngineKind::Ort)) {
        (Ok((_, a)), Ok((_, b))) => {
            let (outputs, min_required) = compare_outputs(tolerance, &a, &b);
            result.outputs = outputs;
            result.min_required = min_required;
        }
        (Err(e), _) | (_, Err(e)) => result.error = Some(e.to_string()),
    }
    result
}

/// Checks a model against the expected outputs stored with each sample.
pub fn verify_stored(
    model: (&Model, &str),
    inputs: Inputs,
    tolerance: Tolerance,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    let mut report = empty_report("stored", model.1, None, &inputs, tolerance);
    check_outputs_named(&report.tolerance, model.0)?;
    let names: Vec<String> = model
        .0
        .graph()
        .output
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let mut want = Vec::with_capacity(inputs.samples.len());
    for (i, s) in inputs.samples.iter().enumerate() {
        let expected = s.expected.as_ref().ok_or_else(|| {
            VerifyError::Input(format!("sample {i} ({}) has no expected outputs", s.origin))
        })?;
        want.push(name_by_position(expected, &names));
    }
    progress.on_start("verify", inputs.samples.len() as u64);
    let got = run_samples(
        model.0,
        "reference",
        inputs.samples,
        inputs.engine,
        progress,
    )?;
    progress.on_finish();
    match got {
        Err(u) => report.unsupported = Some(u),
        Ok((engine, got)) => {
            report.engines.insert("reference".to_string(), engine);
            compare(&mut report, &want, &got);
        }
    }
    if inputs.compare_engines && report.unsupported.is_none() {
        let mut cross = cross_engine(model.0, inputs.samples, &report.tolerance);
        cross.model = "reference".to_string();
        report.cross_engine = Some(cross);
    }
    Ok(finish(report))
}

/// Stored tensors without names take the model's output names in order.
fn name_by_position(tensors: &[NamedTensor], names: &[String]) -> Vec<NamedTensor> {
    tensors
        .iter()
        .enumerate()
        .map(|(k, t)| NamedTensor {
            name: if t.name.is_empty() {
                names.get(k).cloned().unwrap_or_default()
            } else {
                t.name.clone()
            },
            tensor: t.tensor.clone(),
        })
        .collect()
}

fn check_outputs_named(tolerance: &Tolerance, model: &Model) -> Result<(), VerifyError> {
    let outputs: Vec<&str> = model.graph().output.iter().map(|o| o.name()).collect();
    for name in tolerance.named_outputs() {
        if !outputs.contains(&name.as_str()) {
            return Err(VerifyError::Input(format!(
                "a tolerance names output '{name}', which the model does not have (outputs: {})",
                outputs.join(", ")
            )));
        }
    }
    Ok(())
}

fn empty_report(
    mode: &'static str,
    reference: &str,
    candidate: Option<&str>,
    inputs: &Inputs,
    tolerance: Tolerance,
) -> VerifyReport {
    VerifyReport {
        format: VERIFY_FORMAT.to_string(),
        mdeploy_version: env!("CARGO_PKG_VERSION").to_string(),
        status: Status::Failed,
        mode: mode.to_string(),
        reference: reference.to_string(),
        candidate: candidate.map(str::to_string),
        reference_sha256: None,
        candidate_sha256: None,
        data: if inputs.random_seed.is_some() {
            "random".to_string()
        } else {
            "files".to_string()
        },
        seed: inputs.random_seed,
        samples: inputs.samples.len(),
        tolerance,
        outputs: vec![],
        min_required: None,
        unsupported: None,
        engines: BTreeMap::new(),
        candidate_outputs_reused: false,
        reference_outputs_reused: false,
        failure: None,
        cross_engine: None,
    }
}

/// Compares outputs by name, in the reference's order, into the report.
fn compare(report: &mut VerifyReport, want: &[Vec<NamedTensor>], got: &[Vec<NamedTensor>]) {
    let (outputs, min_required) = compare_outputs(&report.tolerance, want, got);
    report.outputs = outputs;
    report.min_required = min_required;
}

/// Does every output of `got` pass `tol` against `want` (the samples' outputs, in order)? No
/// samples prove nothing: false.
pub fn outputs_agree(tol: &Tolerance, want: &[Vec<NamedTensor>], got: &[Vec<NamedTensor>]) -> bool {
    let (outputs, _) = compare_outputs(tol, want, got);
    !want.is_empty() && !outputs.is_empty() && outputs.iter().all(|o| o.passed)
}

/// Per-output metrics of `got` against `want`, and the smallest tolerances that pass them all.
fn compare_outputs(
    tol: &Tolerance,
    want: &[Vec<NamedTensor>],
    got: &[Vec<NamedTensor>],
) -> (Vec<OutputReport>, Option<MinRequired>) {
    let mut acc: BTreeMap<String, Accumulator> = BTreeMap::new();
    let order: Vec<String> = want
        .first()
        .map(|w| w.iter().map(|t| t.name.clone()).collect())
        .unwrap_or_default();
    for (w, g) in want.iter().zip(got) {
        for reference in w {
            // an atol given for this output replaces the preset's, scaled term included
            // the scaled term is for float noise, not for indices or labels
            let scale = if tol.atol_by_output.contains_key(&reference.name)
                || !reference.tensor.datum_type().is_float()
            {
                0.0
            } else {
                tol.scaled_atol * metrics::magnitude(&reference.tensor)
            };
            let (atol, rtol) = (
                tol.atol_for(&reference.name) + scale,
                tol.rtol_for(&reference.name),
            );
            if let Some(candidate) = g.iter().find(|c| c.name == reference.name) {
                acc.entry(reference.name.clone()).or_default().add(
                    &reference.tensor,
                    &candidate.tensor,
                    atol,
                    rtol,
                );
            }
        }
    }
    let mut outputs = Vec::new();
    for name in order {
        let (atol, rtol) = (tol.atol_for(&name), tol.rtol_for(&name));
        let (min_cosine, max_outliers) = tol.cosine_for(&name);
        let out = match acc.remove(&name) {
            Some(a) => a.finish(&name, atol, rtol, min_cosine, max_outliers),
            None => {
                let mut a = Accumulator::default().finish(&name, atol, rtol, None, 0.0);
                a.passed = false;
                a.message = Some("the candidate has no output of this name".into());
                a
            }
        };
        outputs.push(out);
    }
    let min_required = Some(MinRequired {
        atol: outputs.iter().map(|o| o.min_atol).fold(0.0, f64::max),
        rtol: outputs.iter().map(|o| o.min_rtol).fold(0.0, f64::max),
    });
    (outputs, min_required)
}

fn finish(mut report: VerifyReport) -> VerifyReport {
    report.status = if report.unsupported.is_some() {
        Status::Unsupported
    } else if report.failure.is_none()
        && !report.outputs.is_empty()
        && report.outputs.iter().all(|o| o.passed)
    {
        Status::Passed
    } else {
        Status::Failed
    };
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::{Tensor, tract_ndarray};

    fn named(name: &str, values: &[f32]) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            tensor: Tensor::from(tract_ndarray::arr1(values)),
        }
    }

    fn sample(inputs: Vec<NamedTensor>) -> Sample {
        Sample {
            origin: "test".into(),
            inputs,
            expected: None,
        }
    }

    /// Outputs computed before are read for the samples whose inputs are the same, in any
    /// order, and only when every sample's are there and the engine is the one that would run.
    #[test]
    fn outputs_computed_before_are_read_only_for_the_same_inputs_in_the_same_engine() {
        let computed = Computed {
            engine: EngineKind::Ort,
            samples: vec![
                (vec![named("x", &[1.0, 2.0])], vec![named("y", &[10.0])]),
                (vec![named("x", &[3.0, 4.0])], vec![named("y", &[20.0])]),
                (vec![named("x", &[0.0, 4.0])], vec![named("y", &[30.0])]),
            ],
        };
        let first = |outputs: Option<Vec<Vec<NamedTensor>>>| -> Vec<f32> {
            outputs
                .unwrap()
                .iter()
                .map(|o| o[0].tensor.to_plain_array_view::<f32>().unwrap()[0])
                .collect()
        };
        let reversed = [
            sample(vec![named("x", &[3.0, 4.0])]),
            sample(vec![named("x", &[1.0, 2.0])]),
        ];
        assert_eq!(
            first(computed.outputs_for(&reversed, EngineKind::Ort)),
            [20.0, 10.0]
        );
        assert_eq!(
            first(computed.outputs_for(&reversed[..1], EngineKind::Ort)),
            [20.0]
        );
        assert!(computed.outputs_for(&reversed, EngineKind::Tract).is_none());
        let half = NamedTensor {
            name: "x".into(),
            tensor: Tensor::from(tract_ndarray::arr1(&[3.0f32, 4.0]))
                .cast_to::<tract_onnx::prelude::f16>()
                .unwrap()
                .into_owned(),
        };
        for other in [
            // another value, another sign of zero, another type, another name, another shape,
            // one input more
            vec![named("x", &[3.0, 4.5])],
            vec![named("x", &[-0.0, 4.0])],
            vec![half],
            vec![named("z", &[3.0, 4.0])],
            vec![named("x", &[3.0, 4.0, 0.0])],
            vec![named("x", &[3.0, 4.0]), named("mask", &[1.0])],
        ] {
            let samples = [sample(vec![named("x", &[1.0, 2.0])]), sample(other)];
            assert!(
                computed.outputs_for(&samples, EngineKind::Ort).is_none(),
                "{:?}",
                samples[1].inputs
            );
        }
    }
}
