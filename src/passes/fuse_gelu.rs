//! `fuse_gelu`: turns decomposed GELU chains into the standard `Gelu` op (opset 20+).
//!
//! ```text
//! erf:  y = 0.5 * x * (1 + Erf(x / sqrt(2)))                         =>  Gelu(x)
//! tanh: y = 0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))  =>  Gelu(x, approximate="tanh")
//! ```
//! Matched from the Erf (or Tanh) node: every intermediate must feed only the next step, the
//! constants must be those numbers (x / sqrt(2) or x * 1/sqrt(2); x^3 as Pow(x, 3)), and the 0.5
//! may multiply x first or the product last. Models importing an opset before 20 are left alone:
//! `Gelu` does not exist there, and the output must stay standard ONNX. The chain's intermediates
//! are left for `eliminate_dead_nodes`. Results change by float rounding only.

use super::rewrite::{is_op, is_scalar, next_op, other_input};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;
use crate::graph::builder::attr_string;
use crate::onnx::proto::NodeProto;

pub struct FuseGelu;

const SQRT_2: f64 = std::f64::consts::SQRT_2;
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;

/// From `1 + f(x)` (the Add at `add`), the final node of `0.5 * x * (1 + f)`: its index.
fn half_x_times(graph: &Graph, ctx: &PassContext, add: usize, x: &str) -> Option<usize> {
    let sum = &graph.nodes()[add].output[0];
    let mul = next_op(graph, sum, "Mul")?;
    let other = other_input(&graph.nodes()[mul], sum)?;
    if other == x {
        // (x * (1 + f)) * 0.5
        let last = next_op(graph, &graph.nodes()[mul].output[0], "Mul")?;
        return is_scalar(
            graph,
            ctx,
            other_input(&graph.nodes()[last], &graph.nodes()[mul].output[0])?,
            0.5,
        )
        .then_some(last);
    }
    // (x * 0.5) * (1 + f)
    let half = graph.producer(other).filter(|p| is_op(p, "Mul"))?;
    let c = other_input(half, x)?;
    (is_scalar(graph, ctx, c, 0.5) && graph.consumers(other).len() == 1).then_some(mul)
}

fn erf_chain(graph: &Graph, ctx: &PassContext, erf: &NodeProto) -> Option<(String, usize)> {
    let scaled = graph.producer(&erf.input[0])?;
    let x = match (is_op(scaled, "Div"), is_op(scaled, "Mul")) {
        (true, _) if is_scalar(graph, ctx, &scaled.input[1], SQRT_2) => scaled.input[0].clone(),
        (_, true) => {
            let (a, b) = (&scaled.input[0], &scaled.input[1]);
            if is_scalar(graph, ctx, b, 1.0 / SQRT_2) {
                a.clone()
            } else if is_scalar(graph, ctx, a, 1.0 / SQRT_2) {
                b.clone()
            } else {
                return None;
            }
        }
        _ => return None,
    };
    let add = next_op(graph, &erf.output[0], "Add")?;
    if !is_scalar(
        graph,
        ctx,
        other_input(&graph.nodes()[add], &erf.output[0])?,
        1.0,
    ) {
        return None;
    }
    Some((x.clone(), half_x_times(graph, ctx, add, &x)?))
}

fn tanh_chain(graph: &Graph, ctx: &PassContext, tanh: &NodeProto) -> Option<(String, usize)> {
    let scaled = graph.producer(&tanh.input[0]).filter(|p| is_op(p, "Mul"))?;
    let inner = [&scaled.input[0], &scaled.input[1]]
        .into_iter()
        .find(|v| !is_scalar(graph, ctx, v, SQRT_2_OVER_PI))?;
    if !is_scalar(graph, ctx, other_input(scaled, inner)?, SQRT_2_OVER_PI) {
        return None;
    }
    let sum = graph.producer(inner).filter(|p| is_op(p, "Add"))?;
    // x + 0.044715 * x^3: find the operand that is a Mul of Pow(x, 3)
    for (x, cubic) in [
        (&sum.input[0], &sum.input[1]),
        (&sum.input[1], &sum.input[0]),
    ] {
        let Some(m) = graph.producer(cubic).filter(|p| is_op(p, "Mul")) else {
            continue;
        };
        let Some(pow_out) = [&m.input[0], &m.input[1]]
            .into_iter()
            .find(|v| graph.producer(v).is_some_and(|p| is_op(p, "Pow")))
        else {
            continue;
        };
        let pow = graph.producer(pow_out)?;
        if pow.input[0] != *x
            || !is_scalar(graph, ctx, &pow.input[1], 3.0)
            || !is_scalar(graph, ctx, other_input(m, pow_out)?, 0.044715)
        {
            continue;
        }
        let add = next_op(graph, &tanh.output[0], "Add")?;
        if !is_scalar(
            graph,
            ctx,
            other_input(&graph.nodes()[add], &tanh.output[0])?,
            1.0,
        ) {
            return None;
        }
        return Some((x.clone(), half_x_times(graph, ctx, add, x)?));
    }
    None
}

impl Pass for FuseGelu {
    fn name(&self) -> &'static str {
        "fuse_gelu"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fusion
    }
    fn description(&self) -> &'static str {
        "turn erf- and tanh-GELU chains into Gelu (opset 20+)"
    }
    fn details(&self) -> &'static str {
        "erf- and tanh-GELU chains become `Gelu` (opset 20+ only; earlier opsets have no Gelu)"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        if ctx.opset < 20 {
            return Ok(0);
        }
        let mut count = 0;
        for i in 0..graph.nodes().len() {
            let node = graph.nodes()[i].clone();
            let found = if is_op(&node, "Erf") {
                erf_chain(graph, ctx, &node).map(|f| (f, None))
            } else if is_op(&node, "Tanh") {
                tanh_chain(graph, ctx, &node).map(|f| (f, Some("tanh")))
            } else {
                None
            };
            let Some(((x, last), approximate)) = found else {
                continue;
            };
            // Gelu keeps x's shape: a chain whose constants broadcast it to another shape (a
            // `[1,1,1]` "scalar" raising the rank) is not a GELU of x
            if !ctx.same_shape(&x, &graph.nodes()[last].output[0]) {
                continue;
            }
            let n = &mut graph.proto_mut().node[last];
            n.op_type = Some("Gelu".into());
            n.domain = None;
            n.input = vec![x];
            n.attribute.clear();
            if let Some(a) = approximate {
                n.attribute.push(attr_string("approximate", a));
            }
            count += 1;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops};

    fn erf_model(opset: i64, half_first: bool) -> crate::onnx::ModelProto {
        let b = ModelBuilder::new(opset)
            .input("x", DataType::Float, &["2", "8"])
            .initializer_f32("sqrt2", &[], &[SQRT_2 as f32])
            .initializer_f32("one", &[], &[1.0])
            .initializer_f32("half", &[], &[0.5])
            .node("Div", &["x", "sqrt2"], &["d"])
            .node("Erf", &["d"], &["e"])
            .node("Add", &["e", "one"], &["a"]);
        let b = if half_first {
            b.node("Mul", &["x", "half"], &["h"])
                .node("Mul", &["h", "a"], &["y"])
        } else {
            b.node("Mul", &["x", "a"], &["m"])
                .node("Mul", &["m", "half"], &["y"])
        };
        b.output("y", DataType::Float, &["2", "8"]).build()
    }

    /// A "scalar" 0.5 of shape [1,1,1] makes the chain's output rank 3 where Gelu(x) keeps
    /// rank 2: is_scalar accepted it and the fusion dropped the broadcast.
    #[test]
    fn a_rank_raising_constant_is_not_part_of_a_gelu() {
        let mut m = erf_model(20, false);
        let g = m.graph.as_mut().unwrap();
        let half = g
            .initializer
            .iter_mut()
            .find(|t| t.name() == "half")
            .unwrap();
        *half = crate::graph::builder::tensor_f32("half", &[1, 1, 1], &[0.5]);
        g.output[0] = crate::graph::builder::value_info("y", DataType::Float, &["1", "2", "8"]);
        let mut model = crate::onnx::Model::from_proto(m, std::env::temp_dir());
        let r = crate::passes::optimize(&mut model, &[&FuseGelu], &Default::default()).unwrap();
        assert_eq!(r.per_pass["fuse_gelu"].applied, 0);
    }

    fn tanh_model() -> crate::onnx::ModelProto {
        ModelBuilder::new(20)
            .input("x", DataType::Float, &["2", "8"])
            .initializer_f32("three", &[], &[3.0])
            .initializer_f32("k", &[], &[0.044715])
            .initializer_f32("c", &[], &[SQRT_2_OVER_PI as f32])
            .initializer_f32("one", &[], &[1.0])
            .initializer_f32("half", &[], &[0.5])
            .node("Pow", &["x", "three"], &["p"])
            .node("Mul", &["k", "p"], &["q"])
            .node("Add", &["x", "q"], &["r"])
            .node("Mul", &["r", "c"], &["s"])
            .node("Tanh", &["s"], &["t"])
            .node("Add", &["t", "one"], &["u"])
            .node("Mul", &["x", "half"], &["v"])
            .node("Mul", &["v", "u"], &["y"])
            .output("y", DataType::Float, &["2", "8"])
            .build()
    }

    fn fuse_and_clean(m: &crate::onnx::ModelProto) -> (crate::onnx::ModelProto, usize) {
        let mut model = crate::onnx::Model::from_proto(m.clone(), std::env::temp_dir());
        let passes: [&'static dyn Pass; 2] = [
            &FuseGelu,
            &crate::passes::eliminate_dead_nodes::EliminateDeadNodes,
        ];
        let r = crate::passes::optimize(&mut model, &passes, &Default::default()).unwrap();
        (model.proto, r.per_pass["fuse_gelu"].applied)
    }

    #[test]
    fn erf_and_tanh_chains_become_gelu() {
        for m in [erf_model(20, false), erf_model(20, true), tanh_model()] {
            let (after, n) = fuse_and_clean(&m);
            assert_eq!((n, ops(&after)), (1, vec!["Gelu".to_string()]));
            let d = max_difference(&m, &after);
            assert!(d < 1e-5, "{d}");
        }
    }

    #[test]
    fn older_opsets_and_other_constants_are_left_alone() {
        assert_eq!(
            fuse_and_clean(&erf_model(17, false)).1,
            0,
            "no Gelu before opset 20"
        );
        let mut m = erf_model(20, false);
        let g = m.graph.as_mut().unwrap();
        g.initializer.retain(|t| t.name() != "half");
        g.initializer
            .push(crate::graph::builder::tensor_f32("half", &[], &[0.6]));
        assert_eq!(fuse_and_clean(&m).1, 0);
    }
}
