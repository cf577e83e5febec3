"""`mdeploy serve` driven by clients nobody here wrote: the Triton Python clients
(`tritonclient[http,grpc]`), over HTTP (JSON and binary tensors) and gRPC, on real models of
../shared/models, comparing outputs with the stored ones; plus raw HTTP for the errors (malformed
JSON 400, unknown model 404, oversized 413), a tampered archive refused, bearer-token auth, the
gRPC health service, SIGTERM with requests in flight (none fail, exit 0), and hot-loading a new
version from a watched directory.
Run by .ci/run from its venv; exits non-zero on any failure.
"""

import concurrent.futures
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np
import onnx
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHARED = os.environ.get("MDEPLOY_SHARED", os.path.join(ROOT, "..", "shared"))
MDEPLOY = os.environ.get("MDEPLOY_BIN", os.path.join(ROOT, "target", "debug", "mdeploy"))

MODELS = ["mtcnn_rnet", "squeezenet1_1", "bert_tiny_random"]

failures = []
passed = []


def check(label, ok, detail=""):
    print(f"serve interop: {label} ... {'ok' if ok else 'FAILED'}")
    (passed if ok else failures).append(label)
    if not ok and detail:
        print(f"    {detail}"[:3000])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stored(model, k=0):
    """Inputs and expected outputs of test_data_set_k, by name."""
    d = os.path.join(SHARED, "models", model, f"test_data_set_{k}")
    def load(pattern):
        out = {}
        for f in sorted(glob.glob(os.path.join(d, pattern))):
            t = onnx.TensorProto()
            with open(f, "rb") as fh:
                t.ParseFromString(fh.read())
            out[t.name] = numpy_helper.to_array(t)
        return out
    return load("input_*.pb"), load("output_*.pb")


def close(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    return got.shape == want.shape and np.allclose(got, want, rtol=1e-3, atol=1e-4)


class Server:
    def __init__(self, archives, *extra, key=None, workers=2):
        self.http = free_port()
        self.grpc = free_port()
        args = [MDEPLOY, "serve", *archives, "--http-port", str(self.http),
                "--grpc-port", str(self.grpc), "--workers", str(workers)]
        args += ["--key", key] if key else ["--allow-unsigned"]
        args += list(extra)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.url = f"localhost:{self.http}"

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, err


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def pack(tmp, model, name, version, key):
    out = os.path.join(tmp, f"{name}-{version}.mdpkg")
    subprocess.run([MDEPLOY, "pack", os.path.join(SHARED, "models", model, "model.onnx"),
                    "-o", out, "--name", name, "--model-version", version, "--key", key, "-q"],
                   check=True)
    return out


def triton_checks(server, names):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    h = httpclient.InferenceServerClient(url=server.url)
    g = grpcclient.InferenceServerClient(url=f"localhost:{server.grpc}")
    check("http: server live and ready", h.is_server_live() and h.is_server_ready())
    check("grpc: server live and ready", g.is_server_live() and g.is_server_ready())
    check("http: server metadata", h.get_server_metadata()["name"] == "mdeploy")
    check("grpc: server metadata", g.get_server_metadata().name == "mdeploy")
    for model, name in names:
        meta = h.get_model_metadata(name)
        gmeta = g.get_model_metadata(name)
        check(f"{name}: metadata over http and grpc agree",
              [i["name"] for i in meta["inputs"]] == [i.name for i in gmeta.inputs]
              and meta["platform"] == "onnx" and -1 in meta["inputs"][0]["shape"], str(meta))
        check(f"{name}: model ready", h.is_model_ready(name) and g.is_model_ready(name))
        for k in (0, 1):
            inputs, outputs = stored(model, k)
            for binary in (True, False):
                ins = []
                for i in meta["inputs"]:
                    arr = inputs[i["name"]]
                    x = httpclient.InferInput(i["name"], list(arr.shape), i["datatype"])
                    x.set_data_from_numpy(arr, binary_data=binary)
                    ins.append(x)
                outs = [httpclient.InferRequestedOutput(o["name"], binary_data=binary)
                        for o in meta["outputs"]]
                r = h.infer(name, ins, outputs=outs, request_id=f"req-{k}")
                ok = all(close(r.as_numpy(n), v) for n, v in outputs.items())
                check(f"{name}: http infer set {k} ({'binary' if binary else 'json'})", ok,
                      str({n: (r.as_numpy(n), v) for n, v in outputs.items()}))
                check(f"{name}: http id echoed", r.get_response()["id"] == f"req-{k}")
            gins = []
            for i in gmeta.inputs:
                arr = inputs[i.name]
                x = grpcclient.InferInput(i.name, list(arr.shape), i.datatype)
                x.set_data_from_numpy(arr)
                gins.append(x)
            r = g.infer(name, gins)
            ok = all(close(r.as_numpy(n), v) for n, v in outputs.items())
            check(f"{name}: grpc infer set {k}", ok)
        # one requested output only
        inputs, outputs = stored(model, 0)
        first = meta["outputs"][0]["name"]
        ins = []
        for i in meta["inputs"]:
            x = httpclient.InferInput(i["name"], list(inputs[i["name"]].shape), i["datatype"])
            x.set_data_from_numpy(inputs[i["name"]])
            ins.append(x)
        r = h.infer(name, ins, outputs=[httpclient.InferRequestedOutput(first)])
        names_back = [o["name"] for o in r.get_response()["outputs"]]
        check(f"{name}: requested outputs only", names_back == [first], str(names_back))


def error_checks(server):
    base = f"http://{server.url}"
    status, body = http("POST", f"{base}/v2/models/mtcnn-rnet/infer", b"{not json",
                        {"Content-Type": "application/json"})
    check("malformed JSON is 400 with an error document",
          status == 400 and "error" in json.loads(body), f"{status} {body[:200]}")
    status, body = http("POST", f"{base}/v2/models/nope/infer", b"{}")
    check("unknown model is 404", status == 404 and "error" in json.loads(body), str(status))
    status, _ = http("GET", f"{base}/v2/models/mtcnn-rnet/versions/9.9.9")
    check("unknown version is 404", status == 404, str(status))
    with tempfile.NamedTemporaryFile(suffix=".bin") as big:
        big.write(b"x" * (9 << 20))
        big.flush()
        proc = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}",
                               "--data-binary", f"@{big.name}",
                               f"{base}/v2/models/mtcnn-rnet/infer"],
                              capture_output=True, text=True)
        lines = proc.stdout.strip().splitlines()
        check("an oversized body is 413 (curl)", lines[-1:] == ["413"], proc.stdout[-300:])
    req = {"inputs": [{"name": "input_2", "shape": [1, 24, 24, 4], "datatype": "FP32",
                       "data": [0.0] * (24 * 24 * 4)}]}
    status, body = http("POST", f"{base}/v2/models/mtcnn-rnet/infer", json.dumps(req).encode())
    check("a wrong shape is 400 naming the input",
          status == 400 and b"input_2" in body, f"{status} {body[:200]}")
    # element counts a client makes up never size an allocation: 400, and the server lives on
    header = json.dumps({"inputs": [{"name": "input_2", "shape": [1 << 40], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 5}}]}).encode()
    status, body = http("POST", f"{base}/v2/models/mtcnn-rnet/infer", header + b"\x01\0\0\0a",
                        {"Inference-Header-Content-Length": str(len(header))})
    live, _ = http("GET", f"{base}/v2/health/live")
    check("a huge made-up shape is 400 and the server lives on",
          status == 400 and live == 200, f"{status} {body[:200]}")
    req = {"inputs": [{"name": "input_2", "shape": [1] * 40, "datatype": "FP32", "data": [0.0]}]}
    status, body = http("POST", f"{base}/v2/models/mtcnn-rnet/infer", json.dumps(req).encode())
    check("a rank-40 shape is 400", status == 400, f"{status} {body[:200]}")
    status, body = http("GET", f"{base}/metrics")
    text = body.decode()
    check("metrics count requests by model and version",
          status == 200 and 'mdeploy_requests_total{model="mtcnn-rnet",version="1.0.0",status="success"}' in text
          and 'status="failure",reason="bad_request"' in text
          and 'mdeploy_inflight_requests{model="mtcnn-rnet",version="1.0.0"} 0' in text
          and "mdeploy_request_duration_seconds_bucket" in text, text[:500])
    check("metrics count refusals before a model is chosen (unknown model, too large)",
          'mdeploy_refused_requests_total{reason="not_found"}' in text
          and 'mdeploy_refused_requests_total{reason="too_large"}' in text, text[-800:])




def self_signed(tmp):
    """A self-signed certificate for localhost and its key, as PEM files."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
    open(cert_path, "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    open(key_path, "wb").write(key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return cert_path, key_path


def serve_flags():
    """The long flags `mdeploy serve --help` documents."""
    text = subprocess.run([MDEPLOY, "serve", "--help"], capture_output=True, text=True).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", text))


def check_args(label, args, flags):
    unknown = [a for a in args if a.startswith("--") and a not in flags]
    check(f"{label}: every flag exists in mdeploy serve", args[:1] == ["serve"] and not unknown,
          f"{args} unknown: {unknown}")


def deployment_recipes():
    """examples/serve: the container build and the Kubernetes and KServe manifests parse and
    use flags, ports and health paths the server has."""
    import shlex
    import yaml
    flags = serve_flags()
    recipes = os.path.join(ROOT, "examples", "serve")
    docker = open(os.path.join(recipes, "Dockerfile")).read()
    entry = [l for l in docker.splitlines() if l.startswith("ENTRYPOINT")]
    args = json.loads(entry[0][len("ENTRYPOINT"):]) if entry else []
    check_args("Dockerfile", args[1:], flags)
    check("Dockerfile: listens on all interfaces, ports exposed",
          "0.0.0.0" in args and "EXPOSE 8000 8001" in docker, str(args))
    docs = []
    for f in sorted(glob.glob(os.path.join(recipes, "kubernetes", "*.yaml"))):
        docs += [d for d in yaml.safe_load_all(open(f)) if d]
    kinds = {d["kind"]: d for d in docs}
    check("manifests: Deployment, Service, HPA, ClusterServingRuntime, InferenceService",
          {"Deployment", "Service", "HorizontalPodAutoscaler", "ClusterServingRuntime",
           "InferenceService"} <= set(kinds), str(sorted(kinds)))
    dep = kinds["Deployment"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    check_args("Deployment", c["args"], flags)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    a = c["args"]
    check("Deployment: container ports are the server's",
          str(ports["http"]) == a[a.index("--http-port") + 1]
          and str(ports["grpc"]) == a[a.index("--grpc-port") + 1], str(ports))
    probes = {k: c[k]["httpGet"]["path"] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    check("Deployment: probes on the protocol's health endpoints",
          probes == {"startupProbe": "/v2/health/live", "readinessProbe": "/v2/health/ready",
                     "livenessProbe": "/v2/health/live"}, str(probes))
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    check("Deployment: the grace period outlasts the preStop pause and the drain",
          grace > pre_stop + int(a[a.index("--drain-timeout") + 1]), str(grace))
    svc = kinds["Service"]
    check("Service: targets the named container ports",
          {p["targetPort"] for p in svc["spec"]["ports"]} <= set(ports)
          and svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"])
    hpa = kinds["HorizontalPodAutoscaler"]
    check("HPA: scales the Deployment",
          hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"])
    rt = kinds["ClusterServingRuntime"]
    rc = rt["spec"]["containers"][0]
    check_args("ClusterServingRuntime", rc["args"], flags)
    check("ClusterServingRuntime: the v2 protocol, models from /mnt/models",
          "v2" in rt["spec"]["protocolVersions"] and "/mnt/models" in rc["args"])
    isvc = kinds["InferenceService"]["spec"]["predictor"]["model"]
    check("InferenceService: uses the runtime",
          isvc["runtime"] == rt["metadata"]["name"]
          and isvc["modelFormat"]["name"] in [f["name"] for f in rt["spec"]["supportedModelFormats"]])


def main():
    if not os.path.exists(MDEPLOY):
        print(f"no mdeploy binary at {MDEPLOY}")
        return 1
    deployment_recipes()
    with tempfile.TemporaryDirectory() as tmp:
        keys = os.path.join(tmp, "keys")
        subprocess.run([MDEPLOY, "keygen", "-o", keys], check=True, capture_output=True)
        key, pub = os.path.join(keys, "mdeploy.key"), os.path.join(keys, "mdeploy.pub")
        names = [("mtcnn_rnet", "mtcnn-rnet"), ("squeezenet1_1", "squeezenet"),
                 ("bert_tiny_random", "bert")]
        archives = [pack(tmp, m, n, "1.0.0", key) for m, n in names]

        # a tampered archive: refused at start, exit 1, named
        bad = os.path.join(tmp, "bad.mdpkg")
        data = bytearray(open(archives[0], "rb").read())
        data[len(data) // 2] ^= 0xFF
        open(bad, "wb").write(bytes(data))
        proc = subprocess.run([MDEPLOY, "serve", bad, "--key", pub, "--http-port",
                               str(free_port()), "--grpc-port", str(free_port())],
                              capture_output=True, text=True, timeout=120)
        check("a tampered archive is refused (exit 1, named)",
              proc.returncode == 1 and "bad.mdpkg" in proc.stderr, proc.stderr[-500:])
        other = os.path.join(tmp, "other-keys")
        subprocess.run([MDEPLOY, "keygen", "-o", other], check=True, capture_output=True)
        proc = subprocess.run([MDEPLOY, "serve", archives[0], "--key",
                               os.path.join(other, "mdeploy.pub"), "--http-port",
                               str(free_port()), "--grpc-port", str(free_port())],
                              capture_output=True, text=True, timeout=120)
        check("an archive signed by another key is refused (exit 1)", proc.returncode == 1,
              proc.stderr[-500:])

        server = Server(archives, "--max-request-bytes", str(8 << 20), key=pub)
        try:
            if not server.wait_ready():
                check("server starts", False, server.stop()[1][-2000:])
                return 1
            triton_checks(server, names)
            error_checks(server)
            import grpc
            from grpc_health.v1 import health_pb2, health_pb2_grpc
            stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"localhost:{server.grpc}"))
            for service in ("", "inference.GRPCInferenceService"):
                status = stub.Check(health_pb2.HealthCheckRequest(service=service)).status
                check(f"grpc.health.v1 reports SERVING for '{service}'",
                      status == health_pb2.HealthCheckResponse.SERVING, str(status))
        finally:
            code, err = server.stop()
        check("SIGTERM on an idle server exits 0", code == 0, err[-1000:])

        # auth: a token file; health stays open
        token = os.path.join(tmp, "token")
        open(token, "w").write("s3cret-token\n")
        server = Server([archives[0]], "--auth-token-file", token, key=pub)
        try:
            ok = server.wait_ready()
            check("health needs no token", ok)
            status, _ = http("GET", f"http://{server.url}/v2/models/mtcnn-rnet")
            check("no token: 401", status == 401, str(status))
            status, _ = http("GET", f"http://{server.url}/v2/models/mtcnn-rnet",
                             headers={"Authorization": "Bearer wrong"})
            check("a wrong token: 401", status == 401, str(status))
            status, _ = http("GET", f"http://{server.url}/v2/models/mtcnn-rnet",
                             headers={"Authorization": "Bearer s3cret-token"})
            check("the token: 200", status == 200, str(status))
            status, _ = http("GET", f"http://{server.url}/v2/health/other")
            check("only the two health endpoints are open: another path under them is 401",
                  status == 401, str(status))
            _, body = http("GET", f"http://{server.url}/metrics",
                           headers={"Authorization": "Bearer s3cret-token"})
            refused = re.search(r'mdeploy_refused_requests_total\{reason="unauthorized"\} (\d+)',
                                body.decode())
            check("refused tokens are counted", refused is not None and int(refused.group(1)) >= 3,
                  body.decode()[-600:])
            import tritonclient.grpc as grpcclient
            g = grpcclient.InferenceServerClient(url=f"localhost:{server.grpc}")
            try:
                g.get_model_metadata("mtcnn-rnet")
                check("grpc without the token is refused", False)
            except Exception as e:  # tritonclient raises InferenceServerException
                check("grpc without the token is refused", "UNAUTHENTICATED" in str(e), str(e))
            md = g.get_model_metadata("mtcnn-rnet",
                                      headers={"authorization": "Bearer s3cret-token"})
            check("grpc with the token works", md.name == "mtcnn-rnet")
            check("grpc liveness and readiness need no token",
                  g.is_server_live() and g.is_server_ready())
        finally:
            server.stop()

        # dynamic batching: concurrent requests run as batches and still get their own answers
        server = Server([archives[1]], "--max-batch", "8", "--batch-delay-us", "50000",
                        key=pub, workers=1)
        try:
            server.wait_ready()
            import tritonclient.http as httpclient
            inputs, outputs = stored("squeezenet1_1", 0)
            inputs1, outputs1 = stored("squeezenet1_1", 1)

            def one(k):
                src, want = (inputs, outputs) if k % 2 == 0 else (inputs1, outputs1)
                c = httpclient.InferenceServerClient(url=server.url, network_timeout=300)
                x = httpclient.InferInput("input", list(src["input"].shape), "FP32")
                x.set_data_from_numpy(src["input"])
                return close(c.infer("squeezenet", [x]).as_numpy("logits"), want["logits"])

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                results = list(pool.map(one, range(16)))
            check("batching: 16 concurrent requests each get their own answer", all(results),
                  str(results))
            _, body = http("GET", f"http://{server.url}/metrics")
            text = body.decode()
            singles = re.search(r'mdeploy_batch_size_bucket\{model="squeezenet",version="1.0.0",le="1"\} (\d+)', text)
            calls = re.search(r'mdeploy_batch_size_count\{model="squeezenet",version="1.0.0"\} (\d+)', text)
            check("batching: requests ran in batches (fewer engine calls than requests)",
                  singles and calls and int(calls.group(1)) < 16, text[-800:])
        finally:
            server.stop()

        # a body that trickles in is cut off (408); a chunked body past the limit is 413
        server = Server([archives[0]], "--request-timeout-ms", "1000", "--max-request-bytes",
                        "1000", key=pub)
        try:
            server.wait_ready()
            with socket.create_connection(("localhost", server.http)) as sock:
                sock.sendall(b"POST /v2/models/mtcnn-rnet/infer HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Length: 500\r\n\r\n{")
                sock.settimeout(30)
                first = sock.recv(4096).split(b"\r\n")[0]
            check("a body that never finishes arriving is 408", b" 408 " in first, str(first))
            # headers that never finish, and a connection that sends nothing, are closed
            for label, sent in (("headers that never finish", b"GET /v2/health/live HTTP/1.1\r\n"),
                                ("a connection that sends nothing", b"")):
                with socket.create_connection(("localhost", server.http)) as sock:
                    sock.sendall(sent)
                    sock.settimeout(30)
                    start = time.time()
                    try:
                        while sock.recv(4096):
                            pass
                        closed = True
                    except OSError:
                        closed = False
                check(f"{label}: the connection is closed after the request timeout",
                      closed and time.time() - start < 10, f"{closed} {time.time() - start:.1f}s")
            big = os.path.join(tmp, "big.json")
            open(big, "wb").write(b" " * 5000)
            out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                                  "Transfer-Encoding: chunked", "--data-binary", f"@{big}",
                                  f"http://{server.url}/v2/models/mtcnn-rnet/infer"],
                                 capture_output=True, text=True).stdout
            check("a chunked body past the limit is 413", out == "413", out)
        finally:
            server.stop()

        # backpressure: past --max-in-flight, requests are refused with 429 at once
        server = Server([archives[1]], "--max-in-flight", "2", "--queue-size", "1", key=pub,
                        workers=1)
        try:
            server.wait_ready()
            inputs, _ = stored("squeezenet1_1", 0)
            batch = np.concatenate([inputs["input"]] * 8)
            header = json.dumps({"inputs": [{"name": "input", "shape": list(batch.shape),
                                             "datatype": "FP32",
                                             "parameters": {"binary_data_size": batch.nbytes}}]})
            body_file = os.path.join(tmp, "batch.bin")
            open(body_file, "wb").write(header.encode() + batch.tobytes())

            def post(_):
                # curl reads an answer sent before the upload ends (a refusal does not wait)
                out = subprocess.run(
                    ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary",
                     f"@{body_file}", "-H", f"Inference-Header-Content-Length: {len(header)}",
                     f"http://{server.url}/v2/models/squeezenet/infer"],
                    capture_output=True, text=True).stdout
                return int(out or 0)

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(post, range(8)))
            check("backpressure: some requests answered, the rest refused with 429",
                  set(codes) <= {200, 429} and 200 in codes and 429 in codes, str(codes))
        finally:
            server.stop()

        # TLS on both ports, with a self-signed certificate for localhost
        cert, keyfile = self_signed(tmp)
        server = Server([archives[0]], "--tls-cert", cert, "--tls-key", keyfile, key=pub)
        try:
            import ssl
            ctx = ssl.create_default_context(cafile=cert)
            deadline = time.time() + 120
            ok = False
            while time.time() < deadline and not ok:
                try:
                    with urllib.request.urlopen(f"https://localhost:{server.http}/v2/health/ready",
                                                context=ctx, timeout=2) as r:
                        ok = r.status == 200
                except OSError:
                    time.sleep(0.3)
            check("tls: REST over https with the certificate", ok)
            try:
                urllib.request.urlopen(f"http://localhost:{server.http}/v2/health/ready", timeout=5)
                check("tls: plain http is refused", False)
            except Exception:  # a TLS alert where an HTTP status line should be
                check("tls: plain http is refused", True)
            import tritonclient.grpc as grpcclient
            import tritonclient.http as httpclient
            h = httpclient.InferenceServerClient(url=f"localhost:{server.http}", ssl=True,
                                                 ssl_context_factory=lambda: ctx)
            inputs, outputs = stored("mtcnn_rnet", 0)
            x = httpclient.InferInput("input_2", list(inputs["input_2"].shape), "FP32")
            x.set_data_from_numpy(inputs["input_2"])
            r = h.infer("mtcnn-rnet", [x])
            check("tls: Triton http client infers over https",
                  all(close(r.as_numpy(n), v) for n, v in outputs.items()))
            g = grpcclient.InferenceServerClient(url=f"localhost:{server.grpc}", ssl=True,
                                                 root_certificates=cert)
            gx = grpcclient.InferInput("input_2", list(inputs["input_2"].shape), "FP32")
            gx.set_data_from_numpy(inputs["input_2"])
            r = g.infer("mtcnn-rnet", [gx])
            check("tls: Triton grpc client infers over TLS",
                  all(close(r.as_numpy(n), v) for n, v in outputs.items()))
        finally:
            server.stop()

        # SIGTERM while loading: no more archives load, exit 0 without serving
        server = Server(archives, key=pub)
        first = server.proc.stderr.readline()
        server.proc.send_signal(signal.SIGTERM)
        code, err = server.stop()
        check("SIGTERM during loading exits 0 without serving",
              "verifying and loading" in first and code == 0 and "stopped while loading" in err,
              f"{code} {first} {err[-600:]}")

        # SIGTERM with requests in flight: none fails, exit 0
        server = Server([archives[1]], key=pub, workers=1)
        try:
            server.wait_ready()
            import tritonclient.http as httpclient
            inputs, outputs = stored("squeezenet1_1", 0)

            # a batch of 8 per request, one worker: 16 requests queue up for seconds
            batch = np.concatenate([inputs["input"]] * 8)
            want = np.concatenate([outputs["logits"]] * 8)

            def one(_):
                c = httpclient.InferenceServerClient(url=server.url, network_timeout=300)
                x = httpclient.InferInput("input", list(batch.shape), "FP32")
                x.set_data_from_numpy(batch)
                r = c.infer("squeezenet", [x])
                return close(r.as_numpy("logits"), want)

            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                futures = [pool.submit(one, i) for i in range(16)]
                time.sleep(1.0)
                server.proc.send_signal(signal.SIGTERM)
                # readiness turns false while the queued requests are still being answered
                status = None
                deadline = time.time() + 5
                while time.time() < deadline and status != 503:
                    try:
                        status, _ = http("GET", f"http://{server.url}/v2/health/ready")
                    except OSError as e:
                        status = repr(e)
                        break
                    time.sleep(0.05)
                results = []
                for f in futures:
                    try:
                        results.append(f.result())
                    except Exception as e:  # a failed request
                        results.append(repr(e))
            code, err = server.stop()
            check("during the drain, readiness is false", status == 503, str(status))
            check("SIGTERM with 16 requests in flight: all answered correctly",
                  all(r is True for r in results), str(results))
            check("SIGTERM drain exits 0", code == 0, err[-1000:])
        finally:
            if server.proc.poll() is None:
                server.proc.kill()

        # hot-loading: a watched directory
        watched = os.path.join(tmp, "watched")
        os.makedirs(watched)
        shutil.copy(archives[0], watched)
        server = Server([], "--watch", watched, "--watch-interval-ms", "200", key=pub)
        try:
            ok = server.wait_ready()
            deadline = time.time() + 60
            meta = {}
            while time.time() < deadline:
                status, body = http("GET", f"http://{server.url}/v2/models/mtcnn-rnet")
                if status == 200:
                    meta = json.loads(body)
                    break
                time.sleep(0.2)
            check("watch: the archive in the directory is served", meta.get("versions") == ["1.0.0"],
                  str(meta))
            open(os.path.join(watched, "broken.mdpkg"), "wb").write(b"not an archive")
            newer = pack(tmp, "mtcnn_rnet", "mtcnn-rnet", "1.1.0", key)
            shutil.copy(newer, watched)
            deadline = time.time() + 60
            while time.time() < deadline:
                status, body = http("GET", f"http://{server.url}/v2/models/mtcnn-rnet")
                meta = json.loads(body) if status == 200 else {}
                if meta.get("versions") == ["1.0.0", "1.1.0"]:
                    break
                time.sleep(0.2)
            check("watch: a new version loads beside the old one",
                  meta.get("versions") == ["1.0.0", "1.1.0"], str(meta))
            inputs, _ = stored("mtcnn_rnet", 0)
            req = {"inputs": [{"name": "input_2", "shape": list(inputs["input_2"].shape),
                               "datatype": "FP32",
                               "data": inputs["input_2"].flatten().tolist()}]}
            status, body = http("POST", f"http://{server.url}/v2/models/mtcnn-rnet/infer",
                                json.dumps(req).encode())
            check("watch: the new version is the default",
                  status == 200 and json.loads(body)["model_version"] == "1.1.0", body[:200])
            status, body = http("POST",
                                f"http://{server.url}/v2/models/mtcnn-rnet/versions/1.0.0/infer",
                                json.dumps(req).encode())
            check("watch: the old version still answers by version",
                  status == 200 and json.loads(body)["model_version"] == "1.0.0", body[:200])
        finally:
            code, err = server.stop()
        check("watch: a bad archive is logged and ignored",
              "broken.mdpkg" in err and code == 0, err[-1500:])

    print(f"serve interop: {len(passed)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
