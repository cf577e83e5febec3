//! Lossless ONNX I/O on real files: every real model and every conformance model loads and saves
//! back to the same bytes.

#[path = "../common/mod.rs"]
mod common;

use mdeploy::onnx::{Model, SaveOptions};

fn round_trip(path: &std::path::Path, out: &std::path::Path) -> Result<(), String> {
    let model = Model::load(path).map_err(|e| e.to_string())?;
    model
        .save(out, SaveOptions::default())
        .map_err(|e| e.to_string())?;
    let a = std::fs::read(path).unwrap();
    let b = std::fs::read(out).unwrap();
    if a != b {
        let at = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        return Err(format!(
            "bytes differ at offset {at} ({} vs {} bytes)",
            a.len(),
            b.len()
        ));
    }
    Ok(())
}

#[test]
fn real_models_round_trip_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, path) in common::real_models() {
        round_trip(&path, &tmp.path().join(format!("{name}.onnx")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn conformance_models_round_trip_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.onnx");
    let mut failures = Vec::new();
    let models = common::conformance_models();
    for path in &models {
        if let Err(e) = round_trip(path, &out) {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} not identical:\n{}",
        failures.len(),
        models.len(),
        failures.join("\n")
    );
}
