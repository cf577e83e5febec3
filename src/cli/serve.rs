//! `mdeploy serve ARCHIVE... --key PUB [--host H] [--http-port P] [--grpc-port P] ...`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use mdeploy::pack::keys::load_verifying_key;
use mdeploy::serve::model::PoolOptions;
use mdeploy::serve::{ServeOptions, serve};

use super::printer::UsageError;

/// Serve signed archives over the Open Inference Protocol (KServe v2): REST and gRPC, with
/// Prometheus metrics, dynamic batching, backpressure and a clean drain on SIGTERM.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mdeploy serve build/rnet-1.0.0.mdpkg --key keys/mdeploy.pub
  mdeploy serve a-1.0.0.mdpkg a-1.1.0.mdpkg --key release.pub --host 0.0.0.0
  mdeploy serve --watch /models --key release.pub --max-batch 16 --batch-delay-us 2000
  curl localhost:8000/v2/models/rnet   # metadata; POST .../infer to run it

Every archive is verified (digests and signature) before anything is loaded; a bad one stops the
server at start (exit 1) or, with --watch, is logged and ignored. SIGTERM or SIGINT: readiness
goes false, requests in flight finish (up to --drain-timeout), exit 0.")]
pub struct ServeArgs {
    /// Archives to serve (several versions of one model are served side by side).
    archives: Vec<PathBuf>,
    /// Public key (PEM) every archive must be signed with.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Serve archives without a signature (digests are still checked).
    #[arg(long)]
    allow_unsigned: bool,
    /// Address to listen on (0.0.0.0 in a container).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// REST port (Triton's default).
    #[arg(long, default_value_t = 8000)]
    http_port: u16,
    /// gRPC port (Triton's default).
    #[arg(long, default_value_t = 8001)]
    grpc_port: u16,
    /// Engine: tract, ort or auto.
    #[arg(long, default_value = "auto")]
    engine: String,
    /// Inference threads per model (default: the number of cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Requests queued per model beyond those running; more are refused (429,
    /// RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = 64)]
    queue_size: usize,
    /// Dynamic batching: the most rows one engine call takes (1: off). Only for models whose
    /// inputs and outputs all have a dynamic first axis.
    #[arg(long, default_value_t = 1)]
    max_batch: usize,
    /// Dynamic batching: how long a worker waits for more requests to batch.
    #[arg(long, default_value_t = 1000)]
    batch_delay_us: u64,
    /// Largest REST request body, bytes (larger: 413).
    #[arg(long, default_value_t = 64 << 20)]
    max_request_bytes: usize,
    /// Inference requests accepted at once, server-wide, bodies being read included (more:
    /// 429, RESOURCE_EXHAUSTED); with the body limit it bounds the memory requests take.
    #[arg(long, default_value_t = 128)]
    max_in_flight: usize,
    /// Largest gRPC message, bytes, both ways.
    #[arg(long, default_value_t = 64 << 20)]
    grpc_max_message_bytes: usize,
    /// Per-request timeout, milliseconds: for the headers (else the connection closes), for the
    /// body (408), and for the answer once queued (504, DEADLINE_EXCEEDED).
    #[arg(long, default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// How long requests in flight may take to finish after SIGTERM, seconds.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
    /// A file holding the bearer token every request but the health checks must carry.
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<PathBuf>,
    /// Poll this directory for new archives (.mdpkg) and load them beside what serves.
    #[arg(long, value_name = "DIR")]
    watch: Option<PathBuf>,
    /// How often --watch polls, milliseconds.
    #[arg(long, default_value_t = 2000)]
    watch_interval_ms: u64,
    /// Log level: info (loading, watching, draining) or debug (also one line per request).
    #[arg(long, default_value = "info", value_parser = ["info", "debug"])]
    log_level: String,
    /// TLS on both ports: the certificate chain (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS: the certificate's private key (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.archives.is_empty() && args.watch.is_none() {
        return Err(UsageError("serve takes archives to serve (or --watch DIR)".into()).into());
    }
    let key = args.key.as_deref().map(load_verifying_key).transpose()?;
    if key.is_none() && !args.allow_unsigned {
        return Err(UsageError(
            "give --key PUB to verify the archives' signatures, or --allow-unsigned".into(),
        )
        .into());
    }
    let auth_token = match &args.auth_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(UsageError(format!("{}: the token is empty", path.display())).into());
            }
            Some(token)
        }
        None => None,
    };
    if let Some(dir) = &args.watch
        && !dir.is_dir()
    {
        return Err(UsageError(format!("--watch {}: not a directory", dir.display())).into());
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| UsageError(format!("{}: {e}", p.display())))
            };
            let pem = mdeploy::serve::tls::TlsPem {
                cert: read(cert)?,
                key: read(key)?,
            };
            // a bad pair is a usage error now, not a log line once serving
            mdeploy::serve::tls::rest_config(&pem)?;
            Some(pem)
        }
        _ => None,
    };
    let engine = args
        .engine
        .parse::<mdeploy::run::EngineChoice>()
        .map_err(UsageError)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = ServeOptions {
        archives: args.archives.clone(),
        key,
        allow_unsigned: args.allow_unsigned,
        host: args.host.clone(),
        http_port: args.http_port,
        grpc_port: args.grpc_port,
        pool: PoolOptions {
            workers: args.workers.unwrap_or(cores).max(1),
            queue_size: args.queue_size.max(1),
            max_batch: args.max_batch.max(1),
            batch_delay: Duration::from_micros(args.batch_delay_us),
            engine,
        },
        max_request_bytes: args.max_request_bytes,
        max_in_flight: args.max_in_flight.max(1),
        grpc_max_message_bytes: args.grpc_max_message_bytes,
        request_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
        drain_timeout: Duration::from_secs(args.drain_timeout),
        auth_token,
        watch: args.watch.clone(),
        watch_interval: Duration::from_millis(args.watch_interval_ms.max(50)),
        log_requests: args.log_level == "debug",
        tls,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.clamp(1, 4))
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))?;
    runtime.block_on(serve(options))?;
    Ok(ExitCode::SUCCESS)
}
