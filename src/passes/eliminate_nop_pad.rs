//! `eliminate_nop_pad`: removes a `Pad` that adds nothing.
//!
//! ```text
//! x -> Pad(pads=[0,0,0,0]) -> y      =>      x
//! ```
//! Pads come from the `pads` attribute (opsets before 11) or the constant `pads` input (11+); any
//! mode is a no-op when every pad is 0. Refuses non-constant pads. Results are bit-identical.

use super::rewrite::{attr_ints, bypass_all, const_i64s, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct EliminateNopPad;

impl Pass for EliminateNopPad {
    fn name(&self) -> &'static str {
        "eliminate_nop_pad"
    }
    fn kind(&self) -> PassKind {
        PassKind::Cleanup
    }
    fn description(&self) -> &'static str {
        "remove Pad nodes whose pads are all zero"
    }
    fn details(&self) -> &'static str {
        "removes a Pad whose pads are all zero"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        bypass_all(graph, ctx, |g, ctx, n| {
            if !is_op(n, "Pad") {
                return None;
            }
            let input = n.input.first().filter(|i| !i.is_empty())?;
            let pads = match n.input.get(1).filter(|p| !p.is_empty()) {
                Some(p) => const_i64s(g, ctx, p)?,
                None => attr_ints(n, "pads")?,
            };
            pads.iter().all(|&p| p == 0).then(|| input.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    fn model(pads: &[i64]) -> crate::onnx::ModelProto {
        ModelBuilder::new(13)
            .input("x", DataType::Float, &["2", "3"])
            .initializer_i64("pads", &[4], pads)
            .node("Pad", &["x", "pads"], &["p"])
            .node("Relu", &["p"], &["y"])
            .output("y", DataType::Float, &[])
            .build()
    }

    #[test]
    fn zero_pads_go() {
        let m = model(&[0, 0, 0, 0]);
        let (after, n) = run_pass(&EliminateNopPad, &m);
        assert_eq!((n, ops(&after)), (1, vec!["Relu".to_string()]));
        assert_eq!(max_difference(&m, &after), 0.0);
    }

    #[test]
    fn real_pads_stay() {
        assert_eq!(run_pass(&EliminateNopPad, &model(&[0, 1, 0, 0])).1, 0);
    }
}
