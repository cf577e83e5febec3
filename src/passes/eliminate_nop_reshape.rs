//! `eliminate_nop_reshape`: removes a `Reshape` to the shape its input already has.
//!
//! ```text
//! x:[2,3] -> Reshape([2,-1]) -> y:[2,3]      =>      x
//! ```
//! Either inference found the output's shape equal to the input's (symbolic dims included:
//! `[batch, seq, 128]` to `[batch, seq, 128]`), or the constant target (0 copies the input dim
//! unless `allowzero`, -1 takes the rest) gives the input's static shape. Opsets 5+ (shape as an
//! input).

use super::rewrite::{attr_i, bypass_all, const_i64s, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct EliminateNopReshape;

/// The output shape of Reshape(input of shape `dims`, `target`), if valid.
pub fn reshape_target(dims: &[i64], target: &[i64], allowzero: bool) -> Option<Vec<i64>> {
    let mut out: Vec<i64> = target
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            if t == 0 && !allowzero {
                dims.get(i).copied().unwrap_or(-2)
            } else {
                t
            }
        })
        .collect();
    let total: i64 = dims.iter().product();
    let known: i64 = out.iter().filter(|&&d| d != -1).product();
    match out.iter().filter(|&&d| d == -1).count() {
        0 => {}
        1 if known > 0 && total % known == 0 => {
            *out.iter_mut().find(|d| **d == -1)? = total / known
        }
        _ => return None,
    }
    (out.iter().all(|&d| d >= 0) && out.iter().product::<i64>() == total).then_some(out)
}

impl Pass for EliminateNopReshape {
    fn name(&self) -> &'static str {
        "eliminate_nop_reshape"
    }
    fn kind(&self) -> PassKind {
        PassKind::Cleanup
    }
    fn description(&self) -> &'static str {
        "remove Reshape nodes to the shape the value already has"
    }
    fn details(&self) -> &'static str {
        "removes a Reshape to the value's own shape (symbolic dims included)"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        bypass_all(graph, ctx, |g, ctx, n| {
            if !is_op(n, "Reshape") || n.input.len() < 2 {
                return None;
            }
            if ctx.same_shape(&n.input[0], n.output.first()?) {
                return Some(n.input[0].clone());
            }
            let dims = ctx.static_shape(&n.input[0])?;
            let target = const_i64s(g, ctx, &n.input[1])?;
            (reshape_target(&dims, &target, attr_i(n, "allowzero", 0) == 1)? == dims)
                .then(|| n.input[0].clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    fn model(target: &[i64]) -> crate::onnx::ModelProto {
        ModelBuilder::new(14)
            .input("x", DataType::Float, &["2", "3"])
            .initializer_i64("shape", &[target.len() as i64], target)
            .node("Reshape", &["x", "shape"], &["r"])
            .node("Relu", &["r"], &["y"])
            .output("y", DataType::Float, &[])
            .build()
    }

    #[test]
    fn a_reshape_to_the_same_shape_goes() {
        for target in [[2, 3], [0, -1], [-1, 3]] {
            let m = model(&target);
            let (after, n) = run_pass(&EliminateNopReshape, &m);
            assert_eq!(
                (n, ops(&after)),
                (1, vec!["Relu".to_string()]),
                "{target:?}"
            );
            assert_eq!(max_difference(&m, &after), 0.0);
        }
    }

    #[test]
    fn a_real_reshape_stays() {
        assert_eq!(run_pass(&EliminateNopReshape, &model(&[3, 2])).1, 0);
        assert_eq!(run_pass(&EliminateNopReshape, &model(&[6])).1, 0);
    }

    #[test]
    fn targets_resolve_like_onnx() {
        assert_eq!(
            reshape_target(&[2, 3, 4], &[0, -1], false),
            Some(vec![2, 12])
        );
        assert_eq!(reshape_target(&[2, 3], &[0, 6], true), None);
        assert_eq!(reshape_target(&[2, 3], &[-1, -1], false), None);
    }
}
