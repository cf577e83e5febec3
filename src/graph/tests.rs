use std::collections::HashSet;

use super::builder::{GraphBuilder, attr_graph, attr_tensor, tensor_f32};
use super::*;
use crate::onnx::DataType;

fn chain() -> GraphProto {
    GraphBuilder::new("g")
        .input("x", DataType::Float, &["2"])
        .initializer_f32("w", &[2], &[1.0, 2.0])
        .initializer_f32("unused", &[1], &[0.0])
        .node("Mul", &["x", "w"], &["a"])
        .node("Relu", &["a"], &["b"])
        .node("Neg", &["a"], &["dead"])
        .output("b", DataType::Float, &["2"])
        .build()
}

#[test]
fn use_def_index_knows_producers_and_consumers() {
    let g = Graph::new(chain());
    assert_eq!(g.producer("a").unwrap().op_type(), "Mul");
    assert_eq!(g.consumers("a"), &[1, 2]);
    assert!(g.producer("x").is_none());
    assert_eq!(g.consumers("w"), &[0]);
}

#[test]
fn dead_nodes_and_unused_initializers_are_found() {
    let g = Graph::new(chain());
    assert_eq!(g.dead_nodes(), vec![2]);
    assert_eq!(g.unused_initializers(), vec!["unused".to_string()]);
}

#[test]
fn topological_sort_fixes_order_and_keeps_sorted_graphs() {
    let mut proto = chain();
    proto.node.swap(0, 1);
    let mut g = Graph::new(proto);
    assert!(g.sort_topologically().unwrap());
    let ops: Vec<_> = g.nodes().iter().map(|n| n.op_type().to_string()).collect();
    assert_eq!(ops, ["Mul", "Relu", "Neg"]);
    assert!(!g.sort_topologically().unwrap());
}

#[test]
fn a_cycle_is_an_error_naming_its_nodes() {
    let g = GraphBuilder::new("g")
        .input("x", DataType::Float, &["1"])
        .node("Add", &["x", "c"], &["b"])
        .name_last("first")
        .node("Relu", &["b"], &["c"])
        .name_last("second")
        .output("c", DataType::Float, &["1"])
        .build();
    let err = check_graph(&g, &HashSet::new()).unwrap_err();
    assert!(matches!(err, GraphError::Cycle { .. }));
    assert!(err.to_string().contains("'first'"), "{err}");
}

#[test]
fn undefined_inputs_and_duplicate_outputs_are_errors() {
    let g = GraphBuilder::new("g")
        .input("x", DataType::Float, &["1"])
        .node("Relu", &["nope"], &["y"])
        .output("y", DataType::Float, &["1"])
        .build();
    let err = check_graph(&g, &HashSet::new()).unwrap_err().to_string();
    assert!(err.contains("'nope'") && err.contains("Relu"), "{err}");

    let g = GraphBuilder::new("g")
        .input("x", DataType::Float, &["1"])
        .node("Relu", &["x"], &["y"])
        .node("Neg", &["x"], &["y"])
        .output("y", DataType::Float, &["1"])
        .build();
    let err = check_graph(&g, &HashSet::new()).unwrap_err();
    assert!(
        matches!(err, GraphError::DuplicateDefinition { .. }),
        "{err}"
    );
}

fn if_model() -> GraphProto {
    let then_branch = GraphBuilder::new("then")
        .node("Relu", &["a"], &["t"])
        .output("t", DataType::Float, &["2"])
        .build();
    let else_branch = GraphBuilder::new("else")
        .node("Neg", &["a"], &["e"])
        .output("e", DataType::Float, &["2"])
        .build();
    GraphBuilder::new("g")
        .input("cond", DataType::Bool, &[])
        .input("x", DataType::Float, &["2"])
        .node("Abs", &["x"], &["a"])
        .node("If", &["cond"], &["y"])
        .attr(attr_graph("then_branch", then_branch))
        .attr(attr_graph("else_branch", else_branch))
        .output("y", DataType::Float, &["2"])
        .build()
}

#[test]
fn values_captured_by_subgraphs_are_uses() {
    let g = Graph::new(if_model());
    assert_eq!(g.consumers("a"), &[1]);
    assert!(g.dead_nodes().is_empty());
    check_graph(g.proto(), &HashSet::new()).unwrap();
    // a body reading a value nobody defines is caught in the subgraph
    let mut broken = if_model();
    broken.node[1].attribute[0].g.as_mut().unwrap().node[0].input[0] = "ghost".into();
    let err = check_graph(&broken, &HashSet::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("'then'") && err.contains("'ghost'"), "{err}");
}

#[test]
fn replace_all_uses_reaches_into_subgraphs_but_not_graph_outputs() {
    let mut g = Graph::new(if_model());
    g.proto_mut().node.insert(
        0,
        NodeProto {
            op_type: Some("Identity".into()),
            input: vec!["x".into()],
            output: vec!["x2".into()],
            ..Default::default()
        },
    );
    assert_eq!(g.replace_all_uses("a", "x2"), 2);
    assert_eq!(g.consumers("x2").len(), 1);
    assert_eq!(g.proto().output[0].name(), "y");
}

#[test]
fn constants_come_from_initializers_and_constant_nodes() {
    let proto = GraphBuilder::new("g")
        .input("x", DataType::Float, &["2"])
        .initializer_f32("w", &[2], &[1.0, 2.0])
        .node("Constant", &[], &["c"])
        .attr(attr_tensor("value", tensor_f32("", &[1], &[3.0])))
        .node("Add", &["x", "c"], &["y"])
        .output("y", DataType::Float, &["2"])
        .build();
    let g = Graph::new(proto);
    assert_eq!(g.constant("w").unwrap().name(), "w");
    let c = g.constant("c").unwrap();
    assert_eq!(c.name(), "c");
    assert!(g.constant("x").is_none());
    assert!(g.constant("y").is_none());
}

#[test]
fn fresh_names_do_not_collide() {
    let mut g = Graph::new(chain());
    assert_eq!(g.fresh_name("w"), "w_1");
    let name = g.add_initializer("a", tensor_f32("", &[1], &[0.0]));
    assert_eq!(name, "a_1");
    assert!(g.initializer("a_1").is_some());
    // names handed out for nodes not yet in the graph are not handed out again
    assert_eq!(g.fresh_name("pending"), "pending");
    assert_eq!(g.fresh_name("pending"), "pending_1");
    // names the proto takes after the first fresh one, edited directly, are not handed out
    g.proto_mut().node.push(crate::onnx::NodeProto {
        op_type: Some("Relu".into()),
        name: Some("relu".into()),
        input: vec!["x".into()],
        output: vec!["pending_2".into()],
        ..Default::default()
    });
    assert_eq!(g.fresh_name("pending"), "pending_3");
    // nor node names
    assert_eq!(g.fresh_name("relu"), "relu_1");
}

/// A new name in a subgraph took only the subgraph's own names into account, so it could
/// shadow a value of an enclosing graph that the body reads.
#[test]
fn fresh_names_in_a_subgraph_do_not_shadow_outer_values() {
    let body = crate::graph::GraphBuilder::new("body")
        .node("Relu", &["outer_w"], &["y"])
        .output("y", DataType::Float, &[])
        .build();
    let outer: HashSet<String> = ["outer_w".to_string(), "w".to_string()].into();
    let g = Graph::in_scope(body, outer);
    assert_eq!(g.fresh_name("w"), "w_1");
    assert_eq!(Graph::new(GraphProto::default()).fresh_name("w"), "w");
}
