//! The tensor file readers verify and calibration data go through: `.npy`, `.npz` and
//! TensorProto `.pb`, each fed the same bytes.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mdeploy::run::tensor_io::{parse_npy, parse_npz, parse_pb};

fuzz_target!(|data: &[u8]| {
    let _ = parse_npy(Path::new("fuzz.npy"), data);
    let _ = parse_pb(Path::new("fuzz.pb"), data);
    let _ = parse_npz(Path::new("fuzz.npz"), std::io::Cursor::new(data));
});
