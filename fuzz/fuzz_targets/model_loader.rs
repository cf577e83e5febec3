//! The model loader and everything that reads a loaded model before any command acts: decode,
//! the structural and schema checks, type and shape inference, lint and inspect. None may panic
//! or allocate from a size the input claims.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = mdeploy::onnx::Model::decode(
        bytes::Bytes::copy_from_slice(data),
        Path::new("fuzz.onnx"),
        PathBuf::from("/nonexistent-fuzz-dir"),
    ) else {
        return;
    };
    if mdeploy::graph::check_model(&model).is_ok() {
        let _ = mdeploy::infer::Inference::of_model(&model);
        let _ = mdeploy::lint::lint(&model);
        let _ = mdeploy::inspect::inspect(&model);
    }
});
