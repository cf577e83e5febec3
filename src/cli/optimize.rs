//! `mdeploy optimize IN -o OUT [-O0|-O1|-O2] [--passes a,b] [--skip a,b] [--list-passes] ...`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use super::data::DataArgs;
use clap::Args;
use mdeploy::passes::{OptimizeReport, registry};
use mdeploy::pipeline::config::{Int4, Int8};
use mdeploy::pipeline::optimize::{
    OptimizeRequest, QuantizeMode, QuantizeOptions, Verdict, optimize_file,
};
use mdeploy::quantize::QuantizeReport;

use super::printer::{OutputArgs, Printer, UsageError, print_stdout};

/// Rewrite a model to be smaller and faster without changing what it computes, and prove it.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mdeploy optimize model.onnx -o model.opt.onnx
  mdeploy optimize model.onnx -o model.opt.onnx --data test_data_set_0 --report optimize.json
  mdeploy optimize model.onnx -o model.fp16.onnx --fp16
  mdeploy optimize model.onnx -o model.int8.onnx --int8 static --calibration calib/
  mdeploy optimize model.onnx -o model.int4.onnx --int4 weight-only --calibration calib/
  mdeploy optimize --list-passes")]
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
    /// Print every pass with a one-line description (with --json: and its details), and exit.
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
    /// --calibration data (Conv, ConvTranspose, Gemm, MatMul; embedding tables read by Gather
    /// become int8 rows with a scale each).
    #[arg(long, value_enum, value_name = "MODE", conflicts_with = "fp16")]
    int8: Option<Int8>,
    /// Lossy: 4-bit weights. `weight-only`: MatMul weights become uint4 in blocks of rows (a
    /// scale and zero point each), read through opset-21 DequantizeLinear(block_size), which
    /// onnxruntime fuses into its 4-bit kernel; activations stay float. The model is raised to
    /// opset 21 where that keeps its meaning. Measured and verified with onnxruntime.
    #[arg(long, value_enum, value_name = "MODE", conflicts_with_all = ["fp16", "int8"])]
    int4: Option<Int4>,
    /// With --int4: rows per block, a power of two from 16 to 256.
    #[arg(long, value_name = "ROWS", requires = "int4")]
    int4_block_size: Option<usize>,
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
    /// Quantization (fp16, int8, int4): what every output must keep against the float model on
    /// the verification data and the calibration data (at most 16 samples of it where --data
    /// gives other verification data): cosine (`cos=X`), for class scores (a linear
    /// layer's, through Softmax or the like) top-1 agreement (`top1=X`), SQNR in dB
    /// (`sqnr=DB`), the fraction of elements on the same side of a decision threshold T
    /// (`agree@T=X`); nodes that add the most noise return to float until it holds. `;` then
    /// `OUTPUT:cos=X` gives one output a target of its own (cos, top1, sqnr), which its
    /// verification holds it to alone (e.g. `cos=0.99,top1=1;last_hidden_state:cos=0.95`).
    #[arg(long, value_name = "cos=X,top1=Y[;OUTPUT:cos=X]", default_value = mdeploy::quantize::AccuracyTarget::DEFAULT, value_parser = mdeploy::quantize::AccuracyTarget::parse)]
    accuracy_target: mdeploy::quantize::AccuracyTarget,
    /// Static int8: the op types to quantize (default Conv,ConvTranspose,Gemm,MatMul,Gather).
    #[arg(long, value_delimiter = ',', value_name = "OPS")]
    int8_ops: Vec<String>,
    /// Static int8: the activations' type, uint8 (default: what onnxruntime's x86 int8 kernels
    /// fuse) or int8.
    #[arg(long, value_name = "uint8|int8", value_parser = mdeploy::quantize::qdq::ActivationType::parse)]
    int8_activations: Option<mdeploy::quantize::qdq::ActivationType>,
    /// Static int8: which nodes to quantize. `fast` (default): those estimated to run faster
    /// in int8 in onnxruntime's CPU provider; a Conv between float ops (HardSwish, PRelu) or a
    /// depthwise one costs more in Q/DQ and layout changes than int8 saves, and stays float,
    /// reported with the estimate. `all`: every node that can be (the smallest file; for
    /// runtimes where int8 is cheap).
    #[arg(long, value_name = "fast|all", value_parser = mdeploy::quantize::placement::Placement::parse)]
    int8_placement: Option<mdeploy::quantize::placement::Placement>,
    /// Int8: how far the MatMul, Gemm and Conv weights reach. `full` (default): [-127, 127].
    /// `reduced`: [-64, 64], which onnxruntime multiplies exactly on every x86 CPU, at a bit of
    /// each weight's precision; with `full`, a CPU without VNNI (AVX2) saturates some products,
    /// so the model computes different numbers there than on one with VNNI.
    #[arg(long, value_name = "full|reduced", value_parser = mdeploy::quantize::weights::WeightRange::parse)]
    int8_weight_range: Option<mdeploy::quantize::weights::WeightRange>,
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
    /// (by default that is a failure and nothing is written). --fp16 and --int8 dynamic then
    /// convert without measuring the model (float16: only weights are checked against its range).
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
    /// Make initializers that are also graph inputs constants first, as `convert
    /// --freeze-initializers` does: IR 3 listed every weight among the inputs, so no pass folds
    /// it and no quantization takes it as a weight. The result drops them from its inputs.
    #[arg(long)]
    freeze_initializers: bool,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(args: OptimizeArgs) -> anyhow::Result<ExitCode> {
    if args.list_passes {
        if args.out.json {
            let passes: Vec<serde_json::Value> = registry()
                .iter()
                .map(|p| {
                    serde_json::json!({"name": p.name(), "kind": p.kind(),
                        "description": p.description(), "details": p.details()})
                })
                .collect();
            super::printer::print_json(&passes)?;
            return Ok(ExitCode::SUCCESS);
        }
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
    if (!args.calibration.is_empty() || !args.exclude_nodes.is_empty())
        && !args.fp16
        && args.int8.is_none()
        && args.int4.is_none()
    {
        return Err(UsageError(
            "--calibration and --exclude-nodes apply to quantization (--fp16, --int8, --int4)"
                .into(),
        )
        .into());
    }
    if args.int8_activations.is_some() && args.int8 != Some(Int8::Static) {
        return Err(UsageError("--int8-activations applies to --int8 static".into()).into());
    }
    if args.int8_placement.is_some() && args.int8 != Some(Int8::Static) {
        return Err(UsageError("--int8-placement applies to --int8 static".into()).into());
    }
    if args.int8_weight_range.is_some() && args.int8.is_none() {
        return Err(UsageError("--int8-weight-range applies to --int8".into()).into());
    }
    let printer = Printer::new(&args.out);
    let req = OptimizeRequest {
        level: args.level,
        passes: args.passes.clone(),
        skip: args.skip.clone(),
        prune: args.prune,
        prune_channels: args.prune_channels,
        quantize: QuantizeOptions {
            mode: QuantizeMode::chosen(
                args.fp16,
                args.fp16_io,
                args.int8,
                args.int4,
                args.int4_block_size,
            ),
            calibration: args.calibration.clone(),
            method: args.calibration_method,
            cache: args.calibration_cache.clone(),
            accuracy_target: args.accuracy_target,
            int8_ops: args.int8_ops.clone(),
            exclude_nodes: args.exclude_nodes.clone(),
            exclude_op_types: args.exclude_op_types.clone(),
            activation_type: args.int8_activations.unwrap_or_default(),
            placement: args.int8_placement.unwrap_or_default(),
            weight_range: args.int8_weight_range.unwrap_or_default(),
        },
        tolerance: args.tolerance,
        fold_size_limit: args.fold_size_limit,
        verify: !args.no_verify,
        allow_unverified: args.allow_unverified,
        keep_failed: args.keep_failed,
        bisect: args.bisect,
        // without --data, quantization verifies on the calibration data
        data: args
            .data
            .options((!args.calibration.is_empty()).then_some("--calibration"))?,
        external_data: args.external_data,
        freeze_initializers: args.freeze_initializers,
        // the digests `pack` checks a report against, only when a report is asked for
        lineage: args.out.json || args.out.report.is_some(),
        ..OptimizeRequest::new(input.clone(), output.clone())
    };
    let outcome = optimize_file(&req, printer.progress())?;
    let doc = &outcome.document;
    printer.document(doc)?;
    if let Some(n) = doc.initializers_frozen {
        printer.note(&format!(
            "{n} initializers dropped from the graph inputs: they are constants now"
        ));
    }
    for r in &doc.outputs_redeclared {
        printer.note(&r.describe());
    }
    if let Some(r) = &doc.opset_raised {
        printer.note(&format!(
            "opset raised from {} to {} (onnxruntime and tract run no opset below 7; {} nodes rewritten to keep their meaning)",
            r.from,
            r.to,
            r.rewritten.len()
        ));
    }
    printer.note(&render(
        &doc.optimize,
        doc.input.bytes,
        doc.output.as_ref().map(|o| o.saved.bytes),
    ));
    match &doc.quantize {
        Some(QuantizeReport::Fp16(stage)) => printer.note(&render_fp16(stage)),
        Some(QuantizeReport::Int8Dynamic(stage)) => {
            let mut s = render_int8(
                &match format!(
                    "{}{}",
                    opset_note(&stage.quantization.opset),
                    weight_range_note(stage.quantization.weight_range)
                ) {
                    note if note.is_empty() => "int8 dynamic".into(),
                    note => format!("int8 dynamic ({})", note.trim_start_matches(", ")),
                },
                &stage.quantization.quantized,
                &stage.quantization.kept_float,
                &stage.output_sqnr_db,
                stage.accuracy.as_ref(),
            );
            if stage.calibration.is_none() {
                s.push_str("\n  not measured: no available engine runs the model");
            }
            printer.note(&s)
        }
        Some(QuantizeReport::Int4WeightOnly(stage)) => printer.note(&render_int8(
            &format!(
                "int4 weight-only (uint4, blocks of {} rows{})",
                stage.quantization.block_size,
                opset_note(&stage.quantization.opset)
            ),
            &stage.quantization.quantized,
            &stage.quantization.kept_float,
            &stage.output_sqnr_db,
            Some(&stage.accuracy),
        )),
        Some(QuantizeReport::Int8Static(stage)) => printer.note(&render_int8(
            &format!(
                "int8 static ({} activations, {:?} ranges, {} placement{}{}{}{})",
                stage.quantization.activations,
                stage.method,
                stage.quantization.placement.as_str(),
                if stage.ranges_from_cache {
                    ", from the cache"
                } else {
                    ""
                },
                opset_note(&stage.quantization.opset),
                if stage.quantization.per_channel || stage.quantization.quantized.is_empty() {
                    ""
                } else {
                    ", weights per tensor"
                },
                weight_range_note(stage.quantization.weight_range)
            ),
            &stage.quantization.quantized,
            &stage.quantization.kept_float,
            &stage.output_sqnr_db,
            Some(&stage.accuracy),
        )),
        None => {}
    }
    // an unverifiable result is always said, even with --quiet
    super::printer::note(
        printer.quiet() && outcome.verdict != Verdict::Unverifiable,
        &format!(
            "{} -> {}: {}",
            input.display(),
            output.display(),
            outcome.verdict.describe()
        ),
    );
    if let Some(c) = &doc.bisect {
        super::printer::note(
            false,
            &format!(
                "bisect: outputs diverge after pass {} (nodes {})",
                c.pass,
                c.nodes_changed.join(", ")
            ),
        );
    }
    if let Some(v) = &doc.verification
        && doc.prune.is_some()
    {
        for o in &v.outputs {
            printer.note(&format!(
                "  {}: max abs error {:.3e}, cosine {:.6}",
                o.name,
                o.max_abs_error,
                o.cosine_similarity.unwrap_or(f64::NAN)
            ));
        }
    }
    match outcome.failure {
        Some(f) => Err(f.into()),
        None => Ok(ExitCode::SUCCESS),
    }
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
    match &stage.calibration {
        Some(cal) => {
            if let Some(engine) = cal.engine {
                let _ = write!(
                    s,
                    "\n  ranges measured on {} ({} samples, {engine})",
                    cal.origin, cal.samples
                );
            }
        }
        None => s.push_str(
            "\n  activations not measured (no available engine runs the model): only weights were checked against float16's range",
        ),
    }
    if let Some(first) = c.overridable_weights.first() {
        let _ = write!(
            s,
            "\n  kept float32: {} weights ('{first}', ...) that are also graph inputs, which a caller may override (`--freeze-initializers` makes them constants)",
            c.overridable_weights.len()
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
    render_measured(&mut s, &stage.output_sqnr_db, stage.accuracy.as_ref());
    s
}

/// What a quantizer did to the model's opset, for its heading: ", opset raised from F to T",
/// or ", opset not raised: WHY" where it needed a higher one and could not have it.
fn opset_note(o: &mdeploy::quantize::OpsetChange) -> String {
    match (
        o.opset_raised_from,
        o.opset_raised_to,
        &o.opset_kept_because,
    ) {
        (Some(from), Some(to), _) => format!(", opset raised from {from} to {to}"),
        (_, _, Some(why)) => format!(", opset not raised: {why}"),
        _ => String::new(),
    }
}

/// The int8 weights' range, for a heading, where it is not the default.
fn weight_range_note(range: mdeploy::quantize::weights::WeightRange) -> &'static str {
    match range {
        mdeploy::quantize::weights::WeightRange::Full => "",
        mdeploy::quantize::weights::WeightRange::Reduced => ", weights within [-64, 64]",
    }
}

/// What int8 quantization did: nodes quantized and kept float, and the quantized outputs that
/// moved most (lowest SQNR first; the report has all).
fn render_int8(
    what: &str,
    quantized: &[mdeploy::quantize::QuantizedNode],
    kept_float: &[mdeploy::quantize::KeptFloat],
    output_sqnr_db: &[(String, f64)],
    accuracy: Option<&mdeploy::quantize::AccuracyOutcome>,
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
    render_measured(&mut s, output_sqnr_db, accuracy);
    s
}

/// The accuracy reached against the target, and the quantized outputs that moved most (lowest
/// SQNR first; the report has all).
fn render_measured(
    s: &mut String,
    output_sqnr_db: &[(String, f64)],
    accuracy: Option<&mdeploy::quantize::AccuracyOutcome>,
) {
    if let Some(a) = accuracy {
        let verdict = match &a.unmeasured {
            // nothing quantized: nothing to measure
            Some(_) if a.nothing_quantized() => {
                let _ = write!(s, "\n  accuracy: {}", a.describe());
                return;
            }
            Some(_) => format!(
                "target {} {}; the outputs held to the verification preset",
                a.target.describe(),
                a.describe()
            ),
            None => format!(
                "{} against target {}: {}",
                a.describe(),
                a.target.describe(),
                if a.met { "met" } else { "missed" }
            ),
        };
        let _ = write!(
            s,
            "\n  accuracy: {verdict} ({} rounds on {} samples, {} returned to float)",
            a.rounds, a.samples, a.returned_to_float
        );
        if a.int8_products == Some(mdeploy::quantize::Int8Products::SaturatingPairs) {
            s.push_str(
                "\n  measured on a CPU without VNNI, where onnxruntime's int8 products saturate in \
                 pairs: on one with VNNI they are exact and the accuracy differs (verify there, or \
                 quantize with --int8-weight-range reduced)",
            );
        }
    }
    if !output_sqnr_db.is_empty() {
        let _ = write!(
            s,
            "\n  {:<50} {:>10}",
            "quantized output (lowest SQNR first)", "pooled dB"
        );
        for (name, db) in output_sqnr_db.iter().take(10) {
            let _ = write!(s, "\n  {name:<50} {db:>10.1}");
        }
    }
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
