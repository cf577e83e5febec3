//! Where static int8 pays in onnxruntime's CPU provider, and where it costs more than it saves.
//!
//! A QDQ Conv runs as onnxruntime's int8 Conv in NHWC layout. Where int8 values reach it from
//! an int8 Conv (directly, or through a Relu, Concat or a pass-through op such as MaxPool) and
//! leave it to another, it is cheaper than the float Conv. Where its neighbours are float ops
//! (HardSwish, PRelu, Sigmoid, residual Adds) each side costs a QuantizeLinear or a
//! DequantizeLinear and a layout Transpose over the whole activation, and a depthwise Conv's
//! int8 kernel is slower than its float one to begin with. A Gemm or MatMul pays only the
//! QuantizeLinear of its input (its int8 kernel writes float). Where a MaxPool stands between a
//! float op and the node, onnxruntime moves the QuantizeLinear above it, and its uint8 MaxPool
//! there is many times slower than its float one. A Conv whose output gets no QuantizeLinear (a
//! graph output, or outputs left unquantized) is not fused at all: onnxruntime runs it in float
//! with its weights dequantized on every run.
//!
//! Through a Relu or a Concat on the way to another int8 Conv, values are counted as int8:
//! onnxruntime keeps the NHWC layout across them and runs the DequantizeLinear, the Relu, the
//! Concat and the QuantizeLinear element-wise (squeezenet's fire modules), which costs less than
//! a float side with its Transposes, though not nothing.
//!
//! The estimate weighs those, in nanoseconds, at the shapes the model runs at:
//!
//! ```text
//!   saved = MACs x NS_SAVED_PER_MAC (depthwise: NS_SAVED_PER_DEPTHWISE_MAC, below 0)
//!   cost  = per float side: NS_PER_BOUNDARY + elements x (NS_PER_CONV_ELEMENT | NS_PER_Q_ELEMENT)
//!           + the input elements of MaxPools above a float input x NS_PER_UINT8_MAXPOOL_ELEMENT
//! ```
//!
//! and a node whose saving is below its cost stays float. Dropping a node can only make its
//! neighbours' sides float, so the rule is applied until nothing changes; the result does not
//! depend on the order nodes are looked at. A node whose shapes are not known (and a
//! ConvTranspose, whose int8 kernel was not measured) is left to quantize. The shapes are those
//! the model runs at on the calibration data (its first sample).
//!
//! The constants are onnxruntime 1.31.1's CPU kernels on a 2-core x86-64 Xeon with AVX-512
//! VNNI and AMX (which its int8 kernels use), measured per node with its profiler on
//! mobilenet_v3_small (int8 and float Convs of the same shapes; QuantizeLinear,
//! DequantizeLinear and Transpose over 10⁴ to 10⁵ elements): a 1x1 Conv saves about a third of
//! its time in int8 (28 against 19 ps per MAC), a 5x5 depthwise Conv of 576 channels at 7x7
//! takes 72 µs in int8 against 56 µs in float, and a QuantizeLinear or a DequantizeLinear with
//! its Transpose takes about 0.8 ns per element plus a few µs per kernel.
//! Runtimes that keep int8 layouts and fuse around them where onnxruntime's CPU provider
//! converts (accelerators, other CPU runtimes) want every node int8: [`Placement::All`].

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::qdq::{OUTPUT_QUANTIZED_OPS, PASS_THROUGH};
use crate::graph::Graph;
use crate::infer::Inference;

/// Int8 saving per multiply-accumulate of a Conv, Gemm or MatMul (ns).
pub const NS_SAVED_PER_MAC: f64 = 0.009;
/// A depthwise Conv's int8 kernel is slower than its float one.
pub const NS_SAVED_PER_DEPTHWISE_MAC: f64 = -0.02;
/// A float side of an int8 Conv, per element: a Q or DQ and a layout Transpose.
pub const NS_PER_CONV_ELEMENT: f64 = 0.8;
/// The float input of an int8 Gemm or MatMul, per element: its Q.
pub const NS_PER_Q_ELEMENT: f64 = 0.4;
/// A float side, whatever its size: the kernels' own cost.
pub const NS_PER_BOUNDARY: f64 = 10_000.0;
/// A MaxPool between a float op and an int8 node, per input element: onnxruntime moves the Q
/// above it, and its uint8 MaxPool outside its NHWC int8 chains takes 8 ns per element where
/// its float one takes 0.3.
pub const NS_PER_UINT8_MAXPOOL_ELEMENT: f64 = 8.0;

/// Which of the nodes static int8 can quantize it does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Those that the estimate above says run faster in int8 in onnxruntime's CPU provider.
    #[default]
    Fast,
    /// Every one (the smallest file; for runtimes where int8 is cheap).
    All,
}

impl Placement {
    pub fn parse(s: &str) -> Result<Placement, String> {
        match s {
            "fast" => Ok(Placement::Fast),
            "all" => Ok(Placement::All),
            other => Err(format!("placement '{other}': fast or all expected")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Fast => "fast",
            Placement::All => "all",
        }
    }

    /// What reports that do not record a placement used.
    pub(super) fn recorded_before() -> Placement {
        Placement::All
    }
}

/// A node static int8 can quantize, as the estimate sees it.
pub(super) struct Candidate<'a> {
    /// Its index among the graph's nodes.
    pub index: usize,
    pub op: &'a str,
    /// The value it reads and quantizes, then the values the pass-through ops above it read,
    /// upstream last.
    pub chain: &'a [String],
    pub output: &'a str,
    /// Its output gets a Q/DQ pair of its own (a Conv's, unless a graph output).
    pub output_pair: bool,
    /// Multiply-accumulates per output element (a weight's elements over its output channels);
    /// `None` where a weight dim is not positive.
    pub macs_per_output: Option<f64>,
    pub depthwise: bool,
}

/// The elements of a tensor of these dims, where every one is positive.
pub(super) fn size(dims: &[i64]) -> Option<f64> {
    dims.iter()
        .all(|&d| d > 0)
        .then(|| dims.iter().map(|&d| d as f64).product())
}

/// What int8 would do to one node's time.
enum Estimate {
    /// Nanoseconds saved and spent at its float sides.
    Priced { saved: f64, cost: f64 },
    /// No Q after it: onnxruntime does not fuse it.
    Unfused,
}

/// The candidates (by index) that run slower in int8 than in float, each with why.
pub(super) fn slower_in_int8(
    graph: &Graph,
    facts: &Inference,
    candidates: &[Candidate],
) -> BTreeMap<usize, String> {
    let mut slower = BTreeMap::new();
    loop {
        let kept: Vec<usize> = (0..candidates.len())
            .filter(|k| !slower.contains_key(k))
            .collect();
        let neighbours = Int8Values::of(graph, candidates, &kept);
        let dropped: Vec<(usize, String)> = kept
            .iter()
            .filter_map(|&k| {
                let c = &candidates[k];
                match estimate(facts, &neighbours, c)? {
                    Estimate::Priced { saved, cost } if saved < cost => {
                        Some((k, reason(c, saved, cost)))
                    }
                    Estimate::Priced { .. } => None,
                    Estimate::Unfused => Some((
                        k,
                        "its output gets no QuantizeLinear (a graph output), so onnxruntime would \
                         run it in float with its weights dequantized on every run"
                            .to_string(),
                    )),
                }
            })
            .collect();
        if dropped.is_empty() {
            return slower;
        }
        slower.extend(dropped);
    }
}

/// What int8 saves and costs on `c` with the current neighbours; `None` where a shape is
/// unknown or the op was not measured.
fn estimate(facts: &Inference, int8: &Int8Values, c: &Candidate) -> Option<Estimate> {
    if !matches!(c.op, "Conv" | "Gemm" | "MatMul") {
        return None;
    }
    let elements = |v: &str| size(&facts.static_shape(v)?);
    let activation = c.chain.first()?;
    let (input, output) = (elements(activation)?, elements(c.output)?);
    let conv = OUTPUT_QUANTIZED_OPS.contains(&c.op);
    if conv && !c.output_pair && !int8.leaves(c.output, 0) {
        return Some(Estimate::Unfused);
    }
    let per_mac = if c.depthwise {
        NS_SAVED_PER_DEPTHWISE_MAC
    } else {
        NS_SAVED_PER_MAC
    };
    let saved = output * c.macs_per_output? * per_mac;
    let mut cost = 0.0;
    if !int8.arrives(activation, 0) {
        let per = if conv {
            NS_PER_CONV_ELEMENT
        } else {
            NS_PER_Q_ELEMENT
        };
        // the MaxPools of the chain above (each value in it but the last is written by a
        // pass-through op reading the next); one of unknown size is not counted
        let pooled: f64 = c
            .chain
            .windows(2)
            .filter(|w| {
                int8.graph
                    .producer(&w[0])
                    .is_some_and(|p| p.op_type() == "MaxPool")
            })
            .filter_map(|w| elements(&w[1]))
            .sum();
        cost += NS_PER_BOUNDARY + input * per + pooled * NS_PER_UINT8_MAXPOOL_ELEMENT;
    }
    if conv && !int8.leaves(c.output, 0) {
        cost += NS_PER_BOUNDARY + output * NS_PER_CONV_ELEMENT;
    }
    Some(Estimate::Priced { saved, cost })
}

fn reason(c: &Candidate, saved: f64, cost: f64) -> String {
    let us = |ns: f64| ns / 1000.0;
    if c.depthwise {
        format!(
            "a depthwise Conv: onnxruntime's int8 kernel is slower than its float one \
             (estimated {:.1} us more, {:.1} us of Q/DQ at float neighbours)",
            us(-saved),
            us(cost)
        )
    } else {
        format!(
            "int8 would be slower in onnxruntime: it saves an estimated {:.1} us and its \
             float neighbours cost {:.1} us of Q/DQ{}",
            us(saved),
            us(cost),
            if OUTPUT_QUANTIZED_OPS.contains(&c.op) {
                " and layout changes"
            } else {
                ""
            }
        )
    }
}

/// How far int8 values reach around the nodes kept int8.
struct Int8Values<'a> {
    graph: &'a Graph,
    /// Outputs written in int8 (a Conv's, with a pair of its own).
    written: HashSet<&'a str>,
    /// The kept nodes, by index among the graph's nodes.
    kept: HashSet<usize>,
}

/// Through these, int8 values stay int8 in onnxruntime (a Relu folds into the Q before it, a
/// Concat of int8 values is an int8 Concat).
fn int8_through(op: &str) -> bool {
    op == "Relu" || op == "Concat" || PASS_THROUGH.contains(&op)
}

/// Deeper than this, a value is taken to be float.
const MAX_DEPTH: usize = 64;

impl<'a> Int8Values<'a> {
    fn of(graph: &'a Graph, candidates: &[Candidate<'a>], kept: &[usize]) -> Self {
        let kept = kept.iter().map(|&k| &candidates[k]);
        Int8Values {
            graph,
            written: kept
                .clone()
                .filter(|c| OUTPUT_QUANTIZED_OPS.contains(&c.op))
                .map(|c| c.output)
                .collect(),
            kept: kept.map(|c| c.index).collect(),
        }
    }

    /// `v` is int8 where it is written: a kept Conv's output, or int8 values through ops that
    /// keep them int8.
    fn arrives(&self, v: &str, depth: usize) -> bool {
        if self.written.contains(v) {
            return true;
        }
        let Some(producer) = self.graph.producer(v) else {
            return false;
        };
        if depth > MAX_DEPTH || !int8_through(producer.op_type()) {
            return false;
        }
        let inputs: Vec<&String> = producer.input.iter().filter(|i| !i.is_empty()).collect();
        match producer.op_type() {
            "Concat" => inputs.iter().all(|i| self.arrives(i, depth + 1)),
            _ => inputs.first().is_some_and(|i| self.arrives(i, depth + 1)),
        }
    }

    /// Every reader of `v` takes it in int8: a kept node quantizing it, or an op that keeps it
    /// int8 whose output every reader takes in int8 (a Concat only where all of its inputs are
    /// int8).
    fn leaves(&self, v: &str, depth: usize) -> bool {
        if depth > MAX_DEPTH || self.graph.is_output(v) {
            return false;
        }
        let readers = self.graph.consumers(v);
        !readers.is_empty()
            && readers.iter().all(|&r| {
                let node = &self.graph.nodes()[r];
                if self.kept.contains(&r) && node.input.first().is_some_and(|i| i == v) {
                    return true;
                }
                int8_through(node.op_type())
                    && (node.op_type() != "Concat"
                        || node
                            .input
                            .iter()
                            .filter(|i| !i.is_empty())
                            .all(|i| i == v || self.arrives(i, depth + 1)))
                    && node
                        .output
                        .first()
                        .is_some_and(|o| self.leaves(o, depth + 1))
            })
    }
}
