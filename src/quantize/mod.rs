//! Quantization: float16 conversion ([`fp16`]) and int8 ([`dynamic`]), measured against the
//! float model on calibration data ([`ranges`]).

pub mod dynamic;
pub mod fp16;
mod fp16_ops;
pub mod ranges;

use crate::graph::GraphError;
use crate::onnx::OnnxError;
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
}

use std::collections::HashMap;

use serde::Serialize;

use crate::onnx::Model;
use crate::run::{EngineChoice, EngineKind, NamedTensor};

/// Calibration data and the engine that runs the float model on it.
pub struct Calibration<'a> {
    pub samples: &'a [&'a [NamedTensor]],
    pub engine: EngineChoice,
    /// Where the samples came from, for the report.
    pub origin: String,
}

/// What measuring the float model on calibration data found.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationSummary {
    pub origin: String,
    pub samples: usize,
    pub engine: EngineKind,
    pub values_measured: usize,
}

/// What quantization did, by mode.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "mode")]
pub enum QuantizeReport {
    #[serde(rename = "fp16")]
    Fp16(Fp16Stage),
    #[serde(rename = "int8-dynamic")]
    Int8Dynamic(DynamicStage),
}

impl QuantizeReport {
    /// The verification preset the mode warrants.
    pub fn preset(&self) -> &'static str {
        match self {
            QuantizeReport::Fp16(_) => "fp16",
            QuantizeReport::Int8Dynamic(_) => "int8",
        }
    }
}

/// The dynamic int8 stage's report: what was quantized, and how far each quantized node's
/// output moved from float on the calibration data.
#[derive(Debug, Clone, Serialize)]
pub struct DynamicStage {
    #[serde(flatten)]
    pub quantization: dynamic::DynamicReport,
    pub calibration: Option<CalibrationSummary>,
    /// Per quantized node's output: SQNR in dB against the float model (lowest first).
    pub output_sqnr_db: Vec<(String, f64)>,
}

/// Quantizes `model`'s MatMul/Gemm weights to int8 with activations quantized at run time; with
/// calibration data, measures each quantized node's output against the float model.
pub fn to_int8_dynamic(
    model: &mut Model,
    options: &dynamic::DynamicOptions,
    calibration: Option<Calibration>,
) -> Result<DynamicStage, QuantizeError> {
    let float = Model::from_proto(model.proto.clone(), model.dir().to_path_buf());
    let quantization = dynamic::quantize(model, options)?;
    let (summary, output_sqnr_db) = match calibration {
        Some(c) => {
            let values: Vec<String> = quantization
                .quantized
                .iter()
                .map(|q| q.output.clone())
                .collect();
            let (engine, sqnr) = ranges::compare(&float, model, &values, c.samples, c.engine)?;
            let mut sqnr: Vec<(String, f64)> = sqnr.into_iter().collect();
            sqnr.sort_by(|a, b| a.1.total_cmp(&b.1));
            let summary = CalibrationSummary {
                origin: c.origin,
                samples: c.samples.len(),
                engine,
                values_measured: values.len(),
            };
            (Some(summary), sqnr)
        }
        None => (None, Vec::new()),
    };
    Ok(DynamicStage {
        quantization,
        calibration: summary,
        output_sqnr_db,
    })
}

/// The float16 stage's report.
#[derive(Debug, Clone, Serialize)]
pub struct Fp16Stage {
    pub calibration: Option<CalibrationSummary>,
    #[serde(flatten)]
    pub conversion: fp16::Fp16Report,
}

/// Converts `model` to float16: measures its activations on `calibration` first (when given) so
/// that values float16 cannot hold stay float32.
pub fn to_fp16(
    model: &mut Model,
    mut options: fp16::Fp16Options,
    calibration: Option<Calibration>,
) -> Result<Fp16Stage, QuantizeError> {
    let summary = match calibration {
        Some(c) => {
            let facts = crate::infer::Inference::of_model(model);
            let values = ranges::float_activations(model, &facts);
            let (engine, ranges) = ranges::observe(model, &values, c.samples, c.engine)?;
            let observed: HashMap<String, f32> = ranges
                .iter()
                .map(|(name, r)| (name.clone(), r.max_abs()))
                .collect();
            options.observed.extend(observed);
            Some(CalibrationSummary {
                origin: c.origin,
                samples: c.samples.len(),
                engine,
                values_measured: ranges.len(),
            })
        }
        None => None,
    };
    let conversion = fp16::convert(model, &options)?;
    Ok(Fp16Stage {
        calibration: summary,
        conversion,
    })
}
