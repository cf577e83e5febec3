//! `eliminate_nop_arithmetic`: removes arithmetic with a neutral constant.
//!
//! ```text
//! x + 0,  0 + x,  x - 0,  x * 1,  1 * x,  x / 1      =>      x
//! ```
//! The constant must be all zeros (Add, Sub) or all ones (Mul, Div) and must not broadcast `x` to
//! a larger shape: its rank is at most x's, and each of its dims is 1 or equal to x's (known)
//! dim (`PassContext::broadcast_keeps_shape`). Where x's shape is unknown, a 1-D constant still
//! qualifies when x comes from a MatMul or Gemm whose constant weight fixes x's last dim to the
//! constant's length; a `[1]` does not (x could be a scalar it would raise to rank 1). Exporters leave such
//! nodes behind for zero-initialised biases and unit scales. Results are identical except that
//! `-0.0 + 0` gives `+0.0`, which compares equal.

use super::rewrite::{bypass_all, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct EliminateNopArithmetic;

/// The last dim of `x` when its producer fixes it: a MatMul or Gemm with a constant 2-D weight.
fn last_dim_from_weight(graph: &Graph, x: &str) -> Option<i64> {
    let p = graph.producer(x)?;
    let w = graph.constant(p.input.get(1)?)?;
    let trans_b = p
        .attribute
        .iter()
        .any(|a| a.name() == "transB" && a.i == Some(1));
    match (p.op_type(), w.dims.as_slice()) {
        ("MatMul", [_, n]) | ("Gemm", [_, n]) if !trans_b => Some(*n),
        ("Gemm", [n, _]) if trans_b => Some(*n),
        _ => None,
    }
}

/// Whether a constant of shape `dims` broadcasts into `x` without changing x's shape. Where x's
/// shape is unknown, a 1-D constant along a last dim the producer's weight fixes still cannot
/// grow x (that dim exists, so x has rank 1 or more).
fn broadcasts_into(graph: &Graph, ctx: &PassContext, dims: &[i64], x: &str) -> bool {
    if ctx.broadcast_keeps_shape(dims, x) {
        return true;
    }
    match dims {
        [d] if ctx.facts.shape(x).is_none() => last_dim_from_weight(graph, x) == Some(*d),
        _ => false,
    }
}

/// Whether `name` is a constant whose every element is `neutral`, broadcasting into `x`.
fn neutral(graph: &Graph, ctx: &PassContext, name: &str, neutral: f64, x: &str) -> bool {
    let Some(t) = graph.constant(name) else {
        return false;
    };
    if ctx.elem_type(x) != Some(t.data_type()) || !broadcasts_into(graph, ctx, &t.dims, x) {
        return false;
    }
    ctx.tensor_data(&t)
        .ok()
        .and_then(|d| d.to_f64_lossy())
        .is_some_and(|v| v.iter().all(|&e| e == neutral))
}

impl Pass for EliminateNopArithmetic {
    fn name(&self) -> &'static str {
        "eliminate_nop_arithmetic"
    }
    fn kind(&self) -> PassKind {
        PassKind::Cleanup
    }
    fn description(&self) -> &'static str {
        "remove Add/Sub of zeros and Mul/Div by ones that do not broadcast"
    }
    fn details(&self) -> &'static str {
        "removes x+0, x-0, x*1, x/1 when the constant does not broadcast x"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        bypass_all(graph, ctx, |g, ctx, n| {
            if n.input.len() != 2 {
                return None;
            }
            let (a, b) = (&n.input[0], &n.input[1]);
            let keep = |x: &String, c: &String, value: f64| {
                neutral(g, ctx, c, value, x).then(|| x.clone())
            };
            if is_op(n, "Add") {
                keep(a, b, 0.0).or_else(|| keep(b, a, 0.0))
            } else if is_op(n, "Mul") {
                keep(a, b, 1.0).or_else(|| keep(b, a, 1.0))
            } else if is_op(n, "Sub") {
                keep(a, b, 0.0)
            } else if is_op(n, "Div") {
                keep(a, b, 1.0)
            } else {
                None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    /// With x's shape unknown, a `[1]` zero was taken as harmless: it raises a scalar x to
    /// rank 1, so `x + [0]` is not x.
    #[test]
    fn a_one_element_constant_on_a_value_of_unknown_shape_stays() {
        let mut m = ModelBuilder::new(13)
            .opset("com.example", 1)
            .input("a", DataType::Float, &[])
            .node("Opaque", &["a"], &["o"])
            // Cast makes the type known (FLOAT) while the shape stays unknown
            .node("Cast", &["o"], &["x"])
            .attr(crate::graph::builder::attr_int("to", 1))
            .initializer_f32("zero", &[1], &[0.0])
            .node("Add", &["x", "zero"], &["y"])
            .output("y", DataType::Float, &["1"])
            .build();
        m.graph.as_mut().unwrap().node[0].domain = Some("com.example".into());
        assert_eq!(run_pass(&EliminateNopArithmetic, &m).1, 0);
    }

    fn model(op: &str, c_dims: &[i64], c: &[f32]) -> crate::onnx::ModelProto {
        ModelBuilder::new(13)
            .input("x", DataType::Float, &["N", "3"])
            .initializer_f32("c", c_dims, c)
            .node("Relu", &["x"], &["r"])
            .node(op, &["r", "c"], &["a"])
            .node("Neg", &["a"], &["y"])
            .output("y", DataType::Float, &["N", "3"])
            .build()
    }

    #[test]
    fn neutral_constants_go() {
        for (op, v) in [("Add", 0.0), ("Sub", 0.0), ("Mul", 1.0), ("Div", 1.0)] {
            let m = model(op, &[3], &[v; 3]);
            let (after, n) = run_pass(&EliminateNopArithmetic, &m);
            assert_eq!(
                (n, ops(&after)),
                (1, vec!["Relu".to_string(), "Neg".to_string()]),
                "{op}"
            );
            assert_eq!(max_difference(&m, &after), 0.0);
        }
    }

    #[test]
    fn a_zero_bias_on_a_matmul_of_unknown_shape_goes() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &[])
            .initializer_f32("w", &[4, 3], &[0.5; 12])
            .initializer_f32("b", &[3], &[0.0; 3])
            .node("MatMul", &["x", "w"], &["mm"])
            .node("Add", &["b", "mm"], &["y"])
            .output("y", DataType::Float, &[])
            .build();
        let mut m = m;
        let x = &mut m.graph.as_mut().unwrap().input[0];
        *x = crate::graph::builder::value_info("x", DataType::Float, &[]);
        if let Some(crate::onnx::proto::type_proto::Value::TensorType(t)) =
            x.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape = None; // rank unknown: tract cannot follow the dims
        }
        let (after, n) = run_pass(&EliminateNopArithmetic, &m);
        assert_eq!((n, ops(&after)), (1, vec!["MatMul".to_string()]));
    }

    #[test]
    fn real_operands_and_broadcasting_constants_stay() {
        assert_eq!(
            run_pass(
                &EliminateNopArithmetic,
                &model("Add", &[3], &[0.0, 1.0, 0.0])
            )
            .1,
            0
        );
        assert_eq!(
            run_pass(
                &EliminateNopArithmetic,
                &model("Add", &[2, 1, 3], &[0.0; 6])
            )
            .1,
            0,
            "would add an axis"
        );
        let mut sub_from_zero = model("Sub", &[3], &[0.0; 3]);
        sub_from_zero.graph.as_mut().unwrap().node[1]
            .input
            .swap(0, 1); // 0 - x is not x
        assert_eq!(run_pass(&EliminateNopArithmetic, &sub_from_zero).1, 0);
    }
}
