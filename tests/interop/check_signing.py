"""Interop with the OpenSSF model signing tool (`model_signing`, sigstore/model-transparency).

- an archive mdeploy packs and signs, once unpacked, is accepted by `model_signing verify key`;
  a tampered file makes it fail;
- a directory signed by `model_signing sign key` is accepted by `mdeploy pack --source-signature`,
  and refused (exit 1) once tampered.
Run by .ci/run from its venv; exits non-zero on any failure.
"""

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHARED = os.environ.get("MDEPLOY_SHARED", os.path.join(ROOT, "..", "shared"))
MDEPLOY = os.environ.get("MDEPLOY_BIN", os.path.join(ROOT, "target", "debug", "mdeploy"))
MODEL_SIGNING = os.path.join(os.path.dirname(sys.executable), "model_signing")

failures = []
checks = []


def run(args, expect):
    proc = subprocess.run(args, capture_output=True, text=True)
    ok = proc.returncode == 0 if expect == "ok" else proc.returncode != 0
    label = " ".join(os.path.basename(a) if os.path.isabs(a) else a for a in args[:3])
    checks.append(label)
    print(f"signing interop: {label} ... {'ok' if ok else 'FAILED'} (exit {proc.returncode})")
    if not ok:
        failures.append(label)
        print(proc.stdout[-2000:], proc.stderr[-2000:])
    return proc


def main():
    model_dir = os.path.join(SHARED, "models", "squeezenet1_1")
    with tempfile.TemporaryDirectory() as tmp:
        keys = os.path.join(tmp, "keys")
        run([MDEPLOY, "keygen", "-o", keys], "ok")
        private, public = os.path.join(keys, "mdeploy.key"), os.path.join(keys, "mdeploy.pub")

        archive = os.path.join(tmp, "squeezenet.mdpkg")
        run([MDEPLOY, "pack", os.path.join(model_dir, "model.onnx"), "-o", archive, "--name", "squeezenet",
             "--model-version", "1.0.0", "--key", private, "--include", os.path.join(model_dir, "info.json")], "ok")
        unpacked = os.path.join(tmp, "unpacked")
        run([MDEPLOY, "unpack", archive, "-o", unpacked, "--key", public], "ok")
        signature = os.path.join(unpacked, "model.sig")
        run([MODEL_SIGNING, "verify", "key", "--signature", signature, "--public_key", public, unpacked], "ok")
        with open(os.path.join(unpacked, "files", "info.json"), "a") as f:
            f.write(" ")
        run([MODEL_SIGNING, "verify", "key", "--signature", signature, "--public_key", public, unpacked], "fail")

        source = os.path.join(tmp, "source")
        os.makedirs(source)
        shutil.copy(os.path.join(model_dir, "model.onnx"), source)
        shutil.copy(os.path.join(model_dir, "info.json"), source)
        source_sig = os.path.join(source, "model.sig")
        run([MODEL_SIGNING, "sign", "key", "--private_key", private, "--signature", source_sig, source], "ok")
        pack_source = [MDEPLOY, "pack", os.path.join(source, "model.onnx"), "-o", os.path.join(tmp, "s.mdpkg"),
                       "--name", "s", "--model-version", "1.0.0", "--source-signature", source_sig, "--source-key", public]
        run(pack_source, "ok")
        with open(os.path.join(source, "info.json"), "a") as f:
            f.write(" ")
        proc = run(pack_source, "fail")
        if proc.returncode != 1:
            failures.append("tampered source must exit 1")
    print(f"signing interop: {len(checks) - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
