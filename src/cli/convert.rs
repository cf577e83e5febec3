//! `mdeploy convert IN -o OUT [--input-shape NAME=dims ...] [--to onnx|nnef] [--external-data]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use mdeploy::convert::{normalize, write_nnef};
use mdeploy::lint::lint;
use mdeploy::onnx::{ExternalDataPolicy, Model, SaveOptions};
use mdeploy::progress::Progress;
use mdeploy::run::InputShapes;
use serde_json::json;

use super::printer::{Bar, UsageError, note, print_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// Normalised ONNX: sorted, shapes recorded, external data inlined under 2 GiB.
    Onnx,
    /// tract's NNEF archive (.nnef.tgz), faster to load with tract.
    Nnef,
}

/// Import a model: lint it, fix named dynamic dims, infer and record shapes, write it normalised.
#[derive(Debug, Args)]
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
    /// Print the conversion report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No notes on stderr.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    let shapes = InputShapes::parse(&args.input_shapes).map_err(UsageError)?;
    if args.output.is_dir() {
        return Err(UsageError(format!(
            "{} is a directory; -o takes a file",
            args.output.display()
        ))
        .into());
    }
    let quiet = args.quiet || args.json;
    let bar = Bar::new(quiet);
    bar.on_start("convert", 3);
    let mut model = Model::load(&args.input)?;
    let findings = lint(&model);
    bar.on_advance(1);
    let report = normalize(&mut model, &shapes)
        .with_context(|| format!("converting {}", args.input.display()))?;
    bar.on_advance(1);
    let written = match args.to {
        Target::Onnx => {
            let policy = if args.external_data {
                ExternalDataPolicy::External { threshold: 1024 }
            } else {
                ExternalDataPolicy::Auto
            };
            let saved = model.save(
                &args.output,
                SaveOptions {
                    external_data: policy,
                },
            )?;
            serde_json::to_value(saved)?
        }
        Target::Nnef => serde_json::to_value(write_nnef(&model, &args.output)?)?,
    };
    bar.on_advance(1);
    bar.on_finish();
    for f in &findings {
        note(quiet, &format!("lint: [{}] {}", f.kind, f.message));
    }
    if !report.not_analysed.is_empty() {
        let ops: Vec<String> = report
            .not_analysed
            .iter()
            .map(|o| format!("{} (node '{}')", o.op, o.node))
            .collect();
        note(
            quiet,
            &format!(
                "warning: no type or shape rules for {}; what depends on them is not recorded",
                ops.join(", ")
            ),
        );
    }
    note(
        quiet,
        &format!(
            "wrote {} ({} shapes recorded, {} unknown{})",
            args.output.display(),
            report.shapes_recorded,
            report.shapes_unknown,
            if report.reordered {
                ", nodes reordered"
            } else {
                ""
            }
        ),
    );
    if args.json {
        print_json(&json!({
            "format": "mdeploy.convert/2",
            "input": args.input.display().to_string(),
            "output": written,
            "report": report,
            "lint": findings,
        }))?;
    }
    Ok(ExitCode::SUCCESS)
}
