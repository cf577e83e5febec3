//! `eliminate_nop_cast`: removes a `Cast` to the type its input already has.
//!
//! ```text
//! x:float -> Cast(to=FLOAT) -> y      =>      x
//! ```
//! The input's type comes from ONNX's typing rules over the graph; where it is unknown the Cast
//! stays. All opsets. Results are bit-identical.

use super::rewrite::{attr_i, bypass_all, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct EliminateNopCast;

impl Pass for EliminateNopCast {
    fn name(&self) -> &'static str {
        "eliminate_nop_cast"
    }
    fn kind(&self) -> PassKind {
        PassKind::Cleanup
    }
    fn description(&self) -> &'static str {
        "remove Cast nodes to the type the value already has"
    }
    fn details(&self) -> &'static str {
        "removes a Cast to the type the value already has"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        bypass_all(graph, ctx, |_, ctx, n| {
            let input = n.input.first().filter(|i| !i.is_empty())?;
            let from = ctx.elem_type(input)?;
            (is_op(n, "Cast") && i64::from(from) == attr_i(n, "to", -1)).then(|| input.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::graph::builder::attr_int;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    fn model(to: DataType) -> crate::onnx::ModelProto {
        ModelBuilder::new(13)
            .input("x", DataType::Float, &["3"])
            .node("Cast", &["x"], &["c"])
            .attr(attr_int("to", to.code() as i64))
            .node("Abs", &["c"], &["y"])
            .output("y", to, &["3"])
            .build()
    }

    #[test]
    fn a_cast_to_the_same_type_goes() {
        let m = model(DataType::Float);
        let (after, n) = run_pass(&EliminateNopCast, &m);
        assert_eq!((n, ops(&after)), (1, vec!["Abs".to_string()]));
        assert_eq!(max_difference(&m, &after), 0.0);
    }

    #[test]
    fn a_real_cast_stays() {
        assert_eq!(run_pass(&EliminateNopCast, &model(DataType::Double)).1, 0);
    }
}
