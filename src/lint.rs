//! Lint findings: things in a model that are not errors but that a deployment engineer wants to
//! know (unused weights, values nobody uses, ops the declared opsets do not provide).

use std::collections::HashSet;

use serde::Serialize;

use crate::graph::{Graph, node_label};
use crate::onnx::Model;
use crate::onnx::proto::GraphProto;
use crate::onnx::schema;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// A stable identifier of the kind of finding (`unused_initializer`, ...).
    pub kind: &'static str,
    /// The graph it was found in (`main` for the top level).
    pub graph: String,
    /// The value, initializer or node it is about.
    pub subject: String,
    pub message: String,
}

/// Lints the model's main graph and its subgraphs.
pub fn lint(model: &Model) -> Vec<Finding> {
    let mut findings = Vec::new();
    lint_graph(model, model.graph(), "main", &mut findings);
    for r in crate::infer::Inference::of_model(model).output_contradictions(model) {
        findings.push(Finding {
            kind: "output_shape_contradicted",
            graph: "main".into(),
            subject: r.output.clone(),
            message: format!(
                "output '{}' is declared {} but the graph computes {}: onnxruntime warns on every run, and a checker that can infer the shape refuses the model; convert and optimize declare what it computes",
                r.output, r.declared, r.computed
            ),
        });
    }
    findings
}

fn lint_graph(model: &Model, g: &GraphProto, label: &str, out: &mut Vec<Finding>) {
    let graph = Graph::new(g.clone());
    let finding = |kind, subject: String, message: String| Finding {
        kind,
        graph: label.to_string(),
        subject,
        message,
    };
    // a body's inputs are its own parameters: only the main graph's are the caller's
    let overridable = match label {
        "main" => overridable_initializers(g),
        _ => Vec::new(),
    };
    if let Some(first) = overridable.first() {
        let which = match overridable.len() {
            1 => format!("initializer '{first}' is"),
            n => format!("{n} initializers ('{first}', ...) are"),
        };
        out.push(finding(
            "overridable_initializers",
            first.clone(),
            format!(
                "{which} also a graph input (as IR 3 listed every weight), which a caller may override: no pass folds it and no quantization takes it as a weight; `--freeze-initializers` (convert or optimize) makes such initializers constants"
            ),
        ));
    }
    for name in graph.unused_initializers() {
        out.push(finding(
            "unused_initializer",
            name.clone(),
            format!("initializer '{name}' is never read"),
        ));
    }
    for i in graph.dead_nodes() {
        let node = &g.node[i];
        let subject = node_label(node, i);
        out.push(finding(
            "dead_node",
            subject.clone(),
            format!("node {subject} contributes to no graph output"),
        ));
    }
    let produced: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .chain(g.input.iter().map(|i| i.name()))
        .chain(g.initializer.iter().map(|t| t.name()))
        .collect();
    for vi in &g.value_info {
        if !produced.contains(vi.name()) {
            out.push(finding(
                "dangling_value_info",
                vi.name().to_string(),
                format!(
                    "value_info '{}' describes a value nothing produces",
                    vi.name()
                ),
            ));
        }
    }
    for (i, node) in g.node.iter().enumerate() {
        if let Some(msg) = opset_problem(model, node.domain(), node.op_type()) {
            let subject = node_label(node, i);
            out.push(finding(
                "op_outside_opset",
                subject.clone(),
                format!("node {subject}: {msg}"),
            ));
        }
        for (k, sg) in crate::graph::subgraphs(node).enumerate() {
            let name = match sg.name() {
                "" => format!("{label}/{}#{k}", node_label(node, i)),
                n => n.to_string(),
            };
            lint_graph(model, sg, &name, out);
        }
    }
}

/// The initializers of `g` that a graph input of the same name overrides, in file order.
pub fn overridable_initializers(g: &GraphProto) -> Vec<String> {
    let inputs: HashSet<&str> = g.input.iter().map(|i| i.name()).collect();
    g.initializer
        .iter()
        .map(|t| t.name())
        .filter(|n| inputs.contains(n))
        .map(str::to_string)
        .collect()
}

/// Drops from `model`'s graph inputs those an initializer also defines, making the initializers
/// constants (IR 4 and later allow initializers that are not inputs; an older IR version is
/// raised to 4). Returns their number.
pub fn freeze_initializers(model: &mut Model) -> usize {
    let frozen: HashSet<String> = overridable_initializers(model.graph())
        .into_iter()
        .collect();
    if frozen.is_empty() {
        return 0;
    }
    model
        .graph_mut()
        .input
        .retain(|i| !frozen.contains(i.name()));
    model.proto.ir_version = Some(model.proto.ir_version().max(4));
    frozen.len()
}

/// Why an op is not provided by the model's opset imports, if it is not.
fn opset_problem(model: &Model, domain: &str, op: &str) -> Option<String> {
    let shown = if domain.is_empty() { "ai.onnx" } else { domain };
    let Some(version) = model.opset(domain) else {
        if model
            .proto
            .functions
            .iter()
            .any(|f| f.domain() == domain && f.name() == op)
        {
            return None; // a model-local function with its own domain
        }
        return Some(format!(
            "{shown}::{op} but the model imports no '{shown}' opset"
        ));
    };
    if !schema::is_specified_domain(domain) {
        return None; // other domains' op lists are not known here
    }
    if model.proto.functions.iter().any(|f| {
        f.name() == op && schema::normalize_domain(f.domain()) == schema::normalize_domain(domain)
    }) {
        return None;
    }
    match schema::since_version(domain, op) {
        None => Some(format!("{op} is not an operator of the {shown} domain")),
        Some(since) if since > version => Some(format!(
            "{op} exists since opset {since}, the model imports opset {version}"
        )),
        Some(_) => None,
    }
}
