//! `mdeploy convert IN -o OUT [--input-shape NAME=dims ...] [--to onnx|nnef] [--external-data]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use mdeploy::pipeline::{ConvertRequest, ConvertTarget, convert_file};

use super::printer::{OutputArgs, Printer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// Normalised ONNX: sorted, shapes recorded, external data inlined under 2 GiB.
    Onnx,
    /// tract's NNEF archive (.nnef.tgz), faster to load with tract.
    Nnef,
}

/// Import a model: lint it, fix named dynamic dims, infer and record shapes, write it normalised.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mdeploy convert model.onnx -o model.normalized.onnx
  mdeploy convert model.onnx -o fixed.onnx --input-shape batch=1
  mdeploy convert model.onnx -o model.opset21.onnx --opset 21
  mdeploy convert resnet50-v1-7.onnx -o resnet50.onnx --freeze-initializers --opset 13
  mdeploy convert model.onnx -o model.nnef.tgz --to nnef --input-shape input=1,3,224,224")]
pub struct ConvertArgs {
    /// The ONNX model to import.
    input: PathBuf,
    /// Where to write the result (never the input itself).
    #[arg(short, long)]
    output: PathBuf,
    /// Fix a shape: `INPUT=1,3,224,224`, or one symbolic dim: `batch=1`. Repeatable.
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    input_shapes: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "onnx")]
    to: Target,
    /// Store tensors of 1 KiB or more in `<OUTPUT>.data` (automatic past 2 GiB).
    #[arg(long)]
    external_data: bool,
    /// Raise the model's opset to N (from 6 or above, to at most 21), only where every node
    /// keeps its meaning; nodes whose form changed are rewritten, anything else is refused.
    #[arg(long, value_name = "N")]
    opset: Option<i64>,
    /// Make initializers that are also graph inputs constants: IR 3 listed every weight among
    /// the inputs, which lets a caller override it, so no pass folds it and no quantization
    /// takes it as a weight. Drops them from the inputs (and raises an IR version below 4).
    #[arg(long)]
    freeze_initializers: bool,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    let printer = Printer::new(&args.out);
    let req = ConvertRequest {
        input: args.input.clone(),
        output: args.output.clone(),
        input_shapes: args.input_shapes.clone(),
        to: match args.to {
            Target::Onnx => ConvertTarget::Onnx,
            Target::Nnef => ConvertTarget::Nnef,
        },
        external_data: args.external_data,
        opset: args.opset,
        freeze_initializers: args.freeze_initializers,
    };
    let doc = convert_file(&req, printer.progress())?;
    for f in &doc.lint {
        printer.note(&format!("lint: [{}] {}", f.kind, f.message));
    }
    let report = &doc.report;
    if !report.not_analysed.is_empty() {
        let ops: Vec<String> = report
            .not_analysed
            .iter()
            .map(|o| format!("{} (node '{}')", o.op, o.node))
            .collect();
        printer.note(&format!(
            "warning: no type or shape rules for {}; what depends on them is not recorded",
            ops.join(", ")
        ));
    }
    if let Some(n) = report.initializers_frozen {
        printer.note(&format!(
            "{n} initializers dropped from the graph inputs: they are constants now"
        ));
    }
    for r in &report.outputs_redeclared {
        printer.note(&r.describe());
    }
    if let Some(r) = report.opset_raised.as_ref().filter(|r| r.from != r.to) {
        printer.note(&format!(
            "opset raised from {} to {} ({} nodes rewritten to keep their meaning)",
            r.from,
            r.to,
            r.rewritten.len()
        ));
    }
    printer.note(&format!(
        "wrote {} ({} shapes recorded, {} unknown{})",
        args.output.display(),
        report.shapes_recorded,
        report.shapes_unknown,
        if report.reordered {
            ", nodes reordered"
        } else {
            ""
        }
    ));
    printer.document(&doc)?;
    Ok(ExitCode::SUCCESS)
}
