//! Generates the ONNX protobuf types from `proto/onnx.proto` with prost, and the Open Inference
//! Protocol's gRPC service from `proto/grpc_predict_v2.proto` with tonic, using protox so that no
//! `protoc` binary is needed on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    let descriptors = protox::compile(["proto/onnx.proto"], ["proto"])?;
    prost_build::Config::new()
        // Tensor payloads stay `Bytes`: decoding from a memory-mapped file then shares the mapping
        // instead of copying hundreds of megabytes.
        .bytes(["."])
        .compile_fds(descriptors)?;
    let inference = protox::compile(["proto/grpc_predict_v2.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_transport(false)
        // raw tensor contents stay `Bytes` (no copy out of the request buffer)
        .bytes(".inference")
        .compile_fds(inference)?;
    Ok(())
}
