"""Every quantization mode over every ONNX conformance model: what mdeploy does with models it was
not written for. Each test folder's model is optimized with --fp16, --int8 dynamic, --int8 static
(calibrated on its own data) and --int4 weight-only, verified on test_data_set_0. A run must exit
0 (written, verified), 1 (a check failed, nothing written) or 2 (bad or unsupported input, said
on stderr); anything else (a panic's 101, an internal error's 3, a signal) is a failure, and so
is a written model that the onnx checker (full_check) refuses while the input passes it.

Prints a tab-separated line per run (test, mode, exit code, first stderr line), then a count of
exit codes per mode, and exits 1 where any run failed as above. About 15 minutes on 2 cores for
the 1906 models of ../shared/onnx-node-tests: not part of the CI run.

    cargo build --release
    .venv/bin/python tools/quantize_sweep.py ../shared/onnx-node-tests [--only NAME_PART]
"""
import argparse
import collections
import glob
import os
import subprocess
import sys
import tempfile

import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
MDEPLOY = os.environ.get("MDEPLOY_BIN", os.path.join(HERE, "..", "target", "release", "mdeploy"))
MODES = {
    "fp16": ["--fp16"],
    "int8-dynamic": ["--int8", "dynamic"],
    "int8-static": ["--int8", "static", "--calibration", None],
    "int4": ["--int4", "weight-only"],
}


def checker_passes(path):
    try:
        onnx.checker.check_model(onnx.load(path), full_check=True)
        return True
    except Exception:
        return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    tests = sorted(
        d for d in glob.glob(os.path.join(args.root, "*", "*"))
        if os.path.isfile(os.path.join(d, "model.onnx"))
        and os.path.isdir(os.path.join(d, "test_data_set_0"))
        and args.only in os.path.basename(d)
    )
    counts = collections.Counter()
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.onnx")
        for d in tests:
            model, data = os.path.join(d, "model.onnx"), os.path.join(d, "test_data_set_0")
            name = os.path.relpath(d, args.root)
            input_passes = None
            for mode, flags in MODES.items():
                flags = [data if f is None else f for f in flags]
                if os.path.exists(out):
                    os.remove(out)
                try:
                    run = subprocess.run(
                        [MDEPLOY, "optimize", model, "-o", out, *flags, "--data", data, "-q"],
                        capture_output=True, text=True, timeout=300,
                    )
                    code, err = run.returncode, run.stderr
                except subprocess.TimeoutExpired:
                    code, err = "timeout", ""
                first = next((l for l in err.splitlines() if l.strip()), "")[:200]
                print(f"{name}\t{mode}\t{code}\t{first}", flush=True)
                counts[(mode, code)] += 1
                if code not in (0, 1, 2):
                    failures.append(f"{name} {mode}: exit {code}: {first}")
                elif code == 0 and not checker_passes(out):
                    if input_passes is None:
                        input_passes = checker_passes(model)
                    if input_passes:
                        failures.append(f"{name} {mode}: the onnx checker refuses the result")
                elif code != 0 and os.path.exists(out):
                    failures.append(f"{name} {mode}: exit {code} left {out}")
    for (mode, code), n in sorted(counts.items(), key=str):
        print(f"# {mode} exit {code}: {n}")
    for f in failures:
        print(f"FAIL {f}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
