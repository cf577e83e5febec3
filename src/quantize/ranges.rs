//! What a model's float values do on calibration data: the model runs in float32, through the
//! engine layer, with the values of interest exposed as extra outputs, one sample at a time.
//! Only running statistics are kept (min, max, NaN), never the activations, so memory does not
//! grow with the number of samples.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::QuantizeError;
use crate::graph::builder::value_info;
use crate::infer::Inference;
use crate::onnx::{DataType, Model};
use crate::run::{
    EngineChoice, EngineKind, Floats, GraphLevel, NamedTensor, RawOutput, SampleChunks, run_each,
    run_each_at,
};
use crate::verify::{SampleSums, Similarity};

/// The span of one value over every sample seen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValueRange {
    #[serde(deserialize_with = "crate::json::f32_neg_inf_if_null")]
    pub min: f32,
    #[serde(deserialize_with = "crate::json::f32_inf_if_null")]
    pub max: f32,
    /// Whether a NaN or an infinity was seen.
    pub non_finite: bool,
}

impl ValueRange {
    pub fn max_abs(&self) -> f32 {
        if self.non_finite {
            f32::INFINITY
        } else {
            self.min.abs().max(self.max.abs())
        }
    }

    fn empty() -> ValueRange {
        ValueRange {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            non_finite: false,
        }
    }

    fn add(&mut self, values: &[f32]) {
        // in locals, not through `self` in memory value after value
        let (mut min, mut max, mut non_finite) = (self.min, self.max, false);
        for &v in values {
            if v.is_finite() {
                min = min.min(v);
                max = max.max(v);
            } else {
                non_finite = true;
            }
        }
        (self.min, self.max) = (min, max);
        self.non_finite |= non_finite;
    }
}

/// The float32 values of `model`'s main graph computed by nodes (not inputs, not constants).
pub fn float_activations(model: &Model, facts: &Inference) -> Vec<String> {
    let g = model.graph();
    let outputs: HashSet<&str> = g.output.iter().map(|o| o.name()).collect();
    let mut seen = HashSet::new();
    g.node
        .iter()
        .filter(|n| n.op_type() != "Constant")
        .flat_map(|n| &n.output)
        .filter(|v| !v.is_empty() && facts.elem_type(v) == Some(DataType::Float))
        .filter(|v| outputs.contains(v.as_str()) || seen.insert(v.as_str()))
        .cloned()
        .collect()
}

/// The most bytes of exposed values one run returns, where the memory available is not known:
/// values beyond it are measured in further runs over the same samples. An exposed value is
/// held until its run returns (the engine cannot reuse its buffer for later values), and a text
/// detector at 640x640 computes 660 MB of float activations, four times that at 1280x1280: a
/// run exposing them all holds them all, in both models when two are compared (measured: 2.1 GB
/// peak for ppocr_v4_det's float16 search in one run a pair, 1.3 GB at 512 MB a run, 0.6 GB at
/// 128 MB, each further run costing a run of both models over every sample).
pub const EXPOSED_BYTES_PER_RUN: u64 = 512 << 20;

/// The share of the memory available that a run's exposed values may take: the peak measured
/// is about twice them (the engine's buffers and our copies) over the rest of the work, so it
/// stays near a quarter.
const AVAILABLE_SHARE: u64 = 8;

/// The bytes of exposed values a run may return on this machine now: an eighth of the memory
/// available ([`available_memory`]), at least 128 MB; [`EXPOSED_BYTES_PER_RUN`] where that is
/// not known. How values are split among runs changes no measure, only time and memory.
fn exposed_bytes_per_run() -> u64 {
    match available_memory() {
        Some(bytes) => (bytes / AVAILABLE_SHARE).max(128 << 20),
        None => EXPOSED_BYTES_PER_RUN,
    }
}

/// The memory this process may still take, on Linux: the least of the system's `MemAvailable`
/// and what its memory cgroup's limit leaves (a container's limit, which `/proc/meminfo` does
/// not show), cgroup v2 or v1.
fn available_memory() -> Option<u64> {
    available_memory_in(|path| std::fs::read_to_string(path).ok())
}

/// [`available_memory`] with the files as `read` gives them.
fn available_memory_in(read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let number = |text: Option<String>| text?.trim().parse::<u64>().ok();
    let system = read("/proc/meminfo").and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb.saturating_mul(1024))
    });
    // "0::/path" (v2) or "N:...memory...:/path" (v1), limited by its own limit and those of
    // the groups above it (inside a container's namespace the path is its root)
    let cgroups = read("/proc/self/cgroup").unwrap_or_default();
    let read = &read;
    let left = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (root, limit, usage) = if controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                "/sys/fs/cgroup/memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            return None;
        };
        // the usage counts the page cache, of which the inactive files' pages are reclaimed
        // before the limit is hit (a model file just read)
        let cache = if controllers.is_empty() {
            "inactive_file"
        } else {
            "total_inactive_file"
        };
        let dir = format!("{root}{}", path.trim_end_matches('/'));
        std::path::Path::new(&dir)
            .ancestors()
            .take_while(|d| d.starts_with(root))
            .filter_map(|d| {
                let file = |name: &str| read(&format!("{}/{name}", d.display()));
                // "max" (v2) or a number near 2^63 (v1) is no limit
                let limit = number(file(limit))?;
                let usage = number(file(usage))?;
                let reclaimable = file("memory.stat")
                    .and_then(|stat| {
                        stat.lines()
                            .find_map(|l| l.strip_prefix(cache)?.strip_prefix(' ')?.parse().ok())
                    })
                    .unwrap_or(0);
                Some(limit.saturating_sub(usage.saturating_sub(reclaimable)))
            })
            .min()
    });
    match (system, left) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How the values to measure are split among runs so that none returns more than a budget of
/// them: each value's size at the shapes of the largest sample.
#[derive(Debug, Clone)]
pub struct Exposure {
    bytes: HashMap<String, u64>,
    budget: u64,
}

impl Exposure {
    /// The sizes of `model`'s values with its inputs at the shapes of the largest sample of
    /// `sets` (the most input elements; every set is read through), the model left as it was;
    /// a run's budget from the memory available ([`exposed_bytes_per_run`]).
    pub fn at(
        model: &mut Model,
        sets: &[&dyn SampleChunks],
    ) -> Result<Exposure, crate::run::RunError> {
        let mut largest: Option<(usize, Vec<NamedTensor>)> = None;
        for set in sets {
            set.each_chunk(&mut |chunk| {
                for s in chunk {
                    let n = s.iter().map(|t| t.tensor.len()).sum::<usize>();
                    if largest.as_ref().is_none_or(|(m, _)| n > *m) {
                        largest = Some((n, s.to_vec()));
                    }
                }
                Ok(())
            })?;
        }
        let facts = super::facts_at(model, largest.as_ref().map(|(_, s)| s.as_slice()));
        let bytes = facts
            .iter()
            .filter_map(|(name, fact)| {
                let elements = fact
                    .static_shape()?
                    .iter()
                    .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))?;
                let bytes = fact.elem_type?.raw_len(elements)?;
                Some((name.clone(), bytes as u64))
            })
            .collect();
        Ok(Exposure {
            bytes,
            budget: exposed_bytes_per_run(),
        })
    }

    /// The same sizes with another budget a run.
    #[cfg(test)]
    pub(super) fn with_budget(self, budget: u64) -> Exposure {
        Exposure { budget, ..self }
    }

    /// Every value in one run, whatever its size.
    pub fn unbounded() -> Exposure {
        Exposure {
            bytes: HashMap::new(),
            budget: u64::MAX,
        }
    }

    /// The bytes of `values` together, where the size of each is known.
    fn known_bytes<'v>(&self, mut values: impl Iterator<Item = &'v String>) -> Option<u64> {
        values.try_fold(0u64, |sum, v| Some(sum.saturating_add(*self.bytes.get(v)?)))
    }

    /// `values` in consecutive runs (one at least) of at most the budget's bytes, shared by
    /// `models` models exposing them at once. A value of unknown size counts as the largest
    /// known one of `values` (none known: as nothing, all in one run); a value larger than a
    /// run's share has a run of its own.
    pub(super) fn runs<'v>(&self, values: &'v [String], models: u64) -> Vec<&'v [String]> {
        let share = self.budget / models.max(1);
        let unknown = values
            .iter()
            .filter_map(|v| self.bytes.get(v))
            .max()
            .copied()
            .unwrap_or(0);
        let mut runs = Vec::new();
        let (mut start, mut held) = (0, 0u64);
        for (k, v) in values.iter().enumerate() {
            let bytes = self.bytes.get(v).copied().unwrap_or(unknown);
            if k > start && held.saturating_add(bytes) > share {
                runs.push(&values[start..k]);
                (start, held) = (k, 0);
            }
            held = held.saturating_add(bytes);
        }
        // no values: one run all the same, which tells the engine that runs the model
        runs.push(&values[start..]);
        runs
    }
}

/// A graph output of `dtype` without a shape: the engines infer it.
fn unshaped_output(name: &str, dtype: DataType) -> crate::onnx::proto::ValueInfoProto {
    let mut output = value_info(name, dtype, &[]);
    if let Some(t) = output.r#type.as_mut()
        && let Some(crate::onnx::proto::type_proto::Value::TensorType(tt)) = t.value.as_mut()
    {
        tt.shape = None;
    }
    output
}

/// `model` with `values` (of the main graph) exposed as graph outputs too.
pub fn exposing(model: &Model, values: &[String]) -> Model {
    let mut proto = model.proto.clone();
    let g = proto.graph.get_or_insert_with(Default::default);
    let present: HashSet<String> = g.output.iter().map(|o| o.name().to_string()).collect();
    // float16 in a converted model: an output must be declared with the type it has
    let facts = Inference::of_model(model);
    for v in values.iter().filter(|v| !present.contains(*v)) {
        let t = match facts.elem_type(v) {
            Some(DataType::Float16) => DataType::Float16,
            _ => DataType::Float,
        };
        g.output.push(unshaped_output(v, t));
    }
    Model::from_proto(proto, model.dir().to_path_buf())
}

/// `model` computing, for each of `values` (float32, of the main graph), its min, max and sum
/// over all elements (ReduceMin, ReduceMax, ReduceSum without axes, which every opset reads
/// as all of them, dims kept: one element) as graph outputs, with the names of each value's
/// three outputs.
pub fn summarizing(model: &Model, values: &[String]) -> (Model, Vec<[String; 3]>) {
    let mut proto = model.proto.clone();
    let g = proto.graph.get_or_insert_with(Default::default);
    let mut used = crate::graph::names_in(g);
    // kept dims: an empty value then reduces to an empty output (or an engine's error), not to
    // a scalar some engines refuse to make of nothing; one element either way otherwise
    let keepdims = crate::graph::builder::attr_int("keepdims", 1);
    let mut names = Vec::with_capacity(values.len());
    for v in values {
        let stats = ["ReduceMin", "ReduceMax", "ReduceSum"].map(|op| {
            let base = format!("{v}.mdeploy_{}", op.to_lowercase());
            let out = crate::graph::fresh_among(&mut used, &base);
            g.node.push(crate::onnx::proto::NodeProto {
                op_type: Some(op.into()),
                name: Some(out.clone()),
                input: vec![v.clone()],
                output: vec![out.clone()],
                attribute: vec![keepdims.clone()],
                ..Default::default()
            });
            g.output.push(unshaped_output(&out, DataType::Float));
            out
        });
        names.push(stats);
    }
    (Model::from_proto(proto, model.dir().to_path_buf()), names)
}

/// What measuring runs a model on: the samples, the engine, and how the values measured are
/// split among runs over the samples.
#[derive(Clone, Copy)]
pub struct Runs<'a> {
    pub samples: &'a dyn SampleChunks,
    pub engine: EngineChoice,
    pub exposure: &'a Exposure,
}

/// Runs `measure` in the engine that measures a float model's values: under `auto`, onnxruntime
/// first where it is installed, then tract where onnxruntime cannot load or run the model (for
/// a fault of the engine's, not the inputs'; failing there too, with both reasons). With many
/// values exposed, tract builds a plan for every one of them (seconds on a BERT) and runs a
/// detection network's convolutions at a quarter of onnxruntime's speed on this kind of
/// machine; onnxruntime is also where a quantized model will run. An engine named is the one
/// used.
pub fn in_measuring_engine<T>(
    engine: EngineChoice,
    mut measure: impl FnMut(EngineChoice) -> Result<T, QuantizeError>,
) -> Result<T, QuantizeError> {
    if engine != EngineChoice::Auto || !crate::run::ort_available() {
        return measure(engine);
    }
    let engine_fault =
        |e: &QuantizeError| matches!(e, QuantizeError::Run(e) if !crate::run::is_input_problem(e));
    match measure(EngineChoice::Only(EngineKind::Ort)) {
        Err(ort) if engine_fault(&ort) => match measure(EngineChoice::Only(EngineKind::Tract)) {
            Err(tract) if engine_fault(&tract) => {
                Err(QuantizeError::Run(crate::run::RunError::Neither {
                    tract: tract.to_string(),
                    ort: ort.to_string(),
                }))
            }
            other => other,
        },
        other => other,
    }
}

/// The engine a summary ran in, and the range of each value (none: left to the exposed pass).
type Summarized = (EngineKind, Vec<Option<ValueRange>>);

/// The range of each of `values` (float32, of the main graph) over the samples as the model
/// computes it itself ([`summarizing`]), with the engine that ran it: none for a value whose
/// sum is not finite on some sample (a NaN or an infinity in it, or an overflow) or whose
/// summary is not one finite number (an empty value), which the caller measures exposed; none
/// at all where the summarizing model does not run (tract refuses to reduce an empty tensor).
/// onnxruntime runs it without graph optimization, or with it where the model computes in
/// reduced precision or does not run without.
fn summarized(
    model: &Model,
    values: &[String],
    runs: Runs,
) -> Result<Option<Summarized>, QuantizeError> {
    let (summary, names) = summarizing(model, values);
    let by_output: HashMap<&str, (usize, usize)> = names
        .iter()
        .enumerate()
        .flat_map(|(k, stats)| {
            stats
                .iter()
                .enumerate()
                .map(move |(stat, name)| (name.as_str(), (k, stat)))
        })
        .collect();
    // per value: min, max, and whether every sample's span was finite and not empty
    let mut spans = vec![(f32::INFINITY, f32::NEG_INFINITY, true); values.len()];
    // onnxruntime's optimizers take long over thousands of reductions, and fuse little where
    // every value is reduced; but a model that runs int8 or 4-bit kernels or computes in
    // float16 computes other numbers unoptimized (a 4-bit DequantizeLinear and its MatMul are
    // fused into int8 arithmetic), and where onnxruntime cannot run the summary unoptimized
    // (an If it folds away holding a branch it has no kernel for), it runs it optimized
    let levels: &[GraphLevel] = if crate::run::reduced_precision(model) {
        &[GraphLevel::Default]
    } else {
        &[GraphLevel::Unoptimized, GraphLevel::Default]
    };
    let mut ran = Err(crate::run::RunError::Stopped);
    for &level in levels {
        ran = run_each_at(&summary, runs.engine, runs.samples, level, |k, outputs| {
            if k == 0 {
                spans.fill((f32::INFINITY, f32::NEG_INFINITY, true));
            }
            let mut sample = vec![[f32::NAN; 3]; values.len()];
            for out in outputs {
                if let Some(&(value, stat)) = by_output.get(out.name.as_str())
                    && let Ok(v) = out.tensor.to_plain_array_view::<f32>()
                    && v.len() == 1
                {
                    sample[value][stat] = v.iter().copied().next().unwrap_or(f32::NAN);
                }
            }
            for (span, [min, max, sum]) in spans.iter_mut().zip(sample) {
                let fine = min.is_finite() && max.is_finite() && sum.is_finite() && min <= max;
                *span = (span.0.min(min), span.1.max(max), span.2 && fine);
            }
        });
        match &ran {
            Err(e) if !crate::run::is_input_problem(e) => continue,
            _ => break,
        }
    }
    match ran {
        Ok(engine) => {
            let ranges = spans
                .into_iter()
                .map(|(min, max, fine)| {
                    fine.then_some(ValueRange {
                        min,
                        max,
                        non_finite: false,
                    })
                })
                .collect();
            Ok(Some((engine, ranges)))
        }
        Err(e) if crate::run::is_input_problem(&e) => Err(e.into()),
        Err(_) => Ok(None),
    }
}

/// Runs `model` on every sample and returns the range of each of `values`, with the engine that
/// computed them. The model computes each float32 value's min, max and sum itself, as outputs
/// of one element ([`summarizing`]): the activations never leave the engine, which frees them as it
/// goes (exposed, the values of a text detector at 640x640 are 660 MB a sample, each copied
/// out into fresh memory). Where a value's sum is not finite (a NaN or an infinity in it, or
/// an overflow) or it has no elements, the value is measured exposed, and so is every value
/// where the summarizing model does not run: in as many runs over the samples as the exposure
/// splits them into, all in one engine (the summary's, where it ran).
pub fn observe(
    model: &Model,
    values: &[String],
    runs: Runs,
) -> Result<(EngineKind, BTreeMap<String, ValueRange>), QuantizeError> {
    let facts = Inference::of_model(model);
    let (summed, mut exposed): (Vec<String>, Vec<String>) = values
        .iter()
        .cloned()
        .partition(|v| facts.elem_type(v) == Some(DataType::Float));
    let mut ranges: BTreeMap<String, ValueRange> = BTreeMap::new();
    let mut kind = None;
    if !summed.is_empty() {
        match summarized(model, &summed, runs)? {
            Some((engine, spans)) => {
                kind = Some(engine);
                for (value, span) in summed.into_iter().zip(spans) {
                    match span {
                        Some(range) => _ = ranges.insert(value, range),
                        None => exposed.push(value),
                    }
                }
            }
            // a reduction the engine refuses: all measured exposed
            None => exposed.extend(summed),
        }
    }
    if exposed.is_empty()
        && let Some(kind) = kind
    {
        return Ok((kind, ranges));
    }
    let runs = Runs {
        engine: kind.map_or(runs.engine, EngineChoice::Only),
        ..runs
    };
    let kind = run_exposed(model, &exposed, runs, |run, k, outputs| {
        if k == 0 {
            run.iter().for_each(|v| _ = ranges.remove(v));
        }
        for out in outputs {
            // as a slice: iterating a view of dynamic rank costs more than the comparisons
            if let Ok(values) = out.tensor.to_plain_array_view::<f32>()
                && let Some(values) = values.as_standard_layout().as_slice()
            {
                ranges
                    .entry(out.name)
                    .or_insert_with(ValueRange::empty)
                    .add(values);
            }
        }
    })?;
    Ok((kind, ranges))
}

/// Runs `model` over the samples once for each run the exposure splits `values` into, with
/// that run's values exposed: `on_output(run, k, outputs)` gets sample `k`'s values of the run
/// (the model's other outputs left out). All runs are in one engine, which is returned: under
/// `auto`, where one fails in the first engine tried, all of them again in the other, the
/// samples of each run coming again from 0, as with [`run_each`] (a caller that accumulates
/// starts a run's values over when `k` is 0).
pub(super) fn run_exposed(
    model: &Model,
    values: &[String],
    runs: Runs,
    mut on_output: impl FnMut(&[String], usize, Vec<NamedTensor>),
) -> Result<EngineKind, QuantizeError> {
    let Runs {
        samples,
        engine,
        exposure,
    } = runs;
    let split = exposure.runs(values, 1);
    // every run in one engine: where one fails in the engine `auto` tried first (for a fault of
    // the engine's), all of them again in the other
    let kind = crate::run::in_either(model, engine, |kind| {
        for run in &split {
            let exposed = exposing(model, run);
            let wanted: HashSet<&str> = run.iter().map(String::as_str).collect();
            run_each(&exposed, EngineChoice::Only(kind), samples, |k, outputs| {
                let outputs = outputs
                    .into_iter()
                    .filter(|o| wanted.contains(o.name.as_str()))
                    .collect();
                on_output(run, k, outputs);
            })?;
        }
        Ok(kind)
    })?;
    Ok(kind)
}

/// Elements of two values of the same length, as float32, block by block: `f` gets the same
/// span of each (float32 values are read where they lie; others are converted into a buffer of
/// the block's size, never all at once).
fn in_blocks(w: &Floats, g: &Floats, mut f: impl FnMut(&[f32], &[f32])) {
    const BLOCK: usize = 4096;
    let (mut w_buf, mut g_buf) = (vec![0f32; BLOCK], vec![0f32; BLOCK]);
    let n = w.len().min(g.len());
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        f(
            w.block(start, &mut w_buf[..len]),
            g.block(start, &mut g_buf[..len]),
        );
        start += len;
    }
}

/// How far a candidate's value is from the reference's, over all samples: SQNR and cosine of
/// the worst sample (what a target holds), SQNR over the samples pooled (what ranks one value's
/// loss against another's: the worst samples of two values need not be the same sample), top-1
/// and decision agreement over every row and element.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub sqnr_db: f64,
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub cosine: f64,
    #[serde(
        default = "super::not_measured",
        deserialize_with = "crate::json::inf_if_null"
    )]
    pub pooled_sqnr_db: f64,
    /// For a 2-D output of class scores ([`class_scores`]): the fraction of rows whose largest
    /// class is the same.
    pub top1: Option<f64>,
    /// When asked for a threshold: the fraction of elements on the same side of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<f64>,
}

/// What [`compare`] measures beside SQNR and cosine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measures {
    /// The fraction of elements on the same side of this threshold.
    pub threshold: Option<f32>,
    /// Keep the reference's graph outputs of every sample (what a verification preset judges
    /// the candidate against).
    pub keep_outputs: bool,
    /// Keep all the reference computed ([`Kept`]) where it takes at most this many bytes and
    /// fits the memory a run may take.
    pub keep_reference: u64,
}

/// What [`compare`] measured.
pub struct Compared {
    /// The engine that ran both models.
    pub engine: EngineKind,
    pub agreements: BTreeMap<String, Agreement>,
    /// With [`Measures::keep_outputs`]: the reference's graph outputs of each sample.
    pub reference_outputs: Vec<Vec<NamedTensor>>,
    /// With [`Measures::keep_reference`], where it fits: the reference's values.
    pub kept: Option<Kept>,
}

/// What the reference computed on every sample, with the values measured exposed: a later
/// comparison against the same reference, of those values or fewer, in the same engine,
/// reads them instead of running it again (the accuracy search compares each round's candidate
/// with the same float model).
pub struct Kept {
    engine: EngineKind,
    /// Per sample, the reference's outputs: its graph outputs and the values exposed.
    samples: Vec<Vec<NamedTensor>>,
}

impl Kept {
    /// Whether it holds each of `values` (and every graph output) of every one of `samples`.
    fn covers(&self, values: &[String], graph_outputs: &[String], samples: usize) -> bool {
        self.samples.len() == samples
            && self.samples.iter().all(|s| {
                let held: HashSet<&str> = s.iter().map(|t| t.name.as_str()).collect();
                values
                    .iter()
                    .chain(graph_outputs)
                    .all(|v| held.contains(v.as_str()))
            })
    }
}

/// Runs `reference` and `candidate` side by side on every sample with `values` exposed in both,
/// and returns how far each value is apart (SQNR in dB and cosine, candidate against reference,
/// of the worst sample, and SQNR pooled over the samples; with a threshold, the fraction of
/// elements on the same side of it over all samples), with the engine that ran both. Streams:
/// one sample's values at a time, unless asked to keep the graph outputs or the reference's
/// values (which it does only where one run exposes them all and all samples' fit in the
/// reference's half of a run's memory).
/// What `kept` holds of the reference (from an earlier comparison with it) is read instead of
/// running it, where it covers the values and the candidate runs in the engine that kept it.
pub fn compare(
    reference: &Model,
    candidate: &Model,
    values: &[String],
    aliases: &BTreeMap<String, String>,
    runs: Runs,
    measures: Measures,
    kept: Option<&Kept>,
) -> Result<Compared, QuantizeError> {
    let Runs {
        samples,
        engine,
        exposure,
    } = runs;
    let scores = class_scores(reference);
    let all_outputs: Vec<String> = reference
        .graph()
        .output
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let graph_outputs: &[String] = if measures.keep_outputs {
        &all_outputs
    } else {
        &[]
    };
    let split = exposure.runs(values, 2);
    let kept = kept.filter(|k| split.len() == 1 && k.covers(values, &all_outputs, samples.len()));
    // kept where one run exposes them all and every sample's, of known sizes, fit in the
    // reference's share of a run (the candidate's run takes the other half)
    let keep = kept.is_none() && split.len() == 1 && {
        let held = values
            .iter()
            .chain(all_outputs.iter().filter(|o| !values.contains(o)));
        let limit = measures.keep_reference.min(exposure.budget / 2);
        exposure
            .known_bytes(held)
            .is_some_and(|b| b.saturating_mul(samples.len() as u64) <= limit)
    };
    // every run in one engine: `auto` tries them in turn, as `run_each` does, and where a run
    // fails in the first (for a fault of the engine's), all of them again in the other
    let mut compared = crate::run::in_either(candidate, engine, |kind| {
        let mut compared: Option<Compared> = None;
        for run in &split {
            let run = Run {
                reference,
                candidate,
                values: run,
                aliases,
                // kept from the first run only: every run computes them
                graph_outputs: if compared.is_none() {
                    graph_outputs
                } else {
                    &[]
                },
                threshold: measures.threshold,
                kept,
                keep,
            };
            let more = run.measure(samples, kind)?;
            match compared.as_mut() {
                None => compared = Some(more),
                Some(c) => c.agreements.extend(more.agreements),
            }
        }
        Ok(compared.expect("one run at least"))
    })?;
    for (name, agreement) in compared.agreements.iter_mut() {
        if !scores.contains(name) {
            agreement.top1 = None;
        }
    }
    Ok(compared)
}

/// The graph outputs that are class scores, whose top-1 class is the model's answer: those
/// computed by a linear layer (Gemm, MatMul, Conv, QLinearMatMul, QLinearConv) through nothing
/// but what keeps the largest class the largest (a constant bias, a positive constant scale, an
/// activation such as Softmax, Sigmoid or Relu, global pooling, a reshape, quantization). An
/// embedding (mean pooling over tokens, an L2 norm, BERT's Tanh pooler) has the shape of class
/// scores, but its largest element is no answer, and its top-1 agreement is no measure of
/// accuracy. Where some output's scores pass through a Softmax or LogSoftmax, the model gives
/// its classes there, and an output straight from a linear layer beside it is a regression
/// head (a face detector's box offsets and landmarks beside its face/no-face Softmax), whose
/// largest element is no answer either; where none does, a linear layer's output is taken for
/// logits, as a classifier's last Gemm is. (A Sigmoid does not count: beside logits it may be
/// a one-value quality score or a mask.)
pub fn class_scores(model: &Model) -> HashSet<String> {
    let g = model.graph();
    let producer: std::collections::HashMap<&str, &crate::onnx::proto::NodeProto> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let fed: HashSet<&str> = g.input.iter().map(|i| i.name()).collect();
    // a constant: an initializer no input overrides, or a Constant node's output
    let initializer = |name: &str| {
        g.initializer
            .iter()
            .find(|t| t.name() == name && !fed.contains(name))
    };
    let is_constant = |name: &str| {
        initializer(name).is_some()
            || producer
                .get(name)
                .is_some_and(|n| crate::graph::constant_tensor(n).is_some())
    };
    let values = |name: &str| {
        let tensor = match initializer(name) {
            Some(t) => t.clone(),
            None => crate::graph::constant_tensor(producer.get(name)?)?,
        };
        model.tensor_data(&tensor).ok()?.to_f64_lossy()
    };
    let linear = |op: &str| {
        matches!(
            op,
            "Gemm" | "MatMul" | "Conv" | "QLinearMatMul" | "QLinearConv"
        )
    };
    // for scores, whether they pass through a Softmax over the classes
    let scores_of = |output: &str| -> Option<bool> {
        let mut value = output;
        let mut normalized = false;
        // a cycle cannot occur in a valid graph; the bound keeps an invalid one from looping
        for _ in 0..g.node.len() {
            let node = producer.get(value)?;
            let op = node.op_type();
            if linear(op) {
                return Some(normalized);
            }
            normalized |= matches!(op, "Softmax" | "LogSoftmax");
            let next = match op {
                "Identity" | "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" | "Cast"
                | "Softmax" | "LogSoftmax" | "Sigmoid" | "Relu" | "GlobalAveragePool"
                | "GlobalMaxPool" | "AveragePool" | "ReduceMean" | "ReduceMax"
                | "QuantizeLinear" | "DequantizeLinear" => node.input.first(),
                // a bias or a temperature: one operand computed, the other constant; x - b and
                // x / t keep the order, b - x, t / x and a scale of zero or below do not
                "Add" | "Sub" | "Mul" | "Div" => {
                    let mut computed = node.input.iter().filter(|i| !is_constant(i));
                    let (Some(only), None) = (computed.next(), computed.next()) else {
                        return None;
                    };
                    let other = node.input.iter().find(|i| *i != only);
                    let keeps_order = match op {
                        "Add" => true,
                        "Sub" => node.input[0] == *only,
                        _ => {
                            let positive = other
                                .and_then(|o| values(o))
                                .is_some_and(|v| !v.is_empty() && v.iter().all(|x| *x > 0.0));
                            positive && (op == "Mul" || node.input[0] == *only)
                        }
                    };
                    keeps_order.then_some(only)
                }
                _ => None,
            };
            value = next?.as_str();
        }
        None
    };
    let scores: Vec<(String, bool)> = g
        .output
        .iter()
        .filter_map(|o| Some((o.name().to_string(), scores_of(o.name())?)))
        .collect();
    let any_normalized = scores.iter().any(|(_, normalized)| *normalized);
    scores
        .into_iter()
        .filter(|(_, normalized)| *normalized || !any_normalized)
        .map(|(name, _)| name)
        .collect()
}

/// One run of [`compare`]: the two models, and the values it exposes and measures.
struct Run<'a> {
    reference: &'a Model,
    candidate: &'a Model,
    values: &'a [String],
    aliases: &'a BTreeMap<String, String>,
    /// The graph outputs kept per sample.
    graph_outputs: &'a [String],
    threshold: Option<f32>,
    /// The reference's values, read instead of running it when kept in the engine measuring.
    kept: Option<&'a Kept>,
    /// Keep the reference's values.
    keep: bool,
}

impl Run<'_> {
    /// Both models with the run's values exposed, side by side in one engine.
    fn measure(
        &self,
        samples: &dyn SampleChunks,
        engine: EngineKind,
    ) -> Result<Compared, crate::run::RunError> {
        use crate::run::Engine;
        let Run {
            reference,
            candidate,
            values,
            aliases,
            graph_outputs,
            threshold,
            kept,
            keep,
        } = *self;
        let kept = kept.filter(|k| k.engine == engine);
        // a value measured in the candidate under another name (its dequantized twin)
        let in_candidate: Vec<String> = values
            .iter()
            .map(|v| aliases.get(v).unwrap_or(v).clone())
            .collect();
        let mut a = match kept {
            Some(_) => None,
            None => Some(Engine::load_in(
                &exposing(reference, values),
                engine,
                samples.len(),
            )?),
        };
        let candidate = &exposing(candidate, &in_candidate);
        let mut b = Engine::load_in(candidate, engine, samples.len())?;
        let mut keeping = Vec::new();
        // cosine and SQNR of each value's worst sample
        let mut similarity: BTreeMap<String, Similarity> = BTreeMap::new();
        // rows with the same largest class, rows
        let mut top1: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        // elements on the same side of the threshold, elements
        let mut decisions: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        // a float16 interface (`--fp16-io`) is fed the same samples rounded to float16
        let half = crate::verify::half_input_names(candidate);
        let mut reference_outputs = Vec::new();
        // one sample's values, read where the engines hold them: a float16 or float64 value is
        // measured as the float32 it converts to, a block at a time
        let mut measure_sample = |want: &[RawOutput], got: &[RawOutput]| {
            let want: HashMap<&str, &RawOutput> = want.iter().map(|o| (o.name(), o)).collect();
            let got: HashMap<&str, &RawOutput> = got.iter().map(|o| (o.name(), o)).collect();
            for (value, in_candidate) in values.iter().zip(&in_candidate) {
                let (Some(w), Some(g)) = (want.get(value.as_str()), got.get(in_candidate.as_str()))
                else {
                    continue;
                };
                let (Some(w_floats), Some(g_floats)) = (w.floats(), g.floats()) else {
                    continue;
                };
                if w.shape() != g.shape() || w_floats.len() != g_floats.len() {
                    continue;
                }
                if let [_, classes] = w.shape()[..]
                    && classes > 1
                {
                    let argmax = |row: &[f32]| {
                        row.iter()
                            .enumerate()
                            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                            .map(|(k, _)| k)
                    };
                    let (w_all, g_all) = (w_floats.to_f32(), g_floats.to_f32());
                    let t = top1.entry(value.clone()).or_default();
                    for (a, b) in w_all.chunks(classes).zip(g_all.chunks(classes)) {
                        t.0 += u64::from(argmax(a) == argmax(b));
                        t.1 += 1;
                    }
                }
                let mut sums = SampleSums::default();
                let mut same_side = (0u64, 0u64);
                in_blocks(&w_floats, &g_floats, |w, g| {
                    if let Some(at) = threshold {
                        for (x, y) in w.iter().zip(g) {
                            same_side.0 += u64::from((*x > at) == (*y > at));
                        }
                        same_side.1 += w.len() as u64;
                    }
                    sums.add_all(w, g);
                });
                if threshold.is_some() {
                    let d = decisions.entry(value.clone()).or_default();
                    d.0 += same_side.0;
                    d.1 += same_side.1;
                }
                similarity.entry(value.clone()).or_default().add(&sums);
            }
        };
        let mut k = 0;
        samples.each_chunk(&mut |chunk| {
            for s in chunk {
                let rounded;
                let fed: &[NamedTensor] = if half.is_empty() {
                    s
                } else {
                    rounded = crate::verify::round_to_half(s, &half);
                    &rounded
                };
                let mut against = |want: &[RawOutput]| -> Result<(), crate::run::RunError> {
                    if !graph_outputs.is_empty() {
                        let outputs = want
                            .iter()
                            .filter(|o| graph_outputs.iter().any(|g| g == o.name()))
                            .map(|o| o.to_named().map_err(crate::run::RunError::Run))
                            .collect::<Result<Vec<_>, _>>()?;
                        reference_outputs.push(outputs);
                    }
                    b.run_raw(fed, |got| measure_sample(want, got))
                };
                match (&mut a, kept) {
                    // kept for later comparisons: as tensors of ours
                    (Some(a), _) if keep => {
                        let ran = a.run(s)?;
                        let want: Vec<RawOutput> = ran.iter().map(RawOutput::of).collect();
                        against(&want)?;
                        drop(want);
                        keeping.push(ran);
                    }
                    (Some(a), _) => a.run_raw(s, |want| against(want))??,
                    (None, Some(kept)) => {
                        let want: Vec<RawOutput> =
                            kept.samples[k].iter().map(RawOutput::of).collect();
                        against(&want)?;
                    }
                    (None, None) => unreachable!("the reference is loaded where nothing is kept"),
                }
                k += 1;
            }
            Ok(())
        })?;
        let agreements = similarity
            .into_iter()
            .map(|(name, s)| {
                // a value empty (or all zeros in the reference) on every sample lost nothing
                let (cosine, sqnr_db) = s.worst().unwrap_or((1.0, f64::INFINITY));
                let pooled_sqnr_db = s.pooled.sqnr_db();
                let top1 = top1
                    .get(&name)
                    .filter(|t| t.1 > 0)
                    .map(|t| t.0 as f64 / t.1 as f64);
                // an output empty on every sample has no element on the wrong side
                let decision = decisions.get(&name).map(|d| {
                    if d.1 == 0 {
                        1.0
                    } else {
                        d.0 as f64 / d.1 as f64
                    }
                });
                (
                    name,
                    Agreement {
                        sqnr_db,
                        cosine,
                        pooled_sqnr_db,
                        top1,
                        decision,
                    },
                )
            })
            .collect();
        Ok(Compared {
            engine: b.kind(),
            agreements,
            reference_outputs,
            kept: (keep && a.is_some()).then_some(Kept {
                engine,
                samples: keeping,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::builder::ModelBuilder;
    use tract_onnx::prelude::{Tensor, tract_ndarray};

    #[test]
    fn ranges_cover_every_sample_and_exposed_values_only() {
        let proto = ModelBuilder::new(17)
            .input("x", DataType::Float, &["3"])
            .node("Relu", &["x"], &["r"])
            .node("Neg", &["r"], &["y"])
            .output("y", DataType::Float, &["3"])
            .build();
        let model = Model::from_proto(proto, ".".into());
        let facts = Inference::of_model(&model);
        let values = float_activations(&model, &facts);
        assert_eq!(values, ["r", "y"]);
        let sample = |v: [f32; 3]| {
            vec![NamedTensor {
                name: "x".into(),
                tensor: Tensor::from(tract_ndarray::arr1(&v)),
            }]
        };
        let (a, b) = (sample([-1.0, 2.0, 0.5]), sample([3.0, -7.0, 0.0]));
        let runs = Runs {
            samples: &[a.as_slice(), b.as_slice()],
            engine: EngineChoice::Auto,
            exposure: &Exposure::unbounded(),
        };
        let (_, ranges) = observe(&model, &values, runs).unwrap();
        assert_eq!(ranges["r"].max, 3.0);
        assert_eq!(ranges["r"].min, 0.0);
        assert_eq!(ranges["y"].min, -3.0);
        assert_eq!(ranges["y"].max_abs(), 3.0);
    }

    /// The ranges the model summarizes itself are those of the values exposed, in both
    /// engines: a value with a NaN or an infinity (finite span and the flag), one empty on
    /// every sample and one only on some, and a value named like a summary output.
    #[test]
    fn summarized_ranges_are_the_exposed_values_ranges() {
        use crate::graph::builder::tensor_i64;
        let proto = ModelBuilder::new(17)
            .input("x", DataType::Float, &["n"])
            .initializer(tensor_i64("zero", &[1], &[0]))
            .initializer(tensor_i64("two", &[1], &[2]))
            .initializer(tensor_i64("end", &[1], &[100]))
            .node("Relu", &["x"], &["r"])
            .node("Log", &["r"], &["log"])
            .node("Sqrt", &["x"], &["sqrt"])
            .node("Slice", &["x", "zero", "zero"], &["empty"])
            .node("Slice", &["x", "two", "end"], &["tail"])
            .node("Neg", &["r"], &["r.mdeploy_reducemin"])
            .node(
                "Concat",
                &["log", "sqrt", "empty", "tail", "r.mdeploy_reducemin"],
                &["y"],
            )
            .attr(crate::graph::builder::attr_int("axis", 0))
            .output("y", DataType::Float, &["m"])
            .build();
        let model = Model::from_proto(proto, ".".into());
        let facts = Inference::of_model(&model);
        let values = float_activations(&model, &facts);
        let (summary, names) = summarizing(&model, &values);
        let r = values.iter().position(|v| v == "r").unwrap();
        assert_eq!(names[r][0], "r.mdeploy_reducemin_1");
        assert_eq!(summary.graph().output.len(), 1 + 3 * values.len());
        let sample = |v: &[f32]| {
            vec![NamedTensor {
                name: "x".into(),
                tensor: Tensor::from(tract_ndarray::arr1(v)),
            }]
        };
        // `tail` (from the third element) is empty on the first sample only
        let (a, b) = (sample(&[-1.0, 2.0]), sample(&[3.0, -7.0, 0.0, 5.0]));
        let samples = [a.as_slice(), b.as_slice()];
        let mut engines = vec![EngineKind::Tract];
        if crate::run::ort_available() {
            engines.push(EngineKind::Ort);
        }
        for engine in engines {
            let runs = Runs {
                samples: &samples,
                engine: EngineChoice::Only(engine),
                exposure: &Exposure::unbounded(),
            };
            let (_, ranges) = observe(&model, &values, runs).unwrap();
            let mut exposed: BTreeMap<String, ValueRange> = BTreeMap::new();
            run_exposed(&model, &values, runs, |_, _, outputs| {
                for out in outputs {
                    let v = out.tensor.to_plain_array_view::<f32>().unwrap();
                    let v = v.as_standard_layout();
                    exposed
                        .entry(out.name)
                        .or_insert_with(ValueRange::empty)
                        .add(v.as_slice().unwrap());
                }
            })
            .unwrap();
            assert_eq!(ranges, exposed, "{engine:?}");
            assert_eq!((ranges["r"].min, ranges["r"].max), (0.0, 5.0));
            let log = ranges["log"];
            assert!(log.non_finite && log.max == 5f32.ln(), "{engine:?} {log:?}");
            assert!(ranges["sqrt"].non_finite && ranges["sqrt"].min == 0.0);
            assert_eq!(ranges["empty"].min, f32::INFINITY);
            assert_eq!((ranges["tail"].min, ranges["tail"].max), (0.0, 5.0));
            assert_eq!(ranges["r.mdeploy_reducemin"].min, -5.0);
            // the summary itself, of values never empty, runs in the engine (tract refuses to
            // reduce an empty tensor, and then everything is measured exposed)
            let some = ["r".to_string(), "log".to_string()];
            let (summary, names) = summarizing(&model, &some);
            let (_, out) =
                crate::run::run_all(&summary, EngineChoice::Only(engine), &[&b], || {}).unwrap();
            let scalar = |name: &str| {
                let t = &out[0].iter().find(|t| t.name == name).unwrap().tensor;
                t.to_plain_array_view::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .next()
                    .unwrap()
            };
            let [min, max, sum] = names[0].clone().map(|n| scalar(&n));
            assert_eq!((min, max, sum), (0.0, 5.0, 8.0), "{engine:?}");
            assert_eq!(scalar(&names[1][0]), f32::NEG_INFINITY, "{engine:?}");
        }
    }

    /// The summary's own bookkeeping, in each engine: ranges merged over samples, a value with
    /// a NaN left to the exposed pass, and (where the engine reduces an empty tensor at all)
    /// an empty value left to it alone.
    #[test]
    fn summaries_merge_samples_and_leave_what_they_cannot_hold() {
        let build = |with_empty: bool| {
            let mut b = ModelBuilder::new(17)
                .input("x", DataType::Float, &["n"])
                .node("Relu", &["x"], &["r"])
                .node("Sqrt", &["x"], &["sqrt"])
                .node("Neg", &["x"], &["neg"]);
            if with_empty {
                b = b
                    .initializer(crate::graph::builder::tensor_i64("zero", &[1], &[0]))
                    .node("Slice", &["x", "zero", "zero"], &["empty"]);
            }
            let proto = b.output("neg", DataType::Float, &["n"]).build();
            Model::from_proto(proto, ".".into())
        };
        let sample = |v: &[f32]| {
            vec![NamedTensor {
                name: "x".into(),
                tensor: Tensor::from(tract_ndarray::arr1(v)),
            }]
        };
        let (a, b) = (sample(&[1.0, 4.0]), sample(&[-2.0, 9.0, 0.5]));
        let samples = [a.as_slice(), b.as_slice()];
        let mut engines = vec![EngineKind::Tract];
        if crate::run::ort_available() {
            engines.push(EngineKind::Ort);
        }
        let values = ["r", "sqrt", "neg"].map(String::from);
        for engine in engines {
            let runs = Runs {
                samples: &samples,
                engine: EngineChoice::Only(engine),
                exposure: &Exposure::unbounded(),
            };
            let (ran, spans) = summarized(&build(false), &values, runs)
                .unwrap()
                .expect("the summary runs");
            assert_eq!(ran, engine);
            let span = |k: usize| spans[k].map(|r| (r.min, r.max));
            assert_eq!(span(0), Some((0.0, 9.0)), "{engine:?}");
            assert_eq!(span(1), None, "{engine:?}: sqrt(-2) is NaN");
            assert_eq!(span(2), Some((-9.0, 2.0)), "{engine:?}");
            let with_empty = [values.as_slice(), &["empty".to_string()]].concat();
            let r = summarized(&build(true), &with_empty, runs).unwrap();
            // onnxruntime reduces an empty tensor (kept dims: to an empty output); tract
            // refuses, and the whole summary is then left to the exposed pass
            assert!(engine == EngineKind::Tract || r.is_some(), "{engine:?}");
            if let Some((_, spans)) = r {
                assert_eq!(spans[0].map(|r| r.max), Some(9.0), "{engine:?}");
                assert_eq!(spans[3], None, "{engine:?}");
            }
        }
    }

    /// Under `auto`, measuring tries onnxruntime first where it is installed, and `auto` again
    /// where onnxruntime fails for a fault of its own, not the inputs'; an engine named is used
    /// alone.
    #[test]
    fn measuring_tries_onnxruntime_first_under_auto() {
        use crate::run::RunError;
        let calls = |engine, error: fn() -> RunError| {
            let mut tried = Vec::new();
            let result = in_measuring_engine(engine, |e| {
                tried.push(e);
                Err::<(), _>(QuantizeError::Run(error()))
            });
            assert!(result.is_err());
            tried
        };
        let engine_fault = || RunError::OrtLoad("no kernel".into());
        let input_fault = || RunError::MissingInput("x".into());
        let tract = EngineChoice::Only(EngineKind::Tract);
        assert_eq!(calls(tract, engine_fault), [tract]);
        let ort = EngineChoice::Only(EngineKind::Ort);
        if crate::run::ort_available() {
            assert_eq!(calls(EngineChoice::Auto, engine_fault), [ort, tract]);
            assert_eq!(calls(EngineChoice::Auto, input_fault), [ort]);
            let both = in_measuring_engine(EngineChoice::Auto, |e| {
                Err::<(), _>(QuantizeError::Run(RunError::OrtLoad(format!(
                    "{e:?} failed"
                ))))
            });
            let message = both.unwrap_err().to_string();
            assert!(
                message.contains("tract:") && message.contains("onnxruntime:"),
                "{message}"
            );
        } else {
            assert_eq!(
                calls(EngineChoice::Auto, engine_fault),
                [EngineChoice::Auto]
            );
        }
    }

    #[test]
    fn top1_is_measured_on_class_scores_only() {
        // two inputs' worth of rows, four classes: a linear layer's scores through Softmax or a
        // temperature are class scores; an L2-normalized embedding, a Tanh pooler, reversed
        // scores (b - x, x times -1, t / x) and a sum of two computed values are not; beside
        // the Softmax, the tempered scores are taken for a regression head
        let build = |with_probs: bool| {
            let mut b = ModelBuilder::new(17)
                .input("x", DataType::Float, &["2", "3"])
                .initializer_f32(
                    "w",
                    &[3, 4],
                    &[1.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.5],
                )
                .initializer_f32("b", &[4], &[0.1, 0.2, 0.3, 0.4])
                .initializer_f32("t", &[], &[2.0])
                .node("Gemm", &["x", "w", "b"], &["logits"])
                .node("Softmax", &["logits"], &["probs"])
                .node("Div", &["logits", "t"], &["tempered"])
                .node("ReduceL2", &["logits"], &["norm"])
                .attr(crate::graph::builder::attr_ints("axes", &[-1]))
                .node("Div", &["logits", "norm"], &["embedding"])
                .node("Tanh", &["logits"], &["pooled"])
                .node("Sub", &["t", "logits"], &["reversed"])
                .initializer_f32("negative", &[], &[-1.0])
                .node("Mul", &["logits", "negative"], &["negated"])
                .node("Div", &["t", "logits"], &["reciprocal"])
                .node("Add", &["logits", "pooled"], &["mixed"]);
            if with_probs {
                b = b.output("probs", DataType::Float, &["2", "4"]);
            }
            let proto = b
                .output("tempered", DataType::Float, &["2", "4"])
                .output("embedding", DataType::Float, &["2", "4"])
                .output("pooled", DataType::Float, &["2", "4"])
                .output("reversed", DataType::Float, &["2", "4"])
                .output("negated", DataType::Float, &["2", "4"])
                .output("reciprocal", DataType::Float, &["2", "4"])
                .output("mixed", DataType::Float, &["2", "4"])
                .build();
            Model::from_proto(proto, ".".into())
        };
        let sorted = |model: &Model| {
            let mut sorted: Vec<String> = class_scores(model).into_iter().collect();
            sorted.sort();
            sorted
        };
        assert_eq!(sorted(&build(false)), ["tempered"]);
        let model = build(true);
        assert_eq!(sorted(&model), ["probs"]);
        let scores = class_scores(&model);

        let x = vec![NamedTensor {
            name: "x".into(),
            tensor: Tensor::from(tract_ndarray::arr2(&[[1.0f32, 2.0, 3.0], [-1.0, 0.5, 0.0]])),
        }];
        let outputs: Vec<String> = [
            "probs",
            "tempered",
            "embedding",
            "pooled",
            "reversed",
            "negated",
            "reciprocal",
            "mixed",
        ]
        .map(String::from)
        .to_vec();
        let measured = compare(
            &model,
            &model,
            &outputs,
            &BTreeMap::new(),
            Runs {
                samples: &[x.as_slice()],
                engine: EngineChoice::Auto,
                exposure: &Exposure::unbounded(),
            },
            Measures::default(),
            None,
        )
        .unwrap()
        .agreements;
        for o in &outputs {
            let want = scores.contains(o).then_some(1.0);
            assert_eq!(measured[o].top1, want, "{o}");
        }
    }

    #[test]
    fn runs_hold_at_most_their_share_and_unknown_sizes_count_as_the_largest() {
        let exposure = Exposure {
            bytes: [("a", 40), ("b", 30), ("c", 30), ("d", 100), ("e", 10)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            budget: 120,
        };
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let values = names(&["a", "b", "c", "d", "e"]);
        let runs = |values: &[String], models| {
            exposure
                .runs(values, models)
                .iter()
                .map(|r| r.join(","))
                .collect::<Vec<_>>()
        };
        // every value in exactly one run, in order
        for models in 0..4 {
            assert_eq!(exposure.runs(&values, models).concat(), values);
        }
        assert_eq!(runs(&values, 1), ["a,b,c", "d,e"]);
        // two models at once: 60 bytes each; a value larger than that has a run of its own
        assert_eq!(runs(&values, 2), ["a", "b,c", "d", "e"]);
        // "x" is unknown: as large as the largest of the values asked for (40)
        assert_eq!(runs(&names(&["e", "x", "a"]), 2), ["e,x", "a"]);
        // nothing known of any: one run
        assert_eq!(runs(&names(&["x", "y"]), 2), ["x,y"]);
        // nothing asked: one run all the same (it tells the engine)
        assert_eq!(exposure.runs(&[], 1).len(), 1);
        assert_eq!(runs(&values, 1), runs(&values, 0));
        assert_eq!(Exposure::unbounded().runs(&values, 2).len(), 1);
    }

    #[test]
    fn sizes_are_those_at_the_largest_sample() {
        let proto = ModelBuilder::new(17)
            .input("x", DataType::Float, &["n", "3"])
            .node("Relu", &["x"], &["r"])
            .node("Cast", &["r"], &["h"])
            .attr(crate::graph::builder::attr_int(
                "to",
                DataType::Float16.code().into(),
            ))
            .node("Cast", &["h"], &["y"])
            .attr(crate::graph::builder::attr_int(
                "to",
                DataType::Float.code().into(),
            ))
            .output("y", DataType::Float, &["n", "3"])
            .build();
        let mut model = Model::from_proto(proto, ".".into());
        let before = model.proto.clone();
        let sample = |n: usize| {
            vec![NamedTensor {
                name: "x".into(),
                tensor: Tensor::from(tract_ndarray::Array2::<f32>::zeros((n, 3))),
            }]
        };
        let (small, large) = (sample(2), sample(5));
        // the largest of every set given, whichever set holds it
        let (first, second) = ([small.as_slice()], [large.as_slice(), small.as_slice()]);
        let exposure = Exposure::at(&mut model, &[&first, &second]).unwrap();
        assert_eq!(exposure.bytes["r"], 5 * 3 * 4);
        assert_eq!(exposure.bytes["h"], 5 * 3 * 2);
        assert_eq!(model.proto, before, "the model is left as it was");
    }

    #[test]
    fn values_measured_over_several_runs_measure_as_in_one() {
        // four values of 8 floats; a budget of 40 bytes for two models: one value a run
        let proto = |shift: f32| {
            ModelBuilder::new(17)
                .input("x", DataType::Float, &["2", "4"])
                .initializer_f32("s", &[], &[shift])
                .node("Relu", &["x"], &["r"])
                .node("Add", &["r", "s"], &["a"])
                .initializer_f32(
                    "w",
                    &[4, 4],
                    &[
                        1.0, 0.5, 0.0, -1.0, 0.0, 2.0, 1.0, 0.0, 0.5, 0.0, 1.0, 1.0, 0.0, -0.5,
                        0.0, 1.5,
                    ],
                )
                .node("MatMul", &["a", "w"], &["m"])
                .node("Softmax", &["m"], &["y"])
                .output("y", DataType::Float, &["2", "4"])
                .build()
        };
        let reference = Model::from_proto(proto(0.0), ".".into());
        let candidate = Model::from_proto(proto(0.3), ".".into());
        let values: Vec<String> = ["r", "a", "m", "y"].map(String::from).to_vec();
        let x = |v: [[f32; 4]; 2]| {
            vec![NamedTensor {
                name: "x".into(),
                tensor: Tensor::from(tract_ndarray::arr2(&v)),
            }]
        };
        let (p, q) = (
            x([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, -1.0, 2.0]]),
            x([[-1.0, 4.0, 2.0, 0.1], [2.0, 2.5, 0.0, -3.0]]),
        );
        let samples = [p.as_slice(), q.as_slice()];
        let mut split =
            Exposure::at(&mut Model::from_proto(proto(0.0), ".".into()), &[&samples]).unwrap();
        let whole_sizes = split.clone();
        split.budget = 80;
        assert_eq!(split.runs(&values, 2).len(), 4);
        let whole = Exposure::unbounded();
        let measures = Measures {
            threshold: Some(0.25),
            keep_outputs: true,
            keep_reference: u64::MAX,
        };
        let against_in = |engine, reference: &Model, exposure: &Exposure, kept: Option<&Kept>| {
            compare(
                reference,
                &candidate,
                &values,
                &BTreeMap::new(),
                Runs {
                    samples: &samples,
                    engine,
                    exposure,
                },
                measures,
                kept,
            )
            .unwrap()
        };
        let against = |reference: &Model, exposure: &Exposure, kept: Option<&Kept>| {
            against_in(EngineChoice::Auto, reference, exposure, kept)
        };
        let measure = |exposure: &Exposure| against(&reference, exposure, None);
        // (kept only where every value's size is known: not under `unbounded`, which knows none)
        assert!(measure(&whole).kept.is_none());
        let (one, several) = (measure(&whole_sizes), measure(&split));
        assert_eq!(one.agreements, several.agreements);
        // the reference's values are kept where one run holds them all, and read instead of
        // running the reference again: against another model, kept values measure as the
        // reference they came from
        assert!(several.kept.is_none());
        let kept = one.kept.as_ref().expect("kept in one run");
        let again = against(&candidate, &whole, Some(kept));
        assert_eq!(again.agreements, one.agreements);
        assert!(again.kept.is_none(), "nothing run, nothing kept");
        assert_eq!(again.reference_outputs.len(), 2);
        assert_eq!(
            again.reference_outputs[1][0].tensor,
            one.reference_outputs[1][0].tensor
        );
        // fewer values are covered; more, or split among runs, run the reference
        let fewer = ["a".to_string(), "y".to_string()];
        assert!(kept.covers(&fewer, &["y".to_string()], 2));
        assert!(!kept.covers(&["x".to_string()], &[], 2));
        assert!(!kept.covers(&fewer, &[], 3));
        let split_again = against(&candidate, &split, Some(kept));
        assert_eq!(split_again.agreements["a"].sqnr_db, f64::INFINITY);
        assert!(again.agreements["a"].sqnr_db.is_finite());
        // values kept by one engine are not read by a comparison in the other
        if crate::run::ort_available() {
            let ort = EngineChoice::Only(EngineKind::Ort);
            assert_eq!(kept.engine, EngineKind::Tract);
            let elsewhere = against_in(ort, &candidate, &whole, Some(kept));
            assert_eq!(elsewhere.agreements["a"].sqnr_db, f64::INFINITY);
        }
        // one run holds every value, but not every sample's: nothing kept
        let per_sample = whole_sizes.known_bytes(values.iter()).unwrap();
        let tight = whole_sizes.clone().with_budget(2 * per_sample);
        assert_eq!(tight.runs(&values, 2).len(), 1);
        assert!(against(&reference, &tight, None).kept.is_none());
        let roomy = whole_sizes.clone().with_budget(4 * per_sample);
        assert!(against(&reference, &roomy, None).kept.is_some());
        assert_eq!(several.agreements.len(), 4);
        assert!(several.agreements["a"].cosine < 1.0);
        assert!(several.agreements["y"].top1.is_some());
        let outputs = |c: &Compared| {
            c.reference_outputs
                .iter()
                .map(|s| s.iter().map(|t| t.name.clone()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        assert_eq!(outputs(&several), [["y"], ["y"]]);
        assert_eq!(
            one.reference_outputs[1][0].tensor,
            several.reference_outputs[1][0].tensor
        );

        let observed = |exposure: &Exposure| {
            let runs = Runs {
                samples: &samples,
                engine: EngineChoice::Auto,
                exposure,
            };
            observe(&reference, &values, runs).unwrap()
        };
        split.budget = 40;
        assert_eq!(split.runs(&values, 1).len(), 4);
        assert_eq!(observed(&whole), observed(&split));
        assert_eq!(observed(&split).1.len(), 4);
        // m = relu(x) w: the largest is the second sample's first row by w's second column,
        // 4 x 2 - 0.1 x 0.5
        assert_eq!(observed(&split).1["m"].max, 7.95);
    }

    #[test]
    fn available_memory_is_the_least_of_the_system_and_every_cgroup_above() {
        let files = |entries: &[(&str, &str)]| {
            let map: HashMap<String, String> = entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |path: &str| map.get(path).cloned()
        };
        let meminfo = "MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n";
        let system = 20_000_000 * 1024;
        // no cgroup files: the system's
        let none = files(&[("/proc/meminfo", meminfo), ("/proc/self/cgroup", "0::/\n")]);
        assert_eq!(available_memory_in(none), Some(system));
        // v2: the group above limits more than the process's own ("max": none)
        let v2 = files(&[
            ("/proc/meminfo", meminfo),
            ("/proc/self/cgroup", "0::/ci/job\n"),
            ("/sys/fs/cgroup/ci/job/memory.max", "max\n"),
            ("/sys/fs/cgroup/ci/job/memory.current", "1000\n"),
            ("/sys/fs/cgroup/ci/memory.max", "4000000000\n"),
            ("/sys/fs/cgroup/ci/memory.current", "1000000000\n"),
            // a model file just read: its pages count as usage until reclaimed
            (
                "/sys/fs/cgroup/ci/memory.stat",
                "anon 600000000\nactive_file 100000000\ninactive_file 300000000\n",
            ),
        ]);
        assert_eq!(available_memory_in(v2), Some(3_300_000_000));
        // v1: the memory controller's line; a limit near 2^63 above it changes nothing
        let v1 = files(&[
            ("/proc/meminfo", meminfo),
            (
                "/proc/self/cgroup",
                "5:cpu:/x\n4:memory:/docker/abc\n0::/\n",
            ),
            (
                "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
                "1572864000\n",
            ),
            (
                "/sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes",
                "572864000\n",
            ),
            (
                "/sys/fs/cgroup/memory/docker/abc/memory.stat",
                "cache 100\ninactive_file 7\ntotal_inactive_file 0\n",
            ),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            (
                "/sys/fs/cgroup/memory/memory.usage_in_bytes",
                "3305418752\n",
            ),
        ]);
        assert_eq!(available_memory_in(v1), Some(1_000_000_000));
        // a limit above the system's memory: the system's
        let loose = files(&[
            ("/proc/meminfo", meminfo),
            ("/proc/self/cgroup", "0::/\n"),
            ("/sys/fs/cgroup/memory.max", "90000000000\n"),
            ("/sys/fs/cgroup/memory.current", "0\n"),
        ]);
        assert_eq!(available_memory_in(loose), Some(system));
        assert_eq!(available_memory_in(files(&[])), None);
        // and on this machine, something
        if cfg!(target_os = "linux") {
            assert!(available_memory().is_some_and(|b| b > 0));
        }
    }
}
