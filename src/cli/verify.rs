//! `mdeploy verify REFERENCE [CANDIDATE] [--data ...] [--samples N] [--seed S] [--atol ...] ...`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use super::data::DataArgs;
use clap::Args;
use mdeploy::pipeline::{VerifyRequest, verify_files};
use mdeploy::verify::{Sample, Status, Tolerance, VerifyReport, save_samples};

use super::printer::{OutputArgs, Printer, UsageError};

/// Prove a model computes what its reference does, or what stored expected outputs say.
///
/// With two models, both run on the same inputs (given with --data, or --samples seeded random
/// ones) in the chosen engine and every output is compared. With one model, --data must hold expected
/// outputs (the ONNX test layout: input_K.pb and output_K.pb).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mdeploy verify model.onnx model.opt.onnx
  mdeploy verify model.onnx model.fp16.onnx --tolerance fp16 --data test_data_set_0
  mdeploy verify model.onnx --data test_data_set_0 --engine tract,ort
  mdeploy verify model.onnx model.opt.onnx --atol logits=1e-4 --report verify.json")]
pub struct VerifyArgs {
    /// The reference model (or the only model, checked against --data's expected outputs).
    reference: PathBuf,
    /// The model to check against the reference.
    candidate: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Tolerance preset: exact, fp32, fp16, int8 (see docs/verify.md).
    #[arg(long, default_value = "fp32", value_parser = mdeploy::verify::parse_preset)]
    tolerance: mdeploy::verify::Preset,
    /// Absolute tolerance, for all outputs (`1e-5`) or one (`logits=1e-3`). Repeatable.
    #[arg(long, value_name = "[OUTPUT=]X")]
    atol: Vec<String>,
    /// Relative tolerance, for all outputs or one. Repeatable.
    #[arg(long, value_name = "[OUTPUT=]X")]
    rtol: Vec<String>,
    /// Save the inputs used to this .npz.
    #[arg(long, value_name = "FILE.npz")]
    save_inputs: Option<PathBuf>,
    /// Save the reference's outputs to this .npz.
    #[arg(long, value_name = "FILE.npz")]
    save_outputs: Option<PathBuf>,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut tolerance = Tolerance::from_preset(args.tolerance);
    tolerance
        .apply(&args.atol, &args.rtol)
        .map_err(UsageError)?;
    let printer = Printer::new(&args.out);
    let req = VerifyRequest {
        reference: args.reference.clone(),
        candidate: args.candidate.clone(),
        data: args.data.options(None)?,
        tolerance,
    };
    let (report, samples) = verify_files(&req, printer.progress())?;
    // nothing ran when a model's interface cannot be run at all: there is nothing to save
    if report.unsupported.is_none() && !samples.is_empty() {
        save_data(&args, &samples)?;
    }
    printer.document(&report)?;
    printer.note(&render(&report));
    Ok(match report.status {
        Status::Passed => ExitCode::SUCCESS,
        _ => ExitCode::from(super::printer::EXIT_CHECK_FAILED),
    })
}

/// `--save-inputs` and `--save-outputs` (the reference's outputs: golden data).
fn save_data(args: &VerifyArgs, samples: &[Sample]) -> anyhow::Result<()> {
    if let Some(path) = &args.save_inputs {
        save_samples(
            path,
            &samples.iter().map(|s| s.inputs.clone()).collect::<Vec<_>>(),
        )?;
    }
    if let Some(path) = &args.save_outputs {
        let (engine, _) = args.data.options(None)?.engines()?;
        let reference = mdeploy::onnx::Model::load(&args.reference)?;
        let inputs: Vec<&[mdeploy::run::NamedTensor]> =
            samples.iter().map(|s| s.inputs.as_slice()).collect();
        let (_, outputs) = mdeploy::run::run_all(&reference, engine, &inputs, || {})?;
        save_samples(path, &outputs)?;
    }
    Ok(())
}

fn fmt(v: Option<f64>, precision: usize) -> String {
    match v {
        Some(v) if v.is_infinite() => "inf".into(),
        Some(v) => format!("{v:.precision$e}"),
        None => "-".into(),
    }
}

fn render(r: &VerifyReport) -> String {
    let mut s = String::new();
    if let Some(u) = &r.unsupported {
        let ops: Vec<String> = u
            .ops
            .iter()
            .map(|o| format!("{} (node '{}')", o.op, o.node))
            .collect();
        let _ = writeln!(
            s,
            "cannot verify: no available engine can run the {} model",
            u.model
        );
        if !ops.is_empty() {
            let _ = writeln!(s, "  unsupported: {}", ops.join(", "));
        }
        let _ = writeln!(s, "  {}", u.message);
        let _ = write!(s, "FAILED (unsupported)");
        return s;
    }
    let engines: Vec<String> = r
        .engines
        .iter()
        .map(|(m, e)| format!("{m} in {e}"))
        .collect();
    if !engines.is_empty() {
        let _ = writeln!(s, "ran {}", engines.join(", "));
    }
    if let Some(f) = &r.failure {
        let _ = write!(s, "FAILED: {f}");
        return s;
    }
    let _ = writeln!(
        s,
        "{:<28} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8}  result",
        "output", "max abs", "mean abs", "max rel", "p99 abs", "cosine", "SQNR dB"
    );
    for o in &r.outputs {
        let sqnr = match o.sqnr_db {
            Some(v) if v.is_infinite() => "inf".into(),
            Some(v) => format!("{v:.1}"),
            None => "-".into(),
        };
        let _ = writeln!(
            s,
            "{:<28} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8}  {}",
            o.name,
            fmt(Some(o.max_abs_error), 2),
            fmt(Some(o.mean_abs_error), 2),
            fmt(Some(o.max_rel_error), 2),
            fmt(Some(o.p99_abs_error), 2),
            o.cosine_similarity
                .map_or("-".into(), |c| format!("{c:.6}")),
            sqnr,
            if o.passed {
                "ok".to_string()
            } else {
                format!("FAIL: {}", o.message.as_deref().unwrap_or(""))
            }
        );
        if let (Some(t1), t5) = (o.top1_agreement, o.top5_agreement) {
            let _ = writeln!(
                s,
                "{:<28} top-1 agreement {:.1}%{}",
                "",
                t1 * 100.0,
                t5.map_or(String::new(), |t| format!(", top-5 {:.1}%", t * 100.0))
            );
        }
    }
    if let Some(m) = &r.min_required {
        let _ = writeln!(
            s,
            "minimum required tolerance: --atol {} (with --rtol 0) or --rtol {} (with --atol 0)",
            fmt(Some(m.atol), 2),
            fmt(Some(m.rtol), 2)
        );
    }
    if let Some(c) = &r.cross_engine {
        match &c.error {
            Some(e) => {
                let _ = writeln!(
                    s,
                    "{} model in tract and onnxruntime: not compared ({e})",
                    c.model
                );
            }
            None => {
                let worst = c
                    .outputs
                    .iter()
                    .map(|o| o.max_abs_error)
                    .fold(0.0, f64::max);
                let cos = c
                    .outputs
                    .iter()
                    .filter_map(|o| o.cosine_similarity)
                    .fold(1.0, f64::min);
                let _ = writeln!(
                    s,
                    "{} model in tract against onnxruntime: max abs {}, min cosine {cos:.6}{}",
                    c.model,
                    fmt(Some(worst), 2),
                    if c.outputs.iter().all(|o| o.passed) {
                        ", the same answers within the tolerance"
                    } else {
                        ", OUTSIDE the tolerance"
                    }
                );
            }
        }
    }
    let _ = write!(
        s,
        "{} ({} samples, tolerance {}: atol {}, rtol {})",
        if r.status == Status::Passed {
            "PASSED"
        } else {
            "FAILED"
        },
        r.samples,
        r.tolerance.preset,
        r.tolerance.atol,
        r.tolerance.rtol
    );
    s
}
