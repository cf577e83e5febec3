//! Writes a BERT-base-size ONNX model (about 110M float parameters, 440 MB) for benchmarks:
//! an embedding table and twelve residual blocks of MatMuls with BERT-base's dimensions.
//!
//! `cargo run --release --example make_large_model -- OUT.onnx [LAYERS]`

use mdeploy::graph::ModelBuilder;
use mdeploy::graph::builder::raw_tensor;
use mdeploy::onnx::{DataType, ExternalDataPolicy, Model, SaveOptions};

const HIDDEN: i64 = 768;
const FFN: i64 = 3072;
const VOCAB: i64 = 30522;

/// Deterministic small weights (a cheap LCG: speed matters at this size, quality does not).
fn weights(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(n * 4);
    for _ in 0..n {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let unit = ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
        out.extend_from_slice(&(unit * 0.04).to_le_bytes());
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .get(1)
        .expect("usage: make_large_model OUT.onnx [LAYERS] [--external]");
    let layers: usize = args.get(2).and_then(|l| l.parse().ok()).unwrap_or(12);
    let external = args.iter().any(|a| a == "--external");
    let mut b = ModelBuilder::new(17)
        .input("input_ids", DataType::Int64, &["batch", "sequence"])
        .initializer(raw_tensor(
            "embeddings",
            DataType::Float,
            &[VOCAB, HIDDEN],
            weights((VOCAB * HIDDEN) as usize, 1),
        ))
        .node("Gather", &["embeddings", "input_ids"], &["x0"]);
    let mut seed = 2;
    let mut w = |name: &str, rows: i64, cols: i64| {
        seed += 1;
        raw_tensor(
            name,
            DataType::Float,
            &[rows, cols],
            weights((rows * cols) as usize, seed),
        )
    };
    for l in 0..layers {
        let p = |s: &str| format!("l{l}.{s}");
        let x = format!("x{l}");
        for m in ["q", "k", "v", "o"] {
            b = b.initializer(w(&p(m), HIDDEN, HIDDEN));
        }
        b = b
            .initializer(w(&p("ffn1"), HIDDEN, FFN))
            .initializer(w(&p("ffn2"), FFN, HIDDEN));
        let n = |s: &str| p(s);
        b = b
            .node("MatMul", &[&x, &n("q")], &[&n("xq")])
            .node("MatMul", &[&x, &n("k")], &[&n("xk")])
            .node("MatMul", &[&x, &n("v")], &[&n("xv")])
            .node("Sum", &[&n("xq"), &n("xk"), &n("xv")], &[&n("qkv")])
            .node("MatMul", &[&n("qkv"), &n("o")], &[&n("attn")])
            .node("Add", &[&x, &n("attn")], &[&n("res1")])
            .node("MatMul", &[&n("res1"), &n("ffn1")], &[&n("h")])
            .node("Relu", &[&n("h")], &[&n("hr")])
            .node("MatMul", &[&n("hr"), &n("ffn2")], &[&n("h2")])
            .node("Add", &[&n("res1"), &n("h2")], &[&format!("x{}", l + 1)]);
    }
    let last = format!("x{layers}");
    let proto = b
        .node("Identity", &[&last], &["hidden"])
        .output("hidden", DataType::Float, &["batch", "sequence", "768"])
        .build();
    let dir = std::path::Path::new(out)
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let policy = if external {
        ExternalDataPolicy::External { threshold: 1024 }
    } else {
        ExternalDataPolicy::Auto
    };
    let saved = Model::from_proto(proto, dir)
        .save(
            std::path::Path::new(out),
            SaveOptions {
                external_data: policy,
            },
        )
        .unwrap();
    eprintln!(
        "wrote {} ({} bytes, external {} bytes)",
        out, saved.bytes, saved.external_data_bytes
    );
}
