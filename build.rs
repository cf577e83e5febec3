//! Generates the ONNX protobuf types from `proto/onnx.proto` with prost, using protox so that no
//! `protoc` binary is needed on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let descriptors = protox::compile(["proto/onnx.proto"], ["proto"])?;
    prost_build::Config::new()
        // Tensor payloads stay `Bytes`: decoding from a memory-mapped file then shares the mapping
        // instead of copying hundreds of megabytes.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
