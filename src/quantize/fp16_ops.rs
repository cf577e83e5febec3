//! Which operators stay float32 in a float16 model, and why.
//!
//! Most of the answer comes from the ONNX schemas at the model's opset: an input or output whose
//! type does not allow `float16` (Resize's `scales`, NonMaxSuppression's `boxes`,
//! LayerNormalization's `Mean`, Celu, DynamicQuantizeLinear...) stays float32 without a list.
//! This file holds what the schemas do not say:
//!
//! - ops whose float16 results are not what a user wants even where the schema allows them
//!   (indices of TopK reorder on float16 ties, CumSum's running sum, random draws, ranges);
//! - ops onnxruntime's CPU provider cannot run in float16. onnxruntime runs most float16 ops by
//!   inserting Casts around kernels it lacks, so which ones fail was found by running every ONNX
//!   node conformance test as a float16 twin (`tools/probe_ort_fp16.py`, onnxruntime 1.31.1):
//!   MeanVarianceNormalization (its expansion fails to load: "Type parameter (T) of Optype (Add)
//!   bound to different types") and ScatterElements/ScatterND with a `reduction` ("MLFloat16
//!   data type is not supported with reduction"). Every other op with a float16 schema ran and
//!   agreed with float32 (cosine >= 0.99) except on inputs beyond float16's range, which the
//!   range checks handle.

use crate::graph::Graph;
use crate::onnx::attributes::{attr_f, attr_s};
use crate::onnx::proto::{GraphProto, NodeProto};

/// Why `node` must stay float32 whatever its types allow, if it must.
pub fn float32_only(node: &NodeProto) -> Option<&'static str> {
    Some(match node.op_type() {
        "Range" => "computes shape-like values",
        "TopK" => "float16 ties would reorder its indices",
        "CumSum" => "a running sum loses precision in float16",
        "NonMaxSuppression" => "box coordinates and scores decide which boxes survive",
        "RandomNormal" | "RandomNormalLike" | "RandomUniform" | "RandomUniformLike"
        | "Multinomial" | "Bernoulli" => "random draws: its float16 distribution differs",
        "EyeLike" => "its output type is set by an attribute",
        "HannWindow" | "HammingWindow" | "BlackmanWindow" | "MelWeightMatrix" | "DFT" | "STFT" => {
            "signal op: float32 keeps its spectrum"
        }
        "MeanVarianceNormalization" => {
            "onnxruntime's CPU provider cannot load it in float16 (tools/probe_ort_fp16.py)"
        }
        // tract multiplies by alpha and beta as float32 constants, so a float16 Gemm whose
        // alpha or beta is not 1 does not load there ([`split_gemm_bias`] handles beta = 1)
        "Gemm" if attr_f(node, "alpha", 1.0) != 1.0 || attr_f(node, "beta", 1.0) != 1.0 => {
            "tract's Gemm multiplies by alpha and beta in float32: it cannot load it in float16"
        }
        "ScatterElements" | "ScatterND"
            if attr_s(node, "reduction").is_some_and(|r| r != "none") =>
        {
            "onnxruntime's CPU provider has no float16 scatter reduction (tools/probe_ort_fp16.py)"
        }
        _ => return None,
    })
}

/// Splits every `Gemm(A, B, C)` with alpha and beta 1 into `Gemm(A, B)` and `Add(C)`, here and
/// in bodies: tract multiplies C by a float32 beta even when it is 1, so a float16 Gemm with a
/// bias does not load there; the split form runs everywhere and computes the same sum. A Gemm
/// in `keep` (by output: it stays float32) is left whole.
pub fn split_gemm_bias(g: &mut GraphProto, keep: &std::collections::BTreeMap<String, String>) {
    let mut edit = Graph::new(std::mem::take(g));
    let mut added = Vec::new();
    let candidates: Vec<usize> = (0..edit.nodes().len())
        .filter(|&i| {
            let n = &edit.nodes()[i];
            n.op_type() == "Gemm"
                && matches!(n.domain(), "" | "ai.onnx")
                && n.input.get(2).is_some_and(|c| !c.is_empty())
                && attr_f(n, "alpha", 1.0) == 1.0
                && attr_f(n, "beta", 1.0) == 1.0
                && !n.output.first().is_some_and(|o| keep.contains_key(o))
        })
        .collect();
    for i in candidates {
        let out = edit.nodes()[i].output[0].clone();
        let product = edit.fresh_name(&format!("{out}_product"));
        let name = edit.fresh_name(&format!("{}_bias", super::node_base(&edit.nodes()[i])));
        let node = &mut edit.proto_mut().node[i];
        let c = node.input.pop().expect("a C input");
        node.output[0] = product.clone();
        node.attribute.retain(|a| a.name() != "beta");
        added.push(NodeProto {
            op_type: Some("Add".into()),
            name: Some(name),
            input: vec![product, c],
            output: vec![out],
            ..Default::default()
        });
    }
    edit.proto_mut().node.extend(added);
    // the Adds read what their Gemms write: order them after
    let _ = edit.sort_topologically();
    *g = edit.into_proto();
    for node in &mut g.node {
        for body in crate::graph::subgraphs_mut(node) {
            split_gemm_bias(body, keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::builder::attr_string;

    #[test]
    fn scatter_without_reduction_may_be_float16() {
        let mut node = NodeProto {
            op_type: Some("ScatterND".into()),
            ..Default::default()
        };
        assert_eq!(float32_only(&node), None);
        node.attribute.push(attr_string("reduction", "add"));
        assert!(float32_only(&node).is_some());
        node.attribute[0] = attr_string("reduction", "none");
        assert_eq!(float32_only(&node), None);
    }
}
