//! `Constant` nodes as tensors. Many exporters (PaddlePaddle's among them) store every weight as a
//! `Constant` node instead of an initializer; passes must see those as constants too.

use bytes::Bytes;

use crate::onnx::DataType;
use crate::onnx::proto::{NodeProto, TensorProto};

/// The tensor a `Constant` node (default domain) produces, from whichever of its value attributes
/// is set. `None` for other nodes and for `sparse_value`, which has no dense form here.
pub fn constant_tensor(node: &NodeProto) -> Option<TensorProto> {
    if node.op_type() != "Constant" || !matches!(node.domain(), "" | "ai.onnx") {
        return None;
    }
    let attr = node.attribute.first()?;
    let tensor = |dtype: DataType, dims: Vec<i64>| TensorProto {
        data_type: Some(dtype.code()),
        dims,
        ..Default::default()
    };
    let t = match attr.name() {
        "value" => attr.t.clone()?,
        "value_float" => TensorProto {
            float_data: vec![attr.f?],
            ..tensor(DataType::Float, vec![])
        },
        "value_floats" => TensorProto {
            float_data: attr.floats.clone(),
            ..tensor(DataType::Float, vec![attr.floats.len() as i64])
        },
        "value_int" => TensorProto {
            int64_data: vec![attr.i?],
            ..tensor(DataType::Int64, vec![])
        },
        "value_ints" => TensorProto {
            int64_data: attr.ints.clone(),
            ..tensor(DataType::Int64, vec![attr.ints.len() as i64])
        },
        "value_string" => TensorProto {
            string_data: vec![attr.s.clone().unwrap_or_else(Bytes::new)],
            ..tensor(DataType::String, vec![])
        },
        "value_strings" => TensorProto {
            string_data: attr.strings.clone(),
            ..tensor(DataType::String, vec![attr.strings.len() as i64])
        },
        _ => return None,
    };
    Some(t)
}
