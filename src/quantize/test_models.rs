//! Graphs the quantizers' unit tests share.

use crate::graph::builder::ModelBuilder;
use crate::onnx::DataType;
use crate::onnx::proto::ModelProto;

/// `n` weights spread over [-11, 11] x `scale`, none repeating within 23.
pub fn weights(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|k| ((k * 37 % 23) as f32 - 11.0) * scale)
        .collect()
}

/// One table `E` looked up.
pub fn one_table() -> ModelProto {
    ModelBuilder::new(17)
        .input("ids", DataType::Int64, &["2", "5"])
        .initializer_f32("E", &[40, 16], &weights(640, 0.05))
        .node("Gather", &["E", "ids"], &["y"])
        .output("y", DataType::Float, &["2", "5", "16"])
        .build()
}

/// One table `E` read by two Gathers (word and position ids looked up in a shared table, say),
/// their rows added.
pub fn shared_table() -> ModelProto {
    ModelBuilder::new(17)
        .input("ids", DataType::Int64, &["2", "5"])
        .input("other", DataType::Int64, &["2", "5"])
        .initializer_f32("E", &[40, 16], &weights(640, 0.05))
        .node("Gather", &["E", "ids"], &["a"])
        .node("Gather", &["E", "other"], &["b"])
        .node("Add", &["a", "b"], &["y"])
        .output("y", DataType::Float, &["2", "5", "16"])
        .build()
}

/// A table `E` looked up, then multiplied by a weight `W`, at `opset`.
pub fn embedding_then_matmul(opset: i64) -> ModelProto {
    ModelBuilder::new(opset)
        .input("ids", DataType::Int64, &["2", "5"])
        .initializer_f32("E", &[40, 16], &weights(640, 0.05))
        .initializer_f32("W", &[16, 32], &weights(512, 0.04))
        .node("Gather", &["E", "ids"], &["e"])
        .node("MatMul", &["e", "W"], &["y"])
        .output("y", DataType::Float, &["2", "5", "32"])
        .build()
}

/// Layers that share their weight (as ALBERT's do): `x` times `W`, through Relu, times `W`
/// again; and, when `gemm`, a Gemm reading `W` transposed after them.
pub fn tied_layers(gemm: bool) -> ModelProto {
    let b = ModelBuilder::new(17)
        .input("x", DataType::Float, &["2", "16"])
        .initializer_f32("W", &[16, 16], &weights(256, 0.05))
        .node("MatMul", &["x", "W"], &["a"])
        .node("Relu", &["a"], &["r"])
        .node("MatMul", &["r", "W"], &["b"]);
    if gemm {
        b.node("Gemm", &["b", "W"], &["y"])
            .attr(crate::graph::builder::attr_int("transB", 1))
            .output("y", DataType::Float, &["2", "16"])
            .build()
    } else {
        b.output("b", DataType::Float, &["2", "16"]).build()
    }
}

/// The names of `m`'s 2-D int8 initializers (quantized weights and tables), in order.
pub fn int8_matrices(m: &crate::onnx::Model) -> Vec<&str> {
    m.graph()
        .initializer
        .iter()
        .filter(|t| t.data_type() == DataType::Int8.code() && t.dims.len() == 2)
        .map(|t| t.name())
        .collect()
}

/// No two named nodes of `m`'s main graph share a name (unnamed ones are no two alike):
/// onnxruntime and tract refuse a model where two do.
pub fn assert_node_names_unique(m: &crate::onnx::Model) {
    let all: Vec<&str> = m.graph().node.iter().map(|n| n.name()).collect();
    let mut names: Vec<&str> = all.iter().copied().filter(|n| !n.is_empty()).collect();
    let named = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), named, "{all:?}");
}
