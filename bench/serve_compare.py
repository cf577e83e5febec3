"""mdeploy serve against the Python server a user would otherwise run (KServe's ModelServer
wrapping onnxruntime, bench/kserve_onnx_server.py), same model, same machine, loopback only, same
Open Inference Protocol JSON request: throughput and p50/p99 latency at each concurrency (wrk),
and each server's peak RSS. Bounded: every run lasts --duration seconds.

    python3 bench/serve_compare.py --kserve-python /path/to/venv/bin/python \
        [--mdeploy target/release/mdeploy] [--models mtcnn_rnet,squeezenet1_1]
        [--concurrency 1,8,32] [--duration 10] [--max-batch 1,8] [--workers N]
        [--engine auto|tract|ort]

Needs wrk on PATH and, in the KServe venv: `pip install kserve onnxruntime numpy`. The JSON body
comes from each model's stored test_data_set_0; both servers' answers are checked against the
stored outputs before timing. `--max-batch 1,8` runs mdeploy once per value in the same run
(1: no dynamic batching), so the table shows what batching does on this machine.
"""

import argparse
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("MDEPLOY_SHARED", os.path.join(ROOT, "..", "shared"))
DTYPES = {np.float32: "FP32", np.int64: "INT64", np.float16: "FP16", np.int32: "INT32"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stored(model):
    d = os.path.join(SHARED, "models", model, "test_data_set_0")
    def load(pattern):
        out = {}
        for f in sorted(glob.glob(os.path.join(d, pattern))):
            t = onnx.TensorProto()
            t.ParseFromString(open(f, "rb").read())
            out[t.name] = numpy_helper.to_array(t)
        return out
    return load("input_*.pb"), load("output_*.pb")


def wait_ready(port, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {open(proc.log_path).read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("server not ready")


def peak_rss_mb(pid):
    """VmHWM of the process and its children, MB."""
    total = 0
    pids = [pid]
    try:
        pids += [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                 text=True).stdout.split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def check_answer(port, name, body, outputs):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{name}/infer", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        doc = json.loads(r.read())
    for o in doc["outputs"]:
        want = outputs[o["name"]]
        got = np.asarray(o["data"], dtype=np.float64).reshape(o["shape"])
        if not np.allclose(got, want, rtol=1e-3, atol=1e-4):
            raise SystemExit(f"{name}: output {o['name']} differs from the stored one")


def wrk(port, name, body_file, concurrency, duration):
    script = os.path.join(os.path.dirname(body_file), "post.lua")
    with open(script, "w") as f:
        f.write(f'local f = io.open("{body_file}", "rb")\n'
                'wrk.body = f:read("*all")\nf:close()\n'
                'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
    threads = max(1, min(concurrency, 4))
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{duration}s",
                          "--latency", "--timeout", "30s", "-s", script,
                          f"http://127.0.0.1:{port}/v2/models/{name}/infer"],
                         capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(errors.group(1)) if errors else 0) + (
        sum(int(g) for g in socket.groups()) if socket else 0)
    return rps, pct(50), pct(99), failed


def run_server(kind, batch, args, model, name, archive, key, tmp):
    http, grpc = free_port(), free_port()
    if kind == "mdeploy":
        cmd = [args.mdeploy, "serve", archive, "--key", key, "--http-port", str(http),
               "--grpc-port", str(grpc), "--queue-size", "1024", "--max-batch", str(batch),
               "--batch-delay-us", str(args.batch_delay_us)]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        cmd += ["--engine", args.engine]
    else:
        cmd = [args.kserve_python, os.path.join(ROOT, "bench", "kserve_onnx_server.py"), name,
               os.path.join(SHARED, "models", model, "model.onnx"), str(http), str(grpc)]
    # the servers' logs go to a file: a pipe nobody reads would fill up and stall a chatty server
    log = open(os.path.join(tmp, f"{kind}-{batch}-{name}.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, text=True)
    proc.log_path = log.name
    wait_ready(http, proc)
    return proc, http


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mdeploy", default=os.path.join(ROOT, "target", "release", "mdeploy"))
    ap.add_argument("--kserve-python",
                    help="the KServe venv's python; without it only mdeploy runs")
    ap.add_argument("--models", default="mtcnn_rnet,squeezenet1_1")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--max-batch", default="1",
                    help="comma-separated: one mdeploy run per value (1: no batching)")
    ap.add_argument("--batch-delay-us", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=0, help="mdeploy --workers (0: its default)")
    ap.add_argument("--engine", default="auto", help="mdeploy --engine: auto, tract or ort")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([args.mdeploy, "keygen", "-o", tmp], check=True, capture_output=True)
        key = os.path.join(tmp, "mdeploy.pub")
        for model in args.models.split(","):
            name = model.replace("_", "-")
            archive = os.path.join(tmp, f"{name}.mdpkg")
            subprocess.run([args.mdeploy, "pack", os.path.join(SHARED, "models", model,
                            "model.onnx"), "-o", archive, "--name", name, "--model-version",
                            "1.0.0", "--key", os.path.join(tmp, "mdeploy.key"), "-q"], check=True)
            inputs, outputs = stored(model)
            body = json.dumps({"inputs": [
                {"name": k, "shape": list(v.shape), "datatype": DTYPES[v.dtype.type],
                 "data": v.flatten().tolist()} for k, v in inputs.items()]}).encode()
            body_file = os.path.join(tmp, f"{name}.json")
            open(body_file, "wb").write(body)
            servers = [("mdeploy", int(b)) for b in args.max_batch.split(",")] + (
                [("kserve", 1)] if args.kserve_python else [])
            for kind, batch in servers:
                label = kind if kind == "kserve" or batch == 1 else f"mdeploy b{batch}"
                proc, port = run_server(kind, batch, args, model, name, archive, key, tmp)
                try:
                    check_answer(port, name, body, outputs)
                    for c in [int(x) for x in args.concurrency.split(",")]:
                        rps, p50, p99, errors = wrk(port, name, body_file, c, args.duration)
                        rows.append((model, label, c, rps, p50, p99, errors, peak_rss_mb(proc.pid)))
                        print(f"{model:<16} {label:<11} c={c:<3} {rps:9.1f} req/s  p50 {p50:8.2f} ms"
                              f"  p99 {p99:8.2f} ms  errors {errors}", flush=True)
                finally:
                    rss = peak_rss_mb(proc.pid)
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                rows = [r[:7] + (rss,) if r[0] == model and r[1] == label else r for r in rows]
    print()
    print("| model | server | concurrency | req/s | p50 ms | p99 ms | failed | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for model, kind, c, rps, p50, p99, errors, rss in rows:
        print(f"| {model} | {kind} | {c} | {rps:.1f} | {p50:.2f} | {p99:.2f} | {errors} | {rss:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
