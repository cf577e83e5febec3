//! The command line: clap definitions (one file per subcommand), the printer for stdout data and
//! stderr progress, and the mapping of errors to documented exit codes.

mod build;
mod convert;
mod data;
mod inspect;
mod optimize;
mod pack;
mod printer;
mod serve;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use printer::report_error;

/// Take a trained ONNX model to a deployable artifact you can trust.
#[derive(Debug, Parser)]
#[command(
    name = "mdeploy",
    version,
    about,
    after_help = "Examples:
  mdeploy build examples/mtcnn-rnet    # convert, optimize, verify, sign, pack
  mdeploy inspect model.onnx
  mdeploy optimize model.onnx -o model.opt.onnx --report optimize.json
  mdeploy verify model.onnx model.opt.onnx --data test_data_set_0

Exit codes: 0 success, 1 a check failed (verification, signature), 2 bad input or usage,
3 internal error."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Build(build::BuildArgs),
    Inspect(inspect::InspectArgs),
    Convert(convert::ConvertArgs),
    Optimize(Box<optimize::OptimizeArgs>),
    Verify(verify::VerifyArgs),
    Keygen(pack::KeygenArgs),
    Pack(pack::PackArgs),
    Unpack(pack::UnpackArgs),
    Serve(serve::ServeArgs),
    Completions(CompletionsArgs),
    /// Print the man page (roff) of mdeploy and its subcommands.
    #[command(after_help = "Examples:\n  mdeploy manpage > mdeploy.1 && man ./mdeploy.1")]
    Manpage,
}

/// Print a shell completion script.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  mdeploy completions bash > ~/.local/share/bash-completion/completions/mdeploy
  mdeploy completions zsh > ~/.zfunc/_mdeploy
  mdeploy completions fish > ~/.config/fish/completions/mdeploy.fish")]
struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// Has glibc's allocator keep large freed blocks for reuse instead of handing them back to the
/// kernel. A tool run loads several models in turn, each an allocation of the model's size or more
/// (its serialized bytes for onnxruntime, its weights, its outputs), and by default glibc maps
/// every block over 32 MB afresh and unmaps it when freed, so each load faults its pages in again:
/// on a 90 MB transformer, a third of the run's time went to the kernel. Serving keeps glibc's
/// defaults (one model, loaded once, in a process that runs for weeks).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread is started
    unsafe {
        // blocks of any size come from the main thread's heap, so a freed one is reused; the free
        // memory at the heap's top is handed back only past 128 MB. glibc before 2.35 refuses a
        // threshold over 32 MB: setting the trim threshold alone would then fix the mmap
        // threshold at its 128 KB start, worse than its default, so nothing is set
        if libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX) == 1 {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
        }
    }
}

/// Runs the command line; never panics outward (a panic is an internal error, exit 3).
pub fn run() -> ExitCode {
    printer::install_panic_hook();
    match std::panic::catch_unwind(parse_and_run) {
        Ok(code) => code,
        Err(_) => printer::report_panic(),
    }
}

fn parse_and_run() -> ExitCode {
    printer::set_json_errors(std::env::args_os().skip(1).any(|a| a == "--json"));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                let _ = printer::print_json_error(&e.to_string(), printer::EXIT_USAGE);
            }
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(printer::EXIT_USAGE),
            };
        }
    };
    if !matches!(cli.command, Command::Serve(_)) {
        keep_freed_memory();
    }
    let outcome = match cli.command {
        Command::Build(args) => build::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Optimize(args) => optimize::run(*args),
        Command::Verify(args) => verify::run(args),
        Command::Keygen(args) => pack::run_keygen(args),
        Command::Pack(args) => pack::run_pack(args),
        Command::Unpack(args) => pack::run_unpack(args),
        Command::Serve(args) => serve::run(args),
        Command::Completions(args) => completions(args),
        Command::Manpage => manpage(),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => report_error(&e),
    }
}

fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "mdeploy", &mut out);
    printer::print_stdout(&String::from_utf8_lossy(&out))?;
    Ok(ExitCode::SUCCESS)
}

fn manpage() -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    let cmd = Cli::command();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    for sub in cmd.get_subcommands() {
        out.extend_from_slice(b"\n");
        let name: &'static str = Box::leak(format!("mdeploy-{}", sub.get_name()).into_boxed_str());
        clap_mangen::Man::new(sub.clone().name(name)).render(&mut out)?;
    }
    printer::print_stdout(&String::from_utf8_lossy(&out))?;
    Ok(ExitCode::SUCCESS)
}
