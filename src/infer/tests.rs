use super::*;
use crate::graph::builder::{attr_graph, attr_int, attr_ints, attr_string};
use crate::graph::{GraphBuilder, ModelBuilder};
use crate::onnx::DataType::{Bool, Float, Int64};
use crate::onnx::Model;

/// Inference on a built model, with the outputs' declared types removed so that nothing is
/// read back from them.
fn infer(mut m: crate::onnx::proto::ModelProto) -> Inference {
    for o in &mut m.graph.as_mut().unwrap().output {
        o.r#type = None;
    }
    let read = |t: &TensorProto| TensorData::new(t, None).ok();
    Inference::of_graph(
        m.graph.as_ref().unwrap(),
        &m.opset_import,
        &m.functions,
        &read,
    )
}

fn shape_str(inf: &Inference, name: &str) -> String {
    inf.shape(name)
        .map_or_else(|| "?".into(), outputs::render_computed)
}

#[test]
fn reshape_with_zero_and_minus_one_over_symbolic_dims() {
    let m = ModelBuilder::new(17)
        .input("x", Float, &["batch", "seq", "768"])
        .initializer_i64("s", &[4], &[0, 0, 12, -1])
        .node("Reshape", &["x", "s"], &["y"])
        .output("y", Float, &[])
        .build();
    let inf = infer(m);
    assert_eq!(shape_str(&inf, "y"), "[batch, seq, 12, 64]");
}

#[test]
fn flatten_through_a_shape_chain_is_known() {
    // Reshape(x, Concat(Shape(x)[0:1], [-1])): the batch dim survives, the rest is flattened
    let m = ModelBuilder::new(17)
        .input("x", Float, &["N", "3", "H", "W"])
        .node("Shape", &["x"], &["sh"])
        .initializer_i64("zero", &[1], &[0])
        .initializer_i64("one", &[1], &[1])
        .initializer_i64("minus1", &[1], &[-1])
        .node("Slice", &["sh", "zero", "one"], &["n"])
        .node("Concat", &["n", "minus1"], &["target"])
        .attr(attr_int("axis", 0))
        .node("Reshape", &["x", "target"], &["y"])
        .output("y", Float, &[])
        .build();
    let inf = infer(m);
    assert_eq!(shape_str(&inf, "target"), "[2]");
    assert_eq!(inf.value("target").unwrap()[0], Dim::symbol("N"));
    assert_eq!(shape_str(&inf, "y"), "[N, 3*H*W]");
    assert_eq!(inf.elem_type("sh"), Some(Int64));
}

#[test]
fn conv_same_upper_with_symbolic_height() {
    let m = ModelBuilder::new(17)
        .input("x", Float, &["N", "3", "H", "224"])
        .initializer_f32("w", &[8, 3, 3, 3], &[0.0; 216])
        .node("Conv", &["x", "w"], &["y"])
        .attr(attr_string("auto_pad", "SAME_UPPER"))
        .attr(attr_ints("strides", &[2, 2]))
        .output("y", Float, &[])
        .build();
    let inf = infer(m);
    assert_eq!(shape_str(&inf, "y"), "[N, 8, (H + 1)/2, 112]");
}

#[test]
fn conv_with_explicit_pads_and_dilation() {
    let m = ModelBuilder::new(17)
        .input("x", Float, &["1", "3", "H", "31"])
        .initializer_f32("w", &[4, 3, 3, 3], &[0.0; 108])
        .node("Conv", &["x", "w"], &["y"])
        .attr(attr_ints("pads", &[1, 1, 1, 1]))
        .attr(attr_ints("dilations", &[2, 2]))
        .attr(attr_ints("strides", &[1, 2]))
        .output("y", Float, &[])
        .build();
    let inf = infer(m);
    // (31 + 2 - 5) / 2 + 1 = 15; H + 2 - 5 + 1 = H - 2
    assert_eq!(shape_str(&inf, "y"), "[1, 4, H - 2, 15]");
}

#[test]
fn slice_with_negative_steps() {
    let m = ModelBuilder::new(17)
        .input("x", Float, &["10", "T"])
        .initializer_i64("starts", &[2], &[-1, -1])
        .initializer_i64("ends", &[2], &[-100, i64::MIN])
        .initializer_i64("axes", &[2], &[0, 1])
        .initializer_i64("steps", &[2], &[-3, -1])
        .node("Slice", &["x", "starts", "ends", "axes", "steps"], &["y"])
        .output("y", Float, &[])
        .build();
    let inf = infer(m);
    // 9, 6, 3, 0: four elements; the whole of T reversed
    assert_eq!(shape_str(&inf, "y"), "[4, T]");
}

/// A reversing slice of an empty dim (an audio model's padding of a zero-length tail) is
/// empty: no bounds to clamp into.
#[test]
fn slice_with_a_negative_step_over_an_empty_dim_is_empty() {
    let m = ModelBuilder::new(17)
        .input("x", Float, &["0", "T"])
        .initializer_i64("starts", &[1], &[-1])
        .initializer_i64("ends", &[1], &[i64::MIN])
        .initializer_i64("axes", &[1], &[0])
        .initializer_i64("steps", &[1], &[-1])
        .node("Slice", &["x", "starts", "ends", "axes", "steps"], &["y"])
        .output("y", Float, &[])
        .build();
    assert_eq!(shape_str(&infer(m), "y"), "[0, T]");
}

/// Before opset 7 B is broadcast into A where `broadcast` is set (at `axis`, or at A's last
/// axes): the result has A's shape, where numpy's rules would refuse [3] against [.., 5].
#[test]
fn legacy_broadcasts_keep_the_first_inputs_shape() {
    let m = ModelBuilder::new(6)
        .input("a", Float, &["2", "3", "4", "5"])
        .input("b", Float, &["3"])
        .node("Add", &["a", "b"], &["y"])
        .attr(attr_int("broadcast", 1))
        .attr(attr_int("axis", 1))
        .output("y", Float, &[])
        .build();
    assert_eq!(shape_str(&infer(m), "y"), "[2, 3, 4, 5]");
}

#[test]
fn broadcasting_symbolic_dims() {
    let m = ModelBuilder::new(17)
        .input("a", Float, &["batch", "1", "seq"])
        .input("b", Float, &["heads", "1"])
        .input("c", Float, &["x"])
        .input("d", Float, &["y"])
        .node("Add", &["a", "b"], &["ab"])
        .node("Mul", &["c", "d"], &["cd"])
        .node("Equal", &["a", "a"], &["e"])
        .output("ab", Float, &[])
        .output("cd", Float, &[])
        .output("e", Bool, &[])
        .build();
    let inf = infer(m);
    assert_eq!(shape_str(&inf, "ab"), "[batch, heads, seq]");
    // two different symbols: one of them is 1, or they are equal; which is unknown
    assert_eq!(shape_str(&inf, "cd"), "[?]");
    assert_eq!(inf.elem_type("e"), Some(Bool));
}

#[test]
fn loop_carried_shapes_that_grow_are_merged() {
    // the body concatenates one row to the carried value each iteration
    let body = GraphBuilder::new("body")
        .input("i", Int64, &[])
        .input("cond", Bool, &[])
        .input("acc_in", Float, &[])
        .initializer_f32("row", &[1, 4], &[1.0; 4])
        .node("Concat", &["acc_in", "row"], &["acc_out"])
        .attr(attr_int("axis", 0))
        .node("Identity", &["cond"], &["cond_out"])
        .node("Identity", &["acc_out"], &["scan"])
        .output("cond_out", Bool, &[])
        .output("acc_out", Float, &[])
        .output("scan", Float, &[])
        .build();
    let m = ModelBuilder::new(17)
        .input("acc", Float, &["2", "4"])
        .initializer_i64("trips", &[], &[3])
        .node("Loop", &["trips", "", "acc"], &["final", "all"])
        .attr(attr_graph("body", body))
        .output("final", Float, &[])
        .output("all", Float, &[])
        .build();
    let inf = infer(m);
    assert_eq!(shape_str(&inf, "final"), "[?, 4]");
    assert_eq!(shape_str(&inf, "all"), "[?, ?, 4]");
    assert_eq!(inf.elem_type("all"), Some(Float));
}

#[test]
fn output_types_follow_the_schema_not_input_zero() {
    let m = ModelBuilder::new(17)
        .input("x", Float, &["1", "3", "8", "8"])
        .node("MaxPool", &["x"], &["y", "idx"])
        .attr(attr_ints("kernel_shape", &[2, 2]))
        .attr(attr_ints("strides", &[2, 2]))
        .node("Dropout", &["x"], &["d", "mask"])
        .node("Cast", &["idx"], &["f"])
        .attr(attr_int("to", 1))
        .output("y", Float, &[])
        .output("idx", Int64, &[])
        .output("mask", Bool, &[])
        .output("f", Float, &[])
        .build();
    let inf = infer(m);
    assert_eq!(inf.elem_type("idx"), Some(Int64));
    assert_eq!(inf.elem_type("mask"), Some(Bool));
    assert_eq!(inf.elem_type("f"), Some(Float));
    assert_eq!(shape_str(&inf, "idx"), "[1, 3, 4, 4]");
}

#[test]
fn unknown_ops_give_unknown_never_a_guess() {
    let m = ModelBuilder::new(17)
        .opset("com.microsoft", 1)
        .input("x", Float, &["1", "8"])
        .node("FusedGemm", &["x", "x"], &["y"])
        .node("Relu", &["y"], &["z"])
        .output("z", Float, &[])
        .build();
    let mut g = m.graph.clone().unwrap();
    g.node[0].domain = Some("com.microsoft".into());
    let m = crate::onnx::proto::ModelProto {
        graph: Some(g),
        ..m
    };
    let inf = infer(m);
    assert_eq!(inf.fact("y"), Some(&Fact::default()));
    assert_eq!(inf.fact("z"), Some(&Fact::default()));
}

#[test]
fn constant_of_shape_bomb_is_only_a_shape() {
    let m = ModelBuilder::new(17)
        .initializer_i64("s", &[2], &[1 << 18, 1 << 18])
        .node("ConstantOfShape", &["s"], &["y"])
        .output("y", Float, &[])
        .build();
    let inf = infer(m);
    assert_eq!(inf.static_shape("y"), Some(vec![1 << 18, 1 << 18]));
    assert!(inf.value("y").is_none());
}

#[test]
fn if_with_known_condition_takes_its_branch() {
    let then = GraphBuilder::new("then")
        .initializer_f32("a", &[2, 3], &[0.0; 6])
        .node("Identity", &["a"], &["out_a"])
        .output("out_a", Float, &[])
        .build();
    let other = GraphBuilder::new("else")
        .initializer_f32("b", &[5], &[0.0; 5])
        .node("Identity", &["b"], &["out_b"])
        .output("out_b", Float, &[])
        .build();
    let m = ModelBuilder::new(17)
        .input("c", Bool, &[])
        .node("If", &["c"], &["y"])
        .attr(attr_graph("then_branch", then))
        .attr(attr_graph("else_branch", other))
        .output("y", Float, &[])
        .build();
    let inf = infer(m);
    // branches of different ranks: the type is known, the shape is not
    assert_eq!(inf.elem_type("y"), Some(Float));
    assert_eq!(inf.shape("y"), None);
}

#[test]
fn a_table_sliced_to_a_symbolic_length_broadcasts_to_that_length() {
    // BERT's position ids: table[:, :sequence] added to [batch, sequence, 128] embeddings
    let m = ModelBuilder::new(17)
        .input("ids", Int64, &["batch", "sequence"])
        .input("emb", Float, &["batch", "sequence", "128"])
        .initializer_i64("table", &[1, 512], &[0; 512])
        .initializer_f32("pos", &[512, 128], &vec![0.0; 512 * 128])
        .node("Shape", &["ids"], &["s"])
        .initializer_i64("one", &[], &[1])
        .node("Gather", &["s", "one"], &["len"])
        .initializer_i64("axis0", &[1], &[0])
        .node("Unsqueeze", &["len", "axis0"], &["end"])
        .initializer_i64("zero", &[1], &[0])
        .initializer_i64("axis1", &[1], &[1])
        .node("Slice", &["table", "zero", "end", "axis1"], &["positions"])
        .node("Gather", &["pos", "positions"], &["pe"])
        .node("Add", &["emb", "pe"], &["y"])
        .output("y", Float, &[])
        .build();
    let inf = infer(m);
    assert_eq!(shape_str(&inf, "positions"), "[1, min(sequence, 512)]");
    assert_eq!(shape_str(&inf, "y"), "[batch, sequence, 128]");
}

#[test]
fn placeholder_dim_names_are_unknowns_not_one_symbol() {
    // `?` for both height and width must not make them equal
    let m = ModelBuilder::new(17)
        .input("x", Float, &["1", "3", "?", "?"])
        .node("Transpose", &["x"], &["t"])
        .attr(attr_ints("perm", &[0, 1, 3, 2]))
        .node("Add", &["x", "t"], &["y"])
        .output("y", Float, &[])
        .build();
    let inf = infer(m);
    assert_eq!(shape_str(&inf, "y"), "[1, 3, ?, ?]");
}

#[test]
fn a_refresh_recomputes_only_what_an_edit_reaches() {
    let proto = ModelBuilder::new(17)
        .input("x", Float, &["batch", "8"])
        .node("Relu", &["x"], &["a"])
        .node("Sigmoid", &["a"], &["b"])
        .node("Tanh", &["x"], &["c"])
        .node("Add", &["b", "c"], &["y"])
        .output("y", Float, &["batch", "8"])
        .build();
    let mut model = Model::from_proto(proto, std::env::temp_dir());
    let mut inf = Inference::default();
    inf.refresh(&model);
    assert_eq!((inf.computed, inf.reused), (4, 0));
    inf.refresh(&model);
    assert_eq!((inf.computed, inf.reused), (0, 4));
    // Sigmoid becomes a Transpose of a [batch, 8] value: it and the Add below it change
    let g = model.graph_mut();
    g.node[1].op_type = Some("Transpose".into());
    inf.refresh(&model);
    assert_eq!((inf.computed, inf.reused), (2, 2));
    assert_eq!(shape_str(&inf, "b"), "[8, batch]");
    // broadcasting [8, batch] with [batch, 8]: a valid model has batch 8 (or 1)
    assert_eq!(shape_str(&inf, "y"), "[8, 8]");
}

#[test]
fn model_local_functions_are_inferred_with_the_callers_attributes() {
    use crate::onnx::proto::{AttributeProto, FunctionProto, NodeProto, OperatorSetIdProto};
    // Scaled(x) = Transpose(x, perm = the caller's `order`)
    let body = NodeProto {
        op_type: Some("Transpose".into()),
        input: vec!["in".into()],
        output: vec!["out".into()],
        attribute: vec![AttributeProto {
            name: Some("perm".into()),
            ref_attr_name: Some("order".into()),
            r#type: Some(crate::onnx::proto::attribute_proto::AttributeType::Ints as i32),
            ..Default::default()
        }],
        ..Default::default()
    };
    let function = FunctionProto {
        name: Some("Reorder".into()),
        domain: Some("local".into()),
        input: vec!["in".into()],
        output: vec!["out".into()],
        attribute: vec!["order".into()],
        node: vec![body],
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        ..Default::default()
    };
    let mut m = ModelBuilder::new(17)
        .opset("local", 1)
        .input("x", Float, &["batch", "3", "5"])
        .node("Reorder", &["x"], &["y"])
        .attr(attr_ints("order", &[2, 0, 1]))
        .output("y", Float, &[])
        .build();
    m.graph.as_mut().unwrap().node[0].domain = Some("local".into());
    m.functions.push(function);
    let inf = infer(m);
    assert_eq!(shape_str(&inf, "y"), "[5, batch, 3]");
    assert_eq!(inf.elem_type("y"), Some(Float));
}

#[test]
fn a_float_range_over_a_size_cast_to_float_is_as_long_as_the_size() {
    // YOLOv8's anchor grid: Range(0.0, Cast<float>(Shape(x)[3]), 1.0) + 0.5
    let grid = |to: i64, start: f32| {
        ModelBuilder::new(17)
            .input("x", Float, &["N", "64", "H", "W"])
            .node("Shape", &["x"], &["s"])
            .initializer_i64("three", &[], &[3])
            .node("Gather", &["s", "three"], &["w"])
            .node("Cast", &["w"], &["wf"])
            .attr(attr_int("to", to))
            .initializer_f32("start", &[], &[start])
            .initializer_f32("one", &[], &[1.0])
            .node("Range", &["start", "wf", "one"], &["r"])
            .initializer_f32("half", &[], &[0.5])
            .node("Add", &["r", "half"], &["centres"])
            .node("Add", &["wf", "wf"], &["twice"])
            .output("centres", Float, &[])
            .output("twice", Float, &[])
            .build()
    };
    let inf = infer(grid(1, 0.0));
    assert_eq!(inf.value("wf").map(|v| v.len()), Some(1));
    assert_eq!(shape_str(&inf, "r"), "[W]");
    assert_eq!(shape_str(&inf, "centres"), "[W]");
    // a float computed from the cast value is no size
    assert!(inf.value("twice").is_none());
    // a start of 0.5 is no whole number: the length is not known
    let inf = infer(grid(1, 0.5));
    assert_eq!(shape_str(&inf, "r"), "[?]");
    // float16 holds integers exactly only up to 2048: a size cast to it keeps no value
    let inf = infer(grid(10, 0.0));
    assert!(inf.value("wf").is_none());
}

#[test]
fn the_shape_of_a_value_of_unknown_rank_is_a_list() {
    let m = ModelBuilder::new(17)
        .opset("com.microsoft", 1)
        .input("x", Float, &["1", "8"])
        .node("FusedGemm", &["x", "x"], &["y"])
        .node("Shape", &["y"], &["s"])
        .initializer_i64("one", &[1], &[1])
        .node("Gather", &["s", "one"], &["d"])
        .node("Size", &["y"], &["n"])
        .output("d", Int64, &[])
        .output("n", Int64, &[])
        .build();
    let inf = infer(m);
    assert_eq!(inf.rank("y"), None);
    assert_eq!(inf.rank("s"), Some(1));
    assert_eq!(shape_str(&inf, "d"), "[1]");
    assert_eq!(shape_str(&inf, "n"), "[]");
}
