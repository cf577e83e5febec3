//! Building small models in code, for tests and for the fixture generator:
//!
//! ```
//! use mdeploy::graph::ModelBuilder;
//! use mdeploy::onnx::DataType;
//! let model = ModelBuilder::new(17)
//!     .input("x", DataType::Float, &["N", "4"])
//!     .initializer_f32("w", &[4, 2], &[0.5; 8])
//!     .node("MatMul", &["x", "w"], &["y"])
//!     .output("y", DataType::Float, &["N", "2"])
//!     .build();
//! assert_eq!(model.graph.unwrap().node.len(), 1);
//! ```

use bytes::Bytes;

use crate::onnx::DataType;
use crate::onnx::proto::attribute_proto::AttributeType;
use crate::onnx::proto::tensor_shape_proto::{Dimension, dimension::Value};
use crate::onnx::proto::type_proto::{self, Tensor};
use crate::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Builds a model around one graph; see the module docs.
#[derive(Debug, Clone)]
pub struct ModelBuilder {
    opsets: Vec<(String, i64)>,
    ir_version: i64,
    graph: GraphBuilder,
}

impl ModelBuilder {
    /// A model importing the default operator set at `opset`.
    pub fn new(opset: i64) -> Self {
        ModelBuilder {
            opsets: vec![(String::new(), opset)],
            ir_version: ir_version_for_opset(opset),
            graph: GraphBuilder::new("main"),
        }
    }

    pub fn opset(mut self, domain: &str, version: i64) -> Self {
        self.opsets.push((domain.to_string(), version));
        self
    }

    pub fn ir_version(mut self, ir: i64) -> Self {
        self.ir_version = ir;
        self
    }

    pub fn build(self) -> ModelProto {
        ModelProto {
            ir_version: Some(self.ir_version),
            opset_import: self
                .opsets
                .into_iter()
                .map(|(d, v)| OperatorSetIdProto {
                    domain: Some(d),
                    version: Some(v),
                })
                .collect(),
            producer_name: Some("mdeploy".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            graph: Some(self.graph.build()),
            ..Default::default()
        }
    }
}

macro_rules! forward {
    ($($name:ident($($arg:ident: $t:ty),*)),* $(,)?) => {
        impl ModelBuilder {
            $(
                #[doc = concat!("See [`GraphBuilder::", stringify!($name), "`].")]
                pub fn $name(mut self, $($arg: $t),*) -> Self {
                    self.graph = self.graph.$name($($arg),*);
                    self
                }
            )*
        }
    };
}

forward!(
    input(name: &str, dtype: DataType, dims: &[&str]),
    output(name: &str, dtype: DataType, dims: &[&str]),
    initializer(tensor: TensorProto),
    initializer_f32(name: &str, dims: &[i64], values: &[f32]),
    initializer_i64(name: &str, dims: &[i64], values: &[i64]),
    node(op: &str, inputs: &[&str], outputs: &[&str]),
    attr(attribute: AttributeProto),
    name_last(name: &str),
);

/// Builds one graph: inputs, initializers, nodes (attributes apply to the last node added).
#[derive(Debug, Clone, Default)]
pub struct GraphBuilder {
    graph: GraphProto,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        GraphBuilder {
            graph: GraphProto {
                name: Some(name.into()),
                ..Default::default()
            },
        }
    }

    /// A graph input; each dim is a number or a symbolic name (`"N"`).
    pub fn input(mut self, name: &str, dtype: DataType, dims: &[&str]) -> Self {
        self.graph.input.push(value_info(name, dtype, dims));
        self
    }

    pub fn output(mut self, name: &str, dtype: DataType, dims: &[&str]) -> Self {
        self.graph.output.push(value_info(name, dtype, dims));
        self
    }

    pub fn initializer(mut self, tensor: TensorProto) -> Self {
        self.graph.initializer.push(tensor);
        self
    }

    pub fn initializer_f32(self, name: &str, dims: &[i64], values: &[f32]) -> Self {
        self.initializer(tensor_f32(name, dims, values))
    }

    pub fn initializer_i64(self, name: &str, dims: &[i64], values: &[i64]) -> Self {
        self.initializer(tensor_i64(name, dims, values))
    }

    pub fn node(mut self, op: &str, inputs: &[&str], outputs: &[&str]) -> Self {
        self.graph.node.push(NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        });
        self
    }

    /// Adds an attribute to the last node.
    pub fn attr(mut self, attribute: AttributeProto) -> Self {
        if let Some(n) = self.graph.node.last_mut() {
            n.attribute.push(attribute);
        }
        self
    }

    /// Names the last node.
    pub fn name_last(mut self, name: &str) -> Self {
        if let Some(n) = self.graph.node.last_mut() {
            n.name = Some(name.into());
        }
        self
    }

    pub fn build(self) -> GraphProto {
        self.graph
    }
}

/// The oldest IR version that may import `opset` (ONNX's versioning table).
pub fn ir_version_for_opset(opset: i64) -> i64 {
    match opset {
        ..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        21 => 10,
        22..=23 => 11,
        _ => 12,
    }
}

/// A tensor value_info with dims given as numbers or symbolic names.
pub fn value_info(name: &str, dtype: DataType, dims: &[&str]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d.parse::<i64>() {
                Ok(v) => Value::DimValue(v),
                Err(_) => Value::DimParam(d.to_string()),
            }),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(Tensor {
                elem_type: Some(dtype.code()),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

pub fn tensor_f32(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    raw_tensor(
        name,
        DataType::Float,
        dims,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

pub fn tensor_i64(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    raw_tensor(
        name,
        DataType::Int64,
        dims,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

pub fn raw_tensor(name: &str, dtype: DataType, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(dtype.code()),
        dims: dims.to_vec(),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

fn attribute(name: &str, kind: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..attribute(name, AttributeType::Int)
    }
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: Some(v),
        ..attribute(name, AttributeType::Float)
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attribute(name, AttributeType::Ints)
    }
}

pub fn attr_floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        floats: v.to_vec(),
        ..attribute(name, AttributeType::Floats)
    }
}

pub fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        s: Some(Bytes::copy_from_slice(v.as_bytes())),
        ..attribute(name, AttributeType::String)
    }
}

pub fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        t: Some(t),
        ..attribute(name, AttributeType::Tensor)
    }
}

pub fn attr_graph(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        g: Some(g),
        ..attribute(name, AttributeType::Graph)
    }
}
