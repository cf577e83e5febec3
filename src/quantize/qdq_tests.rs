//! Static QDQ quantization on built graphs: where Q/DQ pairs go, the weights' and bias's
//! encodings, shared parameters through pass-through ops, what stays float, and the numbers.

use super::*;
use crate::graph::GraphBuilder;
use crate::graph::builder::{ModelBuilder, attr_graph, attr_int, attr_ints};
use crate::onnx::proto::ModelProto;
use crate::passes::testing::max_difference;
use crate::quantize::test_models::{
    embedding_then_matmul, int8_matrices, shared_table, tied_layers, weights,
};

fn model(proto: ModelProto) -> Model {
    Model::from_proto(proto, std::env::temp_dir())
}

/// The default options, placing int8 on every node that can take it: these graphs are too small
/// for int8 to be faster, and what they test is where the pairs go.
fn every_node() -> StaticOptions {
    StaticOptions {
        placement: Placement::All,
        ..StaticOptions::default()
    }
}

/// x -> Conv(W, B) -> Relu -> MaxPool -> Conv(W2) -> y
fn cnn() -> ModelProto {
    ModelBuilder::new(17)
        .input("x", DataType::Float, &["1", "2", "6", "6"])
        .initializer_f32("W", &[4, 2, 3, 3], &weights(72, 0.05))
        .initializer_f32("B", &[4], &[0.1, -0.2, 0.3, 0.0])
        .initializer_f32("W2", &[3, 4, 1, 1], &weights(12, 0.1))
        .node("Conv", &["x", "W", "B"], &["c"])
        .attr(attr_ints("pads", &[1, 1, 1, 1]))
        .node("Relu", &["c"], &["r"])
        .node("MaxPool", &["r"], &["p"])
        .attr(attr_ints("kernel_shape", &[2, 2]))
        .attr(attr_ints("strides", &[2, 2]))
        .node("Conv", &["p", "W2"], &["y"])
        .output("y", DataType::Float, &["1", "3", "3", "3"])
        .build()
}

fn ranges() -> BTreeMap<String, (f32, f32)> {
    [("x", (-3.0, 3.0)), ("r", (0.0, 4.0)), ("p", (0.0, 4.0))]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

#[test]
fn conv_inputs_weights_and_bias_get_their_qdq_encodings() {
    let before = cnn();
    let mut m = model(before.clone());
    let plan = plan(&m, &every_node()).unwrap();
    assert_eq!(
        plan.activations(),
        ["c", "p", "r", "x"],
        "c may get a pair if the Relu reader returns to float"
    );
    let report = apply(&mut m, &plan, &ranges()).unwrap();
    assert_eq!(report.quantized.len(), 2);
    assert!(report.per_channel);
    let g = m.graph();
    let init = |name: &str| g.initializer.iter().find(|t| t.name() == name).unwrap();
    // weights: int8 per output channel (axis 0), zero point 0
    assert_eq!(init("W_quantized").data_type(), DataType::Int8.code());
    assert_eq!(init("W_scale").dims, [4]);
    assert!(
        init("W_zero_point")
            .raw_data
            .as_ref()
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
    let wdq = g
        .node
        .iter()
        .find(|n| n.input.first().is_some_and(|i| i == "W_quantized"))
        .unwrap();
    assert_eq!(attr_i(wdq, "axis", -1), 0);
    // bias: int32, scale = input scale x weight scale
    assert_eq!(init("B_quantized").data_type(), DataType::Int32.code());
    let x_scale = f32::from_le_bytes(
        init("x_scale").raw_data.as_ref().unwrap()[..4]
            .try_into()
            .unwrap(),
    );
    let w_scales: Vec<f32> = init("W_scale")
        .raw_data
        .as_ref()
        .unwrap()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let b_scales: Vec<f32> = init("B_scale")
        .raw_data
        .as_ref()
        .unwrap()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for (b, w) in b_scales.iter().zip(&w_scales) {
        assert!((b - x_scale * w).abs() <= 1e-12, "{b} vs {x_scale} x {w}");
    }
    // the MaxPool reads r through a Q/DQ pair with the same parameters as its output's
    let pool = g.node.iter().find(|n| n.op_type() == "MaxPool").unwrap();
    let dq = g
        .node
        .iter()
        .find(|n| n.output[0] == pool.input[0])
        .unwrap();
    assert_eq!(dq.op_type(), "DequantizeLinear");
    assert_eq!(dq.input[1], "r_scale");
    let conv2 = g
        .node
        .iter()
        .filter(|n| n.op_type() == "Conv")
        .nth(1)
        .unwrap();
    let dq2 = g
        .node
        .iter()
        .find(|n| n.output[0] == conv2.input[0])
        .unwrap();
    assert_eq!(dq2.input[1], "r_scale", "p shares r's parameters");
    assert!(Inference::of_model(&m).type_errors(&m).is_empty());
    let d = max_difference(&before, &m.proto);
    assert!(d < 0.1, "int8 drifted by {d}");
}

#[test]
fn activation_parameters_make_zero_exact() {
    use ActivationType::{Int8, Uint8};
    let s8 = |lo, hi| {
        let (scale, zero) = activation_params(lo, hi, Int8);
        (scale, zero as i8)
    };
    let (scale, zero) = s8(0.0, 4.0);
    assert_eq!(zero, -128);
    assert!((scale - 4.0 / 255.0).abs() < 1e-9);
    // the range's ends land on the int8 grid's ends; 0 is the zero point itself
    let (scale, zero) = s8(-1.0, 3.0);
    assert_eq!(zero, -64);
    assert_eq!((-1.0 / scale).round() as i32 + zero as i32, -128);
    assert_eq!((3.0 / scale).round() as i32 + zero as i32, 127);
    // uint8: the same grid shifted by 128; a Relu's range starts at the zero point 0
    let (scale, zero) = activation_params(-1.0, 3.0, Uint8);
    assert_eq!(zero, 64);
    assert_eq!((3.0 / scale).round() as i32 + zero as i32, 255);
    assert_eq!(activation_params(0.0, 4.0, Uint8).1, 0);
    // a range away from zero is stretched to include it
    let (scale, _) = s8(2.0, 4.0);
    assert!((scale - 4.0 / 255.0).abs() < 1e-9);
    assert_eq!(s8(0.0, 0.0), (1.0, 0));
}

#[test]
fn attention_products_excluded_ops_and_old_opsets_stay_float() {
    let proto = ModelBuilder::new(17)
        .input("q", DataType::Float, &["2", "4", "8"])
        .input("k", DataType::Float, &["2", "8", "4"])
        .node("MatMul", &["q", "k"], &["y"])
        .output("y", DataType::Float, &["2", "4", "4"])
        .build();
    let p = plan(&model(proto), &every_node()).unwrap();
    assert!(p.activations().is_empty());
    assert!(p.kept_float[0].reason.contains("two activations"));
    let options = StaticOptions {
        exclude_op_types: ["Conv".to_string()].into(),
        ..every_node()
    };
    let p = plan(&model(cnn()), &options).unwrap();
    assert!(p.activations().is_empty());
    // opset 12: one scale per tensor, and no axis attribute
    let mut old = cnn();
    old.opset_import[0].version = Some(12);
    let mut m = model(old);
    let p = plan(&m, &every_node()).unwrap();
    let report = apply(&mut m, &p, &ranges()).unwrap();
    assert!(!report.per_channel);
    assert!(m.graph().node.iter().all(|n| attr_i(n, "axis", -1) == -1));
}

/// Reduced weights reach 64 per channel, and per tensor at opset 12, where one scale serves the
/// whole weight.
#[test]
fn reduced_conv_weights_reach_64_per_channel_and_per_tensor() {
    for opset in [17, 12] {
        let mut proto = cnn();
        proto.opset_import[0].version = Some(opset);
        let mut m = model(proto);
        let options = StaticOptions {
            weight_range: WeightRange::Reduced,
            ..every_node()
        };
        let p = plan(&m, &options).unwrap();
        let report = apply(&mut m, &p, &ranges()).unwrap();
        assert_eq!(report.quantized.len(), 2);
        assert_eq!(report.weight_range, WeightRange::Reduced);
        assert_eq!(report.per_channel, opset == 17);
        for t in m
            .graph()
            .initializer
            .iter()
            .filter(|t| t.name().ends_with("_quantized"))
        {
            if t.data_type() != DataType::Int8.code() {
                continue; // the int32 bias
            }
            let reach = t.raw_data().iter().map(|&b| (b as i8).unsigned_abs()).max();
            assert_eq!(reach, Some(64), "opset {opset}: {}", t.name());
        }
    }
}

/// x -> Conv(W) -> PRelu(slope) -> Conv(W2) -> y
fn cnn_prelu() -> ModelProto {
    ModelBuilder::new(17)
        .input("x", DataType::Float, &["1", "2", "6", "6"])
        .initializer_f32("W", &[4, 2, 3, 3], &weights(72, 0.05))
        .initializer_f32("slope", &[4, 1, 1], &[0.25, 0.25, 0.1, 0.1])
        .initializer_f32("W2", &[3, 4, 1, 1], &weights(12, 0.1))
        .node("Conv", &["x", "W"], &["c"])
        .attr(attr_ints("pads", &[1, 1, 1, 1]))
        .node("PRelu", &["c", "slope"], &["r"])
        .node("Conv", &["r", "W2"], &["y"])
        .output("y", DataType::Float, &["1", "3", "6", "6"])
        .build()
}

#[test]
fn a_conv_output_read_by_a_float_op_gets_its_own_pair_and_activations_are_uint8_by_default() {
    let mut m = model(cnn_prelu());
    let planned = plan(&m, &every_node()).unwrap();
    // the Conv's output is quantized (so onnxruntime fuses DQ -> Conv -> Q); the last Conv's
    // output is a graph output and is not
    assert_eq!(planned.activations(), ["c", "r", "x"]);
    let ranges: BTreeMap<String, (f32, f32)> =
        [("x", (-3.0, 3.0)), ("c", (-1.0, 3.0)), ("r", (-0.5, 2.0))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    apply(&mut m, &planned, &ranges).unwrap();
    let g = m.graph();
    let q = g
        .node
        .iter()
        .find(|n| n.op_type() == "QuantizeLinear" && n.input[0] == "c")
        .expect("a Q reads the Conv's output");
    // the only reader of c is that Q; the PRelu reads its DQ
    assert_eq!(
        g.node
            .iter()
            .filter(|n| n.input.contains(&"c".to_string()))
            .count(),
        1
    );
    let prelu = g.node.iter().find(|n| n.op_type() == "PRelu").unwrap();
    let dq = g
        .node
        .iter()
        .find(|n| n.output[0] == prelu.input[0])
        .unwrap();
    assert_eq!(
        (dq.op_type(), dq.input[0].as_str()),
        ("DequantizeLinear", q.output[0].as_str())
    );
    let zp = g
        .initializer
        .iter()
        .find(|t| t.name() == q.input[2])
        .unwrap();
    assert_eq!(zp.data_type(), DataType::Uint8.code());
    assert_eq!(zp.raw_data.as_deref(), Some(&[64u8][..]), "-1..3: 0 at 64");
    assert!(Inference::of_model(&m).type_errors(&m).is_empty());

    // without output quantization (the fallback the accuracy search may take): inputs only
    let inputs_only = StaticOptions {
        quantize_outputs: false,
        ..every_node()
    };
    assert_eq!(
        plan(&model(cnn_prelu()), &inputs_only)
            .unwrap()
            .activations(),
        ["r", "x"]
    );

    // int8 activations when asked
    let mut m = model(cnn_prelu());
    let options = StaticOptions {
        activation_type: ActivationType::Int8,
        ..every_node()
    };
    let planned = plan(&m, &options).unwrap();
    apply(&mut m, &planned, &ranges).unwrap();
    let zp = m
        .graph()
        .initializer
        .iter()
        .find(|t| t.name() == "c_zero_point")
        .unwrap();
    assert_eq!(zp.data_type(), DataType::Int8.code());
    assert_eq!(zp.raw_data.as_deref(), Some(&[(-64i8) as u8][..]));
}

/// x -> Conv(dw, 3x3) -> Conv(1x1) -> Conv(3x3) -> Sigmoid -> y, 64 channels at side x side
fn depthwise_then_pointwise(side: &str) -> ModelProto {
    ModelBuilder::new(17)
        .input("x", DataType::Float, &["1", "64", side, side])
        .initializer_f32("Wd", &[64, 1, 3, 3], &weights(576, 0.05))
        .initializer_f32("Wp", &[64, 64, 1, 1], &weights(4096, 0.02))
        .initializer_f32("W3", &[64, 64, 3, 3], &weights(36864, 0.01))
        .node("Conv", &["x", "Wd"], &["d"])
        .attr(attr_ints("pads", &[1, 1, 1, 1]))
        .attr(attr_int("group", 64))
        .node("Conv", &["d", "Wp"], &["p"])
        .node("Conv", &["p", "W3"], &["c"])
        .attr(attr_ints("pads", &[1, 1, 1, 1]))
        .node("Sigmoid", &["c"], &["y"])
        .output("y", DataType::Float, &["1", "64", side, side])
        .build()
}

/// The depthwise Conv stays float (onnxruntime's int8 depthwise kernel is slower); that leaves
/// the pointwise Conv with a float input whose Q and layout change cost more than its int8
/// saves, so it stays float on the second look; the 3x3 Conv saves far more than both of its
/// float sides cost and is quantized. With `all`, every one is.
#[test]
fn the_fast_placement_keeps_float_what_int8_would_slow_down_until_nothing_changes() {
    let m = model(depthwise_then_pointwise("56"));
    let p = plan(&m, &StaticOptions::default()).unwrap();
    let kept: Vec<(&str, &str)> = p
        .kept_float
        .iter()
        .map(|k| (k.node.as_str(), k.reason.as_str()))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept[0].1.starts_with("a depthwise Conv"), "{kept:?}");
    assert!(kept[1].1.starts_with("int8 would be slower"), "{kept:?}");
    // the 3x3 Conv's input, and its output (a Sigmoid's input: the estimate paid for that side)
    assert_eq!(p.activations(), ["c", "p"]);
    let ranges = ["c", "p"].map(|v| (v.to_string(), (-1.0, 1.0))).into();
    let mut q = model(depthwise_then_pointwise("56"));
    let report = apply(&mut q, &p, &ranges).unwrap();
    assert_eq!(report.quantized.len(), 1);
    assert_eq!(report.placement, Placement::Fast);
    let all = plan(&m, &every_node()).unwrap();
    assert!(all.kept_float.is_empty());
    assert_eq!(all.len(), 3);
}

/// Where shapes are unknown there is no estimate, and the node is quantized as before.
#[test]
fn the_fast_placement_leaves_nodes_of_unknown_size_to_quantize() {
    let p = plan(
        &model(depthwise_then_pointwise("side")),
        &StaticOptions::default(),
    )
    .unwrap();
    assert_eq!(p.len(), 3, "{:?}", p.kept_float);
}

/// A Conv whose output is a graph output gets no Q after it: onnxruntime would run it in float
/// with its weights dequantized on every run, however many MACs it has.
#[test]
fn the_fast_placement_keeps_float_a_conv_no_quantize_linear_follows() {
    let proto = ModelBuilder::new(17)
        .input("x", DataType::Float, &["1", "64", "56", "56"])
        .initializer_f32("W", &[64, 64, 3, 3], &weights(36864, 0.01))
        .node("Conv", &["x", "W"], &["y"])
        .attr(attr_ints("pads", &[1, 1, 1, 1]))
        .output("y", DataType::Float, &["1", "64", "56", "56"])
        .build();
    let p = plan(&model(proto), &StaticOptions::default()).unwrap();
    assert!(p.is_empty());
    assert!(
        p.kept_float[0].reason.contains("no QuantizeLinear"),
        "{:?}",
        p.kept_float
    );
}

/// x -> Sigmoid -> MaxPool -> Conv -> Relu -> Conv -> Sigmoid: onnxruntime moves the first
/// Conv's Q above the MaxPool, whose uint8 form is slow; that alone outweighs what the Conv
/// saves (without it, its Q and layout change cost a fifth of the saving). The second Conv,
/// with the same float input side, saves more than it costs.
#[test]
fn a_maxpool_between_a_float_op_and_a_conv_counts_against_int8() {
    let proto = ModelBuilder::new(17)
        .input("x", DataType::Float, &["1", "64", "56", "56"])
        .initializer_f32("W1", &[64, 64, 3, 3], &weights(36864, 0.01))
        .initializer_f32("W2", &[64, 64, 3, 3], &weights(36864, 0.01))
        .node("Sigmoid", &["x"], &["s"])
        .node("MaxPool", &["s"], &["p"])
        .attr(attr_ints("kernel_shape", &[2, 2]))
        .attr(attr_ints("strides", &[2, 2]))
        .node("Conv", &["p", "W1"], &["c1"])
        .attr(attr_ints("pads", &[1, 1, 1, 1]))
        .node("Relu", &["c1"], &["r"])
        .node("Conv", &["r", "W2"], &["c2"])
        .attr(attr_ints("pads", &[1, 1, 1, 1]))
        .node("Sigmoid", &["c2"], &["y"])
        .output("y", DataType::Float, &["1", "64", "28", "28"])
        .build();
    let m = model(proto);
    let p = plan(&m, &StaticOptions::default()).unwrap();
    assert_eq!(p.len(), 1, "{:?}", p.kept_float);
    assert!(p.kept_float[0].node.contains("Conv"), "{:?}", p.kept_float);
    assert!(p.kept_float[0].reason.starts_with("int8 would be slower"));
    assert_eq!(p.activations(), ["c2", "r"]);
    assert_eq!(plan(&m, &every_node()).unwrap().len(), 2);
}

/// ids -> Gather(E) -> MatMul(W) -> y: an embedding table read by a quantized product.
#[test]
fn an_embedding_table_becomes_int8_rows_and_returns_to_float_when_reverted() {
    let before = embedding_then_matmul(17);
    let m = model(before.clone());
    let plan = plan(&m, &every_node()).unwrap();
    assert_eq!(plan.len(), 2);
    // the table's ids are no activation: only the MatMul's input is calibrated
    assert_eq!(plan.activations(), ["e"]);
    // the MatMul reads the table's rows: they are its upstream quantized value
    assert_eq!(plan.upstream_outputs("y"), ["e"]);
    let ranges: BTreeMap<String, (f32, f32)> = [("e".to_string(), (-0.6, 0.6))].into();
    let mut q = model(before.clone());
    let report = apply(&mut q, &plan, &ranges).unwrap();
    let ops: Vec<&str> = report.quantized.iter().map(|n| n.op.as_str()).collect();
    assert_eq!(ops, ["MatMul", "Gather"]);
    let table = q
        .graph()
        .initializer
        .iter()
        .find(|t| t.name() == "E_quantized")
        .expect("the table as int8 rows");
    assert_eq!(table.data_type(), DataType::Int8.code());
    assert!(q.graph().initializer.iter().all(|t| t.name() != "E"));
    assert!(Inference::of_model(&q).type_errors(&q).is_empty());
    let d = max_difference(&before, &q.proto);
    assert!(d < 0.05, "int8 rows and product drifted by {d}");
    // returned to float, the Gather reads the float table again
    let reverted: BTreeMap<String, String> = [("e".to_string(), "test".to_string())].into();
    let mut f = model(before.clone());
    let report = apply(&mut f, &plan.without(&reverted), &ranges).unwrap();
    assert_eq!(report.quantized.len(), 1);
    assert!(
        report
            .kept_float
            .iter()
            .any(|k| k.op == "Gather" && k.reason == "test")
    );
    assert!(
        f.graph()
            .node
            .iter()
            .any(|n| n.op_type() == "Gather" && n.input[0] == "E")
    );
    // and op types chosen without Gather leave it alone, unreported
    let matmul_only = StaticOptions {
        ops: Some(["MatMul".to_string()].into()),
        ..every_node()
    };
    let plan = super::plan(&m, &matmul_only).unwrap();
    assert_eq!(plan.len(), 1);
    let mut o = model(before.clone());
    let report = apply(&mut o, &plan, &ranges).unwrap();
    assert!(
        report.kept_float.iter().all(|k| k.op != "Gather"),
        "{report:?}"
    );
    assert!(
        o.graph()
            .node
            .iter()
            .any(|n| n.op_type() == "Gather" && n.input[0] == "E")
    );
}

/// Layers that share their weight share its int8 tensor, scales and zero points, each read
/// through a DequantizeLinear of its own (what onnxruntime's QDQ fusion takes).
#[test]
fn a_weight_two_products_read_is_written_once() {
    let before = tied_layers(false);
    let mut m = model(before.clone());
    let plan = plan(&m, &every_node()).unwrap();
    assert_eq!(plan.products(), 2);
    let ranges = [("x", (-2.0, 2.0)), ("r", (0.0, 2.0))]
        .map(|(k, v)| (k.to_string(), v))
        .into();
    let report = apply(&mut m, &plan, &ranges).unwrap();
    assert_eq!(report.quantized.len(), 2, "{report:?}");
    let g = m.graph();
    let int8 = int8_matrices(&m);
    assert_eq!(int8, ["W_quantized"]);
    let weight_dqs = g
        .node
        .iter()
        .filter(|n| n.op_type() == "DequantizeLinear" && n.input[0] == "W_quantized")
        .count();
    assert_eq!(weight_dqs, 2);
    assert!(Inference::of_model(&m).type_errors(&m).is_empty());
    let d = max_difference(&before, &m.proto);
    assert!(d < 0.05, "int8 drifted by {d}");
}

/// One table read by two Gathers is kept once in the plan and written once; a table the user
/// excludes is reported; a model below opset 7 (Cast's integer `to`, Mul's broadcasting) keeps
/// its tables float and says why, whatever its products need.
#[test]
fn a_shared_table_is_written_once_and_refusals_are_reported() {
    let shared = shared_table();
    let m = model(shared.clone());
    let plan = plan(&m, &every_node()).unwrap();
    assert_eq!((plan.len(), plan.products()), (2, 0));
    assert!(std::rc::Rc::ptr_eq(
        &plan.tables[0].table,
        &plan.tables[1].table
    ));
    let mut q = model(shared.clone());
    let report = apply(&mut q, &plan, &BTreeMap::new()).unwrap();
    assert_eq!(report.quantized.len(), 2);
    let names: Vec<&str> = q.graph().initializer.iter().map(|t| t.name()).collect();
    assert_eq!(
        names.len(),
        2,
        "one int8 table and one scale tensor: {names:?}"
    );
    assert!(Inference::of_model(&q).type_errors(&q).is_empty());
    let d = max_difference(&shared, &q.proto);
    assert!(d < 0.02, "int8 rows drifted by {d}");

    let excluded = StaticOptions {
        exclude_op_types: ["Gather".to_string()].into(),
        ..every_node()
    };
    let plan = super::plan(&m, &excluded).unwrap();
    assert!(plan.is_empty());
    let mut f = model(shared.clone());
    let report = apply(&mut f, &plan, &BTreeMap::new()).unwrap();
    let reasons: Vec<&str> = report
        .kept_float
        .iter()
        .map(|k| k.reason.as_str())
        .collect();
    assert_eq!(reasons, ["excluded by --exclude-op-types"; 2]);
    assert_eq!(f.proto, shared);

    let old = embedding_then_matmul(6);
    let plan = super::plan(&model(old.clone()), &every_node()).unwrap();
    let reasons: Vec<(&str, &str)> = plan
        .kept_float
        .iter()
        .map(|k| (k.op.as_str(), k.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("Gather", "int8 rows need opset 7; the model has 6"),
            ("MatMul", "QuantizeLinear needs opset 10; the model has 6")
        ]
    );
    // at opset 8 the MatMul still cannot be quantized, but the table can: a valid model
    let at8 = embedding_then_matmul(8);
    let plan = super::plan(&model(at8.clone()), &every_node()).unwrap();
    assert_eq!((plan.len(), plan.products()), (1, 0));
    let mut q = model(at8.clone());
    let report = apply(&mut q, &plan, &BTreeMap::new()).unwrap();
    let ops: Vec<&str> = report.quantized.iter().map(|n| n.op.as_str()).collect();
    assert_eq!(ops, ["Gather"]);
    assert_eq!(report.kept_float.len(), 1, "{report:?}");
    assert!(Inference::of_model(&q).type_errors(&q).is_empty());
    let d = max_difference(&at8, &q.proto);
    assert!(d < 0.05, "int8 rows drifted by {d}");
}

/// Each round of the accuracy search applies the plan to a copy of the float model: the weights
/// are quantized once, and every round writes the same model.
#[test]
fn rounds_applying_one_plan_quantize_each_weight_once() {
    let options = every_node();
    let plan = plan(&model(cnn()), &options).unwrap();
    let mut first = model(cnn());
    apply(&mut first, &plan, &ranges()).unwrap();
    assert_eq!(options.memo.computed(), 2, "W and W2");
    let mut again = model(cnn());
    apply(&mut again, &plan.without(&BTreeMap::new()), &ranges()).unwrap();
    assert_eq!(options.memo.computed(), 2);
    assert_eq!(again.proto, first.proto);
}

/// A Conv in each branch of an If: nothing in a body is quantized, and the report says why for
/// each, so a model whose work all happens in bodies (silero's VAD) is not silently left float.
#[test]
fn nodes_inside_bodies_are_reported_kept_float() {
    let branch = |name: &str, w: &str| {
        GraphBuilder::new(name)
            .node("Conv", &["x", w], &[&format!("{name}_y")])
            .output(&format!("{name}_y"), DataType::Float, &[])
            .build()
    };
    let proto = ModelBuilder::new(17)
        .input("x", DataType::Float, &["1", "2", "6", "6"])
        .input("flag", DataType::Bool, &[])
        .initializer_f32("W", &[4, 2, 3, 3], &weights(72, 0.05))
        .initializer_f32("V", &[4, 2, 3, 3], &weights(72, 0.07))
        .node("If", &["flag"], &["y"])
        .attr(attr_graph("then_branch", branch("then", "W")))
        .attr(attr_graph("else_branch", branch("else", "V")))
        .output("y", DataType::Float, &[])
        .build();
    let p = plan(&model(proto), &every_node()).unwrap();
    assert!(p.activations().is_empty());
    assert_eq!(p.kept_float.len(), 2, "{:?}", p.kept_float);
    for k in &p.kept_float {
        assert_eq!(k.op, "Conv");
        assert!(
            k.reason.starts_with("inside an If/Loop/Scan body"),
            "{}",
            k.reason
        );
    }
    // each named by its path from the main graph
    let labels: Vec<&str> = p.kept_float.iter().map(|k| k.node.as_str()).collect();
    assert_eq!(
        labels,
        [
            "#0 (If)/then_branch/#0 (Conv)",
            "#0 (If)/else_branch/#0 (Conv)"
        ]
    );
}
