//! Reading node attributes by name, with the defaults the operator specs give.

use super::proto::{AttributeProto, GraphProto, NodeProto, TensorProto};

pub fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

pub fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).and_then(|a| a.i).unwrap_or(default)
}

pub fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).and_then(|a| a.f).unwrap_or(default)
}

pub fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

pub fn attr_floats(node: &NodeProto, name: &str) -> Option<Vec<f32>> {
    attr(node, name).map(|a| a.floats.clone())
}

/// A string attribute as UTF-8 (lossy), if set.
pub fn attr_s(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name)
        .and_then(|a| a.s.as_ref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

pub fn attr_t<'a>(node: &'a NodeProto, name: &str) -> Option<&'a TensorProto> {
    attr(node, name).and_then(|a| a.t.as_ref())
}

pub fn attr_g<'a>(node: &'a NodeProto, name: &str) -> Option<&'a GraphProto> {
    attr(node, name).and_then(|a| a.g.as_ref())
}
