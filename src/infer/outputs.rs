//! Graph outputs whose declared shape the graph provably does not compute. Exporters write such
//! declarations (an output declared `[1, seqlen]` that a Reshape makes `[T, 1, 8210]`);
//! onnxruntime runs the model and warns on every run, and the `onnx` checker accepts it only while
//! it cannot infer the shape either. A rewrite that makes the shape inferable (a Reshape target
//! folded to a constant) turns the model into one the checker refuses, so the writers declare
//! what the graph computes instead, and report it.

use serde::{Deserialize, Serialize};

use super::{Dim, Inference};
use crate::onnx::Model;
use crate::onnx::proto::tensor_shape_proto::{Dimension, dimension::Value};
use crate::onnx::proto::{TensorShapeProto, ValueInfoProto, type_proto};

/// A main-graph output declared with a shape the graph does not compute, and what it computes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeclaredOutput {
    pub output: String,
    /// The shape the model declared, as written (`?` for a dim it leaves open).
    pub declared: String,
    /// The shape inference proves the graph computes (`?` for a dim it cannot tell).
    pub computed: String,
}

impl RedeclaredOutput {
    /// The line `convert` and `optimize` print for it.
    pub fn describe(&self) -> String {
        format!(
            "output '{}' declared {} as the graph computes it (the input declares {})",
            self.output, self.computed, self.declared
        )
    }
}

fn declared_shape(vi: &ValueInfoProto) -> Option<&TensorShapeProto> {
    match vi.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => t.shape.as_ref(),
        _ => None,
    }
}

fn render_declared(shape: &TensorShapeProto) -> String {
    let dims: Vec<String> = shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(Value::DimValue(v)) if *v >= 0 => v.to_string(),
            Some(Value::DimParam(p)) if crate::onnx::names_a_dim(p) => p.clone(),
            _ => "?".into(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// A computed shape as text: sizes, expressions over named symbols, `?` for a dim not known.
pub(crate) fn render_computed(shape: &[Dim]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| match d.is_known() {
            true => d.to_string(),
            false => "?".into(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// The dimension to declare for a computed dim: its size, or the expression over named symbols
/// it is, or left open.
pub(super) fn dimension_of(d: &Dim) -> Dimension {
    Dimension {
        value: match d.as_const() {
            Some(v) if v >= 0 => Some(Value::DimValue(v)),
            Some(_) => None,
            None if d.is_known() => Some(Value::DimParam(d.to_string())),
            None => None,
        },
        denotation: None,
    }
}

/// The declaration `declared` corrected to what `computed` proves, with whether it contradicted
/// it (another rank, or a fixed size where the declaration fixes another; a named dim may stand
/// for any size, and a dim inference cannot tell contradicts nothing), or `None` where it stands.
/// With the rank right, only the contradicted dims change, and a negative size (an exporter's
/// placeholder for an open dim, which the `onnx` checker takes for a size all the same) becomes
/// what is computed there, which is no contradiction.
fn corrected(declared: &TensorShapeProto, computed: &[Dim]) -> Option<(TensorShapeProto, bool)> {
    if declared.dim.len() != computed.len() {
        let dim = computed.iter().map(dimension_of).collect();
        return Some((TensorShapeProto { dim }, true));
    }
    let mut fixed = declared.clone();
    let (mut changed, mut contradicted) = (false, false);
    for (d, c) in fixed.dim.iter_mut().zip(computed) {
        let Some(Value::DimValue(v)) = d.value else {
            continue;
        };
        let placeholder = v < 0;
        if placeholder || c.as_const().is_some_and(|n| n != v) {
            let now = dimension_of(c);
            changed |= now != *d;
            contradicted |= !placeholder;
            *d = now;
        }
    }
    (changed || contradicted).then_some((fixed, contradicted))
}

impl Inference {
    /// The main graph's outputs whose declared shape contradicts what inference proves of them
    /// (this inference must be of `model`), or holds a negative size, each with the declaration
    /// that states what is computed (and, where it contradicted it, what to report).
    fn contradicted_outputs(
        &self,
        model: &Model,
    ) -> Vec<(usize, Option<RedeclaredOutput>, TensorShapeProto)> {
        let mut found = Vec::new();
        for (i, vi) in model.graph().output.iter().enumerate() {
            let (Some(declared), Some(computed)) = (declared_shape(vi), self.shape(vi.name()))
            else {
                continue;
            };
            if let Some((shape, contradicted)) = corrected(declared, computed) {
                let r = contradicted.then(|| RedeclaredOutput {
                    output: vi.name().to_string(),
                    declared: render_declared(declared),
                    computed: render_computed(computed),
                });
                found.push((i, r, shape));
            }
        }
        found
    }

    /// [`Inference::contradicted_outputs`] without the corrections: what lint reports.
    pub fn output_contradictions(&self, model: &Model) -> Vec<RedeclaredOutput> {
        self.contradicted_outputs(model)
            .into_iter()
            .filter_map(|(_, r, _)| r)
            .collect()
    }
}

/// Declares each main-graph output whose declared shape `model`'s graph provably does not
/// compute with the shape it computes (its element type as declared), by `inference` of
/// `model`, and a declared negative size as what is computed there; returns the contradictions
/// it corrected.
pub fn redeclare_outputs(model: &mut Model, inference: &Inference) -> Vec<RedeclaredOutput> {
    let found = inference.contradicted_outputs(model);
    let outputs = &mut model.graph_mut().output;
    found
        .into_iter()
        .filter_map(|(i, r, shape)| {
            if let Some(type_proto::Value::TensorType(t)) =
                outputs[i].r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                t.shape = Some(shape);
            }
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;

    fn declared(model: &Model, output: usize) -> String {
        render_declared(declared_shape(&model.graph().output[output]).unwrap())
    }

    /// x [2, 3] -> Reshape([3, 2, 1]) -> y, and x -> Transpose -> t, with `y` and `t` declared
    /// as given, and x -> Relu -> r declared [batch, 3].
    fn model(y: &[&str], t: &[&str]) -> Model {
        let proto = ModelBuilder::new(17)
            .input("x", DataType::Float, &["2", "3"])
            .initializer_i64("target", &[3], &[3, 2, 1])
            .node("Reshape", &["x", "target"], &["y"])
            .node("Transpose", &["x"], &["t"])
            .node("Relu", &["x"], &["r"])
            .output("y", DataType::Float, y)
            .output("t", DataType::Float, t)
            .output("r", DataType::Float, &["batch", "3"])
            .build();
        Model::from_proto(proto, std::path::PathBuf::new())
    }

    fn redeclared(m: &mut Model) -> Vec<RedeclaredOutput> {
        let facts = Inference::of_model(m);
        redeclare_outputs(m, &facts)
    }

    #[test]
    fn an_output_of_another_rank_or_size_is_declared_as_computed_and_reported() {
        let mut m = model(&["1", "seqlen"], &["2", "n"]);
        let changed = redeclared(&mut m);
        assert_eq!(
            changed,
            vec![
                RedeclaredOutput {
                    output: "y".into(),
                    declared: "[1, seqlen]".into(),
                    computed: "[3, 2, 1]".into(),
                },
                RedeclaredOutput {
                    output: "t".into(),
                    declared: "[2, n]".into(),
                    computed: "[3, 2]".into(),
                },
            ]
        );
        assert_eq!(declared(&m, 0), "[3, 2, 1]");
        // only the contradicted dim changes; the named one stays
        assert_eq!(declared(&m, 1), "[3, n]");
        assert_eq!(declared(&m, 2), "[batch, 3]");
        assert!(redeclared(&mut m).is_empty());
    }

    #[test]
    fn a_declaration_the_graph_may_compute_stays() {
        let mut m = model(&["a", "b", "c"], &["n", "2"]);
        let before = m.proto.clone();
        assert!(Inference::of_model(&m).output_contradictions(&m).is_empty());
        assert!(redeclared(&mut m).is_empty());
        assert_eq!(m.proto, before);
        // an exporter's -1 for an open dim contradicts nothing, but the checker takes it for a
        // size: it is declared as computed, unreported
        let mut m = model(&["a", "b", "c"], &["-1", "2"]);
        assert!(Inference::of_model(&m).output_contradictions(&m).is_empty());
        assert!(redeclared(&mut m).is_empty());
        assert_eq!(declared(&m, 1), "[3, 2]");
        // what inference cannot tell (a contrib op's output) contradicts nothing, nor does a
        // graph input passed through as an output
        let proto = ModelBuilder::new(17)
            .opset("com.microsoft", 1)
            .input("x", DataType::Float, &["2", "3"])
            .node("FusedGemm", &["x", "x"], &["y"])
            .output("y", DataType::Float, &["7"])
            .output("x", DataType::Float, &["2", "3"])
            .build();
        let mut m = Model::from_proto(proto, std::path::PathBuf::new());
        let before = m.proto.clone();
        assert!(redeclared(&mut m).is_empty());
        assert_eq!(m.proto, before);
    }
}
