//! The data options `verify` and `optimize` share: given files, or seeded random samples, and
//! the engine that runs the models.

use std::path::PathBuf;

use clap::Args;
use mdeploy::onnx::Model;
use mdeploy::run::{EngineChoice, InputShapes, graph_inputs, random_inputs};
use mdeploy::verify::{Sample, load_samples};

use super::printer::UsageError;

#[derive(Debug, Args)]
pub struct DataArgs {
    /// Input data: a test data directory (or a parent of test_data_set_N/), .npz, .npy or .pb.
    #[arg(long, value_name = "PATH")]
    pub data: Vec<PathBuf>,
    /// Random samples to generate when no --data is given.
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
    /// Seed of the random samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fix dims: `INPUT=1,3,224,224` or one symbolic dim `batch=2`. Repeatable.
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shapes: Vec<String>,
    /// Engine that runs the models: tract, ort (onnxruntime, loaded from ORT_DYLIB_PATH or the
    /// onnxruntime Python package), or auto (tract, and onnxruntime where tract cannot run the
    /// model; onnxruntime first for a float16 model, which tract runs slowly). `tract,ort` runs with tract and also reports how far onnxruntime disagrees.
    #[arg(long, default_value = "auto", value_name = "ENGINE")]
    pub engine: String,
}

impl DataArgs {
    /// The engine choice, and whether both engines are to be compared (`tract,ort`).
    pub fn engines(&self) -> anyhow::Result<(EngineChoice, bool)> {
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
                "--engine '{}': one of tract, ort, auto, or the pair tract,ort",
                self.engine
            ))
            .into()),
        }
    }

    /// The `--input-shape` settings, parsed.
    pub fn shapes(&self) -> anyhow::Result<InputShapes> {
        Ok(InputShapes::parse(&self.input_shapes).map_err(UsageError)?)
    }

    /// The samples from `--data`, or `--samples` seeded random ones that fit `model`'s inputs
    /// (then with the seed they started from).
    pub fn load(&self, model: &Model) -> anyhow::Result<(Vec<Sample>, Option<u64>)> {
        if !self.data.is_empty() {
            return Ok((load_samples(&self.data)?, None));
        }
        if self.samples == 0 {
            return Err(UsageError("--samples must be at least 1".into()).into());
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
