//! Float16 conversion on built graphs: which values change type, where Casts go, what stays
//! float32 and why, and the numbers (tract runs the float16 model).

use super::*;
use crate::graph::builder::{
    ModelBuilder, attr_float, attr_graph, attr_int, tensor_f32, tensor_i64,
};
use crate::onnx::proto::ModelProto;
use crate::passes::testing::max_difference;

fn model(proto: ModelProto) -> Model {
    Model::from_proto(proto, std::env::temp_dir())
}

fn elem_type_of(m: &Model, value: &str) -> Option<DataType> {
    let g = m.graph();
    if let Some(t) = g.initializer.iter().find(|t| t.name() == value) {
        return DataType::from_code(t.data_type()).ok();
    }
    if let Some(n) = g
        .node
        .iter()
        .find(|n| n.output.first().is_some_and(|o| o == value))
        && let Some(t) = constant_tensor(n)
    {
        return DataType::from_code(t.data_type()).ok();
    }
    Inference::of_model(m).elem_type(value)
}

fn ops(m: &Model) -> Vec<&str> {
    m.graph().node.iter().map(|n| n.op_type()).collect()
}

fn weights(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|k| ((k * 37 % 11) as f32 - 5.0) * scale)
        .collect()
}

/// x -> Conv(W, B) -> Relu -> Resize(scales) -> y
fn conv_resize() -> ModelProto {
    ModelBuilder::new(17)
        .input("x", DataType::Float, &["1", "2", "4", "4"])
        .initializer_f32("W", &[3, 2, 3, 3], &weights(54, 0.1))
        .initializer_f32("B", &[3], &[0.1, -0.2, 0.3])
        .initializer_f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0])
        .node("Conv", &["x", "W", "B"], &["c"])
        .attr(crate::graph::builder::attr_ints("pads", &[1, 1, 1, 1]))
        .node("Relu", &["c"], &["r"])
        .node("Resize", &["r", "", "scales"], &["y"])
        .output("y", DataType::Float, &["1", "3", "8", "8"])
        .build()
}

#[test]
fn weights_and_computation_become_float16_with_casts_at_the_boundary() {
    let before = conv_resize();
    let mut m = model(before.clone());
    let report = convert(&mut m, &Fp16Options::default()).unwrap();
    assert_eq!(elem_type_of(&m, "W"), Some(DataType::Float16));
    assert_eq!(elem_type_of(&m, "B"), Some(DataType::Float16));
    // Resize's scales are float32 by the schema
    assert_eq!(elem_type_of(&m, "scales"), Some(DataType::Float));
    assert_eq!(ops(&m), ["Cast", "Conv", "Relu", "Resize", "Cast"]);
    // the interface keeps its names and types
    assert_eq!(m.graph().output[0].name(), "y");
    assert_eq!(elem_type_of(&m, "y"), Some(DataType::Float));
    assert_eq!(elem_type_of(&m, "x"), Some(DataType::Float));
    assert_eq!(report.nodes_float16, 3);
    assert_eq!(report.casts_inserted, 2);
    let d = max_difference(&before, &m.proto);
    assert!(d < 5e-3, "float16 drifted by {d}");
}

#[test]
fn fp16_io_makes_the_interface_float16() {
    let mut m = model(conv_resize());
    let options = Fp16Options {
        keep_io_types: false,
        ..Default::default()
    };
    convert(&mut m, &options).unwrap();
    assert_eq!(ops(&m), ["Conv", "Relu", "Resize"]);
    let io = |vi: &crate::onnx::proto::ValueInfoProto| match vi
        .r#type
        .as_ref()
        .unwrap()
        .value
        .as_ref()
        .unwrap()
    {
        type_proto::Value::TensorType(t) => t.elem_type(),
        _ => 0,
    };
    assert_eq!(io(&m.graph().input[0]), DataType::Float16.code());
    assert_eq!(io(&m.graph().output[0]), DataType::Float16.code());
}

#[test]
fn weight_beyond_float16_range_stays_float32_and_is_reported() {
    let mut big = weights(54, 0.1);
    big[7] = 1.0e5;
    let proto = ModelBuilder::new(17)
        .input("x", DataType::Float, &["1", "2", "4", "4"])
        .initializer_f32("W", &[3, 2, 3, 3], &big)
        .node("Conv", &["x", "W"], &["c"])
        .node("Relu", &["c"], &["y"])
        .output("y", DataType::Float, &["1", "3", "2", "2"])
        .build();
    let mut m = model(proto.clone());
    let report = convert(&mut m, &Fp16Options::default()).unwrap();
    assert_eq!(elem_type_of(&m, "W"), Some(DataType::Float));
    assert_eq!(report.weight_ranges.len(), 1);
    assert!(report.weight_ranges[0].kept_float32);
    assert_eq!(report.kept_float32.len(), 1);
    assert!(
        report.kept_float32[0].reason.contains("65504"),
        "{:?}",
        report.kept_float32
    );
    // no Cast clamps it: the Conv reads the float32 weight and the graph input as they are
    assert_eq!(ops(&m), ["Conv", "Cast", "Relu", "Cast"]);
    // what the Conv computes from it overflows float16 too: calibration sees that and keeps
    // the Relu float32 as well, and the numbers are untouched
    let mut m = model(proto.clone());
    let options = Fp16Options {
        observed: [("c".to_string(), 2.0e5f32)].into(),
        ..Default::default()
    };
    convert(&mut m, &options).unwrap();
    assert_eq!(ops(&m), ["Conv", "Relu"]);
    assert_eq!(max_difference(&proto, &m.proto), 0.0);
}

#[test]
fn weights_that_would_flush_to_zero_stay_float32() {
    let proto = ModelBuilder::new(17)
        .input("x", DataType::Float, &["4"])
        .initializer_f32("tiny", &[4], &[1e-9, -2e-9, 3e-9, 1e-9])
        .node("Mul", &["x", "tiny"], &["y"])
        .output("y", DataType::Float, &["4"])
        .build();
    let mut m = model(proto);
    let report = convert(&mut m, &Fp16Options::default()).unwrap();
    assert_eq!(elem_type_of(&m, "tiny"), Some(DataType::Float));
    assert_eq!(report.weight_ranges[0].flushed, 4);
    assert_eq!(report.nodes_float16, 0);
}

/// The flush rule by magnitude and the bulk conversion give what converting each value alone
/// gives, at float16's edges (around its smallest subnormal, its largest value, ties).
#[test]
fn bulk_conversion_and_the_flush_rule_match_one_value_at_a_time() {
    let limit = HALF_FLUSHES_AT_MOST;
    let mut values = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        65504.0,
        65520.0,
        1e6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        // float16's step above 1, and half of it (a tie, to even)
        1.0 + 2f32.powi(-10),
        1.0 + 2f32.powi(-11),
        // its smallest subnormal
        2f32.powi(-24),
        1e-9,
        3e-5,
    ];
    for v in [
        limit,
        -limit,
        limit.next_up(),
        limit.next_down(),
        2.0 * limit,
    ] {
        values.push(v);
    }
    values.extend((0..2000).map(|k| ((k * 7919 % 4001) as f32 - 2000.0) * 1.7e-3));
    let bulk = half_bytes(&values);
    for (k, &v) in values.iter().enumerate() {
        let one = f16::from_f32(v);
        let got = f16::from_le_bytes([bulk[2 * k], bulk[2 * k + 1]]);
        assert!(
            one.to_bits() == got.to_bits(),
            "{v}: {one} one at a time, {got} in bulk"
        );
        if v != 0.0 && !v.is_nan() {
            assert_eq!(v.abs() <= limit, one == f16::ZERO, "{v} flushes to {one}");
        }
    }
}

#[test]
fn an_activation_that_overflows_float16_stays_float32_with_its_readers() {
    // x -> Mul(1000) -> Mul(1000) = p (huge) -> ReduceMean -> y
    let proto = ModelBuilder::new(17)
        .input("x", DataType::Float, &["2", "8"])
        .initializer_f32("k", &[], &[1000.0])
        .node("Mul", &["x", "k"], &["a"])
        .node("Mul", &["a", "k"], &["p"])
        .node("ReduceMean", &["p"], &["y"])
        .attr(attr_int("keepdims", 0))
        .output("y", DataType::Float, &[])
        .build();
    let mut m = model(proto);
    let options = Fp16Options {
        observed: [("a".to_string(), 900.0f32), ("p".to_string(), 9.0e5f32)].into(),
        ..Default::default()
    };
    let report = convert(&mut m, &options).unwrap();
    assert_eq!(elem_type_of(&m, "a"), Some(DataType::Float16));
    assert_eq!(elem_type_of(&m, "p"), Some(DataType::Float));
    assert_eq!(elem_type_of(&m, "y"), Some(DataType::Float));
    let kept: Vec<&str> = report.kept_float32.iter().map(|k| k.op.as_str()).collect();
    assert_eq!(kept, ["Mul", "ReduceMean"]);
    assert!(report.overflowing_values.contains_key("p"));
}

#[test]
fn shape_arithmetic_in_float_stays_float32() {
    // scales = Cast(Shape(x)[2:]) / 4 * 8 computed in float, then fed to Resize
    let proto = ModelBuilder::new(17)
        .input("x", DataType::Float, &["1", "1", "4", "4"])
        .node("Shape", &["x"], &["s"])
        .node("Cast", &["s"], &["sf"])
        .attr(attr_int("to", DataType::Float.code().into()))
        .initializer_f32("four", &[], &[2.0])
        .node("Div", &["sf", "four"], &["half"])
        .node("Div", &["half", "half"], &["ones"])
        .initializer_f32("two", &[4], &[1.0, 1.0, 2.0, 2.0])
        .node("Mul", &["ones", "two"], &["scales"])
        .node("Relu", &["x"], &["r"])
        .node("Resize", &["r", "", "scales"], &["y"])
        .output("y", DataType::Float, &["1", "1", "8", "8"])
        .build();
    let mut m = model(proto.clone());
    let report = convert(&mut m, &Fp16Options::default()).unwrap();
    for v in ["sf", "half", "ones", "scales", "two"] {
        assert_eq!(elem_type_of(&m, v), Some(DataType::Float), "{v}");
    }
    assert_eq!(elem_type_of(&m, "r"), Some(DataType::Float16));
    assert!(
        report
            .kept_float32
            .iter()
            .any(|k| k.reason.contains("computes shapes")),
        "{:?}",
        report.kept_float32
    );
    assert!(max_difference(&proto, &m.proto) < 1e-3);
}

#[test]
fn cast_to_float_inside_the_graph_becomes_cast_to_float16() {
    let proto = ModelBuilder::new(17)
        .input("x", DataType::Int64, &["3"])
        .node("Cast", &["x"], &["f"])
        .attr(attr_int("to", DataType::Float.code().into()))
        .initializer_f32("k", &[], &[0.5])
        .node("Mul", &["f", "k"], &["y"])
        .output("y", DataType::Float, &["3"])
        .build();
    let mut m = model(proto.clone());
    convert(&mut m, &Fp16Options::default()).unwrap();
    assert_eq!(elem_type_of(&m, "f"), Some(DataType::Float16));
    assert_eq!(ops(&m), ["Cast", "Mul", "Cast"]);
    assert_eq!(max_difference(&proto, &m.proto), 0.0);
}

#[test]
fn if_bodies_are_converted_and_read_outer_values_with_casts() {
    let branch = |op: &str| {
        crate::graph::GraphBuilder::new(op)
            .initializer(tensor_f32(&format!("{op}_k"), &[], &[2.0]))
            .node(op, &["r", &format!("{op}_k")], &[&format!("{op}_out")])
            .output(&format!("{op}_out"), DataType::Float, &["4"])
            .build()
    };
    let proto = ModelBuilder::new(17)
        .input("x", DataType::Float, &["4"])
        .input("c", DataType::Bool, &[])
        .node("Relu", &["x"], &["r"])
        .node("If", &["c"], &["y"])
        .attr(attr_graph("then_branch", branch("Mul")))
        .attr(attr_graph("else_branch", branch("Add")))
        .output("y", DataType::Float, &["4"])
        .build();
    let mut m = model(proto.clone());
    let report = convert(&mut m, &Fp16Options::default()).unwrap();
    // Relu computes in float16; each body's op too, and its output is cast back to float32
    assert_eq!(elem_type_of(&m, "r"), Some(DataType::Float16));
    let if_node = m.graph().node.iter().find(|n| n.op_type() == "If").unwrap();
    let then = crate::onnx::attributes::attr_g(if_node, "then_branch").unwrap();
    let ops: Vec<&str> = then.node.iter().map(|n| n.op_type()).collect();
    assert_eq!(ops, ["Mul", "Cast"]);
    assert_eq!(then.initializer[0].data_type(), DataType::Float16.code());
    assert!(report.kept_float32.iter().any(|k| k.op == "If"));
    assert!(Inference::of_model(&m).type_errors(&m).is_empty());
}

#[test]
fn gemm_with_a_bias_is_split_so_tract_loads_it_in_float16() {
    let proto = ModelBuilder::new(17)
        .input("x", DataType::Float, &["2", "4"])
        .initializer_f32("W", &[3, 4], &weights(12, 0.25))
        .initializer_f32("b", &[3], &[1.0, 2.0, 3.0])
        .node("Gemm", &["x", "W", "b"], &["y"])
        .attr(attr_int("transB", 1))
        .output("y", DataType::Float, &["2", "3"])
        .build();
    let mut m = model(proto.clone());
    convert(&mut m, &Fp16Options::default()).unwrap();
    assert_eq!(ops(&m), ["Cast", "Gemm", "Add", "Cast"]);
    assert!(max_difference(&proto, &m.proto) < 1e-2);
    // a Gemm whose alpha is not 1 stays float32
    let scaled = ModelBuilder::new(17)
        .input("x", DataType::Float, &["2", "4"])
        .initializer_f32("W", &[4, 3], &weights(12, 0.25))
        .node("Gemm", &["x", "W"], &["y"])
        .attr(attr_float("alpha", 0.5))
        .output("y", DataType::Float, &["2", "3"])
        .build();
    let mut m = model(scaled);
    let report = convert(&mut m, &Fp16Options::default()).unwrap();
    assert_eq!(report.nodes_float16, 0);
    assert_eq!(ops(&m), ["Gemm"]);
}

#[test]
fn excluded_nodes_and_op_types_stay_float32() {
    let mut m = model(conv_resize());
    let options = Fp16Options {
        exclude_op_types: ["Relu".to_string()].into(),
        ..Default::default()
    };
    let report = convert(&mut m, &options).unwrap();
    assert_eq!(elem_type_of(&m, "r"), Some(DataType::Float));
    assert!(
        report
            .kept_float32
            .iter()
            .any(|k| k.reason.contains("--exclude-op-types"))
    );
}

#[test]
fn integer_graphs_are_left_alone() {
    let proto = ModelBuilder::new(17)
        .input("x", DataType::Int64, &["3"])
        .initializer(tensor_i64("k", &[], &[2]))
        .node("Mul", &["x", "k"], &["y"])
        .output("y", DataType::Int64, &["3"])
        .build();
    let mut m = model(proto.clone());
    let report = convert(&mut m, &Fp16Options::default()).unwrap();
    assert_eq!(m.proto, proto);
    assert_eq!(report.nodes_float16, 0);
}

/// A value whose type nothing determines (a contrib op's output) gets no Cast, so what reads it
/// stays float32 rather than mixing types (a review found `Add(f32, f16)` passing the check).
#[test]
fn readers_of_a_value_of_unknown_type_stay_float32() {
    let proto = ModelBuilder::new(17)
        .opset("com.example", 1)
        .input("x", DataType::Float, &["4"])
        .initializer_f32("b", &[4], &[1.0, 2.0, 3.0, 4.0])
        .node("Mystery", &["x"], &["m"])
        .node("Add", &["m", "b"], &["y"])
        .output("y", DataType::Float, &["4"])
        .build();
    let mut proto = proto;
    proto.graph.as_mut().unwrap().node[0].domain = Some("com.example".into());
    let mut m = model(proto);
    let report = convert(&mut m, &Fp16Options::default()).unwrap();
    assert_eq!(elem_type_of(&m, "b"), Some(DataType::Float));
    assert!(
        report
            .kept_float32
            .iter()
            .any(|k| k.op == "Add" && k.reason.contains("unknown"))
    );
}

/// A weight that is also a graph input (as IR 3 listed every initializer) may be overridden by a
/// caller: it stays float32, cast where read, and the report names it.
#[test]
fn weights_a_graph_input_overrides_stay_float32_and_are_named() {
    let mut proto = conv_resize();
    let g = proto.graph.as_mut().unwrap();
    g.input.push(crate::graph::builder::value_info(
        "W",
        DataType::Float,
        &["3", "2", "3", "3"],
    ));
    let mut m = model(proto);
    let report = convert(&mut m, &Fp16Options::default()).unwrap();
    assert_eq!(report.overridable_weights, ["W"]);
    assert_eq!(elem_type_of(&m, "W"), Some(DataType::Float));
    assert_eq!(elem_type_of(&m, "B"), Some(DataType::Float16));
    crate::graph::check_model(&m).unwrap();
}

/// Converting a float16 model again (its interface Casts, its Cast(to=FLOAT16) nodes) adds
/// Casts under names no node has: onnxruntime and tract refuse a model with two nodes alike.
/// And it adds no node: the output's Cast to float32, retyped to float16 of a value already
/// float16, goes beside the interface Cast that takes its place.
#[test]
fn converting_again_names_no_two_nodes_alike_and_adds_no_cast() {
    let mut m = model(conv_resize());
    convert(&mut m, &Fp16Options::default()).unwrap();
    let once = m.proto.clone();
    convert(&mut m, &Fp16Options::default()).unwrap();
    crate::quantize::test_models::assert_node_names_unique(&m);
    assert!(max_difference(&once, &m.proto) < 1e-3);
    assert_eq!(ops(&m), ops(&model(once)));
    for n in m.graph().node.iter().filter(|n| n.op_type() == "Cast") {
        let to = attr(n, "to").and_then(|a| a.i).unwrap();
        let from = elem_type_of(&m, &n.input[0]).unwrap();
        assert_ne!(
            i64::from(from.code()),
            to,
            "{} casts to its input's type",
            n.name()
        );
    }
}

/// A Cast to float32 inside a float16 graph casts to float16 once converted, a value already
/// float16: it goes, and the values the search exposes are all still computed (an exposed value
/// no node writes would make the candidate fail to load).
#[test]
fn a_cast_to_float_of_a_float16_value_goes_with_its_output() {
    let proto = ModelBuilder::new(17)
        .input("x", DataType::Float16, &["3"])
        .node("Cast", &["x"], &["c"])
        .attr(attr_int("to", DataType::Float.code().into()))
        .node("Abs", &["c"], &["a"])
        .initializer_f32("k", &[], &[0.5])
        .node("Mul", &["a", "k"], &["y"])
        .output("y", DataType::Float, &["3"])
        .build();
    let mut m = model(proto.clone());
    let report = convert(&mut m, &Fp16Options::default()).unwrap();
    assert_eq!(ops(&m), ["Abs", "Mul", "Cast"]);
    let computed = node_outputs(&m);
    assert!(!report.converted_outputs.is_empty());
    for v in &report.converted_outputs {
        assert!(computed.contains(v), "{v} is exposed but not computed");
    }
    assert_eq!(report.nodes_float16, 2, "{report:?}");
    assert_eq!(max_difference(&proto, &m.proto), 0.0);
}
