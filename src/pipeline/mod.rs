//! The pipeline: each stage (convert, optimize with its quantization, verify, pack) as a library
//! call with typed options and a typed report, and [`build`] composing them for a model
//! repository. The command line's subcommands are thin callers of these.

pub mod build;
pub mod config;
pub mod data;
pub mod optimize;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::convert::{ConvertReport, normalize, write_nnef};
use crate::error::UsageError;
use crate::graph::check_model;
use crate::lint::{Finding, lint};
use crate::onnx::{ExternalDataPolicy, Model, SaveOptions};
use crate::progress::Progress;
use crate::verify::{Inputs, Tolerance, VerifyReport, verify_models, verify_stored};
pub use data::DataOptions;
pub use optimize::{OptimizeDocument, OptimizeOutcome, OptimizeRequest, optimize_file};

/// The format `convert` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvertTarget {
    /// Normalised ONNX.
    Onnx,
    /// tract's NNEF archive (`.nnef.tgz`).
    Nnef,
}

/// What the convert stage needs.
#[derive(Debug, Clone)]
pub struct ConvertRequest {
    pub input: PathBuf,
    pub output: PathBuf,
    /// `INPUT=1,3,224,224` or `dim=1` settings.
    pub input_shapes: Vec<String>,
    pub to: ConvertTarget,
    pub external_data: bool,
    /// Raise the default-domain opset to this (where that keeps every node's meaning).
    pub opset: Option<i64>,
    /// Drop initializers from the graph inputs, making them constants.
    pub freeze_initializers: bool,
}

/// The convert report (`mdeploy.convert/2`).
#[derive(Debug, Serialize)]
pub struct ConvertDocument {
    pub format: &'static str,
    pub input: String,
    pub output: serde_json::Value,
    pub report: ConvertReport,
    pub lint: Vec<Finding>,
}

/// Imports a model: lints it, fixes the named dims, records inferred types and shapes, writes it
/// normalised.
pub fn convert_file(
    req: &ConvertRequest,
    progress: &dyn Progress,
) -> anyhow::Result<ConvertDocument> {
    let shapes = crate::run::InputShapes::parse(&req.input_shapes).map_err(UsageError)?;
    if req.output.is_dir() {
        return Err(UsageError(format!(
            "{} is a directory; the output is a file",
            req.output.display()
        ))
        .into());
    }
    progress.on_start("convert", 3);
    let mut model = Model::load(&req.input)?;
    // the raise reads nodes as they are: a malformed one is an error before it
    crate::graph::check_model(&model).map_err(|e| {
        anyhow::Error::new(e).context(format!("converting {}", req.input.display()))
    })?;
    let frozen = req
        .freeze_initializers
        .then(|| crate::lint::freeze_initializers(&mut model));
    let mut findings = lint(&model);
    progress.on_advance(1);
    let raised = match req.opset {
        Some(to) => Some(raise_opset(&mut model, to, &req.input)?),
        None => raise_legacy(&mut model).unwrap_or_else(|why| {
            findings.push(crate::lint::Finding {
                kind: "opset_not_raised",
                graph: "main".into(),
                subject: "opset".into(),
                message: format!(
                    "the model stays at opset {}, which onnxruntime has no kernels for, since raising it to 7 would change what it computes: {why}",
                    model.opset("").unwrap_or(1)
                ),
            });
            None
        }),
    };
    let mut report = normalize(&mut model, &shapes).map_err(|e| {
        anyhow::Error::new(e).context(format!("converting {}", req.input.display()))
    })?;
    report.opset_raised = raised;
    report.initializers_frozen = frozen;
    progress.on_advance(1);
    let written = match req.to {
        ConvertTarget::Onnx => {
            let policy = if req.external_data {
                ExternalDataPolicy::External { threshold: 1024 }
            } else {
                ExternalDataPolicy::Auto
            };
            serde_json::to_value(model.save(
                &req.output,
                SaveOptions {
                    external_data: policy,
                },
            )?)?
        }
        ConvertTarget::Nnef => serde_json::to_value(write_nnef(&model, &req.output)?)?,
    };
    progress.on_advance(1);
    progress.on_finish();
    Ok(ConvertDocument {
        format: "mdeploy.convert/2",
        input: req.input.display().to_string(),
        output: written,
        report,
        lint: findings,
    })
}

/// A model at opset 6 raised to 7, which onnxruntime and tract run
/// ([`crate::onnx::upgrade::raise_legacy`]); `None` where it needs no raise, and why not where
/// it cannot have one (it stays at its own opset, and the engines refuse it naming the node).
pub(crate) fn raise_legacy(
    model: &mut Model,
) -> Result<Option<crate::convert::OpsetRaised>, String> {
    match crate::onnx::upgrade::raise_legacy(model) {
        None => Ok(None),
        Some(Ok(u)) => Ok(Some(crate::convert::OpsetRaised {
            from: u.from,
            to: u.to,
            rewritten: u.rewritten,
        })),
        Some(Err(why)) => Err(why.join("; ")),
    }
}

/// Raises `model`'s opset to `to`, or says which nodes stop it (a usage error: the model is
/// fine, the request is not).
fn raise_opset(
    model: &mut Model,
    to: i64,
    path: &Path,
) -> anyhow::Result<crate::convert::OpsetRaised> {
    let from = model.opset("").unwrap_or(1);
    if to < from {
        return Err(UsageError(format!(
            "{}: --opset {to} is below the model's opset {from}; mdeploy only raises it",
            path.display()
        ))
        .into());
    }
    let done = crate::onnx::upgrade::upgrade(model, to).map_err(|why| {
        UsageError(format!(
            "{}: cannot raise opset {from} to {to} without changing what it computes: {}",
            path.display(),
            why.join("; ")
        ))
    })?;
    Ok(crate::convert::OpsetRaised {
        from: done.from,
        to: done.to,
        rewritten: done.rewritten,
    })
}

/// What the verify stage needs.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// The reference model (or the only one, checked against stored expected outputs).
    pub reference: PathBuf,
    pub candidate: Option<PathBuf>,
    pub data: DataOptions,
    pub tolerance: Tolerance,
}

/// Loads and checks a model for verification.
fn load_checked(path: &Path) -> anyhow::Result<Model> {
    let model = Model::load(path)?;
    check_model(&model)?;
    Ok(model)
}

/// Runs the models and compares them (or the one model against its stored outputs); the report
/// records the digests of both files. The samples used are returned too, for callers that save
/// them.
pub fn verify_files(
    req: &VerifyRequest,
    progress: &dyn Progress,
) -> anyhow::Result<(VerifyReport, Vec<crate::verify::Sample>)> {
    let reference = load_checked(&req.reference)?;
    let candidate = req.candidate.as_deref().map(load_checked).transpose()?;
    let reference_name = req.reference.display().to_string();
    let candidate_name = req.candidate.as_ref().map(|c| c.display().to_string());
    let problem = crate::verify::interface_problem(&reference, "reference").or_else(|| {
        candidate
            .as_ref()
            .and_then(|c| crate::verify::interface_problem(c, "candidate"))
    });
    if let Some(u) = problem {
        let report = crate::verify::unsupported_report(
            &reference_name,
            candidate_name.as_deref(),
            req.tolerance.clone(),
            u,
        );
        return Ok((
            report.with_digests(&reference, candidate.as_ref()),
            Vec::new(),
        ));
    }
    if req.data.data.is_empty() && candidate.is_none() {
        return Err(UsageError("with one model, give --data with expected outputs".into()).into());
    }
    let (engine, compare_engines) = req.data.engines()?;
    let (samples, seed) = req.data.load(&reference)?;
    let inputs = Inputs {
        samples: &samples,
        random_seed: seed,
        engine,
        compare_engines,
        computed: None,
        reference_computed: None,
    };
    let report = match (&candidate, &candidate_name) {
        (Some(c), Some(name)) => verify_models(
            (&reference, &reference_name),
            (c, name),
            inputs,
            req.tolerance.clone(),
            progress,
        )?,
        _ => {
            if samples.iter().any(|s| s.expected.is_none()) {
                return Err(UsageError(
                    "with one model, --data must hold expected outputs (output_K.pb); give a \
                     candidate model to compare two"
                        .into(),
                )
                .into());
            }
            verify_stored(
                (&reference, &reference_name),
                inputs,
                req.tolerance.clone(),
                progress,
            )?
        }
    };
    Ok((report.with_digests(&reference, candidate.as_ref()), samples))
}

/// Writes a report as pretty JSON, atomically.
pub fn write_report<T: Serialize>(path: &Path, report: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_vec_pretty(report)?;
    text.push(b'\n');
    crate::onnx::save_bytes_atomically(path, &text)?;
    Ok(())
}
