//! A served model: an archive verified and unpacked into a private directory, its model loaded
//! in one engine per worker thread, and a bounded queue in front of the workers. Inference runs
//! on these threads, never on the async runtime; a full queue is refused (backpressure), not
//! buffered. With dynamic batching, a worker that takes a request waits up to the batch delay for
//! more requests of the same shapes and runs them as one batch along the first axis.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use p256::ecdsa::VerifyingKey;
use tract_onnx::prelude::Tensor;

use super::metrics::Metrics;
use super::tensor::onnx_datatype_name;
use crate::onnx::Model;
use crate::run::{Dim, Engine, EngineChoice, EngineKind, NamedTensor, ValueShape};

/// What a request can fail with, mapped to HTTP statuses and gRPC codes by the front ends.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InferError {
    /// The request is malformed or does not fit the model (400, INVALID_ARGUMENT).
    #[error("{0}")]
    BadRequest(String),
    /// No such model or version (404, NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// The queue is full (429, RESOURCE_EXHAUSTED).
    #[error("the server is overloaded ({0}); retry later")]
    Overloaded(String),
    /// The server is draining (503, UNAVAILABLE).
    #[error("the server is shutting down")]
    Draining,
    /// No answer within the request timeout (504, DEADLINE_EXCEEDED).
    #[error("no result within the request timeout of {0:?}")]
    Timeout(Duration),
    /// The engine failed (500, INTERNAL).
    #[error("inference failed: {0}")]
    Failed(String),
    /// No bearer token, or a wrong one (401, UNAUTHENTICATED).
    #[error("missing or wrong bearer token")]
    Unauthorized,
}

/// A tensor as the protocol's metadata describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorMeta {
    pub name: String,
    pub datatype: String,
    /// -1 for a dynamic dimension.
    pub shape: Vec<i64>,
}

/// How each model is served.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub workers: usize,
    /// Requests queued per model beyond those running.
    pub queue_size: usize,
    /// Largest batch (sum of the requests' first dims); 1: no batching.
    pub max_batch: usize,
    pub batch_delay: Duration,
    pub engine: EngineChoice,
}

/// One request waiting for a worker.
pub struct Job {
    pub inputs: Vec<NamedTensor>,
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<NamedTensor>, InferError>>,
    pub enqueued: Instant,
}

/// A model being served.
pub struct ServedModel {
    pub name: String,
    pub version: semver::Version,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
    pub engine: EngineKind,
    pub archive: PathBuf,
    /// Every input and output has a dynamic first axis: requests can be batched along it.
    pub batchable: bool,
    queue: Sender<Job>,
    /// The unpacked archive (removed when the model is dropped).
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for ServedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

fn meta(name: &str, dtype: Option<crate::onnx::DataType>, shape: &ValueShape) -> TensorMeta {
    TensorMeta {
        name: name.to_string(),
        datatype: dtype.map_or("UNSUPPORTED", onnx_datatype_name).to_string(),
        shape: match shape {
            ValueShape::UnknownRank => vec![],
            ValueShape::Known(dims) => dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(v) => *v,
                    _ => -1,
                })
                .collect(),
        },
    }
}

/// The named dim on a shape's first axis.
fn first_symbol(shape: &ValueShape) -> Option<&str> {
    match shape {
        ValueShape::Known(d) => match d.first() {
            Some(Dim::Symbol(s)) => Some(s.as_str()),
            _ => None,
        },
        ValueShape::UnknownRank => None,
    }
}

/// Verifies and unpacks an archive, loads its model in an engine per worker, and starts the
/// workers. Nothing from the archive but the model and its external data is used.
pub fn load_archive(
    path: &Path,
    key: Option<&VerifyingKey>,
    allow_unsigned: bool,
    options: &PoolOptions,
    metrics: Arc<Metrics>,
) -> anyhow::Result<ServedModel> {
    let dir = tempfile::Builder::new()
        .prefix("mdeploy-serve-")
        .tempdir()
        .map_err(|e| anyhow::anyhow!("a directory for {}: {e}", path.display()))?;
    let unpacked = dir.path().join("archive");
    let summary = crate::pack::unpack(path, Some(&unpacked), key, allow_unsigned)?;
    let manifest = summary.manifest;
    let version = semver::Version::parse(&manifest.version)
        .map_err(|e| anyhow::anyhow!("version '{}': {e}", manifest.version))?;
    // the entry point must be one of the verified files, inside the archive
    let entry = &manifest.model.entry_point;
    let inside = std::path::Path::new(entry)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !inside || !manifest.files.iter().any(|f| &f.path == entry) {
        anyhow::bail!("the manifest's entry point '{entry}' is not a file of the archive");
    }
    if summary.signature != "verified" {
        super::log(&format!(
            "{}: unsigned archive accepted (--allow-unsigned)",
            path.display()
        ));
    }
    let model = Model::load(&unpacked.join(entry))?;
    crate::graph::check_model(&model)?;
    let inputs_desc = crate::run::graph_inputs(&model);
    let inputs: Vec<TensorMeta> = inputs_desc
        .iter()
        .map(|i| meta(&i.name, i.dtype, &i.shape))
        .collect();
    let outputs_info: Vec<(String, Option<crate::onnx::DataType>, ValueShape)> = model
        .graph()
        .output
        .iter()
        .map(|o| {
            (
                o.name().to_string(),
                ValueShape::elem_type(o),
                ValueShape::of(o),
            )
        })
        .collect();
    let outputs: Vec<TensorMeta> = outputs_info
        .iter()
        .map(|(n, d, s)| meta(n, *d, s))
        .collect();
    // batchable: one named dim leads every input and output (an unnamed or differently named
    // first axis may not be a batch of independent rows)
    let batch_symbol = inputs_desc.first().and_then(|i| first_symbol(&i.shape));
    let batchable = batch_symbol.is_some()
        && inputs_desc
            .iter()
            .all(|i| first_symbol(&i.shape) == batch_symbol)
        && outputs_info
            .iter()
            .all(|(_, _, s)| first_symbol(s) == batch_symbol);
    let workers = options.workers.max(1);
    let mut engines = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut engine = Engine::load_serving(&model, options.engine)?;
        // batches come in every row count up to the largest: room for each, twice over
        engine.limit_plans(crate::run::PLANS_KEPT.max(2 * options.max_batch));
        engines.push(engine);
    }
    let engine = engines[0].kind();
    let (tx, rx) = crossbeam_channel::bounded::<Job>(options.queue_size.max(1));
    let label = (manifest.name.clone(), manifest.version.clone());
    for (k, engine) in engines.into_iter().enumerate() {
        let rx = rx.clone();
        let batch = if batchable {
            options.max_batch.max(1)
        } else {
            1
        };
        let delay = options.batch_delay;
        let metrics = metrics.clone();
        let label = label.clone();
        std::thread::Builder::new()
            .name(format!("{}-{k}", manifest.name))
            .spawn(move || worker(engine, rx, batch, delay, &metrics, &label))
            .map_err(|e| anyhow::anyhow!("starting a worker: {e}"))?;
    }
    Ok(ServedModel {
        name: manifest.name,
        version,
        inputs,
        outputs,
        engine,
        archive: path.to_path_buf(),
        batchable,
        queue: tx,
        _dir: dir,
    })
}

impl ServedModel {
    /// Checks a request's inputs against the model: names, datatypes, ranks and fixed dims.
    pub fn check_inputs(&self, given: &[NamedTensor]) -> Result<(), InferError> {
        if given.len() != self.inputs.len() {
            let want: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(InferError::BadRequest(format!(
                "model '{}' takes {} inputs ({}), the request gives {}",
                self.name,
                want.len(),
                want.join(", "),
                given.len()
            )));
        }
        for t in given {
            let Some(m) = self.inputs.iter().find(|i| i.name == t.name) else {
                return Err(InferError::BadRequest(format!(
                    "model '{}' has no input '{}'",
                    self.name, t.name
                )));
            };
            let dt = super::tensor::datatype_name(t.tensor.datum_type()).unwrap_or("?");
            if dt != m.datatype {
                return Err(InferError::BadRequest(format!(
                    "input '{}' is {}, the model takes {}",
                    t.name, dt, m.datatype
                )));
            }
            let shape = t.tensor.shape();
            let fits = m.shape.is_empty()
                || (shape.len() == m.shape.len()
                    && shape
                        .iter()
                        .zip(&m.shape)
                        .all(|(&g, &w)| w < 0 || g as i64 == w));
            if !fits {
                return Err(InferError::BadRequest(format!(
                    "input '{}' has shape {:?}, the model takes {:?} (-1: any)",
                    t.name, shape, m.shape
                )));
            }
        }
        Ok(())
    }

    /// Queues a request; a full queue is refused at once.
    pub fn submit(&self, job: Job) -> Result<(), InferError> {
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(InferError::Overloaded(format!(
                "the queue of model '{}' is full",
                self.name
            ))),
            Err(TrySendError::Disconnected(_)) => {
                Err(InferError::Failed("the model's workers stopped".into()))
            }
        }
    }
}

/// A worker: takes requests (a batch of them when batching), runs them, replies.
fn worker(
    mut engine: Engine,
    rx: Receiver<Job>,
    max_batch: usize,
    delay: Duration,
    metrics: &Metrics,
    label: &(String, String),
) {
    // a request that did not fit the previous batch starts the next one
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let mut jobs = vec![first];
        if max_batch > 1 {
            let deadline = Instant::now() + delay;
            let mut rows = batch_rows(&jobs[0]);
            while rows < max_batch {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match rx.recv_timeout(deadline - now) {
                    Ok(j) if rows + batch_rows(&j) > max_batch => {
                        carry = Some(j);
                        break;
                    }
                    Ok(j) => {
                        rows += batch_rows(&j);
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
        }
        // requests whose client gave up (timed out) are not run
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let now = Instant::now();
        for j in &jobs {
            metrics.observe_queue(label, now.duration_since(j.enqueued));
        }
        // a panic inside an engine fails these requests, not the worker
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_jobs(&mut engine, jobs, metrics, label)
        }));
        if outcome.is_err() {
            super::log(&format!(
                "a worker of {} {} recovered from a panic in the engine",
                label.0, label.1
            ));
        }
    }
}

/// The rows a request brings to a batch: the first dim its inputs share (1 when they do not
/// share one; such a request never stacks).
fn batch_rows(job: &Job) -> usize {
    let mut dims = job.inputs.iter().map(|t| t.tensor.shape().first().copied());
    match dims.next().flatten() {
        Some(d) if dims.all(|o| o == Some(d)) => d,
        _ => 1,
    }
}

/// Whether every input of the request has the same first dim.
fn uniform_rows(job: &Job) -> bool {
    let mut dims = job.inputs.iter().map(|t| t.tensor.shape().first().copied());
    match dims.next().flatten() {
        Some(d) => dims.all(|o| o == Some(d)),
        None => false,
    }
}

/// Runs jobs: as one batch when they stack (same names, types and trailing dims), else one by one.
fn run_jobs(engine: &mut Engine, jobs: Vec<Job>, metrics: &Metrics, label: &(String, String)) {
    if jobs.len() > 1
        && let Some(stacked) = stack(&jobs)
    {
        metrics.observe_batch(label, jobs.len());
        match engine.run(&stacked) {
            Ok(outputs) => {
                if let Some(split) = split(&outputs, &jobs) {
                    for (job, out) in jobs.into_iter().zip(split) {
                        let _ = job.reply.send(Ok(out));
                    }
                    return;
                }
                // outputs that do not split along the batch: run each alone
            }
            Err(_) => {
                // one request's data may be at fault: run each alone to blame only it
            }
        }
    } else {
        metrics.observe_batch(label, 1);
    }
    for job in jobs {
        let result = engine.run(&job.inputs).map_err(|e| {
            if crate::run::is_input_problem(&e) {
                InferError::BadRequest(e.to_string())
            } else {
                InferError::Failed(e.to_string())
            }
        });
        let _ = job.reply.send(result);
    }
}

/// The jobs' inputs concatenated along the first axis, when they all fit together.
fn stack(jobs: &[Job]) -> Option<Vec<NamedTensor>> {
    if !jobs.iter().all(uniform_rows) {
        return None;
    }
    let first = &jobs[0].inputs;
    let mut out = Vec::with_capacity(first.len());
    for (k, t) in first.iter().enumerate() {
        let mut parts: Vec<Tensor> = Vec::with_capacity(jobs.len());
        for j in jobs {
            let other = j.inputs.iter().find(|o| o.name == t.name)?;
            let (a, b) = (t.tensor.shape(), other.tensor.shape());
            if a.is_empty()
                || a.len() != b.len()
                || a[1..] != b[1..]
                || t.tensor.datum_type() != other.tensor.datum_type()
            {
                return None;
            }
            parts.push(other.tensor.clone());
        }
        let stacked = Tensor::stack_tensors(0, &parts).ok()?;
        out.push(NamedTensor {
            name: first[k].name.clone(),
            tensor: stacked,
        });
    }
    Some(out)
}

/// Batch outputs split back into each job's rows.
fn split(outputs: &[NamedTensor], jobs: &[Job]) -> Option<Vec<Vec<NamedTensor>>> {
    let rows: Vec<usize> = jobs.iter().map(batch_rows).collect();
    let total: usize = rows.iter().sum();
    let mut per_job = vec![Vec::with_capacity(outputs.len()); jobs.len()];
    for o in outputs {
        if o.tensor.shape().first() != Some(&total) {
            return None;
        }
        let mut start = 0;
        for (k, r) in rows.iter().enumerate() {
            let part = o.tensor.slice(0, start, start + r).ok()?;
            per_job[k].push(NamedTensor {
                name: o.name.clone(),
                tensor: part,
            });
            start += r;
        }
    }
    Some(per_job)
}
