//! `verify`: proves a candidate model computes what its reference does (or what stored expected
//! outputs say), output by output, with the evidence in a versioned report (`docs/verify.md`).
//!
//! A model tract cannot run is not a pass: it is `unsupported`, naming the op and node, distinct
//! from `failed` (out of tolerance).

mod metrics;
mod samples;
mod tolerance;

use std::collections::BTreeMap;

use serde::Serialize;

pub use metrics::{Accumulator, OutputReport, SideCounts};
pub use samples::{Sample, load_samples, save_samples};
pub use tolerance::{PRESETS, Preset, Tolerance, preset};

use crate::convert::OpRef;
use crate::onnx::Model;
use crate::progress::Progress;
use crate::run::{NamedTensor, RunError, Runner, tract_model};

/// Identifies the report's format; bumped on any incompatible change.
pub const VERIFY_FORMAT: &str = "mdeploy.verify/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    Unsupported,
}

/// A model tract cannot run: which ops (where known) and tract's message.
#[derive(Debug, Clone, Serialize)]
pub struct Unsupported {
    /// `reference` or `candidate`.
    pub model: &'static str,
    pub ops: Vec<OpRef>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MinRequired {
    /// The smallest single atol (with rtol 0) under which every output passes.
    pub atol: f64,
    /// The smallest single rtol (with atol 0) under which every output passes.
    pub rtol: f64,
}

/// The verification report (JSON format `mdeploy.verify/1`).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub format: &'static str,
    pub mdeploy_version: &'static str,
    pub status: Status,
    /// `models` (reference against candidate) or `stored` (a model against expected outputs).
    pub mode: &'static str,
    pub reference: String,
    pub candidate: Option<String>,
    /// `random` (with `seed`) or `files`.
    pub data: &'static str,
    pub seed: Option<u64>,
    pub samples: usize,
    pub tolerance: Tolerance,
    pub outputs: Vec<OutputReport>,
    pub min_required: Option<MinRequired>,
    pub unsupported: Option<Unsupported>,
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

/// Where the compared values come from.
pub struct Inputs<'a> {
    pub samples: &'a [Sample],
    pub random_seed: Option<u64>,
}

/// Loads a model into tract for running, or says why it cannot be run.
fn runner(model: &Model, which: &'static str) -> Result<Runner, Unsupported> {
    Runner::new(model).map_err(|e| unsupported(model, which, &e))
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
        model: which,
        ops,
        message,
    }
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
                model: which,
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

fn is_input_problem(e: &RunError) -> bool {
    matches!(e, RunError::Input { .. } | RunError::MissingInput(_))
}

/// Runs `runner` on every sample; a run failure that is not the inputs' fault is unsupported.
fn run_all(
    model: &Model,
    which: &'static str,
    samples: &[Sample],
    progress: &dyn Progress,
) -> Result<Result<Vec<Vec<NamedTensor>>, Unsupported>, VerifyError> {
    let mut runner = match runner(model, which) {
        Ok(r) => r,
        Err(u) => return Ok(Err(u)),
    };
    let mut all = Vec::with_capacity(samples.len());
    for s in samples {
        match runner.run(&s.inputs) {
            Ok(out) => all.push(out),
            Err(e) if is_input_problem(&e) => return Err(VerifyError::Run(e)),
            Err(e) => return Ok(Err(unsupported(model, which, &e))),
        }
        progress.on_advance(1);
    }
    Ok(Ok(all))
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
    let want = run_all(reference.0, "reference", inputs.samples, progress)?;
    let got = run_all(candidate.0, "candidate", inputs.samples, progress)?;
    progress.on_finish();
    match (want, got) {
        (Err(u), _) | (_, Err(u)) => report.unsupported = Some(u),
        (Ok(want), Ok(got)) => compare(&mut report, &want, &got),
    }
    Ok(finish(report))
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
    let got = run_all(model.0, "reference", inputs.samples, progress)?;
    progress.on_finish();
    match got {
        Err(u) => report.unsupported = Some(u),
        Ok(got) => compare(&mut report, &want, &got),
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
        format: VERIFY_FORMAT,
        mdeploy_version: env!("CARGO_PKG_VERSION"),
        status: Status::Failed,
        mode,
        reference: reference.to_string(),
        candidate: candidate.map(str::to_string),
        data: if inputs.random_seed.is_some() {
            "random"
        } else {
            "files"
        },
        seed: inputs.random_seed,
        samples: inputs.samples.len(),
        tolerance,
        outputs: vec![],
        min_required: None,
        unsupported: None,
    }
}

/// Compares outputs by name, in the reference's order.
fn compare(report: &mut VerifyReport, want: &[Vec<NamedTensor>], got: &[Vec<NamedTensor>]) {
    let mut acc: BTreeMap<String, Accumulator> = BTreeMap::new();
    let order: Vec<String> = want
        .first()
        .map(|w| w.iter().map(|t| t.name.clone()).collect())
        .unwrap_or_default();
    let mut missing: Vec<String> = Vec::new();
    for (w, g) in want.iter().zip(got) {
        for reference in w {
            let (atol, rtol) = (
                report.tolerance.atol_for(&reference.name),
                report.tolerance.rtol_for(&reference.name),
            );
            match g.iter().find(|c| c.name == reference.name) {
                Some(candidate) => acc.entry(reference.name.clone()).or_default().add(
                    &reference.tensor,
                    &candidate.tensor,
                    atol,
                    rtol,
                ),
                None if !missing.contains(&reference.name) => missing.push(reference.name.clone()),
                None => {}
            }
        }
    }
    let tol = &report.tolerance;
    for name in order {
        let (atol, rtol) = (tol.atol_for(&name), tol.rtol_for(&name));
        let out = match acc.remove(&name) {
            Some(a) => a.finish(&name, atol, rtol, tol.min_cosine),
            None => {
                let mut a = Accumulator::default().finish(&name, atol, rtol, None);
                a.passed = false;
                a.message = Some("the candidate has no output of this name".into());
                a
            }
        };
        report.outputs.push(out);
    }
    report.min_required = Some(MinRequired {
        atol: report
            .outputs
            .iter()
            .map(|o| o.min_atol)
            .fold(0.0, f64::max),
        rtol: report
            .outputs
            .iter()
            .map(|o| o.min_rtol)
            .fold(0.0, f64::max),
    });
}

fn finish(mut report: VerifyReport) -> VerifyReport {
    report.status = if report.unsupported.is_some() {
        Status::Unsupported
    } else if !report.outputs.is_empty() && report.outputs.iter().all(|o| o.passed) {
        Status::Passed
    } else {
        Status::Failed
    };
    report
}
