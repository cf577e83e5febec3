//! `mdeploy inspect MODEL [--json]`.

use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use mdeploy::graph::check_model;
use mdeploy::inspect::{Inspection, inspect};
use mdeploy::onnx::Model;

use super::printer::{OutputArgs, Printer, print_stdout};

/// Show what a model holds (interface, opsets, ops, parameters, external data, lint findings), or
/// an archive's manifest and whether it verifies.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mdeploy inspect model.onnx
  mdeploy inspect model.onnx --json | jq .parameters
  mdeploy inspect rnet-1.0.0.mdpkg --key keys/mdeploy.pub")]
pub struct InspectArgs {
    /// The ONNX model, or an .mdpkg archive.
    model: PathBuf,
    /// For an archive: the public key its signature must verify with.
    #[arg(long)]
    key: Option<PathBuf>,
    #[command(flatten)]
    out: OutputArgs,
}

/// zstd's frame magic: archives are zstd streams, ONNX files protobuf.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

fn is_archive(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == ZSTD_MAGIC
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    if is_archive(&args.model) {
        return inspect_archive(&args);
    }
    let model = Model::load(&args.model)?;
    check_model(&model)
        .with_context(|| format!("{} is not a usable model", args.model.display()))?;
    let report = inspect(&model).with_context(|| format!("inspecting {}", args.model.display()))?;
    Printer::new(&args.out).document(&report)?;
    if !args.out.json {
        print_stdout(&render(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn render(r: &Inspection) -> String {
    let mut s = String::new();
    let w = &mut s;
    if let Some(f) = &r.file {
        let _ = writeln!(w, "model       {} ({})", f.path, human_bytes(f.bytes));
    }
    let p = &r.producer;
    let _ = writeln!(w, "ir_version  {}", r.ir_version);
    let _ = writeln!(w, "producer    {} {}", p.name, p.version);
    let opsets: Vec<String> = r
        .opset_import
        .iter()
        .map(|o| {
            format!(
                "{}:{}",
                if o.domain.is_empty() {
                    "ai.onnx"
                } else {
                    &o.domain
                },
                o.version
            )
        })
        .collect();
    let _ = writeln!(w, "opsets      {}", opsets.join(", "));
    let _ = writeln!(w, "\ninputs");
    for v in &r.inputs {
        let _ = writeln!(
            w,
            "  {:<24} {:<8} {}",
            v.name,
            v.dtype.as_deref().unwrap_or("?"),
            v.shape
        );
    }
    let _ = writeln!(w, "outputs");
    for v in &r.outputs {
        let _ = writeln!(
            w,
            "  {:<24} {:<8} {}",
            v.name,
            v.dtype.as_deref().unwrap_or("?"),
            v.shape
        );
    }
    let n = &r.nodes;
    let _ = writeln!(
        w,
        "\nnodes       {} ({} top level, {} subgraphs)",
        n.total, n.top_level, n.subgraphs
    );
    let mut ops: Vec<(&String, &usize)> = r.op_types.iter().collect();
    ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let ops: Vec<String> = ops.iter().map(|(op, c)| format!("{op} {c}")).collect();
    let _ = writeln!(w, "ops         {}", ops.join(", "));
    let pr = &r.parameters;
    let _ = writeln!(
        w,
        "\nparameters  {} in {} ({} initializers, {} Constant nodes)",
        pr.count,
        human_bytes(pr.bytes),
        pr.initializers,
        pr.constant_nodes
    );
    for (dt, t) in &pr.by_dtype {
        let _ = writeln!(
            w,
            "  {:<10} {:>12} in {:>4} tensors, {}",
            dt,
            t.count,
            t.tensors,
            human_bytes(t.bytes)
        );
    }
    if !r.largest_tensors.is_empty() {
        let _ = writeln!(w, "largest tensors");
        for t in &r.largest_tensors {
            let _ = writeln!(
                w,
                "  {:<40} {:<8} {:?} {} ({})",
                t.name,
                t.dtype,
                t.shape,
                human_bytes(t.bytes),
                t.stored
            );
        }
    }
    for f in &r.external_data {
        let _ = writeln!(
            w,
            "external    {}: {} tensors, {}",
            f.location,
            f.tensors,
            human_bytes(f.bytes)
        );
    }
    for (k, v) in &r.metadata_props {
        let _ = writeln!(w, "metadata    {k} = {v}");
    }
    if r.lint.is_empty() {
        let _ = writeln!(w, "\nlint        no findings");
    } else {
        let _ = writeln!(w, "\nlint        {} findings", r.lint.len());
        for f in &r.lint {
            let _ = writeln!(w, "  [{}] {}: {}", f.kind, f.graph, f.message);
        }
    }
    s
}

fn inspect_archive(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let key = args
        .key
        .as_deref()
        .map(mdeploy::pack::keys::load_verifying_key)
        .transpose()?;
    let summary = mdeploy::pack::inspect_archive(&args.model, key.as_ref())?;
    Printer::new(&args.out).document(&summary)?;
    if args.out.json {
        return Ok(ExitCode::SUCCESS);
    }
    let m = &summary.manifest;
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "archive     {}", args.model.display());
    let _ = writeln!(
        w,
        "model       {} {} (entry point {})",
        m.name, m.version, m.model.entry_point
    );
    let _ = writeln!(w, "signature   {}", summary.signature);
    let _ = writeln!(
        w,
        "digests     all {} files match the manifest ({})",
        summary.files,
        human_bytes(summary.bytes)
    );
    let _ = writeln!(
        w,
        "made by     {} {}",
        m.created_by.tool, m.created_by.version
    );
    let _ = writeln!(
        w,
        "parameters  {} ({})",
        m.parameters, m.precision.quantization
    );
    let _ = writeln!(w, "source      sha256 {}", m.lineage.source_sha256);
    for (title, values) in [("inputs", &m.inputs), ("outputs", &m.outputs)] {
        let _ = writeln!(w, "{title}");
        for v in values {
            let text = |k: &str| match &v[k] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "?".into(),
                other => other.to_string(),
            };
            let _ = writeln!(
                w,
                "  {:<24} {:<8} {}",
                text("name"),
                text("dtype"),
                text("shape")
            );
        }
    }
    if let Some(v) = &m.lineage.verify {
        let _ = writeln!(
            w,
            "verified    {} ({} samples, {})",
            v["status"], v["samples"], v["tolerance"]
        );
    }
    let _ = writeln!(w, "files");
    for f in &m.files {
        let _ = writeln!(w, "  {:<40} {:>12}  {}", f.path, f.size, f.sha256);
    }
    for (k, v) in &m.metadata {
        let _ = writeln!(w, "metadata    {k} = {v}");
    }
    print_stdout(&s)?;
    Ok(ExitCode::SUCCESS)
}
