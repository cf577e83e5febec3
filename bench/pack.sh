#!/usr/bin/env bash
# pack and unpack wall time for a BERT-base-size model (~440 MB), against the same work done by
# standard tools: `tar --sort=name | zstd -3 -T2` plus `sha256sum`, and `zstd -d | tar -x` plus
# `sha256sum`. Three runs each; shared machines are noisy.
#
#   bash bench/pack.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d)}
mkdir -p "$work/model"
cargo build --release --quiet --example make_large_model --bin mdeploy
bin=$PWD/target/release/mdeploy
[ -f "$work/model/model.onnx" ] || target/release/examples/make_large_model "$work/model/model.onnx"
[ -f "$work/keys/mdeploy.key" ] || $bin keygen -o "$work/keys" 2> /dev/null
echo "model: $(du -h "$work/model/model.onnx" | cut -f1)"

time_it() {
    local label=$1; shift
    for i in 1 2 3; do
        local start end
        start=$(date +%s.%N)
        bash -c "$*" > /dev/null
        end=$(date +%s.%N)
        echo "$label run $i: $(echo "$end - $start" | bc) s"
    done
}

rm -rf "$work/out" "$work/tar-out"
time_it "mdeploy pack" "rm -f '$work/a.mdpkg'; $bin pack '$work/model/model.onnx' -o '$work/a.mdpkg' --name m --model-version 1.0.0 --key '$work/keys/mdeploy.key'"
time_it "tar|zstd -3 -T2 + sha256sum" "sha256sum '$work/model/model.onnx' > /dev/null && tar --sort=name -C '$work/model' -cf - . | zstd -3 -T2 -q -f -o '$work/b.tar.zst'"
time_it "mdeploy unpack" "rm -rf '$work/out'; $bin unpack '$work/a.mdpkg' -o '$work/out' --key '$work/keys/mdeploy.pub'"
time_it "zstd -d|tar -x + sha256sum" "rm -rf '$work/tar-out'; mkdir '$work/tar-out'; zstd -d -q -c '$work/b.tar.zst' | tar -x -C '$work/tar-out' && sha256sum '$work/tar-out/model.onnx' > /dev/null"
ls -l "$work/a.mdpkg" "$work/b.tar.zst"
