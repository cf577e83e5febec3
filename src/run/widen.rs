//! How tract is handed a model that computes in float16.
//!
//! tract computes float16 in float16. Its sums accumulate in float16: a GlobalAveragePool over a
//! 160x160 map of values near 3 reaches 65504 and gives inf, where onnxruntime, whose CPU kernels
//! accumulate in float32, gives the mean. And on a CPU without float16 arithmetic (x86 before
//! AVX512-FP16) its float16 matrix products take a generic kernel some sixty times slower than its
//! float32 ones. So tract runs a copy in which each node computing in float16 reads its float16
//! inputs widened to float32, computes in float32 and has its results cast back to float16: each
//! value keeps float16's storage (its rounding and its range, at every node boundary) and the
//! arithmetic between them is float32's, as onnxruntime's is. A float16 weight such a node reads
//! becomes a float32 initializer of the same values (exact); other values go through a Cast.
//!
//! Left as they are: nodes whose result float16 holds exactly whatever the arithmetic (moving,
//! selecting, comparing: [`EXACT`]), nodes of other domains, and nodes with a value whose type
//! inference does not know or whose name more than one graph defines (an If's two branches may
//! each have a `t` of another type). Those compute in float16 in tract as before.

use std::collections::{HashMap, HashSet};

use crate::graph::builder::{attr_int, tensor_f32};
use crate::graph::{subgraphs, subgraphs_mut};
use crate::infer::Inference;
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto};
use crate::onnx::{DataType, Model};

/// Standard ops whose float16 result is exact: computing them in float32 changes nothing, so
/// they are left alone (control flow is not a computation of its own: its bodies are rewritten;
/// Scatter ops are not here: with `reduction=add|mul` they sum).
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
pub(crate) fn float16_in_float32(model: &Model) -> Option<Model> {
    if !mentions_half(model.graph()) {
        return None;
    }
    let facts = Inference::of_model(model);
    let mut names = Names::default();
    names.note(model.graph());
    let mut proto = model.proto.clone();
    let mut rewriter = Rewriter {
        model,
        facts: &facts,
        names,
    };
    let graph = proto.graph.as_mut()?;
    (rewriter.graph(graph) > 0).then(|| model.rewritten(proto))
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

/// The value and node names of a model and its bodies (tract wants node names unique too), and
/// the value names more than one graph defines.
#[derive(Default)]
struct Names {
    values: HashSet<String>,
    nodes: HashSet<String>,
    defined_in: HashMap<String, usize>,
}

impl Names {
    fn note(&mut self, g: &GraphProto) {
        let mut defined: HashSet<&str> = HashSet::new();
        defined.extend(g.input.iter().map(|v| v.name()));
        defined.extend(g.initializer.iter().map(|t| t.name()));
        for n in &g.node {
            defined.extend(n.output.iter().map(String::as_str));
            self.values.extend(n.input.iter().cloned());
            self.nodes.insert(n.name().to_string());
            subgraphs(n).for_each(|b| self.note(b));
        }
        self.values
            .extend(g.output.iter().map(|v| v.name().to_string()));
        for v in defined.into_iter().filter(|v| !v.is_empty()) {
            self.values.insert(v.to_string());
            *self.defined_in.entry(v.to_string()).or_default() += 1;
        }
    }

    /// A new value name, from `base`. `#` keeps it apart from the names tract gives the nodes
    /// it builds an op from (`m.cast`); tract may rename a node of ours it rewires to the part
    /// before the `#`, made unique.
    fn value(&mut self, base: &str) -> String {
        fresh(&format!("{base}#f32"), &mut self.values)
    }

    /// A Cast node, with a name of its own.
    fn cast(&mut self, input: &str, output: &str, to: DataType) -> NodeProto {
        NodeProto {
            name: Some(fresh(&format!("{output}#cast"), &mut self.nodes)),
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

/// Every value name the nodes of `g` and of its bodies read, and its inputs and outputs (an
/// initializer a graph input also names, as before IR 4, stays its default).
fn reads(g: &GraphProto, read: &mut HashSet<String>) {
    read.extend(
        g.input
            .iter()
            .chain(&g.output)
            .map(|v| v.name().to_string()),
    );
    for n in &g.node {
        read.extend(n.input.iter().cloned());
        subgraphs(n).for_each(|b| reads(b, read));
    }
}

struct Rewriter<'m> {
    model: &'m Model,
    facts: &'m Inference,
    names: Names,
}

impl Rewriter<'_> {
    /// The element types of `values` (none for an empty name), or none where one is not known
    /// for sure.
    fn types(&self, values: &[String]) -> Option<Vec<Option<DataType>>> {
        values
            .iter()
            .map(|v| match v.as_str() {
                "" => Some(None),
                v if self.names.defined_in.get(v).is_some_and(|&n| n > 1) => None,
                v => self.facts.elem_type(v).map(Some),
            })
            .collect()
    }

    /// A float32 initializer holding float16 weight `t`'s values, where they can be read.
    fn widened_weight(&mut self, t: &TensorProto) -> Option<TensorProto> {
        let values = self.model.tensor_data(t).ok()?.to_f32_lossy()?;
        Some(tensor_f32(&self.names.value(t.name()), &t.dims, &values))
    }

    /// Rewrites the float16 computations of `g` and its bodies; returns how many nodes it
    /// rewrote.
    fn graph(&mut self, g: &mut GraphProto) -> usize {
        let mut rewritten = 0;
        // weights this graph holds (not those a caller may override, graph inputs too)
        let inputs: HashSet<&str> = g.input.iter().map(|v| v.name()).collect();
        let weights: HashMap<String, TensorProto> = g
            .initializer
            .iter()
            .filter(|t| t.data_type() == DataType::Float16.code() && !inputs.contains(t.name()))
            .map(|t| (t.name().to_string(), t.clone()))
            .collect();
        // one float32 copy of each float16 value this graph reads, made before its first reader
        let mut widened: HashMap<String, String> = HashMap::new();
        let mut new_weights = Vec::new();
        let mut nodes = Vec::with_capacity(g.node.len());
        for mut node in std::mem::take(&mut g.node) {
            for body in subgraphs_mut(&mut node) {
                rewritten += self.graph(body);
            }
            let standard = matches!(node.domain(), "" | "ai.onnx");
            let (Some(ins), Some(outs)) = (self.types(&node.input), self.types(&node.output))
            else {
                nodes.push(node);
                continue;
            };
            let half = |t: &Option<DataType>| *t == Some(DataType::Float16);
            let computes = ins.iter().chain(&outs).any(half);
            if !standard || EXACT.contains(&node.op_type()) || !computes {
                nodes.push(node);
                continue;
            }
            // errors keep naming the node as tract would have: by its first output
            if node.name().is_empty() {
                node.name = node.output.first().cloned();
            }
            for (v, t) in node.input.iter_mut().zip(&ins) {
                if !half(t) {
                    continue;
                }
                if !widened.contains_key(v.as_str()) {
                    let wide = match weights.get(v.as_str()).and_then(|w| self.widened_weight(w)) {
                        Some(w) => {
                            let name = w.name().to_string();
                            new_weights.push(w);
                            name
                        }
                        None => {
                            let wide = self.names.value(v);
                            nodes.push(self.names.cast(v, &wide, DataType::Float));
                            wide
                        }
                    };
                    widened.insert(v.clone(), wide);
                }
                *v = widened[v.as_str()].clone();
            }
            let mut narrowed = Vec::new();
            for (v, t) in node.output.iter_mut().zip(&outs) {
                if half(t) {
                    let wide = self.names.value(v);
                    narrowed.push(self.names.cast(&wide, v, DataType::Float16));
                    *v = wide;
                }
            }
            nodes.push(node);
            nodes.extend(narrowed);
            rewritten += 1;
        }
        g.node = nodes;
        // a float16 weight every reader of which now reads its float32 copy goes: tract would
        // hold both
        let mut read = HashSet::new();
        reads(g, &mut read);
        g.initializer
            .retain(|t| !widened.contains_key(t.name()) || read.contains(t.name()));
        g.initializer.extend(new_weights);
        rewritten
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::builder::{GraphBuilder, ModelBuilder, attr_graph, raw_tensor};
    use crate::run::{NamedTensor, Runner};
    use tract_onnx::prelude::*;

    fn half_bytes(values: &[f32]) -> Vec<u8> {
        values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect()
    }

    fn run(model: &Model, x: tract_ndarray::ArrayD<half::f16>) -> Vec<f32> {
        let inputs = [NamedTensor {
            name: "x".into(),
            tensor: Tensor::from(x),
        }];
        let y = Runner::new(model).unwrap().run(&inputs).unwrap();
        let y = y[0].tensor.to_plain_array_view::<half::f16>().unwrap();
        y.iter().map(|v| v.to_f32()).collect()
    }

    /// x:f16[1,1,160,160] ─ Relu ─ ReduceMean named as its output ─ Mul(w) ─ y:f16.
    fn mean_of_a_large_map() -> Model {
        let proto = ModelBuilder::new(17)
            .input("x", DataType::Float16, &["1", "1", "160", "160"])
            .initializer(raw_tensor("w", DataType::Float16, &[], half_bytes(&[0.5])))
            .node("Relu", &["x"], &["r"])
            // tract builds a ReduceMean from nodes it names `m.cast` and the like
            .node("ReduceMean", &["r"], &["m"])
            .name_last("m")
            .node("Mul", &["m", "w"], &["y"])
            .output("y", DataType::Float16, &["1", "1", "1", "1"])
            .build();
        Model::from_proto(proto, ".".into())
    }

    #[test]
    fn float16_nodes_compute_between_casts_and_weights_widen() {
        let model = mean_of_a_large_map();
        let copy = float16_in_float32(&model).expect("the model computes in float16");
        let g = copy.graph();
        let ops: Vec<_> = g.node.iter().map(|n| (n.op_type(), n.name())).collect();
        assert_eq!(
            ops,
            [
                ("Relu", ""),
                ("Cast", "r#f32#cast"),
                ("ReduceMean", "m"),
                ("Cast", "m#cast"),
                ("Cast", "m#f32.1#cast"),
                // named by its first output, as tract names an unnamed node
                ("Mul", "y"),
                ("Cast", "y#cast"),
            ]
        );
        // the weight is read as a float32 initializer of the same value, not through a Cast
        let names: Vec<_> = g.initializer.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            ["w#f32"],
            "the float16 original, read no more, is dropped"
        );
        assert_eq!(g.initializer[0].data_type(), DataType::Float.code());
        assert_eq!(g.node[5].input, ["m#f32.1", "w#f32"]);
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
        assert!(float16_in_float32(&Model::from_proto(float, ".".into())).is_none());
    }

    #[test]
    fn a_float16_mean_of_many_values_does_not_overflow_in_tract() {
        // 25600 values of 3: their float16 sum passes 65504, their mean is 3
        let x = tract_ndarray::ArrayD::from_elem(vec![1, 1, 160, 160], half::f16::from_f32(3.0));
        assert_eq!(run(&mean_of_a_large_map(), x), [1.5]);
    }

    /// An If whose branches read the outer `x` and each define a `t`, float16 in one and
    /// float32 in the other: what reads the outer value is rewritten inside its body, what
    /// computes `t` is left as it is (its type depends on the branch).
    #[test]
    fn bodies_are_rewritten_where_their_types_are_known() {
        let then = GraphBuilder::new("then")
            .node("Add", &["x", "x"], &["u"])
            .node("Mul", &["u", "x"], &["t"])
            .node("Identity", &["t"], &["a"])
            .output("a", DataType::Float16, &["3"])
            .build();
        let other = GraphBuilder::new("else")
            .node("Cast", &["x"], &["c"])
            .attr(attr_int("to", DataType::Float.code().into()))
            .node("Mul", &["c", "c"], &["t"])
            .node("Cast", &["t"], &["b"])
            .attr(attr_int("to", DataType::Float16.code().into()))
            .output("b", DataType::Float16, &["3"])
            .build();
        let proto = ModelBuilder::new(17)
            .input("x", DataType::Float16, &["3"])
            .input("cond", DataType::Bool, &[])
            .node("If", &["cond"], &["y"])
            .attr(attr_graph("then_branch", then))
            .attr(attr_graph("else_branch", other))
            .output("y", DataType::Float16, &["3"])
            .build();
        let model = Model::from_proto(proto, ".".into());
        let copy = float16_in_float32(&model).expect("the then branch computes in float16");
        let bodies: Vec<Vec<&str>> = subgraphs(&copy.graph().node[0])
            .map(|b| b.node.iter().map(|n| n.op_type()).collect())
            .collect();
        assert_eq!(
            bodies,
            [
                vec!["Cast", "Add", "Cast", "Mul", "Identity"],
                vec!["Cast", "Mul", "Cast"],
            ]
        );
        // our inference keeps one type a name (the else branch's `t`): it finds the same clash
        // in the copy as in the model, and no other
        let errors = |m: &Model| -> Vec<String> {
            let e = Inference::of_model(m).type_errors(m);
            e.iter()
                .map(|e| e.split_once(' ').unwrap().1.to_string())
                .collect()
        };
        assert_eq!(errors(&copy), errors(&model));
        let x = tract_ndarray::arr1(&[1.0f32, 2.0, 3.0]).mapv(half::f16::from_f32);
        let inputs = [
            NamedTensor {
                name: "x".into(),
                tensor: Tensor::from(x.into_dyn()),
            },
            NamedTensor {
                name: "cond".into(),
                tensor: Tensor::from(tract_ndarray::arr0(true).into_dyn()),
            },
        ];
        let y = Runner::new(&model).unwrap().run(&inputs).unwrap();
        let y = y[0].tensor.to_plain_array_view::<half::f16>().unwrap();
        let y: Vec<f32> = y.iter().map(|v| v.to_f32()).collect();
        assert_eq!(y, [2.0, 8.0, 18.0]);
    }
}
