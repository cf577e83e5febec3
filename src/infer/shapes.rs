//! Output shapes of a node (symbolic dims included), and the values of small integer tensors
//! where they follow from the inputs': `Shape`, `Gather`, `Slice`, `Concat`, arithmetic... so
//! that `Reshape(x, Concat(Shape(x)[0:1], [-1]))` is known to make `[batch, rest]`.
//!
//! Each rule reads only what it needs and gives up (an unknown shape, or a fresh unknown dim)
//! where the inputs do not determine the answer; no rule may panic on a malformed node.

use crate::onnx::DataType;
use crate::onnx::attributes::{attr, attr_i, attr_ints, attr_s};
use crate::onnx::proto::NodeProto;

use super::dim::Dim;
use super::{Fact, Shape};

/// Values are tracked for integer tensors of at most this many elements.
pub const MAX_VALUE_ELEMENTS: usize = 64;

/// Hands out unknown dims with distinct identities. The identities are derived from the value
/// they are made for (and a count), not from a global counter, so inferring the same node on
/// the same inputs again gives the same facts: an incremental refresh then stops at the first
/// node whose facts did not change.
pub struct Fresh {
    seed: u64,
    count: u64,
}

impl Fresh {
    /// Unknowns for the value named `name` (`tag` tells apart several uses for one value).
    pub fn new(name: &str, tag: &str) -> Fresh {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        tag.hash(&mut h);
        Fresh {
            seed: h.finish(),
            count: 0,
        }
    }

    pub fn dim(&mut self) -> Dim {
        self.count += 1;
        Dim::unknown(
            self.seed
                .wrapping_add(self.count.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        )
    }
    fn dims(&mut self, n: usize) -> Shape {
        (0..n).map(|_| self.dim()).collect()
    }
    fn or_fresh(&mut self, d: Option<Dim>) -> Dim {
        d.unwrap_or_else(|| self.dim())
    }
}

/// The inputs of one node as the rules see them.
pub struct Inputs<'a> {
    pub facts: Vec<Option<&'a Fact>>,
}

impl<'a> Inputs<'a> {
    fn fact(&self, k: usize) -> Option<&'a Fact> {
        self.facts.get(k).copied().flatten()
    }
    fn shape(&self, k: usize) -> Option<&'a [Dim]> {
        self.fact(k)?.shape.as_deref()
    }
    fn rank(&self, k: usize) -> Option<usize> {
        self.shape(k).map(<[Dim]>::len)
    }
    fn value(&self, k: usize) -> Option<&'a [Dim]> {
        self.fact(k)?.value.as_deref()
    }
    /// The input's value when every element is a number.
    fn ints(&self, k: usize) -> Option<Vec<i64>> {
        self.value(k)?.iter().map(Dim::as_const).collect()
    }
    fn present(&self, k: usize) -> bool {
        self.facts.get(k).is_some_and(Option::is_some)
    }
}

/// What a rule found for one output.
#[derive(Debug, Clone, Default)]
pub struct Out {
    pub shape: Option<Shape>,
    pub value: Option<Vec<Dim>>,
}

fn shaped(shape: Shape) -> Out {
    Out {
        shape: Some(shape),
        value: None,
    }
}

fn with_value(shape: Shape, value: Vec<Dim>) -> Out {
    Out {
        shape: Some(shape),
        value: Some(value),
    }
}

/// Normalises an axis against a rank (`-1` is the last); `None` when out of range.
fn axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

fn axes_of(list: &[i64], rank: usize) -> Option<Vec<usize>> {
    let mut v: Vec<usize> = list.iter().map(|&a| axis(a, rank)).collect::<Option<_>>()?;
    v.sort_unstable();
    v.dedup();
    (v.len() == list.len()).then_some(v)
}

fn product(dims: &[Dim]) -> Option<Dim> {
    dims.iter().try_fold(Dim::constant(1), |acc, d| acc.mul(d))
}

/// Multidirectional (numpy) broadcasting of two shapes; a dim pair it cannot decide becomes a
/// fresh unknown. `None` for two constants that do not broadcast.
pub fn broadcast(a: &[Dim], b: &[Dim], fresh: &mut Fresh) -> Option<Shape> {
    let rank = a.len().max(b.len());
    let one = Dim::constant(1);
    (0..rank)
        .map(|i| {
            let da = (i + a.len())
                .checked_sub(rank)
                .map(|k| &a[k])
                .unwrap_or(&one);
            let db = (i + b.len())
                .checked_sub(rank)
                .map(|k| &b[k])
                .unwrap_or(&one);
            match (da.as_const(), db.as_const()) {
                _ if da == db => Some(da.clone()),
                (Some(1), _) => Some(db.clone()),
                (_, Some(1)) => Some(da.clone()),
                (Some(_), Some(_)) => None,
                // a constant other than 1 is what the other side must be (or 1)
                (Some(_), None) => Some(da.clone()),
                (None, Some(_)) => Some(db.clone()),
                // a valid broadcast is the larger side: min(a, b) never exceeds a
                (None, None) => match (da.as_min(), db.as_min()) {
                    (Some((x, y)), _) if x == db || y == db => Some(db.clone()),
                    (_, Some((x, y))) if x == da || y == da => Some(da.clone()),
                    _ => Some(fresh.dim()),
                },
            }
        })
        .collect()
}

fn broadcast_all(shapes: &[Option<&[Dim]>], fresh: &mut Fresh) -> Option<Shape> {
    let mut acc: Shape = Vec::new();
    for s in shapes {
        acc = broadcast(&acc, (*s)?, fresh)?;
    }
    Some(acc)
}

fn is_int(t: Option<DataType>) -> bool {
    matches!(
        t,
        Some(
            DataType::Int64
                | DataType::Int32
                | DataType::Int16
                | DataType::Int8
                | DataType::Uint8
                | DataType::Uint16
                | DataType::Uint32
                | DataType::Bool
        )
    )
}

/// Ops whose single output has the shape of their first input.
const SAME_SHAPE: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "BitwiseNot",
    "Ceil",
    "Celu",
    "Clip",
    "Cos",
    "Cosh",
    "CumSum",
    "DequantizeLinear",
    "Elu",
    "Erf",
    "Exp",
    "EyeLike",
    "Floor",
    "Gelu",
    "GroupNormalization",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "MeanVarianceNormalization",
    "Mish",
    "Neg",
    "Not",
    "PRelu",
    "QuantizeLinear",
    "RandomNormalLike",
    "RandomUniformLike",
    "Bernoulli",
    "Reciprocal",
    "Relu",
    "ReverseSequence",
    "Round",
    "Selu",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Softmax",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Swish",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Trilu",
    "Scatter",
    "ScatterElements",
    "ScatterND",
    "RMSNormalization",
    "Cast",
    "CastLike",
];

/// Ops that before opset 7 broadcast only where their `broadcast` attribute asks, their second
/// input into the first, aligned at `axis` (or at the first's last axes).
pub const LEGACY_BROADCAST: &[&str] = &[
    "Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less",
];

/// Ops that broadcast all their inputs together.
const BROADCAST: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Mod",
    "And",
    "Or",
    "Xor",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "Where",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
];

/// The shapes (and small integer values) of `node`'s outputs.
pub fn infer(
    node: &NodeProto,
    opset: i64,
    ins: &Inputs,
    out_types: &[Option<DataType>],
    fresh: &mut Fresh,
) -> Vec<Out> {
    let n = node.output.len();
    let mut outs = rule(node, opset, ins, out_types, fresh).unwrap_or_default();
    outs.resize_with(n, Out::default);
    // a Cast of integers to floats keeps their value for the nodes that read it (a Range over
    // a float limit cast from a size, as YOLO exports build their anchor grids), where the
    // float holds them exactly: a float32 every integer up to 2^24 (a size is taken to be one),
    // a float64 up to 2^53; float16 and narrower no more than a few thousand. A rule computing
    // a value from it writes a float (not kept) or compares exact integers
    let exact_floats = node.op_type() == "Cast" && ins.value(0).is_some();
    for (o, t) in outs.iter_mut().zip(out_types) {
        let exact = |v: &Vec<Dim>| match t {
            Some(DataType::Double) => true,
            Some(DataType::Float) => v
                .iter()
                .all(|d| d.as_const().is_none_or(|c| c.unsigned_abs() <= 1 << 24)),
            _ => false,
        };
        // values only for small integer tensors whose size matches their shape
        let keep = (is_int(*t) || exact_floats && o.value.as_ref().is_some_and(exact))
            && o.value.as_ref().is_some_and(|v| {
                v.len() <= MAX_VALUE_ELEMENTS
                    && o.shape.as_ref().is_some_and(|s| {
                        s.len() <= 1
                            && product(s).and_then(|p| p.as_const()) == Some(v.len() as i64)
                    })
            });
        if !keep {
            o.value = None;
        }
    }
    outs
}

fn rule(
    node: &NodeProto,
    opset: i64,
    ins: &Inputs,
    out_types: &[Option<DataType>],
    fresh: &mut Fresh,
) -> Option<Vec<Out>> {
    let op = node.op_type();
    if SAME_SHAPE.contains(&op) {
        let out = out_types.first().copied().flatten();
        let keeps_value = matches!(op, "Identity" | "Cast" | "CastLike" | "Neg" | "Abs")
            && (is_int(out)
                || op == "Cast" && matches!(out, Some(DataType::Float | DataType::Double)));
        let value = ins.value(0).filter(|_| keeps_value).map(|v| match op {
            "Neg" => v
                .iter()
                .map(|d| d.mul(&Dim::constant(-1)))
                .collect::<Option<Vec<_>>>(),
            "Abs" => v
                .iter()
                .map(|d| d.as_const().map(|c| Dim::constant(c.abs())))
                .collect::<Option<Vec<_>>>(),
            _ => Some(v.to_vec()),
        });
        return Some(vec![Out {
            shape: Some(ins.shape(0)?.to_vec()),
            value: value.flatten(),
        }]);
    }
    if opset < 7 && LEGACY_BROADCAST.contains(&op) && attr_i(node, "broadcast", 0) != 0 {
        // before opset 7, B is broadcast into A (from `axis`, or aligned to its last axes):
        // the result has A's shape
        return Some(vec![Out {
            shape: Some(ins.shape(0)?.to_vec()),
            value: None,
        }]);
    }
    if BROADCAST.contains(&op) {
        let shapes: Vec<Option<&[Dim]>> = (0..node.input.len()).map(|k| ins.shape(k)).collect();
        let shape = broadcast_all(&shapes, fresh)?;
        let value = elementwise_value(op, ins, &shape);
        return Some(vec![Out {
            shape: Some(shape),
            value,
        }]);
    }
    let one = |o: Out| Some(vec![o]);
    match op {
        "Constant" => None, // the engine reads the tensor
        "Dropout" => {
            let s = ins.shape(0)?.to_vec();
            Some(vec![shaped(s.clone()), shaped(s)])
        }
        "Shape" => {
            // of a value of unknown rank: a list of unknown length
            let Some(s) = ins.shape(0) else {
                return one(shaped(vec![fresh.dim()]));
            };
            let r = s.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clamp(attr_i(node, "start", 0));
            let end = clamp(attr(node, "end").and_then(|a| a.i).unwrap_or(r));
            let v: Vec<Dim> = s.get(start..end.max(start)).unwrap_or(&[]).to_vec();
            one(with_value(vec![Dim::constant(v.len() as i64)], v))
        }
        "Size" => {
            let size = ins.shape(0).and_then(product);
            Some(vec![Out {
                shape: Some(vec![]),
                value: size.map(|d| vec![d]),
            }])
        }
        "Gather" => gather(node, ins),
        "GatherElements" => one(shaped(ins.shape(1)?.to_vec())),
        "GatherND" => gather_nd(node, ins),
        "Slice" => slice(node, opset, ins, fresh),
        "Concat" => concat(node, ins),
        "Unsqueeze" => unsqueeze(node, opset, ins),
        "Squeeze" => squeeze(node, opset, ins),
        "Reshape" => reshape(node, ins, fresh),
        "Flatten" => {
            let s = ins.shape(0)?;
            let a = attr_i(node, "axis", 1);
            let a = if a < 0 { a + s.len() as i64 } else { a };
            let a = usize::try_from(a).ok().filter(|&a| a <= s.len())?;
            let left = product(&s[..a]).unwrap_or_else(|| fresh.dim());
            let right = product(&s[a..]).unwrap_or_else(|| fresh.dim());
            one(shaped(vec![left, right]))
        }
        "Transpose" => {
            let s = ins.shape(0)?;
            let perm = match attr_ints(node, "perm") {
                Some(p) if !p.is_empty() => p,
                _ => (0..s.len() as i64).rev().collect(),
            };
            let out: Option<Shape> = perm
                .iter()
                .map(|&p| usize::try_from(p).ok().and_then(|p| s.get(p)).cloned())
                .collect();
            one(shaped(out.filter(|o| o.len() == s.len())?))
        }
        "Expand" => {
            let s = ins.shape(0)?;
            let target = match ins.value(1) {
                Some(v) => v.to_vec(),
                None => fresh.dims(ins.shape(1).and_then(|s| s.first()?.as_const())? as usize),
            };
            one(shaped(broadcast(s, &target, fresh)?))
        }
        "ConstantOfShape" => {
            let dims = ins.value(0)?.to_vec();
            let fill = attr(node, "value")
                .and_then(|a| a.t.as_ref())
                .and_then(small_int_tensor)
                .and_then(|v| v.first().cloned())
                .unwrap_or_else(|| Dim::constant(0));
            let count = product(&dims).and_then(|p| p.as_const());
            let value = count
                .filter(|&c| (0..=MAX_VALUE_ELEMENTS as i64).contains(&c))
                .map(|c| vec![fill; c as usize]);
            one(Out {
                shape: Some(dims),
                value,
            })
        }
        "Tile" => {
            let s = ins.shape(0)?;
            let reps = ins.value(1);
            let out = match reps {
                Some(r) if r.len() == s.len() => s
                    .iter()
                    .zip(r)
                    .map(|(d, k)| fresh_on_none(d.mul(k), fresh))
                    .collect(),
                _ => fresh.dims(s.len()),
            };
            one(shaped(out))
        }
        "MatMul" | "MatMulInteger" => one(shaped(matmul(ins.shape(0)?, ins.shape(1)?, fresh)?)),
        "QLinearMatMul" => one(shaped(matmul(ins.shape(0)?, ins.shape(3)?, fresh)?)),
        "Gemm" => {
            let (a, b) = (ins.shape(0)?, ins.shape(1)?);
            if a.len() != 2 || b.len() != 2 {
                return None;
            }
            let m = if attr_i(node, "transA", 0) != 0 {
                &a[1]
            } else {
                &a[0]
            };
            let nn = if attr_i(node, "transB", 0) != 0 {
                &b[0]
            } else {
                &b[1]
            };
            one(shaped(vec![m.clone(), nn.clone()]))
        }
        "Conv" | "ConvInteger" => one(shaped(conv(node, ins.shape(0)?, ins.shape(1), fresh)?)),
        "QLinearConv" => one(shaped(conv(node, ins.shape(0)?, ins.shape(3), fresh)?)),
        "ConvTranspose" => one(shaped(conv_transpose(node, ins, fresh)?)),
        "MaxPool" | "AveragePool" | "LpPool" => {
            let s = conv(node, ins.shape(0)?, None, fresh)?;
            Some(vec![shaped(s.clone()), shaped(s)])
        }
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => {
            let s = ins.shape(0)?;
            let mut out = s.to_vec();
            for d in out.iter_mut().skip(2) {
                *d = Dim::constant(1);
            }
            one(shaped(out))
        }
        "BatchNormalization" => {
            let s = ins.shape(0)?.to_vec();
            let c = s.get(1).cloned();
            let mut v = vec![shaped(s)];
            for _ in 1..node.output.len() {
                v.push(Out {
                    shape: c.clone().map(|c| vec![c]),
                    value: None,
                });
            }
            Some(v)
        }
        "LayerNormalization" => {
            let s = ins.shape(0)?.to_vec();
            let a = axis(attr_i(node, "axis", -1), s.len())?;
            let stats: Shape = s
                .iter()
                .enumerate()
                .map(|(i, d)| if i >= a { Dim::constant(1) } else { d.clone() })
                .collect();
            Some(vec![shaped(s), shaped(stats.clone()), shaped(stats)])
        }
        "DynamicQuantizeLinear" => Some(vec![
            shaped(ins.shape(0)?.to_vec()),
            shaped(vec![]),
            shaped(vec![]),
        ]),
        "ReduceMax" | "ReduceMin" | "ReduceMean" | "ReduceSum" | "ReduceProd" | "ReduceL1"
        | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" => {
            reduce(node, opset, ins)
        }
        "ArgMax" | "ArgMin" => {
            let s = ins.shape(0)?;
            let a = axis(attr_i(node, "axis", 0), s.len())?;
            one(shaped(reduce_dims(
                s,
                &[a],
                attr_i(node, "keepdims", 1) != 0,
            )))
        }
        "Split" => split(node, opset, ins, fresh),
        "Pad" => pad(node, opset, ins, fresh),
        "Resize" | "Upsample" => resize(node, opset, ins, fresh),
        "Range" => {
            // integers, or floats that are whole numbers (a float Range's constant start and
            // step; its limit cast from a size keeps the size as its value)
            let number = |k: usize| {
                // a float32 constant, read as the f32 it is (a float64 narrowed to f32 could
                // look whole and not be)
                let whole = |f: &Fact| {
                    let x = *f.float_value.as_ref()?.first()?;
                    (f.elem_type == Some(DataType::Float)
                        && x.fract() == 0.0
                        && x.abs() < (1u32 << 24) as f32)
                        .then(|| vec![Dim::constant(x as i64)])
                };
                ins.value(k)
                    .map(<[Dim]>::to_vec)
                    .or_else(|| ins.fact(k).and_then(whole))
            };
            let (start, limit, delta) = (number(0), number(1), number(2));
            let (start, limit, delta) = (start.as_deref(), limit.as_deref(), delta.as_deref());
            let consts = |v: Option<&[Dim]>| v.and_then(|v| v.first()?.as_const());
            let len = match (consts(start), consts(limit), consts(delta)) {
                (Some(s), Some(l), Some(d)) if d != 0 => {
                    let n = (l - s + d - d.signum()).checked_div(d).unwrap_or(0).max(0);
                    Some(n)
                }
                _ => None,
            };
            let value = match (consts(start), consts(delta), len) {
                (Some(s), Some(d), Some(n)) if n as usize <= MAX_VALUE_ELEMENTS => {
                    Some((0..n).map(|i| Dim::constant(s + i * d)).collect())
                }
                _ => None,
            };
            // start 0, step 1 over a symbolic limit: the length is the limit
            let sym_len = match (consts(start), consts(delta), limit) {
                (Some(0), Some(1), Some([l])) if l.is_size() => Some(l.clone()),
                _ => None,
            };
            let dim = len.map(Dim::constant).or(sym_len);
            one(Out {
                shape: Some(vec![fresh.or_fresh(dim)]),
                value,
            })
        }
        "TopK" => {
            let s = ins.shape(0)?;
            let a = axis(attr_i(node, "axis", -1), s.len())?;
            let k = if opset < 10 {
                attr(node, "k").and_then(|a| a.i).map(Dim::constant)
            } else {
                ins.value(1).and_then(|v| v.first().cloned())
            };
            let mut out = s.to_vec();
            out[a] = fresh.or_fresh(k);
            Some(vec![shaped(out.clone()), shaped(out)])
        }
        "NonZero" => one(shaped(vec![
            Dim::constant(ins.rank(0)? as i64),
            fresh.dim(),
        ])),
        "NonMaxSuppression" => one(shaped(vec![fresh.dim(), Dim::constant(3)])),
        "Compress" => {
            let s = ins.shape(0)?;
            match attr(node, "axis").and_then(|a| a.i) {
                None => one(shaped(vec![fresh.dim()])),
                Some(a) => {
                    let a = axis(a, s.len())?;
                    let mut out = s.to_vec();
                    out[a] = fresh.dim();
                    one(shaped(out))
                }
            }
        }
        "OneHot" => {
            let s = ins.shape(0)?;
            let depth = ins.value(1).and_then(|v| v.first().cloned());
            let a = axis(attr_i(node, "axis", -1), s.len() + 1)?;
            let mut out = s.to_vec();
            out.insert(a, fresh.or_fresh(depth));
            one(shaped(out))
        }
        "DepthToSpace" | "SpaceToDepth" => {
            let s = ins.shape(0)?;
            let b = attr_i(node, "blocksize", 0);
            if s.len() != 4 || b <= 0 {
                return None;
            }
            let bb = Dim::constant(b);
            let b2 = Dim::constant(b * b);
            let out = if op == "DepthToSpace" {
                vec![
                    s[0].clone(),
                    fresh_on_none(s[1].exact_div(&b2), fresh),
                    fresh_on_none(s[2].mul(&bb), fresh),
                    fresh_on_none(s[3].mul(&bb), fresh),
                ]
            } else {
                vec![
                    s[0].clone(),
                    fresh_on_none(s[1].mul(&b2), fresh),
                    fresh_on_none(s[2].exact_div(&bb), fresh),
                    fresh_on_none(s[3].exact_div(&bb), fresh),
                ]
            };
            one(shaped(out))
        }
        "Einsum" => one(shaped(einsum(node, ins, fresh)?)),
        "LSTM" | "GRU" | "RNN" => rnn(node, ins),
        "RandomNormal" | "RandomUniform" => one(shaped(
            attr_ints(node, "shape")?
                .into_iter()
                .map(Dim::constant)
                .collect(),
        )),
        "GridSample" => {
            let (x, g) = (ins.shape(0)?, ins.shape(1)?);
            if x.len() < 3 || g.len() != x.len() {
                return None;
            }
            let mut out = vec![x[0].clone(), x[1].clone()];
            out.extend(g[1..g.len() - 1].iter().cloned());
            one(shaped(out))
        }
        "RoiAlign" | "MaxRoiPool" => {
            let x = ins.shape(0)?;
            let rois = ins.shape(1)?;
            let (h, w) = if op == "RoiAlign" {
                (
                    attr_i(node, "output_height", 1),
                    attr_i(node, "output_width", 1),
                )
            } else {
                let p = attr_ints(node, "pooled_shape")?;
                (*p.first()?, *p.get(1)?)
            };
            one(shaped(vec![
                rois.first()?.clone(),
                x.get(1)?.clone(),
                Dim::constant(h),
                Dim::constant(w),
            ]))
        }
        "Det" => {
            let s = ins.shape(0)?;
            one(shaped(s.get(..s.len().checked_sub(2)?)?.to_vec()))
        }
        "Unique" => {
            let u = fresh.dim();
            let mut v = vec![];
            match attr(node, "axis").and_then(|a| a.i) {
                None => v.push(shaped(vec![u.clone()])),
                Some(a) => {
                    let s = ins.shape(0)?;
                    let a = axis(a, s.len())?;
                    let mut out = s.to_vec();
                    out[a] = u.clone();
                    v.push(shaped(out));
                }
            }
            v.push(shaped(vec![u.clone()]));
            // inverse indices: one per element, or per slice along the axis
            let s = ins.shape(0);
            let inverse = match attr(node, "axis").and_then(|a| a.i) {
                None => s.and_then(product),
                Some(a) => s.and_then(|s| s.get(axis(a, s.len())?).cloned()),
            };
            v.push(shaped(vec![fresh.or_fresh(inverse)]));
            v.push(shaped(vec![u]));
            Some(v)
        }
        _ => None,
    }
}

fn fresh_on_none(d: Option<Dim>, fresh: &mut Fresh) -> Dim {
    fresh.or_fresh(d)
}

/// Integer values of a small tensor held in an attribute (ConstantOfShape's `value`).
fn small_int_tensor(t: &crate::onnx::proto::TensorProto) -> Option<Vec<Dim>> {
    let data = crate::onnx::TensorData::new(t, None).ok()?;
    super::int_values(&data)
}

/// Element-wise arithmetic on known values (shape arithmetic in exported graphs).
fn elementwise_value(op: &str, ins: &Inputs, shape: &[Dim]) -> Option<Vec<Dim>> {
    let count = product(shape)?.as_const()?;
    if !(0..=MAX_VALUE_ELEMENTS as i64).contains(&count) || shape.len() > 1 {
        return None;
    }
    let count = count as usize;
    let operand = |k: usize| -> Option<Vec<Dim>> {
        let v = ins.value(k)?;
        match v.len() {
            1 => Some(vec![v[0].clone(); count]),
            n if n == count => Some(v.to_vec()),
            _ => None,
        }
    };
    let bool_dim = |b: bool| Dim::constant(b as i64);
    let ints = |a: &Dim, b: &Dim| Some((a.as_const()?, b.as_const()?));
    match op {
        "Where" => {
            let (c, x, y) = (operand(0)?, operand(1)?, operand(2)?);
            c.iter()
                .zip(x.iter().zip(&y))
                .map(|(c, (x, y))| match c.as_const()? {
                    0 => Some(y.clone()),
                    _ => Some(x.clone()),
                })
                .collect()
        }
        _ => {
            let (a, b) = (operand(0)?, operand(1)?);
            a.iter()
                .zip(&b)
                .map(|(a, b)| match op {
                    "Add" | "Sum" => a.add(b),
                    "Sub" => a.sub(b),
                    "Mul" => a.mul(b),
                    // integer division truncates; exact for sizes divided by a positive number
                    "Div" => match ints(a, b) {
                        Some((x, y)) if y != 0 => x.checked_div(y).map(Dim::constant),
                        _ => b
                            .as_const()
                            .filter(|&y| y > 0 && a.is_size())
                            .and_then(|y| a.floor_div(y)),
                    },
                    "Mod" => ints(a, b)
                        .and_then(|(x, y)| x.checked_rem_euclid(y))
                        .map(Dim::constant),
                    "Max" => a.max_known(b),
                    "Min" => a.min_known(b),
                    "Equal" => match ints(a, b) {
                        Some((x, y)) => Some(bool_dim(x == y)),
                        None if a == b => Some(bool_dim(true)),
                        // a size is never negative: `dim == -1` is false
                        None => match (a.as_const(), b.as_const()) {
                            (Some(x), None) if x < 0 && b.is_size() => Some(bool_dim(false)),
                            (None, Some(y)) if y < 0 && a.is_size() => Some(bool_dim(false)),
                            _ => None,
                        },
                    },
                    "Less" => ints(a, b).map(|(x, y)| bool_dim(x < y)),
                    "Greater" => ints(a, b).map(|(x, y)| bool_dim(x > y)),
                    "LessOrEqual" => ints(a, b).map(|(x, y)| bool_dim(x <= y)),
                    "GreaterOrEqual" => ints(a, b).map(|(x, y)| bool_dim(x >= y)),
                    "And" => ints(a, b).map(|(x, y)| bool_dim(x != 0 && y != 0)),
                    "Or" => ints(a, b).map(|(x, y)| bool_dim(x != 0 || y != 0)),
                    _ => None,
                })
                .collect()
        }
    }
}

fn gather(node: &NodeProto, ins: &Inputs) -> Option<Vec<Out>> {
    let data = ins.shape(0)?;
    let indices = ins.shape(1)?;
    let a = axis(attr_i(node, "axis", 0), data.len())?;
    let mut out: Shape = data[..a].to_vec();
    out.extend(indices.iter().cloned());
    out.extend(data[a + 1..].iter().cloned());
    let value = match (ins.value(0), ins.ints(1)) {
        (Some(v), Some(idx)) if data.len() == 1 => idx
            .iter()
            .map(|&i| {
                let i = if i < 0 { i + v.len() as i64 } else { i };
                usize::try_from(i).ok().and_then(|i| v.get(i)).cloned()
            })
            .collect(),
        _ => None,
    };
    Some(vec![Out {
        shape: Some(out),
        value,
    }])
}

fn gather_nd(node: &NodeProto, ins: &Inputs) -> Option<Vec<Out>> {
    let data = ins.shape(0)?;
    let idx = ins.shape(1)?;
    let b = usize::try_from(attr_i(node, "batch_dims", 0)).ok()?;
    let last = usize::try_from(idx.last()?.as_const()?).ok()?;
    let mut out: Shape = idx[..idx.len() - 1].to_vec();
    out.extend(data.get(b + last..)?.iter().cloned());
    Some(vec![shaped(out)])
}

/// Slice parameters: from attributes before opset 10, from constant inputs since.
fn slice(node: &NodeProto, opset: i64, ins: &Inputs, fresh: &mut Fresh) -> Option<Vec<Out>> {
    let s = ins.shape(0)?;
    let (starts, ends, axes, steps) = if opset < 10 {
        (
            attr_ints(node, "starts")?,
            attr_ints(node, "ends")?,
            attr_ints(node, "axes"),
            None,
        )
    } else {
        let optional = |k: usize| match node.input.get(k).filter(|i| !i.is_empty()) {
            Some(_) => ins.ints(k).map(Some),
            None => Some(None),
        };
        match (ins.ints(1), ins.ints(2)) {
            (Some(starts), Some(ends)) => (starts, ends, optional(3)?, optional(4)?),
            (Some(starts), None) => {
                return slice_to_symbolic_end(s, &starts, ins, optional(3)?, optional(4)?);
            }
            _ => return None,
        }
    };
    let axes = match axes {
        Some(a) => a,
        None => (0..starts.len() as i64).collect(),
    };
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return None;
    }
    let mut out = s.to_vec();
    let mut seen = vec![false; s.len()];
    for k in 0..starts.len() {
        let a = axis(axes[k], s.len())?;
        if std::mem::replace(&mut seen[a], true) {
            return None;
        }
        out[a] = slice_dim(&s[a], starts[k], ends[k], steps[k]).unwrap_or_else(|| fresh.dim());
    }
    let value = match (ins.value(0), s.len()) {
        (Some(v), 1) => slice_values(v, starts[0], ends[0], steps[0]),
        _ => None,
    };
    Some(vec![Out {
        shape: Some(out),
        value,
    }])
}

/// `x[..., 0:end]` where `end` is a size known only symbolically (`Shape(ids)[1]`): the result
/// is `min(dim, end)` along that axis.
fn slice_to_symbolic_end(
    s: &[Dim],
    starts: &[i64],
    ins: &Inputs,
    axes: Option<Vec<i64>>,
    steps: Option<Vec<i64>>,
) -> Option<Vec<Out>> {
    let ends = ins.value(2)?;
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return None;
    }
    let mut out = s.to_vec();
    for k in 0..starts.len() {
        let a = axis(axes[k], s.len())?;
        let whole = ends[k].as_const().is_some_and(|e| e >= 1 << 30);
        if starts[k] != 0 || steps[k] != 1 || !(ends[k].is_size() || whole) {
            return None;
        }
        if !whole {
            out[a] = s[a].min_of(&ends[k]);
        }
    }
    Some(vec![shaped(out)])
}

/// The clamped start and end of a slice over a dim of `len` elements (the spec's rule).
fn slice_bounds(len: i64, start: i64, end: i64, step: i64) -> (i64, i64) {
    // nothing to clamp into: an empty slice
    if len <= 0 {
        return (0, 0);
    }
    let fix = |v: i64| if v < 0 { v.saturating_add(len) } else { v };
    let (s, e) = (fix(start), fix(end));
    if step > 0 {
        (s.clamp(0, len), e.clamp(0, len))
    } else {
        (s.clamp(0, len - 1), e.clamp(-1, len - 1))
    }
}

fn slice_len(len: i64, start: i64, end: i64, step: i64) -> Option<i64> {
    if step == 0 {
        return None;
    }
    let (s, e) = slice_bounds(len, start, end, step);
    let n = if step > 0 {
        (e - s + step - 1).div_euclid(step)
    } else {
        (s - e + (-step) - 1).div_euclid(-step)
    };
    Some(n.max(0))
}

fn slice_dim(d: &Dim, start: i64, end: i64, step: i64) -> Option<Dim> {
    if let Some(len) = d.as_const() {
        return slice_len(len, start, end, step).map(Dim::constant);
    }
    // symbolic: the common whole-tail and fixed-head cases, assuming the dim is long enough
    // (a model exported for such inputs); anything else is unknown
    const BIG: i64 = 1 << 30;
    match (start, end, step) {
        (0, e, 1) if e >= BIG => Some(d.clone()),
        (s, e, 1) if s > 0 && e >= BIG => d.sub(&Dim::constant(s)),
        (s, e, 1) if s < 0 && e >= BIG => Some(Dim::constant(-s)),
        (0, e, 1) if e < 0 => d.add(&Dim::constant(e)),
        (s, e, 1) if s > 0 && e < 0 => d.add(&Dim::constant(e - s)),
        (s, e, 1) if s < 0 && e < 0 && e >= s => Some(Dim::constant(e - s)),
        (-1, e, -1) if e <= -BIG => Some(d.clone()),
        _ => None,
    }
}

fn slice_values(v: &[Dim], start: i64, end: i64, step: i64) -> Option<Vec<Dim>> {
    let len = v.len() as i64;
    let n = slice_len(len, start, end, step)?;
    let (s, _) = slice_bounds(len, start, end, step);
    (0..n)
        .map(|i| {
            usize::try_from(s + i * step)
                .ok()
                .and_then(|k| v.get(k))
                .cloned()
        })
        .collect()
}

fn concat(node: &NodeProto, ins: &Inputs) -> Option<Vec<Out>> {
    let shapes: Vec<&[Dim]> = (0..node.input.len())
        .map(|k| ins.shape(k))
        .collect::<Option<_>>()?;
    let first = shapes.first()?;
    let a = axis(attr_i(node, "axis", 0), first.len())?;
    if shapes.iter().any(|s| s.len() != first.len()) {
        return None;
    }
    let mut out = first.to_vec();
    out[a] = shapes
        .iter()
        .try_fold(Dim::constant(0), |acc, s| acc.add(&s[a]))?;
    for (i, d) in out.iter_mut().enumerate() {
        if i != a && d.as_const().is_none() {
            // another input may know this dim as a number
            if let Some(c) = shapes.iter().find(|s| s[i].as_const().is_some()) {
                *d = c[i].clone();
            }
        }
    }
    let value = if first.len() == 1 {
        (0..node.input.len())
            .map(|k| ins.value(k).map(<[Dim]>::to_vec))
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.concat())
    } else {
        None
    };
    Some(vec![Out {
        shape: Some(out),
        value,
    }])
}

/// Squeeze/Unsqueeze axes: the attribute before opset 13, the input since.
fn axes_param(node: &NodeProto, opset: i64, ins: &Inputs, since: i64) -> Option<Option<Vec<i64>>> {
    if opset < since {
        Some(attr_ints(node, "axes"))
    } else if ins.present(1) {
        Some(Some(ins.ints(1)?))
    } else if node.input.get(1).is_some_and(|i| !i.is_empty()) {
        None // given but not known
    } else {
        Some(None)
    }
}

fn unsqueeze(node: &NodeProto, opset: i64, ins: &Inputs) -> Option<Vec<Out>> {
    let s = ins.shape(0)?;
    let axes = axes_param(node, opset, ins, 13)??;
    let rank = s.len() + axes.len();
    let axes = axes_of(&axes, rank)?;
    let mut out = Vec::with_capacity(rank);
    let mut it = s.iter();
    for i in 0..rank {
        if axes.contains(&i) {
            out.push(Dim::constant(1));
        } else {
            out.push(it.next()?.clone());
        }
    }
    let value = ins.value(0).map(<[Dim]>::to_vec);
    Some(vec![Out {
        shape: Some(out),
        value,
    }])
}

fn squeeze(node: &NodeProto, opset: i64, ins: &Inputs) -> Option<Vec<Out>> {
    let s = ins.shape(0)?;
    let axes = match axes_param(node, opset, ins, 13)? {
        Some(a) if !a.is_empty() => axes_of(&a, s.len())?,
        _ => {
            // every dim of size 1: only decidable when no dim is symbolic
            if s.iter().any(|d| d.as_const().is_none()) {
                return None;
            }
            (0..s.len())
                .filter(|&i| s[i].as_const() == Some(1))
                .collect()
        }
    };
    let out: Shape = s
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, d)| d.clone())
        .collect();
    let value = ins.value(0).map(<[Dim]>::to_vec);
    Some(vec![Out {
        shape: Some(out),
        value,
    }])
}

fn reshape(node: &NodeProto, ins: &Inputs, fresh: &mut Fresh) -> Option<Vec<Out>> {
    let allowzero = attr_i(node, "allowzero", 0) != 0;
    let target: Vec<Dim> = match (ins.value(1), attr_ints(node, "shape")) {
        (Some(v), _) => v.to_vec(),
        (None, Some(s)) if node.input.len() == 1 => s.into_iter().map(Dim::constant).collect(),
        _ => {
            let n = ins.shape(1)?.first()?.as_const()?;
            return Some(vec![shaped(fresh.dims(usize::try_from(n).ok()?))]);
        }
    };
    let input = ins.shape(0);
    let mut out: Vec<Option<Dim>> = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, d) in target.iter().enumerate() {
        match d.as_const() {
            Some(0) if !allowzero => out.push(input.and_then(|s| s.get(i)).cloned()),
            Some(-1) => {
                if infer_at.replace(i).is_some() {
                    return None;
                }
                out.push(None);
            }
            Some(v) if v < 0 => return None,
            _ => out.push(Some(d.clone())),
        }
    }
    if let (Some(k), Some(s)) = (infer_at, input) {
        let known: Option<Vec<Dim>> = out
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != k)
            .map(|(_, d)| d.clone())
            .collect();
        out[k] = known.and_then(|known| product(s)?.exact_div(&product(&known)?));
    }
    let shape = out.into_iter().map(|d| fresh.or_fresh(d)).collect();
    Some(vec![Out {
        shape: Some(shape),
        value: ins.value(0).map(<[Dim]>::to_vec),
    }])
}

fn matmul(a: &[Dim], b: &[Dim], fresh: &mut Fresh) -> Option<Shape> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (a2, a_vec) = if a.len() == 1 {
        (vec![Dim::constant(1), a[0].clone()], true)
    } else {
        (a.to_vec(), false)
    };
    let (b2, b_vec) = if b.len() == 1 {
        (vec![b[0].clone(), Dim::constant(1)], true)
    } else {
        (b.to_vec(), false)
    };
    let batch = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2], fresh)?;
    let mut out = batch;
    if !a_vec {
        out.push(a2[a2.len() - 2].clone());
    }
    if !b_vec {
        out.push(b2[b2.len() - 1].clone());
    }
    Some(out)
}

/// Spatial output sizes of Conv and the pools: explicit pads, or `auto_pad`.
fn conv(node: &NodeProto, x: &[Dim], w: Option<&[Dim]>, fresh: &mut Fresh) -> Option<Shape> {
    if x.len() < 3 {
        return None;
    }
    let spatial = x.len() - 2;
    let kernel: Vec<Dim> = match attr_ints(node, "kernel_shape") {
        Some(k) if !k.is_empty() => k.into_iter().map(Dim::constant).collect(),
        _ => w?.get(2..)?.to_vec(),
    };
    if kernel.len() != spatial {
        return None;
    }
    let ints = |name: &str, default: i64, n: usize| match attr_ints(node, name) {
        Some(v) if !v.is_empty() => v,
        _ => vec![default; n],
    };
    let strides = ints("strides", 1, spatial);
    let dilations = ints("dilations", 1, spatial);
    let pads = ints("pads", 0, 2 * spatial);
    if strides.len() != spatial || dilations.len() != spatial || pads.len() != 2 * spatial {
        return None;
    }
    let auto_pad = attr_s(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
    let ceil_mode = attr_i(node, "ceil_mode", 0) != 0;
    let channels = match (node.op_type(), w) {
        ("Conv" | "ConvInteger" | "QLinearConv", Some(w)) => w.first()?.clone(),
        ("Conv" | "ConvInteger" | "QLinearConv", None) => fresh.dim(),
        _ => x[1].clone(),
    };
    let mut out = vec![x[0].clone(), channels];
    for i in 0..spatial {
        let d = &x[i + 2];
        let s = strides[i];
        if s <= 0 {
            return None;
        }
        let dim = match auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => d.ceil_div(s),
            "VALID" => {
                // ceil((d - ((k - 1) * dil + 1) + 1) / s)
                let span = kernel[i]
                    .sub(&Dim::constant(1))?
                    .mul(&Dim::constant(dilations[i]))?;
                d.sub(&span)?.ceil_div(s)
            }
            _ => {
                let span = kernel[i]
                    .sub(&Dim::constant(1))?
                    .mul(&Dim::constant(dilations[i]))?
                    .add(&Dim::constant(1))?;
                let padded = d
                    .add(&Dim::constant(pads[i] + pads[i + spatial]))?
                    .sub(&span)?;
                let q = if ceil_mode {
                    let q = padded.ceil_div(s)?;
                    // a last window must start inside the input or left padding (spec, pools)
                    match (q.as_const(), d.as_const()) {
                        (Some(qv), Some(dv)) if qv * s >= dv + pads[i] => {
                            Some(Dim::constant(qv - 1))
                        }
                        (Some(_), Some(_)) => Some(q),
                        _ if s == 1 => Some(q),
                        _ => None,
                    }
                } else {
                    padded.floor_div(s)
                };
                q.and_then(|q| q.add(&Dim::constant(1)))
            }
        };
        out.push(fresh.or_fresh(dim));
    }
    Some(out)
}

fn conv_transpose(node: &NodeProto, ins: &Inputs, fresh: &mut Fresh) -> Option<Shape> {
    let x = ins.shape(0)?;
    let w = ins.shape(1)?;
    if x.len() < 3 || w.len() != x.len() {
        return None;
    }
    let spatial = x.len() - 2;
    let group = attr_i(node, "group", 1);
    let channels = w[1].mul(&Dim::constant(group));
    let mut out = vec![x[0].clone(), fresh.or_fresh(channels)];
    if let Some(shape) = attr_ints(node, "output_shape").filter(|s| !s.is_empty()) {
        let tail = shape.get(shape.len().checked_sub(spatial)?..)?;
        out.extend(tail.iter().map(|&v| Dim::constant(v)));
        return Some(out);
    }
    let ints = |name: &str, default: i64, n: usize| match attr_ints(node, name) {
        Some(v) if !v.is_empty() => v,
        _ => vec![default; n],
    };
    let kernel: Vec<Dim> = match attr_ints(node, "kernel_shape") {
        Some(k) if !k.is_empty() => k.into_iter().map(Dim::constant).collect(),
        _ => w[2..].to_vec(),
    };
    let strides = ints("strides", 1, spatial);
    let dilations = ints("dilations", 1, spatial);
    let pads = ints("pads", 0, 2 * spatial);
    let output_padding = ints("output_padding", 0, spatial);
    let auto_pad = attr_s(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
    if kernel.len() != spatial
        || strides.len() != spatial
        || dilations.len() != spatial
        || pads.len() != 2 * spatial
        || output_padding.len() != spatial
    {
        return None;
    }
    for i in 0..spatial {
        let d = &x[i + 2];
        let dim = match auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => d.mul(&Dim::constant(strides[i])),
            _ => {
                // stride * (d - 1) + output_padding + ((k - 1) * dilation + 1) - pads
                let span = kernel[i]
                    .sub(&Dim::constant(1))
                    .and_then(|k| k.mul(&Dim::constant(dilations[i])))
                    .and_then(|k| k.add(&Dim::constant(1)));
                d.sub(&Dim::constant(1))
                    .and_then(|v| v.mul(&Dim::constant(strides[i])))
                    .and_then(|v| {
                        v.add(&Dim::constant(
                            output_padding[i] - pads[i] - pads[i + spatial],
                        ))
                    })
                    .and_then(|v| v.add(&span?))
            }
        };
        out.push(fresh.or_fresh(dim));
    }
    Some(out)
}

fn reduce_dims(s: &[Dim], axes: &[usize], keep: bool) -> Shape {
    s.iter()
        .enumerate()
        .filter_map(|(i, d)| match (axes.contains(&i), keep) {
            (false, _) => Some(d.clone()),
            (true, true) => Some(Dim::constant(1)),
            (true, false) => None,
        })
        .collect()
}

fn reduce(node: &NodeProto, opset: i64, ins: &Inputs) -> Option<Vec<Out>> {
    let s = ins.shape(0)?;
    let keep = attr_i(node, "keepdims", 1) != 0;
    let axes_from_input = if node.op_type() == "ReduceSum" {
        opset >= 13
    } else {
        opset >= 18
    };
    let axes = if axes_from_input {
        if ins.present(1) || node.input.get(1).is_some_and(|i| !i.is_empty()) {
            Some(ins.ints(1)?)
        } else {
            None
        }
    } else {
        attr_ints(node, "axes")
    };
    let axes = match axes {
        Some(a) if !a.is_empty() => axes_of(&a, s.len())?,
        _ if attr_i(node, "noop_with_empty_axes", 0) != 0 => {
            return Some(vec![shaped(s.to_vec())]);
        }
        _ => (0..s.len()).collect(),
    };
    Some(vec![shaped(reduce_dims(s, &axes, keep))])
}

fn split(node: &NodeProto, opset: i64, ins: &Inputs, fresh: &mut Fresh) -> Option<Vec<Out>> {
    let s = ins.shape(0)?;
    let a = axis(attr_i(node, "axis", 0), s.len())?;
    let n = node.output.len();
    let sizes: Vec<Dim> = {
        let given = if opset >= 13 {
            if node.input.get(1).is_some_and(|i| !i.is_empty()) {
                Some(ins.ints(1))
            } else {
                None
            }
        } else {
            attr_ints(node, "split").filter(|v| !v.is_empty()).map(Some)
        };
        match given {
            Some(Some(v)) if v.len() == n => v.into_iter().map(Dim::constant).collect(),
            Some(_) => (0..n).map(|_| fresh.dim()).collect(),
            None => match s[a].as_const() {
                Some(len) if n > 0 && len >= 0 => {
                    let chunk = (len + n as i64 - 1) / n as i64;
                    (0..n as i64)
                        .map(|i| Dim::constant((len - i * chunk).clamp(0, chunk)))
                        .collect()
                }
                _ => {
                    let part = s[a].exact_div(&Dim::constant(n.max(1) as i64));
                    let d = fresh.or_fresh(part);
                    vec![d; n]
                }
            },
        }
    };
    Some(
        sizes
            .into_iter()
            .map(|d| {
                let mut o = s.to_vec();
                o[a] = d;
                shaped(o)
            })
            .collect(),
    )
}

fn pad(node: &NodeProto, opset: i64, ins: &Inputs, fresh: &mut Fresh) -> Option<Vec<Out>> {
    let s = ins.shape(0)?;
    let r = s.len();
    let pads = if opset < 11 {
        attr_ints(node, "pads")
    } else {
        ins.ints(1)
    };
    let axes: Vec<usize> = if opset >= 18 && node.input.get(3).is_some_and(|i| !i.is_empty()) {
        match ins.ints(3) {
            Some(a) => axes_of(&a, r)?,
            None => return Some(vec![shaped(fresh.dims(r))]),
        }
    } else {
        (0..r).collect()
    };
    let Some(pads) = pads.filter(|p| p.len() == 2 * axes.len()) else {
        return Some(vec![shaped(fresh.dims(r))]);
    };
    let mut out = s.to_vec();
    for (k, &a) in axes.iter().enumerate() {
        out[a] = fresh.or_fresh(out[a].add(&Dim::constant(pads[k] + pads[k + axes.len()])));
    }
    Some(vec![shaped(out)])
}

fn resize(node: &NodeProto, opset: i64, ins: &Inputs, fresh: &mut Fresh) -> Option<Vec<Out>> {
    let s = ins.shape(0)?;
    let r = s.len();
    // sizes (Resize 11+, input 3) win over scales
    if node.op_type() == "Resize" && opset >= 11 && node.input.get(3).is_some_and(|i| !i.is_empty())
    {
        let Some(sizes) = ins.value(3) else {
            return Some(vec![shaped(fresh.dims(r))]);
        };
        // `keep_aspect_ratio_policy` (opset 18) other than stretch rescales the sizes given
        let stretch = attr_s(node, "keep_aspect_ratio_policy").is_none_or(|p| p == "stretch");
        if sizes.len() == r && attr(node, "axes").is_none() && stretch {
            return Some(vec![shaped(sizes.to_vec())]);
        }
        return Some(vec![shaped(fresh.dims(r))]);
    }
    let scales_input = match (node.op_type(), opset) {
        ("Upsample", o) if o < 9 => None,
        ("Upsample", _) => Some(1),
        (_, o) if o < 11 => Some(1),
        _ => Some(2),
    };
    let scales: Option<Vec<f32>> = match scales_input {
        None => crate::onnx::attributes::attr_floats(node, "scales"),
        Some(k) => ins.fact(k).and_then(|f| f.float_value.clone()),
    };
    let Some(scales) = scales.filter(|v| v.len() == r) else {
        return Some(vec![shaped(fresh.dims(r))]);
    };
    let out = s
        .iter()
        .zip(&scales)
        .map(|(d, &k)| {
            let scaled = if k == 1.0 {
                Some(d.clone())
            } else if k.fract() == 0.0 && k > 0.0 {
                d.mul(&Dim::constant(k as i64))
            } else {
                d.as_const()
                    .map(|v| Dim::constant((v as f64 * k as f64).floor() as i64))
            };
            fresh.or_fresh(scaled)
        })
        .collect();
    Some(vec![shaped(out)])
}

fn einsum(node: &NodeProto, ins: &Inputs, fresh: &mut Fresh) -> Option<Shape> {
    let eq: String = attr_s(node, "equation")?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != node.input.len() || eq.contains("...") {
        return None; // ellipses: left unknown
    }
    let mut dims: std::collections::BTreeMap<char, Dim> = Default::default();
    let mut counts: std::collections::BTreeMap<char, usize> = Default::default();
    for (k, t) in terms.iter().enumerate() {
        let s = ins.shape(k)?;
        if s.len() != t.chars().count() {
            return None;
        }
        for (c, d) in t.chars().zip(s) {
            *counts.entry(c).or_default() += 1;
            let e = dims.entry(c).or_insert_with(|| d.clone());
            if e.as_const() == Some(1) {
                *e = d.clone();
            }
        }
    }
    let out_letters: Vec<char> = match rhs {
        Some(r) => r.chars().collect(),
        None => counts
            .iter()
            .filter(|(_, n)| **n == 1)
            .map(|(c, _)| *c)
            .collect(),
    };
    Some(
        out_letters
            .into_iter()
            .map(|c| fresh.or_fresh(dims.get(&c).cloned()))
            .collect(),
    )
}

fn rnn(node: &NodeProto, ins: &Inputs) -> Option<Vec<Out>> {
    let x = ins.shape(0)?;
    if x.len() != 3 {
        return None;
    }
    let hidden = Dim::constant(attr(node, "hidden_size").and_then(|a| a.i)?);
    let dirs = Dim::constant(match attr_s(node, "direction").as_deref() {
        Some("bidirectional") => 2,
        _ => 1,
    });
    let layout = attr_i(node, "layout", 0);
    let (seq, batch) = if layout == 0 {
        (&x[0], &x[1])
    } else {
        (&x[1], &x[0])
    };
    let y = if layout == 0 {
        vec![seq.clone(), dirs.clone(), batch.clone(), hidden.clone()]
    } else {
        vec![batch.clone(), seq.clone(), dirs.clone(), hidden.clone()]
    };
    let state = if layout == 0 {
        vec![dirs, batch.clone(), hidden]
    } else {
        vec![batch.clone(), dirs, hidden]
    };
    Some(vec![shaped(y), shaped(state.clone()), shaped(state)])
}
