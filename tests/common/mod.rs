//! What the integration tests share: where the real models and conformance data are.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

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
/// One real model of ../shared/models, by name.
pub fn real_model(name: &str) -> PathBuf {
    real_models()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("no real model {name}"))
}

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

/// Runs the `mdeploy` binary (without `SOURCE_DATE_EPOCH`, so archives are reproducible).
pub fn mdeploy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mdeploy"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The JSON document a command printed, whatever its exit code.
pub fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(o)))
}

/// The JSON document a successful command printed.
pub fn json_ok(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    json(o)
}

/// A file of the repository's `fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A path as the `&str` command arguments take.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Whether onnxruntime's int8 products are exact on this CPU: everywhere but on an x86 CPU
/// without VNNI, whose AVX2 kernels add pairs of uint8 x int8 products in 16 bits and saturate
/// (docs/quantize.md, "The CPU's int8 kernels"). Figures that depend on it are held to what
/// each kind of CPU measures.
#[allow(dead_code)]
pub fn int8_products_exact() -> bool {
    if !cfg!(target_arch = "x86_64") {
        return true;
    }
    // where the flags cannot be read, as tests/interop/check_quantized.py decides
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return true;
    };
    let flags = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    flags
        .split_whitespace()
        .any(|f| matches!(f, "avx512_vnni" | "avx_vnni"))
}
