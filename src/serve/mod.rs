//! `mdeploy serve`: signed archives served over the Open Inference Protocol (KServe v2), REST on
//! one port and gRPC on another, with Prometheus metrics, dynamic batching, backpressure and a
//! clean drain on SIGTERM.
//!
//! Every archive is verified (digests and signature) and unpacked before anything of it is
//! loaded; only its model and external data are used. Inference runs on each model's worker
//! threads ([`model`]); the async front ends ([`rest`], [`grpc`]) only parse, queue and answer.

pub mod grpc;
pub mod metrics;
pub mod model;
pub mod rest;
pub mod tensor;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use p256::ecdsa::VerifyingKey;

use crate::error::CheckFailed;
use crate::run::NamedTensor;
use metrics::Metrics;
use model::{InferError, Job, PoolOptions, ServedModel};

/// Everything `serve` needs.
#[derive(Clone)]
pub struct ServeOptions {
    pub archives: Vec<PathBuf>,
    pub key: Option<VerifyingKey>,
    pub allow_unsigned: bool,
    pub host: String,
    pub http_port: u16,
    pub grpc_port: u16,
    pub pool: PoolOptions,
    /// Largest REST request body.
    pub max_request_bytes: usize,
    /// Inference requests admitted at once, server-wide (bodies being read included): with the
    /// body limit, this bounds the memory requests can take.
    pub max_in_flight: usize,
    /// Largest gRPC message, both ways.
    pub grpc_max_message_bytes: usize,
    pub request_timeout: Duration,
    pub drain_timeout: Duration,
    /// Bearer token every request but the health checks must carry.
    pub auth_token: Option<String>,
    /// A directory polled for new archives.
    pub watch: Option<PathBuf>,
    /// TLS for both ports.
    pub tls: Option<tls::TlsPem>,
    pub watch_interval: Duration,
    /// One log line per request (the debug level).
    pub log_requests: bool,
}

/// The shared state of a running server.
pub struct Server {
    models: RwLock<BTreeMap<String, BTreeMap<semver::Version, Arc<ServedModel>>>>,
    pub metrics: Arc<Metrics>,
    draining: AtomicBool,
    /// Inference requests admitted and not yet answered (the drain waits for none).
    admitted: AtomicUsize,
    pub options: ServeOptions,
}

/// An admitted inference request; dropping it (answered or abandoned) ends it.
pub struct Admission<'a>(&'a AtomicUsize);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A log line on stderr.
pub fn log(message: &str) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    eprintln!("{now:.3} mdeploy serve: {message}");
}

impl Server {
    fn add(&self, model: ServedModel) {
        let model = Arc::new(model);
        if let Ok(mut m) = self.models.write()
            && let Some(old) = m
                .entry(model.name.clone())
                .or_default()
                .insert(model.version.clone(), model.clone())
        {
            log(&format!(
                "{} {} from {} replaces the one from {}",
                model.name,
                model.version,
                model.archive.display(),
                old.archive.display()
            ));
        }
    }

    /// A model by name, and version (default: the highest).
    pub fn model(&self, name: &str, version: Option<&str>) -> Result<Arc<ServedModel>, InferError> {
        let models = self
            .models
            .read()
            .map_err(|_| InferError::Failed("model registry poisoned".into()))?;
        let versions = models
            .get(name)
            .ok_or_else(|| InferError::NotFound(format!("no model '{name}'")))?;
        match version.filter(|v| !v.is_empty()) {
            None => versions
                .values()
                .next_back()
                .cloned()
                .ok_or_else(|| InferError::NotFound(format!("no model '{name}'"))),
            Some(v) => {
                let parsed = semver::Version::parse(v).map_err(|_| {
                    InferError::NotFound(format!("model '{name}' has no version '{v}'"))
                })?;
                versions.get(&parsed).cloned().ok_or_else(|| {
                    InferError::NotFound(format!("model '{name}' has no version '{v}'"))
                })
            }
        }
    }

    /// Every version of a model, lowest first.
    pub fn versions(&self, name: &str) -> Vec<String> {
        self.models
            .read()
            .map(|m| {
                m.get(name)
                    .map(|v| v.keys().map(|k| k.to_string()).collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// Every model served, as (name, version).
    pub fn served(&self) -> Vec<(String, String)> {
        self.models
            .read()
            .map(|m| {
                m.iter()
                    .flat_map(|(n, vs)| vs.keys().map(move |v| (n.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Admits an inference request as it arrives, before its body is read: one that arrived
    /// before a SIGTERM is answered, one after it is refused (503, UNAVAILABLE).
    pub fn admit(&self) -> Result<Admission<'_>, InferError> {
        let before = self.admitted.fetch_add(1, Ordering::SeqCst);
        let admission = Admission(&self.admitted);
        if self.is_draining() {
            return Err(InferError::Draining);
        }
        if before >= self.options.max_in_flight {
            return Err(InferError::Overloaded(format!(
                "{} requests in flight, the most --max-in-flight allows",
                self.options.max_in_flight
            )));
        }
        Ok(admission)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Ready: every model loaded (the server starts serving only then), at least one model
    /// served (a watched directory may have none yet), and not draining.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && !self.served().is_empty()
    }

    /// Runs one inference: checks the inputs, queues them for the model's workers and waits
    /// for the answer (up to the request timeout); `requested` outputs only when given.
    pub async fn infer(
        &self,
        model: &Arc<ServedModel>,
        inputs: Vec<NamedTensor>,
        requested: &[String],
    ) -> Result<Vec<NamedTensor>, InferError> {
        let mut observed = Observed::new(self, model);
        let result = self.infer_unobserved(model, inputs, requested).await;
        observed.outcome = Some(match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(reason(e)),
        });
        result
    }

    /// Records an inference request refused before a model was chosen.
    pub fn refuse(&self, error: &InferError) {
        self.metrics.refuse(reason(error));
    }

    /// Records a request for `model` refused before inference (its body did not decode).
    pub fn reject(&self, model: &ServedModel, error: &InferError) {
        let mut observed = Observed::new(self, model);
        observed.outcome = Some(Err(reason(error)));
    }

    async fn infer_unobserved(
        &self,
        model: &Arc<ServedModel>,
        inputs: Vec<NamedTensor>,
        requested: &[String],
    ) -> Result<Vec<NamedTensor>, InferError> {
        for r in requested {
            if !model.outputs.iter().any(|o| &o.name == r) {
                return Err(InferError::BadRequest(format!(
                    "model '{}' has no output '{r}'",
                    model.name
                )));
            }
        }
        model.check_inputs(&inputs)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        model.submit(Job {
            inputs,
            reply: tx,
            enqueued: Instant::now(),
        })?;
        let timeout = self.options.request_timeout;
        let outputs = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(InferError::Failed("the worker stopped".into())),
            Err(_) => return Err(InferError::Timeout(timeout)),
        };
        Ok(if requested.is_empty() {
            outputs
        } else {
            requested
                .iter()
                .filter_map(|r| outputs.iter().find(|o| &o.name == r).cloned())
                .collect()
        })
    }
}

/// The metrics label of a failure.
fn reason(e: &InferError) -> &'static str {
    match e {
        InferError::BadRequest(_) => "bad_request",
        InferError::NotFound(_) => "not_found",
        InferError::Overloaded(_) => "overloaded",
        InferError::Draining => "draining",
        InferError::Timeout(_) => "timeout",
        InferError::Failed(_) => "failed",
        InferError::Unauthorized => "unauthorized",
    }
}

/// A request counted in flight until dropped; it records its outcome then, or `abandoned` when
/// the client went away before the answer (the request's future was dropped).
struct Observed<'a> {
    server: &'a Server,
    label: metrics::Label,
    start: Instant,
    outcome: Option<Result<(), &'static str>>,
}

impl<'a> Observed<'a> {
    fn new(server: &'a Server, model: &ServedModel) -> Self {
        let label = (model.name.clone(), model.version.to_string());
        server.metrics.start(&label);
        Observed {
            server,
            label,
            start: Instant::now(),
            outcome: None,
        }
    }
}

impl Drop for Observed<'_> {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or(Err("abandoned"));
        let took = self.start.elapsed();
        self.server.metrics.finish(&self.label, outcome, took);
        if self.server.options.log_requests {
            log(&format!(
                "request model={} version={} status={} ms={:.3}",
                self.label.0,
                self.label.1,
                match outcome {
                    Ok(()) => "success",
                    Err(reason) => reason,
                },
                took.as_secs_f64() * 1e3
            ));
        }
    }
}

/// Loads one archive, naming it in any error (a refused archive is a failed check: exit 1).
fn load(path: &Path, options: &ServeOptions, metrics: Arc<Metrics>) -> anyhow::Result<ServedModel> {
    model::load_archive(
        path,
        options.key.as_ref(),
        options.allow_unsigned,
        &options.pool,
        metrics,
    )
    .map_err(|e| {
        let causes: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        CheckFailed(format!(
            "archive {} refused: {}",
            path.display(),
            causes.join(": ")
        ))
        .into()
    })
}

/// Binds a listening port; a port in use or a bad host is the caller's to fix.
async fn listen(
    host: &str,
    port: u16,
) -> Result<tokio::net::TcpListener, crate::error::UsageError> {
    tokio::net::TcpListener::bind((host, port))
        .await
        .map_err(|e| crate::error::UsageError(format!("cannot listen on {host}:{port}: {e}")))
}

/// Where the server listens, once it does.
#[derive(Debug, Clone)]
pub struct Bound {
    pub http: std::net::SocketAddr,
    pub grpc: std::net::SocketAddr,
}

/// Verifies and loads every archive, then serves until SIGTERM or SIGINT, then drains.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let server = Arc::new(Server {
        models: RwLock::new(BTreeMap::new()),
        metrics: metrics.clone(),
        draining: AtomicBool::new(false),
        admitted: AtomicUsize::new(0),
        options: options.clone(),
    });
    // the signals are caught from the start: one during loading stops it (the archive being
    // loaded finishes, no other is started) and exits 0 without serving
    let mut stop = std::pin::pin!(shutdown_signal()?);
    let seen = tokio::select! {
        loaded = load_initial(&server, &options) => loaded?,
        _ = &mut stop => {
            log("stopped while loading; exiting without serving");
            return Ok(());
        }
    };
    let http = listen(&options.host, options.http_port).await?;
    let grpc = listen(&options.host, options.grpc_port).await?;
    let bound = Bound {
        http: http.local_addr()?,
        grpc: grpc.local_addr()?,
    };
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    log(&format!(
        "serving {} model(s): REST on {scheme}://{}, gRPC on {}{}",
        server.served().len(),
        bound.http,
        bound.grpc,
        if options.tls.is_some() { " (TLS)" } else { "" }
    ));
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    health
        .set_service_status(grpc::SERVICE_NAME, tonic_health::ServingStatus::Serving)
        .await;
    let rest = tokio::spawn(rest::run(
        server.clone(),
        http,
        wait_for(shutdown_rx.clone()),
    ));
    let grpc_task = tokio::spawn(grpc::run(
        server.clone(),
        grpc,
        health_service,
        wait_for(shutdown_rx.clone()),
    ));
    if let Some(dir) = options.watch.clone() {
        tokio::spawn(watch(
            server.clone(),
            dir,
            seen,
            wait_for(shutdown_rx.clone()),
        ));
    }
    // a front end that stops by itself (it cannot accept any more) ends the server: a process
    // that cannot serve must not stay up looking ready
    let mut rest = rest;
    let mut grpc_task = grpc_task;
    let failed = tokio::select! {
        _ = &mut stop => None,
        _ = &mut rest => Some("REST"),
        _ = &mut grpc_task => Some("gRPC"),
    };
    if let Some(which) = failed {
        server.draining.store(true, Ordering::SeqCst);
        let _ = shutdown_tx.send(true);
        return Err(anyhow::anyhow!(
            "the {which} server stopped; shutting down (see the log above)"
        ));
    }
    // readiness goes false at once; in-flight requests finish; then the listeners close
    server.draining.store(true, Ordering::SeqCst);
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    health
        .set_service_status(grpc::SERVICE_NAME, tonic_health::ServingStatus::NotServing)
        .await;
    log("draining: not ready; waiting for requests in flight");
    let deadline = Instant::now() + options.drain_timeout;
    while server.admitted.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = server.admitted.load(Ordering::SeqCst);
    let _ = shutdown_tx.send(true);
    // connections still open (a slow upload, a client that keeps its connection) get a moment
    let grace = Duration::from_secs(2);
    let _ = tokio::time::timeout(grace, &mut rest).await;
    let _ = tokio::time::timeout(grace, &mut grpc_task).await;
    if left > 0 {
        log(&format!(
            "drain timeout: {left} request(s) still in flight were abandoned"
        ));
    } else {
        log("drained; exiting");
    }
    Ok(())
}

/// Resolves when the shutdown flag turns true.
async fn wait_for(mut rx: tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves at the first SIGTERM or SIGINT. The handlers are installed when this is called, so
/// a signal that comes before the future is first polled is not lost (nor kills the process).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => log("SIGINT"),
                _ = term.recv() => log("SIGTERM"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            log("interrupted");
        })
    }
}

/// Verifies and loads every archive named, then those already in a watched directory, before
/// anything listens (ready means ready); gives the watcher what it has seen.
async fn load_initial(
    server: &Arc<Server>,
    options: &ServeOptions,
) -> anyhow::Result<HashMap<PathBuf, (SystemTime, u64)>> {
    for path in &options.archives {
        log(&format!("verifying and loading {}", path.display()));
        let opts = options.clone();
        let p = path.clone();
        let m = server.metrics.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&p, &opts, m)).await??;
        log(&format!(
            "loaded {} {} from {} ({} engine, {} workers{})",
            loaded.name,
            loaded.version,
            path.display(),
            loaded.engine,
            options.pool.workers,
            if loaded.batchable && options.pool.max_batch > 1 {
                format!(", batches up to {}", options.pool.max_batch)
            } else {
                String::new()
            }
        ));
        server.add(loaded);
    }
    let mut seen = HashMap::new();
    if let Some(dir) = &options.watch {
        for p in &options.archives {
            if let Some((abs, stamp)) = stamp_of(p) {
                seen.insert(abs, stamp);
            }
        }
        load_new(server, dir, &mut seen).await;
    }
    Ok(seen)
}

/// A file's identity for the watcher: its absolute path, modification time and size.
fn stamp_of(p: &Path) -> Option<(PathBuf, (SystemTime, u64))> {
    let m = std::fs::metadata(p).ok()?;
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    Some((abs, (m.modified().ok()?, m.len())))
}

/// Loads the archives of `dir` not seen yet (or changed since); a bad one is logged and not
/// retried until it changes.
async fn load_new(
    server: &Arc<Server>,
    dir: &Path,
    seen: &mut HashMap<PathBuf, (SystemTime, u64)>,
) {
    let mut entries: Vec<(PathBuf, (SystemTime, u64))> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "mdpkg"))
                // regular files only: reading a FIFO would block the watcher
                .filter(|p| p.metadata().is_ok_and(|m| m.is_file()))
                .filter_map(|p| stamp_of(&p))
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    for (path, stamp) in entries {
        if seen.get(&path) == Some(&stamp) {
            continue;
        }
        seen.insert(path.clone(), stamp);
        let opts = server.options.clone();
        let m = server.metrics.clone();
        let p = path.clone();
        match tokio::task::spawn_blocking(move || load(&p, &opts, m)).await {
            Ok(Ok(model)) => {
                log(&format!(
                    "watch: loaded {} {} from {}",
                    model.name,
                    model.version,
                    path.display()
                ));
                server.add(model);
            }
            Ok(Err(e)) => log(&format!("watch: {e}")),
            Err(e) => log(&format!("watch: loading {} failed: {e}", path.display())),
        }
    }
}

/// Polls `dir` for archives: a new one (or a changed file) is verified and loaded beside what
/// serves (a new highest version becomes the default); a bad one is logged and ignored.
async fn watch(
    server: Arc<Server>,
    dir: PathBuf,
    mut seen: HashMap<PathBuf, (SystemTime, u64)>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(server.options.watch_interval) => {}
        }
        load_new(&server, &dir, &mut seen).await;
    }
}
