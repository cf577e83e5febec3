//! mdeploy: take a trained ONNX model to a deployable artifact you can trust.
//!
//! The library holds everything but the command line: [`onnx`] reads and writes models losslessly,
//! [`graph`] is the editable graph passes work on, [`run`] executes models with tract, and
//! [`inspect`] / [`convert`] are the first two stages of the pipeline, and [`pipeline`] composes
//! the stages (convert, optimize, verify, pack) and runs `mdeploy build`. Only `src/cli/` knows about
//! terminals; libraries report progress through [`progress::Progress`].

pub mod convert;
pub mod error;
pub mod graph;
pub mod infer;
pub mod inspect;
pub mod json;
pub mod lint;
pub mod onnx;
pub mod pack;
pub mod passes;
pub mod pipeline;
pub mod progress;
pub mod quantize;
pub mod run;
pub mod serve;
pub mod verify;
