#!/usr/bin/env bash
# Load time and peak memory of mdeploy on a BERT-base-size model (~440 MB; LAYERS blocks of
# BERT-base's dimensions, 12 by default: 80 make a 2.4 GB model, past protobuf's 2 GB), inline
# (up to 60 layers, about 1.8 GB) and with external data; then quantization of the
# external-data model against the tools a user would otherwise pick (onnxconverter-common for
# float16, onnxruntime's quantize_dynamic for int8).
# mdeploy's times include measuring the result against the float model and verifying it on 3
# seeded random samples; the others verify nothing. Re-run on the same machine to compare:
# numbers on shared machines are noisy, so each command runs three times and all runs are printed.
#
# A command that fails is reported with the last line it printed on stderr, and the others
# still run; the script then exits 1.
#
#   .venv/bin/pip install onnxconverter-common   # once, beside .ci/run's venv
#   bash bench/large_model.sh [WORKDIR] [LAYERS]
set -euo pipefail
cd "$(dirname "$0")/.."
layers=${2:-12}
[[ $layers =~ ^[1-9][0-9]*$ ]] || { echo "LAYERS must be a positive number, not '$layers'" >&2; exit 2; }
# a directory per size, so a WORKDIR reused with another LAYERS measures the size asked for
work=${1:-$(mktemp -d)}/$layers
mkdir -p "$work/inline" "$work/external"
cargo build --release --quiet --example make_large_model --bin mdeploy
bin=target/release/mdeploy
# a model past 2 GB cannot be written inline
if [ "$layers" -le 60 ]; then
    [ -f "$work/inline/model.onnx" ] || target/release/examples/make_large_model "$work/inline/model.onnx" "$layers"
fi
[ -f "$work/external/model.onnx" ] || target/release/examples/make_large_model "$work/external/model.onnx" "$layers" --external

failed=0
measure() {
    local label=$1; shift
    for i in 1 2 3; do
        if /usr/bin/time -f "$label run $i: %e s wall, %M KiB peak RSS" "$@" > /dev/null 2> "$work/time.txt"; then
            tail -n 1 "$work/time.txt"
        else
            echo "$label run $i: FAILED: $(grep -v 'Command exited' "$work/time.txt" | tail -n 2 | head -n 1)"
            failed=1
        fi
    done
}

echo "model: $layers layers, $(du -ch "$work/external/"* | tail -1 | cut -f1) with external data"
rm -f "$work/out.onnx" "$work/out.onnx.data"
if [ -f "$work/inline/model.onnx" ]; then
    echo "inline: $(du -h "$work/inline/model.onnx" | cut -f1)"
    measure "inspect (inline)" $bin inspect "$work/inline/model.onnx" --json
    measure "load+save (inline, convert)" $bin convert "$work/inline/model.onnx" -o "$work/out.onnx" -q
fi
measure "inspect (external)" $bin inspect "$work/external/model.onnx" --json
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
exit $failed
