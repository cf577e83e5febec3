//! The streaming model writer: any model that decodes and checks is saved, read back, and must
//! decode to the same model (what "a model loaded and saved is byte-identical" rests on).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mdeploy::onnx::{Model, SaveOptions};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let Ok(model) = Model::decode(
        bytes::Bytes::copy_from_slice(data),
        Path::new("fuzz.onnx"),
        dir.path().to_path_buf(),
    ) else {
        return;
    };
    if mdeploy::graph::check_model(&model).is_err() {
        return;
    }
    let path = dir.path().join("out.onnx");
    if model.save(&path, SaveOptions::default()).is_err() {
        return;
    }
    let again = Model::load(&path).expect("a saved model loads");
    // compared as canonical encodings: a NaN weight is equal to itself bit for bit, not by ==
    use prost::Message;
    assert!(
        again.proto.encode_to_vec() == model.proto.encode_to_vec(),
        "the saved model decodes to another model"
    );
});
