#!/usr/bin/env bash
# Seeds the fuzz corpora: the fixtures and the real models for the model targets, tensor files
# of the shared test data for the tensor readers, and freshly packed archives of the fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${MDEPLOY_SHARED:-../shared}
mkdir -p fuzz/corpus/{model_loader,proto_roundtrip,tensor_readers,archive_reader}
for f in fixtures/*.onnx "$shared"/models/*/model.onnx; do
    name=$(echo "$f" | tr '/' '_')
    cp "$f" "fuzz/corpus/model_loader/$name"
    cp "$f" "fuzz/corpus/proto_roundtrip/$name"
done
for f in "$shared"/models/*/test_data_set_0/*.pb; do
    cp "$f" "fuzz/corpus/tensor_readers/$(echo "$f" | tr '/' '_')"
done
cargo build --quiet --bin mdeploy
for f in fixtures/*.onnx; do
    out="fuzz/corpus/archive_reader/$(basename "$f" .onnx).mdpkg"
    rm -f "$out"
    target/debug/mdeploy pack "$f" -o "$out" --name fuzz --version 1.0.0 >/dev/null
done
