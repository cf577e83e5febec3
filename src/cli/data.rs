//! The data flags `verify` and `optimize` share, parsed into the library's
//! [`DataOptions`](mdeploy::pipeline::DataOptions).

use std::path::PathBuf;

use clap::Args;
use mdeploy::pipeline::DataOptions;

use super::printer::UsageError;

#[derive(Debug, Args)]
pub struct DataArgs {
    /// Input data: a test data directory (or a parent of test_data_set_N/), .npz, .npy or .pb.
    #[arg(long, value_name = "PATH")]
    pub data: Vec<PathBuf>,
    /// Random samples to generate when no --data is given [default: 3].
    #[arg(long)]
    pub samples: Option<usize>,
    /// Seed of the random samples [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fix dims: `INPUT=1,3,224,224` or one symbolic dim `batch=2`. Repeatable.
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shapes: Vec<String>,
    /// Engine that runs the models: tract, ort (onnxruntime, loaded from ORT_DYLIB_PATH or the
    /// onnxruntime Python package), or auto (tract, and onnxruntime where tract cannot run the
    /// model; onnxruntime first for a float16, 4-bit or int8 model, which it runs faster).
    /// `tract,ort` runs with tract and also reports how far onnxruntime disagrees.
    #[arg(long, default_value = "auto", value_name = "ENGINE")]
    pub engine: String,
}

impl DataArgs {
    /// The options; `--samples` or `--seed` where no random sample is made (`other` names the
    /// other data that takes their place beside `--data`, if any) is a usage error: a flag
    /// that changes nothing would let a user believe it did.
    pub fn options(&self, other: Option<&str>) -> Result<DataOptions, UsageError> {
        let given = |flag: &str, set: bool| set.then(|| flag.to_string());
        let random_flags: Vec<String> = [
            given("--samples", self.samples.is_some()),
            given("--seed", self.seed.is_some()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let instead = if !self.data.is_empty() {
            Some("--data")
        } else {
            other
        };
        if let (Some(instead), false) = (instead, random_flags.is_empty()) {
            let verb = if random_flags.len() == 1 {
                "applies"
            } else {
                "apply"
            };
            return Err(UsageError(format!(
                "{} {verb} to random samples, which are not made with {instead}",
                random_flags.join(" and ")
            )));
        }
        let defaults = DataOptions::default();
        Ok(DataOptions {
            data: self.data.clone(),
            samples: self.samples.unwrap_or(defaults.samples),
            seed: self.seed.unwrap_or(defaults.seed),
            input_shapes: self.input_shapes.clone(),
            engine: self.engine.clone(),
        })
    }
}
