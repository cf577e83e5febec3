//! `mdeploy verify REFERENCE [CANDIDATE] [--data ...] [--samples N] [--seed S] [--atol ...] ...`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::data::DataArgs;
use clap::Args;
use mdeploy::graph::check_model;
use mdeploy::onnx::Model;
use mdeploy::verify::{
    Inputs, Sample, Status, Tolerance, VerifyReport, interface_problem, save_samples,
    unsupported_report, verify_models, verify_stored,
};

use super::printer::{Bar, UsageError, note, print_json};

/// Prove a model computes what its reference does, or what stored expected outputs say.
///
/// With two models, both run on the same inputs (given with --data, or --samples seeded random
/// ones) in the chosen engine and every output is compared. With one model, --data must hold expected
/// outputs (the ONNX test layout: input_K.pb and output_K.pb).
#[derive(Debug, Args)]
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
    /// Write the JSON report to this file.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Print the JSON report on stdout.
    #[arg(long)]
    json: bool,
    /// Save the inputs used to this .npz.
    #[arg(long, value_name = "FILE.npz")]
    save_inputs: Option<PathBuf>,
    /// Save the reference's outputs to this .npz.
    #[arg(long, value_name = "FILE.npz")]
    save_outputs: Option<PathBuf>,
    /// No table on stderr.
    #[arg(short, long)]
    quiet: bool,
}

fn load(path: &Path) -> anyhow::Result<Model> {
    let model = Model::load(path)?;
    check_model(&model)?;
    Ok(model)
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut tolerance = Tolerance::from_preset(args.tolerance);
    tolerance
        .apply(&args.atol, &args.rtol)
        .map_err(UsageError)?;
    let reference = load(&args.reference)?;
    let candidate = args.candidate.as_deref().map(load).transpose()?;
    let reference_name = args.reference.display().to_string();
    let candidate_name = args.candidate.as_ref().map(|c| c.display().to_string());
    let problem = interface_problem(&reference, "reference").or_else(|| {
        candidate
            .as_ref()
            .and_then(|c| interface_problem(c, "candidate"))
    });
    if let Some(u) = problem {
        let report = unsupported_report(&reference_name, candidate_name.as_deref(), tolerance, u);
        return finish(&args, &report);
    }
    if args.data.data.is_empty() && args.candidate.is_none() {
        return Err(UsageError("with one model, give --data with expected outputs".into()).into());
    }
    let (engine, compare_engines) = args.data.engines()?;
    let (samples, seed) = args.data.load(&reference)?;
    let quiet = args.quiet || args.json;
    let bar = Bar::new(quiet);
    let inputs = Inputs {
        samples: &samples,
        random_seed: seed,
        engine,
        compare_engines,
    };
    let report = match (&candidate, &candidate_name) {
        (Some(c), Some(name)) => verify_models(
            (&reference, &reference_name),
            (c, name),
            inputs,
            tolerance,
            &bar,
        )?,
        _ => {
            if samples.iter().any(|s| s.expected.is_none()) {
                return Err(UsageError(
                    "with one model, --data must hold expected outputs (output_K.pb); give a candidate model to compare two".into(),
                )
                .into());
            }
            verify_stored((&reference, &reference_name), inputs, tolerance, &bar)?
        }
    };
    save_data(&args, &samples, &reference)?;
    finish(&args, &report)
}

/// Writes the report where asked and maps its status to the exit code.
fn finish(args: &VerifyArgs, report: &VerifyReport) -> anyhow::Result<ExitCode> {
    let quiet = args.quiet || args.json;
    if let Some(path) = &args.report {
        let mut text = serde_json::to_vec_pretty(&report)?;
        text.push(b'\n');
        mdeploy::onnx::save_bytes_atomically(path, &text)?;
    }
    if args.json {
        print_json(report)?;
    }
    note(quiet, &render(report));
    Ok(match report.status {
        Status::Passed => ExitCode::SUCCESS,
        _ => ExitCode::from(super::printer::EXIT_CHECK_FAILED),
    })
}

/// `--save-inputs` and `--save-outputs` (the reference's outputs: golden data).
fn save_data(args: &VerifyArgs, samples: &[Sample], reference: &Model) -> anyhow::Result<()> {
    if let Some(path) = &args.save_inputs {
        save_samples(
            path,
            &samples.iter().map(|s| s.inputs.clone()).collect::<Vec<_>>(),
        )?;
    }
    if let Some(path) = &args.save_outputs {
        let (engine, _) = args.data.engines()?;
        let inputs: Vec<&[mdeploy::run::NamedTensor]> =
            samples.iter().map(|s| s.inputs.as_slice()).collect();
        let (_, outputs) = mdeploy::run::run_all(reference, engine, &inputs, || {})?;
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
