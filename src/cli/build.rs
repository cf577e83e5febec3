//! `mdeploy build [DIR | FILE.toml] [-o BUILD_DIR] [--dry-run] [--force]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use mdeploy::pipeline::build::{BuildRequest, StageState, build};

use super::printer::{OutputArgs, Printer};

/// Run a model repository's mdeploy.toml: convert, optimize, verify, sign and pack, skipping the
/// stages whose inputs have not changed.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mdeploy build examples/mtcnn-rnet
  mdeploy build                      # the mdeploy.toml in the current directory
  mdeploy build models/rnet.toml -o out/rnet
  mdeploy build --dry-run            # what is up to date and what would run
  MDEPLOY_KEY=keys/release.key mdeploy build --json")]
pub struct BuildArgs {
    /// The model repository (a directory with an mdeploy.toml) or the .toml file.
    #[arg(default_value = ".")]
    target: PathBuf,
    /// The build directory (default: build/ beside the configuration).
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Print the plan (what is up to date, what would run) and run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run every stage, even those up to date.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    // the plan of a dry run is its output: on stdout, not as progress on stderr
    let progress_out = OutputArgs {
        quiet: args.out.quiet || args.dry_run,
        ..args.out.clone()
    };
    let printer = Printer::new(&args.out);
    let progress = Printer::new(&progress_out);
    let req = BuildRequest {
        target: args.target.clone(),
        out_dir: args.output.clone(),
        dry_run: args.dry_run,
        force: args.force,
    };
    let summary = build(&req, progress.progress())?;
    printer.document(&summary)?;
    let ran = summary.stages.iter().any(|s| s.state == StageState::Ran);
    if args.dry_run {
        if !args.out.json {
            let mut plan = String::new();
            for s in &summary.stages {
                let state = match (&s.state, &s.reason) {
                    (StageState::WouldRun, Some(r)) => format!("would run ({r})"),
                    (StageState::WouldRun, None) => "would run".into(),
                    _ => "up to date".into(),
                };
                plan.push_str(&format!("{:>10}: {state}\n", s.stage));
            }
            super::printer::print_stdout(&plan)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let signed = if summary.signed { "signed" } else { "UNSIGNED" };
    printer.note(&format!(
        "{} {}: {} ({signed}){}",
        summary.name,
        summary.version,
        summary.archive.display(),
        if ran { "" } else { ", up to date" }
    ));
    if ran {
        let key = summary
            .public_key
            .as_ref()
            .map(|k| format!("--key {}", k.display()))
            .unwrap_or_else(|| "--key PUBLIC_KEY.pem".into());
        let key = if summary.signed {
            key
        } else {
            "--allow-unsigned".into()
        };
        let unpacked = summary.out_dir.join("unpacked");
        printer.note(&format!(
            "check it:\n  mdeploy unpack {} -o {} {key}",
            summary.archive.display(),
            unpacked.display()
        ));
        if !summary.verify_data.is_empty() {
            let data: Vec<String> = summary
                .verify_data
                .iter()
                .map(|d| format!("--data {}", d.display()))
                .collect();
            printer.note(&format!(
                "  mdeploy verify {}/model.onnx {}",
                unpacked.display(),
                data.join(" ")
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}
