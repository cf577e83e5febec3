//! `eliminate_dropout`: removes `Dropout` nodes, which are identities at inference.
//!
//! ```text
//! x -> Dropout -> y      =>      x
//! ```
//! Refuses when the mask output is read, when `training_mode` (opset 12+) is not a constant false,
//! or when `is_test` is 0 (opsets before 7). Results are bit-identical.

use super::rewrite::{attr, bypass_all, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct EliminateDropout;

impl Pass for EliminateDropout {
    fn name(&self) -> &'static str {
        "eliminate_dropout"
    }
    fn kind(&self) -> PassKind {
        PassKind::Cleanup
    }
    fn description(&self) -> &'static str {
        "remove Dropout nodes (inference)"
    }
    fn details(&self) -> &'static str {
        "removes inference Dropout (not when the mask is read or training_mode is on)"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        bypass_all(graph, ctx, |g, ctx, n| {
            if !is_op(n, "Dropout") || n.input.first().is_none_or(|i| i.is_empty()) {
                return None;
            }
            if let Some(mask) = n.output.get(1).filter(|m| !m.is_empty())
                && (!g.consumers(mask).is_empty() || g.is_output(mask))
            {
                return None;
            }
            if attr(n, "is_test").and_then(|a| a.i) == Some(0) {
                return None;
            }
            if let Some(training) = n.input.get(2).filter(|t| !t.is_empty()) {
                let t = g.constant(training)?;
                let on = ctx.tensor_data(&t).ok()?.bools().ok()?;
                if on.iter().any(|b| *b) {
                    return None;
                }
            }
            Some(n.input[0].clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    fn model(mask_used: bool) -> crate::onnx::ModelProto {
        let mut b = ModelBuilder::new(13)
            .input("x", DataType::Float, &["4"])
            .node("Dropout", &["x"], &["d", "mask"])
            .node("Relu", &["d"], &["y"])
            .output("y", DataType::Float, &["4"]);
        if mask_used {
            b = b.output("mask", DataType::Bool, &["4"]);
        }
        b.build()
    }

    #[test]
    fn dropout_goes() {
        let m = model(false);
        let (after, n) = run_pass(&EliminateDropout, &m);
        assert_eq!((n, ops(&after)), (1, vec!["Relu".to_string()]));
        assert_eq!(max_difference(&m, &after), 0.0);
    }

    #[test]
    fn a_dropout_whose_mask_is_read_stays() {
        assert_eq!(run_pass(&EliminateDropout, &model(true)).1, 0);
    }
}
