#!/usr/bin/env bash
# Load time and peak memory of mdeploy on a BERT-base-size model (~440 MB), inline and with
# external data; then quantization of the external-data model against the tools a user would
# otherwise pick (onnxconverter-common for float16, onnxruntime's quantize_dynamic for int8).
# mdeploy's times include measuring the result against the float model and verifying it on 3
# seeded random samples; the others verify nothing. Re-run on the same machine to compare:
# numbers on shared machines are noisy, so each command runs three times and all runs are printed.
#
#   .venv/bin/pip install onnxconverter-common   # once, beside .ci/run's venv
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

# quantization: onnxruntime (the venv's) runs the float16 and int8 candidates
export VIRTUAL_ENV="$PWD/.venv"
py=.venv/bin/python
rm -f "$work"/q.onnx "$work"/q.onnx.data
measure "fp16 (mdeploy --fp16)" $bin optimize "$work/external/model.onnx" -o "$work/q.onnx" --fp16 --external-data -q
measure "fp16 (onnxconverter-common, keep_io_types)" $py -c "
import onnx, sys
from onnxconverter_common import float16
m = float16.convert_float_to_float16(onnx.load(sys.argv[1]), keep_io_types=True)
onnx.save(m, sys.argv[2], save_as_external_data=True, location='occ.onnx.data')
" "$work/external/model.onnx" "$work/occ.onnx"
measure "int8 dynamic (mdeploy --int8 dynamic)" $bin optimize "$work/external/model.onnx" -o "$work/q.onnx" --int8 dynamic --external-data -q
measure "int8 dynamic (onnxruntime quantize_dynamic)" $py -c "
import sys
from onnxruntime.quantization import QuantType, quantize_dynamic
quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8, use_external_data_format=True)
" "$work/external/model.onnx" "$work/ortq.onnx"
