//! Runs passes to a fixed point over the main graph and every subgraph, re-checking the graph after
//! each pass, and reports what each pass changed and how long it took.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::graph::{Graph, GraphError, check_graph, subgraphs_mut};
use crate::onnx::Model;
use crate::onnx::proto::GraphProto;

use super::{Pass, PassContext, SkippedFold};

/// A pass broke something, or could not run. Names the pass (and node where known).
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("pass {pass} left an invalid graph: {error}")]
    Broke {
        pass: &'static str,
        error: GraphError,
    },
    #[error("pass {pass} changed the graph's interface: {what}")]
    Interface { pass: &'static str, what: String },
    #[error("pass {pass} failed at node {node}: {what}")]
    Failed {
        pass: &'static str,
        node: String,
        what: String,
    },
}

/// How one pass did over the whole run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PassStats {
    pub applied: usize,
    pub seconds: f64,
}

/// A summary of a model's size.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelSize {
    pub nodes: usize,
    pub initializers: usize,
    pub parameters: u64,
    pub op_types: BTreeMap<String, usize>,
}

/// What an optimization run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OptimizeReport {
    pub passes: Vec<String>,
    pub iterations: usize,
    pub before: ModelSize,
    pub after: ModelSize,
    pub per_pass: BTreeMap<String, PassStats>,
    /// Type and shape inference between passes (part of what the user waits for).
    pub inference: InferenceStats,
    pub skipped_folds: Vec<SkippedFold>,
}

/// What keeping types and shapes current cost over the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InferenceStats {
    pub refreshes: usize,
    pub seconds: f64,
    /// Nodes whose facts were computed, and nodes whose facts were reused unchanged.
    pub nodes_computed: usize,
    pub nodes_reused: usize,
}

#[derive(Debug, Clone)]
pub struct OptimizeOptions {
    pub fold_size_limit: usize,
    /// Folds may grow the model by at most this fraction of its parameter bytes (plus 64 KiB).
    pub fold_growth: f64,
    pub max_iterations: usize,
}

impl Default for OptimizeOptions {
    fn default() -> Self {
        OptimizeOptions {
            fold_size_limit: 16 << 20,
            fold_growth: 0.05,
            max_iterations: 10,
        }
    }
}

pub fn model_size(model: &Model) -> ModelSize {
    let Ok(info) = crate::inspect::inspect(model) else {
        return ModelSize::default();
    };
    ModelSize {
        nodes: info.nodes.total,
        initializers: info.parameters.initializers,
        parameters: info.parameters.count,
        op_types: info.op_types,
    }
}

/// The interface a pass must keep: input and output names and types.
fn interface(g: &GraphProto) -> Vec<(String, Option<crate::onnx::proto::TypeProto>)> {
    g.input
        .iter()
        .chain(&g.output)
        .map(|v| (v.name().to_string(), v.r#type.clone()))
        .collect()
}

/// Runs `passes` on `model` until none changes anything (or `max_iterations`).
pub fn optimize(
    model: &mut Model,
    passes: &[&'static dyn Pass],
    options: &OptimizeOptions,
) -> Result<OptimizeReport, PassError> {
    optimize_with_progress(model, passes, options, &crate::progress::NoProgress)
}

/// [`optimize`], reporting each pass run of each iteration to `progress`.
pub fn optimize_with_progress(
    model: &mut Model,
    passes: &[&'static dyn Pass],
    options: &OptimizeOptions,
    progress: &dyn crate::progress::Progress,
) -> Result<OptimizeReport, PassError> {
    let before = model_size(model);
    let param_bytes = crate::inspect::inspect(model)
        .map(|i| i.parameters.bytes)
        .unwrap_or(0);
    let budget = (param_bytes as f64 * options.fold_growth) as u64 + (64 << 10);
    let mut ctx = PassContext::new(model, options.fold_size_limit, budget);
    let mut per_pass: BTreeMap<String, PassStats> = passes
        .iter()
        .map(|p| (p.name().to_string(), PassStats::default()))
        .collect();
    let mut iterations = 0;
    let expected_interface = interface(model.graph());
    let mut stale = true;
    let mut inference = InferenceStats::default();
    while iterations < options.max_iterations {
        iterations += 1;
        let mut changed = 0;
        progress.on_start(&format!("passes #{iterations}"), passes.len() as u64);
        for pass in passes {
            progress.on_advance(1);
            if stale {
                let start = Instant::now();
                ctx.facts.refresh(model);
                inference.refreshes += 1;
                inference.seconds += start.elapsed().as_secs_f64();
                inference.nodes_computed += ctx.facts.computed;
                inference.nodes_reused += ctx.facts.reused;
                stale = false;
            }
            let start = Instant::now();
            let graph = std::mem::take(model.graph_mut());
            let mut graph = Graph::new(graph);
            let result = run_recursive(*pass, &mut graph, &mut ctx, &HashSet::new());
            *model.graph_mut() = graph.into_proto();
            let n = result?;
            let stats = per_pass.get_mut(pass.name()).expect("registered above");
            stats.applied += n;
            stats.seconds += start.elapsed().as_secs_f64();
            if n > 0 {
                check_graph(model.graph(), &HashSet::new()).map_err(|error| PassError::Broke {
                    pass: pass.name(),
                    error,
                })?;
                if interface(model.graph()) != expected_interface {
                    return Err(PassError::Interface {
                        pass: pass.name(),
                        what: "graph inputs or outputs differ".into(),
                    });
                }
                changed += n;
                stale = true;
            }
        }
        progress.on_finish();
        if changed == 0 {
            break;
        }
    }
    drop_stale_value_info(model.graph_mut());
    if model.proto.ir_version() < 4 {
        list_initializers_as_inputs(model.graph_mut());
    }
    Ok(OptimizeReport {
        passes: passes.iter().map(|p| p.name().to_string()).collect(),
        iterations,
        before,
        after: model_size(model),
        per_pass,
        inference,
        skipped_folds: ctx.skipped_folds,
    })
}

/// Applies a pass to a graph, then to the graphs inside its nodes (whose enclosing values, in
/// `outer`, they may read but not redefine).
fn run_recursive(
    pass: &dyn Pass,
    graph: &mut Graph,
    ctx: &mut PassContext,
    outer: &HashSet<String>,
) -> Result<usize, PassError> {
    let mut n = pass.run(graph, ctx)?;
    let has_subgraphs = graph
        .nodes()
        .iter()
        .any(|node| crate::graph::subgraphs(node).next().is_some());
    if has_subgraphs {
        let mut scope = outer.clone();
        scope.extend(crate::graph::defined_names(graph.proto()));
        for node in graph.proto_mut().node.iter_mut() {
            for sub in subgraphs_mut(node) {
                let mut sg = Graph::in_scope(std::mem::take(sub), scope.clone());
                let result = run_recursive(pass, &mut sg, ctx, &scope);
                *sub = sg.into_proto();
                n += result?;
            }
        }
    }
    Ok(n)
}

/// IR versions before 4 require every initializer to be listed as a graph input too; passes add
/// initializers (folded constants, fused weights) without knowing the IR version.
fn list_initializers_as_inputs(g: &mut GraphProto) {
    use crate::onnx::proto::{
        TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
    };
    let listed: HashSet<String> = g.input.iter().map(|i| i.name().to_string()).collect();
    let missing: Vec<ValueInfoProto> = g
        .initializer
        .iter()
        .filter(|t| !listed.contains(t.name()))
        .map(|t| ValueInfoProto {
            name: Some(t.name().to_string()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(t.data_type()),
                    shape: Some(TensorShapeProto {
                        dim: t
                            .dims
                            .iter()
                            .map(|&d| tensor_shape_proto::Dimension {
                                value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                                denotation: None,
                            })
                            .collect(),
                    }),
                })),
                denotation: None,
            }),
            ..Default::default()
        })
        .collect();
    g.input.extend(missing);
}

/// value_info entries of values the passes removed would only mislead.
fn drop_stale_value_info(g: &mut GraphProto) {
    let live: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .collect();
    g.value_info.retain(|v| live.contains(v.name()));
}
