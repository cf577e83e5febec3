//! The data options `verify`, `optimize` and `build` share: given files, or seeded random samples,
//! and the engine that runs the models.

use std::path::PathBuf;

use crate::error::UsageError;
use crate::onnx::Model;
use crate::run::{EngineChoice, InputShapes, graph_inputs, random_inputs};
use crate::verify::{Sample, load_samples};

/// Where samples come from and what runs them.
/// The data a result is verified on: `data` when given, else the calibration data (given only
/// when quantizing: random inputs fall outside the calibrated ranges and say nothing about how
/// the model is used), else none (seeded random samples).
pub fn verification_data(data: &[PathBuf], calibration: &[PathBuf]) -> Vec<PathBuf> {
    if data.is_empty() {
        calibration.to_vec()
    } else {
        data.to_vec()
    }
}

#[derive(Debug, Clone)]
pub struct DataOptions {
    /// Test data directories (or parents of test_data_set_N/), .npz, .npy or .pb files.
    pub data: Vec<PathBuf>,
    /// Random samples to generate when no `data` is given.
    pub samples: usize,
    /// Seed of the random samples.
    pub seed: u64,
    /// `INPUT=1,3,224,224` or `dim=2` settings.
    pub input_shapes: Vec<String>,
    /// `tract`, `ort`, `auto`, or the pair `tract,ort`.
    pub engine: String,
}

impl Default for DataOptions {
    fn default() -> Self {
        DataOptions {
            data: Vec::new(),
            samples: 3,
            seed: 0,
            input_shapes: Vec::new(),
            engine: "auto".into(),
        }
    }
}

impl DataOptions {
    /// The engine choice, and whether both engines are to be compared (`tract,ort`).
    pub fn engines(&self) -> Result<(EngineChoice, bool), UsageError> {
        let parts: Vec<&str> = self.engine.split(',').map(str::trim).collect();
        let choice = |s: &str| s.parse::<EngineChoice>().map_err(UsageError);
        match parts.as_slice() {
            [one] => Ok((choice(one)?, false)),
            [a, b]
                if a != b
                    && choice(a)? != EngineChoice::Auto
                    && choice(b)? != EngineChoice::Auto =>
            {
                Ok((choice(a)?, true))
            }
            _ => Err(UsageError(format!(
                "engine '{}': one of tract, ort, auto, or the pair tract,ort",
                self.engine
            ))),
        }
    }

    /// The input shape settings, parsed.
    pub fn shapes(&self) -> Result<InputShapes, UsageError> {
        InputShapes::parse(&self.input_shapes).map_err(UsageError)
    }

    /// The samples from `data`, or `samples` seeded random ones that fit `model`'s inputs (then
    /// with the seed they started from).
    pub fn load(&self, model: &Model) -> anyhow::Result<(Vec<Sample>, Option<u64>)> {
        if !self.data.is_empty() {
            return Ok((load_samples(&self.data)?, None));
        }
        if self.samples == 0 {
            return Err(UsageError("samples must be at least 1".into()).into());
        }
        let inputs = graph_inputs(model);
        let shapes = self.shapes()?.resolve(&inputs).map_err(UsageError)?;
        let samples = (0..self.samples)
            .map(|k| {
                let seed = self.seed.wrapping_add(k as u64);
                Ok(Sample {
                    origin: format!("random #{k}"),
                    inputs: random_inputs(&inputs, &shapes, seed)?,
                    expected: None,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((samples, Some(self.seed)))
    }
}
