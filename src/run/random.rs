//! Seeded random inputs that fit a model's inputs (dtype and shape), for smoke runs and as the
//! default data of verification. ChaCha8 keeps the stream the same across platforms and versions.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use tract_onnx::prelude::*;

use super::{InputDesc, InputShapes, NamedTensor, RunError};
use crate::onnx::DataType;

/// The most bytes one generated input may take: a declared dim of 2^40 must be a clear error,
/// not an allocation that aborts the process.
pub const MAX_INPUT_BYTES: u64 = 4 << 30;

/// One tensor per input: floats uniform in [-1, 1); integers in [0, 8), or below the size of the
/// table they index; inputs named like masks all ones; booleans fair coins. An input whose
/// shape would take more than [`MAX_INPUT_BYTES`] is an error naming the size.
pub fn random_inputs(
    inputs: &[InputDesc],
    shapes: &InputShapes,
    seed: u64,
) -> Result<Vec<NamedTensor>, RunError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shapes = shapes.clone().with_symbol_defaults(inputs);
    inputs
        .iter()
        .map(|input| {
            let shape = shapes.concrete(input);
            let dtype = input.dtype.ok_or_else(|| RunError::Input {
                name: input.name.clone(),
                what: "the model does not declare its element type".into(),
            })?;
            let bytes = shape
                .iter()
                .try_fold(dtype.raw_len(1).unwrap_or(8) as u64, |acc, &d| {
                    acc.checked_mul(d as u64)
                });
            let layout = super::tensor_io::fits_tract(&shape, dtype.raw_len(1).unwrap_or(8));
            if bytes.is_none_or(|b| b > MAX_INPUT_BYTES) || !layout {
                return Err(RunError::Input {
                    name: input.name.clone(),
                    what: format!(
                        "random data of shape {shape:?} would take {} bytes, over the budget of \
                         {MAX_INPUT_BYTES} bytes (fix the dims with --input-shape, or give --data)",
                        bytes.map_or("more than 2^64".to_string(), |b| b.to_string())
                    ),
                });
            }
            let is_mask = input.name.to_ascii_lowercase().contains("mask");
            let high = if is_mask {
                1
            } else {
                input.index_bound.unwrap_or(8).clamp(1, 8)
            };
            let tensor =
                random_tensor(&mut rng, dtype, &shape, high, is_mask).ok_or_else(|| {
                    RunError::Input {
                        name: input.name.clone(),
                        what: format!("cannot generate random {dtype} data"),
                    }
                })?;
            Ok(NamedTensor {
                name: input.name.clone(),
                tensor,
            })
        })
        .collect()
}

fn random_tensor(
    rng: &mut ChaCha8Rng,
    dtype: DataType,
    shape: &[usize],
    high: u64,
    ones: bool,
) -> Option<Tensor> {
    let n: usize = shape.iter().product();
    let unit =
        |rng: &mut ChaCha8Rng| (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
    let small = |rng: &mut ChaCha8Rng| {
        if ones {
            1
        } else {
            (rng.next_u64() % high) as i64
        }
    };
    macro_rules! build {
        ($t:ty, $gen:expr) => {{
            let v: Vec<$t> = (0..n).map(|_| $gen(&mut *rng)).collect();
            Tensor::from_shape(shape, &v).ok()
        }};
    }
    use DataType::*;
    match dtype {
        Float => build!(f32, unit),
        Double => build!(f64, |r: &mut ChaCha8Rng| unit(r) as f64),
        Float16 => build!(half::f16, |r: &mut ChaCha8Rng| half::f16::from_f32(unit(r))),
        Int64 => build!(i64, small),
        Int32 => build!(i32, |r: &mut ChaCha8Rng| small(r) as i32),
        Int16 => build!(i16, |r: &mut ChaCha8Rng| small(r) as i16),
        Int8 => build!(i8, |r: &mut ChaCha8Rng| small(r) as i8),
        Uint8 => build!(u8, |r: &mut ChaCha8Rng| small(r) as u8),
        Uint16 => build!(u16, |r: &mut ChaCha8Rng| small(r) as u16),
        Uint32 => build!(u32, |r: &mut ChaCha8Rng| small(r) as u32),
        Uint64 => build!(u64, |r: &mut ChaCha8Rng| small(r) as u64),
        Bool => build!(bool, |r: &mut ChaCha8Rng| r.next_u32() & 1 == 1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Dim, ValueShape};

    fn input(name: &str, dims: &[Dim]) -> InputDesc {
        InputDesc {
            name: name.into(),
            dtype: Some(DataType::Float),
            shape: ValueShape::Known(dims.to_vec()),
            index_bound: None,
        }
    }

    #[test]
    fn a_symbol_shared_by_inputs_takes_one_size_in_all_of_them() {
        let batch = || Dim::Symbol("batch".into());
        let inputs = [
            input("input", &[batch(), Dim::Symbol("sequence".into())]),
            input("state", &[Dim::Fixed(2), batch(), Dim::Fixed(128)]),
            input("h", &[Dim::Fixed(2), Dim::Symbol("hidden".into())]),
        ];
        let made = random_inputs(&inputs, &InputShapes::default(), 1).unwrap();
        let shapes: Vec<&[usize]> = made.iter().map(|t| t.tensor.shape()).collect();
        // leading an input, a symbol is a batch of 1 wherever it appears; one that leads none
        // takes the default size
        assert_eq!(shapes, [&[1, 64][..], &[2, 1, 128], &[2, 64]]);
        // a size the user gave holds everywhere
        let given = InputShapes::parse(&["batch=3".to_string()])
            .unwrap()
            .resolve(&inputs)
            .unwrap();
        let made = random_inputs(&inputs, &given, 1).unwrap();
        assert_eq!(made[1].tensor.shape(), &[2, 3, 128]);
        assert_eq!(made[0].tensor.shape(), &[3, 64]);
        // and so does one a whole input shape binds
        let given = InputShapes::parse(&["input=4,512".to_string()])
            .unwrap()
            .resolve(&inputs)
            .unwrap();
        let made = random_inputs(&inputs, &given, 1).unwrap();
        assert_eq!(made[1].tensor.shape(), &[2, 4, 128]);
    }

    #[test]
    fn a_placeholder_dim_name_is_no_symbol_shared_between_axes() {
        // `?`, `-1` and `None` written for every dynamic dim name nothing: an image declared
        // [?, 3, ?, ?] is a batch of 1 at 64 x 64, not 1 x 1
        use crate::onnx::proto::tensor_shape_proto::dimension::Value;
        for placeholder in ["?", "-1", "None"] {
            let mut vi =
                crate::graph::builder::value_info("img", DataType::Float, &["n", "3", "h", "w"]);
            // written as names, as the exporters write them (the builder reads "-1" as a size)
            if let Some(crate::onnx::proto::type_proto::Value::TensorType(t)) =
                vi.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                for d in &mut t.shape.as_mut().unwrap().dim {
                    if matches!(d.value, Some(Value::DimParam(_))) {
                        d.value = Some(Value::DimParam(placeholder.into()));
                    }
                }
            }
            let img = InputDesc {
                name: "img".into(),
                dtype: Some(DataType::Float),
                shape: ValueShape::of(&vi),
                index_bound: None,
            };
            let made = random_inputs(&[img], &InputShapes::default(), 1).unwrap();
            assert_eq!(made[0].tensor.shape(), &[1, 3, 64, 64], "{placeholder}");
        }
    }
}
