//! Dynamic int8 quantization on built graphs: the rewritten structure, the int8 weights and their
//! zero points, what stays float and why, and the numbers (tract runs both models).

use super::*;
use crate::graph::builder::{ModelBuilder, attr_float, attr_graph, attr_tensor};
use crate::onnx::proto::ModelProto;
use crate::passes::testing::max_difference;
use crate::quantize::test_models::{int8_matrices, one_table, shared_table, tied_layers, weights};

fn model(proto: ModelProto) -> Model {
    Model::from_proto(proto, std::env::temp_dir())
}

fn ops(m: &Model) -> Vec<&str> {
    m.graph().node.iter().map(|n| n.op_type()).collect()
}

fn matmul(weight_left: bool) -> ModelProto {
    let b = ModelBuilder::new(17).initializer_f32("W", &[32, 16], &weights(512, 0.02));
    if weight_left {
        b.input("x", DataType::Float, &["2", "16", "8"])
            .node("MatMul", &["W", "x"], &["y"])
            .output("y", DataType::Float, &["2", "32", "8"])
            .build()
    } else {
        b.input("x", DataType::Float, &["2", "4", "32"])
            .node("MatMul", &["x", "W"], &["y"])
            .output("y", DataType::Float, &["2", "4", "16"])
            .build()
    }
}

#[test]
fn matmul_weight_becomes_int8_per_column_with_zero_point_zero() {
    let before = matmul(false);
    let mut m = model(before.clone());
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert_eq!(
        ops(&m),
        [
            "DynamicQuantizeLinear",
            "MatMulInteger",
            "Cast",
            "Mul",
            "Mul"
        ]
    );
    assert_eq!(report.quantized.len(), 1);
    assert_eq!(report.quantized[0].weight_shape, [32, 16]);
    assert!(
        report.quantized[0].weight_sqnr_db > 35.0,
        "{:?}",
        report.quantized
    );
    let g = m.graph();
    let w = g.initializer.iter().find(|t| t.dims == [32, 16]).unwrap();
    assert_eq!(w.data_type(), DataType::Int8.code());
    let scale = g
        .initializer
        .iter()
        .find(|t| t.name() == "W_scale")
        .unwrap();
    assert_eq!(scale.dims, [16], "one scale per output column");
    let zero = g
        .initializer
        .iter()
        .find(|t| t.name() == "W_zero_point")
        .unwrap();
    assert_eq!(zero.raw_data.as_deref(), Some(&[0u8][..]));
    // the float weight is gone, the output keeps its name
    assert!(g.initializer.iter().all(|t| t.name() != "W"));
    assert_eq!(g.node.last().unwrap().output[0], "y");
    let d = max_difference(&before, &m.proto);
    assert!(d < 0.05, "int8 drifted by {d}");
}

#[test]
fn a_weight_on_the_left_is_quantized_per_row() {
    let before = matmul(true);
    let mut m = model(before.clone());
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert_eq!(report.quantized.len(), 1);
    let scale = m
        .graph()
        .initializer
        .iter()
        .find(|t| t.name() == "W_scale")
        .unwrap();
    assert_eq!(scale.dims, [32, 1]);
    let mmi = m
        .graph()
        .node
        .iter()
        .find(|n| n.op_type() == "MatMulInteger")
        .unwrap();
    assert_eq!(mmi.input[0], "W_quantized");
    let d = max_difference(&before, &m.proto);
    assert!(d < 0.05, "int8 drifted by {d}");
}

#[test]
fn gemm_with_trans_b_alpha_and_beta_keeps_its_numbers() {
    let before = ModelBuilder::new(17)
        .input("x", DataType::Float, &["3", "32"])
        .initializer_f32("W", &[16, 32], &weights(512, 0.02))
        .initializer_f32("C", &[16], &weights(16, 0.1))
        .node("Gemm", &["x", "W", "C"], &["y"])
        .attr(crate::graph::builder::attr_int("transB", 1))
        .attr(attr_float("alpha", 0.5))
        .attr(attr_float("beta", 2.0))
        .output("y", DataType::Float, &["3", "16"])
        .build();
    let mut m = model(before.clone());
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert_eq!(
        report.quantized[0].weight_shape,
        [32, 16],
        "transposed to [K, N]"
    );
    assert!(ops(&m).contains(&"Add"));
    let d = max_difference(&before, &m.proto);
    assert!(d < 0.05, "int8 drifted by {d}");
}

#[test]
fn weights_in_constant_nodes_behind_identity_and_cast_are_found() {
    let w = crate::graph::builder::tensor_f32("", &[32, 16], &weights(512, 0.02));
    let before = ModelBuilder::new(17)
        .input("x", DataType::Float, &["2", "32"])
        .node("Constant", &[], &["w_const"])
        .attr(attr_tensor("value", w))
        .node("Identity", &["w_const"], &["w_id"])
        .node("Cast", &["w_id"], &["w"])
        .attr(crate::graph::builder::attr_int(
            "to",
            DataType::Float.code().into(),
        ))
        .node("MatMul", &["x", "w"], &["y"])
        .output("y", DataType::Float, &["2", "16"])
        .build();
    let mut m = model(before.clone());
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert_eq!(report.quantized.len(), 1, "{:?}", report.kept_float);
    // the Constant, Identity and Cast are left dead and removed
    assert!(!ops(&m).contains(&"Identity"));
    assert!(!ops(&m).contains(&"Constant"));
    let d = max_difference(&before, &m.proto);
    assert!(d < 0.05, "int8 drifted by {d}");
}

/// x read by two MatMuls (q and k), added.
fn two_readers() -> ModelProto {
    ModelBuilder::new(17)
        .input("x", DataType::Float, &["2", "32"])
        .initializer_f32("Wq", &[32, 16], &weights(512, 0.02))
        .initializer_f32("Wk", &[32, 16], &weights(512, -0.03))
        .node("MatMul", &["x", "Wq"], &["q"])
        .node("MatMul", &["x", "Wk"], &["k"])
        .node("Add", &["q", "k"], &["y"])
        .output("y", DataType::Float, &["2", "16"])
        .build()
}

#[test]
fn readers_of_one_activation_share_its_dynamic_quantization() {
    let before = two_readers();
    let mut m = model(before.clone());
    quantize(&mut m, &DynamicOptions::default()).unwrap();
    let dql = ops(&m)
        .iter()
        .filter(|o| **o == "DynamicQuantizeLinear")
        .count();
    assert_eq!(dql, 1);
    assert!(max_difference(&before, &m.proto) < 0.1);
}

/// Quantizing a quantized model again (what `optimize` does to its own output) reads an
/// activation already quantized for another reader: the nodes added the second time must not
/// take the names of the first, which onnxruntime and tract refuse to load.
#[test]
fn quantizing_again_names_no_two_nodes_alike() {
    let before = two_readers();
    let mut m = model(before.clone());
    let first = DynamicOptions {
        revert: [("k".to_string(), "later".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(quantize(&mut m, &first).unwrap().quantized.len(), 1);
    assert_eq!(
        quantize(&mut m, &DynamicOptions::default())
            .unwrap()
            .quantized
            .len(),
        1
    );
    crate::quantize::test_models::assert_node_names_unique(&m);
    assert!(max_difference(&before, &m.proto) < 0.1);
}

#[test]
fn small_weights_activation_products_convs_and_exclusions_stay_float() {
    let before = ModelBuilder::new(17)
        .input("x", DataType::Float, &["2", "8"])
        .input("z", DataType::Float, &["8", "2"])
        .initializer_f32("small", &[8, 8], &weights(64, 0.1))
        .node("MatMul", &["x", "small"], &["a"])
        .node("MatMul", &["a", "z"], &["y"])
        .output("y", DataType::Float, &["2", "2"])
        .build();
    let mut m = model(before.clone());
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert!(report.quantized.is_empty());
    let reasons: Vec<&str> = report
        .kept_float
        .iter()
        .map(|k| k.reason.as_str())
        .collect();
    assert!(reasons[0].contains("below 256"), "{reasons:?}");
    assert!(reasons[1].contains("neither side"), "{reasons:?}");
    assert_eq!(m.proto, before);
    // excluded by op type
    let mut m = model(matmul(false));
    let options = DynamicOptions {
        exclude_op_types: ["MatMul".to_string()].into(),
        ..Default::default()
    };
    let report = quantize(&mut m, &options).unwrap();
    assert!(report.quantized.is_empty());
    assert!(report.kept_float[0].reason.contains("--exclude-op-types"));
    // returned to float by the accuracy search, by the value it writes, with its reason
    let mut m = model(matmul(false));
    let written = m.graph().node[0].output[0].clone();
    let options = DynamicOptions {
        revert: [(written, "returned to float: lost 9 dB".to_string())].into(),
        ..Default::default()
    };
    let report = quantize(&mut m, &options).unwrap();
    assert!(report.quantized.is_empty());
    assert_eq!(report.kept_float[0].reason, "returned to float: lost 9 dB");
}

#[test]
fn weights_captured_by_a_body_are_quantized_inside_it() {
    let body = crate::graph::GraphBuilder::new("then")
        .node("MatMul", &["x", "W"], &["then_out"])
        .output("then_out", DataType::Float, &["2", "16"])
        .build();
    let other = crate::graph::GraphBuilder::new("else")
        .node("Neg", &["x16"], &["else_out"])
        .output("else_out", DataType::Float, &["2", "16"])
        .build();
    let before = ModelBuilder::new(17)
        .input("x", DataType::Float, &["2", "32"])
        .input("x16", DataType::Float, &["2", "16"])
        .input("c", DataType::Bool, &[])
        .initializer_f32("W", &[32, 16], &weights(512, 0.02))
        .node("MatMul", &["x", "W"], &["z"])
        .node("If", &["c"], &["y"])
        .attr(attr_graph("then_branch", body))
        .attr(attr_graph("else_branch", other))
        .output("y", DataType::Float, &["2", "16"])
        .output("z", DataType::Float, &["2", "16"])
        .build();
    let mut m = model(before);
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert_eq!(report.quantized.len(), 2);
    // named by its path from the main graph as it was (nodes inserted before the If do not
    // move its place)
    assert_eq!(report.quantized[1].node, "#1 (If)/then_branch/#0 (MatMul)");
    let if_node = m.graph().node.iter().find(|n| n.op_type() == "If").unwrap();
    let then = crate::onnx::attributes::attr_g(if_node, "then_branch").unwrap();
    let ops: Vec<&str> = then.node.iter().map(|n| n.op_type()).collect();
    assert_eq!(
        ops,
        [
            "DynamicQuantizeLinear",
            "MatMulInteger",
            "Cast",
            "Mul",
            "Mul"
        ]
    );
    assert!(
        then.initializer
            .iter()
            .any(|t| t.data_type() == DataType::Int8.code())
    );
    assert!(Inference::of_model(&m).type_errors(&m).is_empty());
}

#[test]
fn an_embedding_table_becomes_int8_rows_with_a_scale_each() {
    let before = one_table();
    let mut m = model(before.clone());
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert_eq!(report.quantized.len(), 1);
    assert_eq!(ops(&m), ["Gather", "Cast", "Gather", "Mul"]);
    let e = m
        .graph()
        .initializer
        .iter()
        .find(|t| t.name() == "E_quantized")
        .unwrap();
    assert_eq!(e.data_type(), DataType::Int8.code());
    let scale = m
        .graph()
        .initializer
        .iter()
        .find(|t| t.name() == "E_scale")
        .unwrap();
    assert_eq!(scale.dims, [40, 1]);
    let d = max_difference(&before, &m.proto);
    assert!(d < 0.01, "int8 rows drifted by {d}");
}

/// An embedding read straight by a MatMul: the Gather's row scales and the MatMul's dynamic
/// scale were both named from the Gather's output ("y_scale"), before either node was in the
/// graph, and the result defined one value twice (found on a BERT-size stack of MatMuls).
#[test]
fn an_embedding_read_by_a_quantized_matmul_gets_names_of_its_own() {
    let before = ModelBuilder::new(17)
        .input("ids", DataType::Int64, &["2", "5"])
        .initializer_f32("E", &[40, 32], &weights(1280, 0.05))
        .initializer_f32("W", &[32, 16], &weights(512, 0.02))
        .node("Gather", &["E", "ids"], &["y"])
        .node("MatMul", &["y", "W"], &["z"])
        .output("z", DataType::Float, &["2", "5", "16"])
        .build();
    let mut m = model(before.clone());
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert_eq!(report.quantized.len(), 2);
    let mut defined = std::collections::HashSet::new();
    for o in m.graph().node.iter().flat_map(|n| &n.output) {
        assert!(defined.insert(o.clone()), "'{o}' is defined twice");
    }
    assert!(Inference::of_model(&m).type_errors(&m).is_empty());
    let d = max_difference(&before, &m.proto);
    assert!(d < 0.05, "int8 drifted by {d}");
}

/// An integer lookup table read by a Gather is not an embedding: it stays as it is (a review
/// found it rewritten to float).
#[test]
fn an_integer_table_is_left_alone() {
    let table: Vec<i64> = (0..600).collect();
    let before = ModelBuilder::new(17)
        .input("ids", DataType::Int64, &["4"])
        .initializer(crate::graph::builder::tensor_i64("T", &[300, 2], &table))
        .node("Gather", &["T", "ids"], &["y"])
        .output("y", DataType::Int64, &["4", "2"])
        .build();
    let mut m = model(before.clone());
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert!(report.quantized.is_empty());
    assert_eq!(m.proto, before);
}

/// DynamicQuantizeLinear came with opset 11: a model at 10 (a MatMul and a Softmax) is raised
/// to 11 first and says so; with nothing to quantize it keeps its opset; a model that cannot be
/// raised (opset 8) keeps its MatMul float, with the raise's refusal in the report.
#[test]
fn a_model_below_opset_11_is_raised_to_it_only_where_something_is_quantized() {
    let at = |opset: i64, rows: i64| {
        ModelBuilder::new(opset)
            .initializer_f32("W", &[rows, 16], &weights(rows as usize * 16, 0.02))
            .input("x", DataType::Float, &["2", &rows.to_string()])
            .node("MatMul", &["x", "W"], &["m"])
            .node("Softmax", &["m"], &["y"])
            .output("y", DataType::Float, &["2", "16"])
            .build()
    };
    let mut m = model(at(10, 32));
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert_eq!(report.quantized.len(), 1);
    assert_eq!(report.opset.opset_raised_from, Some(10));
    assert_eq!(report.opset.opset_raised_to, Some(11));
    assert_eq!(m.opset(""), Some(11));
    assert!(ops(&m).contains(&"DynamicQuantizeLinear"));
    crate::graph::check_model(&m).unwrap();
    // a weight too small to quantize: nothing changes, the opset included
    let small = at(10, 2);
    let mut m = model(small.clone());
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert!(report.quantized.is_empty());
    assert_eq!(report.opset, crate::quantize::OpsetChange::default());
    assert!(m.proto == small, "the model changed");
    // below the lowest opset raised from
    let mut m = model(at(5, 32));
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert!(report.quantized.is_empty());
    assert!(report.kept_float[0].reason.contains("cannot be raised"));
    let why = report.opset.opset_kept_because.unwrap();
    assert!(why.contains("below 6"), "{why}");
    assert_eq!(m.opset(""), Some(5));
    assert_eq!(ops(&m), ["MatMul", "Softmax"]);
}

/// Two Gathers reading one table (word and position ids looked up in a shared table, say): the
/// int8 rows and their scales are written once, and both lookups read them.
#[test]
fn a_table_two_gathers_read_is_written_once() {
    let before = shared_table();
    let mut m = model(before.clone());
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert_eq!(report.quantized.len(), 2, "{report:?}");
    let int8 = int8_matrices(&m);
    assert_eq!(int8, ["E_quantized"]);
    assert_eq!(
        m.graph().initializer.len(),
        2,
        "the int8 rows and one scale tensor"
    );
    assert!(Inference::of_model(&m).type_errors(&m).is_empty());
    let d = max_difference(&before, &m.proto);
    assert!(d < 0.02, "int8 rows drifted by {d}");
}

/// Layers that share their weight share its int8 tensor, scales and zero point; a Gemm that
/// reads it transposed gets its own.
#[test]
fn a_weight_two_products_read_is_written_once() {
    let before = tied_layers(true);
    let mut m = model(before.clone());
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert_eq!(report.quantized.len(), 3, "{report:?}");
    let g = m.graph();
    let int8 = int8_matrices(&m);
    assert_eq!(int8.len(), 2, "W, and W transposed: {int8:?}");
    assert_eq!(
        g.initializer.len(),
        6,
        "each with its scales and zero point"
    );
    let read: Vec<&str> = g
        .node
        .iter()
        .filter(|n| n.op_type() == "MatMulInteger")
        .map(|n| n.input[1].as_str())
        .collect();
    assert_eq!(read, [int8[0], int8[0], int8[1]]);
    assert!(Inference::of_model(&m).type_errors(&m).is_empty());
    let d = max_difference(&before, &m.proto);
    assert!(d < 0.05, "int8 drifted by {d}");
}

/// A Gemm folds its alpha into the weight's scales: reading a weight a MatMul also reads, it
/// gets a copy of its own, and both products keep their numbers.
#[test]
fn a_gemm_with_alpha_does_not_share_a_matmuls_scales() {
    let before = ModelBuilder::new(17)
        .input("x", DataType::Float, &["2", "16"])
        .initializer_f32("W", &[16, 16], &weights(256, 0.05))
        .node("MatMul", &["x", "W"], &["a"])
        .node("Gemm", &["x", "W"], &["b"])
        .attr(attr_float("alpha", 0.5))
        .node("Add", &["a", "b"], &["y"])
        .output("y", DataType::Float, &["2", "16"])
        .build();
    let mut m = model(before.clone());
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert_eq!(report.quantized.len(), 2, "{report:?}");
    let scales = m
        .graph()
        .initializer
        .iter()
        .filter(|t| t.name().starts_with("W_scale"))
        .count();
    assert_eq!(scales, 2);
    let d = max_difference(&before, &m.proto);
    assert!(d < 0.05, "int8 drifted by {d}");
}

/// A table the user excludes stays float and the report says why, as static int8's does.
#[test]
fn an_excluded_table_stays_float_and_is_reported() {
    let before = one_table();
    let mut m = model(before.clone());
    let options = DynamicOptions {
        exclude_op_types: ["Gather".to_string()].into(),
        ..Default::default()
    };
    let report = quantize(&mut m, &options).unwrap();
    assert!(report.quantized.is_empty());
    assert_eq!(report.kept_float.len(), 1);
    assert_eq!(
        report.kept_float[0].reason,
        "excluded by --exclude-op-types"
    );
    assert_eq!(m.proto, before);
}

/// The accuracy search quantizes a copy of the float model each round: with the options' memo a
/// weight is quantized once, a later copy gets the same model, and a weight of the same name and
/// shape with other values is quantized anew.
#[test]
fn rounds_quantize_each_weight_once_and_reuse_only_the_same_values() {
    let before = tied_layers(true);
    let options = DynamicOptions::default();
    let mut first = model(before.clone());
    quantize(&mut first, &options).unwrap();
    assert_eq!(options.memo.computed(), 2, "W, and W read transposed");
    let mut again = model(before.clone());
    quantize(&mut again, &options).unwrap();
    assert_eq!(again.proto, first.proto);
    assert_eq!(options.memo.computed(), 2, "nothing quantized again");
    let reduced = DynamicOptions {
        weight_range: WeightRange::Reduced,
        memo: options.memo.clone(),
        ..Default::default()
    };
    let mut narrower = model(before.clone());
    quantize(&mut narrower, &reduced).unwrap();
    assert_eq!(
        options.memo.computed(),
        4,
        "another range, other int8 values"
    );
    assert_ne!(narrower.proto, first.proto);
    let mut other = before;
    let w = &mut other.graph.as_mut().unwrap().initializer[0];
    let mut reversed: Vec<f32> = weights(256, 0.05);
    reversed.reverse();
    *w = crate::graph::builder::tensor_f32("W", &[16, 16], &reversed);
    let mut alone = model(other.clone());
    quantize(&mut alone, &DynamicOptions::default()).unwrap();
    let mut shared = model(other);
    quantize(&mut shared, &options).unwrap();
    assert_eq!(shared.proto, alone.proto);
    assert_ne!(shared.proto, first.proto);
    assert_eq!(options.memo.computed(), 6);
}

/// A weight that is an initializer also listed as a graph input (as IR 3 listed every weight) is
/// one a caller may override: it stays float, and the reason says so and how to make it a
/// constant. Frozen (`lint::freeze_initializers`), the same model quantizes.
#[test]
fn a_weight_a_graph_input_overrides_stays_float_and_says_why() {
    let mut proto = matmul(false);
    let graph = proto.graph.as_mut().unwrap();
    let w = graph.initializer[0].clone();
    graph.input.push(crate::graph::builder::value_info(
        w.name(),
        DataType::Float,
        &["32", "16"],
    ));
    let mut m = model(proto);
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert!(report.quantized.is_empty());
    let why = &report.kept_float[0].reason;
    assert!(
        why.contains("'W'") && why.contains("--freeze-initializers"),
        "{why}"
    );
    assert_eq!(crate::lint::freeze_initializers(&mut m), 1);
    assert!(m.graph().input.iter().all(|i| i.name() != "W"));
    let report = quantize(&mut m, &DynamicOptions::default()).unwrap();
    assert_eq!(report.quantized.len(), 1);
}
