//! `mdeploy optimize IN -o OUT [-O0|-O1|-O2] [--passes a,b] [--skip a,b] [--list-passes] ...`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use super::data::DataArgs;
use clap::Args;
use mdeploy::graph::check_model;
use mdeploy::onnx::{ExternalDataPolicy, Model, SaveOptions};
use mdeploy::passes::{
    OptimizeOptions, OptimizeReport, Pass, PassKind, bisect, optimize, preset, registry,
};
use mdeploy::progress::Progress;
use mdeploy::quantize::QuantizeReport;
use mdeploy::verify::{Inputs, Status, Tolerance, VerifyReport, verify_models};
use serde_json::json;

use super::printer::{Bar, CheckFailed, UsageError, note, print_json, print_stdout};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Int8Mode {
    Dynamic,
    Static,
}

/// Rewrite a model to be smaller and faster without changing what it computes, and prove it.
#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// The ONNX model.
    input: Option<PathBuf>,
    /// Where to write the optimized model.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Optimization level: 0 nothing, 1 cleanup and folding, 2 every lossless pass.
    #[arg(short = 'O', default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=2))]
    level: u8,
    /// Run only these passes (comma-separated, in registry order).
    #[arg(long, value_delimiter = ',')]
    passes: Vec<String>,
    /// Leave these passes out.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Print every pass with a one-line description, and exit.
    #[arg(long)]
    list_passes: bool,
    /// Lossy: zero this fraction of the smallest weights of every Conv/Gemm/MatMul weight.
    #[arg(long, value_name = "SPARSITY")]
    prune: Option<f64>,
    /// Lossy: remove this fraction of each Conv's output channels (smallest L1 norm), propagated
    /// to what consumes them; layers where that is not provably safe are skipped and reported.
    #[arg(long, value_name = "FRACTION")]
    prune_channels: Option<f64>,
    /// Lossy: convert weights and computation to float16; graph inputs and outputs stay float32
    /// (Casts at the boundary). Values float16 cannot hold stay float32 and are reported.
    #[arg(long)]
    fp16: bool,
    /// Lossy: int8 quantization. `dynamic`: MatMul/Gemm weights int8 per channel, activations
    /// quantized at run time (DynamicQuantizeLinear + MatMulInteger); Conv stays float.
    /// `static`: QDQ with int8 weights per channel and activation ranges calibrated on
    /// --calibration data (Conv, ConvTranspose, Gemm, MatMul).
    #[arg(long, value_enum, value_name = "MODE", conflicts_with = "fp16")]
    int8: Option<Int8Mode>,
    /// With --fp16: graph inputs and outputs become float16 too.
    #[arg(long, requires = "fp16")]
    fp16_io: bool,
    /// Data the float model is measured on before quantizing (as --data: test_data_set_N/
    /// folders, .npz, .npy, .pb); default: the verification samples.
    #[arg(long, value_name = "PATH")]
    calibration: Vec<PathBuf>,
    /// How static int8 sets activation ranges: minmax, percentile[:P] (default, P 99.999) or
    /// entropy.
    #[arg(long, default_value = "percentile", value_parser = mdeploy::quantize::calibrate::Method::parse)]
    calibration_method: mdeploy::quantize::calibrate::Method,
    /// Static int8: reuse the activation ranges saved in this file when they fit, else
    /// calibrate and save them there.
    #[arg(long, value_name = "FILE.json")]
    calibration_cache: Option<PathBuf>,
    /// Static int8: what every output must keep against the float model on the calibration and
    /// verification data: cosine (`cos=X`) and, for classifier outputs, top-1 agreement
    /// (`top1=X`); nodes that lose most return to float until it holds.
    #[arg(long, value_name = "cos=X,top1=Y", default_value = "cos=0.99,top1=1", value_parser = mdeploy::quantize::AccuracyTarget::parse)]
    accuracy_target: mdeploy::quantize::AccuracyTarget,
    /// Static int8: the op types to quantize (default Conv,ConvTranspose,Gemm,MatMul).
    #[arg(long, value_delimiter = ',', value_name = "OPS")]
    int8_ops: Vec<String>,
    /// Nodes (by name) quantization leaves in float32.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    exclude_nodes: Vec<String>,
    /// Op types quantization leaves in float32.
    #[arg(long, value_delimiter = ',', value_name = "OPS")]
    exclude_op_types: Vec<String>,
    /// Tolerance preset verification must meet: exact, fp32, fp16, int8 (default: exact when
    /// only cleanup passes applied, else fp32; for pruning, the numbers are reported and only a
    /// preset given here is enforced).
    #[arg(long, value_parser = mdeploy::verify::parse_preset)]
    tolerance: Option<mdeploy::verify::Preset>,
    /// Largest tensor constant folding may create, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    fold_size_limit: usize,
    /// Skip verifying the result against the input model.
    #[arg(long)]
    no_verify: bool,
    /// Write the result even when no available engine can run the input model to verify it
    /// (by default that is a failure and nothing is written).
    #[arg(long)]
    allow_unverified: bool,
    /// Accepted for compatibility: an unverifiable result is a failure by default now.
    #[arg(long, hide = true)]
    require_verify: bool,
    /// Write the result even when verification fails.
    #[arg(long)]
    keep_failed: bool,
    /// When verification fails, find the first pass after which the outputs diverge.
    #[arg(long)]
    bisect: bool,
    /// Data to verify on (default: seeded random samples); --input-shape also fixes dims for
    /// folding.
    #[command(flatten)]
    data: DataArgs,
    /// Store tensors of 1 KiB or more in `<OUTPUT>.data` (automatic past 2 GiB).
    #[arg(long)]
    external_data: bool,
    /// Write the report (passes, before/after, verification) as JSON to this file.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[arg(short, long)]
    quiet: bool,
}

fn choose_passes(args: &OptimizeArgs) -> anyhow::Result<Vec<&'static dyn Pass>> {
    let known: Vec<&str> = registry().iter().map(|p| p.name()).collect();
    for name in args.passes.iter().chain(&args.skip) {
        if !known.contains(&name.as_str()) {
            return Err(UsageError(format!("no pass '{name}' (see --list-passes)")).into());
        }
    }
    let base = if args.passes.is_empty() {
        preset(args.level)
    } else {
        registry()
            .into_iter()
            .filter(|p| args.passes.iter().any(|n| n == p.name()))
            .collect()
    };
    Ok(base
        .into_iter()
        .filter(|p| !args.skip.iter().any(|n| n == p.name()))
        .collect())
}

pub fn run(args: OptimizeArgs) -> anyhow::Result<ExitCode> {
    if args.list_passes {
        let mut s = String::new();
        for p in registry() {
            let _ = writeln!(
                s,
                "{:<34} {:<8} {}",
                p.name(),
                format!("{:?}", p.kind()).to_lowercase(),
                p.description()
            );
        }
        print_stdout(&s)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(input), Some(output)) = (&args.input, &args.output) else {
        return Err(UsageError("optimize takes a model and -o OUTPUT".into()).into());
    };
    let passes = choose_passes(&args)?;
    let quiet = args.quiet || args.json;
    let original = Model::load(input)?;
    check_model(&original)?;
    let mut model = Model::load(input)?;
    // the report's lineage, only when a report is asked for: hashed from the mapping that
    // saving reads anyway (hashing `original`'s would make a second copy resident)
    let input_sha256 = (args.json || args.report.is_some())
        .then(|| model.file_sha256())
        .flatten();
    let shapes = args.data.shapes()?;
    mdeploy::convert::apply_input_shapes(&mut model, &shapes)?;
    let pruning = prune(&args, &mut model)?;
    let options = OptimizeOptions {
        fold_size_limit: args.fold_size_limit,
        ..Default::default()
    };
    // what the passes start from (bisection replays them from here, not from the file as read)
    let start = Model::from_proto(model.proto.clone(), model.dir().to_path_buf());
    let bar = Bar::new(quiet);
    bar.on_start("optimize", 1);
    let report = optimize(&mut model, &passes, &options)?;
    bar.on_finish();
    let quantized = quantize(&args, &mut model)?;
    let verification = if args.no_verify {
        None
    } else {
        Some(verify(
            &args,
            &original,
            &start,
            &model,
            &passes,
            &options,
            automatic_preset(&report, &passes, quantized.as_ref()),
        )?)
    };
    let status = verification.as_ref().map(|(v, _)| v.status);
    let culprit = verification.as_ref().and_then(|(_, c)| c.clone());
    let lossy = pruning.is_some();
    let enforced = !lossy || args.tolerance.is_some();
    let refuse = match status {
        Some(Status::Failed) => enforced && !args.keep_failed,
        Some(Status::Unsupported) => !args.allow_unverified,
        _ => false,
    };
    let saved = if refuse {
        None
    } else {
        let policy = if args.external_data {
            ExternalDataPolicy::External { threshold: 1024 }
        } else {
            ExternalDataPolicy::Auto
        };
        Some(model.save(
            output,
            SaveOptions {
                external_data: policy,
            },
        )?)
    };
    let verdict = match status {
        None => "not verified (--no-verify)",
        Some(Status::Passed) => "verified",
        Some(Status::Failed) if !enforced => {
            "numbers changed (lossy pruning; see the verification report)"
        }
        Some(Status::Failed) => "FAILED verification",
        Some(Status::Unsupported) => "UNVERIFIED: no available engine can run the model",
    };
    let document = json!({
        "format": "mdeploy.optimize/1",
        "mdeploy_version": env!("CARGO_PKG_VERSION"),
        "input": {"path": input.display().to_string(), "sha256": input_sha256, "bytes": original.file_len()},
        "output": output_summary(saved.as_ref(), output, args.json || args.report.is_some())?,
        "verification": verification.as_ref().map(|(v, _)| v),
        "bisect": culprit,
        "prune": pruning,
        "quantize": quantized,
        "optimize": report,
    });
    if let Some(path) = &args.report {
        let mut text = serde_json::to_vec_pretty(&document)?;
        text.push(b'\n');
        mdeploy::onnx::save_bytes_atomically(path, &text)?;
    }
    if args.json {
        print_json(&document)?;
    }
    note(
        quiet,
        &render(
            &report,
            original.file_len(),
            saved.as_ref().map(|s| s.bytes),
        ),
    );
    match &quantized {
        Some(QuantizeReport::Fp16(stage)) => note(quiet, &render_fp16(stage)),
        Some(QuantizeReport::Int8Dynamic(stage)) => note(
            quiet,
            &render_int8(
                "int8 dynamic",
                &stage.quantization.quantized,
                &stage.quantization.kept_float,
                &stage.output_sqnr_db,
            ),
        ),
        Some(QuantizeReport::Int8Static(stage)) => note(
            quiet,
            &render_int8(
                &format!(
                    "int8 static ({} activations, {:?} ranges{})",
                    stage.quantization.activations,
                    stage.method,
                    if stage.ranges_from_cache {
                        ", from the cache"
                    } else {
                        ""
                    }
                ),
                &stage.quantization.quantized,
                &stage.quantization.kept_float,
                &stage.output_sqnr_db,
            ),
        ),
        None => {}
    }
    note(
        quiet && status != Some(Status::Unsupported),
        &format!("{} -> {}: {verdict}", input.display(), output.display()),
    );
    if let Some(c) = &culprit {
        note(
            false,
            &format!(
                "bisect: outputs diverge after pass {} (nodes {})",
                c.pass,
                c.nodes_changed.join(", ")
            ),
        );
    }
    if let Some((v, _)) = &verification
        && lossy
    {
        for o in &v.outputs {
            note(
                quiet,
                &format!(
                    "  {}: max abs error {:.3e}, cosine {:.6}",
                    o.name,
                    o.max_abs_error,
                    o.cosine_similarity.unwrap_or(f64::NAN)
                ),
            );
        }
    }
    match status {
        Some(Status::Failed) if enforced => Err(CheckFailed(format!(
            "the optimized model does not match the input{}",
            if refuse {
                "; nothing written (--keep-failed writes it anyway)"
            } else {
                ""
            }
        ))
        .into()),
        Some(Status::Unsupported) if !args.allow_unverified => Err(CheckFailed(
            "the result cannot be verified: no available engine runs the input model; nothing written (--allow-unverified writes it anyway)".into(),
        )
        .into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// What was written, with its SHA-256 when a report is asked for: `pack --optimize-report`
/// checks that the report describes the model it packs.
fn output_summary(
    saved: Option<&mdeploy::onnx::SaveSummary>,
    path: &std::path::Path,
    with_digest: bool,
) -> anyhow::Result<serde_json::Value> {
    let Some(saved) = saved else {
        return Ok(serde_json::Value::Null);
    };
    let mut summary = serde_json::to_value(saved)?;
    if with_digest {
        let written = Model::load(path)?;
        summary["sha256"] = json!(written.file_sha256());
    }
    Ok(summary)
}

/// Quantizes when asked (--fp16, --int8), measuring the float model on the calibration data.
fn quantize(args: &OptimizeArgs, model: &mut Model) -> anyhow::Result<Option<QuantizeReport>> {
    if !args.fp16 && args.int8.is_none() {
        if !args.calibration.is_empty() || !args.exclude_nodes.is_empty() {
            return Err(UsageError(
                "--calibration and --exclude-nodes apply to quantization (--fp16, --int8)".into(),
            )
            .into());
        }
        return Ok(None);
    }
    if matches!(args.int8, Some(Int8Mode::Static))
        && args.calibration.is_empty()
        && args.data.data.is_empty()
    {
        return Err(UsageError(
            "--int8 static needs calibration data: --calibration DIR (or --data)".into(),
        )
        .into());
    }
    let (samples, origin) = if args.calibration.is_empty() {
        let (samples, seed) = args.data.load(model)?;
        let origin = match seed {
            Some(seed) => format!("{} random samples, seed {seed}", samples.len()),
            None => "the verification data".into(),
        };
        (samples, origin)
    } else {
        let samples = mdeploy::verify::load_samples(&args.calibration)?;
        let names: Vec<String> = args
            .calibration
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        (samples, names.join(", "))
    };
    let inputs: Vec<&[mdeploy::run::NamedTensor]> =
        samples.iter().map(|s| s.inputs.as_slice()).collect();
    // accuracy is measured on the calibration data and the verification data, when given
    let held_out_paths: Vec<PathBuf> = args
        .data
        .data
        .iter()
        .filter(|d| !args.calibration.contains(d))
        .cloned()
        .collect();
    let held_out = if args.calibration.is_empty() || held_out_paths.is_empty() {
        Vec::new()
    } else {
        mdeploy::verify::load_samples(&held_out_paths)?
    };
    let evaluation: Vec<&[mdeploy::run::NamedTensor]> = inputs
        .iter()
        .copied()
        .chain(held_out.iter().map(|s| s.inputs.as_slice()))
        .collect();
    let (engine, _) = args.data.engines()?;
    let calibration = mdeploy::quantize::Calibration {
        samples: &inputs,
        evaluation: &evaluation,
        engine,
        origin,
    };
    let exclude_nodes = args.exclude_nodes.iter().cloned().collect();
    let exclude_op_types = args.exclude_op_types.iter().cloned().collect();
    Ok(Some(match args.int8 {
        Some(Int8Mode::Dynamic) => {
            let options = mdeploy::quantize::dynamic::DynamicOptions {
                exclude_nodes,
                exclude_op_types,
            };
            QuantizeReport::Int8Dynamic(mdeploy::quantize::to_int8_dynamic(
                model,
                &options,
                Some(calibration),
            )?)
        }
        Some(Int8Mode::Static) => {
            let options = mdeploy::quantize::qdq::StaticOptions {
                ops: (!args.int8_ops.is_empty()).then(|| args.int8_ops.iter().cloned().collect()),
                exclude_nodes,
                exclude_op_types,
            };
            let cache = match &args.calibration_cache {
                Some(path) if path.exists() => Some(
                    serde_json::from_slice::<mdeploy::quantize::CalibrationCache>(&std::fs::read(
                        path,
                    )?)
                    .map_err(|e| {
                        UsageError(format!("{}: not a calibration cache: {e}", path.display()))
                    })?,
                ),
                _ => None,
            };
            let (stage, ranges) = mdeploy::quantize::to_int8_static(
                model,
                &options,
                args.calibration_method,
                args.accuracy_target,
                calibration,
                cache.as_ref(),
            )?;
            if let Some(path) = &args.calibration_cache
                && !stage.ranges_from_cache
            {
                let mut text = serde_json::to_vec_pretty(&ranges)?;
                text.push(b'\n');
                mdeploy::onnx::save_bytes_atomically(path, &text)?;
            }
            if !stage.accuracy.met {
                return Err(CheckFailed(format!(
                    "static int8 cannot meet the accuracy target (cos {}, top-1 {}): the best \
                     reached cosine {:.5}, top-1 {:.3}; nothing written",
                    stage.accuracy.target.min_cosine,
                    stage.accuracy.target.min_top1,
                    stage.accuracy.achieved_cosine,
                    stage.accuracy.achieved_top1
                ))
                .into());
            }
            QuantizeReport::Int8Static(stage)
        }
        None => {
            let options = mdeploy::quantize::fp16::Fp16Options {
                keep_io_types: !args.fp16_io,
                exclude_nodes,
                exclude_op_types,
                ..Default::default()
            };
            QuantizeReport::Fp16(mdeploy::quantize::to_fp16(
                model,
                options,
                Some(calibration),
            )?)
        }
    }))
}

/// Applies the requested pruning before the lossless passes; returns what it did.
fn prune(args: &OptimizeArgs, model: &mut Model) -> anyhow::Result<Option<serde_json::Value>> {
    if args.prune.is_none() && args.prune_channels.is_none() {
        return Ok(None);
    }
    for (flag, v) in [
        ("--prune", args.prune),
        ("--prune-channels", args.prune_channels),
    ] {
        if v.is_some_and(|v| !(0.0..1.0).contains(&v)) {
            return Err(UsageError(format!("{flag} takes a fraction in [0, 1)")).into());
        }
    }
    let ctx = mdeploy::passes::PassContext::new(model, 0, 0);
    let mut graph = mdeploy::graph::Graph::new(std::mem::take(model.graph_mut()));
    let channels = args
        .prune_channels
        .map(|f| mdeploy::passes::prune::prune_channels(&mut graph, &ctx, f));
    let magnitude = args
        .prune
        .map(|s| mdeploy::passes::prune::prune_magnitude(&mut graph, &ctx, s));
    *model.graph_mut() = graph.into_proto();
    Ok(Some(json!({"channels": channels, "magnitude": magnitude})))
}

/// The tolerance what was done warrants: fp16 after float16 conversion, exact when only cleanup
/// passes applied, else fp32.
fn automatic_preset(
    report: &OptimizeReport,
    passes: &[&'static dyn Pass],
    quantized: Option<&QuantizeReport>,
) -> &'static str {
    let lossless_only = passes
        .iter()
        .filter(|p| report.per_pass.get(p.name()).is_some_and(|s| s.applied > 0))
        .all(|p| p.kind() == PassKind::Cleanup);
    match quantized {
        Some(q) => q.preset(),
        None if lossless_only => "exact",
        None => "fp32",
    }
}

/// Verifies the result against the input on --data or seeded random samples, with the tolerance
/// the applied passes warrant; bisects on failure when asked.
fn verify(
    args: &OptimizeArgs,
    original: &Model,
    start: &Model,
    optimized: &Model,
    passes: &[&'static dyn Pass],
    options: &OptimizeOptions,
    automatic: &str,
) -> anyhow::Result<(VerifyReport, Option<mdeploy::passes::Culprit>)> {
    let (samples, random_seed) = args.data.load(original)?;
    let tolerance = Tolerance::from_preset(
        args.tolerance
            .unwrap_or_else(|| mdeploy::verify::preset(automatic).expect("a preset")),
    );
    let (engine, compare_engines) = args.data.engines()?;
    let inputs = Inputs {
        samples: &samples,
        random_seed,
        engine,
        compare_engines,
    };
    let name = args
        .output
        .as_ref()
        .map(|o| o.display().to_string())
        .unwrap_or_default();
    let v = verify_models(
        (original, "input"),
        (optimized, &name),
        inputs,
        tolerance.clone(),
        &mdeploy::progress::NoProgress,
    )?;
    let culprit = (v.status == Status::Failed && args.bisect)
        .then(|| {
            bisect(
                original, start, passes, options, &samples, &tolerance, engine,
            )
        })
        .flatten();
    Ok((v, culprit))
}

/// What float16 conversion did, with each node kept float32 and why (the first 20; the
/// report has all).
fn render_fp16(stage: &mdeploy::quantize::Fp16Stage) -> String {
    let c = &stage.conversion;
    let mut s = format!(
        "float16: {} nodes, {} weights; {} nodes kept float32; {} casts",
        c.nodes_float16,
        c.weights_float16,
        c.kept_float32.len(),
        c.casts_inserted
    );
    if let Some(cal) = &stage.calibration {
        let _ = write!(
            s,
            "\n  ranges measured on {} ({} samples, {})",
            cal.origin, cal.samples, cal.engine
        );
    }
    for k in c.kept_float32.iter().take(20) {
        let _ = write!(s, "\n  kept float32: {}: {}", k.node, k.reason);
    }
    if c.kept_float32.len() > 20 {
        let _ = write!(
            s,
            "\n  ... and {} more (see --report)",
            c.kept_float32.len() - 20
        );
    }
    for w in c
        .weight_ranges
        .iter()
        .filter(|w| !w.kept_float32 && w.flushed > 0)
    {
        let _ = write!(
            s,
            "\n  {}: {} of {} nonzero values are zero in float16",
            w.name, w.flushed, w.nonzero
        );
    }
    s
}

/// What int8 quantization did: nodes quantized and kept float, and the quantized outputs that
/// moved most (lowest SQNR first; the report has all).
fn render_int8(
    what: &str,
    quantized: &[mdeploy::quantize::dynamic::QuantizedNode],
    kept_float: &[mdeploy::quantize::dynamic::KeptFloat],
    output_sqnr_db: &[(String, f64)],
) -> String {
    let mut s = format!(
        "{what}: {} nodes quantized, {} kept float",
        quantized.len(),
        kept_float.len()
    );
    for k in kept_float.iter().take(10) {
        let _ = write!(s, "\n  kept float: {}: {}", k.node, k.reason);
    }
    if kept_float.len() > 10 {
        let _ = write!(
            s,
            "\n  ... and {} more (see --report)",
            kept_float.len() - 10
        );
    }
    if !output_sqnr_db.is_empty() {
        let _ = write!(
            s,
            "\n  {:<50} {:>10}",
            "quantized output (lowest SQNR first)", "SQNR dB"
        );
        for (name, db) in output_sqnr_db.iter().take(10) {
            let _ = write!(s, "\n  {name:<50} {db:>10.1}");
        }
    }
    s
}

fn render(r: &OptimizeReport, size_before: Option<u64>, size_after: Option<u64>) -> String {
    let mut s = String::new();
    let (b, a) = (&r.before, &r.after);
    let _ = writeln!(s, "{:<34} {:>12} {:>12}", "", "before", "after");
    let _ = writeln!(s, "{:<34} {:>12} {:>12}", "nodes", b.nodes, a.nodes);
    let _ = writeln!(
        s,
        "{:<34} {:>12} {:>12}",
        "initializers", b.initializers, a.initializers
    );
    let _ = writeln!(
        s,
        "{:<34} {:>12} {:>12}",
        "parameters", b.parameters, a.parameters
    );
    let fmt = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
    let _ = writeln!(
        s,
        "{:<34} {:>12} {:>12}",
        "file bytes",
        fmt(size_before),
        fmt(size_after)
    );
    let ops: BTreeSet<&String> = b.op_types.keys().chain(a.op_types.keys()).collect();
    for op in ops {
        let (x, y) = (
            b.op_types.get(op).copied().unwrap_or(0),
            a.op_types.get(op).copied().unwrap_or(0),
        );
        if x != y {
            let _ = writeln!(s, "  {:<32} {:>12} {:>12}", op, x, y);
        }
    }
    let _ = writeln!(s, "{:<34} {:>12} {:>12}", "pass", "applied", "ms");
    for (name, st) in &r.per_pass {
        let _ = writeln!(
            s,
            "  {:<32} {:>12} {:>12.1}",
            name,
            st.applied,
            st.seconds * 1000.0
        );
    }
    let _ = writeln!(
        s,
        "  {:<32} {:>12} {:>12.1}",
        "(type and shape inference)",
        r.inference.refreshes,
        r.inference.seconds * 1000.0
    );
    for skip in &r.skipped_folds {
        let _ = writeln!(
            s,
            "  skipped fold of {} ({}): {}",
            skip.node, skip.op, skip.reason
        );
    }
    let _ = write!(s, "{} iterations", r.iterations);
    s
}
