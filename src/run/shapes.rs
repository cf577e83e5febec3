//! Value shapes with symbolic dims, and `--input-shape` settings that fix them.

use std::collections::BTreeMap;
use std::fmt;

use crate::onnx::DataType;
use crate::onnx::proto::ValueInfoProto;
use crate::onnx::proto::tensor_shape_proto::dimension::Value;
use crate::onnx::proto::type_proto;

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(i64),
    Symbol(String),
    /// A dimension with neither value nor name.
    Unknown,
}

/// A declared shape: unknown rank, or one dim per axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueShape {
    UnknownRank,
    Known(Vec<Dim>),
}

impl ValueShape {
    pub fn of(info: &ValueInfoProto) -> ValueShape {
        let tensor = match info.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => t,
            _ => return ValueShape::UnknownRank,
        };
        match &tensor.shape {
            None => ValueShape::UnknownRank,
            Some(s) => ValueShape::Known(
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(Value::DimValue(v)) if *v >= 0 => Dim::Fixed(*v),
                        Some(Value::DimParam(p)) if crate::onnx::names_a_dim(p) => {
                            Dim::Symbol(p.clone())
                        }
                        _ => Dim::Unknown,
                    })
                    .collect(),
            ),
        }
    }

    /// The tensor element type of a value, if it is a tensor with a known one.
    pub fn elem_type(info: &ValueInfoProto) -> Option<DataType> {
        match info.r#type.as_ref()?.value.as_ref()? {
            type_proto::Value::TensorType(t) => DataType::from_code(t.elem_type()).ok(),
            _ => None,
        }
    }

    /// Is every dim a number?
    pub fn is_static(&self) -> bool {
        matches!(self, ValueShape::Known(d) if d.iter().all(|d| matches!(d, Dim::Fixed(_))))
    }
}

impl fmt::Display for ValueShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueShape::UnknownRank => f.write_str("[?...]"),
            ValueShape::Known(dims) => {
                let parts: Vec<String> = dims
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(v) => v.to_string(),
                        Dim::Symbol(s) => s.clone(),
                        Dim::Unknown => "?".into(),
                    })
                    .collect();
                write!(f, "[{}]", parts.join(", "))
            }
        }
    }
}

impl serde::Serialize for ValueShape {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ValueShape::UnknownRank => s.serialize_none(),
            ValueShape::Known(d) => d.serialize(s),
        }
    }
}

/// Sizes the user gave: whole shapes by input name (`input=1,3,224,224`) or one size by symbolic
/// dim name (`batch=4`).
#[derive(Debug, Clone, Default)]
pub struct InputShapes {
    pub by_input: BTreeMap<String, Vec<usize>>,
    pub by_symbol: BTreeMap<String, usize>,
}

impl InputShapes {
    /// Parses `NAME=D1,D2,...` settings. A single number may name an input of rank 1 or a symbol;
    /// which one is decided against the model by [`InputShapes::resolve`].
    pub fn parse(settings: &[String]) -> Result<InputShapes, String> {
        let mut shapes = InputShapes::default();
        for s in settings {
            let (name, dims) = s
                .rsplit_once('=')
                .ok_or_else(|| format!("--input-shape '{s}': expected NAME=D1,D2,... "))?;
            let dims = dims
                .split(',')
                .map(|d| d.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| format!("--input-shape '{s}': dims must be non-negative integers"))?;
            if name.is_empty() {
                return Err(format!("--input-shape '{s}': empty name"));
            }
            shapes.by_input.insert(name.to_string(), dims);
        }
        Ok(shapes)
    }

    /// Splits settings into input shapes and symbol sizes for a model's inputs; a name that is
    /// neither an input nor a symbol of one is an error naming what exists.
    pub fn resolve(mut self, inputs: &[super::InputDesc]) -> Result<InputShapes, String> {
        let symbols: Vec<String> = inputs
            .iter()
            .flat_map(|i| match &i.shape {
                ValueShape::Known(d) => d.clone(),
                ValueShape::UnknownRank => vec![],
            })
            .filter_map(|d| {
                if let Dim::Symbol(s) = d {
                    Some(s)
                } else {
                    None
                }
            })
            .collect();
        let names: Vec<String> = self.by_input.keys().cloned().collect();
        for name in names {
            if let Some(input) = inputs.iter().find(|i| i.name == name) {
                let dims = &self.by_input[&name];
                if let ValueShape::Known(decl) = &input.shape {
                    check_against(&name, decl, dims)?;
                }
                continue;
            }
            let dims = self.by_input.remove(&name).unwrap_or_default();
            match (symbols.contains(&name), dims.as_slice()) {
                (true, [size]) => {
                    self.by_symbol.insert(name, *size);
                }
                (true, _) => {
                    return Err(format!(
                        "--input-shape {name}: a symbolic dim takes one size"
                    ));
                }
                (false, _) => {
                    let known: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
                    return Err(format!(
                        "--input-shape {name}: no such input or symbolic dim (inputs: {})",
                        known.join(", ")
                    ));
                }
            }
        }
        Ok(self)
    }

    /// The sizes of symbols: those given by name, and those a whole input shape given binds
    /// (`input=1,512` makes `input [batch, sequence]`'s batch 1 wherever `batch` appears).
    pub fn symbol_sizes(&self, inputs: &[super::InputDesc]) -> BTreeMap<String, usize> {
        let mut sizes = self.by_symbol.clone();
        for input in inputs {
            if let (Some(dims), ValueShape::Known(declared)) =
                (self.by_input.get(&input.name), &input.shape)
            {
                for (d, &n) in declared.iter().zip(dims) {
                    if let Dim::Symbol(s) = d {
                        sizes.insert(s.clone(), n);
                    }
                }
            }
        }
        sizes
    }

    /// Gives each symbol of `inputs` nobody sized one size for all the inputs it appears in: 1
    /// where it leads an input (a batch), [`UNKNOWN_DIM`] elsewhere. A symbol sized by axis
    /// alone would differ between inputs that share it (silero's `state [2, batch, 128]` beside
    /// `input [batch, sequence]`), which no model runs on.
    pub fn with_symbol_defaults(mut self, inputs: &[super::InputDesc]) -> InputShapes {
        self.by_symbol = self.symbol_sizes(inputs);
        let declared: Vec<&[Dim]> = inputs
            .iter()
            .filter(|i| !self.by_input.contains_key(&i.name))
            .filter_map(|i| match &i.shape {
                ValueShape::Known(dims) => Some(dims.as_slice()),
                ValueShape::UnknownRank => None,
            })
            .collect();
        // a symbol leading some input is a batch of 1 everywhere; the others take UNKNOWN_DIM
        for dims in &declared {
            if let Some(Dim::Symbol(s)) = dims.first() {
                self.by_symbol.entry(s.clone()).or_insert(1);
            }
        }
        for d in declared.iter().flat_map(|dims| dims.iter()) {
            if let Dim::Symbol(s) = d {
                self.by_symbol.entry(s.clone()).or_insert(UNKNOWN_DIM);
            }
        }
        self
    }

    /// The concrete shape of an input: the user's, else its declared dims with symbols from
    /// `by_symbol` (see [`InputShapes::with_symbol_defaults`]); dims still unknown take 1 on the
    /// leading (batch) axis and 64 elsewhere, a size that sequence models and image models with
    /// a few downsamplings can both run on.
    pub fn concrete(&self, input: &super::InputDesc) -> Vec<usize> {
        if let Some(d) = self.by_input.get(&input.name) {
            return d.clone();
        }
        match &input.shape {
            ValueShape::UnknownRank => vec![],
            ValueShape::Known(dims) => dims
                .iter()
                .enumerate()
                .map(|(axis, d)| {
                    let default = if axis == 0 { 1 } else { UNKNOWN_DIM };
                    match d {
                        Dim::Fixed(v) if *v >= 0 => *v as usize,
                        Dim::Symbol(s) => self.by_symbol.get(s).copied().unwrap_or(default),
                        _ => default,
                    }
                })
                .collect(),
        }
    }
}

/// The size given to a non-leading dim nobody fixed.
const UNKNOWN_DIM: usize = 64;

fn check_against(name: &str, decl: &[Dim], dims: &[usize]) -> Result<(), String> {
    if decl.len() != dims.len() {
        return Err(format!(
            "--input-shape {name}: the model declares rank {}, got {} dims",
            decl.len(),
            dims.len()
        ));
    }
    for (i, (d, &n)) in decl.iter().zip(dims).enumerate() {
        if let Dim::Fixed(v) = d
            && *v as usize != n
        {
            return Err(format!(
                "--input-shape {name}: axis {i} is fixed to {v} in the model, got {n}"
            ));
        }
    }
    Ok(())
}
