//! What the integration tests share: where the real models and conformance data are.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `../shared` beside the repository (or `$MDEPLOY_SHARED`). Missing data is a failure, not a
/// skip: a test that silently passes without its data proves nothing.
pub fn shared() -> PathBuf {
    let dir = std::env::var_os("MDEPLOY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    assert!(
        dir.join("models").is_dir(),
        "no real models at {} (set MDEPLOY_SHARED)",
        dir.display()
    );
    dir
}

/// Every `model.onnx` of `../shared/models`, by model name.
pub fn real_models() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(shared().join("models"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let m = p.join("model.onnx");
            m.is_file()
                .then(|| (p.file_name().unwrap().to_string_lossy().to_string(), m))
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 9,
        "expected the nine real models, found {}",
        out.len()
    );
    out
}

/// Every `.onnx` file under `../shared/onnx-node-tests`.
pub fn conformance_models() -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(&shared().join("onnx-node-tests"), &mut out);
    out.sort();
    assert!(
        out.len() > 1900,
        "expected the conformance suite, found {} models",
        out.len()
    );
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|e| e == "onnx") {
            out.push(p);
        }
    }
}
pub mod fixtures;
