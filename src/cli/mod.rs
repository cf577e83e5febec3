//! The command line: clap definitions (one file per subcommand), the printer for stdout data and
//! stderr progress, and the mapping of errors to documented exit codes.

mod convert;
mod data;
mod inspect;
mod optimize;
mod pack;
mod printer;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use printer::report_error;

/// Take a trained ONNX model to a deployable artifact you can trust.
#[derive(Debug, Parser)]
// no propagate_version: `pack --version` is the model's semantic version
#[command(name = "mdeploy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Inspect(inspect::InspectArgs),
    Convert(convert::ConvertArgs),
    Optimize(optimize::OptimizeArgs),
    Verify(verify::VerifyArgs),
    Keygen(pack::KeygenArgs),
    Pack(pack::PackArgs),
    Unpack(pack::UnpackArgs),
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(printer::EXIT_USAGE),
            };
        }
    };
    let outcome = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Optimize(args) => optimize::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Keygen(args) => pack::run_keygen(args),
        Command::Pack(args) => pack::run_pack(args),
        Command::Unpack(args) => pack::run_unpack(args),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => report_error(&e),
    }
}
