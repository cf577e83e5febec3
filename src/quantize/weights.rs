//! Weights as the quantizers see them: the constant behind a value (through Identity and Cast to
//! float, here or in an enclosing graph), and symmetric int8 quantization along a channel axis.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;

use crate::graph::Graph;
use crate::graph::builder::{raw_tensor, tensor_f32};
use crate::onnx::DataType;
use crate::onnx::attributes::attr_i;
use crate::onnx::proto::TensorProto;

/// Why a weight that is an initializer also listed among the graph inputs (as IR 3 listed every
/// initializer) is no constant: a caller may feed another value.
pub fn overridable(name: &str) -> String {
    format!(
        "its weight '{name}' is an initializer also listed as a graph input, which a caller may override (`--freeze-initializers`, of optimize or convert, makes such weights constants)"
    )
}

/// The initializer a graph input overrides that `value` is (behind Identity or a Cast to float),
/// if any.
pub fn overridable_behind(graph: &Graph, value: &str) -> Option<String> {
    let mut name = value.to_string();
    for _ in 0..16 {
        if graph.initializer(&name).is_some() && graph.is_input(&name) {
            return Some(name);
        }
        let p = graph.producer(&name)?;
        if !follows(p) || p.input.is_empty() {
            return None;
        }
        name = p.input[0].clone();
    }
    None
}

/// Whether a weight is read through `p` as it is: an Identity, or a Cast to float.
fn follows(p: &crate::onnx::proto::NodeProto) -> bool {
    match p.op_type() {
        "Identity" => true,
        "Cast" => attr_i(p, "to", 0) == i64::from(DataType::Float.code()),
        _ => false,
    }
}

/// Why `value` is no constant weight: an initializer a graph input overrides, or `otherwise`.
pub fn not_constant(graph: &Graph, value: &str, otherwise: &str) -> String {
    overridable_behind(graph, value).map_or_else(|| otherwise.to_string(), |n| overridable(&n))
}

/// The constant behind `value`: an initializer or Constant node of `graph`, or of an enclosing
/// graph (`outer`), reached through Identity and Cast-to-float nodes.
pub fn constant_behind(
    graph: &Graph,
    outer: &HashMap<String, TensorProto>,
    value: &str,
) -> Option<TensorProto> {
    let mut name = value.to_string();
    for _ in 0..16 {
        if let Some(t) = graph.constant(&name) {
            return Some(t.into_owned());
        }
        if graph.index().producer(&name).is_none() && !graph.is_input(&name) {
            return outer.get(&name).cloned();
        }
        let p = graph.producer(&name)?;
        if !follows(p) || p.input.is_empty() {
            return None;
        }
        name = p.input[0].clone();
    }
    None
}

/// What the bodies of `g`'s nodes see of it and of the graphs around it (`outer`,
/// `outer_names`): every constant by name, and every name defined.
pub fn body_scope(
    g: &crate::onnx::proto::GraphProto,
    outer: &HashMap<String, TensorProto>,
    outer_names: &std::collections::HashSet<String>,
) -> (
    HashMap<String, TensorProto>,
    std::collections::HashSet<String>,
) {
    let mut scope = outer.clone();
    let view = Graph::new(g.clone());
    for t in &g.initializer {
        if let Some(c) = view.constant(t.name()) {
            scope.insert(t.name().to_string(), c.into_owned());
        }
    }
    for n in &g.node {
        if let (Some(t), Some(o)) = (crate::graph::constant_tensor(n), n.output.first()) {
            scope.insert(o.clone(), t);
        }
    }
    let mut names = outer_names.clone();
    names.extend(crate::graph::defined_names(g));
    (scope, names)
}

/// How far int8 weights reach.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum WeightRange {
    /// [-127, 127].
    #[default]
    Full,
    /// [-64, 64]: onnxruntime's x86 kernels without VNNI add each two adjacent uint8 x int8
    /// products in 16 bits, which two weights of 64 at most cannot overflow (2 x 255 x 64 =
    /// 32640), so the model computes the same numbers on every x86 CPU, at a bit of each
    /// weight's precision.
    Reduced,
}

impl WeightRange {
    pub fn parse(s: &str) -> Result<WeightRange, String> {
        match s {
            "full" => Ok(WeightRange::Full),
            "reduced" => Ok(WeightRange::Reduced),
            other => Err(format!("weight range '{other}': full or reduced expected")),
        }
    }

    /// The largest magnitude of a quantized weight.
    pub fn limit(self) -> f32 {
        match self {
            WeightRange::Full => 127.0,
            WeightRange::Reduced => 64.0,
        }
    }
}

/// Weights smaller than this stay float.
pub const MIN_WEIGHT_ELEMENTS: usize = 256;

/// A 2-D float weight ready to multiply, values row-major: `[K, N]` on the right of a product,
/// `[M, K]` on its left.
pub struct Matrix {
    /// The constant's name (the value's where the constant has none).
    pub name: String,
    pub dims: [usize; 2],
    pub values: Vec<f32>,
    /// The stored values these are, for [`Memo`]; `None` once they are changed.
    pub source: Option<Source>,
}

impl Matrix {
    /// The values times `alpha` (no longer the stored ones).
    pub fn scale(&mut self, alpha: f32) {
        self.values.iter_mut().for_each(|v| *v *= alpha);
        self.source = None;
    }
}

/// The stored values of a constant, known again in another copy of the model: each round of the
/// accuracy search quantizes a copy of the same float model, and the copies share their
/// constants' bytes (`Bytes` clones) or read them from the same place of the same external file.
#[derive(Clone)]
pub struct Source {
    identity: Identity,
    data_type: i32,
    dims: Vec<i64>,
    /// Read transposed.
    transposed: bool,
}

#[derive(Clone)]
enum Identity {
    /// The bytes in memory, held so that their address is not reused while a [`Memo`] keeps it.
    Buffer(Bytes),
    /// A range of an external data file (each copy of the model maps the file anew).
    File {
        path: PathBuf,
        offset: u64,
        /// `None`: to the end of the file.
        length: Option<u64>,
    },
}

impl Source {
    /// Where `t`'s values are stored, read transposed or not; `None` for values in typed fields
    /// (`float_data`), which a copy of the model copies.
    pub fn of(
        ctx: &crate::passes::PassContext,
        t: &TensorProto,
        transposed: bool,
    ) -> Option<Source> {
        let identity = match crate::onnx::external::ExternalRef::of(t).ok()? {
            Some(r) => Identity::File {
                path: ctx.dir().join(&r.location),
                offset: r.offset,
                length: r.length,
            },
            None => Identity::Buffer(t.raw_data.clone()?),
        };
        Some(Source {
            identity,
            data_type: t.data_type(),
            dims: t.dims.clone(),
            transposed,
        })
    }

    fn key(&self, how: String) -> MemoKey {
        let (place, path) = match &self.identity {
            Identity::Buffer(b) => ((b.as_ptr() as u64, Some(b.len() as u64)), None),
            Identity::File {
                path,
                offset,
                length,
            } => ((*offset, *length), Some(path.clone())),
        };
        MemoKey {
            place,
            path,
            data_type: self.data_type,
            dims: self.dims.clone(),
            transposed: self.transposed,
            how,
        }
    }
}

#[derive(PartialEq, Eq, Hash)]
struct MemoKey {
    /// Address and length in memory, or offset and length in `path`.
    place: (u64, Option<u64>),
    path: Option<PathBuf>,
    data_type: i32,
    dims: Vec<i64>,
    transposed: bool,
    /// What was computed from the values, with every parameter.
    how: String,
}

/// Quantized weights kept across the accuracy search's rounds, by the values they were computed
/// from ([`Source`]) and how: each weight is quantized once in a search, not once a round (a
/// transformer's weights took 0.1 s a round to quantize again). Values without a source are
/// quantized each time.
#[derive(Default)]
pub struct Memo {
    done: RefCell<HashMap<MemoKey, Done>>,
    /// Results computed for values with a source (those not found).
    computed: std::cell::Cell<usize>,
}

/// A result, with the values it was computed from (held: see [`Identity::Buffer`]).
struct Done {
    _from: Source,
    result: Rc<dyn Any>,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memo({} weights)", self.done.borrow().len())
    }
}

impl Memo {
    /// What `compute` gives for the values of `source`, computed the first time `how` is asked
    /// of them. `how` names the computation and every parameter it takes.
    pub fn get<T: 'static>(
        &self,
        source: Option<&Source>,
        how: String,
        compute: impl FnOnce() -> T,
    ) -> Rc<T> {
        match self.try_get(source, how, || Ok::<_, std::convert::Infallible>(compute())) {
            Ok(done) => done,
        }
    }

    /// [`quantize_symmetric`] of `values()` (those of `source`) of shape `dims`, computed the
    /// first time they are asked for with this axis and range.
    pub fn symmetric_int8<V: AsRef<[f32]>, E>(
        &self,
        source: Option<&Source>,
        dims: &[usize],
        axis: Option<usize>,
        range: WeightRange,
        values: impl FnOnce() -> Result<V, E>,
    ) -> Result<Rc<Int8Weight>, E> {
        let how = format!("int8 symmetric along {axis:?} of {dims:?}, {range:?}");
        self.try_get(source, how, || {
            Ok(quantize_symmetric(values()?.as_ref(), dims, axis, range))
        })
    }

    /// [`Memo::get`] of a computation that can fail (a failure is not kept).
    pub fn try_get<T: 'static, E>(
        &self,
        source: Option<&Source>,
        how: String,
        compute: impl FnOnce() -> Result<T, E>,
    ) -> Result<Rc<T>, E> {
        let Some(source) = source else {
            return compute().map(Rc::new);
        };
        let key = source.key(how);
        if let Some(done) = self.done.borrow().get(&key)
            && let Ok(result) = done.result.clone().downcast::<T>()
        {
            return Ok(result);
        }
        let result = Rc::new(compute()?);
        self.computed.set(self.computed.get() + 1);
        let done = Done {
            _from: source.clone(),
            result: result.clone(),
        };
        self.done.borrow_mut().insert(key, done);
        Ok(result)
    }

    /// How many results were computed for values with a source: one each, if every later
    /// request found the first.
    pub fn computed(&self) -> usize {
        self.computed.get()
    }
}

/// `value` as a 2-D float weight (transposed when asked), if it is a constant one; why not, when
/// it is a constant that cannot be one.
pub fn matrix(
    ctx: &crate::passes::PassContext,
    graph: &Graph,
    outer: &HashMap<String, TensorProto>,
    value: &str,
    transpose: bool,
) -> Result<Option<Matrix>, String> {
    let Some(t) = constant_behind(graph, outer, value) else {
        return Ok(None);
    };
    let data = ctx.tensor_data(&t).map_err(|e| e.to_string())?;
    let Some(values) = data.to_f32_lossy() else {
        return Ok(None);
    };
    let source = Source::of(ctx, &t, transpose);
    let [r, c] = t.dims[..] else {
        return Err(format!("its weight has {} dims, not 2", t.dims.len()));
    };
    let (r, c) = (r as usize, c as usize);
    if r * c != values.len() {
        return Err("its weight's size does not match its dims".into());
    }
    let values: Vec<f32> = if transpose {
        (0..c)
            .flat_map(|j| (0..r).map(move |i| (i, j)))
            .map(|(i, j)| values[i * c + j])
            .collect()
    } else {
        values
    };
    if values.iter().any(|v| !v.is_finite()) {
        return Err("its weight holds NaN or infinity".into());
    }
    Ok(Some(Matrix {
        name: if t.name().is_empty() {
            value.to_string()
        } else {
            t.name().to_string()
        },
        dims: if transpose { [c, r] } else { [r, c] },
        values,
        source,
    }))
}

/// Where the weight sits in a product.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// `A x W`: per column of `W`.
    Right,
    /// `W x X`: per row of `W`.
    Left,
}

/// A weight quantized per output channel, written into a graph: its int8 values' and its
/// scales' initializers.
#[derive(Debug, Clone)]
pub struct QuantizedWeight {
    pub tensor: String,
    pub scale: String,
    /// Signal-to-quantization-noise ratio against the float weight, in dB.
    pub sqnr_db: f64,
}

/// Symmetric int8 per output channel (columns on the right, rows on the left), zero point 0 and
/// `range`, added to `edit` as `<name>_quantized` and `<name>_scale`; the scale tensor carries
/// `alpha` (Gemm's) too. The int8 values are `memo`'s where it has them.
pub fn add_quantized_weight(
    edit: &mut Graph,
    w: &Matrix,
    side: Side,
    alpha: f32,
    range: WeightRange,
    memo: &Memo,
) -> QuantizedWeight {
    let [rows, cols] = w.dims;
    let axis = if side == Side::Right { 1 } else { 0 };
    let Ok(q) = memo.symmetric_int8(w.source.as_ref(), &w.dims, Some(axis), range, || {
        Ok::<_, std::convert::Infallible>(w.values.as_slice())
    });
    let scale_dims: Vec<i64> = match side {
        Side::Right => vec![cols as i64],
        Side::Left => vec![rows as i64, 1],
    };
    let scales: Vec<f32> = q.scales.iter().map(|s| s * alpha).collect();
    let values = raw_tensor(
        "",
        DataType::Int8,
        &[rows as i64, cols as i64],
        q.values.iter().map(|&v| v as u8).collect(),
    );
    QuantizedWeight {
        tensor: edit.add_initializer(&format!("{}_quantized", w.name), values),
        scale: edit.add_initializer(
            &format!("{}_scale", w.name),
            tensor_f32("", &scale_dims, &scales),
        ),
        sqnr_db: q.sqnr_db,
    }
}

/// How a node reads the weight it quantizes: the value it reads, the side of the product,
/// whether it reads it transposed (Gemm's transB), the factor folded into the scales (Gemm's
/// alpha, as bits) and the range.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WeightUse {
    pub value: String,
    pub side: Side,
    pub transposed: bool,
    pub alpha: u32,
    pub range: WeightRange,
}

impl WeightUse {
    pub fn new(value: &str, side: Side, transposed: bool, alpha: f32, range: WeightRange) -> Self {
        WeightUse {
            value: value.to_string(),
            side,
            transposed,
            alpha: alpha.to_bits(),
            range,
        }
    }
}

/// The int8 weights written into one graph, by use: a weight several nodes read the same way
/// (layers that share their weights, a table several Gathers look rows up in) is written once.
/// Keyed by the value read, not by the constant's own name, which need not be unique (a
/// Constant node's tensor may carry any).
pub struct Written {
    done: HashMap<WeightUse, QuantizedWeight>,
    memo: Rc<Memo>,
}

impl Written {
    /// Quantizing with the values `memo` keeps.
    pub fn new(memo: Rc<Memo>) -> Written {
        Written {
            done: HashMap::new(),
            memo,
        }
    }

    /// `w`, the weight `used` reads, quantized per output channel: written into `edit` the first
    /// time this use comes, the same initializers after.
    pub fn add(&mut self, edit: &mut Graph, used: WeightUse, w: &Matrix) -> QuantizedWeight {
        let memo = &self.memo;
        self.done
            .entry(used)
            .or_insert_with_key(|u| {
                add_quantized_weight(edit, w, u.side, f32::from_bits(u.alpha), u.range, memo)
            })
            .clone()
    }
}

/// Symmetric int8 values of a weight.
pub struct Int8Weight {
    /// Row-major, as the float values were.
    pub values: Vec<i8>,
    /// One per channel along the axis (one in all for per-tensor).
    pub scales: Vec<f32>,
    /// Signal-to-quantization-noise ratio against the float weight, in dB.
    pub sqnr_db: f64,
}

/// Quantizes `values` of shape `dims` to int8 within `range` with zero point 0, one scale per
/// index along `axis` (`None`: one scale for the whole tensor). An all-zero channel gets scale 1.
pub fn quantize_symmetric(
    values: &[f32],
    dims: &[usize],
    axis: Option<usize>,
    range: WeightRange,
) -> Int8Weight {
    let (channels, inner) = match axis {
        Some(a) => (dims[a], dims[a + 1..].iter().product::<usize>()),
        None => (1, values.len().max(1)),
    };
    // the values as [outer, channels, inner]: runs of `inner` values share a channel's scale,
    // and the runs go round the channels; with `inner` 1, a row of `channels` values takes one
    // scale each
    let run_len = (if inner == 1 { channels } else { inner }).max(1);
    let mut max = vec![0f32; channels];
    for (k, run) in values.chunks(run_len).enumerate() {
        if inner == 1 {
            for (m, v) in max.iter_mut().zip(run) {
                *m = m.max(v.abs());
            }
        } else {
            let m = &mut max[k % channels];
            *m = run.iter().fold(*m, |m, v| m.max(v.abs()));
        }
    }
    let scales: Vec<f32> = max
        .iter()
        .map(|&m| if m > 0.0 { m / range.limit() } else { 1.0 })
        .collect();
    let mut q = vec![0i8; values.len()];
    let mut sums = crate::verify::SampleSums::default();
    for (k, (run, out)) in values
        .chunks(run_len)
        .zip(q.chunks_mut(run_len))
        .enumerate()
    {
        if inner == 1 {
            quantize_run(run, |i| scales[i], out, &mut sums);
        } else {
            let s = scales[k % channels];
            quantize_run(run, |_| s, out, &mut sums);
        }
    }
    Int8Weight {
        values: q,
        scales,
        sqnr_db: sums.sqnr_db(),
    }
}

/// Quantizes `values` onto `out`, value `i` with scale `scale(i)`, adding each value and its
/// dequantized twin to `sums` a block at a time, in `add_all`'s interleaved lanes (added pair by
/// pair, the running sums were one chain of dependent additions, kept in memory: a MatMul
/// weight took 10 ns a value to quantize, 3.5 now).
fn quantize_run(
    values: &[f32],
    scale: impl Fn(usize) -> f32,
    out: &mut [i8],
    sums: &mut crate::verify::SampleSums,
) {
    const BLOCK: usize = 512;
    let mut back = [0f32; BLOCK];
    for (b, (run, out)) in values.chunks(BLOCK).zip(out.chunks_mut(BLOCK)).enumerate() {
        for (i, ((&v, q), d)) in run.iter().zip(out.iter_mut()).zip(&mut back).enumerate() {
            let s = scale(b * BLOCK + i);
            let k = round_to_int8(v / s);
            *q = k;
            *d = f32::from(k) * s;
        }
        sums.add_all(run, &back[..run.len()]);
    }
}

/// `x` rounded half away from zero (as `f32::round`) and clamped to [-127, 127], without a branch
/// on the fraction (mispredicted half the time) or a call to the C library's `roundf`.
fn round_to_int8(x: f32) -> i8 {
    let x = x.clamp(-127.0, 127.0);
    // in range, the cast truncates exactly and the fraction is exact (a NaN casts to 0)
    let t = x as i32;
    let frac = x - t as f32;
    (t + i32::from(frac >= 0.5) - i32::from(frac <= -0.5)) as i8
}

/// What a Gemm adds to its product: `beta * C`.
pub enum Bias {
    /// Added as it is (beta 1).
    Value(String),
    /// `beta * C` of a constant C, precomputed.
    Tensor(Box<TensorProto>),
    /// A computed C times beta.
    Scaled(String, f32),
}

/// The bias of Gemm `node`, if it adds one (a C given with a beta other than 0).
pub fn gemm_bias(
    ctx: &crate::passes::PassContext,
    graph: &Graph,
    outer: &HashMap<String, TensorProto>,
    node: &crate::onnx::proto::NodeProto,
) -> Result<Option<Bias>, String> {
    let beta = crate::onnx::attributes::attr_f(node, "beta", 1.0);
    let Some(c) = node.input.get(2).filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    if beta == 0.0 {
        return Ok(None);
    }
    Ok(Some(match constant_behind(graph, outer, c) {
        Some(t) if beta != 1.0 => {
            let v = ctx
                .tensor_data(&t)
                .and_then(|d| d.f32s())
                .map_err(|e| e.to_string())?;
            Bias::Tensor(Box::new(crate::graph::builder::tensor_f32(
                "",
                &t.dims,
                &v.iter().map(|x| x * beta).collect::<Vec<_>>(),
            )))
        }
        _ if beta != 1.0 => Bias::Scaled(c.clone(), beta),
        _ => Bias::Value(c.clone()),
    }))
}

impl Bias {
    /// Adds the bias to `product`, writing `output` (the Gemm's, whose node was named `base`):
    /// an Add in `added`, reading C, a new constant, or a new Mul of C by beta.
    pub fn add(
        self,
        edit: &mut Graph,
        added: &mut Vec<crate::onnx::proto::NodeProto>,
        product: &str,
        output: &str,
        base: &str,
    ) {
        let bias = match self {
            Bias::Value(v) => v,
            Bias::Tensor(t) => edit.add_initializer(&format!("{output}_bias"), *t),
            Bias::Scaled(c, beta) => {
                let beta_name = edit.add_initializer(
                    &format!("{output}_beta"),
                    crate::graph::builder::tensor_f32("", &[], &[beta]),
                );
                let scaled = edit.fresh_name(&format!("{output}_bias"));
                added.push(super::new_node(
                    "Mul",
                    &edit.fresh_name(&format!("{base}/beta")),
                    &[&c, &beta_name],
                    &[&scaled],
                    vec![],
                ));
                scaled
            }
        };
        added.push(super::new_node(
            "Add",
            &edit.fresh_name(&format!("{base}/bias")),
            &[product, &bias],
            &[output],
            vec![],
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_channel_gets_its_own_scale_and_zero_stays_zero() {
        // two channels along axis 0 of [2, 3]: the second ten times the first
        let w = [0.1, -0.2, 0.0, 1.0, -2.0, 0.5];
        let q = quantize_symmetric(&w, &[2, 3], Some(0), WeightRange::Full);
        assert_eq!(q.scales.len(), 2);
        assert!((q.scales[0] - 0.2 / 127.0).abs() < 1e-9);
        assert!((q.scales[1] - 2.0 / 127.0).abs() < 1e-9);
        assert_eq!(q.values, [64, -127, 0, 64, -127, 32]);
        // along axis 1: three channels
        let q = quantize_symmetric(&w, &[2, 3], Some(1), WeightRange::Full);
        assert_eq!(q.scales.len(), 3);
        assert_eq!(q.values[1], -13);
        let all = quantize_symmetric(&[0.0, 0.0], &[2], None, WeightRange::Full);
        assert_eq!(all.scales, [1.0]);
        assert!(all.sqnr_db.is_infinite());
    }

    #[test]
    fn reduced_weights_reach_64() {
        let w = [0.1, -0.2, 0.0, 1.0, -2.0, 0.5];
        let q = quantize_symmetric(&w, &[2, 3], Some(0), WeightRange::Reduced);
        assert!((q.scales[0] - 0.2 / 64.0).abs() < 1e-9);
        assert!((q.scales[1] - 2.0 / 64.0).abs() < 1e-9);
        assert_eq!(q.values, [32, -64, 0, 32, -64, 16]);
    }

    #[test]
    fn every_axis_of_a_3d_weight_scales_its_own_channels() {
        // [outer 2, channels 3, inner 4] along axis 1, and the two other axes
        let dims = [2, 3, 4];
        let w: Vec<f32> = (0..24)
            .map(|k| ((k * 7) % 11) as f32 - 5.0 + k as f32 * 0.1)
            .collect();
        for axis in 0..3 {
            let inner: usize = dims[axis + 1..].iter().product();
            let channel = |k: usize| (k / inner) % dims[axis];
            let q = quantize_symmetric(&w, &dims, Some(axis), WeightRange::Full);
            assert_eq!(q.scales.len(), dims[axis]);
            for (c, s) in q.scales.iter().enumerate() {
                let max = (0..24)
                    .filter(|&k| channel(k) == c)
                    .map(|k| w[k].abs())
                    .fold(0f32, f32::max);
                assert_eq!(*s, max / 127.0, "axis {axis} channel {c}");
            }
            for (k, v) in q.values.iter().enumerate() {
                let want = (w[k] / q.scales[channel(k)]).round() as i8;
                assert_eq!(*v, want, "axis {axis} value {k}");
            }
        }
    }

    #[test]
    fn rounding_matches_the_standard_library() {
        let edges = [
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            0.49999997,
            -0.49999997,
            126.5,
            -126.5,
            127.0,
            127.49,
            128.0,
            -200.0,
            1e9,
            -1e9,
            f32::NAN,
        ];
        let steps = (-140_000..140_000).map(|k| k as f32 / 997.0);
        for x in edges.into_iter().chain(steps) {
            let want = if x.is_nan() {
                0
            } else {
                x.round().clamp(-127.0, 127.0) as i8
            };
            assert_eq!(round_to_int8(x), want, "{x}");
        }
    }
}
