//! The generator of `fixtures/`: tiny models built in code, so anyone can regenerate them with
//! `MDEPLOY_WRITE_FIXTURES=1 cargo test --test cli fixtures_are_reproducible`.

use std::path::Path;

use mdeploy::graph::ModelBuilder;
use mdeploy::graph::builder::{
    GraphBuilder, attr_float, attr_graph, attr_int, attr_ints, attr_tensor, tensor_f32,
};
use mdeploy::onnx::proto::ModelProto;
use mdeploy::onnx::{DataType, ExternalDataPolicy, Model, SaveOptions};

/// Deterministic weights in [-1, 1): no RNG crate needed, same on every platform and in every
/// build profile. Computed in f64 and rounded once: with `f32::sin`, one weight of mlp.onnx came
/// out one ulp apart between debug and release builds.
fn weights(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f64 + 1.0) * 0.618_034 * (f64::from(seed) + 1.0)).sin() as f32)
        .collect()
}

/// A two-layer perceptron with a dynamic batch: `y = relu(x W1 + b1) W2 + b2`.
pub fn mlp() -> ModelProto {
    ModelBuilder::new(17)
        .input("x", DataType::Float, &["batch", "4"])
        .initializer_f32("w1", &[4, 8], &weights(32, 1))
        .initializer_f32("b1", &[8], &weights(8, 2))
        .initializer_f32("w2", &[8, 3], &weights(24, 3))
        .initializer_f32("b2", &[3], &weights(3, 4))
        .node("MatMul", &["x", "w1"], &["h0"])
        .name_last("fc1")
        .node("Add", &["h0", "b1"], &["h1"])
        .node("Relu", &["h1"], &["h2"])
        .node("MatMul", &["h2", "w2"], &["h3"])
        .name_last("fc2")
        .node("Add", &["h3", "b2"], &["y"])
        .output("y", DataType::Float, &["batch", "3"])
        .build()
}

/// A small CNN classifier: Conv, BatchNormalization, Relu, pooling, Flatten, Gemm.
pub fn cnn() -> ModelProto {
    ModelBuilder::new(13)
        .input("image", DataType::Float, &["1", "3", "8", "8"])
        .initializer_f32("conv.w", &[4, 3, 3, 3], &weights(108, 5))
        .initializer_f32("conv.b", &[4], &weights(4, 6))
        .initializer_f32("bn.scale", &[4], &[1.1, 0.7, 1.9, 1.3])
        .initializer_f32("bn.bias", &[4], &weights(4, 7))
        .initializer_f32("bn.mean", &[4], &weights(4, 8))
        .initializer_f32("bn.var", &[4], &[0.5, 1.0, 1.5, 2.0])
        .initializer_f32("fc.w", &[2, 4], &weights(8, 9))
        .initializer_f32("fc.b", &[2], &weights(2, 10))
        .node("Conv", &["image", "conv.w", "conv.b"], &["c"])
        .name_last("conv")
        .attr(attr_ints("pads", &[1, 1, 1, 1]))
        .attr(attr_ints("kernel_shape", &[3, 3]))
        .node(
            "BatchNormalization",
            &["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"],
            &["n"],
        )
        .attr(attr_float("epsilon", 1e-5))
        .node("Relu", &["n"], &["r"])
        .node("GlobalAveragePool", &["r"], &["p"])
        .node("Flatten", &["p"], &["f"])
        .node("Gemm", &["f", "fc.w", "fc.b"], &["logits"])
        .attr(attr_int("transB", 1))
        .output("logits", DataType::Float, &["1", "2"])
        .build()
}

/// The perceptron with its weights in `Constant` nodes, as PaddlePaddle exports store them.
pub fn constant_weights() -> ModelProto {
    let constant = |name: &str, dims: &[i64], seed| {
        attr_tensor(
            "value",
            tensor_f32(
                name,
                dims,
                &weights(dims.iter().product::<i64>() as usize, seed),
            ),
        )
    };
    ModelBuilder::new(11)
        .input("x", DataType::Float, &["batch", "4"])
        .node("Constant", &[], &["w1"])
        .attr(constant("w1", &[4, 8], 1))
        .node("Constant", &[], &["w2"])
        .attr(constant("w2", &[8, 3], 3))
        .node("MatMul", &["x", "w1"], &["h0"])
        .node("Relu", &["h0"], &["h1"])
        .node("MatMul", &["h1", "w2"], &["y"])
        .output("y", DataType::Float, &["batch", "3"])
        .build()
}

/// An `If` whose branches read a value of the enclosing graph.
pub fn if_capture() -> ModelProto {
    let then_branch = GraphBuilder::new("then")
        .node("Relu", &["a"], &["t"])
        .output("t", DataType::Float, &["4"])
        .build();
    let else_branch = GraphBuilder::new("else")
        .node("Neg", &["a"], &["e"])
        .output("e", DataType::Float, &["4"])
        .build();
    ModelBuilder::new(13)
        .input("cond", DataType::Bool, &[])
        .input("x", DataType::Float, &["4"])
        .node("Sin", &["x"], &["a"])
        .node("If", &["cond"], &["y"])
        .attr(attr_graph("then_branch", then_branch))
        .attr(attr_graph("else_branch", else_branch))
        .output("y", DataType::Float, &["4"])
        .build()
}

/// Every fixture: its path under `fixtures/` and its model. Models in a directory of their own
/// are written with external data.
pub fn all() -> Vec<(&'static str, ModelProto)> {
    vec![
        ("mlp.onnx", mlp()),
        ("cnn.onnx", cnn()),
        ("constant_weights.onnx", constant_weights()),
        ("if_capture.onnx", if_capture()),
        ("external/model.onnx", mlp()),
    ]
}

/// Writes one fixture under `dir`.
pub fn write(dir: &Path, rel: &str, proto: ModelProto) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let external = rel.contains('/');
    let policy = if external {
        ExternalDataPolicy::External { threshold: 16 }
    } else {
        ExternalDataPolicy::Auto
    };
    Model::from_proto(proto, dir.to_path_buf())
        .save(
            &path,
            SaveOptions {
                external_data: policy,
            },
        )
        .unwrap();
}
