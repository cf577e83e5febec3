//! `fuse_layer_norm`: turns a decomposed layer normalization over the last axis into the standard
//! `LayerNormalization` op (opset 17+).
//!
//! ```text
//! m = ReduceMean(x, [-1]); d = x - m; v = ReduceMean(d^2, [-1]); n = d / Sqrt(v + eps);
//! y = n * gamma + beta                                   =>  LayerNormalization(x, gamma, beta, eps)
//! ```
//! `d^2` may be Pow(d, 2) or Mul(d, d); gamma and beta are optional constants (ones and zeros are
//! made when missing). Both means must reduce exactly the last axis with keepdims. Models
//! importing an opset before 17 are left alone. Results change by float rounding only.

use super::rewrite::{
    attr_i, axes_of, f32_tensor, is_op, is_scalar, next_op, other_input, sole_consumer,
};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;
use crate::graph::builder::{attr_float, attr_int};

pub struct FuseLayerNorm;

/// Whether the ReduceMean at `i` reduces only the last axis of its input (keeping dims).
fn last_axis_mean(graph: &Graph, ctx: &PassContext, i: usize) -> bool {
    let n = &graph.nodes()[i];
    // check the op first: other nodes (a Constant, say) may have no input 0
    if !is_op(n, "ReduceMean") {
        return false;
    }
    let rank = n.input.first().and_then(|x| ctx.rank(x)).map(|r| r as i64);
    let axes = axes_of(graph, ctx, n);
    attr_i(n, "keepdims", 1) == 1
        && match (axes.as_deref(), rank) {
            (Some([-1]), _) => true,
            (Some([a]), Some(r)) => *a == r - 1,
            _ => false,
        }
}

struct Found {
    x: String,
    eps: f32,
    last: usize,
    gamma: Option<String>,
    beta: Option<String>,
}

fn find(graph: &Graph, ctx: &PassContext, mean: usize) -> Option<Found> {
    if !last_axis_mean(graph, ctx, mean) {
        return None;
    }
    let x = graph.nodes()[mean].input[0].clone();
    let m = graph.nodes()[mean].output[0].clone();
    let sub = sole_consumer(graph, &m).filter(|&s| {
        is_op(&graph.nodes()[s], "Sub") && graph.nodes()[s].input == [x.clone(), m.clone()]
    })?;
    let d = graph.nodes()[sub].output[0].clone();
    let [a, b] = graph.consumers(&d) else {
        return None;
    };
    let (sq, div) = if is_op(&graph.nodes()[*a], "Div") {
        (*b, *a)
    } else {
        (*a, *b)
    };
    let sq_node = &graph.nodes()[sq];
    let squares = (is_op(sq_node, "Pow")
        && sq_node.input[0] == d
        && is_scalar(graph, ctx, &sq_node.input[1], 2.0))
        || (is_op(sq_node, "Mul") && sq_node.input == [d.clone(), d.clone()]);
    if !squares
        || !is_op(&graph.nodes()[div], "Div")
        || graph.nodes()[div].input[0] != d
        || graph.is_output(&d)
    {
        return None;
    }
    let var = sole_consumer(graph, &graph.nodes()[sq].output[0])?;
    if !last_axis_mean(graph, ctx, var) {
        return None;
    }
    let v = &graph.nodes()[var].output[0];
    let add = next_op(graph, v, "Add")?;
    let eps_name = other_input(&graph.nodes()[add], v)?;
    let eps = ctx
        .tensor_data(&*graph.constant(eps_name)?)
        .ok()?
        .to_f64_lossy()?;
    let [eps] = eps.as_slice() else { return None };
    let sqrt = next_op(graph, &graph.nodes()[add].output[0], "Sqrt")?;
    if graph.nodes()[div].input[1] != graph.nodes()[sqrt].output[0]
        || graph.consumers(&graph.nodes()[sqrt].output[0]).len() != 1
    {
        return None;
    }
    let mut last = div;
    let mut gamma = None;
    let mut beta = None;
    if let Some(mul) = next_op(graph, &graph.nodes()[last].output[0], "Mul") {
        let g = other_input(&graph.nodes()[mul], &graph.nodes()[last].output[0])?;
        if graph.constant(g).is_some() {
            gamma = Some(g.clone());
            last = mul;
        }
    }
    if let Some(add) = next_op(graph, &graph.nodes()[last].output[0], "Add") {
        let b = other_input(&graph.nodes()[add], &graph.nodes()[last].output[0])?;
        if graph.constant(b).is_some() {
            beta = Some(b.clone());
            last = add;
        }
    }
    Some(Found {
        x,
        eps: *eps as f32,
        last,
        gamma,
        beta,
    })
}

impl Pass for FuseLayerNorm {
    fn name(&self) -> &'static str {
        "fuse_layer_norm"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fusion
    }
    fn description(&self) -> &'static str {
        "turn decomposed layer normalization into LayerNormalization (opset 17+)"
    }
    fn details(&self) -> &'static str {
        "a decomposed layer norm over the last axis becomes `LayerNormalization` (opset 17+)"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        if ctx.opset < 17 {
            return Ok(0);
        }
        let mut count = 0;
        for i in 0..graph.nodes().len() {
            let Some(f) = find(graph, ctx, i) else {
                continue;
            };
            // LayerNormalization keeps x's shape and computes in x's type: a chain that
            // broadcasts to another shape, or whose parameters are of another type, is not one
            if !ctx.same_shape(&f.x, &graph.nodes()[f.last].output[0])
                || ctx.elem_type(&f.x) != Some(crate::onnx::DataType::Float.code())
            {
                continue;
            }
            let width = ctx.dims(&f.x).and_then(|s| s.last().copied().flatten());
            // gamma and beta: one FLOAT value per element of the last axis (a `[1]` gamma
            // broadcasts in the chain but is no LayerNormalization scale)
            let per_axis = |name: &Option<String>| {
                name.as_ref()
                    .and_then(|n| graph.constant(n))
                    .is_none_or(|t| {
                        t.data_type() == crate::onnx::DataType::Float.code()
                            && match (t.dims.as_slice(), width) {
                                ([k], Some(w)) => *k == w,
                                ([k], None) => *k > 1,
                                _ => false,
                            }
                    })
            };
            let given =
                |name: &Option<String>| name.as_ref().is_none_or(|n| graph.constant(n).is_some());
            if !per_axis(&f.gamma) || !per_axis(&f.beta) || !given(&f.gamma) || !given(&f.beta) {
                continue;
            }
            let width = match width {
                Some(w) => w,
                None if f.gamma.is_some() && f.beta.is_some() => 0,
                None => continue, // ones/zeros need the axis size
            };
            let gamma = match f.gamma {
                Some(g) => g,
                None => graph.add_initializer(
                    "ln_gamma",
                    f32_tensor(&[width], std::iter::repeat_n(1.0, width as usize)),
                ),
            };
            let beta = match f.beta {
                Some(b) => b,
                None => graph.add_initializer(
                    "ln_beta",
                    f32_tensor(&[width], std::iter::repeat_n(0.0, width as usize)),
                ),
            };
            let n = &mut graph.proto_mut().node[f.last];
            n.op_type = Some("LayerNormalization".into());
            n.domain = None;
            n.input = vec![f.x, gamma, beta];
            n.attribute = vec![attr_int("axis", -1), attr_float("epsilon", f.eps)];
            count += 1;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::graph::builder::attr_ints;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops};

    /// A Constant node has no input 0: the pass read it before checking the op type and
    /// panicked on every opset-17 model with a Constant that survives folding.
    #[test]
    fn a_constant_node_without_inputs_does_not_crash_the_pass() {
        use crate::graph::builder::{attr_tensor, tensor_f32};
        let m = ModelBuilder::new(17)
            .node("Constant", &[], &["c"])
            .attr(attr_tensor("value", tensor_f32("", &[2], &[1.0, 2.0])))
            .output("c", DataType::Float, &["2"])
            .build();
        assert_eq!(crate::passes::testing::run_pass(&FuseLayerNorm, &m).1, 0);
    }

    fn model(opset: i64, affine: bool, square_with_mul: bool) -> crate::onnx::ModelProto {
        let mut b = ModelBuilder::new(opset)
            .input("x", DataType::Float, &["2", "3", "8"])
            .initializer_f32("two", &[], &[2.0])
            .initializer_f32("eps", &[], &[1e-5])
            .initializer_f32("gamma", &[8], &[1.0, 2.0, 0.5, 1.0, -1.0, 1.5, 1.0, 0.25])
            .initializer_f32("beta", &[8], &[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
            .node("ReduceMean", &["x"], &["m"])
            .attr(attr_ints("axes", &[-1]))
            .node("Sub", &["x", "m"], &["d"]);
        b = if square_with_mul {
            b.node("Mul", &["d", "d"], &["p"])
        } else {
            b.node("Pow", &["d", "two"], &["p"])
        };
        b = b
            .node("ReduceMean", &["p"], &["v"])
            .attr(attr_ints("axes", &[-1]))
            .node("Add", &["v", "eps"], &["e"])
            .node("Sqrt", &["e"], &["s"]);
        if affine {
            b.node("Div", &["d", "s"], &["n"])
                .node("Mul", &["n", "gamma"], &["g"])
                .node("Add", &["g", "beta"], &["y"])
        } else {
            b.node("Div", &["d", "s"], &["y"])
        }
        .output("y", DataType::Float, &["2", "3", "8"])
        .build()
    }

    /// A `[1]` gamma passed the rank-only check, and missing gamma/beta were made FLOAT whatever
    /// the input's type.
    #[test]
    fn a_one_element_gamma_is_no_layer_norm_scale() {
        let mut m = model(17, true, false);
        let g = m.graph.as_mut().unwrap();
        let gamma = g
            .initializer
            .iter_mut()
            .find(|t| t.name() == "gamma")
            .unwrap();
        *gamma = crate::graph::builder::tensor_f32("gamma", &[1], &[2.0]);
        assert_eq!(fuse_and_clean(&m).1, 0);
        // the same chain over doubles: LayerNormalization would need DOUBLE parameters
        let mut d = model(17, false, false);
        let g = d.graph.as_mut().unwrap();
        for v in g.input.iter_mut().chain(g.output.iter_mut()) {
            if let Some(crate::onnx::proto::type_proto::Value::TensorType(t)) =
                v.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                t.elem_type = Some(DataType::Double.code());
            }
        }
        assert_eq!(fuse_and_clean(&d).1, 0);
    }

    fn fuse_and_clean(m: &crate::onnx::ModelProto) -> (crate::onnx::ModelProto, usize) {
        let mut model = crate::onnx::Model::from_proto(m.clone(), std::env::temp_dir());
        let passes: [&'static dyn Pass; 2] = [
            &FuseLayerNorm,
            &crate::passes::eliminate_dead_nodes::EliminateDeadNodes,
        ];
        let r = crate::passes::optimize(&mut model, &passes, &Default::default()).unwrap();
        (model.proto, r.per_pass["fuse_layer_norm"].applied)
    }

    #[test]
    fn decomposed_layer_norms_fuse() {
        for (affine, mul) in [(true, false), (false, false), (true, true)] {
            let m = model(17, affine, mul);
            let (after, n) = fuse_and_clean(&m);
            assert_eq!(
                (n, ops(&after)),
                (1, vec!["LayerNormalization".to_string()]),
                "affine {affine} mul {mul}"
            );
            let d = max_difference(&m, &after);
            assert!(d < 1e-4, "{d}");
        }
    }

    #[test]
    fn older_opsets_and_other_axes_are_left_alone() {
        assert_eq!(fuse_and_clean(&model(13, true, false)).1, 0);
        let mut m = model(17, true, false);
        m.graph.as_mut().unwrap().node[0].attribute[0].ints = vec![1];
        assert_eq!(fuse_and_clean(&m).1, 0);
    }
}
