//! Quantization: float16 conversion ([`fp16`]) and int8 ([`dynamic`]), measured against the
//! float model on calibration data ([`ranges`]).

pub mod calibrate;
pub mod dynamic;
pub mod embedding;
pub mod fp16;
mod fp16_ops;
pub mod int4;
pub mod placement;
pub mod qdq;
pub mod ranges;
#[cfg(test)]
mod test_models;
pub mod weights;

use crate::graph::GraphError;
use crate::onnx::OnnxError;
use crate::onnx::proto::{AttributeProto, NodeProto};
use crate::run::RunError;

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("calibration: {0}")]
    Run(#[from] RunError),
    /// The converted model breaks a type constraint: a bug in the conversion, caught before
    /// anything is written.
    #[error("the converted model's types are inconsistent: {}", .0.join("; "))]
    Inconsistent(Vec<String>),
    /// The model cannot take this quantization at all (the reason names what stops it).
    #[error("{0}")]
    Unsupported(String),
}

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::onnx::Model;
use crate::run::{EngineChoice, EngineKind, NamedTensor, SampleChunks};

/// Calibration data and the engine that runs the float model on it.
pub struct Calibration<'a> {
    pub samples: &'a dyn SampleChunks,
    /// What accuracy is measured on: some calibration samples and any verification data.
    pub evaluation: &'a [&'a [NamedTensor]],
    pub engine: EngineChoice,
    /// Where the samples came from, for the report.
    pub origin: String,
    /// Where the quantizer leaves what the model it returns computed, as written, on each
    /// `evaluation` sample, where the accuracy search ran it so (the verification after it
    /// reads these instead of running it again on the same inputs).
    pub as_written: std::rc::Rc<std::cell::RefCell<Option<AsWritten>>>,
}

/// A quantized model's graph outputs on each evaluation sample, run as written (no value
/// exposed) in `engine`.
#[derive(Debug)]
pub struct AsWritten {
    pub engine: EngineKind,
    pub outputs: Vec<Vec<NamedTensor>>,
}

/// What measuring the float model on calibration data found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalibrationSummary {
    pub origin: String,
    pub samples: usize,
    /// The engine that ran the float model on the samples (none where nothing was run: nothing
    /// could be quantized).
    pub engine: Option<EngineKind>,
    pub values_measured: usize,
}

/// One quantized node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuantizedNode {
    pub node: String,
    pub op: String,
    /// The value the node writes (its name is kept).
    pub output: String,
    pub weight: String,
    /// `[K, N]` as multiplied (after any transpose); an embedding table's `[V, D]`.
    pub weight_shape: [usize; 2],
    /// Signal-to-quantization-noise ratio of the int8 weight against the float one, in dB.
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub weight_sqnr_db: f64,
}

/// A node a quantizer left in float, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptFloat {
    pub node: String,
    pub op: String,
    pub reason: String,
}

/// What the nodes a quantizer writes in place of `node` are named after: its name, else its
/// first output.
pub(crate) fn node_base(node: &NodeProto) -> String {
    if node.name().is_empty() {
        node.output.first().cloned().unwrap_or_default()
    } else {
        node.name().to_string()
    }
}

/// Why the user's `--exclude-nodes` or `--exclude-op-types` leave `node` in float, if they do.
pub(crate) fn excluded(
    node: &NodeProto,
    nodes: &std::collections::HashSet<String>,
    op_types: &std::collections::HashSet<String>,
) -> Option<String> {
    if nodes.contains(node.name()) {
        Some("excluded by --exclude-nodes".into())
    } else if op_types.contains(node.op_type()) {
        Some("excluded by --exclude-op-types".into())
    } else {
        None
    }
}

/// What a quantizer did to the model's opset to write the operators it needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpsetChange {
    /// The opset the model had, when it was raised.
    #[serde(default)]
    pub opset_raised_from: Option<i64>,
    /// The opset it was raised to.
    #[serde(default)]
    pub opset_raised_to: Option<i64>,
    /// Nodes rewritten to keep their meaning at the raised opset.
    #[serde(default)]
    pub rewritten_for_opset: Vec<String>,
    /// Why a model below the opset needed could not be raised to it.
    #[serde(default)]
    pub opset_kept_because: Option<String>,
}

/// A model raised to the opset a quantizer needs ([`crate::onnx::upgrade`]) before it is known
/// whether anything will be quantized: [`Raise::settle`] keeps the raise only where something
/// was.
pub(crate) struct Raise {
    /// The model as it was, where it was raised (or always, when kept to restore).
    before: Option<Model>,
    outcome: Option<Result<crate::onnx::upgrade::Upgrade, Vec<String>>>,
}

impl Raise {
    /// Raises `model` to `opset` where it is below it (a refused raise changes nothing).
    pub(crate) fn to(model: &mut Model, opset: i64) -> Raise {
        let below = model.opset("").unwrap_or(1) < opset;
        Raise::new(model, opset, below)
    }

    /// [`Raise::to`], keeping the model as it was for [`Raise::restore`] whether or not it is
    /// raised.
    pub(crate) fn keeping(model: &mut Model, opset: i64) -> Raise {
        Raise::new(model, opset, true)
    }

    fn new(model: &mut Model, opset: i64, keep: bool) -> Raise {
        let before =
            keep.then(|| Model::from_proto(model.proto.clone(), model.dir().to_path_buf()));
        let outcome = (model.opset("").unwrap_or(1) < opset)
            .then(|| crate::onnx::upgrade::upgrade(model, opset));
        Raise { before, outcome }
    }

    /// Puts back the model as it was (kept by [`Raise::keeping`], or where it was raised).
    pub(crate) fn restore(self, model: &mut Model) {
        if let Some(before) = self.before {
            *model = before;
        }
    }

    /// Why the model could not be raised, where it could not.
    pub(crate) fn refused(&self) -> Option<String> {
        match &self.outcome {
            Some(Err(why)) => Some(why.join("; ")),
            _ => None,
        }
    }

    /// Keeps the raise where `used` (something was quantized) and otherwise puts the model
    /// back as it was before it; what the report says of it.
    pub(crate) fn settle(self, model: &mut Model, used: bool) -> OpsetChange {
        match self.outcome {
            Some(Ok(u)) if used => OpsetChange {
                opset_raised_from: Some(u.from),
                opset_raised_to: Some(u.to),
                rewritten_for_opset: u.rewritten,
                opset_kept_because: None,
            },
            Some(Ok(_)) => {
                *model = self.before.expect("kept with every raise");
                OpsetChange::default()
            }
            Some(Err(why)) => OpsetChange {
                opset_kept_because: Some(why.join("; ")),
                ..Default::default()
            },
            None => OpsetChange::default(),
        }
    }
}

/// What quantization did, by mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "mode")]
pub enum QuantizeReport {
    #[serde(rename = "fp16")]
    Fp16(Fp16Stage),
    #[serde(rename = "int8-dynamic")]
    Int8Dynamic(DynamicStage),
    #[serde(rename = "int8-static")]
    Int8Static(StaticStage),
    #[serde(rename = "int4-weight-only")]
    Int4WeightOnly(Int4Stage),
}

impl QuantizeReport {
    /// The verification preset the mode warrants.
    pub fn preset(&self) -> &'static str {
        match self {
            QuantizeReport::Fp16(_) => "fp16",
            QuantizeReport::Int8Dynamic(_)
            | QuantizeReport::Int8Static(_)
            | QuantizeReport::Int4WeightOnly(_) => "int8",
        }
    }

    /// The accuracy target and how it was met, where it was measured.
    pub fn accuracy(&self) -> Option<&AccuracyOutcome> {
        match self {
            QuantizeReport::Fp16(s) => s.accuracy.as_ref(),
            QuantizeReport::Int8Dynamic(s) => s.accuracy.as_ref(),
            QuantizeReport::Int8Static(s) => Some(&s.accuracy),
            QuantizeReport::Int4WeightOnly(s) => Some(&s.accuracy),
        }
    }
}

/// The dynamic int8 stage's report: what was quantized, and how far each quantized node's
/// output moved from float on the calibration data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DynamicStage {
    #[serde(flatten)]
    pub quantization: dynamic::DynamicReport,
    pub calibration: Option<CalibrationSummary>,
    /// Per quantized node's output: SQNR in dB against the float model over the samples pooled
    /// (lowest first).
    #[serde(deserialize_with = "crate::json::pairs_inf_if_null")]
    pub output_sqnr_db: Vec<(String, f64)>,
    /// The accuracy target and how it was met (with calibration data).
    #[serde(default)]
    pub accuracy: Option<AccuracyOutcome>,
}

/// Quantizes `model`'s MatMul/Gemm weights to int8 with activations quantized at run time. With
/// calibration data, measures each quantized node's output against the float model, and when a
/// graph output misses `target` (or the int8 preset), returns the fewest most harmful nodes (the
/// lowest output SQNR first) to float, as static quantization does.
pub fn to_int8_dynamic(
    model: &mut Model,
    options: &dynamic::DynamicOptions,
    target: AccuracyTarget,
    calibration: Option<Calibration>,
) -> Result<DynamicStage, QuantizeError> {
    let Some(c) = calibration else {
        let quantization = dynamic::quantize(model, options)?;
        return Ok(DynamicStage {
            quantization,
            calibration: None,
            output_sqnr_db: Vec::new(),
            accuracy: None,
        });
    };
    let exposure = ranges::Exposure::at(model, &[&c.evaluation])?;
    let float = Model::from_proto(model.proto.clone(), model.dir().to_path_buf());
    let outputs = float_outputs(&float);
    let quantize = |reverted: &std::collections::BTreeMap<String, String>| {
        let mut candidate = Model::from_proto(float.proto.clone(), float.dir().to_path_buf());
        let options = dynamic::DynamicOptions {
            revert: reverted.clone(),
            ..options.clone()
        };
        let report = dynamic::quantize(&mut candidate, &options)?;
        Ok((candidate, report, Default::default()))
    };
    let rank = by_own_sqnr;
    let outcome = search_within_target(
        &float, &outputs, &target, "int8", &c, &exposure, quantize, rank,
    )?;
    let mut accuracy = outcome.accuracy(&target, &outputs);
    accuracy.int8_products = Int8Products::of_result(
        outcome.best.engine,
        &outcome.best.report.quantized,
        outcome.best.report.weight_range,
    );
    let output_sqnr_db = outcome.output_sqnr_db();
    let best = outcome.best;
    c.as_written.replace(best.as_written);
    let summary = CalibrationSummary {
        origin: c.origin,
        samples: c.samples.len(),
        engine: best.engine,
        values_measured: best.report.quantized.len(),
    };
    *model = best.model;
    Ok(DynamicStage {
        quantization: best.report,
        calibration: Some(summary),
        output_sqnr_db,
        accuracy: Some(accuracy),
    })
}

/// The int4 weight-only stage's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Int4Stage {
    #[serde(flatten)]
    pub quantization: int4::Int4Report,
    pub calibration: CalibrationSummary,
    /// Per quantized node's output: SQNR in dB against the float model over the samples pooled
    /// (lowest first).
    #[serde(deserialize_with = "crate::json::pairs_inf_if_null")]
    pub output_sqnr_db: Vec<(String, f64)>,
    pub accuracy: AccuracyOutcome,
}

/// Quantizes `model`'s MatMul weights to blocked uint4 (weight-only), measures each quantized
/// node's output against the float model with onnxruntime (tract has no 4-bit types), and when a
/// graph output misses `target` (or the int8 preset), returns the fewest most harmful nodes
/// (lowest output SQNR first) to float, as dynamic int8 does.
pub fn to_int4(
    model: &mut Model,
    options: &int4::Int4Options,
    target: AccuracyTarget,
    calibration: Calibration,
) -> Result<Int4Stage, QuantizeError> {
    let exposure = ranges::Exposure::at(model, &[&calibration.evaluation])?;
    let float = Model::from_proto(model.proto.clone(), model.dir().to_path_buf());
    let outputs = float_outputs(&float);
    let quantize = |kept: &std::collections::BTreeMap<String, String>,
                    reverted: &std::collections::BTreeMap<String, String>| {
        let mut candidate = Model::from_proto(float.proto.clone(), float.dir().to_path_buf());
        let mut revert = kept.clone();
        revert.extend(reverted.iter().map(|(o, why)| (o.clone(), why.clone())));
        let options = int4::Int4Options {
            revert,
            ..options.clone()
        };
        let report = int4::quantize(&mut candidate, &options)?;
        Ok::<_, QuantizeError>((candidate, report, Default::default()))
    };
    // a pair onnxruntime does not fuse into its 4-bit kernel dequantizes its weight at every
    // run, slower than the float MatMul: those nodes stay float (asked of onnxruntime once, of
    // the candidate with every node quantized; the weights quantized are kept for the search)
    let none = std::collections::BTreeMap::new();
    let (all, report, _) = quantize(&none, &none)?;
    let unfused: std::collections::BTreeMap<String, String> = if report.quantized.is_empty() {
        Default::default()
    } else {
        let optimized = crate::run::ort::OrtRunner::optimized_graph(&all)?;
        int4::unfused(all.graph(), &optimized, &report.quantized)
            .into_iter()
            .map(|o| {
                let why = "onnxruntime does not fuse it with its 4-bit weight into its 4-bit MatMul kernel here: the weight would be dequantized at every run";
                (o, why.to_string())
            })
            .collect()
    };
    drop(all);
    let quantize =
        |reverted: &std::collections::BTreeMap<String, String>| quantize(&unfused, reverted);
    let rank = by_own_sqnr;
    let outcome = search_within_target(
        &float,
        &outputs,
        &target,
        "int8",
        &calibration,
        &exposure,
        quantize,
        rank,
    )?;
    let accuracy = outcome.accuracy(&target, &outputs);
    let output_sqnr_db = outcome.output_sqnr_db();
    let best = outcome.best;
    calibration.as_written.replace(best.as_written);
    *model = best.model;
    Ok(Int4Stage {
        calibration: CalibrationSummary {
            origin: calibration.origin,
            samples: calibration.samples.len(),
            engine: best.engine,
            values_measured: best.report.quantized.len(),
        },
        quantization: best.report,
        output_sqnr_db,
        accuracy,
    })
}

/// The static int8 stage's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StaticStage {
    #[serde(flatten)]
    pub quantization: qdq::StaticReport,
    pub calibration: CalibrationSummary,
    pub method: calibrate::Method,
    /// Whether the ranges came from `--calibration-cache` rather than a run.
    pub ranges_from_cache: bool,
    /// Per quantized node's output: SQNR in dB against the float model over the samples pooled
    /// (lowest first).
    #[serde(deserialize_with = "crate::json::pairs_inf_if_null")]
    pub output_sqnr_db: Vec<(String, f64)>,
    pub accuracy: AccuracyOutcome,
}

/// Ranges saved by `--calibration-cache`: reused when the method, the model calibrated and the
/// calibration samples are the same (`key`) and every activation to quantize is in it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CalibrationCache {
    pub format: String,
    pub method: calibrate::Method,
    /// SHA-256 of the model calibrated (graph and weights, external data included) and of the
    /// calibration samples (names, types, shapes and values).
    #[serde(default)]
    pub key: String,
    pub ranges: std::collections::BTreeMap<String, (f32, f32)>,
}

/// Raised when the ranges a method computes change: /3 since entropy counts the steps of the
/// grid below each threshold (ranges saved before clip harder).
pub const CALIBRATION_CACHE_FORMAT: &str = "mdeploy.calibration/3";

/// What calibrated ranges depend on besides the method: the model (its nodes, interface and
/// weights wherever they are stored) and the samples, as one SHA-256 in hex.
pub fn calibration_key(model: &Model, samples: &dyn SampleChunks) -> Result<String, QuantizeError> {
    use prost::Message;
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    for o in &model.proto.opset_import {
        part(&o.encode_to_vec());
    }
    for f in &model.proto.functions {
        part(&f.encode_to_vec());
    }
    let g = model.graph();
    for n in &g.node {
        part(&n.encode_to_vec());
    }
    for v in g.input.iter().chain(&g.output) {
        part(&v.encode_to_vec());
    }
    for t in &g.initializer {
        let mut t = t.clone();
        if let Some(raw) = model.raw_bytes(&t)? {
            t.raw_data = Some(raw);
            t.external_data.clear();
            t.data_location = None;
        }
        part(&t.encode_to_vec());
    }
    samples.each_chunk(&mut |chunk| {
        for sample in chunk {
            part(&(sample.len() as u64).to_le_bytes());
            for t in sample.iter() {
                let proto = crate::run::tensor_io::to_proto(&t.name, &t.tensor).map_err(|e| {
                    crate::run::RunError::Input {
                        name: t.name.clone(),
                        what: e.to_string(),
                    }
                })?;
                part(&proto.encode_to_vec());
            }
        }
        Ok(())
    })?;
    Ok(hex::encode(h.finalize()))
}

/// What quantization must keep against the float model on the calibration and verification
/// data, over every graph output: the smallest cosine; for class scores
/// ([`ranges::class_scores`]) the fraction of rows whose top-1 class stays the same;
/// optionally the smallest SQNR in dB, and the fraction of elements on the same side of a
/// decision threshold (a detection map's or a voice detector's, as the task reads them). An
/// output can have a target of its own in place of these (`by_output`): a BERT's hidden states
/// at padded positions, say, that nothing downstream reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccuracyTarget {
    pub min_cosine: f64,
    pub min_top1: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sqnr_db: Option<f64>,
    /// (threshold, least fraction of elements whose `> threshold` decision stays the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<(f32, f64)>,
    /// Outputs held to a target of their own (cosine, top-1 and SQNR) instead.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_output: BTreeMap<String, AccuracyTarget>,
}

/// What a candidate achieved on the graph outputs: the worst of each measure over the outputs
/// held to the target for every output (over all of them when each has a target of its own),
/// and what each output with a target of its own achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct Achieved {
    pub cosine: f64,
    pub top1: f64,
    pub sqnr_db: f64,
    /// 1 when the target asks for no decision.
    pub decision: f64,
    pub by_output: BTreeMap<String, OutputAchieved>,
}

/// What one output with a target of its own achieved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OutputAchieved {
    pub cosine: f64,
    pub top1: f64,
    /// Null when the output is exact.
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub sqnr_db: f64,
}

impl Achieved {
    /// Lowers each measure to one output's where that is lower (the decision where it was read).
    fn take_worst(&mut self, cosine: f64, top1: f64, sqnr_db: f64, decision: Option<f64>) {
        self.cosine = self.cosine.min(cosine);
        self.top1 = self.top1.min(top1);
        self.sqnr_db = self.sqnr_db.min(sqnr_db);
        if let Some(d) = decision {
            self.decision = self.decision.min(d);
        }
    }

    /// Every measure not a number: what was not measured.
    fn not_measured() -> Achieved {
        Achieved {
            cosine: f64::NAN,
            top1: f64::NAN,
            sqnr_db: f64::NAN,
            decision: f64::NAN,
            by_output: BTreeMap::new(),
        }
    }

    /// For messages: `cosine 0.99512, top-1 1.000, SQNR 23.1 dB[, agree@T X]`, then each
    /// output with a target of its own.
    pub fn describe(&self, threshold: Option<f32>) -> String {
        let mut s = format!(
            "cosine {:.6}, top-1 {:.3}, SQNR {:.1} dB",
            self.cosine, self.top1, self.sqnr_db
        );
        if let Some(at) = threshold {
            s += &format!(", agree@{at} {:.4}", self.decision);
        }
        for (output, a) in &self.by_output {
            s += &format!(
                "; {output}: cosine {:.6}, top-1 {:.3}, SQNR {:.1} dB",
                a.cosine, a.top1, a.sqnr_db
            );
        }
        s
    }
}

impl AccuracyTarget {
    /// The target without anything asked for: `optimize`'s default.
    pub const DEFAULT: &'static str = "cos=0.99,top1=1";

    /// Entries separated by `;`: the measures every output must keep, `cos=0.99`, `top1=1`,
    /// `sqnr=30` (dB), `agree@0.5=0.99`, or several joined by commas (`cos=0.99,top1=1`; an
    /// absent one does not bind), and for one output `OUTPUT:MEASURES` (`cos`, `top1` and
    /// `sqnr`), held instead. Without an entry for every output, [`Self::DEFAULT`].
    pub fn parse(s: &str) -> Result<AccuracyTarget, String> {
        let mut all = None;
        let mut by_output = BTreeMap::new();
        for entry in s.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.rsplit_once(':') {
                Some((output, measures)) => {
                    let t = AccuracyTarget::measures(measures)?;
                    if t.decision.is_some() {
                        return Err(format!(
                            "accuracy target '{entry}': an output's own target takes cos, top1 and sqnr"
                        ));
                    }
                    if by_output.insert(output.trim().to_string(), t).is_some() {
                        return Err(format!(
                            "accuracy target: two targets for output '{output}'"
                        ));
                    }
                }
                None if all.is_some() => {
                    return Err(format!(
                        "accuracy target '{entry}': one target for every output (join measures with commas)"
                    ));
                }
                None => all = Some(AccuracyTarget::measures(entry)?),
            }
        }
        let mut t = match all {
            Some(t) => t,
            None => AccuracyTarget::measures(AccuracyTarget::DEFAULT)?,
        };
        t.by_output = by_output;
        Ok(t)
    }

    /// One set of measures, `cos=0.99,top1=1`.
    fn measures(s: &str) -> Result<AccuracyTarget, String> {
        let mut t = AccuracyTarget {
            min_cosine: 0.0,
            min_top1: 0.0,
            min_sqnr_db: None,
            decision: None,
            by_output: BTreeMap::new(),
        };
        for part in s.split(',') {
            let part = part.trim();
            let value = |v: &str| match v.parse::<f64>() {
                Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
                _ => Err(format!("accuracy target '{part}': a number in [0, 1]")),
            };
            match part.split_once('=') {
                Some(("cos", v)) => t.min_cosine = value(v)?,
                Some(("top1", v)) => t.min_top1 = value(v)?,
                Some(("sqnr", v)) => match v.parse::<f64>() {
                    Ok(db) if db.is_finite() => t.min_sqnr_db = Some(db),
                    _ => return Err(format!("accuracy target '{part}': a number of dB")),
                },
                Some((k, v)) if k.starts_with("agree@") => match k["agree@".len()..].parse::<f32>()
                {
                    Ok(at) if at.is_finite() => t.decision = Some((at, value(v)?)),
                    _ => {
                        return Err(format!(
                            "accuracy target '{part}': agree@THRESHOLD=FRACTION (e.g. agree@0.5=0.99)"
                        ));
                    }
                },
                _ => {
                    return Err(format!(
                        "accuracy target '{part}': cos=X, top1=X, sqnr=DB or agree@T=X (e.g. cos=0.99,top1=1), or OUTPUT:cos=X for one output"
                    ));
                }
            }
        }
        Ok(t)
    }

    /// The target for `output`: its own, or the one for every output.
    pub fn for_output(&self, output: &str) -> &AccuracyTarget {
        self.by_output.get(output).unwrap_or(self)
    }

    /// What verifying the result holds the outputs with a target of their own to: that target's
    /// cosine alone (the preset's element bounds do not bind them; what they are is reported).
    pub fn own_cosines(&self) -> BTreeMap<String, f64> {
        self.by_output
            .iter()
            .map(|(o, t)| (o.clone(), t.min_cosine))
            .collect()
    }

    /// The tolerance verifying a result quantized to this target takes: `preset`, with the
    /// outputs that have a target of their own held to its cosine alone.
    pub fn tolerance(&self, preset: crate::verify::Preset) -> crate::verify::Tolerance {
        let mut tolerance = crate::verify::Tolerance::from_preset(preset);
        tolerance.cosine_by_output = self.own_cosines();
        tolerance
    }

    /// The same target without top-1 agreement, for every output (on random inputs a
    /// classifier's top class is noise).
    pub fn without_top1(&self) -> AccuracyTarget {
        let mut t = self.clone();
        t.min_top1 = 0.0;
        for o in t.by_output.values_mut() {
            o.min_top1 = 0.0;
        }
        t
    }

    /// The binding measures, for messages: `cos 0.99, top-1 1, SQNR 30 dB, agree@0.5 0.99`.
    pub fn describe(&self) -> String {
        let mut s = format!("cos {}, top-1 {}", self.min_cosine, self.min_top1);
        if let Some(db) = self.min_sqnr_db {
            s += &format!(", SQNR {db} dB");
        }
        if let Some((at, f)) = self.decision {
            s += &format!(", agree@{at} {f}");
        }
        for (output, t) in &self.by_output {
            s += &format!("; {output}: {}", t.describe());
        }
        s
    }

    /// What these outputs achieved (`None`: an output that could not be measured), and whether
    /// each meets its target. Nothing measured, or NaN, does not.
    fn judge<'a>(
        &self,
        measured: impl Iterator<Item = (&'a str, Option<&'a ranges::Agreement>)>,
    ) -> (Achieved, bool) {
        let best = || Achieved {
            cosine: 1.0,
            top1: 1.0,
            sqnr_db: f64::INFINITY,
            decision: 1.0,
            by_output: BTreeMap::new(),
        };
        // over the outputs held to the target for every output, and over all of them
        let (mut shared, mut all) = (best(), best());
        let mut by_output = BTreeMap::new();
        let (mut seen, mut seen_shared, mut met) = (false, false, true);
        for (output, a) in measured {
            let Some(a) = a.filter(|a| !a.cosine.is_nan() && !a.sqnr_db.is_nan()) else {
                return (Achieved::not_measured(), false);
            };
            seen = true;
            let t = self.for_output(output);
            let top1 = a.top1.unwrap_or(1.0);
            // an output the decision could not be read on does not pass it
            let decision = a.decision.unwrap_or(0.0);
            let decided = t.decision.map(|_| decision);
            all.take_worst(a.cosine, top1, a.sqnr_db, decided);
            if self.by_output.contains_key(output) {
                let o = OutputAchieved {
                    cosine: a.cosine,
                    top1,
                    sqnr_db: a.sqnr_db,
                };
                by_output.insert(output.to_string(), o);
            } else {
                seen_shared = true;
                shared.take_worst(a.cosine, top1, a.sqnr_db, decided);
            }
            met &= a.cosine >= t.min_cosine
                && top1 >= t.min_top1
                && t.min_sqnr_db.is_none_or(|db| a.sqnr_db >= db)
                && t.decision.is_none_or(|(_, f)| decision >= f);
        }
        if !seen {
            // no output to hold to the target (none is float): nothing measured, nothing missed
            return (Achieved::not_measured(), true);
        }
        let mut achieved = if seen_shared { shared } else { all };
        achieved.by_output = by_output;
        (achieved, met)
    }
}

/// How the accuracy target was met.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccuracyOutcome {
    pub target: AccuracyTarget,
    /// The smallest output cosine of the result.
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub achieved_cosine: f64,
    /// The smallest top-1 agreement of its class scores (1 where it has none).
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub achieved_top1: f64,
    /// The smallest output SQNR in dB (null when every output is exact, or when the target was
    /// [`Self::unmeasured`]; NaN read from a report written before it was measured).
    #[serde(
        default = "not_measured",
        deserialize_with = "crate::json::inf_if_null"
    )]
    pub achieved_sqnr_db: f64,
    /// The smallest decision agreement, when the target asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub achieved_decision: Option<f64>,
    /// What each output with a target of its own achieved (the smallest values above are over
    /// the other outputs, or over all when each has its own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub achieved_by_output: BTreeMap<String, OutputAchieved>,
    pub met: bool,
    /// Why the target could not be measured, where it could not (a model without a float
    /// output: the verification preset alone held its outputs); the achieved values are then
    /// not numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmeasured: Option<String>,
    /// Quantize-and-measure rounds it took.
    pub rounds: usize,
    pub returned_to_float: usize,
    /// Samples the target was measured on (0 where nothing was; absent from reports written
    /// before it was given).
    #[serde(default)]
    pub samples: usize,
    /// How the engine that measured an int8 result computes int8 products on the CPU it ran on
    /// (int8 modes only, where something was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8_products: Option<Int8Products>,
    /// What was achieved holds to the target: a result that does and is still not `met`
    /// missed the verification preset (for messages; not in reports).
    #[serde(skip)]
    pub target_held: bool,
}

/// How an engine computes a model's products of 8-bit integers on the CPU at hand.
/// onnxruntime's x86 kernels compute uint8 x int8 exactly on a CPU with VNNI (AVX-512 VNNI or
/// AVX-VNNI); without (AVX2, AVX-512 without VNNI) they add each two adjacent products in 16
/// bits and saturate unless the weights are within [-64, 64] ([`weights::WeightRange`];
/// docs/quantize.md, "The CPU's int8 kernels"): a full-range int8 model's accuracy measured on
/// one kind differs on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Int8Products {
    Exact,
    SaturatingPairs,
    /// Not known here: another engine, or another architecture.
    Unknown,
}

impl Int8Products {
    /// How `engine` computes the products of weights quantized within `range` on this CPU.
    pub fn of(engine: EngineKind, range: weights::WeightRange) -> Self {
        match engine {
            EngineKind::Ort => Self::of_onnxruntime(range),
            EngineKind::Tract => Self::Unknown,
        }
    }

    /// For an int8 result measured in `engine` (none: nothing was measured): how its products
    /// come out, where it has any (int8 rows alone are looked up, not multiplied).
    pub fn of_result(
        engine: Option<EngineKind>,
        quantized: &[QuantizedNode],
        range: weights::WeightRange,
    ) -> Option<Self> {
        let products = quantized.iter().any(|n| n.op != "Gather");
        engine.filter(|_| products).map(|e| Self::of(e, range))
    }

    /// onnxruntime's x86 kernels take int8 activations as uint8 too (its QDQ fusion shifts
    /// them), so the weights alone decide. Without AVX2 other kernels run, not measured here.
    #[cfg(target_arch = "x86_64")]
    fn of_onnxruntime(range: weights::WeightRange) -> Self {
        if range == weights::WeightRange::Reduced
            || std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni")
        {
            Self::Exact
        } else if std::arch::is_x86_feature_detected!("avx2") {
            Self::SaturatingPairs
        } else {
            Self::Unknown
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn of_onnxruntime(_: weights::WeightRange) -> Self {
        Self::Unknown
    }
}

/// What a measure that was not taken reads as.
pub(crate) fn not_measured() -> f64 {
    f64::NAN
}

impl AccuracyOutcome {
    /// Whether nothing was quantized (the result is the float model, nothing was measured).
    pub fn nothing_quantized(&self) -> bool {
        self.unmeasured.as_deref() == Some(UNCHANGED)
    }

    /// What was achieved, for messages: `cosine 0.99512, top-1 1.000, SQNR 23.1 dB`.
    pub fn describe(&self) -> String {
        if let Some(why) = &self.unmeasured {
            return format!("not measured ({why})");
        }
        let achieved = Achieved {
            cosine: self.achieved_cosine,
            top1: self.achieved_top1,
            sqnr_db: self.achieved_sqnr_db,
            decision: self.achieved_decision.unwrap_or(f64::NAN),
            by_output: self.achieved_by_output.clone(),
        };
        let threshold = self
            .target
            .decision
            .filter(|_| self.achieved_decision.is_some())
            .map(|(at, _)| at);
        achieved.describe(threshold)
    }
}

/// The best SQNR an 8-bit grid gives a full-range signal (6.02 x 8 + 1.76 dB, rounded up): what
/// a node reading unquantized values starts from.
const INT8_CEILING_DB: f64 = 50.0;

/// Quantize-and-measure rounds the search for the fewest nodes to return to float may take.
const MAX_ROUNDS: usize = 10;

/// What inference knows of `model` with its inputs at the shapes of `sample` (the sizes it
/// runs at, which estimates of its cost need), the model left as it was. The sample's tensors
/// are matched to inputs by name, or in input order when none is named (as the engines take
/// them). Without a sample, or where its shapes do not fit the model's inputs, at the shapes
/// the model declares.
fn facts_at(model: &mut Model, sample: Option<&[NamedTensor]>) -> crate::infer::Inference {
    let sample = sample.unwrap_or_default();
    let all_unnamed = sample.iter().all(|t| t.name.is_empty());
    let shapes = crate::run::InputShapes {
        by_input: crate::run::graph_inputs(model)
            .iter()
            .enumerate()
            .filter_map(|(k, input)| {
                let t = if all_unnamed {
                    sample.get(k)
                } else {
                    sample.iter().find(|t| t.name == input.name)
                }?;
                Some((input.name.clone(), t.tensor.shape().to_vec()))
            })
            .collect(),
        by_symbol: Default::default(),
    };
    if shapes.by_input.is_empty() {
        return crate::infer::Inference::of_model(model);
    }
    let declared = (model.graph().input.clone(), model.graph().output.clone());
    // shapes that do not fit leave the model as declared
    let _ = crate::convert::apply_input_shapes(model, &shapes);
    let facts = crate::infer::Inference::of_model(model);
    let graph = model.graph_mut();
    (graph.input, graph.output) = declared;
    facts
}

/// Quantizes `model` to int8 QDQ: plans what to quantize, calibrates the activations it needs
/// (or takes them from `cache`), rewrites, and measures each quantized node's output against
/// the float model. When a graph output's cosine misses `target`, the nodes that lose the most
/// (their output's SQNR below the SQNR of the quantized values they read) return to float: the
/// fewest of them, most harmful first, for which the target holds (by bisection).
///
/// Weights per channel need opset 13's DequantizeLinear `axis`: a model below it is raised to
/// 13 first where that keeps what every node computes ([`crate::onnx::upgrade`]); where it
/// cannot be, its weights are per tensor and the report says why. A model left with nothing
/// quantized keeps its own opset.
pub fn to_int8_static(
    model: &mut Model,
    options: &qdq::StaticOptions,
    method: calibrate::Method,
    target: AccuracyTarget,
    calibration: Calibration,
    cache: Option<&CalibrationCache>,
) -> Result<(StaticStage, CalibrationCache), QuantizeError> {
    let raise = Raise::to(model, qdq::PER_CHANNEL_OPSET);
    // calibration runs over every sample: sized at the largest one
    let exposure = ranges::Exposure::at(model, &[calibration.samples, &calibration.evaluation])?;
    let float = Model::from_proto(model.proto.clone(), model.dir().to_path_buf());
    let facts = facts_at(model, calibration.samples.first());
    let plan = qdq::plan_with(model, options, &facts)?;
    let wanted = plan.activations();
    // a model whose key cannot be made (unreadable external data shows up later anyway) is
    // calibrated every time: an empty key matches no cache
    let key = match calibration_key(model, calibration.samples) {
        Ok(key) => key,
        Err(e @ QuantizeError::Run(crate::run::RunError::Samples(_))) => return Err(e),
        Err(_) => String::new(),
    };
    let cached = cache.filter(|c| {
        c.format == CALIBRATION_CACHE_FORMAT
            && c.method == method
            && !key.is_empty()
            && c.key == key
            && wanted.iter().all(|v| c.ranges.contains_key(v))
    });
    let (engine, ranges) = match cached {
        Some(c) => (None, c.ranges.clone()),
        // nothing to place (no node the options and placement let be quantized): nothing to run
        None if wanted.is_empty() => (None, calibrate::Ranges::new()),
        None => {
            let (engine, ranges) = ranges::in_measuring_engine(calibration.engine, |engine| {
                let runs = ranges::Runs {
                    samples: calibration.samples,
                    engine,
                    exposure: &exposure,
                };
                calibrate::activation_ranges(model, &wanted, method, runs)
            })?;
            (Some(engine), ranges)
        }
    };
    let outputs = float_outputs(&float);
    let search = |plan: &qdq::StaticPlan| {
        let evaluate = |reverted: &std::collections::BTreeMap<String, String>| {
            let current = plan.without(reverted);
            let mut candidate = Model::from_proto(float.proto.clone(), float.dir().to_path_buf());
            let quantization = qdq::apply(&mut candidate, &current, &ranges)?;
            // a node's output with a pair of its own is measured after it: its own rounding
            let aliases = quantization.dequantized_outputs.clone();
            Ok((candidate, quantization, aliases))
        };
        let ranked =
            |_: &qdq::StaticReport,
             measured: &std::collections::BTreeMap<String, ranges::Agreement>| {
                sensitivity(plan, measured)
            };
        search_within_target(
            &float,
            &outputs,
            &target,
            "int8",
            &calibration,
            &exposure,
            evaluate,
            ranked,
        )
    };
    let mut chosen = search(&plan)?;
    // quantized Conv outputs make onnxruntime's int8 Convs possible but add a rounding of their
    // own; where the target then keeps fewer than half of the products int8 (per-tensor weights,
    // wide pre-activation ranges), the placement without them is tried too and the one that
    // keeps more products int8 wins (the ranges measured cover both; embedding tables are
    // the same in both placements)
    if options.quantize_outputs && chosen.kept_int8() * 2 < plan.products() {
        let inputs_only = qdq::StaticOptions {
            quantize_outputs: false,
            ..options.clone()
        };
        let other = search(&qdq::plan_with(model, &inputs_only, &facts)?)?;
        let rounds = chosen.rounds + other.rounds;
        if other.kept_int8() > chosen.kept_int8() {
            chosen = other;
        }
        chosen.rounds = rounds;
    }
    let mut accuracy = chosen.accuracy(&target, &outputs);
    accuracy.int8_products = Int8Products::of_result(
        chosen.best.engine,
        &chosen.best.report.quantized,
        chosen.best.report.weight_range,
    );
    let output_sqnr_db = chosen.output_sqnr_db();
    let mut best = chosen.best;
    let used = !best.report.quantized.is_empty();
    best.report.opset = raise.settle(&mut best.model, used);
    // with nothing quantized, the model is put back at its opset: not the one that ran
    calibration
        .as_written
        .replace(best.as_written.take().filter(|_| used));
    best.report.per_channel = best.model.opset("").unwrap_or(1) >= qdq::PER_CHANNEL_OPSET;
    *model = best.model;
    let stage = StaticStage {
        calibration: CalibrationSummary {
            origin: calibration.origin,
            samples: calibration.samples.len(),
            engine: engine.or(best.engine),
            values_measured: wanted.len(),
        },
        method,
        ranges_from_cache: cached.is_some(),
        output_sqnr_db,
        accuracy,
        quantization: best.report,
    };
    let cache = CalibrationCache {
        format: CALIBRATION_CACHE_FORMAT.into(),
        method,
        key,
        ranges,
    };
    Ok((stage, cache))
}

/// A quantizer's report: the values its quantized nodes compute (what is measured node by node
/// and ranked when the target is missed).
trait QuantizedNodes {
    fn quantized_outputs(&self) -> Vec<String>;

    /// For each weight several quantized nodes read, those nodes (by the value each writes).
    fn sharing_weights(&self) -> Vec<Vec<String>> {
        Vec::new()
    }
}

/// The reports that list their quantized nodes as [`QuantizedNode`]s (each with its weight).
macro_rules! quantized_nodes_listed {
    ($($report:ty),*) => {$(
        impl QuantizedNodes for $report {
            fn quantized_outputs(&self) -> Vec<String> {
                self.quantized.iter().map(|q| q.output.clone()).collect()
            }

            fn sharing_weights(&self) -> Vec<Vec<String>> {
                sharing_weights(&self.quantized)
            }
        }
    )*};
}

quantized_nodes_listed!(dynamic::DynamicReport, qdq::StaticReport, int4::Int4Report);

/// The nodes of `quantized` that read one weight (by its name), for each weight more than one
/// reads. Two constants of one name (Constant nodes may repeat a tensor's) group together: the
/// search then returns both nodes to float where one would do, never fewer than it must.
fn sharing_weights(quantized: &[QuantizedNode]) -> Vec<Vec<String>> {
    let mut readers: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for q in quantized {
        readers
            .entry(q.weight.as_str())
            .or_default()
            .push(q.output.clone());
    }
    readers.into_values().filter(|r| r.len() > 1).collect()
}

impl QuantizedNodes for fp16::Fp16Report {
    fn quantized_outputs(&self) -> Vec<String> {
        self.converted_outputs.clone()
    }
}

/// A quantized candidate and what was measured of it.
struct Searched<R> {
    model: Model,
    report: R,
    measured: std::collections::BTreeMap<String, ranges::Agreement>,
    /// The engine that measured it (none for a candidate that is the float model).
    engine: Option<EngineKind>,
    /// Its graph outputs run as written, where they were (a round that held the target).
    as_written: Option<AsWritten>,
}

/// The candidate the accuracy search settled on.
struct SearchOutcome<R> {
    best: Searched<R>,
    /// Nodes returned to float (by output value), with why.
    reverted: std::collections::BTreeMap<String, String>,
    met: bool,
    /// The best result holds to the target (where it is not `met`, it misses the preset).
    held: bool,
    rounds: usize,
    /// The quantizer left the model as it was (nothing it could quantize): nothing was run.
    unchanged: bool,
    /// Samples each round measured on.
    samples: usize,
}

/// Why a candidate that is the float model is not measured.
const UNCHANGED: &str = "nothing was quantized: the result is the float model";

impl SearchOutcome<qdq::StaticReport> {
    /// The products (not embedding tables, which no placement changes) it kept quantized when
    /// the target holds, else 0: what placements compete on.
    fn kept_int8(&self) -> usize {
        if self.met {
            let quantized = &self.best.report.quantized;
            quantized.iter().filter(|q| q.op != "Gather").count()
        } else {
            0
        }
    }
}

impl<R: QuantizedNodes> SearchOutcome<R> {
    /// What the target asked and what the candidate achieved on the graph `outputs`.
    fn accuracy(&self, target: &AccuracyTarget, outputs: &[String]) -> AccuracyOutcome {
        let (achieved, _) = target.judge(
            outputs
                .iter()
                .map(|o| (o.as_str(), self.best.measured.get(o))),
        );
        AccuracyOutcome {
            target: target.clone(),
            achieved_cosine: achieved.cosine,
            achieved_top1: achieved.top1,
            achieved_sqnr_db: achieved.sqnr_db,
            achieved_decision: target.decision.map(|_| achieved.decision),
            achieved_by_output: achieved.by_output,
            met: self.met,
            unmeasured: if self.unchanged {
                Some(UNCHANGED.to_string())
            } else {
                outputs
                    .is_empty()
                    .then(|| "the model has no float output".to_string())
            },
            rounds: self.rounds,
            returned_to_float: self.reverted.len(),
            samples: self.samples,
            int8_products: None,
            target_held: self.held,
        }
    }

    /// Each quantized node's output SQNR against float, lowest first.
    fn output_sqnr_db(&self) -> Vec<(String, f64)> {
        let mut sqnr: Vec<(String, f64)> = self
            .best
            .report
            .quantized_outputs()
            .into_iter()
            .filter_map(|o| {
                let a = self.best.measured.get(&o)?;
                Some((o, a.pooled_sqnr_db))
            })
            .collect();
        sqnr.sort_by(|a, b| a.1.total_cmp(&b.1));
        sqnr
    }
}

/// The float model's floating-point outputs (float32, and float16 or float64 in a model that
/// computes in those): the ones quantization moves and the target judges.
pub fn float_outputs(float: &Model) -> Vec<String> {
    let facts = crate::infer::Inference::of_model(float);
    float
        .graph()
        .output
        .iter()
        .map(|o| o.name().to_string())
        .filter(|o| {
            facts
                .elem_type(o)
                .is_some_and(crate::onnx::DataType::is_float)
        })
        .collect()
}

/// What the accuracy search keeps of the float model's values from its first round at most (it
/// keeps them from the second round on where they fit the memory a run may take).
const KEPT_IN_FIRST_ROUND: u64 = 64 << 20;

/// Quantizes everything (`quantize` with nothing reverted), measures it on the evaluation data,
/// and when `target` or the verification `preset` of the mode is missed, returns to float the fewest of
/// the nodes `rank` orders most harmful first, found by bisection (the outcome of returning k of
/// them is monotone enough in k; a round that misses re-ranks the nodes it kept quantized): at
/// most [`MAX_ROUNDS`] quantize-and-measure rounds. Cosine and SQNR targets hold on every
/// sample, not on the samples pooled. `quantize`
/// takes the nodes to revert (by output value, with the reason) and gives the candidate, its
/// report and the quantized outputs measured under another name in the candidate (each node's
/// output is measured along with the graph outputs).
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn search_within_target<R: QuantizedNodes>(
    float: &Model,
    outputs: &[String],
    target: &AccuracyTarget,
    preset: &str,
    calibration: &Calibration,
    exposure: &ranges::Exposure,
    quantize: impl Fn(
        &std::collections::BTreeMap<String, String>,
    )
        -> Result<(Model, R, std::collections::BTreeMap<String, String>), QuantizeError>,
    rank: impl Fn(&R, &std::collections::BTreeMap<String, ranges::Agreement>) -> Vec<(String, f64)>,
) -> Result<SearchOutcome<R>, QuantizeError> {
    // the result must also pass the mode's verification preset on the same data, as the final
    // verification will judge it: the candidate as it will be written (with no value exposed,
    // which would keep onnxruntime from fusing its int8 kernels) in the engine `auto` picks for
    // it, against the float model's outputs from the run that measured the candidate (exposing
    // a float model's values changes no number the preset could see)
    let tolerance = target.tolerance(crate::verify::preset(preset).expect("a verification preset"));
    // what the float model computed, kept from the second round on, or from the first where it
    // takes at most KEPT_IN_FIRST_ROUND (the first round is often the only one, and keeping is
    // memory: a detector's activations at 640x640 are 660 MB a sample; a transformer's few MB
    // spare the second round a run of the float model) to measure later rounds' candidates
    // against (where all samples' values fit in memory); a
    // round that quantizes values the kept ones do not cover (after one that met the target,
    // bisection returns fewer nodes to float) runs the float model and keeps its values instead
    let kept: std::cell::RefCell<Option<ranges::Kept>> = Default::default();
    // but a reference that itself runs int8 kernels or computes in float16 computes other
    // numbers with its values exposed (onnxruntime fuses its int8 kernels only where they are
    // not: quantize_dynamic's MiniLM moves by cosine 0.004, more than the fp16 preset allows),
    // so the candidate as written is held to the reference as written, in the candidate's
    // engine, run once
    let exposing_moves_reference = crate::run::reduced_precision(float);
    let reference_as_written: std::cell::RefCell<
        Option<(crate::run::EngineKind, Vec<Vec<NamedTensor>>)>,
    > = Default::default();
    let measured_rounds = std::cell::Cell::new(0usize);
    let measure =
        |(candidate, report, aliases): (Model, R, std::collections::BTreeMap<String, String>)| {
            // values of the main graph only: one inside an If/Loop/Scan body cannot be exposed as a
            // graph output (it is left unmeasured, and ranks last)
            let main = main_graph_values(&candidate);
            let values: Vec<String> = report
                .quantized_outputs()
                .into_iter()
                .filter(|v| main.contains(v.as_str()))
                .chain(outputs.iter().cloned())
                .collect();
            let compared = ranges::compare(
                float,
                &candidate,
                &values,
                &aliases,
                ranges::Runs {
                    samples: &calibration.evaluation,
                    engine: calibration.engine,
                    exposure,
                },
                ranges::Measures {
                    threshold: target.decision.map(|(at, _)| at),
                    keep_outputs: true,
                    keep_reference: if measured_rounds.get() > 0 {
                        u64::MAX
                    } else {
                        KEPT_IN_FIRST_ROUND
                    },
                },
                kept.borrow().as_ref(),
            )?;
            measured_rounds.set(measured_rounds.get() + 1);
            if let Some(again) = compared.kept {
                kept.replace(Some(again));
            }
            let measured = compared.agreements;
            let (achieved, held) =
                target.judge(outputs.iter().map(|o| (o.as_str(), measured.get(o))));
            let mut as_written = None;
            let met = held && {
                // a float16 interface is fed the samples rounded to float16, and compared widened
                let half = crate::verify::half_input_names(&candidate);
                let rounded: Vec<Vec<NamedTensor>> = calibration
                    .evaluation
                    .iter()
                    .map(|s| crate::verify::round_to_half(s, &half))
                    .collect();
                let inputs: Vec<&[NamedTensor]> = rounded.iter().map(Vec::as_slice).collect();
                let (ran_in, got) =
                    crate::run::run_all(&candidate, calibration.engine, &inputs, || {})?;
                let mut written = reference_as_written.borrow_mut();
                let want = if exposing_moves_reference {
                    if written.as_ref().is_none_or(|(kind, _)| *kind != ran_in) {
                        let only = crate::run::EngineChoice::Only(ran_in);
                        let (_, outputs) =
                            crate::run::run_all(float, only, calibration.evaluation, || {})?;
                        *written = Some((ran_in, outputs));
                    }
                    &written.as_ref().expect("run just now").1
                } else {
                    &compared.reference_outputs
                };
                let got = crate::verify::widen_half(got, want);
                let met = crate::verify::outputs_agree(&tolerance, want, &got);
                as_written = Some(AsWritten {
                    engine: ran_in,
                    outputs: got,
                });
                met
            };
            let engine = Some(compared.engine);
            Ok::<_, QuantizeError>((
                (achieved, held, met),
                Searched {
                    model: candidate,
                    report,
                    measured,
                    engine,
                    as_written,
                },
            ))
        };
    let evaluate =
        |reverted: &std::collections::BTreeMap<String, String>| measure(quantize(reverted)?);
    let none = std::collections::BTreeMap::new();
    let everything = quantize(&none)?;
    // a candidate the quantizer left as it was computes what the float model does: there is
    // nothing to measure (and the verification after quantizing still runs both)
    if everything.0.proto == float.proto {
        let (model, report, _) = everything;
        return Ok(SearchOutcome {
            best: Searched {
                model,
                report,
                measured: Default::default(),
                engine: None,
                as_written: None,
            },
            reverted: none,
            met: true,
            held: true,
            rounds: 0,
            unchanged: true,
            samples: 0,
        });
    }
    let ((worst, held, met), first_result) = measure(everything)?;
    if met {
        return Ok(SearchOutcome {
            best: first_result,
            reverted: none,
            met: true,
            held: true,
            rounds: 1,
            unchanged: false,
            samples: calibration.evaluation.len(),
        });
    }
    // a body's values cannot be exposed: its nodes are returned unmeasured, after the others
    let in_main = main_graph_values(float);
    let main_first = |ranked: &mut [(String, f64)]| {
        ranked.sort_by_key(|(o, _)| !in_main.contains(o.as_str()));
    };
    let mut ranked = rank(&first_result.report, &first_result.measured);
    main_first(&mut ranked);
    let mut rounds = 1;
    let missed = if outputs.is_empty() {
        format!("miss the {preset} verification preset (no float output to hold to the target)")
    } else if held {
        format!(
            "keep {} within the target but miss the {preset} verification preset",
            worst.describe(None)
        )
    } else {
        format!(
            "keep {}, short of the target ({})",
            worst.describe(None),
            target.describe()
        )
    };
    let reason = |o: &str, added: f64| {
        let added = if !in_main.contains(o) {
            "is inside an If/Loop/Scan body, whose values are not measured".to_string()
        } else if added.is_finite() {
            format!(
                "adds noise {added:.1} dB below its output (measured in the round that ranked it)"
            )
        } else {
            "adds no noise measured (in the round that ranked it)".to_string()
        };
        format!(
            "returned to float: with every node quantized the outputs {missed}; this node {added}"
        )
    };
    // nodes that read one weight return to float together: one returned alone keeps the float
    // weight in the file beside the quantized one, larger than either (the quantized weight
    // saves nothing while one reader needs the float one)
    let mut sharing: std::collections::HashMap<String, Vec<String>> = Default::default();
    for group in first_result.report.sharing_weights() {
        for o in &group {
            sharing.insert(o.clone(), group.clone());
        }
    }
    let returned_with = |o: &str| {
        format!(
            "returned to float with the node writing '{o}', which reads the same weight (quantized for one reader, the weight would be stored twice)"
        )
    };
    let first =
        |ranked: &[(String, f64)], k: usize| -> std::collections::BTreeMap<String, String> {
            let mut reverted: std::collections::BTreeMap<String, String> = ranked
                .iter()
                .take(k)
                .map(|(o, lost)| (o.clone(), reason(o, *lost)))
                .collect();
            for (o, _) in ranked.iter().take(k) {
                for other in sharing.get(o).into_iter().flatten() {
                    reverted
                        .entry(other.clone())
                        .or_insert_with(|| returned_with(o));
                }
            }
            reverted
        };
    // smallest k in (lo, hi] that meets the target; returning all of them does. A round that
    // misses re-ranks the nodes it kept quantized by what it measured: with the most harmful
    // upstream nodes back in float, a node's own loss shows (behind an upstream node that
    // loses more, it reads as a gain), so the order of the rest improves as the search goes
    // a body's nodes, unmeasured, come last and are searched only where returning every node of
    // the main graph misses: the search runs over the main graph's first (up to `end`), then
    // over the bodies' (SLANet's Loop holds most of its nodes: searched with the main graph's,
    // ten rounds of fp16 did not meet, and every node went back to float32)
    let measurable = ranked
        .iter()
        .filter(|(o, _)| in_main.contains(o.as_str()))
        .count();
    let mut end = if measurable > 0 {
        measurable
    } else {
        ranked.len()
    };
    let (mut lo, mut hi) = (0usize, end);
    let mut at_hi: Option<(Searched<R>, std::collections::BTreeMap<String, String>)> = None;
    // where the noise the nodes add predicts that the cosine (the target's, or the preset's
    // once the target holds) needs at most a quarter of them back in float, a first probe
    // returns that many: a target missed by a little is met by returning the few nodes adding
    // the most, which bisection from the middle takes log2(nodes) rounds to find. A probe that
    // meets bounds the bisection; one that misses is one round lost, and the bisection goes on
    // as without it (the noise reaches the outputs less evenly than the prediction assumes
    // where a steep function follows, and re-ranking from a probe that missed, or bisecting
    // from one, led the search down paths that returned more nodes)
    let wanted = if held {
        tolerance.min_cosine
    } else {
        Some(target.min_cosine)
    };
    let mut probe = wanted
        .filter(|_| target.by_output.is_empty() && !outputs.is_empty())
        .and_then(|wanted| predicted_returns(&ranked, worst.cosine, wanted))
        .filter(|&k| k > 0 && k * 4 <= end);
    let mut max_rounds = MAX_ROUNDS;
    // a probe that missed, kept: the bisection may come to the same nodes (the order of the
    // first ones changes only after a round that misses), and takes its result instead of
    // measuring them again
    let mut missed_probe = None;
    loop {
        while hi - lo > 1 && rounds < max_rounds {
            let probing = probe.take();
            let mid = probing.unwrap_or((lo + hi) / 2);
            let reverted = first(&ranked, mid);
            // nodes that share a weight return together, so counts apart may return the same
            // nodes: those of a bound are known to meet (or, at `hi`, are what the search ends on)
            // or miss without another round. Until a round meets, `hi` stands for every node back
            // in float (of the main graph, while the search is over its nodes): moved by a
            // skip, its count no longer says so once a round re-ranks the rest
            let everything;
            let hi_nodes = match &at_hi {
                Some((_, nodes)) => nodes,
                None => {
                    everything = first(&ranked, end);
                    &everything
                }
            };
            if reverted.keys().eq(hi_nodes.keys()) {
                hi = mid;
                continue;
            }
            if reverted.keys().eq(first(&ranked, lo).keys()) {
                lo = mid;
                continue;
            }
            let (meets, result) = match missed_probe.take() {
                Some((nodes, result)) if reverted.keys().eq(&nodes) => (false, result),
                other => {
                    missed_probe = other;
                    rounds += 1;
                    let ((_, _, meets), result) = evaluate(&reverted)?;
                    (meets, result)
                }
            };
            if meets {
                hi = mid;
                at_hi = Some((result, reverted));
            } else if probing.is_some() {
                max_rounds += 1;
                missed_probe = Some((reverted.into_keys().collect::<Vec<_>>(), result));
            } else {
                lo = mid;
                rerank_rest(&mut ranked, mid, rank(&result.report, &result.measured));
                main_first(&mut ranked[mid..]);
            }
        }
        if at_hi.is_some() || end == ranked.len() {
            break;
        }
        // every node of the main graph back in float: it meets, or the bodies' nodes are next
        rounds += 1;
        let reverted = first(&ranked, end);
        let ((_, _, meets), result) = evaluate(&reverted)?;
        if meets {
            at_hi = Some((result, reverted));
            break;
        }
        // with the rounds left (the bound on rounds holds for both phases together)
        (lo, hi, end) = (end, ranked.len(), ranked.len());
        missed_probe = None;
    }
    let (best, reverted, met, held) = match at_hi {
        Some((result, reverted)) => (result, reverted, true, true),
        None => {
            rounds += 1;
            let reverted = first(&ranked, ranked.len());
            let ((_, held, meets), result) = evaluate(&reverted)?;
            (result, reverted, meets, held)
        }
    };
    Ok(SearchOutcome {
        best,
        reverted,
        met,
        held,
        rounds,
        unchanged: false,
        samples: calibration.evaluation.len(),
    })
}

/// The values the nodes of `model`'s main graph compute (a body's cannot be exposed as graph
/// outputs, so only these are measured).
fn main_graph_values(model: &Model) -> std::collections::HashSet<&str> {
    model
        .graph()
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect()
}

/// How many of the `ranked` nodes (with the noise each adds, [`added_noise_db`]; most first) to
/// return to float for the outputs' cosine to go from `achieved` to `wanted`, as predicted by
/// the noise they add: `1 - cos` is about half the outputs' noise-to-signal power ratio, and
/// the noise of each node reaches them in proportion to what it adds. None where there is
/// nothing to go by (the cosine is not what misses, or no node adds noise).
fn predicted_returns(ranked: &[(String, f64)], achieved: f64, wanted: f64) -> Option<usize> {
    if !(achieved.is_finite() && achieved < wanted && wanted < 1.0) {
        return None;
    }
    let noise: Vec<f64> = ranked
        .iter()
        .map(|(_, db)| 10f64.powf(-db / 10.0))
        .collect();
    let total: f64 = noise.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return None;
    }
    // the share of the outputs' noise to take away
    let share = 1.0 - (1.0 - wanted) / (1.0 - achieved);
    let mut sum = 0.0;
    for (k, n) in noise.iter().enumerate() {
        sum += n;
        if sum >= share * total {
            return Some(k + 1);
        }
    }
    Some(noise.len())
}

/// Orders `ranked[from..]` (the nodes a round kept quantized) as `measured` ranks them; those
/// it does not rank keep their order, after the rest.
fn rerank_rest(ranked: &mut [(String, f64)], from: usize, measured: Vec<(String, f64)>) {
    let position: std::collections::HashMap<&str, usize> = measured
        .iter()
        .enumerate()
        .map(|(k, (o, _))| (o.as_str(), k))
        .collect();
    let rest = &mut ranked[from..];
    for (o, lost) in rest.iter_mut() {
        if let Some(&k) = position.get(o.as_str()) {
            *lost = measured[k].1;
        }
    }
    // a stable sort: the unranked keep their order
    rest.sort_by_key(|(o, _)| position.get(o.as_str()).copied().unwrap_or(usize::MAX));
}

/// The noise a node's own rounding adds, as the SQNR it alone would leave (dB): the noise in
/// its output less the noise in what it reads, each as a power relative to the signal (both SQNRs
/// below `ceiling`, the best the grid gives). Independent roundings' noise adds, and what reaches
/// the outputs is roughly the sum of what each node adds, so the nodes to return to float first
/// are those adding the most, whatever SQNR they start from: a node falling from 50 to 37 dB
/// adds a fiftieth of the noise of one falling from 37 to 20, though it loses more decibels.
/// Infinite where the output is no noisier than what it reads.
fn added_noise_db(read_db: f64, own_db: f64, ceiling: f64) -> f64 {
    let power = |db: f64| 10f64.powf(-db.min(ceiling) / 10.0);
    let added = power(own_db) - power(read_db);
    if added > 0.0 {
        -10.0 * added.log10()
    } else {
        f64::INFINITY
    }
}

/// Orders `ranked` (outputs with the noise each node adds, [`added_noise_db`]) most noise
/// first: the order [`search_within_target`] returns them to float in.
fn most_noise_first(mut ranked: Vec<(String, f64)>) -> Vec<(String, f64)> {
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
    ranked
}

/// The quantized nodes by their own output's SQNR, lowest first (the noise they add from the
/// int8 ceiling): for quantizers whose nodes read float values (weight-only and dynamic).
fn by_own_sqnr<R: QuantizedNodes>(
    report: &R,
    measured: &std::collections::BTreeMap<String, ranges::Agreement>,
) -> Vec<(String, f64)> {
    most_noise_first(
        report
            .quantized_outputs()
            .into_iter()
            .map(|o| {
                let own = measured.get(&o).map_or(f64::INFINITY, |a| a.pooled_sqnr_db);
                (o, added_noise_db(f64::INFINITY, own, INT8_CEILING_DB))
            })
            .collect(),
    )
}

/// The quantized nodes by the noise they add ([`added_noise_db`]), most first: over the noise
/// in the quantized values they read (the worst of the nearest quantized nodes upstream; none
/// at graph inputs).
fn sensitivity(
    plan: &qdq::StaticPlan,
    measured: &std::collections::BTreeMap<String, ranges::Agreement>,
) -> Vec<(String, f64)> {
    let own = |o: &str| measured.get(o).map_or(f64::INFINITY, |a| a.pooled_sqnr_db);
    let nodes: Vec<(&str, &str)> = plan.nodes().collect();
    most_noise_first(
        nodes
            .iter()
            .map(|(output, _)| {
                let upstream = plan
                    .upstream_outputs(output)
                    .iter()
                    .map(|u| own(u))
                    .fold(f64::INFINITY, f64::min);
                let added = added_noise_db(upstream, own(output), INT8_CEILING_DB);
                (output.to_string(), added)
            })
            .collect(),
    )
}

/// The float16 stage's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fp16Stage {
    pub calibration: Option<CalibrationSummary>,
    #[serde(flatten)]
    pub conversion: fp16::Fp16Report,
    /// Per float16 node's output: SQNR in dB against the float32 model over the samples pooled
    /// (lowest first).
    #[serde(default, deserialize_with = "crate::json::pairs_inf_if_null")]
    pub output_sqnr_db: Vec<(String, f64)>,
    /// The accuracy target and how it was met (with calibration data).
    #[serde(default)]
    pub accuracy: Option<AccuracyOutcome>,
}

/// The best SQNR float16's 11-bit significand gives (6.02 x 11 + 1.76 dB, rounded up).
const FP16_CEILING_DB: f64 = 70.0;

/// Converts `model` to float16 (without calibration data `target` is not measured, and the
/// report has no accuracy). With calibration data, measures its activations first so that
/// values float16 cannot hold stay float32, then measures each float16 node's output against
/// the float32 model; when a graph output misses `target` (or the fp16 preset), returns the
/// fewest most harmful nodes to float32 (those losing the most SQNR against what they read), as
/// int8 does.
pub fn to_fp16(
    model: &mut Model,
    mut options: fp16::Fp16Options,
    target: AccuracyTarget,
    calibration: Option<Calibration>,
) -> Result<Fp16Stage, QuantizeError> {
    let Some(c) = calibration else {
        let conversion = fp16::convert(model, &options)?;
        return Ok(Fp16Stage {
            calibration: None,
            conversion,
            output_sqnr_db: Vec::new(),
            accuracy: None,
        });
    };
    let exposure = ranges::Exposure::at(model, &[c.samples, &c.evaluation])?;
    let facts = crate::infer::Inference::of_model(model);
    let values = ranges::float_activations(model, &facts);
    let (engine, ranges) = ranges::in_measuring_engine(c.engine, |engine| {
        let runs = ranges::Runs {
            samples: c.samples,
            engine,
            exposure: &exposure,
        };
        ranges::observe(model, &values, runs)
    })?;
    let observed: HashMap<String, f32> = ranges
        .iter()
        .map(|(name, r)| (name.clone(), r.max_abs()))
        .collect();
    options.observed.extend(observed);
    // graph inputs, from the samples themselves
    c.samples.each_chunk(&mut |chunk| {
        for t in chunk.iter().flat_map(|s| s.iter()) {
            if let Ok(v) = t.tensor.to_plain_array_view::<f32>() {
                let max = v.iter().fold(0f32, |m, x| {
                    if x.is_finite() {
                        m.max(x.abs())
                    } else {
                        f32::INFINITY
                    }
                });
                let e = options.observed.entry(t.name.clone()).or_insert(0.0);
                *e = e.max(max);
            }
        }
        Ok(())
    })?;
    let float = Model::from_proto(model.proto.clone(), model.dir().to_path_buf());
    let outputs = float_outputs(&float);
    let convert = |reverted: &std::collections::BTreeMap<String, String>| {
        let mut candidate = Model::from_proto(float.proto.clone(), float.dir().to_path_buf());
        let options = fp16::Fp16Options {
            revert: reverted.clone(),
            ..options.clone()
        };
        let report = fp16::convert(&mut candidate, &options)?;
        Ok((candidate, report, Default::default()))
    };
    // the noise a node adds over the worst of the float16 values it reads (none where it
    // reads none)
    let graph = crate::graph::Graph::new(float.graph().clone());
    let rank = |report: &fp16::Fp16Report,
                measured: &std::collections::BTreeMap<String, ranges::Agreement>| {
        let own = |v: &str| measured.get(v).map_or(f64::INFINITY, |a| a.pooled_sqnr_db);
        most_noise_first(
            report
                .converted_outputs
                .iter()
                .map(|o| {
                    let read = graph
                        .producer(o)
                        .map(|n| &n.input)
                        .into_iter()
                        .flatten()
                        .filter(|v| measured.contains_key(v.as_str()))
                        .map(|v| own(v))
                        .fold(f64::INFINITY, f64::min);
                    (o.clone(), added_noise_db(read, own(o), FP16_CEILING_DB))
                })
                .collect(),
        )
    };
    let outcome = search_within_target(
        &float, &outputs, &target, "fp16", &c, &exposure, convert, rank,
    )?;
    let accuracy = outcome.accuracy(&target, &outputs);
    let output_sqnr_db = outcome.output_sqnr_db();
    let best = outcome.best;
    c.as_written.replace(best.as_written);
    *model = best.model;
    Ok(Fp16Stage {
        calibration: Some(CalibrationSummary {
            origin: c.origin,
            samples: c.samples.len(),
            engine: Some(engine),
            values_measured: ranges.len(),
        }),
        conversion: best.report,
        output_sqnr_db,
        accuracy: Some(accuracy),
    })
}

/// A node the quantizers add.
fn new_node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

/// Removes what a quantizer's rewrites orphaned (the float weights, the nodes that fed them),
/// with the passes that do it everywhere else.
fn remove_orphans(model: &mut Model) -> Result<(), QuantizeError> {
    run_passes(
        model,
        &["eliminate_dead_nodes", "eliminate_unused_initializers"],
    )?;
    Ok(())
}

/// Runs the passes named on `model`, as `optimize` runs them.
fn run_passes(
    model: &mut Model,
    names: &[&str],
) -> Result<crate::passes::OptimizeReport, QuantizeError> {
    let passes: Vec<&'static dyn crate::passes::Pass> = names
        .iter()
        .map(|n| crate::passes::by_name(n).unwrap_or_else(|| panic!("no pass named {n}")))
        .collect();
    crate::passes::optimize(model, &passes, &Default::default())
        .map_err(|e| QuantizeError::Inconsistent(vec![e.to_string()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreement(cosine: f64, sqnr_db: f64, decision: Option<f64>) -> ranges::Agreement {
        ranges::Agreement {
            sqnr_db,
            cosine,
            pooled_sqnr_db: sqnr_db,
            top1: None,
            decision,
        }
    }

    #[test]
    fn nodes_adding_the_most_noise_rank_first_whatever_they_start_from() {
        // a table read from exact ids that falls to 37 dB, a product falling from 37 to 20 dB,
        // one from 22 to 20 dB, and one whose output is cleaner than what it reads
        let ranked = most_noise_first(vec![
            ("table".into(), added_noise_db(f64::INFINITY, 37.0, 50.0)),
            ("product".into(), added_noise_db(37.0, 20.0, 50.0)),
            ("late".into(), added_noise_db(22.0, 20.0, 50.0)),
            ("gain".into(), added_noise_db(20.0, 24.0, 50.0)),
        ]);
        let order: Vec<&str> = ranked.iter().map(|(o, _)| o.as_str()).collect();
        assert_eq!(order, ["product", "late", "table", "gain"]);
        // 10^-2 - 10^-3.7, 10^-2 - 10^-2.2 and 10^-3.7 - 10^-5 as SQNRs
        let db: Vec<f64> = ranked.iter().map(|(_, d)| *d).collect();
        assert!((db[0] - 20.0875).abs() < 1e-3, "{db:?}");
        assert!((db[1] - 24.3292).abs() < 1e-3, "{db:?}");
        assert!((db[2] - 37.2233).abs() < 1e-3, "{db:?}");
        assert_eq!(db[3], f64::INFINITY);
        // SQNRs above the grid's best count as the best
        assert_eq!(added_noise_db(60.0, 70.0, 50.0), f64::INFINITY);
    }

    #[test]
    fn a_round_reorders_only_the_nodes_it_kept_quantized() {
        let mut ranked: Vec<(String, f64)> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|o| (o.to_string(), 1.0))
            .collect();
        // the round reverted a and b; it ranks d first, then c and a (reverted), not e
        let measured = vec![("d".into(), 9.0), ("c".into(), 5.0), ("a".into(), 7.0)];
        rerank_rest(&mut ranked, 2, measured);
        let order: Vec<(&str, f64)> = ranked.iter().map(|(o, l)| (o.as_str(), *l)).collect();
        assert_eq!(
            order,
            [("a", 1.0), ("b", 1.0), ("d", 9.0), ("c", 5.0), ("e", 1.0)]
        );
    }

    #[test]
    fn targets_parse_every_measure_and_refuse_the_rest() {
        let t = AccuracyTarget::parse("cos=0.99, sqnr=30,agree@0.3=0.995").unwrap();
        assert_eq!(t.min_cosine, 0.99);
        assert_eq!(t.min_top1, 0.0);
        assert_eq!(t.min_sqnr_db, Some(30.0));
        assert_eq!(t.decision, Some((0.3, 0.995)));
        assert_eq!(
            t.describe(),
            "cos 0.99, top-1 0, SQNR 30 dB, agree@0.3 0.995"
        );
        for bad in [
            "cos=2",
            "sqnr=x",
            "agree@x=0.5",
            "agree@0.5=1.5",
            "top5=1",
            "cos",
        ] {
            assert!(AccuracyTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_output_can_have_a_target_of_its_own() {
        // without a target for every output, the default one
        let t = AccuracyTarget::parse("hidden:cos=0.9; logits:0:cos=0.95,top1=1").unwrap();
        assert_eq!((t.min_cosine, t.min_top1), (0.99, 1.0));
        assert_eq!(t.by_output["hidden"].min_cosine, 0.9);
        assert_eq!(t.by_output["logits:0"].min_top1, 1.0);
        assert_eq!(t.for_output("other").min_cosine, 0.99);
        assert_eq!(
            t.own_cosines(),
            BTreeMap::from([("hidden".to_string(), 0.9), ("logits:0".to_string(), 0.95)])
        );
        assert_eq!(t.without_top1().by_output["logits:0"].min_top1, 0.0);
        let t = AccuracyTarget::parse("cos=0.98;hidden:sqnr=10").unwrap();
        assert_eq!((t.min_cosine, t.min_top1), (0.98, 0.0));
        assert_eq!(
            t.describe(),
            "cos 0.98, top-1 0; hidden: cos 0, top-1 0, SQNR 10 dB"
        );
        for bad in [
            "cos=0.9;cos=0.99",
            "h:cos=0.9;h:cos=0.8",
            "h:agree@0.5=0.9",
            "h:cos=2",
        ] {
            assert!(AccuracyTarget::parse(bad).is_err(), "{bad}");
        }
        // each output is judged by its own target
        let t = AccuracyTarget::parse("cos=0.99;hidden:cos=0.9").unwrap();
        let (kept, loose) = (agreement(0.995, 30.0, None), agreement(0.95, 15.0, None));
        let (achieved, met) =
            t.judge([("scores", Some(&kept)), ("hidden", Some(&loose))].into_iter());
        assert!(met);
        // the smallest values are the other outputs'; the output with its own target apart
        assert_eq!((achieved.cosine, achieved.sqnr_db), (0.995, 30.0));
        assert_eq!(achieved.by_output["hidden"].cosine, 0.95);
        assert!(
            achieved
                .describe(None)
                .ends_with("; hidden: cosine 0.950000, top-1 1.000, SQNR 15.0 dB")
        );
        assert!(
            !t.judge([("scores", Some(&loose)), ("hidden", Some(&kept))].into_iter())
                .1
        );
        // with a target of its own for each output, the smallest values are over all of them
        let t = AccuracyTarget::parse("scores:cos=0.9;hidden:cos=0.9").unwrap();
        let (achieved, met) =
            t.judge([("scores", Some(&kept)), ("hidden", Some(&loose))].into_iter());
        assert!(met && achieved.cosine == 0.95 && achieved.by_output.len() == 2);
        // no output to judge (none is float): nothing missed, nothing achieved
        let (achieved, met) = t.judge(std::iter::empty());
        assert!(met && achieved.cosine.is_nan() && achieved.sqnr_db.is_nan());
        // an output given but not measured is missed
        let (achieved, met) = t.judge([("scores", None)].into_iter());
        assert!(!met && achieved.cosine.is_nan());
    }

    #[test]
    fn each_measure_binds_on_the_worst_output() {
        let t = AccuracyTarget::parse("cos=0.9,sqnr=20,agree@0.5=0.99").unwrap();
        let (good, bad_sqnr, bad_decision) = (
            agreement(0.99, 25.0, Some(1.0)),
            agreement(0.99, 15.0, Some(1.0)),
            agreement(0.99, 25.0, Some(0.9)),
        );
        let (worst, met) = t.judge([Some(&good), Some(&good)].into_iter().map(|a| ("y", a)));
        assert!(met && worst.sqnr_db == 25.0 && worst.decision == 1.0);
        let (worst, met) = t.judge([Some(&good), Some(&bad_sqnr)].into_iter().map(|a| ("y", a)));
        assert!(!met && worst.sqnr_db == 15.0);
        let (worst, met) = t.judge(
            [Some(&bad_decision), Some(&good)]
                .into_iter()
                .map(|a| ("y", a)),
        );
        assert!(!met && worst.decision == 0.9);
        // a decision that could not be read does not pass, nor does an unmeasured output
        let unread = agreement(0.99, 25.0, None);
        assert!(!t.judge([Some(&unread)].into_iter().map(|a| ("y", a))).1);
        assert!(!t.judge([Some(&good), None].into_iter().map(|a| ("y", a))).1);
        // without those measures asked for, only cosine and top-1 bind
        let loose = AccuracyTarget::parse("cos=0.9").unwrap();
        assert!(
            loose
                .judge(
                    [Some(&bad_sqnr), Some(&unread)]
                        .into_iter()
                        .map(|a| ("y", a))
                )
                .1
        );
        // a NaN SQNR is a measure that failed, not a pass
        let nan = agreement(0.99, f64::NAN, Some(1.0));
        assert!(!loose.judge([Some(&nan)].into_iter().map(|a| ("y", a))).1);
    }

    /// A report written before SQNR was measured reads back as not measured (NaN), never as a
    /// number; an exact output (infinite SQNR, written as null) reads back infinite.
    #[test]
    fn an_outcome_without_sqnr_reads_back_unmeasured() {
        let old = r#"{"target":{"min_cosine":0.99,"min_top1":1.0},"achieved_cosine":0.995,
            "achieved_top1":1.0,"met":true,"rounds":1,"returned_to_float":0}"#;
        let a: AccuracyOutcome = serde_json::from_str(old).unwrap();
        assert!(a.achieved_sqnr_db.is_nan());
        let exact = old.replace("\"met\"", "\"achieved_sqnr_db\":null,\"met\"");
        let a: AccuracyOutcome = serde_json::from_str(&exact).unwrap();
        assert_eq!(a.achieved_sqnr_db, f64::INFINITY);
    }

    /// A quantizer whose nodes each add a known error: node k of a chain of Adds reads a
    /// zero vector in float and a Walsh-Hadamard row scaled by its amplitude when
    /// "quantized". The rows are orthogonal to each other and to the input (all ones), so the
    /// output's cosine is exactly 1 / sqrt(1 + the sum of the squared amplitudes kept).
    struct Noisy {
        quantized: Vec<String>,
        /// Nodes said to read one weight.
        sharing: Vec<Vec<String>>,
    }

    impl QuantizedNodes for Noisy {
        fn quantized_outputs(&self) -> Vec<String> {
            self.quantized.clone()
        }

        fn sharing_weights(&self) -> Vec<Vec<String>> {
            self.sharing.clone()
        }
    }

    /// Calibration and evaluation on the same `samples`, in the engine `auto` picks.
    fn on_samples<'a>(samples: &'a Vec<&'a [NamedTensor]>) -> Calibration<'a> {
        Calibration {
            samples,
            evaluation: samples,
            engine: EngineChoice::Auto,
            origin: "test".into(),
            as_written: Default::default(),
        }
    }

    #[test]
    fn the_search_returns_the_fewest_most_harmful_nodes_that_meet_the_target() {
        use crate::graph::builder::{ModelBuilder, tensor_f32};
        use crate::onnx::DataType;
        use tract_onnx::prelude::{Tensor, tract_ndarray};
        const N: usize = 64;
        let amplitudes = [0.03f32, 0.005, 0.02, 0.004, 0.025, 0.003];
        let value = |k: usize| format!("v{k}");
        let build = |reverted: &std::collections::BTreeMap<String, String>, float: bool| {
            let mut b = ModelBuilder::new(17).input("x", DataType::Float, &["1", "64"]);
            let mut quantized = Vec::new();
            for (k, a) in amplitudes.iter().enumerate() {
                let noisy = !float && !reverted.contains_key(&value(k));
                let row: Vec<f32> = (0..N)
                    .map(|i| {
                        let sign = if ((i & (k + 1)).count_ones() % 2) == 0 {
                            1.0
                        } else {
                            -1.0
                        };
                        if noisy { a * sign } else { 0.0 }
                    })
                    .collect();
                if noisy {
                    quantized.push(value(k));
                }
                let from = if k == 0 {
                    "x".to_string()
                } else {
                    value(k - 1)
                };
                b = b
                    .initializer(tensor_f32(&format!("z{k}"), &[N as i64], &row))
                    .node("Add", &[&from, &format!("z{k}")], &[&value(k)]);
            }
            let last = value(amplitudes.len() - 1);
            let proto = b
                .node("Identity", &[&last], &["y"])
                .output("y", DataType::Float, &["1", "64"])
                .build();
            let sharing = Vec::new();
            (
                Model::from_proto(proto, ".".into()),
                Noisy { quantized, sharing },
            )
        };
        let none = std::collections::BTreeMap::new();
        let (float, _) = build(&none, true);
        let sample = vec![NamedTensor {
            name: "x".into(),
            tensor: Tensor::from(tract_ndarray::Array2::<f32>::ones((1, N))),
        }];
        let samples = vec![sample.as_slice()];
        let calibration = on_samples(&samples);
        // all kept: 1/sqrt(1 + 1.975e-3) = 0.99901; without the three largest (0.03, 0.025,
        // 0.02): 0.999975; without two: 0.999775
        let target = AccuracyTarget::parse("cos=0.9999").unwrap();
        // each node adds noise of its amplitude squared to a signal of 1 a value
        let rank = |r: &Noisy, _: &std::collections::BTreeMap<String, ranges::Agreement>| {
            most_noise_first(
                r.quantized
                    .iter()
                    .map(|o| {
                        let a = f64::from(amplitudes[o[1..].parse::<usize>().unwrap()]);
                        (o.clone(), -10.0 * (a * a).log10())
                    })
                    .collect(),
            )
        };
        // `tied`: nodes said to read one weight, where both are quantized
        let search_tied = |target, tied: &[&str]| {
            search_within_target(
                &float,
                &["y".to_string()],
                target,
                "int8",
                &calibration,
                &ranges::Exposure::unbounded(),
                |reverted| {
                    let (model, mut report) = build(reverted, false);
                    if tied.iter().all(|t| report.quantized.iter().any(|q| q == t)) {
                        report.sharing = vec![tied.iter().map(|t| t.to_string()).collect()];
                    }
                    Ok((model, report, std::collections::BTreeMap::new()))
                },
                rank,
            )
            .unwrap()
        };
        let search = |target| search_tied(target, &[]);
        let outcome = search(&target);
        assert!(outcome.met);
        let reverted: Vec<&str> = outcome.reverted.keys().map(String::as_str).collect();
        assert_eq!(reverted, ["v0", "v2", "v4"]);
        assert!(outcome.reverted["v0"].contains("returned to float"));
        assert_eq!(outcome.best.report.quantized, ["v1", "v3", "v5"]);
        assert!((outcome.best.measured["y"].cosine - 0.999975).abs() < 1e-5);
        // all (misses), then 3 (meets; the noise predicts 3, half the nodes: not probed), 1 and
        // 2 (miss)
        assert_eq!(outcome.rounds, 4);
        // a node inside a body (here one the float graph does not hold), even ranked first, is
        // searched only after the main graph's nodes, which meet the target without it
        let with_body = search_within_target(
            &float,
            &["y".to_string()],
            &target,
            "int8",
            &calibration,
            &ranges::Exposure::unbounded(),
            |reverted| {
                let (model, mut report) = build(reverted, false);
                if !reverted.contains_key("in_body") {
                    report.quantized.push("in_body".into());
                }
                Ok((model, report, std::collections::BTreeMap::new()))
            },
            |r: &Noisy, m: &std::collections::BTreeMap<String, ranges::Agreement>| {
                let mut ranked = rank(
                    &Noisy {
                        quantized: r
                            .quantized
                            .iter()
                            .filter(|o| *o != "in_body")
                            .cloned()
                            .collect(),
                        sharing: vec![],
                    },
                    m,
                );
                if r.quantized.iter().any(|o| o == "in_body") {
                    ranked.insert(0, ("in_body".to_string(), 1.0));
                }
                ranked
            },
        )
        .unwrap();
        assert!(with_body.met);
        let reverted: Vec<&str> = with_body.reverted.keys().map(String::as_str).collect();
        assert_eq!(reverted, ["v0", "v2", "v4"]);
        assert_eq!(
            with_body.best.report.quantized,
            ["v1", "v3", "v5", "in_body"]
        );

        // without the largest alone: 1/sqrt(1 + 1.075e-3) = 0.999463. The noise predicts one
        // node: all (misses), then 1 (meets), where bisection from the middle took 3 rounds
        let one = AccuracyTarget::parse("cos=0.9994").unwrap();
        let outcome = search(&one);
        assert!(outcome.met);
        let reverted: Vec<&str> = outcome.reverted.keys().map(String::as_str).collect();
        assert_eq!(reverted, ["v0"]);
        assert_eq!(outcome.rounds, 2);
        // where v0 and v5 read one weight, v5 returns with v0 (their weight is then float
        // alone), and says why
        let outcome = search_tied(&one, &["v0", "v5"]);
        assert!(outcome.met);
        let reverted: Vec<&str> = outcome.reverted.keys().map(String::as_str).collect();
        assert_eq!(reverted, ["v0", "v5"]);
        assert!(
            outcome.reverted["v5"].contains("'v0', which reads the same weight"),
            "{}",
            outcome.reverted["v5"]
        );
        assert_eq!(outcome.best.report.quantized, ["v1", "v2", "v3", "v4"]);

        // a target only the float model meets (no int8 node keeps 200 dB): every node returns,
        // in a last round after the bisection (3, 4 and 5 miss)
        let outcome = search(&AccuracyTarget::parse("cos=0.9999,sqnr=200").unwrap());
        assert!(outcome.met, "an exact result meets any SQNR");
        assert_eq!(outcome.reverted.len(), amplitudes.len());
        assert!(outcome.best.report.quantized.is_empty());
        assert_eq!(outcome.rounds, 5);

        // three pairs sharing a weight, {v0, v1}, {v4, v3}, {v2, v5}, with only the float model
        // meeting the target, and a ranking that changes once v0 is back: by amplitude (v0,
        // v4, v2, v1, v3, v5), then v4, v3, v2, v5. Returning 3 returns all (no round: hi
        // becomes 3), 1 misses, and after the re-ranking the first 2 and the first 3 return
        // the same four nodes: the search must still end on all six, not on those four
        let pairs = [["v0", "v1"], ["v4", "v3"], ["v2", "v5"]];
        let changing = |r: &Noisy, m: &std::collections::BTreeMap<String, ranges::Agreement>| {
            if r.quantized.len() == amplitudes.len() {
                return rank(r, m);
            }
            ["v4", "v3", "v2", "v5"]
                .iter()
                .filter(|o| r.quantized.iter().any(|q| q == *o))
                .map(|o| (o.to_string(), 30.0))
                .collect()
        };
        let outcome = search_within_target(
            &float,
            &["y".to_string()],
            &AccuracyTarget::parse("cos=0.9999,sqnr=200").unwrap(),
            "int8",
            &calibration,
            &ranges::Exposure::unbounded(),
            |reverted| {
                let (model, mut report) = build(reverted, false);
                report.sharing = pairs
                    .iter()
                    .filter(|p| p.iter().all(|o| report.quantized.iter().any(|q| q == o)))
                    .map(|p| p.map(String::from).to_vec())
                    .collect();
                Ok((model, report, std::collections::BTreeMap::new()))
            },
            changing,
        )
        .unwrap();
        assert!(outcome.met, "{:?}", outcome.reverted.keys());
        assert_eq!(outcome.reverted.len(), amplitudes.len());
    }

    /// A quantizer that leaves the model as it was (nothing it can quantize) has nothing to
    /// measure: the search runs nothing (here, the samples do not even fit the model) and says
    /// so, and the target holds.
    #[test]
    fn a_candidate_left_as_the_float_model_is_not_run() {
        use crate::graph::builder::ModelBuilder;
        use crate::onnx::DataType;
        use tract_onnx::prelude::{Tensor, tract_ndarray};
        let proto = ModelBuilder::new(17)
            .input("x", DataType::Float, &["1", "4"])
            .node("Relu", &["x"], &["y"])
            .output("y", DataType::Float, &["1", "4"])
            .build();
        let float = Model::from_proto(proto, ".".into());
        let sample = vec![NamedTensor {
            name: "not_an_input".into(),
            tensor: Tensor::from(tract_ndarray::Array2::<f32>::ones((3, 3))),
        }];
        let samples = vec![sample.as_slice()];
        let calibration = on_samples(&samples);
        let target = AccuracyTarget::parse("cos=0.99").unwrap();
        let outputs = ["y".to_string()];
        // the quantizer's candidate: the float model, or one with a node renamed
        let search = |renamed: bool| {
            search_within_target(
                &float,
                &outputs,
                &target,
                "int8",
                &calibration,
                &ranges::Exposure::unbounded(),
                |_| {
                    let mut candidate = Model::from_proto(float.proto.clone(), ".".into());
                    if renamed {
                        candidate.graph_mut().node[0].name = Some("renamed".into());
                    }
                    let report = Noisy {
                        quantized: vec![],
                        sharing: vec![],
                    };
                    Ok((candidate, report, std::collections::BTreeMap::new()))
                },
                |_, _| Vec::new(),
            )
        };
        let outcome = search(false).unwrap();
        assert!(outcome.met && outcome.unchanged);
        assert_eq!((outcome.rounds, outcome.best.engine), (0, None));
        assert!(outcome.best.measured.is_empty());
        let accuracy = outcome.accuracy(&target, &outputs);
        assert!(accuracy.met);
        assert_eq!(accuracy.unmeasured.as_deref(), Some(UNCHANGED));
        assert!(accuracy.nothing_quantized());
        assert!(accuracy.describe().contains("nothing was quantized"));
        // a candidate that differs is measured: these samples then fail
        assert!(search(true).is_err());
    }
}
