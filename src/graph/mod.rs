//! The editable graph: a use-def index over an ONNX `GraphProto`, topological order, dead-code
//! detection, and the edits passes make (replace uses, remove nodes, add initializers).
//!
//! The proto stays the source of truth: an edit changes only what it names, so attributes, doc
//! strings, metadata and unknown-to-us structure survive untouched. The index is rebuilt lazily
//! after an edit. Subgraphs (If/Loop/Scan bodies) may read values of enclosing graphs; such a
//! capture counts as a use by the node that owns the subgraph, so the outer value is neither dead
//! nor renamed away from under the body.

pub mod builder;
mod check;
mod constant;

use std::borrow::Cow;
use std::cell::{OnceCell, RefCell};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};

pub use builder::{GraphBuilder, ModelBuilder};
pub use check::{GraphError, ModelError, check_graph, check_model};
pub use constant::constant_tensor;

use crate::onnx::proto::{GraphProto, NodeProto, TensorProto};

/// How a node is named in messages: its name, or its position and op type when it has none.
pub fn node_label(node: &NodeProto, index: usize) -> String {
    match node.name() {
        "" => format!("#{index} ({})", node.op_type()),
        name => format!("'{name}' ({})", node.op_type()),
    }
}

/// The graphs held in a node's attributes (If branches, Loop/Scan bodies).
pub fn subgraphs(node: &NodeProto) -> impl Iterator<Item = &GraphProto> {
    node.attribute
        .iter()
        .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
}

/// Every node of `g` and of its bodies (nested ones too), the graph's own first.
pub fn all_nodes(g: &GraphProto) -> Vec<&NodeProto> {
    let mut all: Vec<&NodeProto> = g.node.iter().collect();
    for n in &g.node {
        for body in subgraphs(n) {
            all.extend(all_nodes(body));
        }
    }
    all
}

/// The labels ([`node_label`]) of `g`'s nodes that hold bodies, by their first output: taken
/// before a rewrite inserts nodes, they name the nodes of the graph as it was.
pub fn holder_labels(g: &GraphProto) -> HashMap<String, String> {
    g.node
        .iter()
        .enumerate()
        .filter(|(_, n)| subgraphs(n).next().is_some())
        .filter_map(|(i, n)| Some((n.output.first()?.clone(), node_label(n, i))))
        .collect()
}

/// The bodies of `g`'s nodes, each with the label that names its nodes in messages: `path`
/// (the enclosing graph's own, empty for the main graph), then the node holding it and the
/// attribute (`'If_0' (If)/then_branch/`), to which a body node's [`node_label`] is appended.
/// The holder is labelled as in `labels` ([`holder_labels`] of the graph before it was
/// rewritten), else by its place now.
pub fn bodies_mut<'g>(
    g: &'g mut GraphProto,
    path: &str,
    labels: &HashMap<String, String>,
) -> Vec<(String, &'g mut GraphProto)> {
    let mut bodies = Vec::new();
    for (i, node) in g.node.iter_mut().enumerate() {
        let label = node
            .output
            .first()
            .and_then(|o| labels.get(o))
            .cloned()
            .unwrap_or_else(|| node_label(node, i));
        for a in &mut node.attribute {
            let prefix = format!("{path}{label}/{}/", a.name());
            for body in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                bodies.push((prefix.clone(), body));
            }
        }
    }
    bodies
}

/// Mutable access to the graphs held in a node's attributes.
pub fn subgraphs_mut(node: &mut NodeProto) -> impl Iterator<Item = &mut GraphProto> {
    node.attribute
        .iter_mut()
        .flat_map(|a| a.g.iter_mut().chain(a.graphs.iter_mut()))
}

/// The names a graph defines for its bodies to read: inputs, initializers, node outputs.
pub fn defined_names(g: &GraphProto) -> impl Iterator<Item = String> + '_ {
    g.input
        .iter()
        .map(|i| i.name().to_string())
        .chain(g.initializer.iter().map(|t| t.name().to_string()))
        .chain(g.node.iter().flat_map(|n| n.output.iter().cloned()))
}

/// Names a graph reads from enclosing scopes: used inside it (or its own subgraphs) but not
/// defined there.
pub fn captured_names(graph: &GraphProto) -> BTreeSet<String> {
    let mut defined: HashSet<&str> = graph.input.iter().map(|i| i.name()).collect();
    defined.extend(graph.initializer.iter().map(|t| t.name()));
    defined.extend(
        graph
            .sparse_initializer
            .iter()
            .filter_map(|s| s.values.as_ref())
            .map(|v| v.name()),
    );
    defined.extend(
        graph
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str)),
    );
    let mut captured = BTreeSet::new();
    for n in &graph.node {
        for i in &n.input {
            if !i.is_empty() && !defined.contains(i.as_str()) {
                captured.insert(i.clone());
            }
        }
        for g in subgraphs(n) {
            captured.extend(
                captured_names(g)
                    .into_iter()
                    .filter(|c| !defined.contains(c.as_str())),
            );
        }
    }
    for o in &graph.output {
        if !defined.contains(o.name()) {
            captured.insert(o.name().to_string());
        }
    }
    captured
}

/// Every value a node reads: its inputs, then what its subgraphs capture from outside.
pub fn node_reads(node: &NodeProto) -> Vec<String> {
    let mut reads: Vec<String> = node
        .input
        .iter()
        .filter(|i| !i.is_empty())
        .cloned()
        .collect();
    for g in subgraphs(node) {
        reads.extend(captured_names(g));
    }
    reads
}

/// A topological order of `graph`'s nodes, as close to the stored order as dependencies allow
/// (a graph already sorted keeps its order exactly). Errors on a cycle.
pub fn topological_order(graph: &GraphProto) -> Result<Vec<usize>, GraphError> {
    let n = graph.node.len();
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for o in node.output.iter().filter(|o| !o.is_empty()) {
            producer.entry(o.as_str()).or_insert(i);
        }
    }
    let mut pending = vec![0usize; n];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in graph.node.iter().enumerate() {
        let deps: BTreeSet<usize> = node_reads(node)
            .iter()
            .filter_map(|r| producer.get(r.as_str()).copied())
            .collect();
        for d in deps {
            if d == i {
                // a node reading its own output is a cycle of one
                pending[i] = usize::MAX;
                continue;
            }
            pending[i] = pending[i].saturating_add(1);
            users[d].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| pending[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &u in &users[i] {
            pending[u] = pending[u].saturating_sub(1);
            if pending[u] == 0 {
                ready.push(Reverse(u));
            }
        }
    }
    if order.len() < n {
        let placed: HashSet<usize> = order.iter().copied().collect();
        let stuck: Vec<String> = (0..n)
            .filter(|i| !placed.contains(i))
            .take(5)
            .map(|i| node_label(&graph.node[i], i))
            .collect();
        return Err(GraphError::Cycle {
            graph: graph.name().to_string(),
            nodes: stuck.join(", "),
        });
    }
    Ok(order)
}

/// Producer and consumers of every value in one graph.
#[derive(Debug, Default)]
pub struct UseDef {
    producer: HashMap<String, (usize, usize)>,
    consumers: HashMap<String, Vec<usize>>,
}

impl UseDef {
    pub fn build(graph: &GraphProto) -> UseDef {
        let mut index = UseDef::default();
        for (i, node) in graph.node.iter().enumerate() {
            for (slot, o) in node
                .output
                .iter()
                .enumerate()
                .filter(|(_, o)| !o.is_empty())
            {
                index.producer.entry(o.clone()).or_insert((i, slot));
            }
            let mut seen = HashSet::new();
            for r in node_reads(node) {
                if seen.insert(r.clone()) {
                    index.consumers.entry(r).or_default().push(i);
                }
            }
        }
        index
    }

    /// The node (and output slot) producing `value`, if a node does.
    pub fn producer(&self, value: &str) -> Option<(usize, usize)> {
        self.producer.get(value).copied()
    }

    /// The nodes reading `value` (directly or from a subgraph), each once, in graph order.
    pub fn consumers(&self, value: &str) -> &[usize] {
        self.consumers.get(value).map_or(&[], Vec::as_slice)
    }
}

/// A graph being edited, with its use-def index.
#[derive(Debug, Default)]
pub struct Graph {
    proto: GraphProto,
    index: OnceCell<UseDef>,
    /// Names defined in the enclosing graphs (for a subgraph): a new name must not shadow them.
    outer: HashSet<String>,
    /// Names [`Graph::fresh_name`] handed out, which the caller may not have put in the graph
    /// yet (nodes built first and inserted together): none is handed out twice.
    handed_out: RefCell<HashSet<String>>,
    /// Every name the graph, its bodies and `outer` use, and those handed out: collected on the
    /// first [`Graph::fresh_name`] after [`Graph::proto_mut`] (which may add any name), kept
    /// by the edits here, which add only names it holds. Collecting it for each new name made
    /// quantizing a model of 3000 MatMuls take more than ten minutes.
    used: RefCell<Option<HashSet<String>>>,
}

impl Graph {
    pub fn new(proto: GraphProto) -> Graph {
        Graph::in_scope(proto, HashSet::new())
    }

    /// A subgraph being edited, inside enclosing graphs that define `outer`.
    pub fn in_scope(proto: GraphProto, outer: HashSet<String>) -> Graph {
        Graph {
            proto,
            index: OnceCell::new(),
            outer,
            handed_out: RefCell::new(HashSet::new()),
            used: RefCell::new(None),
        }
    }

    pub fn proto(&self) -> &GraphProto {
        &self.proto
    }

    pub fn into_proto(self) -> GraphProto {
        self.proto
    }

    /// Mutable access to the proto; the index, and the names new ones avoid, are rebuilt on
    /// next use.
    pub fn proto_mut(&mut self) -> &mut GraphProto {
        self.used.get_mut().take();
        self.edited()
    }

    /// The proto, for an edit that adds no name [`Graph::fresh_name`] does not know of.
    fn edited(&mut self) -> &mut GraphProto {
        self.index.take();
        &mut self.proto
    }

    pub fn nodes(&self) -> &[NodeProto] {
        &self.proto.node
    }

    pub fn index(&self) -> &UseDef {
        self.index.get_or_init(|| UseDef::build(&self.proto))
    }

    pub fn producer(&self, value: &str) -> Option<&NodeProto> {
        self.index()
            .producer(value)
            .map(|(i, _)| &self.proto.node[i])
    }

    pub fn consumers(&self, value: &str) -> &[usize] {
        self.index().consumers(value)
    }

    pub fn is_output(&self, value: &str) -> bool {
        self.proto.output.iter().any(|o| o.name() == value)
    }

    pub fn is_input(&self, value: &str) -> bool {
        self.proto.input.iter().any(|i| i.name() == value)
    }

    pub fn initializer(&self, name: &str) -> Option<&TensorProto> {
        self.proto.initializer.iter().find(|t| t.name() == name)
    }

    /// The constant value of `name`: an initializer that no graph input overrides, or the output
    /// of a `Constant` node. `None` for anything computed or fed at run time.
    pub fn constant(&self, name: &str) -> Option<Cow<'_, TensorProto>> {
        if let Some(t) = self.initializer(name) {
            return (!self.is_input(name)).then_some(Cow::Borrowed(t));
        }
        let node = self.producer(name)?;
        constant_tensor(node).map(|mut t| {
            if t.name().is_empty() {
                t.name = Some(name.to_string());
            }
            Cow::Owned(t)
        })
    }

    /// Node indices in a topological order (see [`topological_order`]).
    pub fn topological_order(&self) -> Result<Vec<usize>, GraphError> {
        topological_order(&self.proto)
    }

    /// Reorders the nodes topologically; returns whether anything moved.
    pub fn sort_topologically(&mut self) -> Result<bool, GraphError> {
        let order = self.topological_order()?;
        if order.iter().enumerate().all(|(i, &j)| i == j) {
            return Ok(false);
        }
        let mut slots: Vec<Option<NodeProto>> = std::mem::take(&mut self.edited().node)
            .into_iter()
            .map(Some)
            .collect();
        self.proto.node = order.into_iter().filter_map(|i| slots[i].take()).collect();
        Ok(true)
    }

    /// Nodes whose outputs reach no graph output (through any chain of consumers).
    pub fn dead_nodes(&self) -> Vec<usize> {
        let index = self.index();
        let mut live = vec![false; self.proto.node.len()];
        let mut stack: Vec<usize> = self
            .proto
            .output
            .iter()
            .filter_map(|o| index.producer(o.name()))
            .map(|p| p.0)
            .collect();
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut live[i], true) {
                continue;
            }
            for r in node_reads(&self.proto.node[i]) {
                if let Some((p, _)) = index.producer(&r) {
                    stack.push(p);
                }
            }
        }
        (0..live.len()).filter(|&i| !live[i]).collect()
    }

    /// Initializers no node (nor subgraph, nor graph output) reads.
    pub fn unused_initializers(&self) -> Vec<String> {
        self.proto
            .initializer
            .iter()
            .map(|t| t.name())
            .filter(|n| self.consumers(n).is_empty() && !self.is_output(n))
            .map(str::to_string)
            .collect()
    }

    /// Makes every reader of `old` read `new` instead, inside subgraphs too (where a subgraph
    /// does not define its own `old`). Graph outputs are not renamed: the interface stays.
    /// Returns how many inputs changed.
    pub fn replace_all_uses(&mut self, old: &str, new: &str) -> usize {
        let mut count = 0;
        for node in &mut self.edited().node {
            count += rename_reads(node, old, new);
        }
        if let Some(used) = self.used.get_mut() {
            used.insert(new.to_string());
        }
        count
    }

    /// Removes the nodes at `indices` (any order, duplicates ignored).
    pub fn remove_nodes(&mut self, indices: &[usize]) {
        let doomed: HashSet<usize> = indices.iter().copied().collect();
        let nodes = std::mem::take(&mut self.edited().node);
        self.proto.node = nodes
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !doomed.contains(i))
            .map(|(_, n)| n)
            .collect();
    }

    /// A name (for a value, or a node) not yet used by any value or node of this graph, its
    /// bodies or its enclosing graphs, nor handed out before, built from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        let mut handed_out = self.handed_out.borrow_mut();
        let mut used = self.used.borrow_mut();
        let used = used.get_or_insert_with(|| {
            let mut used = names_in(&self.proto);
            used.extend(self.outer.iter().cloned());
            used.extend(handed_out.iter().cloned());
            used
        });
        let name = fresh_among(used, base);
        handed_out.insert(name.clone());
        name
    }

    /// Adds `tensor` as an initializer under a fresh name derived from `base`; returns the name.
    pub fn add_initializer(&mut self, base: &str, mut tensor: TensorProto) -> String {
        let name = self.fresh_name(base);
        tensor.name = Some(name.clone());
        self.edited().initializer.push(tensor);
        name
    }
}

/// Every name `g` and the graphs inside its nodes use: inputs, outputs, value infos,
/// initializers, node inputs and outputs, and node names (a new node named after a fresh value,
/// as the rewrites name theirs, cannot then take an existing node's name, which onnxruntime and
/// tract refuse).
pub fn names_in(g: &GraphProto) -> HashSet<String> {
    let mut names = HashSet::new();
    collect_names(g, &mut names);
    names
}

/// `base`, or `base_1`, `base_2`, ... : the first not in `used`, which it is added to (a caller
/// naming many values keeps one set instead of collecting the graph's names for each).
pub fn fresh_among(used: &mut HashSet<String>, base: &str) -> String {
    let name = if used.contains(base) {
        (1..)
            .map(|k| format!("{base}_{k}"))
            .find(|c| !used.contains(c))
            .expect("unbounded")
    } else {
        base.to_string()
    };
    used.insert(name.clone());
    name
}

fn collect_names(g: &GraphProto, names: &mut HashSet<String>) {
    names.extend(
        g.input
            .iter()
            .chain(&g.output)
            .chain(&g.value_info)
            .map(|v| v.name().to_string()),
    );
    names.extend(g.initializer.iter().map(|t| t.name().to_string()));
    for n in &g.node {
        names.extend(n.input.iter().chain(&n.output).cloned());
        names.extend(n.name.iter().filter(|n| !n.is_empty()).cloned());
        for sg in subgraphs(n) {
            collect_names(sg, names);
        }
    }
}

fn rename_reads(node: &mut NodeProto, old: &str, new: &str) -> usize {
    let mut count = 0;
    for i in node.input.iter_mut().filter(|i| i.as_str() == old) {
        *i = new.to_string();
        count += 1;
    }
    for g in subgraphs_mut(node) {
        let shadows = g.input.iter().any(|i| i.name() == old)
            || g.initializer.iter().any(|t| t.name() == old)
            || g.node.iter().any(|n| n.output.iter().any(|o| o == old));
        if shadows {
            continue;
        }
        for n in &mut g.node {
            count += rename_reads(n, old, new);
        }
        for o in g.output.iter_mut().filter(|o| o.name() == old) {
            o.name = Some(new.to_string());
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests;
