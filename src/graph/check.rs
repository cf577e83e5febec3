//! Structural checks every stage relies on: each node input is produced exactly once somewhere in
//! scope (graph input, initializer, node output, or an outer graph for subgraphs), graph outputs
//! exist, and the nodes form no cycle. Errors name the graph, node, op and value.

use std::collections::{HashMap, HashSet};

use crate::onnx::proto::{GraphProto, NodeProto};
use crate::onnx::schema;

use super::{node_label, subgraphs, topological_order};

/// A broken graph invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error(
        "graph '{graph}': node {node} reads '{value}', which no node, input or initializer produces"
    )]
    UndefinedInput {
        graph: String,
        node: String,
        value: String,
    },
    #[error("graph '{graph}': '{value}' is defined twice ({first} and {second})")]
    DuplicateDefinition {
        graph: String,
        value: String,
        first: String,
        second: String,
    },
    #[error("graph '{graph}': output '{value}' is not produced by any node, input or initializer")]
    UndefinedOutput { graph: String, value: String },
    #[error("graph '{graph}': the nodes form a cycle through {nodes}")]
    Cycle { graph: String, nodes: String },
    #[error("graph '{graph}': a value has an empty name ({place})")]
    EmptyName { graph: String, place: String },
}

/// Checks `graph` and, recursively, its subgraphs. `outer` holds the names subgraphs may capture.
pub fn check_graph<'g>(graph: &'g GraphProto, outer: &HashSet<String>) -> Result<(), GraphError> {
    let gname = graph.name().to_string();
    let mut defined: HashMap<&str, String> = HashMap::new();
    let mut define = |name: &'g str, by: String| -> Result<(), GraphError> {
        if name.is_empty() {
            return Ok(()); // an omitted optional output
        }
        if let Some(first) = defined.insert(name, by.clone()) {
            // an initializer listed again as a graph input is the IR < 4 convention, not a clash
            if !(first == "a graph input" && by == "an initializer") {
                return Err(GraphError::DuplicateDefinition {
                    graph: gname.clone(),
                    value: name.to_string(),
                    first,
                    second: by,
                });
            }
        }
        Ok(())
    };
    for i in &graph.input {
        if i.name().is_empty() {
            return Err(GraphError::EmptyName {
                graph: gname,
                place: "a graph input".into(),
            });
        }
        define(i.name(), "a graph input".into())?;
    }
    for t in &graph.initializer {
        define(t.name(), "an initializer".into())?;
    }
    for s in &graph.sparse_initializer {
        if let Some(v) = &s.values {
            define(v.name(), "a sparse initializer".into())?;
        }
    }
    for (i, n) in graph.node.iter().enumerate() {
        for o in &n.output {
            define(o, format!("node {}", node_label(n, i)))?;
        }
    }
    let visible = |name: &str| defined.contains_key(name) || outer.contains(name);
    for (i, n) in graph.node.iter().enumerate() {
        for input in n.input.iter().filter(|x| !x.is_empty()) {
            if !visible(input) {
                return Err(GraphError::UndefinedInput {
                    graph: gname,
                    node: node_label(n, i),
                    value: input.clone(),
                });
            }
        }
    }
    for o in &graph.output {
        if !visible(o.name()) {
            return Err(GraphError::UndefinedOutput {
                graph: gname,
                value: o.name().to_string(),
            });
        }
    }
    topological_order(graph)?;
    check_subgraphs(graph, outer, &defined)
}

fn check_subgraphs(
    graph: &GraphProto,
    outer: &HashSet<String>,
    defined: &HashMap<&str, String>,
) -> Result<(), GraphError> {
    let has_subgraphs = graph
        .node
        .iter()
        .any(|n: &NodeProto| subgraphs(n).next().is_some());
    if !has_subgraphs {
        return Ok(());
    }
    let mut scope = outer.clone();
    scope.extend(defined.keys().map(|k| k.to_string()));
    for n in &graph.node {
        for g in subgraphs(n) {
            check_graph(g, &scope)?;
        }
    }
    Ok(())
}

/// A model that cannot be used: its graph is broken or a weight tensor cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Tensor(#[from] crate::onnx::OnnxError),
    #[error("graph '{graph}': node {node} {violation}")]
    Node {
        graph: String,
        node: String,
        violation: Box<crate::onnx::schema::SchemaViolation>,
    },
}

/// Checks a whole model before any command works on it: the graph structure (see
/// [`check_graph`]) and every initializer and `Constant` tensor, which must have a known element
/// type and as much data as its shape needs (external data included, confined to the model dir),
/// and every node of a standard domain against its operator's schema at the imported opset
/// (input and output counts, required inputs, attribute types), so that later stages may index
/// a node's required inputs without checking.
pub fn check_model(model: &crate::onnx::Model) -> Result<(), ModelError> {
    check_graph(model.graph(), &HashSet::new())?;
    check_nodes(model, model.graph())?;
    check_tensors(model, model.graph())
}

fn check_nodes(model: &crate::onnx::Model, g: &GraphProto) -> Result<(), ModelError> {
    for (i, n) in g.node.iter().enumerate() {
        let local_function = model.proto.functions.iter().any(|f| {
            f.name() == n.op_type()
                && schema::normalize_domain(f.domain()) == schema::normalize_domain(n.domain())
        });
        let found = model
            .opset(n.domain())
            .filter(|_| !local_function)
            .and_then(|v| schema::schema(n.domain(), n.op_type(), v));
        if let Some(s) = found {
            schema::check_node(n, s).map_err(|violation| ModelError::Node {
                graph: g.name().to_string(),
                node: node_label(n, i),
                violation: Box::new(violation),
            })?;
        }
        for sg in subgraphs(n) {
            check_nodes(model, sg)?;
        }
    }
    Ok(())
}

fn check_tensors(model: &crate::onnx::Model, g: &GraphProto) -> Result<(), ModelError> {
    for t in &g.initializer {
        model.tensor_data(t)?;
    }
    for n in &g.node {
        if let Some(t) = super::constant_tensor(n) {
            let mut t = t;
            if t.name().is_empty() {
                t.name = n.output.first().cloned();
            }
            model.tensor_data(&t)?;
        }
        for sg in subgraphs(n) {
            check_tensors(model, sg)?;
        }
    }
    Ok(())
}
