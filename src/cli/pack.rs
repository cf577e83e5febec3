//! `mdeploy keygen`, `mdeploy pack`, `mdeploy unpack`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use mdeploy::pack::keys::{keygen, load_signing_key, load_verifying_key};
use mdeploy::pack::{PackOptions, UnpackSummary, pack_with_progress, unpack};
use mdeploy::pipeline::OptimizeDocument;
use mdeploy::verify::VerifyReport;

use super::printer::{OutputArgs, Printer, UsageError};

/// Make an ECDSA P-256 key pair for signing archives (mdeploy.key, mode 0600; mdeploy.pub).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mdeploy keygen -o keys")]
pub struct KeygenArgs {
    /// Directory to write the keys into (created if missing; existing keys are never overwritten).
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    out: OutputArgs,
}

/// Write a signed, versioned, reproducible archive (.mdpkg) of a model.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mdeploy pack model.onnx -o rnet-1.0.0.mdpkg --name rnet --model-version 1.0.0 --key keys/mdeploy.key
  mdeploy pack model.opt.onnx -o rnet.mdpkg --name rnet --model-version 1.1.0 --key keys/mdeploy.key \\
      --optimize-report optimize.json --verify-report verify.json --include labels.txt")]
pub struct PackArgs {
    /// The ONNX model (its external data files come along).
    model: PathBuf,
    /// The archive to write.
    #[arg(short, long)]
    output: PathBuf,
    /// The model's name.
    #[arg(long)]
    name: String,
    /// Its semantic version (1.2.3, 1.0.0-rc.1).
    #[arg(long, required_unless_present = "old_version")]
    model_version: Option<String>,
    /// The old spelling of --model-version, refused with a hint (--version is mdeploy's own).
    #[arg(long = "version", hide = true, value_name = "SEMVER")]
    old_version: Option<String>,
    /// Private key (PEM) to sign with; without it the archive is unsigned.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Extra files to ship (labels, tokenizer, preprocessing config), stored under files/.
    #[arg(long, value_name = "FILE")]
    include: Vec<PathBuf>,
    /// An optimize report (JSON) to record as the model's lineage.
    #[arg(long, value_name = "R.json")]
    optimize_report: Option<PathBuf>,
    /// A verify report (mdeploy.verify/2) to record.
    #[arg(long, value_name = "V.json")]
    verify_report: Option<PathBuf>,
    /// A model_signing signature (model.sig) of the model's directory to check before packing.
    #[arg(long, value_name = "SIG", requires = "source_key")]
    source_signature: Option<PathBuf>,
    /// The public key (PEM) the source signature must verify with.
    #[arg(long, value_name = "PUB", requires = "source_signature")]
    source_key: Option<PathBuf>,
    /// User metadata, KEY=VALUE. Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// zstd compression level (1 to 22).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=22))]
    level: i32,
    #[command(flatten)]
    out: OutputArgs,
}

/// Verify an archive while extracting it; the directory appears only if everything checks out.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mdeploy unpack rnet-1.0.0.mdpkg -o rnet --key keys/mdeploy.pub
  mdeploy unpack rnet-1.0.0.mdpkg --check --key keys/mdeploy.pub")]
pub struct UnpackArgs {
    /// The archive.
    archive: PathBuf,
    /// The directory to create.
    #[arg(short, long, required_unless_present = "check")]
    output: Option<PathBuf>,
    /// Public key (PEM) the archive must be signed with.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Accept an archive without a signature (digests are still checked).
    #[arg(long)]
    allow_unsigned: bool,
    /// Verify only; write nothing.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run_keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let printer = Printer::new(&args.out);
    let (private, public) = keygen(&args.output)?;
    printer.note(&format!(
        "wrote {} (private, 0600) and {}",
        private.display(),
        public.display()
    ));
    printer.document(&serde_json::json!({"private_key": private, "public_key": public}))?;
    Ok(ExitCode::SUCCESS)
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    Ok(std::fs::read(path).map_err(|e| UsageError(format!("{}: {e}", path.display())))?)
}

pub fn run_pack(args: PackArgs) -> anyhow::Result<ExitCode> {
    if let Some(v) = &args.old_version {
        return Err(UsageError(format!(
            "pack takes the model's version as --model-version {v} (--version prints mdeploy's)"
        ))
        .into());
    }
    let mut metadata = BTreeMap::new();
    for m in &args.metadata {
        let (k, v) = m
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--metadata '{m}': expected KEY=VALUE")))?;
        metadata.insert(k.to_string(), v.to_string());
    }
    let printer = Printer::new(&args.out);
    let mtime = mdeploy::pipeline::build::source_date_epoch()?;
    let options = PackOptions {
        model: args.model.clone(),
        output: args.output.clone(),
        name: args.name.clone(),
        version: args.model_version.clone().unwrap_or_default(),
        key: args.key.as_deref().map(load_signing_key).transpose()?,
        include: args.include.clone(),
        optimize_report: args
            .optimize_report
            .as_ref()
            .map(|p| {
                OptimizeDocument::from_json(&read(p)?, p)
                    .map(OptimizeDocument::for_lineage)
                    .map_err(anyhow::Error::from)
            })
            .transpose()?,
        verify_report: args
            .verify_report
            .as_ref()
            .map(|p| VerifyReport::from_json(&read(p)?, p).map_err(anyhow::Error::from))
            .transpose()?,
        metadata,
        level: args.level,
        threads: 2,
        mtime,
        source_signature: match (&args.source_signature, &args.source_key) {
            (Some(sig), Some(key)) => Some((sig.clone(), load_verifying_key(key)?)),
            _ => None,
        },
    };
    let (manifest, summary) = pack_with_progress(&options, printer.progress())?;
    let mb = summary.input_bytes as f64 / 1e6;
    printer.detail(&format!(
        "packed {mb:.1} MB in {:.2} s: {:.0} MB/s",
        summary.seconds,
        mb / summary.seconds.max(1e-9)
    ));
    printer.note(&format!(
        "{} {} ({} files, {:.1} MB -> {:.1} MB, {})",
        if summary.unchanged {
            "unchanged"
        } else {
            "wrote"
        },
        summary.path,
        summary.files,
        mb,
        summary.bytes as f64 / 1e6,
        if summary.signed { "signed" } else { "unsigned" }
    ));
    printer.document(&serde_json::json!({"summary": summary, "manifest": manifest}))?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_unpack(args: UnpackArgs) -> anyhow::Result<ExitCode> {
    let printer = Printer::new(&args.out);
    let key = args.key.as_deref().map(load_verifying_key).transpose()?;
    if key.is_none() && !args.allow_unsigned {
        return Err(UsageError(
            "give --key PUB to verify the signature, or --allow-unsigned".into(),
        )
        .into());
    }
    let dest = if args.check {
        None
    } else {
        args.output.as_deref()
    };
    let summary: UnpackSummary = unpack(&args.archive, dest, key.as_ref(), args.allow_unsigned)?;
    let m = &summary.manifest;
    let what = match dest {
        Some(d) => format!("unpacked to {}", d.display()),
        None => "checked".to_string(),
    };
    printer.note(&format!(
        "{} {} {}: {} files, {} bytes, signature {}; {what}",
        m.name,
        m.version,
        args.archive.display(),
        summary.files,
        summary.bytes,
        summary.signature
    ));
    printer.document(&summary)?;
    Ok(ExitCode::SUCCESS)
}
