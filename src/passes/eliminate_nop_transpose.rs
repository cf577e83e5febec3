//! `eliminate_nop_transpose`: removes a `Transpose` whose `perm` is the identity.
//!
//! ```text
//! x -> Transpose(perm=[0,1,2]) -> y      =>      x
//! ```
//! A Transpose without `perm` reverses the axes: a no-op only for rank 0 and 1 (known from the
//! inferred shape). All opsets. Results are bit-identical.

use super::rewrite::{attr_ints, bypass_all, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct EliminateNopTranspose;

impl Pass for EliminateNopTranspose {
    fn name(&self) -> &'static str {
        "eliminate_nop_transpose"
    }
    fn kind(&self) -> PassKind {
        PassKind::Cleanup
    }
    fn description(&self) -> &'static str {
        "remove Transpose nodes whose permutation is the identity"
    }
    fn details(&self) -> &'static str {
        "removes a Transpose with the identity permutation"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        bypass_all(graph, ctx, |_, ctx, n| {
            if !is_op(n, "Transpose") {
                return None;
            }
            let input = n.input.first().filter(|i| !i.is_empty())?;
            let identity = match attr_ints(n, "perm") {
                Some(perm) => perm.iter().enumerate().all(|(i, &p)| p == i as i64),
                None => ctx.rank(input).is_some_and(|r| r <= 1),
            };
            identity.then(|| input.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::graph::builder::attr_ints as perm;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    fn model(p: &[i64]) -> crate::onnx::ModelProto {
        ModelBuilder::new(13)
            .input("x", DataType::Float, &["2", "3", "4"])
            .node("Transpose", &["x"], &["t"])
            .attr(perm("perm", p))
            .node("Relu", &["t"], &["y"])
            .output("y", DataType::Float, &["?", "?", "?"])
            .build()
    }

    #[test]
    fn an_identity_permutation_goes() {
        let m = model(&[0, 1, 2]);
        let (after, n) = run_pass(&EliminateNopTranspose, &m);
        assert_eq!((n, ops(&after)), (1, vec!["Relu".to_string()]));
        assert_eq!(max_difference(&m, &after), 0.0);
    }

    #[test]
    fn a_real_permutation_stays() {
        assert_eq!(run_pass(&EliminateNopTranspose, &model(&[0, 2, 1])).1, 0);
    }
}
