//! The data flags `verify` and `optimize` share, parsed into the library's
//! [`DataOptions`](mdeploy::pipeline::DataOptions).

use std::path::PathBuf;

use clap::Args;
use mdeploy::pipeline::DataOptions;

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
    /// model; onnxruntime first for a float16, 4-bit or int8 model, which it runs faster).
    /// `tract,ort` runs with tract and also reports how far onnxruntime disagrees.
    #[arg(long, default_value = "auto", value_name = "ENGINE")]
    pub engine: String,
}

impl DataArgs {
    pub fn options(&self) -> DataOptions {
        DataOptions {
            data: self.data.clone(),
            samples: self.samples,
            seed: self.seed,
            input_shapes: self.input_shapes.clone(),
            engine: self.engine.clone(),
        }
    }
}
