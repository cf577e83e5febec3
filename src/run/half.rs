//! How tract is handed a model that computes in float16.
//!
//! tract computes float16 in float16. Its sums accumulate in float16: a GlobalAveragePool over a
//! 160x160 map of values near 3 reaches 65504 and gives inf, where onnxruntime, whose CPU kernels
//! accumulate in float32, gives the mean. And on a CPU without float16 arithmetic (x86 before
//! AVX512-FP16) its float16 matrix products take a generic kernel some sixty times slower than its
//! float32 ones. So tract runs a copy in which every node computing in float16 reads its float16
//! inputs cast to float32, computes in float32 and has its results cast back to float16: each
//! value keeps float16's storage (its rounding and its range, at every node boundary) and the
//! arithmetic between them is float32's, as onnxruntime's is. Nodes whose result float16 holds
//! exactly whatever the arithmetic (moving, selecting, comparing) stay as they are.

use std::collections::{HashMap, HashSet};

use crate::graph::builder::attr_int;
use crate::graph::{subgraphs, subgraphs_mut};
use crate::infer::Inference;
use crate::onnx::proto::{GraphProto, NodeProto};
use crate::onnx::{DataType, Model};

/// Standard ops whose float16 result is exact: computing them in float32 changes nothing, so
/// they are left alone (control flow is not a computation of its own: its bodies are rewritten).
const EXACT: &[&str] = &[
    "Abs",
    "ArgMax",
    "ArgMin",
    "Cast",
    "CastLike",
    "Clip",
    "Compress",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "DepthToSpace",
    "Dropout",
    "Equal",
    "Expand",
    "Flatten",
    "Gather",
    "GatherElements",
    "GatherND",
    "Greater",
    "GreaterOrEqual",
    "Identity",
    "If",
    "Less",
    "LessOrEqual",
    "Loop",
    "Max",
    "MaxPool",
    "Min",
    "Neg",
    "NonZero",
    "Pad",
    "ReduceMax",
    "ReduceMin",
    "Relu",
    "Reshape",
    "Scan",
    "ScatterElements",
    "ScatterND",
    "Shape",
    "Sign",
    "Size",
    "Slice",
    "SpaceToDepth",
    "Split",
    "Squeeze",
    "Tile",
    "TopK",
    "Transpose",
    "Trilu",
    "Unsqueeze",
    "Where",
];

/// A copy of `model` whose float16 computations run in float32 between float16 values (see the
/// module's documentation); none where no node computes in float16.
pub(crate) fn computed_in_float32(model: &Model) -> Option<Model> {
    if !mentions_half(model.graph()) {
        return None;
    }
    let facts = Inference::of_model(model);
    let mut proto = model.proto.clone();
    let mut taken = Taken::default();
    taken.note(model.graph());
    let graph = proto.graph.as_mut()?;
    (rewrite(graph, &facts, &mut taken) > 0).then(|| model.rewritten(proto))
}

/// Whether a float16 tensor, value or Cast appears anywhere in `g` (a cheap test before
/// inference).
fn mentions_half(g: &GraphProto) -> bool {
    let half = DataType::Float16.code();
    let typed = |vi: &crate::onnx::proto::ValueInfoProto| {
        matches!(
            vi.r#type.as_ref().and_then(|t| t.value.as_ref()),
            Some(crate::onnx::proto::type_proto::Value::TensorType(t)) if t.elem_type() == half
        )
    };
    g.initializer.iter().any(|t| t.data_type() == half)
        || g.input
            .iter()
            .chain(&g.output)
            .chain(&g.value_info)
            .any(typed)
        || g.node.iter().any(|n| {
            n.attribute
                .iter()
                .any(|a| a.t.as_ref().is_some_and(|t| t.data_type() == half))
                || (n.op_type() == "Cast"
                    && n.attribute
                        .iter()
                        .any(|a| a.name() == "to" && a.i() == i64::from(half)))
                || subgraphs(n).any(mentions_half)
        })
}

/// The value and node names of a model and its bodies (tract wants node names unique too).
#[derive(Default)]
struct Taken {
    values: HashSet<String>,
    nodes: HashSet<String>,
}

impl Taken {
    fn note(&mut self, g: &GraphProto) {
        let values = &mut self.values;
        values.extend(
            g.input
                .iter()
                .chain(&g.output)
                .map(|v| v.name().to_string()),
        );
        values.extend(g.initializer.iter().map(|t| t.name().to_string()));
        for n in &g.node {
            self.values.extend(n.input.iter().chain(&n.output).cloned());
            self.nodes.insert(n.name().to_string());
            subgraphs(n).for_each(|b| self.note(b));
        }
    }

    /// A new value name, from `base`.
    fn value(&mut self, base: &str) -> String {
        fresh(&format!("{base}.f32"), &mut self.values)
    }

    /// A Cast node, with a name of its own.
    fn cast(&mut self, input: &str, output: &str, to: DataType) -> NodeProto {
        NodeProto {
            name: Some(fresh(&format!("{output}.cast"), &mut self.nodes)),
            op_type: Some("Cast".into()),
            input: vec![input.into()],
            output: vec![output.into()],
            attribute: vec![attr_int("to", to.code().into())],
            ..Default::default()
        }
    }
}

/// `base`, or `base.K` for the first K that makes it a name not yet taken.
fn fresh(base: &str, taken: &mut HashSet<String>) -> String {
    let mut name = base.to_string();
    let mut k = 1;
    while taken.contains(&name) {
        name = format!("{base}.{k}");
        k += 1;
    }
    taken.insert(name.clone());
    name
}

/// Rewrites the float16 computations of `g` and its bodies; returns how many nodes it rewrote.
fn rewrite(g: &mut GraphProto, facts: &Inference, taken: &mut Taken) -> usize {
    let mut rewritten = 0;
    // one float32 copy of each float16 value this graph reads, made before its first reader
    let mut widened: HashMap<String, String> = HashMap::new();
    let mut nodes = Vec::with_capacity(g.node.len());
    for mut node in std::mem::take(&mut g.node) {
        for body in subgraphs_mut(&mut node) {
            rewritten += rewrite(body, facts, taken);
        }
        let types = |vs: &[String]| -> Option<Vec<Option<DataType>>> {
            vs.iter()
                .map(|v| match v.as_str() {
                    "" => Some(None),
                    v => facts.elem_type(v).map(Some),
                })
                .collect()
        };
        let standard = matches!(node.domain(), "" | "ai.onnx");
        let (Some(ins), Some(outs)) = (types(&node.input), types(&node.output)) else {
            nodes.push(node);
            continue;
        };
        let half = |t: &Option<DataType>| *t == Some(DataType::Float16);
        let computes = ins.iter().chain(&outs).any(half);
        if !standard || EXACT.contains(&node.op_type()) || !computes {
            nodes.push(node);
            continue;
        }
        for (v, t) in node.input.iter_mut().zip(&ins) {
            if half(t) {
                let wide = widened.entry(v.clone()).or_insert_with(|| {
                    let wide = taken.value(v);
                    nodes.push(taken.cast(v, &wide, DataType::Float));
                    wide
                });
                *v = wide.clone();
            }
        }
        let mut narrowed = Vec::new();
        for (v, t) in node.output.iter_mut().zip(&outs) {
            if half(t) {
                let wide = taken.value(v);
                narrowed.push(taken.cast(&wide, v, DataType::Float16));
                *v = wide;
            }
        }
        nodes.push(node);
        nodes.extend(narrowed);
        rewritten += 1;
    }
    g.node = nodes;
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::builder::{ModelBuilder, raw_tensor};
    use crate::run::{NamedTensor, Runner};
    use tract_onnx::prelude::*;

    fn half_bytes(values: &[f32]) -> Vec<u8> {
        values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect()
    }

    /// x:f16[1,1,160,160] ─ GlobalAveragePool ─ Mul(w) ─ y:f16, with a Relu left alone.
    fn mean_of_a_large_map() -> Model {
        let proto = ModelBuilder::new(17)
            .input("x", DataType::Float16, &["1", "1", "160", "160"])
            .initializer(raw_tensor("w", DataType::Float16, &[], half_bytes(&[0.5])))
            .node("Relu", &["x"], &["r"])
            .node("GlobalAveragePool", &["r"], &["m"])
            .node("Mul", &["m", "w"], &["y"])
            .output("y", DataType::Float16, &["1", "1", "1", "1"])
            .build();
        Model::from_proto(proto, ".".into())
    }

    #[test]
    fn float16_nodes_compute_between_casts() {
        let model = mean_of_a_large_map();
        let copy = computed_in_float32(&model).expect("the model computes in float16");
        let ops: Vec<_> = copy.graph().node.iter().map(|n| n.op_type()).collect();
        assert_eq!(
            ops,
            [
                "Relu",
                "Cast",
                "GlobalAveragePool",
                "Cast",
                "Cast",
                "Cast",
                "Mul",
                "Cast"
            ]
        );
        // the values the model names keep their names and float16 types
        let facts = Inference::of_model(&copy);
        for v in ["r", "m", "y"] {
            assert_eq!(facts.elem_type(v), Some(DataType::Float16), "{v}");
        }
        assert!(facts.type_errors(&copy).is_empty());
        // a float32 model is handed over as it is
        let float = ModelBuilder::new(17)
            .input("x", DataType::Float, &["2"])
            .node("Sigmoid", &["x"], &["y"])
            .output("y", DataType::Float, &["2"])
            .build();
        let float = Model::from_proto(float, ".".into());
        assert!(computed_in_float32(&float).is_none());
    }

    #[test]
    fn a_float16_mean_of_many_values_does_not_overflow_in_tract() {
        // 25600 values of 3: their float16 sum passes 65504, their mean is 3
        let x = tract_ndarray::ArrayD::from_elem(vec![1, 1, 160, 160], half::f16::from_f32(3.0));
        let inputs = [NamedTensor {
            name: "x".into(),
            tensor: Tensor::from(x),
        }];
        let y = Runner::new(&mean_of_a_large_map())
            .unwrap()
            .run(&inputs)
            .unwrap();
        let y = y[0].tensor.to_plain_array_view::<half::f16>().unwrap();
        assert_eq!(y.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), [1.5]);
    }
}
