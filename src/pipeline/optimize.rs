//! The optimize stage: pruning when asked, the lossless passes, quantization when asked, the
//! verification of the result against its input, and the report (`mdeploy.optimize/2`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::data::{DataOptions, verification_data};
use crate::error::{CheckFailed, UsageError, nearest};
use crate::graph::check_model;
use crate::onnx::{ExternalDataPolicy, Model, SaveOptions, SaveSummary};
use crate::passes::prune::{ChannelReport, SparsityReport};
use crate::passes::{
    Culprit, OptimizeOptions, OptimizeReport, Pass, PassKind, bisect, optimize_with_progress,
    preset, registry,
};
use crate::progress::Progress;
use crate::quantize::calibrate::Method;
use crate::quantize::{AccuracyTarget, CalibrationCache, QuantizeReport};
use crate::run::{NamedTensor, SampleChunks};
use crate::verify::{
    Computed, Inputs, Preset, Sample, Status, Tolerance, VerifyReport, verify_models,
};

/// The report's format name.
pub const OPTIMIZE_FORMAT: &str = "mdeploy.optimize/2";
/// Read too: the same fields, with cosine and SQNR pooled over the samples instead of the worst
/// sample's.
pub const OPTIMIZE_FORMATS_READ: &[&str] = &["mdeploy.optimize/1"];

/// Which quantization to apply after the lossless passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuantizeMode {
    /// float16 weights and computation; `io` makes graph inputs and outputs float16 too.
    Fp16 {
        io: bool,
    },
    Int8Dynamic,
    Int8Static,
    /// MatMul weights uint4 in blocks of `block_size` rows.
    Int4WeightOnly {
        block_size: usize,
    },
}

impl QuantizeMode {
    /// The mode `optimize`'s flags or a build's `[optimize]` keys ask for (where more than one
    /// is given, fp16 goes first, then int8).
    pub fn chosen(
        fp16: bool,
        fp16_io: bool,
        int8: Option<super::config::Int8>,
        int4: Option<super::config::Int4>,
        int4_block_size: Option<usize>,
    ) -> Option<QuantizeMode> {
        use super::config::{Int4, Int8};
        match (fp16, int8, int4) {
            (true, _, _) => Some(QuantizeMode::Fp16 { io: fp16_io }),
            (false, Some(Int8::Dynamic), _) => Some(QuantizeMode::Int8Dynamic),
            (false, Some(Int8::Static), _) => Some(QuantizeMode::Int8Static),
            (false, None, Some(Int4::WeightOnly)) => Some(QuantizeMode::Int4WeightOnly {
                block_size: int4_block_size.unwrap_or(crate::quantize::int4::DEFAULT_BLOCK_SIZE),
            }),
            (false, None, None) => None,
        }
    }
}

/// Quantization and its calibration.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    pub mode: Option<QuantizeMode>,
    /// Data the float model is measured on (default: the verification samples).
    pub calibration: Vec<PathBuf>,
    pub method: Method,
    /// Static int8: ranges reused from (or saved to) this file.
    pub cache: Option<PathBuf>,
    pub accuracy_target: AccuracyTarget,
    /// Static int8: the op types to quantize (empty: the default set).
    pub int8_ops: Vec<String>,
    pub exclude_nodes: Vec<String>,
    pub exclude_op_types: Vec<String>,
    /// Static int8: the activations' element type.
    pub activation_type: crate::quantize::qdq::ActivationType,
    /// Static int8: which of the nodes that can be quantized are.
    pub placement: crate::quantize::placement::Placement,
    /// Int8: how far the products' weights reach.
    pub weight_range: crate::quantize::weights::WeightRange,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            mode: None,
            calibration: Vec::new(),
            method: Method::parse("percentile").expect("a method"),
            cache: None,
            accuracy_target: AccuracyTarget::parse(AccuracyTarget::DEFAULT).expect("a target"),
            int8_ops: Vec::new(),
            exclude_nodes: Vec::new(),
            exclude_op_types: Vec::new(),
            activation_type: Default::default(),
            placement: Default::default(),
            weight_range: Default::default(),
        }
    }
}

/// Everything the optimize stage needs.
#[derive(Debug, Clone)]
pub struct OptimizeRequest {
    pub input: PathBuf,
    pub output: PathBuf,
    /// 0 nothing, 1 cleanup and folding, 2 every lossless pass.
    pub level: u8,
    /// Only these passes (empty: the level's preset).
    pub passes: Vec<String>,
    pub skip: Vec<String>,
    /// Magnitude pruning: the fraction of smallest weights zeroed.
    pub prune: Option<f64>,
    /// Channel pruning: the fraction of each Conv's output channels removed.
    pub prune_channels: Option<f64>,
    pub quantize: QuantizeOptions,
    /// The preset verification must meet (default: what was done warrants).
    pub tolerance: Option<Preset>,
    pub fold_size_limit: usize,
    /// Verify the result against the input.
    pub verify: bool,
    /// Write the result even when no engine can run the input to verify it.
    pub allow_unverified: bool,
    /// Write the result even when verification fails.
    pub keep_failed: bool,
    /// On a failed verification, find the first pass after which outputs diverge.
    pub bisect: bool,
    pub data: DataOptions,
    /// Store tensors of 1 KiB or more in `<output>.data`.
    pub external_data: bool,
    /// Record the input's and output's SHA-256 (what `pack` checks a report against).
    pub lineage: bool,
    /// Drop initializers from the graph inputs first, making them constants.
    pub freeze_initializers: bool,
}

impl OptimizeRequest {
    /// A request with the defaults the command line has.
    pub fn new(input: PathBuf, output: PathBuf) -> Self {
        OptimizeRequest {
            input,
            output,
            level: 2,
            passes: Vec::new(),
            skip: Vec::new(),
            prune: None,
            prune_channels: None,
            quantize: QuantizeOptions::default(),
            tolerance: None,
            fold_size_limit: 16 << 20,
            verify: true,
            allow_unverified: false,
            keep_failed: false,
            bisect: false,
            data: DataOptions::default(),
            external_data: false,
            lineage: true,
            freeze_initializers: false,
        }
    }
}

/// The model the stage read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputFile {
    pub path: String,
    pub sha256: Option<String>,
    pub bytes: Option<u64>,
}

/// The model the stage wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputFile {
    #[serde(flatten)]
    pub saved: SaveSummary,
    /// SHA-256 of the ONNX file written (present when lineage was asked for).
    pub sha256: Option<String>,
}

/// What pruning removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PruneReport {
    pub channels: Option<Vec<ChannelReport>>,
    pub magnitude: Option<Vec<SparsityReport>>,
}

/// The optimize report (`mdeploy.optimize/2`): written by `optimize --report` and `build`, read
/// by `pack` and `build` through this same type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OptimizeDocument {
    pub format: String,
    pub mdeploy_version: String,
    pub input: InputFile,
    /// Absent when nothing was written (a failed or impossible verification).
    pub output: Option<OutputFile>,
    pub verification: Option<VerifyReport>,
    pub bisect: Option<Culprit>,
    pub prune: Option<PruneReport>,
    pub quantize: Option<QuantizeReport>,
    pub optimize: OptimizeReport,
    /// A model at opset 6 raised to 7 before anything else (the lowest opset the engines run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opset_raised: Option<crate::convert::OpsetRaised>,
    /// Initializers dropped from the graph inputs by `--freeze-initializers`, when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initializers_frozen: Option<usize>,
    /// Outputs the input declares with a shape its graph does not compute, declared as
    /// computed in the result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs_redeclared: Vec<crate::infer::RedeclaredOutput>,
}

impl OptimizeDocument {
    /// Reads a report, refusing anything that is not an optimize report.
    pub fn from_json(bytes: &[u8], origin: &Path) -> Result<Self, UsageError> {
        crate::json::read_document(bytes, origin, OPTIMIZE_FORMAT, OPTIMIZE_FORMATS_READ)
            .map_err(UsageError)
    }

    /// The report as an archive records it: the same facts without what differs from run to run
    /// (timings) or machine to machine (directories), so the same inputs give the same archive.
    pub fn for_lineage(mut self) -> Self {
        fn file_name(p: &str) -> String {
            Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.to_string())
        }
        self.input.path = file_name(&self.input.path);
        if let Some(o) = &mut self.output {
            o.saved.path = PathBuf::from(file_name(&o.saved.path.to_string_lossy()));
            o.saved.external_data_file = o
                .saved
                .external_data_file
                .as_ref()
                .map(|f| PathBuf::from(file_name(&f.to_string_lossy())));
        }
        if let Some(v) = &mut self.verification {
            v.reference = file_name(&v.reference);
            v.candidate = v.candidate.as_deref().map(file_name);
        }
        for stats in self.optimize.per_pass.values_mut() {
            stats.seconds = 0.0;
        }
        self.optimize.inference.seconds = 0.0;
        self
    }

    /// The tolerance preset what was done warrants: the quantizer's after quantization, exact
    /// when only cleanup passes applied, else fp32.
    pub fn automatic_preset(&self) -> &'static str {
        let kinds: std::collections::HashMap<&str, PassKind> =
            registry().iter().map(|p| (p.name(), p.kind())).collect();
        let lossless_only = self
            .optimize
            .per_pass
            .iter()
            .filter(|(_, s)| s.applied > 0)
            .all(|(name, _)| kinds.get(name.as_str()) == Some(&PassKind::Cleanup));
        match &self.quantize {
            Some(q) => q.preset(),
            None if lossless_only => "exact",
            None => "fp32",
        }
    }

    /// What verifying the result holds it to: `preset` when one is asked for, else the one what
    /// was done warrants; outputs quantization's accuracy target gave a target of their own are
    /// held to that target's cosine alone.
    pub fn verification_tolerance(&self, preset: Option<crate::verify::Preset>) -> Tolerance {
        let preset = preset
            .unwrap_or_else(|| crate::verify::preset(self.automatic_preset()).expect("a preset"));
        match self.quantize.as_ref().and_then(QuantizeReport::accuracy) {
            Some(a) => a.target.tolerance(preset),
            None => Tolerance::from_preset(preset),
        }
    }
}

/// How the result stands against its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    NotVerified,
    Verified,
    /// Lossy pruning changed the numbers and no tolerance was asked for: reported, not enforced.
    NumbersChanged,
    Failed,
    /// No available engine can run the input model.
    Unverifiable,
}

impl Verdict {
    pub fn describe(self) -> &'static str {
        match self {
            Verdict::NotVerified => "not verified (verification off)",
            Verdict::Verified => "verified",
            Verdict::NumbersChanged => {
                "numbers changed (lossy pruning; see the verification report)"
            }
            Verdict::Failed => "FAILED verification",
            Verdict::Unverifiable => "UNVERIFIED: no available engine can run the model",
        }
    }
}

/// What the optimize stage produced.
#[derive(Debug)]
pub struct OptimizeOutcome {
    pub document: OptimizeDocument,
    pub verdict: Verdict,
    /// Set when the stage failed after its report was made (verification failed or could not be
    /// made): the report still describes what happened.
    pub failure: Option<CheckFailed>,
}

/// The passes a level, `passes` and `skip` select; an unknown name is a usage error naming the
/// nearest pass.
pub fn choose_passes(
    level: u8,
    passes: &[String],
    skip: &[String],
) -> Result<Vec<&'static dyn Pass>, UsageError> {
    let known: Vec<&str> = registry().iter().map(|p| p.name()).collect();
    for name in passes.iter().chain(skip) {
        if !known.contains(&name.as_str()) {
            let hint = nearest(name, known.iter().copied())
                .map(|n| format!("; did you mean '{n}'?"))
                .unwrap_or_default();
            return Err(UsageError(format!(
                "no pass '{name}' (see `mdeploy optimize --list-passes`){hint}"
            )));
        }
    }
    if level > 2 {
        return Err(UsageError(format!("optimization level {level}: 0, 1 or 2")));
    }
    let base = if passes.is_empty() {
        preset(level)
    } else {
        registry()
            .into_iter()
            .filter(|p| passes.iter().any(|n| n == p.name()))
            .collect()
    };
    Ok(base
        .into_iter()
        .filter(|p| !skip.iter().any(|n| n == p.name()))
        .collect())
}

/// Runs the optimize stage: reads `input`, rewrites it, verifies and writes `output` (unless
/// verification refuses it), and returns the report.
pub fn optimize_file(
    req: &OptimizeRequest,
    progress: &dyn Progress,
) -> anyhow::Result<OptimizeOutcome> {
    let passes = choose_passes(req.level, &req.passes, &req.skip)?;
    if !req.quantize.calibration.is_empty() && req.quantize.mode.is_none() {
        return Err(UsageError(
            "calibration data applies to quantization (fp16, int8, int4)".into(),
        )
        .into());
    }
    let original = Model::load(&req.input)?;
    check_model(&original)?;
    let mut model = Model::load(&req.input)?;
    // hashed from the mapping saving reads anyway (hashing `original`'s would make a second
    // copy resident)
    let input_sha256 = req.lineage.then(|| model.file_sha256()).flatten();
    // a model at opset 6 is optimized and written raised to 7, which the engines run (one that
    // cannot be raised stays at 6: the engines refuse it, naming the node, and the
    // verification says so)
    let opset_raised = super::raise_legacy(&mut model).ok().flatten();
    let initializers_frozen = req
        .freeze_initializers
        .then(|| crate::lint::freeze_initializers(&mut model));
    let shapes = req.data.shapes()?;
    crate::convert::apply_input_shapes(&mut model, &shapes)?;
    let pruning = prune(req, &mut model)?;
    let options = OptimizeOptions {
        fold_size_limit: req.fold_size_limit,
        ..Default::default()
    };
    // what the passes start from (bisection replays them from here, not from the file as read)
    let start = Model::from_proto(model.proto.clone(), model.dir().to_path_buf());
    let report = optimize_with_progress(&mut model, &passes, &options, progress)?;
    // while the model is quantized (mdeploy's own work, on one core), the input model runs on
    // the verification's samples on the other, in the engine the verification runs it in beside
    // a quantized model. Only where those are the data given or seeded random samples: loaded
    // before quantizing, they are held through it, and calibration data (which quantizing
    // streams, whatever its size) is loaded whole only after it
    let beside = req.verify
        && req.quantize.mode.is_some()
        && (!req.data.data.is_empty() || req.quantize.calibration.is_empty());
    let early = match beside {
        true => Some(verification_samples(req, &original)?),
        false => None,
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (quantized, computed, reference) = std::thread::scope(|s| {
        let run = early
            .as_ref()
            .map(|(samples, _)| s.spawn(|| run_input_beside(req, &original, samples, &stop)));
        // the --data given, loaded already (random samples are drawn for the model quantized)
        let data = early
            .as_ref()
            .filter(|_| !req.data.data.is_empty())
            .map(|(samples, _)| samples.as_slice());
        let quantized = quantize(req, &mut model, data, progress);
        if quantized.is_err() {
            // the error is not kept waiting for outputs no one will read
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // a run that failed (or panicked) is made again by the verification, which reports it
        let reference = run.and_then(|run| run.join().ok()).flatten();
        quantized.map(|(q, c)| (q, c, reference))
    })?;
    // what the rewrites made inferable must agree with what the outputs declare (the `onnx`
    // checker refuses a model whose declared output contradicts the shape it infers)
    let facts = crate::infer::Inference::of_model(&model);
    let outputs_redeclared = crate::infer::redeclare_outputs(&mut model, &facts);
    drop(facts);
    let verification = match (req.verify, early) {
        (true, Some(samples)) => Some(samples),
        (true, None) => Some(verification_samples(req, &original)?),
        (false, _) => None,
    };
    let mut document = OptimizeDocument {
        format: OPTIMIZE_FORMAT.into(),
        mdeploy_version: env!("CARGO_PKG_VERSION").into(),
        input: InputFile {
            path: req.input.display().to_string(),
            sha256: input_sha256,
            bytes: original.file_len(),
        },
        output: None,
        verification: None,
        bisect: None,
        prune: pruning,
        quantize: quantized,
        optimize: report,
        opset_raised,
        initializers_frozen,
        outputs_redeclared,
    };
    if let Some(samples) = &verification {
        let tolerance = document.verification_tolerance(req.tolerance);
        let (v, culprit) = verify(
            req,
            &original,
            &start,
            &model,
            &passes,
            &options,
            tolerance,
            Computations {
                samples,
                reference: reference.as_ref(),
                result: computed.as_ref(),
            },
            progress,
        )?;
        document.verification = Some(v);
        document.bisect = culprit;
    }
    let status = document.verification.as_ref().map(|v| v.status);
    let lossy = document.prune.is_some();
    let enforced = !lossy || req.tolerance.is_some();
    let refuse = match status {
        Some(Status::Failed) => enforced && !req.keep_failed,
        Some(Status::Unsupported) => !req.allow_unverified,
        _ => false,
    };
    if !refuse {
        let policy = if req.external_data {
            ExternalDataPolicy::External { threshold: 1024 }
        } else {
            ExternalDataPolicy::Auto
        };
        let saved = model.save(
            &req.output,
            SaveOptions {
                external_data: policy,
            },
        )?;
        drop(model);
        let sha256 = if req.lineage {
            Model::load(&req.output)?.file_sha256()
        } else {
            None
        };
        document.output = Some(OutputFile { saved, sha256 });
    }
    let verdict = match status {
        None => Verdict::NotVerified,
        Some(Status::Passed) => Verdict::Verified,
        Some(Status::Failed) if !enforced => Verdict::NumbersChanged,
        Some(Status::Failed) => Verdict::Failed,
        Some(Status::Unsupported) => Verdict::Unverifiable,
    };
    let failure = match verdict {
        Verdict::Failed => Some(CheckFailed(format!(
            "the optimized model does not match the input{}",
            if refuse {
                "; nothing written (--keep-failed writes it anyway)"
            } else {
                ""
            }
        ))),
        Verdict::Unverifiable if refuse => {
            let why = document
                .verification
                .as_ref()
                .and_then(|v| v.unsupported.as_ref())
                .map_or("no available engine runs the input model", |u| {
                    u.message.as_str()
                });
            Some(CheckFailed(format!(
                "the result cannot be verified: {why}; nothing written (--allow-unverified \
                 writes it anyway)"
            )))
        }
        _ => None,
    };
    Ok(OptimizeOutcome {
        document,
        verdict,
        failure,
    })
}

/// Calibration samples the accuracy search measures on, at most: enough for each quantized
/// node's SQNR to settle, where calibration may take hundreds.
pub const MEASURED_CALIBRATION_SAMPLES: usize = 16;

/// The indices of at most `k` of `n` items, spread evenly over them, ascending (all of them
/// where there are no more than `k`): a calibration set ordered by class or source is measured
/// on each part of it.
fn spread(n: usize, k: usize) -> impl Iterator<Item = usize> {
    let take = n.min(k);
    (0..take).map(move |i| i * n / take)
}

/// Quantizes when asked, measuring the float model on the calibration data; with the report,
/// what the quantized model computed, as written, on the samples the accuracy search measured
/// (where it ran it so). `data`: the `--data` samples, where the caller has loaded them.
fn quantize(
    req: &OptimizeRequest,
    model: &mut Model,
    data: Option<&[Sample]>,
    progress: &dyn Progress,
) -> anyhow::Result<(Option<QuantizeReport>, Option<Computed>)> {
    let q = &req.quantize;
    let Some(mode) = q.mode else {
        if !q.exclude_nodes.is_empty() || !q.exclude_op_types.is_empty() {
            return Err(UsageError(
                "excluded nodes and op types apply to quantization (fp16, int8, int4)".into(),
            )
            .into());
        }
        return Ok((None, None));
    };
    if mode == QuantizeMode::Int8Static && q.calibration.is_empty() && req.data.data.is_empty() {
        return Err(UsageError(
            "static int8 needs calibration data: --calibration DIR (or --data)".into(),
        )
        .into());
    }
    let float_outputs = crate::quantize::float_outputs(model);
    if let Some(o) = q
        .accuracy_target
        .by_output
        .keys()
        .find(|o| !float_outputs.contains(o))
    {
        return Err(UsageError(format!(
            "the accuracy target names output '{o}', which is not a float output of the model (float outputs: {})",
            float_outputs.join(", ")
        ))
        .into());
    }
    progress.on_start("quantize", 1);
    let mut random = false;
    // calibration data given is read a chunk at a time by each pass over it; the verification
    // data it defaults to is in memory (the verification holds it all anyway), read here unless
    // the caller has it already
    let read_here;
    let (loaded, on_disk, origin): (&[Sample], _, _) =
        if let (true, Some(data)) = (q.calibration.is_empty(), data) {
            (data, None, "the verification data".to_string())
        } else if q.calibration.is_empty() {
            let (samples, seed) = req.data.load(model)?;
            random = seed.is_some();
            let origin = match seed {
                Some(seed) => format!("{} random samples, seed {seed}", samples.len()),
                None => "the verification data".into(),
            };
            read_here = samples;
            (&read_here, None, origin)
        } else {
            let set = super::data::SampleSet::open(&q.calibration)?;
            let names: Vec<String> = q
                .calibration
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            (&[], Some(set), names.join(", "))
        };
    let inputs: Vec<&[NamedTensor]> = loaded.iter().map(|s| s.inputs.as_slice()).collect();
    let samples: &dyn SampleChunks = match &on_disk {
        Some(set) => set,
        None => &inputs,
    };
    // accuracy is measured on the verification data, when given beyond the calibration data,
    // and on calibration samples spread over the set, as many as
    // `MEASURED_CALIBRATION_SAMPLES`: every sample measured costs the search three runs or more
    // (the float model and the candidate with their values exposed, the candidate as written),
    // against one to calibrate on it
    let held_out_paths: Vec<PathBuf> = req
        .data
        .data
        .iter()
        .filter(|d| !q.calibration.contains(d))
        .cloned()
        .collect();
    let held_out = if q.calibration.is_empty() || held_out_paths.is_empty() {
        Vec::new()
    } else {
        crate::verify::load_samples(&held_out_paths)?
    };
    // where the verification runs on the calibration data (no other --data), the search
    // measures all of it: what it accepts is what the verification will judge
    let measured: Vec<usize> = if held_out.is_empty() {
        (0..samples.len()).collect()
    } else {
        spread(samples.len(), MEASURED_CALIBRATION_SAMPLES).collect()
    };
    let read = match &on_disk {
        Some(set) => set.samples_at(&measured)?,
        None => Vec::new(),
    };
    let evaluation: Vec<&[NamedTensor]> = match &on_disk {
        Some(_) => read.iter().map(|s| s.inputs.as_slice()).collect::<Vec<_>>(),
        None => measured.iter().map(|&i| inputs[i]).collect(),
    }
    .into_iter()
    .chain(held_out.iter().map(|s| s.inputs.as_slice()))
    .collect();
    let (engine, both) = req.data.engines()?;
    // what tells a model no engine runs from a result that does not run
    let first = evaluation.first();
    let as_written = std::rc::Rc::new(std::cell::RefCell::new(None));
    let calibration = crate::quantize::Calibration {
        samples,
        evaluation: &evaluation,
        engine,
        origin,
        as_written: as_written.clone(),
    };
    let exclude_nodes: BTreeSet<String> = q.exclude_nodes.iter().cloned().collect();
    let exclude_op_types: BTreeSet<String> = q.exclude_op_types.iter().cloned().collect();
    // on random inputs a classifier's top class is noise: only the cosine binds there
    let target = if random {
        q.accuracy_target.without_top1()
    } else {
        q.accuracy_target.clone()
    };
    let quantized = || -> anyhow::Result<QuantizeReport> {
        Ok(match mode {
            QuantizeMode::Int8Dynamic => {
                let options = crate::quantize::dynamic::DynamicOptions {
                    exclude_nodes: exclude_nodes.into_iter().collect(),
                    exclude_op_types: exclude_op_types.into_iter().collect(),
                    weight_range: q.weight_range,
                    ..Default::default()
                };
                let stage = unless_unrunnable(req, model, (engine, first), calibration, |m, c| {
                    crate::quantize::to_int8_dynamic(m, &options, target.clone(), c)
                })?;
                if let Some(a) = stage.accuracy.as_ref().filter(|a| !a.met) {
                    return Err(target_missed("dynamic int8", a));
                }
                QuantizeReport::Int8Dynamic(stage)
            }
            QuantizeMode::Int8Static => {
                let options = crate::quantize::qdq::StaticOptions {
                    activation_type: q.activation_type,
                    placement: q.placement,
                    weight_range: q.weight_range,
                    ops: (!q.int8_ops.is_empty()).then(|| q.int8_ops.iter().cloned().collect()),
                    exclude_nodes: exclude_nodes.into_iter().collect(),
                    exclude_op_types: exclude_op_types.into_iter().collect(),
                    ..Default::default()
                };
                let cache = match &q.cache {
                    Some(path) if path.exists() => Some(
                        serde_json::from_slice::<CalibrationCache>(&std::fs::read(path)?).map_err(
                            |e| {
                                UsageError(format!(
                                    "{}: not a calibration cache: {e}",
                                    path.display()
                                ))
                            },
                        )?,
                    ),
                    _ => None,
                };
                let (stage, ranges) = crate::quantize::to_int8_static(
                    model,
                    &options,
                    q.method,
                    target,
                    calibration,
                    cache.as_ref(),
                )?;
                if let Some(path) = &q.cache
                    && !stage.ranges_from_cache
                {
                    let mut text = serde_json::to_vec_pretty(&ranges)?;
                    text.push(b'\n');
                    crate::onnx::save_bytes_atomically(path, &text)?;
                }
                if !stage.accuracy.met {
                    return Err(target_missed("static int8", &stage.accuracy));
                }
                QuantizeReport::Int8Static(stage)
            }
            QuantizeMode::Int4WeightOnly { block_size } => {
                if both || engine == crate::run::EngineChoice::Only(crate::run::EngineKind::Tract) {
                    return Err(UsageError(
                        "int4 models run in onnxruntime only (tract has no 4-bit types): --engine ort or auto".into(),
                    )
                    .into());
                }
                // measured and verified in onnxruntime: without it nothing could be checked
                crate::run::ort::library().map_err(anyhow::Error::from)?;
                let options = crate::quantize::int4::Int4Options {
                    block_size,
                    exclude_nodes: exclude_nodes.into_iter().collect(),
                    exclude_op_types: exclude_op_types.into_iter().collect(),
                    ..Default::default()
                };
                let stage = crate::quantize::to_int4(model, &options, target, calibration)
                    .map_err(|e| match e {
                        crate::quantize::QuantizeError::Unsupported(why) => UsageError(why).into(),
                        e => anyhow::Error::from(e),
                    })?;
                if !stage.accuracy.met {
                    return Err(target_missed("int4 weight-only", &stage.accuracy));
                }
                QuantizeReport::Int4WeightOnly(stage)
            }
            QuantizeMode::Fp16 { io } => {
                let options = crate::quantize::fp16::Fp16Options {
                    keep_io_types: !io,
                    exclude_nodes: exclude_nodes.into_iter().collect(),
                    exclude_op_types: exclude_op_types.into_iter().collect(),
                    ..Default::default()
                };
                let stage = unless_unrunnable(req, model, (engine, first), calibration, |m, c| {
                    crate::quantize::to_fp16(m, options.clone(), target.clone(), c)
                })?;
                if let Some(a) = stage.accuracy.as_ref().filter(|a| !a.met) {
                    return Err(target_missed("fp16", a));
                }
                QuantizeReport::Fp16(stage)
            }
        })
    };
    // a model that does not run on random inputs may need real ones
    let report = quantized().map_err(|e| match evaluation.first() {
        Some(sample) if random && ran_and_failed(&e) => e.context(format!(
            "the model did not run {}; a model that needs real values, such as a sample rate \
             or a minimum length, is measured on them with --data or --calibration, and \
             --input-shape sets other sizes",
            crate::verify::random_inputs(sample)
        )),
        _ => e,
    })?;
    progress.on_finish();
    // kept for the verification, where there is one
    let computed = as_written
        .take()
        .filter(|_| req.verify)
        .map(|w| Computed::new(w.engine, evaluation.iter().copied(), w.outputs));
    Ok((Some(report), computed))
}

/// Whether an engine failed to run a model somewhere in `e`: a run that failed, or both
/// engines failing (not a model one engine could not load, nor a missing engine).
fn ran_and_failed(e: &anyhow::Error) -> bool {
    use crate::run::RunError;
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<RunError>(),
            Some(RunError::Run(_) | RunError::OrtRun(_) | RunError::Neither { .. })
        )
    })
}

/// Applies the requested pruning before the lossless passes; returns what it did.
fn prune(req: &OptimizeRequest, model: &mut Model) -> anyhow::Result<Option<PruneReport>> {
    if req.prune.is_none() && req.prune_channels.is_none() {
        return Ok(None);
    }
    for (what, v) in [
        ("magnitude pruning", req.prune),
        ("channel pruning", req.prune_channels),
    ] {
        if v.is_some_and(|v| !(0.0..1.0).contains(&v)) {
            return Err(UsageError(format!("{what} takes a fraction in [0, 1)")).into());
        }
    }
    let ctx = crate::passes::PassContext::new(model, 0, 0);
    let mut graph = crate::graph::Graph::new(std::mem::take(model.graph_mut()));
    let channels = req
        .prune_channels
        .map(|f| crate::passes::prune::prune_channels(&mut graph, &ctx, f));
    let magnitude = req
        .prune
        .map(|s| crate::passes::prune::prune_magnitude(&mut graph, &ctx, s));
    *model.graph_mut() = graph.into_proto();
    Ok(Some(PruneReport {
        channels,
        magnitude,
    }))
}

/// `quantize(model, Some(calibration))`, a quantization that runs the input model to measure it
/// (and its result to compare). Where it fails because the input model runs in no engine on the
/// `first` sample (not for want of data, nor because the data is wrong, nor because the result
/// does not run), `quantize(model, None)` when the result may be written unverified
/// (`--allow-unverified`: nothing could verify it either), else the error naming that way out.
/// A failed quantization leaves `model` as it was.
fn unless_unrunnable<'c, T>(
    req: &OptimizeRequest,
    model: &mut Model,
    (engine, first): (crate::run::EngineChoice, Option<&[NamedTensor]>),
    calibration: crate::quantize::Calibration<'c>,
    quantize: impl Fn(
        &mut Model,
        Option<crate::quantize::Calibration<'c>>,
    ) -> Result<T, crate::quantize::QuantizeError>,
) -> anyhow::Result<T> {
    use crate::run::RunError;
    let e = match quantize(model, Some(calibration)) {
        Ok(done) => return Ok(done),
        Err(e) => e,
    };
    let unrunnable = matches!(&e, crate::quantize::QuantizeError::Run(r)
        if !crate::run::is_input_problem(r)
            && !matches!(r, RunError::Stopped | RunError::OrtUnavailable(_)))
        && first.is_none_or(|s| crate::run::run_all(model, engine, &[s], || {}).is_err());
    if unrunnable && req.allow_unverified {
        return Ok(quantize(model, None)?);
    }
    let e = anyhow::Error::from(e);
    Err(if unrunnable {
        e.context(
            "no available engine runs the model to measure it; --allow-unverified converts \
             without measuring and writes the result unverified",
        )
    } else {
        e
    })
}

/// The error of a quantization that cannot meet its accuracy target.
fn target_missed(mode: &str, a: &crate::quantize::AccuracyOutcome) -> anyhow::Error {
    if let Some(why) = &a.unmeasured {
        return CheckFailed(format!(
            "{mode} cannot keep the outputs within the verification preset ({why} to hold to \
             the accuracy target {}); nothing written",
            a.target.describe()
        ))
        .into();
    }
    if a.target_held {
        return CheckFailed(format!(
            "{mode} keeps the accuracy target ({}: the best reached {}) but not the outputs \
             within its verification preset (docs/verify.md), with every node it could return \
             to float; nothing written",
            a.target.describe(),
            a.describe()
        ))
        .into();
    }
    CheckFailed(format!(
        "{mode} cannot meet the accuracy target ({}): the best reached {}; nothing written",
        a.target.describe(),
        a.describe()
    ))
    .into()
}

/// The verification's samples (the data, or seeded random ones): the data given, else the
/// calibration data.
fn verification_samples(
    req: &OptimizeRequest,
    original: &Model,
) -> anyhow::Result<(Vec<Sample>, Option<u64>)> {
    let data = DataOptions {
        data: verification_data(&req.data.data, &req.quantize.calibration),
        ..req.data.clone()
    };
    data.load(original)
}

/// The input model's outputs on the verification's samples, in the engine the verification
/// runs it in beside a quantized model; `None` where it does not run there (the verification
/// runs it again and reports why) or `stop` is set before the last sample.
fn run_input_beside(
    req: &OptimizeRequest,
    original: &Model,
    samples: &[Sample],
    stop: &std::sync::atomic::AtomicBool,
) -> Option<Computed> {
    let (choice, _) = req.data.engines().ok()?;
    let engine = crate::verify::beside_reduced_precision(choice, original);
    let inputs: Vec<&[NamedTensor]> = samples.iter().map(|s| s.inputs.as_slice()).collect();
    let mut outputs = Vec::with_capacity(samples.len());
    let until = UntilStopped {
        samples: &inputs,
        stop,
    };
    let ran_in = crate::run::run_each(original, engine, &until, |k, out| {
        outputs.truncate(k);
        outputs.push(out);
    })
    .ok()?;
    Some(Computed::new(
        ran_in,
        samples.iter().map(|s| s.inputs.as_slice()),
        outputs,
    ))
}

/// Samples handed out one at a time until `stop` is set.
struct UntilStopped<'a> {
    samples: &'a [&'a [NamedTensor]],
    stop: &'a std::sync::atomic::AtomicBool,
}

impl SampleChunks for UntilStopped<'_> {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn first(&self) -> Option<&[NamedTensor]> {
        self.samples.first().copied()
    }

    fn each_chunk(&self, f: &mut crate::run::OnChunk) -> Result<(), crate::run::RunError> {
        for one in self.samples.chunks(1) {
            if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(crate::run::RunError::Stopped);
            }
            f(one)?;
        }
        Ok(())
    }
}

/// The verification's samples, with what the models computed on them before it.
struct Computations<'a> {
    samples: &'a (Vec<Sample>, Option<u64>),
    /// The input model's outputs, computed while quantizing.
    reference: Option<&'a Computed>,
    /// The result's, computed by the quantization's accuracy search.
    result: Option<&'a Computed>,
}

/// Verifies the result against the input on `computed`'s samples, with the tolerance asked for
/// or the one what was done warrants; bisects on failure when asked.
#[allow(clippy::too_many_arguments)]
fn verify(
    req: &OptimizeRequest,
    original: &Model,
    start: &Model,
    optimized: &Model,
    passes: &[&'static dyn Pass],
    options: &OptimizeOptions,
    tolerance: Tolerance,
    computed: Computations,
    progress: &dyn Progress,
) -> anyhow::Result<(VerifyReport, Option<Culprit>)> {
    let (samples, random_seed) = computed.samples;
    let (engine, compare_engines) = req.data.engines()?;
    let inputs = Inputs {
        samples,
        random_seed: *random_seed,
        engine,
        compare_engines,
        computed: computed.result,
        reference_computed: computed.reference,
    };
    let name = req.output.display().to_string();
    let v = verify_models(
        (original, "input"),
        (optimized, &name),
        inputs,
        tolerance.clone(),
        progress,
    )?;
    let culprit = (v.status == Status::Failed && req.bisect)
        .then(|| {
            bisect(
                original, start, passes, options, samples, &tolerance, engine,
            )
        })
        .flatten();
    Ok((v, culprit))
}

#[cfg(test)]
mod tests {
    use super::{OptimizeRequest, spread, unless_unrunnable};
    use crate::graph::ModelBuilder;
    use crate::onnx::{DataType, Model};
    use crate::quantize::{Calibration, QuantizeError};
    use crate::run::{EngineChoice, NamedTensor, RunError};

    /// x -> Relu -> y, which both engines run, and a sample for it.
    fn relu() -> (Model, Vec<NamedTensor>) {
        let proto = ModelBuilder::new(17)
            .input("x", DataType::Float, &["2"])
            .node("Relu", &["x"], &["y"])
            .output("y", DataType::Float, &["2"])
            .build();
        let x = tract_onnx::prelude::tract_ndarray::arr1(&[-1f32, 2.0]).into_dyn();
        let sample = vec![NamedTensor {
            name: "x".into(),
            tensor: x.into(),
        }];
        (Model::from_proto(proto, std::env::temp_dir()), sample)
    }

    /// Where the quantized result fails to run but the input model runs, the failure is the
    /// result's: `--allow-unverified` does not write it unmeasured, and the error stays as it is.
    #[test]
    fn a_result_that_fails_while_the_input_runs_stays_an_error() {
        let (mut model, sample) = relu();
        let mut req = OptimizeRequest::new("in.onnx".into(), "out.onnx".into());
        req.allow_unverified = true;
        let samples = vec![sample.as_slice()];
        let calibration = Calibration {
            samples: &samples,
            evaluation: &samples,
            engine: EngineChoice::Auto,
            origin: "test".into(),
            as_written: Default::default(),
        };
        let unmeasured = std::cell::Cell::new(false);
        let quantize = |_: &mut Model, c: Option<Calibration>| match c {
            Some(_) => Err(QuantizeError::Run(RunError::Run(
                "the result: no kernel".into(),
            ))),
            None => {
                unmeasured.set(true);
                Ok(())
            }
        };
        let first = (EngineChoice::Auto, Some(sample.as_slice()));
        let e = unless_unrunnable(&req, &mut model, first, calibration, quantize).unwrap_err();
        assert!(!unmeasured.get(), "converted unmeasured");
        let message = format!("{e:#}");
        assert!(message.contains("the result: no kernel"), "{message}");
        assert!(!message.contains("--allow-unverified"), "{message}");
    }

    #[test]
    fn spread_takes_all_of_a_few_and_an_even_spread_of_many_in_order() {
        assert_eq!(spread(5, 16).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(spread(5, 5).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        let taken: Vec<usize> = spread(64, 16).collect();
        assert_eq!(taken, (0..16).map(|i| 4 * i).collect::<Vec<_>>());
        assert_eq!(
            spread(20, 16).collect::<Vec<_>>(),
            [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15, 16, 17, 18]
        );
        assert_eq!(spread(0, 16).count(), 0);
    }
}
