//! Running real models with tract on their stored inputs reproduces onnxruntime's stored outputs,
//! and the tensor file formats read back what was written.

#[path = "../common/mod.rs"]
mod common;

use mdeploy::onnx::Model;
use mdeploy::run::tensor_io::{
    NamedTensor, read_npz, read_pb_dir, read_tensors, write_npz, write_pb,
};
use mdeploy::run::{InputShapes, Runner, graph_inputs, random_inputs};
use tract_onnx::prelude::*;

/// Largest |a-b| relative to the reference's largest magnitude.
fn relative_error(got: &Tensor, want: &Tensor) -> f32 {
    let got = got.cast_to::<f32>().unwrap();
    let want = want.cast_to::<f32>().unwrap();
    let got = got.to_plain_array_view::<f32>().unwrap();
    let want = want.to_plain_array_view::<f32>().unwrap();
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want.iter())
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

#[test]
fn real_models_match_their_reference_outputs() {
    for (name, path) in common::real_models() {
        let model = Model::load(&path).unwrap();
        let mut runner = Runner::new(&model).unwrap_or_else(|e| panic!("{name}: {e}"));
        for set in ["test_data_set_0", "test_data_set_1"] {
            let dir = path.parent().unwrap().join(set);
            let inputs = read_pb_dir(&dir, "input").unwrap();
            let expected = read_pb_dir(&dir, "output").unwrap();
            let outputs = runner
                .run(&inputs)
                .unwrap_or_else(|e| panic!("{name}/{set}: {e}"));
            assert_eq!(outputs.len(), expected.len(), "{name}/{set}");
            for (got, want) in outputs.iter().zip(&expected) {
                assert_eq!(
                    got.tensor.shape(),
                    want.tensor.shape(),
                    "{name}/{set} {}",
                    got.name
                );
                let err = relative_error(&got.tensor, &want.tensor);
                assert!(
                    err < 1e-3,
                    "{name}/{set} {}: relative error {err}",
                    got.name
                );
            }
        }
    }
}

#[test]
fn random_inputs_are_seeded_and_fit_the_model() {
    let (_, path) = common::real_models()
        .into_iter()
        .find(|(n, _)| n == "bert_tiny_random")
        .unwrap();
    let model = Model::load(&path).unwrap();
    let inputs = graph_inputs(&model);
    let shapes = InputShapes::parse(&["sequence=7".into()])
        .unwrap()
        .resolve(&inputs)
        .unwrap();
    let a = random_inputs(&inputs, &shapes, 42).unwrap();
    let b = random_inputs(&inputs, &shapes, 42).unwrap();
    let c = random_inputs(&inputs, &shapes, 43).unwrap();
    assert_eq!(a[0].tensor.shape(), &[1, 7]);
    assert_eq!(a[0].tensor.datum_type(), i64::datum_type());
    assert_eq!(a[0].tensor, b[0].tensor);
    assert_ne!(a[0].tensor, c[0].tensor);
    let outputs = Runner::new(&model).unwrap().run(&a).unwrap();
    assert_eq!(outputs[0].tensor.shape(), &[1, 7, 128]);
}

#[test]
fn wrong_inputs_are_named_errors() {
    let (_, path) = common::real_models()
        .into_iter()
        .find(|(n, _)| n == "squeezenet1_1")
        .unwrap();
    let model = Model::load(&path).unwrap();
    let mut runner = Runner::new(&model).unwrap();
    let input = &runner.inputs()[0].name.clone();
    let wrong_dtype = NamedTensor {
        name: input.clone(),
        tensor: Tensor::zero::<i64>(&[1, 3, 224, 224]).unwrap(),
    };
    let err = runner.run(&[wrong_dtype]).unwrap_err().to_string();
    assert!(
        err.contains(input.as_str()) && err.contains("FLOAT"),
        "{err}"
    );
    let err = runner.run(&[]).unwrap_err().to_string();
    assert!(err.contains("no value for input"), "{err}");
}

#[test]
fn tensor_files_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let tensors = vec![
        NamedTensor {
            name: "f".into(),
            tensor: tensor2(&[[1.5f32, -2.0], [0.25, 8.0]]),
        },
        NamedTensor {
            name: "i".into(),
            tensor: tensor1(&[1i64, -7, 300]),
        },
        NamedTensor {
            name: "b".into(),
            tensor: tensor1(&[true, false]),
        },
        NamedTensor {
            name: "h".into(),
            tensor: tensor1(&[half::f16::from_f32(0.5)]),
        },
        NamedTensor {
            name: "s".into(),
            tensor: tensor0(3u8),
        },
    ];
    let npz = tmp.path().join("t.npz");
    write_npz(&npz, &tensors).unwrap();
    let back = read_npz(&npz).unwrap();
    for (a, b) in tensors.iter().zip(&back) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.tensor, b.tensor, "{}", a.name);
    }
    for t in &tensors {
        let pb = tmp.path().join(format!("{}.pb", t.name));
        write_pb(&pb, t).unwrap();
        let back = read_tensors(&pb).unwrap();
        assert_eq!(back[0].name, t.name);
        assert_eq!(back[0].tensor, t.tensor);
    }
    // numpy's own files: a stored test input converted by the interop suite would do, but a
    // hand-made header keeps this test self-contained
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    let padded = format!("{header:<117}\n");
    npy.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    npy.extend_from_slice(padded.as_bytes());
    npy.extend_from_slice(&1.0f32.to_le_bytes());
    npy.extend_from_slice(&2.0f32.to_le_bytes());
    let path = tmp.path().join("x.npy");
    std::fs::write(&path, &npy).unwrap();
    let back = read_tensors(&path).unwrap();
    assert_eq!(back[0].name, "x");
    assert_eq!(back[0].tensor, tensor1(&[1.0f32, 2.0]));
    std::fs::write(&path, &npy[..npy.len() - 1]).unwrap();
    let err = read_tensors(&path).unwrap_err().to_string();
    assert!(err.contains("x.npy") && err.contains("data bytes"), "{err}");
}
