//! `fold_constants`: replaces nodes whose inputs are all constant by initializers holding their
//! results.
//!
//! ```text
//! Constant -> c;  Shape(x:[2,3]) -> s;  Gather(s, 1) -> g      =>      initializers c, s, g
//! ```
//! `Constant` nodes become initializers as they are. A node whose every output inference knows
//! as numbers (shape arithmetic: `Gather(Shape(x), 1)` where x is `[batch, 3, H, W]` is 3, even
//! with `batch` symbolic) becomes an initializer without evaluating anything. Other nodes are
//! evaluated by tract (onnxruntime, when installed, where tract cannot) on their constant inputs,
//! but only after inference has predicted the size of every result: a result whose size is
//! unknown, or over `--fold-size-limit` bytes, is refused before anything is allocated. Refuses also: random ops, nodes with subgraphs, non-default
//! domains, nodes producing graph outputs, results tract types differently from ONNX, and folds
//! that would grow the model past its budget (a few percent): each refusal is reported. IR < 4
//! models are left alone (their initializers must also be graph inputs).

use bytes::Bytes;

use super::rewrite::is_op;
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::{Graph, constant_tensor, subgraphs};
use crate::onnx::proto::{GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use crate::onnx::{DataType, Model};
use crate::run::tensor_io::to_proto;

pub struct FoldConstants;

const NEVER: &[&str] = &[
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "If",
    "Loop",
    "Scan",
    "SequenceMap",
];

/// The outputs of a node that inference knows as numbers, as initializers.
fn known_values(node: &NodeProto, ctx: &PassContext) -> Option<Vec<TensorProto>> {
    node.output
        .iter()
        .filter(|o| !o.is_empty())
        .map(|o| {
            let values: Vec<i64> = ctx
                .facts
                .value(o)?
                .iter()
                .map(|d| d.as_const())
                .collect::<Option<_>>()?;
            let dims = ctx.static_shape(o)?;
            let raw: Vec<u8> = match ctx.facts.elem_type(o)? {
                DataType::Int64 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                DataType::Int32 => values
                    .iter()
                    .map(|&v| i32::try_from(v).ok().map(i32::to_le_bytes))
                    .collect::<Option<Vec<_>>>()?
                    .concat(),
                DataType::Bool => values.iter().map(|&v| u8::from(v != 0)).collect(),
                _ => return None,
            };
            Some(TensorProto {
                name: Some(o.clone()),
                data_type: ctx.elem_type(o),
                dims,
                raw_data: Some(Bytes::from(raw)),
                ..Default::default()
            })
        })
        .collect()
}

/// The bytes of every result, predicted from inferred types and shapes before evaluating; an
/// error says why a fold must not be tried.
fn predicted_bytes(node: &NodeProto, ctx: &PassContext) -> Result<u64, String> {
    let mut total = 0u64;
    for o in node.output.iter().filter(|o| !o.is_empty()) {
        let (Some(dims), Some(dtype)) = (ctx.static_shape(o), ctx.facts.elem_type(o)) else {
            return Err(format!(
                "the size of '{o}' is not known before evaluating it"
            ));
        };
        let count = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?));
        let bytes = count
            .and_then(|c| dtype.raw_len(usize::try_from(c).ok()?))
            .ok_or_else(|| format!("'{o}' of shape {dims:?} is too large to hold"))?;
        if bytes > ctx.fold_size_limit {
            return Err(format!(
                "its result '{o}' would be {bytes} bytes, over the fold size limit of {} bytes",
                ctx.fold_size_limit
            ));
        }
        total = total.saturating_add(bytes as u64);
    }
    Ok(total)
}

/// Evaluates one node on its constant inputs with tract (onnxruntime where tract cannot).
fn evaluate(
    graph: &Graph,
    ctx: &PassContext,
    node: &NodeProto,
) -> Result<Vec<TensorProto>, String> {
    let mut initializer = Vec::new();
    for input in node.input.iter().filter(|i| !i.is_empty()) {
        if initializer.iter().any(|t: &TensorProto| t.name() == input) {
            continue;
        }
        let mut t = graph
            .constant(input)
            .ok_or("an input is not constant")?
            .into_owned();
        t.name = Some(input.clone());
        initializer.push(t);
    }
    let outputs: Vec<&String> = node.output.iter().filter(|o| !o.is_empty()).collect();
    let proto = ModelProto {
        ir_version: Some(ctx.ir_version),
        opset_import: ctx.opsets.clone(),
        graph: Some(GraphProto {
            name: Some("fold".into()),
            node: vec![node.clone()],
            initializer,
            output: outputs
                .iter()
                .map(|o| ValueInfoProto {
                    name: Some(o.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let model = Model::from_proto(proto, ctx.dir().to_path_buf());
    // tract, or onnxruntime (when installed) for what tract cannot evaluate
    let (_, mut results) =
        crate::run::run_all(&model, crate::run::EngineChoice::Auto, &[&[]], || {})
            .map_err(|e| e.to_string())?;
    let results = results.pop().unwrap_or_default();
    results
        .iter()
        .map(|r| to_proto(&r.name, &r.tensor).map_err(|e| e.to_string()))
        .collect()
}

fn bytes_of(ctx: &PassContext, t: &TensorProto) -> u64 {
    ctx.tensor_data(t)
        .ok()
        .and_then(|d| d.to_raw().ok())
        .map_or(0, |b| b.len() as u64)
}

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold_constants"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fold
    }
    fn description(&self) -> &'static str {
        "evaluate nodes whose inputs are all constant (shape arithmetic included) into initializers"
    }
    fn details(&self) -> &'static str {
        "Constant nodes become initializers; nodes whose outputs inference knows as numbers \
         (shape arithmetic, even on symbolic dims: `Shape(x)[1]` of `[batch, 3, H, W]` is 3) \
         become initializers without evaluating anything; other nodes with all-constant inputs \
         are evaluated by tract, after inference predicted each result's size (unknown or over \
         `--fold-size-limit`, default 16 MiB: refused before allocating). The model may grow by \
         at most 5% (+64 KiB); each skipped fold is reported with its reason"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        if ctx.ir_version < 4 {
            return Ok(0);
        }
        let order = graph
            .topological_order()
            .map_err(|error| PassError::Broke {
                pass: "fold_constants",
                error,
            })?;
        let mut folded = Vec::new();
        for i in order {
            let node = graph.nodes()[i].clone();
            let label = crate::graph::node_label(&node, i);
            if !matches!(node.domain(), "" | "ai.onnx")
                || NEVER.contains(&node.op_type())
                || subgraphs(&node).next().is_some()
                || node.output.iter().any(|o| graph.is_output(o))
            {
                continue;
            }
            let results = if let Some(mut t) = constant_tensor(&node) {
                t.name = node.output.first().cloned();
                vec![t]
            } else if let Some(r) = known_values(&node, ctx) {
                r
            } else {
                let inputs: Vec<&String> = node.input.iter().filter(|i| !i.is_empty()).collect();
                if inputs.is_empty() || !inputs.iter().all(|i| graph.constant(i).is_some()) {
                    continue;
                }
                if let Err(reason) = predicted_bytes(&node, ctx) {
                    ctx.skip_fold(&label, node.op_type(), reason);
                    continue;
                }
                match evaluate(graph, ctx, &node) {
                    Ok(r) => r,
                    Err(e) => {
                        ctx.skip_fold(
                            &label,
                            node.op_type(),
                            format!("it cannot be evaluated: {e}"),
                        );
                        continue;
                    }
                }
            };
            if let Some(reason) = refuse(graph, ctx, &node, &results) {
                ctx.skip_fold(&label, node.op_type(), reason);
                continue;
            }
            graph.proto_mut().initializer.extend(results);
            folded.push(i);
        }
        graph.remove_nodes(&folded);
        Ok(folded.len())
    }
}

/// Why a computed fold must not be applied, if it must not.
fn refuse(
    graph: &Graph,
    ctx: &mut PassContext,
    node: &NodeProto,
    results: &[TensorProto],
) -> Option<String> {
    for r in results {
        if let Some(want) = ctx.elem_type(r.name())
            && want != r.data_type()
        {
            return Some(format!(
                "the result is type {} where ONNX says {want}",
                r.data_type()
            ));
        }
    }
    let new: u64 = results.iter().map(|r| bytes_of(ctx, r)).sum();
    if results
        .iter()
        .any(|r| bytes_of(ctx, r) as usize > ctx.fold_size_limit)
    {
        return Some(format!(
            "its result of {new} bytes is over the fold size limit of {} bytes",
            ctx.fold_size_limit
        ));
    }
    if is_op(node, "Constant") {
        return None; // moves a tensor, adds nothing
    }
    let inputs: u64 = node
        .input
        .iter()
        .filter_map(|i| graph.constant(i))
        .map(|t| bytes_of(ctx, &t))
        .sum();
    let growth = new.saturating_sub(inputs);
    if growth > ctx.fold_budget {
        return Some(format!(
            "it would grow the model by {growth} bytes, past the remaining budget of {}",
            ctx.fold_budget
        ));
    }
    ctx.fold_budget -= growth;
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::graph::builder::{attr_int, attr_tensor, tensor_f32};
    use crate::passes::testing::{max_difference, ops, run_pass};

    #[test]
    fn constant_chains_and_shape_arithmetic_fold() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["2", "3"])
            .node("Constant", &[], &["c"])
            .attr(attr_tensor("value", tensor_f32("", &[3], &[1.0, 2.0, 3.0])))
            .node("Exp", &["c"], &["e"])
            .node("Shape", &["x"], &["s"])
            .initializer_i64("idx", &[], &[1])
            .node("Gather", &["s", "idx"], &["dim"])
            .initializer_i64("axes", &[1], &[0])
            .node("Unsqueeze", &["dim", "axes"], &["dim1"])
            .initializer_i64("minus1", &[1], &[-1])
            .node("Concat", &["minus1", "dim1"], &["shape"])
            .attr(attr_int("axis", 0))
            .node("Reshape", &["x", "shape"], &["r"])
            .node("Mul", &["r", "e"], &["y"])
            .output("y", DataType::Float, &["2", "3"])
            .build();
        let (after, n) = run_pass(&FoldConstants, &m);
        assert_eq!(n, 6);
        assert_eq!(ops(&after), ["Reshape", "Mul"]);
        assert_eq!(max_difference(&m, &after), 0.0);
    }

    #[test]
    fn symbolic_shapes_and_random_ops_do_not_fold() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["N", "3"])
            .node("Shape", &["x"], &["s"])
            .node("RandomUniform", &[], &["r"])
            .attr(crate::graph::builder::attr_ints("shape", &[2]))
            .node("Cast", &["s"], &["sf"])
            .attr(attr_int("to", 1))
            .node("Add", &["sf", "r"], &["y"])
            .output("y", DataType::Float, &["2"])
            .build();
        assert_eq!(run_pass(&FoldConstants, &m).1, 0);
    }

    #[test]
    fn folds_that_bloat_the_model_are_skipped_and_reported() {
        // Expand of a 1-element constant to 64 MiB: over the default 16 MiB per-tensor limit
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["1"])
            .initializer_f32("one", &[1], &[1.0])
            .initializer_i64("big", &[1], &[16 << 20])
            .node("Expand", &["one", "big"], &["e"])
            .node("ReduceSum", &["e"], &["s"])
            .node("Add", &["x", "s"], &["y"])
            .output("y", DataType::Float, &["1"])
            .build();
        let mut model = Model::from_proto(m, std::env::temp_dir());
        let report =
            crate::passes::optimize(&mut model, &[&FoldConstants], &Default::default()).unwrap();
        assert_eq!(report.per_pass["fold_constants"].applied, 0);
        assert!(
            report.skipped_folds[0].reason.contains("fold size limit"),
            "{:?}",
            report.skipped_folds
        );
    }

    /// tract evaluated a node before its result's size was checked: a ConstantOfShape of 2^36
    /// floats (256 GiB) aborted the process. The size now comes from inference first.
    #[test]
    fn a_constant_of_shape_bomb_is_refused_before_evaluating() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["1"])
            .initializer_i64("huge", &[2], &[1 << 18, 1 << 18])
            .node("ConstantOfShape", &["huge"], &["bomb"])
            .node("ReduceSum", &["bomb"], &["s"])
            .node("Add", &["x", "s"], &["y"])
            .output("y", DataType::Float, &["1"])
            .build();
        let mut model = Model::from_proto(m, std::env::temp_dir());
        let report =
            crate::passes::optimize(&mut model, &[&FoldConstants], &Default::default()).unwrap();
        assert_eq!(report.per_pass["fold_constants"].applied, 0);
        let reason = &report.skipped_folds[0].reason;
        assert!(reason.contains("274877906944 bytes"), "{reason}");
    }

    #[test]
    fn shape_arithmetic_on_symbolic_dims_folds_what_is_known() {
        // Gather(Shape(x), 1) of x: [N, 3] is 3 whatever N is
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["N", "3"])
            .node("Shape", &["x"], &["s"])
            .initializer_i64("one", &[], &[1])
            .node("Gather", &["s", "one"], &["c"])
            .node("Cast", &["c"], &["cf"])
            .attr(attr_int("to", 1))
            .node("Mul", &["x", "cf"], &["y"])
            .output("y", DataType::Float, &["N", "3"])
            .build();
        let (after, n) = run_pass(&FoldConstants, &m);
        assert!(n >= 2, "{n}");
        assert!(
            !ops(&after).contains(&"Gather".to_string()),
            "{:?}",
            ops(&after)
        );
        assert_eq!(max_difference(&m, &after), 0.0);
    }

    #[test]
    fn graph_outputs_are_not_folded_away() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["1"])
            .initializer_f32("a", &[1], &[2.0])
            .node("Neg", &["a"], &["y"])
            .node("Add", &["x", "a"], &["z"])
            .output("y", DataType::Float, &["1"])
            .output("z", DataType::Float, &["1"])
            .build();
        assert_eq!(run_pass(&FoldConstants, &m).1, 0);
    }
}
