//! Type and shape inference over our own graph, at the model's opsets: element types from the
//! operator schemas (`onnx::schema`) and op rules, shapes with symbolic dims ([`Dim`]), and the
//! values of small integer tensors (shape arithmetic), through If/Loop/Scan bodies and
//! model-local functions.
//!
//! Inference never fails: what it cannot determine (a contrib op, a shape that depends on data)
//! is unknown, and everything downstream of it is as unknown as it must be, never a guess. It
//! reads no tensor but small integer and float constants, so it costs the same on a 400 MB model
//! as on its architecture without weights.

pub mod dim;
mod outputs;
mod shapes;
mod types;

use std::collections::HashMap;

use crate::graph::constant_tensor;
use crate::onnx::attributes::{attr, attr_g, attr_i, attr_ints};
use crate::onnx::proto::tensor_shape_proto::dimension::Value;
use crate::onnx::proto::type_proto;
use crate::onnx::proto::{
    FunctionProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::onnx::schema::{self, normalize_domain};
use crate::onnx::{DataType, Model, TensorData};

pub use dim::Dim;
pub use outputs::{RedeclaredOutput, redeclare_outputs};
pub use shapes::{Fresh, LEGACY_BROADCAST, MAX_VALUE_ELEMENTS, broadcast};

/// The dims of a tensor, one per axis.
pub type Shape = Vec<Dim>;

/// What inference knows about one value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fact {
    pub elem_type: Option<DataType>,
    /// `None` when even the rank is unknown.
    pub shape: Option<Shape>,
    /// The elements of a small integer (or bool) tensor of rank 0 or 1, when known.
    pub value: Option<Vec<Dim>>,
    /// The elements of a small float constant (Resize scales).
    pub float_value: Option<Vec<f32>>,
}

impl Fact {
    /// Dims that are all numbers.
    pub fn static_shape(&self) -> Option<Vec<i64>> {
        self.shape.as_ref()?.iter().map(Dim::as_const).collect()
    }

    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }
}

/// Reads a tensor's data (external data included) for the few constants inference looks into.
pub type TensorReader<'a> = &'a dyn Fn(&TensorProto) -> Option<TensorData>;

/// Nesting beyond this (subgraphs in subgraphs, functions calling functions) is left unknown
/// rather than recursed into.
const MAX_DEPTH: usize = 64;

/// The facts about every value of a model, main graph and bodies alike (names are unique in a
/// well-formed model; a body value shadowing an outer one overwrites it here).
#[derive(Debug, Default, Clone)]
pub struct Inference {
    facts: HashMap<String, Fact>,
    /// Output facts by a digest of (node, input facts), from the previous run: a refresh after a
    /// rewrite recomputes only the nodes that changed and those whose inputs' facts changed.
    memo: HashMap<u64, Vec<Fact>>,
    /// The same, filled by the current run.
    next_memo: HashMap<u64, Vec<Fact>>,
    /// Nodes computed and nodes reused by the last run.
    pub computed: usize,
    pub reused: usize,
}

impl Inference {
    /// Infers everything about `model`.
    pub fn of_model(model: &Model) -> Inference {
        let read = |t: &TensorProto| model.tensor_data(t).ok();
        let mut inf = Inference::default();
        let functions = functions_map(&model.proto.functions);
        let env = Env::of(&model.proto.opset_import, &functions, &read);
        inf.infer_graph(model.graph(), &env, 0);
        inf
    }

    /// Infers everything about `model` again after an edit, reusing what the last run found for
    /// every node that is unchanged and whose inputs' facts are unchanged.
    pub fn refresh(&mut self, model: &Model) {
        let read = |t: &TensorProto| model.tensor_data(t).ok();
        let functions = functions_map(&model.proto.functions);
        let env = Env::of(&model.proto.opset_import, &functions, &read);
        self.memo = std::mem::take(&mut self.next_memo);
        self.facts.clear();
        self.computed = 0;
        self.reused = 0;
        self.infer_graph(model.graph(), &env, 0);
        self.memo.clear();
    }

    /// Infers everything about a graph of a model with these opsets and functions.
    pub fn of_graph(
        graph: &GraphProto,
        opsets: &[crate::onnx::proto::OperatorSetIdProto],
        functions: &[FunctionProto],
        read: TensorReader,
    ) -> Inference {
        let mut inf = Inference::default();
        let functions = functions_map(functions);
        let env = Env::of(opsets, &functions, read);
        inf.infer_graph(graph, &env, 0);
        inf
    }

    /// Every place where `model`'s element types, as inferred, break a schema's type constraints
    /// or a graph output's declared type: the check a rewrite that changes types (float16
    /// conversion) must pass, naming the node and the values. Run on an [`Inference::of_model`]
    /// of `model` itself.
    pub fn type_errors(&self, model: &Model) -> Vec<String> {
        let mut errors = Vec::new();
        self.graph_type_errors(model, model.graph(), &mut errors);
        errors
    }

    fn graph_type_errors(&self, model: &Model, g: &GraphProto, errors: &mut Vec<String>) {
        let ty = |name: &String| (!name.is_empty()).then(|| self.elem_type(name)).flatten();
        for (i, node) in g.node.iter().enumerate() {
            let domain = crate::onnx::schema::normalize_domain(node.domain());
            if let Some(schema) = model
                .opset(domain)
                .and_then(|v| crate::onnx::schema::schema(domain, node.op_type(), v))
            {
                let inputs: Vec<_> = node.input.iter().map(ty).collect();
                let outputs: Vec<_> = node.output.iter().map(ty).collect();
                for e in types::binding_errors(node, schema, &inputs, &outputs) {
                    errors.push(format!("{}: {e}", crate::graph::node_label(node, i)));
                }
            }
            for body in crate::graph::subgraphs(node) {
                self.graph_type_errors(model, body, errors);
            }
        }
        for vi in &g.output {
            let declared = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(type_proto::Value::TensorType(t)) => DataType::from_code(t.elem_type()).ok(),
                _ => None,
            };
            let inferred = self.elem_type(vi.name());
            if let (Some(d), Some(t)) = (declared, inferred)
                && d != t
            {
                errors.push(format!(
                    "graph '{}' output '{}' is declared {d} but computed as {t}",
                    g.name(),
                    vi.name()
                ));
            }
        }
    }

    pub fn fact(&self, name: &str) -> Option<&Fact> {
        self.facts.get(name)
    }

    pub fn elem_type(&self, name: &str) -> Option<DataType> {
        self.facts.get(name)?.elem_type
    }

    pub fn shape(&self, name: &str) -> Option<&[Dim]> {
        self.facts.get(name)?.shape.as_deref()
    }

    pub fn rank(&self, name: &str) -> Option<usize> {
        self.shape(name).map(<[Dim]>::len)
    }

    /// The dims of a value when every one is a number.
    pub fn static_shape(&self, name: &str) -> Option<Vec<i64>> {
        self.facts.get(name)?.static_shape()
    }

    /// The value's known elements (small integer tensors).
    pub fn value(&self, name: &str) -> Option<&[Dim]> {
        self.facts.get(name)?.value.as_deref()
    }

    /// Every value with a fact, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Fact)> {
        self.facts.iter()
    }

    fn declared(&mut self, vi: &ValueInfoProto) -> Fact {
        let Some(type_proto::Value::TensorType(t)) =
            vi.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Fact::default();
        };
        let elem_type = DataType::from_code(t.elem_type()).ok();
        let mut fresh = Fresh::new(vi.name(), "declared");
        let shape = t.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(Value::DimValue(v)) if *v >= 0 => Dim::constant(*v),
                    Some(Value::DimParam(p)) if crate::onnx::names_a_dim(p) => Dim::symbol(p),
                    _ => fresh.dim(),
                })
                .collect()
        });
        Fact {
            elem_type,
            shape,
            ..Fact::default()
        }
    }

    fn infer_graph(&mut self, g: &GraphProto, env: &Env, depth: usize) {
        self.infer_body(g, env, depth, Vec::new());
    }

    /// Infers a graph whose first inputs take the facts in `seeds` (a Loop or Scan body's
    /// iteration values), what the body declares filling in where a seed knows less.
    fn infer_body(&mut self, g: &GraphProto, env: &Env, depth: usize, seeds: Vec<Fact>) {
        for t in &g.initializer {
            let fact = constant_fact(t, env.read);
            self.facts.insert(t.name().to_string(), fact);
        }
        let mut seeds = seeds.into_iter();
        for vi in &g.input {
            let declared = self.declared(vi);
            let mut fact = match seeds.next() {
                Some(seed) => Fact {
                    elem_type: seed.elem_type.or(declared.elem_type),
                    shape: seed.shape.or(declared.shape),
                    ..Fact::default()
                },
                None => declared,
            };
            if let Some(init) = self.facts.get(vi.name()) {
                // an initializer that is also an input (IR < 4): a default that may be replaced
                fact.elem_type = fact.elem_type.or(init.elem_type);
                if fact.shape.is_none() {
                    fact.shape = init.shape.clone();
                }
            }
            self.facts.insert(vi.name().to_string(), fact);
        }
        let order =
            crate::graph::topological_order(g).unwrap_or_else(|_| (0..g.node.len()).collect());
        for i in order {
            let node = &g.node[i];
            let outs = self.infer_node_memo(node, env, depth);
            for (name, fact) in node.output.iter().zip(outs) {
                if !name.is_empty() {
                    self.facts.insert(name.clone(), fact);
                }
            }
        }
        // declared output types fill what inference could not find
        for vi in &g.output {
            let declared = self.declared(vi);
            let fact = self.facts.entry(vi.name().to_string()).or_default();
            if fact.elem_type.is_none() {
                fact.elem_type = declared.elem_type;
            }
            if fact.shape.is_none() {
                fact.shape = declared.shape;
            }
        }
    }

    fn input_facts(&self, node: &NodeProto) -> Vec<Option<Fact>> {
        node.input
            .iter()
            .map(|i| {
                (!i.is_empty())
                    .then(|| self.facts.get(i).cloned())
                    .flatten()
            })
            .collect()
    }

    /// [`Inference::infer_node`], or what the previous run found for the same node on the
    /// same input facts. Nodes with subgraphs are always inferred (their bodies' values must be
    /// in `facts` too).
    fn infer_node_memo(&mut self, node: &NodeProto, env: &Env, depth: usize) -> Vec<Fact> {
        if crate::graph::subgraphs(node).next().is_some() {
            self.computed += 1;
            return self.infer_node(node, env, depth);
        }
        let key = self.memo_key(node, env);
        let outs = match self.memo.get(&key) {
            Some(outs) => {
                self.reused += 1;
                outs.clone()
            }
            None => {
                self.computed += 1;
                self.infer_node(node, env, depth)
            }
        };
        self.next_memo.insert(key, outs.clone());
        outs
    }

    /// A digest of everything a node's inference reads: the node (large tensors by type and
    /// dims only: their contents are never read) and its inputs' facts.
    fn memo_key(&self, node: &NodeProto, env: &Env) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        node.op_type().hash(&mut h);
        normalize_domain(node.domain()).hash(&mut h);
        env.opset(normalize_domain(node.domain())).hash(&mut h);
        node.input.hash(&mut h);
        node.output.len().hash(&mut h);
        for a in &node.attribute {
            a.name().hash(&mut h);
            a.r#type.hash(&mut h);
            a.i.hash(&mut h);
            a.f.map(f32::to_bits).hash(&mut h);
            a.s.hash(&mut h);
            a.ints.hash(&mut h);
            a.floats
                .iter()
                .map(|f| f.to_bits())
                .for_each(|b| b.hash(&mut h));
            a.strings.hash(&mut h);
            a.ref_attr_name.hash(&mut h);
            if let Some(t) = &a.t {
                hash_tensor(t, &mut h);
            }
        }
        for i in &node.input {
            match self.facts.get(i) {
                Some(f) => hash_fact(f, &mut h),
                None => 0u8.hash(&mut h),
            }
        }
        h.finish()
    }

    fn infer_node(&mut self, node: &NodeProto, env: &Env, depth: usize) -> Vec<Fact> {
        let n = node.output.len();
        let domain = normalize_domain(node.domain());
        if let Some(f) = env.function(domain, node.op_type()) {
            return self.infer_function_call(node, f, env, depth);
        }
        let opset = env.opset(domain);
        let found = opset.and_then(|v| schema::schema(domain, node.op_type(), v));
        let Some(schema) = found else {
            return vec![Fact::default(); n];
        };
        if let Some(t) = constant_tensor(node) {
            return vec![constant_fact(&t, env.read); n];
        }
        let opset = opset.unwrap_or(1);
        match (domain, node.op_type()) {
            ("", "If") => return self.infer_if(node, env, depth),
            ("", "Loop") => return self.infer_loop(node, env, depth),
            ("", "Scan") if opset >= 9 => return self.infer_scan(node, env, depth),
            _ => {}
        }
        let inputs = self.input_facts(node);
        let in_types: Vec<Option<DataType>> = inputs
            .iter()
            .map(|f| f.as_ref().and_then(|f| f.elem_type))
            .collect();
        let out_types = types::output_types(node, Some(schema), &in_types);
        let ins = shapes::Inputs {
            facts: inputs.iter().map(Option::as_ref).collect(),
        };
        let mut fresh = Fresh::new(output_key(node), "node");
        let outs = shapes::infer(node, opset, &ins, &out_types, &mut fresh);
        outs.into_iter()
            .zip(out_types)
            .map(|(o, t)| Fact {
                elem_type: t,
                shape: o.shape,
                value: o.value,
                float_value: None,
            })
            .collect()
    }

    fn infer_if(&mut self, node: &NodeProto, env: &Env, depth: usize) -> Vec<Fact> {
        let n = node.output.len();
        let (Some(then), Some(other)) = (attr_g(node, "then_branch"), attr_g(node, "else_branch"))
        else {
            return vec![Fact::default(); n];
        };
        if depth >= MAX_DEPTH {
            return vec![Fact::default(); n];
        }
        // a condition known at inference time picks the branch
        let cond = node
            .input
            .first()
            .and_then(|c| self.facts.get(c))
            .and_then(|f| f.value.as_ref())
            .and_then(|v| v.first()?.as_const());
        self.infer_graph(then, env, depth + 1);
        self.infer_graph(other, env, depth + 1);
        let a: Vec<Fact> = self.outputs_of(then);
        let b: Vec<Fact> = self.outputs_of(other);
        let mut fresh = Fresh::new(output_key(node), "if");
        (0..n)
            .map(|k| match (cond, a.get(k), b.get(k)) {
                (Some(c), Some(x), Some(y)) => {
                    if c != 0 {
                        x.clone()
                    } else {
                        y.clone()
                    }
                }
                (None, Some(x), Some(y)) => Inference::merge(x, y, &mut fresh),
                _ => Fact::default(),
            })
            .collect()
    }

    fn outputs_of(&self, g: &GraphProto) -> Vec<Fact> {
        g.output
            .iter()
            .map(|o| self.facts.get(o.name()).cloned().unwrap_or_default())
            .collect()
    }

    /// What is true of a value that is either `a` or `b`.
    fn merge(a: &Fact, b: &Fact, fresh: &mut Fresh) -> Fact {
        let elem_type = if a.elem_type == b.elem_type {
            a.elem_type
        } else {
            None
        };
        let shape = match (&a.shape, &b.shape) {
            (Some(x), Some(y)) if x.len() == y.len() => Some(
                x.iter()
                    .zip(y)
                    .map(|(p, q)| if p == q { p.clone() } else { fresh.dim() })
                    .collect(),
            ),
            _ => None,
        };
        let value = if a.value == b.value {
            a.value.clone()
        } else {
            None
        };
        Fact {
            elem_type,
            shape,
            value,
            float_value: None,
        }
    }

    fn infer_loop(&mut self, node: &NodeProto, env: &Env, depth: usize) -> Vec<Fact> {
        let n = node.output.len();
        let Some(body) = attr_g(node, "body").filter(|_| depth < MAX_DEPTH) else {
            return vec![Fact::default(); n];
        };
        let inputs = self.input_facts(node);
        let carried: Vec<Fact> = inputs
            .iter()
            .skip(2)
            .map(|f| f.clone().unwrap_or_default())
            .collect();
        let scalar = |t: DataType| Fact {
            elem_type: Some(t),
            shape: Some(vec![]),
            ..Fact::default()
        };
        let mut state: Vec<Fact> = carried
            .iter()
            .map(|f| Fact {
                value: None,
                float_value: None,
                ..f.clone()
            })
            .collect();
        // a carried value whose shape changes across iterations is merged; unknowns made for the
        // merge are the same each round, so this settles in two rounds
        for _ in 0..3 {
            let mut fresh = Fresh::new(output_key(node), "carried");
            let mut seeds = vec![scalar(DataType::Int64), scalar(DataType::Bool)];
            seeds.extend(state.iter().cloned());
            self.infer_body(body, env, depth + 1, seeds);
            let outs = self.outputs_of(body);
            let next: Vec<Fact> = state
                .iter()
                .zip(outs.iter().skip(1))
                .map(|(s, o)| Inference::merge(s, o, &mut fresh))
                .collect();
            if next == state {
                break;
            }
            state = next;
        }
        let outs = self.outputs_of(body);
        // the final values' unknown dims are not the body's (one iteration's) unknowns
        let mut fresh = Fresh::new(output_key(node), "loop");
        let mut result: Vec<Fact> = state.iter().map(|f| reseat(f, &mut fresh)).collect();
        let trips = fresh.dim();
        for o in outs.iter().skip(1 + carried.len()) {
            let trips = trips.clone();
            result.push(Fact {
                elem_type: o.elem_type,
                shape: o.shape.as_ref().map(|s| {
                    let mut v = vec![trips];
                    v.extend(s.iter().cloned());
                    v
                }),
                ..Fact::default()
            });
        }
        result.resize(n, Fact::default());
        result
    }

    fn infer_scan(&mut self, node: &NodeProto, env: &Env, depth: usize) -> Vec<Fact> {
        let n = node.output.len();
        let Some(body) = attr_g(node, "body").filter(|_| depth < MAX_DEPTH) else {
            return vec![Fact::default(); n];
        };
        let Ok(m) = usize::try_from(attr_i(node, "num_scan_inputs", 0)) else {
            return vec![Fact::default(); n];
        };
        let inputs = self.input_facts(node);
        let states = inputs.len().saturating_sub(m);
        let in_axes = attr_ints(node, "scan_input_axes").unwrap_or_default();
        let mut seeds: Vec<Fact> = inputs[..states]
            .iter()
            .map(|f| f.clone().unwrap_or_default())
            .map(|f| Fact { value: None, ..f })
            .collect();
        let mut seq_len = None;
        for (k, f) in inputs[states..].iter().enumerate() {
            let f = f.clone().unwrap_or_default();
            let shape = f.shape.as_ref().and_then(|s| {
                let a = shapes_axis(in_axes.get(k).copied().unwrap_or(0), s.len())?;
                seq_len.get_or_insert_with(|| s[a].clone());
                let mut s = s.clone();
                s.remove(a);
                Some(s)
            });
            seeds.push(Fact {
                elem_type: f.elem_type,
                shape,
                ..Fact::default()
            });
        }
        self.infer_body(body, env, depth + 1, seeds);
        let outs = self.outputs_of(body);
        let out_axes = attr_ints(node, "scan_output_axes").unwrap_or_default();
        let seq_len = seq_len.unwrap_or_else(|| Fresh::new(output_key(node), "scan").dim());
        let mut result: Vec<Fact> = outs.iter().take(states).cloned().collect();
        for (k, o) in outs.iter().skip(states).enumerate() {
            let shape = o.shape.as_ref().and_then(|s| {
                let a = shapes_axis(out_axes.get(k).copied().unwrap_or(0), s.len() + 1)?;
                let mut s = s.clone();
                s.insert(a, seq_len.clone());
                Some(s)
            });
            result.push(Fact {
                elem_type: o.elem_type,
                shape,
                ..Fact::default()
            });
        }
        result.resize(n, Fact::default());
        result
    }

    /// A call of a model-local function: its body inferred on the caller's input facts in a
    /// scope of its own, with the caller's attributes substituted for references.
    fn infer_function_call(
        &mut self,
        node: &NodeProto,
        f: &FunctionProto,
        env: &Env,
        depth: usize,
    ) -> Vec<Fact> {
        let n = node.output.len();
        if depth >= MAX_DEPTH {
            return vec![Fact::default(); n];
        }
        let mut local = Inference::default();
        for (formal, actual) in f.input.iter().zip(&node.input) {
            if let Some(fact) = (!actual.is_empty())
                .then(|| self.facts.get(actual))
                .flatten()
            {
                local.facts.insert(formal.clone(), fact.clone());
            }
        }
        let body = GraphProto {
            node: f
                .node
                .iter()
                .map(|b| with_caller_attributes(b, node, f))
                .collect(),
            ..Default::default()
        };
        let opsets = if f.opset_import.is_empty() {
            env.opsets.clone()
        } else {
            opsets_map(&f.opset_import)
        };
        let inner = Env {
            opsets,
            functions: env.functions,
            read: env.read,
        };
        local.infer_graph(&body, &inner, depth + 1);
        let mut out: Vec<Fact> = f
            .output
            .iter()
            .map(|o| local.facts.get(o).cloned().unwrap_or_default())
            .collect();
        out.resize(n, Fact::default());
        out
    }
}

fn hash_tensor(t: &TensorProto, h: &mut impl std::hash::Hasher) {
    use std::hash::Hash;
    t.data_type.hash(h);
    t.dims.hash(h);
    let count = t.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d));
    if count.is_some_and(|c| c <= MAX_VALUE_ELEMENTS as i64) {
        // small enough that inference reads the values
        t.raw_data.hash(h);
        t.int64_data.hash(h);
        t.int32_data.hash(h);
        t.float_data
            .iter()
            .map(|f| f.to_bits())
            .for_each(|b| b.hash(h));
        t.double_data
            .iter()
            .map(|f| f.to_bits())
            .for_each(|b| b.hash(h));
        t.uint64_data.hash(h);
        t.external_data.len().hash(h);
        for e in &t.external_data {
            e.key.hash(h);
            e.value.hash(h);
        }
    }
}

fn hash_fact(f: &Fact, h: &mut impl std::hash::Hasher) {
    use std::hash::Hash;
    1u8.hash(h);
    f.elem_type.hash(h);
    f.shape.hash(h);
    f.value.hash(h);
    f.float_value
        .iter()
        .flatten()
        .map(|x| x.to_bits())
        .for_each(|b| b.hash(h));
}

/// The name unknowns made for a node's outputs derive from.
fn output_key(node: &NodeProto) -> &str {
    node.output
        .iter()
        .find(|o| !o.is_empty())
        .map_or(node.name(), String::as_str)
}

/// A fact with every dim that involves an unknown replaced by a new unknown.
fn reseat(f: &Fact, fresh: &mut Fresh) -> Fact {
    Fact {
        shape: f.shape.as_ref().map(|s| {
            s.iter()
                .map(|d| if d.is_known() { d.clone() } else { fresh.dim() })
                .collect()
        }),
        ..f.clone()
    }
}

fn shapes_axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

/// A function body node with attribute references resolved against the calling node (a
/// reference the caller does not set falls back to the function's default, or is dropped).
fn with_caller_attributes(body: &NodeProto, caller: &NodeProto, f: &FunctionProto) -> NodeProto {
    let mut n = body.clone();
    n.attribute = body
        .attribute
        .iter()
        .filter_map(|a| {
            if a.ref_attr_name().is_empty() {
                return Some(a.clone());
            }
            let source = attr(caller, a.ref_attr_name()).or_else(|| {
                f.attribute_proto
                    .iter()
                    .find(|d| d.name() == a.ref_attr_name())
            })?;
            let mut resolved = source.clone();
            resolved.name = a.name.clone();
            Some(resolved)
        })
        .collect();
    n
}

/// The model-wide things inference needs besides the graph.
struct Env<'a> {
    opsets: HashMap<String, i64>,
    functions: &'a Functions,
    read: TensorReader<'a>,
}

/// Model-local functions by (domain, name).
type Functions = HashMap<(String, String), FunctionProto>;

fn functions_map(functions: &[FunctionProto]) -> Functions {
    functions
        .iter()
        .map(|f| {
            (
                (
                    normalize_domain(f.domain()).to_string(),
                    f.name().to_string(),
                ),
                f.clone(),
            )
        })
        .collect()
}

fn opsets_map(opsets: &[crate::onnx::proto::OperatorSetIdProto]) -> HashMap<String, i64> {
    opsets
        .iter()
        .map(|o| (normalize_domain(o.domain()).to_string(), o.version()))
        .collect()
}

impl<'a> Env<'a> {
    fn of(
        opsets: &[crate::onnx::proto::OperatorSetIdProto],
        functions: &'a Functions,
        read: TensorReader<'a>,
    ) -> Env<'a> {
        Env {
            opsets: opsets_map(opsets),
            functions,
            read,
        }
    }

    fn opset(&self, domain: &str) -> Option<i64> {
        self.opsets.get(domain).copied()
    }

    fn function(&self, domain: &str, op: &str) -> Option<&FunctionProto> {
        self.functions.get(&(domain.to_string(), op.to_string()))
    }
}

/// The integer elements of a small tensor, as dims.
pub(crate) fn int_values(data: &TensorData) -> Option<Vec<Dim>> {
    if data.len() > MAX_VALUE_ELEMENTS || data.dims.len() > 1 {
        return None;
    }
    let v: Vec<i64> = match data.dtype {
        DataType::Int64 => data.i64s().ok()?,
        DataType::Int32 => data.i32s().ok()?.into_iter().map(i64::from).collect(),
        DataType::Bool
        | DataType::Uint8
        | DataType::Int8
        | DataType::Int16
        | DataType::Uint16
        | DataType::Uint32 => data.to_f64_lossy()?.into_iter().map(|x| x as i64).collect(),
        _ => return None,
    };
    Some(v.into_iter().map(Dim::constant).collect())
}

/// The fact of a constant tensor: its type and dims, and its elements when small.
fn constant_fact(t: &TensorProto, read: TensorReader) -> Fact {
    let elem_type = DataType::from_code(t.data_type()).ok();
    let shape = t
        .dims
        .iter()
        .all(|&d| d >= 0)
        .then(|| t.dims.iter().map(|&d| Dim::constant(d)).collect());
    let count = t.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d));
    let small =
        count.is_some_and(|c| (0..=MAX_VALUE_ELEMENTS as i64).contains(&c)) && t.dims.len() <= 1;
    let data = small.then(|| read(t)).flatten();
    let value = data.as_ref().and_then(int_values);
    let float_value = data.as_ref().and_then(|d| match d.dtype {
        DataType::Float | DataType::Double | DataType::Float16 => d
            .to_f64_lossy()
            .map(|v| v.into_iter().map(|x| x as f32).collect()),
        _ => None,
    });
    Fact {
        elem_type,
        shape,
        value,
        float_value,
    }
}

/// A `value_info` entry for a fact with a known element type: number dims as `dim_value`,
/// expressions over named dims as `dim_param` (the same expression, the same name), and dims
/// involving an unknown left empty.
pub fn value_info(
    name: &str,
    fact: &Fact,
    existing: Option<&ValueInfoProto>,
) -> Option<ValueInfoProto> {
    let elem_type = fact.elem_type?;
    let shape = fact.shape.as_ref().map(|dims| TensorShapeProto {
        dim: dims.iter().map(outputs::dimension_of).collect(),
    });
    Some(ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type.code()),
                shape,
            })),
            denotation: None,
        }),
        doc_string: existing.and_then(|e| e.doc_string.clone()),
        metadata_props: existing
            .map(|e| e.metadata_props.clone())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests;
