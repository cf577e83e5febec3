#!/usr/bin/env bash
# Load time and peak memory of mdeploy on a BERT-base-size model (~440 MB), inline and with
# external data. Re-run on the same machine to compare: numbers on shared machines are noisy, so
# each command runs three times and all runs are printed.
#
#   bash bench/large_model.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d)}
mkdir -p "$work/inline" "$work/external"
cargo build --release --quiet --example make_large_model --bin mdeploy
bin=target/release/mdeploy
[ -f "$work/inline/model.onnx" ] || target/release/examples/make_large_model "$work/inline/model.onnx"
[ -f "$work/external/model.onnx" ] || target/release/examples/make_large_model "$work/external/model.onnx" 12 --external

measure() {
    local label=$1; shift
    for i in 1 2 3; do
        /usr/bin/time -f "$label run $i: %e s wall, %M KiB peak RSS" "$@" > /dev/null 2> "$work/time.txt" || { cat "$work/time.txt"; exit 1; }
        tail -n 1 "$work/time.txt"
    done
}

echo "model: $(du -h "$work/inline/model.onnx" | cut -f1) inline; $(du -ch "$work/external/"* | tail -1 | cut -f1) with external data"
measure "inspect (inline)" $bin inspect "$work/inline/model.onnx" --json
measure "inspect (external)" $bin inspect "$work/external/model.onnx" --json
rm -f "$work/out.onnx" "$work/out.onnx.data"
measure "load+save (inline, convert)" $bin convert "$work/inline/model.onnx" -o "$work/out.onnx" -q
measure "load+save (external -> external)" $bin convert "$work/external/model.onnx" -o "$work/out.onnx" --external-data -q
