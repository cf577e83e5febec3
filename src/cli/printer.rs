//! Output conventions: data on stdout, everything else on stderr; errors printed with their whole
//! chain and a hint; exit codes 0 ok, 1 a check failed, 2 usage or input error, 3 internal error.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;

use mdeploy::convert::ConvertError;
use mdeploy::graph::{GraphError, ModelError};
use mdeploy::onnx::OnnxError;
use mdeploy::passes::PassError;
use mdeploy::progress::Progress;
use mdeploy::run::RunError;
use mdeploy::run::tensor_io::TensorIoError;
use mdeploy::verify::VerifyError;

pub const EXIT_CHECK_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INTERNAL: u8 = 3;

pub use mdeploy::error::{CheckFailed, UsageError};
use mdeploy::pipeline::config::ConfigError;

/// The output flags every subcommand has.
#[derive(Debug, Clone, Default, Args)]
pub struct OutputArgs {
    /// Print the result as one JSON document on stdout (errors too).
    #[arg(long)]
    pub json: bool,
    /// Write the JSON report to this file.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Nothing on stderr but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// More on stderr: per-stage timings, throughput.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
}

/// Where a command's results go: the data or JSON on stdout, notes and bars on stderr, the
/// report to its file.
pub struct Printer {
    pub out: OutputArgs,
    bar: Bar,
}

impl Printer {
    pub fn new(out: &OutputArgs) -> Self {
        Printer {
            bar: Bar::new(out.quiet || out.json, out.verbose),
            out: out.clone(),
        }
    }

    /// Notes are silenced by --quiet and by --json (stdout is for the document).
    pub fn quiet(&self) -> bool {
        self.out.quiet || self.out.json
    }

    /// A note on stderr, unless quiet.
    pub fn note(&self, text: &str) {
        note(self.quiet(), text);
    }

    /// A note only with --verbose.
    pub fn detail(&self, text: &str) {
        note(!self.out.verbose || self.out.json, text);
    }

    /// The progress reporter for library calls.
    pub fn progress(&self) -> &dyn Progress {
        &self.bar
    }

    /// Writes the report where --report says, and prints it with --json.
    pub fn document<T: serde::Serialize>(&self, document: &T) -> anyhow::Result<()> {
        if let Some(path) = &self.out.report {
            mdeploy::pipeline::write_report(path, document)?;
        }
        if self.out.json {
            print_json(document)?;
        }
        Ok(())
    }
}

/// Set when the command line asks for JSON: errors are printed as JSON on stdout too.
static JSON_ERRORS: AtomicBool = AtomicBool::new(false);

pub fn set_json_errors(on: bool) {
    JSON_ERRORS.store(on, Ordering::Relaxed);
}

/// The exit code an error maps to, from the first typed error in its chain.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(p) = cause.downcast_ref::<mdeploy::pack::PackError>() {
            return if p.is_check_failure() {
                EXIT_CHECK_FAILED
            } else {
                EXIT_USAGE
            };
        }
        if cause.is::<CheckFailed>() {
            return EXIT_CHECK_FAILED;
        }
        if let Some(OnnxError::Write { .. }) = cause.downcast_ref::<OnnxError>() {
            return EXIT_INTERNAL;
        }
        if cause.is::<PassError>() {
            return EXIT_INTERNAL;
        }
        // a model an engine cannot run, or a file that cannot be read, is the input's problem
        // (a run failure outside a verification is no failed check; writes are OnnxError::Write)
        if cause.is::<UsageError>()
            || cause.is::<ConfigError>()
            || cause.is::<std::io::Error>()
            || cause.is::<OnnxError>()
            || cause.is::<GraphError>()
            || cause.is::<ModelError>()
            || cause.is::<TensorIoError>()
            || cause.is::<RunError>()
            || cause.is::<ConvertError>()
            || cause.is::<VerifyError>()
        {
            return EXIT_USAGE;
        }
    }
    EXIT_INTERNAL
}

/// Prints an error chain (and a hint where one helps) and returns its exit code.
pub fn report_error(e: &anyhow::Error) -> ExitCode {
    let code = exit_code(e);
    let hint = hint(e).or_else(|| {
        (code == EXIT_INTERNAL)
            .then(|| "this is a bug in mdeploy or an I/O failure; please report it".to_string())
    });
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {e}");
    for cause in e.chain().skip(1) {
        let _ = writeln!(err, "  caused by: {cause}");
    }
    if let Some(hint) = &hint {
        let _ = writeln!(err, "hint: {hint}");
    }
    // a command that printed its document (which says what failed) prints no second one
    if JSON_ERRORS.load(Ordering::Relaxed) && !DOCUMENT_PRINTED.load(Ordering::Relaxed) {
        let causes: Vec<String> = e.chain().skip(1).map(|c| c.to_string()).collect();
        let _ = print_json(&serde_json::json!({"error": {
            "message": e.to_string(), "causes": causes, "hint": hint, "exit_code": code,
        }}));
    }
    ExitCode::from(code)
}

/// With --json, a usage error clap found, as JSON on stdout.
pub fn print_json_error(message: &str, code: u8) -> anyhow::Result<()> {
    if !JSON_ERRORS.load(Ordering::Relaxed) {
        return Ok(());
    }
    let first = message
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ");
    print_json(&serde_json::json!({"error": {
        "message": first, "causes": [], "hint": null, "exit_code": code,
    }}))
}

fn hint(e: &anyhow::Error) -> Option<String> {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<ConfigError>() {
            return c.hint.clone();
        }
        if let Some(mdeploy::pack::PackError::Unsigned) =
            cause.downcast_ref::<mdeploy::pack::PackError>()
        {
            return Some("give --key PUB to check the signature".into());
        }
        if let Some(ConvertError::Nnef { unsupported, .. }) = cause.downcast_ref::<ConvertError>()
            && !unsupported.is_empty()
        {
            let list: Vec<String> = unsupported
                .iter()
                .map(|o| format!("{} (node '{}')", o.op, o.node))
                .collect();
            return Some(format!(
                "these ops have no NNEF serializer in tract: {}; convert --to onnx instead",
                list.join(", ")
            ));
        }
        if let Some(ConvertError::Nnef { reason, .. }) = cause.downcast_ref::<ConvertError>()
            && (reason.contains("determined fact") || reason.contains("symbols"))
        {
            return Some(
                "NNEF needs static shapes: fix the dynamic dims with --input-shape".into(),
            );
        }
        if let Some(OnnxError::External { .. }) = cause.downcast_ref::<OnnxError>() {
            return Some("external data files must sit inside the model's directory".into());
        }
        if let Some(ConvertError::InputShape(_)) = cause.downcast_ref::<ConvertError>() {
            return Some(
                "see `mdeploy inspect MODEL` for the inputs and their symbolic dims".into(),
            );
        }
    }
    None
}

static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

/// Keeps panic messages for [`report_panic`] instead of printing a backtrace notice: panics inside
/// tract are caught and reported as errors where they happen.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = match info.location() {
            Some(l) => format!("{info} at {}:{}", l.file(), l.line()),
            None => info.to_string(),
        };
        if let Ok(mut m) = PANIC_MESSAGE.lock() {
            *m = Some(msg);
        }
    }));
}

pub fn report_panic() -> ExitCode {
    let msg = PANIC_MESSAGE
        .lock()
        .ok()
        .and_then(|m| m.clone())
        .unwrap_or_default();
    let _ = writeln!(std::io::stderr(), "error: internal error: {msg}");
    let _ = writeln!(
        std::io::stderr(),
        "hint: this is a bug in mdeploy; please report it"
    );
    ExitCode::from(EXIT_INTERNAL)
}

/// Writes data to stdout; a closed pipe (`mdeploy inspect m.onnx | head`) is not an error.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Set once a JSON document is on stdout.
static DOCUMENT_PRINTED: AtomicBool = AtomicBool::new(false);

/// Prints one JSON document on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    DOCUMENT_PRINTED.store(true, Ordering::Relaxed);
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print_stdout(&text)
}

/// A note on stderr, unless quiet.
pub fn note(quiet: bool, text: &str) {
    if !quiet {
        let _ = writeln!(std::io::stderr(), "{text}");
    }
}

/// A progress bar on stderr, shown only when stderr is a terminal; stage lines unless quiet,
/// with timings when verbose.
pub struct Bar {
    bar: Mutex<Option<indicatif::ProgressBar>>,
    enabled: bool,
    quiet: bool,
    verbose: bool,
}

impl Bar {
    pub fn new(quiet: bool, verbose: bool) -> Self {
        Bar {
            bar: Mutex::new(None),
            enabled: !quiet && std::io::stderr().is_terminal(),
            quiet,
            verbose,
        }
    }
}

impl Progress for Bar {
    fn on_start(&self, what: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(bar);
        }
    }
    fn on_advance(&self, n: u64) {
        if let Ok(b) = self.bar.lock()
            && let Some(b) = b.as_ref()
        {
            b.inc(n);
        }
    }
    fn on_finish(&self) {
        if let Ok(mut b) = self.bar.lock()
            && let Some(b) = b.take()
        {
            b.finish_and_clear();
        }
    }
    fn on_stage_done(&self, stage: &str, seconds: f64, outcome: &str) {
        let timing = if self.verbose && (outcome == "done" || outcome == "failed") {
            format!(" ({seconds:.2} s)")
        } else {
            String::new()
        };
        note(self.quiet, &format!("{stage:>10}: {outcome}{timing}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model an engine could not run exited 1 ("a check failed") and an unreadable file 3
    /// ("a bug"): both are the input's problem.
    #[test]
    fn run_errors_and_unreadable_files_are_input_errors() {
        let run = anyhow::Error::new(RunError::Run("shape mismatch".into()));
        assert_eq!(exit_code(&run), EXIT_USAGE);
        let ort = anyhow::Error::new(RunError::OrtRun("bad node".into()));
        assert_eq!(exit_code(&ort), EXIT_USAGE);
        let io = anyhow::Error::new(std::io::Error::new(std::io::ErrorKind::NotFound, "gone"));
        assert_eq!(exit_code(&io), EXIT_USAGE);
        assert_eq!(
            exit_code(&anyhow::Error::new(CheckFailed("x".into()))),
            EXIT_CHECK_FAILED
        );
        assert_eq!(exit_code(&anyhow::anyhow!("untyped")), EXIT_INTERNAL);
    }
}
